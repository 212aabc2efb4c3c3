/*
 * test_queue - retry schedule (steps, last step repeating, jitter bounds,
 * determinism), expiry and delay-warning edges, classification of every
 * reply class in every phase and of every fault, transaction grouping,
 * and the dead-destination record. Named table cases, "got X, want Y".
 */
#include "ringmta/queue.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "t.h"

#define S 1000LL
#define M (60 * S)
#define H (60 * M)
#define D (24 * H)

/* the midpoint random value: multiply-shift lands on the step itself */
#define R_MID 0x80000000u

static void test_schedule(void)
{
	static const uint64_t conf[] = { 5 * M, 10 * M, 20 * M, 40 * M, 60 * M };
	static const uint64_t one[] = { 90 * S };
	static const uint64_t zero[] = { 0 }, five[] = { 5 }, ten[] = { 10 };
	static const uint64_t huge[] = { UINT64_MAX };
	static const struct {
		const char *name;
		const uint64_t *sched;
		size_t n;
		unsigned attempt;
		uint32_t rnd;
		uint64_t want;
	} cases[] = {
		{ "attempt 1 is the first step", conf, 5, 1, R_MID, 5 * M },
		{ "attempt 0 taken as 1", conf, 5, 0, R_MID, 5 * M },
		{ "attempt 2", conf, 5, 2, R_MID, 10 * M },
		{ "attempt 3", conf, 5, 3, R_MID, 20 * M },
		{ "attempt 4", conf, 5, 4, R_MID, 40 * M },
		{ "attempt 5 hourly", conf, 5, 5, R_MID, 60 * M },
		{ "attempt 6 last step repeats", conf, 5, 6, R_MID, 60 * M },
		{ "attempt 1000 last step repeats", conf, 5, 1000, R_MID, 60 * M },
		{ "attempt UINT_MAX", conf, 5, 0xffffffffu, R_MID, 60 * M },
		{ "rand 0 is -10 %", conf, 5, 1, 0, 5 * M - 30 * S },
		{ "rand max is +10 %", conf, 5, 1, 0xffffffffu, 5 * M + 30 * S },
		{ "rand max hourly +10 %", conf, 5, 9, 0xffffffffu, 66 * M },
		{ "rand 0 hourly -10 %", conf, 5, 9, 0, 54 * M },
		{ "NULL schedule is the default", NULL, 0, 2, R_MID, 10 * M },
		{ "n 0 is the default", conf, 0, 7, R_MID, 60 * M },
		{ "one-step schedule repeats", one, 1, 3, R_MID, 90 * S },
		{ "step 0 gives at least 1 ms", zero, 1, 1, 0, 1 },
		{ "step 5 ms: no jitter room", five, 1, 1, 0xffffffffu, 5 },
		{ "step 10 ms: +-1", ten, 1, 1, 0xffffffffu, 11 },
		{ "huge step saturates", huge, 1, 1, 0xffffffffu, UINT64_MAX },
		{ "huge step -10 %", huge, 1, 1, 0, UINT64_MAX - UINT64_MAX / 10 },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		T_CASE(cases[i].name);
		T_EQ_INT(queue_retry_delay_ms(cases[i].sched, cases[i].n,
					      cases[i].attempt, cases[i].rnd),
			 cases[i].want);
	}

	T_CASE("default schedule is 5m 10m 20m 40m 1h");
	T_EQ_INT(queue_default_schedule_ms[0], 5 * M);
	T_EQ_INT(queue_default_schedule_ms[4], 60 * M);

	T_CASE("jitter stays within +-10 % for every step");
	{
		uint32_t r = 12345;
		unsigned a, k, bad = 0;
		uint64_t lo = UINT64_MAX, hi = 0;

		for (a = 1; a <= 7; a++) {
			uint64_t step = conf[a > 5 ? 4 : a - 1];
			for (k = 0; k < 20000; k++) {
				uint64_t d;

				r = r * 1664525u + 1013904223u;
				d = queue_retry_delay_ms(conf, 5, a, r);
				if (d < step - step / 10 || d > step + step / 10)
					bad++;
				if (a == 1) {
					lo = d < lo ? d : lo;
					hi = d > hi ? d : hi;
				}
			}
		}
		T_EQ_INT(bad, 0);
		/* the range is actually used, not collapsed to one value */
		T_CHECK(lo < 5 * M - 25 * S && hi > 5 * M + 25 * S,
			"got range [%llu, %llu], want it to span most of +-30 s",
			(unsigned long long)lo, (unsigned long long)hi);
	}

	T_CASE("same random value, same delay");
	T_EQ_INT(queue_retry_delay_ms(conf, 5, 3, 777),
		 queue_retry_delay_ms(conf, 5, 3, 777));

	T_CASE("next attempt adds the delay to now");
	T_EQ_INT(queue_next_attempt(conf, 5, 2, 1000000, R_MID), 1000000 + 10 * M);
	T_CASE("next attempt saturates");
	T_EQ_INT(queue_next_attempt(conf, 5, 2, INT64_MAX - 5, R_MID), INT64_MAX);
	T_EQ_INT(queue_next_attempt(huge, 1, 1, INT64_MAX / 2, R_MID), INT64_MAX);
	T_CASE("next attempt from a negative time, exact");
	T_EQ_INT(queue_next_attempt(ten, 1, 1, -1000, R_MID), -990);
	T_EQ_INT(queue_next_attempt(huge, 1, 1, INT64_MIN, 0),
		 (int64_t)((__int128)INT64_MIN + (UINT64_MAX - UINT64_MAX / 10)));
}

static void test_expiry(void)
{
	static const struct {
		const char *name;
		int64_t arrival, now;
		uint64_t lifetime;
		bool want;
	} cases[] = {
		{ "fresh message", 0, 1 * H, 5 * D, false },
		{ "one ms before lifetime", 0, 5 * D - 1, 5 * D, false },
		{ "exactly at lifetime", 0, 5 * D, 5 * D, true },
		{ "past lifetime", 0, 6 * D, 5 * D, true },
		{ "lifetime 0: expired after the first attempt", 100, 100, 0, true },
		{ "clock went backwards", 10 * D, 1 * D, 5 * D, false },
		{ "large epoch values", 1700000000000LL, 1700000000000LL + 5 * D, 5 * D, true },
		{ "negative arrival", -5 * D, 0, 5 * D, true },
		{ "extreme span, no overflow", INT64_MIN, INT64_MAX, UINT64_MAX, true },
		{ "extreme span expired", INT64_MIN, INT64_MAX, 1, true },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		T_CASE(cases[i].name);
		T_EQ_INT(queue_expired(cases[i].arrival, cases[i].now,
				       cases[i].lifetime), cases[i].want);
	}
}

static void test_expiry_time(void)
{
	T_CASE("expiry time");
	T_EQ_INT(queue_expiry_time(1000, 5 * D), 1000 + 5 * D);
	T_EQ_INT(queue_expiry_time(-5 * D, 5 * D), 0);
	T_EQ_INT(queue_expiry_time(INT64_MAX - 1, 2), INT64_MAX);
	T_EQ_INT(queue_expiry_time(INT64_MIN, UINT64_MAX), INT64_MAX);
	T_CASE("expired exactly at the expiry time");
	T_EQ_INT(queue_expired(1000, queue_expiry_time(1000, 5 * D), 5 * D), true);
	T_EQ_INT(queue_expired(1000, queue_expiry_time(1000, 5 * D) - 1, 5 * D), false);
}

static void test_delay_warning(void)
{
	static const struct {
		const char *name;
		int64_t arrival, now;
		uint64_t warn;
		bool has_warned, want;
	} cases[] = {
		{ "disabled (0)", 0, 10 * D, 0, false, false },
		{ "before warning time", 0, 4 * H - 1, 4 * H, false, false },
		{ "at warning time", 0, 4 * H, 4 * H, false, true },
		{ "after warning time", 0, 5 * H, 4 * H, false, true },
		{ "already warned", 0, 5 * H, 4 * H, true, false },
		{ "clock went backwards", 5 * H, 0, 4 * H, false, false },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		T_CASE(cases[i].name);
		T_EQ_INT(queue_delay_warning_due(cases[i].arrival, cases[i].now,
						 cases[i].warn, cases[i].has_warned),
			 cases[i].want);
	}
}

static void test_status_valid(void)
{
	static const struct {
		const char *s;
		bool want;
	} cases[] = {
		{ "2.0.0", true }, { "4.4.1", true }, { "5.1.10", true },
		{ "5.123.123", true }, { "3.0.0", false }, { "5.1", false },
		{ "5..1", false }, { "5.1.", false }, { "5.1.1000", false },
		{ "5.1234.1", false }, { "51.1.1", false }, { "5.1.1 ", false },
		{ "", false }, { "x.1.1", false }, { "5.a.1", false },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		T_CASE(cases[i].s);
		T_EQ_INT(queue_status_valid(cases[i].s, strlen(cases[i].s)),
			 cases[i].want);
	}
	T_CASE("NULL");
	T_EQ_INT(queue_status_valid(NULL, 0), false);
}

static void test_classify_reply(void)
{
	static const struct {
		const char *name;
		unsigned code;
		const char *esc;
		enum queue_phase phase;
		enum queue_verdict want;
		const char *want_status;
		bool want_next, want_fault;
	} cases[] = {
		{ "250 to RCPT delivers", 250, "2.1.5", QUEUE_PHASE_RCPT, QUEUE_DELIVER, "2.1.5", false, false },
		{ "250 after DATA delivers", 250, NULL, QUEUE_PHASE_DATA, QUEUE_DELIVER, "2.0.0", false, false },
		{ "251 user not local, forwarded", 251, "2.1.5", QUEUE_PHASE_RCPT, QUEUE_DELIVER, "2.1.5", false, false },
		{ "220 greeting ok", 220, "", QUEUE_PHASE_SESSION, QUEUE_DELIVER, "2.0.0", false, false },
		{ "450 mailbox busy defers", 450, "4.2.1", QUEUE_PHASE_RCPT, QUEUE_DEFER, "4.2.1", false, false },
		{ "451 after DATA defers", 451, "4.3.0", QUEUE_PHASE_DATA, QUEUE_DEFER, "4.3.0", false, false },
		{ "452 too many recipients defers", 452, "4.5.3", QUEUE_PHASE_RCPT, QUEUE_DEFER, "4.5.3", false, false },
		{ "4xx without esc: 4.0.0", 454, NULL, QUEUE_PHASE_MAIL, QUEUE_DEFER, "4.0.0", false, false },
		{ "550 5.1.1 user unknown bounces", 550, "5.1.1", QUEUE_PHASE_RCPT, QUEUE_BOUNCE, "5.1.1", false, false },
		{ "RFC7505 550 5.1.10 null MX bounces", 550, "5.1.10", QUEUE_PHASE_RCPT, QUEUE_BOUNCE, "5.1.10", false, false },
		{ "554 after DATA bounces", 554, "5.7.1", QUEUE_PHASE_DATA, QUEUE_BOUNCE, "5.7.1", false, false },
		{ "553 to MAIL bounces", 553, "5.1.8", QUEUE_PHASE_MAIL, QUEUE_BOUNCE, "5.1.8", false, false },
		{ "5xx without esc: 5.0.0", 550, NULL, QUEUE_PHASE_RCPT, QUEUE_BOUNCE, "5.0.0", false, false },
		{ "RFC3463-2 esc of another class ignored", 550, "4.2.2", QUEUE_PHASE_RCPT, QUEUE_BOUNCE, "5.0.0", false, false },
		{ "RFC3463-2 2xx esc on 4xx ignored", 451, "2.0.0", QUEUE_PHASE_DATA, QUEUE_DEFER, "4.0.0", false, false },
		{ "malformed esc ignored", 550, "5.1", QUEUE_PHASE_RCPT, QUEUE_BOUNCE, "5.0.0", false, false },
		{ "RFC5321-4.5.3.1.10 552 to RCPT taken as 452", 552, "5.2.2", QUEUE_PHASE_RCPT, QUEUE_DEFER, "4.5.3", false, false },
		{ "552 after DATA bounces", 552, "5.3.4", QUEUE_PHASE_DATA, QUEUE_BOUNCE, "5.3.4", false, false },
		{ "RFC5321-3.8 421 greeting", 421, "4.3.2", QUEUE_PHASE_SESSION, QUEUE_DEFER, "4.3.2", true, true },
		{ "RFC5321-3.8 421 to RCPT", 421, NULL, QUEUE_PHASE_RCPT, QUEUE_DEFER, "4.0.0", true, true },
		{ "RFC5321-3.8 421 after DATA", 421, "4.4.2", QUEUE_PHASE_DATA, QUEUE_DEFER, "4.4.2", true, true },
		{ "554 greeting: next host, bounce at the last", 554, "5.7.1", QUEUE_PHASE_SESSION, QUEUE_BOUNCE, "5.7.1", true, true },
		{ "550 to EHLO and HELO: next host, bounce at the last", 550, NULL, QUEUE_PHASE_SESSION, QUEUE_BOUNCE, "5.0.0", true, true },
		{ "450 EHLO refused defers, next host", 450, "4.7.1", QUEUE_PHASE_SESSION, QUEUE_DEFER, "4.7.1", true, true },
		{ "354 where a final reply was due", 354, NULL, QUEUE_PHASE_RCPT, QUEUE_DEFER, "4.5.0", false, true },
		{ "199 out of range", 199, NULL, QUEUE_PHASE_RCPT, QUEUE_DEFER, "4.5.0", false, true },
		{ "600 out of range", 600, NULL, QUEUE_PHASE_DATA, QUEUE_DEFER, "4.5.0", false, true },
		{ "0", 0, NULL, QUEUE_PHASE_DATA, QUEUE_DEFER, "4.5.0", false, true },
	};
	struct queue_outcome o;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		T_CASE(cases[i].name);
		memset(&o, 0xa5, sizeof(o));
		queue_classify_reply(cases[i].code, cases[i].esc, cases[i].phase, &o);
		T_CHECK(o.verdict == cases[i].want, "verdict: got %s, want %s",
			queue_verdict_name(o.verdict), queue_verdict_name(cases[i].want));
		T_EQ_STR(o.status, cases[i].want_status);
		T_EQ_INT(o.is_next_host, cases[i].want_next);
		T_EQ_INT(o.is_dest_fault, cases[i].want_fault);
		T_CHECK(o.reason != NULL && o.reason[0] != '\0', "reason: got none");
	}

	T_CASE("every code 200..599 in every phase gives a valid status of its verdict's class");
	{
		unsigned code, ph, bad = 0;

		for (ph = QUEUE_PHASE_SESSION; ph <= QUEUE_PHASE_DATA; ph++) {
			for (code = 100; code <= 699; code++) {
				char want_cls;

				queue_classify_reply(code, NULL, (enum queue_phase)ph, &o);
				want_cls = o.verdict == QUEUE_DELIVER ? '2' :
					   o.verdict == QUEUE_DEFER ? '4' : '5';
				if (!queue_status_valid(o.status, strlen(o.status)) ||
				    o.status[0] != want_cls)
					bad++;
				if (code / 100 == 5 && !(code == 552 && ph == QUEUE_PHASE_RCPT) &&
				    o.verdict != QUEUE_BOUNCE)
					bad++;
				if (code / 100 == 4 && o.verdict != QUEUE_DEFER)
					bad++;
			}
		}
		T_EQ_INT(bad, 0);
	}
}

static void test_classify_fault(void)
{
	static const struct {
		enum queue_fault f;
		enum queue_verdict want;
		const char *want_status;
		bool want_next, want_fault;
	} cases[] = {
		{ QUEUE_FAULT_CONN_REFUSED, QUEUE_DEFER, "4.4.1", true, true },
		{ QUEUE_FAULT_UNREACHABLE, QUEUE_DEFER, "4.4.1", true, true },
		{ QUEUE_FAULT_CONNECT_TIMEOUT, QUEUE_DEFER, "4.4.1", true, true },
		{ QUEUE_FAULT_TIMEOUT, QUEUE_DEFER, "4.4.2", false, true },
		{ QUEUE_FAULT_CONN_LOST, QUEUE_DEFER, "4.4.2", false, true },
		{ QUEUE_FAULT_PROTOCOL, QUEUE_DEFER, "4.5.0", false, true },
		{ QUEUE_FAULT_TLS, QUEUE_DEFER, "4.7.0", true, true },
		{ QUEUE_FAULT_DNS_TEMP, QUEUE_DEFER, "4.4.3", false, false },
		{ QUEUE_FAULT_DNS_NXDOMAIN, QUEUE_BOUNCE, "5.1.2", false, false },
		{ QUEUE_FAULT_DNS_NO_ADDRESS, QUEUE_BOUNCE, "5.1.2", false, false },
		{ QUEUE_FAULT_NULL_MX, QUEUE_BOUNCE, "5.1.10", false, false },
		{ QUEUE_FAULT_LOOP, QUEUE_BOUNCE, "5.4.6", false, false },
		{ QUEUE_FAULT_NEED_8BITMIME, QUEUE_BOUNCE, "5.6.3", false, false },
		{ QUEUE_FAULT_NEED_SMTPUTF8, QUEUE_BOUNCE, "5.6.7", false, false },
		{ QUEUE_FAULT_TOO_BIG, QUEUE_BOUNCE, "5.3.4", false, false },
		{ QUEUE_FAULT_LOCAL, QUEUE_DEFER, "4.3.0", false, false },
		{ QUEUE_FAULT_EXPIRED, QUEUE_BOUNCE, "4.4.7", false, false },
	};
	struct queue_outcome o;
	size_t i;

	T_CASE("every fault has a case");
	T_EQ_INT(sizeof(cases) / sizeof(cases[0]), QUEUE_FAULT_COUNT_ - 1);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		T_CASE(queue_fault_name(cases[i].f));
		queue_classify_fault(cases[i].f, &o);
		T_CHECK(o.verdict == cases[i].want, "verdict: got %s, want %s",
			queue_verdict_name(o.verdict), queue_verdict_name(cases[i].want));
		T_EQ_STR(o.status, cases[i].want_status);
		T_EQ_INT(o.is_next_host, cases[i].want_next);
		T_EQ_INT(o.is_dest_fault, cases[i].want_fault);
	}
	T_CASE("fault names");
	T_EQ_STR(queue_fault_name(QUEUE_FAULT_NULL_MX), "NULL_MX");
	T_EQ_STR(queue_fault_name((enum queue_fault)0), "?");
	T_EQ_STR(queue_fault_name(QUEUE_FAULT_COUNT_), "?");
	T_EQ_STR(queue_verdict_name((enum queue_verdict)9), "?");
}

static void test_fault_from_errno(void)
{
	static const struct {
		const char *name;
		int err;
		bool is_connect;
		enum queue_fault want;
	} cases[] = {
		{ "connect ECONNREFUSED", -ECONNREFUSED, true, QUEUE_FAULT_CONN_REFUSED },
		{ "connect EHOSTUNREACH", -EHOSTUNREACH, true, QUEUE_FAULT_UNREACHABLE },
		{ "connect ENETUNREACH", -ENETUNREACH, true, QUEUE_FAULT_UNREACHABLE },
		{ "connect EADDRNOTAVAIL", -EADDRNOTAVAIL, true, QUEUE_FAULT_UNREACHABLE },
		{ "connect ETIMEDOUT", -ETIMEDOUT, true, QUEUE_FAULT_CONNECT_TIMEOUT },
		{ "recv ETIMEDOUT", -ETIMEDOUT, false, QUEUE_FAULT_TIMEOUT },
		{ "recv ECONNRESET", -ECONNRESET, false, QUEUE_FAULT_CONN_LOST },
		{ "send EPIPE", -EPIPE, false, QUEUE_FAULT_CONN_LOST },
		{ "recv EIO", -EIO, false, QUEUE_FAULT_CONN_LOST },
		{ "socket EMFILE", -EMFILE, true, QUEUE_FAULT_LOCAL },
		{ "send ENOBUFS", -ENOBUFS, false, QUEUE_FAULT_LOCAL },
		{ "connect EINVAL", -EINVAL, true, QUEUE_FAULT_LOCAL },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		T_CASE(cases[i].name);
		T_CHECK(queue_fault_from_errno(cases[i].err, cases[i].is_connect) == cases[i].want,
			"got %s, want %s",
			queue_fault_name(queue_fault_from_errno(cases[i].err, cases[i].is_connect)),
			queue_fault_name(cases[i].want));
	}
}

/* the test's next-hop table: "b.example" and "c.example" share one site */
static int lookup_calls;
static int test_lookup(void *ctx, const char *dom, size_t len, uint64_t *id)
{
	(void)ctx;
	lookup_calls++;
	if (len == 9 && memcmp(dom, "a.example", 9) == 0)
		*id = 1;
	else if (len == 9 && (memcmp(dom, "b.example", 9) == 0 ||
			      memcmp(dom, "c.example", 9) == 0))
		*id = 2;
	else if (len == 4 && memcmp(dom, "fail", 4) == 0)
		return -EIO;
	else
		*id = 99;
	return 0;
}

static void test_group(void)
{
	struct spool_rcpt_entry r[] = {
		{ .addr = "x@b.example" },
		{ .addr = "y@a.example" },
		{ .addr = "z@c.example" },
		{ .addr = "w@b.example", .state = SPOOL_RCPT_DELIVERED },
		{ .addr = "v@a.example", .next_attempt_unix = 500 },
		{ .addr = "\"q@uoted\"@a.example" },
		{ .addr = "u@b.example" },
		{ .addr = "postmaster" },
		{ .addr = "t@a.example", .state = SPOOL_RCPT_FAILED },
	};
	const size_t n = sizeof(r) / sizeof(r[0]);
	struct queue_slot slots[sizeof(r) / sizeof(r[0])];
	struct queue_txn txns[sizeof(r) / sizeof(r[0])];
	size_t ns, nt;
	int rc;

	T_CASE("group by next hop, limit 2");
	lookup_calls = 0;
	rc = queue_group(r, n, 100, 2, test_lookup, NULL, slots, &ns, txns, n, &nt);
	T_EQ_INT(rc, 0);
	T_EQ_INT(lookup_calls, 6);	/* only the due recipients */
	T_EQ_INT(ns, 6);
	/* dest 1: y(1), quoted(5); dest 2: x(0), z(2), u(6); dest 99: postmaster(7) */
	T_EQ_INT(nt, 4);
	if (nt == 4 && ns == 6) {
		T_EQ_INT(txns[0].dest_id, 1);
		T_EQ_INT(txns[0].n_rcpts, 2);
		T_EQ_INT(slots[txns[0].first].rcpt, 1);
		T_EQ_INT(slots[txns[0].first + 1].rcpt, 5);
		T_EQ_INT(txns[1].dest_id, 2);
		T_EQ_INT(txns[1].n_rcpts, 2);
		T_EQ_INT(slots[txns[1].first].rcpt, 0);
		T_EQ_INT(slots[txns[1].first + 1].rcpt, 2);
		T_EQ_INT(txns[2].dest_id, 2);
		T_EQ_INT(txns[2].n_rcpts, 1);
		T_EQ_INT(slots[txns[2].first].rcpt, 6);
		T_EQ_INT(txns[3].dest_id, 99);
		T_EQ_INT(slots[txns[3].first].rcpt, 7);
	}

	T_CASE("later: the deferred recipient becomes due, limit 50");
	rc = queue_group(r, n, 500, 50, test_lookup, NULL, slots, &ns, txns, n, &nt);
	T_EQ_INT(rc, 0);
	T_EQ_INT(ns, 7);
	T_EQ_INT(nt, 3);
	T_EQ_INT(txns[0].n_rcpts, 3);
	T_EQ_INT(txns[1].n_rcpts, 3);

	T_CASE("limit 0 taken as 1");
	rc = queue_group(r, n, 100, 0, test_lookup, NULL, slots, &ns, txns, n, &nt);
	T_EQ_INT(rc, 0);
	T_EQ_INT(nt, 6);

	T_CASE("txn_cap too small");
	rc = queue_group(r, n, 100, 1, test_lookup, NULL, slots, &ns, txns, 2, &nt);
	T_EQ_INT(rc, -ENOSPC);
	T_EQ_INT(nt, 6);

	T_CASE("nothing due");
	rc = queue_group(r, n, -1, 5, test_lookup, NULL, slots, &ns, txns, n, &nt);
	T_EQ_INT(rc, 0);
	T_EQ_INT(ns, 0);
	T_EQ_INT(nt, 0);

	T_CASE("lookup error is returned");
	{
		struct spool_rcpt_entry f[] = { { .addr = "a@a.example" }, { .addr = "b@fail" } };

		rc = queue_group(f, 2, 0, 5, test_lookup, NULL, slots, &ns, txns, n, &nt);
		T_EQ_INT(rc, -EIO);
		T_EQ_INT(nt, 0);
	}
}

/* a next-hop id from the first letter of the domain: 'a'..'e' */
static int letter_lookup(void *ctx, const char *dom, size_t len, uint64_t *id)
{
	(void)ctx;
	*id = len ? (uint64_t)(unsigned char)dom[0] : 0;
	return 0;
}

/* property: every due recipient lands in exactly one transaction, each
 * transaction has one destination and at most rcpt_limit recipients,
 * transactions of one destination are full but for the last one */
static void test_group_random(void)
{
	enum { N = 300 };
	static struct spool_rcpt_entry r[N];
	static char addrs[N][32];
	static struct queue_slot slots[N];
	static struct queue_txn txns[N];
	uint32_t x = 42;
	unsigned round, bad = 0;

	T_CASE("random recipients, every limit 1..60");
	for (round = 0; round < 200; round++) {
		unsigned limit = round % 60 + 1, seen[N] = { 0 };
		size_t i, t, n = (size_t)(round * 7 % N) + 1, ns, nt, due = 0;

		for (i = 0; i < n; i++) {
			x = x * 1664525u + 1013904223u;
			snprintf(addrs[i], sizeof(addrs[i]), "u%zu@%c.example", i, 'a' + (x >> 24) % 5);
			r[i].addr = addrs[i];
			r[i].state = (x >> 8) % 7 == 0 ? SPOOL_RCPT_DELIVERED : SPOOL_RCPT_PENDING;
			r[i].next_attempt_unix = (x >> 12) % 3 == 0 ? 1000 : 0;
			due += r[i].state == SPOOL_RCPT_PENDING && r[i].next_attempt_unix <= 500;
		}
		if (queue_group(r, n, 500, limit, letter_lookup, NULL, slots, &ns, txns, N, &nt) != 0 ||
		    ns != due)
			bad++;
		for (t = 0; t < nt; t++) {
			if (txns[t].n_rcpts == 0 || txns[t].n_rcpts > limit)
				bad++;
			if (t + 1 < nt && txns[t + 1].dest_id == txns[t].dest_id &&
			    txns[t].n_rcpts != limit)
				bad++;
			if (t + 1 < nt && txns[t + 1].first != txns[t].first + txns[t].n_rcpts)
				bad++;
			for (i = txns[t].first; i < txns[t].first + txns[t].n_rcpts; i++) {
				const char *at = strrchr(r[slots[i].rcpt].addr, '@');

				if (slots[i].dest_id != txns[t].dest_id ||
				    (uint64_t)(unsigned char)at[1] != txns[t].dest_id ||
				    r[slots[i].rcpt].state != SPOOL_RCPT_PENDING ||
				    r[slots[i].rcpt].next_attempt_unix > 500)
					bad++;
				seen[slots[i].rcpt]++;
			}
		}
		for (i = 0; i < n; i++)
			if (seen[i] > 1)
				bad++;
	}
	T_EQ_INT(bad, 0);
}

static void test_dest(void)
{
	struct queue_dest_policy p;
	struct queue_dest d;
	int i;

	queue_dest_policy_default(&p);
	queue_dest_init(&d);

	T_CASE("healthy destination");
	T_EQ_INT(queue_dest_is_dead(&d, &p, 0), false);
	T_EQ_INT(queue_dest_may_connect(&d, &p, 0, 7), true);

	T_CASE("below threshold stays alive");
	for (i = 0; i < 4; i++)
		queue_dest_failure(&d, &p, 1000);
	T_EQ_INT(queue_dest_is_dead(&d, &p, 1000), false);
	T_EQ_INT(queue_dest_may_connect(&d, &p, 1000, 3), true);

	T_CASE("threshold reached: held off for min_hold");
	queue_dest_failure(&d, &p, 1000);
	T_EQ_INT(queue_dest_is_dead(&d, &p, 1000), true);
	T_EQ_INT(queue_dest_is_dead(&d, &p, 1000 + 60 * S - 1), true);
	T_EQ_INT(queue_dest_may_connect(&d, &p, 1000 + 60 * S - 1, 0), false);
	T_EQ_INT(queue_dest_is_dead(&d, &p, 1000 + 60 * S), false);

	T_CASE("after the hold-off: one probe at a time");
	T_EQ_INT(queue_dest_may_connect(&d, &p, 1000 + 60 * S, 0), true);
	T_EQ_INT(queue_dest_may_connect(&d, &p, 1000 + 60 * S, 1), false);

	T_CASE("probe fails: hold doubles");
	queue_dest_failure(&d, &p, 100 * S);
	T_EQ_INT(d.hold_ms, 120 * S);
	T_EQ_INT(d.hold_until_ms, 100 * S + 120 * S);

	T_CASE("hold doubles up to max_hold");
	for (i = 0; i < 20; i++)
		queue_dest_failure(&d, &p, 200 * S);
	T_EQ_INT(d.hold_ms, 60 * M);
	T_EQ_INT(d.hold_until_ms, 200 * S + 60 * M);

	T_CASE("success clears the record");
	queue_dest_success(&d);
	T_EQ_INT(d.n_failures, 0);
	T_EQ_INT(queue_dest_is_dead(&d, &p, 200 * S), false);
	T_EQ_INT(queue_dest_may_connect(&d, &p, 200 * S, 5), true);

	T_CASE("threshold 0 taken as 1, max < min taken as min");
	p.threshold = 0;
	p.min_hold_ms = 10 * S;
	p.max_hold_ms = 1;
	queue_dest_failure(&d, &p, 0);
	T_EQ_INT(queue_dest_is_dead(&d, &p, 0), true);
	T_EQ_INT(d.hold_ms, 10 * S);
	queue_dest_failure(&d, &p, 0);
	T_EQ_INT(d.hold_ms, 10 * S);

	T_CASE("hold saturates at INT64_MAX");
	queue_dest_failure(&d, &p, INT64_MAX - 5);
	T_EQ_INT(d.hold_until_ms, INT64_MAX);
}

int main(void)
{
	test_schedule();
	test_expiry();
	test_expiry_time();
	test_delay_warning();
	test_status_valid();
	test_classify_reply();
	test_classify_fault();
	test_fault_from_errno();
	test_group();
	test_group_random();
	test_dest();
	return t_done();
}
