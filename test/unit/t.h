/*
 * t.h - the unit-test harness: named table cases, "got X, want Y" failures,
 * a closing "N passed, N failed" line, exit 1 on any failure. Header-only.
 */
#ifndef RINGMTA_TEST_T_H
#define RINGMTA_TEST_T_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int t_passed, t_failed;
static const char *t_case = "";

#define T_CASE(name) (t_case = (name))

#define T_CHECK(cond, ...) do { \
	if (cond) { t_passed++; } else { t_failed++; \
		fprintf(stderr, "FAIL %s:%d [%s] ", __FILE__, __LINE__, t_case); \
		fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } \
} while (0)

#define T_EQ_INT(got, want) do { long long g_ = (long long)(got), w_ = (long long)(want); \
	T_CHECK(g_ == w_, "%s: got %lld, want %lld", #got, g_, w_); } while (0)

#define T_EQ_STR(got, want) do { const char *g_ = (got), *w_ = (want); \
	T_CHECK(g_ && w_ && strcmp(g_, w_) == 0, "%s: got \"%s\", want \"%s\"", \
		#got, g_ ? g_ : "(null)", w_ ? w_ : "(null)"); } while (0)

#define T_EQ_MEM(got, glen, want, wlen) do { \
	T_CHECK((size_t)(glen) == (size_t)(wlen) && memcmp((got), (want), (wlen)) == 0, \
		"%s: got \"%.*s\", want \"%.*s\"", #got, (int)(glen), (const char *)(got), \
		(int)(wlen), (const char *)(want)); } while (0)

/*
 * t_guard_copy - copy len bytes so that they end exactly before a PROT_NONE
 * page: any read past the end faults. Free with t_guard_free.
 */
static inline void *t_guard_copy(const void *p, size_t len, void **base, size_t *maplen)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	size_t pages = (len + pg - 1) / pg + 1;
	char *m = mmap(NULL, pages * pg, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) { perror("mmap"); exit(2); }
	mprotect(m + (pages - 1) * pg, pg, PROT_NONE);
	char *dst = m + (pages - 1) * pg - len;
	memcpy(dst, p, len);
	*base = m;
	*maplen = pages * pg;
	return dst;
}

static inline void t_guard_free(void *base, size_t maplen)
{
	munmap(base, maplen);
}

static inline int t_done(void)
{
	printf("%d passed, %d failed\n", t_passed, t_failed);
	return t_failed ? 1 : 0;
}

#endif
