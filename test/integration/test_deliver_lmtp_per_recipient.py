"""test_deliver_lmtp_per_recipient - LMTP replies per recipient: only the deferred one is retried.

Owns:     one delivering ringmta, a script sink speaking LMTP on a unix
          socket (transport_map in.test lmtp:unix:PATH) whose end-of-data
          replies are scripted per recipient, and a sink for bounces.
Must not: reach anything but 127.0.0.1 and the sink's unix socket.
Interface: pytest-3 test/integration/test_deliver_lmtp_per_recipient.py
Limits:   every wait polls with a timeout (DELIVER_S).
Skips:    without the delivery engine (issue 4) or the map files (transport_map).
Standards: RFC 2033 4.2 (after DATA, one reply per successful RCPT, in
          order), RFC 5321 4.5.4.1 (retry only what failed temporarily).
"""

import pytest

from peers import (deliver_log, parse_dsn, send_mail, statuses, wait_deliver,
                   wait_for, wait_queue_empty, write_map)

pytestmark = pytest.mark.usefixtures("maps_feature")
DELIVER_S = 30


def lmtp_world(relay_daemon, script_sink_factory, **script):
    lm = script_sink_factory(lmtp=True, unix_path="auto", **script)
    path = lm.unix_path
    bounces = script_sink_factory(name="bounces.test")
    tmap = write_map([f"in.test lmtp:unix:{path}",
                      f"sender.test smtp:[127.0.0.1]:{bounces.port}"])
    return relay_daemon(transport_map=tmap), lm, bounces


def test_lmtp_one_2xx_one_4xx_retries_only_the_4xx(relay_daemon, script_sink_factory):
    d, lm, bounces = lmtp_world(relay_daemon, script_sink_factory,
                                lmtp_eom={"bob@in.test": ["452 4.2.2 mailbox full",
                                                          "250 2.0.0 <bob@in.test> saved"]})
    send_mail(d, ["alice@in.test", "bob@in.test"], token="lmtpmix")
    wait_for(lambda: lm.delivered_to("bob@in.test"), DELIVER_S, "bob's retry to succeed")
    wait_queue_empty(d, DELIVER_S)
    assert len(lm.delivered_to("alice@in.test")) == 1, "alice must get exactly one copy"
    assert len(lm.delivered_to("bob@in.test")) == 1
    assert [t.rcpts for t in lm.txns] == [["alice@in.test", "bob@in.test"], ["bob@in.test"]], \
        f"got transactions {[t.rcpts for t in lm.txns]}, want the retry for bob only"
    log = deliver_log(d)
    assert statuses(log, "alice@in.test") == ["sent"], statuses(log, "alice@in.test")
    assert statuses(log, "bob@in.test") == ["deferred", "sent"], statuses(log, "bob@in.test")
    bob_deferred = [r for r in log if r.get("to") == "bob@in.test"][0]
    assert bob_deferred["dsn"] == "4.2.2" and "452" in bob_deferred["reply"], bob_deferred
    assert bounces.count() == 0


def test_lmtp_one_2xx_one_5xx_bounces_only_the_5xx(relay_daemon, script_sink_factory):
    d, lm, bounces = lmtp_world(relay_daemon, script_sink_factory,
                                lmtp_eom={"bob@in.test": "552 5.2.2 over quota for good"})
    send_mail(d, ["alice@in.test", "bob@in.test"], token="lmtp5xx")
    bounces.wait_count(1, timeout=DELIVER_S)
    wait_queue_empty(d, DELIVER_S)
    assert len(lm.txns) == 1 and len(lm.delivered_to("alice@in.test")) == 1
    _, _, per = parse_dsn(bounces.delivered_to("s@sender.test")[0].data)
    assert len(per) == 1 and "bob@in.test" in per[0].get("final-recipient", "") and \
        per[0].get("status") == "5.2.2", f"got {per}"
    assert statuses(deliver_log(d), "alice@in.test") == ["sent"]
    wait_deliver(d, lambda r: statuses(r, "bob@in.test") == ["bounced"], 5, "bob bounced once")
