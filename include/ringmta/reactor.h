/*
 * reactor.h - one io_uring event loop per CPU core, shared-nothing.
 *
 * Design. Each reactor is a thread that owns one ring, its SO_REUSEPORT
 * listening sockets (bound by main before privileges are dropped), a
 * provided-buffer ring for receives, its sessions and its spool shard. No
 * state is shared with other reactors except the process-wide connection
 * counts (net.h, a mutex per accept/close) and the LMDB environment (LMDB
 * serialises the one write transaction per group commit).
 *
 * Every submission carries user_data = pointer | op (pointers are 16-byte
 * aligned, so the low 4 bits hold the op); completions are dispatched by op.
 *
 * The loop: wait for >= 1 completion, handle every completion in the CQ,
 * then start the group commit for all messages completed in this iteration
 * (one IORING_OP_FSYNC with IORING_FSYNC_DATASYNC for the whole batch), then
 * submit everything in one io_uring_enter.
 *
 * Receives are single-shot with IOSQE_BUFFER_SELECT from the provided-buffer
 * ring: an idle connection holds no buffer, and a session that cannot take
 * more input simply is not re-armed (backpressure without cancelling a
 * multishot). Idle timeouts use one periodic 1 s timer per reactor that scans
 * the session list: cheaper than a linked timeout per receive, which would
 * have to be cancelled and re-armed for every packet.
 */
#ifndef RINGMTA_REACTOR_H
#define RINGMTA_REACTOR_H

#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "ringmta/conf.h"
#include "ringmta/spool.h"
#include "ringmta/util.h"

/* REACTOR_BUF_BYTES - one provided receive buffer: large enough that a
 * 100 KiB message arrives in a handful of completions. */
#define REACTOR_BUF_BYTES (16 * 1024)
/* REACTOR_N_BUFS - provided buffers per reactor (power of two); 4 MiB. */
#define REACTOR_N_BUFS 256
/* REACTOR_TICK_MS - the idle-timeout scan period. */
#define REACTOR_TICK_MS 1000
/* REACTOR_SHUTDOWN_GRACE_MS - how long open sessions may take to finish
 * after SIGTERM before they are cut (a message not yet answered 250 is not
 * lost: the client still holds it). */
#define REACTOR_SHUTDOWN_GRACE_MS 10000

enum reactor_op {
	REACTOR_OP_ACCEPT = 1,
	REACTOR_OP_RECV,
	REACTOR_OP_SEND,
	REACTOR_OP_TIMER,
	REACTOR_OP_FSYNC,
	REACTOR_OP_WAKE,
	REACTOR_OP_CANCEL,
};
#define REACTOR_OP_MASK 15u

struct session;

/* struct reactor_listener - one listening socket of one reactor. */
struct reactor_listener {
	int fd;
	enum conf_listen_role role;
	bool armed;
} __attribute__((aligned(16)));

struct reactor {
	unsigned id;
	const struct conf *conf;
	struct io_uring ring;
	bool ring_ok;
	pthread_t thread;

	struct io_uring_buf_ring *br;   /* provided-buffer ring */
	uint8_t *bufs;                  /* REACTOR_N_BUFS * REACTOR_BUF_BYTES */
	unsigned bufs_free;             /* buffers currently in the ring */

	struct reactor_listener *listeners;
	unsigned n_listeners;

	struct spool_shard *shard;
	bool fsync_inflight;
	bool durable;                   /* durability = batch */

	struct session *sessions;       /* doubly linked list of open sessions */
	unsigned n_sessions;
	struct session *starved;        /* sessions waiting for a receive buffer */

	uint64_t next_session_id;
	int64_t now_ms;                 /* CLOCK_MONOTONIC, updated once per loop */
	int wake_fd;                    /* eventfd: main writes to it on SIGTERM */
	uint64_t wake_val;
	struct __kernel_timespec tick;
	bool stopping;
	int64_t stop_deadline_ms;
	int exit_code;
	char tag[16] __attribute__((aligned(16)));   /* op tag anchor for the reactor itself */
};

/*
 * reactor_init - set up r (caller-owned) as reactor id with the given
 * already-bound listening sockets (owned by r afterwards) and spool. Does
 * not create the ring: that happens in the thread. Returns 0 or -errno.
 */
int reactor_init(struct reactor *r, unsigned id, const struct conf *conf,
		 struct spool *sp, const int *listen_fds,
		 const enum conf_listen_role *roles, unsigned n_listen,
		 struct rm_err *err);

/* reactor_start - start r's thread. Returns 0 or -errno. */
int reactor_start(struct reactor *r, struct rm_err *err);

/* reactor_stop - ask r to stop (thread-safe; from the signal thread). */
void reactor_stop(struct reactor *r);

/* reactor_join - wait for r's thread; returns its exit code (0 = clean). */
int reactor_join(struct reactor *r);

/*
 * reactor_probe - check that io_uring works here at all. Returns 0, or a
 * negative errno with err holding one line that names the cause and the fix
 * (kernel.io_uring_disabled, seccomp, old kernel, memlock).
 */
int reactor_probe(struct rm_err *err);

/* Helpers for session.c: all submissions go through these. */
struct io_uring_sqe *reactor_sqe(struct reactor *r);
void reactor_recv(struct reactor *r, struct session *s, int fd);
void reactor_send(struct reactor *r, struct session *s, int fd,
		  const void *p, size_t len);
/* reactor_buf - the bytes of provided buffer bid. */
uint8_t *reactor_buf(struct reactor *r, unsigned bid);
/* reactor_buf_put - give buffer bid back to the kernel's ring. */
void reactor_buf_put(struct reactor *r, unsigned bid);

#endif
