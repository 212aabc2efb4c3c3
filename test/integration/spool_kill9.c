/*
 * spool_kill9 - the 250 contract under kill -9: a writer child appends and
 * commits messages on two shards as fast as it can (random sizes,
 * interleaved sessions, aborts, batches of every size) and is killed with
 * SIGKILL at a random moment; the parent then recovers the spool and
 * checks that every acknowledged message is there, byte-exact, and that
 * nothing is there that was never ended; and, as the writer also removes
 * acknowledged messages (spool_shard_done) and sweeps segments, that no
 * acknowledged removal comes back; and, as it also defers some messages
 * for a day (spool_shard_update) and keeps them, which makes the sweeps
 * copy them out of old segments, that those stay byte-exact. Repeats, alternating clean and
 * starts of the writer (trusted index, rebuild) so both paths are exercised.
 *
 * Usage: spool_kill9 [iterations (default 20)] [dir]
 * Exit: 0 all good, 1 a violation (printed), 2 setup failure.
 * XXX a power loss (lost page cache) needs dm-log-writes or a VM reset;
 * this covers process death, where the page cache survives.
 */
#include "ringmta/spool.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ENDED 200000u
#define SESSIONS 6u		/* concurrent messages per shard */
#define MAX_SIZE (300u * 1024u)

struct ended;

/* struct tag - the owner given to the spool: which ack this is. */
struct tag {
	struct ended *e;
	int is_removal;
};

/* struct ended - a message handed to spool_msg_end(). */
struct ended {
	uint64_t id;		/* parsed queue id */
	uint32_t size, seed;
	volatile int acked;	/* the commit's callback said 0 */
	volatile int removal;	/* 1: spool_shard_done() queued, 2: acked */
	volatile int deferred;	/* deferred a day, never removed */
	struct tag tag[3];
};

struct shared {
	volatile uint32_t n_ended;
	uint32_t rm_next[2];	/* per shard: the next message to remove */
	struct ended e[MAX_ENDED];
};

static struct shared *g;
static uint32_t rng_state;

static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

/* fill - bytes off..off+len of the content with this seed (stateless). */
static void fill(uint8_t *p, size_t off, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++) {
		uint32_t x = (uint32_t)(off + i) * 0x9e3779b1u + seed;
		p[i] = (uint8_t)((x ^ (x >> 15)) * 0x2c1b3c6du >> 24);
	}
}

static void on_done(void *owner, const char *id, int status)
{
	struct tag *t = owner;
	(void)id;
	if (status == 0 && t->is_removal == 1)
		t->e->removal = 2;
	else if (status == 0 && t->is_removal == 0)
		t->e->acked = 1;
}

struct session {
	struct spool_msg *m;
	uint32_t size, done_bytes, seed;
};

/* step - advance one session by one write, end or abort. */
static void step(struct spool_shard *sh, struct session *s, uint8_t *buf)
{
	static const struct spool_rcpt r = { "rcpt@example.org", 0, NULL };
	struct spool_envelope env = { "s@example.com", &r, 1, NULL, 0, 0, false,
				      NULL, NULL, 0 };
	struct rm_err err;

	if (s->m == NULL) {
		if (g->n_ended >= MAX_ENDED || spool_msg_begin(sh, &s->m, &err) != 0)
			return;
		s->size = rnd() % 8 == 0 ? rnd() % MAX_SIZE : rnd() % 4000;
		s->seed = rnd();
		s->done_bytes = 0;
	}
	if (s->done_bytes < s->size) {
		uint32_t k = 1 + rnd() % 50000;
		if (k > s->size - s->done_bytes)
			k = s->size - s->done_bytes;
		fill(buf, s->done_bytes, k, s->seed);
		if (spool_msg_write(s->m, buf, k, &err) != 0) {
			spool_msg_abort(s->m);
			s->m = NULL;
			return;
		}
		s->done_bytes += k;
		return;
	}
	if (rnd() % 20 == 0) {
		spool_msg_abort(s->m);
		s->m = NULL;
		return;
	}
	struct ended *e = &g->e[g->n_ended];
	sscanf(spool_msg_id(s->m), "%16" SCNx64, &e->id);
	e->size = s->size;
	e->seed = s->seed;
	e->acked = 0;
	e->removal = 0;
	e->tag[0] = (struct tag){ e, 0 };
	e->tag[1] = (struct tag){ e, 1 };
	e->tag[2] = (struct tag){ e, 2 };
	e->deferred = 0;
	g->n_ended++;		/* published first: a kill may follow the COMMIT */
	(void)spool_msg_end(s->m, &env, &e->tag[0], &err);
	s->m = NULL;
}

/*
 * remove_one - like a delivery engine: remove the oldest message of shard
 * k not removed yet, keeping the newest KEEP_LIVE queued. A message that
 * was never acknowledged may still be in the index (at least once), so it
 * is removed too when it is there.
 */
#define KEEP_LIVE 100u
static void remove_one(struct spool_shard *sh, unsigned k)
{
	struct rm_err err;
	char id[SPOOL_ID_BYTES + 1];

	while (g->rm_next[k] + KEEP_LIVE < g->n_ended) {
		struct ended *e = &g->e[g->rm_next[k]++];
		if (((e->id >> 24) & 0xff) != k || e->removal != 0)
			continue;
		snprintf(id, sizeof(id), "%016" PRIx64, e->id);
		if (e->acked && e->size <= 64u * 1024u && rnd() % 10 == 0) {
			struct spool_rcpt_update up = { 0, SPOOL_RCPT_PENDING, 1,
							(int64_t)time(NULL) + 86400, 0 };
			e->deferred = 1;
			(void)spool_shard_update(sh, id, &up, 1, &e->tag[2], &err);
			return;
		}
		/* published first, as n_ended is: spool_shard_done() writes the
		 * DONE record before it returns, and a kill between the two
		 * would leave a removal the rebuild applies but the check
		 * counts as never asked for (a false LOST) */
		e->removal = 1;
		if (spool_shard_done(sh, id, &e->tag[1], &err) != 0)
			e->removal = 0;
		return;
	}
}

static void writer(const char *dir)
{
	struct spool_opts o = { .dir = dir, .segment_bytes = 1u << 20,
				 .prealloc_bytes = 256u << 10, .n_shards = 2, .uid = -1, .gid = -1 };
	struct spool *sp;
	struct spool_shard *sh[2];
	struct session ss[2][SESSIONS];
	struct rm_err err;
	uint8_t *buf = malloc(MAX_SIZE);
	int fd;

	memset(ss, 0, sizeof(ss));
	if (spool_open(&sp, &o, &err) != 0 || spool_shard_open(sp, 0, &sh[0], &err) != 0 ||
	    spool_shard_open(sp, 1, &sh[1], &err) != 0) {
		fprintf(stderr, "writer: %s\n", err.msg);
		_exit(2);
	}
	for (;;) {
		unsigned k = rnd() % 2;
		step(sh[k], &ss[k][rnd() % SESSIONS], buf);
		if (rnd() % 2 == 0)
			remove_one(sh[k], k);
		if (rnd() % 400 == 0 && spool_shard_sweep(sh[k], &err) < 0) {
			fprintf(stderr, "sweep: %s\n", err.msg);
			_exit(4);
		}
		if (rnd() % 8 == 0 && (fd = spool_shard_sync_begin(sh[k])) >= 0)
			spool_shard_sync_end(sh[k], fdatasync(fd) < 0 ? -errno : 0, on_done, &err);
		if (g->n_ended >= MAX_ENDED)
			for (k = 0; k < 2; k++)
				while ((fd = spool_shard_sync_begin(sh[k])) >= 0)
					spool_shard_sync_end(sh[k], fdatasync(fd) < 0 ? -errno : 0,
							     on_done, &err);
	}
}

/* --- verification --- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

struct seen {
	uint64_t *ids;
	size_t n, cap;
};

static int on_entry(void *arg, const struct spool_entry *e)
{
	struct seen *s = arg;
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 1024;
		s->ids = realloc(s->ids, s->cap * sizeof(*s->ids));
	}
	sscanf(e->id, "%16" SCNx64, &s->ids[s->n++]);
	return 0;
}

struct cmp_sink {
	const uint8_t *want;
	size_t off, len;
	int bad;
};

static int on_bytes(void *arg, const void *p, size_t len)
{
	struct cmp_sink *c = arg;
	if (c->off + len > c->len || memcmp(c->want + c->off, p, len) != 0)
		c->bad = 1;
	c->off += len;
	return 0;
}

/* verify - returns the number of violations. */
static int verify(struct spool *sp, uint8_t *buf, unsigned long *n_acked)
{
	struct seen s = { NULL, 0, 0 };
	struct rm_err err;
	int bad = 0;
	char id[SPOOL_ID_BYTES + 1];

	if (spool_list(sp, on_entry, &s, &err) != 0) {
		fprintf(stderr, "list: %s\n", err.msg);
		return 1;
	}
	qsort(s.ids, s.n, sizeof(*s.ids), cmp_u64);
	*n_acked = 0;
	for (uint32_t i = 0; i < g->n_ended; i++) {
		struct ended *e = &g->e[i];
		bool found = bsearch(&e->id, s.ids, s.n, sizeof(*s.ids), cmp_u64) != NULL;
		if (!e->acked)
			continue;
		(*n_acked)++;
		snprintf(id, sizeof(id), "%016" PRIx64, e->id);
		if (e->removal == 2 && found) {
			fprintf(stderr, "UNDEAD: %s came back after its removal\n", id);
			bad++;
		}
		if (e->removal != 0)
			continue;	/* 1: either is fine */
		if (!found) {
			fprintf(stderr, "LOST: acknowledged %s is missing\n", id);
			bad++;
			continue;
		}
		if (i % 17 != 0 && i + 200 < g->n_ended && !e->deferred)
			continue;	/* read back a sample, the newest, the deferred */
		fill(buf, 0, e->size, e->seed);
		struct cmp_sink c = { buf, 0, e->size, 0 };
		int rc = spool_read(sp, id, on_bytes, &c, &err);
		if (rc != 0 || c.bad || c.off != e->size) {
			fprintf(stderr, "CORRUPT: %s rc %d bad %d len %zu want %u: %s\n",
				id, rc, c.bad, c.off, e->size, rc ? err.msg : "");
			bad++;
		}
	}
	/* nothing in the index that was never ended */
	uint64_t *ended = malloc((g->n_ended + 1) * sizeof(*ended));
	for (uint32_t i = 0; i < g->n_ended; i++)
		ended[i] = g->e[i].id;
	qsort(ended, g->n_ended, sizeof(*ended), cmp_u64);
	for (size_t i = 0; i < s.n; i++)
		if (bsearch(&s.ids[i], ended, g->n_ended, sizeof(*ended), cmp_u64) == NULL) {
			fprintf(stderr, "PHANTOM: %016" PRIx64 " was never ended\n", s.ids[i]);
			bad++;
		}
	for (size_t i = 1; i < s.n; i++)
		if (s.ids[i] == s.ids[i - 1]) {
			fprintf(stderr, "DOUBLE: %016" PRIx64 "\n", s.ids[i]);
			bad++;
		}
	free(ended);
	free(s.ids);
	return bad;
}

int main(int argc, char **argv)
{
	int iters = argc > 1 ? atoi(argv[1]) : 20, bad = 0;
	char tmpl[512], dir[600];
	const char *t = getenv("TMPDIR");
	uint8_t *buf = malloc(MAX_SIZE);

	snprintf(tmpl, sizeof(tmpl), "%s/spool_kill9.XXXXXX", t ? t : "/tmp");
	if (argc > 2)
		snprintf(tmpl, sizeof(tmpl), "%s", argv[2]);
	else if (mkdtemp(tmpl) == NULL)
		return 2;
	snprintf(dir, sizeof(dir), "%s/spool", tmpl);
	g = mmap(NULL, sizeof(*g), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (g == MAP_FAILED)
		return 2;
	rng_state = (uint32_t)time(NULL) | 1;
	printf("spool_kill9: %d iterations in %s (seed %u)\n", iters, dir, rng_state);
	for (int it = 0; it < iters && !bad; it++) {
		pid_t pid = fork();
		if (pid == 0) {
			rng_state = rng_state * 7919u + (uint32_t)it + 1;
			writer(dir);
		}
		struct timespec ts = { 0, (long)(50 + rnd() % 450) * 1000000L };
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		struct spool_opts o = { .dir = dir, .segment_bytes = 1u << 20,
				 .prealloc_bytes = 256u << 10, .n_shards = 2, .uid = -1, .gid = -1 };
		struct spool *sp;
		struct rm_err err;
		struct spool_stats st;
		unsigned long n_acked = 0;
		if (spool_open(&sp, &o, &err) != 0) {
			fprintf(stderr, "open after kill: %s\n", err.msg);
			return 1;
		}
		spool_stats(sp, &st);
		bad += verify(sp, buf, &n_acked);
		printf("  iter %d: ended %u acked %lu indexed %" PRIu64 " rebuilt %d "
		       "segments %" PRIu64 " garbage %" PRIu64 " truncated %" PRIu64 " B zero tail %" PRIu64 " B\n",
		       it, g->n_ended, n_acked, st.n_messages, st.is_rebuilt,
		       st.n_segments, st.n_garbage_msgs, st.n_truncated_bytes,
		       st.n_prealloc_bytes);
		spool_close(sp);	/* clean: the next writer trusts the index */
		if (it % 2 == 1) {
			/* or not: drop the marker as a crash would */
			char m[700];
			snprintf(m, sizeof(m), "%s/index/clean", dir);
			unlink(m);
		}
	}
	printf("spool_kill9: %s\n", bad ? "FAILED" : "ok");
	free(buf);
	if (!bad && argc <= 2) {
		char cmd[700];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpl);
		if (system(cmd) != 0)
			return 2;
	}
	return bad ? 1 : 0;
}
