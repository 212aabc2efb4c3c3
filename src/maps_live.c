/*
 * maps_live - the daemon's current maps: load them from their files,
 *             publish them to the reactors, swap them on SIGHUP.
 *
 * Owns: the current struct maps_set (behind an atomic pointer) and the
 *   sets retired but not yet freed.
 * Must not: lock or block a reactor; free a set a reactor may still read
 *   (the grace period in maps_live.h); log (main prints the rm_err).
 * Interface: include/ringmta/maps_live.h
 * Limits: each file at most its parser's cap (MAPS_*_MAX_FILE_BYTES,
 *   checked before it is read whole); the main thread waits at most
 *   max_wait_ms per swap.
 * Errors: the parsers' codes and messages; -errno of open/fstat/read as
 *   "maps: open FILE: cause"; -ETIMEDOUT from a swap whose grace period
 *   did not end in time (not an error of the new set).
 * Standards: none.
 */
#include "ringmta/maps_live.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* POLL_NS - how often the main thread looks at the loop counters. */
#define POLL_NS (10 * 1000 * 1000L)

/* empty - what maps_current() returns before the first publish. */
static struct maps_set empty;
static _Atomic(struct maps_set *) current = &empty;
/* retired - sets swapped out whose grace period has not ended yet. */
static struct maps_set *retired;
static uint64_t generation;

void maps_live_free(struct maps_set *s)
{
	if (s == NULL || s == &empty)
		return;
	maps_transport_free(s->transport);
	maps_rcpt_free(s->rcpt);
	free(s);
}

/*
 * read_file - the whole of path into a heap buffer (*text, *len), at most
 * cap bytes (-EFBIG over that, checked with fstat and again while
 * reading, as the file may grow).
 */
static int read_file(const char *path, size_t cap, char **text, size_t *len,
		     struct rm_err *err)
{
	struct stat st;
	size_t n = 0;
	ssize_t got;
	char *buf;
	int fd, rc;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		rc = -errno;
		return rm_err_set(err, rc, "maps: open %s: %s", path,
				  strerror(-rc));
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		close(fd);
		return rm_err_set(err, rc, "maps: fstat %s: %s", path,
				  strerror(-rc));
	}
	if (st.st_size < 0 || (uint64_t)st.st_size > cap) {
		close(fd);
		return rm_err_set(err, -EFBIG, "maps: %s: larger than %zu bytes",
				  path, cap);
	}
	if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
		close(fd);
		return rm_err_set(err, -ENOMEM, "maps: %s: out of memory", path);
	}
	/* Read one byte past the size seen: a file that grew is noticed. */
	while (n <= (size_t)st.st_size) {
		got = read(fd, buf + n, (size_t)st.st_size + 1 - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			rc = -errno;
			close(fd);
			free(buf);
			return rm_err_set(err, rc, "maps: read %s: %s", path,
					  strerror(-rc));
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	close(fd);
	if (n > (size_t)st.st_size) {
		free(buf);
		return rm_err_set(err, -EAGAIN, "maps: read %s: the file "
				  "changed while it was read", path);
	}
	*text = buf;
	*len = n;
	return 0;
}

int maps_live_load(const struct conf *c, struct maps_set **out,
		   struct rm_err *err)
{
	struct maps_set *s;
	size_t len;
	char *text;
	int rc;

	*out = NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return rm_err_set(err, -ENOMEM, "maps: out of memory");
	if (c->transport_map[0]) {
		rc = read_file(c->transport_map, MAPS_TRANSPORT_MAX_FILE_BYTES,
			       &text, &len, err);
		if (rc < 0)
			goto fail;
		rc = maps_transport_parse(c->transport_map, text, len,
					  &s->transport, err);
		free(text);
		if (rc < 0)
			goto fail;
	}
	if (c->relay_recipients[0]) {
		rc = read_file(c->relay_recipients, MAPS_RCPT_MAX_FILE_BYTES,
			       &text, &len, err);
		if (rc < 0)
			goto fail;
		rc = maps_rcpt_parse(c->relay_recipients, text, len, &s->rcpt,
				     err);
		free(text);
		if (rc < 0)
			goto fail;
	}
	s->generation = ++generation;
	*out = s;
	return 0;
fail:
	maps_live_free(s);
	return rc;
}

const struct maps_set *maps_current(void)
{
	return atomic_load(&current);
}

void maps_live_publish(struct maps_set *s)
{
	maps_live_free(atomic_exchange(&current, s ? s : &empty));
}

/* free_retired - free every set kept aside. */
static void free_retired(void)
{
	while (retired != NULL) {
		struct maps_set *s = retired;
		retired = s->next_retired;
		maps_live_free(s);
	}
}

/* moved_on - whether every counter is MAPS_LIVE_GRACE_LOOPS past snap. */
static bool moved_on(struct reactor *const *rs, size_t n, const uint64_t *snap)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (atomic_load(&rs[i]->n_loops) - snap[i] <
		    MAPS_LIVE_GRACE_LOOPS)
			return false;
	return true;
}

int maps_live_replace(struct maps_set *next, struct reactor *const *rs,
		      size_t n, uint64_t max_wait_ms)
{
	const struct timespec poll = { 0, POLL_NS };
	struct maps_set *old;
	uint64_t *snap = NULL, waited_ns = 0;
	size_t i;

	/* seq_cst: the exchange comes before every counter read below, so
	 * an iteration a reactor begins after we read its counter sees the
	 * new set (see maps_live.h). */
	old = atomic_exchange(&current, next ? next : &empty);
	if (old != &empty) {
		old->next_retired = retired;
		retired = old;
	}
	if (n && (snap = calloc(n, sizeof(*snap))) == NULL)
		return -ETIMEDOUT;      /* freed later: correct, only later */
	for (i = 0; i < n; i++)
		snap[i] = atomic_load(&rs[i]->n_loops);
	while (!moved_on(rs, n, snap)) {
		if (waited_ns >= max_wait_ms * 1000000ULL) {
			free(snap);
			return -ETIMEDOUT;
		}
		nanosleep(&poll, NULL);
		waited_ns += POLL_NS;
	}
	free(snap);
	free_retired();
	return 0;
}

int maps_live_reload(const struct conf *c, struct reactor *const *rs,
		     size_t n, struct rm_err *err)
{
	struct maps_set *s;
	int rc = maps_live_load(c, &s, err);

	if (rc < 0)
		return rc;
	return maps_live_replace(s, rs, n, MAPS_LIVE_MAX_WAIT_MS);
}

void maps_live_fini(void)
{
	maps_live_free(atomic_exchange(&current, &empty));
	free_retired();
}
