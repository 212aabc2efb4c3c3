#!/bin/bash
# compare.sh - ringmta against Postfix, Haraka and OpenSMTPD on loopback, side by side.
#
# Usage: sudo bench/compare.sh [--quick] [--reps N] [--systems "ringmta postfix haraka opensmtpd"]
#                              [--scenarios REGEX] [--out DIR] [--no-install] [--keep]
#        bench/compare.sh --tools [--reps N] [--messages N]
#
# Owns:     one work dir under $BENCH_TMP (default /var/tmp), and in it a private
#           instance of every system on its own 127.0.0.1 port: ringmta
#           ($RINGMTA_BIN), Postfix (bench/lib/postfix_instance.sh: own
#           config_directory, queue_directory, master.pid), Haraka (npm, under
#           /opt/ringmta-bench/haraka, own config dir), OpenSMTPD (the Debian
#           package unpacked under /opt/ringmta-bench/opensmtpd, own config,
#           only when no system OpenSMTPD is installed: its queue path is
#           compiled in). The far end of relay runs is a ringmta-bench sink.
# Must not: touch /etc/postfix, /var/spool/postfix, port 25 or a running
#           system MTA; install anything into the repository.
# Scenarios: accept-only and end-to-end relay (to a ringmta-bench sink that
#           verifies checksums); 1 KiB and 100 KiB; a new connection per
#           message and reused connections; 1 and 50 concurrent sessions.
#           The load is always `ringmta-bench send` (closed loop).
# Measures: messages/s (accept: send's count / send's wall time; relay: the
#           sink's count / time until the sink has every message), p99 of
#           send's per-message latency, CPU seconds of the system's
#           processes per 1,000 messages, peak PSS of its process tree;
#           medians over --reps alternating repetitions (the system order
#           flips every repetition), ratio to Postfix.
# Output:   a Markdown table on stdout; $out/compare-<stamp>.json (machine,
#           every run, medians), .md and .png (gnuplot) in --out (default
#           bench/results/, for --quick a temp dir). Exit 0 when the table
#           was produced; 1 on set-up errors; 2 on usage.
# --quick:  the CI smoke run: 2 scenarios, 200 messages, 1 repetition, no
#           warm-up, only systems already installed (no downloads); exit 4
#           if a run failed.
# --max-run-s S: accept-only runs stop starting messages after S seconds
#           (default 60), so a slow system is measured on fewer messages.
# --tools:  instead, the load tools themselves: ringmta-bench send -> sink
#           against Postfix's smtp-source -> smtp-sink, 20 sessions, 1 KiB,
#           with and without connection reuse, --reps alternating runs
#           (--messages N per reuse run, N/4 without), medians and the ratio
#           (issue 5 asks for >= 2x); also the CPU time of client and server
#           per message (the client's user+sys from the shell's `times`, the
#           server's from /proc/PID/stat), which a loaded machine disturbs
#           less than messages/s. Needs no root.
# Env:      RINGMTA_BIN (default <repo>/build/ringmta), RINGMTA_BENCH_BIN
#           (default <repo>/build/ringmta-bench), BENCH_TMP, HARAKA_DIR,
#           OPENSMTPD_DIR.
# Standards: RFC 5321; Postfix postconf(5), master(5); Haraka smtp.ini,
#           smtp_forward.ini; smtpd.conf(5).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
RINGMTA_BIN=${RINGMTA_BIN:-$repo/build/ringmta}
BENCH_BIN=${RINGMTA_BENCH_BIN:-$repo/build/ringmta-bench}
HARAKA_DIR=${HARAKA_DIR:-/opt/ringmta-bench/haraka}
HARAKA_VERSION=3.0.4
OPENSMTPD_DIR=${OPENSMTPD_DIR:-/opt/ringmta-bench/opensmtpd}

tools=0 tools_n=20000 max_run_s=60 quick=0 reps=3 systems_req="ringmta postfix haraka opensmtpd" scen_re="." out="" install=1 keep=0
usage() { sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1; reps=1 ;;
	--reps) reps=${2:?}; shift ;;
	--systems) systems_req=${2:?}; shift ;;
	--scenarios) scen_re=${2:?}; shift ;;
	--out) out=${2:?}; shift ;;
	--no-install) install=0 ;;
	--keep) keep=1 ;;
	--tools) tools=1 ;;
	--max-run-s) max_run_s=${2:?}; shift ;;
	--messages) tools_n=${2:?}; shift ;;
	-h|--help) usage 0 ;;
	*) usage ;;
	esac
	shift
done

log() { printf '# %s\n' "$*" >&2; }
die() { printf 'compare: %s\n' "$*" >&2; exit 1; }

PATH=$PATH:/usr/sbin:/sbin
[ -x "$BENCH_BIN" ] || die "ringmta-bench not built at $BENCH_BIN (meson setup build && ninja -C build)"
# Debian's interpreter, not a version-manager shim (slow to start, and a
# signal sent to the shim's pid would miss the monitor)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || die "python3 missing (apt-get install python3)"

# --- --tools: the load generators against each other -----------------------
if [ "$tools" = 1 ]; then
	SRC=$(command -v smtp-source || echo /usr/sbin/smtp-source)
	SNK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
	[ -x "$SRC" ] && [ -x "$SNK" ] || die "smtp-source/smtp-sink missing (apt-get install postfix)"
	tw=$(mktemp -d "${BENCH_TMP:-/var/tmp}/ringmta-tools.XXXXXX")
	trap 'rm -rf "$tw"' EXIT
	p1=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	p2=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	u=(); [ "$(id -u)" = 0 ] && u=(-u nobody)
	log "tools: $(date -u +%FT%TZ) cpus=$(nproc) kernel=$(uname -r) load=$(cut -d' ' -f1-3 /proc/loadavg)"
	"$SNK" "${u[@]}" 127.0.0.1:"$p1" 1024 & snk=$!
	"$BENCH_BIN" sink --listen 127.0.0.1:"$p2" >/dev/null 2>&1 & bsnk=$!
	trap 'kill $snk $bsnk 2>/dev/null; rm -rf "$tw"' EXIT
	sleep 0.5
	p3=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	"$BENCH_BIN" sink --listen 127.0.0.1:"$p3" --threads 2 >/dev/null 2>&1 & bsnk2=$!
	trap 'kill $snk $bsnk $bsnk2 2>/dev/null; rm -rf "$tw"' EXIT
	sleep 0.3
	# bench_run N PORT [send options]: one ringmta-bench run; its msg/s (0 if any
	# message failed), timed like smtp-source: the wall clock around the
	# process; its CPU time in $tw/times
	bench_run() {
		local t0 t1
		t0=$(date +%s.%N)
		( "$BENCH_BIN" send --target 127.0.0.1:"$2" --sessions 20 --messages "$1" --size 1024 \
			--report-every 0 --json "${@:3}" >"$tw/send.json"; times >"$tw/times" )
		t1=$(date +%s.%N)
		"$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(round(int(sys.argv[2]) / (float(sys.argv[4]) - float(sys.argv[3])), 1) if j["messages"]["ok"] == j["messages"]["started"] else 0)' \
			"$tw/send.json" "$1" "$t0" "$t1"
	}
	# proc_cpu PID: user+system CPU seconds of PID (all its threads) so far
	proc_cpu() {
		awk -v tk="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / tk }' "/proc/$1/stat"
	}
	# child_cpu FILE: the children's user+system seconds from the output of `times`
	child_cpu() {
		tail -1 "$1" | tr 'ms' '  ' | awk '{ print $1 * 60 + $2 + $3 * 60 + $4 }'
	}
	for rep in $(seq "$reps"); do
		for mode in reuse new; do
			n=$tools_n; d=(-d); r=(--reuse)
			[ $mode = new ] && { n=$((tools_n / 4)); d=(); r=(); }
			pair=(postfix ringmta ringmta-t2 ringmta-pipe)
			[ $((rep % 2)) = 0 ] && pair=(ringmta-pipe ringmta-t2 ringmta postfix)
			for t in "${pair[@]}"; do
				case $t in postfix) spid=$snk ;; ringmta-t2) spid=$bsnk2 ;; *) spid=$bsnk ;; esac
				s0=$(proc_cpu "$spid")
				case $t in
				postfix)
					t0=$(date +%s.%N)
					( "$SRC" "${d[@]}" -s 20 -m "$n" -l 1024 127.0.0.1:"$p1" >/dev/null 2>&1; times >"$tw/times" )
					t1=$(date +%s.%N)
					rate=$("$PY" -c "print(round($n / ($t1 - $t0), 1))") ;;
				ringmta) rate=$(bench_run "$n" "$p2" "${r[@]}") ;;
				ringmta-t2) rate=$(bench_run "$n" "$p3" "${r[@]}" --threads 2) ;;
				ringmta-pipe) rate=$(bench_run "$n" "$p2" "${r[@]}" --pipelining) ;;
				esac
				s1=$(proc_cpu "$spid")
				cus=$("$PY" -c "print(round($(child_cpu "$tw/times") * 1e6 / $n, 1))")
				sus=$("$PY" -c "print(round(($s1 - $s0) * 1e6 / $n, 1))")
				echo "$mode $t $rate $cus $sus" >>"$tw/runs"
				log "run $rep $mode $t $rate msg/s cpu/msg client $cus us server $sus us"
			done
		done
	done
	"$PY" - "$tw/runs" "$reps" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print(f"\nload generators, 20 sessions, 1 KiB, median of {sys.argv[2]} alternating runs\n")
print("| mode | smtp-source -> smtp-sink | send -> sink | ratio | send -> sink, 2 reactors each | ratio | send --pipelining -> sink | ratio |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for mode in ("reuse", "new"):
    m = {t: statistics.median(float(r[2]) for r in rows if r[0] == mode and r[1] == t)
         for t in ("postfix", "ringmta", "ringmta-t2", "ringmta-pipe")}
    pf = m["postfix"] or 1
    print(f"| {'reused connections (-d / --reuse)' if mode == 'reuse' else 'connection per message'} "
          f"| {m['postfix']:.0f} | {m['ringmta']:.0f} | {m['ringmta'] / pf:.2f} "
          f"| {m['ringmta-t2']:.0f} | {m['ringmta-t2'] / pf:.2f} | {m['ringmta-pipe']:.0f} | {m['ringmta-pipe'] / pf:.2f} |")
print("\nCPU time per message, client + server (us), medians; ratio = smtp-source/smtp-sink over ours\n")
print("| mode | smtp-source + smtp-sink | send + sink | ratio | 2 reactors each | ratio | --pipelining | ratio |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for mode in ("reuse", "new"):
    c = {t: statistics.median(float(r[3]) + float(r[4]) for r in rows if r[0] == mode and r[1] == t)
         for t in ("postfix", "ringmta", "ringmta-t2", "ringmta-pipe")}
    cr = lambda t: c["postfix"] / c[t] if c[t] else 0
    print(f"| {'reused connections' if mode == 'reuse' else 'connection per message'} "
          f"| {c['postfix']:.1f} | {c['ringmta']:.1f} | {cr('ringmta'):.2f} | {c['ringmta-t2']:.1f} "
          f"| {cr('ringmta-t2'):.2f} | {c['ringmta-pipe']:.1f} | {cr('ringmta-pipe'):.2f} |")
EOF
	log "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
	exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (private Postfix/OpenSMTPD instances drop privileges themselves)"

# --- installing the rivals (never the system MTA role) ---------------------
apt_install() {   # apt_install PKG... : only what is missing
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$install" = 1 ] || return 1
	log "apt-get install ${missing[*]}"
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null 2>&1 &&
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; }
}

have_haraka() { [ -x "$HARAKA_DIR/node_modules/.bin/haraka" ]; }
install_haraka() {
	have_haraka && return 0
	[ "$install" = 1 ] && command -v npm >/dev/null || return 1
	log "npm install Haraka@$HARAKA_VERSION under $HARAKA_DIR"
	mkdir -p "$HARAKA_DIR"
	npm install --no-audit --no-fund --prefix "$HARAKA_DIR" "Haraka@$HARAKA_VERSION" >"$HARAKA_DIR/npm.log" 2>&1
}

have_opensmtpd() { [ -x "$OPENSMTPD_DIR/usr/sbin/smtpd" ]; }
install_opensmtpd() {
	# The package conflicts with every other MTA package (Postfix), so it is
	# unpacked, not installed; its libraries are ordinary packages.
	have_opensmtpd && return 0
	[ "$install" = 1 ] || return 1
	dpkg-query -W -f='${Status}' opensmtpd 2>/dev/null | grep -q 'ok installed' && return 1
	apt_install libevent-2.1-7 libdb5.3 libssl3 libpam0g zlib1g libcrypt1 || return 1
	log "unpacking opensmtpd (apt-get download) under $OPENSMTPD_DIR"
	mkdir -p "$OPENSMTPD_DIR"
	(cd "$OPENSMTPD_DIR" && apt-get download opensmtpd >/dev/null 2>&1 && dpkg -x opensmtpd_*.deb .) || return 1
	# Debian's build runs as opensmtpd/opensmtpq and chroots to /var/lib/opensmtpd/empty
	getent group opensmtpq >/dev/null || groupadd --system opensmtpq
	getent passwd opensmtpd >/dev/null || useradd --system --no-create-home -d /var/empty -s /usr/sbin/nologin opensmtpd
	getent passwd opensmtpq >/dev/null || useradd --system --no-create-home -d /var/empty -s /usr/sbin/nologin -g opensmtpq opensmtpq
	mkdir -p /var/lib/opensmtpd/empty
	chgrp opensmtpq "$OPENSMTPD_DIR/usr/sbin/smtpctl" && chmod g+s "$OPENSMTPD_DIR/usr/sbin/smtpctl"
}

systems=""
for s in $systems_req; do
	case $s in
	ringmta) [ -x "$RINGMTA_BIN" ] && systems="$systems ringmta" || log "ringmta: $RINGMTA_BIN not built: skipped" ;;
	postfix) { command -v postfix >/dev/null || { [ "$quick" = 0 ] && apt_install postfix; }; } &&
		command -v postfix >/dev/null && systems="$systems postfix" || log "postfix: not installed: skipped" ;;
	haraka) { have_haraka || { [ "$quick" = 0 ] && install_haraka; }; } && have_haraka && command -v node >/dev/null &&
		systems="$systems haraka" || log "haraka: not installed: skipped" ;;
	opensmtpd) { have_opensmtpd || { [ "$quick" = 0 ] && install_opensmtpd; }; } && have_opensmtpd &&
		systems="$systems opensmtpd" || log "opensmtpd: not available side by side: skipped" ;;
	*) die "unknown system $s" ;;
	esac
done
systems=$(echo $systems)
[ -n "$systems" ] || die "no system to measure"
[ "$quick" = 1 ] || apt_install gnuplot-nox || log "gnuplot-nox not installed: no PNG"

# --- scenarios: name kind size reuse sessions messages --------------------
scenarios() {
	if [ "$quick" = 1 ]; then
		echo "accept/1KiB/reuse/s50 accept 1k yes 50 200"
		echo "relay/1KiB/reuse/s50 relay 1k yes 50 200"
		return
	fi
	local kind size reuse s n
	for kind in accept relay; do
		for size in 1k 100k; do
			for reuse in yes no; do
				for s in 1 50; do
					case $size.$reuse.$s in
					1k.yes.50) n=20000 ;; 1k.yes.1) n=5000 ;; 1k.no.50) n=5000 ;; 1k.no.1) n=2000 ;;
					100k.*.50) n=2000 ;; 100k.*.1) n=500 ;;
					esac
					echo "$kind/${size/k/KiB}/$([ $reuse = yes ] && echo reuse || echo new-conn)/s$s $kind $size $reuse $s $n"
				done
			done
		done
	done
}
scen_list=$(scenarios | grep -E -- "^[^ ]*($scen_re)" || true)
[ -n "$scen_list" ] || die "no scenario matches --scenarios $scen_re"

# --- work dir, ports --------------------------------------------------------
work=$(mktemp -d "${BENCH_TMP:-/var/tmp}/ringmta-compare.XXXXXX")
chmod 755 "$work"
if [ -z "$out" ]; then
	if [ "$quick" = 1 ]; then out=$work/results; else out=$repo/bench/results; fi
fi
mkdir -p "$out"
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A port pid
for s in $systems; do port[$s]=$(free_port); done
sink_port=$(free_port)
sink_pid=""
user=nobody
id ringmta >/dev/null 2>&1 && user=ringmta

wait_banner() {   # wait_banner PORT SECONDS
	"$PY" - "$1" "$2" <<'EOF'
import socket, sys, time
port, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", port), 1) as s:
            s.settimeout(3)
            if s.recv(512).startswith(b"220"):
                s.sendall(b"QUIT\r\n")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
}

stop_pid() {   # stop_pid PID : SIGTERM, wait up to 10 s, then SIGKILL
	local p=$1 i
	[ -n "$p" ] || return 0
	kill -TERM "$p" 2>/dev/null || return 0
	for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
}

# --- the far end: ringmta-bench sink ---------------------------------------
sink_start() {   # sink_start [N] : with N, it exits by itself once N messages are in
	stop_pid "$sink_pid"
	: >"$work/sink.err"
	"$BENCH_BIN" sink --listen "127.0.0.1:$sink_port" --json --report-every 1 \
		${1:+--exit-after "$1"} >"$work/sink.json" 2>"$work/sink.err" &
	sink_pid=$!
	wait_banner "$sink_port" 10 || die "ringmta-bench sink did not start: $(tail -3 "$work/sink.err")"
}

# --- ringmta ------------------------------------------------------------------
ringmta_start() {   # ringmta_start accept|relay
	local extra=(-o delivery=no)     # accept-only: queue, never deliver
	[ "$1" = relay ] && extra=(-o delivery=yes -o "relayhost=[127.0.0.1]:$sink_port")
	rm -rf "$work/rm-spool"; mkdir -m 700 "$work/rm-spool"; chown "$user" "$work/rm-spool"
	"$RINGMTA_BIN" -o "listen=127.0.0.1:${port[ringmta]}" -o "spool_dir=$work/rm-spool" \
		-o durability=batch -o "user=$user" -o myhostname=ringmta-bench.test \
		-o max_connections_per_ip=1000 "${extra[@]}" 2>>"$work/ringmta.log" &
	pid[ringmta]=$!
	wait_banner "${port[ringmta]}" 10 || die "ringmta did not start: $(tail -3 "$work/ringmta.log")"
}
ringmta_stop() { stop_pid "${pid[ringmta]:-}"; pid[ringmta]=""; }
ringmta_root() { echo "${pid[ringmta]}"; }

# --- postfix (bench/lib/postfix_instance.sh, then relay settings on top) ---
pf() { "$here/lib/postfix_instance.sh" "$1" "$work/postfix" "${port[postfix]}"; }
postfix_start() {
	pf stop >/dev/null 2>&1 || true
	rm -rf "$work/postfix"
	pf start >/dev/null || die "postfix instance did not start (see $work/postfix/maillog)"
	if [ "$1" = relay ]; then
		# deliver everything to the sink; nothing on hold, nothing deferred
		postconf -c "$work/postfix/etc" -e \
			"smtpd_recipient_restrictions = permit_mynetworks, reject" \
			"relayhost = [127.0.0.1]:$sink_port" "defer_transports =" \
			"smtp_tls_security_level = none" "smtp_dns_support_level = disabled" \
			"default_destination_concurrency_limit = 50" "smtp_connection_cache_on_demand = yes"
		postfix -c "$work/postfix/etc" reload >/dev/null 2>&1
		sleep 1
	fi
	wait_banner "${port[postfix]}" 10 || die "postfix not answering on ${port[postfix]}"
}
postfix_stop() { pf stop >/dev/null 2>&1 || true; }
postfix_root() { tr -d ' ' <"$work/postfix/queue/pid/master.pid"; }

# --- haraka -------------------------------------------------------------------
haraka_start() {
	local d=$work/haraka
	rm -rf "$d"; mkdir -p "$d/config" "$d/queue"
	printf '[main]\nlisten=127.0.0.1:%s\nnodes=\n[headers]\n' "${port[haraka]}" >"$d/config/smtp.ini"
	echo ringmta-bench-haraka.test >"$d/config/me"
	echo 127.0.0.0/8 >"$d/config/relay_acl_allow"
	printf '[relay]\nacl=true\nforce_routing=false\ndest_domains=false\n' >"$d/config/relay.ini"
	printf 'LOGNOTICE\n' >"$d/config/loglevel"
	echo 0 >"$d/config/databytes" 2>/dev/null || true
	if [ "$1" = relay ]; then
		printf 'relay\nqueue/smtp_forward\n' >"$d/config/plugins"
		printf 'host=127.0.0.1\nport=%s\nenable_tls=false\nenable_outbound=true\nmax_connections=100\n' \
			"$sink_port" >"$d/config/smtp_forward.ini"
		"$HARAKA_DIR/node_modules/.bin/haraka" -c "$d" >>"$work/haraka.log" 2>&1 &
	else
		# accept-only: the message is read, counted and dropped (Haraka has no
		# spool of its own for inbound mail; nothing is made durable)
		printf 'relay\nqueue/discard\n' >"$d/config/plugins"
		YES_REALLY_DO_DISCARD=1 "$HARAKA_DIR/node_modules/.bin/haraka" -c "$d" >>"$work/haraka.log" 2>&1 &
	fi
	pid[haraka]=$!
	wait_banner "${port[haraka]}" 20 || die "haraka did not start: $(tail -5 "$work/haraka.log")"
}
haraka_stop() { stop_pid "${pid[haraka]:-}"; pid[haraka]=""; }
haraka_root() { echo "${pid[haraka]}"; }

# --- opensmtpd ----------------------------------------------------------------
opensmtpd_start() {
	# The queue (/var/spool/smtpd) and control socket paths are compiled in;
	# we only run when no system OpenSMTPD is installed, and empty the queue
	# before every run.
	local d=$work/opensmtpd relay_to=127.0.0.1:9
	[ "$1" = relay ] && relay_to=127.0.0.1:$sink_port
	rm -rf "$d" /var/spool/smtpd; mkdir -p "$d"
	# max-mails: the default 100 messages per session would refuse every
	# later MAIL on a reused connection (452 4.5.3); Postfix has no such limit
	cat >"$d/smtpd.conf" <<EOF
smtp limit max-mails 1000000
listen on 127.0.0.1 port ${port[opensmtpd]} hostname opensmtpd-bench.test
action "out" relay host smtp://$relay_to
match from local for any action "out"
EOF
	# ASR_CONFIG: resolve from /etc/hosts only; each client's reverse
	# lookup otherwise waits for DNS, 5 s per connection without a resolver
	ASR_CONFIG="lookup file" "$OPENSMTPD_DIR/usr/sbin/smtpd" -d -f "$d/smtpd.conf" \
		>>"$work/opensmtpd.log" 2>&1 &
	pid[opensmtpd]=$!
	wait_banner "${port[opensmtpd]}" 15 || die "opensmtpd did not start: $(tail -5 "$work/opensmtpd.log")"
	# accept-only: queued (written and fsynced before the 250) and held:
	# outbound delivery is paused, as Postfix's HOLD
	[ "$1" = relay ] || "$OPENSMTPD_DIR/usr/sbin/smtpctl" pause mta >/dev/null
}
opensmtpd_stop() { stop_pid "${pid[opensmtpd]:-}"; pid[opensmtpd]=""; }
opensmtpd_root() { echo "${pid[opensmtpd]}"; }

cleanup() {
	for s in $systems; do "${s}_stop" >/dev/null 2>&1 || true; done
	stop_pid "$sink_pid"
	# the work dir goes (its results too, for --quick without --out): runs
	# in CI must not pile up under /var/tmp
	if [ "$keep" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the process monitor: CPU and peak PSS of a process tree ---------------
cat >"$work/procmon.py" <<'EOF'
"""procmon ROOT OUT - sample ROOT's process tree every 100 ms until SIGTERM.

CPU = ticks used during the run by processes alive at the end, plus what
ROOT reaped meanwhile (cutime/cstime: exited children such as Postfix's
smtpd); peak = the largest sum of PSS (shared pages split, so Postfix's
many processes are not over-counted) seen in one sample.
"""
import os, signal, sys, time
root, out = int(sys.argv[1]), sys.argv[2]
hz = os.sysconf("SC_CLK_TCK")
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
def stat(p):
    with open(f"/proc/{p}/stat") as f:
        s = f.read()
    v = s[s.rindex(")") + 2:].split()
    return int(v[1]), int(v[11]) + int(v[12]), int(v[13]) + int(v[14])   # ppid, self, reaped
def tree():
    kids, res = {}, {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                pp, own, reaped = stat(d)
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(pp, []).append(int(d))
            res[int(d)] = (own, reaped)
    todo, seen = [root], {}
    while todo:
        p = todo.pop()
        if p in res:
            seen[p] = res[p]
            todo += kids.get(p, [])
    return seen
def pss(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total
first = tree()
base = {p: v[0] for p, v in first.items()}
root_reaped0 = first.get(root, (0, 0))[1]
peak, last = 0, first
while not stop:
    cur = tree()
    if cur:
        last = cur
        peak = max(peak, pss(cur))
    time.sleep(0.1)
cpu = sum(v[0] - base.get(p, 0) for p, v in last.items())
cpu += last.get(root, (0, root_reaped0))[1] - root_reaped0
with open(out, "w") as f:
    f.write(f"{cpu / hz:.3f} {peak}\n")
EOF

# --- one measurement ----------------------------------------------------------
runs=$work/runs.jsonl
: >"$runs"
run_one() {   # run_one REP SYSTEM NAME KIND SIZE REUSE SESSIONS N
	local rep=$1 sys=$2 name=$3 kind=$4 size=$5 reuse=$6 s=$7 n=$8 status=ok t0 t1 root monpid
	local args=(--sessions "$s" --messages "$n" --size "$size" --to "rcpt{r}@sink.test" --timeout 60 --report-every 0 --json)
	[ "$reuse" = yes ] && args+=(--reuse)
	# runs stop starting messages after --max-run-s: a slow system is
	# measured on fewer messages instead of holding up the run
	args+=(--duration "$max_run_s")
	[ "$kind" = relay ] && sink_start
	"${sys}_start" "$kind"
	root=$("${sys}_root")
	"$PY" "$work/procmon.py" "$root" "$work/mon.out" &
	monpid=$!
	sleep 0.2
	t0=$(date +%s.%N)
	timeout 600 "$BENCH_BIN" send --target "127.0.0.1:${port[$sys]}" "${args[@]}" >"$work/send.json" 2>>"$work/send.log" || true
	t1=$(date +%s.%N)
	if [ "$kind" = relay ]; then
		# the run ends when the sink has every message the relay accepted;
		# at most 300 s, or 60 s without progress
		local want got=0 last=-1 still=0 i=0
		want=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["messages"]["ok"])' "$work/send.json" 2>/dev/null || echo 0)
		while [ $i -lt 3000 ]; do
			got=$(grep -o ' msgs=[0-9]*' "$work/sink.err" | tail -1 | cut -d= -f2 || true)
			got=${got:-0}
			[ "$got" -ge "$want" ] && break
			if [ "$got" = "$last" ]; then still=$((still + 1)); else still=0; last=$got; fi
			[ $still -ge 600 ] && break
			sleep 0.1; i=$((i + 1))
		done
		sleep 1.1   # one more report interval: late duplicates would show
		t1=$(date +%s.%N)
		stop_pid "$sink_pid"; sink_pid=""
	fi
	kill -TERM "$monpid"; wait "$monpid" 2>/dev/null || true
	"${sys}_stop"
	"$PY" - "$runs" "$rep" "$sys" "$name" "$kind" "$n" "$t0" "$t1" "$status" \
		"$work/send.json" "$work/sink.json" "$work/mon.out" <<'EOF'
import json, sys
runs, rep, sysname, name, kind, n, t0, t1, status, sendf, sinkf, monf = sys.argv[1:]
n, t0, t1 = int(n), float(t0), float(t1)
def load(p):
    try:
        with open(p) as f:
            lines = [l for l in f if l.startswith("{")]
        return json.loads(lines[-1]) if lines else {}
    except OSError:
        return {}
send = load(sendf)
sink = load(sinkf) if kind == "relay" else {}
cpu, peak = open(monf).read().split()
ok = send.get("messages", {}).get("ok", 0)
if kind == "accept":
    secs = send.get("elapsed_s", t1 - t0)
    got = ok
    if got == send.get("messages", {}).get("started", -1) and 0 < got < n:
        n = got   # capped by --max-run-s: every message started was accepted
else:
    # the sink's own window, first to last message received: the relay's
    # delivery rate, whatever the harness's polling granularity
    secs = sink.get("window_s") or (t1 - t0)
    got = sink.get("messages", 0)
    if ok == send.get("messages", {}).get("started", -1) and 0 < ok < n:
        n = ok   # capped by --max-run-s
    ck = sink.get("checksum", {})
    if ck.get("bad", 0) or ck.get("duplicates", 0):
        status = "checksum"
if status == "ok" and got != n:
    status = f"short {got}/{n}"
rec = {"rep": int(rep), "system": sysname, "scenario": name, "kind": kind, "messages": n,
       "delivered": got, "seconds": round(secs, 4), "msgs_per_s": round(got / secs, 1) if secs > 0 else 0,
       "p99_ms": round(send.get("latency_us", {}).get("msg", {}).get("p99", 0) / 1000, 3),
       "cpu_s": float(cpu), "cpu_s_per_1000": round(float(cpu) * 1000 / max(got, 1), 3),
       "peak_rss_kb": int(peak), "status": status}
with open(runs, "a") as f:
    f.write(json.dumps(rec) + "\n")
print(f"run {rec['rep']} {sysname:9} {name:28} {rec['msgs_per_s']:>9} msg/s p99={rec['p99_ms']} ms "
      f"cpu/1000={rec['cpu_s_per_1000']} s peak={rec['peak_rss_kb']} KiB {status}", file=sys.stderr)
EOF
}

# ringmta relays only once its delivery engine exists: probe once.
ringmta_relays=0
if [[ " $systems " == *" ringmta "* ]] && echo "$scen_list" | grep -q ' relay '; then
	sink_start 1
	ringmta_start relay
	"$BENCH_BIN" send --target "127.0.0.1:${port[ringmta]}" --messages 1 --report-every 0 >/dev/null 2>&1 || true
	for _ in $(seq 30); do kill -0 "$sink_pid" 2>/dev/null || { ringmta_relays=1; break; }; sleep 0.1; done
	ringmta_stop; stop_pid "$sink_pid"; sink_pid=""
	[ "$ringmta_relays" = 1 ] || log "ringmta: no delivery to the relayhost yet: relay scenarios n/a"
fi

log "ringmta-bench compare: $(date -u +%FT%TZ) host=$(hostname) cpus=$(nproc) kernel=$(uname -r)"
log "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
log "load before: $(cut -d' ' -f1-3 /proc/loadavg); work dir fs: $(df -T "$work" | awk 'NR==2{print $2}')"
log "systems: $systems; reps=$reps quick=$quick"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# warm-up (not recorded): Postfix forks its pools, Haraka JITs, caches fill
if [ "$quick" = 0 ]; then
	for s in $systems; do
		log "warm-up: $s"
		"${s}_start" accept
		"$BENCH_BIN" send --target "127.0.0.1:${port[$s]}" --sessions 20 --messages 2000 --reuse \
			--report-every 0 >/dev/null 2>&1 || true
		"${s}_stop"
	done
fi

order=($systems)
for rep in $(seq "$reps"); do
	if [ $((rep % 2)) = 0 ]; then   # flip the order every repetition
		rev=(); for ((i = ${#order[@]} - 1; i >= 0; i--)); do rev+=("${order[i]}"); done
		cur=("${rev[@]}")
	else
		cur=("${order[@]}")
	fi
	while read -r name kind size reuse s n; do
		for sys in "${cur[@]}"; do
			if [ "$sys" = ringmta ] && [ "$kind" = relay ] && [ "$ringmta_relays" = 0 ]; then
				echo "{\"rep\": $rep, \"system\": \"ringmta\", \"scenario\": \"$name\", \"kind\": \"relay\", \"status\": \"n/a\"}" >>"$runs"
				continue
			fi
			run_one "$rep" "$sys" "$name" "$kind" "$size" "$reuse" "$s" "$n"
		done
	done <<<"$scen_list"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- summary: medians, ratios, Markdown, JSON, PNG --------------------------
stamp=$(date -u +%Y%m%dT%H%M%SZ)
[ "$quick" = 1 ] && stamp="quick-$stamp"
base=$out/compare-$stamp
PLOT_DAT=$work/plot.dat "$PY" - "$runs" "$base" "$systems" "$load_before" "$load_after" "$quick" "$reps" \
	"$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')" "$RINGMTA_BIN" <<'EOF'
import json, os, platform, statistics, subprocess, sys
runs, base, systems, lb, la, quick, reps, rev, rbin = sys.argv[1:]
systems = systems.split()
rows = [json.loads(l) for l in open(runs)]
def ver(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "?"
cpu = ver("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-")
machine = {"host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(), "cpu": cpu,
           "mem_kb": int(ver("awk '/MemTotal/{print $2}' /proc/meminfo") or 0),
           "load_before": lb, "load_after": la, "fs": ver("df -T /var/tmp | awk 'NR==2{print $2}'")}
versions = {"ringmta": rev, "postfix": ver("postconf -h mail_version 2>/dev/null"),
            "haraka": ver("node -e \"console.log(require('" + os.environ.get("HARAKA_DIR", "/opt/ringmta-bench/haraka") +
                          "/node_modules/Haraka/package.json').version)\" 2>/dev/null"),
            "opensmtpd": "6.8.0p2 (Debian 12 package, unpacked)", "node": ver("node --version")}
durable = {"ringmta": "fsync per commit batch before 250 (durability=batch)",
           "postfix": "fsync per queue file before 250",
           "haraka": "accept: nothing stored (queue/discard); relay: 250 after the next hop's 250 (smtp_forward)",
           "opensmtpd": "fsync per queue file before 250 (queue_fs)"}
scen = []
for r in rows:
    if r["scenario"] not in scen:
        scen.append(r["scenario"])
med = {}
for sc in scen:
    for s in systems:
        rs = [r for r in rows if r["scenario"] == sc and r["system"] == s]
        good = [r for r in rs if r.get("status") == "ok"]
        if not rs:
            continue
        if not good:
            med[(sc, s)] = {"status": rs[0].get("status", "fail")}
            continue
        m = lambda k: statistics.median(r[k] for r in good)
        med[(sc, s)] = {"status": "ok", "n_runs": len(good), "msgs_per_s": m("msgs_per_s"),
                        "p99_ms": m("p99_ms"), "cpu_s_per_1000": m("cpu_s_per_1000"),
                        "peak_rss_kb": m("peak_rss_kb")}
lines = ["| scenario | system | messages/s | p99 ms | CPU s / 1000 msgs | peak RSS (PSS) MiB | ratio to Postfix |",
         "|---|---|---:|---:|---:|---:|---:|"]
for sc in scen:
    pf = med.get((sc, "postfix"), {})
    for s in systems:
        v = med.get((sc, s))
        if v is None:
            continue
        if v["status"] != "ok":
            lines.append(f"| {sc} | {s} | {v['status']} | | | | |")
            continue
        ratio = f"{v['msgs_per_s'] / pf['msgs_per_s']:.2f}" if pf.get("status") == "ok" and pf["msgs_per_s"] else ""
        v["ratio_to_postfix"] = float(ratio) if ratio else None
        lines.append(f"| {sc} | {s} | {v['msgs_per_s']:.0f} | {v['p99_ms']:.1f} | {v['cpu_s_per_1000']:.2f} | "
                     f"{v['peak_rss_kb'] / 1024:.1f} | {ratio} |")
table = "\n".join(lines)
hdr = (f"ringmta-bench compare: {machine['cpus']} CPUs ({cpu}), kernel {machine['kernel']}, "
       f"load {lb} -> {la}; reps={reps}{' (quick: smoke only, do not quote)' if quick == '1' else ''}; "
       f"ringmta {rev}")
print(hdr + "\n\n" + table)
with open(base + ".md", "w") as f:
    f.write(hdr + "\n\n" + table + "\n\nDurability:\n" +
            "".join(f"- {s}: {durable.get(s, '?')}\n" for s in systems))
with open(base + ".json", "w") as f:
    json.dump({"machine": machine, "versions": versions, "durability": {s: durable.get(s) for s in systems},
               "quick": quick == "1", "reps": int(reps), "runs": rows,
               "medians": [dict(scenario=k[0], system=k[1], **v) for k, v in med.items()]}, f, indent=1)
with open(os.environ["PLOT_DAT"], "w") as f:
    f.write("scenario " + " ".join(systems) + "\n")
    for sc in scen:
        f.write(sc + " " + " ".join(str(med.get((sc, s), {}).get("msgs_per_s", 0) if med.get((sc, s), {}).get("status") == "ok" else 0)
                                    for s in systems) + "\n")
EOF
if command -v gnuplot >/dev/null; then
	n_sys=$(echo $systems | wc -w)
	gnuplot <<EOF 2>>"$work/gnuplot.log" || log "gnuplot failed: $(tail -2 "$work/gnuplot.log")"
set terminal pngcairo size 1400,700 noenhanced
set output "$base.png"
set title "ringmta-bench compare ($(nproc) CPUs, $(uname -r)): messages/s, median of $reps"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -35 font ",9"
set logscale y
set ylabel "messages/s (log)"
set key top right
set grid ytics
plot for [i=2:$((n_sys + 1))] "$work/plot.dat" using i:xtic(1) title columnheader(i)
EOF
fi
log "results: $base.md $base.json $([ -f "$base.png" ] && echo "$base.png")$([ "$keep" = 0 ] && [ "${out#"$work"}" != "$out" ] && echo " (removed at exit: --keep or --out DIR keeps them)")"
if [ "$quick" = 1 ] && grep -v '"status": "\(ok\|n/a\)"' "$runs" | grep -q .; then
	log "quick: some runs failed: $(grep -v '"status": "\(ok\|n/a\)"' "$runs" | head -3)"
	exit 4
fi
