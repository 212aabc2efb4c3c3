"""bench_send_to_sink - `ringmta-bench send` into `ringmta-bench sink`.

Covers: every message sent arrives exactly once with a verified body
checksum; send's and sink's message and byte counts agree exactly; the
latency histograms hold exactly one sample per message. Run with
connection reuse, a connection per message, PIPELINING with a size mix
(1 KiB / 100 KiB, bodies that need dot-stuffing), several recipients,
and two reactors on each side.
"""

import pytest

from test_bench_common import BenchSink, run_send

CASES = {
    "reuse": (["--sessions", "20", "--messages", "2000", "--reuse"], []),
    "one_per_connection": (["--sessions", "20", "--messages", "500"], []),
    "pipelining_size_mix": (["--sessions", "10", "--messages", "300", "--reuse", "--pipelining",
                             "--size", "1k:70,100k:30"], []),
    "three_recipients": (["--sessions", "5", "--messages", "300", "--reuse", "--recipients", "3"], []),
    "two_reactors": (["--sessions", "16", "--messages", "1000", "--reuse", "--threads", "2"],
                     ["--threads", "2"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bench_send_to_sink_counts_and_checksums(case):
    send_args, sink_args = CASES[case]
    n = int(send_args[send_args.index("--messages") + 1])
    with BenchSink(*sink_args) as sink:
        out, rc = run_send(sink.port, *send_args)
        got = sink.stop()
    assert rc == 0, f"send exit: got {rc}, want 0 ({out})"
    msgs = out["messages"]
    assert msgs["done"] == n, f"send done: got {msgs['done']}, want {n}"
    assert msgs["ok"] == n, f"send ok: got {msgs['ok']}, want {n}"
    assert out["replies"]["2xx"] == n, f"send 2xx: got {out['replies']['2xx']}, want {n}"
    assert got["messages"] == n, f"sink messages: got {got['messages']}, want {n}"
    ck = got["checksum"]
    assert (ck["ok"], ck["bad"], ck["missing"], ck["duplicates"]) == (n, 0, 0, 0), \
        f"sink checksum ok/bad/missing/dups: got {ck}, want ({n}, 0, 0, 0)"
    assert got["bytes"] == out["bytes"], \
        f"message octets: sink got {got['bytes']}, send says it sent {out['bytes']}"
    lat = out["latency_us"]
    for phase in ("msg", "eod"):
        assert lat[phase]["count"] == n and lat[phase]["hist_sum"] == n, \
            f"latency {phase}: got count {lat[phase]['count']} / hist_sum " \
            f"{lat[phase]['hist_sum']}, want {n}"
        assert lat[phase]["p50"] <= lat[phase]["p99"] <= lat[phase]["max"], \
            f"latency {phase}: percentiles out of order {lat[phase]}"
    conns = out["connections"]
    want_conns = n if "--reuse" not in send_args else int(send_args[send_args.index("--sessions") + 1])
    assert conns == want_conns, f"connections: got {conns}, want {want_conns}"
    want = conns + sink.probe_conns
    assert got["conns"] == want, f"sink conns: got {got['conns']}, want {want}"
    assert lat["connect"]["hist_sum"] == conns and lat["banner"]["hist_sum"] == conns
