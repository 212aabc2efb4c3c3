"""test_deliver_retry_bounce - 4xx retried, delivered once; 5xx and expiry bounce.

Owns:     one delivering ringmta per test with transport_map routes:
          example.test to a script sink (the scripted next hop), sender.test
          to a second script sink (where bounces to s@sender.test arrive).
Must not: reach anything but 127.0.0.1.
Interface: pytest-3 test/integration/test_deliver_retry_bounce.py
Limits:   every wait polls with a timeout (DELIVER_S); retry_schedule 1s 2s.
Skips:    without the delivery engine (issue 4) or the map files (transport_map).
Standards: RFC 5321 4.2.5/4.5.4.1 (4xx: retry, 5xx: give up), 6.1 (a
          bounce goes to the reverse-path; a null reverse-path is never
          bounced), RFC 3464 (multipart/report; message/delivery-status:
          Final-Recipient, Action, Status, Diagnostic-Code), RFC 6522.
"""

import email
import re

import pytest

from conftest import has_config
from peers import (deliver_log, parse_dsn, send_mail, statuses, wait_deliver,
                   wait_queue_empty, write_map)

pytestmark = pytest.mark.usefixtures("maps_feature")
DELIVER_S = 30


@pytest.fixture
def routed(relay_daemon, script_sink_factory):
    """routed - factory(hop_script, **opts) -> (daemon, hop sink, bounce sink)."""
    def make(hop=None, **opts):
        hop_sink = script_sink_factory(**(hop or {}))
        bounce_sink = script_sink_factory(name="bounces.test")
        tmap = write_map([f"example.test smtp:[127.0.0.1]:{hop_sink.port}",
                          f"sender.test smtp:[127.0.0.1]:{bounce_sink.port}"])
        return relay_daemon(transport_map=tmap, **opts), hop_sink, bounce_sink
    return make


def test_4xx_then_2xx_delivered_once(routed):
    d, hop, bounces = routed(hop={"rcpt": {"r@example.test": ["450 4.2.0 greylisted",
                                                              "250 2.1.5 ok"]}})
    s = send_mail(d, ["r@example.test"], token="grey")
    hop.wait_count(1, timeout=DELIVER_S)
    wait_queue_empty(d, DELIVER_S)
    got = hop.delivered_to("r@example.test")
    assert len(got) == 1, f"got {len(got)} deliveries, want exactly 1"
    assert hop.attempt_count("rcpt", "r@example.test") == 2, "want one refused, one accepted RCPT"
    st = statuses(deliver_log(d), "r@example.test")
    assert st == ["deferred", "sent"], f"got {st}, want deferred then sent"
    rec = [r for r in deliver_log(d) if r.get("status") == "deferred"][0]
    assert rec["dsn"] == "4.2.0" and "450" in rec["reply"], f"got {rec}"
    assert rec["q"] == s.qid
    assert bounces.count() == 0, "a 4xx that later succeeds must not bounce"


def test_4xx_at_end_of_data_then_2xx(routed):
    d, hop, bounces = routed(hop={"eom": ["451 4.3.0 try again", "250 2.0.0 ok"]})
    send_mail(d, ["r@example.test"], token="eom4xx")
    hop.wait_count(1, timeout=DELIVER_S)
    wait_queue_empty(d, DELIVER_S)
    assert len(hop.txns) == 2 and len(hop.delivered_to("r@example.test")) == 1, \
        f"got {len(hop.txns)} transactions, {len(hop.delivered_to('r@example.test'))} accepted"
    assert hop.txns[0].data == hop.txns[1].data, "the retry must send the same bytes"


@pytest.mark.parametrize("where", ["rcpt", "eom"])
def test_5xx_bounces_to_sender(routed, where):
    reply = "550 5.1.1 <r@example.test>: no such user here" if where == "rcpt" \
        else "554 5.7.1 message content rejected"
    d, hop, bounces = routed(hop={where: reply})
    s = send_mail(d, ["r@example.test"], token=f"bounce{where}")
    recs = wait_deliver(d, lambda r: "bounced" in statuses(r, "r@example.test"), DELIVER_S,
                        "status=bounced")
    assert statuses(recs, "r@example.test") == ["bounced"], "a 5xx must not be retried"
    bounces.wait_count(1, timeout=DELIVER_S)
    wait_queue_empty(d, DELIVER_S)
    t = bounces.delivered_to("s@sender.test")[0]
    assert t.mail_from == "", f"bounce MAIL FROM: got {t.mail_from!r}, want <> (RFC 5321 6.1)"
    msg, per_msg, per_rcpt = parse_dsn(t.data)
    assert "mailer-daemon" in (msg["From"] or "").lower(), f"got From: {msg['From']!r}"
    assert "s@sender.test" in (msg["To"] or ""), f"got To: {msg['To']!r}"
    assert per_msg.get("reporting-mta", "").lower().startswith("dns;"), f"got {per_msg}"
    assert len(per_rcpt) == 1
    f = per_rcpt[0]
    assert f.get("final-recipient", "").replace(" ", "").lower() == "rfc822;r@example.test", \
        f"got Final-Recipient {f.get('final-recipient')!r}"
    assert f.get("action", "").lower() == "failed", f"got Action {f.get('action')!r}"
    want_status = reply.split()[1]
    assert f.get("status") == want_status, f"got Status {f.get('status')!r}, want {want_status}"
    diag = f.get("diagnostic-code", "")
    assert diag.lower().startswith("smtp;") and reply.split(" ", 2)[2] in " ".join(diag.split()), \
        f"got Diagnostic-Code {diag!r}, want smtp; and the remote reply {reply!r}"
    # the original comes back (or its headers), so the sender can tell which
    orig = [p for p in msg.get_payload() if p.get_content_type() in
            ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers")]
    assert orig, "bounce carries neither the message nor its headers"
    assert s.token.encode() in orig[0].as_bytes(), "the returned part is not our message"


def test_null_sender_never_bounced(routed):
    d, hop, bounces = routed(hop={"rcpt": "550 5.1.1 no such user"})
    send_mail(d, ["r@example.test"], from_="", token="nullbounce")
    wait_deliver(d, lambda r: "bounced" in statuses(r, "r@example.test"), DELIVER_S,
                 "status=bounced for the null-sender message")
    # a bounce, if one were made, would be queued before the original is
    # removed: an empty queue means there is none in flight either
    wait_queue_empty(d, DELIVER_S)
    assert bounces.count() == 0 and hop.count() == 0, \
        f"got {bounces.count()} bounces for a null-sender message, want none"
    assert [r for r in deliver_log(d) if r.get("to") == "s@sender.test"] == []


def test_partial_failure_bounces_only_the_failed(routed):
    d, hop, bounces = routed(hop={"rcpt": {"bad@example.test": "550 5.1.1 unknown"}})
    send_mail(d, ["good@example.test", "bad@example.test"], token="partial")
    bounces.wait_count(1, timeout=DELIVER_S)
    wait_queue_empty(d, DELIVER_S)
    assert len(hop.delivered_to("good@example.test")) == 1
    _, _, per = parse_dsn(bounces.delivered_to("s@sender.test")[0].data)
    assert [p.get("final-recipient", "").split(";")[-1].strip() for p in per] == \
        ["bad@example.test"], f"got {per}"


def lifetime_setting():
    """lifetime_setting - the shortest maximal_queue_lifetime the binary accepts."""
    from conftest import RINGMTA_BIN
    for v in ("5s", "10s", "30s"):
        if has_config(RINGMTA_BIN, f"maximal_queue_lifetime={v}"):
            return v
    return None


@pytest.mark.slow
def test_lifetime_expiry_bounces(routed):
    life = lifetime_setting()
    if life is None:
        pytest.skip("maximal_queue_lifetime below 1m not accepted by this binary")
    secs = int(life[:-1])
    d, hop, bounces = routed(hop={"rcpt": "451 4.3.0 never today"},
                             maximal_queue_lifetime=life)
    send_mail(d, ["r@example.test"], token="expire")
    recs = wait_deliver(d, lambda r: "expired" in statuses(r, "r@example.test"), secs + 20,
                        "status=expired after maximal_queue_lifetime")
    st = statuses(recs, "r@example.test")
    assert st[-1] == "expired" and set(st[:-1]) == {"deferred"} and len(st) >= 2, f"got {st}"
    bounces.wait_count(1, timeout=DELIVER_S)
    wait_queue_empty(d, DELIVER_S)
    _, _, per = parse_dsn(bounces.delivered_to("s@sender.test")[0].data)
    # Status: the last temporary one (Postfix) or X.4.7 "delivery time
    # expired" (RFC 3463) are both fine; Action is failed either way
    assert per[0].get("action", "").lower() == "failed" and \
        re.fullmatch(r"[45]\.\d{1,3}\.\d{1,3}", per[0].get("status", "")), \
        f"got {per[0]}, want Action failed and a status code"
    assert "r@example.test" in per[0].get("final-recipient", ""), f"got {per[0]}"
    assert email.message_from_bytes(bounces.txns[0].data)["Subject"], "bounce without Subject"
    assert hop.count() == 0


def test_delay_warning_once(routed):
    """delay_warning_time: one 'delayed' DSN (RFC 3464 2.3.3), then the mail
    is still delivered when the next hop recovers; no failure bounce."""
    d, hop, bounces = routed(hop={"rcpt": {"r@example.test": ["451 4.3.0 later"] * 4 +
                                           ["250 2.1.5 ok"]}},
                             retry_schedule="1s", delay_warning_time="2s")
    send_mail(d, ["r@example.test"], token="delayed")
    hop.wait_count(1, timeout=DELIVER_S)
    wait_queue_empty(d, DELIVER_S)
    st = statuses(deliver_log(d), "r@example.test")
    assert st[-1] == "sent" and set(st[:-1]) == {"deferred"} and len(st) == 5, f"got {st}"
    bounces.wait_count(1, timeout=DELIVER_S)
    notices = bounces.delivered_to("s@sender.test")
    assert len(notices) == 1, f"got {len(notices)} notices, want exactly one delay notice"
    _, _, per = parse_dsn(notices[0].data)
    assert per[0].get("action", "").lower() == "delayed", f"got {per[0]}"
    assert per[0].get("status", "").startswith("4."), f"got {per[0]}"
    assert per[0].get("will-retry-until"), f"got {per[0]}, want Will-Retry-Until"
    assert "451" in per[0].get("diagnostic-code", ""), f"got {per[0]}"
    assert notices[0].mail_from == "", "a delay notice goes out with the null sender"
