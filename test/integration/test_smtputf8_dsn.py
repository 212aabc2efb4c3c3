"""smtputf8_dsn - internationalised addresses and DSN parameters.

Covers: RFC 6531 3.4 (MAIL ... SMTPUTF8 with UTF-8 local parts and
domains), RFC 6531 3.5 (non-ASCII address without SMTPUTF8 is refused),
RFC 3461 4.1-4.4 (NOTIFY, ORCPT, RET, ENVID accepted; NEVER combined with
another NOTIFY value is a syntax error).
"""

from conftest import QUEUED_RE, Smtp, check_esc, split_received

SENDER = "j\u00f6rg@b\u00fccher.example"
RCPT = "\u03b4\u03bf\u03ba\u03b9\u03bc\u03ae@\u03c0\u03b1\u03c1\u03ac\u03b4\u03b5\u03b9\u03b3\u03bc\u03b1.example"


def test_smtputf8_address_rfc6531_3_4(daemon):
    msg = (f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: \u00fcnic\u00f6de\r\n\r\n"
           "\u00e9t\u00e9\r\n").encode("utf-8")
    with Smtp(daemon.port) as c:
        c.ehlo()
        code, lines = c.cmd(f"MAIL FROM:<{SENDER}> SMTPUTF8 BODY=8BITMIME")
        assert code == 250, f"MAIL SMTPUTF8: got {code} {lines}, want 250"
        code, lines = c.cmd(f"RCPT TO:<{RCPT}>")
        assert code == 250, f"RCPT UTF-8: got {code} {lines}, want 250"
        assert c.cmd("DATA")[0] == 354
        code, lines = c.cmd(msg + b".")
        assert code == 250, f"DATA: got {code} {lines}, want 250"
        qid = QUEUED_RE.search(lines[-1]).group(1)
    (m,) = daemon.queue_list()
    assert m["id"] == qid
    assert m["from"].strip("<>") == SENDER, f"from=: got {m['from']!r}, want {SENDER!r}"
    assert [r.strip("<>") for r in m["rcpts"]] == [RCPT], f"to=: got {m['rcpts']!r}"
    split_received(daemon.queue_cat(qid), msg)


def test_utf8_address_without_smtputf8_refused_rfc6531_3_5(daemon):
    with Smtp(daemon.port) as c:
        c.ehlo()
        code, lines = c.cmd(f"MAIL FROM:<{SENDER}>")
        assert code // 100 == 5, f"UTF-8 sender without SMTPUTF8: got {code} {lines}, want 5xx"
        check_esc(code, lines[-1])
        assert c.cmd("MAIL FROM:<ascii@test.invalid>")[0] == 250
        code, lines = c.cmd(f"RCPT TO:<{RCPT}>")
        assert code // 100 == 5, f"UTF-8 rcpt without SMTPUTF8: got {code} {lines}, want 5xx"
    assert daemon.queue_list() == []


def test_dsn_params_accepted_rfc3461(daemon):
    with Smtp(daemon.port) as c:
        c.ehlo()
        code, lines = c.cmd("MAIL FROM:<a@test.invalid> RET=HDRS ENVID=QQ314159+2Bx")
        assert code == 250, f"MAIL RET/ENVID: got {code} {lines}, want 250"
        code, lines = c.cmd("RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE,DELAY"
                            " ORCPT=rfc822;b@example.com")
        assert code == 250, f"RCPT NOTIFY/ORCPT: got {code} {lines}, want 250"
        code, lines = c.cmd("RCPT TO:<c@example.com> NOTIFY=NEVER")
        assert code == 250, f"RCPT NOTIFY=NEVER: got {code} {lines}, want 250"
        assert c.cmd("DATA")[0] == 354
        code, lines = c.cmd(b"Subject: dsn\r\n\r\nbody\r\n.")
        assert code == 250, f"DATA: got {code} {lines}, want 250"
    (m,) = daemon.queue_list()
    line = m["_line"].lower()
    # queue list is not required to show DSN data; when it does, check it.
    if "envid" in line:
        assert "qq314159" in line, f"ENVID shown but wrong: {m['_line']!r}"
    if "notify" in line:
        assert "success" in line and "never" in line, f"NOTIFY shown but wrong: {m['_line']!r}"
    if "ret=" in line:
        assert "hdrs" in line, f"RET shown but wrong: {m['_line']!r}"


def test_dsn_notify_never_combined_is_syntax_error_rfc3461_4_1(daemon):
    with Smtp(daemon.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@test.invalid>")[0] == 250
        code, lines = c.cmd("RCPT TO:<b@example.com> NOTIFY=NEVER,SUCCESS")
        assert code // 100 == 5, f"NOTIFY=NEVER,SUCCESS: got {code} {lines}, want 5xx"
        check_esc(code, lines[-1])
        code, lines = c.cmd("RCPT TO:<b@example.com> NOTIFY=BOGUS")
        assert code // 100 == 5, f"NOTIFY=BOGUS: got {code} {lines}, want 5xx"
        code, lines = c.cmd("MAIL FROM:<a@test.invalid> RET=FULL")
        assert code == 503, f"nested MAIL: got {code} {lines}, want 503"


def test_dsn_ret_invalid_and_duplicate(daemon):
    with Smtp(daemon.port) as c:
        c.ehlo()
        code, lines = c.cmd("MAIL FROM:<a@test.invalid> RET=SOMETIMES")
        assert code // 100 == 5, f"RET=SOMETIMES: got {code} {lines}, want 5xx"
        code, lines = c.cmd("MAIL FROM:<a@test.invalid> RET=FULL RET=HDRS")
        assert code // 100 == 5, f"duplicate RET: got {code} {lines}, want 5xx"
        check_esc(code, lines[-1])
