/*
 * fuzz_bdat - libFuzzer target for BDAT framing (RFC 3030).
 *
 * Input: a BDAT argument up to the first LF, then byte f (flags: bit 0
 * lenient LF, 1 lenient CR, 2 BINARYMIME), then chunk bytes. Checks: an
 * accepted argument round-trips through its canonical form; chunk
 * framing with data_bdat_take never over-consumes; decoding the chunks
 * one by one (sizes from the remaining bytes) gives the same body and
 * reject as decoding their concatenation; BDAT mode never reports an end.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringmta/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t out_a[1 << 16], out_b[1 << 16];

/* run - decode p[0..n) in pieces of the given sizes; returns output length. */
static size_t run(const struct data_limits *lim, const uint8_t *p, size_t n, const uint8_t *sizes,
		  size_t n_sizes, uint8_t *out, enum data_reject *rej)
{
	struct data_dec d;
	size_t at = 0, o = 0, k = 0;

	data_dec_init(&d, lim, DATA_MODE_BDAT);
	while (at < n) {
		struct data_bdat b = { n_sizes ? 1 + sizes[k++ % n_sizes] : n - at, false };
		size_t avail = n - at, take;

		take = data_bdat_take(&b, avail);
		if (take > avail || take == 0)
			abort();
		for (size_t off = 0; off < take;) {
			size_t used, ol;
			const uint8_t *op;
			int st = data_dec_run(&d, p + at + off, take - off, &used, &op, &ol);

			if (st == DATA_END || used > take - off)
				abort();
			if (ol && o + ol <= sizeof(out_a)) {
				memcpy(out + o, op, ol);
				o += ol;
			}
			off += used;
		}
		at += take;
	}
	data_dec_finish(&d);
	*rej = data_dec_reject(&d);
	return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *lf = memchr(data, '\n', size);
	struct data_bdat b, c;
	struct data_limits lim;
	char canon[40];
	size_t alen, n_a, n_b;
	enum data_reject ra, rb;

	alen = lf ? (size_t)(lf - data) : size;
	if (data_bdat_parse(data, alen, &b) == 0) {
		int n = snprintf(canon, sizeof(canon), "%" PRIu64 "%s", b.left, b.is_last ? " LAST" : "");

		if (data_bdat_parse((const uint8_t *)canon, (size_t)n, &c) != 0 || c.left != b.left ||
		    c.is_last != b.is_last)
			abort();
	}
	if (lf == NULL || size - alen < 2)
		return 0;
	memset(&lim, 0, sizeof(lim));
	lim.lenient_bare_lf = data[alen + 1] & 1;
	lim.lenient_bare_cr = data[alen + 1] & 2;
	lim.is_binary = data[alen + 1] & 4;
	lim.allow_8bit = true;
	lim.max_line_bytes = 64;
	lim.max_message_bytes = 4096;
	data += alen + 2;
	size -= alen + 2;
	n_a = run(&lim, data, size, NULL, 0, out_a, &ra);
	n_b = run(&lim, data, size, data, size < 8 ? size : 8, out_b, &rb);
	if (n_a != n_b || ra != rb || memcmp(out_a, out_b, n_a) != 0)
		abort();
	return 0;
}
