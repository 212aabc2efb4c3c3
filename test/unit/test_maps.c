/*
 * test_maps - unit tests for the maps module: next-hop grammar (valid
 * forms through maps_route_format() and the round trip, invalid ones with
 * their reason), transport map files (errors as "FILE:LINE: problem",
 * lookup order), relay_recipients files and lookups, the caps, and a
 * table of a million addresses. Every parse and lookup runs on a copy
 * that ends at a PROT_NONE page (t_guard_copy), so an over-read faults.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ringmta/maps.h"

#include "t.h"

/* ---- next hops --------------------------------------------------------- */

static const struct hop_case {
	const char *name, *in;
	const char *want;     /* maps_route_format(), or NULL: an error */
	const char *why;      /* the error's reason */
	int proto;
	bool is_mx, is_ip, is_unix;
} hop_cases[] = {
	{ "smtp [host]", "smtp:[mail.example.com]", "smtp:[mail.example.com]:25",
	  NULL, MAPS_SMTP, false, false, false },
	{ "smtp [host]:port", "smtp:[mail.example.com]:2525",
	  "smtp:[mail.example.com]:2525", NULL, MAPS_SMTP, false, false, false },
	{ "smtp host: MX lookup", "smtp:Example.COM", "smtp:example.com:25",
	  NULL, MAPS_SMTP, true, false, false },
	{ "smtp host:port: MX lookup", "smtp:example.com:587",
	  "smtp:example.com:587", NULL, MAPS_SMTP, true, false, false },
	{ "smtp [a.b.c.d]", "smtp:[192.0.2.1]", "smtp:[192.0.2.1]:25", NULL,
	  MAPS_SMTP, false, true, false },
	{ "smtp [IPv6:...] RFC 5321 4.1.3 tag", "smtp:[IPv6:2001:DB8::1]:25",
	  "smtp:[IPv6:2001:db8::1]:25", NULL, MAPS_SMTP, false, true, false },
	{ "smtp [ipv6:...] lower-case tag", "smtp:[ipv6:::1]",
	  "smtp:[IPv6:::1]:25", NULL, MAPS_SMTP, false, true, false },
	{ "smtp [::1]:25 bare IPv6", "smtp:[::1]:25", "smtp:[IPv6:::1]:25", NULL,
	  MAPS_SMTP, false, true, false },
	{ "lmtp [host]:port", "lmtp:[lmtp.example.com]:2424",
	  "lmtp:[lmtp.example.com]:2424", NULL, MAPS_LMTP, false, false, false },
	{ "lmtp host:port: never MX", "lmtp:Store.example.com:24",
	  "lmtp:[store.example.com]:24", NULL, MAPS_LMTP, false, false, false },
	{ "lmtp host: default port 24", "lmtp:store.example.com",
	  "lmtp:[store.example.com]:24", NULL, MAPS_LMTP, false, false, false },
	{ "lmtp a.b.c.d without brackets", "lmtp:127.0.0.1:24",
	  "lmtp:[127.0.0.1]:24", NULL, MAPS_LMTP, false, true, false },
	{ "lmtp inet: (Postfix spelling)", "lmtp:inet:[::1]:24",
	  "lmtp:[IPv6:::1]:24", NULL, MAPS_LMTP, false, true, false },
	{ "lmtp unix socket", "lmtp:unix:/run/dovecot/lmtp",
	  "lmtp:unix:/run/dovecot/lmtp", NULL, MAPS_LMTP, false, false, true },
	{ "port 65535", "smtp:[h.example]:65535", "smtp:[h.example]:65535", NULL,
	  MAPS_SMTP, false, false, false },

	{ "unknown transport", "relay:[h.example]", NULL,
	  "next hop is not smtp:... or lmtp:...", 0, false, false, false },
	{ "transport is case-sensitive", "SMTP:[h.example]", NULL,
	  "next hop is not smtp:... or lmtp:...", 0, false, false, false },
	{ "error: transport refused", "error:5.1.1 no such user", NULL,
	  "next hop is not smtp:... or lmtp:...", 0, false, false, false },
	{ "empty after smtp:", "smtp:", NULL,
	  "empty next hop after the transport", 0, false, false, false },
	{ "port 0", "smtp:[h.example]:0", NULL, "port is not 1..65535", 0,
	  false, false, false },
	{ "port 65536", "smtp:h.example:65536", NULL, "port is not 1..65535", 0,
	  false, false, false },
	{ "port with sign", "smtp:h.example:+25", NULL, "port is not 1..65535",
	  0, false, false, false },
	{ "empty port", "smtp:[h.example]:", NULL, "port is not 1..65535", 0,
	  false, false, false },
	{ "junk after ]", "smtp:[h.example]x", NULL, "port is not 1..65535", 0,
	  false, false, false },
	{ "missing ]", "smtp:[h.example:25", NULL, "missing ']'", 0, false,
	  false, false },
	{ "bad IPv6 with tag", "smtp:[IPv6:192.0.2.1]", NULL, "bad IPv6 address",
	  0, false, false, false },
	{ "bad IPv6 without tag", "smtp:[2001:db8::g]", NULL, "bad IPv6 address",
	  0, false, false, false },
	{ "smtp IP without brackets", "smtp:192.0.2.1:25", NULL,
	  "an IP address needs brackets: smtp:[a.b.c.d]", 0, false, false, false },
	{ "smtp IPv6 without brackets", "smtp:2001:db8::1", NULL,
	  "top-level label is all digits", 0, false, false, false },
	{ "empty host", "smtp::25", NULL, "empty host", 0, false, false, false },
	{ "empty brackets", "smtp:[]", NULL, "empty domain name", 0, false,
	  false, false },
	{ "bad domain", "smtp:exa_mple.com", NULL,
	  "invalid character in domain name", 0, false, false, false },
	{ "trailing dot", "smtp:example.com.", NULL,
	  "empty label in domain name", 0, false, false, false },
	{ "lmtp unix relative", "lmtp:unix:private/dovecot-lmtp", NULL,
	  "unix socket path is not absolute", 0, false, false, false },
	{ "smtp unix refused", "smtp:unix:/x", NULL,
	  "port is not 1..65535", 0, false, false, false },
};

static void test_nexthop(void)
{
	size_t i;

	for (i = 0; i < sizeof(hop_cases) / sizeof(hop_cases[0]); i++) {
		const struct hop_case *tc = &hop_cases[i];
		size_t len = strlen(tc->in), ml;
		char text[MAPS_ROUTE_TEXT_BYTES];
		const char *why = NULL, *g;
		struct maps_route r, r2;
		void *base;
		int rc;

		T_CASE(tc->name);
		g = t_guard_copy(tc->in, len, &base, &ml);
		rc = maps_nexthop_parse(g, len, &r, &why);
		t_guard_free(base, ml);
		if (tc->want == NULL) {
			T_EQ_INT(rc, -EINVAL);
			T_EQ_STR(why, tc->why);
			continue;
		}
		T_CHECK(rc == 0, "got %d (%s), want 0", rc, why ? why : "");
		if (rc < 0)
			continue;
		T_EQ_STR(maps_route_format(&r, text, sizeof(text)), tc->want);
		T_EQ_INT(r.proto, tc->proto);
		T_EQ_INT(r.is_mx, tc->is_mx);
		T_EQ_INT(r.is_ip, tc->is_ip);
		T_EQ_INT(r.is_unix, tc->is_unix);
		rc = maps_nexthop_parse(text, strlen(text), &r2, &why);
		T_CHECK(rc == 0 && r.proto == r2.proto && r.is_mx == r2.is_mx &&
			r.is_ip == r2.is_ip && r.is_unix == r2.is_unix &&
			r.port == r2.port && strcmp(r.host, r2.host) == 0 &&
			strcmp(r.path, r2.path) == 0,
			"round trip of %s: got rc %d or a different route", text,
			rc);
	}
	{
		const char *why = NULL;
		struct maps_route r;

		T_CASE("fields of smtp:[::1]:2525");
		maps_nexthop_parse("smtp:[::1]:2525", 15, &r, &why);
		T_EQ_STR(r.host, "::1");
		T_EQ_INT(r.port, 2525);
		T_CASE("fields of lmtp:unix:/s");
		maps_nexthop_parse("lmtp:unix:/s", 12, &r, &why);
		T_EQ_STR(r.path, "/s");
		T_EQ_STR(r.host, "");
		T_EQ_INT(r.port, 0);
		T_CASE("unix path of 107 bytes (sun_path and its NUL)");
		{
			char p[10 + MAPS_PATH_BYTES + 1];
			memcpy(p, "lmtp:unix:/", 11);
			memset(p + 11, 'a', MAPS_PATH_BYTES - 2);
			T_EQ_INT(maps_nexthop_parse(p, 10 + MAPS_PATH_BYTES - 1, &r,
						    &why), 0);
			T_EQ_INT(strlen(r.path), MAPS_PATH_BYTES - 1);
			T_CASE("unix path of 108 bytes");
			p[10 + MAPS_PATH_BYTES - 1] = 'a';
			T_EQ_INT(maps_nexthop_parse(p, 10 + MAPS_PATH_BYTES, &r,
						    &why), -EINVAL);
			T_EQ_STR(why, "unix socket path longer than 107 bytes");
		}
		T_CASE("length-bounded: the byte after len is not read as port");
		T_EQ_INT(maps_nexthop_parse("smtp:[h.example]:25x", 19, &r, &why), 0);
		T_EQ_INT(r.port, 25);
	}
}

/* ---- transport map files ------------------------------------------------ */

/* tparse - parse text (before a guard page) as a transport map. */
static int tparse(const char *text, size_t len, struct maps_transport **t,
		  struct rm_err *err)
{
	void *base;
	size_t ml;
	const char *g = t_guard_copy(text, len, &base, &ml);
	int rc = maps_transport_parse("transport", g, len, t, err);

	t_guard_free(base, ml);
	return rc;
}

static const struct file_case {
	const char *name, *text, *want;
} transport_bad[] = {
	{ "one token", "example.com\n",
	  "transport:1: \"example.com\": missing next hop (lines are DOMAIN NEXTHOP)" },
	{ "extra token", "example.com smtp:[h.example] x\n",
	  "transport:1: unexpected \"x\" after the next hop" },
	{ "bad next hop names the line", "# c\n\nexample.com smtp:[h.example]\n"
	  "example.org smtp:[h.example]:99999\n",
	  "transport:4: \"smtp:[h.example]:99999\": port is not 1..65535" },
	{ "bad domain", "exa mple.com smtp:[h]\n",
	  "transport:1: unexpected \"smtp:[h]\" after the next hop" },
	{ "bad domain char", "ex_ample.com smtp:[h.example]\n",
	  "transport:1: \"ex_ample.com\": invalid character in domain name" },
	{ "wildcard label refused", "*.example.com smtp:[h.example]\n",
	  "transport:1: \"*.example.com\": invalid character in domain name" },
	{ "dot alone", ". smtp:[h.example]\n",
	  "transport:1: \".\": empty domain name" },
	{ "trailing dot in key", "example.com. smtp:[h.example]\n",
	  "transport:1: \"example.com.\": empty label in domain name" },
	{ "duplicate, other case", "a.example smtp:[h.example]\n"
	  "b.example smtp:[h.example]\nA.Example smtp:[i.example]\n",
	  "transport:3: \"a.example\" is listed twice (first on line 1)" },
	{ "earliest duplicate reported", "z.example smtp:[h.example]\n"
	  "a.example smtp:[h.example]\nz.example smtp:[h.example]\n"
	  "a.example smtp:[h.example]\n",
	  "transport:3: \"z.example\" is listed twice (first on line 1)" },
	{ "duplicate default", "* smtp:[h.example]\n* smtp:[i.example]\n",
	  "transport:2: \"*\" is listed twice (first on line 1)" },
	{ "control byte", "example.com\tsmtp:[h.example]\x01\n",
	  "transport:1: invalid byte 0x01 at column 29" },
	{ "NUL byte", "a.example smtp:[h.example]\n\0\n",
	  "transport:2: invalid byte 0x00 at column 1" },
};

static void test_transport_files(void)
{
	struct maps_transport *t;
	struct rm_err err;
	size_t i;
	int rc;

	for (i = 0; i < sizeof(transport_bad) / sizeof(transport_bad[0]); i++) {
		const struct file_case *tc = &transport_bad[i];
		size_t len = strlen(tc->text);

		if (strcmp(tc->name, "NUL byte") == 0)
			len = 29;
		T_CASE(tc->name);
		memset(&err, 0, sizeof(err));
		rc = tparse(tc->text, len, &t, &err);
		T_EQ_INT(rc, -EINVAL);
		T_CHECK(t == NULL, "got a map, want NULL");
		T_EQ_STR(err.msg, tc->want);
	}
	T_CASE("empty text: an empty map");
	rc = tparse("", 0, &t, &err);
	T_EQ_INT(rc, 0);
	T_EQ_INT(maps_transport_count(t), 0);
	maps_transport_free(t);
	T_CASE("comments, blanks, CRLF, leading blanks, no final LF");
	{
		static const char txt[] = "# transport\r\n\r\n   \t\n  "
			"a.example\t smtp:[h.example] \r\n  # more\n* lmtp:unix:/s";
		rc = tparse(txt, sizeof(txt) - 1, &t, &err);
	}
	T_CHECK(rc == 0, "got %d (%s), want 0", rc, err.msg);
	T_EQ_INT(maps_transport_count(t), 2);
	maps_transport_free(t);
	T_CASE("free(NULL)");
	maps_transport_free(NULL);
}

/* ---- transport lookups -------------------------------------------------- */

static const char transport_text[] =
	"# sample transport map\n"
	"example.com        smtp:[exact.example.net]\n"
	".example.com       smtp:[sub.example.net]:2525\n"
	".b.example.com     smtp:b.example.net\n"
	"Mixed.Example      lmtp:[::1]:24\n"
	"store.example.org  lmtp:unix:/run/lmtp\n"
	"*                  smtp:[default.example.net]\n";

static const struct lookup_case {
	const char *name, *domain, *want; /* want NULL: -ENOENT */
} lookup_cases[] = {
	{ "exact", "example.com", "smtp:[exact.example.net]:25" },
	{ "exact, other case", "EXAMPLE.Com", "smtp:[exact.example.net]:25" },
	{ "exact, trailing dot", "example.com.", "smtp:[exact.example.net]:25" },
	{ "subdomain", "a.example.com", "smtp:[sub.example.net]:2525" },
	{ "closest parent wins", "x.b.example.com", "smtp:b.example.net:25" },
	{ "deeper, closest parent", "y.x.b.example.com", "smtp:b.example.net:25" },
	{ "parent of a .entry: its parent's .entry", "b.example.com",
	  "smtp:[sub.example.net]:2525" },
	{ "key stored lower-case", "mixed.example", "lmtp:[IPv6:::1]:24" },
	{ "unix route", "Store.Example.Org.", "lmtp:unix:/run/lmtp" },
	{ "no label boundary falls to *", "xexample.com",
	  "smtp:[default.example.net]:25" },
	{ "other domain falls to *", "example.org", "smtp:[default.example.net]:25" },
	{ "address literal falls to *", "[192.0.2.1]",
	  "smtp:[default.example.net]:25" },
	{ "empty falls to *", "", "smtp:[default.example.net]:25" },
	{ "UTF-8 falls to *", "\xc3\xa9.example.com", "smtp:[default.example.net]:25" },
	{ "a .key is not an exact match", ".example.com",
	  "smtp:[default.example.net]:25" },
};

static void test_transport_lookup(void)
{
	const struct maps_route *r;
	struct maps_transport *t, *t2;
	char text[MAPS_ROUTE_TEXT_BYTES];
	struct rm_err err;
	size_t i, len, ml;
	void *base;
	int rc;

	rc = tparse(transport_text, strlen(transport_text), &t, &err);
	T_CHECK(rc == 0, "parse: got %d (%s), want 0", rc, err.msg);
	rc = tparse(transport_text, (size_t)(strstr(transport_text, "\n*") + 1 -
					     transport_text), &t2, &err);
	T_CHECK(rc == 0, "parse without *: got %d (%s), want 0", rc, err.msg);
	if (t == NULL || t2 == NULL)
		return;
	T_CASE("count");
	T_EQ_INT(maps_transport_count(t), 6);
	for (i = 0; i < sizeof(lookup_cases) / sizeof(lookup_cases[0]); i++) {
		const struct lookup_case *tc = &lookup_cases[i];
		const char *g;

		T_CASE(tc->name);
		len = strlen(tc->domain);
		g = t_guard_copy(tc->domain, len, &base, &ml);
		rc = maps_transport_lookup(t, g, len, &r);
		T_EQ_INT(rc, 0);
		if (rc == 0)
			T_EQ_STR(maps_route_format(r, text, sizeof(text)), tc->want);
		/* without the "*" line, what fell to "*" is -ENOENT */
		rc = maps_transport_lookup(t2, g, len, &r);
		if (strstr(tc->want, "default") != NULL)
			T_EQ_INT(rc, -ENOENT);
		else
			T_EQ_INT(rc, 0);
		t_guard_free(base, ml);
	}
	T_CASE("NULL map");
	T_EQ_INT(maps_transport_lookup(NULL, "example.com", 11, &r), -ENOENT);
	T_CASE("length-bounded domain");
	rc = maps_transport_lookup(t, "example.comX", 11, &r);
	T_EQ_INT(rc, 0);
	T_EQ_STR(maps_route_format(r, text, sizeof(text)),
		 "smtp:[exact.example.net]:25");
	T_CASE("route format cut short stays terminated");
	maps_route_format(r, text, 8);
	T_EQ_STR(text, "smtp:[e");
	maps_transport_free(t);
	maps_transport_free(t2);
}

/* ---- relay recipients --------------------------------------------------- */

/* rparse - parse text (before a guard page) as relay_recipients. */
static int rparse(const char *text, size_t len, struct maps_rcpt **m,
		  struct rm_err *err)
{
	void *base;
	size_t ml;
	const char *g = t_guard_copy(text, len, &base, &ml);
	int rc = maps_rcpt_parse("rcpts", g, len, m, err);

	t_guard_free(base, ml);
	return rc;
}

static const struct file_case rcpt_bad[] = {
	{ "no @", "user@example.com\nuser\n",
	  "rcpts:2: \"user\": no '@' (lines are local@domain or @domain)" },
	{ "empty domain", "user@\n", "rcpts:1: \"user@\": empty domain" },
	{ "trailing dot", "user@example.com.\n",
	  "rcpts:1: \"user@example.com.\": empty label in domain" },
	{ "empty label", "@a..example\n", "rcpts:1: \"@a..example\": empty label in domain" },
	{ "literal", "user@[192.0.2.1]\n",
	  "rcpts:1: \"user@[192.0.2.1]\": an address literal cannot be a relay domain" },
	{ "bad domain char", "user@exa_mple.com\n",
	  "rcpts:1: \"user@exa_mple.com\": invalid character in domain" },
	{ "local part too long",
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x.example\n",
	  "rcpts:1: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": "
	  "local part longer than 64 bytes" },
	{ "control byte", "# ok\nuser@example.com\x7f\n",
	  "rcpts:2: invalid byte 0x7f at column 17" },
};

static const char rcpt_text[] =
	"# relay recipients\n"
	"alice@example.com\n"
	"Bob@Example.COM   OK\n"
	"\"quoted\"@example.com\n"
	"carol@example.com\r\n"
	"alice@example.com\n"
	"@catchall.example\n"
	"dave@other.example\n"
	"erin@\xc3\xa9t\xc3\xa9.example\n"
	"a@b@weird.example\n";

static const struct rcpt_case {
	const char *name, *addr;
	enum maps_rcpt_result want;
} rcpt_cases[] = {
	{ "listed", "alice@example.com", MAPS_RCPT_FOUND },
	{ "listed, mixed case lookup", "ALICE@Example.Com", MAPS_RCPT_FOUND },
	{ "listed mixed case, lower lookup", "bob@example.com", MAPS_RCPT_FOUND },
	{ "CRLF line", "carol@example.com", MAPS_RCPT_FOUND },
	{ "quoted local part", "\"quoted\"@example.com", MAPS_RCPT_FOUND },
	{ "trailing dot of the domain", "alice@example.com.", MAPS_RCPT_FOUND },
	{ "unknown in a listed domain", "mallory@example.com", MAPS_RCPT_UNKNOWN },
	{ "prefix of a listed address", "alic@example.com", MAPS_RCPT_UNKNOWN },
	{ "longer than a listed address", "alicee@example.com", MAPS_RCPT_UNKNOWN },
	{ "@domain wildcard", "anyone@catchall.example", MAPS_RCPT_FOUND },
	{ "@domain wildcard, case", "Anyone@CatchAll.Example", MAPS_RCPT_FOUND },
	{ "wildcard is not for subdomains", "x@sub.catchall.example",
	  MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN },
	{ "other listed domain", "dave@other.example", MAPS_RCPT_FOUND },
	{ "other listed domain, unknown", "eve@other.example", MAPS_RCPT_UNKNOWN },
	{ "domain not in the table", "alice@example.org",
	  MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN },
	{ "UTF-8 domain, bytes as is", "erin@\xc3\xa9t\xc3\xa9.example",
	  MAPS_RCPT_FOUND },
	{ "UTF-8 is not case-folded", "erin@\xc3\x89t\xc3\xa9.example",
	  MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN },
	{ "domain after the last @", "a@b@weird.example", MAPS_RCPT_FOUND },
	{ "last @ decides the domain", "c@weird.example", MAPS_RCPT_UNKNOWN },
	{ "no @", "alice", MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN },
	{ "empty", "", MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN },
	{ "domain only, no local", "@example.com", MAPS_RCPT_UNKNOWN },
	{ "@ at the end", "alice@", MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN },
};

static void test_rcpt(void)
{
	struct maps_rcpt *m;
	struct rm_err err;
	size_t i, len, ml;
	void *base;
	int rc;

	for (i = 0; i < sizeof(rcpt_bad) / sizeof(rcpt_bad[0]); i++) {
		const struct file_case *tc = &rcpt_bad[i];

		T_CASE(tc->name);
		memset(&err, 0, sizeof(err));
		rc = rparse(tc->text, strlen(tc->text), &m, &err);
		T_EQ_INT(rc, -EINVAL);
		T_CHECK(m == NULL, "got a table, want NULL");
		T_EQ_STR(err.msg, tc->want);
	}
	rc = rparse(rcpt_text, strlen(rcpt_text), &m, &err);
	T_CHECK(rc == 0, "parse: got %d (%s), want 0", rc, err.msg);
	if (m == NULL)
		return;
	T_CASE("count: the duplicate is stored once");
	T_EQ_INT(maps_rcpt_count(m), 8);
	for (i = 0; i < sizeof(rcpt_cases) / sizeof(rcpt_cases[0]); i++) {
		const struct rcpt_case *tc = &rcpt_cases[i];
		const char *g;
		enum maps_rcpt_result got;

		T_CASE(tc->name);
		len = strlen(tc->addr);
		g = t_guard_copy(tc->addr, len, &base, &ml);
		got = maps_rcpt_lookup(m, g, len);
		T_CHECK(got == tc->want, "got %s, want %s", maps_rcpt_result_name(got),
			maps_rcpt_result_name(tc->want));
		t_guard_free(base, ml);
	}
	T_CASE("length-bounded address");
	T_EQ_INT(maps_rcpt_lookup(m, "alice@example.comX", 17), MAPS_RCPT_FOUND);
	T_CASE("NUL inside a lookup never matches");
	T_EQ_INT(maps_rcpt_lookup(m, "alice@example.com\0", 18),
		 MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN);
	T_CASE("longer than 512 bytes is never found");
	{
		char big[600];
		memset(big, 'a', sizeof(big));
		memcpy(big + sizeof(big) - 12, "@example.com", 12);
		T_EQ_INT(maps_rcpt_lookup(m, big, sizeof(big)),
			 MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN);
	}
	T_CASE("NULL table");
	T_EQ_INT(maps_rcpt_lookup(NULL, "alice@example.com", 17),
		 MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN);
	T_EQ_INT(maps_rcpt_count(NULL), 0);
	maps_rcpt_free(m);
	maps_rcpt_free(NULL);
	T_CASE("empty table");
	rc = rparse("# nothing\n", 10, &m, &err);
	T_EQ_INT(rc, 0);
	T_EQ_INT(maps_rcpt_lookup(m, "a@b.example", 11),
		 MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN);
	maps_rcpt_free(m);
	T_CASE("result names");
	T_EQ_STR(maps_rcpt_result_name(MAPS_RCPT_FOUND), "found");
	T_EQ_STR(maps_rcpt_result_name(MAPS_RCPT_UNKNOWN), "unknown");
	T_EQ_STR(maps_rcpt_result_name(MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN),
		 "no_entries_for_domain");
}

/* ---- caps --------------------------------------------------------------- */

/* lines_of - n transport lines (is_rcpt false) or address lines. */
static char *lines_of(size_t n, bool is_rcpt, size_t *len)
{
	size_t cap = n * 64 + 1, o = 0, i;
	char *s = malloc(cap);

	if (s == NULL)
		exit(2);
	for (i = 0; i < n; i++) {
		if (is_rcpt)
			o += (size_t)snprintf(s + o, cap - o,
					      "user%zu.%zx@domain.example\n", i, i);
		else
			o += (size_t)snprintf(s + o, cap - o,
					      "d%zu.example smtp:[h%zu.example]\n", i, i);
	}
	*len = o;
	return s;
}

static void test_limits(void)
{
	struct maps_transport *t;
	struct maps_rcpt *m;
	struct rm_err err;
	char line[MAPS_MAX_LINE_BYTES + 2], *big;
	size_t len;
	int rc;

	T_CASE("line of MAPS_MAX_LINE_BYTES is read");
	memset(line, ' ', sizeof(line));
	memcpy(line, "a@b.example", 11);
	line[MAPS_MAX_LINE_BYTES] = '\n';
	rc = rparse(line, MAPS_MAX_LINE_BYTES + 1, &m, &err);
	T_CHECK(rc == 0, "got %d (%s), want 0", rc, err.msg);
	maps_rcpt_free(m);
	T_CASE("line of MAPS_MAX_LINE_BYTES + 1 is refused");
	memset(line, ' ', sizeof(line));
	memcpy(line, "a@b.example", 11);
	rc = rparse(line, MAPS_MAX_LINE_BYTES + 1, &m, &err);
	T_EQ_INT(rc, -EINVAL);
	T_EQ_STR(err.msg, "rcpts:1: line longer than 2048 bytes");
	rc = tparse(line, MAPS_MAX_LINE_BYTES + 1, &t, &err);
	T_EQ_STR(err.msg, "transport:1: line longer than 2048 bytes");

	T_CASE("transport file larger than its cap: -EFBIG, nothing read");
	rc = maps_transport_parse("big", "", MAPS_TRANSPORT_MAX_FILE_BYTES + 1ul,
				  &t, &err);
	T_EQ_INT(rc, -EFBIG);
	T_EQ_STR(err.msg, "maps: big: larger than 67108864 bytes");
	T_CASE("rcpt file larger than its cap: -EFBIG, nothing read");
	rc = maps_rcpt_parse("big", "", MAPS_RCPT_MAX_FILE_BYTES + 1ul, &m, &err);
	T_EQ_INT(rc, -EFBIG);
	T_EQ_STR(err.msg, "maps: big: larger than 268435456 bytes");

	T_CASE("MAPS_TRANSPORT_MAX_ENTRIES routes load");
	big = lines_of(MAPS_TRANSPORT_MAX_ENTRIES, false, &len);
	rc = maps_transport_parse("t", big, len, &t, &err);
	T_CHECK(rc == 0, "got %d (%s), want 0", rc, err.msg);
	T_EQ_INT(maps_transport_count(t), MAPS_TRANSPORT_MAX_ENTRIES);
	maps_transport_free(t);
	free(big);
	T_CASE("one more route is refused on its line");
	big = lines_of(MAPS_TRANSPORT_MAX_ENTRIES + 1, false, &len);
	rc = maps_transport_parse("t", big, len, &t, &err);
	T_EQ_INT(rc, -EINVAL);
	T_EQ_STR(err.msg, "t:100001: more than 100000 entries");
	free(big);
}

/* ---- a million addresses ------------------------------------------------ */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_million(void)
{
	enum { N = 1000000 };
	struct maps_rcpt *m;
	struct rm_err err;
	char addr[64];
	size_t len, i, found = 0, unknown = 0;
	double t0, t1, t2;
	char *text;
	int rc;

	T_CASE("1M addresses: parse and look up every one");
	text = lines_of(N, true, &len);
	t0 = now_s();
	rc = maps_rcpt_parse("big", text, len, &m, &err);
	t1 = now_s();
	T_CHECK(rc == 0, "got %d (%s), want 0", rc, err.msg);
	if (rc < 0) {
		free(text);
		return;
	}
	T_EQ_INT(maps_rcpt_count(m), N);
	for (i = 0; i < N; i++) {
		int n = snprintf(addr, sizeof(addr), "USER%zu.%zx@Domain.Example", i, i);
		found += maps_rcpt_lookup(m, addr, (size_t)n) == MAPS_RCPT_FOUND;
		n = snprintf(addr, sizeof(addr), "user%zu.%zx@domain.example", i, i + 1);
		unknown += maps_rcpt_lookup(m, addr, (size_t)n) == MAPS_RCPT_UNKNOWN;
	}
	t2 = now_s();
	T_EQ_INT(found, N);
	T_EQ_INT(unknown, N);
	printf("1M addresses: parse %.3f s, 2M lookups %.3f s\n", t1 - t0, t2 - t1);
	/* generous bounds: an unoptimised, sanitised build on a busy box */
	T_CHECK(t1 - t0 < 10.0, "parse took %.3f s, want < 10 s", t1 - t0);
	T_CHECK(t2 - t1 < 10.0, "lookups took %.3f s, want < 10 s", t2 - t1);
	maps_rcpt_free(m);
	free(text);
}

int main(void)
{
	test_nexthop();
	test_transport_files();
	test_transport_lookup();
	test_rcpt();
	test_limits();
	test_million();
	return t_done();
}
