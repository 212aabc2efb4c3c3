/*
 * spool.h - the durable message spool: append-only segment files (the
 * truth) indexed by LMDB (a rebuildable cache), with group commit driven by
 * the reactor's io_uring fdatasync.
 *
 * DESIGN
 *
 * Segments. Each shard (one per reactor) appends records to its own
 * segment files <dir>/seg/<shard>-<seqno>.seg, 3 and 10 digits, and never
 * rewrites a byte. A segment starts with a 32-byte header carrying a random
 * nonce; every record is a 24-byte header {magic, type, flags, msg id,
 * payload length, crc32c} plus the payload, padded to 8 bytes. The crc32c
 * covers header and payload and is seeded with the segment nonce, so bytes
 * a sender put into a message body can never pass for a record, even when
 * recovery has to resynchronise after a damaged region. Record types:
 * CHUNK (up to SPOOL_CHUNK_BYTES of content, in order), COMMIT (envelope,
 * total size and crc32c of the content), RCPT_STATE (spool_shard_update()),
 * DONE (spool_shard_done(), or a message aborted or refused after its
 * chunks or COMMIT were written). Sessions interleave in one segment, so
 * every record names its message; all records of a message go through the
 * shard named in its id, so a rebuild replays them in order. A message
 * exists only once its COMMIT is on disk and the chunks before it add up
 * to the committed size and checksum. A shard rotates to a new segment at
 * segment_bytes, and always starts a new one when opened; old segments are
 * immutable. The open segment is kept zero-filled prealloc_bytes ahead of
 * its last record, so that appending changes neither the file's size nor
 * its block map and the batch fdatasync writes data only (no inode); a
 * rebuild reads an all-zero tail as the segment's clean end.
 *
 * The 250 contract. spool_msg_end() writes COMMIT into the page cache and
 * puts the message on the shard's pending batch. The reactor takes the
 * batch with spool_shard_sync_begin(), runs IORING_OP_FSYNC(DATASYNC) on
 * the fd it returns and hands the result to spool_shard_sync_end(). Only
 * then does the spool commit one LMDB write txn for the whole batch and
 * call each owner back with status 0, and only then may the host answer
 * 250. A message's bytes are therefore on stable storage before its 250
 * (Postfix's promise), at the cost of one fdatasync per batch.
 *
 * The index. LMDB is opened with MDB_NOSYNC: a commit only copies pages
 * into the page cache and never blocks the reactor on the disk. The index
 * is durable only at spool_close(), which runs mdb_env_sync(env, 1) and
 * then creates the marker file <dir>/index/clean (fsynced, with the
 * directory) naming the last LMDB txn id. spool_open() removes the marker
 * (and fsyncs the directory) before it writes anything, and trusts the
 * index only if its last txn id is the one the marker names, so a deleted
 * or replaced data.mdb is not trusted either. A missing marker means the
 * last run did not end cleanly (crash, kill -9, power loss): the index is
 * deleted and rebuilt from the segments - records checked against their
 * crc32c, a torn or corrupt record skipped up to the next valid record (or
 * the segment truncated there when none follows), chunks without a COMMIT
 * dropped, RCPT_STATE and DONE applied - then synced. The same rebuild
 * runs when mdb_env_open() fails on a marked index, or the index has
 * another format version. A flock on <dir>/spool.lock keeps a second
 * writer out.
 *
 * So a 250'd message is never lost (its segment was synced first), never
 * doubled (ids are unique, replay is idempotent), and a torn LMDB file is
 * never trusted. Delivery stays at least once: a message whose COMMIT
 * reached a segment but that was answered 452, or not at all, may come
 * back after a rebuild; the spool writes a DONE record for such messages
 * when it can, to make that rare. XXX a marked index whose pages were
 * damaged behind LMDB's back is trusted (LMDB keeps no page checksums);
 * delete the marker to force a rebuild.
 *
 * Rotation. A segment rotated away while it holds unsynced records of the
 * pending batch must be synced too, so a batch can take more than one
 * sync_begin/sync_end step: first the retired segments, oldest first, then
 * the current one, whose step commits the batch.
 *
 * Sync failure. After a failed fdatasync the tail of a file cannot be
 * trusted (the kernel may have dropped the dirty pages and reports that
 * once). The shard fails every message in the batch in flight and the
 * pending batch, fails every message still being written at the next call
 * (SPOOL_EABANDONED), abandons the segment and opens a new one on the next
 * write. An LMDB failure after a good fdatasync fails the batch but keeps
 * the segment. Messages already acknowledged are never touched.
 *
 * Queue ids. 16 lowercase hex digits of a 64-bit value: 32 bits of seconds
 * since the epoch, 8 bits of shard, 24 bits of per-shard counter. The
 * seconds part is a per-shard logical clock that never runs behind the
 * wall clock nor behind the highest id of the previous run (kept in the
 * index and recomputed from the segments by a rebuild), so ids are unique
 * across shards and restarts and sort in arrival order; the index keys
 * messages by the big-endian value.
 *
 * Layout. <dir>/seg/ (segments), <dir>/index/ (data.mdb, lock.mdb and the
 * marker, clean), <dir>/spool.lock. Directories are 0750, files 0640
 * except lock.mdb, 0660: a reader such as `ringmta queue list` (root, or
 * a member of the spool's group) must be able to write its reader slot
 * into the lock file. When spool_open() is given a uid or gid it chowns
 * seg/, index/, the index files, spool.lock and everything it creates, so
 * a daemon that opens the spool as root and drops privileges later can
 * still use it; <dir> itself is chowned only when spool_open() creates it
 * (it may be a mount point the operator owns). A read-only open by root
 * chowns a lock file it created to the owner of <dir>/index.
 *
 * Threads. One struct spool per process; spool_list(), spool_due(),
 * spool_get(), spool_read() and spool_stats() may be called from any thread at any
 * time. A struct spool_shard and its messages belong to one thread.
 *
 * Reclamation. spool_shard_sweep() unlinks a shard's segments oldest
 * first, and only those older than the oldest segment that a queued,
 * pending or open message of the shard has a record in (the index keeps
 * each message's first segment). Deleting out of order would be wrong: a
 * DONE in a deleted segment would let a rebuild revive its message from
 * an older one. A long-deferred message would so pin every later
 * segment until it leaves the queue: see Moving.
 *
 * Moving. So that a few long-deferred messages do not keep every later
 * segment (the whole traffic since they arrived) on disk, the sweep copies
 * the live messages of the shard's oldest pinned segment forward once it
 * is 4 segments behind the one being written, if they are at most an
 * eighth of a segment and none is due within a minute or has an update
 * in the batch (none is being delivered). A copy is its content as new
 * CHUNK records and a COMMIT with the same id, flagged COMMIT_MOVED, that
 * carries every recipient's current state. It goes through the batch like
 * an update: records written in batch order, fdatasync, then the index
 * entry points at the copy and its seg key moves, and the old segment no
 * longer pins anything. A rebuild takes a moved COMMIT as the message's
 * new entry (states included) and applies the records after it as
 * usual; one torn or never synced leaves the original in force. Each
 * deferred message is copied about once per 4 segments of traffic.
 * XXX the directory fsync at segment creation runs on the calling thread
 * (once per segment_bytes); it could be a step of the sync pipeline.
 */
#ifndef RINGMTA_SPOOL_H
#define RINGMTA_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringmta/util.h"

/* SPOOL_ID_BYTES - length of a printable queue id (no NUL). */
#define SPOOL_ID_BYTES 16
/* SPOOL_MAX_SHARDS - the id has 8 bits of shard. */
#define SPOOL_MAX_SHARDS 256
/*
 * SPOOL_CHUNK_BYTES - content is buffered per message up to this size and
 * then written as one CHUNK record: big enough that a record header is
 * 0.05% overhead, small enough that a session never holds a whole message.
 */
#define SPOOL_CHUNK_BYTES (64 * 1024)
/* SPOOL_DEFAULT_MAP_BYTES - LMDB map (sparse): ~1M queued messages. */
#define SPOOL_DEFAULT_MAP_BYTES (1ULL << 30)
/* SPOOL_DEFAULT_SEGMENT_BYTES - rotate segments at 64 MiB. */
#define SPOOL_DEFAULT_SEGMENT_BYTES (64ULL << 20)
/* SPOOL_MIN_SEGMENT_BYTES - smallest accepted segment_bytes (tests). */
#define SPOOL_MIN_SEGMENT_BYTES 4096
/* SPOOL_MAX_STRING_BYTES - cap on any envelope string (RFC 5321 4.5.3.1
 * allows 256-octet paths; ORCPT/ENVID xtext and helo stay well below). */
#define SPOOL_MAX_STRING_BYTES 4096
/* SPOOL_MAX_RCPTS - cap on recipients per message (the server's limit is
 * lower; this bounds what a corrupt record can make us allocate). */
#define SPOOL_MAX_RCPTS 100000

/*
 * Error codes. Functions return 0 or a negative code: -errno, or one of
 * these (-30600..-30604: apart from LMDB's -30799..-30780, which are
 * converted to these at the boundary, and far from errno).
 * spool_strerror() names them all.
 */
enum spool_error {
	/* a record, segment or index entry failed its checksum or parse */
	SPOOL_ECORRUPT = -30600,
	/* MDB_MAP_FULL: the index map is full; raise map_bytes */
	SPOOL_EMAPFULL = -30601,
	/* any other LMDB error; err->msg names the call and mdb_strerror */
	SPOOL_EINDEX = -30602,
	/* the message was being written when a sync failed; it is gone */
	SPOOL_EABANDONED = -30603,
	/* the spool was written by an incompatible version */
	SPOOL_EVERSION = -30604,
};

/*
 * SPOOL_HELD_UNIX - the next_attempt_unix of a PENDING recipient on hold
 * (`ringmta queue hold`): 9999-12-31T23:59:59Z, far beyond any retry time
 * the delivery engine computes (queue_next_attempt() results are capped by
 * maximal_queue_lifetime, at most 100 days), so spool_due() with a real
 * clock never reports a message whose pending recipients are all held, and
 * below INT64_MAX, which struct spool_entry uses for "nothing pending". A
 * recipient is held exactly when it is PENDING with this next attempt;
 * release sets it back to the current time. Stored like any time, so a
 * hold survives restarts and rebuilds.
 */
#define SPOOL_HELD_UNIX INT64_C(253402300799)

/* RCPT NOTIFY= flags (RFC 3461 4.1); 0 means the parameter was absent. */
#define SPOOL_NOTIFY_NEVER   0x1u
#define SPOOL_NOTIFY_SUCCESS 0x2u
#define SPOOL_NOTIFY_FAILURE 0x4u
#define SPOOL_NOTIFY_DELAY   0x8u

/* MAIL RET= (RFC 3461 4.3). */
enum spool_ret { SPOOL_RET_NONE = 0, SPOOL_RET_FULL = 1, SPOOL_RET_HDRS = 2 };
/* MAIL BODY= (RFC 6152, RFC 3030). */
enum spool_body {
	SPOOL_BODY_NONE = 0, SPOOL_BODY_7BIT = 1, SPOOL_BODY_8BITMIME = 2,
	SPOOL_BODY_BINARYMIME = 3,
};
/* Per-recipient delivery state, kept in the index. */
enum spool_rcpt_state {
	SPOOL_RCPT_PENDING = 0, SPOOL_RCPT_DELIVERED = 1, SPOOL_RCPT_FAILED = 2,
};
/* Segment record types (on disk; values never change). */
enum spool_rec_type {
	SPOOL_REC_CHUNK = 1, SPOOL_REC_COMMIT = 2, SPOOL_REC_RCPT_STATE = 3,
	SPOOL_REC_DONE = 4,
};

/*
 * struct spool_opts - how to open the spool.
 * dir: spool directory; created (0750) if missing unless read_only.
 * map_bytes: LMDB map size; 0 means SPOOL_DEFAULT_MAP_BYTES. Growing it
 *   across restarts is fine; the file is sparse.
 * segment_bytes: rotate segments past this size; 0 means the default;
 *   at least SPOOL_MIN_SEGMENT_BYTES. A single record may exceed it.
 * prealloc_bytes: keep the open segment zero-filled this far past its
 *   last record (never past segment_bytes); 0: segments grow by appends.
 * n_shards: shards this process will open, 1..SPOOL_MAX_SHARDS.
 * uid, gid: owner for everything spool_open() and the shards create,
 *   or -1 to leave it alone (chown(2) semantics).
 * read_only: for `ringmta queue`: no recovery, no marker, no shards;
 *   the index must exist.
 */
struct spool_opts {
	const char *dir;
	uint64_t map_bytes;
	uint64_t segment_bytes;
	uint64_t prealloc_bytes;
	unsigned n_shards;
	int uid;
	int gid;
	bool read_only;
};

/* struct spool_rcpt - one recipient given to spool_msg_end(). orcpt may be
 * NULL (no ORCPT=); notify is SPOOL_NOTIFY_* or 0. */
struct spool_rcpt {
	const char *addr;
	unsigned notify;
	const char *orcpt;
};

/*
 * struct spool_envelope - the envelope given to spool_msg_end(). All
 * strings are NUL-terminated, at most SPOOL_MAX_STRING_BYTES, and copied;
 * sender "" is the null reverse-path; envid, client_addr, helo may be
 * NULL. ret is enum spool_ret, body enum spool_body. arrival_unix is the
 * time the host accepted DATA; it is also the first due time.
 */
struct spool_envelope {
	const char *sender;
	const struct spool_rcpt *rcpts;
	size_t n_rcpts;
	const char *envid;
	int ret;
	int body;
	bool smtputf8;
	const char *client_addr;
	const char *helo;
	int64_t arrival_unix;
};

/* struct spool_rcpt_entry - one recipient as stored; see spool_entry. */
struct spool_rcpt_entry {
	const char *addr;
	unsigned notify;
	const char *orcpt;		/* NULL when absent */
	unsigned state;			/* enum spool_rcpt_state */
	unsigned attempts;
	int64_t next_attempt_unix;
	unsigned flags;			/* SPOOL_RCPT_F_* */
};

/*
 * struct spool_entry - one queued message as spool_list() and spool_due()
 * report it. Every pointer points into the index's read txn or a scratch
 * buffer and is valid only during the callback. next_attempt_unix is the
 * earliest next attempt of a pending recipient (INT64_MAX when none).
 */
struct spool_entry {
	char id[SPOOL_ID_BYTES + 1];
	unsigned shard;
	uint64_t size;
	uint32_t content_crc32c;
	int64_t arrival_unix;
	int64_t next_attempt_unix;
	const char *sender;
	const char *envid;		/* NULL when absent */
	int ret;
	int body;
	bool smtputf8;
	const char *client_addr;	/* NULL when absent */
	const char *helo;		/* NULL when absent */
	const struct spool_rcpt_entry *rcpts;
	size_t n_rcpts;
};

/*
 * struct spool_stats - what spool_open() found. is_rebuilt: the index was
 * rebuilt from the segments; the counters describe that scan (all 0 after
 * a clean start).
 */
struct spool_stats {
	bool is_rebuilt;
	uint64_t n_segments;		/* segments scanned */
	uint64_t n_records;		/* valid records read */
	uint64_t n_messages;		/* messages in the index afterwards */
	uint64_t n_bad_records;		/* records failing crc or parse */
	uint64_t n_bad_segments;	/* segments with an unreadable header */
	uint64_t n_garbage_msgs;	/* chunks never committed, or mismatched */
	uint64_t n_done;		/* messages removed by DONE records */
	uint64_t n_skipped_bytes;	/* damaged bytes skipped inside segments */
	uint64_t n_truncated_bytes;	/* torn tails cut off */
	uint64_t n_prealloc_bytes;	/* all-zero (preallocated) tails cut off */
};

struct spool;
struct spool_shard;
struct spool_msg;

/*
 * struct spool_owner - the daemon's convention for the owner pointer given
 * to spool_msg_end(), spool_shard_update() and spool_shard_done(): the
 * owner embeds this struct (anywhere; container_of gets back to it) and
 * passes its address; spool_owner_done() as the done function of
 * spool_shard_sync_end() then calls owner->done. So one shard's batch can
 * mix owners of different kinds (SMTP sessions, admin requests, the
 * delivery engine) without the spool knowing any of them. The spool itself
 * never looks inside an owner: callers that pass other owners use their
 * own done function.
 */
struct spool_owner {
	/* done - the item queued with this owner was committed (status 0) or
	 * failed; arguments as for spool_shard_sync_end()'s done. */
	void (*done)(struct spool_owner *o, const char *queue_id, int status);
};

/*
 * spool_owner_done - a done function for spool_shard_sync_end(): owner is
 * a struct spool_owner *; calls its done. A NULL owner is our bug (panic).
 */
void spool_owner_done(void *owner, const char *queue_id, int status);

/*
 * spool_id_shard - the shard named in queue id (SPOOL_ID_BYTES hex digits,
 * either case, NUL-terminated; see DESIGN: Queue ids), i.e. the only shard
 * that may update or remove the message. Pure: does not look the message
 * up. Returns 0..SPOOL_MAX_SHARDS-1, or -EINVAL for a malformed id.
 */
int spool_id_shard(const char *id);

/*
 * spool_open - open (and when needed create or recover) the spool.
 * o: options, read only during the call. *out receives the handle on
 * success, to be released with spool_close(). err (may be NULL) gets the
 * details of a failure. Recovery (see DESIGN) happens here and may take a
 * while: it reads every segment. It logs nothing; see spool_stats().
 * Returns 0, -EINVAL (bad options), -ENOENT (read_only and no index),
 * -EBUSY (another process has the spool open for writing), -ENOMEM,
 * -errno from the file system (mkdir, open, chown, fsync, readdir, mmap),
 * SPOOL_EMAPFULL (the rebuild did not fit in map_bytes), SPOOL_EVERSION
 * (a segment has another format version: a newer ringmta wrote it; or
 * read_only and the index has another format version, which a writer
 * simply rebuilds), SPOOL_EINDEX.
 */
int spool_open(struct spool **out, const struct spool_opts *o,
	       struct rm_err *err);

/*
 * spool_close - clean shutdown: sync the index and write the clean marker
 * (not for read_only). All shards must be closed first. Failures to sync
 * leave the marker out, so the next start rebuilds: nothing is lost.
 * spool_close(NULL) does nothing.
 */
void spool_close(struct spool *sp);

/*
 * spool_stats - copy what spool_open() found into *out.
 */
void spool_stats(const struct spool *sp, struct spool_stats *out);

/*
 * spool_strerror - text for any code a spool function returns: our range,
 * LMDB's and -errno. Returns a static string.
 */
const char *spool_strerror(int code);

/*
 * spool_crc32c - crc32c (Castagnoli, RFC 3720 B.4) of n bytes, continuing
 * from crc (0 to start); chaining calls equals one call over the
 * concatenation. Uses SSE4.2 when the CPU has it.
 */
uint32_t spool_crc32c(uint32_t crc, const void *p, size_t n);

/*
 * spool_shard_open - start shard number shard (< n_shards) for the calling
 * thread: it creates a new segment lazily, at the first write. A shard may
 * be open only once at a time. *out is released with spool_shard_close().
 * Returns 0, -EINVAL (bad shard, read-only spool), -EBUSY (already open),
 * -ENOMEM.
 */
int spool_shard_open(struct spool *sp, unsigned shard,
		     struct spool_shard **out, struct rm_err *err);

/*
 * spool_shard_close - stop a shard. The host must first finish a batch
 * in flight (spool_shard_sync_end()); sh and every message of it are
 * invalid afterwards. Messages still open are aborted; messages pending
 * are dropped without a callback (they never got their 250) and marked
 * DONE in the segment; pending updates and removals are dropped without a
 * callback too (a rebuild may still apply them: both are idempotent).
 * Records the shard's last id in the index, then fdatasyncs (blocking)
 * and closes its segments. NULL does nothing.
 */
void spool_shard_close(struct spool_shard *sh);

/*
 * spool_msg_begin - start a message on shard sh and give it a queue id.
 * *out belongs to the caller until spool_msg_end() or spool_msg_abort().
 * Nothing is written to disk yet. Returns 0 or -ENOMEM.
 */
int spool_msg_begin(struct spool_shard *sh, struct spool_msg **out,
		    struct rm_err *err);

/*
 * spool_msg_id - the queue id: SPOOL_ID_BYTES lowercase hex digits,
 * NUL-terminated, valid until the message is aborted or called back.
 */
const char *spool_msg_id(const struct spool_msg *m);

/*
 * spool_msg_write - append len bytes of content (p is copied or written
 * before return). Content is buffered up to SPOOL_CHUNK_BYTES (the buffer
 * grows with the message, so a small one holds little memory) and written
 * to the segment with pwrite (page cache only; no sync). On error nothing
 * already acknowledged is affected and the message can only be aborted.
 * Returns 0, -ENOSPC, -EIO, -EFBIG or another -errno from open/pwrite/
 * fsync of a new segment, -ENOMEM, SPOOL_EABANDONED (a sync failed while
 * this message was being written), or the earlier error again (sticky).
 */
int spool_msg_write(struct spool_msg *m, const void *p, size_t len,
		    struct rm_err *err);

/*
 * spool_msg_end - write the last chunk and the COMMIT record with env and
 * put the message on the shard's pending batch; owner is handed back to
 * the done callback of spool_shard_sync_end(). m belongs to the shard from
 * now on, also on error (then it is freed at once and there is no
 * callback). env is read only during the call. Returns 0, -EINVAL
 * (no sender or recipients, a string or the whole envelope too big), and
 * every error of spool_msg_write(). On 0 the host must make sure a sync
 * is started (spool_shard_sync_begin()).
 */
int spool_msg_end(struct spool_msg *m, const struct spool_envelope *env,
		  void *owner, struct rm_err *err);

/*
 * spool_msg_abort - discard the message (RSET, lost connection, size limit).
 * m is freed. Content already written becomes garbage that the next
 * rebuild drops. NULL does nothing.
 */
void spool_msg_abort(struct spool_msg *m);

/*
 * spool_shard_sync_begin - the next fd to fdatasync, or -1 when there is
 * nothing to sync or a sync is already in flight (at most one per shard).
 * When it returns an fd, the host must submit exactly one fdatasync (or
 * fsync) on it and pass the result to spool_shard_sync_end(); the fd
 * belongs to the shard (never close it) and stays open until then. A
 * batch can take more than one step when a segment was rotated since the
 * last sync: call sync_begin again after every spool_msg_end(),
 * spool_shard_update() and spool_shard_done() that returned 0 and after
 * every sync_end(), and submit whatever it returns.
 */
int spool_shard_sync_begin(struct spool_shard *sh);

/* spool_shard_sync_wanted - whether spool_shard_sync_begin() would start a
 * step now (a batch is pending and no step is in flight). */
bool spool_shard_sync_wanted(const struct spool_shard *sh);

/*
 * spool_shard_sync_end - the fdatasync of the last sync_begin() finished
 * with res (0 or -errno, as in a CQE). When that completed a batch, commit
 * the batch to the index in one txn and call done(owner, queue_id, status)
 * once per item of the batch (message, update or removal), in the order
 * they were queued: status 0 means durable (answer 250), negative is a
 * spool error (answer 452 4.3.1): -errno of the fdatasync (-EIO for a
 * positive res), SPOOL_EMAPFULL, SPOOL_EINDEX, -ENOMEM, and for updates
 * and removals also -ENOENT. done may be NULL. queue_id is valid during
 * the callback only. The callback may start, write and end messages and
 * call sync_begin. err (may be NULL) describes a failure of the whole
 * batch. A failed fdatasync abandons the segment (see DESIGN). Calling
 * sync_end without a sync_begin that returned an fd is our bug (panic).
 */
void spool_shard_sync_end(struct spool_shard *sh, int res,
			  void (*done)(void *owner, const char *queue_id,
				       int status),
			  struct rm_err *err);

/* SPOOL_RCPT_F_DELAY_NOTIFIED - the sender got its delay notice (DSN Action: delayed) for this recipient. */
#define SPOOL_RCPT_F_DELAY_NOTIFIED 0x01u
/* SPOOL_RCPT_F_ALL - every flag defined; others are refused. */
#define SPOOL_RCPT_F_ALL 0x01u

/*
 * struct spool_rcpt_update - the new delivery state of one recipient.
 * rcpt indexes the envelope's recipients (spool_entry.rcpts order); state
 * is enum spool_rcpt_state; attempts at most 65535; next_attempt_unix is
 * when to try a PENDING recipient again.
 */
struct spool_rcpt_update {
	uint32_t rcpt;
	unsigned state;
	unsigned attempts;
	int64_t next_attempt_unix;
	unsigned flags;			/* SPOOL_RCPT_F_*: replaces the stored ones */
};

/*
 * spool_shard_update - record delivery outcomes for n_u recipients of
 * message id (SPOOL_ID_BYTES hex digits): writes an RCPT_STATE record and
 * joins the pending batch exactly like spool_msg_end(), so the host runs
 * the same sync_begin/sync_end steps and done(owner, id, status) reports
 * it: status 0 means the index shows the new states and the message's due
 * time moved to the earliest next attempt of its PENDING recipients (no
 * due entry when none is left); -ENOENT means the message was removed in
 * between; otherwise as for spool_msg_end(). A failed update leaves the
 * message as it was in the index (its record may still replay in a
 * rebuild: updates are idempotent). u is read only during the call.
 * A message's records must stay in order, so only the shard named in its
 * id may update it. Returns 0, -EINVAL (malformed id, n_u 0 or above
 * SPOOL_MAX_RCPTS, rcpt out of range, bad state or attempts), -EXDEV
 * (another shard's message), -ENOENT (not in the index), -ENOMEM,
 * SPOOL_EINDEX, and the write errors of spool_msg_write().
 */
int spool_shard_update(struct spool_shard *sh, const char *id,
		       const struct spool_rcpt_update *u, size_t n_u, void *owner,
		       struct rm_err *err);

/*
 * spool_shard_done - remove message id (every recipient delivered or
 * bounced, or expired): writes a DONE record and joins the pending batch;
 * done(owner, id, 0) from spool_shard_sync_end() means it is gone from the
 * index (-ENOENT: it was already gone). Same rules and errors as
 * spool_shard_update(). XXX the content stays in its segment until segment
 * reclamation exists.
 */
int spool_shard_done(struct spool_shard *sh, const char *id, void *owner,
		     struct rm_err *err);

/*
 * spool_shard_sweep - unlink this shard's segments that no queued, pending
 * or open message needs any more (see DESIGN: Reclamation), clear the
 * LMDB reader slots of dead reader processes (they would pin old pages
 * and slowly fill the map), and queue copies of the few messages that
 * keep old segments alive (DESIGN: Moving) on the pending batch: the next
 * sync writes them and repoints the index, a later sweep unlinks what
 * they freed. Blocking: one unlink and one directory fsync per segment
 * removed, and reads of at most 8 MiB of old content, so call it now and
 * then, e.g. once a minute. Returns the number of segments removed,
 * -errno (unlinkat, fsync, reads), SPOOL_EINDEX, SPOOL_ECORRUPT (a
 * message to copy does not read back).
 */
int spool_shard_sweep(struct spool_shard *sh, struct rm_err *err);

/* spool_shard_n_moved - messages this shard copied out of old segments. */
uint64_t spool_shard_n_moved(const struct spool_shard *sh);

/*
 * spool_list - call cb for every queued message in id (arrival) order,
 * in one read txn (a consistent snapshot; the daemon keeps writing).
 * e and everything it points to are valid only during the call. cb may
 * call spool_read(), spool_shard_update() and spool_shard_done(), but not
 * spool_shard_sync_end() (its write txn must not nest in the read txn).
 * cb returns 0 to go on or anything else to stop; that value is returned.
 * Returns 0, cb's value, -ENOMEM, SPOOL_ECORRUPT (an index entry does not
 * parse), SPOOL_EVERSION, SPOOL_EINDEX.
 */
int spool_list(struct spool *sp,
	       int (*cb)(void *arg, const struct spool_entry *e), void *arg,
	       struct rm_err *err);

/*
 * spool_due - like spool_list(), but only messages whose next attempt is at
 * or before until_unix, earliest first (the delivery engine's scan); a
 * message with no PENDING recipient left is never due. e->shard names the
 * shard that must update or remove it. XXX messages of a shard number at
 * or above n_shards (the reactor count was lowered) cannot be updated
 * until it is raised again.
 */
int spool_due(struct spool *sp, int64_t until_unix,
	      int (*cb)(void *arg, const struct spool_entry *e), void *arg,
	      struct rm_err *err);

/*
 * spool_get - call cb once with the entry of message id (SPOOL_ID_BYTES
 * hex digits, NUL-terminated), as spool_list() would report it, in one
 * read txn; e is valid only during the call, and cb may do what a
 * spool_list() callback may. Any thread. Returns 0, cb's value, -EINVAL
 * (malformed id), -ENOENT (no such message), -ENOMEM, SPOOL_ECORRUPT,
 * SPOOL_EVERSION, SPOOL_EINDEX.
 */
int spool_get(struct spool *sp, const char *id,
	      int (*cb)(void *arg, const struct spool_entry *e), void *arg,
	      struct rm_err *err);

/*
 * spool_read - stream the content of message id (SPOOL_ID_BYTES hex
 * digits, NUL-terminated) to cb in order, in pieces of at most
 * SPOOL_CHUNK_BYTES; p is valid only during the call. Each chunk's crc32c
 * is checked before it is passed on, and the whole content against the
 * COMMIT checksum. cb returns 0 to go on, anything else to stop (returned).
 * Blocking file reads: call it off the reactor's hot path. Returns 0, cb's
 * value, -EINVAL (malformed id), -ENOENT (no such message), -ENOMEM,
 * -errno (open, pread), SPOOL_ECORRUPT, SPOOL_EINDEX.
 */
int spool_read(struct spool *sp, const char *id,
	       int (*cb)(void *arg, const void *p, size_t len), void *arg,
	       struct rm_err *err);

/*
 * struct spool_reader - the content of one message read piece by piece
 * (the delivery engine's body stream): bounded memory, one chunk at a
 * time, so a connection can stop when its socket is full and go on later.
 */
struct spool_reader;

/*
 * struct spool_fd_cache - segments kept open for the readers of one
 * thread, so that reading a fresh message costs one pread rather than an
 * open, a header read, a pread and a close. A slot is shared by the
 * readers that use it (refs) and closed only when no reader does: when a
 * miss needs the slot (least recently used first), or by
 * spool_fd_cache_trim(). When every slot is in use a reader opens the
 * segment for itself. A cached segment may be unlinked by the sweep
 * meanwhile; its disk space is freed when the slot is closed, so the
 * owner trims the cache now and then.
 */
#define SPOOL_FD_CACHE_SLOTS 4
struct spool_fd_cache {
	struct spool_fd_slot {
		int fd;                 /* -1: empty */
		unsigned shard;
		uint32_t seed;
		uint64_t seq;
		unsigned refs;
		uint64_t used;          /* tick of the last use */
	} slot[SPOOL_FD_CACHE_SLOTS];
	uint64_t tick;
};

/* spool_fd_cache_init - an empty cache. */
void spool_fd_cache_init(struct spool_fd_cache *c);
/* spool_fd_cache_trim - close every slot no reader uses. */
void spool_fd_cache_trim(struct spool_fd_cache *c);
/* spool_fd_cache_fini - close every slot; no reader may use c any more
 * (a slot still in use is our bug: panic). */
void spool_fd_cache_fini(struct spool_fd_cache *c);

/*
 * spool_reader_open - start reading message id. *out belongs to the
 * caller until spool_reader_close(). Its buffer is the size of the
 * message's largest chunk (at most SPOOL_CHUNK_BYTES). cache (may be
 * NULL: the reader opens and closes its segments itself) must outlive the
 * reader and belong to the calling thread. Returns 0, -EINVAL, -ENOENT,
 * -ENOMEM, SPOOL_ECORRUPT, SPOOL_EINDEX.
 */
int spool_reader_open(struct spool *sp, const char *id, struct spool_fd_cache *cache,
		      struct spool_reader **out, struct rm_err *err);

/*
 * spool_reader_next - the next piece: 1 with *p and *len set (valid until the
 * next call or the close; the chunk's crc32c checked), 0 at the end (the
 * whole content checked against the COMMIT's size and checksum), or a
 * negative code: -errno (open, pread), SPOOL_ECORRUPT. Blocking preads
 * (page-cache hits for fresh mail).
 */
int spool_reader_next(struct spool_reader *rd, const uint8_t **p, size_t *len,
		      struct rm_err *err);

/* spool_reader_close - free rd; NULL does nothing. */
void spool_reader_close(struct spool_reader *rd);

#endif
