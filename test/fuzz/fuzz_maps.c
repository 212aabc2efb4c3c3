/*
 * fuzz_maps - libFuzzer target for the map parsers (transport_map,
 * relay_recipients) and the next-hop grammar.
 *
 * Each input is parsed three ways. Nothing may crash, leak or trip
 * ASan/UBSan, and every error message must be NUL-terminated. Checks:
 *  - next hop: when the whole input parses, maps_route_format() of it
 *    parses back to the identical route (the round trip);
 *  - transport map: when the input parses, every exact DOMAIN line looks
 *    up to exactly its own NEXTHOP, also in upper case and with a
 *    trailing dot; every line's first token is looked up without harm;
 *  - relay_recipients: when the input parses, every line's address is
 *    FOUND, also in upper case; the same address with a changed local
 *    part is never NO_ENTRIES_FOR_DOMAIN (its domain has an entry).
 *
 * Seeds: test/fuzz/corpus/maps/; dictionary test/fuzz/maps.dict.
 * Run:   CC=clang meson setup build-fuzz -Dfuzz=true &&
 *        ninja -C build-fuzz test/fuzz_maps &&
 *        build-fuzz/test/fuzz_maps -dict=test/fuzz/maps.dict \
 *            test/fuzz/corpus/maps
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringmta/maps.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LOOKUP_MAX - a longest token we copy for a lookup (a line's cap). */
#define LOOKUP_MAX (MAPS_MAX_LINE_BYTES + 2)

/* struct entry - one line's first two tokens, as the parsers split it. */
struct entry {
	const char *key, *value;
	size_t kl, vl;
};

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t';
}

/*
 * next_entry - the next entry line of (*s..end) split as maps.c does:
 * LF-separated, one CR before LF dropped, blanks trimmed, '#' lines and
 * blank lines skipped. Returns false at the end.
 */
static bool next_entry(const char **s, const char *end, struct entry *e)
{
	while (*s < end) {
		const char *l = *s, *nl = memchr(l, '\n', (size_t)(end - l));
		size_t len = (size_t)((nl ? nl : end) - l), i = 0;

		*s = nl ? nl + 1 : end;
		if (len && l[len - 1] == '\r')
			len--;
		while (len && is_blank(*l)) {
			l++;
			len--;
		}
		if (len == 0 || l[0] == '#')
			continue;
		while (i < len && !is_blank(l[i]))
			i++;
		e->key = l;
		e->kl = i;
		while (i < len && is_blank(l[i]))
			i++;
		e->value = l + i;
		while (i < len && !is_blank(l[i]))
			i++;
		e->vl = (size_t)(l + i - e->value);
		return true;
	}
	return false;
}

static void upper(char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] >= 'a' && s[i] <= 'z')
			s[i] = (char)(s[i] - 'a' + 'A');
}

/* route_eq - field by field: struct copies need not keep padding bytes. */
static bool route_eq(const struct maps_route *a, const struct maps_route *b)
{
	return a->proto == b->proto && a->is_unix == b->is_unix &&
	       a->is_mx == b->is_mx && a->is_ip == b->is_ip &&
	       strcmp(a->host, b->host) == 0 && a->port == b->port &&
	       strcmp(a->path, b->path) == 0;
}

static void check_msg(const struct rm_err *err)
{
	if (memchr(err->msg, '\0', sizeof(err->msg)) == NULL)
		abort();
}

/* nexthop - the whole input as one next hop; the round trip must hold. */
static void nexthop(const uint8_t *data, size_t size)
{
	char text[MAPS_ROUTE_TEXT_BYTES];
	struct maps_route a, b;
	const char *why = NULL;

	if (maps_nexthop_parse((const char *)data, size, &a, &why) < 0) {
		if (why == NULL)
			abort();
		return;
	}
	maps_route_format(&a, text, sizeof(text));
	if (maps_nexthop_parse(text, strlen(text), &b, &why) < 0 ||
	    !route_eq(&a, &b)) {
		fprintf(stderr, "round trip differs: %s\n", text);
		abort();
	}
}

/* transport - parse as a transport map; exact keys find their routes. */
static void transport(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data, *end = s + size, *why;
	const struct maps_route *r;
	struct maps_transport *t;
	struct maps_route want;
	struct rm_err err;
	struct entry e;
	char k[LOOKUP_MAX];

	if (maps_transport_parse("fuzz", s, size, &t, &err) < 0) {
		check_msg(&err);
		return;
	}
	while (next_entry(&s, end, &e)) {
		memcpy(k, e.key, e.kl);
		maps_transport_lookup(t, k, e.kl, &r);
		if (e.key[0] == '*' || e.key[0] == '.')
			continue;
		if (maps_nexthop_parse(e.value, e.vl, &want, &why) < 0)
			abort();
		upper(k, e.kl);
		k[e.kl] = '.';
		if (maps_transport_lookup(t, k, e.kl + 1, &r) != 0 ||
		    !route_eq(r, &want)) {
			fprintf(stderr, "lookup of %.*s differs\n", (int)e.kl, k);
			abort();
		}
	}
	maps_transport_free(t);
}

/* rcpt - parse as relay_recipients; every listed address is FOUND. */
static void rcpt(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data, *end = s + size;
	struct maps_rcpt *m;
	struct rm_err err;
	struct entry e;
	char k[LOOKUP_MAX + 2];

	if (maps_rcpt_parse("fuzz", s, size, &m, &err) < 0) {
		check_msg(&err);
		return;
	}
	while (next_entry(&s, end, &e)) {
		memcpy(k, e.key, e.kl);
		upper(k, e.kl);
		if (maps_rcpt_lookup(m, e.key, e.kl) != MAPS_RCPT_FOUND ||
		    maps_rcpt_lookup(m, k, e.kl) != MAPS_RCPT_FOUND) {
			fprintf(stderr, "%.*s not found\n", (int)e.kl, e.key);
			abort();
		}
		/* "\x01" never appears in a key: a local part nobody listed */
		k[0] = '\x01';
		memcpy(k + 1, e.key, e.kl);
		if (maps_rcpt_lookup(m, k, e.kl + 1) ==
		    MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN) {
			fprintf(stderr, "%.*s: domain lost\n", (int)e.kl, e.key);
			abort();
		}
	}
	maps_rcpt_lookup(m, (const char *)data, size);
	maps_rcpt_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	nexthop(data, size);
	transport(data, size);
	rcpt(data, size);
	return 0;
}
