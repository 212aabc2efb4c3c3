"""swaks_delivery - a real third-party client (swaks) gets its mail queued.

Covers: interop with swaks with and without PIPELINING (RFC 2920), and the
queue id swaks saw in the 250 matching `ringmta queue list`.
"""

import re
import shutil
import subprocess

import pytest

from conftest import split_received

SWAKS = shutil.which("swaks")


def run_swaks(port, token, extra):
    if SWAKS is None:
        pytest.skip("swaks not installed (apt-get install swaks)")
    av = [SWAKS, "--server", "127.0.0.1", "--port", str(port),
          "--from", "swaks@test.invalid", "--to", "rcpt@example.com",
          "--helo", "swaks.test.invalid", "--header", f"X-Test-Token: {token}",
          "--body", f"swaks body {token}", "--timeout", "15", *extra]
    r = subprocess.run(av, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, f"swaks exit {r.returncode}, transcript:\n{out}"
    m = re.search(r"<[-~*]+\s+250[ -]\S*\s*Ok: queued as (\S+)", out)
    assert m, f"no 'queued as' in swaks transcript:\n{out}"
    return m.group(1), out


@pytest.mark.parametrize("mode,extra", [("pipeline", ["--pipeline"]), ("lockstep", [])])
def test_swaks_message_queued(daemon, mode, extra):
    token = f"swaks-{mode}"
    qid, transcript = run_swaks(daemon.port, token, extra)
    if mode == "pipeline":
        assert "PIPELINING" in transcript, "daemon did not offer PIPELINING to swaks"
    listed = daemon.queue_list()
    assert [m["id"] for m in listed] == [qid], f"queue list: got {listed}, want [{qid}]"
    stored = daemon.queue_cat(qid)
    assert stored.startswith(b"Received:"), f"queue cat: got {stored[:60]!r}"
    assert f"X-Test-Token: {token}".encode() in stored
    assert f"swaks body {token}".encode() in stored

