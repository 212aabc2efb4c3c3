/*
 * dsn - delivery status notifications: compose an RFC 3464 bounce, delay
 * warning or success notice, streamed into the host's buffers.
 *
 * Owns: the writer state and its staging area (struct dsn_writer); it
 *   borrows the message description and the original's bytes.
 * Must not: read clocks, files or sockets, allocate, log, hold the
 *   original, or let any borrowed string start a header line or a MIME
 *   delimiter.
 * Interface: include/ringmta/dsn.h
 * Limits: each item of the head or tail fits DSN_STAGE_BYTES (strings are
 *   cut to DSN_*_MAX first); every generated line <= DSN_LINE_MAX octets.
 * Errors: DSN_E_INVALID, DSN_E_NULL_SENDER (dsn_init), DSN_E_BOUNDARY,
 *   DSN_E_STATE (sticky). A staging overflow is our bug (rm_panic).
 * Standards: RFC 3464 (delivery-status fields), RFC 3461 4.1/4.3/6
 *   (NOTIFY defaults, RET, ORCPT/ENVID decoding), RFC 6522
 *   (multipart/report), RFC 6533 (SMTPUTF8 DSNs), RFC 3834 5
 *   (Auto-Submitted), RFC 5322 2.1.1/2.2.3/3.3 (line length, folding,
 *   dates), RFC 2046 5.1.1 (boundaries), RFC 5321 4.5.5 (null sender).
 *
 * Design: dsn_write() first drains the staging area, then either copies
 * the original (PH_ORIGINAL) or formats the next item of the head or tail
 * into the staging area. Items, in order: the message header; the text
 * part's introduction; one text line per recipient; the report's
 * per-message fields; one field group per recipient; the third part's
 * header; the original; the closing delimiter. Header values are built
 * sanitized in a struct field (one line, single spaces), then folded
 * into the staging area.
 */
#include "ringmta/dsn.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "ringmta/queue.h"
#include "ringmta/smtp_proto.h"
#include "ringmta/util.h"

/* writer phases (struct dsn_writer.phase), in output order */
enum {
	PH_HEADER = 0, PH_TEXT_INTRO, PH_TEXT_RCPT, PH_STATUS_MSG,
	PH_STATUS_RCPT, PH_ORIG_HEAD, PH_ORIGINAL, PH_TAIL, PH_DONE,
};

/* end-of-header detection in the original (struct dsn_writer.hdr_state) */
enum { HS_LINE_START = 0, HS_LINE_START_CR, HS_MID };

/* FIELD_BYTES - one unfolded field or text line: the largest is a
 * Diagnostic-Code or a text line with address, host and reply. */
#define FIELD_BYTES (DSN_DIAG_MAX + DSN_ORCPT_MAX + DSN_ADDR_MAX + DSN_HOST_MAX + 512)

/* struct field - one logical line being built, before folding. */
struct field {
	size_t len;
	char b[FIELD_BYTES];
};

static const char *const action_name[] = {
	[DSN_ACTION_FAILED] = "failed", [DSN_ACTION_DELAYED] = "delayed",
	[DSN_ACTION_DELIVERED] = "delivered", [DSN_ACTION_RELAYED] = "relayed",
	[DSN_ACTION_EXPANDED] = "expanded",
};

bool dsn_should_notify(const char *sender, unsigned notify,
		       enum dsn_kind kind)
{
	if (sender == NULL || sender[0] == '\0')
		return false;		/* never bounce a bounce */
	if (notify & SPOOL_NOTIFY_NEVER)
		return false;
	if (notify == 0)		/* RFC 3461 4.1: as if FAILURE,DELAY */
		return kind == DSN_KIND_FAILURE || kind == DSN_KIND_DELAY;
	switch (kind) {
	case DSN_KIND_FAILURE: return (notify & SPOOL_NOTIFY_FAILURE) != 0;
	case DSN_KIND_DELAY: return (notify & SPOOL_NOTIFY_DELAY) != 0;
	case DSN_KIND_SUCCESS: return (notify & SPOOL_NOTIFY_SUCCESS) != 0;
	}
	return false;
}

/* --- dates -------------------------------------------------------------- */

/* DATE_MAX_UNIX - 9999-12-31T23:59:59Z: RFC 5322 years have 4 digits here. */
#define DATE_MAX_UNIX 253402300799LL

/* civil_from_days - proleptic Gregorian date of day z since 1970-01-01
 * (H. Hinnant's days_from_civil inverse; exact for every int64 day here). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	int64_t era, yy;
	unsigned doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = (unsigned)(z - era * 146097);
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	yy = (int64_t)yoe + era * 400;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = yy + (*m <= 2);
}

char *dsn_date_format(int64_t unix_s, char *out, size_t cap)
{
	static const char wday[7][4] = { "Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed" };
	static const char mon[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	int64_t days, secs, y;
	unsigned m, d;

	if (unix_s < 0)
		unix_s = 0;
	if (unix_s > DATE_MAX_UNIX)
		unix_s = DATE_MAX_UNIX;
	days = unix_s / 86400;
	secs = unix_s % 86400;
	civil_from_days(days, &y, &m, &d);
	snprintf(out, cap, "%s, %02u %s %04lld %02lld:%02lld:%02lld +0000",
		 wday[days % 7], d, mon[m - 1], (long long)y,
		 (long long)(secs / 3600), (long long)(secs / 60 % 60),
		 (long long)(secs % 60));
	return out;
}

/* put_safe - append at most max bytes of s to out[*n..cap), keeping only
 * [0-9A-Za-z] and the bytes in extra. */
static void put_safe(char *out, size_t cap, size_t *n, const char *s,
		     size_t max, const char *extra)
{
	size_t i;

	for (i = 0; s && s[i] && i < max && *n + 1 < cap; i++) {
		char c = s[i];

		if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
		    (c >= 'A' && c <= 'Z') || (c != '\0' && strchr(extra, c)))
			out[(*n)++] = c;
	}
	out[*n] = '\0';
}

char *dsn_boundary_format(char *out, size_t cap, const char *queue_id,
			  int64_t unix_s, uint64_t salt, unsigned attempt)
{
	size_t n = 0;

	if (cap == 0)
		return out;
	put_safe(out, cap, &n, "=_ringmta_", 10, "=_");
	put_safe(out, cap, &n, queue_id, 16, "");
	/* 10 + 16 + "_" 20 digits "_" 16 "_" 10 digits would be 75: cap
	 * the time at 11 digits, enough until the year 5138 */
	snprintf(out + n, cap - n, "_%lld_%016llx_%u",
		 (long long)(unix_s < 0 ? 0 : unix_s % 100000000000LL),
		 (unsigned long long)salt, attempt % 100000u);
	return out;
}

char *dsn_message_id_format(char *out, size_t cap, int64_t unix_s,
			    const char *queue_id, const char *myhostname)
{
	int64_t y, days, secs;
	unsigned m, d;
	size_t n;

	if (cap == 0)
		return out;
	if (unix_s < 0)
		unix_s = 0;
	if (unix_s > DATE_MAX_UNIX)
		unix_s = DATE_MAX_UNIX;
	days = unix_s / 86400;
	secs = unix_s % 86400;
	civil_from_days(days, &y, &m, &d);
	snprintf(out, cap, "<%04lld%02u%02u%02lld%02lld%02lld.", (long long)y, m, d,
		 (long long)(secs / 3600), (long long)(secs / 60 % 60),
		 (long long)(secs % 60));
	n = strlen(out);
	put_safe(out, cap, &n, queue_id, 64, ".-");
	put_safe(out, cap, &n, "@", 1, "@");
	put_safe(out, cap, &n, myhostname, DSN_HOST_MAX, ".-");
	put_safe(out, cap, &n, ">", 1, ">");
	return out;
}

/* --- building fields ---------------------------------------------------- */

/* f_raw - append our own constant text (never peer data). */
static void f_raw(struct field *f, const char *s)
{
	size_t n = strlen(s);

	if (n > sizeof(f->b) - f->len)
		rm_panic("dsn: field overflow");
	memcpy(f->b + f->len, s, n);
	f->len += n;
}

/* utf8_len - length of the valid UTF-8 sequence at p[0..n), 0 if none. */
static size_t utf8_len(const uint8_t *p, size_t n)
{
	size_t k = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc0 ? 2 : 0;

	if (k == 0 || k > n || !smtp_proto_utf8_valid(p, k))
		return 0;
	return k;
}

/*
 * f_clean - append s[0..n) sanitized, at most cap output bytes: CR, LF,
 * TAB and spaces collapse to one space (leading and trailing dropped),
 * other controls and DEL become '?', 8-bit stays only as valid UTF-8 when
 * is_utf8, else '?'. Returns true when s was cut.
 */
static bool f_clean(struct field *f, const char *s, size_t n, size_t cap,
		    bool is_utf8)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t start = f->len, i, k;
	bool is_space = false;
	char q = '?';

	if (s == NULL)
		return false;
	if (cap > sizeof(f->b) - f->len)
		rm_panic("dsn: field overflow");
	for (i = 0; i < n; i += k) {
		const void *tok = p + i;

		k = 1;
		if (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n') {
			is_space = f->len > start;
			continue;
		}
		if (p[i] < 0x20 || p[i] == 0x7f) {
			tok = &q;
		} else if (p[i] >= 0x80) {
			k = is_utf8 ? utf8_len(p + i, n - i) : 0;
			if (k == 0) {
				k = 1;
				tok = &q;
			}
		}
		if (f->len - start + is_space + (tok == &q ? 1 : k) > cap)
			return true;
		if (is_space)
			f->b[f->len++] = ' ';
		is_space = false;
		memcpy(f->b + f->len, tok, tok == &q ? 1 : k);
		f->len += tok == &q ? 1 : k;
	}
	return false;
}

/* f_cstr - f_clean of a NUL-terminated string (NULL appends nothing). */
static bool f_cstr(struct field *f, const char *s, size_t cap, bool is_utf8)
{
	return f_clean(f, s, s ? strlen(s) : 0, cap, is_utf8);
}

/* hexval - value of a hex digit, -1 if none. */
static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/*
 * f_xtext - append xtext s decoded (RFC 3461 4: "+" 2 hex digits), then
 * sanitized, at most cap bytes. RFC 3461 6.3 asks for the decoded value
 * in Original-Recipient and Original-Envelope-Id. A malformed escape is
 * kept as is.
 */
static void f_xtext(struct field *f, const char *s, size_t cap, bool is_utf8)
{
	char dec[DSN_ORCPT_MAX + 1];
	size_t n = 0, i, len = strlen(s);

	for (i = 0; i < len && n < sizeof(dec); i++) {
		if (s[i] == '+' && i + 2 < len && hexval(s[i + 1]) >= 0 &&
		    hexval(s[i + 2]) >= 0) {
			dec[n++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		} else {
			dec[n++] = s[i];
		}
	}
	f_clean(f, dec, n, cap, is_utf8);
}

/* has_8bit - true if the NUL-terminated s holds a byte >= 0x80. */
static bool has_8bit(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s >= 0x80)
			return true;
	return false;
}

/* --- the staging area --------------------------------------------------- */

/* st_put - append bytes to the staging area; overflow is our bug. */
static void st_put(struct dsn_writer *w, const void *p, size_t n)
{
	if (n > sizeof(w->stage) - w->stage_len)
		rm_panic("dsn: stage overflow (%zu + %zu)", w->stage_len, n);
	memcpy(w->stage + w->stage_len, p, n);
	w->stage_len += n;
}

static void st_str(struct dsn_writer *w, const char *s)
{
	st_put(w, s, strlen(s));
}

/*
 * st_fold - write the logical line s[0..n) (single spaces only, no CR/LF)
 * as one or more CRLF lines: fold before a space so that lines stay
 * within DSN_FOLD_COLUMN where a space allows it and within DSN_LINE_MAX
 * always (RFC 5322 2.2.3: unfolding restores the text). A word longer than
 * DSN_LINE_MAX is broken (at a UTF-8 character boundary) and continued
 * after an inserted space.
 */
static void st_fold(struct dsn_writer *w, const char *s, size_t n)
{
	size_t start = 0, cut, j, soft, hard;
	bool is_forced = false, next_forced;

	while (n > 0 && s[n - 1] == ' ')
		n--;		/* a folded line of white space only is not allowed */
	while (start < n) {
		soft = DSN_FOLD_COLUMN - is_forced;
		hard = DSN_LINE_MAX - is_forced;
		next_forced = false;
		cut = 0;
		if (n - start <= soft) {
			cut = n;
		} else {
			for (j = start + soft; j > start + 1 && cut == 0; j--)
				if (s[j] == ' ')
					cut = j;
			for (j = start + soft + 1; cut == 0 && j < n && j <= start + hard; j++)
				if (s[j] == ' ')
					cut = j;
			if (cut == 0 && n - start <= hard)
				cut = n;
			if (cut == 0) {
				cut = start + hard;
				while (cut > start + 1 && ((uint8_t)s[cut] & 0xc0) == 0x80)
					cut--;
				next_forced = true;
			}
		}
		if (is_forced)
			st_put(w, " ", 1);
		st_put(w, s + start, cut - start);
		st_put(w, "\r\n", 2);
		is_forced = next_forced;
		start = cut;
	}
}

static void st_field(struct dsn_writer *w, const struct field *f)
{
	st_fold(w, f->b, f->len);
}

/* st_date_field - "name: <date>" as one line. */
static void st_date_field(struct dsn_writer *w, const char *name, int64_t t)
{
	char date[DSN_DATE_BYTES];

	st_str(w, name);
	st_str(w, ": ");
	st_str(w, dsn_date_format(t, date, sizeof(date)));
	st_str(w, "\r\n");
}

static void st_delim(struct dsn_writer *w, bool is_close)
{
	st_str(w, "\r\n--");
	st_put(w, w->m->boundary, w->blen);
	st_str(w, is_close ? "--\r\n" : "\r\n");
}

/* --- the items ---------------------------------------------------------- */

static const char *const subject[] = {
	[DSN_KIND_FAILURE] = "Undelivered Mail Returned to Sender",
	[DSN_KIND_DELAY] = "Delayed Mail (still being retried)",
	[DSN_KIND_SUCCESS] = "Successful Mail Delivery Report",
};

/* item_header - the DSN's own header and preamble, up to the text part. */
static void item_header(struct dsn_writer *w)
{
	const struct dsn_msg *m = w->m;
	bool u = m->smtputf8;
	struct field f;
	char date[DSN_DATE_BYTES];

	st_str(w, "Date: ");
	st_str(w, dsn_date_format(m->date_unix, date, sizeof(date)));
	st_str(w, "\r\n");
	f.len = 0;
	f_raw(&f, "From: MAILER-DAEMON@");
	f_cstr(&f, m->myhostname, DSN_HOST_MAX, u);
	f_raw(&f, " (Mail Delivery System)");
	st_field(w, &f);
	f.len = 0;
	f_raw(&f, "Subject: ");
	f_raw(&f, subject[m->kind]);
	st_field(w, &f);
	f.len = 0;
	f_raw(&f, "To: <");
	f_cstr(&f, m->sender, DSN_ADDR_MAX, u);
	f_raw(&f, ">");
	st_field(w, &f);
	st_str(w, "Auto-Submitted: auto-replied\r\n");
	f.len = 0;
	f_raw(&f, "Message-ID: ");
	f_cstr(&f, m->message_id, DSN_MSGID_MAX, false);
	st_field(w, &f);
	st_str(w, "MIME-Version: 1.0\r\n");
	st_str(w, u ? "Content-Type: multipart/report; report-type=global-delivery-status;\r\n"
		    : "Content-Type: multipart/report; report-type=delivery-status;\r\n");
	st_str(w, "\tboundary=\"");
	st_put(w, m->boundary, w->blen);
	st_str(w, "\"\r\n");
	st_str(w, w->is_8bit ? "Content-Transfer-Encoding: 8bit\r\n"
			     : "Content-Transfer-Encoding: 7bit\r\n");
	st_str(w, "\r\nThis is a MIME-encapsulated message.\r\n");
	st_delim(w, false);
	st_str(w, "Content-Description: Notification\r\n");
	st_str(w, u ? "Content-Type: text/plain; charset=utf-8\r\n"
		    : "Content-Type: text/plain; charset=us-ascii\r\n");
	if (u)
		st_str(w, "Content-Transfer-Encoding: 8bit\r\n");
	st_str(w, "\r\n");
}

/* item_text_intro - the human-readable introduction (Postfix's wording). */
static void item_text_intro(struct dsn_writer *w)
{
	struct field f;

	f.len = 0;
	f_raw(&f, "This is the mail system at host ");
	f_cstr(&f, w->m->myhostname, DSN_HOST_MAX, w->m->smtputf8);
	f_raw(&f, ".");
	st_field(w, &f);
	st_str(w, "\r\n");
	switch (w->m->kind) {
	case DSN_KIND_FAILURE:
		st_str(w, "I'm sorry to have to inform you that your message could not\r\n"
			  "be delivered to one or more recipients.\r\n\r\n"
			  "For further assistance, please send mail to postmaster.\r\n\r\n"
			  "If you do so, please include this problem report.\r\n");
		break;
	case DSN_KIND_DELAY:
		st_str(w, "####################################################################\r\n"
			  "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n"
			  "####################################################################\r\n\r\n"
			  "Your message could not be delivered yet to one or more\r\n"
			  "recipients. The mail system will keep trying.\r\n");
		break;
	case DSN_KIND_SUCCESS:
		st_str(w, "Your message was successfully delivered to the destination(s)\r\n"
			  "listed below.\r\n");
		break;
	}
	if (w->is_full_cut)
		st_str(w, "\r\nThe message could not be returned in full (it is too\r\n"
			  "large, or binary); only its headers are attached.\r\n");
	st_str(w, "\r\n                   The mail system\r\n");
}

/* f_diag - "550 5.1.1 text" or our own text, cut to DSN_DIAG_MAX. */
static void f_diag(struct field *f, const struct dsn_rcpt *r, bool u)
{
	char code[8];

	if (r->reply_code > 0 && r->reply_code < 1000) {
		snprintf(code, sizeof(code), "%u", r->reply_code);
		f_raw(f, code);
		if (r->reply_esc &&
		    queue_status_valid(r->reply_esc, strlen(r->reply_esc))) {
			f_raw(f, " ");
			f_raw(f, r->reply_esc);
		}
		if (r->diag && r->diag_len)
			f_raw(f, " ");
	}
	if (f_clean(f, r->diag, r->diag ? r->diag_len : 0, DSN_DIAG_MAX, u))
		f_raw(f, "...");
}

/* item_text_rcpt - one recipient's line in the text part. */
static void item_text_rcpt(struct dsn_writer *w, const struct dsn_rcpt *r)
{
	bool u = w->m->smtputf8;
	struct field f;

	f.len = 0;
	f_raw(&f, "<");
	f_cstr(&f, r->addr, DSN_ADDR_MAX, u);
	f_raw(&f, ">: ");
	if (r->remote_mta && r->remote_mta[0] && r->reply_code) {
		f_raw(&f, "host ");
		f_cstr(&f, r->remote_mta, DSN_HOST_MAX, u);
		f_raw(&f, " said: ");
	}
	if (r->reply_code || (r->diag && r->diag_len)) {
		f_diag(&f, r, u);
	} else {
		f_raw(&f, action_name[r->action]);
		f_raw(&f, " (status ");
		f_cstr(&f, r->status, QUEUE_STATUS_BYTES, false);
		f_raw(&f, ")");
	}
	st_str(w, "\r\n");
	st_field(w, &f);
}

/* item_status_msg - the report part's header and per-message fields
 * (RFC 3464 2.2). */
static void item_status_msg(struct dsn_writer *w)
{
	const struct dsn_msg *m = w->m;
	bool u = m->smtputf8;
	struct field f;

	st_delim(w, false);
	st_str(w, "Content-Description: Delivery report\r\n");
	st_str(w, u ? "Content-Type: message/global-delivery-status\r\n"
		      "Content-Transfer-Encoding: 8bit\r\n\r\n"
		    : "Content-Type: message/delivery-status\r\n\r\n");
	if (m->envid && m->envid[0]) {
		f.len = 0;
		f_raw(&f, "Original-Envelope-Id: ");
		f_xtext(&f, m->envid, DSN_ENVID_MAX, u);
		st_field(w, &f);
	}
	f.len = 0;
	f_raw(&f, "Reporting-MTA: dns; ");
	f_cstr(&f, m->myhostname, DSN_HOST_MAX, u);
	st_field(w, &f);
	if (m->queue_id && m->queue_id[0]) {
		f.len = 0;
		f_raw(&f, "X-ringmta-Queue-ID: ");
		f_cstr(&f, m->queue_id, 64, false);
		st_field(w, &f);
	}
	if (m->arrival_unix)
		st_date_field(w, "Arrival-Date", m->arrival_unix);
}

/* item_status_rcpt - one recipient's fields (RFC 3464 2.3), after the
 * blank line that separates groups. */
static void item_status_rcpt(struct dsn_writer *w, const struct dsn_rcpt *r)
{
	bool u = w->m->smtputf8;
	const char *semi;
	struct field f;

	st_str(w, "\r\n");
	if (r->orcpt && (semi = strchr(r->orcpt, ';')) != NULL &&
	    semi > r->orcpt && semi - r->orcpt <= 32) {
		f.len = 0;
		f_raw(&f, "Original-Recipient: ");
		f_clean(&f, r->orcpt, (size_t)(semi - r->orcpt), 32, false);
		f_raw(&f, ";");
		f_xtext(&f, semi + 1, DSN_ORCPT_MAX, u);
		st_field(w, &f);
	}
	f.len = 0;
	/* RFC 6533 3: a non-ASCII address has type utf-8 */
	f_raw(&f, u && has_8bit(r->addr) ? "Final-Recipient: utf-8; "
					 : "Final-Recipient: rfc822; ");
	f_cstr(&f, r->addr, DSN_ADDR_MAX, u);
	st_field(w, &f);
	st_str(w, "Action: ");
	st_str(w, action_name[r->action]);
	st_str(w, "\r\nStatus: ");
	st_str(w, r->status);
	st_str(w, "\r\n");
	if (r->remote_mta && r->remote_mta[0]) {
		f.len = 0;
		f_raw(&f, "Remote-MTA: dns; ");
		f_cstr(&f, r->remote_mta, DSN_HOST_MAX, u);
		st_field(w, &f);
	}
	if (r->reply_code || (r->diag && r->diag_len)) {
		f.len = 0;
		f_raw(&f, r->reply_code ? "Diagnostic-Code: smtp; "
					: "Diagnostic-Code: X-ringmta; ");
		f_diag(&f, r, u);
		st_field(w, &f);
	}
	if (r->last_attempt_unix)
		st_date_field(w, "Last-Attempt-Date", r->last_attempt_unix);
	if (r->action == DSN_ACTION_DELAYED && r->retry_until_unix)
		st_date_field(w, "Will-Retry-Until", r->retry_until_unix);
}

/* item_orig_head - the third part's header. */
static void item_orig_head(struct dsn_writer *w)
{
	static const char *const what[] = {
		[DSN_KIND_FAILURE] = "Undelivered Message",
		[DSN_KIND_DELAY] = "Delayed Message",
		[DSN_KIND_SUCCESS] = "Delivered Message",
	};
	bool u = w->m->smtputf8, full = w->original == DSN_ORIGINAL_FULL;

	st_delim(w, false);
	st_str(w, "Content-Description: ");
	st_str(w, what[w->m->kind]);
	st_str(w, full ? "\r\n" : " Headers\r\n");
	if (full)
		st_str(w, u ? "Content-Type: message/global\r\n"
			    : "Content-Type: message/rfc822\r\n");
	else
		st_str(w, u ? "Content-Type: message/global-headers\r\n"
			    : "Content-Type: text/rfc822-headers\r\n");
	if (u || (full && w->is_8bit))
		st_str(w, "Content-Transfer-Encoding: 8bit\r\n");
	st_str(w, "\r\n");
}

/* next_item - format the next item of the head or tail into the stage
 * and advance the phase. */
static void next_item(struct dsn_writer *w)
{
	const struct dsn_msg *m = w->m;

	switch (w->phase) {
	case PH_HEADER:
		item_header(w);
		w->phase = PH_TEXT_INTRO;
		break;
	case PH_TEXT_INTRO:
		item_text_intro(w);
		w->phase = PH_TEXT_RCPT;
		w->rcpt_i = 0;
		break;
	case PH_TEXT_RCPT:
		item_text_rcpt(w, &m->rcpts[w->rcpt_i]);
		if (++w->rcpt_i == m->n_rcpts)
			w->phase = PH_STATUS_MSG;
		break;
	case PH_STATUS_MSG:
		item_status_msg(w);
		w->phase = PH_STATUS_RCPT;
		w->rcpt_i = 0;
		break;
	case PH_STATUS_RCPT:
		item_status_rcpt(w, &m->rcpts[w->rcpt_i]);
		if (++w->rcpt_i == m->n_rcpts)
			w->phase = w->original == DSN_ORIGINAL_NONE ? PH_TAIL : PH_ORIG_HEAD;
		break;
	case PH_ORIG_HEAD:
		item_orig_head(w);
		w->phase = PH_ORIGINAL;
		break;
	case PH_TAIL:
		st_delim(w, true);
		w->phase = PH_DONE;
		break;
	default:
		rm_panic("dsn: next_item in phase %u", w->phase);
	}
}

/* --- the original ------------------------------------------------------- */

/* emit_orig - copy one byte of the original to out and watch for a line
 * that starts with "--" boundary (RFC 2046 5.1.1: it would end the part). */
static int emit_orig(struct dsn_writer *w, uint8_t c, uint8_t *out,
		     size_t *out_len)
{
	out[(*out_len)++] = c;
	if (c == '\n') {
		w->bmatch = 0;
	} else if (w->bmatch >= 0) {
		uint8_t want = w->bmatch < 2 ? '-' : (uint8_t)w->m->boundary[w->bmatch - 2];

		if (c != want)
			w->bmatch = -1;
		else if (++w->bmatch == w->blen + 2)
			return w->err = DSN_E_BOUNDARY;
	}
	return 0;
}

/*
 * copy_run - the fast path of pass_original(): inside a line that cannot
 * be a delimiter (and, with headers only, is not the empty line), copy up
 * to and including the next LF with memcpy (~100x the byte loop).
 */
static void copy_run(struct dsn_writer *w, const uint8_t *in, size_t n,
		     bool is_hdrs, uint8_t *out, size_t cap, size_t *in_used,
		     size_t *out_len)
{
	size_t k = n - *in_used;
	const uint8_t *lf;

	if (k > cap - *out_len)
		k = cap - *out_len;
	lf = memchr(in + *in_used, '\n', k);
	if (lf != NULL) {
		k = (size_t)(lf - (in + *in_used)) + 1;
		w->bmatch = 0;
		if (is_hdrs)
			w->hdr_state = HS_LINE_START;
	}
	memcpy(out + *out_len, in + *in_used, k);
	*in_used += k;
	*out_len += k;
}

/*
 * pass_original - copy the original (all of it, or its header section up
 * to the empty line) from in to out. Returns 0 when the original part is
 * complete (phase is PH_TAIL), DSN_OUT_FULL, DSN_NEED_ORIGINAL, or
 * DSN_E_BOUNDARY.
 */
static int pass_original(struct dsn_writer *w, const uint8_t *in, size_t n,
			 bool is_end, uint8_t *out, size_t cap,
			 size_t *in_used, size_t *out_len)
{
	bool is_hdrs = w->original == DSN_ORIGINAL_HEADERS;
	uint8_t c;

	while (*in_used < n) {
		if (*out_len == cap)
			return DSN_OUT_FULL;
		if (w->bmatch < 0 && (!is_hdrs || w->hdr_state == HS_MID)) {
			copy_run(w, in, n, is_hdrs, out, cap, in_used, out_len);
			continue;
		}
		c = in[*in_used];
		if (is_hdrs && w->hdr_state != HS_MID) {
			if (c == '\n') {	/* the empty line: headers end */
				(*in_used)++;
				w->phase = PH_TAIL;
				return 0;
			}
			if (w->hdr_state == HS_LINE_START && c == '\r') {
				(*in_used)++;	/* held until we see what follows */
				w->hdr_state = HS_LINE_START_CR;
				continue;
			}
			if (w->hdr_state == HS_LINE_START_CR) {
				w->hdr_state = HS_MID;	/* a bare CR: give it back */
				if (emit_orig(w, '\r', out, out_len) < 0)
					return w->err;
				continue;
			}
		}
		if (is_hdrs)
			w->hdr_state = c == '\n' ? HS_LINE_START : HS_MID;
		(*in_used)++;
		if (emit_orig(w, c, out, out_len) < 0)
			return w->err;
	}
	if (!is_end)
		return DSN_NEED_ORIGINAL;
	if (is_hdrs && w->hdr_state == HS_LINE_START_CR) {
		if (*out_len == cap)
			return DSN_OUT_FULL;
		w->hdr_state = HS_MID;
		if (emit_orig(w, '\r', out, out_len) < 0)
			return w->err;
	}
	w->phase = PH_TAIL;
	return 0;
}

/* --- the interface ------------------------------------------------------ */

/* boundary_ok - RFC 2046 5.1.1 bchars without the space (a trailing space
 * is forbidden and an inner one needs care nobody takes). */
static bool boundary_ok(const char *b)
{
	size_t n = b ? strlen(b) : 0, i;

	if (n < 1 || n > DSN_BOUNDARY_MAX)
		return false;
	for (i = 0; i < n; i++) {
		char c = b[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
		      (c >= 'A' && c <= 'Z') || strchr("'()+_,-./:=?", c)))
			return false;
	}
	return true;
}

int dsn_init(struct dsn_writer *w, const struct dsn_msg *m)
{
	size_t i;

	memset(w, 0, offsetof(struct dsn_writer, stage));
	w->err = DSN_E_INVALID;
	if (m == NULL || (unsigned)m->kind > DSN_KIND_SUCCESS)
		return DSN_E_INVALID;
	if (m->sender == NULL || m->sender[0] == '\0')
		return w->err = DSN_E_NULL_SENDER;
	if (m->myhostname == NULL || m->myhostname[0] == '\0' ||
	    m->message_id == NULL || m->message_id[0] == '\0' ||
	    !boundary_ok(m->boundary) || m->rcpts == NULL || m->n_rcpts == 0)
		return DSN_E_INVALID;
	for (i = 0; i < m->n_rcpts; i++) {
		const struct dsn_rcpt *r = &m->rcpts[i];

		if (r->addr == NULL || r->addr[0] == '\0' || r->status == NULL ||
		    !queue_status_valid(r->status, strlen(r->status)) ||
		    (unsigned)r->action > DSN_ACTION_EXPANDED || r->reply_code > 999)
			return DSN_E_INVALID;
	}
	w->m = m;
	w->err = 0;
	w->blen = (uint8_t)strlen(m->boundary);
	w->phase = PH_HEADER;
	w->hdr_state = HS_LINE_START;
	w->bmatch = 0;
	if (!m->has_original) {
		w->original = DSN_ORIGINAL_NONE;
	} else if (m->kind == DSN_KIND_FAILURE && m->ret == SPOOL_RET_FULL) {
		/* RFC 3461 4.3: FULL applies to failures only */
		w->is_full_cut = m->body == SPOOL_BODY_BINARYMIME ||
			(m->max_full_bytes && m->original_size > m->max_full_bytes);
		w->original = w->is_full_cut ? DSN_ORIGINAL_HEADERS : DSN_ORIGINAL_FULL;
	} else {
		w->original = DSN_ORIGINAL_HEADERS;
	}
	w->is_8bit = m->smtputf8 || (w->original == DSN_ORIGINAL_FULL &&
				     m->body == SPOOL_BODY_8BITMIME);
	return 0;
}

enum dsn_original dsn_original(const struct dsn_writer *w)
{
	return (enum dsn_original)w->original;
}

void dsn_envelope(const struct dsn_writer *w, int *body, bool *smtputf8)
{
	*body = w->is_8bit ? SPOOL_BODY_8BITMIME : SPOOL_BODY_7BIT;
	*smtputf8 = w->m != NULL && w->m->smtputf8;
}

int dsn_write(struct dsn_writer *w, const uint8_t *in, size_t in_len,
	      bool is_end, uint8_t *out, size_t out_cap, size_t *in_used,
	      size_t *out_len)
{
	size_t k;
	int rc;

	*in_used = 0;
	*out_len = 0;
	if (w->err)
		return w->err;
	if (w->phase > PH_DONE)
		return w->err = DSN_E_STATE;
	for (;;) {
		k = w->stage_len - w->stage_off;
		if (k > out_cap - *out_len)
			k = out_cap - *out_len;
		memcpy(out + *out_len, w->stage + w->stage_off, k);
		*out_len += k;
		w->stage_off += k;
		if (w->stage_off < w->stage_len)
			return DSN_OUT_FULL;
		w->stage_off = w->stage_len = 0;
		if (w->phase == PH_DONE) {
			w->phase = PH_DONE + 1;	/* later calls: DSN_E_STATE */
			return DSN_DONE;
		}
		if (w->phase == PH_ORIGINAL) {
			rc = pass_original(w, in, in_len, is_end, out, out_cap,
					   in_used, out_len);
			if (rc != 0)
				return rc;
			continue;
		}
		if (*out_len == out_cap)
			return DSN_OUT_FULL;
		next_item(w);
	}
}

const char *dsn_strerror(int code)
{
	switch (code) {
	case 0: return "ok";
	case DSN_OUT_FULL: return "output buffer full";
	case DSN_NEED_ORIGINAL: return "need more of the original";
	case DSN_DONE: return "done";
	case DSN_E_INVALID: return "invalid DSN description";
	case DSN_E_NULL_SENDER: return "null sender: never bounce a bounce";
	case DSN_E_BOUNDARY: return "the original contains the MIME boundary";
	case DSN_E_STATE: return "DSN already complete or failed";
	}
	return "unknown dsn code";
}
