/*
 * fuzz_data - libFuzzer target for the DATA/BDAT body decoder.
 *
 * Input: byte 0 flags (bit 0 lenient LF, 1 lenient CR, 2 8-bit allowed,
 * 3 BDAT mode, 4 BINARYMIME), byte 1 the line limit, byte 2 the size
 * limit, byte 3 a split seed; the rest is the stream. The stream is decoded
 * whole, byte by byte and in pseudo-random pieces. Checks: all three give
 * the same body, end offset and reject reason (chunking independence);
 * DATA ends exactly at the first CRLF "." CRLF (or a leading "." CRLF) and
 * nowhere else, whatever the leniencies (the smuggling property); BDAT
 * never ends; an accepted body has only CRLF line ends (unless bare CR is
 * lenient or BINARYMIME) and respects the size limit.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ringmta/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define OUT_MAX (1u << 20)

struct run {
	uint8_t *out;
	size_t out_len;
	long end;
	int n_rejected;
	enum data_reject reject;
};

static void feed(struct data_dec *d, struct run *r, const uint8_t *p, size_t n, size_t base, bool *done)
{
	size_t off = 0, used, out_len;
	const uint8_t *out;

	while (!*done) {
		int st = data_dec_run(d, p + off, n - off, &used, &out, &out_len);

		if (used > n - off)
			abort();
		if (out_len) {
			if (st != DATA_BODY && st != DATA_REJECTED)
				abort();
			if (r->out_len + out_len <= OUT_MAX)
				memcpy(r->out + r->out_len, out, out_len);
			r->out_len += out_len;
		}
		off += used;
		if (st == DATA_REJECTED)
			r->n_rejected++;
		if (st == DATA_END) {
			r->end = (long)(base + off);
			*done = true;
		}
		if (st == DATA_NEED_MORE) {
			if (off != n)
				abort();
			return;
		}
	}
}

static uint32_t rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* decode - mode 0 whole, 1 byte by byte, 2 random pieces */
static void decode(const struct data_limits *lim, enum data_mode mode, const uint8_t *p, size_t n,
		   int how, uint32_t seed, struct run *r)
{
	struct data_dec d;
	size_t at = 0;
	bool done = false;

	r->out_len = 0;
	r->end = -1;
	r->n_rejected = 0;
	data_dec_init(&d, lim, mode);
	while (at < n && !done) {
		size_t k = how == 0 ? n - at : how == 1 ? 1 : 1 + rnd(&seed) % 16;

		if (k > n - at)
			k = n - at;
		feed(&d, r, p + at, k, at, &done);
		at += k;
	}
	if (mode == DATA_MODE_BDAT && data_dec_finish(&d) == DATA_REJECTED)
		r->n_rejected++;
	r->reject = data_dec_reject(&d);
	if (r->n_rejected != (r->reject != DATA_REJECT_NONE))
		abort();
}

static long first_end(const uint8_t *p, size_t n)
{
	size_t i;

	if (n >= 3 && memcmp(p, ".\r\n", 3) == 0)
		return 3;
	for (i = 0; i + 5 <= n; i++) {
		if (memcmp(p + i, "\r\n.\r\n", 5) == 0)
			return (long)(i + 5);
	}
	return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *bufs[3];
	struct data_limits lim;
	struct run r[3];
	enum data_mode mode;
	const uint8_t *p;
	size_t n, i;

	if (size < 4)
		return 0;
	for (i = 0; i < 3; i++) {
		if (bufs[i] == NULL)
			bufs[i] = malloc(OUT_MAX);
		r[i].out = bufs[i];
	}
	memset(&lim, 0, sizeof(lim));
	lim.lenient_bare_lf = data[0] & 1;
	lim.lenient_bare_cr = data[0] & 2;
	lim.allow_8bit = data[0] & 4;
	mode = data[0] & 8 ? DATA_MODE_BDAT : DATA_MODE_DOT;
	lim.is_binary = mode == DATA_MODE_BDAT && (data[0] & 16);
	lim.max_line_bytes = 3 + data[1];
	lim.max_message_bytes = data[2] == 255 ? UINT64_MAX : (uint64_t)data[2] * 8;
	p = data + 4;
	n = size - 4;
	for (i = 0; i < 3; i++)
		decode(&lim, mode, p, n, (int)i, data[3] | 1u, &r[i]);
	for (i = 1; i < 3; i++) {
		if (r[i].out_len != r[0].out_len || r[i].end != r[0].end || r[i].reject != r[0].reject ||
		    memcmp(r[i].out, r[0].out, r[0].out_len < OUT_MAX ? r[0].out_len : OUT_MAX) != 0)
			abort();
	}
	if (mode == DATA_MODE_BDAT ? r[0].end != -1 : r[0].end != first_end(p, n))
		abort();
	if (r[0].reject == DATA_REJECT_NONE && r[0].out_len <= OUT_MAX) {
		if (r[0].out_len > lim.max_message_bytes)
			abort();
		if (!lim.lenient_bare_cr && !lim.is_binary) {
			for (i = 0; i < r[0].out_len; i++) {
				if (r[0].out[i] == '\n' && (i == 0 || r[0].out[i - 1] != '\r'))
					abort();
				if (r[0].out[i] == '\r' && i + 1 < r[0].out_len && r[0].out[i + 1] != '\n')
					abort();
			}
		}
		if (!lim.allow_8bit && !lim.is_binary) {
			for (i = 0; i < r[0].out_len; i++) {
				if (r[0].out[i] >= 0x80)
					abort();
			}
		}
	}
	return 0;
}
