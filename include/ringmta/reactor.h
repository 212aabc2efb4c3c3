/*
 * reactor.h - one io_uring event loop per thread, generic: the daemon
 * (server.c) and ringmta-bench (bench/) both run on it.
 *
 * Design. A reactor is a thread that owns one ring and a provided-buffer
 * ring for receives. Everything it runs is told apart by the user_data of
 * its submissions: pointer | op, pointers 16-byte aligned so the low 4 bits
 * hold the op. The owner registers one completion handler per op
 * (reactor_on) and a few hooks (struct reactor_hooks); the reactor itself
 * uses the ops REACTOR_OP_TIMER, REACTOR_OP_WAKE and REACTOR_OP_IGNORE.
 *
 * The loop: wait for >= 1 completion, count the iteration (n_loops), hand
 * every completion in the CQ to its handler, call hooks->loop_end (the daemon starts its group-commit
 * fsync there: everything completed in one iteration shares it), then
 * submit everything in one io_uring_enter.
 *
 * Receives take IOSQE_BUFFER_SELECT buffers from the provided-buffer ring.
 * The daemon's are single-shot: an idle connection holds no buffer, and a
 * connection that cannot take more input is simply not re-armed
 * (backpressure without cancelling a multishot). ringmta-bench, where
 * every reply in lock step would pay a submission and a poll set-up, arms
 * a multishot receive once per connection and cancels it when it has to
 * hold input (reactor_recv_multishot, reactor_cancel).
 *
 * Timeouts use one periodic tick per reactor (hooks->tick) that the owner
 * uses to scan its deadlines: cheaper than a linked timeout per receive,
 * which would be cancelled and re-armed for every packet.
 *
 * Cross-thread calls: one eventfd read is always armed; reactor_wake()
 * writes the eventfd and the completion calls hooks->wake in the reactor's
 * thread; reactor_stop() also sets a flag that makes the same completion
 * (or the next tick) call hooks->stop once.
 *
 * Threads: reactor_stop() and reactor_wake() may be called from any
 * thread; everything else
 * only from the reactor's own thread once it runs (the ring is
 * IORING_SETUP_SINGLE_ISSUER where the kernel has it).
 */
#ifndef RINGMTA_REACTOR_H
#define RINGMTA_REACTOR_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "ringmta/util.h"

/* REACTOR_DEFAULT_BUF_BYTES - one receive buffer: a 100 KiB message
 * arrives in a handful of completions. */
#define REACTOR_DEFAULT_BUF_BYTES (16 * 1024)
/* REACTOR_DEFAULT_N_BUFS - receive buffers per reactor (a power of two). */
#define REACTOR_DEFAULT_N_BUFS 256
/* REACTOR_DEFAULT_TICK_MS - the tick period. */
#define REACTOR_DEFAULT_TICK_MS 1000

/* Ops 1..REACTOR_OP_USER_MAX are the owner's; the rest are the reactor's. */
#define REACTOR_OP_USER_MAX 12
#define REACTOR_OP_TIMER 13
#define REACTOR_OP_WAKE 14
#define REACTOR_OP_IGNORE 15    /* completions nobody needs (cancels) */
#define REACTOR_OP_MASK 15u

struct reactor;

/* reactor_cqe_fn - handles one completion of op for the object obj. */
typedef void reactor_cqe_fn(struct reactor *r, void *obj, struct io_uring_cqe *cqe);

/* struct reactor_hooks - the owner's part of the loop; any may be NULL. */
struct reactor_hooks {
	int (*start)(struct reactor *r);     /* in the thread, ring ready: arm first ops; < 0 aborts */
	void (*loop_end)(struct reactor *r); /* after each batch of completions */
	void (*tick)(struct reactor *r);     /* every tick_ms */
	void (*stop)(struct reactor *r);     /* reactor_stop() was called */
	bool (*is_done)(struct reactor *r);  /* after stop: may the loop exit? (NULL: yes) */
	void (*finish)(struct reactor *r);   /* in the thread, before the ring goes */
	void (*buf_free)(struct reactor *r); /* a receive buffer went back to the ring */
	void (*wake)(struct reactor *r);     /* reactor_wake() or reactor_stop() was called */
};

/* struct reactor_opts - reactor_init()'s settings; 0 means the default. */
struct reactor_opts {
	unsigned id;
	unsigned n_bufs;           /* power of two */
	unsigned buf_bytes;
	unsigned tick_ms;
	const struct reactor_hooks *hooks;
	void *ctx;                 /* the owner's, as r->ctx */
};

struct reactor {
	unsigned id;                    /* read-only */
	void *ctx;                      /* read-only: the owner's context */
	int64_t now_ms;                 /* CLOCK_MONOTONIC, updated once per loop */
	bool is_stopping;               /* reactor_stop() seen */
	/* loop iterations begun, counted before each batch of completions
	 * is handled; any thread may read it. maps_live waits for it to move
	 * on before it frees maps a handler may still hold (maps_live.h). */
	_Atomic uint64_t n_loops;
	struct io_uring ring;
	/* private below */
	const struct reactor_hooks *hooks;
	reactor_cqe_fn *ops[REACTOR_OP_MASK + 1];
	bool ring_ok;
	pthread_t thread;
	struct io_uring_buf_ring *br;
	uint8_t *bufs;
	unsigned n_bufs, buf_bytes;
	unsigned tick_ms;
	struct __kernel_timespec tick;
	int wake_fd;
	uint64_t wake_val;
	_Atomic bool is_stop_requested;
	int exit_code;
	char anchor[16] __attribute__((aligned(16)));
};

/*
 * reactor_probe - check that io_uring works here at all. Returns 0, or a
 * negative errno with err holding one line that names the cause and the fix
 * (kernel.io_uring_disabled, seccomp, old kernel, memlock).
 */
int reactor_probe(struct rm_err *err);

/*
 * reactor_init - set up r (caller-owned storage). The ring itself is made
 * in the thread (reactor_start). Returns 0 or -errno (err filled).
 */
int reactor_init(struct reactor *r, const struct reactor_opts *o, struct rm_err *err);

/* reactor_on - fn handles completions tagged op (1..REACTOR_OP_USER_MAX). */
void reactor_on(struct reactor *r, unsigned op, reactor_cqe_fn *fn);

/* reactor_start - start r's thread. Returns 0 or -errno. */
int reactor_start(struct reactor *r, struct rm_err *err);
/* reactor_stop - ask r to stop: hooks->stop runs in its thread. Any thread. */
void reactor_stop(struct reactor *r);
/*
 * reactor_wake - make r call hooks->wake in its thread soon (within one
 * loop iteration). Any thread, async-signal-safe apart from the log line
 * of an unexpected write error. Wake-ups coalesce: several calls before
 * the reactor runs may give one hooks->wake, so the hook must handle
 * everything that was posted (e.g. drain a mailbox, as server.c does for
 * admin requests). Anything posted before the call is visible to the hook
 * when the poster's own synchronisation (a mutex) says so.
 */
void reactor_wake(struct reactor *r);
/* reactor_join - wait for r's thread, free its resources; its exit code. */
int reactor_join(struct reactor *r);
/* reactor_fail - end r's loop now with exit code 1 (a fatal error). */
void reactor_fail(struct reactor *r);

/* reactor_sqe - a submission entry; never NULL (submits when the SQ is full). */
struct io_uring_sqe *reactor_sqe(struct reactor *r);
/* reactor_clock_ns - CLOCK_MONOTONIC now, in ns (r->now_ms is per loop). */
static inline int64_t reactor_clock_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* reactor_tag - the user_data of obj|op (for cancels). */
static inline uint64_t reactor_tag(const void *obj, unsigned op)
{
	return (uint64_t)(uintptr_t)obj | op;
}
/* reactor_sqe_tag - tag sqe with obj (16-byte aligned) and op. */
void reactor_sqe_tag(struct io_uring_sqe *sqe, const void *obj, unsigned op);
/* reactor_recv - a receive on fd into a provided buffer, tagged obj|op. The
 * completion has IORING_CQE_F_BUFFER and the buffer id in cqe->flags >>
 * IORING_CQE_BUFFER_SHIFT when res > 0; -ENOBUFS when none was free. */
void reactor_recv(struct reactor *r, const void *obj, unsigned op, int fd);
/*
 * reactor_recv_multishot - like reactor_recv, but armed once: every chunk
 * that arrives completes with IORING_CQE_F_MORE set while the receive stays
 * armed (no submission, no poll set-up per chunk: request/reply traffic in
 * lock step pays both on every reply otherwise). A completion without
 * F_MORE ends it: EOF (0), an error, -ENOBUFS (no free buffer), -ECANCELED
 * (reactor_cancel); re-arm when wanted. The owner must be able to hold
 * chunks it cannot consume yet, or cancel. Linux >= 6.0.
 */
void reactor_recv_multishot(struct reactor *r, const void *obj, unsigned op, int fd);
/* reactor_cancel - cancel the op in flight tagged obj|op (its own completion
 * reports -ECANCELED); the cancel's completion is ignored, also when nothing
 * matched. */
void reactor_cancel(struct reactor *r, const void *obj, unsigned op);
/* reactor_buf - the bytes of provided buffer bid. */
uint8_t *reactor_buf(struct reactor *r, unsigned bid);
/* reactor_buf_put - give buffer bid back to the ring; calls hooks->buf_free. */
void reactor_buf_put(struct reactor *r, unsigned bid);

#endif
