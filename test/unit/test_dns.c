/*
 * test_dns - unit tests for the pure parts of the dns module: host-name
 * checks, address literals (RFC 5321 4.1.3), building an MX answer
 * (RFC 5321 5.1 order, RFC 7505 null MX), dropping ourselves from it
 * (RFC 5321 5.1), the equal-preference shuffle,
 * the TTL/LRU cache with injected time, the check of an answer read over
 * TCP (dns_answer_parse), dns_opts_from_conf, and
 * dns_resolver_new on a reactor that never starts (op range, resolv.conf
 * parsing, udns's 6-server limit). Names and literals are read
 * from copies that end at a PROT_NONE page (t_guard_copy). The resolver
 * itself runs against a real server in test/integration/
 * test_dns_resolution.py.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <udns.h>

#include "ringmta/conf.h"
#include "ringmta/dns.h"
#include "ringmta/reactor.h"

#include "t.h"

/* --- names ---------------------------------------------------------------- */

struct name_case {
	const char *name;
	const char *in;
	int want_len;           /* -EINVAL for a bad name */
	const char *want;
};

static void test_name_normalize(void)
{
	static char long_label[80], long_name[300], max_name[260];
	static const struct name_case cases[] = {
		{ "plain", "example.org", 11, "example.org" },
		{ "upper case folds", "MX1.Example.ORG", 15, "mx1.example.org" },
		{ "trailing dot dropped", "example.org.", 11, "example.org" },
		{ "single label", "localhost", 9, "localhost" },
		{ "digits hyphen underscore", "a-1_b.x9", 8, "a-1_b.x9" },
		{ "empty", "", -EINVAL, NULL },
		{ "only a dot", ".", -EINVAL, NULL },
		{ "leading dot", ".example.org", -EINVAL, NULL },
		{ "empty label", "a..b", -EINVAL, NULL },
		{ "two trailing dots", "a.b..", -EINVAL, NULL },
		{ "space", "exa mple.org", -EINVAL, NULL },
		{ "8-bit byte (needs IDNA first)", "b\xc3\xbc" "cher.de", -EINVAL, NULL },
		{ "NUL inside", "a\0b", -EINVAL, NULL },
		{ "at sign", "user@example.org", -EINVAL, NULL },
		{ "bracketed literal is not a name", "[127.0.0.1]", -EINVAL, NULL },
	};
	char out[DNS_NAME_BYTES];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct name_case *c = &cases[i];
		size_t len = strcmp(c->name, "NUL inside") == 0 ? 3 : strlen(c->in);
		void *base;
		size_t maplen;
		const char *in = len ? t_guard_copy(c->in, len, &base, &maplen) : c->in;
		int got;

		T_CASE(c->name);
		got = dns_name_normalize(in, len, out);
		T_EQ_INT(got, c->want_len);
		if (c->want && got >= 0)
			T_EQ_STR(out, c->want);
		if (len)
			t_guard_free(base, maplen);
	}

	/* RFC 1035 2.3.4: labels of 63, names of 253 octets. */
	T_CASE("label of 63 octets");
	memset(long_label, 'a', 63);
	T_EQ_INT(dns_name_normalize(long_label, 63, out), 63);
	T_CASE("label of 64 octets");
	memset(long_label, 'a', 64);
	T_EQ_INT(dns_name_normalize(long_label, 64, out), -EINVAL);
	T_CASE("name of 253 octets");
	for (size_t i = 0; i < 253; i++)
		max_name[i] = (i % 50 == 49) ? '.' : 'b';
	T_EQ_INT(dns_name_normalize(max_name, 253, out), 253);
	T_CASE("name of 253 octets and the root dot");
	max_name[253] = '.';
	T_EQ_INT(dns_name_normalize(max_name, 254, out), 253);
	T_CASE("name of 254 octets");
	for (size_t i = 0; i < 254; i++)
		long_name[i] = (i % 50 == 49) ? '.' : 'c';
	T_EQ_INT(dns_name_normalize(long_name, 254, out), -EINVAL);
}

/* --- literals --------------------------------------------------------------- */

struct literal_case {
	const char *name;
	const char *in;
	bool is_bare_allowed;
	bool want;
	int want_family;
	const char *want_text;
};

static void test_addr_literal(void)
{
	static const struct literal_case cases[] = {
		{ "RFC 5321 4.1.3 IPv4 literal", "[192.0.2.1]", false, true, AF_INET, "192.0.2.1" },
		{ "RFC 5321 4.1.3 IPv6 literal", "[IPv6:2001:db8::1]", false, true, AF_INET6, "2001:db8::1" },
		{ "IPv6 tag is case-insensitive", "[ipv6:::1]", false, true, AF_INET6, "::1" },
		{ "IPv6 without tag: not RFC 5321", "[::1]", false, false, 0, NULL },
		{ "IPv6 without tag, bare allowed", "[::1]", true, true, AF_INET6, "::1" },
		{ "bare IPv4 not for MX", "192.0.2.1", false, false, 0, NULL },
		{ "bare IPv4 for a host route", "192.0.2.1", true, true, AF_INET, "192.0.2.1" },
		{ "bare IPv6 for a host route", "2001:db8::2", true, true, AF_INET6, "2001:db8::2" },
		{ "IPv4 in IPv6 tag", "[IPv6:192.0.2.1]", false, false, 0, NULL },
		{ "host name in brackets", "[mx.example.org]", true, false, 0, NULL },
		{ "empty brackets", "[]", true, false, 0, NULL },
		{ "short IPv4", "[192.0.2]", false, false, 0, NULL },
		{ "octet over 255", "[192.0.2.256]", false, false, 0, NULL },
		{ "unclosed bracket", "[192.0.2.1", true, false, 0, NULL },
		{ "domain", "example.org", true, false, 0, NULL },
		{ "too long", "[IPv6:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000]", true,
		  false, 0, NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct literal_case *c = &cases[i];
		size_t len = strlen(c->in), maplen;
		void *base;
		const char *in = t_guard_copy(c->in, len, &base, &maplen);
		struct dns_addr a;
		char text[INET6_ADDRSTRLEN];
		bool got;

		T_CASE(c->name);
		got = dns_addr_literal(in, len, c->is_bare_allowed, &a);
		T_EQ_INT(got, c->want);
		if (got && c->want) {
			T_EQ_INT(a.family, c->want_family);
			inet_ntop(a.family, &a.u, text, sizeof(text));
			T_EQ_STR(text, c->want_text);
		}
		t_guard_free(base, maplen);
	}
}

static void test_addr_sockaddr(void)
{
	struct dns_addr a;
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	T_CASE("sockaddr IPv4");
	T_CHECK(dns_addr_literal("[192.0.2.7]", 11, false, &a), "literal refused");
	T_EQ_INT(dns_addr_sockaddr(&a, 25, &ss), sizeof(struct sockaddr_in));
	T_EQ_INT(sin->sin_family, AF_INET);
	T_EQ_INT(ntohs(sin->sin_port), 25);
	T_EQ_INT(ntohl(sin->sin_addr.s_addr), 0xc0000207);
	T_CASE("sockaddr IPv6");
	T_CHECK(dns_addr_literal("::1", 3, true, &a), "literal refused");
	T_EQ_INT(dns_addr_sockaddr(&a, 2525, &ss), sizeof(struct sockaddr_in6));
	T_EQ_INT(sin6->sin6_family, AF_INET6);
	T_EQ_INT(ntohs(sin6->sin6_port), 2525);
	T_EQ_INT(sin6->sin6_addr.s6_addr[15], 1);
	T_CASE("sockaddr bad family");
	a.family = AF_UNIX;
	T_EQ_INT(dns_addr_sockaddr(&a, 25, &ss), 0);
}

/* --- MX answers --------------------------------------------------------------- */

struct mx_case {
	const char *name;
	struct dns_mx_record rr[16];
	size_t n;
	enum dns_result want_status;
	const char *want;       /* "pref/name,..." */
};

/* hosts_text - "pref/name,pref/name" of res, for comparison. */
static const char *hosts_text(const struct dns_mx_result *res)
{
	static char buf[4096];
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < res->n_hosts; i++)
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%u/%s", i ? "," : "",
					res->hosts[i].preference, res->hosts[i].name);
	return buf;
}

static void test_mx_build(void)
{
	static const struct mx_case cases[] = {
		{ "RFC 5321 5.1 ascending preference", { { 20, "b.test" }, { 10, "a.test" },
		  { 30, "c.test" } }, 3, DNS_RESULT_OK, "10/a.test,20/b.test,30/c.test" },
		{ "equal preferences keep answer order (shuffled later)", { { 10, "x.test" },
		  { 5, "p.test" }, { 10, "y.test" }, { 10, "z.test" } }, 4, DNS_RESULT_OK,
		  "5/p.test,10/x.test,10/y.test,10/z.test" },
		{ "RFC 7505 null MX", { { 0, "" } }, 1, DNS_RESULT_NULL_MX, "" },
		{ "RFC 7505 null MX spelled with a dot", { { 0, "." } }, 1, DNS_RESULT_NULL_MX, "" },
		{ "root exchange with preference 10 is not a null MX", { { 10, "" } }, 1,
		  DNS_RESULT_NOHOST, "" },
		{ "null MX mixed with a real host: the host", { { 0, "" }, { 10, "mx.test" } }, 2,
		  DNS_RESULT_OK, "10/mx.test" },
		{ "two root exchanges", { { 0, "" }, { 0, "." } }, 2, DNS_RESULT_NOHOST, "" },
		{ "empty RRset", { { 0, NULL } }, 0, DNS_RESULT_NOHOST, "" },
		{ "names folded to lower case", { { 10, "MX.Example.TEST" } }, 1, DNS_RESULT_OK,
		  "10/mx.example.test" },
		{ "duplicate keeps the lower preference", { { 20, "a.test" }, { 10, "b.test" },
		  { 5, "A.test" } }, 3, DNS_RESULT_OK, "5/a.test,10/b.test" },
		{ "duplicate with a higher preference dropped", { { 10, "a.test" }, { 20, "a.test" } },
		  2, DNS_RESULT_OK, "10/a.test" },
		{ "invalid exchange name dropped", { { 10, "bad name.test" }, { 20, "ok.test" } }, 2,
		  DNS_RESULT_OK, "20/ok.test" },
		{ "only invalid names", { { 10, "bad name" } }, 1, DNS_RESULT_NOHOST, "" },
		{ "cut to DNS_MAX_MX_HOSTS keeps the lowest preferences",
		  { { 90, "h90" }, { 10, "h10" }, { 80, "h80" }, { 20, "h20" }, { 70, "h70" },
		    { 30, "h30" }, { 60, "h60" }, { 40, "h40" }, { 50, "h50" }, { 100, "h100" },
		    { 110, "h110" }, { 5, "h5" } }, 12, DNS_RESULT_OK,
		  "5/h5,10/h10,20/h20,30/h30,40/h40,50/h50,60/h60,70/h70,80/h80,90/h90" },
		{ "preference 65535", { { 65535, "last.test" }, { 0, "first.test" } }, 2,
		  DNS_RESULT_OK, "0/first.test,65535/last.test" },
	};
	struct dns_mx_result res;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct mx_case *c = &cases[i];

		T_CASE(c->name);
		memset(&res, 0xa5, sizeof(res));
		dns_mx_build(&res, c->rr, c->n);
		T_EQ_INT(res.status, c->want_status);
		T_EQ_STR(hosts_text(&res), c->want);
		T_EQ_INT(res.is_implicit, 0);
		T_EQ_INT(res.is_cached, 0);
		for (size_t k = 0; k < res.n_hosts; k++) {
			T_EQ_INT(res.hosts[k].n_addrs, 0);
			T_EQ_INT(res.hosts[k].status, DNS_RESULT_TEMPFAIL);
		}
	}
}

struct self_case {
	const char *name;
	struct dns_mx_record rr[8];
	size_t n;
	const char *me;
	enum dns_result want_status;
	const char *want;
};

static void test_mx_drop_self(void)
{
	static const struct self_case cases[] = {
		{ "RFC 5321 5.1 we are the best MX: loop", { { 10, "me.test" }, { 20, "b.test" } }, 2,
		  "me.test", DNS_RESULT_LOOP, "" },
		{ "RFC 5321 5.1 drop us and the less preferred", { { 5, "a.test" }, { 10, "me.test" },
		  { 20, "b.test" } }, 3, "me.test", DNS_RESULT_OK, "5/a.test" },
		{ "RFC 5321 5.1 equal preference to ours dropped too", { { 5, "a.test" },
		  { 10, "x.test" }, { 10, "me.test" }, { 10, "y.test" } }, 4, "me.test",
		  DNS_RESULT_OK, "5/a.test" },
		{ "equal preference to ours, none better: loop", { { 10, "x.test" },
		  { 10, "me.test" } }, 2, "me.test", DNS_RESULT_LOOP, "" },
		{ "not us", { { 10, "a.test" } }, 1, "me.test", DNS_RESULT_OK, "10/a.test" },
		{ "no myhostname", { { 10, "me.test" } }, 1, "", DNS_RESULT_OK, "10/me.test" },
		{ "our name as a suffix is not us", { { 10, "notme.test" } }, 1, "me.test",
		  DNS_RESULT_OK, "10/notme.test" },
		{ "null MX untouched", { { 0, "" } }, 1, "me.test", DNS_RESULT_NULL_MX, "" },
	};
	struct dns_mx_result res;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct self_case *c = &cases[i];

		T_CASE(c->name);
		dns_mx_build(&res, c->rr, c->n);
		dns_mx_drop_self(&res, c->me);
		T_EQ_INT(res.status, c->want_status);
		T_EQ_STR(hosts_text(&res), c->want);
	}
	T_CASE("loop is permanent");
	T_EQ_INT(dns_result_is_permanent(DNS_RESULT_LOOP), 1);
	T_EQ_STR(dns_result_str(DNS_RESULT_LOOP), "loop");
}

/* perm_index - which of the 6 orders of a, b, c the names in h[1..4) are. */
static int perm_index(const struct dns_mx_host *h)
{
	static const char *const perms[6] = { "abc", "acb", "bac", "bca", "cab", "cba" };
	char got[4] = { h[1].name[0], h[2].name[0], h[3].name[0], '\0' };

	for (int i = 0; i < 6; i++)
		if (strcmp(got, perms[i]) == 0)
			return i;
	return -1;
}

static void test_mx_shuffle(void)
{
	static const struct dns_mx_record rr[] = {
		{ 5, "first.test" }, { 10, "a.test" }, { 10, "b.test" }, { 10, "c.test" },
		{ 20, "y.test" }, { 20, "z.test" }, { 30, "last.test" },
	};
	enum { N_DRAWS = 60000 };
	struct dns_mx_result base, res;
	unsigned counts[6] = { 0 }, y_first = 0;
	uint64_t rng = 12345;
	bool is_sorted = true, has_ends = true;

	dns_mx_build(&base, rr, sizeof(rr) / sizeof(rr[0]));
	for (int i = 0; i < N_DRAWS; i++) {
		int p;

		res = base;
		dns_mx_shuffle(res.hosts, res.n_hosts, &rng);
		for (size_t k = 1; k < res.n_hosts; k++)
			is_sorted &= res.hosts[k - 1].preference <= res.hosts[k].preference;
		has_ends &= strcmp(res.hosts[0].name, "first.test") == 0 &&
			strcmp(res.hosts[6].name, "last.test") == 0;
		p = perm_index(res.hosts);
		if (p >= 0)
			counts[p]++;
		y_first += res.hosts[4].name[0] == 'y';
	}
	T_CASE("RFC 5321 5.1 shuffle never crosses preferences");
	T_CHECK(is_sorted, "got a host before one of lower preference, want ascending");
	T_CHECK(has_ends, "got the lone preferences 5 and 30 moved, want them fixed");
	T_CASE("RFC 5321 5.1 equal preferences: every order, evenly");
	for (int p = 0; p < 6; p++)
		/* expected 10000 each; +-6% is > 6 sigma for a fair shuffle */
		T_CHECK(counts[p] > 9400 && counts[p] < 10600,
			"order %d drawn %u times of %d, want ~%d", p, counts[p], N_DRAWS, N_DRAWS / 6);
	T_CHECK(y_first > 29000 && y_first < 31000,
		"y.test first of the 20s %u times of %d, want ~%d", y_first, N_DRAWS, N_DRAWS / 2);

	T_CASE("same seed, same order");
	{
		struct dns_mx_result r1 = base, r2 = base;
		uint64_t s1 = 99, s2 = 99;

		dns_mx_shuffle(r1.hosts, r1.n_hosts, &s1);
		dns_mx_shuffle(r2.hosts, r2.n_hosts, &s2);
		T_EQ_STR(hosts_text(&r1), hosts_text(&r2));
	}
	T_CASE("one host and none");
	res = base;
	dns_mx_shuffle(res.hosts, 1, &rng);
	T_EQ_STR(res.hosts[0].name, "first.test");
	dns_mx_shuffle(res.hosts, 0, &rng);
}

/* --- the cache --------------------------------------------------------------- */

static struct dns_mx_result one_host(const char *name, unsigned pref)
{
	struct dns_mx_record rr = { pref, name };
	struct dns_mx_result res;

	dns_mx_build(&res, &rr, 1);
	return res;
}

static void test_cache_ttl(void)
{
	struct dns_cache *c = dns_cache_new(4);
	struct dns_mx_result r = one_host("mx.a.test", 10);
	const struct dns_mx_result *got;
	uint32_t left = 0;
	int64_t t0 = 1000000;

	T_CASE("cache: miss when empty");
	T_CHECK(c != NULL, "dns_cache_new(4) failed");
	T_CHECK(dns_cache_get(c, DNS_CACHE_MX, "a.test", t0, &left) == NULL, "got a hit, want a miss");

	T_CASE("cache: hit within the TTL");
	dns_cache_put(c, DNS_CACHE_MX, "a.test", &r, 300, t0);
	got = dns_cache_get(c, DNS_CACHE_MX, "a.test", t0 + 1, &left);
	T_CHECK(got != NULL, "got a miss, want a hit");
	if (got)
		T_EQ_STR(got->hosts[0].name, "mx.a.test");
	T_EQ_INT(left, 300);                    /* 299.999 s rounds up */
	got = dns_cache_get(c, DNS_CACHE_MX, "a.test", t0 + 299001, &left);
	T_CHECK(got != NULL, "got a miss 299.001 s in, want a hit");
	T_EQ_INT(left, 1);

	T_CASE("cache: expired at exactly the TTL");
	T_CHECK(dns_cache_get(c, DNS_CACHE_MX, "a.test", t0 + 300000, &left) == NULL,
		"got a hit at t+300 s, want expiry");
	T_EQ_INT(dns_cache_count(c), 0);

	T_CASE("cache: kinds do not mix");
	dns_cache_put(c, DNS_CACHE_HOST, "a.test", &r, 60, t0);
	T_CHECK(dns_cache_get(c, DNS_CACHE_MX, "a.test", t0, NULL) == NULL,
		"got the HOST entry for an MX key");
	T_CHECK(dns_cache_get(c, DNS_CACHE_HOST, "a.test", t0, NULL) != NULL, "got a miss for HOST");

	T_CASE("cache: ttl 0 stores nothing and drops the old entry");
	dns_cache_put(c, DNS_CACHE_HOST, "a.test", &r, 0, t0);
	T_CHECK(dns_cache_get(c, DNS_CACHE_HOST, "a.test", t0, NULL) == NULL, "got a hit");
	T_EQ_INT(dns_cache_count(c), 0);

	T_CASE("cache: put replaces");
	dns_cache_put(c, DNS_CACHE_MX, "a.test", &r, 10, t0);
	r = one_host("mx2.a.test", 20);
	dns_cache_put(c, DNS_CACHE_MX, "a.test", &r, 100, t0);
	got = dns_cache_get(c, DNS_CACHE_MX, "a.test", t0 + 50000, NULL);
	T_CHECK(got != NULL, "got a miss at t+50 s, want the replacement's TTL");
	if (got)
		T_EQ_STR(got->hosts[0].name, "mx2.a.test");
	T_EQ_INT(dns_cache_count(c), 1);

	T_CASE("cache: the stored copy is the caller's no longer");
	r.hosts[0].name[0] = 'X';
	got = dns_cache_get(c, DNS_CACHE_MX, "a.test", t0, NULL);
	if (got)
		T_EQ_STR(got->hosts[0].name, "mx2.a.test");
	dns_cache_free(c);
}

static void test_cache_lru(void)
{
	struct dns_cache *c = dns_cache_new(3);
	struct dns_mx_result r = one_host("mx.test", 10);
	static const char *const names[] = { "a.test", "b.test", "c.test", "d.test", "e.test" };
	int64_t t0 = 5000;

	T_CASE("cache: LRU eviction when full");
	for (int i = 0; i < 3; i++)
		dns_cache_put(c, DNS_CACHE_MX, names[i], &r, 60, t0);
	T_EQ_INT(dns_cache_count(c), 3);
	/* touch a: b is now the least recently used */
	T_CHECK(dns_cache_get(c, DNS_CACHE_MX, "a.test", t0, NULL) != NULL, "a missing");
	dns_cache_put(c, DNS_CACHE_MX, names[3], &r, 60, t0);
	T_EQ_INT(dns_cache_count(c), 3);
	T_CHECK(dns_cache_get(c, DNS_CACHE_MX, "b.test", t0, NULL) == NULL, "got b, want it evicted");
	T_CHECK(dns_cache_get(c, DNS_CACHE_MX, "a.test", t0, NULL) != NULL, "got a evicted");
	T_CHECK(dns_cache_get(c, DNS_CACHE_MX, "c.test", t0, NULL) != NULL, "got c evicted");
	T_CHECK(dns_cache_get(c, DNS_CACHE_MX, "d.test", t0, NULL) != NULL, "got d evicted");
	/* order now (old -> new): a, c, d; putting e evicts a */
	dns_cache_put(c, DNS_CACHE_MX, names[4], &r, 60, t0);
	T_CHECK(dns_cache_get(c, DNS_CACHE_MX, "a.test", t0, NULL) == NULL, "got a, want it evicted");
	T_EQ_INT(dns_cache_count(c), 3);
	dns_cache_free(c);

	T_CASE("cache: many keys through a small cache stay consistent");
	c = dns_cache_new(7);
	for (int i = 0; i < 5000; i++) {
		char key[32];

		snprintf(key, sizeof(key), "k%d.test", i % 23);
		dns_cache_put(c, (i & 1) ? DNS_CACHE_MX : DNS_CACHE_HOST, key, &r,
			      (uint32_t)(i % 5), t0 + i * 700);
		(void)dns_cache_get(c, DNS_CACHE_MX, key, t0 + i * 700 + 1, NULL);
		T_CHECK(dns_cache_count(c) <= 7, "got %u entries, want <= 7", dns_cache_count(c));
	}
	dns_cache_free(c);

	T_CASE("cache: 0 entries refused, free(NULL) no-op");
	T_CHECK(dns_cache_new(0) == NULL, "got a cache of 0 entries");
	dns_cache_free(NULL);
}

static void test_results(void)
{
	T_CASE("permanent results");
	T_EQ_INT(dns_result_is_permanent(DNS_RESULT_OK), 0);
	T_EQ_INT(dns_result_is_permanent(DNS_RESULT_TEMPFAIL), 0);
	T_EQ_INT(dns_result_is_permanent(DNS_RESULT_NXDOMAIN), 1);
	T_EQ_INT(dns_result_is_permanent(DNS_RESULT_NULL_MX), 1);
	T_EQ_INT(dns_result_is_permanent(DNS_RESULT_NOHOST), 1);
	T_CASE("result names");
	T_EQ_STR(dns_result_str(DNS_RESULT_NULL_MX), "null-mx");
	T_EQ_STR(dns_result_str(DNS_RESULT_TEMPFAIL), "tempfail");
	T_EQ_STR(dns_result_str((enum dns_result)99), "unknown");
}

/* --- answers read over TCP (dns_answer_parse) ---------------------------- */

/* MX answer to "mx.fuzz.test" (id 0x1234): mx.fuzz.test MX 10 mail.fuzz.test. */
static const uint8_t mx_answer[] = {
	0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0,
	2, 'm', 'x', 4, 'f', 'u', 'z', 'z', 4, 't', 'e', 's', 't', 0, 0, 15, 0, 1,
	0xc0, 12, 0, 15, 0, 1, 0, 0, 1, 44, 0, 18,
	0, 10, 4, 'm', 'a', 'i', 'l', 4, 'f', 'u', 'z', 'z', 4, 't', 'e', 's', 't', 0,
};
#define MX_ANSWER_Q 12          /* offset of the question's name */

/* the same with the question compressed: "\2mx" then a pointer to the
 * exchange's "\4fuzz\4test" (offset 40) */
static const uint8_t mx_answer_cq[] = {
	0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0,
	2, 'm', 'x', 0xc0, 40, 0, 15, 0, 1,
	0xc0, 12, 0, 15, 0, 1, 0, 0, 1, 44, 0, 18,
	0, 10, 4, 'm', 'a', 'i', 'l', 4, 'f', 'u', 'z', 'z', 4, 't', 'e', 's', 't', 0,
};

/* answer_parse - dns_answer_parse of len bytes of pkt, read from a copy
 * that ends at a PROT_NONE page, as the MX question for mx.fuzz.test. */
static int answer_parse(const uint8_t *pkt, size_t len, unsigned qtype, void **rr)
{
	uint8_t qdn[DNS_MAXDN];
	void *base;
	size_t maplen;
	const uint8_t *copy = t_guard_copy(pkt, len, &base, &maplen);
	int rc;

	if (dns_sptodn("mx.fuzz.test", qdn, sizeof(qdn)) <= 0)
		return -1000;
	rc = dns_answer_parse(copy, len, 0x1234, qdn, qtype, rr);
	t_guard_free(base, maplen);
	return rc;
}

static void test_answer_parse(void)
{
	uint8_t p[sizeof(mx_answer)];
	void *rr = NULL;
	struct dns_rr_mx *mx;

	T_CASE("tcp answer: one MX");
	T_EQ_INT(answer_parse(mx_answer, sizeof(mx_answer), DNS_T_MX, &rr), DNS_E_NOERROR);
	mx = rr;
	T_CHECK(mx != NULL && mx->dnsmx_nrr == 1, "got no single MX record");
	if (mx != NULL && mx->dnsmx_nrr == 1) {
		T_EQ_INT(mx->dnsmx_mx[0].priority, 10);
		T_EQ_STR(mx->dnsmx_mx[0].name, "mail.fuzz.test");
		T_EQ_STR(mx->dnsmx_qname, "mx.fuzz.test");
	}
	free(rr);

	T_CASE("tcp answer: the question in another case");
	memcpy(p, mx_answer, sizeof(p));
	p[MX_ANSWER_Q + 1] = 'M';
	p[MX_ANSWER_Q + 4] = 'F';
	T_EQ_INT(answer_parse(p, sizeof(p), DNS_T_MX, &rr), DNS_E_NOERROR);
	free(rr);

	/* udns's record parsers read the question at its fixed place as a
	 * plain name: a compressed one, which dns_getdn would expand to the
	 * same name, must not get that far */
	T_CASE("tcp answer: compressed question (0xc0 pointer)");
	memcpy(p, mx_answer_cq, sizeof(mx_answer_cq));
	T_EQ_INT(answer_parse(p, sizeof(mx_answer_cq), DNS_T_MX, &rr), DNS_E_PROTOCOL);
	T_CHECK(rr == NULL, "got records for a compressed question");
	T_CASE("tcp answer: compressed question (0x80, which udns takes as a pointer)");
	p[MX_ANSWER_Q + 3] = 0x80;
	T_EQ_INT(answer_parse(p, sizeof(mx_answer_cq), DNS_T_MX, &rr), DNS_E_PROTOCOL);

	T_CASE("tcp answer: another id");
	memcpy(p, mx_answer, sizeof(p));
	p[1] = 0x35;
	T_EQ_INT(answer_parse(p, sizeof(p), DNS_T_MX, &rr), DNS_E_PROTOCOL);
	T_CASE("tcp answer: not a reply (QR clear)");
	memcpy(p, mx_answer, sizeof(p));
	p[2] = 0x01;
	T_EQ_INT(answer_parse(p, sizeof(p), DNS_T_MX, &rr), DNS_E_PROTOCOL);
	T_CASE("tcp answer: truncated again (TC)");
	p[2] = 0x83;
	T_EQ_INT(answer_parse(p, sizeof(p), DNS_T_MX, &rr), DNS_E_PROTOCOL);
	T_CASE("tcp answer: another name");
	memcpy(p, mx_answer, sizeof(p));
	p[MX_ANSWER_Q + 2] = 'y';
	T_EQ_INT(answer_parse(p, sizeof(p), DNS_T_MX, &rr), DNS_E_PROTOCOL);
	T_CASE("tcp answer: another type asked (A)");
	T_EQ_INT(answer_parse(mx_answer, sizeof(mx_answer), DNS_T_A, &rr), DNS_E_PROTOCOL);
	T_CASE("tcp answer: a type we never ask");
	T_EQ_INT(answer_parse(mx_answer, sizeof(mx_answer), DNS_T_TXT, &rr), DNS_E_BADQUERY);
	for (size_t n = 0; n < MX_ANSWER_Q + 18; n++) {
		T_CASE("tcp answer: cut inside the header or question");
		T_EQ_INT(answer_parse(mx_answer, n, DNS_T_MX, &rr), DNS_E_PROTOCOL);
	}
	T_CASE("tcp answer: cut inside the record");
	T_EQ_INT(answer_parse(mx_answer, sizeof(mx_answer) - 3, DNS_T_MX, &rr), DNS_E_PROTOCOL);
	T_CHECK(rr == NULL, "got records from a cut answer");

	T_CASE("tcp answer: NXDOMAIN");
	memcpy(p, mx_answer, sizeof(p));
	p[3] = 0x83;
	T_EQ_INT(answer_parse(p, sizeof(p), DNS_T_MX, &rr), DNS_E_NXDOMAIN);
	T_CASE("tcp answer: SERVFAIL is temporary");
	p[3] = 0x82;
	T_EQ_INT(answer_parse(p, sizeof(p), DNS_T_MX, &rr), DNS_E_TEMPFAIL);
	T_CASE("tcp answer: no records");
	memcpy(p, mx_answer, sizeof(p));
	p[7] = 0;
	T_EQ_INT(answer_parse(p, sizeof(p), DNS_T_MX, &rr), DNS_E_NODATA);
}


/* --- set-up (no ring: nothing is submitted before the first lookup) ------ */

static void test_opts_from_conf(void)
{
	static const char text[] = "dns_servers = 127.0.0.1:5353, [::1]:53\n";
	struct conf c;
	struct dns_opts o;
	struct rm_err err = { 0 };

	T_CASE("dns_opts_from_conf: defaults use resolv_conf");
	T_EQ_INT(conf_defaults(&c, &err), 0);
	dns_opts_from_conf(&o, &c, 5);
	T_EQ_INT(o.op, 5);
	T_EQ_INT(o.n_servers, 0);
	T_EQ_STR(o.resolv_conf, "/etc/resolv.conf");
	T_CHECK(o.myhostname == c.myhostname, "got myhostname not borrowed from conf");
	T_CASE("dns_opts_from_conf: dns_servers");
	T_EQ_INT(conf_parse_text(&c, "t", text, sizeof(text) - 1, &err), 0);
	dns_opts_from_conf(&o, &c, 5);
	T_EQ_INT(o.n_servers, 2);
	T_EQ_INT(ntohs(((const struct sockaddr_in *)&o.servers[0].addr)->sin_port), 5353);
	T_EQ_INT(o.servers[1].addr.ss_family, AF_INET6);
	conf_fini(&c);
}

/* new_resolver - dns_resolver_new on a reactor that never starts. */
static int new_resolver(const struct dns_opts *o, struct rm_err *err)
{
	struct reactor r;
	struct reactor_opts ro = { .n_bufs = 1 };
	struct dns_resolver *d;

	if (reactor_init(&r, &ro, err) < 0)
		return -1000;
	d = dns_resolver_new(&r, o, err);
	dns_resolver_free(d);
	close(r.wake_fd);
	return d ? 0 : err->code;
}

static void test_resolver_new(void)
{
	char path[] = "/tmp/test_dns_resolv.XXXXXX";
	struct conf_addr many[CONF_MAX_DNS_SERVERS];
	struct rm_err err = { 0 };
	struct dns_opts o = { .op = 3 };
	int fd;

	T_CASE("resolver: op 0 refused");
	o.op = 0;
	T_EQ_INT(new_resolver(&o, &err), -EINVAL);
	T_CASE("resolver: op above REACTOR_OP_USER_MAX refused");
	o.op = REACTOR_OP_USER_MAX + 1;
	T_EQ_INT(new_resolver(&o, &err), -EINVAL);

	T_CASE("resolver: resolv.conf with servers and options");
	fd = mkstemp(path);
	T_CHECK(fd >= 0, "mkstemp failed");
	if (fd >= 0) {
		static const char rc[] = "# comment\n; other comment\nsearch example.org\n"
			"nameserver 127.0.0.1\nnameserver ::1\noptions ndots:2 timeout:1 attempts:2\n"
			"nameserver\n";

		T_CHECK(write(fd, rc, sizeof(rc) - 1) == (ssize_t)(sizeof(rc) - 1), "write failed");
		close(fd);
	}
	o.op = 3;
	o.resolv_conf = path;
	T_EQ_INT(new_resolver(&o, &err), 0);
	T_CASE("resolver: empty resolv.conf means 127.0.0.1");
	fd = open(path, O_WRONLY | O_TRUNC);
	if (fd >= 0)
		close(fd);
	T_EQ_INT(new_resolver(&o, &err), 0);
	unlink(path);
	T_CASE("resolver: missing resolv.conf");
	T_EQ_INT(new_resolver(&o, &err), -ENOENT);
	T_CHECK(strstr(err.msg, "dns: open /tmp/test_dns_resolv.") == err.msg,
		"got \"%s\", want \"dns: open PATH: ...\"", err.msg);

	T_CASE("resolver: more servers than udns takes (6)");
	memset(many, 0, sizeof(many));
	for (size_t i = 0; i < CONF_MAX_DNS_SERVERS; i++) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&many[i].addr;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)(5300 + i));
		sin->sin_addr.s_addr = htonl(0x7f000001);
		many[i].addr_len = sizeof(*sin);
	}
	o.servers = many;
	o.n_servers = CONF_MAX_DNS_SERVERS;
	T_EQ_INT(new_resolver(&o, &err), -EINVAL);
	T_CASE("resolver: six servers");
	o.n_servers = 6;
	T_EQ_INT(new_resolver(&o, &err), 0);
	T_CASE("resolver: myhostname must be a host name");
	o.myhostname = "bad name";
	T_EQ_INT(new_resolver(&o, &err), -EINVAL);
	o.myhostname = "Relay.Example.ORG.";
	T_EQ_INT(new_resolver(&o, &err), 0);
}

int main(void)
{
	test_name_normalize();
	test_addr_literal();
	test_addr_sockaddr();
	test_mx_build();
	test_mx_drop_self();
	test_mx_shuffle();
	test_cache_ttl();
	test_cache_lru();
	test_results();
	test_answer_parse();
	test_opts_from_conf();
	test_resolver_new();
	return t_done();
}
