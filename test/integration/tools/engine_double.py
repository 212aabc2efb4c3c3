#!/usr/bin/python3
"""engine_double - a slow, simple stand-in for ringmta with the issue-4 delivery contract.

Owns:     nothing of ringmta: it is a Python test double, used only to
          check the delivery tests' own mechanics (fixtures, waits, parsers,
          CLI calls) before the real engine exists. It speaks the same
          command line as ringmta for what the tests use: --check-config,
          `-o key=value` daemon runs, `queue list|show|cat|hold|release|
          delete|flush`, and writes `deliver:` log lines in the engine's
          format (`rN q=ID deliver: to=<addr> relay=... status=...`).
Must not: be mistaken for ringmta: never in the suite by default; run as
          RINGMTA_BIN=test/integration/tools/engine_double.py pytest-3
          test/integration/test_deliver_*.py. It listens and connects on
          127.0.0.0/8 and unix sockets only and asks only dns_servers.
Limits:   one thread per connection and per delivery attempt; JSON files
          as the spool; no TLS, no BDAT; timing as configured.
Standards: RFC 5321, RFC 2033, RFC 3464, RFC 7505 (as far as the tests go).
"""

import json
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time

OPTS = {}
STOP = threading.Event()
LOCK = threading.Lock()
BUSY = set()
SEMS = {}


def dur(v):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?", v.strip())
    if not m:
        raise ValueError(v)
    return float(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600,
                                "d": 86400}[m.group(2)]


def opt(k, default=None):
    return OPTS.get(k, default)


def log(msg):
    sys.stderr.write(f"r0 s=0000000000000000 {msg}\n")
    sys.stderr.flush()


# --- spool ---------------------------------------------------------------------
def spool():
    return opt("spool_dir", "./var/spool")


def qpath(qid, ext="json"):
    return os.path.join(spool(), f"{qid}.{ext}")


def load(qid):
    try:
        with open(qpath(qid)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def save(m):
    tmp = qpath(m["id"], "tmp")
    with open(tmp, "w") as f:
        json.dump(m, f)
    os.rename(tmp, qpath(m["id"]))


def ids():
    try:
        return sorted(f[:-5] for f in os.listdir(spool()) if f.endswith(".json"))
    except OSError:
        return []


def enqueue(sender, rcpts, data):
    qid = "%08X%04X" % (int(time.time()), random.randrange(65536))
    with open(qpath(qid, "eml"), "wb") as f:
        f.write(data)
    save({"id": qid, "from": sender, "arrival": time.time(), "next": 0, "hold": False,
          "tries": 0, "rcpts": [{"addr": r, "state": "pending", "last": ""} for r in rcpts]})
    return qid


def remove(qid):
    for ext in ("json", "eml"):
        try:
            os.unlink(qpath(qid, ext))
        except OSError:
            pass


# --- DNS (raw UDP) -----------------------------------------------------------------
def dns_query(name, qtype):
    """(rcode, [records]) ; MX records are (pref, host); A records are ip strings."""
    servers = (opt("dns_servers") or "").split()
    if not servers:
        return 2, []
    host, port = servers[0].rsplit(":", 1) if ":" in servers[0] else (servers[0], "53")
    assert host.startswith("127."), "double: dns_servers must be loopback"
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    pkt = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        try:
            s.sendto(pkt, (host, int(port)))
            data = s.recv(4096)
        except OSError:
            return 2, []
    rcode = data[3] & 15
    an = struct.unpack(">H", data[6:8])[0]

    def name_at(off):
        labels, jumped, end = [], False, None
        while True:
            n = data[off]
            if n & 0xC0 == 0xC0:
                if not jumped:
                    end = off + 2
                off = struct.unpack(">H", data[off:off + 2])[0] & 0x3FFF
                jumped = True
                continue
            if n == 0:
                return ".".join(labels), (end if jumped else off + 1)
            labels.append(data[off + 1:off + 1 + n].decode())
            off += 1 + n
    off = 12
    _, off = name_at(off)
    off += 4
    out = []
    for _ in range(an):
        _, off = name_at(off)
        t, _c, _ttl, rdlen = struct.unpack(">HHIH", data[off:off + 10])
        off += 10
        if t == 15 and qtype == 15:
            pref = struct.unpack(">H", data[off:off + 2])[0]
            out.append((pref, name_at(off + 2)[0]))
        elif t == 1 and qtype == 1:
            out.append(socket.inet_ntoa(data[off:off + 4]))
        off += rdlen
    return rcode, out


def mx_hosts(domain, port):
    """[(name, ip, port)] or ('bounce'|'defer', dsn, text)."""
    rcode, mx = dns_query(domain, 15)
    if rcode == 3:
        return ("bounce", "5.1.2", f"Host or domain name not found: {domain}")
    if rcode != 0:
        return ("defer", "4.4.3", f"DNS lookup of {domain} failed (rcode {rcode})")
    if any(h == "" for _, h in mx):
        return ("bounce", "5.1.10", f"{domain} accepts no mail (null MX)")
    if not mx:
        mx = [(0, domain)]
    out = []
    for _, h in sorted(mx):
        rc, a = dns_query(h, 1)
        out += [(h, ip, port) for ip in a]
    return out or ("bounce", "5.1.2", f"no address for the MX hosts of {domain}")


# --- routing --------------------------------------------------------------------------
def tmap():
    f = opt("transport_map")
    out = {}
    if f:
        for ln in open(f):
            p = ln.split()
            if len(p) == 2 and not p[0].startswith("#"):
                out[p[0].lower()] = p[1]
    return out


def hop_of(spec):
    """'smtp:[h]:p' / 'lmtp:unix:/p' / 'lmtp:[h]:p' -> (proto, target)."""
    proto, rest = spec.split(":", 1)
    if rest.startswith("unix:"):
        return proto, ("unix", rest[5:])
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", rest)
    if m:
        return proto, ("ip", m.group(1), int(m.group(2) or (24 if proto == "lmtp" else 25)))
    h, _, p = rest.partition(":")
    return proto, ("mx", h, int(p or 25))


def route(rcpt):
    dom = rcpt.rsplit("@", 1)[-1].lower()
    t = tmap()
    spec = t.get(dom)
    if spec is None:
        parts = dom.split(".")
        for i in range(1, len(parts)):
            if "." + ".".join(parts[i:]) in t:
                spec = t["." + ".".join(parts[i:])]
                break
    if spec is None:
        spec = t.get("*")
    if spec is None and opt("relayhost"):
        spec = "smtp:" + opt("relayhost")
    if spec is None:
        return "smtp", ("mx", dom, int(opt("smtp_tcp_port", "25")))
    return hop_of(spec)


def candidates(target):
    if target[0] == "unix":
        return [(target[1], None, None)]
    if target[0] == "ip":
        return [(target[1], target[1], target[2])]
    return mx_hosts(target[1], target[2])


# --- SMTP/LMTP client -------------------------------------------------------------------------
class Fail(Exception):
    def __init__(self, reply, session=True):
        super().__init__(reply)
        self.reply = reply


class Client:
    def __init__(self, cand, proto):
        name, ip, port = cand
        ct, self.cmd_t = dur(opt("connect_timeout", "30s")), dur(opt("smtp_command_timeout", "5m"))
        try:
            if ip is None:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.settimeout(ct)
                self.s.connect(name)
                self.relay = f"{name}"
            else:
                self.s = socket.create_connection((ip, port), timeout=ct)
                self.relay = f"{name}[{ip}]:{port}"
        except OSError as e:
            raise Fail(f"connect to {name}: {e.strerror or e}")
        self.s.settimeout(self.cmd_t)
        self.f = self.s.makefile("rb")
        self.proto = proto

    def reply(self):
        lines = []
        try:
            while True:
                ln = self.f.readline(65536)
                if not ln:
                    raise Fail("lost connection")
                ln = ln.rstrip(b"\r\n").decode("utf-8", "replace")
                lines.append(ln)
                if len(ln) < 4 or ln[3] != "-":
                    return int(ln[:3]), " ".join(x[4:] for x in lines)
        except socket.timeout:
            raise Fail("conversation timed out")
        except OSError as e:
            raise Fail(f"lost connection: {e}")

    def cmd(self, line):
        try:
            self.s.sendall(line.encode() + b"\r\n")
        except OSError as e:
            raise Fail(f"lost connection: {e}")
        return self.reply()

    def close(self):
        try:
            self.s.sendall(b"QUIT\r\n")
        except OSError:
            pass
        self.s.close()


def esc(code, text):
    m = re.match(r"([245]\.\d{1,3}\.\d{1,3})", text)
    return m.group(1) if m else f"{str(code)[0]}.0.0"


def session(cand, proto, sender, rcpts, data):
    """-> (relay, {rcpt: (code, text)}); raises Fail on session-level trouble."""
    c = Client(cand, proto)
    try:
        code, text = c.reply()
        if code != 220:
            raise Fail(f"{code} {text}")
        code, text = c.cmd(("LHLO " if proto == "lmtp" else "EHLO ") + opt("myhostname", "ringmta.test"))
        if code != 250:
            raise Fail(f"{code} {text}")
        code, text = c.cmd(f"MAIL FROM:<{sender}>")
        if code != 250:
            return c.relay, {r: (code, text) for r in rcpts}
        res, ok = {}, []
        for r in rcpts:
            code, text = c.cmd(f"RCPT TO:<{r}>")
            if code == 250:
                ok.append(r)
            else:
                res[r] = (code, text)
        if not ok:
            return c.relay, res
        code, text = c.cmd("DATA")
        if code != 354:
            return c.relay, {**res, **{r: (code, text) for r in ok}}
        body = re.sub(rb"(?m)^\.", b"..", data)
        c.s.sendall(body + b".\r\n")
        if proto == "lmtp":
            for r in ok:
                res[r] = c.reply()
        else:
            rep = c.reply()
            for r in ok:
                res[r] = rep
        return c.relay, res
    finally:
        c.close()


# --- DSN ---------------------------------------------------------------------------------------
def make_dsn(m, failed, data):
    me = opt("myhostname", "ringmta.test")
    b = "dsn%x" % random.randrange(1 << 32)
    per = "".join(f"\r\nFinal-Recipient: rfc822; {r}\r\nAction: failed\r\nStatus: {d}\r\n"
                  f"Diagnostic-Code: smtp; {t}\r\n" for r, d, t in failed)
    txt = (f"From: MAILER-DAEMON@{me}\r\nTo: <{m['from']}>\r\nSubject: Undelivered Mail\r\n"
           f"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;"
           f" boundary=\"{b}\"\r\n\r\n--{b}\r\nContent-Type: text/plain\r\n\r\nfailed.\r\n"
           f"--{b}\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; {me}\r\n"
           f"{per}\r\n--{b}\r\nContent-Type: message/rfc822\r\n\r\n")
    return txt.encode() + data + f"\r\n--{b}--\r\n".encode()


# --- the delivery engine ------------------------------------------------------------------------
def logline(m, r, relay, dsn, status, reply):
    log(f"q={m['id']} deliver: to=<{r}> relay={relay} "
        f"delay={time.time() - m['arrival']:.2f} dsn={dsn} status={status} "
        f"reply=\"{reply.replace(chr(34), chr(92) + chr(34))}\"")


def attempt(qid):
    try:
        m = load(qid)
        if not m or m["hold"]:
            return
        data = open(qpath(qid, "eml"), "rb").read()
        pend = [r["addr"] for r in m["rcpts"] if r["state"] == "pending"]
        groups = {}
        for r in pend:
            groups.setdefault(route(r), []).append(r)
        outcome = {}
        for (proto, target), rs in groups.items():
            key = repr(target)
            sem = SEMS.setdefault(key, threading.Semaphore(int(opt("destination_concurrency_limit", "20"))))
            cands = candidates(target)
            if isinstance(cands, tuple):
                for r in rs:
                    outcome[r] = ("none", cands[1], "bounced" if cands[0] == "bounce" else "deferred",
                                  cands[2])
                continue
            lim = int(opt("destination_recipient_limit", "1000"))
            chunks = [rs[i:i + lim] for i in range(0, len(rs), lim)]
            with sem:
                for chunk in chunks:
                    last = None
                    for cand in cands:
                        try:
                            relay, res = session(cand, proto, m["from"], chunk, data)
                        except Fail as e:
                            last = (cand, e.reply)
                            continue
                        for r, (code, text) in res.items():
                            st = "sent" if code < 400 else "deferred" if code < 500 else "bounced"
                            outcome[r] = (relay, esc(code, text), st, f"{code} {text}")
                        last = None
                        break
                    if last:
                        cand, why = last
                        relay = cand[0] if cand[1] is None else f"{cand[0]}[{cand[1]}]:{cand[2]}"
                        code = re.match(r"(\d{3}) (.*)", why)
                        d = esc(int(code.group(1)), code.group(2)) if code else "4.4.1"
                        if d.startswith("5"):
                            d = "4" + d[1:]
                        for r in chunk:
                            outcome[r] = (relay, d, "deferred", why)
        m2 = load(qid)
        if not m2:
            return
        m2["tries"] += 1
        expired = time.time() - m2["arrival"] > dur(opt("maximal_queue_lifetime", "5d"))
        failed = []
        for rr in m2["rcpts"]:
            if rr["addr"] not in outcome:
                continue
            relay, d, st, reply = outcome[rr["addr"]]
            if st == "deferred" and expired:
                st = "expired"
            logline(m2, rr["addr"], relay, d, st, reply)
            if st != "deferred":
                rr["state"] = st
            if st in ("bounced", "expired"):
                failed.append((rr["addr"], d, reply))
        if failed and m2["from"]:
            enqueue("", [m2["from"]], make_dsn(m2, failed, data))
        if all(r["state"] != "pending" for r in m2["rcpts"]):
            remove(qid)
            return
        sched = [dur(x) for x in re.split(r"[\s,]+", opt("retry_schedule", "5m").strip()) if x]
        m2["next"] = time.time() + sched[min(m2["tries"] - 1, len(sched) - 1)]
        save(m2)
    finally:
        with LOCK:
            BUSY.discard(qid)


def engine():
    while not STOP.is_set():
        fl = os.path.join(spool(), "flush")
        if os.path.exists(fl):
            what = open(fl).read().split()
            os.unlink(fl)
            for qid in ids():
                m = load(qid)
                if m and not m["hold"] and (not what or qid in what):
                    m["next"] = 0
                    save(m)
        for qid in ids():
            m = load(qid)
            with LOCK:
                if not m or m["hold"] or m["next"] > time.time() or qid in BUSY:
                    continue
                BUSY.add(qid)
            threading.Thread(target=attempt, args=(qid,), daemon=True).start()
        STOP.wait(0.1)


# --- the SMTP server ----------------------------------------------------------------------------
def verify(rcpt):
    proto, target = route(rcpt)
    cands = candidates(target)
    if isinstance(cands, tuple):
        return 450, "4.1.1 cannot verify now"
    try:
        c = Client(cands[0], proto)
        try:
            if c.reply()[0] != 220:
                return 450, "4.1.1 cannot verify now"
            c.cmd(("LHLO " if proto == "lmtp" else "EHLO ") + opt("myhostname", "ringmta.test"))
            c.cmd("MAIL FROM:<>")
            code, text = c.cmd(f"RCPT TO:<{rcpt}>")
        finally:
            c.close()
    except Fail:
        return 450, "4.1.1 Recipient address verification pending"
    if code >= 500:
        return 550, "5.1.1 Recipient address rejected: unknown user"
    if code >= 400:
        return 450, "4.1.1 cannot verify now"
    return 250, "2.1.5 Ok"


def serve(s, peer):
    f = s.makefile("rb")
    me = opt("myhostname", "ringmta.test")

    def say(x):
        s.sendall(x.encode() + b"\r\n")
    say(f"220 {me} ESMTP double")
    sender, rcpts = None, []
    trusted = opt("mynetworks", "127.0.0.0/8") != "" and peer.startswith("127.")
    domains, modes = [], {}
    for d in re.split(r"[\s,]+", opt("relay_domains", "")):
        if d:
            name, _, mode = d.lower().partition(":")
            domains.append(name)
            modes[name] = mode
    rr = opt("relay_recipients")
    listed = {ln.strip().lower() for ln in open(rr)} if rr else None
    while True:
        ln = f.readline(65536)
        if not ln:
            return
        t = ln.rstrip(b"\r\n").decode("utf-8", "replace")
        v = t.split(" ", 1)[0].upper()
        if v in ("EHLO", "HELO"):
            say(f"250-{me}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES")
        elif v == "MAIL":
            sender, rcpts = re.search(r"<([^>]*)>", t).group(1), []
            say("250 2.1.0 Ok")
        elif v == "RCPT":
            a = re.search(r"<([^>]*)>", t).group(1)
            dom = a.rsplit("@", 1)[-1].lower()
            hit = [d for d in domains if dom == d or (d.startswith(".") and dom.endswith(d))]
            inrel, mode = bool(hit), modes.get(hit[0], "") if hit else ""
            if mode == "any":
                rcpts.append(a)
                say("250 2.1.5 Ok")
            elif inrel and mode in ("", "list") and listed is not None and a.lower() not in listed:
                say("550 5.1.1 <%s>: Recipient address rejected: unknown user" % a)
            elif inrel and (mode == "verify" or (mode == "" and opt("verify_recipients") == "yes")):
                code, text = verify(a)
                if code == 250:
                    rcpts.append(a)
                say(f"{code} {text}")
            elif not inrel and not trusted:
                say("554 5.7.1 Relay access denied")
            else:
                rcpts.append(a)
                say("250 2.1.5 Ok")
        elif v == "DATA":
            say("354 go ahead")
            lines = []
            while True:
                ln = f.readline(1 << 20)
                if not ln or ln == b".\r\n":
                    break
                lines.append(ln[1:] if ln.startswith(b".") else ln)
            data = (f"Received: from client by {me} (double);\r\n\t{time.ctime()}\r\n").encode() \
                + b"".join(lines)
            qid = enqueue(sender, rcpts, data)
            say(f"250 2.0.0 Ok: queued as {qid}")
        elif v == "RSET":
            sender, rcpts = None, []
            say("250 2.0.0 Ok")
        elif v == "QUIT":
            say("221 2.0.0 Bye")
            return
        else:
            say("250 2.0.0 Ok")


def daemon():
    host, port = opt("listen", "127.0.0.1:2525").rsplit(":", 1)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, int(port)))
    ls.listen(128)
    ls.settimeout(0.2)
    signal.signal(signal.SIGTERM, lambda *a: STOP.set())
    signal.signal(signal.SIGINT, lambda *a: STOP.set())
    if opt("delivery", "yes") == "yes":
        threading.Thread(target=engine, daemon=True).start()
    while not STOP.is_set():
        try:
            s, addr = ls.accept()
        except socket.timeout:
            continue
        s.settimeout(60)
        threading.Thread(target=lambda s=s, a=addr[0]: (serve(s, a), s.close()), daemon=True).start()
    return 0


def queue_cmd(args):
    cmd, rest = args[0], args[1:]
    if cmd == "list":
        for qid in ids():
            m = load(qid)
            if m:
                print(f"id={qid} size=0 from={m['from']} to="
                      f"{','.join(r['addr'] for r in m['rcpts'] if r['state'] == 'pending')} "
                      f"state={'hold' if m['hold'] else 'queued'} next={int(m['next'])}")
        return 0
    m = load(rest[0]) if rest else None
    if cmd in ("show", "cat", "hold", "release", "delete") and not m:
        print(f"ringmta: queue {cmd}: no message {rest[0] if rest else ''}", file=sys.stderr)
        return 1
    if cmd == "show":
        print(f"id={m['id']} from={m['from']}")
        for r in m["rcpts"]:
            print(f"  to={r['addr']} state={r['state']}")
    elif cmd == "cat":
        sys.stdout.buffer.write(open(qpath(m["id"], "eml"), "rb").read())
    elif cmd in ("hold", "release"):
        m["hold"] = cmd == "hold"
        save(m)
    elif cmd == "delete":
        remove(m["id"])
    elif cmd == "flush":
        with open(os.path.join(spool(), "flush"), "w") as f:
            f.write(" ".join(rest))
    return 0


def main(argv):
    i, check = 0, False
    while i < len(argv):
        a = argv[i]
        if a == "-o":
            k, v = argv[i + 1].split("=", 1)
            OPTS[k] = v
            i += 2
        elif a == "-c":
            i += 2
        elif a == "--check-config":
            check = True
            i += 1
        elif a == "--help":
            print("usage: engine_double ... queue list | show ID | hold ID | release ID | "
                  "delete ID | flush [ID]  (queue hold ID)")
            return 0
        elif a == "queue":
            return queue_cmd(argv[i + 1:])
        else:
            i += 1
    if check:
        if opt("transport_map"):          # as ringmta with maps: a bad line fails
            for ln in open(opt("transport_map")):
                p = ln.split()
                if p and not p[0].startswith("#") and (len(p) != 2 or
                                                     not re.match(r"(smtp|lmtp):", p[1])):
                    print(f"{opt('transport_map')}: bad line", file=sys.stderr)
                    return 1
        return 0
    return daemon()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
