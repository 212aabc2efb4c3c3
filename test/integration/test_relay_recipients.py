"""relay_recipients - only listed recipients of a relay domain are accepted.

Covers: with relay_recipients set, a relay domain's recipient is accepted
(250 2.1.5) only when its address or its @domain is listed; others get
Postfix's 550 5.1.1 "<addr>: Recipient address rejected: User unknown in
relay recipient table", from every client (mynetworks too), counted
against the error budget; case is ignored; a domain with the :any suffix
accepts everyone; SIGHUP re-reads the file (a new entry is accepted, a
removed one refused), and a bad file on reload keeps the old table and
logs FILE:LINE; a bad file at start or in --check-config is a FILE:LINE
error, and :list without relay_recipients is refused.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import Smtp, _tmp_parent, check_esc, daemon_user, make_message, send_smtplib

RCPTS = """# relay recipients for the integration test
alice@relay.example
Bob@RELAY.Example   OK
@catchall.example
"""

UNLISTED = "Recipient address rejected: User unknown in relay recipient table"
RELOAD_TIMEOUT_S = 15.0


@pytest.fixture
def map_dir():
    """map_dir - a directory the dropped-privilege daemon can read."""
    d = tempfile.mkdtemp(prefix="ringmta-maps-", dir=_tmp_parent())
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write_map(path, text):
    """write_map - replace the file in one rename, readable by everyone."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


@pytest.fixture
def rcpt_file(map_dir):
    path = os.path.join(map_dir, "relay_recipients")
    write_map(path, RCPTS)
    return path


def rcpt(c, addr):
    """rcpt - one RCPT TO in an open transaction: (code, last text line)."""
    code, lines = c.cmd(f"RCPT TO:<{addr}>")
    return code, lines[-1]


def assert_unlisted(code, text, addr):
    assert code == 550, f"RCPT {addr}: got {code} {text!r}, want 550"
    assert check_esc(code, text) == "5.1.1", f"RCPT {addr}: got {text!r}, want 5.1.1"
    assert text == f"5.1.1 <{addr}>: {UNLISTED}", \
        f"RCPT {addr}: got {text!r}, want Postfix's relay recipient text"


def session(d):
    c = Smtp(d.port)
    c.ehlo()
    code, lines = c.cmd("MAIL FROM:<sender@test.invalid>")
    assert code == 250, f"MAIL: got {code} {lines}"
    return c


def wait_log(d, needle, timeout=RELOAD_TIMEOUT_S):
    """wait_log - wait until the daemon's log holds needle; returns the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = d.log_text()
        if needle in log:
            return log
        time.sleep(0.05)
    pytest.fail(f"log never showed {needle!r}; tail:\n{d.log_tail()}")


@pytest.fixture
def outsider(make_daemon, rcpt_file):
    # 127.0.0.1 is outside 10.0.0.0/8: the test client is "the Internet".
    return make_daemon(mynetworks="10.0.0.0/8",
                       relay_domains="relay.example catchall.example open.example:any",
                       relay_recipients=rcpt_file)


def test_listed_recipient_accepted_and_queued(outsider):
    d = outsider
    code, text, qid = send_smtplib(d.port, make_message("listed"),
                                   rcpts=["alice@relay.example"])
    assert code == 250 and qid, f"end of DATA: got {code} {text!r}, want 250 queued"
    assert [m["id"] for m in d.queue_list()] == [qid]


def test_unlisted_recipient_550_5_1_1(outsider):
    d = outsider
    with session(d) as c:
        assert rcpt(c, "alice@relay.example")[0] == 250
        code, text = rcpt(c, "mallory@relay.example")
        assert_unlisted(code, text, "mallory@relay.example")
        # the transaction goes on with the accepted recipient
        code, lines = c.cmd("DATA")
        assert code == 354, f"DATA after one accepted rcpt: got {code} {lines}"
        c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        code, lines = c.reply()
        assert code == 250, f"end of DATA: got {code} {lines}"
    log = d.log_text()
    assert "reason=rcpt_unlisted lookup=unknown" in log, \
        f"no reject line for the unlisted recipient; tail:\n{d.log_tail()}"
    msgs = d.queue_list()
    assert len(msgs) == 1 and msgs[0]["rcpts"] == ["alice@relay.example"], \
        f"got {msgs}, want one message to alice only"


def test_domain_wildcard_accepts_every_local_part(outsider):
    with session(outsider) as c:
        for addr in ("anyone@catchall.example", "postmaster@catchall.example",
                     "x.y+z@CatchAll.Example"):
            code, text = rcpt(c, addr)
            assert code == 250, f"RCPT {addr} with @catchall.example listed: got {code} {text!r}"


def test_per_domain_any_accepts_everyone(outsider):
    with session(outsider) as c:
        code, text = rcpt(c, "nobody-listed@open.example")
        assert code == 250, f"open.example:any: got {code} {text!r}, want 250"
        code, text = rcpt(c, "nobody-listed@relay.example")
        assert_unlisted(code, text, "nobody-listed@relay.example")


def test_case_is_ignored(outsider):
    with session(outsider) as c:
        for addr in ("ALICE@Relay.Example", "bob@relay.example", "BOB@RELAY.EXAMPLE"):
            code, text = rcpt(c, addr)
            assert code == 250, f"RCPT {addr}: got {code} {text!r}, want 250 (case ignored)"


def test_not_relay_domain_still_relay_denied(outsider):
    with session(outsider) as c:
        code, text = rcpt(c, "alice@elsewhere.example")
        assert code == 554, f"foreign domain from outside: got {code} {text!r}, want 554"


def test_applies_to_mynetworks_too(make_daemon, rcpt_file):
    # default mynetworks is loopback: this client may relay anywhere,
    # but a relay domain's unknown recipient is still refused (Postfix's
    # relay_recipient_maps holds for every client)
    d = make_daemon(relay_domains="relay.example", relay_recipients=rcpt_file)
    with session(d) as c:
        code, text = rcpt(c, "mallory@relay.example")
        assert_unlisted(code, text, "mallory@relay.example")
        code, text = rcpt(c, "anyone@elsewhere.example")
        assert code == 250, f"mynetworks to a foreign domain: got {code} {text!r}, want 250"
        assert rcpt(c, "alice@relay.example")[0] == 250


def test_unlisted_counts_against_error_budget(make_daemon, rcpt_file):
    d = make_daemon(mynetworks="10.0.0.0/8", relay_domains="relay.example",
                    relay_recipients=rcpt_file, smtpd_error_limit="3")
    with session(d) as c:
        for i in range(2):
            code, text = rcpt(c, f"guess{i}@relay.example")
            assert_unlisted(code, text, f"guess{i}@relay.example")
        c.send(b"RCPT TO:<guess2@relay.example>\r\n")
        code, lines = c.reply()
        assert code == 550, f"third unknown: got {code} {lines}"
        code, lines = c.reply()
        assert code == 421, f"after the error budget: got {code} {lines}, want 421"
        assert c.expect_closed(), "server did not close after 421"


def hup_and_wait(d, generation):
    d.send_signal(signal.SIGHUP)
    return wait_log(d, f"SIGHUP: maps reloaded generation={generation} ")


def test_sighup_reloads_the_table(outsider, rcpt_file):
    d = outsider
    with session(d) as c:
        assert rcpt(c, "alice@relay.example")[0] == 250
        code, text = rcpt(c, "carol@relay.example")
        assert_unlisted(code, text, "carol@relay.example")
    write_map(rcpt_file, RCPTS.replace("alice@relay.example", "carol@relay.example"))
    hup_and_wait(d, 2)
    with session(d) as c:
        code, text = rcpt(c, "carol@relay.example")
        assert code == 250, f"new entry after SIGHUP: got {code} {text!r}, want 250"
        code, text = rcpt(c, "alice@relay.example")
        assert_unlisted(code, text, "alice@relay.example")
    assert d.alive()


def test_sighup_with_a_bad_file_keeps_the_old_table(outsider, rcpt_file):
    d = outsider
    write_map(rcpt_file, RCPTS + "carol@relay.example\nthis line has no at sign\n")
    d.send_signal(signal.SIGHUP)
    log = wait_log(d, "SIGHUP: keeping the old maps:")
    want = f"{rcpt_file}:6: \"this\": no '@'"
    assert want in log, f"reload error without FILE:LINE ({want!r}); tail:\n{d.log_tail()}"
    with session(d) as c:
        assert rcpt(c, "alice@relay.example")[0] == 250, "old table lost"
        code, text = rcpt(c, "carol@relay.example")
        assert_unlisted(code, text, "carol@relay.example")
    # and a good file afterwards is taken
    write_map(rcpt_file, RCPTS + "carol@relay.example\n")
    hup_and_wait(d, 2)
    with session(d) as c:
        assert rcpt(c, "carol@relay.example")[0] == 250


@pytest.mark.skipif(daemon_user() is None, reason="needs root: the daemon must drop privileges")
def test_sighup_unreadable_file_keeps_the_old_table(outsider, rcpt_file):
    d = outsider
    os.chmod(rcpt_file, 0o600)      # root's only; the daemon runs as another user
    d.send_signal(signal.SIGHUP)
    log = wait_log(d, "SIGHUP: keeping the old maps:")
    assert f"maps: open {rcpt_file}: Permission denied" in log, d.log_tail()
    with session(d) as c:
        assert rcpt(c, "alice@relay.example")[0] == 250, "old table lost"


def check(binary, *opts):
    av = [binary, "--check-config"]
    for o in opts:
        av += ["-o", o]
    return subprocess.run(av, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)


def test_check_config_reports_bad_map_line(ringmta_bin, map_dir):
    bad = os.path.join(map_dir, "rcpts")
    write_map(bad, "# fine\nalice@relay.example\n\nbad@\n")
    r = check(ringmta_bin, "relay_domains=relay.example", f"relay_recipients={bad}")
    err = r.stderr.decode()
    assert r.returncode == 1, f"bad map: got exit {r.returncode}, stderr {err!r}"
    assert f"{bad}:4: \"bad@\": empty domain" in err, f"got {err!r}, want FILE:LINE"
    tmap = os.path.join(map_dir, "transport")
    write_map(tmap, "example.com smtp:[h.example]:99999\n")
    r = check(ringmta_bin, f"transport_map={tmap}")
    err = r.stderr.decode()
    assert r.returncode == 1 and f"{tmap}:1: " in err and "port is not 1..65535" in err, \
        f"bad transport map: exit {r.returncode}, stderr {err!r}"
    good = os.path.join(map_dir, "good")
    write_map(good, RCPTS)
    r = check(ringmta_bin, "relay_domains=relay.example", f"relay_recipients={good}")
    assert r.returncode == 0, f"good map: exit {r.returncode}, stderr {r.stderr!r}"
    r = check(ringmta_bin, f"relay_recipients={os.path.join(map_dir, 'missing')}")
    assert r.returncode == 1 and b"maps: open " in r.stderr, \
        f"missing map: exit {r.returncode}, stderr {r.stderr!r}"


def test_check_config_list_needs_relay_recipients(ringmta_bin):
    r = check(ringmta_bin, "relay_domains=relay.example:list")
    assert r.returncode == 1, f"got exit {r.returncode}"
    assert b"conf: relay_domains: relay.example:list needs relay_recipients" in r.stderr, r.stderr


def test_bad_map_at_start_is_fatal(make_daemon, map_dir):
    bad = os.path.join(map_dir, "rcpts")
    write_map(bad, "alice@relay.example\n@\n")
    d = make_daemon(start=False, relay_domains="relay.example", relay_recipients=bad)
    p = subprocess.run(d.argv(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 1, f"start with a bad map: got exit {p.returncode}"
    assert f"{bad}:2: \"@\": empty domain".encode() in p.stderr, p.stderr


def test_sighup_under_load_every_answer_is_consistent(make_daemon, rcpt_file):
    """Reload five times while four clients keep asking; with an ASan build
    a set freed too early would be a use-after-free report at teardown."""
    import threading

    d = make_daemon(mynetworks="10.0.0.0/8", relay_domains="relay.example",
                    relay_recipients=rcpt_file, reactors="4", smtpd_error_limit="200")
    stop = threading.Event()
    bad = []
    counts = [0] * 4

    def client(n):
        # a new session every 100 rounds keeps within the error budget
        try:
            while not stop.is_set():
                with session(d) as c:
                    for _ in range(100):
                        code, text = rcpt(c, "alice@relay.example")
                        if code != 250:
                            bad.append(("alice", code, text))
                        code, text = rcpt(c, f"nobody{n}@relay.example")
                        if code != 550:
                            bad.append(("nobody", code, text))
                        counts[n] += 1
                        if stop.is_set():
                            break
                    c.cmd("QUIT")
        except Exception as e:      # reported below, not lost in the thread
            bad.append(("exception", repr(e)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for gen in range(2, 7):
            write_map(rcpt_file, RCPTS + f"extra{gen}@relay.example\n")
            hup_and_wait(d, gen)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not bad, f"inconsistent answers during reloads: {bad[:5]}"
    assert all(n > 0 for n in counts), f"a client made no progress: {counts}"
    print(f"\nrounds per client during 5 reloads: {counts}")
    with session(d) as c:
        assert rcpt(c, "extra6@relay.example")[0] == 250
        assert rcpt(c, "extra5@relay.example")[0] == 550
