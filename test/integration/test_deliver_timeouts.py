"""test_deliver_timeouts - a silent or hanging-up next hop: timeout, defer, retry.

Owns:     one delivering ringmta per test (relayhost = a script sink that
          hangs: accepts TCP and never greets, or never answers one command;
          or closes after its greeting; or greets with 421).
Must not: reach anything but 127.0.0.1.
Interface: pytest-3 test/integration/test_deliver_timeouts.py
Limits:   smtp_command_timeout 3s, connect_timeout 2s; every wait polls
          with a timeout (DELIVER_S).
Skips:    without the delivery engine (issue 4).
Standards: RFC 5321 4.5.3.2 (client timeouts per command phase), 3.8 (421
          and a dropped connection are temporary failures).
"""

import time

import pytest

from peers import (HANG, send_mail, statuses, wait_deliver, wait_for, wait_queue_empty)

DELIVER_S = 30
COMMAND_TIMEOUT_S = 3


@pytest.mark.parametrize("phase", ["greeting", "ehlo", "mail", "rcpt", "data", "eom"])
def test_tarpit_times_out_and_defers(relay_daemon, script_sink_factory, phase):
    kw = {"greeting": HANG} if phase == "greeting" else {phase: HANG}
    sink = script_sink_factory(**kw)
    d = relay_daemon(relayhost=f"[127.0.0.1]:{sink.port}",
                     smtp_command_timeout=f"{COMMAND_TIMEOUT_S}s", retry_schedule="1h")
    s = send_mail(d, ["r@example.test"], token=f"tarpit{phase}")
    wait_for(lambda: sink.hangs, DELIVER_S, f"the sink to stall at {phase}")
    t_hang = sink.hangs[0]
    recs = wait_deliver(d, lambda r: "deferred" in statuses(r, "r@example.test"),
                        COMMAND_TIMEOUT_S + 10, "status=deferred after smtp_command_timeout")
    wait_for(lambda: sink.closed, 5, "ringmta to close the stalled connection")
    waited = sink.closed[0][1] - t_hang
    assert COMMAND_TIMEOUT_S - 0.5 <= waited <= COMMAND_TIMEOUT_S + 5, \
        f"connection closed {waited:.1f} s after the stall, want ~{COMMAND_TIMEOUT_S} s"
    rec = [r for r in recs if r.get("to") == "r@example.test"][0]
    assert rec["dsn"].startswith("4."), f"got dsn={rec['dsn']}, want 4.x.x"
    assert [m["id"] for m in d.queue_list()] == [s.qid], "the message must stay queued"
    assert sink.count() == 0
    assert "bounced" not in statuses(recs, "r@example.test")


@pytest.mark.parametrize("how", ["close_after_greeting", "greeting_421"])
def test_hangup_or_421_defers_then_delivers(relay_daemon, script_sink_factory, how):
    bad = script_sink_factory(**({"close_after_greeting": True} if how == "close_after_greeting"
                                 else {"greeting": "421 4.3.2 service not available"}))
    d = relay_daemon(relayhost=f"[127.0.0.1]:{bad.port}")
    send_mail(d, ["r@example.test"], token=how)
    recs = wait_deliver(d, lambda r: "deferred" in statuses(r, "r@example.test"), DELIVER_S,
                        "status=deferred")
    rec = [r for r in recs if r.get("to") == "r@example.test"][0]
    assert rec["dsn"].startswith("4."), f"got {rec}"
    if how == "greeting_421":
        assert "421" in rec["reply"], f"got reply={rec['reply']!r}, want the 421 greeting"
    # the same port now answers normally: the retry (1s, 2s) delivers
    port = bad.port
    bad.stop()
    good = script_sink_factory(port=port)
    good.wait_count(1, timeout=DELIVER_S)
    wait_queue_empty(d, DELIVER_S)
    assert len(good.delivered_to("r@example.test")) == 1


def test_connect_refused_defers(relay_daemon, script_sink_factory):
    from peers import free_port_on
    port = free_port_on("127.0.0.1")          # nobody listens here (yet)
    d = relay_daemon(relayhost=f"[127.0.0.1]:{port}")
    t0 = time.monotonic()
    send_mail(d, ["r@example.test"], token="refused")
    wait_deliver(d, lambda r: "deferred" in statuses(r, "r@example.test"), DELIVER_S,
                 "status=deferred for a refused connection")
    assert time.monotonic() - t0 < 10, "a refused connection must not wait for connect_timeout"
    sink = script_sink_factory(port=port)
    sink.wait_count(1, timeout=DELIVER_S)
    wait_queue_empty(d, DELIVER_S)
