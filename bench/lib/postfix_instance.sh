#!/bin/sh
# postfix_instance.sh - a private, accept-only Postfix instance for benchmarks.
#
# Usage: postfix_instance.sh start|stop|clear|count|status DIR PORT
#
# Owns:     DIR (config_directory DIR/etc, queue_directory DIR/queue,
#           data_directory DIR/data, log DIR/maillog) and one smtpd listener
#           on 127.0.0.1:PORT.
# Must not: touch /etc/postfix, /var/spool/postfix or port 25: a system
#           Postfix may be running; ours has its own master.pid, queue,
#           syslog_name and listener, and is driven with `postfix -c DIR`.
# Policy:   smtpd_recipient_restrictions = check_client_access static:HOLD,
#           permit_mynetworks, reject -- every accepted message goes to the
#           hold queue (queue file written and fsynced by cleanup, as always)
#           and nothing is ever delivered: an accepts-only measurement.
#           in_flow_delay = 0: with no deliveries qmgr never hands out flow
#           tokens, and the default 1 s pause per message would measure the
#           flow control, not the server. smtpd_peername_lookup = no: no DNS.
#           Everything else is the Debian 12 package's defaults (fsync on).
# Standards: postfix(1) -c, postconf(5), master(5), access(5) HOLD.
set -eu

cmd=${1:?usage: $0 start|stop|clear|count|status DIR PORT}
dir=${2:?DIR}
port=${3:-2626}
etc=$dir/etc

die() { echo "postfix_instance: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (postfix master drops to user postfix)"
command -v postfix >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
command -v postfix >/dev/null 2>&1 || die "postfix not installed (apt-get install postfix)"

write_config() {
	mkdir -p "$etc" "$dir/queue" "$dir/data"
	chown postfix "$dir/data"
	cat >"$etc/main.cf" <<EOF_MAIN
# written by bench/lib/postfix_instance.sh -- private benchmark instance
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-bench
maillog_file = $dir/maillog
myhostname = postfix-bench.test.invalid
mydomain = test.invalid
myorigin = \$myhostname
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
relayhost =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = check_client_access static:HOLD, permit_mynetworks, reject
smtpd_peername_lookup = no
in_flow_delay = 0
message_size_limit = 10240000
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
default_process_limit = 200
defer_transports = smtp, relay, local, virtual, lmtp
EOF_MAIN
	cat >"$etc/master.cf" <<EOF_MASTER
# written by bench/lib/postfix_instance.sh -- no chroot, one listener
127.0.0.1:$port inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
proxywrite unix - - n -  1 proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
local     unix  - n n -  - local
virtual   unix  - n n -  - virtual
lmtp      unix  - - n -  - lmtp
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF_MASTER
}

count_hold() {
	# Files in the hold queue (one per held message).
	find "$dir/queue/hold" -type f 2>/dev/null | wc -l
}

wait_port() {
	i=0
	while [ $i -lt 100 ]; do
		if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then return 0; fi
		# /dev/tcp is a bash feature; fall back to python when sh is dash
		if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; then
			return 0
		fi
		sleep 0.1; i=$((i + 1))
	done
	return 1
}

case $cmd in
start)
	write_config
	postfix -c "$etc" check >/dev/null 2>&1 || postfix -c "$etc" check
	postfix -c "$etc" start >/dev/null 2>&1 || die "postfix -c $etc start failed (see $dir/maillog)"
	wait_port || die "no listener on 127.0.0.1:$port after 10 s (see $dir/maillog)"
	;;
stop)
	[ -f "$etc/main.cf" ] || exit 0
	postfix -c "$etc" stop >/dev/null 2>&1 || true
	i=0
	while [ -f "$dir/queue/pid/master.pid" ] && [ $i -lt 50 ]; do
		pid=$(tr -d ' ' <"$dir/queue/pid/master.pid" 2>/dev/null || true)
		[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
		sleep 0.1; i=$((i + 1))
	done
	;;
clear)
	postsuper -c "$etc" -d ALL >/dev/null 2>&1 || true
	;;
count)
	count_hold
	;;
status)
	postfix -c "$etc" status
	;;
*)
	die "unknown command $cmd"
	;;
esac
