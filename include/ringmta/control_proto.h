/*
 * control_proto.h - the wire format of the daemon's control socket
 * (<spool_dir>/control), shared by the daemon (control.c) and the
 * `ringmta queue` client (admin.c). Pure: no I/O, no allocation.
 *
 * A connection carries exactly one request and one reply, then the daemon
 * closes it.
 *
 *   request = verb [ SP id ] LF              (at most 64 bytes)
 *   verb    = "hold" / "release" / "delete" / "flush"
 *   id      = 16 lowercase hex digits        (a queue id, spool.h)
 *   reply   = "ok" SP text LF
 *           / "error" SP kind SP text LF     (at most 1024 bytes)
 *   kind    = "bad-request" / "not-found" / "busy" / "wrong-state"
 *           / "denied" / "unavailable" / "failed"
 *
 * hold, release and delete need an id; flush takes one or none (none:
 * every message). Strict: lowercase verbs, exactly one SP, no CR, no
 * trailing blanks, no other bytes after the LF; anything else is a
 * "bad-request". Text is printable ASCII (the daemon writes only its own
 * words and queue ids); a client must still print it escaped.
 */
#ifndef RINGMTA_CONTROL_PROTO_H
#define RINGMTA_CONTROL_PROTO_H

#include <stdbool.h>
#include <stddef.h>

#include "ringmta/spool.h"

/* CONTROL_PROTO_MAX_REQUEST_BYTES - the longest request ("release" SP id
 * LF) is 25 bytes; room for future verbs, small enough that a client can
 * never make the daemon buffer anything worth mentioning. */
#define CONTROL_PROTO_MAX_REQUEST_BYTES 64
/* CONTROL_PROTO_MAX_REPLY_BYTES - one status line with a short text. */
#define CONTROL_PROTO_MAX_REPLY_BYTES 1024

/* enum control_proto_cmd - what a request asks for. */
enum control_proto_cmd {
	CONTROL_PROTO_HOLD = 1,       /* hold ID */
	CONTROL_PROTO_RELEASE,        /* release ID */
	CONTROL_PROTO_DELETE,         /* delete ID */
	CONTROL_PROTO_FLUSH,          /* flush ID */
	CONTROL_PROTO_FLUSH_ALL,      /* flush */
};

/* struct control_proto_request - a parsed request; id is "" for FLUSH_ALL. */
struct control_proto_request {
	enum control_proto_cmd cmd;
	char id[SPOOL_ID_BYTES + 1];
};

/*
 * enum control_proto_status - the outcome of a request; the reply's kind
 * token (control_proto_status_name()). Values are ours, never on the wire.
 */
enum control_proto_status {
	CONTROL_PROTO_OK = 0,
	CONTROL_PROTO_BAD_REQUEST,    /* the request does not parse */
	CONTROL_PROTO_NOT_FOUND,      /* no such message */
	CONTROL_PROTO_BUSY,           /* being delivered: try again */
	CONTROL_PROTO_WRONG_STATE,    /* e.g. release of a message not held */
	CONTROL_PROTO_DENIED,         /* peer is neither root nor the daemon's user */
	CONTROL_PROTO_UNAVAILABLE,    /* stopping, timed out, shard not running */
	CONTROL_PROTO_FAILED,         /* the spool failed (disk, index) */
	CONTROL_PROTO_N_STATUS
};

/*
 * Parse errors (control_proto_request_parse()); control_proto_strerror()
 * words them for the reply text.
 */
enum control_proto_error {
	CONTROL_PROTO_ETOOLONG = -1,  /* no LF within CONTROL_PROTO_MAX_REQUEST_BYTES */
	CONTROL_PROTO_EBYTE = -2,     /* NUL, CR or another control/8-bit byte */
	CONTROL_PROTO_EVERB = -3,     /* unknown verb */
	CONTROL_PROTO_EARGS = -4,     /* missing or extra argument, bad spacing */
	CONTROL_PROTO_EID = -5,       /* not 16 lowercase hex digits */
	CONTROL_PROTO_ETRAILING = -6, /* bytes after the LF */
};

/*
 * control_proto_request_parse - parse the request in buf[0..len) (not
 * NUL-terminated; nothing is read past len). The whole buffer must be
 * exactly one request line. Returns len when it is, with *out filled;
 * 0 when no LF has arrived yet and len is below the maximum (read more);
 * or a negative enum control_proto_error (*out undefined).
 */
int control_proto_request_parse(const char *buf, size_t len,
				struct control_proto_request *out);

/*
 * control_proto_request_format - write the request line for cmd and id
 * (NULL or "" for FLUSH_ALL) into out (cap bytes, NUL-terminated).
 * Returns its length (without the NUL), or -EINVAL when cmd or id is not
 * valid (id must already be 16 lowercase hex digits) or it does not fit.
 */
int control_proto_request_format(char *out, size_t cap,
				 enum control_proto_cmd cmd, const char *id);

/*
 * control_proto_reply_format - write the reply line for status and text
 * (NUL-terminated, ours) into out (cap bytes, NUL-terminated). Bytes of
 * text that are not printable ASCII become '?', and text is cut to fit.
 * Returns the length written (without the NUL); 0 when cap is too small
 * even for the status.
 */
size_t control_proto_reply_format(char *out, size_t cap,
				  enum control_proto_status status,
				  const char *text);

/*
 * control_proto_reply_parse - parse a reply in buf[0..len) (the daemon
 * closes after it, so this is everything read). *status gets the outcome;
 * *text and *text_len the text, pointing into buf (valid as long as buf),
 * without the LF. Returns 0, or -EINVAL when the reply is malformed (no
 * LF, unknown status or kind, over CONTROL_PROTO_MAX_REPLY_BYTES).
 */
int control_proto_reply_parse(const char *buf, size_t len,
			      enum control_proto_status *status,
			      const char **text, size_t *text_len);

/* control_proto_status_name - the kind token, or "ok"; static string. */
const char *control_proto_status_name(enum control_proto_status status);

/* control_proto_strerror - text for an enum control_proto_error. */
const char *control_proto_strerror(int code);

/* control_proto_cmd_name - the verb of cmd ("flush" for both flushes). */
const char *control_proto_cmd_name(enum control_proto_cmd cmd);

/* control_proto_is_id - whether s[0..len) is 16 lowercase hex digits. */
bool control_proto_is_id(const char *s, size_t len);

#endif
