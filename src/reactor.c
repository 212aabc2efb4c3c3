/*
 * reactor - a generic io_uring event loop: ring, provided receive buffers,
 *           completion dispatch by tagged user_data, a periodic tick, and a
 *           cross-thread stop.
 *
 * Owns: the ring, the provided-buffer ring and its buffers (n_bufs *
 *       buf_bytes, populated at start), the tick timer, the wake eventfd
 *       (one read always armed; reactor_stop/reactor_wake write it).
 * Must not: know what runs on it (SMTP sessions, the spool, load
 *       generators): that is the owner's handlers and hooks.
 * Interface: include/ringmta/reactor.h
 * Limits: n_bufs receive buffers; REACTOR_SQ_ENTRIES submissions per
 *         io_uring_enter before an early submit; REACTOR_CQ_ENTRIES
 *         completions between two loops (the kernel holds overflow).
 * Errors: set-up failures return -errno with an rm_err line; a reactor
 *         that fails in its thread sends SIGTERM to the process so the
 *         main thread stops the others and exits 1; a completion
 *         with an op nobody registered is our bug (rm_panic).
 */
#include "ringmta/reactor.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "ringmta/log.h"

#define REACTOR_SQ_ENTRIES 1024
#define REACTOR_CQ_ENTRIES 16384
#define REACTOR_BGID 0

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

int reactor_init(struct reactor *r, const struct reactor_opts *o, struct rm_err *err)
{
	memset(r, 0, sizeof(*r));
	r->id = o->id;
	r->ctx = o->ctx;
	r->hooks = o->hooks;
	r->n_bufs = o->n_bufs ? o->n_bufs : REACTOR_DEFAULT_N_BUFS;
	r->buf_bytes = o->buf_bytes ? o->buf_bytes : REACTOR_DEFAULT_BUF_BYTES;
	r->tick_ms = o->tick_ms ? o->tick_ms : REACTOR_DEFAULT_TICK_MS;
	if ((r->n_bufs & (r->n_bufs - 1)) != 0 || r->n_bufs > 32768)
		return rm_err_set(err, -EINVAL, "reactor %u: n_bufs %u is not a power of two <= 32768",
				  r->id, r->n_bufs);
	r->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (r->wake_fd < 0)
		return rm_err_set(err, -errno, "reactor %u: eventfd: %s", r->id, strerror(errno));
	return 0;
}

void reactor_on(struct reactor *r, unsigned op, reactor_cqe_fn *fn)
{
	if (op == 0 || op > REACTOR_OP_USER_MAX)
		rm_panic("reactor: op %u out of range", op);
	r->ops[op] = fn;
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

void reactor_sqe_tag(struct io_uring_sqe *sqe, const void *obj, unsigned op)
{
	uintptr_t p = (uintptr_t)obj;

	if (p & REACTOR_OP_MASK)
		rm_panic("reactor: object %p is not 16-byte aligned", obj);
	io_uring_sqe_set_data64(sqe, (uint64_t)p | op);
}

uint8_t *reactor_buf(struct reactor *r, unsigned bid)
{
	return r->bufs + (size_t)bid * r->buf_bytes;
}

void reactor_buf_put(struct reactor *r, unsigned bid)
{
	io_uring_buf_ring_add(r->br, reactor_buf(r, bid), r->buf_bytes, (unsigned short)bid,
			      io_uring_buf_ring_mask(r->n_bufs), 0);
	io_uring_buf_ring_advance(r->br, 1);
	if (r->hooks && r->hooks->buf_free)
		r->hooks->buf_free(r);
}

void reactor_recv(struct reactor *r, const void *obj, unsigned op, int fd)
{
	struct io_uring_sqe *sqe = reactor_sqe(r);

	io_uring_prep_recv(sqe, fd, NULL, r->buf_bytes, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = REACTOR_BGID;
	/* armed when the peer owes us its next line: skip the receive
	 * attempt that would find nothing and go straight to the poll */
	sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
	reactor_sqe_tag(sqe, obj, op);
}

void reactor_recv_multishot(struct reactor *r, const void *obj, unsigned op, int fd)
{
	struct io_uring_sqe *sqe = reactor_sqe(r);

	/* len 0: each completion takes one whole provided buffer */
	io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = REACTOR_BGID;
	reactor_sqe_tag(sqe, obj, op);
}

void reactor_cancel(struct reactor *r, const void *obj, unsigned op)
{
	struct io_uring_sqe *sqe = reactor_sqe(r);

	io_uring_prep_cancel64(sqe, reactor_tag(obj, op), 0);
	reactor_sqe_tag(sqe, r->anchor, REACTOR_OP_IGNORE);
}

static void arm_timer(struct reactor *r)
{
	struct io_uring_sqe *sqe = reactor_sqe(r);

	r->tick.tv_sec = r->tick_ms / 1000;
	r->tick.tv_nsec = (long)(r->tick_ms % 1000) * 1000000L;
	io_uring_prep_timeout(sqe, &r->tick, 0, 0);
	reactor_sqe_tag(sqe, r->anchor, REACTOR_OP_TIMER);
}

static void arm_wake(struct reactor *r)
{
	struct io_uring_sqe *sqe = reactor_sqe(r);

	io_uring_prep_read(sqe, r->wake_fd, &r->wake_val, sizeof(r->wake_val), 0);
	reactor_sqe_tag(sqe, r->anchor, REACTOR_OP_WAKE);
}

/* setup_ring - the ring with the cheapest task-work mode this kernel has. */
static int setup_ring(struct reactor *r)
{
	static const unsigned modes[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	struct io_uring_params p;
	int rc = -EINVAL;

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]) && rc == -EINVAL; i++) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE | modes[i];
		p.cq_entries = REACTOR_CQ_ENTRIES;
		rc = io_uring_queue_init_params(REACTOR_SQ_ENTRIES, &r->ring, &p);
	}
	return rc;
}

/* setup_bufs - register the provided-buffer ring and fill it. */
static int setup_bufs(struct reactor *r)
{
	struct io_uring_buf_reg reg;
	size_t ring_bytes = r->n_bufs * sizeof(struct io_uring_buf);
	void *mem;
	int rc;

	mem = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (mem == MAP_FAILED)
		return -errno;
	r->br = mem;
	/* Populated up front: the kernel cycles through every buffer of the
	 * ring, so all of them are touched soon anyway; faulting them in now
	 * keeps page faults off the receive path and RSS flat under load. */
	r->bufs = mmap(NULL, (size_t)r->n_bufs * r->buf_bytes, PROT_READ | PROT_WRITE,
		       MAP_ANONYMOUS | MAP_PRIVATE | MAP_POPULATE, -1, 0);
	if (r->bufs == MAP_FAILED) {
		r->bufs = NULL;
		return -errno;
	}
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)r->br;
	reg.ring_entries = r->n_bufs;
	reg.bgid = REACTOR_BGID;
	rc = io_uring_register_buf_ring(&r->ring, &reg, 0);
	if (rc < 0)
		return rc;
	io_uring_buf_ring_init(r->br);
	for (unsigned i = 0; i < r->n_bufs; i++)
		io_uring_buf_ring_add(r->br, reactor_buf(r, i), r->buf_bytes, (unsigned short)i,
				      io_uring_buf_ring_mask(r->n_bufs), (int)i);
	io_uring_buf_ring_advance(r->br, (int)r->n_bufs);
	return 0;
}

/* check_stop - run hooks->stop once after reactor_stop(). */
static void check_stop(struct reactor *r)
{
	if (r->is_stopping || !atomic_load(&r->is_stop_requested))
		return;
	r->is_stopping = true;
	if (r->hooks && r->hooks->stop)
		r->hooks->stop(r);
}

/*
 * on_wake - the wake eventfd was written (reactor_stop or reactor_wake):
 * re-arm the read first, so a write racing with the hooks below is seen
 * at the next loop, then stop and/or call hooks->wake.
 */
static void on_wake(struct reactor *r, int res)
{
	if (res >= 0 || res == -EINTR || res == -EAGAIN || res == -ECANCELED)
		arm_wake(r);
	else
		log_warn("r%u reactor: wake read: %s; stop is seen at the tick, "
			 "wake-ups are lost", r->id, strerror(-res));
	check_stop(r);
	if (r->hooks && r->hooks->wake)
		r->hooks->wake(r);
}

static void dispatch(struct reactor *r, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	unsigned op = (unsigned)(ud & REACTOR_OP_MASK);
	void *obj = (void *)(uintptr_t)(ud & ~(uint64_t)REACTOR_OP_MASK);

	switch (op) {
	case REACTOR_OP_TIMER:
		check_stop(r);   /* in case the wake read was lost */
		if (r->hooks && r->hooks->tick)
			r->hooks->tick(r);
		arm_timer(r);
		return;
	case REACTOR_OP_WAKE:
		on_wake(r, cqe->res);
		return;
	case REACTOR_OP_IGNORE:
		return;
	default:
		if (r->ops[op] == NULL)
			rm_panic("reactor: completion with unregistered op %u", op);
		r->ops[op](r, obj, cqe);
	}
}

static bool loop_done(struct reactor *r)
{
	if (r->exit_code != 0)
		return true;
	if (!r->is_stopping)
		return false;
	return r->hooks == NULL || r->hooks->is_done == NULL || r->hooks->is_done(r);
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
		kill(getpid(), SIGTERM);
		return NULL;
	}
	r->ring_ok = true;
	/* A registered ring fd spares io_uring_enter the fd lookup on every
	 * call; kernels without it (< 5.18) just keep the slower path. */
	(void)io_uring_register_ring_fd(&r->ring);
	rc = setup_bufs(r);
	if (rc < 0) {
		log_msg(LOG_LVL_FATAL, "r%u reactor: provided buffer ring: %s (ringmta needs "
			"Linux >= 5.19)", r->id, strerror(-rc));
		r->exit_code = 1;
		kill(getpid(), SIGTERM);
		return NULL;
	}
	r->now_ms = mono_ms();
	log_buffer_begin();
	arm_timer(r);
	arm_wake(r);
	if (r->hooks && r->hooks->start && r->hooks->start(r) < 0) {
		log_flush();
		r->exit_code = 1;
		kill(getpid(), SIGTERM);
		return NULL;
	}
	/* once before the first wait: work that needs no event (a queue left
	 * by the last run) starts now, not a tick later */
	if (r->hooks && r->hooks->loop_end)
		r->hooks->loop_end(r);
	while (!loop_done(r)) {
		rc = io_uring_submit_and_wait(&r->ring, 1);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY && rc != -ETIME) {
			log_msg(LOG_LVL_FATAL, "r%u reactor: io_uring_enter: %s", r->id, strerror(-rc));
			r->exit_code = 1;
			break;
		}
		r->now_ms = mono_ms();
		atomic_fetch_add(&r->n_loops, 1);
		n = 0;
		io_uring_for_each_cqe(&r->ring, head, cqe) {
			dispatch(r, cqe);
			n++;
		}
		io_uring_cq_advance(&r->ring, n);
		if (r->hooks && r->hooks->loop_end)
			r->hooks->loop_end(r);
		log_flush();	/* before the ring waits */
	}
	if (r->hooks && r->hooks->finish)
		r->hooks->finish(r);
	log_flush();
	if (r->exit_code != 0)
		kill(getpid(), SIGTERM);   /* the main thread stops the rest */
	return NULL;
}

int reactor_start(struct reactor *r, struct rm_err *err)
{
	int rc = pthread_create(&r->thread, NULL, reactor_main, r);

	if (rc != 0)
		return rm_err_set(err, -rc, "reactor %u: pthread_create: %s", r->id, strerror(rc));
	return 0;
}

void reactor_wake(struct reactor *r)
{
	uint64_t one = 1;

	/* EAGAIN means the counter is at its maximum: a wake-up is pending
	 * anyway. */
	if (write(r->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("r%u reactor: wake: %s", r->id, strerror(errno));
}

void reactor_stop(struct reactor *r)
{
	atomic_store(&r->is_stop_requested, true);
	reactor_wake(r);
}

void reactor_fail(struct reactor *r)
{
	r->exit_code = 1;
}

int reactor_join(struct reactor *r)
{
	pthread_join(r->thread, NULL);
	if (r->ring_ok)
		io_uring_queue_exit(&r->ring);
	if (r->bufs != NULL)
		munmap(r->bufs, (size_t)r->n_bufs * r->buf_bytes);
	if (r->br != NULL)
		munmap(r->br, r->n_bufs * sizeof(struct io_uring_buf));
	close(r->wake_fd);
	return r->exit_code;
}
