/*
 * admin.h - "ringmta queue ..." commands, run as a separate process against
 * the spool (safe while the daemon runs: LMDB readers take no write lock).
 */
#ifndef RINGMTA_ADMIN_H
#define RINGMTA_ADMIN_H

#include "ringmta/conf.h"

/*
 * admin_queue - run "queue SUBCOMMAND [ARG]" (argv[0] is the subcommand):
 *   list      one line per message: id= size= from= to= state= next=
 *   cat ID    the stored message bytes on stdout
 * Returns the process exit status: 0, 1 (not found / spool error, message
 * on stderr) or 2 (usage).
 */
int admin_queue(const struct conf *c, int argc, char **argv);

#endif
