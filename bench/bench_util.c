/*
 * bench_util - ringmta-bench's histogram, checksum, message templates and
 *              option parsers.
 *
 * Owns: nothing global; every object is the caller's.
 * Must not: do I/O (except malloc in bench_tmpl_make, once per size at start).
 * Interface: bench/bench.h
 * Limits: histogram range 1 us .. 2^40 us (clamped); header lines kept
 *         for parsing: BENCH_HDR_LINE_MAX.
 * Errors: -EINVAL for bad option strings, -ENOMEM.
 * Standards: RFC 5322 2.1.1 (lines <= 78 octets plus CRLF in the body we make).
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- histogram ----------------------------------------------------------- */

static unsigned hist_index(uint64_t v)
{
	unsigned e;

	if (v < BENCH_HIST_SUB)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v);
	if (e > BENCH_HIST_MAX_EXP)
		return BENCH_HIST_BUCKETS - 1;
	return (e - BENCH_HIST_SUB_BITS + 1) * BENCH_HIST_SUB +
	       (unsigned)((v >> (e - BENCH_HIST_SUB_BITS)) & (BENCH_HIST_SUB - 1));
}

/* hist_value - the highest value that maps to bucket i (HDR's "highest equivalent value"). */
static uint64_t hist_value(unsigned i)
{
	unsigned e, sub;

	if (i < BENCH_HIST_SUB)
		return i;
	e = i / BENCH_HIST_SUB + BENCH_HIST_SUB_BITS - 1;
	sub = i % BENCH_HIST_SUB;
	return (((uint64_t)BENCH_HIST_SUB + sub) << (e - BENCH_HIST_SUB_BITS)) +
	       ((uint64_t)1 << (e - BENCH_HIST_SUB_BITS)) - 1;
}

void bench_hist_add(struct bench_hist *h, uint64_t us)
{
	bench_ctr_add(&h->b[hist_index(us)], 1);
	bench_ctr_add(&h->sum_us, us);
	if (us > h->max_us)
		__atomic_store_n(&h->max_us, us, __ATOMIC_RELAXED);
	bench_ctr_add(&h->count, 1);
}

void bench_hist_snapshot(struct bench_hist *dst, const struct bench_hist *src)
{
	unsigned i;

	dst->count = bench_ctr_get(&src->count);
	dst->max_us = bench_ctr_get(&src->max_us);
	dst->sum_us = bench_ctr_get(&src->sum_us);
	for (i = 0; i < BENCH_HIST_BUCKETS; i++)
		dst->b[i] = bench_ctr_get(&src->b[i]);
}

void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
	unsigned i;

	dst->count += src->count;
	dst->sum_us += src->sum_us;
	if (src->max_us > dst->max_us)
		dst->max_us = src->max_us;
	for (i = 0; i < BENCH_HIST_BUCKETS; i++)
		dst->b[i] += src->b[i];
}

void bench_hist_sub(struct bench_hist *dst, const struct bench_hist *a, const struct bench_hist *b)
{
	unsigned i;

	dst->count = a->count - b->count;
	dst->sum_us = a->sum_us - b->sum_us;
	dst->max_us = 0;
	for (i = 0; i < BENCH_HIST_BUCKETS; i++) {
		dst->b[i] = a->b[i] - b->b[i];
		if (dst->b[i])
			dst->max_us = hist_value(i);
	}
}

uint64_t bench_hist_pct(const struct bench_hist *h, double p)
{
	uint64_t want, seen = 0, total = bench_hist_sum_buckets(h);
	unsigned i;

	if (total == 0)
		return 0;
	if (p >= 100.0)
		return h->max_us;
	want = (uint64_t)((double)total * p / 100.0 + 0.5);
	if (want < 1)
		want = 1;
	for (i = 0; i < BENCH_HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= want) {
			uint64_t v = hist_value(i);
			return (h->max_us && v > h->max_us) ? h->max_us : v;
		}
	}
	return h->max_us;
}

uint64_t bench_hist_sum_buckets(const struct bench_hist *h)
{
	uint64_t n = 0;
	unsigned i;

	for (i = 0; i < BENCH_HIST_BUCKETS; i++)
		n += h->b[i];
	return n;
}

/* --- checksum ------------------------------------------------------------ */

#define SUM_SEED 0x6a09e667f3bcc908ull
#define SUM_MUL 0x9e3779b97f4a7c15ull

static inline uint64_t sum_mix(uint64_t h, uint64_t w)
{
	h ^= w;
	h *= SUM_MUL;
	return h ^ (h >> 31);
}

void bench_sum_init(struct bench_sum *s)
{
	memset(s, 0, sizeof(*s));
	s->h = SUM_SEED;
}

void bench_sum_update(struct bench_sum *s, const uint8_t *p, size_t len)
{
	uint64_t w;

	s->len += len;
	while (len > 0 && s->n_word > 0) {
		s->word |= (uint64_t)*p++ << (8 * s->n_word);
		len--;
		if (++s->n_word == 8) {
			s->h = sum_mix(s->h, s->word);
			s->word = 0;
			s->n_word = 0;
		}
	}
	while (len >= 8) {
		memcpy(&w, p, 8);   /* little-endian hosts only: x86-64, arm64 */
		s->h = sum_mix(s->h, w);
		p += 8;
		len -= 8;
	}
	while (len > 0) {
		s->word |= (uint64_t)*p++ << (8 * s->n_word);
		s->n_word++;
		len--;
	}
}

uint64_t bench_sum_final(const struct bench_sum *s)
{
	return sum_mix(sum_mix(s->h, s->word), s->len);
}

/* --- the sink's verifier ------------------------------------------------- */

void bench_check_init(struct bench_check *c)
{
	memset(c, 0, offsetof(struct bench_check, line));
	c->run = c->seq = c->len = c->sum = 0;
	bench_sum_init(&c->body);
}

/* hdr_field - parse " KEY=<number>" at *p in base 10 or 16 (1 to 20 digits); advances *p. */
static bool hdr_field(const char **p, const char *key, unsigned base, uint64_t *out)
{
	const char *s = *p;
	size_t key_len = strlen(key);
	uint64_t v = 0;
	unsigned n = 0;

	while (*s == ' ')
		s++;
	if (strncmp(s, key, key_len) != 0)
		return false;
	for (s += key_len; n < 20; s++, n++) {
		unsigned d;

		if (*s >= '0' && *s <= '9')
			d = (unsigned)(*s - '0');
		else if (base == 16 && (*s | 0x20) >= 'a' && (*s | 0x20) <= 'f')
			d = (unsigned)((*s | 0x20) - 'a' + 10);
		else
			break;
		v = v * base + d;
	}
	if (n == 0)
		return false;
	*p = s;
	*out = v;
	return true;
}

/* check_header - parse our header line ("X-Ringmta-Bench: run=.. seq=.. len=.. sum=..");
 * by hand: sscanf was the sink's largest libc cost per message. */
static void check_header(struct bench_check *c)
{
	const char *p = c->line + sizeof(BENCH_HDR) - 1;
	uint64_t run, seq, len, sum;

	c->line[c->line_len] = '\0';
	if (hdr_field(&p, "run=", 16, &run) && hdr_field(&p, "seq=", 10, &seq) &&
	    hdr_field(&p, "len=", 10, &len) && hdr_field(&p, "sum=", 16, &sum)) {
		c->has_hdr = true;
		c->run = run;
		c->seq = seq;
		c->len = len;
		c->sum = sum;
	}
}

void bench_check_feed(struct bench_check *c, const uint8_t *p, size_t len)
{
	size_t i;

	for (i = 0; i < len && !c->in_body; i++) {
		uint8_t ch = p[i];

		if (ch == '\r')
			continue;
		if (ch != '\n') {
			if (c->line_len < BENCH_HDR_LINE_MAX - 1)
				c->line[c->line_len++] = (char)ch;
			else
				c->line_cut = true;
			continue;
		}
		if (c->line_len == 0 && !c->line_cut) {
			c->in_body = true;
		} else if (!c->line_cut && c->line_len >= sizeof(BENCH_HDR) - 1 &&
			   memcmp(c->line, BENCH_HDR, sizeof(BENCH_HDR) - 1) == 0) {
			check_header(c);
		}
		c->line_len = 0;
		c->line_cut = false;
	}
	if (c->in_body && i < len)
		bench_sum_update(&c->body, p + i, len - i);
}

enum bench_check_result bench_check_end(const struct bench_check *c)
{
	if (!c->has_hdr)
		return BENCH_CHECK_MISSING;
	if (!c->in_body || c->body.len != c->len || bench_sum_final(&c->body) != c->sum)
		return BENCH_CHECK_BAD;
	return BENCH_CHECK_OK;
}

/* --- message templates --------------------------------------------------- */

/* BENCH_HDR_ESTIMATE - octets our header block takes with default addresses; the body gets the rest of --size. */
#define BENCH_HDR_ESTIMATE 260
/* BENCH_LINE_BYTES - body line length without CRLF (RFC 5322 2.1.1 recommends <= 78). */
#define BENCH_LINE_BYTES 76
/* BENCH_DOT_EVERY - every n-th body line starts with ".", so dot-stuffing is exercised end to end. */
#define BENCH_DOT_EVERY 50

int bench_tmpl_make(struct bench_tmpl *t)
{
	static const char alpha[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	size_t n = t->size > BENCH_HDR_ESTIMATE + 2 ? t->size - BENCH_HDR_ESTIMATE : 2;
	size_t off = 0, line = 0;
	struct bench_sum s;

	t->body = malloc(n);
	if (!t->body)
		return -ENOMEM;
	while (off < n) {
		size_t room = n - off, k, len;

		if (room == 2) {   /* the body always ends with CRLF */
			memcpy(t->body + off, "\r\n", 2);
			off += 2;
			break;
		}
		len = room - 2 < BENCH_LINE_BYTES ? room - 2 : BENCH_LINE_BYTES;
		if (room - 2 - len == 1)   /* never leave a single octet */
			len--;
		for (k = 0; k < len; k++)
			t->body[off + k] = (uint8_t)alpha[(line * 7 + k) % (sizeof(alpha) - 1)];
		if (line % BENCH_DOT_EVERY == BENCH_DOT_EVERY - 1)
			t->body[off] = '.';
		off += len;
		t->body[off++] = '\r';
		t->body[off++] = '\n';
		line++;
	}
	t->body_len = n;
	bench_sum_init(&s);
	bench_sum_update(&s, t->body, n);
	t->sum = bench_sum_final(&s);
	return 0;
}

void bench_tmpl_free(struct bench_tmpl *t)
{
	free(t->body);
	t->body = NULL;
}

size_t bench_fmt_dec(char *out, uint64_t v)
{
	char tmp[20];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

size_t bench_fmt_hex(char *out, uint64_t v, size_t width)
{
	static const char digits[] = "0123456789abcdef";
	char tmp[16];
	size_t n = 0, i;

	do {
		tmp[n++] = digits[v & 15];
		v >>= 4;
	} while (v);
	while (n < width && n < sizeof(tmp))
		tmp[n++] = '0';
	for (i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

/* struct hdr_out - bench_hdr_format's output: appends stop at cap - 1. */
struct hdr_out {
	char *p;
	size_t len, cap;
};

static void out_put(struct hdr_out *o, const char *s, size_t n)
{
	if (n > o->cap - 1 - o->len)
		n = o->cap - 1 - o->len;
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

static void out_str(struct hdr_out *o, const char *s)
{
	out_put(o, s, strlen(s));
}

static void out_dec(struct hdr_out *o, uint64_t v)
{
	char buf[20];

	out_put(o, buf, bench_fmt_dec(buf, v));
}

static void out_hex16(struct hdr_out *o, uint64_t v)
{
	char buf[16];

	out_put(o, buf, bench_fmt_hex(buf, v, 16));
}

/* bench_hdr_format - by hand rather than snprintf: it runs for every message
 * and was send's largest libc cost. */
size_t bench_hdr_format(char *out, size_t cap, const struct bench_tmpl *t, uint64_t run,
			uint64_t seq, const char *from, const char *to)
{
	struct hdr_out o = { .p = out, .len = 0, .cap = cap };

	if (cap == 0)
		return 0;
	out_str(&o, "From: <");
	out_str(&o, from);
	out_str(&o, ">\r\nTo: <");
	out_str(&o, to);
	out_str(&o, ">\r\nSubject: ringmta-bench ");
	out_dec(&o, seq);
	out_str(&o, "\r\nMessage-ID: <");
	out_hex16(&o, run);
	out_str(&o, ".");
	out_dec(&o, seq);
	out_str(&o, "@ringmta-bench.invalid>\r\n" BENCH_HDR " run=");
	out_hex16(&o, run);
	out_str(&o, " seq=");
	out_dec(&o, seq);
	out_str(&o, " len=");
	out_dec(&o, t->body_len);
	out_str(&o, " sum=");
	out_hex16(&o, t->sum);
	out_str(&o, "\r\n\r\n");
	out[o.len] = '\0';
	return o.len;
}

/* --- option parsing ------------------------------------------------------ */

int bench_parse_size(const char *s, size_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || !*s)
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	default: return -EINVAL;
	}
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end || v == 0 || v > (1ull << 30))
		return -EINVAL;
	*out = (size_t)v;
	return 0;
}

int bench_parse_hostport(const char *s, struct sockaddr_in *sa)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	char *end;
	unsigned long port;
	size_t hl;

	if (!colon)
		return -EINVAL;
	hl = (size_t)(colon - s);
	if (hl == 0 || hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, hl);
	host[hl] = '\0';
	port = strtoul(colon + 1, &end, 10);
	if (*end || port == 0 || port > 65535)
		return -EINVAL;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	if (strcmp(host, "localhost") == 0)
		strcpy(host, "127.0.0.1");
	if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
		return -EINVAL;
	return 0;
}
