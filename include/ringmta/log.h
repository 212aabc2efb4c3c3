/*
 * log.h - one line per event, key=value, on stderr or syslog.
 *
 * Line format (STYLE.md, Logging):
 *   r<reactor> s=<16 hex session id> [q=<queue id>] <module>: <event> key=value ...
 * Lines are written whole, one write(2) for one or more lines, so threads
 * never interleave within a line. A reactor thread buffers its info and
 * debug lines (log_buffer_begin) and writes them at the end of each loop
 * iteration (log_flush), at most LOG_BUF_BYTES at a time (PIPE_BUF: atomic
 * on a pipe too); warnings and fatal lines flush what is buffered and go
 * out at once. Peer bytes must go through rm_printable() (util.h) before they reach
 * a log line; message bodies and AUTH payloads never do.
 */
#ifndef RINGMTA_LOG_H
#define RINGMTA_LOG_H

#include <stdbool.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_FATAL };

/* LOG_LINE_BYTES - a log line is cut at this length (incl. newline). */
#define LOG_LINE_BYTES 2048

/* LOG_BUF_BYTES - a thread's buffer of info and debug lines (PIPE_BUF). */
#define LOG_BUF_BYTES 4096

/* log_init - choose the sink: use_syslog false = stderr. ident for syslog. */
void log_init(bool use_syslog, const char *ident);
/* log_set_debug - enable or disable debug lines. */
void log_set_debug(bool on);

/*
 * log_msg - write one line at level lvl: the printf-style text, prefixed by
 * the level for warn and fatal. Never fails (a failed write is dropped).
 */
void log_msg(enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * log_buffer_begin - from now on this thread's info and debug lines to
 * stderr wait in its buffer until log_flush(), a warning, or a full
 * buffer. For event loops that call log_flush() before they block.
 */
void log_buffer_begin(void);
/* log_flush - write this thread's buffered lines now. */
void log_flush(void);

#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
