/*
 * dns_probe - run one reactor with a dns resolver and print what lookups
 *             return: the driver of test/integration/test_dns_*.py.
 *
 * Usage: dns_probe [-s ip:port]... [-r resolv.conf] [-t timeout_s]
 *                  [-n tries] [-S seed] [-N negative_ttl_s] [-L max_lookups]
 *                  [-m myhostname] [-T limit_s]
 *                  STEP...
 * A STEP is "mx:DOMAIN", "host:NAME", "sleep:MS", "stats", or "cancel:N"
 * (dns_lookup_cancel of the lookup started by part N of this step); parts
 * joined with '+' ("mx:a.test+mx:b.test") run at once, and the next step
 * starts when all of them have answered. One line per answer on stdout:
 *   mx DOMAIN status=ok implicit=0 literal=0 cached=0 ttl=300 queries=3
 *      hosts=10/mx1.a.test/ok/127.0.0.2|127.0.0.3,20/mx2.a.test/nohost/-
 * (one line; queries is the udns queries sent since the step began).
 * Owns: its reactor, resolver, and nothing else.
 * Must not: touch anything but the DNS servers it is given.
 * Limits: the whole run ends after -T seconds (default 30): "limit" on
 *         stderr, exit 2.
 * Errors: exit 0 when every step ran, 1 on usage or set-up errors, 2 on
 *         the time limit, 77 when io_uring is not available here.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ringmta/conf.h"
#include "ringmta/dns.h"
#include "ringmta/reactor.h"

#define PROBE_OP_DNS 1
#define PROBE_OP_SLEEP 2
#define PROBE_MAX_STEPS 512
#define PROBE_MAX_PARALLEL 32

struct probe {
	char anchor[16] __attribute__((aligned(16)));
	struct reactor r;
	struct dns_resolver *d;
	char **steps;
	int n_steps;
	int next_step;
	unsigned outstanding;
	uint64_t queries_at_step;
	int64_t limit_ms;
	int exit_code;
	struct __kernel_timespec sleep_ts;
	/* one slot per lookup of the running step, for the printed name */
	char kinds[PROBE_MAX_PARALLEL][8];
	char names[PROBE_MAX_PARALLEL][DNS_NAME_BYTES + 8];
	struct dns_lookup *handles[PROBE_MAX_PARALLEL];
};

static void run_next(struct probe *p);

static void print_result(struct probe *p, const char *kind, const char *name,
			 const struct dns_mx_result *res)
{
	char addr[INET6_ADDRSTRLEN];
	struct dns_stats st = dns_resolver_stats(p->d);

	printf("%s %s status=%s implicit=%d literal=%d cached=%d ttl=%u queries=%llu hosts=",
	       kind, name, dns_result_str(res->status), res->is_implicit, res->is_literal,
	       res->is_cached, res->ttl_s, (unsigned long long)(st.n_queries - p->queries_at_step));
	for (size_t i = 0; i < res->n_hosts; i++) {
		const struct dns_mx_host *h = &res->hosts[i];

		printf("%s%u/%s/%s/", i ? "," : "", h->preference, h->name, dns_result_str(h->status));
		if (h->n_addrs == 0)
			printf("-");
		for (size_t k = 0; k < h->n_addrs; k++) {
			inet_ntop(h->addrs[k].family, &h->addrs[k].u, addr, sizeof(addr));
			printf("%s%s", k ? "|" : "", addr);
		}
	}
	printf("\n");
	fflush(stdout);
}

/* struct probe_slot_ref - the callback's arg: the probe and a slot. */
struct probe_slot_ref {
	struct probe *p;
	unsigned slot;
};

static struct probe_slot_ref refs[PROBE_MAX_PARALLEL];

static void on_lookup(void *arg, const struct dns_mx_result *res)
{
	struct probe_slot_ref *ref = arg;
	struct probe *p = ref->p;

	p->handles[ref->slot] = NULL;
	print_result(p, p->kinds[ref->slot], p->names[ref->slot], res);
	if (--p->outstanding == 0)
		run_next(p);
}

static void on_sleep(struct reactor *r, void *obj, struct io_uring_cqe *cqe)
{
	struct probe *p = r->ctx;

	(void)obj;
	(void)cqe;
	if (--p->outstanding == 0)
		run_next(p);
}

/* start_one - one part of a step; returns 0 or -1 (message printed). */
static int start_one(struct probe *p, char *part, unsigned slot)
{
	char *colon = strchr(part, ':');
	int rc;

	if (strcmp(part, "stats") == 0) {
		struct dns_stats st = dns_resolver_stats(p->d);

		printf("stats lookups=%llu hits=%llu literals=%llu joined=%llu queries=%llu "
		       "tempfail=%llu tcp=%llu bad_question=%llu\n",
		       (unsigned long long)st.n_lookups, (unsigned long long)st.n_cache_hits,
		       (unsigned long long)st.n_literals, (unsigned long long)st.n_joined,
		       (unsigned long long)st.n_queries,
		       (unsigned long long)st.n_tempfail, (unsigned long long)st.n_tcp,
		       (unsigned long long)st.n_bad_question);
		fflush(stdout);
		return 0;
	}
	if (colon == NULL || slot >= PROBE_MAX_PARALLEL) {
		fprintf(stderr, "dns_probe: bad step part \"%s\"\n", part);
		return -1;
	}
	*colon = '\0';
	snprintf(p->kinds[slot], sizeof(p->kinds[slot]), "%s", part);
	snprintf(p->names[slot], sizeof(p->names[slot]), "%s", colon + 1);
	refs[slot] = (struct probe_slot_ref){ p, slot };
	if (strcmp(part, "sleep") == 0) {
		long ms = atol(colon + 1);
		struct io_uring_sqe *sqe = reactor_sqe(&p->r);

		p->sleep_ts.tv_sec = ms / 1000;
		p->sleep_ts.tv_nsec = (ms % 1000) * 1000000;
		io_uring_prep_timeout(sqe, &p->sleep_ts, 0, 0);
		reactor_sqe_tag(sqe, p->anchor, PROBE_OP_SLEEP);
		p->outstanding++;
		return 0;
	}
	p->handles[slot] = NULL;
	if (strcmp(part, "cancel") == 0) {
		unsigned n = (unsigned)atoi(colon + 1);

		if (n >= slot || p->handles[n] == NULL) {
			fprintf(stderr, "dns_probe: cancel:%u: no lookup in flight there\n", n);
			return -1;
		}
		dns_lookup_cancel(p->d, p->handles[n]);
		p->handles[n] = NULL;
		p->outstanding--;
		printf("cancel %s %s\n", p->kinds[n], p->names[n]);
		fflush(stdout);
		return 0;
	}
	if (strcmp(part, "mx") == 0)
		rc = dns_mx_lookup(p->d, colon + 1, strlen(colon + 1), on_lookup, &refs[slot],
				   &p->handles[slot]);
	else if (strcmp(part, "host") == 0)
		rc = dns_host_lookup(p->d, colon + 1, strlen(colon + 1), on_lookup, &refs[slot],
				     &p->handles[slot]);
	else
		rc = -ENOTSUP;
	if (rc < 0) {
		printf("%s %s error=%s\n", part, colon + 1, strerror(-rc));
		fflush(stdout);
		return 0;
	}
	p->outstanding++;
	return 0;
}

static void run_next(struct probe *p)
{
	char *save = NULL, *part;
	unsigned slot = 0;

	while (p->outstanding == 0 && !p->r.is_stopping) {
		if (p->next_step >= p->n_steps) {
			reactor_stop(&p->r);
			return;
		}
		p->queries_at_step = dns_resolver_stats(p->d).n_queries;
		slot = 0;
		for (part = strtok_r(p->steps[p->next_step++], "+", &save); part != NULL;
		     part = strtok_r(NULL, "+", &save))
			if (start_one(p, part, slot++) < 0) {
				p->exit_code = 1;
				reactor_stop(&p->r);
				return;
			}
	}
}

static int probe_start(struct reactor *r)
{
	struct probe *p = r->ctx;

	p->limit_ms += r->now_ms;
	run_next(p);
	return 0;
}

static void probe_tick(struct reactor *r)
{
	struct probe *p = r->ctx;

	if (r->now_ms > p->limit_ms && p->exit_code == 0) {
		fprintf(stderr, "dns_probe: limit reached\n");
		p->exit_code = 2;
		reactor_stop(r);
	}
}

static void probe_stop(struct reactor *r)
{
	struct probe *p = r->ctx;

	dns_resolver_stop(p->d);
}

static bool probe_is_done(struct reactor *r)
{
	struct probe *p = r->ctx;

	/* Lookups in flight at the stop never answer: only the resolver's
	 * own submissions matter. */
	return dns_resolver_is_idle(p->d);
}

/* parse_server - "a.b.c.d:port" or "[v6]:port" into a. */
static int parse_server(const char *s, struct conf_addr *a)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(s, ':');
	size_t hlen;
	long port;

	if (colon == NULL)
		return -1;
	hlen = (size_t)(colon - s);
	if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
		s++;
		hlen -= 2;
	}
	if (hlen >= sizeof(host))
		return -1;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	port = atol(colon + 1);
	if (port <= 0 || port > 65535)
		return -1;
	memset(a, 0, sizeof(*a));
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)&a->addr)->sin_addr) == 1) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&a->addr;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		a->addr_len = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&a->addr)->sin6_addr) == 1) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->addr;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		a->addr_len = sizeof(*sin6);
		return 0;
	}
	return -1;
}

static int usage(void)
{
	fprintf(stderr, "usage: dns_probe [-s ip:port]... [-r resolv.conf] [-t timeout_s] "
		"[-n tries] [-S seed] [-N negative_ttl_s] [-L max_lookups] [-m myhostname] "
		"[-T limit_s] STEP...\n");
	return 1;
}

int main(int argc, char **argv)
{
	static struct probe p;
	static const struct reactor_hooks hooks = {
		.start = probe_start, .tick = probe_tick, .stop = probe_stop,
		.is_done = probe_is_done,
	};
	struct conf_addr servers[CONF_MAX_DNS_SERVERS];
	struct dns_opts o = { .op = PROBE_OP_DNS };
	struct reactor_opts ro = { .n_bufs = 1, .buf_bytes = 4096, .tick_ms = 100,
				   .hooks = &hooks, .ctx = &p };
	struct rm_err err = { 0 };
	int opt, rc;

	p.limit_ms = 30000;
	while ((opt = getopt(argc, argv, "s:r:t:n:S:N:L:m:T:")) != -1) {
		switch (opt) {
		case 's':
			if (o.n_servers >= CONF_MAX_DNS_SERVERS || parse_server(optarg, &servers[o.n_servers]) < 0)
				return usage();
			o.n_servers++;
			break;
		case 'r': o.resolv_conf = optarg; break;
		case 't': o.timeout_s = (unsigned)atoi(optarg); break;
		case 'n': o.n_tries = (unsigned)atoi(optarg); break;
		case 'S': o.seed = strtoull(optarg, NULL, 0); break;
		case 'N': o.negative_ttl_s = (unsigned)atoi(optarg); break;
		case 'L': o.max_lookups = (unsigned)atoi(optarg); break;
		case 'm': o.myhostname = optarg; break;
		case 'T': p.limit_ms = atol(optarg) * 1000; break;
		default: return usage();
		}
	}
	if (optind >= argc || argc - optind > PROBE_MAX_STEPS)
		return usage();
	o.servers = servers;
	p.steps = argv + optind;
	p.n_steps = argc - optind;
	if (reactor_probe(&err) < 0) {
		fprintf(stderr, "dns_probe: skipped: %s\n", err.msg);
		return 77;
	}
	if (reactor_init(&p.r, &ro, &err) < 0) {
		fprintf(stderr, "dns_probe: %s\n", err.msg);
		return 1;
	}
	reactor_on(&p.r, PROBE_OP_SLEEP, on_sleep);
	p.d = dns_resolver_new(&p.r, &o, &err);
	if (p.d == NULL) {
		fprintf(stderr, "dns_probe: %s\n", err.msg);
		return 1;
	}
	if (reactor_start(&p.r, &err) < 0) {
		fprintf(stderr, "dns_probe: %s\n", err.msg);
		return 1;
	}
	rc = reactor_join(&p.r);
	dns_resolver_free(p.d);
	return rc != 0 ? 1 : p.exit_code;
}
