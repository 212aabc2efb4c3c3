/*
 * log - key=value event lines on stderr or syslog.
 *
 * Owns: the choice of sink and the debug switch (process-wide, set once at
 *       start-up before the reactors run; read-only afterwards).
 * Must not: block the caller on anything but one write(2)/syslog(3).
 * Interface: include/ringmta/log.h
 * Limits: LOG_LINE_BYTES per line; longer lines are cut.
 * Errors: none returned; a failed write is dropped (logging must never stop
 *         mail).
 */
#include "ringmta/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

static bool log_use_syslog;
static bool log_debug_on;

void log_init(bool use_syslog, const char *ident)
{
	log_use_syslog = use_syslog;
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
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}
