/*
 * admin.h - "ringmta queue ..." commands, run as a separate process.
 * list, show and cat read the spool directly (safe while the daemon runs:
 * LMDB readers take no write lock); hold, release, delete and flush ask
 * the running daemon through its control socket (control.h), since only
 * the reactor that owns a message's spool shard may change it.
 */
#ifndef RINGMTA_ADMIN_H
#define RINGMTA_ADMIN_H

#include "ringmta/conf.h"

/*
 * admin_queue - run "queue SUBCOMMAND [ARG]" (argv[0] is the subcommand):
 *   list        one line per message: id= size= arrival= from= to=a,b
 *               rcpt_state=s,s state= next=  (rcpt_state per recipient:
 *               pending, held, delivered, failed; state: queued, deferred,
 *               held (every pending recipient held) or done; next= "held"
 *               for a held message)
 *   show ID     the envelope ("key: value" lines, one "  to=..." line per
 *               recipient with state, attempts, next attempt, NOTIFY and
 *               ORCPT), then "headers:" and the message's header lines
 *   cat ID      the stored message bytes on stdout
 *   hold ID     the daemon stops trying the message (SPOOL_HELD_UNIX)
 *   release ID  a held message becomes due now
 *   delete ID   the daemon removes the message, without a bounce
 *   flush [ID]  the message (or every message not held) becomes due now
 * Peer strings (addresses, headers) are printed escaped. An id may be
 * given in either case. Returns the process exit status: 0; 1 (no such
 * message, wrong state, busy, daemon not running, spool error: a message
 * on stderr); 2 (usage).
 */
int admin_queue(const struct conf *c, int argc, char **argv);

#endif
