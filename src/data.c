/*
 * data - incremental message body decoder and BDAT chunk framing.
 *
 * Owns: the decoder state in struct data_dec; no buffers (output is slices
 *   of the caller's input or of static constants).
 * Must not: allocate, log, read past the input length, or let any byte
 *   sequence other than CRLF "." CRLF end the data.
 * Interface: include/ringmta/data.h
 * Limits: max_line_bytes per line (wire octets incl. CRLF and any
 *   stuffing dot), max_message_bytes decoded; both reject the message but
 *   never stop the scan for the end marker.
 * Errors: none: problems with the input become a sticky reject reason.
 * Standards: RFC 5321 4.1.1.4 (end of data), 4.5.2 (transparency),
 *   2.3.8 (CRLF only), 4.5.3.1.6 (text line); RFC 1870 (size counting:
 *   CRLFs count, stuffing dots and the end marker do not); RFC 3030.
 *
 * Design: a byte-level state machine (states below). Line starts are split
 * into "after CRLF" (where "." CRLF ends the data) and "after a bare LF
 * taken as a line end under lenient_bare_lf" (where it never does). A byte
 * that has to be dropped (a stuffing dot, the end marker's CR) first
 * flushes the slice gathered so far, without changing state, so the next
 * call sees the same byte again in the same state: output is therefore
 * identical for every split of the input (tested at every offset).
 */
#include "ringmta/data.h"

#include <string.h>

/* decoder states (struct data_dec.st) */
enum {
	ST_LS_CRLF = 0, /* start of a line after CRLF (or start of data) */
	ST_LS_LF,       /* start of a line after a lenient bare LF */
	ST_DOT,         /* "." at the start of a CRLF line, dropped */
	ST_DOT_CR,      /* "." CR at the start of a CRLF line, both held */
	ST_TEXT,        /* inside a line */
	ST_CR,          /* inside a line, after CR (emitted) */
	ST_END,         /* CRLF.CRLF seen */
};

static const uint8_t crlf[2] = { '\r', '\n' };

void data_dec_init(struct data_dec *d, const struct data_limits *lim, enum data_mode mode)
{
	memset(d, 0, sizeof(*d));
	d->lim = *lim;
	if (lim->is_binary)
		d->lim.allow_8bit = true;   /* RFC 3030 3: BINARYMIME is any octet */
	d->mode = (uint8_t)mode;
	d->st = ST_LS_CRLF;
}

enum data_reject data_dec_reject(const struct data_dec *d)
{
	return (enum data_reject)d->reject;
}

uint64_t data_dec_bytes(const struct data_dec *d)
{
	return d->n_bytes;
}

const char *data_reject_name(enum data_reject r)
{
	switch (r) {
	case DATA_REJECT_NONE:          return "none";
	case DATA_REJECT_BARE_LF:       return "bare_lf";
	case DATA_REJECT_BARE_CR:       return "bare_cr";
	case DATA_REJECT_LINE_TOO_LONG: return "line_too_long";
	case DATA_REJECT_TOO_BIG:       return "too_big";
	case DATA_REJECT_8BIT:          return "8bit";
	}
	return "unknown";
}

/* reject - record the first reject reason; true if this call set it. */
static bool reject(struct data_dec *d, enum data_reject why)
{
	if (d->reject != DATA_REJECT_NONE)
		return false;
	d->reject = (uint8_t)why;
	return true;
}

/* is_plain - an octet with no meaning to the state machine and no limit but the counts. */
static inline bool is_plain(const struct data_dec *d, uint8_t c)
{
	if (d->lim.is_binary)
		return true;
	return c != '\r' && c != '\n' && (c < 0x80 || d->lim.allow_8bit);
}

/* count_line - one more wire octet on this line; rejects past the limit. */
static bool count_line(struct data_dec *d)
{
	if (d->lim.is_binary)
		return false;
	if (++d->line_bytes > d->lim.max_line_bytes)
		return reject(d, DATA_REJECT_LINE_TOO_LONG);
	return false;
}

/* count_out - n more decoded octets (RFC 1870); rejects past the limit. */
static bool count_out(struct data_dec *d, uint64_t n)
{
	d->n_bytes += n;
	if (d->n_bytes > d->lim.max_message_bytes)
		return reject(d, DATA_REJECT_TOO_BIG);
	return false;
}

/*
 * data_dec_run - the state machine; see data.h for the contract. Longer
 * than 60 lines: one byte-level switch whose cases are short (nginx style).
 */
int data_dec_run(struct data_dec *d, const uint8_t *in, size_t len, size_t *used,
		 const uint8_t **out, size_t *out_len)
{
	size_t i, s0 = 0;
	bool newly = false, bin = d->lim.is_binary;

	*out = NULL;
	*out_len = 0;
	if (d->st == ST_END) {
		*used = 0;
		return DATA_END;
	}
	for (i = 0; i < len; i++) {
		uint8_t c = in[i];
again:
		switch (d->st) {
		case ST_LS_CRLF:
		case ST_LS_LF:
			if (c != '.' || d->mode != DATA_MODE_DOT || bin) {
				d->st = ST_TEXT;
				goto again;
			}
			/* RFC 5321 4.5.2: drop the first "." of a line. */
			if (d->reject == DATA_REJECT_NONE && i > s0)
				goto flush;
			newly |= count_line(d);
			/* "." CRLF ends the data only after a real CRLF. */
			d->st = d->st == ST_LS_CRLF ? ST_DOT : ST_TEXT;
			s0 = i + 1;
			break;
		case ST_DOT:
			if (c != '\r') {
				d->st = ST_TEXT;
				goto again;
			}
			newly |= count_line(d);
			d->st = ST_DOT_CR;
			s0 = i + 1;
			break;
		case ST_DOT_CR:
			if (c == '\n') {
				d->st = ST_END;
				*used = i + 1;
				return DATA_END;
			}
			/* "." CR x: the CR was bare. */
			d->st = ST_TEXT;
			if (!d->lim.lenient_bare_cr) {
				newly |= reject(d, DATA_REJECT_BARE_CR);
				goto again;
			}
			if (d->reject != DATA_REJECT_NONE)
				goto again;
			/* lenient: the held CR is content; c is seen again next call */
			*used = i;
			if (count_out(d, 1))
				return DATA_REJECTED;
			*out = crlf;
			*out_len = 1;
			return DATA_BODY;
		case ST_TEXT:
			if (!newly && is_plain(d, c)) {
				/* fast path: a run of ordinary octets, well inside both
				 * limits, is counted in one go; near a limit we go byte
				 * by byte so the reject lands on the exact octet */
				size_t j = i + 1, run;

				while (j < len && is_plain(d, in[j]))
					j++;
				run = j - i;
				/* Rejected already: only the end of the data matters,
				 * so ordinary octets need no counting at all. */
				if (d->reject != DATA_REJECT_NONE) {
					i = j - 1;
					break;
				}
				/* Take as much of the run as both limits allow in one
				 * step; the octet past a limit goes the slow way and is
				 * rejected there. (Going byte by byte here rescanned the
				 * run for every octet: quadratic on a 2 MB line.) */
				if (!bin && d->lim.max_line_bytes - d->line_bytes < run)
					run = d->lim.max_line_bytes - d->line_bytes;
				if (d->lim.max_message_bytes - d->n_bytes < run)
					run = (size_t)(d->lim.max_message_bytes - d->n_bytes);
				if (run > 0) {
					if (!bin)
						d->line_bytes += run;
					d->n_bytes += run;
					i += run - 1;
					break;
				}
			}
			if (c == '\n' && !bin) {
				if (!d->lim.lenient_bare_lf) {
					newly |= count_line(d);
					newly |= reject(d, DATA_REJECT_BARE_LF);
					break;
				}
				/* lenient: the LF ends the line and becomes CRLF */
				if (d->reject == DATA_REJECT_NONE && i > s0)
					goto flush;
				d->line_bytes = 0;
				d->st = ST_LS_LF;
				s0 = i + 1;
				if (d->reject == DATA_REJECT_NONE) {
					*used = i + 1;
					if (count_out(d, 2))
						return DATA_REJECTED;
					*out = crlf;
					*out_len = 2;
					return DATA_BODY;
				}
				break;
			}
			newly |= count_line(d);
			if (c == '\r' && !bin)
				d->st = ST_CR;
			else if (c >= 0x80 && !d->lim.allow_8bit)
				newly |= reject(d, DATA_REJECT_8BIT);
			newly |= count_out(d, 1);
			break;
		case ST_CR:
			if (c == '\n') {
				newly |= count_line(d);
				newly |= count_out(d, 1);
				d->line_bytes = 0;
				d->st = ST_LS_CRLF;
				break;
			}
			if (!d->lim.lenient_bare_cr)
				newly |= reject(d, DATA_REJECT_BARE_CR);
			d->st = ST_TEXT;
			goto again;
		}
		if (newly) {
			/* hand out the body before the offending byte, so the
			 * output does not depend on where the input was split */
			*used = i + 1;
			if (i > s0) {
				*out = in + s0;
				*out_len = i - s0;
			}
			return DATA_REJECTED;
		}
	}
	*used = len;
	if (d->reject == DATA_REJECT_NONE && len > s0) {
		*out = in + s0;
		*out_len = len - s0;
		return DATA_BODY;
	}
	return DATA_NEED_MORE;
flush:
	*used = i;
	*out = in + s0;
	*out_len = i - s0;
	return DATA_BODY;
}

int data_dec_finish(struct data_dec *d)
{
	if (d->st == ST_CR && !d->lim.lenient_bare_cr && reject(d, DATA_REJECT_BARE_CR))
		return DATA_REJECTED;
	return DATA_NEED_MORE;
}

int data_bdat_parse(const uint8_t *arg, size_t len, struct data_bdat *b)
{
	uint64_t x = 0;
	size_t i = 0;

	memset(b, 0, sizeof(*b));
	while (i < len && arg[i] >= '0' && arg[i] <= '9') {
		unsigned dgt = (unsigned)(arg[i] - '0');

		if (i == DATA_BDAT_DIGITS_MAX || x > (UINT64_MAX - dgt) / 10)
			return -1;
		x = x * 10 + dgt;
		i++;
	}
	if (i == 0)
		return -1;
	if (i < len) {
		/* RFC 3030 2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] */
		if (len - i != 5 || arg[i] != ' ' ||
		    ((arg[i + 1] | 0x20) != 'l') || ((arg[i + 2] | 0x20) != 'a') ||
		    ((arg[i + 3] | 0x20) != 's') || ((arg[i + 4] | 0x20) != 't'))
			return -1;
		b->is_last = true;
	}
	b->left = x;
	return 0;
}

size_t data_bdat_take(struct data_bdat *b, size_t len)
{
	size_t n = b->left < (uint64_t)len ? (size_t)b->left : len;

	b->left -= n;
	return n;
}
