/*
 * spool_bench - how many messages per second one spool shard appends and
 * commits, with one fdatasync per batch (as the reactor does it, but with
 * a blocking fdatasync() instead of io_uring).
 *
 * Usage: spool_bench [-d dir] [-n messages] [-b batch] [-s bytes] [-S] [-r]
 *   -d  spool directory (default: a new mkdtemp under $TMPDIR or /tmp,
 *       removed afterwards); put it on the disk you want to measure
 *   -n  messages (default 100000)   -b  messages per fdatasync (default 20)
 *   -s  message size (default 1024) -S  skip the fdatasync (page cache only)
 *   -r  then time a recovery: drop the clean marker, reopen, rebuild
 * Prints one line: messages/s, fdatasyncs/s, MB/s, mean batch latency,
 * and with -r a second one: rebuild time and rate.
 */
#include "ringmta/spool.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static unsigned long n_acked, n_failed;

static void on_done(void *owner, const char *id, int status)
{
	(void)owner;
	(void)id;
	if (status == 0)
		n_acked++;
	else
		n_failed++;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* run - n messages in batches; returns the number of fdatasyncs. */
static unsigned long run(struct spool_shard *sh, unsigned long n, unsigned batch,
			 const void *body, size_t size, int no_sync)
{
	struct spool_rcpt r = { "rcpt@example.org", 0, NULL };
	struct spool_envelope env = { "sender@example.com", &r, 1, NULL, 0, 0, false,
				      "192.0.2.1", "bench.example.com", 0 };
	struct spool_msg *m;
	struct rm_err err;
	unsigned long syncs = 0;
	int fd;

	for (unsigned long i = 0; i < n; i++) {
		env.arrival_unix = (int64_t)time(NULL);
		if (spool_msg_begin(sh, &m, &err) != 0 ||
		    spool_msg_write(m, body, size, &err) != 0 ||
		    spool_msg_end(m, &env, NULL, &err) != 0) {
			fprintf(stderr, "spool_bench: %s\n", err.msg);
			exit(1);
		}
		if ((i + 1) % batch != 0 && i + 1 != n)
			continue;
		while ((fd = spool_shard_sync_begin(sh)) >= 0) {
			int res = no_sync ? 0 : fdatasync(fd) < 0 ? -errno : 0;
			spool_shard_sync_end(sh, res, on_done, &err);
			syncs++;
		}
	}
	return syncs;
}

/* rebuild - drop the clean marker and time spool_open's recovery. */
static int rebuild(const struct spool_opts *o)
{
	char marker[700];
	struct spool *sp;
	struct spool_stats st;
	struct rm_err err;

	snprintf(marker, sizeof(marker), "%s/index/clean", o->dir);
	if (unlink(marker) < 0) {
		perror(marker);
		return 1;
	}
	double t0 = now_s();
	if (spool_open(&sp, o, &err) != 0) {
		fprintf(stderr, "spool_bench: %s\n", err.msg);
		return 1;
	}
	double dt = now_s() - t0;
	spool_stats(sp, &st);
	printf("spool_bench: rebuild of %" PRIu64 " msgs from %" PRIu64 " segments "
	       "(%" PRIu64 " records): %.2f s, %.0f msgs/s\n", st.n_messages,
	       st.n_segments, st.n_records, dt, (double)st.n_messages / dt);
	spool_close(sp);
	return 0;
}

int main(int argc, char **argv)
{
	char tmpl[512], *dir = NULL;
	unsigned long n = 100000;
	unsigned batch = 20;
	size_t size = 1024;
	int opt, no_sync = 0, do_rebuild = 0;

	while ((opt = getopt(argc, argv, "d:n:b:s:Sr")) != -1) {
		switch (opt) {
		case 'd': dir = optarg; break;
		case 'n': n = strtoul(optarg, NULL, 10); break;
		case 'b': batch = (unsigned)strtoul(optarg, NULL, 10); break;
		case 's': size = strtoul(optarg, NULL, 10); break;
		case 'S': no_sync = 1; break;
		case 'r': do_rebuild = 1; break;
		default:
			fprintf(stderr, "usage: spool_bench [-d dir] [-n msgs] [-b batch] "
				"[-s bytes] [-S]\n");
			return 2;
		}
	}
	if (batch == 0 || n == 0)
		return 2;
	int is_tmp = dir == NULL;
	if (is_tmp) {
		const char *t = getenv("TMPDIR");
		snprintf(tmpl, sizeof(tmpl), "%s/spool_bench.XXXXXX", t ? t : "/tmp");
		if ((dir = mkdtemp(tmpl)) == NULL) {
			perror("mkdtemp");
			return 1;
		}
	}
	char path[600];
	snprintf(path, sizeof(path), "%s/spool", dir);
	struct spool_opts o = { .dir = path, .prealloc_bytes = 4u << 20, .n_shards = 1,
				.uid = -1, .gid = -1 };
	struct spool *sp;
	struct spool_shard *sh;
	struct rm_err err;
	if (spool_open(&sp, &o, &err) != 0 || spool_shard_open(sp, 0, &sh, &err) != 0) {
		fprintf(stderr, "spool_bench: %s\n", err.msg);
		return 1;
	}
	char *body = malloc(size + 1);
	for (size_t i = 0; i < size; i++)
		body[i] = (char)('a' + i % 26);
	double t0 = now_s();
	unsigned long syncs = run(sh, n, batch, body, size, no_sync);
	double dt = now_s() - t0;
	printf("spool_bench: %lu msgs of %zu B, batch %u%s: %.0f msgs/s, %.0f syncs/s, "
	       "%.1f MB/s, %.3f ms per batch, acked %lu failed %lu\n",
	       n, size, batch, no_sync ? " (no fdatasync)" : "", n / dt, syncs / dt,
	       n * (double)size / dt / 1e6, dt * 1e3 / (double)syncs, n_acked, n_failed);
	spool_shard_close(sh);
	spool_close(sp);
	free(body);
	if (do_rebuild && rebuild(&o) != 0)
		return 1;
	if (is_tmp) {
		char cmd[700];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "spool_bench: could not remove %s\n", dir);
	}
	return n_failed ? 1 : 0;
}
