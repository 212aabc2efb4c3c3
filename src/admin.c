/*
 * admin - "ringmta queue ...": list, show and cat read the spool from a
 *         separate process; hold, release, delete and flush ask the
 *         running daemon through its control socket.
 *
 * Owns: a read-only spool handle, or one control connection, for the
 *       duration of one command.
 * Must not: write to the spool (LMDB readers only; safe while the daemon
 *       runs: changes go through the daemon, whose reactor owns the
 *       message's shard); print peer bytes or daemon text unescaped.
 * Interface: include/ringmta/admin.h
 * Limits: ADMIN_SHOW_HEADER_BYTES of headers in "show";
 *         CONTROL_PROTO_MAX_REPLY_BYTES of reply; ADMIN_CONTROL_TIMEOUT_S
 *         per socket operation.
 * Errors: exit status 1 with "ringmta: queue SUB: ..." on stderr; 2 for
 *         usage.
 * Standards: RFC 3461 (NOTIFY, ORCPT, RET, ENVID shown), RFC 6152 (BODY).
 */
#include "ringmta/admin.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ringmta/control.h"
#include "ringmta/control_proto.h"
#include "ringmta/spool.h"

/* ADMIN_SHOW_HEADER_BYTES - "show" prints at most this much of the
 * header section: far above real headers, bounded for a hostile one. */
#define ADMIN_SHOW_HEADER_BYTES (64 * 1024)
/* ADMIN_CONTROL_TIMEOUT_S - per socket operation; above the daemon's own
 * CONTROL_REPLY_TIMEOUT_MS, so the daemon's "timed out" answer arrives. */
#define ADMIN_CONTROL_TIMEOUT_S 15

static const char usage_text[] =
	"usage: ringmta [-c FILE] [-o key=value] queue list | show ID | cat ID\n"
	"       ringmta [-c FILE] [-o key=value] queue hold ID | release ID | delete ID"
	" | flush [ID]\n";

static void iso_time(int64_t t, char *out, size_t cap)
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (t == SPOOL_HELD_UNIX) {
		snprintf(out, cap, "held");
		return;
	}
	if (t == INT64_MAX || gmtime_r(&tt, &tm) == NULL) {
		snprintf(out, cap, "never");
		return;
	}
	strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static bool is_held(const struct spool_rcpt_entry *r)
{
	return r->state == SPOOL_RCPT_PENDING && r->next_attempt_unix == SPOOL_HELD_UNIX;
}

/* rcpt_state - pending, held, delivered or failed. */
static const char *rcpt_state(const struct spool_rcpt_entry *r)
{
	if (is_held(r))
		return "held";
	switch (r->state) {
	case SPOOL_RCPT_PENDING: return "pending";
	case SPOOL_RCPT_DELIVERED: return "delivered";
	case SPOOL_RCPT_FAILED: return "failed";
	default: return "unknown";
	}
}

/* entry_state - queued (never tried), deferred (tried), held (every
 * pending recipient held) or done (nothing pending). */
static const char *entry_state(const struct spool_entry *e)
{
	unsigned attempts = 0, pending = 0, held = 0;

	for (size_t i = 0; i < e->n_rcpts; i++) {
		if (e->rcpts[i].state == SPOOL_RCPT_PENDING)
			pending++;
		held += is_held(&e->rcpts[i]);
		attempts += e->rcpts[i].attempts;
	}
	if (pending == 0)
		return "done";
	if (held == pending)
		return "held";
	return attempts ? "deferred" : "queued";
}

/* utf8_len - length of the valid UTF-8 sequence at p (2..4), its code
 * point in *cp; 0 when p[0..n) does not start one. */
static size_t utf8_len(const uint8_t *p, size_t n, uint32_t *cp)
{
	size_t len = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
	uint32_t c;

	if (len == 0 || len > n || p[0] > 0xf4)
		return 0;
	c = p[0] & (0x7f >> len);
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (p[i] & 0x3f);
	}
	if ((len == 3 && (c < 0x800 || (c >= 0xd800 && c <= 0xdfff))) ||
	    (len == 4 && (c < 0x10000 || c > 0x10ffff)))
		return 0;
	*cp = c;
	return len;
}

/* is_risky_cp - C1 controls, line/paragraph separators, bidi controls. */
static bool is_risky_cp(uint32_t c)
{
	return c < 0xa0 || c == 0x2028 || c == 0x2029 || (c >= 0x202a && c <= 0x202e) ||
	       (c >= 0x2066 && c <= 0x2069) || c == 0x200e || c == 0x200f || c == 0xfeff;
}

/*
 * put_esc - print p[0..n) for a listing: SMTPUTF8 text stays readable
 * UTF-8; controls, backslash, quotes, invalid UTF-8 and invisible
 * formatting characters become \xHH, and so do blanks unless keep_blanks
 * (header lines), so a line cannot be forged or visually reordered.
 */
static void put_esc(FILE *f, const char *s, size_t n, bool keep_blanks)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *p = (const uint8_t *)s;
	size_t i = 0;

	while (i < n) {
		uint32_t cp;
		size_t k = p[i] >= 0x80 ? utf8_len(p + i, n - i, &cp) : 0;
		if (k > 0 && !is_risky_cp(cp)) {
			fwrite(p + i, 1, k, f);
			i += k;
		} else if ((p[i] > 0x20 && p[i] < 0x7f && p[i] != '\\' && p[i] != '"') ||
			   (keep_blanks && (p[i] == ' ' || p[i] == '\t'))) {
			putc(p[i++], f);
		} else {
			for (size_t j = 0, m = k ? k : 1; j < m; j++, i++)
				fprintf(f, "\\x%c%c", hex[p[i] >> 4], hex[p[i] & 15]);
		}
	}
}

/* put_addr - an address, "<>" for the null reverse-path. */
static void put_addr(FILE *f, const char *a)
{
	if (a[0] == '\0')
		fputs("<>", f);
	else
		put_esc(f, a, strlen(a), false);
}

static int print_entry(void *arg, const struct spool_entry *e)
{
	FILE *f = arg;
	char next[32], arrival[32];

	iso_time(e->next_attempt_unix, next, sizeof(next));
	iso_time(e->arrival_unix, arrival, sizeof(arrival));
	/* Addresses are peer data: escaped, so a listing line cannot be forged. */
	fprintf(f, "id=%s size=%llu arrival=%s from=", e->id, (unsigned long long)e->size,
		arrival);
	put_addr(f, e->sender);
	fputs(" to=", f);
	for (size_t i = 0; i < e->n_rcpts; i++) {
		if (i)
			putc(',', f);
		put_addr(f, e->rcpts[i].addr);
	}
	fputs(" rcpt_state=", f);
	for (size_t i = 0; i < e->n_rcpts; i++)
		fprintf(f, "%s%s", i ? "," : "", rcpt_state(&e->rcpts[i]));
	fprintf(f, " state=%s next=%s\n", entry_state(e), next);
	return 0;
}

static const char *notify_str(unsigned notify, char *out, size_t cap)
{
	if (notify == 0)
		return "-";
	if (notify & SPOOL_NOTIFY_NEVER)
		return "never";
	snprintf(out, cap, "%s%s%s%s%s",
		 notify & SPOOL_NOTIFY_SUCCESS ? "success" : "",
		 (notify & SPOOL_NOTIFY_SUCCESS) && (notify & (SPOOL_NOTIFY_FAILURE | SPOOL_NOTIFY_DELAY)) ? "," : "",
		 notify & SPOOL_NOTIFY_FAILURE ? "failure" : "",
		 (notify & SPOOL_NOTIFY_FAILURE) && (notify & SPOOL_NOTIFY_DELAY) ? "," : "",
		 notify & SPOOL_NOTIFY_DELAY ? "delay" : "");
	return out;
}

/* put_field - "name: value" with value escaped, "-" when absent. */
static void put_field(FILE *f, const char *name, const char *value)
{
	fprintf(f, "%s: ", name);
	if (value == NULL || value[0] == '\0')
		fputs("-", f);
	else
		put_esc(f, value, strlen(value), false);
	putc('\n', f);
}

static int show_entry(void *arg, const struct spool_entry *e)
{
	static const char *const rets[] = { "-", "full", "hdrs" };
	static const char *const bodies[] = { "-", "7bit", "8bitmime", "binarymime" };
	FILE *f = arg;
	char t[32], nb[40];

	fprintf(f, "id: %s\nstate: %s\nsize: %llu\n", e->id, entry_state(e),
		(unsigned long long)e->size);
	iso_time(e->arrival_unix, t, sizeof(t));
	fprintf(f, "arrival: %s\n", t);
	iso_time(e->next_attempt_unix, t, sizeof(t));
	fprintf(f, "next: %s\nshard: %u\nsender: ", t, e->shard);
	put_addr(f, e->sender);
	putc('\n', f);
	put_field(f, "envid", e->envid);
	fprintf(f, "ret: %s\nbody: %s\nsmtputf8: %s\n",
		e->ret >= 0 && e->ret <= 2 ? rets[e->ret] : "?",
		e->body >= 0 && e->body <= 3 ? bodies[e->body] : "?",
		e->smtputf8 ? "yes" : "no");
	put_field(f, "client", e->client_addr);
	put_field(f, "helo", e->helo);
	fprintf(f, "recipients: %zu\n", e->n_rcpts);
	for (size_t i = 0; i < e->n_rcpts; i++) {
		const struct spool_rcpt_entry *r = &e->rcpts[i];
		fputs("  to=", f);
		put_addr(f, r->addr);
		iso_time(r->next_attempt_unix, t, sizeof(t));
		fprintf(f, " state=%s attempts=%u next=%s notify=%s orcpt=", rcpt_state(r),
			r->attempts, r->state == SPOOL_RCPT_PENDING ? t : "-",
			notify_str(r->notify, nb, sizeof(nb)));
		if (r->orcpt != NULL)
			put_esc(f, r->orcpt, strlen(r->orcpt), false);
		else
			putc('-', f);
		putc('\n', f);
	}
	return 0;
}

/* struct headers - the start of a message, up to its blank line. */
struct headers {
	char *p;
	size_t len;
	bool is_complete;       /* the blank line was seen */
};

/* header_end - length of the header section in p[0..n) with its blank
 * line, or 0 when the blank line is not there yet. */
static size_t header_end(const char *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++) {
		if (p[i] != '\n')
			continue;
		if (p[i + 1] == '\n')
			return i + 2;
		if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

static int collect_headers(void *arg, const void *p, size_t len)
{
	struct headers *h = arg;
	size_t take = ADMIN_SHOW_HEADER_BYTES - h->len, end;

	if (take > len)
		take = len;
	memcpy(h->p + h->len, p, take);
	h->len += take;
	if ((end = header_end(h->p, h->len)) > 0) {
		h->len = end;
		h->is_complete = true;
		return 1;
	}
	return h->len == ADMIN_SHOW_HEADER_BYTES ? 1 : 0;
}

/* print_headers - every header line, indented and escaped. */
static void print_headers(FILE *f, const struct headers *h)
{
	size_t i = 0;

	fputs("headers:\n", f);
	while (i < h->len) {
		const char *lf = memchr(h->p + i, '\n', h->len - i);
		size_t end = lf ? (size_t)(lf - h->p) : h->len, n = end - i;
		if (n > 0 && h->p[end - 1] == '\r')
			n--;
		if (n > 0) {
			fputs("  ", f);
			put_esc(f, h->p + i, n, true);
			putc('\n', f);
		}
		i = end + 1;
	}
	if (!h->is_complete && h->len == ADMIN_SHOW_HEADER_BYTES)
		fprintf(f, "  (cut at %d bytes)\n", ADMIN_SHOW_HEADER_BYTES);
}

static int show(struct spool *sp, const char *id, struct rm_err *err)
{
	struct headers h = { malloc(ADMIN_SHOW_HEADER_BYTES), 0, false };
	int rc;

	if (h.p == NULL)
		return rm_err_set(err, -ENOMEM, "out of memory");
	rc = spool_get(sp, id, show_entry, stdout, err);
	if (rc == 0)
		rc = spool_read(sp, id, collect_headers, &h, err);
	if (rc == 1 || rc == 0) {
		print_headers(stdout, &h);
		rc = 0;
	}
	free(h.p);
	return rc;
}

static int write_out(void *arg, const void *p, size_t len)
{
	return fwrite(p, 1, len, arg) == len ? 0 : -EIO;
}

/* read_spool - list, show or cat with a read-only spool. */
static int read_spool(const struct conf *c, const char *sub, const char *id)
{
	struct rm_err err = { 0, "" };
	struct spool_opts so;
	struct spool *sp = NULL;
	int rc;

	memset(&so, 0, sizeof(so));
	so.dir = c->spool_dir;
	so.map_bytes = c->spool_map_size;
	so.n_shards = 1;
	so.uid = -1;
	so.gid = -1;
	so.read_only = true;
	rc = spool_open(&sp, &so, &err);
	if (rc == -ENOENT && id == NULL)
		return 0;   /* no spool yet: an empty queue */
	if (rc == -ENOENT)
		rc = rm_err_set(&err, -ENOENT, "%s: no such message (there is no spool yet)", id);
	if (rc < 0) {
		fprintf(stderr, "ringmta: queue %s: %s\n", sub,
			err.msg[0] ? err.msg : spool_strerror(rc));
		return 1;
	}
	if (strcmp(sub, "list") == 0)
		rc = spool_list(sp, print_entry, stdout, &err);
	else if (strcmp(sub, "show") == 0)
		rc = show(sp, id, &err);
	else
		rc = spool_read(sp, id, write_out, stdout, &err);
	spool_close(sp);
	if (fflush(stdout) != 0 && rc == 0)
		rc = rm_err_set(&err, -EIO, "stdout: %s", strerror(errno));
	if (rc < 0) {
		fprintf(stderr, "ringmta: queue %s: %s\n", sub,
			err.msg[0] ? err.msg : spool_strerror(rc));
		return 1;
	}
	return 0;
}

/* normalize_id - a queue id argument as the daemon wants it: 16 hex
 * digits, lowercased into out. Returns false when arg is not one. */
static bool normalize_id(const char *arg, char out[SPOOL_ID_BYTES + 1])
{
	size_t n = strlen(arg);

	if (n != SPOOL_ID_BYTES)
		return false;
	for (size_t i = 0; i < n; i++)
		out[i] = arg[i] >= 'A' && arg[i] <= 'F' ? (char)(arg[i] - 'A' + 'a') : arg[i];
	out[n] = '\0';
	return control_proto_is_id(out, n);
}

/* connect_control - a connection to the daemon's control socket, or -1
 * with the reason on stderr. */
static int connect_control(const char *sub, const char *path)
{
	struct timeval tv = { ADMIN_CONTROL_TIMEOUT_S, 0 };
	struct sockaddr_un sa;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		fprintf(stderr, "ringmta: queue %s: socket: %s\n", sub, strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return fd;
	if (errno == ENOENT || errno == ECONNREFUSED)
		fprintf(stderr, "ringmta: queue %s: cannot connect to %s: is ringmta running?\n",
			sub, path);
	else if (errno == EACCES || errno == EPERM)
		fprintf(stderr, "ringmta: queue %s: cannot connect to %s: %s (only root and "
			"the daemon's user may change the queue)\n", sub, path, strerror(errno));
	else
		fprintf(stderr, "ringmta: queue %s: cannot connect to %s: %s\n", sub, path,
			strerror(errno));
	close(fd);
	return -1;
}

/* exchange - send req on fd and read the whole reply into buf (cap - 1
 * bytes at most). Returns its length, or -1 with the reason on stderr. */
static ssize_t exchange(int fd, const char *sub, const char *req, size_t req_len,
			char *buf, size_t cap)
{
	size_t len = 0;

	for (size_t off = 0; off < req_len;) {
		ssize_t n = send(fd, req + off, req_len - off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
			break;  /* the daemon answered early (refused): read it */
		if (n <= 0) {
			fprintf(stderr, "ringmta: queue %s: sending the request: %s\n", sub,
				strerror(errno));
			return -1;
		}
		off += (size_t)n;
	}
	while (len + 1 < cap) {
		ssize_t n = read(fd, buf + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == ECONNRESET && len > 0)
			break;  /* closed with our request unread: the reply is whole */
		if (n < 0) {
			fprintf(stderr, "ringmta: queue %s: reading the reply: %s\n", sub,
				errno == EAGAIN ? "timed out" : strerror(errno));
			return -1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return (ssize_t)len;
}

/* control - one request to the running daemon; the exit status. */
static int control(const struct conf *c, const char *sub, enum control_proto_cmd cmd,
		   const char *id_arg)
{
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char id[SPOOL_ID_BYTES + 1] = "", req[CONTROL_PROTO_MAX_REQUEST_BYTES];
	char reply[CONTROL_PROTO_MAX_REPLY_BYTES + 1];
	enum control_proto_status st;
	const char *text;
	size_t text_len;
	ssize_t len;
	int fd, n;

	if (id_arg != NULL && !normalize_id(id_arg, id)) {
		fprintf(stderr, "ringmta: queue %s: malformed queue id \"", sub);
		put_esc(stderr, id_arg, strnlen(id_arg, 64), false);
		fprintf(stderr, "\": want %d hex digits\n", SPOOL_ID_BYTES);
		return 1;
	}
	if (control_socket_path(path, sizeof(path), c->spool_dir) < 0) {
		fprintf(stderr, "ringmta: queue %s: spool_dir %s is too long for the control "
			"socket\n", sub, c->spool_dir);
		return 1;
	}
	n = control_proto_request_format(req, sizeof(req), cmd, id);
	if (n < 0)
		return 2;
	if ((fd = connect_control(sub, path)) < 0)
		return 1;
	len = exchange(fd, sub, req, (size_t)n, reply, sizeof(reply));
	close(fd);
	if (len < 0)
		return 1;
	if (control_proto_reply_parse(reply, (size_t)len, &st, &text, &text_len) < 0) {
		fprintf(stderr, "ringmta: queue %s: malformed reply from the daemon: \"", sub);
		put_esc(stderr, reply, (size_t)len < 200 ? (size_t)len : 200, true);
		fputs("\"\n", stderr);
		return 1;
	}
	if (st == CONTROL_PROTO_OK) {
		put_esc(stdout, text, text_len, true);
		putc('\n', stdout);
		return fflush(stdout) == 0 ? 0 : 1;
	}
	fprintf(stderr, "ringmta: queue %s: ", sub);
	put_esc(stderr, text, text_len, true);
	fprintf(stderr, " (%s)\n", control_proto_status_name(st));
	return 1;
}

/* The subcommands: name, how many arguments (-1: zero or one), and the
 * control request, or 0 for those that read the spool themselves. */
static const struct {
	const char *name;
	int min_args, max_args;
	enum control_proto_cmd cmd;
} subs[] = {
	{ "list", 0, 0, 0 },
	{ "show", 1, 1, 0 },
	{ "cat", 1, 1, 0 },
	{ "hold", 1, 1, CONTROL_PROTO_HOLD },
	{ "release", 1, 1, CONTROL_PROTO_RELEASE },
	{ "delete", 1, 1, CONTROL_PROTO_DELETE },
	{ "flush", 0, 1, CONTROL_PROTO_FLUSH },
};

int admin_queue(const struct conf *c, int argc, char **argv)
{
	for (size_t i = 0; argc >= 1 && i < sizeof(subs) / sizeof(subs[0]); i++) {
		const char *id;
		if (strcmp(argv[0], subs[i].name) != 0)
			continue;
		if (argc - 1 < subs[i].min_args || argc - 1 > subs[i].max_args)
			break;
		id = argc > 1 ? argv[1] : NULL;
		if (subs[i].cmd == 0)
			return read_spool(c, subs[i].name, id);
		return control(c, subs[i].name, id == NULL && subs[i].cmd == CONTROL_PROTO_FLUSH ?
			       CONTROL_PROTO_FLUSH_ALL : subs[i].cmd, id);
	}
	fputs(usage_text, stderr);
	return 2;
}
