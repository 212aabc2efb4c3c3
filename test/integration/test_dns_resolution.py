"""test_dns_resolution - the dns module against a real DNS server on loopback.

Owns:     two throwaway unbound instances on 127.0.0.1 (one serving the
          test zones, one that refuses everything so the first can answer
          SERVFAIL for fail.example), two more that truncate UDP answers
          over 512 bytes (one with TCP, one without), a scripted server
          that truncates every UDP answer and misbehaves over TCP, a
          silent UDP socket (timeouts), and dns_probe runs: one reactor, one resolver, lookups through the
          io_uring poll/timeout glue, results printed as key=value lines.
Must not: listen anywhere but 127.0.0.1 and ::1, forward to the internet (the
          zones are local-data; the only forward goes to the refuser).
Interface: pytest-3 test/integration/test_dns_resolution.py
          env RINGMTA_DNS_PROBE (default: test/dns_probe next to RINGMTA_BIN).
Limits:   every unbound and probe run has a timeout; unbound readiness 10 s.
Skips:    only when unbound is not installed (Debian package `unbound`).
Standards: RFC 5321 5.1 (MX order, implicit MX), RFC 7505 (null MX),
          RFC 5321 4.1.3 (address literals), RFC 1035 (rcodes), RFC 1035
          4.2.2 and RFC 7766 (TCP after a truncated UDP answer).
"""

import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import RINGMTA_BIN, SANITIZER_MARKS, parse_kv

PROBE = os.environ.get("RINGMTA_DNS_PROBE",
                       str(Path(RINGMTA_BIN).parent / "test" / "dns_probe"))
UNBOUND_READY_S = 10.0
PROBE_TIMEOUT_S = 30.0

# The zones. local-zone static: names without data are NXDOMAIN, names with
# other data are NODATA for the type asked.
ZONE = """
  local-zone: "test." static
  local-data: "multi.test. 300 IN MX 20 mx2.multi.test."
  local-data: "multi.test. 300 IN MX 10 mx1.multi.test."
  local-data: "multi.test. 300 IN MX 30 mx3.multi.test."
  local-data: "mx1.multi.test. 300 IN A 127.0.0.2"
  local-data: "mx1.multi.test. 300 IN AAAA 2001:db8::2"
  local-data: "mx2.multi.test. 300 IN A 127.0.0.3"
  local-data: "equal.test. 300 IN MX 10 a.equal.test."
  local-data: "equal.test. 300 IN MX 10 b.equal.test."
  local-data: "equal.test. 300 IN MX 10 c.equal.test."
  local-data: "equal.test. 300 IN MX 20 z.equal.test."
  local-data: "a.equal.test. 300 IN A 127.0.1.1"
  local-data: "b.equal.test. 300 IN A 127.0.1.2"
  local-data: "c.equal.test. 300 IN A 127.0.1.3"
  local-data: "z.equal.test. 300 IN A 127.0.1.9"
  local-data: "amx.test. 300 IN A 127.0.0.9"
  local-data: "amx.test. 300 IN AAAA 2001:db8::9"
  local-data: "null.test. 300 IN MX 0 ."
  local-data: "nohost.test. 300 IN MX 10 nowhere.nohost.test."
  local-data: "nodata.test. 300 IN TXT \\"no mail here\\""
  local-data: "halffail.test. 300 IN MX 10 mx.fail.example."
  local-data: "halffail.test. 300 IN MX 20 mx2.multi.test."
  local-data: "ttl.test. 2 IN MX 10 mx.ttl.test."
  local-data: "mx.ttl.test. 2 IN A 127.0.0.4"
  local-data: "relay.test. 300 IN A 127.0.0.7"
  local-data: "self.test. 300 IN MX 5 mx1.multi.test."
  local-data: "self.test. 300 IN MX 10 relay.test."
  local-data: "self.test. 300 IN MX 20 mx2.multi.test."
  local-data: "selfbest.test. 300 IN MX 10 relay.test."
  local-data: "selfbest.test. 300 IN MX 20 mx2.multi.test."
  local-zone: "fail.example." transparent
"""

SERVER_CONF = """server:
  interface: {interface}
  port: {port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  do-ip6: {ip6}
  do-not-query-localhost: no
  module-config: "iterator"
  auto-trust-anchor-file: ""
  root-hints: ""
  num-threads: 1
  access-control: {acl} {access}
{zone}
{forward}
remote-control:
  control-enable: no
"""


def unbound_bin():
    """unbound_bin - the unbound daemon, or None (it lives in /usr/sbin)."""
    return shutil.which("unbound") or next(
        (p for p in ("/usr/sbin/unbound", "/sbin/unbound") if os.access(p, os.X_OK)), None)


def free_udp_port(ipv6=False):
    """free_udp_port - a loopback UDP port nobody is bound to right now."""
    with socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("::1" if ipv6 else "127.0.0.1", 0))
        return s.getsockname()[1]


def dns_query(port, name, qtype=15, timeout=1.0, ipv6=False):
    """dns_query - one raw UDP query; the rcode, or None on timeout."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    pkt = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(pkt, ("::1" if ipv6 else "127.0.0.1", port))
        try:
            data = s.recv(4096)
        except (socket.timeout, OSError):
            return None
    return data[3] & 0x0F


class Unbound:
    """Unbound - one throwaway unbound process on 127.0.0.1:port."""

    def __init__(self, workdir, name, access, zone="", forward="", ipv6=False):
        self.ipv6 = ipv6
        self.port = free_udp_port(ipv6)
        self.dir = workdir
        self.conf = workdir / f"{name}.conf"
        self.log = workdir / f"{name}.log"
        self.conf.write_text(SERVER_CONF.format(
            interface="::1" if ipv6 else "127.0.0.1", ip6="yes" if ipv6 else "no",
            acl="::1" if ipv6 else "127.0.0.0/8", port=self.port, dir=workdir,
            access=access, zone=zone, forward=forward))
        self.proc = None

    def start(self):
        logf = open(self.log, "wb")
        self.proc = subprocess.Popen([unbound_bin(), "-d", "-c", str(self.conf)],
                                     stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        logf.close()

    def wait_ready(self, probe_name):
        deadline = time.monotonic() + UNBOUND_READY_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"unbound exited {self.proc.returncode}: {self.log.read_text()}")
            if dns_query(self.port, probe_name, timeout=0.2, ipv6=self.ipv6) is not None:
                return
            time.sleep(0.05)
        pytest.fail(f"unbound on port {self.port} not ready in {UNBOUND_READY_S}s:"
                    f" {self.log.read_text()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_unbounds(tmp_path_factory, tag, make):
    """start_unbounds - the Unbound instances make(workdir) returns, started.
    A port free for UDP may still be taken for TCP (unbound binds both),
    e.g. as the ephemeral port of some client's connection: start again on
    new ports when one cannot bind."""
    for attempt in range(5):
        servers = make(tmp_path_factory.mktemp(tag))
        for u in servers:
            u.start()
        time.sleep(0.2)
        busy = [u for u in servers if u.proc.poll() is not None
                and "Address already in use" in u.log.read_text()]
        if not busy or attempt == 4:
            return servers
        for u in servers:
            u.stop()


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory):
    """dns_server - the zone server's port; a refuser behind fail.example."""
    if unbound_bin() is None:
        pytest.skip("unbound is not installed (apt-get install unbound)")
    if not os.access(PROBE, os.X_OK):
        pytest.fail(f"dns_probe not found at {PROBE}: build it (ninja) or set RINGMTA_DNS_PROBE")
    def make(workdir):
        refuser = Unbound(workdir, "refuser", "refuse")
        forward = (f'forward-zone:\n  name: "fail.example."\n'
                   f'  forward-addr: 127.0.0.1@{refuser.port}\n')
        return refuser, Unbound(workdir, "zones", "allow", zone=ZONE, forward=forward)
    refuser, server = start_unbounds(tmp_path_factory, "unbound", make)
    try:
        refuser.wait_ready("anything.example")
        server.wait_ready("multi.test")
        yield server.port
    finally:
        server.stop()
        refuser.stop()


def probe(port, *steps, opts=(), check=True):
    """probe - run dns_probe against 127.0.0.1:port; its answer lines."""
    argv = [PROBE, "-s", f"127.0.0.1:{port}", "-t", "1", "-n", "2", *opts, *steps]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    if p.returncode == 77:
        pytest.skip(f"dns_probe: io_uring unavailable: {p.stderr.strip()}")
    for mark in SANITIZER_MARKS:
        assert mark not in p.stderr, f"dns_probe {steps}: sanitizer report: {p.stderr}"
    if check:
        assert p.returncode == 0, f"dns_probe {steps}: got exit {p.returncode}, want 0;" \
                                  f" stderr: {p.stderr}"
    return [line for line in p.stdout.splitlines() if line]


def result(line):
    """result - one answer line as a dict, hosts as [(pref, name, status, [addrs])]."""
    kv = parse_kv(line)
    hosts = []
    if kv.get("hosts"):
        for h in kv["hosts"].split(","):
            pref, name, status, addrs = h.split("/")
            hosts.append((int(pref), name, status, [] if addrs == "-" else addrs.split("|")))
    kv["hosts"] = hosts
    return kv


def one(port, step, opts=()):
    lines = probe(port, step, opts=opts)
    assert len(lines) == 1, f"{step}: got {lines}, want one answer line"
    return result(lines[0])


def test_mx_preference_order(dns_server):
    r = one(dns_server, "mx:multi.test")
    assert r["status"] == "ok", f"got {r}, want status ok"
    assert r["implicit"] == "0"
    assert [(h[0], h[1]) for h in r["hosts"]] == \
        [(10, "mx1.multi.test"), (20, "mx2.multi.test"), (30, "mx3.multi.test")], \
        f"got {r['hosts']}, want ascending preference"
    assert r["hosts"][0][3] == ["127.0.0.2", "2001:db8::2"], \
        f"got {r['hosts'][0]}, want mx1's A and AAAA"
    assert r["hosts"][1][2:] == ("ok", ["127.0.0.3"]), f"got {r['hosts'][1]}"
    assert r["hosts"][2][2] == "nohost", f"got {r['hosts'][2]}, want mx3 without address"
    assert r["queries"] == "7", f"got {r['queries']} queries, want 1 MX + 3 x (A, AAAA)"
    assert int(r["ttl"]) == 300


def test_mx_equal_preferences_shuffled(dns_server):
    # 1 network lookup then 199 cache hits: each lookup draws a new order.
    lines = probe(dns_server, *(["mx:equal.test"] * 200), opts=("-S", "7"))
    orders = Counter()
    for line in lines:
        r = result(line)
        assert r["status"] == "ok"
        names = [h[1][0] for h in r["hosts"]]
        assert [h[0] for h in r["hosts"]] == [10, 10, 10, 20], f"got {r['hosts']}"
        assert names[3] == "z", f"got {names}, want z.equal.test (preference 20) last"
        orders["".join(names[:3])] += 1
    assert set(orders) == {"abc", "acb", "bac", "bca", "cab", "cba"}, \
        f"got orders {dict(orders)}, want all 6 of a, b, c"
    assert min(orders.values()) > 10, f"got {dict(orders)}, want each order ~33 of 200"


def test_no_mx_falls_back_to_address(dns_server):
    r = one(dns_server, "mx:amx.test")
    assert r["status"] == "ok" and r["implicit"] == "1", f"got {r}"
    assert r["hosts"] == [(0, "amx.test", "ok", ["127.0.0.9", "2001:db8::9"])], f"got {r['hosts']}"


def test_no_mx_no_address_is_permanent(dns_server):
    r = one(dns_server, "mx:nodata.test")
    assert r["status"] == "nohost" and r["implicit"] == "1", f"got {r}"


def test_mx_host_without_address_is_permanent(dns_server):
    r = one(dns_server, "mx:nohost.test")
    assert r["status"] == "nohost", f"got {r}"
    assert r["hosts"] == [(10, "nowhere.nohost.test", "nohost", [])]


def test_null_mx_rfc7505(dns_server):
    r = one(dns_server, "mx:null.test")
    assert r["status"] == "null-mx", f"got {r}, want null-mx (bounce 5.1.10)"
    assert r["hosts"] == [] and r["queries"] == "1", f"got {r}, want no address query"


def test_nxdomain_is_permanent(dns_server):
    r = one(dns_server, "mx:nope.test")
    assert r["status"] == "nxdomain", f"got {r}"
    assert r["queries"] == "1"


def test_servfail_is_temporary(dns_server):
    assert dns_query(dns_server, "x.fail.example") == 2, "the zone server should SERVFAIL"
    r = one(dns_server, "mx:x.fail.example")
    assert r["status"] == "tempfail", f"got {r}"
    assert r["ttl"] == "0"


def test_servfail_not_cached(dns_server):
    lines = [result(x) for x in probe(dns_server, "mx:x.fail.example", "mx:x.fail.example")]
    assert [x["status"] for x in lines] == ["tempfail", "tempfail"]
    assert lines[1]["cached"] == "0" and int(lines[1]["queries"]) >= 1, \
        f"got {lines[1]}, want a temporary failure asked again, not cached"


def test_one_mx_host_failing_keeps_the_others(dns_server):
    r = one(dns_server, "mx:halffail.test", opts=("-N", "7"))
    assert r["status"] == "ok", f"got {r}"
    assert [(h[0], h[1], h[2]) for h in r["hosts"]] == \
        [(10, "mx.fail.example", "tempfail"), (20, "mx2.multi.test", "ok")], f"got {r['hosts']}"
    assert int(r["ttl"]) <= 7, f"got ttl {r['ttl']}, want a partial answer kept <= negative TTL"


def test_timeout_is_temporary(dns_server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        lines = probe(port, "mx:multi.test", opts=("-T", "20"))
        took = time.monotonic() - t0
    r = result(lines[0])
    assert r["status"] == "tempfail", f"got {r}"
    assert took < 15, f"took {took:.1f}s, want udns's timeout (1 s, 2 tries) to end it"


def test_ttl_cache(dns_server):
    lines = [result(x) for x in probe(dns_server, "mx:ttl.test", "mx:TTL.test.", "host:mx.ttl.test",
                                      "sleep:2600", "mx:ttl.test", "stats")[:4]]
    first, second, host, third = lines
    assert first["status"] == "ok" and first["cached"] == "0" and first["queries"] == "3"
    assert second["cached"] == "1" and second["queries"] == "0", \
        f"got {second}, want the second lookup from the cache, no query"
    assert int(second["ttl"]) <= 2
    assert host["cached"] == "0", "a host lookup has its own cache key"
    assert third["cached"] == "0" and third["queries"] == "3", \
        f"got {third}, want the TTL (2 s) expired and the network asked again"


def test_negative_answers_cached(dns_server):
    lines = [result(x) for x in probe(dns_server, "mx:nope.test", "mx:nope.test",
                                      "mx:null.test", "mx:null.test")]
    assert [(x["status"], x["cached"], x["queries"]) for x in lines] == [
        ("nxdomain", "0", "1"), ("nxdomain", "1", "0"),
        ("null-mx", "0", "1"), ("null-mx", "1", "0")], f"got {lines}"


def test_host_lookup_for_relayhost(dns_server):
    lines = [result(x) for x in probe(dns_server, "host:[relay.test]", "host:nope.test",
                                      "host:192.0.2.5", "mx:[IPv6:::1]")]
    relay, nope, lit4, lit6 = lines
    assert relay["status"] == "ok" and relay["queries"] == "2", \
        f"got {relay}, want A+AAAA and no MX query for [relay.test]"
    assert relay["hosts"] == [(0, "relay.test", "ok", ["127.0.0.7"])]
    assert nope["status"] == "nohost", f"got {nope}"
    assert (lit4["literal"], lit4["queries"], lit4["hosts"]) == \
        ("1", "0", [(0, "192.0.2.5", "ok", ["192.0.2.5"])]), f"got {lit4}"
    assert (lit6["literal"], lit6["queries"], lit6["hosts"][0][3]) == ("1", "0", ["::1"]), f"got {lit6}"


def test_parallel_lookups_on_one_ring(dns_server):
    step = "+".join(["mx:multi.test", "mx:null.test", "mx:nope.test", "mx:x.fail.example",
                     "mx:amx.test", "host:relay.test", "mx:equal.test", "mx:[127.0.0.1]"])
    got = {(r["__kind"], r["__name"]): r["status"] for r in
           ({**result(x), "__kind": x.split()[0], "__name": x.split()[1]}
            for x in probe(dns_server, step))}
    assert got == {("mx", "multi.test"): "ok", ("mx", "null.test"): "null-mx",
                   ("mx", "nope.test"): "nxdomain", ("mx", "x.fail.example"): "tempfail",
                   ("mx", "amx.test"): "ok", ("host", "relay.test"): "ok",
                   ("mx", "equal.test"): "ok", ("mx", "[127.0.0.1]"): "ok"}, f"got {got}"


def test_lookup_limit_and_bad_names(dns_server):
    lines = probe(dns_server, "mx:multi.test+mx:amx.test+mx:equal.test", "mx:bad name.test",
                  "mx:a..b", opts=("-L", "2"))
    assert sum("status=ok" in x for x in lines) == 2, f"got {lines}, want 2 answers"
    assert "mx equal.test error=Resource temporarily unavailable" in lines, \
        f"got {lines}, want the third lookup refused (-EAGAIN) at max_lookups 2"
    assert "mx bad name.test error=Invalid argument" in lines
    assert "mx a..b error=Invalid argument" in lines


def test_unreadable_resolv_conf(tmp_path):
    if not os.access(PROBE, os.X_OK):
        pytest.fail(f"dns_probe not found at {PROBE}")
    p = subprocess.run([PROBE, "-r", str(tmp_path / "missing.conf"), "mx:a.test"],
                       capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    assert p.returncode == 1, f"got exit {p.returncode}, want 1"
    assert "dns: open" in p.stderr and "No such file" in p.stderr, f"got {p.stderr!r}"


def test_stop_with_lookups_in_flight(dns_server):
    # The probe's time limit stops the reactor while udns still waits on a
    # silent server: the resolver drops its lookups (no callback), cancels
    # its poll and timer, and the loop ends once they are back.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        probe_stopped(port, "3", "mx:multi.test+mx:amx.test+host:relay.test")


def probe_stopped(port, tries, step):
    """probe_stopped - run step against port until the probe's 1 s limit
    stops the reactor with it in flight: a clean stop, no callback."""
    p = subprocess.run([PROBE, "-s", f"127.0.0.1:{port}", "-t", "5", "-n", tries, "-T", "1", step],
                       capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    for mark in SANITIZER_MARKS:
        assert mark not in p.stderr, f"sanitizer report: {p.stderr}"
    assert p.returncode == 2 and "limit reached" in p.stderr, \
        f"got exit {p.returncode} {p.stderr!r}, want 2 (time limit)"
    assert p.stdout == "", f"got {p.stdout!r}, want no callback after the stop"


def test_same_domain_lookups_share_queries(dns_server):
    lines = probe(dns_server, "mx:multi.test+mx:MULTI.test+mx:multi.test.", "stats")
    answers = [result(x) for x in lines[:3]]
    assert [x["status"] for x in answers] == ["ok"] * 3, f"got {lines}"
    assert {x["queries"] for x in answers} == {"7"}, \
        f"got {lines}, want the three lookups to share one set of 7 queries"
    stats = parse_kv(lines[3])
    assert stats["joined"] == "2" and stats["queries"] == "7", f"got {lines[3]}"


def test_cancel(dns_server):
    lines = probe(dns_server,
                  "mx:amx.test+mx:amx.test+cancel:0",          # leader cancelled: follower answered
                  "mx:null.test+mx:null.test+cancel:1",        # follower cancelled
                  "mx:nope.test+cancel:0",                     # queries dropped
                  "mx:[127.0.0.1]+cancel:0",                   # answer already queued
                  "host:relay.test+host:relay.test+host:relay.test+cancel:0+cancel:2",
                  "stats")
    assert lines[:-1] == [
        "cancel mx amx.test", lines[1],
        "cancel mx null.test", lines[3],
        "cancel mx nope.test",
        "cancel mx [127.0.0.1]",
        "cancel host relay.test", "cancel host relay.test", lines[8]], f"got {lines}"
    assert lines[1].startswith("mx amx.test status=ok implicit=1"), f"got {lines[1]}"
    assert lines[3].startswith("mx null.test status=null-mx"), f"got {lines[3]}"
    assert lines[8].startswith("host relay.test status=ok"), f"got {lines[8]}"
    stats = parse_kv(lines[-1])
    assert stats["lookups"] == "9" and stats["joined"] == "4", f"got {lines[-1]}"


def test_mx_to_self_rfc5321_5_1(dns_server):
    lines = [result(x) for x in probe(dns_server, "mx:self.test", "mx:selfbest.test",
                                      opts=("-m", "RELAY.test"))]
    assert [(h[0], h[1]) for h in lines[0]["hosts"]] == [(5, "mx1.multi.test")], \
        f"got {lines[0]}, want us (relay.test, 10) and everything after dropped"
    assert lines[1]["status"] == "loop" and lines[1]["hosts"] == [], \
        f"got {lines[1]}, want loop (we are the best MX: bounce 5.4.6)"


def ipv6_loopback():
    """ipv6_loopback - whether ::1 can be bound here."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ipv6_server(dns_server, tmp_path):
    # dns_server only for its skip and probe checks: this test runs its own
    # unbound on ::1, as dns_servers = [::1]:port would in the daemon.
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback (::1) in this environment")
    server = Unbound(tmp_path, "zones6", "allow", zone=ZONE, ipv6=True)
    try:
        server.start()
        server.wait_ready("multi.test")
        argv = [PROBE, "-s", f"[::1]:{server.port}", "-t", "1", "-n", "2", "mx:multi.test"]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    finally:
        server.stop()
    assert p.returncode == 0, f"got exit {p.returncode}: {p.stderr}"
    r = result(p.stdout.splitlines()[0])
    assert r["status"] == "ok" and r["hosts"][0][1] == "mx1.multi.test", f"got {r}"


# --- TCP after a truncated UDP answer -----------------------------------------------

# Answers too big for 512 bytes of UDP: 40 addresses of one MX host, 30 MX
# records with long names. max-udp-size makes unbound set TC on them.
BIG_ZONE = "\n".join(
    ['  local-zone: "test." static',
     '  local-data: "big.test. 300 IN MX 10 mxbig.big.test."']
    + [f'  local-data: "mxbig.big.test. 300 IN A 127.0.3.{i}"' for i in range(1, 41)]
    + [f'  local-data: "bigmx.test. 300 IN MX {i} mx{i:02d}.a-rather-long-label-to-fill-the-packet'
       f'.bigmx.test."' for i in range(1, 31)]
    + [f'  local-data: "mx{i:02d}.a-rather-long-label-to-fill-the-packet.bigmx.test. 300 IN A'
       f' 127.0.4.{i}"' for i in range(1, 4)]
    + ['  local-data: "small.test. 300 IN MX 10 mx1.small.test."',
       '  local-data: "mx1.small.test. 300 IN A 127.0.4.99"'])


@pytest.fixture(scope="module")
def trunc_servers(tmp_path_factory):
    """trunc_servers - (port with TCP, port without TCP): unbound serving
    BIG_ZONE with UDP answers cut at 512 bytes."""
    if unbound_bin() is None:
        pytest.skip("unbound is not installed (apt-get install unbound)")
    with_tcp, no_tcp = start_unbounds(tmp_path_factory, "unbound-trunc", lambda workdir: (
        Unbound(workdir, "trunc", "allow", zone="  max-udp-size: 512\n" + BIG_ZONE),
        Unbound(workdir, "trunc-notcp", "allow",
                zone="  max-udp-size: 512\n  do-tcp: no\n" + BIG_ZONE)))
    try:
        with_tcp.wait_ready("small.test")
        no_tcp.wait_ready("small.test")
        yield with_tcp.port, no_tcp.port
    finally:
        with_tcp.stop()
        no_tcp.stop()


def stats_of(lines):
    """stats_of - the probe's 'stats' line as a dict."""
    return parse_kv(next(x for x in lines if x.startswith("stats ")))


def test_truncated_answers_retried_over_tcp(trunc_servers):
    with_tcp, _ = trunc_servers
    lines = probe(with_tcp, "mx:big.test", "mx:bigmx.test", "mx:small.test", "stats")
    big, bigmx, small = (result(x) for x in lines[:3])
    # the MX answer fits; the 40 A records of its host do not
    assert big["status"] == "ok", f"got {big}, want the A answer fetched over TCP"
    assert len(big["hosts"]) == 1 and big["hosts"][0][2] == "ok", f"got {big['hosts']}"
    addrs = big["hosts"][0][3]
    assert len(addrs) == 4 and all(a.startswith("127.0.3.") for a in addrs), \
        f"got {addrs}, want 4 (DNS_MAX_HOST_ADDRS) of mxbig's 127.0.3.x"
    # the MX answer itself does not fit: the 10 best of 30, in order
    assert bigmx["status"] == "ok", f"got {bigmx}, want the MX answer fetched over TCP"
    assert [h[0] for h in bigmx["hosts"]] == list(range(1, 11)), f"got {bigmx['hosts']}"
    assert [h[3] for h in bigmx["hosts"][:3]] == [["127.0.4.1"], ["127.0.4.2"], ["127.0.4.3"]]
    assert all(h[2] == "nohost" for h in bigmx["hosts"][3:]), f"got {bigmx['hosts']}"
    assert small["status"] == "ok" and small["hosts"][0][3] == ["127.0.4.99"], f"got {small}"
    st = stats_of(lines)
    assert st["tcp"] == "2", f"got {st}, want exactly the two truncated answers over TCP"
    assert st["tempfail"] == "0", f"got {st}"


def test_truncated_answer_without_tcp_is_temporary(trunc_servers):
    _, no_tcp = trunc_servers
    t0 = time.monotonic()
    lines = probe(no_tcp, "mx:bigmx.test", "mx:small.test", "stats")
    took = time.monotonic() - t0
    bigmx, small = result(lines[0]), result(lines[1])
    assert bigmx["status"] == "tempfail", f"got {bigmx}, want tempfail (TCP refused)"
    assert bigmx["ttl"] == "0", "a temporary failure is not cached"
    assert small["status"] == "ok", f"got {small}: the server works for answers that fit"
    assert stats_of(lines)["tcp"] == "1"
    assert took < 10, f"took {took:.1f}s, want the refused connect to end it at once"


class TruncServer:
    """TruncServer - 127.0.0.1:port answers every UDP query with TC set and
    no records; over TCP it does what mode says: "ok" (one A record
    127.0.5.1, AAAA NODATA, 1 byte per send), "drip" (the same, a byte
    every 0.3 s), "silent", "close",
    "wrongid", "short" (a length longer than what follows, then close),
    "tc" (TC set again), "nxdomain", "servfail". Modes "udp-plain" and
    "udp-compressed" answer over UDP instead, no TC: one record of the
    type asked (A 127.0.5.2, AAAA ::1, MX 10 "mail"), the question as
    asked or compressed (udns's heap overflow, see answer_udp)."""

    def __init__(self, mode):
        self.mode = mode
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        for _ in range(20):
            self.udp.bind(("127.0.0.1", 0))
            self.port = self.udp.getsockname()[1]
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tcp.listen(16)
        self.tcp.settimeout(0.2)
        self.udp.settimeout(0.2)
        self.n_tcp = 0
        self.held = []
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self._udp_loop, self._tcp_loop)]
        for t in self.threads:
            t.start()

    @staticmethod
    def question_end(q):
        i = 12
        while q[i] != 0:
            i += 1 + q[i]
        return i + 5

    def answer(self, q, tc=False, rcode=0, qid=None):
        end = self.question_end(q)
        qtype = struct.unpack(">H", q[end - 4:end - 2])[0]
        rr = b""
        if not tc and rcode == 0 and qtype == 1:
            rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 300, 4) + bytes([127, 0, 5, 1])
        flags = 0x8180 | (0x0200 if tc else 0) | rcode
        hdr = struct.pack(">HHHHHH", q[0] << 8 | q[1] if qid is None else qid, flags, 1,
                          1 if rr else 0, 0, 0)
        return hdr + q[12:end] + rr

    def answer_udp(self, q, compress):
        """answer_udp - one record for q's question. compress: the
        question's name is its first label then a pointer to the rest of
        it in the answer's owner name, and the message is padded so that
        reading that question as a plain name (what udns's parsers do)
        gives text over 1024 bytes: udns 0.4 sizes its result for an
        empty name then, and writes the whole text past it."""
        end = self.question_end(q)
        name, qtc = q[12:end - 4], q[end - 4:end]
        qtype = struct.unpack(">H", qtc[:2])[0]
        rdata = {1: bytes([127, 0, 5, 2]), 28: bytes(15) + b"\x01",
                 15: b"\x00\x0a\x04mail\x00"}.get(qtype, b"")
        first = name[:1 + name[0]]
        qname = first + bytes([0xc0, 12 + len(first) + 2 + 4 + len(first)]) if compress else name
        rr = name + qtc + struct.pack(">IH", 300, len(rdata)) + rdata
        msg = struct.pack(">HHHHHH", q[0] << 8 | q[1], 0x8180, 1, 1, 0, 0) + qname + qtc + rr
        if compress:
            label_end = 12 + len(first) + 1 + 0xc0
            msg += b"\x01" * (label_end - len(msg)) + b"\xff" + b"\x01" * 255 + b"\x00"
        return msg

    def _udp_loop(self):
        while not self.stop_ev.is_set():
            try:
                q, peer = self.udp.recvfrom(4096)
            except socket.timeout:
                continue
            if self.mode.startswith("udp-"):
                self.udp.sendto(self.answer_udp(q, self.mode == "udp-compressed"), peer)
            else:
                self.udp.sendto(self.answer(q, tc=True), peer)

    def _tcp_loop(self):
        while not self.stop_ev.is_set():
            try:
                c, _ = self.tcp.accept()
            except socket.timeout:
                continue
            self.n_tcp += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(5)
        try:
            n = struct.unpack(">H", c.recv(2, socket.MSG_WAITALL))[0]
            q = c.recv(n, socket.MSG_WAITALL)
            m = self.mode
            if m == "silent":
                self.held.append(c)
                return
            if m == "close":
                c.close()
                return
            a = self.answer(q, tc=m == "tc", rcode={"nxdomain": 3, "servfail": 2}.get(m, 0),
                            qid=((q[0] << 8 | q[1]) ^ 0x5555) if m == "wrongid" else None)
            msg = struct.pack(">H", len(a) + (10 if m == "short" else 0)) + a
            if m in ("ok", "drip"):
                for b in msg:
                    c.sendall(bytes([b]))
                    time.sleep(0.3 if m == "drip" else 0.001)
            else:
                c.sendall(msg)
            time.sleep(0.2)
            c.close()
        except OSError:
            c.close()

    def close(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=2)
        for c in self.held:
            c.close()
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def trunc_server():
    servers = []

    def make(mode):
        s = TruncServer(mode)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.close()


def test_tcp_answer_read_in_pieces(trunc_server, dns_server):
    srv = trunc_server("ok")
    lines = probe(srv.port, "host:one.fake", "stats")
    r = result(lines[0])
    assert r["status"] == "ok", f"got {r}"
    assert r["hosts"][0][3] == ["127.0.5.1"], f"got {r['hosts']}, want the TCP answer's A"
    assert stats_of(lines)["tcp"] == "2" and srv.n_tcp == 2, \
        f"got {stats_of(lines)}, {srv.n_tcp} connections: want A and AAAA over TCP"


@pytest.mark.parametrize("mode", ["close", "wrongid", "short", "tc", "servfail"])
def test_tcp_bad_answer_is_temporary(trunc_server, dns_server, mode):
    srv = trunc_server(mode)
    lines = probe(srv.port, "host:one.fake", "stats")
    r = result(lines[0])
    assert r["status"] == "tempfail", f"{mode}: got {r}, want tempfail"
    assert stats_of(lines)["tcp"] == "2"


def test_tcp_nxdomain_is_permanent(trunc_server, dns_server):
    srv = trunc_server("nxdomain")
    r = result(probe(srv.port, "mx:gone.fake")[0])
    assert r["status"] == "nxdomain", f"got {r}, want the TCP answer's NXDOMAIN"


@pytest.mark.parametrize("mode", ["silent", "drip"])
def test_tcp_exchange_deadline(trunc_server, dns_server, mode):
    # silent: nothing comes; drip: a byte every 0.3 s, each well within a
    # 1 s timeout, the whole answer in ~20 s: the exchange gets 2 s in all
    srv = trunc_server(mode)
    t0 = time.monotonic()
    lines = probe(srv.port, "host:one.fake", opts=("-T", "25"))
    took = time.monotonic() - t0
    r = result(lines[0])
    assert r["status"] == "tempfail", f"{mode}: got {r}, want tempfail at the deadline"
    assert took < 8, f"{mode}: took {took:.1f}s, want the 2 s exchange deadline to end it"


def test_stop_with_tcp_in_flight(trunc_server, dns_server):
    # as test_stop_with_lookups_in_flight, with the queries waiting on TCP
    srv = trunc_server("silent")
    probe_stopped(srv.port, "1", "host:one.fake+mx:two.fake")
    assert srv.n_tcp >= 2, f"got {srv.n_tcp} connections, want the queries in flight over TCP"


@pytest.mark.parametrize("step", ["host:one.fake", "mx:one.fake"])
def test_udp_compressed_question_is_refused(trunc_server, dns_server, step):
    # udns matches a compressed question, then parses it as a plain name
    # and overflows its result; the resolver takes such a reply for a
    # failed server. The same records with the question as asked pass.
    plain = result(probe(trunc_server("udp-plain").port, step)[0])
    assert plain["status"] == "ok", f"plain question: got {plain}, want ok"
    srv = trunc_server("udp-compressed")
    lines = probe(srv.port, step, "stats")
    r = result(lines[0])
    assert r["status"] == "tempfail", f"compressed question: got {r}, want tempfail"
    assert int(stats_of(lines)["bad_question"]) >= 1, f"got {stats_of(lines)}"
