"""recipient_limit - RCPT past recipient_limit gets 452 4.5.3, the rest proceed.

Covers: RFC 5321 4.5.3.1.8 (too many recipients: 452, the client should
send the rest later; 4.5.3 from RFC 3463), and that the accepted
recipients are the ones stored.
"""

from conftest import Smtp, check_esc

# RFC 5321 4.5.3.1.8: a server MUST accept at least 100; the daemon's minimum.
LIMIT = 100


def test_recipient_limit_rfc5321_4_5_3_1_8(make_daemon):
    d = make_daemon(recipient_limit=LIMIT)
    rcpts = [f"r{i}@example.com" for i in range(LIMIT + 3)]
    with Smtp(d.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
        codes = []
        for r in rcpts:
            code, lines = c.cmd(f"RCPT TO:<{r}>")
            codes.append(code)
            if len(codes) > LIMIT:
                assert code in (452, 552), f"RCPT #{len(codes)}: got {code} {lines}, want 452"
                assert check_esc(code, lines[-1]).endswith(".5.3"), \
                    f"RCPT #{len(codes)}: got {lines}, want x.5.3"
        assert codes[:LIMIT] == [250] * LIMIT, f"first {LIMIT} RCPTs: got {codes[:LIMIT]}"
        assert c.cmd("DATA")[0] == 354
        code, lines = c.cmd(b"Subject: many\r\n\r\nbody\r\n.")
        assert code == 250, f"DATA: got {code} {lines}, want 250"
    (m,) = d.queue_list()
    got = sorted(r.strip("<>") for r in m["rcpts"])
    assert got == sorted(rcpts[:LIMIT]), f"stored recipients: got {got}, want {rcpts[:LIMIT]}"


def test_recipient_limit_resets_per_transaction(make_daemon):
    d = make_daemon(recipient_limit=LIMIT)
    with Smtp(d.port) as c:
        c.ehlo()
        for _ in range(2):
            assert c.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
            codes = [c.cmd(f"RCPT TO:<x{i}@example.com>")[0] for i in range(LIMIT)]
            assert codes == [250] * LIMIT, f"second transaction: got {sorted(set(codes))}, want all 250"
            assert c.cmd("DATA")[0] == 354
            assert c.cmd(b"Subject: t\r\n\r\nb\r\n.")[0] == 250
    assert len(d.queue_list()) == 2
