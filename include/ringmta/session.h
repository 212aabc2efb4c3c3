/*
 * session.h - one inbound SMTP connection: the glue between the reactor's
 * completions, the sans-I/O smtp_server state machine and the spool.
 */
#ifndef RINGMTA_SESSION_H
#define RINGMTA_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct server;
struct session;

/*
 * session_accept - a new connection fd accepted by sv.
 * Takes ownership of fd (closed on any failure). peer is the client
 * address. Applies max_connections / max_connections_per_ip (a 421 reply,
 * then close).
 */
void session_accept(struct server *sv, int fd, const struct sockaddr *peer,
		    socklen_t peer_len);

/* session_on_recv - completion of a receive (res as in the CQE). */
void session_on_recv(struct session *s, int res, unsigned cqe_flags);
/* session_on_send - completion of a send. */
void session_on_send(struct session *s, int res);

/* session_tick - idle-timeout check at now_ms. */
void session_tick(struct session *s, int64_t now_ms);
/* session_shutdown - the daemon stops: 421 at the next command boundary. */
void session_shutdown(struct session *s);
/* session_kill - cut the connection now (end of the shutdown grace). */
void session_kill(struct session *s);
/* session_wake - a receive buffer became free: re-arm the receive. */
void session_wake(struct session *s);
/* session_list_next - the session after s in its reactor's list, or NULL. */
struct session *session_list_next(struct session *s);
/* session_next_starved - list link for the reactor's starved list. */
struct session **session_starved_link(struct session *s);

struct spool_owner;

/* session_commit_done - the session's struct spool_owner callback (the
 * server passes spool_owner_done to the group commit): the commit of this
 * session's message ended with status (0 = durable). */
void session_commit_done(struct spool_owner *o, const char *queue_id, int status);

#endif
