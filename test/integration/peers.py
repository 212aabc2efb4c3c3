"""peers - the real and scripted next hops that outbound delivery is tested against.

Owns:     every peer process or thread it starts, each in a private temp dir
          (mkdtemp under RINGMTA_TEST_TMP, default /var/tmp), listening only
          on 127.0.0.0/8 or on a unix socket in that dir:
          - SmtpSink: Postfix's smtp-sink, each transaction captured to a
            file (-d), counted with its -c counters;
          - ScriptSink: a Python SMTP/LMTP server (threads, raw sockets)
            whose replies are scripted per command, per recipient and per
            attempt; it records every envelope and the exact data bytes;
          - PostfixPeer: a private Postfix instance (own config_directory,
            queue_directory, data_directory, maillog_file), final delivery
            into Maildirs (virtual(8)) or relaying on to a smarthost;
          - DovecotLmtp: a private Dovecot (dovecot -F -c CONF) speaking
            LMTP on a unix socket and on 127.0.0.1:PORT into Maildirs;
          - DnsZones: unbound serving the delivery test zones (MX hosts on
            127.0.0.x, null MX, NXDOMAIN, SERVFAIL, a zone that can be
            switched from SERVFAIL to an answer at run time).
          Plus the delivery-log parser (`deliver:` lines), helpers that
          drive a delivering daemon, the RFC 3464 bounce parser, and
          feature probes (engine, map files, queue admin).
Must not: listen, connect or resolve anywhere but loopback (127.0.0.0/8,
          ::1) and its own unix sockets; touch /etc/postfix, /etc/dovecot,
          /var/spool/postfix or a system daemon; forward DNS anywhere but
          its own refuser on 127.0.0.1.
Interface (pytest fixtures at the end, classes usable without pytest):
    smtp_sink_factory(**kw) -> SmtpSink     script_sink_factory(**kw) -> ScriptSink
    postfix_peer_factory(**kw) -> PostfixPeer   dovecot_factory(**kw) -> DovecotLmtp
    dns_zones -> DnsZones (module scope)    relay_daemon(**opts) -> a delivering Daemon
    deliver_engine, maps_feature, queue_admin_feature -> skip when the binary lacks it
    deliver_log(daemon) -> [dict]           wait_deliver(daemon, pred, timeout, what)
    statuses(records, rcpt) -> [status]     send_mail(daemon, rcpts, from_, token) -> Sent
    rcpt_reply(daemon, rcpt) -> (code, text)    wait_queue_empty(daemon, timeout)
    parse_dsn(bytes) -> (msg, per-message fields, [per-recipient fields])
    write_map(lines) -> path                strip_headers(data, names), token_of(data)
    wait_for(pred, timeout, what)           free_port_on(*hosts)
    tools/engine_double.py: a Python stand-in with the same CLI and contract,
    only for checking these tests' own mechanics (never used by default).
Limits:   every socket has a timeout (SOCK_TIMEOUT_S), every subprocess a
          wait limit; readiness 10 s; stop is SIGTERM, then SIGKILL after 10 s.
Skips:    a peer whose package is missing skips the test that asks for it
          (postfix: smtp-sink, postfix; dovecot-core + dovecot-lmtpd; unbound).
Standards: RFC 5321 (SMTP), RFC 2033 (LMTP: one reply per recipient after
          DATA), RFC 3463 (enhanced codes), RFC 7505 (null MX), Maildir
          (cr.yp.to/proto/maildir.html), smtp-sink(1), postconf(5), dovecot
          2.3 settings.
"""

import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import has_config

READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
SOCK_TIMEOUT_S = 60.0       # a peer's read timeout; stop() closes sooner
MAX_LINE_BYTES = 1 << 20    # a longer line from the client is a client bug
SBIN = ("/usr/sbin", "/sbin", "/usr/bin")


def find_bin(name):
    """find_bin - path of a program (also in /usr/sbin), or None."""
    return shutil.which(name) or next(
        (f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def need_bin(name, package):
    """need_bin - the program's path, or skip the test naming the package."""
    path = find_bin(name)
    if path is None:
        pytest.skip(f"{name} not installed (apt-get install {package})")
    return path


def tmp_dir(prefix):
    """tmp_dir - a fresh dir under RINGMTA_TEST_TMP that other users can traverse."""
    parent = os.environ.get("RINGMTA_TEST_TMP", "/var/tmp")
    os.makedirs(parent, exist_ok=True)
    d = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(d, 0o755)
    return Path(d)


def free_port_on(*hosts):
    """free_port_on - one TCP port that is free on every given 127.x address.

    MX deliveries use one port (smtp_tcp_port) for every MX host, so the
    sinks for 127.0.0.2, 127.0.0.3, ... must all get the same port.
    """
    hosts = hosts or ("127.0.0.1",)
    for _ in range(50):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        ok = True
        for h in hosts:
            try:
                with socket.socket() as t:
                    t.bind((h, port))
            except OSError:
                ok = False
                break
        if ok:
            return port
    raise AssertionError(f"no TCP port free on all of {hosts}")


def wait_for(pred, timeout, what, interval=0.05):
    """wait_for - poll pred() until truthy; return its value or fail naming what."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_banner(host, port, timeout=READY_TIMEOUT_S, want=b"220"):
    """wait_banner - until host:port answers with a greeting starting with want."""
    def probe():
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(512).startswith(want):
                    s.sendall(b"QUIT\r\n")
                    return True
        except OSError:
            return False
        return False
    wait_for(probe, timeout, f"a {want.decode()} greeting on {host}:{port}", interval=0.05)


def stop_proc(proc, sig=signal.SIGTERM, timeout=STOP_TIMEOUT_S):
    """stop_proc - signal one process we started, wait, SIGKILL if it hangs."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def addr_of(arg):
    """addr_of - the address inside `<...>` of a MAIL/RCPT argument, lower case."""
    m = re.search(r"<([^>]*)>", arg)
    return (m.group(1) if m else arg.split()[0] if arg.split() else "").lower()


def unstuff(lines):
    """unstuff - undo RFC 5321 4.5.2 dot-stuffing of a list of lines."""
    return [ln[1:] if ln.startswith(b".") else ln for ln in lines]


def strip_headers(data, names):
    """strip_headers - data without leading header fields named in names.

    Removes the fields (and their continuation lines) that hops prepend,
    e.g. Received or Return-Path, only from the top of the message; the
    rest must then equal what was sent.
    """
    names = {n.lower() for n in names}
    lines = data.split(b"\n")
    i = 0
    while i < len(lines):
        name = lines[i].split(b":", 1)[0].strip().lower().decode("latin-1")
        if ":" not in lines[i].decode("latin-1") or name not in names:
            break
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
    return b"\n".join(lines[i:])


# --- the delivery log ---------------------------------------------------------

DELIVER_RE = re.compile(r"\bdeliver: ")
KV_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_deliver_line(line):
    """parse_deliver_line - one `deliver:` line as a dict (quotes removed).

    Keys come from the whole line, so q= counts whether it stands in the
    line's prefix (`r0 q=ID deliver: ...`) or after `deliver:`; to= loses
    its angle brackets (`to=<a@b>` as Postfix writes it), to_raw keeps them.
    """
    out = {}
    for k, v in KV_RE.findall(line):
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[k] = v
    if "to" in out:
        out["to_raw"] = out["to"]
        if out["to"].startswith("<") and out["to"].endswith(">"):
            out["to"] = out["to"][1:-1]
    out["_line"] = line
    return out


def deliver_log(daemon):
    """deliver_log - every `deliver:` record of the daemon's log, in order."""
    return [parse_deliver_line(ln) for ln in daemon.log_text().splitlines()
            if DELIVER_RE.search(ln) and "status=" in ln]


def wait_deliver(daemon, pred, timeout, what):
    """wait_deliver - poll the delivery log until pred(records) is truthy; the records."""
    box = {}

    def check():
        box["recs"] = deliver_log(daemon)
        return pred(box["recs"])
    try:
        wait_for(check, timeout, what, interval=0.1)
    except AssertionError as e:
        raise AssertionError(f"{e}; deliver: lines so far:\n" + "\n".join(
            r["_line"] for r in deliver_log(daemon)) + f"\nlog tail:\n{daemon.log_tail(30)}")
    return box["recs"]


def statuses(records, rcpt):
    """statuses - the status= values logged for one recipient, in order."""
    return [r.get("status") for r in records if r.get("to", "").lower() == rcpt.lower()]


def engine_available(binary):
    """engine_available - whether this ringmta has the delivery engine (issue 4)."""
    return has_config(binary, "delivery=yes")


_PROBES = {}


def maps_available(binary):
    """maps_available - whether this ringmta loads transport_map/relay_recipients files.

    The keys were parsed (as paths) long before the maps existed; a binary
    with the maps refuses a file with a bad line at --check-config.
    """
    key = ("maps", binary)
    if key not in _PROBES:
        d = tmp_dir("ringmta-probe-")
        bad = d / "transport_map"
        bad.write_text("this line is not a route\n")
        try:
            r = subprocess.run([binary, "--check-config", "-o", f"transport_map={bad}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            _PROBES[key] = r.returncode != 0
        except (OSError, subprocess.TimeoutExpired):
            _PROBES[key] = False
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return _PROBES[key]


def queue_admin_available(binary):
    """queue_admin_available - whether `ringmta queue hold|release|...` exists (its --help)."""
    key = ("admin", binary)
    if key not in _PROBES:
        try:
            r = subprocess.run([binary, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=60)
            _PROBES[key] = b"queue hold" in r.stdout
        except (OSError, subprocess.TimeoutExpired):
            _PROBES[key] = False
    return _PROBES[key]


# --- (a) Postfix smtp-sink ------------------------------------------------------

@dataclass
class Captured:
    """Captured - one transaction as a sink recorded it."""
    mail_from: str
    rcpts: list
    data: bytes            # the message as received: CRLF lines, dot-unstuffed
    helo: str = ""
    peer: str = ""
    meta: dict = field(default_factory=dict)

    def header(self, name):
        """header - the first value of header field name (unfolded), or None."""
        head = self.data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        m = re.search(rf"(?im)^{re.escape(name)}:[ \t]*(.*(?:\r\n[ \t].*)*)", head)
        return re.sub(r"\r\n[ \t]+", " ", m.group(1)).strip() if m else None


class SmtpSink:
    """SmtpSink - Postfix smtp-sink on host:port, capturing each message to a file.

    smtp-sink writes its dump files dot-unstuffed with LF line ends;
    messages() turns them back into CRLF lines (a bare CR or LF the client
    sent cannot be told apart: use ScriptSink for byte-exact checks).
    count() is smtp-sink's own counter (-c).
    """

    MESG_RE = re.compile(rb"mesg=(\d+)")

    def __init__(self, host="127.0.0.1", port=None, args=(), lmtp=False, name="smtp-sink.test",
                 capture=True):
        self.bin = need_bin("smtp-sink", "postfix")
        self.host = host
        self.port = port or free_port_on(host)
        self.dir = tmp_dir("ringmta-smtp-sink-")
        self.dump = self.dir / "dump"
        self.dump.mkdir()
        self.out = self.dir / "counters.out"
        self.args = list(args)
        self.lmtp = lmtp
        self.name = name
        self.capture = capture
        self.proc = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam("nobody")
            os.chown(self.dump, pw.pw_uid, pw.pw_gid)

    def argv(self):
        av = [self.bin, "-c", "-h", self.name]
        if os.geteuid() == 0:
            av += ["-u", "nobody"]     # smtp-sink refuses root without -u
        if self.capture:
            av += ["-d", f"{self.dump}/%Y%m%d%H%M%S."]
        if self.lmtp:
            av.append("-L")
        return av + self.args + [f"{self.host}:{self.port}", "256"]

    def start(self):
        with open(self.out, "wb") as f:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=subprocess.STDOUT)
        wait_banner(self.host, self.port)
        return self

    def stop(self):
        stop_proc(self.proc)

    def count(self):
        """count - messages smtp-sink has received ("." answered), from its counters."""
        try:
            got = self.MESG_RE.findall(self.out.read_bytes())
        except OSError:
            return 0
        return int(got[-1]) if got else 0

    def wait_count(self, n, timeout=20):
        """wait_count - until at least n messages arrived; returns the count."""
        return wait_for(lambda: self.count() >= n and self.count(), timeout,
                        f"{n} messages at smtp-sink {self.host}:{self.port}"
                        f" (have {self.count()})")

    def messages(self):
        """messages - each captured transaction (oldest first) as a Captured."""
        out = []
        files = sorted(self.dump.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))
        for f in files:
            raw = f.read_bytes()
            if not raw.endswith(b"\n\n"):
                continue                # transaction still in progress
            lines = raw[:-1].split(b"\n")[:-1]
            meta = {"rcpts": []}
            i = 0
            while i < len(lines):
                ln = lines[i].decode("utf-8", "replace")
                if ln.startswith("X-Rcpt-Args: "):
                    meta["rcpts"].append(ln[13:])
                elif ln.startswith("X-Mail-Args: "):
                    meta["mail"] = ln[13:]
                elif ln.startswith("X-Helo-Args: "):
                    meta["helo"] = ln[13:]
                elif ln.startswith("X-Client-Addr: "):
                    meta["peer"] = ln[15:]
                elif ln.startswith("X-Client-Proto: "):
                    meta["proto"] = ln[16:]
                elif ln.startswith("Received: ") and "(smtp-sink)" in lines[i + 1].decode(
                        "utf-8", "replace"):
                    i += 3          # smtp-sink's own three-line Received
                    break
                i += 1
            body = lines[i:]
            data = b"\r\n".join(body) + b"\r\n" if body else b""
            out.append(Captured(mail_from=addr_of(meta.get("mail", "")),
                                rcpts=[addr_of(r) for r in meta["rcpts"]], data=data,
                                helo=meta.get("helo", ""), peer=meta.get("peer", ""),
                                meta={"file": str(f), "proto": meta.get("proto")}))
        return out

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# --- (b) the scriptable SMTP/LMTP sink ---------------------------------------------

@dataclass
class Txn:
    """Txn - one transaction seen by a ScriptSink."""
    conn: int
    helo: str
    mail_from: str
    mail_args: str
    rcpts: list                     # accepted (2xx) recipients, in order
    rejected: list                  # (addr, reply) refused at RCPT
    data: bytes = b""               # dot-unstuffed, CRLF as sent
    replies: list = field(default_factory=list)   # end-of-data replies (LMTP: one per rcpt)
    t_end: float = 0.0
    ahead: int = 0                  # client bytes already here when its end of data was read,
                                    # before any reply to it: the next command pipelined behind

    @property
    def ok(self):
        return any(r.startswith("2") for r in self.replies)

    def as_captured(self):
        return Captured(mail_from=self.mail_from, rcpts=list(self.rcpts), data=self.data,
                        helo=self.helo)


def pick(rule, key, attempt, default, *extra):
    """pick - a reply from a script rule for key at attempt (0-based).

    rule: None (default), "NNN text" (always), [r0, r1, ...] (per attempt,
    the last one repeats), {key: rule, "*": rule} (per key, lower case),
    or a callable(key, attempt, *extra) returning a reply or None.
    """
    if rule is None:
        return default
    if isinstance(rule, str):
        return rule
    if isinstance(rule, (list, tuple)):
        return pick(rule[min(attempt, len(rule) - 1)], key, attempt, default, *extra) if rule \
            else default
    if isinstance(rule, dict):
        sub = rule.get(key.lower(), rule.get("*")) if key is not None else rule.get("*")
        return pick(sub, key, attempt, default, *extra)
    if callable(rule):
        r = rule(key, attempt, *extra)
        return default if r is None else r
    raise TypeError(f"bad script rule {rule!r}")


HANG = "HANG"            # a rule may answer HANG: read on, never reply
CLOSE = "CLOSE"          # or CLOSE: drop the connection without a reply


class ScriptSink:
    """ScriptSink - an SMTP (or LMTP) server on host:port whose every reply is scripted.

    Keyword arguments (all optional):
      lmtp        speak LMTP (LHLO, one reply per accepted recipient after DATA)
      unix_path   listen on this unix socket instead ("auto": one in a
                  private temp dir, removed at cleanup)
      greeting    the greeting line ("421 4.3.2 busy" makes every session a
                  refusal: 421 then close); HANG: accept TCP and never answer
                  (a tarpit); CLOSE: close right after accept
      close_after_greeting  send the 220, then close
      ehlo, mail, rcpt, data, eom, rset   rules (see pick()); the key is the
                  address for mail/rcpt, the first accepted recipient for
                  data/eom; attempt counts earlier commands with that key.
                  eom may also be a callable(key, attempt, txn).
      lmtp_eom    LMTP per-recipient end-of-data rule, keyed by recipient
      eom_delay   seconds to wait before answering end of data
      extensions  EHLO keywords (default PIPELINING 8BITMIME
                  ENHANCEDSTATUSCODES SIZE)
    Records: txns (every transaction that reached end of data), conns
    (connections accepted), max_active (most open at once; racy: a
    client's next connect may beat our read of its last QUIT), max_in_txn
    (most transactions between MAIL and end-of-data reply at once), closed
    (connections ended, with the time), hangs (time a HANG began),
    commands (every command line, with its connection number).
    """

    def __init__(self, host="127.0.0.1", port=None, lmtp=False, unix_path=None,
                 name="script-sink.test", greeting=None, close_after_greeting=False,
                 ehlo=None, mail=None, rcpt=None, data=None, eom=None, rset=None,
                 lmtp_eom=None, eom_delay=0.0,
                 extensions=("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE 104857600")):
        self.host = host
        self.dir = None
        if unix_path == "auto":         # a socket in a private dir, removed at cleanup
            self.dir = tmp_dir("ringmta-script-sink-")
            unix_path = str(self.dir / "lmtp.sock")
        self.unix_path = unix_path
        self.port = None if unix_path else (port or free_port_on(host))
        self.lmtp = lmtp
        self.name = name
        self.greeting = greeting or f"220 {name} {'LMTP' if lmtp else 'ESMTP'} script sink"
        self.close_after_greeting = close_after_greeting
        self.rules = {"ehlo": ehlo, "mail": mail, "rcpt": rcpt, "data": data, "eom": eom,
                      "rset": rset, "lmtp_eom": lmtp_eom}
        self.eom_delay = eom_delay
        self.extensions = list(extensions)
        self.lock = threading.Lock()
        self.txns = []
        self.conns = 0
        self.active = 0
        self.max_active = 0       # most connections open at the same time
        self.in_eom_delay = 0     # transactions waiting out eom_delay now
        self.quit_conns = set()   # connections that said QUIT (no longer active)
        self.in_txn = set()       # connections between MAIL and the end-of-data reply
        self.max_in_txn = 0       # most transactions open at once (race-free concurrency)
        self.closed = []
        self.hangs = []
        self.commands = []        # (conn, line) of every command line
        self.attempts = {}        # (phase, key) -> count
        self.socks = set()
        self.threads = []
        self.listener = None
        self.stopping = False

    # --- life cycle ---
    def start(self):
        if self.unix_path:
            ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if os.path.exists(self.unix_path):
                os.unlink(self.unix_path)
            ls.bind(self.unix_path)
            os.chmod(self.unix_path, 0o666)
        else:
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind((self.host, self.port))
        ls.listen(128)
        ls.settimeout(0.2)
        self.listener = ls
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def stop(self):
        self.stopping = True
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(timeout=5)
        if self.listener:
            self.listener.close()
            self.listener = None
        if self.unix_path and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)

    def cleanup(self):
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def address(self):
        return self.unix_path or f"{self.host}:{self.port}"

    # --- inspection ---
    def delivered(self):
        """delivered - [(rcpt, Txn)] for every recipient a 2xx end-of-data reply accepted."""
        out = []
        with self.lock:
            txns = list(self.txns)
        for t in txns:
            if self.lmtp:
                out += [(r, t) for r, rep in zip(t.rcpts, t.replies) if rep.startswith("2")]
            elif t.ok:
                out += [(r, t) for r in t.rcpts]
        return out

    def delivered_to(self, rcpt):
        return [t for r, t in self.delivered() if r == rcpt.lower()]

    def count(self):
        """count - transactions whose end of data got a 2xx (any recipient)."""
        with self.lock:
            return sum(1 for t in self.txns if t.ok)

    def wait_count(self, n, timeout=20):
        return wait_for(lambda: self.count() >= n and self.count(), timeout,
                        f"{n} accepted messages at {self.address} (have {self.count()})")

    def attempt_count(self, phase, key):
        with self.lock:
            return self.attempts.get((phase, key.lower() if key else key), 0)

    # --- the server ---
    def _accept_loop(self):
        while not self.stopping:
            try:
                s, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.conns += 1
                self.active += 1
                self.max_active = max(self.max_active, self.active)
                cid = self.conns
                self.socks.add(s)
            t = threading.Thread(target=self._serve, args=(s, cid), daemon=True)
            t.start()
            self.threads.append(t)

    def _count(self, phase, key):
        with self.lock:
            k = (phase, key.lower() if key else key)
            n = self.attempts.get(k, 0)
            self.attempts[k] = n + 1
            return n

    def _serve(self, s, cid):
        s.settimeout(SOCK_TIMEOUT_S)
        f = s.makefile("rb")
        try:
            self._session(s, f, cid)
        except (OSError, ValueError, EOFError):
            pass
        finally:
            with self.lock:
                self.closed.append((cid, time.monotonic()))
                self.in_txn.discard(cid)
                if cid not in self.quit_conns:
                    self.active -= 1
                self.socks.discard(s)
            try:
                f.close()
                s.close()
            except OSError:
                pass

    def _hang(self, f):
        """_hang - answer nothing; read until the client gives up (or stop)."""
        with self.lock:
            self.hangs.append(time.monotonic())
        while not self.stopping:
            if not f.readline(MAX_LINE_BYTES):
                return
        raise EOFError

    def _say(self, s, f, reply):
        """_say - send a reply (multi-line if it contains newlines); HANG/CLOSE act."""
        if reply == HANG:
            self._hang(f)
        if reply == CLOSE:
            raise EOFError
        lines = reply.split("\n")
        code = lines[0][:3]
        out = "".join(f"{code}-{ln[4:] if ln[:3] == code else ln}\r\n" for ln in lines[:-1])
        out += f"{lines[-1]}\r\n"
        s.sendall(out.encode())

    def _session(self, s, f, cid):
        g = self.greeting
        if g == CLOSE:
            return
        if g == HANG:
            self._hang(f)
        self._say(s, f, g)
        if g.startswith("4") or g.startswith("5") or self.close_after_greeting:
            return
        helo = ""
        txn = None
        while True:
            line = f.readline(MAX_LINE_BYTES)
            if not line:
                return
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            with self.lock:
                self.commands.append((cid, text))
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO", "LHLO"):
                if (verb == "LHLO") != self.lmtp:
                    self._say(s, f, "500 5.5.1 wrong greeting for this protocol")
                    continue
                helo = arg
                txn = None
                r = pick(self.rules["ehlo"], arg, self._count("ehlo", arg), None)
                if r is None:
                    r = "\n".join([f"250 {self.name}"] + [f"250 {e}" for e in self.extensions]) \
                        if verb != "HELO" else f"250 {self.name}"
                self._say(s, f, r)
            elif verb == "MAIL":
                a = addr_of(arg.split(":", 1)[1] if ":" in arg else arg)
                r = pick(self.rules["mail"], a, self._count("mail", a), "250 2.1.0 Ok")
                if r.startswith("2"):
                    txn = Txn(conn=cid, helo=helo, mail_from=a, mail_args=arg, rcpts=[],
                              rejected=[])
                    with self.lock:
                        self.in_txn.add(cid)
                        self.max_in_txn = max(self.max_in_txn, len(self.in_txn))
                self._say(s, f, r)
            elif verb == "RCPT":
                a = addr_of(arg.split(":", 1)[1] if ":" in arg else arg)
                if txn is None:
                    self._say(s, f, "503 5.5.1 Error: need MAIL command")
                    continue
                r = pick(self.rules["rcpt"], a, self._count("rcpt", a), "250 2.1.5 Ok")
                (txn.rcpts.append(a) if r.startswith("2") else txn.rejected.append((a, r)))
                self._say(s, f, r)
            elif verb == "DATA":
                if txn is None or not txn.rcpts:
                    self._say(s, f, "554 5.5.1 Error: no valid recipients")
                    continue
                key = txn.rcpts[0]
                r = pick(self.rules["data"], key, self._count("data", key),
                         "354 End data with <CR><LF>.<CR><LF>")
                self._say(s, f, r)
                if not r.startswith("3"):
                    txn = None
                    continue
                txn.data = self._read_data(f)
                txn.ahead = self._bytes_ahead(s, f)
                if self.eom_delay:
                    with self.lock:
                        self.in_eom_delay += 1
                    end = time.monotonic() + self.eom_delay
                    while time.monotonic() < end and not self.stopping:
                        time.sleep(0.02)
                    with self.lock:
                        self.in_eom_delay -= 1
                    if self.stopping:
                        return
                if self.lmtp:
                    for a in txn.rcpts:
                        r = pick(self.rules["lmtp_eom"], a, self._count("lmtp_eom", a),
                                 f"250 2.0.0 <{a}> Saved", txn)
                        if r in (HANG, CLOSE):
                            self._say(s, f, r)
                        txn.replies.append(r)
                else:
                    r = pick(self.rules["eom"], key, self._count("eom", key),
                             f"250 2.0.0 Ok: queued as S{cid}x{len(self.txns)}", txn)
                    if r in (HANG, CLOSE):
                        self._say(s, f, r)
                    txn.replies.append(r)
                txn.t_end = time.monotonic()
                with self.lock:
                    self.txns.append(txn)
                s.sendall("".join(r.replace("\n", "\r\n") + "\r\n"
                                  for r in txn.replies).encode())
                txn = None
                with self.lock:
                    self.in_txn.discard(cid)
            elif verb == "RSET":
                txn = None
                with self.lock:
                    self.in_txn.discard(cid)
                self._say(s, f, pick(self.rules["rset"], None, 0, "250 2.0.0 Ok"))
            elif verb == "NOOP":
                self._say(s, f, "250 2.0.0 Ok")
            elif verb == "QUIT":
                with self.lock:             # done: not active while the close is on its way
                    self.quit_conns.add(cid)
                    self.active -= 1
                self._say(s, f, "221 2.0.0 Bye")
                return
            else:
                self._say(s, f, "502 5.5.2 Error: command not recognized")

    def _bytes_ahead(self, s, f):
        """_bytes_ahead - how many bytes the client sent past its end of data
        without waiting for our reply (buffered or on the socket), without blocking."""
        old = s.gettimeout()
        s.settimeout(0.0)
        try:
            return len(f.peek(1))
        except (BlockingIOError, OSError):
            return 0
        finally:
            s.settimeout(old)

    def _read_data(self, f):
        lines = []
        while True:
            ln = f.readline(MAX_LINE_BYTES)
            if not ln:
                raise EOFError
            if ln == b".\r\n":
                break
            lines.append(ln[1:] if ln.startswith(b".") else ln)
        return b"".join(lines)


# --- (c) a real Postfix as the next hop ------------------------------------------

POSTFIX_MAIN = """\
# written by test/integration/peers.py -- private test instance
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-peer-{port}
maillog_file = {dir}/maillog
myhostname = {name}
mydomain = test.invalid
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
in_flow_delay = 0
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
virtual_mailbox_domains = {domains}
virtual_mailbox_base = {dir}/mail
virtual_mailbox_maps = texthash:{dir}/etc/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
relayhost = {relayhost}
{extra}
"""

POSTFIX_MASTER = """\
# written by test/integration/peers.py -- no chroot, one listener
{listen} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
proxywrite unix - - n -  1 proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
local     unix  - n n -  - local
virtual   unix  - n n -  - virtual
lmtp      unix  - - n -  - lmtp
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class PostfixPeer:
    """PostfixPeer - a private Postfix on 127.0.0.1:port (needs root).

    users: {"alice@pf.test", ...}: final delivery by virtual(8) into
    DIR/mail/<domain>/<user>/ (Maildir), unknown users of those domains
    rejected at RCPT (550 5.1.1). relayhost: "[127.0.0.1]:PORT" relays
    every other domain on (from mynetworks). extra: more main.cf lines.
    """

    def __init__(self, users=("alice@pf.test", "bob@pf.test"), relayhost="", extra="",
                 port=None, name="postfix-peer.test"):
        self.postfix = need_bin("postfix", "postfix")
        if os.geteuid() != 0:
            pytest.skip("a private Postfix instance needs root (its master drops privileges)")
        self.port = port or free_port_on("127.0.0.1")
        self.dir = tmp_dir("ringmta-postfix-peer-")
        self.etc = self.dir / "etc"
        self.users = [u.lower() for u in users]
        self.relayhost = relayhost
        self.extra = extra
        self.name = name
        self.started = False

    def _write(self):
        for d in ("etc", "queue", "data", "mail"):
            (self.dir / d).mkdir(exist_ok=True)
        pf = pwd.getpwnam("postfix")
        nobody = pwd.getpwnam("nobody")
        os.chown(self.dir / "data", pf.pw_uid, pf.pw_gid)
        os.chown(self.dir / "mail", nobody.pw_uid, nobody.pw_gid)
        domains = sorted({u.split("@", 1)[1] for u in self.users})
        (self.etc / "vmailbox").write_text(
            "".join(f"{u} {u.split('@')[1]}/{u.split('@')[0]}/\n" for u in self.users))
        (self.etc / "main.cf").write_text(POSTFIX_MAIN.format(
            dir=self.dir, port=self.port, name=self.name, domains=" ".join(domains),
            uid=nobody.pw_uid, gid=nobody.pw_gid, relayhost=self.relayhost, extra=self.extra))
        (self.etc / "master.cf").write_text(POSTFIX_MASTER.format(listen=f"127.0.0.1:{self.port}"))

    def _run(self, *args, check=True):
        r = subprocess.run([self.postfix, "-c", str(self.etc), *args], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"postfix -c {self.etc} {' '.join(args)}: exit {r.returncode}:"
                                 f" {r.stdout.decode(errors='replace')}\n{self.log_tail()}")
        return r

    def start(self):
        self._write()
        self._run("check", check=False)
        self._run("start")
        self.started = True
        wait_banner("127.0.0.1", self.port)
        return self

    def stop(self):
        if not self.started:
            return
        self._run("stop", check=False)
        pidf = self.dir / "queue" / "pid" / "master.pid"
        def gone():
            try:
                pid = int(pidf.read_text().strip())
                os.kill(pid, 0)
                return False
            except (OSError, ValueError):
                return True
        wait_for(gone, STOP_TIMEOUT_S, "postfix master to exit")
        self.started = False

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n=30):
        try:
            return "\n".join((self.dir / "maillog").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def maildir(self, user):
        local, domain = user.lower().split("@", 1)
        return self.dir / "mail" / domain / local

    def mailbox(self, user):
        """mailbox - the messages in user's Maildir (new/ and cur/), bytes each."""
        return maildir_messages(self.maildir(user))

    def queue_count(self):
        """queue_count - messages still in the instance's queue (any state)."""
        n = 0
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            for _, _, files in os.walk(self.dir / "queue" / sub):
                n += len(files)
        return n


def maildir_messages(md):
    """maildir_messages - contents of the files in a Maildir's new/ and cur/, oldest first."""
    files = []
    for sub in ("new", "cur"):
        d = Path(md) / sub
        if d.is_dir():
            files += [p for p in d.iterdir() if p.is_file()]
    files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
    return [p.read_bytes() for p in files]


# --- (d) Dovecot LMTP ---------------------------------------------------------

DOVECOT_CONF = """\
# written by test/integration/peers.py -- private test instance
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = ringmta-test-{port}
protocols = lmtp
ssl = no
listen = 127.0.0.1
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
mail_location = maildir:~/Maildir
first_valid_uid = 1
hostname = dovecot.test
postmaster_address = postmaster@dovecot.test
lmtp_rcpt_check_quota = no
passdb {{
  driver = passwd-file
  args = {dir}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {dir}/users
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
service anvil {{
  chroot =
}}
{extra}
"""


class DovecotLmtp:
    """DovecotLmtp - a private Dovecot LMTP server (needs root).

    users: local parts; any domain is accepted, the user is its local
    part (username_format=%n). LMTP on unix socket DIR/run/lmtp and on
    127.0.0.1:port; mail in DIR/mail/<user>/Maildir; log DIR/dovecot.log.
    stop() then start() again keeps the port, the socket path and the mail.
    """

    def __init__(self, users=("alice", "bob", "carol"), port=None, extra=""):
        self.dovecot = need_bin("dovecot", "dovecot-core")
        if not os.path.exists("/usr/lib/dovecot/lmtp"):
            pytest.skip("dovecot's LMTP server is not installed (apt-get install dovecot-lmtpd)")
        if os.geteuid() != 0:
            pytest.skip("a private Dovecot instance needs root")
        self.port = port or free_port_on("127.0.0.1")
        self.dir = tmp_dir("ringmta-dovecot-")
        self.users = list(users)
        self.extra = extra
        self.proc = None
        self.conf = self.dir / "dovecot.conf"
        self.socket = str(self.dir / "run" / "lmtp")
        assert len(self.socket) < 100, f"unix socket path too long: {self.socket}"

    def _write(self):
        for d in ("run", "state", "mail"):
            (self.dir / d).mkdir(exist_ok=True)
        nobody = pwd.getpwnam("nobody")
        os.chown(self.dir / "mail", nobody.pw_uid, nobody.pw_gid)
        (self.dir / "users").write_text("".join(
            f"{u}:{{PLAIN}}unused:{nobody.pw_uid}:{nobody.pw_gid}::{self.dir}/mail/{u}::\n"
            for u in self.users))
        self.conf.write_text(DOVECOT_CONF.format(dir=self.dir, port=self.port, extra=self.extra))

    def start(self):
        self._write()
        with open(self.dir / "dovecot.out", "ab") as out:
            self.proc = subprocess.Popen([self.dovecot, "-F", "-c", str(self.conf)],
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        try:
            wait_banner("127.0.0.1", self.port)
            wait_for(lambda: os.path.exists(self.socket), READY_TIMEOUT_S, "dovecot lmtp socket")
        except AssertionError as e:
            raise AssertionError(f"{e}; dovecot log:\n{self.log_tail()}")
        return self

    def stop(self):
        stop_proc(self.proc)
        self.proc = None
        # the next start must not find the old master's sockets/pid
        wait_for(lambda: not (self.dir / "run" / "master.pid").exists() or
                 not _pid_alive(self.dir / "run" / "master.pid"), STOP_TIMEOUT_S,
                 "dovecot master to exit")

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n=30):
        text = ""
        for f in ("dovecot.out", "dovecot.log"):
            try:
                text += (self.dir / f).read_text(errors="replace")
            except OSError:
                pass
        return "\n".join(text.splitlines()[-n:])

    def maildir(self, user):
        return self.dir / "mail" / user / "Maildir"

    def mailbox(self, user):
        return maildir_messages(self.maildir(user))


def _pid_alive(pidfile):
    try:
        os.kill(int(Path(pidfile).read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


# --- (e) DNS: unbound with the delivery zones --------------------------------------

DELIVER_ZONE = """
  local-zone: "test." static
  local-data: "multi.test. 300 IN MX 20 mx2.multi.test."
  local-data: "multi.test. 300 IN MX 10 mx1.multi.test."
  local-data: "mx1.multi.test. 300 IN A 127.0.0.2"
  local-data: "mx2.multi.test. 300 IN A 127.0.0.3"
  local-data: "fallback.test. 300 IN MX 10 down.fallback.test."
  local-data: "fallback.test. 300 IN MX 20 up.fallback.test."
  local-data: "down.fallback.test. 300 IN A 127.0.0.4"
  local-data: "up.fallback.test. 300 IN A 127.0.0.5"
  local-data: "sender.test. 300 IN MX 10 mx.sender.test."
  local-data: "mx.sender.test. 300 IN A 127.0.0.6"
  local-data: "amx.test. 300 IN A 127.0.0.7"
  local-data: "relay.test. 300 IN A 127.0.0.8"
  local-data: "null.test. 300 IN MX 0 ."
  local-data: "nohost.test. 300 IN MX 10 nowhere.nohost.test."
  local-data: "big.test. 300 IN MX 10 mx1.multi.test."
  local-zone: "fail.example." transparent
  local-zone: "flaky.example." transparent
"""
# big.test: 60 more MX records whose names are two 40-octet labels each,
# over 6 KiB in all, so the answer never fits in UDP and goes over TCP
DELIVER_ZONE += "".join(
    f'  local-data: "big.test. 300 IN MX {20 + i} mx{i:02d}-{"long-label-" * 3}{i:06d}'
    f'.{"second-label-" * 3}{i:01d}.big{i:02d}.test."\n' for i in range(60))

UNBOUND_CONF = """server:
  interface: 127.0.0.1
  port: {port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  do-ip6: no
  do-not-query-localhost: no
  module-config: "iterator"
  auto-trust-anchor-file: ""
  root-hints: ""
  num-threads: 1
  infra-host-ttl: 0
  access-control: 127.0.0.0/8 {access}
{zone}
{forward}
remote-control:
  control-enable: {control}
  control-interface: 127.0.0.1
  control-port: {cport}
  control-use-cert: no
"""


def free_udp_port():
    """free_udp_port - a loopback port free for UDP and TCP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as t:
                t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise AssertionError("no free UDP+TCP port")


def dns_udp_reply(port, name, qtype=15, timeout=1.0, edns=0):
    """dns_udp_reply - one raw UDP query to 127.0.0.1:port (with an EDNS0
    OPT record of that UDP size when edns); the reply, or None on timeout."""
    import struct
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    pkt = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 1 if edns else 0) + qname + \
        struct.pack(">HH", qtype, 1)
    if edns:
        pkt += b"\0" + struct.pack(">HHIH", 41, edns, 0, 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(pkt, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except OSError:
            return None


def dns_rcode(port, name, qtype=15, timeout=1.0):
    """dns_rcode - one raw UDP query to 127.0.0.1:port; the rcode, or None on timeout."""
    data = dns_udp_reply(port, name, qtype, timeout)
    return None if data is None else data[3] & 0x0F


class UnboundProc:
    """UnboundProc - one throwaway unbound on 127.0.0.1:port (optionally controllable)."""

    def __init__(self, workdir, name, access, zone="", forward="", control=False):
        self.bin = need_bin("unbound", "unbound")
        self.port = free_udp_port()
        self.cport = free_port_on("127.0.0.1") if control else 0
        self.dir = Path(workdir)
        self.conf = self.dir / f"{name}.conf"
        self.log = self.dir / f"{name}.log"
        self.conf.write_text(UNBOUND_CONF.format(
            port=self.port, dir=self.dir, access=access, zone=zone, forward=forward,
            control="yes" if control else "no", cport=self.cport or 8953))
        self.proc = None

    def start(self):
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen([self.bin, "-d", "-c", str(self.conf)],
                                         stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        return self

    def wait_ready(self, name):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"unbound exited {self.proc.returncode}: "
                                     f"{self.log.read_text(errors='replace')}")
            return dns_rcode(self.port, name, timeout=0.2) is not None
        wait_for(ready, READY_TIMEOUT_S, f"unbound on 127.0.0.1:{self.port}")

    def control(self, *args):
        ctl = need_bin("unbound-control", "unbound")
        r = subprocess.run([ctl, "-c", str(self.conf), *args], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=10)
        assert r.returncode == 0 and b"error" not in r.stdout.lower(), \
            f"unbound-control {' '.join(args)}: exit {r.returncode}: {r.stdout!r}"
        return r.stdout.decode()

    def stop(self):
        stop_proc(self.proc, timeout=5)


class DnsZones:
    """DnsZones - unbound serving DELIVER_ZONE on 127.0.0.1:port (dns_servers).

    Names under fail.example SERVFAIL (forwarded to a refuser); names under
    flaky.example SERVFAIL until heal_flaky() gives them an MX record, at
    run time through unbound-control (no restart, nothing cached).
    """

    def __init__(self, zone=DELIVER_ZONE):
        self.dir = tmp_dir("ringmta-dns-")
        self.zone = zone
        self.refuser = self.server = None

    def start(self):
        for attempt in range(5):
            self.refuser = UnboundProc(self.dir, f"refuser{attempt}", "refuse").start()
            fwd = "".join(f'forward-zone:\n  name: "{z}."\n  forward-addr: 127.0.0.1@'
                          f'{self.refuser.port}\n' for z in ("fail.example", "flaky.example"))
            self.server = UnboundProc(self.dir, f"zones{attempt}", "allow", zone=self.zone,
                                      forward=fwd, control=True).start()
            time.sleep(0.2)
            busy = [u for u in (self.refuser, self.server) if u.proc.poll() is not None and
                    "already in use" in u.log.read_text(errors="replace")]
            if not busy:
                break
            self.server.stop()
            self.refuser.stop()
        self.refuser.wait_ready("anything.example")
        self.server.wait_ready("multi.test")
        return self

    @property
    def port(self):
        return self.server.port

    @property
    def dns_servers(self):
        """dns_servers - the value for ringmta's dns_servers key."""
        return f"127.0.0.1:{self.port}"

    def heal_flaky(self, name, mx_host="mx1.multi.test"):
        """heal_flaky - make name (under flaky.example) answer MX 10 mx_host from now on."""
        self.server.control("local_zone", f"{name}.", "static")
        self.server.control("local_data", f"{name}. 300 IN MX 10 {mx_host}.")

    def reset_flaky(self, name):
        """reset_flaky - name SERVFAILs again (no error if it was never healed)."""
        ctl = need_bin("unbound-control", "unbound")
        subprocess.run([ctl, "-c", str(self.server.conf), "local_zone_remove", f"{name}."],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)

    def stop(self):
        for u in (self.server, self.refuser):
            if u:
                u.stop()

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# --- driving a delivering daemon -----------------------------------------------------

@dataclass
class Sent:
    """Sent - one message accepted by the daemon: its token, bytes and queue id."""
    token: str
    msg: bytes
    qid: str
    rcpts: list
    from_: str


def deliver_message(token, from_="s@sender.test", to="r@example.test", body_lines=None):
    """deliver_message - a message with every header a next hop could add if missing.

    Date and Message-ID are present, so a Postfix next hop adds nothing but
    its trace fields; X-Test-Token tells the copies apart.
    """
    body_lines = body_lines or [f"token {token}", ".a line that gets dot-stuffed",
                                "last line"]
    hdr = [f"From: <{from_ or 'mailer-daemon@sender.test'}>", f"To: <{to}>",
           f"Subject: delivery {token}", "Date: Mon, 23 Nov 2026 12:00:00 +0000",
           f"Message-ID: <{token}@sender.test>", f"X-Test-Token: {token}"]
    return ("\r\n".join(hdr) + "\r\n\r\n" + "\r\n".join(body_lines) + "\r\n").encode()


def send_mail(daemon, rcpts, from_="s@sender.test", token=None, msg=None, timeout=15):
    """send_mail - one accepted transaction (every RCPT and DATA 250); returns Sent."""
    token = token or f"tok{time.monotonic_ns()}"
    rcpts = list(rcpts)
    msg = msg if msg is not None else deliver_message(token, from_=from_, to=rcpts[0])
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=timeout) as s:
        s.ehlo("client.test")
        code, resp = s.mail(from_)
        assert code == 250, f"MAIL FROM:<{from_}>: got {code} {resp!r}, want 250"
        for r in rcpts:
            code, resp = s.rcpt(r)
            assert code == 250, f"RCPT {r}: got {code} {resp!r}, want 250"
        code, resp = s.data(msg)
    text = resp.decode("utf-8", "replace")
    assert code == 250, f"end of data: got {code} {text!r}, want 250"
    m = re.search(r"queued as (\S+)", text)
    assert m, f"end of data: got {text!r}, want 'queued as ID'"
    return Sent(token=token, msg=msg, qid=m.group(1), rcpts=rcpts, from_=from_)


def rcpt_reply(daemon, rcpt, from_="s@sender.test", timeout=15):
    """rcpt_reply - (code, text) of RCPT TO:<rcpt> in a fresh session (then RSET/QUIT)."""
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=timeout) as s:
        s.ehlo("client.test")
        code, resp = s.mail(from_)
        assert code == 250, f"MAIL: got {code} {resp!r}"
        code, resp = s.rcpt(rcpt)
        s.rset()
    return code, resp.decode("utf-8", "replace")


def token_of(data):
    """token_of - the X-Test-Token of a received message (bytes), or None."""
    m = re.search(rb"(?im)^X-Test-Token: (\S+)", data)
    return m.group(1).decode() if m else None


def wait_queue_empty(daemon, timeout=20):
    """wait_queue_empty - until `ringmta queue list` prints nothing."""
    try:
        wait_for(lambda: not daemon.queue_list(), timeout, "the queue to empty", interval=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}: still queued: {[m['_line'] for m in daemon.queue_list()]};"
                             f" log tail:\n{daemon.log_tail(30)}")


_MAP_DIRS = []


def pytest_sessionfinish(session, exitstatus):
    """pytest_sessionfinish - remove the map files' dirs (write_map) unless asked to keep."""
    if os.environ.get("RINGMTA_TEST_KEEP") != "1":
        for d in _MAP_DIRS:
            shutil.rmtree(d, ignore_errors=True)


def write_map(lines, name="map"):
    """write_map - a map file (transport_map, relay_recipients) readable by the daemon.

    The file lives until the end of the test session (pytest_sessionfinish).
    """
    d = tmp_dir("ringmta-map-")
    _MAP_DIRS.append(d)
    f = d / name
    f.write_text("".join(ln + "\n" for ln in lines))
    os.chmod(f, 0o644)
    return str(f)


def parse_dsn(data):
    """parse_dsn - a bounce as (message, report fields, per-recipient field dicts).

    Checks the RFC 3464/6522 shape on the way: multipart/report with
    report-type=delivery-status and a message/delivery-status part.
    """
    import email
    import email.policy
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", \
        f"bounce: got Content-Type {msg.get_content_type()}, want multipart/report"
    assert (msg.get_param("report-type") or "").lower() == "delivery-status", \
        f"bounce: got report-type {msg.get_param('report-type')!r}, want delivery-status"
    parts = msg.get_payload()
    ds = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    assert ds, f"bounce: no message/delivery-status part in {[p.get_content_type() for p in parts]}"
    # compat32 parses message/delivery-status as a list of header blocks
    blocks = ds[0].get_payload()
    if isinstance(blocks, str):
        blocks = [email.message_from_string(b) for b in re.split(r"\r?\n\r?\n", blocks)
                  if b.strip()]
    fields = [{k.lower(): v for k, v in b.items()} for b in blocks]
    assert len(fields) >= 2, f"bounce: got {len(fields)} DSN field blocks, want per-message + " \
                             f"per-recipient"
    return msg, fields[0], fields[1:]


# --- fixtures -------------------------------------------------------------------

def _factory(request, cls):
    made = []

    def make(start=True, **kw):
        p = cls(**kw)
        made.append(p)
        if start:
            p.start()
        return p

    yield make
    failed = any(getattr(getattr(request.node, "rep_" + w, None), "failed", False)
                 for w in ("setup", "call"))
    keep = failed or os.environ.get("RINGMTA_TEST_KEEP") == "1"
    for p in reversed(made):
        try:
            p.stop()
        finally:
            if keep and getattr(p, "dir", None):
                print(f"\n[kept] {type(p).__name__} {p.dir}")
            else:
                p.cleanup()


@pytest.fixture
def smtp_sink_factory(request):
    """smtp_sink_factory - SmtpSink(host, port, args, lmtp, ...) started; stopped at teardown."""
    yield from _factory(request, SmtpSink)


@pytest.fixture
def script_sink_factory(request):
    """script_sink_factory - ScriptSink(**script) started; stopped at teardown."""
    yield from _factory(request, ScriptSink)


@pytest.fixture
def postfix_peer_factory(request):
    """postfix_peer_factory - PostfixPeer(users, relayhost, extra) started; stopped at teardown."""
    yield from _factory(request, PostfixPeer)


@pytest.fixture
def dovecot_factory(request):
    """dovecot_factory - DovecotLmtp(users) started; stopped at teardown."""
    yield from _factory(request, DovecotLmtp)


@pytest.fixture(scope="module")
def dns_zones():
    """dns_zones - DnsZones started once per module (skips without unbound)."""
    need_bin("unbound", "unbound")
    z = DnsZones().start()
    try:
        yield z
    finally:
        z.stop()
        z.cleanup()


@pytest.fixture
def deliver_engine(ringmta_bin):
    """deliver_engine - skip unless this ringmta has the delivery engine (issue 4)."""
    if not engine_available(ringmta_bin):
        pytest.skip("no delivery engine in this ringmta yet (--check-config -o delivery=yes"
                    " fails): issue 4")
    return ringmta_bin


@pytest.fixture
def maps_feature(deliver_engine):
    """maps_feature - skip unless transport_map and relay_recipients files are loaded."""
    if not maps_available(deliver_engine):
        pytest.skip("this ringmta does not load transport_map/relay_recipients files yet"
                    " (a bad map line passes --check-config)")


@pytest.fixture
def queue_admin_feature(deliver_engine):
    """queue_admin_feature - skip unless `ringmta queue hold|release|delete|flush|show` exist."""
    if not queue_admin_available(deliver_engine):
        pytest.skip("this ringmta has no queue hold/release/delete/flush/show yet")


@pytest.fixture
def relay_daemon(make_daemon, deliver_engine, tmp_path):
    """relay_daemon - factory: a delivering ringmta with fast test timings.

    Keyword args are extra -o settings. Unless given, dns_servers points at
    a closed loopback UDP port, so no lookup can leave the machine, and
    the retry/timeout keys are seconds, not minutes.
    """
    def make(**opts):
        base = {"delivery": "yes", "dns_servers": f"127.0.0.1:{dead_udp_port()}",
                "retry_schedule": "1s 2s", "connect_timeout": "2s",
                "smtp_command_timeout": "3s", "connection_idle_timeout": "2s",
                "myhostname": "ringmta.test"}
        base.update(opts)
        return make_daemon(**base)
    return make


def dead_udp_port():
    """dead_udp_port - a loopback UDP port with nothing bound (queries get ICMP refused)."""
    return free_udp_port()
