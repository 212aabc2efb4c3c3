/*
 * fuzz_smtp_proto - libFuzzer target for command-line parsing.
 *
 * Input: byte 0 selects leniency flags and a reply id, the rest is one
 * command line (without CRLF). Checks: the parser never reads past the
 * line (ASan), the argument slice lies inside the line, MAIL/RCPT
 * arguments go through the path and parameter parsers, an accepted path
 * round-trips (format "<addr>", parse again, same result), and every
 * reply formatted from the input is one well-formed line.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ringmta/smtp_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_reply(const uint8_t *data, size_t size, uint8_t sel)
{
	char arg[600], out[SMTP_PROTO_REPLY_LINE_MAX];
	size_t n = size < sizeof(arg) - 1 ? size : sizeof(arg) - 1, i;
	int len;

	memcpy(arg, data, n);
	arg[n] = '\0';
	len = smtp_proto_reply_format(out, sizeof(out), (enum smtp_reply_id)(sel % SMTP_REPLY_COUNT_),
				      arg, sel & 0x80);
	if (len < 6 || len > SMTP_PROTO_REPLY_LINE_MAX || out[len - 2] != '\r' || out[len - 1] != '\n')
		abort();
	for (i = 0; i < (size_t)len - 2; i++) {
		if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] > 0x7e)
			abort();
	}
}

static void check_path_roundtrip(const struct smtp_proto_path *p, unsigned flags)
{
	uint8_t buf[SMTP_PROTO_PATH_MAX + 2];
	struct smtp_proto_path q;
	size_t used;

	if (p->is_null)
		return;
	buf[0] = '<';
	memcpy(buf + 1, p->addr, p->len);
	buf[p->len + 1] = '>';
	if (smtp_proto_path_parse(buf, p->len + 2, flags, &q, &used) != 0)
		abort();
	if (used != p->len + 2U || q.len != p->len || memcmp(q.addr, p->addr, p->len) != 0 ||
	    q.local_len != p->local_len || q.domain_kind != p->domain_kind)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_proto_cmd cmd;
	struct smtp_proto_path path;
	struct smtp_proto_mail_params mp;
	struct smtp_proto_rcpt_params rp;
	unsigned flags;
	size_t used = 0;
	int rc;

	if (size < 1)
		return 0;
	flags = data[0] & 1 ? SMTP_PROTO_LENIENT_SPACE_AFTER_COLON : 0;
	check_reply(data + 1, size - 1, data[0]);
	rc = smtp_proto_cmd_parse(data + 1, size - 1, flags, &cmd);
	if (rc != 0)
		return 0;
	if (cmd.arg < data + 1 || cmd.arg + cmd.arg_len > data + size)
		abort();
	if (cmd.verb == SMTP_PROTO_VERB_MAIL) {
		unsigned pf = SMTP_PROTO_PATH_ALLOW_NULL | SMTP_PROTO_PATH_UTF8;

		if (smtp_proto_path_parse(cmd.arg, cmd.arg_len, pf, &path, &used) == 0) {
			check_path_roundtrip(&path, pf);
			smtp_proto_mail_params_parse(cmd.arg + used, cmd.arg_len - used, &mp);
		}
	} else if (cmd.verb == SMTP_PROTO_VERB_RCPT) {
		unsigned pf = SMTP_PROTO_PATH_RCPT | (data[0] & 2 ? SMTP_PROTO_PATH_UTF8 : 0);

		if (smtp_proto_path_parse(cmd.arg, cmd.arg_len, pf, &path, &used) == 0) {
			check_path_roundtrip(&path, pf);
			smtp_proto_rcpt_params_parse(cmd.arg + used, cmd.arg_len - used, &rp);
		}
	}
	return 0;
}
