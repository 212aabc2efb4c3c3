/*
 * reactor - one io_uring event loop per core: accept, receive, send, timers
 *           and the group-commit fsync, dispatched by tagged user_data.
 *
 * Owns: the ring, the provided-buffer ring and its 4 MiB of buffers, the
 *       listening sockets handed to it, its session list, its spool shard.
 * Must not: touch another reactor's state; block (the only synchronous
 *       syscalls on the loop are getpeername/close per connection and the
 *       page-cache pwrite of spool records).
 * Interface: include/ringmta/reactor.h
 * Limits: REACTOR_N_BUFS receive buffers; sessions are bounded by
 *         max_connections (net.h); one fsync in flight per reactor.
 * Errors: set-up failures return -errno with an rm_err line; per-operation
 *         failures are handled by the owner of the operation (a session is
 *         closed, an accept is re-armed, -ENOBUFS parks the session).
 */
#include "ringmta/reactor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ringmta/log.h"
#include "ringmta/session.h"

#define REACTOR_SQ_ENTRIES 1024
#define REACTOR_CQ_ENTRIES 16384
#define REACTOR_BGID 0

static inline uint64_t tag(const void *p, enum reactor_op op)
{
	return (uint64_t)(uintptr_t)p | (uint64_t)op;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int reactor_probe(struct rm_err *err)
{
	struct io_uring ring;
	int rc = io_uring_queue_init(4, &ring, 0);

	if (rc == 0) {
		io_uring_queue_exit(&ring);
		return 0;
	}
	switch (-rc) {
	case ENOSYS:
		return rm_err_set(err, rc, "io_uring is not available: this kernel "
			"lacks io_uring_setup (ringmta needs Linux >= 6.0); boot a newer kernel");
	case EPERM:
	case EACCES:
		return rm_err_set(err, rc, "io_uring is not permitted: set sysctl "
			"kernel.io_uring_disabled=0 (or put ringmta's group in kernel.io_uring_group), "
			"or run the container with a seccomp profile that allows io_uring_setup/io_uring_enter");
	case ENOMEM:
		return rm_err_set(err, rc, "io_uring: not enough locked memory for the "
			"ring: raise the memlock limit (ulimit -l, systemd LimitMEMLOCK=)");
	default:
		return rm_err_set(err, rc, "io_uring_queue_init: %s", strerror(-rc));
	}
}

int reactor_init(struct reactor *r, unsigned id, const struct conf *conf,
		 struct spool *sp, const int *listen_fds,
		 const enum conf_listen_role *roles, unsigned n_listen,
		 struct rm_err *err)
{
	int rc;

	memset(r, 0, sizeof(*r));
	r->id = id;
	r->conf = conf;
	r->durable = conf->durability == CONF_DURABILITY_BATCH;
	r->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (r->wake_fd < 0)
		return rm_err_set(err, -errno, "reactor %u: eventfd: %s", id, strerror(errno));
	r->listeners = aligned_alloc(16, sizeof(*r->listeners) * (n_listen ? n_listen : 1));
	if (r->listeners == NULL)
		return rm_err_set(err, -ENOMEM, "reactor %u: out of memory", id);
	for (unsigned i = 0; i < n_listen; i++) {
		r->listeners[i].fd = listen_fds[i];
		r->listeners[i].role = roles[i];
		r->listeners[i].armed = false;
	}
	r->n_listeners = n_listen;
	rc = spool_shard_open(sp, id, &r->shard, err);
	if (rc < 0)
		return rc;
	return 0;
}

struct io_uring_sqe *reactor_sqe(struct reactor *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);

	while (sqe == NULL) {
		io_uring_submit(&r->ring);
		sqe = io_uring_get_sqe(&r->ring);
	}
	return sqe;
}

uint8_t *reactor_buf(struct reactor *r, unsigned bid)
{
	return r->bufs + (size_t)bid * REACTOR_BUF_BYTES;
}

void reactor_buf_put(struct reactor *r, unsigned bid)
{
	io_uring_buf_ring_add(r->br, reactor_buf(r, bid), REACTOR_BUF_BYTES, (unsigned short)bid,
			      io_uring_buf_ring_mask(REACTOR_N_BUFS), 0);
	io_uring_buf_ring_advance(r->br, 1);
	r->bufs_free++;
	/* A session parked on -ENOBUFS gets this buffer. */
	if (r->starved != NULL) {
		struct session *s = r->starved;
		r->starved = *session_starved_link(s);
		*session_starved_link(s) = NULL;
		session_wake(s);
	}
}

void reactor_recv(struct reactor *r, struct session *s, int fd)
{
	struct io_uring_sqe *sqe = reactor_sqe(r);

	io_uring_prep_recv(sqe, fd, NULL, REACTOR_BUF_BYTES, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = REACTOR_BGID;
	io_uring_sqe_set_data64(sqe, tag(s, REACTOR_OP_RECV));
}

void reactor_send(struct reactor *r, struct session *s, int fd,
		  const void *p, size_t len)
{
	struct io_uring_sqe *sqe = reactor_sqe(r);

	io_uring_prep_send(sqe, fd, p, len, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, tag(s, REACTOR_OP_SEND));
}

static void arm_accept(struct reactor *r, struct reactor_listener *l)
{
	struct io_uring_sqe *sqe = reactor_sqe(r);

	io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, tag(l, REACTOR_OP_ACCEPT));
	l->armed = true;
}

static void arm_timer(struct reactor *r)
{
	struct io_uring_sqe *sqe = reactor_sqe(r);

	r->tick.tv_sec = REACTOR_TICK_MS / 1000;
	r->tick.tv_nsec = (REACTOR_TICK_MS % 1000) * 1000000L;
	io_uring_prep_timeout(sqe, &r->tick, 0, 0);
	io_uring_sqe_set_data64(sqe, tag(r->tag, REACTOR_OP_TIMER));
}

static void arm_wake(struct reactor *r)
{
	struct io_uring_sqe *sqe = reactor_sqe(r);

	io_uring_prep_read(sqe, r->wake_fd, &r->wake_val, sizeof(r->wake_val), 0);
	io_uring_sqe_set_data64(sqe, tag(r->tag, REACTOR_OP_WAKE));
}

/* setup_ring - the ring with the cheapest task-work mode this kernel has. */
static int setup_ring(struct reactor *r)
{
	struct io_uring_params p;
	int rc;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	p.cq_entries = REACTOR_CQ_ENTRIES;
	rc = io_uring_queue_init_params(REACTOR_SQ_ENTRIES, &r->ring, &p);
	if (rc == -EINVAL) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN;
		p.cq_entries = REACTOR_CQ_ENTRIES;
		rc = io_uring_queue_init_params(REACTOR_SQ_ENTRIES, &r->ring, &p);
	}
	if (rc == -EINVAL) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = REACTOR_CQ_ENTRIES;
		rc = io_uring_queue_init_params(REACTOR_SQ_ENTRIES, &r->ring, &p);
	}
	return rc;
}

/* setup_bufs - register the provided-buffer ring and fill it. */
static int setup_bufs(struct reactor *r)
{
	struct io_uring_buf_reg reg;
	size_t ring_bytes = REACTOR_N_BUFS * sizeof(struct io_uring_buf);
	void *mem;
	int rc;

	mem = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (mem == MAP_FAILED)
		return -errno;
	r->br = mem;
	/* Populated up front: the kernel cycles through every buffer of the
	 * ring, so all of them are touched soon anyway; faulting them in now
	 * keeps page faults off the receive path and RSS flat under load. */
	r->bufs = mmap(NULL, (size_t)REACTOR_N_BUFS * REACTOR_BUF_BYTES, PROT_READ | PROT_WRITE,
		       MAP_ANONYMOUS | MAP_PRIVATE | MAP_POPULATE, -1, 0);
	if (r->bufs == MAP_FAILED)
		return -errno;
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)r->br;
	reg.ring_entries = REACTOR_N_BUFS;
	reg.bgid = REACTOR_BGID;
	rc = io_uring_register_buf_ring(&r->ring, &reg, 0);
	if (rc < 0)
		return rc;
	io_uring_buf_ring_init(r->br);
	for (unsigned i = 0; i < REACTOR_N_BUFS; i++)
		io_uring_buf_ring_add(r->br, reactor_buf(r, i), REACTOR_BUF_BYTES, (unsigned short)i,
				      io_uring_buf_ring_mask(REACTOR_N_BUFS), (int)i);
	io_uring_buf_ring_advance(r->br, REACTOR_N_BUFS);
	r->bufs_free = REACTOR_N_BUFS;
	return 0;
}

static void on_accept(struct reactor *r, struct reactor_listener *l,
		      struct io_uring_cqe *cqe)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = cqe->res;

	if (!(cqe->flags & IORING_CQE_F_MORE))
		l->armed = false;
	if (fd >= 0) {
		if (r->stopping || getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
			close(fd);
		} else {
			session_accept(r, fd, (struct sockaddr *)&ss, sl);
		}
	} else if (fd != -ECANCELED && fd != -EAGAIN && fd != -ECONNABORTED) {
		log_warn("r%u reactor: accept: %s", r->id, strerror(-fd));
	}
	if (!l->armed && !r->stopping) {
		arm_accept(r, l);
	} else if (!l->armed && r->stopping && l->fd >= 0) {
		close(l->fd);
		l->fd = -1;
	}
}

/* group_commit - start the fsync for everything completed since the last. */
static void group_commit(struct reactor *r)
{
	struct rm_err err = { 0, "" };
	int fd;

	while (!r->fsync_inflight) {
		fd = spool_shard_sync_begin(r->shard);
		if (fd < 0)
			return;
		if (!r->durable) {
			/* durability = none: the relaxed benchmark mode, no fsync. */
			spool_shard_sync_end(r->shard, 0, session_commit_done, &err);
			continue;
		}
		struct io_uring_sqe *sqe = reactor_sqe(r);
		io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
		io_uring_sqe_set_data64(sqe, tag(r->tag + 0, REACTOR_OP_FSYNC));
		r->fsync_inflight = true;
	}
}

static void on_fsync(struct reactor *r, int res)
{
	struct rm_err err = { 0, "" };

	r->fsync_inflight = false;
	if (res < 0)
		log_warn("r%u spool: fdatasync: %s", r->id, strerror(-res));
	spool_shard_sync_end(r->shard, res, session_commit_done, &err);
	if (err.code < 0)
		log_warn("r%u %s", r->id, err.msg);
}

static void begin_stop(struct reactor *r)
{
	struct session *s, *next;

	if (r->stopping)
		return;
	r->stopping = true;
	r->stop_deadline_ms = r->now_ms + REACTOR_SHUTDOWN_GRACE_MS;
	for (unsigned i = 0; i < r->n_listeners; i++) {
		struct reactor_listener *l = &r->listeners[i];
		if (l->armed) {
			struct io_uring_sqe *sqe = reactor_sqe(r);
			io_uring_prep_cancel64(sqe, tag(l, REACTOR_OP_ACCEPT), 0);
			io_uring_sqe_set_data64(sqe, tag(r->tag, REACTOR_OP_CANCEL));
		} else if (l->fd >= 0) {
			close(l->fd);
			l->fd = -1;
		}
	}
	for (s = r->sessions; s != NULL; s = next) {
		next = session_list_next(s);
		session_shutdown(s);
	}
}

static void on_tick(struct reactor *r)
{
	struct session *s, *next;
	bool cut = r->stopping && r->now_ms >= r->stop_deadline_ms;

	for (s = r->sessions; s != NULL; s = next) {
		next = session_list_next(s);
		if (cut)
			session_kill(s);
		else
			session_tick(s, r->now_ms);
	}
	arm_timer(r);
}

static void dispatch(struct reactor *r, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	void *p = (void *)(uintptr_t)(ud & ~(uint64_t)REACTOR_OP_MASK);

	switch ((enum reactor_op)(ud & REACTOR_OP_MASK)) {
	case REACTOR_OP_ACCEPT:
		on_accept(r, p, cqe);
		break;
	case REACTOR_OP_RECV:
		session_on_recv(p, cqe->res, cqe->flags);
		break;
	case REACTOR_OP_SEND:
		session_on_send(p, cqe->res);
		break;
	case REACTOR_OP_TIMER:
		on_tick(r);
		break;
	case REACTOR_OP_FSYNC:
		on_fsync(r, cqe->res);
		break;
	case REACTOR_OP_WAKE:
		begin_stop(r);
		break;
	case REACTOR_OP_CANCEL:
		break;
	default:
		rm_panic("reactor: completion with unknown op %llu", (unsigned long long)ud);
	}
}

static void *reactor_main(void *arg)
{
	struct reactor *r = arg;
	struct io_uring_cqe *cqe;
	unsigned head, n;
	int rc;

	rc = setup_ring(r);
	if (rc < 0) {
		log_msg(LOG_LVL_FATAL, "r%u reactor: io_uring_queue_init: %s", r->id, strerror(-rc));
		r->exit_code = 1;
		return NULL;
	}
	r->ring_ok = true;
	rc = setup_bufs(r);
	if (rc < 0) {
		log_msg(LOG_LVL_FATAL, "r%u reactor: provided buffer ring: %s (ringmta needs "
			"Linux >= 5.19)", r->id, strerror(-rc));
		r->exit_code = 1;
		return NULL;
	}
	r->now_ms = mono_ms();
	for (unsigned i = 0; i < r->n_listeners; i++)
		arm_accept(r, &r->listeners[i]);
	arm_timer(r);
	arm_wake(r);
	log_info("r%u reactor: started listeners=%u", r->id, r->n_listeners);

	for (;;) {
		if (r->stopping && r->n_sessions == 0 && !r->fsync_inflight)
			break;
		rc = io_uring_submit_and_wait(&r->ring, 1);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
			log_msg(LOG_LVL_FATAL, "r%u reactor: io_uring_enter: %s", r->id, strerror(-rc));
			r->exit_code = 1;
			break;
		}
		r->now_ms = mono_ms();
		n = 0;
		io_uring_for_each_cqe(&r->ring, head, cqe) {
			dispatch(r, cqe);
			n++;
		}
		io_uring_cq_advance(&r->ring, n);
		group_commit(r);
	}
	spool_shard_close(r->shard);
	r->shard = NULL;
	log_info("r%u reactor: stopped", r->id);
	return NULL;
}

int reactor_start(struct reactor *r, struct rm_err *err)
{
	int rc = pthread_create(&r->thread, NULL, reactor_main, r);

	if (rc != 0)
		return rm_err_set(err, -rc, "reactor %u: pthread_create: %s", r->id, strerror(rc));
	return 0;
}

void reactor_stop(struct reactor *r)
{
	uint64_t one = 1;

	if (write(r->wake_fd, &one, sizeof(one)) < 0)
		log_warn("r%u reactor: wake: %s", r->id, strerror(errno));
}

int reactor_join(struct reactor *r)
{
	pthread_join(r->thread, NULL);
	if (r->ring_ok)
		io_uring_queue_exit(&r->ring);
	close(r->wake_fd);
	free(r->listeners);
	return r->exit_code;
}
