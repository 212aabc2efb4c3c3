"""conftest - fixtures that run a real ringmta daemon for integration tests.

Owns:     one daemon per test (free loopback port, private temp spool dir),
          its stderr log, and the helpers that drive it over SMTP and through
          `ringmta queue list|cat`.
Must not: touch anything but 127.0.0.1, the temp dirs it made and the
          processes it started.
Interface:
    ringmta_bin          path of the binary (env RINGMTA_BIN, default
                         <repo>/build/ringmta); the session skips if absent.
    make_daemon(**opts)  start a daemon; keyword args become `-o key=value`
                         (underscores kept, e.g. smtpd_timeout="2s").
                         Returns a Daemon; all are stopped at teardown, and
                         sanitizer reports in their logs fail the test.
                         Outbound delivery is off (`delivery=no`) unless the
                         test passes delivery="yes": tests of the inbound
                         side must never send mail anywhere.
    has_config(bin, k=v) whether `ringmta --check-config -o k=v` accepts it
                         (feature probe, cached per binary and setting).
    daemon               a daemon with default options.
    Smtp                 raw-socket SMTP client (exact bytes, reply parsing).
    send_ok(daemon)      one normal smtplib transaction; returns the queue id.
Limits:   readiness 10 s (the CLI contract), every socket op and subprocess
          has a timeout, so no test can hang forever.
Env:      RINGMTA_BIN, RINGMTA_TEST_USER (user the daemon drops to when we
          are root; default `ringmta` if it exists, else `nobody`),
          RINGMTA_TEST_TMP (parent of spool dirs, default /var/tmp),
          RINGMTA_TEST_KEEP=1 (keep spool dirs and logs of passing tests).
Standards: RFC 5321 (replies), RFC 2034/3463 (enhanced status codes).
"""

import os
import pwd
import re
import resource
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RINGMTA_BIN = os.environ.get("RINGMTA_BIN", str(REPO / "build" / "ringmta"))
READY_TIMEOUT_S = 10.0      # CLI contract: banner within 10 s
STOP_TIMEOUT_S = 15.0       # SIGTERM to exit; generous for ASan builds
CLI_TIMEOUT_S = 60.0        # `ringmta queue ...` invocations

# Reply line: code, then '-' or ' ' (or nothing for a bare code).
REPLY_RE = re.compile(rb"^(\d{3})([ -]?)(.*)$")
# Enhanced status code (RFC 3463 2): class.subject.detail
ESC_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")
QUEUED_RE = re.compile(r"queued as (\S+)")
# The delivery test peers (smtp-sink, script sink, Postfix, Dovecot, unbound)
# and their fixtures.
pytest_plugins = ["peers"]

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "WARNING: ThreadSanitizer",
                   "ERROR: UndefinedBehaviorSanitizer")


def pytest_configure(config):
    """Raise our fd limit so daemons we start inherit it (idle-conn tests)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Record each phase's report on the item so fixtures see failures."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def free_port():
    """free_port - a loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon_user():
    """daemon_user - the account a root-started daemon should drop to."""
    if os.geteuid() != 0:
        return None
    user = os.environ.get("RINGMTA_TEST_USER")
    if user:
        return user
    for candidate in ("ringmta", "nobody"):
        try:
            pwd.getpwnam(candidate)
            return candidate
        except KeyError:
            continue
    return None


def check_esc(code, text):
    """check_esc - assert a reply text starts with a matching RFC 3463 code."""
    m = ESC_RE.match(text)
    assert m, f"reply {code} {text!r}: got no enhanced status code, want x.y.z"
    assert m.group(1) == str(code)[0], \
        f"reply {code} {text!r}: got ESC class {m.group(1)}, want {str(code)[0]}"
    return f"{m.group(1)}.{m.group(2)}.{m.group(3)}"


_CONFIG_PROBES = {}


def has_config(binary, *settings):
    """has_config - whether `binary --check-config -o k=v ...` exits 0 (cached).

    The feature probe for keys that newer binaries add (e.g. delivery):
    an unknown key or value makes --check-config exit 1.
    """
    key = (binary, settings)
    if key not in _CONFIG_PROBES:
        av = [binary, "--check-config"]
        for kv in settings:
            av += ["-o", kv]
        try:
            r = subprocess.run(av, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=CLI_TIMEOUT_S)
            _CONFIG_PROBES[key] = r.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _CONFIG_PROBES[key] = False
    return _CONFIG_PROBES[key]


def parse_kv(line):
    """parse_kv - split one `key=value key=value` line into a dict."""
    out = {}
    for tok in line.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            out[k] = v
    return out


class Daemon:
    """Daemon - one ringmta process on a loopback port with its own spool."""

    def __init__(self, binary, spool_dir, port, opts, conf_file=None,
                 log_path=None):
        self.binary = binary
        self.spool_dir = str(spool_dir)
        self.port = port
        self.opts = dict(opts)
        self.conf_file = conf_file
        self.log_path = log_path or os.path.join(
            os.path.dirname(self.spool_dir), os.path.basename(self.spool_dir) + ".log")
        self.proc = None
        self.starts = 0
        self.returncodes = []

    # --- process control --------------------------------------------------
    def argv(self):
        """argv - the daemon command line for the current options."""
        av = [self.binary]
        if self.conf_file:
            av += ["-c", str(self.conf_file)]
        opts = {"listen": f"127.0.0.1:{self.port}", "spool_dir": self.spool_dir}
        user = daemon_user()
        if user:
            opts["user"] = user
        opts.update(self.opts)
        for k, v in opts.items():
            if v is None:
                continue
            av += ["-o", f"{k}={v}"]
        return av

    def start(self):
        """start - launch the daemon and wait for its 220 banner."""
        self.starts += 1
        logf = open(self.log_path, "ab")
        logf.write(f"==== start #{self.starts}: {' '.join(self.argv())}\n".encode())
        logf.flush()
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=logf, stderr=logf)
        logf.close()
        self.wait_ready()
        return self

    def wait_ready(self):
        """wait_ready - poll-connect until a 220 banner arrives (10 s)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"ringmta exited with {self.proc.returncode} during start-up;"
                            f" log tail:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(2)
                    data = s.recv(512)
                    if data.startswith(b"220"):
                        # QUIT and wait for the close, so this probe is not
                        # still counted against connection limits.
                        try:
                            s.sendall(b"QUIT\r\n")
                            while s.recv(512):
                                pass
                        except OSError:
                            pass
                        return
                    last = data
            except OSError as e:
                last = e
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"ringmta not ready within {READY_TIMEOUT_S}s (last: {last!r});"
                    f" log tail:\n{self.log_tail()}")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT_S):
        """stop - send sig, wait for exit, return the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self.returncodes.append("hung")
                return "hung"
        rc = self.proc.returncode
        self.returncodes.append(rc)
        return rc

    def kill(self):
        """kill - SIGKILL (crash simulation); returns when it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc is not None:
            self.returncodes.append(self.proc.returncode)

    def restart(self):
        """restart - start again on the same port and spool."""
        assert not self.alive(), "restart of a running daemon"
        return self.start()

    # --- inspection -------------------------------------------------------
    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=40):
        return "\n".join(self.log_text().splitlines()[-n:])

    def rss_kb(self):
        """rss_kb - resident set size of the daemon (VmRSS, kB)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def cli(self, *args, check=True, timeout=CLI_TIMEOUT_S):
        """cli - run `ringmta [-c F] -o spool_dir=... ARGS`; returns CompletedProcess."""
        # options go before the command: `ringmta [-c F] [-o k=v] queue list`
        av = [self.binary]
        if self.conf_file:
            av += ["-c", str(self.conf_file)]
        av += ["-o", f"spool_dir={self.spool_dir}", *args]
        r = subprocess.run(av, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
        if check and r.returncode != 0:
            pytest.fail(f"{' '.join(av)}: exit {r.returncode}, stderr:\n"
                        f"{r.stderr.decode('utf-8', 'replace')}")
        return r

    def queue_list(self):
        """queue_list - parsed `ringmta queue list`, one dict per message."""
        r = self.cli("queue", "list")
        out = []
        for line in r.stdout.decode("utf-8", "surrogateescape").splitlines():
            if not line.strip():
                continue
            kv = parse_kv(line)
            assert "id" in kv, f"queue list line without id=: {line!r}"
            kv["_line"] = line
            kv["rcpts"] = [x for x in kv.get("to", "").split(",") if x]
            out.append(kv)
        return out

    def queue_ids(self):
        return [m["id"] for m in self.queue_list()]

    def queue_cat(self, qid):
        """queue_cat - the stored bytes of message qid."""
        return self.cli("queue", "cat", qid).stdout


def split_received(stored, sent):
    """split_received - check stored == <Received: header> + sent; return header.

    The daemon prepends exactly one (possibly folded) Received: header field
    and otherwise stores the client's bytes unchanged (dot-unstuffed).
    """
    assert stored.endswith(sent), (
        f"queue cat: stored bytes do not end with the sent message;\n"
        f"got tail {stored[-200:]!r},\nwant tail {sent[-200:]!r}")
    prefix = stored[: len(stored) - len(sent)]
    assert prefix.startswith(b"Received:"), \
        f"queue cat: got prefix {prefix[:80]!r}, want a Received: header first"
    assert prefix.endswith(b"\r\n"), f"Received header not CRLF-terminated: {prefix!r}"
    lines = prefix[:-2].split(b"\r\n")
    for cont in lines[1:]:
        assert cont[:1] in (b" ", b"\t"), \
            f"prepended text is more than one header field: {prefix!r}"
    return prefix


class Smtp:
    """Smtp - a raw SMTP client: exact bytes out, parsed replies in."""

    def __init__(self, port, timeout=10.0, read_banner=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.banner = None
        if read_banner:
            self.banner = self.reply()
            assert self.banner[0] == 220, f"banner: got {self.banner}, want 220"

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by server")
        self.buf += chunk

    def line(self):
        """line - one reply line without CRLF (bytes)."""
        while b"\n" not in self.buf:
            self._fill()
        ln, self.buf = self.buf.split(b"\n", 1)
        return ln.rstrip(b"\r")

    def reply(self):
        """reply - next full reply as (code, [text lines]) (str text)."""
        texts = []
        while True:
            ln = self.line()
            m = REPLY_RE.match(ln)
            assert m, f"malformed reply line: {ln!r}"
            texts.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) != b"-":
                return int(m.group(1)), texts

    def cmd(self, line):
        """cmd - send one command line (CRLF added) and read its reply."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.reply()

    def ehlo(self, name="client.test.invalid"):
        code, lines = self.cmd(f"EHLO {name}")
        assert code == 250, f"EHLO: got {code} {lines}, want 250"
        return lines

    def expect_closed(self, timeout=5.0):
        """expect_closed - True if the server closes (EOF/RST) within timeout."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        return False

    def pending(self, wait=0.3):
        """pending - bytes the server sent that nobody asked for (after wait)."""
        self.sock.settimeout(wait)
        extra = self.buf
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                extra += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        self.buf = b""
        return extra


def make_message(token, subject="test", body_lines=None, from_="sender@test.invalid",
                 to="rcpt@example.com"):
    """make_message - a small RFC 5322 message (CRLF) carrying a unique token."""
    body_lines = body_lines or [f"token {token}"]
    hdr = [f"From: <{from_}>", f"To: <{to}>", f"Subject: {subject} {token}",
           f"Message-ID: <{token}@test.invalid>", f"X-Test-Token: {token}"]
    return ("\r\n".join(hdr) + "\r\n\r\n" + "\r\n".join(body_lines) + "\r\n").encode()


def send_smtplib(port, msg, from_="sender@test.invalid", rcpts=("rcpt@example.com",),
                 mail_opts=(), rcpt_opts=(), timeout=15):
    """send_smtplib - one transaction with smtplib; returns (code, text, id)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as s:
        s.ehlo("client.test.invalid")
        code, resp = s.mail(from_, list(mail_opts))
        assert code == 250, f"MAIL: got {code} {resp!r}, want 250"
        for r in rcpts:
            code, resp = s.rcpt(r, list(rcpt_opts))
            assert code == 250, f"RCPT {r}: got {code} {resp!r}, want 250"
        code, resp = s.data(msg)
        text = resp.decode("utf-8", "replace")
        m = QUEUED_RE.search(text)
        return code, text, (m.group(1) if m else None)


def send_ok(daemon, token=None):
    """send_ok - a normal client's transaction must succeed; returns the id."""
    token = token or f"ok-{time.monotonic_ns()}"
    code, text, qid = send_smtplib(daemon.port, make_message(token))
    assert code == 250, f"end of DATA: got {code} {text!r}, want 250"
    assert qid, f"end of DATA: got {text!r}, want 'queued as <ID>'"
    check_esc(code, text)
    return qid


@pytest.fixture(scope="session")
def ringmta_bin():
    if not os.path.isfile(RINGMTA_BIN) or not os.access(RINGMTA_BIN, os.X_OK):
        pytest.skip(f"ringmta binary not found at {RINGMTA_BIN}"
                    " (build it with meson, or set RINGMTA_BIN)")
    return RINGMTA_BIN


def _tmp_parent():
    parent = os.environ.get("RINGMTA_TEST_TMP", "/var/tmp")
    os.makedirs(parent, exist_ok=True)
    return parent


@pytest.fixture
def make_daemon(request, ringmta_bin):
    """make_daemon - factory: make_daemon(conf_file=None, start=True, **opts)."""
    made = []
    dirs = []

    def factory(conf_file=None, start=True, **opts):
        # No test delivers unless it asks: mail to example.com must never
        # reach a real DNS server or host.
        opts.setdefault("delivery", "no")
        top = tempfile.mkdtemp(prefix="ringmta-it-", dir=_tmp_parent())
        os.chmod(top, 0o755)  # the dropped-privilege user must traverse it
        dirs.append(top)
        spool = os.path.join(top, "spool")
        os.mkdir(spool, 0o700)
        user = daemon_user()
        if user:
            pw = pwd.getpwnam(user)
            os.chown(spool, pw.pw_uid, pw.pw_gid)
        d = Daemon(ringmta_bin, spool, free_port(), opts, conf_file=conf_file,
                   log_path=os.path.join(top, "ringmta.log"))
        made.append(d)
        if start:
            d.start()
        return d

    yield factory

    problems = []
    for d in made:
        if d.alive():
            rc = d.stop()
            if rc not in (0,):
                problems.append(f"port {d.port}: exit status {rc} after SIGTERM at teardown")
        log = d.log_text()
        for mark in SANITIZER_MARKS:
            if mark in log:
                problems.append(f"port {d.port}: sanitizer report ({mark}) in {d.log_path}")
                break
    failed = any(getattr(request.node, "rep_" + w, None) is not None
                 and getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))
    keep = failed or problems or os.environ.get("RINGMTA_TEST_KEEP") == "1"
    for top in dirs:
        if keep:
            print(f"\n[kept] {top} (spool + ringmta.log)")
        else:
            shutil.rmtree(top, ignore_errors=True)
    if problems:
        for d in made:
            print(f"---- log of daemon on port {d.port} ----\n{d.log_tail(60)}")
        pytest.fail("; ".join(problems))


@pytest.fixture
def daemon(make_daemon):
    return make_daemon()
