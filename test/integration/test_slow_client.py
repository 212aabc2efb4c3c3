"""slow_client - a client sending one byte per 50 ms is served, and so are others.

Covers: RFC 5321 4.5.3.2 (timeouts apply per read, not per command: a slow
but live client must not be cut off), chunking independence of the
protocol core (every byte arrives in its own recv), and that one slow
session does not block the reactor for a normal client.
"""

import threading
import time

import pytest

from conftest import QUEUED_RE, Smtp, send_ok

SCRIPT = (b"EHLO slow.test.invalid\r\n", b"MAIL FROM:<slow@test.invalid>\r\n",
          b"RCPT TO:<rcpt@example.com>\r\n", b"DATA\r\n",
          b"Subject: slow\r\n\r\nslow body\r\n.\r\n", b"QUIT\r\n")
WANT = [250, 250, 250, 354, 250, 221]


@pytest.mark.slow
def test_one_byte_per_50ms_served(make_daemon):
    d = make_daemon(smtpd_timeout="3s")      # each byte gap is far below it
    result = {}

    def slow():
        with Smtp(d.port, timeout=15) as c:
            codes = []
            for step in SCRIPT:
                for i in range(len(step)):
                    c.send(step[i:i + 1])
                    time.sleep(0.05)
                code, lines = c.reply()
                codes.append(code)
                if code == 250 and step.endswith(b".\r\n"):
                    result["qid"] = QUEUED_RE.search(lines[-1]).group(1)
            result["codes"] = codes

    t = threading.Thread(target=slow, daemon=True)
    start = time.monotonic()
    t.start()
    served = 0
    while t.is_alive() and time.monotonic() - start < 60:
        send_ok(d)                            # normal clients keep being served
        served += 1
        time.sleep(0.5)
    t.join(timeout=60)
    assert not t.is_alive(), "slow client did not finish within 60 s"
    assert result.get("codes") == WANT, f"slow client replies: got {result.get('codes')}, want {WANT}"
    assert result["qid"] in d.queue_ids()
    assert served >= 3, f"only {served} normal transactions ran alongside the slow client"
