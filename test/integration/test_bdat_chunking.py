"""bdat_chunking - BDAT transfers bytes verbatim (RFC 3030 CHUNKING).

Covers: RFC 3030 2 (BDAT <size> [LAST], one 250 per chunk, the message
ends at LAST; no dot-stuffing and no end-of-data scanning inside chunks, so
"\\r\\n.\\r\\n" inside a chunk is data), pipelined chunks, BDAT 0 LAST,
and RFC 3030 4.2 (BDAT without a transaction: 503; mixing DATA is refused).
"""

import pytest

from conftest import QUEUED_RE, Smtp, check_esc, send_ok, split_received


def start_txn(c):
    c.ehlo()
    assert c.cmd("MAIL FROM:<a@test.invalid> BODY=8BITMIME")[0] == 250
    assert c.cmd("RCPT TO:<b@example.com>")[0] == 250


def test_bdat_two_chunks_verbatim_rfc3030_2(daemon):
    part1 = b"Subject: bdat\r\n\r\nline one\r\n.\r\n"     # a dot line: data, not an end
    part2 = b"..not unstuffed\r\nMAIL FROM:<evil@test.invalid>\r\nlast\r\n"
    with Smtp(daemon.port) as c:
        start_txn(c)
        c.send(b"BDAT %d\r\n" % len(part1) + part1)
        code, lines = c.reply()
        assert code == 250, f"BDAT chunk 1: got {code} {lines}, want 250"
        check_esc(code, lines[-1])
        c.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
        code, lines = c.reply()
        assert code == 250, f"BDAT LAST: got {code} {lines}, want 250"
        qid = QUEUED_RE.search(lines[-1]).group(1)
        assert c.pending() == b"", "extra replies: chunk data was parsed as commands"
    assert daemon.queue_ids() == [qid]
    split_received(daemon.queue_cat(qid), part1 + part2)


def test_bdat_pipelined_chunks_and_zero_last(daemon):
    chunks = [b"Subject: pipelined bdat\r\n", b"\r\n", b"body\r\n"]
    wire = b"".join(b"BDAT %d\r\n" % len(ch) + ch for ch in chunks) + b"BDAT 0 LAST\r\n"
    with Smtp(daemon.port) as c:
        start_txn(c)
        c.send(wire)
        replies = [c.reply() for _ in range(len(chunks) + 1)]
        codes = [r[0] for r in replies]
        assert codes == [250] * (len(chunks) + 1), f"got {codes}, want all 250"
        qid = QUEUED_RE.search(replies[-1][1][-1]).group(1)
    split_received(daemon.queue_cat(qid), b"".join(chunks))


def test_bdat_without_transaction_503_rfc3030_4_2(daemon):
    with Smtp(daemon.port) as c:
        c.ehlo()
        c.send(b"BDAT 5 LAST\r\nhello")
        code, lines = c.reply()
        assert code == 503, f"BDAT without MAIL: got {code} {lines}, want 503"
        check_esc(code, lines[-1])
        # the 5 bytes must have been consumed as chunk data, not as a command
        code, lines = c.cmd("NOOP")
        assert code == 250, f"NOOP after refused BDAT: got {code} {lines}, want 250"
        assert c.pending() == b""
    assert daemon.queue_list() == []


def test_bdat_then_data_refused(daemon):
    with Smtp(daemon.port) as c:
        start_txn(c)
        c.send(b"BDAT 4\r\nabcd")
        assert c.reply()[0] == 250
        code, lines = c.cmd("DATA")
        assert code == 503, f"DATA after BDAT: got {code} {lines}, want 503"
    assert daemon.queue_list() == []
    send_ok(daemon)


@pytest.mark.parametrize("bad", ["BDAT", "BDAT x", "BDAT -1", "BDAT 0x10",
                                 "BDAT 99999999999999999999999"])
def test_bdat_bad_size_syntax(daemon, bad):
    """An unparseable chunk size: 5xx; the session may continue or close."""
    with Smtp(daemon.port) as c:
        start_txn(c)
        code, lines = c.cmd(bad)
        assert code // 100 == 5, f"{bad!r}: got {code} {lines}, want 5xx"
        check_esc(code, lines[-1])
        try:
            code, lines = c.cmd("NOOP")
            assert code == 250, f"NOOP after {bad!r}: got {code} {lines}, want 250 or close"
        except (EOFError, ConnectionResetError):
            pass
    assert daemon.queue_list() == []
    send_ok(daemon)
