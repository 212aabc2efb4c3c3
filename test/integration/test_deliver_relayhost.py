"""test_deliver_relayhost - relayhost=[127.0.0.1]:PORT: every message reaches the smarthost once.

Owns:     one delivering ringmta per test and its smarthost: Postfix's
          smtp-sink (counts, captured files) or the script sink (exact bytes,
          envelopes, connections).
Must not: send anything anywhere but 127.0.0.1; dns_servers points at a
          closed loopback port (a bracketed relayhost needs no lookup).
Interface: pytest-3 test/integration/test_deliver_relayhost.py
Limits:   every wait polls with a timeout (DELIVER_S); no fixed sleeps.
Skips:    without the delivery engine (`--check-config -o delivery=yes`
          fails: issue 4), or without Postfix's smtp-sink.
Standards: RFC 5321 3.7.2 (a relay adds one Received field and changes
          nothing else), 4.5.2 (dot-stuffing on the way out), 3.3 (envelope).
"""

import re

import pytest

from conftest import split_received
from peers import (deliver_log, deliver_message, send_mail, statuses, token_of, wait_deliver,
                   wait_for, wait_queue_empty)

DELIVER_S = 30
DELIVER_KEYS = ("q", "to", "relay", "delay", "dsn", "status", "reply")


def test_relayhost_smtp_sink_counts_and_bytes(relay_daemon, smtp_sink_factory):
    sink = smtp_sink_factory()
    d = relay_daemon(relayhost=f"[127.0.0.1]:{sink.port}")
    rcpts = ["r1@example.test", "r2@example.org"]
    sent = {s.token: s for s in (send_mail(d, rcpts, token=f"rh{i}") for i in range(20))}

    def pairs():
        out = {}
        for m in sink.messages():
            tok = token_of(m.data)
            for r in m.rcpts:
                out.setdefault((tok, r), []).append(m)
        return out
    wait_for(lambda: len(pairs()) >= 40, DELIVER_S, "40 (message, recipient) pairs at smtp-sink")
    wait_queue_empty(d, DELIVER_S)
    got = pairs()
    msgs = sink.messages()
    # one transaction per message, or one per recipient domain: never more
    assert 20 <= sink.count() == len(msgs) <= 40, \
        f"got smtp-sink count {sink.count()}, {len(msgs)} files, want 20..40 and equal"
    for tok, s in sent.items():
        for r in rcpts:
            copies = got.get((tok, r), [])
            assert len(copies) == 1, f"{tok} to {r}: got {len(copies)} copies, want 1"
            m = copies[0]
            assert m.mail_from == "s@sender.test", f"{tok}: MAIL FROM got {m.mail_from!r}"
            split_received(m.data, s.msg)     # our Received: + the client's bytes
            assert m.helo == "ringmta.test", f"got EHLO {m.helo!r}, want myhostname"
    assert set(got) == {(t, r) for t in sent for r in rcpts}, "unexpected extra deliveries"


def test_relayhost_exact_bytes_and_log(relay_daemon, script_sink_factory):
    sink = script_sink_factory()
    d = relay_daemon(relayhost=f"[127.0.0.1]:{sink.port}")
    body = ["..", ".", ". dot space", "x" * 990, "", "trailing blanks  ", "last"]
    msg = deliver_message("exact", body_lines=body)
    s = send_mail(d, ["exact@example.test"], token="exact", msg=msg)
    sink.wait_count(1, timeout=DELIVER_S)
    wait_queue_empty(d, DELIVER_S)
    assert len(sink.delivered_to("exact@example.test")) == 1, "want exactly one copy"
    t = sink.delivered_to("exact@example.test")[0]
    hdr = split_received(t.data, msg)
    assert b"ringmta.test" in hdr, f"got Received {hdr!r}, want it to name myhostname"
    assert t.mail_from == "s@sender.test" and t.rcpts == ["exact@example.test"]
    recs = wait_deliver(d, lambda r: statuses(r, "exact@example.test") == ["sent"], DELIVER_S,
                        "one status=sent record")
    rec = [r for r in recs if r.get("to") == "exact@example.test"][0]
    for k in DELIVER_KEYS:
        assert k in rec, f"deliver: line lacks {k}=: {rec['_line']}"
    assert rec["q"] == s.qid, f"got q={rec['q']}, want {s.qid}"
    assert re.fullmatch(rf"[^\[\]]+\[127\.0\.0\.1\]:{sink.port}", rec["relay"]), \
        f"got relay={rec['relay']}, want host[127.0.0.1]:{sink.port}"
    assert rec["dsn"].startswith("2."), f"got dsn={rec['dsn']}"
    assert re.fullmatch(r"\d+(\.\d+)?", rec["delay"]), f"got delay={rec['delay']}"
    assert "250" in rec["reply"], f"got reply={rec['reply']!r}, want the sink's 250 reply"


def test_relayhost_null_sender_kept(relay_daemon, script_sink_factory):
    sink = script_sink_factory()
    d = relay_daemon(relayhost=f"[127.0.0.1]:{sink.port}")
    send_mail(d, ["n@example.test"], from_="", token="nullsender")
    sink.wait_count(1, timeout=DELIVER_S)
    wait_queue_empty(d, DELIVER_S)
    assert sink.count() == 1, f"got {sink.count()} copies, want 1"
    t = sink.delivered_to("n@example.test")[0]
    assert t.mail_from == "", f"got MAIL FROM {t.mail_from!r}, want <>"
    assert re.match(r"FROM:\s*<>", t.mail_args, re.I), f"got MAIL {t.mail_args!r}"


@pytest.mark.parametrize("reactors", [1, 2])
def test_relayhost_connection_limits(relay_daemon, script_sink_factory, reactors):
    sink = script_sink_factory()
    d = relay_daemon(relayhost=f"[127.0.0.1]:{sink.port}", max_messages_per_connection=5,
                     destination_concurrency_limit=2, destination_recipient_limit=2,
                     reactors=reactors)
    rcpts = [f"u{i}@example.test" for i in range(5)]
    for i in range(20):
        send_mail(d, rcpts, token=f"lim{i}")
    wait_for(lambda: all(len(sink.delivered_to(r)) >= 20 for r in rcpts), DELIVER_S,
             "every recipient of 20 messages at the sink")
    wait_queue_empty(d, DELIVER_S)
    for r in rcpts:
        assert len(sink.delivered_to(r)) == 20, f"{r}: got {len(sink.delivered_to(r))}, want 20"
    per_conn = {}
    for t in sink.txns:
        assert len(t.rcpts) <= 2, f"got {len(t.rcpts)} rcpts in one transaction, want <= 2"
        per_conn[t.conn] = per_conn.get(t.conn, 0) + 1
    assert max(per_conn.values()) <= 5, f"got {max(per_conn.values())} txns on one connection"
    assert sink.max_in_txn <= 2, f"got {sink.max_in_txn} transactions at once, want <= 2"
    assert all(x == "sent" for r in rcpts for x in statuses(deliver_log(d), r))
