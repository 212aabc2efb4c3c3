/*
 * test_dsn - DSN composition: every case is written with output buffers
 * of 1, 7, 64 and 4096 bytes and the original fed whole, byte by byte and
 * in 13-byte pieces (each piece before a PROT_NONE page); all runs must
 * give identical bytes. Each result is checked here (structure, fields,
 * line lengths, no injected lines) and then parsed back by Python's email
 * package (test/unit/dsn_check.py) when /usr/bin/python3 is there.
 * Also: dsn_should_notify() (RFC 3461 4.1), dsn_init() errors, dates,
 * a boundary inside the original, a 10 MB original through a 4 KB buffer.
 */
#include "ringmta/dsn.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "t.h"

/* The cases start from MSG()'s defaults and override some of them. */
#if defined(__clang__)
#pragma clang diagnostic ignored "-Winitializer-overrides"
#else
#pragma GCC diagnostic ignored "-Woverride-init"
#endif

/* D - a diagnostic literal and its length. */
#define D(s) .diag = (s), .diag_len = sizeof(s) - 1

#define PYTHON "/usr/bin/python3"
#define NOW 1795460099		/* Mon, 23 Nov 2026 18:54:59 +0000 */

static const char *checker;	/* path of dsn_check.py, NULL: skip */
static int n_python_runs;

/* struct out - a growing output buffer for the tests (the module itself
 * never allocates). */
struct out {
	uint8_t *p;
	size_t len, cap;
};

static void out_add(struct out *o, const uint8_t *p, size_t n)
{
	if (o->len + n > o->cap) {
		o->cap = (o->len + n) * 2 + 1024;
		o->p = realloc(o->p, o->cap);
		if (o->p == NULL) { perror("realloc"); exit(2); }
	}
	memcpy(o->p + o->len, p, n);
	o->len += n;
}

/*
 * compose - write the DSN of m for original orig[0..olen) with out_cap
 * bytes of output at a time and in_piece bytes of input (0: whole).
 * Returns the final dsn_write() result; *o gets the bytes, *in_total the
 * input used.
 */
static int compose(const struct dsn_msg *m, const char *orig, size_t olen,
		   size_t out_cap, size_t in_piece, struct out *o,
		   size_t *in_total)
{
	struct dsn_writer *w = malloc(sizeof(*w));
	uint8_t *buf = malloc(out_cap);
	size_t off = 0, used, n, guard_len = 0;
	void *gbase = NULL;
	const uint8_t *piece = NULL;
	size_t piece_len = 0, piece_off = 0;
	int rc, loops = 0;

	o->len = 0;
	*in_total = 0;
	rc = dsn_init(w, m);
	if (rc != 0)
		goto done;
	for (;;) {
		if (piece_off == piece_len && off < olen && piece_len == piece_off) {
			if (gbase)
				t_guard_free(gbase, guard_len);
			piece_len = in_piece == 0 || olen - off < in_piece ? olen - off : in_piece;
			piece = t_guard_copy(orig + off, piece_len, &gbase, &guard_len);
			piece_off = 0;
		}
		rc = dsn_write(w, piece ? piece + piece_off : NULL, piece_len - piece_off,
			       off + (piece_len - piece_off) == olen, buf, out_cap,
			       &used, &n);
		out_add(o, buf, n);
		piece_off += used;
		off += used;
		*in_total += used;
		if (rc != DSN_OUT_FULL && rc != DSN_NEED_ORIGINAL)
			break;
		if (rc == DSN_OUT_FULL && n != out_cap) {
			fprintf(stderr, "OUT_FULL with %zu of %zu bytes\n", n, out_cap);
			rc = -9999;
			break;
		}
		if (rc == DSN_NEED_ORIGINAL && piece_off != piece_len) {
			fprintf(stderr, "NEED_ORIGINAL with input left\n");
			rc = -9998;
			break;
		}
		if (++loops > 50000000) {
			rc = -9997;
			break;
		}
	}
done:
	if (gbase)
		t_guard_free(gbase, guard_len);
	free(buf);
	free(w);
	return rc;
}

/* has - true if needle occurs in the output. */
static bool has(const struct out *o, const char *needle)
{
	return memmem(o->p, o->len, needle, strlen(needle)) != NULL;
}

/* line_check - every line CRLF-terminated, no bare CR/LF, <= 998 octets
 * (the original excepted when skip_from is not NULL: from there to the
 * end only CRLF pairing is checked). Returns a description or NULL. */
static const char *line_check(const struct out *o)
{
	size_t i, start = 0;

	for (i = 0; i < o->len; i++) {
		if (o->p[i] == '\r') {
			if (i + 1 >= o->len || o->p[i + 1] != '\n')
				return "bare CR";
			if (i - start > DSN_LINE_MAX)
				return "line longer than 998";
			i++;
			start = i + 1;
		} else if (o->p[i] == '\n') {
			return "bare LF";
		}
	}
	return start == o->len ? NULL : "last line not CRLF-terminated";
}

/* line_starts - true if some line of the output starts with s. */
static bool line_starts(const struct out *o, const char *s)
{
	size_t n = strlen(s), i;

	for (i = 0; i + n <= o->len; i++)
		if ((i == 0 || o->p[i - 1] == '\n') && memcmp(o->p + i, s, n) == 0)
			return true;
	return false;
}

/* python_check - run dsn_check.py on the output with args; a failure is
 * a test failure, a missing python a skip line. */
static void python_check(const struct out *o, const char *const *args)
{
	char path[4096], cmd[8192], line[1024];
	const char *tmp = getenv("TMPDIR");
	size_t n = 0, i;
	FILE *p;
	int fd, status;

	if (checker == NULL)
		return;
	snprintf(path, sizeof(path), "%s/test_dsn.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	fd = mkstemp(path);
	if (fd < 0 || write(fd, o->p, o->len) != (ssize_t)o->len) {
		perror("test_dsn: temp file");
		exit(2);
	}
	close(fd);
	n = (size_t)snprintf(cmd, sizeof(cmd), "%s %s %s", PYTHON, checker, path);
	for (i = 0; args[i]; i++) {
		const char *a = args[i];

		/* single-quote for the shell */
		n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, " '");
		for (; *a && n + 8 < sizeof(cmd); a++) {
			if (*a == '\'')
				n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, "'\\''");
			else
				cmd[n++] = *a;
		}
		n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, "'");
	}
	cmd[n] = '\0';
	p = popen(cmd, "r");
	if (p == NULL) {
		perror("popen");
		exit(2);
	}
	line[0] = '\0';
	while (fgets(line + strlen(line), (int)(sizeof(line) - strlen(line)), p) &&
	       strlen(line) < sizeof(line) - 2)
		;
	status = pclose(p);
	T_CHECK(status == 0, "python email check: got \"%s\", want ok (file kept: %s)",
		strtok(line, "\n") ? line : "", path);
	if (status == 0)
		unlink(path);
	n_python_runs++;
}

/*
 * struct dcase - one DSN case: the message, its original, what must and
 * must not appear, and the arguments for dsn_check.py.
 */
struct dcase {
	const char *name;
	struct dsn_msg m;
	const char *orig;
	enum dsn_original want_original;
	int want_body;
	const char *must[8];
	const char *must_not[8];
	const char *py[16];
};

static const char orig_plain[] =
	"Received: from client.example ([192.0.2.1])\r\n"
	"\tby mx.test; Mon, 23 Nov 2026 18:00:00 +0000\r\n"
	"From: Alice <alice@example.org>\r\n"
	"To: bob@dest.example\r\n"
	"Subject: quarterly report\r\n"
	"Message-ID: <orig-1@example.org>\r\n"
	"\r\n"
	"Hello Bob,\r\n"
	"BODY-MARKER the numbers are attached.\r\n"
	"--not-our-boundary\r\n";

static const char orig_8bit[] =
	"From: alice@example.org\r\n"
	"Subject: caf\xc3\xa9\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: text/plain; charset=utf-8\r\n"
	"Content-Transfer-Encoding: 8bit\r\n"
	"\r\n"
	"Cr\xc3\xa8me br\xc3\xbbl\xc3\xa9" "e BODY-MARKER\r\n";

static const struct dsn_rcpt r_two[] = {
	{ .addr = "bob@dest.example", .orcpt = "rfc822;Bob+2BTag@dest.example",
	  .action = DSN_ACTION_FAILED, .status = "5.1.1", .remote_mta = "mx1.dest.example",
	  .reply_code = 550, .reply_esc = "5.1.1",
	  D("<bob@dest.example>: Recipient address rejected:\nUser unknown in virtual mailbox table"),
	  .last_attempt_unix = NOW - 10 },
	{ .addr = "carol@nomx.example", .action = DSN_ACTION_FAILED, .status = "5.1.10",
	  D("domain has a null MX (RFC 7505)") },
};

static const struct dsn_rcpt r_delay[] = {
	{ .addr = "dave@slow.example", .action = DSN_ACTION_DELAYED, .status = "4.4.1",
	  .remote_mta = "mx.slow.example", D("connect to mx.slow.example[192.0.2.9]:25: Connection refused"),
	  .last_attempt_unix = NOW - 60, .retry_until_unix = NOW + 4 * 86400 },
};

static const struct dsn_rcpt r_success[] = {
	{ .addr = "erin@ok.example", .action = DSN_ACTION_DELIVERED, .status = "2.0.0",
	  .remote_mta = "mx.ok.example", .reply_code = 250, .reply_esc = "2.0.0",
	  D("Ok: queued as 4XyZ"), .last_attempt_unix = NOW },
};

/* hostile strings: CR/LF, a fake boundary line, a fake header, NUL */
static const char evil_reply[] = "bad\r\nBcc: victim@example.net\r\n\r\n--BOUND-1\r\n"
				 "Content-Type: text/html\r\n\r\n<script>\0x\x01\x7f";
static const struct dsn_rcpt r_evil[] = {
	{ .addr = "frank@evil.example\r\nBcc: victim@example.net", .orcpt = "rfc822;x+0D+0ABcc:+20v@e.net",
	  .action = DSN_ACTION_FAILED, .status = "5.7.1", .remote_mta = "mx.evil.example\r\nX-Injected: 1",
	  .reply_code = 554, .reply_esc = "5.7.1\r\nX-Injected: 2", .diag = evil_reply,
	  .diag_len = sizeof(evil_reply) - 1 },
};

/* a 3000-byte reply without spaces, and one with many short words */
static char long_word[3000], many_words[6001];
static struct dsn_rcpt r_long[] = {
	{ .addr = "gina@long.example", .action = DSN_ACTION_FAILED, .status = "5.0.0",
	  .remote_mta = "mx.long.example", .reply_code = 550, .diag = long_word,
	  .diag_len = sizeof(long_word) },
	{ .addr = "hank@long.example", .action = DSN_ACTION_FAILED, .status = "5.0.0",
	  .remote_mta = "mx.long.example", .reply_code = 550, .diag = many_words,
	  .diag_len = sizeof(many_words) - 1 },
};

static const struct dsn_rcpt r_utf8[] = {
	{ .addr = "j\xc3\xb6rg@b\xc3\xbc" "cher.example", .orcpt = "utf-8;j\xc3\xb6rg@b\xc3\xbc" "cher.example",
	  .action = DSN_ACTION_FAILED, .status = "5.1.1", .remote_mta = "mx.xn--bcher-kva.example",
	  .reply_code = 550, .reply_esc = "5.1.1", D("Benutzer unbekannt: j\xc3\xb6rg \xff") },
};

#define MSG(...) { .myhostname = "mx.test", .sender = "alice@example.org", \
	.message_id = "<20261123185459.dsn1@mx.test>", .boundary = "BOUND-1", \
	.date_unix = NOW, .arrival_unix = NOW - 3600, .has_original = true, \
	.queue_id = "0123456789abcdef", __VA_ARGS__ }

static struct dcase dcases[] = {
	{ "failure, default RET: headers, ORCPT and ENVID decoded",
	  MSG(.kind = DSN_KIND_FAILURE, .envid = "QQ+2B314", .rcpts = r_two, .n_rcpts = 2),
	  orig_plain, DSN_ORIGINAL_HEADERS, SPOOL_BODY_7BIT,
	  { "Original-Envelope-Id: QQ+314\r\n", "Final-Recipient: rfc822; bob@dest.example\r\n",
	    "Original-Recipient: rfc822;Bob+Tag@dest.example\r\n", "Status: 5.1.10\r\n",
	    "Content-Type: text/rfc822-headers\r\n", "Arrival-Date: Mon, 23 Nov 2026 17:54:59 +0000\r\n",
	    "X-ringmta-Queue-ID: 0123456789abcdef\r\n", "Subject: quarterly report\r\n" },
	  { "BODY-MARKER", "Will-Retry-Until", "Hello Bob" },
	  { "kind=failure", "original=headers", "envid=QQ+314",
	    "rcpt=rfc822; bob@dest.example|failed|5.1.1|rfc822;Bob+Tag@dest.example|dns; mx1.dest.example|"
	    "smtp; 550 5.1.1 <bob@dest.example>: Recipient address rejected: User unknown in virtual mailbox table",
	    "rcpt=rfc822; carol@nomx.example|failed|5.1.10|||X-ringmta; domain has a null MX (RFC 7505)",
	    "orig_has=Subject: quarterly report", "orig_lacks=BODY-MARKER",
	    "text_has=<bob@dest.example>: host mx1.dest.example said: 550 5.1.1",
	    "text_has=could not be delivered" } },
	{ "failure, RET=FULL 8BITMIME: message/rfc822, 8bit",
	  MSG(.kind = DSN_KIND_FAILURE, .ret = SPOOL_RET_FULL, .body = SPOOL_BODY_8BITMIME,
	      .rcpts = r_two, .n_rcpts = 1, .original_size = sizeof(orig_8bit) - 1,
	      .max_full_bytes = 100000),
	  orig_8bit, DSN_ORIGINAL_FULL, SPOOL_BODY_8BITMIME,
	  { "Content-Type: message/rfc822\r\n", "Content-Transfer-Encoding: 8bit\r\n",
	    "BODY-MARKER\r\n\r\n--BOUND-1--\r\n" },
	  { "Original-Envelope-Id" },
	  { "kind=failure", "original=full",
	    "rcpt=rfc822; bob@dest.example|failed|5.1.1|rfc822;Bob+Tag@dest.example|dns; mx1.dest.example|smtp; 550 5.1.1*",
	    "orig_has=BODY-MARKER" } },
	{ "RFC3461-4.3 delay: headers only even with RET=FULL",
	  MSG(.kind = DSN_KIND_DELAY, .ret = SPOOL_RET_FULL, .rcpts = r_delay, .n_rcpts = 1),
	  orig_plain, DSN_ORIGINAL_HEADERS, SPOOL_BODY_7BIT,
	  { "Subject: Delayed Mail (still being retried)\r\n", "Action: delayed\r\n",
	    "Will-Retry-Until: Fri, 27 Nov 2026 18:54:59 +0000\r\n", "Content-Description: Delayed Message Headers\r\n",
	    "Last-Attempt-Date: Mon, 23 Nov 2026 18:53:59 +0000\r\n" },
	  { "BODY-MARKER" },
	  { "kind=delay", "original=headers",
	    "rcpt=rfc822; dave@slow.example|delayed|4.4.1||dns; mx.slow.example|"
	    "X-ringmta; connect to mx.slow.example[192.0.2.9]:25: Connection refused",
	    "text_has=THIS IS A WARNING ONLY" } },
	{ "success notice",
	  MSG(.kind = DSN_KIND_SUCCESS, .rcpts = r_success, .n_rcpts = 1),
	  orig_plain, DSN_ORIGINAL_HEADERS, SPOOL_BODY_7BIT,
	  { "Subject: Successful Mail Delivery Report\r\n", "Action: delivered\r\n", "Status: 2.0.0\r\n" },
	  { "Will-Retry-Until" },
	  { "kind=success", "original=headers",
	    "rcpt=rfc822; erin@ok.example|delivered|2.0.0||dns; mx.ok.example|smtp; 250 2.0.0 Ok: queued as 4XyZ" } },
	{ "header injection through reply, address, ORCPT, host",
	  MSG(.kind = DSN_KIND_FAILURE, .sender = "alice@example.org\r\nBcc: x@y", .rcpts = r_evil, .n_rcpts = 1,
	      .myhostname = "mx.test\r\nX-Injected: 3"),
	  orig_plain, DSN_ORIGINAL_HEADERS, SPOOL_BODY_7BIT,
	  { "To: <alice@example.org Bcc: x@y>\r\n" },
	  { "\r\nBcc:", "\r\nX-Injected", "\r\n--BOUND-1\r\nContent-Type: text/html", "\r\n\r\n<script>",
	    "\x01", "\x7f" },
	  { "kind=failure", "original=headers", "sender=alice@example.org Bcc: x@y",
	    "host=mx.test X-Injected: 3",
	    "rcpt=rfc822; frank@evil.example Bcc: victim@example.net|failed|5.7.1|rfc822;x Bcc: v@e.net|"
	    "dns; mx.evil.example X-Injected: 1|smtp; 554 bad Bcc: victim@example.net --BOUND-1 "
	    "Content-Type: text/html <script>?x??" } },
	{ "RFC5322-2.1.1 long replies fold within 998",
	  MSG(.kind = DSN_KIND_FAILURE, .rcpts = r_long, .n_rcpts = 2, .has_original = false),
	  NULL, DSN_ORIGINAL_NONE, SPOOL_BODY_7BIT,
	  { "...\r\n" },
	  { "Content-Description: Undelivered" },
	  { "kind=failure", "original=none",
	    "rcpt=rfc822; gina@long.example|failed|5.0.0||dns; mx.long.example|smtp; 550 xxxxxxxx*",
	    "rcpt=rfc822; hank@long.example|failed|5.0.0||dns; mx.long.example|smtp; 550 w0 w1 w2*" } },
	{ "RFC6533 SMTPUTF8: utf-8 address type, global types",
	  MSG(.kind = DSN_KIND_FAILURE, .smtputf8 = true, .sender = "\xc3\xa5sa@example.org",
	      .rcpts = r_utf8, .n_rcpts = 1, .ret = SPOOL_RET_FULL, .body = SPOOL_BODY_8BITMIME),
	  orig_8bit, DSN_ORIGINAL_FULL, SPOOL_BODY_8BITMIME,
	  { "Final-Recipient: utf-8; j\xc3\xb6rg@b\xc3\xbc" "cher.example\r\n",
	    "Content-Type: message/global-delivery-status\r\n", "Content-Type: message/global\r\n",
	    "unbekannt: j\xc3\xb6rg ?\r\n" },
	  { "\xff" },
	  { "kind=failure", "original=full", "utf8=1", "sender=\xc3\xa5sa@example.org",
	    "rcpt=utf-8; j\xc3\xb6rg@b\xc3\xbc" "cher.example|failed|5.1.1|utf-8;j\xc3\xb6rg@b\xc3\xbc" "cher.example|"
	    "dns; mx.xn--bcher-kva.example|smtp; 550 5.1.1 Benutzer unbekannt: j\xc3\xb6rg ?",
	    "orig_has=BODY-MARKER" } },
	{ "RET=FULL larger than max_full_bytes: headers and a note",
	  MSG(.kind = DSN_KIND_FAILURE, .ret = SPOOL_RET_FULL, .rcpts = r_two, .n_rcpts = 1,
	      .original_size = 50001, .max_full_bytes = 50000),
	  orig_plain, DSN_ORIGINAL_HEADERS, SPOOL_BODY_7BIT,
	  { "could not be returned in full", "Content-Type: text/rfc822-headers\r\n" },
	  { "BODY-MARKER" },
	  { "kind=failure", "original=headers",
	    "rcpt=rfc822; bob@dest.example|failed|5.1.1|rfc822;Bob+Tag@dest.example|dns; mx1.dest.example|smtp; 550*",
	    "text_has=could not be returned in full (it is too large, or binary)" } },
	{ "RET=FULL BINARYMIME: headers only",
	  MSG(.kind = DSN_KIND_FAILURE, .ret = SPOOL_RET_FULL, .body = SPOOL_BODY_BINARYMIME,
	      .rcpts = r_two, .n_rcpts = 1),
	  orig_plain, DSN_ORIGINAL_HEADERS, SPOOL_BODY_7BIT,
	  { "Content-Type: text/rfc822-headers\r\n" },
	  { "BODY-MARKER" },
	  { "kind=failure", "original=headers",
	    "rcpt=rfc822; bob@dest.example|failed|5.1.1|rfc822;Bob+Tag@dest.example|dns; mx1.dest.example|smtp; 550*" } },
	{ "original of headers only, no final CRLF",
	  MSG(.kind = DSN_KIND_FAILURE, .rcpts = r_two + 1, .n_rcpts = 1),
	  "Subject: no body\r\nX-Last: yes", DSN_ORIGINAL_HEADERS, SPOOL_BODY_7BIT,
	  { "X-Last: yes\r\n--BOUND-1--\r\n" },
	  { 0 },
	  { "kind=failure", "original=headers",
	    "rcpt=rfc822; carol@nomx.example|failed|5.1.10|||X-ringmta; domain has a null MX (RFC 7505)",
	    "orig_has=X-Last: yes" } },
	{ "empty original",
	  MSG(.kind = DSN_KIND_FAILURE, .ret = SPOOL_RET_FULL, .rcpts = r_two + 1, .n_rcpts = 1),
	  "", DSN_ORIGINAL_FULL, SPOOL_BODY_7BIT,
	  { "Content-Type: message/rfc822\r\n\r\n\r\n--BOUND-1--\r\n" },
	  { 0 },
	  { "kind=failure", "original=full",
	    "rcpt=rfc822; carol@nomx.example|failed|5.1.10|||X-ringmta; domain has a null MX (RFC 7505)" } },
};

static const size_t out_caps[] = { 1, 7, 64, 4096 };
static const size_t in_pieces[] = { 0, 1, 13 };

static void run_case(struct dcase *c)
{
	struct out ref = { 0 }, o = { 0 };
	const char *py[24];
	size_t olen = c->orig ? strlen(c->orig) : 0, used, i, j, k, n;
	struct dsn_writer w;
	const char *bad;
	int body, rc;
	bool u8;

	T_CASE(c->name);
	rc = dsn_init(&w, &c->m);
	T_EQ_INT(rc, 0);
	T_EQ_INT(dsn_original(&w), c->want_original);
	dsn_envelope(&w, &body, &u8);
	T_EQ_INT(body, c->want_body);
	T_EQ_INT(u8, c->m.smtputf8);

	rc = compose(&c->m, c->orig, olen, 4096, 0, &ref, &used);
	T_EQ_INT(rc, DSN_DONE);
	if (c->want_original == DSN_ORIGINAL_FULL)
		T_EQ_INT(used, olen);
	for (i = 0; i < sizeof(out_caps) / sizeof(out_caps[0]); i++) {
		for (j = 0; j < sizeof(in_pieces) / sizeof(in_pieces[0]); j++) {
			rc = compose(&c->m, c->orig, olen, out_caps[i], in_pieces[j], &o, &used);
			T_CHECK(rc == DSN_DONE && o.len == ref.len && memcmp(o.p, ref.p, o.len) == 0,
				"out_cap %zu in_piece %zu: got rc %d, %zu bytes, want DONE and the same %zu bytes",
				out_caps[i], in_pieces[j], rc, o.len, ref.len);
		}
	}
	bad = line_check(&ref);
	T_CHECK(bad == NULL, "lines: got %s, want CRLF lines <= 998", bad);
	for (i = 0; i < 8 && c->must[i]; i++)
		T_CHECK(has(&ref, c->must[i]), "got no \"%s\", want it", c->must[i]);
	for (i = 0; i < 8 && c->must_not[i]; i++)
		T_CHECK(!has(&ref, c->must_not[i]), "got \"%s\", want none", c->must_not[i]);
	T_CHECK(!line_starts(&ref, "Bcc:") && !line_starts(&ref, "X-Injected"),
		"got an injected header line, want none");

	/* dsn_check.py: host and sender default to the MSG() values */
	n = 0;
	for (k = 0; k < 16 && c->py[k]; k++)
		py[n++] = c->py[k];
	if (strcmp(c->m.myhostname, "mx.test") == 0)
		py[n++] = "host=mx.test";
	if (strcmp(c->m.sender, "alice@example.org") == 0)
		py[n++] = "sender=alice@example.org";
	py[n] = NULL;
	python_check(&ref, py);
	free(ref.p);
	free(o.p);
}

static void test_should_notify(void)
{
	static const struct {
		const char *name;
		const char *sender;
		unsigned notify;
		enum dsn_kind kind;
		bool want;
	} cases[] = {
		{ "RFC3461-4.1 default: failure", "a@b", 0, DSN_KIND_FAILURE, true },
		{ "RFC3461-4.1 default: delay", "a@b", 0, DSN_KIND_DELAY, true },
		{ "RFC3461-4.1 default: no success", "a@b", 0, DSN_KIND_SUCCESS, false },
		{ "null sender: never bounce a bounce", "", 0, DSN_KIND_FAILURE, false },
		{ "null sender even with NOTIFY=FAILURE", "", SPOOL_NOTIFY_FAILURE, DSN_KIND_FAILURE, false },
		{ "NULL sender", NULL, SPOOL_NOTIFY_FAILURE, DSN_KIND_FAILURE, false },
		{ "NEVER: failure", "a@b", SPOOL_NOTIFY_NEVER, DSN_KIND_FAILURE, false },
		{ "NEVER: delay", "a@b", SPOOL_NOTIFY_NEVER, DSN_KIND_DELAY, false },
		{ "NEVER: success", "a@b", SPOOL_NOTIFY_NEVER, DSN_KIND_SUCCESS, false },
		{ "SUCCESS: success", "a@b", SPOOL_NOTIFY_SUCCESS, DSN_KIND_SUCCESS, true },
		{ "SUCCESS: no failure", "a@b", SPOOL_NOTIFY_SUCCESS, DSN_KIND_FAILURE, false },
		{ "SUCCESS: no delay", "a@b", SPOOL_NOTIFY_SUCCESS, DSN_KIND_DELAY, false },
		{ "FAILURE: failure", "a@b", SPOOL_NOTIFY_FAILURE, DSN_KIND_FAILURE, true },
		{ "FAILURE: no delay", "a@b", SPOOL_NOTIFY_FAILURE, DSN_KIND_DELAY, false },
		{ "DELAY: delay", "a@b", SPOOL_NOTIFY_DELAY, DSN_KIND_DELAY, true },
		{ "DELAY: no failure", "a@b", SPOOL_NOTIFY_DELAY, DSN_KIND_FAILURE, false },
		{ "SUCCESS,FAILURE,DELAY: all", "a@b", SPOOL_NOTIFY_SUCCESS | SPOOL_NOTIFY_FAILURE |
		  SPOOL_NOTIFY_DELAY, DSN_KIND_SUCCESS, true },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		T_CASE(cases[i].name);
		T_EQ_INT(dsn_should_notify(cases[i].sender, cases[i].notify, cases[i].kind),
			 cases[i].want);
	}
}

static void test_init_errors(void)
{
	static const struct dsn_rcpt bad_status[] = { { .addr = "a@b", .status = "5.1" } };
	static const struct dsn_rcpt no_addr[] = { { .status = "5.1.1" } };
	static const struct dsn_rcpt bad_code[] = { { .addr = "a@b", .status = "5.1.1", .reply_code = 5500 } };
	static const struct dsn_rcpt bad_action[] = { { .addr = "a@b", .status = "5.1.1", .action = 9 } };
	static char b71[72];
	static const struct {
		const char *name;
		struct dsn_msg m;
		int want;
	} cases[] = {
		{ "ok", MSG(.rcpts = r_two, .n_rcpts = 2), 0 },
		{ "RFC5321-4.5.5 null sender", MSG(.sender = "", .rcpts = r_two, .n_rcpts = 2), DSN_E_NULL_SENDER },
		{ "NULL sender", MSG(.sender = NULL, .rcpts = r_two, .n_rcpts = 2), DSN_E_NULL_SENDER },
		{ "no recipients", MSG(.rcpts = r_two, .n_rcpts = 0), DSN_E_INVALID },
		{ "no myhostname", MSG(.myhostname = "", .rcpts = r_two, .n_rcpts = 1), DSN_E_INVALID },
		{ "no message id", MSG(.message_id = NULL, .rcpts = r_two, .n_rcpts = 1), DSN_E_INVALID },
		{ "no boundary", MSG(.boundary = "", .rcpts = r_two, .n_rcpts = 1), DSN_E_INVALID },
		{ "RFC2046-5.1.1 boundary with space", MSG(.boundary = "a b", .rcpts = r_two, .n_rcpts = 1), DSN_E_INVALID },
		{ "RFC2046-5.1.1 boundary with quote", MSG(.boundary = "a\"b", .rcpts = r_two, .n_rcpts = 1), DSN_E_INVALID },
		{ "RFC2046-5.1.1 boundary of 71", MSG(.boundary = b71, .rcpts = r_two, .n_rcpts = 1), DSN_E_INVALID },
		{ "bad status", MSG(.rcpts = bad_status, .n_rcpts = 1), DSN_E_INVALID },
		{ "no addr", MSG(.rcpts = no_addr, .n_rcpts = 1), DSN_E_INVALID },
		{ "reply code out of range", MSG(.rcpts = bad_code, .n_rcpts = 1), DSN_E_INVALID },
		{ "bad action", MSG(.rcpts = bad_action, .n_rcpts = 1), DSN_E_INVALID },
		{ "bad kind", MSG(.kind = 7, .rcpts = r_two, .n_rcpts = 1), DSN_E_INVALID },
	};
	struct dsn_writer w;
	uint8_t buf[16];
	size_t i, used, n;

	memset(b71, 'b', 71);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		T_CASE(cases[i].name);
		T_EQ_INT(dsn_init(&w, &cases[i].m), cases[i].want);
		if (cases[i].want != 0) {
			/* a writer that failed init refuses to write */
			T_EQ_INT(dsn_write(&w, NULL, 0, true, buf, sizeof(buf), &used, &n), cases[i].want);
			T_EQ_INT(n, 0);
		}
	}
	T_CASE("NULL message");
	T_EQ_INT(dsn_init(&w, NULL), DSN_E_INVALID);
	T_CASE("a 70-byte boundary is fine");
	{
		struct dsn_msg m = MSG(.rcpts = r_two, .n_rcpts = 1);

		b71[70] = '\0';
		m.boundary = b71;
		T_EQ_INT(dsn_init(&w, &m), 0);
	}
}

static void test_dates(void)
{
	static const struct {
		int64_t t;
		const char *want;
	} cases[] = {
		{ 0, "Thu, 01 Jan 1970 00:00:00 +0000" },
		{ 951782400, "Tue, 29 Feb 2000 00:00:00 +0000" },
		{ 1709164800, "Thu, 29 Feb 2024 00:00:00 +0000" },
		{ NOW, "Mon, 23 Nov 2026 18:54:59 +0000" },
		{ 253402300799LL, "Fri, 31 Dec 9999 23:59:59 +0000" },
		{ INT64_MAX, "Fri, 31 Dec 9999 23:59:59 +0000" },
		{ -5, "Thu, 01 Jan 1970 00:00:00 +0000" },
	};
	char buf[DSN_DATE_BYTES];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		T_CASE(cases[i].want);
		T_EQ_STR(dsn_date_format(cases[i].t, buf, sizeof(buf)), cases[i].want);
	}
}

static void test_ids(void)
{
	char b[DSN_BOUNDARY_MAX + 1], id[DSN_ID_BYTES], small[12];
	struct dsn_writer w;
	struct dsn_msg m = MSG(.rcpts = r_two, .n_rcpts = 1);

	T_CASE("boundary");
	T_EQ_STR(dsn_boundary_format(b, sizeof(b), "0123456789abcdef", NOW, 0x1234, 0),
		 "=_ringmta_0123456789abcdef_1795460099_0000000000001234_0");
	T_CASE("boundary: worst case fits 70 and is accepted");
	dsn_boundary_format(b, sizeof(b), "0123456789abcdef0123\r\n\"", INT64_MAX, UINT64_MAX,
			    4294967295u);
	T_CHECK(strlen(b) <= DSN_BOUNDARY_MAX, "got %zu bytes, want <= 70", strlen(b));
	m.boundary = b;
	T_EQ_INT(dsn_init(&w, &m), 0);
	T_CASE("boundary: cut to cap");
	T_EQ_STR(dsn_boundary_format(small, sizeof(small), "abc", 1, 2, 3), "=_ringmta_a");
	T_CASE("message id");
	T_EQ_STR(dsn_message_id_format(id, sizeof(id), NOW, "00aabbccddeeff11", "mx.test"),
		 "<20261123185459.00aabbccddeeff11@mx.test>");
	T_CASE("message id: hostile parts reduced");
	T_EQ_STR(dsn_message_id_format(id, sizeof(id), 0, "a>b\r\nc", "mx <evil>\r\n.test"),
		 "<19700101000000.abc@mxevil.test>");
	T_CASE("message id: cut to cap, still NUL-terminated");
	T_EQ_STR(dsn_message_id_format(small, sizeof(small), 0, "q", "h"), "<1970010100");
}

static void test_boundary_in_original(void)
{
	static const struct {
		const char *name;
		int ret;
		const char *orig;
		int want;
	} cases[] = {
		{ "boundary line in the body (FULL)", SPOOL_RET_FULL,
		  "Subject: x\r\n\r\nhi\r\n--BOUND-1\r\nContent-Type: text/html\r\n", DSN_E_BOUNDARY },
		{ "boundary at the very start", SPOOL_RET_FULL, "--BOUND-1--\r\n", DSN_E_BOUNDARY },
		{ "boundary prefix only", SPOOL_RET_FULL, "Subject: x\r\n\r\n--BOUND-\r\n", DSN_DONE },
		{ "boundary not at line start", SPOOL_RET_FULL, "Subject: x\r\n\r\nx--BOUND-1\r\n", DSN_DONE },
		{ "boundary in the body (HDRS): not copied, fine", SPOOL_RET_HDRS,
		  "Subject: x\r\n\r\n--BOUND-1\r\n", DSN_DONE },
		{ "boundary in a header line (HDRS)", SPOOL_RET_HDRS,
		  "Subject: x\r\n--BOUND-1\r\n\r\nbody\r\n", DSN_E_BOUNDARY },
	};
	struct out o = { 0 };
	size_t i, j, used;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dsn_msg m = MSG(.kind = DSN_KIND_FAILURE, .ret = cases[i].ret,
				       .rcpts = r_two, .n_rcpts = 1);

		T_CASE(cases[i].name);
		for (j = 0; j < sizeof(in_pieces) / sizeof(in_pieces[0]); j++)
			T_EQ_INT(compose(&m, cases[i].orig, strlen(cases[i].orig), 5,
					 in_pieces[j], &o, &used), cases[i].want);
	}
	T_CASE("DSN_E_BOUNDARY is sticky; DSN_E_STATE after DONE");
	{
		struct dsn_msg m = MSG(.kind = DSN_KIND_FAILURE, .ret = SPOOL_RET_FULL,
				       .rcpts = r_two, .n_rcpts = 1);
		static const char ev[] = "--BOUND-1\r\n";
		struct dsn_writer w;
		uint8_t buf[65536];
		size_t n;

		dsn_init(&w, &m);
		T_EQ_INT(dsn_write(&w, (const uint8_t *)ev, 11, true, buf, sizeof(buf), &used, &n),
			 DSN_E_BOUNDARY);
		T_EQ_INT(dsn_write(&w, (const uint8_t *)ev, 11, true, buf, sizeof(buf), &used, &n),
			 DSN_E_BOUNDARY);
		T_EQ_INT(n, 0);
		m.boundary = "OTHER-2";
		dsn_init(&w, &m);
		T_EQ_INT(dsn_write(&w, (const uint8_t *)ev, 11, true, buf, sizeof(buf), &used, &n),
			 DSN_DONE);
		T_EQ_INT(used, 11);
		T_EQ_INT(dsn_write(&w, NULL, 0, true, buf, sizeof(buf), &used, &n), DSN_E_STATE);
		T_EQ_INT(dsn_write(&w, NULL, 0, true, buf, sizeof(buf), &used, &n), DSN_E_STATE);
	}
	free(o.p);
}

/* many recipients: memory stays the writer's, every group is written */
static void test_many_rcpts(void)
{
	enum { N = 2000 };
	static const char needle[] = "\r\nFinal-Recipient: rfc822; user";
	static struct dsn_rcpt r[N];
	static char addrs[N][40];
	struct dsn_msg m = MSG(.kind = DSN_KIND_FAILURE, .rcpts = r, .n_rcpts = N);
	struct out o = { 0 };
	size_t i, used, count = 0;
	const uint8_t *p;

	for (i = 0; i < N; i++) {
		snprintf(addrs[i], sizeof(addrs[i]), "user%zu@dest.example", i);
		r[i] = r_two[0];
		r[i].addr = addrs[i];
	}
	T_CASE("2000 recipients through a 512-byte buffer");
	T_EQ_INT(compose(&m, orig_plain, strlen(orig_plain), 512, 100, &o, &used), DSN_DONE);
	T_CHECK(line_check(&o) == NULL, "lines: got %s", line_check(&o));
	for (p = o.p; (p = memmem(p, o.len - (size_t)(p - o.p), needle, sizeof(needle) - 1)); p++)
		count++;
	T_EQ_INT(count, N);
	T_CHECK(has(&o, "Final-Recipient: rfc822; user1999@dest.example\r\n"), "got no last recipient");
	free(o.p);
}

/* a 10 MB original through a 4 KB output buffer in 64 KB reads: the
 * output is head + original + tail, the writer holds none of it; with
 * headers only, reading stops after the header section */
static void test_big_original(void)
{
	const size_t big = 10u << 20;
	char *orig = malloc(big + 1);
	struct dsn_writer w;
	uint8_t out[4096];
	size_t off = 0, used, n, total = 0, hdr_len;
	int rc;
	struct dsn_msg m = MSG(.kind = DSN_KIND_FAILURE, .ret = SPOOL_RET_FULL, .rcpts = r_two,
			       .n_rcpts = 2, .original_size = big);
	static const char hdr[] = "Subject: big\r\n\r\n";

	memcpy(orig, hdr, sizeof(hdr) - 1);
	for (size_t i = sizeof(hdr) - 1; i < big; i++)
		orig[i] = (i % 80 == 78) ? '\r' : (i % 80 == 79) ? '\n' : (char)('a' + i % 26);
	T_CASE("10 MB original, FULL");
	T_EQ_INT(dsn_init(&w, &m), 0);
	do {
		size_t chunk = big - off < 65536 ? big - off : 65536;

		rc = dsn_write(&w, (const uint8_t *)orig + off, chunk, off + chunk == big,
			       out, sizeof(out), &used, &n);
		off += used;
		total += n;
	} while (rc == DSN_OUT_FULL || rc == DSN_NEED_ORIGINAL);
	T_EQ_INT(rc, DSN_DONE);
	T_EQ_INT(off, big);
	T_CHECK(total > big && total < big + 8192, "got %zu bytes, want 10 MB + head + tail", total);
	T_CHECK(sizeof(struct dsn_writer) < 16384, "writer is %zu bytes, want < 16 KB",
		sizeof(struct dsn_writer));

	T_CASE("10 MB original, headers: stops reading at the empty line");
	m.ret = SPOOL_RET_HDRS;
	T_EQ_INT(dsn_init(&w, &m), 0);
	off = 0;
	hdr_len = sizeof(hdr) - 1;
	do {
		size_t chunk = big - off < 65536 ? big - off : 65536;

		rc = dsn_write(&w, (const uint8_t *)orig + off, chunk, off + chunk == big,
			       out, sizeof(out), &used, &n);
		off += used;
	} while (rc == DSN_OUT_FULL || rc == DSN_NEED_ORIGINAL);
	T_EQ_INT(rc, DSN_DONE);
	T_EQ_INT(off, hdr_len);
	free(orig);
}

/* find_checker - dsn_check.py next to this file (__FILE__ is relative to
 * the build directory meson compiles in, which is where meson test runs)
 * or under $MESON_SOURCE_ROOT; NULL when python3 or the script is missing. */
static const char *find_checker(void)
{
	static char path[4096];
	const char *root = getenv("MESON_SOURCE_ROOT");
	const char *slash = strrchr(__FILE__, '/');

	if (access(PYTHON, X_OK) != 0)
		return NULL;
	snprintf(path, sizeof(path), "%.*sdsn_check.py",
		 slash ? (int)(slash - __FILE__ + 1) : 0, __FILE__);
	if (access(path, R_OK) == 0)
		return path;
	if (root) {
		snprintf(path, sizeof(path), "%s/test/unit/dsn_check.py", root);
		if (access(path, R_OK) == 0)
			return path;
	}
	return NULL;
}

int main(void)
{
	size_t i;

	memset(long_word, 'x', sizeof(long_word));
	for (i = 0; i + 4 < sizeof(many_words); i += 4)
		snprintf(many_words + i, 5, "w%-2zu ", (i / 4) % 100);
	checker = find_checker();
	test_should_notify();
	test_init_errors();
	test_dates();
	for (i = 0; i < sizeof(dcases) / sizeof(dcases[0]); i++)
		run_case(&dcases[i]);
	test_ids();
	test_boundary_in_original();
	test_big_original();
	test_many_rcpts();
	if (checker)
		printf("python email checks: %d DSNs parsed back by %s\n", n_python_runs, checker);
	else
		printf("SKIP python email checks: %s or dsn_check.py not found\n", PYTHON);
	return t_done();
}
