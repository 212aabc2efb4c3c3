/*
 * fuzz_dsn - libFuzzer target for DSN composition.
 *
 * Input: byte 0 flags (bits 0-1 kind, 2 RET=FULL, 3 SMTPUTF8, 4 8BITMIME,
 * 5 BINARYMIME), byte 1 output buffer size - 1, byte 2 input piece size;
 * then NUL-separated strings: sender, envid, and per recipient (up to 3)
 * addr, orcpt, remote host, reply esc, reply text; the rest after the
 * last recipient is the original. Checks:
 *  - without the original, the whole DSN is ours: CRLF lines of at most
 *    998 octets; top-level header names, part header names and report
 *    field names only from the fixed sets; exactly two part delimiters
 *    and one closing delimiter, last (no injection through any string);
 *  - with the original: DONE or DSN_E_BOUNDARY, and BOUNDARY only when a
 *    line of the original starts with "--BOUND-1"; the same bytes for a
 *    4 KB buffer fed whole and for the fuzzed buffer and piece sizes.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ringmta/dsn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define BOUNDARY "BOUND-1"
#define MAX_RCPTS 3
#define OUT_MAX (4u << 20)

static const char *const top_names[] = {
	"Date:", "From:", "Subject:", "To:", "Auto-Submitted:", "Message-ID:",
	"MIME-Version:", "Content-Type:", "Content-Transfer-Encoding:", NULL,
};
static const char *const part_names[] = {
	"Content-Description:", "Content-Type:", "Content-Transfer-Encoding:", NULL,
};
static const char *const report_names[] = {
	"Original-Envelope-Id:", "Reporting-MTA:", "X-ringmta-Queue-ID:",
	"Arrival-Date:", "Original-Recipient:", "Final-Recipient:", "Action:",
	"Status:", "Remote-MTA:", "Diagnostic-Code:", "Last-Attempt-Date:",
	"Will-Retry-Until:", NULL,
};

static bool named(const char *line, size_t n, const char *const *names)
{
	size_t i, k;

	for (i = 0; names[i]; i++) {
		k = strlen(names[i]);
		if (n >= k && memcmp(line, names[i], k) == 0)
			return true;
	}
	return false;
}

/* check_generated - the structure checks of a DSN without an original. */
static void check_generated(const uint8_t *p, size_t len)
{
	/* sections: 0 top header, 1 preamble, 2 part header, 3 part body */
	int section = 0, part = 0, n_delim = 0, n_close = 0;
	size_t start = 0, i, n;

	for (i = 0; i < len; i++) {
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			abort();	/* bare LF */
		if (p[i] == '\r' && (i + 1 >= len || p[i + 1] != '\n'))
			abort();	/* bare CR */
		if (p[i] != '\n')
			continue;
		n = i - 1 - start;
		const char *line = (const char *)p + start;
		start = i + 1;
		if (n > DSN_LINE_MAX)
			abort();
		if (n_close)
			abort();	/* nothing after the closing delimiter */
		if (n == sizeof(BOUNDARY) + 1 && memcmp(line, "--" BOUNDARY, n) == 0) {
			n_delim++;
			part++;
			section = 2;
			continue;
		}
		if (n == sizeof(BOUNDARY) + 3 && memcmp(line, "--" BOUNDARY "--", n) == 0) {
			n_close++;
			continue;
		}
		if (n >= sizeof(BOUNDARY) + 1 && memcmp(line, "--" BOUNDARY, sizeof(BOUNDARY) + 1) == 0)
			abort();	/* a delimiter look-alike */
		if (n == 0) {
			if (section == 0)
				section = 1;
			else if (section == 2)
				section = 3;
			continue;
		}
		if (line[0] == ' ' || line[0] == '\t')
			continue;	/* a continuation */
		if (section == 0 && !named(line, n, top_names))
			abort();
		if (section == 2 && !named(line, n, part_names))
			abort();
		if (section == 3 && part == 2 && !named(line, n, report_names))
			abort();
	}
	if (start != len || n_delim != 2 || n_close != 1)
		abort();
}

/* compose - the whole DSN into out (OUT_MAX); returns the final result. */
static int compose(const struct dsn_msg *m, const uint8_t *orig, size_t olen,
		   size_t cap, size_t piece, uint8_t *out, size_t *out_len)
{
	struct dsn_writer w;
	size_t off = 0, used, n;
	int rc;

	*out_len = 0;
	rc = dsn_init(&w, m);
	if (rc != 0)
		return rc;
	do {
		size_t chunk = piece == 0 || olen - off < piece ? olen - off : piece;

		if (*out_len + cap > OUT_MAX)
			abort();
		rc = dsn_write(&w, orig ? orig + off : NULL, chunk, off + chunk == olen,
			       out + *out_len, cap, &used, &n);
		if (used > chunk || n > cap)
			abort();
		off += used;
		*out_len += n;
	} while (rc == DSN_OUT_FULL || rc == DSN_NEED_ORIGINAL);
	return rc;
}

/* next_str - the next NUL-terminated string of the input, or "" at its end. */
static const char *next_str(const char **p, const char *end)
{
	const char *s = *p, *z;

	if (s >= end)
		return "";
	z = memchr(s, '\0', (size_t)(end - s));
	if (z == NULL)
		return "";
	*p = z + 1;
	return s;
}

static bool has_boundary_line(const uint8_t *p, size_t n)
{
	static const char pat[] = "--" BOUNDARY;
	size_t i;

	for (i = 0; i + sizeof(pat) - 1 <= n; i++)
		if ((i == 0 || p[i - 1] == '\n') && memcmp(p + i, pat, sizeof(pat) - 1) == 0)
			return true;
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *out1, *out2;
	static const char *const status[] = { "5.1.1", "4.4.1", "2.0.0" };
	struct dsn_rcpt r[MAX_RCPTS];
	struct dsn_msg m;
	const char *p, *end, *text;
	size_t n1, n2, cap, piece, i, olen;
	int rc1, rc2;

	if (size < 3)
		return 0;
	if (out1 == NULL) {
		out1 = malloc(OUT_MAX);
		out2 = malloc(OUT_MAX);
	}
	/* the strings must be NUL-terminated copies: keep the input's tail */
	char *copy = malloc(size - 3 + 1);
	memcpy(copy, data + 3, size - 3);
	copy[size - 3] = '\0';
	p = copy;
	end = copy + size - 3;

	memset(&m, 0, sizeof(m));
	m.kind = (enum dsn_kind)(data[0] & 3) % 3;
	m.ret = (data[0] & 4) ? SPOOL_RET_FULL : SPOOL_RET_NONE;
	m.smtputf8 = (data[0] & 8) != 0;
	m.body = (data[0] & 32) ? SPOOL_BODY_BINARYMIME
		 : (data[0] & 16) ? SPOOL_BODY_8BITMIME : SPOOL_BODY_7BIT;
	cap = (size_t)data[1] + 1;
	piece = data[2];
	m.myhostname = "mx.test";
	m.message_id = "<fuzz@mx.test>";
	m.boundary = BOUNDARY;
	m.date_unix = 1795460099;
	m.arrival_unix = 1795456499;
	m.queue_id = "0123456789abcdef";
	m.sender = next_str(&p, end);
	m.envid = next_str(&p, end);
	memset(r, 0, sizeof(r));
	for (i = 0; i < MAX_RCPTS && p < end; i++) {
		r[i].addr = next_str(&p, end);
		r[i].orcpt = next_str(&p, end);
		r[i].remote_mta = next_str(&p, end);
		r[i].reply_esc = next_str(&p, end);
		text = next_str(&p, end);
		r[i].diag = text;
		r[i].diag_len = strlen(text);
		r[i].reply_code = (unsigned)(i * 100 + 250) % 600;
		r[i].status = status[i];
		r[i].action = (enum dsn_action)i;
		r[i].last_attempt_unix = 1795460000;
		r[i].retry_until_unix = 1795560000;
	}
	m.rcpts = r;
	m.n_rcpts = i;
	olen = (size_t)(end - p);

	/* no original: all bytes are generated, check the structure */
	m.has_original = false;
	rc1 = compose(&m, NULL, 0, 4096, 0, out1, &n1);
	if (m.sender[0] == '\0') {
		if (rc1 != DSN_E_NULL_SENDER)
			abort();
		goto done;
	}
	if (rc1 == DSN_E_INVALID)
		goto done;	/* an empty address */
	if (rc1 != DSN_DONE)
		abort();
	check_generated(out1, n1);
	rc2 = compose(&m, NULL, 0, cap, piece, out2, &n2);
	if (rc2 != rc1 || n2 != n1 || memcmp(out1, out2, n1) != 0)
		abort();

	/* with the original */
	m.has_original = true;
	m.original_size = olen;
	rc1 = compose(&m, (const uint8_t *)p, olen, 4096, 0, out1, &n1);
	rc2 = compose(&m, (const uint8_t *)p, olen, cap, piece, out2, &n2);
	if (rc1 != rc2)
		abort();
	if (rc1 == DSN_DONE) {
		if (n1 != n2 || memcmp(out1, out2, n1) != 0)
			abort();
	} else if (rc1 != DSN_E_BOUNDARY || !has_boundary_line((const uint8_t *)p, olen)) {
		abort();
	}
done:
	free(copy);
	return 0;
}
