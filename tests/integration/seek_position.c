/*
 * seek_position BOOTSTRAP TOPIC PARTITION -- what tierd's marker_tick
 * relies on in librdkafka: after rd_kafka_seek_partitions to an earlier
 * offset (as rewind_part does when Redis went back in time), the
 * partition's position (rd_kafka_position) is no offset at all until a
 * record at the new offset has been handed over, and then it is that
 * record's offset + 1.  Were it to keep the position from before the
 * seek, marker_tick would take the records between for markers and move
 * the stored offset past them unapplied.
 *
 * Reads the partition from its beginning until at least two records have
 * come, seeks back to the first, and checks the position at once, 300 ms
 * later (nothing polled), and after one record.  Exit 0 when all hold.
 */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int64_t position(rd_kafka_t *rk, const char *topic, int32_t p) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, p);
    int64_t at = rd_kafka_position(rk, l) == RD_KAFKA_RESP_ERR_NO_ERROR && !l->elems[0].err
                     ? l->elems[0].offset
                     : -2;
    rd_kafka_topic_partition_list_destroy(l);
    return at;
}

/* The next record of the partition (up to 20 s), or NULL. */
static rd_kafka_message_t *next_record(rd_kafka_t *rk) {
    for (int i = 0; i < 20; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 1000);
        if (m && !m->err) return m;
        if (m) rd_kafka_message_destroy(m);
    }
    return NULL;
}

int main(int argc, char **argv) {
    char why[512];
    if (argc != 4) {
        fprintf(stderr, "usage: seek_position BOOTSTRAP TOPIC PARTITION\n");
        return 2;
    }
    const char *topic = argv[2];
    int32_t p = (int32_t)atoi(argv[3]);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], why, sizeof(why)) ||
        rd_kafka_conf_set(conf, "group.id", "tierd-test-seek-position", why, sizeof(why)) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", why, sizeof(why))) {
        fprintf(stderr, "seek_position: %s\n", why);
        return 2;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (!rk) {
        fprintf(stderr, "seek_position: %s\n", why);
        return 1;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, l);
    int rc = 1;
    int64_t first = -1, before = -1, at_once = 0, later = 0, after = 0, got = -1;
    rd_kafka_message_t *m = next_record(rk), *m2 = m ? next_record(rk) : NULL;
    if (!m || !m2) {
        fprintf(stderr, "seek_position: %s [%d] has fewer than two records\n", topic, (int)p);
        goto out;
    }
    first = m->offset;
    rd_kafka_message_destroy(m);
    rd_kafka_message_destroy(m2);
    before = position(rk, topic, p);
    l->elems[0].offset = first;
    rd_kafka_error_t *e = rd_kafka_seek_partitions(rk, l, 5000);
    if (e) {
        fprintf(stderr, "seek_position: seek: %s\n", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        goto out;
    }
    at_once = position(rk, topic, p);
    usleep(300 * 1000);
    later = position(rk, topic, p);
    if (!(m = next_record(rk))) {
        fprintf(stderr, "seek_position: nothing came after the seek\n");
        goto out;
    }
    got = m->offset;
    rd_kafka_message_destroy(m);
    after = position(rk, topic, p);
    printf("before the seek %lld; sought %lld; position at once %lld, 300 ms later %lld; "
           "record %lld handed over, position %lld\n",
           (long long)before, (long long)first, (long long)at_once, (long long)later,
           (long long)got, (long long)after);
    rc = before > first && at_once < 0 && later < 0 && got == first && after == first + 1 ? 0 : 1;
out:
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return rc;
}
