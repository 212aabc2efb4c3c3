"""test_deliver_queue_admin - hold, release, flush, delete and show against a delivering daemon.

Owns:     one delivering ringmta (retry_schedule 1h: nothing is retried on
          its own during the test) and a script sink that refuses RCPT
          with 451 until the test opens it.
Must not: reach anything but 127.0.0.1.
Interface: pytest-3 test/integration/test_deliver_queue_admin.py
          (`ringmta -o spool_dir=D queue list|show|hold|release|delete|flush`)
Limits:   every wait polls with a timeout (DELIVER_S); CLI runs have the
          conftest limit.
Skips:    without the delivery engine (issue 4) or queue admin commands.
Standards: postsuper(1) -h/-H/-d and postqueue(1) -f/-i as the model.
"""

import pytest

from peers import send_mail, statuses, token_of, wait_deliver, wait_for, wait_queue_empty

pytestmark = pytest.mark.usefixtures("queue_admin_feature")
DELIVER_S = 30


def state_of(d, qid):
    """state_of - the state= of qid in `queue list`, or None when it is gone."""
    for m in d.queue_list():
        if m["id"] == qid:
            return m.get("state")
    return None


def is_held(state):
    return bool(state) and ("hold" in state or "held" in state)


def test_hold_release_flush_delete_show(relay_daemon, script_sink_factory):
    gate = {"open": False}
    sink = script_sink_factory(
        rcpt=lambda addr, attempt: "250 2.1.5 ok" if gate["open"] else "451 4.3.0 not yet")
    d = relay_daemon(relayhost=f"[127.0.0.1]:{sink.port}", retry_schedule="1h")
    held = send_mail(d, ["held@example.test"], token="held")
    other = send_mail(d, ["other@example.test"], token="other")
    doomed = send_mail(d, ["doomed@example.test"], token="doomed")
    for s in (held, other, doomed):
        wait_deliver(d, lambda r: "deferred" in statuses(r, s.rcpts[0]), DELIVER_S,
                     f"{s.rcpts[0]} deferred")

    shown = d.cli("queue", "show", other.qid).stdout.decode("utf-8", "replace")
    for want in (other.qid, "s@sender.test", "other@example.test"):
        assert want in shown, f"queue show {other.qid}: got {shown!r}, want {want!r} in it"

    d.cli("queue", "hold", held.qid)
    assert is_held(state_of(d, held.qid)), \
        f"got state {state_of(d, held.qid)!r} after hold, want a held state"
    d.cli("queue", "delete", doomed.qid)
    assert state_of(d, doomed.qid) is None, "deleted message still listed"
    r = d.cli("queue", "show", doomed.qid, check=False)
    assert r.returncode != 0, "queue show of a deleted message must fail"

    gate["open"] = True
    d.cli("queue", "flush")
    wait_for(lambda: sink.delivered_to("other@example.test"), DELIVER_S, "other delivered by flush")
    wait_for(lambda: state_of(d, other.qid) is None, DELIVER_S, "other removed from the queue")
    assert is_held(state_of(d, held.qid)), "flush must not deliver a held message"
    assert not sink.delivered_to("held@example.test")

    d.cli("queue", "release", held.qid)
    assert not is_held(state_of(d, held.qid)), "still held after release"
    # release may make it due at once: flush then finds it delivered and gone
    r = d.cli("queue", "flush", held.qid, check=False)
    assert r.returncode == 0 or state_of(d, held.qid) is None, \
        f"queue flush {held.qid}: exit {r.returncode}: {r.stderr!r} while it is still queued"
    wait_for(lambda: sink.delivered_to("held@example.test"), DELIVER_S, "held delivered")
    wait_queue_empty(d, DELIVER_S)
    tokens = [token_of(t.data) for t in sink.txns if t.ok]
    assert sorted(tokens) == ["held", "other"], f"got {tokens}; the deleted one must never go"
