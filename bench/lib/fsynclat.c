/*
 * fsynclat - fdatasync latency of appending to a file vs writing into a
 * zero-filled (preallocated) region of it: the measurement behind
 * spool_preallocate.
 *
 * Usage: fsynclat [DIR [N [BYTES]]]   (defaults: /var/tmp, 2000, 10240)
 *
 * For each mode it writes N records of BYTES at increasing offsets, one
 * fdatasync after each, with a 0.7 ms pause between (well below the flush
 * rates that stall some VMs, see flushstall.c), and prints p50/p90/p99 of
 * the fdatasync alone. "append" grows the file, so each fdatasync must
 * also write the inode (size, block map); "prealloc" first writes zeros
 * over the whole range and syncs them, so each fdatasync flushes data
 * pages only. The two modes alternate twice.
 *
 * Build: cc -O2 -o fsynclat bench/lib/fsynclat.c
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int run(const char *dir, int n, size_t bytes, int prealloc)
{
	char path[4096];
	char *buf = malloc(bytes), *zero = calloc(1, 1 << 16);
	double *lat = malloc((size_t)n * sizeof(*lat));
	off_t off = 0, total = (off_t)n * (off_t)bytes;
	int fd;

	if (buf == NULL || zero == NULL || lat == NULL)
		return -1;
	memset(buf, 'x', bytes);
	snprintf(path, sizeof(path), "%s/fsynclat.%d", dir, (int)getpid());
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		perror(path);
		return -1;
	}
	unlink(path);
	if (prealloc) {
		for (off_t o = 0; o < total + (1 << 16); o += 1 << 16)
			if (pwrite(fd, zero, 1 << 16, o) != 1 << 16) {
				perror("pwrite zeros");
				return -1;
			}
		if (fdatasync(fd) < 0) {
			perror("fdatasync");
			return -1;
		}
	}
	for (int i = 0; i < n; i++) {
		double t;
		if (pwrite(fd, buf, bytes, off) != (ssize_t)bytes) {
			perror("pwrite");
			return -1;
		}
		off += (off_t)bytes;
		t = now_ms();
		if (fdatasync(fd) < 0) {
			perror("fdatasync");
			return -1;
		}
		lat[i] = now_ms() - t;
		usleep(700);
	}
	close(fd);
	qsort(lat, (size_t)n, sizeof(*lat), cmp);
	printf("fsynclat: mode=%-8s n=%d bytes=%zu fdatasync p50=%.3f p90=%.3f p99=%.3f ms\n",
	       prealloc ? "prealloc" : "append", n, bytes, lat[n / 2], lat[n * 9 / 10],
	       lat[n * 99 / 100]);
	free(buf);
	free(zero);
	free(lat);
	return 0;
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/var/tmp";
	int n = argc > 2 ? atoi(argv[2]) : 2000;
	size_t bytes = argc > 3 ? (size_t)atol(argv[3]) : 10240;

	if (n < 10 || bytes == 0) {
		fprintf(stderr, "usage: fsynclat [DIR [N>=10 [BYTES>0]]]\n");
		return 2;
	}
	for (int rep = 0; rep < 2; rep++)
		if (run(dir, n, bytes, 0) < 0 || run(dir, n, bytes, 1) < 0)
			return 1;
	return 0;
}
