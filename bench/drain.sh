#!/bin/bash
# drain.sh - how fast ringmta empties a queue into smtp-sink, optionally A/B against other settings.
#
# Usage: sudo bench/drain.sh [--messages N] [--reps N] [--reactors N] [--vs "KEY=VALUE ..."]
#
# Owns:     one work dir under $BENCH_TMP (default /var/tmp) and in it, per
#           run, a fresh spool, a ringmta ($RINGMTA_BIN) and an smtp-sink
#           (-c), each on its own 127.0.0.1 port.
# Must not: touch a running MTA or port 25; send anything off 127.0.0.1.
# Method:   per run: ringmta with delivery=no takes N messages of 1 KiB
#           (smtp-source -d -s 20 -l 1024: the queue, not timed) and
#           stops; it starts again with delivery=yes and
#           relayhost=[127.0.0.1]:SINKPORT; the drain is timed from the
#           first message at smtp-sink to the moment its counter reaches
#           N (the start-up before it, the queue scan included, is
#           printed apart as "first"). This is
#           the backlog case of a transactional relay (the next hop was
#           down, or a burst beyond the connection limits): every
#           connection always finds more mail for its destination.
#           With --vs, the runs alternate between the defaults ("base")
#           and those extra -o settings ("vs"), the order flipping every
#           repetition.
# Output:   one line per run (msg/s, CPU microseconds per message of
#           ringmta and of smtp-sink over the whole run, from /proc), then the median per
#           system. Exit 0 when every run drained, 1 otherwise or on
#           set-up errors, 2 on usage.
# Env:      RINGMTA_BIN (default <repo>/build/ringmta), BENCH_TMP.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
RINGMTA_BIN=${RINGMTA_BIN:-$repo/build/ringmta}
PATH=$PATH:/usr/sbin:/sbin

n=20000 reps=3 reactors=1 vs=""
usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
	case $1 in
	--messages) n=${2:?}; shift ;;
	--reps) reps=${2:?}; shift ;;
	--reactors) reactors=${2:?}; shift ;;
	--vs) vs=${2:?}; shift ;;
	-h|--help) usage 0 ;;
	*) usage ;;
	esac
	shift
done

die() { printf 'drain: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (ringmta drops to its user after binding)"
SRC=$(command -v smtp-source || true)
SNK=$(command -v smtp-sink || true)
[ -n "$SRC" ] && [ -n "$SNK" ] || die "smtp-source/smtp-sink missing (apt-get install postfix)"
[ -x "$RINGMTA_BIN" ] || die "no ringmta binary at $RINGMTA_BIN"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || die "python3 missing"
user=nobody
id ringmta >/dev/null 2>&1 && user=ringmta

work=$(mktemp -d "${BENCH_TMP:-/var/tmp}/ringmta-drain.XXXXXX")
chmod 755 "$work"
rm_pid="" sink_pid=""
cleanup() {
	[ -n "$rm_pid" ] && kill "$rm_pid" 2>/dev/null && wait "$rm_pid" 2>/dev/null
	[ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null && wait "$sink_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {   # wait_port PORT: until something listens (10 s)
	for _ in $(seq 200); do
		"$PY" -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1).close()' "$1" \
			2>/dev/null && return 0
		sleep 0.05
	done
	die "nothing listens on 127.0.0.1:$1"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sink_count() { tail -c 300 "$work/sink.out" | tr '\r' '\n' | grep -ao 'mesg=[0-9]*' | tail -1 | cut -d= -f2; }

results=$work/runs
: >"$results"
run_one() {   # run_one REP LABEL [-o KEY=VALUE ...]
	local rep=$1 label=$2 rm_port sink_port t0 tf="" f0=0 t1 got rcpu scpu
	shift 2
	rm_port=$(free_port) sink_port=$(free_port)
	rm -rf "$work/spool"
	"$RINGMTA_BIN" -o "listen=127.0.0.1:$rm_port" -o "spool_dir=$work/spool" -o delivery=no \
		-o "user=$user" -o "reactors=$reactors" 2>"$work/queue.log" &
	rm_pid=$!
	wait_port "$rm_port"
	"$SRC" -d -s 20 -m "$n" -l 1024 "127.0.0.1:$rm_port" || die "smtp-source failed"
	kill "$rm_pid"; wait "$rm_pid" || true; rm_pid=""
	"$SNK" -c -u nobody "127.0.0.1:$sink_port" 1024 >"$work/sink.out" 2>&1 &
	sink_pid=$!
	wait_port "$sink_port"
	t0=$(date +%s.%N)
	"$RINGMTA_BIN" -o "listen=127.0.0.1:$rm_port" -o "spool_dir=$work/spool" -o delivery=yes \
		-o "relayhost=[127.0.0.1]:$sink_port" -o "user=$user" -o "reactors=$reactors" "$@" \
		2>"$work/deliver.log" &
	rm_pid=$!
	got=0
	for _ in $(seq 60000); do      # 10 minutes at most
		got=$(sink_count); got=${got:-0}
		[ -z "$tf" ] && [ "$got" -gt 0 ] && tf=$(date +%s.%N) && f0=$got
		[ "$got" -ge "$n" ] && break
		sleep 0.01
	done
	t1=$(date +%s.%N)
	rcpu=$(cpu_ticks "$rm_pid") scpu=$(cpu_ticks "$sink_pid")
	kill "$rm_pid" "$sink_pid"; wait "$rm_pid" 2>/dev/null || true; wait "$sink_pid" 2>/dev/null || true
	rm_pid="" sink_pid=""
	"$PY" - "$results" "$rep" "$label" "$n" "$got" "$t0" "${tf:-$t1}" "${f0:-0}" "$t1" "$rcpu" "$scpu" \
		"$(getconf CLK_TCK)" <<'EOF'
import json, sys
res, rep, label, n, got, t0, tf, f0, t1, rcpu, scpu, hz = sys.argv[1:]
n, got, f0, hz = int(n), int(got), int(f0), int(hz)
secs = max(float(t1) - float(tf), 1e-6)
rec = {"rep": int(rep), "system": label, "messages": n, "delivered": got,
       "first_s": round(float(tf) - float(t0), 3), "seconds": round(secs, 3),
       "msgs_per_s": round((got - f0) / secs, 1), "ringmta_us_per_msg": round(int(rcpu) * 1e6 / hz / n, 1),
       "sink_us_per_msg": round(int(scpu) * 1e6 / hz / n, 1), "ok": got >= n}
open(res, "a").write(json.dumps(rec) + "\n")
print(f"run {rep} {label:4} {rec['msgs_per_s']:>9} msg/s  ringmta {rec['ringmta_us_per_msg']:>6} us/msg"
      f"  smtp-sink {rec['sink_us_per_msg']:>6} us/msg  first {rec['first_s']} s  "
      f"{'ok' if rec['ok'] else 'short %d/%d' % (got, n)}")
EOF
}

echo "# drain bench: $(date -u +%FT%TZ) host=$(hostname) cpus=$(nproc) kernel=$(uname -r) messages=$n reactors=$reactors ringmta $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')${vs:+ vs: $vs}"
vs_opts=()
for kv in $vs; do vs_opts+=(-o "$kv"); done
for rep in $(seq "$reps"); do
	if [ -z "$vs" ]; then
		run_one "$rep" base
	elif [ $((rep % 2)) = 1 ]; then
		run_one "$rep" base; run_one "$rep" vs "${vs_opts[@]}"
	else
		run_one "$rep" vs "${vs_opts[@]}"; run_one "$rep" base
	fi
done
"$PY" - "$results" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
for label in ("base", "vs"):
    r = [x for x in runs if x["system"] == label and x["ok"]]
    if r:
        print(f"median {label:4} {statistics.median(x['msgs_per_s'] for x in r):>9.0f} msg/s  "
              f"ringmta {statistics.median(x['ringmta_us_per_msg'] for x in r):>6.1f} us/msg  "
              f"smtp-sink {statistics.median(x['sink_us_per_msg'] for x in r):>6.1f} us/msg  ({len(r)} runs)")
sys.exit(0 if all(x["ok"] for x in runs) else 1)
EOF
