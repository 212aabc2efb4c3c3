"""test_deliver_restart - stopping the daemon mid-delivery loses nothing (at most a duplicate).

Owns:     one delivering ringmta (stopped and started again on the same
          spool) and a slow script sink (eom_delay: it holds every end of
          data for a while before its 250), so the stop lands while
          messages are on the wire.
Must not: reach anything but 127.0.0.1.
Interface: pytest-3 test/integration/test_deliver_restart.py
Limits:   every wait polls with a timeout (DELIVER_S).
Skips:    without the delivery engine (issue 4).
Standards: RFC 5321 6.1 (a message accepted is delivered or returned,
          never silently lost); duplicates are allowed (RFC 1047: the
          sender may not learn that the 250 arrived).
"""

import signal

import pytest

from peers import deliver_log, send_mail, token_of, wait_for, wait_queue_empty

DELIVER_S = 40
N_MSGS = 12


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_stop_mid_delivery_loses_nothing(relay_daemon, script_sink_factory, sig):
    sink = script_sink_factory(eom_delay=1.5)
    d = relay_daemon(relayhost=f"[127.0.0.1]:{sink.port}", destination_concurrency_limit=4)
    sent = [send_mail(d, [f"r{i}@example.test"], token=f"restart{i}") for i in range(N_MSGS)]
    wait_for(lambda: sink.in_eom_delay > 0, DELIVER_S, "a message on the wire at the sink")
    rc = d.stop(sig=sig) if sig == signal.SIGTERM else d.kill()
    if sig == signal.SIGTERM:
        assert rc == 0, f"got exit {rc} after SIGTERM mid-delivery, want 0"
    before = {token_of(t.data) for t in sink.txns if t.ok}
    assert len(before) < N_MSGS, "the stop came too late to test anything: everything was in"
    d.restart()
    want = {s.token for s in sent}
    wait_for(lambda: want <= {token_of(t.data) for t in sink.txns if t.ok}, DELIVER_S,
             f"all {N_MSGS} messages at the sink after the restart")
    wait_queue_empty(d, DELIVER_S)
    got = [token_of(t.data) for t in sink.txns if t.ok]
    assert set(got) == want, f"got {sorted(set(got))}, want {sorted(want)}"
    copies = {tok: got.count(tok) for tok in want}
    assert max(copies.values()) <= 2, \
        f"got copies per message {copies}, want at most one duplicate of each"
    sent_log = [r for r in deliver_log(d) if r.get("status") == "sent"]
    assert {r["to"] for r in sent_log} == {f"r{i}@example.test" for i in range(N_MSGS)}
