/*
 * test_spool - the durable spool: round trips, group commit, rotation,
 * recovery from crashes and damaged segments, map full, write errors.
 *
 * Each case works in its own mkdtemp directory under $TMPDIR. A "crash"
 * is a forked child that writes and then _exit()s without closing
 * anything: LMDB must not be opened twice in one process, and a real
 * process death is what the spool has to survive. The group commit is
 * driven with plain fdatasync() instead of io_uring.
 */
#include "ringmta/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <dirent.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <grp.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "t.h"

#define MAX_MSGS 512

/* ---- fixtures -------------------------------------------------------------- */

static char tmp_root[256];

static const char *new_dir(const char *tag)
{
	static char dir[512];
	snprintf(dir, sizeof(dir), "%s/%s", tmp_root, tag);
	if (mkdir(dir, 0700) < 0) {
		perror(dir);
		exit(2);
	}
	strcat(dir, "/spool");
	return dir;
}

/* g_prealloc - prealloc_bytes of opts(); 0 only where a test cuts a
 * segment at its end (test_damage). */
static uint64_t g_prealloc = 64u << 10;

static struct spool_opts opts(const char *dir)
{
	/* prealloc: every test also covers the zero-filled segment tails */
	struct spool_opts o = { .dir = dir, .prealloc_bytes = g_prealloc, .n_shards = 2,
				.uid = -1, .gid = -1 };
	return o;
}

static struct spool *open_or_die(const struct spool_opts *o)
{
	struct spool *sp;
	struct rm_err err = { 0, "" };
	int rc = spool_open(&sp, o, &err);
	if (rc != 0) {
		fprintf(stderr, "spool_open %s: %d %s\n", o->dir, rc, err.msg);
		exit(2);
	}
	return sp;
}

static struct spool_shard *shard_or_die(struct spool *sp, unsigned n)
{
	struct spool_shard *sh;
	struct rm_err err;
	if (spool_shard_open(sp, n, &sh, &err) != 0) {
		fprintf(stderr, "spool_shard_open: %s\n", err.msg);
		exit(2);
	}
	return sh;
}

/* struct ack - what the done callback reported for one message. */
struct ack {
	int calls;
	int status;
	char id[SPOOL_ID_BYTES + 1];
};

static void on_done(void *owner, const char *id, int status)
{
	struct ack *a = owner;
	a->calls++;
	a->status = status;
	snprintf(a->id, sizeof(a->id), "%s", id);
}

/* drive - run the group commit like the reactor, with plain fdatasync. */
static int drive(struct spool_shard *sh)
{
	struct rm_err err;
	int fd, steps = 0;

	while ((fd = spool_shard_sync_begin(sh)) >= 0) {
		int res = fdatasync(fd) < 0 ? -errno : 0;
		spool_shard_sync_end(sh, res, on_done, &err);
		steps++;
	}
	return steps;
}

static const struct spool_rcpt rcpts2[] = {
	{ "alice@example.org", SPOOL_NOTIFY_SUCCESS | SPOOL_NOTIFY_FAILURE,
	  "rfc822;alice@example.org" },
	{ "bob@example.net", 0, NULL },
};

static struct spool_envelope envelope(int64_t arrival)
{
	struct spool_envelope e = {
		"sender@example.com", rcpts2, 2, "ENV123", SPOOL_RET_HDRS,
		SPOOL_BODY_8BITMIME, true, "192.0.2.7", "client.example.com",
		arrival,
	};
	return e;
}

/* fill - deterministic content for message n. */
static void fill(uint8_t *p, size_t len, unsigned n)
{
	uint32_t x = 2166136261u ^ n;
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		p[i] = (uint8_t)(x >> 16);
	}
}

/*
 * put - store one message of len bytes (content fill(n)) written in pieces
 * of piece bytes; ended and, when do_sync, synced. Returns msg_end's code.
 */
static int put(struct spool_shard *sh, size_t len, unsigned n, size_t piece,
	       struct ack *a, bool do_sync)
{
	struct spool_msg *m;
	struct spool_envelope env = envelope(1700000000 + n);
	struct rm_err err;
	uint8_t *buf = malloc(len + 1);
	int rc;

	fill(buf, len, n);
	if (spool_msg_begin(sh, &m, &err) != 0)
		exit(2);
	memset(a, 0, sizeof(*a));
	snprintf(a->id, sizeof(a->id), "%s", spool_msg_id(m));
	for (size_t off = 0; off < len; off += piece) {
		size_t k = len - off < piece ? len - off : piece;
		if ((rc = spool_msg_write(m, buf + off, k, &err)) != 0) {
			spool_msg_abort(m);
			free(buf);
			return rc;
		}
	}
	free(buf);
	rc = spool_msg_end(m, &env, a, &err);
	if (rc == 0 && do_sync)
		drive(sh);
	return rc;
}

/* ---- reading back --------------------------------------------------------- */

struct listing {
	int n;
	char id[MAX_MSGS][SPOOL_ID_BYTES + 1];
	uint64_t size[MAX_MSGS];
	int64_t due[MAX_MSGS];
};

static int on_entry(void *arg, const struct spool_entry *e)
{
	struct listing *l = arg;
	if (l->n < MAX_MSGS) {
		memcpy(l->id[l->n], e->id, sizeof(e->id));
		l->size[l->n] = e->size;
		l->due[l->n] = e->next_attempt_unix;
	}
	l->n++;
	return 0;
}

static struct listing list(struct spool *sp)
{
	static struct listing l;
	struct rm_err err;
	memset(&l, 0, sizeof(l));
	int rc = spool_list(sp, on_entry, &l, &err);
	T_EQ_INT(rc, 0);
	return l;
}

/* count_id - how often id appears in l. */
static int count_id(const struct listing *l, const char *id)
{
	int c = 0;
	for (int i = 0; i < l->n && i < MAX_MSGS; i++)
		c += strcmp(l->id[i], id) == 0;
	return c;
}

struct sink {
	uint8_t *p;
	size_t len, cap;
	int calls;
};

static int on_bytes(void *arg, const void *p, size_t len)
{
	struct sink *s = arg;
	if (s->len + len > s->cap) {
		s->cap = (s->len + len) * 2;
		s->p = realloc(s->p, s->cap);
	}
	memcpy(s->p + s->len, p, len);
	s->len += len;
	s->calls++;
	return 0;
}

/* check_content - id reads back as fill(n) of len bytes. */
static void check_content(struct spool *sp, const char *id, size_t len, unsigned n)
{
	struct sink s = { NULL, 0, 0, 0 };
	struct rm_err err = { 0, "" };
	uint8_t *want = malloc(len + 1);
	int rc = spool_read(sp, id, on_bytes, &s, &err);

	fill(want, len, n);
	T_CHECK(rc == 0, "spool_read %s: got %d (%s), want 0", id, rc, err.msg);
	T_CHECK(s.len == len && (len == 0 || memcmp(s.p, want, len) == 0),
		"content of %s: got %zu bytes, want %zu (equal: %d)", id, s.len, len,
		s.len == len && len > 0 ? memcmp(s.p, want, len) == 0 : -1);
	free(want);
	free(s.p);
}

static int count_segments(const char *dir)
{
	char path[600];
	DIR *d;
	struct dirent *de;
	int n = 0;

	snprintf(path, sizeof(path), "%s/seg", dir);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		n += strstr(de->d_name, ".seg") != NULL;
	closedir(d);
	return n;
}

/* last_segment - path of the newest segment of shard 0. */
static void last_segment(const char *dir, char *out, size_t cap)
{
	char path[600], best[300] = "";
	DIR *d;
	struct dirent *de;

	snprintf(path, sizeof(path), "%s/seg", dir);
	d = opendir(path);
	while ((de = readdir(d)) != NULL)
		if (strncmp(de->d_name, "000-", 4) == 0 && strcmp(de->d_name, best) > 0)
			snprintf(best, sizeof(best), "%s", de->d_name);
	closedir(d);
	snprintf(out, cap, "%.300s/%.300s", path, best);
}

static off_t file_size(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 ? sb.st_size : -1;
}

/* ---- crashing children ------------------------------------------------------ */

/* shared between a crashing child and the test: ids it got acknowledged */
struct shared {
	int n;
	char id[MAX_MSGS][SPOOL_ID_BYTES + 1];
	int status[MAX_MSGS];
	int rc;
};

static struct shared *shared_new(void)
{
	struct shared *s = mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE,
				MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (s == MAP_FAILED)
		exit(2);
	memset(s, 0, sizeof(*s));
	return s;
}

/* in_child - run fn in a child that dies without cleaning up (kill -9). */
static void in_child(void (*fn)(const char *, struct shared *), const char *dir,
		     struct shared *sh)
{
	pid_t pid = fork();
	int st;

	if (pid == 0) {
		fn(dir, sh);
		_exit(0);
	}
	waitpid(pid, &st, 0);
	T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
}

/* ---- cases -------------------------------------------------------------------- */

static void test_crc32c(void)
{
	T_CASE("crc32c_rfc3720_vector");
	T_EQ_INT(spool_crc32c(0, "123456789", 9), 0xe3069283u);
	T_EQ_INT(spool_crc32c(spool_crc32c(0, "1234", 4), "56789", 5), 0xe3069283u);
	T_EQ_INT(spool_crc32c(0, "", 0), 0);
}

/* struct strerror_case - spool_strerror covers all three ranges. */
static const struct strerror_case {
	int code;
	const char *has;
} strerror_cases[] = {
	{ 0, "success" },
	{ SPOOL_ECORRUPT, "corrupt" },
	{ SPOOL_EMAPFULL, "map_bytes" },
	{ SPOOL_EABANDONED, "abandoned" },
	{ -ENOSPC, "No space" },
	{ MDB_MAP_FULL, "MDB_MAP_FULL" },
	{ MDB_KEYEXIST, "MDB_KEYEXIST" },
	{ -99999, "unknown" },
};

static void test_strerror(void)
{
	for (size_t i = 0; i < sizeof(strerror_cases) / sizeof(strerror_cases[0]); i++) {
		const struct strerror_case *c = &strerror_cases[i];
		T_CASE("strerror");
		T_CHECK(strstr(spool_strerror(c->code), c->has) != NULL,
			"spool_strerror(%d): got \"%s\", want \"%s\" in it", c->code,
			spool_strerror(c->code), c->has);
	}
}

/* struct rt_case - one round-trip message: size and write piece size. */
static const struct rt_case {
	const char *name;
	size_t len, piece;
} rt_cases[] = {
	{ "tiny", 7, 7 },
	{ "empty", 0, 1 },
	{ "one_byte_pieces", 3000, 1 },
	{ "exactly_one_chunk", SPOOL_CHUNK_BYTES, SPOOL_CHUNK_BYTES },
	{ "chunk_plus_one", SPOOL_CHUNK_BYTES + 1, 4096 },
	{ "multi_mib_odd_pieces", (5u << 20) + 17, 1000 },
	{ "multi_mib_one_write", (3u << 20) + 5, (3u << 20) + 5 },
};

static int check_entry(void *arg, const struct spool_entry *e)
{
	int *n = arg;
	(*n)++;
	T_EQ_STR(e->sender, "sender@example.com");
	T_EQ_INT(e->n_rcpts, 2);
	T_EQ_STR(e->rcpts[0].addr, "alice@example.org");
	T_EQ_INT(e->rcpts[0].notify, SPOOL_NOTIFY_SUCCESS | SPOOL_NOTIFY_FAILURE);
	T_EQ_STR(e->rcpts[0].orcpt, "rfc822;alice@example.org");
	T_EQ_STR(e->rcpts[1].addr, "bob@example.net");
	T_CHECK(e->rcpts[1].orcpt == NULL, "orcpt: got %p, want NULL", (void *)e->rcpts[1].orcpt);
	T_EQ_INT(e->rcpts[1].state, SPOOL_RCPT_PENDING);
	T_EQ_INT(e->rcpts[1].attempts, 0);
	T_EQ_STR(e->envid, "ENV123");
	T_EQ_INT(e->ret, SPOOL_RET_HDRS);
	T_EQ_INT(e->body, SPOOL_BODY_8BITMIME);
	T_EQ_INT(e->smtputf8, 1);
	T_EQ_STR(e->client_addr, "192.0.2.7");
	T_EQ_STR(e->helo, "client.example.com");
	T_EQ_INT(e->next_attempt_unix, e->arrival_unix);
	T_EQ_INT(e->shard, 0);
	return 0;
}

static void test_roundtrip(void)
{
	const char *dir = new_dir("roundtrip");
	struct spool_opts o = opts(dir);
	struct spool *sp = open_or_die(&o);
	struct spool_shard *sh = shard_or_die(sp, 0);
	struct ack a[16];
	size_t n = sizeof(rt_cases) / sizeof(rt_cases[0]);
	struct rm_err err;
	int seen = 0;

	for (size_t i = 0; i < n; i++) {
		T_CASE(rt_cases[i].name);
		T_EQ_INT(put(sh, rt_cases[i].len, (unsigned)i, rt_cases[i].piece, &a[i], true), 0);
		T_EQ_INT(a[i].calls, 1);
		T_EQ_INT(a[i].status, 0);
		check_content(sp, a[i].id, rt_cases[i].len, (unsigned)i);
	}
	T_CASE("roundtrip_list");
	T_EQ_INT(spool_list(sp, check_entry, &seen, &err), 0);
	T_EQ_INT(seen, n);
	struct listing l = list(sp);
	for (size_t i = 0; i < n; i++) {
		T_EQ_INT(count_id(&l, a[i].id), 1);
		T_EQ_INT(l.size[i], rt_cases[i].len);	/* id order = arrival order */
	}
	T_CASE("roundtrip_after_clean_restart");
	spool_shard_close(sh);
	spool_close(sp);
	sp = open_or_die(&o);
	struct spool_stats st;
	spool_stats(sp, &st);
	T_EQ_INT(st.is_rebuilt, 0);
	for (size_t i = 0; i < n; i++)
		check_content(sp, a[i].id, rt_cases[i].len, (unsigned)i);
	T_CASE("read_unknown_and_malformed_ids");
	struct sink s = { NULL, 0, 0, 0 };
	T_EQ_INT(spool_read(sp, "0000000000000001", on_bytes, &s, &err), -ENOENT);
	T_EQ_INT(spool_read(sp, "xyz", on_bytes, &s, &err), -EINVAL);
	T_EQ_INT(spool_read(sp, "00000000000000011", on_bytes, &s, &err), -EINVAL);
	spool_close(sp);
}

static void test_interleaved(void)
{
	const char *dir = new_dir("interleaved");
	struct spool_opts o = opts(dir);
	struct spool *sp = open_or_die(&o);
	struct spool_shard *sh = shard_or_die(sp, 0);
	struct spool_msg *m[2];
	struct spool_envelope env = envelope(1700000000);
	size_t len = 1u << 20, piece = 10007;
	uint8_t *buf[2];
	struct ack a[2];
	struct rm_err err;

	T_CASE("interleaved_two_sessions_one_segment");
	for (int i = 0; i < 2; i++) {
		buf[i] = malloc(len);
		fill(buf[i], len, 100 + (unsigned)i);
		T_EQ_INT(spool_msg_begin(sh, &m[i], &err), 0);
	}
	T_CHECK(strcmp(spool_msg_id(m[0]), spool_msg_id(m[1])) < 0, "ids %s %s not ascending",
		spool_msg_id(m[0]), spool_msg_id(m[1]));
	for (size_t off = 0; off < len; off += piece)
		for (int i = 0; i < 2; i++) {
			size_t k = len - off < piece ? len - off : piece;
			T_EQ_INT(spool_msg_write(m[i], buf[i] + off, k, &err), 0);
		}
	memset(a, 0, sizeof(a));
	T_EQ_INT(spool_msg_end(m[1], &env, &a[1], &err), 0);
	T_EQ_INT(spool_msg_end(m[0], &env, &a[0], &err), 0);
	T_EQ_INT(drive(sh), 1);		/* one fdatasync for the batch of two */
	T_EQ_INT(a[0].status, 0);
	T_EQ_INT(a[1].status, 0);
	T_EQ_INT(count_segments(dir), 1);
	check_content(sp, a[0].id, len, 100);
	check_content(sp, a[1].id, len, 101);
	free(buf[0]);
	free(buf[1]);
	spool_shard_close(sh);
	spool_close(sp);
}

static void test_abort(void)
{
	const char *dir = new_dir("abort");
	struct spool_opts o = opts(dir);
	struct spool *sp = open_or_die(&o);
	struct spool_shard *sh = shard_or_die(sp, 0);
	struct spool_msg *m;
	struct rm_err err;
	uint8_t buf[1000];
	struct ack a;

	T_CASE("abort_buffered_and_on_disk");
	fill(buf, sizeof(buf), 1);
	T_EQ_INT(spool_msg_begin(sh, &m, &err), 0);
	T_EQ_INT(spool_msg_write(m, buf, sizeof(buf), &err), 0);
	spool_msg_abort(m);
	T_EQ_INT(spool_msg_begin(sh, &m, &err), 0);
	for (int i = 0; i < 300; i++)	/* 300 kB: chunks reach the segment */
		T_EQ_INT(spool_msg_write(m, buf, sizeof(buf), &err), 0);
	spool_msg_abort(m);
	T_EQ_INT(spool_shard_sync_begin(sh), -1);	/* nothing pending */
	T_EQ_INT(list(sp).n, 0);
	T_EQ_INT(put(sh, 10, 2, 10, &a, true), 0);
	T_EQ_INT(list(sp).n, 1);
	T_CASE("abort_envelope_rejected");
	struct spool_envelope env = envelope(1);
	env.n_rcpts = 0;
	T_EQ_INT(spool_msg_begin(sh, &m, &err), 0);
	T_EQ_INT(spool_msg_end(m, &env, NULL, &err), -EINVAL);
	T_EQ_INT(spool_shard_sync_begin(sh), -1);
	T_CASE("abort_shard_close_with_open_message");
	T_EQ_INT(spool_msg_begin(sh, &m, &err), 0);
	T_EQ_INT(spool_msg_write(m, buf, sizeof(buf), &err), 0);
	spool_shard_close(sh);
	spool_close(sp);
	T_CASE("abort_nothing_after_rebuild");
	char marker[600];
	snprintf(marker, sizeof(marker), "%s/index/clean", dir);
	T_EQ_INT(unlink(marker), 0);
	sp = open_or_die(&o);
	struct spool_stats st;
	spool_stats(sp, &st);
	T_EQ_INT(st.is_rebuilt, 1);
	T_EQ_INT(st.n_messages, 1);
	T_EQ_INT(st.n_garbage_msgs, 0);		/* the DONE records said so */
	T_EQ_INT(count_id(&(struct listing){ 0 }, a.id), 0);
	struct listing l = list(sp);
	T_EQ_INT(l.n, 1);
	T_EQ_INT(count_id(&l, a.id), 1);
	spool_close(sp);
}

static void test_rotation(void)
{
	const char *dir = new_dir("rotation");
	struct spool_opts o = opts(dir);
	struct spool *sp;
	struct spool_shard *sh;
	struct ack a[60];
	struct rm_err err;

	o.segment_bytes = 8192;
	sp = open_or_die(&o);
	sh = shard_or_die(sp, 0);
	T_CASE("rotation_small_messages");
	for (unsigned i = 0; i < 50; i++)
		T_EQ_INT(put(sh, 1000 + i, i, 333, &a[i], (i % 7) == 6), 0);
	drive(sh);
	for (unsigned i = 0; i < 50; i++)
		T_EQ_INT(a[i].status, 0);
	T_CHECK(count_segments(dir) > 5, "segments: got %d, want > 5", count_segments(dir));
	T_CASE("rotation_big_message_spans_segments");
	T_EQ_INT(put(sh, 300000, 50, 7777, &a[50], true), 0);
	T_EQ_INT(a[50].status, 0);
	T_CASE("rotation_syncs_the_retired_segment_first");
	struct ack r1, r2;
	int fds[4], n_fds = 0, fd;
	T_EQ_INT(put(sh, 5000, 60, 5000, &r1, false), 0);
	T_EQ_INT(put(sh, 5000, 61, 5000, &r2, false), 0);	/* rotates */
	while ((fd = spool_shard_sync_begin(sh)) >= 0 && n_fds < 4) {
		fds[n_fds++] = fd;
		spool_shard_sync_end(sh, fdatasync(fd) < 0 ? -errno : 0, on_done, &err);
	}
	T_CHECK(n_fds >= 2 && n_fds <= 3, "sync steps: got %d, want 2 or 3", n_fds);
	for (int i = 1; i < n_fds; i++)
		T_CHECK(fds[i] != fds[i - 1], "the same fd twice: %d", fds[i]);
	T_EQ_INT(r1.status, 0);
	T_EQ_INT(r2.status, 0);
	T_CASE("rotation_interleaved_with_rotation");
	struct spool_msg *m1, *m2;
	struct spool_envelope env = envelope(5);
	uint8_t big[20000];
	fill(big, sizeof(big), 51);
	T_EQ_INT(spool_msg_begin(sh, &m1, &err), 0);
	T_EQ_INT(spool_msg_write(m1, big, sizeof(big), &err), 0);
	T_EQ_INT(put(sh, 9000, 52, 9000, &a[52], false), 0);	/* pending */
	T_EQ_INT(spool_msg_end(m1, &env, &a[51], &err), 0);
	snprintf(a[51].id, sizeof(a[51].id), "%s", spool_msg_id(m1));
	T_EQ_INT(spool_msg_begin(sh, &m2, &err), 0);
	spool_msg_abort(m2);
	T_CHECK(drive(sh) >= 1, "drive steps");
	T_EQ_INT(a[51].status, 0);
	T_EQ_INT(a[52].status, 0);
	for (unsigned i = 0; i <= 50; i++)
		check_content(sp, a[i].id, i == 50 ? 300000 : 1000 + i, i);
	check_content(sp, a[51].id, sizeof(big), 51);
	check_content(sp, a[52].id, 9000, 52);
	spool_shard_close(sh);
	spool_close(sp);
	T_CASE("rotation_rebuild_finds_all");
	char marker[600];
	snprintf(marker, sizeof(marker), "%s/index/clean", dir);
	unlink(marker);
	sp = open_or_die(&o);
	struct listing l = list(sp);
	T_EQ_INT(l.n, 55);
	for (unsigned i = 0; i <= 52; i++)
		T_EQ_INT(count_id(&l, a[i].id), 1);
	check_content(sp, a[50].id, 300000, 50);
	spool_close(sp);
}

/* crash_writer - 20 acknowledged messages, 1 open, 1 ended not synced. */
static void crash_writer(const char *dir, struct shared *s)
{
	struct spool_opts o = opts(dir);
	struct spool *sp = open_or_die(&o);
	struct spool_shard *sh = shard_or_die(sp, 0);
	struct spool_msg *m;
	struct rm_err err;
	struct ack a;
	uint8_t buf[100000];

	for (unsigned i = 0; i < 20; i++)	/* batches of 5 */
		if (put(sh, 500 + 5000 * i, i, 4096, &a, i % 5 == 4) != 0)
			_exit(3);
	s->n = 0;
	/* the acknowledged ones: read them back from the index */
	struct listing l = list(sp);
	for (int i = 0; i < l.n; i++)
		snprintf(s->id[s->n++], SPOOL_ID_BYTES + 1, "%s", l.id[i]);
	fill(buf, sizeof(buf), 99);
	if (spool_msg_begin(sh, &m, &err) != 0 || spool_msg_write(m, buf, sizeof(buf), &err) != 0)
		_exit(4);
	s->rc = put(sh, 777, 98, 777, &a, false);	/* COMMIT written, no sync */
	snprintf(s->id[MAX_MSGS - 1], SPOOL_ID_BYTES + 1, "%s", a.id);
}

static void test_crash(void)
{
	const char *dir = new_dir("crash");
	struct spool_opts o = opts(dir);
	struct shared *s = shared_new();
	struct spool_stats st;

	T_CASE("crash_every_acknowledged_message_once");
	in_child(crash_writer, dir, s);
	T_EQ_INT(s->n, 20);
	struct spool *sp = open_or_die(&o);
	spool_stats(sp, &st);
	T_EQ_INT(st.is_rebuilt, 1);
	struct listing l = list(sp);
	for (int i = 0; i < s->n; i++) {
		T_EQ_INT(count_id(&l, s->id[i]), 1);
		check_content(sp, s->id[i], 500 + 5000 * (size_t)i, (unsigned)i);
	}
	T_CASE("crash_open_message_is_garbage");
	T_EQ_INT(st.n_garbage_msgs, 1);
	T_CASE("crash_unsynced_commit_comes_back");	/* at least once */
	T_EQ_INT(count_id(&l, s->id[MAX_MSGS - 1]), 1);
	T_EQ_INT(l.n, 21);
	T_CASE("crash_new_ids_are_new");
	struct spool_shard *sh = shard_or_die(sp, 0);
	struct ack a;
	T_EQ_INT(put(sh, 5, 1, 5, &a, true), 0);
	T_CHECK(strcmp(a.id, s->id[MAX_MSGS - 1]) > 0, "id %s not after %s", a.id,
		s->id[MAX_MSGS - 1]);
	spool_shard_close(sh);
	spool_close(sp);
	T_CASE("crash_clean_restart_after_recovery");
	sp = open_or_die(&o);
	spool_stats(sp, &st);
	T_EQ_INT(st.is_rebuilt, 0);
	T_EQ_INT(list(sp).n, 22);
	spool_close(sp);
	munmap(s, sizeof(*s));
}

/* damage_writer - A (200 kB), B (100 B), C (300 B), each synced alone. */
static void damage_writer(const char *dir, struct shared *s)
{
	struct spool_opts o = opts(dir);
	struct spool *sp = open_or_die(&o);
	struct spool_shard *sh = shard_or_die(sp, 0);
	static const size_t len[3] = { 200000, 100, 300 };
	struct ack a;

	for (unsigned i = 0; i < 3; i++) {
		if (put(sh, len[i], i, 4096, &a, true) != 0 || a.status != 0)
			_exit(3);
		snprintf(s->id[i], SPOOL_ID_BYTES + 1, "%s", a.id);
	}
	s->n = 3;
}

enum damage { CUT_TAIL, CUT_INTO_HEADER, FLIP_LAST, APPEND_GARBAGE, APPEND_ZEROS,
	      FLIP_FIRST_CHUNK };

/* struct damage_case - what to do to the segment and what must survive. */
static const struct damage_case {
	const char *name;
	enum damage what;
	bool has[3];			/* A, B, C found afterwards */
	bool is_truncated, is_skipped;
	uint64_t garbage;
} damage_cases[] = {
	/* C's chunk stays behind without its COMMIT: one garbage message */
	{ "torn_tail_record", CUT_TAIL, { 1, 1, 0 }, 1, 0, 1 },
	{ "torn_tail_header", CUT_INTO_HEADER, { 1, 1, 0 }, 1, 0, 1 },
	{ "bad_crc_last_record", FLIP_LAST, { 1, 1, 0 }, 1, 0, 1 },
	{ "garbage_appended", APPEND_GARBAGE, { 1, 1, 1 }, 1, 0, 0 },
	/* zeros: the clean end of a preallocated segment, not damage */
	{ "zeros_appended", APPEND_ZEROS, { 1, 1, 1 }, 0, 0, 0 },
	{ "bad_crc_mid_segment_skipped", FLIP_FIRST_CHUNK, { 0, 1, 1 }, 0, 1, 1 },
};

static void flip(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	uint8_t b;
	T_EQ_INT(pread(fd, &b, 1, off), 1);
	b ^= 0x5a;
	T_EQ_INT(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

static void append(const char *path, size_t n, bool is_zero)
{
	uint8_t *b = malloc(n);
	int fd = open(path, O_WRONLY | O_APPEND);
	if (is_zero)
		memset(b, 0, n);
	else
		fill(b, n, 7);
	T_EQ_INT(write(fd, b, n), n);
	close(fd);
	free(b);
}

static void damage(const char *seg, enum damage what)
{
	off_t size = file_size(seg);
	/* C's COMMIT is the last record: 24 + ~220 bytes of envelope */
	switch (what) {
	case CUT_TAIL: T_EQ_INT(truncate(seg, size - 40), 0); break;
	case CUT_INTO_HEADER: {
		/* find C's COMMIT header: scan back for the record magic */
		int fd = open(seg, O_RDONLY);
		uint8_t b[4];
		off_t off;
		for (off = size - 8; off > 0; off -= 8) {
			T_EQ_INT(pread(fd, b, 4, off), 4);
			if (memcmp(b, "RMSR", 4) == 0)
				break;
		}
		close(fd);
		T_EQ_INT(truncate(seg, off + 10), 0);
		break;
	}
	case FLIP_LAST: flip(seg, size - 60); break;
	case APPEND_GARBAGE: append(seg, 1000, false); break;
	case APPEND_ZEROS: append(seg, 4096, true); break;
	case FLIP_FIRST_CHUNK: flip(seg, 32 + 24 + 100); break;
	}
}

static void test_damage(void)
{
	size_t n = sizeof(damage_cases) / sizeof(damage_cases[0]);
	static const size_t len[3] = { 200000, 100, 300 };

	/* the cases cut and flip bytes at the end of the file: it must end
	 * with the last record (test_prealloc covers the zero tails) */
	g_prealloc = 0;

	for (size_t i = 0; i < n; i++) {
		const struct damage_case *c = &damage_cases[i];
		const char *dir = new_dir(c->name);
		struct spool_opts o = opts(dir);
		struct shared *s = shared_new();
		struct spool_stats st;
		char seg[700];

		T_CASE(c->name);
		in_child(damage_writer, dir, s);
		T_EQ_INT(s->n, 3);
		last_segment(dir, seg, sizeof(seg));
		off_t before = file_size(seg);
		damage(seg, c->what);
		struct spool *sp = open_or_die(&o);
		spool_stats(sp, &st);
		struct listing l = list(sp);
		for (int k = 0; k < 3; k++) {
			T_EQ_INT(count_id(&l, s->id[k]), c->has[k]);
			if (c->has[k])
				check_content(sp, s->id[k], len[k], (unsigned)k);
		}
		T_EQ_INT(st.is_rebuilt, 1);
		T_EQ_INT(st.n_truncated_bytes > 0, c->is_truncated);
		T_EQ_INT(st.n_skipped_bytes > 0, c->is_skipped);
		T_EQ_INT(st.n_garbage_msgs, c->garbage);
		if (c->what == APPEND_GARBAGE || c->what == APPEND_ZEROS)
			T_EQ_INT(file_size(seg), before);
		T_EQ_INT(st.n_prealloc_bytes, c->what == APPEND_ZEROS ? 4096 : 0);
		spool_close(sp);
		/* recovery is idempotent: a second rebuild finds the same */
		char marker[600];
		snprintf(marker, sizeof(marker), "%s/index/clean", dir);
		T_EQ_INT(unlink(marker), 0);
		sp = open_or_die(&o);
		spool_stats(sp, &st);
		T_EQ_INT(st.n_truncated_bytes, 0);
		T_EQ_INT(list(sp).n, l.n);
		spool_close(sp);
		munmap(s, sizeof(*s));
	}
	g_prealloc = 64u << 10;
}

/* data_end - just past the last non-zero byte of a file, rounded up to 8
 * (records are padded to 8 with zeros). */
static off_t data_end(const char *path)
{
	int fd = open(path, O_RDONLY);
	off_t size = file_size(path), end = 0;
	uint8_t b[4096];

	for (off_t off = 0; off < size; off += (off_t)sizeof(b)) {
		ssize_t n = pread(fd, b, sizeof(b), off);
		for (ssize_t i = 0; i < n; i++)
			if (b[i] != 0)
				end = off + i + 1;
	}
	close(fd);
	return (end + 7) & ~(off_t)7;
}

/*
 * test_prealloc - the open segment is kept zero-filled ahead of its last
 * record; a crash leaves that tail, and the rebuild reads it as the clean
 * end (not damage); a torn record in it is still damage; a clean close
 * trims it.
 */
static void test_prealloc(void)
{
	static const size_t len[3] = { 200000, 100, 300 };
	char seg[700];

	for (int torn = 0; torn <= 1; torn++) {
		const char *dir = new_dir(torn ? "prealloc_torn" : "prealloc_crash");
		struct spool_opts o = opts(dir);
		struct shared *s = shared_new();
		struct spool_stats st;

		T_CASE(torn ? "prealloc_torn_record_in_zero_tail" : "prealloc_crash_zero_tail");
		in_child(damage_writer, dir, s);
		T_EQ_INT(s->n, 3);
		last_segment(dir, seg, sizeof(seg));
		off_t size = file_size(seg), end = data_end(seg);
		/* filled ahead after the last commit: at least a step */
		T_CHECK(size - end >= 32 * 1024, "zero tail %lld bytes", (long long)(size - end));
		if (torn) {
			/* half a record header where the next would go */
			int fd = open(seg, O_WRONLY);
			uint8_t junk[12];
			memset(junk, 0x5a, sizeof(junk));
			T_EQ_INT(pwrite(fd, junk, sizeof(junk), end), (ssize_t)sizeof(junk));
			close(fd);
		}
		struct spool *sp = open_or_die(&o);
		spool_stats(sp, &st);
		struct listing l = list(sp);
		for (int k = 0; k < 3; k++) {
			T_EQ_INT(count_id(&l, s->id[k]), 1);
			check_content(sp, s->id[k], len[k], (unsigned)k);
		}
		T_EQ_INT(st.is_rebuilt, 1);
		T_EQ_INT(st.n_skipped_bytes, 0);
		T_EQ_INT(st.n_garbage_msgs, 0);
		if (torn) {
			T_EQ_INT(st.n_bad_records, 1);
			T_EQ_INT(st.n_truncated_bytes, size - end);
			T_EQ_INT(st.n_prealloc_bytes, 0);
		} else {
			T_EQ_INT(st.n_bad_records, 0);
			T_EQ_INT(st.n_truncated_bytes, 0);
			T_EQ_INT(st.n_prealloc_bytes, size - end);
		}
		T_EQ_INT(file_size(seg), end);	/* the tail is given back */
		/* a clean close trims the new open segment's zeros too */
		struct spool_shard *sh = shard_or_die(sp, 0);
		struct ack a;
		T_EQ_INT(put(sh, 5000, 7, 4096, &a, true), 0);
		T_EQ_INT(a.status, 0);
		last_segment(dir, seg, sizeof(seg));
		T_CHECK(file_size(seg) > data_end(seg), "open segment filled ahead");
		spool_shard_close(sh);
		spool_close(sp);
		T_EQ_INT(file_size(seg), data_end(seg));
		sp = open_or_die(&o);
		spool_stats(sp, &st);
		T_EQ_INT(st.is_rebuilt, 0);
		l = list(sp);
		T_EQ_INT(l.n, 4);
		check_content(sp, a.id, 5000, 7);
		spool_close(sp);
		munmap(s, sizeof(*s));
	}
}

enum index_damage { NO_MARKER, NO_DATA_MDB, GARBAGE_DATA_MDB, BAD_MARKER };

static const struct index_case {
	const char *name;
	enum index_damage what;
} index_cases[] = {
	{ "missing_marker_valid_index", NO_MARKER },
	{ "deleted_data_mdb", NO_DATA_MDB },
	{ "garbage_data_mdb", GARBAGE_DATA_MDB },
	{ "unreadable_marker", BAD_MARKER },
};

static void test_segment_version(void)
{
	const char *dir = new_dir("segment_version");
	struct spool_opts o = opts(dir);
	struct spool *sp = open_or_die(&o);
	struct spool_shard *sh = shard_or_die(sp, 0);
	struct rm_err err = { 0, "" };
	struct ack a;
	char seg[700], marker[700];
	uint8_t v[4] = { 2, 0, 0, 0 };

	T_CASE("segment_of_a_newer_version_refused_not_dropped");
	T_EQ_INT(put(sh, 10, 1, 10, &a, true), 0);
	spool_shard_close(sh);
	spool_close(sp);
	last_segment(dir, seg, sizeof(seg));
	int fd = open(seg, O_WRONLY);
	T_EQ_INT(pwrite(fd, v, 4, 8), 4);
	close(fd);
	snprintf(marker, sizeof(marker), "%s/index/clean", dir);
	T_EQ_INT(unlink(marker), 0);
	T_EQ_INT(spool_open(&sp, &o, &err), SPOOL_EVERSION);
	T_CHECK(strstr(err.msg, "format version 2") != NULL, "err: %s", err.msg);
	T_CHECK(file_size(seg) > 32, "segment kept: %lld", (long long)file_size(seg));
}

/* fuzz_writer - a reference spool: 12 messages, sizes 0..150 kB. */
static void fuzz_writer(const char *dir, struct shared *s)
{
	struct spool_opts o = opts(dir);
	struct spool *sp;
	struct spool_shard *sh;
	struct ack a;

	o.segment_bytes = 65536;
	sp = open_or_die(&o);
	sh = shard_or_die(sp, 0);
	for (unsigned i = 0; i < 12; i++) {
		if (put(sh, (size_t)i * i * 1000, i, 3333, &a, i % 3 == 2) != 0)
			_exit(3);
		snprintf(s->id[i], SPOOL_ID_BYTES + 1, "%s", a.id);
	}
	drive(sh);
	s->n = 12;
	spool_shard_close(sh);
	spool_close(sp);
}

static uint32_t fuzz_rng = 12345;

static uint32_t fuzz_rnd(void)
{
	fuzz_rng ^= fuzz_rng << 13;
	fuzz_rng ^= fuzz_rng >> 17;
	fuzz_rng ^= fuzz_rng << 5;
	return fuzz_rng;
}

/* fuzz_damage - flip, zero or cut at random places of random segments. */
static void fuzz_damage(const char *dir)
{
	char path[800];
	int n = count_segments(dir);

	for (int k = 0; k < 1 + (int)(fuzz_rnd() % 4); k++) {
		snprintf(path, sizeof(path), "%.600s/seg/000-%010u.seg", dir,
			 fuzz_rnd() % (unsigned)n);
		off_t size = file_size(path);
		if (size <= 0)
			continue;
		off_t off = (off_t)(fuzz_rnd() % (uint32_t)size);
		switch (fuzz_rnd() % 4) {
		case 0: T_EQ_INT(truncate(path, off), 0); break;
		case 1: {
			int fd = open(path, O_WRONLY);
			uint8_t z[64] = { 0 };
			T_CHECK(pwrite(fd, z, sizeof(z), off) > 0, "zero");
			close(fd);
			break;
		}
		default: flip(path, off); break;
		}
	}
}

static int n_corrupt;

static int verify_fuzzed(struct spool *sp, const struct shared *s)
{
	struct listing l = list(sp);
	int n_ok = 0;

	for (int i = 0; i < l.n; i++) {
		int k = 0;
		while (k < s->n && strcmp(s->id[k], l.id[i]) != 0)
			k++;
		T_CHECK(k < s->n, "phantom message %s", l.id[i]);
		if (k == s->n)
			continue;
		struct sink snk = { NULL, 0, 0, 0 };
		uint8_t *want = malloc((size_t)k * k * 1000 + 1);
		int rc = spool_read(sp, l.id[i], on_bytes, &snk, NULL);
		fill(want, (size_t)k * k * 1000, (unsigned)k);
		/* a damaged extent must be caught, never passed on as content */
		T_CHECK(rc == SPOOL_ECORRUPT || rc == -ENOENT ||
			(rc == 0 && snk.len == (size_t)k * k * 1000 &&
			 memcmp(snk.p ? (void *)snk.p : (void *)want, want, snk.len) == 0),
			"read %s: rc %d len %zu", l.id[i], rc, snk.len);
		n_ok += rc == 0;
		n_corrupt += rc == SPOOL_ECORRUPT;
		free(want);
		free(snk.p);
	}
	return n_ok;
}

static void test_fuzz_recovery(void)
{
	const char *ref = new_dir("fuzz_ref");
	struct shared *s = shared_new();
	char cmd[1600], dir[700];
	int n_ok = 0;

	T_CASE("fuzz_recovery_never_crashes_never_lies");
	in_child(fuzz_writer, ref, s);
	T_EQ_INT(s->n, 12);
	for (int it = 0; it < 60; it++) {
		snprintf(dir, sizeof(dir), "%s/fuzz_%d", tmp_root, it);
		/* even: a rebuild must cope; odd: the trusted index points into
		 * damaged segments and every read must notice */
		snprintf(cmd, sizeof(cmd), "cp -a '%s' '%s' && %s '%s/index/clean'",
			 ref, dir, it % 2 ? "ls >/dev/null" : "rm -f", dir);
		T_EQ_INT(system(cmd), 0);
		fuzz_damage(dir);
		struct spool_opts o = opts(dir);
		struct spool *sp;
		struct rm_err err;
		int rc = spool_open(&sp, &o, &err);
		T_CHECK(rc == 0, "iteration %d: spool_open: %d %s", it, rc, err.msg);
		if (rc != 0)
			continue;
		n_ok += verify_fuzzed(sp, s);
		spool_close(sp);
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		T_EQ_INT(system(cmd), 0);
	}
	T_CHECK(n_ok > 60, "intact messages read back: %d", n_ok);
	T_CHECK(n_corrupt > 0, "damage caught on read: %d", n_corrupt);
	munmap(s, sizeof(*s));
}

/* find_commit - copy the first COMMIT record (header, payload, padding). */
static size_t find_commit(const char *seg, uint8_t *out, size_t cap)
{
	int fd = open(seg, O_RDONLY);
	off_t size = file_size(seg);
	uint8_t *b = malloc((size_t)size);
	size_t n = 0;

	T_EQ_INT(pread(fd, b, (size_t)size, 0), size);
	close(fd);
	for (off_t off = 32; off + 24 <= size; off += 8) {
		uint32_t len = (uint32_t)b[off + 16] | (uint32_t)b[off + 17] << 8;
		if (memcmp(b + off, "RMSR", 4) == 0 && b[off + 4] == SPOOL_REC_COMMIT &&
		    24 + ((len + 7u) & ~7u) <= cap) {
			n = 24 + ((len + 7u) & ~7u);
			memcpy(out, b + off, n);
			break;
		}
	}
	free(b);
	return n;
}

static void test_forged_record(void)
{
	char dx[600];
	snprintf(dx, sizeof(dx), "%s", new_dir("forge_source"));	/* static */
	const char *dy = new_dir("forge_target");
	struct spool_opts ox = opts(dx), oy = opts(dy);
	struct spool *sp;
	struct spool_shard *sh;
	struct spool_msg *m;
	struct spool_envelope env = envelope(3);
	struct rm_err err;
	struct ack a, b;
	uint8_t rec[4096], body[16384];
	char seg[700], marker[700];

	T_CASE("forged_record_in_a_body_never_becomes_a_message");
	/* a genuine COMMIT record, as an attacker could build one offline */
	sp = open_or_die(&ox);
	sh = shard_or_die(sp, 0);
	for (int i = 0; i < 5; i++) {	/* ids unlike the target's */
		T_EQ_INT(spool_msg_begin(sh, &m, &err), 0);
		spool_msg_abort(m);
	}
	T_EQ_INT(put(sh, 0, 1, 1, &a, true), 0);	/* empty: no chunk to forge */
	spool_shard_close(sh);
	spool_close(sp);
	last_segment(dx, seg, sizeof(seg));
	size_t n = find_commit(seg, rec, sizeof(rec));
	T_CHECK(n > 24, "no COMMIT found in %s", seg);
	/* ... sent as the body of a message to the target spool */
	memset(body, 'a', sizeof(body));
	memcpy(body + 4096, rec, n);
	sp = open_or_die(&oy);
	sh = shard_or_die(sp, 0);
	T_EQ_INT(spool_msg_begin(sh, &m, &err), 0);
	T_EQ_INT(spool_msg_write(m, body, sizeof(body), &err), 0);
	T_EQ_INT(spool_msg_end(m, &env, &b, &err), 0);
	drive(sh);
	struct ack c;
	T_EQ_INT(put(sh, 100, 2, 100, &c, true), 0);
	spool_shard_close(sh);
	spool_close(sp);
	/* damage the body's CHUNK header: recovery resynchronises inside it */
	last_segment(dy, seg, sizeof(seg));
	flip(seg, 32);
	snprintf(marker, sizeof(marker), "%s/index/clean", dy);
	T_EQ_INT(unlink(marker), 0);
	sp = open_or_die(&oy);
	struct spool_stats st;
	spool_stats(sp, &st);
	struct listing l = list(sp);
	T_EQ_INT(count_id(&l, a.id), 0);	/* the forged one */
	T_EQ_INT(count_id(&l, c.id), 1);
	T_EQ_INT(l.n, 1);
	T_CHECK(st.n_skipped_bytes > 0, "skipped: %llu", (unsigned long long)st.n_skipped_bytes);
	spool_close(sp);
}

static void test_index_damage(void)
{
	size_t n = sizeof(index_cases) / sizeof(index_cases[0]);

	for (size_t i = 0; i < n; i++) {
		const struct index_case *c = &index_cases[i];
		const char *dir = new_dir(c->name);
		struct spool_opts o = opts(dir);
		struct spool *sp = open_or_die(&o);
		struct spool_shard *sh = shard_or_die(sp, 0);
		struct spool_stats st;
		struct ack a[5];
		char path[700];

		T_CASE(c->name);
		for (unsigned k = 0; k < 5; k++)
			T_EQ_INT(put(sh, 1000 * k, k, 999, &a[k], true), 0);
		spool_shard_close(sh);
		spool_close(sp);
		switch (c->what) {
		case NO_MARKER:
			snprintf(path, sizeof(path), "%s/index/clean", dir);
			T_EQ_INT(unlink(path), 0);
			break;
		case NO_DATA_MDB:
			snprintf(path, sizeof(path), "%s/index/data.mdb", dir);
			T_EQ_INT(unlink(path), 0);
			break;
		case GARBAGE_DATA_MDB: {
			snprintf(path, sizeof(path), "%s/index/data.mdb", dir);
			int fd = open(path, O_WRONLY);
			uint8_t junk[16384];
			fill(junk, sizeof(junk), 3);
			T_EQ_INT(pwrite(fd, junk, sizeof(junk), 0), sizeof(junk));
			close(fd);
			break;
		}
		case BAD_MARKER:
			snprintf(path, sizeof(path), "%s/index/clean", dir);
			T_EQ_INT(truncate(path, 0), 0);
			break;
		}
		sp = open_or_die(&o);
		spool_stats(sp, &st);
		T_EQ_INT(st.is_rebuilt, 1);
		T_EQ_INT(st.n_messages, 5);
		struct listing l = list(sp);
		T_EQ_INT(l.n, 5);
		for (unsigned k = 0; k < 5; k++) {
			T_EQ_INT(count_id(&l, a[k].id), 1);
			check_content(sp, a[k].id, 1000 * k, k);
		}
		spool_close(sp);
	}
}

static void test_map_full(void)
{
	const char *dir = new_dir("map_full");
	struct spool_opts o = opts(dir);
	struct spool *sp;
	struct spool_shard *sh;
	static struct ack a[MAX_MSGS], b[10];
	int n_ok = 0;

	o.map_bytes = 64 * 1024;
	sp = open_or_die(&o);
	sh = shard_or_die(sp, 0);
	T_CASE("map_full_error_returned");
	for (int i = 0; i < MAX_MSGS; i++) {
		T_EQ_INT(put(sh, 100, (unsigned)i, 100, &a[i], true), 0);
		T_EQ_INT(a[i].calls, 1);
		if (a[i].status != 0)
			break;
		n_ok++;
	}
	T_CHECK(n_ok > 0 && n_ok < MAX_MSGS, "map never filled: %d", n_ok);
	T_EQ_INT(a[n_ok].status, SPOOL_EMAPFULL);
	T_CHECK(strstr(spool_strerror(SPOOL_EMAPFULL), "map_bytes") != NULL, "strerror");
	T_CASE("map_full_earlier_messages_intact");
	struct listing l = list(sp);
	T_EQ_INT(l.n, n_ok);
	for (int k = 0; k < n_ok; k += 7)
		check_content(sp, a[k].id, 100, (unsigned)k);
	T_CASE("map_full_whole_batch_refused_while_full");
	for (unsigned k = 0; k < 10; k++)
		T_EQ_INT(put(sh, 100, 1000 + k, 100, &b[k], false), 0);
	T_EQ_INT(drive(sh), 1);
	for (unsigned k = 0; k < 10; k++)
		T_EQ_INT(b[k].status, SPOOL_EMAPFULL);
	T_EQ_INT(list(sp).n, n_ok);
	spool_shard_close(sh);
	spool_close(sp);
	T_CASE("map_full_bigger_map_after_restart");
	o.map_bytes = 4u << 20;
	sp = open_or_die(&o);
	sh = shard_or_die(sp, 0);
	T_EQ_INT(list(sp).n, n_ok);
	T_EQ_INT(put(sh, 100, 2000, 100, &b[0], true), 0);
	T_EQ_INT(b[0].status, 0);
	spool_shard_close(sh);
	spool_close(sp);
	T_CASE("map_full_refused_messages_stay_out_of_a_rebuild");
	char marker[600];
	snprintf(marker, sizeof(marker), "%s/index/clean", dir);
	T_EQ_INT(unlink(marker), 0);
	sp = open_or_die(&o);
	l = list(sp);
	T_EQ_INT(l.n, n_ok + 1);
	T_EQ_INT(count_id(&l, a[n_ok].id), 0);
	spool_close(sp);
}

static void two_shard_writer(const char *dir, struct shared *s)
{
	struct spool_opts o = opts(dir);
	struct spool *sp = open_or_die(&o);
	struct spool_shard *sh[2] = { shard_or_die(sp, 0), shard_or_die(sp, 1) };
	struct ack a;

	for (unsigned i = 0; i < 40; i++) {
		if (put(sh[i % 2], 70000 + i, i, 5000, &a, true) != 0 || a.status != 0)
			_exit(3);
		snprintf(s->id[s->n++], SPOOL_ID_BYTES + 1, "%s", a.id);
	}
}

static int check_shard(void *arg, const struct spool_entry *e)
{
	(void)arg;
	unsigned want = (unsigned)strtoul(e->id + 8, NULL, 16) >> 24;
	T_EQ_INT(e->shard, want);
	return 0;
}

static void test_two_shards(void)
{
	const char *dir = new_dir("two_shards");
	struct spool_opts o = opts(dir);
	struct shared *s = shared_new();
	struct spool_shard *sh;
	struct rm_err err;

	T_CASE("two_shards_crash_and_rebuild");
	in_child(two_shard_writer, dir, s);
	T_EQ_INT(s->n, 40);
	struct spool *sp = open_or_die(&o);
	struct listing l = list(sp);
	T_EQ_INT(l.n, 40);
	for (int i = 0; i < 40; i++) {
		T_EQ_INT(count_id(&l, s->id[i]), 1);
		if (i % 9 == 0)
			check_content(sp, s->id[i], 70000 + (size_t)i, (unsigned)i);
	}
	T_EQ_INT(spool_list(sp, check_shard, NULL, &err), 0);
	T_CASE("two_shards_open_rules");
	sh = shard_or_die(sp, 1);
	struct spool_shard *dup;
	T_EQ_INT(spool_shard_open(sp, 1, &dup, &err), -EBUSY);
	T_EQ_INT(spool_shard_open(sp, 2, &dup, &err), -EINVAL);
	spool_shard_close(sh);
	sh = shard_or_die(sp, 1);
	spool_shard_close(sh);
	spool_close(sp);
	T_CASE("two_shards_second_daemon_refused");
	sp = open_or_die(&o);
	pid_t pid = fork();
	if (pid == 0) {
		struct spool *sp2;
		_exit(spool_open(&sp2, &o, NULL) == -EBUSY ? 0 : 1);
	}
	int st;
	waitpid(pid, &st, 0);
	T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "second open: status %d", st);
	T_CASE("two_shards_reader_while_daemon_runs");
	sh = shard_or_die(sp, 0);
	struct ack a;
	T_EQ_INT(put(sh, 10, 1, 10, &a, true), 0);
	pid = fork();
	if (pid == 0) {
		struct spool_opts ro = o;
		struct spool *r;
		struct listing *rl = malloc(sizeof(*rl));
		struct sink snk = { NULL, 0, 0, 0 };
		ro.read_only = true;
		if (spool_open(&r, &ro, NULL) != 0)
			_exit(1);
		memset(rl, 0, sizeof(*rl));
		if (spool_list(r, on_entry, rl, NULL) != 0 || rl->n != 41)
			_exit(2);
		if (spool_read(r, a.id, on_bytes, &snk, NULL) != 0 || snk.len != 10)
			_exit(3);
		struct spool_shard *x;
		if (spool_shard_open(r, 0, &x, NULL) != -EINVAL)
			_exit(4);
		spool_close(r);
		_exit(0);
	}
	waitpid(pid, &st, 0);
	T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "reader: status %d", st);
	spool_shard_close(sh);
	spool_close(sp);
	munmap(s, sizeof(*s));
}

static void test_sync_failure(void)
{
	const char *dir = new_dir("sync_failure");
	struct spool_opts o = opts(dir);
	struct spool *sp = open_or_die(&o);
	struct spool_shard *sh = shard_or_die(sp, 0);
	struct spool_msg *m;
	struct rm_err err = { 0, "" };
	struct ack a, b, c, d;
	uint8_t buf[100000];
	int fd;

	T_CASE("sync_failure_fails_batch_and_pending");
	T_EQ_INT(put(sh, 1000, 1, 1000, &a, true), 0);
	fill(buf, sizeof(buf), 2);
	T_EQ_INT(spool_msg_begin(sh, &m, &err), 0);
	T_EQ_INT(spool_msg_write(m, buf, sizeof(buf), &err), 0);	/* on disk */
	T_EQ_INT(put(sh, 2000, 3, 2000, &b, false), 0);
	fd = spool_shard_sync_begin(sh);
	T_CHECK(fd >= 0, "sync_begin: got %d", fd);
	T_EQ_INT(spool_shard_sync_begin(sh), -1);	/* one in flight */
	T_EQ_INT(put(sh, 3000, 4, 3000, &c, false), 0);	/* joins pending */
	spool_shard_sync_end(sh, -EIO, on_done, &err);
	T_EQ_INT(b.calls, 1);
	T_EQ_INT(b.status, -EIO);
	T_EQ_INT(c.calls, 1);
	T_EQ_INT(c.status, -EIO);
	T_EQ_INT(err.code, -EIO);
	T_CHECK(strstr(err.msg, "fdatasync segment 000/") != NULL, "err: %s", err.msg);
	T_CASE("sync_failure_abandons_open_message");
	T_EQ_INT(spool_msg_write(m, buf, 10, &err), SPOOL_EABANDONED);
	struct spool_envelope env = envelope(9);
	T_EQ_INT(spool_msg_end(m, &env, NULL, &err), SPOOL_EABANDONED);
	T_CASE("sync_failure_shard_keeps_serving");
	T_EQ_INT(put(sh, 4000, 5, 4000, &d, true), 0);
	T_EQ_INT(d.status, 0);
	check_content(sp, d.id, 4000, 5);
	check_content(sp, a.id, 1000, 1);
	struct listing l = list(sp);
	T_EQ_INT(l.n, 2);
	T_EQ_INT(count_segments(dir), 2);
	spool_shard_close(sh);
	spool_close(sp);
	T_CASE("sync_failure_refused_messages_stay_out_of_a_rebuild");
	char marker[600];
	snprintf(marker, sizeof(marker), "%s/index/clean", dir);
	T_EQ_INT(unlink(marker), 0);
	sp = open_or_die(&o);
	l = list(sp);
	T_EQ_INT(l.n, 2);
	T_EQ_INT(count_id(&l, a.id), 1);
	T_EQ_INT(count_id(&l, d.id), 1);
	spool_close(sp);
}

/* fsize_writer - a file size limit stands in for a full disk. */
static void fsize_writer(const char *dir, struct shared *s)
{
	struct spool_opts o = opts(dir);
	struct spool *sp = open_or_die(&o);
	struct spool_shard *sh = shard_or_die(sp, 0);
	struct rlimit rl = { 300000, 300000 };
	struct ack a;

	signal(SIGXFSZ, SIG_IGN);
	if (put(sh, 5000, 1, 5000, &a, true) != 0 || a.status != 0)
		_exit(3);
	snprintf(s->id[0], SPOOL_ID_BYTES + 1, "%s", a.id);
	setrlimit(RLIMIT_FSIZE, &rl);
	s->rc = put(sh, 1u << 20, 2, 10000, &a, true);		/* too big */
	s->status[0] = put(sh, 5000, 3, 5000, &a, true);	/* still fits */
	s->status[1] = a.status;
	snprintf(s->id[1], SPOOL_ID_BYTES + 1, "%s", a.id);
	s->n = 2;
	spool_shard_close(sh);
	spool_close(sp);
}

static void test_write_error(void)
{
	const char *dir = new_dir("write_error");
	struct spool_opts o = opts(dir);
	struct shared *s = shared_new();

	T_CASE("write_error_returned_at_once");
	in_child(fsize_writer, dir, s);
	T_EQ_INT(s->n, 2);
	T_EQ_INT(s->rc, -EFBIG);
	T_CASE("write_error_others_unharmed");
	T_EQ_INT(s->status[0], 0);
	T_EQ_INT(s->status[1], 0);
	struct spool *sp = open_or_die(&o);
	struct spool_stats st;
	spool_stats(sp, &st);
	T_EQ_INT(st.is_rebuilt, 0);
	struct listing l = list(sp);
	T_EQ_INT(l.n, 2);
	check_content(sp, s->id[0], 5000, 1);
	check_content(sp, s->id[1], 5000, 3);
	spool_close(sp);
	munmap(s, sizeof(*s));
}

/* fill_fail_writer - the zero fill hits RLIMIT_FSIZE at once; messages
 * that still fit must not notice. */
static void fill_fail_writer(const char *dir, struct shared *s)
{
	struct spool_opts o = opts(dir);
	struct rlimit rl = { 100000, 100000 };
	struct spool *sp;
	struct spool_shard *sh;
	struct ack a;

	o.prealloc_bytes = 1u << 20;
	sp = open_or_die(&o);
	sh = shard_or_die(sp, 0);
	signal(SIGXFSZ, SIG_IGN);
	setrlimit(RLIMIT_FSIZE, &rl);
	for (unsigned i = 0; i < 3; i++) {
		if (put(sh, 5000, i, 5000, &a, true) != 0 || a.status != 0)
			_exit(3);
		snprintf(s->id[i], SPOOL_ID_BYTES + 1, "%s", a.id);
		s->n = (int)i + 1;
	}
	/* no clean close: the next open rebuilds from the segment */
}

static void test_fill_error(void)
{
	const char *dir = new_dir("fill_error");
	struct spool_opts o = opts(dir);
	struct shared *s = shared_new();
	struct spool_stats st;
	char seg[700];

	T_CASE("prealloc_fill_error_harmless");
	in_child(fill_fail_writer, dir, s);
	T_EQ_INT(s->n, 3);
	last_segment(dir, seg, sizeof(seg));
	/* the failed fill was cut back to the records */
	T_EQ_INT(file_size(seg), data_end(seg));
	struct spool *sp = open_or_die(&o);
	spool_stats(sp, &st);
	T_EQ_INT(st.is_rebuilt, 1);
	T_EQ_INT(st.n_bad_records, 0);
	T_EQ_INT(st.n_truncated_bytes, 0);
	struct listing l = list(sp);
	T_EQ_INT(l.n, 3);
	for (unsigned k = 0; k < 3; k++)
		check_content(sp, s->id[k], 5000, k);
	spool_close(sp);
	munmap(s, sizeof(*s));
}

static int on_due(void *arg, const struct spool_entry *e)
{
	struct listing *l = arg;
	l->due[l->n++] = e->next_attempt_unix;
	return l->n == 2 ? 42 : 0;
}

static void test_due_and_ids(void)
{
	const char *dir = new_dir("due");
	struct spool_opts o = opts(dir);
	struct spool *sp = open_or_die(&o);
	struct spool_shard *sh = shard_or_die(sp, 0);
	static const int64_t t[] = { 300, -5, 200, 100 };
	struct spool_envelope env;
	struct spool_msg *m;
	struct rm_err err;
	struct ack a[4];
	static struct listing l;

	T_CASE("due_order_and_limit");
	for (int i = 0; i < 4; i++) {
		env = envelope(t[i]);
		T_EQ_INT(spool_msg_begin(sh, &m, &err), 0);
		T_EQ_INT(spool_msg_end(m, &env, &a[i], &err), 0);
	}
	T_EQ_INT(drive(sh), 1);
	memset(&l, 0, sizeof(l));
	T_EQ_INT(spool_due(sp, 250, on_entry, &l, &err), 0);
	T_EQ_INT(l.n, 3);
	T_EQ_INT(l.due[0], -5);
	T_EQ_INT(l.due[1], 100);
	T_EQ_INT(l.due[2], 200);
	T_CASE("due_callback_stops_walk");
	memset(&l, 0, sizeof(l));
	T_EQ_INT(spool_due(sp, 1000, on_due, &l, &err), 42);
	T_EQ_INT(l.n, 2);
	T_CASE("ids_unique_and_ascending_across_restarts");
	char last[SPOOL_ID_BYTES + 1];
	snprintf(last, sizeof(last), "%s", a[3].id);
	for (int round = 0; round < 3; round++) {
		spool_shard_close(sh);
		spool_close(sp);
		sp = open_or_die(&o);
		sh = shard_or_die(sp, 0);
		T_EQ_INT(spool_msg_begin(sh, &m, &err), 0);
		T_CHECK(strcmp(spool_msg_id(m), last) > 0, "id %s not after %s",
			spool_msg_id(m), last);
		T_EQ_INT(strlen(spool_msg_id(m)), SPOOL_ID_BYTES);
		snprintf(last, sizeof(last), "%s", spool_msg_id(m));
		spool_msg_abort(m);	/* never committed: still never reused */
	}
	spool_shard_close(sh);
	spool_close(sp);
}

/* struct state_seen - one message's recipient states as listed. */
struct state_seen {
	int n;
	unsigned state[2], attempts[2], flags[2];
	int64_t next[2], due;
};

static int on_state(void *arg, const struct spool_entry *e)
{
	struct state_seen *s = arg;
	if (s->n++ > 0)
		return 0;	/* the first entry's states only */
	for (size_t i = 0; i < e->n_rcpts && i < 2; i++) {
		s->state[i] = e->rcpts[i].state;
		s->attempts[i] = e->rcpts[i].attempts;
		s->next[i] = e->rcpts[i].next_attempt_unix;
		s->flags[i] = e->rcpts[i].flags;
	}
	s->due = e->next_attempt_unix;
	return 0;
}

static struct state_seen states(struct spool *sp, bool by_due, int64_t until)
{
	struct state_seen s;
	struct rm_err err;
	memset(&s, 0, sizeof(s));
	if (by_due)
		T_EQ_INT(spool_due(sp, until, on_state, &s, &err), 0);
	else
		T_EQ_INT(spool_list(sp, on_state, &s, &err), 0);
	return s;
}

/*
 * test_item_write_error - UPDATE and DONE records go out together at the
 * batch (items_write); when that write fails (RLIMIT_FSIZE at the file's
 * size) each item reports the error and the index keeps the message as it
 * was; once writes work again the same calls succeed.
 */
static void test_item_write_error(void)
{
	const char *dir = new_dir("item_write_error");
	struct spool_opts o = opts(dir);
	struct spool *sp;
	struct spool_shard *sh;
	struct ack a, b, u, d;
	struct rm_err err;
	struct rlimit old, rl;
	char seg[700], idx[700];

	T_CASE("item_write_error_keeps_message");
	o.prealloc_bytes = 0;
	sp = open_or_die(&o);
	sh = shard_or_die(sp, 0);
	/* b is big, so the segment outgrows the index file: the limit below
	 * then stops segment appends but not the index's writes */
	T_EQ_INT(put(sh, 300, 1, 300, &a, true), 0);
	T_EQ_INT(put(sh, 2u << 20, 2, 65536, &b, true), 0);
	last_segment(dir, seg, sizeof(seg));
	snprintf(idx, sizeof(idx), "%s/index/data.mdb", dir);
	T_CHECK(file_size(seg) > file_size(idx) + 65536, "segment %lld, index %lld",
		(long long)file_size(seg), (long long)file_size(idx));
	getrlimit(RLIMIT_FSIZE, &old);
	rl = old;
	rl.rlim_cur = (rlim_t)file_size(seg);
	signal(SIGXFSZ, SIG_IGN);
	T_EQ_INT(setrlimit(RLIMIT_FSIZE, &rl), 0);
	struct spool_rcpt_update up = { 0, SPOOL_RCPT_PENDING, 1, 99 };
	memset(&u, 0, sizeof(u));
	memset(&d, 0, sizeof(d));
	T_EQ_INT(spool_shard_update(sh, a.id, &up, 1, &u, &err), 0);
	T_EQ_INT(spool_shard_done(sh, b.id, &d, &err), 0);
	drive(sh);
	T_EQ_INT(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	T_EQ_INT(u.calls, 1);
	T_CHECK(u.status < 0, "update status %d, want an error", u.status);
	T_EQ_INT(d.calls, 1);
	T_CHECK(d.status < 0, "done status %d, want an error", d.status);
	T_EQ_INT(list(sp).n, 2);		/* b not removed */
	T_EQ_INT(states(sp, true, INT64_MAX - 1).n, 2);	/* a's state unchanged */
	T_EQ_INT(file_size(seg), data_end(seg));	/* the torn write was cut back */
	T_CASE("item_write_after_error_works");
	T_EQ_INT(spool_shard_done(sh, b.id, &d, &err), 0);
	drive(sh);
	T_EQ_INT(d.status, 0);
	T_EQ_INT(list(sp).n, 1);
	spool_shard_close(sh);
	spool_close(sp);
	sp = open_or_die(&o);
	T_EQ_INT(list(sp).n, 1);
	spool_close(sp);
}

static void test_update_and_done(void)
{
	const char *dir = new_dir("update");
	struct spool_opts o = opts(dir);
	struct spool *sp = open_or_die(&o);
	struct spool_shard *sh = shard_or_die(sp, 0);
	struct rm_err err;
	struct ack a, b, u;
	int64_t t0;

	T_EQ_INT(put(sh, 3000, 1, 3000, &a, true), 0);
	T_EQ_INT(put(sh, 10, 2, 10, &b, true), 0);
	t0 = 1700000000 + 1;	/* a's arrival */
	T_CASE("update_one_delivered_one_deferred");
	struct spool_rcpt_update up[2] = {
		{ 0, SPOOL_RCPT_DELIVERED, 1, 0 },
		{ 1, SPOOL_RCPT_PENDING, 1, t0 + 600 },
	};
	memset(&u, 0, sizeof(u));
	T_EQ_INT(spool_shard_update(sh, a.id, up, 2, &u, &err), 0);
	T_EQ_INT(u.calls, 0);		/* not before the sync */
	T_EQ_INT(drive(sh), 1);
	T_EQ_INT(u.calls, 1);
	T_EQ_INT(u.status, 0);
	T_EQ_STR(u.id, a.id);
	struct state_seen st = states(sp, true, t0 + 100);
	T_EQ_INT(st.n, 1);		/* only b is due by then */
	st = states(sp, true, t0 + 600);
	T_EQ_INT(st.n, 2);
	T_CASE("update_states_listed");
	st = states(sp, false, 0);	/* list order: a first */
	T_EQ_INT(st.n, 2);
	T_EQ_INT(st.state[0], SPOOL_RCPT_DELIVERED);
	T_EQ_INT(st.attempts[0], 1);
	T_EQ_INT(st.state[1], SPOOL_RCPT_PENDING);
	T_EQ_INT(st.attempts[1], 1);
	T_EQ_INT(st.next[1], t0 + 600);
	T_EQ_INT(st.due, t0 + 600);
	struct listing l = list(sp);
	T_EQ_INT(l.n, 2);
	T_EQ_INT(l.due[0], t0 + 600);
	T_CASE("update_errors");
	char other[SPOOL_ID_BYTES + 1];
	snprintf(other, sizeof(other), "%s", a.id);
	other[9] = '1';			/* shard 1 */
	T_EQ_INT(spool_shard_update(sh, other, up, 1, NULL, &err), -EXDEV);
	T_EQ_INT(spool_shard_update(sh, "00000000000000ff", up, 1, NULL, &err), -ENOENT);
	T_EQ_INT(spool_shard_update(sh, "nonsense", up, 1, NULL, &err), -EINVAL);
	struct spool_rcpt_update bad = { 2, SPOOL_RCPT_FAILED, 1, 0 };
	T_EQ_INT(spool_shard_update(sh, a.id, &bad, 1, NULL, &err), -EINVAL);
	bad.rcpt = 0;
	bad.state = 7;
	T_EQ_INT(spool_shard_update(sh, a.id, &bad, 1, NULL, &err), -EINVAL);
	T_EQ_INT(spool_shard_update(sh, a.id, up, 0, NULL, &err), -EINVAL);
	T_EQ_INT(spool_shard_sync_begin(sh), -1);
	T_CASE("update_all_final_leaves_due_index");
	struct spool_rcpt_update fin = { 1, SPOOL_RCPT_FAILED, 2, 0 };
	T_EQ_INT(spool_shard_update(sh, a.id, &fin, 1, &u, &err), 0);
	drive(sh);
	T_EQ_INT(u.status, 0);
	T_EQ_INT(states(sp, true, INT64_MAX - 1).n, 1);	/* b only */
	T_EQ_INT(list(sp).n, 2);
	T_CASE("update_failed_sync_keeps_message");
	struct spool_rcpt_update again = { 0, SPOOL_RCPT_PENDING, 3, 5 };
	T_EQ_INT(spool_shard_update(sh, b.id, &again, 1, &u, &err), 0);
	T_CHECK(spool_shard_sync_begin(sh) >= 0, "sync_begin");
	spool_shard_sync_end(sh, -EIO, on_done, &err);
	T_EQ_INT(u.status, -EIO);
	T_EQ_INT(list(sp).n, 2);
	T_CASE("done_removes");
	T_EQ_INT(spool_shard_done(sh, a.id, &u, &err), 0);
	T_EQ_INT(list(sp).n, 2);	/* not before the sync */
	drive(sh);
	T_EQ_INT(u.status, 0);
	l = list(sp);
	T_EQ_INT(l.n, 1);
	T_EQ_INT(count_id(&l, b.id), 1);
	struct sink snk = { NULL, 0, 0, 0 };
	T_EQ_INT(spool_read(sp, a.id, on_bytes, &snk, &err), -ENOENT);
	T_CASE("done_twice_in_one_batch");
	struct ack d1, d2;
	T_EQ_INT(spool_shard_done(sh, b.id, &d1, &err), 0);
	T_EQ_INT(spool_shard_done(sh, b.id, &d2, &err), 0);
	drive(sh);
	T_EQ_INT(d1.status, 0);
	T_EQ_INT(d2.status, -ENOENT);
	T_EQ_INT(list(sp).n, 0);
	T_CASE("update_and_done_replay_in_rebuild");
	struct ack c;
	T_EQ_INT(put(sh, 10, 3, 10, &c, true), 0);
	struct spool_rcpt_update cu = { 1, SPOOL_RCPT_PENDING, 4, 12345,
					 SPOOL_RCPT_F_DELAY_NOTIFIED };
	struct spool_rcpt_update cbad = { 1, SPOOL_RCPT_PENDING, 4, 12345, 0x80 };
	T_EQ_INT(spool_shard_update(sh, c.id, &cbad, 1, &u, &err), -EINVAL);
	T_EQ_INT(spool_shard_update(sh, c.id, &cu, 1, &u, &err), 0);
	drive(sh);
	st = states(sp, false, 0);
	T_EQ_INT(st.flags[1], SPOOL_RCPT_F_DELAY_NOTIFIED);
	T_EQ_INT(st.flags[0], 0);
	/* a refused update (same values) must not turn into a removal */
	T_EQ_INT(spool_shard_update(sh, c.id, &cu, 1, &u, &err), 0);
	T_CHECK(spool_shard_sync_begin(sh) >= 0, "sync_begin");
	spool_shard_sync_end(sh, -EIO, on_done, &err);
	T_EQ_INT(u.status, -EIO);
	spool_shard_close(sh);
	spool_close(sp);
	char marker[600];
	snprintf(marker, sizeof(marker), "%s/index/clean", dir);
	T_EQ_INT(unlink(marker), 0);
	sp = open_or_die(&o);
	struct spool_stats ss;
	spool_stats(sp, &ss);
	T_EQ_INT(ss.is_rebuilt, 1);
	T_EQ_INT(ss.n_messages, 1);
	T_EQ_INT(ss.n_done, 2);
	st = states(sp, false, 0);
	T_EQ_INT(st.n, 1);
	T_EQ_INT(st.state[1], SPOOL_RCPT_PENDING);
	T_EQ_INT(st.attempts[1], 4);
	T_EQ_INT(st.next[1], 12345);
	T_EQ_INT(st.due, 12345);
	T_EQ_INT(st.attempts[0], 0);
	T_EQ_INT(st.flags[1], SPOOL_RCPT_F_DELAY_NOTIFIED);	/* replayed from the record */
	T_EQ_INT(st.flags[0], 0);
	spool_close(sp);
}

/* ---- single lookup, shard of an id, owner dispatch, hold ---------------- */

static const struct id_shard_case {
	const char *name;
	const char *id;
	int want;
} id_shard_cases[] = {
	{ "id_shard_zero", "6543210000000001", 0 },
	{ "id_shard_7", "6543210007000001", 7 },
	{ "id_shard_255_upper", "65432100FF000001", 255 },
	{ "id_shard_short", "654321000700000", -EINVAL },
	{ "id_shard_long", "65432100070000011", -EINVAL },
	{ "id_shard_nonhex", "65432100070000g1", -EINVAL },
	{ "id_shard_space", " 543210007000001", -EINVAL },
	{ "id_shard_empty", "", -EINVAL },
	{ "id_shard_null", NULL, -EINVAL },
};

/* struct owned - a struct spool_owner inside something else. */
struct owned {
	int tag;
	struct spool_owner owner;
	int calls, status;
};

static void owned_done(struct spool_owner *o, const char *id, int status)
{
	struct owned *w = (struct owned *)((char *)o - offsetof(struct owned, owner));
	(void)id;
	w->calls++;
	w->status = status;
}

static void drive_owned(struct spool_shard *sh)
{
	struct rm_err err;
	int fd;

	while ((fd = spool_shard_sync_begin(sh)) >= 0)
		spool_shard_sync_end(sh, fdatasync(fd) < 0 ? -errno : 0,
				     spool_owner_done, &err);
}

static int get_states(void *arg, const struct spool_entry *e)
{
	struct state_seen *s = arg;
	return on_state(s, e) == 0 && strcmp(e->sender, "sender@example.com") == 0 ? 7 : -1;
}

static void test_get_and_hold(void)
{
	const char *dir = new_dir("get");
	struct spool_opts o = opts(dir);
	struct spool *sp = open_or_die(&o);
	struct spool_shard *sh = shard_or_die(sp, 1);
	struct rm_err err;
	struct ack a;
	struct state_seen st;

	for (size_t i = 0; i < sizeof(id_shard_cases) / sizeof(id_shard_cases[0]); i++) {
		T_CASE(id_shard_cases[i].name);
		T_EQ_INT(spool_id_shard(id_shard_cases[i].id), id_shard_cases[i].want);
	}
	T_CASE("id_shard_of_new_message");
	T_EQ_INT(put(sh, 100, 1, 100, &a, true), 0);
	T_EQ_INT(spool_id_shard(a.id), 1);
	T_CASE("get_one");
	memset(&st, 0, sizeof(st));
	T_EQ_INT(spool_get(sp, a.id, get_states, &st, &err), 7);
	T_EQ_INT(st.n, 1);
	T_EQ_INT(st.state[0], SPOOL_RCPT_PENDING);
	T_EQ_INT(st.next[1], 1700000000 + 1);
	T_CASE("get_errors");
	T_EQ_INT(spool_get(sp, "00000000000000ff", get_states, &st, &err), -ENOENT);
	T_EQ_INT(spool_get(sp, "zz", get_states, &st, &err), -EINVAL);
	T_EQ_INT(spool_get(sp, NULL, get_states, &st, &err), -EINVAL);
	T_CASE("hold_via_owner_not_due");
	struct owned w = { 42, { owned_done }, 0, 0 };
	struct spool_rcpt_update up[2] = {
		{ 0, SPOOL_RCPT_PENDING, 0, SPOOL_HELD_UNIX },
		{ 1, SPOOL_RCPT_PENDING, 0, SPOOL_HELD_UNIX },
	};
	T_EQ_INT(spool_shard_update(sh, a.id, up, 2, &w.owner, &err), 0);
	drive_owned(sh);
	T_EQ_INT(w.calls, 1);
	T_EQ_INT(w.status, 0);
	T_EQ_INT(w.tag, 42);
	T_EQ_INT(states(sp, true, (int64_t)time(NULL) + 100LL * 86400).n, 0);
	st = states(sp, false, 0);
	T_EQ_INT(st.n, 1);
	T_EQ_INT(st.due, SPOOL_HELD_UNIX);
	T_CHECK(st.due < INT64_MAX, "held due %lld is INT64_MAX", (long long)st.due);
	T_CASE("release_due_again");
	up[0].next_attempt_unix = up[1].next_attempt_unix = 1700000500;
	T_EQ_INT(spool_shard_update(sh, a.id, up, 2, &w.owner, &err), 0);
	drive_owned(sh);
	T_EQ_INT(w.calls, 2);
	T_EQ_INT(states(sp, true, 1700000500).n, 1);
	T_CASE("done_via_owner");
	T_EQ_INT(spool_shard_done(sh, a.id, &w.owner, &err), 0);
	drive_owned(sh);
	T_EQ_INT(w.calls, 3);
	T_EQ_INT(w.status, 0);
	T_EQ_INT(spool_get(sp, a.id, get_states, &st, &err), -ENOENT);
	spool_shard_close(sh);
	spool_close(sp);
}

static void owned_by(const char *dir, const char *rel, uid_t uid, gid_t gid, int mode)
{
	char path[700];
	struct stat sb;

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	T_CHECK(stat(path, &sb) == 0 && sb.st_uid == uid && sb.st_gid == gid &&
		(mode < 0 || (int)(sb.st_mode & 07777) == mode),
		"%s: got %d:%d %o, want %d:%d %o", rel, (int)sb.st_uid, (int)sb.st_gid,
		(unsigned)(sb.st_mode & 07777), (int)uid, (int)gid, (unsigned)mode);
}

/* drop_writer - open as root for user 65534, drop privileges, then serve. */
static void drop_writer(const char *dir, struct shared *s)
{
	struct spool_opts o = opts(dir);
	struct ack a;

	o.uid = 65534;
	o.gid = 65534;
	struct spool *sp = open_or_die(&o);
	struct spool_shard *sh = shard_or_die(sp, 0);
	if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
	    setresuid(65534, 65534, 65534) < 0)
		_exit(5);
	if (put(sh, 70000, 1, 7000, &a, true) != 0 || a.status != 0)
		_exit(6);
	snprintf(s->id[0], SPOOL_ID_BYTES + 1, "%s", a.id);
	s->n = 1;
	spool_shard_close(sh);
	spool_close(sp);
}

static void test_ownership(void)
{
	const char *dir = new_dir("ownership");
	struct shared *s = shared_new();
	struct spool_stats st;

	T_CASE("ownership_root_opens_for_user_then_drops");
	if (geteuid() != 0) {
		printf("skip %s: not root\n", t_case);
		return;
	}
	in_child(drop_writer, dir, s);
	T_EQ_INT(s->n, 1);
	owned_by(dir, "", 65534, 65534, 0750);
	owned_by(dir, "seg", 65534, 65534, 0750);
	owned_by(dir, "index", 65534, 65534, 0750);
	owned_by(dir, "index/data.mdb", 65534, 65534, -1);
	owned_by(dir, "index/lock.mdb", 65534, 65534, 0660);
	owned_by(dir, "index/clean", 65534, 65534, -1);
	owned_by(dir, "spool.lock", 65534, 65534, -1);
	owned_by(dir, "seg/000-0000000000.seg", 65534, 65534, -1);
	T_CASE("ownership_root_reader_keeps_lock_file_usable");
	struct spool_opts ro = opts(dir);
	ro.read_only = true;
	char lock[700];
	snprintf(lock, sizeof(lock), "%s/index/lock.mdb", dir);
	T_EQ_INT(unlink(lock), 0);	/* as if never opened */
	struct spool *sp = open_or_die(&ro);
	T_EQ_INT(list(sp).n, 1);
	check_content(sp, s->id[0], 70000, 1);
	spool_close(sp);
	owned_by(dir, "index/lock.mdb", 65534, 65534, -1);
	T_CASE("ownership_clean_restart_as_user");
	in_child(drop_writer, dir, s);
	T_EQ_INT(s->n, 1);
	sp = open_or_die(&ro);
	spool_stats(sp, &st);
	T_EQ_INT(list(sp).n, 2);
	spool_close(sp);
	munmap(s, sizeof(*s));
}

static void test_sweep(void)
{
	const char *dir = new_dir("sweep");
	struct spool_opts o = opts(dir);
	struct spool *sp;
	struct spool_shard *sh;
	struct spool_msg *m;
	struct spool_envelope env = envelope(7);
	struct rm_err err;
	static struct ack a[40], d;
	uint8_t buf[20000];
	int before, n;

	o.segment_bytes = 8192;
	sp = open_or_die(&o);
	sh = shard_or_die(sp, 0);
	T_CASE("sweep_nothing_while_all_live");
	for (unsigned i = 0; i < 30; i++)
		T_EQ_INT(put(sh, 3000, i, 3000, &a[i], true), 0);
	before = count_segments(dir);
	T_CHECK(before >= 10, "segments: got %d", before);
	T_EQ_INT(spool_shard_sweep(sh, &err), 0);
	T_CASE("sweep_open_message_pins_its_segment");
	fill(buf, sizeof(buf), 99);
	T_EQ_INT(spool_msg_begin(sh, &m, &err), 0);
	T_EQ_INT(spool_msg_write(m, buf, sizeof(buf), &err), 0);	/* buffered */
	T_EQ_INT(spool_msg_write(m, buf, sizeof(buf), &err), 0);
	T_EQ_INT(spool_msg_write(m, buf, sizeof(buf), &err), 0);
	T_EQ_INT(spool_msg_write(m, buf, sizeof(buf), &err), 0);	/* a chunk */
	for (unsigned i = 0; i < 30; i++) {
		T_EQ_INT(spool_shard_done(sh, a[i].id, &d, &err), 0);
		drive(sh);
		T_EQ_INT(d.status, 0);
	}
	T_EQ_INT(list(sp).n, 0);
	n = spool_shard_sweep(sh, &err);
	T_CHECK(n >= 10, "removed: got %d (%s)", n, err.msg);
	T_CHECK(count_segments(dir) <= before - 10 + 3, "segments left: %d", count_segments(dir));
	T_EQ_INT(spool_msg_write(m, buf, 100, &err), 0);
	snprintf(a[30].id, sizeof(a[30].id), "%s", spool_msg_id(m));
	T_EQ_INT(spool_msg_end(m, &env, &a[30], &err), 0);
	drive(sh);
	T_EQ_INT(a[30].status, 0);
	struct sink snk = { NULL, 0, 0, 0 };
	T_EQ_INT(spool_read(sp, a[30].id, on_bytes, &snk, &err), 0);
	T_EQ_INT(snk.len, 4 * sizeof(buf) + 100);
	free(snk.p);
	T_CASE("sweep_queued_message_pins_later_segments");
	for (unsigned i = 31; i < 36; i++)
		T_EQ_INT(put(sh, 3000, i, 3000, &a[i], true), 0);
	before = count_segments(dir);
	T_EQ_INT(spool_shard_sweep(sh, &err), 0);	/* a[30] is still queued */
	T_EQ_INT(count_segments(dir), before);
	T_EQ_INT(spool_shard_done(sh, a[30].id, &d, &err), 0);
	drive(sh);
	n = spool_shard_sweep(sh, &err);
	T_CHECK(n >= 1, "removed after done: got %d", n);
	for (unsigned i = 31; i < 36; i++)
		check_content(sp, a[i].id, 3000, i);
	spool_shard_close(sh);
	spool_close(sp);
	T_CASE("sweep_rebuild_after_sweep");
	char marker[600];
	snprintf(marker, sizeof(marker), "%s/index/clean", dir);
	T_EQ_INT(unlink(marker), 0);
	sp = open_or_die(&o);
	struct listing l = list(sp);
	T_EQ_INT(l.n, 5);
	for (unsigned i = 31; i < 36; i++)
		T_EQ_INT(count_id(&l, a[i].id), 1);
	T_CASE("sweep_segments_of_earlier_runs");
	sh = shard_or_die(sp, 0);
	for (unsigned i = 31; i < 36; i++) {
		T_EQ_INT(spool_shard_done(sh, a[i].id, &d, &err), 0);
		drive(sh);
	}
	n = spool_shard_sweep(sh, &err);
	T_CHECK(n >= 1, "removed: got %d", n);
	T_CHECK(count_segments(dir) <= 1, "segments left: %d", count_segments(dir));
	spool_shard_close(sh);
	spool_close(sp);
	snprintf(marker, sizeof(marker), "%s/index/clean", dir);
	T_EQ_INT(unlink(marker), 0);
	sp = open_or_die(&o);
	T_EQ_INT(list(sp).n, 0);
	spool_close(sp);
}

/* check_moved_states - a[0]'s states as test_move set them (attempts1 on rcpt 1). */
static void check_moved_states(struct spool *sp, const char *id, int64_t later, unsigned attempts1)
{
	struct state_seen st;
	struct rm_err err;

	memset(&st, 0, sizeof(st));
	T_EQ_INT(spool_get(sp, id, get_states, &st, &err), 7);
	T_EQ_INT(st.state[0], SPOOL_RCPT_DELIVERED);
	T_EQ_INT(st.attempts[0], 1);
	T_EQ_INT(st.state[1], SPOOL_RCPT_PENDING);
	T_EQ_INT(st.attempts[1], attempts1);
	T_CHECK(st.next[1] == later, "next attempt %lld, want %lld", (long long)st.next[1],
		(long long)later);
	T_EQ_INT(st.flags[1], SPOOL_RCPT_F_DELAY_NOTIFIED);
	T_CHECK(st.due == later, "due %lld, want %lld", (long long)st.due, (long long)later);
}

/* churn_done - n messages of 3000 bytes stored, then removed. */
static void churn_done(struct spool_shard *sh, unsigned base, unsigned n)
{
	static struct ack a, d;
	struct rm_err err;

	for (unsigned i = 0; i < n; i++) {
		T_EQ_INT(put(sh, 3000, base + i, 3000, &a, true), 0);
		T_EQ_INT(spool_shard_done(sh, a.id, &d, &err), 0);
		drive(sh);
		T_EQ_INT(d.status, 0);
	}
}

/*
 * put_deferred - message fill(100) of 300 bytes, synced, then its rcpt 0
 * delivered (1 attempt) and rcpt 1 deferred to later (3 attempts, delay
 * notice sent); up gets those updates.
 */
static void put_deferred(struct spool_shard *sh, struct ack *a, int64_t later,
			 struct spool_rcpt_update up[2])
{
	static struct ack w;
	struct rm_err err;

	T_EQ_INT(put(sh, 300, 100, 300, a, true), 0);
	up[0] = (struct spool_rcpt_update){ 0, SPOOL_RCPT_DELIVERED, 1, 0, 0 };
	up[1] = (struct spool_rcpt_update){ 1, SPOOL_RCPT_PENDING, 3, later,
					    SPOOL_RCPT_F_DELAY_NOTIFIED };
	T_EQ_INT(spool_shard_update(sh, a->id, up, 2, &w, &err), 0);
	drive(sh);
	T_EQ_INT(w.status, 0);
}

/*
 * test_move - a deferred message does not pin every later segment: the
 * sweep copies it forward (content, envelope, recipient states), the next
 * sweep unlinks what that freed; a message due soon is left alone; a
 * rebuild takes the copy, with its states and the updates after it,
 * whether the original's segment is still there or not.
 */
static void test_move(void)
{
	const char *dir = new_dir("move");
	struct spool_opts o = opts(dir);
	struct spool *sp;
	struct spool_shard *sh;
	struct rm_err err;
	static struct ack a, b, w;
	int64_t later = (int64_t)time(NULL) + 3600;
	char marker[600];
	int before, n;

	o.segment_bytes = 8192;		/* a 300-byte message is < 1/8 of it */
	snprintf(marker, sizeof(marker), "%s/index/clean", dir);
	sp = open_or_die(&o);
	sh = shard_or_die(sp, 0);
	T_CASE("move_deferred_message_pins_later_segments");
	struct spool_rcpt_update up[2];
	put_deferred(sh, &a, later, up);
	churn_done(sh, 200, 40);
	before = count_segments(dir);
	T_CHECK(before >= 20, "segments: got %d", before);
	T_EQ_INT(list(sp).n, 1);
	T_CASE("move_copies_then_frees");
	T_EQ_INT(spool_shard_sweep(sh, &err), 0);	/* a's segment is the first */
	T_EQ_INT(count_segments(dir), before);
	T_CHECK(drive(sh) >= 1, "the move needs a batch");
	T_EQ_INT((int)spool_shard_n_moved(sh), 1);
	n = spool_shard_sweep(sh, &err);
	T_CHECK(n >= before - 3, "removed %d of %d segments (%s)", n, before, err.msg);
	T_EQ_INT(list(sp).n, 1);
	check_content(sp, a.id, 300, 100);
	check_moved_states(sp, a.id, later, 3);
	T_CASE("move_not_while_due");
	churn_done(sh, 250, 6);		/* b in a later segment than a's copy */
	T_EQ_INT(put(sh, 300, 101, 300, &b, true), 0);	/* due since its arrival */
	churn_done(sh, 300, 40);
	before = count_segments(dir);
	T_EQ_INT(spool_shard_sweep(sh, &err), 0);
	drive(sh);
	T_EQ_INT((int)spool_shard_n_moved(sh), 2);		/* a again, not b */
	n = spool_shard_sweep(sh, &err);
	T_CHECK(n >= 1 && count_segments(dir) >= 15, "removed %d, left %d: b pins the rest",
		n, count_segments(dir));
	T_CASE("move_update_after_the_copy");
	up[1].attempts = 4;
	T_EQ_INT(spool_shard_update(sh, a.id, up, 2, &w, &err), 0);
	drive(sh);
	check_moved_states(sp, a.id, later, 4);
	T_CASE("move_rebuild_with_the_original_still_there");
	T_EQ_INT(spool_shard_done(sh, b.id, &w, &err), 0);
	drive(sh);
	T_CHECK(spool_shard_sweep(sh, &err) >= 1, "b's segments go: %s", err.msg);
	churn_done(sh, 400, 12);
	T_EQ_INT(spool_shard_sweep(sh, &err), 0);
	drive(sh);
	T_EQ_INT((int)spool_shard_n_moved(sh), 3);
	before = count_segments(dir);
	spool_shard_close(sh);		/* no sweep: the copy and its original */
	spool_close(sp);
	T_EQ_INT(unlink(marker), 0);
	sp = open_or_die(&o);
	struct spool_stats sst;
	spool_stats(sp, &sst);
	T_CHECK(sst.is_rebuilt, "the index was rebuilt");
	struct listing l = list(sp);
	T_EQ_INT(l.n, 1);
	T_EQ_INT(count_id(&l, a.id), 1);
	check_content(sp, a.id, 300, 100);
	check_moved_states(sp, a.id, later, 4);
	T_CASE("move_rebuilt_index_no_longer_pins_the_original");
	sh = shard_or_die(sp, 0);
	n = spool_shard_sweep(sh, &err);
	T_CHECK(n >= 4 && count_segments(dir) <= before - 4, "removed %d (%s), left %d of %d",
		n, err.msg, count_segments(dir), before);
	T_CASE("move_rebuild_with_the_original_gone");
	spool_shard_close(sh);
	spool_close(sp);
	T_EQ_INT(unlink(marker), 0);
	sp = open_or_die(&o);
	l = list(sp);
	T_EQ_INT(l.n, 1);
	T_EQ_INT(count_id(&l, a.id), 1);
	check_content(sp, a.id, 300, 100);
	check_moved_states(sp, a.id, later, 4);
	spool_close(sp);
}

/*
 * test_move_sync_failure - a MOVE whose batch fdatasync fails changes
 * nothing: the message reads back from where it was, with its states;
 * the next sweep moves it again.
 */
static void test_move_sync_failure(void)
{
	const char *dir = new_dir("move_fail");
	struct spool_opts o = opts(dir);
	struct spool *sp;
	struct spool_shard *sh;
	struct rm_err err;
	static struct ack a;
	int64_t later = (int64_t)time(NULL) + 3600;
	int fd;

	o.segment_bytes = 8192;
	sp = open_or_die(&o);
	sh = shard_or_die(sp, 0);
	T_CASE("move_sync_failure_keeps_the_original");
	struct spool_rcpt_update up[2];
	put_deferred(sh, &a, later, up);
	churn_done(sh, 200, 12);
	T_EQ_INT(spool_shard_sweep(sh, &err), 0);
	T_CHECK((fd = spool_shard_sync_begin(sh)) >= 0, "the move is a batch");
	while (fd >= 0) {
		spool_shard_sync_end(sh, -EIO, on_done, &err);
		fd = spool_shard_sync_begin(sh);
	}
	T_EQ_INT((int)spool_shard_n_moved(sh), 0);
	check_content(sp, a.id, 300, 100);
	check_moved_states(sp, a.id, later, 3);
	T_CASE("move_sync_failure_then_moved_at_the_next_sweep");
	T_EQ_INT(spool_shard_sweep(sh, &err), 0);
	drive(sh);
	T_EQ_INT((int)spool_shard_n_moved(sh), 1);
	T_CHECK(spool_shard_sweep(sh, &err) >= 4, "the old segments go: %s", err.msg);
	check_content(sp, a.id, 300, 100);
	check_moved_states(sp, a.id, later, 3);
	spool_shard_close(sh);
	spool_close(sp);
}

/* struct mt_arg - one reactor thread's share of the threaded case. */
struct mt_arg {
	struct spool *sp;
	unsigned shard, n;
	atomic_int *stop;
	int failures;
	char id[200][SPOOL_ID_BYTES + 1];
};

static void *mt_writer(void *p)
{
	struct mt_arg *a = p;
	struct spool_shard *sh;
	struct ack k;

	if (spool_shard_open(a->sp, a->shard, &sh, NULL) != 0) {
		a->failures++;
		return NULL;
	}
	for (unsigned i = 0; i < a->n; i++) {
		if (put(sh, 100 + i * 37, 1000 * a->shard + i, 500, &k, i % 5 == 4) != 0)
			a->failures++;
		snprintf(a->id[i], sizeof(a->id[i]), "%s", k.id);
	}
	drive(sh);
	spool_shard_close(sh);
	return NULL;
}

static int mt_count(void *arg, const struct spool_entry *e)
{
	(void)e;
	(*(int *)arg)++;
	return 0;
}

static void *mt_reader(void *p)
{
	struct mt_arg *a = p;
	int last = 0;

	while (!atomic_load(a->stop)) {
		int n = 0;
		if (spool_list(a->sp, mt_count, &n, NULL) != 0 || n < last)
			a->failures++;	/* snapshots only grow here */
		last = n;
	}
	return NULL;
}

static int die_in_list(void *arg, const struct spool_entry *e)
{
	(void)arg;
	(void)e;
	raise(SIGKILL);		/* dies holding a read txn: a stale slot */
	return 0;
}

/* drive_nosync - the group commit without the disk (durability = none). */
static void drive_nosync(struct spool_shard *sh)
{
	while (spool_shard_sync_begin(sh) >= 0)
		spool_shard_sync_end(sh, 0, on_done, NULL);
}

/* churn - n rounds of commit then remove; returns the first failure. */
static int churn(struct spool *sp, struct spool_shard *sh, int n, bool do_sweep)
{
	struct rm_err err;
	struct ack a, d;

	for (int i = 0; i < n; i++) {
		if (do_sweep && i % 10 == 0 && spool_shard_sweep(sh, &err) < 0)
			return -3;
		if (put(sh, 200, (unsigned)i, 200, &a, false) != 0)
			return -1;
		drive_nosync(sh);
		if (a.status != 0)
			return a.status;
		if (spool_shard_done(sh, a.id, &d, &err) != 0)
			return -2;
		drive_nosync(sh);
		if (d.status != 0)
			return d.status;
	}
	(void)sp;
	return 0;
}

static void test_stale_reader(void)
{
	const char *dir = new_dir("stale_reader");
	struct spool_opts o = opts(dir);
	struct spool *sp;
	struct spool_shard *sh;
	struct ack a;
	int st;

	o.map_bytes = 256 * 1024;
	sp = open_or_die(&o);
	sh = shard_or_die(sp, 0);
	T_EQ_INT(put(sh, 10, 1, 10, &a, true), 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct spool_opts ro = o;
		struct spool *r;
		ro.read_only = true;
		if (spool_open(&r, &ro, NULL) == 0)
			spool_list(r, die_in_list, NULL, NULL);
		_exit(1);
	}
	waitpid(pid, &st, 0);
	T_CHECK(WIFSIGNALED(st), "reader status %d", st);
	T_CASE("stale_reader_pins_pages_until_cleared");
	T_EQ_INT(churn(sp, sh, 3000, false), SPOOL_EMAPFULL);
	T_CASE("stale_reader_cleared_by_sweep");
	T_EQ_INT(churn(sp, sh, 3000, true), 0);
	spool_shard_close(sh);
	spool_close(sp);
}

static void test_threads(void)
{
	const char *dir = new_dir("threads");
	struct spool_opts o = opts(dir);
	struct spool *sp = open_or_die(&o);
	static struct mt_arg w[2], r;
	atomic_int stop = 0;
	pthread_t tw[2], tr;

	T_CASE("threads_two_shards_and_a_reader");
	r.sp = sp;
	r.stop = &stop;
	pthread_create(&tr, NULL, mt_reader, &r);
	for (unsigned i = 0; i < 2; i++) {
		w[i].sp = sp;
		w[i].shard = i;
		w[i].n = 200;
		pthread_create(&tw[i], NULL, mt_writer, &w[i]);
	}
	for (unsigned i = 0; i < 2; i++)
		pthread_join(tw[i], NULL);
	atomic_store(&stop, 1);
	pthread_join(tr, NULL);
	T_EQ_INT(w[0].failures + w[1].failures + r.failures, 0);
	struct listing l = list(sp);
	T_EQ_INT(l.n, 400);
	for (unsigned i = 0; i < 2; i++)
		for (unsigned k = 0; k < 200; k += 19)
			check_content(sp, w[i].id[k], 100 + k * 37, 1000 * i + k);
	spool_close(sp);
}

/* reader_step - one spool_reader_next into the sink; the result. */
static int reader_step(struct spool_reader *rd, struct sink *s)
{
	struct rm_err err = { 0, "" };
	const uint8_t *p;
	size_t len;
	int rc = spool_reader_next(rd, &p, &len, &err);

	if (rc == 1)
		on_bytes(s, p, len);
	return rc;
}

static int cache_fds(const struct spool_fd_cache *c)
{
	int n = 0;
	for (unsigned i = 0; i < SPOOL_FD_CACHE_SLOTS; i++)
		n += c->slot[i].fd >= 0;
	return n;
}

/* test_reader_cache - readers sharing a thread's segment cache. */
static void test_reader_cache(void)
{
	const char *dir = new_dir("reader_cache");
	struct spool_opts o = opts(dir);
	struct spool *sp;
	struct spool_shard *sh;
	struct spool_fd_cache c;
	struct spool_reader *rd[10];
	struct sink out[10];
	struct ack a[10];
	struct rm_err err = { 0, "" };
	bool done[10] = { false };
	int n_done = 0, rc;

	o.segment_bytes = 8192;	/* about one message per segment */
	sp = open_or_die(&o);
	sh = shard_or_die(sp, 0);
	for (unsigned i = 0; i < 10; i++)
		T_EQ_INT(put(sh, 6000 + 100 * i, 200 + i, 1000, &a[i], true), 0);
	spool_fd_cache_init(&c);
	T_CASE("reader_cache_more_readers_than_slots");
	/* ten readers at once, each on its own segment(s), one piece each in
	 * turn: slots run out, the rest open their own fds */
	for (unsigned i = 0; i < 10; i++) {
		memset(&out[i], 0, sizeof(out[i]));
		T_EQ_INT(spool_reader_open(sp, a[i].id, &c, &rd[i], &err), 0);
	}
	while (n_done < 10) {
		for (unsigned i = 0; i < 10; i++) {
			if (done[i])
				continue;
			rc = reader_step(rd[i], &out[i]);
			T_CHECK(rc >= 0, "reader %u: got %d (%s)", i, rc, err.msg);
			if (rc <= 0) {
				done[i] = true;
				n_done++;
			}
		}
		T_CHECK(cache_fds(&c) <= SPOOL_FD_CACHE_SLOTS, "cached fds: %d", cache_fds(&c));
	}
	for (unsigned i = 0; i < 10; i++) {
		uint8_t *want = malloc(6000 + 100 * i);
		fill(want, 6000 + 100 * i, 200 + i);
		T_CHECK(out[i].len == 6000 + 100 * i && memcmp(out[i].p, want, out[i].len) == 0,
			"reader %u: content differs (%zu bytes)", i, out[i].len);
		free(want);
		free(out[i].p);
		spool_reader_close(rd[i]);
	}
	for (unsigned i = 0; i < SPOOL_FD_CACHE_SLOTS; i++)
		T_EQ_INT((int)c.slot[i].refs, 0);
	T_CHECK(cache_fds(&c) == SPOOL_FD_CACHE_SLOTS, "cached fds: %d, want %d",
		cache_fds(&c), SPOOL_FD_CACHE_SLOTS);
	T_CASE("reader_cache_hit_reuses_the_fd");
	/* a message read a second time finds its segments cached: the
	 * second read opens and closes nothing */
	int before[SPOOL_FD_CACHE_SLOTS];
	for (int pass = 0; pass < 2; pass++) {
		struct sink again = { NULL, 0, 0, 0 };
		T_EQ_INT(spool_reader_open(sp, a[9].id, &c, &rd[0], &err), 0);
		while ((rc = reader_step(rd[0], &again)) == 1)
			;
		T_EQ_INT(rc, 0);
		T_CHECK(again.len == 6900, "again: %zu bytes", again.len);
		spool_reader_close(rd[0]);
		free(again.p);
		for (unsigned i = 0; i < SPOOL_FD_CACHE_SLOTS; i++)
			if (pass == 0)
				before[i] = c.slot[i].fd;
			else
				T_EQ_INT(c.slot[i].fd, before[i]);
	}
	T_CASE("reader_cache_trim_and_no_cache");
	spool_fd_cache_trim(&c);
	T_EQ_INT(cache_fds(&c), 0);
	struct sink own = { NULL, 0, 0, 0 };
	T_EQ_INT(spool_reader_open(sp, a[3].id, NULL, &rd[0], &err), 0);
	while ((rc = reader_step(rd[0], &own)) == 1)
		;
	T_EQ_INT(rc, 0);
	T_CHECK(own.len == 6300, "own: %zu bytes", own.len);
	spool_reader_close(rd[0]);
	free(own.p);
	spool_fd_cache_fini(&c);
	spool_shard_close(sh);
	spool_close(sp);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(tmp_root, sizeof(tmp_root), "%s/test_spool.XXXXXX", tmp ? tmp : "/tmp");
	if (mkdtemp(tmp_root) == NULL) {
		perror("mkdtemp");
		return 2;
	}
	test_crc32c();
	test_strerror();
	test_roundtrip();
	test_interleaved();
	test_abort();
	test_rotation();
	test_crash();
	test_damage();
	test_prealloc();
	test_index_damage();
	test_segment_version();
	test_fuzz_recovery();
	test_forged_record();
	test_map_full();
	test_two_shards();
	test_sync_failure();
	test_write_error();
	test_fill_error();
	test_item_write_error();
	test_due_and_ids();
	test_update_and_done();
	test_get_and_hold();
	test_ownership();
	test_sweep();
	test_move();
	test_move_sync_failure();
	test_stale_reader();
	test_reader_cache();
	test_threads();
	if (t_failed == 0) {
		char cmd[300];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_root);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", tmp_root);
	} else {
		fprintf(stderr, "spool directories kept in %s\n", tmp_root);
	}
	return t_done();
}
