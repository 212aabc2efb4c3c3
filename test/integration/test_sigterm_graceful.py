"""sigterm_graceful - SIGTERM/SIGINT mid-session: exit 0, nothing acked is lost.

Covers: the CLI contract (graceful exit 0 on SIGTERM/SIGINT) and the 250
contract across a clean shutdown: messages acknowledged before the signal
are listed after a restart; a transaction cut off mid-DATA is not.
"""

import signal
import time

import pytest

from conftest import Smtp, make_message, send_ok, send_smtplib


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_session_exit_0_acked_kept(make_daemon, sig):
    d = make_daemon()
    acked = [send_ok(d, token=f"term-{i}") for i in range(3)]
    idle = Smtp(d.port)                      # a session that just sits there
    mid = Smtp(d.port)                       # a session inside DATA
    mid.ehlo()
    assert mid.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
    assert mid.cmd("RCPT TO:<b@example.com>")[0] == 250
    assert mid.cmd("DATA")[0] == 354
    mid.send(b"Subject: interrupted\r\n\r\npart of a body\r\n")
    time.sleep(0.2)
    t0 = time.monotonic()
    d.send_signal(sig)
    try:
        rc = d.proc.wait(timeout=15)
    except Exception:
        d.kill()
        pytest.fail(f"daemon still running 15 s after {sig.name}")
    took = time.monotonic() - t0
    assert rc == 0, f"exit status after {sig.name}: got {rc}, want 0; log:\n{d.log_tail()}"
    for c, name in ((idle, "idle"), (mid, "mid-DATA")):
        try:
            data = c.pending(wait=1.0)
        except OSError:
            data = b""
        assert not data or data.startswith(b"421"), \
            f"{name} session at shutdown: got {data!r}, want 421 or a plain close"
        c.close()
    print(f"\n{sig.name}: exit 0 after {took:.2f}s")
    d.restart()
    ids = d.queue_ids()
    assert sorted(ids) == sorted(acked), f"after restart: got {ids}, want exactly {acked}"
    send_ok(d)


def test_sigterm_while_idle_exit_0(daemon):
    rc = daemon.stop(signal.SIGTERM)
    assert rc == 0, f"exit status: got {rc}, want 0"


def test_sigterm_under_load_exit_0(make_daemon):
    import threading
    d = make_daemon()
    acked, stop = [], threading.Event()

    def client(n):
        i = 0
        while not stop.is_set():
            try:
                code, _, qid = send_smtplib(d.port, make_message(f"load-{n}-{i}"), timeout=5)
                if code == 250:
                    acked.append(qid)
            except Exception:
                return
            i += 1

    ts = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(4)]
    for t in ts:
        t.start()
    time.sleep(1.0)
    rc = d.stop(signal.SIGTERM)
    stop.set()
    for t in ts:
        t.join(timeout=10)
    assert rc == 0, f"exit status under load: got {rc}, want 0; log:\n{d.log_tail()}"
    d.restart()
    listed = set(d.queue_ids())
    lost = [q for q in acked if q not in listed]
    assert acked and not lost, f"{len(lost)} of {len(acked)} acked messages missing after SIGTERM"
