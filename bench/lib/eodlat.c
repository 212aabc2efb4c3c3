/*
 * eodlat - end-of-data latency of an SMTP server under a fixed, open-loop load.
 *
 * Usage: eodlat [-h host] -p port [-c conns] -r msgs_per_s -n msgs [-l bytes]
 *               [-f sender] [-t rcpt]
 *
 * Owns:     conns client sessions (reused, PIPELINING for MAIL/RCPT/DATA),
 *           one epoll loop, one array of latency samples.
 * Measures: for each message, the time from writing the last byte of
 *           "<CRLF>.<CRLF>" to reading the complete 250 reply: the cost of
 *           the server making the message durable. Messages are started on
 *           a fixed schedule (message i is due at i/rate s); a message that
 *           finds no idle session waits and is counted as "late", so an
 *           overloaded server shows up as late > 0 rather than as a
 *           silently lower offered rate (late = started > 1 ms after
 *           its slot).
 * Output:   one line: `eodlat: n=... ok=... err=... late=... rate=... p50_ms=...
 *           p90_ms=... p99_ms=... p999_ms=... max_ms=...` on stdout.
 * Exit:     0, 1 on usage or connection errors, 2 if any reply was not the
 *           expected 2xx/3xx.
 * Standards: RFC 5321 (replies), RFC 2920 (MAIL/RCPT/DATA in one group).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* EODLAT_BUF_BYTES - reply buffer; EHLO replies are well under 1 KiB. */
#define EODLAT_BUF_BYTES 4096
#define EODLAT_MAX_CONNS 4096

enum state { S_BANNER, S_EHLO, S_IDLE, S_ENVELOPE, S_EOD };

struct conn {
	int fd;
	enum state st;
	int want;             /* final reply lines still expected */
	char buf[EODLAT_BUF_BYTES];
	size_t len;
	int64_t t_eod_ns;
};

static const char *host = "127.0.0.1";
static const char *sender = "bench@test.invalid";
static const char *rcpt = "sink@example.com";
static char *body;
static size_t body_len;
static char envelope[512];
static int64_t *lat_ns;
static long n_lat, n_err, n_late;

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* send_all - blocking-ish write of a small request (sockets are blocking). */
static int send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* make_body - headers + body_len bytes of text in 78-byte lines + CRLF.CRLF */
static void make_body(size_t len)
{
	size_t cap = len + len / 76 * 2 + 512, n = 0;
	body = malloc(cap);
	if (!body) {
		perror("malloc");
		exit(1);
	}
	n += (size_t)snprintf(body + n, cap - n,
			      "From: <%s>\r\nTo: <%s>\r\nSubject: eodlat\r\n\r\n",
			      sender, rcpt);
	for (size_t i = 0; i < len; i++) {
		body[n++] = (char)('a' + i % 26);
		if (i % 76 == 75) {
			body[n++] = '\r';
			body[n++] = '\n';
		}
	}
	n += (size_t)snprintf(body + n, cap - n, "\r\n.\r\n");
	body_len = n;
}

static int open_conn(struct conn *c, int ep, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct epoll_event ev = { .events = EPOLLIN };
	int one = 1;

	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "eodlat: bad IPv4 address %s\n", host);
		return -1;
	}
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("eodlat: connect");
		return -1;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->st = S_BANNER;
	c->want = 1;
	c->len = 0;
	ev.data.ptr = c;
	return epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/*
 * on_reply - one complete final reply line arrived with code; advance.
 * Returns 0, or -1 when the session is unusable.
 */
static int on_reply(struct conn *c, int code, int64_t t)
{
	switch (c->st) {
	case S_BANNER:
		if (code != 220)
			goto bad;
		c->st = S_EHLO;
		c->want = 1;
		return send_all(c->fd, "EHLO eodlat.test.invalid\r\n", 26);
	case S_EHLO:
		if (code != 250)
			goto bad;
		c->st = S_IDLE;
		return 0;
	case S_ENVELOPE:
		if (code != (c->want == 1 ? 354 : 250))
			goto bad;
		if (--c->want > 0)
			return 0;
		c->st = S_EOD;
		c->want = 1;
		if (send_all(c->fd, body, body_len) < 0)
			return -1;
		c->t_eod_ns = now_ns();
		return 0;
	case S_EOD:
		if (code != 250)
			goto bad;
		lat_ns[n_lat++] = t - c->t_eod_ns;
		c->st = S_IDLE;
		return 0;
	case S_IDLE:
		break;
	}
bad:
	n_err++;
	fprintf(stderr, "eodlat: unexpected reply %d in state %d\n", code, (int)c->st);
	c->st = S_IDLE;
	return send_all(c->fd, "RSET\r\n", 6) < 0 ? -1 : 0;
}

/* on_readable - read and split reply lines; final lines call on_reply. */
static int on_readable(struct conn *c)
{
	ssize_t r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
	int64_t t = now_ns();
	char *nl;

	if (r <= 0) {
		fprintf(stderr, "eodlat: server closed a session\n");
		return -1;
	}
	c->len += (size_t)r;
	while ((nl = memchr(c->buf, '\n', c->len)) != NULL) {
		size_t ln = (size_t)(nl - c->buf) + 1;
		if (ln >= 4 && c->buf[3] != '-') {
			int code = atoi(c->buf);
			memmove(c->buf, c->buf + ln, c->len - ln);
			c->len -= ln;
			if (on_reply(c, code, t) < 0)
				return -1;
			continue;
		}
		memmove(c->buf, c->buf + ln, c->len - ln);
		c->len -= ln;
	}
	if (c->len == sizeof(c->buf))
		c->len = 0;     /* an absurd line: drop it */
	return 0;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static double pct_ms(double p)
{
	long i;
	if (n_lat == 0)
		return 0;
	i = (long)(p * (double)(n_lat - 1) + 0.5);
	return (double)lat_ns[i] / 1e6;
}

int main(int argc, char **argv)
{
	int port = 0, n_conns = 20, opt, ep;
	long n_msgs = 1000, started = 0;
	double rate = 100;
	size_t len = 1024;
	struct conn *conns;
	int64_t t0, t_end;

	while ((opt = getopt(argc, argv, "h:p:c:r:n:l:f:t:")) != -1) {
		switch (opt) {
		case 'h': host = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'c': n_conns = atoi(optarg); break;
		case 'r': rate = atof(optarg); break;
		case 'n': n_msgs = atol(optarg); break;
		case 'l': len = (size_t)atol(optarg); break;
		case 'f': sender = optarg; break;
		case 't': rcpt = optarg; break;
		default:
			fprintf(stderr, "usage: eodlat [-h host] -p port [-c conns] -r rate -n msgs"
				" [-l bytes] [-f from] [-t to]\n");
			return 1;
		}
	}
	if (port <= 0 || n_conns <= 0 || n_conns > EODLAT_MAX_CONNS || rate <= 0 || n_msgs <= 0) {
		fprintf(stderr, "eodlat: need -p port, 0 < -c <= %d, -r > 0, -n > 0\n",
			EODLAT_MAX_CONNS);
		return 1;
	}
	snprintf(envelope, sizeof(envelope), "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n",
		 sender, rcpt);
	make_body(len);
	lat_ns = calloc((size_t)n_msgs, sizeof(*lat_ns));
	conns = calloc((size_t)n_conns, sizeof(*conns));
	ep = epoll_create1(0);
	if (!lat_ns || !conns || ep < 0) {
		perror("eodlat: setup");
		return 1;
	}
	for (int i = 0; i < n_conns; i++)
		if (open_conn(&conns[i], ep, port) < 0)
			return 1;
	/* wait until every session has said EHLO */
	for (int ready = 0; ready < n_conns;) {
		struct epoll_event evs[64];
		int n = epoll_wait(ep, evs, 64, 10000);
		if (n <= 0) {
			fprintf(stderr, "eodlat: sessions not ready within 10 s\n");
			return 1;
		}
		for (int i = 0; i < n; i++)
			if (on_readable(evs[i].data.ptr) < 0)
				return 1;
		ready = 0;
		for (int i = 0; i < n_conns; i++)
			ready += conns[i].st == S_IDLE;
	}

	t0 = now_ns();
	while (n_lat + n_err < n_msgs) {
		struct epoll_event evs[64];
		int64_t t = now_ns(), due = t0 + (int64_t)((double)started * 1e9 / rate);
		struct timespec timeout = { 10, 0 };
		int n;

		/* start every message that is due, on idle sessions */
		while (started < n_msgs && now_ns() >= due) {
			struct conn *idle = NULL;
			for (int i = 0; i < n_conns; i++)
				if (conns[i].st == S_IDLE) {
					idle = &conns[i];
					break;
				}
			if (!idle)
				break;
			if (now_ns() - due > 1000000)
				n_late++;   /* started > 1 ms after its slot */
			idle->st = S_ENVELOPE;
			idle->want = 3;
			if (send_all(idle->fd, envelope, strlen(envelope)) < 0) {
				perror("eodlat: send");
				return 1;
			}
			started++;
			due = t0 + (int64_t)((double)started * 1e9 / rate);
		}
		/*
		 * Sleep until the next slot, to the nanosecond: a timeout in
		 * whole milliseconds rounds the sub-millisecond gaps between
		 * slots down to 0 and turns this loop into a busy poll that
		 * takes a CPU from the server it measures.
		 */
		if (started < n_msgs) {
			t = now_ns();
			timeout.tv_sec = due > t ? (due - t) / 1000000000 : 0;
			timeout.tv_nsec = due > t ? (due - t) % 1000000000 : 0;
		}
		n = epoll_pwait2(ep, evs, 64, &timeout, NULL);
		if (n < 0 && errno != EINTR) {
			perror("eodlat: epoll_wait");
			return 1;
		}
		if (n == 0 && started >= n_msgs) {
			fprintf(stderr, "eodlat: no reply for 10 s\n");
			break;
		}
		for (int i = 0; i < n; i++)
			if (on_readable(evs[i].data.ptr) < 0)
				return 1;
	}
	t_end = now_ns();
	for (int i = 0; i < n_conns; i++) {
		send_all(conns[i].fd, "QUIT\r\n", 6);
		close(conns[i].fd);
	}
	qsort(lat_ns, (size_t)n_lat, sizeof(*lat_ns), cmp_i64);
	printf("eodlat: n=%ld ok=%ld err=%ld late=%ld rate=%.1f p50_ms=%.3f p90_ms=%.3f"
	       " p99_ms=%.3f p999_ms=%.3f max_ms=%.3f\n",
	       n_msgs, n_lat, n_err, n_late, (double)n_lat * 1e9 / (double)(t_end - t0),
	       pct_ms(0.50), pct_ms(0.90), pct_ms(0.99), pct_ms(0.999),
	       n_lat ? (double)lat_ns[n_lat - 1] / 1e6 : 0.0);
	return n_err ? 2 : 0;
}
