/*
 * server.h - the daemon's part of one reactor: its listening sockets, its
 * SMTP sessions, its spool shard and the group commit.
 *
 * One struct server per reactor, shared-nothing: sessions never move
 * between reactors. The group commit: at the end of every loop iteration
 * (reactor hook loop_end) the spool shard's pending batch, i.e. every
 * message whose data ended during the iteration, gets one IORING_OP_FSYNC
 * (datasync); the reactor keeps serving other sessions while it runs; its
 * completion commits the batch to the index and calls every item's owner
 * back through spool_owner_done (struct spool_owner): a session releases
 * its 250 (session_commit_done), an admin request its reply. At most one fsync is in flight per
 * reactor; the next batch starts when it completes.
 */
#ifndef RINGMTA_SERVER_H
#define RINGMTA_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "ringmta/conf.h"
#include "ringmta/control.h"
#include "ringmta/reactor.h"
#include "ringmta/spool.h"
#include "ringmta/util.h"

/* SERVER_SHUTDOWN_GRACE_MS - how long open sessions may take to finish
 * after SIGTERM before they are cut (a message not yet answered 250 is not
 * lost: the client still holds it). */
#define SERVER_SHUTDOWN_GRACE_MS 10000

/* The server's reactor ops. */
enum server_op {
	SERVER_OP_ACCEPT = 1,
	SERVER_OP_RECV,
	SERVER_OP_SEND,
	SERVER_OP_FSYNC,
	SERVER_OP_SYNC_TIMER,
	/* 6..7 free; 8..11 belong to the delivery engine (deliver.c) */
	SERVER_OP_DELIVER_FIRST = 8,
};

struct session;
struct deliver;


/* struct server_listener - one listening socket of one reactor. */
struct server_listener {
	int fd;
	enum conf_listen_role role;
	bool is_armed;
	bool is_paused;   /* accept failed (EMFILE...): re-armed at the tick */
} __attribute__((aligned(16)));

struct server {
	struct reactor r;
	const struct conf *conf;
	struct spool_shard *shard;
	struct spool *spool;
	struct deliver *deliver;        /* the outbound engine of this reactor */
	bool is_fsync_inflight;
	bool is_durable;                /* durability = batch */
	bool is_sync_timer_armed;       /* waiting for sync_slot_ns */
	int64_t sync_spacing_ns;        /* 1 s / fsync_rate_limit, or 0 */
	uint64_t n_moved_logged;        /* spool_shard_n_moved at the last sweep */
	int64_t sync_slot_ns;           /* reserved fsync start, or 0 */
	struct __kernel_timespec sync_wait;
	struct server_listener *listeners;
	unsigned n_listeners;
	struct session *sessions;       /* doubly linked list of open sessions */
	unsigned n_sessions;
	struct session *starved;        /* sessions waiting for a receive buffer */
	uint64_t next_session_id;
	int64_t stop_deadline_ms;
	int64_t next_sweep_ms;          /* next spool_shard_sweep */
	struct control_mailbox mbox;    /* admin requests from the main thread */
	char anchor[16] __attribute__((aligned(16)));
};

/*
 * server_init - set up sv as reactor id with the already-bound listening
 * sockets (owned by sv afterwards) and shard id of sp. Returns 0 or a
 * negative code with err filled.
 */
int server_init(struct server *sv, unsigned id, const struct conf *conf,
		struct spool *sp, const int *listen_fds,
		const enum conf_listen_role *roles, unsigned n_listen,
		struct rm_err *err);

/* server_of - the server that owns reactor r. */
static inline struct server *server_of(struct reactor *r)
{
	return (struct server *)r->ctx;
}

/* server_fini - free what server_init allocated (after reactor_join). */
void server_fini(struct server *sv);

#endif
