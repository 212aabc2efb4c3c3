/*
 * bench_reactor.h - the reactor ringmta-bench runs on.
 *
 * The tool uses the project's generic reactor (include/ringmta/reactor.h:
 * reactor_opts, reactor_hooks, reactor_on, reactor_sqe_tag). While the
 * tree still has the daemon-only reactor, meson defines
 * BENCH_COMPAT_REACTOR and bench_reactor_compat.c provides the same API
 * for the tool alone. XXX delete the compat file once the generic reactor
 * is in every branch.
 */
#ifndef RINGMTA_BENCH_REACTOR_H
#define RINGMTA_BENCH_REACTOR_H

#ifndef BENCH_COMPAT_REACTOR
#include "ringmta/reactor.h"
#else
#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "ringmta/util.h"

struct reactor;
typedef void reactor_cqe_fn(struct reactor *r, void *obj, struct io_uring_cqe *cqe);

struct reactor_hooks {
	int (*start)(struct reactor *r);
	void (*loop_end)(struct reactor *r);
	void (*tick)(struct reactor *r);
	void (*stop)(struct reactor *r);
	bool (*is_done)(struct reactor *r);
	void (*finish)(struct reactor *r);
};

struct reactor_opts {
	unsigned id;
	unsigned n_bufs;
	unsigned buf_bytes;
	unsigned tick_ms;
	const struct reactor_hooks *hooks;
	void *ctx;
};

struct reactor {
	unsigned id;
	void *ctx;
	int64_t now_ms;
	struct io_uring ring;
	const struct reactor_hooks *hooks;
	unsigned n_bufs, buf_bytes, tick_ms;
	struct io_uring_buf_ring *br;
	uint8_t *bufs;
	reactor_cqe_fn *fn[16];
	pthread_t thread;
	int wake_fd;
	uint64_t wake_val;
	bool is_stopping;
	int rc;
	struct __kernel_timespec tick_ts;
	char tag_wake[16] __attribute__((aligned(16)));
	char tag_tick[16] __attribute__((aligned(16)));
};

int reactor_init(struct reactor *r, const struct reactor_opts *o, struct rm_err *err);
void reactor_on(struct reactor *r, unsigned op, reactor_cqe_fn *fn);
struct io_uring_sqe *reactor_sqe(struct reactor *r);
void reactor_sqe_tag(struct io_uring_sqe *sqe, const void *obj, unsigned op);
void reactor_recv(struct reactor *r, const void *obj, unsigned op, int fd);
uint8_t *reactor_buf(struct reactor *r, unsigned bid);
void reactor_buf_put(struct reactor *r, unsigned bid);
int reactor_start(struct reactor *r, struct rm_err *err);
void reactor_stop(struct reactor *r);
int reactor_join(struct reactor *r);
#endif

#endif
