/*
 * flushstall - does flushing the disk at a given rate stall the machine?
 *
 * One thread appends small records to a file and fdatasyncs it RATE
 * times a second (0: back to back) for SECONDS; another thread only reads
 * the clock in a loop and counts the gaps between two readings (a gap
 * means it did not run: preempted, or the whole guest was paused). On a
 * quiet machine the spinner sees no gaps over 2 ms. bench/README.md
 * ("Why the p99 was 10-14 ms") quotes what this showed on the
 * development VM: stalls of 10-15 ms above about 2,000 flushes a second,
 * which is why ringmta has fsync_rate_limit.
 *
 * Usage: flushstall RATE SECONDS [FILE]   (FILE default /var/tmp/flushstall.dat,
 *        created, appended to, removed at the end)
 * Build: cc -O2 -pthread -o flushstall bench/lib/flushstall.c
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RECORD_BYTES 1400
#define RECORDS_PER_FLUSH 3

static atomic_bool stop;

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

struct spin {
	int64_t over2, over5, over10, max, stalled;
};

static void *spinner(void *arg)
{
	struct spin *s = arg;
	int64_t last = now_ns();

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		int64_t t = now_ns(), gap = t - last;

		last = t;
		if (gap <= 2000000)
			continue;
		s->over2++;
		if (gap > 5000000) {
			s->over5++;
			s->stalled += gap;
		}
		if (gap > 10000000)
			s->over10++;
		if (gap > s->max)
			s->max = gap;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	const char *path = argc > 3 ? argv[3] : "/var/tmp/flushstall.dat";
	char rec[RECORD_BYTES];
	struct spin s = { 0, 0, 0, 0, 0 };
	pthread_t th;
	int64_t *lat, t0, t_end, next;
	long rate, secs, cap, n = 0;
	off_t off = 0;
	int fd;

	if (argc < 3 || (rate = atol(argv[1])) < 0 || (secs = atol(argv[2])) <= 0) {
		fprintf(stderr, "usage: flushstall RATE SECONDS [FILE]\n");
		return 2;
	}
	cap = (rate ? rate : 20000) * secs + 1;
	if ((lat = malloc((size_t)cap * sizeof(*lat))) == NULL) {
		perror("flushstall: malloc");
		return 1;
	}
	if ((fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
		perror(path);
		return 1;
	}
	memset(rec, 'x', sizeof(rec));
	if (pthread_create(&th, NULL, spinner, &s) != 0) {
		fprintf(stderr, "flushstall: pthread_create failed\n");
		return 1;
	}
	t0 = now_ns();
	t_end = t0 + (int64_t)secs * 1000000000;
	next = t0;
	while (now_ns() < t_end && n < cap) {
		if (rate > 0) {
			int64_t wait = next - now_ns();
			if (wait > 0) {
				struct timespec ts = { wait / 1000000000, wait % 1000000000 };
				nanosleep(&ts, NULL);
			}
			next += 1000000000 / rate;
		}
		for (int i = 0; i < RECORDS_PER_FLUSH; i++, off += RECORD_BYTES)
			if (pwrite(fd, rec, sizeof(rec), off) != (ssize_t)sizeof(rec)) {
				perror("flushstall: pwrite");
				return 1;
			}
		int64_t a = now_ns();
		if (fdatasync(fd) < 0) {
			perror("flushstall: fdatasync");
			return 1;
		}
		lat[n++] = now_ns() - a;
	}
	atomic_store(&stop, true);
	pthread_join(th, NULL);
	close(fd);
	unlink(path);
	qsort(lat, (size_t)n, sizeof(*lat), cmp_i64);
	printf("flushstall: rate=%ld/s (asked %ld) flushes=%ld fdatasync p50=%.3f p99=%.3f "
	       "p99.9=%.3f max=%.3f ms; spinner gaps >2ms=%lld >5ms=%lld >10ms=%lld "
	       "max=%.1f ms, time in >5ms gaps %.2f%%\n",
	       n / secs, rate, n, lat[n / 2] / 1e6, lat[n * 99 / 100] / 1e6,
	       lat[n * 999 / 1000] / 1e6, lat[n - 1] / 1e6, (long long)s.over2,
	       (long long)s.over5, (long long)s.over10, s.max / 1e6,
	       100.0 * (double)s.stalled / ((double)secs * 1e9));
	free(lat);
	return 0;
}
