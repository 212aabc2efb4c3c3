/*
 * test_data - the DATA/BDAT decoder: end of data, dot-unstuffing, bare
 * CR/LF (SMTP smuggling), limits, leniencies, BDAT framing. Every case runs
 * whole, byte by byte and split at every offset, with each piece placed
 * just before a PROT_NONE page; all runs must give the same result.
 */
#include "ringmta/data.h"

#include <stdio.h>
#include <string.h>

#include "t.h"

/* flags for a case's limits */
#define F_LF   0x1u
#define F_CR   0x2u
#define F_8BIT 0x4u
#define F_BIN  0x8u
#define F_BDAT 0x10u

struct dcase {
	const char *name;
	const char *in;
	size_t in_len;         /* 0: strlen(in) */
	unsigned flags;
	size_t max_line;       /* 0: 1000 */
	uint64_t max_msg;      /* 0: 1000000 */
	const char *want_body;
	long want_end;         /* offset after ".\r\n", -1: no end */
	enum data_reject want_reject;
	size_t want_len;       /* 0: strlen(want_body) */
};

static const struct dcase cases[] = {
	{ "simple", "Hello\r\n.\r\n", 0, 0, 0, 0, "Hello\r\n", 10, DATA_REJECT_NONE },
	{ "empty message", ".\r\n", 0, 0, 0, 0, "", 3, DATA_REJECT_NONE },
	{ "RFC5321-4.5.2 unstuff", "..x\r\n.\r\n", 0, 0, 0, 0, ".x\r\n", 8, DATA_REJECT_NONE },
	{ "unstuff lone dot line", "..\r\n.\r\n", 0, 0, 0, 0, ".\r\n", 7, DATA_REJECT_NONE },
	{ "dot inside line kept", "a.b\r\n.x\r\n.\r\n", 0, 0, 0, 0, "a.b\r\nx\r\n", 12, DATA_REJECT_NONE },
	{ "bytes after end untouched", "a\r\n.\r\nQUIT\r\n", 0, 0, 0, 0, "a\r\n", 6, DATA_REJECT_NONE },
	{ "empty lines", "\r\n\r\n.\r\n", 0, 0, 0, 0, "\r\n\r\n", 7, DATA_REJECT_NONE },
	{ "smuggling LF.LF", "a\n.\nMAIL FROM:<x@y>\r\n.\r\n", 0, 0, 0, 0, "a", 24, DATA_REJECT_BARE_LF },
	{ "smuggling CRLF.LF", "a\r\n.\nb\r\n.\r\n", 0, 0, 0, 0, "a\r\n", 11, DATA_REJECT_BARE_LF },
	{ "smuggling LF.CRLF", "a\n.\r\nb\r\n.\r\n", 0, 0, 0, 0, "a", 11, DATA_REJECT_BARE_LF },
	{ "smuggling CR.CR", "a\r.\rb\r\n.\r\n", 0, 0, 0, 0, "a\r", 10, DATA_REJECT_BARE_CR },
	{ "smuggling CRLF.CR x", "a\r\n.\rx\r\n.\r\n", 0, 0, 0, 0, "a\r\n", 11, DATA_REJECT_BARE_CR },
	{ "smuggling CR.CRLF", "a\r.\r\nb\r\n.\r\n", 0, 0, 0, 0, "a\r", 11, DATA_REJECT_BARE_CR },
	{ "bare CR mid line", "a\rb\r\n.\r\n", 0, 0, 0, 0, "a\r", 8, DATA_REJECT_BARE_CR },
	{ "CR CR LF", "a\r\r\n.\r\n", 0, 0, 0, 0, "a\r", 7, DATA_REJECT_BARE_CR },
	{ "no end yet", "a\r\n.\r", 0, 0, 0, 0, "a\r\n", -1, DATA_REJECT_NONE },
	{ "line at limit", "01234567\r\n.\r\n", 0, 0, 10, 0, "01234567\r\n", 13, DATA_REJECT_NONE },
	{ "RFC5321-4.5.3.1.6 line too long", "012345678\r\n.\r\n", 0, 0, 10, 0, "012345678\r", 14, DATA_REJECT_LINE_TOO_LONG },
	{ "stuffing dot counts", "..2345678\r\n.\r\n", 0, 0, 10, 0, ".2345678\r", 14, DATA_REJECT_LINE_TOO_LONG },
	{ "RFC1870 size at limit", "123\r\n..\r\n.\r\n", 0, 0, 0, 8, "123\r\n.\r\n", 12, DATA_REJECT_NONE },
	{ "RFC1870 too big", "123456\r\n.\r\n", 0, 0, 0, 5, "12345", 11, DATA_REJECT_TOO_BIG },
	{ "8bit without 8BITMIME", "caf\xc3\xa9\r\n.\r\n", 0, 0, 0, 0, "caf", 10, DATA_REJECT_8BIT },
	{ "8bit with 8BITMIME", "caf\xc3\xa9\r\n.\r\n", 0, F_8BIT, 0, 0, "caf\xc3\xa9\r\n", 10, DATA_REJECT_NONE },
	{ "NUL is content", "a\0b\r\n.\r\n", 8, 0, 0, 0, "a\0b\r\n", 8, DATA_REJECT_NONE, 5 },
	{ "lenient LF line end", "a\nb\r\n.\r\n", 0, F_LF, 0, 0, "a\r\nb\r\n", 8, DATA_REJECT_NONE },
	{ "lenient LF: LF.LF no end", "a\n.\nb\r\n.\r\n", 0, F_LF, 0, 0, "a\r\n\r\nb\r\n", 10, DATA_REJECT_NONE },
	{ "lenient LF: LF.CRLF no end", "a\n.\r\nb\r\n.\r\n", 0, F_LF, 0, 0, "a\r\n\r\nb\r\n", 11, DATA_REJECT_NONE },
	{ "lenient LF: unstuff", "a\n..b\r\n.\r\n", 0, F_LF, 0, 0, "a\r\n.b\r\n", 10, DATA_REJECT_NONE },
	{ "lenient CR content", "a\rb\r\n.\r\n", 0, F_CR, 0, 0, "a\rb\r\n", 8, DATA_REJECT_NONE },
	{ "lenient CR: .CR x", ".\rx\r\n.\r\n", 0, F_CR, 0, 0, "\rx\r\n", 8, DATA_REJECT_NONE },
	{ "lenient CR: CR.CR no end", "a\r.\r\r\n.\r\n", 0, F_CR, 0, 0, "a\r.\r\r\n", 9, DATA_REJECT_NONE },
	{ "lenient CR: still no LF", "a\r\n.\nb\r\n.\r\n", 0, F_CR, 0, 0, "a\r\n", 11, DATA_REJECT_BARE_LF },
	{ "BDAT raw dots", "..\r\n.\r\n", 0, F_BDAT, 0, 0, "..\r\n.\r\n", -1, DATA_REJECT_NONE },
	{ "BDAT bare LF", "a\nb", 0, F_BDAT, 0, 0, "a", -1, DATA_REJECT_BARE_LF },
	{ "BDAT trailing CR", "ab\r", 0, F_BDAT, 0, 0, "ab\r", -1, DATA_REJECT_BARE_CR },
	{ "BDAT BINARYMIME anything", "\n\r\0.\r\n\xff", 7, F_BDAT | F_BIN, 4, 0, "\n\r\0.\r\n\xff", -1, DATA_REJECT_NONE },
	{ "BDAT BINARYMIME size", "abcdef", 0, F_BDAT | F_BIN, 0, 3, "abc", -1, DATA_REJECT_TOO_BIG },
};

struct dres {
	char body[256];
	size_t body_len;
	long end;
	int n_rejected;
	bool overflow;
};

static void lim_of(const struct dcase *c, struct data_limits *lim)
{
	memset(lim, 0, sizeof(*lim));
	lim->max_line_bytes = c->max_line ? c->max_line : 1000;
	lim->max_message_bytes = c->max_msg ? c->max_msg : 1000000;
	lim->lenient_bare_lf = c->flags & F_LF;
	lim->lenient_bare_cr = c->flags & F_CR;
	lim->allow_8bit = c->flags & (F_8BIT | F_BIN);
	lim->is_binary = c->flags & F_BIN;
}

static void put(struct dres *r, const uint8_t *p, size_t n)
{
	if (r->body_len + n > sizeof(r->body)) {
		r->overflow = true;
		return;
	}
	memcpy(r->body + r->body_len, p, n);
	r->body_len += n;
}

/* run_piece - feed one piece; returns false once the end was seen. */
static bool run_piece(struct data_dec *d, struct dres *r, const uint8_t *p, size_t n, size_t base)
{
	size_t off = 0, used;
	const uint8_t *out;
	size_t out_len;

	for (;;) {
		int st = data_dec_run(d, p + off, n - off, &used, &out, &out_len);
		if (out_len)
			put(r, out, out_len);
		off += used;
		if (st == DATA_REJECTED)
			r->n_rejected++;
		if (st == DATA_END) {
			r->end = (long)(base + off);
			return false;
		}
		if (st == DATA_NEED_MORE)
			return true;
	}
}

/* run_split - decode the case's input cut at the given offsets. */
static void run_split(const struct dcase *c, const size_t *cuts, size_t n_cuts, struct dres *r)
{
	struct data_limits lim;
	struct data_dec d;
	size_t len = c->in_len ? c->in_len : strlen(c->in), prev = 0, k;

	memset(r, 0, sizeof(*r));
	r->end = -1;
	lim_of(c, &lim);
	data_dec_init(&d, &lim, (c->flags & F_BDAT) ? DATA_MODE_BDAT : DATA_MODE_DOT);
	for (k = 0; k <= n_cuts; k++) {
		size_t to = k < n_cuts ? cuts[k] : len, maplen;
		void *base;
		uint8_t *g = t_guard_copy(c->in + prev, to - prev, &base, &maplen);
		bool more = run_piece(&d, r, g, to - prev, prev);

		t_guard_free(base, maplen);
		prev = to;
		if (!more)
			break;
	}
	if ((c->flags & F_BDAT) && data_dec_finish(&d) == DATA_REJECTED)
		r->n_rejected++;
	if (data_dec_reject(&d) != c->want_reject)
		T_CHECK(0, "reject: got %s, want %s", data_reject_name(data_dec_reject(&d)),
			data_reject_name(c->want_reject));
}

static void check(const struct dcase *c, const struct dres *r, const char *how)
{
	size_t wl = c->want_len ? c->want_len : strlen(c->want_body);

	if (c->flags & F_BIN)
		wl = c->in_len ? c->in_len : strlen(c->in);
	if (c->want_reject == DATA_REJECT_TOO_BIG && (c->flags & F_BIN))
		wl = c->max_msg;
	T_CHECK(!r->overflow, "%s: body overflow", how);
	T_CHECK(r->body_len == wl && memcmp(r->body, c->want_body, wl) == 0,
		"%s: body: got \"%.*s\" (%zu), want \"%s\"", how, (int)r->body_len, r->body,
		r->body_len, c->want_body);
	T_CHECK(r->end == c->want_end, "%s: end: got %ld, want %ld", how, r->end, c->want_end);
	T_CHECK(r->n_rejected == (c->want_reject != DATA_REJECT_NONE),
		"%s: REJECTED events: got %d, want %d", how, r->n_rejected,
		c->want_reject != DATA_REJECT_NONE);
}

static void test_decoder(void)
{
	size_t i, k, len;
	size_t cuts[256];
	struct dres r;
	char how[64];

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct dcase *c = &cases[i];

		T_CASE(c->name);
		len = c->in_len ? c->in_len : strlen(c->in);
		run_split(c, NULL, 0, &r);
		check(c, &r, "whole");
		for (k = 1; k < len && k <= 256; k++)
			cuts[k - 1] = k;
		run_split(c, cuts, len - 1, &r);
		check(c, &r, "byte by byte");
		for (k = 1; k < len; k++) {
			snprintf(how, sizeof(how), "split at %zu", k);
			run_split(c, &k, 1, &r);
			check(c, &r, how);
		}
	}
}

static void test_bdat_parse(void)
{
	static const struct {
		const char *name, *in;
		int want;
		uint64_t left;
		bool last;
	} bc[] = {
		{ "zero", "0", 0, 0, false },
		{ "zero last", "0 LAST", 0, 0, true },
		{ "last lower case", "12 last", 0, 12, true },
		{ "max", "18446744073709551615", 0, UINT64_MAX, false },
		{ "overflow", "18446744073709551616", -1, 0, false },
		{ "21 digits", "000000000000000000001", -1, 0, false },
		{ "empty", "", -1, 0, false },
		{ "leading space", " 1", -1, 0, false },
		{ "LAS", "1 LAS", -1, 0, false },
		{ "two spaces", "1  LAST", -1, 0, false },
		{ "LASTX", "1 LASTX", -1, 0, false },
		{ "junk", "1x", -1, 0, false },
		{ "negative", "-1", -1, 0, false },
	};
	size_t i;

	for (i = 0; i < sizeof(bc) / sizeof(bc[0]); i++) {
		struct data_bdat b;
		void *base;
		size_t maplen, len = strlen(bc[i].in);
		const uint8_t *g = t_guard_copy(bc[i].in, len, &base, &maplen);
		int rc = data_bdat_parse(g, len, &b);

		T_CASE(bc[i].name);
		T_EQ_INT(rc, bc[i].want);
		T_EQ_INT(b.left == bc[i].left, 1);
		T_EQ_INT(b.is_last, bc[i].last);
		t_guard_free(base, maplen);
	}
	{
		struct data_bdat b = { 5, false };

		T_CASE("bdat take");
		T_EQ_INT(data_bdat_take(&b, 3), 3);
		T_EQ_INT(data_bdat_take(&b, 3), 2);
		T_EQ_INT(data_bdat_take(&b, 3), 0);
	}
}

int main(void)
{
	test_decoder();
	test_bdat_parse();
	return t_done();
}
