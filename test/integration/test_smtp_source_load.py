"""smtp_source_load - Postfix's smtp-source load generator: every message queued.

Covers: 20 parallel sessions x 2000 messages of 1 KiB, with connection
reuse (-d: many transactions per session) and one session per message;
`ringmta queue list` must show exactly 2000 messages afterwards.
"""

import shutil
import subprocess

import pytest

SMTP_SOURCE = shutil.which("smtp-source") or (
    "/usr/sbin/smtp-source" if shutil.os.path.exists("/usr/sbin/smtp-source") else None)
N_MSGS = 2000


@pytest.mark.slow
@pytest.mark.parametrize("reuse", [True, False], ids=["reuse_-d", "one_per_session"])
def test_smtp_source_2000_messages_all_queued(daemon, reuse):
    if SMTP_SOURCE is None:
        pytest.skip("smtp-source not installed (apt-get install postfix)")
    av = [SMTP_SOURCE, "-s", "20", "-m", str(N_MSGS), "-l", "1024",
          "-f", "source@test.invalid", "-t", "sink@example.com", "-M", "source.test.invalid"]
    if reuse:
        av.append("-d")
    av.append(f"127.0.0.1:{daemon.port}")
    r = subprocess.run(av, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, f"smtp-source exit {r.returncode}:\n{out[-2000:]}"
    assert "fatal" not in out and "warning" not in out, f"smtp-source complained:\n{out[-2000:]}"
    listed = daemon.queue_list()
    ids = [m["id"] for m in listed]
    assert len(ids) == N_MSGS, f"queue list: got {len(ids)} messages, want {N_MSGS}"
    assert len(set(ids)) == N_MSGS, f"duplicate ids in queue list: {len(ids) - len(set(ids))}"
    sizes = {int(m["size"]) for m in listed}
    assert min(sizes) >= 1024, f"stored sizes: got min {min(sizes)}, want >= 1024"
    assert all(m["rcpts"] and m["rcpts"][0].strip("<>") == "sink@example.com" for m in listed)
