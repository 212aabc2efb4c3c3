"""bench_fail_injection - failures injected by the sink are counted by send.

Covers: `sink --fail 4xx:10%,5xx:5%` refuses about that share of messages
at end of data; send's 4xx/5xx/2xx counts equal the sink's injected
rejections and accepted messages exactly, and the per-code counts say
451 and 554. `sink --policy DOMAIN=4xx:50%` refuses RCPTs for one domain;
send counts each refused recipient, and a message whose only recipient
was refused is counted as failed with that code.
"""

from test_bench_common import BenchSink, run_send

N = 2000


def test_bench_fail_4xx_10pct_5xx_5pct_counted_exactly():
    with BenchSink("--fail", "4xx:10%,5xx:5%") as sink:
        out, rc = run_send(sink.port, "--sessions", "20", "--messages", str(N), "--reuse")
        got = sink.stop()
    assert rc == 3, f"send exit with refusals: got {rc}, want 3"
    rep = out["replies"]
    assert rep["4xx"] == got["rejected_4xx"], f"4xx: send got {rep['4xx']}, sink sent {got['rejected_4xx']}"
    assert rep["5xx"] == got["rejected_5xx"], f"5xx: send got {rep['5xx']}, sink sent {got['rejected_5xx']}"
    assert rep["2xx"] == got["messages"], f"2xx: send got {rep['2xx']}, sink accepted {got['messages']}"
    assert rep["2xx"] + rep["4xx"] + rep["5xx"] == N, f"replies: got {rep}, want {N} in all"
    assert 0.06 * N <= rep["4xx"] <= 0.14 * N, f"4xx share: got {rep['4xx']}, want about 10 % of {N}"
    assert 0.02 * N <= rep["5xx"] <= 0.08 * N, f"5xx share: got {rep['5xx']}, want about 5 % of {N}"
    assert rep["codes"].get("451", 0) == rep["4xx"] and rep["codes"].get("554", 0) == rep["5xx"], \
        f"codes: got {rep['codes']}, want 451 x {rep['4xx']} and 554 x {rep['5xx']}"
    assert out["messages"]["ok"] == rep["2xx"] and out["messages"]["failed"] == rep["4xx"] + rep["5xx"]
    assert got["checksum"]["ok"] == N, f"checksums verified: got {got['checksum']['ok']}, want {N}"


def test_bench_policy_rcpt_domain_4xx_50pct():
    n = 500
    with BenchSink("--policy", "slow.test=4xx:50%") as sink:
        out, rc = run_send(sink.port, "--sessions", "5", "--messages", str(n), "--reuse",
                           "--to", "user{n}@slow.test")
        got = sink.stop()
    rep = out["replies"]
    assert rep["rcpt_refused"] == got["rcpt_4xx"], \
        f"refused RCPTs: send got {rep['rcpt_refused']}, sink sent {got['rcpt_4xx']}"
    assert 0.35 * n <= got["rcpt_4xx"] <= 0.65 * n, f"share: got {got['rcpt_4xx']}, want about {n // 2}"
    assert rep["4xx"] == got["rcpt_4xx"] and rep["2xx"] == got["messages"], \
        f"per message: got {rep}, want 4xx={got['rcpt_4xx']} 2xx={got['messages']}"
    assert got["messages"] + got["rcpt_4xx"] == n
