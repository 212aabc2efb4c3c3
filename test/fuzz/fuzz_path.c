/*
 * fuzz_path - libFuzzer target for smtp_proto_path_parse.
 *
 * Input: byte 0 is the SMTP_PROTO_PATH_* flags, the rest the path text.
 * Checks: no over-read (ASan); an accepted path obeys RFC 5321 4.5.3.1
 * (local-part <= 64, mailbox <= 254, consumed <= 256), its addr is
 * NUL-terminated with len == strlen, is ASCII unless SMTPUTF8 was given
 * and then valid UTF-8, and it round-trips through "<addr>".
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ringmta/smtp_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_proto_path p, q;
	uint8_t buf[SMTP_PROTO_PATH_MAX + 2];
	unsigned flags;
	size_t used = 0, i;

	if (size < 1)
		return 0;
	flags = data[0] & 7;
	if (smtp_proto_path_parse(data + 1, size - 1, flags, &p, &used) != 0) {
		for (i = 0; i < sizeof(p); i++) {
			if (((const uint8_t *)&p)[i] != 0)
				abort();   /* on error the result is zeroed */
		}
		return 0;
	}
	if (used > size - 1 || used > SMTP_PROTO_PATH_MAX || p.len > SMTP_PROTO_PATH_MAX - 2)
		abort();
	if (strlen(p.addr) != p.len || p.local_len > SMTP_PROTO_LOCAL_MAX || p.local_len > p.len)
		abort();
	if (p.is_null && (!(flags & SMTP_PROTO_PATH_ALLOW_NULL) || p.len != 0))
		abort();
	if (p.is_postmaster && !(flags & SMTP_PROTO_PATH_RCPT))
		abort();
	for (i = 0; i < p.len; i++) {
		if ((uint8_t)p.addr[i] >= 0x80 && !(flags & SMTP_PROTO_PATH_UTF8))
			abort();
		if ((uint8_t)p.addr[i] < 0x20)
			abort();
	}
	if (!smtp_proto_utf8_valid((const uint8_t *)p.addr, p.len))
		abort();
	if (p.is_null)
		return 0;
	buf[0] = '<';
	memcpy(buf + 1, p.addr, p.len);
	buf[p.len + 1] = '>';
	if (smtp_proto_path_parse(buf, p.len + 2U, flags, &q, &used) != 0 || used != p.len + 2U ||
	    memcmp(&p, &q, sizeof(p)) != 0)
		abort();
	return 0;
}
