/*
 * smtp_proto.h - SMTP command and reply grammar: verbs, paths (RFC 5321
 * 4.1.2, RFC 6531), ESMTP parameters (RFC 1870, 6152, 3030, 3461, 6531),
 * and the one table of replies with enhanced status codes (RFC 3463, 2034).
 *
 * Pure: libc only, no state, no allocation. Every parser takes a wire slice
 * (pointer, length; never NUL-terminated, never read past length) and fills
 * a caller-owned struct; every string it produces is copied into that
 * struct's fixed, bounded storage and NUL-terminated there, so nothing in a
 * result points back into the input.
 *
 * Errors: parsers return 0 or a negative enum smtp_proto_err; map an error
 * to a reply with smtp_proto_err_reply().
 */
#ifndef RINGMTA_SMTP_PROTO_H
#define RINGMTA_SMTP_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 4.5.3.1.1: a local-part is at most 64 octets. */
#define SMTP_PROTO_LOCAL_MAX 64
/* RFC 5321 4.5.3.1.2: a domain is at most 255 octets. */
#define SMTP_PROTO_DOMAIN_MAX 255
/* RFC 5321 4.5.3.1.3: a path is at most 256 octets including "<" and ">". */
#define SMTP_PROTO_PATH_MAX 256
/* RFC 3461 4.4: ENVID is at most 100 characters (as xtext on the wire). */
#define SMTP_PROTO_ENVID_MAX 100
/* RFC 3461 4.2: the whole ORCPT parameter value is at most 500 characters. */
#define SMTP_PROTO_ORCPT_MAX 500
/* RFC 5321 4.5.3.1.5: a reply line is at most 512 octets including CRLF. */
#define SMTP_PROTO_REPLY_LINE_MAX 512

/*
 * enum smtp_proto_err - parser results, a range of their own (-1000...) so
 * they never collide with -errno.
 */
enum smtp_proto_err {
	SMTP_PROTO_OK = 0,
	SMTP_PROTO_E_SYNTAX = -1000,   /* line does not match the command grammar */
	SMTP_PROTO_E_UNKNOWN_VERB,     /* verb not recognised */
	SMTP_PROTO_E_BAD_CHAR,         /* NUL, CR, LF or (without SMTPUTF8) 8-bit byte */
	SMTP_PROTO_E_PATH_SYNTAX,      /* path does not match RFC 5321 4.1.2 */
	SMTP_PROTO_E_PATH_TOO_LONG,    /* local-part > 64, domain > 255, path > 256 */
	SMTP_PROTO_E_NEED_SMTPUTF8,    /* non-ASCII address without SMTPUTF8 (RFC 6531 3.5) */
	SMTP_PROTO_E_BAD_UTF8,         /* malformed UTF-8 in an address */
	SMTP_PROTO_E_PARAM_UNKNOWN,    /* ESMTP keyword not supported here (555) */
	SMTP_PROTO_E_PARAM_DUP,        /* ESMTP keyword given twice */
	SMTP_PROTO_E_PARAM_VALUE,      /* ESMTP value malformed or out of range */
};

/* enum smtp_proto_verb - the commands ringmta recognises. */
enum smtp_proto_verb {
	SMTP_PROTO_VERB_UNKNOWN = 0,
	SMTP_PROTO_VERB_HELO,
	SMTP_PROTO_VERB_EHLO,
	SMTP_PROTO_VERB_MAIL,     /* "MAIL FROM:", arg starts after the colon */
	SMTP_PROTO_VERB_RCPT,     /* "RCPT TO:", arg starts after the colon */
	SMTP_PROTO_VERB_DATA,
	SMTP_PROTO_VERB_BDAT,
	SMTP_PROTO_VERB_RSET,
	SMTP_PROTO_VERB_NOOP,
	SMTP_PROTO_VERB_QUIT,
	SMTP_PROTO_VERB_VRFY,
	SMTP_PROTO_VERB_EXPN,
	SMTP_PROTO_VERB_HELP,
	SMTP_PROTO_VERB_STARTTLS,
	SMTP_PROTO_VERB_AUTH,
	SMTP_PROTO_VERB_TURN,     /* recognised only to answer 502 */
	SMTP_PROTO_VERB_ETRN,     /* recognised only to answer 502 */
	SMTP_PROTO_VERB_COUNT_
};

/* Flags for smtp_proto_cmd_parse (leniencies, all off by default). */
#define SMTP_PROTO_LENIENT_SPACE_AFTER_COLON 0x1u /* "MAIL FROM: <a@b>" */

/*
 * struct smtp_proto_cmd - one parsed command line. arg/arg_len borrow the
 * line passed to smtp_proto_cmd_parse (valid as long as that line is).
 */
struct smtp_proto_cmd {
	enum smtp_proto_verb verb;
	const uint8_t *arg;   /* after the verb's SP (or after "FROM:"/"TO:") */
	size_t arg_len;       /* 0 when there is no argument */
};

/*
 * smtp_proto_cmd_parse - split a command line into verb and argument.
 * line/len: the line without its CRLF; may hold any bytes. flags: the
 * SMTP_PROTO_LENIENT_* bits. The verb is case-insensitive. For MAIL/RCPT,
 * "FROM:"/"TO:" are part of the verb and arg begins right after the colon.
 * Returns 0, SMTP_PROTO_E_BAD_CHAR (NUL/CR/LF anywhere, or any 8-bit byte
 * outside a MAIL/RCPT argument), SMTP_PROTO_E_UNKNOWN_VERB or
 * SMTP_PROTO_E_SYNTAX (e.g. missing SP, "MAIL TO:"). cmd->verb is set even
 * on SYNTAX/BAD_CHAR when the verb itself was recognised.
 */
int smtp_proto_cmd_parse(const uint8_t *line, size_t len, unsigned flags,
			 struct smtp_proto_cmd *cmd);

/* smtp_proto_verb_name - upper-case name of a verb ("UNKNOWN" if none). */
const char *smtp_proto_verb_name(enum smtp_proto_verb verb);

/* Flags for smtp_proto_path_parse. */
#define SMTP_PROTO_PATH_UTF8       0x1u /* SMTPUTF8 given: allow UTF-8 (RFC 6531 3.3) */
#define SMTP_PROTO_PATH_RCPT       0x2u /* forward-path: "<Postmaster>" allowed, "<>" not */
#define SMTP_PROTO_PATH_ALLOW_NULL 0x4u /* reverse-path: "<>" allowed */

/* enum smtp_proto_domain_kind - what follows the "@". */
enum smtp_proto_domain_kind {
	SMTP_PROTO_DOMAIN_NONE = 0,  /* "<>" or "<Postmaster>" */
	SMTP_PROTO_DOMAIN_NAME,      /* a dot-separated domain name */
	SMTP_PROTO_DOMAIN_IPV4,      /* [a.b.c.d] */
	SMTP_PROTO_DOMAIN_IPV6,      /* [IPv6:...] */
};

/*
 * struct smtp_proto_path - a parsed reverse- or forward-path. addr holds the
 * mailbox without "<>" and without any source route, exactly as sent
 * (quoted local parts keep their quotes), NUL-terminated; "" for "<>".
 */
struct smtp_proto_path {
	char addr[SMTP_PROTO_PATH_MAX];  /* mailbox, at most 254 octets + NUL */
	uint16_t len;                    /* strlen(addr) */
	uint16_t local_len;              /* octets before the '@' */
	uint8_t domain_kind;             /* enum smtp_proto_domain_kind */
	bool is_null;                    /* "<>" */
	bool is_postmaster;              /* bare "<Postmaster>" (RFC 5321 4.5.1) */
	bool is_utf8;                    /* contains non-ASCII */
	bool is_quoted;                  /* local part is a Quoted-string */
};

/*
 * smtp_proto_path_parse - parse a Path at the start of p (RFC 5321 4.1.2:
 * "<" [A-d-l ":"] Mailbox ">"; the source route is accepted and dropped,
 * RFC 5321 C). flags: SMTP_PROTO_PATH_*. *used (may be NULL) gets the
 * octets consumed including ">". Returns 0, SMTP_PROTO_E_PATH_SYNTAX,
 * SMTP_PROTO_E_PATH_TOO_LONG, SMTP_PROTO_E_NEED_SMTPUTF8 or
 * SMTP_PROTO_E_BAD_UTF8. On error *out is zeroed.
 */
int smtp_proto_path_parse(const uint8_t *p, size_t len, unsigned flags,
			  struct smtp_proto_path *out, size_t *used);

/* BODY= values (RFC 6152, RFC 3030). */
enum smtp_proto_body {
	SMTP_PROTO_BODY_NONE = 0,   /* not given: 7BIT by default */
	SMTP_PROTO_BODY_7BIT,
	SMTP_PROTO_BODY_8BITMIME,
	SMTP_PROTO_BODY_BINARYMIME,
};

/* RET= values (RFC 3461 4.3). */
enum smtp_proto_ret {
	SMTP_PROTO_RET_NONE = 0,
	SMTP_PROTO_RET_FULL,
	SMTP_PROTO_RET_HDRS,
};

/*
 * struct smtp_proto_mail_params - the MAIL parameters. envid holds the
 * xtext exactly as sent (still encoded), NUL-terminated.
 */
struct smtp_proto_mail_params {
	uint64_t size;                 /* SIZE=, valid when has_size */
	bool has_size;
	uint8_t body;                  /* enum smtp_proto_body */
	uint8_t ret;                   /* enum smtp_proto_ret */
	bool smtputf8;                 /* SMTPUTF8 given */
	bool has_auth;                 /* AUTH=<...> given; accepted, ignored */
	char envid[SMTP_PROTO_ENVID_MAX + 1];  /* "" when absent */
};

/* NOTIFY= bits (RFC 3461 4.1); NEVER excludes the others. */
#define SMTP_PROTO_NOTIFY_NEVER   0x1u
#define SMTP_PROTO_NOTIFY_SUCCESS 0x2u
#define SMTP_PROTO_NOTIFY_FAILURE 0x4u
#define SMTP_PROTO_NOTIFY_DELAY   0x8u

/*
 * struct smtp_proto_rcpt_params - the RCPT parameters. orcpt holds
 * "addr-type;xtext" exactly as sent, NUL-terminated, "" when absent;
 * orcpt_type_len is the length of the addr-type before the ';'.
 */
struct smtp_proto_rcpt_params {
	unsigned notify;               /* SMTP_PROTO_NOTIFY_* bits, 0 if absent */
	uint16_t orcpt_type_len;
	char orcpt[SMTP_PROTO_ORCPT_MAX + 1];
};

/*
 * smtp_proto_mail_params_parse - parse the text after the reverse-path:
 * *(SP esmtp-param) (RFC 5321 4.1.2). Keywords are case-insensitive;
 * each may appear once. Known: SIZE=digits (at most 20), BODY=7BIT|
 * 8BITMIME|BINARYMIME, SMTPUTF8 (no value), RET=FULL|HDRS, ENVID=xtext,
 * AUTH=<mailbox or "<>"> (accepted, value checked as xtext, ignored).
 * Returns 0, SMTP_PROTO_E_PARAM_UNKNOWN, SMTP_PROTO_E_PARAM_DUP,
 * SMTP_PROTO_E_PARAM_VALUE, SMTP_PROTO_E_SYNTAX or SMTP_PROTO_E_BAD_CHAR.
 */
int smtp_proto_mail_params_parse(const uint8_t *p, size_t len,
				 struct smtp_proto_mail_params *out);

/*
 * smtp_proto_rcpt_params_parse - parse the text after the forward-path.
 * Known: NOTIFY=NEVER or a comma list of SUCCESS,FAILURE,DELAY (each once),
 * ORCPT=addr-type;xtext (addr-type an atom, xtext valid, <= 500 chars).
 * Returns as smtp_proto_mail_params_parse.
 */
int smtp_proto_rcpt_params_parse(const uint8_t *p, size_t len,
				 struct smtp_proto_rcpt_params *out);

/* smtp_proto_xtext_valid - true if p[0..len) is valid xtext (RFC 3461 4). */
bool smtp_proto_xtext_valid(const uint8_t *p, size_t len);

/* smtp_proto_utf8_valid - true if p[0..len) is well-formed UTF-8 (RFC 3629). */
bool smtp_proto_utf8_valid(const uint8_t *p, size_t len);

/*
 * The reply table. X(name, code, enhanced status or NULL, text). text may
 * hold one "%s", replaced by the formatter's argument. RFC 2034 3: the
 * enhanced code is left out only of the greeting, the HELO/EHLO answers
 * and the 354 intermediate reply; every 2xx/4xx/5xx else carries one.
 */
#define SMTP_PROTO_REPLIES(X) \
	X(GREETING,          220, NULL,     "%s ESMTP ringmta") \
	X(HELO_OK,           250, NULL,     "%s") \
	X(OK,                250, "2.0.0",  "Ok") \
	X(MAIL_OK,           250, "2.1.0",  "Ok") \
	X(RCPT_OK,           250, "2.1.5",  "Ok") \
	X(QUEUED,            250, "2.0.0",  "Ok: queued as %s") \
	X(BDAT_OK,           250, "2.0.0",  "Ok: %s octets received") \
	X(DATA_GO,           354, NULL,     "End data with <CR><LF>.<CR><LF>") \
	X(VRFY,              252, "2.5.0",  "Cannot VRFY user, but will accept message and attempt delivery") \
	X(HELP,              214, "2.0.0",  "See https://www.rfc-editor.org/rfc/rfc5321") \
	X(BYE,               221, "2.0.0",  "Bye") \
	X(TLS_GO,            220, "2.0.0",  "Ready to start TLS") \
	X(TOO_MANY_CONN,     421, "4.7.0",  "Too many connections, try again later") \
	X(SHUTDOWN,          421, "4.3.2",  "Service shutting down, closing connection") \
	X(TIMEOUT,           421, "4.4.2",  "Timeout exceeded, closing connection") \
	X(TOO_MANY_ERRORS,   421, "4.7.0",  "Too many errors, closing connection") \
	X(LOCAL_ERROR,       451, "4.3.0",  "Local error in processing") \
	X(NO_STORAGE,        452, "4.3.1",  "Insufficient system storage") \
	X(TOO_MANY_RCPT,     452, "4.5.3",  "Too many recipients") \
	X(TLS_UNAVAILABLE,   454, "4.7.0",  "TLS not available due to temporary reason") \
	X(UNKNOWN_CMD,       500, "5.5.1",  "Command unrecognized") \
	X(LINE_TOO_LONG,     500, "5.5.2",  "Line too long") \
	X(BAD_CHAR,          500, "5.5.2",  "Invalid character in command") \
	X(BARE_LINE_END,     500, "5.5.2",  "Bare <CR> or <LF> in command") \
	X(SYNTAX,            501, "5.5.4",  "Syntax error in parameters or arguments") \
	X(HELO_SYNTAX,       501, "5.5.4",  "Syntax: EHLO hostname") \
	X(SENDER_SYNTAX,     501, "5.1.7",  "Bad sender address syntax") \
	X(RCPT_SYNTAX,       501, "5.1.3",  "Bad recipient address syntax") \
	X(PATH_TOO_LONG,     501, "5.5.4",  "Path too long") \
	X(BDAT_SYNTAX,       501, "5.5.4",  "Syntax: BDAT chunk-size [LAST]") \
	X(PARAM_DUP,         501, "5.5.4",  "Duplicate parameter") \
	X(PARAM_VALUE,       501, "5.5.4",  "Invalid parameter value") \
	X(NOT_IMPLEMENTED,   502, "5.5.1",  "Command not implemented") \
	X(BAD_SEQUENCE,      503, "5.5.1",  "Bad sequence of commands") \
	X(NEED_HELO,         503, "5.5.1",  "Send HELO/EHLO first") \
	X(NEED_MAIL,         503, "5.5.1",  "Need MAIL command") \
	X(NESTED_MAIL,       503, "5.5.1",  "Sender already specified") \
	X(NEED_BDAT,         503, "5.5.1",  "BODY=BINARYMIME requires BDAT") \
	X(TXN_FAILED,        554, "5.5.1",  "Transaction failed, send RSET") \
	X(NO_RCPT,           554, "5.5.1",  "No valid recipients") \
	X(RELAY_DENIED,      554, "5.7.1",  "Relay access denied") \
	X(USER_UNKNOWN,      550, "5.1.1",  "Recipient address rejected: user unknown") \
	X(RCPT_UNLISTED,     550, "5.1.1",  "<%s>: Recipient address rejected: User unknown in relay recipient table") \
	X(RCPT_UNVERIFIED,   450, "4.1.1",  "<%s>: Recipient address rejected: unverified address: Address verification in progress") \
	X(RCPT_UNDELIVERABLE,550, "5.1.1",  "<%s>: Recipient address rejected: undeliverable address: the next hop does not know it") \
	X(SENDER_REJECTED,   553, "5.7.1",  "Sender address rejected") \
	X(NEED_SMTPUTF8,     553, "5.6.7",  "Non-ASCII address requires SMTPUTF8") \
	X(BAD_LINE_END,      550, "5.6.0", "Bare <CR> or <LF> in message is not allowed") \
	X(DATA_LINE_TOO_LONG,550, "5.6.0",  "Message line too long") \
	X(EIGHTBIT,          550, "5.6.0",  "8-bit data requires BODY=8BITMIME") \
	X(MSG_TOO_BIG,       552, "5.3.4",  "Message size exceeds fixed limit") \
	X(PARAM_UNKNOWN,     555, "5.5.4",  "Unsupported parameter") \
	X(PARAM_OTHER,       555, "5.5.4",  "Parameter not allowed here")

/* enum smtp_reply_id - one entry per reply in SMTP_PROTO_REPLIES. */
enum smtp_reply_id {
#define SMTP_PROTO_REPLY_ENUM_(name, code, esc, text) SMTP_REPLY_##name,
	SMTP_PROTO_REPLIES(SMTP_PROTO_REPLY_ENUM_)
#undef SMTP_PROTO_REPLY_ENUM_
	SMTP_REPLY_COUNT_
};

/* struct smtp_proto_reply - one row of the reply table (static storage). */
struct smtp_proto_reply {
	uint16_t code;       /* 220..554 */
	const char *esc;     /* "5.5.1" or NULL */
	const char *text;    /* may contain one "%s" */
	const char *name;    /* "OK", "NEED_MAIL", ... for logs and tests */
};

/*
 * smtp_proto_reply - the table row for id; ids out of range are our bug
 * (rm_panic). The returned pointer is static.
 */
const struct smtp_proto_reply *smtp_proto_reply(enum smtp_reply_id id);

/*
 * smtp_proto_reply_format - write one reply line "code[-| ]esc text\r\n"
 * into out[0..cap) with "%s" replaced by arg made printable (CR, LF and
 * other control or 8-bit bytes become '?'; NULL is taken as ""). is_more:
 * use "-" (more lines follow) instead of " ". The line is cut to
 * SMTP_PROTO_REPLY_LINE_MAX. Not NUL-terminated. Returns the length, or
 * -ENOSPC when cap is too small (nothing useful written).
 */
int smtp_proto_reply_format(char *out, size_t cap, enum smtp_reply_id id,
			    const char *arg, bool is_more);

/*
 * smtp_proto_err_reply - the reply for a parser error. is_rcpt selects the
 * recipient flavour of path errors. SMTP_PROTO_OK maps to SMTP_REPLY_OK.
 */
enum smtp_reply_id smtp_proto_err_reply(int err, bool is_rcpt);

/* smtp_proto_err_name - constant name of a parser error, "OK" for 0. */
const char *smtp_proto_err_name(int err);

#endif
