/*
 * util.h - cross-cutting helpers shared by every module: rm_err, rm_buf,
 * rm_panic. Pure: libc only.
 */
#ifndef RINGMTA_UTIL_H
#define RINGMTA_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RM_ERR_MSG_BYTES - room for "module: what we were doing: cause". */
#define RM_ERR_MSG_BYTES 256

/*
 * struct rm_err - an error from the environment: a negative code (-errno or
 * a module's own documented range) and a message that reads
 * "module: what we were doing: cause".
 */
struct rm_err {
	int code;
	char msg[RM_ERR_MSG_BYTES];
};

/*
 * rm_err_set - fill err (may be NULL) with code and a printf-style message.
 * Returns code, so callers can write "return rm_err_set(err, -ENOENT, ...)".
 */
int rm_err_set(struct rm_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * rm_panic - our own bug: log file:line and the message to stderr, abort.
 * Never call for anything a peer, the disk or the network can cause.
 */
#define rm_panic(...) rm_panic_at(__FILE__, __LINE__, __VA_ARGS__)
/* rm_panic_hook - run first by rm_panic (NULL: nothing), e.g. to write
 * the calling thread's buffered log lines before the last words. */
extern void (*rm_panic_hook)(void);
void rm_panic_at(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));

/*
 * struct rm_buf - a binary-safe byte buffer with a hard maximum. data is
 * not NUL-terminated. cap is what is allocated, max what may ever be.
 */
struct rm_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
	size_t max;
};

/* rm_buf_init - empty buffer that may grow to max bytes; allocates nothing. */
void rm_buf_init(struct rm_buf *b, size_t max);
/* rm_buf_fini - free the storage; b is empty afterwards. */
void rm_buf_fini(struct rm_buf *b);
/*
 * rm_buf_append - append len bytes. Returns 0, -ENOBUFS when the result
 * would exceed max (nothing appended), or -ENOMEM.
 */
int rm_buf_append(struct rm_buf *b, const void *p, size_t len);
/* rm_buf_consume - drop the first n bytes (n <= len). */
void rm_buf_consume(struct rm_buf *b, size_t n);

/*
 * rm_printable - copy at most out_cap-1 bytes of peer data into out as
 * printable ASCII (others become \xHH), cut to max_in input bytes, NUL-
 * terminated. Returns out. For logging peer strings (Postfix printable()).
 */
char *rm_printable(char *out, size_t out_cap, const void *in, size_t in_len,
		   size_t max_in);

/* rm_domain_all_digits - rm_domain_why()'s reason for an all-digit top
 * label (a bare IP address), so callers can add their own hint. */
extern const char rm_domain_all_digits[];

/*
 * rm_domain_why - why d[0..len) is not a host name, or NULL when it is:
 * LDH labels of 1..63 bytes, no hyphen at a label's ends, at most 253
 * bytes, no trailing dot, a top label that is not all digits. Returns a
 * constant reason ("empty label in domain name", rm_domain_all_digits...).
 */
const char *rm_domain_why(const char *d, size_t len);

#endif
