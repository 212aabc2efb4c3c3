"""test_deliver_postfix_nexthop - relaying to a real Postfix that files mail in Maildirs.

Owns:     one delivering ringmta, one private Postfix (PostfixPeer: own
          config, queue and data dirs, virtual(8) into Maildirs, 127.0.0.1
          only) and a script sink standing in for the sender's domain.
Must not: reach anything but 127.0.0.1; the system Postfix is untouched.
Interface: pytest-3 test/integration/test_deliver_postfix_nexthop.py
Limits:   every wait polls with a timeout (DELIVER_S).
Skips:    without the delivery engine (issue 4) or the map files
          (transport_map), without postfix, not root.
Standards: RFC 5321 3.7.2 (trace fields only are added), 4.2.2 (550 5.1.1
          from the next hop is permanent), RFC 3464 (the bounce).
"""

import pytest

from peers import (parse_dsn, send_mail, statuses, strip_headers, wait_deliver, wait_for,
                   wait_queue_empty, write_map)

pytestmark = pytest.mark.usefixtures("maps_feature")
DELIVER_S = 40
TRACE = ["Return-Path", "X-Original-To", "Delivered-To", "Received"]


def test_postfix_nexthop_final_delivery(relay_daemon, postfix_peer_factory,
                                        script_sink_factory):
    pf = postfix_peer_factory(users=["alice@pf.test", "bob@pf.test"])
    bounces = script_sink_factory()
    tmap = write_map([f"pf.test smtp:[127.0.0.1]:{pf.port}",
                      f"sender.test smtp:[127.0.0.1]:{bounces.port}"])
    d = relay_daemon(transport_map=tmap)
    sent = [send_mail(d, ["alice@pf.test", "bob@pf.test"], token=f"pf{i}") for i in range(5)]
    for user in ("alice@pf.test", "bob@pf.test"):
        wait_for(lambda: len(pf.mailbox(user)) >= 5, DELIVER_S, f"5 messages in {user}'s Maildir")
        got = sorted(strip_headers(m, TRACE) for m in pf.mailbox(user))
        want = sorted(s.msg.replace(b"\r\n", b"\n") for s in sent)
        assert got == want, f"{user}: Maildir bodies differ from what was sent (trace fields" \
                            f" aside):\n got {got[:1]!r}\nwant {want[:1]!r}"
        for m in pf.mailbox(user):
            hops = [ln for ln in m.split(b"\n\n", 1)[0].split(b"\n") if ln.startswith(b"Received:")]
            assert len(hops) == 2, f"got {len(hops)} Received fields, want ringmta's + Postfix's"
    wait_queue_empty(d, DELIVER_S)
    wait_for(lambda: pf.queue_count() == 0, DELIVER_S, "Postfix's queue to empty")
    assert bounces.count() == 0, "no bounce expected"


def test_postfix_nexthop_unknown_user_bounces(relay_daemon, postfix_peer_factory,
                                              script_sink_factory):
    pf = postfix_peer_factory(users=["alice@pf.test"])
    bounces = script_sink_factory()
    tmap = write_map([f"pf.test smtp:[127.0.0.1]:{pf.port}",
                      f"sender.test smtp:[127.0.0.1]:{bounces.port}"])
    d = relay_daemon(transport_map=tmap)
    send_mail(d, ["alice@pf.test", "ghost@pf.test"], token="pfghost")
    wait_for(lambda: pf.mailbox("alice@pf.test"), DELIVER_S, "alice's copy")
    wait_deliver(d, lambda r: statuses(r, "ghost@pf.test") == ["bounced"], DELIVER_S,
                 "ghost@pf.test bounced")
    bounces.wait_count(1, timeout=DELIVER_S)
    t = bounces.delivered_to("s@sender.test")[0]
    assert t.mail_from == "", f"bounce MAIL FROM: got {t.mail_from!r}, want <>"
    _, _, per_rcpt = parse_dsn(t.data)
    assert len(per_rcpt) == 1, f"got {len(per_rcpt)} recipients in the DSN, want only ghost"
    f = per_rcpt[0]
    assert "ghost@pf.test" in f.get("final-recipient", ""), f"got {f}"
    assert f.get("action", "").lower() == "failed" and f.get("status") == "5.1.1", f"got {f}"
    assert "550" in f.get("diagnostic-code", ""), f"got {f}, want Postfix's 550 in it"
    wait_queue_empty(d, DELIVER_S)
