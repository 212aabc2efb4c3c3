/*
 * maps - transport_map and relay_recipients: line parsers, the next-hop
 *        grammar, and lookups on the immutable tables they build.
 *
 * Owns: each parsed table (one heap object per map plus its arrays).
 * Must not: read files, log, lock, or touch clocks and sockets: the
 *   caller hands in the text (maps_live reads the files); keep pointers
 *   into the text it parses; change a table after its parser returned.
 * Interface: include/ringmta/maps.h
 * Limits: MAPS_MAX_LINE_BYTES per line; MAPS_*_MAX_FILE_BYTES and
 *   MAPS_*_MAX_ENTRIES per map; lookups copy at most 253 (domain) or 512
 *   (address) bytes to a stack buffer and read nothing past len.
 * Errors: -EINVAL "FILE:LINE: problem", -EFBIG, -ENOMEM (see maps.h).
 *   Nothing a file or a peer sends can make this module abort.
 * Standards: RFC 5321 4.1.2, 4.5.3.1 (address and domain lengths);
 *   RFC 1035 2.3.4, RFC 1123 2.1 (host names); RFC 2033 (LMTP); RFC 4291
 *   2.2 (IPv6 text); RFC 5321 4.1.3 (IPv6: address literal tag).
 *
 * Design: the transport map is small (domains), so its entries are sorted
 * by key and found with a binary search per candidate (exact, each
 * ".parent", then "*"): a handful of searches per lookup. relay_recipients
 * can hold millions of addresses, so it is an open-addressing hash table
 * (linear probing, load <= 1/2) of 64-bit slots, each holding 32 bits of
 * the hash and the offset of the key in one string block; a second table
 * of the same kind holds every domain that has an entry, so a lookup can
 * tell "unknown user" from "domain not in the table". Keys are stored
 * lower-cased, so a lookup lower-cases once and compares bytes.
 */
#include "ringmta/maps.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* SAMPLE_BYTES - how much of a bad token an error message quotes. */
#define SAMPLE_BYTES 64
/* DOMAIN_MAX - longest domain name (RFC 1035 2.3.4, no trailing dot). */
#define DOMAIN_MAX 253
/* LOCAL_MAX - longest local part (RFC 5321 4.5.3.1.1). */
#define LOCAL_MAX 64
/* ADDR_LOOKUP_MAX - longest address a lookup takes; a path holds 254
 * (RFC 5321 4.5.3.1.3), quoted local parts can be longer in the wild. */
#define ADDR_LOOKUP_MAX 512
/* MIN_SLOTS - smallest hash table (a power of two). */
#define MIN_SLOTS 16

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

/* has_prefix - whether (s, len) starts with the constant p (exact case). */
static bool has_prefix(const char *s, size_t len, const char *p)
{
	size_t pl = strlen(p);

	return len >= pl && memcmp(s, p, pl) == 0;
}

/* has_prefix_nocase - has_prefix, ignoring ASCII case. */
static bool has_prefix_nocase(const char *s, size_t len, const char *p)
{
	size_t i, pl = strlen(p);

	if (len < pl)
		return false;
	for (i = 0; i < pl; i++)
		if (lower(s[i]) != p[i])
			return false;
	return true;
}

/*
 * domain_why - why (d, len) is not a host name, or NULL when it is: LDH
 * labels of 1..63 bytes, no hyphen at a label's ends, 253 bytes in all,
 * no trailing dot, a top label that is not all digits (an IP address).
 */
static const char *domain_why(const char *d, size_t len)
{
	return len > DOMAIN_MAX ? "domain name longer than 253 bytes" : rm_domain_why(d, len);
}

/*
 * parse_ip - (t, len) as a dotted IPv4 (want 4), IPv6 (want 6) or either
 * (want 0) address, written canonically into out (INET6_ADDRSTRLEN).
 * Returns 4, 6, or 0 when it is not one.
 */
static int parse_ip(const char *t, size_t len, int want, char *out)
{
	char buf[INET6_ADDRSTRLEN + 1];
	unsigned char addr[16];

	if (len == 0 || len >= sizeof(buf))
		return 0;
	memcpy(buf, t, len);
	buf[len] = '\0';
	if (want != 6 && inet_pton(AF_INET, buf, addr) == 1) {
		inet_ntop(AF_INET, addr, out, INET6_ADDRSTRLEN);
		return 4;
	}
	if (want != 4 && inet_pton(AF_INET6, buf, addr) == 1) {
		inet_ntop(AF_INET6, addr, out, INET6_ADDRSTRLEN);
		return 6;
	}
	return 0;
}

/* ---- lines ------------------------------------------------------------- */

/* struct lines - a walk over the lines of one map text. */
struct lines {
	const char *name;
	const char *s, *end;
	unsigned line;
	struct rm_err *err;
};

static int lfail(const struct lines *L, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* lfail - fill L->err with "NAME:LINE: message"; returns -EINVAL. */
static int lfail(const struct lines *L, const char *fmt, ...)
{
	char msg[RM_ERR_MSG_BYTES];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return rm_err_set(L->err, -EINVAL, "%s:%u: %s", L->name, L->line, msg);
}

/* sample - a bad token made printable and short enough to quote. */
static const char *sample(char *buf, size_t cap, const char *v, size_t len)
{
	return rm_printable(buf, cap, v, len, SAMPLE_BYTES);
}

/*
 * next_line - the next line that holds an entry, trimmed, in (*ls, *ll).
 * Returns 1, 0 at the end of the text, or lfail() for a line that is too
 * long or holds a control byte.
 */
static int next_line(struct lines *L, const char **ls, size_t *ll)
{
	const char *start, *s, *nl;
	size_t len, i;

	while (L->s < L->end) {
		start = s = L->s;
		nl = memchr(s, '\n', (size_t)(L->end - s));
		len = (size_t)((nl ? nl : L->end) - s);
		L->s = nl ? nl + 1 : L->end;
		L->line++;
		if (len > MAPS_MAX_LINE_BYTES)
			return lfail(L, "line longer than %d bytes",
				     MAPS_MAX_LINE_BYTES);
		if (len && s[len - 1] == '\r')
			len--;
		while (len && is_blank(*s)) {
			s++;
			len--;
		}
		while (len && is_blank(s[len - 1]))
			len--;
		if (len == 0 || s[0] == '#')
			continue;
		for (i = 0; i < len; i++) {
			unsigned char ch = (unsigned char)s[i];
			if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
				return lfail(L, "invalid byte 0x%02x at column "
					     "%zu", ch, (size_t)(s - start) + i + 1);
		}
		*ls = s;
		*ll = len;
		return 1;
	}
	return 0;
}

/* token - split (s, len) at the first blank: the token, then the rest
 * with its leading blanks skipped. */
static void token(const char *s, size_t len, size_t *tl, const char **rest,
		  size_t *rl)
{
	size_t i = 0;

	while (i < len && !is_blank(s[i]))
		i++;
	*tl = i;
	while (i < len && is_blank(s[i]))
		i++;
	*rest = s + i;
	*rl = len - i;
}

/* ---- next hops --------------------------------------------------------- */

/* parse_port - ":N" (1..65535) at (s, len), or the default when len is 0. */
static int parse_port(const char *s, size_t len, unsigned def, uint16_t *port,
		      const char **why)
{
	unsigned n = 0;
	size_t i;

	if (len == 0) {
		*port = (uint16_t)def;
		return 0;
	}
	if (s[0] != ':' || len < 2 || len > 6) {
		*why = "port is not 1..65535";
		return -EINVAL;
	}
	for (i = 1; i < len; i++) {
		if (!is_digit(s[i])) {
			*why = "port is not 1..65535";
			return -EINVAL;
		}
		n = n * 10 + (unsigned)(s[i] - '0');
	}
	if (n < 1 || n > 65535) {
		*why = "port is not 1..65535";
		return -EINVAL;
	}
	*port = (uint16_t)n;
	return 0;
}

/* set_host - a validated domain name into r->host, lower-cased. */
static void set_host(struct maps_route *r, const char *h, size_t hl)
{
	size_t i;

	for (i = 0; i < hl; i++)
		r->host[i] = lower(h[i]);
	r->host[hl] = '\0';
}

/* bracket_host - "[...]" at the start of (s, len): the host inside, then
 * the rest after ']'. */
static int bracket_host(struct maps_route *r, const char *s, size_t len,
			const char **rest, const char **why)
{
	const char *close = memchr(s, ']', len), *h = s + 1, *w;
	size_t hl;

	if (close == NULL) {
		*why = "missing ']'";
		return -EINVAL;
	}
	hl = (size_t)(close - h);
	*rest = close + 1;
	if (has_prefix_nocase(h, hl, "ipv6:")) {
		if (parse_ip(h + 5, hl - 5, 6, r->host) != 6) {
			*why = "bad IPv6 address";
			return -EINVAL;
		}
		r->is_ip = true;
		return 0;
	}
	if (parse_ip(h, hl, 0, r->host) != 0) {
		r->is_ip = true;
		return 0;
	}
	if ((w = domain_why(h, hl)) != NULL) {
		*why = hl && memchr(h, ':', hl) ? "bad IPv6 address" : w;
		return -EINVAL;
	}
	set_host(r, h, hl);
	return 0;
}

/* plain_host - an unbracketed host up to ':' or the end. */
static int plain_host(struct maps_route *r, const char *s, size_t len,
		      const char **rest, const char **why)
{
	const char *colon = memchr(s, ':', len), *w;
	size_t hl = (size_t)((colon ? colon : s + len) - s);

	*rest = s + hl;
	if (hl == 0) {
		*why = "empty host";
		return -EINVAL;
	}
	if (r->proto == MAPS_LMTP && parse_ip(s, hl, 4, r->host) == 4) {
		r->is_ip = true;
		return 0;
	}
	if ((w = domain_why(s, hl)) != NULL) {
		if (parse_ip(s, hl, 4, r->host) == 4)
			w = "an IP address needs brackets: smtp:[a.b.c.d]";
		*why = w;
		return -EINVAL;
	}
	set_host(r, s, hl);
	return 0;
}

/* unix_path - "unix:/abs/path" after "lmtp:". */
static int unix_path(struct maps_route *r, const char *p, size_t pl,
		     const char **why)
{
	size_t i;

	if (pl == 0 || p[0] != '/') {
		*why = "unix socket path is not absolute";
		return -EINVAL;
	}
	if (pl >= MAPS_PATH_BYTES) {
		*why = "unix socket path longer than 107 bytes";
		return -EINVAL;
	}
	for (i = 0; i < pl; i++) {
		unsigned char ch = (unsigned char)p[i];
		if (ch <= 0x20 || ch == 0x7f) {
			*why = "invalid byte in unix socket path";
			return -EINVAL;
		}
	}
	memcpy(r->path, p, pl);
	r->path[pl] = '\0';
	r->is_unix = true;
	return 0;
}

int maps_nexthop_parse(const char *s, size_t len, struct maps_route *out,
		       const char **why)
{
	const char *end = s + len, *rest;
	unsigned def;
	int rc;

	memset(out, 0, sizeof(*out));
	if (has_prefix(s, len, "smtp:")) {
		out->proto = MAPS_SMTP;
		def = MAPS_SMTP_PORT;
	} else if (has_prefix(s, len, "lmtp:")) {
		out->proto = MAPS_LMTP;
		def = MAPS_LMTP_PORT;
	} else {
		*why = "next hop is not smtp:... or lmtp:...";
		return -EINVAL;
	}
	s += 5;
	len -= 5;
	if (len == 0) {
		*why = "empty next hop after the transport";
		return -EINVAL;
	}
	if (out->proto == MAPS_LMTP && has_prefix(s, len, "unix:"))
		return unix_path(out, s + 5, len - 5, why);
	if (out->proto == MAPS_LMTP && has_prefix(s, len, "inet:")) {
		s += 5;
		len -= 5;
	}
	if (len && s[0] == '[')
		rc = bracket_host(out, s, len, &rest, why);
	else
		rc = plain_host(out, s, len, &rest, why);
	if (rc < 0)
		return rc;
	out->is_mx = out->proto == MAPS_SMTP && s[0] != '[';
	return parse_port(rest, (size_t)(end - rest), def, &out->port, why);
}

char *maps_route_format(const struct maps_route *r, char *buf, size_t cap)
{
	const char *proto = r->proto == MAPS_LMTP ? "lmtp" : "smtp";

	if (cap == 0)
		return buf;
	if (r->is_unix)
		snprintf(buf, cap, "lmtp:unix:%s", r->path);
	else if (r->is_mx)
		snprintf(buf, cap, "%s:%s:%u", proto, r->host, r->port);
	else if (r->is_ip && strchr(r->host, ':'))
		snprintf(buf, cap, "%s:[IPv6:%s]:%u", proto, r->host, r->port);
	else
		snprintf(buf, cap, "%s:[%s]:%u", proto, r->host, r->port);
	return buf;
}

/* ---- transport map ----------------------------------------------------- */

/* struct tentry - one route. While the file is parsed key is NULL and
 * key_off locates the key in maps_transport.keys (which may still move);
 * after the last line key points there for good. */
struct tentry {
	const char *key;
	uint32_t key_off;
	uint32_t line;
	struct maps_route route;
};

struct maps_transport {
	struct tentry *entries;      /* sorted by key */
	size_t n, cap;
	char *keys;                  /* NUL-terminated lower-case keys */
	size_t keys_len, keys_cap;
	bool has_default;
	unsigned default_line;
	struct maps_route def;       /* the "*" route */
};

void maps_transport_free(struct maps_transport *t)
{
	if (t == NULL)
		return;
	free(t->entries);
	free(t->keys);
	free(t);
}

size_t maps_transport_count(const struct maps_transport *t)
{
	return t ? t->n + t->has_default : 0;
}

/* transport_add - append one entry with key (already lower-cased). */
static int transport_add(struct maps_transport *t, struct lines *L,
			 const char *key, size_t kl,
			 const struct maps_route *r)
{
	if (t->n == MAPS_TRANSPORT_MAX_ENTRIES)
		return lfail(L, "more than %d entries",
			     MAPS_TRANSPORT_MAX_ENTRIES);
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		struct tentry *e = realloc(t->entries, cap * sizeof(*e));
		if (e == NULL)
			return -ENOMEM;
		t->entries = e;
		t->cap = cap;
	}
	if (t->keys_len + kl + 1 > t->keys_cap) {
		size_t cap = t->keys_cap ? t->keys_cap * 2 : 4096;
		char *k;
		while (cap < t->keys_len + kl + 1)
			cap *= 2;
		if ((k = realloc(t->keys, cap)) == NULL)
			return -ENOMEM;
		t->keys = k;
		t->keys_cap = cap;
	}
	memcpy(t->keys + t->keys_len, key, kl);
	t->keys[t->keys_len + kl] = '\0';
	t->entries[t->n].key = NULL;
	t->entries[t->n].key_off = (uint32_t)t->keys_len;
	t->entries[t->n].line = L->line;
	t->entries[t->n].route = *r;
	t->keys_len += kl + 1;
	t->n++;
	return 0;
}

/* transport_line - one "DOMAIN NEXTHOP" line. */
static int transport_line(struct maps_transport *t, struct lines *L,
			  const char *s, size_t len)
{
	char buf[SAMPLE_BYTES * 4 + 1], key[DOMAIN_MAX + 2];
	const char *hop, *extra, *why;
	size_t kl, hl, xl, i;
	struct maps_route r;

	token(s, len, &kl, &hop, &hl);
	token(hop, hl, &hl, &extra, &xl);
	if (hl == 0)
		return lfail(L, "\"%s\": missing next hop (lines are DOMAIN "
			     "NEXTHOP)", sample(buf, sizeof(buf), s, kl));
	if (xl)
		return lfail(L, "unexpected \"%s\" after the next hop",
			     sample(buf, sizeof(buf), extra, xl));
	if (maps_nexthop_parse(hop, hl, &r, &why) < 0)
		return lfail(L, "\"%s\": %s", sample(buf, sizeof(buf), hop, hl),
			     why);
	if (kl == 1 && s[0] == '*') {
		if (t->has_default)
			return lfail(L, "\"*\" is listed twice (first on line "
				     "%u)", t->default_line);
		t->has_default = true;
		t->default_line = L->line;
		t->def = r;
		return 0;
	}
	i = s[0] == '.';
	if ((why = domain_why(s + i, kl - i)) != NULL)
		return lfail(L, "\"%s\": %s", sample(buf, sizeof(buf), s, kl),
			     why);
	for (i = 0; i < kl; i++)
		key[i] = lower(s[i]);
	return transport_add(t, L, key, kl, &r);
}

static int tentry_cmp(const void *a, const void *b)
{
	const struct tentry *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	if (c)
		return c;
	return x->line < y->line ? -1 : x->line > y->line;
}

/*
 * transport_finish - fix the key pointers, sort the entries, and refuse a
 * domain listed twice, reporting the earliest line that repeats a key.
 */
static int transport_finish(struct maps_transport *t, struct lines *L)
{
	char buf[SAMPLE_BYTES * 4 + 1];
	const struct tentry *dup = NULL, *first;
	size_t i;

	for (i = 0; i < t->n; i++)
		t->entries[i].key = t->keys + t->entries[i].key_off;
	if (t->n > 1)
		qsort(t->entries, t->n, sizeof(t->entries[0]), tentry_cmp);
	/* Equal keys sort by line, so the first repeat of each key follows
	 * its first line; keep the repeat with the lowest line. */
	for (i = 1; i < t->n; i++) {
		const struct tentry *b = &t->entries[i];
		if (strcmp(t->entries[i - 1].key, b->key) == 0 &&
		    (dup == NULL || b->line < dup->line))
			dup = b;
	}
	if (dup == NULL)
		return 0;
	for (first = dup; first > t->entries &&
	     strcmp((first - 1)->key, dup->key) == 0; first--)
		;
	L->line = dup->line;
	return lfail(L, "\"%s\" is listed twice (first on line %u)",
		     sample(buf, sizeof(buf), dup->key, strlen(dup->key)),
		     first->line);
}

int maps_transport_parse(const char *name, const char *text, size_t len,
			 struct maps_transport **out, struct rm_err *err)
{
	struct lines L = { .name = name ? name : "(text)", .s = text,
			   .end = text + len, .err = err };
	struct maps_transport *t;
	const char *ls;
	size_t ll;
	int rc;

	*out = NULL;
	if (len > MAPS_TRANSPORT_MAX_FILE_BYTES)
		return rm_err_set(err, -EFBIG, "maps: %s: larger than %u bytes",
				  L.name, MAPS_TRANSPORT_MAX_FILE_BYTES);
	if ((t = calloc(1, sizeof(*t))) == NULL)
		goto nomem;
	while ((rc = next_line(&L, &ls, &ll)) > 0) {
		rc = transport_line(t, &L, ls, ll);
		if (rc == -ENOMEM)
			goto nomem;
		if (rc < 0)
			goto fail;
	}
	if (rc < 0 || (rc = transport_finish(t, &L)) < 0)
		goto fail;
	*out = t;
	return 0;
nomem:
	maps_transport_free(t);
	return rm_err_set(err, -ENOMEM, "maps: %s: out of memory", L.name);
fail:
	maps_transport_free(t);
	return rc;
}

/* transport_find - the entry whose key is the NUL-terminated k, or NULL. */
static const struct tentry *transport_find(const struct maps_transport *t,
					   const char *k)
{
	size_t lo = 0, hi = t->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(k, t->entries[mid].key);
		if (c == 0)
			return &t->entries[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

int maps_transport_lookup(const struct maps_transport *t, const char *domain,
			  size_t len, const struct maps_route **out)
{
	char d[DOMAIN_MAX + 1];
	const struct tentry *e;
	size_t i;

	if (t == NULL)
		return -ENOENT;
	if (len && domain[len - 1] == '.')
		len--;
	/* Only a host name can match a key; anything else (an address
	 * literal, UTF-8, junk) gets the default route. */
	if (t->n && domain_why(domain, len) == NULL) {
		for (i = 0; i < len; i++)
			d[i] = lower(domain[i]);
		d[len] = '\0';
		if ((e = transport_find(t, d)) != NULL) {
			*out = &e->route;
			return 0;
		}
		for (i = 0; i < len; i++) {
			if (d[i] == '.' && (e = transport_find(t, d + i)) != NULL) {
				*out = &e->route;
				return 0;
			}
		}
	}
	if (!t->has_default)
		return -ENOENT;
	*out = &t->def;
	return 0;
}

/* ---- relay recipients -------------------------------------------------- */

struct maps_rcpt {
	char *strs;                  /* keys, lower-case, NUL-terminated */
	size_t strs_len;
	uint64_t *slots;             /* keys: 0 empty, else hash32 << 32 | off+1 */
	uint64_t *dslots;            /* domains, same layout; off into strs */
	size_t mask;                 /* both tables: mask + 1 slots */
	size_t n, n_domains;
};

void maps_rcpt_free(struct maps_rcpt *m)
{
	if (m == NULL)
		return;
	free(m->strs);
	free(m->slots);
	free(m->dslots);
	free(m);
}

size_t maps_rcpt_count(const struct maps_rcpt *m)
{
	return m ? m->n : 0;
}

const char *maps_rcpt_result_name(enum maps_rcpt_result r)
{
	switch (r) {
	case MAPS_RCPT_FOUND: return "found";
	case MAPS_RCPT_UNKNOWN: return "unknown";
	case MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN: return "no_entries_for_domain";
	}
	return "?";
}

/* hash - FNV-1a over the key, then the murmur3 finaliser, which spreads
 * FNV's weak low bits over the slot index. */
static uint64_t hash(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/*
 * key_eq - whether the NUL-terminated stored key sk equals (k, kl). Reads
 * sk no further than its NUL (k may hold any bytes, a NUL too).
 */
static bool key_eq(const char *sk, const char *k, size_t kl)
{
	size_t i;

	for (i = 0; i < kl; i++)
		if (sk[i] != k[i] || sk[i] == '\0')
			return false;
	return sk[kl] == '\0';
}

/*
 * probe - the slot of key (k, kl) in table, or of the empty slot where it
 * would go; *is_found says which. The load is <= 1/2, so an empty slot
 * always ends the walk.
 */
static size_t probe(const struct maps_rcpt *m, const uint64_t *table,
		    const char *k, size_t kl, uint64_t h, bool *is_found)
{
	uint32_t tag = (uint32_t)(h >> 32);
	size_t i = (size_t)h & m->mask;

	for (;; i = (i + 1) & m->mask) {
		uint64_t v = table[i];
		const char *sk;
		if (v == 0) {
			*is_found = false;
			return i;
		}
		if ((uint32_t)(v >> 32) != tag)
			continue;
		sk = m->strs + (uint32_t)v - 1;
		if (key_eq(sk, k, kl)) {
			*is_found = true;
			return i;
		}
	}
}

/* insert - add the key at strs + off (length kl) to table unless there. */
static bool insert(struct maps_rcpt *m, uint64_t *table, size_t off, size_t kl)
{
	const char *k = m->strs + off;
	uint64_t h = hash(k, kl);
	bool is_found;
	size_t i = probe(m, table, k, kl, h, &is_found);

	if (is_found)
		return false;
	table[i] = (h & 0xffffffff00000000ULL) | ((uint64_t)off + 1);
	return true;
}

/*
 * rcpt_domain_why - why the domain of a relay_recipients key is refused:
 * as a host name, except that UTF-8 bytes (RFC 6531 U-labels) may appear
 * in its labels. An address literal cannot be a relay domain.
 */
static const char *rcpt_domain_why(const char *d, size_t len)
{
	size_t i, label = 0;

	if (len == 0)
		return "empty domain";
	if (len > DOMAIN_MAX)
		return "domain longer than 253 bytes";
	if (d[0] == '[')
		return "an address literal cannot be a relay domain";
	for (i = 0; i <= len; i++) {
		unsigned char ch = i < len ? (unsigned char)d[i] : '.';
		if (ch == '.') {
			if (label == 0)
				return "empty label in domain";
			label = 0;
			continue;
		}
		if (!(is_digit((char)ch) || (lower((char)ch) >= 'a' &&
					     lower((char)ch) <= 'z') ||
		      ch == '-' || ch >= 0x80))
			return "invalid character in domain";
		label++;
	}
	return NULL;
}

/* rcpt_line - one "local@domain" or "@domain" line into strs. */
static int rcpt_line(struct maps_rcpt *m, struct lines *L, const char *s,
		     size_t len, uint32_t **offs, size_t *n_offs,
		     size_t *cap_offs)
{
	char buf[SAMPLE_BYTES * 4 + 1];
	const char *at = NULL, *rest, *why;
	size_t kl, rl, i;

	token(s, len, &kl, &rest, &rl);
	for (i = kl; i > 0; i--) {
		if (s[i - 1] == '@') {
			at = s + i - 1;
			break;
		}
	}
	if (at == NULL)
		return lfail(L, "\"%s\": no '@' (lines are local@domain or "
			     "@domain)", sample(buf, sizeof(buf), s, kl));
	if ((size_t)(at - s) > LOCAL_MAX)
		return lfail(L, "\"%s\": local part longer than %d bytes",
			     sample(buf, sizeof(buf), s, kl), LOCAL_MAX);
	if ((why = rcpt_domain_why(at + 1, kl - (size_t)(at - s) - 1)) != NULL)
		return lfail(L, "\"%s\": %s", sample(buf, sizeof(buf), s, kl),
			     why);
	if (*n_offs == MAPS_RCPT_MAX_ENTRIES)
		return lfail(L, "more than %u entries", MAPS_RCPT_MAX_ENTRIES);
	if (*n_offs == *cap_offs) {
		size_t cap = *cap_offs ? *cap_offs * 2 : 1024;
		uint32_t *o = realloc(*offs, cap * sizeof(*o));
		if (o == NULL)
			return -ENOMEM;
		*offs = o;
		*cap_offs = cap;
	}
	(*offs)[(*n_offs)++] = (uint32_t)m->strs_len;
	for (i = 0; i < kl; i++)
		m->strs[m->strs_len + i] = lower(s[i]);
	m->strs[m->strs_len + kl] = '\0';
	m->strs_len += kl + 1;
	return 0;
}

/* rcpt_build - the two hash tables from the n keys at offs. */
static int rcpt_build(struct maps_rcpt *m, const uint32_t *offs, size_t n)
{
	size_t slots = MIN_SLOTS, i, kl;
	const char *k, *at;

	while (slots < 2 * n)
		slots *= 2;
	m->mask = slots - 1;
	m->slots = calloc(slots, sizeof(*m->slots));
	m->dslots = calloc(slots, sizeof(*m->dslots));
	if (m->slots == NULL || m->dslots == NULL)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		k = m->strs + offs[i];
		kl = strlen(k);
		if (!insert(m, m->slots, offs[i], kl))
			continue;
		m->n++;
		at = strrchr(k, '@');
		if (insert(m, m->dslots, (size_t)(at + 1 - m->strs),
			   kl - (size_t)(at + 1 - k)))
			m->n_domains++;
	}
	return 0;
}

int maps_rcpt_parse(const char *name, const char *text, size_t len,
		    struct maps_rcpt **out, struct rm_err *err)
{
	struct lines L = { .name = name ? name : "(text)", .s = text,
			   .end = text + len, .err = err };
	struct maps_rcpt *m;
	uint32_t *offs = NULL;
	size_t n_offs = 0, cap_offs = 0, ll;
	const char *ls;
	int rc;

	*out = NULL;
	if (len > MAPS_RCPT_MAX_FILE_BYTES)
		return rm_err_set(err, -EFBIG, "maps: %s: larger than %u bytes",
				  L.name, MAPS_RCPT_MAX_FILE_BYTES);
	/* Every key and its NUL fit in the line (and LF, or the end) it
	 * came from, so one block of len + 1 bytes holds them all. */
	if ((m = calloc(1, sizeof(*m))) == NULL ||
	    (m->strs = malloc(len + 1)) == NULL)
		goto nomem;
	while ((rc = next_line(&L, &ls, &ll)) > 0) {
		rc = rcpt_line(m, &L, ls, ll, &offs, &n_offs, &cap_offs);
		if (rc == -ENOMEM)
			goto nomem;
		if (rc < 0)
			goto fail;
	}
	if (rc < 0)
		goto fail;
	if (rcpt_build(m, offs, n_offs) < 0)
		goto nomem;
	free(offs);
	*out = m;
	return 0;
nomem:
	free(offs);
	maps_rcpt_free(m);
	return rm_err_set(err, -ENOMEM, "maps: %s: out of memory", L.name);
fail:
	free(offs);
	maps_rcpt_free(m);
	return rc;
}

enum maps_rcpt_result maps_rcpt_lookup(const struct maps_rcpt *m,
				       const char *addr, size_t len)
{
	char k[ADDR_LOOKUP_MAX];
	size_t i, at = SIZE_MAX;
	bool is_found;

	if (m == NULL || m->n == 0 || len > ADDR_LOOKUP_MAX)
		return MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN;
	for (i = 0; i < len; i++) {
		k[i] = lower(addr[i]);
		if (k[i] == '@')
			at = i;
	}
	if (at == SIZE_MAX)
		return MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN;
	if (len > at + 1 && k[len - 1] == '.')
		len--;
	probe(m, m->slots, k, len, hash(k, len), &is_found);
	if (is_found)
		return MAPS_RCPT_FOUND;
	probe(m, m->slots, k + at, len - at, hash(k + at, len - at), &is_found);
	if (is_found)
		return MAPS_RCPT_FOUND;
	probe(m, m->dslots, k + at + 1, len - at - 1,
	      hash(k + at + 1, len - at - 1), &is_found);
	return is_found ? MAPS_RCPT_UNKNOWN : MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN;
}
