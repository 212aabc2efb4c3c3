/*
 * control_proto - the control socket's request and reply lines.
 *
 * Owns: nothing; works on the caller's buffers.
 * Must not: do I/O, allocate, log, read past the length it is given.
 * Interface: include/ringmta/control_proto.h
 * Limits: CONTROL_PROTO_MAX_REQUEST_BYTES per request,
 *         CONTROL_PROTO_MAX_REPLY_BYTES per reply.
 * Errors: request parse errors are enum control_proto_error; formatting
 *         and reply parsing return -EINVAL. Nothing is a bug: every input
 *         comes from the other side of a socket.
 * Standards: none (our own line protocol; see the header).
 */
#include "ringmta/control_proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* The verbs, indexed by enum control_proto_cmd; FLUSH_ALL shares "flush". */
static const struct {
	const char *name;
	size_t len;
	bool needs_id;
} verbs[] = {
	[CONTROL_PROTO_HOLD] = { "hold", 4, true },
	[CONTROL_PROTO_RELEASE] = { "release", 7, true },
	[CONTROL_PROTO_DELETE] = { "delete", 6, true },
	[CONTROL_PROTO_FLUSH] = { "flush", 5, true },
	[CONTROL_PROTO_FLUSH_ALL] = { "flush", 5, false },
};
#define N_VERBS (sizeof(verbs) / sizeof(verbs[0]))

static const char *const status_names[CONTROL_PROTO_N_STATUS] = {
	[CONTROL_PROTO_OK] = "ok",
	[CONTROL_PROTO_BAD_REQUEST] = "bad-request",
	[CONTROL_PROTO_NOT_FOUND] = "not-found",
	[CONTROL_PROTO_BUSY] = "busy",
	[CONTROL_PROTO_WRONG_STATE] = "wrong-state",
	[CONTROL_PROTO_DENIED] = "denied",
	[CONTROL_PROTO_UNAVAILABLE] = "unavailable",
	[CONTROL_PROTO_FAILED] = "failed",
};

const char *control_proto_status_name(enum control_proto_status status)
{
	if ((unsigned)status >= CONTROL_PROTO_N_STATUS)
		return "failed";
	return status_names[status];
}

const char *control_proto_cmd_name(enum control_proto_cmd cmd)
{
	if ((unsigned)cmd == 0 || (unsigned)cmd >= N_VERBS)
		return "?";
	return verbs[cmd].name;
}

const char *control_proto_strerror(int code)
{
	switch (code) {
	case CONTROL_PROTO_ETOOLONG: return "request line too long";
	case CONTROL_PROTO_EBYTE: return "request contains a control or 8-bit byte";
	case CONTROL_PROTO_EVERB: return "unknown command";
	case CONTROL_PROTO_EARGS: return "wrong arguments";
	case CONTROL_PROTO_EID: return "malformed queue id (want 16 lowercase hex digits)";
	case CONTROL_PROTO_ETRAILING: return "bytes after the request line";
	default: return "bad request";
	}
}

bool control_proto_is_id(const char *s, size_t len)
{
	if (len != SPOOL_ID_BYTES)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* verb_lookup - the command for word[0..len) given whether an id follows. */
static int verb_lookup(const char *word, size_t len, bool has_id)
{
	bool is_known = false;

	for (unsigned i = 1; i < N_VERBS; i++) {
		if (verbs[i].len != len || memcmp(verbs[i].name, word, len) != 0)
			continue;
		is_known = true;
		if (verbs[i].needs_id == has_id)
			return (int)i;
	}
	return is_known ? CONTROL_PROTO_EARGS : CONTROL_PROTO_EVERB;
}

int control_proto_request_parse(const char *buf, size_t len,
				struct control_proto_request *out)
{
	const char *lf = memchr(buf, '\n', len);
	size_t line, sp;
	int cmd;

	if (lf == NULL)
		return len >= CONTROL_PROTO_MAX_REQUEST_BYTES ? CONTROL_PROTO_ETOOLONG : 0;
	line = (size_t)(lf - buf);
	if (line + 1 > CONTROL_PROTO_MAX_REQUEST_BYTES)
		return CONTROL_PROTO_ETOOLONG;
	for (size_t i = 0; i < line; i++)
		if ((unsigned char)buf[i] < 0x20 || (unsigned char)buf[i] >= 0x7f)
			return CONTROL_PROTO_EBYTE;
	if (line + 1 != len)
		return CONTROL_PROTO_ETRAILING;
	for (sp = 0; sp < line && buf[sp] != ' '; sp++)
		;
	if (sp == 0)
		return CONTROL_PROTO_EARGS;   /* empty line or leading blank */
	cmd = verb_lookup(buf, sp, sp < line);
	if (cmd < 0)
		return cmd;
	memset(out, 0, sizeof(*out));
	out->cmd = (enum control_proto_cmd)cmd;
	if (sp == line)
		return (int)len;
	if (!control_proto_is_id(buf + sp + 1, line - sp - 1))
		return memchr(buf + sp + 1, ' ', line - sp - 1) != NULL || sp + 1 == line ?
			CONTROL_PROTO_EARGS : CONTROL_PROTO_EID;
	memcpy(out->id, buf + sp + 1, SPOOL_ID_BYTES);
	out->id[SPOOL_ID_BYTES] = '\0';
	return (int)len;
}

int control_proto_request_format(char *out, size_t cap,
				 enum control_proto_cmd cmd, const char *id)
{
	bool has_id = id != NULL && id[0] != '\0';
	int n;

	if ((unsigned)cmd == 0 || (unsigned)cmd >= N_VERBS || verbs[cmd].needs_id != has_id ||
	    (has_id && !control_proto_is_id(id, strlen(id))))
		return -EINVAL;
	n = snprintf(out, cap, "%s%s%s\n", verbs[cmd].name, has_id ? " " : "",
		     has_id ? id : "");
	if (n < 0 || (size_t)n >= cap)
		return -EINVAL;
	return n;
}

size_t control_proto_reply_format(char *out, size_t cap,
				  enum control_proto_status status,
				  const char *text)
{
	const char *name = control_proto_status_name(status);
	int n;
	size_t o;

	if (cap > CONTROL_PROTO_MAX_REPLY_BYTES)
		cap = CONTROL_PROTO_MAX_REPLY_BYTES;
	n = status == CONTROL_PROTO_OK ? snprintf(out, cap, "ok ") :
		snprintf(out, cap, "error %s ", name);
	if (n < 0 || (size_t)n + 2 > cap) {
		if (cap > 0)
			out[0] = '\0';
		return 0;
	}
	o = (size_t)n;
	for (size_t i = 0; text != NULL && text[i] != '\0' && o + 2 < cap; i++) {
		unsigned char c = (unsigned char)text[i];
		out[o++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	out[o++] = '\n';
	out[o] = '\0';
	return o;
}

int control_proto_reply_parse(const char *buf, size_t len,
			      enum control_proto_status *status,
			      const char **text, size_t *text_len)
{
	const char *lf = memchr(buf, '\n', len);
	size_t line, start;

	if (lf == NULL || len > CONTROL_PROTO_MAX_REPLY_BYTES)
		return -EINVAL;
	line = (size_t)(lf - buf);
	if (line >= 3 && memcmp(buf, "ok ", 3) == 0) {
		*status = CONTROL_PROTO_OK;
		start = 3;
	} else if (line >= 6 && memcmp(buf, "error ", 6) == 0) {
		const char *sp = memchr(buf + 6, ' ', line - 6);
		size_t klen = sp ? (size_t)(sp - buf) - 6 : 0;
		unsigned i;
		for (i = 1; i < CONTROL_PROTO_N_STATUS; i++)
			if (strlen(status_names[i]) == klen &&
			    memcmp(status_names[i], buf + 6, klen) == 0)
				break;
		if (sp == NULL || i == CONTROL_PROTO_N_STATUS)
			return -EINVAL;
		*status = (enum control_proto_status)i;
		start = 6 + klen + 1;
	} else {
		return -EINVAL;
	}
	*text = buf + start;
	*text_len = line - start;
	return 0;
}
