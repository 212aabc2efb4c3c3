/*
 * deliver - the outbound delivery engine (skeleton: being written).
 *
 * Interface: include/ringmta/deliver.h
 */
#include "ringmta/deliver.h"

#include <errno.h>
#include <stdlib.h>

struct deliver {
	struct server *sv;
	bool is_kicked;
};

int deliver_new(struct deliver **out, struct server *sv, struct rm_err *err)
{
	struct deliver *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return rm_err_set(err, -ENOMEM, "deliver: out of memory");
	d->sv = sv;
	*out = d;
	return 0;
}

void deliver_free(struct deliver *d)
{
	free(d);
}

void deliver_accepted(struct deliver *d, const char *queue_id)
{
	(void)d;
	(void)queue_id;
}

bool deliver_is_busy(const struct deliver *d, const char *queue_id)
{
	(void)d;
	(void)queue_id;
	return false;
}

void deliver_kick(struct deliver *d)
{
	d->is_kicked = true;
}
