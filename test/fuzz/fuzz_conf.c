/*
 * fuzz_conf - libFuzzer target for the configuration parser.
 *
 * Each input is parsed as a configuration file on top of the defaults and,
 * split at LF, as a list of -o overrides. Nothing may crash, leak or trip
 * ASan/UBSan. When a file parses, conf_check() runs, the matchers run on
 * bytes of the input, and the round trip must hold: conf_dump() output
 * parses without error and dumps to the same text.
 *
 * Seeds: test/fuzz/corpus/conf/.
 * Run:   CC=clang meson setup build-conffuzz -Dfuzz=true &&
 *        ninja -C build-conffuzz test/fuzz_conf &&
 *        build-conffuzz/test/fuzz_conf test/fuzz/corpus/conf
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringmta/conf.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* MAX_OVERRIDES - -o strings taken from one input. */
#define MAX_OVERRIDES 16

/* dump_text - conf_dump() into a heap string; aborts when that fails. */
static char *dump_text(const struct conf *c, size_t *len)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);

	if (f == NULL || conf_dump(c, f) != 0)
		abort();
	fclose(f);
	return buf;
}

/* round_trip - parse(dump(c)) must succeed and dump the same. */
static void round_trip(const struct conf *c)
{
	struct rm_err err;
	struct conf d;
	size_t la, lb;
	char *a, *b;

	if (c->myhostname[0] == '\0')
		return;
	a = dump_text(c, &la);
	if (conf_defaults(&d, &err) != 0) {
		free(a);
		return;
	}
	if (conf_parse_text(&d, "dump", a, la, &err) != 0) {
		fprintf(stderr, "dump does not parse: %s\n%s", err.msg, a);
		abort();
	}
	b = dump_text(&d, &lb);
	if (la != lb || memcmp(a, b, la) != 0) {
		fprintf(stderr, "round trip differs:\n%s---\n%s", a, b);
		abort();
	}
	free(a);
	free(b);
	conf_fini(&d);
}

/* matchers - run the lookups on input bytes. */
static void matchers(const struct conf *c, const uint8_t *data, size_t size)
{
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
	struct sockaddr_in sin = { .sin_family = AF_INET };

	if (conf_relay_domain_match(c, (const char *)data, size) !=
	    (conf_relay_domain_policy(c, (const char *)data, size) !=
	     CONF_RCPT_NONE))
		abort();
	if (size >= 16) {
		memcpy(&sin6.sin6_addr, data + size - 16, 16);
		memcpy(&sin.sin_addr, data + size - 4, 4);
		conf_mynetworks_match(c, (const struct sockaddr *)&sin6);
		conf_mynetworks_match(c, (const struct sockaddr *)&sin);
	}
}

/* overrides - the input split at LF as -o strings. */
static void overrides(const uint8_t *data, size_t size)
{
	char *copy = malloc(size + 1), *ov[MAX_OVERRIDES], *s;
	struct rm_err err;
	struct conf c;
	size_t n = 0;

	if (copy == NULL)
		return;
	memcpy(copy, data, size);
	copy[size] = '\0';
	for (s = copy; n < MAX_OVERRIDES && s; n++) {
		ov[n] = s;
		s = strchr(s, '\n');
		if (s)
			*s++ = '\0';
	}
	if (conf_defaults(&c, &err) == 0) {
		if (conf_override(&c, ov, n, &err) == 0)
			conf_check(&c, &err);
		conf_fini(&c);
	}
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rm_err err;
	struct conf c;

	if (conf_defaults(&c, &err) != 0)
		return 0;
	if (conf_parse_text(&c, "fuzz", (const char *)data, size, &err) == 0) {
		conf_check(&c, &err);
		matchers(&c, data, size);
		round_trip(&c);
	} else if (memchr(err.msg, '\0', sizeof(err.msg)) == NULL) {
		abort();
	}
	conf_fini(&c);
	overrides(data, size);
	return 0;
}
