/*
 * bench_util_test - unit tests for bench_util: histogram, checksum, the
 *                   sink's verifier, message templates, option parsers.
 *
 * Owns: nothing; table cases that print "got X, want Y".
 * Must not: do I/O beyond stdout/stderr.
 * Interface: run by `meson test --suite unit` (test name bench_util).
 * Limits: bodies up to 100 KiB, verified at every split offset of a
 *         short message and at coarse steps for a long one.
 * Errors: exit 1 on any failed case.
 * Standards: none.
 */
#include "bench.h"

#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_fail;

#define CHECK(cond, ...) do { \
	if (!(cond)) { \
		n_fail++; \
		printf("FAIL %s:%d: ", __FILE__, __LINE__); \
		printf(__VA_ARGS__); \
		printf("\n"); \
	} \
} while (0)

/* test_hist - percentiles within the bucket resolution, bucket sums, merge/sub. */
static void test_hist(void)
{
	static struct bench_hist h, h2, d;
	uint64_t v;

	memset(&h, 0, sizeof(h));
	for (v = 1; v <= 100000; v++)
		bench_hist_add(&h, v);
	CHECK(h.count == 100000, "count: got %" PRIu64 ", want 100000", h.count);
	CHECK(bench_hist_sum_buckets(&h) == 100000, "bucket sum: got %" PRIu64 ", want 100000",
	      bench_hist_sum_buckets(&h));
	for (unsigned i = 0; i < 4; i++) {
		static const double pct[] = { 50, 90, 99, 99.9 };
		double want = pct[i] * 1000, got = (double)bench_hist_pct(&h, pct[i]);

		CHECK(got >= want * 0.97 && got <= want * 1.04, "p%.1f: got %.0f, want %.0f +- 3 %%",
		      pct[i], got, want);
	}
	CHECK(bench_hist_pct(&h, 100) == 100000, "p100: got %" PRIu64 ", want 100000",
	      bench_hist_pct(&h, 100));
	bench_hist_add(&h, 1ull << 50);   /* beyond the range: clamped, still counted */
	CHECK(bench_hist_sum_buckets(&h) == 100001, "clamped value: bucket sum got %" PRIu64 ", want 100001",
	      bench_hist_sum_buckets(&h));
	memset(&h2, 0, sizeof(h2));
	bench_hist_snapshot(&h2, &h);
	bench_hist_add(&h, 7);
	bench_hist_sub(&d, &h, &h2);
	CHECK(d.count == 1 && bench_hist_pct(&d, 50) == 7, "interval: got n=%" PRIu64 " p50=%" PRIu64
	      ", want n=1 p50=7", d.count, bench_hist_pct(&d, 50));
	bench_hist_merge(&h2, &d);
	CHECK(h2.count == h.count, "merge: got %" PRIu64 ", want %" PRIu64, h2.count, h.count);
	memset(&d, 0, sizeof(d));
	CHECK(bench_hist_pct(&d, 99) == 0, "empty: got %" PRIu64 ", want 0", bench_hist_pct(&d, 99));
}

/* test_sum_split - the checksum is the same whatever the split. */
static void test_sum_split(void)
{
	uint8_t buf[67];
	struct bench_sum a, b;
	uint64_t want;
	size_t i, j;

	for (i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 37 + 11);
	bench_sum_init(&a);
	bench_sum_update(&a, buf, sizeof(buf));
	want = bench_sum_final(&a);
	for (i = 0; i <= sizeof(buf); i++) {
		for (j = i; j <= sizeof(buf); j++) {
			bench_sum_init(&b);
			bench_sum_update(&b, buf, i);
			bench_sum_update(&b, buf + i, j - i);
			bench_sum_update(&b, buf + j, sizeof(buf) - j);
			CHECK(bench_sum_final(&b) == want, "split %zu/%zu: got %016" PRIx64 ", want %016" PRIx64,
			      i, j, bench_sum_final(&b), want);
		}
	}
	buf[30] ^= 1;
	bench_sum_init(&b);
	bench_sum_update(&b, buf, sizeof(buf));
	CHECK(bench_sum_final(&b) != want, "one flipped bit: checksum unchanged");
}

/* message - the bytes the sink sees for t (header block + body). */
static size_t message(uint8_t *out, size_t cap, const struct bench_tmpl *t, uint64_t seq)
{
	char hdr[BENCH_HDR_BYTES];
	size_t n = bench_hdr_format(hdr, sizeof(hdr), t, 0x1234, seq, "a@b.test", "c@d.test");

	if (n + t->body_len > cap)
		return 0;
	memcpy(out, hdr, n);
	memcpy(out + n, t->body, t->body_len);
	return n + t->body_len;
}

/* check_split - feed msg[0..len) to a verifier in two pieces split at off. */
static enum bench_check_result check_split(const uint8_t *msg, size_t len, size_t off,
					   struct bench_check *c)
{
	bench_check_init(c);
	bench_check_feed(c, msg, off);
	bench_check_feed(c, msg + off, len - off);
	return bench_check_end(c);
}

static void test_check(void)
{
	static uint8_t msg[110 * 1024];
	static struct bench_check c;
	static const size_t sizes[] = { 1, 300, 1024, 100 * 1024 };
	size_t k, off, len;

	for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		struct bench_tmpl t = { .size = sizes[k], .weight = 1 };
		size_t step = sizes[k] > 4096 ? 997 : 1;

		CHECK(bench_tmpl_make(&t) == 0, "tmpl %zu: no memory", sizes[k]);
		CHECK(t.body_len >= 2 && t.body[t.body_len - 2] == '\r' && t.body[t.body_len - 1] == '\n',
		      "tmpl %zu: body does not end with CRLF", sizes[k]);
		for (size_t i = 0, col = 0; i < t.body_len; i++, col++) {
			if (t.body[i] == '\n')
				col = 0;
			CHECK(col <= 78, "tmpl %zu: line longer than 78 at %zu", sizes[k], i);
			if (col > 78)
				break;
		}
		len = message(msg, sizeof(msg), &t, 42);
		for (off = 0; off <= len; off += step) {
			enum bench_check_result r = check_split(msg, len, off, &c);

			CHECK(r == BENCH_CHECK_OK && c.seq == 42 && c.run == 0x1234,
			      "size %zu split %zu: got result %d seq %" PRIu64 ", want OK seq 42",
			      sizes[k], off, (int)r, c.seq);
			if (r != BENCH_CHECK_OK)
				break;
		}
		CHECK(check_split(msg, len - 1, len / 3, &c) == BENCH_CHECK_BAD, "size %zu truncated: got not BAD",
		      sizes[k]);
		msg[len - t.body_len] ^= 0x20;   /* corrupt the body's first octet */
		CHECK(check_split(msg, len, len / 2, &c) == BENCH_CHECK_BAD, "size %zu corrupted: got not BAD",
		      sizes[k]);
		bench_tmpl_free(&t);
	}
	len = (size_t)snprintf((char *)msg, sizeof(msg), "Subject: x\r\n\r\nbody\r\n");
	CHECK(check_split(msg, len, 3, &c) == BENCH_CHECK_MISSING, "no header: got not MISSING");
}

static void test_parse(void)
{
	static const struct { const char *in; int rc; size_t want; } sz[] = {
		{ "1024", 0, 1024 }, { "1k", 0, 1024 }, { "100K", 0, 102400 }, { "1m", 0, 1048576 },
		{ "2kb", 0, 2048 }, { "0", -22, 0 }, { "k", -22, 0 }, { "1g", -22, 0 }, { "", -22, 0 },
	};
	struct sockaddr_in sa;
	size_t i, v;

	for (i = 0; i < sizeof(sz) / sizeof(sz[0]); i++) {
		int rc = bench_parse_size(sz[i].in, &v);

		CHECK(rc == sz[i].rc && (rc || v == sz[i].want), "size %s: got rc %d value %zu, want rc %d value %zu",
		      sz[i].in, rc, rc ? 0 : v, sz[i].rc, sz[i].want);
	}
	CHECK(bench_parse_hostport("127.0.0.1:2525", &sa) == 0 && ntohs(sa.sin_port) == 2525,
	      "hostport 127.0.0.1:2525: rejected");
	CHECK(bench_parse_hostport("localhost:25", &sa) == 0, "hostport localhost:25: rejected");
	CHECK(bench_parse_hostport("127.0.0.1", &sa) < 0, "hostport without port: accepted");
	CHECK(bench_parse_hostport("127.0.0.1:70000", &sa) < 0, "hostport port 70000: accepted");
}

int main(void)
{
	test_hist();
	test_sum_split();
	test_check();
	test_parse();
	if (n_fail) {
		printf("bench_util_test: %d failed\n", n_fail);
		return 1;
	}
	printf("bench_util_test: ok\n");
	return 0;
}
