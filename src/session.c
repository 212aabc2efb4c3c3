/*
 * session - one inbound SMTP connection: carries out what the sans-I/O
 *           smtp_server state machine asks for, on the reactor's ring, and
 *           writes accepted messages to the reactor's spool shard.
 *
 * Owns: the socket, the receive buffer it is still feeding (a provided
 *       buffer, returned to the ring as soon as the state machine took all
 *       of it), the spool message being received, the transaction's
 *       envelope copy, and the struct smtp_server.
 * Must not: block; allocate per command (the envelope storage grows once
 *       per session and is reused by every transaction); log peer bytes
 *       unescaped or message content.
 * Interface: include/ringmta/session.h
 * Limits: one receive and one send in flight; recipient storage bounded by
 *         recipient_limit; the idle timeout (smtpd_timeout) while waiting
 *         for the client; sessions waiting for a group commit never time
 *         out (the disk answers, or the daemon is broken anyway).
 * Errors: a failed send/recv closes the session; spool errors answer 452
 *         4.3.1 and the session goes on.
 * Standards: RFC 5321 (relay policy 3.6, trace 4.4), RFC 2920.
 *
 * Relay policy (never an open relay): RCPT is accepted for any domain only
 * from mynetworks; for relay_domains from anyone; otherwise 554 5.7.1.
 * Then, for every client (mynetworks too, as Postfix's
 * relay_recipient_maps), a recipient in a relay domain whose policy is
 * list must be in relay_recipients (maps_current(), read afresh for each
 * RCPT and never kept), or it gets 550 5.1.1.
 */
#include "ringmta/session.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ringmta/deliver.h"
#include "ringmta/log.h"
#include "ringmta/maps_live.h"
#include "ringmta/net.h"
#include "ringmta/reactor.h"
#include "ringmta/server.h"
#include "ringmta/smtp_server.h"
#include "ringmta/spool.h"

/* SESSION_DRAIN_READS - at most 64 KiB of unread input is read off before
 * a close (see close_now). */
#define SESSION_DRAIN_READS 16

/* struct rcpt_ref - one accepted recipient; offsets into session.strs. */
struct rcpt_ref {
	uint32_t addr_off;
	uint32_t orcpt_off;     /* UINT32_MAX: no ORCPT */
	unsigned notify;
};

struct session {
	struct spool_owner owner;       /* the group commit calls us back */
	struct session *next, *prev;    /* reactor's session list */
	struct session *starved_next;   /* reactor's -ENOBUFS list */
	struct server *sv;
	int fd;
	uint64_t id;
	int64_t deadline_ms;
	unsigned inflight;              /* operations in the ring */
	bool recv_armed, send_armed;
	bool want_close;                /* close once the output is sent */
	bool is_closing;                /* fd shut down, waiting for inflight */
	bool awaiting_commit;           /* message in the group commit */
	bool awaiting_verify;           /* an RCPT waits for the next hop's answer */
	struct deliver_verify *verify;  /* its wait handle */
	int64_t verify_deadline_ms;
	const struct smtp_proto_path *vpath;        /* the RCPT's, valid until answered */
	const struct smtp_proto_rcpt_params *vrcpt;
	bool is_starved;
	bool is_mynetworks;
	bool is_counted;                /* holds a net_conn_acquire() slot */
	int in_bid;                     /* provided buffer being fed, or -1 */
	uint8_t *stash;                 /* or leftover input copied out of it */
	uint32_t in_off, in_len;        /* unfed bytes of either */
	struct spool_msg *msg;
	int msg_err;                    /* sticky spool error of msg */
	const char *helo;
	const struct smtp_proto_path *mail_path;
	const struct smtp_proto_mail_params *mail;
	struct rcpt_ref *rcpts;
	size_t n_rcpts, cap_rcpts;
	struct rm_buf strs;             /* envelope strings, NUL-terminated */
	unsigned n_msgs, n_cmds;
	struct sockaddr_storage peer;
	char peer_str[NET_ADDR_STR_BYTES];
	struct smtp_server srv;
} __attribute__((aligned(16)));

static void pump(struct session *s);
static void finish(struct session *s);

struct session *session_list_next(struct session *s)
{
	return s->next;
}

struct session **session_starved_link(struct session *s)
{
	return &s->starved_next;
}

/* date_now - RFC 5322 3.3 date-time in UTC for the Received header. */
static void date_now(char *out, size_t cap)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, cap, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

static void arm_recv(struct session *s)
{
	if (s->recv_armed || s->is_closing || s->want_close || s->is_starved)
		return;
	reactor_recv(&s->sv->r, s, SERVER_OP_RECV, s->fd);
	s->recv_armed = true;
	s->inflight++;
}

static void flush(struct session *s)
{
	struct io_uring_sqe *sqe;
	const uint8_t *p;
	size_t len;

	if (s->send_armed || s->is_closing)
		return;
	p = smtp_server_output(&s->srv, &len);
	if (len == 0)
		return;
	/* smtp_server keeps the bytes it returned in place until output_done. */
	sqe = reactor_sqe(&s->sv->r);
	io_uring_prep_send(sqe, s->fd, p, len, MSG_NOSIGNAL);
	reactor_sqe_tag(sqe, s, SERVER_OP_SEND);
	s->send_armed = true;
	s->inflight++;
}

static void release_input(struct session *s)
{
	s->in_len = 0;
	s->in_off = 0;
	free(s->stash);
	s->stash = NULL;
	if (s->in_bid >= 0) {
		int bid = s->in_bid;
		s->in_bid = -1;
		reactor_buf_put(&s->sv->r, (unsigned)bid);
	}
}

/* txn_reset - forget the envelope copy (storage is kept for reuse). */
static void txn_reset(struct session *s)
{
	s->mail_path = NULL;
	s->mail = NULL;
	s->n_rcpts = 0;
	s->strs.len = 0;
}

static void msg_drop(struct session *s)
{
	if (s->msg != NULL) {
		spool_msg_abort(s->msg);
		s->msg = NULL;
	}
	s->msg_err = 0;
}

/* close_now - stop all I/O: the peer is gone or we are done with it. */
static void close_now(struct session *s)
{
	if (s->is_closing)
		return;
	s->is_closing = true;
	msg_drop(s);
	release_input(s);
	if (s->is_starved) {
		struct session **pp = &s->sv->starved;
		while (*pp != NULL && *pp != s)
			pp = &(*pp)->starved_next;
		if (*pp == s)
			*pp = s->starved_next;
		s->is_starved = false;
	}
	/* Unread input at close(2) makes the kernel send a reset, which can
	 * destroy our last replies (say a 250 the client then never sees,
	 * so it sends the message again). Read off what is queued first. */
	for (unsigned i = 0; i < SESSION_DRAIN_READS; i++) {
		uint8_t sink[4096];
		if (recv(s->fd, sink, sizeof(sink), MSG_DONTWAIT) <= 0)
			break;
	}
	/* Make an in-flight receive or send complete at once. */
	shutdown(s->fd, SHUT_RDWR);
	finish(s);
}

/* finish - free the session once nothing refers to it any more. */
static void finish(struct session *s)
{
	struct server *r = s->sv;

	if (!s->is_closing || s->inflight > 0 || s->awaiting_commit)
		return;
	if (s->verify != NULL) {
		deliver_verify_cancel(r->deliver, s->verify);
		s->verify = NULL;
	}
	log_info("r%u s=%016llx smtp_server: disconnect client=%s msgs=%u cmds=%u action=\"%s\"",
		 r->r.id, (unsigned long long)s->id, s->peer_str, s->n_msgs, s->n_cmds,
		 smtp_server_action(&s->srv));
	close(s->fd);
	if (s->is_counted)
		net_conn_release((struct sockaddr *)&s->peer);
	if (s->prev)
		s->prev->next = s->next;
	else
		r->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	r->n_sessions--;
	smtp_server_fini(&s->srv);
	rm_buf_fini(&s->strs);
	free(s->rcpts);
	free(s);
}

/* str_add - copy a NUL-terminated string into strs; offset or UINT32_MAX. */
static uint32_t str_add(struct session *s, const char *p)
{
	size_t off = s->strs.len;

	if (rm_buf_append(&s->strs, p, strlen(p) + 1) < 0)
		return UINT32_MAX;
	return (uint32_t)off;
}

/* domain_of - the domain part of a mailbox (after the last '@'). */
static const char *domain_of(const struct smtp_proto_path *p, size_t *len)
{
	if (p->domain_kind != SMTP_PROTO_DOMAIN_NAME || p->local_len >= p->len) {
		*len = 0;
		return NULL;
	}
	*len = p->len - p->local_len - 1u;
	return p->addr + p->local_len + 1;
}

/*
 * rcpt_policy - the recipient check of relay_domains' policy for a
 * recipient in a relay domain; RCPT_OK for any other recipient.
 */
static void verify_done(void *arg, enum deliver_verify_result res, const char *reason);

static enum smtp_reply_id rcpt_policy(struct session *s, const struct smtp_proto_path *path,
				      bool *is_pending)
{
	enum maps_rcpt_result res;
	const char *dom;
	size_t dlen;
	char a[128];

	if ((dom = domain_of(path, &dlen)) == NULL)
		return SMTP_REPLY_RCPT_OK;
	switch (conf_relay_domain_policy(s->sv->conf, dom, dlen)) {
	case CONF_RCPT_LIST:
		/* The set is read here and dropped before we return to the
		 * loop: maps_live frees it after a reload once every reactor
		 * has gone round its loop. */
		res = maps_rcpt_lookup(maps_current()->rcpt, path->addr, path->len);
		if (res == MAPS_RCPT_FOUND)
			return SMTP_REPLY_RCPT_OK;
		log_info("r%u s=%016llx smtp_server: reject client=%s reason=rcpt_unlisted lookup=%s rcpt=\"%s\"",
			 s->sv->r.id, (unsigned long long)s->id, s->peer_str,
			 maps_rcpt_result_name(res),
			 rm_printable(a, sizeof(a), path->addr, path->len, 100));
		return SMTP_REPLY_RCPT_UNLISTED;
	case CONF_RCPT_VERIFY:
		/* The delivery engine asks the next hop (a cached RCPT probe);
		 * the answer may come later: the RCPT waits, at most
		 * verify_timeout, then gets 450 while the probe goes on. */
		switch (deliver_verify(s->sv->deliver, path->addr, path->len, verify_done, s,
				       &s->verify)) {
		case DELIVER_VERIFY_OK:
			return SMTP_REPLY_RCPT_OK;
		case DELIVER_VERIFY_UNKNOWN:
			log_info("r%u s=%016llx smtp_server: reject client=%s reason=rcpt_unverified "
				 "lookup=cached rcpt=\"%s\"", s->sv->r.id, (unsigned long long)s->id,
				 s->peer_str, rm_printable(a, sizeof(a), path->addr, path->len, 100));
			return SMTP_REPLY_RCPT_UNDELIVERABLE;
		case DELIVER_VERIFY_PENDING:
			*is_pending = true;
			return SMTP_REPLY_RCPT_OK;
		default:
			return SMTP_REPLY_RCPT_UNVERIFIED;
		}
	default:
		return SMTP_REPLY_RCPT_OK;
	}
}

static enum smtp_reply_id rcpt_add(struct session *s, const struct smtp_proto_path *path,
				   const struct smtp_proto_rcpt_params *rcpt);

/* on_rcpt - the relay policy and the recipient check; *is_pending when the
 * answer waits for a verification. */
static enum smtp_reply_id on_rcpt(struct session *s, const struct smtp_server_ev *ev,
				  bool *is_pending)
{
	enum smtp_reply_id id;
	const char *dom;
	size_t dlen;

	if (!s->is_mynetworks && !ev->path->is_postmaster) {
		/* RFC 5321 4.5.1: <postmaster> is always accepted. Otherwise only
		 * relay_domains, and without routing of its own in the local part
		 * ("a%b@", "b!a@", "\"a@b\"@"), which a host behind us might
		 * honour (Postfix's allow_untrusted_routing = no). */
		dom = domain_of(ev->path, &dlen);
		if (dom == NULL || !conf_relay_domain_match(s->sv->conf, dom, dlen) ||
		    memchr(ev->path->addr, '%', ev->path->local_len) != NULL ||
		    memchr(ev->path->addr, '!', ev->path->local_len) != NULL ||
		    memchr(ev->path->addr, '@', ev->path->local_len) != NULL) {
			char a[128];
			log_info("r%u s=%016llx smtp_server: reject client=%s reason=relay_denied rcpt=\"%s\"",
				 s->sv->r.id, (unsigned long long)s->id, s->peer_str,
				 rm_printable(a, sizeof(a), ev->path->addr, ev->path->len, 100));
			return SMTP_REPLY_RELAY_DENIED;
		}
	}
	if ((id = rcpt_policy(s, ev->path, is_pending)) != SMTP_REPLY_RCPT_OK || *is_pending)
		return id;
	return rcpt_add(s, ev->path, ev->rcpt);
}

/* rcpt_add - keep an accepted recipient for the envelope. */
static enum smtp_reply_id rcpt_add(struct session *s, const struct smtp_proto_path *path,
				   const struct smtp_proto_rcpt_params *rcpt)
{
	struct rcpt_ref *rr;

	if (s->n_rcpts == s->cap_rcpts) {
		size_t cap = s->cap_rcpts ? s->cap_rcpts * 2 : 8;
		if (cap > s->sv->conf->recipient_limit)
			cap = s->sv->conf->recipient_limit;
		if (cap <= s->n_rcpts)
			return SMTP_REPLY_TOO_MANY_RCPT;
		rr = realloc(s->rcpts, cap * sizeof(*rr));
		if (rr == NULL)
			return SMTP_REPLY_LOCAL_ERROR;
		s->rcpts = rr;
		s->cap_rcpts = cap;
	}
	rr = &s->rcpts[s->n_rcpts];
	rr->addr_off = str_add(s, path->addr);
	rr->orcpt_off = rcpt->orcpt[0] ? str_add(s, rcpt->orcpt) : UINT32_MAX;
	rr->notify = rcpt->notify;
	if (rr->addr_off == UINT32_MAX || (rcpt->orcpt[0] && rr->orcpt_off == UINT32_MAX))
		return SMTP_REPLY_LOCAL_ERROR;
	s->n_rcpts++;
	return SMTP_REPLY_RCPT_OK;
}

static enum smtp_reply_id on_data_begin(struct session *s)
{
	struct rm_err err = { 0, "" };
	char hdr[1024], date[64];
	const char *for_rcpt = NULL;
	int n;

	if (spool_msg_begin(s->sv->shard, &s->msg, &err) < 0) {
		log_warn("r%u s=%016llx %s", s->sv->r.id, (unsigned long long)s->id, err.msg);
		s->msg = NULL;
		return SMTP_REPLY_NO_STORAGE;
	}
	s->msg_err = 0;
	if (s->n_rcpts == 1)
		for_rcpt = s->strs.data ? (const char *)s->strs.data + s->rcpts[0].addr_off : NULL;
	date_now(date, sizeof(date));
	n = smtp_server_received(&s->srv, hdr, sizeof(hdr), s->peer_str, NULL,
				 spool_msg_id(s->msg), for_rcpt, date);
	if (n < 0 || spool_msg_write(s->msg, hdr, (size_t)n, &err) < 0) {
		if (err.msg[0])
			log_warn("r%u s=%016llx q=%s %s", s->sv->r.id, (unsigned long long)s->id,
				 spool_msg_id(s->msg), err.msg);
		msg_drop(s);
		return SMTP_REPLY_NO_STORAGE;
	}
	return SMTP_REPLY_OK;
}

static void on_body(struct session *s, const struct smtp_server_ev *ev)
{
	struct rm_err err = { 0, "" };

	if (s->msg == NULL || s->msg_err < 0)
		return;
	s->msg_err = spool_msg_write(s->msg, ev->data, ev->len, &err);
	if (s->msg_err < 0)
		log_warn("r%u s=%016llx q=%s %s", s->sv->r.id, (unsigned long long)s->id,
			 spool_msg_id(s->msg), err.msg);
}

/* on_data_end - hand the message to the group commit; the answer comes in
 * commit_done() once the batch is on disk. */
static void on_data_end(struct session *s)
{
	struct rm_err err = { 0, "" };
	struct spool_rcpt rc_small[16], *rc = rc_small;
	struct spool_envelope env;
	const char *base = (const char *)s->strs.data;
	int rc_end;

	if (s->msg == NULL || s->msg_err < 0 || s->n_rcpts == 0 || s->mail_path == NULL) {
		msg_drop(s);
		smtp_server_answer(&s->srv, SMTP_REPLY_NO_STORAGE, NULL);
		return;
	}
	if (s->n_rcpts > 16 && (rc = calloc(s->n_rcpts, sizeof(*rc))) == NULL) {
		msg_drop(s);
		smtp_server_answer(&s->srv, SMTP_REPLY_LOCAL_ERROR, NULL);
		return;
	}
	for (size_t i = 0; i < s->n_rcpts; i++) {
		rc[i].addr = base + s->rcpts[i].addr_off;
		rc[i].notify = s->rcpts[i].notify;
		rc[i].orcpt = s->rcpts[i].orcpt_off == UINT32_MAX ? NULL : base + s->rcpts[i].orcpt_off;
	}
	memset(&env, 0, sizeof(env));
	env.sender = s->mail_path->addr;
	env.rcpts = rc;
	env.n_rcpts = s->n_rcpts;
	env.envid = s->mail->envid[0] ? s->mail->envid : NULL;
	env.ret = s->mail->ret;       /* enum values match spool_ret / spool_body */
	env.body = s->mail->body;
	env.smtputf8 = s->mail->smtputf8;
	env.client_addr = s->peer_str;
	env.helo = s->helo;
	env.arrival_unix = time(NULL);
	rc_end = spool_msg_end(s->msg, &env, &s->owner, &err);
	s->msg = NULL;
	if (rc != rc_small)
		free(rc);
	if (rc_end < 0) {
		log_warn("r%u s=%016llx %s", s->sv->r.id, (unsigned long long)s->id, err.msg);
		smtp_server_answer(&s->srv, SMTP_REPLY_NO_STORAGE, NULL);
		return;
	}
	s->awaiting_commit = true;
}

void session_commit_done(struct spool_owner *o, const char *queue_id, int status)
{
	struct session *s = (struct session *)((char *)o - offsetof(struct session, owner));

	s->awaiting_commit = false;
	if (status == 0) {
		char from[SMTP_PROTO_PATH_MAX * 4 + 1] = "";
		s->n_msgs++;
		if (s->mail_path != NULL)
			rm_printable(from, sizeof(from), s->mail_path->addr, s->mail_path->len,
				     SMTP_PROTO_PATH_MAX);
		log_info("r%u s=%016llx q=%s smtp_server: accepted client=%s from=\"<%s>\" nrcpt=%zu",
			 s->sv->r.id, (unsigned long long)s->id, queue_id, s->peer_str,
			 from, s->n_rcpts);
		deliver_accepted(s->sv->deliver, queue_id);
	} else {
		log_warn("r%u s=%016llx q=%s smtp_server: commit failed: %s", s->sv->r.id,
			 (unsigned long long)s->id, queue_id, spool_strerror(status));
	}
	if (s->is_closing) {
		finish(s);
		return;
	}
	txn_reset(s);
	smtp_server_answer(&s->srv, status == 0 ? SMTP_REPLY_QUEUED : SMTP_REPLY_NO_STORAGE,
			   queue_id);
	s->deadline_ms = s->sv->r.now_ms + (int64_t)s->sv->conf->smtpd_timeout_ms;
	pump(s);
}

static void on_reject(struct session *s, const struct smtp_server_ev *ev)
{
	const struct smtp_proto_reply *rp = smtp_proto_reply(ev->reply);

	log_info("r%u s=%016llx smtp_server: reject client=%s reason=%s reply=%u sample=\"%s\"",
		 s->sv->r.id, (unsigned long long)s->id, s->peer_str,
		 ev->reason ? ev->reason : "-", rp->code, ev->sample ? ev->sample : "");
}

/* handle - one event that is neither a flow-control kind nor CLOSE. */
static void handle(struct session *s, const struct smtp_server_ev *ev)
{
	switch (ev->kind) {
	case SMTP_SERVER_EV_HELO:
		s->helo = ev->helo;
		s->n_cmds++;
		break;
	case SMTP_SERVER_EV_MAIL:
		s->n_cmds++;
		txn_reset(s);
		s->mail_path = ev->path;
		s->mail = ev->mail;
		smtp_server_answer(&s->srv, SMTP_REPLY_MAIL_OK, NULL);
		break;
	case SMTP_SERVER_EV_RCPT: {
		bool is_pending = false;
		enum smtp_reply_id id = on_rcpt(s, ev, &is_pending);
		s->n_cmds++;
		if (is_pending) {
			/* answered by verify_done() or the tick */
			s->awaiting_verify = true;
			s->vpath = ev->path;
			s->vrcpt = ev->rcpt;
			s->verify_deadline_ms = s->sv->r.now_ms +
				(int64_t)s->sv->conf->verify_timeout_ms;
			break;
		}
		/* replies that quote the recipient ("<%s>: ...") get it */
		smtp_server_answer(&s->srv, id, strstr(smtp_proto_reply(id)->text, "%s")
				   ? ev->path->addr : NULL);
		break;
	}
	case SMTP_SERVER_EV_DATA_BEGIN:
		s->n_cmds++;
		smtp_server_answer(&s->srv, on_data_begin(s), NULL);
		break;
	case SMTP_SERVER_EV_BODY:
		on_body(s, ev);
		break;
	case SMTP_SERVER_EV_DATA_END:
		on_data_end(s);
		break;
	case SMTP_SERVER_EV_DATA_ABORT:
		log_info("r%u s=%016llx smtp_server: message aborted client=%s reason=%s",
			 s->sv->r.id, (unsigned long long)s->id, s->peer_str,
			 ev->reason ? ev->reason : "-");
		msg_drop(s);
		break;
	case SMTP_SERVER_EV_STARTTLS:
		smtp_server_answer(&s->srv, SMTP_REPLY_TLS_UNAVAILABLE, NULL);
		break;
	case SMTP_SERVER_EV_REJECT:
		s->n_cmds++;
		on_reject(s, ev);
		break;
	default:
		rm_panic("session: unexpected smtp_server event %d", ev->kind);
	}
}

/* input - the unfed bytes we hold: in a provided buffer, or in the stash. */
static const uint8_t *input(struct session *s)
{
	if (s->in_bid >= 0)
		return reactor_buf(&s->sv->r, (unsigned)s->in_bid) + s->in_off;
	return s->stash + s->in_off;
}

/*
 * stash_input - the state machine stalled (waiting for the peer to read,
 * or for a commit) with input left over: copy it out and give the receive
 * buffer back, so clients that never read cannot pin the reactor's
 * buffers and starve everyone else. Bounded: one receive's worth.
 */
static void stash_input(struct session *s)
{
	uint8_t *p;

	if (s->in_bid < 0 || s->in_len == 0)
		return;
	p = malloc(s->in_len);
	if (p == NULL)
		return;         /* keep the buffer: correct, only less fair */
	memcpy(p, input(s), s->in_len);
	reactor_buf_put(&s->sv->r, (unsigned)s->in_bid);
	s->in_bid = -1;
	s->stash = p;
	s->in_off = 0;
}

/* pump - feed what we hold and carry out events until the machine stalls. */
static void pump(struct session *s)
{
	struct smtp_server_ev ev;
	unsigned idle_spins = 0;

	while (!s->is_closing) {
		if (s->in_len > 0) {
			size_t n = smtp_server_feed(&s->srv, input(s), s->in_len);
			s->in_off += (uint32_t)n;
			s->in_len -= (uint32_t)n;
			if (s->in_len == 0)
				release_input(s);
			idle_spins = n ? 0 : idle_spins + 1;
		}
		switch (smtp_server_next(&s->srv, &ev)) {
		case SMTP_SERVER_EV_NEED_MORE:
			/* NEED_MORE means all fed input was consumed, so the
			 * next feed takes something; twice nothing is our bug. */
			if (s->in_len > 0 && idle_spins < 2)
				continue;
			if (s->in_len > 0)
				rm_panic("session: smtp_server takes no input but wants more");
			flush(s);
			arm_recv(s);
			return;
		case SMTP_SERVER_EV_WAIT:
		case SMTP_SERVER_EV_FLUSH:
			stash_input(s);
			flush(s);
			return;
		case SMTP_SERVER_EV_CLOSE:
			s->want_close = true;
			flush(s);
			if (!s->send_armed)
				close_now(s);
			return;
		default:
			idle_spins = 0;
			handle(s, &ev);
			break;
		}
	}
}

/* verify_answer - answer the RCPT that waited for a verification. */
static void verify_answer(struct session *s, enum smtp_reply_id id)
{
	char a[128];

	if (id == SMTP_REPLY_RCPT_OK)
		id = rcpt_add(s, s->vpath, s->vrcpt);
	else
		log_info("r%u s=%016llx smtp_server: reject client=%s reason=%s rcpt=\"%s\"",
			 s->sv->r.id, (unsigned long long)s->id, s->peer_str,
			 id == SMTP_REPLY_RCPT_UNVERIFIED ? "rcpt_verify_tempfail" : "rcpt_unverified",
			 rm_printable(a, sizeof(a), s->vpath->addr, s->vpath->len, 100));
	s->awaiting_verify = false;
	smtp_server_answer(&s->srv, id, strstr(smtp_proto_reply(id)->text, "%s")
			   ? s->vpath->addr : NULL);
	s->vpath = NULL;
	s->vrcpt = NULL;
	s->deadline_ms = s->sv->r.now_ms + (int64_t)s->sv->conf->smtpd_timeout_ms;
	pump(s);
}

/* verify_done - the delivery engine's answer about the waiting RCPT. */
static void verify_done(void *arg, enum deliver_verify_result res, const char *reason)
{
	struct session *s = arg;

	(void)reason;
	s->verify = NULL;
	if (!s->awaiting_verify)
		return;
	verify_answer(s, res == DELIVER_VERIFY_OK ? SMTP_REPLY_RCPT_OK
		      : res == DELIVER_VERIFY_UNKNOWN ? SMTP_REPLY_RCPT_UNDELIVERABLE
		      : SMTP_REPLY_RCPT_UNVERIFIED);
}

void session_accept(struct server *r, int fd, const struct sockaddr *peer,
		    socklen_t peer_len)
{
	struct smtp_server_limits lim;
	struct session *s;
	int rc;

	s = aligned_alloc(16, sizeof(*s));
	if (s == NULL) {
		close(fd);
		return;
	}
	/* TCP_NODELAY comes from the listener (net_listen): replies are
	 * small and already batched per pipelined group (RFC 2920), and
	 * Nagle would hold them back behind the peer's delayed ACK. */
	memset(s, 0, offsetof(struct session, srv));
	s->owner.done = session_commit_done;
	s->sv = r;
	s->fd = fd;
	s->in_bid = -1;
	s->id = ((uint64_t)r->r.id << 56) ^ ((uint64_t)time(NULL) << 24) ^ ++r->next_session_id;
	memcpy(&s->peer, peer, peer_len < sizeof(s->peer) ? peer_len : sizeof(s->peer));
	net_addr_str(peer, s->peer_str, sizeof(s->peer_str));
	s->is_mynetworks = conf_mynetworks_match(r->conf, peer);
	rm_buf_init(&s->strs, (size_t)r->conf->recipient_limit * 2048u + 4096u);
	s->deadline_ms = r->r.now_ms + (int64_t)r->conf->smtpd_timeout_ms;

	smtp_server_limits_default(&lim);
	lim.hostname = r->conf->myhostname;
	lim.max_line_bytes = r->conf->line_length_limit;
	lim.max_message_bytes = r->conf->message_size_limit;
	lim.max_rcpt = r->conf->recipient_limit;
	lim.max_errors = r->conf->smtpd_error_limit;
	/* Unlabelled 8-bit text is everyday mail (Postfix takes it too) and
	 * cannot split or join messages; every smuggling-relevant strictness
	 * (bare CR/LF) stays on. */
	lim.lenient_8bit = true;
	smtp_server_init(&s->srv, &lim);

	s->next = r->sessions;
	if (r->sessions)
		r->sessions->prev = s;
	r->sessions = s;
	r->n_sessions++;

	rc = net_conn_acquire(peer, r->conf->max_connections, r->conf->max_connections_per_ip);
	if (rc < 0) {
		log_info("r%u s=%016llx smtp_server: reject client=%s reason=%s", r->r.id,
			 (unsigned long long)s->id, s->peer_str,
			 rc == -EUSERS ? "max_connections_per_ip" : "max_connections");
		smtp_server_start(&s->srv, SMTP_REPLY_TOO_MANY_CONN);
	} else {
		s->is_counted = true;
		log_info("r%u s=%016llx smtp_server: connect client=%s", r->r.id,
			 (unsigned long long)s->id, s->peer_str);
		smtp_server_start(&s->srv, r->r.is_stopping ? SMTP_REPLY_SHUTDOWN : SMTP_REPLY_GREETING);
	}
	pump(s);
}

void session_on_recv(struct session *s, int res, unsigned cqe_flags)
{
	s->inflight--;
	s->recv_armed = false;
	if ((cqe_flags & IORING_CQE_F_BUFFER) && (res <= 0 || s->is_closing)) {
		/* A buffer comes back with any result that carries one. */
		reactor_buf_put(&s->sv->r, cqe_flags >> IORING_CQE_BUFFER_SHIFT);
		cqe_flags &= ~(unsigned)IORING_CQE_F_BUFFER;
	}
	if (s->is_closing) {
		finish(s);
		return;
	}
	if (res == -ENOBUFS) {
		/* No receive buffer free: park until one comes back. */
		s->is_starved = true;
		s->starved_next = s->sv->starved;
		s->sv->starved = s;
		return;
	}
	if (res <= 0) {
		if (res < 0 && res != -ECONNRESET && res != -EPIPE)
			log_info("r%u s=%016llx smtp_server: receive failed client=%s error=%s",
				 s->sv->r.id, (unsigned long long)s->id, s->peer_str, strerror(-res));
		smtp_server_eof(&s->srv);
		pump(s);        /* ends in CLOSE; s may be freed now */
		return;
	}
	s->in_bid = (int)(cqe_flags >> IORING_CQE_BUFFER_SHIFT);
	s->in_off = 0;
	s->in_len = (uint32_t)res;
	s->deadline_ms = s->sv->r.now_ms + (int64_t)s->sv->conf->smtpd_timeout_ms;
	pump(s);
}

void session_on_send(struct session *s, int res)
{
	s->inflight--;
	s->send_armed = false;
	if (s->is_closing) {
		finish(s);
		return;
	}
	if (res <= 0) {
		close_now(s);
		return;
	}
	smtp_server_output_done(&s->srv, (size_t)res);
	if (s->want_close) {
		size_t left;
		smtp_server_output(&s->srv, &left);
		if (left == 0) {
			close_now(s);
			return;
		}
		flush(s);
		return;
	}
	pump(s);
}

void session_wake(struct session *s)
{
	s->is_starved = false;
	arm_recv(s);
}

void session_tick(struct session *s, int64_t now_ms)
{
	if (s->awaiting_verify) {
		/* the next hop is slow: 450 now, the probe goes on and its
		 * answer is cached for the client's retry */
		if (now_ms >= s->verify_deadline_ms) {
			deliver_verify_cancel(s->sv->deliver, s->verify);
			s->verify = NULL;
			verify_answer(s, SMTP_REPLY_RCPT_UNVERIFIED);
		}
		return;
	}
	if (s->awaiting_commit || now_ms < s->deadline_ms)
		return;
	if (s->want_close || s->is_closing) {
		/* Timed out again while trying to say goodbye: cut it. */
		close_now(s);
		return;
	}
	log_info("r%u s=%016llx smtp_server: timeout client=%s action=\"%s\"", s->sv->r.id,
		 (unsigned long long)s->id, s->peer_str, smtp_server_action(&s->srv));
	/* One more period to deliver the 421, then cut. */
	s->deadline_ms = now_ms + (int64_t)s->sv->conf->smtpd_timeout_ms;
	smtp_server_timeout(&s->srv);
	pump(s);
}

void session_shutdown(struct session *s)
{
	if (s->is_closing)
		return;
	smtp_server_shutdown(&s->srv);
	if (!s->awaiting_commit && !s->send_armed)
		pump(s);
}

void session_kill(struct session *s)
{
	if (s->awaiting_commit) {
		s->want_close = true;
		return;
	}
	close_now(s);
}
