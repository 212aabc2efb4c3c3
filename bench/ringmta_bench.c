/*
 * ringmta_bench - `ringmta-bench`: the load generator (send) and the sink
 *                 that ship with ringmta.
 *
 * Usage: ringmta-bench send --target HOST:PORT [options]   (see send --help)
 *        ringmta-bench sink [--listen HOST:PORT] [options]  (see sink --help)
 *
 * Owns: nothing but the dispatch to bench_send.c / bench_sink.c.
 * Must not: hide a failure: every subcommand exits non-zero when its
 *       counts do not add up (send: 3 when a message got no end-of-data
 *       reply) or on bad options (2).
 * Interface: bench/README.md (methodology, the comparison harness).
 * Limits, Errors: per subcommand.
 * Standards: RFC 5321, RFC 2920, RFC 3030.
 */
#include "bench.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
	fputs("usage: ringmta-bench send --target HOST:PORT [options]\n"
	      "       ringmta-bench sink [--listen HOST:PORT] [options]\n"
	      "       ringmta-bench send --help | sink --help\n", f);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "send") == 0)
		return bench_send_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "sink") == 0)
		return bench_sink_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	usage(stderr);
	return 2;
}
