/*
 * bench.h - shared pieces of ringmta-bench: clock, latency histogram,
 * message templates and the body checksum, option helpers.
 *
 * The histogram is HDR style: log-linear buckets with BENCH_HIST_SUB_BITS
 * bits of mantissa, so every recorded value is kept within 1/32 (3 %) of
 * its true value from 1 us to 2^40 us, in a fixed array (no allocation;
 * one writer per histogram, readers in other threads take racy but
 * atomic snapshots for the per-second report).
 *
 * The checksum: `send` puts one header in every message,
 *     X-Ringmta-Bench: run=<16 hex> seq=<decimal> len=<body octets> sum=<16 hex>
 * where sum is bench_sum over the body (the octets after the blank line
 * that ends the header, as sent before dot-stuffing, CRLFs included).
 * `sink` recomputes it over what it receives (after dot-unstuffing) and
 * counts ok / bad / missing / duplicate (same run and seq seen twice), so
 * corruption and duplication through a relay are detected. A relay may
 * add header lines (Received:); it must not change the body.
 */
#ifndef RINGMTA_BENCH_H
#define RINGMTA_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* BENCH_HIST_SUB_BITS - mantissa bits: 32 sub-buckets per power of two (3 % resolution). */
#define BENCH_HIST_SUB_BITS 5
#define BENCH_HIST_SUB (1u << BENCH_HIST_SUB_BITS)
/* BENCH_HIST_MAX_EXP - values up to 2^40 us (12 days); larger are clamped into the last bucket. */
#define BENCH_HIST_MAX_EXP 40
#define BENCH_HIST_BUCKETS ((BENCH_HIST_MAX_EXP - BENCH_HIST_SUB_BITS + 1) * BENCH_HIST_SUB)

/* struct bench_hist - latency histogram in microseconds. */
struct bench_hist {
	uint64_t count;
	uint64_t max_us;
	uint64_t sum_us;
	uint64_t b[BENCH_HIST_BUCKETS];
};

/* bench_hist_add - record one value (single writer; relaxed atomic stores so snapshots are race-free). */
void bench_hist_add(struct bench_hist *h, uint64_t us);
/* bench_hist_snapshot - copy src into dst with relaxed atomic loads (any thread). */
void bench_hist_snapshot(struct bench_hist *dst, const struct bench_hist *src);
/* bench_hist_merge - dst += src (plain; both quiescent). */
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src);
/* bench_hist_sub - dst = a - b, for interval reports (b an earlier snapshot of a). */
void bench_hist_sub(struct bench_hist *dst, const struct bench_hist *a, const struct bench_hist *b);
/* bench_hist_pct - the value at percentile p (0..100): the highest value of its bucket; 0 when empty. */
uint64_t bench_hist_pct(const struct bench_hist *h, double p);
/* bench_hist_sum_buckets - the sum of the bucket counts (equals count; tests check it). */
uint64_t bench_hist_sum_buckets(const struct bench_hist *h);

/* bench_now_ns - CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* relaxed single-writer counters: the owner thread adds, any thread reads. */
static inline void bench_ctr_add(uint64_t *c, uint64_t n)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline uint64_t bench_ctr_get(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/* struct bench_sum - the body checksum, fed in any split (a 64-bit word hash). */
struct bench_sum {
	uint64_t h;
	uint64_t word;
	unsigned n_word;   /* bytes in word (0..7) */
	uint64_t len;
};

void bench_sum_init(struct bench_sum *s);
void bench_sum_update(struct bench_sum *s, const uint8_t *p, size_t len);
uint64_t bench_sum_final(const struct bench_sum *s);

/* BENCH_HDR - the header name the checksum travels in. */
#define BENCH_HDR "X-Ringmta-Bench:"
/* BENCH_HDR_LINE_MAX - header lines the sink keeps for parsing; longer ones are skipped (ours is < 120). */
#define BENCH_HDR_LINE_MAX 256

/*
 * struct bench_check - the sink's per-message verifier: finds our header,
 * then checksums the body. Fed the decoded message bytes in any split.
 */
struct bench_check {
	bool in_body;
	bool has_hdr;
	bool line_cut;
	size_t line_len;
	char line[BENCH_HDR_LINE_MAX];
	uint64_t run, seq, len, sum;
	struct bench_sum body;
};

void bench_check_init(struct bench_check *c);
void bench_check_feed(struct bench_check *c, const uint8_t *p, size_t len);
/* enum bench_check_result - verdict at end of data. */
enum bench_check_result { BENCH_CHECK_OK, BENCH_CHECK_BAD, BENCH_CHECK_MISSING };
enum bench_check_result bench_check_end(const struct bench_check *c);

/*
 * struct bench_tmpl - one message size: the body (generated once) and its
 * checksum. Messages of this size differ only in their header.
 */
struct bench_tmpl {
	size_t size;       /* target total size (header + body), octets */
	unsigned weight;   /* share in a distribution */
	uint8_t *body;
	size_t body_len;
	uint64_t sum;
};

/* BENCH_HDR_BYTES - the header block we format per message (< 512 with the longest addresses). */
#define BENCH_HDR_BYTES 768

/* bench_tmpl_make - allocate and fill t->body for t->size. Returns 0 or -ENOMEM. */
int bench_tmpl_make(struct bench_tmpl *t);
void bench_tmpl_free(struct bench_tmpl *t);
/* bench_hdr_format - the header block for one message into out (cap >= BENCH_HDR_BYTES); returns its length. */
size_t bench_hdr_format(char *out, size_t cap, const struct bench_tmpl *t, uint64_t run,
			uint64_t seq, const char *from, const char *to);

/* bench_fmt_dec - v in decimal into out (room for 20), no NUL; returns the length. */
size_t bench_fmt_dec(char *out, uint64_t v);
/* bench_fmt_hex - v in lower-case hex, zero-padded to width (<= 16), into out
 * (room for 16), no NUL; returns the length. */
size_t bench_fmt_hex(char *out, uint64_t v, size_t width);

/* bench_parse_size - "1024", "1k", "100k", "1m" (binary units) into *out. Returns 0 or -EINVAL. */
int bench_parse_size(const char *s, size_t *out);
/* bench_parse_hostport - "host:port" (IPv4 dotted, or "localhost") into an AF_INET address. Returns 0 or -EINVAL. */
struct sockaddr_in;
int bench_parse_hostport(const char *s, struct sockaddr_in *sa);

/* xorshift64* - the tool's PRNG (deterministic per reactor). */
static inline uint64_t bench_rand(uint64_t *st)
{
	uint64_t x = *st;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*st = x;
	return x * 0x2545F4914F6CDD1Dull;
}

/*
 * struct bench_rxq - received provided buffers a session has not consumed
 * yet, oldest first: the chunks of a multishot receive that arrive while
 * its SMTP state machine cannot take more. The session cancels the receive
 * at the first such chunk, so only chunks already in flight queue up; the
 * buffers go back to the reactor's ring as they are consumed.
 */
/* BENCH_RXQ_MAX - chunks held per session; the kernel posts at most 32 per
 * wake-up of one multishot receive (MULTISHOT_MAX_RETRY), and we cancel at
 * the first. */
#define BENCH_RXQ_MAX 64
struct bench_rxq {
	uint16_t bid[BENCH_RXQ_MAX];
	uint32_t off[BENCH_RXQ_MAX], len[BENCH_RXQ_MAX];
	unsigned head, n;
};

/* bench_rxq_push - queue buffer bid holding len bytes; false when full. */
static inline bool bench_rxq_push(struct bench_rxq *q, unsigned bid, size_t len)
{
	unsigned i = (q->head + q->n) % BENCH_RXQ_MAX;

	if (q->n == BENCH_RXQ_MAX)
		return false;
	q->bid[i] = (uint16_t)bid;
	q->off[i] = 0;
	q->len[i] = (uint32_t)len;
	q->n++;
	return true;
}

int bench_send_main(int argc, char **argv);
int bench_sink_main(int argc, char **argv);

#endif
