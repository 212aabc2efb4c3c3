/*
 * net - listening sockets, address formatting, per-IP connection counts.
 *
 * Owns: the process-wide connection table (a mutex-protected open-addressing
 *       hash of client IP -> open connections; touched once per accept and
 *       close, never on the per-byte path).
 * Must not: read or write client data.
 * Interface: include/ringmta/net.h
 * Limits: max_connections and max_connections_per_ip (conf), table sized
 *         2x max_connections so probing stays short.
 * Errors: negative errno; a full table counts as -EMFILE.
 */
#include "ringmta/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int net_listen(const struct sockaddr *sa, socklen_t len, int backlog,
	       bool dual_stack, struct rm_err *err)
{
	char a[NET_ADDR_STR_BYTES];
	int fd, one = 1, v6only = dual_stack ? 0 : 1, port;

	port = sa->sa_family == AF_INET6 ?
		ntohs(((const struct sockaddr_in6 *)sa)->sin6_port) :
		ntohs(((const struct sockaddr_in *)sa)->sin_port);
	net_addr_str(sa, a, sizeof(a));
	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return rm_err_set(err, -errno, "net: socket for %s:%d: %s", a, port,
				  strerror(errno));
	/* TCP_NODELAY here: accepted sockets inherit it, one setsockopt per
	 * listener instead of one per connection. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
	    (sa->sa_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) < 0))
		goto fail;
	if (bind(fd, sa, len) < 0 || listen(fd, backlog) < 0)
		goto fail;
	return fd;
fail:
	rm_err_set(err, -errno, "net: bind/listen %s:%d: %s", a, port, strerror(errno));
	close(fd);
	return err ? err->code : -EINVAL;
}

char *net_addr_str(const struct sockaddr *sa, char *out, size_t cap)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
	} else if (sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], out, (socklen_t)cap);
	} else if (sa->sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &s6->sin6_addr, out, (socklen_t)cap);
	} else {
		snprintf(out, cap, "unknown");
	}
	return out;
}

/* The table: key is the 16-byte IPv6 (IPv4 mapped) address. */
struct conn_slot {
	uint8_t ip[16];
	uint32_t n;     /* open connections; 0 = free slot */
	bool used;      /* ever used: keeps probe chains intact (tombstone) */
};

static pthread_mutex_t conn_mu = PTHREAD_MUTEX_INITIALIZER;
static struct conn_slot *conn_tab;
static size_t conn_cap;
static unsigned conn_total;
static size_t conn_tombs;     /* used slots with n == 0 */

int net_conn_table_init(unsigned max_conns)
{
	size_t cap = 64;

	while (cap < (size_t)max_conns * 2)
		cap *= 2;
	conn_tab = calloc(cap, sizeof(*conn_tab));
	if (conn_tab == NULL)
		return -ENOMEM;
	conn_cap = cap;
	return 0;
}

static void conn_key(const struct sockaddr *sa, uint8_t ip[16])
{
	memset(ip, 0, 16);
	if (sa->sa_family == AF_INET) {
		ip[10] = ip[11] = 0xff;
		memcpy(ip + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		memcpy(ip, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	}
}

static size_t conn_hash(const uint8_t ip[16])
{
	uint64_t h = 1469598103934665603ull;   /* FNV-1a */
	for (int i = 0; i < 16; i++)
		h = (h ^ ip[i]) * 1099511628211ull;
	return (size_t)h;
}

/* conn_find - the slot holding ip, or the first reusable one; NULL if full. */
static struct conn_slot *conn_find(const uint8_t ip[16], bool insert)
{
	struct conn_slot *free_slot = NULL;
	size_t i = conn_hash(ip) & (conn_cap - 1);

	for (size_t probes = 0; probes < conn_cap; probes++) {
		struct conn_slot *s = &conn_tab[i];
		if (s->n > 0 && memcmp(s->ip, ip, 16) == 0)
			return s;
		if (s->n == 0 && free_slot == NULL)
			free_slot = s;
		if (!s->used)
			break;
		i = (i + 1) & (conn_cap - 1);
	}
	if (!insert || free_slot == NULL)
		return NULL;
	if (free_slot->used)
		conn_tombs--;
	memcpy(free_slot->ip, ip, 16);
	free_slot->used = true;
	return free_slot;
}

/*
 * conn_rehash - drop the tombstones: without this, once every slot has
 * been used, each lookup of a new client address probes the whole table
 * under the mutex (a public MX sees that many addresses within days).
 * O(conn_cap), run when a quarter of the table is tombstones: amortised.
 */
static void conn_rehash(void)
{
	struct conn_slot *old = conn_tab, *fresh = calloc(conn_cap, sizeof(*fresh));

	if (fresh == NULL)
		return;         /* slower lookups, still correct */
	conn_tab = fresh;
	conn_tombs = 0;
	for (size_t i = 0; i < conn_cap; i++) {
		if (old[i].n > 0)
			conn_find(old[i].ip, true)->n = old[i].n;
	}
	free(old);
}

int net_conn_acquire(const struct sockaddr *sa, unsigned max_total,
		     unsigned max_per_ip)
{
	uint8_t ip[16];
	struct conn_slot *s;
	int rc = 0;

	conn_key(sa, ip);
	pthread_mutex_lock(&conn_mu);
	if (conn_total >= max_total) {
		rc = -EMFILE;
	} else if ((s = conn_find(ip, true)) == NULL) {
		rc = -EMFILE;
	} else if (s->n >= max_per_ip) {
		rc = -EUSERS;
	} else {
		s->n++;
		conn_total++;
	}
	pthread_mutex_unlock(&conn_mu);
	return rc;
}

void net_conn_release(const struct sockaddr *sa)
{
	uint8_t ip[16];
	struct conn_slot *s;

	conn_key(sa, ip);
	pthread_mutex_lock(&conn_mu);
	s = conn_find(ip, false);
	if (s != NULL && s->n > 0) {
		s->n--;
		conn_total--;
		if (s->n == 0 && ++conn_tombs > conn_cap / 4)
			conn_rehash();
	}
	pthread_mutex_unlock(&conn_mu);
}
