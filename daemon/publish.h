/*
 * publish.h -- tierd's producer: the dead-letter topic and the outbox.
 *
 * Dead letters: refused records go to the dead-letter topic with
 * the original key and bytes, and headers
 *   tierd.reason         stable code (NOT_AVRO, KEY_MISMATCH, ...)
 *   tierd.reason_text    a sentence for a person
 *   tierd.source.topic / tierd.source.partition / tierd.source.offset
 * Idempotent producer, acks=all; publish_dead returns only when
 * every record is acknowledged, so the batch may be committed after it.
 * A crash after publishing and before the commit publishes the same
 * records again: consumers dedupe on the source coordinates.
 *
 * Outbox: decided events wait in a partition's outbox stream in Redis,
 * written in the transaction that decided them (one stream entry per
 * transaction).  publish_outboxes produces them in order and deletes an
 * entry only after Kafka acknowledged all its events, so a crash in
 * between publishes them again with the same event_id and bytes.
 */
#ifndef TIERD_PUBLISH_H
#define TIERD_PUBLISH_H

#include "apply.h"
#include "config.h"

typedef struct publish publish_t;

publish_t *publish_new(const config_t *c, char *errstr, size_t errstr_size);
void publish_destroy(publish_t *d);
/* apply_dead_fn */
int publish_dead(void *opaque, const apply_part_t *p, apply_msg_t **dead, size_t n,
                 char *errstr, size_t errstr_size);

/* Publishes up to `max` outbox entries of each of the nparts partitions
 * (an entry holds the events of one transaction) and deletes those Kafka
 * acknowledged whole: one pipelined round trip reads every outbox, one
 * wait covers every event, one round trip deletes.  nread[i] gets how many
 * entries partition i had (0: empty; fewer than max: nothing more waits;
 * -1: not read).  Returns -1 when Redis failed (no entry is deleted), else
 * 0; errstr is set when some entry must be tried again. */
int publish_outboxes(publish_t *pub, store_t *s, const char *topic, const int32_t *parts,
                     size_t nparts, size_t max, int *nread, char *errstr, size_t errstr_size);
/* Events acknowledged by Kafka since start. */
uint64_t publish_events_published(const publish_t *pub);

#endif
