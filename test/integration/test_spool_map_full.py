"""spool_map_full - a full spool index answers 452 4.3.1 and keeps serving.

Covers: the core issue's "Disk full or LMDB map full answers 452 4.3.1 and
keeps serving; nothing already accepted is harmed", against the real
daemon with the smallest index map (spool_map_size = 1M): messages are sent
on one connection until end of DATA gets 452; the connection and the
daemon keep answering; every message that got 250 is still listed; after a
restart with a larger map, new mail is accepted again.
"""

import smtplib

from conftest import QUEUED_RE, check_esc, make_message, send_ok

MAX_SENDS = 20000   # the 1 MiB map holds a few thousand index entries


def test_map_full_answers_452_and_keeps_serving(make_daemon):
    d = make_daemon(spool_map_size="1M")
    accepted = []
    full_reply = None
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("client.test.invalid")
        for i in range(MAX_SENDS):
            s.mail("sender@test.invalid")
            s.rcpt("rcpt@example.com")
            code, resp = s.data(make_message(f"fill-{i}", body_lines=["x" * 60] * 4))
            text = resp.decode("utf-8", "replace")
            if code == 250:
                accepted.append(QUEUED_RE.search(text).group(1))
                continue
            full_reply = (code, text)
            break
        assert full_reply is not None, f"no refusal after {MAX_SENDS} messages"
        code, text = full_reply
        assert code == 452, f"end of DATA with a full map: got {code} {text}, want 452"
        check_esc(code, text)
        assert text.startswith("4.3.1"), f"got {text!r}, want 4.3.1"
        # The same session goes on.
        assert s.noop()[0] == 250
    assert len(accepted) > 100, f"only {len(accepted)} messages fit in 1 MiB"
    listed = set(d.queue_ids())
    missing = [q for q in accepted if q not in listed]
    assert not missing, f"{len(missing)} acknowledged messages not listed, e.g. {missing[:3]}"
    # Restart with room: accepted mail is intact and new mail is taken.
    d.stop()
    d.opts["spool_map_size"] = "64M"
    d.start()
    d.wait_ready()
    listed = set(d.queue_ids())
    assert set(accepted) <= listed, "acknowledged messages lost across the restart"
    send_ok(d)
