/*
 * test_smtp_client - the outbound client against scripted server byte
 * streams. Each scenario names the server's bytes, the host's actions and
 * the exact client output and event log it must produce; it is run with
 * the server bytes fed whole, byte by byte and split at every offset
 * (each piece just before a PROT_NONE page), and with two output drains
 * (all at once, and one lazy "send in flight" whose bytes must not move
 * or change until output_done). Every run must give the same log and
 * the same output.
 */
#include "ringmta/smtp_client.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "t.h"

/* --- transactions the scenarios use ------------------------------------------------ */

static const struct smtp_client_rcpt R_B[] = { { "b@y.example", 0, NULL } };
static const struct smtp_client_rcpt R_C[] = { { "c@y.example", 0, NULL } };
static const struct smtp_client_rcpt R_BC[] = {
	{ "b@y.example", 0, NULL }, { "c@y.example", 0, NULL } };
static const struct smtp_client_rcpt R_BCD[] = {
	{ "b@y.example", 0, NULL }, { "c@y.example", 0, NULL }, { "d@y.example", 0, NULL } };
static const struct smtp_client_rcpt R_DSN[] = {
	{ "b@y.example", SMTP_PROTO_NOTIFY_SUCCESS | SMTP_PROTO_NOTIFY_FAILURE, "rfc822;b@y.example" } };
static const struct smtp_client_rcpt R_UTF8[] = { { "b\xc3\xa4@y.example", 0, NULL } };
static const struct smtp_client_rcpt R_INJECT[] = { { "b@y.example>\r\nRCPT TO:<evil@z.example", 0, NULL } };

struct ttxn {
	struct smtp_client_txn t;
	const char *body[4];   /* pieces, NULL-terminated; each one body() call */
};

static const struct ttxn txns[] = {
	/* 0 */ { { "a@x.example", R_B, 1, true, 7, 0, false, 0, NULL }, { "Hello\r\n" } },
	/* 1 */ { { "a@x.example", R_C, 1, false, 0, 0, false, 0, NULL }, { "Hello\r\n" } },
	/* 2 */ { { "", R_BC, 2, false, 0, 0, false, 0, NULL }, { "Hi\r\n" } },
	/* 3 */ { { "", R_BCD, 3, false, 0, 0, false, 0, NULL }, { "Hi\r\n" } },
	/* 4 */ { { "a@x.example", R_B, 1, false, 0, 0, false, 0, NULL }, { "..a\r\n.", "b\r\n.\r\n", "x" } },
	/* 5 */ { { "a@x.example", R_DSN, 1, false, 0, 0, false, SMTP_PROTO_RET_HDRS, "QQ123" }, { "Hi\r\n" } },
	/* 6 */ { { "a@x.example", R_UTF8, 1, false, 0, 0, true, 0, NULL }, { "Hi\r\n" } },
	/* 7 */ { { "a@x.example", R_B, 1, true, 2000000, 0, false, 0, NULL }, { "Hi\r\n" } },
	/* 8 */ { { "a@x.example", R_INJECT, 1, false, 0, 0, false, 0, NULL }, { "Hi\r\n" } },
	/* 9 */ { { "a@x.example", R_B, 1, false, 0, 0, false, 0, NULL }, { "" } },
	/* 10 */ { { "a@x.example", R_B, 1, false, 0, SMTP_PROTO_BODY_8BITMIME, false, 0, NULL }, { "caf\xc3\xa9\r\n" } },
	/* 11 */ { { "a@x.example", R_B, 1, false, 0, 0, false, 0, NULL }, { "Hello\r\n", "World\r\n", "!\r\n" } },
	/* 12 */ { { "a@x.example", R_B, 1, false, 0, 0, false, 0, NULL }, { "no newline" } },
	/* 13 */ { { "a@x.example\r\nRSET", R_B, 1, false, 0, 0, false, 0, NULL }, { "Hi\r\n" } },
	/* 14 */ { { "", R_BC, 2, false, 0, 0, false, 0, NULL, true }, { "" } },
};

/* --- scenario table ------------------------------------------------------------------ */

#define F_LMTP    0x1u
#define F_NOPIPE  0x2u
#define F_NOCHUNK 0x4u
#define F_TLS     0x8u
#define F_REQTLS  0x10u
#define F_BARELF  0x20u
#define F_LINE64  0x40u  /* max_reply_line_bytes 64 */
#define F_LINES4  0x80u  /* max_reply_lines 4 */
#define F_NEXT    0x100u /* use_pipelining_next; the log names each event's transaction (@n) */

struct scase {
	const char *name;
	unsigned flags;
	const char *server;    /* the server's bytes */
	const char *server2;   /* after STARTTLS: the decrypted stream (or NULL) */
	const char *actions;   /* host actions: T<n> begin txn n, Q quit, R rset probe, A<n> abort at the n-th WAIT BODY; at WAIT NEXT: T<n> begins, - (taken) or anything else declines */
	const char *want_out;  /* exactly what the client sends */
	const char *want_log;  /* the events */
};

/* server lines */
#define S_GREET "220 mx.example ESMTP\r\n"
#define S_EHLO_PIPE "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n"
#define S_EHLO_PLAIN "250-mx.example\r\n250 8BITMIME\r\n"
#define S_EHLO_CHUNK "250-mx.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n"
#define S_EHLO_CHUNK1 "250-mx.example\r\n250 CHUNKING\r\n"
#define S_EHLO_TLS "250-mx.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
#define S_MAIL "250 2.1.0 ok\r\n"
#define S_RCPT "250 2.1.5 ok\r\n"
#define S_GO "354 go ahead\r\n"
#define S_QUEUED "250 2.0.0 queued\r\n"
#define S_OK "250 ok\r\n"
#define S_BYE "221 2.0.0 bye\r\n"
#define S_421 "421 4.3.2 shutting down\r\n"

/* client lines */
#define C_EHLO "EHLO client.example\r\n"
#define C_LHLO "LHLO client.example\r\n"
#define C_MAIL0S "MAIL FROM:<a@x.example> SIZE=7\r\n"
#define C_MAIL0 "MAIL FROM:<a@x.example>\r\n"
#define C_MAILN "MAIL FROM:<>\r\n"
#define C_RB "RCPT TO:<b@y.example>\r\n"
#define C_RC "RCPT TO:<c@y.example>\r\n"
#define C_RD "RCPT TO:<d@y.example>\r\n"
#define C_DATA "DATA\r\n"
#define C_HELLO "Hello\r\n.\r\n"
#define C_HI "Hi\r\n.\r\n"
#define C_RSET "RSET\r\n"
#define C_QUIT "QUIT\r\n"

/* log pieces */
#define L_READY_PIPE "READY pipe size=1000000 8bit dsn esc; "
#define L_MAIL "MAIL 250 2.1.0 ok; "
#define L_RCPT0 "RCPT0 250 2.1.5 ok; "
#define L_RCPT1 "RCPT1 250 2.1.5 ok; "
#define L_QUEUED "DATA* 250 2.0.0 queued; "

static const struct scase cases[] = {
	/* --- normal transactions --- */
	{ "RFC2920 pipelined transaction", 0,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T0 Q",
	  C_EHLO C_MAIL0S C_RB C_DATA C_HELLO C_QUIT,
	  L_READY_PIPE L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 7; CLOSED; " },
	{ "lock-step transaction (no PIPELINING)", 0,
	  S_GREET S_EHLO_PLAIN S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T0 Q",
	  C_EHLO C_MAIL0 C_RB C_DATA C_HELLO C_QUIT,
	  "READY 8bit; " L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 7; CLOSED; " },
	{ "pipelining offered but not used", F_NOPIPE,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T0 Q",
	  C_EHLO C_MAIL0S C_RB C_DATA C_HELLO C_QUIT,
	  L_READY_PIPE L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 7; CLOSED; " },
	{ "three messages on one connection, RSET after a failed one", 0,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT S_GO S_QUEUED
	  S_MAIL "550 5.1.1 no such user\r\n" "554 5.5.1 no valid recipients\r\n" S_OK
	  S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T0 T1 T0 Q",
	  C_EHLO C_MAIL0S C_RB C_DATA C_HELLO C_MAIL0 C_RC C_DATA C_RSET
	  C_MAIL0S C_RB C_DATA C_HELLO C_QUIT,
	  L_READY_PIPE L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 7; "
	  L_MAIL "RCPT0 550 5.1.1 no such user; DONE no_rcpt 0/0 0; "
	  L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 7; CLOSED; " },
	{ "recipient probe, pipelined: MAIL and RCPTs, RSET, no DATA", 0,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT "550 5.1.1 no such user\r\n" S_OK S_BYE, NULL, "T14 Q",
	  "EHLO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.example>\r\nRCPT TO:<c@y.example>\r\nRSET\r\nQUIT\r\n",
	  L_READY_PIPE L_MAIL L_RCPT0 "RCPT1 550 5.1.1 no such user; DONE aborted 1/0 0; CLOSED; " },
	{ "recipient probe, lock-step", 0,
	  S_GREET S_EHLO_PLAIN S_MAIL S_RCPT "550 5.1.1 no such user\r\n" S_OK S_BYE, NULL, "T14 Q",
	  "EHLO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.example>\r\nRCPT TO:<c@y.example>\r\nRSET\r\nQUIT\r\n",
	  "READY 8bit; " L_MAIL L_RCPT0 "RCPT1 550 5.1.1 no such user; DONE aborted 1/0 0; CLOSED; " },
	{ "recipient probe, MAIL refused", 0,
	  S_GREET S_EHLO_PIPE "451 4.3.0 try later\r\n" "503 5.5.1 no MAIL\r\n" "503 5.5.1 no MAIL\r\n" S_BYE, NULL, "T14 Q",
	  "EHLO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.example>\r\nRCPT TO:<c@y.example>\r\nQUIT\r\n",
	  L_READY_PIPE "MAIL 451 4.3.0 try later; DONE mail_refused 0/0 0; CLOSED; " },
	{ "RSET probe of an idle connection", 0,
	  S_GREET S_EHLO_PLAIN S_OK S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "R T0 Q",
	  C_EHLO C_RSET C_MAIL0 C_RB C_DATA C_HELLO C_QUIT,
	  "READY 8bit; " L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 7; CLOSED; " },
	{ "RSET probe refused", 0,
	  S_GREET S_EHLO_PLAIN "500 5.5.1 what\r\n", NULL, "R",
	  C_EHLO C_RSET C_QUIT,
	  "READY 8bit; FAILED rset rset_refused RSET 500 quit; " },
	{ "QUIT: EOF instead of 221", 0,
	  S_GREET S_EHLO_PLAIN, NULL, "Q", C_EHLO C_QUIT, "READY 8bit; CLOSED; " },

	/* --- 421 at every step (RFC 5321 3.8) --- */
	{ "421 greeting", 0, S_421, NULL, "", "",
	  "FAILED greeting 421 GREETING 421; " },
	{ "554 greeting: QUIT (RFC 5321 3.1)", 0, "554 5.7.1 go away\r\n", NULL, "", C_QUIT,
	  "FAILED greeting greeting_refused GREETING 554 quit; " },
	{ "421 to EHLO", 0, S_GREET S_421, NULL, "", C_EHLO,
	  "FAILED closing 421 HELO 421; " },
	{ "421 to MAIL (pipelined)", 0, S_GREET S_EHLO_PIPE S_421, NULL, "T0",
	  C_EHLO C_MAIL0S C_RB C_DATA, L_READY_PIPE "FAILED closing 421 MAIL 421; " },
	{ "421 to RCPT (lock-step)", 0, S_GREET S_EHLO_PLAIN S_MAIL S_421, NULL, "T0",
	  C_EHLO C_MAIL0 C_RB, "READY 8bit; " L_MAIL "FAILED closing 421 RCPT 421; " },
	{ "421 to DATA", 0, S_GREET S_EHLO_PIPE S_MAIL S_RCPT S_421, NULL, "T0",
	  C_EHLO C_MAIL0S C_RB C_DATA, L_READY_PIPE L_MAIL L_RCPT0 "FAILED closing 421 DATA_INIT 421; " },
	{ "421 at end of data", 0, S_GREET S_EHLO_PIPE S_MAIL S_RCPT S_GO S_421, NULL, "T0",
	  C_EHLO C_MAIL0S C_RB C_DATA C_HELLO, L_READY_PIPE L_MAIL L_RCPT0 "FAILED closing 421 DATA_END 421; " },
	{ "421 to RSET", 0, S_GREET S_EHLO_PIPE "451 4.3.0 later\r\n" "503 5.5.1 need MAIL\r\n" "503 5.5.1 need MAIL\r\n"
	  S_MAIL "550 5.1.1 no\r\n" "554 5.5.1 no rcpt\r\n" S_421, NULL, "T0 T0",
	  C_EHLO C_MAIL0S C_RB C_DATA C_MAIL0S C_RB C_DATA C_RSET,
	  L_READY_PIPE "MAIL 451 4.3.0 later; DONE mail_refused 0/0 0; " L_MAIL
	  "RCPT0 550 5.1.1 no; FAILED closing 421 RSET 421; " },
	{ "unsolicited 421 on an idle connection fails the next command", 0,
	  S_GREET S_EHLO_PLAIN "421 4.4.2 idle timeout\r\n", NULL, "T0",
	  C_EHLO C_MAIL0, "READY 8bit; FAILED closing 421 MAIL 421; " },

	/* --- refusals --- */
	{ "MAIL refused (pipelined): RCPT/DATA 503s are not reported, no RSET", 0,
	  S_GREET S_EHLO_PIPE "550 5.7.1 sender rejected\r\n" "503 5.5.1 need MAIL\r\n"
	  "503 5.5.1 need MAIL\r\n" S_BYE, NULL, "T0 Q",
	  C_EHLO C_MAIL0S C_RB C_DATA C_QUIT,
	  L_READY_PIPE "MAIL 550 5.7.1 sender rejected; DONE mail_refused 0/0 0; CLOSED; " },
	{ "MAIL refused but DATA gets 354: lone dot, no RSET", 0,
	  S_GREET S_EHLO_PIPE "550 5.7.1 sender rejected\r\n" "503 5.5.1 need MAIL\r\n"
	  S_GO "554 5.5.1 no valid recipients\r\n" S_BYE, NULL, "T0 Q",
	  C_EHLO C_MAIL0S C_RB C_DATA ".\r\n" C_QUIT,
	  L_READY_PIPE "MAIL 550 5.7.1 sender rejected; DONE mail_refused 0/0 0; CLOSED; " },
	{ "MAIL refused (lock-step): nothing more sent", 0,
	  S_GREET S_EHLO_PLAIN "451 4.3.0 try later\r\n" S_BYE, NULL, "T0 Q",
	  C_EHLO C_MAIL0 C_QUIT,
	  "READY 8bit; MAIL 451 4.3.0 try later; DONE mail_refused 0/0 0; CLOSED; " },
	{ "some RCPTs refused", 0,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT "450 4.2.0 greylisted\r\n" S_RCPT S_GO S_QUEUED S_BYE, NULL, "T3 Q",
	  C_EHLO C_MAILN C_RB C_RC C_RD C_DATA C_HI C_QUIT,
	  L_READY_PIPE L_MAIL L_RCPT0 "RCPT1 450 4.2.0 greylisted; RCPT2 250 2.1.5 ok; "
	  L_QUEUED "DONE sent 2/2 4; CLOSED; " },
	{ "all RCPTs refused (lock-step): no DATA, RSET", 0,
	  S_GREET S_EHLO_PLAIN S_MAIL "550 5.1.1 no b\r\n" "550 5.1.1 no c\r\n" S_OK S_BYE, NULL, "T2 Q",
	  C_EHLO C_MAILN C_RB C_RC C_RSET C_QUIT,
	  "READY 8bit; " L_MAIL "RCPT0 550 5.1.1 no b; RCPT1 550 5.1.1 no c; DONE no_rcpt 0/0 0; CLOSED; " },
	{ "RFC2920-3.1 all RCPTs refused but DATA gets 354: lone dot", 0,
	  S_GREET S_EHLO_PIPE S_MAIL "550 5.1.1 no\r\n" S_GO "554 5.5.1 no recipients\r\n" S_OK S_BYE, NULL, "T1 Q",
	  C_EHLO C_MAIL0 C_RC C_DATA ".\r\n" C_RSET C_QUIT,
	  L_READY_PIPE L_MAIL "RCPT0 550 5.1.1 no; DONE no_rcpt 0/0 0; CLOSED; " },
	{ "DATA refused: RSET", 0,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT "451 4.3.0 local error\r\n" S_OK S_BYE, NULL, "T0 Q",
	  C_EHLO C_MAIL0S C_RB C_DATA C_RSET C_QUIT,
	  L_READY_PIPE L_MAIL L_RCPT0 "DATA* 451 4.3.0 local error; DONE data_refused 1/0 0; CLOSED; " },
	{ "end of data refused: no RSET", 0,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT S_GO "554 5.7.1 spam\r\n" S_BYE, NULL, "T0 Q",
	  C_EHLO C_MAIL0S C_RB C_DATA C_HELLO C_QUIT,
	  L_READY_PIPE L_MAIL L_RCPT0 "DATA* 554 5.7.1 spam; DONE sent 1/0 7; CLOSED; " },
	{ "end of data 452, then another message", 0,
	  S_GREET S_EHLO_PLAIN S_MAIL S_RCPT S_GO "452 4.3.1 full\r\n" S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T1 T1 Q",
	  C_EHLO C_MAIL0 C_RC C_DATA C_HELLO C_MAIL0 C_RC C_DATA C_HELLO C_QUIT,
	  "READY 8bit; " L_MAIL L_RCPT0 "DATA* 452 4.3.1 full; DONE sent 1/0 7; "
	  L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 7; CLOSED; " },

	/* --- EHLO/HELO/LHLO --- */
	{ "EHLO refused: HELO fallback", 0,
	  S_GREET "502 5.5.2 no EHLO here\r\n" "250 mx.example\r\n" S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T0 Q",
	  C_EHLO "HELO client.example\r\n" C_MAIL0 C_RB C_DATA C_HELLO C_QUIT,
	  "READY; " L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 7; CLOSED; " },
	{ "EHLO and HELO refused", 0,
	  S_GREET "500 5.5.1 what\r\n" "550 5.7.1 go away\r\n", NULL, "",
	  C_EHLO "HELO client.example\r\n" C_QUIT,
	  "FAILED helo helo_refused HELO 550 quit; " },
	{ "EHLO 4xx: no fallback", 0,
	  S_GREET "450 4.7.1 later\r\n", NULL, "", C_EHLO C_QUIT,
	  "FAILED helo ehlo_refused HELO 450 quit; " },
	{ "RFC2033 LMTP: one reply per accepted recipient", F_LMTP,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT "550 5.1.1 no c\r\n" S_RCPT S_GO
	  "250 2.0.0 b ok\r\n" "452 4.2.2 d over quota\r\n" S_BYE, NULL, "T3 Q",
	  C_LHLO C_MAILN C_RB C_RC C_RD C_DATA C_HI C_QUIT,
	  L_READY_PIPE L_MAIL L_RCPT0 "RCPT1 550 5.1.1 no c; RCPT2 250 2.1.5 ok; "
	  "DATA0 250 2.0.0 b ok; DATA2 452 4.2.2 d over quota; DONE sent 2/1 4; CLOSED; " },
	{ "LMTP: LHLO refused, no HELO", F_LMTP,
	  S_GREET "500 5.5.1 no\r\n", NULL, "", C_LHLO C_QUIT,
	  "FAILED helo ehlo_refused HELO 500 quit; " },
	{ "LMTP: 354 with no accepted recipient is a violation", F_LMTP,
	  S_GREET S_EHLO_PIPE S_MAIL "550 5.1.1 no\r\n" S_GO, NULL, "T1",
	  C_LHLO C_MAIL0 C_RC C_DATA,
	  L_READY_PIPE L_MAIL "RCPT0 550 5.1.1 no; FAILED protocol 354_without_rcpt DATA_INIT 354; " },

	/* --- the next transaction behind the end of data (RFC 2920 3.1) --- */
	{ "next transaction pipelined behind the end of data", F_NEXT,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT S_GO S_QUEUED S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T0 T1 Q",
	  C_EHLO C_MAIL0S C_RB C_DATA C_HELLO C_MAIL0 C_RC C_DATA C_HELLO C_QUIT,
	  L_READY_PIPE "MAIL@0 250 2.1.0 ok; RCPT0@0 250 2.1.5 ok; NEXT T1; DATA*@0 250 2.0.0 queued; "
	  "DONE@0 sent 1/1 7; MAIL@1 250 2.1.0 ok; RCPT0@1 250 2.1.5 ok; NEXT -; "
	  "DATA*@1 250 2.0.0 queued; DONE@1 sent 1/1 7; CLOSED; " },
	{ "three transactions back to back, one round trip each", F_NEXT,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT S_GO S_QUEUED S_MAIL S_RCPT S_GO S_QUEUED
	  S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T0 T1 T0 Q",
	  C_EHLO C_MAIL0S C_RB C_DATA C_HELLO C_MAIL0 C_RC C_DATA C_HELLO C_MAIL0S C_RB C_DATA C_HELLO C_QUIT,
	  L_READY_PIPE "MAIL@0 250 2.1.0 ok; RCPT0@0 250 2.1.5 ok; NEXT T1; DATA*@0 250 2.0.0 queued; "
	  "DONE@0 sent 1/1 7; MAIL@1 250 2.1.0 ok; RCPT0@1 250 2.1.5 ok; NEXT T0; "
	  "DATA*@1 250 2.0.0 queued; DONE@1 sent 1/1 7; MAIL@0 250 2.1.0 ok; RCPT0@0 250 2.1.5 ok; NEXT -; "
	  "DATA*@0 250 2.0.0 queued; DONE@0 sent 1/1 7; CLOSED; " },
	{ "next transaction declined: it waits for the end-of-data reply", F_NEXT,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT S_GO S_QUEUED S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T0 - T1 Q",
	  C_EHLO C_MAIL0S C_RB C_DATA C_HELLO C_MAIL0 C_RC C_DATA C_HELLO C_QUIT,
	  L_READY_PIPE "MAIL@0 250 2.1.0 ok; RCPT0@0 250 2.1.5 ok; NEXT -; DATA*@0 250 2.0.0 queued; "
	  "DONE@0 sent 1/1 7; MAIL@1 250 2.1.0 ok; RCPT0@1 250 2.1.5 ok; NEXT -; "
	  "DATA*@1 250 2.0.0 queued; DONE@1 sent 1/1 7; CLOSED; " },
	{ "end of data refused, the next transaction goes on", F_NEXT,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT S_GO "554 5.7.1 spam\r\n" S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T0 T1 Q",
	  C_EHLO C_MAIL0S C_RB C_DATA C_HELLO C_MAIL0 C_RC C_DATA C_HELLO C_QUIT,
	  L_READY_PIPE "MAIL@0 250 2.1.0 ok; RCPT0@0 250 2.1.5 ok; NEXT T1; DATA*@0 554 5.7.1 spam; "
	  "DONE@0 sent 1/0 7; MAIL@1 250 2.1.0 ok; RCPT0@1 250 2.1.5 ok; NEXT -; "
	  "DATA*@1 250 2.0.0 queued; DONE@1 sent 1/1 7; CLOSED; " },
	{ "next transaction's MAIL refused behind the end of data: no DATA, no RSET", F_NEXT,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT S_GO S_QUEUED "452 4.3.1 queue full\r\n"
	  "503 5.5.1 need MAIL\r\n" "503 5.5.1 need MAIL\r\n" S_BYE, NULL, "T0 T1 Q",
	  C_EHLO C_MAIL0S C_RB C_DATA C_HELLO C_MAIL0 C_RC C_DATA C_QUIT,
	  L_READY_PIPE "MAIL@0 250 2.1.0 ok; RCPT0@0 250 2.1.5 ok; NEXT T1; DATA*@0 250 2.0.0 queued; "
	  "DONE@0 sent 1/1 7; MAIL@1 452 4.3.1 queue full; DONE@1 mail_refused 0/0 0; CLOSED; " },
	{ "next transaction's RCPT refused: its 354 gets a lone dot, then RSET", F_NEXT,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT S_GO S_QUEUED S_MAIL "550 5.1.1 no c\r\n" S_GO
	  "554 5.5.1 no valid recipients\r\n" S_OK S_BYE, NULL, "T0 T1 Q",
	  C_EHLO C_MAIL0S C_RB C_DATA C_HELLO C_MAIL0 C_RC C_DATA ".\r\n" C_RSET C_QUIT,
	  L_READY_PIPE "MAIL@0 250 2.1.0 ok; RCPT0@0 250 2.1.5 ok; NEXT T1; DATA*@0 250 2.0.0 queued; "
	  "DONE@0 sent 1/1 7; MAIL@1 250 2.1.0 ok; RCPT0@1 550 5.1.1 no c; DONE@1 no_rcpt 0/0 0; CLOSED; " },
	{ "421 at the end of data with the next transaction in flight", F_NEXT,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT S_GO S_421, NULL, "T0 T1 Q",
	  C_EHLO C_MAIL0S C_RB C_DATA C_HELLO C_MAIL0 C_RC C_DATA,
	  L_READY_PIPE "MAIL@0 250 2.1.0 ok; RCPT0@0 250 2.1.5 ok; NEXT T1; FAILED closing 421 DATA_END 421; " },
	{ "EOF after the first end-of-data reply, next transaction in flight", F_NEXT,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT S_GO S_QUEUED, NULL, "T0 T1 Q",
	  C_EHLO C_MAIL0S C_RB C_DATA C_HELLO C_MAIL0 C_RC C_DATA,
	  L_READY_PIPE "MAIL@0 250 2.1.0 ok; RCPT0@0 250 2.1.5 ok; NEXT T1; DATA*@0 250 2.0.0 queued; "
	  "DONE@0 sent 1/1 7; FAILED eof eof MAIL; " },
	{ "no next transaction without PIPELINING", F_NEXT,
	  S_GREET S_EHLO_PLAIN S_MAIL S_RCPT S_GO S_QUEUED S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T0 T1 Q",
	  C_EHLO C_MAIL0 C_RB C_DATA C_HELLO C_MAIL0 C_RC C_DATA C_HELLO C_QUIT,
	  "READY 8bit; MAIL@0 250 2.1.0 ok; RCPT0@0 250 2.1.5 ok; DATA*@0 250 2.0.0 queued; "
	  "DONE@0 sent 1/1 7; MAIL@1 250 2.1.0 ok; RCPT0@1 250 2.1.5 ok; "
	  "DATA*@1 250 2.0.0 queued; DONE@1 sent 1/1 7; CLOSED; " },
	{ "LMTP: per-recipient end-of-data replies, then the next transaction's", F_NEXT | F_LMTP,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT "550 5.1.1 no c\r\n" S_RCPT S_GO
	  "250 2.0.0 b ok\r\n" "452 4.2.2 d over quota\r\n" S_MAIL S_RCPT S_GO "250 2.0.0 c ok\r\n" S_BYE,
	  NULL, "T3 T1 Q",
	  C_LHLO C_MAILN C_RB C_RC C_RD C_DATA C_HI C_MAIL0 C_RC C_DATA C_HELLO C_QUIT,
	  L_READY_PIPE "MAIL@3 250 2.1.0 ok; RCPT0@3 250 2.1.5 ok; RCPT1@3 550 5.1.1 no c; RCPT2@3 250 2.1.5 ok; "
	  "NEXT T1; DATA0@3 250 2.0.0 b ok; DATA2@3 452 4.2.2 d over quota; DONE@3 sent 2/1 4; "
	  "MAIL@1 250 2.1.0 ok; RCPT0@1 250 2.1.5 ok; NEXT -; DATA0@1 250 2.0.0 c ok; DONE@1 sent 1/1 7; CLOSED; " },
	{ "BDAT LAST, then the next transaction in the same send", F_NEXT,
	  S_GREET S_EHLO_CHUNK S_MAIL S_RCPT S_QUEUED S_MAIL S_RCPT S_QUEUED S_BYE, NULL, "T0 T1 Q",
	  C_EHLO C_MAIL0 C_RB "BDAT 7 LAST\r\nHello\r\n" C_MAIL0 C_RC "BDAT 7 LAST\r\nHello\r\n" C_QUIT,
	  "READY pipe 8bit chunk; MAIL@0 250 2.1.0 ok; RCPT0@0 250 2.1.5 ok; NEXT T1; DATA*@0 250 2.0.0 queued; "
	  "DONE@0 sent 1/1 7; MAIL@1 250 2.1.0 ok; RCPT0@1 250 2.1.5 ok; NEXT -; "
	  "DATA*@1 250 2.0.0 queued; DONE@1 sent 1/1 7; CLOSED; " },
	{ "BDAT: the next transaction once only the LAST reply is outstanding", F_NEXT,
	  S_GREET S_EHLO_CHUNK S_MAIL S_RCPT S_OK S_OK S_QUEUED S_MAIL S_RCPT S_QUEUED S_BYE, NULL, "T11 T1 Q",
	  C_EHLO C_MAIL0 C_RB "BDAT 7\r\nHello\r\nBDAT 7\r\nWorld\r\nBDAT 3 LAST\r\n!\r\n"
	  C_MAIL0 C_RC "BDAT 7 LAST\r\nHello\r\n" C_QUIT,
	  "READY pipe 8bit chunk; MAIL@11 250 2.1.0 ok; RCPT0@11 250 2.1.5 ok; NEXT T1; DATA*@11 250 2.0.0 queued; "
	  "DONE@11 sent 1/1 17; MAIL@1 250 2.1.0 ok; RCPT0@1 250 2.1.5 ok; NEXT -; "
	  "DATA*@1 250 2.0.0 queued; DONE@1 sent 1/1 7; CLOSED; " },

	/* --- BDAT (RFC 3030) --- */
	{ "BDAT with PIPELINING", 0,
	  S_GREET S_EHLO_CHUNK S_MAIL S_RCPT S_OK S_OK "250 2.0.0 queued\r\n" S_BYE, NULL, "T11 Q",
	  C_EHLO C_MAIL0 C_RB "BDAT 7\r\nHello\r\nBDAT 7\r\nWorld\r\nBDAT 3 LAST\r\n!\r\n" C_QUIT,
	  "READY pipe 8bit chunk; " L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 17; CLOSED; " },
	{ "BDAT lock-step, no stuffing", 0,
	  S_GREET S_EHLO_CHUNK1 S_MAIL S_RCPT S_OK S_OK "250 2.0.0 queued\r\n" S_BYE, NULL, "T4 Q",
	  C_EHLO C_MAIL0 C_RB "BDAT 6\r\n..a\r\n.BDAT 6\r\nb\r\n.\r\nBDAT 1 LAST\r\nx" C_QUIT,
	  "READY chunk; " L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 13; CLOSED; " },
	{ "BDAT empty body: BDAT 0 LAST", 0,
	  S_GREET S_EHLO_CHUNK S_MAIL S_RCPT S_QUEUED S_BYE, NULL, "T9 Q",
	  C_EHLO C_MAIL0 C_RB "BDAT 0 LAST\r\n" C_QUIT,
	  "READY pipe 8bit chunk; " L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 0; CLOSED; " },
	{ "BDAT chunk refused: no more chunks, RSET", 0,
	  S_GREET S_EHLO_CHUNK1 S_MAIL S_RCPT "552 5.3.4 too big\r\n" S_OK S_BYE, NULL, "T11 Q",
	  C_EHLO C_MAIL0 C_RB "BDAT 7\r\nHello\r\n" C_RSET C_QUIT,
	  "READY chunk; " L_MAIL L_RCPT0 "DATA* 552 5.3.4 too big; DONE data_refused 1/0 7; CLOSED; " },
	{ "BDAT pipelined chunk refused after LAST was sent", 0,
	  S_GREET S_EHLO_CHUNK S_MAIL S_RCPT "552 5.3.4 too big\r\n" "554 5.5.1 failed\r\n"
	  "554 5.5.1 failed\r\n" S_OK S_BYE, NULL, "T11 Q",
	  C_EHLO C_MAIL0 C_RB "BDAT 7\r\nHello\r\nBDAT 7\r\nWorld\r\nBDAT 3 LAST\r\n!\r\n" C_RSET C_QUIT,
	  "READY pipe 8bit chunk; " L_MAIL L_RCPT0 "DATA* 552 5.3.4 too big; DONE data_refused 1/0 17; CLOSED; " },
	{ "BDAT all RCPTs refused: no chunk sent", 0,
	  S_GREET S_EHLO_CHUNK S_MAIL "550 5.1.1 no\r\n" S_OK S_BYE, NULL, "T0 Q",
	  C_EHLO C_MAIL0 C_RB C_RSET C_QUIT,
	  "READY pipe 8bit chunk; " L_MAIL "RCPT0 550 5.1.1 no; DONE no_rcpt 0/0 0; CLOSED; " },
	{ "BDAT host abort before the body", 0,
	  S_GREET S_EHLO_CHUNK S_MAIL S_RCPT S_OK S_BYE, NULL, "T0 A0 Q",
	  C_EHLO C_MAIL0 C_RB C_RSET C_QUIT,
	  "READY pipe 8bit chunk; " L_MAIL L_RCPT0 "ABORT OK; DONE aborted 1/0 0; CLOSED; " },
	{ "BDAT host abort between chunks", 0,
	  S_GREET S_EHLO_CHUNK1 S_MAIL S_RCPT S_OK S_OK S_BYE, NULL, "T11 A1 Q",
	  C_EHLO C_MAIL0 C_RB "BDAT 7\r\nHello\r\n" C_RSET C_QUIT,
	  "READY chunk; " L_MAIL L_RCPT0 "ABORT OK; DONE aborted 1/0 7; CLOSED; " },
	{ "BDAT pipelined host abort with chunks in flight", 0,
	  S_GREET S_EHLO_CHUNK S_MAIL S_RCPT S_OK S_OK S_OK S_BYE, NULL, "T11 A2 Q",
	  C_EHLO C_MAIL0 C_RB "BDAT 7\r\nHello\r\nBDAT 7\r\nWorld\r\n" C_RSET C_QUIT,
	  "READY pipe 8bit chunk; " L_MAIL L_RCPT0 "ABORT OK; DONE aborted 1/0 14; CLOSED; " },
	{ "BDAT not used when use_chunking is off", F_NOCHUNK,
	  S_GREET S_EHLO_CHUNK S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T11 Q",
	  C_EHLO C_MAIL0 C_RB C_DATA "Hello\r\nWorld\r\n!\r\n.\r\n" C_QUIT,
	  "READY pipe 8bit chunk; " L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 17; CLOSED; " },
	{ "LMTP with BDAT LAST: per-recipient replies", F_LMTP,
	  S_GREET S_EHLO_CHUNK S_MAIL S_RCPT S_RCPT "250 2.0.0 b ok\r\n" "550 5.2.1 c disabled\r\n" S_BYE, NULL, "T2 Q",
	  C_LHLO C_MAILN C_RB C_RC "BDAT 4 LAST\r\nHi\r\n" C_QUIT,
	  "READY pipe 8bit chunk; " L_MAIL L_RCPT0 L_RCPT1 "DATA0 250 2.0.0 b ok; DATA1 550 5.2.1 c disabled; DONE sent 2/1 4; CLOSED; " },

	/* --- DATA transparency (RFC 5321 4.5.2) --- */
	{ "dot-stuffing across body pieces", 0,
	  S_GREET S_EHLO_PLAIN S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T4 Q",
	  C_EHLO C_MAIL0 C_RB C_DATA "...a\r\n..b\r\n..\r\nx\r\n.\r\n" C_QUIT,
	  "READY 8bit; " L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 13; CLOSED; " },
	{ "body not ending in CRLF", 0,
	  S_GREET S_EHLO_PLAIN S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T12 Q",
	  C_EHLO C_MAIL0 C_RB C_DATA "no newline\r\n.\r\n" C_QUIT,
	  "READY 8bit; " L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 10; CLOSED; " },
	{ "empty body", 0,
	  S_GREET S_EHLO_PLAIN S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T9 Q",
	  C_EHLO C_MAIL0 C_RB C_DATA ".\r\n" C_QUIT,
	  "READY 8bit; " L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 0; CLOSED; " },
	{ "DATA body cannot be aborted", 0,
	  S_GREET S_EHLO_PLAIN S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T0 A0 Q",
	  C_EHLO C_MAIL0 C_RB C_DATA C_HELLO C_QUIT,
	  "READY 8bit; " L_MAIL L_RCPT0 "ABORT E_BUSY; " L_QUEUED "DONE sent 1/1 7; CLOSED; " },

	/* --- parameters and host errors --- */
	{ "RFC3461 DSN parameters when offered", 0,
	  S_GREET S_EHLO_PIPE S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T5 Q",
	  C_EHLO "MAIL FROM:<a@x.example> RET=HDRS ENVID=QQ123\r\n"
	  "RCPT TO:<b@y.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.example\r\n" C_DATA C_HI C_QUIT,
	  L_READY_PIPE L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 4; CLOSED; " },
	{ "DSN parameters dropped when not offered", 0,
	  S_GREET S_EHLO_PLAIN S_MAIL S_RCPT S_GO S_QUEUED S_BYE, NULL, "T5 Q",
	  C_EHLO C_MAIL0 C_RB C_DATA C_HI C_QUIT,
	  "READY 8bit; " L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 4; CLOSED; " },
	{ "RFC6531-3.4 SMTPUTF8 not offered", 0, S_GREET S_EHLO_PIPE S_BYE, NULL, "T6 Q",
	  C_EHLO C_QUIT, L_READY_PIPE "ERR E_NEED_EXT; CLOSED; " },
	{ "RFC6152 8BITMIME not offered", 0, S_GREET "250-mx.example\r\n250 PIPELINING\r\n" S_BYE, NULL, "T10 Q",
	  C_EHLO C_QUIT, "READY pipe; ERR E_NEED_EXT; CLOSED; " },
	{ "RFC1870 SIZE over the peer's limit", 0, S_GREET S_EHLO_PIPE S_BYE, NULL, "T7 Q",
	  C_EHLO C_QUIT, L_READY_PIPE "ERR E_TOO_BIG; CLOSED; " },
	{ "CRLF injection in a recipient address", 0, S_GREET S_EHLO_PIPE S_BYE, NULL, "T8 Q",
	  C_EHLO C_QUIT, L_READY_PIPE "ERR E_ADDR; CLOSED; " },
	{ "CRLF injection in the sender address", 0, S_GREET S_EHLO_PIPE S_BYE, NULL, "T13 Q",
	  C_EHLO C_QUIT, L_READY_PIPE "ERR E_ADDR; CLOSED; " },

	/* --- STARTTLS (RFC 3207) --- */
	{ "STARTTLS, then EHLO again", F_TLS,
	  S_GREET S_EHLO_TLS "220 2.0.0 ready\r\n",
	  S_EHLO_PIPE S_MAIL S_RCPT S_GO S_QUEUED S_BYE, "T0 Q",
	  C_EHLO "STARTTLS\r\n" C_EHLO C_MAIL0S C_RB C_DATA C_HELLO C_QUIT,
	  "STARTTLS; " L_READY_PIPE L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 7; CLOSED; " },
	{ "CVE-2021-38371 STARTTLS response injection: plaintext after 220 dropped", F_TLS,
	  S_GREET S_EHLO_TLS "220 2.0.0 ready\r\n" "250-evil\r\n250 DSN\r\n" S_MAIL,
	  S_EHLO_PLAIN S_MAIL S_RCPT S_GO S_QUEUED S_BYE, "T0 Q",
	  C_EHLO "STARTTLS\r\n" C_EHLO C_MAIL0 C_RB C_DATA C_HELLO C_QUIT,
	  "STARTTLS; READY 8bit; " L_MAIL L_RCPT0 L_QUEUED "DONE sent 1/1 7; CLOSED; " },
	{ "STARTTLS refused: go on in the clear", F_TLS,
	  S_GREET S_EHLO_TLS "454 4.7.0 TLS not available\r\n" S_BYE, NULL, "Q",
	  C_EHLO "STARTTLS\r\n" C_QUIT, "READY pipe; CLOSED; " },
	{ "require_tls, STARTTLS refused", F_TLS | F_REQTLS,
	  S_GREET S_EHLO_TLS "454 4.7.0 TLS not available\r\n", NULL, "",
	  C_EHLO "STARTTLS\r\n" C_QUIT, "FAILED tls_required starttls_refused HELO 454 quit; " },
	{ "require_tls, STARTTLS not offered", F_REQTLS,
	  S_GREET S_EHLO_PLAIN, NULL, "", C_EHLO C_QUIT,
	  "FAILED tls_required no_starttls NONE quit; " },

	/* --- reply syntax (RFC 5321 4.2) --- */
	{ "multi-line reply text and enhanced codes", 0,
	  S_GREET S_EHLO_PLAIN S_MAIL "550-5.1.1 line one\r\n550-5.1.1 line two\r\n550 also three\r\n" S_OK S_BYE,
	  NULL, "T0 Q", C_EHLO C_MAIL0 C_RB C_RSET C_QUIT,
	  "READY 8bit; " L_MAIL "RCPT0 550 5.1.1 line one|line two|also three; DONE no_rcpt 0/0 0; CLOSED; " },
	{ "code only, no text", 0, S_GREET "250-mx.example\r\n250\r\n" S_BYE, NULL, "Q",
	  C_EHLO C_QUIT, "READY; CLOSED; " },
	{ "enhanced code of another class is text", 0,
	  S_GREET S_EHLO_PLAIN S_MAIL "550 2.1.5 odd\r\n" S_OK S_BYE, NULL, "T0 Q",
	  C_EHLO C_MAIL0 C_RB C_RSET C_QUIT,
	  "READY 8bit; " L_MAIL "RCPT0 550 2.1.5 odd; DONE no_rcpt 0/0 0; CLOSED; " },
	{ "code mismatch in a multi-line reply", 0, S_GREET "250-mx.example\r\n251 PIPELINING\r\n", NULL, "",
	  C_EHLO, "FAILED protocol code_mismatch HELO; " },
	{ "bad reply code", 0, S_GREET "2x0 hello\r\n", NULL, "", C_EHLO,
	  "FAILED protocol bad_reply_code HELO; " },
	{ "reply code 600", 0, "600 what\r\n", NULL, "", "",
	  "FAILED protocol bad_reply_code GREETING; " },
	{ "bad separator", 0, S_GREET "250_mx\r\n", NULL, "", C_EHLO,
	  "FAILED protocol bad_reply_separator HELO; " },
	{ "bare LF in a reply", 0, S_GREET "250 mx\n", NULL, "", C_EHLO,
	  "FAILED protocol bare_lf HELO; " },
	{ "bare LF accepted when lenient", F_BARELF, S_GREET "250-mx\n250 PIPELINING\n" S_BYE, NULL, "Q",
	  C_EHLO C_QUIT, "READY pipe; CLOSED; " },
	{ "bare CR in a reply", 0, S_GREET "250 m\rx\r\n", NULL, "", C_EHLO,
	  "FAILED protocol bad_char HELO; " },
	{ "RFC5321-4.5.3.1.5 reply line too long", F_LINE64,
	  S_GREET "250 0123456789012345678901234567890123456789012345678901234567890\r\n", NULL, "", C_EHLO,
	  "FAILED line_too_long line_too_long HELO; " },
	{ "reply line at the limit", F_LINE64,
	  S_GREET "250 0123456789012345678901234567890123456789012345678901234567\r\n" S_BYE, NULL, "Q",
	  C_EHLO C_QUIT, "READY; CLOSED; " },
	{ "too many reply lines", F_LINES4,
	  S_GREET "250-a\r\n250-b\r\n250-c\r\n250-d\r\n250 e\r\n", NULL, "", C_EHLO,
	  "FAILED too_many_lines too_many_lines HELO; " },
	{ "3xx to MAIL", 0, S_GREET S_EHLO_PLAIN "354 what\r\n", NULL, "T0", C_EHLO C_MAIL0,
	  "READY 8bit; FAILED protocol unexpected_3xx MAIL 354; " },
	{ "2xx to DATA", 0, S_GREET S_EHLO_PLAIN S_MAIL S_RCPT "250 what\r\n", NULL, "T0",
	  C_EHLO C_MAIL0 C_RB C_DATA, "READY 8bit; " L_MAIL L_RCPT0 "FAILED protocol 2xx_to_data DATA_INIT 250; " },
	{ "EOF in the middle of a transaction", 0, S_GREET S_EHLO_PIPE S_MAIL, NULL, "T0",
	  C_EHLO C_MAIL0S C_RB C_DATA, L_READY_PIPE L_MAIL "FAILED eof eof RCPT; " },
	{ "EOF in the middle of a reply line", 0, S_GREET "250-mx.example\r\n250 PIPE", NULL, "",
	  C_EHLO, "FAILED eof eof HELO; " },
};

/* --- the driver ---------------------------------------------------------------------- */

#define SPLIT_WHOLE (-1)
#define SPLIT_BYTE  (-2)
#define DRAIN_ALL   0
#define DRAIN_LAZY  1

struct run {
	char log[4096];
	size_t log_len;
	uint8_t out[1 << 18];
	size_t out_len;
	bool is_broken;         /* a driver-detected failure (reported once) */
	/* the lazy drain's send in flight */
	const uint8_t *fl_p;
	size_t fl_len;
	uint8_t fl_copy[SMTP_CLIENT_OUT_BYTES];
};

static void logf_(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(struct run *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(r->log + r->log_len, sizeof(r->log) - r->log_len, fmt, ap);
	va_end(ap);
	if (n > 0 && (size_t)n < sizeof(r->log) - r->log_len)
		r->log_len += (size_t)n;
}

static void log_reply(struct run *r, const struct smtp_client_reply *rp)
{
	logf_(r, " %u", rp->code);
	if (rp->esc[0])
		logf_(r, " %s", rp->esc);
	if (rp->text_len) {
		logf_(r, " ");
		for (size_t i = 0; i < rp->text_len; i++)
			logf_(r, "%c", rp->text[i] == '\n' ? '|' : rp->text[i]);
	}
}

static const char *const status_names[] = {
	"sent", "mail_refused", "no_rcpt", "data_refused", "aborted",
};

static bool g_log_txn;   /* the case has F_NEXT: name each event's transaction */

static void log_ev(struct run *r, const struct smtp_client_ev *ev)
{
	char at[16] = "";

	if (g_log_txn && ev->txn != NULL)
		snprintf(at, sizeof(at), "@%d", (int)((const struct ttxn *)(const void *)ev->txn - txns));
	switch (ev->kind) {
	case SMTP_CLIENT_EV_READY: {
		const struct smtp_client_caps *k = ev->caps;

		logf_(r, "READY");
		if (k->pipelining) logf_(r, " pipe");
		if (k->has_size) logf_(r, " size=%llu", (unsigned long long)k->size_max);
		if (k->eightbitmime) logf_(r, " 8bit");
		if (k->smtputf8) logf_(r, " utf8");
		if (k->chunking) logf_(r, " chunk");
		if (k->binarymime) logf_(r, " binary");
		if (k->dsn) logf_(r, " dsn");
		if (k->starttls) logf_(r, " tls");
		if (k->enhancedstatuscodes) logf_(r, " esc");
		break;
	}
	case SMTP_CLIENT_EV_STARTTLS: logf_(r, "STARTTLS"); break;
	case SMTP_CLIENT_EV_MAIL_RESULT: logf_(r, "MAIL%s", at); log_reply(r, ev->reply); break;
	case SMTP_CLIENT_EV_RCPT_RESULT: logf_(r, "RCPT%u%s", ev->rcpt_index, at); log_reply(r, ev->reply); break;
	case SMTP_CLIENT_EV_DATA_RESULT:
		if (ev->is_all)
			logf_(r, "DATA*%s", at);
		else
			logf_(r, "DATA%u%s", ev->rcpt_index, at);
		log_reply(r, ev->reply);
		break;
	case SMTP_CLIENT_EV_TXN_DONE:
		logf_(r, "DONE%s %s %u/%u %llu", at, status_names[ev->done.status], ev->done.n_rcpt_accepted,
		      ev->done.n_rcpt_delivered, (unsigned long long)ev->done.body_bytes);
		break;
	case SMTP_CLIENT_EV_CLOSED: logf_(r, "CLOSED"); break;
	case SMTP_CLIENT_EV_FAILED:
		logf_(r, "FAILED %s %s %s", smtp_client_fail_name(ev->fail), ev->reason,
		      smtp_client_phase_name(ev->phase));
		if (ev->reply)
			logf_(r, " %u", ev->reply->code);
		if (ev->is_quit_queued)
			logf_(r, " quit");
		break;
	default:
		return;
	}
	logf_(r, "; ");
}

static void out_take(struct run *r, const uint8_t *p, size_t n)
{
	if (r->out_len + n > sizeof(r->out)) {
		r->is_broken = true;
		return;
	}
	memcpy(r->out + r->out_len, p, n);
	r->out_len += n;
}

/* flight_done - the lazy send completes: its bytes must not have moved or changed. */
static void flight_done(struct smtp_client *c, struct run *r)
{
	if (r->fl_p == NULL)
		return;
	if (memcmp(r->fl_p, r->fl_copy, r->fl_len) != 0) {
		T_CHECK(0, "bytes in flight changed");
		r->is_broken = true;
	}
	out_take(r, r->fl_p, r->fl_len);
	smtp_client_output_done(c, r->fl_len);
	r->fl_p = NULL;
}

static void drain_all(struct smtp_client *c, struct run *r)
{
	const uint8_t *p;
	size_t n;

	flight_done(c, r);
	while ((p = smtp_client_output(c, &n)), n > 0) {
		out_take(r, p, n);
		smtp_client_output_done(c, n);
	}
}

/* drain_lazy - complete the send in flight, start the next one (at most 1000 bytes, to wrap the ring). */
static void drain_lazy(struct smtp_client *c, struct run *r)
{
	size_t n;

	flight_done(c, r);
	r->fl_p = smtp_client_output(c, &n);
	if (n > 1000)
		n = 1000;
	if (n == 0) {
		r->fl_p = NULL;
		return;
	}
	r->fl_len = n;
	memcpy(r->fl_copy, r->fl_p, n);
}

struct feeder {
	const char *s;
	size_t len, pos;
	long split;
};

/* feed_piece - the next piece per the split mode, from a guard-page copy. false: exhausted. */
static bool feed_piece(struct smtp_client *c, struct feeder *f, struct run *r)
{
	size_t n, maplen, taken;
	void *base;
	uint8_t *g;

	if (f->pos >= f->len)
		return false;
	n = f->len - f->pos;
	if (f->split == SPLIT_BYTE)
		n = 1;
	else if (f->split >= 0 && f->pos < (size_t)f->split && (size_t)f->split - f->pos < n)
		n = (size_t)f->split - f->pos;
	g = t_guard_copy(f->s + f->pos, n, &base, &maplen);
	taken = smtp_client_feed(c, g, n);
	t_guard_free(base, maplen);
	if (taken == 0) {
		T_CHECK(0, "feed took nothing at %zu", f->pos);
		r->is_broken = true;
	}
	f->pos += taken;
	return true;
}

struct host {
	const char *act;
	const struct ttxn *tx;
	unsigned piece;
	size_t off;
	unsigned n_body_waits;  /* WAIT BODY events of this transaction so far */
};

/* next_action - the next action token: 'T' (with *n), 'Q', 'R', 'A', or 0 at the end. */
static char next_action(struct host *h, unsigned *n, bool take)
{
	const char *p = h->act;
	char a;

	while (*p == ' ')
		p++;
	a = *p;
	if (a == 0)
		return 0;
	p++;
	*n = 0;
	while (*p >= '0' && *p <= '9')
		*n = *n * 10 + (unsigned)(*p++ - '0');
	if (take)
		h->act = p;
	return a;
}

static void host_wait_txn(struct smtp_client *c, struct host *h, struct run *r)
{
	unsigned n;
	char a = next_action(h, &n, true);
	int rc = 0;

	if (a == 'T') {
		h->tx = &txns[n];
		h->piece = 0;
		h->off = 0;
		h->n_body_waits = 0;
		rc = smtp_client_begin_txn(c, &txns[n].t);
	} else if (a == 'R') {
		rc = smtp_client_rset(c);
	} else {
		rc = smtp_client_quit(c);
	}
	if (rc)
		logf_(r, "ERR %s; ", smtp_client_err_name(rc));
}

/* host_wait_next - WAIT NEXT: begin the next T action now, or decline. */
static void host_wait_next(struct smtp_client *c, struct host *h, struct run *r)
{
	unsigned n;
	char a = next_action(h, &n, false);
	int rc;

	if (a != 'T') {
		if (a == '-')
			next_action(h, &n, true);
		logf_(r, "NEXT -; ");
		return;
	}
	next_action(h, &n, true);
	logf_(r, "NEXT T%u; ", n);
	h->tx = &txns[n];
	h->piece = 0;
	h->off = 0;
	h->n_body_waits = 0;
	rc = smtp_client_begin_txn(c, &txns[n].t);
	if (rc)
		logf_(r, "ERR %s; ", smtp_client_err_name(rc));
}

static void host_wait_body(struct smtp_client *c, struct host *h, struct run *r)
{
	unsigned n;
	const char *p;
	size_t len;
	bool is_last;

	if (next_action(h, &n, false) == 'A' && n == h->n_body_waits++) {
		next_action(h, &n, true);
		logf_(r, "ABORT %s; ", smtp_client_err_name(smtp_client_rset(c)));
		if (smtp_client_phase(c) != SMTP_CLIENT_PHASE_DATA_BLOCK)
			return;
	}
	p = h->tx->body[h->piece];
	len = strlen(p);
	is_last = h->tx->body[h->piece + 1] == NULL;
	h->off += smtp_client_body(c, (const uint8_t *)p + h->off, len - h->off, is_last);
	if (h->off == len && !is_last) {
		h->piece++;
		h->off = 0;
	}
}

static void lim_of(const struct scase *sc, struct smtp_client_limits *lim)
{
	smtp_client_limits_default(lim);
	lim->helo_name = "client.example";
	lim->is_lmtp = sc->flags & F_LMTP;
	lim->use_pipelining = !(sc->flags & F_NOPIPE);
	lim->use_chunking = !(sc->flags & F_NOCHUNK);
	lim->use_starttls = sc->flags & F_TLS;
	lim->require_tls = sc->flags & F_REQTLS;
	lim->lenient_bare_lf = sc->flags & F_BARELF;
	if (sc->flags & F_LINE64)
		lim->max_reply_line_bytes = 64;
	if (sc->flags & F_LINES4)
		lim->max_reply_lines = 4;
	lim->use_pipelining_next = sc->flags & F_NEXT;
}

static struct smtp_client client;

static void run_case(const struct scase *sc, long split, int drain, struct run *r)
{
	struct smtp_client *c = &client;
	struct smtp_client_limits lim;
	struct smtp_client_ev ev;
	struct feeder f = { sc->server, strlen(sc->server), 0, split };
	struct host h = { sc->actions, NULL, 0, 0, 0 };
	int steps = 0;

	memset(r, 0, offsetof(struct run, out));
	r->out_len = 0;
	r->fl_p = NULL;
	lim_of(sc, &lim);
	g_log_txn = sc->flags & F_NEXT;
	smtp_client_init(c, &lim);
	for (; steps < 100000 && !r->is_broken; steps++) {
		int k = smtp_client_next(c, &ev);

		T_CHECK((int)ev.kind == k, "ev.kind %d != %d", ev.kind, k);
		log_ev(r, &ev);
		if (drain == DRAIN_ALL || k == SMTP_CLIENT_EV_FLUSH || k == SMTP_CLIENT_EV_CLOSED ||
		    k == SMTP_CLIENT_EV_FAILED)
			drain_all(c, r);
		else
			drain_lazy(c, r);
		if (k == SMTP_CLIENT_EV_CLOSED || k == SMTP_CLIENT_EV_FAILED)
			break;
		if (k == SMTP_CLIENT_EV_NEED_MORE && !feed_piece(c, &f, r))
			smtp_client_eof(c);
		else if (k == SMTP_CLIENT_EV_WAIT && ev.wait == SMTP_CLIENT_WAIT_TXN)
			host_wait_txn(c, &h, r);
		else if (k == SMTP_CLIENT_EV_WAIT && ev.wait == SMTP_CLIENT_WAIT_BODY)
			host_wait_body(c, &h, r);
		else if (k == SMTP_CLIENT_EV_WAIT && ev.wait == SMTP_CLIENT_WAIT_NEXT)
			host_wait_next(c, &h, r);
		else if (k == SMTP_CLIENT_EV_WAIT && ev.wait == SMTP_CLIENT_WAIT_TLS) {
			T_EQ_INT(smtp_client_tls_done(c), 0);
			f.s = sc->server2 ? sc->server2 : "";
			f.len = strlen(f.s);
			f.pos = 0;
		}
	}
	T_CHECK(steps < 100000, "no end after %d steps", steps);
	/* sticky */
	T_EQ_INT(smtp_client_next(c, &ev), ev.kind);
	T_CHECK(ev.kind == SMTP_CLIENT_EV_CLOSED || ev.kind == SMTP_CLIENT_EV_FAILED, "not sticky");
	smtp_client_fini(c);
}

static bool check_run(const struct scase *sc, const struct run *r, const char *how)
{
	size_t wl = strlen(sc->want_out);
	bool ok = r->out_len == wl && memcmp(r->out, sc->want_out, wl) == 0 &&
		  strcmp(r->log, sc->want_log) == 0;

	T_CHECK(r->out_len == wl && memcmp(r->out, sc->want_out, wl) == 0,
		"%s: output: got \"%.*s\", want \"%s\"", how, (int)r->out_len, r->out, sc->want_out);
	T_CHECK(strcmp(r->log, sc->want_log) == 0, "%s: log: got \"%s\", want \"%s\"", how,
		r->log, sc->want_log);
	return ok;
}

static struct run run_a;

static void test_scenarios(void)
{
	char how[64];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct scase *sc = &cases[i];
		size_t len = strlen(sc->server);

		T_CASE(sc->name);
		for (int drain = DRAIN_ALL; drain <= DRAIN_LAZY; drain++) {
			const char *dn = drain ? "lazy drain" : "drain all";

			snprintf(how, sizeof(how), "whole, %s", dn);
			run_case(sc, SPLIT_WHOLE, drain, &run_a);
			if (!check_run(sc, &run_a, how))
				break;
			snprintf(how, sizeof(how), "byte by byte, %s", dn);
			run_case(sc, SPLIT_BYTE, drain, &run_a);
			if (!check_run(sc, &run_a, how))
				break;
			for (size_t k = 1; k < len; k++) {
				snprintf(how, sizeof(how), "split at %zu, %s", k, dn);
				run_case(sc, (long)k, drain, &run_a);
				if (!check_run(sc, &run_a, how))
					break;
			}
		}
	}
}

/* --- direct tests ---------------------------------------------------------------------- */

/* ready - a client that got greeting + EHLO reply ehlo and is idle. */
static void ready(struct smtp_client *c, const struct smtp_client_limits *lim, const char *ehlo)
{
	struct smtp_client_ev ev;
	size_t n;

	smtp_client_init(c, lim);
	smtp_client_feed(c, (const uint8_t *)S_GREET, strlen(S_GREET));
	T_EQ_INT(smtp_client_next(c, &ev), SMTP_CLIENT_EV_NEED_MORE);
	smtp_client_feed(c, (const uint8_t *)ehlo, strlen(ehlo));
	T_EQ_INT(smtp_client_next(c, &ev), SMTP_CLIENT_EV_READY);
	T_EQ_INT(smtp_client_next(c, &ev), SMTP_CLIENT_EV_WAIT);
	smtp_client_output(c, &n);
	smtp_client_output_done(c, n);
}

/* feed_str - feed a whole string, then _next until a non-NEED_MORE event or the input is used. */
static int feed_str(struct smtp_client *c, const char *s, struct smtp_client_ev *ev)
{
	smtp_client_feed(c, (const uint8_t *)s, strlen(s));
	return smtp_client_next(c, ev);
}

static void test_timeouts(void)
{
	struct smtp_client_limits lim;
	struct smtp_client_ev ev;

	T_CASE("RFC5321-4.5.3.2 phases and timeouts");
	smtp_client_limits_default(&lim);
	smtp_client_init(&client, &lim);
	T_EQ_INT(smtp_client_phase(&client), SMTP_CLIENT_PHASE_GREETING);
	T_EQ_INT(smtp_client_phase_timeout_ms(SMTP_CLIENT_PHASE_GREETING), 300000);
	T_EQ_INT(smtp_client_phase_timeout_ms(SMTP_CLIENT_PHASE_DATA_INIT), 120000);
	T_EQ_INT(smtp_client_phase_timeout_ms(SMTP_CLIENT_PHASE_DATA_BLOCK), 180000);
	T_EQ_INT(smtp_client_phase_timeout_ms(SMTP_CLIENT_PHASE_DATA_END), 600000);
	T_EQ_INT(smtp_client_phase_timeout_ms(SMTP_CLIENT_PHASE_NONE), 0);
	T_EQ_INT(smtp_client_timeout(&client, SMTP_CLIENT_PHASE_MAIL), false);
	T_EQ_INT(smtp_client_next(&client, &ev), SMTP_CLIENT_EV_NEED_MORE);
	T_EQ_INT(smtp_client_timeout(&client, SMTP_CLIENT_PHASE_GREETING), true);
	T_EQ_INT(smtp_client_next(&client, &ev), SMTP_CLIENT_EV_FAILED);
	T_EQ_INT(ev.fail, SMTP_CLIENT_FAIL_TIMEOUT);
	T_EQ_INT(ev.phase, SMTP_CLIENT_PHASE_GREETING);
	T_CHECK(ev.reply == NULL, "reply not NULL");
	T_EQ_INT(smtp_client_timeout(&client, SMTP_CLIENT_PHASE_NONE), false);
	T_EQ_INT(smtp_client_feed(&client, (const uint8_t *)"220 x\r\n", 7), 0);
	T_EQ_INT(smtp_client_quit(&client), SMTP_CLIENT_E_FAILED);
	T_EQ_INT(smtp_client_next(&client, &ev), SMTP_CLIENT_EV_FAILED);

	T_CASE("phase follows the transaction");
	lim.helo_name = "c.example";
	ready(&client, &lim, S_EHLO_PLAIN);
	T_EQ_INT(smtp_client_phase(&client), SMTP_CLIENT_PHASE_NONE);
	T_EQ_INT(smtp_client_begin_txn(&client, &txns[0].t), 0);
	T_EQ_INT(smtp_client_begin_txn(&client, &txns[0].t), SMTP_CLIENT_E_STATE);
	T_EQ_INT(smtp_client_quit(&client), SMTP_CLIENT_E_STATE);
	T_EQ_INT(smtp_client_next(&client, &ev), SMTP_CLIENT_EV_NEED_MORE);
	T_EQ_INT(smtp_client_phase(&client), SMTP_CLIENT_PHASE_MAIL);
	T_EQ_INT(feed_str(&client, S_MAIL, &ev), SMTP_CLIENT_EV_MAIL_RESULT);
	T_EQ_INT(smtp_client_next(&client, &ev), SMTP_CLIENT_EV_NEED_MORE);
	T_EQ_INT(smtp_client_phase(&client), SMTP_CLIENT_PHASE_RCPT);
	T_EQ_INT(feed_str(&client, S_RCPT, &ev), SMTP_CLIENT_EV_RCPT_RESULT);
	T_EQ_INT(smtp_client_next(&client, &ev), SMTP_CLIENT_EV_NEED_MORE);
	T_EQ_INT(smtp_client_phase(&client), SMTP_CLIENT_PHASE_DATA_INIT);
	T_EQ_INT(feed_str(&client, S_GO, &ev), SMTP_CLIENT_EV_WAIT);
	T_EQ_INT(ev.wait, SMTP_CLIENT_WAIT_BODY);
	T_EQ_INT(smtp_client_phase(&client), SMTP_CLIENT_PHASE_DATA_BLOCK);
	T_EQ_INT(smtp_client_rset(&client), SMTP_CLIENT_E_BUSY);
	T_EQ_INT(smtp_client_body(&client, (const uint8_t *)"x", 1, true), 1);
	T_EQ_INT(smtp_client_next(&client, &ev), SMTP_CLIENT_EV_NEED_MORE);
	T_EQ_INT(smtp_client_phase(&client), SMTP_CLIENT_PHASE_DATA_END);
	T_EQ_INT(smtp_client_body(&client, (const uint8_t *)"x", 1, true), 0);
	T_EQ_INT(smtp_client_timeout(&client, SMTP_CLIENT_PHASE_DATA_BLOCK), false);
	T_EQ_INT(smtp_client_timeout(&client, SMTP_CLIENT_PHASE_DATA_END), true);
	T_EQ_INT(smtp_client_next(&client, &ev), SMTP_CLIENT_EV_FAILED);
	T_EQ_INT(ev.phase, SMTP_CLIENT_PHASE_DATA_END);
}

static void test_begin_errors(void)
{
	struct smtp_client_limits lim;
	struct smtp_client_txn t = txns[0].t;
	struct smtp_client_rcpt bad[1] = { { "b@y.example", 0, "rfc822;b+zz" } };
	char longaddr[300];

	T_CASE("begin_txn refuses bad input and stays idle");
	smtp_client_limits_default(&lim);
	lim.max_rcpt = 2;
	ready(&client, &lim, S_EHLO_PIPE);
	T_EQ_INT(smtp_client_tls_done(&client), SMTP_CLIENT_E_STATE);
	T_EQ_INT(smtp_client_body(&client, (const uint8_t *)"x", 1, true), 0);
	t.n_rcpt = 0;
	T_EQ_INT(smtp_client_begin_txn(&client, &t), SMTP_CLIENT_E_PARAM);
	t = txns[3].t;  /* 3 recipients > max_rcpt 2 */
	T_EQ_INT(smtp_client_begin_txn(&client, &t), SMTP_CLIENT_E_PARAM);
	t = txns[0].t;
	t.envid = "bad envid";
	T_EQ_INT(smtp_client_begin_txn(&client, &t), SMTP_CLIENT_E_PARAM);
	t = txns[0].t;
	t.rcpt = bad;
	T_EQ_INT(smtp_client_begin_txn(&client, &t), SMTP_CLIENT_E_PARAM);
	bad[0].orcpt = "rfc822;b+2By.example";
	bad[0].notify = SMTP_PROTO_NOTIFY_NEVER | SMTP_PROTO_NOTIFY_DELAY;
	T_EQ_INT(smtp_client_begin_txn(&client, &t), SMTP_CLIENT_E_PARAM);
	bad[0].notify = 0;
	bad[0].addr = "";
	T_EQ_INT(smtp_client_begin_txn(&client, &t), SMTP_CLIENT_E_ADDR);
	memset(longaddr, 'a', sizeof(longaddr) - 1);
	longaddr[sizeof(longaddr) - 1] = '\0';
	bad[0].addr = longaddr;
	T_EQ_INT(smtp_client_begin_txn(&client, &t), SMTP_CLIENT_E_ADDR);
	longaddr[254] = '\0';
	T_EQ_INT(smtp_client_begin_txn(&client, &t), SMTP_CLIENT_OK);
	T_EQ_INT(smtp_client_rset(&client), SMTP_CLIENT_OK);  /* abort before anything was sent */
	t = txns[0].t;
	t.sender = "\xc3\xa4@x.example";
	T_EQ_INT(smtp_client_begin_txn(&client, &t), SMTP_CLIENT_E_STATE);
	smtp_client_eof(&client);
	T_EQ_INT(smtp_client_rset(&client), SMTP_CLIENT_E_FAILED);
	T_EQ_INT(smtp_client_begin_txn(&client, &t), SMTP_CLIENT_E_FAILED);
	T_EQ_INT(smtp_client_tls_done(&client), SMTP_CLIENT_E_FAILED);
	smtp_client_fini(&client);
	T_CHECK(smtp_client_size() == sizeof(struct smtp_client), "size");
	T_CHECK(smtp_client_size() < 24 * 1024, "size %zu", smtp_client_size());
}

/*
 * test_stuffing_splits - one body given to body() split at every offset
 * (and byte by byte), each piece before a guard page: the wire bytes must
 * not depend on the split (RFC 5321 4.5.2).
 */
static void test_stuffing_splits(void)
{
	static const struct {
		const char *name, *body, *want;
	} sc[] = {
		{ "RFC5321-4.5.2 leading dots", ".\r\n..\r\n.x\r\nx.\r\n", "..\r\n...\r\n..x\r\nx.\r\n.\r\n" },
		{ "dot after bare LF is stuffed", "a\n.b\r\n", "a\n..b\r\n.\r\n" },
		{ "ends in CR", "a\r", "a\r\r\n.\r\n" },
		{ "ends in bare LF", "a\n", "a\n\r\n.\r\n" },
		{ "smuggling-shaped body", "a\r\n.\r\nMAIL FROM:<x@y>\r\n", "a\r\n..\r\nMAIL FROM:<x@y>\r\n.\r\n" },
		{ "first byte dot", ".", "..\r\n.\r\n" },
	};
	struct smtp_client_limits lim;
	struct smtp_client_ev ev;

	smtp_client_limits_default(&lim);
	for (size_t i = 0; i < sizeof(sc) / sizeof(sc[0]); i++) {
		size_t len = strlen(sc[i].body);

		T_CASE(sc[i].name);
		for (size_t k = 0; k <= len + 1; k++) {  /* k == len + 1: byte by byte */
			char got[256];
			size_t got_len = 0, off = 0, n;
			const uint8_t *p;

			ready(&client, &lim, S_EHLO_PLAIN);
			smtp_client_begin_txn(&client, &txns[0].t);
			feed_str(&client, S_MAIL S_RCPT S_GO, &ev);
			while (smtp_client_next(&client, &ev) != SMTP_CLIENT_EV_WAIT)
				;
			p = smtp_client_output(&client, &n);
			smtp_client_output_done(&client, n);
			while (ev.kind == SMTP_CLIENT_EV_WAIT && ev.wait == SMTP_CLIENT_WAIT_BODY) {
				size_t to = k > len ? off + 1 : (off < k ? k : len), maplen;
				void *base;
				uint8_t *g;

				if (to > len)
					to = len;
				g = t_guard_copy(sc[i].body + off, to - off, &base, &maplen);
				off += smtp_client_body(&client, g, to - off, to == len);
				t_guard_free(base, maplen);
				smtp_client_next(&client, &ev);
			}
			p = smtp_client_output(&client, &n);
			if (n < sizeof(got)) {
				memcpy(got, p, n);
				got_len = n;
			}
			smtp_client_output_done(&client, n);
			T_CHECK(got_len == strlen(sc[i].want) && memcmp(got, sc[i].want, got_len) == 0,
				"split %zu: got \"%.*s\", want \"%s\"", k, (int)got_len, got, sc[i].want);
			T_EQ_INT(ev.kind, SMTP_CLIENT_EV_NEED_MORE);
			smtp_client_fini(&client);
		}
	}
}

/*
 * test_big_body - a 200 KiB body through the 16 KiB ring with one send in
 * flight at a time (FLUSH backpressure, wrapping): DATA and BDAT output
 * must be the stuffed body / chunks with the same content.
 */
static uint8_t big[200 * 1024 + 7];
static uint8_t wire[300 * 1024];

static void big_body_run(bool bdat)
{
	struct smtp_client_limits lim;
	struct smtp_client_ev ev;
	size_t off = 0, wl = 0, n, chunks = 0;  /* off > 0: the body has started */
	const uint8_t *p;
	int k;

	smtp_client_limits_default(&lim);
	ready(&client, &lim, bdat ? S_EHLO_CHUNK1 : S_EHLO_PLAIN);
	smtp_client_begin_txn(&client, &txns[0].t);
	feed_str(&client, bdat ? S_MAIL S_RCPT : S_MAIL S_RCPT S_GO, &ev);
	p = smtp_client_output(&client, &n);
	smtp_client_output_done(&client, n);
	for (int steps = 0; steps < 100000; steps++) {
		k = smtp_client_next(&client, &ev);
		/* one send at a time, at most 5000 bytes: the ring wraps */
		p = smtp_client_output(&client, &n);
		if (n > 5000)
			n = 5000;
		if (off > 0 && wl + n <= sizeof(wire)) {
			memcpy(wire + wl, p, n);
			wl += n;
		}
		smtp_client_output_done(&client, n);
		if (k == SMTP_CLIENT_EV_WAIT)
			off += smtp_client_body(&client, big + off, sizeof(big) - off, true);
		else if (k == SMTP_CLIENT_EV_MAIL_RESULT || k == SMTP_CLIENT_EV_RCPT_RESULT)
			continue;
		else if (k == SMTP_CLIENT_EV_NEED_MORE) {
			if (smtp_client_output(&client, &n), n)
				continue;
			if (!bdat || smtp_client_phase(&client) == SMTP_CLIENT_PHASE_DATA_END)
				break;
			smtp_client_feed(&client, (const uint8_t *)S_OK, strlen(S_OK));
			chunks++;
		} else if (k != SMTP_CLIENT_EV_FLUSH) {
			T_CHECK(0, "unexpected event %s", smtp_client_ev_name(k));
			break;
		}
	}
	T_EQ_INT(off, sizeof(big));
	if (!bdat) {
		/* unstuff and compare */
		size_t i = 0, j = 0;
		bool bol = true, ok = true;

		for (; i < wl && j < sizeof(big); i++) {
			if (bol && wire[i] == '.')
				i++;
			if (wire[i] != big[j++]) {
				ok = false;
				break;
			}
			bol = wire[i] == '\n';
		}
		T_CHECK(ok && j == sizeof(big), "DATA body differs at %zu/%zu", i, j);
		T_CHECK(wl - i == 5 && memcmp(wire + i, "\r\n.\r\n", 5) == 0, "end marker: %zu left", wl - i);
	} else {
		size_t i = 0, j = 0;
		bool ok = true, last = false;

		while (i < wl && ok && !last) {
			unsigned long long cn = 0;

			ok = wl - i > 5 && memcmp(wire + i, "BDAT ", 5) == 0;
			for (i += 5; ok && i < wl && wire[i] >= '0' && wire[i] <= '9'; i++)
				cn = cn * 10 + (unsigned long long)(wire[i] - '0');
			if (ok && i + 5 <= wl && memcmp(wire + i, " LAST", 5) == 0) {
				last = true;
				i += 5;
			}
			ok = ok && i + 2 <= wl && wire[i] == '\r' && wire[i + 1] == '\n';
			i += 2;
			ok = ok && i + cn <= wl && j + cn <= sizeof(big) && memcmp(wire + i, big + j, cn) == 0;
			i += cn;
			j += cn;
		}
		T_CHECK(ok && last && j == sizeof(big) && i == wl, "BDAT framing (i=%zu j=%zu)", i, j);
		T_CHECK(chunks > 10, "chunks %zu", chunks);
	}
	smtp_client_fini(&client);
}

static void test_big_body(void)
{
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (i % 61 == 0) ? '.' : (i % 61 == 59) ? '\r' : (i % 61 == 60) ? '\n' : (uint8_t)('a' + i % 26);
	T_CASE("200 KiB DATA body through the ring");
	big_body_run(false);
	T_CASE("200 KiB BDAT body in lock-step chunks");
	big_body_run(true);
}

/* test_many_rcpt - more recipients than SMTP_CLIENT_PIPE_MAX: the window refills as replies come. */
static void test_many_rcpt(void)
{
	static struct smtp_client_rcpt rc[600];
	static char addrs[600][24];
	static char orcpt[480];
	static uint8_t env[400 * 1024];
	size_t env_len = 0;
	unsigned n_flush = 0;
	struct smtp_client_txn t = { "a@x.example", rc, 600, false, 0, 0, false, 0, NULL };
	struct smtp_client_limits lim;
	struct smtp_client_ev ev;
	unsigned n_rcpt_ev = 0, n_rcpt_cmd = 0;
	size_t n;
	const uint8_t *p;
	int k;

	T_CASE("RFC2920 600 pipelined recipients, LMTP replies");
	memcpy(orcpt, "rfc822;", 7);
	memset(orcpt + 7, 'o', sizeof(orcpt) - 8);
	for (unsigned i = 0; i < 600; i++) {
		snprintf(addrs[i], sizeof(addrs[i]), "u%u@y.example", i);
		rc[i].addr = addrs[i];
		rc[i].orcpt = i % 3 ? NULL : orcpt;  /* ~90 KiB of envelope: FLUSH */
	}
	smtp_client_limits_default(&lim);
	lim.is_lmtp = true;
	ready(&client, &lim, S_EHLO_PIPE);
	T_EQ_INT(smtp_client_begin_txn(&client, &t), 0);
	for (int steps = 0; steps < 100000; steps++) {
		k = smtp_client_next(&client, &ev);
		p = smtp_client_output(&client, &n);
		if (env_len + n <= sizeof(env)) {
			memcpy(env + env_len, p, n);
			env_len += n;
		}
		smtp_client_output_done(&client, n);
		n_flush += k == SMTP_CLIENT_EV_FLUSH;
		if (k == SMTP_CLIENT_EV_RCPT_RESULT) {
			T_EQ_INT(ev.rcpt_index, n_rcpt_ev);
			n_rcpt_ev++;
		} else if (k == SMTP_CLIENT_EV_MAIL_RESULT || k == SMTP_CLIENT_EV_FLUSH) {
		} else if (k == SMTP_CLIENT_EV_NEED_MORE) {
			enum smtp_client_phase ph = smtp_client_phase(&client);
			const char *rep = ph == SMTP_CLIENT_PHASE_MAIL ? S_MAIL
				: ph == SMTP_CLIENT_PHASE_RCPT ? (n_rcpt_ev % 2 ? "550 5.1.1 no\r\n" : S_RCPT)
				: ph == SMTP_CLIENT_PHASE_DATA_INIT ? S_GO : S_OK;

			smtp_client_feed(&client, (const uint8_t *)rep, strlen(rep));
		} else if (k == SMTP_CLIENT_EV_WAIT && ev.wait == SMTP_CLIENT_WAIT_BODY) {
			smtp_client_body(&client, (const uint8_t *)"x\r\n", 3, true);
		} else if (k == SMTP_CLIENT_EV_DATA_RESULT) {
			T_CHECK(ev.rcpt_index % 2 == 0, "DATA for refused %u", ev.rcpt_index);
		} else {
			break;
		}
	}
	T_EQ_INT(k, SMTP_CLIENT_EV_TXN_DONE);
	T_EQ_INT(ev.done.n_rcpt_accepted, 300);
	T_EQ_INT(ev.done.n_rcpt_delivered, 300);
	for (size_t i = 0; i + 10 <= env_len; i++)
		if (memcmp(env + i, "RCPT TO:<u", 10) == 0)
			n_rcpt_cmd++;
	T_EQ_INT(n_rcpt_ev, 600);
	T_EQ_INT(n_rcpt_cmd, 600);
	T_CHECK(n_flush > 0, "no FLUSH");
	smtp_client_fini(&client);
}

static void test_names(void)
{
	T_CASE("names");
	T_EQ_STR(smtp_client_ev_name(SMTP_CLIENT_EV_RCPT_RESULT), "RCPT_RESULT");
	T_EQ_STR(smtp_client_ev_name(99), "UNKNOWN");
	T_EQ_STR(smtp_client_fail_name(SMTP_CLIENT_FAIL_CLOSING), "closing");
	T_EQ_STR(smtp_client_err_name(SMTP_CLIENT_E_BUSY), "E_BUSY");
	T_EQ_STR(smtp_client_err_name(0), "OK");
	T_EQ_STR(smtp_client_phase_name(SMTP_CLIENT_PHASE_DATA_END), "DATA_END");
}

int main(void)
{
	test_scenarios();
	test_timeouts();
	test_begin_errors();
	test_stuffing_splits();
	test_big_body();
	test_many_rcpt();
	test_names();
	return t_done();
}
