"""test_peers_selftest - every delivery test peer (peers.py) works on its own.

Owns:     one peer per test (smtp-sink, the script sink, a private Postfix,
          a private Dovecot, unbound with the delivery zones), driven with
          Python's smtplib (SMTP and LMTP) or raw sockets; no ringmta.
Must not: reach anything but 127.0.0.0/8 and the peers' own unix sockets.
Interface: pytest-3 test/integration/test_peers_selftest.py
Limits:   every socket op has a timeout (SOCK_S); peers stop at teardown.
Skips:    a peer whose package is missing (postfix, dovecot-core +
          dovecot-lmtpd, unbound) or that needs root when we are not.
Standards: RFC 5321 4.5.2 (dot-stuffing), RFC 2033 (LMTP replies per
          recipient), RFC 7505 (null MX), RFC 1035 (rcodes).
"""

import os
import smtplib
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import RINGMTA_BIN, make_message
from peers import (HANG, dns_rcode, parse_deliver_line, parse_dsn, statuses, strip_headers,
                   wait_for)

SOCK_S = 10

# dot-stuffed line, 8-bit byte, long-ish line, trailing blank line
# (Date and Message-ID present: Postfix would add them otherwise)
TRICKY = (b"From: <s@sender.test>\r\nTo: <r@example.test>\r\nSubject: peers\r\n"
          b"Date: Mon, 23 Nov 2026 12:00:00 +0000\r\nMessage-ID: <tricky@sender.test>\r\n\r\n"
          b"line one\r\n.leading dot\r\n..two dots\r\n8bit \xc3\xa9\r\n" + b"x" * 900 +
          b"\r\n\r\nlast\r\n")


def smtp_send(host, port, rcpts, msg, from_="s@sender.test"):
    with smtplib.SMTP(host, port, timeout=SOCK_S) as s:
        s.ehlo("selftest.test")
        return s.sendmail(from_, rcpts, msg)


# --- (a) smtp-sink -----------------------------------------------------------------

def test_smtp_sink_captures_and_counts(smtp_sink_factory):
    sink = smtp_sink_factory(host="127.0.0.2")
    smtp_send("127.0.0.2", sink.port, ["r@example.test", "q@example.test"], TRICKY)
    smtp_send("127.0.0.2", sink.port, ["z@example.test"], make_message("second"), from_="")
    assert sink.wait_count(2) == 2
    msgs = sink.messages()
    assert len(msgs) == 2, f"got {len(msgs)} captured files, want 2"
    first = next(m for m in msgs if m.rcpts == ["r@example.test", "q@example.test"])
    assert first.mail_from == "s@sender.test", f"got {first.mail_from!r}"
    assert first.data == TRICKY, f"got {first.data!r}, want the sent bytes"
    assert first.helo == "selftest.test"
    second = next(m for m in msgs if m.rcpts == ["z@example.test"])
    assert second.mail_from == "", f"got {second.mail_from!r}, want the null sender"


def test_smtp_sink_soft_reject(smtp_sink_factory):
    sink = smtp_sink_factory(args=["-r", "RCPT"])
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        smtp_send("127.0.0.1", sink.port, ["r@example.test"], b"Subject: x\r\n\r\nx\r\n")
    code = e.value.recipients["r@example.test"][0]
    assert code == 450, f"got {code}, want 450 from -r RCPT"
    assert sink.count() == 0


# --- (b) the script sink ------------------------------------------------------------

def test_script_sink_per_attempt_rcpt_and_exact_data(script_sink_factory):
    sink = script_sink_factory(host="127.0.0.3",
                               rcpt={"r@example.test": ["450 4.2.0 later", "250 2.1.5 ok"]})
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        smtp_send("127.0.0.3", sink.port, ["r@example.test"], TRICKY)
    smtp_send("127.0.0.3", sink.port, ["r@example.test"], TRICKY)
    smtp_send("127.0.0.3", sink.port, ["r@example.test"], TRICKY)
    assert sink.count() == 2
    assert sink.attempt_count("rcpt", "r@example.test") == 3
    got = sink.delivered_to("r@example.test")
    assert [t.data for t in got] == [TRICKY, TRICKY], "script sink: data not byte-exact"
    assert got[0].mail_from == "s@sender.test" and got[0].helo == "selftest.test"


def test_script_sink_5xx_at_end_of_data(script_sink_factory):
    sink = script_sink_factory(eom="554 5.7.1 no thanks")
    with pytest.raises(smtplib.SMTPDataError) as e:
        smtp_send("127.0.0.1", sink.port, ["r@example.test"], TRICKY)
    assert e.value.smtp_code == 554
    assert sink.count() == 0 and len(sink.txns) == 1 and sink.txns[0].replies == \
        ["554 5.7.1 no thanks"]


def test_script_sink_tarpit_close_and_421(script_sink_factory):
    tarpit = script_sink_factory(greeting=HANG)
    with socket.create_connection(("127.0.0.1", tarpit.port), timeout=SOCK_S) as s:
        s.settimeout(1.0)
        with pytest.raises(socket.timeout):
            s.recv(100)
    wait_for(lambda: tarpit.hangs, 5, "the tarpit to record the hang")
    closer = script_sink_factory(close_after_greeting=True)
    with socket.create_connection(("127.0.0.1", closer.port), timeout=SOCK_S) as s:
        data = b""
        while True:
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"220 "), f"got {data!r}"
    busy = script_sink_factory(greeting="421 4.3.2 try later")
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtplib.SMTP("127.0.0.1", busy.port, timeout=SOCK_S)
    assert e.value.smtp_code == 421


def test_script_sink_hang_at_data_end_seen_closed(script_sink_factory):
    sink = script_sink_factory(eom=HANG)
    s = smtplib.SMTP("127.0.0.1", sink.port, timeout=1)
    s.ehlo("selftest.test")
    s.mail("a@sender.test")
    s.rcpt("r@example.test")
    with pytest.raises((socket.timeout, smtplib.SMTPServerDisconnected)):
        s.data(b"Subject: x\r\n\r\nx\r\n")
    s.close()
    wait_for(lambda: sink.closed, 5, "the sink to see the client close")


def test_script_sink_lmtp_per_recipient(script_sink_factory, tmp_path):
    path = str(tmp_path / "lmtp.sock")
    sink = script_sink_factory(lmtp=True, unix_path=path,
                               lmtp_eom={"bob@example.test": ["452 4.2.2 over quota",
                                                              "250 2.0.0 ok"]})
    for _ in range(2):
        with smtplib.LMTP(path, timeout=SOCK_S) as l:
            l.ehlo("selftest.test")
            assert l.mail("s@sender.test")[0] == 250
            assert l.rcpt("alice@example.test")[0] == 250
            assert l.rcpt("bob@example.test")[0] == 250
            l.putcmd("data")
            assert l.getreply()[0] == 354
            l.send(b"Subject: lmtp\r\n\r\nhi\r\n.\r\n")
            codes = [l.getreply()[0], l.getreply()[0]]
        if _ == 0:
            assert codes == [250, 452], f"got {codes}, want alice 250, bob 452"
        else:
            assert codes == [250, 250], f"got {codes}"
    assert len(sink.delivered_to("alice@example.test")) == 2
    assert len(sink.delivered_to("bob@example.test")) == 1


# --- (c) a private Postfix ----------------------------------------------------------

def test_postfix_peer_final_delivery_and_unknown_user(postfix_peer_factory):
    pf = postfix_peer_factory(users=["alice@pf.test"])
    smtp_send("127.0.0.1", pf.port, ["alice@pf.test"], TRICKY)
    got = wait_for(lambda: pf.mailbox("alice@pf.test"), 20, "postfix to fill alice's Maildir")
    body = strip_headers(got[0], ["Return-Path", "X-Original-To", "Delivered-To",
                                   "Received"])
    assert body == TRICKY.replace(b"\r\n", b"\n"), f"got {body!r}"
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        smtp_send("127.0.0.1", pf.port, ["nobody@pf.test"], TRICKY)
    code, text = e.value.recipients["nobody@pf.test"]
    assert code == 550 and text.startswith(b"5.1.1"), f"got {code} {text!r}"


def test_postfix_peer_relays_on(postfix_peer_factory, script_sink_factory):
    sink = script_sink_factory()
    pf = postfix_peer_factory(relayhost=f"[127.0.0.1]:{sink.port}")
    smtp_send("127.0.0.1", pf.port, ["far@elsewhere.test"], TRICKY)
    sink.wait_count(1, timeout=30)
    t = sink.delivered_to("far@elsewhere.test")[0]
    assert strip_headers(t.data, ["Received"]) == TRICKY, f"got {t.data!r}"
    wait_for(lambda: pf.queue_count() == 0, 10, "postfix's queue to empty")


# --- (d) Dovecot LMTP ---------------------------------------------------------------

@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_dovecot_lmtp_delivers_to_maildir(dovecot_factory, via):
    dv = dovecot_factory(users=["alice", "bob"])
    target = dv.socket if via == "unix" else "127.0.0.1"
    kw = {} if via == "unix" else {"port": dv.port}
    with smtplib.LMTP(target, timeout=SOCK_S, **kw) as l:
        l.ehlo("selftest.test")
        assert l.mail("s@sender.test")[0] == 250
        assert l.rcpt("alice@in.test")[0] == 250
        code, text = l.rcpt("mallory@in.test")
        assert code == 550 and text.startswith(b"5.1.1"), f"got {code} {text!r}"
        assert l.rcpt("bob@in.test")[0] == 250
        l.putcmd("data")
        assert l.getreply()[0] == 354
        l.send(TRICKY.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        codes = [l.getreply()[0], l.getreply()[0]]
    assert codes == [250, 250], f"got {codes}, want one 250 per recipient"
    for user in ("alice", "bob"):
        msgs = dv.mailbox(user)
        assert len(msgs) == 1, f"{user}: got {len(msgs)} messages"
        body = strip_headers(msgs[0], ["Return-Path", "Delivered-To", "Received"])
        assert body == TRICKY.replace(b"\r\n", b"\n"), f"{user}: got {body!r}"


def test_dovecot_stop_and_start_again(dovecot_factory):
    dv = dovecot_factory(users=["alice"])
    dv.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", dv.port), timeout=2).close()
    with pytest.raises(OSError):
        smtplib.LMTP(dv.socket, timeout=2)
    dv.start()
    with smtplib.LMTP(dv.socket, timeout=SOCK_S) as l:
        l.ehlo("selftest.test")
        l.sendmail("s@sender.test", ["alice@in.test"], b"Subject: again\r\n\r\nx\r\n")
    assert len(dv.mailbox("alice")) == 1


# --- (e) unbound with the delivery zones ------------------------------------------

def test_dns_zones_rcodes_and_flaky(dns_zones):
    port = dns_zones.port
    assert dns_rcode(port, "multi.test") == 0
    assert dns_rcode(port, "null.test") == 0
    assert dns_rcode(port, "nope.test") == 3, "want NXDOMAIN"
    assert dns_rcode(port, "x.fail.example") == 2, "want SERVFAIL"
    assert dns_rcode(port, "f1.flaky.example") == 2, "want SERVFAIL before heal"
    dns_zones.heal_flaky("f1.flaky.example")
    try:
        assert dns_rcode(port, "f1.flaky.example") == 0, "want an answer after heal"
    finally:
        dns_zones.reset_flaky("f1.flaky.example")
    assert dns_rcode(port, "f1.flaky.example") == 2, "want SERVFAIL again after reset"


def test_dns_zones_mx_records_through_dns_probe(dns_zones):
    probe = Path(RINGMTA_BIN).parent / "test" / "dns_probe"
    if not os.access(probe, os.X_OK):
        pytest.skip(f"dns_probe not built at {probe}")
    r = subprocess.run([str(probe), "-s", f"127.0.0.1:{dns_zones.port}", "-t", "1", "-n", "2",
                        "mx:multi.test", "mx:fallback.test", "mx:null.test", "mx:sender.test"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode == 77:
        pytest.skip("io_uring unavailable for dns_probe")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "10/mx1.multi.test/ok/127.0.0.2,20/mx2.multi.test/ok/127.0.0.3" in out, out
    assert "10/down.fallback.test/ok/127.0.0.4,20/up.fallback.test/ok/127.0.0.5" in out, out
    assert "mx null.test status=null-mx" in out, out
    assert "10/mx.sender.test/ok/127.0.0.6" in out, out


# --- the helpers the delivery tests lean on ------------------------------------------

def test_parse_dsn_reads_a_real_postfix_bounce(postfix_peer_factory, script_sink_factory):
    # Postfix relays to the sink, which refuses r@example.test with 550; the
    # bounce Postfix makes goes back through the same sink to the sender.
    sink = script_sink_factory(rcpt={"r@example.test": "550 5.1.1 <r@example.test>: no such user"})
    pf = postfix_peer_factory(relayhost=f"[127.0.0.1]:{sink.port}")
    smtp_send("127.0.0.1", pf.port, ["r@example.test"], TRICKY)
    sink.wait_count(1, timeout=30)
    t = sink.delivered_to("s@sender.test")[0]
    assert t.mail_from == ""
    msg, per_msg, per_rcpt = parse_dsn(t.data)
    assert "mailer-daemon" in msg["From"].lower()
    assert per_msg["reporting-mta"].startswith("dns;"), per_msg
    assert len(per_rcpt) == 1, per_rcpt
    f = per_rcpt[0]
    assert f["final-recipient"].replace(" ", "") == "rfc822;r@example.test", f
    assert f["action"] == "failed" and f["status"] == "5.1.1", f
    assert f["diagnostic-code"].startswith("smtp;") and "no such user" in f["diagnostic-code"], f


def test_deliver_log_parser():
    line = ('r0 s=00a3f19c42d8e611 q=0123ABCD deliver: q=0123ABCD to=a@b.test '
            'relay=mx1.b.test[127.0.0.2]:2525 delay=0.12 dsn=4.2.0 status=deferred '
            'reply="450 4.2.0 <a@b.test>: \\"greylisted\\" try=later"')
    r = parse_deliver_line(line)
    assert (r["q"], r["to"], r["relay"], r["delay"], r["dsn"], r["status"]) == \
        ("0123ABCD", "a@b.test", "mx1.b.test[127.0.0.2]:2525", "0.12", "4.2.0", "deferred")
    assert r["reply"] == '450 4.2.0 <a@b.test>: "greylisted" try=later', r["reply"]
    assert statuses([r], "A@B.test") == ["deferred"]


def test_deliver_log_parser_prefix_q_and_bracketed_to():
    r = parse_deliver_line('r0 q=6b04b18100000000 deliver: to=<exact@example.test> '
                           'relay=127.0.0.1[127.0.0.1]:50817 delay=0.000 dsn=2.0.0 status=sent '
                           'reply="250 2.0.0 Ok: queued as S1x0"')
    assert (r["q"], r["to"], r["to_raw"], r["status"]) == \
        ("6b04b18100000000", "exact@example.test", "<exact@example.test>", "sent"), r
