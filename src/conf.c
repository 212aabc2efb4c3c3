/*
 * conf - the configuration: key table, defaults, file and -o parsing,
 * validation, matching helpers, and the example/reference generators.
 *
 * Owns: the key table (the one source of every key's default, valid values
 *   and meaning); the heap arrays behind struct conf's lists.
 * Must not: keep pointers into the text it parses; log (callers print the
 *   rm_err); touch sockets or the spool.
 * Interface: include/ringmta/conf.h
 * Limits: CONF_MAX_FILE_BYTES per file, CONF_MAX_LINE_BYTES per line, each
 *   list capped (CONF_MAX_*); every number has a range in the key table.
 *   Parsing never reads past len and never grows a list past its cap.
 * Errors: -EINVAL with "FILE:LINE: key: problem" or "-o key=value: key:
 *   problem"; -EFBIG, -ENOMEM, -errno from open/read. An invalid built-in
 *   default is our bug: rm_panic.
 * Standards: RFC 5321 4.5.3.1.4 (line length), 4.5.3.1.8 (100 recipients),
 *   4.5.3.2.7 (server timeout), 4.5.4.1 (queue lifetime); RFC 1035 2.3.4
 *   and RFC 1123 2.1 (host names); RFC 1870 (SIZE); RFC 4291 2.5.5.2
 *   (IPv4-mapped addresses).
 *
 * Design: each key is one row of conf_keys[]: a kind (generic number,
 * size, duration, path, enum) or a custom setter, its range, default text
 * and documentation. conf_defaults() feeds each default text through the
 * same setter a file line goes through, so defaults can never hold a value
 * the parser would refuse. Setters validate into locals and commit only on
 * success, so a failed line leaves the old value in place.
 */
#include "ringmta/conf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* SAMPLE_BYTES - how much of a bad value an error message quotes. */
#define SAMPLE_BYTES 64
/* MAX_KEYS - room in the per-source "seen on line" array. */
#define MAX_KEYS 64
/* MAX_REACTORS - reactors upper bound; one ring per thread. */
#define MAX_REACTORS 256
/* WRAP_COLUMNS - comment width in the generated example file. */
#define WRAP_COLUMNS 72

enum kind { K_UINT, K_SIZE, K_BYTES, K_MS, K_PATH, K_ENUM, K_BOOL, K_CUSTOM };

struct pctx;
struct conf_key;

typedef int set_fn(struct conf *c, const struct conf_key *k, const char *v,
		   size_t len, struct pctx *p);
typedef void dump_fn(const struct conf *c, const struct conf_key *k, FILE *f);

/* struct conf_key - one configuration key: how to parse, print, document. */
struct conf_key {
	const char *name;
	enum kind kind;
	size_t off, size;           /* field in struct conf */
	uint64_t min, max;          /* K_UINT, K_SIZE, K_BYTES, K_MS */
	const char *min_why;        /* why min is what it is (an RFC) */
	const char *const *names;   /* K_ENUM, K_BOOL; NULL-terminated */
	set_fn *set;                /* K_CUSTOM */
	dump_fn *dump;              /* K_CUSTOM */
	const char *def;            /* default text; NULL = computed */
	const char *values;         /* valid values, for the docs */
	const char *doc;            /* meaning, for the docs */
	bool is_later;              /* parsed now, used by a later issue */
	bool is_repeatable;
	bool is_empty_ok;
};

/* struct pctx - where we are, for messages and the once-per-source rule. */
struct pctx {
	const char *name;           /* file name; NULL for an override */
	unsigned line;
	const char *ov;             /* the override being applied */
	size_t ov_len;
	const char *key;            /* key being set, or NULL */
	bool is_first;              /* first time this key in this source */
	struct rm_err *err;
	unsigned seen[MAX_KEYS];    /* line where set, 0 = not yet */
};

/* ---- messages ---------------------------------------------------------- */

static int pfail(struct pctx *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* pfail - fill p->err with "WHERE: key: message"; returns -EINVAL. */
static int pfail(struct pctx *p, const char *fmt, ...)
{
	char msg[RM_ERR_MSG_BYTES], ov[128];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (p->name == NULL) {
		rm_printable(ov, sizeof(ov), p->ov, p->ov_len, 96);
		if (p->key)
			return rm_err_set(p->err, -EINVAL, "-o %s: %s: %s",
					  ov, p->key, msg);
		return rm_err_set(p->err, -EINVAL, "-o %s: %s", ov, msg);
	}
	if (p->key)
		return rm_err_set(p->err, -EINVAL, "%s:%u: %s: %s", p->name,
				  p->line, p->key, msg);
	return rm_err_set(p->err, -EINVAL, "%s:%u: %s", p->name, p->line, msg);
}

/* sample - a bad value made printable and short enough to quote. */
static const char *sample(char *buf, size_t cap, const char *v, size_t len)
{
	return rm_printable(buf, cap, v, len, SAMPLE_BYTES);
}

/* ---- lexical helpers --------------------------------------------------- */

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t';
}

static bool is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

static char lower(char ch)
{
	return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

/* trim - drop blanks at both ends of (*s, *len). */
static void trim(const char **s, size_t *len)
{
	while (*len && is_blank(**s)) {
		(*s)++;
		(*len)--;
	}
	while (*len && is_blank((*s)[*len - 1]))
		(*len)--;
}

/*
 * next_item - the next list item of (*s..end): items are separated by
 * blanks, and also by commas when is_comma. Returns false at the end.
 */
static bool next_item(const char **s, const char *end, bool is_comma,
		      const char **tok, size_t *tlen)
{
	while (*s < end && (is_blank(**s) || (is_comma && **s == ',')))
		(*s)++;
	if (*s == end)
		return false;
	*tok = *s;
	while (*s < end && !is_blank(**s) && !(is_comma && **s == ','))
		(*s)++;
	*tlen = (size_t)(*s - *tok);
	return true;
}

/* token_is - whether (v, len) equals the constant word. */
static bool token_is(const char *v, size_t len, const char *word)
{
	return strlen(word) == len && memcmp(v, word, len) == 0;
}

/*
 * parse_digits - a run of decimal digits at *s into *out, advancing *s.
 * Returns 0, or -1 when there is no digit or the value overflows.
 */
static int parse_digits(const char **s, const char *end, uint64_t *out)
{
	uint64_t n = 0;
	const char *start = *s;

	while (*s < end && is_digit(**s)) {
		unsigned d = (unsigned)(**s - '0');
		if (n > (UINT64_MAX - d) / 10)
			return -1;
		n = n * 10 + d;
		(*s)++;
	}
	if (*s == start)
		return -1;
	*out = n;
	return 0;
}

/* parse_number - the whole of (v, len) as a decimal number. */
static int parse_number(const char *v, size_t len, uint64_t *out)
{
	const char *end = v + len;

	if (parse_digits(&v, end, out) < 0 || v != end)
		return -1;
	return 0;
}

/*
 * parse_duration - "N", "Nms", "Ns", "Nm", "Nh" or "Nd" into milliseconds
 * (no unit = seconds, as in Postfix). Returns 0 or -1.
 */
static int parse_duration(const char *v, size_t len, uint64_t *ms)
{
	static const struct { const char *unit; uint64_t ms; } units[] = {
		{ "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 },
		{ "h", 3600000 }, { "d", 86400000 },
	};
	const char *end = v + len;
	uint64_t n;
	size_t i;

	if (parse_digits(&v, end, &n) < 0)
		return -1;
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (!token_is(v, (size_t)(end - v), units[i].unit))
			continue;
		if (n > UINT64_MAX / units[i].ms)
			return -1;
		*ms = n * units[i].ms;
		return 0;
	}
	return -1;
}

/*
 * parse_bytes - "N" with an optional k, M, G or T suffix (either case,
 * powers of 1024) into bytes. Returns 0 or -1.
 */
static int parse_bytes(const char *v, size_t len, uint64_t *out)
{
	const char *end = v + len;
	uint64_t n, mul = 1;

	if (parse_digits(&v, end, &n) < 0)
		return -1;
	if (end - v == 1) {
		switch (lower(*v)) {
		case 'k': mul = 1ULL << 10; break;
		case 'm': mul = 1ULL << 20; break;
		case 'g': mul = 1ULL << 30; break;
		case 't': mul = 1ULL << 40; break;
		default: return -1;
		}
	} else if (v != end) {
		return -1;
	}
	if (n > UINT64_MAX / mul)
		return -1;
	*out = n * mul;
	return 0;
}

/* fmt_duration - ms in the largest unit that divides it exactly. */
static char *fmt_duration(char *buf, size_t cap, uint64_t ms)
{
	static const struct { const char *unit; uint64_t ms; } units[] = {
		{ "d", 86400000 }, { "h", 3600000 }, { "m", 60000 },
		{ "s", 1000 },
	};
	size_t i;

	if (ms == 0) {
		snprintf(buf, cap, "0");
		return buf;
	}
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (ms % units[i].ms == 0) {
			snprintf(buf, cap, "%llu%s",
				 (unsigned long long)(ms / units[i].ms),
				 units[i].unit);
			return buf;
		}
	}
	snprintf(buf, cap, "%llums", (unsigned long long)ms);
	return buf;
}

/* fmt_bytes - bytes with the largest of T, G, M that divides them, if any. */
static char *fmt_bytes(char *buf, size_t cap, uint64_t n)
{
	static const char suffix[] = "TGM";
	unsigned shift = 40;
	size_t i;

	for (i = 0; n && i < 3; i++, shift -= 10) {
		if (n % (1ULL << shift) == 0) {
			snprintf(buf, cap, "%llu%c",
				 (unsigned long long)(n >> shift), suffix[i]);
			return buf;
		}
	}
	snprintf(buf, cap, "%llu", (unsigned long long)n);
	return buf;
}

/*
 * domain_why - why (d, len) is not a host name we accept, or NULL when it
 * is: LDH labels of 1..63 bytes, no hyphen at a label's ends, 253 bytes in
 * all, no trailing dot, and a top label that is not all digits (so a bare
 * IP address is caught: it must be written as a [literal]).
 */
static const char *domain_why(const char *d, size_t len)
{
	const char *why = len > CONF_DOMAIN_BYTES - 1 ? "domain name longer than 253 bytes"
		: rm_domain_why(d, len);

	if (why == rm_domain_all_digits)
		return "top-level label is all digits (write an IP address "
		       "as a [literal] where allowed)";
	return why;
}

/* ---- addresses --------------------------------------------------------- */

/* parse_ip - (t, len) as a dotted IPv4 or an IPv6 address (no brackets). */
static int parse_ip(const char *t, size_t len, int *family, uint8_t addr[16])
{
	char buf[INET6_ADDRSTRLEN + 1];

	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, t, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET, buf, addr) == 1) {
		*family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, addr) == 1) {
		*family = AF_INET6;
		return 0;
	}
	return -1;
}

/* fill_sockaddr - a socket address from family, address bytes and port. */
static void fill_sockaddr(struct sockaddr_storage *ss, socklen_t *sl,
			  int family, const uint8_t addr[16], unsigned port)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		memcpy(&sin->sin_addr, addr, 4);
		*sl = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		memcpy(&sin6->sin6_addr, addr, 16);
		*sl = sizeof(*sin6);
	}
}

/* struct hostport - what parse_hostport() found. */
struct hostport {
	int family;
	uint8_t addr[16];
	unsigned port;
	bool is_any;
};

/*
 * parse_hostport - "a.b.c.d:P", "[IPv6]:P" and, when is_any_ok, "*:P".
 * default_port < 0 makes the port mandatory; otherwise ":P" may be left
 * out and a bare IPv6 address (no brackets, no port) is accepted too.
 * Returns 0, or -1 with *why set to a constant.
 */
static int parse_hostport(const char *t, size_t len, int default_port,
			  bool is_any_ok, struct hostport *hp, const char **why)
{
	const char *end = t + len, *rest, *colon;
	uint64_t port;

	memset(hp, 0, sizeof(*hp));
	if (len && t[0] == '[') {
		const char *close = memchr(t, ']', len);
		if (close == NULL || parse_ip(t + 1, (size_t)(close - t - 1),
					      &hp->family, hp->addr) < 0 ||
		    hp->family != AF_INET6) {
			*why = "bad [IPv6] address";
			return -1;
		}
		rest = close + 1;
	} else if (is_any_ok && len && t[0] == '*') {
		hp->is_any = true;
		hp->family = AF_INET6;
		rest = t + 1;
	} else if (default_port >= 0 && memchr(t, ':', len) &&
		   memchr((const char *)memchr(t, ':', len) + 1, ':',
			  (size_t)(end - (const char *)memchr(t, ':', len) - 1))) {
		if (parse_ip(t, len, &hp->family, hp->addr) < 0) {
			*why = "bad IPv6 address";
			return -1;
		}
		hp->port = (unsigned)default_port;
		return 0;
	} else {
		colon = memchr(t, ':', len);
		rest = colon ? colon : end;
		if (parse_ip(t, (size_t)(rest - t), &hp->family, hp->addr) < 0 ||
		    hp->family != AF_INET) {
			*why = is_any_ok ? "address is not a.b.c.d, [IPv6] or *"
					 : "address is not a.b.c.d or [IPv6]";
			return -1;
		}
	}
	if (rest == end) {
		if (default_port < 0) {
			*why = "missing :PORT";
			return -1;
		}
		hp->port = (unsigned)default_port;
		return 0;
	}
	if (*rest != ':' || parse_number(rest + 1, (size_t)(end - rest - 1),
					 &port) < 0 || port < 1 || port > 65535) {
		*why = "port is not 1..65535";
		return -1;
	}
	hp->port = (unsigned)port;
	return 0;
}

/* fmt_addr - "a.b.c.d" or "[IPv6]" for family/addr. */
static char *fmt_addr(char *buf, size_t cap, int family, const uint8_t *addr)
{
	char ip[INET6_ADDRSTRLEN];

	inet_ntop(family, addr, ip, sizeof(ip));
	snprintf(buf, cap, family == AF_INET6 ? "[%s]" : "%s", ip);
	return buf;
}

/* sockaddr_bytes - family, address bytes and port of an AF_INET/6 address. */
static int sockaddr_bytes(const struct sockaddr_storage *ss, uint8_t addr[16],
			  unsigned *port)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		memcpy(addr, &sin->sin_addr, 4);
		*port = ntohs(sin->sin_port);
	} else {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		memcpy(addr, &sin6->sin6_addr, 16);
		*port = ntohs(sin6->sin6_port);
	}
	return ss->ss_family;
}

/* ---- generic kinds ----------------------------------------------------- */

static void *field(struct conf *c, const struct conf_key *k)
{
	return (char *)c + k->off;
}

static const void *cfield(const struct conf *c, const struct conf_key *k)
{
	return (const char *)c + k->off;
}

/* range_fail - "V is out of range (MIN..MAX)" in the key's own units. */
static int range_fail(struct pctx *p, const struct conf_key *k, uint64_t n)
{
	char a[32], b[32], d[32];

	if (k->kind == K_MS) {
		fmt_duration(a, sizeof(a), n);
		fmt_duration(b, sizeof(b), k->min);
		fmt_duration(d, sizeof(d), k->max);
	} else if (k->kind == K_BYTES) {
		fmt_bytes(a, sizeof(a), n);
		fmt_bytes(b, sizeof(b), k->min);
		fmt_bytes(d, sizeof(d), k->max);
	} else {
		snprintf(a, sizeof(a), "%llu", (unsigned long long)n);
		snprintf(b, sizeof(b), "%llu", (unsigned long long)k->min);
		snprintf(d, sizeof(d), "%llu", (unsigned long long)k->max);
	}
	if (n < k->min && k->min_why)
		return pfail(p, "%s is below the minimum of %s (%s)", a, b,
			     k->min_why);
	return pfail(p, "%s is out of range (%s..%s)", a, b, d);
}

/* set_generic - every kind but K_CUSTOM. */
static int set_generic(struct conf *c, const struct conf_key *k,
		       const char *v, size_t len, struct pctx *p)
{
	char s[SAMPLE_BYTES * 4 + 1];
	uint64_t n = 0;
	size_t i;

	switch (k->kind) {
	case K_UINT:
	case K_SIZE:
		if (parse_number(v, len, &n) < 0)
			return pfail(p, "\"%s\" is not a number",
				     sample(s, sizeof(s), v, len));
		break;
	case K_BYTES:
		if (parse_bytes(v, len, &n) < 0)
			return pfail(p, "\"%s\" is not a size (bytes, "
				     "optional k, M, G or T)",
				     sample(s, sizeof(s), v, len));
		break;
	case K_MS:
		if (parse_duration(v, len, &n) < 0)
			return pfail(p, "\"%s\" is not a duration (e.g. 30s, "
				     "5m, 1h, 2d)", sample(s, sizeof(s), v, len));
		break;
	case K_PATH:
		if (len >= k->size)
			return pfail(p, "path longer than %zu bytes",
				     k->size - 1);
		memcpy(field(c, k), v, len);
		((char *)field(c, k))[len] = '\0';
		return 0;
	case K_ENUM:
	case K_BOOL:
		for (i = 0; k->names[i]; i++) {
			if (!token_is(v, len, k->names[i]))
				continue;
			if (k->kind == K_BOOL)
				*(bool *)field(c, k) = i != 0;
			else
				*(unsigned *)field(c, k) = (unsigned)i;
			return 0;
		}
		return pfail(p, "\"%s\" is not %s", sample(s, sizeof(s), v, len),
			     k->values);
	case K_CUSTOM:
		return k->set(c, k, v, len, p);
	}
	if (n < k->min || n > k->max)
		return range_fail(p, k, n);
	if (k->kind == K_UINT)
		*(unsigned *)field(c, k) = (unsigned)n;
	else if (k->kind == K_SIZE)
		*(size_t *)field(c, k) = (size_t)n;
	else
		*(uint64_t *)field(c, k) = n;
	return 0;
}

/* dump_generic - the value of every kind but K_CUSTOM. */
static void dump_generic(const struct conf *c, const struct conf_key *k,
			 FILE *f)
{
	char buf[64];
	const void *fp = cfield(c, k);

	switch (k->kind) {
	case K_UINT:
		fprintf(f, "%s = %u\n", k->name, *(const unsigned *)fp);
		break;
	case K_SIZE:
		fprintf(f, "%s = %zu\n", k->name, *(const size_t *)fp);
		break;
	case K_BYTES:
		fprintf(f, "%s = %s\n", k->name,
			fmt_bytes(buf, sizeof(buf), *(const uint64_t *)fp));
		break;
	case K_MS:
		fprintf(f, "%s = %s\n", k->name,
			fmt_duration(buf, sizeof(buf), *(const uint64_t *)fp));
		break;
	case K_PATH:
		if (*(const char *)fp)
			fprintf(f, "%s = %s\n", k->name, (const char *)fp);
		else
			fprintf(f, "%s =\n", k->name);
		break;
	case K_ENUM:
		fprintf(f, "%s = %s\n", k->name,
			k->names[*(const unsigned *)fp]);
		break;
	case K_BOOL:
		fprintf(f, "%s = %s\n", k->name, k->names[*(const bool *)fp]);
		break;
	case K_CUSTOM:
		k->dump(c, k, f);
		break;
	}
}

/* ---- custom keys ------------------------------------------------------- */

static const char *const role_names[] = { "mx", "submission", "smtps", NULL };

const char *conf_role_name(enum conf_listen_role role)
{
	if ((unsigned)role > CONF_ROLE_SMTPS)
		rm_panic("conf_role_name: role %d", (int)role);
	return role_names[role];
}

/* listen_text - the canonical "ADDR:PORT" of a listener. */
static void listen_text(struct conf_listen *l, const struct hostport *hp)
{
	char a[INET6_ADDRSTRLEN + 2];

	if (hp->is_any)
		snprintf(l->text, sizeof(l->text), "*:%u", hp->port);
	else
		snprintf(l->text, sizeof(l->text), "%s:%u",
			 fmt_addr(a, sizeof(a), hp->family, hp->addr), hp->port);
}

/* set_listen - "ADDR:PORT [role]"; the first line of a source replaces. */
static int set_listen(struct conf *c, const struct conf_key *k, const char *v,
		      size_t len, struct pctx *p)
{
	const char *s = v, *end = v + len, *t, *why = NULL;
	char buf[SAMPLE_BYTES * 4 + 1];
	struct conf_listen l = { 0 };
	struct hostport hp;
	size_t tl, i, n;
	unsigned j, port;
	uint8_t addr[16];

	(void)k;
	next_item(&s, end, false, &t, &tl);
	if (parse_hostport(t, tl, -1, true, &hp, &why) < 0)
		return pfail(p, "\"%s\": %s", sample(buf, sizeof(buf), t, tl),
			     why);
	l.role = CONF_ROLE_MX;
	if (next_item(&s, end, false, &t, &tl)) {
		for (j = 0; role_names[j] && !token_is(t, tl, role_names[j]); j++)
			;
		if (role_names[j] == NULL)
			return pfail(p, "\"%s\" is not mx, submission or smtps",
				     sample(buf, sizeof(buf), t, tl));
		l.role = (enum conf_listen_role)j;
	}
	if (next_item(&s, end, false, &t, &tl))
		return pfail(p, "unexpected \"%s\" after the role",
			     sample(buf, sizeof(buf), t, tl));
	fill_sockaddr(&l.addr, &l.addr_len, hp.family, hp.addr, hp.port);
	l.is_any = hp.is_any;
	listen_text(&l, &hp);
	n = p->is_first ? 0 : c->n_listen;
	for (i = 0; i < n; i++) {
		int fam = sockaddr_bytes(&c->listen[i].addr, addr, &port);
		if (port != hp.port)
			continue;
		if (c->listen[i].is_any || hp.is_any ||
		    (fam == hp.family &&
		     memcmp(addr, hp.addr, fam == AF_INET ? 4 : 16) == 0))
			return pfail(p, "%s overlaps %s", l.text,
				     c->listen[i].text);
	}
	if (n == CONF_MAX_LISTEN)
		return pfail(p, "more than %d listeners", CONF_MAX_LISTEN);
	c->listen[n] = l;
	c->n_listen = n + 1;
	return 0;
}

static void dump_listen(const struct conf *c, const struct conf_key *k,
			FILE *f)
{
	size_t i;

	for (i = 0; i < c->n_listen; i++)
		fprintf(f, "%s = %s %s\n", k->name, c->listen[i].text,
			conf_role_name(c->listen[i].role));
}

/* set_reactors - "auto" (stored as 0) or 1..MAX_REACTORS. */
static int set_reactors(struct conf *c, const struct conf_key *k,
			const char *v, size_t len, struct pctx *p)
{
	char buf[SAMPLE_BYTES * 4 + 1];
	uint64_t n;

	(void)k;
	if (token_is(v, len, "auto")) {
		c->reactors = 0;
		return 0;
	}
	if (parse_number(v, len, &n) < 0 || n < 1 || n > MAX_REACTORS)
		return pfail(p, "\"%s\" is not auto or 1..%d",
			     sample(buf, sizeof(buf), v, len), MAX_REACTORS);
	c->reactors = (unsigned)n;
	return 0;
}

static void dump_reactors(const struct conf *c, const struct conf_key *k,
			  FILE *f)
{
	if (c->reactors == 0)
		fprintf(f, "%s = auto\n", k->name);
	else
		fprintf(f, "%s = %u\n", k->name, c->reactors);
}

/* set_domain - a host name into a char[CONF_DOMAIN_BYTES] field. */
static int set_domain(struct conf *c, const struct conf_key *k, const char *v,
		      size_t len, struct pctx *p)
{
	char buf[SAMPLE_BYTES * 4 + 1];
	const char *why = domain_why(v, len);

	if (why)
		return pfail(p, "\"%s\": %s", sample(buf, sizeof(buf), v, len),
			     why);
	memcpy(field(c, k), v, len);
	((char *)field(c, k))[len] = '\0';
	return 0;
}

static void dump_string(const struct conf *c, const struct conf_key *k,
			FILE *f)
{
	const char *s = cfield(c, k);

	if (*s)
		fprintf(f, "%s = %s\n", k->name, s);
	else
		fprintf(f, "%s =\n", k->name);
}

/*
 * cidr_parse - "a.b.c.d[/N]", "[IPv6][/N]" or "IPv6[/N]". Host bits must
 * be zero (as Postfix insists: 127.0.0.1/8 is a typo for 127.0.0.0/8), and
 * IPv4-mapped IPv6 entries are refused because clients are matched by the
 * IPv4 address they carry. Returns 0 or pfail().
 */
static int cidr_parse(const char *t, size_t len, struct conf_cidr *e,
		      struct pctx *p)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
					    0xff, 0xff };
	const char *end = t + len, *a = t, *slash, *close;
	char buf[SAMPLE_BYTES * 4 + 1], fixed[INET6_ADDRSTRLEN + 2];
	size_t alen, i, bytes;
	uint64_t prefix;
	bool is_bad_host = false;

	memset(e, 0, sizeof(*e));
	slash = memchr(t, '/', len);
	alen = (size_t)((slash ? slash : end) - t);
	if (len && t[0] == '[') {
		close = memchr(t, ']', len);
		if (close == NULL || close + 1 != (slash ? slash : end))
			goto bad;
		a = t + 1;
		alen = (size_t)(close - a);
	}
	if (parse_ip(a, alen, &e->family, e->addr) < 0 ||
	    (a != t && e->family != AF_INET6))
		goto bad;
	bytes = e->family == AF_INET ? 4 : 16;
	prefix = bytes * 8;
	if (slash && (parse_number(slash + 1, (size_t)(end - slash - 1),
				   &prefix) < 0 || prefix > bytes * 8))
		return pfail(p, "\"%s\": prefix is not /0../%zu",
			     sample(buf, sizeof(buf), t, len), bytes * 8);
	e->prefix = (unsigned)prefix;
	if (e->family == AF_INET6 && e->prefix >= 96 &&
	    memcmp(e->addr, mapped, sizeof(mapped)) == 0)
		return pfail(p, "\"%s\": IPv4-mapped address; write the IPv4 "
			     "form", sample(buf, sizeof(buf), t, len));
	for (i = 0; i < bytes; i++) {
		unsigned bits = e->prefix > i * 8 ? e->prefix - (unsigned)i * 8 : 0;
		uint8_t mask = bits >= 8 ? 0xff : (uint8_t)(0xff00 >> bits);
		if (e->addr[i] & (uint8_t)~mask)
			is_bad_host = true;
		e->addr[i] &= mask;
	}
	if (is_bad_host)
		return pfail(p, "\"%s\" has host bits set; did you mean %s/%u?",
			     sample(buf, sizeof(buf), t, len),
			     fmt_addr(fixed, sizeof(fixed), e->family, e->addr),
			     e->prefix);
	return 0;
bad:
	return pfail(p, "\"%s\" is not a.b.c.d/N or [IPv6]/N",
		     sample(buf, sizeof(buf), t, len));
}

/* count_items - how many list items (v, len) holds, up to max + 1. */
static size_t count_items(const char *v, size_t len, size_t max)
{
	const char *s = v, *t;
	size_t tl, n = 0;

	while (n <= max && next_item(&s, v + len, true, &t, &tl))
		n++;
	return n;
}

static int set_mynetworks(struct conf *c, const struct conf_key *k,
			  const char *v, size_t len, struct pctx *p)
{
	size_t n = count_items(v, len, CONF_MAX_MYNETWORKS), i = 0, tl;
	const char *s = v, *t;
	struct conf_cidr *list = NULL;
	int rc;

	(void)k;
	if (n > CONF_MAX_MYNETWORKS)
		return pfail(p, "more than %d entries", CONF_MAX_MYNETWORKS);
	if (n && (list = calloc(n, sizeof(*list))) == NULL)
		return rm_err_set(p->err, -ENOMEM, "conf: mynetworks: out of "
				  "memory");
	while (next_item(&s, v + len, true, &t, &tl)) {
		if ((rc = cidr_parse(t, tl, &list[i++], p)) < 0) {
			free(list);
			return rc;
		}
	}
	free(c->mynetworks);
	c->mynetworks = list;
	c->n_mynetworks = n;
	return 0;
}

static void dump_mynetworks(const struct conf *c, const struct conf_key *k,
			    FILE *f)
{
	char a[INET6_ADDRSTRLEN + 2];
	size_t i;

	fprintf(f, "%s =", k->name);
	for (i = 0; i < c->n_mynetworks; i++)
		fprintf(f, " %s/%u", fmt_addr(a, sizeof(a), c->mynetworks[i].family,
					      c->mynetworks[i].addr),
			c->mynetworks[i].prefix);
	fputc('\n', f);
}

/* free_strings - free n strings and the array. */
static void free_strings(char **list, size_t n)
{
	size_t i;

	for (i = 0; list && i < n; i++)
		free(list[i]);
	free(list);
}

static const char *const rcpt_policy_names[] = {
	"none", "any", "list", "verify", "default",
};

const char *conf_rcpt_policy_name(enum conf_rcpt_policy p)
{
	if ((unsigned)p > CONF_RCPT_DEFAULT)
		rm_panic("conf_rcpt_policy_name: policy %d", (int)p);
	return rcpt_policy_names[p];
}

/*
 * relay_domain_parse - one "example.com" or ".example.com", lower-cased,
 * with an optional ":list", ":verify" or ":any" into *policy (DEFAULT
 * when there is none).
 */
static int relay_domain_parse(const char *t, size_t len, char **out,
			      enum conf_rcpt_policy *policy, struct pctx *p)
{
	static const enum conf_rcpt_policy suffixes[] = {
		CONF_RCPT_ANY, CONF_RCPT_LIST, CONF_RCPT_VERIFY,
	};
	char buf[SAMPLE_BYTES * 4 + 1];
	const char *colon = memchr(t, ':', len), *why;
	size_t dl = colon ? (size_t)(colon - t) : len, skip = dl && t[0] == '.';
	size_t i;

	*policy = CONF_RCPT_DEFAULT;
	if (colon) {
		for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++)
			if (token_is(colon + 1, len - dl - 1,
				     rcpt_policy_names[suffixes[i]]))
				*policy = suffixes[i];
		if (*policy == CONF_RCPT_DEFAULT)
			return pfail(p, "\"%s\": the policy after ':' is not "
				     "list, verify or any",
				     sample(buf, sizeof(buf), t, len));
	}
	if ((why = domain_why(t + skip, dl - skip)) != NULL)
		return pfail(p, "\"%s\": %s", sample(buf, sizeof(buf), t, dl),
			     why);
	if ((*out = malloc(dl + 1)) == NULL)
		return rm_err_set(p->err, -ENOMEM, "conf: relay_domains: out "
				  "of memory");
	for (i = 0; i < dl; i++)
		(*out)[i] = lower(t[i]);
	(*out)[dl] = '\0';
	return 0;
}

static int set_relay_domains(struct conf *c, const struct conf_key *k,
			     const char *v, size_t len, struct pctx *p)
{
	size_t n = count_items(v, len, CONF_MAX_RELAY_DOMAINS), i = 0, j, tl;
	const char *s = v, *t;
	char buf[SAMPLE_BYTES * 4 + 1];
	enum conf_rcpt_policy *policies = NULL;
	char **list = NULL;
	int rc;

	(void)k;
	if (n > CONF_MAX_RELAY_DOMAINS)
		return pfail(p, "more than %d entries", CONF_MAX_RELAY_DOMAINS);
	if (n && ((list = calloc(n, sizeof(*list))) == NULL ||
		  (policies = calloc(n, sizeof(*policies))) == NULL)) {
		free(list);
		return rm_err_set(p->err, -ENOMEM, "conf: relay_domains: out "
				  "of memory");
	}
	while (next_item(&s, v + len, true, &t, &tl)) {
		if ((rc = relay_domain_parse(t, tl, &list[i], &policies[i],
					     p)) < 0)
			goto fail;
		for (j = 0; j < i; j++) {
			if (strcmp(list[j], list[i]) == 0) {
				rc = pfail(p, "\"%s\" is listed twice",
					   sample(buf, sizeof(buf), t, tl));
				i++;
				goto fail;
			}
		}
		i++;
	}
	free_strings(c->relay_domains, c->n_relay_domains);
	free(c->relay_domain_policies);
	c->relay_domains = list;
	c->relay_domain_policies = policies;
	c->n_relay_domains = n;
	return 0;
fail:
	free_strings(list, i);
	free(policies);
	return rc;
}

static void dump_relay_domains(const struct conf *c, const struct conf_key *k,
			       FILE *f)
{
	enum conf_rcpt_policy pol;
	size_t i;

	fprintf(f, "%s =", k->name);
	for (i = 0; i < c->n_relay_domains; i++) {
		pol = c->relay_domain_policies[i];
		fprintf(f, " %s%s%s", c->relay_domains[i],
			pol == CONF_RCPT_DEFAULT ? "" : ":",
			pol == CONF_RCPT_DEFAULT ? "" : conf_rcpt_policy_name(pol));
	}
	fputc('\n', f);
}

/*
 * set_relayhost - "", "host[:port]" (MX lookup) or "[host][:port]" (none,
 * as in Postfix). Inside brackets: a domain, a.b.c.d, IPv6 or ipv6:IPv6.
 */
static int set_relayhost(struct conf *c, const struct conf_key *k,
			 const char *v, size_t len, struct pctx *p)
{
	const char *end = v + len, *h = v, *rest, *why;
	char buf[SAMPLE_BYTES * 4 + 1];
	size_t hl;
	uint64_t port = 25;
	bool is_mx = true;
	uint8_t addr[16];
	int fam;

	(void)k;
	if (len == 0) {
		c->relayhost[0] = '\0';
		c->relayhost_port = 25;
		c->is_relayhost_mx = false;
		return 0;
	}
	if (v[0] == '[') {
		const char *close = memchr(v, ']', len);
		if (close == NULL)
			return pfail(p, "\"%s\": missing ']'",
				     sample(buf, sizeof(buf), v, len));
		h = v + 1;
		hl = (size_t)(close - h);
		rest = close + 1;
		is_mx = false;
		if (hl >= 5 && strncasecmp(h, "ipv6:", 5) == 0) {
			h += 5;
			hl -= 5;
			if (parse_ip(h, hl, &fam, addr) < 0 || fam != AF_INET6)
				return pfail(p, "\"%s\": bad IPv6 address",
					     sample(buf, sizeof(buf), v, len));
		}
		if (parse_ip(h, hl, &fam, addr) == 0)
			goto port;
	} else {
		rest = memchr(v, ':', len);
		rest = rest ? rest : end;
		hl = (size_t)(rest - h);
	}
	if ((why = domain_why(h, hl)) != NULL)
		return pfail(p, "\"%s\": %s", sample(buf, sizeof(buf), v, len),
			     why);
port:
	if (rest != end && (*rest != ':' ||
			    parse_number(rest + 1, (size_t)(end - rest - 1),
					 &port) < 0 || port < 1 || port > 65535))
		return pfail(p, "\"%s\": port is not 1..65535",
			     sample(buf, sizeof(buf), v, len));
	memcpy(c->relayhost, h, hl);
	c->relayhost[hl] = '\0';
	c->relayhost_port = (uint16_t)port;
	c->is_relayhost_mx = is_mx;
	return 0;
}

static void dump_relayhost(const struct conf *c, const struct conf_key *k,
			   FILE *f)
{
	if (c->relayhost[0] == '\0')
		fprintf(f, "%s =\n", k->name);
	else if (c->is_relayhost_mx)
		fprintf(f, "%s = %s:%u\n", k->name, c->relayhost,
			c->relayhost_port);
	else
		fprintf(f, "%s = [%s]:%u\n", k->name, c->relayhost,
			c->relayhost_port);
}

/* set_user - a login name (not root: dropping to root keeps all power). */
static int set_user(struct conf *c, const struct conf_key *k, const char *v,
		    size_t len, struct pctx *p)
{
	char buf[SAMPLE_BYTES * 4 + 1];
	size_t i;

	(void)k;
	if (len >= sizeof(c->user))
		return pfail(p, "longer than %zu bytes", sizeof(c->user) - 1);
	for (i = 0; i < len; i++) {
		char ch = v[i];
		if ((ch >= 'a' && ch <= 'z') || ch == '_' ||
		    (i > 0 && (is_digit(ch) || ch == '-')))
			continue;
		return pfail(p, "\"%s\" is not a login name ([a-z_][a-z0-9_-]*)",
			     sample(buf, sizeof(buf), v, len));
	}
	if (token_is(v, len, "root"))
		return pfail(p, "refusing to run as root");
	memcpy(c->user, v, len);
	c->user[len] = '\0';
	return 0;
}

static int set_dns_servers(struct conf *c, const struct conf_key *k,
			   const char *v, size_t len, struct pctx *p)
{
	struct conf_addr list[CONF_MAX_DNS_SERVERS];
	const char *s = v, *t, *why = NULL;
	char buf[SAMPLE_BYTES * 4 + 1];
	struct hostport hp;
	size_t n = 0, tl;

	(void)k;
	while (next_item(&s, v + len, true, &t, &tl)) {
		if (n == CONF_MAX_DNS_SERVERS)
			return pfail(p, "more than %d servers",
				     CONF_MAX_DNS_SERVERS);
		if (parse_hostport(t, tl, 53, false, &hp, &why) < 0)
			return pfail(p, "\"%s\": %s",
				     sample(buf, sizeof(buf), t, tl), why);
		fill_sockaddr(&list[n].addr, &list[n].addr_len, hp.family,
			      hp.addr, hp.port);
		n++;
	}
	memcpy(c->dns_servers, list, n * sizeof(list[0]));
	c->n_dns_servers = n;
	return 0;
}

static void dump_dns_servers(const struct conf *c, const struct conf_key *k,
			     FILE *f)
{
	char a[INET6_ADDRSTRLEN + 2];
	uint8_t addr[16];
	unsigned port;
	size_t i;
	int fam;

	fprintf(f, "%s =", k->name);
	for (i = 0; i < c->n_dns_servers; i++) {
		fam = sockaddr_bytes(&c->dns_servers[i].addr, addr, &port);
		fprintf(f, " %s:%u", fmt_addr(a, sizeof(a), fam, addr), port);
	}
	fputc('\n', f);
}

/* RATE_MAX_COUNT, RATE_MIN_MS, RATE_MAX_MS - destination_rate_limit range. */
#define RATE_MAX_COUNT 1000000
#define RATE_MIN_MS 1000ULL
#define RATE_MAX_MS 86400000ULL

/* set_rate - "0" (no limit) or "N/DURATION"; a bare unit means 1 unit. */
static int set_rate(struct conf *c, const struct conf_key *k, const char *v,
		    size_t len, struct pctx *p)
{
	const char *slash = memchr(v, '/', len), *d;
	char buf[SAMPLE_BYTES * 4 + 1], one[8];
	uint64_t n, ms;
	size_t dl;

	(void)k;
	if (token_is(v, len, "0")) {
		c->destination_rate_limit.count = 0;
		c->destination_rate_limit.per_ms = 0;
		return 0;
	}
	if (slash == NULL || parse_number(v, (size_t)(slash - v), &n) < 0 ||
	    n < 1 || n > RATE_MAX_COUNT)
		goto bad;
	d = slash + 1;
	dl = (size_t)(v + len - d);
	if (dl && dl < 3 && !is_digit(d[0])) {
		one[0] = '1';
		memcpy(one + 1, d, dl);
		d = one;
		dl++;
	}
	if (parse_duration(d, dl, &ms) < 0 || ms < RATE_MIN_MS ||
	    ms > RATE_MAX_MS)
		goto bad;
	c->destination_rate_limit.count = (unsigned)n;
	c->destination_rate_limit.per_ms = ms;
	return 0;
bad:
	return pfail(p, "\"%s\" is not 0 or N/DURATION (N 1..%d, DURATION "
		     "1s..1d)", sample(buf, sizeof(buf), v, len),
		     RATE_MAX_COUNT);
}

static void dump_rate(const struct conf *c, const struct conf_key *k, FILE *f)
{
	char d[32];

	if (c->destination_rate_limit.count == 0)
		fprintf(f, "%s = 0\n", k->name);
	else
		fprintf(f, "%s = %u/%s\n", k->name,
			c->destination_rate_limit.count,
			fmt_duration(d, sizeof(d),
				     c->destination_rate_limit.per_ms));
}

/* RETRY_MIN_MS, RETRY_MAX_MS - one retry_schedule step. */
#define RETRY_MIN_MS 1000ULL
#define RETRY_MAX_MS 86400000ULL

static int set_retry(struct conf *c, const struct conf_key *k, const char *v,
		     size_t len, struct pctx *p)
{
	uint64_t list[CONF_MAX_RETRY_SCHEDULE];
	const char *s = v, *t;
	char buf[SAMPLE_BYTES * 4 + 1];
	size_t n = 0, tl;

	(void)k;
	while (next_item(&s, v + len, true, &t, &tl)) {
		if (n == CONF_MAX_RETRY_SCHEDULE)
			return pfail(p, "more than %d steps",
				     CONF_MAX_RETRY_SCHEDULE);
		if (parse_duration(t, tl, &list[n]) < 0 ||
		    list[n] < RETRY_MIN_MS || list[n] > RETRY_MAX_MS)
			return pfail(p, "\"%s\" is not a duration of 1s..1d",
				     sample(buf, sizeof(buf), t, tl));
		n++;
	}
	if (n == 0)
		return pfail(p, "empty value");
	memcpy(c->retry_schedule_ms, list, n * sizeof(list[0]));
	c->n_retry_schedule = n;
	return 0;
}

static void dump_retry(const struct conf *c, const struct conf_key *k, FILE *f)
{
	char d[32];
	size_t i;

	fprintf(f, "%s =", k->name);
	for (i = 0; i < c->n_retry_schedule; i++)
		fprintf(f, " %s", fmt_duration(d, sizeof(d),
					       c->retry_schedule_ms[i]));
	fputc('\n', f);
}

/* ---- the key table ----------------------------------------------------- */

#define F(fld) .off = offsetof(struct conf, fld), \
	.size = sizeof(((struct conf *)0)->fld)
#define CUSTOM(s, d) .kind = K_CUSTOM, .set = (s), .dump = (d)
#define MS_SEC 1000ULL
#define MS_MIN (60 * MS_SEC)
#define MS_HOUR (60 * MS_MIN)
#define MS_DAY (24 * MS_HOUR)
#define KIB 1024ULL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)
#define TIB (1024 * GIB)
#define DURATION_VALUES(range) "a duration: a number with ms, s, m, h or d " \
	"(none = seconds), " range

static const char *const log_names[] = { "stderr", "syslog", NULL };
static const char *const durability_names[] = { "batch", "none", NULL };
static const char *const bool_names[] = { "no", "yes", NULL };

static const struct conf_key conf_keys[] = {
	{ .name = "listen", CUSTOM(set_listen, dump_listen),
	  .is_repeatable = true, .def = "127.0.0.1:2525",
	  .values = "ADDR:PORT with an optional role mx, submission or smtps; "
		"ADDR is a.b.c.d, [IPv6] or * (every IPv4 and IPv6 address); "
		"PORT 1..65535; up to 16 lines",
	  .doc = "One listening socket and what it speaks. mx (the default "
		"role) is the inbound relay service; submission is for mail "
		"clients (RFC 6409); smtps is implicit TLS (RFC 8314) and needs "
		"tls_cert_file and tls_key_file. Repeat the key for more "
		"sockets; the first listen line replaces the default, a "
		"development port on loopback. A public MX uses listen = *:25; "
		"* is one dual-stack socket that also takes IPv4 clients." },
	{ .name = "spool_dir", .kind = K_PATH, F(spool_dir),
	  .def = "./var/spool",
	  .values = "a directory path; a relative path is taken from the "
		"working directory at start",
	  .doc = "Directory of the message spool: the LMDB index and the "
		"segment files. The default suits a development run from the "
		"source tree; an installed daemon uses /var/spool/ringmta." },
	{ .name = "reactors", CUSTOM(set_reactors, dump_reactors),
	  .def = "auto",
	  .values = "auto (one per CPU this process may use) or 1..256",
	  .doc = "Number of reactor threads. Each has its own io_uring ring "
		"and its own listening sockets (SO_REUSEPORT) and serves its "
		"connections alone. auto counts the CPUs of the process's "
		"affinity mask (taskset, a cpuset), capped by a cgroup v2 CPU "
		"quota (cpu.max, rounded up). On a machine whose CPUs other busy "
		"programs share, fewer reactors than CPUs can be faster: each "
		"reactor then finds more work per wake-up (bench/README.md)." },
	{ .name = "myhostname", CUSTOM(set_domain, dump_string),
	  F(myhostname), .def = NULL,
	  .values = "a domain name: letters, digits and hyphens in labels of "
		"1..63 bytes, at most 253 bytes, no trailing dot",
	  .doc = "The name this server uses in its greeting and EHLO reply, "
		"in Received: headers and in bounces. The default is the "
		"system host name (gethostname()); if that is not a valid "
		"domain name the daemon refuses to start until this key is "
		"set." },
	{ .name = "mynetworks", CUSTOM(set_mynetworks, dump_mynetworks),
	  .is_empty_ok = true, .def = "127.0.0.0/8 [::1]/128",
	  .values = "CIDR blocks separated by commas and/or blanks: "
		"a.b.c.d/N (N 0..32) or [IPv6]/N (N 0..128), host bits zero; "
		"without /N a single host; empty = nobody; at most 1024",
	  .doc = "Clients trusted to relay mail to any destination. An IPv4 "
		"client seen on a dual-stack socket as ::ffff:a.b.c.d is "
		"matched against the IPv4 entries only. Every address listed "
		"here can use the server as a relay: keep it to your own "
		"hosts." },
	{ .name = "relay_domains", CUSTOM(set_relay_domains, dump_relay_domains),
	  .is_empty_ok = true, .def = "",
	  .values = "domain names separated by commas and/or blanks, each with "
		"an optional :list, :verify or :any; .example.com matches every "
		"subdomain of example.com but not example.com itself; case is "
		"ignored; at most 1024",
	  .doc = "Destination domains any client may send mail to through "
		"this server (it is their MX or backup MX). Empty by default: "
		"only mynetworks may relay, so the server is never an open "
		"relay out of the box. The suffix says which recipients of the "
		"domain RCPT accepts, from every client: list, those in "
		"relay_recipients (others get 550 5.1.1); verify, those the "
		"next hop accepts (the probe arrives with the delivery engine; "
		"until then verify accepts every recipient); any, every "
		"recipient. Without a suffix: list when relay_recipients is "
		"set, else verify when verify_recipients = yes, else any." },
	{ .name = "relay_recipients", .kind = K_PATH, F(relay_recipients),
	  .is_empty_ok = true, .def = "",
	  .values = "a file path, or empty; a relay_domains entry with :list "
		"needs it",
	  .doc = "File of the valid recipients in relay_domains: one "
		"local@domain or @domain (every address of the domain) per "
		"line, # comments; case is ignored and anything after the "
		"address on a line too, so Postfix source files load as they "
		"are. Read at start (a bad line stops the daemon with "
		"FILE:LINE) and again on SIGHUP (a bad file then keeps the old "
		"table). Empty: none." },
	{ .name = "verify_recipients", .kind = K_BOOL, F(verify_recipients),
	  .names = bool_names, .def = "no",
	  .values = "yes or no",
	  .doc = "Default of relay_domains entries without a suffix when "
		"relay_recipients is empty: yes makes them verify (ask the "
		"next hop with a cached RCPT probe before accepting), no makes "
		"them any." },
	{ .name = "relayhost", CUSTOM(set_relayhost, dump_relayhost),
	  .is_empty_ok = true, .def = "",
	  .values = "empty, host, host:port, [host] or [host]:port; host is "
		"a domain name, or in brackets also a.b.c.d or IPv6; port "
		"1..65535, default 25",
	  .doc = "Smarthost that receives all outbound mail. As in Postfix, "
		"a name in brackets is used as is, without an MX lookup. "
		"Empty: deliver to each destination's MX hosts." },
	{ .name = "transport_map", .kind = K_PATH, F(transport_map),
	  .is_empty_ok = true, .def = "",
	  .values = "a file path, or empty",
	  .doc = "File that routes destination domains to next hops, before "
		"relayhost and MX lookup: one DOMAIN NEXTHOP per line, # "
		"comments. DOMAIN is example.com, .example.com (its "
		"subdomains; the closest wins) or * (everything else). NEXTHOP "
		"is smtp:[host] or smtp:[host]:port (no MX lookup), "
		"smtp:host[:port] (MX lookup), lmtp:host[:port] (LMTP, port "
		"24, no MX lookup) or lmtp:unix:/path; host in brackets may "
		"be an IP address, IPv6 as [IPv6:2001:db8::1]. Read at start "
		"and on SIGHUP, as relay_recipients. Empty: none." },
	{ .name = "message_size_limit", .kind = K_BYTES,
	  F(message_size_limit), .min = KIB, .max = TIB, .def = "10240000",
	  .values = "a size in bytes, 1k..1T, with an optional k, M, G or T "
		"suffix (powers of 1024)",
	  .doc = "Largest message accepted, announced as EHLO SIZE (RFC "
		"1870); a larger one is refused with 552." },
	{ .name = "recipient_limit", .kind = K_UINT, F(recipient_limit),
	  .min = 100, .max = 100000, .def = "1000",
	  .min_why = "RFC 5321 4.5.3.1.8 requires 100",
	  .values = "100..100000",
	  .doc = "Most RCPT TO commands accepted in one transaction; the "
		"next ones get 452 (RFC 5321 4.5.3.1.10)." },
	{ .name = "line_length_limit", .kind = K_SIZE, F(line_length_limit),
	  .min = CONF_MIN_LINE_LENGTH, .max = 65536, .def = "2048",
	  .min_why = "RFC 5321 4.5.3.1.4 command line length",
	  .values = "512..65536 bytes",
	  .doc = "Longest line accepted, CRLF included, for commands and for "
		"message text. The excess of a longer line is skipped up to "
		"its LF and the command or message is refused." },
	{ .name = "smtpd_timeout", .kind = K_MS, F(smtpd_timeout_ms),
	  .min = MS_SEC, .max = MS_HOUR, .def = "300s",
	  .values = DURATION_VALUES("1s..1h"),
	  .doc = "How long the server waits for the client's next command or "
		"data before it says 421 and closes (RFC 5321 4.5.3.2.7 asks "
		"for at least 5 minutes)." },
	{ .name = "max_connections", .kind = K_UINT, F(max_connections),
	  .min = 1, .max = 1000000, .def = "10000", .values = "1..1000000",
	  .doc = "Most inbound sessions open at once in the whole daemon; "
		"further clients get 421 and are closed." },
	{ .name = "max_connections_per_ip", .kind = K_UINT,
	  F(max_connections_per_ip), .min = 1, .max = 1000000, .def = "100",
	  .values = "1..1000000",
	  .doc = "Most inbound sessions open at once from one client "
		"address; further ones get 421 and are closed." },
	{ .name = "smtpd_error_limit", .kind = K_UINT, F(smtpd_error_limit),
	  .min = 1, .max = 1000, .def = "10", .values = "1..1000",
	  .doc = "Errors one session may cause (bad commands, refused "
		"recipients) before it gets 421 and is closed." },
	{ .name = "user", CUSTOM(set_user, NULL), F(user), .def = "ringmta",
	  .values = "a login name: a-z or _ then a-z, 0-9, _ or -, at most "
		"32 bytes; not root",
	  .doc = "Account the daemon switches to after binding its sockets, "
		"when started as root. Ignored when not started as root." },
	{ .name = "log", .kind = K_ENUM, F(log), .names = log_names,
	  .def = "stderr", .values = "stderr or syslog",
	  .doc = "Where log lines go: standard error (a terminal, or the "
		"journal under systemd) or syslog with facility mail." },
	{ .name = "durability", .kind = K_ENUM, F(durability),
	  .names = durability_names, .def = "batch",
	  .values = "batch or none",
	  .doc = "batch: a message reaches the disk (fsync, shared with the "
		"messages committed at the same time) before the 250 reply. "
		"none: never fsync; a crash or power loss loses accepted "
		"mail. none is a relaxed mode for benchmarks, never for "
		"production." },
	{ .name = "fsync_rate_limit", .kind = K_UINT, F(fsync_rate_limit),
	  .min = 0, .max = 1000000, .def = "1500",
	  .values = "0..1000000 (0 = no limit)",
	  .doc = "Most group-commit fsyncs a second, over all reactors "
		"(durability = batch). A reactor whose batch is ready waits "
		"for the next free slot; the messages that end meanwhile share "
		"its fsync. Some virtual disks stall the whole guest for "
		"10-15 ms when flushed more often (measured on the "
		"development VM above about 2,000 flushes a second), which no "
		"latency goal survives; fewer, larger flushes avoid that at "
		"the cost of up to 1/limit seconds of extra end-of-data "
		"latency per reactor. 0: each reactor starts its next fsync "
		"as soon as the last one ends (bare metal, NVMe)." },
	{ .name = "spool_map_size", .kind = K_BYTES, F(spool_map_size),
	  .min = MIB, .max = 16 * TIB, .def = "1G",
	  .values = "a size, 1M..16T, with an optional k, M, G or T suffix",
	  .doc = "Size of the LMDB map that indexes the spool: the most the "
		"index file may grow to. When it is full new mail gets a "
		"temporary 452." },
	{ .name = "spool_segment_size", .kind = K_BYTES,
	  F(spool_segment_size), .min = MIB, .max = 4 * GIB, .def = "64M",
	  .values = "a size, 1M..4G, with an optional k, M, G or T suffix",
	  .doc = "Size of one spool segment file, to which message data is "
		"appended; when one is full the next is started." },
	{ .name = "spool_sweep_interval", .kind = K_MS, F(spool_sweep_interval_ms),
	  .min = MS_SEC, .max = MS_HOUR, .def = "60s",
	  .values = DURATION_VALUES("1s..1h"),
	  .doc = "How often each reactor removes the spool segments no queued "
		"message needs any more, and copies the few deferred or held "
		"messages that keep old segments alive into the current one "
		"(README: The spool). Each run blocks its reactor for an unlink "
		"and a directory fsync per segment removed and reads at most "
		"8 MiB." },
	{ .name = "spool_preallocate", .kind = K_BYTES,
	  F(spool_preallocate), .min = 0, .max = GIB, .def = "4M",
	  .values = "a size, 0..1G, with an optional k, M, G or T suffix (0 = off)",
	  .doc = "How far past its last record the open segment is kept "
		"zero-filled (in 256 KiB writes after a group commit, once half "
		"of this lead is used). Records then land in blocks that already "
		"exist inside the file's size, so most fdatasyncs flush data "
		"only, with no inode or block-map write: on the development VM's "
		"ext4 the flush took 0.12 ms instead of 0.19-0.27 ms and the "
		"daemon about 5 % less CPU per message (bench/README.md). It "
		"costs one extra write of each segment's space. 0: segments grow "
		"by appending (choose it on copy-on-write filesystems such as "
		"btrfs or ZFS, where it cannot help)." },

	{ .name = "delivery", .kind = K_BOOL, F(is_delivery),
	  .names = bool_names, .def = "yes", .values = "yes or no",
	  .doc = "Deliver queued mail. no: accept and queue only (an "
		"accept-only benchmark, or holding everything while the next "
		"hop is down); the queue is delivered once this is yes again." },
	{ .name = "smtp_tcp_port", .kind = K_UINT, F(smtp_tcp_port), .min = 1,
	  .max = 65535, .def = "25", .values = "1..65535",
	  .doc = "Outbound: the TCP port of MX hosts, and of next hops "
		"given without a port." },
	{ .name = "smtp_command_timeout", .kind = K_MS,
	  F(smtp_command_timeout_ms), .min = MS_SEC, .max = MS_HOUR,
	  .def = "5m", .values = DURATION_VALUES("1s..1h"),
	  .doc = "Outbound: how long to wait for each reply (greeting, "
		"EHLO, MAIL, RCPT, DATA, end of data: RFC 5321 4.5.3.2 asks "
		"for at least 5 minutes, 10 for the end of data, which gets "
		"twice this value) and for each block of the body to be "
		"sent." },
	{ .name = "bounce_size_limit", .kind = K_BYTES,
	  F(bounce_size_limit), .min = 0, .max = 1ULL << 30, .def = "50k",
	  .values = "a size, 0..1G, with an optional k, M, G suffix",
	  .doc = "A bounce returns at most this much of the original message "
		"(RET=FULL); a larger one is returned as its headers only." },
	{ .name = "verify_positive_ttl", .kind = K_MS,
	  F(verify_positive_ttl_ms), .min = MS_SEC, .max = 100 * MS_DAY,
	  .def = "1h", .values = DURATION_VALUES("1s..100d"),
	  .doc = "verify_recipients: how long a recipient the next hop "
		"accepted is remembered as valid." },
	{ .name = "verify_timeout", .kind = K_MS,
	  F(verify_timeout_ms), .min = MS_SEC, .max = 10 * MS_MIN,
	  .def = "10s", .values = DURATION_VALUES("1s..10m"),
	  .doc = "verify_recipients: how long an RCPT waits for the next "
		"hop's answer before it gets 450 4.1.1 (the probe goes on and "
		"its answer is remembered for the client's retry)." },
	{ .name = "verify_negative_ttl", .kind = K_MS,
	  F(verify_negative_ttl_ms), .min = MS_SEC, .max = 100 * MS_DAY,
	  .def = "5m", .values = DURATION_VALUES("1s..100d"),
	  .doc = "verify_recipients: how long a recipient the next hop "
		"refused (5xx) is remembered as unknown. Temporary answers "
		"are never remembered." },
	/* parsed and validated now, used by later issues */
	{ .name = "dns_servers", CUSTOM(set_dns_servers, dump_dns_servers),
	  .is_empty_ok = true, .def = "",
	  .values = "IP addresses separated by commas and/or blanks: "
		"a.b.c.d[:port], [IPv6][:port] or IPv6; port default 53; at "
		"most 8",
	  .doc = "Recursive DNS resolvers to ask. Empty: the nameserver "
		"lines of resolv_conf." },
	{ .name = "resolv_conf", .kind = K_PATH, F(resolv_conf),
	  .is_empty_ok = true, .def = "/etc/resolv.conf",
	  .values = "a file path; empty only when dns_servers is set",
	  .doc = "File whose nameserver lines are used when dns_servers is "
		"empty." },
	{ .name = "max_messages_per_connection", .kind = K_UINT,
	  F(max_messages_per_connection), .min = 1,
	  .max = 100000, .def = "100", .values = "1..100000",
	  .doc = "Outbound: most messages sent over one SMTP connection "
		"before it is closed and a new one opened." },
	{ .name = "pipelining_next", .kind = K_BOOL, F(is_pipelining_next),
	  .names = bool_names, .def = "yes", .values = "yes or no",
	  .doc = "Outbound, to next hops that offer PIPELINING: send the next "
		"message's MAIL, RCPT and DATA commands in the same packet as "
		"the previous message's end of data, without waiting for its "
		"reply (RFC 2920 3.1 allows message content to start a group of "
		"commands). Saves one round trip per message on a reused "
		"connection. no: wait for each end-of-data reply first." },
	{ .name = "destination_concurrency_limit", .kind = K_UINT,
	  F(destination_concurrency_limit), .min = 1,
	  .max = 10000, .def = "20", .values = "1..10000",
	  .doc = "Outbound: most connections open at once to one "
		"destination (a next hop, or the MX host set that serves a "
		"domain), counted across every reactor." },
	{ .name = "destination_rate_limit", CUSTOM(set_rate, dump_rate),
	  .def = "0",
	  .values = "0 (no limit) or N/DURATION such as 100/1m or 5/s; N "
		"1..1000000, DURATION 1s..1d",
	  .doc = "Outbound: most messages started to one destination per "
		"time window; the others wait in the queue. Each reactor takes "
		"an equal share (at least 1 per window)." },
	{ .name = "destination_recipient_limit", .kind = K_UINT,
	  F(destination_recipient_limit), .min = 1,
	  .max = 100000, .def = "50", .values = "1..100000",
	  .doc = "Outbound: most recipients in one transaction; a message "
		"with more is sent in several transactions." },
	{ .name = "connect_timeout", .kind = K_MS, F(connect_timeout_ms),
	  .min = MS_SEC, .max = 10 * MS_MIN, .def = "30s",
	  .values = DURATION_VALUES("1s..10m"),
	  .doc = "Outbound: how long a TCP connection attempt may take before "
		"the next address is tried." },
	{ .name = "connection_idle_timeout", .kind = K_MS,
	  F(connection_idle_timeout_ms), .min = 0,
	  .max = MS_HOUR, .def = "5s", .values = DURATION_VALUES("0..1h"),
	  .doc = "Outbound: how long an idle connection stays open for the "
		"next message to the same destination; 0 closes it after "
		"the last message." },
	{ .name = "retry_schedule", CUSTOM(set_retry, dump_retry),
	  .def = "5m 10m 20m 40m 1h",
	  .values = "1 to 32 durations (1s..1d each) separated by commas "
		"and/or blanks",
	  .doc = "Delays before the retries of a deferred message: retry n "
		"waits the n-th value, and every retry after the list waits "
		"the last one, until maximal_queue_lifetime." },
	{ .name = "maximal_queue_lifetime", .kind = K_MS,
	  F(maximal_queue_lifetime_ms), .min = 0,
	  .max = 100 * MS_DAY, .def = "5d", .values = DURATION_VALUES("0..100d"),
	  .doc = "How long a message may stay deferred before it is returned "
		"to the sender (RFC 5321 4.5.4.1: give up after 4-5 days). 0: "
		"one attempt only; a temporary failure bounces at once." },
	{ .name = "delay_warning_time", .kind = K_MS,
	  F(delay_warning_time_ms), .min = 0,
	  .max = 100 * MS_DAY, .def = "0", .values = DURATION_VALUES(
		"0..100d; below maximal_queue_lifetime"),
	  .doc = "Deferred this long, a message's sender gets a delay "
		"notice (an RFC 3464 DSN, Action: delayed), once, at the first "
		"retry after this time, unless NOTIFY says otherwise. 0: never." },
	{ .name = "tls_cert_file", .kind = K_PATH, F(tls_cert_file),
	  .is_later = true, .is_empty_ok = true, .def = "",
	  .values = "a PEM file path, or empty; needs tls_key_file",
	  .doc = "Certificate chain for TLS: smtps listeners now, STARTTLS "
		"later. Empty: no TLS." },
	{ .name = "tls_key_file", .kind = K_PATH, F(tls_key_file),
	  .is_later = true, .is_empty_ok = true, .def = "",
	  .values = "a PEM file path, or empty; needs tls_cert_file",
	  .doc = "Private key of tls_cert_file." },
};
static const size_t conf_n_keys = sizeof(conf_keys) / sizeof(conf_keys[0]);

_Static_assert(sizeof(conf_keys) / sizeof(conf_keys[0]) <= MAX_KEYS,
	       "raise MAX_KEYS");
/* K_ENUM fields are written through an unsigned pointer. */
_Static_assert(sizeof(enum conf_log) == sizeof(unsigned) &&
	       sizeof(enum conf_durability) == sizeof(unsigned),
	       "K_ENUM needs unsigned-sized enums");

/* ---- parsing ----------------------------------------------------------- */

/* key_find - the table row for (name, len), or NULL. */
static const struct conf_key *key_find(const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < conf_n_keys; i++)
		if (token_is(name, len, conf_keys[i].name))
			return &conf_keys[i];
	return NULL;
}

/*
 * check_bytes - refuse control bytes and non-ASCII outside comments; the
 * column is counted from line, the start of the line or override.
 */
static int check_bytes(struct pctx *p, const char *line, const char *s,
		       size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if ((ch < 0x20 && ch != '\t') || ch >= 0x7f)
			return pfail(p, "invalid byte 0x%02x at column %zu", ch,
				     (size_t)(s - line) + i + 1);
	}
	return 0;
}

/* apply - set one key from a file line or an override. */
static int apply(struct conf *c, struct pctx *p, const char *key, size_t klen,
		 const char *v, size_t vlen)
{
	char buf[SAMPLE_BYTES * 4 + 1];
	const struct conf_key *k;
	size_t idx;
	int rc;

	if (klen == 0)
		return pfail(p, "missing key before '='");
	if ((k = key_find(key, klen)) == NULL)
		return pfail(p, "unknown key \"%s\"",
			     sample(buf, sizeof(buf), key, klen));
	idx = (size_t)(k - conf_keys);
	p->key = k->name;
	if (p->seen[idx] && !k->is_repeatable) {
		if (p->name)
			return pfail(p, "given twice (first on line %u)",
				     p->seen[idx]);
		return pfail(p, "given twice");
	}
	if (vlen == 0 && !k->is_empty_ok)
		return pfail(p, "empty value");
	p->is_first = p->seen[idx] == 0;
	if ((rc = set_generic(c, k, v, vlen, p)) < 0)
		return rc;
	p->seen[idx] = p->line;
	p->key = NULL;
	return 0;
}

/* parse_line - one line (without its LF) of a file. */
static int parse_line(struct conf *c, struct pctx *p, const char *s,
		      size_t len)
{
	const char *key, *eq, *v, *line = s;
	size_t klen, vlen;
	int rc;

	if (len > CONF_MAX_LINE_BYTES)
		return pfail(p, "line longer than %d bytes", CONF_MAX_LINE_BYTES);
	if (len && s[len - 1] == '\r')
		len--;
	trim(&s, &len);
	if (len == 0 || s[0] == '#')
		return 0;
	if ((rc = check_bytes(p, line, s, len)) < 0)
		return rc;
	if ((eq = memchr(s, '=', len)) == NULL)
		return pfail(p, "missing '=' (lines are key = value)");
	key = s;
	klen = (size_t)(eq - s);
	trim(&key, &klen);
	v = eq + 1;
	vlen = (size_t)(s + len - v);
	trim(&v, &vlen);
	return apply(c, p, key, klen, v, vlen);
}

int conf_parse_text(struct conf *c, const char *name, const char *text,
		    size_t len, struct rm_err *err)
{
	struct pctx p = { .name = name ? name : "(text)", .err = err };
	const char *s = text, *end = text + len, *nl;
	int rc;

	if (len > CONF_MAX_FILE_BYTES)
		return rm_err_set(err, -EFBIG, "conf: %s: larger than %d bytes",
				  p.name, CONF_MAX_FILE_BYTES);
	while (s < end) {
		nl = memchr(s, '\n', (size_t)(end - s));
		p.line++;
		rc = parse_line(c, &p, s, (size_t)((nl ? nl : end) - s));
		if (rc < 0)
			return rc;
		s = nl ? nl + 1 : end;
	}
	return 0;
}

int conf_parse_file(struct conf *c, const char *path, struct rm_err *err)
{
	size_t len = 0;
	ssize_t n;
	char *buf;
	int fd, rc;

	if ((buf = malloc(CONF_MAX_FILE_BYTES + 1)) == NULL)
		return rm_err_set(err, -ENOMEM, "conf: %s: out of memory", path);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		rc = -errno;
		free(buf);
		return rm_err_set(err, rc, "conf: open %s: %s", path,
				  strerror(-rc));
	}
	while (len <= CONF_MAX_FILE_BYTES) {
		n = read(fd, buf + len, CONF_MAX_FILE_BYTES + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			close(fd);
			free(buf);
			return rm_err_set(err, rc, "conf: read %s: %s", path,
					  strerror(-rc));
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	rc = conf_parse_text(c, path, buf, len, err);
	free(buf);
	return rc;
}

int conf_override(struct conf *c, char *const *overrides, size_t n,
		  struct rm_err *err)
{
	struct pctx p = { .err = err };
	const char *s, *key, *eq;
	size_t i, len, klen;
	int rc;

	for (i = 0; i < n; i++) {
		s = overrides[i];
		len = strlen(s);
		p.ov = s;
		p.ov_len = len;
		p.line = (unsigned)i + 1;
		if ((rc = check_bytes(&p, s, s, len)) < 0)
			return rc;
		if ((eq = memchr(s, '=', len)) == NULL)
			return pfail(&p, "missing '=' (use -o key=value)");
		key = s;
		klen = (size_t)(eq - s);
		trim(&key, &klen);
		s = eq + 1;
		len = strlen(s);
		trim(&s, &len);
		if ((rc = apply(c, &p, key, klen, s, len)) < 0)
			return rc;
	}
	return 0;
}

/* ---- whole configuration ----------------------------------------------- */

int conf_defaults(struct conf *c, struct rm_err *err)
{
	struct pctx p = { .name = "(defaults)", .err = err };
	char host[256];
	size_t i;
	int rc;

	memset(c, 0, sizeof(*c));
	for (i = 0; i < conf_n_keys; i++) {
		if (conf_keys[i].def == NULL)
			continue;
		p.line = (unsigned)i + 1;
		rc = apply(c, &p, conf_keys[i].name, strlen(conf_keys[i].name),
			   conf_keys[i].def, strlen(conf_keys[i].def));
		if (rc == -ENOMEM) {
			conf_fini(c);
			return rc;
		}
		if (rc < 0)
			rm_panic("conf: bad built-in default: %s",
				 err ? err->msg : conf_keys[i].name);
	}
	if (gethostname(host, sizeof(host)) == 0) {
		host[sizeof(host) - 1] = '\0';
		if (domain_why(host, strlen(host)) == NULL)
			memcpy(c->myhostname, host, strlen(host) + 1);
	}
	return 0;
}

int conf_check(const struct conf *c, struct rm_err *err)
{
	size_t i;

	if (c->myhostname[0] == '\0')
		return rm_err_set(err, -EINVAL, "conf: myhostname: the system "
				  "host name is not a valid domain name; set "
				  "myhostname");
	if (c->n_listen == 0)
		return rm_err_set(err, -EINVAL, "conf: listen: no listener");
	if (!c->tls_cert_file[0] != !c->tls_key_file[0])
		return rm_err_set(err, -EINVAL, "conf: tls_cert_file and "
				  "tls_key_file must be set together");
	for (i = 0; i < c->n_listen; i++)
		if (c->listen[i].role == CONF_ROLE_SMTPS && !c->tls_cert_file[0])
			return rm_err_set(err, -EINVAL, "conf: listen %s smtps: "
					  "needs tls_cert_file and "
					  "tls_key_file", c->listen[i].text);
	if (c->n_dns_servers == 0 && c->resolv_conf[0] == '\0')
		return rm_err_set(err, -EINVAL, "conf: resolv_conf: empty while "
				  "dns_servers is empty");
	if (c->delay_warning_time_ms &&
	    c->delay_warning_time_ms >= c->maximal_queue_lifetime_ms)
		return rm_err_set(err, -EINVAL, "conf: delay_warning_time: not "
				  "below maximal_queue_lifetime");
	for (i = 0; i < c->n_relay_domains && !c->relay_recipients[0]; i++)
		if (c->relay_domain_policies[i] == CONF_RCPT_LIST)
			return rm_err_set(err, -EINVAL, "conf: relay_domains: "
					  "%s:list needs relay_recipients",
					  c->relay_domains[i]);
	return 0;
}

int conf_load(struct conf *c, const char *path_or_null,
	      char *const *overrides, size_t n_overrides, struct rm_err *err)
{
	int rc;

	if ((rc = conf_defaults(c, err)) < 0)
		return rc;
	if (path_or_null && (rc = conf_parse_file(c, path_or_null, err)) < 0)
		goto fail;
	if ((rc = conf_override(c, overrides, n_overrides, err)) < 0)
		goto fail;
	if ((rc = conf_check(c, err)) < 0)
		goto fail;
	return 0;
fail:
	conf_fini(c);
	return rc;
}

void conf_fini(struct conf *c)
{
	free(c->mynetworks);
	free_strings(c->relay_domains, c->n_relay_domains);
	free(c->relay_domain_policies);
	memset(c, 0, sizeof(*c));
}

/* ---- queries ----------------------------------------------------------- */

/* cidr_match - whether the first prefix bits of addr equal e's. */
static bool cidr_match(const struct conf_cidr *e, const uint8_t *addr)
{
	unsigned full = e->prefix / 8, rest = e->prefix % 8;
	uint8_t mask;

	if (memcmp(e->addr, addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	mask = (uint8_t)(0xff00 >> rest);
	return (addr[full] & mask) == e->addr[full];
}

bool conf_mynetworks_match(const struct conf *c, const struct sockaddr *sa)
{
	const uint8_t *addr;
	int family;
	size_t i;

	if (sa == NULL)
		return false;
	if (sa->sa_family == AF_INET) {
		family = AF_INET;
		addr = (const uint8_t *)&((const struct sockaddr_in *)
					  (const void *)sa)->sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 =
			&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
		family = AF_INET6;
		addr = (const uint8_t *)a6;
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			family = AF_INET;
			addr += 12;
		}
	} else {
		return false;
	}
	for (i = 0; i < c->n_mynetworks; i++)
		if (c->mynetworks[i].family == family &&
		    cidr_match(&c->mynetworks[i], addr))
			return true;
	return false;
}

/*
 * relay_domain_find - the index of the longest relay_domains entry that
 * domain matches, or -1: equal to "example.com", or a strict subdomain of
 * ".example.com" (no NUL in the part before the entry).
 */
static long relay_domain_find(const struct conf *c, const char *domain,
			      size_t len)
{
	size_t i, el, best_len = 0;
	long best = -1;

	for (i = 0; i < c->n_relay_domains; i++) {
		const char *e = c->relay_domains[i];
		el = strlen(e);
		if (el <= best_len)
			continue;
		if (e[0] == '.' ? len > el &&
				  strncasecmp(domain + len - el, e, el) == 0 &&
				  memchr(domain, '\0', len - el) == NULL
				: len == el && strncasecmp(domain, e, el) == 0) {
			best = (long)i;
			best_len = el;
		}
	}
	return best;
}

bool conf_relay_domain_match(const struct conf *c, const char *domain,
			     size_t len)
{
	return relay_domain_find(c, domain, len) >= 0;
}

enum conf_rcpt_policy conf_relay_domain_policy(const struct conf *c,
					       const char *domain, size_t len)
{
	long i = relay_domain_find(c, domain, len);

	if (i < 0)
		return CONF_RCPT_NONE;
	if (c->relay_domain_policies[i] != CONF_RCPT_DEFAULT)
		return c->relay_domain_policies[i];
	if (c->relay_recipients[0])
		return CONF_RCPT_LIST;
	return c->verify_recipients ? CONF_RCPT_VERIFY : CONF_RCPT_ANY;
}

unsigned conf_cpu_quota_parse(const char *cpu_max)
{
	unsigned long long quota, period;
	char *end;

	/* "max 100000" (no limit) fails the first number and answers 0 */
	errno = 0;
	quota = strtoull(cpu_max, &end, 10);
	if (end == cpu_max || *end != ' ' || errno != 0)
		return 0;
	period = strtoull(end + 1, &end, 10);
	if (period == 0 || (*end != '\0' && *end != '\n') || errno != 0 || quota == 0)
		return 0;
	/* rounded up (1.5 CPUs keep 2 reactors busy), without overflow */
	quota = quota / period + (quota % period != 0);
	return quota > MAX_REACTORS ? MAX_REACTORS : (unsigned)quota;
}

/*
 * cgroup_cpu_quota - the tightest cgroup v2 cpu.max on the way from this
 * process's cgroup up to the root, in whole CPUs (rounded up); 0 = none
 * (no limit, cgroup v1, or nothing readable).
 */
static unsigned cgroup_cpu_quota(void)
{
	char line[512], path[600], buf[64];
	unsigned best = 0, q;
	FILE *f = fopen("/proc/self/cgroup", "re");
	char *dir = NULL, *slash;
	int fd;
	ssize_t n;

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "0::", 3) == 0) {
			line[strcspn(line, "\n")] = '\0';
			dir = line + 3;
			break;
		}
	fclose(f);
	if (dir == NULL || *dir != '/')
		return 0;
	for (;;) {
		snprintf(path, sizeof(path), "/sys/fs/cgroup%s/cpu.max", dir);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			n = read(fd, buf, sizeof(buf) - 1);
			close(fd);
			buf[n > 0 ? n : 0] = '\0';
			q = conf_cpu_quota_parse(buf);
			if (q != 0 && (best == 0 || q < best))
				best = q;
		}
		slash = strrchr(dir, '/');
		if (slash == NULL || slash == dir)
			break;
		*slash = '\0';
	}
	return best;
}

unsigned conf_reactor_count(const struct conf *c)
{
	cpu_set_t set;
	long n;
	unsigned quota;

	if (c->reactors)
		return c->reactors;
	/* The CPUs this process may use (taskset, a cpuset), not all those
	 * online; then a container's CPU quota. */
	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		n = CPU_COUNT(&set);
	else
		n = sysconf(_SC_NPROCESSORS_ONLN);
	quota = cgroup_cpu_quota();
	if (quota != 0 && quota < n)
		n = quota;
	if (n < 1)
		return 1;
	return n > MAX_REACTORS ? MAX_REACTORS : (unsigned)n;
}

/* ---- output ------------------------------------------------------------ */

int conf_dump(const struct conf *c, FILE *f)
{
	size_t i;

	for (i = 0; i < conf_n_keys; i++) {
		if (conf_keys[i].kind == K_CUSTOM && conf_keys[i].dump == NULL)
			dump_string(c, &conf_keys[i], f);
		else
			dump_generic(c, &conf_keys[i], f);
	}
	return ferror(f) ? -EIO : 0;
}

/*
 * wrap - text as lines of at most WRAP_COLUMNS: the first starts with
 * lead, the others with next.
 */
static void wrap(FILE *f, const char *lead, const char *next,
		 const char *text)
{
	size_t col = 0, w;
	const char *s = text;

	while (*s) {
		while (*s == ' ')
			s++;
		w = strcspn(s, " ");
		if (w == 0)
			break;
		if (col && col + 1 + w > WRAP_COLUMNS) {
			fputc('\n', f);
			col = 0;
		}
		if (col == 0) {
			fputs(lead, f);
			col = strlen(lead);
			lead = next;
		} else {
			fputc(' ', f);
			col++;
		}
		fwrite(s, 1, w, f);
		col += w;
		s += w;
	}
	if (col)
		fputc('\n', f);
}

int conf_write_example(FILE *f)
{
	const struct conf_key *k;
	size_t i;

	fputs("# ringmta.conf - the example configuration of ringmta.\n"
	      "#\n", f);
	wrap(f, "# ", "# ", "Every value below is the built-in default: the daemon "
	     "behaves the same with this file, with an empty file and with "
	     "no file. Lines are key = value; a line starting with # is a "
	     "comment; only listen may repeat. Override any key with -o "
	     "key=value. doc/CONFIG.md is the reference. This file is "
	     "generated by conf_write_example() in src/conf.c, and test_conf "
	     "fails when the two differ.");
	for (i = 0; i < conf_n_keys; i++) {
		k = &conf_keys[i];
		if (k->is_later && !conf_keys[i - 1].is_later) {
			fputs("\n# ---- parsed and checked now, used by later "
			      "releases ----\n", f);
		}
		fputc('\n', f);
		wrap(f, "# ", "# ", k->doc);
		fputs("#\n", f);
		wrap(f, "# Valid: ", "#        ", k->values);
		if (k->def == NULL)
			fprintf(f, "#%s = (the system host name)\n", k->name);
		else if (k->def[0] == '\0')
			fprintf(f, "%s =\n", k->name);
		else
			fprintf(f, "%s = %s\n", k->name, k->def);
	}
	return ferror(f) ? -EIO : 0;
}

/* md_text - text for a Markdown table cell: '*' and '|' escaped. */
static void md_text(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '*' || *s == '|')
			fputc('\\', f);
		fputc(*s, f);
	}
}

/* md_table - the reference table of the keys whose is_later is later. */
static void md_table(FILE *f, bool is_later)
{
	const struct conf_key *k;
	size_t i;

	fputs("| Key | Default | Valid values | Meaning |\n"
	      "|-----|---------|--------------|---------|\n", f);
	for (i = 0; i < conf_n_keys; i++) {
		k = &conf_keys[i];
		if (k->is_later != is_later)
			continue;
		fprintf(f, "| `%s` | ", k->name);
		if (k->def == NULL)
			fputs("the system host name", f);
		else if (k->def[0] == '\0')
			fputs("(empty)", f);
		else
			fprintf(f, "`%s`", k->def);
		fputs(" | ", f);
		md_text(f, k->values);
		fputs(" | ", f);
		md_text(f, k->doc);
		fputs(" |\n", f);
	}
}

int conf_write_reference(FILE *f)
{
	fputs("## Configuration\n\n"
	      "ringmta reads one file (`ringmta -c FILE`) of `key = value` "
	      "lines. A line whose first non-blank character is `#` is a "
	      "comment, and blank lines are ignored; a `#` after a value is "
	      "part of the value, as in Postfix. Blanks around the key, the "
	      "`=` and the value do not matter. Keys are lower case. Each "
	      "key may be given once, except `listen`, which repeats. An "
	      "unknown key, a bad value or a line longer than 65536 bytes "
	      "stops the daemon with `FILE:LINE: key: problem`.\n\n"
	      "`-o key=value` on the command line overrides the file after "
	      "it is read, as Postfix's `-o` does; its errors read `-o "
	      "key=value: key: problem`. `ringmta --check-config` checks a "
	      "configuration, and with `-v` prints the effective values.\n\n"
	      "Without a file, the built-in defaults apply. "
	      "`deploy/ringmta.conf` spells out exactly those defaults, with "
	      "comments. The defaults never make an open relay: `mynetworks` "
	      "is loopback only and `relay_domains` is empty.\n\n"
	      "Units: a duration is a number with `ms`, `s`, `m`, `h` or `d` "
	      "(no unit means seconds); a size is a number of bytes with an "
	      "optional `k`, `M`, `G` or `T` (powers of 1024). A list takes "
	      "commas and/or blanks between items.\n\n"
	      "### Keys\n\n", f);
	md_table(f, false);
	fputs("\n### Keys for later releases\n\n"
	      "These keys are parsed and checked now, so a configuration "
	      "written today keeps working, but the features that use them "
	      "arrive in later releases.\n\n", f);
	md_table(f, true);
	return ferror(f) ? -EIO : 0;
}
