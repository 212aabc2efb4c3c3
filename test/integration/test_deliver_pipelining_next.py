"""test_deliver_pipelining_next - the next message's commands ride behind the end of data.

Owns:     one ringmta per test, first accepting only (delivery=no) to
          build a queue, then restarted delivering it to a script sink
          (SMTP on 127.0.0.1, or LMTP on a unix socket through
          transport_map) that records, for every transaction, whether
          the client's next command was already there when the end of
          data was read (Txn.ahead): sent without waiting for the reply.
Must not: reach anything but 127.0.0.1 and the sink's unix socket.
Interface: pytest-3 test/integration/test_deliver_pipelining_next.py
Limits:   every wait polls with a timeout (DELIVER_S).
Skips:    without the delivery engine (issue 4); the LMTP case without
          the map files (transport_map).
Standards: RFC 2920 3.1 (message content may be the first "command" of
          a group, so MAIL, RCPT and DATA of the next message may follow
          the end of data in the same send); RFC 2033 4.2 (LMTP: one
          end-of-data reply per accepted recipient, before the next
          transaction's replies); RFC 5321 6.1 (nothing lost).
"""

import pytest

from peers import (deliver_log, send_mail, statuses, token_of, wait_for, wait_queue_empty,
                   write_map)

DELIVER_S = 40
N_MSGS = 30


def backlog(relay_daemon, n, rcpt_of, **opts):
    """backlog - a daemon with n messages queued (delivery=no), restarted delivering."""
    d = relay_daemon(delivery="no", destination_concurrency_limit="2", **opts)
    sent = [send_mail(d, [rcpt_of(i)], token=f"pn{i}") for i in range(n)]
    assert d.stop() == 0
    d.opts["delivery"] = "yes"
    d.restart()
    return d, sent


def check_once_each(d, sink, sent, what):
    want = {s.token for s in sent}
    wait_for(lambda: want <= {token_of(t.data) for t in sink.txns if t.ok}, DELIVER_S,
             f"all {len(sent)} messages at the {what}")
    wait_queue_empty(d, DELIVER_S)
    got = [token_of(t.data) for t in sink.txns if t.ok]
    assert sorted(got) == sorted(want), \
        f"got {len(got)} deliveries of {len(set(got))} messages, want each of {len(want)} once"
    by_token = {token_of(t.data): t for t in sink.txns if t.ok}
    for s in sent:
        assert s.msg.replace(b"\r\n", b"\n") in by_token[s.token].data.replace(b"\r\n", b"\n"), \
            f"{s.token}: the body changed on the way"


def test_backlog_goes_out_pipelined_each_message_once(relay_daemon, script_sink_factory):
    sink = script_sink_factory()
    d, sent = backlog(relay_daemon, N_MSGS, lambda i: f"r{i}@example.test",
                      relayhost=f"[127.0.0.1]:{sink.port}")
    check_once_each(d, sink, sent, "sink")
    ahead = sum(1 for t in sink.txns if t.ahead > 0)
    # 2 connections share 30 queued messages: all but each connection's
    # last one can have the next one behind its end of data
    assert ahead >= N_MSGS // 2, \
        f"got {ahead} of {len(sink.txns)} ends of data with the next MAIL behind them, want most"
    log = deliver_log(d)
    for i in range(N_MSGS):
        assert statuses(log, f"r{i}@example.test") == ["sent"], statuses(log, f"r{i}@example.test")


def test_pipelining_next_no_waits_for_each_reply(relay_daemon, script_sink_factory):
    sink = script_sink_factory()
    d, sent = backlog(relay_daemon, 10, lambda i: f"r{i}@example.test",
                      relayhost=f"[127.0.0.1]:{sink.port}", pipelining_next="no")
    check_once_each(d, sink, sent, "sink")
    ahead = [t.ahead for t in sink.txns]
    assert not any(ahead), f"got bytes ahead of an end-of-data reply {ahead}, want none"


def test_no_pipelining_no_next(relay_daemon, script_sink_factory):
    sink = script_sink_factory(extensions=("8BITMIME", "ENHANCEDSTATUSCODES"))
    d, sent = backlog(relay_daemon, 10, lambda i: f"r{i}@example.test",
                      relayhost=f"[127.0.0.1]:{sink.port}")
    check_once_each(d, sink, sent, "sink")
    ahead = [t.ahead for t in sink.txns]
    assert not any(ahead), f"got bytes ahead of an end-of-data reply {ahead}, want none " \
        "(the peer does not offer PIPELINING)"


def test_421_at_end_of_data_defers_both_loses_neither(relay_daemon, script_sink_factory):
    """A 421 to the end of data while the next transaction is in flight:
    both are deferred (the next one got no reply), both arrive once later."""
    first = {"hit": None}

    def eom(key, attempt, txn):
        if first["hit"] is None and txn.ahead > 0:
            first["hit"] = key
            return "421 4.3.2 shutting down"
        return None
    sink = script_sink_factory(eom=eom)
    d, sent = backlog(relay_daemon, 8, lambda i: f"r{i}@example.test",
                      relayhost=f"[127.0.0.1]:{sink.port}")
    check_once_each(d, sink, sent, "sink")
    hit = first["hit"]
    assert hit is not None, "no end of data had the next transaction behind it"
    log = deliver_log(d)
    assert statuses(log, hit)[0] == "deferred" and statuses(log, hit)[-1] == "sent", \
        f"{hit}: got {statuses(log, hit)}"
    deferred = [r for r in log if r.get("status") == "deferred"]
    assert all("421" in r.get("reply", "") or "lost" in r.get("reply", "") for r in deferred), \
        f"got deferrals {deferred}"
    assert len(deferred) >= 2, \
        f"got deferrals {[(r['to'], r.get('reply')) for r in deferred]}, want the 421'd message " \
        "and the one pipelined behind it"


@pytest.mark.usefixtures("maps_feature")
def test_lmtp_backlog_per_recipient_replies_stay_with_their_message(relay_daemon,
                                                                      script_sink_factory):
    """LMTP: two recipients per message, the second one's end-of-data reply
    a 452; the next message rides behind. Each reply must land on its own
    message's recipient, and only the 452s are retried."""
    lm = script_sink_factory(lmtp=True, unix_path="auto",
                             lmtp_eom={"*": None,
                                       **{f"b{i}@in.test": ["452 4.2.2 mailbox full", None]
                                          for i in range(12)}})
    tmap = write_map([f"in.test lmtp:unix:{lm.unix_path}"])
    d = relay_daemon(delivery="no", destination_concurrency_limit="1", transport_map=tmap)
    sent = [send_mail(d, [f"a{i}@in.test", f"b{i}@in.test"], token=f"lm{i}") for i in range(12)]
    assert d.stop() == 0
    d.opts["delivery"] = "yes"
    d.restart()
    wait_for(lambda: all(lm.delivered_to(f"b{i}@in.test") for i in range(12)), DELIVER_S,
             "every b recipient's retry to succeed")
    wait_queue_empty(d, DELIVER_S)
    assert sum(1 for t in lm.txns if t.ahead > 0) >= 6, \
        f"got {[t.ahead for t in lm.txns]}: want most ends of data with the next MAIL behind"
    log = deliver_log(d)
    for i, s in enumerate(sent):
        assert len(lm.delivered_to(f"a{i}@in.test")) == 1
        assert len(lm.delivered_to(f"b{i}@in.test")) == 1
        assert statuses(log, f"a{i}@in.test") == ["sent"], (i, statuses(log, f"a{i}@in.test"))
        assert statuses(log, f"b{i}@in.test") == ["deferred", "sent"], \
            (i, statuses(log, f"b{i}@in.test"))
