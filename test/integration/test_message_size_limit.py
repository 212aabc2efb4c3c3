"""message_size_limit - SIZE= and oversized DATA are refused, nothing queued.

Covers: RFC 1870 6.1 (MAIL with SIZE over the limit: 552 5.3.4), RFC 1870
6.3 / RFC 3463 5.3.4 (message grows past the limit during DATA: 552 5.3.4
after the terminating dot, never a 250), and that the session stays in sync
afterwards.
"""

from conftest import Smtp, check_esc, send_ok

LIMIT = 10000


def test_mail_size_param_over_limit_rfc1870_6_1(make_daemon):
    d = make_daemon(message_size_limit=LIMIT)
    with Smtp(d.port) as c:
        c.ehlo()
        code, lines = c.cmd(f"MAIL FROM:<a@test.invalid> SIZE={LIMIT + 1}")
        assert code == 552, f"got {code} {lines}, want 552"
        assert check_esc(code, lines[-1]) == "5.3.4", f"got {lines}, want 5.3.4"
        code, lines = c.cmd(f"MAIL FROM:<a@test.invalid> SIZE={LIMIT // 2}")
        assert code == 250, f"MAIL with SIZE under the limit: got {code} {lines}, want 250"


def test_mail_size_param_huge_number(make_daemon):
    """SIZE with more digits than any integer type: refused, not wrapped."""
    d = make_daemon(message_size_limit=LIMIT)
    with Smtp(d.port) as c:
        c.ehlo()
        code, lines = c.cmd("MAIL FROM:<a@test.invalid> SIZE=" + "9" * 40)
        assert code in (552, 501, 555), f"got {code} {lines}, want 552 (or 501/555)"
        check_esc(code, lines[-1])
        code, lines = c.cmd("MAIL FROM:<a@test.invalid> SIZE=18446744073709551617")
        assert code in (552, 501, 555), f"2^64+1: got {code} {lines}, want 552"


def test_data_over_limit_552_5_3_4_nothing_queued(make_daemon):
    d = make_daemon(message_size_limit=LIMIT)
    with Smtp(d.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
        assert c.cmd("RCPT TO:<b@example.com>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        body = b"Subject: big\r\n\r\n" + (b"y" * 98 + b"\r\n") * (2 * LIMIT // 100)
        c.send(body + b".\r\n")
        code, lines = c.reply()
        assert code == 552, f"end of oversized DATA: got {code} {lines}, want 552"
        assert check_esc(code, lines[-1]) == "5.3.4", f"got {lines}, want 5.3.4"
        # still in sync: one more transaction on the same connection works
        assert c.cmd("RSET")[0] == 250
        assert c.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
        assert c.cmd("RCPT TO:<b@example.com>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        code, lines = c.cmd(b"Subject: small\r\n\r\nsmall\r\n.")
        assert code == 250, f"small message after the big one: got {code} {lines}"
    listed = d.queue_list()
    assert len(listed) == 1, f"queue: got {len(listed)} messages, want only the small one"
    assert int(listed[0]["size"]) < LIMIT
    send_ok(d)
