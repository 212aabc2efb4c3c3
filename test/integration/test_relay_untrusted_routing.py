"""relay_untrusted_routing - no open relay through routing in the local part.

Covers: the relay policy for clients outside mynetworks: relay_domains only,
and never a local part that carries routing of its own (the percent hack,
bang paths, a quoted "@"), which a mailbox host behind the gateway might
honour (Postfix's allow_untrusted_routing = no); RFC 5321 4.5.1: the bare
<postmaster> is always accepted.
"""

import pytest

from conftest import Smtp, check_esc

CASES = [
    ("x%evil.example@example.org", 554),
    ("x!evil.example@example.org", 554),
    ('"x@evil.example"@example.org', 554),
    ("x@evil.example", 554),
    ("postmaster", 250),
    ("Postmaster", 250),
    ("x@example.org", 250),
]


@pytest.mark.parametrize("rcpt,want", CASES)
def test_untrusted_routing_refused_rfc5321_3_6(make_daemon, rcpt, want):
    d = make_daemon(mynetworks="10.0.0.0/8", relay_domains="example.org")
    with Smtp(d.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
        code, lines = c.cmd(f"RCPT TO:<{rcpt}>")
        assert code == want, f"RCPT TO:<{rcpt}>: got {code} {lines}, want {want}"
        check_esc(code, lines[-1])
        if want == 554:
            assert lines[-1].startswith("5.7.1"), lines
