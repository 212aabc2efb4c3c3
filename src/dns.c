/*
 * dns - asynchronous MX and host resolution with udns on the reactor's
 *       ring: RFC 5321 5.1 ordering, RFC 7505 null MX, a TTL cache.
 *
 * Owns: one udns context and its UDP socket per resolver, the pool of
 *       lookups in flight, the cache, and three submissions in the ring at
 *       most: the socket's poll, udns's timer, the "answers ready" NOP.
 * Must not: block (no dns_resolve*, no sleeping; the only file read is
 *       resolv_conf in dns_resolver_new), call a lookup's callback from
 *       inside a dns_* call or from inside a udns callback, share anything
 *       between reactors (udns's default context is only read, once
 *       initialised under pthread_once).
 * Interface: include/ringmta/dns.h
 * Limits: DNS_MAX_MX_HOSTS hosts of DNS_MAX_HOST_ADDRS addresses per
 *       answer; max_lookups in flight (then -EAGAIN); cache_entries
 *       cached answers (LRU); TTLs capped at max_ttl_s. udns speaks UDP
 *       only (EDNS0, 4096 bytes); a query whose UDP answer comes back
 *       truncated (TC) is asked again over TCP on the ring (RFC 1035
 *       4.2.2, RFC 7766), one connection per query, answers up to
 *       DNS_TCP_MAX_BYTES, the whole exchange bounded by twice the query
 *       timeout.
 * Errors: set-up returns -errno/-EINVAL with an rm_err; lookups return
 *       -EINVAL/-EAGAIN/-ESHUTDOWN; DNS trouble is a result
 *       (DNS_RESULT_TEMPFAIL), never an error. A completion for an anchor
 *       we do not know is our bug (rm_panic).
 * Standards: RFC 5321 5.1 (MX order, implicit MX, MX to self), RFC 7505
 *       (null MX), RFC 1035 2.3.4 (name sizes), RFC 2308 (negative
 *       caching, approximated), RFC 5321 4.1.3 (address literals),
 *       resolv.conf(5).
 *
 * Compressed questions: udns matches a reply's question after following
 * compression pointers, then its parsers read it as a plain name and can
 * write past their result (see on_dbg). Every reply we accept, over UDP
 * or TCP, carries our question byte for byte, ASCII case aside.
 *
 * TCP fallback: udns takes a truncated reply for SERVFAIL; its debug
 * hook, called for every reply while dns_ioevent runs, shows us the TC
 * bit first. The hook only notes the query (udns's callback data) and
 * the server; after dns_ioevent
 * returns, the UDP query is cancelled and the same question goes to that
 * server over TCP: connect, send, receive, each with a linked timeout at
 * the exchange's deadline.
 * The answer is parsed with udns's own parsers and ends the query as a
 * UDP answer would have.
 *
 * Lookup flow: MX query -> (records: dns_mx_build, then A+AAAA of every
 * host in parallel | NODATA: A+AAAA of the domain itself | NXDOMAIN or
 * failure: done) -> hosts_done assembles addresses -> finish caches the
 * sorted answer, shuffles equal preferences, queues it on the ready list
 * -> the NOP completion calls the callbacks.
 */
#include "ringmta/dns.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <udns.h>

#include "ringmta/log.h"

/* DNS_LABEL_BYTES - RFC 1035 2.3.4: a label is at most 63 octets. */
#define DNS_LABEL_BYTES 63
/* DNS_LITERAL_BYTES - "IPv6:" plus INET6_ADDRSTRLEN, with room. */
#define DNS_LITERAL_BYTES 64
/* DNS_RESOLV_LINE_BYTES - one resolv.conf line; longer lines are cut. */
#define DNS_RESOLV_LINE_BYTES 1024
/* DNS_MAX_MX_RECORDS - MX records looked at in one answer: a 4 KiB EDNS
 * answer holds a few hundred; more than this is a broken zone. */
#define DNS_MAX_MX_RECORDS 256

/* DNS_TCP_MAX_BYTES - the largest DNS message over TCP (its 2-byte length). */
#define DNS_TCP_MAX_BYTES 65535
/* DNS_TCP_QUERY_BYTES - length prefix, header, name, type and class. */
#define DNS_TCP_QUERY_BYTES (2 + DNS_HSIZE + DNS_MAXDN + 4)

enum { DNS_ANCHOR_POLL = 1, DNS_ANCHOR_TIMER, DNS_ANCHOR_READY, DNS_ANCHOR_TCP };
enum { DNS_TCP_CONNECT = 1, DNS_TCP_SEND, DNS_TCP_RECV };
enum { DNS_FAM_V4 = 0, DNS_FAM_V6 = 1, DNS_N_FAM = 2 };

/* struct dns_anchor - the object a submission is tagged with. */
struct dns_anchor {
	struct dns_resolver *d;
	unsigned kind;
} __attribute__((aligned(16)));

struct dns_tcp;

/* struct dns_q - one query of a lookup (udns's callback data). */
struct dns_q {
	struct dns_lookup *l;
	struct dns_query *q;    /* the UDP query; NULL when not in flight */
	struct dns_tcp *tcp;    /* the TCP retry; NULL when none */
	unsigned host;
	unsigned fam;
};

/*
 * struct dns_tcp - one question asked again over TCP. Its anchor comes
 * first (the completions are tagged with it). Freed when its last
 * submission has completed; dq is NULL once nobody wants the answer.
 */
struct dns_tcp {
	struct dns_anchor a;
	struct dns_tcp *next;           /* d->tcp_list */
	struct dns_q *dq;
	int fd;
	unsigned step;                  /* DNS_TCP_*; 0: not started */
	bool is_op_armed;               /* connect, send or recv in flight */
	bool is_done;                   /* answered or failed: no new step */
	int64_t deadline_ms;            /* the whole exchange (reactor clock) */
	struct sockaddr_storage sa;
	socklen_t salen;
	unsigned qtype;
	uint16_t qid;
	size_t qlen, off;               /* query bytes; sent, then received */
	struct __kernel_timespec ts;
	uint8_t dn[DNS_MAXDN];          /* the question, wire form */
	uint8_t query[DNS_TCP_QUERY_BYTES];
	uint8_t *ans;                   /* 2 + DNS_TCP_MAX_BYTES, once receiving */
};

struct dns_lookup {
	struct dns_resolver *d;
	dns_lookup_fn *cb;
	void *arg;
	struct dns_lookup *next;        /* free list or ready list */
	struct dns_lookup *leader;      /* the lookup whose answer we share */
	struct dns_lookup *followers;   /* lookups sharing ours ... */
	struct dns_lookup *next_follower; /* ... linked through this */
	enum dns_cache_kind kind;
	bool is_used;
	bool is_ready;                  /* on the ready list */
	bool is_canceled;
	bool is_calling;                /* its callback runs now */
	unsigned n_pending;             /* udns queries in flight */
	uint32_t ttl_s;                 /* smallest TTL seen */
	bool has_tempfail;              /* some query failed temporarily */
	struct dns_q mxq;
	struct dns_q aq[DNS_MAX_MX_HOSTS][DNS_N_FAM];
	struct dns_addr tmp[DNS_MAX_MX_HOSTS][DNS_N_FAM][DNS_MAX_HOST_ADDRS];
	unsigned n_tmp[DNS_MAX_MX_HOSTS][DNS_N_FAM];
	bool fam_tempfail[DNS_MAX_MX_HOSTS][DNS_N_FAM];
	char name[DNS_NAME_BYTES];
	struct dns_mx_result res;
};

struct dns_resolver {
	struct dns_anchor poll_anchor;
	struct dns_anchor timer_anchor;
	struct dns_anchor ready_anchor;
	struct reactor *r;
	unsigned op;
	struct dns_ctx *ctx;
	int fd;
	bool is_started;
	bool is_stopping;
	bool is_poll_armed;
	bool is_timer_armed;
	bool is_ready_armed;
	int64_t timer_at_ms;
	struct __kernel_timespec ts_arm;
	struct __kernel_timespec ts_update;
	struct dns_cache *cache;
	struct dns_lookup *pool;
	unsigned max_lookups;
	struct dns_lookup *free_list;
	struct dns_lookup *ready_head, *ready_tail;
	uint64_t rng;
	unsigned negative_ttl_s;
	unsigned max_ttl_s;
	unsigned tcp_timeout_s;         /* a TCP exchange gets twice this */
	struct dns_tcp *tcp_list;       /* every dns_tcp not yet freed */
	bool has_tcp_new;               /* some dns_tcp waits for its start */
	struct dns_stats stats;
	char myhostname[DNS_NAME_BYTES]; /* "" = no MX-to-self check */
};

/* --- names, literals, results ------------------------------------------ */

int dns_name_normalize(const char *in, size_t len, char out[DNS_NAME_BYTES])
{
	size_t label = 0;

	if (len > 0 && in[len - 1] == '.')
		len--;
	if (len == 0 || len >= DNS_NAME_BYTES)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == '.') {
			if (label == 0)
				return -EINVAL;
			label = 0;
		} else if (isalnum(c) || c == '-' || c == '_') {
			if (++label > DNS_LABEL_BYTES)
				return -EINVAL;
		} else {
			return -EINVAL;
		}
		out[i] = (char)tolower(c);
	}
	if (label == 0)
		return -EINVAL;         /* "a.b..": an empty last label */
	out[len] = '\0';
	return (int)len;
}

/* parse_ip - text (NUL-terminated) as IPv4 when v4_ok, IPv6 when v6_ok. */
static bool parse_ip(const char *text, bool v4_ok, bool v6_ok, struct dns_addr *a)
{
	memset(a, 0, sizeof(*a));
	if (v4_ok && inet_pton(AF_INET, text, &a->u.v4) == 1) {
		a->family = AF_INET;
		return true;
	}
	if (v6_ok && inet_pton(AF_INET6, text, &a->u.v6) == 1) {
		a->family = AF_INET6;
		return true;
	}
	return false;
}

bool dns_addr_literal(const char *in, size_t len, bool is_bare_allowed, struct dns_addr *a)
{
	char buf[DNS_LITERAL_BYTES];
	bool is_bracketed = len >= 2 && in[0] == '[' && in[len - 1] == ']';

	if (is_bracketed) {
		in++;
		len -= 2;
	} else if (!is_bare_allowed) {
		return false;
	}
	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, in, len);
	buf[len] = '\0';
	if (is_bracketed && len > 5 && strncasecmp(buf, "IPv6:", 5) == 0)
		return parse_ip(buf + 5, false, true, a);
	return parse_ip(buf, true, is_bare_allowed, a);
}

socklen_t dns_addr_sockaddr(const struct dns_addr *a, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (a->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		sin->sin_addr = a->u.v4;
		return sizeof(*sin);
	}
	if (a->family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		sin6->sin6_addr = a->u.v6;
		return sizeof(*sin6);
	}
	return 0;
}

const char *dns_result_str(enum dns_result res)
{
	switch (res) {
	case DNS_RESULT_OK: return "ok";
	case DNS_RESULT_TEMPFAIL: return "tempfail";
	case DNS_RESULT_NXDOMAIN: return "nxdomain";
	case DNS_RESULT_NULL_MX: return "null-mx";
	case DNS_RESULT_NOHOST: return "nohost";
	case DNS_RESULT_LOOP: return "loop";
	}
	return "unknown";
}

bool dns_result_is_permanent(enum dns_result res)
{
	return res == DNS_RESULT_NXDOMAIN || res == DNS_RESULT_NULL_MX ||
		res == DNS_RESULT_NOHOST || res == DNS_RESULT_LOOP;
}

/* --- MX ordering --------------------------------------------------------- */

static bool is_root(const char *name)
{
	return name[0] == '\0' || (name[0] == '.' && name[1] == '\0');
}

/* mx_insert - put (pref, name) into res's sorted hosts: after equal
 * preferences (stable), dropping the last host when full. */
static void mx_insert(struct dns_mx_result *res, unsigned pref, const char *name)
{
	size_t at = res->n_hosts;

	while (at > 0 && res->hosts[at - 1].preference > pref)
		at--;
	if (at == DNS_MAX_MX_HOSTS)
		return;
	if (res->n_hosts == DNS_MAX_MX_HOSTS)
		res->n_hosts--;
	memmove(&res->hosts[at + 1], &res->hosts[at],
		(res->n_hosts - at) * sizeof(res->hosts[0]));
	memset(&res->hosts[at], 0, sizeof(res->hosts[at]));
	res->hosts[at].preference = pref;
	res->hosts[at].status = DNS_RESULT_TEMPFAIL;
	memcpy(res->hosts[at].name, name, strlen(name) + 1);
	res->n_hosts++;
}

/* mx_remove - drop hosts[i]. */
static void mx_remove(struct dns_mx_result *res, size_t i)
{
	memmove(&res->hosts[i], &res->hosts[i + 1], (res->n_hosts - i - 1) * sizeof(res->hosts[0]));
	res->n_hosts--;
}

void dns_mx_build(struct dns_mx_result *res, const struct dns_mx_record *rr, size_t n)
{
	char name[DNS_NAME_BYTES];

	memset(res, 0, sizeof(*res));
	if (n == 1 && is_root(rr[0].name) && rr[0].preference == 0) {
		res->status = DNS_RESULT_NULL_MX;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		size_t dup;

		if (is_root(rr[i].name) || dns_name_normalize(rr[i].name, strlen(rr[i].name), name) < 0)
			continue;
		for (dup = 0; dup < res->n_hosts; dup++)
			if (strcmp(res->hosts[dup].name, name) == 0)
				break;
		if (dup < res->n_hosts) {
			if (res->hosts[dup].preference <= rr[i].preference)
				continue;
			mx_remove(res, dup);
		}
		mx_insert(res, rr[i].preference, name);
	}
	res->status = res->n_hosts > 0 ? DNS_RESULT_OK : DNS_RESULT_NOHOST;
}

void dns_mx_drop_self(struct dns_mx_result *res, const char *myhostname)
{
	if (res->status != DNS_RESULT_OK || myhostname == NULL || myhostname[0] == '\0')
		return;
	for (size_t i = 0; i < res->n_hosts; i++) {
		if (strcmp(res->hosts[i].name, myhostname) != 0)
			continue;
		/* hosts are sorted: cut before the first of our preference */
		while (i > 0 && res->hosts[i - 1].preference == res->hosts[i].preference)
			i--;
		res->n_hosts = i;
		if (i == 0)
			res->status = DNS_RESULT_LOOP;
		return;
	}
}

static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

void dns_mx_shuffle(struct dns_mx_host *hosts, size_t n, uint64_t *rng)
{
	struct dns_mx_host t;
	size_t start = 0;

	while (start < n) {
		size_t end = start + 1;

		while (end < n && hosts[end].preference == hosts[start].preference)
			end++;
		/* Fisher-Yates over [start, end); the modulo bias of a 64-bit
		 * draw over at most DNS_MAX_MX_HOSTS values is ~1e-18. */
		for (size_t i = end - 1; i > start; i--) {
			size_t j = start + (size_t)(xorshift64(rng) % (i - start + 1));

			if (j != i) {
				t = hosts[i];
				hosts[i] = hosts[j];
				hosts[j] = t;
			}
		}
		start = end;
	}
}

/* --- the cache: a chained hash table over a fixed array, LRU list ------- */

struct dns_cache_entry {
	int32_t hash_next;      /* bucket chain or free list; -1 ends */
	int32_t lru_prev, lru_next;
	enum dns_cache_kind kind;
	uint32_t hash;
	int64_t expires_ms;
	char name[DNS_NAME_BYTES];
	struct dns_mx_result res;
};

struct dns_cache {
	unsigned n_entries;
	unsigned n_used;
	uint32_t bucket_mask;
	int32_t *buckets;
	int32_t lru_head;       /* most recently used */
	int32_t lru_tail;
	int32_t free_head;
	struct dns_cache_entry *e;
};

static uint32_t cache_hash(enum dns_cache_kind kind, const char *name)
{
	uint32_t h = 2166136261u ^ (uint32_t)kind;     /* FNV-1a */

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 16777619u;
	return h;
}

struct dns_cache *dns_cache_new(unsigned n_entries)
{
	struct dns_cache *c;
	uint32_t n_buckets = 1;

	if (n_entries == 0 || n_entries > (1u << 24))
		return NULL;
	while (n_buckets < 2 * n_entries)
		n_buckets <<= 1;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->buckets = malloc(n_buckets * sizeof(*c->buckets));
	c->e = calloc(n_entries, sizeof(*c->e));
	if (c->buckets == NULL || c->e == NULL) {
		dns_cache_free(c);
		return NULL;
	}
	c->n_entries = n_entries;
	c->bucket_mask = n_buckets - 1;
	for (uint32_t i = 0; i < n_buckets; i++)
		c->buckets[i] = -1;
	for (unsigned i = 0; i < n_entries; i++)
		c->e[i].hash_next = i + 1 < n_entries ? (int32_t)(i + 1) : -1;
	c->free_head = 0;
	c->lru_head = c->lru_tail = -1;
	return c;
}

void dns_cache_free(struct dns_cache *c)
{
	if (c == NULL)
		return;
	free(c->buckets);
	free(c->e);
	free(c);
}

unsigned dns_cache_count(const struct dns_cache *c)
{
	return c->n_used;
}

static void lru_unlink(struct dns_cache *c, int32_t i)
{
	struct dns_cache_entry *e = &c->e[i];

	if (e->lru_prev >= 0)
		c->e[e->lru_prev].lru_next = e->lru_next;
	else
		c->lru_head = e->lru_next;
	if (e->lru_next >= 0)
		c->e[e->lru_next].lru_prev = e->lru_prev;
	else
		c->lru_tail = e->lru_prev;
}

static void lru_push(struct dns_cache *c, int32_t i)
{
	struct dns_cache_entry *e = &c->e[i];

	e->lru_prev = -1;
	e->lru_next = c->lru_head;
	if (c->lru_head >= 0)
		c->e[c->lru_head].lru_prev = i;
	c->lru_head = i;
	if (c->lru_tail < 0)
		c->lru_tail = i;
}

/* cache_remove - unlink entry i from its bucket and the LRU; free it. */
static void cache_remove(struct dns_cache *c, int32_t i)
{
	int32_t *p = &c->buckets[c->e[i].hash & c->bucket_mask];

	while (*p != i) {
		if (*p < 0)
			rm_panic("dns: cache entry %d not in its bucket", (int)i);
		p = &c->e[*p].hash_next;
	}
	*p = c->e[i].hash_next;
	lru_unlink(c, i);
	c->e[i].hash_next = c->free_head;
	c->free_head = i;
	c->n_used--;
}

static int32_t cache_find(const struct dns_cache *c, enum dns_cache_kind kind,
			  const char *name, uint32_t h)
{
	for (int32_t i = c->buckets[h & c->bucket_mask]; i >= 0; i = c->e[i].hash_next)
		if (c->e[i].hash == h && c->e[i].kind == kind && strcmp(c->e[i].name, name) == 0)
			return i;
	return -1;
}

const struct dns_mx_result *dns_cache_get(struct dns_cache *c, enum dns_cache_kind kind,
					  const char *name, int64_t now_ms, uint32_t *ttl_left_s)
{
	int32_t i = cache_find(c, kind, name, cache_hash(kind, name));

	if (i < 0)
		return NULL;
	if (c->e[i].expires_ms <= now_ms) {
		cache_remove(c, i);
		return NULL;
	}
	lru_unlink(c, i);
	lru_push(c, i);
	if (ttl_left_s)
		*ttl_left_s = (uint32_t)((c->e[i].expires_ms - now_ms + 999) / 1000);
	return &c->e[i].res;
}

void dns_cache_put(struct dns_cache *c, enum dns_cache_kind kind, const char *name,
		   const struct dns_mx_result *res, uint32_t ttl_s, int64_t now_ms)
{
	uint32_t h = cache_hash(kind, name);
	int32_t i = cache_find(c, kind, name, h);
	size_t len = strlen(name);

	if (i >= 0)
		cache_remove(c, i);
	if (ttl_s == 0 || len >= DNS_NAME_BYTES)
		return;
	if (c->free_head < 0)
		cache_remove(c, c->lru_tail);
	i = c->free_head;
	c->free_head = c->e[i].hash_next;
	c->e[i].kind = kind;
	c->e[i].hash = h;
	c->e[i].expires_ms = now_ms + (int64_t)ttl_s * 1000;
	memcpy(c->e[i].name, name, len + 1);
	c->e[i].res = *res;
	c->e[i].hash_next = c->buckets[h & c->bucket_mask];
	c->buckets[h & c->bucket_mask] = i;
	lru_push(c, i);
	c->n_used++;
}

/* --- the ring: poll, timer, ready NOP ------------------------------------ */

static void arm_poll(struct dns_resolver *d)
{
	struct io_uring_sqe *sqe;

	if (d->is_poll_armed || d->is_stopping)
		return;
	sqe = reactor_sqe(d->r);
	io_uring_prep_poll_add(sqe, d->fd, POLLIN);
	reactor_sqe_tag(sqe, &d->poll_anchor, d->op);
	d->is_poll_armed = true;
}

/* timer_want - have udns's timer fire within delay_ms: arm it, or move an
 * armed timer earlier (IORING_OP_TIMEOUT_REMOVE with the update flag). */
static void timer_want(struct dns_resolver *d, int64_t delay_ms)
{
	int64_t at = d->r->now_ms + delay_ms;
	struct io_uring_sqe *sqe;

	if (d->is_stopping)
		return;
	if (!d->is_timer_armed) {
		d->ts_arm.tv_sec = delay_ms / 1000;
		d->ts_arm.tv_nsec = (delay_ms % 1000) * 1000000;
		sqe = reactor_sqe(d->r);
		io_uring_prep_timeout(sqe, &d->ts_arm, 0, 0);
		reactor_sqe_tag(sqe, &d->timer_anchor, d->op);
		d->is_timer_armed = true;
		d->timer_at_ms = at;
	} else if (at < d->timer_at_ms) {
		/* If the timer has fired already, the update fails with
		 * -ENOENT and the timer's completion re-reads udns. */
		d->ts_update.tv_sec = delay_ms / 1000;
		d->ts_update.tv_nsec = (delay_ms % 1000) * 1000000;
		sqe = reactor_sqe(d->r);
		io_uring_prep_timeout_update(sqe, &d->ts_update,
					     reactor_tag(&d->timer_anchor, d->op), 0);
		reactor_sqe_tag(sqe, &d->timer_anchor, REACTOR_OP_IGNORE);
		d->timer_at_ms = at;
	}
}

/* on_utm - udns wants its timer: in timeout s (0: soon), < 0: not at all. */
static void on_utm(struct dns_ctx *ctx, int timeout, void *data)
{
	struct dns_resolver *d = data;

	if (ctx == NULL || timeout < 0 || !d->is_started)
		return;
	timer_want(d, (int64_t)timeout * 1000);
}

static void ready_push(struct dns_lookup *l)
{
	struct dns_resolver *d = l->d;
	struct io_uring_sqe *sqe;

	l->is_ready = true;
	l->next = NULL;
	if (d->ready_tail)
		d->ready_tail->next = l;
	else
		d->ready_head = l;
	d->ready_tail = l;
	if (!d->is_ready_armed) {
		sqe = reactor_sqe(d->r);
		io_uring_prep_nop(sqe);
		reactor_sqe_tag(sqe, &d->ready_anchor, d->op);
		d->is_ready_armed = true;
	}
}

/* --- the TCP retry of a truncated answer ---------------------------------- */

static void query_cancel(struct dns_ctx *ctx, struct dns_q *dq);
static void q_done(struct dns_q *dq, void *rr, int status);

/* tl_ioevent_d - the resolver whose dns_ioevent() runs on this thread now
 * (udns's debug hook has no context argument). */
static _Thread_local struct dns_resolver *tl_ioevent_d;

static void tcp_free(struct dns_tcp *t)
{
	struct dns_tcp **pp = &t->a.d->tcp_list;

	while (*pp != t)
		pp = &(*pp)->next;
	*pp = t->next;
	if (t->fd >= 0)
		close(t->fd);
	free(t->ans);
	free(t);
}

/* tcp_drop - nobody wants dq's TCP answer any more. */
static void tcp_drop(struct dns_q *dq)
{
	struct dns_tcp *t = dq->tcp;

	if (t == NULL)
		return;
	dq->tcp = NULL;
	t->dq = NULL;
	/* in flight: its completion frees it; not started: tcp_start_new */
	if (t->is_op_armed)
		reactor_cancel(t->a.d->r, &t->a, t->a.d->op);
	else if (t->step != 0)
		tcp_free(t);
}

/* tcp_arm - tag sqe (connect, send or recv of t) and link a timeout at
 * t's deadline (the caller checked that it is ahead). */
static void tcp_arm(struct dns_tcp *t, struct io_uring_sqe *sqe)
{
	struct dns_resolver *d = t->a.d;
	int64_t left = t->deadline_ms - d->r->now_ms;

	reactor_sqe_tag(sqe, &t->a, d->op);
	sqe->flags |= IOSQE_IO_LINK;
	t->ts.tv_sec = left / 1000;
	t->ts.tv_nsec = (left % 1000) * 1000000;
	sqe = reactor_sqe(d->r);
	io_uring_prep_link_timeout(sqe, &t->ts, 0);
	reactor_sqe_tag(sqe, &t->a, REACTOR_OP_IGNORE);
	t->is_op_armed = true;
}

/* tcp_end - t is over: free it, then end its query with status (rr:
 * udns's parsed answer, handed on). */
static void tcp_end(struct dns_tcp *t, int status, void *rr)
{
	struct dns_q *dq = t->dq;

	t->is_done = true;
	if (dq != NULL) {
		dq->tcp = NULL;
		t->dq = NULL;
	}
	if (!t->is_op_armed)
		tcp_free(t);
	if (dq != NULL)
		q_done(dq, rr, status);
	else
		free(rr);
}

/*
 * question_is - whether the n bytes at p are the wire-form name qdn (n its
 * length), ASCII case aside. Byte for byte, as udns checks a UDP reply: a
 * compressed question would pass dns_getdn yet udns's parsers
 * (dns_stdrr_finish) read the question at its fixed offset as a plain name.
 */
static bool question_is(const uint8_t *p, const uint8_t *qdn, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t a = p[i], b = qdn[i];

		if (a >= 'A' && a <= 'Z')
			a = (uint8_t)(a - 'A' + 'a');
		if (b >= 'A' && b <= 'Z')
			b = (uint8_t)(b - 'A' + 'a');
		if (a != b)
			return false;
	}
	return true;
}

int dns_answer_parse(const uint8_t *pkt, size_t len, unsigned qid, const uint8_t *qdn,
		     unsigned qtype, void **rr)
{
	const uint8_t *end = pkt + len, *cur;
	size_t qlen = dns_dnlen(qdn);
	dns_parse_fn *parse = qtype == DNS_T_MX ? dns_parse_mx :
		qtype == DNS_T_A ? dns_parse_a4 : dns_parse_a6;
	int rc;

	*rr = NULL;
	if (qtype != DNS_T_MX && qtype != DNS_T_A && qtype != DNS_T_AAAA)
		return DNS_E_BADQUERY;
	if (len < DNS_HSIZE + qlen + 4 || len > DNS_TCP_MAX_BYTES || dns_qid(pkt) != qid ||
	    !dns_qr(pkt) || dns_opcode(pkt) != 0 || dns_tc(pkt) || dns_numqd(pkt) != 1 ||
	    !question_is(pkt + DNS_HSIZE, qdn, qlen))
		return DNS_E_PROTOCOL;
	cur = pkt + DNS_HSIZE + qlen;
	if (dns_get16(cur) != qtype || dns_get16(cur + 2) != DNS_C_IN)
		return DNS_E_PROTOCOL;
	switch (dns_rcode(pkt)) {
	case DNS_R_NOERROR:
		break;
	case DNS_R_NXDOMAIN:
		return DNS_E_NXDOMAIN;
	default:
		return DNS_E_TEMPFAIL;
	}
	if (dns_numan(pkt) == 0)
		return DNS_E_NODATA;
	rc = parse(qdn, pkt, cur, end, rr);
	if (rc < 0 || *rr == NULL) {
		free(*rr);
		*rr = NULL;
		return rc < 0 ? rc : DNS_E_PROTOCOL;
	}
	return DNS_E_NOERROR;
}

/* tcp_answer - end t's query with the len-byte reply in t->ans + 2. */
static void tcp_answer(struct dns_tcp *t, size_t len)
{
	void *rr;
	int status = dns_answer_parse(t->ans + 2, len, t->qid, t->dn, t->qtype, &rr);

	tcp_end(t, status, rr);
}

static void tcp_send(struct dns_tcp *t)
{
	struct io_uring_sqe *sqe = reactor_sqe(t->a.d->r);

	io_uring_prep_send(sqe, t->fd, t->query + t->off, t->qlen - t->off, MSG_NOSIGNAL);
	tcp_arm(t, sqe);
}

static void tcp_recv(struct dns_tcp *t)
{
	struct io_uring_sqe *sqe = reactor_sqe(t->a.d->r);

	io_uring_prep_recv(sqe, t->fd, t->ans + t->off, 2 + DNS_TCP_MAX_BYTES - t->off, 0);
	tcp_arm(t, sqe);
}

/* tcp_on_cqe - one step of t ended with res. */
static void tcp_on_cqe(struct dns_tcp *t, int res)
{
	size_t need;

	t->is_op_armed = false;
	if (t->dq == NULL || t->is_done || t->a.d->is_stopping) {
		tcp_free(t);
		return;
	}
	/* a server that drips its answer gets the deadline, not a timeout
	 * per piece */
	if (res < 0 || (res == 0 && t->step == DNS_TCP_RECV) ||
	    t->a.d->r->now_ms >= t->deadline_ms) {
		tcp_end(t, DNS_E_TEMPFAIL, NULL);
		return;
	}
	switch (t->step) {
	case DNS_TCP_CONNECT:
		t->step = DNS_TCP_SEND;
		t->off = 0;
		tcp_send(t);
		return;
	case DNS_TCP_SEND:
		t->off += (size_t)res;
		if (t->off < t->qlen) {
			tcp_send(t);
			return;
		}
		t->ans = malloc(2 + DNS_TCP_MAX_BYTES);
		if (t->ans == NULL) {
			tcp_end(t, DNS_E_NOMEM, NULL);
			return;
		}
		t->step = DNS_TCP_RECV;
		t->off = 0;
		tcp_recv(t);
		return;
	default:
		t->off += (size_t)res;
		if (t->off >= 2) {
			need = 2 + (size_t)dns_get16(t->ans);
			if (t->off >= need) {
				tcp_answer(t, need - 2);
				return;
			}
		}
		tcp_recv(t);
		return;
	}
}

/* tcp_start - cancel t's UDP query, connect to the server that truncated. */
static void tcp_start(struct dns_tcp *t)
{
	struct dns_resolver *d = t->a.d;
	struct io_uring_sqe *sqe;
	uint8_t *p = t->query + 2;
	int dnlen;

	query_cancel(d->ctx, t->dq);
	t->step = DNS_TCP_CONNECT;
	t->deadline_ms = d->r->now_ms + 2000 * (int64_t)d->tcp_timeout_s;
	d->stats.n_tcp++;
	dnlen = dns_dnlen(t->dn);
	t->qid = (uint16_t)xorshift64(&d->rng);
	memset(p, 0, DNS_HSIZE);
	dns_put16(p, t->qid);
	p[2] = DNS_HF1_RD;
	dns_put16(p + 4, 1);
	memcpy(p + DNS_HSIZE, t->dn, (size_t)dnlen);
	dns_put16(p + DNS_HSIZE + dnlen, t->qtype);
	dns_put16(p + DNS_HSIZE + dnlen + 2, DNS_C_IN);
	t->qlen = 2 + DNS_HSIZE + (size_t)dnlen + 4;
	dns_put16(t->query, (unsigned)(t->qlen - 2));
	t->fd = socket(t->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (t->fd < 0) {
		tcp_end(t, DNS_E_TEMPFAIL, NULL);
		return;
	}
	sqe = reactor_sqe(d->r);
	io_uring_prep_connect(sqe, t->fd, (struct sockaddr *)&t->sa, t->salen);
	tcp_arm(t, sqe);
}

/* tcp_start_new - after dns_ioevent: start the retries the hook noted. */
static void tcp_start_new(struct dns_resolver *d)
{
	struct dns_tcp *t, *next;

	d->has_tcp_new = false;
	for (t = d->tcp_list; t != NULL; t = next) {
		next = t->next;
		if (t->step != 0)
			continue;
		if (t->dq == NULL)
			tcp_free(t);
		else
			tcp_start(t);
	}
}

/* dq_name - the name dq asks about. */
static const char *dq_name(const struct dns_q *dq)
{
	return dq == &dq->l->mxq ? dq->l->name : dq->l->res.hosts[dq->host].name;
}

/*
 * on_dbg - udns's hook for the replies dns_ioevent reads. udns 0.4 calls
 * it with code 0 and the query's callback data once it has matched a
 * reply to one of our queries and its server, before it looks at the
 * rcode; other codes are replies udns threw away. Two jobs:
 *
 * 1. A reply udns would parse (NOERROR, records, no TC) whose question is
 *    not our name byte for byte is turned into a SERVFAIL in udns's own
 *    receive buffer. udns matched the question after following
 *    compression pointers, but its record parsers (dns_stdrr_finish)
 *    read the question at its fixed place as a plain name: a compressed
 *    one can make that text longer than dns_dntop_size admits, and
 *    dns_dntop then writes past the record udns allocated (a heap
 *    overflow any server, or a spoofer who guesses the id, could cause).
 *    No real server compresses the question; udns moves to the next
 *    server or ends the query TEMPFAIL.
 * 2. A truncated reply notes the query for a TCP retry to the same
 *    server (udns would take it for SERVFAIL).
 */
static void on_dbg(int code, const struct sockaddr *sa, unsigned salen, dnscc_t *pkt,
		   int plen, const struct dns_query *q, void *data)
{
	struct dns_resolver *d = tl_ioevent_d;
	struct dns_q *dq = data;
	uint8_t dn[DNS_MAXDN];
	struct dns_tcp *t;
	size_t qlen;

	(void)q;
	if (d == NULL || d->is_stopping || code != 0 || dq == NULL || dq->q == NULL ||
	    pkt == NULL || plen < DNS_HSIZE || !dns_qr(pkt) ||
	    dns_sptodn(dq_name(dq), dn, sizeof(dn)) <= 0)
		return;
	qlen = dns_dnlen(dn);
	if (dns_rcode(pkt) == DNS_R_NOERROR && !dns_tc(pkt) && dns_numan(pkt) > 0 &&
	    ((size_t)plen < DNS_HSIZE + qlen + 4 || !question_is(pkt + DNS_HSIZE, dn, qlen))) {
		((uint8_t *)pkt)[3] = (uint8_t)((pkt[3] & 0xf0) | DNS_R_SERVFAIL);
		d->stats.n_bad_question++;
		return;
	}
	if (!dns_tc(pkt) || dq->tcp != NULL || sa == NULL || salen > sizeof(t->sa) ||
	    (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
		return;
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return;         /* udns's own failure stands */
	t->a = (struct dns_anchor){ d, DNS_ANCHOR_TCP };
	t->fd = -1;
	memcpy(&t->sa, sa, salen);
	t->salen = (socklen_t)salen;
	t->qtype = dq == &dq->l->mxq ? DNS_T_MX : dq->fam == DNS_FAM_V4 ? DNS_T_A : DNS_T_AAAA;
	memcpy(t->dn, dn, qlen);
	t->dq = dq;
	dq->tcp = t;
	t->next = d->tcp_list;
	d->tcp_list = t;
	d->has_tcp_new = true;
}

/* --- lookups -------------------------------------------------------------- */

static struct dns_lookup *lookup_get(struct dns_resolver *d)
{
	struct dns_lookup *l = d->free_list;

	if (l == NULL)
		return NULL;
	d->free_list = l->next;
	memset(l, 0, sizeof(*l));
	l->d = d;
	l->is_used = true;
	l->ttl_s = UINT32_MAX;
	return l;
}

static void lookup_put(struct dns_lookup *l)
{
	l->is_used = false;
	l->next = l->d->free_list;
	l->d->free_list = l;
}

/* is_cancel_leaky - set once by defctx_init(), read-only afterwards. */
static bool is_cancel_leaky;

/*
 * query_cancel - cancel one udns query. udns 0.4's dns_cancel() unlinks
 * the query but never frees it (LeakSanitizer shows the calloc from
 * dns_submit_dn), although its manual says the query is gone; older
 * udns (0.0.9) freed it. So free it only on 0.4. XXX re-check when
 * Debian ships another udns.
 */
static void query_cancel(struct dns_ctx *ctx, struct dns_q *dq)
{
	if (dq->q == NULL)
		return;
	dns_cancel(ctx, dq->q);
	if (is_cancel_leaky)
		free(dq->q);
	dq->q = NULL;
}

/* lookup_drop_queries - cancel l's udns queries still in flight. */
static void lookup_drop_queries(struct dns_lookup *l)
{
	struct dns_ctx *ctx = l->d->ctx;

	query_cancel(ctx, &l->mxq);
	tcp_drop(&l->mxq);
	for (unsigned i = 0; i < DNS_MAX_MX_HOSTS; i++)
		for (unsigned f = 0; f < DNS_N_FAM; f++) {
			query_cancel(ctx, &l->aq[i][f]);
			tcp_drop(&l->aq[i][f]);
		}
	l->n_pending = 0;
}

static void ttl_seen(struct dns_lookup *l, unsigned ttl)
{
	if (ttl < l->ttl_s)
		l->ttl_s = ttl;
}

/* finish - l's answer is complete: cache it, shuffle, queue the callback. */
static void finish(struct dns_lookup *l)
{
	struct dns_resolver *d = l->d;
	struct dns_mx_result *res = &l->res;
	uint32_t ttl = 0;

	if (res->status == DNS_RESULT_OK) {
		ttl = l->ttl_s == UINT32_MAX ? d->max_ttl_s : l->ttl_s;
		if (ttl > d->max_ttl_s)
			ttl = d->max_ttl_s;
		/* A partial answer (a host or a family that failed for now)
		 * is kept no longer than a negative one. */
		if (l->has_tempfail && ttl > d->negative_ttl_s)
			ttl = d->negative_ttl_s;
	} else if (res->status != DNS_RESULT_TEMPFAIL) {
		ttl = d->negative_ttl_s;
	} else {
		d->stats.n_tempfail++;
	}
	res->ttl_s = ttl;
	dns_cache_put(d->cache, l->kind, l->name, res, ttl, d->r->now_ms);
	for (struct dns_lookup *f = l->followers; f != NULL; f = f->next_follower) {
		f->res = *res;
		f->leader = NULL;
		dns_mx_shuffle(f->res.hosts, f->res.n_hosts, &d->rng);
		ready_push(f);
	}
	l->followers = NULL;
	dns_mx_shuffle(res->hosts, res->n_hosts, &d->rng);
	ready_push(l);
}

/* hosts_done - every address query ended: fill the hosts, decide. */
static void hosts_done(struct dns_lookup *l)
{
	struct dns_mx_result *res = &l->res;
	bool any_ok = false, any_temp = false;

	for (size_t i = 0; i < res->n_hosts; i++) {
		struct dns_mx_host *h = &res->hosts[i];
		unsigned n4 = l->n_tmp[i][DNS_FAM_V4], n6 = l->n_tmp[i][DNS_FAM_V6];
		unsigned half = DNS_MAX_HOST_ADDRS / 2;
		/* Half the room for each family; one with fewer leaves the
		 * rest to the other. */
		unsigned limit4 = n6 < half ? DNS_MAX_HOST_ADDRS - n6 : half;
		unsigned take4 = n4 < limit4 ? n4 : limit4;
		unsigned take6 = n6 < DNS_MAX_HOST_ADDRS - take4 ? n6 : DNS_MAX_HOST_ADDRS - take4;

		h->n_addrs = 0;
		for (unsigned k = 0; k < take4; k++)
			h->addrs[h->n_addrs++] = l->tmp[i][DNS_FAM_V4][k];
		for (unsigned k = 0; k < take6; k++)
			h->addrs[h->n_addrs++] = l->tmp[i][DNS_FAM_V6][k];
		if (h->n_addrs > 0)
			h->status = DNS_RESULT_OK;
		else if (l->fam_tempfail[i][DNS_FAM_V4] || l->fam_tempfail[i][DNS_FAM_V6])
			h->status = DNS_RESULT_TEMPFAIL;
		else
			h->status = DNS_RESULT_NOHOST;
		any_ok |= h->status == DNS_RESULT_OK;
		any_temp |= h->status == DNS_RESULT_TEMPFAIL;
	}
	res->status = any_ok ? DNS_RESULT_OK : any_temp ? DNS_RESULT_TEMPFAIL : DNS_RESULT_NOHOST;
	finish(l);
}

/* addr_done - one A or AAAA query of host dq->host ended. */
static void addr_done(struct dns_q *dq, int status)
{
	struct dns_lookup *l = dq->l;

	dq->q = NULL;
	if (status != DNS_E_NOERROR && status != DNS_E_NODATA && status != DNS_E_NXDOMAIN) {
		l->fam_tempfail[dq->host][dq->fam] = true;
		l->has_tempfail = true;
	}
	if (--l->n_pending == 0)
		hosts_done(l);
}

/* a4_done - the A query dq ended: status, and rr (ours to free) when ok. */
static void a4_done(struct dns_q *dq, struct dns_rr_a4 *rr, int status)
{
	struct dns_lookup *l = dq->l;

	if (rr) {
		for (int k = 0; k < rr->dnsa4_nrr && l->n_tmp[dq->host][DNS_FAM_V4] < DNS_MAX_HOST_ADDRS; k++) {
			struct dns_addr *a = &l->tmp[dq->host][DNS_FAM_V4][l->n_tmp[dq->host][DNS_FAM_V4]++];

			memset(a, 0, sizeof(*a));
			a->family = AF_INET;
			a->u.v4 = rr->dnsa4_addr[k];
		}
		ttl_seen(l, rr->dnsa4_ttl);
		free(rr);
	}
	addr_done(dq, status);
}

/* a6_done - the AAAA query dq ended, as a4_done. */
static void a6_done(struct dns_q *dq, struct dns_rr_a6 *rr, int status)
{
	struct dns_lookup *l = dq->l;

	if (rr) {
		for (int k = 0; k < rr->dnsa6_nrr && l->n_tmp[dq->host][DNS_FAM_V6] < DNS_MAX_HOST_ADDRS; k++) {
			struct dns_addr *a = &l->tmp[dq->host][DNS_FAM_V6][l->n_tmp[dq->host][DNS_FAM_V6]++];

			memset(a, 0, sizeof(*a));
			a->family = AF_INET6;
			a->u.v6 = rr->dnsa6_addr[k];
		}
		ttl_seen(l, rr->dnsa6_ttl);
		free(rr);
	}
	addr_done(dq, status);
}

/*
 * udns_ended - udns is done with dq's UDP query; whether its answer
 * counts. A failure (a truncated reply among them) does not when a TCP
 * retry is under way; an answer does, and the retry is dropped.
 */
static bool udns_ended(struct dns_q *dq, bool is_answer)
{
	dq->q = NULL;
	if (dq->tcp == NULL)
		return true;
	if (!is_answer)
		return false;
	tcp_drop(dq);
	return true;
}

static void on_a4(struct dns_ctx *ctx, struct dns_rr_a4 *rr, void *data)
{
	struct dns_q *dq = data;

	if (udns_ended(dq, rr != NULL))
		a4_done(dq, rr, rr ? DNS_E_NOERROR : dns_status(ctx));
}

static void on_a6(struct dns_ctx *ctx, struct dns_rr_a6 *rr, void *data)
{
	struct dns_q *dq = data;

	if (udns_ended(dq, rr != NULL))
		a6_done(dq, rr, rr ? DNS_E_NOERROR : dns_status(ctx));
}

/* submit_host - A and AAAA queries for host i of l. A query udns refuses
 * to start (no memory) counts as a temporary failure of that family. */
static void submit_host(struct dns_lookup *l, unsigned i)
{
	struct dns_resolver *d = l->d;
	const char *name = l->res.hosts[i].name;

	for (unsigned f = 0; f < DNS_N_FAM; f++) {
		struct dns_q *dq = &l->aq[i][f];

		dq->l = l;
		dq->host = i;
		dq->fam = f;
		dq->q = f == DNS_FAM_V4 ? dns_submit_a4(d->ctx, name, DNS_NOSRCH, on_a4, dq) :
			dns_submit_a6(d->ctx, name, DNS_NOSRCH, on_a6, dq);
		if (dq->q == NULL) {
			l->fam_tempfail[i][f] = true;
			l->has_tempfail = true;
			continue;
		}
		l->n_pending++;
		d->stats.n_queries++;
	}
}

/* resolve_hosts - start the address queries of every host of l. */
static void resolve_hosts(struct dns_lookup *l)
{
	for (unsigned i = 0; i < l->res.n_hosts; i++)
		submit_host(l, i);
	if (l->n_pending == 0)
		hosts_done(l);
}

/* implicit_host - make the queried name l's only host (RFC 5321 5.1). */
static void implicit_host(struct dns_lookup *l)
{
	memset(&l->res, 0, sizeof(l->res));
	l->res.is_implicit = true;
	l->res.n_hosts = 1;
	l->res.hosts[0].status = DNS_RESULT_TEMPFAIL;
	memcpy(l->res.hosts[0].name, l->name, strlen(l->name) + 1);
}

/* mx_done - the MX query dq ended: status, and rr (ours to free) when ok. */
static void mx_done(struct dns_q *dq, struct dns_rr_mx *rr, int status)
{
	struct dns_lookup *l = dq->l;
	struct dns_mx_record recs[DNS_MAX_MX_RECORDS];
	size_t n = 0;

	dq->q = NULL;
	l->n_pending--;
	if (rr) {
		for (int k = 0; k < rr->dnsmx_nrr && n < DNS_MAX_MX_RECORDS; k++) {
			recs[n].preference = (unsigned)rr->dnsmx_mx[k].priority;
			recs[n++].name = rr->dnsmx_mx[k].name;
		}
		dns_mx_build(&l->res, recs, n);
		dns_mx_drop_self(&l->res, l->d->myhostname);
		ttl_seen(l, rr->dnsmx_ttl);
		free(rr);
		if (l->res.status != DNS_RESULT_OK)
			finish(l);
		else
			resolve_hosts(l);
		return;
	}
	switch (status) {
	case DNS_E_NODATA:
		implicit_host(l);
		resolve_hosts(l);
		return;
	case DNS_E_NXDOMAIN:
		l->res.status = DNS_RESULT_NXDOMAIN;
		break;
	default:
		l->res.status = DNS_RESULT_TEMPFAIL;
		break;
	}
	finish(l);
}

static void on_mx(struct dns_ctx *ctx, struct dns_rr_mx *rr, void *data)
{
	struct dns_q *dq = data;

	if (udns_ended(dq, rr != NULL))
		mx_done(dq, rr, rr ? DNS_E_NOERROR : dns_status(ctx));
}

/* q_done - dq ended (the TCP retry's way in). */
static void q_done(struct dns_q *dq, void *rr, int status)
{
	if (dq == &dq->l->mxq)
		mx_done(dq, rr, status);
	else if (dq->fam == DNS_FAM_V4)
		a4_done(dq, rr, status);
	else
		a6_done(dq, rr, status);
}

/* answer_literal - l is the IP literal lit: one host, no query. */
static void answer_literal(struct dns_lookup *l, const struct dns_addr *lit)
{
	struct dns_mx_host *h = &l->res.hosts[0];

	l->d->stats.n_literals++;
	l->res.is_literal = true;
	l->res.n_hosts = 1;
	h->status = DNS_RESULT_OK;
	h->addrs[0] = *lit;
	h->n_addrs = 1;
	inet_ntop(lit->family, &lit->u, h->name, sizeof(h->name));
	ready_push(l);
}

/* answer_cached - answer l from the cache if it can; whether it did. */
static bool answer_cached(struct dns_lookup *l)
{
	struct dns_resolver *d = l->d;
	uint32_t left = 0;
	const struct dns_mx_result *hit = dns_cache_get(d->cache, l->kind, l->name,
							d->r->now_ms, &left);

	if (hit == NULL)
		return false;
	d->stats.n_cache_hits++;
	l->res = *hit;
	l->res.is_cached = true;
	l->res.ttl_s = left;
	dns_mx_shuffle(l->res.hosts, l->res.n_hosts, &d->rng);
	ready_push(l);
	return true;
}

/*
 * join_in_flight - make l follow a lookup of the same key whose queries
 * are in flight, so that a burst of mail to one domain asks once; whether
 * it found one. The scan is linear: max_lookups is small, and it runs only
 * on a cache miss.
 */
static bool join_in_flight(struct dns_lookup *l)
{
	struct dns_resolver *d = l->d;

	for (unsigned i = 0; i < d->max_lookups; i++) {
		struct dns_lookup *o = &d->pool[i];

		if (o == l || !o->is_used || o->is_ready || o->leader != NULL ||
		    o->n_pending == 0 || o->kind != l->kind || strcmp(o->name, l->name) != 0)
			continue;
		l->leader = o;
		l->next_follower = o->followers;
		o->followers = l;
		d->stats.n_joined++;
		return true;
	}
	return false;
}

/* ask - send l's first queries: MX, or A+AAAA for a host lookup. */
static void ask(struct dns_lookup *l)
{
	struct dns_resolver *d = l->d;

	d->is_started = true;
	arm_poll(d);
	if (l->kind == DNS_CACHE_HOST) {
		implicit_host(l);
		resolve_hosts(l);
		return;
	}
	l->mxq.l = l;
	l->mxq.q = dns_submit_mx(d->ctx, l->name, DNS_NOSRCH, on_mx, &l->mxq);
	if (l->mxq.q == NULL) {
		l->res.status = DNS_RESULT_TEMPFAIL;
		finish(l);
		return;
	}
	l->n_pending++;
	d->stats.n_queries++;
}

/*
 * lookup_start - the common part of dns_mx_lookup and dns_host_lookup:
 * check the name, take a pool slot, then literal, cache, or queries.
 */
static int lookup_start(struct dns_resolver *d, enum dns_cache_kind kind,
			const char *in, size_t len, dns_lookup_fn *cb, void *arg,
			struct dns_lookup **out)
{
	struct dns_lookup *l;
	struct dns_addr lit;
	char name[DNS_NAME_BYTES];
	bool is_literal;

	if (d->is_stopping)
		return -ESHUTDOWN;
	is_literal = dns_addr_literal(in, len, kind == DNS_CACHE_HOST, &lit);
	if (!is_literal) {
		/* relayhost = [host]: the brackets only mean "no MX". */
		if (kind == DNS_CACHE_HOST && len >= 2 && in[0] == '[' && in[len - 1] == ']') {
			in++;
			len -= 2;
		}
		if (dns_name_normalize(in, len, name) < 0)
			return -EINVAL;
	}
	l = lookup_get(d);
	if (l == NULL)
		return -EAGAIN;
	l->cb = cb;
	l->arg = arg;
	l->kind = kind;
	d->stats.n_lookups++;
	if (out)
		*out = l;
	if (is_literal) {
		answer_literal(l, &lit);
		return 0;
	}
	memcpy(l->name, name, strlen(name) + 1);
	if (!answer_cached(l) && !join_in_flight(l))
		ask(l);
	return 0;
}

int dns_mx_lookup(struct dns_resolver *d, const char *domain, size_t len,
		  dns_lookup_fn *cb, void *arg, struct dns_lookup **lookup_out)
{
	return lookup_start(d, DNS_CACHE_MX, domain, len, cb, arg, lookup_out);
}

int dns_host_lookup(struct dns_resolver *d, const char *name, size_t len,
		    dns_lookup_fn *cb, void *arg, struct dns_lookup **lookup_out)
{
	return lookup_start(d, DNS_CACHE_HOST, name, len, cb, arg, lookup_out);
}

void dns_lookup_cancel(struct dns_resolver *d, struct dns_lookup *l)
{
	struct dns_lookup **p;

	if (l->d != d || !l->is_used || l->is_calling || l->is_canceled)
		rm_panic("dns: cancel of a lookup that is not in flight");
	if (l->leader) {
		for (p = &l->leader->followers; *p != l; p = &(*p)->next_follower)
			;
		*p = l->next_follower;
		lookup_put(l);
		return;
	}
	if (l->is_ready || l->followers) {
		/* the drain frees it; a leader goes on asking for its
		 * followers */
		l->is_canceled = true;
		return;
	}
	lookup_drop_queries(l);
	lookup_put(l);
}

/* --- completions ---------------------------------------------------------- */

static void on_ready(struct dns_resolver *d)
{
	struct dns_lookup *l = d->ready_head, *next;

	/* Detach the list first: callbacks may queue new answers, which go
	 * on a fresh list with a fresh NOP. */
	d->ready_head = d->ready_tail = NULL;
	d->is_ready_armed = false;
	for (; l != NULL; l = next) {
		next = l->next;
		l->is_ready = false;
		if (!l->is_canceled && !d->is_stopping) {
			l->is_calling = true;
			l->cb(l->arg, &l->res);
		}
		lookup_put(l);
	}
}

static void dns_on_cqe(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	struct dns_anchor *a = obj;
	struct dns_resolver *d = a->d;
	int w;

	(void)r;
	switch (a->kind) {
	case DNS_ANCHOR_POLL:
		d->is_poll_armed = false;
		if (d->is_stopping || cqe->res == -ECANCELED)
			return;
		if (cqe->res < 0) {
			/* Not re-armed (a poll error would repeat at once);
			 * the next lookup arms it again, timeouts end the
			 * lookups in flight meanwhile. */
			log_warn("r%u dns: poll: %s", r->id, strerror(-cqe->res));
			return;
		}
		tl_ioevent_d = d;
		dns_ioevent(d->ctx, time(NULL));
		tl_ioevent_d = NULL;
		if (d->has_tcp_new)
			tcp_start_new(d);
		arm_poll(d);
		return;
	case DNS_ANCHOR_TIMER:
		d->is_timer_armed = false;
		if (d->is_stopping)
			return;
		w = dns_timeouts(d->ctx, -1, time(NULL));
		if (w >= 0)
			timer_want(d, (int64_t)w * 1000);
		return;
	case DNS_ANCHOR_READY:
		on_ready(d);
		return;
	case DNS_ANCHOR_TCP:
		tcp_on_cqe((struct dns_tcp *)a, cqe->res);
		return;
	default:
		rm_panic("dns: completion for unknown anchor kind %u", a->kind);
	}
}

/* --- set-up and tear-down -------------------------------------------------- */

static pthread_once_t defctx_once = PTHREAD_ONCE_INIT;

/* defctx_init - udns's dns_new() copies its default context, which must
 * be initialised; dns_reset() does so without reading system files. */
static void defctx_init(void)
{
	dns_reset(NULL);
	is_cancel_leaky = strcmp(dns_version(), "0.4") == 0;
}

void dns_opts_from_conf(struct dns_opts *o, const struct conf *c, unsigned op)
{
	memset(o, 0, sizeof(*o));
	o->op = op;
	o->servers = c->dns_servers;
	o->n_servers = c->n_dns_servers;
	o->resolv_conf = c->resolv_conf[0] ? c->resolv_conf : NULL;
	o->myhostname = c->myhostname;
}

/* resolv_option - apply one "options" token we understand. */
static void resolv_option(struct dns_ctx *ctx, const char *tok)
{
	if (strncmp(tok, "timeout:", 8) == 0 && atoi(tok + 8) > 0)
		dns_set_opt(ctx, DNS_OPT_TIMEOUT, atoi(tok + 8));
	else if (strncmp(tok, "attempts:", 9) == 0 && atoi(tok + 9) > 0)
		dns_set_opt(ctx, DNS_OPT_NTRIES, atoi(tok + 9));
}

/*
 * read_resolv_conf - "nameserver ADDR" (at most DNS_MAXSERV, udns's limit)
 * and "options timeout:N attempts:N" from path; no nameserver means
 * 127.0.0.1 (resolv.conf(5)). Returns 0 or -errno (err filled).
 */
static int read_resolv_conf(struct dns_ctx *ctx, const char *path, struct rm_err *err)
{
	char line[DNS_RESOLV_LINE_BYTES];
	FILE *f = fopen(path, "re");
	int n_servers = 0;

	if (f == NULL)
		return rm_err_set(err, -errno, "dns: open %s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		char *save = NULL;
		char *key = strtok_r(line, " \t\r\n", &save);
		char *val;

		if (key == NULL || key[0] == '#' || key[0] == ';')
			continue;
		if (strcmp(key, "nameserver") == 0) {
			val = strtok_r(NULL, " \t\r\n", &save);
			if (val && n_servers < DNS_MAXSERV && dns_add_serv(ctx, val) > 0)
				n_servers++;
		} else if (strcmp(key, "options") == 0) {
			while ((val = strtok_r(NULL, " \t\r\n", &save)) != NULL)
				resolv_option(ctx, val);
		}
	}
	fclose(f);
	if (n_servers == 0 && dns_add_serv(ctx, "127.0.0.1") < 0)
		return rm_err_set(err, -EINVAL, "dns: %s: no nameserver, and 127.0.0.1 refused", path);
	return 0;
}

/* setup_ctx - servers, options and the socket of d's udns context. */
static int setup_ctx(struct dns_resolver *d, const struct dns_opts *o, struct rm_err *err)
{
	int rc;

	d->ctx = dns_new(NULL);
	if (d->ctx == NULL)
		return rm_err_set(err, -ENOMEM, "dns: dns_new: out of memory");
	dns_add_serv(d->ctx, NULL);
	dns_add_srch(d->ctx, NULL);
	if (o->n_servers > 0) {
		if (o->n_servers > CONF_MAX_DNS_SERVERS || o->n_servers > DNS_MAXSERV)
			return rm_err_set(err, -EINVAL, "dns: %zu servers, udns takes at most %d",
					  o->n_servers, DNS_MAXSERV);
		for (size_t i = 0; i < o->n_servers; i++)
			if (dns_add_serv_s(d->ctx, (const struct sockaddr *)&o->servers[i].addr) < 0)
				return rm_err_set(err, -EINVAL, "dns: dns_add_serv_s: server %zu refused", i);
	} else {
		rc = read_resolv_conf(d->ctx, o->resolv_conf ? o->resolv_conf : "/etc/resolv.conf", err);
		if (rc < 0)
			return rc;
	}
	if (o->timeout_s)
		dns_set_opt(d->ctx, DNS_OPT_TIMEOUT, (int)o->timeout_s);
	if (o->n_tries)
		dns_set_opt(d->ctx, DNS_OPT_NTRIES, (int)o->n_tries);
	rc = dns_set_opt(d->ctx, DNS_OPT_TIMEOUT, -1);	/* -1: only read it */
	d->tcp_timeout_s = rc > 0 ? (unsigned)rc : 4;
	dns_set_dbgfn(d->ctx, on_dbg);
	d->fd = dns_open(d->ctx);
	if (d->fd < 0) {
		rc = errno ? -errno : -EINVAL;
		return rm_err_set(err, rc, "dns: dns_open: %s", strerror(-rc));
	}
	/* udns makes the socket non-blocking; a forked child must not keep it. */
	if (fcntl(d->fd, F_SETFD, FD_CLOEXEC) < 0)
		return rm_err_set(err, -errno, "dns: fcntl FD_CLOEXEC: %s", strerror(errno));
	dns_set_tmcbck(d->ctx, on_utm, d);
	return 0;
}

static uint64_t seed_rng(uint64_t seed)
{
	if (seed == 0 && getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
		seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	return seed ? seed : 0x9e3779b97f4a7c15ull;
}

struct dns_resolver *dns_resolver_new(struct reactor *r, const struct dns_opts *o,
				      struct rm_err *err)
{
	struct dns_resolver *d;
	unsigned n_cache = o->cache_entries ? o->cache_entries : DNS_DEFAULT_CACHE_ENTRIES;

	if (o->op == 0 || o->op > REACTOR_OP_USER_MAX) {
		rm_err_set(err, -EINVAL, "dns: op %u out of range", o->op);
		return NULL;
	}
	pthread_once(&defctx_once, defctx_init);
	d = aligned_alloc(_Alignof(struct dns_resolver), sizeof(*d));
	if (d == NULL) {
		rm_err_set(err, -ENOMEM, "dns: out of memory");
		return NULL;
	}
	memset(d, 0, sizeof(*d));
	d->fd = -1;
	d->r = r;
	d->op = o->op;
	d->poll_anchor = (struct dns_anchor){ d, DNS_ANCHOR_POLL };
	d->timer_anchor = (struct dns_anchor){ d, DNS_ANCHOR_TIMER };
	d->ready_anchor = (struct dns_anchor){ d, DNS_ANCHOR_READY };
	d->max_lookups = o->max_lookups ? o->max_lookups : DNS_DEFAULT_MAX_LOOKUPS;
	d->negative_ttl_s = o->negative_ttl_s ? o->negative_ttl_s : DNS_DEFAULT_NEGATIVE_TTL_S;
	d->max_ttl_s = o->max_ttl_s ? o->max_ttl_s : DNS_DEFAULT_MAX_TTL_S;
	d->rng = seed_rng(o->seed);
	if (o->myhostname && o->myhostname[0] &&
	    dns_name_normalize(o->myhostname, strlen(o->myhostname), d->myhostname) < 0) {
		rm_err_set(err, -EINVAL, "dns: myhostname \"%.*s\" is not a host name",
			   DNS_NAME_BYTES, o->myhostname);
		free(d);
		return NULL;
	}
	d->cache = dns_cache_new(n_cache);
	d->pool = calloc(d->max_lookups, sizeof(*d->pool));
	if (d->cache == NULL || d->pool == NULL) {
		rm_err_set(err, -ENOMEM, "dns: cache of %u, pool of %u: out of memory",
			   n_cache, d->max_lookups);
		dns_resolver_free(d);
		return NULL;
	}
	for (unsigned i = d->max_lookups; i-- > 0;) {
		d->pool[i].d = d;
		d->pool[i].next = d->free_list;
		d->free_list = &d->pool[i];
	}
	if (setup_ctx(d, o, err) < 0) {
		dns_resolver_free(d);
		return NULL;
	}
	reactor_on(r, o->op, dns_on_cqe);
	return d;
}

void dns_resolver_stop(struct dns_resolver *d)
{
	struct io_uring_sqe *sqe;

	if (d->is_stopping)
		return;
	d->is_stopping = true;
	for (unsigned i = 0; i < d->max_lookups; i++) {
		struct dns_lookup *l = &d->pool[i];

		if (!l->is_used)
			continue;
		lookup_drop_queries(l);
		if (l->is_ready || l->is_calling)
			l->is_canceled = true;  /* the drain frees it */
		else
			lookup_put(l);
	}
	if (d->is_poll_armed) {
		sqe = reactor_sqe(d->r);
		io_uring_prep_cancel64(sqe, reactor_tag(&d->poll_anchor, d->op), 0);
		reactor_sqe_tag(sqe, &d->poll_anchor, REACTOR_OP_IGNORE);
	}
	if (d->is_timer_armed) {
		sqe = reactor_sqe(d->r);
		io_uring_prep_cancel64(sqe, reactor_tag(&d->timer_anchor, d->op), 0);
		reactor_sqe_tag(sqe, &d->timer_anchor, REACTOR_OP_IGNORE);
	}
	/* retries of dropped lookups: those in flight end with their
	 * completion (cancelled above), the others go now */
	for (struct dns_tcp *t = d->tcp_list, *next; t != NULL; t = next) {
		next = t->next;
		if (!t->is_op_armed)
			tcp_free(t);
	}
}

bool dns_resolver_is_idle(const struct dns_resolver *d)
{
	return !d->is_poll_armed && !d->is_timer_armed && !d->is_ready_armed &&
	       d->tcp_list == NULL;
}

void dns_resolver_free(struct dns_resolver *d)
{
	if (d == NULL)
		return;
	if (d->ctx) {
		dns_set_tmcbck(d->ctx, NULL, NULL);
		dns_free(d->ctx);       /* drops its queries, closes the socket */
	}
	while (d->tcp_list != NULL)
		tcp_free(d->tcp_list);
	dns_cache_free(d->cache);
	free(d->pool);
	free(d);
}

struct dns_stats dns_resolver_stats(const struct dns_resolver *d)
{
	return d->stats;
}
