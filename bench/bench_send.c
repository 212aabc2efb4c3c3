/*
 * bench_send - `ringmta-bench send`: an io_uring SMTP load generator on
 *              the sans-I/O smtp_client, closed or open loop.
 *
 * Owns: one reactor per --threads, each with sessions/threads connection
 *       slots (a struct smtp_client each), its share of the messages, its
 *       counters and latency histograms; the message templates (read-only).
 * Must not: block in a reactor thread (socket(), setsockopt(), shutdown(),
 *       close() and the kill() that wakes main are the only synchronous
 *       calls on the loop, none of them waits); wait for an idle session before
 *       timing a message in open-loop mode (latency counts from the
 *       message's slot in the schedule: no coordinated omission).
 * Interface: `ringmta-bench send --help`; a report line on stderr every
 *       --report-every s; the final report (or --json) on stdout.
 * Limits: SEND_RCPT_MAX recipients, SEND_SIZES_MAX sizes in a distribution,
 *       sessions <= SEND_SESSIONS_MAX; input held per connection:
 *       BENCH_RXQ_MAX received chunks (a multishot receive per connection,
 *       cancelled while the client cannot take more).
 * Errors: bad options exit 2, set-up failures 1; connection and protocol
 *       failures are counted and the run goes on. Exit 0 when every
 *       message got an end-of-data reply (any code), 3 otherwise.
 * Standards: RFC 5321 via smtp_client; RFC 2920 with --pipelining.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

#include "ringmta/reactor.h"
#include "ringmta/smtp_client.h"
#include "ringmta/util.h"

/* SEND_BUF_BYTES / SEND_N_BUFS - receive buffers: replies are short; 4 KiB x 1024 per reactor. */
#define SEND_BUF_BYTES 4096
#define SEND_N_BUFS 1024
/* SEND_RCPT_MAX - --recipients cap (Postfix's default smtpd_recipient_limit is 1000; 100 is RFC 5321's minimum). */
#define SEND_RCPT_MAX 100
/* SEND_ADDR_BYTES - one formatted address (RFC 5321 4.5.3.1.3: a path is <= 256 octets). */
#define SEND_ADDR_BYTES 256
#define SEND_SIZES_MAX 8
#define SEND_SESSIONS_MAX 100000
/* SEND_CODES_MAX - distinct end-of-data reply codes counted one by one. */
#define SEND_CODES_MAX 16
/* SEND_CONNECT_ERR_MAX - connect failures beyond the successful connects that end the run (target down). */
#define SEND_CONNECT_ERR_MAX 100
/* SEND_LATE_NS - an open-loop message started later than this after its slot is "late" (as bench/lib/eodlat.c). */
#define SEND_LATE_NS 1000000ull

enum send_op {
	SEND_OP_CONNECT = 1,
	SEND_OP_RECV,
	SEND_OP_SEND,
	SEND_OP_TIMER,
	SEND_OP_CLOSE,
};

enum send_hist { H_CONNECT, H_BANNER, H_EOD, H_MSG, H_COUNT };
static const char *const send_hist_name[H_COUNT] = { "connect", "banner", "eod", "msg" };

struct send_opts {
	struct sockaddr_in target;
	const char *target_str;
	struct sockaddr_in bind;
	bool has_bind;
	unsigned sessions, threads, n_rcpt;
	uint64_t messages;        /* 0: --duration only */
	double duration_s;        /* 0: --messages only */
	double rate;              /* 0: closed loop */
	bool reuse, pipelining, chunking, json;
	unsigned report_every_s;
	unsigned timeout_s;
	const char *from, *to, *helo, *size_spec;
	struct bench_tmpl tmpl[SEND_SIZES_MAX];
	unsigned n_tmpl, total_weight;
	uint64_t run;
};

/* struct send_stats - one reactor's counters (single writer, relaxed reads). */
struct send_stats {
	uint64_t started, done, ok, failed, late;
	uint64_t c2xx, c4xx, c5xx, mail_refused, rcpt_refused;
	uint64_t conns, connect_err, conn_failed, timeouts, bytes;
};

struct send_worker;

struct send_conn {
	struct send_worker *w;
	struct send_conn *next;         /* parked / starved lists */
	int fd;
	unsigned n_ops;
	bool is_open, is_dead, is_recv_armed, is_send_busy, is_starved, is_parked;
	bool is_recv_cancelled;          /* the multishot receive is being cancelled */
	bool has_msg, in_txn, has_banner, has_eod_result;
	size_t lent;                    /* bytes of output in the send in flight */
	unsigned msgs_on_conn;
	uint64_t t_connect, t_open, t_due, t_eod, t_io;
	uint64_t seq;
	uint16_t rcpt_code;             /* the last RCPT refusal of the transaction */
	const struct bench_tmpl *tmpl;
	unsigned part;                  /* body: 0 header, 1 template, 2 done */
	size_t part_off;
	size_t hdr_len;
	struct smtp_client_txn txn;
	struct smtp_client_rcpt *rcpt;
	char (*rcpt_addr)[SEND_ADDR_BYTES];
	char hdr[BENCH_HDR_BYTES];
	struct bench_rxq rxq;            /* received, not yet fed to cl */
	struct smtp_client cl;
} __attribute__((aligned(16)));

struct send_worker {
	struct reactor r;
	unsigned idx, n_workers;
	const struct send_opts *o;
	struct smtp_client_limits lim;
	struct send_conn *conns;
	unsigned n_conns, n_open;
	struct send_conn *parked, *starved;
	uint64_t quota;                 /* messages for this reactor; UINT64_MAX: until the deadline */
	uint64_t t0, deadline;          /* ns; deadline 0: none */
	double rate;                    /* this reactor's share, msgs/s; 0 closed loop */
	bool is_stopping, is_timer_armed, is_finished, needs_fill;
	uint64_t t_end;                 /* ns when is_finished was set (read after join) */
	struct __kernel_timespec ts;
	uint64_t rng;
	struct send_stats st;
	uint16_t code[SEND_CODES_MAX];
	uint64_t code_n[SEND_CODES_MAX];
	struct bench_hist h[H_COUNT];
	char tag[16] __attribute__((aligned(16)));   /* tag anchor for the reactor's own ops */
} __attribute__((aligned(16)));

static void send_drive(struct send_conn *c);
static void slot_fill(struct send_worker *w);

/* --- message supply ----------------------------------------------------- */

/* due_count - messages whose slot has come (open loop), or the quota. */
static uint64_t due_count(const struct send_worker *w, uint64_t now)
{
	uint64_t n;

	if (w->rate <= 0)
		return w->quota;
	n = (uint64_t)((double)(now - w->t0) * w->rate / 1e9) + 1;
	return n < w->quota ? n : w->quota;
}

/* is_exhausted - no message will ever be started again. */
static bool is_exhausted(const struct send_worker *w, uint64_t now)
{
	if (w->is_stopping || w->st.started >= w->quota)
		return true;
	return w->deadline && now >= w->deadline;
}

/* take_message - reserve the next message for c if its slot has come. */
static bool take_message(struct send_worker *w, struct send_conn *c, uint64_t now)
{
	uint64_t k = w->st.started;
	unsigned i = 0;

	if (is_exhausted(w, now) || k >= due_count(w, now))
		return false;
	c->t_due = w->rate > 0 ? w->t0 + (uint64_t)((double)k * 1e9 / w->rate) : now;
	if (w->rate > 0 && now > c->t_due + SEND_LATE_NS)
		bench_ctr_add(&w->st.late, 1);
	c->seq = (uint64_t)w->idx + k * w->n_workers;
	if (w->o->n_tmpl > 1) {
		unsigned x = (unsigned)(bench_rand(&w->rng) % w->o->total_weight);

		while (x >= w->o->tmpl[i].weight)
			x -= w->o->tmpl[i++].weight;
	}
	c->tmpl = &w->o->tmpl[i];
	c->has_msg = true;
	bench_ctr_add(&w->st.started, 1);
	return true;
}

/* format_addr - expand {n} (message seq) and {r} (recipient index) in pat. */
static void format_addr(char *out, size_t cap, const char *pat, uint64_t seq, unsigned r)
{
	size_t o = 0;

	for (; *pat && o + 1 < cap; pat++) {
		if (pat[0] == '{' && (pat[1] == 'n' || pat[1] == 'r') && pat[2] == '}') {
			char num[20];
			size_t n = bench_fmt_dec(num, pat[1] == 'n' ? seq : (uint64_t)r);

			if (n > cap - 1 - o)
				n = cap - 1 - o;
			memcpy(out + o, num, n);
			o += n;
			pat += 2;
			continue;
		}
		out[o++] = *pat;
	}
	out[o] = '\0';
}

/* begin_message - start the reserved message on c. Returns 0 or an smtp_client_err. */
static int begin_message(struct send_conn *c)
{
	const struct send_opts *o = c->w->o;
	unsigned i;

	for (i = 0; i < o->n_rcpt; i++) {
		format_addr(c->rcpt_addr[i], SEND_ADDR_BYTES, o->to, c->seq, i);
		c->rcpt[i].addr = c->rcpt_addr[i];
		c->rcpt[i].notify = 0;
		c->rcpt[i].orcpt = NULL;
	}
	c->hdr_len = bench_hdr_format(c->hdr, sizeof(c->hdr), c->tmpl, o->run, c->seq, o->from,
				      c->rcpt_addr[0]);
	memset(&c->txn, 0, sizeof(c->txn));
	c->txn.sender = o->from;
	c->txn.rcpt = c->rcpt;
	c->txn.n_rcpt = o->n_rcpt;
	c->txn.has_size = true;
	c->txn.size = c->hdr_len + c->tmpl->body_len;
	c->part = 0;
	c->part_off = 0;
	c->has_eod_result = false;
	c->rcpt_code = 0;
	c->has_msg = false;
	c->in_txn = true;
	return smtp_client_begin_txn(&c->cl, &c->txn);
}

/* message_done - the message of c is over (txn done or connection lost). */
static void message_done(struct send_conn *c, bool is_ok)
{
	struct send_worker *w = c->w;

	c->in_txn = false;
	bench_ctr_add(&w->st.done, 1);
	bench_ctr_add(is_ok ? &w->st.ok : &w->st.failed, 1);
}

/* --- connections ---------------------------------------------------------- */

static void conn_recv(struct send_conn *c)
{
	reactor_recv_multishot(&c->w->r, c, SEND_OP_RECV, c->fd);
	c->is_recv_armed = true;
	c->is_recv_cancelled = false;
	c->n_ops++;
}

static void conn_flush(struct send_conn *c)
{
	const uint8_t *p;
	size_t len;
	struct io_uring_sqe *sqe;

	if (c->is_send_busy || c->is_dead)
		return;
	p = smtp_client_output(&c->cl, &len);
	if (len == 0)
		return;
	sqe = reactor_sqe(&c->w->r);
	io_uring_prep_send(sqe, c->fd, p, len, MSG_NOSIGNAL);
	reactor_sqe_tag(sqe, c, SEND_OP_SEND);
	c->lent = len;
	c->is_send_busy = true;
	c->n_ops++;
}

/* slot_idle - c's slot has no connection and no op in flight: reuse it. */
static void slot_idle(struct send_conn *c)
{
	struct send_worker *w = c->w;

	c->is_dead = false;
	c->is_open = false;
	w->n_open--;
	w->needs_fill = true;   /* refilled after this batch: never inside a drive of c */
}

static void conn_close(struct send_conn *c)
{
	if (c->is_dead)
		return;
	if (c->in_txn || c->has_msg) {
		c->has_msg = false;
		message_done(c, false);
	}
	c->is_dead = true;
	if (c->is_parked) {
		struct send_conn **pp = &c->w->parked;

		while (*pp && *pp != c)
			pp = &(*pp)->next;
		if (*pp)
			*pp = c->next;
		c->is_parked = false;
	}
	smtp_client_fini(&c->cl);
	if (c->fd >= 0) {
		/* An op in flight holds the socket until it completes, and only
		 * then does the close below reset the connection (SO_LINGER 0).
		 * SHUT_RD ends the receive without a segment; a send stuck on a
		 * full window needs SHUT_RDWR. */
		for (; c->rxq.n > 0; c->rxq.n--, c->rxq.head = (c->rxq.head + 1) % BENCH_RXQ_MAX)
			reactor_buf_put(&c->w->r, c->rxq.bid[c->rxq.head]);
		if (c->is_send_busy)
			shutdown(c->fd, SHUT_RDWR);
		else if (c->is_recv_armed)
			shutdown(c->fd, SHUT_RD);
		close(c->fd);
		c->fd = -1;
	}
	if (c->n_ops == 0)
		slot_idle(c);
}

static bool conn_op_done(struct send_conn *c)
{
	c->n_ops--;
	if (!c->is_dead)
		return false;
	if (c->n_ops == 0)
		slot_idle(c);
	return true;
}

/* conn_open - connect slot c for its reserved (no reuse) or future messages. */
static void conn_open(struct send_worker *w, struct send_conn *c)
{
	struct io_uring_sqe *sqe;
	int one = 1;

	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	c->is_open = true;
	w->n_open++;
	c->is_dead = c->is_recv_armed = c->is_send_busy = c->is_starved = c->is_parked = false;
	c->is_recv_cancelled = false;
	c->in_txn = c->has_banner = false;
	c->msgs_on_conn = 0;
	c->rxq.head = c->rxq.n = 0;
	c->n_ops = 0;
	c->t_connect = c->t_io = bench_now_ns();
	c->t_open = 0;
	if (c->fd < 0) {
		bench_ctr_add(&w->st.connect_err, 1);
		conn_close(c);
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* Close with a reset, as smtp-source does: the session has ended with
	 * QUIT/221 (or failed) by then, and a FIN exchange would cost two more
	 * segments and leave thousands of TIME_WAIT sockets per second. */
	setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &(struct linger){ .l_onoff = 1, .l_linger = 0 },
		   sizeof(struct linger));
	if (w->o->has_bind && bind(c->fd, (const struct sockaddr *)&w->o->bind, sizeof(w->o->bind)) < 0) {
		bench_ctr_add(&w->st.connect_err, 1);
		conn_close(c);
		return;
	}
	sqe = reactor_sqe(&w->r);
	io_uring_prep_connect(sqe, c->fd, (const struct sockaddr *)&w->o->target, sizeof(w->o->target));
	reactor_sqe_tag(sqe, c, SEND_OP_CONNECT);
	c->n_ops++;
}

/*
 * worker_finished - w has nothing open and will start nothing: note the time
 * (the run's end for the rate) and wake the main thread, which otherwise
 * notices only at its next 50 ms poll.
 */
static void worker_finished(struct send_worker *w)
{
	if (w->is_finished)
		return;
	w->t_end = bench_now_ns();
	__atomic_store_n(&w->is_finished, true, __ATOMIC_RELEASE);
	kill(getpid(), SIGUSR1);   /* blocked in every thread: main's sigtimedwait takes it */
}

/* send_finish_check - stop the reactor once nothing is open and nothing will start. */
static void send_finish_check(struct send_worker *w)
{
	if (w->n_open == 0 && !w->is_finished && is_exhausted(w, bench_now_ns())) {
		worker_finished(w);
		reactor_stop(&w->r);
	}
}

/* slot_fill - open connections on free slots while there is work for them. */
static void slot_fill(struct send_worker *w)
{
	uint64_t now = bench_now_ns();
	unsigned i;

	w->needs_fill = false;
	for (i = 0; i < w->n_conns && w->n_open < w->n_conns; i++) {
		struct send_conn *c = &w->conns[i];

		if (c->is_open)
			continue;
		if (w->o->reuse) {
			if (is_exhausted(w, now))
				break;
		} else if (!take_message(w, c, now)) {
			break;
		}
		conn_open(w, c);
	}
	send_finish_check(w);
}

/* --- the protocol --------------------------------------------------------- */

static void on_idle(struct send_conn *c, uint64_t now)
{
	struct send_worker *w = c->w;
	int rc;

	if (!c->has_msg && (w->o->reuse || c->msgs_on_conn == 0))
		take_message(w, c, now);
	if (c->has_msg) {
		rc = begin_message(c);
		if (rc == 0)
			return;
		fprintf(stderr, "send: begin_txn: %s\n", smtp_client_err_name(rc));
		message_done(c, false);
		smtp_client_quit(&c->cl);
		return;
	}
	if (!w->o->reuse || is_exhausted(w, now)) {
		smtp_client_quit(&c->cl);
		return;
	}
	c->is_parked = true;   /* open loop: wait for the next slot */
	c->next = w->parked;
	w->parked = c;
}

static void on_body(struct send_conn *c, uint64_t now)
{
	size_t n;

	if (c->part == 0) {
		n = smtp_client_body(&c->cl, (const uint8_t *)c->hdr + c->part_off,
				     c->hdr_len - c->part_off, false);
		c->part_off += n;
		if (c->part_off == c->hdr_len) {
			c->part = 1;
			c->part_off = 0;
		}
		return;
	}
	n = smtp_client_body(&c->cl, c->tmpl->body + c->part_off, c->tmpl->body_len - c->part_off, true);
	c->part_off += n;
	if (c->part_off == c->tmpl->body_len)
		c->t_eod = now;
}

static void count_code(struct send_worker *w, uint16_t code)
{
	unsigned i;

	bench_ctr_add(code < 300 ? &w->st.c2xx : code < 500 ? &w->st.c4xx : &w->st.c5xx, 1);
	for (i = 0; i < SEND_CODES_MAX; i++) {
		if (w->code[i] == code || w->code[i] == 0) {
			__atomic_store_n(&w->code[i], code, __ATOMIC_RELAXED);
			bench_ctr_add(&w->code_n[i], 1);
			return;
		}
	}
}

/* rxq_feed - give the client what it can take of the oldest held chunk; true if it took something. */
static bool rxq_feed(struct send_conn *c)
{
	struct bench_rxq *q = &c->rxq;
	unsigned i = q->head;
	size_t n;

	if (q->n == 0)
		return false;
	n = smtp_client_feed(&c->cl, reactor_buf(&c->w->r, q->bid[i]) + q->off[i], q->len[i] - q->off[i]);
	q->off[i] += (uint32_t)n;
	if (q->off[i] == q->len[i]) {
		reactor_buf_put(&c->w->r, q->bid[i]);
		q->head = (i + 1) % BENCH_RXQ_MAX;
		q->n--;
	}
	return n > 0;
}

/* send_event - act on one client event; false to stop driving (wait for I/O or close). */
static bool send_event(struct send_conn *c, const struct smtp_client_ev *ev, uint64_t now)
{
	struct send_worker *w = c->w;

	switch (ev->kind) {
	case SMTP_CLIENT_EV_NEED_MORE:
		return rxq_feed(c);
	case SMTP_CLIENT_EV_FLUSH:
		conn_flush(c);
		return false;
	case SMTP_CLIENT_EV_WAIT:
		if (ev->wait == SMTP_CLIENT_WAIT_TXN) {
			if (c->is_parked)   /* a late send completion: stay parked */
				return false;
			on_idle(c, now);
			return !c->is_parked;
		}
		if (ev->wait == SMTP_CLIENT_WAIT_BODY) {
			on_body(c, now);
			return true;
		}
		conn_close(c);   /* TLS: not offered by us */
		return false;
	case SMTP_CLIENT_EV_MAIL_RESULT:
		if (ev->reply->code >= 400) {
			bench_ctr_add(&w->st.mail_refused, 1);
			count_code(w, ev->reply->code);
		}
		return true;
	case SMTP_CLIENT_EV_RCPT_RESULT:
		if (ev->reply->code >= 400) {
			bench_ctr_add(&w->st.rcpt_refused, 1);
			c->rcpt_code = ev->reply->code;
		}
		return true;
	case SMTP_CLIENT_EV_DATA_RESULT:
		if (!c->has_eod_result) {
			c->has_eod_result = true;
			count_code(w, ev->reply->code);
			bench_hist_add(&w->h[H_EOD], (now - c->t_eod) / 1000);
		}
		return true;
	case SMTP_CLIENT_EV_TXN_DONE:
		if (ev->done.status == SMTP_CLIENT_TXN_NO_RCPT)
			count_code(w, c->rcpt_code);   /* the last refusal stands for the message */
		bench_hist_add(&w->h[H_MSG], (now - c->t_due) / 1000);
		bench_ctr_add(&w->st.bytes, ev->done.body_bytes);
		c->msgs_on_conn++;
		message_done(c, ev->done.status == SMTP_CLIENT_TXN_SENT && ev->done.n_rcpt_delivered > 0);
		return true;
	case SMTP_CLIENT_EV_CLOSED:
		conn_close(c);
		return false;
	case SMTP_CLIENT_EV_FAILED:
		bench_ctr_add(ev->fail == SMTP_CLIENT_FAIL_TIMEOUT ? &w->st.timeouts : &w->st.conn_failed, 1);
		if (ev->reply && c->in_txn)
			count_code(w, ev->reply->code);
		conn_close(c);
		return false;
	default:   /* READY, STARTTLS (never asked for) */
		return true;
	}
}

static void send_drive(struct send_conn *c)
{
	struct smtp_client_ev ev;
	uint64_t now = bench_now_ns();

	if (c->is_dead)
		return;
	c->t_io = now;
	do {
		smtp_client_next(&c->cl, &ev);
	} while (send_event(c, &ev, now) && !c->is_dead);
	if (c->is_dead)
		return;
	conn_flush(c);
	if (c->rxq.n > 0) {   /* the client is full: stop receiving */
		if (c->is_recv_armed && !c->is_recv_cancelled) {
			reactor_cancel(&c->w->r, c, SEND_OP_RECV);
			c->is_recv_cancelled = true;
		}
	} else if (!c->is_recv_armed && !c->is_starved &&
		   smtp_client_phase(&c->cl) != SMTP_CLIENT_PHASE_NONE) {
		conn_recv(c);
	}
}

/* --- completions ----------------------------------------------------------- */

static void on_connect(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	struct send_conn *c = obj;
	struct send_worker *w = c->w;
	uint64_t now = bench_now_ns();

	(void)r;
	if (conn_op_done(c))
		return;
	if (cqe->res < 0) {
		bench_ctr_add(&w->st.connect_err, 1);
		if (w->st.connect_err > SEND_CONNECT_ERR_MAX + w->st.conns) {
			if (!w->is_stopping)
				fprintf(stderr, "send: connect %s: %s: giving up\n", w->o->target_str,
					strerror(-cqe->res));
			w->is_stopping = true;
		}
		conn_close(c);
		return;
	}
	bench_ctr_add(&w->st.conns, 1);
	c->t_open = now;
	bench_hist_add(&w->h[H_CONNECT], (now - c->t_connect) / 1000);
	smtp_client_init(&c->cl, &w->lim);
	send_drive(c);
}

static void on_recv(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	struct send_conn *c = obj;
	struct send_worker *w = c->w;
	unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

	if (cqe->res > 0 && !(cqe->flags & IORING_CQE_F_BUFFER))
		rm_panic("send: receive without a buffer");
	if (!(cqe->flags & IORING_CQE_F_MORE)) {   /* the multishot receive ended */
		c->is_recv_armed = false;
		if (conn_op_done(c)) {
			if (cqe->res > 0)
				reactor_buf_put(r, bid);
			return;
		}
	} else if (c->is_dead) {
		if (cqe->res > 0)
			reactor_buf_put(r, bid);
		return;
	}
	if (cqe->res == -ENOBUFS) {
		c->is_starved = true;
		c->next = w->starved;
		w->starved = c;
		return;
	}
	if (cqe->res == -ECANCELED) {   /* we paused it; send_drive re-arms once the queue drains */
		send_drive(c);
		return;
	}
	if (cqe->res <= 0) {
		smtp_client_eof(&c->cl);
		send_drive(c);
		return;
	}
	if (!c->has_banner) {
		c->has_banner = true;
		bench_hist_add(&w->h[H_BANNER], (bench_now_ns() - c->t_open) / 1000);
	}
	if (!bench_rxq_push(&c->rxq, bid, (size_t)cqe->res)) {   /* cannot happen: see BENCH_RXQ_MAX */
		reactor_buf_put(r, bid);
		bench_ctr_add(&w->st.conn_failed, 1);
		conn_close(c);
		return;
	}
	send_drive(c);
}

static void on_send(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	struct send_conn *c = obj;

	(void)r;
	c->is_send_busy = false;
	if (conn_op_done(c))
		return;
	if (cqe->res <= 0) {
		smtp_client_eof(&c->cl);
		send_drive(c);
		return;
	}
	smtp_client_output_done(&c->cl, (size_t)cqe->res <= c->lent ? (size_t)cqe->res : c->lent);
	send_drive(c);
}

/* arm_timer - wake at the next open-loop slot (absolute CLOCK_MONOTONIC). */
static void arm_timer(struct send_worker *w)
{
	struct io_uring_sqe *sqe;
	uint64_t k = w->st.started, at;

	if (w->is_timer_armed || w->rate <= 0 || is_exhausted(w, bench_now_ns()))
		return;
	at = w->t0 + (uint64_t)((double)k * 1e9 / w->rate);
	w->ts.tv_sec = (long long)(at / 1000000000u);
	w->ts.tv_nsec = (long long)(at % 1000000000u);
	sqe = reactor_sqe(&w->r);
	io_uring_prep_timeout(sqe, &w->ts, 0, IORING_TIMEOUT_ABS);
	reactor_sqe_tag(sqe, w->tag, SEND_OP_TIMER);
	w->is_timer_armed = true;
}

/* dispatch - start due messages on parked connections and free slots. */
static void dispatch(struct send_worker *w)
{
	uint64_t now = bench_now_ns();

	while (w->parked && (w->st.started < due_count(w, now) || is_exhausted(w, now))) {
		struct send_conn *c = w->parked;

		w->parked = c->next;
		c->is_parked = false;
		send_drive(c);
	}
	slot_fill(w);
}

static void on_timer(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	struct send_worker *w = r->ctx;

	(void)obj;
	(void)cqe;
	w->is_timer_armed = false;
	dispatch(w);
	arm_timer(w);
}

/* --- reactor hooks --------------------------------------------------------- */

static int send_start(struct reactor *r)
{
	struct send_worker *w = r->ctx;

	reactor_on(r, SEND_OP_CONNECT, on_connect);
	reactor_on(r, SEND_OP_RECV, on_recv);
	reactor_on(r, SEND_OP_SEND, on_send);
	reactor_on(r, SEND_OP_TIMER, on_timer);
	w->t0 = bench_now_ns();
	if (w->o->duration_s > 0)
		w->deadline = w->t0 + (uint64_t)(w->o->duration_s * 1e9);
	slot_fill(w);
	arm_timer(w);
	return 0;
}

static void send_loop_end(struct reactor *r)
{
	struct send_worker *w = r->ctx;
	struct send_conn *c = w->starved;

	w->starved = NULL;
	while (c) {
		struct send_conn *next = c->next;

		c->is_starved = false;
		send_drive(c);
		c = next;
	}
	if (w->needs_fill)
		slot_fill(w);
}

/* send_tick - phase timeouts, the --duration deadline for parked sessions. */
static void send_tick(struct reactor *r)
{
	struct send_worker *w = r->ctx;
	uint64_t now = bench_now_ns(), limit = (uint64_t)w->o->timeout_s * 1000000000u;
	unsigned i;

	for (i = 0; i < w->n_conns; i++) {
		struct send_conn *c = &w->conns[i];

		if (!c->is_open || c->is_dead || c->is_parked || now - c->t_io < limit)
			continue;
		if (!c->t_open) {   /* still connecting */
			bench_ctr_add(&w->st.timeouts, 1);
			conn_close(c);
			continue;
		}
		smtp_client_timeout(&c->cl, smtp_client_phase(&c->cl));
		send_drive(c);
	}
	if (is_exhausted(w, now))
		dispatch(w);
}

static void send_stop(struct reactor *r)
{
	struct send_worker *w = r->ctx;

	if (w->is_stopping)
		return;
	w->is_stopping = true;
	dispatch(w);   /* parked sessions quit */
}

static bool send_is_done(struct reactor *r)
{
	struct send_worker *w = r->ctx;

	if (w->n_open == 0)
		worker_finished(w);
	return w->is_finished;
}

static const struct reactor_hooks send_hooks = {
	.start = send_start,
	.loop_end = send_loop_end,
	.tick = send_tick,
	.stop = send_stop,
	.is_done = send_is_done,
};

/* --- options ----------------------------------------------------------------- */

static void send_usage(FILE *f)
{
	fputs("usage: ringmta-bench send --target HOST:PORT [options]\n"
	      "  --sessions N          concurrent connections (default 1)\n"
	      "  --messages M          messages in all (default 1000 without --duration)\n"
	      "  --duration S          stop starting messages after S seconds\n"
	      "  --rate R              open loop: R messages/s on a fixed schedule; latency\n"
	      "                        counts from each message's slot (default: closed loop)\n"
	      "  --size SPEC           message size: 1k, 100k, or a mix 1k:70,10k:25,1m:5\n"
	      "  --recipients N        recipients per message (default 1, max 100)\n"
	      "  --reuse               many messages per connection (default: one each)\n"
	      "  --pipelining          pipeline MAIL/RCPT/DATA when offered (RFC 2920)\n"
	      "  --bdat                send BDAT when CHUNKING is offered (RFC 3030)\n"
	      "  --from ADDR           envelope sender (default bench@ringmta-bench.invalid)\n"
	      "  --to PATTERN          recipients; {n} = message number, {r} = recipient\n"
	      "                        index (default rcpt{r}@sink.test)\n"
	      "  --helo NAME           EHLO name (default ringmta-bench.invalid)\n"
	      "  --bind ADDR           source IPv4 address\n"
	      "  --threads N           reactors (default 1)\n"
	      "  --timeout S           per-phase timeout (default 30)\n"
	      "  --report-every S      progress on stderr every S seconds (default 1, 0 off)\n"
	      "  --json                final report as JSON on stdout\n"
	      "Each message carries an " BENCH_HDR " header with a body checksum that\n"
	      "`ringmta-bench sink` verifies.\n", f);
}

static int parse_sizes(struct send_opts *o, const char *spec)
{
	char buf[256], *save = NULL, *tok;

	if (strlen(spec) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, spec);
	o->n_tmpl = 0;
	o->total_weight = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		struct bench_tmpl *t;
		char *colon = strchr(tok, ':');

		if (o->n_tmpl == SEND_SIZES_MAX)
			return -EINVAL;
		t = &o->tmpl[o->n_tmpl];
		memset(t, 0, sizeof(*t));
		t->weight = 1;
		if (colon) {
			*colon = '\0';
			t->weight = (unsigned)strtoul(colon + 1, NULL, 10);
			if (t->weight == 0)
				return -EINVAL;
		}
		if (bench_parse_size(tok, &t->size))
			return -EINVAL;
		o->total_weight += t->weight;
		o->n_tmpl++;
	}
	return o->n_tmpl ? 0 : -EINVAL;
}

static int send_parse(struct send_opts *o, int argc, char **argv)
{
	static const struct option lo[] = {
		{"target", 1, 0, 'T'}, {"sessions", 1, 0, 's'}, {"messages", 1, 0, 'm'},
		{"duration", 1, 0, 'd'}, {"rate", 1, 0, 'R'}, {"size", 1, 0, 'l'},
		{"recipients", 1, 0, 'n'}, {"reuse", 0, 0, 'u'}, {"pipelining", 0, 0, 'p'},
		{"bdat", 0, 0, 'b'}, {"from", 1, 0, 'f'}, {"to", 1, 0, 't'}, {"helo", 1, 0, 'H'},
		{"bind", 1, 0, 'B'}, {"threads", 1, 0, 'j'}, {"timeout", 1, 0, 'o'},
		{"report-every", 1, 0, 'r'}, {"json", 0, 0, 'J'}, {"help", 0, 0, 'h'},
		{0, 0, 0, 0},
	};
	int ch;

	memset(o, 0, sizeof(*o));
	o->sessions = o->threads = o->n_rcpt = 1;
	o->report_every_s = 1;
	o->timeout_s = 30;
	o->from = "bench@ringmta-bench.invalid";
	o->to = "rcpt{r}@sink.test";
	o->helo = "ringmta-bench.invalid";
	o->size_spec = "1k";
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'T':
			o->target_str = optarg;
			if (bench_parse_hostport(optarg, &o->target))
				return fprintf(stderr, "send: bad --target %s (want IPv4:port)\n", optarg), -1;
			break;
		case 's': o->sessions = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'm': o->messages = strtoull(optarg, NULL, 10); break;
		case 'd': o->duration_s = strtod(optarg, NULL); break;
		case 'R': o->rate = strtod(optarg, NULL); break;
		case 'l': o->size_spec = optarg; break;
		case 'n': o->n_rcpt = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'u': o->reuse = true; break;
		case 'p': o->pipelining = true; break;
		case 'b': o->chunking = true; break;
		case 'f': o->from = optarg; break;
		case 't': o->to = optarg; break;
		case 'H': o->helo = optarg; break;
		case 'B':
			memset(&o->bind, 0, sizeof(o->bind));
			o->bind.sin_family = AF_INET;
			if (inet_pton(AF_INET, optarg, &o->bind.sin_addr) != 1)
				return fprintf(stderr, "send: bad --bind %s\n", optarg), -1;
			o->has_bind = true;
			break;
		case 'j': o->threads = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'o': o->timeout_s = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'r': o->report_every_s = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'J': o->json = true; break;
		case 'h': send_usage(stdout); exit(0);
		default: send_usage(stderr); return -1;
		}
	}
	if (optind != argc || !o->target_str)
		return send_usage(stderr), -1;
	if (o->sessions == 0 || o->sessions > SEND_SESSIONS_MAX || o->threads == 0 ||
	    o->threads > 64 || o->n_rcpt == 0 || o->n_rcpt > SEND_RCPT_MAX || o->rate < 0 ||
	    o->duration_s < 0 || o->timeout_s == 0)
		return fprintf(stderr, "send: option out of range (see --help)\n"), -1;
	if (parse_sizes(o, o->size_spec))
		return fprintf(stderr, "send: bad --size %s\n", o->size_spec), -1;
	if (o->messages == 0 && o->duration_s == 0)
		o->messages = 1000;
	if (o->threads > o->sessions)
		o->threads = o->sessions;
	return 0;
}

/* --- reports ------------------------------------------------------------------ */

struct send_total {
	struct send_stats st;
	struct bench_hist h[H_COUNT];
	uint16_t code[SEND_CODES_MAX * 4];
	uint64_t code_n[SEND_CODES_MAX * 4];
	unsigned n_code;
};

static void total_collect(struct send_total *t, struct send_worker **ws, unsigned n)
{
	static struct bench_hist snap;
	unsigned i, k, j;

	memset(t, 0, sizeof(*t));
	for (i = 0; i < n; i++) {
		const uint64_t *src = (const uint64_t *)&ws[i]->st;
		uint64_t *dst = (uint64_t *)&t->st;

		for (k = 0; k < sizeof(t->st) / sizeof(uint64_t); k++)
			dst[k] += bench_ctr_get(&src[k]);
		for (k = 0; k < H_COUNT; k++) {
			bench_hist_snapshot(&snap, &ws[i]->h[k]);
			bench_hist_merge(&t->h[k], &snap);
		}
		for (k = 0; k < SEND_CODES_MAX; k++) {
			uint16_t code = __atomic_load_n(&ws[i]->code[k], __ATOMIC_RELAXED);

			if (code == 0 && bench_ctr_get(&ws[i]->code_n[k]) == 0)
				break;
			for (j = 0; j < t->n_code && t->code[j] != code; j++)
				;
			if (j == t->n_code) {
				if (t->n_code == SEND_CODES_MAX * 4)
					continue;
				t->code[t->n_code++] = code;
			}
			t->code_n[j] += bench_ctr_get(&ws[i]->code_n[k]);
		}
	}
}

static void print_hist_json(const char *name, const struct bench_hist *h, bool comma)
{
	printf("\"%s\":{\"count\":%" PRIu64 ",\"hist_sum\":%" PRIu64 ",\"p50\":%" PRIu64
	       ",\"p90\":%" PRIu64 ",\"p99\":%" PRIu64 ",\"p999\":%" PRIu64 ",\"max\":%" PRIu64
	       ",\"mean\":%.1f}%s",
	       name, h->count, bench_hist_sum_buckets(h), bench_hist_pct(h, 50), bench_hist_pct(h, 90),
	       bench_hist_pct(h, 99), bench_hist_pct(h, 99.9), h->max_us,
	       h->count ? (double)h->sum_us / (double)h->count : 0.0, comma ? "," : "");
}

static void send_final(const struct send_opts *o, const struct send_total *t, double secs)
{
	const struct send_stats *s = &t->st;
	double mps = secs > 0 ? (double)s->done / secs : 0;
	unsigned k;

	if (!o->json) {
		printf("send: target=%s sessions=%u threads=%u reuse=%s pipelining=%s size=%s rate=%.0f\n",
		       o->target_str, o->sessions, o->threads, o->reuse ? "yes" : "no",
		       o->pipelining ? "yes" : "no", o->size_spec, o->rate);
		printf("send: elapsed_s=%.3f messages=%" PRIu64 " ok=%" PRIu64 " failed=%" PRIu64
		       " msgs_per_s=%.1f bytes_per_s=%.0f conns=%" PRIu64 " conns_per_s=%.1f late=%" PRIu64 "\n",
		       secs, s->done, s->ok, s->failed, mps, secs > 0 ? (double)s->bytes / secs : 0,
		       s->conns, secs > 0 ? (double)s->conns / secs : 0, s->late);
		printf("send: replies 2xx=%" PRIu64 " 4xx=%" PRIu64 " 5xx=%" PRIu64 " mail_refused=%" PRIu64
		       " rcpt_refused=%" PRIu64 " connect_err=%" PRIu64 " conn_failed=%" PRIu64
		       " timeouts=%" PRIu64 "\n", s->c2xx, s->c4xx, s->c5xx, s->mail_refused,
		       s->rcpt_refused, s->connect_err, s->conn_failed, s->timeouts);
		for (k = 0; k < H_COUNT; k++) {
			const struct bench_hist *h = &t->h[k];

			printf("send: latency %-7s n=%" PRIu64 " p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f"
			       " p999_ms=%.3f max_ms=%.3f\n", send_hist_name[k], h->count,
			       bench_hist_pct(h, 50) / 1e3, bench_hist_pct(h, 90) / 1e3,
			       bench_hist_pct(h, 99) / 1e3, bench_hist_pct(h, 99.9) / 1e3, h->max_us / 1e3);
		}
		return;
	}
	printf("{\"tool\":\"ringmta-bench\",\"mode\":\"send\",\"target\":\"%s\",\"sessions\":%u,"
	       "\"threads\":%u,\"reuse\":%s,\"pipelining\":%s,\"size\":\"%s\",\"recipients\":%u,"
	       "\"rate\":%.3f,\"run\":\"%016" PRIx64 "\",\"elapsed_s\":%.6f,",
	       o->target_str, o->sessions, o->threads, o->reuse ? "true" : "false",
	       o->pipelining ? "true" : "false", o->size_spec, o->n_rcpt, o->rate, o->run, secs);
	printf("\"messages\":{\"started\":%" PRIu64 ",\"done\":%" PRIu64 ",\"ok\":%" PRIu64
	       ",\"failed\":%" PRIu64 ",\"late\":%" PRIu64 "},", s->started, s->done, s->ok, s->failed, s->late);
	printf("\"msgs_per_s\":%.3f,\"bytes\":%" PRIu64 ",\"bytes_per_s\":%.1f,\"connections\":%" PRIu64
	       ",\"conns_per_s\":%.3f,", mps, s->bytes, secs > 0 ? (double)s->bytes / secs : 0,
	       s->conns, secs > 0 ? (double)s->conns / secs : 0);
	printf("\"replies\":{\"2xx\":%" PRIu64 ",\"4xx\":%" PRIu64 ",\"5xx\":%" PRIu64
	       ",\"mail_refused\":%" PRIu64 ",\"rcpt_refused\":%" PRIu64 ",\"codes\":{",
	       s->c2xx, s->c4xx, s->c5xx, s->mail_refused, s->rcpt_refused);
	for (k = 0; k < t->n_code; k++)
		printf("%s\"%u\":%" PRIu64, k ? "," : "", t->code[k], t->code_n[k]);
	printf("}},\"errors\":{\"connect\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"timeout\":%" PRIu64 "},",
	       s->connect_err, s->conn_failed, s->timeouts);
	printf("\"latency_us\":{");
	for (k = 0; k < H_COUNT; k++)
		print_hist_json(send_hist_name[k], &t->h[k], k + 1 < H_COUNT);
	printf("}}\n");
}

/* --- main ---------------------------------------------------------------------- */

static int worker_setup(struct send_worker *w, unsigned idx, unsigned n, const struct send_opts *o)
{
	struct reactor_opts ro = {
		.id = idx, .n_bufs = SEND_N_BUFS, .buf_bytes = SEND_BUF_BYTES,
		.tick_ms = 1000, .hooks = &send_hooks, .ctx = w,
	};
	struct rm_err err;
	unsigned i;

	w->idx = idx;
	w->n_workers = n;
	w->o = o;
	w->rng = 0x2545F4914F6CDD1Dull ^ ((uint64_t)(idx + 1) * 0x9E3779B97F4A7C15ull) ^ o->run;
	w->n_conns = o->sessions / n + (idx < o->sessions % n);
	if (o->messages)
		w->quota = o->messages / n + (idx < o->messages % n);
	else if (o->rate > 0)
		w->quota = (uint64_t)(o->rate * o->duration_s / n + 0.5);
	else
		w->quota = UINT64_MAX;
	w->rate = o->rate / n;
	smtp_client_limits_default(&w->lim);
	w->lim.helo_name = o->helo;
	w->lim.use_pipelining = o->pipelining;
	w->lim.use_chunking = o->chunking;
	w->lim.max_rcpt = SEND_RCPT_MAX;
	w->conns = aligned_alloc(16, sizeof(*w->conns) * w->n_conns);
	if (!w->conns)
		return fprintf(stderr, "send: allocate %u sessions: out of memory\n", w->n_conns), -1;
	memset(w->conns, 0, sizeof(*w->conns) * w->n_conns);
	for (i = 0; i < w->n_conns; i++) {
		struct send_conn *c = &w->conns[i];

		c->w = w;
		c->fd = -1;
		c->rcpt = calloc(o->n_rcpt, sizeof(*c->rcpt));
		c->rcpt_addr = calloc(o->n_rcpt, sizeof(*c->rcpt_addr));
		if (!c->rcpt || !c->rcpt_addr)
			return fprintf(stderr, "send: out of memory\n"), -1;
	}
	if (reactor_init(&w->r, &ro, &err) < 0)
		return fprintf(stderr, "send: %s\n", err.msg), -1;
	return 0;
}

static void worker_free(struct send_worker *w)
{
	unsigned i;

	for (i = 0; w->conns && i < w->n_conns; i++) {
		if (w->conns[i].fd >= 0)
			close(w->conns[i].fd);
		free(w->conns[i].rcpt);
		free(w->conns[i].rcpt_addr);
	}
	free(w->conns);
	free(w);
}

/* report_tick - one progress line: interval rate and latency, totals. */
static void report_tick(struct send_worker **ws, unsigned n, struct send_total *prev, double t)
{
	static struct send_total cur;
	static struct bench_hist iv;

	total_collect(&cur, ws, n);
	bench_hist_sub(&iv, &cur.h[H_MSG], &prev->h[H_MSG]);
	fprintf(stderr, "send: t=%.1f rate=%" PRIu64 " done=%" PRIu64 " 2xx=%" PRIu64 " 4xx=%" PRIu64
		" 5xx=%" PRIu64 " fail=%" PRIu64 " p50_ms=%.3f p99_ms=%.3f max_ms=%.3f\n", t,
		cur.st.done - prev->st.done, cur.st.done, cur.st.c2xx, cur.st.c4xx, cur.st.c5xx,
		cur.st.failed, bench_hist_pct(&iv, 50) / 1e3, bench_hist_pct(&iv, 99) / 1e3,
		iv.max_us / 1e3);
	*prev = cur;
}

int bench_send_main(int argc, char **argv)
{
	static struct send_opts o;
	static struct send_total prev, total;
	struct send_worker **ws;
	sigset_t set;
	uint64_t t0, t_end, next_report;
	unsigned i, n_started = 0;
	int rc = 0;

	if (send_parse(&o, argc, argv))
		return 2;
	o.run = bench_now_ns() ^ ((uint64_t)getpid() << 32);
	for (i = 0; i < o.n_tmpl; i++)
		if (bench_tmpl_make(&o.tmpl[i]))
			return fprintf(stderr, "send: out of memory\n"), 1;
	ws = calloc(o.threads, sizeof(*ws));
	if (!ws)
		return fprintf(stderr, "send: out of memory\n"), 1;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGUSR1);   /* a reactor finished (worker_finished) */
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	t0 = bench_now_ns();
	for (i = 0; i < o.threads; i++) {
		struct rm_err err;

		ws[i] = aligned_alloc(16, (sizeof(**ws) + 15) & ~(size_t)15);
		if (!ws[i])
			return fprintf(stderr, "send: out of memory\n"), 1;
		memset(ws[i], 0, sizeof(**ws));
		if (worker_setup(ws[i], i, o.threads, &o) < 0) {
			rc = 1;
			break;
		}
		if (reactor_start(&ws[i]->r, &err) < 0) {
			fprintf(stderr, "send: %s\n", err.msg);
			rc = 1;
			break;
		}
		n_started++;
	}
	next_report = t0 + (uint64_t)o.report_every_s * 1000000000u;
	while (rc == 0) {
		struct timespec ts = { .tv_sec = 0, .tv_nsec = 50 * 1000 * 1000 };
		bool all_done = true;
		uint64_t now;
		int sig = sigtimedwait(&set, NULL, &ts);

		if (sig == SIGINT || sig == SIGTERM) {
			for (i = 0; i < n_started; i++)
				reactor_stop(&ws[i]->r);
		}
		for (i = 0; i < n_started; i++)
			if (!__atomic_load_n(&ws[i]->is_finished, __ATOMIC_ACQUIRE))
				all_done = false;
		if (all_done)
			break;
		now = bench_now_ns();
		if (o.report_every_s && now >= next_report) {
			next_report += (uint64_t)o.report_every_s * 1000000000u;
			report_tick(ws, n_started, &prev, (double)(now - t0) / 1e9);
		}
	}
	for (i = 0; i < n_started; i++)
		if (reactor_join(&ws[i]->r) != 0)
			rc = 1;
	total_collect(&total, ws, n_started);
	/* The run ends when the last reactor finished, not when main noticed. */
	t_end = 0;
	for (i = 0; i < n_started; i++)
		t_end = ws[i]->t_end > t_end ? ws[i]->t_end : t_end;
	send_final(&o, &total, (double)((t_end ? t_end : bench_now_ns()) - t0) / 1e9);
	fflush(stdout);
	for (i = 0; i < o.threads && ws[i]; i++)
		worker_free(ws[i]);
	free(ws);
	for (i = 0; i < o.n_tmpl; i++)
		bench_tmpl_free(&o.tmpl[i]);
	if (rc == 0 && (total.st.done != total.st.started || total.st.failed ||
			(o.messages && total.st.done < o.messages)))
		rc = 3;
	return rc;
}
