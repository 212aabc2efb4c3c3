/*
 * bench_reactor_compat - the generic reactor API for ringmta-bench while
 *                        the tree has only the daemon's reactor.
 *
 * Owns: per reactor one ring, one provided-buffer ring, one eventfd, one thread.
 * Must not: be linked with a tree that has the generic reactor (meson
 *       builds it only when include/ringmta/reactor.h lacks reactor_hooks).
 * Interface: bench/bench_reactor.h (the same as include/ringmta/reactor.h will be).
 * Limits: ops 1..15; op 0 is ours (wake-up, tick).
 * Errors: set-up failures return -errno with an rm_err line.
 */
#include "bench_reactor.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define COMPAT_SQ_ENTRIES 1024
#define COMPAT_CQ_ENTRIES 16384
#define COMPAT_BGID 0

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int reactor_init(struct reactor *r, const struct reactor_opts *o, struct rm_err *err)
{
	memset(r, 0, sizeof(*r));
	r->id = o->id;
	r->ctx = o->ctx;
	r->hooks = o->hooks;
	r->n_bufs = o->n_bufs;
	r->buf_bytes = o->buf_bytes;
	r->tick_ms = o->tick_ms ? o->tick_ms : 1000;
	r->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (r->wake_fd < 0)
		return rm_err_set(err, -errno, "reactor: eventfd: %s", strerror(errno));
	return 0;
}

void reactor_on(struct reactor *r, unsigned op, reactor_cqe_fn *fn)
{
	if (op == 0 || op > 15)
		rm_panic("reactor_on: op %u out of range", op);
	r->fn[op] = fn;
}

struct io_uring_sqe *reactor_sqe(struct reactor *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);

	while (!sqe) {
		io_uring_submit(&r->ring);
		sqe = io_uring_get_sqe(&r->ring);
	}
	return sqe;
}

void reactor_sqe_tag(struct io_uring_sqe *sqe, const void *obj, unsigned op)
{
	if (((uintptr_t)obj & 15u) || op > 15)
		rm_panic("reactor_sqe_tag: unaligned object or op %u", op);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)obj | op);
}

void reactor_recv(struct reactor *r, const void *obj, unsigned op, int fd)
{
	struct io_uring_sqe *sqe = reactor_sqe(r);

	io_uring_prep_recv(sqe, fd, NULL, r->buf_bytes, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = COMPAT_BGID;
	reactor_sqe_tag(sqe, obj, op);
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
}

static int ring_setup(struct reactor *r)
{
	struct io_uring_params p;
	struct io_uring_buf_reg reg;
	unsigned i;
	int rc;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	p.cq_entries = COMPAT_CQ_ENTRIES;
	rc = io_uring_queue_init_params(COMPAT_SQ_ENTRIES, &r->ring, &p);
	if (rc < 0) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = COMPAT_CQ_ENTRIES;
		rc = io_uring_queue_init_params(COMPAT_SQ_ENTRIES, &r->ring, &p);
		if (rc < 0)
			return rc;
	}
	r->br = aligned_alloc(4096, r->n_bufs * sizeof(struct io_uring_buf));
	r->bufs = malloc((size_t)r->n_bufs * r->buf_bytes);
	if (!r->br || !r->bufs)
		return -ENOMEM;
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)r->br;
	reg.ring_entries = r->n_bufs;
	reg.bgid = COMPAT_BGID;
	rc = io_uring_register_buf_ring(&r->ring, &reg, 0);
	if (rc < 0)
		return rc;
	io_uring_buf_ring_init(r->br);
	for (i = 0; i < r->n_bufs; i++)
		io_uring_buf_ring_add(r->br, reactor_buf(r, i), r->buf_bytes, (unsigned short)i,
				      io_uring_buf_ring_mask(r->n_bufs), (int)i);
	io_uring_buf_ring_advance(r->br, (int)r->n_bufs);
	return 0;
}

static void arm_wake(struct reactor *r)
{
	struct io_uring_sqe *sqe = reactor_sqe(r);

	io_uring_prep_read(sqe, r->wake_fd, &r->wake_val, sizeof(r->wake_val), 0);
	reactor_sqe_tag(sqe, r->tag_wake, 0);
}

static void arm_tick(struct reactor *r)
{
	struct io_uring_sqe *sqe = reactor_sqe(r);

	r->tick_ts.tv_sec = r->tick_ms / 1000;
	r->tick_ts.tv_nsec = (long long)(r->tick_ms % 1000) * 1000000;
	io_uring_prep_timeout(sqe, &r->tick_ts, 0, 0);
	reactor_sqe_tag(sqe, r->tag_tick, 0);
}

static void dispatch(struct reactor *r, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	unsigned op = (unsigned)(ud & 15u);
	void *obj = (void *)(uintptr_t)(ud & ~(uint64_t)15);

	if (op != 0) {
		if (!r->fn[op])
			rm_panic("reactor: completion for op %u without a handler", op);
		r->fn[op](r, obj, cqe);
		return;
	}
	if (obj == r->tag_wake) {
		if (!r->is_stopping) {
			r->is_stopping = true;
			if (r->hooks->stop)
				r->hooks->stop(r);
		}
		arm_wake(r);
	} else if (obj == r->tag_tick) {
		if (r->hooks->tick)
			r->hooks->tick(r);
		arm_tick(r);
	}
}

static void *reactor_main(void *arg)
{
	struct reactor *r = arg;
	int rc = ring_setup(r);

	if (rc < 0) {
		r->rc = 1;
		return NULL;
	}
	r->now_ms = mono_ms();
	if (r->hooks->start && r->hooks->start(r) < 0) {
		r->rc = 1;
		goto out;
	}
	arm_wake(r);
	arm_tick(r);
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;

		rc = io_uring_submit_and_wait(&r->ring, 1);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
			r->rc = 1;
			break;
		}
		r->now_ms = mono_ms();
		io_uring_for_each_cqe(&r->ring, head, cqe) {
			dispatch(r, cqe);
			n++;
		}
		io_uring_cq_advance(&r->ring, n);
		if (r->hooks->loop_end)
			r->hooks->loop_end(r);
		if (r->is_stopping && (!r->hooks->is_done || r->hooks->is_done(r)))
			break;
	}
out:
	if (r->hooks->finish)
		r->hooks->finish(r);
	io_uring_queue_exit(&r->ring);
	free(r->br);
	free(r->bufs);
	return NULL;
}

int reactor_start(struct reactor *r, struct rm_err *err)
{
	int rc = pthread_create(&r->thread, NULL, reactor_main, r);

	if (rc)
		return rm_err_set(err, -rc, "reactor: pthread_create: %s", strerror(rc));
	return 0;
}

void reactor_stop(struct reactor *r)
{
	uint64_t one = 1;

	if (write(r->wake_fd, &one, sizeof(one)) < 0) {
		/* the counter cannot overflow with one write per stop */
	}
}

int reactor_join(struct reactor *r)
{
	pthread_join(r->thread, NULL);
	close(r->wake_fd);
	return r->rc;
}
