"""bench_open_loop_schedule - `send --rate` keeps its schedule.

Covers: open loop at 200 messages/s for 3 s sends 600 +- 5 % messages in
about 3 s, with reused connections and with a connection per message, and
every message is timed (one latency sample each, from its slot in the
schedule). A sink that answers slowly (--delay) must not slow the offered
rate while sessions are free: the schedule, not the replies, paces it.
"""

import pytest

from test_bench_common import BenchSink, run_send

RATE = 200
SECONDS = 3
WANT = RATE * SECONDS


@pytest.mark.parametrize("mode,sink_args", [
    ("--reuse", []),
    ("--reuse", ["--delay", "20"]),
    ("", []),
], ids=["reuse", "reuse_slow_sink", "one_per_connection"])
def test_bench_open_loop_rate_200_for_3s(mode, sink_args):
    args = ["--rate", str(RATE), "--duration", str(SECONDS), "--sessions", "20"]
    if mode:
        args.append(mode)
    with BenchSink(*sink_args) as sink:
        out, rc = run_send(sink.port, *args)
        got = sink.stop()
    done = out["messages"]["done"]
    assert rc == 0, f"send exit: got {rc}, want 0 ({out})"
    assert abs(done - WANT) <= WANT * 0.05, f"messages: got {done}, want {WANT} +- 5 %"
    assert got["messages"] == done, f"sink messages: got {got['messages']}, want {done}"
    assert SECONDS * 0.95 <= out["elapsed_s"] <= SECONDS + 2, \
        f"elapsed: got {out['elapsed_s']:.2f} s, want about {SECONDS} s"
    assert abs(out["msgs_per_s"] - RATE) <= RATE * 0.1, \
        f"rate: got {out['msgs_per_s']:.1f}/s, want {RATE} +- 10 %"
    msg = out["latency_us"]["msg"]
    assert msg["hist_sum"] == done, f"latency samples: got {msg['hist_sum']}, want {done}"
    # "late" (started > 1 ms after the slot) is reported, not asserted: on a
    # loaded 2-core CI machine timer wake-ups alone are often that late.
