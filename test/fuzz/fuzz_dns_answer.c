/*
 * fuzz_dns_answer - libFuzzer target for dns_answer_parse, the check and
 *                   parse of a DNS answer read over TCP.
 *
 * Input: byte 0 picks the question's type (MX, A, AAAA), the rest is the
 * message. The question is "mx.fuzz.test"; its id is the message's own
 * first two bytes, so the fuzzer gets past the id check at once.
 * Checks: no over-read (ASan) or leak; records only with DNS_E_NOERROR,
 * then at least one, each MX name NUL-terminated within DNS_MAXDN*4 bytes
 * (udns's presentation form) and only known statuses otherwise.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <udns.h>

#include "ringmta/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned types[] = { DNS_T_MX, DNS_T_A, DNS_T_AAAA };
	uint8_t qdn[DNS_MAXDN];
	unsigned qtype, qid;
	void *rr = NULL;
	int rc;

	if (size < 3 || dns_sptodn("mx.fuzz.test", qdn, sizeof(qdn)) <= 0)
		return 0;
	qtype = types[data[0] % 3];
	qid = (unsigned)data[1] << 8 | data[2];
	rc = dns_answer_parse(data + 1, size - 1, qid, qdn, qtype, &rr);
	if (rc != DNS_E_NOERROR) {
		if (rr != NULL)
			abort();
		if (rc != DNS_E_NXDOMAIN && rc != DNS_E_NODATA && rc != DNS_E_TEMPFAIL &&
		    rc != DNS_E_PROTOCOL && rc != DNS_E_NOMEM)
			abort();
		return 0;
	}
	if (rr == NULL)
		abort();
	if (qtype == DNS_T_MX) {
		struct dns_rr_mx *mx = rr;

		if (mx->dnsmx_nrr < 1)
			abort();
		for (int i = 0; i < mx->dnsmx_nrr; i++)
			if (mx->dnsmx_mx[i].name == NULL ||
			    strnlen(mx->dnsmx_mx[i].name, DNS_MAXDN * 4) >= DNS_MAXDN * 4)
				abort();
	} else if (qtype == DNS_T_A) {
		if (((struct dns_rr_a4 *)rr)->dnsa4_nrr < 1)
			abort();
	} else if (((struct dns_rr_a6 *)rr)->dnsa6_nrr < 1) {
		abort();
	}
	free(rr);
	return 0;
}
