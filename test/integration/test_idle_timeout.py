"""idle_timeout - smtpd_timeout closes silent sessions with 421 4.4.2.

Covers: RFC 5321 4.5.3.2.7 (server timeout, 421 on close) and RFC 3463
4.4.2 (bad connection), at the banner, mid-transaction and mid-DATA; a
half-received message is never queued.
"""

import time

import pytest

from conftest import Smtp, check_esc, send_ok

TIMEOUT_S = 2


def expect_timeout_421(c, started):
    code, lines = c.reply()
    elapsed = time.monotonic() - started
    assert code == 421, f"after idling: got {code} {lines}, want 421"
    assert check_esc(code, lines[-1]) == "4.4.2", f"got {lines}, want 4.4.2"
    assert TIMEOUT_S * 0.75 <= elapsed <= TIMEOUT_S * 3 + 1, \
        f"421 after {elapsed:.2f}s, want about {TIMEOUT_S}s"
    assert c.expect_closed(5), "connection not closed after 421"


@pytest.mark.parametrize("stage", ["banner", "after_ehlo", "after_rcpt", "mid_data"])
def test_idle_timeout_421_4_4_2_rfc5321_4_5_3_2_7(make_daemon, stage):
    d = make_daemon(smtpd_timeout=f"{TIMEOUT_S}s")
    with Smtp(d.port, timeout=TIMEOUT_S * 4 + 5) as c:
        if stage != "banner":
            c.ehlo()
        if stage in ("after_rcpt", "mid_data"):
            assert c.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
            assert c.cmd("RCPT TO:<b@example.com>")[0] == 250
        if stage == "mid_data":
            assert c.cmd("DATA")[0] == 354
            c.send(b"Subject: half\r\n\r\nhalf a message")
        expect_timeout_421(c, time.monotonic())
    assert d.queue_list() == [], "a timed-out transaction was queued"
    send_ok(d)


def test_partial_command_line_times_out(make_daemon):
    d = make_daemon(smtpd_timeout=f"{TIMEOUT_S}s")
    with Smtp(d.port, timeout=TIMEOUT_S * 4 + 5) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@te")
        expect_timeout_421(c, time.monotonic())
    send_ok(d)
