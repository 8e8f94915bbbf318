/*
 * delete_records BOOTSTRAP TOPIC PARTITION OFFSET -- deletes a partition's
 * records below OFFSET, as the broker's retention would, through Kafka's
 * DeleteRecords (librdkafka's admin API): the Python client Debian ships
 * (1.7) has no such call, and Kafka 3.7 keeps its command in a jar the
 * broker does not need.  Exit 0 when the broker's log now starts there.
 */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    char why[512];
    if (argc != 5) {
        fprintf(stderr, "usage: delete_records BOOTSTRAP TOPIC PARTITION OFFSET\n");
        return 2;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], why, sizeof(why)) != 0) {
        fprintf(stderr, "delete_records: %s\n", why);
        return 2;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!rk) {
        fprintf(stderr, "delete_records: %s\n", why);
        return 1;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, argv[2], atoi(argv[3]))->offset = atoll(argv[4]);
    rd_kafka_DeleteRecords_t *del = rd_kafka_DeleteRecords_new(l);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DELETERECORDS);
    rd_kafka_AdminOptions_set_operation_timeout(o, 30000, why, sizeof(why));
    rd_kafka_DeleteRecords(rk, &del, 1, o, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 60000);
    int rc = 1;
    if (!ev) {
        fprintf(stderr, "delete_records: no answer in 60 s\n");
    } else if (rd_kafka_event_error(ev)) {
        fprintf(stderr, "delete_records: %s\n", rd_kafka_event_error_string(ev));
    } else {
        const rd_kafka_topic_partition_list_t *r =
            rd_kafka_DeleteRecords_result_offsets(rd_kafka_event_DeleteRecords_result(ev));
        if (r && r->cnt == 1 && !r->elems[0].err) {
            printf("%s [%d] starts at %lld\n", r->elems[0].topic, (int)r->elems[0].partition,
                   (long long)r->elems[0].offset);
            rc = 0;
        } else {
            fprintf(stderr, "delete_records: %s\n",
                    r && r->cnt ? rd_kafka_err2str(r->elems[0].err) : "no result");
        }
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(o);
    rd_kafka_DeleteRecords_destroy(del);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return rc;
}
