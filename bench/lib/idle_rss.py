#!/usr/bin/env python3
"""idle_rss - memory per idle SMTP connection: RSS delta of a server process.

Usage: idle_rss.py --port PORT --pid PID [--conns 5000] [--hold 2]

Opens CONNS loopback TCP connections, reads each 220 banner (so the server
has fully set the session up), waits HOLD seconds, and reports the growth
of the server's VmRSS (summed over PID and its child processes) divided by
CONNS. Prints one line:
  idle: conns=N open=N rss0_kb=A rss1_kb=B bytes_per_conn=C
Exit: 0, 1 if fewer than CONNS sessions got a banner.
"""

import argparse
import os
import resource
import socket
import sys
import time


def rss_kb(pid):
    """rss_kb - VmRSS of pid plus all its descendants (kB)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(x) for x in f.read().split()]
        except OSError:
            continue
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--conns", type=int, default=5000)
    ap.add_argument("--hold", type=float, default=2.0)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.conns + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    rss0 = rss_kb(a.pid)
    socks, ok = [], 0
    for _ in range(a.conns):
        try:
            s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
        except OSError as e:
            print(f"idle_rss: connect #{len(socks)}: {e}", file=sys.stderr)
            break
        socks.append(s)
    for s in socks:
        try:
            if s.recv(512).startswith(b"220"):
                ok += 1
        except OSError:
            pass
    time.sleep(a.hold)
    rss1 = rss_kb(a.pid)
    per = (rss1 - rss0) * 1024 / max(ok, 1)
    print(f"idle: conns={a.conns} open={ok} rss0_kb={rss0} rss1_kb={rss1}"
          f" bytes_per_conn={per:.0f}")
    for s in socks:
        s.close()
    return 0 if ok == a.conns else 1


if __name__ == "__main__":
    sys.exit(main())
