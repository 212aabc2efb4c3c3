/*
 * test_smtp_server - the session state machine, driven by scripted client
 * byte streams and a scripted host policy. Every scenario runs whole, byte
 * by byte, split at every offset and in random pieces, each piece placed
 * just before a PROT_NONE page; every run must produce the same event log
 * and the same output bytes, and match the expected ones.
 *
 * Host policy (answers): MAIL whose address contains "reject" gets
 * SENDER_REJECTED; RCPT containing "deny" RELAY_DENIED, "unknown"
 * USER_UNKNOWN; DATA_BEGIN gets OK (or NO_STORAGE when the scenario says
 * so); DATA_END gets QUEUED "Q<n>"; STARTTLS gets TLS_GO.
 */
#include "ringmta/smtp_server.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"

#define LOG_MAX 16384
#define OUT_MAX 65536

enum at_end { END_NONE = 0, END_EOF, END_TIMEOUT, END_SHUTDOWN };

/* scenario option bits */
#define O_TLS      0x01u  /* offer_starttls */
#define O_LF       0x02u  /* lenient_bare_lf */
#define O_CR       0x04u  /* lenient_bare_cr */
#define O_8BIT     0x08u  /* lenient_8bit */
#define O_COLON    0x10u  /* lenient_space_after_colon */
#define O_REFUSE   0x20u  /* DATA_BEGIN answered NO_STORAGE */

struct scen {
	const char *name;
	const char *in;
	size_t in_len;           /* 0: strlen */
	unsigned opts;
	enum at_end at_end;
	const char *want_log;    /* events, one per line */
	const char *want_codes;  /* reply codes of final reply lines, space separated */
	size_t max_line;         /* 0: 2048 */
	uint64_t max_msg;        /* 0: default */
	unsigned max_rcpt;       /* 0: default */
	unsigned max_errors;     /* 0: default */
};

struct result {
	char log[LOG_MAX];
	size_t log_len;
	uint8_t out[OUT_MAX];
	size_t out_len;
	bool in_body;            /* the last log line is a BODY being extended */
	bool closed;
	int n_queued;
	int n_data_begin, n_open;
	bool bad;                /* an invariant broke; details in log */
};

static void logf_(struct result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void logf_(struct result *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (r->log_len >= LOG_MAX - 1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(r->log + r->log_len, LOG_MAX - r->log_len, fmt, ap);
	va_end(ap);
	if (n > 0)
		r->log_len += (size_t)n < LOG_MAX - r->log_len ? (size_t)n : LOG_MAX - r->log_len - 1;
}

static void log_bytes(struct result *r, const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (p[i] == '\r')
			logf_(r, "\\r");
		else if (p[i] == '\n')
			logf_(r, "\\n");
		else if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
			logf_(r, "%c", p[i]);
		else
			logf_(r, "\\x%02x", p[i]);
	}
}

static void drain(struct smtp_server *s, struct result *r)
{
	size_t n;
	const uint8_t *p = smtp_server_output(s, &n);

	if (r->out_len + n <= OUT_MAX) {
		memcpy(r->out + r->out_len, p, n);
		r->out_len += n;
	}
	smtp_server_output_done(s, n);
}

/* answer - the scripted host policy. */
static void answer(struct smtp_server *s, const struct scen *sc, struct result *r,
		   const struct smtp_server_ev *ev)
{
	char q[16];

	switch (ev->kind) {
	case SMTP_SERVER_EV_MAIL:
		smtp_server_answer(s, strstr(ev->path->addr, "reject") ?
				   SMTP_REPLY_SENDER_REJECTED : SMTP_REPLY_MAIL_OK, NULL);
		break;
	case SMTP_SERVER_EV_RCPT:
		smtp_server_answer(s, strstr(ev->path->addr, "deny") ? SMTP_REPLY_RELAY_DENIED :
				   strstr(ev->path->addr, "unknown") ? SMTP_REPLY_USER_UNKNOWN :
				   SMTP_REPLY_RCPT_OK, NULL);
		break;
	case SMTP_SERVER_EV_DATA_BEGIN:
		if (sc->opts & O_REFUSE) {
			smtp_server_answer(s, SMTP_REPLY_NO_STORAGE, NULL);
		} else {
			r->n_open++;
			smtp_server_answer(s, SMTP_REPLY_OK, NULL);
		}
		break;
	case SMTP_SERVER_EV_DATA_END:
		snprintf(q, sizeof(q), "Q%d", ++r->n_queued);
		r->n_open--;
		smtp_server_answer(s, SMTP_REPLY_QUEUED, q);
		break;
	default:
		smtp_server_answer(s, SMTP_REPLY_TLS_GO, NULL);
		break;
	}
}

/* log_ev - one event as a log line; BODY lines are merged. */
static void log_ev(struct result *r, const struct smtp_server_ev *ev)
{
	if (ev->kind == SMTP_SERVER_EV_BODY) {
		if (!r->in_body)
			logf_(r, "BODY ");
		r->in_body = true;
		log_bytes(r, ev->data, ev->len);
		return;
	}
	if (r->in_body)
		logf_(r, "\n");
	r->in_body = false;
	switch (ev->kind) {
	case SMTP_SERVER_EV_HELO:
		logf_(r, "HELO %s ehlo=%d\n", ev->helo, ev->is_ehlo);
		break;
	case SMTP_SERVER_EV_MAIL:
		logf_(r, "MAIL <%s>", ev->path->addr);
		if (ev->mail->has_size)
			logf_(r, " size=%llu", (unsigned long long)ev->mail->size);
		if (ev->mail->body)
			logf_(r, " body=%d", ev->mail->body);
		if (ev->mail->smtputf8)
			logf_(r, " utf8");
		if (ev->mail->ret)
			logf_(r, " ret=%d", ev->mail->ret);
		if (ev->mail->envid[0])
			logf_(r, " envid=%s", ev->mail->envid);
		logf_(r, "\n");
		break;
	case SMTP_SERVER_EV_RCPT:
		logf_(r, "RCPT <%s>", ev->path->addr);
		if (ev->rcpt->notify)
			logf_(r, " notify=%u", ev->rcpt->notify);
		if (ev->rcpt->orcpt[0])
			logf_(r, " orcpt=%s", ev->rcpt->orcpt);
		logf_(r, "\n");
		break;
	case SMTP_SERVER_EV_DATA_BEGIN:
		logf_(r, "DATA_BEGIN bdat=%d\n", ev->is_bdat);
		break;
	case SMTP_SERVER_EV_DATA_END:
		logf_(r, "DATA_END bytes=%llu\n", (unsigned long long)ev->message_bytes);
		break;
	case SMTP_SERVER_EV_DATA_ABORT:
		logf_(r, "DATA_ABORT %s\n", ev->reason);
		break;
	case SMTP_SERVER_EV_STARTTLS:
		logf_(r, "STARTTLS\n");
		break;
	case SMTP_SERVER_EV_REJECT:
		logf_(r, "REJECT %s reply=%s\n", ev->reason, smtp_proto_reply(ev->reply)->name);
		break;
	case SMTP_SERVER_EV_CLOSE:
		logf_(r, "CLOSE\n");
		break;
	default:
		logf_(r, "UNEXPECTED %s\n", smtp_server_ev_name(ev->kind));
		r->bad = true;
		break;
	}
}

/* check_invariants - DATA_BEGIN/BODY/END/ABORT pairing (the smuggling property). */
static void check_invariants(struct result *r, const struct smtp_server_ev *ev, bool *msg_open)
{
	switch (ev->kind) {
	case SMTP_SERVER_EV_DATA_BEGIN:
		if (*msg_open)
			r->bad = true;
		r->n_data_begin++;
		break;
	case SMTP_SERVER_EV_BODY:
	case SMTP_SERVER_EV_DATA_END:
	case SMTP_SERVER_EV_DATA_ABORT:
		if (!*msg_open)
			r->bad = true;
		if (ev->kind != SMTP_SERVER_EV_BODY)
			*msg_open = false;
		break;
	default:
		break;
	}
}

/* pump - run events until NEED_MORE (true) or CLOSE (false). */
static bool pump(struct smtp_server *s, const struct scen *sc, struct result *r, bool *msg_open)
{
	struct smtp_server_ev ev;
	int guard_n = 0;

	for (;;) {
		int k = smtp_server_next(s, &ev);

		if (++guard_n > 100000) {
			logf_(r, "LOOP\n");
			r->bad = true;
			return false;
		}
		if (k == SMTP_SERVER_EV_NEED_MORE) {
			drain(s, r);
			return true;
		}
		if (k == SMTP_SERVER_EV_FLUSH) {
			drain(s, r);
			continue;
		}
		if (k == SMTP_SERVER_EV_WAIT) {
			logf_(r, "WAIT\n");
			r->bad = true;
			return false;
		}
		check_invariants(r, &ev, msg_open);
		if (k == SMTP_SERVER_EV_DATA_BEGIN && !(sc->opts & O_REFUSE))
			*msg_open = true;
		log_ev(r, &ev);
		if (k == SMTP_SERVER_EV_CLOSE) {
			drain(s, r);
			r->closed = true;
			return false;
		}
		if (k == SMTP_SERVER_EV_MAIL || k == SMTP_SERVER_EV_RCPT ||
		    k == SMTP_SERVER_EV_DATA_BEGIN || k == SMTP_SERVER_EV_DATA_END ||
		    k == SMTP_SERVER_EV_STARTTLS)
			answer(s, sc, r, &ev);
	}
}

static void limits_of(const struct scen *sc, struct smtp_server_limits *lim)
{
	smtp_server_limits_default(lim);
	lim->hostname = "mx.test";
	if (sc->max_line)
		lim->max_line_bytes = sc->max_line;
	if (sc->max_msg)
		lim->max_message_bytes = sc->max_msg;
	if (sc->max_rcpt)
		lim->max_rcpt = sc->max_rcpt;
	if (sc->max_errors)
		lim->max_errors = sc->max_errors;
	lim->offer_starttls = sc->opts & O_TLS;
	lim->lenient_bare_lf = sc->opts & O_LF;
	lim->lenient_bare_cr = sc->opts & O_CR;
	lim->lenient_8bit = sc->opts & O_8BIT;
	lim->lenient_space_after_colon = sc->opts & O_COLON;
}

/* run - play the scenario with the input cut at cuts[0..n_cuts). */
static void run(const struct scen *sc, const size_t *cuts, size_t n_cuts, struct result *r)
{
	static struct smtp_server s;
	struct smtp_server_limits lim;
	size_t len = sc->in_len ? sc->in_len : strlen(sc->in), prev = 0, k;
	bool open = false, alive;

	memset(r, 0, sizeof(*r));
	limits_of(sc, &lim);
	smtp_server_init(&s, &lim);
	smtp_server_start(&s, SMTP_REPLY_GREETING);
	alive = pump(&s, sc, r, &open);
	for (k = 0; alive && k <= n_cuts; k++) {
		size_t to = k < n_cuts ? cuts[k] : len, maplen, off = 0, n = to - prev;
		void *base;
		const uint8_t *g = t_guard_copy(sc->in + prev, n, &base, &maplen);

		while (alive) {
			off += smtp_server_feed(&s, g + off, n - off);
			alive = pump(&s, sc, r, &open);
			if (off == n)
				break;
		}
		t_guard_free(base, maplen);
		prev = to;
	}
	if (alive && sc->at_end != END_NONE) {
		if (sc->at_end == END_EOF)
			smtp_server_eof(&s);
		else if (sc->at_end == END_TIMEOUT)
			smtp_server_timeout(&s);
		else
			smtp_server_shutdown(&s);
		pump(&s, sc, r, &open);
	}
	if (r->in_body)
		logf_(r, "\n");
	smtp_server_fini(&s);
}

/* codes - the reply codes of the final lines of out ("250 354 ..."). */
static void codes(const struct result *r, char *buf, size_t cap)
{
	size_t i = 0, o = 0;

	buf[0] = '\0';
	while (i + 4 <= r->out_len) {
		const uint8_t *line = r->out + i;
		const uint8_t *lf = memchr(line, '\n', r->out_len - i);

		if (line[3] == ' ' && o + 5 < cap) {
			if (o)
				buf[o++] = ' ';
			memcpy(buf + o, line, 3);
			o += 3;
			buf[o] = '\0';
		}
		if (lf == NULL)
			break;
		i = (size_t)(lf - r->out) + 1;
	}
}

/* wellformed - every output line is "ddd[- ]text\r\n" (the property the fuzzer also checks). */
static bool wellformed(const struct result *r)
{
	size_t i = 0;

	while (i < r->out_len) {
		const uint8_t *line = r->out + i;
		const uint8_t *lf = memchr(line, '\n', r->out_len - i);
		size_t n, j;

		if (lf == NULL)
			return false;
		n = (size_t)(lf - line) + 1;
		if (n < 6 || n > SMTP_PROTO_REPLY_LINE_MAX || line[n - 2] != '\r')
			return false;
		if (line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
		    line[2] < '0' || line[2] > '9' || (line[3] != ' ' && line[3] != '-'))
			return false;
		for (j = 4; j < n - 2; j++) {
			if (line[j] < 0x20 || line[j] > 0x7e)
				return false;
		}
		i += n;
	}
	return true;
}

#define EHLO_MAIL_RCPT "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<r@d.test>\r\n"
#define LOG_EMR "HELO c.test ehlo=1\nMAIL <a@b.test>\nRCPT <r@d.test>\n"
static const struct scen scens[] = {
	{ "basic DATA with dot-unstuffing",
	  EHLO_MAIL_RCPT "DATA\r\nHello\r\n..dot\r\n.\r\nQUIT\r\n", 0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=0\nBODY Hello\\r\\n.dot\\r\\n\nDATA_END bytes=13\nCLOSE\n",
	  "220 250 250 250 354 250 221" },
	{ "two messages in one session",
	  EHLO_MAIL_RCPT "DATA\r\n1\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nDATA\r\n2\r\n.\r\n", 0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=0\nBODY 1\\r\\n\nDATA_END bytes=3\nMAIL <>\nRCPT <Postmaster>\n"
	  "DATA_BEGIN bdat=0\nBODY 2\\r\\n\nDATA_END bytes=3\n",
	  "220 250 250 250 354 250 250 250 354 250" },
	{ "HELO: no ESMTP parameters",
	  "HELO c\r\nMAIL FROM:<a@b> SIZE=10\r\n", 0, 0, END_NONE,
	  "HELO c ehlo=0\nREJECT param reply=PARAM_UNKNOWN\n", "220 250 555" },
	{ "EHLO without argument", "EHLO\r\nEHLO a b\r\n", 0, 0, END_NONE,
	  "REJECT syntax reply=HELO_SYNTAX\nREJECT syntax reply=HELO_SYNTAX\n", "220 501 501" },
	{ "RFC5321-4.3.2 MAIL before HELO", "MAIL FROM:<a@b>\r\n", 0, 0, END_NONE,
	  "REJECT sequence reply=NEED_HELO\n", "220 503" },
	{ "RCPT before MAIL", "EHLO c\r\nRCPT TO:<a@b>\r\n", 0, 0, END_NONE,
	  "HELO c ehlo=1\nREJECT sequence reply=NEED_MAIL\n", "220 250 503" },
	{ "DATA before MAIL", "EHLO c\r\nDATA\r\n", 0, 0, END_NONE,
	  "HELO c ehlo=1\nREJECT sequence reply=NEED_MAIL\n", "220 250 503" },
	{ "DATA without recipients", "EHLO c\r\nMAIL FROM:<a@b>\r\nDATA\r\n", 0, 0, END_NONE,
	  "HELO c ehlo=1\nMAIL <a@b>\nREJECT no_rcpt reply=NO_RCPT\n", "220 250 250 554" },
	{ "nested MAIL", "EHLO c\r\nMAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\n", 0, 0, END_NONE,
	  "HELO c ehlo=1\nMAIL <a@b>\nREJECT sequence reply=NESTED_MAIL\n", "220 250 250 503" },
	{ "unknown, EXPN, AUTH, TURN", "FOO\r\nEXPN x\r\nAUTH PLAIN\r\nTURN\r\n", 0, 0, END_NONE,
	  "REJECT unknown_cmd reply=UNKNOWN_CMD\nREJECT not_implemented reply=NOT_IMPLEMENTED\n"
	  "REJECT not_implemented reply=NOT_IMPLEMENTED\nREJECT not_implemented reply=NOT_IMPLEMENTED\n",
	  "220 500 502 502 502" },
	{ "VRFY HELP NOOP RSET before HELO", "VRFY x\r\nVRFY\r\nHELP\r\nNOOP\r\nRSET\r\nquit\r\n", 0, 0, END_NONE,
	  "REJECT syntax reply=SYNTAX\nCLOSE\n", "220 252 501 214 250 250 221" },
	{ "RSET/QUIT/DATA with argument", "RSET x\r\nQUIT x\r\n", 0, 0, END_NONE,
	  "REJECT syntax reply=SYNTAX\nREJECT syntax reply=SYNTAX\n", "220 501 501" },
	{ "STARTTLS not offered", "EHLO c\r\nSTARTTLS\r\n", 0, 0, END_NONE,
	  "HELO c ehlo=1\nREJECT not_implemented reply=NOT_IMPLEMENTED\n", "220 250 502" },
	{ "STARTTLS offered", "EHLO c\r\nSTARTTLS\r\n", 0, O_TLS, END_NONE,
	  "HELO c ehlo=1\nSTARTTLS\n", "220 250 220" },
	{ "STARTTLS inside a transaction", "EHLO c\r\nMAIL FROM:<a@b>\r\nSTARTTLS\r\n", 0, O_TLS, END_NONE,
	  "HELO c ehlo=1\nMAIL <a@b>\nREJECT sequence reply=BAD_SEQUENCE\n", "220 250 250 503" },
	{ "RSET mid-transaction", EHLO_MAIL_RCPT "RSET\r\nRCPT TO:<r@d.test>\r\nDATA\r\n", 0, 0, END_NONE,
	  LOG_EMR "REJECT sequence reply=NEED_MAIL\nREJECT sequence reply=NEED_MAIL\n",
	  "220 250 250 250 250 503 503" },
	{ "EHLO resets the transaction", EHLO_MAIL_RCPT "EHLO c.test\r\nDATA\r\n", 0, 0, END_NONE,
	  LOG_EMR "HELO c.test ehlo=1\nREJECT sequence reply=NEED_MAIL\n", "220 250 250 250 250 503" },
	{ "host refuses recipients", "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@deny.test>\r\n"
	  "RCPT TO:<unknown@b>\r\nDATA\r\n", 0, 0, END_NONE,
	  "HELO c ehlo=1\nMAIL <a@b>\nRCPT <x@deny.test>\nRCPT <unknown@b>\nREJECT no_rcpt reply=NO_RCPT\n",
	  "220 250 250 554 550 554" },
	{ "host refuses sender", "EHLO c\r\nMAIL FROM:<reject@b>\r\nRCPT TO:<a@b>\r\nMAIL FROM:<a@b>\r\n", 0, 0, END_NONE,
	  "HELO c ehlo=1\nMAIL <reject@b>\nREJECT sequence reply=NEED_MAIL\nMAIL <a@b>\n", "220 250 553 503 250" },
	{ "RFC5321-4.5.3.1.8 too many recipients", "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<1@b>\r\n"
	  "RCPT TO:<2@b>\r\nRCPT TO:<3@b>\r\n", 0, 0, END_NONE,
	  "HELO c ehlo=1\nMAIL <a@b>\nRCPT <1@b>\nRCPT <2@b>\nREJECT too_many_rcpt reply=TOO_MANY_RCPT\n",
	  "220 250 250 250 250 452", 0, 0, 2 },
	{ "RFC1870 SIZE over the limit at MAIL", "EHLO c\r\nMAIL FROM:<a@b> SIZE=101\r\nMAIL FROM:<a@b> SIZE=100\r\n",
	  0, 0, END_NONE, "HELO c ehlo=1\nREJECT size reply=MSG_TOO_BIG\nMAIL <a@b> size=100\n",
	  "220 250 552 250", 0, 100 },
	{ "RFC1870 message over the limit", EHLO_MAIL_RCPT "DATA\r\n0123456789abc\r\n.\r\nNOOP\r\n", 0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=0\nBODY 0123456789\nDATA_ABORT too_big\n",
	  "220 250 250 250 354 552 250", 0, 10 },
	{ "command line too long", "NOOP xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\nNOOP\r\n",
	  0, 0, END_NONE, "REJECT line_too_long reply=LINE_TOO_LONG\n", "220 500 250", 64 },
	{ "command line at the limit", "NOOP xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n",
	  0, 0, END_NONE, "", "220 250", 70 },
	{ "command line too long ends in CR|LF", "NOOP xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\nNOOP\r\n",
	  0, 0, END_NONE, "REJECT line_too_long reply=LINE_TOO_LONG\n", "220 500 250", 70 },
	{ "data line too long", EHLO_MAIL_RCPT "DATA\r\nshort\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n.\r\nNOOP\r\n",
	  0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=0\nBODY short\\r\\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\nDATA_ABORT line_too_long\n",
	  "220 250 250 250 354 550 250", 64 },
	{ "smuggling LF.LF", EHLO_MAIL_RCPT "DATA\r\nx\n.\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@d.test>\r\nDATA\r\nevil\r\n.\r\nQUIT\r\n",
	  0, 0, END_NONE, LOG_EMR "DATA_BEGIN bdat=0\nBODY x\nDATA_ABORT bare_lf\nCLOSE\n", "220 250 250 250 354 550 221" },
	{ "smuggling CR.CR", EHLO_MAIL_RCPT "DATA\r\nx\r.\rMAIL FROM:<evil@x.test>\r\nDATA\r\nevil\r\n.\r\nQUIT\r\n",
	  0, 0, END_NONE, LOG_EMR "DATA_BEGIN bdat=0\nBODY x\\r\nDATA_ABORT bare_cr\nCLOSE\n", "220 250 250 250 354 550 221" },
	{ "smuggling LF.CRLF", EHLO_MAIL_RCPT "DATA\r\nx\n.\r\nMAIL FROM:<evil@x.test>\r\nDATA\r\nevil\r\n.\r\nQUIT\r\n",
	  0, 0, END_NONE, LOG_EMR "DATA_BEGIN bdat=0\nBODY x\nDATA_ABORT bare_lf\nCLOSE\n", "220 250 250 250 354 550 221" },
	{ "smuggling CRLF.LF", EHLO_MAIL_RCPT "DATA\r\nx\r\n.\nMAIL FROM:<evil@x.test>\r\nDATA\r\nevil\r\n.\r\nQUIT\r\n",
	  0, 0, END_NONE, LOG_EMR "DATA_BEGIN bdat=0\nBODY x\\r\\n\nDATA_ABORT bare_lf\nCLOSE\n", "220 250 250 250 354 550 221" },
	{ "smuggling CR LF . LF", EHLO_MAIL_RCPT "DATA\r\nx\r\n.\n\r\nMAIL FROM:<evil@x.test>\r\n.\r\nQUIT\r\n",
	  0, 0, END_NONE, LOG_EMR "DATA_BEGIN bdat=0\nBODY x\\r\\n\nDATA_ABORT bare_lf\nCLOSE\n", "220 250 250 250 354 550 221" },
	{ "smuggling CRLF.CR x", EHLO_MAIL_RCPT "DATA\r\nx\r\n.\rMAIL FROM:<evil@x.test>\r\n.\r\nQUIT\r\n",
	  0, 0, END_NONE, LOG_EMR "DATA_BEGIN bdat=0\nBODY x\\r\\n\nDATA_ABORT bare_cr\nCLOSE\n", "220 250 250 250 354 550 221" },
	{ "bare CR mid line", EHLO_MAIL_RCPT "DATA\r\na\rb\r\n.\r\nQUIT\r\n",
	  0, 0, END_NONE, LOG_EMR "DATA_BEGIN bdat=0\nBODY a\\r\nDATA_ABORT bare_cr\nCLOSE\n", "220 250 250 250 354 550 221" },
	{ "lenient bare LF still needs CRLF.CRLF", EHLO_MAIL_RCPT "DATA\r\nx\n.\nMAIL FROM:<e@x>\r\n.\r\nQUIT\r\n",
	  0, O_LF, END_NONE, LOG_EMR "DATA_BEGIN bdat=0\nBODY x\\r\\n\\r\\nMAIL FROM:<e@x>\\r\\n\nDATA_END bytes=22\nCLOSE\n",
	  "220 250 250 250 354 250 221" },
	{ "lenient bare CR", EHLO_MAIL_RCPT "DATA\r\na\rb\r\n.\r\n", 0, O_CR, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=0\nBODY a\\rb\\r\\n\nDATA_END bytes=5\n", "220 250 250 250 354 250" },
	{ "bare LF in a command", "NOOP\nQUIT\r\nNOOP\r\n", 0, 0, END_NONE,
	  "REJECT bare_line_end reply=BARE_LINE_END\n", "220 500 250" },
	{ "bare CR in a command", "NOOP\rQUIT\r\nNOOP\r\n", 0, 0, END_NONE,
	  "REJECT bare_line_end reply=BARE_LINE_END\n", "220 500 250" },
	{ "lenient bare LF in commands", "NOOP\nQUIT\n", 0, O_LF, END_NONE, "CLOSE\n", "220 250 221" },
	{ "NUL in a command", "NO\0OP\r\nNOOP x\0\r\n", 16, 0, END_NONE,
	  "REJECT bad_char reply=BAD_CHAR\nREJECT bad_char reply=BAD_CHAR\n", "220 500 500" },
	{ "8-bit in a command", "NOOP \xc3\xa9\r\n", 0, 0, END_NONE, "REJECT bad_char reply=BAD_CHAR\n", "220 500" },
	{ "space after colon strict", "EHLO c\r\nMAIL FROM: <a@b>\r\n", 0, 0, END_NONE,
	  "HELO c ehlo=1\nREJECT path reply=SENDER_SYNTAX\n", "220 250 501" },
	{ "space after colon lenient", "EHLO c\r\nMAIL FROM: <a@b>\r\n", 0, O_COLON, END_NONE,
	  "HELO c ehlo=1\nMAIL <a@b>\n", "220 250 250" },
	{ "RFC6531 UTF-8 with SMTPUTF8", "EHLO c\r\nMAIL FROM:<\xc3\xa9@b> SMTPUTF8\r\nRCPT TO:<\xc3\xa9@d>\r\nDATA\r\n\xc3\xa9\r\n.\r\n",
	  0, 0, END_NONE, "HELO c ehlo=1\nMAIL <\xc3\xa9@b> utf8\nRCPT <\xc3\xa9@d>\nDATA_BEGIN bdat=0\nBODY \\xc3\\xa9\\r\\n\nDATA_END bytes=4\n",
	  "220 250 250 250 354 250" },
	{ "RFC6531 UTF-8 without SMTPUTF8", "EHLO c\r\nMAIL FROM:<\xc3\xa9@b>\r\nMAIL FROM:<a@b>\r\nRCPT TO:<\xc3\xa9@d>\r\n",
	  0, 0, END_NONE, "HELO c ehlo=1\nREJECT path reply=NEED_SMTPUTF8\nMAIL <a@b>\nREJECT path reply=NEED_SMTPUTF8\n",
	  "220 250 553 250 553" },
	{ "8-bit data without 8BITMIME", EHLO_MAIL_RCPT "DATA\r\n\xe9\r\n.\r\n", 0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=0\nDATA_ABORT 8bit\n", "220 250 250 250 354 550" },
	{ "8-bit data lenient", EHLO_MAIL_RCPT "DATA\r\n\xe9\r\n.\r\n", 0, O_8BIT, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=0\nBODY \\xe9\\r\\n\nDATA_END bytes=3\n", "220 250 250 250 354 250" },
	{ "RFC6152 8BITMIME", "EHLO c\r\nMAIL FROM:<a@b> BODY=8BITMIME\r\nRCPT TO:<r@d>\r\nDATA\r\n\xe9\r\n.\r\n", 0, 0, END_NONE,
	  "HELO c ehlo=1\nMAIL <a@b> body=2\nRCPT <r@d>\nDATA_BEGIN bdat=0\nBODY \\xe9\\r\\n\nDATA_END bytes=3\n",
	  "220 250 250 250 354 250" },
	{ "RFC3461 DSN parameters", "EHLO c\r\nMAIL FROM:<a@b> RET=HDRS ENVID=QQ+2B1\r\n"
	  "RCPT TO:<r@d> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r@d\r\nRCPT TO:<s@d> NOTIFY=NEVER,DELAY\r\n", 0, 0, END_NONE,
	  "HELO c ehlo=1\nMAIL <a@b> ret=2 envid=QQ+2B1\nRCPT <r@d> notify=6 orcpt=rfc822;r@d\nREJECT param reply=PARAM_VALUE\n",
	  "220 250 250 250 501" },
	{ "duplicate and unknown parameters", "EHLO c\r\nMAIL FROM:<a@b> SIZE=1 SIZE=1\r\nMAIL FROM:<a@b> X=1\r\n", 0, 0, END_NONE,
	  "HELO c ehlo=1\nREJECT param reply=PARAM_DUP\nREJECT param reply=PARAM_UNKNOWN\n", "220 250 501 555" },
	{ "DATA_BEGIN refused", EHLO_MAIL_RCPT "DATA\r\nRSET\r\n", 0, O_REFUSE, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=0\n", "220 250 250 250 452 250" },
	{ "RFC3030 BDAT chunks", EHLO_MAIL_RCPT "BDAT 5\r\nhelloBDAT 8 LAST\r\n world\r\nQUIT\r\n", 0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=1\nBODY hello world\\r\\n\nDATA_END bytes=13\nCLOSE\n", "220 250 250 250 250 250 221" },
	{ "BDAT 0 LAST ends the message", EHLO_MAIL_RCPT "BDAT 3\r\nabcBDAT 0 LAST\r\n", 0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=1\nBODY abc\nDATA_END bytes=3\n", "220 250 250 250 250 250" },
	{ "BDAT 0 LAST alone", EHLO_MAIL_RCPT "BDAT 0 LAST\r\n", 0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=1\nDATA_END bytes=0\n", "220 250 250 250 250" },
	{ "BDAT does not unstuff or end at dot", EHLO_MAIL_RCPT "BDAT 10 LAST\r\n..\r\n.\r\nx\r\nNOOP\r\n", 0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=1\nBODY ..\\r\\n.\\r\\nx\\r\\n\nDATA_END bytes=10\n", "220 250 250 250 250 250" },
	{ "BDAT then DATA", EHLO_MAIL_RCPT "BDAT 3\r\nabcDATA\r\nBDAT 0 LAST\r\n", 0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=1\nBODY abc\nREJECT sequence reply=BAD_SEQUENCE\nDATA_END bytes=3\n",
	  "220 250 250 250 250 503 250" },
	{ "RFC3030 BINARYMIME needs BDAT", "EHLO c\r\nMAIL FROM:<a@b> BODY=BINARYMIME\r\nRCPT TO:<r@d>\r\nDATA\r\nBDAT 3 LAST\r\n\n\0\r",
	  78, 0, END_NONE, "HELO c ehlo=1\nMAIL <a@b> body=3\nRCPT <r@d>\nREJECT sequence reply=NEED_BDAT\n"
	  "DATA_BEGIN bdat=1\nBODY \\n\\x00\\r\nDATA_END bytes=3\n", "220 250 250 250 503 250" },
	{ "BDAT without MAIL is read and dropped", "EHLO c\r\nBDAT 4\r\nNOOPNOOP\r\n", 0, 0, END_NONE,
	  "HELO c ehlo=1\nREJECT sequence reply=NEED_MAIL\n", "220 250 503 250" },
	{ "BDAT bare LF fails the message", EHLO_MAIL_RCPT "BDAT 3\r\na\nbBDAT 2\r\nxyBDAT 1 LAST\r\nzMAIL FROM:<a@b>\r\n", 0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=1\nBODY a\nDATA_ABORT bare_lf\nREJECT txn_failed reply=BAD_LINE_END\n"
	  "REJECT txn_failed reply=BAD_LINE_END\nMAIL <a@b>\n", "220 250 250 250 550 550 550 250" },
	{ "BDAT refused by the host", EHLO_MAIL_RCPT "BDAT 3\r\nabcBDAT 2 LAST\r\nxyMAIL FROM:<a@b>\r\n", 0, O_REFUSE, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=1\nREJECT txn_failed reply=NO_STORAGE\nMAIL <a@b>\n", "220 250 250 250 452 452 250" },
	{ "RSET mid-BDAT", EHLO_MAIL_RCPT "BDAT 3\r\nabcRSET\r\nBDAT 1 LAST\r\nx", 0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=1\nBODY abc\nDATA_ABORT rset\nREJECT sequence reply=NEED_MAIL\n", "220 250 250 250 250 250 503" },
	{ "QUIT mid-BDAT", EHLO_MAIL_RCPT "BDAT 3\r\nabcQUIT\r\n", 0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=1\nBODY abc\nDATA_ABORT quit\nCLOSE\n", "220 250 250 250 250 221" },
	{ "EHLO mid-BDAT", EHLO_MAIL_RCPT "BDAT 3\r\nabcEHLO c\r\n", 0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=1\nBODY abc\nDATA_ABORT rset\nHELO c ehlo=1\n", "220 250 250 250 250 250" },
	{ "BDAT syntax error closes", EHLO_MAIL_RCPT "BDAT 3\r\nabcBDAT x\r\nNOOP\r\n", 0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=1\nBODY abc\nDATA_ABORT bdat_syntax\nREJECT syntax reply=BDAT_SYNTAX\nCLOSE\n",
	  "220 250 250 250 250 501" },
	{ "BDAT over the size limit", EHLO_MAIL_RCPT "BDAT 12 LAST\r\n0123456789abNOOP\r\n", 0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=1\nBODY 0123456789\nDATA_ABORT too_big\n", "220 250 250 250 552 250", 0, 10 },
	{ "EOF mid-DATA", EHLO_MAIL_RCPT "DATA\r\nabc\r\n.", 0, 0, END_EOF,
	  LOG_EMR "DATA_BEGIN bdat=0\nBODY abc\\r\\n\nDATA_ABORT eof\nCLOSE\n", "220 250 250 250 354" },
	{ "EOF mid-BDAT", EHLO_MAIL_RCPT "BDAT 5\r\nab", 0, 0, END_EOF,
	  LOG_EMR "DATA_BEGIN bdat=1\nBODY ab\nDATA_ABORT eof\nCLOSE\n", "220 250 250 250" },
	{ "EOF idle", "EHLO c\r\n", 0, 0, END_EOF, "HELO c ehlo=1\nCLOSE\n", "220 250" },
	{ "timeout idle", "EHLO c\r\n", 0, 0, END_TIMEOUT, "HELO c ehlo=1\nCLOSE\n", "220 250 421" },
	{ "timeout mid-DATA", EHLO_MAIL_RCPT "DATA\r\nabc", 0, 0, END_TIMEOUT,
	  LOG_EMR "DATA_BEGIN bdat=0\nBODY abc\nDATA_ABORT timeout\nCLOSE\n", "220 250 250 250 354 421" },
	{ "shutdown idle", "EHLO c\r\n", 0, 0, END_SHUTDOWN, "HELO c ehlo=1\nCLOSE\n", "220 250 421" },
	{ "shutdown between BDAT chunks", EHLO_MAIL_RCPT "BDAT 1\r\nx", 0, 0, END_SHUTDOWN,
	  LOG_EMR "DATA_BEGIN bdat=1\nBODY x\nDATA_ABORT shutdown\nCLOSE\n", "220 250 250 250 250 421" },
	{ "shutdown waits for the end of DATA", EHLO_MAIL_RCPT "DATA\r\nabc", 0, 0, END_SHUTDOWN,
	  LOG_EMR "DATA_BEGIN bdat=0\nBODY abc\n", "220 250 250 250 354" },
	{ "error budget", "FOO\r\nFOO\r\nFOO\r\nNOOP\r\n", 0, 0, END_NONE,
	  "REJECT unknown_cmd reply=UNKNOWN_CMD\nREJECT unknown_cmd reply=UNKNOWN_CMD\n"
	  "REJECT unknown_cmd reply=UNKNOWN_CMD\nREJECT too_many_errors reply=TOO_MANY_ERRORS\nCLOSE\n",
	  "220 500 500 500 421", 0, 0, 0, 3 },
	{ "error budget counts host refusals", "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<a@deny>\r\nRCPT TO:<b@deny>\r\nNOOP\r\n",
	  0, 0, END_NONE, "HELO c ehlo=1\nMAIL <a@b>\nRCPT <a@deny>\nRCPT <b@deny>\n"
	  "REJECT too_many_errors reply=TOO_MANY_ERRORS\nCLOSE\n", "220 250 250 554 554 421", 0, 0, 0, 2 },
	{ "error budget mid-BDAT", EHLO_MAIL_RCPT "BDAT 1\r\nxFOO\r\n", 0, 0, END_NONE,
	  LOG_EMR "DATA_BEGIN bdat=1\nBODY x\nREJECT unknown_cmd reply=UNKNOWN_CMD\nDATA_ABORT errors\n"
	  "REJECT too_many_errors reply=TOO_MANY_ERRORS\nCLOSE\n", "220 250 250 250 250 500 421", 0, 0, 0, 1 },
	{ "RFC5321-4.5.3.1.10 recipient limit spends no error budget", "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<1@b>\r\n"
	  "RCPT TO:<2@b>\r\nRCPT TO:<3@b>\r\nRCPT TO:<4@b>\r\nNOOP\r\n", 0, 0, END_NONE,
	  "HELO c ehlo=1\nMAIL <a@b>\nRCPT <1@b>\nREJECT too_many_rcpt reply=TOO_MANY_RCPT\n"
	  "REJECT too_many_rcpt reply=TOO_MANY_RCPT\nREJECT too_many_rcpt reply=TOO_MANY_RCPT\n",
	  "220 250 250 250 452 452 452 250", 0, 0, 1, 2 },
	{ "pipelined group", "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<1@d>\r\nRCPT TO:<x@deny>\r\nRCPT TO:<2@d>\r\nDATA\r\n"
	  "x\r\n.\r\nRSET\r\nQUIT\r\n", 0, 0, END_NONE,
	  "HELO c ehlo=1\nMAIL <a@b>\nRCPT <1@d>\nRCPT <x@deny>\nRCPT <2@d>\nDATA_BEGIN bdat=0\nBODY x\\r\\n\nDATA_END bytes=3\nCLOSE\n",
	  "220 250 250 250 554 250 354 250 250 221" },
};

static bool same(const struct result *a, const struct result *b)
{
	return a->log_len == b->log_len && memcmp(a->log, b->log, a->log_len) == 0 &&
	       a->out_len == b->out_len && memcmp(a->out, b->out, a->out_len) == 0;
}

static void check_run(const struct scen *sc, const struct result *r, const struct result *whole,
		      const char *how)
{
	char got_codes[512];

	if (whole) {
		T_CHECK(same(r, whole), "%s: differs from whole run:\n--- got log:\n%.*s--- want log:\n%.*s"
			"--- got out:\n%.*s--- want out:\n%.*s", how, (int)r->log_len, r->log,
			(int)whole->log_len, whole->log, (int)r->out_len, (const char *)r->out,
			(int)whole->out_len, (const char *)whole->out);
		return;
	}
	codes(r, got_codes, sizeof(got_codes));
	T_CHECK(strcmp(r->log, sc->want_log) == 0, "%s: log: got\n%s--- want\n%s", how, r->log, sc->want_log);
	T_CHECK(strcmp(got_codes, sc->want_codes) == 0, "%s: codes: got \"%s\", want \"%s\"\n%.*s", how,
		got_codes, sc->want_codes, (int)r->out_len, (const char *)r->out);
	T_CHECK(!r->bad, "%s: invariant broken:\n%s", how, r->log);
	T_CHECK(wellformed(r), "%s: malformed output: %.*s", how, (int)r->out_len, (const char *)r->out);
	T_CHECK(r->n_data_begin <= 2 || strstr(sc->name, "smuggling") == NULL,
		"%s: smuggling produced %d DATA_BEGIN", how, r->n_data_begin);
}

static void test_scenarios(void)
{
	static struct result whole, r;
	size_t i, k, len;
	static size_t cuts[8192];
	char how[64];

	srand(5321);
	for (i = 0; i < sizeof(scens) / sizeof(scens[0]); i++) {
		const struct scen *sc = &scens[i];

		T_CASE(sc->name);
		len = sc->in_len ? sc->in_len : strlen(sc->in);
		run(sc, NULL, 0, &whole);
		check_run(sc, &whole, NULL, "whole");
		for (k = 1; k < len; k++)
			cuts[k - 1] = k;
		run(sc, cuts, len - 1, &r);
		check_run(sc, &r, &whole, "byte by byte");
		for (k = 1; k < len; k++) {
			snprintf(how, sizeof(how), "split at %zu", k);
			run(sc, &k, 1, &r);
			check_run(sc, &r, &whole, how);
		}
		for (int rep = 0; rep < 20; rep++) {
			size_t n = 0, at = 0;

			while (n < 64) {
				at += 1 + (size_t)rand() % 12;
				if (at >= len)
					break;
				cuts[n++] = at;
			}
			snprintf(how, sizeof(how), "random pieces #%d", rep);
			run(sc, cuts, n, &r);
			check_run(sc, &r, &whole, how);
		}
	}
}

/*
 * test_matrix - every command in every session state: the reply code of
 * the command, with the usual whole / byte-by-byte / every-split runs.
 */
static void test_matrix(void)
{
	static const char *const state_names[] = {
		"fresh", "greeted", "in MAIL", "with RCPT", "BDAT message open", "BDAT message failed",
	};
	static const char *const prefix[] = {
		"",
		"EHLO c\r\n",
		"EHLO c\r\nMAIL FROM:<a@b>\r\n",
		"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<r@d>\r\n",
		"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<r@d>\r\nBDAT 1\r\nx",
		"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<r@d>\r\nBDAT 2\r\na\n",
	};
	static const struct {
		const char *cmd;
		const char *code[6];
	} m[] = {
		{ "EHLO e\r\n",          { "250", "250", "250", "250", "250", "250" } },
		{ "HELO e\r\n",          { "250", "250", "250", "250", "250", "250" } },
		{ "MAIL FROM:<m@b>\r\n", { "503", "250", "503", "503", "503", "503" } },
		{ "RCPT TO:<s@d>\r\n",   { "503", "503", "250", "250", "503", "503" } },
		{ "DATA\r\n",            { "503", "503", "554", "354", "503", "503" } },
		{ "BDAT 0 LAST\r\n",     { "503", "503", "554", "250", "250", "550" } },
		{ "RSET\r\n",            { "250", "250", "250", "250", "250", "250" } },
		{ "NOOP\r\n",            { "250", "250", "250", "250", "250", "250" } },
		{ "QUIT\r\n",            { "221", "221", "221", "221", "221", "221" } },
		{ "VRFY x\r\n",          { "252", "252", "252", "252", "252", "252" } },
		{ "EXPN x\r\n",          { "502", "502", "502", "502", "502", "502" } },
		{ "HELP\r\n",            { "214", "214", "214", "214", "214", "214" } },
		{ "STARTTLS\r\n",        { "502", "502", "502", "502", "502", "502" } },
		{ "AUTH PLAIN\r\n",      { "502", "502", "502", "502", "502", "502" } },
		{ "FOO\r\n",             { "500", "500", "500", "500", "500", "500" } },
	};
	static struct result whole, r;
	static char in[512], name[128];
	char got[512], how[32];
	size_t i, st, k, len;

	for (i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		for (st = 0; st < 6; st++) {
			struct scen sc = { 0 };
			const char *last;

			snprintf(in, sizeof(in), "%s%s", prefix[st], m[i].cmd);
			snprintf(name, sizeof(name), "%.*s in state %s", (int)strcspn(m[i].cmd, "\r"),
				 m[i].cmd, state_names[st]);
			T_CASE(name);
			sc.name = name;
			sc.in = in;
			len = strlen(in);
			run(&sc, NULL, 0, &whole);
			codes(&whole, got, sizeof(got));
			last = strrchr(got, ' ');
			last = last ? last + 1 : got;
			T_CHECK(strcmp(last, m[i].code[st]) == 0, "reply: got %s, want %s (all: %s)",
				last, m[i].code[st], got);
			T_CHECK(!whole.bad && wellformed(&whole), "invariant broken:\n%s", whole.log);
			for (k = 1; k < len; k++) {
				snprintf(how, sizeof(how), "split at %zu", k);
				run(&sc, &k, 1, &r);
				check_run(&sc, &r, &whole, how);
			}
		}
	}
}

/* --- dedicated tests --------------------------------------------------------- */

static struct smtp_server srv;

static void start(struct smtp_server_limits *lim)
{
	smtp_server_init(&srv, lim);
	smtp_server_start(&srv, SMTP_REPLY_GREETING);
}

static void feed_str(const char *str)
{
	size_t n = strlen(str);

	T_EQ_INT(smtp_server_feed(&srv, (const uint8_t *)str, n), n);
}

/* take_out - the pending output as a string; marks it sent. */
static const char *take_out(void)
{
	static char buf[8192];
	size_t n;
	const uint8_t *p = smtp_server_output(&srv, &n);

	if (n >= sizeof(buf))
		n = sizeof(buf) - 1;
	memcpy(buf, p, n);
	buf[n] = '\0';
	smtp_server_output_done(&srv, n);
	return buf;
}

static int next_kind(struct smtp_server_ev *ev)
{
	return smtp_server_next(&srv, ev);
}

static void test_greeting_and_ehlo(void)
{
	struct smtp_server_limits lim;
	struct smtp_server_ev ev;

	T_CASE("greeting and EHLO keywords");
	smtp_server_limits_default(&lim);
	lim.hostname = "mx.example";
	start(&lim);
	T_EQ_STR(take_out(), "220 mx.example ESMTP ringmta\r\n");
	feed_str("EHLO client.example\r\n");
	T_EQ_INT(next_kind(&ev), SMTP_SERVER_EV_HELO);
	T_EQ_INT(next_kind(&ev), SMTP_SERVER_EV_NEED_MORE);
	T_EQ_STR(take_out(), "250-mx.example\r\n250-SIZE 10240000\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
		 "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-BINARYMIME\r\n250 DSN\r\n");
	smtp_server_fini(&srv);

	T_CASE("EHLO advertises STARTTLS when offered");
	lim.offer_starttls = true;
	start(&lim);
	take_out();
	feed_str("EHLO c\r\n");
	next_kind(&ev);
	next_kind(&ev);
	T_CHECK(strstr(take_out(), "250-DSN\r\n250 STARTTLS\r\n") != NULL, "no STARTTLS line");
	smtp_server_fini(&srv);

	T_CASE("refusal greeting closes");
	lim.offer_starttls = false;
	smtp_server_init(&srv, &lim);
	smtp_server_start(&srv, SMTP_REPLY_TOO_MANY_CONN);
	T_EQ_INT(next_kind(&ev), SMTP_SERVER_EV_CLOSE);
	T_EQ_STR(take_out(), "421 4.7.0 Too many connections, try again later\r\n");
	T_EQ_INT(smtp_server_feed(&srv, (const uint8_t *)"EHLO c\r\n", 8), 0);
	T_EQ_INT(next_kind(&ev), SMTP_SERVER_EV_CLOSE);
	smtp_server_fini(&srv);
}

static void test_pipelining_batch(void)
{
	struct smtp_server_limits lim;
	struct smtp_server_ev ev;
	int k, n_need_more = 0;

	T_CASE("RFC2920 one packet, replies in order, one batch");
	smtp_server_limits_default(&lim);
	start(&lim);
	take_out();
	feed_str("EHLO c\r\n");
	while (next_kind(&ev) != SMTP_SERVER_EV_NEED_MORE)
		;
	take_out();
	feed_str("MAIL FROM:<a@b>\r\nRCPT TO:<1@d>\r\nRCPT TO:<2@d>\r\nDATA\r\n");
	while ((k = next_kind(&ev)) != SMTP_SERVER_EV_NEED_MORE) {
		T_CHECK(k != SMTP_SERVER_EV_FLUSH && k != SMTP_SERVER_EV_WAIT, "got %s", smtp_server_ev_name(k));
		if (k == SMTP_SERVER_EV_MAIL)
			smtp_server_answer(&srv, SMTP_REPLY_MAIL_OK, NULL);
		else if (k == SMTP_SERVER_EV_RCPT)
			smtp_server_answer(&srv, SMTP_REPLY_RCPT_OK, NULL);
		else if (k == SMTP_SERVER_EV_DATA_BEGIN)
			smtp_server_answer(&srv, SMTP_REPLY_OK, NULL);
	}
	n_need_more++;
	T_EQ_STR(take_out(), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	T_EQ_INT(n_need_more, 1);
	smtp_server_fini(&srv);
}

static void test_deferred_commit(void)
{
	struct smtp_server_limits lim;
	struct smtp_server_ev ev;

	T_CASE("DATA_END answered later holds pipelined input");
	smtp_server_limits_default(&lim);
	start(&lim);
	take_out();
	feed_str("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<r@d>\r\nDATA\r\n");
	for (;;) {
		int k = next_kind(&ev);
		if (k == SMTP_SERVER_EV_NEED_MORE)
			break;
		if (k == SMTP_SERVER_EV_MAIL || k == SMTP_SERVER_EV_RCPT || k == SMTP_SERVER_EV_DATA_BEGIN)
			smtp_server_answer(&srv, k == SMTP_SERVER_EV_MAIL ? SMTP_REPLY_MAIL_OK :
					   k == SMTP_SERVER_EV_RCPT ? SMTP_REPLY_RCPT_OK : SMTP_REPLY_OK, NULL);
	}
	take_out();
	feed_str("body\r\n.\r\nNOOP\r\n");
	T_EQ_INT(next_kind(&ev), SMTP_SERVER_EV_BODY);
	T_EQ_MEM(ev.data, ev.len, "body\r\n", 6);
	T_EQ_INT(next_kind(&ev), SMTP_SERVER_EV_DATA_END);
	T_EQ_INT(ev.message_bytes, 6);
	T_EQ_STR(smtp_server_action(&srv), "waiting for commit");
	T_EQ_INT(next_kind(&ev), SMTP_SERVER_EV_WAIT);
	feed_str("QUIT\r\n");
	T_EQ_INT(next_kind(&ev), SMTP_SERVER_EV_WAIT);
	T_EQ_STR(take_out(), "");
	smtp_server_shutdown(&srv);
	smtp_server_answer(&srv, SMTP_REPLY_QUEUED, "0A1B2C");
	T_EQ_INT(next_kind(&ev), SMTP_SERVER_EV_CLOSE);
	T_EQ_STR(take_out(), "250 2.0.0 Ok: queued as 0A1B2C\r\n421 4.3.2 Service shutting down, closing connection\r\n");
	smtp_server_fini(&srv);
}

static void test_long_line(void)
{
	struct smtp_server_limits lim;
	struct smtp_server_ev ev;
	static uint8_t chunk[65536];
	size_t total = 0, n_reject = 0;

	T_CASE("2 MB line costs no more than the line limit");
	T_CHECK(smtp_server_size() < 8192, "struct smtp_server is %zu bytes", smtp_server_size());
	smtp_server_limits_default(&lim);
	start(&lim);
	take_out();
	memset(chunk, 'x', sizeof(chunk));
	while (total < 2u * 1024 * 1024) {
		size_t off = 0;

		while (off < sizeof(chunk)) {
			size_t n = smtp_server_feed(&srv, chunk + off, sizeof(chunk) - off);
			int k;

			off += n;
			while ((k = next_kind(&ev)) != SMTP_SERVER_EV_NEED_MORE) {
				if (k == SMTP_SERVER_EV_REJECT)
					n_reject++;
				T_CHECK(k == SMTP_SERVER_EV_REJECT, "got %s", smtp_server_ev_name(k));
				if (k != SMTP_SERVER_EV_REJECT)
					break;
			}
		}
		total += sizeof(chunk);
	}
	T_EQ_INT(n_reject, 1);
	feed_str("\r\nNOOP\r\n");
	while (next_kind(&ev) != SMTP_SERVER_EV_NEED_MORE)
		;
	T_EQ_STR(take_out(), "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
	smtp_server_fini(&srv);
}

static void test_starttls_discards(void)
{
	struct smtp_server_limits lim;
	struct smtp_server_ev ev;

	T_CASE("CVE-2011-0411 STARTTLS drops pipelined plaintext");
	smtp_server_limits_default(&lim);
	lim.offer_starttls = true;
	start(&lim);
	take_out();
	feed_str("EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x>\r\n");
	T_EQ_INT(next_kind(&ev), SMTP_SERVER_EV_HELO);
	T_EQ_INT(next_kind(&ev), SMTP_SERVER_EV_STARTTLS);
	T_EQ_INT(next_kind(&ev), SMTP_SERVER_EV_WAIT);
	smtp_server_answer(&srv, SMTP_REPLY_TLS_GO, NULL);
	T_EQ_INT(next_kind(&ev), SMTP_SERVER_EV_NEED_MORE);
	T_CHECK(strstr(take_out(), "220 2.0.0 Ready to start TLS\r\n") != NULL, "no 220");
	feed_str("MAIL FROM:<a@b>\r\n");
	T_EQ_INT(next_kind(&ev), SMTP_SERVER_EV_REJECT);
	T_EQ_STR(smtp_proto_reply(ev.reply)->name, "NEED_HELO");
	next_kind(&ev);
	take_out();
	feed_str("EHLO c\r\n");
	next_kind(&ev);
	next_kind(&ev);
	T_CHECK(strstr(take_out(), "STARTTLS") == NULL, "STARTTLS offered again after TLS");
	smtp_server_fini(&srv);
}

static void test_flush(void)
{
	struct smtp_server_limits lim;
	struct smtp_server_ev ev;
	static char in[6 * 400 + 1];
	size_t i, got = 0, n_flush = 0;
	int k;

	T_CASE("output full gives FLUSH, not growth");
	for (i = 0; i < 400; i++)
		memcpy(in + 6 * i, "NOOP\r\n", 7);
	smtp_server_limits_default(&lim);
	start(&lim);
	take_out();
	{
		size_t off = 0, len = strlen(in);

		while (off < len) {
			off += smtp_server_feed(&srv, (const uint8_t *)in + off, len - off);
			while ((k = next_kind(&ev)) != SMTP_SERVER_EV_NEED_MORE) {
				T_EQ_INT(k, SMTP_SERVER_EV_FLUSH);
				n_flush++;
				got += strlen(take_out());
			}
		}
	}
	got += strlen(take_out());
	T_CHECK(n_flush > 0, "no FLUSH");
	T_EQ_INT(got, 400 * strlen("250 2.0.0 Ok\r\n"));
	smtp_server_fini(&srv);
}

static void test_received(void)
{
	struct smtp_server_limits lim;
	struct smtp_server_ev ev;
	char out[1024];
	int n;

	T_CASE("AUTH payload never in the log sample");
	smtp_server_limits_default(&lim);
	start(&lim);
	feed_str("AUTH PLAIN AHVzZXIAc2VjcmV0\r\n");
	T_EQ_INT(next_kind(&ev), SMTP_SERVER_EV_REJECT);
	T_EQ_STR(ev.sample, "AUTH ***");
	T_EQ_STR(smtp_proto_reply(ev.reply)->name, "NOT_IMPLEMENTED");
	smtp_server_fini(&srv);

	T_CASE("Received: header, hostile HELO");
	smtp_server_limits_default(&lim);
	lim.hostname = "mx.example";
	start(&lim);
	feed_str("EHLO evil(x);\\\"<a>\r\n");
	next_kind(&ev);
	n = smtp_server_received(&srv, out, sizeof(out), "192.0.2.1", "host.example",
				 "0A1B2C", "r@d.example", "Mon, 23 Nov 2026 18:00:00 +0000");
	T_EQ_STR(out, "Received: from evil?x?????a? (host.example [192.0.2.1])\r\n"
		 "\tby mx.example (ringmta) with ESMTP id 0A1B2C\r\n\tfor <r@d.example>;\r\n"
		 "\tMon, 23 Nov 2026 18:00:00 +0000\r\n");
	T_EQ_INT(n, (int)strlen(out));
	T_CASE("Received: without rcpt, small buffer");
	n = smtp_server_received(&srv, out, sizeof(out), "192.0.2.1", NULL, "Q", NULL, "D");
	T_EQ_STR(out, "Received: from evil?x?????a? (unknown [192.0.2.1])\r\n"
		 "\tby mx.example (ringmta) with ESMTP id Q;\r\n\tD\r\n");
	T_EQ_INT(smtp_server_received(&srv, out, 20, "192.0.2.1", NULL, "Q", NULL, "D"), -ENOSPC);
	T_EQ_INT(smtp_server_received(&srv, out, 20, NULL, NULL, "Q", NULL, "D"), -EINVAL);
	smtp_server_fini(&srv);
}

int main(void)
{
	test_scenarios();
	test_matrix();
	test_greeting_and_ehlo();
	test_pipelining_batch();
	test_deferred_commit();
	test_long_line();
	test_starttls_discards();
	test_flush();
	test_received();
	return t_done();
}
