/*
 * data.h - the message body decoder: end-of-data detection (CRLF.CRLF
 * only), dot-unstuffing, bare CR/LF detection, line length and message
 * size limits (RFC 5321 4.1.1.4, 4.5.2, 4.5.3.1.6, 2.3.8; RFC 1870), and
 * the BDAT chunk framing helper (RFC 3030).
 *
 * Pure and incremental: the decoder keeps its state in struct data_dec and
 * never buffers input. Feed it any split of the stream; it hands back the
 * decoded body as slices of your input (zero copy), or of a static
 * constant where it must insert bytes (a lenient bare LF becomes CRLF).
 *
 * Strict by default: a bare CR or LF never ends a line and never ends the
 * data; it marks the message rejected, and decoding goes on (without output)
 * to the real CRLF "." CRLF, so the session stays in sync and a smuggled
 * "\n.\n" can never split one DATA into two messages. Each leniency is a
 * named flag in struct data_limits, off by default.
 */
#ifndef RINGMTA_DATA_H
#define RINGMTA_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* enum data_mode - how the stream is framed. */
enum data_mode {
	DATA_MODE_DOT = 0,  /* DATA: ends at CRLF.CRLF, dot-stuffed */
	DATA_MODE_BDAT,     /* BDAT: framed by chunk sizes, no stuffing, no end marker */
};

/*
 * struct data_limits - per-message limits and leniencies (copied by
 * data_dec_init).
 */
struct data_limits {
	size_t max_line_bytes;       /* longest line incl. CRLF and stuffing dot (wire octets) */
	uint64_t max_message_bytes;  /* largest decoded message (RFC 1870 counting) */
	bool lenient_bare_lf;        /* a bare LF ends a line, emitted as CRLF (never ends the data) */
	bool lenient_bare_cr;        /* a bare CR is content */
	bool allow_8bit;             /* 8-bit octets allowed (BODY=8BITMIME, SMTPUTF8, or leniency) */
	bool is_binary;              /* BODY=BINARYMIME (BDAT only): no line or 8-bit checks at all, only the size */
};

/* enum data_reject - why a message was rejected (first reason wins). */
enum data_reject {
	DATA_REJECT_NONE = 0,
	DATA_REJECT_BARE_LF,
	DATA_REJECT_BARE_CR,
	DATA_REJECT_LINE_TOO_LONG,
	DATA_REJECT_TOO_BIG,
	DATA_REJECT_8BIT,
};

/* enum data_status - what data_dec_run() returns. */
enum data_status {
	DATA_NEED_MORE = 0,  /* all input consumed, no more output: feed more */
	DATA_BODY,           /* *out, *out_len: the next slice of decoded body */
	DATA_REJECTED,       /* the message has just become rejected (once); see d->reject */
	DATA_END,            /* DOT mode: CRLF.CRLF seen; *used includes ".\r\n" */
};

/* struct data_dec - decoder state; fields are private. */
struct data_dec {
	struct data_limits lim;
	uint8_t mode;        /* enum data_mode */
	uint8_t st;          /* internal state */
	uint8_t reject;      /* enum data_reject */
	size_t line_bytes;   /* wire octets in the current line */
	uint64_t n_bytes;    /* decoded octets emitted or counted */
};

/* data_dec_init - start decoding one message in mode with lim (copied). */
void data_dec_init(struct data_dec *d, const struct data_limits *lim, enum data_mode mode);

/*
 * data_dec_run - decode from in[0..len). Sets *used to the input octets
 * consumed; call again with in + *used until DATA_NEED_MORE (then all of
 * in is consumed) or DATA_END. Returns:
 *  DATA_BODY: *out and *out_len (> 0) is decoded body, pointing into
 *    in or into static storage; valid as long as in is.
 *  DATA_REJECTED: once, when the message becomes rejected; d->reject says
 *    why. *out, *out_len may carry a last slice of body that preceded the
 *    offending byte (out_len 0 if none), so that the body handed out never
 *    depends on how the input was split. No DATA_BODY follows, but
 *    decoding (and end detection) goes on.
 *  DATA_END: (DOT mode) the end marker was consumed; bytes after it are
 *    not touched. Every later call returns DATA_END with *used = 0.
 *  DATA_NEED_MORE: input exhausted.
 * Never reads past in[len - 1].
 */
int data_dec_run(struct data_dec *d, const uint8_t *in, size_t len, size_t *used,
		 const uint8_t **out, size_t *out_len);

/*
 * data_dec_finish - BDAT mode: the last chunk has been fed. A trailing CR
 * is a bare CR. Returns DATA_REJECTED if that newly rejects the message,
 * else DATA_NEED_MORE.
 */
int data_dec_finish(struct data_dec *d);

/* data_dec_reject - the reject reason so far (DATA_REJECT_NONE if fine). */
enum data_reject data_dec_reject(const struct data_dec *d);

/* data_dec_bytes - decoded octets so far (RFC 1870 size). */
uint64_t data_dec_bytes(const struct data_dec *d);

/* data_reject_name - constant name ("bare_lf"). */
const char *data_reject_name(enum data_reject r);

/* DATA_BDAT_DIGITS_MAX - chunk-size digits we accept: 20 fits uint64_t's 1.8e19. */
#define DATA_BDAT_DIGITS_MAX 20

/*
 * struct data_bdat - one BDAT chunk's framing: octets left, LAST or not.
 */
struct data_bdat {
	uint64_t left;
	bool is_last;
};

/*
 * data_bdat_parse - parse the BDAT argument (RFC 3030 2: chunk-size
 * [SP "LAST"], LAST case-insensitive) from arg[0..len) into *b. Returns 0,
 * or -1 on a syntax error (empty, non-digit, > 20 digits or > UINT64_MAX,
 * anything else after it); *b is then zero.
 */
int data_bdat_parse(const uint8_t *arg, size_t len, struct data_bdat *b);

/*
 * data_bdat_take - how many of the len octets available belong to the
 * chunk; consumes them from b->left. Returns min(len, b->left).
 */
size_t data_bdat_take(struct data_bdat *b, size_t len);

#endif
