/*
 * maps_live.h - the daemon's current lookup maps (transport_map and
 * relay_recipients): read from their files at start, re-read on SIGHUP,
 * and handed to the reactor threads without a lock on the hot path.
 *
 * DESIGN (read-copy-update with loop counters)
 *   The maps in use form one immutable struct maps_set behind an atomic
 *   pointer. A reactor thread that needs a map calls maps_current() and
 *   may use what it returns only until it goes back to its event loop:
 *   never store the pointer (or a route or key from it) in a session, a
 *   queue entry or anything else that outlives the current completion
 *   handler. Call maps_current() again the next time; it is one atomic
 *   load.
 *
 *   Only the main thread changes the set. maps_live_replace() publishes
 *   the new set with an atomic exchange, reads every running reactor's
 *   loop counter (struct reactor's n_loops, incremented once per loop
 *   iteration), and waits until each counter has moved on by at least 2.
 *   By then every iteration that was running at the exchange, and so
 *   every maps_current() result that could still point at the old set,
 *   is over; the old set is freed. A reactor goes round its loop at
 *   least once per tick (REACTOR_DEFAULT_TICK_MS, 1 s), so the wait takes
 *   about 2 s at worst. If a reactor does not move on within the bound
 *   (it is stuck or has exited), the old set is not freed but kept aside,
 *   and freed by the next replace that completes its wait, or by
 *   maps_live_fini() once every reactor has stopped.
 *
 *   SIGHUP re-reads the two files named by the configuration given at
 *   start; ringmta.conf itself is not re-read. A file that fails to load
 *   leaves the old set in place. After the privilege drop the files are
 *   read as the run-time user, so they must be readable by it.
 *
 * THREADS
 *   maps_current() from any thread. Everything else from the main thread
 *   only (or one thread at a time, with no reactor running for
 *   maps_live_publish() and maps_live_fini()).
 */
#ifndef RINGMTA_MAPS_LIVE_H
#define RINGMTA_MAPS_LIVE_H

#include <stddef.h>
#include <stdint.h>

#include "ringmta/conf.h"
#include "ringmta/maps.h"
#include "ringmta/reactor.h"
#include "ringmta/util.h"

/* MAPS_LIVE_GRACE_LOOPS - loop iterations every reactor must begin after
 * a swap before the old set is freed (1 would do, see DESIGN; 2 leaves a
 * margin for where in its loop a reactor counts). */
#define MAPS_LIVE_GRACE_LOOPS 2
/* MAPS_LIVE_MAX_WAIT_MS - how long the main thread waits for that: ten
 * ticks. */
#define MAPS_LIVE_MAX_WAIT_MS 10000

/*
 * struct maps_set - one generation of the maps. Immutable once published.
 * transport is NULL when transport_map is empty, rcpt NULL when
 * relay_recipients is empty; the maps.h lookups take NULL (no map).
 */
struct maps_set {
	struct maps_transport *transport;
	struct maps_rcpt *rcpt;
	uint64_t generation;            /* 1, 2, ... in load order */
	struct maps_set *next_retired;  /* private: maps_live's leftovers */
};

/*
 * maps_live_load - read and parse the files named by c->transport_map and
 * c->relay_recipients (each may be empty: no map). On success *out is a
 * new set the caller owns (maps_live_publish, maps_live_replace or
 * maps_live_free). Returns 0, or a negative code with err filled and *out
 * NULL: what maps_transport_parse()/maps_rcpt_parse() return ("FILE:LINE:
 * problem" for a bad line, -EFBIG for a file over its cap), or the -errno
 * of open/read as "maps: open FILE: cause".
 */
int maps_live_load(const struct conf *c, struct maps_set **out,
		   struct rm_err *err);

/* maps_live_free - free a set nobody can be reading; NULL is a no-op. */
void maps_live_free(struct maps_set *s);

/*
 * maps_current - the set in use; never NULL (an empty set before the
 * first maps_live_publish()). Valid until the caller's reactor goes back
 * to its event loop (see DESIGN). Any thread, no lock: one atomic load.
 */
const struct maps_set *maps_current(void);

/*
 * maps_live_publish - make s the first current set, before any reactor
 * runs (it frees a previous set at once). Takes ownership of s.
 */
void maps_live_publish(struct maps_set *s);

/*
 * maps_live_replace - make next current while the n reactors rs[] run,
 * then wait (polling every 10 ms, at most max_wait_ms) until each
 * reactor's n_loops has moved on by MAPS_LIVE_GRACE_LOOPS and free the
 * old set. Takes ownership of next; rs is only read during the call.
 * Returns 0 (old set freed), or -ETIMEDOUT: some reactor did not move on
 * in time, and the old set waits for a later replace or maps_live_fini().
 */
int maps_live_replace(struct maps_set *next, struct reactor *const *rs,
		      size_t n, uint64_t max_wait_ms);

/*
 * maps_live_reload - the SIGHUP action: maps_live_load(c), then
 * maps_live_replace() with MAPS_LIVE_MAX_WAIT_MS. Returns 0, -ETIMEDOUT
 * (the new set is in use; see maps_live_replace), or the load's error
 * with err filled, the old set still current.
 */
int maps_live_reload(const struct conf *c, struct reactor *const *rs,
		     size_t n, struct rm_err *err);

/*
 * maps_live_fini - free the current set and every leftover; current is
 * the empty set again. Only once no reactor runs.
 */
void maps_live_fini(void);

#endif
