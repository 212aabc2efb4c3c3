/*
 * control - queue administration in the running daemon: the control
 *           socket (main thread) and the per-reactor mailbox whose
 *           requests run against the reactor's spool shard. The design is
 *           at the top of include/ringmta/control.h.
 *
 * Owns: the listening socket and its file <spool_dir>/control; one client
 *       connection at a time; the requests (struct control_call, reference
 *       counted between the main thread and the reactors).
 * Must not: block a reactor (requests run in its wake hook and finish in
 *       the group commit's callback); trust the client (peer credentials
 *       checked, request size bounded, parsing strict, every wait timed);
 *       touch a shard from another thread than its reactor's.
 * Interface: include/ringmta/control.h
 * Limits: one client at a time; CONTROL_PROTO_MAX_REQUEST_BYTES per
 *         request; CONTROL_IO_TIMEOUT_MS per read and per write phase;
 *         CONTROL_REPLY_TIMEOUT_MS for the reactors' answer; one update
 *         array per request (at most SPOOL_MAX_RCPTS entries).
 * Errors: every failure becomes a reply kind (control_proto.h) and a log
 *         line; a request answered twice is our bug (rm_panic).
 * Standards: none (unix(7) SO_PEERCRED).
 */
#include "ringmta/control.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ringmta/control_proto.h"
#include "ringmta/deliver.h"
#include "ringmta/log.h"
#include "ringmta/reactor.h"
#include "ringmta/server.h"
#include "ringmta/spool.h"

/* CONTROL_BACKLOG - admins waiting to connect while one is served. */
#define CONTROL_BACKLOG 16
/* CONTROL_ACCEPT_PAUSE_MS - after EMFILE/ENFILE/ENOMEM from accept, so the
 * main thread does not spin on a socket that stays readable. */
#define CONTROL_ACCEPT_PAUSE_MS 100

struct control_call;

/* struct control_req - one request as one reactor carries it out. */
struct control_req {
	struct spool_owner owner;       /* the group commit calls req_done */
	struct control_req *next;       /* mailbox list, then the active list */
	struct control_call *call;
	struct control_proto_request rq;
	struct server *sv;              /* the reactor that took it */
	unsigned n_outstanding;         /* items in the group commit */
	unsigned n_changed;             /* messages changed (flush all) */
	size_t n_rcpts;                 /* recipients changed (one message) */
	bool is_issuing;                /* still queueing items: do not finish */
	bool is_answered;
	/* the outcome, final once answered */
	enum control_proto_status status;
	char text[CONTROL_TEXT_BYTES];
};

/* struct control_call - one client request, shared with the reactors. */
struct control_call {
	pthread_mutex_t mu;
	unsigned refs;                  /* the main thread + unanswered reqs */
	unsigned n_unanswered;
	int efd;                        /* written when n_unanswered drops to 0 */
	unsigned n_reqs;
	struct control_req reqs[];
};

struct control {
	int fd;
	dev_t dev;                      /* of the socket file we bound */
	ino_t ino;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- requests and their answers (any thread) ------------------------------ */

static void req_set(struct control_req *q, enum control_proto_status st,
		    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void req_set(struct control_req *q, enum control_proto_status st,
		    const char *fmt, ...)
{
	va_list ap;

	q->status = st;
	va_start(ap, fmt);
	vsnprintf(q->text, sizeof(q->text), fmt, ap);
	va_end(ap);
}

static void call_free(struct control_call *c)
{
	close(c->efd);
	pthread_mutex_destroy(&c->mu);
	free(c);
}


/* call_put - drop the main thread's reference. */
static void call_put(struct control_call *c)
{
	bool is_last;

	pthread_mutex_lock(&c->mu);
	is_last = --c->refs == 0;
	pthread_mutex_unlock(&c->mu);
	if (is_last)
		call_free(c);
}

/*
 * req_answer - q's outcome is final: tell the main thread (when it was the
 * last of the call) and drop q's reference. q may be freed on return.
 */
static void req_answer(struct control_req *q)
{
	struct control_call *c = q->call;
	uint64_t one = 1;
	bool is_last;

	if (q->is_answered)
		rm_panic("control: request answered twice");
	q->is_answered = true;
	pthread_mutex_lock(&c->mu);
	if (--c->n_unanswered == 0 && write(c->efd, &one, sizeof(one)) < 0)
		log_warn("control: eventfd write: %s", strerror(errno));
	is_last = --c->refs == 0;
	pthread_mutex_unlock(&c->mu);
	if (is_last)
		call_free(c);
}

/* ---- the mailbox ------------------------------------------------------------- */

void control_mailbox_init(struct control_mailbox *mb)
{
	memset(mb, 0, sizeof(*mb));
	pthread_mutex_init(&mb->mu, NULL);
}

/* mailbox_take - detach everything posted. */
static struct control_req *mailbox_take(struct control_mailbox *mb, bool do_close)
{
	struct control_req *l;

	pthread_mutex_lock(&mb->mu);
	l = mb->head;
	mb->head = mb->tail = NULL;
	if (do_close)
		mb->is_closed = true;
	pthread_mutex_unlock(&mb->mu);
	return l;
}

static void fail_list(struct control_req *l)
{
	struct control_req *q, *next;

	for (q = l; q != NULL; q = next) {
		next = q->next;
		q->next = NULL;
		req_set(q, CONTROL_PROTO_UNAVAILABLE, "the daemon is stopping");
		req_answer(q);
	}
}

void control_mailbox_close(struct control_mailbox *mb)
{
	struct control_req *active = mb->active;

	mb->active = NULL;
	fail_list(mailbox_take(mb, true));
	fail_list(active);
}

void control_mailbox_fini(struct control_mailbox *mb)
{
	control_mailbox_close(mb);
	pthread_mutex_destroy(&mb->mu);
}

/* post - hand q to sv's reactor (main thread). */
static void post(struct server *sv, struct control_req *q)
{
	struct control_mailbox *mb = &sv->mbox;

	pthread_mutex_lock(&mb->mu);
	if (mb->is_closed) {
		pthread_mutex_unlock(&mb->mu);
		req_set(q, CONTROL_PROTO_UNAVAILABLE, "reactor %u has stopped", sv->r.id);
		req_answer(q);
		return;
	}
	if (mb->tail != NULL)
		mb->tail->next = q;
	else
		mb->head = q;
	mb->tail = q;
	pthread_mutex_unlock(&mb->mu);
	reactor_wake(&sv->r);
}

/* ---- carrying requests out (reactor thread) ------------------------------------ */

static void active_remove(struct control_mailbox *mb, struct control_req *q)
{
	for (struct control_req **pp = &mb->active; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == q) {
			*pp = q->next;
			q->next = NULL;
			return;
		}
	}
}

/* req_finish - answer q once nothing of it is left in the group commit. */
static void req_finish(struct control_req *q)
{
	struct server *sv = q->sv;
	enum control_proto_cmd cmd = q->rq.cmd;

	if (q->is_issuing || q->n_outstanding > 0)
		return;
	active_remove(&sv->mbox, q);
	if (q->status == CONTROL_PROTO_OK &&
	    (cmd == CONTROL_PROTO_RELEASE || cmd == CONTROL_PROTO_FLUSH ||
	     cmd == CONTROL_PROTO_FLUSH_ALL))
		deliver_kick(sv->deliver);
	if (cmd == CONTROL_PROTO_FLUSH_ALL)
		log_info("r%u control: flush result=%s messages=%u", sv->r.id,
			 control_proto_status_name(q->status), q->n_changed);
	else if (cmd == CONTROL_PROTO_DELETE && q->status == CONTROL_PROTO_OK)
		log_info("r%u q=%s control: deleted by the administrator, no bounce",
			 sv->r.id, q->rq.id);
	else
		log_info("r%u q=%s control: %s result=%s rcpts=%zu", sv->r.id, q->rq.id,
			 control_proto_cmd_name(cmd), control_proto_status_name(q->status),
			 q->n_rcpts);
	req_answer(q);
}

/* req_done - the group commit's answer for one item of q. */
static void req_done(struct spool_owner *o, const char *queue_id, int status)
{
	struct control_req *q = (struct control_req *)((char *)o - offsetof(struct control_req, owner));

	deliver_unpin(q->sv->deliver, queue_id);
	q->n_outstanding--;
	if (status == 0)
		q->n_changed++;
	else if (status == -ENOENT && q->rq.cmd == CONTROL_PROTO_FLUSH_ALL)
		;       /* removed meanwhile: nothing left to flush */
	else if (status == -ENOENT && q->status == CONTROL_PROTO_OK)
		req_set(q, CONTROL_PROTO_NOT_FOUND, "%s: no such message (removed meanwhile)",
			queue_id);
	else if (q->status == CONTROL_PROTO_OK)
		req_set(q, CONTROL_PROTO_FAILED, "%s: spool: %s", queue_id,
			spool_strerror(status));
	if (status < 0 && status != -ENOENT)
		log_warn("r%u q=%s control: %s: commit failed: %s", q->sv->r.id, queue_id,
			 control_proto_cmd_name(q->rq.cmd), spool_strerror(status));
	req_finish(q);
}

/*
 * struct plan - the recipient updates one command makes to one message,
 * and what the message looked like.
 */
struct plan {
	enum control_proto_cmd cmd;
	int64_t now;
	struct spool_rcpt_update *u;
	size_t n_u, cap_u;
	size_t n_rcpts, n_pending, n_held;
	unsigned shard;                 /* flush all: only this shard's */
	bool is_skipped;                /* flush all: not ours */
};

/* plan_entry - fill p with the updates cmd makes to e (PENDING only). */
static int plan_entry(void *arg, const struct spool_entry *e)
{
	struct plan *p = arg;

	p->n_u = p->n_pending = p->n_held = 0;
	p->n_rcpts = e->n_rcpts;
	if (e->n_rcpts > p->cap_u) {
		struct spool_rcpt_update *u = realloc(p->u, e->n_rcpts * sizeof(*u));
		if (u == NULL)
			return -ENOMEM;
		p->u = u;
		p->cap_u = e->n_rcpts;
	}
	for (size_t i = 0; i < e->n_rcpts; i++) {
		const struct spool_rcpt_entry *r = &e->rcpts[i];
		bool is_held = r->next_attempt_unix == SPOOL_HELD_UNIX;
		int64_t next;

		if (r->state != SPOOL_RCPT_PENDING)
			continue;
		p->n_pending++;
		p->n_held += is_held;
		if (p->cmd == CONTROL_PROTO_HOLD && !is_held)
			next = SPOOL_HELD_UNIX;
		else if (p->cmd == CONTROL_PROTO_RELEASE && is_held)
			next = p->now;
		else if ((p->cmd == CONTROL_PROTO_FLUSH || p->cmd == CONTROL_PROTO_FLUSH_ALL) &&
			 !is_held && r->next_attempt_unix > p->now)
			next = p->now;
		else
			continue;
		p->u[p->n_u].rcpt = (uint32_t)i;
		p->u[p->n_u].state = SPOOL_RCPT_PENDING;
		p->u[p->n_u].attempts = r->attempts;
		p->u[p->n_u].next_attempt_unix = next;
		p->u[p->n_u].flags = r->flags;
		p->n_u++;
	}
	return 0;
}

/*
 * check_message - whether cmd has anything to do on a message planned in
 * p; when not, q gets the answer (an error, or "nothing to do" ok).
 */
static bool check_message(struct control_req *q, const struct plan *p, bool is_busy)
{
	const char *id = q->rq.id;

	switch (q->rq.cmd) {
	case CONTROL_PROTO_FLUSH:
		if (is_busy)
			req_set(q, CONTROL_PROTO_OK, "%s is being delivered now", id);
		else if (p->n_pending == 0)
			req_set(q, CONTROL_PROTO_WRONG_STATE, "%s has no pending recipients", id);
		else if (p->n_held == p->n_pending)
			req_set(q, CONTROL_PROTO_WRONG_STATE, "%s is held; release it first", id);
		else if (p->n_u == 0)
			req_set(q, CONTROL_PROTO_OK, "%s is due already", id);
		return !is_busy && p->n_u > 0;
	case CONTROL_PROTO_HOLD:
	case CONTROL_PROTO_RELEASE:
	case CONTROL_PROTO_DELETE:
		if (is_busy) {
			req_set(q, CONTROL_PROTO_BUSY, "%s is being delivered right now; "
				"try again in a moment", id);
			return false;
		}
		if (q->rq.cmd == CONTROL_PROTO_DELETE)
			return true;
		if (p->n_pending == 0) {
			req_set(q, CONTROL_PROTO_WRONG_STATE, "%s has no pending recipients", id);
			return false;
		}
		if (q->rq.cmd == CONTROL_PROTO_HOLD && p->n_u == 0)
			req_set(q, CONTROL_PROTO_OK, "%s is held already", id);
		else if (q->rq.cmd == CONTROL_PROTO_RELEASE && p->n_u == 0)
			req_set(q, CONTROL_PROTO_WRONG_STATE, "%s is not held", id);
		return p->n_u > 0;
	default:
		rm_panic("control: command %d on one message", q->rq.cmd);
	}
}

/* run_message - hold, release, delete or flush one message of this shard. */
static void run_message(struct server *sv, struct control_req *q, struct plan *p)
{
	struct rm_err err = { 0, "" };
	const char *id = q->rq.id;
	int rc;

	if (spool_id_shard(id) != (int)sv->r.id) {
		req_set(q, CONTROL_PROTO_FAILED, "%s: routed to reactor %u by mistake", id, sv->r.id);
		return;
	}
	rc = spool_get(sv->spool, id, plan_entry, p, &err);
	if (rc == -ENOENT) {
		req_set(q, CONTROL_PROTO_NOT_FOUND, "%s: no such message", id);
		return;
	}
	if (rc < 0) {
		req_set(q, CONTROL_PROTO_FAILED, "%s: %s", id, err.msg[0] ? err.msg : spool_strerror(rc));
		return;
	}
	if (!check_message(q, p, deliver_is_busy(sv->deliver, id)))
		return;
	/* pinned until the commit: a queue scan that still sees the old
	 * state must not start the message and overwrite the change */
	if (!deliver_pin(sv->deliver, id)) {
		check_message(q, p, true);
		return;
	}
	if (q->rq.cmd == CONTROL_PROTO_DELETE)
		rc = spool_shard_done(sv->shard, id, &q->owner, &err);
	else
		rc = spool_shard_update(sv->shard, id, p->u, p->n_u, &q->owner, &err);
	if (rc < 0)
		deliver_unpin(sv->deliver, id);
	if (rc == -ENOENT) {
		req_set(q, CONTROL_PROTO_NOT_FOUND, "%s: no such message", id);
		return;
	}
	if (rc < 0) {
		log_warn("r%u q=%s control: %s: %s", sv->r.id, id,
			 control_proto_cmd_name(q->rq.cmd), err.msg);
		req_set(q, CONTROL_PROTO_FAILED, "%s: %s", id, err.msg);
		return;
	}
	q->n_outstanding++;
	q->n_rcpts = p->n_u;
	switch (q->rq.cmd) {
	case CONTROL_PROTO_HOLD:
		req_set(q, CONTROL_PROTO_OK, "held %s: %zu recipient(s)", id, p->n_u);
		break;
	case CONTROL_PROTO_RELEASE:
		req_set(q, CONTROL_PROTO_OK, "released %s: %zu recipient(s) due now", id, p->n_u);
		break;
	case CONTROL_PROTO_FLUSH:
		req_set(q, CONTROL_PROTO_OK, "flushed %s: %zu recipient(s) due now", id, p->n_u);
		break;
	default:
		q->n_rcpts = p->n_pending;
		req_set(q, CONTROL_PROTO_OK, "deleted %s (%zu pending recipient(s), no bounce)",
			id, p->n_pending);
	}
}

/* struct flush_all - the state of one "flush" walk over the index. */
struct flush_all {
	struct server *sv;
	struct control_req *q;
	struct plan *p;
};

/* flush_entry - spool_list callback: make this shard's message e due now. */
static int flush_entry(void *arg, const struct spool_entry *e)
{
	struct flush_all *f = arg;
	struct rm_err err = { 0, "" };
	int rc;

	if (e->shard != f->sv->r.id || deliver_is_busy(f->sv->deliver, e->id))
		return 0;
	if ((rc = plan_entry(f->p, e)) < 0) {
		req_set(f->q, CONTROL_PROTO_FAILED, "flush: out of memory");
		return rc;
	}
	if (f->p->n_u == 0)
		return 0;
	if (!deliver_pin(f->sv->deliver, e->id))
		return 0;
	rc = spool_shard_update(f->sv->shard, e->id, f->p->u, f->p->n_u, &f->q->owner, &err);
	if (rc < 0)
		deliver_unpin(f->sv->deliver, e->id);
	if (rc == -ENOENT)
		return 0;       /* gone in between (the snapshot is older) */
	if (rc < 0) {
		log_warn("r%u q=%s control: flush: %s", f->sv->r.id, e->id, err.msg);
		req_set(f->q, CONTROL_PROTO_FAILED, "flush: %s", err.msg);
		return rc;
	}
	f->q->n_outstanding++;
	return 0;
}

static void run_flush_all(struct server *sv, struct control_req *q, struct plan *p)
{
	struct flush_all f = { sv, q, p };
	struct rm_err err = { 0, "" };
	int rc;

	req_set(q, CONTROL_PROTO_OK, "flushed");
	rc = spool_list(sv->spool, flush_entry, &f, &err);
	if (rc < 0 && q->status == CONTROL_PROTO_OK) {
		log_warn("r%u control: flush: %s", sv->r.id, err.msg);
		req_set(q, CONTROL_PROTO_FAILED, "flush: %s", err.msg[0] ? err.msg : spool_strerror(rc));
	}
}

/* req_start - carry q out on sv's shard; it finishes now or at the commit. */
static void req_start(struct server *sv, struct control_req *q)
{
	struct plan p;

	memset(&p, 0, sizeof(p));
	p.cmd = q->rq.cmd;
	p.now = (int64_t)time(NULL);
	q->sv = sv;
	q->next = sv->mbox.active;
	sv->mbox.active = q;
	q->is_issuing = true;
	if (q->rq.cmd == CONTROL_PROTO_FLUSH_ALL)
		run_flush_all(sv, q, &p);
	else
		run_message(sv, q, &p);
	free(p.u);
	q->is_issuing = false;
	req_finish(q);
}

void control_run(struct server *sv)
{
	struct control_req *q, *next;

	for (q = mailbox_take(&sv->mbox, false); q != NULL; q = next) {
		next = q->next;
		q->next = NULL;
		req_start(sv, q);
	}
}

/* ---- the socket (main thread) ------------------------------------------------------- */

int control_socket_path(char *out, size_t cap, const char *spool_dir)
{
	size_t sun_cap = sizeof(((struct sockaddr_un *)0)->sun_path);
	int n = snprintf(out, cap, "%s/%s", spool_dir, CONTROL_SOCKET_NAME);

	if (n < 0 || (size_t)n >= cap || (size_t)n >= sun_cap)
		return -ENAMETOOLONG;
	return 0;
}

static int open_fail(struct control *c, int fd, struct rm_err *err, const char *call)
{
	int code = -errno;

	rm_err_set(err, code, "control: %s %s: %s", call, c->path, strerror(-code));
	if (fd >= 0)
		close(fd);
	free(c);
	return code;
}

int control_open(struct control **out, const char *spool_dir, int uid, int gid,
		 struct rm_err *err)
{
	struct control *c = calloc(1, sizeof(*c));
	struct sockaddr_un sa;
	struct stat st;
	mode_t old;
	int fd, rc;

	if (c == NULL)
		return rm_err_set(err, -ENOMEM, "control: out of memory");
	if (control_socket_path(c->path, sizeof(c->path), spool_dir) < 0) {
		free(c);
		return rm_err_set(err, -ENAMETOOLONG, "control: %s/%s: path too long for a "
				  "unix socket", spool_dir, CONTROL_SOCKET_NAME);
	}
	/* The spool's flock keeps a second daemon out, so whatever socket is
	 * here was left by a crash. Anything else is not ours to remove. */
	if (lstat(c->path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			rm_err_set(err, -EEXIST, "control: %s exists and is not a socket; "
				   "remove it", c->path);
			free(c);
			return -EEXIST;
		}
		if (unlink(c->path) < 0)
			return open_fail(c, -1, err, "unlink");
	} else if (errno != ENOENT) {
		return open_fail(c, -1, err, "lstat");
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return open_fail(c, -1, err, "socket");
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
	old = umask(0177);      /* created 0600: no window with a wider mode */
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc < 0)
		return open_fail(c, fd, err, "bind");
	if (((uid != -1 || gid != -1) && lchown(c->path, (uid_t)uid, (gid_t)gid) < 0) ||
	    lstat(c->path, &st) < 0 || listen(fd, CONTROL_BACKLOG) < 0) {
		int e = errno;
		unlink(c->path);
		errno = e;
		return open_fail(c, fd, err, "set up");
	}
	c->fd = fd;
	c->dev = st.st_dev;
	c->ino = st.st_ino;
	*out = c;
	return 0;
}

int control_fd(const struct control *c)
{
	return c->fd;
}

void control_close(struct control *c)
{
	struct stat st;

	if (c == NULL)
		return;
	close(c->fd);
	if (lstat(c->path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == c->dev &&
	    st.st_ino == c->ino && unlink(c->path) < 0)
		log_info("main control: unlink %s: %s (the next start replaces it)",
			 c->path, strerror(errno));
	free(c);
}

/*
 * wait_fd - poll fd for events until deadline_ms (CLOCK_MONOTONIC), or
 * until sig_fd is readable. Returns 1 (ready), 0 (timed out), -1 (signal).
 */
static int wait_fd(int fd, short events, int sig_fd, int64_t deadline_ms)
{
	for (;;) {
		struct pollfd p[2] = { { fd, events, 0 }, { sig_fd, POLLIN, 0 } };
		int64_t left = deadline_ms - mono_ms();
		int n;

		if (left <= 0)
			return 0;
		n = poll(p, sig_fd >= 0 ? 2 : 1, (int)left);
		if (n < 0 && errno != EINTR)
			return 0;
		if (n <= 0)
			continue;
		if (p[1].revents & POLLIN)
			return -1;
		if (p[0].revents)
			return 1;
	}
}

/* send_reply - write the reply within CONTROL_IO_TIMEOUT_MS; best effort. */
static void send_reply(int fd, enum control_proto_status st, const char *text, int sig_fd)
{
	char buf[CONTROL_PROTO_MAX_REPLY_BYTES];
	size_t len = control_proto_reply_format(buf, sizeof(buf), st, text), off = 0;
	int64_t deadline = mono_ms() + CONTROL_IO_TIMEOUT_MS;

	while (off < len) {
		ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) ||
		    wait_fd(fd, POLLOUT, sig_fd, deadline) <= 0)
			return;
	}
}

/* call_new - a call for n reqs; the main thread holds one reference. */
static struct control_call *call_new(unsigned n, const struct control_proto_request *rq)
{
	struct control_call *c = calloc(1, sizeof(*c) + n * sizeof(c->reqs[0]));

	if (c == NULL)
		return NULL;
	c->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->efd < 0) {
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->mu, NULL);
	c->refs = n + 1;
	c->n_unanswered = n;
	c->n_reqs = n;
	for (unsigned i = 0; i < n; i++) {
		c->reqs[i].owner.done = req_done;
		c->reqs[i].call = c;
		c->reqs[i].rq = *rq;
	}
	return c;
}

/* collect - the answer of a finished call into *text. */
static enum control_proto_status collect(const struct control_call *c,
					 const struct control_proto_request *rq,
					 char *text, size_t cap)
{
	unsigned long total = 0;

	if (rq->cmd != CONTROL_PROTO_FLUSH_ALL) {
		snprintf(text, cap, "%s", c->reqs[0].text);
		return c->reqs[0].status;
	}
	for (unsigned i = 0; i < c->n_reqs; i++) {
		if (c->reqs[i].status != CONTROL_PROTO_OK) {
			snprintf(text, cap, "reactor %u: %s", i, c->reqs[i].text);
			return c->reqs[i].status;
		}
		total += c->reqs[i].n_changed;
	}
	snprintf(text, cap, "flushed: %lu message(s) due now", total);
	return CONTROL_PROTO_OK;
}

/* route - carry rq out on the reactor(s) concerned and wait for them. */
static enum control_proto_status route(struct server *servers, unsigned n_servers,
				       const struct control_proto_request *rq, int sig_fd,
				       char *text, size_t cap)
{
	unsigned first = 0, n = n_servers;
	enum control_proto_status st;
	struct control_call *c;
	bool is_done;
	int rc;

	if (rq->cmd != CONTROL_PROTO_FLUSH_ALL) {
		int shard = spool_id_shard(rq->id);
		if (shard < 0 || (unsigned)shard >= n_servers) {
			snprintf(text, cap, "%s belongs to spool shard %d, but only %u reactors "
				 "run: raise the reactor count to change it", rq->id, shard,
				 n_servers);
			return CONTROL_PROTO_UNAVAILABLE;
		}
		first = (unsigned)shard;
		n = 1;
	}
	if ((c = call_new(n, rq)) == NULL) {
		snprintf(text, cap, "out of memory");
		return CONTROL_PROTO_FAILED;
	}
	for (unsigned i = 0; i < n; i++)
		post(&servers[first + i], &c->reqs[i]);
	rc = wait_fd(c->efd, POLLIN, sig_fd, mono_ms() + CONTROL_REPLY_TIMEOUT_MS);
	pthread_mutex_lock(&c->mu);
	is_done = c->n_unanswered == 0;
	pthread_mutex_unlock(&c->mu);
	if (is_done) {
		st = collect(c, rq, text, cap);
	} else {
		st = CONTROL_PROTO_UNAVAILABLE;
		snprintf(text, cap, rc < 0 ? "the daemon is stopping" :
			 "no answer from the reactors within %d ms; the command may "
			 "still take effect (see queue list)", CONTROL_REPLY_TIMEOUT_MS);
	}
	call_put(c);
	return st;
}

/*
 * read_request - read and parse one request within CONTROL_IO_TIMEOUT_MS.
 * Returns 1 (parsed into *rq), 0 (the client is gone, timed out or a
 * signal came: no reply), or a negative enum control_proto_error.
 */
static int read_request(int fd, int sig_fd, struct control_proto_request *rq)
{
	char buf[CONTROL_PROTO_MAX_REQUEST_BYTES];
	int64_t deadline = mono_ms() + CONTROL_IO_TIMEOUT_MS;
	size_t len = 0;

	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);
		int rc;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if ((rc = wait_fd(fd, POLLIN, sig_fd, deadline)) <= 0) {
				if (rc == 0)
					log_info("main control: client sent no request within %d ms",
						 CONTROL_IO_TIMEOUT_MS);
				return 0;
			}
			continue;
		}
		if (n <= 0)
			return 0;
		len += (size_t)n;
		rc = control_proto_request_parse(buf, len, rq);
		if (rc != 0)
			return rc > 0 ? 1 : rc;
	}
}

void control_serve(struct control *c, struct server *servers, unsigned n_servers,
		   int sig_fd)
{
	struct control_proto_request rq;
	enum control_proto_status st;
	char text[CONTROL_TEXT_BYTES + 64];
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	int fd, rc;

	fd = accept4(c->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
			log_warn("main control: accept: %s", strerror(errno));
			nanosleep(&(struct timespec){ 0, CONTROL_ACCEPT_PAUSE_MS * 1000000L }, NULL);
		}
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 ||
	    (cred.uid != 0 && cred.uid != geteuid())) {
		/* Take (and ignore) the request first, so the client is not
		 * reset before it can read why. */
		(void)read_request(fd, sig_fd, &rq);
		log_warn("main control: refused client uid=%ld pid=%ld: only root and uid %ld "
			 "may administer the queue", cl == sizeof(cred) ? (long)cred.uid : -1L,
			 cl == sizeof(cred) ? (long)cred.pid : -1L, (long)geteuid());
		send_reply(fd, CONTROL_PROTO_DENIED, "permission denied: only root and the "
			   "daemon's user may administer the queue", sig_fd);
		close(fd);
		return;
	}
	rc = read_request(fd, sig_fd, &rq);
	if (rc < 0) {
		log_info("main control: bad request uid=%ld reason=\"%s\"", (long)cred.uid,
			 control_proto_strerror(rc));
		send_reply(fd, CONTROL_PROTO_BAD_REQUEST, control_proto_strerror(rc), sig_fd);
	} else if (rc > 0) {
		st = route(servers, n_servers, &rq, sig_fd, text, sizeof(text));
		log_info("main control: %s%s%s uid=%ld result=%s", control_proto_cmd_name(rq.cmd),
			 rq.id[0] ? " q=" : "", rq.id, (long)cred.uid,
			 control_proto_status_name(st));
		send_reply(fd, st, text, sig_fd);
	}
	close(fd);
}
