/*
 * server - the daemon on one reactor: accept, the session list, shutdown,
 *          and the group commit of the reactor's spool shard.
 *
 * Owns: the reactor's listening sockets, its session list (sessions free
 *       themselves; the list is how shutdown and the tick reach them), its
 *       spool shard, the one fsync in flight and the timer that paces
 *       the next (fsync_rate_limit, shared by all reactors), its admin
 *       mailbox (drained in the wake hook by control.c).
 * Must not: parse SMTP (smtp_server) or touch another reactor's state.
 * Interface: include/ringmta/server.h
 * Limits: connections via net_conn_acquire (max_connections,
 *         max_connections_per_ip); one fsync in flight; shutdown grace
 *         SERVER_SHUTDOWN_GRACE_MS.
 * Errors: a failed accept is logged and re-armed; a failed fsync fails the
 *         batch (452 4.3.1 to its sessions) and the spool moves to a new
 *         segment; the reactor keeps serving.
 */
#include "ringmta/server.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringmta/control.h"
#include "ringmta/deliver.h"
#include "ringmta/log.h"
#include "ringmta/session.h"

static void arm_accept(struct server *sv, struct server_listener *l)
{
	struct io_uring_sqe *sqe = reactor_sqe(&sv->r);

	io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	reactor_sqe_tag(sqe, l, SERVER_OP_ACCEPT);
	l->is_armed = true;
}

static void on_accept(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	struct server *sv = server_of(r);
	struct server_listener *l = obj;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = cqe->res;

	if (!(cqe->flags & IORING_CQE_F_MORE))
		l->is_armed = false;
	if (fd >= 0) {
		if (r->is_stopping || getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
			close(fd);
		else
			session_accept(sv, fd, (struct sockaddr *)&ss, sl);
	} else if (fd != -ECANCELED && fd != -EAGAIN && fd != -ECONNABORTED && fd != -EINTR) {
		/* Out of fds or memory: the connection stays in the backlog,
		 * so re-arming now would fail again at once and spin. Pause
		 * the listener; the next tick re-arms it. */
		if (!l->is_paused)
			log_warn("r%u server: accept: %s; pausing the listener for a tick",
				 r->id, strerror(-fd));
		l->is_paused = true;
	}
	if (l->is_armed)
		return;
	if (r->is_stopping) {
		if (l->fd >= 0) {
			close(l->fd);
			l->fd = -1;
		}
	} else if (!l->is_paused) {
		arm_accept(sv, l);
	}
}

/*
 * next_sync_ns - fsync_rate_limit over the whole process: the earliest
 * time the next fsync of any reactor may start. Each reactor reserves a
 * slot (a start time, then moves this on by one spacing) and waits for
 * it, so the disk sees at most fsync_rate_limit flushes a second however
 * many reactors there are.
 */
static _Atomic int64_t next_sync_ns;

/* sync_reserve - a start slot for this reactor's next fsync. */
static int64_t sync_reserve(int64_t now, int64_t spacing)
{
	int64_t cur = atomic_load_explicit(&next_sync_ns, memory_order_relaxed);
	int64_t slot;

	do
		slot = cur > now ? cur : now;
	while (!atomic_compare_exchange_weak_explicit(&next_sync_ns, &cur, slot + spacing,
						      memory_order_relaxed,
						      memory_order_relaxed));
	return slot;
}

/*
 * sync_must_wait - true while this reactor's batch waits for its fsync
 * slot (a timer ends the wait; loop_end then starts the fsync).
 */
static bool sync_must_wait(struct server *sv)
{
	struct io_uring_sqe *sqe;
	int64_t now, wait;

	if (!sv->is_durable || sv->sync_spacing_ns == 0)
		return false;
	if (sv->is_sync_timer_armed)
		return true;
	if (!spool_shard_sync_wanted(sv->shard))
		return false;
	now = reactor_clock_ns();
	if (sv->sync_slot_ns == 0)
		sv->sync_slot_ns = sync_reserve(now, sv->sync_spacing_ns);
	wait = sv->sync_slot_ns - now;
	if (wait <= 0) {
		sv->sync_slot_ns = 0;	/* used now */
		return false;
	}
	sqe = reactor_sqe(&sv->r);
	sv->sync_wait.tv_sec = wait / 1000000000;
	sv->sync_wait.tv_nsec = wait % 1000000000;
	io_uring_prep_timeout(sqe, &sv->sync_wait, 0, 0);
	reactor_sqe_tag(sqe, sv->anchor, SERVER_OP_SYNC_TIMER);
	sv->is_sync_timer_armed = true;
	return true;
}

/* loop_end - start the fsync for everything completed since the last. */
static void loop_end(struct reactor *r)
{
	struct server *sv = server_of(r);
	struct rm_err err = { 0, "" };
	int fd;

	deliver_loop_end(sv->deliver);
	while (!sv->is_fsync_inflight && !sync_must_wait(sv)) {
		fd = spool_shard_sync_begin(sv->shard);
		if (fd < 0)
			return;
		if (!sv->is_durable) {
			/* durability = none: the relaxed benchmark mode, no fsync. */
			spool_shard_sync_end(sv->shard, 0, spool_owner_done, &err);
			continue;
		}
		struct io_uring_sqe *sqe = reactor_sqe(r);
		io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
		reactor_sqe_tag(sqe, sv->anchor, SERVER_OP_FSYNC);
		sv->is_fsync_inflight = true;
	}
}

static void on_fsync(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	struct server *sv = server_of(r);
	struct rm_err err = { 0, "" };

	(void)obj;
	sv->is_fsync_inflight = false;
	if (cqe->res < 0)
		log_warn("r%u spool: fdatasync: %s", r->id, strerror(-cqe->res));
	spool_shard_sync_end(sv->shard, cqe->res, spool_owner_done, &err);
	if (err.code < 0)
		log_warn("r%u %s", r->id, err.msg);
}

/* on_sync_timer - the fsync slot has come: loop_end starts the fsync. */
static void on_sync_timer(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	(void)obj;
	(void)cqe;
	server_of(r)->is_sync_timer_armed = false;
}

static void on_recv(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	(void)r;
	session_on_recv(obj, cqe->res, cqe->flags);
}

static void on_send(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	(void)r;
	session_on_send(obj, cqe->res);
}

static int start(struct reactor *r)
{
	struct server *sv = server_of(r);

	for (unsigned i = 0; i < sv->n_listeners; i++)
		arm_accept(sv, &sv->listeners[i]);
	log_info("r%u server: started listeners=%u", r->id, sv->n_listeners);
	return 0;
}

/* stop - SIGTERM: stop accepting, 421 every session at its next boundary. */
static void stop(struct reactor *r)
{
	struct server *sv = server_of(r);
	struct session *s, *next;

	sv->stop_deadline_ms = r->now_ms + SERVER_SHUTDOWN_GRACE_MS;
	for (unsigned i = 0; i < sv->n_listeners; i++) {
		struct server_listener *l = &sv->listeners[i];
		if (l->is_armed) {
			struct io_uring_sqe *sqe = reactor_sqe(r);
			io_uring_prep_cancel64(sqe, reactor_tag(l, SERVER_OP_ACCEPT), 0);
			reactor_sqe_tag(sqe, sv->anchor, REACTOR_OP_IGNORE);
		} else if (l->fd >= 0) {
			close(l->fd);
			l->fd = -1;
		}
	}
	for (s = sv->sessions; s != NULL; s = next) {
		next = session_list_next(s);
		session_shutdown(s);
	}
	deliver_stop(sv->deliver);
}

static bool is_done(struct reactor *r)
{
	struct server *sv = server_of(r);

	for (unsigned i = 0; i < sv->n_listeners; i++)
		if (sv->listeners[i].fd >= 0)
			return false;   /* its accept's cancel has not completed */
	return sv->n_sessions == 0 && !sv->is_fsync_inflight &&
	       !sv->is_sync_timer_armed &&
	       deliver_is_done(sv->deliver);
}

static void buf_free(struct reactor *r);

static void tick(struct reactor *r)
{
	struct server *sv = server_of(r);
	struct session *s, *next;
	bool cut = r->is_stopping && r->now_ms >= sv->stop_deadline_ms;

	if (r->now_ms >= sv->next_sweep_ms) {
		struct rm_err err = { 0, "" };
		sv->next_sweep_ms = r->now_ms + (int64_t)sv->conf->spool_sweep_interval_ms;
		uint64_t moved = spool_shard_n_moved(sv->shard);
		int n = spool_shard_sweep(sv->shard, &err);
		if (n < 0)
			log_warn("r%u %s", r->id, err.msg);
		else if (n > 0 || moved != sv->n_moved_logged)
			log_info("r%u spool: sweep removed=%d moved_total=%" PRIu64, r->id, n, moved);
		sv->n_moved_logged = moved;
	}

	for (unsigned i = 0; i < sv->n_listeners && !r->is_stopping; i++) {
		struct server_listener *l = &sv->listeners[i];
		if (l->is_paused && !l->is_armed && l->fd >= 0) {
			l->is_paused = false;
			arm_accept(sv, l);
		}
	}
	/* Safety net for parked sessions: a buffer freed in the same batch
	 * as their -ENOBUFS completion woke nobody. */
	while (sv->starved != NULL)
		buf_free(r);
	for (s = sv->sessions; s != NULL; s = next) {
		next = session_list_next(s);
		if (cut)
			session_kill(s);
		else
			session_tick(s, r->now_ms);
	}
	deliver_tick(sv->deliver);
}

static void buf_free(struct reactor *r)
{
	struct server *sv = server_of(r);
	struct session *s = sv->starved;

	/* A session parked on -ENOBUFS gets this buffer. */
	if (s != NULL) {
		sv->starved = *session_starved_link(s);
		*session_starved_link(s) = NULL;
		session_wake(s);
	}
}

/* wake - the main thread posted admin requests (control.c). */
static void wake(struct reactor *r)
{
	control_run(server_of(r));
}

static void finish(struct reactor *r)
{
	struct server *sv = server_of(r);

	control_mailbox_close(&sv->mbox);   /* before the shard drops their items */

	for (unsigned i = 0; i < sv->n_listeners; i++) {
		if (sv->listeners[i].fd >= 0) {
			close(sv->listeners[i].fd);
			sv->listeners[i].fd = -1;
		}
	}
	spool_shard_close(sv->shard);
	sv->shard = NULL;
	log_info("r%u server: stopped", r->id);
}

static const struct reactor_hooks server_hooks = {
	.start = start,
	.loop_end = loop_end,
	.tick = tick,
	.stop = stop,
	.is_done = is_done,
	.finish = finish,
	.buf_free = buf_free,
	.wake = wake,
};

int server_init(struct server *sv, unsigned id, const struct conf *conf,
		struct spool *sp, const int *listen_fds,
		const enum conf_listen_role *roles, unsigned n_listen,
		struct rm_err *err)
{
	struct reactor_opts o;
	int rc;

	memset(sv, 0, sizeof(*sv));
	control_mailbox_init(&sv->mbox);
	memset(&o, 0, sizeof(o));
	o.id = id;
	o.hooks = &server_hooks;
	o.ctx = sv;
	rc = reactor_init(&sv->r, &o, err);
	if (rc < 0)
		return rc;
	reactor_on(&sv->r, SERVER_OP_ACCEPT, on_accept);
	reactor_on(&sv->r, SERVER_OP_RECV, on_recv);
	reactor_on(&sv->r, SERVER_OP_SEND, on_send);
	reactor_on(&sv->r, SERVER_OP_FSYNC, on_fsync);
	reactor_on(&sv->r, SERVER_OP_SYNC_TIMER, on_sync_timer);
	sv->conf = conf;
	sv->is_durable = conf->durability == CONF_DURABILITY_BATCH;
	sv->sync_spacing_ns = conf->fsync_rate_limit ?
		1000000000 / (int64_t)conf->fsync_rate_limit : 0;
	sv->listeners = aligned_alloc(16, sizeof(*sv->listeners) * (n_listen ? n_listen : 1));
	if (sv->listeners == NULL)
		return rm_err_set(err, -ENOMEM, "server %u: out of memory", id);
	for (unsigned i = 0; i < n_listen; i++) {
		sv->listeners[i].fd = listen_fds[i];
		sv->listeners[i].role = roles[i];
		sv->listeners[i].is_armed = false;
		sv->listeners[i].is_paused = false;
	}
	sv->n_listeners = n_listen;
	sv->spool = sp;
	rc = spool_shard_open(sp, id, &sv->shard, err);
	if (rc < 0)
		return rc;
	return deliver_new(&sv->deliver, sv, err);
}

void server_fini(struct server *sv)
{
	/* A reactor that failed before its loop never ran finish(). */
	control_mailbox_fini(&sv->mbox);
	spool_shard_close(sv->shard);
	sv->shard = NULL;
	deliver_free(sv->deliver);
	sv->deliver = NULL;
	for (unsigned i = 0; i < sv->n_listeners; i++)
		if (sv->listeners[i].fd >= 0)
			close(sv->listeners[i].fd);
	free(sv->listeners);
	sv->listeners = NULL;
}
