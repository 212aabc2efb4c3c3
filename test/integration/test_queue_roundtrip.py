"""queue_roundtrip - a message accepted over SMTP is listed and stored byte-exact.

Covers: the 250 reply format (`250 2.0.0 Ok: queued as <ID>`), the `accepted
q=<ID>` log line, `ringmta queue list` fields, and `ringmta queue cat`
returning our Received: header followed by the client's bytes, dot-unstuffed
(RFC 5321 4.5.2), with 8-bit and long lines intact (RFC 6152).
"""

import smtplib

from conftest import check_esc, make_message, send_smtplib, split_received

RCPTS = ["alice@example.com", "bob@example.org", "carol@example.net"]


def tricky_message(token):
    """tricky_message - body lines that exercise dot-stuffing, 8 bit, length."""
    body = [
        "plain line",
        ".leading dot (smtplib stuffs it, the daemon must unstuff it)",
        "..two leading dots",
        ".",                      # a lone dot inside the body
        "",
        "caf\u00e9 8-bit UTF-8 text",
        "x" * 990,                # close to the 998-octet line limit
        "trailing spaces   ",
        "\ttab-led line",
    ]
    return make_message(token, subject="roundtrip", body_lines=body)


def test_accept_list_and_cat_multiple_recipients(daemon):
    msg = tricky_message("rt-0001")
    code, text, qid = send_smtplib(daemon.port, msg, from_="sender@test.invalid",
                                   rcpts=RCPTS, mail_opts=["BODY=8BITMIME"])
    assert code == 250, f"end of DATA: got {code} {text!r}, want 250"
    assert check_esc(code, text) == "2.0.0", f"got {text!r}, want 250 2.0.0"
    assert qid, f"got {text!r}, want 'Ok: queued as <ID>'"

    listed = daemon.queue_list()
    assert [m["id"] for m in listed] == [qid], \
        f"queue list ids: got {[m['id'] for m in listed]}, want [{qid}]"
    m = listed[0]
    assert m["from"] in ("sender@test.invalid", "<sender@test.invalid>"), \
        f"from=: got {m['from']!r}, want sender@test.invalid"
    got_rcpts = sorted(r.strip("<>") for r in m["rcpts"])
    assert got_rcpts == sorted(RCPTS), f"to=: got {got_rcpts}, want {sorted(RCPTS)}"
    assert m.get("state") == "queued", f"state=: got {m.get('state')!r}, want queued"
    assert "next" in m and m["next"].endswith("Z"), f"next=: got {m.get('next')!r}, want ISO-8601 UTC"

    stored = daemon.queue_cat(qid)
    received = split_received(stored, msg)
    assert int(m["size"]) in (len(stored), len(msg)), \
        f"size=: got {m['size']}, want {len(stored)} (stored) or {len(msg)} (client bytes)"
    assert b"\r\n" in received and b"\n" not in received.replace(b"\r\n", b""), \
        f"Received header has bare line ends: {received!r}"

    log = daemon.log_text()
    assert any("accepted" in ln and f"q={qid}" in ln for ln in log.splitlines()), \
        f"no log line with 'accepted' and q={qid}; log tail:\n{daemon.log_tail()}"


def test_two_transactions_one_session_get_distinct_ids(daemon):
    ids = []
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=15) as s:
        s.ehlo("client.test.invalid")
        for i in range(2):
            msg = make_message(f"rt-multi-{i}")
            assert s.mail("sender@test.invalid")[0] == 250
            assert s.rcpt("rcpt@example.com")[0] == 250
            code, resp = s.data(msg)
            assert code == 250, f"message {i}: got {code} {resp!r}, want 250"
            ids.append(resp.decode().rsplit(" ", 1)[-1])
    assert len(set(ids)) == 2, f"queue ids: got {ids}, want two distinct"
    assert sorted(daemon.queue_ids()) == sorted(ids)


def test_null_sender_listed_as_angle_brackets(daemon):
    msg = make_message("rt-null")
    code, text, qid = send_smtplib(daemon.port, msg, from_="<>")
    assert code == 250, f"got {code} {text!r}, want 250"
    (m,) = daemon.queue_list()
    assert m["from"] == "<>", f"from=: got {m['from']!r}, want <>"
    split_received(daemon.queue_cat(qid), msg)
