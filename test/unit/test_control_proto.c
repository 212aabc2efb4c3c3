/*
 * test_control_proto - the control socket's request and reply lines:
 * every verb, every strictness rule, partial input at every byte, the
 * length cap, and reply round trips. Named table cases, "got X, want Y".
 */
#include "ringmta/control_proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "t.h"

#define ID "0123456789abcdef"

static const struct req_case {
	const char *name;
	const char *in;
	int want;                       /* > 0: parsed (== length) */
	enum control_proto_cmd cmd;
	const char *id;
} req_cases[] = {
	{ "hold", "hold " ID "\n", 1, CONTROL_PROTO_HOLD, ID },
	{ "release", "release " ID "\n", 1, CONTROL_PROTO_RELEASE, ID },
	{ "delete", "delete " ID "\n", 1, CONTROL_PROTO_DELETE, ID },
	{ "flush_id", "flush " ID "\n", 1, CONTROL_PROTO_FLUSH, ID },
	{ "flush_all", "flush\n", 1, CONTROL_PROTO_FLUSH_ALL, "" },
	{ "hold_without_id", "hold\n", CONTROL_PROTO_EARGS, 0, NULL },
	{ "delete_without_id", "delete\n", CONTROL_PROTO_EARGS, 0, NULL },
	{ "flush_trailing_blank", "flush \n", CONTROL_PROTO_EARGS, 0, NULL },
	{ "two_blanks", "hold  " ID "\n", CONTROL_PROTO_EARGS, 0, NULL },
	{ "leading_blank", " hold " ID "\n", CONTROL_PROTO_EARGS, 0, NULL },
	{ "extra_argument", "hold " ID " " ID "\n", CONTROL_PROTO_EARGS, 0, NULL },
	{ "id_trailing_blank", "hold " ID " \n", CONTROL_PROTO_EARGS, 0, NULL },
	{ "empty_line", "\n", CONTROL_PROTO_EARGS, 0, NULL },
	{ "unknown_verb", "list\n", CONTROL_PROTO_EVERB, 0, NULL },
	{ "uppercase_verb", "HOLD " ID "\n", CONTROL_PROTO_EVERB, 0, NULL },
	{ "verb_prefix", "hol " ID "\n", CONTROL_PROTO_EVERB, 0, NULL },
	{ "id_short", "hold 0123456789abcde\n", CONTROL_PROTO_EID, 0, NULL },
	{ "id_long", "hold 0123456789abcdef0\n", CONTROL_PROTO_EID, 0, NULL },
	{ "id_uppercase", "hold 0123456789ABCDEF\n", CONTROL_PROTO_EID, 0, NULL },
	{ "id_nonhex", "hold 0123456789abcdeg\n", CONTROL_PROTO_EID, 0, NULL },
	{ "id_path", "hold ../../etc/passwd\n", CONTROL_PROTO_EID, 0, NULL },
	{ "crlf", "hold " ID "\r\n", CONTROL_PROTO_EBYTE, 0, NULL },
	{ "tab", "hold\t" ID "\n", CONTROL_PROTO_EBYTE, 0, NULL },
	{ "eight_bit", "hold \xc3\xa9\n", CONTROL_PROTO_EBYTE, 0, NULL },
	{ "del_byte", "flush\x7f\n", CONTROL_PROTO_EBYTE, 0, NULL },
	{ "two_requests", "flush\nflush\n", CONTROL_PROTO_ETRAILING, 0, NULL },
	{ "trailing_bytes", "hold " ID "\nx", CONTROL_PROTO_ETRAILING, 0, NULL },
	{ "too_long_no_lf", "flush 0123456789abcdef0123456789abcdef0123456789abcdef0123456789a",
	  CONTROL_PROTO_ETOOLONG, 0, NULL },
	{ "too_long_with_lf", "flush 0123456789abcdef0123456789abcdef0123456789abcdef0123456789a\n",
	  CONTROL_PROTO_ETOOLONG, 0, NULL },
	{ "partial", "hold 0123", 0, 0, NULL },
	{ "nothing", "", 0, 0, NULL },
};

/* parse_guarded - parse in[0..len) placed just before a PROT_NONE page. */
static int parse_guarded(const char *in, size_t len, struct control_proto_request *rq)
{
	void *base;
	size_t maplen;
	const char *p = t_guard_copy(in, len, &base, &maplen);
	int rc = control_proto_request_parse(p, len, rq);
	t_guard_free(base, maplen);
	return rc;
}

static void test_request_parse(void)
{
	for (size_t i = 0; i < sizeof(req_cases) / sizeof(req_cases[0]); i++) {
		const struct req_case *c = &req_cases[i];
		struct control_proto_request rq;
		size_t len = strlen(c->in);
		int rc;

		T_CASE(c->name);
		rc = parse_guarded(c->in, len, &rq);
		if (c->want > 0) {
			T_EQ_INT(rc, len);
			if (rc > 0) {
				T_EQ_INT(rq.cmd, c->cmd);
				T_EQ_STR(rq.id, c->id);
			}
		} else {
			T_EQ_INT(rc, c->want);
		}
		/* Byte by byte, as a slow client sends it: every prefix without
		 * the LF asks for more (or is already too long). */
		for (size_t k = 0; k < len; k++) {
			if (memchr(c->in, '\n', k) != NULL)
				break;
			rc = parse_guarded(c->in, k, &rq);
			T_CHECK(rc == 0 || (rc == CONTROL_PROTO_ETOOLONG && c->want == rc),
				"prefix %zu: got %d, want 0", k, rc);
		}
	}
}

static void test_request_format(void)
{
	char buf[CONTROL_PROTO_MAX_REQUEST_BYTES];
	struct control_proto_request rq;
	static const enum control_proto_cmd cmds[] = {
		CONTROL_PROTO_HOLD, CONTROL_PROTO_RELEASE, CONTROL_PROTO_DELETE,
		CONTROL_PROTO_FLUSH,
	};

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		T_CASE(control_proto_cmd_name(cmds[i]));
		int n = control_proto_request_format(buf, sizeof(buf), cmds[i], ID);
		T_CHECK(n > 0, "format: got %d", n);
		T_EQ_INT(control_proto_request_parse(buf, (size_t)n, &rq), n);
		T_EQ_INT(rq.cmd, cmds[i]);
		T_EQ_STR(rq.id, ID);
	}
	T_CASE("format_flush_all");
	T_EQ_INT(control_proto_request_format(buf, sizeof(buf), CONTROL_PROTO_FLUSH_ALL, NULL), 6);
	T_EQ_STR(buf, "flush\n");
	T_CASE("format_rejects");
	T_EQ_INT(control_proto_request_format(buf, sizeof(buf), CONTROL_PROTO_HOLD, NULL), -EINVAL);
	T_EQ_INT(control_proto_request_format(buf, sizeof(buf), CONTROL_PROTO_HOLD, "xyz"), -EINVAL);
	T_EQ_INT(control_proto_request_format(buf, sizeof(buf), CONTROL_PROTO_FLUSH_ALL, ID), -EINVAL);
	T_EQ_INT(control_proto_request_format(buf, sizeof(buf), (enum control_proto_cmd)0, ID),
		 -EINVAL);
	T_EQ_INT(control_proto_request_format(buf, 10, CONTROL_PROTO_HOLD, ID), -EINVAL);
}

static const struct reply_case {
	const char *name;
	enum control_proto_status status;
	const char *text;
	const char *want_line;
	const char *want_text;
} reply_cases[] = {
	{ "ok", CONTROL_PROTO_OK, "held " ID, "ok held " ID "\n", "held " ID },
	{ "busy", CONTROL_PROTO_BUSY, "busy, try again", "error busy busy, try again\n",
	  "busy, try again" },
	{ "not_found", CONTROL_PROTO_NOT_FOUND, "no such message",
	  "error not-found no such message\n", "no such message" },
	{ "wrong_state", CONTROL_PROTO_WRONG_STATE, "x", "error wrong-state x\n", "x" },
	{ "denied", CONTROL_PROTO_DENIED, "", "error denied \n", "" },
	{ "control_bytes_replaced", CONTROL_PROTO_FAILED, "a\nb\x1b[0m",
	  "error failed a?b?[0m\n", "a?b?[0m" },
};

static void test_reply(void)
{
	char buf[CONTROL_PROTO_MAX_REPLY_BYTES];

	for (size_t i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
		const struct reply_case *c = &reply_cases[i];
		enum control_proto_status st = CONTROL_PROTO_N_STATUS;
		const char *text = NULL;
		size_t tlen = 0, n;

		T_CASE(c->name);
		n = control_proto_reply_format(buf, sizeof(buf), c->status, c->text);
		T_EQ_STR(buf, c->want_line);
		T_EQ_INT(n, strlen(c->want_line));
		T_EQ_INT(control_proto_reply_parse(buf, n, &st, &text, &tlen), 0);
		T_EQ_INT(st, c->status);
		T_EQ_MEM(text, tlen, c->want_text, strlen(c->want_text));
	}
	T_CASE("reply_cut_to_cap");
	size_t n = control_proto_reply_format(buf, 12, CONTROL_PROTO_OK, "0123456789abcdef");
	T_EQ_STR(buf, "ok 0123456\n");
	T_EQ_INT(n, 11);
	T_EQ_INT(control_proto_reply_format(buf, 4, CONTROL_PROTO_BUSY, "x"), 0);
	static const struct {
		const char *name, *in;
	} bad[] = {
		{ "reply_no_lf", "ok fine" },
		{ "reply_unknown_kind", "error weird text\n" },
		{ "reply_kind_without_text", "error busy\n" },
		{ "reply_unknown_status", "maybe yes\n" },
		{ "reply_bare_ok", "ok\n" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum control_proto_status st;
		const char *text;
		size_t tlen;
		T_CASE(bad[i].name);
		T_EQ_INT(control_proto_reply_parse(bad[i].in, strlen(bad[i].in), &st, &text, &tlen),
			 -EINVAL);
	}
}

int main(void)
{
	test_request_parse();
	test_request_format();
	test_reply();
	return t_done();
}
