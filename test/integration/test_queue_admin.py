"""queue_admin - `ringmta queue show|hold|release|delete|flush` against a daemon.

Covers: hold keeps a message queued and listed as held (also across a
restart), release makes it due again and refuses a message that is not
held, delete removes it (logged, no bounce), flush with and without an id,
`queue show` fields and escaping, unknown and malformed ids, strict parsing
on the control socket, usage errors (exit 2), the socket's owner and mode,
refusal of a user who is neither root nor the daemon's (file mode and
SO_PEERCRED), a stuck client not holding off other admins or SIGTERM, a
stale socket replaced at start, and "is ringmta running?" without a daemon.

No delivery exists in this branch, so messages stay queued: the tests
assert the queue state the commands leave behind.
"""

import calendar
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time

import pytest

from conftest import daemon_user, make_message, parse_kv, send_ok, send_smtplib

# Reactors: more than one, so commands are routed to different shards.
REACTORS = 2


def control_path(d):
    return os.path.join(d.spool_dir, "control")


def listed(d):
    """listed - {id: parsed queue list line}."""
    return {m["id"]: m for m in d.queue_list()}


def iso_unix(s):
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


def raw_request(d, data, timeout=10):
    """raw_request - send bytes on the control socket, return all it answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(control_path(d))
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def check_fail(r, what, want_in_stderr, rc=1):
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == rc, f"{what}: got exit {r.returncode}, want {rc}; stderr: {err!r}"
    assert want_in_stderr in err, f"{what}: got stderr {err!r}, want it to contain {want_in_stderr!r}"
    return err


@pytest.fixture
def d(make_daemon):
    return make_daemon(reactors=REACTORS)


def test_hold_keeps_message_listed_as_held(d):
    qid = send_ok(d)
    other = send_ok(d)
    r = d.cli("queue", "hold", qid)
    assert f"held {qid}" in r.stdout.decode(), f"hold stdout: {r.stdout!r}"
    m = listed(d)
    assert m[qid]["state"] == "held", f"state=: got {m[qid]['state']!r}, want held"
    assert m[qid]["next"] == "held", f"next=: got {m[qid]['next']!r}, want held"
    assert m[qid]["rcpt_state"] == "held", f"rcpt_state=: got {m[qid]['rcpt_state']!r}"
    assert m[other]["state"] == "queued", "the other message must stay untouched"
    show = d.cli("queue", "show", qid).stdout.decode()
    assert "state: held" in show and "next: held" in show, f"show:\n{show}"
    # Holding again is fine, and says so.
    r = d.cli("queue", "hold", qid)
    assert "already" in r.stdout.decode(), f"second hold: {r.stdout!r}"
    # A hold is in the spool: it survives a restart.
    assert d.stop() == 0
    d.restart()
    m = listed(d)
    assert m[qid]["state"] == "held", f"after restart: got {m[qid]['state']!r}, want held"
    log = d.log_text()
    assert f"q={qid} control: hold result=ok" in log, "no hold log line"


def test_release_makes_it_due(d):
    qid = send_ok(d)
    r = d.cli("queue", "release", qid, check=False)
    check_fail(r, "release of a message not held", "not held")
    d.cli("queue", "hold", qid)
    before = time.time()
    r = d.cli("queue", "release", qid)
    assert f"released {qid}" in r.stdout.decode(), f"release stdout: {r.stdout!r}"
    m = listed(d)[qid]
    assert m["state"] == "queued", f"state=: got {m['state']!r}, want queued"
    assert m["rcpt_state"] == "pending", f"rcpt_state=: got {m['rcpt_state']!r}"
    nxt = iso_unix(m["next"])
    assert before - 2 <= nxt <= time.time() + 1, f"next=: got {m['next']}, want about now"


def test_delete_removes_it(d):
    keep = send_ok(d)
    qid = send_ok(d)
    r = d.cli("queue", "delete", qid)
    assert f"deleted {qid}" in r.stdout.decode(), f"delete stdout: {r.stdout!r}"
    assert d.queue_ids() == [keep], f"queue after delete: got {d.queue_ids()}, want [{keep}]"
    r = d.cli("queue", "cat", qid, check=False)
    check_fail(r, "cat of a deleted message", "no such message")
    assert f"q={qid} control: deleted by the administrator, no bounce" in d.log_text()
    r = d.cli("queue", "delete", qid, check=False)
    check_fail(r, "second delete", "no such message")
    # A held message can be deleted too.
    d.cli("queue", "hold", keep)
    d.cli("queue", "delete", keep)
    assert d.queue_ids() == []


def test_flush(d):
    held = send_ok(d)
    free = [send_ok(d) for _ in range(3)]
    d.cli("queue", "hold", held)
    r = d.cli("queue", "flush")
    assert "flushed" in r.stdout.decode(), f"flush stdout: {r.stdout!r}"
    m = listed(d)
    assert m[held]["state"] == "held", "flush must leave a held message held"
    for q in free:
        assert m[q]["state"] == "queued" and iso_unix(m[q]["next"]) <= time.time() + 1
    r = d.cli("queue", "flush", free[0])
    assert free[0] in r.stdout.decode(), f"flush ID stdout: {r.stdout!r}"
    r = d.cli("queue", "flush", held, check=False)
    check_fail(r, "flush of a held message", "release it first")
    assert "control: flush result=ok" in d.log_text()


def test_commands_reach_every_shard(d):
    """Messages land on both reactors; each command is routed by the id."""
    ids = [send_ok(d) for _ in range(8)]
    shards = {int(q[8:10], 16) for q in ids}
    for q in ids:
        d.cli("queue", "hold", q)
    m = listed(d)
    assert all(m[q]["state"] == "held" for q in ids), f"not all held: {m}"
    for q in ids:
        d.cli("queue", "release", q)
    assert all(v["state"] == "queued" for v in listed(d).values())
    if len(shards) < 2:
        pytest.skip(f"all 8 messages landed on shard(s) {shards}; routing to the "
                    "other reactor was not exercised")


def test_show_fields(d):
    token = "show-1"
    msg = make_message(token, subject="shown") + b""
    msg = msg.replace(b"X-Test-Token:", b"X-Evil: \x1b[31mred\r\nX-Test-Token:")
    code, text, qid = send_smtplib(
        d.port, msg, from_="sender@test.invalid",
        rcpts=("alice@example.com", "bob@example.org"),
        mail_opts=["RET=HDRS", "ENVID=env-42", "BODY=8BITMIME"],
        rcpt_opts=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;orig@example.com"])
    assert code == 250 and qid, f"send: got {code} {text!r}"
    out = d.cli("queue", "show", qid).stdout.decode("utf-8", "replace")
    fields = {}
    rcpts = []
    headers = []
    in_headers = False
    for line in out.splitlines():
        if in_headers:
            headers.append(line)
        elif line.startswith("  to="):
            rcpts.append(parse_kv(line))
        elif line == "headers:":
            in_headers = True
        elif ": " in line:
            k, v = line.split(": ", 1)
            fields[k] = v
    want = {"id": qid, "state": "queued", "sender": "sender@test.invalid",
            "envid": "env-42", "ret": "hdrs", "body": "8bitmime", "smtputf8": "no",
            "client": "127.0.0.1", "helo": "client.test.invalid", "recipients": "2"}
    for k, v in want.items():
        assert fields.get(k) == v, f"show {k}: got {fields.get(k)!r}, want {v!r}\n{out}"
    for k in ("size", "arrival", "next"):
        assert k in fields, f"show: no {k}: line\n{out}"
    assert fields["arrival"].endswith("Z")
    assert [r["to"] for r in rcpts] == ["alice@example.com", "bob@example.org"], out
    for r in rcpts:
        assert r["state"] == "pending" and r["attempts"] == "0", r
        assert r["notify"] == "success,failure", r
        assert r["orcpt"] == "rfc822;orig@example.com", r
        assert r["next"].endswith("Z"), r
    assert headers and headers[0].startswith("  Received: "), f"headers: {headers}"
    assert f"  Subject: shown {token}" in headers, f"headers: {headers}"
    assert "  X-Evil: \\x1b[31mred" in headers, f"escape sequence not escaped: {headers}"
    assert "\x1b" not in out, "show printed a raw escape character"
    assert not any("token " + token in h for h in headers), "show printed the body"


def test_unknown_id(d):
    send_ok(d)
    missing = "0000000000000001"   # shard 0, never issued
    for sub in ("hold", "release", "delete", "flush", "show", "cat"):
        r = d.cli("queue", sub, missing, check=False)
        check_fail(r, f"{sub} of an unknown id", "no such message")


def test_malformed_id(d):
    for bad in ("xyz", "0123456789abcdeg", "0123456789abcdef0", "../control"):
        for sub in ("hold", "release", "delete", "flush"):
            r = d.cli("queue", sub, bad, check=False)
            check_fail(r, f"{sub} {bad!r}", "malformed queue id")
        r = d.cli("queue", "show", bad, check=False)
        check_fail(r, f"show {bad!r}", "malformed queue id")
    # Upper case ids are accepted (lowercased).
    qid = send_ok(d)
    d.cli("queue", "hold", qid.upper())
    assert listed(d)[qid]["state"] == "held"


@pytest.mark.parametrize("req,kind", [
    (b"hold xyz\n", b"error bad-request malformed queue id"),
    (b"HOLD 0123456789abcdef\n", b"error bad-request unknown command"),
    (b"list\n", b"error bad-request unknown command"),
    (b"hold\n", b"error bad-request wrong arguments"),
    (b"flush \n", b"error bad-request wrong arguments"),
    (b"hold  0123456789abcdef\n", b"error bad-request wrong arguments"),
    (b"flush\r\n", b"error bad-request request contains a control"),
    (b"flush\nflush\n", b"error bad-request bytes after the request line"),
    (b"x" * 200, b"error bad-request request line too long"),
    (b"hold 0123456789abcdef\x00\n", b"error bad-request request contains a control"),
], ids=["bad-id", "upper-verb", "unknown-verb", "missing-id", "trailing-blank",
        "two-blanks", "crlf", "two-requests", "too-long", "nul"])
def test_strict_request_parsing(d, req, kind):
    out = raw_request(d, req)
    assert out.startswith(kind), f"{req[:40]!r}: got {out!r}, want {kind!r}..."
    assert out.endswith(b"\n") and out.count(b"\n") == 1, f"one reply line: {out!r}"
    # The daemon is still fine.
    assert raw_request(d, b"flush\n").startswith(b"ok ")


def test_usage_errors_exit_2(d):
    for args in (("hold",), ("release",), ("delete",), ("show",), ("cat",),
                 ("flush", "a", "b"), ("list", "x"), ("bogus",), ()):
        r = d.cli("queue", *args, check=False)
        assert r.returncode == 2, f"queue {' '.join(args)}: got exit {r.returncode}, want 2"
        assert b"usage" in r.stderr


def test_socket_owner_and_mode(d):
    st = os.lstat(control_path(d))
    assert stat.S_ISSOCK(st.st_mode), "control is not a socket"
    assert stat.S_IMODE(st.st_mode) == 0o600, f"mode: got {oct(stat.S_IMODE(st.st_mode))}, want 0o600"
    user = daemon_user()
    if user:
        assert st.st_uid == pwd.getpwnam(user).pw_uid, f"owner uid {st.st_uid}, want {user}'s"


def as_user(uid, gid, argv, timeout=30):
    """as_user - run argv as uid:gid with no supplementary groups."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv not installed")
    return subprocess.run([setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                           *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout)


def stranger(d):
    """stranger - a uid that is neither root nor the daemon's user."""
    user = daemon_user()
    daemon_uid = pwd.getpwnam(user).pw_uid if user else os.geteuid()
    for name in ("nobody", "daemon", "bin"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        if pw.pw_uid not in (0, daemon_uid):
            return pw.pw_uid, pw.pw_gid
    return 65533, 65533


def cli_argv(d, *args):
    return [d.binary, "-o", f"spool_dir={d.spool_dir}", *args]


def test_other_user_refused(d):
    if os.geteuid() != 0:
        pytest.skip("needs root to run the CLI as another user")
    qid = send_ok(d)
    uid, gid = stranger(d)
    # The file mode keeps a stranger out.
    r = as_user(uid, gid, cli_argv(d, "queue", "hold", qid))
    check_fail(r, "hold as a stranger", "cannot connect")
    # Defence in depth: with the socket (and the way to it) opened up, the
    # daemon still refuses the stranger by its SO_PEERCRED uid.
    os.chmod(d.spool_dir, 0o755)
    os.chmod(control_path(d), 0o666)
    r = as_user(uid, gid, cli_argv(d, "queue", "hold", qid))
    check_fail(r, "hold as a stranger, socket mode 0666", "permission denied")
    assert f"refused client uid={uid}" in d.log_text()
    assert listed(d)[qid]["state"] == "queued", "a refused hold changed the queue"
    # The daemon's own user is welcome.
    user = daemon_user()
    if user:
        pw = pwd.getpwnam(user)
        r = as_user(pw.pw_uid, pw.pw_gid, cli_argv(d, "queue", "hold", qid))
        assert r.returncode == 0, f"hold as {user}: exit {r.returncode} {r.stderr!r}"
        assert listed(d)[qid]["state"] == "held"


def test_stuck_client_does_not_block(d):
    qid = send_ok(d)
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(control_path(d))
    stuck.sendall(b"hold ")              # and nothing more
    t0 = time.monotonic()
    d.cli("queue", "hold", qid, timeout=20)
    took = time.monotonic() - t0
    assert took < 8, f"an admin behind a stuck client waited {took:.1f}s"
    assert listed(d)[qid]["state"] == "held"
    # The stuck client was cut off without an answer.
    stuck.settimeout(5)
    assert stuck.recv(100) == b""
    stuck.close()
    # And a stuck client does not hold off SIGTERM.
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(control_path(d))
    time.sleep(0.3)
    t0 = time.monotonic()
    assert d.stop() == 0
    took = time.monotonic() - t0
    stuck.close()
    assert took < 2.5, f"SIGTERM with a stuck admin client took {took:.1f}s"


def test_not_running(make_daemon):
    d = make_daemon(reactors=REACTORS)
    qid = send_ok(d)
    assert os.path.exists(control_path(d))
    assert d.stop() == 0
    assert not os.path.exists(control_path(d)), "control socket left after a clean stop"
    for args in (("hold", qid), ("release", qid), ("delete", qid), ("flush",)):
        r = d.cli("queue", *args, check=False)
        check_fail(r, f"queue {args[0]} without a daemon",
                   f"cannot connect to {control_path(d)}: is ringmta running?")
    # Reading still works without the daemon.
    assert d.queue_ids() == [qid]
    assert b"state: queued" in d.cli("queue", "show", qid).stdout


def test_stale_socket_replaced(make_daemon):
    d = make_daemon(start=False, reactors=REACTORS)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(control_path(d))          # bound, never listening: refused
    stale.close()
    d.start()
    qid = send_ok(d)
    d.cli("queue", "hold", qid)
    assert listed(d)[qid]["state"] == "held"


def test_kill9_leaves_socket_next_start_replaces(make_daemon):
    d = make_daemon(reactors=REACTORS)
    qid = send_ok(d)
    d.kill()
    r = d.cli("queue", "flush", check=False)
    check_fail(r, "flush after kill -9", "is ringmta running?")
    d.restart()
    d.cli("queue", "hold", qid)
    assert listed(d)[qid]["state"] == "held"
