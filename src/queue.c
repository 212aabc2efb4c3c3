/*
 * queue - retry and expiry policy, outcome classification, transaction
 * grouping and dead-destination back-off for the outbound queue.
 *
 * Owns: nothing; every function works on the caller's arguments and, for
 *   the dead-destination record, on a struct the caller owns.
 * Must not: read clocks or random sources, allocate, log, do any I/O.
 * Interface: include/ringmta/queue.h
 * Limits: delays and times saturate instead of overflowing; jitter is
 *   bounded to +-QUEUE_JITTER_PERCENT of the step.
 * Errors: queue_group() returns -ENOSPC or the lookup's code; an unknown
 *   enum queue_fault is our bug (rm_panic).
 * Standards: RFC 5321 3.8 (421), 4.2.1 (reply classes), 4.5.3.1.10 (552
 *   to RCPT), 4.5.4.1 (retry strategy), 5.1 (next MX host); RFC 3463
 *   (status codes); RFC 7505 (null MX); RFC 3461 (DSN timing).
 */
#include "ringmta/queue.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringmta/util.h"

#define MIN_MS (60 * 1000ULL)

const uint64_t queue_default_schedule_ms[QUEUE_DEFAULT_SCHEDULE_STEPS] = {
	5 * MIN_MS, 10 * MIN_MS, 20 * MIN_MS, 40 * MIN_MS, 60 * MIN_MS,
};

uint64_t queue_retry_delay_ms(const uint64_t *schedule_ms, size_t n,
			      unsigned attempt_no, uint32_t rand_u32)
{
	uint64_t step, span, off;
	size_t i;

	if (schedule_ms == NULL || n == 0) {
		schedule_ms = queue_default_schedule_ms;
		n = QUEUE_DEFAULT_SCHEDULE_STEPS;
	}
	i = attempt_no == 0 ? 0 : attempt_no - 1;
	if (i >= n)
		i = n - 1;		/* the last step repeats */
	step = schedule_ms[i];
	span = step / (100 / QUEUE_JITTER_PERCENT);
	/*
	 * Scale the random value onto [0, 2*span] with a multiply-shift, not
	 * a modulo: no bias, and the same value lands in the same place for
	 * every step. span <= UINT64_MAX/10, so 2*span+1 cannot overflow;
	 * the product is done in 128 bits when span is that large.
	 */
	off = (uint64_t)(((unsigned __int128)rand_u32 * (2 * span + 1)) >> 32);
	step -= span;
	step = off > UINT64_MAX - step ? UINT64_MAX : step + off;
	return step == 0 ? 1 : step;
}

/* add_sat - t + d, saturating at INT64_MAX. */
static int64_t add_sat(int64_t t, uint64_t d)
{
	__int128 sum = (__int128)t + (__int128)d;

	return sum > INT64_MAX ? INT64_MAX : (int64_t)sum;
}

int64_t queue_next_attempt(const uint64_t *schedule_ms, size_t n,
			   unsigned attempt_no, int64_t now_ms,
			   uint32_t rand_u32)
{
	return add_sat(now_ms, queue_retry_delay_ms(schedule_ms, n, attempt_no,
						    rand_u32));
}

/* has_elapsed - now - then >= span, false when the clock went backwards.
 * The difference of two int64 always fits in a uint64. */
static bool has_elapsed(int64_t then_ms, int64_t now_ms, uint64_t span_ms)
{
	if (now_ms < then_ms)
		return false;
	return (uint64_t)now_ms - (uint64_t)then_ms >= span_ms;
}

bool queue_expired(int64_t arrival_ms, int64_t now_ms, uint64_t lifetime_ms)
{
	return has_elapsed(arrival_ms, now_ms, lifetime_ms);
}

int64_t queue_expiry_time(int64_t arrival_ms, uint64_t lifetime_ms)
{
	return add_sat(arrival_ms, lifetime_ms);
}

bool queue_delay_warning_due(int64_t arrival_ms, int64_t now_ms,
			     uint64_t warning_ms, bool has_warned)
{
	if (warning_ms == 0 || has_warned)
		return false;
	return has_elapsed(arrival_ms, now_ms, warning_ms);
}

/* --- classification ----------------------------------------------------- */

/* digits - count of decimal digits at s[i..len), at most 3 accepted. */
static size_t digits(const char *s, size_t i, size_t len)
{
	size_t n = 0;

	while (i + n < len && s[i + n] >= '0' && s[i + n] <= '9')
		n++;
	return n;
}

bool queue_status_valid(const char *s, size_t len)
{
	size_t i, n;

	if (s == NULL || len < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') ||
	    s[1] != '.')
		return false;
	i = 2;
	n = digits(s, i, len);
	if (n < 1 || n > 3 || i + n >= len || s[i + n] != '.')
		return false;
	i += n + 1;
	n = digits(s, i, len);
	return n >= 1 && n <= 3 && i + n == len;
}

/* set - fill an outcome. status is a constant or a validated esc. */
static void set(struct queue_outcome *o, enum queue_verdict v,
		const char *status, bool is_next, bool is_fault,
		const char *reason)
{
	o->verdict = v;
	snprintf(o->status, sizeof(o->status), "%s", status);
	o->is_next_host = is_next;
	o->is_dest_fault = is_fault;
	o->reason = reason;
}

/* class_status - esc when valid and of class c, else "c.0.0". */
static const char *class_status(const char *esc, char c)
{
	static const char *generic[] = { "2.0.0", "4.0.0", "5.0.0" };

	if (esc != NULL && esc[0] == c && queue_status_valid(esc, strlen(esc)))
		return esc;
	return c == '2' ? generic[0] : c == '4' ? generic[1] : generic[2];
}

void queue_classify_reply(unsigned code, const char *esc,
			  enum queue_phase phase, struct queue_outcome *out)
{
	unsigned cls = code / 100;

	if (code < 200 || code > 599 || cls == 3) {
		set(out, QUEUE_DEFER, "4.5.0", false, true, "unexpected reply code");
		return;
	}
	if (code == 421) {
		set(out, QUEUE_DEFER, class_status(esc, '4'), true, true,
		    "421 service closing (RFC 5321 3.8)");
		return;
	}
	if (phase == QUEUE_PHASE_SESSION && cls != 2) {
		if (cls == 4)
			set(out, QUEUE_DEFER, class_status(esc, '4'), true, true,
			    "session refused temporarily");
		else
			set(out, QUEUE_BOUNCE, class_status(esc, '5'), true, true,
			    "session refused");
		return;
	}
	if (phase == QUEUE_PHASE_RCPT && code == 552) {
		set(out, QUEUE_DEFER, "4.5.3", false, false,
		    "552 to RCPT taken as 452 (RFC 5321 4.5.3.1.10)");
		return;
	}
	if (cls == 2)
		set(out, QUEUE_DELIVER, class_status(esc, '2'), false, false, "2xx");
	else if (cls == 4)
		set(out, QUEUE_DEFER, class_status(esc, '4'), false, false, "4xx");
	else
		set(out, QUEUE_BOUNCE, class_status(esc, '5'), false, false, "5xx");
}

/* struct fault_rule - one row of the fault table. */
struct fault_rule {
	const char *name;
	enum queue_verdict verdict;
	const char *status;
	bool is_next_host;
	bool is_dest_fault;
	const char *reason;
};

/* The fault table: RFC 3463 3.5 (network/routing), 3.6 (media), 3.4 (system). */
static const struct fault_rule fault_rules[QUEUE_FAULT_COUNT_] = {
	[QUEUE_FAULT_CONN_REFUSED] = { "CONN_REFUSED", QUEUE_DEFER, "4.4.1", true, true, "connection refused" },
	[QUEUE_FAULT_UNREACHABLE] = { "UNREACHABLE", QUEUE_DEFER, "4.4.1", true, true, "host unreachable" },
	[QUEUE_FAULT_CONNECT_TIMEOUT] = { "CONNECT_TIMEOUT", QUEUE_DEFER, "4.4.1", true, true, "connect timeout" },
	[QUEUE_FAULT_TIMEOUT] = { "TIMEOUT", QUEUE_DEFER, "4.4.2", false, true, "command timeout" },
	[QUEUE_FAULT_CONN_LOST] = { "CONN_LOST", QUEUE_DEFER, "4.4.2", false, true, "connection lost" },
	[QUEUE_FAULT_PROTOCOL] = { "PROTOCOL", QUEUE_DEFER, "4.5.0", false, true, "protocol error" },
	[QUEUE_FAULT_TLS] = { "TLS", QUEUE_DEFER, "4.7.0", true, true, "TLS failure" },
	[QUEUE_FAULT_DNS_TEMP] = { "DNS_TEMP", QUEUE_DEFER, "4.4.3", false, false, "DNS lookup failed temporarily" },
	[QUEUE_FAULT_DNS_NXDOMAIN] = { "DNS_NXDOMAIN", QUEUE_BOUNCE, "5.1.2", false, false, "domain does not exist" },
	[QUEUE_FAULT_DNS_NO_ADDRESS] = { "DNS_NO_ADDRESS", QUEUE_BOUNCE, "5.1.2", false, false, "domain has no MX or address" },
	[QUEUE_FAULT_NULL_MX] = { "NULL_MX", QUEUE_BOUNCE, "5.1.10", false, false, "domain accepts no mail (RFC 7505 null MX)" },
	[QUEUE_FAULT_LOOP] = { "LOOP", QUEUE_BOUNCE, "5.4.6", false, false, "mail loops back to myself" },
	[QUEUE_FAULT_NEED_8BITMIME] = { "NEED_8BITMIME", QUEUE_BOUNCE, "5.6.3", false, false, "8-bit message, peer lacks 8BITMIME" },
	[QUEUE_FAULT_NEED_SMTPUTF8] = { "NEED_SMTPUTF8", QUEUE_BOUNCE, "5.6.7", false, false, "UTF-8 envelope, peer lacks SMTPUTF8" },
	[QUEUE_FAULT_TOO_BIG] = { "TOO_BIG", QUEUE_BOUNCE, "5.3.4", false, false, "message larger than the peer's SIZE" },
	[QUEUE_FAULT_LOCAL] = { "LOCAL", QUEUE_DEFER, "4.3.0", false, false, "local error" },
	[QUEUE_FAULT_EXPIRED] = { "EXPIRED", QUEUE_BOUNCE, "4.4.7", false, false, "maximal queue lifetime exceeded" },
};

void queue_classify_fault(enum queue_fault fault, struct queue_outcome *out)
{
	const struct fault_rule *r;

	if ((unsigned)fault >= QUEUE_FAULT_COUNT_ || fault_rules[fault].name == NULL)
		rm_panic("queue_classify_fault: bad fault %d", (int)fault);
	r = &fault_rules[fault];
	set(out, r->verdict, r->status, r->is_next_host, r->is_dest_fault,
	    r->reason);
}

enum queue_fault queue_fault_from_errno(int neg_errno, bool is_connect)
{
	switch (-neg_errno) {
	case ECONNREFUSED:
		return QUEUE_FAULT_CONN_REFUSED;
	case EHOSTUNREACH: case ENETUNREACH: case EHOSTDOWN: case ENETDOWN:
	case EADDRNOTAVAIL:
		return QUEUE_FAULT_UNREACHABLE;
	case ETIMEDOUT:
		return is_connect ? QUEUE_FAULT_CONNECT_TIMEOUT : QUEUE_FAULT_TIMEOUT;
	case ENOMEM: case ENOBUFS: case EMFILE: case ENFILE:
		return QUEUE_FAULT_LOCAL;
	}
	return is_connect ? QUEUE_FAULT_LOCAL : QUEUE_FAULT_CONN_LOST;
}

const char *queue_fault_name(enum queue_fault fault)
{
	if ((unsigned)fault >= QUEUE_FAULT_COUNT_ || fault_rules[fault].name == NULL)
		return "?";
	return fault_rules[fault].name;
}

const char *queue_verdict_name(enum queue_verdict v)
{
	switch (v) {
	case QUEUE_DELIVER: return "deliver";
	case QUEUE_DEFER: return "defer";
	case QUEUE_BOUNCE: return "bounce";
	}
	return "?";
}

/* --- grouping ----------------------------------------------------------- */

/* slot_cmp - by destination, then by recipient index (a stable order). */
static int slot_cmp(const void *a, const void *b)
{
	const struct queue_slot *x = a, *y = b;

	if (x->dest_id != y->dest_id)
		return x->dest_id < y->dest_id ? -1 : 1;
	return x->rcpt < y->rcpt ? -1 : x->rcpt > y->rcpt;
}

/* rcpt_domain - the bytes after the last '@' of addr ("" when none);
 * the last, because a quoted local part may hold '@' (RFC 5321 4.1.2). */
static const char *rcpt_domain(const char *addr, size_t *len)
{
	const char *at = strrchr(addr, '@');

	if (at == NULL) {
		*len = 0;
		return addr + strlen(addr);
	}
	*len = strlen(at + 1);
	return at + 1;
}

int queue_group(const struct spool_rcpt_entry *rcpts, size_t n_rcpts,
		int64_t now_unix, unsigned rcpt_limit, queue_dest_fn lookup,
		void *ctx, struct queue_slot *slots, size_t *n_slots,
		struct queue_txn *txns, size_t txn_cap, size_t *n_txns)
{
	size_t i, n = 0, nt = 0, run;
	const char *dom;
	size_t dom_len;
	int rc;

	*n_slots = 0;
	*n_txns = 0;
	if (rcpt_limit == 0)
		rcpt_limit = 1;
	for (i = 0; i < n_rcpts; i++) {
		if (rcpts[i].state != SPOOL_RCPT_PENDING ||
		    rcpts[i].next_attempt_unix > now_unix)
			continue;
		dom = rcpt_domain(rcpts[i].addr ? rcpts[i].addr : "", &dom_len);
		rc = lookup(ctx, dom, dom_len, &slots[n].dest_id);
		if (rc < 0)
			return rc;
		slots[n++].rcpt = i;
	}
	qsort(slots, n, sizeof(slots[0]), slot_cmp);
	for (i = 0; i < n; i += run) {
		run = 1;
		while (i + run < n && run < rcpt_limit &&
		       slots[i + run].dest_id == slots[i].dest_id)
			run++;
		if (nt < txn_cap) {
			txns[nt].dest_id = slots[i].dest_id;
			txns[nt].first = i;
			txns[nt].n_rcpts = run;
		}
		nt++;
	}
	*n_slots = n;
	*n_txns = nt;
	return nt > txn_cap ? -ENOSPC : 0;
}

/* --- dead destinations -------------------------------------------------- */

void queue_dest_policy_default(struct queue_dest_policy *p)
{
	p->threshold = QUEUE_DEST_DEFAULT_THRESHOLD;
	p->min_hold_ms = QUEUE_DEST_DEFAULT_MIN_HOLD_MS;
	p->max_hold_ms = QUEUE_DEST_DEFAULT_MAX_HOLD_MS;
}

void queue_dest_init(struct queue_dest *d)
{
	memset(d, 0, sizeof(*d));
}

void queue_dest_success(struct queue_dest *d)
{
	queue_dest_init(d);
}

/* threshold - the policy's threshold, at least 1. */
static unsigned threshold(const struct queue_dest_policy *p)
{
	return p->threshold == 0 ? 1 : p->threshold;
}

void queue_dest_failure(struct queue_dest *d,
			const struct queue_dest_policy *p, int64_t now_ms)
{
	uint64_t max = p->max_hold_ms < p->min_hold_ms ? p->min_hold_ms
						      : p->max_hold_ms;

	if (d->n_failures < UINT32_MAX)
		d->n_failures++;
	if (d->n_failures < threshold(p))
		return;
	if (d->n_failures == threshold(p) || d->hold_ms == 0)
		d->hold_ms = p->min_hold_ms;
	else
		d->hold_ms = d->hold_ms > max / 2 ? max : d->hold_ms * 2;
	if (d->hold_ms > max)
		d->hold_ms = max;
	d->hold_until_ms = add_sat(now_ms, d->hold_ms);
}

bool queue_dest_is_dead(const struct queue_dest *d,
			const struct queue_dest_policy *p, int64_t now_ms)
{
	return d->n_failures >= threshold(p) && now_ms < d->hold_until_ms;
}

bool queue_dest_may_connect(const struct queue_dest *d,
			    const struct queue_dest_policy *p, int64_t now_ms,
			    unsigned n_active)
{
	if (d->n_failures < threshold(p))
		return true;
	if (now_ms < d->hold_until_ms)
		return false;
	return n_active == 0;
}
