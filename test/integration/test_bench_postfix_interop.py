"""bench_postfix_interop - ringmta-bench against Postfix's smtp-sink and smtp-source.

Covers: `ringmta-bench send` into Postfix `smtp-sink` (reused connections
and one per message): smtp-sink's own message counter equals what send
reports; `smtp-source` into `ringmta-bench sink`: the sink counts exactly
the messages smtp-source sent (they carry no checksum header: all
"missing", none "bad"). Skips when Postfix's tools are not installed.
"""

import os
import re
import shutil
import signal
import subprocess

import pytest

from conftest import free_port
from test_bench_common import BenchSink, run_send, wait_banner

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
MESG_RE = re.compile(rb"mesg=(\d+)")


def need(tool):
    if not os.access(tool, os.X_OK):
        pytest.skip(f"{tool} not installed (apt-get install postfix)")


@pytest.mark.parametrize("reuse", [True, False], ids=["reuse", "one_per_connection"])
def test_bench_send_into_postfix_smtp_sink(reuse):
    need(SMTP_SINK)
    n = 1000 if reuse else 300
    port = free_port()
    av = [SMTP_SINK, "-c"]
    if os.geteuid() == 0:
        av += ["-u", "nobody"]   # smtp-sink refuses to run as root without -u
    av += [f"127.0.0.1:{port}", "256"]
    sink = subprocess.Popen(av, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_banner(port)
        args = ["--sessions", "10", "--messages", str(n)]
        if reuse:
            args.append("--reuse")
        out, rc = run_send(port, *args)
    finally:
        sink.send_signal(signal.SIGTERM)
        stdout, stderr = sink.communicate(timeout=20)
    assert rc == 0, f"send exit: got {rc}, want 0 ({out})"
    assert out["messages"]["ok"] == n, f"send ok: got {out['messages']['ok']}, want {n}"
    assert out["latency_us"]["msg"]["hist_sum"] == n
    counts = MESG_RE.findall(stdout)
    assert counts, f"smtp-sink printed no counters: {stdout[-300:]!r} {stderr[-300:]!r}"
    got = int(counts[-1])
    assert got == n, f"smtp-sink messages: got {got}, want {n}"


@pytest.mark.parametrize("reuse", [True, False], ids=["reuse_-d", "one_per_connection"])
def test_bench_sink_counts_smtp_source(reuse):
    need(SMTP_SOURCE)
    n = 1000 if reuse else 300
    with BenchSink() as sink:
        av = [SMTP_SOURCE, "-s", "10", "-m", str(n), "-l", "1024", "-f", "source@test.invalid",
              "-t", "sink@example.com"]
        if reuse:
            av.append("-d")
        av.append(f"127.0.0.1:{sink.port}")
        r = subprocess.run(av, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        got = sink.stop()
    assert r.returncode == 0, f"smtp-source exit {r.returncode}: {r.stdout[-500:]!r}"
    assert got["messages"] == n, f"sink messages: got {got['messages']}, want {n}"
    ck = got["checksum"]
    assert (ck["missing"], ck["bad"]) == (n, 0), f"checksum: got {ck}, want missing={n} bad=0"
    assert got["aborts"] == 0 and got["rejects"] == 0, f"protocol trouble: {got}"
