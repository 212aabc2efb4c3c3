/*
 * control.h - queue administration in the running daemon: the control
 * socket that the main thread serves, and the mailbox through which it
 * hands each request to the reactor that owns the message's spool shard.
 *
 * DESIGN
 *
 * The socket. <spool_dir>/control, a unix stream socket created by
 * control_open() while the daemon is still root: mode 0600, owned by the
 * run-time user, so only root and that user can connect; a stale socket
 * (left by a crash) is replaced, anything else at that path is an error.
 * The peer's SO_PEERCRED uid must be 0 or the daemon's own (defence in
 * depth, should the file mode ever be loosened). The main thread serves
 * one client at a time (admin commands are rare and quick): the request
 * must arrive within CONTROL_IO_TIMEOUT_MS and the reply is sent within the
 * same bound, so a stuck client cannot hold off signals or other admins
 * for long; a pending signal ends the client at once. Wire format:
 * control_proto.h.
 *
 * The mailbox. Only the shard named in a queue id may change the message
 * (spool.h), and a shard belongs to its reactor's thread. So the main
 * thread posts a struct control_req to that reactor's mailbox (a mutex-
 * protected list in its struct server) and calls reactor_wake(); the
 * reactor's wake hook (control_run()) takes the list and carries each
 * request out against its shard with spool_shard_update() or
 * spool_shard_done(), passing the request as the item's struct
 * spool_owner. The answer is written when the group commit calls the
 * owner back with status 0, so "queue hold X && queue list" shows X held.
 * "flush" without an id goes to every reactor and is answered when all
 * have finished. The main thread waits on an eventfd for at most
 * CONTROL_REPLY_TIMEOUT_MS (and returns early on a signal); requests are
 * reference counted, so a reactor that answers after the wait gave up
 * frees them itself.
 *
 * Semantics (in the reactor thread): hold sets every PENDING recipient's
 * next attempt to SPOOL_HELD_UNIX; release sets held recipients' next
 * attempt to now; flush ID makes PENDING recipients that are not held due
 * now; flush does that for every message of the shard; delete removes the
 * message (spool_shard_done: no bounce, logged). release and flush call
 * deliver_kick(). A message deliver_is_busy() reports is not held,
 * released or deleted ("busy"; the CLI says try again); flush leaves it
 * alone, since it is being delivered already.
 *
 * Threads: control_open/serve/close in the main thread; control_run and
 * control_mailbox_close in the reactor's; control_mailbox_init/fini where
 * the struct server is set up and torn down (no reactor running).
 */
#ifndef RINGMTA_CONTROL_H
#define RINGMTA_CONTROL_H

#include <pthread.h>
#include <stdbool.h>

#include "ringmta/util.h"

/* CONTROL_SOCKET_NAME - the socket's file name in spool_dir. */
#define CONTROL_SOCKET_NAME "control"
/* CONTROL_IO_TIMEOUT_MS - a client has this long to send its request and
 * again to take the reply: generous for a human at a shell, short enough
 * that signals are not held up noticeably. */
#define CONTROL_IO_TIMEOUT_MS 3000
/* CONTROL_REPLY_TIMEOUT_MS - how long the main thread waits for the
 * reactors: one group commit is milliseconds; a flush of a huge shard, or
 * a disk in trouble, may take longer, and then the client hears
 * "unavailable: timed out" while the reactor still finishes the job. */
#define CONTROL_REPLY_TIMEOUT_MS 5000
/* CONTROL_TEXT_BYTES - one reply text (ids, counts, a spool error). */
#define CONTROL_TEXT_BYTES 320

struct server;
struct control_req;
struct control;

/*
 * struct control_mailbox - requests posted to one reactor. Embedded in
 * struct server; the fields are private to control.c.
 */
struct control_mailbox {
	pthread_mutex_t mu;
	struct control_req *head, *tail;  /* posted, not yet taken (mu) */
	bool is_closed;                   /* the reactor is gone: refuse (mu) */
	struct control_req *active;       /* taken, awaiting commits (reactor) */
};

/* control_mailbox_init - an empty, open mailbox (cannot fail). */
void control_mailbox_init(struct control_mailbox *mb);

/*
 * control_mailbox_close - the reactor is finishing (hooks->finish, in its
 * thread, before the spool shard closes): answer every request taken or
 * still posted with "unavailable", and refuse later posts. The shard then
 * drops the requests' pending items without calling them back.
 */
void control_mailbox_close(struct control_mailbox *mb);

/* control_mailbox_fini - close (as above, for a reactor that never ran)
 * and destroy the mutex. After reactor_join(). */
void control_mailbox_fini(struct control_mailbox *mb);

/*
 * control_run - the wake hook of server sv's reactor: take everything
 * posted to sv's mailbox and carry it out on sv's shard (see DESIGN).
 */
void control_run(struct server *sv);

/*
 * control_open - create and listen on <spool_dir>/control (see DESIGN),
 * owned by uid:gid unless they are -1. Call before dropping privileges.
 * *out is released with control_close(). Returns 0, -ENAMETOOLONG (the
 * path does not fit a sockaddr_un: the daemon can run without it),
 * -EEXIST (something that is not a socket is in the way), -ENOMEM, or
 * -errno of lstat/unlink/socket/bind/lchown/listen; err says which.
 */
int control_open(struct control **out, const char *spool_dir, int uid, int gid,
		 struct rm_err *err);

/* control_fd - the listening socket, to poll for POLLIN. */
int control_fd(const struct control *c);

/*
 * control_serve - accept one client on c and answer its request, routing
 * it to servers[0..n_servers) (reactor i owns shard i). Returns when the
 * reply is sent, the client failed or timed out, or sig_fd (a signalfd;
 * -1 for none) became readable: the signal is left for the caller. Never
 * fails: everything is answered or logged.
 */
void control_serve(struct control *c, struct server *servers, unsigned n_servers,
		   int sig_fd);

/*
 * control_close - stop listening and remove the socket if it is still the
 * one control_open() made (the run-time user needs write access to
 * spool_dir for that; otherwise the next start replaces it). NULL: no-op.
 */
void control_close(struct control *c);

/*
 * control_socket_path - <spool_dir>/control into out (cap bytes). Returns
 * 0, or -ENAMETOOLONG when it does not fit out or a sockaddr_un.
 */
int control_socket_path(char *out, size_t cap, const char *spool_dir);

#endif
