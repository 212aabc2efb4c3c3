/*
 * fuzz_control_proto - libFuzzer target for the control socket's lines.
 *
 * Input: byte 0 picks request (even) or reply (odd); the rest is the line.
 * Checks: no over-read (ASan); an accepted request consumed exactly the
 * input, is at most CONTROL_PROTO_MAX_REQUEST_BYTES, has a valid id (or
 * none for flush) and round-trips through control_proto_request_format;
 * a parsed reply's text lies inside the input and re-formats to the same
 * bytes; reply_format never writes past its buffer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ringmta/control_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_request(const char *in, size_t len)
{
	struct control_proto_request rq;
	char buf[CONTROL_PROTO_MAX_REQUEST_BYTES + 1];
	int rc = control_proto_request_parse(in, len, &rq), n;

	if (rc <= 0)
		return;
	if ((size_t)rc != len || len > CONTROL_PROTO_MAX_REQUEST_BYTES)
		abort();
	if (rq.cmd == CONTROL_PROTO_FLUSH_ALL ? rq.id[0] != '\0' :
	    !control_proto_is_id(rq.id, strlen(rq.id)))
		abort();
	n = control_proto_request_format(buf, sizeof(buf), rq.cmd, rq.id);
	if (n < 0 || (size_t)n != len || memcmp(buf, in, len) != 0)
		abort();
}

static void check_reply(const char *in, size_t len)
{
	enum control_proto_status st;
	char buf[CONTROL_PROTO_MAX_REPLY_BYTES], text[CONTROL_PROTO_MAX_REPLY_BYTES];
	const char *t;
	size_t tlen, n;

	if (control_proto_reply_parse(in, len, &st, &t, &tlen) != 0)
		return;
	if (t < in || t + tlen > in + len || (unsigned)st >= CONTROL_PROTO_N_STATUS)
		abort();
	if (memchr(t, '\0', tlen) != NULL)
		return;         /* not something reply_format can write */
	memcpy(text, t, tlen);
	text[tlen] = '\0';
	n = control_proto_reply_format(buf, sizeof(buf), st, text);
	if (n >= sizeof(buf) || buf[n] != '\0')
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in;

	if (size < 1 || size > 4096)
		return 0;
	/* a private copy of exactly the line, so ASan sees any over-read */
	in = malloc(size - 1 ? size - 1 : 1);
	if (in == NULL)
		return 0;
	memcpy(in, data + 1, size - 1);
	if (data[0] & 1)
		check_reply(in, size - 1);
	else
		check_request(in, size - 1);
	free(in);
	return 0;
}
