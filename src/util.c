/*
 * util - cross-cutting helpers: rm_err, rm_panic, rm_buf, rm_printable.
 *
 * Owns: nothing beyond the buffers callers hand it.
 * Must not: do any I/O except rm_panic's last words on stderr.
 * Interface: include/ringmta/util.h
 * Limits: rm_buf never grows past its max.
 * Errors: -ENOBUFS (max reached), -ENOMEM.
 */
#include "ringmta/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rm_err_set(struct rm_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return code;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return code;
}

void (*rm_panic_hook)(void);

void rm_panic_at(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	if (rm_panic_hook != NULL)
		rm_panic_hook();
	fprintf(stderr, "panic: %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

void rm_buf_init(struct rm_buf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max;
}

void rm_buf_fini(struct rm_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

int rm_buf_append(struct rm_buf *b, const void *p, size_t len)
{
	size_t need, cap;
	uint8_t *nd;

	if (len > b->max || b->len > b->max - len)
		return -ENOBUFS;
	need = b->len + len;
	if (need > b->cap) {
		cap = b->cap ? b->cap : 256;
		while (cap < need)
			cap = cap > b->max / 2 ? b->max : cap * 2;
		nd = realloc(b->data, cap);
		if (nd == NULL)
			return -ENOMEM;
		b->data = nd;
		b->cap = cap;
	}
	if (len)
		memcpy(b->data + b->len, p, len);
	b->len = need;
	return 0;
}

void rm_buf_consume(struct rm_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

char *rm_printable(char *out, size_t out_cap, const void *in, size_t in_len,
		   size_t max_in)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *p = in;
	size_t i, o = 0;

	if (out_cap == 0)
		return out;
	if (in_len > max_in)
		in_len = max_in;
	for (i = 0; i < in_len; i++) {
		uint8_t c = p[i];
		if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
			if (o + 1 >= out_cap)
				break;
			out[o++] = (char)c;
		} else {
			if (o + 4 >= out_cap)
				break;
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return out;
}

const char rm_domain_all_digits[] = "top-level label is all digits";

const char *rm_domain_why(const char *d, size_t len)
{
	size_t i, label = 0;
	bool is_all_digits = true;

	if (len == 0)
		return "empty domain name";
	if (len > 253)
		return "domain name longer than 253 bytes";
	for (i = 0; i <= len; i++) {
		char ch = i < len ? d[i] : '.';
		bool is_dig = ch >= '0' && ch <= '9';
		char lc = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
		if (ch == '.') {
			if (label == 0)
				return "empty label in domain name";
			if (d[i - 1] == '-')
				return "label ends with '-'";
			if (i < len)
				is_all_digits = true;
			label = 0;
			continue;
		}
		if (!(is_dig || (lc >= 'a' && lc <= 'z') || ch == '-'))
			return "invalid character in domain name";
		if (ch == '-' && label == 0)
			return "label starts with '-'";
		if (!is_dig)
			is_all_digits = false;
		if (++label > 63)
			return "label longer than 63 bytes";
	}
	if (is_all_digits)
		return rm_domain_all_digits;
	return NULL;
}
