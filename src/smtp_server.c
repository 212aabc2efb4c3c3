/*
 * smtp_server - the inbound SMTP session state machine (sans-I/O).
 *
 * Owns: one session's protocol state, its fixed input and output buffers,
 *   and copies of the HELO name, the envelope of the current transaction
 *   and the last RCPT, all inside struct smtp_server (no heap).
 * Must not: touch sockets, clocks, files or the spool; log; allocate; let
 *   anything but CRLF end a line; abort on anything a peer can send.
 * Interface: include/ringmta/smtp_server.h
 * Limits: command line min(max_line_bytes, SMTP_SERVER_IN_BYTES); data
 *   lines max_line_bytes; message max_message_bytes; max_rcpt accepted
 *   recipients; max_errors error replies; output SMTP_SERVER_OUT_BYTES.
 * Errors: peer errors become replies and REJECT/DATA_ABORT events; host
 *   bugs (API misuse) rm_panic.
 * Standards: RFC 5321 (3, 4.1, 4.2, 4.3.2 sequencing, 4.5.3.1 limits),
 *   RFC 1869/5321 EHLO, RFC 2920 PIPELINING, RFC 1870 SIZE, RFC 6152
 *   8BITMIME, RFC 2034/3463 enhanced codes, RFC 6531 SMTPUTF8, RFC 3030
 *   CHUNKING/BINARYMIME, RFC 3461 DSN, RFC 3207 STARTTLS (seam).
 *
 * States (struct smtp_server.state) and what moves between them:
 *   S_INIT  --start-->           S_CMD (or CLOSED for a refusal greeting)
 *   S_CMD   --line > limit-->    S_SKIP --CRLF-->            S_CMD
 *   S_CMD   --DATA, answer ok--> S_DATA --CRLF.CRLF-->       S_CMD (DATA_END pending)
 *   S_CMD   --BDAT (msg open or answer)--> S_BDAT --chunk read--> S_CMD
 *   any     --QUIT/421/eof-->    CLOSED (after queued events)
 * Transaction flags: has_mail (MAIL accepted), n_rcpt, is_msg_open (host
 *   holds a spool message: DATA_BEGIN accepted, no DATA_END/ABORT yet),
 *   is_bdat_txn, is_txn_failed (a BDAT message failed: chunks are dropped
 *   until LAST or RSET). "pending" blocks all progress until answered.
 * Command sequencing (RFC 5321 4.1.4, 4.3.2):
 *   HELO/EHLO any time (reset txn); MAIL after HELO, not in txn; RCPT
 *   in txn, not in a BDAT message; DATA with >= 1 rcpt, not in a BDAT
 *   message, not BINARYMIME; BDAT with >= 1 rcpt; RSET/NOOP/QUIT/VRFY/
 *   HELP any time; STARTTLS when offered and outside a txn.
 */
#include "ringmta/smtp_server.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ringmta/util.h"

/* step result: go round the loop again (events may have been queued) */
#define STEP_AGAIN (-1)

static const char *const abort_names[] = {
	"none", "bare_lf", "bare_cr", "line_too_long", "too_big", "8bit", "rset",
	"eof", "timeout", "shutdown", "bdat_syntax", "quit", "errors",
};

static const char *const reject_names[] = {
	"none", "unknown_cmd", "not_implemented", "syntax", "bad_char",
	"bare_line_end", "line_too_long", "sequence", "param", "path", "size",
	"too_many_rcpt", "no_rcpt", "txn_failed", "too_many_errors",
};

static const char *const ev_names[] = {
	"NEED_MORE", "WAIT", "FLUSH", "HELO", "MAIL", "RCPT", "DATA_BEGIN",
	"BODY", "DATA_END", "DATA_ABORT", "STARTTLS", "REJECT", "CLOSE",
};

const char *smtp_server_ev_name(int kind)
{
	if (kind < 0 || (size_t)kind >= sizeof(ev_names) / sizeof(ev_names[0]))
		return "UNKNOWN";
	return ev_names[kind];
}

void smtp_server_limits_default(struct smtp_server_limits *lim)
{
	memset(lim, 0, sizeof(*lim));
	lim->hostname = "localhost";
	lim->max_line_bytes = 2048;
	lim->max_message_bytes = 10240000;
	lim->max_rcpt = 1000;
	lim->max_errors = 10;
}

size_t smtp_server_size(void)
{
	return sizeof(struct smtp_server);
}

void smtp_server_init(struct smtp_server *s, const struct smtp_server_limits *lim)
{
	if (lim->hostname == NULL || lim->max_line_bytes < 64)
		rm_panic("smtp_server: bad limits (hostname %p, max_line_bytes %zu)",
			 (const void *)lim->hostname, lim->max_line_bytes);
	memset(s, 0, offsetof(struct smtp_server, in));
	s->lim = *lim;
	s->state = SMTP_SERVER_S_INIT;
	s->pending = SMTP_SERVER_EV_NEED_MORE;
	s->cmd_max = lim->max_line_bytes < SMTP_SERVER_IN_BYTES ?
		     lim->max_line_bytes : SMTP_SERVER_IN_BYTES;
}

void smtp_server_fini(struct smtp_server *s)
{
	s->state = SMTP_SERVER_S_CLOSED;
}

/* --- output and events ---------------------------------------------------- */

/* out_reply - append one reply line; false (nothing written) if it does not fit. */
static bool out_reply(struct smtp_server *s, enum smtp_reply_id id, const char *arg, bool more)
{
	int n = smtp_proto_reply_format((char *)s->out + s->out_len,
					SMTP_SERVER_OUT_BYTES - s->out_len, id, arg, more);

	if (n < 0)
		return false;
	s->out_len += (size_t)n;
	return true;
}

/* must_reply - out_reply where SMTP_SERVER_REPLY_RESERVE guarantees room. */
static void must_reply(struct smtp_server *s, enum smtp_reply_id id, const char *arg)
{
	if (!out_reply(s, id, arg, false))
		rm_panic("smtp_server: output full (%zu) for reply %d", s->out_len, (int)id);
}

/* queue - add an informational event; the queue is sized for one step's worth. */
static void queue(struct smtp_server *s, enum smtp_server_ev_kind kind,
		  enum smtp_server_abort why, enum smtp_server_reject rej, enum smtp_reply_id reply)
{
	struct smtp_server_qev *q;

	if (s->q_len == SMTP_SERVER_QUEUE_MAX)
		rm_panic("smtp_server: event queue full");
	q = &s->q[(s->q_head + s->q_len) % SMTP_SERVER_QUEUE_MAX];
	q->kind = (uint8_t)kind;
	q->abort = (uint8_t)why;
	q->reject = (uint8_t)rej;
	q->reply = (uint8_t)reply;
	s->q_len++;
}

/* pop - hand out the oldest queued event. */
static int pop(struct smtp_server *s, struct smtp_server_ev *ev)
{
	const struct smtp_server_qev *q = &s->q[s->q_head];

	s->q_head = (uint8_t)((s->q_head + 1) % SMTP_SERVER_QUEUE_MAX);
	s->q_len--;
	ev->kind = (enum smtp_server_ev_kind)q->kind;
	switch (ev->kind) {
	case SMTP_SERVER_EV_HELO:
		ev->helo = s->helo;
		ev->is_ehlo = s->is_ehlo;
		break;
	case SMTP_SERVER_EV_DATA_ABORT:
		ev->abort = (enum smtp_server_abort)q->abort;
		ev->reason = abort_names[q->abort];
		break;
	default:
		ev->reject = (enum smtp_server_reject)q->reject;
		ev->reply = (enum smtp_reply_id)q->reply;
		ev->reason = reject_names[q->reject];
		ev->sample = s->sample;
		break;
	}
	return ev->kind;
}

/* txn_reset - forget the transaction (RFC 5321 4.1.1.5); the host's message must already be closed. */
static void txn_reset(struct smtp_server *s)
{
	s->has_mail = false;
	s->is_msg_open = false;
	s->is_bdat_txn = false;
	s->is_txn_failed = false;
	s->n_rcpt = 0;
	memset(&s->mail_path, 0, sizeof(s->mail_path));
	memset(&s->mail, 0, sizeof(s->mail));
}

/* abort_msg - the host's open message is dropped, for why. */
static void abort_msg(struct smtp_server *s, enum smtp_server_abort why)
{
	if (!s->is_msg_open)
		return;
	s->is_msg_open = false;
	queue(s, SMTP_SERVER_EV_DATA_ABORT, why, 0, 0);
}

/* close_with - send a 421-style reply (if it fits) and close after the queue. */
static void close_with(struct smtp_server *s, enum smtp_reply_id id)
{
	out_reply(s, id, NULL, false);
	s->close_after_flush = true;
}

/* count_error - one more error reply; spend the budget (RFC 5321 4.3.2 has no limit: Postfix's hard error limit). */
static void count_error(struct smtp_server *s)
{
	if (++s->n_errors < s->lim.max_errors || s->close_after_flush)
		return;
	abort_msg(s, SMTP_SERVER_ABORT_ERRORS);
	queue(s, SMTP_SERVER_EV_REJECT, 0, SMTP_SERVER_REJECT_TOO_MANY_ERRORS,
	      SMTP_REPLY_TOO_MANY_ERRORS);
	close_with(s, SMTP_REPLY_TOO_MANY_ERRORS);
}

/* reject - the server refuses the current command itself. */
static int reject(struct smtp_server *s, enum smtp_server_reject why, enum smtp_reply_id id)
{
	must_reply(s, id, NULL);
	queue(s, SMTP_SERVER_EV_REJECT, 0, why, id);
	/* RFC 5321 4.5.3.1.10: a client may pipeline past the recipient
	 * limit and must then send the rest in a new transaction; that is
	 * not an error to punish. */
	if (why != SMTP_SERVER_REJECT_TOO_MANY_RCPT)
		count_error(s);
	return STEP_AGAIN;
}

/* compact - move unconsumed input to the front of the buffer. */
static void compact(struct smtp_server *s)
{
	if (s->in_off == 0)
		return;
	memmove(s->in, s->in + s->in_off, s->in_len - s->in_off);
	s->in_len -= s->in_off;
	s->in_off = 0;
}

/* need_more - all buffered input is used up (or an incomplete line waits). */
static int need_more(struct smtp_server *s, struct smtp_server_ev *ev)
{
	compact(s);
	ev->kind = SMTP_SERVER_EV_NEED_MORE;
	return ev->kind;
}

/* --- the commands ---------------------------------------------------------- */

/* helo_valid - a HELO/EHLO argument: 1..255 octets of printable ASCII, no SP. */
static bool helo_valid(const struct smtp_proto_cmd *c)
{
	size_t i;

	if (c->arg_len == 0 || c->arg_len > SMTP_SERVER_HELO_MAX)
		return false;
	for (i = 0; i < c->arg_len; i++) {
		if (c->arg[i] <= 0x20 || c->arg[i] >= 0x7f)
			return false;
	}
	return true;
}

/* ehlo_reply - the EHLO keyword list (RFC 5321 4.1.1.1). */
static void ehlo_reply(struct smtp_server *s)
{
	static const char *const kw[] = {
		"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
		"CHUNKING", "BINARYMIME", "DSN",
	};
	char size[32];
	size_t i;
	bool tls = s->lim.offer_starttls && !s->is_tls;   /* RFC 3207 4.2 */

	if (!out_reply(s, SMTP_REPLY_HELO_OK, s->lim.hostname, true))
		rm_panic("smtp_server: output full for EHLO");
	snprintf(size, sizeof(size), "SIZE %" PRIu64, s->lim.max_message_bytes);
	out_reply(s, SMTP_REPLY_HELO_OK, size, true);
	for (i = 0; i < sizeof(kw) / sizeof(kw[0]); i++)
		out_reply(s, SMTP_REPLY_HELO_OK, kw[i],
			  tls || i + 1 < sizeof(kw) / sizeof(kw[0]));
	if (tls)
		out_reply(s, SMTP_REPLY_HELO_OK, "STARTTLS", false);
}

static int cmd_helo(struct smtp_server *s, const struct smtp_proto_cmd *c, struct smtp_server_ev *ev)
{
	(void)ev;
	if (!helo_valid(c))
		return reject(s, SMTP_SERVER_REJECT_SYNTAX, SMTP_REPLY_HELO_SYNTAX);
	/* RFC 5321 4.1.4: HELO/EHLO resets any transaction. */
	abort_msg(s, SMTP_SERVER_ABORT_RSET);
	txn_reset(s);
	memcpy(s->helo, c->arg, c->arg_len);
	s->helo[c->arg_len] = '\0';
	s->is_greeted = true;
	s->is_ehlo = c->verb == SMTP_PROTO_VERB_EHLO;
	if (s->is_ehlo)
		ehlo_reply(s);
	else
		must_reply(s, SMTP_REPLY_HELO_OK, s->lim.hostname);
	queue(s, SMTP_SERVER_EV_HELO, 0, 0, 0);
	return STEP_AGAIN;
}

/* path_reject - map a path/param parser error to a REJECT. */
static int path_reject(struct smtp_server *s, int err, bool is_rcpt)
{
	enum smtp_server_reject why = SMTP_SERVER_REJECT_PATH;

	if (err == SMTP_PROTO_E_PARAM_UNKNOWN || err == SMTP_PROTO_E_PARAM_DUP ||
	    err == SMTP_PROTO_E_PARAM_VALUE)
		why = SMTP_SERVER_REJECT_PARAM;
	else if (err == SMTP_PROTO_E_BAD_CHAR)
		why = SMTP_SERVER_REJECT_BAD_CHAR;
	else if (err == SMTP_PROTO_E_SYNTAX)
		why = SMTP_SERVER_REJECT_SYNTAX;
	return reject(s, why, smtp_proto_err_reply(err, is_rcpt));
}

static int cmd_mail(struct smtp_server *s, const struct smtp_proto_cmd *c, struct smtp_server_ev *ev)
{
	size_t used = 0;
	int err;

	if (!s->is_greeted)
		return reject(s, SMTP_SERVER_REJECT_SEQUENCE, SMTP_REPLY_NEED_HELO);
	if (s->has_mail)
		return reject(s, SMTP_SERVER_REJECT_SEQUENCE, SMTP_REPLY_NESTED_MAIL);
	err = smtp_proto_path_parse(c->arg, c->arg_len,
				    SMTP_PROTO_PATH_ALLOW_NULL | SMTP_PROTO_PATH_UTF8,
				    &s->mail_path, &used);
	if (err == 0 && used < c->arg_len && !s->is_ehlo)
		err = SMTP_PROTO_E_PARAM_UNKNOWN;   /* no ESMTP parameters after HELO */
	if (err == 0)
		err = smtp_proto_mail_params_parse(c->arg + used, c->arg_len - used, &s->mail);
	/* RFC 6531 3.3: a UTF-8 address needs SMTPUTF8 on this MAIL. */
	if (err == 0 && s->mail_path.is_utf8 && !s->mail.smtputf8)
		err = SMTP_PROTO_E_NEED_SMTPUTF8;
	if (err != 0) {
		txn_reset(s);
		return path_reject(s, err, false);
	}
	/* RFC 1870 6.1: refuse a declared size over the limit now. */
	if (s->mail.has_size && s->mail.size > s->lim.max_message_bytes) {
		txn_reset(s);
		return reject(s, SMTP_SERVER_REJECT_SIZE, SMTP_REPLY_MSG_TOO_BIG);
	}
	s->pending = SMTP_SERVER_EV_MAIL;
	ev->kind = SMTP_SERVER_EV_MAIL;
	ev->path = &s->mail_path;
	ev->mail = &s->mail;
	return ev->kind;
}

static int cmd_rcpt(struct smtp_server *s, const struct smtp_proto_cmd *c, struct smtp_server_ev *ev)
{
	size_t used = 0;
	int err;

	if (!s->has_mail)
		return reject(s, SMTP_SERVER_REJECT_SEQUENCE,
			      s->is_greeted ? SMTP_REPLY_NEED_MAIL : SMTP_REPLY_NEED_HELO);
	if (s->is_msg_open || s->is_txn_failed)
		return reject(s, SMTP_SERVER_REJECT_SEQUENCE, SMTP_REPLY_BAD_SEQUENCE);
	if (s->n_rcpt >= s->lim.max_rcpt)
		return reject(s, SMTP_SERVER_REJECT_TOO_MANY_RCPT, SMTP_REPLY_TOO_MANY_RCPT);
	err = smtp_proto_path_parse(c->arg, c->arg_len,
				    SMTP_PROTO_PATH_RCPT | (s->mail.smtputf8 ? SMTP_PROTO_PATH_UTF8 : 0),
				    &s->rcpt_path, &used);
	if (err == 0 && used < c->arg_len && !s->is_ehlo)
		err = SMTP_PROTO_E_PARAM_UNKNOWN;
	if (err == 0)
		err = smtp_proto_rcpt_params_parse(c->arg + used, c->arg_len - used, &s->rcpt);
	if (err != 0)
		return path_reject(s, err, true);
	s->pending = SMTP_SERVER_EV_RCPT;
	ev->kind = SMTP_SERVER_EV_RCPT;
	ev->path = &s->rcpt_path;
	ev->rcpt = &s->rcpt;
	ev->mail = &s->mail;
	return ev->kind;
}

/* data_begin - ask the host to open a spool message. */
static int data_begin(struct smtp_server *s, bool is_bdat, struct smtp_server_ev *ev)
{
	s->pending = SMTP_SERVER_EV_DATA_BEGIN;
	s->is_bdat_txn = is_bdat;
	ev->kind = SMTP_SERVER_EV_DATA_BEGIN;
	ev->is_bdat = is_bdat;
	ev->path = &s->mail_path;
	ev->mail = &s->mail;
	return ev->kind;
}

static int cmd_data(struct smtp_server *s, const struct smtp_proto_cmd *c, struct smtp_server_ev *ev)
{
	(void)c;
	if (!s->has_mail)
		return reject(s, SMTP_SERVER_REJECT_SEQUENCE,
			      s->is_greeted ? SMTP_REPLY_NEED_MAIL : SMTP_REPLY_NEED_HELO);
	if (s->is_bdat_txn)   /* RFC 3030 2: no DATA inside a BDAT transaction */
		return reject(s, SMTP_SERVER_REJECT_SEQUENCE, SMTP_REPLY_BAD_SEQUENCE);
	if (s->mail.body == SMTP_PROTO_BODY_BINARYMIME)   /* RFC 3030 3 */
		return reject(s, SMTP_SERVER_REJECT_SEQUENCE, SMTP_REPLY_NEED_BDAT);
	if (s->n_rcpt == 0)
		return reject(s, SMTP_SERVER_REJECT_NO_RCPT, SMTP_REPLY_NO_RCPT);
	return data_begin(s, false, ev);
}

/* chunk_discard - read and drop this BDAT chunk, then reply id (RFC 3030 2). */
static int chunk_discard(struct smtp_server *s, enum smtp_server_reject why,
			 enum smtp_reply_id id, bool is_error)
{
	s->is_chunk_discard = true;
	s->chunk_reply = (uint8_t)id;
	s->state = SMTP_SERVER_S_BDAT;
	queue(s, SMTP_SERVER_EV_REJECT, 0, why, id);
	if (is_error)
		count_error(s);
	return STEP_AGAIN;
}

static int cmd_bdat(struct smtp_server *s, const struct smtp_proto_cmd *c, struct smtp_server_ev *ev)
{
	if (data_bdat_parse(c->arg, c->arg_len, &s->chunk) != 0) {
		/* the chunk's length is unknown: the stream cannot be resynchronised */
		abort_msg(s, SMTP_SERVER_ABORT_BDAT_SYNTAX);
		must_reply(s, SMTP_REPLY_BDAT_SYNTAX, NULL);
		queue(s, SMTP_SERVER_EV_REJECT, 0, SMTP_SERVER_REJECT_SYNTAX, SMTP_REPLY_BDAT_SYNTAX);
		s->close_after_flush = true;
		return STEP_AGAIN;
	}
	s->chunk_size = s->chunk.left;
	s->is_chunk_discard = false;
	if (!s->has_mail)
		return chunk_discard(s, SMTP_SERVER_REJECT_SEQUENCE,
				     s->is_greeted ? SMTP_REPLY_NEED_MAIL : SMTP_REPLY_NEED_HELO, true);
	if (s->is_txn_failed)
		return chunk_discard(s, SMTP_SERVER_REJECT_TXN_FAILED,
				     (enum smtp_reply_id)s->txn_fail_reply, false);
	if (s->n_rcpt == 0)
		return chunk_discard(s, SMTP_SERVER_REJECT_NO_RCPT, SMTP_REPLY_NO_RCPT, true);
	if (s->is_msg_open) {
		s->state = SMTP_SERVER_S_BDAT;
		return STEP_AGAIN;
	}
	return data_begin(s, true, ev);
}

static int cmd_rset(struct smtp_server *s, const struct smtp_proto_cmd *c, struct smtp_server_ev *ev)
{
	(void)c;
	(void)ev;
	abort_msg(s, SMTP_SERVER_ABORT_RSET);
	txn_reset(s);
	must_reply(s, SMTP_REPLY_OK, NULL);
	return STEP_AGAIN;
}

static int cmd_noop(struct smtp_server *s, const struct smtp_proto_cmd *c, struct smtp_server_ev *ev)
{
	(void)c;
	(void)ev;
	must_reply(s, SMTP_REPLY_OK, NULL);
	return STEP_AGAIN;
}

static int cmd_quit(struct smtp_server *s, const struct smtp_proto_cmd *c, struct smtp_server_ev *ev)
{
	(void)c;
	(void)ev;
	abort_msg(s, SMTP_SERVER_ABORT_QUIT);
	must_reply(s, SMTP_REPLY_BYE, NULL);
	s->close_after_flush = true;
	return STEP_AGAIN;
}

static int cmd_vrfy(struct smtp_server *s, const struct smtp_proto_cmd *c, struct smtp_server_ev *ev)
{
	(void)ev;
	if (c->arg_len == 0)
		return reject(s, SMTP_SERVER_REJECT_SYNTAX, SMTP_REPLY_SYNTAX);
	must_reply(s, SMTP_REPLY_VRFY, NULL);
	return STEP_AGAIN;
}

static int cmd_help(struct smtp_server *s, const struct smtp_proto_cmd *c, struct smtp_server_ev *ev)
{
	(void)c;
	(void)ev;
	must_reply(s, SMTP_REPLY_HELP, NULL);
	return STEP_AGAIN;
}

static int cmd_starttls(struct smtp_server *s, const struct smtp_proto_cmd *c, struct smtp_server_ev *ev)
{
	(void)c;
	if (!s->lim.offer_starttls || s->is_tls)
		return reject(s, SMTP_SERVER_REJECT_NOT_IMPL, SMTP_REPLY_NOT_IMPLEMENTED);
	if (s->has_mail)
		return reject(s, SMTP_SERVER_REJECT_SEQUENCE, SMTP_REPLY_BAD_SEQUENCE);
	s->pending = SMTP_SERVER_EV_STARTTLS;
	ev->kind = SMTP_SERVER_EV_STARTTLS;
	return ev->kind;
}

static int cmd_not_impl(struct smtp_server *s, const struct smtp_proto_cmd *c, struct smtp_server_ev *ev)
{
	(void)c;
	(void)ev;
	return reject(s, SMTP_SERVER_REJECT_NOT_IMPL, SMTP_REPLY_NOT_IMPLEMENTED);
}

/* the dispatch table: one function per verb */
static int (*const cmd_table[SMTP_PROTO_VERB_COUNT_])(struct smtp_server *,
		const struct smtp_proto_cmd *, struct smtp_server_ev *) = {
	[SMTP_PROTO_VERB_HELO] = cmd_helo,
	[SMTP_PROTO_VERB_EHLO] = cmd_helo,
	[SMTP_PROTO_VERB_MAIL] = cmd_mail,
	[SMTP_PROTO_VERB_RCPT] = cmd_rcpt,
	[SMTP_PROTO_VERB_DATA] = cmd_data,
	[SMTP_PROTO_VERB_BDAT] = cmd_bdat,
	[SMTP_PROTO_VERB_RSET] = cmd_rset,
	[SMTP_PROTO_VERB_NOOP] = cmd_noop,
	[SMTP_PROTO_VERB_QUIT] = cmd_quit,
	[SMTP_PROTO_VERB_VRFY] = cmd_vrfy,
	[SMTP_PROTO_VERB_EXPN] = cmd_not_impl,
	[SMTP_PROTO_VERB_HELP] = cmd_help,
	[SMTP_PROTO_VERB_STARTTLS] = cmd_starttls,
	[SMTP_PROTO_VERB_AUTH] = cmd_not_impl,
	[SMTP_PROTO_VERB_TURN] = cmd_not_impl,
	[SMTP_PROTO_VERB_ETRN] = cmd_not_impl,
};

/* dispatch - parse one complete command line and run its verb. */
static int dispatch(struct smtp_server *s, const uint8_t *line, size_t len, struct smtp_server_ev *ev)
{
	struct smtp_proto_cmd c;
	unsigned flags = s->lim.lenient_space_after_colon ? SMTP_PROTO_LENIENT_SPACE_AFTER_COLON : 0;
	int err;

	err = smtp_proto_cmd_parse(line, len, flags, &c);
	/* the sample goes to the log: never an AUTH payload */
	if (c.verb == SMTP_PROTO_VERB_AUTH)
		snprintf(s->sample, sizeof(s->sample), "AUTH ***");
	else
		rm_printable(s->sample, sizeof(s->sample), line, len, 64);
	/* RFC 5321 2.3.8: a bare CR or LF inside a line is not a line end */
	if (memchr(line, '\r', len) || memchr(line, '\n', len))
		return reject(s, SMTP_SERVER_REJECT_BARE_LINE_END, SMTP_REPLY_BARE_LINE_END);
	if (err == SMTP_PROTO_E_UNKNOWN_VERB)
		return reject(s, SMTP_SERVER_REJECT_UNKNOWN_CMD, SMTP_REPLY_UNKNOWN_CMD);
	if (err == SMTP_PROTO_E_BAD_CHAR)
		return reject(s, SMTP_SERVER_REJECT_BAD_CHAR, SMTP_REPLY_BAD_CHAR);
	if (err != 0)
		return reject(s, SMTP_SERVER_REJECT_SYNTAX, SMTP_REPLY_SYNTAX);
	return cmd_table[c.verb](s, &c, ev);
}

/* --- the input states ------------------------------------------------------- */

/* find_eol - offset of the line end (the CR of CRLF, or a lenient LF) and its length. */
static bool find_eol(const struct smtp_server *s, const uint8_t *p, size_t n, size_t *at, size_t *eol_len)
{
	const uint8_t *lf = p;
	size_t left = n;

	while (left > 0 && (lf = memchr(p + (n - left), '\n', left)) != NULL) {
		size_t k = (size_t)(lf - p);

		if (k > 0 && p[k - 1] == '\r') {
			*at = k - 1;
			*eol_len = 2;
			return true;
		}
		if (s->lim.lenient_bare_lf) {
			*at = k;
			*eol_len = 1;
			return true;
		}
		left = n - k - 1;
	}
	return false;
}

static int step_cmd(struct smtp_server *s, struct smtp_server_ev *ev)
{
	const uint8_t *p = s->in + s->in_off;
	size_t n = s->in_len - s->in_off, at, eol;

	if (s->out_len + SMTP_SERVER_REPLY_RESERVE > SMTP_SERVER_OUT_BYTES) {
		ev->kind = SMTP_SERVER_EV_FLUSH;
		return ev->kind;
	}
	if (s->is_shutdown) {
		abort_msg(s, SMTP_SERVER_ABORT_SHUTDOWN);
		close_with(s, SMTP_REPLY_SHUTDOWN);
		return STEP_AGAIN;
	}
	if (!find_eol(s, p, n, &at, &eol)) {
		if (n < s->cmd_max)
			return need_more(s, ev);
		/* RFC 5321 4.5.3.1.4: too long; skip to the line end, keep in sync */
		rm_printable(s->sample, sizeof(s->sample), p, n, 64);
		s->skip_saw_cr = p[n - 1] == '\r';
		s->in_off = s->in_len;
		s->state = SMTP_SERVER_S_SKIP;
		must_reply(s, SMTP_REPLY_LINE_TOO_LONG, NULL);
		queue(s, SMTP_SERVER_EV_REJECT, 0, SMTP_SERVER_REJECT_LINE_TOO_LONG,
		      SMTP_REPLY_LINE_TOO_LONG);
		count_error(s);
		return STEP_AGAIN;
	}
	s->in_off += at + eol;
	if (at + eol > s->cmd_max) {
		rm_printable(s->sample, sizeof(s->sample), p, at, 64);
		return reject(s, SMTP_SERVER_REJECT_LINE_TOO_LONG, SMTP_REPLY_LINE_TOO_LONG);
	}
	return dispatch(s, p, at, ev);
}

static int step_skip(struct smtp_server *s, struct smtp_server_ev *ev)
{
	const uint8_t *p = s->in + s->in_off;
	size_t n = s->in_len - s->in_off, at, eol;

	if (n == 0)
		return need_more(s, ev);
	if (s->skip_saw_cr && p[0] == '\n') {
		at = 0;
		eol = 1;
	} else if (!find_eol(s, p, n, &at, &eol)) {
		s->skip_saw_cr = p[n - 1] == '\r';
		s->in_off = s->in_len;
		return need_more(s, ev);
	}
	s->in_off += at + eol;
	s->skip_saw_cr = false;
	s->state = SMTP_SERVER_S_CMD;
	return STEP_AGAIN;
}

/* fail_reply - the reply for a rejected message. */
static enum smtp_reply_id fail_reply(enum data_reject r)
{
	switch (r) {
	case DATA_REJECT_BARE_LF:
	case DATA_REJECT_BARE_CR:       return SMTP_REPLY_BAD_LINE_END;
	case DATA_REJECT_LINE_TOO_LONG: return SMTP_REPLY_DATA_LINE_TOO_LONG;
	case DATA_REJECT_TOO_BIG:       return SMTP_REPLY_MSG_TOO_BIG;
	case DATA_REJECT_8BIT:          return SMTP_REPLY_EIGHTBIT;
	default:                        return SMTP_REPLY_LOCAL_ERROR;
	}
}

/* abort_why - the DATA_ABORT reason for a decoder reject. */
static enum smtp_server_abort abort_why(enum data_reject r)
{
	switch (r) {
	case DATA_REJECT_BARE_LF:       return SMTP_SERVER_ABORT_BARE_LF;
	case DATA_REJECT_BARE_CR:       return SMTP_SERVER_ABORT_BARE_CR;
	case DATA_REJECT_LINE_TOO_LONG: return SMTP_SERVER_ABORT_LINE_TOO_LONG;
	case DATA_REJECT_TOO_BIG:       return SMTP_SERVER_ABORT_TOO_BIG;
	default:                        return SMTP_SERVER_ABORT_8BIT;
	}
}

/* body_ev - hand out decoded body (if any); STEP_AGAIN when empty. */
static int body_ev(struct smtp_server_ev *ev, const uint8_t *out, size_t len)
{
	if (len == 0)
		return STEP_AGAIN;
	ev->kind = SMTP_SERVER_EV_BODY;
	ev->data = out;
	ev->len = len;
	return ev->kind;
}

static int step_data(struct smtp_server *s, struct smtp_server_ev *ev)
{
	const uint8_t *out;
	size_t used, out_len;
	int st;

	st = data_dec_run(&s->dec, s->in + s->in_off, s->in_len - s->in_off, &used, &out, &out_len);
	s->in_off += used;
	switch (st) {
	case DATA_BODY:
		return body_ev(ev, out, out_len);
	case DATA_REJECTED:
		abort_msg(s, abort_why(data_dec_reject(&s->dec)));
		return body_ev(ev, out, out_len);
	case DATA_END:
		s->state = SMTP_SERVER_S_CMD;
		if (data_dec_reject(&s->dec) != DATA_REJECT_NONE) {
			must_reply(s, fail_reply(data_dec_reject(&s->dec)), NULL);
			txn_reset(s);
			count_error(s);
			return STEP_AGAIN;
		}
		s->pending = SMTP_SERVER_EV_DATA_END;
		ev->kind = SMTP_SERVER_EV_DATA_END;
		ev->message_bytes = data_dec_bytes(&s->dec);
		ev->path = &s->mail_path;
		ev->mail = &s->mail;
		return ev->kind;
	default:
		return need_more(s, ev);
	}
}

/* chunk_done - the whole BDAT chunk has been read: reply, or ask to commit. */
static int chunk_done(struct smtp_server *s, struct smtp_server_ev *ev)
{
	char num[24];
	bool is_last = s->chunk.is_last;

	s->state = SMTP_SERVER_S_CMD;
	if (s->is_chunk_discard) {
		s->is_chunk_discard = false;
		must_reply(s, (enum smtp_reply_id)s->chunk_reply, NULL);
		if (is_last && s->is_txn_failed)
			txn_reset(s);
		return STEP_AGAIN;
	}
	if (is_last && s->is_msg_open && data_dec_finish(&s->dec) == DATA_REJECTED)
		abort_msg(s, abort_why(data_dec_reject(&s->dec)));
	if (!s->is_msg_open) {
		/* the message failed inside this chunk */
		enum smtp_reply_id id = fail_reply(data_dec_reject(&s->dec));

		must_reply(s, id, NULL);
		count_error(s);
		s->is_txn_failed = true;
		s->txn_fail_reply = (uint8_t)id;
		if (is_last)
			txn_reset(s);
		return STEP_AGAIN;
	}
	if (!is_last) {
		snprintf(num, sizeof(num), "%" PRIu64, s->chunk_size);
		must_reply(s, SMTP_REPLY_BDAT_OK, num);
		return STEP_AGAIN;
	}
	s->pending = SMTP_SERVER_EV_DATA_END;
	ev->kind = SMTP_SERVER_EV_DATA_END;
	ev->message_bytes = data_dec_bytes(&s->dec);
	ev->path = &s->mail_path;
	ev->mail = &s->mail;
	return ev->kind;
}

static int step_bdat(struct smtp_server *s, struct smtp_server_ev *ev)
{
	size_t n = s->in_len - s->in_off, used, out_len;
	const uint8_t *out;
	int st;

	if (s->chunk.left == 0)
		return chunk_done(s, ev);
	if (n == 0)
		return need_more(s, ev);
	if (s->is_chunk_discard || !s->is_msg_open) {
		s->in_off += data_bdat_take(&s->chunk, n);
		return STEP_AGAIN;
	}
	if ((uint64_t)n > s->chunk.left)
		n = (size_t)s->chunk.left;
	st = data_dec_run(&s->dec, s->in + s->in_off, n, &used, &out, &out_len);
	s->in_off += used;
	s->chunk.left -= used;
	if (st == DATA_REJECTED)
		abort_msg(s, abort_why(data_dec_reject(&s->dec)));
	return body_ev(ev, out, out_len);
}

/* --- the API ----------------------------------------------------------------- */

void smtp_server_start(struct smtp_server *s, enum smtp_reply_id greeting)
{
	if (s->state != SMTP_SERVER_S_INIT)
		rm_panic("smtp_server: start called twice");
	s->state = SMTP_SERVER_S_CMD;
	if (smtp_proto_reply(greeting)->code >= 400) {
		close_with(s, greeting);
		return;
	}
	must_reply(s, greeting, s->lim.hostname);
}

size_t smtp_server_feed(struct smtp_server *s, const uint8_t *buf, size_t len)
{
	size_t take;

	if (s->state == SMTP_SERVER_S_INIT)
		rm_panic("smtp_server: feed before start");
	if (s->state == SMTP_SERVER_S_CLOSED || s->close_after_flush)
		return 0;
	compact(s);
	take = SMTP_SERVER_IN_BYTES - s->in_len;
	if (take > len)
		take = len;
	if (take > 0)
		memcpy(s->in + s->in_len, buf, take);
	s->in_len += take;
	return take;
}

int smtp_server_next(struct smtp_server *s, struct smtp_server_ev *ev)
{
	int k;

	memset(ev, 0, sizeof(*ev));
	if (s->state == SMTP_SERVER_S_INIT)
		rm_panic("smtp_server: next before start");
	for (;;) {
		if (s->q_len > 0)
			return pop(s, ev);
		if (s->state == SMTP_SERVER_S_CLOSED || s->close_after_flush) {
			s->state = SMTP_SERVER_S_CLOSED;
			ev->kind = SMTP_SERVER_EV_CLOSE;
			return ev->kind;
		}
		if (s->pending != SMTP_SERVER_EV_NEED_MORE) {
			ev->kind = SMTP_SERVER_EV_WAIT;
			return ev->kind;
		}
		switch (s->state) {
		case SMTP_SERVER_S_SKIP:
			k = step_skip(s, ev);
			break;
		case SMTP_SERVER_S_DATA:
			k = step_data(s, ev);
			break;
		case SMTP_SERVER_S_BDAT:
			k = step_bdat(s, ev);
			break;
		default:
			k = step_cmd(s, ev);
			break;
		}
		if (k != STEP_AGAIN)
			return k;
	}
}

/* msg_limits - the decoder limits for the message now starting. */
static void msg_limits(const struct smtp_server *s, struct data_limits *dl)
{
	memset(dl, 0, sizeof(*dl));
	dl->max_line_bytes = s->lim.max_line_bytes;
	dl->max_message_bytes = s->lim.max_message_bytes;
	dl->lenient_bare_lf = s->lim.lenient_bare_lf;
	dl->lenient_bare_cr = s->lim.lenient_bare_cr;
	dl->is_binary = s->mail.body == SMTP_PROTO_BODY_BINARYMIME;
	dl->allow_8bit = s->lim.lenient_8bit || s->mail.smtputf8 ||
			 s->mail.body == SMTP_PROTO_BODY_8BITMIME || dl->is_binary;
}

/* answer_data_begin - the host opened (or refused) the spool message. */
static void answer_data_begin(struct smtp_server *s, bool ok, enum smtp_reply_id id)
{
	struct data_limits dl;

	msg_limits(s, &dl);
	if (s->is_bdat_txn) {
		s->state = SMTP_SERVER_S_BDAT;
		if (ok) {
			s->is_msg_open = true;
			data_dec_init(&s->dec, &dl, DATA_MODE_BDAT);
			return;
		}
		/* refused: drop this and every later chunk of the message */
		s->is_chunk_discard = true;
		s->chunk_reply = (uint8_t)id;
		s->is_txn_failed = true;
		s->txn_fail_reply = (uint8_t)id;
		return;
	}
	if (!ok) {
		must_reply(s, id, NULL);
		return;
	}
	dl.is_binary = false;
	s->is_msg_open = true;
	data_dec_init(&s->dec, &dl, DATA_MODE_DOT);
	s->state = SMTP_SERVER_S_DATA;
	must_reply(s, SMTP_REPLY_DATA_GO, NULL);
}

void smtp_server_answer(struct smtp_server *s, enum smtp_reply_id id, const char *arg)
{
	enum smtp_server_ev_kind what = s->pending;
	bool ok = smtp_proto_reply(id)->code < 400, is_perm = smtp_proto_reply(id)->code >= 500;
	char a[SMTP_SERVER_ARG_MAX + 1];

	if (s->state == SMTP_SERVER_S_CLOSED || s->close_after_flush)
		return;
	if (what == SMTP_SERVER_EV_NEED_MORE)
		rm_panic("smtp_server: answer %d with nothing pending", (int)id);
	s->pending = SMTP_SERVER_EV_NEED_MORE;
	if (arg) {
		snprintf(a, sizeof(a), "%s", arg);
		arg = a;
	}
	switch (what) {
	case SMTP_SERVER_EV_MAIL:
		must_reply(s, id, arg);
		if (ok) {
			s->has_mail = true;
			s->n_rcpt = 0;
		} else {
			txn_reset(s);
			if (is_perm)
				count_error(s);
		}
		break;
	case SMTP_SERVER_EV_RCPT:
		/* permanent refusals count (dictionary attacks); 4xx do not */
		must_reply(s, id, arg);
		if (ok)
			s->n_rcpt++;
		else if (is_perm)
			count_error(s);
		break;
	case SMTP_SERVER_EV_DATA_BEGIN:
		answer_data_begin(s, ok, id);
		break;
	case SMTP_SERVER_EV_DATA_END:
		must_reply(s, id, arg);
		s->is_msg_open = false;
		txn_reset(s);
		break;
	default: /* STARTTLS */
		must_reply(s, id, arg);
		if (ok) {
			/* RFC 3207 4.2: forget everything; drop pipelined plaintext (CVE-2011-0411) */
			s->is_tls = true;
			s->is_greeted = false;
			s->is_ehlo = false;
			txn_reset(s);
			s->in_off = s->in_len = 0;
		}
		break;
	}
}

const uint8_t *smtp_server_output(struct smtp_server *s, size_t *len)
{
	*len = s->out_len;
	return s->out;
}

void smtp_server_output_done(struct smtp_server *s, size_t n)
{
	if (n > s->out_len)
		rm_panic("smtp_server: output_done %zu > %zu", n, s->out_len);
	memmove(s->out, s->out + n, s->out_len - n);
	s->out_len -= n;
}

/* drop_pending - eof/timeout: forget a pending answer; keep a complete message. */
static void drop_pending(struct smtp_server *s, enum smtp_server_abort why)
{
	if (s->pending != SMTP_SERVER_EV_DATA_END)
		abort_msg(s, why);
	s->pending = SMTP_SERVER_EV_NEED_MORE;
}

void smtp_server_eof(struct smtp_server *s)
{
	if (s->state == SMTP_SERVER_S_CLOSED || s->close_after_flush)
		return;
	drop_pending(s, SMTP_SERVER_ABORT_EOF);
	s->close_after_flush = true;
}

void smtp_server_timeout(struct smtp_server *s)
{
	if (s->state == SMTP_SERVER_S_CLOSED || s->close_after_flush)
		return;
	drop_pending(s, SMTP_SERVER_ABORT_TIMEOUT);
	close_with(s, SMTP_REPLY_TIMEOUT);
}

void smtp_server_shutdown(struct smtp_server *s)
{
	s->is_shutdown = true;
}

const char *smtp_server_action(const struct smtp_server *s)
{
	if (s->pending == SMTP_SERVER_EV_DATA_END)
		return "waiting for commit";
	if (s->pending != SMTP_SERVER_EV_NEED_MORE)
		return "waiting for policy";
	switch (s->state) {
	case SMTP_SERVER_S_INIT:   return "starting";
	case SMTP_SERVER_S_SKIP:   return "skipping an over-long line";
	case SMTP_SERVER_S_DATA:   return "reading DATA";
	case SMTP_SERVER_S_BDAT:   return "reading a BDAT chunk";
	case SMTP_SERVER_S_CLOSED: return "closing";
	default:                   return "reading a command";
	}
}

/* --- the Received: header ------------------------------------------------- */

/* put_clean - append s sanitised for a trace field; returns false when out of room. */
static bool put_clean(char *out, size_t cap, size_t *o, const char *str, bool keep_8bit)
{
	for (; *str; str++) {
		unsigned char c = (unsigned char)*str;
		bool ok = (c > 0x20 && c < 0x7f && !strchr("()<>;\\\"", c)) ||
			  (keep_8bit && c >= 0x80);

		if (*o + 1 >= cap)
			return false;
		out[(*o)++] = ok ? (char)c : '?';
	}
	out[*o] = '\0';
	return true;
}

/* put_raw - append our own constant text. */
static bool put_raw(char *out, size_t cap, size_t *o, const char *str)
{
	size_t n = strlen(str);

	if (*o + n + 1 > cap)
		return false;
	memcpy(out + *o, str, n + 1);
	*o += n;
	return true;
}

int smtp_server_received(const struct smtp_server *s, char *out, size_t cap,
			 const char *client_addr, const char *client_name,
			 const char *queue_id, const char *rcpt_or_null,
			 const char *date_rfc5322)
{
	const char *proto = !s->is_ehlo ? "SMTP" : s->mail.smtputf8 ?
			    (s->is_tls ? "UTF8SMTPS" : "UTF8SMTP") :
			    (s->is_tls ? "ESMTPS" : "ESMTP");
	size_t o = 0;
	bool ok;

	if (out == NULL || client_addr == NULL || queue_id == NULL || date_rfc5322 == NULL)
		return -EINVAL;
	if (cap == 0)
		return -ENOSPC;
	out[0] = '\0';
	/* RFC 5321 4.4 time-stamp-line, folded before "by", "for" (RFC 5322 2.2.3) */
	ok = put_raw(out, cap, &o, "Received: from ") &&
	     put_clean(out, cap, &o, s->helo[0] ? s->helo : "unknown", false) &&
	     put_raw(out, cap, &o, " (") &&
	     put_clean(out, cap, &o, client_name ? client_name : "unknown", false) &&
	     put_raw(out, cap, &o, " [") &&
	     put_clean(out, cap, &o, client_addr, false) &&
	     put_raw(out, cap, &o, "])\r\n\tby ") &&
	     put_clean(out, cap, &o, s->lim.hostname, false) &&
	     put_raw(out, cap, &o, " (ringmta) with ") &&
	     put_raw(out, cap, &o, proto) &&
	     put_raw(out, cap, &o, " id ") &&
	     put_clean(out, cap, &o, queue_id, false);
	if (ok && rcpt_or_null)
		ok = put_raw(out, cap, &o, "\r\n\tfor <") &&
		     put_clean(out, cap, &o, rcpt_or_null, s->mail.smtputf8) &&
		     put_raw(out, cap, &o, ">");
	ok = ok && put_raw(out, cap, &o, ";\r\n\t") &&
	     put_raw(out, cap, &o, date_rfc5322) &&
	     put_raw(out, cap, &o, "\r\n");
	if (!ok)
		return -ENOSPC;
	return (int)o;
}
