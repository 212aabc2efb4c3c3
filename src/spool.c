/*
 * spool - durable message spool: segment files, LMDB index, group commit,
 * recovery. The design notes are at the top of include/ringmta/spool.h.
 *
 * Owns: the spool directory tree and its flock; the LMDB environment; per
 *   shard: the open segment, retired segments awaiting their sync, the
 *   pending and in-flight batches, a small pool of message buffers, and
 *   the unlinking of its dead segments.
 * Must not: include liburing or call fsync on the hot path (the reactor
 *   runs the batch fdatasync on its ring); log (spool_stats() and rm_err
 *   carry everything); trust a byte read back from disk before its crc.
 * Interface: include/ringmta/spool.h
 * Limits: SPOOL_CHUNK_BYTES buffered per message; SPOOL_MAX_STRING_BYTES
 *   and SPOOL_MAX_RCPTS per envelope; MAX_RECORD_BYTES per record;
 *   MAX_EXTENTS per message; FREE_MSGS cached messages per shard;
 *   MOVE_MAX_BYTES and MOVE_MAX_MSGS copied out of old segments a sweep.
 * Errors: -errno, SPOOL_E* (spool.h). A call on a message in the wrong
 *   state, or spool_close() with open shards, is our bug: rm_panic().
 * Standards: RFC 3461 (NOTIFY, ORCPT, RET, ENVID), RFC 6152 (BODY),
 *   RFC 6531 (SMTPUTF8); crc32c is the Castagnoli polynomial (RFC 3720).
 */
#include "ringmta/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

/*
 * On disk (little-endian unless marked be):
 *   segment header, 32 bytes: "RMSPSEG1", u32 version, u32 shard,
 *     u64 seqno, u64 nonce
 *   record header, 24 bytes: u32 magic, u8 type, u8 flags, u16 0, u64 id,
 *     u32 payload length, u32 crc32c(seed, header[0..20) + payload);
 *     payload; zero padding to 8 bytes
 *   COMMIT payload: u32 version, u32 n_rcpts, u64 size, u32 content crc,
 *     u32 flags, i64 arrival, i32 ret, i32 body, then strings sender,
 *     envid, client_addr, helo and per rcpt u32 notify, addr, orcpt; a
 *     string is u32 length (NO_STRING for NULL), bytes, NUL
 *   index value: u32 version, u32 shard, u32 n_extents, u32 commit length,
 *     u32 first seqno (oldest segment with a record of it), u32 0,
 *     extents {u32 seqno, u32 length, u64 record offset}, the COMMIT
 *     payload, rcpt states {u8 state, u8 flags (SPOOL_RCPT_F_*; 0 in
 *     spools written before they existed), u16 attempts, u32 0,
 *     i64 next attempt}
 *   RCPT_STATE payload: u32 n, n x {u32 rcpt, u8 state, u8 flags,
 *     u16 attempts, i64 next attempt}
 *   DONE payload: empty; flag DONE_ABORTED: the message was never
 *     acknowledged (aborted, or refused after its COMMIT)
 *   index keys: msg: be64 id; due: be64 (time ^ 2^63) + be64 id; seg:
 *     be32 shard + be32 first seqno + be64 id (what pins a segment);
 *     meta: "version", "hw/NNN" (u64 last id of shard NNN)
 */

#define SEG_MAGIC "RMSPSEG1"
#define SEG_VERSION 1u
#define SEG_HDR_BYTES 32u
#define REC_MAGIC 0x52534d52u		/* "RMSR" */
#define REC_HDR_BYTES 24u
#define COMMIT_VERSION 1u
#define INDEX_VERSION 2u
#define NO_STRING 0xffffffffu
#define COMMIT_FIXED_BYTES 40u
#define VALUE_HDR_BYTES 24u
#define EXTENT_BYTES 16u
#define RSTATE_BYTES 16u
#define DONE_ABORTED 0x1u		/* DONE flag: never acknowledged */
#define COMMIT_MOVED 0x1u		/* COMMIT flag: a copy, rcpt states appended */
/* MAX_RECORD_BYTES - bounds what a corrupt length field can make us read;
 * a COMMIT with SPOOL_MAX_RCPTS short recipients stays well below. */
#define MAX_RECORD_BYTES (16u << 20)
/* MAX_EXTENTS - 2^20 chunks of 64 KiB: 64 GiB, far above any size limit. */
#define MAX_EXTENTS (1u << 20)
/* FREE_MSGS - message structs a shard keeps for reuse. */
#define FREE_MSGS 64u
/*
 * MSG_BUF_MIN_BYTES, MSG_BUF_KEEP_BYTES - a message's content buffer
 * starts at 4 KiB and doubles up to SPOOL_CHUNK_BYTES, so 10k sessions in
 * DATA with small mails hold tens of MB, not 10k x 64 KiB; a pooled
 * message keeps at most 16 KiB of it.
 */
#define MSG_BUF_MIN_BYTES 4096u
#define MSG_BUF_KEEP_BYTES (16u * 1024u)
/* REBUILD_BUCKETS - hash buckets for uncommitted messages during a scan. */
#define REBUILD_BUCKETS 4096u
#define MARKER_NAME "clean"		/* in index/, which is ours */
#define MARKER_TEXT "ringmta spool index clean at txnid "
#define LOCK_NAME "spool.lock"
#define SEG_NAME_FMT "%03u-%010" PRIu64 ".seg"
#define SEG_NAME_BYTES 18u
/*
 * Moving messages out of old segments (spool_shard_sweep): the oldest
 * segment a queued message pins is emptied once it is MOVE_MIN_LAG
 * segments behind the one being written and what is left alive in it is
 * at most an eighth of segment_bytes (so copying costs at most 1/8 of
 * the bytes it frees); a sweep copies at most MOVE_MAX_BYTES and
 * MOVE_MAX_MSGS, and only messages not due for MOVE_QUIET_S seconds
 * (not being delivered now) with no update of theirs in the batch.
 */
#define MOVE_MIN_LAG 4u
#define MOVE_MAX_BYTES (8u << 20)
#define MOVE_MAX_MSGS 1024u
#define MOVE_QUIET_S 60

/* ---- small helpers ---------------------------------------------------- */

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint16_t get_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

/* ---- crc32c (Castagnoli) ---------------------------------------------- */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static bool crc_has_hw;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^
					  crc_table[0][crc_table[t - 1][i] & 0xff];
#if defined(__x86_64__)
	__builtin_cpu_init();
	crc_has_hw = __builtin_cpu_supports("sse4.2");
#endif
}

/* crc_sw - slicing-by-8 crc32c on the raw (not inverted) state. */
static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t n)
{
	while (n >= 8) {
		uint32_t lo = c ^ get_le32(p), hi = get_le32(p + 4);
		c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
		    crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
		    crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
		    crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
		p += 8;
		n -= 8;
	}
	while (n--)
		c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t n)
{
	uint64_t c64 = c;
	while (n >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c64 = __builtin_ia32_crc32di(c64, v);
		p += 8;
		n -= 8;
	}
	c = (uint32_t)c64;
	while (n--)
		c = __builtin_ia32_crc32qi(c, *p++);
	return c;
}
#endif

uint32_t spool_crc32c(uint32_t crc, const void *p, size_t n)
{
	pthread_once(&crc_once, crc_init);
	crc = ~crc;
#if defined(__x86_64__)
	if (crc_has_hw)
		return ~crc_hw(crc, p, n);
#endif
	return ~crc_sw(crc, p, n);
}

/* ---- errors ------------------------------------------------------------ */

const char *spool_strerror(int code)
{
	switch (code) {
	case 0: return "success";
	case SPOOL_ECORRUPT: return "spool data corrupt";
	case SPOOL_EMAPFULL: return "spool index full (raise map_bytes)";
	case SPOOL_EINDEX: return "spool index error";
	case SPOOL_EABANDONED: return "message abandoned after a failed sync";
	case SPOOL_EVERSION: return "spool written by an incompatible version";
	}
	if (code >= MDB_KEYEXIST && code <= MDB_LAST_ERRCODE)
		return mdb_strerror(code);
	if (code < 0 && code > -4096)
		return strerror(-code);
	return "unknown spool error";
}

/* lmdb_err - convert an LMDB return at the boundary, naming the call. */
static int lmdb_err(struct rm_err *err, int rc, const char *call)
{
	int code = rc == MDB_MAP_FULL ? SPOOL_EMAPFULL :
		   rc > 0 ? -rc : SPOOL_EINDEX;
	return rm_err_set(err, code, "spool: lmdb: %s: %s", call,
			  mdb_strerror(rc));
}

static int sys_err(struct rm_err *err, const char *what, const char *name)
{
	int e = errno ? errno : EIO;
	return rm_err_set(err, -e, "spool: %s %s: %s", what, name, strerror(e));
}

/* ---- the structures ----------------------------------------------------- */

struct spool {
	struct spool_opts o;
	char *dir;
	int dir_fd, seg_fd, index_fd, lock_fd;
	MDB_env *env;
	MDB_dbi db_msg, db_due, db_meta, db_seg;
	uint64_t low_seq[SPOOL_MAX_SHARDS];	/* oldest segment left, per shard */
	struct spool_stats stats;
	pthread_mutex_t mu;		/* guards is_shard_open */
	unsigned n_open_shards;
	bool is_shard_open[SPOOL_MAX_SHARDS];
	uint64_t next_seq[SPOOL_MAX_SHARDS];	/* owned by the shard once open */
	uint64_t last_id[SPOOL_MAX_SHARDS];	/* from a rebuild or a close */
};

/* struct seg - a segment being written (or retired, awaiting its sync). */
struct seg {
	int fd;
	uint64_t seq;
	uint64_t tail;
	uint64_t filled;	/* zero-filled up to here (>= tail when ahead) */
	uint32_t seed;
};

enum msg_state { MSG_FREE, MSG_OPEN, MSG_PENDING, MSG_INFLIGHT };
/* what a batch item does to the index: a spool_msg carries all three */
enum msg_kind { KIND_COMMIT, KIND_UPDATE, KIND_DONE, KIND_MOVE };
enum sync_kind { SYNC_NONE, SYNC_RETIRED, SYNC_BATCH };

struct spool_msg {
	struct spool_shard *sh;
	struct spool_msg *next, *prev;
	enum msg_state state;
	enum msg_kind kind;
	int status;			/* per item, from the batch txn */
	bool is_rec_written;		/* UPDATE/DONE: its record is in the segment */
	uint64_t id;
	char id_str[SPOOL_ID_BYTES + 1];
	bool is_on_disk;
	uint32_t gen;			/* shard gen at the first disk write */
	uint64_t first_seq;		/* segment of the first record: pinned */
	int err;			/* sticky */
	uint8_t *buf;			/* grows to SPOOL_CHUNK_BYTES */
	size_t buf_len, buf_cap;
	uint64_t size;
	uint32_t crc;
	struct rm_buf extents;
	struct rm_buf value;		/* index value, UPDATE payload, or MOVE's COMMIT */
	uint8_t *moved;			/* MOVE: the content to copy */
	int64_t due;
	void *owner;
};

/* struct msg_loc - where a message's content lives, copied out of a txn. */
struct msg_loc {
	uint8_t *extents;
	uint32_t n_extents;
	uint64_t size;
	uint32_t crc;
};

struct msg_list {
	struct spool_msg *head, *tail;
};

struct spool_shard {
	struct spool *sp;
	unsigned idx;
	struct seg cur;			/* fd -1: none yet (lazy) */
	struct seg *retired;
	size_t n_retired, cap_retired;
	uint32_t gen;			/* bumped by every failed sync */
	uint64_t last_id;
	uint64_t clock_sec;
	uint32_t counter;
	struct spool_msg *open;		/* doubly linked */
	struct msg_list pending, inflight;
	enum sync_kind sync;
	struct spool_msg *free;
	unsigned n_free;
	struct rm_buf scratch;
	uint64_t n_moved;		/* messages copied out of old segments */
};

/* ---- ids ----------------------------------------------------------------- */

static void id_format(uint64_t id, char out[SPOOL_ID_BYTES + 1])
{
	snprintf(out, SPOOL_ID_BYTES + 1, "%016" PRIx64, id);
}

/* id_parse - 16 lowercase or uppercase hex digits, nothing else. */
static int id_parse(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	for (int i = 0; i < SPOOL_ID_BYTES; i++) {
		char c = s[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return -EINVAL;
		v = v << 4 | d;
	}
	if (s[SPOOL_ID_BYTES] != '\0')
		return -EINVAL;
	*out = v;
	return 0;
}

static unsigned id_shard(uint64_t id) { return (unsigned)(id >> 24) & 0xff; }

int spool_id_shard(const char *id)
{
	uint64_t v;

	if (id == NULL || id_parse(id, &v) < 0)
		return -EINVAL;
	return (int)id_shard(v);
}

void spool_owner_done(void *owner, const char *queue_id, int status)
{
	struct spool_owner *o = owner;

	if (o == NULL || o->done == NULL)
		rm_panic("spool: done for %s without an owner", queue_id);
	o->done(o, queue_id, status);
}

/*
 * id_next - the shard's next id: a logical clock of seconds that never runs
 * behind the wall clock or the last id, then shard, then a counter.
 */
static uint64_t id_next(struct spool_shard *sh)
{
	uint64_t now = (uint64_t)time(NULL) & 0xffffffffu;

	if (now > sh->clock_sec) {
		sh->clock_sec = now;
		sh->counter = 0;
	} else if (++sh->counter > 0xffffffu) {
		sh->clock_sec++;
		sh->counter = 0;
	}
	sh->last_id = sh->clock_sec << 32 | (uint64_t)sh->idx << 24 |
		      sh->counter;
	return sh->last_id;
}

static void due_key(uint8_t key[16], int64_t t, uint64_t id)
{
	put_be64(key, (uint64_t)t ^ (1ULL << 63));
	put_be64(key + 8, id);
}

static void put_be32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* seg_key - the "seg" key: this message pins segment seq of its shard. */
static void seg_key(uint8_t k[16], uint32_t shard, uint32_t seq, uint64_t id)
{
	put_be32(k, shard);
	put_be32(k + 4, seq);
	put_be64(k + 8, id);
}

/* ---- envelope and index value encoding ----------------------------------- */

static int buf_le32(struct rm_buf *b, uint32_t v)
{
	uint8_t t[4];
	put_le32(t, v);
	return rm_buf_append(b, t, 4);
}

static int buf_str(struct rm_buf *b, const char *s)
{
	size_t n;
	int rc;

	if (s == NULL)
		return buf_le32(b, NO_STRING);
	n = strlen(s);
	if (n > SPOOL_MAX_STRING_BYTES)
		return -EINVAL;
	if ((rc = buf_le32(b, (uint32_t)n)) < 0)
		return rc;
	return rm_buf_append(b, s, n + 1);
}

/* commit_encode - append the COMMIT payload for env to b. */
static int commit_encode(struct rm_buf *b, const struct spool_envelope *env,
			 uint64_t size, uint32_t crc)
{
	uint8_t f[COMMIT_FIXED_BYTES];
	int rc;

	if (env->sender == NULL || env->n_rcpts == 0 ||
	    env->n_rcpts > SPOOL_MAX_RCPTS || env->rcpts == NULL)
		return -EINVAL;
	put_le32(f, COMMIT_VERSION);
	put_le32(f + 4, (uint32_t)env->n_rcpts);
	put_le64(f + 8, size);
	put_le32(f + 16, crc);
	put_le32(f + 20, env->smtputf8 ? 1u : 0u);
	put_le64(f + 24, (uint64_t)env->arrival_unix);
	put_le32(f + 32, (uint32_t)env->ret);
	put_le32(f + 36, (uint32_t)env->body);
	if ((rc = rm_buf_append(b, f, sizeof(f))) < 0 ||
	    (rc = buf_str(b, env->sender)) < 0 ||
	    (rc = buf_str(b, env->envid)) < 0 ||
	    (rc = buf_str(b, env->client_addr)) < 0 ||
	    (rc = buf_str(b, env->helo)) < 0)
		return rc;
	for (size_t i = 0; i < env->n_rcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		if (r->addr == NULL)
			return -EINVAL;
		if ((rc = buf_le32(b, r->notify)) < 0 ||
		    (rc = buf_str(b, r->addr)) < 0 ||
		    (rc = buf_str(b, r->orcpt)) < 0)
			return rc;
	}
	return 0;
}

/* struct commit_view - a parsed COMMIT payload; strings point into it. */
struct commit_view {
	uint32_t n_rcpts, crc, flags;
	uint64_t size;
	int64_t arrival;
	int32_t ret, body;
	const char *sender, *envid, *client_addr, *helo;
	const uint8_t *rcpts, *end;
};

static int str_get(const uint8_t **pp, const uint8_t *end, const char **out)
{
	const uint8_t *p = *pp;
	uint32_t n;

	if (end - p < 4)
		return SPOOL_ECORRUPT;
	n = get_le32(p);
	p += 4;
	if (n == NO_STRING) {
		*out = NULL;
	} else {
		if (n > SPOOL_MAX_STRING_BYTES || (size_t)(end - p) < (size_t)n + 1 ||
		    p[n] != '\0')
			return SPOOL_ECORRUPT;
		*out = (const char *)p;
		p += n + 1;
	}
	*pp = p;
	return 0;
}

/*
 * rcpt_get - parse one recipient at *pp. Returns 0 or SPOOL_ECORRUPT.
 */
static int rcpt_get(const uint8_t **pp, const uint8_t *end,
		    struct spool_rcpt_entry *r)
{
	if (end - *pp < 4)
		return SPOOL_ECORRUPT;
	r->notify = get_le32(*pp);
	*pp += 4;
	if (str_get(pp, end, &r->addr) < 0 || r->addr == NULL ||
	    str_get(pp, end, &r->orcpt) < 0)
		return SPOOL_ECORRUPT;
	return 0;
}

/* commit_parse - check a whole COMMIT payload and fill cv. */
static int commit_parse(const uint8_t *p, size_t len, struct commit_view *cv)
{
	const uint8_t *end = p + len;
	struct spool_rcpt_entry r;

	if (len < COMMIT_FIXED_BYTES || get_le32(p) != COMMIT_VERSION)
		return SPOOL_ECORRUPT;
	cv->n_rcpts = get_le32(p + 4);
	cv->size = get_le64(p + 8);
	cv->crc = get_le32(p + 16);
	cv->flags = get_le32(p + 20);
	cv->arrival = (int64_t)get_le64(p + 24);
	cv->ret = (int32_t)get_le32(p + 32);
	cv->body = (int32_t)get_le32(p + 36);
	p += COMMIT_FIXED_BYTES;
	if (cv->n_rcpts == 0 || cv->n_rcpts > SPOOL_MAX_RCPTS ||
	    str_get(&p, end, &cv->sender) < 0 || cv->sender == NULL ||
	    str_get(&p, end, &cv->envid) < 0 ||
	    str_get(&p, end, &cv->client_addr) < 0 ||
	    str_get(&p, end, &cv->helo) < 0)
		return SPOOL_ECORRUPT;
	cv->rcpts = p;
	for (uint32_t i = 0; i < cv->n_rcpts; i++)
		if (rcpt_get(&p, end, &r) < 0)
			return SPOOL_ECORRUPT;
	if (p != end)
		return SPOOL_ECORRUPT;
	cv->end = end;
	return 0;
}

/* struct value_view - a parsed index value; pointers into it. */
struct value_view {
	uint32_t shard, n_extents, commit_len, first_seq;
	const uint8_t *extents, *commit, *rstates;
	struct commit_view cv;
};

static int value_parse(const uint8_t *v, size_t len, struct value_view *vv)
{
	uint64_t need;

	if (len < VALUE_HDR_BYTES)
		return SPOOL_ECORRUPT;
	if (get_le32(v) != INDEX_VERSION)
		return SPOOL_EVERSION;
	vv->shard = get_le32(v + 4);
	vv->n_extents = get_le32(v + 8);
	vv->commit_len = get_le32(v + 12);
	vv->first_seq = get_le32(v + 16);
	need = VALUE_HDR_BYTES + (uint64_t)vv->n_extents * EXTENT_BYTES +
	       vv->commit_len;
	if (need > len)
		return SPOOL_ECORRUPT;
	vv->extents = v + VALUE_HDR_BYTES;
	vv->commit = vv->extents + (size_t)vv->n_extents * EXTENT_BYTES;
	if (commit_parse(vv->commit, vv->commit_len, &vv->cv) < 0)
		return SPOOL_ECORRUPT;
	if (need + (uint64_t)vv->cv.n_rcpts * RSTATE_BYTES != len)
		return SPOOL_ECORRUPT;
	vv->rstates = vv->commit + vv->commit_len;
	return 0;
}

/* value_build - the index value of a newly committed message. */
static int value_build(struct rm_buf *b, unsigned shard, uint64_t first_seq,
		       const void *extents, size_t n_extents,
		       const uint8_t *commit, size_t commit_len,
		       const struct commit_view *cv)
{
	uint8_t h[VALUE_HDR_BYTES], rs[RSTATE_BYTES];
	int rc;

	b->len = 0;
	put_le32(h, INDEX_VERSION);
	put_le32(h + 4, shard);
	put_le32(h + 8, (uint32_t)n_extents);
	put_le32(h + 12, (uint32_t)commit_len);
	put_le32(h + 16, (uint32_t)first_seq);
	put_le32(h + 20, 0);
	if ((rc = rm_buf_append(b, h, sizeof(h))) < 0 ||
	    (rc = rm_buf_append(b, extents, n_extents * EXTENT_BYTES)) < 0 ||
	    (rc = rm_buf_append(b, commit, commit_len)) < 0)
		return rc;
	memset(rs, 0, sizeof(rs));
	rs[0] = SPOOL_RCPT_PENDING;
	put_le64(rs + 8, (uint64_t)cv->arrival);
	for (uint32_t i = 0; i < cv->n_rcpts; i++)
		if ((rc = rm_buf_append(b, rs, sizeof(rs))) < 0)
			return rc;
	return 0;
}

/* value_due - earliest next attempt of a pending recipient, or INT64_MAX. */
static int64_t value_due(const struct value_view *vv)
{
	int64_t due = INT64_MAX;

	for (uint32_t i = 0; i < vv->cv.n_rcpts; i++) {
		const uint8_t *r = vv->rstates + (size_t)i * RSTATE_BYTES;
		int64_t t = (int64_t)get_le64(r + 8);
		if (r[0] == SPOOL_RCPT_PENDING && t < due)
			due = t;
	}
	return due;
}

/* struct rcpt_arr - growable scratch for the recipients of one entry. */
struct rcpt_arr {
	struct spool_rcpt_entry *r;
	size_t cap;
};

/*
 * entry_fill - turn a parsed value into the caller's view; the recipient
 * array lives in ra, which grows as needed (bounded by SPOOL_MAX_RCPTS).
 */
static int entry_fill(struct spool_entry *e, uint64_t id,
		      const struct value_view *vv, struct rcpt_arr *ra)
{
	const struct commit_view *cv = &vv->cv;
	const uint8_t *p = cv->rcpts;
	struct spool_rcpt_entry *r;

	if (cv->n_rcpts > ra->cap) {
		r = realloc(ra->r, cv->n_rcpts * sizeof(*r));
		if (r == NULL)
			return -ENOMEM;
		ra->r = r;
		ra->cap = cv->n_rcpts;
	}
	r = ra->r;
	for (uint32_t i = 0; i < cv->n_rcpts; i++) {
		const uint8_t *s = vv->rstates + (size_t)i * RSTATE_BYTES;
		if (rcpt_get(&p, cv->end, &r[i]) < 0)
			return SPOOL_ECORRUPT;
		r[i].state = s[0];
		r[i].flags = s[1];
		r[i].attempts = get_le16(s + 2);
		r[i].next_attempt_unix = (int64_t)get_le64(s + 8);
	}
	id_format(id, e->id);
	e->shard = vv->shard;
	e->size = cv->size;
	e->content_crc32c = cv->crc;
	e->arrival_unix = cv->arrival;
	e->next_attempt_unix = value_due(vv);
	e->sender = cv->sender;
	e->envid = cv->envid;
	e->ret = cv->ret;
	e->body = cv->body;
	e->smtputf8 = cv->flags & 1u;
	e->client_addr = cv->client_addr;
	e->helo = cv->helo;
	e->rcpts = r;
	e->n_rcpts = cv->n_rcpts;
	return 0;
}

/* ---- segments -------------------------------------------------------------- */

static uint32_t seg_seed(uint64_t nonce) { return (uint32_t)(nonce ^ (nonce >> 32)); }

/* own_fd - hand a file we created to the configured owner. */
static int own_fd(const struct spool *sp, int fd)
{
	if (sp->o.uid == -1 && sp->o.gid == -1)
		return 0;
	return fchown(fd, (uid_t)sp->o.uid, (gid_t)sp->o.gid) < 0 ? -errno : 0;
}

static int own_at(const struct spool *sp, int dfd, const char *name)
{
	if (sp->o.uid == -1 && sp->o.gid == -1)
		return 0;
	if (fchownat(dfd, name, (uid_t)sp->o.uid, (gid_t)sp->o.gid, 0) < 0)
		return -errno;
	return 0;
}

/* pwritev_full - write every byte of iov at off, riding out short writes. */
static int pwritev_full(int fd, struct iovec *iov, int n, uint64_t off)
{
	while (n > 0) {
		ssize_t w = pwritev(fd, iov, n, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		off += (uint64_t)w;
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

static int pread_full(int fd, void *p, size_t len, uint64_t off)
{
	size_t got = 0;

	while (got < len) {
		ssize_t r = pread(fd, (char *)p + got, len - got, (off_t)(off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return SPOOL_ECORRUPT;	/* the index points past the end */
		got += (size_t)r;
	}
	return 0;
}

static uint64_t nonce_new(uint64_t seq)
{
	uint64_t n;

	if (getrandom(&n, sizeof(n), GRND_NONBLOCK) == (ssize_t)sizeof(n))
		return n;
	return ((uint64_t)time(NULL) * 0x9e3779b97f4a7c15ULL) ^
	       ((uint64_t)getpid() << 32) ^ seq;
}

/*
 * seg_create - create the shard's next segment, write its header and make
 * its directory entry durable (XXX synchronous, once per segment).
 */
static int seg_create(struct spool_shard *sh, struct seg *out,
		      struct rm_err *err)
{
	struct spool *sp = sh->sp;
	char name[32];
	uint8_t h[SEG_HDR_BYTES];
	uint64_t nonce, seq;
	struct iovec iov = { h, sizeof(h) };
	int fd, rc;

	for (int tries = 0;; tries++) {
		seq = sp->next_seq[sh->idx]++;
		if (seq > UINT32_MAX)	/* extents keep 32 bits of seqno */
			return rm_err_set(err, -EOVERFLOW, "spool: shard %u: segment "
					  "numbers exhausted", sh->idx);
		snprintf(name, sizeof(name), SEG_NAME_FMT, sh->idx, seq);
		fd = openat(sp->seg_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
		if (fd >= 0)
			break;
		if (errno != EEXIST || tries >= 1000)
			return sys_err(err, "create segment", name);
	}
	nonce = nonce_new(seq);
	memcpy(h, SEG_MAGIC, 8);
	put_le32(h + 8, SEG_VERSION);
	put_le32(h + 12, sh->idx);
	put_le64(h + 16, seq);
	put_le64(h + 24, nonce);
	if ((rc = own_fd(sp, fd)) < 0 || (rc = pwritev_full(fd, &iov, 1, 0)) < 0 ||
	    (rc = fsync(sp->seg_fd) < 0 ? -errno : 0) < 0) {
		close(fd);
		unlinkat(sp->seg_fd, name, 0);
		return rm_err_set(err, rc, "spool: create segment %s: %s", name,
				  strerror(-rc));
	}
	out->fd = fd;
	out->seq = seq;
	out->tail = SEG_HDR_BYTES;
	out->filled = SEG_HDR_BYTES;
	out->seed = seg_seed(nonce);
	return 0;
}

/* FILL_STEP - zero bytes one seg_fill_ahead() writes per call. */
#define FILL_STEP (256u * 1024u)

/*
 * seg_fill_ahead - keep the open segment zero-filled prealloc_bytes past
 * its tail, FILL_STEP at a time, and start their writeback at once, so
 * that the blocks are allocated and the size set long before records land
 * there: the batch fdatasync then flushes data pages only, with no inode
 * or block-map write of its own. Zeros are never written below the tail.
 * A failure (ENOSPC) cuts the file back to the tail and stops the filling
 * in this segment: appends extend the file as they would without it.
 */
static void seg_fill_ahead(struct spool_shard *sh)
{
	static const uint8_t zero[64 * 1024];
	struct seg *s = &sh->cur;
	struct iovec iov[FILL_STEP / sizeof(zero)];
	uint64_t want, start, n, left;
	int k = 0;

	if (s->fd < 0 || sh->sp->o.prealloc_bytes == 0 || s->filled == UINT64_MAX)
		return;
	start = s->filled > s->tail ? s->filled : s->tail;
	/* Whole steps once half the lead is used up, not a few KiB after
	 * every batch: each step changes the size and the block map, which
	 * the next fdatasync then has to write. */
	if (start - s->tail >= sh->sp->o.prealloc_bytes / 2)
		return;
	want = s->tail + sh->sp->o.prealloc_bytes;
	if (want > sh->sp->o.segment_bytes)
		want = sh->sp->o.segment_bytes;
	if (start >= want)
		return;
	n = want - start < FILL_STEP ? want - start : FILL_STEP;
	for (left = n; left > 0; left -= iov[k++].iov_len)
		iov[k] = (struct iovec){ (void *)(uintptr_t)zero,
					 left < sizeof(zero) ? left : sizeof(zero) };
	if (pwritev_full(s->fd, iov, k, start) < 0) {
		/* Give the space back; zeros past the tail are harmless, a
		 * rebuild reads them as the segment's end. */
		(void)!ftruncate(s->fd, (off_t)s->tail);
		s->filled = UINT64_MAX;	/* no more filling in this segment */
		return;
	}
	/* ask for the writeback now; it does not wait */
	(void)sync_file_range(s->fd, (off64_t)start, (off64_t)n, SYNC_FILE_RANGE_WRITE);
	s->filled = start + n;
}

/* seg_rotate - retire the current segment (it still needs a sync). */
static int seg_rotate(struct spool_shard *sh, struct rm_err *err)
{
	struct seg next;
	int rc;

	if (sh->n_retired == sh->cap_retired) {
		size_t cap = sh->cap_retired ? sh->cap_retired * 2 : 4;
		struct seg *r = realloc(sh->retired, cap * sizeof(*r));
		if (r == NULL)
			return rm_err_set(err, -ENOMEM, "spool: rotate segment: %s",
					  strerror(ENOMEM));
		sh->retired = r;
		sh->cap_retired = cap;
	}
	if ((rc = seg_create(sh, &next, err)) < 0)
		return rc;
	sh->retired[sh->n_retired++] = sh->cur;
	sh->cur = next;
	return 0;
}

/* seg_abandon - after a failed sync nothing unsynced can be trusted. */
static void seg_abandon(struct spool_shard *sh)
{
	for (size_t i = 0; i < sh->n_retired; i++)
		close(sh->retired[i].fd);
	sh->n_retired = 0;
	if (sh->cur.fd >= 0)
		close(sh->cur.fd);
	sh->cur.fd = -1;
}

/* struct rec_in - one record to append; ext (may be NULL) gets its extent. */
struct rec_in {
	unsigned type, flags;
	uint64_t id;
	const void *p;
	size_t len;
	uint8_t *ext;
};

/*
 * MAX_RECS_PER_WRITE - records one pwritev carries: a message's last
 * CHUNK and its COMMIT, or the UPDATE/DONE records of a batch
 * (items_write).
 */
#define MAX_RECS_PER_WRITE 64

/* rec_header - fill a record header, crc32c seeded with the segment's. */
static void rec_header(uint8_t h[REC_HDR_BYTES], uint32_t seed, const struct rec_in *r)
{
	uint32_t crc;

	put_le32(h, REC_MAGIC);
	h[4] = (uint8_t)r->type;
	h[5] = (uint8_t)r->flags;
	put_le16(h + 6, 0);
	put_le64(h + 8, r->id);
	put_le32(h + 16, (uint32_t)r->len);
	crc = spool_crc32c(seed, h, 20);
	put_le32(h + 20, spool_crc32c(crc, r->p, r->len));
}

/* seg_reserve - make sure the current segment takes total more bytes. */
static int seg_reserve(struct spool_shard *sh, size_t total, struct rm_err *err)
{
	if (sh->cur.fd < 0)
		return seg_create(sh, &sh->cur, err);
	if (sh->cur.tail > SEG_HDR_BYTES &&
	    sh->cur.tail + total > sh->sp->o.segment_bytes)
		return seg_rotate(sh, err);
	return 0;
}

/*
 * seg_append_n - append n records with one pwritev, creating or rotating
 * the segment as needed. On a write error the file is cut back to its old
 * tail (the rebuild would skip the torn bytes anyway).
 */
static int seg_append_n(struct spool_shard *sh, const struct rec_in *r, int n,
			struct rm_err *err)
{
	static const uint8_t zero[8];
	uint8_t h[MAX_RECS_PER_WRITE][REC_HDR_BYTES];
	struct iovec iov[3 * MAX_RECS_PER_WRITE];
	size_t total = 0;
	uint64_t off;
	int rc;

	for (int i = 0; i < n; i++) {
		if (r[i].len > MAX_RECORD_BYTES)
			return rm_err_set(err, -EFBIG, "spool: record of %zu bytes", r[i].len);
		total += REC_HDR_BYTES + pad8(r[i].len);
	}
	if ((rc = seg_reserve(sh, total, err)) < 0)
		return rc;
	off = sh->cur.tail;
	for (int i = 0; i < n; i++) {
		rec_header(h[i], sh->cur.seed, &r[i]);
		iov[3 * i] = (struct iovec){ h[i], REC_HDR_BYTES };
		iov[3 * i + 1] = (struct iovec){ (void *)(uintptr_t)r[i].p, r[i].len };
		iov[3 * i + 2] = (struct iovec){ (void *)(uintptr_t)zero,
						 pad8(r[i].len) - r[i].len };
		if (r[i].ext != NULL) {
			put_le32(r[i].ext, (uint32_t)sh->cur.seq);
			put_le32(r[i].ext + 4, (uint32_t)r[i].len);
			put_le64(r[i].ext + 8, off);
		}
		off += REC_HDR_BYTES + pad8(r[i].len);
	}
	if ((rc = pwritev_full(sh->cur.fd, iov, 3 * n, sh->cur.tail)) < 0) {
		if (ftruncate(sh->cur.fd, (off_t)sh->cur.tail) < 0) {
			/* the rebuild skips the torn bytes: nothing to add */
		}
		sh->cur.filled = sh->cur.tail;
		return rm_err_set(err, rc, "spool: append segment %03u/%010" PRIu64
				  ": %s", sh->idx, sh->cur.seq, strerror(-rc));
	}
	sh->cur.tail = off;
	return 0;
}

static int seg_append(struct spool_shard *sh, unsigned type, unsigned flags,
		      uint64_t id, const void *p, size_t len,
		      uint8_t ext[EXTENT_BYTES], struct rm_err *err)
{
	struct rec_in r = { type, flags, id, p, len, ext };

	return seg_append_n(sh, &r, 1, err);
}

/* ---- messages ---------------------------------------------------------------- */

static void msg_destroy(struct spool_msg *m)
{
	rm_buf_fini(&m->extents);
	rm_buf_fini(&m->value);
	free(m->buf);
	free(m->moved);
	free(m);
}

static struct spool_msg *msg_get(struct spool_shard *sh)
{
	struct spool_msg *m = sh->free;

	if (m != NULL) {
		sh->free = m->next;
		sh->n_free--;
	} else {
		if ((m = calloc(1, sizeof(*m))) == NULL)
			return NULL;
		rm_buf_init(&m->extents, (size_t)MAX_EXTENTS * EXTENT_BYTES);
		rm_buf_init(&m->value, (size_t)MAX_RECORD_BYTES * 2);
	}
	m->sh = sh;
	m->kind = KIND_COMMIT;
	m->status = 0;
	m->is_rec_written = false;
	m->next = m->prev = NULL;
	m->is_on_disk = false;
	m->gen = 0;
	m->err = 0;
	m->buf_len = 0;
	m->size = 0;
	m->crc = 0;
	m->extents.len = 0;
	m->value.len = 0;
	m->owner = NULL;
	return m;
}

/* msg_put - back to the pool (m is on no list); big buffers are dropped. */
static void msg_put(struct spool_msg *m)
{
	struct spool_shard *sh = m->sh;

	m->state = MSG_FREE;
	free(m->moved);
	m->moved = NULL;
	if (sh->n_free >= FREE_MSGS) {
		msg_destroy(m);
		return;
	}
	if (m->extents.cap > 4096)
		rm_buf_fini(&m->extents);
	if (m->value.cap > SPOOL_CHUNK_BYTES)
		rm_buf_fini(&m->value);
	if (m->buf_cap > MSG_BUF_KEEP_BYTES) {
		free(m->buf);
		m->buf = NULL;
		m->buf_cap = 0;
	}
	m->next = sh->free;
	sh->free = m;
	sh->n_free++;
}

static void open_unlink(struct spool_msg *m)
{
	struct spool_shard *sh = m->sh;

	if (m->prev != NULL)
		m->prev->next = m->next;
	else
		sh->open = m->next;
	if (m->next != NULL)
		m->next->prev = m->prev;
	m->next = m->prev = NULL;
}

static void list_add(struct msg_list *l, struct spool_msg *m)
{
	m->next = NULL;
	if (l->tail != NULL)
		l->tail->next = m;
	else
		l->head = m;
	l->tail = m;
}

/* msg_live - the sticky error, or SPOOL_EABANDONED after a failed sync. */
static int msg_live(struct spool_msg *m, struct rm_err *err)
{
	if (m->err == 0 && m->is_on_disk && m->gen != m->sh->gen)
		m->err = SPOOL_EABANDONED;
	if (m->err != 0)
		return rm_err_set(err, m->err, "spool: message %s: %s", m->id_str,
				  spool_strerror(m->err));
	return 0;
}

/* msg_records - append records of m; the first write pins m's gen. */
static int msg_records(struct spool_msg *m, const struct rec_in *r, int n,
		       struct rm_err *err)
{
	int rc;

	if ((rc = msg_live(m, err)) < 0)
		return rc;
	if ((rc = seg_append_n(m->sh, r, n, err)) < 0) {
		m->err = rc;
		return rc;
	}
	if (!m->is_on_disk) {
		m->is_on_disk = true;
		m->gen = m->sh->gen;
		m->first_seq = m->sh->cur.seq;
	}
	return 0;
}

/* msg_add_extent - remember where a CHUNK of m went. */
static int msg_add_extent(struct spool_msg *m, const uint8_t *ext,
			  struct rm_err *err)
{
	int rc = rm_buf_append(&m->extents, ext, EXTENT_BYTES);

	if (rc < 0) {
		m->err = rc == -ENOBUFS ? -EFBIG : rc;
		return rm_err_set(err, m->err, "spool: message %s: %s", m->id_str,
				  strerror(-m->err));
	}
	return 0;
}

static int msg_flush(struct spool_msg *m, const void *p, size_t len,
		     struct rm_err *err)
{
	uint8_t ext[EXTENT_BYTES];
	struct rec_in r = { SPOOL_REC_CHUNK, 0, m->id, p, len, ext };
	int rc;

	if ((rc = msg_records(m, &r, 1, err)) < 0)
		return rc;
	return msg_add_extent(m, ext, err);
}

int spool_msg_begin(struct spool_shard *sh, struct spool_msg **out,
		    struct rm_err *err)
{
	struct spool_msg *m = msg_get(sh);

	if (m == NULL)
		return rm_err_set(err, -ENOMEM, "spool: begin message: %s",
				  strerror(ENOMEM));
	m->id = id_next(sh);
	id_format(m->id, m->id_str);
	m->state = MSG_OPEN;
	m->next = sh->open;
	if (sh->open != NULL)
		sh->open->prev = m;
	sh->open = m;
	*out = m;
	return 0;
}

const char *spool_msg_id(const struct spool_msg *m)
{
	return m->id_str;
}

/* msg_buf_reserve - room for need buffered bytes (need <= a chunk). */
static int msg_buf_reserve(struct spool_msg *m, size_t need, struct rm_err *err)
{
	size_t cap = m->buf_cap ? m->buf_cap : MSG_BUF_MIN_BYTES;
	uint8_t *nb;

	if (need <= m->buf_cap)
		return 0;
	while (cap < need)
		cap *= 2;
	if (cap > SPOOL_CHUNK_BYTES)
		cap = SPOOL_CHUNK_BYTES;
	if ((nb = realloc(m->buf, cap)) == NULL) {
		m->err = -ENOMEM;
		return rm_err_set(err, -ENOMEM, "spool: message %s: %s", m->id_str,
				  strerror(ENOMEM));
	}
	m->buf = nb;
	m->buf_cap = cap;
	return 0;
}

int spool_msg_write(struct spool_msg *m, const void *p, size_t len,
		    struct rm_err *err)
{
	const uint8_t *s = p;
	int rc;

	if (m->state != MSG_OPEN)
		rm_panic("spool_msg_write: message %s not open", m->id_str);
	if ((rc = msg_live(m, err)) < 0)
		return rc;
	m->crc = spool_crc32c(m->crc, p, len);
	m->size += len;
	while (len > 0) {
		size_t n = SPOOL_CHUNK_BYTES - m->buf_len;
		if (m->buf_len == 0 && len >= SPOOL_CHUNK_BYTES) {
			/* a whole chunk from the caller's buffer: no copy */
			if ((rc = msg_flush(m, s, SPOOL_CHUNK_BYTES, err)) < 0)
				return rc;
			s += SPOOL_CHUNK_BYTES;
			len -= SPOOL_CHUNK_BYTES;
			continue;
		}
		n = n < len ? n : len;
		if ((rc = msg_buf_reserve(m, m->buf_len + n, err)) < 0)
			return rc;
		memcpy(m->buf + m->buf_len, s, n);
		m->buf_len += n;
		s += n;
		len -= n;
		if (m->buf_len == SPOOL_CHUNK_BYTES) {
			m->buf_len = 0;
			if ((rc = msg_flush(m, m->buf, SPOOL_CHUNK_BYTES, err)) < 0)
				return rc;
		}
	}
	return 0;
}

/*
 * msg_seal - check and encode the envelope, write the buffered tail and
 * the COMMIT with one pwritev (a small message costs one syscall), then
 * build the index value.
 */
static int msg_seal(struct spool_msg *m, const struct spool_envelope *env,
		    struct rm_err *err)
{
	struct spool_shard *sh = m->sh;
	struct rm_buf *c = &sh->scratch;
	struct commit_view cv;
	uint8_t ext[EXTENT_BYTES];
	struct rec_in r[2];
	int n = 0, rc;

	if ((rc = msg_live(m, err)) < 0)
		return rc;
	c->len = 0;
	if ((rc = commit_encode(c, env, m->size, m->crc)) < 0)
		return rm_err_set(err, rc == -ENOMEM ? rc : -EINVAL,
				  "spool: message %s: envelope rejected: %s",
				  m->id_str, strerror(rc == -ENOMEM ? ENOMEM : EINVAL));
	if (commit_parse(c->data, c->len, &cv) < 0)
		rm_panic("spool: COMMIT for %s does not parse back", m->id_str);
	if (m->buf_len > 0)
		r[n++] = (struct rec_in){ SPOOL_REC_CHUNK, 0, m->id, m->buf, m->buf_len, ext };
	r[n++] = (struct rec_in){ SPOOL_REC_COMMIT, 0, m->id, c->data, c->len, NULL };
	if ((rc = msg_records(m, r, n, err)) < 0)
		return rc;
	if (m->buf_len > 0 && (rc = msg_add_extent(m, ext, err)) < 0)
		return rc;
	m->buf_len = 0;
	if ((rc = value_build(&m->value, sh->idx, m->first_seq, m->extents.data,
			      m->extents.len / EXTENT_BYTES, c->data, c->len, &cv)) < 0)
		return rm_err_set(err, -ENOMEM, "spool: message %s: index value: %s",
				  m->id_str, strerror(ENOMEM));
	return 0;
}

int spool_msg_end(struct spool_msg *m, const struct spool_envelope *env,
		  void *owner, struct rm_err *err)
{
	struct spool_shard *sh = m->sh;
	int rc;

	if (m->state != MSG_OPEN)
		rm_panic("spool_msg_end: message %s not open", m->id_str);
	if ((rc = msg_seal(m, env, err)) < 0) {
		spool_msg_abort(m);
		return rc;
	}
	open_unlink(m);
	m->due = env->arrival_unix;
	m->owner = owner;
	m->state = MSG_PENDING;
	list_add(&sh->pending, m);
	return 0;
}

void spool_msg_abort(struct spool_msg *m)
{
	struct spool_shard *sh;

	if (m == NULL)
		return;
	sh = m->sh;
	if (m->state != MSG_OPEN)
		rm_panic("spool_msg_abort: message %s not open", m->id_str);
	/* a DONE lets a rebuild forget the chunks early; best effort */
	if (m->is_on_disk && m->gen == sh->gen && sh->cur.fd >= 0)
		(void)seg_append(sh, SPOOL_REC_DONE, DONE_ABORTED, m->id, NULL, 0,
				 NULL, NULL);
	open_unlink(m);
	msg_put(m);
}

/* ---- delivery state ------------------------------------------------------------ */

/* item_check - id names a message of this shard that is in the index. */
static int item_check(struct spool_shard *sh, const char *ids, uint64_t *id,
		      uint32_t *n_rcpts, struct rm_err *err)
{
	struct value_view vv;
	uint8_t k[8];
	MDB_val key = { 8, k }, v;
	MDB_txn *txn;
	int rc;

	if (ids == NULL || id_parse(ids, id) < 0)
		return rm_err_set(err, -EINVAL, "spool: malformed queue id");
	if (id_shard(*id) != sh->idx)
		return rm_err_set(err, -EXDEV, "spool: %s belongs to shard %u, not %u",
				  ids, id_shard(*id), sh->idx);
	put_be64(k, *id);
	if ((rc = mdb_txn_begin(sh->sp->env, NULL, MDB_RDONLY, &txn)) != 0)
		return lmdb_err(err, rc, "mdb_txn_begin");
	if ((rc = mdb_get(txn, sh->sp->db_msg, &key, &v)) == 0)
		rc = value_parse(v.mv_data, v.mv_size, &vv);
	if (rc == 0)
		*n_rcpts = vv.cv.n_rcpts;
	mdb_txn_abort(txn);
	if (rc == MDB_NOTFOUND)
		return rm_err_set(err, -ENOENT, "spool: %s: no such message", ids);
	if (rc == SPOOL_ECORRUPT || rc == SPOOL_EVERSION)
		return rm_err_set(err, rc, "spool: %s: %s", ids, spool_strerror(rc));
	return rc != 0 ? lmdb_err(err, rc, "mdb_get") : 0;
}

/*
 * item_add - queue an UPDATE or DONE on the batch; its record is written
 * with the batch's others just before the fdatasync (items_write). The
 * segment must exist now, so the batch has one to sync.
 */
static int item_add(struct spool_shard *sh, enum msg_kind kind, uint64_t id,
		    const struct rm_buf *payload, void *owner, struct rm_err *err)
{
	struct spool_msg *m;
	int rc;

	if (sh->cur.fd < 0 && (rc = seg_reserve(sh, 0, err)) < 0)
		return rc;
	if ((m = msg_get(sh)) == NULL)
		return rm_err_set(err, -ENOMEM, "spool: queue update: %s", strerror(ENOMEM));
	m->kind = kind;
	m->id = id;
	id_format(id, m->id_str);
	if (payload != NULL && rm_buf_append(&m->value, payload->data, payload->len) < 0) {
		msg_put(m);
		return rm_err_set(err, -ENOMEM, "spool: queue update: %s", strerror(ENOMEM));
	}
	m->owner = owner;
	m->state = MSG_PENDING;
	list_add(&sh->pending, m);
	return 0;
}

/*
 * move_write - the copy of a MOVE item: its content as CHUNK records, then
 * a COMMIT flagged COMMIT_MOVED that carries the recipients' states; the
 * new extents go to m->extents, the first segment written to m->first_seq.
 */
static int move_write(struct spool_shard *sh, struct spool_msg *m)
{
	struct rec_in r[MAX_RECS_PER_WRITE];
	uint8_t ext[MAX_RECS_PER_WRITE][EXTENT_BYTES];
	uint64_t off = 0;
	bool is_last;
	int n, rc;

	m->extents.len = 0;
	m->first_seq = UINT64_MAX;
	do {
		for (n = 0; off < m->size && n < MAX_RECS_PER_WRITE - 1; n++) {
			size_t len = m->size - off < SPOOL_CHUNK_BYTES ? (size_t)(m->size - off)
								     : SPOOL_CHUNK_BYTES;
			r[n] = (struct rec_in){ SPOOL_REC_CHUNK, 0, m->id, m->moved + off, len,
						ext[n] };
			off += len;
		}
		is_last = off == m->size;
		if (is_last)
			r[n++] = (struct rec_in){ SPOOL_REC_COMMIT, COMMIT_MOVED, m->id,
						  m->value.data, m->value.len, ext[n] };
		if ((rc = seg_append_n(sh, r, n, NULL)) < 0)
			return rc;
		if (m->first_seq == UINT64_MAX)
			m->first_seq = get_le32(ext[0]);
		for (int i = 0; i < n - (is_last ? 1 : 0); i++)
			if ((rc = rm_buf_append(&m->extents, ext[i], EXTENT_BYTES)) < 0)
				return rc;
	} while (!is_last);
	return 0;
}

/*
 * items_write - the UPDATE and DONE records queued since the last batch,
 * MAX_RECS_PER_WRITE to a pwritev: the deliveries finished in one loop
 * cost one write, not one each. An item whose record cannot be written
 * fails (m->status; the index is not touched for it): its message stays
 * as it was, to be tried again.
 */
static void items_write(struct spool_shard *sh)
{
	struct rec_in r[MAX_RECS_PER_WRITE];
	struct spool_msg *grp[MAX_RECS_PER_WRITE];
	struct spool_msg *m = sh->pending.head;
	int n, rc;

	while (m != NULL) {
		for (n = 0; m != NULL && n < MAX_RECS_PER_WRITE; m = m->next) {
			if (m->kind == KIND_COMMIT || m->is_rec_written)
				continue;
			if (m->kind == KIND_MOVE) {
				if (n > 0)
					break;	/* the records queued before it go first */
				m->is_rec_written = true;
				m->status = move_write(sh, m);
				continue;
			}
			m->is_rec_written = true;
			r[n] = (struct rec_in){ m->kind == KIND_UPDATE ? SPOOL_REC_RCPT_STATE
						: SPOOL_REC_DONE, 0, m->id, m->value.data,
						m->value.len, NULL };
			grp[n++] = m;
		}
		if (n > 0 && (rc = seg_append_n(sh, r, n, NULL)) < 0)
			for (int i = 0; i < n; i++)
				grp[i]->status = rc;
	}
}

int spool_shard_update(struct spool_shard *sh, const char *id,
		       const struct spool_rcpt_update *u, size_t n_u, void *owner,
		       struct rm_err *err)
{
	struct rm_buf *b = &sh->scratch;
	uint8_t e[RSTATE_BYTES];
	uint32_t n_rcpts;
	uint64_t v;
	int rc;

	if ((rc = item_check(sh, id, &v, &n_rcpts, err)) < 0)
		return rc;
	if (n_u == 0 || n_u > SPOOL_MAX_RCPTS)
		return rm_err_set(err, -EINVAL, "spool: %s: %zu updates", id, n_u);
	b->len = 0;
	put_le32(e, (uint32_t)n_u);
	if (rm_buf_append(b, e, 4) < 0)
		return rm_err_set(err, -ENOMEM, "spool: %s: %s", id, strerror(ENOMEM));
	for (size_t i = 0; i < n_u; i++) {
		if (u[i].rcpt >= n_rcpts || u[i].state > SPOOL_RCPT_FAILED ||
		    u[i].attempts > 0xffff || (u[i].flags & ~SPOOL_RCPT_F_ALL) != 0)
			return rm_err_set(err, -EINVAL, "spool: %s: bad update %zu", id, i);
		memset(e, 0, sizeof(e));
		put_le32(e, u[i].rcpt);
		e[4] = (uint8_t)u[i].state;
		e[5] = (uint8_t)u[i].flags;
		put_le16(e + 6, (uint16_t)u[i].attempts);
		put_le64(e + 8, (uint64_t)u[i].next_attempt_unix);
		if (rm_buf_append(b, e, sizeof(e)) < 0)
			return rm_err_set(err, -ENOMEM, "spool: %s: %s", id, strerror(ENOMEM));
	}
	return item_add(sh, KIND_UPDATE, v, b, owner, err);
}

int spool_shard_done(struct spool_shard *sh, const char *id, void *owner,
		     struct rm_err *err)
{
	uint32_t n_rcpts;
	uint64_t v;
	int rc;

	if ((rc = item_check(sh, id, &v, &n_rcpts, err)) < 0)
		return rc;
	return item_add(sh, KIND_DONE, v, NULL, owner, err);
}

/* ---- moving messages out of old segments --------------------------------------- */

static int stream(struct spool *sp, const char *ids, uint64_t id,
		  const struct msg_loc *loc,
		  int (*cb)(void *, const void *, size_t), void *arg,
		  struct rm_err *err);

/* has_item - an update, DONE or MOVE of id waits in this shard's batch. */
static bool has_item(const struct spool_shard *sh, uint64_t id)
{
	const struct msg_list *l[2] = { &sh->pending, &sh->inflight };

	for (int i = 0; i < 2; i++)
		for (const struct spool_msg *m = l[i]->head; m != NULL; m = m->next)
			if (m->id == id)
				return true;
	return false;
}

struct move_buf {
	uint8_t *p;
	size_t len, cap;
};

static int move_copy(void *arg, const void *p, size_t len)
{
	struct move_buf *mb = arg;

	if (len > mb->cap - mb->len)
		return SPOOL_ECORRUPT;	/* more than the COMMIT's size */
	memcpy(mb->p + mb->len, p, len);
	mb->len += len;
	return 0;
}

/* move_one - queue a MOVE of message id (index value vv): its content is
 * read and checked now, the copy written by the next batch. */
static int move_one(struct spool_shard *sh, uint64_t id, const struct value_view *vv,
		    struct rm_err *err)
{
	struct msg_loc loc = { (uint8_t *)(uintptr_t)vv->extents, vv->n_extents, vv->cv.size,
			       vv->cv.crc };
	struct move_buf mb = { NULL, 0, (size_t)vv->cv.size };
	struct spool_msg *m;
	int rc;

	if ((m = msg_get(sh)) == NULL || (mb.p = malloc(mb.cap ? mb.cap : 1)) == NULL) {
		if (m != NULL)
			msg_put(m);
		return rm_err_set(err, -ENOMEM, "spool: move: %s", strerror(ENOMEM));
	}
	m->kind = KIND_MOVE;
	m->id = id;
	id_format(id, m->id_str);
	m->moved = mb.p;
	m->size = vv->cv.size;
	if ((rc = stream(sh->sp, m->id_str, id, &loc, move_copy, &mb, err)) < 0) {
		msg_put(m);
		return rc;
	}
	if (rm_buf_append(&m->value, vv->commit,
			  vv->commit_len + (size_t)vv->cv.n_rcpts * RSTATE_BYTES) < 0) {
		msg_put(m);
		return rm_err_set(err, -ENOMEM, "spool: move %s: %s", m->id_str, strerror(ENOMEM));
	}
	m->state = MSG_PENDING;
	list_add(&sh->pending, m);
	return 0;
}

/*
 * move_old - queue MOVEs for the messages that keep this shard's oldest
 * segments alive, a whole segment at a time, within the MOVE_* bounds;
 * how many. Stops at the first segment that is too young, too full of
 * live mail, or holds a message due soon or with an item in the batch.
 */
static int move_old(struct spool_shard *sh, struct rm_err *err)
{
	struct spool *sp = sh->sp;
	uint64_t cur = sh->cur.fd >= 0 ? sh->cur.seq : sp->next_seq[sh->idx];
	int64_t quiet = (int64_t)time(NULL) + MOVE_QUIET_S;
	uint64_t ids[MOVE_MAX_MSGS];
	size_t bytes = 0;
	unsigned n_moved = 0;
	uint8_t k[16], mk[8];
	MDB_val key = { 16, k }, v, mkey = { 8, mk };
	struct value_view vv;
	MDB_txn *txn;
	MDB_cursor *c;
	int rc, rc2 = 0;

	if ((rc = mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn)) != 0)
		return lmdb_err(err, rc, "mdb_txn_begin");
	if ((rc = mdb_cursor_open(txn, sp->db_seg, &c)) != 0) {
		mdb_txn_abort(txn);
		return lmdb_err(err, rc, "mdb_cursor_open");
	}
	seg_key(k, sh->idx, 0, 0);
	rc = mdb_cursor_get(c, &key, &v, MDB_SET_RANGE);
	while (rc == 0 && rc2 == 0 && n_moved < MOVE_MAX_MSGS) {
		const uint8_t *kp = key.mv_data;
		uint32_t seq;
		size_t n = 0, g_bytes = 0;
		bool is_ok = true;

		if (key.mv_size != 16 || get_be32(kp) != sh->idx)
			break;
		seq = get_be32(kp + 4);
		if ((uint64_t)seq + MOVE_MIN_LAG > cur)
			break;
		/* plan: every message of segment seq, each quiet */
		while (rc == 0 && key.mv_size == 16 && get_be32(key.mv_data) == sh->idx &&
		       get_be32((uint8_t *)key.mv_data + 4) == seq && is_ok) {
			uint64_t id = get_be64((uint8_t *)key.mv_data + 8);
			int64_t due;

			put_be64(mk, id);
			if (n_moved + n == MOVE_MAX_MSGS || has_item(sh, id) ||
			    mdb_get(txn, sp->db_msg, &mkey, &v) != 0 ||
			    value_parse(v.mv_data, v.mv_size, &vv) != 0) {
				is_ok = false;
				break;
			}
			due = value_due(&vv);
			g_bytes += (size_t)vv.cv.size + v.mv_size;
			is_ok = due > quiet && due != INT64_MAX &&
				g_bytes <= sp->o.segment_bytes / 8 &&
				bytes + g_bytes <= MOVE_MAX_BYTES;
			ids[n++] = id;
			rc = mdb_cursor_get(c, &key, &v, MDB_NEXT);
		}
		if (!is_ok)
			break;
		/* do */
		if (sh->cur.fd < 0 && (rc2 = seg_reserve(sh, 0, err)) < 0)
			break;
		for (size_t i = 0; i < n && rc2 == 0; i++) {
			put_be64(mk, ids[i]);
			if (mdb_get(txn, sp->db_msg, &mkey, &v) != 0 ||
			    value_parse(v.mv_data, v.mv_size, &vv) != 0)
				continue;
			if ((rc2 = move_one(sh, ids[i], &vv, err)) == 0)
				n_moved++;
		}
		bytes += g_bytes;
	}
	mdb_cursor_close(c);
	mdb_txn_abort(txn);
	if (rc2 < 0)
		return rc2;
	if (rc != 0 && rc != MDB_NOTFOUND)
		return lmdb_err(err, rc, "mdb_cursor_get");
	return (int)n_moved;
}

/* ---- segment reclamation -------------------------------------------------------- */

/* index_low_seq - the oldest segment a message of shard in the index pins. */
static int index_low_seq(struct spool *sp, unsigned shard, uint64_t *low,
			 struct rm_err *err)
{
	uint8_t k[16];
	MDB_val key = { 16, k }, v;
	MDB_txn *txn;
	MDB_cursor *cur;
	int rc;

	seg_key(k, shard, 0, 0);
	if ((rc = mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn)) != 0)
		return lmdb_err(err, rc, "mdb_txn_begin");
	if ((rc = mdb_cursor_open(txn, sp->db_seg, &cur)) == 0) {
		rc = mdb_cursor_get(cur, &key, &v, MDB_SET_RANGE);
		if (rc == 0 && key.mv_size == 16 && get_be32(key.mv_data) == shard &&
		    get_be32((uint8_t *)key.mv_data + 4) < *low)
			*low = get_be32((uint8_t *)key.mv_data + 4);
		mdb_cursor_close(cur);
	}
	mdb_txn_abort(txn);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return lmdb_err(err, rc, "mdb_cursor_get");
	return 0;
}

/* shard_low_seq - the oldest segment this shard still needs in memory. */
static uint64_t shard_low_seq(const struct spool_shard *sh)
{
	const struct msg_list *l[2] = { &sh->pending, &sh->inflight };
	uint64_t low = sh->sp->next_seq[sh->idx];

	if (sh->cur.fd >= 0 && sh->cur.seq < low)
		low = sh->cur.seq;
	for (size_t i = 0; i < sh->n_retired; i++)
		if (sh->retired[i].seq < low)
			low = sh->retired[i].seq;
	for (const struct spool_msg *m = sh->open; m != NULL; m = m->next)
		if (m->is_on_disk && m->first_seq < low)
			low = m->first_seq;
	for (int i = 0; i < 2; i++)
		for (const struct spool_msg *m = l[i]->head; m != NULL; m = m->next)
			if (m->kind == KIND_COMMIT && m->is_on_disk && m->first_seq < low)
				low = m->first_seq;
	return low;
}

int spool_shard_sweep(struct spool_shard *sh, struct rm_err *err)
{
	struct spool *sp = sh->sp;
	uint64_t low = shard_low_seq(sh), seq;
	char name[32];
	int rc, n = 0;

	(void)mdb_reader_check(sp->env, NULL);	/* see env_open */
	if ((rc = index_low_seq(sp, sh->idx, &low, err)) < 0)
		return rc;
	for (seq = sp->low_seq[sh->idx]; seq < low; seq++) {
		snprintf(name, sizeof(name), SEG_NAME_FMT, sh->idx, seq);
		if (unlinkat(sp->seg_fd, name, 0) < 0) {
			if (errno == ENOENT)
				continue;
			rc = sys_err(err, "remove segment", name);
			break;
		}
		/* oldest first, durably: a DONE must never outlive its COMMIT */
		if (fsync(sp->seg_fd) < 0) {
			rc = sys_err(err, "fsync", "seg/");
			break;
		}
		n++;
	}
	sp->low_seq[sh->idx] = seq;
	if (rc >= 0 && (rc = move_old(sh, err)) > 0)
		rc = 0;		/* the copies free their segments at a later sweep */
	return rc < 0 ? rc : n;
}

uint64_t spool_shard_n_moved(const struct spool_shard *sh)
{
	return sh->n_moved;
}

/* ---- index writes ------------------------------------------------------------- */

/* hw_key - "hw/NNN", 6 bytes (shard < SPOOL_MAX_SHARDS). */
static void hw_key(char key[16], unsigned shard)
{
	snprintf(key, 16, "hw/%03u", shard % SPOOL_MAX_SHARDS);
}

static int index_put_hw(struct spool *sp, MDB_txn *txn, unsigned shard,
			uint64_t id)
{
	char k[16];
	uint8_t v[8];
	MDB_val key = { 6, k }, val = { 8, v };

	hw_key(k, shard);
	put_le64(v, id);
	return mdb_put(txn, sp->db_meta, &key, &val, 0);
}

static uint64_t index_get_hw(struct spool *sp, unsigned shard)
{
	char k[16];
	MDB_val key = { 6, k }, val;
	MDB_txn *txn;
	uint64_t id = 0;

	hw_key(k, shard);
	if (mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn) != 0)
		return 0;
	if (mdb_get(txn, sp->db_meta, &key, &val) == 0 && val.mv_size == 8)
		id = get_le64(val.mv_data);
	mdb_txn_abort(txn);
	return id;
}

/* index_put_msg - insert one message with its due and seg entries. */
static int index_put_msg(struct spool *sp, MDB_txn *txn, uint64_t id,
			 int64_t due, const void *value, size_t len)
{
	const uint8_t *v = value;
	uint8_t k[8], dk[16], sk[16];
	MDB_val key = { 8, k }, val = { len, (void *)(uintptr_t)value };
	MDB_val dkey = { 16, dk }, skey = { 16, sk }, none = { 0, NULL };
	int rc;

	put_be64(k, id);
	due_key(dk, due, id);
	seg_key(sk, get_le32(v + 4), get_le32(v + 16), id);
	if ((rc = mdb_put(txn, sp->db_msg, &key, &val, 0)) != 0 ||
	    (rc = mdb_put(txn, sp->db_seg, &skey, &none, 0)) != 0)
		return rc;
	return mdb_put(txn, sp->db_due, &dkey, &none, 0);
}

/* index_due_move - replace a message's due entry (INT64_MAX: none). */
static int index_due_move(struct spool *sp, MDB_txn *txn, uint64_t id,
			  int64_t old_due, int64_t new_due)
{
	uint8_t dk[16];
	MDB_val dkey = { 16, dk }, none = { 0, NULL };
	int rc;

	if (old_due == new_due)
		return 0;
	if (old_due != INT64_MAX) {
		due_key(dk, old_due, id);
		rc = mdb_del(txn, sp->db_due, &dkey, NULL);
		if (rc != 0 && rc != MDB_NOTFOUND)
			return rc;
	}
	if (new_due == INT64_MAX)
		return 0;
	due_key(dk, new_due, id);
	return mdb_put(txn, sp->db_due, &dkey, &none, 0);
}

/* index_del_msg - remove a message; MDB_NOTFOUND when it is not there. */
static int index_del_msg(struct spool *sp, MDB_txn *txn, uint64_t id)
{
	struct value_view vv;
	uint8_t k[8];
	MDB_val key = { 8, k }, v;
	int rc;

	put_be64(k, id);
	if ((rc = mdb_get(txn, sp->db_msg, &key, &v)) != 0)
		return rc;
	/*
	 * An entry that does not parse leaves a stale due key (walk skips
	 * it) and a stale seg key (it pins a segment until a rebuild).
	 */
	if (value_parse(v.mv_data, v.mv_size, &vv) == 0) {
		uint8_t sk[16];
		MDB_val skey = { 16, sk };
		seg_key(sk, vv.shard, vv.first_seq, id);
		if ((rc = index_due_move(sp, txn, id, value_due(&vv), INT64_MAX)) != 0 ||
		    ((rc = mdb_del(txn, sp->db_seg, &skey, NULL)) != 0 && rc != MDB_NOTFOUND))
			return rc;
	}
	return mdb_del(txn, sp->db_msg, &key, NULL);
}

/*
 * index_update - apply an RCPT_STATE payload {u32 n, n x {u32 rcpt, u8
 * state, u8 0, u16 attempts, i64 next attempt}} to message id, through
 * the scratch copy tmp. Entries naming no recipient are ignored. Returns
 * 0, MDB_NOTFOUND, SPOOL_ECORRUPT (payload or entry), an LMDB error.
 */
static int index_update(struct spool *sp, MDB_txn *txn, uint64_t id,
			const uint8_t *p, size_t len, struct rm_buf *tmp)
{
	struct value_view vv;
	uint8_t k[8];
	MDB_val key = { 8, k }, v;
	int64_t old_due;
	uint32_t n;
	int rc;

	if (len < 4 || (n = get_le32(p), len != 4 + (size_t)n * RSTATE_BYTES))
		return SPOOL_ECORRUPT;
	put_be64(k, id);
	if ((rc = mdb_get(txn, sp->db_msg, &key, &v)) != 0)
		return rc;
	tmp->len = 0;
	if (rm_buf_append(tmp, v.mv_data, v.mv_size) < 0 ||
	    value_parse(tmp->data, tmp->len, &vv) != 0)
		return SPOOL_ECORRUPT;
	old_due = value_due(&vv);
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *e = p + 4 + (size_t)i * RSTATE_BYTES;
		uint32_t r = get_le32(e);
		if (r >= vv.cv.n_rcpts || e[4] > SPOOL_RCPT_FAILED)
			continue;
		uint8_t *w = tmp->data + (vv.rstates - tmp->data) + (size_t)r * RSTATE_BYTES;
		w[0] = e[4];
		w[1] = e[5];
		memcpy(w + 2, e + 6, 2);
		memcpy(w + 8, e + 8, 8);
	}
	v.mv_data = tmp->data;
	v.mv_size = tmp->len;
	if ((rc = mdb_put(txn, sp->db_msg, &key, &v, 0)) != 0)
		return rc;
	return index_due_move(sp, txn, id, old_due, value_due(&vv));
}

/*
 * index_move - point message m->id at its copy (m->extents, m->first_seq)
 * and move its seg key; envelope and recipient states stay as the index
 * has them. Returns 0, MDB_NOTFOUND (it left the queue meanwhile),
 * SPOOL_ECORRUPT, -ENOMEM, an LMDB error.
 */
static int index_move(struct spool *sp, MDB_txn *txn, const struct spool_msg *m,
		      struct rm_buf *tmp)
{
	struct value_view vv;
	uint8_t k[8], sk[16], h[VALUE_HDR_BYTES];
	MDB_val key = { 8, k }, v, skey = { 16, sk }, none = { 0, NULL };
	uint32_t shard, old_first;
	int rc;

	put_be64(k, m->id);
	if ((rc = mdb_get(txn, sp->db_msg, &key, &v)) != 0)
		return rc;
	if (value_parse(v.mv_data, v.mv_size, &vv) != 0)
		return SPOOL_ECORRUPT;
	/* copy first: the writes below may move the page v points into */
	shard = vv.shard;
	old_first = vv.first_seq;
	memcpy(h, v.mv_data, sizeof(h));
	put_le32(h + 8, (uint32_t)(m->extents.len / EXTENT_BYTES));
	put_le32(h + 16, (uint32_t)m->first_seq);
	tmp->len = 0;
	if (rm_buf_append(tmp, h, sizeof(h)) < 0 ||
	    rm_buf_append(tmp, m->extents.data, m->extents.len) < 0 ||
	    rm_buf_append(tmp, vv.commit, vv.commit_len + (size_t)vv.cv.n_rcpts * RSTATE_BYTES) < 0)
		return -ENOMEM;
	seg_key(sk, shard, old_first, m->id);
	if ((rc = mdb_del(txn, sp->db_seg, &skey, NULL)) != 0 && rc != MDB_NOTFOUND)
		return rc;
	seg_key(sk, shard, (uint32_t)m->first_seq, m->id);
	if ((rc = mdb_put(txn, sp->db_seg, &skey, &none, 0)) != 0)
		return rc;
	v.mv_data = tmp->data;
	v.mv_size = tmp->len;
	return mdb_put(txn, sp->db_msg, &key, &v, 0);
}

/* index_apply - one batch item; its own outcome goes to m->status. */
static int index_apply(struct spool_shard *sh, MDB_txn *txn, struct spool_msg *m)
{
	struct spool *sp = sh->sp;
	int rc;

	if (m->kind != KIND_COMMIT && m->status < 0)
		return 0;	/* items_write could not write its record */
	switch (m->kind) {
	case KIND_COMMIT:
		return index_put_msg(sp, txn, m->id, m->due, m->value.data, m->value.len);
	case KIND_UPDATE:
		rc = index_update(sp, txn, m->id, m->value.data, m->value.len, &sh->scratch);
		break;
	case KIND_MOVE:
		rc = index_move(sp, txn, m, &sh->scratch);
		break;
	default:
		rc = index_del_msg(sp, txn, m->id);
		break;
	}
	if (rc == MDB_NOTFOUND || rc == SPOOL_ECORRUPT || rc == -ENOMEM) {
		m->status = rc == MDB_NOTFOUND ? -ENOENT : rc;
		rc = 0;
	}
	return rc;
}

/* index_put_batch - one txn for the whole batch (MDB_NOSYNC: no I/O wait). */
static int index_put_batch(struct spool_shard *sh, struct spool_msg *head,
			   struct rm_err *err)
{
	struct spool *sp = sh->sp;
	MDB_txn *txn;
	int rc;

	if ((rc = mdb_txn_begin(sp->env, NULL, 0, &txn)) != 0)
		return lmdb_err(err, rc, "mdb_txn_begin");
	for (struct spool_msg *m = head; m != NULL; m = m->next)
		if ((rc = index_apply(sh, txn, m)) != 0) {
			mdb_txn_abort(txn);
			return lmdb_err(err, rc, "mdb_put");
		}
	if ((rc = index_put_hw(sp, txn, sh->idx, sh->last_id)) != 0) {
		mdb_txn_abort(txn);
		return lmdb_err(err, rc, "mdb_put");
	}
	if ((rc = mdb_txn_commit(txn)) != 0)
		return lmdb_err(err, rc, "mdb_txn_commit");
	return 0;
}

/* ---- group commit ------------------------------------------------------------- */

bool spool_shard_sync_wanted(const struct spool_shard *sh)
{
	return sh->sync == SYNC_NONE && sh->pending.head != NULL;
}

int spool_shard_sync_begin(struct spool_shard *sh)
{
	if (sh->sync != SYNC_NONE || sh->pending.head == NULL)
		return -1;
	items_write(sh);	/* may rotate: then the retired segment goes first */
	if (sh->n_retired > 0) {
		sh->sync = SYNC_RETIRED;
		return sh->retired[0].fd;
	}
	if (sh->cur.fd < 0)
		rm_panic("spool: shard %u has a batch but no segment", sh->idx);
	sh->inflight = sh->pending;
	sh->pending.head = sh->pending.tail = NULL;
	for (struct spool_msg *m = sh->inflight.head; m != NULL; m = m->next)
		m->state = MSG_INFLIGHT;
	sh->sync = SYNC_BATCH;
	return sh->cur.fd;
}

/*
 * batch_mark_done - DONE records so a rebuild cannot revive messages that
 * were refused. Only for COMMITs: a failed update must not delete.
 */
static void batch_mark_done(struct spool_shard *sh, struct spool_msg *head)
{
	for (struct spool_msg *m = head; m != NULL; m = m->next)
		if (m->kind == KIND_COMMIT &&
		    seg_append(sh, SPOOL_REC_DONE, DONE_ABORTED, m->id, NULL, 0,
			       NULL, NULL) < 0)
			return;
}

static void batch_callback(struct spool_msg *head, int status,
			   void (*done)(void *, const char *, int))
{
	struct spool_msg *m, *next;

	for (m = head; m != NULL; m = next) {
		next = m->next;
		m->next = NULL;
		if (m->kind != KIND_MOVE && done != NULL)	/* a MOVE is ours */
			done(m->owner, m->id_str, status != 0 ? status : m->status);
		msg_put(m);
	}
}

/* take_all - detach in-flight then pending, in commit order. */
static struct spool_msg *take_all(struct spool_shard *sh)
{
	struct msg_list l = sh->inflight;

	if (l.head == NULL)
		l = sh->pending;
	else if (sh->pending.head != NULL) {
		l.tail->next = sh->pending.head;
		l.tail = sh->pending.tail;
	}
	sh->inflight.head = sh->inflight.tail = NULL;
	sh->pending.head = sh->pending.tail = NULL;
	return l.head;
}

void spool_shard_sync_end(struct spool_shard *sh, int res,
			  void (*done)(void *owner, const char *queue_id,
				       int status),
			  struct rm_err *err)
{
	enum sync_kind kind = sh->sync;
	struct spool_msg *l;
	uint64_t seq;
	int rc;

	if (kind == SYNC_NONE)
		rm_panic("spool: sync_end on shard %u without sync_begin", sh->idx);
	sh->sync = SYNC_NONE;
	if (res == 0 && kind == SYNC_RETIRED) {
		close(sh->retired[0].fd);
		memmove(sh->retired, sh->retired + 1,
			--sh->n_retired * sizeof(*sh->retired));
		return;
	}
	if (res != 0) {
		res = res > 0 ? -EIO : res;
		seq = kind == SYNC_RETIRED ? sh->retired[0].seq : sh->cur.seq;
		rm_err_set(err, res, "spool: fdatasync segment %03u/%010" PRIu64
			   ": %s", sh->idx, seq, strerror(-res));
		sh->gen++;
		seg_abandon(sh);
		l = take_all(sh);
		batch_mark_done(sh, l);
		batch_callback(l, res, done);
		return;
	}
	l = sh->inflight.head;
	sh->inflight.head = sh->inflight.tail = NULL;
	if ((rc = index_put_batch(sh, l, err)) < 0)
		batch_mark_done(sh, l);
	for (struct spool_msg *m = l; m != NULL && rc == 0; m = m->next)
		sh->n_moved += m->kind == KIND_MOVE && m->status == 0;
	batch_callback(l, rc, done);
	seg_fill_ahead(sh);	/* after the replies: off their latency */
}

/* ---- shards --------------------------------------------------------------------- */

int spool_shard_open(struct spool *sp, unsigned shard,
		     struct spool_shard **out, struct rm_err *err)
{
	struct spool_shard *sh;
	uint64_t last;
	bool busy;

	if (sp->o.read_only || shard >= sp->o.n_shards)
		return rm_err_set(err, -EINVAL, "spool: open shard %u: %s", shard,
				  sp->o.read_only ? "read-only spool" : "no such shard");
	pthread_mutex_lock(&sp->mu);
	busy = sp->is_shard_open[shard];
	if (!busy) {
		sp->is_shard_open[shard] = true;
		sp->n_open_shards++;
	}
	pthread_mutex_unlock(&sp->mu);
	if (busy)
		return rm_err_set(err, -EBUSY, "spool: open shard %u: already open",
				  shard);
	if ((sh = calloc(1, sizeof(*sh))) == NULL) {
		pthread_mutex_lock(&sp->mu);
		sp->is_shard_open[shard] = false;
		sp->n_open_shards--;
		pthread_mutex_unlock(&sp->mu);
		return rm_err_set(err, -ENOMEM, "spool: open shard %u: %s", shard,
				  strerror(ENOMEM));
	}
	sh->sp = sp;
	sh->idx = shard;
	sh->cur.fd = -1;
	if (sp->low_seq[shard] > sp->next_seq[shard])
		sp->low_seq[shard] = sp->next_seq[shard];	/* no segment yet */
	rm_buf_init(&sh->scratch, MAX_RECORD_BYTES);
	last = index_get_hw(sp, shard);
	if (sp->last_id[shard] > last)
		last = sp->last_id[shard];
	/*
	 * The first id is at least one second past anything issued before:
	 * a full counter makes id_next move to max(now, last second + 1).
	 */
	sh->last_id = last;
	sh->clock_sec = last >> 32;
	sh->counter = 0xffffffu;
	*out = sh;
	return 0;
}

void spool_shard_close(struct spool_shard *sh)
{
	struct spool *sp;
	struct spool_msg *l, *m;
	MDB_txn *txn;

	if (sh == NULL)
		return;
	sp = sh->sp;
	while (sh->open != NULL)
		spool_msg_abort(sh->open);
	l = take_all(sh);
	batch_mark_done(sh, l);
	batch_callback(l, 0, NULL);
	for (size_t i = 0; i < sh->n_retired; i++) {
		(void)fdatasync(sh->retired[i].fd);
		close(sh->retired[i].fd);
	}
	if (sh->cur.fd >= 0) {
		if (sh->cur.filled > sh->cur.tail)	/* the unused zeros */
			(void)!ftruncate(sh->cur.fd, (off_t)sh->cur.tail);
		(void)fdatasync(sh->cur.fd);
		close(sh->cur.fd);
	}
	if (mdb_txn_begin(sp->env, NULL, 0, &txn) == 0) {
		if (index_put_hw(sp, txn, sh->idx, sh->last_id) == 0)
			(void)mdb_txn_commit(txn);
		else
			mdb_txn_abort(txn);
	}
	while ((m = sh->free) != NULL) {
		sh->free = m->next;
		msg_destroy(m);
	}
	rm_buf_fini(&sh->scratch);
	free(sh->retired);
	pthread_mutex_lock(&sp->mu);
	sp->last_id[sh->idx] = sh->last_id;
	sp->is_shard_open[sh->idx] = false;
	sp->n_open_shards--;
	pthread_mutex_unlock(&sp->mu);
	free(sh);
}

/* ---- readers ------------------------------------------------------------------- */

typedef int (*entry_cb)(void *arg, const struct spool_entry *e);

/* emit - parse one index value and hand it to cb. */
static int emit(uint64_t id, const MDB_val *v, struct rcpt_arr *ra,
		entry_cb cb, void *arg, struct rm_err *err)
{
	struct value_view vv;
	struct spool_entry e;
	char ids[SPOOL_ID_BYTES + 1];
	int rc;

	id_format(id, ids);
	if ((rc = value_parse(v->mv_data, v->mv_size, &vv)) < 0 ||
	    (rc = entry_fill(&e, id, &vv, ra)) < 0)
		return rm_err_set(err, rc, "spool: index entry %s: %s", ids,
				  spool_strerror(rc));
	return cb(arg, &e);
}

/* walk - the body of spool_list() (by_due false) and spool_due(). */
static int walk(struct spool *sp, bool by_due, int64_t until, entry_cb cb,
		void *arg, struct rm_err *err)
{
	struct rcpt_arr ra = { NULL, 0 };
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v, mk;
	MDB_cursor_op op = MDB_FIRST;
	uint8_t due_limit[16];
	bool is_stopped = false;
	int rc;

	due_key(due_limit, until, UINT64_MAX);
	if ((rc = mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn)) != 0)
		return lmdb_err(err, rc, "mdb_txn_begin");
	if ((rc = mdb_cursor_open(txn, by_due ? sp->db_due : sp->db_msg, &cur)) != 0) {
		mdb_txn_abort(txn);
		return lmdb_err(err, rc, "mdb_cursor_open");
	}
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (k.mv_size != (by_due ? 16u : 8u)) {
			rc = rm_err_set(err, SPOOL_ECORRUPT, "spool: index key of %zu bytes",
					k.mv_size);
			is_stopped = true;
			break;
		}
		if (by_due) {
			if (memcmp(k.mv_data, due_limit, 8) > 0)
				break;
			mk.mv_size = 8;
			mk.mv_data = (uint8_t *)k.mv_data + 8;
			if ((rc = mdb_get(txn, sp->db_msg, &mk, &v)) == MDB_NOTFOUND)
				continue;	/* a stale due entry: harmless */
			if (rc != 0) {
				rc = lmdb_err(err, rc, "mdb_get");
				is_stopped = true;
				break;
			}
		}
		if ((rc = emit(get_be64((uint8_t *)k.mv_data + (by_due ? 8 : 0)), &v,
			       &ra, cb, arg, err)) != 0) {
			is_stopped = true;
			break;
		}
	}
	if (!is_stopped && rc == MDB_NOTFOUND)
		rc = 0;
	else if (!is_stopped && (rc > 0 || (rc >= MDB_KEYEXIST && rc <= MDB_LAST_ERRCODE)))
		rc = lmdb_err(err, rc, "mdb_cursor_get");
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	free(ra.r);
	return rc;
}

int spool_list(struct spool *sp,
	       int (*cb)(void *arg, const struct spool_entry *e), void *arg,
	       struct rm_err *err)
{
	return walk(sp, false, 0, cb, arg, err);
}

int spool_due(struct spool *sp, int64_t until_unix,
	      int (*cb)(void *arg, const struct spool_entry *e), void *arg,
	      struct rm_err *err)
{
	return walk(sp, true, until_unix, cb, arg, err);
}

int spool_get(struct spool *sp, const char *id,
	      int (*cb)(void *arg, const struct spool_entry *e), void *arg,
	      struct rm_err *err)
{
	struct rcpt_arr ra = { NULL, 0 };
	MDB_txn *txn;
	uint8_t k[8];
	MDB_val key = { 8, k }, v;
	uint64_t n;
	int rc;

	if (id == NULL || id_parse(id, &n) < 0)
		return rm_err_set(err, -EINVAL, "spool: malformed queue id");
	put_be64(k, n);
	if ((rc = mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn)) != 0)
		return lmdb_err(err, rc, "mdb_txn_begin");
	rc = mdb_get(txn, sp->db_msg, &key, &v);
	if (rc == MDB_NOTFOUND)
		rc = rm_err_set(err, -ENOENT, "spool: %s: no such message", id);
	else if (rc != 0)
		rc = lmdb_err(err, rc, "mdb_get");
	else
		rc = emit(n, &v, &ra, cb, arg, err);
	mdb_txn_abort(txn);
	free(ra.r);
	return rc;
}


static int locate(struct spool *sp, const char *ids, uint64_t id,
		  struct msg_loc *loc, struct rm_err *err)
{
	struct value_view vv;
	MDB_txn *txn;
	uint8_t k[8];
	MDB_val key = { 8, k }, v;
	int rc;

	put_be64(k, id);
	if ((rc = mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn)) != 0)
		return lmdb_err(err, rc, "mdb_txn_begin");
	if ((rc = mdb_get(txn, sp->db_msg, &key, &v)) != 0) {
		mdb_txn_abort(txn);
		if (rc == MDB_NOTFOUND)
			return rm_err_set(err, -ENOENT, "spool: read %s: no such message", ids);
		return lmdb_err(err, rc, "mdb_get");
	}
	if ((rc = value_parse(v.mv_data, v.mv_size, &vv)) == 0) {
		loc->n_extents = vv.n_extents;
		loc->size = vv.cv.size;
		loc->crc = vv.cv.crc;
		loc->extents = malloc((size_t)vv.n_extents * EXTENT_BYTES + 1);
		if (loc->extents == NULL)
			rc = -ENOMEM;
		else
			memcpy(loc->extents, vv.extents, (size_t)vv.n_extents * EXTENT_BYTES);
	}
	mdb_txn_abort(txn);
	if (rc < 0)
		return rm_err_set(err, rc, "spool: read %s: %s", ids, spool_strerror(rc));
	return 0;
}

/* seg_open_read - open segment seq of shard for reading; its crc seed. */
static int seg_open_read(struct spool *sp, unsigned shard, uint64_t seq,
			 uint32_t *seed, struct rm_err *err)
{
	char name[32];
	uint8_t h[SEG_HDR_BYTES];
	int fd, rc;

	snprintf(name, sizeof(name), SEG_NAME_FMT, shard, seq);
	if ((fd = openat(sp->seg_fd, name, O_RDONLY | O_CLOEXEC)) < 0)
		return sys_err(err, "open segment", name);
	if ((rc = pread_full(fd, h, sizeof(h), 0)) < 0 ||
	    memcmp(h, SEG_MAGIC, 8) != 0 || get_le64(h + 16) != seq) {
		close(fd);
		rc = rc < 0 ? rc : SPOOL_ECORRUPT;
		return rm_err_set(err, rc, "spool: segment %s: bad header: %s", name,
				  spool_strerror(rc));
	}
	*seed = seg_seed(get_le64(h + 24));
	return fd;
}

/* read_extent - read and check one CHUNK record into rec. */
static int read_extent(int fd, uint32_t seed, const uint8_t *ext, uint64_t id,
		       uint8_t *rec)
{
	uint32_t len = get_le32(ext + 4), crc;
	int rc;

	if (len > SPOOL_CHUNK_BYTES)
		return SPOOL_ECORRUPT;
	if ((rc = pread_full(fd, rec, REC_HDR_BYTES + len, get_le64(ext + 8))) < 0)
		return rc;
	if (get_le32(rec) != REC_MAGIC || rec[4] != SPOOL_REC_CHUNK ||
	    get_le64(rec + 8) != id || get_le32(rec + 16) != len)
		return SPOOL_ECORRUPT;
	crc = spool_crc32c(seed, rec, 20);
	if (spool_crc32c(crc, rec + REC_HDR_BYTES, len) != get_le32(rec + 20))
		return SPOOL_ECORRUPT;
	return 0;
}

/* stream - read every extent of loc, check it, pass it to cb. */
static int stream(struct spool *sp, const char *ids, uint64_t id,
		  const struct msg_loc *loc,
		  int (*cb)(void *, const void *, size_t), void *arg,
		  struct rm_err *err)
{
	uint8_t *rec = malloc(REC_HDR_BYTES + SPOOL_CHUNK_BYTES);
	uint64_t seq = UINT64_MAX, size = 0;
	uint32_t seed = 0, crc = 0;
	int fd = -1, rc = 0;

	if (rec == NULL)
		return rm_err_set(err, -ENOMEM, "spool: read %s: %s", ids, strerror(ENOMEM));
	for (uint32_t i = 0; i < loc->n_extents && rc == 0; i++) {
		const uint8_t *ext = loc->extents + (size_t)i * EXTENT_BYTES;
		uint32_t len = get_le32(ext + 4);
		if (get_le32(ext) != seq) {
			if (fd >= 0)
				close(fd);
			seq = get_le32(ext);
			if ((fd = seg_open_read(sp, id_shard(id), seq, &seed, err)) < 0) {
				rc = fd;
				break;
			}
		}
		if ((rc = read_extent(fd, seed, ext, id, rec)) < 0) {
			rc = rm_err_set(err, rc, "spool: read %s: segment %03u/%010" PRIu64
					" offset %" PRIu64 ": %s", ids, id_shard(id), seq,
					get_le64(ext + 8), spool_strerror(rc));
			break;
		}
		crc = spool_crc32c(crc, rec + REC_HDR_BYTES, len);
		size += len;
		rc = cb(arg, rec + REC_HDR_BYTES, len);
	}
	if (rc == 0 && (size != loc->size || crc != loc->crc))
		rc = rm_err_set(err, SPOOL_ECORRUPT, "spool: read %s: content checksum "
				"mismatch", ids);
	if (fd >= 0)
		close(fd);
	free(rec);
	return rc;
}

int spool_read(struct spool *sp, const char *id,
	       int (*cb)(void *arg, const void *p, size_t len), void *arg,
	       struct rm_err *err)
{
	struct msg_loc loc = { NULL, 0, 0, 0 };
	uint64_t v;
	int rc;

	if (id == NULL || id_parse(id, &v) < 0)
		return rm_err_set(err, -EINVAL, "spool: read: malformed queue id");
	if ((rc = locate(sp, id, v, &loc, err)) < 0)
		return rc;
	rc = stream(sp, id, v, &loc, cb, arg, err);
	free(loc.extents);
	return rc;
}

/* ---- the readers' segment cache ------------------------------------------------ */

void spool_fd_cache_init(struct spool_fd_cache *c)
{
	memset(c, 0, sizeof(*c));
	for (unsigned i = 0; i < SPOOL_FD_CACHE_SLOTS; i++)
		c->slot[i].fd = -1;
}

void spool_fd_cache_trim(struct spool_fd_cache *c)
{
	for (unsigned i = 0; i < SPOOL_FD_CACHE_SLOTS; i++)
		if (c->slot[i].fd >= 0 && c->slot[i].refs == 0) {
			close(c->slot[i].fd);
			c->slot[i].fd = -1;
		}
}

void spool_fd_cache_fini(struct spool_fd_cache *c)
{
	for (unsigned i = 0; i < SPOOL_FD_CACHE_SLOTS; i++)
		if (c->slot[i].refs != 0)
			rm_panic("spool: fd cache slot %u closed while in use", i);
	spool_fd_cache_trim(c);
}

/*
 * fd_cache_get - a slot holding segment shard/seq with one more ref, or
 * NULL when it is not cached and every slot is in use (or the open
 * failed: then err is set and *rc < 0).
 */
static struct spool_fd_slot *fd_cache_get(struct spool *sp, struct spool_fd_cache *c,
					  unsigned shard, uint64_t seq, int *rc,
					  struct rm_err *err)
{
	struct spool_fd_slot *s, *victim = NULL;
	uint32_t seed;
	int fd;

	*rc = 0;
	for (unsigned i = 0; i < SPOOL_FD_CACHE_SLOTS; i++) {
		s = &c->slot[i];
		if (s->fd >= 0 && s->shard == shard && s->seq == seq) {
			s->refs++;
			s->used = ++c->tick;
			return s;
		}
		/* the victim: an empty slot, else the least recently used
		 * one that no reader holds */
		if (s->refs != 0)
			continue;
		if (victim == NULL ||
		    (victim->fd >= 0 && (s->fd < 0 || s->used < victim->used)))
			victim = s;
	}
	if (victim == NULL)
		return NULL;
	if ((fd = seg_open_read(sp, shard, seq, &seed, err)) < 0) {
		*rc = fd;
		return NULL;
	}
	if (victim->fd >= 0)
		close(victim->fd);
	victim->fd = fd;
	victim->shard = shard;
	victim->seq = seq;
	victim->seed = seed;
	victim->refs = 1;
	victim->used = ++c->tick;
	return victim;
}

/* ---- readers ------------------------------------------------------------------- */

struct spool_reader {
	struct spool *sp;
	struct spool_fd_cache *cache;
	struct spool_fd_slot *slot;     /* the cached segment in use, or NULL */
	char ids[SPOOL_ID_BYTES + 1];
	uint64_t id;
	struct msg_loc loc;
	uint32_t i;             /* next extent */
	int fd;                 /* the segment in use: the slot's or our own */
	uint64_t seq;
	uint32_t seed, crc;
	uint64_t size;
	uint8_t *rec;
};

int spool_reader_open(struct spool *sp, const char *id, struct spool_fd_cache *cache,
		      struct spool_reader **out, struct rm_err *err)
{
	struct spool_reader *rd;
	uint32_t max_len = 0;
	uint64_t v;
	int rc;

	if (id == NULL || id_parse(id, &v) < 0)
		return rm_err_set(err, -EINVAL, "spool: read: malformed queue id");
	if ((rd = calloc(1, sizeof(*rd))) == NULL)
		return rm_err_set(err, -ENOMEM, "spool: read %s: %s", id, strerror(ENOMEM));
	if ((rc = locate(sp, id, v, &rd->loc, err)) < 0) {
		free(rd);
		return rc;
	}
	for (uint32_t i = 0; i < rd->loc.n_extents; i++) {
		uint32_t len = get_le32(rd->loc.extents + (size_t)i * EXTENT_BYTES + 4);
		if (len > max_len)
			max_len = len;
	}
	if (max_len > SPOOL_CHUNK_BYTES)
		max_len = SPOOL_CHUNK_BYTES;
	/* Sized to the largest chunk: a 1 KiB message costs 1 KiB, not 64. */
	if ((rd->rec = malloc(REC_HDR_BYTES + (size_t)max_len)) == NULL) {
		free(rd->loc.extents);
		free(rd);
		return rm_err_set(err, -ENOMEM, "spool: read %s: %s", id, strerror(ENOMEM));
	}
	rd->sp = sp;
	rd->cache = cache;
	memcpy(rd->ids, id, SPOOL_ID_BYTES);
	rd->ids[SPOOL_ID_BYTES] = '\0';
	rd->id = v;
	rd->fd = -1;
	rd->seq = UINT64_MAX;
	*out = rd;
	return 0;
}

/* reader_drop_fd - let go of the segment in use (the slot's, or close ours). */
static void reader_drop_fd(struct spool_reader *rd)
{
	if (rd->slot != NULL)
		rd->slot->refs--;
	else if (rd->fd >= 0)
		close(rd->fd);
	rd->slot = NULL;
	rd->fd = -1;
}

int spool_reader_next(struct spool_reader *rd, const uint8_t **p, size_t *len,
		      struct rm_err *err)
{
	const uint8_t *ext;
	uint32_t n;
	int rc = 0;

	if (rd->i == rd->loc.n_extents) {
		if (rd->size != rd->loc.size || rd->crc != rd->loc.crc)
			return rm_err_set(err, SPOOL_ECORRUPT, "spool: read %s: content "
					  "checksum mismatch", rd->ids);
		return 0;
	}
	ext = rd->loc.extents + (size_t)rd->i * EXTENT_BYTES;
	n = get_le32(ext + 4);
	if (get_le32(ext) != rd->seq) {
		reader_drop_fd(rd);
		rd->seq = get_le32(ext);
		if (rd->cache != NULL &&
		    (rd->slot = fd_cache_get(rd->sp, rd->cache, id_shard(rd->id), rd->seq,
					     &rc, err)) != NULL) {
			rd->fd = rd->slot->fd;
			rd->seed = rd->slot->seed;
		} else if (rc < 0) {
			rd->seq = UINT64_MAX;
			return rc;
		} else {
			rd->fd = seg_open_read(rd->sp, id_shard(rd->id), rd->seq, &rd->seed, err);
		}
		if (rd->fd < 0) {
			rd->seq = UINT64_MAX;
			return rd->fd;
		}
	}
	if ((rc = read_extent(rd->fd, rd->seed, ext, rd->id, rd->rec)) < 0)
		return rm_err_set(err, rc, "spool: read %s: segment %03u/%010" PRIu64
				  " offset %" PRIu64 ": %s", rd->ids, id_shard(rd->id),
				  rd->seq, get_le64(ext + 8), spool_strerror(rc));
	rd->crc = spool_crc32c(rd->crc, rd->rec + REC_HDR_BYTES, n);
	rd->size += n;
	rd->i++;
	*p = rd->rec + REC_HDR_BYTES;
	*len = n;
	return 1;
}

void spool_reader_close(struct spool_reader *rd)
{
	if (rd == NULL)
		return;
	reader_drop_fd(rd);
	free(rd->loc.extents);
	free(rd->rec);
	free(rd);
}

/* ---- recovery: rebuild the index from the segments ------------------------------ */

/* struct pend - a message whose chunks were seen but not yet its COMMIT. */
struct pend {
	struct pend *next;
	uint64_t id, size;
	uint32_t crc;
	struct rm_buf extents;
};

struct rebuild {
	struct spool *sp;
	MDB_txn *txn;
	struct pend *bucket[REBUILD_BUCKETS];
	struct rm_buf value;
	struct rm_err *err;
};

/* struct rec - one record found in a mapped segment. */
struct rec {
	unsigned type, flags;
	uint64_t id, seq, off;
	const uint8_t *payload;
	uint32_t len;
};

static struct pend **pend_slot(struct rebuild *rb, uint64_t id)
{
	struct pend **pp = &rb->bucket[(id ^ (id >> 29)) % REBUILD_BUCKETS];

	while (*pp != NULL && (*pp)->id != id)
		pp = &(*pp)->next;
	return pp;
}

static void pend_drop(struct pend **pp)
{
	struct pend *p = *pp;

	*pp = p->next;
	rm_buf_fini(&p->extents);
	free(p);
}

static int apply_chunk(struct rebuild *rb, const struct rec *r)
{
	struct pend **pp = pend_slot(rb, r->id), *p = *pp;
	uint8_t ext[EXTENT_BYTES];

	if (p == NULL) {
		if ((p = calloc(1, sizeof(*p))) == NULL)
			return -ENOMEM;
		p->id = r->id;
		rm_buf_init(&p->extents, (size_t)MAX_EXTENTS * EXTENT_BYTES);
		*pp = p;
	}
	put_le32(ext, (uint32_t)r->seq);
	put_le32(ext + 4, r->len);
	put_le64(ext + 8, r->off);
	p->size += r->len;
	p->crc = spool_crc32c(p->crc, r->payload, r->len);
	return rm_buf_append(&p->extents, ext, sizeof(ext)) == -ENOMEM ? -ENOMEM : 0;
}

/*
 * moved_states - a COMMIT_MOVED payload is a COMMIT payload and then one
 * index rstate per recipient: the length of the first part, or 0 when
 * the sizes do not add up or a state is out of range.
 */
static size_t moved_states(const struct rec *r)
{
	uint32_t n;
	size_t states;

	if (r->len < COMMIT_FIXED_BYTES)
		return 0;
	n = get_le32(r->payload + 4);
	states = (size_t)n * RSTATE_BYTES;
	if (n == 0 || n > SPOOL_MAX_RCPTS || states >= r->len)
		return 0;
	for (uint32_t i = 0; i < n; i++)
		if (r->payload[r->len - states + (size_t)i * RSTATE_BYTES] > SPOOL_RCPT_FAILED)
			return 0;
	return r->len - states;
}

/*
 * apply_commit - a message is complete: index it. A moved copy
 * (COMMIT_MOVED) replaces the entry of the same id, states included; the
 * records after it (updates, its DONE) apply as before.
 */
static int apply_commit(struct rebuild *rb, const struct rec *r)
{
	struct pend **pp = pend_slot(rb, r->id), *p = *pp;
	struct commit_view cv;
	struct value_view vv;
	uint64_t size = p ? p->size : 0;
	uint32_t crc = p ? p->crc : 0;
	bool is_moved = (r->flags & COMMIT_MOVED) != 0;
	size_t clen = is_moved ? moved_states(r) : r->len;
	int64_t due;
	int rc;

	if (clen == 0 || commit_parse(r->payload, clen, &cv) < 0 ||
	    (is_moved && r->len - clen != (size_t)cv.n_rcpts * RSTATE_BYTES)) {
		rb->sp->stats.n_bad_records++;
		rc = 0;
	} else if (cv.size != size || cv.crc != crc) {
		rb->sp->stats.n_garbage_msgs++;
		rc = 0;
	} else if ((rc = value_build(&rb->value, id_shard(r->id),
				     p ? get_le32(p->extents.data) : r->seq,
				     p ? p->extents.data : NULL,
				     p ? p->extents.len / EXTENT_BYTES : 0,
				     r->payload, clen, &cv)) == 0) {
		due = cv.arrival;
		if (is_moved) {
			memcpy(rb->value.data + rb->value.len - (r->len - clen),
			       r->payload + clen, r->len - clen);
			if (value_parse(rb->value.data, rb->value.len, &vv) == 0)
				due = value_due(&vv);
			/* the original's keys go: its segment may be gone */
			rc = index_del_msg(rb->sp, rb->txn, r->id);
			rc = rc == MDB_NOTFOUND ? 0 : rc;
		}
		/* no recipient pending: no due key, as index_update leaves it */
		if (rc == 0)
			rc = index_put_msg(rb->sp, rb->txn, r->id,
					   due == INT64_MAX ? cv.arrival : due,
					   rb->value.data, rb->value.len);
		if (rc == 0 && due == INT64_MAX)
			rc = index_due_move(rb->sp, rb->txn, r->id, cv.arrival, INT64_MAX);
		if (rc != 0)
			rc = lmdb_err(rb->err, rc, "mdb_put");
	}
	if (p != NULL)
		pend_drop(pp);
	return rc;
}

static int apply_done(struct rebuild *rb, const struct rec *r)
{
	struct pend **pp = pend_slot(rb, r->id);
	int rc;

	if (*pp != NULL)
		pend_drop(pp);
	if ((rc = index_del_msg(rb->sp, rb->txn, r->id)) == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return lmdb_err(rb->err, rc, "mdb_del");
	rb->sp->stats.n_done++;
	return 0;
}

static int apply_update(struct rebuild *rb, const struct rec *r)
{
	int rc = index_update(rb->sp, rb->txn, r->id, r->payload, r->len, &rb->value);

	if (rc == SPOOL_ECORRUPT)
		rb->sp->stats.n_bad_records++;
	if (rc == MDB_NOTFOUND || rc == SPOOL_ECORRUPT)
		return 0;
	return rc != 0 ? lmdb_err(rb->err, rc, "mdb_put") : 0;
}

static int apply(struct rebuild *rb, const struct rec *r)
{
	unsigned shard = id_shard(r->id);

	if (r->id > rb->sp->last_id[shard])
		rb->sp->last_id[shard] = r->id;
	rb->sp->stats.n_records++;
	switch (r->type) {
	case SPOOL_REC_CHUNK:
		return apply_chunk(rb, r);
	case SPOOL_REC_COMMIT:
		return apply_commit(rb, r);
	case SPOOL_REC_DONE:
		return apply_done(rb, r);
	default:
		return apply_update(rb, r);
	}
}

/* is_zero - every byte of p[0..n) is 0. */
static bool is_zero(const uint8_t *p, uint64_t n)
{
	static const uint8_t zero[4096];

	while (n > 0) {
		size_t k = n < sizeof(zero) ? (size_t)n : sizeof(zero);
		if (memcmp(p, zero, k) != 0)
			return false;
		p += k;
		n -= k;
	}
	return true;
}

/* rec_at - the valid record at off, or false. */
static bool rec_at(const uint8_t *map, uint64_t size, uint64_t off,
		   uint32_t seed, struct rec *r)
{
	const uint8_t *h = map + off;
	uint32_t crc;

	if (size - off < REC_HDR_BYTES || get_le32(h) != REC_MAGIC ||
	    h[4] < SPOOL_REC_CHUNK || h[4] > SPOOL_REC_DONE || get_le16(h + 6) != 0)
		return false;
	r->len = get_le32(h + 16);
	if (r->len > MAX_RECORD_BYTES || size - off - REC_HDR_BYTES < r->len ||
	    (h[4] == SPOOL_REC_CHUNK && r->len > SPOOL_CHUNK_BYTES))
		return false;
	crc = spool_crc32c(seed, h, 20);
	if (spool_crc32c(crc, h + REC_HDR_BYTES, r->len) != get_le32(h + 20))
		return false;
	r->type = h[4];
	r->flags = h[5];
	r->id = get_le64(h + 8);
	r->off = off;
	r->payload = h + REC_HDR_BYTES;
	return true;
}

/*
 * scan_map - apply every valid record of a mapped segment. Damage is
 * skipped up to the next valid record; *tail is the offset where a torn
 * tail, or an all-zero one (*zero_tail: preallocated space), starts; size
 * when there is none.
 */
static int scan_map(struct rebuild *rb, const uint8_t *map, uint64_t size,
		    uint64_t seq, uint32_t seed, uint64_t *tail, bool *zero_tail)
{
	struct spool_stats *st = &rb->sp->stats;
	uint64_t off = SEG_HDR_BYTES, next;
	struct rec r;
	int rc;

	while (off < size) {
		if (!rec_at(map, size, off, seed, &r)) {
			if (is_zero(map + off, size - off)) {
				/* the preallocated rest (or a torn write
				 * that never reached the disk) */
				*zero_tail = true;
				break;
			}
			st->n_bad_records++;
			for (next = off + 8; next < size; next += 8)
				if (rec_at(map, size, next, seed, &r))
					break;
			if (next >= size) {
				*tail = off;
				return 0;
			}
			st->n_skipped_bytes += next - off;
			off = next;
		}
		r.seq = seq;
		if ((rc = apply(rb, &r)) < 0)
			return rc;
		off += REC_HDR_BYTES + pad8(r.len);
	}
	*tail = off < size ? off : size;
	return 0;
}

static bool seg_hdr_ok(const uint8_t *h, unsigned shard, uint64_t seq)
{
	return memcmp(h, SEG_MAGIC, 8) == 0 && get_le32(h + 8) == SEG_VERSION &&
	       get_le32(h + 12) == shard && get_le64(h + 16) == seq;
}

/* rebuild_segment - scan one segment; cut a torn tail off. */
static int rebuild_segment(struct rebuild *rb, unsigned shard, uint64_t seq)
{
	struct spool_stats *st = &rb->sp->stats;
	char name[32];
	struct stat sb;
	uint64_t size, tail;
	uint8_t *map;
	bool zero_tail = false;
	int fd, rc;

	snprintf(name, sizeof(name), SEG_NAME_FMT, shard, seq);
	if ((fd = openat(rb->sp->seg_fd, name, O_RDWR | O_CLOEXEC)) < 0 &&
	    (fd = openat(rb->sp->seg_fd, name, O_RDONLY | O_CLOEXEC)) < 0)
		return sys_err(rb->err, "open segment", name);
	st->n_segments++;
	if (fstat(fd, &sb) < 0) {
		rc = sys_err(rb->err, "stat segment", name);
		close(fd);
		return rc;
	}
	size = (uint64_t)sb.st_size;
	if (size < SEG_HDR_BYTES) {	/* crashed right after creating it */
		st->n_bad_segments++;
		close(fd);
		return 0;
	}
	map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		rc = sys_err(rb->err, "mmap segment", name);
		close(fd);
		return rc;
	}
	rc = 0;
	tail = size;
	if (memcmp(map, SEG_MAGIC, 8) == 0 && get_le32(map + 8) != SEG_VERSION)
		/* a newer ringmta wrote it: never treat it as garbage */
		rc = rm_err_set(rb->err, SPOOL_EVERSION, "spool: segment %s: "
				"format version %u", name, get_le32(map + 8));
	else if (!seg_hdr_ok(map, shard, seq))
		st->n_bad_segments++;
	else
		rc = scan_map(rb, map, size, seq, seg_seed(get_le64(map + 24)), &tail,
			      &zero_tail);
	munmap(map, size);
	if (rc == 0 && tail < size) {
		/* hygiene only: nothing is ever appended to an old segment,
		 * so a segment we may not write (another owner) stays as is */
		if (zero_tail)
			st->n_prealloc_bytes += size - tail;
		else
			st->n_truncated_bytes += size - tail;
		if (ftruncate(fd, (off_t)tail) == 0)
			(void)fdatasync(fd);
	}
	close(fd);
	return rc;
}

/* struct seg_name - a segment found in <dir>/seg. */
struct seg_name {
	unsigned shard;
	uint64_t seq;
};

/* seg_name_parse - "NNN-NNNNNNNNNN.seg" exactly. */
static bool seg_name_parse(const char *s, struct seg_name *out)
{
	uint64_t v = 0;

	if (strlen(s) != SEG_NAME_BYTES || s[3] != '-' || strcmp(s + 14, ".seg") != 0)
		return false;
	for (int i = 0; i < 14; i++) {
		if (i == 3)
			continue;
		if (s[i] < '0' || s[i] > '9')
			return false;
		if (i < 3)
			out->shard = out->shard * 10 + (unsigned)(s[i] - '0');
		else
			v = v * 10 + (uint64_t)(s[i] - '0');
	}
	out->seq = v;
	return out->shard < SPOOL_MAX_SHARDS && v <= UINT32_MAX;
}

static int seg_name_cmp(const void *a, const void *b)
{
	const struct seg_name *x = a, *y = b;

	if (x->shard != y->shard)
		return x->shard < y->shard ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* seg_list - every segment, sorted by shard and seqno; sets next_seq. */
static int seg_list(struct spool *sp, struct seg_name **out, size_t *n_out,
		    struct rm_err *err)
{
	struct seg_name *v = NULL, sn, *nv;
	size_t n = 0, cap = 0;
	struct dirent *de;
	int dfd = dup(sp->seg_fd);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;

	if (d == NULL) {
		if (dfd >= 0)
			close(dfd);
		return sys_err(err, "list", "seg/");
	}
	rewinddir(d);
	while ((de = readdir(d)) != NULL) {
		memset(&sn, 0, sizeof(sn));
		if (!seg_name_parse(de->d_name, &sn))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			if ((nv = realloc(v, cap * sizeof(*v))) == NULL) {
				free(v);
				closedir(d);
				return rm_err_set(err, -ENOMEM, "spool: list seg/: %s",
						  strerror(ENOMEM));
			}
			v = nv;
		}
		v[n++] = sn;
		if (sn.seq + 1 > sp->next_seq[sn.shard])
			sp->next_seq[sn.shard] = sn.seq + 1;
		if (sn.seq < sp->low_seq[sn.shard])
			sp->low_seq[sn.shard] = sn.seq;
	}
	closedir(d);
	if (n > 0)
		qsort(v, n, sizeof(*v), seg_name_cmp);
	*out = v;
	*n_out = n;
	return 0;
}

static void rebuild_fini(struct rebuild *rb)
{
	for (unsigned i = 0; i < REBUILD_BUCKETS; i++)
		while (rb->bucket[i] != NULL) {
			rb->sp->stats.n_garbage_msgs++;
			pend_drop(&rb->bucket[i]);
		}
	rm_buf_fini(&rb->value);
}

/* rebuild_scan - every segment into the (fresh) index, a txn per segment. */
static int rebuild_scan(struct rebuild *rb, const struct seg_name *v, size_t n)
{
	struct spool *sp = rb->sp;
	int rc;

	for (size_t i = 0; i <= n; i++) {
		if ((rc = mdb_txn_begin(sp->env, NULL, 0, &rb->txn)) != 0)
			return lmdb_err(rb->err, rc, "mdb_txn_begin");
		if (i < n) {
			rc = rebuild_segment(rb, v[i].shard, v[i].seq);
		} else {
			for (unsigned s = 0; s < SPOOL_MAX_SHARDS && rc == 0; s++)
				if (sp->last_id[s] != 0 &&
				    (rc = index_put_hw(sp, rb->txn, s, sp->last_id[s])) != 0)
					rc = lmdb_err(rb->err, rc, "mdb_put");
		}
		if (rc != 0) {
			mdb_txn_abort(rb->txn);
			return rc;
		}
		if ((rc = mdb_txn_commit(rb->txn)) != 0)
			return lmdb_err(rb->err, rc, "mdb_txn_commit");
	}
	return 0;
}

/* ---- open and close -------------------------------------------------------------- */

static int db_open(struct spool *sp, MDB_txn *txn, struct rm_err *err)
{
	unsigned f = sp->o.read_only ? 0 : MDB_CREATE;
	MDB_val key = { 7, "version" }, val;
	uint8_t v[4];
	int rc;

	if ((rc = mdb_dbi_open(txn, "msg", f, &sp->db_msg)) != 0 ||
	    (rc = mdb_dbi_open(txn, "due", f, &sp->db_due)) != 0 ||
	    (rc = mdb_dbi_open(txn, "seg", f, &sp->db_seg)) != 0 ||
	    (rc = mdb_dbi_open(txn, "meta", f, &sp->db_meta)) != 0)
		return lmdb_err(err, rc, "mdb_dbi_open");
	rc = mdb_get(txn, sp->db_meta, &key, &val);
	if (rc == MDB_NOTFOUND && !sp->o.read_only) {
		put_le32(v, INDEX_VERSION);
		val.mv_size = 4;
		val.mv_data = v;
		if ((rc = mdb_put(txn, sp->db_meta, &key, &val, 0)) != 0)
			return lmdb_err(err, rc, "mdb_put");
		return 0;
	}
	if (rc != 0)
		return lmdb_err(err, rc, "mdb_get");
	if (val.mv_size != 4 || get_le32(val.mv_data) != INDEX_VERSION)
		return rm_err_set(err, SPOOL_EVERSION, "spool: index version: %s",
				  spool_strerror(SPOOL_EVERSION));
	return 0;
}

/*
 * env_open - open the LMDB environment in <dir>/index and its databases.
 * want_txnid (0: any) is the last txn the clean marker recorded: another
 * value means data.mdb is not the file we synced (deleted, replaced,
 * restored from a backup) and must not be trusted.
 */
static int env_open(struct spool *sp, size_t want_txnid, struct rm_err *err)
{
	MDB_envinfo info;
	char path[PATH_MAX];
	unsigned flags = MDB_NOTLS | MDB_NOSYNC | (sp->o.read_only ? MDB_RDONLY : 0);
	MDB_txn *txn;
	int rc;

	snprintf(path, sizeof(path), "%s/index", sp->dir);
	if ((rc = mdb_env_create(&sp->env)) != 0)
		return lmdb_err(err, rc, "mdb_env_create");
	if ((!sp->o.read_only &&
	     (rc = mdb_env_set_mapsize(sp->env, sp->o.map_bytes)) != 0) ||
	    (rc = mdb_env_set_maxdbs(sp->env, 8)) != 0 ||
	    (rc = mdb_env_open(sp->env, path, flags, 0640)) != 0) {
		mdb_env_close(sp->env);
		sp->env = NULL;
		return lmdb_err(err, rc, "mdb_env_open");
	}
	/* reader slots of dead readers (a killed `ringmta queue`) pin old
	 * pages until cleared: left alone they fill the map over time */
	if (!sp->o.read_only)
		(void)mdb_reader_check(sp->env, NULL);
	if (want_txnid != 0 && (mdb_env_info(sp->env, &info) != 0 ||
				info.me_last_txnid != want_txnid)) {
		mdb_env_close(sp->env);
		sp->env = NULL;
		return rm_err_set(err, SPOOL_ECORRUPT, "spool: index is not the one "
				  "the clean marker describes");
	}
	if ((rc = mdb_txn_begin(sp->env, NULL, sp->o.read_only ? MDB_RDONLY : 0,
				&txn)) != 0)
		rc = lmdb_err(err, rc, "mdb_txn_begin");
	else if ((rc = db_open(sp, txn, err)) != 0)
		mdb_txn_abort(txn);
	else if ((rc = mdb_txn_commit(txn)) != 0)
		rc = lmdb_err(err, rc, "mdb_txn_commit");
	if (rc != 0) {
		mdb_env_close(sp->env);
		sp->env = NULL;
	}
	return rc;
}

/*
 * index_own - the lock file must be writable by every reader (LMDB keeps
 * reader slots in it), so 0660; both files go to the configured owner.
 */
static int index_own(struct spool *sp, struct rm_err *err)
{
	int rc;

	if (fchmodat(sp->index_fd, "lock.mdb", 0660, 0) < 0)
		return sys_err(err, "chmod", "index/lock.mdb");
	if ((rc = own_at(sp, sp->index_fd, "data.mdb")) < 0 ||
	    (rc = own_at(sp, sp->index_fd, "lock.mdb")) < 0)
		return rm_err_set(err, rc, "spool: chown index: %s", strerror(-rc));
	return 0;
}

/* rebuild - throw the index away and make a new one from the segments. */
static int rebuild(struct spool *sp, struct rm_err *err)
{
	struct rebuild *rb;
	struct seg_name *v = NULL;
	size_t n = 0;
	MDB_stat ms;
	int rc;

	sp->stats.is_rebuilt = true;
	if ((unlinkat(sp->index_fd, "data.mdb", 0) < 0 && errno != ENOENT) ||
	    (unlinkat(sp->index_fd, "lock.mdb", 0) < 0 && errno != ENOENT))
		return sys_err(err, "remove", "index/data.mdb");
	if ((rc = env_open(sp, 0, err)) < 0 || (rc = seg_list(sp, &v, &n, err)) < 0)
		return rc;
	if ((rb = calloc(1, sizeof(*rb))) == NULL) {
		free(v);
		return rm_err_set(err, -ENOMEM, "spool: rebuild: %s", strerror(ENOMEM));
	}
	rb->sp = sp;
	rb->err = err;
	rm_buf_init(&rb->value, (size_t)MAX_RECORD_BYTES * 2);
	rc = rebuild_scan(rb, v, n);
	rebuild_fini(rb);
	free(rb);
	free(v);
	if (rc < 0)
		return rc;
	if ((rc = mdb_env_sync(sp->env, 1)) != 0)
		return lmdb_err(err, rc, "mdb_env_sync");
	if (fsync(sp->index_fd) < 0)
		return sys_err(err, "fsync", "index/");
	sp->stats.n_messages = 0;
	MDB_txn *txn;
	if (mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn) == 0) {
		if (mdb_stat(txn, sp->db_msg, &ms) == 0)
			sp->stats.n_messages = ms.ms_entries;
		mdb_txn_abort(txn);
	}
	return 0;
}

/*
 * mkdir_owned - mkdirat that chowns what it creates, and with is_ours
 * also what it finds (seg/ and index/ are ours; the top directory may be
 * one the operator made, such as a mount point). *made says if it did.
 */
static int mkdir_owned(struct spool *sp, int dfd, const char *name,
		       bool is_ours, bool *made)
{
	if (mkdirat(dfd, name, 0750) == 0) {
		*made = true;
		return own_at(sp, dfd, name);
	}
	if (errno != EEXIST)
		return -errno;
	return is_ours ? own_at(sp, dfd, name) : 0;
}

static int open_dirs(struct spool *sp, struct rm_err *err)
{
	bool made = false;
	int rc;

	if (!sp->o.read_only && (rc = mkdir_owned(sp, AT_FDCWD, sp->dir, false, &made)) < 0)
		return rm_err_set(err, rc, "spool: mkdir %s: %s", sp->dir, strerror(-rc));
	if ((sp->dir_fd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return sys_err(err, "open", sp->dir);
	if (!sp->o.read_only &&
	    ((rc = mkdir_owned(sp, sp->dir_fd, "seg", true, &made)) < 0 ||
	     (rc = mkdir_owned(sp, sp->dir_fd, "index", true, &made)) < 0))
		return rm_err_set(err, rc, "spool: mkdir in %s: %s", sp->dir,
				  strerror(-rc));
	if (made && fsync(sp->dir_fd) < 0)
		return sys_err(err, "fsync", sp->dir);
	if ((sp->seg_fd = openat(sp->dir_fd, "seg", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return sys_err(err, "open", "seg/");
	if ((sp->index_fd = openat(sp->dir_fd, "index", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return sys_err(err, "open", "index/");
	return 0;
}

/* lock_spool - one daemon per spool: a second one would corrupt it. */
static int lock_spool(struct spool *sp, struct rm_err *err)
{
	int rc;

	sp->lock_fd = openat(sp->dir_fd, LOCK_NAME, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (sp->lock_fd < 0)
		return sys_err(err, "open", LOCK_NAME);
	if ((rc = own_fd(sp, sp->lock_fd)) < 0)
		return rm_err_set(err, rc, "spool: chown %s: %s", LOCK_NAME, strerror(-rc));
	if (flock(sp->lock_fd, LOCK_EX | LOCK_NB) < 0)
		return rm_err_set(err, errno == EWOULDBLOCK ? -EBUSY : -errno,
				  "spool: lock %s: in use by another process", sp->dir);
	return 0;
}

/* marker_read - the txnid a clean marker records; 0 when there is none. */
static size_t marker_read(struct spool *sp)
{
	char text[128];
	unsigned long long txnid = 0;
	ssize_t n;
	int fd = openat(sp->index_fd, MARKER_NAME, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return SIZE_MAX;	/* present but unreadable: rebuild */
	text[n] = '\0';
	if (sscanf(text, MARKER_TEXT "%llu", &txnid) != 1 || txnid == 0)
		return SIZE_MAX;
	return (size_t)txnid;
}

static int open_rw(struct spool *sp, struct rm_err *err)
{
	struct seg_name *v;
	size_t n, txnid;
	int rc;

	if ((rc = lock_spool(sp, err)) < 0 || (rc = seg_list(sp, &v, &n, err)) < 0)
		return rc;
	free(v);
	txnid = marker_read(sp);
	if (txnid != 0) {
		/* durably gone before the first NOSYNC commit, or a crash
		 * later would leave a marker in front of a torn index */
		if (unlinkat(sp->index_fd, MARKER_NAME, 0) < 0 || fsync(sp->index_fd) < 0)
			return sys_err(err, "remove", "index/" MARKER_NAME);
		if (txnid != SIZE_MAX && env_open(sp, txnid, err) == 0)
			return index_own(sp, err);
	}
	if ((rc = rebuild(sp, err)) < 0)
		return rc;
	return index_own(sp, err);
}

static int open_ro(struct spool *sp, struct rm_err *err)
{
	struct stat sb;
	int rc;

	if (faccessat(sp->index_fd, "data.mdb", F_OK, 0) < 0)
		return sys_err(err, "open", "index/data.mdb");
	if ((rc = env_open(sp, 0, err)) < 0)
		return rc;
	/* root reading a stopped spool must not leave a lock file the
	 * daemon's user cannot write */
	if (geteuid() == 0 && fstat(sp->index_fd, &sb) == 0 &&
	    fchownat(sp->index_fd, "lock.mdb", sb.st_uid, sb.st_gid, 0) < 0) {
		/* best effort: root can read either way */
	}
	return 0;
}

static int opts_check(struct spool *sp, const struct spool_opts *o,
		      struct rm_err *err)
{
	if (o == NULL || o->dir == NULL || o->dir[0] == '\0')
		return rm_err_set(err, -EINVAL, "spool: open: no directory");
	sp->o = *o;
	if (sp->o.map_bytes == 0)
		sp->o.map_bytes = SPOOL_DEFAULT_MAP_BYTES;
	if (sp->o.segment_bytes == 0)
		sp->o.segment_bytes = SPOOL_DEFAULT_SEGMENT_BYTES;
	if (sp->o.segment_bytes < SPOOL_MIN_SEGMENT_BYTES ||
	    (!o->read_only && (o->n_shards == 0 || o->n_shards > SPOOL_MAX_SHARDS)))
		return rm_err_set(err, -EINVAL, "spool: open %s: bad segment_bytes "
				  "or n_shards", o->dir);
	if ((sp->dir = strdup(o->dir)) == NULL)
		return rm_err_set(err, -ENOMEM, "spool: open: %s", strerror(ENOMEM));
	sp->o.dir = sp->dir;
	return 0;
}

static void spool_free(struct spool *sp)
{
	if (sp->env != NULL)
		mdb_env_close(sp->env);
	if (sp->index_fd >= 0)
		close(sp->index_fd);
	if (sp->seg_fd >= 0)
		close(sp->seg_fd);
	if (sp->dir_fd >= 0)
		close(sp->dir_fd);
	if (sp->lock_fd >= 0)
		close(sp->lock_fd);	/* releases the flock */
	pthread_mutex_destroy(&sp->mu);
	free(sp->dir);
	free(sp);
}

int spool_open(struct spool **out, const struct spool_opts *o,
	       struct rm_err *err)
{
	struct spool *sp = calloc(1, sizeof(*sp));
	int rc;

	if (sp == NULL)
		return rm_err_set(err, -ENOMEM, "spool: open: %s", strerror(ENOMEM));
	sp->dir_fd = sp->seg_fd = sp->index_fd = sp->lock_fd = -1;
	for (unsigned i = 0; i < SPOOL_MAX_SHARDS; i++)
		sp->low_seq[i] = UINT64_MAX;
	pthread_mutex_init(&sp->mu, NULL);
	if ((rc = opts_check(sp, o, err)) < 0 || (rc = open_dirs(sp, err)) < 0 ||
	    (rc = sp->o.read_only ? open_ro(sp, err) : open_rw(sp, err)) < 0) {
		spool_free(sp);
		return rc;
	}
	*out = sp;
	return 0;
}

/* marker_write - "the index is complete and synced as of txnid", durably. */
static int marker_write(struct spool *sp, size_t txnid)
{
	char text[128];
	int len = snprintf(text, sizeof(text), MARKER_TEXT "%zu\n", txnid);
	int fd = openat(sp->index_fd, MARKER_NAME,
			O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	int rc = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, text, (size_t)len) != len || own_fd(sp, fd) < 0 || fsync(fd) < 0)
		rc = -EIO;
	close(fd);
	if (rc == 0 && fsync(sp->index_fd) < 0)
		rc = -errno;
	if (rc < 0)
		unlinkat(sp->index_fd, MARKER_NAME, 0);
	return rc;
}

void spool_close(struct spool *sp)
{
	MDB_envinfo info;
	bool is_synced;

	if (sp == NULL)
		return;
	if (sp->n_open_shards != 0)
		rm_panic("spool_close with %u shards open", sp->n_open_shards);
	if (!sp->o.read_only && sp->env != NULL) {
		is_synced = mdb_env_sync(sp->env, 1) == 0 &&
			    mdb_env_info(sp->env, &info) == 0;
		mdb_env_close(sp->env);
		sp->env = NULL;
		if (is_synced)
			(void)marker_write(sp, info.me_last_txnid);
	}
	spool_free(sp);
}

void spool_stats(const struct spool *sp, struct spool_stats *out)
{
	*out = sp->stats;
}
