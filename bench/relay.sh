#!/bin/bash
# relay.sh - end-to-end relay throughput: smtp-source -> relay -> next hop, ringmta vs Postfix vs the wire.
#
# Usage: sudo bench/relay.sh [--quick] [--reps N] [--systems "physical postfix ringmta"]
#                            [--scenarios REGEX] [--messages N] [--reactors N|auto] [--keep]
#
# Owns:     one work dir under $BENCH_TMP (default /var/tmp) and in it, per
#           run, a fresh next hop and a fresh relay, each on its own
#           127.0.0.1 port: Postfix's smtp-sink (-c counters), or a private
#           Dovecot (dovecot -F -c, LMTP on a unix socket, Maildirs under
#           the work dir); ringmta ($RINGMTA_BIN, delivery=yes, durability
#           batch, its own spool, reactors = CPUs - 1, at least 1: the
#           load tool and the sink share the machine; or --reactors
#           N|auto); Postfix (bench/lib/postfix_instance.sh,
#           then the relay settings bench/compare.sh uses).
# Must not: touch /etc/postfix, /etc/dovecot, /var/spool/postfix, port 25,
#           a running system MTA; send anything off 127.0.0.1.
# Systems:  physical = smtp-source straight into the next hop (the limit of
#           the load tool, the sink and this machine); postfix and ringmta =
#           smtp-source -> relay -> next hop, both relays durable (fsync
#           before 250) and relaying to relayhost=[127.0.0.1]:SINKPORT, or
#           through their transport map to lmtp:unix:DOVECOT_SOCKET.
# Scenarios (name: smtp-source options, next hop):
#           relay/1KiB/reuse    -s 20 -m 20000 -l 1024 -d    smtp-sink
#           relay/1KiB/new-conn -s 20 -m 20000 -l 1024       smtp-sink
#           relay/100KiB/reuse  -s 20 -m 2000 -l 102400 -d   smtp-sink
#           lmtp/1KiB/reuse     4 x (-s 5 -m 5000/4 -l 1024 -d -t uK@in.test),
#                               Dovecot LMTP, 4 users (one Maildir lock each)
#           --messages N overrides every -m (the 100 KiB one gets N/10).
# Measures: messages/s = messages / (time from the start of smtp-source to
#           the moment the next hop has every message: smtp-sink's own
#           counter, or files in the Maildirs' new/). A run with no progress
#           for 60 s ends as "short got/N". Medians over --reps (default 3)
#           repetitions; the system order flips every repetition.
# Output:   a Markdown table on stdout (msg/s, ratio to Postfix, ratio to
#           the physical limit); every run as JSON lines in the work dir
#           (kept with --keep). Exit 0 when the table was printed, 1 on
#           set-up errors, 2 on usage.
# --quick:  smoke run: 500 messages (50 at 100 KiB), 1 repetition; exit 4
#           if a run failed (deploy/dev.sh test runs it).
# ringmta:  a build without the delivery engine (`ringmta --check-config
#           -o delivery=yes` fails) gets rows that read "n/a (no delivery
#           engine)"; the other systems still run.
# Env:      RINGMTA_BIN (default <repo>/build/ringmta), BENCH_TMP.
# Standards: RFC 5321, RFC 2033 (LMTP); smtp-source(1), smtp-sink(1),
#           postconf(5), Dovecot 2.3 settings.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
RINGMTA_BIN=${RINGMTA_BIN:-$repo/build/ringmta}
PATH=$PATH:/usr/sbin:/sbin

quick=0 reps=3 systems="physical postfix ringmta" scen_re="." msgs="" keep=0 reactors=$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))
usage() { sed -n '2,46p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1; reps=1 ;;
	--reps) reps=${2:?}; shift ;;
	--systems) systems=${2:?}; shift ;;
	--scenarios) scen_re=${2:?}; shift ;;
	--messages) msgs=${2:?}; shift ;;
	--reactors) reactors=${2:?}; shift ;;
	--keep) keep=1 ;;
	-h|--help) usage 0 ;;
	*) usage ;;
	esac
	shift
done

log() { printf '# %s\n' "$*" >&2; }
die() { printf 'relay: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (private Postfix and Dovecot instances drop privileges themselves)"
SRC=$(command -v smtp-source || true)
SNK=$(command -v smtp-sink || true)
[ -n "$SRC" ] && [ -n "$SNK" ] || die "smtp-source/smtp-sink missing (apt-get install postfix)"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || die "python3 missing"

# --- scenarios: name kind size reuse messages --------------------------------
scenarios() {
	local n=${msgs:-20000} big
	[ "$quick" = 1 ] && n=${msgs:-500}
	big=$((n / 10))
	echo "relay/1KiB/reuse smtp 1024 yes $n"
	echo "relay/1KiB/new-conn smtp 1024 no $n"
	echo "relay/100KiB/reuse smtp 102400 yes $big"
	if [ "$quick" = 1 ]; then echo "lmtp/1KiB/reuse lmtp 1024 yes $n"; else echo "lmtp/1KiB/reuse lmtp 1024 yes ${msgs:-5000}"; fi
}
scen_list=$(scenarios | grep -E -- "^[^ ]*($scen_re)" || true)
[ -n "$scen_list" ] || die "no scenario matches --scenarios $scen_re"
if echo "$scen_list" | grep -q ' lmtp '; then
	command -v dovecot >/dev/null && [ -x /usr/lib/dovecot/lmtp ] ||
		die "dovecot missing for the lmtp scenario (apt-get install dovecot-core dovecot-lmtpd, or --scenarios relay)"
fi

# --- work dir, ports, helpers --------------------------------------------------
work=$(mktemp -d "${BENCH_TMP:-/var/tmp}/ringmta-relay.XXXXXX")
chmod 755 "$work"
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sink_port=$(free_port) pf_port=$(free_port) rm_port=$(free_port)
user=nobody
id ringmta >/dev/null 2>&1 && user=ringmta
sink_pid="" rm_pid="" dv_pid=""

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

# --- next hop 1: smtp-sink ------------------------------------------------------
sink_start() {
	stop_pid "$sink_pid"
	: >"$work/sink.out"
	"$SNK" -c -u nobody -h sink.bench.test 127.0.0.1:"$sink_port" 1024 >"$work/sink.out" 2>&1 &
	sink_pid=$!
	wait_banner "$sink_port" 10 || die "smtp-sink did not start: $(tail -c 300 "$work/sink.out")"
}
sink_count() {   # messages smtp-sink has received (its -c counter)
	local c
	c=$(tail -c 400 "$work/sink.out" 2>/dev/null | tr '\r' '\n' | grep -ao 'mesg=[0-9]*' | tail -1 | cut -d= -f2)
	echo "${c:-0}"
}
sink_stop() { stop_pid "$sink_pid"; sink_pid=""; }

# --- next hop 2: Dovecot LMTP (unix socket), 4 users ----------------------------
DV_USERS="u0 u1 u2 u3"
dv=$work/dovecot
dovecot_start() {
	dovecot_stop
	rm -rf "$dv"; mkdir -p "$dv/run" "$dv/state" "$dv/mail"; chmod 755 "$dv"
	chown nobody:nogroup "$dv/mail"
	: >"$dv/users"
	for u in $DV_USERS; do
		echo "$u:{PLAIN}unused:$(id -u nobody):$(id -g nobody)::$dv/mail/$u::" >>"$dv/users"
	done
	cat >"$dv/dovecot.conf" <<EOF
# written by bench/relay.sh -- private benchmark instance
base_dir = $dv/run
state_dir = $dv/state
instance_name = ringmta-relay-bench-$$
protocols = lmtp
ssl = no
log_path = $dv/dovecot.log
info_log_path = /dev/null
mail_location = maildir:~/Maildir
first_valid_uid = 1
hostname = dovecot.bench.test
postmaster_address = postmaster@dovecot.bench.test
lmtp_rcpt_check_quota = no
passdb {
  driver = passwd-file
  args = $dv/users
}
userdb {
  driver = passwd-file
  args = username_format=%n $dv/users
}
service lmtp {
  process_limit = 50
  unix_listener lmtp {
    mode = 0666
  }
}
service anvil {
  chroot =
}
EOF
	dovecot -F -c "$dv/dovecot.conf" >>"$work/dovecot.out" 2>&1 &
	dv_pid=$!
	local i
	for i in $(seq 100); do [ -S "$dv/run/lmtp" ] && return 0; sleep 0.1; done
	die "dovecot did not start: $(tail -5 "$work/dovecot.out" "$dv/dovecot.log" 2>/dev/null)"
}
dovecot_count() { find "$dv/mail" -path '*/new/*' -type f 2>/dev/null | wc -l; }
dovecot_stop() { stop_pid "$dv_pid"; dv_pid=""; }

# --- relay 1: ringmta -------------------------------------------------------------
ringmta_relays=0
if [[ " $systems " == *" ringmta "* ]]; then
	if [ ! -x "$RINGMTA_BIN" ]; then
		log "ringmta: $RINGMTA_BIN not built: rows n/a"
	elif "$RINGMTA_BIN" --check-config -o delivery=yes >/dev/null 2>&1; then
		ringmta_relays=1
	else
		log "ringmta: no delivery engine yet (--check-config -o delivery=yes fails): rows n/a"
	fi
fi
# the lmtp scenario routes with transport_map: only once ringmta loads map
# files (a bad line then fails --check-config)
ringmta_maps=0
if [ "$ringmta_relays" = 1 ]; then
	printf 'not a route\n' >"$work/bad_map"
	"$RINGMTA_BIN" --check-config -o "transport_map=$work/bad_map" >/dev/null 2>&1 || ringmta_maps=1
	[ "$ringmta_maps" = 1 ] || log "ringmta: transport_map files not loaded yet: lmtp rows n/a"
fi
ringmta_start() {   # ringmta_start smtp|lmtp
	local route=()
	if [ "$1" = lmtp ]; then
		echo "in.test lmtp:unix:$dv/run/lmtp" >"$work/transport_map"
		chmod 644 "$work/transport_map"
		route=(-o "transport_map=$work/transport_map")
	else
		route=(-o "relayhost=[127.0.0.1]:$sink_port")
	fi
	rm -rf "$work/rm-spool"; mkdir -m 700 "$work/rm-spool"; chown "$user" "$work/rm-spool"
	# dns_servers: a closed loopback port; bracketed and mapped routes need no DNS
	"$RINGMTA_BIN" -o "listen=127.0.0.1:$rm_port" -o "spool_dir=$work/rm-spool" \
		-o delivery=yes -o durability=batch -o "user=$user" -o myhostname=ringmta-bench.test \
		-o max_connections_per_ip=1000 -o "dns_servers=127.0.0.1:9" -o "reactors=$reactors" "${route[@]}" \
		2>>"$work/ringmta.log" &
	rm_pid=$!
	wait_banner "$rm_port" 10 || die "ringmta did not start: $(tail -3 "$work/ringmta.log")"
}
ringmta_stop() { stop_pid "$rm_pid"; rm_pid=""; }

# --- relay 2: Postfix ---------------------------------------------------------------
pf() { "$here/lib/postfix_instance.sh" "$1" "$work/postfix" "$pf_port"; }
postfix_start() {   # postfix_start smtp|lmtp
	pf stop >/dev/null 2>&1 || true
	rm -rf "$work/postfix"
	pf start >/dev/null || die "postfix instance did not start (see $work/postfix/maillog)"
	local route
	if [ "$1" = lmtp ]; then
		route=("relayhost =" "transport_maps = inline:{in.test=lmtp:unix:$dv/run/lmtp}")
	else
		route=("relayhost = [127.0.0.1]:$sink_port" "transport_maps =")
	fi
	# as bench/compare.sh: everything to the next hop, nothing held or deferred
	postconf -c "$work/postfix/etc" -e \
		"smtpd_recipient_restrictions = permit_mynetworks, reject" \
		"${route[@]}" "defer_transports =" \
		"smtp_tls_security_level = none" "smtp_dns_support_level = disabled" \
		"lmtp_dns_support_level = disabled" \
		"default_destination_concurrency_limit = 50" "smtp_connection_cache_on_demand = yes"
	postfix -c "$work/postfix/etc" reload >/dev/null 2>&1
	sleep 1
	wait_banner "$pf_port" 10 || die "postfix not answering on $pf_port"
}
postfix_stop() { pf stop >/dev/null 2>&1 || true; }

cleanup() {
	ringmta_stop; postfix_stop; sink_stop; dovecot_stop
	if [ "$keep" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- one run -------------------------------------------------------------------------
runs=$work/runs.jsonl
: >"$runs"
source_load() {   # source_load KIND SIZE REUSE N TARGET : smtp-source, 20 sessions in all
	local kind=$1 size=$2 reuse=$3 n=$4 target=$5 d=() lm=() pids=() u rc=0
	[ "$reuse" = yes ] && d=(-d)
	if [ "$kind" = smtp ]; then
		timeout 900 "$SRC" "${d[@]}" -s 20 -m "$n" -l "$size" -f bench@source.test \
			-t sink@example.test "$target" >>"$work/source.log" 2>&1 || rc=$?
		return $rc
	fi
	# lmtp: 4 users, 5 sessions each, messages split evenly
	[ "$target" = "unix:$dv/run/lmtp" ] && lm=(-L)
	for u in $DV_USERS; do
		timeout 900 "$SRC" "${lm[@]}" "${d[@]}" -s 5 -m $((n / 4)) -l "$size" \
			-f bench@source.test -t "$u@in.test" "$target" >>"$work/source.log" 2>&1 &
		pids+=($!)
	done
	for u in "${pids[@]}"; do wait "$u" || rc=$?; done
	return $rc
}

run_one() {   # run_one REP SYSTEM NAME KIND SIZE REUSE N
	local rep=$1 sys=$2 name=$3 kind=$4 size=$5 reuse=$6 n=$7 status=ok t0 t1 got=0 last=-1 still=0 target
	[ "$kind" = lmtp ] && n=$((n / 4 * 4))
	if [ "$sys" = ringmta ] && [ "$ringmta_relays" = 0 ]; then
		echo "{\"rep\": $rep, \"system\": \"ringmta\", \"scenario\": \"$name\", \"status\": \"n/a (no delivery engine)\"}" >>"$runs"
		return
	fi
	if [ "$sys" = ringmta ] && [ "$kind" = lmtp ] && [ "$ringmta_maps" = 0 ]; then
		echo "{\"rep\": $rep, \"system\": \"ringmta\", \"scenario\": \"$name\", \"status\": \"n/a (no transport_map yet)\"}" >>"$runs"
		return
	fi
	if [ "$kind" = lmtp ]; then dovecot_start; else sink_start; fi
	case $sys in
	physical) if [ "$kind" = lmtp ]; then target="unix:$dv/run/lmtp"; else target="127.0.0.1:$sink_port"; fi ;;
	postfix) postfix_start "$kind"; target="127.0.0.1:$pf_port" ;;
	ringmta) ringmta_start "$kind"; target="127.0.0.1:$rm_port" ;;
	esac
	count() { if [ "$kind" = lmtp ]; then dovecot_count; else sink_count; fi; }
	t0=$(date +%s.%N)
	source_load "$kind" "$size" "$reuse" "$n" "$target" || status="smtp-source failed"
	# until the next hop has every message; 60 s without progress ends it
	while :; do
		got=$(count)
		[ "$got" -ge "$n" ] && break
		if [ "$got" = "$last" ]; then still=$((still + 1)); else still=0; last=$got; fi
		[ $still -ge 1200 ] && break
		sleep 0.05
	done
	t1=$(date +%s.%N)
	[ "$status" = ok ] && [ "$got" -lt "$n" ] && status="short $got/$n"
	case $sys in postfix) postfix_stop ;; ringmta) ringmta_stop ;; esac
	if [ "$kind" = lmtp ]; then dovecot_stop; else sink_stop; fi
	"$PY" - "$runs" "$rep" "$sys" "$name" "$n" "$got" "$t0" "$t1" "$status" <<'EOF'
import json, sys
runs, rep, sysname, name, n, got, t0, t1, status = sys.argv[1:]
secs = float(t1) - float(t0)
rec = {"rep": int(rep), "system": sysname, "scenario": name, "messages": int(n), "delivered": int(got),
       "seconds": round(secs, 3), "msgs_per_s": round(int(got) / secs, 1) if secs > 0 else 0, "status": status}
with open(runs, "a") as f:
    f.write(json.dumps(rec) + "\n")
print(f"run {rec['rep']} {sysname:9} {name:22} {rec['msgs_per_s']:>9} msg/s {rec['seconds']:>8} s {status}",
      file=sys.stderr)
EOF
}

log "relay bench: $(date -u +%FT%TZ) host=$(hostname) cpus=$(nproc) kernel=$(uname -r) ringmta_reactors=$reactors load=$(cut -d' ' -f1-3 /proc/loadavg)"
log "systems: $systems; reps=$reps quick=$quick; ringmta $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'), postfix $(postconf -h mail_version 2>/dev/null), dovecot $(dovecot --version 2>/dev/null | cut -d' ' -f1)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
order=($systems)
for rep in $(seq "$reps"); do
	if [ $((rep % 2)) = 0 ]; then
		cur=(); for ((i = ${#order[@]} - 1; i >= 0; i--)); do cur+=("${order[i]}"); done
	else
		cur=("${order[@]}")
	fi
	while read -r name kind size reuse n; do
		for sys in "${cur[@]}"; do
			run_one "$rep" "$sys" "$name" "$kind" "$size" "$reuse" "$n"
		done
	done <<<"$scen_list"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

"$PY" - "$runs" "$systems" "$reps" "$quick" "$load_before" "$load_after" "$reactors" <<'EOF'
import json, statistics, sys
runs, systems, reps, quick, lb, la, reactors = sys.argv[1:]
systems = systems.split()
rows = [json.loads(l) for l in open(runs)]
scen = []
for r in rows:
    if r["scenario"] not in scen:
        scen.append(r["scenario"])
med = {}
for sc in scen:
    for s in systems:
        rs = [r for r in rows if r["scenario"] == sc and r["system"] == s]
        good = [r for r in rs if r["status"] == "ok"]
        if rs:
            med[(sc, s)] = statistics.median(r["msgs_per_s"] for r in good) if good else rs[0]["status"]
print(f"\nend-to-end relay, smtp-source -> relay -> next hop; median of {reps} alternating runs"
      f"{' (quick: smoke only, do not quote)' if quick == '1' else ''}; ringmta reactors={reactors}; load {lb} -> {la}\n")
print("| scenario | system | messages/s | ratio to Postfix | ratio to physical limit |")
print("|---|---|---:|---:|---:|")
for sc in scen:
    pf, phys = med.get((sc, "postfix")), med.get((sc, "physical"))
    for s in systems:
        v = med.get((sc, s))
        if v is None:
            continue
        if isinstance(v, str):
            print(f"| {sc} | {s} | {v} | | |")
            continue
        rp = f"{v / pf:.2f}" if pf and not isinstance(pf, str) else ""
        rl = f"{v / phys:.2f}" if phys and not isinstance(phys, str) else ""
        print(f"| {sc} | {s} | {v:.0f} | {rp} | {rl} |")
EOF
if [ "$quick" = 1 ] && grep -v '"status": "\(ok\|n/a[^"]*\)"' "$runs" | grep -q .; then
	log "quick: some runs failed: $(grep -v '"status": "\(ok\|n/a[^"]*\)"' "$runs" | head -3)"
	exit 4
fi
