/*
 * test_maps_live - unit tests for maps_live: loading the map files named
 * by a configuration (good, bad line, missing, too big, none), the empty
 * set before the first publish, and the grace period of a swap against
 * fake reactors whose loop counters a thread moves (the old set survives
 * until every counter moved on by MAPS_LIVE_GRACE_LOOPS; a stuck reactor
 * makes the swap time out and the old set wait for a later one).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ringmta/conf.h"
#include "ringmta/maps_live.h"

#include "t.h"

static char dir[] = "/tmp/test_maps_live.XXXXXX";

/* put - write text to dir/name; returns the path (static storage per name). */
static const char *put(const char *name, const char *text, size_t len)
{
	static char paths[8][256];
	static unsigned n;
	char *p = paths[n++ % 8];
	FILE *f;

	snprintf(p, 256, "%s/%s", dir, name);
	f = fopen(p, "wb");
	if (f == NULL || fwrite(text, 1, len, f) != len) {
		perror(p);
		exit(2);
	}
	fclose(f);
	return p;
}

static const struct load_case {
	const char *name;
	const char *transport, *rcpt;   /* file text, NULL: key empty */
	int want;
	const char *want_msg;           /* after the dir prefix */
	size_t routes, rcpts;
} load_cases[] = {
	{ "no maps", NULL, NULL, 0, NULL, 0, 0 },
	{ "both maps", "example.com smtp:[h.example]\n* smtp:h.example\n",
	  "a@example.com\n@b.example\n", 0, NULL, 2, 2 },
	{ "empty files", "", "", 0, NULL, 0, 0 },
	{ "bad transport line", "example.com smtp:[h.example]\nx.example\n",
	  "a@example.com\n", -EINVAL,
	  "/transport:2: \"x.example\": missing next hop (lines are DOMAIN NEXTHOP)",
	  0, 0 },
	{ "bad recipients line", NULL, "# list\na@example.com\nbob\n", -EINVAL,
	  "/rcpt:3: \"bob\": no '@' (lines are local@domain or @domain)", 0, 0 },
};

static void test_load(void)
{
	size_t i, dl = strlen(dir);

	for (i = 0; i < sizeof(load_cases) / sizeof(load_cases[0]); i++) {
		const struct load_case *tc = &load_cases[i];
		struct rm_err err = { 0, "" };
		struct maps_set *s = NULL;
		struct conf c;
		int rc;

		T_CASE(tc->name);
		conf_defaults(&c, &err);
		if (tc->transport)
			snprintf(c.transport_map, sizeof(c.transport_map), "%s",
				 put("transport", tc->transport, strlen(tc->transport)));
		if (tc->rcpt)
			snprintf(c.relay_recipients, sizeof(c.relay_recipients), "%s",
				 put("rcpt", tc->rcpt, strlen(tc->rcpt)));
		rc = maps_live_load(&c, &s, &err);
		T_EQ_INT(rc, tc->want);
		if (rc < 0) {
			T_CHECK(s == NULL, "got a set, want NULL");
			T_CHECK(strncmp(err.msg, dir, dl) == 0, "got \"%s\", want it "
				"to start with %s", err.msg, dir);
			T_EQ_STR(err.msg + (strncmp(err.msg, dir, dl) ? 0 : dl),
				 tc->want_msg);
		} else if (s != NULL) {
			T_EQ_INT(maps_transport_count(s->transport), tc->routes);
			T_EQ_INT(maps_rcpt_count(s->rcpt), tc->rcpts);
			T_CHECK((s->transport != NULL) == (tc->transport != NULL),
				"transport map present: got %d", s->transport != NULL);
			T_CHECK((s->rcpt != NULL) == (tc->rcpt != NULL),
				"recipient table present: got %d", s->rcpt != NULL);
		}
		maps_live_free(s);
		conf_fini(&c);
	}
	{
		struct rm_err err = { 0, "" };
		struct maps_set *s = (struct maps_set *)1;
		char want[512];
		struct conf c;
		FILE *f;

		T_CASE("missing file");
		conf_defaults(&c, &err);
		snprintf(c.relay_recipients, sizeof(c.relay_recipients),
			 "%s/nonexistent", dir);
		T_EQ_INT(maps_live_load(&c, &s, &err), -ENOENT);
		T_CHECK(s == NULL, "got a set, want NULL");
		snprintf(want, sizeof(want), "maps: open %s/nonexistent: %s", dir,
			 strerror(ENOENT));
		T_EQ_STR(err.msg, want);

		T_CASE("file over the cap: -EFBIG before reading it");
		snprintf(c.relay_recipients, sizeof(c.relay_recipients), "%s/big",
			 dir);
		c.transport_map[0] = '\0';
		f = fopen(c.relay_recipients, "wb");
		if (f == NULL || ftruncate(fileno(f), MAPS_RCPT_MAX_FILE_BYTES + 1L) < 0)
			exit(2);
		fclose(f);
		T_EQ_INT(maps_live_load(&c, &s, &err), -EFBIG);
		snprintf(want, sizeof(want), "maps: %s/big: larger than %u bytes",
			 dir, MAPS_RCPT_MAX_FILE_BYTES);
		T_EQ_STR(err.msg, want);
		unlink(c.relay_recipients);

		T_CASE("generations count up");
		c.relay_recipients[0] = '\0';
		{
			struct maps_set *a = NULL, *b = NULL;
			maps_live_load(&c, &a, &err);
			maps_live_load(&c, &b, &err);
			T_CHECK(a && b && b->generation == a->generation + 1,
				"got %llu then %llu, want consecutive",
				a ? (unsigned long long)a->generation : 0ULL,
				b ? (unsigned long long)b->generation : 0ULL);
			maps_live_free(a);
			maps_live_free(b);
		}
		conf_fini(&c);
	}
}

/* ---- swaps against fake reactors ------------------------------------- */

/* struct ticker - a thread that moves fake loop counters every period. */
struct ticker {
	struct reactor *r;
	size_t n;
	long period_ms;
	atomic_bool stop;
	pthread_t thread;
};

static void *tick_main(void *arg)
{
	struct ticker *t = arg;
	struct timespec ts = { 0, t->period_ms * 1000000L };

	while (!atomic_load(&t->stop)) {
		nanosleep(&ts, NULL);
		for (size_t i = 0; i < t->n; i++)
			atomic_fetch_add(&t->r[i].n_loops, 1);
	}
	return NULL;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* set_with - a set holding a one-address table, for identity checks. */
static struct maps_set *set_with(const char *addr)
{
	struct maps_set *s = calloc(1, sizeof(*s));
	struct rm_err err;

	if (s == NULL || maps_rcpt_parse("t", addr, strlen(addr), &s->rcpt,
					 &err) < 0)
		exit(2);
	return s;
}

static void test_swap(void)
{
	struct reactor *r = calloc(3, sizeof(*r));
	struct reactor *rp[3] = { &r[0], &r[1], &r[2] };
	struct ticker t = { .r = r, .n = 3, .period_ms = 50 };
	const struct maps_set *cur;
	double t0, took;
	int rc;

	if (r == NULL)
		exit(2);
	T_CASE("empty set before the first publish");
	cur = maps_current();
	T_CHECK(cur != NULL && cur->rcpt == NULL && cur->transport == NULL,
		"got %p, want the empty set", (const void *)cur);
	T_EQ_INT(maps_rcpt_lookup(cur->rcpt, "a@x.example", 11),
		 MAPS_RCPT_NO_ENTRIES_FOR_DOMAIN);

	T_CASE("publish");
	maps_live_publish(set_with("a@x.example"));
	T_EQ_INT(maps_rcpt_lookup(maps_current()->rcpt, "a@x.example", 11),
		 MAPS_RCPT_FOUND);

	T_CASE("replace waits until every reactor went round twice");
	atomic_init(&t.stop, false);
	pthread_create(&t.thread, NULL, tick_main, &t);
	t0 = now_ms();
	rc = maps_live_replace(set_with("b@x.example"), rp, 3, 5000);
	took = now_ms() - t0;
	T_EQ_INT(rc, 0);
	T_CHECK(took >= 2 * 50 - 10, "took %.0f ms, want >= 2 ticks (100 ms)", took);
	T_CHECK(took < 2000, "took %.0f ms, want well under the bound", took);
	T_EQ_INT(maps_rcpt_lookup(maps_current()->rcpt, "b@x.example", 11),
		 MAPS_RCPT_FOUND);
	T_EQ_INT(maps_rcpt_lookup(maps_current()->rcpt, "a@x.example", 11),
		 MAPS_RCPT_UNKNOWN);
	atomic_store(&t.stop, true);
	pthread_join(t.thread, NULL);

	T_CASE("a stuck reactor: -ETIMEDOUT, the new set is in use");
	t0 = now_ms();
	rc = maps_live_replace(set_with("c@x.example"), rp, 3, 100);
	took = now_ms() - t0;
	T_EQ_INT(rc, -ETIMEDOUT);
	T_CHECK(took >= 100 && took < 2000, "took %.0f ms, want about 100", took);
	T_EQ_INT(maps_rcpt_lookup(maps_current()->rcpt, "c@x.example", 11),
		 MAPS_RCPT_FOUND);

	T_CASE("the next completed swap frees the leftover too");
	t.n = 3;
	atomic_store(&t.stop, false);
	pthread_create(&t.thread, NULL, tick_main, &t);
	rc = maps_live_replace(set_with("d@x.example"), rp, 3, 5000);
	T_EQ_INT(rc, 0);
	atomic_store(&t.stop, true);
	pthread_join(t.thread, NULL);

	T_CASE("no reactors: no wait");
	T_EQ_INT(maps_live_replace(set_with("e@x.example"), rp, 0, 0), 0);

	T_CASE("a leftover is freed by fini (LeakSanitizer would tell)");
	T_EQ_INT(maps_live_replace(set_with("f@x.example"), rp, 3, 0), -ETIMEDOUT);
	maps_live_fini();
	T_CASE("fini: the empty set again");
	T_CHECK(maps_current()->rcpt == NULL, "got a table, want none");
	free(r);
}

int main(void)
{
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 2;
	}
	test_load();
	test_swap();
	unlink(put("transport", "", 0));
	unlink(put("rcpt", "", 0));
	rmdir(dir);
	return t_done();
}
