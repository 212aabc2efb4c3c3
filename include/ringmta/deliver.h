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

/* deliver_kick - scan the queue at the next loop end (after flush or
 * release made messages due). */
void deliver_kick(struct deliver *d);

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
