/*
 * publish.h -- tierd's producer: the dead-letter topic and the outbox.
 *
 * Dead letters: refused records go to the dead-letter topic with
 * the original key and bytes, and headers
 *   tierd.reason         stable code (NOT_AVRO, KEY_MISMATCH, ...)
 *   tierd.reason_text    a sentence for a person
 *   tierd.source.topic / tierd.source.partition / tierd.source.offset
 * Idempotent producer, acks=all; publish_dead returns 0 only when
 * every record is acknowledged, so the batch may be committed after it.
 * A crash after publishing and before the commit publishes the same
 * records again: consumers dedupe on the source coordinates.
 *
 * Outbox: decided events wait in a partition's outbox stream in Redis,
 * written in the transaction that decided them (stream entries of at most
 * 256 events each: a transaction may write several).  publish_outboxes produces them in order and deletes an
 * entry only after Kafka acknowledged all its events, so a crash in
 * between publishes them again with the same event_id and bytes.
 */
#ifndef TIERD_PUBLISH_H
#define TIERD_PUBLISH_H

#include "apply.h"
#include "config.h"

#include <librdkafka/rdkafka.h>

typedef struct publish publish_t;

publish_t *publish_new(const config_t *c, char *errstr, size_t errstr_size);
/* Purges what is still queued (its reports are served first), then frees. */
void publish_destroy(publish_t *pub);
/* Serves delivery reports without waiting. */
void publish_poll(publish_t *pub);
/* From now on every delivery report that arrives also yields `q` (see
 * rd_kafka_queue_yield): a loop blocked polling q for records returns to
 * serve the report.  NULL stops it; after that returns no report touches
 * the queue, so its owner may destroy it. */
void publish_wake_on_reports(publish_t *pub, rd_kafka_queue_t *q);

/* apply_dead_fn.  Remembers each dead letter by its source coordinates,
 * so a batch that is retried sends only what Kafka has not acknowledged.
 * A record the broker refuses for good (too large, not a valid record:
 * publish_refused_for_good) is sent again as a stand-in: the same headers
 * plus tierd.standin (the broker's refusal), tierd.original.size and
 * tierd.original.fnv1a64, with the value cut to 64 KiB and the key to 256
 * bytes; if that is refused too, with no key and no value.  One refused
 * even then is logged with its coordinates and counted as lost.  A refusal
 * of the topic's own (not authorised, no such topic) is no record's fault
 * and an operator's to fix: the batch is retried later, as when the broker
 * is down, and the error names the fix.  Waits at most 2 s for reports;
 * returns -1 (retry later) when some are still missing or failed. */
int publish_dead(void *opaque, const apply_part_t *p, apply_msg_t **dead, size_t n, char *errstr,
                 size_t errstr_size);
/* Forgets the dead letters of (topic, partition) below offset `below`
 * (committed, or the partition left us).  INT64_MAX forgets them all. */
void publish_dead_forget(publish_t *pub, const char *topic, int32_t partition, int64_t below);
/* The broker's refusal is the record's (its size or form), not the
 * topic's: sending it again as it is would be refused again. */
int publish_refused_for_good(rd_kafka_resp_err_t err);
uint64_t publish_dead_standins(const publish_t *pub);
uint64_t publish_dead_lost(const publish_t *pub);

/* Drives the outbox publisher one step and waits at most wait_ms, so a
 * broker that does not answer never holds the loop.  With no round in
 * flight it starts one: one pipelined read of up to `max` entries of each
 * of the nparts partitions (an entry holds the events of one transaction),
 * every event produced.  Once every report of the round is in, it deletes
 * the entries Kafka acknowledged whole (one round trip) and reports the
 * round: done[0..*ndone) its partitions, nread[i] how many entries
 * partition done[i] had (0: empty; fewer than max: nothing more waits; -1:
 * not read), nleft[i] how many of them stay, not acknowledged whole (to be
 * tried again).  *ndone is 0 while the round is in flight.  Returns -1
 * when Redis failed (no entry is deleted), else 0; errstr is set when some
 * entry must be tried again.  done, nread and nleft hold room for nparts,
 * and for the round in flight (at most 64 partitions per round). */
int publish_outboxes(publish_t *pub, store_t *s, const char *topic, const int32_t *parts,
                     size_t nparts, size_t max, int wait_ms, int32_t *done, int *nread, int *nleft,
                     size_t *ndone, char *errstr, size_t errstr_size);
/* From now on every event produced to tier_topic or quota_topic goes out
 * in the Confluent wire format: 0x00, the 4-byte big-endian schema id
 * (tier_id, quota_id), then the outbox's Avro bytes.  -1 when memory ran
 * out. */
int publish_set_frames(publish_t *pub, const char *tier_topic, int64_t tier_id,
                       const char *quota_topic, int64_t quota_id);
/* rd_kafka_query_watermark_offsets through the producer's connection: a
 * consumer's connection answers only after the long poll of the Fetch it
 * has in flight (fetch.wait.max.ms) when the partitions it fetches are
 * idle. */
rd_kafka_resp_err_t publish_watermarks(publish_t *pub, const char *topic, int32_t partition,
                                       int64_t *lo, int64_t *hi, int timeout_ms);
/* A round is in flight. */
int publish_outboxes_busy(const publish_t *pub);
/* Events acknowledged by Kafka since start. */
uint64_t publish_events_published(const publish_t *pub);

#endif
