/*
 * log - key=value event lines on stderr or syslog.
 *
 * Owns: the choice of sink and the debug switch (process-wide, set once at
 *       start-up before the reactors run; read-only afterwards); each
 *       buffering thread's line buffer (thread-local).
 * Must not: block the caller on anything but write(2)/syslog(3).
 * Interface: include/ringmta/log.h
 * Limits: LOG_LINE_BYTES per line; longer lines are cut; LOG_BUF_BYTES
 *         buffered per thread.
 * Errors: none returned; a failed write is dropped (logging must never stop
 *         mail).
 */
#include "ringmta/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "ringmta/util.h"

static bool log_use_syslog;
static bool log_debug_on;

/* tl_buf - this thread's buffered lines, when it asked for buffering. */
static _Thread_local struct {
	bool is_on;
	size_t n;
	char b[LOG_BUF_BYTES];
} tl_buf;

void log_buffer_begin(void)
{
	tl_buf.is_on = true;
}

void log_flush(void)
{
	if (tl_buf.n == 0)
		return;
	(void)!write(STDERR_FILENO, tl_buf.b, tl_buf.n);
	tl_buf.n = 0;
}

void log_init(bool use_syslog, const char *ident)
{
	log_use_syslog = use_syslog;
	rm_panic_hook = log_flush;	/* a panic keeps the lines before it */
	if (use_syslog)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void log_set_debug(bool on)
{
	log_debug_on = on;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	static const int prio[] = { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_CRIT };
	char line[LOG_LINE_BYTES];
	size_t n = 0;
	va_list ap;
	int r;

	if (lvl == LOG_LVL_DEBUG && !log_debug_on)
		return;
	if (lvl == LOG_LVL_WARN)
		n = (size_t)snprintf(line, sizeof(line), "warning: ");
	else if (lvl == LOG_LVL_FATAL)
		n = (size_t)snprintf(line, sizeof(line), "fatal: ");
	va_start(ap, fmt);
	r = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (r < 0)
		return;
	n += (size_t)r;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	if (log_use_syslog) {
		line[n] = '\0';
		syslog(prio[lvl], "%s", line);
		return;
	}
	line[n++] = '\n';
	if (tl_buf.is_on && lvl <= LOG_LVL_INFO) {
		if (tl_buf.n + n > sizeof(tl_buf.b))
			log_flush();
		memcpy(tl_buf.b + tl_buf.n, line, n);
		tl_buf.n += n;
		return;
	}
	log_flush();	/* keep the order of this thread's lines */
	(void)!write(STDERR_FILENO, line, n);
}
