/*
 * conf.h - the ringmta configuration: one "key = value" file, -o overrides,
 * and the built-in defaults, parsed into one plain struct conf.
 *
 * DESIGN
 *   One source of truth: a key table in src/conf.c holds every key's name,
 *   default, valid values and meaning. The defaults are applied from that
 *   table, deploy/ringmta.conf is the text conf_write_example() prints, and
 *   doc/CONFIG.md is the text conf_write_reference() prints; test_conf fails
 *   when either file drifts from the table.
 *
 *   Loading order (as Postfix's main.cf plus -o): defaults, then the file,
 *   then each override. A key may be given once per source (listen repeats);
 *   a later source replaces the whole value, so the first listen line of the
 *   file (or of the overrides) drops the default listener. After the last
 *   source, conf_check() validates what needs more than one key.
 *
 *   Never an open relay by default: mynetworks defaults to loopback and
 *   relay_domains to empty.
 *
 * SYNTAX
 *   Lines are "key = value". A line whose first non-blank byte is '#' is a
 *   comment; a '#' after a value is part of the value (as in Postfix).
 *   Blanks (space, tab, a CR before LF) around the key, '=' and the value
 *   are ignored. Keys are lower case; an unknown key is an error. Bytes
 *   outside printable ASCII are refused outside comments.
 *
 * ERRORS
 *   Every function that can fail returns 0 or a negative errno and fills a
 *   struct rm_err whose message reads "FILE:LINE: key: problem" for the file
 *   (FILE is the name given to the parser), "-o key=value: key: problem" for
 *   overrides, "conf: open FILE: cause" for I/O and "conf: problem" for
 *   conf_check(). Codes: -EINVAL (bad configuration), -EFBIG (file larger
 *   than CONF_MAX_FILE_BYTES), -ENOMEM, or the -errno of open/read.
 */
#ifndef RINGMTA_CONF_H
#define RINGMTA_CONF_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "ringmta/util.h"

/* CONF_MAX_LISTEN - listen lines; each is one socket per reactor. */
#define CONF_MAX_LISTEN 16
/* CONF_MAX_MYNETWORKS - CIDR entries; the match is a linear scan. */
#define CONF_MAX_MYNETWORKS 1024
/* CONF_MAX_RELAY_DOMAINS - relay_domains entries; the match is linear. */
#define CONF_MAX_RELAY_DOMAINS 1024
/* CONF_MAX_DNS_SERVERS - dns_servers entries (resolv.conf allows 3). */
#define CONF_MAX_DNS_SERVERS 8
/* CONF_MAX_RETRY_SCHEDULE - retry_schedule steps. */
#define CONF_MAX_RETRY_SCHEDULE 32
/* CONF_MAX_LINE_BYTES - one line, without its LF: room for ~2000 domains. */
#define CONF_MAX_LINE_BYTES 65536
/* CONF_MAX_FILE_BYTES - the whole file; larger is -EFBIG. */
#define CONF_MAX_FILE_BYTES (1024 * 1024)
/* CONF_DOMAIN_BYTES - a domain name and its NUL (RFC 1035 2.3.4: 253). */
#define CONF_DOMAIN_BYTES 254
/* CONF_USER_BYTES - a login name and its NUL (useradd's 32). */
#define CONF_USER_BYTES 33
/* CONF_LISTEN_TEXT_BYTES - "[IPv6]:65535 " fits with room to spare. */
#define CONF_LISTEN_TEXT_BYTES 64
/* CONF_MIN_LINE_LENGTH - RFC 5321 4.5.3.1.4: text lines hold 1000 octets,
 * command lines 512; line_length_limit may not go below a command line. */
#define CONF_MIN_LINE_LENGTH 512

/* enum conf_listen_role - what a listener speaks. */
enum conf_listen_role {
	CONF_ROLE_MX,         /* port 25 service: relay rules apply */
	CONF_ROLE_SUBMISSION, /* RFC 6409 submission (STARTTLS later) */
	CONF_ROLE_SMTPS,      /* RFC 8314 implicit TLS; needs tls_*_file */
};

/* enum conf_log - where log lines go. */
enum conf_log {
	CONF_LOG_STDERR,
	CONF_LOG_SYSLOG,
};

/* enum conf_durability - when the spool syncs. */
enum conf_durability {
	CONF_DURABILITY_BATCH, /* fsync per commit batch before 250 */
	CONF_DURABILITY_NONE,  /* no fsync: relaxed, benchmarks only */
};

/*
 * enum conf_rcpt_policy - how RCPT checks a recipient in a relay domain.
 * A relay_domains entry may carry one as a suffix ("example.com:list");
 * an entry without one uses the global default (see
 * conf_relay_domain_policy()).
 */
enum conf_rcpt_policy {
	CONF_RCPT_NONE = 0, /* not a relay domain (a lookup result only) */
	CONF_RCPT_ANY,      /* ":any": accept every recipient */
	CONF_RCPT_LIST,     /* ":list": only those in relay_recipients */
	CONF_RCPT_VERIFY,   /* ":verify": ask the next hop first */
	CONF_RCPT_DEFAULT,  /* stored only: the entry has no suffix */
};

/*
 * struct conf_listen - one listen line. addr/addr_len are ready for bind().
 * is_any is set for "*": addr is then [::] and the socket is meant to be
 * bound with IPV6_V6ONLY off so IPv4 clients arrive as ::ffff:a.b.c.d.
 * text is the canonical "ADDR:PORT" form for logs.
 */
struct conf_listen {
	struct sockaddr_storage addr;
	socklen_t addr_len;
	enum conf_listen_role role;
	bool is_any;
	char text[CONF_LISTEN_TEXT_BYTES];
};

/*
 * struct conf_cidr - one mynetworks entry: family AF_INET (addr[0..3]) or
 * AF_INET6 (addr[0..15]), network byte order, host bits zero.
 */
struct conf_cidr {
	int family;
	uint8_t addr[16];
	unsigned prefix;
};

/* struct conf_addr - a socket address, e.g. a DNS server (port 53 default). */
struct conf_addr {
	struct sockaddr_storage addr;
	socklen_t addr_len;
};

/* struct conf_rate - count events per per_ms; count 0 means no limit. */
struct conf_rate {
	unsigned count;
	uint64_t per_ms;
};

/*
 * struct conf - the effective configuration. Fields are named after their
 * keys (durations get _ms). Fill with conf_defaults() or conf_load(), read
 * freely, release with conf_fini(). Not copyable with '=': mynetworks and
 * relay_domains are owned heap arrays.
 */
struct conf {
	/* --- in use ---------------------------------------------------- */
	struct conf_listen listen[CONF_MAX_LISTEN];
	size_t n_listen;               /* >= 1 after conf_check() */
	char spool_dir[PATH_MAX];      /* relative paths: to the start cwd */
	unsigned reactors;             /* 0 = auto, see conf_reactor_count() */
	char myhostname[CONF_DOMAIN_BYTES]; /* "" only if gethostname() was bad */
	struct conf_cidr *mynetworks;  /* owned; n_mynetworks entries */
	size_t n_mynetworks;
	char **relay_domains;          /* owned; lower case; ".x" = subdomains */
	enum conf_rcpt_policy *relay_domain_policies; /* owned; one per
					  relay_domains entry, DEFAULT when
					  it has no suffix */
	size_t n_relay_domains;
	char relay_recipients[PATH_MAX]; /* "" = none */
	bool verify_recipients;
	char transport_map[PATH_MAX];  /* "" = none */
	char relayhost[CONF_DOMAIN_BYTES]; /* host or IP literal; "" = direct */
	uint16_t relayhost_port;       /* 25 unless given */
	bool is_relayhost_mx;          /* true: look up MX; false: [host] */
	uint64_t message_size_limit;   /* bytes */
	unsigned recipient_limit;
	size_t line_length_limit;      /* bytes, CRLF included */
	uint64_t smtpd_timeout_ms;
	unsigned max_connections;
	unsigned max_connections_per_ip;
	unsigned smtpd_error_limit;
	char user[CONF_USER_BYTES];
	enum conf_log log;
	enum conf_durability durability;
	unsigned fsync_rate_limit;     /* fsyncs/s over all shards; 0 = none */
	uint64_t spool_map_size;       /* bytes */
	uint64_t spool_segment_size;   /* bytes */
	uint64_t spool_preallocate;    /* bytes zero-filled ahead; 0 = off */
	uint64_t spool_sweep_interval_ms; /* segment reclamation period */
	bool is_delivery;              /* delivery = yes */
	unsigned smtp_tcp_port;
	uint64_t smtp_command_timeout_ms;
	uint64_t bounce_size_limit;    /* bytes */
	uint64_t verify_positive_ttl_ms;
	uint64_t verify_negative_ttl_ms;
	uint64_t verify_timeout_ms;
	/* --- parsed and validated now, used by later issues -------------- */
	struct conf_addr dns_servers[CONF_MAX_DNS_SERVERS];
	size_t n_dns_servers;          /* 0 = use resolv_conf */
	char resolv_conf[PATH_MAX];
	unsigned max_messages_per_connection;
	bool is_pipelining_next;       /* pipelining_next = yes */
	unsigned destination_concurrency_limit;
	struct conf_rate destination_rate_limit;
	unsigned destination_recipient_limit;
	uint64_t connect_timeout_ms;
	uint64_t connection_idle_timeout_ms;
	uint64_t retry_schedule_ms[CONF_MAX_RETRY_SCHEDULE];
	size_t n_retry_schedule;       /* >= 1 */
	uint64_t maximal_queue_lifetime_ms;
	uint64_t delay_warning_time_ms; /* 0 = never warn */
	char tls_cert_file[PATH_MAX];  /* "" = no TLS */
	char tls_key_file[PATH_MAX];
};

/*
 * conf_defaults - fill c with the built-in defaults (the key table, the same
 * values deploy/ringmta.conf spells out); myhostname is gethostname(), or ""
 * when that is not a valid domain (conf_check() then fails). c need not be
 * initialised. Returns 0 or -ENOMEM (c is then empty but conf_fini-safe).
 */
int conf_defaults(struct conf *c, struct rm_err *err);

/*
 * conf_parse_text - apply "key = value" lines on top of c (which must hold
 * conf_defaults() or an earlier result). name is used only in messages
 * ("name:LINE: ..."). text need not be NUL-terminated; len bytes are read,
 * nothing past them, and text is not kept. A key may appear once (listen
 * up to CONF_MAX_LISTEN times; its first line replaces the old list).
 * Returns 0, -EINVAL (first bad line, reported in err), -EFBIG (len >
 * CONF_MAX_FILE_BYTES) or -ENOMEM. On error c is partly updated but still
 * valid to read and to conf_fini(). Does not run conf_check().
 */
int conf_parse_text(struct conf *c, const char *name, const char *text,
		    size_t len, struct rm_err *err);

/*
 * conf_parse_file - read path (at most CONF_MAX_FILE_BYTES) and apply it as
 * conf_parse_text() does, with path as the name. Returns what that returns,
 * or the -errno of open/read ("conf: open PATH: cause").
 */
int conf_parse_file(struct conf *c, const char *path, struct rm_err *err);

/*
 * conf_override - apply n "key=value" strings (as given to -o; blanks
 * around key and value are ignored) on top of c. Each key may be given
 * once, listen up to CONF_MAX_LISTEN times (the first replaces the list).
 * overrides and its strings are only read. Returns 0, -EINVAL ("-o
 * key=value: ...") or -ENOMEM; on error c is partly updated, as above.
 */
int conf_override(struct conf *c, char *const *overrides, size_t n,
		  struct rm_err *err);

/*
 * conf_check - the checks that involve more than one key or the final
 * value: myhostname set; at least one listener; an smtps listener needs
 * tls_cert_file and tls_key_file; those two come together; resolv_conf or
 * dns_servers; delay_warning_time below maximal_queue_lifetime; a
 * relay_domains entry with :list needs relay_recipients. It does not read
 * the map files (maps_live_load() does). Returns 0 or -EINVAL
 * ("conf: ...").
 */
int conf_check(const struct conf *c, struct rm_err *err);

/*
 * conf_load - the daemon's entry point: conf_defaults(), then path (NULL =
 * defaults only), then the n_overrides -o strings, then conf_check(). On
 * success the caller owns c and must conf_fini() it. On error c is
 * released (conf_fini() is still safe) and err says what is wrong.
 * Returns 0 or any code of the functions above.
 */
int conf_load(struct conf *c, const char *path_or_null,
	      char *const *overrides, size_t n_overrides, struct rm_err *err);

/* conf_fini - free what c owns and leave it empty; safe to call twice. */
void conf_fini(struct conf *c);

/*
 * conf_mynetworks_match - whether the client address sa (AF_INET or
 * AF_INET6, borrowed for the call) is inside mynetworks. An IPv4-mapped
 * IPv6 address (::ffff:a.b.c.d, from a dual-stack "*" listener) is matched
 * as the IPv4 address it carries, and only against IPv4 entries. Any other
 * family never matches.
 */
bool conf_mynetworks_match(const struct conf *c, const struct sockaddr *sa);

/*
 * conf_relay_domain_match - whether domain (len bytes, not NUL-terminated,
 * as the peer sent it) is one we relay to: equal to an entry "example.com",
 * or a strict subdomain of an entry ".example.com". ASCII case is ignored;
 * a trailing dot or an address literal never matches.
 */
bool conf_relay_domain_match(const struct conf *c, const char *domain,
			     size_t len);

/*
 * conf_relay_domain_policy - how RCPT checks recipients in domain (len
 * bytes, not NUL-terminated, as the peer sent it; matched as by
 * conf_relay_domain_match(), the longest matching entry winning). Returns
 * CONF_RCPT_NONE when domain is not a relay domain, else the entry's
 * suffix or, for an entry without one, the default: CONF_RCPT_LIST when
 * relay_recipients is set, else CONF_RCPT_VERIFY when verify_recipients
 * is yes, else CONF_RCPT_ANY. Never returns CONF_RCPT_DEFAULT.
 */
enum conf_rcpt_policy conf_relay_domain_policy(const struct conf *c,
					       const char *domain, size_t len);

/* conf_rcpt_policy_name - "none", "any", "list", "verify" or "default". */
const char *conf_rcpt_policy_name(enum conf_rcpt_policy p);

/*
 * conf_reactor_count - the number of reactors to start: reactors, or for
 * auto the CPUs this process may run on (its affinity mask: taskset, a
 * cpuset), capped by a cgroup v2 CPU quota (cpu.max, rounded up),
 * clamped to 1..256.
 */
unsigned conf_reactor_count(const struct conf *c);

/*
 * conf_cpu_quota_parse - whole CPUs (rounded up, at most 256) in a cgroup
 * v2 cpu.max line ("QUOTA PERIOD"); 0 for "max PERIOD" or anything else.
 */
unsigned conf_cpu_quota_parse(const char *cpu_max);

/* conf_role_name - "mx", "submission" or "smtps". */
const char *conf_role_name(enum conf_listen_role role);

/*
 * conf_dump - write the effective configuration to f as "key = value"
 * lines in canonical form, one per key (listen once per listener). The
 * output parses back to the same configuration. Returns 0 or -EIO.
 */
int conf_dump(const struct conf *c, FILE *f);

/*
 * conf_write_example - write the documented example configuration, the
 * text of deploy/ringmta.conf: every key with its meaning and default.
 * Returns 0 or -EIO.
 */
int conf_write_example(FILE *f);

/*
 * conf_write_reference - write the Markdown key reference, the text of
 * doc/CONFIG.md. Returns 0 or -EIO.
 */
int conf_write_reference(FILE *f);

#endif
