/*
 * fuzz_smtp_client - libFuzzer target for the outbound client.
 *
 * Input: byte 0 picks the limits (LMTP, pipelining, chunking, STARTTLS,
 * lenient bare LF, small reply limits, the next transaction pipelined
 * behind the end of data) and the mode (bit 7):
 *  - split mode: the rest is the server's byte stream. A fixed host (two
 *    transactions, then QUIT) runs it fed whole and again fed in pieces
 *    whose sizes come from the stream's own bytes; the event logs and the
 *    output bytes must be identical (chunking never matters). After
 *    STARTTLS the "decrypted" stream is what follows the first NUL.
 *  - chaos mode: the rest is a program of host calls (feed n bytes of
 *    server data, next, begin_txn, body, rset, quit, eof, timeout,
 *    tls_done, partial output_done) in any order and any state.
 * Both check on every event: kind matches, FAILED/CLOSED are sticky,
 * indices are in range, reply text is as long as it says, and the bytes
 * of the one send in flight never move or change before output_done.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringmta/smtp_client.h"

static const struct smtp_client_rcpt rc1[] = { { "b@y.example", 0, NULL } };
static const struct smtp_client_rcpt rc3[] = {
	{ "b@y.example", SMTP_PROTO_NOTIFY_FAILURE, "rfc822;b@y.example" },
	{ "c@y.example", 0, NULL }, { "d@y.example", SMTP_PROTO_NOTIFY_NEVER, NULL } };
static struct smtp_client_rcpt rc_many[40];  /* long ORCPTs: the envelope overflows the ring */
static char long_orcpt[400];
static const struct smtp_client_txn txns[6] = {
	{ "a@x.example", rc1, 1, true, 9, 0, false, 0, NULL },
	{ "", rc3, 3, false, 0, SMTP_PROTO_BODY_8BITMIME, false, SMTP_PROTO_RET_FULL, "ID1" },
	{ "a@x.example", rc3, 2, true, 5000000, SMTP_PROTO_BODY_7BIT, false, 0, NULL },
	{ "\xc3\xa4@x.example", rc1, 1, false, 0, 0, true, 0, NULL },
	{ "a@x.example", rc_many, 40, true, 100, SMTP_PROTO_BODY_BINARYMIME, false, SMTP_PROTO_RET_HDRS, NULL },
	{ "a@x.example", rc_many, 40, false, 0, 0, false, 0, NULL },
};
#define N_TXNS 6

static void init_txns(void)
{
	memcpy(long_orcpt, "rfc822;", 7);
	memset(long_orcpt + 7, 'o', sizeof(long_orcpt) - 8);
	for (unsigned i = 0; i < 40; i++) {
		rc_many[i].addr = i % 2 ? "b@y.example" : "c@y.example";
		rc_many[i].notify = i % 3 ? SMTP_PROTO_NOTIFY_SUCCESS | SMTP_PROTO_NOTIFY_DELAY : 0;
		rc_many[i].orcpt = long_orcpt;
	}
}

static char big_body[20000];  /* lines of dots and text: wraps the output ring */
static const char *const bodies[] = { "Hello\r\n.\r\n", ".", "a\r\n.b", "", big_body };
#define N_BODIES 5

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

struct trace {
	uint64_t h;            /* FNV-1a over the events */
	uint64_t ho;           /* FNV-1a over the output (sent at other moments per split) */
	const uint8_t *fl_p;   /* the send in flight */
	size_t fl_len;
	uint8_t fl_copy[SMTP_CLIENT_OUT_BYTES];
	unsigned n_rcpt;       /* of the current transaction */
};

static bool debug;  /* FUZZ_DEBUG set: print the events */

static void mix_into(uint64_t *h, const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		*h = (*h ^ b[i]) * 1099511628211ull;
}

static void mix(struct trace *t, const void *p, size_t n)
{
	mix_into(&t->h, p, n);

}

static void check_ev(struct trace *t, int k, const struct smtp_client_ev *ev)
{
	unsigned n_rcpt = t->n_rcpt;

	if ((int)ev->kind != k)
		FAIL("kind %d != %d", (int)ev->kind, k);
	if (debug)
		fprintf(stderr, "%s%s%s %u\n", smtp_client_ev_name(k), ev->reason ? " " : "",
			ev->reason ? ev->reason : "", ev->reply ? ev->reply->code : 0);
	/* NEED_MORE, FLUSH and WAIT counts depend on the split and the drain, the rest must not */
	if (k != SMTP_CLIENT_EV_NEED_MORE && k != SMTP_CLIENT_EV_FLUSH && k != SMTP_CLIENT_EV_WAIT)
		mix(t, &k, sizeof(k));
	if (ev->reply) {
		if (strlen(ev->reply->text) != ev->reply->text_len)
			FAIL("text_len");
		if (ev->reply->code < 200 || ev->reply->code > 559)
			FAIL("code %u", ev->reply->code);
		mix(t, &ev->reply->code, sizeof(ev->reply->code));
		mix(t, ev->reply->text, ev->reply->text_len);
		mix(t, ev->reply->esc, strlen(ev->reply->esc));
	}
	if (ev->txn != NULL) {
		/* the event's own transaction (with WAIT NEXT, maybe not the current one) */
		if (ev->txn < txns || ev->txn >= txns + N_TXNS)
			FAIL("ev.txn is not one of ours");
		n_rcpt = ev->txn->n_rcpt;
		mix(t, &(int){ (int)(ev->txn - txns) }, sizeof(int));
	} else if (k == SMTP_CLIENT_EV_MAIL_RESULT || k == SMTP_CLIENT_EV_RCPT_RESULT ||
		   k == SMTP_CLIENT_EV_DATA_RESULT || k == SMTP_CLIENT_EV_TXN_DONE) {
		FAIL("%s without ev.txn", smtp_client_ev_name(k));
	}
	if ((k == SMTP_CLIENT_EV_RCPT_RESULT || (k == SMTP_CLIENT_EV_DATA_RESULT && !ev->is_all)) &&
	    ev->rcpt_index >= n_rcpt)
		FAIL("rcpt_index %u >= %u", ev->rcpt_index, n_rcpt);
	if (k == SMTP_CLIENT_EV_TXN_DONE) {
		if (ev->done.n_rcpt_delivered > ev->done.n_rcpt_accepted ||
		    ev->done.n_rcpt_accepted > n_rcpt)
			FAIL("done counts");
		mix(t, &ev->done, sizeof(ev->done));
	}
	if (k == SMTP_CLIENT_EV_FAILED) {
		mix(t, &ev->fail, sizeof(ev->fail));
		mix(t, ev->reason, strlen(ev->reason));
	}
}

/* drain - complete the send in flight (checking it), then start one of at most max bytes. */
static void drain(struct smtp_client *c, struct trace *t, size_t max)
{
	size_t n;

	if (t->fl_p) {
		if (memcmp(t->fl_p, t->fl_copy, t->fl_len) != 0)
			FAIL("bytes in flight changed");
		mix_into(&t->ho, t->fl_p, t->fl_len);
		if (debug)
			fprintf(stderr, "out \"%.*s\"\n", (int)t->fl_len, (const char *)t->fl_p);
		smtp_client_output_done(c, t->fl_len);
		t->fl_p = NULL;
	}
	t->fl_p = smtp_client_output(c, &n);
	if (n > max)
		n = max;
	if (n == 0) {
		t->fl_p = NULL;
		return;
	}
	t->fl_len = n;
	memcpy(t->fl_copy, t->fl_p, n);
}

static void drain_all(struct smtp_client *c, struct trace *t)
{
	size_t n;

	do {
		drain(c, t, SMTP_CLIENT_OUT_BYTES);
		smtp_client_output(c, &n);
	} while (t->fl_p != NULL);
}

static void limits(uint8_t f, struct smtp_client_limits *lim)
{
	smtp_client_limits_default(lim);
	lim->helo_name = "client.example";
	lim->is_lmtp = f & 0x01;
	lim->use_pipelining = !(f & 0x02);
	lim->use_chunking = !(f & 0x04);
	lim->use_starttls = f & 0x08;
	lim->require_tls = (f & 0x18) == 0x18;
	lim->lenient_bare_lf = f & 0x20;
	lim->use_pipelining_next = (f & 0x18) == 0x10;
	if (f & 0x40) {
		lim->max_reply_line_bytes = 40;
		lim->max_reply_lines = 3;
		lim->max_rcpt = 2;
	}
}

static struct smtp_client cl;
static struct trace tr1, tr2;

/*
 * run_split - the fixed host over the server stream s; piece sizes from
 * the stream itself (0: whole). Returns the trace hash.
 */
static uint64_t run_split(uint8_t f, const uint8_t *s, size_t len, bool split, struct trace *t)
{
	struct smtp_client_limits lim;
	struct smtp_client_ev ev;
	size_t pos = 0, boff = 0, cut = 0;
	unsigned n_txn = 0;
	int k = 0;

	memset(t, 0, offsetof(struct trace, fl_copy));
	t->h = t->ho = 1469598103934665603ull;
	limits(f, &lim);
	smtp_client_init(&cl, &lim);
	for (int steps = 0; steps < 200000; steps++) {
		k = smtp_client_next(&cl, &ev);
		check_ev(t, k, &ev);
		if (k == SMTP_CLIENT_EV_FLUSH || k == SMTP_CLIENT_EV_FAILED || k == SMTP_CLIENT_EV_CLOSED)
			drain_all(&cl, t);
		else
			drain(&cl, t, 700);
		if (k == SMTP_CLIENT_EV_FAILED || k == SMTP_CLIENT_EV_CLOSED)
			break;
		if (k == SMTP_CLIENT_EV_NEED_MORE) {
			size_t n = len - pos;

			if (n == 0) {
				smtp_client_eof(&cl);
				continue;
			}
			if (split) {
				/* piece size: 1 + a byte of the stream, mod 17 */
				n = 1 + s[cut++ % len] % 17;
				if (n > len - pos)
					n = len - pos;
			}
			pos += smtp_client_feed(&cl, s + pos, n);
		} else if (k == SMTP_CLIENT_EV_WAIT && ev.wait == SMTP_CLIENT_WAIT_TXN) {
			const struct smtp_client_txn *tx = &txns[((f >> 3) + n_txn) % N_TXNS];

			if (n_txn++ < 2 && smtp_client_begin_txn(&cl, tx) == 0) {
				t->n_rcpt = tx->n_rcpt;
				boff = 0;
			} else if (smtp_client_quit(&cl) != 0) {
				FAIL("quit in WAIT TXN");
			}
		} else if (k == SMTP_CLIENT_EV_WAIT && ev.wait == SMTP_CLIENT_WAIT_NEXT) {
			const struct smtp_client_txn *tx = &txns[((f >> 3) + n_txn) % N_TXNS];

			/* begin behind the end of data, or decline (_next goes on) */
			if (n_txn < 2 && smtp_client_begin_txn(&cl, tx) == 0) {
				n_txn++;
				t->n_rcpt = tx->n_rcpt;
				boff = 0;
			}
		} else if (k == SMTP_CLIENT_EV_WAIT && ev.wait == SMTP_CLIENT_WAIT_BODY) {
			const char *b = bodies[(n_txn + (f >> 4)) % N_BODIES];
			size_t bl = strlen(b), step = bl > 100 ? 4000 : 3;
			size_t piece = bl - boff > step ? step : bl - boff;

			boff += smtp_client_body(&cl, (const uint8_t *)b + boff, piece, boff + piece == bl);
		} else if (k == SMTP_CLIENT_EV_WAIT && ev.wait == SMTP_CLIENT_WAIT_TLS) {
			/* the "decrypted" stream starts after the first NUL, wherever the split is */
			const uint8_t *nul = memchr(s, 0, len);

			pos = nul ? (size_t)(nul - s) + 1 : len;
			if (smtp_client_tls_done(&cl) != 0)
				FAIL("tls_done");
		}
	}
	if (k != SMTP_CLIENT_EV_FAILED && k != SMTP_CLIENT_EV_CLOSED)
		FAIL("no end");
	if (smtp_client_next(&cl, &ev) != k)
		FAIL("not sticky");
	drain_all(&cl, t);
	mix(t, &t->ho, sizeof(t->ho));
	smtp_client_fini(&cl);
	return t->h;
}

/* run_chaos - any host call in any order. */
static void run_chaos(uint8_t f, const uint8_t *p, size_t len)
{
	struct smtp_client_limits lim;
	struct smtp_client_ev ev;
	struct trace *t = &tr1;
	size_t i = 0;
	int sticky = -1;

	memset(t, 0, offsetof(struct trace, fl_copy));
	limits(f, &lim);
	smtp_client_init(&cl, &lim);
	while (i < len) {
		uint8_t op = p[i++], arg = i < len ? p[i] : 0;
		int k;

		switch (op % 12) {
		case 0: case 1: case 2: {  /* feed arg%32 bytes */
			size_t n = (size_t)(arg % 32);

			i++;
			if (n > len - i)
				n = len - i;
			smtp_client_feed(&cl, p + i, n);
			i += n;
			break;
		}
		case 3: case 4: case 5:
			k = smtp_client_next(&cl, &ev);
			check_ev(t, k, &ev);
			if (sticky >= 0 && k != sticky)
				FAIL("sticky %d then %d", sticky, k);
			if (k == SMTP_CLIENT_EV_FAILED || k == SMTP_CLIENT_EV_CLOSED)
				sticky = k;
			break;
		case 6:
			i++;
			if (smtp_client_begin_txn(&cl, &txns[arg % N_TXNS]) == 0)
				t->n_rcpt = txns[arg % N_TXNS].n_rcpt;
			break;
		case 7:
			i++;
			smtp_client_body(&cl, (const uint8_t *)bodies[arg % N_BODIES],
					 strlen(bodies[arg % N_BODIES]), arg & 0x10);
			break;
		case 8:
			i++;
			if (arg % 4 == 0)
				smtp_client_rset(&cl);
			else if (arg % 4 == 1)
				smtp_client_quit(&cl);
			else if (arg % 4 == 2)
				smtp_client_tls_done(&cl);
			else
				smtp_client_eof(&cl);
			break;
		case 9:
			i++;
			smtp_client_timeout(&cl, (enum smtp_client_phase)(arg % 10));
			break;
		default:
			i++;
			drain(&cl, t, (size_t)arg * 64 + 1);
			break;
		}
		(void)smtp_client_phase(&cl);
	}
	smtp_client_fini(&cl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	debug = getenv("FUZZ_DEBUG") != NULL;
	if (rc_many[0].addr == NULL)
		init_txns();
	if (big_body[0] == 0)
		for (size_t i = 0; i + 1 < sizeof(big_body); i++)
			big_body[i] = i % 50 == 48 ? '\r' : i % 50 == 49 ? '\n' : i % 150 == 0 ? '.' : 'x';
	if (data[0] & 0x80) {
		run_chaos(data[0], data + 1, size - 1);
		return 0;
	}
	if (debug)
		fprintf(stderr, "--- whole\n");
	run_split(data[0], data + 1, size - 1, false, &tr1);
	if (debug)
		fprintf(stderr, "--- split\n");
	if (tr1.h != run_split(data[0], data + 1, size - 1, true, &tr2))
		FAIL("split changed the events or the output");
	return 0;
}
