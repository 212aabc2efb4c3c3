"""test_bench_common - helpers for the ringmta-bench tests (no tests here).

Owns:     the `ringmta-bench sink` processes it starts (stopped with SIGTERM,
          their JSON summary parsed) and `ringmta-bench send` runs.
Must not: touch anything but 127.0.0.1 and the processes it started.
Interface:
    bench_bin()            path of ringmta-bench (env RINGMTA_BENCH_BIN, else
                           next to RINGMTA_BIN: build/ringmta-bench); the
                           test skips if it is absent.
    BenchSink(*args)       start a sink on a free port; .port; .stop() ->
                           the final JSON summary (dict).
    run_send(port, *args)  one send run with --json; returns the JSON dict
                           and the exit code.
Limits:   every process has a timeout (SEND_TIMEOUT_S, STOP_TIMEOUT_S).
"""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import RINGMTA_BIN, SANITIZER_MARKS, free_port

READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 20.0
SEND_TIMEOUT_S = 120.0


def bench_bin():
    """bench_bin - the ringmta-bench binary, or skip the test."""
    path = os.environ.get("RINGMTA_BENCH_BIN") or str(Path(RINGMTA_BIN).parent / "ringmta-bench")
    if not os.access(path, os.X_OK):
        pytest.skip(f"ringmta-bench not found at {path} (build it, or set RINGMTA_BENCH_BIN)")
    return path


def wait_banner(port, timeout=READY_TIMEOUT_S):
    """wait_banner - until something on 127.0.0.1:port answers with a 220."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no 220 banner on 127.0.0.1:{port} within {timeout} s")


def check_sanitizers(name, text):
    """check_sanitizers - fail on any sanitizer report in a process's stderr."""
    for mark in SANITIZER_MARKS:
        assert mark not in text, f"{name}: sanitizer report:\n{text[-4000:]}"


class BenchSink:
    """BenchSink - one `ringmta-bench sink --json` on a free loopback port."""

    def __init__(self, *args):
        self.port = free_port()
        self.argv = [bench_bin(), "sink", "--listen", f"127.0.0.1:{self.port}", "--json", *args]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.summary = None
        self.probe_conns = 1   # wait_banner's connection is counted too
        try:
            wait_banner(self.port)
        except AssertionError:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=STOP_TIMEOUT_S)
            raise AssertionError(f"sink did not start: {err.decode(errors='replace')}")

    def stop(self):
        """stop - SIGTERM, wait, parse the JSON summary; returns it."""
        if self.summary is not None:
            return self.summary
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=STOP_TIMEOUT_S)
        err = err.decode(errors="replace")
        check_sanitizers("sink", err)
        assert self.proc.returncode == 0, f"sink exit {self.proc.returncode}: {err[-2000:]}"
        lines = [l for l in out.decode().splitlines() if l.startswith("{")]
        assert lines, f"sink printed no JSON summary: {out!r} {err[-2000:]}"
        self.summary = json.loads(lines[-1])
        return self.summary

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            try:
                self.stop()
            except Exception:
                self.proc.kill()
                self.proc.wait()


def run_send(port, *args, timeout=SEND_TIMEOUT_S):
    """run_send - `ringmta-bench send --json` against 127.0.0.1:port; (json, rc)."""
    av = [bench_bin(), "send", "--target", f"127.0.0.1:{port}", "--json", "--report-every", "0", *args]
    r = subprocess.run(av, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    err = r.stderr.decode(errors="replace")
    check_sanitizers("send", err)
    lines = [l for l in r.stdout.decode().splitlines() if l.startswith("{")]
    assert lines, f"send printed no JSON (exit {r.returncode}): {err[-2000:]}"
    return json.loads(lines[-1]), r.returncode
