"""error_budget - a client that keeps erring is cut off with 421.

Covers: smtpd_error_limit (Postfix smtpd_hard_error_limit, nginx's error
budget): past the limit the daemon answers 421 and closes, so a bot cannot
probe forever; the daemon serves others meanwhile.
"""

import pytest

from conftest import Smtp, check_esc, send_ok

LIMIT = 3


@pytest.mark.parametrize("bad", ["XYZZY", "RCPT TO:<b@example.com>", "MAIL FROM:broken"],
                         ids=["unknown_verb", "out_of_order", "bad_syntax"])
def test_error_limit_421_and_close(make_daemon, bad):
    d = make_daemon(smtpd_error_limit=LIMIT)
    with Smtp(d.port) as c:
        c.ehlo()
        codes = []
        closed = False
        for _ in range(LIMIT + 3):
            try:
                code, lines = c.cmd(bad)
            except (EOFError, ConnectionResetError, BrokenPipeError):
                closed = True
                break
            codes.append(code)
            check_esc(code, lines[-1])
            if code == 421:
                closed = c.expect_closed(5)
                break
        assert 421 in codes, f"{bad!r} x{len(codes)}: got {codes}, want 421 within {LIMIT + 1} errors"
        assert codes.index(421) <= LIMIT, f"421 came late: got {codes}, limit {LIMIT}"
        assert all(x // 100 == 5 for x in codes[:-1]), f"got {codes}"
        assert closed, "connection not closed after 421"
    send_ok(d)


def test_errors_below_limit_keep_session(make_daemon):
    d = make_daemon(smtpd_error_limit=LIMIT)
    with Smtp(d.port) as c:
        c.ehlo()
        for _ in range(LIMIT - 1):
            assert c.cmd("XYZZY")[0] // 100 == 5
        assert c.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
        assert c.cmd("RCPT TO:<b@example.com>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        assert c.cmd(b"Subject: e\r\n\r\nb\r\n.")[0] == 250
