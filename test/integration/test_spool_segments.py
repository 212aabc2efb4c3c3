"""test_spool_segments - a deferred message does not keep the spool's old segments.

Owns:     one delivering ringmta per test (one reactor, spool_segment_size = 1M,
          spool_sweep_interval = 1s, retry_schedule = 10m), Postfix's
          smtp-sink as the relayhost for the bulk, and a transport_map
          route to a closed loopback port for the one message that stays
          deferred.
Must not: connect anywhere but 127.0.0.1.
Interface: pytest-3 test/integration/test_spool_segments.py
Limits:   every wait polls with a timeout (WAIT_S).
Skips:    without the delivery engine, map files, or Postfix's smtp-sink.
"""

from pathlib import Path

from conftest import free_port
from peers import (deliver_message, send_mail, statuses, wait_deliver, wait_for, write_map)

WAIT_S = 40
BULK = 100                      # messages of ~62 KiB: about 6 MiB, 6 segments


def segments(d):
    return sorted(p.name for p in Path(d.spool_dir, "seg").glob("*.seg"))


def test_deferred_message_moved_forward_old_segments_removed(relay_daemon, smtp_sink_factory,
                                                              maps_feature):
    sink = smtp_sink_factory()
    tmap = write_map([f"defer.test smtp:[127.0.0.1]:{free_port()}"])
    d = relay_daemon(relayhost=f"[127.0.0.1]:{sink.port}", transport_map=tmap,
                     retry_schedule="10m", spool_segment_size="1M", spool_sweep_interval="1s",
                     reactors="1")     # one shard: all the bulk behind the deferred one
    kept = send_mail(d, ["u@defer.test"], token="kept")
    wait_deliver(d, lambda r: "deferred" in statuses(r, "u@defer.test"), WAIT_S,
                 "the deferral (connection refused)")
    # the log line comes first, the spool update with the group commit
    wait_for(lambda: [(m["id"], m.get("state")) for m in d.queue_list()] ==
             [(kept.qid, "deferred")], WAIT_S, "the deferred state in the queue")
    before = d.queue_list()
    lines = [("x" * 76) for _ in range(800)]
    for i in range(BULK):
        send_mail(d, ["r@bulk.test"], token=f"bulk{i}",
                  msg=deliver_message(f"bulk{i}", to="r@bulk.test", body_lines=lines))
    wait_for(lambda: sink.count() >= BULK, WAIT_S, f"{BULK} messages at smtp-sink")
    # the deferred message, in the first segment, pinned every later one;
    # now it is copied forward and they go
    wait_for(lambda: "moved_total=1" in d.log_text(), WAIT_S, "the sweep's move")
    wait_for(lambda: len(segments(d)) <= 3, WAIT_S, "the old segments to be removed")
    after = d.queue_list()
    assert [m["id"] for m in after] == [kept.qid], f"got {after}"
    assert after[0]["next"] == before[0]["next"], \
        f"next attempt: got {after[0]['next']}, want {before[0]['next']} (states kept)"
    assert b"X-Test-Token: kept" in d.queue_cat(kept.qid)
    # a crash: the rebuilt index finds the copy, states included
    d.kill()
    d.restart()
    rebuilt = d.queue_list()
    assert [m["id"] for m in rebuilt] == [kept.qid], f"got {rebuilt}"
    assert rebuilt[0]["next"] == before[0]["next"], f"got {rebuilt[0]['_line']}"
    assert b"X-Test-Token: kept" in d.queue_cat(kept.qid)
