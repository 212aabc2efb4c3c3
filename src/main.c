/*
 * main - ringmta, the io_uring SMTP relay: command line, start-up, signals.
 *
 * SYNOPSIS
 *   ringmta [-c FILE] [-o key=value ...] [-v]
 *   ringmta --check-config [-c FILE] [-o key=value ...] [-v]
 *   ringmta [-c FILE] [-o key=value ...] queue list | show ID | cat ID
 *   ringmta [-c FILE] [-o key=value ...] queue hold ID | release ID
 *   ringmta [-c FILE] [-o key=value ...] queue delete ID | flush [ID]
 *   ringmta --version | --help
 *
 * DESCRIPTION
 *   Without a command, ringmta runs the relay in the foreground, logging
 *   key=value lines to stderr (or syslog, log = syslog). The configuration
 *   is the embedded default, then FILE, then each -o override, as Postfix's
 *   -o. Start-up, in this order: load and check the configuration and the
 *   map files it names (transport_map, relay_recipients); check
 *   that io_uring works (one line naming the cause and the fix if not);
 *   raise RLIMIT_NOFILE to its hard limit; bind one SO_REUSEPORT socket per
 *   listen line per reactor; open the spool (recovering it after a crash)
 *   and give it to the run-time user; when started as root, drop to that
 *   user (config key user, default "ringmta"; "nobody" when no such
 *   account exists) before any client byte is read; start one reactor
 *   thread per core; wait for signals and serve the control socket.
 *
 * QUEUE COMMANDS
 *   The options must come before "queue". An ID is the 16 hex digits of
 *   "queued as ID". Exit 0 on success, 1 on failure (message on stderr),
 *   2 on a usage error.
 *   queue list        one line per message: id= size= arrival= from=
 *                     to=a,b rcpt_state= (pending, held, delivered or
 *                     failed per recipient) state= (queued, deferred,
 *                     held, done) next=; reads the spool, so it works
 *                     with or without a running daemon
 *   queue show ID     the envelope (sender, each recipient with state,
 *                     attempts, next attempt, NOTIFY, ORCPT; ENVID, RET,
 *                     BODY, SMTPUTF8, client, helo, arrival) and the
 *                     header lines; reads the spool
 *   queue cat ID      the stored message; reads the spool
 *   queue hold ID     stop delivery attempts: every pending recipient is
 *                     held until released (survives restarts)
 *   queue release ID  a held message is due now (error if not held)
 *   queue delete ID   remove the message without a bounce (logged)
 *   queue flush [ID]  make the message, or every message not held, due
 *                     now
 *   hold, release, delete and flush go to the running daemon through the
 *   control socket ("cannot connect to ...: is ringmta running?" when it
 *   is not) and answer once the change is committed, so a following
 *   "queue list" shows it. A message being delivered at that moment is
 *   not held, released or deleted: "busy", try again.
 *
 * OPTIONS
 *   -c FILE           configuration file (key = value lines, see README.md)
 *   -o key=value      override one key; repeatable
 *   -v                debug logging; with --check-config, print the
 *                     effective configuration
 *   --check-config    validate the configuration and the map files, exit
 *                     0 or 1 with "FILE:LINE: message"
 *
 * SIGNALS
 *   SIGTERM, SIGINT   graceful stop: stop accepting, finish or 421 open
 *                     sessions (at most 10 s), commit what was accepted,
 *                     mark the spool index clean, exit 0.
 *   SIGHUP            re-read transport_map and relay_recipients (not
 *                     ringmta.conf). A file that fails to load is logged
 *                     with its FILE:LINE and the old maps stay in use. The
 *                     files are read as the run-time user by then.
 *   SIGPIPE           ignored.
 *
 * FILES
 *   spool_dir/        segment files (the truth) and the LMDB index.
 *   transport_map, relay_recipients
 *                     the map files, if set (syntax: include/ringmta/maps.h).
 *   spool_dir/control the control socket of the queue commands: mode 0600,
 *                     owned by the run-time user; only root and that user
 *                     may connect (checked again with SO_PEERCRED). Made
 *                     at start (a stale one is replaced), removed at a
 *                     clean stop.
 *
 * DIAGNOSTICS
 *   Exit 0 after a clean stop, 1 on a start-up or run-time failure, 2 on a
 *   usage error.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ringmta/admin.h"
#include "ringmta/conf.h"
#include "ringmta/control.h"
#include "ringmta/log.h"
#include "ringmta/maps_live.h"
#include "ringmta/net.h"
#include "ringmta/reactor.h"
#include "ringmta/server.h"
#include "ringmta/spool.h"

#define MAX_OVERRIDES 256
/* LISTEN_BACKLOG - per socket; the kernel caps it at net.core.somaxconn. */
#define LISTEN_BACKLOG 4096

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ringmta [-c FILE] [-o key=value ...] [-v]\n"
		"       ringmta --check-config [-c FILE] [-o key=value ...] [-v]\n"
		"       ringmta [-c FILE] [-o key=value ...] queue list | show ID | cat ID\n"
		"       ringmta [-c FILE] [-o key=value ...] queue hold ID | release ID\n"
		"       ringmta [-c FILE] [-o key=value ...] queue delete ID | flush [ID]\n"
		"       ringmta --version | --help\n");
}

/* run_user - resolve the run-time user; "ringmta" falls back to nobody. */
static int run_user(const struct conf *c, uid_t *uid, gid_t *gid)
{
	struct passwd *pw = getpwnam(c->user);

	if (pw == NULL && strcmp(c->user, "ringmta") == 0) {
		log_warn("main: user ringmta does not exist, running as nobody");
		pw = getpwnam("nobody");
	}
	if (pw == NULL) {
		log_msg(LOG_LVL_FATAL, "main: user %s does not exist", c->user);
		return -ENOENT;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}

/* drop_privileges - become uid/gid for good (setgroups first). */
static int drop_privileges(uid_t uid, gid_t gid)
{
	if (setgroups(1, &gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
		log_msg(LOG_LVL_FATAL, "main: dropping privileges: %s", strerror(errno));
		return -errno;
	}
	if (uid != 0 && setuid(0) == 0) {
		log_msg(LOG_LVL_FATAL, "main: privileges could be regained after the drop");
		return -EPERM;
	}
	return 0;
}

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* log_maps - one line about the maps now in use. */
static void log_maps(const char *what, const struct conf *c)
{
	const struct maps_set *m = maps_current();

	log_info("main: %s generation=%llu transport_map=\"%s\" routes=%zu "
		 "relay_recipients=\"%s\" recipients=%zu", what,
		 (unsigned long long)m->generation, c->transport_map,
		 maps_transport_count(m->transport), c->relay_recipients,
		 maps_rcpt_count(m->rcpt));
}

/* reload_maps - the SIGHUP action: new maps, or the old ones and a log
 * line that says why. */
static void reload_maps(const struct conf *c, struct server *rs, unsigned n)
{
	struct rm_err err = { 0, "" };
	struct reactor **rp = calloc(n, sizeof(*rp));
	int rc;

	if (rp == NULL) {
		log_warn("main: SIGHUP: out of memory, keeping the old maps");
		return;
	}
	for (unsigned i = 0; i < n; i++)
		rp[i] = &rs[i].r;
	rc = maps_live_reload(c, rp, n, &err);
	free(rp);
	if (rc == -ETIMEDOUT)
		log_warn("main: SIGHUP: a reactor did not go round its loop in "
			 "%d ms; the old maps are freed later", MAPS_LIVE_MAX_WAIT_MS);
	else if (rc < 0) {
		log_warn("main: SIGHUP: keeping the old maps: %s", err.msg);
		return;
	}
	log_maps("SIGHUP: maps reloaded", c);
}

/*
 * wait_signal - serve the control socket (ctl may be NULL) until SIGTERM
 * or SIGINT arrives on sig_fd; returns that signal.
 */
static int wait_signal(const struct conf *c, int sig_fd, struct control *ctl,
		       struct server *rs, unsigned n)
{
	for (;;) {
		struct pollfd p[2] = {
			{ sig_fd, POLLIN, 0 },
			{ ctl != NULL ? control_fd(ctl) : -1, POLLIN, 0 },
		};
		struct signalfd_siginfo si;

		if (poll(p, 2, -1) < 0)
			continue;       /* EINTR */
		if (p[1].revents & POLLIN)
			control_serve(ctl, rs, n, sig_fd);
		if (read(sig_fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
			continue;       /* EAGAIN: nothing pending */
		if (si.ssi_signo == SIGHUP) {
			reload_maps(c, rs, n);
			continue;
		}
		return (int)si.ssi_signo;
	}
}

/* serve - bind, open the spool, drop privileges, run the reactors. */
static int serve(const struct conf *c)
{
	struct rm_err err = { 0, "" };
	unsigned n = conf_reactor_count(c);
	struct server *rs;
	struct spool *sp = NULL;
	struct spool_opts so;
	uid_t uid = 0;
	gid_t gid = 0;
	bool is_root = geteuid() == 0;
	struct control *ctl = NULL;
	sigset_t set;
	int sig, sig_fd, rc = 0;

	if (reactor_probe(&err) < 0) {
		log_msg(LOG_LVL_FATAL, "%s", err.msg);
		return 1;
	}
	raise_nofile();
	if (net_conn_table_init(c->max_connections) < 0)
		return 1;
	if (is_root && run_user(c, &uid, &gid) < 0)
		return 1;

	rs = calloc(n, sizeof(*rs));
	if (rs == NULL)
		return 1;
	memset(&so, 0, sizeof(so));
	so.dir = c->spool_dir;
	so.map_bytes = c->spool_map_size;
	so.segment_bytes = c->spool_segment_size;
	so.prealloc_bytes = c->spool_preallocate;
	so.n_shards = n;
	so.uid = is_root ? (int)uid : -1;
	so.gid = is_root ? (int)gid : -1;
	/* Opened while still root: the spool keeps directory fds and works
	 * with *at() calls, so it stays usable after the drop even where the
	 * run-time user could not traverse the path (a checkout in /root).
	 * The cost: a recovery scan after a crash parses segment records as
	 * root (CRC-checked records with capped lengths). */
	if (spool_open(&sp, &so, &err) < 0) {
		log_msg(LOG_LVL_FATAL, "%s", err.msg);
		return 1;
	}
	for (unsigned i = 0; i < n; i++) {
		int fds[CONF_MAX_LISTEN];
		enum conf_listen_role roles[CONF_MAX_LISTEN];
		for (size_t j = 0; j < c->n_listen; j++) {
			const struct conf_listen *l = &c->listen[j];
			fds[j] = net_listen((const struct sockaddr *)&l->addr, l->addr_len,
					    LISTEN_BACKLOG, l->is_any, &err);
			if (fds[j] < 0) {
				log_msg(LOG_LVL_FATAL, "%s", err.msg);
				return 1;
			}
			roles[j] = l->role;
		}
		if (server_init(&rs[i], i, c, sp, fds, roles, (unsigned)c->n_listen, &err) < 0) {
			log_msg(LOG_LVL_FATAL, "%s", err.msg);
			return 1;
		}
	}
	/* Made while root so it can be given to the run-time user; after
	 * spool_open, whose lock proves that a socket found there is stale. */
	rc = control_open(&ctl, c->spool_dir, is_root ? (int)uid : -1,
			  is_root ? (int)gid : -1, &err);
	if (rc == -ENAMETOOLONG) {
		log_warn("main: %s; queue hold/release/delete/flush are unavailable", err.msg);
	} else if (rc < 0) {
		log_msg(LOG_LVL_FATAL, "%s", err.msg);
		return 1;
	}
	rc = 0;
	if (is_root && drop_privileges(uid, gid) < 0)
		return 1;

	/* Signals go to this thread only, through a signalfd polled with the
	 * control socket: block them before the reactors start. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sig_fd < 0) {
		log_msg(LOG_LVL_FATAL, "main: signalfd: %s", strerror(errno));
		return 1;
	}

	for (unsigned i = 0; i < n; i++) {
		if (reactor_start(&rs[i].r, &err) < 0) {
			log_msg(LOG_LVL_FATAL, "%s", err.msg);
			for (unsigned j = 0; j < i; j++)
				reactor_stop(&rs[j].r);
			for (unsigned j = 0; j < i; j++)
				reactor_join(&rs[j].r);
			for (unsigned j = 0; j < n; j++)
				server_fini(&rs[j]);
			control_close(ctl);
			close(sig_fd);
			spool_close(sp);
			return 1;
		}
	}
	for (size_t j = 0; j < c->n_listen; j++)
		log_info("main: listening addr=%s role=%s reactors=%u", c->listen[j].text,
			 conf_role_name(c->listen[j].role), n);
	log_maps("maps loaded", c);
	sig = wait_signal(c, sig_fd, ctl, rs, n);
	control_close(ctl);     /* new admin commands: "is ringmta running?" */
	close(sig_fd);
	log_info("main: stopping signal=%s", sig == SIGTERM ? "TERM" : "INT");
	for (unsigned i = 0; i < n; i++)
		reactor_stop(&rs[i].r);
	for (unsigned i = 0; i < n; i++) {
		rc |= reactor_join(&rs[i].r);
		server_fini(&rs[i]);
	}
	spool_close(sp);
	free(rs);
	log_info("main: stopped status=%d", rc ? 1 : 0);
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	char *overrides[MAX_OVERRIDES] = { NULL };
	size_t n_over = 0;
	const char *cfile = NULL;
	bool check = false, verbose = false;
	struct rm_err err = { 0, "" };
	struct maps_set *maps = NULL;
	struct conf c;
	int i, rc;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--version") == 0) {
			printf("ringmta %s\n", RINGMTA_VERSION);
			return 0;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(a, "--check-config") == 0) {
			check = true;
		} else if (strcmp(a, "-v") == 0) {
			verbose = true;
		} else if (strcmp(a, "-c") == 0 && i + 1 < argc) {
			cfile = argv[++i];
		} else if (strcmp(a, "-o") == 0 && i + 1 < argc) {
			if (n_over == MAX_OVERRIDES) {
				fprintf(stderr, "ringmta: more than %d -o options\n", MAX_OVERRIDES);
				return 2;
			}
			overrides[n_over++] = argv[++i];
		} else if (a[0] != '-') {
			break;
		} else {
			usage(stderr);
			return 2;
		}
	}
	rc = conf_load(&c, cfile, overrides, n_over, &err);
	if (rc < 0) {
		fprintf(stderr, "ringmta: %s\n", err.msg);
		return 1;
	}
	if ((check || i == argc) && maps_live_load(&c, &maps, &err) < 0) {
		fprintf(stderr, "ringmta: %s\n", err.msg);
		conf_fini(&c);
		return 1;
	}
	if (check) {
		if (verbose)
			conf_dump(&c, stdout);
		maps_live_free(maps);
		conf_fini(&c);
		return 0;
	}
	if (i < argc) {
		if (strcmp(argv[i], "queue") != 0) {
			usage(stderr);
			conf_fini(&c);
			return 2;
		}
		rc = admin_queue(&c, argc - i - 1, argv + i + 1);
		conf_fini(&c);
		return rc;
	}
	umask(027);
	log_init(c.log == CONF_LOG_SYSLOG, "ringmta");
	log_set_debug(verbose);
	maps_live_publish(maps);
	/* auto resolved once: main and every reactor's delivery engine (its
	 * share of destination_rate_limit) must count the same reactors */
	c.reactors = conf_reactor_count(&c);
	rc = serve(&c);
	maps_live_fini();
	conf_fini(&c);
	return rc;
}
