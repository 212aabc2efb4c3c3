/*
 * test_smtp_proto - command lines, paths, ESMTP parameters, xtext, UTF-8
 * and the reply table. Each input is placed just before a PROT_NONE page
 * so that any read past its length faults.
 */
#include "ringmta/smtp_proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "t.h"

/* guarded - a guard-page copy of a string (of len bytes, or strlen). */
struct guarded {
	const uint8_t *p;
	size_t len;
	void *base;
	size_t maplen;
};

static struct guarded guard(const char *s, size_t len)
{
	struct guarded g;

	g.len = len ? len : strlen(s);
	g.p = t_guard_copy(s, g.len, &g.base, &g.maplen);
	return g;
}

static void unguard(struct guarded *g)
{
	t_guard_free(g->base, g->maplen);
}

static void test_cmd(void)
{
	static const struct {
		const char *name, *line;
		unsigned flags;
		int want;
		enum smtp_proto_verb verb;
		const char *arg;
	} c[] = {
		{ "ehlo", "EHLO mx.example.org", 0, 0, SMTP_PROTO_VERB_EHLO, "mx.example.org" },
		{ "lower case verb", "ehlo x", 0, 0, SMTP_PROTO_VERB_EHLO, "x" },
		{ "mail", "MAIL FROM:<a@b.c> SIZE=10", 0, 0, SMTP_PROTO_VERB_MAIL, "<a@b.c> SIZE=10" },
		{ "mail mixed case", "mail from:<>", 0, 0, SMTP_PROTO_VERB_MAIL, "<>" },
		{ "mail space after colon strict", "MAIL FROM: <a@b.c>", 0, 0, SMTP_PROTO_VERB_MAIL, " <a@b.c>" },
		{ "mail space after colon lenient", "MAIL FROM: <a@b.c>", SMTP_PROTO_LENIENT_SPACE_AFTER_COLON, 0, SMTP_PROTO_VERB_MAIL, "<a@b.c>" },
		{ "mail TO", "MAIL TO:<a@b.c>", 0, SMTP_PROTO_E_SYNTAX, SMTP_PROTO_VERB_MAIL, "" },
		{ "mail no arg", "MAIL", 0, SMTP_PROTO_E_SYNTAX, SMTP_PROTO_VERB_MAIL, "" },
		{ "rcpt", "RCPT TO:<a@b.c>", 0, 0, SMTP_PROTO_VERB_RCPT, "<a@b.c>" },
		{ "rcpt utf8", "RCPT TO:<\xc3\xa9@b.c>", 0, 0, SMTP_PROTO_VERB_RCPT, "<\xc3\xa9@b.c>" },
		{ "data", "DATA", 0, 0, SMTP_PROTO_VERB_DATA, "" },
		{ "data with arg", "DATA x", 0, SMTP_PROTO_E_SYNTAX, SMTP_PROTO_VERB_DATA, "" },
		{ "rset trailing space", "RSET ", 0, SMTP_PROTO_E_SYNTAX, SMTP_PROTO_VERB_RSET, "" },
		{ "noop with arg", "NOOP hello", 0, 0, SMTP_PROTO_VERB_NOOP, "hello" },
		{ "bdat", "BDAT 10 LAST", 0, 0, SMTP_PROTO_VERB_BDAT, "10 LAST" },
		{ "starttls", "STARTTLS", 0, 0, SMTP_PROTO_VERB_STARTTLS, "" },
		{ "unknown", "FOO bar", 0, SMTP_PROTO_E_UNKNOWN_VERB, SMTP_PROTO_VERB_UNKNOWN, "" },
		{ "verb prefix is not a verb", "DATAX", 0, SMTP_PROTO_E_UNKNOWN_VERB, SMTP_PROTO_VERB_UNKNOWN, "" },
		{ "empty line", "", 0, SMTP_PROTO_E_UNKNOWN_VERB, SMTP_PROTO_VERB_UNKNOWN, "" },
		{ "NUL", "NOOP\0", 0, SMTP_PROTO_E_BAD_CHAR, SMTP_PROTO_VERB_UNKNOWN, "" },
		{ "bare LF inside", "NOOP\nQUIT", 0, SMTP_PROTO_E_BAD_CHAR, SMTP_PROTO_VERB_UNKNOWN, "" },
		{ "8bit in noop", "NOOP \xc3\xa9", 0, SMTP_PROTO_E_BAD_CHAR, SMTP_PROTO_VERB_NOOP, "" },
		{ "8bit verb", "\xc3\xa9HLO x", 0, SMTP_PROTO_E_BAD_CHAR, SMTP_PROTO_VERB_UNKNOWN, "" },
	};
	size_t i;

	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct smtp_proto_cmd cmd;
		struct guarded g = guard(c[i].line, strcmp(c[i].name, "NUL") == 0 ? 5 : 0);
		int rc;

		T_CASE(c[i].name);
		rc = smtp_proto_cmd_parse(g.p, g.len, c[i].flags, &cmd);
		T_EQ_STR(smtp_proto_err_name(rc), smtp_proto_err_name(c[i].want));
		T_EQ_STR(smtp_proto_verb_name(cmd.verb), smtp_proto_verb_name(c[i].verb));
		if (rc == 0)
			T_EQ_MEM(cmd.arg, cmd.arg_len, c[i].arg, strlen(c[i].arg));
		unguard(&g);
	}
}

#define P_UTF8 SMTP_PROTO_PATH_UTF8
#define P_RCPT SMTP_PROTO_PATH_RCPT
#define P_NULL SMTP_PROTO_PATH_ALLOW_NULL

static void test_path(void)
{
	static char long_local[80], long_domain[300], long_path[300];
	static const struct {
		const char *name, *in;
		unsigned flags;
		int want;
		const char *addr;
		size_t used;
		int kind;
	} c[] = {
		{ "simple", "<a@b.c>", 0, 0, "a@b.c", 7, SMTP_PROTO_DOMAIN_NAME },
		{ "trailing params untouched", "<a@b.c> SIZE=1", 0, 0, "a@b.c", 7, SMTP_PROTO_DOMAIN_NAME },
		{ "null reverse-path", "<>", P_NULL, 0, "", 2, SMTP_PROTO_DOMAIN_NONE },
		{ "null forward-path", "<>", P_RCPT, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "RFC5321-4.5.1 postmaster", "<Postmaster>", P_RCPT, 0, "Postmaster", 12, SMTP_PROTO_DOMAIN_NONE },
		{ "postmaster lower", "<postmaster>", P_RCPT, 0, "postmaster", 12, SMTP_PROTO_DOMAIN_NONE },
		{ "postmaster not in MAIL", "<Postmaster>", P_NULL, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "no angle brackets", "a@b.c", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "unterminated", "<a@b.c", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "no domain", "<a>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "no local", "<@b.c>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "dot-string", "<a.b+c@d.e>", 0, 0, "a.b+c@d.e", 11, SMTP_PROTO_DOMAIN_NAME },
		{ "leading dot", "<.a@b.c>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "double dot", "<a..b@c.d>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "trailing dot local", "<a.@c.d>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "quoted local", "<\"a b\\\"c\"@d.e>", 0, 0, "\"a b\\\"c\"@d.e", 14, SMTP_PROTO_DOMAIN_NAME },
		{ "quoted with > inside", "<\"a>b\"@d.e>", 0, 0, "\"a>b\"@d.e", 11, SMTP_PROTO_DOMAIN_NAME },
		{ "quoted unterminated", "<\"ab@d.e>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "quoted control char", "<\"a\tb\"@d.e>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "space in local", "<a b@c.d>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "domain hyphen", "<a@b-c.d>", 0, 0, "a@b-c.d", 9, SMTP_PROTO_DOMAIN_NAME },
		{ "domain leading hyphen", "<a@-b.d>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "domain trailing hyphen", "<a@b-.d>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "domain trailing dot", "<a@b.d.>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "domain underscore", "<a@b_c.d>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "ipv4 literal", "<a@[192.0.2.1]>", 0, 0, "a@[192.0.2.1]", 15, SMTP_PROTO_DOMAIN_IPV4 },
		{ "ipv4 octet 256", "<a@[192.0.2.256]>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "ipv4 three parts", "<a@[192.0.2]>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "ipv6 literal", "<a@[IPv6:2001:db8::1]>", 0, 0, "a@[IPv6:2001:db8::1]", 22, SMTP_PROTO_DOMAIN_IPV6 },
		{ "ipv6 full", "<a@[IPv6:1:2:3:4:5:6:7:8]>", 0, 0, "a@[IPv6:1:2:3:4:5:6:7:8]", 26, SMTP_PROTO_DOMAIN_IPV6 },
		{ "ipv6 v4 tail", "<a@[IPv6:::ffff:192.0.2.1]>", 0, 0, "a@[IPv6:::ffff:192.0.2.1]", 27, SMTP_PROTO_DOMAIN_IPV6 },
		{ "ipv6 too many groups", "<a@[IPv6:1:2:3:4:5:6:7:8:9]>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "ipv6 comp too many", "<a@[IPv6:1:2:3:4::5:6:7]>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "ipv6 two ::", "<a@[IPv6:1::2::3]>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "ipv6 5 hex digits", "<a@[IPv6:12345::1]>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "general literal refused", "<a@[x-tag:foo]>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "RFC5321-C source route dropped", "<@x.y,@z.w:a@b.c>", 0, 0, "a@b.c", 17, SMTP_PROTO_DOMAIN_NAME },
		{ "source route bad", "<@x.y:@z:a@b.c>", 0, SMTP_PROTO_E_PATH_SYNTAX, "", 0, 0 },
		{ "RFC6531 utf8 without SMTPUTF8", "<\xc3\xa9@b.c>", 0, SMTP_PROTO_E_NEED_SMTPUTF8, "", 0, 0 },
		{ "RFC6531 utf8 local", "<\xc3\xa9@b.c>", P_UTF8, 0, "\xc3\xa9@b.c", 8, SMTP_PROTO_DOMAIN_NAME },
		{ "RFC6531 utf8 domain", "<a@\xe4\xbe\x8b.c>", P_UTF8, 0, "a@\xe4\xbe\x8b.c", 9, SMTP_PROTO_DOMAIN_NAME },
		{ "utf8 quoted", "<\"\xc3\xa9 x\"@b.c>", P_UTF8, 0, "\"\xc3\xa9 x\"@b.c", 12, SMTP_PROTO_DOMAIN_NAME },
		{ "utf8 overlong", "<\xc0\xaf@b.c>", P_UTF8, SMTP_PROTO_E_BAD_UTF8, "", 0, 0 },
		{ "utf8 surrogate", "<\xed\xa0\x80@b.c>", P_UTF8, SMTP_PROTO_E_BAD_UTF8, "", 0, 0 },
		{ "utf8 truncated", "<a@b\xc3>", P_UTF8, SMTP_PROTO_E_BAD_UTF8, "", 0, 0 },
		{ "RFC5321-4.5.3.1.1 local 65", long_local, 0, SMTP_PROTO_E_PATH_TOO_LONG, "", 0, 0 },
		{ "RFC5321-4.5.3.1.2 domain 256", long_domain, 0, SMTP_PROTO_E_PATH_TOO_LONG, "", 0, 0 },
		{ "RFC5321-4.5.3.1.3 path 257", long_path, 0, SMTP_PROTO_E_PATH_TOO_LONG, "", 0, 0 },
	};
	size_t i;

	/* "<" + 65 x "a" + "@b.c>" */
	memset(long_local, 'a', sizeof(long_local));
	long_local[0] = '<';
	memcpy(long_local + 66, "@b.c>", 6);
	/* "<a@" + 63-label domains totalling 256 octets + ">" */
	snprintf(long_domain, sizeof(long_domain), "<a@%.63s.%.63s.%.63s.%.63s>",
		 "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
		 "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
		 "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
		 "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
	/* domain is 63*4+3 = 255: make it 256 */
	memmove(long_domain + 4, long_domain + 3, strlen(long_domain + 3) + 1);
	long_domain[3] = 'c';
	/* path: 64-octet local, 190-octet domain = 257 with "<@>" */
	memset(long_path, 'a', sizeof(long_path));
	long_path[0] = '<';
	long_path[65] = '@';
	for (size_t k = 66; k < 66 + 190; k++)
		long_path[k] = (k % 50 == 0) ? '.' : 'b';
	memcpy(long_path + 256, ">", 2);

	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct smtp_proto_path path;
		struct guarded g = guard(c[i].in, 0);
		size_t used = 0;
		int rc;

		T_CASE(c[i].name);
		rc = smtp_proto_path_parse(g.p, g.len, c[i].flags, &path, &used);
		T_EQ_STR(smtp_proto_err_name(rc), smtp_proto_err_name(c[i].want));
		if (rc == 0) {
			T_EQ_STR(path.addr, c[i].addr);
			T_EQ_INT(path.len, strlen(c[i].addr));
			T_EQ_INT(used, c[i].used);
			T_EQ_INT(path.domain_kind, c[i].kind);
		}
		/* every prefix of a valid path is an error, never an over-read */
		for (size_t k = 0; rc == 0 && k < c[i].used; k++) {
			struct guarded h = guard(c[i].in, k ? k : 1);
			if (k == 0)
				h.len = 0;
			T_CHECK(smtp_proto_path_parse(h.p, h.len, c[i].flags, &path, NULL) != 0,
				"prefix %zu accepted", k);
			unguard(&h);
		}
		unguard(&g);
	}
	{
		/* the limits themselves are accepted */
		char ok[300];
		struct smtp_proto_path path;
		struct guarded g;

		T_CASE("path of exactly 256");
		memcpy(ok, long_path, 257);
		ok[255] = '>';
		ok[256] = '\0';
		g = guard(ok, 0);
		T_EQ_STR(smtp_proto_err_name(smtp_proto_path_parse(g.p, g.len, 0, &path, NULL)), "OK");
		T_EQ_INT(path.len, 254);
		unguard(&g);
	}
}

static void test_mail_params(void)
{
	static const struct {
		const char *name, *in;
		int want;
		uint64_t size;
		int body, ret;
		bool utf8;
		const char *envid;
	} c[] = {
		{ "none", "", 0, 0, 0, 0, false, "" },
		{ "RFC1870 size", " SIZE=12345", 0, 12345, 0, 0, false, "" },
		{ "size max", " SIZE=18446744073709551615", 0, UINT64_MAX, 0, 0, false, "" },
		{ "size overflow", " SIZE=18446744073709551616", SMTP_PROTO_E_PARAM_VALUE, 0, 0, 0, false, "" },
		{ "size not digits", " SIZE=12a", SMTP_PROTO_E_PARAM_VALUE, 0, 0, 0, false, "" },
		{ "size no value", " SIZE", SMTP_PROTO_E_PARAM_VALUE, 0, 0, 0, false, "" },
		{ "size empty value", " SIZE=", SMTP_PROTO_E_SYNTAX, 0, 0, 0, false, "" },
		{ "RFC6152 body 8bitmime", " BODY=8BITMIME", 0, 0, SMTP_PROTO_BODY_8BITMIME, 0, false, "" },
		{ "body lower case", " body=7bit", 0, 0, SMTP_PROTO_BODY_7BIT, 0, false, "" },
		{ "RFC3030 binarymime", " BODY=BINARYMIME", 0, 0, SMTP_PROTO_BODY_BINARYMIME, 0, false, "" },
		{ "body bad", " BODY=9BIT", SMTP_PROTO_E_PARAM_VALUE, 0, 0, 0, false, "" },
		{ "RFC6531 smtputf8", " SMTPUTF8", 0, 0, 0, 0, true, "" },
		{ "smtputf8 with value", " SMTPUTF8=1", SMTP_PROTO_E_PARAM_VALUE, 0, 0, 0, false, "" },
		{ "RFC3461 ret", " RET=HDRS ENVID=QQ+2B1", 0, 0, 0, SMTP_PROTO_RET_HDRS, false, "QQ+2B1" },
		{ "envid bad xtext", " ENVID=a+zz", SMTP_PROTO_E_PARAM_VALUE, 0, 0, 0, false, "" },
		{ "envid lower hex", " ENVID=a+2b", SMTP_PROTO_E_PARAM_VALUE, 0, 0, 0, false, "" },
		{ "envid 101", " ENVID=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
		  SMTP_PROTO_E_PARAM_VALUE, 0, 0, 0, false, "" },
		{ "ret bad", " RET=ALL", SMTP_PROTO_E_PARAM_VALUE, 0, 0, 0, false, "" },
		{ "RFC4954 auth null", " AUTH=<>", 0, 0, 0, 0, false, "" },
		{ "auth mailbox", " AUTH=a+2Bb@c.d", 0, 0, 0, 0, false, "" },
		{ "all", " SIZE=1 BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=x AUTH=<>", 0, 1, SMTP_PROTO_BODY_8BITMIME, SMTP_PROTO_RET_FULL, true, "x" },
		{ "duplicate", " SIZE=1 size=2", SMTP_PROTO_E_PARAM_DUP, 0, 0, 0, false, "" },
		{ "unknown", " FOO=bar", SMTP_PROTO_E_PARAM_UNKNOWN, 0, 0, 0, false, "" },
		{ "rcpt param in mail", " NOTIFY=NEVER", SMTP_PROTO_E_PARAM_UNKNOWN, 0, 0, 0, false, "" },
		{ "double space", "  SIZE=1", SMTP_PROTO_E_SYNTAX, 0, 0, 0, false, "" },
		{ "trailing space", " SIZE=1 ", SMTP_PROTO_E_SYNTAX, 0, 0, 0, false, "" },
		{ "no leading space", "SIZE=1", SMTP_PROTO_E_SYNTAX, 0, 0, 0, false, "" },
		{ "8bit value", " ENVID=\xc3\xa9", SMTP_PROTO_E_BAD_CHAR, 0, 0, 0, false, "" },
		{ "= in value", " ENVID=a=b", SMTP_PROTO_E_SYNTAX, 0, 0, 0, false, "" },
	};
	size_t i;

	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct smtp_proto_mail_params mp;
		struct guarded g = guard(c[i].in, 0);
		int rc;

		T_CASE(c[i].name);
		rc = smtp_proto_mail_params_parse(g.len ? g.p : NULL, g.len, &mp);
		T_EQ_STR(smtp_proto_err_name(rc), smtp_proto_err_name(c[i].want));
		if (rc == 0) {
			T_CHECK(mp.size == c[i].size, "size: got %llu, want %llu",
				(unsigned long long)mp.size, (unsigned long long)c[i].size);
			T_EQ_INT(mp.body, c[i].body);
			T_EQ_INT(mp.ret, c[i].ret);
			T_EQ_INT(mp.smtputf8, c[i].utf8);
			T_EQ_STR(mp.envid, c[i].envid);
		}
		unguard(&g);
	}
}

static void test_rcpt_params(void)
{
	static const struct {
		const char *name, *in;
		int want;
		unsigned notify;
		const char *orcpt;
		unsigned type_len;
	} c[] = {
		{ "none", "", 0, 0, "", 0 },
		{ "RFC3461 notify never", " NOTIFY=NEVER", 0, SMTP_PROTO_NOTIFY_NEVER, "", 0 },
		{ "notify list", " NOTIFY=SUCCESS,failure,DELAY", 0,
		  SMTP_PROTO_NOTIFY_SUCCESS | SMTP_PROTO_NOTIFY_FAILURE | SMTP_PROTO_NOTIFY_DELAY, "", 0 },
		{ "notify never and success", " NOTIFY=NEVER,SUCCESS", SMTP_PROTO_E_PARAM_VALUE, 0, "", 0 },
		{ "notify repeated word", " NOTIFY=DELAY,DELAY", SMTP_PROTO_E_PARAM_VALUE, 0, "", 0 },
		{ "notify empty item", " NOTIFY=DELAY,", SMTP_PROTO_E_PARAM_VALUE, 0, "", 0 },
		{ "notify unknown", " NOTIFY=SOMETIMES", SMTP_PROTO_E_PARAM_VALUE, 0, "", 0 },
		{ "orcpt", " ORCPT=rfc822;a+2Bb@c.d", 0, 0, "rfc822;a+2Bb@c.d", 6 },
		{ "orcpt no type", " ORCPT=;a@b", SMTP_PROTO_E_PARAM_VALUE, 0, "", 0 },
		{ "orcpt no addr", " ORCPT=rfc822;", SMTP_PROTO_E_PARAM_VALUE, 0, "", 0 },
		{ "orcpt no semicolon", " ORCPT=rfc822", SMTP_PROTO_E_PARAM_VALUE, 0, "", 0 },
		{ "orcpt bad xtext", " ORCPT=rfc822;a+g0", SMTP_PROTO_E_PARAM_VALUE, 0, "", 0 },
		{ "both", " NOTIFY=FAILURE ORCPT=rfc822;x@y", 0, SMTP_PROTO_NOTIFY_FAILURE, "rfc822;x@y", 6 },
		{ "duplicate notify", " NOTIFY=FAILURE NOTIFY=DELAY", SMTP_PROTO_E_PARAM_DUP, 0, "", 0 },
		{ "mail param in rcpt", " SIZE=1", SMTP_PROTO_E_PARAM_UNKNOWN, 0, "", 0 },
		{ "notify without value", " NOTIFY", SMTP_PROTO_E_PARAM_VALUE, 0, "", 0 },
	};
	size_t i;

	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct smtp_proto_rcpt_params rp;
		struct guarded g = guard(c[i].in, 0);
		int rc;

		T_CASE(c[i].name);
		rc = smtp_proto_rcpt_params_parse(g.len ? g.p : NULL, g.len, &rp);
		T_EQ_STR(smtp_proto_err_name(rc), smtp_proto_err_name(c[i].want));
		if (rc == 0) {
			T_EQ_INT(rp.notify, c[i].notify);
			T_EQ_STR(rp.orcpt, c[i].orcpt);
			T_EQ_INT(rp.orcpt_type_len, c[i].type_len);
		}
		unguard(&g);
	}
}

static void test_reply(void)
{
	static const struct {
		const char *name;
		enum smtp_reply_id id;
		const char *arg;
		bool more;
		const char *want;
	} c[] = {
		{ "ok", SMTP_REPLY_OK, NULL, false, "250 2.0.0 Ok\r\n" },
		{ "queued", SMTP_REPLY_QUEUED, "4F2A9", false, "250 2.0.0 Ok: queued as 4F2A9\r\n" },
		{ "arg sanitised", SMTP_REPLY_QUEUED, "x\r\n250 y", false, "250 2.0.0 Ok: queued as x??250 y\r\n" },
		{ "null arg", SMTP_REPLY_QUEUED, NULL, false, "250 2.0.0 Ok: queued as \r\n" },
		{ "RFC2034-3 greeting has no code", SMTP_REPLY_GREETING, "mx.example", false, "220 mx.example ESMTP ringmta\r\n" },
		{ "continuation", SMTP_REPLY_HELO_OK, "mx", true, "250-mx\r\n" },
		{ "354 has no code", SMTP_REPLY_DATA_GO, NULL, false, "354 End data with <CR><LF>.<CR><LF>\r\n" },
		{ "bare line end", SMTP_REPLY_BAD_LINE_END, NULL, false, "550 5.6.0 Bare <CR> or <LF> in message is not allowed\r\n" },
	};
	char out[SMTP_PROTO_REPLY_LINE_MAX];
	size_t i;
	int n;

	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		T_CASE(c[i].name);
		n = smtp_proto_reply_format(out, sizeof(out), c[i].id, c[i].arg, c[i].more);
		T_EQ_MEM(out, n < 0 ? 0 : n, c[i].want, strlen(c[i].want));
	}
	T_CASE("RFC2034-3 every 2xx/4xx/5xx but greeting/HELO carries a code");
	for (i = 0; i < SMTP_REPLY_COUNT_; i++) {
		const struct smtp_proto_reply *r = smtp_proto_reply((enum smtp_reply_id)i);
		bool exempt = i == SMTP_REPLY_GREETING || i == SMTP_REPLY_HELO_OK || r->code / 100 == 3;

		T_CHECK(exempt || (r->esc && r->esc[0] == '0' + r->code / 100),
			"%s: code %u with esc %s", r->name, r->code, r->esc ? r->esc : "(none)");
	}
	T_CASE("long arg cut to 512");
	{
		char arg[1000];

		memset(arg, 'x', sizeof(arg) - 1);
		arg[sizeof(arg) - 1] = '\0';
		n = smtp_proto_reply_format(out, sizeof(out), SMTP_REPLY_QUEUED, arg, false);
		T_EQ_INT(n, SMTP_PROTO_REPLY_LINE_MAX);
		T_EQ_MEM(out + n - 2, 2, "\r\n", 2);
	}
	T_CASE("small buffer");
	n = smtp_proto_reply_format(out, 5, SMTP_REPLY_OK, NULL, false);
	T_EQ_INT(n, -ENOSPC);
	n = smtp_proto_reply_format(out, 14, SMTP_REPLY_OK, NULL, false);
	T_EQ_MEM(out, n < 0 ? 0 : n, "250 2.0.0 Ok\r\n", 14);
}

static void test_xtext_utf8(void)
{
	static const struct {
		const char *name, *in;
		bool xtext, utf8;
	} c[] = {
		{ "plain", "abc", true, true },
		{ "hex", "a+2B", true, true },
		{ "short hex", "a+2", false, true },
		{ "lower hex", "a+2b", false, true },
		{ "equals", "a=b", false, true },
		{ "space", "a b", false, true },
		{ "utf8 2", "\xc3\xa9", false, true },
		{ "utf8 4", "\xf0\x9f\x98\x80", false, true },
		{ "utf8 > 10FFFF", "\xf4\x90\x80\x80", false, false },
		{ "utf8 lone continuation", "\x80", false, false },
		{ "utf8 overlong 3", "\xe0\x80\xaf", false, false },
	};
	size_t i;

	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct guarded g = guard(c[i].in, 0);

		T_CASE(c[i].name);
		T_EQ_INT(smtp_proto_xtext_valid(g.p, g.len), c[i].xtext);
		T_EQ_INT(smtp_proto_utf8_valid(g.p, g.len), c[i].utf8);
		unguard(&g);
	}
}

int main(void)
{
	test_cmd();
	test_path();
	test_mail_params();
	test_rcpt_params();
	test_reply();
	test_xtext_utf8();
	return t_done();
}
