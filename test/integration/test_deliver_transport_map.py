"""test_deliver_transport_map - transport_map lookup order; relayhost by name.

Owns:     one delivering ringmta per test and script sinks as the mapped
          next hops (SMTP on 127.0.0.1 ports, LMTP on a unix socket); for
          the relayhost-by-name case the module's unbound (DnsZones) and a
          sink on 127.0.0.8 (relay.test's address, no MX: implicit MX).
Must not: reach anything but 127.0.0.0/8 and the sinks' unix sockets.
Interface: pytest-3 test/integration/test_deliver_transport_map.py
Limits:   every wait polls with a timeout (DELIVER_S).
Skips:    without the delivery engine (issue 4); without map files (lookup
          order); without unbound (relayhost by name).
Standards: Postfix transport(5) as the model for lookup order: the exact
          domain, then .parent entries for subdomains, then *; RFC 5321 5.1
          (implicit MX).
"""

from peers import free_port_on, send_mail, wait_for, wait_queue_empty, write_map

DELIVER_S = 30


def test_transport_map_lookup_order(relay_daemon, maps_feature, script_sink_factory):
    exact = script_sink_factory(name="exact.test")
    sub = script_sink_factory(name="sub.test")
    dflt = script_sink_factory(name="default.test")
    lm = script_sink_factory(lmtp=True, unix_path="auto", name="lmtp.test")
    tmap = write_map(["# comment line", "",
                      f"corp.test smtp:[127.0.0.1]:{exact.port}",
                      f".corp.test smtp:[127.0.0.1]:{sub.port}",
                      f"box.test lmtp:unix:{lm.unix_path}",
                      f"* smtp:[127.0.0.1]:{dflt.port}"])
    d = relay_daemon(transport_map=tmap, relayhost="[127.0.0.1]:9")   # the map wins
    want = {"a@corp.test": exact, "b@x.corp.test": sub, "c@y.x.corp.test": sub,
            "d@box.test": lm, "e@else.test": dflt, "f@notcorp.test": dflt, "g@CORP.TEST": exact}
    for i, r in enumerate(want):
        send_mail(d, [r], token=f"tm{i}")
    for r, sink in want.items():
        wait_for(lambda: sink.delivered_to(r), DELIVER_S, f"{r} at {sink.name}")
    wait_queue_empty(d, DELIVER_S)
    for r, sink in want.items():
        for other in {exact, sub, dflt, lm} - {sink}:
            assert not other.delivered_to(r), f"{r}: also delivered to {other.name}"
        assert len(sink.delivered_to(r)) == 1, f"{r}: got {len(sink.delivered_to(r))} copies"


def test_relayhost_by_name_is_looked_up(relay_daemon, dns_zones, script_sink_factory):
    port = free_port_on("127.0.0.8")
    sink = script_sink_factory(host="127.0.0.8", port=port, name="relay.test")
    d = relay_daemon(relayhost=f"relay.test:{port}", dns_servers=dns_zones.dns_servers)
    send_mail(d, ["far@away.test"], token="byname")
    sink.wait_count(1, timeout=DELIVER_S)
    wait_queue_empty(d, DELIVER_S)
    assert len(sink.delivered_to("far@away.test")) == 1
