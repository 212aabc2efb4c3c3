/*
 * deliver - the outbound delivery engine of one reactor: due messages of
 *           the reactor's spool shard are routed, grouped into
 *           transactions per destination, sent over pooled SMTP/LMTP
 *           connections on the reactor's own ring, and every outcome is
 *           written back to the spool (delivered, deferred with backoff,
 *           bounced with an RFC 3464 DSN injected into the spool).
 *
 * Owns: the in-flight message table, routes (recipient domain -> next
 *       hop, with the DNS answer's lifetime), sites (where mail really
 *       goes: a next hop's host set, its connection pool, queue, limits
 *       and health), connections (socket, smtp_client, body reader), the
 *       reactor's udns resolver.
 * Must not: touch another reactor's messages (the shard in the queue id
 *       decides), change a message's state before the remote reply is in,
 *       or forget a message before its spool update is committed (the
 *       in-flight table is what keeps a queue scan from sending it twice).
 * Interface: include/ringmta/deliver.h
 * Limits: destination_concurrency_limit connections per site,
 *       max_messages_per_connection, destination_recipient_limit per
 *       transaction, destination_rate_limit, DELIVER_MAX_INFLIGHT messages
 *       in memory per reactor, connect_timeout, smtp_command_timeout per
 *       reply, connection_idle_timeout, DELIVER_STASH_MAX unread reply bytes.
 * Errors: every peer, DNS or spool trouble becomes a per-recipient
 *       outcome (queue_classify_*): deliver, defer, bounce. Nothing here
 *       aborts the reactor.
 * Standards: RFC 5321 (5.1 MX order, 4.5.3.2 timeouts, 4.5.5 null
 *       sender), RFC 2033 (LMTP), RFC 3461/3464 (DSN), RFC 7505 (null MX).
 *
 * Durability: a recipient's new state is written (spool_shard_update or
 * _done) only after the remote reply, and the message leaves the
 * in-flight table only once that record is committed; a crash in between
 * sends it again (at least once, never lost). A bounce is spooled in the
 * same batch as the update that marks its recipients failed, and before
 * it, so it cannot be lost either.
 */
#include "ringmta/deliver.h"

#include <errno.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ringmta/dns.h"
#include "ringmta/dsn.h"
#include "ringmta/log.h"
#include "ringmta/maps.h"
#include "ringmta/maps_live.h"
#include "ringmta/queue.h"
#include "ringmta/reactor.h"
#include "ringmta/server.h"
#include "ringmta/smtp_client.h"
#include "ringmta/spool.h"

/* DELIVER_MAX_INFLIGHT - messages in memory per reactor; the rest wait in
 * the spool for the next scan. */
#define DELIVER_MAX_INFLIGHT 20000
/* DELIVER_STASH_MAX - unread reply bytes a connection keeps (the client
 * parses as it goes; more than this is a peer flooding us). */
#define DELIVER_STASH_MAX (64 * 1024)
/* DELIVER_SCAN_MS - how often the queue is scanned for due messages. */
#define DELIVER_SCAN_MS 1000
/* DELIVER_HASH - buckets of the message, route and site tables. */
#define DELIVER_HASH 4096
/* DELIVER_SITE_SLOTS - connection counters shared by every reactor,
 * indexed by a hash of the site key, so destination_concurrency_limit
 * holds for the whole process, not per reactor (a collision only makes two
 * sites share one limit). */
#define DELIVER_SITE_SLOTS 65536
static _Atomic unsigned site_conn_count[DELIVER_SITE_SLOTS];
/*
 * DELIVER_NEXT_HOLD_MS - how long a connection whose transaction just
 * began counts as the taker of one queued message at its WAIT NEXT (the
 * next transaction pipelined behind the end of data: one round trip and
 * one send per message instead of two, here and at the peer). While it
 * counts, site_pump leaves that message to it rather than waking an idle
 * connection, which would need two round trips anyway. A peer slower than
 * this to ask for the body loses the claim; the message then goes to the
 * next connection free, or at the next pump (at most a tick away).
 */
#define DELIVER_NEXT_HOLD_MS 500
/* DELIVER_DIAG_MAX - remote reply text kept per failed recipient. */
#define DELIVER_DIAG_MAX 1024

enum deliver_op {
	OP_DNS = SERVER_OP_DELIVER_FIRST,
	OP_CONNECT,
	OP_RECV,
	OP_SEND,
};

struct dmsg;
struct site;
struct conn;

/* struct drcpt - one recipient of a message in flight. */
struct drcpt {
	char *addr;
	char *orcpt;
	unsigned notify;
	unsigned state;             /* enum spool_rcpt_state */
	unsigned attempts;
	int64_t next_attempt_unix;
	bool is_due;                /* part of this round */
	bool has_result;
	enum queue_verdict verdict;
	uint16_t code;              /* remote reply code, 0 for our own reason */
	char status[QUEUE_STATUS_BYTES];
	char *diag;                 /* reply text or our reason (heap) */
	char *relay;                /* who answered (heap), NULL when nobody */
	bool is_final;              /* delivered by LMTP: into the mailbox */
	bool is_peer_dsn;           /* delivered to a peer that offered DSN */
	bool is_delay_notice;       /* deferred past delay_warning_time: tell the sender */
	unsigned flags;             /* SPOOL_RCPT_F_* as stored */
};

/* struct dmsg - a message in flight. */
struct dmsg {
	struct spool_owner own;    /* first: the spool's done callback */
	struct dmsg *hnext;
	struct deliver *d;
	char id[SPOOL_ID_BYTES + 1];
	char *sender;
	char *envid;
	int ret, body;
	bool smtputf8;
	int64_t arrival_unix;
	int64_t start_ms;
	uint64_t size;
	size_t n_rcpts;
	struct drcpt *rcpts;
	unsigned n_open;            /* transactions not finished */
	bool is_committing;         /* update/done written, waiting for commit */
	struct verify *probe;       /* a recipient probe, not a spooled message */
	bool is_pin;                /* a placeholder: an admin change is committing */
};

/* struct dtxn - some recipients of one message for one route. */
struct dtxn {
	struct dtxn *next;
	struct dmsg *m;
	struct route *route;
	unsigned n;
	uint32_t *idx;              /* indices into m->rcpts */
	struct smtp_client_rcpt *crcpt;
	struct smtp_client_txn ct;
};

enum route_kind { ROUTE_MX, ROUTE_HOST, ROUTE_UNIX };

/* struct route - how mail for one domain (or every domain, relayhost)
 * finds its site; the DNS answer's lifetime. */
struct route {
	struct route *hnext;
	char key[MAPS_ROUTE_TEXT_BYTES + 8];
	enum route_kind kind;
	bool is_lmtp;
	bool is_static;             /* relayhost/transport: DNS trouble defers */
	char host[DNS_NAME_BYTES];  /* MX domain or host name/literal */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	uint16_t port;
	struct site *site;
	int64_t expires_ms;
	bool is_resolving;
	enum dns_result fail;       /* cached permanent failure, OK if none */
	struct dtxn *wait_head, *wait_tail;
};

/* struct site - one destination: connection pool, queue, limits, health. */
struct site {
	struct site *hnext;
	char key[512];
	bool is_lmtp;
	bool is_unix;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	uint16_t port;
	size_t n_hosts;
	struct dns_mx_host hosts[DNS_MAX_MX_HOSTS];
	struct dtxn *q_head, *q_tail;
	unsigned q_len;
	struct conn *conns;         /* every connection of the site */
	unsigned n_conns, n_connecting;
	unsigned n_new_claims;      /* next_claim()s begun since site_pump last reset it */
	struct queue_dest health;
	int64_t rate_window_ms;     /* start of the current rate window */
	unsigned rate_used;
	struct site *pump_next;     /* on the engine's to-pump list */
	bool is_pump_pending;
	uint32_t slot;              /* its site_conn_count counter */
	unsigned n_routes;          /* routes that point here */
	int64_t idle_since_ms;      /* no connection and no queue since */
};

enum conn_state { CONN_CONNECTING, CONN_UP, CONN_CLOSED };

/* struct conn - one outbound connection. */
struct conn {
	char anchor[16] __attribute__((aligned(16)));  /* tag base */
	struct conn *next, *prev;   /* site list */
	struct site *site;
	struct deliver *d;
	enum conn_state st;
	int fd;
	unsigned n_ops;             /* submissions in flight */
	bool is_recv_armed, is_send_inflight;
	bool is_ready;              /* READY seen */
	bool is_idle;
	bool is_quitting;
	size_t host_i, addr_i;      /* the target being tried */
	enum queue_fault conn_fault;/* the last connect failure */
	bool any_host_tempfail;
	char relay[DNS_NAME_BYTES + 64];
	unsigned n_msgs;
	struct dtxn *txn;
	uint8_t *answered;          /* per txn recipient: has a result */
	struct dtxn *tail;          /* the previous txn, when txn began behind its end of data (WAIT NEXT): only that reply is outstanding */
	uint8_t *tail_answered;
	int64_t next_by_ms;         /* txn may take a queued message at its WAIT NEXT until then (0: no) */
	struct spool_reader *rd;
	const uint8_t *body_p;
	size_t body_len;
	bool is_body_end;
	int64_t deadline_ms;
	enum smtp_client_phase timer_phase;
	bool is_reconnect;          /* waiting for ops to end, then the next host */
	bool has_fail;              /* fail_o says why the last host failed */
	struct queue_outcome fail_o;
	unsigned fail_code;
	char fail_text[SMTP_CLIENT_TEXT_BYTES];
	struct sockaddr_storage addr;   /* of the connect in flight */
	struct __kernel_timespec cts;   /* its linked timeout */
	struct rm_buf stash;
	struct smtp_client *cl;
};

/* struct verify - a recipient verification in flight; sessions wait on it. */
struct verify {
	struct verify *next;
	uint64_t h1, h2;
	bool is_sync_done;          /* finished inside deliver_verify() */
	uint8_t sync_result;
	struct verify_waiter *waiters;
	struct deliver_verify *handles;
};

/* struct deliver_verify - one session's wait (the cancel handle). */
struct deliver_verify {
	struct deliver_verify *next;
	struct verify *v;
	deliver_verify_fn *cb;
	void *arg;
};

/* struct vcache_slot - one cached verification answer (direct-mapped). */
struct vcache_slot {
	uint64_t h1, h2;
	int64_t expires_ms;
	uint8_t result;             /* enum deliver_verify_result */
};

/* DELIVER_VCACHE_SLOTS - cached answers per reactor (32 B each: 2 MiB). */
#define DELIVER_VCACHE_SLOTS 65536

struct deliver {
	struct server *sv;
	struct reactor *r;
	const struct conf *conf;
	struct dns_resolver *dns;
	bool is_on;
	bool is_kicked;
	bool is_stopping;
	int64_t next_scan_ms;
	int64_t next_sweep_ms;
	unsigned n_inflight;
	struct dmsg *msgs[DELIVER_HASH];
	struct route *routes[DELIVER_HASH];
	struct site *sites[DELIVER_HASH];
	unsigned n_conns;
	/* fresh messages (committed, 250 sent) to start at the loop end */
	char (*fresh)[SPOOL_ID_BYTES + 1];
	size_t n_fresh, cap_fresh;
	struct queue_dest_policy dest_policy;
	struct smtp_client_limits lim;
	uint64_t rng;
	struct site *pump_list;     /* sites to pump at the loop end */
	struct verify *verifies;    /* probes in flight */
	bool is_verify_starting;
	unsigned rate_share;        /* this reactor's part of destination_rate_limit */
	struct vcache_slot *vcache;
	struct spool_fd_cache fd_cache;  /* segments open for body readers */
};

static void site_pump(struct deliver *d, struct site *st);
static void conn_pump(struct conn *c);
static void conn_close(struct conn *c);
static void txn_finish(struct deliver *d, struct dtxn *t);

/* ---- small helpers --------------------------------------------------------- */

/* hash_str - FNV-1a of a NUL-terminated string. */
static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	while (*s)
		h = (h ^ (uint8_t)*s++) * 1099511628211ULL;
	return h;
}

static uint32_t rand32(struct deliver *d)
{
	/* xorshift64*: jitter only, not security */
	d->rng ^= d->rng >> 12;
	d->rng ^= d->rng << 25;
	d->rng ^= d->rng >> 27;
	return (uint32_t)((d->rng * 2685821657736338717ULL) >> 32);
}

static char *xstrdup(const char *s)
{
	return s == NULL ? NULL : strdup(s);
}

static int64_t now_unix(void)
{
	return (int64_t)time(NULL);
}

/* lower_copy - ASCII lower-case copy of s[0..len) into out (cap), NUL-terminated. */
static void lower_copy(char *out, size_t cap, const char *s, size_t len)
{
	size_t i;

	if (len >= cap)
		len = cap - 1;
	for (i = 0; i < len; i++) {
		char ch = s[i];
		out[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
	}
	out[i] = '\0';
}

/* ---- results and the delivery log ---------------------------------------- */

/*
 * rcpt_result - record the outcome of this round for recipient i of m and
 * write the delivery log line. The first outcome wins.
 */
static void rcpt_result(struct deliver *d, struct dmsg *m, uint32_t i,
			const struct queue_outcome *o, unsigned code,
			const char *text, const char *relay)
{
	struct drcpt *rc = &m->rcpts[i];
	char pto[SMTP_PROTO_PATH_MAX * 4 + 1], ptext[600];
	static const char *const names[] = { "sent", "deferred", "bounced" };

	if (rc->has_result)
		return;
	rc->has_result = true;
	rc->verdict = o->verdict;
	rc->code = (uint16_t)code;
	memcpy(rc->status, o->status, sizeof(rc->status));
	if (o->verdict != QUEUE_DELIVER) {
		size_t n = text ? strlen(text) : 0;
		if (n > DELIVER_DIAG_MAX)
			n = DELIVER_DIAG_MAX;
		rc->diag = malloc(n + 1);
		if (rc->diag != NULL) {
			memcpy(rc->diag, text ? text : "", n);
			rc->diag[n] = '\0';
		}
		rc->relay = xstrdup(relay);
	}
	if (m->probe != NULL)
		return;
	rm_printable(pto, sizeof(pto), rc->addr, strlen(rc->addr), SMTP_PROTO_PATH_MAX);
	if (code != 0) {
		char buf[SMTP_CLIENT_TEXT_BYTES + 16];
		snprintf(buf, sizeof(buf), "%u %s%s%s", code, o->status,
			 text && *text ? " " : "", text ? text : "");
		rm_printable(ptext, sizeof(ptext), buf, strlen(buf), 400);
	} else {
		rm_printable(ptext, sizeof(ptext), text ? text : "", text ? strlen(text) : 0, 400);
	}
	log_info("r%u q=%s deliver: to=<%s> relay=%s delay=%.3f dsn=%s status=%s reply=\"%s\"",
		 d->r->id, m->id, pto, relay ? relay : "none",
		 (double)(now_unix() - m->arrival_unix), o->status, names[o->verdict], ptext);
}

/* txn_fail_all - every recipient of t without a result gets o. */
static void txn_fail_all(struct deliver *d, struct dtxn *t, const uint8_t *answered,
			 const struct queue_outcome *o, unsigned code,
			 const char *text, const char *relay)
{
	for (unsigned k = 0; k < t->n; k++)
		if (answered == NULL || !answered[k])
			rcpt_result(d, t->m, t->idx[k], o, code, text, relay);
}

/* txn_fault - finish t at once with a fault (DNS, dead site, local). */
static void txn_fault(struct deliver *d, struct dtxn *t, enum queue_fault f,
		      const char *text)
{
	struct queue_outcome o;

	queue_classify_fault(f, &o);
	txn_fail_all(d, t, NULL, &o, 0, text, NULL);
	txn_finish(d, t);
}

/* ---- the in-flight table ----------------------------------------------------- */

static struct dmsg **msg_slot(struct deliver *d, const char *id)
{
	struct dmsg **pp = &d->msgs[hash_str(id) % DELIVER_HASH];

	while (*pp != NULL && strcmp((*pp)->id, id) != 0)
		pp = &(*pp)->hnext;
	return pp;
}

static void msg_free(struct dmsg *m)
{
	for (size_t i = 0; i < m->n_rcpts; i++) {
		free(m->rcpts[i].addr);
		free(m->rcpts[i].orcpt);
		free(m->rcpts[i].diag);
		free(m->rcpts[i].relay);
	}
	free(m->rcpts);
	free(m->sender);
	free(m->envid);
	free(m);
}

/* msg_forget - take m out of the table and free it. */
static void msg_forget(struct deliver *d, struct dmsg *m)
{
	struct dmsg **pp = msg_slot(d, m->id);

	if (*pp == m)
		*pp = m->hnext;
	d->n_inflight--;
	msg_free(m);
}

bool deliver_pin(struct deliver *d, const char *queue_id)
{
	struct dmsg **slot, *m;

	if (d == NULL)
		return true;
	slot = msg_slot(d, queue_id);
	if (*slot != NULL)
		return false;
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return false;
	m->is_pin = true;
	m->d = d;
	snprintf(m->id, sizeof(m->id), "%s", queue_id);
	*slot = m;
	return true;
}

void deliver_unpin(struct deliver *d, const char *queue_id)
{
	struct dmsg **slot, *m;

	if (d == NULL)
		return;
	slot = msg_slot(d, queue_id);
	if ((m = *slot) == NULL || !m->is_pin)
		return;
	*slot = m->hnext;
	free(m);
}

bool deliver_is_busy(const struct deliver *d, const char *queue_id)
{
	struct deliver *dd = (struct deliver *)d;

	if (d == NULL || queue_id == NULL)
		return false;
	return *msg_slot(dd, queue_id) != NULL;
}

/* ---- bounces ----------------------------------------------------------------- */

/* struct bounce_src - the original, streamed into dsn_write(). */
static int bounce_write(struct deliver *d, struct dmsg *m, enum dsn_kind kind,
			struct dsn_rcpt *dr, size_t n_dr, struct spool_msg *bm, const char *bid,
			unsigned attempt, bool *is_retry, struct rm_err *err)
{
	struct dsn_writer w;
	struct dsn_msg dm;
	struct spool_reader *rd = NULL;
	char boundary[DSN_BOUNDARY_MAX + 1], mid[DSN_ID_BYTES];
	uint8_t out[8192];
	const uint8_t *in = NULL;
	size_t in_len = 0, used, n;
	bool is_end = false;
	int64_t now = now_unix();
	uint64_t salt = ((uint64_t)rand32(d) << 32) | rand32(d);
	int rc;

	*is_retry = false;
	memset(&dm, 0, sizeof(dm));
	dm.kind = kind;
	dm.myhostname = d->conf->myhostname;
	dm.sender = m->sender;
	dm.envid = m->envid;
	dm.ret = m->ret;
	dm.body = m->body;
	dm.smtputf8 = m->smtputf8;
	dm.arrival_unix = m->arrival_unix;
	dm.queue_id = m->id;
	dm.message_id = dsn_message_id_format(mid, sizeof(mid), now, bid, d->conf->myhostname);
	dm.boundary = dsn_boundary_format(boundary, sizeof(boundary), m->id, now, salt, attempt);
	dm.date_unix = now;
	dm.has_original = true;
	dm.original_size = m->size;
	dm.max_full_bytes = d->conf->bounce_size_limit;
	dm.rcpts = dr;
	dm.n_rcpts = n_dr;
	if ((rc = dsn_init(&w, &dm)) < 0)
		return rm_err_set(err, rc, "dsn: %s", dsn_strerror(rc));
	if (dsn_original(&w) != DSN_ORIGINAL_NONE &&
	    spool_reader_open(d->sv->spool, m->id, &d->fd_cache, &rd, err) < 0) {
		/* the original is unreadable: say so without it */
		dm.has_original = false;
		if ((rc = dsn_init(&w, &dm)) < 0)
			return rm_err_set(err, rc, "dsn: %s", dsn_strerror(rc));
	}
	for (;;) {
		rc = dsn_write(&w, in, in_len, is_end, out, sizeof(out), &used, &n);
		if (n > 0 && spool_msg_write(bm, out, n, err) < 0) {
			rc = err->code;
			break;
		}
		in += used;
		in_len -= used;
		if (rc == DSN_DONE) {
			rc = 0;
			break;
		}
		if (rc == DSN_OUT_FULL)
			continue;
		if (rc == DSN_NEED_ORIGINAL) {
			int k = rd ? spool_reader_next(rd, &in, &in_len, err) : 0;
			if (k < 0) {
				rc = k;
				break;
			}
			if (k == 0) {
				in = NULL;
				in_len = 0;
				is_end = true;
			}
			continue;
		}
		if (rc == DSN_E_BOUNDARY)
			*is_retry = true;
		rc = rm_err_set(err, rc, "dsn: %s", dsn_strerror(rc));
		break;
	}
	spool_reader_close(rd);
	return rc;
}

/* struct bounce_owner - the commit of a bounce: deliver it then. */
struct bounce_owner {
	struct spool_owner own;
	struct deliver *d;
};

static void bounce_committed(struct spool_owner *o, const char *queue_id, int status)
{
	struct bounce_owner *b = (struct bounce_owner *)o;

	if (status == 0)
		deliver_accepted(b->d, queue_id);
	else
		log_warn("r%u q=%s deliver: bounce not stored: %s", b->d->r->id, queue_id,
			 spool_strerror(status));
	free(b);
}

/*
 * bounce - spool a DSN for the recipients of m that failed this round and
 * asked for it. Returns 0 (also when nobody is to be told), or a negative
 * code: then the failures must not be recorded (they are retried later,
 * so the sender still hears of them).
 */
static int bounce(struct deliver *d, struct dmsg *m, enum dsn_kind kind)
{
	struct dsn_rcpt *dr;
	size_t n = 0;
	struct rm_err err = { 0, "" };
	int rc = 0;

	dr = calloc(m->n_rcpts, sizeof(*dr));
	if (dr == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_rcpts; i++) {
		struct drcpt *rc_ = &m->rcpts[i];
		if (!rc_->is_due || !rc_->has_result)
			continue;
		if (kind == DSN_KIND_FAILURE && rc_->state != SPOOL_RCPT_FAILED)
			continue;
		if (kind == DSN_KIND_DELAY && !rc_->is_delay_notice)
			continue;
		/* RFC 3461 5.2.2: a success notice when the mail reached the
		 * mailbox (LMTP), or a peer that cannot carry the request on */
		if (kind == DSN_KIND_SUCCESS && (rc_->state != SPOOL_RCPT_DELIVERED ||
						 (!rc_->is_final && rc_->is_peer_dsn)))
			continue;
		if (!dsn_should_notify(m->sender, rc_->notify, kind))
			continue;
		dr[n].addr = rc_->addr;
		dr[n].orcpt = rc_->orcpt;
		dr[n].action = kind == DSN_KIND_FAILURE ? DSN_ACTION_FAILED
			: kind == DSN_KIND_DELAY ? DSN_ACTION_DELAYED
			: rc_->is_final ? DSN_ACTION_DELIVERED : DSN_ACTION_RELAYED;
		dr[n].status = kind == DSN_KIND_SUCCESS ? (rc_->status[0] == '2' ? rc_->status : "2.0.0")
			: kind == DSN_KIND_DELAY ? (rc_->status[0] == '4' ? rc_->status : "4.0.0")
			: rc_->status[0] == '2' ? "5.0.0" : rc_->status;
		if (kind == DSN_KIND_DELAY)
			dr[n].retry_until_unix = (m->arrival_unix * 1000 + (int64_t)d->conf->
						  maximal_queue_lifetime_ms) / 1000;
		dr[n].remote_mta = rc_->relay;
		dr[n].reply_code = kind != DSN_KIND_SUCCESS ? rc_->code : 0;
		dr[n].reply_esc = rc_->code ? rc_->status : NULL;
		dr[n].diag = kind != DSN_KIND_SUCCESS ? rc_->diag : NULL;
		dr[n].diag_len = dr[n].diag ? strlen(dr[n].diag) : 0;
		dr[n].last_attempt_unix = now_unix();
		n++;
	}
	for (unsigned attempt = 0; n > 0 && attempt < 4; attempt++) {
		struct spool_msg *bm;
		struct bounce_owner *bo;
		struct spool_rcpt to = { m->sender, 0, NULL };
		struct spool_envelope env;
		bool is_retry = false;
		int body = SPOOL_BODY_7BIT;
		bool utf8 = false;
		struct dsn_writer probe;
		struct dsn_msg pm;

		if ((rc = spool_msg_begin(d->sv->shard, &bm, &err)) < 0)
			break;
		rc = bounce_write(d, m, kind, dr, n, bm, spool_msg_id(bm), attempt, &is_retry, &err);
		if (rc < 0) {
			spool_msg_abort(bm);
			if (is_retry)
				continue;
			break;
		}
		/* the DSN's own envelope: null sender, BODY/SMTPUTF8 as written */
		memset(&pm, 0, sizeof(pm));
		pm.kind = kind;
		pm.myhostname = d->conf->myhostname;
		pm.sender = m->sender;
		pm.smtputf8 = m->smtputf8;
		pm.message_id = "<x@x>";
		pm.boundary = "x";
		pm.rcpts = dr;
		pm.n_rcpts = n;
		pm.ret = m->ret;
		pm.body = m->body;
		if (dsn_init(&probe, &pm) == 0)
			dsn_envelope(&probe, &body, &utf8);
		if (m->body == SPOOL_BODY_8BITMIME || m->body == SPOOL_BODY_BINARYMIME)
			body = SPOOL_BODY_8BITMIME;
		memset(&env, 0, sizeof(env));
		env.sender = "";
		env.rcpts = &to;
		env.n_rcpts = 1;
		env.body = body;
		env.smtputf8 = utf8 || m->smtputf8;
		env.arrival_unix = now_unix();
		bo = malloc(sizeof(*bo));
		if (bo == NULL) {
			spool_msg_abort(bm);
			rc = -ENOMEM;
			break;
		}
		bo->own.done = bounce_committed;
		bo->d = d;
		log_info("r%u q=%s deliver: %s q=%s to=sender nrcpt=%zu", d->r->id, m->id,
			 kind == DSN_KIND_FAILURE ? "bounce" : kind == DSN_KIND_DELAY ? "delay-notice"
			 : "success-notice", spool_msg_id(bm), n);
		rc = spool_msg_end(bm, &env, &bo->own, &err);
		if (rc < 0)
			free(bo);
		break;
	}
	if (rc < 0)
		log_warn("r%u q=%s deliver: cannot spool the bounce: %s", d->r->id, m->id,
			 err.msg[0] ? err.msg : strerror(-rc));
	free(dr);
	return rc;
}

/* ---- finishing a message ----------------------------------------------------- */

static void msg_committed(struct spool_owner *o, const char *queue_id, int status)
{
	struct dmsg *m = (struct dmsg *)o;

	if (status < 0 && status != -ENOENT)
		log_warn("r%u q=%s deliver: state not recorded: %s (it will be tried again)",
			 m->d->r->id, queue_id, spool_strerror(status));
	msg_forget(m->d, m);
}

/*
 * msg_finalize - every transaction of m is over: turn the results into
 * the recipients' new states, bounce what failed, and write the update
 * (or the removal) to the spool.
 */
static void verify_done(struct deliver *d, struct dmsg *m);

/*
 * delay_notice_due - is this deferral of r the first one made at or after
 * delay_warning_time? The spool keeps a per-recipient flag
 * (SPOOL_RCPT_F_DELAY_NOTIFIED), so the notice goes out exactly once,
 * whatever the retry steps, their jitter or a held-off destination did to
 * the attempt times.
 */
static bool delay_notice_due(struct deliver *d, const struct dmsg *m, const struct drcpt *r,
			     int64_t now_ms)
{
	const struct conf *c = d->conf;

	if (c->delay_warning_time_ms == 0 || (r->flags & SPOOL_RCPT_F_DELAY_NOTIFIED) ||
	    !dsn_should_notify(m->sender, r->notify, DSN_KIND_DELAY))
		return false;
	return now_ms >= m->arrival_unix * 1000 + (int64_t)c->delay_warning_time_ms;
}

static void msg_finalize(struct deliver *d, struct dmsg *m)
{
	const struct conf *c = d->conf;
	struct spool_rcpt_update *u;
	struct rm_err err = { 0, "" };
	int64_t now_ms_wall = now_unix() * 1000;
	int64_t expiry_ms = queue_expiry_time(m->arrival_unix * 1000, c->maximal_queue_lifetime_ms);
	size_t n_u = 0, n_left = 0;
	bool any_failed = false, any_success_notice = false, any_delay_notice = false;
	int rc;

	if (m->probe != NULL) {
		verify_done(d, m);
		return;
	}
	u = calloc(m->n_rcpts ? m->n_rcpts : 1, sizeof(*u));
	if (u == NULL) {
		msg_forget(d, m);  /* still due in the index: tried again */
		return;
	}
	for (size_t i = 0; i < m->n_rcpts; i++) {
		struct drcpt *r = &m->rcpts[i];
		if (!r->is_due) {
			if (r->state == SPOOL_RCPT_PENDING)
				n_left++;
			continue;
		}
		if (!r->has_result) {
			/* never tried (shutdown): leave it as it was, due */
			n_left++;
			continue;
		}
		r->attempts = r->attempts < 65535 ? r->attempts + 1 : 65535;
		if (r->verdict == QUEUE_DELIVER) {
			r->state = SPOOL_RCPT_DELIVERED;
			if ((r->notify & SPOOL_NOTIFY_SUCCESS) && (r->is_final || !r->is_peer_dsn))
				any_success_notice = true;
		} else if (r->verdict == QUEUE_BOUNCE) {
			r->state = SPOOL_RCPT_FAILED;
			any_failed = true;
		} else if (queue_expired(m->arrival_unix * 1000, now_ms_wall,
					 c->maximal_queue_lifetime_ms)) {
			struct queue_outcome o;
			char *diag;
			queue_classify_fault(QUEUE_FAULT_EXPIRED, &o);
			r->state = SPOOL_RCPT_FAILED;
			memcpy(r->status, o.status, sizeof(r->status));
			if (r->diag != NULL &&
			    (diag = malloc(strlen(r->diag) + 64)) != NULL) {
				sprintf(diag, "delivery time expired; last error: %s", r->diag);
				free(r->diag);
				r->diag = diag;
			}
			log_info("r%u q=%s deliver: to=<%s> status=expired dsn=%s attempts=%u",
				 d->r->id, m->id, r->addr, o.status, r->attempts);
			any_failed = true;
		} else {
			int64_t next = queue_next_attempt(c->retry_schedule_ms, c->n_retry_schedule,
							  r->attempts, now_ms_wall, rand32(d));
			if (delay_notice_due(d, m, r, now_ms_wall)) {
				r->is_delay_notice = true;
				r->flags |= SPOOL_RCPT_F_DELAY_NOTIFIED;
				any_delay_notice = true;
			}
			if (next > expiry_ms)
				next = expiry_ms;
			r->next_attempt_unix = (next + 999) / 1000;
			n_left++;
		}
		u[n_u].rcpt = (uint32_t)i;
		u[n_u].state = r->state;
		u[n_u].attempts = r->attempts;
		u[n_u].next_attempt_unix = r->next_attempt_unix;
		u[n_u].flags = r->flags;
		n_u++;
	}
	if (any_failed && bounce(d, m, DSN_KIND_FAILURE) < 0) {
		/* without its bounce a failure must not be recorded: make
		 * those recipients deferred instead (tried and bounced again) */
		for (size_t k = 0; k < n_u; k++) {
			struct drcpt *r = &m->rcpts[u[k].rcpt];
			if (u[k].state == SPOOL_RCPT_FAILED) {
				u[k].state = SPOOL_RCPT_PENDING;
				u[k].next_attempt_unix = now_unix() + 60;
				r->state = SPOOL_RCPT_PENDING;
				n_left++;
			}
		}
	}
	if (any_success_notice)
		bounce(d, m, DSN_KIND_SUCCESS);   /* best effort: logged when it fails */
	if (any_delay_notice)
		bounce(d, m, DSN_KIND_DELAY);     /* best effort too */
	if (n_u == 0) {
		free(u);
		msg_forget(d, m);
		return;
	}
	m->is_committing = true;
	if (n_left == 0)
		rc = spool_shard_done(d->sv->shard, m->id, &m->own, &err);
	else
		rc = spool_shard_update(d->sv->shard, m->id, u, n_u, &m->own, &err);
	free(u);
	if (rc < 0) {
		log_warn("r%u q=%s deliver: %s", d->r->id, m->id, err.msg);
		msg_forget(d, m);
	}
}

/* txn_finish - t is over (every recipient has a result, or shutdown). */
static void txn_finish(struct deliver *d, struct dtxn *t)
{
	struct dmsg *m = t->m;

	free(t->idx);
	free(t->crcpt);
	free(t);
	if (--m->n_open == 0)
		msg_finalize(d, m);
}

/* ---- routes ------------------------------------------------------------------- */

static struct site *site_get(struct deliver *d, const char *key)
{
	struct site **pp = &d->sites[hash_str(key) % DELIVER_HASH], *st;

	for (st = *pp; st != NULL; st = st->hnext)
		if (strcmp(st->key, key) == 0)
			return st;
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return NULL;
	snprintf(st->key, sizeof(st->key), "%s", key);
	st->slot = (uint32_t)(hash_str(key) % DELIVER_SITE_SLOTS);
	queue_dest_init(&st->health);
	st->hnext = *pp;
	*pp = st;
	return st;
}

/* route_set_site - point rt at st (NULL: at nothing), counting references. */
static void route_set_site(struct route *rt, struct site *st)
{
	if (rt->site != NULL)
		rt->site->n_routes--;
	rt->site = st;
	if (st != NULL)
		st->n_routes++;
}

/* site_enqueue - t waits for a connection of st. */
static void site_enqueue(struct deliver *d, struct site *st, struct dtxn *t)
{
	t->next = NULL;
	if (st->q_tail != NULL)
		st->q_tail->next = t;
	else
		st->q_head = t;
	st->q_tail = t;
	st->q_len++;
	site_pump(d, st);
}

static struct dtxn *site_take(struct site *st)
{
	struct dtxn *t = st->q_head;

	if (t != NULL) {
		st->q_head = t->next;
		if (st->q_head == NULL)
			st->q_tail = NULL;
		st->q_len--;
		t->next = NULL;
	}
	return t;
}

/* site_defer_queue - nobody can carry st's queue now: finish it with o. */
static void site_fail_queue(struct deliver *d, struct site *st, const struct queue_outcome *o,
			    unsigned code, const char *text, const char *relay)
{
	struct dtxn *t;

	while ((t = site_take(st)) != NULL) {
		txn_fail_all(d, t, NULL, o, code, text, relay);
		txn_finish(d, t);
	}
}

/* route_resolved - route rt now has its site (or failed): move its waiters. */
static void route_release(struct deliver *d, struct route *rt, enum queue_fault f,
			  const char *why)
{
	struct dtxn *t;

	while ((t = rt->wait_head) != NULL) {
		rt->wait_head = t->next;
		if (rt->wait_head == NULL)
			rt->wait_tail = NULL;
		if (f == 0 && rt->site != NULL)
			site_enqueue(d, rt->site, t);
		else
			txn_fault(d, t, f ? f : QUEUE_FAULT_LOCAL, why);
	}
}

/* site_key - where mail really goes: protocol, port and the host set. */
static void site_key(char *out, size_t cap, const struct route *rt,
		     const struct dns_mx_result *res)
{
	size_t n;

	if (rt->kind == ROUTE_UNIX) {
		snprintf(out, cap, "%s:unix:%s", rt->is_lmtp ? "lmtp" : "smtp", rt->path);
		return;
	}
	n = (size_t)snprintf(out, cap, "%s:%u:", rt->is_lmtp ? "lmtp" : "smtp", rt->port);
	/* sorted names, so the same host set gives the same site whatever
	 * the shuffle of equal preferences */
	{
		const char *names[DNS_MAX_MX_HOSTS];
		size_t k = 0;
		for (size_t i = 0; i < res->n_hosts; i++)
			names[k++] = res->hosts[i].name;
		for (size_t i = 1; i < k; i++)
			for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
				const char *tmp = names[j];
				names[j] = names[j - 1];
				names[j - 1] = tmp;
			}
		for (size_t i = 0; i < k && n < cap; i++)
			n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? "," : "", names[i]);
	}
}

static void on_dns(void *arg, const struct dns_mx_result *res)
{
	struct route *rt = arg;
	struct deliver *d = NULL;
	char key[512];
	enum queue_fault f;

	/* the route table lives in the engine; find it through a site-less
	 * back pointer kept in the route's wait list messages */
	if (rt->wait_head != NULL)
		d = rt->wait_head->m->d;
	rt->is_resolving = false;
	if (d == NULL)
		return;   /* nobody waits (they were finished at shutdown) */
	if (res->status == DNS_RESULT_OK) {
		struct site *st;
		site_key(key, sizeof(key), rt, res);
		st = site_get(d, key);
		if (st == NULL) {
			route_release(d, rt, QUEUE_FAULT_LOCAL, "out of memory");
			return;
		}
		st->is_lmtp = rt->is_lmtp;
		st->is_unix = false;
		st->port = rt->port;
		st->n_hosts = res->n_hosts;
		memcpy(st->hosts, res->hosts, sizeof(res->hosts[0]) * res->n_hosts);
		route_set_site(rt, st);
		rt->fail = DNS_RESULT_OK;
		rt->expires_ms = res->is_literal ? INT64_MAX
			: d->r->now_ms + (int64_t)(res->ttl_s ? res->ttl_s : 1) * 1000;
		route_release(d, rt, 0, NULL);
		return;
	}
	switch (res->status) {
	case DNS_RESULT_NXDOMAIN: f = QUEUE_FAULT_DNS_NXDOMAIN; break;
	case DNS_RESULT_NULL_MX: f = QUEUE_FAULT_NULL_MX; break;
	case DNS_RESULT_NOHOST: f = QUEUE_FAULT_DNS_NO_ADDRESS; break;
	case DNS_RESULT_LOOP: f = QUEUE_FAULT_LOOP; break;
	default: f = QUEUE_FAULT_DNS_TEMP; break;
	}
	if (rt->is_static && f != QUEUE_FAULT_LOOP)
		f = QUEUE_FAULT_DNS_TEMP;   /* a configured next hop: never bounce on DNS */
	if (dns_result_is_permanent(res->status) && f != QUEUE_FAULT_DNS_TEMP) {
		rt->fail = res->status;
		rt->expires_ms = d->r->now_ms + (int64_t)(res->ttl_s ? res->ttl_s : 60) * 1000;
	}
	snprintf(key, sizeof(key), "DNS lookup of %s: %s", rt->host, dns_result_str(res->status));
	route_release(d, rt, f, key);
}

/* route_lookup_spec - the route for domain: transport_map, relayhost, MX. */
static struct route *route_get(struct deliver *d, const char *domain, size_t len)
{
	const struct conf *c = d->conf;
	char key[sizeof(((struct route *)0)->key)], dom[DNS_NAME_BYTES];
	struct route **pp, *rt;

	const struct maps_route *mr = NULL;
	char text[MAPS_ROUTE_TEXT_BYTES];

	lower_copy(dom, sizeof(dom), domain, len);
	/* The map is read now and never kept: the route copies what it
	 * needs, so a SIGHUP reload applies to every new lookup. */
	if (maps_transport_lookup(maps_current()->transport, dom, strlen(dom), &mr) == 0)
		snprintf(key, sizeof(key), "tm:%s", maps_route_format(mr, text, sizeof(text)));
	else if (c->relayhost[0] != '\0')
		snprintf(key, sizeof(key), "relay");
	else
		snprintf(key, sizeof(key), "mx:%s", dom);
	pp = &d->routes[hash_str(key) % DELIVER_HASH];
	for (rt = *pp; rt != NULL; rt = rt->hnext)
		if (strcmp(rt->key, key) == 0)
			return rt;
	rt = calloc(1, sizeof(*rt));
	if (rt == NULL)
		return NULL;
	snprintf(rt->key, sizeof(rt->key), "%s", key);
	if (mr != NULL) {
		rt->is_static = true;
		rt->is_lmtp = mr->proto == MAPS_LMTP;
		rt->kind = mr->is_unix ? ROUTE_UNIX : mr->is_mx ? ROUTE_MX : ROUTE_HOST;
		snprintf(rt->host, sizeof(rt->host), "%s", mr->host);
		snprintf(rt->path, sizeof(rt->path), "%s", mr->path);
		rt->port = mr->port;
	} else if (c->relayhost[0] != '\0') {
		rt->kind = c->is_relayhost_mx ? ROUTE_MX : ROUTE_HOST;
		rt->is_static = true;
		snprintf(rt->host, sizeof(rt->host), "%s", c->relayhost);
		rt->port = c->relayhost_port ? c->relayhost_port : (uint16_t)c->smtp_tcp_port;
	} else {
		rt->kind = ROUTE_MX;
		snprintf(rt->host, sizeof(rt->host), "%s", dom);
		rt->port = (uint16_t)c->smtp_tcp_port;
	}
	rt->hnext = *pp;
	*pp = rt;
	return rt;
}

/* route_submit - send t along rt, resolving it first when needed. */
static void route_submit(struct deliver *d, struct route *rt, struct dtxn *t)
{
	int rc;

	if (rt->expires_ms > d->r->now_ms) {
		if (rt->site != NULL) {
			site_enqueue(d, rt->site, t);
			return;
		}
		if (rt->fail != DNS_RESULT_OK) {
			enum queue_fault f = rt->fail == DNS_RESULT_NXDOMAIN ? QUEUE_FAULT_DNS_NXDOMAIN
				: rt->fail == DNS_RESULT_NULL_MX ? QUEUE_FAULT_NULL_MX
				: rt->fail == DNS_RESULT_LOOP ? QUEUE_FAULT_LOOP
				: QUEUE_FAULT_DNS_NO_ADDRESS;
			char why[DNS_NAME_BYTES + 64];
			snprintf(why, sizeof(why), "DNS lookup of %s: %s", rt->host,
				 dns_result_str(rt->fail));
			txn_fault(d, t, f, why);
			return;
		}
	}
	if (rt->kind == ROUTE_UNIX) {
		struct site *st;
		char key[512];
		site_key(key, sizeof(key), rt, NULL);
		if ((st = site_get(d, key)) == NULL) {
			txn_fault(d, t, QUEUE_FAULT_LOCAL, "out of memory");
			return;
		}
		st->is_lmtp = rt->is_lmtp;
		st->is_unix = true;
		memcpy(st->path, rt->path, sizeof(st->path));
		route_set_site(rt, st);
		rt->expires_ms = INT64_MAX;
		site_enqueue(d, st, t);
		return;
	}
	t->next = NULL;
	if (rt->wait_tail != NULL)
		rt->wait_tail->next = t;
	else
		rt->wait_head = t;
	rt->wait_tail = t;
	if (rt->is_resolving)
		return;
	route_set_site(rt, NULL);
	rt->is_resolving = true;
	if (rt->kind == ROUTE_MX)
		rc = dns_mx_lookup(d->dns, rt->host, strlen(rt->host), on_dns, rt, NULL);
	else
		rc = dns_host_lookup(d->dns, rt->host, strlen(rt->host), on_dns, rt, NULL);
	if (rc < 0) {
		rt->is_resolving = false;
		route_release(d, rt, rc == -EINVAL && !rt->is_static ? QUEUE_FAULT_DNS_NXDOMAIN
			      : QUEUE_FAULT_DNS_TEMP, rc == -EINVAL ? "not a valid domain name"
			      : "DNS resolver busy");
	}
}

/* ---- starting a message ------------------------------------------------------- */

struct group_ctx {
	struct deliver *d;
	const struct spool_entry *e;
};

static int group_lookup(void *ctx, const char *domain, size_t len, uint64_t *dest_id)
{
	struct group_ctx *g = ctx;
	struct route *rt = route_get(g->d, domain, len);

	if (rt == NULL)
		return -ENOMEM;
	*dest_id = (uint64_t)(uintptr_t)rt;
	return 0;
}

/* msg_start_as - take e (a due message of our shard, or a probe) into
 * flight. */
static int msg_start_as(struct deliver *d, const struct spool_entry *e, struct verify *probe)
{
	struct dmsg *m, **slot;
	struct queue_slot *slots = NULL;
	struct queue_txn *txns = NULL;
	size_t n_slots = 0, n_txns = 0;
	struct group_ctx g = { d, e };
	int64_t now = now_unix();
	int rc;

	slot = probe ? NULL : msg_slot(d, e->id);
	if (slot != NULL && *slot != NULL)
		return 0;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	m->probe = probe;
	m->own.done = msg_committed;
	m->d = d;
	memcpy(m->id, e->id, sizeof(m->id));
	m->sender = strdup(e->sender);
	m->envid = xstrdup(e->envid);
	m->ret = e->ret;
	m->body = e->body;
	m->smtputf8 = e->smtputf8;
	m->arrival_unix = e->arrival_unix;
	m->start_ms = d->r->now_ms;
	m->size = e->size;
	m->n_rcpts = e->n_rcpts;
	m->rcpts = calloc(e->n_rcpts ? e->n_rcpts : 1, sizeof(*m->rcpts));
	if (m->sender == NULL || m->rcpts == NULL || (e->envid && m->envid == NULL))
		goto nomem;
	for (size_t i = 0; i < e->n_rcpts; i++) {
		struct drcpt *r = &m->rcpts[i];
		r->addr = strdup(e->rcpts[i].addr);
		r->orcpt = xstrdup(e->rcpts[i].orcpt);
		if (r->addr == NULL || (e->rcpts[i].orcpt && r->orcpt == NULL))
			goto nomem;
		r->notify = e->rcpts[i].notify;
		r->state = e->rcpts[i].state;
		r->attempts = e->rcpts[i].attempts;
		r->next_attempt_unix = e->rcpts[i].next_attempt_unix;
		r->flags = e->rcpts[i].flags;
		r->is_due = r->state == SPOOL_RCPT_PENDING && r->next_attempt_unix <= now;
	}
	slots = calloc(e->n_rcpts ? e->n_rcpts : 1, sizeof(*slots));
	txns = calloc(e->n_rcpts ? e->n_rcpts : 1, sizeof(*txns));
	if (slots == NULL || txns == NULL)
		goto nomem;
	rc = queue_group(e->rcpts, e->n_rcpts, now, d->conf->destination_recipient_limit,
			 group_lookup, &g, slots, &n_slots, txns, e->n_rcpts ? e->n_rcpts : 1,
			 &n_txns);
	if (rc < 0)
		goto fail;
	if (slot != NULL) {
		*slot = m;
		m->hnext = NULL;
		d->n_inflight++;
	}
	if (n_txns == 0) {
		if (probe != NULL)
			msg_finalize(d, m);
		else
			msg_forget(d, m);
		free(slots);
		free(txns);
		return 0;
	}
	m->n_open = (unsigned)n_txns + 1;   /* +1: held until every txn is out */
	for (size_t k = 0; k < n_txns; k++) {
		struct dtxn *t = calloc(1, sizeof(*t));
		struct route *rt = (struct route *)(uintptr_t)txns[k].dest_id;
		if (t != NULL) {
			t->idx = calloc(txns[k].n_rcpts, sizeof(*t->idx));
			t->crcpt = calloc(txns[k].n_rcpts, sizeof(*t->crcpt));
		}
		if (t == NULL || t->idx == NULL || t->crcpt == NULL) {
			if (t != NULL) {
				free(t->idx);
				free(t->crcpt);
				free(t);
			}
			m->n_open--;   /* its recipients stay due: no result */
			continue;
		}
		t->m = m;
		t->route = rt;
		t->n = (unsigned)txns[k].n_rcpts;
		for (unsigned j = 0; j < t->n; j++) {
			uint32_t i = (uint32_t)slots[txns[k].first + j].rcpt;
			t->idx[j] = i;
			t->crcpt[j].addr = m->rcpts[i].addr;
			t->crcpt[j].notify = m->rcpts[i].notify;
			t->crcpt[j].orcpt = m->rcpts[i].orcpt;
		}
		t->ct.sender = m->sender;
		t->ct.rcpt = t->crcpt;
		t->ct.n_rcpt = t->n;
		t->ct.has_size = probe == NULL;
		t->ct.size = m->size;
		t->ct.body = (uint8_t)(m->body == SPOOL_BODY_8BITMIME ? SMTP_PROTO_BODY_8BITMIME
				       : m->body == SPOOL_BODY_BINARYMIME ? SMTP_PROTO_BODY_BINARYMIME
				       : m->body == SPOOL_BODY_7BIT ? SMTP_PROTO_BODY_7BIT
				       : SMTP_PROTO_BODY_NONE);
		t->ct.is_smtputf8 = m->smtputf8;
		t->ct.ret = (uint8_t)m->ret;
		t->ct.envid = m->envid;
		t->ct.is_probe = m->probe != NULL;
		route_submit(d, rt, t);
	}
	free(slots);
	free(txns);
	if (--m->n_open == 0)
		msg_finalize(d, m);
	return 0;
nomem:
	rc = -ENOMEM;
fail:
	free(slots);
	free(txns);
	msg_free(m);
	return rc;
}

static int msg_start(struct deliver *d, const struct spool_entry *e)
{
	return msg_start_as(d, e, NULL);
}

static int probe_start(struct deliver *d, const struct spool_entry *e, struct verify *v)
{
	return msg_start_as(d, e, v);
}

/* ---- recipient verification ------------------------------------------------------- */

/* verify_hash - two independent 64-bit hashes of the lower-cased address. */
static void verify_hash(const char *addr, size_t len, uint64_t *h1, uint64_t *h2)
{
	uint64_t a = 1469598103934665603ULL, b = 0x84222325cbf29ce4ULL;

	for (size_t i = 0; i < len; i++) {
		uint8_t ch = (uint8_t)addr[i];
		if (ch >= 'A' && ch <= 'Z')
			ch = (uint8_t)(ch + 32);
		a = (a ^ ch) * 1099511628211ULL;
		b = (b ^ ch) * 0x100000001b3ULL;
		b ^= b >> 29;
	}
	*h1 = a;
	*h2 = b ^ len;
}

static struct vcache_slot *vcache_slot(struct deliver *d, uint64_t h1)
{
	return &d->vcache[h1 % DELIVER_VCACHE_SLOTS];
}

/* verify_done - a probe's transaction is over: cache and tell the waiters. */
static void verify_done(struct deliver *d, struct dmsg *m)
{
	struct verify *v = m->probe, **pp;
	struct drcpt *r = &m->rcpts[0];
	enum deliver_verify_result res;
	struct deliver_verify *w, *wn;
	char reason[DELIVER_DIAG_MAX + 64];

	if (!r->has_result || r->verdict == QUEUE_DEFER)
		res = DELIVER_VERIFY_TEMP;
	else if (r->verdict == QUEUE_DELIVER)
		res = DELIVER_VERIFY_OK;
	else
		res = DELIVER_VERIFY_UNKNOWN;
	if (res != DELIVER_VERIFY_TEMP) {
		struct vcache_slot *sl = vcache_slot(d, v->h1);
		sl->h1 = v->h1;
		sl->h2 = v->h2;
		sl->result = (uint8_t)res;
		sl->expires_ms = d->r->now_ms + (int64_t)(res == DELIVER_VERIFY_OK
			? d->conf->verify_positive_ttl_ms : d->conf->verify_negative_ttl_ms);
	}
	if (r->code)
		snprintf(reason, sizeof(reason), "%s said: %u %s %s", r->relay ? r->relay : "next hop",
			 r->code, r->status, r->diag ? r->diag : "");
	else
		snprintf(reason, sizeof(reason), "%s", r->diag ? r->diag
			 : res == DELIVER_VERIFY_OK ? "accepted" : "no answer");
	{
		char pa[SMTP_PROTO_PATH_MAX * 4 + 1], pr[600];
		static const char *const names[] = { "ok", "unknown", "tempfail" };
		rm_printable(pa, sizeof(pa), r->addr, strlen(r->addr), SMTP_PROTO_PATH_MAX);
		rm_printable(pr, sizeof(pr), reason, strlen(reason), 400);
		log_info("r%u deliver: verify to=<%s> result=%s reason=\"%s\"", d->r->id, pa,
			 names[res], pr);
	}
	for (pp = &d->verifies; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == v) {
			*pp = v->next;
			break;
		}
	}
	m->probe = NULL;
	msg_free(m);
	if (d->is_verify_starting) {
		/* answered before deliver_verify() returned: it reports it */
		v->is_sync_done = true;
		v->sync_result = (uint8_t)res;
		return;
	}
	for (w = v->handles; w != NULL; w = wn) {
		wn = w->next;
		w->cb(w->arg, res, reason);
		free(w);
	}
	free(v);
}

int deliver_verify(struct deliver *d, const char *addr, size_t len, deliver_verify_fn *cb,
		   void *arg, struct deliver_verify **out)
{
	struct vcache_slot *sl;
	struct verify *v;
	struct deliver_verify *w;
	uint64_t h1, h2;
	const char *at;
	int rc;

	*out = NULL;
	if (len == 0 || len > SMTP_PROTO_PATH_MAX || (at = memrchr(addr, '@', len)) == NULL ||
	    d->is_stopping)
		return DELIVER_VERIFY_TEMP;
	verify_hash(addr, len, &h1, &h2);
	sl = vcache_slot(d, h1);
	if (sl->h1 == h1 && sl->h2 == h2 && sl->expires_ms > d->r->now_ms)
		return sl->result;
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return DELIVER_VERIFY_TEMP;
	w->cb = cb;
	w->arg = arg;
	for (v = d->verifies; v != NULL; v = v->next)
		if (v->h1 == h1 && v->h2 == h2)
			break;
	if (v == NULL) {
		struct dmsg *m = calloc(1, sizeof(*m));
		struct spool_rcpt_entry re;
		struct spool_entry e;
		v = calloc(1, sizeof(*v));
		if (m == NULL || v == NULL) {
			free(m);
			free(v);
			free(w);
			return DELIVER_VERIFY_TEMP;
		}
		v->h1 = h1;
		v->h2 = h2;
		v->next = d->verifies;
		d->verifies = v;
		free(m);
		/* a one-recipient message that is never spooled */
		memset(&re, 0, sizeof(re));
		memset(&e, 0, sizeof(e));
		{
			char *a = strndup(addr, len);
			if (a == NULL) {
				d->verifies = v->next;
				free(v);
				free(w);
				return DELIVER_VERIFY_TEMP;
			}
			re.addr = a;
			re.state = SPOOL_RCPT_PENDING;
			e.sender = "";
			e.rcpts = &re;
			e.n_rcpts = 1;
			e.arrival_unix = now_unix();
			w->v = v;
			w->next = v->handles;
			v->handles = w;
			d->is_verify_starting = true;
			rc = probe_start(d, &e, v);
			d->is_verify_starting = false;
			free(a);
			if (rc < 0 || v->is_sync_done) {
				int res = rc < 0 ? DELIVER_VERIFY_TEMP : v->sync_result;
				if (rc < 0)
					d->verifies = v->next;
				free(v);
				free(w);
				return res;
			}
			*out = w;
			return DELIVER_VERIFY_PENDING;
		}
	}
	w->v = v;
	w->next = v->handles;
	v->handles = w;
	*out = w;
	return DELIVER_VERIFY_PENDING;
}

void deliver_verify_cancel(struct deliver *d, struct deliver_verify *w)
{
	struct deliver_verify **pp;

	(void)d;
	if (w == NULL)
		return;
	for (pp = &w->v->handles; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	free(w);
}

/* ---- connections ---------------------------------------------------------------- */

/* conn_target - the address to try now; false when none is left. */
static bool conn_target(struct conn *c, socklen_t *len)
{
	struct site *st = c->site;

	if (st->is_unix) {
		struct sockaddr_un *un = (struct sockaddr_un *)&c->addr;
		if (c->host_i > 0 || c->addr_i > 0)
			return false;
		memset(un, 0, sizeof(*un));
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, st->path, sizeof(un->sun_path) - 1);
		*len = sizeof(*un);
		snprintf(c->relay, sizeof(c->relay), "unix:%s", st->path);
		return true;
	}
	while (c->host_i < st->n_hosts) {
		const struct dns_mx_host *h = &st->hosts[c->host_i];
		if (h->status == DNS_RESULT_TEMPFAIL)
			c->any_host_tempfail = true;
		if (c->addr_i < h->n_addrs) {
			char ip[INET6_ADDRSTRLEN] = "?";
			const struct dns_addr *a = &h->addrs[c->addr_i];
			*len = dns_addr_sockaddr(a, st->port, &c->addr);
			inet_ntop(a->family, &a->u, ip, sizeof(ip));
			snprintf(c->relay, sizeof(c->relay), "%s[%s]:%u", h->name, ip, st->port);
			if (*len > 0)
				return true;
			c->addr_i++;
			continue;
		}
		c->host_i++;
		c->addr_i = 0;
	}
	return false;
}

static void conn_arm_recv(struct conn *c)
{
	if (c->is_recv_armed || c->st != CONN_UP || c->stash.len >= DELIVER_STASH_MAX / 2)
		return;
	reactor_recv(c->d->r, c->anchor, OP_RECV, c->fd);
	c->is_recv_armed = true;
	c->n_ops++;
}

/* conn_flush - start a send of pending output if none is in flight. */
static void conn_flush(struct conn *c)
{
	const uint8_t *p;
	size_t len;
	struct io_uring_sqe *sqe;

	if (c->is_send_inflight || c->st != CONN_UP)
		return;
	p = smtp_client_output(c->cl, &len);
	if (len == 0)
		return;
	sqe = reactor_sqe(c->d->r);
	io_uring_prep_send(sqe, c->fd, p, len, MSG_NOSIGNAL);
	reactor_sqe_tag(sqe, c->anchor, OP_SEND);
	c->is_send_inflight = true;
	c->n_ops++;
}

/* conn_free_if_done - free c once it is closed and nothing is in flight. */
static void conn_free_if_done(struct conn *c)
{
	struct deliver *d = c->d;

	if (c->st != CONN_CLOSED || c->n_ops > 0)
		return;
	rm_buf_fini(&c->stash);
	free(c->cl);
	free(c);
	d->n_conns--;
}

/* conn_unlink - take c out of its site's list and counts. */
static void conn_unlink(struct conn *c)
{
	struct site *st = c->site;

	if (st == NULL)
		return;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		st->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	st->n_conns--;
	if (c->st == CONN_CONNECTING)
		st->n_connecting--;
	atomic_fetch_sub_explicit(&site_conn_count[st->slot], 1, memory_order_relaxed);
	c->site = NULL;
}

/* txn_drop - end *tp, c's transaction or its tail, unfinished: recipients
 * without an answer get o (or stay untried when o is NULL). */
static void txn_drop(struct conn *c, struct dtxn **tp, uint8_t **answered,
		     const struct queue_outcome *o, unsigned code, const char *text)
{
	struct dtxn *t = *tp;

	if (t == NULL)
		return;
	if (o != NULL)
		txn_fail_all(c->d, t, *answered, o, code, text, c->relay);
	*tp = NULL;
	free(*answered);
	*answered = NULL;
	txn_finish(c->d, t);
}

/* conn_drop_txn - the current transaction ends (see txn_drop). */
static void conn_drop_txn(struct conn *c, const struct queue_outcome *o, unsigned code,
			  const char *text)
{
	spool_reader_close(c->rd);
	c->rd = NULL;
	txn_drop(c, &c->txn, &c->answered, o, code, text);
}

/* conn_drop_tail - the tail transaction ends (see txn_drop). */
static void conn_drop_tail(struct conn *c, const struct queue_outcome *o, unsigned code,
			   const char *text)
{
	txn_drop(c, &c->tail, &c->tail_answered, o, code, text);
}

/* conn_kill_fd - stop every submission of c and close its socket. */
static void conn_kill_fd(struct conn *c)
{
	struct deliver *d = c->d;
	struct io_uring_sqe *sqe;

	if (c->fd < 0)
		return;
	shutdown(c->fd, SHUT_RDWR);
	if (c->n_ops > 0) {
		sqe = reactor_sqe(d->r);
		io_uring_prep_cancel64(sqe, reactor_tag(c->anchor, OP_RECV), 0);
		reactor_sqe_tag(sqe, d->sv->anchor, REACTOR_OP_IGNORE);
		sqe = reactor_sqe(d->r);
		io_uring_prep_cancel64(sqe, reactor_tag(c->anchor, OP_SEND), 0);
		reactor_sqe_tag(sqe, d->sv->anchor, REACTOR_OP_IGNORE);
		sqe = reactor_sqe(d->r);
		io_uring_prep_cancel64(sqe, reactor_tag(c->anchor, OP_CONNECT), 0);
		reactor_sqe_tag(sqe, d->sv->anchor, REACTOR_OP_IGNORE);
	}
	close(c->fd);
	c->fd = -1;
}

/* conn_close - close c now (a transaction still open is deferred); its
 * site may open another connection. */
static void conn_close(struct conn *c)
{
	struct site *st = c->site;
	struct deliver *d = c->d;

	if (c->st == CONN_CLOSED)
		return;
	if (c->txn != NULL || c->tail != NULL) {
		struct queue_outcome o;
		queue_classify_fault(QUEUE_FAULT_CONN_LOST, &o);
		conn_drop_tail(c, &o, 0, "connection lost");
		conn_drop_txn(c, &o, 0, "connection lost");
	}
	conn_unlink(c);
	conn_kill_fd(c);
	c->st = CONN_CLOSED;
	conn_free_if_done(c);
	/* not now: the caller may be walking the site's connections */
	if (st != NULL && !d->is_stopping && !st->is_pump_pending) {
		st->is_pump_pending = true;
		st->pump_next = d->pump_list;
		d->pump_list = st;
	}
}

/* conn_connect - start connecting to the current target (or the next one
 * that can be tried); false when none is left. */
static bool conn_connect(struct conn *c)
{
	struct deliver *d = c->d;
	struct io_uring_sqe *sqe;
	socklen_t len = 0;

	for (;;) {
		if (!conn_target(c, &len))
			return false;
		c->fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (c->fd >= 0)
			break;
		c->conn_fault = queue_fault_from_errno(-errno, true);
		c->addr_i++;
	}
	if (c->addr.ss_family != AF_UNIX)
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	sqe = reactor_sqe(d->r);
	io_uring_prep_connect(sqe, c->fd, (struct sockaddr *)&c->addr, len);
	reactor_sqe_tag(sqe, c->anchor, OP_CONNECT);
	sqe->flags |= IOSQE_IO_LINK;
	c->n_ops++;
	c->cts.tv_sec = (long long)(d->conf->connect_timeout_ms / 1000);
	c->cts.tv_nsec = (long long)(d->conf->connect_timeout_ms % 1000) * 1000000;
	sqe = reactor_sqe(d->r);
	io_uring_prep_link_timeout(sqe, &c->cts, 0);
	reactor_sqe_tag(sqe, d->sv->anchor, REACTOR_OP_IGNORE);
	return true;
}

/*
 * conn_unreachable - no host of the site is left to try. When no other
 * connection of the site can carry its queue, the queue is finished with
 * the last host's failure (a reply, or the connect error).
 */
static void conn_unreachable(struct conn *c)
{
	struct deliver *d = c->d;
	struct site *st = c->site;
	struct queue_outcome o;
	unsigned code = 0;
	char why[sizeof(c->fail_text) + sizeof(c->relay) + 32];
	bool is_last;

	if (c->has_fail) {
		o = c->fail_o;
		code = c->fail_code;
		snprintf(why, sizeof(why), "%s", c->fail_text);
	} else {
		queue_classify_fault(c->conn_fault ? c->conn_fault : QUEUE_FAULT_DNS_NO_ADDRESS, &o);
		if (c->relay[0])
			snprintf(why, sizeof(why), "connect to %s: %s", c->relay,
				 queue_fault_name(c->conn_fault ? c->conn_fault
						  : QUEUE_FAULT_DNS_NO_ADDRESS));
		else
			snprintf(why, sizeof(why), "no address to connect to");
	}
	if (o.verdict == QUEUE_BOUNCE && c->any_host_tempfail)
		queue_classify_fault(QUEUE_FAULT_DNS_TEMP, &o);
	if (o.verdict == QUEUE_DELIVER)
		queue_classify_fault(QUEUE_FAULT_PROTOCOL, &o);
	queue_dest_failure(&st->health, &d->dest_policy, d->r->now_ms);
	is_last = st->n_conns == 1;
	log_info("r%u deliver: site=%s unreachable: %s", d->r->id, st->key, why);
	conn_unlink(c);
	conn_kill_fd(c);
	c->st = CONN_CLOSED;
	if (is_last)
		site_fail_queue(d, st, &o, code, why, c->has_fail ? c->relay : NULL);
	conn_free_if_done(c);
}

/* conn_try_next - reconnect to the next target once nothing of c is in
 * flight; or give up. */
static void conn_try_next(struct conn *c)
{
	if (c->n_ops > 0)
		return;            /* the last completion calls us again */
	c->is_reconnect = false;
	if (!c->d->is_stopping && conn_connect(c))
		return;
	conn_unreachable(c);
}

/* conn_next_host - the current host refused service (greeting, EHLO, a
 * connect error): remember why and try the next target. */
static void conn_next_host(struct conn *c, bool next_host_not_addr)
{
	conn_kill_fd(c);
	c->is_ready = false;
	c->is_idle = false;
	c->stash.len = 0;
	if (next_host_not_addr) {
		c->host_i++;
		c->addr_i = 0;
	} else {
		c->addr_i++;
	}
	if (c->st == CONN_UP)
		c->site->n_connecting++;
	c->st = CONN_CONNECTING;
	c->is_reconnect = true;
	conn_try_next(c);
}

/* conn_op_done - bookkeeping after any completion of c. */
static bool conn_op_done(struct conn *c)
{
	c->n_ops--;
	if (c->st == CONN_CLOSED) {
		conn_free_if_done(c);
		return false;
	}
	if (c->is_reconnect) {
		conn_try_next(c);
		return false;
	}
	return true;
}

static void on_connect(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	struct conn *c = obj;

	(void)r;
	if (c->is_reconnect || c->st == CONN_CLOSED) {
		conn_op_done(c);
		return;
	}
	c->n_ops--;
	if (cqe->res < 0) {
		int e = cqe->res == -ECANCELED ? -ETIMEDOUT : cqe->res;
		if (e == -ENOENT && c->addr.ss_family == AF_UNIX)
			e = -ECONNREFUSED;   /* no socket file: nobody listens */
		c->conn_fault = queue_fault_from_errno(e, true);
		c->has_fail = false;
		conn_next_host(c, false);
		return;
	}
	c->st = CONN_UP;
	c->site->n_connecting--;
	{
		struct smtp_client_limits lim = c->d->lim;
		lim.is_lmtp = c->site->is_lmtp;   /* LHLO, a reply per recipient */
		smtp_client_init(c->cl, &lim);
	}
	c->timer_phase = SMTP_CLIENT_PHASE_NONE;
	c->deadline_ms = 0;
	conn_arm_recv(c);
	conn_pump(c);
}

static void on_recv(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	struct conn *c = obj;
	int res = cqe->res;

	c->is_recv_armed = false;
	if (res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		if (c->st == CONN_UP && !c->is_reconnect &&
		    rm_buf_append(&c->stash, reactor_buf(r, bid), (size_t)res) < 0)
			res = -ENOBUFS - 1000;   /* flooding: a protocol failure below */
		reactor_buf_put(r, bid);
	}
	if (!conn_op_done(c))
		return;
	if (res == -ENOBUFS) {
		conn_arm_recv(c);          /* no provided buffer now: ask again */
		return;
	}
	if (res == 0 || res < 0) {
		if (res == -ENOBUFS - 1000)
			smtp_client_timeout(c->cl, SMTP_CLIENT_PHASE_NONE);
		else
			smtp_client_eof(c->cl);
	}
	conn_pump(c);
}

static void on_send(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	struct conn *c = obj;

	(void)r;
	c->is_send_inflight = false;
	if (!conn_op_done(c))
		return;
	if (cqe->res <= 0) {
		smtp_client_eof(c->cl);
	} else {
		smtp_client_output_done(c->cl, (size_t)cqe->res);
		if (smtp_client_phase(c->cl) == SMTP_CLIENT_PHASE_DATA_BLOCK)
			c->deadline_ms = c->d->r->now_ms + (int64_t)c->d->conf->smtp_command_timeout_ms;
	}
	conn_pump(c);
}

/* conn_take_txn - give c (idle, or at WAIT NEXT) the next transaction of
 * its site, if the site's rate allows; false when there is none. */
static bool conn_take_txn(struct conn *c)
{
	struct deliver *d = c->d;
	struct site *st = c->site;
	const struct conf_rate *rl = &d->conf->destination_rate_limit;
	struct dtxn *t;
	int rc;

	for (;;) {
		if (st->q_head == NULL || d->is_stopping)
			return false;
		if (rl->count > 0) {
			if (d->r->now_ms - st->rate_window_ms >= (int64_t)rl->per_ms) {
				st->rate_window_ms = d->r->now_ms;
				st->rate_used = 0;
			}
			if (st->rate_used >= d->rate_share)
				return false;   /* the tick pumps the site again */
			st->rate_used++;
		}
		t = site_take(st);
		c->answered = calloc(t->n, 1);
		if (c->answered == NULL) {
			txn_fault(d, t, QUEUE_FAULT_LOCAL, "out of memory");
			continue;
		}
		rc = smtp_client_begin_txn(c->cl, &t->ct);
		if (rc == 0) {
			c->txn = t;
			c->body_len = 0;
			c->is_body_end = false;
			c->next_by_ms = d->lim.use_pipelining_next && smtp_client_caps(c->cl)->pipelining &&
					!t->ct.is_probe &&
					c->n_msgs + 2 < d->conf->max_messages_per_connection
				? d->r->now_ms + DELIVER_NEXT_HOLD_MS : 0;
			st->n_new_claims += c->next_by_ms != 0;
			return true;
		}
		free(c->answered);
		c->answered = NULL;
		{
			enum queue_fault f = rc == SMTP_CLIENT_E_TOO_BIG ? QUEUE_FAULT_TOO_BIG
				: rc == SMTP_CLIENT_E_NEED_EXT ? (t->ct.is_smtputf8 ? QUEUE_FAULT_NEED_SMTPUTF8
								  : QUEUE_FAULT_NEED_8BITMIME)
				: rc == SMTP_CLIENT_E_ADDR || rc == SMTP_CLIENT_E_PARAM ? QUEUE_FAULT_PROTOCOL
				: QUEUE_FAULT_LOCAL;
			struct queue_outcome o;
			char why[sizeof(c->relay) + 64];
			queue_classify_fault(f, &o);
			if (rc == SMTP_CLIENT_E_ADDR || rc == SMTP_CLIENT_E_PARAM) {
				o.verdict = QUEUE_BOUNCE;
				snprintf(o.status, sizeof(o.status), "5.1.3");
			}
			snprintf(why, sizeof(why), "cannot send to %s: %s", c->relay,
				 smtp_client_err_name(rc));
			txn_fail_all(d, t, NULL, &o, 0, why, c->relay);
			txn_finish(d, t);
			if (rc == SMTP_CLIENT_E_FAILED || rc == SMTP_CLIENT_E_STATE)
				return false;
		}
	}
}

/*
 * conn_take_next - WAIT NEXT: the current transaction's end of data is
 * written; begin the site's next transaction behind it, in the same send
 * (a round trip less per message), when there is one and this connection
 * may carry it. Otherwise the client goes on waiting for the reply.
 */
static void conn_take_next(struct conn *c)
{
	c->next_by_ms = 0;
	if (c->txn == NULL || c->tail != NULL || c->site->q_head == NULL || c->d->is_stopping ||
	    c->n_msgs + 1 >= c->d->conf->max_messages_per_connection)
		return;
	spool_reader_close(c->rd);   /* its body is all written */
	c->rd = NULL;
	c->tail = c->txn;
	c->tail_answered = c->answered;
	c->txn = NULL;
	c->answered = NULL;
	if (!conn_take_txn(c)) {
		/* nothing begun: the client's state is as before */
		c->txn = c->tail;
		c->answered = c->tail_answered;
		c->tail = NULL;
		c->tail_answered = NULL;
	}
}

/* conn_body - feed the body; false when it must wait for output space. */
static int conn_body(struct conn *c)
{
	struct rm_err err = { 0, "" };
	size_t took;
	int rc;

	if (c->rd == NULL) {
		if ((rc = spool_reader_open(c->d->sv->spool, c->txn->m->id, &c->d->fd_cache,
					     &c->rd, &err)) < 0) {
			log_warn("r%u q=%s deliver: %s", c->d->r->id, c->txn->m->id, err.msg);
			return rc;
		}
	}
	if (c->body_len == 0 && !c->is_body_end) {
		rc = spool_reader_next(c->rd, &c->body_p, &c->body_len, &err);
		if (rc < 0) {
			log_warn("r%u q=%s deliver: %s", c->d->r->id, c->txn->m->id, err.msg);
			return rc;
		}
		if (rc == 0) {
			c->is_body_end = true;
			c->body_p = NULL;
			c->body_len = 0;
		}
	}
	if (c->body_len > 0 && !c->is_body_end) {
		/* is this piece the last one? peek by reading on when it ends */
		took = smtp_client_body(c->cl, c->body_p, c->body_len, false);
		c->body_p += took;
		c->body_len -= took;
		return 0;
	}
	smtp_client_body(c->cl, NULL, 0, true);
	return 0;
}

/* conn_phase_timer - arm the reply timer when the phase changes. */
static void conn_phase_timer(struct conn *c)
{
	enum smtp_client_phase ph = smtp_client_phase(c->cl);
	uint64_t t = c->d->conf->smtp_command_timeout_ms;

	if (ph == c->timer_phase)
		return;
	c->timer_phase = ph;
	if (ph == SMTP_CLIENT_PHASE_NONE) {
		c->deadline_ms = c->is_idle
			? c->d->r->now_ms + (int64_t)c->d->conf->connection_idle_timeout_ms : 0;
		return;
	}
	if (ph == SMTP_CLIENT_PHASE_DATA_END)
		t *= 2;
	c->deadline_ms = c->d->r->now_ms + (int64_t)t;
}

/* conn_result - a reply for some recipients of the event's transaction
 * (the current one, or the tail). */
static void conn_result(struct conn *c, const struct smtp_client_ev *ev, enum queue_phase ph)
{
	bool is_tail = c->tail != NULL && ev->txn == &c->tail->ct;
	struct dtxn *t = is_tail ? c->tail : c->txn;
	uint8_t *answered = is_tail ? c->tail_answered : c->answered;
	const struct smtp_client_reply *rp = ev->reply;
	struct queue_outcome o;

	if (t == NULL || rp == NULL)
		return;
	queue_classify_reply(rp->code, rp->esc, ph, &o);
	if (ev->kind == SMTP_CLIENT_EV_MAIL_RESULT) {
		if (rp->code < 400)
			return;
		for (unsigned k = 0; k < t->n; k++) {
			if (!answered[k])
				rcpt_result(c->d, t->m, t->idx[k], &o, rp->code, rp->text, c->relay);
			answered[k] = 1;
		}
	} else if (ev->kind == SMTP_CLIENT_EV_RCPT_RESULT) {
		if ((rp->code < 400 && t->m->probe == NULL) || ev->rcpt_index >= t->n)
			return;
		rcpt_result(c->d, t->m, t->idx[ev->rcpt_index], &o, rp->code, rp->text, c->relay);
		answered[ev->rcpt_index] = 1;
	} else if (ev->is_all) {
		for (unsigned k = 0; k < t->n; k++) {
			if (!answered[k])
				rcpt_result(c->d, t->m, t->idx[k], &o, rp->code, rp->text, c->relay);
			answered[k] = 1;
		}
	} else if (ev->rcpt_index < t->n) {
		rcpt_result(c->d, t->m, t->idx[ev->rcpt_index], &o, rp->code, rp->text, c->relay);
		answered[ev->rcpt_index] = 1;
	}
	if (o.verdict == QUEUE_DELIVER) {
		queue_dest_success(&c->site->health);
		if (ev->kind == SMTP_CLIENT_EV_DATA_RESULT) {
			bool has_dsn = smtp_client_caps(c->cl)->dsn;
			for (unsigned k = 0; k < t->n; k++) {
				struct drcpt *r = &t->m->rcpts[t->idx[k]];
				r->is_final = c->site->is_lmtp;
				r->is_peer_dsn = has_dsn;
			}
		}
	}
}

/* conn_failed - the client FAILED: next host, or the transaction's
 * unanswered recipients are deferred (or bounced). */
static void conn_failed(struct conn *c, const struct smtp_client_ev *ev)
{
	struct queue_outcome o;
	unsigned code = 0;
	char text[SMTP_CLIENT_TEXT_BYTES];

	if (c->is_ready && c->txn == NULL && c->tail == NULL) {
		/* an idle connection the peer closed (or timed out, or 421):
		 * nothing was lost and the host is not at fault */
		conn_flush(c);
		conn_close(c);
		return;
	}
	if (ev->reply != NULL) {
		enum queue_phase ph = c->is_ready ? QUEUE_PHASE_MAIL : QUEUE_PHASE_SESSION;
		code = ev->reply->code;
		queue_classify_reply(code, ev->reply->esc, ph, &o);
		snprintf(text, sizeof(text), "%s", ev->reply->text);
	} else {
		enum queue_fault f = ev->fail == SMTP_CLIENT_FAIL_TIMEOUT ? QUEUE_FAULT_TIMEOUT
			: ev->fail == SMTP_CLIENT_FAIL_EOF ? QUEUE_FAULT_CONN_LOST
			: QUEUE_FAULT_PROTOCOL;
		queue_classify_fault(f, &o);
		snprintf(text, sizeof(text), "%s while waiting for %s (%s)",
			 smtp_client_fail_name(ev->fail), smtp_client_phase_name(ev->phase),
			 ev->reason ? ev->reason : "-");
	}
	if (o.verdict == QUEUE_DELIVER)
		queue_classify_fault(QUEUE_FAULT_PROTOCOL, &o);
	if (o.is_dest_fault)
		queue_dest_failure(&c->site->health, &c->d->dest_policy, c->d->r->now_ms);
	if (!c->is_ready && c->txn == NULL) {
		/* greeting or EHLO refused, or the peer vanished before: the
		 * host is at fault, try the next one (RFC 5321 5.1) */
		c->has_fail = true;
		c->fail_o = o;
		c->fail_code = code;
		snprintf(c->fail_text, sizeof(c->fail_text), "%s", text);
		conn_next_host(c, true);
		return;
	}
	if (o.verdict == QUEUE_BOUNCE && (c->txn != NULL || c->tail != NULL) && ev->reply == NULL)
		queue_classify_fault(QUEUE_FAULT_CONN_LOST, &o);
	conn_drop_tail(c, &o, code, text);   /* the failure is both transactions' */
	conn_drop_txn(c, &o, code, text);
	conn_flush(c);   /* a queued QUIT, best effort */
	conn_close(c);
}

/* conn_pump - run c's client until it needs the network or nothing. */
static void conn_pump(struct conn *c)
{
	struct deliver *d = c->d;
	struct smtp_client_ev ev;

	for (;;) {
		if (c->st != CONN_UP || c->is_reconnect)
			return;
		if (c->stash.len > 0) {
			size_t took = smtp_client_feed(c->cl, c->stash.data, c->stash.len);
			rm_buf_consume(&c->stash, took);
		}
		switch (smtp_client_next(c->cl, &ev)) {
		case SMTP_CLIENT_EV_NEED_MORE:
			conn_flush(c);
			conn_arm_recv(c);
			conn_phase_timer(c);
			return;
		case SMTP_CLIENT_EV_FLUSH:
			conn_flush(c);
			conn_phase_timer(c);
			return;
		case SMTP_CLIENT_EV_READY:
			c->is_ready = true;
			c->has_fail = false;
			continue;
		case SMTP_CLIENT_EV_STARTTLS:
			/* never asked for: use_starttls is off */
			conn_close(c);
			return;
		case SMTP_CLIENT_EV_WAIT:
			if (ev.wait == SMTP_CLIENT_WAIT_BODY) {
				if (conn_body(c) < 0) {
					struct queue_outcome o;
					queue_classify_fault(QUEUE_FAULT_LOCAL, &o);
					conn_drop_txn(c, &o, 0, "cannot read the message from the spool");
					conn_close(c);
					return;
				}
				continue;
			}
			if (ev.wait == SMTP_CLIENT_WAIT_NEXT) {
				conn_take_next(c);
				continue;
			}
			if (ev.wait != SMTP_CLIENT_WAIT_TXN) {
				conn_close(c);
				return;
			}
			if (c->txn == NULL && c->n_msgs < d->conf->max_messages_per_connection &&
			    conn_take_txn(c)) {
				c->is_idle = false;
				continue;
			}
			if (c->st != CONN_UP)
				return;
			if (c->n_msgs >= d->conf->max_messages_per_connection || d->is_stopping ||
			    d->conf->connection_idle_timeout_ms == 0 ||
			    (c->is_idle && d->r->now_ms >= c->deadline_ms)) {
				smtp_client_quit(c->cl);
				c->is_quitting = true;
				continue;
			}
			if (!c->is_idle) {
				c->is_idle = true;
				c->timer_phase = SMTP_CLIENT_PHASE_DATA_END; /* force re-arm */
			}
			conn_flush(c);
			conn_arm_recv(c);
			conn_phase_timer(c);
			return;
		case SMTP_CLIENT_EV_MAIL_RESULT:
			conn_result(c, &ev, QUEUE_PHASE_MAIL);
			continue;
		case SMTP_CLIENT_EV_RCPT_RESULT:
			conn_result(c, &ev, QUEUE_PHASE_RCPT);
			continue;
		case SMTP_CLIENT_EV_DATA_RESULT:
			conn_result(c, &ev, QUEUE_PHASE_DATA);
			continue;
		case SMTP_CLIENT_EV_TXN_DONE: {
			struct queue_outcome o;
			c->n_msgs++;
			if (c->tail == NULL || ev.txn != &c->tail->ct)
				c->next_by_ms = 0;   /* ended without WAIT NEXT */
			/* anything unanswered (cannot happen in a sane peer) */
			queue_classify_fault(QUEUE_FAULT_PROTOCOL, &o);
			if (c->tail != NULL && ev.txn == &c->tail->ct)
				conn_drop_tail(c, &o, 0, "no reply for this recipient");
			else
				conn_drop_txn(c, &o, 0, "no reply for this recipient");
			continue;
		}
		case SMTP_CLIENT_EV_CLOSED:
			conn_flush(c);
			conn_close(c);
			return;
		case SMTP_CLIENT_EV_FAILED:
		default:
			conn_failed(c, &ev);
			return;
		}
	}
}

/* conn_open - a new connection for st. */
static void conn_open(struct deliver *d, struct site *st)
{
	struct conn *c = aligned_alloc(16, sizeof(*c));

	if (c == NULL) {
		atomic_fetch_sub_explicit(&site_conn_count[st->slot], 1, memory_order_relaxed);
		return;
	}
	memset(c, 0, sizeof(*c));
	c->cl = malloc(smtp_client_size());
	if (c->cl == NULL) {
		atomic_fetch_sub_explicit(&site_conn_count[st->slot], 1, memory_order_relaxed);
		free(c);
		return;
	}
	c->d = d;
	c->site = st;
	c->fd = -1;
	c->st = CONN_CONNECTING;
	rm_buf_init(&c->stash, DELIVER_STASH_MAX);
	c->next = st->conns;
	if (st->conns != NULL)
		st->conns->prev = c;
	st->conns = c;
	st->n_conns++;
	st->n_connecting++;
	d->n_conns++;
	if (!conn_connect(c))
		conn_unreachable(c);
}

/* ---- sites ------------------------------------------------------------------------- */

/* next_claim - c will take one queued message at its WAIT NEXT (see DELIVER_NEXT_HOLD_MS). */
static bool next_claim(const struct conn *c)
{
	return c->st == CONN_UP && c->txn != NULL && c->next_by_ms > c->d->r->now_ms;
}

/*
 * site_pump - give st's queue to idle connections, open more as allowed;
 * but leave as many messages as there are connections about to take one
 * behind their end of data (next_claim).
 */
static void site_pump(struct deliver *d, struct site *st)
{
	struct conn *c, *next;
	unsigned limit = d->conf->destination_concurrency_limit;
	unsigned n_claims = 0;

	if (st->q_len == 0 || d->is_stopping)
		return;
	for (c = st->conns; c != NULL; c = c->next)
		n_claims += next_claim(c);
	/* a connection woken here may claim too (counted by conn_take_txn:
	 * c itself may be gone after its pump) */
	st->n_new_claims = 0;
	for (c = st->conns; c != NULL && st->q_len > n_claims + st->n_new_claims; c = next) {
		next = c->next;
		if (c->st == CONN_UP && c->is_idle && c->txn == NULL && !c->is_quitting)
			conn_pump(c);
	}
	n_claims += st->n_new_claims;
	if (queue_dest_is_dead(&st->health, &d->dest_policy, d->r->now_ms) && st->n_conns == 0) {
		struct queue_outcome o;
		queue_classify_fault(QUEUE_FAULT_CONN_REFUSED, &o);
		o.verdict = QUEUE_DEFER;
		site_fail_queue(d, st, &o, 0, "destination is held off after repeated failures",
				NULL);
		return;
	}
	while (st->q_len > st->n_connecting + n_claims && st->n_conns < limit &&
	       queue_dest_may_connect(&st->health, &d->dest_policy, d->r->now_ms, st->n_conns)) {
		/* the limit is the process's: every reactor counts here */
		unsigned n = atomic_fetch_add_explicit(&site_conn_count[st->slot], 1,
						       memory_order_relaxed);
		if (n >= limit) {
			atomic_fetch_sub_explicit(&site_conn_count[st->slot], 1, memory_order_relaxed);
			break;    /* another reactor has them; the tick tries again */
		}
		conn_open(d, st);
	}
}

/* ---- the queue scan and the hooks ----------------------------------------------------- */

struct scan_ctx {
	struct deliver *d;
	unsigned n_started;
};

static int scan_one(void *arg, const struct spool_entry *e)
{
	struct scan_ctx *sc = arg;
	struct deliver *d = sc->d;

	if (e->shard != d->r->id || *msg_slot(d, e->id) != NULL)
		return 0;
	if (d->n_inflight >= DELIVER_MAX_INFLIGHT)
		return 1;
	if (msg_start(d, e) == 0)
		sc->n_started++;
	return 0;
}

static int fresh_one(void *arg, const struct spool_entry *e)
{
	return msg_start(arg, e);
}

void deliver_accepted(struct deliver *d, const char *queue_id)
{
	if (d == NULL || !d->is_on || d->is_stopping)
		return;
	if (d->n_fresh == d->cap_fresh) {
		size_t cap = d->cap_fresh ? d->cap_fresh * 2 : 64;
		void *p = realloc(d->fresh, cap * sizeof(*d->fresh));
		if (p == NULL)
			return;   /* the next scan finds it */
		d->fresh = p;
		d->cap_fresh = cap;
	}
	memcpy(d->fresh[d->n_fresh++], queue_id, SPOOL_ID_BYTES + 1);
}

void deliver_kick(struct deliver *d)
{
	if (d != NULL)
		d->is_kicked = true;
}

/* deliver_loop_end - start the messages committed in this iteration, and
 * scan the queue when asked to. */
void deliver_loop_end(struct deliver *d)
{
	struct rm_err err = { 0, "" };

	if (d == NULL || d->is_stopping)
		return;
	while (d->pump_list != NULL) {
		struct site *st = d->pump_list;
		d->pump_list = st->pump_next;
		st->is_pump_pending = false;
		site_pump(d, st);
	}
	if (!d->is_on)
		return;
	for (size_t i = 0; i < d->n_fresh; i++) {
		if (d->n_inflight >= DELIVER_MAX_INFLIGHT)
			break;   /* the scan takes it later */
		if (*msg_slot(d, d->fresh[i]) != NULL)
			continue;
		if (spool_get(d->sv->spool, d->fresh[i], fresh_one, d, &err) < 0 && err.code != -ENOENT)
			log_warn("r%u deliver: %s", d->r->id, err.msg);
	}
	d->n_fresh = 0;
	if (d->is_kicked || d->r->now_ms >= d->next_scan_ms) {
		struct scan_ctx sc = { d, 0 };
		d->is_kicked = false;
		d->next_scan_ms = d->r->now_ms + DELIVER_SCAN_MS;
		if (d->n_inflight < DELIVER_MAX_INFLIGHT &&
		    spool_due(d->sv->spool, now_unix(), scan_one, &sc, &err) < 0)
			log_warn("r%u deliver: queue scan: %s", d->r->id, err.msg);
	}
}

/* DELIVER_SWEEP_MS, DELIVER_SITE_IDLE_MS - how often routes and sites
 * nobody uses are freed, and how long an unused site is kept (its health
 * record is what a dead destination's hold-off needs). */
#define DELIVER_SWEEP_MS 60000
#define DELIVER_SITE_IDLE_MS (10 * 60000)

/* sweep - free expired routes and long-unused sites: memory stays bounded
 * by what is in use, however many domains pass through. */
static void sweep(struct deliver *d)
{
	int64_t now = d->r->now_ms;

	/* segments the spool swept stay on disk while a slot holds them */
	spool_fd_cache_trim(&d->fd_cache);

	for (size_t b = 0; b < DELIVER_HASH; b++) {
		struct route **rp = &d->routes[b], *rt;
		while ((rt = *rp) != NULL) {
			if (!rt->is_resolving && rt->wait_head == NULL && rt->expires_ms <= now) {
				*rp = rt->hnext;
				route_set_site(rt, NULL);
				free(rt);
				continue;
			}
			rp = &rt->hnext;
		}
	}
	for (size_t b = 0; b < DELIVER_HASH; b++) {
		struct site **sp = &d->sites[b], *st;
		while ((st = *sp) != NULL) {
			bool is_unused = st->n_conns == 0 && st->q_len == 0 && st->n_routes == 0 &&
				!st->is_pump_pending;
			if (!is_unused) {
				st->idle_since_ms = 0;
			} else if (st->idle_since_ms == 0) {
				st->idle_since_ms = now;
			} else if (now - st->idle_since_ms >= DELIVER_SITE_IDLE_MS &&
				   !queue_dest_is_dead(&st->health, &d->dest_policy, now)) {
				*sp = st->hnext;
				free(st);
				continue;
			}
			sp = &st->hnext;
		}
	}
}

/* deliver_tick - timeouts of connections, rate-limited sites. */
void deliver_tick(struct deliver *d)
{
	int64_t now;

	if (d == NULL)
		return;
	now = d->r->now_ms;
	if (now >= d->next_sweep_ms) {
		d->next_sweep_ms = now + DELIVER_SWEEP_MS;
		sweep(d);
	}
	for (size_t b = 0; b < DELIVER_HASH; b++) {
		for (struct site *st = d->sites[b]; st != NULL; st = st->hnext) {
			struct conn *c, *next;
			for (c = st->conns; c != NULL; c = next) {
				next = c->next;
				if (c->st != CONN_UP || c->deadline_ms == 0 || now < c->deadline_ms)
					continue;
				if (c->is_idle && c->txn == NULL) {
					if (smtp_client_quit(c->cl) == 0) {
						c->is_quitting = true;
						c->deadline_ms = now + (int64_t)d->conf->smtp_command_timeout_ms;
						conn_pump(c);
					} else {
						conn_close(c);
					}
					continue;
				}
				if (!smtp_client_timeout(c->cl, c->timer_phase))
					smtp_client_timeout(c->cl, SMTP_CLIENT_PHASE_NONE);
				conn_pump(c);
			}
			if (st->q_len > 0)
				site_pump(d, st);
		}
	}
}

/* deliver_stop - shutdown: no new transactions; connections close; what
 * was not answered stays due for the next start. */
void deliver_stop(struct deliver *d)
{
	if (d == NULL)
		return;
	d->is_stopping = true;
	for (size_t b = 0; b < DELIVER_HASH; b++) {
		for (struct site *st = d->sites[b]; st != NULL; st = st->hnext) {
			struct conn *c, *next;
			struct dtxn *t;
			for (c = st->conns; c != NULL; c = next) {
				next = c->next;
				conn_drop_tail(c, NULL, 0, NULL);
				conn_drop_txn(c, NULL, 0, NULL);
				conn_close(c);
			}
			while ((t = site_take(st)) != NULL)
				txn_finish(d, t);
		}
		for (struct route *rt = d->routes[b]; rt != NULL; rt = rt->hnext) {
			struct dtxn *t;
			while ((t = rt->wait_head) != NULL) {
				rt->wait_head = t->next;
				txn_finish(d, t);
			}
			rt->wait_tail = NULL;
		}
	}
	if (d->dns != NULL)
		dns_resolver_stop(d->dns);
}

/* deliver_is_done - after stop: may the reactor exit? (connections gone,
 * updates committed, DNS quiet) */
bool deliver_is_done(const struct deliver *d)
{
	if (d == NULL)
		return true;
	return d->n_conns == 0 && d->n_inflight == 0 &&
	       (d->dns == NULL || dns_resolver_is_idle(d->dns));
}

int deliver_new(struct deliver **out, struct server *sv, struct rm_err *err)
{
	struct deliver *d = calloc(1, sizeof(*d));
	struct dns_opts o;

	if (d == NULL)
		return rm_err_set(err, -ENOMEM, "deliver: out of memory");
	d->sv = sv;
	d->r = &sv->r;
	d->conf = sv->conf;
	d->is_on = sv->conf->is_delivery;
	if (getrandom(&d->rng, sizeof(d->rng), GRND_NONBLOCK) != (ssize_t)sizeof(d->rng) ||
	    d->rng == 0)
		d->rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)time(NULL);
	queue_dest_policy_default(&d->dest_policy);
	/* shared-nothing: each reactor takes its part of the rate */
	d->rate_share = d->conf->destination_rate_limit.count / conf_reactor_count(d->conf);
	if (d->rate_share == 0)
		d->rate_share = 1;
	smtp_client_limits_default(&d->lim);
	d->lim.helo_name = d->conf->myhostname;
	d->lim.max_rcpt = d->conf->destination_recipient_limit < SMTP_CLIENT_RCPT_MAX
		? d->conf->destination_recipient_limit : SMTP_CLIENT_RCPT_MAX;
	d->lim.lenient_8bit = true;   /* as Postfix: send 8-bit to 7-bit peers as is */
	d->lim.use_pipelining_next = d->conf->is_pipelining_next;
	spool_fd_cache_init(&d->fd_cache);
	d->vcache = calloc(DELIVER_VCACHE_SLOTS, sizeof(*d->vcache));
	if (d->vcache == NULL) {
		free(d);
		return rm_err_set(err, -ENOMEM, "deliver: out of memory");
	}
	reactor_on(d->r, OP_CONNECT, on_connect);
	reactor_on(d->r, OP_RECV, on_recv);
	reactor_on(d->r, OP_SEND, on_send);
	dns_opts_from_conf(&o, d->conf, OP_DNS);
	d->dns = dns_resolver_new(d->r, &o, err);
	if (d->dns == NULL) {
		free(d->vcache);
		free(d);
		return err ? err->code : -EINVAL;
	}
	*out = d;
	return 0;
}

void deliver_free(struct deliver *d)
{
	if (d == NULL)
		return;
	for (size_t b = 0; b < DELIVER_HASH; b++) {
		struct site *st, *sn;
		struct route *rt, *rn;
		struct dmsg *m, *mn;
		for (st = d->sites[b]; st != NULL; st = sn) {
			sn = st->hnext;
			free(st);
		}
		for (rt = d->routes[b]; rt != NULL; rt = rn) {
			rn = rt->hnext;
			free(rt);
		}
		for (m = d->msgs[b]; m != NULL; m = mn) {
			mn = m->hnext;
			msg_free(m);
		}
	}
	while (d->verifies != NULL) {
		struct verify *v = d->verifies;
		struct deliver_verify *w, *wn;
		d->verifies = v->next;
		for (w = v->handles; w != NULL; w = wn) {
			wn = w->next;
			free(w);
		}
		free(v);
	}
	dns_resolver_free(d->dns);
	/* trim, not fini: at exit a reader may still hold a slot */
	spool_fd_cache_trim(&d->fd_cache);
	free(d->vcache);
	free(d->fresh);
	free(d);
}
