#!/usr/bin/python3
"""dsn_check - parse a DSN written by test_dsn with Python's email package
and check it against the expectations given on the command line.

usage: dsn_check.py FILE key=value...
  kind=failure|delay|success    sender=ADDR    host=MYHOSTNAME
  original=none|headers|full    utf8=0|1       envid=DECODED
  orig_has=TEXT (must appear in the third part)
  orig_lacks=TEXT (must not appear in the third part)
  text_has=TEXT (must appear in the text part)
  rcpt=FINAL|ACTION|STATUS|ORCPT|REMOTE|DIAG   (repeat, in order; empty
      ORCPT/REMOTE/DIAG means the field must be absent; DIAG is compared
      with white space collapsed; a trailing '*' makes it a prefix)

Independent of the C code on purpose: it re-derives the structure from
the bytes, the way a mail client would. Prints "ok" or the first failure
("got X, want Y") and exits 0 or 1.
"""
import email
import email.parser
import email.utils
import re
import sys

SUBJECTS = {
    "failure": "Undelivered Mail Returned to Sender",
    "delay": "Delayed Mail (still being retried)",
    "success": "Successful Mail Delivery Report",
}
TOP_HEADERS = {"date", "from", "subject", "to", "auto-submitted", "message-id",
               "mime-version", "content-type", "content-transfer-encoding"}
PART_HEADERS = {"content-description", "content-type", "content-transfer-encoding"}
MSG_FIELDS = {"original-envelope-id", "reporting-mta", "x-ringmta-queue-id",
              "arrival-date"}
RCPT_FIELDS = {"original-recipient", "final-recipient", "action", "status",
               "remote-mta", "diagnostic-code", "last-attempt-date",
               "will-retry-until"}


class Fail(Exception):
    pass


def want(cond, what, got, exp):
    if not cond:
        raise Fail("%s: got %r, want %r" % (what, got, exp))


def unfold(v):
    return " ".join(str(v).split())


def check_lines(raw):
    # every line ends in CRLF, no bare CR or LF, at most 998 octets
    lines = raw.split(b"\r\n")
    want(lines[-1] == b"", "last line", lines[-1][-40:], b"(CRLF-terminated)")
    for i, ln in enumerate(lines[:-1]):
        want(b"\r" not in ln and b"\n" not in ln, "line %d bare CR/LF" % (i + 1), ln[:60], "none")
        want(len(ln) <= 998, "line %d length" % (i + 1), len(ln), "<= 998")


def status_blocks(part):
    """the per-message block and the per-recipient blocks of the report"""
    payload = part.get_payload()
    if isinstance(payload, list) and part.get_content_type() == "message/delivery-status":
        return [dict((k.lower(), v) for k, v in b.items()) for b in payload]
    # message/global-delivery-status: email treats it as message/*; parse by hand
    if isinstance(payload, list):
        text = payload[0].as_string()
    else:
        text = payload
    blocks = re.split(r"\r?\n\r?\n", text.strip("\r\n"))
    hp = email.parser.HeaderParser()
    return [dict((k.lower(), v) for k, v in hp.parsestr(b + "\n").items()) for b in blocks]


def main(argv):
    path = argv[1]
    exp = {"rcpt": [], "orig_has": [], "orig_lacks": [], "text_has": []}
    for a in argv[2:]:
        k, _, v = a.partition("=")
        if k in ("rcpt", "orig_has", "orig_lacks", "text_has"):
            exp[k].append(v)
        else:
            exp[k] = v
    raw = open(path, "rb").read()
    check_lines(raw)
    text = raw.decode("utf-8", "surrogateescape")
    msg = email.message_from_string(text)

    keys = [k.lower() for k in msg.keys()]
    want(set(keys) == TOP_HEADERS and len(keys) == len(TOP_HEADERS),
         "top-level header fields (injection?)", sorted(keys), sorted(TOP_HEADERS))
    want(unfold(msg["Subject"]) == SUBJECTS[exp["kind"]], "Subject", msg["Subject"], SUBJECTS[exp["kind"]])
    want(unfold(msg["From"]).startswith("MAILER-DAEMON@" + exp["host"] + " "), "From",
         msg["From"], "MAILER-DAEMON@" + exp["host"])
    want(unfold(msg["To"]) == "<%s>" % exp["sender"], "To", unfold(msg["To"]), "<%s>" % exp["sender"])
    want(msg["Auto-Submitted"] == "auto-replied", "Auto-Submitted", msg["Auto-Submitted"], "auto-replied")
    want(email.utils.parsedate_to_datetime(msg["Date"]) is not None, "Date", msg["Date"], "a date")
    want(re.fullmatch(r"<[^<>\s]+>", msg["Message-ID"] or "") is not None, "Message-ID",
         msg["Message-ID"], "<...>")
    want(msg.get_content_type() == "multipart/report", "Content-Type", msg.get_content_type(),
         "multipart/report")
    utf8 = exp.get("utf8", "0") == "1"
    rt = "global-delivery-status" if utf8 else "delivery-status"
    want(msg.get_param("report-type") == rt, "report-type", msg.get_param("report-type"), rt)
    want(not msg.defects, "top-level defects", msg.defects, [])

    parts = msg.get_payload()
    n_want = 2 if exp["original"] == "none" else 3
    want(len(parts) == n_want, "number of parts", len(parts), n_want)
    for p in parts:
        pk = set(k.lower() for k in p.keys())
        want(pk <= PART_HEADERS, "part header fields (injection?)", sorted(pk), sorted(PART_HEADERS))
        want(not p.defects, "part defects", p.defects, [])

    t = parts[0]
    want(t.get_content_type() == "text/plain", "part 1 type", t.get_content_type(), "text/plain")
    cs = "utf-8" if utf8 else "us-ascii"
    want(t.get_content_charset() == cs, "part 1 charset", t.get_content_charset(), cs)
    body = t.get_payload()
    for s in exp["text_has"]:
        want(s in unfold(body), "text part", unfold(body)[:200], s)

    st = parts[1]
    stt = "message/global-delivery-status" if utf8 else "message/delivery-status"
    want(st.get_content_type() == stt, "part 2 type", st.get_content_type(), stt)
    blocks = status_blocks(st)
    want(len(blocks) == 1 + len(exp["rcpt"]), "report blocks", len(blocks), 1 + len(exp["rcpt"]))
    pm = blocks[0]
    want(set(pm) <= MSG_FIELDS, "per-message fields", sorted(pm), sorted(MSG_FIELDS))
    want(unfold(pm.get("reporting-mta", "")) == "dns; " + exp["host"], "Reporting-MTA",
         pm.get("reporting-mta"), "dns; " + exp["host"])
    if "envid" in exp:
        want(unfold(pm.get("original-envelope-id", "")) == exp["envid"], "Original-Envelope-Id",
             pm.get("original-envelope-id"), exp["envid"])
    else:
        want("original-envelope-id" not in pm, "Original-Envelope-Id", pm.get("original-envelope-id"), None)
    if "arrival-date" in pm:
        want(email.utils.parsedate_to_datetime(pm["arrival-date"]) is not None, "Arrival-Date",
             pm["arrival-date"], "a date")

    for i, spec in enumerate(exp["rcpt"]):
        final, action, status, orcpt, remote, diag = spec.split("|")
        b = blocks[1 + i]
        want(set(b) <= RCPT_FIELDS, "rcpt %d fields (injection?)" % i, sorted(b), sorted(RCPT_FIELDS))
        want(unfold(b.get("final-recipient", "")) == final, "rcpt %d Final-Recipient" % i,
             b.get("final-recipient"), final)
        want(b.get("action") == action, "rcpt %d Action" % i, b.get("action"), action)
        want(b.get("status") == status, "rcpt %d Status" % i, b.get("status"), status)
        got = unfold(b["original-recipient"]) if "original-recipient" in b else ""
        want(got == orcpt, "rcpt %d Original-Recipient" % i, got, orcpt)
        got = unfold(b["remote-mta"]) if "remote-mta" in b else ""
        want(got == remote, "rcpt %d Remote-MTA" % i, got, remote)
        got = unfold(b["diagnostic-code"]) if "diagnostic-code" in b else ""
        if diag.endswith("*"):
            want(got.startswith(diag[:-1]), "rcpt %d Diagnostic-Code" % i, got[:100], diag)
        else:
            want(got == diag, "rcpt %d Diagnostic-Code" % i, got, diag)
        for d in ("last-attempt-date", "will-retry-until"):
            if d in b:
                want(email.utils.parsedate_to_datetime(b[d]) is not None, d, b[d], "a date")
        want(("will-retry-until" in b) <= (action == "delayed"), "Will-Retry-Until only for delayed",
             b.get("will-retry-until"), None)

    if exp["original"] != "none":
        o = parts[2]
        if exp["original"] == "full":
            ot = "message/global" if utf8 else "message/rfc822"
            want(o.get_content_type() == ot, "part 3 type", o.get_content_type(), ot)
            inner = o.get_payload()
            inner = inner[0] if isinstance(inner, list) else inner
            otext = inner.as_string() if hasattr(inner, "as_string") else str(inner)
        else:
            ot = "message/global-headers" if utf8 else "text/rfc822-headers"
            want(o.get_content_type() == ot, "part 3 type", o.get_content_type(), ot)
            otext = o.get_payload()
            if not isinstance(otext, str):
                otext = otext[0].as_string()
        for s in exp["orig_has"]:
            want(s in otext, "part 3", otext[:200], s)
        for s in exp["orig_lacks"]:
            want(s not in otext, "part 3 must lack", otext[:200], s)
    print("ok")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Fail as e:
        print("dsn_check: %s: %s" % (sys.argv[1], e))
        sys.exit(1)
