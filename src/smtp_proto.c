/*
 * smtp_proto - SMTP command and reply grammar.
 *
 * Owns: the reply table (static), nothing else; all state is the caller's.
 * Must not: allocate, log, touch sockets, clocks or files; read past the
 *   length it is given (inputs are wire slices, not C strings).
 * Interface: include/ringmta/smtp_proto.h
 * Limits: local-part 64, domain 255, path 256 (RFC 5321 4.5.3.1), ENVID
 *   100 and ORCPT 500 (RFC 3461), SIZE 20 digits, reply line 512.
 * Errors: parsers return 0 or a negative enum smtp_proto_err. A reply id
 *   out of range is our bug (rm_panic).
 * Standards: RFC 5321 4.1.1, 4.1.2, 4.5.3.1; RFC 6531 3.3 (UTF-8 paths);
 *   RFC 1870 (SIZE); RFC 6152 (8BITMIME); RFC 3030 (BINARYMIME); RFC 3461
 *   (DSN: RET, ENVID, NOTIFY, ORCPT, xtext); RFC 4954 5 (AUTH=);
 *   RFC 3463, RFC 2034 (enhanced status codes); RFC 3629 (UTF-8).
 *
 * Design: every parser is a plain recursive-descent walk over (p, len)
 * with an index; nothing is copied until the whole construct has been
 * validated, and then only into the caller's fixed-size struct.
 */
#include "ringmta/smtp_proto.h"

#include <errno.h>
#include <string.h>

#include "ringmta/util.h"

/* --- the reply table ------------------------------------------------------ */

static const struct smtp_proto_reply reply_table[SMTP_REPLY_COUNT_] = {
#define SMTP_PROTO_REPLY_ROW_(name, code, esc, text) \
	[SMTP_REPLY_##name] = { code, esc, text, #name },
	SMTP_PROTO_REPLIES(SMTP_PROTO_REPLY_ROW_)
#undef SMTP_PROTO_REPLY_ROW_
};

const struct smtp_proto_reply *smtp_proto_reply(enum smtp_reply_id id)
{
	if ((unsigned)id >= SMTP_REPLY_COUNT_)
		rm_panic("smtp_proto: reply id %d out of range", (int)id);
	return &reply_table[id];
}

/* put_str - append a NUL-terminated constant, cut at lim. */
static size_t put_str(char *out, size_t o, size_t lim, const char *s)
{
	while (*s && o < lim)
		out[o++] = *s++;
	return o;
}

/* put_arg - append a peer/host argument made printable (RFC 5321 4.2: text is printable US-ASCII). */
static size_t put_arg(char *out, size_t o, size_t lim, const char *s)
{
	for (; s && *s && o < lim; s++) {
		unsigned char c = (unsigned char)*s;
		out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	return o;
}

int smtp_proto_reply_format(char *out, size_t cap, enum smtp_reply_id id,
			    const char *arg, bool is_more)
{
	const struct smtp_proto_reply *r = smtp_proto_reply(id);
	size_t lim = SMTP_PROTO_REPLY_LINE_MAX - 2, o = 0;
	const char *t;

	if (cap < SMTP_PROTO_REPLY_LINE_MAX)
		lim = cap < 2 ? 0 : cap - 2;
	if (lim < 4 + (r->esc ? strlen(r->esc) + 1 : 0))
		return -ENOSPC;
	out[o++] = (char)('0' + r->code / 100);
	out[o++] = (char)('0' + r->code / 10 % 10);
	out[o++] = (char)('0' + r->code % 10);
	out[o++] = is_more ? '-' : ' ';
	if (r->esc) {
		o = put_str(out, o, lim, r->esc);
		out[o++] = ' ';
	}
	for (t = r->text; *t && o < lim; t++) {
		if (t[0] == '%' && t[1] == 's') {
			o = put_arg(out, o, lim, arg);
			t++;
		} else {
			out[o++] = *t;
		}
	}
	out[o++] = '\r';
	out[o++] = '\n';
	return (int)o;
}

enum smtp_reply_id smtp_proto_err_reply(int err, bool is_rcpt)
{
	switch (err) {
	case SMTP_PROTO_OK:              return SMTP_REPLY_OK;
	case SMTP_PROTO_E_UNKNOWN_VERB:  return SMTP_REPLY_UNKNOWN_CMD;
	case SMTP_PROTO_E_BAD_CHAR:      return SMTP_REPLY_BAD_CHAR;
	case SMTP_PROTO_E_PATH_SYNTAX:
	case SMTP_PROTO_E_BAD_UTF8:
		return is_rcpt ? SMTP_REPLY_RCPT_SYNTAX : SMTP_REPLY_SENDER_SYNTAX;
	case SMTP_PROTO_E_PATH_TOO_LONG: return SMTP_REPLY_PATH_TOO_LONG;
	case SMTP_PROTO_E_NEED_SMTPUTF8: return SMTP_REPLY_NEED_SMTPUTF8;
	case SMTP_PROTO_E_PARAM_UNKNOWN: return SMTP_REPLY_PARAM_UNKNOWN;
	case SMTP_PROTO_E_PARAM_DUP:     return SMTP_REPLY_PARAM_DUP;
	case SMTP_PROTO_E_PARAM_VALUE:   return SMTP_REPLY_PARAM_VALUE;
	default:                         return SMTP_REPLY_SYNTAX;
	}
}

const char *smtp_proto_err_name(int err)
{
	static const char *const names[] = {
		"syntax", "unknown_verb", "bad_char", "path_syntax",
		"path_too_long", "need_smtputf8", "bad_utf8", "param_unknown",
		"param_dup", "param_value",
	};
	int i = err - SMTP_PROTO_E_SYNTAX;

	if (err == 0)
		return "OK";
	if (i < 0 || (size_t)i >= sizeof(names) / sizeof(names[0]))
		return "unknown_error";
	return names[i];
}

/* --- character classes ------------------------------------------------------ */

static bool is_alpha(uint8_t c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
static bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static bool is_hex(uint8_t c) { return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }
static bool is_letdig(uint8_t c) { return is_alpha(c) || is_digit(c); }

/* is_atext - RFC 5322 3.2.3 atext (ASCII part). */
static bool is_atext(uint8_t c)
{
	return is_letdig(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* ieq - case-insensitive compare of a slice against an upper-case constant. */
static bool ieq(const uint8_t *p, size_t len, const char *s)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (s[i] == '\0' || (p[i] >= 'a' && p[i] <= 'z' ? p[i] - 32 : p[i]) != (uint8_t)s[i])
			return false;
	}
	return s[i] == '\0';
}

/* utf8_seq - length of the well-formed UTF-8 sequence at p (RFC 3629 4), 0 if none. */
static size_t utf8_seq(const uint8_t *p, size_t len)
{
	uint8_t c = p[0];
	size_t n, i;
	uint8_t lo = 0x80, hi = 0xbf;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (len < n)
		return 0;
	if (c == 0xe0)
		lo = 0xa0;          /* overlong */
	else if (c == 0xed)
		hi = 0x9f;          /* surrogates */
	else if (c == 0xf0)
		lo = 0x90;          /* overlong */
	else if (c == 0xf4)
		hi = 0x8f;          /* > U+10FFFF */
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < n; i++) {
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	}
	return n;
}

bool smtp_proto_utf8_valid(const uint8_t *p, size_t len)
{
	size_t i = 0, n;

	while (i < len) {
		n = utf8_seq(p + i, len - i);
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

bool smtp_proto_xtext_valid(const uint8_t *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (p[i] == '+') {
			/* RFC 3461 4: "+" HEXCHAR HEXCHAR, upper case only. */
			if (len - i < 3)
				return false;
			for (size_t k = 1; k <= 2; k++) {
				uint8_t h = p[i + k];
				if (!is_digit(h) && !(h >= 'A' && h <= 'F'))
					return false;
			}
			i += 2;
		} else if (p[i] < 33 || p[i] > 126 || p[i] == '=') {
			return false;
		}
	}
	return true;
}

/* --- command lines ----------------------------------------------------------- */

static const char *const verb_names[SMTP_PROTO_VERB_COUNT_] = {
	[SMTP_PROTO_VERB_UNKNOWN] = "UNKNOWN",
	[SMTP_PROTO_VERB_HELO] = "HELO",
	[SMTP_PROTO_VERB_EHLO] = "EHLO",
	[SMTP_PROTO_VERB_MAIL] = "MAIL",
	[SMTP_PROTO_VERB_RCPT] = "RCPT",
	[SMTP_PROTO_VERB_DATA] = "DATA",
	[SMTP_PROTO_VERB_BDAT] = "BDAT",
	[SMTP_PROTO_VERB_RSET] = "RSET",
	[SMTP_PROTO_VERB_NOOP] = "NOOP",
	[SMTP_PROTO_VERB_QUIT] = "QUIT",
	[SMTP_PROTO_VERB_VRFY] = "VRFY",
	[SMTP_PROTO_VERB_EXPN] = "EXPN",
	[SMTP_PROTO_VERB_HELP] = "HELP",
	[SMTP_PROTO_VERB_STARTTLS] = "STARTTLS",
	[SMTP_PROTO_VERB_AUTH] = "AUTH",
	[SMTP_PROTO_VERB_TURN] = "TURN",
	[SMTP_PROTO_VERB_ETRN] = "ETRN",
};

const char *smtp_proto_verb_name(enum smtp_proto_verb verb)
{
	if ((unsigned)verb >= SMTP_PROTO_VERB_COUNT_)
		return "UNKNOWN";
	return verb_names[verb];
}

/* verb_no_arg - verbs whose grammar is "VERB" CRLF (RFC 5321 4.1.1, RFC 3207 4). */
static bool verb_no_arg(enum smtp_proto_verb v)
{
	return v == SMTP_PROTO_VERB_DATA || v == SMTP_PROTO_VERB_RSET ||
	       v == SMTP_PROTO_VERB_QUIT || v == SMTP_PROTO_VERB_STARTTLS;
}

/* cmd_prefix - after "MAIL"/"RCPT": match SP "FROM:"/"TO:", return bytes or 0. */
static size_t cmd_prefix(const uint8_t *p, size_t len, const char *kw, unsigned flags)
{
	size_t n = strlen(kw), i;

	if (len < n + 1 || p[0] != ' ' || !ieq(p + 1, n, kw))
		return 0;
	i = n + 1;
	if (flags & SMTP_PROTO_LENIENT_SPACE_AFTER_COLON) {
		while (i < len && p[i] == ' ')
			i++;
	}
	return i;
}

int smtp_proto_cmd_parse(const uint8_t *line, size_t len, unsigned flags,
			 struct smtp_proto_cmd *cmd)
{
	size_t vlen = 0, i, skip;
	int v;
	bool has_8bit = false;

	cmd->verb = SMTP_PROTO_VERB_UNKNOWN;
	cmd->arg = line + len;
	cmd->arg_len = 0;
	while (vlen < len && line[vlen] != ' ')
		vlen++;
	for (v = 1; v < SMTP_PROTO_VERB_COUNT_; v++) {
		if (ieq(line, vlen, verb_names[v])) {
			cmd->verb = (enum smtp_proto_verb)v;
			break;
		}
	}
	for (i = 0; i < len; i++) {
		/* RFC 5321 2.3.8: CR and LF only as CRLF; NUL never. */
		if (line[i] == 0 || line[i] == '\r' || line[i] == '\n')
			return SMTP_PROTO_E_BAD_CHAR;
		if (line[i] >= 0x80)
			has_8bit = true;
	}
	if (cmd->verb == SMTP_PROTO_VERB_UNKNOWN)
		return has_8bit ? SMTP_PROTO_E_BAD_CHAR : SMTP_PROTO_E_UNKNOWN_VERB;
	/* RFC 6531 3.3: 8-bit octets only inside MAIL/RCPT arguments. */
	if (has_8bit && cmd->verb != SMTP_PROTO_VERB_MAIL && cmd->verb != SMTP_PROTO_VERB_RCPT)
		return SMTP_PROTO_E_BAD_CHAR;
	if (cmd->verb == SMTP_PROTO_VERB_MAIL || cmd->verb == SMTP_PROTO_VERB_RCPT) {
		skip = cmd_prefix(line + vlen, len - vlen,
				  cmd->verb == SMTP_PROTO_VERB_MAIL ? "FROM:" : "TO:", flags);
		if (skip == 0)
			return SMTP_PROTO_E_SYNTAX;
		cmd->arg = line + vlen + skip;
		cmd->arg_len = len - vlen - skip;
		return 0;
	}
	if (vlen == len)
		return 0;
	if (verb_no_arg(cmd->verb))
		return SMTP_PROTO_E_SYNTAX;
	cmd->arg = line + vlen + 1;
	cmd->arg_len = len - vlen - 1;
	return 0;
}

/* --- paths ----------------------------------------------------------------- */

/*
 * u8_at - length of the UTF-8 sequence at p[i] when it is non-ASCII and
 * well-formed, 0 otherwise (ASCII or malformed). *bad is set on malformed.
 */
static size_t u8_at(const uint8_t *p, size_t len, size_t i, bool *bad)
{
	size_t n;

	if (i >= len || p[i] < 0x80)
		return 0;
	n = utf8_seq(p + i, len - i);
	if (n == 0)
		*bad = true;
	return n;
}

/* parse_subdomain - RFC 5321 sub-domain (or RFC 6531 U-label), advances *i. */
static bool parse_subdomain(const uint8_t *p, size_t len, size_t *i, bool *bad)
{
	size_t j = *i, n;
	bool last_hyphen = false, any = false;

	while (j < len) {
		if ((n = u8_at(p, len, j, bad)) > 0) {
			j += n;
			last_hyphen = false;
		} else if (is_letdig(p[j])) {
			j++;
			last_hyphen = false;
		} else if (p[j] == '-' && any) {
			j++;
			last_hyphen = true;
		} else {
			break;
		}
		any = true;
	}
	if (!any || last_hyphen)
		return false;
	*i = j;
	return true;
}

/* parse_domain - Domain = sub-domain *("." sub-domain); advances *i. */
static bool parse_domain(const uint8_t *p, size_t len, size_t *i, bool *bad)
{
	if (!parse_subdomain(p, len, i, bad))
		return false;
	while (*i < len && p[*i] == '.') {
		(*i)++;
		if (!parse_subdomain(p, len, i, bad))
			return false;
	}
	return true;
}

/* ipv4_valid - Snum 3("." Snum), Snum = 1*3DIGIT 0..255, the whole of p[0..n). */
static bool ipv4_valid(const uint8_t *p, size_t n)
{
	size_t i = 0;
	int part;

	for (part = 0; part < 4; part++) {
		unsigned v = 0, digits = 0;

		if (part > 0) {
			if (i >= n || p[i] != '.')
				return false;
			i++;
		}
		while (i < n && is_digit(p[i]) && digits < 3) {
			v = v * 10 + (unsigned)(p[i] - '0');
			digits++;
			i++;
		}
		if (digits == 0 || v > 255)
			return false;
	}
	return i == n;
}

/* ipv6_valid - RFC 5321 4.1.3 IPv6-addr (full, comp, v4-full, v4-comp), the whole of p[0..n). */
static bool ipv6_valid(const uint8_t *p, size_t n)
{
	size_t i = 0, j;
	unsigned groups = 0;
	bool dbl = false;

	if (n >= 2 && p[0] == ':' && p[1] == ':') {
		dbl = true;
		i = 2;
	}
	while (i < n) {
		for (j = i; j < n && is_hex(p[j]) && j - i < 5; j++)
			;
		if (j < n && p[j] == '.') {
			/* the IPv4 tail: at most 6 groups before it */
			if (!ipv4_valid(p + i, n - i))
				return false;
			groups += 2;
			i = n;
			break;
		}
		if (j == i || j - i > 4)
			return false;
		groups++;
		if (j == n) {
			i = n;
			break;
		}
		if (p[j] != ':' || j + 1 >= n)
			return false;
		j++;
		if (p[j] == ':') {
			if (dbl)
				return false;
			dbl = true;
			j++;
		}
		i = j;
	}
	/* "::" stands for at least two zero groups: at most 6 others (RFC 5321 4.1.3). */
	return dbl ? groups <= 6 : groups == 8;
}

/* parse_literal - address-literal at p[*i] == '['; IPv4 or IPv6 only. */
static int parse_literal(const uint8_t *p, size_t len, size_t *i)
{
	size_t a = *i + 1, b = a;

	while (b < len && p[b] != ']')
		b++;
	if (b >= len)
		return -1;
	*i = b + 1;
	if (b - a > 5 && ieq(p + a, 5, "IPV6:"))
		return ipv6_valid(p + a + 5, b - a - 5) ? SMTP_PROTO_DOMAIN_IPV6 : -1;
	/* General-address-literal: no tag but IPv6 is registered, so refuse. */
	return ipv4_valid(p + a, b - a) ? SMTP_PROTO_DOMAIN_IPV4 : -1;
}

/* parse_local - Local-part = Dot-string / Quoted-string; advances *i. */
static bool parse_local(const uint8_t *p, size_t len, size_t *i, bool *quoted, bool *bad)
{
	size_t j = *i, n;

	if (j < len && p[j] == '"') {
		*quoted = true;
		for (j++; j < len && p[j] != '"'; j++) {
			if ((n = u8_at(p, len, j, bad)) > 0) {
				j += n - 1;
			} else if (p[j] == '\\') {
				/* quoted-pairSMTP = %d92 %d32-126 */
				if (j + 1 >= len || p[j + 1] < 32 || p[j + 1] > 126)
					return false;
				j++;
			} else if (p[j] < 32 || p[j] > 126) {
				return false;
			}
		}
		if (j >= len)
			return false;
		*i = j + 1;
		return true;
	}
	for (;;) {
		size_t start = j;

		while (j < len) {
			if ((n = u8_at(p, len, j, bad)) > 0)
				j += n;
			else if (p[j] < 0x80 && is_atext(p[j]))
				j++;
			else
				break;
		}
		if (j == start)
			return false;
		if (j < len && p[j] == '.') {
			j++;
			continue;
		}
		break;
	}
	*i = j;
	return true;
}

/* parse_adl - skip a source route A-d-l ":" (RFC 5321 4.1.2, accepted and ignored per C). */
static bool parse_adl(const uint8_t *p, size_t len, size_t *i, bool *bad)
{
	for (;;) {
		if (*i >= len || p[*i] != '@')
			return false;
		(*i)++;
		if (!parse_domain(p, len, i, bad))
			return false;
		if (*i < len && p[*i] == ',') {
			(*i)++;
			continue;
		}
		if (*i < len && p[*i] == ':') {
			(*i)++;
			return true;
		}
		return false;
	}
}

/* path_syntax - walk the path; sets the out fields except addr and len. */
static int path_syntax(const uint8_t *p, size_t len, unsigned flags,
		       struct smtp_proto_path *out, size_t *start, size_t *end)
{
	size_t i = 1, at;
	bool bad = false, quoted = false;
	int kind = SMTP_PROTO_DOMAIN_NAME;

	if (len < 2 || p[0] != '<')
		return SMTP_PROTO_E_PATH_SYNTAX;
	if (p[1] == '>') {
		if (!(flags & SMTP_PROTO_PATH_ALLOW_NULL))
			return SMTP_PROTO_E_PATH_SYNTAX;
		out->is_null = true;
		*start = *end = 1;
		return 0;
	}
	if (p[1] == '@' && !parse_adl(p, len, &i, &bad))
		return bad ? SMTP_PROTO_E_BAD_UTF8 : SMTP_PROTO_E_PATH_SYNTAX;
	*start = i;
	/* RFC 5321 4.1.1.3: "<Postmaster>" without a domain, RCPT only. */
	if ((flags & SMTP_PROTO_PATH_RCPT) && i == 1 && len - i >= 11 &&
	    ieq(p + i, 10, "POSTMASTER") && p[i + 10] == '>') {
		out->is_postmaster = true;
		out->local_len = 10;
		*end = i + 10;
		return 0;
	}
	if (!parse_local(p, len, &i, &quoted, &bad))
		return bad ? SMTP_PROTO_E_BAD_UTF8 : SMTP_PROTO_E_PATH_SYNTAX;
	out->is_quoted = quoted;
	at = i;
	if (i >= len || p[i] != '@')
		return bad ? SMTP_PROTO_E_BAD_UTF8 : SMTP_PROTO_E_PATH_SYNTAX;
	i++;
	if (i < len && p[i] == '[')
		kind = parse_literal(p, len, &i);
	else if (!parse_domain(p, len, &i, &bad))
		kind = -1;
	if (bad)
		return SMTP_PROTO_E_BAD_UTF8;
	if (kind < 0 || i >= len || p[i] != '>')
		return SMTP_PROTO_E_PATH_SYNTAX;
	out->domain_kind = (uint8_t)kind;
	/* RFC 5321 4.5.3.1.1-3 */
	if (at - *start > SMTP_PROTO_LOCAL_MAX || i - at - 1 > SMTP_PROTO_DOMAIN_MAX ||
	    i + 1 > SMTP_PROTO_PATH_MAX)
		return SMTP_PROTO_E_PATH_TOO_LONG;
	out->local_len = (uint16_t)(at - *start);
	*end = i;
	return 0;
}

int smtp_proto_path_parse(const uint8_t *p, size_t len, unsigned flags,
			  struct smtp_proto_path *out, size_t *used)
{
	size_t start = 0, end = 0, i;
	int err;

	memset(out, 0, sizeof(*out));
	err = path_syntax(p, len, flags, out, &start, &end);
	if (err == 0 && end + 1 > SMTP_PROTO_PATH_MAX)
		err = SMTP_PROTO_E_PATH_TOO_LONG;
	if (err == 0) {
		for (i = start; i < end; i++) {
			if (p[i] >= 0x80)
				out->is_utf8 = true;
		}
		/* RFC 6531 3.3: non-ASCII only when SMTPUTF8 was given. */
		if (out->is_utf8 && !(flags & SMTP_PROTO_PATH_UTF8))
			err = SMTP_PROTO_E_NEED_SMTPUTF8;
	}
	if (err != 0) {
		memset(out, 0, sizeof(*out));
		return err;
	}
	memcpy(out->addr, p + start, end - start);
	out->addr[end - start] = '\0';
	out->len = (uint16_t)(end - start);
	if (used)
		*used = end + 1;
	return 0;
}

/* --- ESMTP parameters ------------------------------------------------------ */

/* struct param - one esmtp-param as slices of the input. */
struct param {
	const uint8_t *key;
	size_t key_len;
	const uint8_t *val;   /* NULL when there is no "=" */
	size_t val_len;
};

/*
 * next_param - parse SP esmtp-keyword ["=" esmtp-value] at p[*i] (RFC 5321
 * 4.1.2). Returns 0, SMTP_PROTO_E_SYNTAX or SMTP_PROTO_E_BAD_CHAR.
 */
static int next_param(const uint8_t *p, size_t len, size_t *i, struct param *pm)
{
	size_t j = *i;

	if (p[j] != ' ')
		return SMTP_PROTO_E_SYNTAX;
	j++;
	pm->key = p + j;
	if (j >= len || !is_letdig(p[j]))
		return j < len && p[j] >= 0x80 ? SMTP_PROTO_E_BAD_CHAR : SMTP_PROTO_E_SYNTAX;
	while (j < len && (is_letdig(p[j]) || p[j] == '-'))
		j++;
	pm->key_len = (size_t)(p + j - pm->key);
	pm->val = NULL;
	pm->val_len = 0;
	if (j < len && p[j] == '=') {
		j++;
		pm->val = p + j;
		/* esmtp-value = 1*(%d33-60 / %d62-126) */
		while (j < len && p[j] >= 33 && p[j] <= 126 && p[j] != '=')
			j++;
		pm->val_len = (size_t)(p + j - pm->val);
		if (pm->val_len == 0 && (j == len || p[j] < 0x80))
			return SMTP_PROTO_E_SYNTAX;
	}
	if (j < len && p[j] != ' ')
		return p[j] >= 0x80 ? SMTP_PROTO_E_BAD_CHAR : SMTP_PROTO_E_SYNTAX;
	*i = j;
	return 0;
}

/* parse_size - SIZE=1*20DIGIT without overflow (RFC 1870 3). */
static bool parse_size(const uint8_t *v, size_t n, uint64_t *out)
{
	uint64_t x = 0;
	size_t i;

	if (n == 0 || n > 20)
		return false;
	for (i = 0; i < n; i++) {
		if (!is_digit(v[i]))
			return false;
		if (x > (UINT64_MAX - (uint64_t)(v[i] - '0')) / 10)
			return false;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	*out = x;
	return true;
}

/* mail_param - apply one MAIL parameter; *seen tracks duplicates by bit. */
static int mail_param(const struct param *pm, struct smtp_proto_mail_params *out, unsigned *seen)
{
	static const char *const keys[] = { "SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH" };
	const uint8_t *v = pm->val;
	size_t n = pm->val_len, k;

	for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		if (ieq(pm->key, pm->key_len, keys[k]))
			break;
	}
	if (k == sizeof(keys) / sizeof(keys[0]))
		return SMTP_PROTO_E_PARAM_UNKNOWN;
	if (*seen & (1u << k))
		return SMTP_PROTO_E_PARAM_DUP;
	*seen |= 1u << k;
	if ((k == 2) != (v == NULL))   /* SMTPUTF8 has no value, the others need one */
		return SMTP_PROTO_E_PARAM_VALUE;
	switch (k) {
	case 0:
		out->has_size = true;
		return parse_size(v, n, &out->size) ? 0 : SMTP_PROTO_E_PARAM_VALUE;
	case 1:
		if (ieq(v, n, "7BIT"))
			out->body = SMTP_PROTO_BODY_7BIT;
		else if (ieq(v, n, "8BITMIME"))
			out->body = SMTP_PROTO_BODY_8BITMIME;
		else if (ieq(v, n, "BINARYMIME"))
			out->body = SMTP_PROTO_BODY_BINARYMIME;
		else
			return SMTP_PROTO_E_PARAM_VALUE;
		return 0;
	case 2:
		out->smtputf8 = true;
		return 0;
	case 3:
		if (ieq(v, n, "FULL"))
			out->ret = SMTP_PROTO_RET_FULL;
		else if (ieq(v, n, "HDRS"))
			out->ret = SMTP_PROTO_RET_HDRS;
		else
			return SMTP_PROTO_E_PARAM_VALUE;
		return 0;
	case 4:
		if (n > SMTP_PROTO_ENVID_MAX || !smtp_proto_xtext_valid(v, n))
			return SMTP_PROTO_E_PARAM_VALUE;
		memcpy(out->envid, v, n);
		out->envid[n] = '\0';
		return 0;
	default:
		/* RFC 4954 5: AUTH=xtext or "<>"; we do not use it. */
		if (ieq(v, n, "<>") || smtp_proto_xtext_valid(v, n)) {
			out->has_auth = true;
			return 0;
		}
		return SMTP_PROTO_E_PARAM_VALUE;
	}
}

int smtp_proto_mail_params_parse(const uint8_t *p, size_t len,
				 struct smtp_proto_mail_params *out)
{
	struct param pm;
	unsigned seen = 0;
	size_t i = 0;
	int err;

	memset(out, 0, sizeof(*out));
	while (i < len) {
		err = next_param(p, len, &i, &pm);
		if (err == 0)
			err = mail_param(&pm, out, &seen);
		if (err != 0) {
			memset(out, 0, sizeof(*out));
			return err;
		}
	}
	return 0;
}

/* parse_notify - NOTIFY="NEVER" / 1#("SUCCESS" / "FAILURE" / "DELAY") (RFC 3461 4.1). */
static int parse_notify(const uint8_t *v, size_t n, unsigned *out)
{
	static const char *const words[] = { "NEVER", "SUCCESS", "FAILURE", "DELAY" };
	unsigned bits = 0, bit;
	size_t i = 0, j, k;

	while (i <= n) {
		for (j = i; j < n && v[j] != ','; j++)
			;
		for (k = 0; k < 4; k++) {
			if (ieq(v + i, j - i, words[k]))
				break;
		}
		if (k == 4)
			return SMTP_PROTO_E_PARAM_VALUE;
		bit = 1u << k;
		if (bits & bit)
			return SMTP_PROTO_E_PARAM_VALUE;
		bits |= bit;
		i = j + 1;
	}
	if ((bits & SMTP_PROTO_NOTIFY_NEVER) && bits != SMTP_PROTO_NOTIFY_NEVER)
		return SMTP_PROTO_E_PARAM_VALUE;
	*out = bits;
	return 0;
}

/* parse_orcpt - ORCPT=addr-type ";" xtext (RFC 3461 4.2), addr-type an atom. */
static int parse_orcpt(const uint8_t *v, size_t n, struct smtp_proto_rcpt_params *out)
{
	size_t t = 0;

	if (n > SMTP_PROTO_ORCPT_MAX)
		return SMTP_PROTO_E_PARAM_VALUE;
	while (t < n && v[t] != ';') {
		if (!is_atext(v[t]))
			return SMTP_PROTO_E_PARAM_VALUE;
		t++;
	}
	if (t == 0 || t == n || t + 1 == n || !smtp_proto_xtext_valid(v + t + 1, n - t - 1))
		return SMTP_PROTO_E_PARAM_VALUE;
	memcpy(out->orcpt, v, n);
	out->orcpt[n] = '\0';
	out->orcpt_type_len = (uint16_t)t;
	return 0;
}

int smtp_proto_rcpt_params_parse(const uint8_t *p, size_t len,
				 struct smtp_proto_rcpt_params *out)
{
	struct param pm;
	unsigned seen = 0;
	size_t i = 0;
	int err;

	memset(out, 0, sizeof(*out));
	while (i < len) {
		err = next_param(p, len, &i, &pm);
		if (err == 0) {
			unsigned bit = ieq(pm.key, pm.key_len, "NOTIFY") ? 1u :
				       ieq(pm.key, pm.key_len, "ORCPT") ? 2u : 0u;
			if (bit == 0)
				err = SMTP_PROTO_E_PARAM_UNKNOWN;
			else if (seen & bit)
				err = SMTP_PROTO_E_PARAM_DUP;
			else if (pm.val == NULL)
				err = SMTP_PROTO_E_PARAM_VALUE;
			else if (bit == 1u)
				err = parse_notify(pm.val, pm.val_len, &out->notify);
			else
				err = parse_orcpt(pm.val, pm.val_len, out);
			seen |= bit;
		}
		if (err != 0) {
			memset(out, 0, sizeof(*out));
			return err;
		}
	}
	return 0;
}
