"""connection_limits - max_connections_per_ip refuses extra sessions with 421.

Covers: RFC 5321 3.8 / 4.2.2 (421 <domain> Service not available, closing
channel; RFC 3463 4.7.0) for connections beyond max_connections_per_ip
and max_connections; a slot freed by a closing client is reused.
"""

import time

import pytest

from conftest import Smtp, check_esc, send_ok

LIMIT = 3


def refused_421(port):
    c = Smtp(port, read_banner=False)
    try:
        code, lines = c.reply()
        assert code == 421, f"connection over the limit: got {code} {lines}, want 421"
        assert check_esc(code, lines[-1]) == "4.7.0", f"got {lines}, want 4.7.0"
        assert c.expect_closed(5), "over-limit connection not closed after 421"
    finally:
        c.close()


@pytest.mark.parametrize("key", ["max_connections_per_ip", "max_connections"])
def test_connection_limit_421_4_7_0(make_daemon, key):
    d = make_daemon(**{key: LIMIT})
    held = [Smtp(d.port) for _ in range(LIMIT)]     # each read its 220
    try:
        refused_421(d.port)
        refused_421(d.port)
        held.pop().close()
        deadline = time.monotonic() + 3
        while True:                                 # the slot comes back
            c = Smtp(d.port, read_banner=False)
            code, lines = c.reply()
            c.close()
            if code == 220 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert code == 220, f"after closing one session: got {code} {lines}, want 220"
    finally:
        for c in held:
            c.close()
    time.sleep(0.3)
    send_ok(d)
