"""fsync_rate_limit - group-commit fsyncs are paced, and pacing loses nothing.

Covers: a message that ends less than 1/fsync_rate_limit s after the
previous fsync started waits for the next slot (its 250 comes late, never
early), also when the previous fsync was another reactor's; with 0 it does
not wait; a message waiting for its slot when SIGTERM arrives still gets
its 250 and is on disk after a restart.
"""

import signal
import time

import pytest

from conftest import Smtp, check_esc

INTERVAL_S = 0.5  # fsync_rate_limit = 2


def one_message(s, token):
    """one_message - a transaction on an open session; returns (code, text, seconds from the dot)."""
    assert s.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
    assert s.cmd("RCPT TO:<b@example.com>")[0] == 250
    assert s.cmd("DATA")[0] == 354
    s.send(f"Subject: {token}\r\n\r\nbody {token}\r\n".encode())
    t0 = time.monotonic()
    s.send(b".\r\n")
    code, text = s.reply()
    return code, " ".join(text), time.monotonic() - t0


@pytest.mark.parametrize("reactors", [1, 2])
def test_second_message_waits_for_the_paced_fsync(make_daemon, reactors):
    d = make_daemon(reactors=reactors, fsync_rate_limit=2)
    # With 2 reactors the two sessions usually land on different ones:
    # the slots are shared, so the second still waits.
    with Smtp(d.port) as s1, Smtp(d.port) as s2:
        s1.ehlo()
        s2.ehlo()
        code, text, first = one_message(s1, "first")
        assert code == 250, f"first: got {code} {text}"
        check_esc(code, text)
        code, text, second = one_message(s2, "second")
        assert code == 250, f"second: got {code} {text}"
    # The first fsync started at the first dot; the second may not start
    # before INTERVAL_S after it, and the second dot came `first` later.
    assert second >= INTERVAL_S - first - 0.05, \
        f"second 250 after {second:.3f} s, want >= {INTERVAL_S - first - 0.05:.3f} s"
    assert len(d.queue_ids()) == 2


def test_zero_interval_does_not_wait(make_daemon):
    d = make_daemon(reactors=1, fsync_rate_limit=0)
    took = []
    with Smtp(d.port) as s:
        s.ehlo()
        for i in range(5):
            code, text, t = one_message(s, f"m{i}")
            assert code == 250, f"m{i}: got {code} {text}"
            took.append(t)
    # Five paced messages would take 4 x INTERVAL_S; unpaced, an fsync each.
    assert sum(took) < 4 * INTERVAL_S / 2, f"five 250s took {took}"
    assert len(d.queue_ids()) == 5


def test_sigterm_while_the_fsync_is_paced(make_daemon):
    d = make_daemon(reactors=1, fsync_rate_limit=1)
    with Smtp(d.port) as s:
        s.ehlo()
        code, text, _ = one_message(s, "first")
        assert code == 250, f"first: got {code} {text}"
        # Ends now and waits up to 1 s for the paced fsync; SIGTERM meanwhile.
        assert s.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
        assert s.cmd("RCPT TO:<b@example.com>")[0] == 250
        assert s.cmd("DATA")[0] == 354
        s.send(b"Subject: paced\r\n\r\nbody\r\n.\r\n")
        time.sleep(0.05)
        d.send_signal(signal.SIGTERM)
        code, lines = s.reply()
        assert code == 250, f"paced message: got {code} {lines}, want 250"
    rc = d.proc.wait(timeout=15)
    assert rc == 0, f"exit status {rc}; log:\n{d.log_tail()}"
    d.start()
    assert len(d.queue_ids()) == 2
