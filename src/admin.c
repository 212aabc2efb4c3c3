/*
 * admin - "ringmta queue list|cat": read the spool from a separate process.
 *
 * Owns: a read-only spool handle for the duration of one command.
 * Must not: write to the spool (LMDB readers only; safe while the daemon
 *       runs).
 * Interface: include/ringmta/admin.h
 * Limits: none beyond the spool's.
 * Errors: exit status 1 with "ringmta: queue: ..." on stderr; 2 for usage.
 */
#include "ringmta/admin.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ringmta/spool.h"

/* ADMIN_ADDR_BYTES - an escaped address: 512 input bytes, 4 out each. */
#define ADMIN_ADDR_BYTES (512 * 4 + 1)
/* ADMIN_LINE_ADDR_BYTES - the same with blanks spelled \x20. */
#define ADMIN_LINE_ADDR_BYTES (ADMIN_ADDR_BYTES * 4)

static void iso_time(int64_t t, char *out, size_t cap)
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (t == INT64_MAX || gmtime_r(&tt, &tm) == NULL) {
		snprintf(out, cap, "never");
		return;
	}
	strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* entry_state - queued (never tried), deferred (tried) or done. */
static const char *entry_state(const struct spool_entry *e)
{
	unsigned attempts = 0, pending = 0;

	for (size_t i = 0; i < e->n_rcpts; i++) {
		if (e->rcpts[i].state == SPOOL_RCPT_PENDING)
			pending++;
		attempts += e->rcpts[i].attempts;
	}
	if (pending == 0)
		return "done";
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
 * addr_str - an address for a listing line: SMTPUTF8 addresses stay
 * readable UTF-8; blanks, controls, backslash, quotes, invalid UTF-8 and
 * invisible formatting characters become \xHH, so a line cannot be forged
 * or visually reordered.
 */
static const char *addr_str(char *out, size_t cap, const char *addr)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *p = (const uint8_t *)addr;
	size_t n = strlen(addr), o = 0, i = 0;

	if (n > 512)
		n = 512;
	while (i < n && o + 17 < cap) {
		uint32_t cp;
		size_t k = p[i] >= 0x80 ? utf8_len(p + i, n - i, &cp) : 0;
		if (k > 0 && !is_risky_cp(cp)) {
			memcpy(out + o, p + i, k);
			o += k;
			i += k;
		} else if (p[i] > 0x20 && p[i] < 0x7f && p[i] != '\\' && p[i] != '"') {
			out[o++] = (char)p[i++];
		} else {
			size_t m = k ? k : 1;
			for (size_t j = 0; j < m; j++, i++) {
				out[o++] = '\\';
				out[o++] = 'x';
				out[o++] = hex[p[i] >> 4];
				out[o++] = hex[p[i] & 15];
			}
		}
	}
	out[o] = '\0';
	return out;
}

static int print_entry(void *arg, const struct spool_entry *e)
{
	FILE *f = arg;
	char next[32];

	char a[ADMIN_LINE_ADDR_BYTES];

	iso_time(e->next_attempt_unix, next, sizeof(next));
	/* Addresses are peer data: escaped, so a listing line cannot be forged. */
	fprintf(f, "id=%s size=%llu from=%s to=", e->id, (unsigned long long)e->size,
		e->sender[0] ? addr_str(a, sizeof(a), e->sender) : "<>");
	for (size_t i = 0; i < e->n_rcpts; i++)
		fprintf(f, "%s%s", i ? "," : "",
			addr_str(a, sizeof(a), e->rcpts[i].addr));
	fprintf(f, " state=%s next=%s\n", entry_state(e), next);
	return 0;
}

static int write_out(void *arg, const void *p, size_t len)
{
	return fwrite(p, 1, len, arg) == len ? 0 : -EIO;
}

int admin_queue(const struct conf *c, int argc, char **argv)
{
	struct rm_err err = { 0, "" };
	struct spool_opts so;
	struct spool *sp = NULL;
	int rc;

	if (argc < 1 || (strcmp(argv[0], "list") != 0 && strcmp(argv[0], "cat") != 0) ||
	    (strcmp(argv[0], "cat") == 0 && argc != 2) ||
	    (strcmp(argv[0], "list") == 0 && argc != 1)) {
		fprintf(stderr, "usage: ringmta [-c FILE] [-o key=value] queue list | queue cat ID\n");
		return 2;
	}
	memset(&so, 0, sizeof(so));
	so.dir = c->spool_dir;
	so.map_bytes = c->spool_map_size;
	so.n_shards = 1;
	so.uid = -1;
	so.gid = -1;
	so.read_only = true;
	rc = spool_open(&sp, &so, &err);
	if (rc == -ENOENT && strcmp(argv[0], "list") == 0)
		return 0;   /* no spool yet: an empty queue */
	if (rc < 0) {
		fprintf(stderr, "ringmta: queue: %s\n", err.msg[0] ? err.msg : spool_strerror(rc));
		return 1;
	}
	if (strcmp(argv[0], "list") == 0)
		rc = spool_list(sp, print_entry, stdout, &err);
	else
		rc = spool_read(sp, argv[1], write_out, stdout, &err);
	spool_close(sp);
	if (fflush(stdout) != 0 && rc == 0)
		rc = -EIO;
	if (rc < 0) {
		fprintf(stderr, "ringmta: queue %s: %s\n", argv[0],
			err.msg[0] ? err.msg : spool_strerror(rc));
		return 1;
	}
	return 0;
}
