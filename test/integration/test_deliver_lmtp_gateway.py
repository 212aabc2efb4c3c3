"""test_deliver_lmtp_gateway - ringmta as the inbound gateway in front of Dovecot LMTP.

Owns:     one delivering ringmta per test (mynetworks empty: the test
          client is an outside sender; relay_domains = in.test), a private
          Dovecot (DovecotLmtp: LMTP on a unix socket and on 127.0.0.1:PORT,
          Maildirs under its temp dir) and a sink for bounces.
Must not: reach anything but 127.0.0.1 and Dovecot's own unix socket.
Interface: pytest-3 test/integration/test_deliver_lmtp_gateway.py
Limits:   every wait polls with a timeout (DELIVER_S).
Skips:    without the delivery engine (issue 4) or the map files
          (transport_map), without dovecot-core + dovecot-lmtpd, not root.
Assumes:  relay_recipients is a file of addresses, one per line.
Standards: RFC 2033 (LMTP), RFC 5321 3.6.2/4.2.5 (550 5.1.1 unknown
          mailbox, 450 4.1.1 when the mailbox cannot be checked now),
          RFC 3463 (codes).
"""

import pytest

from conftest import has_config
from peers import (deliver_log, rcpt_reply, send_mail, statuses, strip_headers, wait_deliver,
                   wait_for, wait_queue_empty, write_map)

pytestmark = pytest.mark.usefixtures("maps_feature")
DELIVER_S = 30
DOWN_S = 10       # retry_schedule is 1s 2s: several attempts in this time
TRACE = ["Return-Path", "Delivered-To", "Received"]


def gateway(relay_daemon, dv, via, bounces=None, **opts):
    """gateway - ringmta routing in.test to Dovecot over via (unix or tcp)."""
    hop = f"lmtp:unix:{dv.socket}" if via == "unix" else f"lmtp:[127.0.0.1]:{dv.port}"
    lines = [f"in.test {hop}"]
    if bounces:
        lines.append(f"sender.test smtp:[127.0.0.1]:{bounces.port}")
    return relay_daemon(transport_map=write_map(lines), relay_domains="in.test", mynetworks="",
                        **opts)


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_gateway_lmtp_delivers_to_maildirs(relay_daemon, dovecot_factory, via):
    dv = dovecot_factory(users=["alice", "bob", "carol"])
    d = gateway(relay_daemon, dv, via,
                relay_recipients=write_map(["alice@in.test", "bob@in.test", "carol@in.test"]))
    sent = [send_mail(d, ["alice@in.test", "bob@in.test"], token=f"gw{via}{i}") for i in range(3)]
    sent.append(send_mail(d, ["carol@in.test"], token=f"gw{via}c"))
    want = {"alice": sent[:3], "bob": sent[:3], "carol": sent[3:]}
    for user, msgs in want.items():
        wait_for(lambda: len(dv.mailbox(user)) >= len(msgs), DELIVER_S,
                 f"{len(msgs)} messages in {user}'s Maildir")
    wait_queue_empty(d, DELIVER_S)
    for user, msgs in want.items():
        got = sorted(strip_headers(m, TRACE) for m in dv.mailbox(user))
        assert got == sorted(s.msg.replace(b"\r\n", b"\n") for s in msgs), \
            f"{user}: got {got!r}, want the sent messages (trace fields aside)"
    recs = wait_deliver(d, lambda r: len([x for x in r if x.get("status") == "sent"]) == 7,
                        DELIVER_S, "7 status=sent records")
    relays = {r["relay"] for r in recs if r.get("status") == "sent"}
    assert all(via != "tcp" or f"[127.0.0.1]:{dv.port}" in x for x in relays), f"got {relays}"


def test_gateway_relay_recipients_rejects_unknown(relay_daemon, dovecot_factory):
    dv = dovecot_factory(users=["alice"])
    d = gateway(relay_daemon, dv, "unix", relay_recipients=write_map(["alice@in.test"]))
    code, text = rcpt_reply(d, "mallory@in.test")
    assert (code, text[:5]) == (550, "5.1.1"), f"got {code} {text!r}, want 550 5.1.1"
    code, text = rcpt_reply(d, "alice@in.test")
    assert code == 250, f"got {code} {text!r}"
    code, text = rcpt_reply(d, "alice@elsewhere.test")
    assert code == 554 and text.startswith("5.7.1"), f"got {code} {text!r}, want no open relay"


def test_gateway_verify_recipients_asks_dovecot(relay_daemon, dovecot_factory):
    dv = dovecot_factory(users=["alice"])
    d = gateway(relay_daemon, dv, "tcp", verify_recipients="yes")
    code, text = rcpt_reply(d, "mallory@in.test")
    assert (code, text[:5]) == (550, "5.1.1"), f"got {code} {text!r}, want 550 5.1.1"
    code, text = rcpt_reply(d, "alice@in.test")
    assert code == 250, f"got {code} {text!r}"
    send_mail(d, ["alice@in.test"], token="verified")
    wait_for(lambda: dv.mailbox("alice"), DELIVER_S, "alice's message")
    wait_queue_empty(d, DELIVER_S)
    assert len(dv.mailbox("alice")) == 1, "a verify probe must not deliver a message"


def test_gateway_verify_with_dovecot_down_is_temporary(relay_daemon, dovecot_factory):
    dv = dovecot_factory(users=["alice", "bob"])
    d = gateway(relay_daemon, dv, "unix", verify_recipients="yes")
    dv.stop()
    code, text = rcpt_reply(d, "bob@in.test")
    assert (code, text[:5]) == (450, "4.1.1"), f"got {code} {text!r}, want 450 4.1.1"
    dv.start()
    code, text = rcpt_reply(d, "bob@in.test")
    assert code == 250, f"got {code} {text!r} once Dovecot is back"


def test_gateway_dovecot_down_defers_then_delivers(relay_daemon, dovecot_factory):
    dv = dovecot_factory(users=["alice"])
    d = gateway(relay_daemon, dv, "unix", relay_recipients=write_map(["alice@in.test"]))
    dv.stop()
    s = send_mail(d, ["alice@in.test"], token="whiledown")
    try:
        wait_deliver(d, lambda r: "deferred" in statuses(r, "alice@in.test"), DOWN_S,
                     "a deferred attempt while Dovecot is down")
        deferred_seen = True
    except AssertionError:
        deferred_seen = False
    assert [m["id"] for m in d.queue_list()] == [s.qid], "the message must stay queued"
    assert not dv.mailbox("alice")
    dv.start()
    wait_for(lambda: dv.mailbox("alice"), DELIVER_S, "delivery once Dovecot is back")
    wait_queue_empty(d, DELIVER_S)
    got = dv.mailbox("alice")
    assert len(got) == 1 and strip_headers(got[0], TRACE) == s.msg.replace(b"\r\n", b"\n")
    st = statuses(deliver_log(d), "alice@in.test")
    # the contract: one deliver: line per recipient per attempt
    assert deferred_seen and st[-1] == "sent" and set(st[:-1]) == {"deferred"}, \
        f"got statuses {st}, want deferred within {DOWN_S} s while Dovecot was down, then sent"


@pytest.mark.parametrize("suffix", ["list", "verify", "any"])
def test_gateway_relay_domains_suffixes(relay_daemon, dovecot_factory, ringmta_bin, suffix):
    # relay_domains = in.test:list|:verify|:any chooses the recipient check
    # per domain (list: relay_recipients; verify: ask the next hop; any:
    # accept every local part)
    listed = write_map(["alice@in.test"])
    if not has_config(ringmta_bin, f"relay_domains=in.test:{suffix}", f"relay_recipients={listed}"):
        pytest.skip(f"relay_domains suffix :{suffix} not in this ringmta yet")
    dv = dovecot_factory(users=["alice"])
    d = relay_daemon(transport_map=write_map([f"in.test lmtp:unix:{dv.socket}"]),
                     relay_domains=f"in.test:{suffix}", mynetworks="", relay_recipients=listed)
    code, text = rcpt_reply(d, "alice@in.test")
    assert code == 250, f"got {code} {text!r}"
    code, text = rcpt_reply(d, "mallory@in.test")
    if suffix == "any":
        assert code == 250, f"got {code} {text!r}, want any local part accepted"
    else:
        assert (code, text[:5]) == (550, "5.1.1"), f"got {code} {text!r}, want 550 5.1.1"
