/*
 * fuzz_esmtp_params - libFuzzer target for the MAIL and RCPT parameter
 * parsers.
 *
 * Input: byte 0 bit 0 selects RCPT (else MAIL), the rest is the text after
 * the path (" KEY=value ..."). Checks: no over-read; on success the stored
 * ENVID/ORCPT are valid xtext within their RFC 3461 limits, NOTIFY is
 * NEVER alone or a subset of the others, and parsing the same input again
 * gives the same struct (no hidden state); on error the struct is zeroed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ringmta/smtp_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void zeroed(const void *p, size_t n)
{
	const uint8_t *b = p;
	size_t i;

	for (i = 0; i < n; i++) {
		if (b[i] != 0)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 1) {
		struct smtp_proto_rcpt_params a, b;
		size_t n;

		if (smtp_proto_rcpt_params_parse(data + 1, size - 1, &a) != 0) {
			zeroed(&a, sizeof(a));
			return 0;
		}
		n = strlen(a.orcpt);
		if (n > SMTP_PROTO_ORCPT_MAX || (n && (a.orcpt_type_len == 0 || a.orcpt_type_len >= n ||
		    a.orcpt[a.orcpt_type_len] != ';')))
			abort();
		if (n && !smtp_proto_xtext_valid((const uint8_t *)a.orcpt + a.orcpt_type_len + 1,
						 n - a.orcpt_type_len - 1))
			abort();
		if ((a.notify & SMTP_PROTO_NOTIFY_NEVER) && a.notify != SMTP_PROTO_NOTIFY_NEVER)
			abort();
		if (a.notify & ~0xfu)
			abort();
		if (smtp_proto_rcpt_params_parse(data + 1, size - 1, &b) != 0 || memcmp(&a, &b, sizeof(a)) != 0)
			abort();
	} else {
		struct smtp_proto_mail_params a, b;
		size_t n;

		if (smtp_proto_mail_params_parse(data + 1, size - 1, &a) != 0) {
			zeroed(&a, sizeof(a));
			return 0;
		}
		n = strlen(a.envid);
		if (n > SMTP_PROTO_ENVID_MAX || !smtp_proto_xtext_valid((const uint8_t *)a.envid, n))
			abort();
		if (a.body > SMTP_PROTO_BODY_BINARYMIME || a.ret > SMTP_PROTO_RET_HDRS)
			abort();
		if (smtp_proto_mail_params_parse(data + 1, size - 1, &b) != 0 || memcmp(&a, &b, sizeof(a)) != 0)
			abort();
	}
	return 0;
}
