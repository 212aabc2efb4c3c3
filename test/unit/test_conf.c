/*
 * test_conf - unit tests for the conf module: one table case per key
 * (valid values through conf_dump(), invalid ones with the exact
 * "FILE:LINE: key: problem"), overrides, repeated listen, conf_check(),
 * CIDR and relay_domains matching, dump round trip, and the generated
 * deploy/ringmta.conf and doc/CONFIG.md against the key table.
 * Every parse runs on a copy that ends at a PROT_NONE page (t_guard_copy).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "ringmta/conf.h"

#include "t.h"

/* read_all - a whole file as a NUL-terminated heap string, or NULL. */
static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		fclose(f);
		return NULL;
	}
	buf[n] = '\0';
	fclose(f);
	if (len)
		*len = (size_t)n;
	return buf;
}

/*
 * src_path - rel inside the source tree, found from __FILE__. meson
 * compiles with a path relative to the build root, so when the test is not
 * run from there (meson test runs it there), retry from the build root:
 * the parent of the directory that holds this executable.
 */
static const char *src_path(const char *rel)
{
	static char buf[PATH_MAX];
	const char *f = __FILE__, *suffix = "test/unit/test_conf.c";
	size_t fl = strlen(f), sl = strlen(suffix);
	char exe[PATH_MAX], *slash;
	ssize_t n;
	int up;

	if (fl < sl || strcmp(f + fl - sl, suffix) != 0)
		fl = sl;
	snprintf(buf, sizeof(buf), "%.*s%s", (int)(fl - sl), f, rel);
	if (buf[0] == '/' || access(buf, R_OK) == 0)
		return buf;
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return buf;
	exe[n] = '\0';
	for (up = 0; up < 2 && (slash = strrchr(exe, '/')) != NULL; up++)
		*slash = '\0';
	if (snprintf(buf, sizeof(buf), "%s/%.*s%s", exe, (int)(fl - sl), f,
		     rel) >= (int)sizeof(buf))
		return rel;
	return buf;
}

/* parse_len - defaults, then len bytes of text placed before a guard page. */
static int parse_len(struct conf *c, const char *text, size_t len,
		     struct rm_err *err)
{
	void *base;
	size_t maplen;
	const char *g;
	int rc;

	if (conf_defaults(c, err) < 0)
		return -ENOMEM;
	g = t_guard_copy(text, len, &base, &maplen);
	rc = conf_parse_text(c, "t.conf", g, len, err);
	t_guard_free(base, maplen);
	return rc;
}

static int parse(struct conf *c, const char *text, struct rm_err *err)
{
	return parse_len(c, text, strlen(text), err);
}

/* dump - conf_dump() into a heap string. */
static char *dump(const struct conf *c)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (f == NULL) {
		perror("open_memstream");
		exit(2);
	}
	conf_dump(c, f);
	fclose(f);
	return buf;
}

/* has_line - whether text holds want as a whole line. */
static bool has_line(const char *text, const char *want)
{
	size_t wl = strlen(want);
	const char *s = text;

	while ((s = strstr(s, want)) != NULL) {
		if ((s == text || s[-1] == '\n') && s[wl] == '\n')
			return true;
		s++;
	}
	return false;
}

/* ---- valid values: one case per key, checked through conf_dump() ------ */

static const struct valid_case {
	const char *name, *text, *want;
} valid_cases[] = {
	{ "listen ipv4, role mx by default", "listen = 192.0.2.1:25",
	  "listen = 192.0.2.1:25 mx" },
	{ "listen ipv6 submission", "listen = [2001:DB8::1]:587 submission",
	  "listen = [2001:db8::1]:587 submission" },
	{ "listen any smtps", "listen = *:465 smtps", "listen = *:465 smtps" },
	{ "blanks around tokens and CRLF",
	  " \tlisten\t=\t127.0.0.1:25   mx  \r\n", "listen = 127.0.0.1:25 mx" },
	{ "spool_dir absolute", "spool_dir = /var/spool/ringmta",
	  "spool_dir = /var/spool/ringmta" },
	{ "spool_dir with a space", "spool_dir = /srv/my spool ",
	  "spool_dir = /srv/my spool" },
	{ "reactors number", "reactors = 4", "reactors = 4" },
	{ "reactors max", "reactors = 256", "reactors = 256" },
	{ "reactors auto", "reactors = 2\n", "reactors = 2" },
	{ "myhostname", "myhostname = mx1.Example-1.com",
	  "myhostname = mx1.Example-1.com" },
	{ "myhostname single label", "myhostname = relay", "myhostname = relay" },
	{ "myhostname 63-byte label",
	  "myhostname = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.org",
	  "myhostname = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.org" },
	{ "mynetworks commas and blanks",
	  "mynetworks = 10.0.0.0/8, 192.168.1.1 [2001:db8::]/32,::1,,",
	  "mynetworks = 10.0.0.0/8 192.168.1.1/32 [2001:db8::]/32 [::1]/128" },
	{ "mynetworks empty", "mynetworks =", "mynetworks =" },
	{ "mynetworks /0 both families", "mynetworks = 0.0.0.0/0 [::]/0",
	  "mynetworks = 0.0.0.0/0 [::]/0" },
	{ "relay_domains lower-cased",
	  "relay_domains = Example.COM, .sub.example.net",
	  "relay_domains = example.com .sub.example.net" },
	{ "relay_domains policy suffixes",
	  "relay_domains = A.example:list .b.example:verify c.example:any d.example",
	  "relay_domains = a.example:list .b.example:verify c.example:any d.example" },
	{ "relayhost with MX lookup", "relayhost = smtp.example.com",
	  "relayhost = smtp.example.com:25" },
	{ "relayhost host:port", "relayhost = relay.example.com:2525",
	  "relayhost = relay.example.com:2525" },
	{ "relayhost [host]:port", "relayhost = [smtp.example.com]:587",
	  "relayhost = [smtp.example.com]:587" },
	{ "relayhost [ipv4]", "relayhost = [192.0.2.1]",
	  "relayhost = [192.0.2.1]:25" },
	{ "relayhost [ipv6:...]", "relayhost = [IPv6:2001:db8::1]:2525",
	  "relayhost = [2001:db8::1]:2525" },
	{ "relayhost empty", "relayhost = x.example\n", "relayhost = x.example:25" },
	{ "message_size_limit bytes", "message_size_limit = 52428800",
	  "message_size_limit = 50M" },
	{ "message_size_limit k", "message_size_limit = 10k",
	  "message_size_limit = 10240" },
	{ "message_size_limit G", "message_size_limit = 1g",
	  "message_size_limit = 1G" },
	{ "message_size_limit max", "message_size_limit = 1T",
	  "message_size_limit = 1T" },
	{ "recipient_limit RFC 5321 4.5.3.1.8 minimum", "recipient_limit = 100",
	  "recipient_limit = 100" },
	{ "line_length_limit RFC 5321 4.5.3.1.4 minimum",
	  "line_length_limit = 512", "line_length_limit = 512" },
	{ "line_length_limit max", "line_length_limit = 65536",
	  "line_length_limit = 65536" },
	{ "smtpd_timeout minutes", "smtpd_timeout = 10m", "smtpd_timeout = 10m" },
	{ "smtpd_timeout bare seconds", "smtpd_timeout = 90",
	  "smtpd_timeout = 90s" },
	{ "smtpd_timeout ms", "smtpd_timeout = 1500ms",
	  "smtpd_timeout = 1500ms" },
	{ "smtpd_timeout max", "smtpd_timeout = 3600s", "smtpd_timeout = 1h" },
	{ "max_connections", "max_connections = 1", "max_connections = 1" },
	{ "max_connections_per_ip", "max_connections_per_ip = 1000000",
	  "max_connections_per_ip = 1000000" },
	{ "smtpd_error_limit", "smtpd_error_limit = 1000",
	  "smtpd_error_limit = 1000" },
	{ "user", "user = mail_relay-1", "user = mail_relay-1" },
	{ "log syslog", "log = syslog", "log = syslog" },
	{ "durability none", "durability = none", "durability = none" },
	{ "spool_map_size max", "spool_map_size = 16T", "spool_map_size = 16T" },
	{ "spool_segment_size min", "spool_segment_size = 1M",
	  "spool_segment_size = 1M" },
	{ "spool_segment_size max", "spool_segment_size = 4096m",
	  "spool_segment_size = 4G" },
	{ "transport_map", "transport_map = /etc/ringmta/transport",
	  "transport_map = /etc/ringmta/transport" },
	{ "relay_recipients", "relay_recipients = /etc/ringmta/rcpt",
	  "relay_recipients = /etc/ringmta/rcpt" },
	{ "verify_recipients", "verify_recipients = yes",
	  "verify_recipients = yes" },
	{ "dns_servers all forms",
	  "dns_servers = 192.0.2.53, [2001:db8::53]:5353 2001:db8::54 "
	  "192.0.2.1:5353",
	  "dns_servers = 192.0.2.53:53 [2001:db8::53]:5353 [2001:db8::54]:53 "
	  "192.0.2.1:5353" },
	{ "resolv_conf", "resolv_conf = /run/resolv.conf",
	  "resolv_conf = /run/resolv.conf" },
	{ "max_messages_per_connection", "max_messages_per_connection = 1",
	  "max_messages_per_connection = 1" },
	{ "destination_concurrency_limit",
	  "destination_concurrency_limit = 10000",
	  "destination_concurrency_limit = 10000" },
	{ "destination_rate_limit N/duration",
	  "destination_rate_limit = 100/1m", "destination_rate_limit = 100/1m" },
	{ "destination_rate_limit bare unit",
	  "destination_rate_limit = 5/s", "destination_rate_limit = 5/1s" },
	{ "destination_rate_limit 90s", "destination_rate_limit = 10/90s",
	  "destination_rate_limit = 10/90s" },
	{ "destination_recipient_limit", "destination_recipient_limit = 1",
	  "destination_recipient_limit = 1" },
	{ "connect_timeout", "connect_timeout = 10m", "connect_timeout = 10m" },
	{ "connection_idle_timeout 0", "connection_idle_timeout = 0",
	  "connection_idle_timeout = 0" },
	{ "retry_schedule", "retry_schedule = 60s,5m, 1h",
	  "retry_schedule = 1m 5m 1h" },
	{ "maximal_queue_lifetime", "maximal_queue_lifetime = 100d",
	  "maximal_queue_lifetime = 100d" },
	{ "maximal_queue_lifetime 0", "maximal_queue_lifetime = 0",
	  "maximal_queue_lifetime = 0" },
	{ "delay_warning_time", "delay_warning_time = 4h",
	  "delay_warning_time = 4h" },
	{ "tls_cert_file", "tls_cert_file = /etc/ssl/mx.pem",
	  "tls_cert_file = /etc/ssl/mx.pem" },
	{ "tls_key_file", "tls_key_file = /etc/ssl/mx.key",
	  "tls_key_file = /etc/ssl/mx.key" },
	{ "comments and blank lines",
	  "# comment\n\n   # indented caf\xc3\xa9\n\t\nlog = syslog\n# end",
	  "log = syslog" },
};

static void test_valid(void)
{
	size_t i;

	for (i = 0; i < sizeof(valid_cases) / sizeof(valid_cases[0]); i++) {
		const struct valid_case *tc = &valid_cases[i];
		struct rm_err err = { 0 };
		struct conf c;
		char *d;
		int rc;

		T_CASE(tc->name);
		rc = parse(&c, tc->text, &err);
		T_CHECK(rc == 0, "rc: got %d (%s), want 0", rc, err.msg);
		d = dump(&c);
		T_CHECK(has_line(d, tc->want), "dump: got\n%s, want line \"%s\"",
			d, tc->want);
		free(d);
		conf_fini(&c);
	}
}

/* ---- invalid values: the exact message --------------------------------- */

static const struct invalid_case {
	const char *name, *text, *want;
} invalid_cases[] = {
	{ "unknown key", "frobnicate = 1", "t.conf:1: unknown key \"frobnicate\"" },
	{ "keys are lower case", "Log = syslog", "t.conf:1: unknown key \"Log\"" },
	{ "missing = on line 4", "\n\n# c\nlisten 127.0.0.1:25",
	  "t.conf:4: missing '=' (lines are key = value)" },
	{ "missing key", " = 5", "t.conf:1: missing key before '='" },
	{ "key given twice", "log = syslog\n\nlog = stderr",
	  "t.conf:3: log: given twice (first on line 1)" },
	{ "empty value", "recipient_limit =", "t.conf:1: recipient_limit: empty value" },
	{ "trailing # is part of the value", "log = syslog # comment",
	  "t.conf:1: log: \"syslog # comment\" is not stderr or syslog" },
	{ "non-ASCII outside a comment", "myhostname = caf\xc3\xa9.example",
	  "t.conf:1: invalid byte 0xc3 at column 17" },
	{ "control byte", "  log = std\x01""err", "t.conf:1: invalid byte 0x01 at column 12" },
	{ "CR inside a line", "log = std\rerr", "t.conf:1: invalid byte 0x0d at column 10" },
	{ "listen without port", "listen = 127.0.0.1",
	  "t.conf:1: listen: \"127.0.0.1\": missing :PORT" },
	{ "listen port 0", "listen = 127.0.0.1:0",
	  "t.conf:1: listen: \"127.0.0.1:0\": port is not 1..65535" },
	{ "listen port 65536", "listen = [::1]:65536",
	  "t.conf:1: listen: \"[::1]:65536\": port is not 1..65535" },
	{ "listen port junk", "listen = *:25x",
	  "t.conf:1: listen: \"*:25x\": port is not 1..65535" },
	{ "listen bare ipv6", "listen = ::1:25",
	  "t.conf:1: listen: \"::1:25\": address is not a.b.c.d, [IPv6] or *" },
	{ "listen host name", "listen = localhost:25",
	  "t.conf:1: listen: \"localhost:25\": address is not a.b.c.d, [IPv6] or *" },
	{ "listen unclosed bracket", "listen = [::1:25",
	  "t.conf:1: listen: \"[::1:25\": bad [IPv6] address" },
	{ "listen ipv4 in brackets", "listen = [127.0.0.1]:25",
	  "t.conf:1: listen: \"[127.0.0.1]:25\": bad [IPv6] address" },
	{ "listen bad role", "listen = 127.0.0.1:25 lmtp",
	  "t.conf:1: listen: \"lmtp\" is not mx, submission or smtps" },
	{ "listen extra word", "listen = 127.0.0.1:25 mx extra",
	  "t.conf:1: listen: unexpected \"extra\" after the role" },
	{ "listen duplicate", "listen = 127.0.0.1:25\nlisten = 127.0.0.1:25 submission",
	  "t.conf:2: listen: 127.0.0.1:25 overlaps 127.0.0.1:25" },
	{ "listen overlaps *", "listen = *:25\nlisten = 127.0.0.1:25",
	  "t.conf:2: listen: 127.0.0.1:25 overlaps *:25" },
	{ "spool_dir empty", "spool_dir =", "t.conf:1: spool_dir: empty value" },
	{ "reactors 0", "reactors = 0", "t.conf:1: reactors: \"0\" is not auto or 1..256" },
	{ "reactors 257", "reactors = 257",
	  "t.conf:1: reactors: \"257\" is not auto or 1..256" },
	{ "myhostname leading hyphen", "myhostname = -mx.example",
	  "t.conf:1: myhostname: \"-mx.example\": label starts with '-'" },
	{ "myhostname trailing hyphen", "myhostname = mx-.example",
	  "t.conf:1: myhostname: \"mx-.example\": label ends with '-'" },
	{ "myhostname empty label", "myhostname = mx..example",
	  "t.conf:1: myhostname: \"mx..example\": empty label in domain name" },
	{ "myhostname trailing dot", "myhostname = mx.example.",
	  "t.conf:1: myhostname: \"mx.example.\": empty label in domain name" },
	{ "myhostname underscore", "myhostname = mx_1.example",
	  "t.conf:1: myhostname: \"mx_1.example\": invalid character in domain name" },
	{ "myhostname is an IP", "myhostname = 192.0.2.1",
	  "t.conf:1: myhostname: \"192.0.2.1\": top-level label is all digits "
	  "(write an IP address as a [literal] where allowed)" },
	{ "myhostname 64-byte label",
	  "myhostname = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.org",
	  "t.conf:1: myhostname: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": "
	  "label longer than 63 bytes" },
	{ "mynetworks host bits", "mynetworks = 127.0.0.1/8",
	  "t.conf:1: mynetworks: \"127.0.0.1/8\" has host bits set; did you mean 127.0.0.0/8?" },
	{ "mynetworks ipv6 host bits", "mynetworks = 10.0.0.0/8 [2001:db8::1]/32",
	  "t.conf:1: mynetworks: \"[2001:db8::1]/32\" has host bits set; did you mean "
	  "[2001:db8::]/32?" },
	{ "mynetworks /33", "mynetworks = 10.0.0.0/33",
	  "t.conf:1: mynetworks: \"10.0.0.0/33\": prefix is not /0../32" },
	{ "mynetworks /129", "mynetworks = [::]/129",
	  "t.conf:1: mynetworks: \"[::]/129\": prefix is not /0../128" },
	{ "mynetworks empty prefix", "mynetworks = 10.0.0.0/",
	  "t.conf:1: mynetworks: \"10.0.0.0/\": prefix is not /0../32" },
	{ "mynetworks v4-mapped (RFC 4291 2.5.5.2)", "mynetworks = [::ffff:10.0.0.0]/104",
	  "t.conf:1: mynetworks: \"[::ffff:10.0.0.0]/104\": IPv4-mapped address; "
	  "write the IPv4 form" },
	{ "mynetworks trailing comment", "mynetworks = 10.0.0.0/8 # office",
	  "t.conf:1: mynetworks: \"#\" is not a.b.c.d/N or [IPv6]/N" },
	{ "mynetworks ipv4 in brackets", "mynetworks = [10.0.0.1]/32",
	  "t.conf:1: mynetworks: \"[10.0.0.1]/32\" is not a.b.c.d/N or [IPv6]/N" },
	{ "mynetworks host name", "mynetworks = localhost",
	  "t.conf:1: mynetworks: \"localhost\" is not a.b.c.d/N or [IPv6]/N" },
	{ "relay_domains twice", "relay_domains = Example.com example.COM",
	  "t.conf:1: relay_domains: \"example.COM\" is listed twice" },
	{ "relay_domains dot only", "relay_domains = .",
	  "t.conf:1: relay_domains: \".\": empty domain name" },
	{ "relay_domains wildcard", "relay_domains = *.example.com",
	  "t.conf:1: relay_domains: \"*.example.com\": invalid character in domain name" },
	{ "relay_domains unknown policy", "relay_domains = example.com:all",
	  "t.conf:1: relay_domains: \"example.com:all\": the policy after ':' is not list, verify or any" },
	{ "relay_domains policy case", "relay_domains = example.com:LIST",
	  "t.conf:1: relay_domains: \"example.com:LIST\": the policy after ':' is not list, verify or any" },
	{ "relay_domains empty policy", "relay_domains = example.com:",
	  "t.conf:1: relay_domains: \"example.com:\": the policy after ':' is not list, verify or any" },
	{ "relay_domains two policies", "relay_domains = example.com:list:any",
	  "t.conf:1: relay_domains: \"example.com:list:any\": the policy after ':' is not list, verify or any" },
	{ "relay_domains twice with other policies",
	  "relay_domains = example.com:list Example.com:any",
	  "t.conf:1: relay_domains: \"Example.com:any\" is listed twice" },
	{ "relay_domains policy without a domain", "relay_domains = :list",
	  "t.conf:1: relay_domains: \"\": empty domain name" },
	{ "relayhost unclosed", "relayhost = [smtp.example.com",
	  "t.conf:1: relayhost: \"[smtp.example.com\": missing ']'" },
	{ "relayhost bare IP", "relayhost = 192.0.2.1",
	  "t.conf:1: relayhost: \"192.0.2.1\": top-level label is all digits "
	  "(write an IP address as a [literal] where allowed)" },
	{ "relayhost port 0", "relayhost = smtp.example.com:0",
	  "t.conf:1: relayhost: \"smtp.example.com:0\": port is not 1..65535" },
	{ "relayhost junk after ]", "relayhost = [smtp.example.com]x",
	  "t.conf:1: relayhost: \"[smtp.example.com]x\": port is not 1..65535" },
	{ "relayhost ipv6: with a name", "relayhost = [ipv6:mx.example]",
	  "t.conf:1: relayhost: \"[ipv6:mx.example]\": bad IPv6 address" },
	{ "relayhost ipv6: with IPv4", "relayhost = [ipv6:192.0.2.1]",
	  "t.conf:1: relayhost: \"[ipv6:192.0.2.1]\": bad IPv6 address" },
	{ "message_size_limit suffix", "message_size_limit = 10X",
	  "t.conf:1: message_size_limit: \"10X\" is not a size (bytes, optional k, M, G or T)" },
	{ "message_size_limit overflow", "message_size_limit = 20000000000000000k",
	  "t.conf:1: message_size_limit: \"20000000000000000k\" is not a size "
	  "(bytes, optional k, M, G or T)" },
	{ "message_size_limit too small", "message_size_limit = 1000",
	  "t.conf:1: message_size_limit: 1000 is out of range (1024..1T)" },
	{ "message_size_limit too big", "message_size_limit = 2T",
	  "t.conf:1: message_size_limit: 2T is out of range (1024..1T)" },
	{ "recipient_limit below RFC 5321 4.5.3.1.8", "recipient_limit = 99",
	  "t.conf:1: recipient_limit: 99 is below the minimum of 100 "
	  "(RFC 5321 4.5.3.1.8 requires 100)" },
	{ "recipient_limit negative", "recipient_limit = -5",
	  "t.conf:1: recipient_limit: \"-5\" is not a number" },
	{ "recipient_limit overflow", "recipient_limit = 99999999999999999999999",
	  "t.conf:1: recipient_limit: \"99999999999999999999999\" is not a number" },
	{ "line_length_limit below RFC 5321 4.5.3.1.4", "line_length_limit = 511",
	  "t.conf:1: line_length_limit: 511 is below the minimum of 512 "
	  "(RFC 5321 4.5.3.1.4 command line length)" },
	{ "line_length_limit too big", "line_length_limit = 65537",
	  "t.conf:1: line_length_limit: 65537 is out of range (512..65536)" },
	{ "smtpd_timeout 0", "smtpd_timeout = 0",
	  "t.conf:1: smtpd_timeout: 0 is out of range (1s..1h)" },
	{ "smtpd_timeout too long", "smtpd_timeout = 2h",
	  "t.conf:1: smtpd_timeout: 2h is out of range (1s..1h)" },
	{ "smtpd_timeout blank before unit", "smtpd_timeout = 5 m",
	  "t.conf:1: smtpd_timeout: \"5 m\" is not a duration (e.g. 30s, 5m, 1h, 2d)" },
	{ "smtpd_timeout compound", "smtpd_timeout = 1m30s",
	  "t.conf:1: smtpd_timeout: \"1m30s\" is not a duration (e.g. 30s, 5m, 1h, 2d)" },
	{ "max_connections 0", "max_connections = 0",
	  "t.conf:1: max_connections: 0 is out of range (1..1000000)" },
	{ "max_connections_per_ip 0", "max_connections_per_ip = 0",
	  "t.conf:1: max_connections_per_ip: 0 is out of range (1..1000000)" },
	{ "smtpd_error_limit 1001", "smtpd_error_limit = 1001",
	  "t.conf:1: smtpd_error_limit: 1001 is out of range (1..1000)" },
	{ "user root", "user = root", "t.conf:1: user: refusing to run as root" },
	{ "user upper case", "user = Admin",
	  "t.conf:1: user: \"Admin\" is not a login name ([a-z_][a-z0-9_-]*)" },
	{ "user too long", "user = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	  "t.conf:1: user: longer than 32 bytes" },
	{ "log file", "log = file", "t.conf:1: log: \"file\" is not stderr or syslog" },
	{ "durability fsync", "durability = fsync",
	  "t.conf:1: durability: \"fsync\" is not batch or none" },
	{ "spool_map_size too small", "spool_map_size = 512k",
	  "t.conf:1: spool_map_size: 524288 is out of range (1M..16T)" },
	{ "spool_segment_size too big", "spool_segment_size = 5G",
	  "t.conf:1: spool_segment_size: 5G is out of range (1M..4G)" },
	{ "verify_recipients true", "verify_recipients = true",
	  "t.conf:1: verify_recipients: \"true\" is not yes or no" },
	{ "dns_servers host name", "dns_servers = dns.example.com",
	  "t.conf:1: dns_servers: \"dns.example.com\": address is not a.b.c.d or [IPv6]" },
	{ "dns_servers nine", "dns_servers = 1.1.1.1 1.1.1.2 1.1.1.3 1.1.1.4 "
	  "1.1.1.5 1.1.1.6 1.1.1.7 1.1.1.8 1.1.1.9",
	  "t.conf:1: dns_servers: more than 8 servers" },
	{ "max_messages_per_connection 0", "max_messages_per_connection = 0",
	  "t.conf:1: max_messages_per_connection: 0 is out of range (1..100000)" },
	{ "destination_concurrency_limit big",
	  "destination_concurrency_limit = 10001",
	  "t.conf:1: destination_concurrency_limit: 10001 is out of range (1..10000)" },
	{ "destination_rate_limit no window", "destination_rate_limit = 100",
	  "t.conf:1: destination_rate_limit: \"100\" is not 0 or N/DURATION "
	  "(N 1..1000000, DURATION 1s..1d)" },
	{ "destination_rate_limit 0/1m", "destination_rate_limit = 0/1m",
	  "t.conf:1: destination_rate_limit: \"0/1m\" is not 0 or N/DURATION "
	  "(N 1..1000000, DURATION 1s..1d)" },
	{ "destination_rate_limit 2d", "destination_rate_limit = 5/2d",
	  "t.conf:1: destination_rate_limit: \"5/2d\" is not 0 or N/DURATION "
	  "(N 1..1000000, DURATION 1s..1d)" },
	{ "destination_recipient_limit 0", "destination_recipient_limit = 0",
	  "t.conf:1: destination_recipient_limit: 0 is out of range (1..100000)" },
	{ "connect_timeout 11m", "connect_timeout = 11m",
	  "t.conf:1: connect_timeout: 11m is out of range (1s..10m)" },
	{ "connection_idle_timeout 2h", "connection_idle_timeout = 2h",
	  "t.conf:1: connection_idle_timeout: 2h is out of range (0..1h)" },
	{ "retry_schedule empty", "retry_schedule =",
	  "t.conf:1: retry_schedule: empty value" },
	{ "retry_schedule commas only", "retry_schedule = ,,",
	  "t.conf:1: retry_schedule: empty value" },
	{ "retry_schedule 0s", "retry_schedule = 5m 0s",
	  "t.conf:1: retry_schedule: \"0s\" is not a duration of 1s..1d" },
	{ "maximal_queue_lifetime 101d", "maximal_queue_lifetime = 101d",
	  "t.conf:1: maximal_queue_lifetime: 101d is out of range (0..100d)" },
	{ "delay_warning_time 101d", "delay_warning_time = 101d",
	  "t.conf:1: delay_warning_time: 101d is out of range (0..100d)" },
	{ "tls_cert_file control byte", "tls_cert_file = /a\x7f",
	  "t.conf:1: invalid byte 0x7f at column 19" },
};

static void test_invalid(void)
{
	size_t i;

	for (i = 0; i < sizeof(invalid_cases) / sizeof(invalid_cases[0]); i++) {
		const struct invalid_case *tc = &invalid_cases[i];
		struct rm_err err = { 0 };
		struct conf c;
		int rc;

		T_CASE(tc->name);
		rc = parse(&c, tc->text, &err);
		T_EQ_INT(rc, -EINVAL);
		T_EQ_STR(err.msg, tc->want);
		conf_fini(&c);
	}
}

/* test_limits - caps on lines, list lengths, file size; NUL bytes. */
static void test_limits(void)
{
	struct rm_err err = { 0 };
	struct conf c;
	char *big;
	size_t i, n;
	int rc;

	T_CASE("line longer than CONF_MAX_LINE_BYTES");
	big = malloc(CONF_MAX_FILE_BYTES + 2);
	memset(big, '#', CONF_MAX_LINE_BYTES + 1);
	rc = parse_len(&c, big, CONF_MAX_LINE_BYTES + 1, &err);
	T_EQ_INT(rc, -EINVAL);
	T_EQ_STR(err.msg, "t.conf:1: line longer than 65536 bytes");
	conf_fini(&c);

	T_CASE("line of exactly CONF_MAX_LINE_BYTES");
	rc = parse_len(&c, big, CONF_MAX_LINE_BYTES, &err);
	T_EQ_INT(rc, 0);
	conf_fini(&c);

	T_CASE("file larger than CONF_MAX_FILE_BYTES");
	memset(big, '\n', CONF_MAX_FILE_BYTES + 1);
	rc = parse_len(&c, big, CONF_MAX_FILE_BYTES + 1, &err);
	T_EQ_INT(rc, -EFBIG);
	T_EQ_STR(err.msg, "conf: t.conf: larger than 1048576 bytes");
	conf_fini(&c);

	T_CASE("NUL byte");
	rc = parse_len(&c, "log = std\0err", 13, &err);
	T_EQ_INT(rc, -EINVAL);
	T_EQ_STR(err.msg, "t.conf:1: invalid byte 0x00 at column 10");
	conf_fini(&c);

	T_CASE("17 listen lines");
	for (i = 0, n = 0; i < 17; i++)
		n += (size_t)sprintf(big + n, "listen = 127.0.0.1:%zu\n", 100 + i);
	rc = parse_len(&c, big, n, &err);
	T_EQ_INT(rc, -EINVAL);
	T_EQ_STR(err.msg, "t.conf:17: listen: more than 16 listeners");
	conf_fini(&c);

	T_CASE("16 listen lines");
	rc = parse_len(&c, big, n - strlen("listen = 127.0.0.1:116\n"), &err);
	T_EQ_INT(rc, 0);
	T_EQ_INT(c.n_listen, 16);
	conf_fini(&c);

	T_CASE("mynetworks CONF_MAX_MYNETWORKS + 1");
	n = (size_t)sprintf(big, "mynetworks =");
	for (i = 0; i <= CONF_MAX_MYNETWORKS; i++)
		n += (size_t)sprintf(big + n, " 10.%zu.%zu.0/24", i / 256, i % 256);
	rc = parse_len(&c, big, n, &err);
	T_EQ_INT(rc, -EINVAL);
	T_EQ_STR(err.msg, "t.conf:1: mynetworks: more than 1024 entries");
	conf_fini(&c);

	T_CASE("mynetworks CONF_MAX_MYNETWORKS");
	rc = parse_len(&c, big, n - strlen(" 10.4.0.0/24"), &err);
	T_EQ_INT(rc, 0);
	T_EQ_INT(c.n_mynetworks, CONF_MAX_MYNETWORKS);
	conf_fini(&c);

	T_CASE("relay_domains CONF_MAX_RELAY_DOMAINS + 1");
	n = (size_t)sprintf(big, "relay_domains =");
	for (i = 0; i <= CONF_MAX_RELAY_DOMAINS; i++)
		n += (size_t)sprintf(big + n, " d%zu.example", i);
	rc = parse_len(&c, big, n, &err);
	T_EQ_INT(rc, -EINVAL);
	T_EQ_STR(err.msg, "t.conf:1: relay_domains: more than 1024 entries");
	conf_fini(&c);

	{
		static const char *const paths[] = { "spool_dir", "transport_map",
			"relay_recipients", "resolv_conf", "tls_cert_file",
			"tls_key_file" };
		char want[128];

		for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
			T_CASE(paths[i]);
			n = (size_t)sprintf(big, "%s = /", paths[i]);
			memset(big + n, 'a', PATH_MAX - 1);
			n += PATH_MAX - 1;
			rc = parse_len(&c, big, n, &err);
			T_EQ_INT(rc, -EINVAL);
			snprintf(want, sizeof(want), "t.conf:1: %s: path longer "
				 "than %d bytes", paths[i], PATH_MAX - 1);
			T_EQ_STR(err.msg, want);
			conf_fini(&c);
			rc = parse_len(&c, big, n - 1, &err);
			T_EQ_INT(rc, 0);
			conf_fini(&c);
		}
	}

	T_CASE("retry_schedule 33 steps");
	n = (size_t)sprintf(big, "retry_schedule =");
	for (i = 0; i < 33; i++)
		n += (size_t)sprintf(big + n, " 1m");
	rc = parse_len(&c, big, n, &err);
	T_EQ_INT(rc, -EINVAL);
	T_EQ_STR(err.msg, "t.conf:1: retry_schedule: more than 32 steps");
	conf_fini(&c);
	free(big);
}

/* ---- defaults, listen replacement, overrides, files -------------------- */

static void test_defaults(void)
{
	struct rm_err err = { 0 };
	struct conf c;
	int rc;

	T_CASE("defaults");
	rc = conf_defaults(&c, &err);
	T_EQ_INT(rc, 0);
	T_EQ_INT(c.n_listen, 1);
	T_EQ_STR(c.listen[0].text, "127.0.0.1:2525");
	T_EQ_INT(c.listen[0].role, CONF_ROLE_MX);
	T_EQ_INT(c.listen[0].addr.ss_family, AF_INET);
	T_EQ_INT(c.listen[0].addr_len, sizeof(struct sockaddr_in));
	T_EQ_INT(ntohs(((struct sockaddr_in *)&c.listen[0].addr)->sin_port), 2525);
	T_EQ_STR(c.spool_dir, "./var/spool");
	T_EQ_INT(c.reactors, 0);
	T_EQ_INT(c.n_mynetworks, 2);
	T_EQ_INT(c.n_relay_domains, 0);
	T_EQ_STR(c.relayhost, "");
	T_EQ_INT(c.message_size_limit, 10240000);
	T_EQ_INT(c.recipient_limit, 1000);
	T_EQ_INT(c.line_length_limit, 2048);
	T_EQ_INT(c.smtpd_timeout_ms, 300000);
	T_EQ_INT(c.max_connections, 10000);
	T_EQ_INT(c.max_connections_per_ip, 100);
	T_EQ_INT(c.smtpd_error_limit, 10);
	T_EQ_STR(c.user, "ringmta");
	T_EQ_INT(c.log, CONF_LOG_STDERR);
	T_EQ_INT(c.durability, CONF_DURABILITY_BATCH);
	T_EQ_INT(c.spool_map_size, 1ULL << 30);
	T_EQ_INT(c.spool_segment_size, 64ULL << 20);
	T_EQ_INT(c.n_retry_schedule, 5);
	T_EQ_INT(c.retry_schedule_ms[2], 20 * 60000);
	T_EQ_INT(c.retry_schedule_ms[4], 3600000);
	T_EQ_INT(c.maximal_queue_lifetime_ms, 5ULL * 86400000);
	T_EQ_INT(c.destination_rate_limit.count, 0);
	T_EQ_STR(c.resolv_conf, "/etc/resolv.conf");
	T_EQ_INT(c.verify_recipients, false);

	T_CASE("defaults: never an open relay");
	{
		struct sockaddr_in sin = { .sin_family = AF_INET };
		inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
		T_EQ_INT(conf_mynetworks_match(&c, (struct sockaddr *)&sin), false);
		T_EQ_INT(conf_relay_domain_match(&c, "example.com", 11), false);
	}
	if (c.myhostname[0] == '\0')
		snprintf(c.myhostname, sizeof(c.myhostname), "test.example");
	T_CASE("defaults pass conf_check");
	T_EQ_INT(conf_check(&c, &err), 0);
	conf_fini(&c);
	T_CASE("conf_fini twice");
	conf_fini(&c);
	T_EQ_INT(c.n_listen, 0);
}

/* write_tmp - text into a fresh temporary file; returns its path. */
static const char *write_tmp(const char *text)
{
	static char path[64];
	int fd;

	snprintf(path, sizeof(path), "/tmp/test_conf.XXXXXX");
	fd = mkstemp(path);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		perror("mkstemp");
		exit(2);
	}
	close(fd);
	return path;
}

static void test_load_and_overrides(void)
{
	struct rm_err err = { 0 };
	struct conf c;
	const char *path;
	char *ov[4];
	char want[512];
	int rc;

	path = write_tmp("myhostname = mx.example\nlog = syslog\n"
			 "listen = 127.0.0.1:25\nlisten = [::1]:587 submission\n");

	T_CASE("file: the first listen replaces the default");
	rc = conf_load(&c, path, NULL, 0, &err);
	T_CHECK(rc == 0, "rc: got %d (%s), want 0", rc, err.msg);
	T_EQ_INT(c.n_listen, 2);
	T_EQ_STR(c.listen[0].text, "127.0.0.1:25");
	T_EQ_STR(c.listen[1].text, "[::1]:587");
	T_EQ_INT(c.listen[1].role, CONF_ROLE_SUBMISSION);
	T_EQ_INT(c.log, CONF_LOG_SYSLOG);
	conf_fini(&c);

	T_CASE("-o overrides the file, listen replaced then appended");
	ov[0] = "log=stderr";
	ov[1] = " listen = *:25 ";
	ov[2] = "listen=*:587 submission";
	ov[3] = "recipient_limit = 500";
	rc = conf_load(&c, path, ov, 4, &err);
	T_CHECK(rc == 0, "rc: got %d (%s), want 0", rc, err.msg);
	T_EQ_INT(c.log, CONF_LOG_STDERR);
	T_EQ_INT(c.n_listen, 2);
	T_EQ_STR(c.listen[0].text, "*:25");
	T_EQ_INT(c.listen[0].is_any, true);
	T_EQ_INT(c.listen[0].addr.ss_family, AF_INET6);
	T_EQ_STR(c.listen[1].text, "*:587");
	T_EQ_INT(c.recipient_limit, 500);
	T_EQ_STR(c.myhostname, "mx.example");
	conf_fini(&c);

	T_CASE("-o bad value");
	ov[0] = "reactors=0";
	rc = conf_load(&c, path, ov, 1, &err);
	T_EQ_INT(rc, -EINVAL);
	T_EQ_STR(err.msg, "-o reactors=0: reactors: \"0\" is not auto or 1..256");
	T_EQ_INT(c.n_listen, 0);

	T_CASE("-o without =");
	ov[0] = "nokey";
	rc = conf_load(&c, NULL, ov, 1, &err);
	T_EQ_INT(rc, -EINVAL);
	T_EQ_STR(err.msg, "-o nokey: missing '=' (use -o key=value)");

	T_CASE("-o unknown key");
	ov[0] = "bogus=1";
	rc = conf_load(&c, NULL, ov, 1, &err);
	T_EQ_INT(rc, -EINVAL);
	T_EQ_STR(err.msg, "-o bogus=1: unknown key \"bogus\"");

	T_CASE("-o key twice");
	ov[0] = "log=syslog";
	ov[1] = "log=stderr";
	rc = conf_load(&c, NULL, ov, 2, &err);
	T_EQ_INT(rc, -EINVAL);
	T_EQ_STR(err.msg, "-o log=stderr: log: given twice");

	T_CASE("-o control byte");
	ov[0] = "log=sys\tlog\x01";
	rc = conf_load(&c, NULL, ov, 1, &err);
	T_EQ_INT(rc, -EINVAL);
	T_EQ_STR(err.msg, "-o log=sys\\x09log\\x01: invalid byte 0x01 at column 12");

	T_CASE("-o empty mynetworks");
	ov[0] = "mynetworks=";
	ov[1] = "myhostname=mx.example";
	rc = conf_load(&c, NULL, ov, 2, &err);
	T_EQ_INT(rc, 0);
	T_EQ_INT(c.n_mynetworks, 0);
	conf_fini(&c);
	unlink(path);

	T_CASE("file error keeps the file name and line");
	path = write_tmp("# x\nlog = syslog\nreactors = many\n");
	rc = conf_load(&c, path, NULL, 0, &err);
	T_EQ_INT(rc, -EINVAL);
	snprintf(want, sizeof(want), "%s:3: reactors: \"many\" is not auto or 1..256",
		 path);
	T_EQ_STR(err.msg, want);
	unlink(path);

	T_CASE("missing file");
	rc = conf_load(&c, "/nonexistent/ringmta.conf", NULL, 0, &err);
	T_EQ_INT(rc, -ENOENT);
	T_EQ_STR(err.msg, "conf: open /nonexistent/ringmta.conf: No such file "
		 "or directory");
	conf_fini(&c);
}

/* ---- conf_check: rules across keys ------------------------------------- */

static const struct check_case {
	const char *name, *text, *want;
} check_cases[] = {
	{ "smtps without TLS files", "listen = *:465 smtps",
	  "conf: listen *:465 smtps: needs tls_cert_file and tls_key_file" },
	{ "smtps with TLS files", "listen = *:465 smtps\ntls_cert_file = /c\n"
	  "tls_key_file = /k", NULL },
	{ "cert without key", "tls_cert_file = /c",
	  "conf: tls_cert_file and tls_key_file must be set together" },
	{ "key without cert", "tls_key_file = /k",
	  "conf: tls_cert_file and tls_key_file must be set together" },
	{ "no resolver", "resolv_conf =",
	  "conf: resolv_conf: empty while dns_servers is empty" },
	{ "dns_servers without resolv_conf", "resolv_conf =\ndns_servers = ::1", NULL },
	{ "delay warning at lifetime", "delay_warning_time = 5d",
	  "conf: delay_warning_time: not below maximal_queue_lifetime" },
	{ "delay warning below lifetime", "delay_warning_time = 4h", NULL },
	{ ":list without relay_recipients",
	  "relay_domains = a.example b.example:list",
	  "conf: relay_domains: b.example:list needs relay_recipients" },
	{ ":list with relay_recipients",
	  "relay_domains = b.example:list\nrelay_recipients = /r", NULL },
	{ ":verify and :any need nothing",
	  "relay_domains = b.example:verify c.example:any", NULL },
};

static void test_check(void)
{
	size_t i;

	for (i = 0; i < sizeof(check_cases) / sizeof(check_cases[0]); i++) {
		const struct check_case *tc = &check_cases[i];
		struct rm_err err = { 0 };
		struct conf c;
		int rc;

		T_CASE(tc->name);
		rc = parse(&c, tc->text, &err);
		T_CHECK(rc == 0, "parse: got %d (%s), want 0", rc, err.msg);
		snprintf(c.myhostname, sizeof(c.myhostname), "mx.example");
		rc = conf_check(&c, &err);
		T_EQ_INT(rc, tc->want ? -EINVAL : 0);
		if (tc->want)
			T_EQ_STR(err.msg, tc->want);
		conf_fini(&c);
	}
	{
		struct rm_err err = { 0 };
		struct conf c;

		T_CASE("myhostname unset (gethostname() was not a domain)");
		conf_defaults(&c, &err);
		c.myhostname[0] = '\0';
		T_EQ_INT(conf_check(&c, &err), -EINVAL);
		T_EQ_STR(err.msg, "conf: myhostname: the system host name is not "
			 "a valid domain name; set myhostname");
		conf_fini(&c);
	}
}

/* ---- matching ---------------------------------------------------------- */

static const struct cidr_case {
	const char *name, *nets, *addr;
	bool want;
} cidr_cases[] = {
	{ "/8 inside", "127.0.0.0/8", "127.1.2.3", true },
	{ "/8 outside", "127.0.0.0/8", "128.0.0.1", false },
	{ "v4-mapped matches IPv4 entry", "127.0.0.0/8", "::ffff:127.0.0.1", true },
	{ "v4-mapped outside", "127.0.0.0/8", "::ffff:10.0.0.1", false },
	{ "/128 exact", "[::1]/128", "::1", true },
	{ "/128 neighbour", "[::1]/128", "::2", false },
	{ "v6 /0 matches IPv6", "[::]/0", "2001:db8::1", true },
	{ "v6 /0 does not match v4-mapped", "[::]/0", "::ffff:10.0.0.1", false },
	{ "v6 /0 does not match IPv4", "[::]/0", "10.0.0.1", false },
	{ "v4 /0 matches IPv4", "0.0.0.0/0", "203.0.113.9", true },
	{ "v4 /0 matches v4-mapped", "0.0.0.0/0", "::ffff:203.0.113.9", true },
	{ "v4 /0 does not match IPv6", "0.0.0.0/0", "::1", false },
	{ "/32 exact", "192.0.2.1/32", "192.0.2.1", true },
	{ "/32 neighbour", "192.0.2.1", "192.0.2.2", false },
	{ "/9 last inside", "10.0.0.0/9", "10.127.255.255", true },
	{ "/9 first outside", "10.0.0.0/9", "10.128.0.0", false },
	{ "/33 v6 inside", "[2001:db8::]/33", "2001:db8:7fff::1", true },
	{ "/33 v6 outside", "[2001:db8::]/33", "2001:db8:8000::", false },
	{ "/127 v6", "2001:db8::/127", "2001:db8::1", true },
	{ "second entry", "10.0.0.0/8, 192.168.0.0/16", "192.168.7.7", true },
	{ "empty list", "", "127.0.0.1", false },
};

/* sockaddr_of - an AF_INET or AF_INET6 address from text. */
static void sockaddr_of(const char *s, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, s, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		ss->ss_family = AF_INET;
		return;
	}
	if (inet_pton(AF_INET6, s, &((struct sockaddr_in6 *)ss)->sin6_addr) != 1) {
		fprintf(stderr, "bad test address %s\n", s);
		exit(2);
	}
	ss->ss_family = AF_INET6;
}

static void test_mynetworks_match(void)
{
	struct sockaddr_storage ss;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	size_t i;

	for (i = 0; i < sizeof(cidr_cases) / sizeof(cidr_cases[0]); i++) {
		const struct cidr_case *tc = &cidr_cases[i];
		struct rm_err err = { 0 };
		char text[256];
		struct conf c;
		int rc;

		T_CASE(tc->name);
		snprintf(text, sizeof(text), "mynetworks = %s", tc->nets);
		rc = parse(&c, text, &err);
		T_CHECK(rc == 0, "parse: got %d (%s), want 0", rc, err.msg);
		sockaddr_of(tc->addr, &ss);
		T_EQ_INT(conf_mynetworks_match(&c, (struct sockaddr *)&ss), tc->want);
		conf_fini(&c);
	}
	{
		struct rm_err err = { 0 };
		struct conf c;

		conf_defaults(&c, &err);
		T_CASE("default: v4-mapped loopback");
		sockaddr_of("::ffff:127.0.0.1", &ss);
		T_EQ_INT(conf_mynetworks_match(&c, (struct sockaddr *)&ss), true);
		T_CASE("default: ::1");
		sockaddr_of("::1", &ss);
		T_EQ_INT(conf_mynetworks_match(&c, (struct sockaddr *)&ss), true);
		T_CASE("default: 10.0.0.1");
		sockaddr_of("10.0.0.1", &ss);
		T_EQ_INT(conf_mynetworks_match(&c, (struct sockaddr *)&ss), false);
		T_CASE("AF_UNIX never matches");
		T_EQ_INT(conf_mynetworks_match(&c, (struct sockaddr *)&sun), false);
		conf_fini(&c);
	}
}

static const struct domain_case {
	const char *name, *domain;
	bool want;
} domain_cases[] = {
	{ "exact", "example.com", true },
	{ "exact, other case", "EXAMPLE.Com", true },
	{ "subdomain of an exact entry", "www.example.com", false },
	{ "parent of a .entry", "sub.example.net", false },
	{ "child of a .entry", "a.sub.example.net", true },
	{ "grandchild, other case", "A.B.Sub.Example.NET", true },
	{ "no label boundary", "xsub.example.net", false },
	{ "no label boundary, deeper", "a.xsub.example.net", false },
	{ "trailing dot", "example.com.", false },
	{ "empty", "", false },
	{ "address literal", "[192.0.2.1]", false },
	{ "prefix of an entry", "example.co", false },
	{ "suffix of an entry", "nexample.com", false },
	{ "other domain", "example.org", false },
};

static void test_relay_domain_match(void)
{
	struct rm_err err = { 0 };
	struct conf c;
	size_t i, ml;
	void *base;
	int rc;

	rc = parse(&c, "relay_domains = Example.COM, .sub.example.net", &err);
	T_CHECK(rc == 0, "parse: got %d (%s), want 0", rc, err.msg);
	for (i = 0; i < sizeof(domain_cases) / sizeof(domain_cases[0]); i++) {
		const struct domain_case *tc = &domain_cases[i];
		size_t len = strlen(tc->domain);
		const char *g = t_guard_copy(tc->domain, len, &base, &ml);

		T_CASE(tc->name);
		T_EQ_INT(conf_relay_domain_match(&c, g, len), tc->want);
		t_guard_free(base, ml);
	}
	T_CASE("length-bounded, not NUL-terminated");
	T_EQ_INT(conf_relay_domain_match(&c, "example.comX", 11), true);
	T_EQ_INT(conf_relay_domain_match(&c, "a.sub.example.netX", 17), true);
	conf_fini(&c);
}

static const struct policy_case {
	const char *name, *text, *domain;
	enum conf_rcpt_policy want;
} policy_cases[] = {
	{ "not a relay domain", "relay_domains = a.example", "b.example",
	  CONF_RCPT_NONE },
	{ "no suffix, nothing set: any", "relay_domains = a.example",
	  "a.example", CONF_RCPT_ANY },
	{ "no suffix, relay_recipients: list",
	  "relay_domains = a.example\nrelay_recipients = /r", "A.Example",
	  CONF_RCPT_LIST },
	{ "no suffix, verify_recipients: verify",
	  "relay_domains = a.example\nverify_recipients = yes", "a.example",
	  CONF_RCPT_VERIFY },
	{ "no suffix, both: list wins",
	  "relay_domains = a.example\nverify_recipients = yes\n"
	  "relay_recipients = /r", "a.example", CONF_RCPT_LIST },
	{ ":any beats relay_recipients",
	  "relay_domains = a.example:any\nrelay_recipients = /r", "a.example",
	  CONF_RCPT_ANY },
	{ ":verify beats relay_recipients",
	  "relay_domains = a.example:verify\nrelay_recipients = /r",
	  "a.example", CONF_RCPT_VERIFY },
	{ ":list", "relay_domains = .a.example:list", "x.a.example",
	  CONF_RCPT_LIST },
	{ "longest entry wins, whatever the order",
	  "relay_domains = .example:any .a.example:list", "x.a.example",
	  CONF_RCPT_LIST },
	{ "longest entry wins, other order",
	  "relay_domains = .a.example:list .example:any", "x.b.example",
	  CONF_RCPT_ANY },
	{ "exact beats a parent .entry",
	  "relay_domains = .example:list a.example:any\nrelay_recipients = /r",
	  "a.example", CONF_RCPT_ANY },
	{ "trailing dot never matches", "relay_domains = a.example:any",
	  "a.example.", CONF_RCPT_NONE },
};

static void test_relay_domain_policy(void)
{
	size_t i, ml;
	void *base;

	for (i = 0; i < sizeof(policy_cases) / sizeof(policy_cases[0]); i++) {
		const struct policy_case *tc = &policy_cases[i];
		size_t len = strlen(tc->domain);
		struct rm_err err = { 0 };
		enum conf_rcpt_policy got;
		const char *g;
		struct conf c;
		int rc;

		T_CASE(tc->name);
		rc = parse(&c, tc->text, &err);
		T_CHECK(rc == 0, "parse: got %d (%s), want 0", rc, err.msg);
		g = t_guard_copy(tc->domain, len, &base, &ml);
		got = conf_relay_domain_policy(&c, g, len);
		T_CHECK(got == tc->want, "got %s, want %s",
			conf_rcpt_policy_name(got),
			conf_rcpt_policy_name(tc->want));
		T_EQ_INT(conf_relay_domain_match(&c, g, len),
			 tc->want != CONF_RCPT_NONE);
		t_guard_free(base, ml);
		conf_fini(&c);
	}
	T_CASE("policy names");
	T_EQ_STR(conf_rcpt_policy_name(CONF_RCPT_DEFAULT), "default");
	T_EQ_STR(conf_rcpt_policy_name(CONF_RCPT_NONE), "none");
}

static void test_reactor_count(void)
{
	struct rm_err err = { 0 };
	struct conf c;

	T_CASE("reactors = 3");
	parse(&c, "reactors = 3", &err);
	T_EQ_INT(conf_reactor_count(&c), 3);
	conf_fini(&c);
	T_CASE("reactors = auto");
	parse(&c, "reactors = auto", &err);
	T_CHECK(conf_reactor_count(&c) >= 1 && conf_reactor_count(&c) <= 256,
		"got %u, want 1..256", conf_reactor_count(&c));
	T_CASE("reactors = auto follows the affinity mask (taskset)");
	{
		cpu_set_t old_set, one;
		int cpu = sched_getcpu();

		T_CHECK(sched_getaffinity(0, sizeof(old_set), &old_set) == 0, "getaffinity");
		CPU_ZERO(&one);
		CPU_SET(cpu < 0 ? 0 : cpu, &one);
		T_CHECK(sched_setaffinity(0, sizeof(one), &one) == 0, "setaffinity");
		T_EQ_INT(conf_reactor_count(&c), 1);
		T_CHECK(sched_setaffinity(0, sizeof(old_set), &old_set) == 0, "restore");
		/* at most the mask: a cgroup quota may cap it further */
		T_CHECK(conf_reactor_count(&c) <= (unsigned)CPU_COUNT(&old_set),
			"got %u, mask has %d", conf_reactor_count(&c), CPU_COUNT(&old_set));
	}
	conf_fini(&c);
	T_CASE("cgroup v2 cpu.max");
	T_EQ_INT(conf_cpu_quota_parse("max 100000\n"), 0);
	T_EQ_INT(conf_cpu_quota_parse("200000 100000\n"), 2);
	T_EQ_INT(conf_cpu_quota_parse("150000 100000"), 2);
	T_EQ_INT(conf_cpu_quota_parse("50000 100000\n"), 1);
	T_EQ_INT(conf_cpu_quota_parse("100000000 1000"), 256);
	T_EQ_INT(conf_cpu_quota_parse("18446744073709551615 100000"), 256);
	T_EQ_INT(conf_cpu_quota_parse("0 100000"), 0);
	T_EQ_INT(conf_cpu_quota_parse("100000 0"), 0);
	T_EQ_INT(conf_cpu_quota_parse(""), 0);
	T_EQ_INT(conf_cpu_quota_parse("abc"), 0);
	T_EQ_INT(conf_cpu_quota_parse("100000 100000 junk"), 0);
	T_CASE("role names");
	T_EQ_STR(conf_role_name(CONF_ROLE_MX), "mx");
	T_EQ_STR(conf_role_name(CONF_ROLE_SUBMISSION), "submission");
	T_EQ_STR(conf_role_name(CONF_ROLE_SMTPS), "smtps");
}

/* ---- round trip and generated files ------------------------------------ */

static void test_round_trip(void)
{
	static const char text[] =
		"listen = *:25\nlisten = [2001:db8::1]:587 submission\n"
		"listen = 192.0.2.1:465 smtps\n"
		"spool_dir = /var/spool/ringmta\nreactors = 8\n"
		"myhostname = mx.example.org\n"
		"mynetworks = 10.0.0.0/8 [2001:db8::]/32 192.0.2.7\n"
		"relay_domains = example.org:list .example.org:verify x.example:any\n"
		"relay_recipients = /etc/ringmta/rcpt\n"
		"relayhost = [ipv6:2001:db8::25]:2525\n"
		"message_size_limit = 12345678\nsmtpd_timeout = 1500ms\n"
		"dns_servers = 192.0.2.53 [2001:db8::53]:5353\n"
		"destination_rate_limit = 7/90s\nretry_schedule = 1s 1d\n"
		"tls_cert_file = /c\ntls_key_file = /k\n";
	struct rm_err err = { 0 };
	struct conf a, b;
	char *da, *db;
	int rc;

	T_CASE("parse(dump(c)) dumps the same");
	rc = parse(&a, text, &err);
	T_CHECK(rc == 0, "parse: got %d (%s), want 0", rc, err.msg);
	da = dump(&a);
	rc = parse(&b, da, &err);
	T_CHECK(rc == 0, "parse dump: got %d (%s), want 0", rc, err.msg);
	db = dump(&b);
	T_EQ_STR(db, da);
	free(da);
	free(db);
	conf_fini(&a);
	conf_fini(&b);
}

/* mem_output - what fn writes, as a heap string. */
static char *mem_output(int (*fn)(FILE *))
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (f == NULL || fn(f) != 0) {
		perror("open_memstream");
		exit(2);
	}
	fclose(f);
	return buf;
}

static void test_generated_files(void)
{
	struct rm_err err = { 0 };
	char *want, *got, *da, *db;
	const char *path;
	struct conf a, b;
	int rc;

	T_CASE("deploy/ringmta.conf is conf_write_example()");
	path = src_path("deploy/ringmta.conf");
	want = mem_output(conf_write_example);
	got = read_all(path, NULL);
	T_CHECK(got != NULL, "cannot read %s", path);
	if (got)
		T_CHECK(strcmp(got, want) == 0, "%s differs from "
			"conf_write_example(); regenerate it", path);
	free(got);
	free(want);

	T_CASE("deploy/ringmta.conf parses to the defaults");
	rc = conf_defaults(&a, &err);
	T_EQ_INT(rc, 0);
	rc = conf_defaults(&b, &err);
	T_EQ_INT(rc, 0);
	rc = conf_parse_file(&b, path, &err);
	T_CHECK(rc == 0, "parse: got %d (%s), want 0", rc, err.msg);
	da = dump(&a);
	db = dump(&b);
	T_EQ_STR(db, da);
	free(da);
	free(db);
	conf_fini(&a);
	conf_fini(&b);

	T_CASE("doc/CONFIG.md is conf_write_reference()");
	path = src_path("doc/CONFIG.md");
	want = mem_output(conf_write_reference);
	got = read_all(path, NULL);
	T_CHECK(got != NULL, "cannot read %s", path);
	if (got)
		T_CHECK(strcmp(got, want) == 0, "%s differs from "
			"conf_write_reference(); regenerate it", path);
	free(got);
	free(want);
}

int main(void)
{
	test_valid();
	test_invalid();
	test_limits();
	test_defaults();
	test_load_and_overrides();
	test_check();
	test_mynetworks_match();
	test_relay_domain_match();
	test_relay_domain_policy();
	test_reactor_count();
	test_round_trip();
	test_generated_files();
	return t_done();
}
