/*
 * admin - "ringmta queue list|cat": read the spool from a separate process.
 *
 * Owns: a read-only spool handle for the duration of one command.
 * Must not: write to the spool (LMDB readers only; safe while the daemon
 *       runs).
 * Interface: include/ringmta/admin.h
 * Limits: none beyond the spool's.
 * Errors: exit status 1 with "ringmta: queue: ..." on stderr; 2 for usage.
 */
#include "ringmta/admin.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ringmta/spool.h"

static void iso_time(int64_t t, char *out, size_t cap)
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (t == INT64_MAX || gmtime_r(&tt, &tm) == NULL) {
		snprintf(out, cap, "never");
		return;
	}
	strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* entry_state - queued (never tried), deferred (tried) or done. */
static const char *entry_state(const struct spool_entry *e)
{
	unsigned attempts = 0, pending = 0;

	for (size_t i = 0; i < e->n_rcpts; i++) {
		if (e->rcpts[i].state == SPOOL_RCPT_PENDING)
			pending++;
		attempts += e->rcpts[i].attempts;
	}
	if (pending == 0)
		return "done";
	return attempts ? "deferred" : "queued";
}

static int print_entry(void *arg, const struct spool_entry *e)
{
	FILE *f = arg;
	char next[32];

	iso_time(e->next_attempt_unix, next, sizeof(next));
	fprintf(f, "id=%s size=%llu from=%s to=", e->id, (unsigned long long)e->size,
		e->sender[0] ? e->sender : "<>");
	for (size_t i = 0; i < e->n_rcpts; i++)
		fprintf(f, "%s%s", i ? "," : "", e->rcpts[i].addr);
	fprintf(f, " state=%s next=%s\n", entry_state(e), next);
	return 0;
}

static int write_out(void *arg, const void *p, size_t len)
{
	return fwrite(p, 1, len, arg) == len ? 0 : -EIO;
}

int admin_queue(const struct conf *c, int argc, char **argv)
{
	struct rm_err err = { 0, "" };
	struct spool_opts so;
	struct spool *sp = NULL;
	int rc;

	if (argc < 1 || (strcmp(argv[0], "list") != 0 && strcmp(argv[0], "cat") != 0) ||
	    (strcmp(argv[0], "cat") == 0 && argc != 2) ||
	    (strcmp(argv[0], "list") == 0 && argc != 1)) {
		fprintf(stderr, "usage: ringmta [-c FILE] [-o key=value] queue list | queue cat ID\n");
		return 2;
	}
	memset(&so, 0, sizeof(so));
	so.dir = c->spool_dir;
	so.map_bytes = c->spool_map_size;
	so.n_shards = 1;
	so.uid = -1;
	so.gid = -1;
	so.read_only = true;
	rc = spool_open(&sp, &so, &err);
	if (rc == -ENOENT && strcmp(argv[0], "list") == 0)
		return 0;   /* no spool yet: an empty queue */
	if (rc < 0) {
		fprintf(stderr, "ringmta: queue: %s\n", err.msg[0] ? err.msg : spool_strerror(rc));
		return 1;
	}
	if (strcmp(argv[0], "list") == 0)
		rc = spool_list(sp, print_entry, stdout, &err);
	else
		rc = spool_read(sp, argv[1], write_out, stdout, &err);
	spool_close(sp);
	if (fflush(stdout) != 0 && rc == 0)
		rc = -EIO;
	if (rc < 0) {
		fprintf(stderr, "ringmta: queue %s: %s\n", argv[0],
			err.msg[0] ? err.msg : spool_strerror(rc));
		return 1;
	}
	return 0;
}
