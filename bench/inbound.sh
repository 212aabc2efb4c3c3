#!/bin/bash
# inbound.sh - accepts-only inbound throughput: ringmta vs a private Postfix.
#
# Usage: bench/inbound.sh [--quick] [--reps N] [--msgs N] [--sessions N]
#                         [--size BYTES] [--idle N] [--only ringmta|postfix]
#                         [--reactors N|auto] [--keep]
#
# What it measures (see bench/README.md, "Inbound benchmark"):
#   1. throughput: smtp-source -s SESSIONS -m MSGS -l SIZE, with connection
#      reuse (-d) and with one connection per message, against both systems,
#      alternating which goes first, REPS times; messages/s = MSGS / wall time
#      of smtp-source, after checking that exactly MSGS messages were queued.
#   2. p99 end-of-data latency at half load: bench/lib/eodlat.c offers each
#      system half of its own median reuse throughput, open loop, 20 sessions.
#   3. memory per idle connection: RSS delta / N for N idle sessions
#      (bench/lib/idle_rss.py); N = --idle for ringmta, and below Postfix's
#      process limit for Postfix (one smtpd process per session).
#   4. the ceiling of the tool: the same smtp-source runs into Postfix's
#      smtp-sink (keeps nothing, no fsync), in the same alternation, so
#      ratios near the tool's limit can be read as such.
# Systems:
#   ringmta  $RINGMTA_BIN (default <repo>/build/ringmta), fresh temp spool per
#            run, durability=batch (a 250 means fsynced), reactors = one
#            less than the CPUs (at least 1): smtp-source runs on the same
#            machine and needs a CPU of its own (bench/README.md, "Reactors
#            on a shared machine"); --reactors N|auto sets it.
#   postfix  the Debian package, as its own instance under $WORK/postfix
#            (bench/lib/postfix_instance.sh): own config/queue dirs, listener
#            on a free loopback port, every message put on hold (accepted and
#            fsynced, never delivered). A system Postfix on port 25 is not
#            touched. Its queue is emptied between runs (not timed).
#   smtp-sink  Postfix's smtp-sink on a free loopback port: throughput only
#            (a count from its -c counter), not a system under test.
# Env:     RINGMTA_BIN, BENCH_TMP (parent of the work dir, default /var/tmp),
#          RINGMTA_BENCH_USER (user the daemon drops to; default ringmta or
#          nobody).
# Needs:   root (Postfix instance), smtp-source, cc, python3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
RINGMTA_BIN=${RINGMTA_BIN:-$repo/build/ringmta}
PATH=$PATH:/usr/sbin:/sbin

reps=3 msgs=20000 sessions=20 size=1024 idle=5000 only="" keep=0 quick=0 reactors=$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1; reps=1; msgs=2000; idle=500 ;;
	--reps) reps=$2; shift ;;
	--msgs) msgs=$2; shift ;;
	--sessions) sessions=$2; shift ;;
	--size) size=$2; shift ;;
	--idle) idle=$2; shift ;;
	--only) only=$2; shift ;;
	--reactors) reactors=$2; shift ;;
	--keep) keep=1 ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
	*) echo "inbound.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
	esac
	shift
done

die() { echo "inbound.sh: $*" >&2; exit 1; }
log() { echo "# $*" >&2; }

[ "$(id -u)" = 0 ] || die "run as root (the Postfix instance needs it)"
command -v smtp-source >/dev/null || die "smtp-source missing (apt-get install postfix)"
command -v cc >/dev/null || die "cc missing (apt-get install gcc)"

systems=""
if [ "$only" != postfix ]; then
	if [ -x "$RINGMTA_BIN" ]; then systems="ringmta"
	else log "ringmta: $RINGMTA_BIN not built -- measuring Postfix only"; fi
fi
if [ "$only" != ringmta ]; then systems="$systems postfix"; fi
systems=$(echo $systems)
loaded=$systems     # what the throughput runs alternate over
if [ -z "$only" ] && command -v smtp-sink >/dev/null; then loaded="$systems smtp-sink"; fi
[ -n "$systems" ] || die "nothing to measure"

work=$(mktemp -d "${BENCH_TMP:-/var/tmp}/ringmta-bench.XXXXXX")
chmod 755 "$work"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rm_port=$(free_port)
pf_port=$(free_port)
sk_port=$(free_port)
rm_pid="" sk_pid=""
user=${RINGMTA_BENCH_USER:-}
if [ -z "$user" ]; then
	if id ringmta >/dev/null 2>&1; then user=ringmta; else user=nobody; fi
fi

cleanup() {
	rm_stop
	sk_stop
	"$here/lib/postfix_instance.sh" stop "$work/postfix" "$pf_port" || true
	if [ "$keep" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}

# wait_ready NAME PORT PID LOG - wait up to 10 s for a 220 banner on PORT;
# die if PID exits first (LOG's tail says why) or nothing answers.
wait_ready() {
	local name=$1 port=$2 pid=$3 logf=$4
	for _ in $(seq 100); do
		if python3 - "$port" <<'EOF' 2>/dev/null; then return 0; fi
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)
s.settimeout(2)
sys.exit(0 if s.recv(64).startswith(b"220") else 1)
EOF
		kill -0 "$pid" 2>/dev/null || die "$name exited at start-up: $(tail -5 "$logf")"
		sleep 0.1
	done
	die "$name not ready on port $port within 10 s"
}
# stop_pid PID - SIGTERM and reap PID if it is still running.
stop_pid() {
	if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
		kill -TERM "$1"
		wait "$1" 2>/dev/null || true
	fi
}

# --- ringmta --------------------------------------------------------------
rm_start() {
	rm -rf "$work/rm-spool"
	mkdir -m 700 "$work/rm-spool"
	chown "$user" "$work/rm-spool"
	"$RINGMTA_BIN" -o "listen=127.0.0.1:$rm_port" -o "spool_dir=$work/rm-spool" -o delivery=no \
		-o durability=batch -o "user=$user" -o "reactors=$reactors" \
		-o "max_connections=$((idle + 500))" -o "max_connections_per_ip=$((idle + 500))" \
		</dev/null >>"$work/ringmta.log" 2>&1 &
	rm_pid=$!
	wait_ready ringmta "$rm_port" "$rm_pid" "$work/ringmta.log"
}
rm_stop() { stop_pid "$rm_pid"; rm_pid=""; }
rm_count() { "$RINGMTA_BIN" -o "spool_dir=$work/rm-spool" queue list | grep -c '^id=' || true; }

# --- smtp-sink: the tool's ceiling ------------------------------------------
sk_start() {
	: >"$work/sink.out"
	smtp-sink -c -u nobody -h sink.bench.test "127.0.0.1:$sk_port" 1024 >"$work/sink.out" 2>&1 &
	sk_pid=$!
	wait_ready smtp-sink "$sk_port" "$sk_pid" "$work/sink.out"
}
sk_stop() { stop_pid "$sk_pid"; sk_pid=""; }
sk_count() {   # messages smtp-sink has received (its -c counter)
	local c
	c=$(tail -c 400 "$work/sink.out" 2>/dev/null | tr '\r' '\n' | grep -ao 'mesg=[0-9]*' | tail -1 | cut -d= -f2)
	echo "${c:-0}"
}

# --- postfix --------------------------------------------------------------
pf() { "$here/lib/postfix_instance.sh" "$1" "$work/postfix" "$pf_port"; }
pf_count() { pf count; }

# prepare SYSTEM - an empty queue and a running server (not timed)
prepare() {
	case $1 in
	ringmta) rm_stop; rm_start ;;
	smtp-sink) sk_stop; sk_start ;;
	postfix) pf clear; [ "$(pf_count)" = 0 ] || { pf stop; rm -rf "$work/postfix/queue"; pf start; } ;;
	esac
}
port_of() { case $1 in ringmta) echo "$rm_port" ;; smtp-sink) echo "$sk_port" ;; *) echo "$pf_port" ;; esac; }
count_of() { case $1 in ringmta) rm_count ;; smtp-sink) sleep 0.2; sk_count ;; *) pf_count ;; esac; }

# run_load SYSTEM MODE - one timed smtp-source run; sets result (messages/s
# or "fail"). Not for $(...): prepare starts daemons, which must belong to
# this shell (rm_pid) and must not hold a command substitution's pipe open.
run_load() {
	local sys=$1 mode=$2 port t0 t1 n flag=""
	port=$(port_of "$sys")
	[ "$mode" = reuse ] && flag=-d
	prepare "$sys"
	t0=$(date +%s.%N)
	if ! smtp-source -s "$sessions" -m "$msgs" -l "$size" $flag \
		-f bench@test.invalid -t sink@example.com -M bench.test.invalid \
		"127.0.0.1:$port" >"$work/source.out" 2>&1; then
		log "$sys $mode: smtp-source failed: $(tail -3 "$work/source.out")"
		result=fail
		return
	fi
	t1=$(date +%s.%N)
	n=$(count_of "$sys")
	if [ "$n" != "$msgs" ]; then
		log "$sys $mode: queued $n messages, want $msgs -- run discarded"
		result=fail
		return
	fi
	result=$(python3 -c "print(f'{$msgs / ($t1 - $t0):.0f}')")
}

median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:] if x!="fail"]; print(f"{statistics.median(v):.0f}" if v else "n/a")' "$@"; }
ratio() { python3 -c 'import sys
a,b=sys.argv[1:3]
print(f"{float(a)/float(b):.2f}" if "n/a" not in (a,b) and float(b) > 0 else "n/a")' "$1" "$2"; }

trap cleanup EXIT
trap 'exit 130' INT TERM

cc -O2 -o "$work/eodlat" "$here/lib/eodlat.c" || die "cannot build bench/lib/eodlat.c"
case " $systems " in *" postfix "*) pf start ;; esac
case " $systems " in *" ringmta "*) rm_start ;; esac

log "ringmta-bench inbound: $(date -u +%FT%TZ) host=$(hostname) cpus=$(nproc) kernel=$(uname -r) loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
log "work dir $work on $(df -T "$work" | awk 'NR==2 {print $2" "$1}')"
log "ringmta $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?') bin=$RINGMTA_BIN; postfix $(postconf -h mail_version 2>/dev/null)"
log "load: smtp-source -s $sessions -m $msgs -l $size [-d]; reps=$reps; systems: $systems"

# warm-up (not recorded): Postfix forks its smtpd/cleanup pool, ringmta
# touches its buffers; the first timed run should not pay for that.
for sys in $loaded; do
	prepare "$sys"
	smtp-source -s "$sessions" -m $((msgs / 10 > 200 ? msgs / 10 : 200)) -l "$size" -d \
		-f bench@test.invalid -t sink@example.com "127.0.0.1:$(port_of "$sys")" >/dev/null 2>&1 || true
done

declare -A runs
for rep in $(seq "$reps"); do
	order=$loaded
	if [ $((rep % 2)) = 0 ]; then order=$(echo "$loaded" | tr ' ' '\n' | tac | tr '\n' ' '); fi
	for mode in reuse noreuse; do
		for sys in $order; do
			run_load "$sys" "$mode"
			runs[$sys.$mode]="${runs[$sys.$mode]:-} $result"
			echo "run rep=$rep system=$sys mode=$mode msgs_per_s=$result"
		done
	done
done

declare -A med lat idlemem
for sys in $loaded; do
	for mode in reuse noreuse; do
		med[$sys.$mode]=$(median ${runs[$sys.$mode]})
	done
done

# --- latency at half load ---------------------------------------------------
for sys in $systems; do
	m=${med[$sys.reuse]}
	if [ "$m" = n/a ]; then lat[$sys]="n/a"; continue; fi
	rate=$((${m%.*} / 2))
	[ "$rate" -ge 1 ] || rate=1
	n=$((rate * 10)); [ "$quick" = 1 ] && n=$((rate * 3))
	[ "$n" -ge 500 ] || n=500
	prepare "$sys"
	out=$("$work/eodlat" -p "$(port_of "$sys")" -c "$sessions" -r "$rate" -n "$n" -l "$size" || true)
	echo "latency system=$sys offered=$rate/s $out"
	p99=$(echo "$out" | sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p')
	p50=$(echo "$out" | sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p')
	late=$(echo "$out" | sed -n 's/.* late=\([0-9]*\).*/\1/p')
	lat[$sys]="p99 ${p99:-?} ms (p50 ${p50:-?} ms) at $rate msg/s${late:+, late=$late}"
done

# --- memory per idle connection ---------------------------------------------
for sys in $systems; do
	prepare "$sys"
	if [ "$sys" = ringmta ]; then
		pid=$rm_pid n=$idle
	else
		pid=$(tr -d ' ' <"$work/postfix/queue/pid/master.pid")
		n=$((idle < 150 ? idle : 150))   # default_process_limit 200 in our instance
	fi
	out=$(python3 "$here/lib/idle_rss.py" --port "$(port_of "$sys")" --pid "$pid" --conns "$n" || true)
	echo "idle system=$sys $out"
	b=$(echo "$out" | sed -n 's/.*bytes_per_conn=\([0-9-]*\).*/\1/p')
	o=$(echo "$out" | sed -n 's/.* open=\([0-9]*\).*/\1/p')
	idlemem[$sys]="${b:-?} B/conn (${o:-?} of $n open)"
done

# --- report -------------------------------------------------------------------
log "done $(date -u +%FT%TZ) loadavg=$(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews absolute numbers)"
echo
echo "### Inbound accepts-only benchmark ($(date -u +%F), $(nproc) CPUs, smtp-source -s $sessions -m $msgs -l $size, ringmta reactors=$reactors)"
echo
echo "| system | mode | runs (msg/s) | median msg/s |"
echo "|---|---|---|---|"
for mode in reuse noreuse; do
	label="reuse (-d)"; [ "$mode" = noreuse ] && label="new connection per message"
	for sys in $loaded; do
		name=$sys; [ "$sys" = smtp-sink ] && name="smtp-sink (tool ceiling)"
		echo "| $name | $label | $(echo ${runs[$sys.$mode]} | sed 's/ /, /g') | ${med[$sys.$mode]} |"
	done
	if [ "$systems" = "ringmta postfix" ]; then
		echo "| **ringmta / postfix** | $label | | **$(ratio "${med[ringmta.$mode]}" "${med[postfix.$mode]}")** |"
	fi
	if [ "$loaded" = "ringmta postfix smtp-sink" ]; then
		echo "| smtp-sink / postfix (the most the tool can show) | $label | | $(ratio "${med[smtp-sink.$mode]}" "${med[postfix.$mode]}") |"
	fi
done
echo
echo "| metric | $(echo $systems | sed 's/ / | /g') |"
echo "|---|$(for _ in $systems; do printf -- '---|'; done)"
printf '| end-of-data latency, half load |'; for s in $systems; do printf ' %s |' "${lat[$s]}"; done; echo
printf '| memory per idle connection |'; for s in $systems; do printf ' %s |' "${idlemem[$s]}"; done; echo
