/*
 * smtp_server.h - the inbound SMTP session state machine, sans-I/O.
 *
 * The host (the reactor glue) owns the socket, the clock and the spool;
 * this module owns the protocol. The flow, one session:
 *
 *     smtp_server_init(s, &lim);
 *     smtp_server_start(s, SMTP_REPLY_GREETING);
 *     loop:
 *         n = smtp_server_feed(s, buf, len);   keep buf[n..len) for later
 *         while ((k = smtp_server_next(s, &ev)) != NEED_MORE) {
 *             HELO, REJECT      log it
 *             MAIL, RCPT        decide, smtp_server_answer(s, id, NULL)
 *             DATA_BEGIN        open a spool message, answer OK or 4xx
 *             BODY              append ev.data[0..ev.len) to it
 *             DATA_END          commit; answer QUEUED with the queue id
 *                               (may be much later: _next returns WAIT)
 *             DATA_ABORT        drop the spool message
 *             STARTTLS          answer TLS_GO (then handshake) or
 *                               TLS_UNAVAILABLE
 *             WAIT              stop; come back after answering
 *             FLUSH             send smtp_server_output(), output_done()
 *             CLOSE             send the output, then close the socket
 *         }
 *         send smtp_server_output(), smtp_server_output_done()
 *     smtp_server_fini(s);
 *
 * Backpressure: _feed copies into a fixed input buffer
 * (SMTP_SERVER_IN_BYTES) and takes only what fits. Nothing is consumed
 * from it while an answer is pending or the output is full (FLUSH), so it
 * fills and _feed takes less and less, down to nothing. The host must then
 * stop reading and keep the untaken bytes. Whenever _next returns
 * NEED_MORE, there is room for more input.
 *
 * Output: replies accumulate in a fixed buffer (SMTP_SERVER_OUT_BYTES) and
 * go out in batches (RFC 2920 PIPELINING): the host should send whatever
 * smtp_server_output() holds whenever _next returns NEED_MORE, WAIT, FLUSH
 * or CLOSE. Replies always come out whole and in command order.
 *
 * Chunking does not matter: the same bytes fed in any split produce the
 * same events and the same output bytes (tested at every offset).
 *
 * Strictness (RFC 5321 2.3.8, SMTP smuggling): a line ends with CRLF only.
 * A bare CR or LF never ends a command or the data; in DATA the message is
 * rejected (550 5.6.0) but the stream is read on to the real CRLF.CRLF, so
 * one DATA can never yield two messages. Leniencies are named flags in
 * struct smtp_server_limits, all off by default.
 *
 * Failures: a peer can never make this module abort. Host bugs end in
 * rm_panic(): calling _feed/_next before smtp_server_start(), answering
 * when nothing is pending (e.g. answering twice). Harmless and ignored:
 * feeding after CLOSE (takes 0), answering after eof/timeout/CLOSE.
 * CLOSE is sticky: once returned, _next returns it forever.
 *
 * Memory: struct smtp_server is self-contained (no heap), about 7 KiB;
 * smtp_server_size() gives the exact figure.
 */
#ifndef RINGMTA_SMTP_SERVER_H
#define RINGMTA_SMTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringmta/data.h"
#include "ringmta/smtp_proto.h"

/*
 * SMTP_SERVER_IN_BYTES - the input buffer. It bounds a command line: the
 * effective command line limit is min(max_line_bytes, this). RFC 5321
 * 4.5.3.1.4 allows 512; ESMTP parameters (RFC 1869 4.1.2) and long UTF-8
 * paths push real clients to about 1 KiB. Data lines are not buffered, so
 * max_line_bytes may exceed this for them.
 */
#define SMTP_SERVER_IN_BYTES 4096
/*
 * SMTP_SERVER_OUT_BYTES - the output buffer. The longest reply we build is
 * the EHLO list (about 220 octets with a 255-octet hostname: < 480); a
 * pipelined batch of 100 short replies fits in 2 KiB.
 */
#define SMTP_SERVER_OUT_BYTES 2048
/* SMTP_SERVER_HELO_MAX - the HELO/EHLO argument we keep (RFC 5321 4.5.3.1.2). */
#define SMTP_SERVER_HELO_MAX 255
/* SMTP_SERVER_QUEUE_MAX - informational events one step can queue (REJECT, DATA_ABORT, REJECT). */
#define SMTP_SERVER_QUEUE_MAX 4
/*
 * SMTP_SERVER_REPLY_RESERVE - output room a command needs before it is
 * read: its replies (the EHLO list < 480, or a reply plus 354 plus a final
 * reply plus 421, or a RCPT reply quoting a 254-octet address, < 360, plus
 * 421) always fit, so answers never find the buffer full.
 */
#define SMTP_SERVER_REPLY_RESERVE 640
/* SMTP_SERVER_ARG_MAX - longest argument an answer may substitute: a
 * queue id, or a recipient address (RCPT_UNLISTED, RCPT_UNVERIFIED, RCPT_UNDELIVERABLE). */
#define SMTP_SERVER_ARG_MAX SMTP_PROTO_PATH_MAX

/*
 * struct smtp_server_limits - configuration, copied by smtp_server_init()
 * (except hostname, which is borrowed). Fill with
 * smtp_server_limits_default() and then change what you need.
 */
struct smtp_server_limits {
	const char *hostname;        /* myhostname: greeting, EHLO reply, Received; borrowed for the session's lifetime; NUL-terminated, <= 255 octets */
	size_t max_line_bytes;       /* line_length_limit: command lines and data lines, including CRLF; default 2048 (command lines also capped at SMTP_SERVER_IN_BYTES) */
	uint64_t max_message_bytes;  /* message_size_limit: decoded octets incl. CRLFs (RFC 1870); default 10240000; announced in EHLO SIZE */
	unsigned max_rcpt;           /* recipient_limit: accepted recipients per transaction; default 1000; beyond: 452 4.5.3 */
	unsigned max_errors;         /* error budget, default 10: the reply to the max_errors-th error is followed by 421 4.7.0 and CLOSE. Errors: every command the server refuses itself (except 452 too many recipients), 5xx answers to MAIL/RCPT, rejected messages */
	bool offer_starttls;         /* seam for TLS: advertise STARTTLS and emit SMTP_SERVER_EV_STARTTLS (default false) */
	bool offer_auth;             /* seam for AUTH, not implemented: must stay false */
	bool lenient_bare_lf;        /* a bare LF ends a command line / data line (normalised to CRLF); the data still ends only at CRLF.CRLF (default false) */
	bool lenient_bare_cr;        /* a bare CR in data is content, not an error (default false); commands never accept it */
	bool lenient_8bit;           /* accept 8-bit data in a message without BODY=8BITMIME/SMTPUTF8 (default false) */
	bool lenient_space_after_colon; /* accept "MAIL FROM: <a@b>" (default false) */
};

/* smtp_server_limits_default - fill lim with the defaults above; hostname "localhost". */
void smtp_server_limits_default(struct smtp_server_limits *lim);

/* enum smtp_server_ev_kind - what smtp_server_next() returns. */
enum smtp_server_ev_kind {
	SMTP_SERVER_EV_NEED_MORE = 0, /* all fed input consumed: flush output, feed more */
	SMTP_SERVER_EV_WAIT,          /* an event awaits smtp_server_answer(); nothing until then */
	SMTP_SERVER_EV_FLUSH,         /* output full: send output, output_done(), call _next again */
	SMTP_SERVER_EV_HELO,          /* informational: ev.helo, ev.is_ehlo */
	SMTP_SERVER_EV_MAIL,          /* answer: ev.path (reverse-path), ev.mail */
	SMTP_SERVER_EV_RCPT,          /* answer: ev.path (forward-path), ev.rcpt */
	SMTP_SERVER_EV_DATA_BEGIN,    /* answer: open a spool message; ev.is_bdat */
	SMTP_SERVER_EV_BODY,          /* ev.data, ev.len: message bytes; no answer */
	SMTP_SERVER_EV_DATA_END,      /* answer: the message is complete; ev.message_bytes */
	SMTP_SERVER_EV_DATA_ABORT,    /* drop the spool message; ev.abort says why; no answer */
	SMTP_SERVER_EV_STARTTLS,      /* answer: SMTP_REPLY_TLS_GO or SMTP_REPLY_TLS_UNAVAILABLE */
	SMTP_SERVER_EV_REJECT,        /* informational: ev.reject, ev.reply, ev.sample */
	SMTP_SERVER_EV_CLOSE,         /* sticky: send the remaining output, then close */
};

/* enum smtp_server_abort - why a DATA_ABORT happened. */
enum smtp_server_abort {
	SMTP_SERVER_ABORT_NONE = 0,
	SMTP_SERVER_ABORT_BARE_LF,      /* bare LF in the message (reply 550 5.6.0 at its end) */
	SMTP_SERVER_ABORT_BARE_CR,      /* bare CR in the message (reply 550 5.6.0) */
	SMTP_SERVER_ABORT_LINE_TOO_LONG,/* a data line > max_line_bytes (550 5.6.0) */
	SMTP_SERVER_ABORT_TOO_BIG,      /* > max_message_bytes (552 5.3.4) */
	SMTP_SERVER_ABORT_8BIT,         /* 8-bit data in a 7BIT message (550 5.6.0) */
	SMTP_SERVER_ABORT_RSET,         /* RSET (or EHLO/HELO) between BDAT chunks */
	SMTP_SERVER_ABORT_EOF,          /* peer closed inside the message */
	SMTP_SERVER_ABORT_TIMEOUT,      /* smtp_server_timeout() inside the message */
	SMTP_SERVER_ABORT_SHUTDOWN,     /* smtp_server_shutdown() between BDAT chunks */
	SMTP_SERVER_ABORT_BDAT_SYNTAX,  /* malformed BDAT between chunks (then CLOSE) */
	SMTP_SERVER_ABORT_QUIT,         /* QUIT between BDAT chunks */
	SMTP_SERVER_ABORT_ERRORS,       /* error budget spent between BDAT chunks */
};

/* enum smtp_server_reject - why the server itself refused a command. */
enum smtp_server_reject {
	SMTP_SERVER_REJECT_NONE = 0,
	SMTP_SERVER_REJECT_UNKNOWN_CMD,   /* verb not recognised */
	SMTP_SERVER_REJECT_NOT_IMPL,      /* EXPN, TURN, ETRN, AUTH, STARTTLS not offered */
	SMTP_SERVER_REJECT_SYNTAX,        /* arguments malformed */
	SMTP_SERVER_REJECT_BAD_CHAR,      /* NUL, 8-bit outside an SMTPUTF8 path */
	SMTP_SERVER_REJECT_BARE_LINE_END, /* bare CR/LF inside a command line */
	SMTP_SERVER_REJECT_LINE_TOO_LONG, /* command line > limit */
	SMTP_SERVER_REJECT_SEQUENCE,      /* command out of order */
	SMTP_SERVER_REJECT_PARAM,         /* unknown/duplicate/invalid ESMTP parameter */
	SMTP_SERVER_REJECT_PATH,          /* bad path syntax/length, UTF-8 without SMTPUTF8 */
	SMTP_SERVER_REJECT_SIZE,          /* MAIL SIZE= over the limit */
	SMTP_SERVER_REJECT_TOO_MANY_RCPT, /* max_rcpt reached */
	SMTP_SERVER_REJECT_NO_RCPT,       /* DATA/BDAT with no accepted recipient */
	SMTP_SERVER_REJECT_TXN_FAILED,    /* BDAT after a failed chunk */
	SMTP_SERVER_REJECT_TOO_MANY_ERRORS, /* the error budget is spent: CLOSE follows */
};

/*
 * struct smtp_server_ev - one event. Only the fields named for the kind are
 * meaningful. Pointer lifetimes:
 *  - helo: until the next HELO/EHLO or smtp_server_fini().
 *  - path+mail (MAIL): until the transaction ends (RSET, HELO/EHLO, the
 *    answer to DATA_END, a refused MAIL, or fini).
 *  - path+rcpt (RCPT): until smtp_server_answer() for that RCPT.
 *  - data (BODY), sample (REJECT): until the next _feed or _next call.
 */
struct smtp_server_ev {
	enum smtp_server_ev_kind kind;
	const char *helo;                           /* HELO: the name (printable ASCII, NUL-terminated) */
	bool is_ehlo;                               /* HELO: EHLO rather than HELO */
	const struct smtp_proto_path *path;         /* MAIL, RCPT */
	const struct smtp_proto_mail_params *mail;  /* MAIL (also valid at RCPT, DATA_*) */
	const struct smtp_proto_rcpt_params *rcpt;  /* RCPT */
	bool is_bdat;                               /* DATA_BEGIN: started by BDAT */
	const uint8_t *data;                        /* BODY */
	size_t len;                                 /* BODY */
	uint64_t message_bytes;                     /* DATA_END: decoded size */
	enum smtp_server_abort abort;               /* DATA_ABORT */
	enum smtp_server_reject reject;             /* REJECT */
	enum smtp_reply_id reply;                   /* REJECT: the reply sent */
	const char *reason;                         /* REJECT, DATA_ABORT: constant name, e.g. "line_too_long" */
	const char *sample;                         /* REJECT: the offending line, printable (\xHH escapes), from <= 64 input octets; an AUTH line is masked to "AUTH ***" */
};

/* enum smtp_server_state - where the session is (for logs: smtp_server_action()). */
enum smtp_server_state {
	SMTP_SERVER_S_INIT = 0,   /* before smtp_server_start() */
	SMTP_SERVER_S_CMD,        /* reading a command line */
	SMTP_SERVER_S_SKIP,       /* discarding the rest of an over-long line */
	SMTP_SERVER_S_DATA,       /* reading DATA up to CRLF.CRLF */
	SMTP_SERVER_S_BDAT,       /* reading a BDAT chunk */
	SMTP_SERVER_S_CLOSED,     /* CLOSE returned; sticky */
};

/*
 * struct smtp_server - one session. The host allocates it (any alignment
 * of a struct) and treats every field as private; it is public only so it
 * can be embedded.
 */
struct smtp_server {
	struct smtp_server_limits lim;
	enum smtp_server_state state;
	/* the event awaiting an answer (MAIL, RCPT, DATA_BEGIN, DATA_END,
	 * STARTTLS), or SMTP_SERVER_EV_NEED_MORE when none */
	enum smtp_server_ev_kind pending;
	/* informational events to hand out before anything else (FIFO) */
	struct smtp_server_qev {
		uint8_t kind, abort, reject, reply;
	} q[SMTP_SERVER_QUEUE_MAX];
	uint8_t q_head, q_len;
	bool close_after_flush;       /* CLOSE once the queue is empty */
	bool is_greeted;              /* HELO/EHLO seen */
	bool is_ehlo;
	bool is_tls;                  /* STARTTLS answered TLS_GO */
	bool has_mail;                /* MAIL accepted: a transaction is open */
	bool is_msg_open;             /* DATA_BEGIN accepted, no END/ABORT yet */
	bool is_bdat_txn;             /* the message is being sent with BDAT */
	bool is_txn_failed;           /* a BDAT message failed: refuse until LAST/RSET */
	bool is_chunk_discard;        /* S_BDAT: drop this chunk, then reply chunk_reply */
	bool is_shutdown;             /* smtp_server_shutdown() called */
	bool skip_saw_cr;             /* S_SKIP: the previous byte was CR */
	uint8_t txn_fail_reply;       /* enum smtp_reply_id for a failed BDAT message */
	uint8_t chunk_reply;          /* enum smtp_reply_id for a discarded chunk */
	unsigned n_errors;
	unsigned n_rcpt;              /* accepted recipients in this transaction */
	struct data_bdat chunk;       /* S_BDAT: octets left, LAST or not */
	uint64_t chunk_size;          /* S_BDAT: the announced size */
	struct data_dec dec;          /* DATA / BDAT decoder */
	size_t in_off;                /* start of unconsumed input */
	size_t in_len;                /* end of buffered input */
	size_t out_len;               /* bytes in out waiting to be sent */
	size_t cmd_max;               /* effective command line limit */
	char helo[SMTP_SERVER_HELO_MAX + 1];
	char sample[72];
	struct smtp_proto_path mail_path;
	struct smtp_proto_mail_params mail;
	struct smtp_proto_path rcpt_path;
	struct smtp_proto_rcpt_params rcpt;
	uint8_t in[SMTP_SERVER_IN_BYTES];
	uint8_t out[SMTP_SERVER_OUT_BYTES];
};

/* smtp_server_size - sizeof(struct smtp_server), for hosts that allocate it opaquely. */
size_t smtp_server_size(void);

/*
 * smtp_server_init - set up s from lim (copied; lim->hostname borrowed for
 * the session's lifetime). Nothing is sent until smtp_server_start().
 * Never fails; a lim with max_line_bytes < 64 or hostname NULL is our bug.
 */
void smtp_server_init(struct smtp_server *s, const struct smtp_server_limits *lim);

/* smtp_server_fini - end the session; s holds nothing that needs freeing. */
void smtp_server_fini(struct smtp_server *s);

/*
 * smtp_server_start - queue the greeting. greeting is SMTP_REPLY_GREETING
 * ("220 <hostname> ESMTP ringmta") or a refusal such as
 * SMTP_REPLY_TOO_MANY_CONN or SMTP_REPLY_SHUTDOWN (any 4xx/5xx), after
 * which the session goes to CLOSE.
 */
void smtp_server_start(struct smtp_server *s, enum smtp_reply_id greeting);

/*
 * smtp_server_feed - give the server received bytes. buf[0..len) is copied;
 * the server never keeps a pointer to it. Returns the bytes taken (0..len):
 * fewer when the input buffer is full (answer pending, output not sent,
 * or simply a big packet), and 0 once CLOSE is due. The host keeps
 * buf[taken..len) and feeds it again after _next has made progress (this
 * is the backpressure). Call _next after each feed. Feeding invalidates
 * the ev.data/ev.sample pointers of earlier events.
 */
size_t smtp_server_feed(struct smtp_server *s, const uint8_t *buf, size_t len);

/*
 * smtp_server_next - run the state machine to the next event; fills *ev
 * (always, including for NEED_MORE/WAIT/FLUSH/CLOSE) and returns ev->kind.
 */
int smtp_server_next(struct smtp_server *s, struct smtp_server_ev *ev);

/*
 * smtp_server_answer - answer the pending MAIL, RCPT, DATA_BEGIN, DATA_END
 * or STARTTLS event. id is the reply to send: any table entry whose code is
 * < 400 means "accepted" (e.g. MAIL_OK, RCPT_OK, OK, QUEUED, TLS_GO),
 * anything else "refused" (e.g. RELAY_DENIED, USER_UNKNOWN, NO_STORAGE,
 * LOCAL_ERROR). For DATA_BEGIN the accepted reply itself is not sent: the
 * server sends 354 (DATA) or reads the chunk (BDAT). arg (may be NULL)
 * replaces "%s" in the reply text, e.g. the queue id for QUEUED or the
 * recipient address for RCPT_UNLISTED, RCPT_UNVERIFIED and RCPT_UNDELIVERABLE; it is
 * copied (at most SMTP_SERVER_ARG_MAX octets, made printable). Answering
 * with nothing pending is a host bug (rm_panic).
 */
void smtp_server_answer(struct smtp_server *s, enum smtp_reply_id id, const char *arg);

/*
 * smtp_server_output - the bytes to send, *len of them (0 when none). The
 * pointer is valid until the next call of any smtp_server_* function.
 */
const uint8_t *smtp_server_output(struct smtp_server *s, size_t *len);

/* smtp_server_output_done - n bytes of the output have been sent (n <= *len). */
void smtp_server_output_done(struct smtp_server *s, size_t n);

/*
 * smtp_server_eof - the peer closed (or the connection failed). An open
 * message yields DATA_ABORT (ABORT_EOF) first; then CLOSE. Nothing is
 * sent. A pending answer is dropped; an answer given afterwards is ignored
 * (so a commit already in flight may still answer DATA_END harmlessly:
 * a message whose DATA_END was emitted is complete and is not aborted).
 * DATA_ABORT is only emitted for a message whose DATA_BEGIN was answered
 * "accepted"; if eof/timeout arrives while DATA_BEGIN itself is still
 * unanswered, the host drops whatever it opened for it.
 */
void smtp_server_eof(struct smtp_server *s);

/*
 * smtp_server_timeout - the idle timeout fired. Queues 421 4.4.2; an open
 * message yields DATA_ABORT (ABORT_TIMEOUT) first; then CLOSE. As for
 * smtp_server_eof, later answers are ignored.
 */
void smtp_server_timeout(struct smtp_server *s);

/*
 * smtp_server_shutdown - the daemon is stopping. At the next command
 * boundary (immediately if idle; after the DATA_END answer if the host is
 * committing; after the end of the DATA the client is sending) the server
 * sends 421 4.3.2 and returns CLOSE. Between BDAT chunks an open message
 * yields DATA_ABORT (ABORT_SHUTDOWN). Call smtp_server_next() afterwards:
 * an idle session answers CLOSE at once.
 */
void smtp_server_shutdown(struct smtp_server *s);

/*
 * smtp_server_received - format the trace header for the message now in
 * progress (RFC 5321 4.4, RFC 5322 3.6.7):
 *   Received: from <helo> (<client_name> [<client_addr>])\r\n
 *   \tby <hostname> (ringmta) with <proto> id <queue_id>\r\n
 *   \tfor <rcpt>; <date>\r\n
 * <proto> is SMTP (HELO), ESMTP, ESMTPS (TLS), UTF8SMTP or UTF8SMTPS
 * (RFC 6531 3.7.3, SMTPUTF8 given). The "for" clause is left out when
 * rcpt_or_null is NULL. Every peer-derived string (HELO, client_name,
 * rcpt) is sanitised: bytes outside 0x21..0x7e (8-bit kept in rcpt for
 * SMTPUTF8) and "()<>;\\\"" become '?', so a hostile HELO cannot add a
 * header or a comment. client_name may be NULL ("unknown"). out gets a
 * NUL-terminated string. Returns its length, -EINVAL (NULL argument), or
 * -ENOSPC (cap too small; 1 KiB always suffices).
 */
int smtp_server_received(const struct smtp_server *s, char *out, size_t cap,
			 const char *client_addr, const char *client_name,
			 const char *queue_id, const char *rcpt_or_null,
			 const char *date_rfc5322);

/* smtp_server_action - what the session is doing, for log lines ("reading DATA"). */
const char *smtp_server_action(const struct smtp_server *s);

/* smtp_server_ev_name - constant name of an event kind ("MAIL"). */
const char *smtp_server_ev_name(int kind);

#endif
