"""bad_syntax_and_order - malformed and out-of-order commands get 5xx, in sync.

Covers: RFC 5321 4.2.4 / 4.3.2 (500/501/502/503/555 with RFC 3463 codes),
4.1.4 (order: EHLO/HELO before MAIL, MAIL before RCPT, RCPT before DATA,
no nested MAIL), 4.1.2 (path syntax), RFC 1869 6 / RFC 5321 4.1.1.11
(unknown MAIL parameters: 555 5.5.4), and NUL bytes in commands and data.
Every refusal leaves the session usable for a normal transaction.
"""

import pytest

from conftest import Smtp, check_esc, send_ok, split_received

# (name, command, wanted reply codes). Sent after EHLO on a fresh session.
BAD_SYNTAX = [
    ("unknown_verb_rfc5321_4_2_4", "XYZZY", (500, 502)),
    ("empty_line", "", (500, 501)),
    ("mail_no_colon", "MAIL FROM <a@test.invalid>", (501,)),
    ("mail_no_brackets", "MAIL FROM:a@test.invalid", (501, 250)),   # lenient is allowed
    ("mail_unterminated_path_rfc5321_4_1_2", "MAIL FROM:<a@test.invalid", (501,)),
    ("mail_two_at", "MAIL FROM:<a@b@test.invalid>", (501, 553)),
    ("mail_bad_domain", "MAIL FROM:<a@-bad-.test>", (501, 553)),
    ("mail_unknown_param_rfc5321_4_1_1_11", "MAIL FROM:<a@test.invalid> BOGUS=1", (555, 501)),
    ("mail_body_bad_value_rfc6152", "MAIL FROM:<a@test.invalid> BODY=9BIT", (501, 555)),
    ("mail_size_not_number_rfc1870", "MAIL FROM:<a@test.invalid> SIZE=abc", (501, 555)),
    ("mail_param_twice", "MAIL FROM:<a@test.invalid> SIZE=10 SIZE=20", (501, 555)),
    ("helo_no_arg", "HELO", (501,)),
    ("ehlo_no_arg", "EHLO", (501,)),
    ("verb_with_control_char", "NO\x01OP", (500, 501, 502)),
    ("data_with_argument", "DATA now", (501, 503)),
    ("local_part_too_long_rfc5321_4_5_3_1_1", "MAIL FROM:<" + "l" * 200 + "@test.invalid>", (501, 553, 250)),
    ("domain_too_long_rfc5321_4_5_3_1_2", "MAIL FROM:<a@" + ("d" * 60 + ".") * 5 + "test>", (501, 553)),
]


@pytest.mark.parametrize("name,command,want", BAD_SYNTAX, ids=[b[0] for b in BAD_SYNTAX])
def test_bad_syntax_refused_in_sync(make_daemon, name, command, want):
    d = make_daemon(smtpd_error_limit=50)
    with Smtp(d.port) as c:
        c.ehlo()
        code, lines = c.cmd(command)
        assert code in want, f"{command[:60]!r}: got {code} {lines}, want one of {want}"
        check_esc(code, lines[-1])
        code, lines = c.cmd("RSET")
        assert code == 250, f"RSET after {name}: got {code} {lines}, want 250 (in sync)"
        assert c.pending() == b"", f"{name}: extra replies"
    send_ok(d)


def test_out_of_order_503_rfc5321_4_1_4(make_daemon):
    d = make_daemon(smtpd_error_limit=50)
    with Smtp(d.port) as c:
        code, lines = c.cmd("MAIL FROM:<a@test.invalid>")
        assert code == 503, f"MAIL before EHLO: got {code} {lines}, want 503"
        check_esc(code, lines[-1])
        c.ehlo()
        code, lines = c.cmd("RCPT TO:<b@example.com>")
        assert code == 503, f"RCPT before MAIL: got {code} {lines}, want 503"
        check_esc(code, lines[-1])
        code, lines = c.cmd("DATA")
        assert code == 503, f"DATA before MAIL: got {code} {lines}, want 503"
        assert c.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
        code, lines = c.cmd("MAIL FROM:<a@test.invalid>")
        assert code == 503, f"nested MAIL: got {code} {lines}, want 503"
        code, lines = c.cmd("DATA")
        assert code in (503, 554), f"DATA before RCPT: got {code} {lines}, want 503"
        check_esc(code, lines[-1])
        assert c.cmd("RCPT TO:<b@example.com>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        code, lines = c.cmd(b"Subject: order\r\n\r\nbody\r\n.")
        assert code == 250, f"transaction after 503s: got {code} {lines}, want 250"
    assert len(d.queue_list()) == 1
    send_ok(d)


def test_ehlo_mid_transaction_resets_rfc5321_4_1_4(daemon):
    with Smtp(daemon.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
        assert c.cmd("RCPT TO:<b@example.com>")[0] == 250
        c.ehlo()
        code, lines = c.cmd("DATA")
        assert code in (503, 554), f"DATA after EHLO reset: got {code} {lines}, want 503"
    assert daemon.queue_list() == []


def test_nul_byte_in_command(make_daemon):
    d = make_daemon(smtpd_error_limit=50)
    with Smtp(d.port) as c:
        c.ehlo()
        for cmd in (b"NOOP\x00", b"MAIL FROM:<a\x00b@test.invalid>", b"\x00\x00\x00",
                    b"MAIL FROM:<a@test.invalid>\x00 SIZE=10"):
            try:
                code, lines = c.cmd(cmd)
            except (EOFError, ConnectionResetError):
                pytest.fail(f"connection dropped after {cmd!r} (want a 5xx reply)")
            assert code // 100 == 5, f"{cmd!r}: got {code} {lines}, want 5xx"
            check_esc(code, lines[-1])
        assert c.cmd("RSET")[0] == 250
    send_ok(d)


def test_nul_byte_in_data_not_truncated(daemon):
    """A NUL in the body: refused, or stored whole (no C-string truncation)."""
    msg = b"Subject: nul\r\n\r\nbefore\x00after\r\nlast line\r\n"
    with Smtp(daemon.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
        assert c.cmd("RCPT TO:<b@example.com>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        code, lines = c.cmd(msg + b".")
        assert code == 250 or code // 100 == 5, f"got {code} {lines}"
        check_esc(code, lines[-1])
    listed = daemon.queue_list()
    if code == 250:
        (m,) = listed
        split_received(daemon.queue_cat(m["id"]), msg)
    else:
        assert listed == []
    send_ok(daemon)


def test_8bit_in_command_without_smtputf8(daemon):
    with Smtp(daemon.port) as c:
        c.ehlo()
        code, lines = c.cmd(b"MAIL FROM:<\xff\xfe@test.invalid>")
        assert code // 100 == 5, f"invalid UTF-8 in MAIL: got {code} {lines}, want 5xx"
        check_esc(code, lines[-1])
        code, lines = c.cmd(b"MAIL FROM:<a@test.invalid> SMTPUTF8")
        assert code == 250
        code, lines = c.cmd(b"RCPT TO:<\xc3\x28@example.com>")   # invalid UTF-8 sequence
        assert code // 100 == 5, f"invalid UTF-8 even with SMTPUTF8: got {code} {lines}, want 5xx"
    send_ok(daemon)
