/*
 * net.h - sockets: listening sockets, address formatting, and the process-
 * wide per-client-IP connection table (max_connections_per_ip).
 */
#ifndef RINGMTA_NET_H
#define RINGMTA_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "ringmta/util.h"

/* NET_ADDR_STR_BYTES - room for "[ffff:...:ffff]:65535" and the NUL. */
#define NET_ADDR_STR_BYTES 64

/*
 * net_listen - a non-blocking TCP listening socket on sa with TCP_NODELAY
 * (inherited by accepted sockets), SO_REUSEADDR,
 * SO_REUSEPORT (one socket per reactor: the kernel spreads connections) and
 * the given backlog. IPv6 sockets are IPV6_V6ONLY unless dual_stack (the
 * "*" listener: IPv4 clients then arrive as ::ffff:a.b.c.d). Returns the fd, or a
 * negative errno with err filled ("net: bind 127.0.0.1:25: EADDRINUSE").
 */
int net_listen(const struct sockaddr *sa, socklen_t len, int backlog,
	       bool dual_stack, struct rm_err *err);

/*
 * net_addr_str - format the address part only ("192.0.2.1", "2001:db8::1";
 * IPv4-mapped IPv6 shown as IPv4) into out (NET_ADDR_STR_BYTES). Returns out.
 */
char *net_addr_str(const struct sockaddr *sa, char *out, size_t cap);

/*
 * net_conn_table_init - size the per-IP table for at most max_conns
 * connections process-wide. Returns 0 or -ENOMEM. Call once before threads.
 */
int net_conn_table_init(unsigned max_conns);

/*
 * net_conn_acquire - count one more connection from sa's IP, process-wide.
 * Returns 0 when within both limits, -EMFILE when max_total would be
 * exceeded, -EUSERS when max_per_ip would be (nothing is counted then).
 * Thread-safe (a mutex: taken once per accept and close, never per byte).
 */
int net_conn_acquire(const struct sockaddr *sa, unsigned max_total,
		     unsigned max_per_ip);
/* net_conn_release - undo one successful net_conn_acquire for sa. */
void net_conn_release(const struct sockaddr *sa);

#endif
