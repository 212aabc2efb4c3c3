/*
 * deliver.h - the outbound delivery engine of one reactor: it reads the
 * due messages of the reactor's spool shard, routes their recipients,
 * keeps pools of SMTP/LMTP connections per destination on the reactor's
 * own ring, records every outcome in the spool and bounces what fails.
 *
 * One struct deliver per struct server (shared-nothing, like everything
 * of a reactor). All calls come from the reactor's thread.
 */
#ifndef RINGMTA_DELIVER_H
#define RINGMTA_DELIVER_H

#include <stdbool.h>

#include "ringmta/util.h"

struct server;
struct deliver;

/*
 * deliver_new - the engine of server sv (before its reactor starts).
 * Returns 0 with *out set, or a negative code with err filled.
 */
int deliver_new(struct deliver **out, struct server *sv, struct rm_err *err);

/* deliver_free - release d (after the reactor's loop ended). NULL: no-op. */
void deliver_free(struct deliver *d);

/* deliver_accepted - message queue_id of this shard was just committed
 * (250 sent): try it at once instead of waiting for the next queue scan. */
void deliver_accepted(struct deliver *d, const char *queue_id);

/* deliver_is_busy - whether message queue_id is being delivered now (an
 * admin command must not change its recipients' state meanwhile). */
bool deliver_is_busy(const struct deliver *d, const char *queue_id);

/*
 * deliver_pin - keep message queue_id out of delivery while an admin
 * change to it (hold, delete...) is being committed, so a queue scan that
 * still sees the old state cannot start it and overwrite the change.
 * Returns false when it is being delivered now (busy) or memory is short.
 * deliver_unpin - the change is committed (or failed): let it go.
 */
bool deliver_pin(struct deliver *d, const char *queue_id);
void deliver_unpin(struct deliver *d, const char *queue_id);

/* deliver_kick - scan the queue at the next loop end (after flush or
 * release made messages due). */
void deliver_kick(struct deliver *d);

/* enum deliver_verify_result - what the next hop said of a recipient. */
enum deliver_verify_result {
	DELIVER_VERIFY_OK = 0,      /* it accepted RCPT: accept it (250) */
	DELIVER_VERIFY_UNKNOWN,     /* it refused RCPT with 5xx: 550 5.1.1 */
	DELIVER_VERIFY_TEMP,        /* 4xx, no connection, no answer: 450 4.1.1 */
	DELIVER_VERIFY_PENDING,     /* asked: the callback brings the answer */
};

/* deliver_verify_fn - a verification finished; reason (borrowed for the
 * call) says who said what, for the reply text and the log. */
typedef void deliver_verify_fn(void *arg, enum deliver_verify_result res, const char *reason);

struct deliver_verify;

/*
 * deliver_verify - is addr[0..len) a recipient the next hop of its domain
 * accepts? (Postfix's reject_unverified_recipient.) The answer comes from
 * the cache (verify_positive_ttl, verify_negative_ttl; temporary failures
 * are not cached) and is returned at once (OK, UNKNOWN), or a probe goes
 * out on the domain's route - MAIL FROM:<>, RCPT TO, RSET on a pooled
 * connection - and DELIVER_VERIFY_PENDING is returned with *out set: cb
 * is called once, later, from the loop, unless deliver_verify_cancel(*out)
 * comes first. Concurrent questions about one address share one probe.
 * TEMP is returned at once when the address has no domain, memory is
 * short or the engine is stopping.
 */
int deliver_verify(struct deliver *d, const char *addr, size_t len, deliver_verify_fn *cb,
		   void *arg, struct deliver_verify **out);

/* deliver_verify_cancel - forget the wait w (the session went away);
 * the probe goes on and its answer is cached. */
void deliver_verify_cancel(struct deliver *d, struct deliver_verify *w);

/* deliver_loop_end - the reactor's loop_end hook, before the group commit
 * starts: fresh messages and queue scans begin here, so their spool
 * updates join the same batch. */
void deliver_loop_end(struct deliver *d);

/* deliver_tick - the reactor's tick: reply and idle timeouts, rate limits. */
void deliver_tick(struct deliver *d);

/* deliver_stop - shutdown: close connections; what was not answered
 * stays due in the spool for the next start. */
void deliver_stop(struct deliver *d);

/* deliver_is_done - after deliver_stop: no connection, no uncommitted
 * update, no DNS query is left. */
bool deliver_is_done(const struct deliver *d);

#endif
