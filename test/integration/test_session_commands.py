"""session_commands - EHLO keywords and the small verbs (RFC 5321 4.1.1).

Covers: the EHLO keyword list (PIPELINING RFC 2920, SIZE RFC 1870, 8BITMIME
RFC 6152, ENHANCEDSTATUSCODES RFC 2034, SMTPUTF8 RFC 6531, CHUNKING RFC 3030,
DSN RFC 3461), RSET/NOOP/VRFY/HELP/QUIT replies, and that every reply after
the greeting carries an enhanced status code of the right class (RFC 3463).
"""

import pytest

from conftest import Smtp, check_esc, send_ok

WANT_KEYWORDS = ["PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES",
                 "SMTPUTF8", "CHUNKING", "DSN"]


def ehlo_keywords(lines):
    return {ln.split()[0].upper() for ln in lines[1:] if ln.strip()}


@pytest.mark.parametrize("keyword", WANT_KEYWORDS)
def test_ehlo_advertises(daemon, keyword):
    with Smtp(daemon.port) as c:
        kw = ehlo_keywords(c.ehlo())
        assert keyword in kw, f"EHLO keywords: got {sorted(kw)}, want {keyword}"


def test_ehlo_size_value_is_message_size_limit(make_daemon):
    d = make_daemon(message_size_limit=123456)
    with Smtp(d.port) as c:
        lines = c.ehlo()
        size = [ln for ln in lines[1:] if ln.upper().startswith("SIZE")]
        assert size and size[0].split()[1:] == ["123456"], \
            f"SIZE line: got {size}, want 'SIZE 123456'"


def test_helo_then_transaction(daemon):
    with Smtp(daemon.port) as c:
        code, _ = c.cmd("HELO client.test.invalid")
        assert code == 250, f"HELO: got {code}, want 250"


@pytest.mark.parametrize("verb,want_codes", [
    ("RSET", (250,)),
    ("NOOP", (250,)),
    ("NOOP ignored argument", (250,)),
    ("VRFY postmaster", (252, 502)),   # RFC 5321 3.5.3: 252 when not verifying
    ("HELP", (214, 502)),
    ("rset", (250,)),                  # verbs are case-insensitive (RFC 5321 2.4)
])
def test_small_verbs_reply_with_esc(daemon, verb, want_codes):
    with Smtp(daemon.port) as c:
        c.ehlo()
        code, lines = c.cmd(verb)
        assert code in want_codes, f"{verb}: got {code} {lines}, want one of {want_codes}"
        check_esc(code, lines[-1])


def test_rset_clears_transaction(daemon):
    with Smtp(daemon.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
        assert c.cmd("RCPT TO:<b@example.com>")[0] == 250
        assert c.cmd("RSET")[0] == 250
        code, lines = c.cmd("DATA")
        assert code in (503, 554), f"DATA after RSET: got {code} {lines}, want 503"
        check_esc(code, lines[-1])
        assert c.cmd("MAIL FROM:<a@test.invalid>")[0] == 250, "MAIL after RSET"
    assert daemon.queue_list() == []


def test_quit_221_and_close(daemon):
    with Smtp(daemon.port) as c:
        c.ehlo()
        code, lines = c.cmd("QUIT")
        assert code == 221, f"QUIT: got {code} {lines}, want 221"
        check_esc(code, lines[-1])
        assert c.expect_closed(5), "server did not close after 221"


def test_pipelined_group_answered_in_order(daemon):
    """RFC 2920 3.1: replies in order, one per command, DATA last in a group."""
    with Smtp(daemon.port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@test.invalid>\r\nRCPT TO:<b@example.com>\r\n"
               b"RCPT TO:<c@example.com>\r\nDATA\r\n")
        codes = [c.reply()[0] for _ in range(4)]
        assert codes == [250, 250, 250, 354], f"got {codes}, want [250, 250, 250, 354]"
        c.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n")
        codes = [c.reply()[0] for _ in range(3)]
        assert codes == [250, 250, 221], f"got {codes}, want [250, 250, 221]"
    assert len(daemon.queue_list()) == 1
    send_ok(daemon)
