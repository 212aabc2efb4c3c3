/*
 * queue.h - retry and expiry policy for the outbound queue: when to try a
 * recipient again, when to give up, when to warn, what a remote reply or
 * a failure means (deliver, defer, bounce), how a message's recipients are
 * grouped into transactions per next hop, and the "dead destination"
 * back-off record.
 *
 * Pure: libc only; no clocks, no randomness, no allocation. Time and random
 * numbers come in as arguments, so every decision is a function of its
 * inputs and is table-tested (test/unit/test_queue.c).
 *
 * DESIGN
 *
 * Times are milliseconds (int64_t, any epoch the host likes, the same for
 * all arguments of one call), durations uint64_t milliseconds, as in
 * struct conf (retry_schedule_ms, maximal_queue_lifetime_ms,
 * delay_warning_time_ms). Only queue_group() speaks seconds, because it
 * reads struct spool_rcpt_entry.next_attempt_unix.
 *
 * Retry. After the n-th failed attempt a recipient waits schedule[n-1]
 * (the last step repeats: "5m 10m 20m 40m 1h" means hourly after the
 * fourth failure), plus or minus QUEUE_JITTER_PERCENT, derived from a
 * random number the host passes in. Jitter spreads the retries of a burst
 * of messages that failed together so they do not come back in lock step
 * (a thundering herd on the destination that just recovered).
 *
 * Expiry. A recipient still undelivered maximal_queue_lifetime after
 * arrival is bounced (status 4.4.7) with its last reason as the diagnostic. A
 * lifetime of 0 means one attempt only (Postfix's meaning of 0).
 *
 * Classification. Every outcome of an attempt is turned into a verdict
 * (deliver/defer/bounce), an RFC 3463 status for the DSN and the delivery
 * log, whether to try the next MX host (RFC 5321 5.1), and whether it
 * counts against the destination's health (a 550 to one RCPT says nothing
 * about the host; a refused connection does).
 *
 * Dead destinations. A destination (next hop) that fails
 * QUEUE_DEST_DEFAULT_THRESHOLD times in a row is held off for a while that
 * doubles with every further failure, up to a maximum; after the hold-off
 * one probe connection is allowed, and a success clears the record (as
 * Postfix's dead-site logic and KumoMTA's suspensions do).
 */
#ifndef RINGMTA_QUEUE_H
#define RINGMTA_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringmta/spool.h"

/* QUEUE_JITTER_PERCENT - retry delays vary by +-10 %: enough to spread a
 * burst of deferrals over minutes, small enough to keep the schedule. */
#define QUEUE_JITTER_PERCENT 10
/* QUEUE_DEFAULT_SCHEDULE_STEPS - steps of queue_default_schedule_ms. */
#define QUEUE_DEFAULT_SCHEDULE_STEPS 5
/* QUEUE_STATUS_BYTES - room for "5.123.123" and its NUL (RFC 3463 2). */
#define QUEUE_STATUS_BYTES 10

/* The default retry_schedule (issue 4): 5m 10m 20m 40m, then hourly. */
extern const uint64_t queue_default_schedule_ms[QUEUE_DEFAULT_SCHEDULE_STEPS];

/*
 * queue_retry_delay_ms - the delay after attempt number attempt_no
 * (1 = the first attempt failed; 0 is taken as 1) failed, jitter included.
 * schedule_ms[0..n): the steps (struct conf retry_schedule_ms); n == 0 or
 * schedule_ms NULL selects queue_default_schedule_ms. rand_u32: any
 * random value; the same value gives the same delay. The delay lies in
 * [step - step/10, step + step/10] (integer division) and is at least 1.
 */
uint64_t queue_retry_delay_ms(const uint64_t *schedule_ms, size_t n,
			      unsigned attempt_no, uint32_t rand_u32);

/*
 * queue_next_attempt - now_ms + queue_retry_delay_ms(...): the time of the
 * next attempt after attempt attempt_no failed at now_ms. Saturates at
 * INT64_MAX instead of overflowing. The host may clamp the result to the
 * expiry time (arrival + lifetime) so the last attempt is not wasted.
 */
int64_t queue_next_attempt(const uint64_t *schedule_ms, size_t n,
			   unsigned attempt_no, int64_t now_ms,
			   uint32_t rand_u32);

/*
 * queue_expired - true when a message that arrived at arrival_ms has been
 * queued for lifetime_ms or longer at now_ms (now - arrival >= lifetime).
 * A clock that went backwards (now < arrival) never expires anything.
 */
bool queue_expired(int64_t arrival_ms, int64_t now_ms, uint64_t lifetime_ms);

/*
 * queue_expiry_time - arrival_ms + lifetime_ms, saturating at INT64_MAX:
 * when a message expires (the DSN's Will-Retry-Until, in ms), and the
 * bound to clamp queue_next_attempt() to, so the last attempt happens
 * at the expiry instead of after it.
 */
int64_t queue_expiry_time(int64_t arrival_ms, uint64_t lifetime_ms);

/*
 * queue_delay_warning_due - true when a "delayed" DSN should be sent now:
 * warning_ms is not 0 (0 = never warn), has_warned is false (the host
 * remembers that it warned), and now - arrival >= warning_ms.
 */
bool queue_delay_warning_due(int64_t arrival_ms, int64_t now_ms,
			     uint64_t warning_ms, bool has_warned);

/* enum queue_verdict - what to do with the recipients an outcome covers. */
enum queue_verdict {
	QUEUE_DELIVER = 0,	/* done: remove, success DSN if asked */
	QUEUE_DEFER,		/* temporary: reschedule (or bounce if expired) */
	QUEUE_BOUNCE,		/* permanent: failed DSN now */
};

/*
 * enum queue_phase - where in the SMTP dialogue a reply came. SESSION is
 * everything before MAIL: greeting, EHLO/HELO/LHLO, STARTTLS.
 */
enum queue_phase {
	QUEUE_PHASE_SESSION = 0,
	QUEUE_PHASE_MAIL,
	QUEUE_PHASE_RCPT,
	QUEUE_PHASE_DATA,	/* the 354 to DATA, or the reply after the body/BDAT */
};

/*
 * enum queue_fault - an outcome that is not an SMTP reply. Each has one
 * fixed verdict and status (queue_classify_fault() documents the table).
 */
enum queue_fault {
	QUEUE_FAULT_CONN_REFUSED = 1, /* ECONNREFUSED: defer 4.4.1, next host */
	QUEUE_FAULT_UNREACHABLE,      /* EHOSTUNREACH, ENETUNREACH: defer 4.4.1, next host */
	QUEUE_FAULT_CONNECT_TIMEOUT,  /* connect_timeout: defer 4.4.1, next host */
	QUEUE_FAULT_TIMEOUT,          /* a command timeout (RFC 5321 4.5.3.2): defer 4.4.2 */
	QUEUE_FAULT_CONN_LOST,        /* EOF/reset mid-session: defer 4.4.2 */
	QUEUE_FAULT_PROTOCOL,         /* the peer broke SMTP: defer 4.5.0 */
	QUEUE_FAULT_TLS,              /* TLS handshake failed or required and missing: defer 4.7.0 */
	QUEUE_FAULT_DNS_TEMP,         /* SERVFAIL, DNS timeout: defer 4.4.3 */
	QUEUE_FAULT_DNS_NXDOMAIN,     /* the domain does not exist: bounce 5.1.2 */
	QUEUE_FAULT_DNS_NO_ADDRESS,   /* no MX and no A/AAAA (NODATA): bounce 5.1.2 */
	QUEUE_FAULT_NULL_MX,          /* RFC 7505 "MX 0 .": bounce 5.1.10 */
	QUEUE_FAULT_LOOP,             /* the best MX is ourselves: bounce 5.4.6 */
	QUEUE_FAULT_NEED_8BITMIME,    /* 8-bit body, peer lacks 8BITMIME (RFC 6152 3): bounce 5.6.3 */
	QUEUE_FAULT_NEED_SMTPUTF8,    /* UTF-8 envelope, peer lacks SMTPUTF8 (RFC 6531 3.5): bounce 5.6.7 */
	QUEUE_FAULT_TOO_BIG,          /* larger than the peer's SIZE (RFC 1870 6): bounce 5.3.4 */
	QUEUE_FAULT_LOCAL,            /* our own trouble (spool read, memory): defer 4.3.0 */
	QUEUE_FAULT_EXPIRED,          /* maximal_queue_lifetime reached: bounce 4.4.7 (RFC 3463 3.5:
				       * X.4.7 is "useful only as a persistent transient error";
				       * the DSN says Action: failed, as sendmail's does) */
	QUEUE_FAULT_COUNT_
};

/*
 * struct queue_outcome - a classified outcome. status is the RFC 3463
 * code for the DSN's Status field and the delivery log, NUL-terminated.
 * reason is a static constant naming the rule that decided (for the log).
 * is_next_host: the host, not the recipient, failed: try the next MX
 * host or address first (RFC 5321 5.1), and apply verdict only when none
 * is left (so a 5xx greeting bounces only at the last host, as Postfix's
 * smtp_skip_5xx_greeting does).
 */
struct queue_outcome {
	enum queue_verdict verdict;
	char status[QUEUE_STATUS_BYTES];
	bool is_next_host;
	bool is_dest_fault;	/* counts as a failure of the destination */
	const char *reason;
};

/*
 * queue_classify_reply - classify the reply code (e.g. 550) and its
 * enhanced status esc (e.g. "5.1.1"; NULL or "" when absent; ignored when
 * malformed or of another class than the code, RFC 3463 2) received in
 * phase. Rules, in order:
 *   - code outside 200..599, or 1xx/3xx where a final reply was due:
 *     defer 4.5.0, destination fault (the peer broke the protocol);
 *   - 421 in any phase: defer, next host, destination fault (RFC 5321 3.8);
 *   - non-2xx in SESSION: next host, destination fault (the host refuses
 *     service, not the recipient); 4xx defer, 5xx bounce at the last host;
 *   - 552 in RCPT: defer 4.5.3 (RFC 5321 4.5.3.1.10: "too many
 *     recipients" was once 552; treat it as 452);
 *   - 2xx deliver, 4xx defer, 5xx bounce (RFC 5321 4.2.1).
 * The status is esc when valid and of the reply's class, else "X.0.0"
 * (X = 2, 4 or 5 by verdict). out is filled in all cases.
 */
void queue_classify_reply(unsigned code, const char *esc,
			  enum queue_phase phase, struct queue_outcome *out);

/*
 * queue_classify_fault - classify a non-reply outcome (see enum
 * queue_fault for the table). An unknown value is our bug (rm_panic).
 */
void queue_classify_fault(enum queue_fault fault, struct queue_outcome *out);

/*
 * queue_fault_from_errno - the fault for a failed socket operation:
 * neg_errno is the -errno of a connect (is_connect) or of a later
 * send/recv. ECONNREFUSED: CONN_REFUSED; EHOSTUNREACH, ENETUNREACH,
 * EHOSTDOWN, ENETDOWN, EADDRNOTAVAIL: UNREACHABLE; ETIMEDOUT: CONNECT_TIMEOUT
 * while connecting, else TIMEOUT; ECONNRESET, EPIPE, ECONNABORTED and any
 * other error after the connection was up: CONN_LOST; ENOMEM, ENOBUFS,
 * EMFILE, ENFILE and any other error while connecting: LOCAL (our side).
 */
enum queue_fault queue_fault_from_errno(int neg_errno, bool is_connect);

/* queue_fault_name - constant name of a fault ("CONN_REFUSED"), "?" if unknown. */
const char *queue_fault_name(enum queue_fault fault);

/* queue_verdict_name - "deliver", "defer", "bounce", "?" if unknown. */
const char *queue_verdict_name(enum queue_verdict v);

/*
 * queue_status_valid - true if s[0..len) is an RFC 3463 status code:
 * class "2", "4" or "5", "." subject (1-3 digits) "." detail (1-3 digits).
 */
bool queue_status_valid(const char *s, size_t len);

/*
 * queue_dest_fn - the host's next-hop lookup for queue_group(): map the
 * domain of a recipient (domain[0..domain_len), not NUL-terminated, the
 * bytes after the address's last '@'; empty when the address has none)
 * to a destination id (a transport route, a relayhost, the MX "site";
 * equal ids share transactions). Returns 0 with *dest_id set, or a
 * negative code which queue_group() returns unchanged.
 */
typedef int (*queue_dest_fn)(void *ctx, const char *domain,
			     size_t domain_len, uint64_t *dest_id);

/* struct queue_slot - one due recipient: its destination and its index
 * in the rcpts array given to queue_group(). */
struct queue_slot {
	uint64_t dest_id;
	size_t rcpt;
};

/* struct queue_txn - one transaction: slots[first .. first + n_rcpts) of
 * the slots array filled by the same queue_group() call, all to dest_id. */
struct queue_txn {
	uint64_t dest_id;
	size_t first;
	size_t n_rcpts;
};

/*
 * queue_group - group the due recipients of one message into
 * transactions. rcpts[0..n_rcpts): the message's recipients (struct
 * spool_entry.rcpts); a recipient is due when its state is
 * SPOOL_RCPT_PENDING and next_attempt_unix <= now_unix. lookup/ctx: the
 * next-hop lookup, called once per due recipient. rcpt_limit: the most
 * recipients per transaction (destination_recipient_limit, >= 1; 0 is
 * taken as 1). slots: caller storage for n_rcpts entries; txns: caller
 * storage for txn_cap entries (n_rcpts always suffices). On return slots
 * are sorted by destination id, recipients of one destination in their
 * original order, and cut into transactions of at most rcpt_limit.
 * *n_slots and *n_txns get the counts (0 when nothing is due).
 * Returns 0, -ENOSPC (txn_cap too small; *n_txns is then what was
 * needed), or the lookup's negative code.
 */
int queue_group(const struct spool_rcpt_entry *rcpts, size_t n_rcpts,
		int64_t now_unix, unsigned rcpt_limit, queue_dest_fn lookup,
		void *ctx, struct queue_slot *slots, size_t *n_slots,
		struct queue_txn *txns, size_t txn_cap, size_t *n_txns);

/* Dead-destination defaults: 5 consecutive failures, then hold off
 * 1 min, doubling to at most 1 h (a minute is short enough that a
 * restarted peer is found quickly, the hour matches the retry schedule). */
#define QUEUE_DEST_DEFAULT_THRESHOLD 5
#define QUEUE_DEST_DEFAULT_MIN_HOLD_MS (60 * 1000ULL)
#define QUEUE_DEST_DEFAULT_MAX_HOLD_MS (60 * 60 * 1000ULL)

/*
 * struct queue_dest_policy - when a destination counts as dead.
 * threshold: consecutive failures before the first hold-off (>= 1; 0 is
 * taken as 1). min_hold_ms: the first hold-off; max_hold_ms: the cap on
 * the doubling (max < min is taken as min).
 */
struct queue_dest_policy {
	unsigned threshold;
	uint64_t min_hold_ms;
	uint64_t max_hold_ms;
};

/*
 * struct queue_dest - the health record of one destination, owned by the
 * host (one per destination queue). Zeroed (or queue_dest_init()) means
 * healthy.
 */
struct queue_dest {
	unsigned n_failures;	/* consecutive failures */
	int64_t hold_until_ms;	/* dead until then (when n_failures >= threshold) */
	uint64_t hold_ms;	/* the current hold-off length */
};

/* queue_dest_policy_default - fill p with the QUEUE_DEST_DEFAULT_* values. */
void queue_dest_policy_default(struct queue_dest_policy *p);

/* queue_dest_init - a healthy record. */
void queue_dest_init(struct queue_dest *d);

/* queue_dest_success - a delivery or a good session: clear the record. */
void queue_dest_success(struct queue_dest *d);

/*
 * queue_dest_failure - an outcome with is_dest_fault at now_ms. At the
 * threshold-th consecutive failure the destination is held off for
 * min_hold_ms; each later failure (the probe after a hold-off failing)
 * doubles the hold, up to max_hold_ms.
 */
void queue_dest_failure(struct queue_dest *d,
			const struct queue_dest_policy *p, int64_t now_ms);

/*
 * queue_dest_is_dead - true while d is held off at now_ms. The host then
 * defers the destination's mail (4.4.1) without connecting.
 */
bool queue_dest_is_dead(const struct queue_dest *d,
			const struct queue_dest_policy *p, int64_t now_ms);

/*
 * queue_dest_may_connect - may the host open another connection at now_ms
 * while n_active connections to d are open or being opened? Not while
 * dead; after a hold-off (the record still at or past the threshold) only
 * one probe at a time (n_active == 0); otherwise yes (the concurrency limit
 * is the host's business).
 */
bool queue_dest_may_connect(const struct queue_dest *d,
			    const struct queue_dest_policy *p, int64_t now_ms,
			    unsigned n_active);

#endif
