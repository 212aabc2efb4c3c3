"""test_deliver_mx_routing - no route: MX lookup through a local unbound, sinks on 127.0.0.x.

Owns:     one unbound per module (DnsZones: DELIVER_ZONE in peers.py), one
          delivering ringmta per test with dns_servers = that unbound and
          smtp_tcp_port = one high port shared by every sink, and script
          sinks on 127.0.0.2 (mx1.multi.test), 127.0.0.3 (mx2.multi.test),
          127.0.0.5 (up.fallback.test) and 127.0.0.6 (mx.sender.test, where
          bounces to s@sender.test go). 127.0.0.4 (down.fallback.test) has
          no listener: connection refused.
Must not: let ringmta ask any DNS server but the test's unbound (whose only
          forward is its own refuser), or connect outside 127.0.0.0/8.
Interface: pytest-3 test/integration/test_deliver_mx_routing.py
Limits:   every wait polls with a timeout (DELIVER_S).
Skips:    without the delivery engine (issue 4) or unbound.
Standards: RFC 5321 5.1 (MX preference, next MX when one fails), RFC 7505
          (null MX: bounce 5.1.10), RFC 1035 (NXDOMAIN is permanent,
          SERVFAIL temporary), RFC 3464 (the bounces), RFC 7766 (TCP when
          the UDP answer is truncated).
"""

import pytest

from peers import (deliver_log, dns_udp_reply, free_port_on, parse_dsn, send_mail, statuses,
                   wait_deliver, wait_for, wait_queue_empty)

DELIVER_S = 30
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")


@pytest.fixture
def mx_world(relay_daemon, dns_zones, script_sink_factory):
    """mx_world - (daemon factory, sinks by address): every sink on one port."""
    port = free_port_on(*HOSTS)
    sinks = {h: script_sink_factory(host=h, port=port, name=f"sink-{h}.test")
             for h in ("127.0.0.2", "127.0.0.3", "127.0.0.5", "127.0.0.6")}

    def make(**opts):
        return relay_daemon(dns_servers=dns_zones.dns_servers, smtp_tcp_port=port, **opts)
    return make, sinks, port


def only_sink(sinks, want, rcpt):
    """only_sink - rcpt was delivered once, at sinks[want] and nowhere else."""
    got = {h: len(s.delivered_to(rcpt)) for h, s in sinks.items()}
    assert got == {h: (1 if h == want else 0) for h in sinks}, \
        f"{rcpt}: got deliveries per sink {got}, want one at {want}"


def bounce_at(sinks, timeout=DELIVER_S):
    """bounce_at - the one DSN that reached the sender's MX (127.0.0.6), parsed."""
    s = sinks["127.0.0.6"]
    s.wait_count(1, timeout=timeout)
    t = s.delivered_to("s@sender.test")[0]
    assert t.mail_from == "", f"bounce MAIL FROM: got {t.mail_from!r}, want <>"
    return parse_dsn(t.data)


def test_mx_preference_order(mx_world):
    make, sinks, port = mx_world
    d = make()
    send_mail(d, ["u@multi.test"], token="pref")
    wait_for(lambda: sinks["127.0.0.2"].count() >= 1, DELIVER_S, "delivery to mx1 (pref 10)")
    wait_queue_empty(d, DELIVER_S)
    only_sink(sinks, "127.0.0.2", "u@multi.test")
    rec = [r for r in wait_deliver(d, lambda r: "sent" in statuses(r, "u@multi.test"),
                                   DELIVER_S, "status=sent") if r.get("status") == "sent"][0]
    assert rec["relay"] == f"mx1.multi.test[127.0.0.2]:{port}", f"got relay={rec['relay']}"


def test_mx_second_when_first_refuses(mx_world):
    make, sinks, port = mx_world
    d = make()
    send_mail(d, ["u@fallback.test"], token="fallback")
    wait_for(lambda: sinks["127.0.0.5"].count() >= 1, DELIVER_S, "delivery to up.fallback.test")
    wait_queue_empty(d, DELIVER_S)
    only_sink(sinks, "127.0.0.5", "u@fallback.test")
    recs = [r for r in wait_deliver(d, lambda r: "sent" in statuses(r, "u@fallback.test"),
                                    DELIVER_S, "status=sent")
            if r.get("to") == "u@fallback.test"]
    assert recs[-1]["relay"] == f"up.fallback.test[127.0.0.5]:{port}", f"got {recs}"
    assert "bounced" not in statuses(recs, "u@fallback.test")


def test_mx_first_host_421_second_host_takes_it(mx_world):
    # a 421 greeting is a session-level temporary failure: try the next MX
    # (RFC 5321 5.1; Postfix does the same), not wait for a retry
    make, sinks, port = mx_world
    sinks["127.0.0.2"].greeting = "421 4.3.2 mx1 busy"
    d = make()
    send_mail(d, ["busy@multi.test"], token="mx1busy")
    wait_for(lambda: sinks["127.0.0.3"].count() >= 1, DELIVER_S, "delivery to mx2")
    wait_queue_empty(d, DELIVER_S)
    only_sink(sinks, "127.0.0.3", "busy@multi.test")


def test_null_mx_bounces_5_1_10(mx_world):
    make, sinks, port = mx_world
    d = make()
    send_mail(d, ["u@null.test"], token="nullmx")
    recs = wait_deliver(d, lambda r: "bounced" in statuses(r, "u@null.test"), DELIVER_S,
                        "u@null.test bounced")
    rec = [r for r in recs if r.get("to") == "u@null.test"][-1]
    assert rec["dsn"] == "5.1.10", f"got dsn={rec['dsn']}, want 5.1.10 (RFC 7505)"
    assert rec["relay"] == "none", f"got relay={rec['relay']}, want none"
    _, _, per = bounce_at(sinks)
    assert per[0].get("status") == "5.1.10" and per[0].get("action", "").lower() == "failed", \
        f"got {per}"
    wait_queue_empty(d, DELIVER_S)
    assert sum(s.count() for h, s in sinks.items() if h != "127.0.0.6") == 0


def test_nxdomain_bounces(mx_world):
    make, sinks, port = mx_world
    d = make()
    send_mail(d, ["u@nope.test"], token="nxdomain")
    recs = wait_deliver(d, lambda r: "bounced" in statuses(r, "u@nope.test"), DELIVER_S,
                        "u@nope.test bounced")
    assert statuses(recs, "u@nope.test") == ["bounced"], \
        f"got {statuses(recs, 'u@nope.test')}, want one bounce, no retry (NXDOMAIN is permanent)"
    rec = [r for r in recs if r.get("to") == "u@nope.test"][0]
    # RFC 3463 leaves the choice: 5.1.2 (bad destination system) or, as
    # Postfix says, 5.4.4 (unable to route)
    assert rec["dsn"] in ("5.1.2", "5.4.4"), f"got dsn={rec['dsn']}, want 5.1.2 or 5.4.4"
    _, _, per = bounce_at(sinks)
    assert "u@nope.test" in per[0].get("final-recipient", ""), f"got {per}"
    wait_queue_empty(d, DELIVER_S)


def test_servfail_retried_then_delivered(mx_world, dns_zones):
    make, sinks, port = mx_world
    name = "sf1.flaky.example"
    d = make()
    try:
        send_mail(d, [f"u@{name}"], token="servfail")
        recs = wait_deliver(d, lambda r: "deferred" in statuses(r, f"u@{name}"), DELIVER_S,
                            "a deferral while the domain SERVFAILs")
        rec = [r for r in recs if r.get("to") == f"u@{name}"][0]
        assert rec["dsn"].startswith("4."), f"got dsn={rec['dsn']}, want 4.x.x"
        assert d.queue_ids(), "the deferred message must stay queued"
        dns_zones.heal_flaky(name, "mx1.multi.test")
        wait_for(lambda: sinks["127.0.0.2"].count() >= 1, DELIVER_S,
                 "delivery after the domain resolves (retry_schedule 1s 2s)")
        wait_queue_empty(d, DELIVER_S)
        only_sink(sinks, "127.0.0.2", f"u@{name}")
        st = statuses(deliver_log(d), f"u@{name}")
        assert st[-1] == "sent" and "bounced" not in st, f"got {st}"
    finally:
        dns_zones.reset_flaky(name)



def test_mx_answer_too_big_for_udp_goes_over_tcp(mx_world, dns_zones):
    # big.test has 61 MX records with long names, over 6 KiB: more than
    # fits the 4096 bytes of UDP udns asks for with EDNS0
    port_dns = int(dns_zones.dns_servers.rsplit(":", 1)[1])
    reply = dns_udp_reply(port_dns, "big.test", edns=4096)
    assert reply is not None and reply[2] & 0x02, "unbound should truncate big.test's MX answer"
    make, sinks, port = mx_world
    d = make()
    send_mail(d, ["u@big.test"], token="bigmx")
    wait_for(lambda: sinks["127.0.0.2"].count() >= 1, DELIVER_S,
             "delivery to mx1.multi.test, big.test's preference 10")
    wait_queue_empty(d, DELIVER_S)
    only_sink(sinks, "127.0.0.2", "u@big.test")
    recs = [r for r in wait_deliver(d, lambda r: "sent" in statuses(r, "u@big.test"),
                                    DELIVER_S, "status=sent") if r.get("to") == "u@big.test"]
    assert statuses(recs, "u@big.test") == ["sent"], f"got {recs}, want sent at once"
