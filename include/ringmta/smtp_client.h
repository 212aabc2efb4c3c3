/*
 * smtp_client.h - the outbound SMTP/LMTP client state machine, sans-I/O.
 *
 * The mirror of smtp_server.h. The host (the delivery engine, or
 * `ringmta-bench send`) owns the socket, TLS, the clock and the message
 * bytes; this module owns the protocol. One connection:
 *
 *     smtp_client_init(c, &lim);         expects the greeting
 *     loop:
 *         send smtp_client_output() / smtp_client_output_done()
 *         k = smtp_client_next(c, &ev);
 *         NEED_MORE     a reply is outstanding: read, smtp_client_feed()
 *         FLUSH         output full: send it, output_done(), then _next
 *         STARTTLS      "220 ready": start TLS on the socket, then
 *                       smtp_client_tls_done() (TLS_WAIT until then)
 *         READY         EHLO done: ev.caps; a WAIT (TXN) follows
 *         WAIT          ev.wait says for what:
 *             TXN       idle: smtp_client_begin_txn(), _rset() or _quit()
 *             NEXT      (use_pipelining_next) the next transaction may
 *                       begin_txn() now, behind this one's end of data;
 *                       or call _next to go on without
 *             BODY      smtp_client_body() with the next message bytes
 *             TLS       smtp_client_tls_done()
 *         MAIL_RESULT, RCPT_RESULT, DATA_RESULT   record ev.reply
 *         TXN_DONE      the transaction is over: ev.done
 *         CLOSED        QUIT answered (or EOF after QUIT): close
 *         FAILED        sticky: send what output holds (maybe QUIT), close
 *     smtp_client_fini(c);
 *
 * Who gets which reply. For each recipient of a transaction, in order:
 *  - MAIL refused (MAIL_RESULT code >= 400): that reply applies to every
 *    recipient; no RCPT_RESULT or DATA_RESULT follows.
 *  - RCPT refused (RCPT_RESULT code >= 400): that reply.
 *  - otherwise the DATA_RESULT for it: with ev.is_all (SMTP; or a refused
 *    DATA/BDAT command, also in LMTP) it applies to every accepted
 *    recipient; without it (LMTP end of data, RFC 2033 4.2) it is the
 *    reply for recipient ev.rcpt_index.
 *  - FAILED before any of these: no answer, i.e. deferred; ev.reply (the
 *    421, when there is one) says why.
 *
 * Pipelining (RFC 2920): when the peer offers PIPELINING and
 * lim.use_pipelining, MAIL, every RCPT and DATA go out in one batch (at
 * most SMTP_CLIENT_PIPE_MAX commands in flight; the rest follow as replies
 * come in); otherwise each command waits for the previous reply. DATA is
 * sent only when some RCPT was accepted, except when pipelined: then a 354
 * with no accepted recipient is answered with a lone "." (RFC 2920 3.1),
 * and a 554/503 is expected and not reported (a 354 after a refused MAIL
 * gets the same dot). When MAIL was accepted but the message was not sent
 * (every RCPT, DATA or a BDAT chunk refused, or a host abort) the client
 * sends RSET before TXN_DONE; a refused RSET fails the connection (its
 * state is unknown).
 *
 * Across transactions (lim.use_pipelining_next, with PIPELINING): once
 * a message's end of data ("." or BDAT LAST) is written and its reply is
 * the only one outstanding, _next offers WAIT NEXT. A begin_txn() then
 * writes the next transaction's MAIL, RCPTs and DATA right behind the
 * end of data, in the same send (RFC 2920 3.1: message content may be
 * the first "command" of a group), saving a round trip per message.
 * Events stay in reply order: the first transaction's DATA_RESULT(s)
 * and TXN_DONE come before any event of the next; ev.txn says which
 * transaction an event is for. A FAILED then concerns both. Calling
 * _next instead of begin_txn() declines; the offer is not repeated.
 *
 * Chunking (RFC 3030): when offered and lim.use_chunking, the body goes out
 * as BDAT chunks (no dot-stuffing), after the MAIL/RCPT replies are in;
 * with PIPELINING up to SMTP_CLIENT_BDAT_WINDOW chunks are in flight.
 * A refused chunk ends the transaction: body() takes nothing more, and
 * RSET then TXN_DONE follow once the outstanding replies are in.
 *
 * Input is parsed only while a reply is outstanding, in command order,
 * one reply per event. Bytes that arrive when nothing is outstanding wait
 * in the input buffer and are taken as the reply to the next command (a
 * server's unsolicited 421 on an idle connection thus fails the next
 * command, as in Postfix). While the host can act (WAIT) the client does
 * not parse ahead; so the same server bytes, fed in any split whenever
 * _next returns NEED_MORE, give the same events and the same output
 * (tested at every offset).
 *
 * Output: commands and body bytes go into a fixed ring buffer
 * (SMTP_CLIENT_OUT_BYTES). smtp_client_output() returns the oldest unsent
 * bytes, contiguous; they stay in place, unchanged, until acknowledged by
 * smtp_client_output_done(), so the host may have one send in flight on
 * them while it calls anything else (new bytes go after them). Because
 * the buffer wraps, output() may return fewer bytes than are pending:
 * after output_done(), call it again.
 *
 * Timeouts (RFC 5321 4.5.3.2) are the host's: smtp_client_phase() says
 * what the client is waiting for, smtp_client_phase_timeout_ms() gives the
 * RFC's minimum for it; the host arms a timer per phase and, when it
 * fires, calls smtp_client_timeout() with that phase (a stale timer for a
 * phase that is over is ignored).
 *
 * Failures: a peer can never make this module abort; every peer problem is
 * a FAILED event with a reason. FAILED and CLOSED are sticky: _next returns
 * them forever, the other calls return SMTP_CLIENT_E_FAILED (or do
 * nothing). A call in the wrong state returns SMTP_CLIENT_E_STATE and
 * changes nothing. Host bugs that end in rm_panic(): a NULL or invalid
 * lim.helo_name, output_done() beyond what output() returned.
 *
 * Memory: struct smtp_client is self-contained (no heap), about 22 KiB;
 * smtp_client_size() gives the exact figure. No call allocates.
 */
#ifndef RINGMTA_SMTP_CLIENT_H
#define RINGMTA_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringmta/smtp_proto.h"

/*
 * SMTP_CLIENT_IN_BYTES - the reply input buffer. It bounds one reply line
 * (max_reply_line_bytes is clamped to it); replies are parsed line by
 * line, so a multi-line reply (an EHLO list) may be longer.
 */
#define SMTP_CLIENT_IN_BYTES 4096
/*
 * SMTP_CLIENT_OUT_BYTES - the output ring: commands and body bytes. 16 KiB
 * lets a pipelined batch of ~20 worst-case RCPTs, or a 16 KiB body block
 * (a BDAT chunk), go out in one send; smaller buffers measured slower in
 * bulk body transfer because every send completion costs a ring round.
 */
#define SMTP_CLIENT_OUT_BYTES 16384
/*
 * SMTP_CLIENT_CMD_MAX - the longest command we format: RCPT TO:<path 256>
 * NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=<500> CRLF is < 830 octets (RFC 3461
 * 4.2, RFC 5321 4.5.3.1.3); MAIL with SIZE, BODY, SMTPUTF8, RET and ENVID
 * (100) is < 450.
 */
#define SMTP_CLIENT_CMD_MAX 1024
/*
 * SMTP_CLIENT_PIPE_MAX - commands in flight (awaiting replies). RFC 2920
 * sets no limit; 256 covers MAIL + the usual 50..100 recipients of one
 * batch (Postfix smtp_destination_recipient_limit is 50) with room.
 */
#define SMTP_CLIENT_PIPE_MAX 256
/*
 * SMTP_CLIENT_BDAT_WINDOW - BDAT chunks in flight with PIPELINING. Small,
 * so that a refused chunk stops the body after a bounded amount of waste
 * (window x chunk size <= 64 KiB).
 */
#define SMTP_CLIENT_BDAT_WINDOW 4
/*
 * SMTP_CLIENT_RCPT_MAX - recipients per transaction, the ceiling of
 * lim.max_rcpt. RFC 5321 4.5.3.1.8 requires servers to take 100; 1024
 * leaves room. One bit each records which were accepted (LMTP replies).
 */
#define SMTP_CLIENT_RCPT_MAX 1024
/* SMTP_CLIENT_TEXT_BYTES - reply text kept for an event (lines joined by "\n"); longer is cut. */
#define SMTP_CLIENT_TEXT_BYTES 1024
/* SMTP_CLIENT_ESC_MAX - an enhanced status code: class "." 3 digits "." 3 digits (RFC 3463 2). */
#define SMTP_CLIENT_ESC_MAX 9
/*
 * SMTP_CLIENT_BODY_ROOM - free output space the client wants before it
 * asks for DATA body bytes (WAIT BODY); below that it returns FLUSH, so
 * body() never gets called for a handful of bytes.
 */
#define SMTP_CLIENT_BODY_ROOM 1024
/*
 * SMTP_CLIENT_CHUNK_MAX - the largest BDAT chunk. A chunk is
 * min(offered, this), never cut to the free output space, so the framing
 * depends only on what the host offers, not on how fast the socket drains.
 * Half the ring: one chunk can be built while the previous one is sent.
 */
#define SMTP_CLIENT_CHUNK_MAX (SMTP_CLIENT_OUT_BYTES / 2 - 64)

/*
 * enum smtp_client_err - results of the host calls, a range of their own
 * (-2000...) apart from -errno and smtp_proto's -1000 range.
 */
enum smtp_client_err {
	SMTP_CLIENT_OK = 0,
	SMTP_CLIENT_E_STATE = -2000,  /* not allowed now (e.g. begin_txn in a transaction) */
	SMTP_CLIENT_E_FAILED,         /* the connection has FAILED or CLOSED (sticky) */
	SMTP_CLIENT_E_ADDR,           /* an address is too long, has a control byte, or 8-bit without is_smtputf8 */
	SMTP_CLIENT_E_PARAM,          /* no recipient, too many, or an ENVID/ORCPT that is not valid xtext or too long */
	SMTP_CLIENT_E_NEED_EXT,       /* the peer lacks an extension the message needs: SMTPUTF8 (RFC 6531 3.4), 8BITMIME (RFC 6152 3), BINARYMIME+CHUNKING (RFC 3030 3) */
	SMTP_CLIENT_E_TOO_BIG,        /* txn size > the peer's SIZE limit (RFC 1870 6) */
	SMTP_CLIENT_E_BUSY,           /* DATA was sent: only closing the connection can abort the message */
};

/*
 * struct smtp_client_limits - configuration, copied by smtp_client_init()
 * (except helo_name, which is borrowed). Fill with
 * smtp_client_limits_default(), then change what you need.
 */
struct smtp_client_limits {
	const char *helo_name;        /* our name for EHLO/HELO/LHLO: borrowed for the connection's lifetime; NUL-terminated, 1..255 octets of 0x21..0x7e */
	bool is_lmtp;                 /* LMTP (RFC 2033): LHLO, no HELO fallback, one end-of-data reply per accepted recipient (default false) */
	size_t max_reply_line_bytes;  /* longest reply line incl. CRLF; more fails the connection (LINE_TOO_LONG); default 2048 (RFC 5321 4.5.3.1.5 says 512; real servers exceed it); clamped to 16..SMTP_CLIENT_IN_BYTES */
	unsigned max_reply_lines;     /* lines in one reply; more fails (TOO_MANY_LINES); default 64 */
	unsigned max_rcpt;            /* recipients per transaction, 1..SMTP_CLIENT_RCPT_MAX; default 1000 */
	bool use_pipelining;          /* pipeline when PIPELINING is offered (default true) */
	bool use_chunking;            /* send BDAT when CHUNKING is offered (default true); BINARYMIME bodies need it */
	bool use_starttls;            /* send STARTTLS when offered and not yet in TLS (default false) */
	bool require_tls;             /* fail (TLS_REQUIRED) when STARTTLS is not offered or is refused (default false) */
	bool lenient_bare_lf;         /* accept a reply line ending in a bare LF (default false: PROTOCOL) */
	bool lenient_8bit;            /* send a BODY=8BITMIME message to a peer without 8BITMIME, as is and without the parameter (default false: E_NEED_EXT) */
	bool use_pipelining_next;     /* with PIPELINING: offer WAIT NEXT, the next transaction behind the end of data (default false) */
};

/* smtp_client_limits_default - fill lim with the defaults above; helo_name "localhost". */
void smtp_client_limits_default(struct smtp_client_limits *lim);

/*
 * struct smtp_client_caps - what the peer's EHLO/LHLO reply offered
 * (RFC 5321 4.1.1.1; keywords case-insensitive). All false after HELO.
 */
struct smtp_client_caps {
	bool is_esmtp;             /* EHLO/LHLO answered 250 */
	bool pipelining;           /* RFC 2920 */
	bool has_size;             /* SIZE offered (RFC 1870) */
	uint64_t size_max;         /* SIZE n: the peer's limit; 0 = none given */
	bool eightbitmime;         /* RFC 6152 */
	bool smtputf8;             /* RFC 6531 */
	bool chunking;             /* RFC 3030 BDAT */
	bool binarymime;           /* RFC 3030 BODY=BINARYMIME */
	bool dsn;                  /* RFC 3461 */
	bool starttls;             /* RFC 3207 */
	bool enhancedstatuscodes;  /* RFC 2034 */
};

/*
 * struct smtp_client_rcpt - one recipient of a transaction (host storage,
 * borrowed until TXN_DONE or FAILED).
 */
struct smtp_client_rcpt {
	const char *addr;          /* mailbox without "<>", NUL-terminated, <= 254 octets */
	unsigned notify;           /* SMTP_PROTO_NOTIFY_* bits, 0 = none; sent only when DSN is offered */
	const char *orcpt;         /* "addr-type;xtext" (RFC 3461 4.2) or NULL; sent only when DSN is offered */
};

/*
 * struct smtp_client_txn - one transaction (host storage, borrowed with
 * everything it points to until TXN_DONE or FAILED).
 */
struct smtp_client_txn {
	const char *sender;                  /* reverse-path without "<>"; "" for the null sender */
	const struct smtp_client_rcpt *rcpt; /* n_rcpt recipients */
	unsigned n_rcpt;                     /* 1..lim.max_rcpt */
	bool has_size;                       /* size is known: sent as SIZE= when offered, checked against the peer's limit */
	uint64_t size;                       /* message octets (RFC 1870 counting: CRLFs, no stuffing) */
	uint8_t body;                        /* enum smtp_proto_body: NONE/7BIT (no parameter), 8BITMIME, BINARYMIME (needs BDAT) */
	bool is_smtputf8;                    /* SMTPUTF8: needed for 8-bit addresses; E_NEED_EXT if not offered */
	uint8_t ret;                         /* enum smtp_proto_ret; sent only when DSN is offered */
	const char *envid;                   /* ENVID xtext or NULL; sent only when DSN is offered */
	bool is_probe;                       /* recipient verification: MAIL and the RCPTs only, then RSET; no DATA (TXN_DONE status ABORTED) */
};

/*
 * struct smtp_client_reply - a parsed reply (RFC 5321 4.2): code, the
 * enhanced status code of its first line when present and in the same
 * class (RFC 3463, RFC 2034 3; taken whether or not ENHANCEDSTATUSCODES
 * was offered), and the text of all lines joined by "\n", the enhanced
 * code stripped from each line that starts with it. text is NUL-terminated
 * and may hold any bytes but CR, LF and NUL (8-bit from SMTPUTF8 peers):
 * make it printable before logging.
 */
struct smtp_client_reply {
	uint16_t code;                     /* 200..559 */
	unsigned n_lines;                  /* 1..max_reply_lines */
	char esc[SMTP_CLIENT_ESC_MAX + 3]; /* "5.1.1", or "" */
	size_t text_len;
	bool is_text_cut;                  /* the text did not fit SMTP_CLIENT_TEXT_BYTES */
	char text[SMTP_CLIENT_TEXT_BYTES];
};

/* enum smtp_client_ev_kind - what smtp_client_next() returns. */
enum smtp_client_ev_kind {
	SMTP_CLIENT_EV_NEED_MORE = 0, /* a reply is outstanding: send output, feed more */
	SMTP_CLIENT_EV_WAIT,          /* waiting for the host: ev.wait */
	SMTP_CLIENT_EV_FLUSH,         /* output full: send it, output_done(), call _next again */
	SMTP_CLIENT_EV_STARTTLS,      /* STARTTLS answered 220: start TLS, then smtp_client_tls_done() */
	SMTP_CLIENT_EV_READY,         /* greeting and EHLO/HELO/LHLO done: ev.caps */
	SMTP_CLIENT_EV_MAIL_RESULT,   /* ev.reply to MAIL */
	SMTP_CLIENT_EV_RCPT_RESULT,   /* ev.reply to RCPT for ev.rcpt_index */
	SMTP_CLIENT_EV_DATA_RESULT,   /* ev.reply at end of data (or a refused DATA/BDAT): ev.is_all or ev.rcpt_index */
	SMTP_CLIENT_EV_TXN_DONE,      /* the transaction is over (after any RSET): ev.done; WAIT TXN follows */
	SMTP_CLIENT_EV_CLOSED,        /* sticky: QUIT was answered (or EOF after QUIT): close */
	SMTP_CLIENT_EV_FAILED,        /* sticky: ev.fail, ev.reason, ev.reply, ev.phase; send the output, close */
};

/* enum smtp_client_wait - what a WAIT waits for. */
enum smtp_client_wait {
	SMTP_CLIENT_WAIT_NONE = 0,
	SMTP_CLIENT_WAIT_TXN,   /* idle: begin_txn(), rset() (a probe) or quit() */
	SMTP_CLIENT_WAIT_BODY,  /* body(): the next message bytes */
	SMTP_CLIENT_WAIT_TLS,   /* tls_done() after the STARTTLS event */
	SMTP_CLIENT_WAIT_NEXT,  /* end of data written, only its reply outstanding: begin_txn() pipelines the next transaction; _next declines */
};

/* enum smtp_client_fail - why the connection FAILED. */
enum smtp_client_fail {
	SMTP_CLIENT_FAIL_NONE = 0,
	SMTP_CLIENT_FAIL_GREETING,       /* greeting not 2xx (554, 421, ...): ev.reply; QUIT queued unless 421 */
	SMTP_CLIENT_FAIL_HELO,           /* EHLO and HELO (or LHLO) refused: ev.reply; QUIT queued */
	SMTP_CLIENT_FAIL_CLOSING,        /* a 421 (RFC 5321 3.8) to any command: ev.reply */
	SMTP_CLIENT_FAIL_PROTOCOL,       /* the peer broke the protocol: ev.reason says how */
	SMTP_CLIENT_FAIL_LINE_TOO_LONG,  /* a reply line > max_reply_line_bytes */
	SMTP_CLIENT_FAIL_TOO_MANY_LINES, /* a reply of > max_reply_lines lines */
	SMTP_CLIENT_FAIL_EOF,            /* the peer closed (smtp_client_eof) before QUIT */
	SMTP_CLIENT_FAIL_TIMEOUT,        /* smtp_client_timeout(): ev.phase */
	SMTP_CLIENT_FAIL_TLS_REQUIRED,   /* require_tls, and STARTTLS not offered or refused: QUIT queued */
	SMTP_CLIENT_FAIL_RSET,           /* RSET refused: ev.reply; QUIT queued */
};

/* enum smtp_client_txn_status - how a transaction ended (TXN_DONE). */
enum smtp_client_txn_status {
	SMTP_CLIENT_TXN_SENT = 0,     /* end of data reached; per-recipient outcome in DATA_RESULTs (may all be refusals) */
	SMTP_CLIENT_TXN_MAIL_REFUSED, /* MAIL refused: its reply applies to every recipient */
	SMTP_CLIENT_TXN_NO_RCPT,      /* every RCPT refused */
	SMTP_CLIENT_TXN_DATA_REFUSED, /* DATA or a BDAT chunk refused: its DATA_RESULT applies to every accepted recipient */
	SMTP_CLIENT_TXN_ABORTED,      /* the host called smtp_client_rset() in the transaction, or a probe (is_probe) ended */
};

/* struct smtp_client_txn_done - the summary handed out with TXN_DONE. */
struct smtp_client_txn_done {
	enum smtp_client_txn_status status;
	unsigned n_rcpt_accepted;      /* RCPT answered 2xx */
	unsigned n_rcpt_delivered;     /* accepted recipients whose end of data got 2xx */
	uint64_t body_bytes;           /* body octets taken from the host (before stuffing/framing) */
};

/*
 * enum smtp_client_phase - what the client is waiting for, with the RFC
 * 5321 4.5.3.2 minimum timeouts (smtp_client_phase_timeout_ms).
 */
enum smtp_client_phase {
	SMTP_CLIENT_PHASE_NONE = 0,   /* nothing outstanding: idle or waiting for the host; no protocol timeout */
	SMTP_CLIENT_PHASE_GREETING,   /* 5 min (4.5.3.2.1) */
	SMTP_CLIENT_PHASE_HELO,       /* EHLO/HELO/LHLO/STARTTLS reply: 5 min (as Postfix smtp_helo_timeout) */
	SMTP_CLIENT_PHASE_MAIL,       /* 5 min (4.5.3.2.2) */
	SMTP_CLIENT_PHASE_RCPT,       /* 5 min (4.5.3.2.3) */
	SMTP_CLIENT_PHASE_DATA_INIT,  /* the 354: 2 min (4.5.3.2.4) */
	SMTP_CLIENT_PHASE_DATA_BLOCK, /* sending body (each send, and non-LAST BDAT replies): 3 min (4.5.3.2.5) */
	SMTP_CLIENT_PHASE_DATA_END,   /* end-of-data / BDAT LAST reply: 10 min (4.5.3.2.6) */
	SMTP_CLIENT_PHASE_RSET,       /* 5 min */
	SMTP_CLIENT_PHASE_QUIT,       /* 5 min */
};

/*
 * struct smtp_client_ev - one event. Only the fields named for the kind
 * are meaningful. Pointers (reply, caps) point into the client: reply is
 * valid until the next smtp_client_next/feed call, caps until the next
 * EHLO (i.e. after STARTTLS) or fini.
 */
struct smtp_client_ev {
	enum smtp_client_ev_kind kind;
	enum smtp_client_wait wait;              /* WAIT */
	const struct smtp_client_caps *caps;     /* READY */
	const struct smtp_client_reply *reply;   /* *_RESULT; FAILED (NULL when no reply caused it) */
	const struct smtp_client_txn *txn;       /* *_RESULT, TXN_DONE: the transaction (as given to begin_txn) */
	unsigned rcpt_index;                     /* RCPT_RESULT; DATA_RESULT unless is_all */
	bool is_all;                             /* DATA_RESULT: applies to every accepted recipient */
	struct smtp_client_txn_done done;        /* TXN_DONE */
	enum smtp_client_fail fail;              /* FAILED */
	const char *reason;                      /* FAILED: constant name, e.g. "code_mismatch" */
	enum smtp_client_phase phase;            /* FAILED: what we were waiting for */
	bool is_quit_queued;                     /* FAILED: output ends with a QUIT to send before closing */
};

/*
 * struct smtp_client_tally - the replies one transaction got so far (what
 * its end-of-data replies are matched against).
 */
struct smtp_client_tally {
	unsigned rcpt_replied;        /* RCPT replies seen */
	unsigned n_accepted;
	unsigned n_delivered;
	unsigned dot_replied;         /* end-of-data replies seen (LMTP: per recipient) */
	unsigned lmtp_next;           /* LMTP: index to search for the next accepted recipient */
	uint8_t accepted[SMTP_CLIENT_RCPT_MAX / 8];  /* one bit per RCPT answered 2xx */
};

/*
 * struct smtp_client - one connection. The host allocates it (any
 * alignment of a struct) and treats every field as private; it is public
 * only so it can be embedded.
 */
struct smtp_client {
	struct smtp_client_limits lim;
	uint8_t st;                   /* internal state */
	uint8_t fail;                 /* enum smtp_client_fail once FAILED */
	uint8_t fail_phase;           /* enum smtp_client_phase at the failure */
	bool has_fail_reply;          /* reply holds the reply that failed us */
	bool is_quit_queued;
	bool is_tls;                  /* tls_done() called */
	uint8_t pend;                 /* a command to write before anything else (internal kind), 0 none */
	uint8_t reply_kind;           /* the command kind the last complete reply answered */
	bool is_pipelining;           /* caps.pipelining && lim.use_pipelining */
	bool is_bdat;                 /* this transaction uses BDAT */
	const char *fail_reason;
	struct smtp_client_caps caps;
	/* the transaction */
	const struct smtp_client_txn *txn;
	unsigned rcpt_sent;           /* RCPT commands written */
	struct smtp_client_tally tl;
	uint8_t txn_status;           /* enum smtp_client_txn_status so far */
	bool is_mail_sent, is_mail_ok, is_mail_replied;
	bool is_data_sent;            /* DATA (or the first BDAT) written */
	bool is_data_go;              /* 354 seen / body may flow */
	bool is_body_done;            /* the end marker / LAST chunk written */
	bool is_txn_over;             /* no more commands or body; waiting for the outstanding replies */
	bool is_dot_replied;          /* every end-of-data reply is in (the server's transaction is over) */
	bool is_rset_sent;            /* the closing RSET is written */
	bool is_lone_dot;             /* "." sent after a 354 with no accepted recipient */
	bool is_body_bol;             /* DATA body: at the start of a line (stuffing) */
	uint8_t body_tail;            /* DATA body: 0 other, 1 ended in CR, 2 ended in CRLF */
	uint64_t body_bytes;
	unsigned bdat_inflight;
	bool is_next_offered;         /* WAIT NEXT was handed out for this transaction */
	/* the previous transaction, when the current one began behind its end
	 * of data: only its end-of-data reply is outstanding (pipe head) */
	bool has_tail;
	bool is_tail_done;            /* its TXN_DONE is to hand out */
	const struct smtp_client_txn *tail_txn;
	uint64_t tail_body_bytes;
	struct smtp_client_tally tail;
	/* replies outstanding: a FIFO of command kinds */
	uint8_t pipe[SMTP_CLIENT_PIPE_MAX];
	unsigned pipe_head, pipe_len;
	/* the reply being parsed */
	uint16_t cur_code;
	unsigned cur_lines;
	struct smtp_client_reply reply;
	/* buffers */
	size_t in_off, in_len;
	size_t out_head, out_len;     /* ring: oldest unsent byte, bytes pending */
	size_t out_lent;              /* bytes handed out by output() and not yet acknowledged */
	uint8_t in[SMTP_CLIENT_IN_BYTES];
	uint8_t out[SMTP_CLIENT_OUT_BYTES];
};

/* smtp_client_size - sizeof(struct smtp_client), for hosts that allocate it opaquely. */
size_t smtp_client_size(void);

/*
 * smtp_client_init - set up c from lim (copied; lim->helo_name borrowed
 * for the connection's lifetime). The client then waits for the greeting
 * (phase GREETING); nothing is sent before it. Never fails; a NULL lim or
 * helo_name, or a helo_name that is empty, longer than 255 octets or has
 * bytes outside 0x21..0x7e, is our bug (rm_panic).
 */
void smtp_client_init(struct smtp_client *c, const struct smtp_client_limits *lim);

/* smtp_client_fini - end the connection; c holds nothing that needs freeing. */
void smtp_client_fini(struct smtp_client *c);

/*
 * smtp_client_feed - give the client received bytes (plaintext; after TLS,
 * the decrypted stream). buf[0..len) is copied; the client keeps no
 * pointer to it. Returns the bytes taken (0..len): fewer when the input
 * buffer is full (the host keeps buf[taken..len), calls _next, feeds the
 * rest later: backpressure), 0 after FAILED/CLOSED. While the client waits
 * for tls_done() every byte is taken and dropped (RFC 3207 5: nothing sent
 * before the handshake may count as a reply after it). Call _next after.
 */
size_t smtp_client_feed(struct smtp_client *c, const uint8_t *buf, size_t len);

/*
 * smtp_client_next - run the state machine to the next event; fills *ev
 * (always, including NEED_MORE/WAIT/FLUSH) and returns ev->kind.
 */
int smtp_client_next(struct smtp_client *c, struct smtp_client_ev *ev);

/*
 * smtp_client_tls_done - the TLS handshake the STARTTLS event asked for
 * has completed; from now on feed the decrypted stream. Drops any input
 * still buffered (RFC 3207 5; STARTTLS response injection, as in Exim's
 * CVE-2021-38371), forgets the capabilities (RFC 3207 4.2) and sends
 * EHLO/LHLO again; READY follows.
 * Returns 0, SMTP_CLIENT_E_STATE (no STARTTLS event pending) or
 * SMTP_CLIENT_E_FAILED. A failed handshake is not reported here: close.
 */
int smtp_client_tls_done(struct smtp_client *c);

/*
 * smtp_client_begin_txn - start a transaction (after WAIT TXN, or
 * WAIT NEXT: then behind the previous one's end of data). t and
 * everything it points to are borrowed until TXN_DONE or FAILED. The
 * client writes MAIL, the RCPTs and DATA as the rules above allow; the
 * results come as events. SIZE= goes out when offered and t->has_size;
 * BODY= for 8BITMIME/BINARYMIME; SMTPUTF8 when t->is_smtputf8; RET, ENVID,
 * NOTIFY and ORCPT only when DSN is offered (otherwise dropped: the host
 * decides about "relayed" notices, RFC 3461 4.1). Returns 0, or, with
 * nothing sent and the client still idle:
 *  SMTP_CLIENT_E_STATE    not idle (no WAIT TXN), and not right after
 *                         a WAIT NEXT;
 *  SMTP_CLIENT_E_FAILED   the connection failed or closed;
 *  SMTP_CLIENT_E_PARAM    n_rcpt 0 or > lim.max_rcpt, rcpt NULL, bad
 *                         ENVID/ORCPT (xtext, RFC 3461 4), bad body/ret;
 *  SMTP_CLIENT_E_ADDR     an address > 254 octets, with a byte < 0x20 or
 *                         0x7f, or 8-bit without is_smtputf8;
 *  SMTP_CLIENT_E_NEED_EXT the peer lacks SMTPUTF8 (is_smtputf8), 8BITMIME
 *                         (without lim.lenient_8bit) or CHUNKING and
 *                         BINARYMIME (t->body BINARYMIME);
 *  SMTP_CLIENT_E_TOO_BIG  has_size and size > the peer's SIZE limit.
 */
int smtp_client_begin_txn(struct smtp_client *c, const struct smtp_client_txn *t);

/*
 * smtp_client_body - the next message bytes (after WAIT BODY): data[0..len)
 * raw, CRLF line ends, not stuffed; copied, not kept. is_last: these are
 * the final bytes. Returns the bytes taken (0..len): fewer when the
 * output is full; the host keeps the rest, calls _next (FLUSH / WAIT BODY)
 * and offers it again. is_last takes effect only when every byte was
 * taken and the end could be written too; the body is finished when
 * _next no longer returns WAIT BODY.
 * DATA: dot-stuffing on the fly (RFC 5321 4.5.2): a "." at the start of
 * a line (after any LF, also across calls) gets another "."; the end is
 * CRLF "." CRLF, with a CRLF added first when the body does not end with
 * one (an empty body sends just "." CRLF).
 * BDAT: each call writes one chunk, "BDAT <n>[ LAST]" CRLF and the n =
 * min(len, SMTP_CLIENT_CHUNK_MAX) octets as they are, or nothing while it
 * does not fit: offer large pieces. (NULL, 0, true) writes "BDAT 0 LAST".
 * Outside WAIT BODY (including after a refused chunk) it takes nothing.
 */
size_t smtp_client_body(struct smtp_client *c, const uint8_t *data, size_t len, bool is_last);

/*
 * smtp_client_rset - send RSET. When idle (WAIT TXN): a probe of a cached
 * connection; WAIT TXN follows if it gets 2xx, FAILED (RSET) if not. In a
 * BDAT transaction before the LAST chunk, or before the body has started:
 * abort the transaction (ABORTED; outstanding replies are read and
 * reported first). Returns 0, SMTP_CLIENT_E_BUSY (DATA was sent: after
 * its 354 RFC 5321 gives no way out of the message but closing the
 * connection), SMTP_CLIENT_E_STATE or SMTP_CLIENT_E_FAILED.
 */
int smtp_client_rset(struct smtp_client *c);

/*
 * smtp_client_quit - send QUIT (when idle, WAIT TXN); CLOSED follows its
 * reply (or EOF). Returns 0, SMTP_CLIENT_E_STATE or SMTP_CLIENT_E_FAILED.
 */
int smtp_client_quit(struct smtp_client *c);

/*
 * smtp_client_output - the oldest unsent output bytes, *len of them (0
 * when none; NULL is never returned). They stay in place and unchanged
 * until smtp_client_output_done() acknowledges them, whatever else is
 * called meanwhile; fewer than all pending bytes when the ring wraps.
 */
const uint8_t *smtp_client_output(struct smtp_client *c, size_t *len);

/* smtp_client_output_done - n bytes of the output have been sent (n <= the last *len; more is our bug). */
void smtp_client_output_done(struct smtp_client *c, size_t n);

/*
 * smtp_client_eof - the peer closed or the connection broke. After QUIT
 * it means CLOSED, otherwise FAILED (EOF). Sticky; later calls do nothing.
 */
void smtp_client_eof(struct smtp_client *c);

/*
 * smtp_client_timeout - the host's timer for phase fired. Returns true
 * when that is still the current phase: the connection FAILED (TIMEOUT);
 * false when the timer is stale (the phase has moved on; nothing changes)
 * or the connection has already ended. PHASE_NONE (the host's own limit
 * on an idle or host-stalled connection) fails it too; to end an idle
 * cached connection politely, call smtp_client_quit() instead.
 */
bool smtp_client_timeout(struct smtp_client *c, enum smtp_client_phase phase);

/* smtp_client_phase - what the client is waiting for now (for the host's timers and logs). */
enum smtp_client_phase smtp_client_phase(const struct smtp_client *c);

/* smtp_client_phase_timeout_ms - RFC 5321 4.5.3.2 minimum timeout for phase; 0 for NONE. */
uint32_t smtp_client_phase_timeout_ms(enum smtp_client_phase phase);

/* smtp_client_caps - the capabilities of the last EHLO/LHLO (all false before, or after HELO). */
const struct smtp_client_caps *smtp_client_caps(const struct smtp_client *c);

/* smtp_client_phase_name - constant name ("RCPT"), also the log's "while" action. */
const char *smtp_client_phase_name(enum smtp_client_phase phase);

/* smtp_client_ev_name - constant name of an event kind ("RCPT_RESULT"). */
const char *smtp_client_ev_name(int kind);

/* smtp_client_fail_name - constant name of a failure ("closing"). */
const char *smtp_client_fail_name(enum smtp_client_fail fail);

/* smtp_client_err_name - constant name of an smtp_client_err ("E_STATE"), "OK" for 0. */
const char *smtp_client_err_name(int err);

#endif
