/*
 * maps.h - lookup tables read from files: transport_map (destination
 * domain to next hop) and relay_recipients (the valid recipients of the
 * relay domains). Pure: parsers from text to an immutable, heap-allocated
 * table, and lookups on it. Reading the files, reloading them on SIGHUP
 * and publishing them to the reactors is maps_live's job (maps_live.h).
 *
 * FILE SYNTAX (both maps)
 *   One entry per line. Blank lines and lines whose first non-blank byte
 *   is '#' are ignored; blanks are space and tab, and a CR before the LF
 *   is dropped. Outside comments any other byte below 0x20, and 0x7f, is
 *   an error; bytes from 0x80 are taken as they are (UTF-8). A line
 *   longer than MAPS_MAX_LINE_BYTES, a file larger than its cap or more
 *   entries than the cap are errors too. An error in a line names it:
 *   "FILE:LINE: problem" (FILE is the name given to the parser).
 *
 * TRANSPORT MAP: lines "DOMAIN NEXTHOP"
 *   DOMAIN     example.com    that domain only
 *              .example.com   every strict subdomain (a.example.com, ...)
 *              *              every domain (the default route)
 *   Lookup (maps_transport_lookup): the exact domain first, then the
 *   closest ".parent" entry (for a.b.example.com: .b.example.com, then
 *   .example.com, then .com), then "*". ASCII case is ignored, and one
 *   trailing dot of the looked-up domain is dropped. A domain listed
 *   twice is an error.
 *   NEXTHOP    smtp:[host]            SMTP to host, no MX lookup, port 25
 *              smtp:[host]:port
 *              smtp:host              SMTP to the MX hosts of host, port 25
 *              smtp:host:port
 *              lmtp:[host]:port       LMTP (RFC 2033) to host's A/AAAA
 *              lmtp:host:port         records (never MX), port default 24;
 *              lmtp:inet:host:port    ("inet:" is Postfix's spelling)
 *              lmtp:unix:/abs/path    LMTP over a UNIX-domain socket
 *   In brackets host may be a domain name, a.b.c.d, IPv6 or IPv6:IPv6
 *   (smtp:[IPv6:2001:db8::1]:25, smtp:[::1]:25). Without brackets it is
 *   a domain name (lmtp also takes a.b.c.d). The transport name is lower
 *   case; host case is folded.
 *
 * RELAY RECIPIENTS: lines "local@domain" or "@domain"
 *   An address (the part before the last '@' is the local part, at most
 *   64 bytes; the domain at most 253) or "@domain", which matches every
 *   address in that domain. A blank and anything after it on the line
 *   is ignored, so Postfix source files ("user@example.com OK") load as
 *   they are; consequently a quoted local part with blanks in it cannot
 *   be listed. Keys are lower-cased (ASCII only, as Postfix does) and so
 *   are lookups. A line listed twice is harmless and stored once.
 *   Lookup (maps_rcpt_lookup): the whole address, then "@domain".
 *   XXX no recipient_delimiter: "user+ext@" must be listed as such; an
 *   address extension lookup would go in maps_rcpt_lookup.
 *
 * MEMORY AND THREADS
 *   A parsed map is one heap object owned by the caller and never changes
 *   after the parser returns, so any number of threads may look up in it
 *   at once without locks. Free it with its _free function only when no
 *   thread can still be reading it. Pointers returned by lookups point
 *   into the map and stay valid until the map is freed.
 *
 *   In the daemon the maps in use are one struct maps_set published by
 *   maps_live (maps_live.h): a reactor takes it with maps_current() each
 *   time it needs a lookup and never keeps it, or anything found in it,
 *   past the current iteration of its event loop. On SIGHUP the main
 *   thread builds a new set, swaps the pointer atomically, and frees the
 *   old set only after every running reactor's loop counter (struct
 *   reactor's n_loops) has moved on by at least 2 since the swap: no lock
 *   on the hot path, and a wait of about two 1 s ticks at most.
 *
 * ERRORS
 *   Parsers return 0 or a negative errno and fill a struct rm_err:
 *   -EINVAL "FILE:LINE: problem" for a bad line, -EFBIG "maps: FILE:
 *   larger than N bytes", -ENOMEM "maps: FILE: out of memory". A caller's
 *   bad pointer is its bug; no input can make these functions abort.
 */
#ifndef RINGMTA_MAPS_H
#define RINGMTA_MAPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringmta/util.h"

/* MAPS_MAX_LINE_BYTES - one line without its LF: a 253-byte domain and a
 * next hop, or a 254-byte address (RFC 5321 4.5.3.1.3), with blanks and a
 * Postfix value to spare. */
#define MAPS_MAX_LINE_BYTES 2048
/* MAPS_TRANSPORT_MAX_FILE_BYTES - a transport map file; 100000 lines of
 * "domain smtp:[host]" fit with room. */
#define MAPS_TRANSPORT_MAX_FILE_BYTES (64u * 1024 * 1024)
/* MAPS_TRANSPORT_MAX_ENTRIES - transport map routes (about 400 bytes each:
 * 40 MB at most). */
#define MAPS_TRANSPORT_MAX_ENTRIES 100000
/* MAPS_RCPT_MAX_FILE_BYTES - a relay_recipients file: 4M addresses of
 * 60 bytes; keeps every string offset within 32 bits. */
#define MAPS_RCPT_MAX_FILE_BYTES (256u * 1024 * 1024)
/* MAPS_RCPT_MAX_ENTRIES - relay_recipients lines. Memory: the strings
 * (at most the file) plus two hash tables of 8-byte slots, 2 to 4 slots
 * per entry each: 32 to 64 bytes per entry, 128 MB at the cap. */
#define MAPS_RCPT_MAX_ENTRIES (4u * 1024 * 1024)
/* MAPS_HOST_BYTES - a next-hop host and its NUL (RFC 1035 2.3.4: 253). */
#define MAPS_HOST_BYTES 254
/* MAPS_PATH_BYTES - a UNIX socket path and its NUL (sizeof sun_path). */
#define MAPS_PATH_BYTES 108
/* MAPS_SMTP_PORT, MAPS_LMTP_PORT - default ports (RFC 5321 4.5.4.1's 25;
 * RFC 2033 says LMTP must not use 25, Postfix and Dovecot use 24). */
#define MAPS_SMTP_PORT 25
#define MAPS_LMTP_PORT 24
/* MAPS_ROUTE_TEXT_BYTES - room for maps_route_format()'s longest output. */
#define MAPS_ROUTE_TEXT_BYTES 300

/* enum maps_proto - how a next hop is spoken to. */
enum maps_proto {
	MAPS_SMTP, /* RFC 5321 */
	MAPS_LMTP, /* RFC 2033 */
};

/*
 * struct maps_route - one parsed next hop. For a UNIX socket (is_unix,
 * LMTP only) path is set and host is "", port 0. Otherwise host is a
 * lower-case domain name or, with is_ip, an IPv4 or IPv6 address in
 * inet_ntop() form (no brackets, no "IPv6:"), and port is 1..65535.
 * is_mx: resolve host's MX records (smtp:host); otherwise host's own
 * A/AAAA records (or the address itself) are the destination.
 */
struct maps_route {
	enum maps_proto proto;
	bool is_unix;
	bool is_mx;
	bool is_ip;
	char host[MAPS_HOST_BYTES];
	uint16_t port;
	char path[MAPS_PATH_BYTES];
};

/*
 * maps_nexthop_parse - parse one NEXTHOP (the syntax above; also fit for
 * relayhost-like values) from (s, len); s need not be NUL-terminated and
 * nothing past len is read. On success fills *out and returns 0. On
 * failure returns -EINVAL, leaves *out unspecified and sets *why to a
 * constant sentence such as "port is not 1..65535" (static storage).
 */
int maps_nexthop_parse(const char *s, size_t len, struct maps_route *out,
		       const char **why);

/*
 * maps_route_format - the canonical NEXTHOP text of r into buf[0..cap),
 * NUL-terminated: "smtp:[host]:port", "smtp:host:port",
 * "lmtp:[host]:port", "lmtp:unix:/path"; IPv6 as "[IPv6:addr]". The text
 * parses back to the same route. Returns buf; cut short (still
 * terminated) only when cap < MAPS_ROUTE_TEXT_BYTES.
 */
char *maps_route_format(const struct maps_route *r, char *buf, size_t cap);

/* struct maps_transport - a parsed transport map (opaque, immutable). */
struct maps_transport;

/*
 * maps_transport_parse - parse len bytes of text (need not be NUL-
 * terminated; nothing past len is read, nothing of it is kept) as a
 * transport map. name is used in messages only. On success *out is a new
 * map the caller owns (maps_transport_free); an empty file gives an empty
 * map. Returns 0, -EINVAL (first bad line), -EFBIG (len >
 * MAPS_TRANSPORT_MAX_FILE_BYTES) or -ENOMEM; on error *out is NULL.
 */
int maps_transport_parse(const char *name, const char *text, size_t len,
			 struct maps_transport **out, struct rm_err *err);

/* maps_transport_free - free t; NULL is a no-op. */
void maps_transport_free(struct maps_transport *t);

/* maps_transport_count - the number of routes in t (0 for NULL). */
size_t maps_transport_count(const struct maps_transport *t);

/*
 * maps_transport_lookup - the route for domain (len bytes, not NUL-
 * terminated, as the peer sent it): exact, then closest ".parent", then
 * "*" (see above). Only a host name can match a DOMAIN entry: an address
 * literal ("[192.0.2.1]"), a UTF-8 name or anything else that is not one
 * matches "*" only. t may be NULL (no map: -ENOENT).
 * Returns 0 with *out pointing into t (valid until t is freed), or
 * -ENOENT when nothing matches (*out untouched).
 */
int maps_transport_lookup(const struct maps_transport *t, const char *domain,
			  size_t len, const struct maps_route **out);

/* struct maps_rcpt - a parsed relay_recipients table (opaque, immutable). */
struct maps_rcpt;

/* enum maps_rcpt_result - what maps_rcpt_lookup() found. */
enum maps_rcpt_result {
	MAPS_RCPT_FOUND,                 /* the address or its @domain is listed */
	MAPS_RCPT_UNKNOWN,               /* the domain has entries, not this one */
	MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN, /* nothing at all for this domain */
};

/*
 * maps_rcpt_parse - parse len bytes of text as a relay_recipients table,
 * as maps_transport_parse() does (cap MAPS_RCPT_MAX_FILE_BYTES). On
 * success *out is a new table the caller owns (maps_rcpt_free). Returns 0,
 * -EINVAL, -EFBIG or -ENOMEM; on error *out is NULL.
 */
int maps_rcpt_parse(const char *name, const char *text, size_t len,
		    struct maps_rcpt **out, struct rm_err *err);

/* maps_rcpt_free - free m; NULL is a no-op. */
void maps_rcpt_free(struct maps_rcpt *m);

/* maps_rcpt_count - distinct entries in m (0 for NULL). */
size_t maps_rcpt_count(const struct maps_rcpt *m);

/*
 * maps_rcpt_lookup - look up the address (len bytes, not NUL-terminated,
 * "local@domain" as the peer sent it; the domain is after the last '@').
 * ASCII case is ignored and one trailing dot of the domain dropped. m may
 * be NULL (no table). An address without '@' or longer than 512 bytes is
 * never FOUND. Constant time on average (a hash table, load <= 1/2).
 */
enum maps_rcpt_result maps_rcpt_lookup(const struct maps_rcpt *m,
				       const char *addr, size_t len);

/* maps_rcpt_result_name - "found", "unknown" or "no_entries_for_domain". */
const char *maps_rcpt_result_name(enum maps_rcpt_result r);

#endif
