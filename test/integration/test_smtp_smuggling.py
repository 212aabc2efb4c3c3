"""smtp_smuggling - only CRLF.CRLF ends DATA; bare LF/CR never splits a message.

Covers: RFC 5321 4.1.1.4 and 2.3.8 (the end of mail data is
<CRLF>.<CRLF>; bare CR and bare LF are not line ends) against the SMTP
smuggling family: CVE-2023-51764 (Postfix), CVE-2023-51765 (Sendmail),
CVE-2023-51766 (Exim) and the related Cisco/Microsoft variants
(SEC Consult, December 2023). The client hides a second transaction after
a fake end-of-data; the daemon must reject the message with a 5xx (per our
contract: bare LF / bare CR in DATA is refused), must never answer the
smuggled MAIL/RCPT/DATA, and must queue nothing.
"""

import pytest

from conftest import Smtp, check_esc, send_ok

SMUGGLED = (b"MAIL FROM:<admin@victim.example>\r\n"
            b"RCPT TO:<target@example.com>\r\n"
            b"DATA\r\n"
            b"From: <admin@victim.example>\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n")

# name -> fake end-of-data sequence; who accepted it in 2023
VARIANTS = {
    "lf_dot_lf": b"\n.\n",          # CVE-2023-51764/51766 with lenient LF handling
    "lf_dot_crlf": b"\n.\r\n",      # CVE-2023-51764 Postfix, CVE-2023-51765 Sendmail, CVE-2023-51766 Exim
    "crlf_dot_lf": b"\r\n.\n",      # Exim, Microsoft variants
    "cr_dot_cr": b"\r.\r",          # Cisco Secure Email
    "crlf_dot_cr": b"\r\n.\r",
    "cr_dot_crlf": b"\r.\r\n",
    "lf_dot_cr": b"\n.\r",
    "cr_dot_lf": b"\r.\n",
    "crlf_dot_nul_crlf": b"\r\n.\x00\r\n",
    "crlf_dot_space_crlf": b"\r\n. \r\n",
}


def smuggle(daemon, fake_end, at_start=False):
    """smuggle - one DATA with a fake end + a smuggled txn; returns replies.

    at_start: the body starts with fake_end, so the CRLF that ended the DATA
    command line would be the first half of the "end" (".\n" right after
    "DATA\r\n" reads as <CRLF>.<LF>).
    """
    with Smtp(daemon.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<attacker@test.invalid>")[0] == 250
        assert c.cmd("RCPT TO:<rcpt@example.com>")[0] == 250
        replies = [c.cmd("DATA")]
        if replies[0][0] != 354:
            return replies
        if at_start:
            c.send(fake_end + SMUGGLED + b".\r\nQUIT\r\n")
        else:
            body = b"From: <attacker@test.invalid>\r\nSubject: carrier\r\n\r\ncarrier body"
            c.send(body + fake_end + SMUGGLED + b".\r\nQUIT\r\n")
        try:
            while True:
                r = c.reply()
                replies.append(r)
                if r[0] == 221:
                    break
        except (EOFError, ConnectionResetError, TimeoutError, OSError):
            pass
    return replies


def check_not_smuggled(daemon, replies, name):
    codes = [r[0] for r in replies]
    assert codes and codes[0] == 354, f"{name}: got {codes}, want 354 first"
    after = codes[1:]
    assert after, f"{name}: no reply to the end of data"
    assert after[0] // 100 == 5, \
        f"{name}: end of data: got {replies[1]}, want a 5xx (bare CR/LF refused)"
    check_esc(after[0], replies[1][1][-1])
    # Nothing after the refusal except QUIT's 221: no 250 to a smuggled MAIL,
    # RCPT or end of data, no second 354.
    extra = [c for c in after[1:] if c != 221]
    assert all(c // 100 in (4, 5) for c in extra) and 354 not in extra, \
        f"{name}: smuggled commands were answered: replies {codes}"
    assert daemon.queue_list() == [], f"{name}: something was queued: {daemon.queue_list()}"


@pytest.mark.parametrize("name", ["lf_dot_crlf", "lf_dot_lf"])
def test_smtp_smuggling_cve_2023_51764(daemon, name):
    check_not_smuggled(daemon, smuggle(daemon, VARIANTS[name]), name)
    send_ok(daemon)


def test_smtp_smuggling_cve_2023_51765(daemon):
    check_not_smuggled(daemon, smuggle(daemon, VARIANTS["lf_dot_crlf"]), "lf_dot_crlf")
    send_ok(daemon)


@pytest.mark.parametrize("name", ["lf_dot_crlf", "crlf_dot_lf", "lf_dot_lf"])
def test_smtp_smuggling_cve_2023_51766(daemon, name):
    check_not_smuggled(daemon, smuggle(daemon, VARIANTS[name]), name)
    send_ok(daemon)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_smtp_smuggling_variants_rfc5321_4_1_1_4(daemon, name):
    replies = smuggle(daemon, VARIANTS[name])
    if name in ("crlf_dot_nul_crlf", "crlf_dot_space_crlf"):
        # No bare CR/LF here: ".\0" and ". " lines are ordinary data, so the
        # message may be accepted -- but only once, and as one message.
        codes = [r[0] for r in replies]
        assert len(codes) >= 2 and codes[0] == 354 and codes[1] // 100 in (2, 5), \
            f"{name}: got {codes}, want 354 then one 250 or 5xx"
        assert 354 not in codes[2:] and codes.count(250) <= 1, f"{name}: got {codes}"
        listed = daemon.queue_list()
        assert len(listed) <= 1, f"{name}: got {len(listed)} messages, want at most 1"
        if listed:
            stored = daemon.queue_cat(listed[0]["id"])
            assert SMUGGLED in stored, f"{name}: smuggled text is not part of the one message"
            assert [r.strip("<>") for r in listed[0]["rcpts"]] == ["rcpt@example.com"]
    else:
        check_not_smuggled(daemon, replies, name)
    send_ok(daemon)


@pytest.mark.parametrize("fake_end", [b".\n", b".\r", b"\n.\n", b"\r.\r"],
                         ids=["dot_lf", "dot_cr", "lf_dot_lf", "cr_dot_cr"])
def test_smtp_smuggling_fake_end_right_after_data_command(daemon, fake_end):
    name = f"at start {fake_end!r}"
    check_not_smuggled(daemon, smuggle(daemon, fake_end, at_start=True), name)
    send_ok(daemon)


def test_bare_lf_in_body_refused_whole_message(daemon):
    """A bare LF anywhere in DATA (not only near a dot) refuses the message."""
    with Smtp(daemon.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
        assert c.cmd("RCPT TO:<b@example.com>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        try:
            code, lines = c.cmd(b"Subject: x\r\n\r\nline\nother line\r\n.")
        except (EOFError, ConnectionResetError):
            code, lines = None, []
        assert code is None or code // 100 == 5, f"bare LF in body: got {code} {lines}, want 5xx"
    assert daemon.queue_list() == []
    send_ok(daemon)
