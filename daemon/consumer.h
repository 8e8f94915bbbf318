/*
 * consumer.h -- the Kafka side of the data path: group membership,
 * partition ownership, batching, and the main loop.
 *
 * The consumer owns which partitions this instance applies.  A partition
 * is claimed in Redis (epoch bump) before it is assigned, and consumption
 * starts at the offset Redis holds, not at Kafka's committed offset: Kafka
 * offset commits are advisory, for lag monitoring only.
 *
 * Partition P of customer-profiles follows partition P of orders: a second
 * consumer handle, assigned by hand, reads it from the offset Redis holds.
 * The loop also drains each partition's outbox (publish.c) and reviews a
 * partition that has been idle past its month's end.
 */
#ifndef TIERD_CONSUMER_H
#define TIERD_CONSUMER_H

#include "apply.h"
#include "config.h"
#include "metrics.h"
#include "publish.h"

#include <signal.h>

typedef struct consumer consumer_t;

consumer_t *consumer_new(const config_t *c, apply_ctx_t *apply, publish_t *pub, char *errstr,
                         size_t errstr_size);
/* Called from the loop when *reload was set (SIGHUP): re-reads what can
 * change at run time.  Runs between batches, never inside one. */
typedef void (*consumer_reload_fn)(void *opaque);

/* Runs until *stop is set or a fatal error, then leaves within
 * shutdown_timeout_ms: the batches in hand are applied once unless they
 * wait on a retry, the outboxes published, the group left; whatever does
 * not fit is abandoned uncommitted and read again at the next start.
 * Returns 0 on a clean stop.  Tells systemd READY=1 once running,
 * WATCHDOG=1 as the loop turns (when the unit asks for it) and STOPPING=1
 * on the way out. */
int consumer_run(consumer_t *k, volatile sig_atomic_t *stop, volatile sig_atomic_t *reload,
                 consumer_reload_fn on_reload, void *opaque);
void consumer_destroy(consumer_t *k);
/* Where the loop publishes its metrics snapshot, once a second (borrowed). */
void consumer_set_metrics(consumer_t *k, metrics_t *m);

#endif
