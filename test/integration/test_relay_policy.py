"""relay_policy - open relay is closed: only mynetworks relays anywhere.

Covers: RCPT to any domain from outside mynetworks is refused with 554 5.7.1
(RFC 5321 3.6.2, RFC 3463 5.7.1), relay_domains are accepted from anyone,
and loopback is in the default mynetworks.
"""

import pytest

from conftest import Smtp, check_esc, send_smtplib, make_message


@pytest.fixture
def outsider_daemon(make_daemon):
    # 127.0.0.1 is outside 10.0.0.0/8, so the test client is "the Internet".
    return make_daemon(mynetworks="10.0.0.0/8", relay_domains="relay.example.net")


def test_relay_denied_outside_mynetworks_rfc5321_3_6_2(outsider_daemon):
    d = outsider_daemon
    with Smtp(d.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<spammer@test.invalid>")[0] == 250
        # a plain foreign domain, a relay_domains look-alike suffix, the
        # percent hack and a source route (RFC 5321 3.6.1, C.) to a foreign box
        for rcpt in ("victim@example.com", "victim@RELAY.example.net.evil.test",
                     "victim%relay.example.net@example.com", "@relay.example.net:victim@example.com"):
            code, lines = c.cmd(f"RCPT TO:<{rcpt}>")
            assert code in (554, 550, 501, 553) and code // 100 == 5, \
                f"RCPT {rcpt} from outside mynetworks: got {code} {lines}, want 554"
        code, lines = c.cmd("RCPT TO:<victim@example.com>")
        assert code == 554, f"got {code} {lines}, want 554"
        assert check_esc(code, lines[-1]) == "5.7.1", f"got {lines}, want 5.7.1"
        code, lines = c.cmd("DATA")
        assert code in (503, 554), f"DATA with no accepted rcpt: got {code} {lines}"
    assert d.queue_list() == []


def test_relay_domains_accepted_from_anyone(outsider_daemon):
    d = outsider_daemon
    msg = make_message("relay-dom")
    code, text, qid = send_smtplib(d.port, msg, rcpts=["user@relay.example.net"])
    assert code == 250, f"got {code} {text!r}, want 250"
    with Smtp(d.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
        code, lines = c.cmd("RCPT TO:<User@Relay.Example.NET>")
        assert code == 250, f"domain match is case-insensitive: got {code} {lines}"
    assert [m["id"] for m in d.queue_list()] == [qid]


def test_loopback_relays_by_default(daemon):
    code, text, qid = send_smtplib(daemon.port, make_message("relay-lo"),
                                   rcpts=["anyone@example.com"])
    assert code == 250, f"got {code} {text!r}, want 250"
