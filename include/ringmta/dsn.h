/*
 * dsn.h - delivery status notifications (RFC 3464, RFC 3461, RFC 6533):
 * compose a bounce (failed), a delay warning (delayed) or a success
 * notice for one message, incrementally, into buffers the host supplies.
 *
 * Pure: libc only; no clocks, files or allocation. Every time, the
 * Message-ID and the MIME boundary come from the host.
 *
 * DESIGN
 *
 * The DSN is a multipart/report; report-type=delivery-status with three
 * parts (RFC 6522): a human-readable text/plain, the machine-readable
 * message/delivery-status (per-message fields, then one group of fields
 * per recipient), and the original: its header section as
 * text/rfc822-headers (RET=HDRS, RET absent, or any non-failure DSN: RFC
 * 3461 4.3) or the whole message as message/rfc822 (RET=FULL on a
 * failure). With SMTPUTF8 (RFC 6533) the types are message/global-*
 * and non-ASCII addresses are typed "utf-8".
 *
 * Streaming. The original may be 10 MB; it is never held. dsn_write()
 * works like zlib's deflate(): the host passes the original's content
 * (as stored in the spool: CRLF lines, not dot-stuffed) in whatever chunks
 * it reads, plus an output buffer of any size >= 1, and gets back how much
 * input was used and output written. The generated parts (head and tail)
 * are formatted one bounded item at a time into a staging area inside
 * struct dsn_writer (at most DSN_STAGE_BYTES), so memory is fixed
 * whatever the number of recipients. With headers only, input after the
 * end of the original's header section is not used: the host can stop
 * reading there.
 *
 * Safety. Every string that reaches a header or the report (addresses,
 * ORCPT, ENVID, host names, the remote reply) is sanitized: CR, LF, TAB
 * and runs of white space become one space (no header or MIME part can be
 * injected), other control bytes become '?', 8-bit bytes stay only when
 * they are valid UTF-8 and the message is SMTPUTF8, and each is cut to a
 * fixed cap. Fields are folded at white space near 78 columns and never
 * exceed 998 octets per line (RFC 5322 2.1.1); a longer word is broken.
 * A line of the original that starts with "--" and the boundary would end
 * the part early, so dsn_write() fails with DSN_E_BOUNDARY instead: the
 * host starts over with another boundary.
 *
 * The DSN itself goes out with the null reverse-path "<>" (RFC 3464 2,
 * RFC 5321 4.5.5), so it is never bounced in turn; dsn_should_notify()
 * also refuses to notify a null sender.
 *
 * Use (the delivery engine; error handling shortened):
 *
 *	if (!dsn_should_notify(e->sender, rcpt->notify, DSN_KIND_FAILURE))
 *		return;				   // drop silently: RFC 3461
 *	dsn_boundary_format(b, sizeof(b), e->id, now, random64(), attempt);
 *	dsn_message_id_format(mid, sizeof(mid), now, new_id, myhostname);
 *	rc = dsn_init(&w, &msg);		   // msg points at b, mid, ...
 *	dsn_envelope(&w, &body, &smtputf8);	   // MAIL FROM:<> BODY=body
 *	do {					   // in/in_len: spool_read() chunk
 *		rc = dsn_write(&w, in, in_len, is_last_chunk, out, cap,
 *			       &used, &n);
 *		spool_msg_write(dsn_msg, out, n, err);
 *		in += used, in_len -= used;
 *		if (rc == DSN_NEED_ORIGINAL)
 *			read the next chunk into in/in_len;
 *	} while (rc == DSN_OUT_FULL || rc == DSN_NEED_ORIGINAL);
 *	if (rc == DSN_E_BOUNDARY)
 *		abort dsn_msg, attempt++, start over;
 */
#ifndef RINGMTA_DSN_H
#define RINGMTA_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringmta/spool.h"

/* DSN_BOUNDARY_MAX - RFC 2046 5.1.1: a boundary is 1 to 70 characters. */
#define DSN_BOUNDARY_MAX 70
/* DSN_LINE_MAX - RFC 5322 2.1.1: at most 998 octets per line plus CRLF. */
#define DSN_LINE_MAX 998
/* DSN_FOLD_COLUMN - RFC 5322 2.1.1: lines SHOULD stay within 78 octets. */
#define DSN_FOLD_COLUMN 78
/* DSN_DIAG_MAX - the remote reply kept in a DSN: smtp_client keeps at most
 * a few KB; 2 KB keeps a DSN readable and still holds every reply seen
 * in practice (a cut one ends in "..."). */
#define DSN_DIAG_MAX 2048
/* DSN_ADDR_MAX - an address: RFC 5321 4.5.3.1.3 path of 256 octets, with
 * room for the UTF-8 of RFC 6531. */
#define DSN_ADDR_MAX 320
/* DSN_ORCPT_MAX - RFC 3461 4.2: ORCPT is at most 500 characters. */
#define DSN_ORCPT_MAX 500
/* DSN_ENVID_MAX - RFC 3461 4.4: ENVID is at most 100 characters. */
#define DSN_ENVID_MAX 100
/* DSN_HOST_MAX - RFC 1035 2.3.4: a domain name is at most 255 octets. */
#define DSN_HOST_MAX 255
/* DSN_MSGID_MAX - a Message-ID the host supplies, with its "<>". */
#define DSN_MSGID_MAX 250
/* DSN_STAGE_BYTES - the staging area: the largest item (one recipient's
 * report: addresses, host and a DSN_DIAG_MAX reply, folded) is < 5 KB. */
#define DSN_STAGE_BYTES 8192
/* DSN_DATE_BYTES - "Thu, 01 Jan 1970 00:00:00 +0000" and a NUL. */
#define DSN_DATE_BYTES 32

/*
 * Error codes (-1100...; apart from -errno and the other modules' ranges).
 */
enum dsn_err {
	DSN_E_INVALID = -1100,	 /* dsn_init(): a required field missing or malformed */
	DSN_E_NULL_SENDER,	 /* dsn_init(): sender is "<>": never bounce a bounce */
	DSN_E_BOUNDARY,		 /* the original holds a line starting "--boundary" (sticky) */
	DSN_E_STATE,		 /* dsn_write() after DSN_DONE (sticky) */
};

/* Results of dsn_write() other than errors. */
enum dsn_result {
	DSN_OUT_FULL = 1,	/* out is full: drain it and call again */
	DSN_NEED_ORIGINAL,	/* all input used: pass more of the original (or is_end) */
	DSN_DONE,		/* the DSN is complete; *out_len holds its last bytes */
};

/* enum dsn_kind - what the notification reports; picks Subject and text. */
enum dsn_kind {
	DSN_KIND_FAILURE = 0,	/* "Undelivered Mail Returned to Sender" */
	DSN_KIND_DELAY,		/* "Delayed Mail (still being retried)" */
	DSN_KIND_SUCCESS,	/* "Successful Mail Delivery Report" */
};

/* enum dsn_action - RFC 3464 2.3.3 Action values. */
enum dsn_action {
	DSN_ACTION_FAILED = 0,
	DSN_ACTION_DELAYED,
	DSN_ACTION_DELIVERED,
	DSN_ACTION_RELAYED,	/* to a peer without DSN support (RFC 3461 5.2.2) */
	DSN_ACTION_EXPANDED,
};

/*
 * struct dsn_rcpt - one recipient to report. All strings are borrowed,
 * NUL-terminated (diag: diag_len bytes, any bytes), and must stay valid
 * until dsn_write() returns DSN_DONE or an error.
 * addr: the envelope recipient (Final-Recipient). Required.
 * orcpt: the ORCPT parameter as received, "addr-type;xtext", or NULL.
 * status: RFC 3463 code, e.g. "5.1.1". Required.
 * remote_mta: the host that answered (Remote-MTA), or NULL.
 * reply_code: the SMTP reply code of diag (Diagnostic-Code: smtp; 550 ...)
 *   or 0 when diag is our own text (Diagnostic-Code: X-ringmta; ...).
 * reply_esc: the enhanced code stripped from the reply text, or NULL/"".
 * diag, diag_len: the reply text (lines joined by '\n') or NULL.
 * last_attempt_unix: Last-Attempt-Date; 0 omits it.
 * retry_until_unix: Will-Retry-Until, written only for DELAYED; 0 omits.
 */
struct dsn_rcpt {
	const char *addr;
	const char *orcpt;
	enum dsn_action action;
	const char *status;
	const char *remote_mta;
	unsigned reply_code;
	const char *reply_esc;
	const char *diag;
	size_t diag_len;
	int64_t last_attempt_unix;
	int64_t retry_until_unix;
};

/*
 * struct dsn_msg - the notification to compose. Borrowed by dsn_init()
 * for the writer's lifetime (until DSN_DONE or an error), with everything
 * it points to.
 * kind: enum dsn_kind. myhostname: Reporting-MTA and the From: domain.
 * sender: the original envelope sender, the DSN's To: (and the host's
 *   RCPT TO); "" (null sender) is refused. envid: ENVID xtext or NULL.
 * ret: enum spool_ret; body: enum spool_body; smtputf8: the original
 *   was SMTPUTF8 (RFC 6533 types). arrival_unix: Arrival-Date (0 omits).
 * queue_id: the original's queue id (X-ringmta-Queue-ID) or NULL.
 * message_id: the DSN's Message-ID, with "<>"; required.
 * boundary: 1..DSN_BOUNDARY_MAX of [0-9A-Za-z'()+_,-./:=?]; required;
 *   unique enough not to appear in the original (else DSN_E_BOUNDARY).
 * date_unix: the DSN's Date.
 * has_original: false when the host cannot supply the original (no
 *   third part is written and no input is asked for).
 * original_size, max_full_bytes: a RET=FULL original larger than
 *   max_full_bytes (0 = no limit) is returned as headers only (as
 *   Postfix's bounce_size_limit); so is a BINARYMIME one (it cannot be
 *   carried in message/rfc822 without BINARYMIME end to end).
 * rcpts, n_rcpts: at least one.
 */
struct dsn_msg {
	enum dsn_kind kind;
	const char *myhostname;
	const char *sender;
	const char *envid;
	int ret;
	int body;
	bool smtputf8;
	int64_t arrival_unix;
	const char *queue_id;
	const char *message_id;
	const char *boundary;
	int64_t date_unix;
	bool has_original;
	uint64_t original_size;
	uint64_t max_full_bytes;
	const struct dsn_rcpt *rcpts;
	size_t n_rcpts;
};

/* enum dsn_original - which form of the original a DSN carries. */
enum dsn_original {
	DSN_ORIGINAL_NONE = 0,
	DSN_ORIGINAL_HEADERS,	/* text/rfc822-headers (message/global-headers) */
	DSN_ORIGINAL_FULL,	/* message/rfc822 (message/global) */
};

/*
 * struct dsn_writer - the state of one DSN being written. The caller owns
 * the storage (stack, arena); fields are private.
 */
struct dsn_writer {
	const struct dsn_msg *m;
	int err;		/* sticky negative code, 0 when fine */
	uint8_t phase;
	uint8_t original;	/* enum dsn_original */
	uint8_t hdr_state;	/* end-of-header detection in the original */
	bool is_8bit;		/* the DSN carries 8-bit bytes */
	bool is_full_cut;	/* RET=FULL asked, headers returned */
	uint8_t blen;		/* strlen(m->boundary) */
	int bmatch;		/* "--boundary" matched at a line start, -1 none */
	size_t rcpt_i;
	size_t stage_len;
	size_t stage_off;
	char stage[DSN_STAGE_BYTES];
};

/*
 * dsn_should_notify - RFC 3461 4.1: should a DSN of kind be sent for a
 * recipient with NOTIFY bits notify (SPOOL_NOTIFY_*, 0 = parameter absent)
 * of a message from sender? Never for the null sender "" (or NULL): a
 * bounce is never bounced. NEVER: no. Absent: failures and delays (the
 * RFC's default, as Postfix and Exim do). Otherwise only the kinds named.
 * Ask with DSN_KIND_SUCCESS also after relaying to a peer that did not
 * offer DSN (RFC 3461 4.1, 5.2.2): a yes means a success notice with
 * Action: relayed (DSN_ACTION_RELAYED), since no notice will come later.
 */
bool dsn_should_notify(const char *sender, unsigned notify,
		       enum dsn_kind kind);

/*
 * dsn_init - set up w to write the DSN m describes. m and everything it
 * points to are borrowed until dsn_write() returns DSN_DONE or an error.
 * Returns 0, DSN_E_NULL_SENDER, or DSN_E_INVALID (m NULL, bad kind, no
 * myhostname, message_id or recipients, a bad boundary, a recipient
 * without addr or with a malformed status, a bad action).
 */
int dsn_init(struct dsn_writer *w, const struct dsn_msg *m);

/*
 * dsn_original - the form of the original w will carry (after dsn_init).
 * The host can skip reading the spool when it is DSN_ORIGINAL_NONE.
 */
enum dsn_original dsn_original(const struct dsn_writer *w);

/*
 * dsn_envelope - how the host must inject the DSN: *body is the BODY=
 * (enum spool_body: SPOOL_BODY_8BITMIME when the DSN carries 8-bit
 * bytes, else SPOOL_BODY_7BIT) and *smtputf8 whether it needs SMTPUTF8.
 * The reverse-path is always "<>" and the only recipient m->sender.
 */
void dsn_envelope(const struct dsn_writer *w, int *body, bool *smtputf8);

/*
 * dsn_write - produce more of the DSN. in[0..in_len): the next bytes of
 * the original's content, exactly as stored (may be NULL/0, e.g. while
 * the head is written); is_end: in ends the original. out[0..out_cap):
 * where to write (out_cap >= 1). *in_used gets the input bytes used (the
 * host passes the rest again next time), *out_len the bytes written.
 * Returns DSN_OUT_FULL (out is full; call again), DSN_NEED_ORIGINAL (all
 * of in was used and more is wanted; never after is_end), DSN_DONE (the
 * DSN is complete; later calls fail with DSN_E_STATE), or a sticky error:
 * DSN_E_BOUNDARY (start over with dsn_init() and another boundary) or
 * DSN_E_STATE. The output is CRLF text, not dot-stuffed, every line at
 * most DSN_LINE_MAX octets except lines copied from the original.
 */
int dsn_write(struct dsn_writer *w, const uint8_t *in, size_t in_len,
	      bool is_end, uint8_t *out, size_t out_cap, size_t *in_used,
	      size_t *out_len);

/*
 * dsn_date_format - RFC 5322 3.3 date-time of unix_s in UTC ("Mon, 23 Nov
 * 2026 18:54:59 +0000") into out (cap >= DSN_DATE_BYTES), NUL-terminated.
 * Returns out.
 */
char *dsn_date_format(int64_t unix_s, char *out, size_t cap);

/* DSN_ID_BYTES - room for a dsn_message_id_format() result and its NUL:
 * "<" 14 digits "." id "@" host ">" with a 64-byte id and 255-byte host. */
#define DSN_ID_BYTES 340

/*
 * dsn_boundary_format - a boundary for one DSN: "=_ringmta_" queue_id
 * (at most 16 bytes of it, [0-9A-Za-z] only) "_" unix_s "_" salt (16 hex
 * digits) "_" attempt, at most DSN_BOUNDARY_MAX bytes, into out (cap >=
 * DSN_BOUNDARY_MAX + 1), NUL-terminated. salt: a random value from the
 * host (so that senders cannot predict the boundary and plant it in the
 * original); attempt: 0, then +1 each time dsn_write() returned
 * DSN_E_BOUNDARY. "=_" can never occur in quoted-printable or base64
 * text, so encoded bodies cannot collide by chance. Returns out.
 */
char *dsn_boundary_format(char *out, size_t cap, const char *queue_id,
			  int64_t unix_s, uint64_t salt, unsigned attempt);

/*
 * dsn_message_id_format - a Message-ID for a DSN: "<" YYYYMMDDhhmmss "."
 * queue_id "@" myhostname ">" (RFC 5322 3.6.4), the date in UTC, queue_id
 * and myhostname cut to 64 and 255 bytes and reduced to [0-9A-Za-z.-],
 * into out (cap >= DSN_ID_BYTES), NUL-terminated. queue_id should be the
 * DSN's own queue id, which is unique. Returns out.
 */
char *dsn_message_id_format(char *out, size_t cap, int64_t unix_s,
			    const char *queue_id, const char *myhostname);

/* dsn_strerror - constant text for a dsn_err code or dsn_result. */
const char *dsn_strerror(int code);

#endif
