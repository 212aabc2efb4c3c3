/*
 * fuzz_smtp_server - libFuzzer target for the session state machine.
 *
 * Input: byte 0 options (bit 0 offer STARTTLS, 1 lenient LF, 2 lenient CR,
 * 3 lenient 8-bit, 4 lenient colon, 5 small limits, 6 shutdown at the
 * end, 7 timeout at the end), bytes 1-2 a seed; the rest is the client's
 * byte stream. The stream is played twice: fed whole, and fed in random
 * pieces with some answers deferred (fed more while WAIT). The host's
 * answers are a function of the seed and the answer's index, so both runs
 * get the same answers.
 *
 * Checks, every run: a message is DATA_BEGIN (accepted), BODY*, then
 * exactly one DATA_END or DATA_ABORT, never two ends and no BODY outside;
 * no message is open at CLOSE; the output is always whole, well-formed
 * reply lines of <= 512 octets; CLOSE is sticky; the machine always makes
 * progress. Across runs: the same events (BODY bytes concatenated) and
 * the same output bytes, unless STARTTLS was accepted (the host, not the
 * server, must drop plaintext it has not fed yet).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringmta/smtp_server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
	uint64_t ev_hash, out_hash;
	uint32_t rng;
	unsigned n_answers;
	bool open, closed, tls_go, defer_ok;
	enum smtp_server_ev_kind deferred;   /* NEED_MORE: none */
	struct smtp_server_ev deferred_ev;
	uint16_t seed;
};

static struct smtp_server srv;

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;

	if (h == 0)
		h = 1469598103934665603ull;
	while (n--) {
		h ^= *b++;
		h *= 1099511628211ull;
	}
	return h;
}

static uint32_t rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* check_output - the buffered output is whole, well-formed reply lines. */
static void check_output(void)
{
	size_t n, i = 0;
	const uint8_t *p = smtp_server_output(&srv, &n);

	if (n > SMTP_SERVER_OUT_BYTES)
		abort();
	while (i < n) {
		const uint8_t *lf = memchr(p + i, '\n', n - i);
		size_t len, j;

		if (lf == NULL)
			abort();
		len = (size_t)(lf - (p + i)) + 1;
		if (len < 6 || len > SMTP_PROTO_REPLY_LINE_MAX || p[i + len - 2] != '\r')
			abort();
		if (p[i] < '2' || p[i] > '5' || p[i + 1] < '0' || p[i + 1] > '9' || p[i + 2] < '0' ||
		    p[i + 2] > '9' || (p[i + 3] != ' ' && p[i + 3] != '-'))
			abort();
		for (j = 4; j < len - 2; j++) {
			if (p[i + j] < 0x20 || p[i + j] > 0x7e)
				abort();
		}
		i += len;
	}
}

static void drain(struct run *r)
{
	size_t n;
	const uint8_t *p;

	check_output();
	p = smtp_server_output(&srv, &n);
	r->out_hash = fnv(r->out_hash, p, n);
	smtp_server_output_done(&srv, n);
}

/* choose - the answer for the i-th answerable event, same in every run. */
static enum smtp_reply_id choose(const struct run *r, enum smtp_server_ev_kind k, unsigned i)
{
	uint32_t x = (uint32_t)r->seed * 2654435761u ^ (i + 1) * 40503u;

	x = (x ^ (x >> 15)) % 8;
	switch (k) {
	case SMTP_SERVER_EV_MAIL:
		return x == 0 ? SMTP_REPLY_SENDER_REJECTED : x == 1 ? SMTP_REPLY_LOCAL_ERROR : SMTP_REPLY_MAIL_OK;
	case SMTP_SERVER_EV_RCPT:
		return x == 0 ? SMTP_REPLY_RELAY_DENIED : x == 1 ? SMTP_REPLY_USER_UNKNOWN : SMTP_REPLY_RCPT_OK;
	case SMTP_SERVER_EV_DATA_BEGIN:
		return x == 0 ? SMTP_REPLY_NO_STORAGE : SMTP_REPLY_OK;
	case SMTP_SERVER_EV_DATA_END:
		return x == 0 ? SMTP_REPLY_NO_STORAGE : SMTP_REPLY_QUEUED;
	default:
		return x < 2 ? SMTP_REPLY_TLS_UNAVAILABLE : SMTP_REPLY_TLS_GO;
	}
}

static void answer(struct run *r, enum smtp_server_ev_kind k)
{
	enum smtp_reply_id id = choose(r, k, r->n_answers++);
	char q[16];

	if (k == SMTP_SERVER_EV_DATA_BEGIN && id == SMTP_REPLY_OK)
		r->open = true;
	if (k == SMTP_SERVER_EV_DATA_END)
		r->open = false;
	if (k == SMTP_SERVER_EV_STARTTLS && id == SMTP_REPLY_TLS_GO)
		r->tls_go = true;
	snprintf(q, sizeof(q), "Q%u", r->n_answers);
	smtp_server_answer(&srv, id, q);
}

/* record - check one event against the message invariants and hash it. */
static void record(struct run *r, const struct smtp_server_ev *ev)
{
	uint8_t k = (uint8_t)ev->kind;

	switch (ev->kind) {
	case SMTP_SERVER_EV_BODY:
		if (!r->open || ev->len == 0)
			abort();
		r->ev_hash = fnv(r->ev_hash, ev->data, ev->len);
		return;
	case SMTP_SERVER_EV_DATA_BEGIN:
		if (r->open)
			abort();
		break;
	case SMTP_SERVER_EV_DATA_END:
		if (!r->open)
			abort();
		r->ev_hash = fnv(r->ev_hash, &ev->message_bytes, sizeof(ev->message_bytes));
		break;
	case SMTP_SERVER_EV_DATA_ABORT:
		if (!r->open)
			abort();
		r->open = false;
		r->ev_hash = fnv(r->ev_hash, &ev->abort, sizeof(ev->abort));
		break;
	case SMTP_SERVER_EV_MAIL:
	case SMTP_SERVER_EV_RCPT:
		r->ev_hash = fnv(r->ev_hash, ev->path->addr, ev->path->len);
		break;
	case SMTP_SERVER_EV_HELO:
		r->ev_hash = fnv(r->ev_hash, ev->helo, strlen(ev->helo));
		break;
	case SMTP_SERVER_EV_REJECT:
		r->ev_hash = fnv(r->ev_hash, &ev->reply, sizeof(ev->reply));
		break;
	case SMTP_SERVER_EV_CLOSE:
		if (r->open)
			abort();
		break;
	default:
		break;
	}
	r->ev_hash = fnv(r->ev_hash, &k, 1);
}

/* pump - events until NEED_MORE (true), WAIT left deferred (true) or CLOSE (false). */
static bool pump(struct run *r)
{
	struct smtp_server_ev ev;
	unsigned guard = 0;

	for (;;) {
		int k = smtp_server_next(&srv, &ev);

		if (++guard > 100000)
			abort();   /* no progress */
		switch (k) {
		case SMTP_SERVER_EV_NEED_MORE:
			drain(r);
			return true;
		case SMTP_SERVER_EV_FLUSH:
			drain(r);
			continue;
		case SMTP_SERVER_EV_WAIT:
			if (r->deferred == SMTP_SERVER_EV_NEED_MORE)
				abort();   /* WAIT with nothing we owe */
			return true;
		case SMTP_SERVER_EV_CLOSE:
			record(r, &ev);
			drain(r);
			if (smtp_server_next(&srv, &ev) != SMTP_SERVER_EV_CLOSE)
				abort();
			if (smtp_server_feed(&srv, (const uint8_t *)"x", 1) != 0)
				abort();
			r->closed = true;
			return false;
		default:
			break;
		}
		record(r, &ev);
		if (k == SMTP_SERVER_EV_MAIL || k == SMTP_SERVER_EV_RCPT || k == SMTP_SERVER_EV_DATA_BEGIN ||
		    k == SMTP_SERVER_EV_DATA_END || k == SMTP_SERVER_EV_STARTTLS) {
			if (r->defer_ok && k != SMTP_SERVER_EV_STARTTLS && rnd(&r->rng) % 4 == 0) {
				r->deferred = (enum smtp_server_ev_kind)k;
				continue;   /* the next call must say WAIT */
			}
			answer(r, (enum smtp_server_ev_kind)k);
		}
	}
}

static void limits_of(const uint8_t *data, struct smtp_server_limits *lim)
{
	smtp_server_limits_default(lim);
	lim->hostname = "mx.fuzz";
	lim->offer_starttls = data[0] & 1;
	lim->lenient_bare_lf = data[0] & 2;
	lim->lenient_bare_cr = data[0] & 4;
	lim->lenient_8bit = data[0] & 8;
	lim->lenient_space_after_colon = data[0] & 16;
	if (data[0] & 32) {
		lim->max_line_bytes = 64 + data[1] % 64;
		lim->max_message_bytes = 200;
		lim->max_rcpt = 3;
		lim->max_errors = 5;
	}
}

static void play(const uint8_t *data, size_t size, bool split, struct run *r)
{
	struct smtp_server_limits lim;
	const uint8_t *p = data + 3;
	size_t n = size - 3, off = 0;
	bool alive;

	memset(r, 0, sizeof(*r));
	r->seed = (uint16_t)(data[1] | data[2] << 8);
	r->rng = r->seed * 2u + 1;
	r->defer_ok = split;
	r->deferred = SMTP_SERVER_EV_NEED_MORE;
	limits_of(data, &lim);
	smtp_server_init(&srv, &lim);
	smtp_server_start(&srv, SMTP_REPLY_GREETING);
	alive = pump(r);
	while (alive && off < n) {
		size_t k = split ? 1 + rnd(&r->rng) % 64 : n - off, took;

		if (k > n - off)
			k = n - off;
		took = smtp_server_feed(&srv, p + off, k);
		off += took;
		if (took == 0 && r->deferred == SMTP_SERVER_EV_NEED_MORE)
			abort();   /* NEED_MORE but no room: the server stalled */
		if (r->deferred != SMTP_SERVER_EV_NEED_MORE && rnd(&r->rng) % 2 == 0) {
			answer(r, r->deferred);
			r->deferred = SMTP_SERVER_EV_NEED_MORE;
		}
		alive = pump(r);
	}
	while (r->deferred != SMTP_SERVER_EV_NEED_MORE && alive) {
		answer(r, r->deferred);
		r->deferred = SMTP_SERVER_EV_NEED_MORE;
		alive = pump(r);
	}
	if (alive) {
		if (data[0] & 64)
			smtp_server_shutdown(&srv);
		else if (data[0] & 128)
			smtp_server_timeout(&srv);
		else
			smtp_server_eof(&srv);
		alive = pump(r);
		if (alive && !(data[0] & 64))
			abort();   /* eof and timeout always close */
	}
	smtp_server_fini(&srv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run a, b;

	if (size < 3)
		return 0;
	play(data, size, false, &a);
	play(data, size, true, &b);
	if (!a.tls_go && !b.tls_go && (a.ev_hash != b.ev_hash || a.out_hash != b.out_hash))
		abort();
	return 0;
}
