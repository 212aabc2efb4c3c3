"""idle_connections - thousands of idle sessions do not starve a real client.

Covers: the shared-nothing reactor design (ARCHITECTURE.md: memory per idle
connection stays small) and RFC 5321 4.5.3.2 (servers should tolerate
clients holding sessions). 2,000 connections (env RINGMTA_TEST_IDLE_CONNS)
each read their 220 banner and then sit idle; a normal client is served
while they are held, and all of them are still open afterwards. Prints RSS
per idle connection.
"""

import os
import resource
import socket
import time

import pytest

from conftest import send_ok

N_IDLE = int(os.environ.get("RINGMTA_TEST_IDLE_CONNS", "2000"))


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))
    except (ValueError, OSError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        pytest.skip(f"RLIMIT_NOFILE {soft} < {need} needed for {N_IDLE} idle connections"
                    " (raise the hard limit or set RINGMTA_TEST_IDLE_CONNS lower)")


@pytest.mark.slow
def test_2000_idle_connections_normal_client_served(make_daemon):
    raise_nofile(N_IDLE + 256)
    d = make_daemon(max_connections=N_IDLE + 100, max_connections_per_ip=N_IDLE + 100,
                    smtpd_timeout="300s")
    send_ok(d)                     # warm up before the baseline
    rss0 = d.rss_kb()
    socks = []
    try:
        t0 = time.monotonic()
        for i in range(N_IDLE):
            s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            socks.append(s)
        for i, s in enumerate(socks):
            s.settimeout(10)
            banner = s.recv(512)
            assert banner.startswith(b"220"), \
                f"idle connection {i}: got banner {banner[:80]!r}, want 220"
        t_open = time.monotonic() - t0
        rss1 = d.rss_kb()
        t1 = time.monotonic()
        qid = send_ok(d)
        t_served = time.monotonic() - t1
        assert t_served < 5, f"normal client took {t_served:.2f}s with {N_IDLE} idle sessions"
        assert qid in d.queue_ids()
        # all idle sessions still open: nothing to read, not closed
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed += 1
        assert closed == 0, f"{closed} of {N_IDLE} idle sessions were closed early"
        per_conn = (rss1 - rss0) * 1024 / N_IDLE
        print(f"\n{N_IDLE} idle connections opened in {t_open:.2f}s;"
              f" RSS {rss0} -> {rss1} kB = {per_conn:.0f} bytes/connection;"
              f" normal client served in {t_served * 1000:.0f} ms")
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)
    send_ok(d)
