/*
 * dns.h - asynchronous mail-exchanger and host resolution for delivery:
 * udns on the reactor's ring, RFC 5321 5.1 ordering, RFC 7505 null MX, a
 * bounded TTL cache.
 *
 * Design. One resolver per reactor (dns_resolver_new), never shared: it
 * owns one udns context and its UDP socket. The socket is watched with a
 * single-shot IORING_OP_POLL_ADD (re-armed after every dns_ioevent), udns's
 * retransmit timer is one IORING_OP_TIMEOUT (moved earlier with a timeout
 * update when udns asks for it), and answers are handed to the caller's
 * callback from a completion of the resolver's own op: a callback never
 * runs inside a dns_* call, not even for a cache hit or an IP literal, so
 * the caller never sees re-entrance. No call here blocks, except the
 * one-time read of resolv_conf in dns_resolver_new.
 *
 * A lookup resolves a domain to the hosts to try, in order: its MX RRset
 * sorted by preference, equal preferences shuffled per lookup (RFC 5321
 * 5.1), each host's A and AAAA queried in parallel; with no MX RRset
 * (NODATA) the domain itself is the one host ("implicit MX"). The result
 * says, per host, whether it has addresses, and overall whether delivery
 * can proceed, must wait (temporary) or must bounce (permanent). Results
 * are cached by TTL (the smallest TTL of every RRset used, capped); the
 * cache is LRU with a fixed number of entries. Temporary failures are not
 * cached. A lookup that misses the cache while another lookup of the same
 * name is asking joins it instead of asking again (a burst of mail to one
 * domain costs one set of queries).
 *
 * Names. udns owns the plain dns_* names (dns_init, dns_new, dns_free,
 * struct dns_ctx, struct dns_mx, enum dns_status, DNS_E_*, DNS_R_*...), so
 * this module's symbols are all dns_resolver_*, dns_mx_*, dns_host_*,
 * dns_lookup_*, dns_cache_*, dns_result_*, dns_addr_*, dns_name_* and
 * constants DNS_MAX_*, DNS_DEFAULT_*, DNS_RESULT_*, DNS_CACHE_*. This header
 * does not include udns.h.
 */
#ifndef RINGMTA_DNS_H
#define RINGMTA_DNS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "ringmta/conf.h"
#include "ringmta/reactor.h"
#include "ringmta/util.h"

/* DNS_MAX_MX_HOSTS - MX hosts kept per domain, lowest preferences first.
 * RFC 5321 5.1 lets a client cap how many it tries; Postfix's
 * smtp_mx_address_limit is 5 addresses, KumoMTA tries every host. 10
 * hosts of up to DNS_MAX_HOST_ADDRS addresses each is more than any
 * sender gets through within one attempt. */
#define DNS_MAX_MX_HOSTS 10
/* DNS_MAX_HOST_ADDRS - addresses kept per host: up to half of them of each
 * family when both exist, so one family cannot crowd out the other. */
#define DNS_MAX_HOST_ADDRS 4
/* DNS_NAME_BYTES - a host or domain name and its NUL (RFC 1035 2.3.4:
 * 253 octets in text form without the trailing dot). */
#define DNS_NAME_BYTES 254
/* DNS_DEFAULT_CACHE_ENTRIES - cached results per resolver; one entry is
 * ~4 KiB, so 512 entries cost ~2 MiB per reactor. */
#define DNS_DEFAULT_CACHE_ENTRIES 512
/* DNS_DEFAULT_MAX_LOOKUPS - lookups in flight per resolver; each holds up
 * to 1 + 2 * DNS_MAX_MX_HOSTS udns queries. */
#define DNS_DEFAULT_MAX_LOOKUPS 256
/* DNS_DEFAULT_TIMEOUT_S, DNS_DEFAULT_N_TRIES - resolv.conf(5)'s defaults
 * (RES_TIMEOUT 5 s in glibc; udns's own are 4 s and 3 tries). */
#define DNS_DEFAULT_TIMEOUT_S 4
#define DNS_DEFAULT_N_TRIES 3
/* DNS_DEFAULT_NEGATIVE_TTL_S - how long NXDOMAIN, null MX and "no host"
 * answers are cached: udns does not return the SOA minimum (RFC 2308),
 * so a fixed minute stands in for it. */
#define DNS_DEFAULT_NEGATIVE_TTL_S 60
/* DNS_DEFAULT_MAX_TTL_S - cap on any cached TTL, so a changed MX takes
 * effect within the hour whatever the zone says. */
#define DNS_DEFAULT_MAX_TTL_S 3600

/*
 * enum dns_result - the outcome of a lookup, or of one host in it.
 * Permanent results mean the caller bounces; the enhanced status code
 * each maps to is given (RFC 3463, RFC 7505).
 */
enum dns_result {
	DNS_RESULT_OK = 0,      /* at least one host has an address */
	DNS_RESULT_TEMPFAIL,    /* SERVFAIL, timeout, garbled answer, no memory:
				 * try again later (4.4.3) */
	DNS_RESULT_NXDOMAIN,    /* permanent: the domain does not exist (5.1.2) */
	DNS_RESULT_NULL_MX,     /* permanent: RFC 7505 null MX, the domain
				 * accepts no mail (5.1.10) */
	DNS_RESULT_NOHOST,      /* permanent: no host of the domain has an
				 * address (5.4.4) */
	DNS_RESULT_LOOP,        /* permanent: we are the domain's best MX
				 * (RFC 5321 5.1), delivering would loop
				 * back to ourselves (5.4.6) */
};

/* struct dns_addr - one IPv4 or IPv6 address (no port). */
struct dns_addr {
	int family;             /* AF_INET or AF_INET6 */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} u;
};

/* struct dns_mx_host - one host to try. */
struct dns_mx_host {
	unsigned preference;    /* MX preference; 0 for an implicit MX */
	enum dns_result status; /* OK (n_addrs >= 1), TEMPFAIL or NOHOST */
	size_t n_addrs;
	struct dns_addr addrs[DNS_MAX_HOST_ADDRS]; /* IPv4 first, then IPv6 */
	char name[DNS_NAME_BYTES]; /* lower case, no trailing dot; the
				    * address text for a literal */
};

/*
 * struct dns_mx_result - what a lookup produced. hosts[0..n_hosts) are in
 * the order to try (RFC 5321 5.1): ascending preference, equal
 * preferences in random order, drawn again for every lookup including
 * cache hits. With status OK some hosts may still be TEMPFAIL or NOHOST:
 * the caller skips them, and if every reachable host fails it defers
 * when any host was TEMPFAIL. Otherwise n_hosts may be 0.
 */
struct dns_mx_result {
	enum dns_result status;
	bool is_implicit;       /* no MX RRset: the domain is its own host */
	bool is_literal;        /* an IP literal: answered without a query */
	bool is_cached;         /* answered from the cache */
	uint32_t ttl_s;         /* seconds the answer stays valid: left in
				 * the cache for a hit, negative_ttl_s for
				 * permanent failures, 0 for TEMPFAIL and
				 * literals */
	size_t n_hosts;
	struct dns_mx_host hosts[DNS_MAX_MX_HOSTS];
};

/*
 * dns_lookup_fn - a lookup finished. res is borrowed: valid until the
 * callback returns. arg is the caller's, as passed to the lookup. The
 * callback may start new lookups, cancel other ones and stop the
 * resolver; it runs from the resolver's completion handler, never inside
 * a dns_* call.
 */
typedef void dns_lookup_fn(void *arg, const struct dns_mx_result *res);

/* struct dns_lookup - a lookup in flight (opaque; a cancel handle). */
struct dns_lookup;
/* struct dns_resolver - one reactor's resolver (opaque). */
struct dns_resolver;

/*
 * struct dns_opts - dns_resolver_new()'s settings; 0/NULL means the
 * default.
 */
struct dns_opts {
	unsigned op;            /* required: the reactor op (1..
				 * REACTOR_OP_USER_MAX) the resolver claims */
	const struct conf_addr *servers; /* borrowed for the call: when
				 * n_servers > 0 these servers (ports
				 * honoured) and no resolv_conf */
	size_t n_servers;       /* at most 6 (udns's DNS_MAXSERV; conf
				 * allows CONF_MAX_DNS_SERVERS = 8, more
				 * than 6 is -EINVAL here) */
	const char *resolv_conf; /* "nameserver" and "options timeout:
				 * attempts:" lines; NULL: /etc/resolv.conf */
	unsigned timeout_s;     /* wait for the first try; udns doubles it
				 * for each further try, so dead servers end
				 * a lookup after timeout_s * (2^n_tries - 1)
				 * s (defaults: 28 s; measured with
				 * dns_probe: -t 1 -n 3 gives up at 7.0 s) */
	unsigned n_tries;       /* tries (each to every server in turn) */
	unsigned cache_entries; /* DNS_DEFAULT_CACHE_ENTRIES */
	unsigned max_lookups;   /* DNS_DEFAULT_MAX_LOOKUPS */
	unsigned negative_ttl_s;
	unsigned max_ttl_s;
	uint64_t seed;          /* equal-preference shuffle; 0: getrandom() */
	const char *myhostname; /* copied; NULL/"": no MX-to-self check */
};

/* struct dns_stats - counters since dns_resolver_new(). */
struct dns_stats {
	uint64_t n_lookups;     /* accepted by dns_mx_lookup/dns_host_lookup */
	uint64_t n_cache_hits;
	uint64_t n_literals;
	uint64_t n_joined;      /* lookups that shared another's queries */
	uint64_t n_queries;     /* udns queries submitted (MX, A, AAAA) */
	uint64_t n_tempfail;    /* lookups that ended TEMPFAIL */
	uint64_t n_tcp;         /* queries asked again over TCP (a truncated UDP answer) */
	uint64_t n_bad_question; /* UDP answers refused: question not ours byte for byte */
};

/*
 * dns_opts_from_conf - fill o from c's dns_servers, resolv_conf and
 * myhostname keys; every other field 0 (default) and o->op = op.
 * o->servers and o->myhostname borrow c.
 */
void dns_opts_from_conf(struct dns_opts *o, const struct conf *c, unsigned op);

/*
 * dns_resolver_new - a resolver for reactor r: creates its udns context
 * and UDP socket, reads resolv_conf when no servers are given, allocates
 * the lookup pool and the cache, and registers o->op with reactor_on().
 * May be called before r's thread starts: nothing is submitted until the
 * first lookup, which must then come from r's thread. r is borrowed and
 * must outlive the resolver. A resolv_conf without a usable nameserver
 * line means 127.0.0.1, as resolv.conf(5) says; its options timeout: and
 * attempts: apply unless o sets them. Returns the resolver, or NULL with
 * err set: -EINVAL (op out of range, more than DNS's 6 or
 * CONF_MAX_DNS_SERVERS servers, a server udns refuses), -errno of
 * fopen(resolv_conf) (-ENOENT, -EACCES...), -ENOMEM, or -errno of the
 * socket (udns dns_open).
 */
struct dns_resolver *dns_resolver_new(struct reactor *r, const struct dns_opts *o,
				      struct rm_err *err);

/*
 * dns_resolver_stop - drop every lookup in flight (their callbacks are
 * never called) and cancel the resolver's poll and timer. Lookups started
 * afterwards fail with -ESHUTDOWN. Call from r's thread (e.g. in
 * hooks->stop); the resolver stays allocated until dns_resolver_is_idle().
 */
void dns_resolver_stop(struct dns_resolver *d);

/* dns_resolver_is_idle - no submission of d is still in the ring: after
 * dns_resolver_stop(), d may be freed (use in hooks->is_done). */
bool dns_resolver_is_idle(const struct dns_resolver *d);

/*
 * dns_resolver_free - close the socket, free everything. NULL is a no-op.
 * Only when dns_resolver_is_idle(d), or from hooks->finish / after
 * reactor_join (no completion will be dispatched any more).
 */
void dns_resolver_free(struct dns_resolver *d);

/* dns_resolver_stats - d's counters (a copy). */
struct dns_stats dns_resolver_stats(const struct dns_resolver *d);

/*
 * dns_mx_lookup - resolve the mail exchangers of domain (len bytes, not
 * NUL-terminated, a trailing dot allowed, compared case-insensitively;
 * borrowed for the call). An address literal ("[192.0.2.1]",
 * "[IPv6:2001:db8::1]", RFC 5321 4.1.3) is answered without a query.
 * cb(arg, res) is called exactly once, later, from r's loop, unless the
 * lookup is cancelled or the resolver stopped. *lookup_out (may be NULL)
 * receives a handle valid until the callback starts or the cancel.
 * Returns 0, -EINVAL (not a host name: empty, too long, a character
 * other than letters, digits, '-', '_' and '.', an empty label),
 * -EAGAIN (max_lookups in flight: try again after a callback), or
 * -ESHUTDOWN (after dns_resolver_stop).
 */
int dns_mx_lookup(struct dns_resolver *d, const char *domain, size_t len,
		  dns_lookup_fn *cb, void *arg, struct dns_lookup **lookup_out);

/*
 * dns_host_lookup - resolve one host's A and AAAA, no MX: for routes like
 * relayhost = [host] (brackets around a name are allowed and mean
 * nothing more here). name as for dns_mx_lookup, and an IP address with
 * or without brackets ("192.0.2.1", "::1", "[::1]") is a literal
 * (is_literal set, no query). Otherwise the result has one host,
 * is_implicit set, preference 0; its status is the lookup's: OK,
 * TEMPFAIL, or NOHOST (NXDOMAIN or no address). Returns as
 * dns_mx_lookup.
 */
int dns_host_lookup(struct dns_resolver *d, const char *name, size_t len,
		    dns_lookup_fn *cb, void *arg, struct dns_lookup **lookup_out);

/* dns_lookup_cancel - forget l: its callback is never called. l must be
 * a handle whose callback has not started (cancelling a lookup from its
 * own callback, or one already answered, is our bug: rm_panic). */
void dns_lookup_cancel(struct dns_resolver *d, struct dns_lookup *l);

/* dns_result_str - "ok", "tempfail", "nxdomain", "null-mx", "nohost",
 * "loop". */
const char *dns_result_str(enum dns_result res);

/* dns_result_is_permanent - whether the caller must bounce. */
bool dns_result_is_permanent(enum dns_result res);

/*
 * dns_addr_sockaddr - a's address with port into ss. Returns the length
 * to pass to connect(), or 0 when a's family is neither IPv4 nor IPv6.
 */
socklen_t dns_addr_sockaddr(const struct dns_addr *a, uint16_t port,
			    struct sockaddr_storage *ss);

/* --- pure parts, exposed for the unit tests ---------------------------- */

/*
 * dns_name_normalize - check that in[0..len) is a host name (see
 * dns_mx_lookup) and copy it to out in lower case without the trailing
 * dot, NUL-terminated. Returns its length or -EINVAL.
 */
int dns_name_normalize(const char *in, size_t len, char out[DNS_NAME_BYTES]);

/*
 * dns_addr_literal - whether in[0..len) is an IP literal: with brackets
 * "[a.b.c.d]" or "[IPv6:...]" (RFC 5321 4.1.3); when is_bare_allowed
 * also "a.b.c.d", "x::y" and "[x::y]". Fills *a when it is.
 */
bool dns_addr_literal(const char *in, size_t len, bool is_bare_allowed,
		      struct dns_addr *a);

/* struct dns_mx_record - one MX RR as parsed (name: udns text form). */
struct dns_mx_record {
	unsigned preference;
	const char *name;       /* "" or "." is the root: a null MX */
};

/*
 * dns_mx_build - turn an MX RRset into res: NULL_MX for exactly one
 * record whose exchange is the root with preference 0 (RFC 7505 3);
 * otherwise root exchanges are dropped (a null MX must stand alone, so a
 * mixed set is a broken zone: use its real hosts), invalid and duplicate
 * names are dropped, the rest sorted by preference (stable) and cut to
 * DNS_MAX_MX_HOSTS; no host left is NOHOST. Hosts get status TEMPFAIL
 * and no address until resolved. res is fully overwritten.
 */
void dns_mx_build(struct dns_mx_result *res, const struct dns_mx_record *rr, size_t n);

/*
 * dns_mx_drop_self - RFC 5321 5.1: when myhostname (lower case, no
 * trailing dot) is one of res's hosts, drop it and every host of equal or
 * greater preference; if that leaves none, res becomes DNS_RESULT_LOOP.
 * res must come from dns_mx_build with status OK; others are left alone.
 * XXX only the name is compared: an MX name that is an alias of ours, or
 * one of our addresses, is not seen (the deliver module must catch a
 * connection to itself).
 */
void dns_mx_drop_self(struct dns_mx_result *res, const char *myhostname);

/*
 * dns_mx_shuffle - randomize the order within each run of equal
 * preference in hosts[0..n) (which must already be sorted), Fisher-Yates
 * with the xorshift64 state *rng (never 0).
 */
void dns_mx_shuffle(struct dns_mx_host *hosts, size_t n, uint64_t *rng);

/*
 * dns_answer_parse - check pkt (len bytes: a DNS message read over TCP,
 * without its length prefix) against the question we sent: id qid, name
 * qdn (wire form), type qtype (DNS_T_MX, DNS_T_A or DNS_T_AAAA as udns
 * numbers them), class IN. Returns a udns status: DNS_E_NOERROR with *rr
 * udns's parse of the records (struct dns_rr_mx, dns_rr_a4 or dns_rr_a6,
 * the caller frees it); else *rr is NULL and the status DNS_E_NXDOMAIN,
 * DNS_E_NODATA, DNS_E_TEMPFAIL (another rcode), DNS_E_PROTOCOL (not a
 * reply to that question, truncated again, or garbled) or DNS_E_NOMEM.
 * Pure; the TCP retry's parser, exposed for test/fuzz/fuzz_dns_answer.c.
 */
int dns_answer_parse(const uint8_t *pkt, size_t len, unsigned qid, const uint8_t *qdn,
		     unsigned qtype, void **rr);

/* enum dns_cache_kind - what a cache key names. */
enum dns_cache_kind {
	DNS_CACHE_MX = 1,       /* dns_mx_lookup of a domain */
	DNS_CACHE_HOST = 2,     /* dns_host_lookup of a host */
};

struct dns_cache;

/* dns_cache_new - a cache of n_entries (>= 1) results; NULL: no memory. */
struct dns_cache *dns_cache_new(unsigned n_entries);
/* dns_cache_free - NULL is a no-op. */
void dns_cache_free(struct dns_cache *c);
/*
 * dns_cache_get - the unexpired entry for (kind, name) at now_ms, or NULL
 * (an expired one is dropped). Marks it most recently used. *ttl_left_s
 * (may be NULL) gets the seconds it has left, rounded up. The pointer is
 * valid until the next dns_cache_put or dns_cache_free.
 */
const struct dns_mx_result *dns_cache_get(struct dns_cache *c, enum dns_cache_kind kind,
					  const char *name, int64_t now_ms,
					  uint32_t *ttl_left_s);
/*
 * dns_cache_put - store a copy of res for (kind, name) until now_ms +
 * ttl_s seconds, replacing an entry for the same key; when full, evicts
 * the least recently used entry (expired ones are dropped when a get
 * finds them). ttl_s 0 stores nothing and drops the key's entry.
 */
void dns_cache_put(struct dns_cache *c, enum dns_cache_kind kind, const char *name,
		   const struct dns_mx_result *res, uint32_t ttl_s, int64_t now_ms);
/* dns_cache_count - entries held (expired ones not yet dropped included). */
unsigned dns_cache_count(const struct dns_cache *c);

#endif
