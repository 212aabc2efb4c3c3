/*
 * bench_sink - `ringmta-bench sink`: an io_uring SMTP server that accepts
 *              everything fast, injects failures on request, counts and
 *              verifies what it gets.
 *
 * Owns: one reactor per --threads (each its own SO_REUSEPORT listener and
 *       a fixed pool of --max-conns/threads sessions, each a sans-I/O
 *       smtp_server), the run's duplicate bitmap (--max-seq bits).
 * Must not: store messages; block in a reactor thread (sockets are set up
 *       in main; close/shutdown are the only synchronous calls on the loop).
 * Interface: `ringmta-bench sink --help`; reports key=value lines on
 *       stderr every --report-every s, a final summary (or --json) on
 *       stdout after SIGTERM/SIGINT or --exit-after messages.
 * Limits: --max-conns sessions (more are closed at accept); input held per
 *       session: BENCH_RXQ_MAX received chunks (a multishot receive per
 *       session, cancelled while the server cannot take more); replies are
 *       copied out of the server's 2 KiB output buffer, one send in flight.
 * Errors: set-up failures exit 1 with "sink: what: cause"; peer problems
 *       are counted (aborts, rejects), never fatal.
 * Standards: RFC 5321 (via smtp_server), RFC 2920 (replies in batches).
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

#include "ringmta/reactor.h"
#include "ringmta/smtp_server.h"
#include "ringmta/util.h"

/* SINK_BUF_BYTES - receive buffer size: 16 KiB as the daemon (a 100 KiB message in ~7 completions). */
#define SINK_BUF_BYTES (16 * 1024)
/* SINK_N_BUFS - provided buffers per reactor (power of two), 4 MiB. */
#define SINK_N_BUFS 256
/* SINK_POLICY_MAX - --policy entries. */
#define SINK_POLICY_MAX 8
/* SINK_PPM - failure rates are kept in parts per million (0.0001 % steps). */
#define SINK_PPM 1000000u

enum sink_op {
	SINK_OP_ACCEPT = 1,
	SINK_OP_RECV,
	SINK_OP_SEND,
	SINK_OP_TIMER,
};

struct sink_policy {
	char domain[128];
	unsigned fail4_ppm, fail5_ppm;
};

struct sink_opts {
	struct sockaddr_in listen;
	unsigned threads;
	unsigned max_conns;
	unsigned fail4_ppm, fail5_ppm;   /* at end of data */
	unsigned delay_ms;               /* before the end-of-data reply */
	bool tarpit;                     /* delay every reply that needs an answer */
	unsigned report_every_s;
	uint64_t exit_after;
	uint64_t max_seq;
	bool json;
	const char *hostname;
	struct sink_policy policy[SINK_POLICY_MAX];
	unsigned n_policy;
};

/* struct sink_stats - one reactor's counters (single writer, relaxed reads). */
struct sink_stats {
	uint64_t conns, conns_refused, msgs, bytes, rej4, rej5, rcpt4, rcpt5;
	uint64_t sum_ok, sum_bad, sum_missing, dups, aborts, rejects;
};

/* struct sink_shared - state all reactors see: the duplicate bitmap of the current run. */
struct sink_shared {
	pthread_mutex_t mu;
	uint64_t run;
	bool has_run;
	uint64_t *bits;
	uint64_t n_bits;
	uint64_t total_msgs;   /* atomic: for --exit-after */
	volatile sig_atomic_t *exit_flag;
};

struct sink_worker;

struct sink_conn {
	struct sink_worker *w;
	struct sink_conn *next;        /* free list / starved list */
	int fd;
	unsigned n_ops;                /* submissions in flight that point at us */
	bool is_used, is_dead, is_closing;
	bool is_recv_armed, is_send_busy, is_starved;
	bool is_recv_cancelled;        /* the multishot receive is being cancelled */
	bool has_delayed;              /* an answer waits for the timer */
	bool is_timer_armed;
	uint8_t delayed_reply;
	char qid[24];
	size_t tx_off, tx_len;
	struct __kernel_timespec ts;
	struct bench_check chk;
	struct smtp_server srv;
	uint8_t tx[SMTP_SERVER_OUT_BYTES];
	struct bench_rxq rxq;          /* received, not yet fed to srv */
} __attribute__((aligned(16)));

struct sink_worker {
	struct reactor r;
	unsigned idx;
	int lfd;
	const struct sink_opts *o;
	struct sink_shared *sh;
	struct smtp_server_limits lim;
	struct sink_conn *conns;
	unsigned n_conns;
	struct sink_conn *free_list;
	struct sink_conn *starved;
	uint64_t rng;
	uint64_t qid_next;
	struct sink_stats st;
	uint64_t first_ns, last_ns;    /* first and last accepted message (read after join) */
	int rc;
} __attribute__((aligned(16)));

static volatile sig_atomic_t sink_exit;

static void sink_drive(struct sink_conn *c);

/* --- sessions ------------------------------------------------------------ */

static void conn_release(struct sink_conn *c)
{
	struct sink_worker *w = c->w;

	c->is_used = false;
	c->next = w->free_list;
	w->free_list = c;
}

/* conn_close - end the session now; the slot is reused once no op points at it. */
static void conn_close(struct sink_conn *c)
{
	if (c->is_dead)
		return;
	c->is_dead = true;
	smtp_server_fini(&c->srv);
	for (; c->rxq.n > 0; c->rxq.n--, c->rxq.head = (c->rxq.head + 1) % BENCH_RXQ_MAX)
		reactor_buf_put(&c->w->r, c->rxq.bid[c->rxq.head]);
	shutdown(c->fd, SHUT_RDWR);   /* ends the receive; the last reply leaves with the FIN */
	close(c->fd);
	c->fd = -1;
	if (c->n_ops == 0)
		conn_release(c);
}

/* conn_op_done - one of our submissions completed; true when the session is gone. */
static bool conn_op_done(struct sink_conn *c)
{
	c->n_ops--;
	if (!c->is_dead)
		return false;
	if (c->n_ops == 0)
		conn_release(c);
	return true;
}

static void conn_send(struct sink_conn *c)
{
	struct io_uring_sqe *sqe = reactor_sqe(&c->w->r);

	/* The last reply (221, 421) waits in the socket for conn_close's FIN
	 * and leaves in the same segment. */
	io_uring_prep_send(sqe, c->fd, c->tx + c->tx_off, c->tx_len - c->tx_off,
			   MSG_NOSIGNAL | (c->is_closing ? MSG_MORE : 0));
	reactor_sqe_tag(sqe, c, SINK_OP_SEND);
	c->is_send_busy = true;
	c->n_ops++;
}

/* out_take - move the server's output into our send buffer; false while a send is in flight. */
static bool out_take(struct sink_conn *c)
{
	const uint8_t *p;
	size_t len;

	if (c->is_send_busy)
		return false;
	p = smtp_server_output(&c->srv, &len);
	if (len == 0)
		return true;
	memcpy(c->tx, p, len);
	smtp_server_output_done(&c->srv, len);
	c->tx_off = 0;
	c->tx_len = len;
	conn_send(c);
	return true;
}

static void conn_recv(struct sink_conn *c)
{
	reactor_recv_multishot(&c->w->r, c, SINK_OP_RECV, c->fd);
	c->is_recv_armed = true;
	c->is_recv_cancelled = false;
	c->n_ops++;
}

/* rxq_feed - give the server what it can take of the oldest held chunk; true if it took something. */
static bool rxq_feed(struct sink_conn *c)
{
	struct bench_rxq *q = &c->rxq;
	unsigned i = q->head;
	size_t n;

	if (q->n == 0)
		return false;
	n = smtp_server_feed(&c->srv, reactor_buf(&c->w->r, q->bid[i]) + q->off[i], q->len[i] - q->off[i]);
	q->off[i] += (uint32_t)n;
	if (q->off[i] == q->len[i]) {
		reactor_buf_put(&c->w->r, q->bid[i]);
		q->head = (i + 1) % BENCH_RXQ_MAX;
		q->n--;
	}
	return n > 0;
}

/* rate_hit - true with probability ppm / 10^6. */
static bool rate_hit(struct sink_worker *w, unsigned ppm)
{
	return ppm > 0 && bench_rand(&w->rng) % SINK_PPM < ppm;
}

/* pick_end_reply - the end-of-data reply: injected failure or QUEUED. */
static enum smtp_reply_id pick_end_reply(struct sink_worker *w)
{
	uint64_t x = bench_rand(&w->rng) % SINK_PPM;

	if (x < w->o->fail4_ppm) {
		bench_ctr_add(&w->st.rej4, 1);
		return SMTP_REPLY_LOCAL_ERROR;
	}
	if (x < (uint64_t)w->o->fail4_ppm + w->o->fail5_ppm) {
		bench_ctr_add(&w->st.rej5, 1);
		return SMTP_REPLY_TXN_FAILED;
	}
	return SMTP_REPLY_QUEUED;
}

/* pick_rcpt_reply - RCPT: the --policy of the recipient's domain, if any. */
static enum smtp_reply_id pick_rcpt_reply(struct sink_worker *w, const struct smtp_proto_path *p)
{
	const char *dom = p->addr + p->local_len + 1;
	unsigned i;

	if (p->is_null || p->local_len >= p->len)
		return SMTP_REPLY_RCPT_OK;
	for (i = 0; i < w->o->n_policy; i++) {
		const struct sink_policy *pol = &w->o->policy[i];

		if (strcasecmp(pol->domain, dom) != 0)
			continue;
		if (rate_hit(w, pol->fail4_ppm)) {
			bench_ctr_add(&w->st.rcpt4, 1);
			return SMTP_REPLY_LOCAL_ERROR;
		}
		if (rate_hit(w, pol->fail5_ppm)) {
			bench_ctr_add(&w->st.rcpt5, 1);
			return SMTP_REPLY_USER_UNKNOWN;
		}
		break;
	}
	return SMTP_REPLY_RCPT_OK;
}

/* check_dup - true if (run, seq) was seen before in this run. */
static bool check_dup(struct sink_shared *sh, uint64_t run, uint64_t seq)
{
	uint64_t bit;

	if (!__atomic_load_n(&sh->has_run, __ATOMIC_ACQUIRE) ||
	    __atomic_load_n(&sh->run, __ATOMIC_ACQUIRE) != run) {
		pthread_mutex_lock(&sh->mu);
		if (!sh->has_run || sh->run != run) {
			/* XXX a straggler of the previous run racing this reset can set a stale
			 * bit; a per-run bitmap keyed by run id would fix it. */
			memset(sh->bits, 0, (sh->n_bits + 63) / 64 * 8);
			__atomic_store_n(&sh->run, run, __ATOMIC_RELEASE);
			__atomic_store_n(&sh->has_run, true, __ATOMIC_RELEASE);
		}
		pthread_mutex_unlock(&sh->mu);
	}
	if (seq >= sh->n_bits)
		return false;
	bit = 1ull << (seq % 64);
	return (__atomic_fetch_or(&sh->bits[seq / 64], bit, __ATOMIC_RELAXED) & bit) != 0;
}

/* qid_format - "S<reactor>.<hex counter>", the queue id in the 250 (by hand: once per message). */
static void qid_format(char qid[24], unsigned idx, uint64_t n)
{
	size_t o = 0;

	qid[o++] = 'S';
	o += bench_fmt_dec(qid + o, idx % 100);   /* --threads <= 64 */
	qid[o++] = '.';
	o += bench_fmt_hex(qid + o, n, 1);
	qid[o] = '\0';
}

static void on_data_end(struct sink_conn *c)
{
	struct sink_worker *w = c->w;
	enum smtp_reply_id id;

	switch (bench_check_end(&c->chk)) {
	case BENCH_CHECK_OK:
		bench_ctr_add(&w->st.sum_ok, 1);
		if (check_dup(w->sh, c->chk.run, c->chk.seq))
			bench_ctr_add(&w->st.dups, 1);
		break;
	case BENCH_CHECK_BAD:
		bench_ctr_add(&w->st.sum_bad, 1);
		break;
	case BENCH_CHECK_MISSING:
		bench_ctr_add(&w->st.sum_missing, 1);
		break;
	}
	id = pick_end_reply(w);
	if (id == SMTP_REPLY_QUEUED) {
		bench_ctr_add(&w->st.msgs, 1);
		w->last_ns = bench_now_ns();
		if (w->first_ns == 0)
			w->first_ns = w->last_ns;
		if (w->o->exit_after &&
		    __atomic_add_fetch(&w->sh->total_msgs, 1, __ATOMIC_RELAXED) == w->o->exit_after)
			*w->sh->exit_flag = 1;
	}
	qid_format(c->qid, w->idx, w->qid_next++);
	if (w->o->delay_ms) {
		c->has_delayed = true;
		c->delayed_reply = (uint8_t)id;
		return;
	}
	smtp_server_answer(&c->srv, id, c->qid);
}

/* answer - answer now, or later when --tarpit delays every reply. */
static void answer(struct sink_conn *c, enum smtp_reply_id id)
{
	if (c->w->o->tarpit && c->w->o->delay_ms) {
		c->has_delayed = true;
		c->delayed_reply = (uint8_t)id;
		c->qid[0] = '\0';
		return;
	}
	smtp_server_answer(&c->srv, id, NULL);
}

static void arm_delay(struct sink_conn *c)
{
	struct io_uring_sqe *sqe = reactor_sqe(&c->w->r);

	c->ts.tv_sec = c->w->o->delay_ms / 1000;
	c->ts.tv_nsec = (long long)(c->w->o->delay_ms % 1000) * 1000000;
	io_uring_prep_timeout(sqe, &c->ts, 0, 0);
	reactor_sqe_tag(sqe, c, SINK_OP_TIMER);
	c->is_timer_armed = true;
	c->n_ops++;
}

/* sink_event - act on one server event; false to stop driving (wait for I/O). */
static bool sink_event(struct sink_conn *c, const struct smtp_server_ev *ev)
{
	struct sink_worker *w = c->w;

	switch (ev->kind) {
	case SMTP_SERVER_EV_NEED_MORE:
		return rxq_feed(c);
	case SMTP_SERVER_EV_WAIT:
		if (c->has_delayed && !c->is_timer_armed)
			arm_delay(c);
		return false;
	case SMTP_SERVER_EV_FLUSH:
		return out_take(c);   /* true: the output moved to tx, the server may go on */
	case SMTP_SERVER_EV_MAIL:
		answer(c, SMTP_REPLY_MAIL_OK);
		return true;
	case SMTP_SERVER_EV_RCPT:
		answer(c, pick_rcpt_reply(w, ev->path));
		return true;
	case SMTP_SERVER_EV_DATA_BEGIN:
		bench_check_init(&c->chk);
		answer(c, SMTP_REPLY_OK);
		return true;
	case SMTP_SERVER_EV_BODY:
		bench_check_feed(&c->chk, ev->data, ev->len);
		bench_ctr_add(&w->st.bytes, ev->len);
		return true;
	case SMTP_SERVER_EV_DATA_END:
		on_data_end(c);
		return true;
	case SMTP_SERVER_EV_DATA_ABORT:
		bench_ctr_add(&w->st.aborts, 1);
		return true;
	case SMTP_SERVER_EV_STARTTLS:
		smtp_server_answer(&c->srv, SMTP_REPLY_TLS_UNAVAILABLE, NULL);
		return true;
	case SMTP_SERVER_EV_REJECT:
		bench_ctr_add(&w->st.rejects, 1);
		return true;
	case SMTP_SERVER_EV_CLOSE:
		c->is_closing = true;
		return false;
	default:   /* HELO */
		return true;
	}
}

static void sink_drive(struct sink_conn *c)
{
	struct smtp_server_ev ev;

	if (c->is_dead)
		return;
	rxq_feed(c);
	while (!c->is_closing) {
		smtp_server_next(&c->srv, &ev);
		if (!sink_event(c, &ev))
			break;
	}
	out_take(c);
	if (c->is_closing) {
		if (!c->is_send_busy)
			conn_close(c);
		return;
	}
	if (c->rxq.n > 0) {   /* the server is full or paused: stop receiving */
		if (c->is_recv_armed && !c->is_recv_cancelled) {
			reactor_cancel(&c->w->r, c, SINK_OP_RECV);
			c->is_recv_cancelled = true;
		}
	} else if (!c->is_recv_armed && !c->is_starved) {
		conn_recv(c);
	}
}

/* --- completions ----------------------------------------------------------- */

static void on_recv(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	struct sink_conn *c = obj;
	struct sink_worker *w = c->w;
	unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

	if (cqe->res > 0 && !(cqe->flags & IORING_CQE_F_BUFFER))
		rm_panic("sink: receive without a buffer");
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
	if (cqe->res == -ENOBUFS) {   /* every buffer is in use: re-arm after this batch */
		c->is_starved = true;
		c->next = w->starved;
		w->starved = c;
		return;
	}
	if (cqe->res == -ECANCELED) {   /* we paused it; sink_drive re-arms once the queue drains */
		sink_drive(c);
		return;
	}
	if (cqe->res <= 0) {
		smtp_server_eof(&c->srv);
		sink_drive(c);
		return;
	}
	if (!bench_rxq_push(&c->rxq, bid, (size_t)cqe->res)) {   /* cannot happen: see BENCH_RXQ_MAX */
		reactor_buf_put(r, bid);
		bench_ctr_add(&w->st.aborts, 1);
		conn_close(c);
		return;
	}
	sink_drive(c);
}

static void on_send(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	struct sink_conn *c = obj;

	(void)r;
	c->is_send_busy = false;
	if (conn_op_done(c))
		return;
	if (cqe->res <= 0) {
		conn_close(c);
		return;
	}
	c->tx_off += (size_t)cqe->res;
	if (c->tx_off < c->tx_len) {
		conn_send(c);
		return;
	}
	sink_drive(c);
}

static void on_timer(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	struct sink_conn *c = obj;

	(void)r;
	(void)cqe;
	c->is_timer_armed = false;
	if (conn_op_done(c))
		return;
	if (c->has_delayed) {
		c->has_delayed = false;
		smtp_server_answer(&c->srv, (enum smtp_reply_id)c->delayed_reply,
				   c->qid[0] ? c->qid : NULL);
	}
	sink_drive(c);
}

static void arm_accept(struct sink_worker *w)
{
	struct io_uring_sqe *sqe = reactor_sqe(&w->r);

	io_uring_prep_multishot_accept(sqe, w->lfd, NULL, NULL, SOCK_CLOEXEC);
	reactor_sqe_tag(sqe, w, SINK_OP_ACCEPT);
}

static void on_accept(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	struct sink_worker *w = obj;
	struct sink_conn *c;

	(void)r;
	if (!(cqe->flags & IORING_CQE_F_MORE) && *w->sh->exit_flag == 0)
		arm_accept(w);
	if (cqe->res < 0)
		return;
	c = w->free_list;
	if (!c) {
		bench_ctr_add(&w->st.conns_refused, 1);
		close(cqe->res);
		return;
	}
	w->free_list = c->next;
	bench_ctr_add(&w->st.conns, 1);
	c->is_used = true;
	c->is_dead = c->is_closing = c->is_recv_armed = c->is_send_busy = false;
	c->is_starved = c->has_delayed = c->is_timer_armed = c->is_recv_cancelled = false;
	c->fd = cqe->res;
	c->n_ops = 0;
	c->rxq.head = c->rxq.n = 0;
	smtp_server_init(&c->srv, &w->lim);
	smtp_server_start(&c->srv, SMTP_REPLY_GREETING);
	sink_drive(c);
}

/* --- reactor hooks --------------------------------------------------------- */

static int sink_start(struct reactor *r)
{
	struct sink_worker *w = r->ctx;

	reactor_on(r, SINK_OP_ACCEPT, on_accept);
	reactor_on(r, SINK_OP_RECV, on_recv);
	reactor_on(r, SINK_OP_SEND, on_send);
	reactor_on(r, SINK_OP_TIMER, on_timer);
	arm_accept(w);
	return 0;
}

static void sink_loop_end(struct reactor *r)
{
	struct sink_worker *w = r->ctx;
	struct sink_conn *c = w->starved;

	w->starved = NULL;
	while (c) {
		struct sink_conn *next = c->next;

		c->is_starved = false;
		sink_drive(c);
		c = next;
	}
}

static bool sink_is_done(struct reactor *r)
{
	(void)r;
	return true;
}

static const struct reactor_hooks sink_hooks = {
	.start = sink_start,
	.loop_end = sink_loop_end,
	.is_done = sink_is_done,
};

/* --- options, reports, main ------------------------------------------------ */

static void sink_usage(FILE *f)
{
	fputs("usage: ringmta-bench sink [options]\n"
	      "  --listen HOST:PORT     address to accept on (default 127.0.0.1:2526)\n"
	      "  --threads N            reactors, one SO_REUSEPORT listener each (default 1)\n"
	      "  --max-conns N          concurrent sessions, all reactors (default 4096)\n"
	      "  --fail SPEC            end-of-data failures, e.g. 4xx:1%,5xx:0.1%\n"
	      "                         (4xx = 451 4.3.0, 5xx = 554 5.5.1)\n"
	      "  --policy DOMAIN=SPEC   RCPT replies for one recipient domain, e.g.\n"
	      "                         slow.test=4xx:50% (4xx = 451, 5xx = 550); repeatable\n"
	      "  --delay MS             wait MS before each end-of-data reply\n"
	      "  --tarpit               with --delay: before every MAIL/RCPT/DATA reply too\n"
	      "  --report-every S       counters on stderr every S seconds (default 0: off)\n"
	      "  --exit-after N         exit after N accepted messages\n"
	      "  --max-seq N            duplicate detection for seq < N (default 16777216)\n"
	      "  --hostname NAME        greeting name (default ringmta-bench.invalid)\n"
	      "  --json                 final summary as JSON\n"
	      "Stops on SIGTERM/SIGINT and prints the summary: messages, bytes,\n"
	      "injected rejections, checksum ok/bad/missing, duplicates.\n", f);
}

/* parse_pct - "10%" or "0.1%" (or "0.1") into parts per million. */
static int parse_pct(const char *s, unsigned *ppm)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || (*end && strcmp(end, "%") != 0) || v < 0 || v > 100)
		return -EINVAL;
	*ppm = (unsigned)(v * (SINK_PPM / 100) + 0.5);
	return 0;
}

/* parse_fail - "4xx:10%,5xx:0.1%". */
static int parse_fail(const char *spec, unsigned *f4, unsigned *f5)
{
	char buf[128], *save = NULL, *tok;

	if (strlen(spec) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, spec);
	*f4 = *f5 = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (strncmp(tok, "4xx:", 4) == 0) {
			if (parse_pct(tok + 4, f4))
				return -EINVAL;
		} else if (strncmp(tok, "5xx:", 4) == 0) {
			if (parse_pct(tok + 4, f5))
				return -EINVAL;
		} else {
			return -EINVAL;
		}
	}
	return (uint64_t)*f4 + *f5 <= SINK_PPM ? 0 : -EINVAL;
}

static int parse_policy(struct sink_opts *o, const char *arg)
{
	const char *eq = strchr(arg, '=');
	struct sink_policy *p;

	if (!eq || o->n_policy == SINK_POLICY_MAX || (size_t)(eq - arg) >= sizeof(p->domain) || eq == arg)
		return -EINVAL;
	p = &o->policy[o->n_policy];
	memcpy(p->domain, arg, (size_t)(eq - arg));
	p->domain[eq - arg] = '\0';
	if (parse_fail(eq + 1, &p->fail4_ppm, &p->fail5_ppm))
		return -EINVAL;
	o->n_policy++;
	return 0;
}

static int sink_parse(struct sink_opts *o, int argc, char **argv)
{
	static const struct option lo[] = {
		{"listen", 1, 0, 'l'}, {"threads", 1, 0, 't'}, {"max-conns", 1, 0, 'c'},
		{"fail", 1, 0, 'f'}, {"policy", 1, 0, 'P'}, {"delay", 1, 0, 'd'},
		{"tarpit", 0, 0, 'T'}, {"report-every", 1, 0, 'r'}, {"exit-after", 1, 0, 'x'},
		{"max-seq", 1, 0, 'S'}, {"hostname", 1, 0, 'H'}, {"json", 0, 0, 'j'},
		{"help", 0, 0, 'h'}, {0, 0, 0, 0},
	};
	int ch;

	memset(o, 0, sizeof(*o));
	o->threads = 1;
	o->max_conns = 4096;
	o->max_seq = 1u << 24;
	o->hostname = "ringmta-bench.invalid";
	bench_parse_hostport("127.0.0.1:2526", &o->listen);
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'l':
			if (bench_parse_hostport(optarg, &o->listen))
				return fprintf(stderr, "sink: bad --listen %s (want IPv4:port)\n", optarg), -1;
			break;
		case 't': o->threads = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'c': o->max_conns = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'f':
			if (parse_fail(optarg, &o->fail4_ppm, &o->fail5_ppm))
				return fprintf(stderr, "sink: bad --fail %s (want 4xx:P%%,5xx:P%%)\n", optarg), -1;
			break;
		case 'P':
			if (parse_policy(o, optarg))
				return fprintf(stderr, "sink: bad --policy %s (want domain=4xx:P%%)\n", optarg), -1;
			break;
		case 'd': o->delay_ms = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'T': o->tarpit = true; break;
		case 'r': o->report_every_s = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'x': o->exit_after = strtoull(optarg, NULL, 10); break;
		case 'S': o->max_seq = strtoull(optarg, NULL, 10); break;
		case 'H': o->hostname = optarg; break;
		case 'j': o->json = true; break;
		case 'h': sink_usage(stdout); exit(0);
		default: sink_usage(stderr); return -1;
		}
	}
	if (optind != argc || o->threads == 0 || o->threads > 64 || o->max_conns < o->threads)
		return sink_usage(stderr), -1;
	return 0;
}

static void stats_sum(struct sink_stats *t, struct sink_worker **ws, unsigned n)
{
	unsigned i, k;

	memset(t, 0, sizeof(*t));
	for (i = 0; i < n; i++) {
		const uint64_t *src = (const uint64_t *)&ws[i]->st;
		uint64_t *dst = (uint64_t *)t;

		for (k = 0; k < sizeof(*t) / sizeof(uint64_t); k++)
			dst[k] += bench_ctr_get(&src[k]);
	}
}

#define SINK_STATS_FMT "conns=%" PRIu64 " refused=%" PRIu64 " msgs=%" PRIu64 " bytes=%" PRIu64 \
	" rej4=%" PRIu64 " rej5=%" PRIu64 " rcpt4=%" PRIu64 " rcpt5=%" PRIu64 " sum_ok=%" PRIu64 \
	" sum_bad=%" PRIu64 " sum_missing=%" PRIu64 " dups=%" PRIu64 " aborts=%" PRIu64 " rejects=%" PRIu64
#define SINK_STATS_ARGS(s) (s).conns, (s).conns_refused, (s).msgs, (s).bytes, (s).rej4, (s).rej5, \
	(s).rcpt4, (s).rcpt5, (s).sum_ok, (s).sum_bad, (s).sum_missing, (s).dups, (s).aborts, (s).rejects

/*
 * sink_final - the summary. window_s: from the first to the last accepted
 * message, so a relay's delivery rate can be read off the sink alone.
 */
static void sink_final(const struct sink_opts *o, const struct sink_stats *s, double secs,
		       double window_s)
{
	if (!o->json) {
		printf("sink: final elapsed_s=%.3f window_s=%.3f " SINK_STATS_FMT "\n", secs, window_s,
		       SINK_STATS_ARGS(*s));
		return;
	}
	printf("{\"tool\":\"ringmta-bench\",\"mode\":\"sink\",\"elapsed_s\":%.3f,\"window_s\":%.6f,"
	       "\"conns\":%" PRIu64 ",\"conns_refused\":%" PRIu64 ",\"messages\":%" PRIu64
	       ",\"bytes\":%" PRIu64 ",\"rejected_4xx\":%" PRIu64 ",\"rejected_5xx\":%" PRIu64
	       ",\"rcpt_4xx\":%" PRIu64 ",\"rcpt_5xx\":%" PRIu64
	       ",\"checksum\":{\"ok\":%" PRIu64 ",\"bad\":%" PRIu64 ",\"missing\":%" PRIu64
	       ",\"duplicates\":%" PRIu64 "},\"aborts\":%" PRIu64 ",\"rejects\":%" PRIu64 "}\n",
	       secs, window_s, s->conns, s->conns_refused, s->msgs, s->bytes, s->rej4, s->rej5, s->rcpt4,
	       s->rcpt5, s->sum_ok, s->sum_bad, s->sum_missing, s->dups, s->aborts, s->rejects);
}

static int listen_socket(const struct sockaddr_in *sa)
{
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));   /* accepted sockets inherit it */
	if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0 || listen(fd, 4096) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

static int worker_setup(struct sink_worker *w, unsigned idx, const struct sink_opts *o,
			struct sink_shared *sh)
{
	struct reactor_opts ro = {
		.id = idx, .n_bufs = SINK_N_BUFS, .buf_bytes = SINK_BUF_BYTES,
		.tick_ms = 1000, .hooks = &sink_hooks, .ctx = w,
	};
	struct rm_err err;
	unsigned i;

	w->idx = idx;
	w->o = o;
	w->sh = sh;
	w->rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)(idx + 1) * 0xD1B54A32D192ED03ull);
	w->lfd = listen_socket(&o->listen);
	if (w->lfd < 0) {
		fprintf(stderr, "sink: listen %s:%u: %s\n", inet_ntoa(o->listen.sin_addr),
			ntohs(o->listen.sin_port), strerror(-w->lfd));
		return -1;
	}
	smtp_server_limits_default(&w->lim);
	w->lim.hostname = o->hostname;
	w->lim.max_errors = UINT_MAX;   /* injected failures must not end sessions */
	w->lim.max_message_bytes = 1ull << 30;
	w->n_conns = o->max_conns / o->threads;
	w->conns = aligned_alloc(16, sizeof(*w->conns) * w->n_conns);
	if (!w->conns) {
		fprintf(stderr, "sink: allocate %u sessions: out of memory\n", w->n_conns);
		return -1;
	}
	memset(w->conns, 0, sizeof(*w->conns) * w->n_conns);
	for (i = w->n_conns; i-- > 0;) {
		w->conns[i].w = w;
		w->conns[i].fd = -1;
		conn_release(&w->conns[i]);
	}
	if (reactor_init(&w->r, &ro, &err) < 0) {
		fprintf(stderr, "sink: %s\n", err.msg);
		return -1;
	}
	return 0;
}

int bench_sink_main(int argc, char **argv)
{
	struct sink_opts o;
	struct sink_shared sh = { .mu = PTHREAD_MUTEX_INITIALIZER };
	struct sink_worker **ws;
	struct sink_stats st;
	sigset_t set;
	uint64_t t0, last_msgs = 0, next_report_ns = 0, first_ns = 0, last_ns = 0;
	unsigned i, n_started = 0;
	int rc = 0;

	if (sink_parse(&o, argc, argv))
		return 2;
	sh.n_bits = o.max_seq;
	sh.bits = calloc((o.max_seq + 63) / 64, 8);
	sh.exit_flag = &sink_exit;
	ws = calloc(o.threads, sizeof(*ws));
	if (!sh.bits || !ws)
		return fprintf(stderr, "sink: out of memory\n"), 1;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	for (i = 0; i < o.threads; i++) {
		struct rm_err err;

		ws[i] = aligned_alloc(16, (sizeof(**ws) + 15) & ~(size_t)15);
		if (!ws[i])
			return fprintf(stderr, "sink: out of memory\n"), 1;
		memset(ws[i], 0, sizeof(**ws));
		if (worker_setup(ws[i], i, &o, &sh)) {
			rc = 1;
			break;
		}
		if (reactor_start(&ws[i]->r, &err) < 0) {
			fprintf(stderr, "sink: %s\n", err.msg);
			rc = 1;
			break;
		}
		n_started++;
	}
	if (rc == 0)
		fprintf(stderr, "sink: listening on %s:%u threads=%u\n", inet_ntoa(o.listen.sin_addr),
			ntohs(o.listen.sin_port), o.threads);
	t0 = bench_now_ns();
	while (rc == 0 && !sink_exit) {
		struct timespec ts = { .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000 };
		uint64_t now;
		int sig = sigtimedwait(&set, NULL, &ts);

		if (sig == SIGINT || sig == SIGTERM)
			break;
		now = bench_now_ns();
		if (o.report_every_s == 0)
			continue;
		if (next_report_ns == 0)
			next_report_ns = t0 + (uint64_t)o.report_every_s * 1000000000u;
		if (now < next_report_ns)
			continue;
		next_report_ns += (uint64_t)o.report_every_s * 1000000000u;
		stats_sum(&st, ws, n_started);
		fprintf(stderr, "sink: t=%.1f rate=%.0f " SINK_STATS_FMT "\n", (double)(now - t0) / 1e9,
			(double)(st.msgs - last_msgs) / o.report_every_s, SINK_STATS_ARGS(st));
		last_msgs = st.msgs;
	}
	for (i = 0; i < n_started; i++)
		reactor_stop(&ws[i]->r);
	for (i = 0; i < n_started; i++)
		if (reactor_join(&ws[i]->r) != 0)
			rc = 1;
	stats_sum(&st, ws, n_started);
	for (i = 0; i < n_started; i++) {
		if (ws[i]->first_ns && (first_ns == 0 || ws[i]->first_ns < first_ns))
			first_ns = ws[i]->first_ns;
		if (ws[i]->last_ns > last_ns)
			last_ns = ws[i]->last_ns;
	}
	sink_final(&o, &st, (double)(bench_now_ns() - t0) / 1e9,
		   first_ns ? (double)(last_ns - first_ns) / 1e9 : 0.0);
	fflush(stdout);
	for (i = 0; i < o.threads && ws[i]; i++) {
		for (unsigned k = 0; k < ws[i]->n_conns; k++)
			if (ws[i]->conns[k].fd >= 0)
				close(ws[i]->conns[k].fd);
		if (ws[i]->lfd >= 0)
			close(ws[i]->lfd);
		free(ws[i]->conns);
		free(ws[i]);
	}
	free(ws);
	free(sh.bits);
	return rc;
}
