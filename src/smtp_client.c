/*
 * smtp_client - the outbound SMTP/LMTP client state machine, sans-I/O.
 *
 * Owns: one connection's protocol state in struct smtp_client: the reply
 *   input buffer, the output ring, the FIFO of commands awaiting replies,
 *   the transaction cursor. No heap.
 * Must not: allocate, log, touch sockets, clocks or files; parse a reply
 *   before its command was written; move output bytes the host may have
 *   a send in flight on.
 * Interface: include/ringmta/smtp_client.h
 * Limits: reply line max_reply_line_bytes (<= SMTP_CLIENT_IN_BYTES),
 *   max_reply_lines per reply, SMTP_CLIENT_PIPE_MAX commands in flight,
 *   SMTP_CLIENT_BDAT_WINDOW chunks in flight, lim.max_rcpt recipients.
 * Errors: host calls return 0 or a negative enum smtp_client_err; peer
 *   misbehaviour is a sticky FAILED event; rm_panic only for host bugs
 *   (bad helo_name, output_done beyond output) and broken invariants.
 * Standards: RFC 5321 3.1, 3.8, 4.1.1, 4.2 (reply syntax), 4.5.2
 *   (transparency), 4.5.3.1.5, 4.5.3.2 (timeouts); RFC 2920 (pipelining);
 *   RFC 3030 (CHUNKING, BINARYMIME); RFC 2033 (LMTP); RFC 1870 (SIZE);
 *   RFC 6152 (8BITMIME); RFC 6531 (SMTPUTF8); RFC 3461 (DSN); RFC 3463,
 *   2034 (enhanced codes); RFC 3207 (STARTTLS).
 *
 * Design. Every command written pushes its kind on the pipe FIFO; a
 * complete reply pops the head and goes to that kind's handler (table
 * below), which may emit one event. One _next call runs, in this order:
 *   sticky end (FAILED/CLOSED) > one-shot events (STARTTLS, READY,
 *   TXN_DONE) > WAIT for TLS/TXN > a pending command (pend) > the
 *   transaction pump (writes MAIL/RCPT/DATA, RSET at the end) > WAIT BODY
 *   > WAIT NEXT (once per transaction) > parse one reply line (only with
 *   a command outstanding).
 * Host actions come before parsing, so the events never depend on how
 * the server's bytes were split (tested at every offset).
 *
 * Transitions (st):
 *   HANDSHAKE --greeting 2xx--> (EHLO) --2xx--> READY_EV | (STARTTLS)
 *   (STARTTLS) --220--> TLS_EV --> TLS_WAIT --tls_done--> (EHLO) ...
 *   EHLO --5xx (SMTP)--> (HELO) --2xx--> READY_EV
 *   READY_EV --> IDLE --begin_txn--> TXN --all replies, RSET--> TXN_DONE_EV
 *   TXN --end of data written, WAIT NEXT, begin_txn--> TXN (the old one
 *     is the tail until its end-of-data reply: TXN_DONE for it first)
 *   TXN_DONE_EV --> IDLE;  IDLE --rset--> PROBE --2xx--> IDLE
 *   IDLE --quit--> QUIT --any reply / eof--> CLOSED
 *   any --421, bad reply, eof, timeout--> FAILED
 */
#include "ringmta/smtp_client.h"

#include <string.h>

#include "ringmta/util.h"

/* states (struct smtp_client.st) */
enum {
	ST_HANDSHAKE = 0, /* greeting, EHLO/HELO/LHLO, STARTTLS outstanding */
	ST_TLS_EV,        /* STARTTLS event to hand out */
	ST_TLS_WAIT,      /* waiting for smtp_client_tls_done() */
	ST_READY_EV,      /* READY event to hand out */
	ST_IDLE,          /* WAIT TXN */
	ST_PROBE,         /* RSET probe outstanding */
	ST_TXN,           /* a transaction */
	ST_TXN_DONE_EV,   /* TXN_DONE event to hand out */
	ST_QUIT,          /* QUIT written or pending */
	ST_CLOSED,
	ST_FAILED,
};

/* command kinds (the pipe FIFO, struct smtp_client.pend) */
enum {
	K_NONE = 0, K_GREETING, K_EHLO, K_HELO, K_STARTTLS, K_MAIL, K_RCPT,
	K_DATA, K_DOT, K_BDAT, K_BDAT_LAST, K_RSET, K_PROBE, K_QUIT,
	K_COUNT_
};

/* handler results besides an event kind: go on with the loop */
#define H_CONTINUE (-1)

/* BDAT_HDR_MAX - "BDAT " + 20 digits + " LAST" + CRLF. */
#define BDAT_HDR_MAX 32

/* --- names ------------------------------------------------------------------- */

const char *smtp_client_ev_name(int kind)
{
	static const char *const names[] = {
		"NEED_MORE", "WAIT", "FLUSH", "STARTTLS", "READY", "MAIL_RESULT",
		"RCPT_RESULT", "DATA_RESULT", "TXN_DONE", "CLOSED", "FAILED",
	};

	if (kind < 0 || (size_t)kind >= sizeof(names) / sizeof(names[0]))
		return "UNKNOWN";
	return names[kind];
}

const char *smtp_client_fail_name(enum smtp_client_fail fail)
{
	static const char *const names[] = {
		"none", "greeting", "helo", "closing", "protocol",
		"line_too_long", "too_many_lines", "eof", "timeout",
		"tls_required", "rset",
	};

	if ((size_t)fail >= sizeof(names) / sizeof(names[0]))
		return "unknown";
	return names[fail];
}

const char *smtp_client_err_name(int err)
{
	static const char *const names[] = {
		"E_STATE", "E_FAILED", "E_ADDR", "E_PARAM", "E_NEED_EXT",
		"E_TOO_BIG", "E_BUSY",
	};
	int i = err - SMTP_CLIENT_E_STATE;

	if (err == 0)
		return "OK";
	if (i < 0 || (size_t)i >= sizeof(names) / sizeof(names[0]))
		return "unknown_error";
	return names[i];
}

/* phase_table - name and RFC 5321 4.5.3.2 minimum timeout per phase. */
static const struct {
	const char *name;
	uint32_t timeout_ms;
} phase_table[] = {
	[SMTP_CLIENT_PHASE_NONE]       = { "NONE", 0 },
	[SMTP_CLIENT_PHASE_GREETING]   = { "GREETING", 5 * 60000 },
	[SMTP_CLIENT_PHASE_HELO]       = { "HELO", 5 * 60000 },
	[SMTP_CLIENT_PHASE_MAIL]       = { "MAIL", 5 * 60000 },
	[SMTP_CLIENT_PHASE_RCPT]       = { "RCPT", 5 * 60000 },
	[SMTP_CLIENT_PHASE_DATA_INIT]  = { "DATA_INIT", 2 * 60000 },
	[SMTP_CLIENT_PHASE_DATA_BLOCK] = { "DATA_BLOCK", 3 * 60000 },
	[SMTP_CLIENT_PHASE_DATA_END]   = { "DATA_END", 10 * 60000 },
	[SMTP_CLIENT_PHASE_RSET]       = { "RSET", 5 * 60000 },
	[SMTP_CLIENT_PHASE_QUIT]       = { "QUIT", 5 * 60000 },
};

const char *smtp_client_phase_name(enum smtp_client_phase phase)
{
	if ((size_t)phase >= sizeof(phase_table) / sizeof(phase_table[0]))
		return "UNKNOWN";
	return phase_table[phase].name;
}

uint32_t smtp_client_phase_timeout_ms(enum smtp_client_phase phase)
{
	if ((size_t)phase >= sizeof(phase_table) / sizeof(phase_table[0]))
		return 0;
	return phase_table[phase].timeout_ms;
}

/* kind_phase - the phase of waiting for a reply to a command kind. */
static const uint8_t kind_phase[K_COUNT_] = {
	[K_NONE] = SMTP_CLIENT_PHASE_NONE,
	[K_GREETING] = SMTP_CLIENT_PHASE_GREETING,
	[K_EHLO] = SMTP_CLIENT_PHASE_HELO,
	[K_HELO] = SMTP_CLIENT_PHASE_HELO,
	[K_STARTTLS] = SMTP_CLIENT_PHASE_HELO,
	[K_MAIL] = SMTP_CLIENT_PHASE_MAIL,
	[K_RCPT] = SMTP_CLIENT_PHASE_RCPT,
	[K_DATA] = SMTP_CLIENT_PHASE_DATA_INIT,
	[K_DOT] = SMTP_CLIENT_PHASE_DATA_END,
	[K_BDAT] = SMTP_CLIENT_PHASE_DATA_BLOCK,
	[K_BDAT_LAST] = SMTP_CLIENT_PHASE_DATA_END,
	[K_RSET] = SMTP_CLIENT_PHASE_RSET,
	[K_PROBE] = SMTP_CLIENT_PHASE_RSET,
	[K_QUIT] = SMTP_CLIENT_PHASE_QUIT,
};

/* --- set-up -------------------------------------------------------------------- */

void smtp_client_limits_default(struct smtp_client_limits *lim)
{
	memset(lim, 0, sizeof(*lim));
	lim->helo_name = "localhost";
	lim->max_reply_line_bytes = 2048;
	lim->max_reply_lines = 64;
	lim->max_rcpt = 1000;
	lim->use_pipelining = true;
	lim->use_chunking = true;
}

size_t smtp_client_size(void)
{
	return sizeof(struct smtp_client);
}

static void pipe_push(struct smtp_client *c, uint8_t kind)
{
	if (c->pipe_len >= SMTP_CLIENT_PIPE_MAX)
		rm_panic("smtp_client: pipe overflow");
	c->pipe[(c->pipe_head + c->pipe_len) % SMTP_CLIENT_PIPE_MAX] = kind;
	c->pipe_len++;
}

static uint8_t pipe_peek(const struct smtp_client *c)
{
	return c->pipe_len ? c->pipe[c->pipe_head] : K_NONE;
}

static void pipe_pop(struct smtp_client *c)
{
	c->pipe_head = (c->pipe_head + 1) % SMTP_CLIENT_PIPE_MAX;
	c->pipe_len--;
}

void smtp_client_init(struct smtp_client *c, const struct smtp_client_limits *lim)
{
	size_t n;

	if (lim == NULL || lim->helo_name == NULL)
		rm_panic("smtp_client: init without helo_name");
	n = strlen(lim->helo_name);
	if (n == 0 || n > SMTP_PROTO_DOMAIN_MAX)
		rm_panic("smtp_client: helo_name length %zu", n);
	for (size_t i = 0; i < n; i++)
		if ((uint8_t)lim->helo_name[i] < 0x21 || (uint8_t)lim->helo_name[i] > 0x7e)
			rm_panic("smtp_client: helo_name byte 0x%02x", (uint8_t)lim->helo_name[i]);
	memset(c, 0, offsetof(struct smtp_client, in));
	c->lim = *lim;
	if (c->lim.max_reply_line_bytes < 16)
		c->lim.max_reply_line_bytes = 16;
	if (c->lim.max_reply_line_bytes > SMTP_CLIENT_IN_BYTES)
		c->lim.max_reply_line_bytes = SMTP_CLIENT_IN_BYTES;
	if (c->lim.max_reply_lines == 0)
		c->lim.max_reply_lines = 1;
	if (c->lim.max_rcpt == 0 || c->lim.max_rcpt > SMTP_CLIENT_RCPT_MAX)
		c->lim.max_rcpt = SMTP_CLIENT_RCPT_MAX;
	c->st = ST_HANDSHAKE;
	pipe_push(c, K_GREETING);
}

void smtp_client_fini(struct smtp_client *c)
{
	c->st = ST_CLOSED;
}

const struct smtp_client_caps *smtp_client_caps(const struct smtp_client *c)
{
	return &c->caps;
}

/* --- output ring ----------------------------------------------------------------- */

static size_t out_room(const struct smtp_client *c)
{
	return SMTP_CLIENT_OUT_BYTES - c->out_len;
}

/* out_put - append n bytes (n <= out_room) after the pending ones, wrapping. */
static void out_put(struct smtp_client *c, const void *p, size_t n)
{
	size_t tail = (c->out_head + c->out_len) % SMTP_CLIENT_OUT_BYTES;
	size_t first = SMTP_CLIENT_OUT_BYTES - tail;

	if (first > n)
		first = n;
	memcpy(c->out + tail, p, first);
	if (n > first)
		memcpy(c->out, (const uint8_t *)p + first, n - first);
	c->out_len += n;
}

const uint8_t *smtp_client_output(struct smtp_client *c, size_t *len)
{
	size_t n = SMTP_CLIENT_OUT_BYTES - c->out_head;

	if (n > c->out_len)
		n = c->out_len;
	c->out_lent = n;
	*len = n;
	return c->out + c->out_head;
}

void smtp_client_output_done(struct smtp_client *c, size_t n)
{
	if (n > c->out_lent)
		rm_panic("smtp_client: output_done(%zu) beyond output (%zu)", n, c->out_lent);
	c->out_lent -= n;
	c->out_len -= n;
	c->out_head = (c->out_head + n) % SMTP_CLIENT_OUT_BYTES;
	if (c->out_len == 0)
		c->out_head = 0;  /* nothing in flight: start over unwrapped */
}

/* --- command formatting ------------------------------------------------------------ */

/* struct cmd - one command being formatted (bounded by SMTP_CLIENT_CMD_MAX). */
struct cmd {
	size_t n;
	char b[SMTP_CLIENT_CMD_MAX];
};

static void cmd_str(struct cmd *m, const char *s)
{
	size_t n = strlen(s);

	if (n > sizeof(m->b) - m->n)
		rm_panic("smtp_client: command overflow");
	memcpy(m->b + m->n, s, n);
	m->n += n;
}

/* u64_dec - decimal digits of v into out (>= 21 bytes), NUL-terminated; returns the length. */
static size_t u64_dec(char *out, uint64_t v)
{
	char tmp[24];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	out[n] = '\0';
	return n;
}

static void cmd_u64(struct cmd *m, uint64_t v)
{
	char d[24];

	u64_dec(d, v);
	cmd_str(m, d);
}

static void fmt_mail(const struct smtp_client *c, struct cmd *m)
{
	const struct smtp_client_txn *t = c->txn;

	cmd_str(m, "MAIL FROM:<");
	cmd_str(m, t->sender);
	cmd_str(m, ">");
	if (t->has_size && c->caps.has_size) {
		cmd_str(m, " SIZE=");
		cmd_u64(m, t->size);
	}
	if (t->body == SMTP_PROTO_BODY_BINARYMIME)
		cmd_str(m, " BODY=BINARYMIME");
	else if (t->body == SMTP_PROTO_BODY_8BITMIME && c->caps.eightbitmime)
		cmd_str(m, " BODY=8BITMIME");
	else if (t->body == SMTP_PROTO_BODY_7BIT && c->caps.eightbitmime)
		cmd_str(m, " BODY=7BIT");
	if (t->is_smtputf8)
		cmd_str(m, " SMTPUTF8");
	if (c->caps.dsn && t->ret != SMTP_PROTO_RET_NONE)
		cmd_str(m, t->ret == SMTP_PROTO_RET_FULL ? " RET=FULL" : " RET=HDRS");
	if (c->caps.dsn && t->envid) {
		cmd_str(m, " ENVID=");
		cmd_str(m, t->envid);
	}
	cmd_str(m, "\r\n");
}

static void fmt_rcpt(const struct smtp_client *c, struct cmd *m, const struct smtp_client_rcpt *r)
{
	cmd_str(m, "RCPT TO:<");
	cmd_str(m, r->addr);
	cmd_str(m, ">");
	if (c->caps.dsn && r->notify) {
		const char *sep = " NOTIFY=";

		if (r->notify & SMTP_PROTO_NOTIFY_NEVER) {
			cmd_str(m, " NOTIFY=NEVER");
		} else {
			if (r->notify & SMTP_PROTO_NOTIFY_SUCCESS) {
				cmd_str(m, sep);
				cmd_str(m, "SUCCESS");
				sep = ",";
			}
			if (r->notify & SMTP_PROTO_NOTIFY_FAILURE) {
				cmd_str(m, sep);
				cmd_str(m, "FAILURE");
				sep = ",";
			}
			if (r->notify & SMTP_PROTO_NOTIFY_DELAY) {
				cmd_str(m, sep);
				cmd_str(m, "DELAY");
			}
		}
	}
	if (c->caps.dsn && r->orcpt) {
		cmd_str(m, " ORCPT=");
		cmd_str(m, r->orcpt);
	}
	cmd_str(m, "\r\n");
}

/* fmt_simple - the fixed commands and the lone end-of-data dot. */
static void fmt_simple(const struct smtp_client *c, struct cmd *m, uint8_t kind)
{
	switch (kind) {
	case K_EHLO:
		cmd_str(m, c->lim.is_lmtp ? "LHLO " : "EHLO ");
		cmd_str(m, c->lim.helo_name);
		cmd_str(m, "\r\n");
		break;
	case K_HELO:
		cmd_str(m, "HELO ");
		cmd_str(m, c->lim.helo_name);
		cmd_str(m, "\r\n");
		break;
	case K_STARTTLS: cmd_str(m, "STARTTLS\r\n"); break;
	case K_DATA:     cmd_str(m, "DATA\r\n"); break;
	case K_DOT:      cmd_str(m, ".\r\n"); break;
	case K_RSET:
	case K_PROBE:    cmd_str(m, "RSET\r\n"); break;
	case K_QUIT:     cmd_str(m, "QUIT\r\n"); break;
	default:
		rm_panic("smtp_client: no format for kind %d", kind);
	}
}

/*
 * write_cmd - write a formatted command and expect its reply. Returns
 * false (nothing written) when the output or the pipe has no room.
 */
static bool write_cmd(struct smtp_client *c, const struct cmd *m, uint8_t kind)
{
	if (m->n > out_room(c) || c->pipe_len >= SMTP_CLIENT_PIPE_MAX)
		return false;
	out_put(c, m->b, m->n);
	pipe_push(c, kind);
	return true;
}

/* --- failure ----------------------------------------------------------------------- */

/*
 * fail - the connection is over (sticky). with_reply: c->reply caused it.
 * quit: be polite (the peer is sane), if the output has room.
 */
static int fail(struct smtp_client *c, enum smtp_client_fail why, const char *reason,
		bool with_reply, bool quit)
{
	c->fail_phase = with_reply ? kind_phase[c->reply_kind] : (uint8_t)smtp_client_phase(c);
	c->st = ST_FAILED;
	c->fail = (uint8_t)why;
	c->fail_reason = reason;
	c->has_fail_reply = with_reply;
	if (quit && out_room(c) >= 6) {
		out_put(c, "QUIT\r\n", 6);
		c->is_quit_queued = true;
	}
	return SMTP_CLIENT_EV_FAILED;
}

enum smtp_client_phase smtp_client_phase(const struct smtp_client *c)
{
	if (c->st == ST_FAILED || c->st == ST_CLOSED)
		return SMTP_CLIENT_PHASE_NONE;
	if (c->pipe_len)
		return (enum smtp_client_phase)kind_phase[pipe_peek(c)];
	if (c->st == ST_TXN && c->is_data_go && !c->is_txn_over && !c->is_body_done)
		return SMTP_CLIENT_PHASE_DATA_BLOCK;
	return SMTP_CLIENT_PHASE_NONE;
}

/* --- reply handlers ---------------------------------------------------------------- */

static bool is_accepted(const struct smtp_client_tally *t, unsigned i)
{
	return t->accepted[i / 8] & (1u << (i % 8));
}

/* after_ehlo - capabilities known: STARTTLS first if wanted, else READY. */
static int after_ehlo(struct smtp_client *c)
{
	if (!c->is_tls && c->lim.use_starttls && c->caps.starttls) {
		c->pend = K_STARTTLS;
		return H_CONTINUE;
	}
	if (!c->is_tls && c->lim.require_tls)
		return fail(c, SMTP_CLIENT_FAIL_TLS_REQUIRED, "no_starttls", false, true);
	c->is_pipelining = c->caps.pipelining && c->lim.use_pipelining;
	c->st = ST_READY_EV;
	return H_CONTINUE;
}

static int on_greeting(struct smtp_client *c, unsigned cls)
{
	if (cls != 2)
		return fail(c, SMTP_CLIENT_FAIL_GREETING, "greeting_refused", true, true);
	c->pend = K_EHLO;
	return H_CONTINUE;
}

static int on_ehlo(struct smtp_client *c, unsigned cls)
{
	if (cls == 2) {
		c->caps.is_esmtp = true;
		return after_ehlo(c);
	}
	memset(&c->caps, 0, sizeof(c->caps));
	if (cls == 5 && !c->lim.is_lmtp) {
		c->pend = K_HELO;  /* RFC 5321 3.2: fall back to HELO */
		return H_CONTINUE;
	}
	return fail(c, SMTP_CLIENT_FAIL_HELO, "ehlo_refused", true, true);
}

static int on_helo(struct smtp_client *c, unsigned cls)
{
	if (cls != 2)
		return fail(c, SMTP_CLIENT_FAIL_HELO, "helo_refused", true, true);
	memset(&c->caps, 0, sizeof(c->caps));
	return after_ehlo(c);
}

static int on_starttls(struct smtp_client *c, unsigned cls)
{
	if (cls == 2) {
		c->st = ST_TLS_EV;
		return H_CONTINUE;
	}
	if (c->lim.require_tls)
		return fail(c, SMTP_CLIENT_FAIL_TLS_REQUIRED, "starttls_refused", true, true);
	c->caps.starttls = false;  /* RFC 3207 4: go on in the clear */
	return after_ehlo(c);
}

static int on_mail(struct smtp_client *c, unsigned cls)
{
	c->is_mail_replied = true;
	c->is_mail_ok = cls == 2;
	if (!c->is_mail_ok) {
		if (c->txn_status == SMTP_CLIENT_TXN_SENT)
			c->txn_status = SMTP_CLIENT_TXN_MAIL_REFUSED;
		c->is_txn_over = true;
	}
	return SMTP_CLIENT_EV_MAIL_RESULT;
}

static int on_rcpt(struct smtp_client *c, unsigned cls, struct smtp_client_ev *ev)
{
	unsigned i = c->tl.rcpt_replied++;

	if (!c->is_mail_ok)
		return H_CONTINUE;  /* the MAIL reply already applies to all */
	if (cls == 2) {
		c->tl.accepted[i / 8] |= (uint8_t)(1u << (i % 8));
		c->tl.n_accepted++;
	}
	ev->rcpt_index = i;
	return SMTP_CLIENT_EV_RCPT_RESULT;
}

/* no_rcpt - every recipient was refused: the transaction ends without data. */
static void no_rcpt(struct smtp_client *c)
{
	if (c->txn_status == SMTP_CLIENT_TXN_SENT)
		c->txn_status = SMTP_CLIENT_TXN_NO_RCPT;
	c->is_txn_over = true;
}

static int on_data(struct smtp_client *c, unsigned cls, struct smtp_client_ev *ev)
{
	if (cls == 3 && c->tl.n_accepted > 0 && !c->is_txn_over) {
		c->is_data_go = true;
		c->is_body_bol = true;
		c->body_tail = 2;  /* as if after CRLF: an empty body is "." CRLF */
		return H_CONTINUE;
	}
	if (cls == 3) {
		/*
		 * RFC 2920 3.1: a 354 although MAIL or every RCPT was refused;
		 * the server now reads data: end the empty message (as Postfix).
		 */
		if (c->lim.is_lmtp)  /* RFC 2033 4.2: the DATA MUST fail */
			return fail(c, SMTP_CLIENT_FAIL_PROTOCOL, "354_without_rcpt", true, false);
		no_rcpt(c);
		c->is_lone_dot = true;
		c->pend = K_DOT;
		return H_CONTINUE;
	}
	if (!c->is_mail_ok || c->is_txn_over)
		return H_CONTINUE;  /* the MAIL reply already said it all */
	if (c->tl.n_accepted == 0) {
		no_rcpt(c);
		return H_CONTINUE;
	}
	c->txn_status = SMTP_CLIENT_TXN_DATA_REFUSED;
	c->is_txn_over = true;
	ev->is_all = true;
	return SMTP_CLIENT_EV_DATA_RESULT;
}

/*
 * dot_replies - replies the end of data gets: one per accepted recipient
 * for LMTP (RFC 2033 4.2), unless the message had already failed.
 */
static unsigned dot_replies(const struct smtp_client *c)
{
	if (!c->lim.is_lmtp || c->is_lone_dot || c->txn_status != SMTP_CLIENT_TXN_SENT)
		return 1;
	return c->tl.n_accepted;
}

/*
 * dot_result - the DATA_RESULT of one end-of-data reply to a message that
 * was sent, for the transaction whose tally is t: all accepted recipients
 * (SMTP), or the next accepted one in RCPT order (LMTP).
 */
static int dot_result(const struct smtp_client *c, struct smtp_client_tally *t, unsigned cls,
		      struct smtp_client_ev *ev)
{
	if (!c->lim.is_lmtp) {
		if (cls == 2)
			t->n_delivered = t->n_accepted;
		ev->is_all = true;
		return SMTP_CLIENT_EV_DATA_RESULT;
	}
	while (t->lmtp_next < t->rcpt_replied && !is_accepted(t, t->lmtp_next))
		t->lmtp_next++;
	ev->rcpt_index = t->lmtp_next++;
	if (cls == 2)
		t->n_delivered++;
	return SMTP_CLIENT_EV_DATA_RESULT;
}

/* on_dot - a reply to "." or BDAT LAST; the handler pops the pipe itself. */
static int on_dot(struct smtp_client *c, unsigned cls, struct smtp_client_ev *ev)
{
	bool was_sent = c->txn_status == SMTP_CLIENT_TXN_SENT && !c->is_lone_dot;

	if (pipe_peek(c) == K_BDAT_LAST)
		c->bdat_inflight--;
	if (++c->tl.dot_replied >= dot_replies(c)) {
		pipe_pop(c);
		c->is_txn_over = true;
		c->is_dot_replied = was_sent;
	}
	if (!was_sent)
		return H_CONTINUE;
	return dot_result(c, &c->tl, cls, ev);
}

/*
 * on_tail_dot - an end-of-data reply for the previous transaction (the
 * current one began behind it, so it was sent and nothing else of it is
 * outstanding); its TXN_DONE follows the last one.
 */
static int on_tail_dot(struct smtp_client *c, unsigned cls, struct smtp_client_ev *ev)
{
	struct smtp_client_tally *t = &c->tail;

	ev->txn = c->tail_txn;
	if (++t->dot_replied >= (c->lim.is_lmtp ? t->n_accepted : 1)) {
		pipe_pop(c);
		c->has_tail = false;
		c->is_tail_done = true;
	}
	return dot_result(c, t, cls, ev);
}

static int on_bdat(struct smtp_client *c, unsigned cls, struct smtp_client_ev *ev)
{
	c->bdat_inflight--;
	if (cls == 2 || c->txn_status != SMTP_CLIENT_TXN_SENT)
		return H_CONTINUE;
	/* RFC 3030 2: a refused chunk fails the transaction; no more chunks */
	c->txn_status = SMTP_CLIENT_TXN_DATA_REFUSED;
	c->is_txn_over = true;
	ev->is_all = true;
	return SMTP_CLIENT_EV_DATA_RESULT;
}

static int on_rset(struct smtp_client *c, unsigned cls)
{
	if (cls != 2)
		return fail(c, SMTP_CLIENT_FAIL_RSET, "rset_refused", true, true);
	c->st = c->st == ST_PROBE ? ST_IDLE : ST_TXN_DONE_EV;
	return H_CONTINUE;
}

/*
 * handle_reply - a complete reply for the pipe's head command: generic
 * checks, then the handler for the command kind. Returns an event kind or
 * H_CONTINUE.
 */
static int handle_reply(struct smtp_client *c, struct smtp_client_ev *ev)
{
	uint8_t kind = pipe_peek(c);
	unsigned cls = c->reply.code / 100;

	c->reply_kind = kind;

	if (kind == K_QUIT) {
		pipe_pop(c);
		c->st = ST_CLOSED;
		return SMTP_CLIENT_EV_CLOSED;
	}
	if (c->reply.code == 421)  /* RFC 5321 3.8: the server is closing */
		return fail(c, kind == K_GREETING ? SMTP_CLIENT_FAIL_GREETING
				: SMTP_CLIENT_FAIL_CLOSING, "421", true, false);
	if (cls == 3 && kind != K_DATA)
		return fail(c, SMTP_CLIENT_FAIL_PROTOCOL, "unexpected_3xx", true, false);
	if (cls == 2 && kind == K_DATA)
		return fail(c, SMTP_CLIENT_FAIL_PROTOCOL, "2xx_to_data", true, false);
	ev->reply = &c->reply;
	ev->txn = c->txn;
	if (kind == K_DOT || kind == K_BDAT_LAST)
		return c->has_tail ? on_tail_dot(c, cls, ev) : on_dot(c, cls, ev);
	pipe_pop(c);
	switch (kind) {
	case K_GREETING: return on_greeting(c, cls);
	case K_EHLO:     return on_ehlo(c, cls);
	case K_HELO:     return on_helo(c, cls);
	case K_STARTTLS: return on_starttls(c, cls);
	case K_MAIL:     return on_mail(c, cls);
	case K_RCPT:     return on_rcpt(c, cls, ev);
	case K_DATA:     return on_data(c, cls, ev);
	case K_BDAT:     return on_bdat(c, cls, ev);
	case K_RSET:
	case K_PROBE:    return on_rset(c, cls);
	default:
		rm_panic("smtp_client: reply for kind %d", kind);
	}
}

/* --- reply parsing ------------------------------------------------------------------- */

static bool ieq(const uint8_t *p, size_t len, const char *kw)
{
	size_t n = strlen(kw);

	if (len != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((p[i] | 0x20) != (kw[i] | 0x20))
			return false;
	return true;
}

/* parse_cap - one EHLO keyword line (RFC 5321 4.1.1.1: ehlo-keyword *(SP ehlo-param)). */
static void parse_cap(struct smtp_client_caps *k, const uint8_t *p, size_t len)
{
	size_t kw = 0;

	while (kw < len && p[kw] != ' ')
		kw++;
	if (ieq(p, kw, "PIPELINING"))
		k->pipelining = true;
	else if (ieq(p, kw, "8BITMIME"))
		k->eightbitmime = true;
	else if (ieq(p, kw, "SMTPUTF8"))
		k->smtputf8 = true;
	else if (ieq(p, kw, "CHUNKING"))
		k->chunking = true;
	else if (ieq(p, kw, "BINARYMIME"))
		k->binarymime = true;
	else if (ieq(p, kw, "DSN"))
		k->dsn = true;
	else if (ieq(p, kw, "STARTTLS"))
		k->starttls = true;
	else if (ieq(p, kw, "ENHANCEDSTATUSCODES"))
		k->enhancedstatuscodes = true;
	else if (ieq(p, kw, "SIZE")) {
		uint64_t v = 0;
		size_t i = kw + 1, nd = 0;

		k->has_size = true;
		for (; i < len && p[i] >= '0' && p[i] <= '9' && nd < 20; i++, nd++) {
			uint64_t d = (uint64_t)(p[i] - '0');

			if (v > (UINT64_MAX - d) / 10) {
				v = 0;  /* absurd: treat as no limit */
				break;
			}
			v = v * 10 + d;
		}
		k->size_max = v;
	}
}

/*
 * esc_len - length of an enhanced status code at the start of p (RFC 3463
 * 2: class "." 1*3digit "." 1*3digit), followed by SP or the end, whose
 * class matches the reply's; 0 if none.
 */
static size_t esc_len(const uint8_t *p, size_t len, unsigned cls)
{
	size_t i = 1;

	if (len < 5 || p[0] != (uint8_t)('0' + cls) || p[1] != '.')
		return 0;
	for (int part = 0; part < 2; part++) {
		size_t start = ++i;

		while (i < len && i - start < 3 && p[i] >= '0' && p[i] <= '9')
			i++;
		if (i == start)
			return 0;
		if (part == 0 && (i >= len || p[i] != '.'))
			return 0;
	}
	if (i < len && p[i] != ' ')
		return 0;
	return i;
}

/* reply_text - add one line's text to the reply, its enhanced code stripped. */
static void reply_text(struct smtp_client *c, const uint8_t *t, size_t n)
{
	struct smtp_client_reply *r = &c->reply;
	size_t el = strlen(r->esc), room;

	if (c->cur_lines == 1) {
		el = esc_len(t, n, r->code / 100);
		memcpy(r->esc, t, el);
		r->esc[el] = '\0';
	}
	if (el && n >= el && memcmp(t, r->esc, el) == 0 && (n == el || t[el] == ' ')) {
		t += el < n ? el + 1 : el;
		n -= el < n ? el + 1 : el;
	}
	if (c->cur_lines > 1) {
		if (r->text_len + 1 >= sizeof(r->text)) {
			r->is_text_cut = true;
			return;
		}
		r->text[r->text_len++] = '\n';
	}
	room = sizeof(r->text) - 1 - r->text_len;
	if (n > room) {
		n = room;
		r->is_text_cut = true;
	}
	memcpy(r->text + r->text_len, t, n);
	r->text_len += n;
	r->text[r->text_len] = '\0';
}

/*
 * parse_line - take one complete reply line from the input. Returns an
 * event kind (a reply completed and its handler emitted one, or FAILED),
 * H_CONTINUE (line taken), or NEED_MORE (no complete line yet).
 */
static int parse_line(struct smtp_client *c, struct smtp_client_ev *ev)
{
	const uint8_t *p = c->in + c->in_off, *lf;
	size_t avail = c->in_len - c->in_off, max = c->lim.max_reply_line_bytes;
	size_t n, line;
	unsigned code;
	bool is_last;

	lf = memchr(p, '\n', avail < max ? avail : max);
	if (lf == NULL) {
		if (avail >= max)
			return fail(c, SMTP_CLIENT_FAIL_LINE_TOO_LONG, "line_too_long", false, false);
		return SMTP_CLIENT_EV_NEED_MORE;
	}
	line = (size_t)(lf - p) + 1;
	c->in_off += line;
	if (line >= 2 && p[line - 2] == '\r')
		n = line - 2;
	else if (c->lim.lenient_bare_lf)
		n = line - 1;
	else
		return fail(c, SMTP_CLIENT_FAIL_PROTOCOL, "bare_lf", false, false);
	if (memchr(p, '\r', n) || memchr(p, '\0', n))
		return fail(c, SMTP_CLIENT_FAIL_PROTOCOL, "bad_char", false, false);
	/* RFC 5321 4.2: Reply-code = %x32-35 %x30-35 %x30-39 */
	if (n < 3 || p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '5' ||
	    p[2] < '0' || p[2] > '9')
		return fail(c, SMTP_CLIENT_FAIL_PROTOCOL, "bad_reply_code", false, false);
	if (n > 3 && p[3] != ' ' && p[3] != '-')
		return fail(c, SMTP_CLIENT_FAIL_PROTOCOL, "bad_reply_separator", false, false);
	is_last = n == 3 || p[3] == ' ';
	code = (unsigned)(p[0] - '0') * 100 + (unsigned)(p[1] - '0') * 10 + (unsigned)(p[2] - '0');
	if (c->cur_lines == 0) {
		c->reply.code = (uint16_t)code;
		c->reply.text_len = 0;
		c->reply.text[0] = '\0';
		c->reply.esc[0] = '\0';
		c->reply.is_text_cut = false;
		if (pipe_peek(c) == K_EHLO)
			memset(&c->caps, 0, sizeof(c->caps));
	} else if (code != c->reply.code) {
		return fail(c, SMTP_CLIENT_FAIL_PROTOCOL, "code_mismatch", false, false);
	}
	if (++c->cur_lines > c->lim.max_reply_lines)
		return fail(c, SMTP_CLIENT_FAIL_TOO_MANY_LINES, "too_many_lines", false, false);
	c->reply.n_lines = c->cur_lines;
	reply_text(c, p + (n > 4 ? 4 : n), n > 4 ? n - 4 : 0);
	if (pipe_peek(c) == K_EHLO && code / 100 == 2 && c->cur_lines > 1 && n > 4)
		parse_cap(&c->caps, p + 4, n - 4);
	if (!is_last)
		return H_CONTINUE;
	c->cur_lines = 0;
	return handle_reply(c, ev);
}

/* --- the transaction pump -------------------------------------------------------------- */

/* pump_envelope - write MAIL, RCPTs, DATA as far as the rules allow. false: no room. */
static bool pump_envelope(struct smtp_client *c)
{
	struct cmd m;

	if (!c->is_mail_sent) {
		m.n = 0;
		fmt_mail(c, &m);
		if (!write_cmd(c, &m, K_MAIL))
			return false;
		c->is_mail_sent = true;
	}
	if (!c->is_pipelining && c->pipe_len)
		return true;
	while (c->rcpt_sent < c->txn->n_rcpt) {
		if (!c->is_pipelining && c->pipe_len)
			return true;
		if (c->pipe_len >= SMTP_CLIENT_PIPE_MAX)
			return true;
		m.n = 0;
		fmt_rcpt(c, &m, &c->txn->rcpt[c->rcpt_sent]);
		if (!write_cmd(c, &m, K_RCPT))
			return false;
		c->rcpt_sent++;
	}
	if (c->is_data_sent || c->is_data_go)
		return true;
	if (c->txn->is_probe) {
		/* verification: every RCPT reply in, then RSET (MAIL accepted)
		 * or nothing; never DATA */
		if (c->pipe_len)
			return true;
		if (c->txn_status == SMTP_CLIENT_TXN_SENT)
			c->txn_status = SMTP_CLIENT_TXN_ABORTED;
		c->is_txn_over = true;
		return true;
	}
	if (c->is_bdat || !c->is_pipelining) {
		/* BDAT, or lock-step DATA: only after every RCPT reply */
		if (c->pipe_len)
			return true;
		if (c->tl.n_accepted == 0) {
			no_rcpt(c);
			return true;
		}
		if (c->is_bdat) {
			c->is_data_go = true;
			return true;
		}
	}
	if (c->pipe_len >= SMTP_CLIENT_PIPE_MAX)
		return true;
	m.n = 0;
	fmt_simple(c, &m, K_DATA);
	if (!write_cmd(c, &m, K_DATA))
		return false;
	c->is_data_sent = true;
	return true;
}

/*
 * pump - the transaction's next commands. Returns false when output room
 * is short (FLUSH).
 */
static bool pump(struct smtp_client *c)
{
	if (!c->is_txn_over && !pump_envelope(c))
		return false;
	if (!c->is_txn_over || c->pipe_len)
		return true;
	if (c->is_mail_ok && !c->is_dot_replied) {
		/* the server may hold transaction state: clear it */
		if (!c->is_rset_sent) {
			c->is_rset_sent = true;
			c->pend = K_RSET;
		}
		return true;
	}
	c->st = ST_TXN_DONE_EV;
	return true;
}

/* body_wanted - the host may give body bytes now (room aside). */
static bool body_wanted(const struct smtp_client *c)
{
	if (c->st != ST_TXN || !c->is_data_go || c->is_txn_over || c->is_body_done)
		return false;
	if (!c->is_bdat)
		return true;
	if (c->pipe_len >= SMTP_CLIENT_PIPE_MAX)
		return false;
	return c->is_pipelining ? c->bdat_inflight < SMTP_CLIENT_BDAT_WINDOW
				: c->bdat_inflight == 0;
}

/* --- the event loop ---------------------------------------------------------------- */

static void fill_done(const struct smtp_client *c, struct smtp_client_ev *ev)
{
	ev->txn = c->txn;
	ev->done.status = (enum smtp_client_txn_status)c->txn_status;
	ev->done.n_rcpt_accepted = c->tl.n_accepted;
	ev->done.n_rcpt_delivered = c->tl.n_delivered;
	ev->done.body_bytes = c->body_bytes;
}

/*
 * next_ok - the next transaction may begin behind this one: PIPELINING,
 * the end of data written for a message that was sent, and its reply the
 * only one outstanding (so nothing can still change this transaction's
 * course but that reply).
 */
static bool next_ok(const struct smtp_client *c)
{
	uint8_t head = pipe_peek(c);

	return c->lim.use_pipelining_next && c->is_pipelining && c->st == ST_TXN &&
	       !c->has_tail && !c->is_tail_done && c->is_body_done && !c->is_txn_over &&
	       c->txn_status == SMTP_CLIENT_TXN_SENT && !c->is_lone_dot && c->pend == K_NONE &&
	       c->pipe_len == 1 && (head == K_DOT || head == K_BDAT_LAST) && c->tl.dot_replied == 0;
}

/* one_shot - events of states that hand out one event and move on; -1 if none. */
static int one_shot(struct smtp_client *c, struct smtp_client_ev *ev)
{
	if (c->is_tail_done && c->st != ST_FAILED && c->st != ST_CLOSED) {
		c->is_tail_done = false;
		ev->txn = c->tail_txn;
		ev->done.status = SMTP_CLIENT_TXN_SENT;
		ev->done.n_rcpt_accepted = c->tail.n_accepted;
		ev->done.n_rcpt_delivered = c->tail.n_delivered;
		ev->done.body_bytes = c->tail_body_bytes;
		c->tail_txn = NULL;
		return SMTP_CLIENT_EV_TXN_DONE;
	}
	switch (c->st) {
	case ST_CLOSED:
		return SMTP_CLIENT_EV_CLOSED;
	case ST_FAILED:
		ev->fail = (enum smtp_client_fail)c->fail;
		ev->reason = c->fail_reason;
		ev->phase = (enum smtp_client_phase)c->fail_phase;
		ev->reply = c->has_fail_reply ? &c->reply : NULL;
		ev->is_quit_queued = c->is_quit_queued;
		return SMTP_CLIENT_EV_FAILED;
	case ST_TLS_EV:
		c->st = ST_TLS_WAIT;
		return SMTP_CLIENT_EV_STARTTLS;
	case ST_TLS_WAIT:
		ev->wait = SMTP_CLIENT_WAIT_TLS;
		return SMTP_CLIENT_EV_WAIT;
	case ST_READY_EV:
		c->st = ST_IDLE;
		ev->caps = &c->caps;
		return SMTP_CLIENT_EV_READY;
	case ST_TXN_DONE_EV:
		fill_done(c, ev);
		c->st = ST_IDLE;
		c->txn = NULL;
		return SMTP_CLIENT_EV_TXN_DONE;
	case ST_IDLE:
		ev->wait = SMTP_CLIENT_WAIT_TXN;
		return SMTP_CLIENT_EV_WAIT;
	default:
		return -1;
	}
}

int smtp_client_next(struct smtp_client *c, struct smtp_client_ev *ev)
{
	int k;

	for (;;) {
		memset(ev, 0, sizeof(*ev));
		k = one_shot(c, ev);
		if (k >= 0)
			break;
		if (c->pend) {
			struct cmd m = { .n = 0 };

			fmt_simple(c, &m, c->pend);
			if (!write_cmd(c, &m, c->pend)) {
				k = SMTP_CLIENT_EV_FLUSH;
				break;
			}
			c->pend = K_NONE;
		}
		if (c->st == ST_TXN && !pump(c)) {
			k = SMTP_CLIENT_EV_FLUSH;
			break;
		}
		if (c->st != ST_TXN && c->st != ST_HANDSHAKE && c->st != ST_PROBE &&
		    c->st != ST_QUIT)
			continue;
		if (c->pend)
			continue;
		if (body_wanted(c)) {
			k = out_room(c) >= (c->is_bdat ? SMTP_CLIENT_CHUNK_MAX + BDAT_HDR_MAX
						 : SMTP_CLIENT_BODY_ROOM)
			? SMTP_CLIENT_EV_WAIT : SMTP_CLIENT_EV_FLUSH;
			if (k == SMTP_CLIENT_EV_WAIT)
				ev->wait = SMTP_CLIENT_WAIT_BODY;
			break;
		}
		if (!c->is_next_offered && next_ok(c)) {
			c->is_next_offered = true;
			ev->wait = SMTP_CLIENT_WAIT_NEXT;
			k = SMTP_CLIENT_EV_WAIT;
			break;
		}
		if (c->pipe_len == 0)
			rm_panic("smtp_client: stuck in state %d", c->st);
		k = parse_line(c, ev);
		if (k != H_CONTINUE)
			break;
	}
	if (k == SMTP_CLIENT_EV_FAILED || k == SMTP_CLIENT_EV_CLOSED) {
		memset(ev, 0, sizeof(*ev));
		k = one_shot(c, ev);
	}
	ev->kind = (enum smtp_client_ev_kind)k;
	return k;
}

/* --- host calls ---------------------------------------------------------------------- */

size_t smtp_client_feed(struct smtp_client *c, const uint8_t *buf, size_t len)
{
	size_t room;

	if (c->st == ST_FAILED || c->st == ST_CLOSED || len == 0)
		return 0;
	if (c->st == ST_TLS_EV || c->st == ST_TLS_WAIT)
		return len;  /* RFC 3207 5: plaintext after "220 ready" is dropped */
	if (c->in_off) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	room = SMTP_CLIENT_IN_BYTES - c->in_len;
	if (len > room)
		len = room;
	memcpy(c->in + c->in_len, buf, len);
	c->in_len += len;
	return len;
}

int smtp_client_tls_done(struct smtp_client *c)
{
	if (c->st == ST_FAILED || c->st == ST_CLOSED)
		return SMTP_CLIENT_E_FAILED;
	if (c->st != ST_TLS_WAIT && c->st != ST_TLS_EV)
		return SMTP_CLIENT_E_STATE;
	c->in_off = c->in_len = 0;
	memset(&c->caps, 0, sizeof(c->caps));
	c->is_tls = true;
	c->pend = K_EHLO;
	c->st = ST_HANDSHAKE;
	return 0;
}

/* addr_check - a host-given mailbox: <= 254 octets, no controls; 8-bit only with SMTPUTF8. */
static int addr_check(const char *a, bool is_utf8)
{
	size_t i;

	if (a == NULL)
		return SMTP_CLIENT_E_ADDR;
	for (i = 0; a[i]; i++) {
		uint8_t b = (uint8_t)a[i];

		if (i >= SMTP_PROTO_PATH_MAX - 2 || b < 0x20 || b == 0x7f || (b >= 0x80 && !is_utf8))
			return SMTP_CLIENT_E_ADDR;
	}
	if (is_utf8 && !smtp_proto_utf8_valid((const uint8_t *)a, i))
		return SMTP_CLIENT_E_ADDR;
	return 0;
}

/* orcpt_check - "addr-type;xtext" (RFC 3461 4.2), <= 500 octets. */
static bool orcpt_check(const char *o)
{
	size_t n = strlen(o), semi;
	const char *s = memchr(o, ';', n);

	if (n > SMTP_PROTO_ORCPT_MAX || s == NULL || s == o)
		return false;
	semi = (size_t)(s - o);
	for (size_t i = 0; i < semi; i++) {
		uint8_t b = (uint8_t)o[i];

		if (!((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') ||
		      (b >= '0' && b <= '9') || b == '-'))
			return false;
	}
	return smtp_proto_xtext_valid((const uint8_t *)s + 1, n - semi - 1);
}

/* txn_check - validate a transaction against the limits and the peer's offer. */
static int txn_check(const struct smtp_client *c, const struct smtp_client_txn *t)
{
	const struct smtp_client_caps *k = &c->caps;
	int rc;

	if (t == NULL || t->rcpt == NULL || t->n_rcpt == 0 || t->n_rcpt > c->lim.max_rcpt ||
	    t->body > SMTP_PROTO_BODY_BINARYMIME || t->ret > SMTP_PROTO_RET_HDRS)
		return SMTP_CLIENT_E_PARAM;
	if (t->envid && (strlen(t->envid) > SMTP_PROTO_ENVID_MAX ||
			 !smtp_proto_xtext_valid((const uint8_t *)t->envid, strlen(t->envid))))
		return SMTP_CLIENT_E_PARAM;
	if ((rc = addr_check(t->sender, t->is_smtputf8)) != 0)
		return rc;
	for (unsigned i = 0; i < t->n_rcpt; i++) {
		const struct smtp_client_rcpt *r = &t->rcpt[i];

		if ((rc = addr_check(r->addr, t->is_smtputf8)) != 0)
			return rc;
		if (r->addr[0] == '\0')
			return SMTP_CLIENT_E_ADDR;
		if (r->notify > 0xf || ((r->notify & SMTP_PROTO_NOTIFY_NEVER) && r->notify != SMTP_PROTO_NOTIFY_NEVER))
			return SMTP_CLIENT_E_PARAM;
		if (r->orcpt && !orcpt_check(r->orcpt))
			return SMTP_CLIENT_E_PARAM;
	}
	if (t->is_smtputf8 && !k->smtputf8)
		return SMTP_CLIENT_E_NEED_EXT;
	if (t->body == SMTP_PROTO_BODY_8BITMIME && !k->eightbitmime && !c->lim.lenient_8bit)
		return SMTP_CLIENT_E_NEED_EXT;
	if (t->body == SMTP_PROTO_BODY_BINARYMIME &&
	    !(k->binarymime && k->chunking && c->lim.use_chunking))
		return SMTP_CLIENT_E_NEED_EXT;
	if (t->has_size && k->has_size && k->size_max && t->size > k->size_max)
		return SMTP_CLIENT_E_TOO_BIG;
	return 0;
}

int smtp_client_begin_txn(struct smtp_client *c, const struct smtp_client_txn *t)
{
	int rc;

	bool is_next;

	if (c->st == ST_FAILED || c->st == ST_CLOSED)
		return SMTP_CLIENT_E_FAILED;
	is_next = c->is_next_offered && next_ok(c);
	if (c->st != ST_IDLE && !is_next)
		return SMTP_CLIENT_E_STATE;
	if ((rc = txn_check(c, t)) != 0)
		return rc;
	if (is_next) {
		/* the current transaction becomes the tail: its end-of-data
		 * reply is the pipe's head, ahead of everything of t */
		c->tail_txn = c->txn;
		c->tail_body_bytes = c->body_bytes;
		memcpy(&c->tail, &c->tl, offsetof(struct smtp_client_tally, accepted) +
		       (c->txn->n_rcpt + 7) / 8);
		c->has_tail = true;
	}
	c->txn = t;
	c->rcpt_sent = 0;
	memset(&c->tl, 0, offsetof(struct smtp_client_tally, accepted));
	c->is_next_offered = false;
	c->txn_status = SMTP_CLIENT_TXN_SENT;
	c->is_mail_sent = c->is_mail_ok = c->is_mail_replied = false;
	c->is_data_sent = c->is_data_go = c->is_body_done = c->is_txn_over = false;
	c->is_dot_replied = c->is_rset_sent = c->is_lone_dot = false;
	c->is_body_bol = true;
	c->body_tail = 2;
	c->body_bytes = 0;
	c->bdat_inflight = 0;
	c->is_bdat = c->caps.chunking && c->lim.use_chunking;
	memset(c->tl.accepted, 0, (t->n_rcpt + 7) / 8);
	c->st = ST_TXN;
	return 0;
}

/*
 * body_dot - DATA body: copy with dot-stuffing (RFC 5321 4.5.2). The scan
 * looks only for "." (memchr) and checks the byte before it, so a body
 * without line-leading dots goes out in one memcpy per output room;
 * nothing is done per byte or per line. A dot after a bare LF is stuffed
 * too, so a peer that ends lines at LF cannot see an end of data inside
 * the body (SMTP smuggling). XXX a dot after a bare CR is not: bodies
 * only hold bare CRs under smtp_server's lenient_bare_cr; normalising
 * them here would close that gap for peers that end lines at CR.
 * Returns the bytes taken.
 */
static size_t body_dot(struct smtp_client *c, const uint8_t *d, size_t len)
{
	size_t taken = 0;

	while (taken < len) {
		size_t room = out_room(c), n, run;
		const uint8_t *s, *e;
		uint8_t b;

		if (room == 0)
			break;
		if (c->is_body_bol && d[taken] == '.') {
			if (room < 2)
				break;
			out_put(c, "..", 2);
			taken++;
			c->is_body_bol = false;
			c->body_tail = 0;
			continue;
		}
		n = len - taken < room ? len - taken : room;
		run = n;
		for (s = d + taken + 1, e = d + taken + n; s < e && (s = memchr(s, '.', (size_t)(e - s))); s++) {
			if (s[-1] == '\n') {
				run = (size_t)(s - (d + taken));
				break;
			}
		}
		out_put(c, d + taken, run);
		b = d[taken + run - 1];
		c->is_body_bol = b == '\n';
		if (b == '\r')
			c->body_tail = 1;
		else if (b == '\n')
			c->body_tail = (run >= 2 ? d[taken + run - 2] == '\r' : c->body_tail == 1) ? 2 : 0;
		else
			c->body_tail = 0;
		taken += run;
	}
	return taken;
}

/* body_end_dot - write the end of data; false when there is no room yet. */
static bool body_end_dot(struct smtp_client *c)
{
	static const char end[] = "\r\n.\r\n";
	size_t skip = c->body_tail == 2 ? 2 : 0;

	if (out_room(c) < 5 - skip || c->pipe_len >= SMTP_CLIENT_PIPE_MAX)
		return false;
	out_put(c, end + skip, 5 - skip);
	pipe_push(c, K_DOT);
	c->is_body_done = true;
	return true;
}

/*
 * body_bdat - one BDAT chunk (RFC 3030 2) of min(len, SMTP_CLIENT_CHUNK_MAX)
 * octets, or nothing until that fits: the framing must not depend on the
 * output room.
 */
static size_t body_bdat(struct smtp_client *c, const uint8_t *d, size_t len, bool is_last)
{
	char hdr[BDAT_HDR_MAX];
	size_t n = len < SMTP_CLIENT_CHUNK_MAX ? len : SMTP_CLIENT_CHUNK_MAX, h;
	bool last;

	if ((len == 0 && !is_last) || out_room(c) < n + BDAT_HDR_MAX)
		return 0;
	last = is_last && n == len;
	memcpy(hdr, "BDAT ", 5);
	h = 5 + u64_dec(hdr + 5, n);
	if (last) {
		memcpy(hdr + h, " LAST", 5);
		h += 5;
	}
	hdr[h++] = '\r';
	hdr[h++] = '\n';
	out_put(c, hdr, h);
	if (n)
		out_put(c, d, n);
	pipe_push(c, last ? K_BDAT_LAST : K_BDAT);
	c->bdat_inflight++;
	c->is_data_sent = true;
	if (last)
		c->is_body_done = true;
	return n;
}

size_t smtp_client_body(struct smtp_client *c, const uint8_t *data, size_t len, bool is_last)
{
	size_t n;

	if (!body_wanted(c))
		return 0;
	if (c->is_bdat) {
		n = body_bdat(c, data, len, is_last);
	} else {
		n = len ? body_dot(c, data, len) : 0;
		if (is_last && n == len)
			body_end_dot(c);
	}
	c->body_bytes += n;
	return n;
}

int smtp_client_rset(struct smtp_client *c)
{
	if (c->st == ST_FAILED || c->st == ST_CLOSED)
		return SMTP_CLIENT_E_FAILED;
	if (c->st == ST_IDLE) {
		c->pend = K_PROBE;
		c->st = ST_PROBE;
		return 0;
	}
	if (c->st != ST_TXN || c->is_txn_over || c->is_body_done)
		return SMTP_CLIENT_E_STATE;
	if (!c->is_bdat && c->is_data_sent)
		return SMTP_CLIENT_E_BUSY;
	c->txn_status = SMTP_CLIENT_TXN_ABORTED;
	c->is_txn_over = true;
	return 0;
}

int smtp_client_quit(struct smtp_client *c)
{
	if (c->st == ST_FAILED || c->st == ST_CLOSED)
		return SMTP_CLIENT_E_FAILED;
	if (c->st != ST_IDLE)
		return SMTP_CLIENT_E_STATE;
	c->pend = K_QUIT;
	c->st = ST_QUIT;
	return 0;
}

void smtp_client_eof(struct smtp_client *c)
{
	if (c->st == ST_FAILED || c->st == ST_CLOSED)
		return;
	if (c->st == ST_QUIT) {
		c->st = ST_CLOSED;
		return;
	}
	fail(c, SMTP_CLIENT_FAIL_EOF, "eof", false, false);
}

bool smtp_client_timeout(struct smtp_client *c, enum smtp_client_phase phase)
{
	if (c->st == ST_FAILED || c->st == ST_CLOSED || phase != smtp_client_phase(c))
		return false;
	fail(c, SMTP_CLIENT_FAIL_TIMEOUT, "timeout", false, false);
	return true;
}
