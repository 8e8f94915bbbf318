/*
 * apply against a real redis-server (tests/integration/with-redis starts
 * one): the guarantees that do not need Kafka to be shown.
 *  - the same record delivered twice counts once (offset guard);
 *  - a commit whose reply was lost is not applied again;
 *  - the same order_id at a new offset counts once (dedupe);
 *  - a stale owner's write is refused once a newer owner claimed;
 *  - the dead-letter sink failing writes nothing;
 *  - months that leave the window are deleted;
 *  - the start-up check of the Redis user's rights (store_check);
 *  - meta fields that hold what no tierd writes are named, not misread;
 *  - a batch sent without waiting for EXEC's reply (txn_ops_t.later): its
 *    counts wait for the reply; a reply lost or a commit refused reaches
 *    the settled hook, and the next batch sees Redis behind it (REWIND);
 *  - a read sent in parts while the batch is still decoded
 *    (store_read_open, txn_ops_t.stream).
 * Records are real Avro, encoded with avro-c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <signal.h>

#include <avro.h>
#include <cmocka.h>

#include "apply.h"
#include "customer.h"
#include "events.h"
#include "tierd/policy.h"
#include "month.h"
#include "state.h"
#include "config.h"
#include "txn.h"

extern const char tierd_schema_order[];

static config_t conf;
static store_t *store;
static decoder_t *dec;
static month_zone_t zone;
static avro_schema_t schema;
static avro_value_iface_t *iface;
static int sink_fail;
static size_t sink_count;
static char sink_codes[64][32];

static int sink(void *opaque, const apply_part_t *p, apply_msg_t **dead, size_t n, char *errstr,
                size_t errstr_size) {
    (void)opaque;
    (void)p;
    if (sink_fail) {
        snprintf(errstr, errstr_size, "sink down");
        return -1;
    }
    for (size_t i = 0; i < n && sink_count < 64; i++)
        snprintf(sink_codes[sink_count++], 32, "%s", order_reason_code(dead[i]->verdict));
    return 0;
}

/* One encoded order; caller frees. */
static char *encode(const char *oid, const char *cust, int64_t ms, int64_t qty, int64_t price,
                    size_t *len) {
    avro_value_t v, f, lines, line, x;
    char *buf = calloc(1, 4096);
    avro_writer_t w = avro_writer_memory(buf, 4096);
    avro_generic_value_new(iface, &v);
    avro_value_get_by_name(&v, "order_id", &f, NULL);
    avro_value_set_string(&f, oid);
    avro_value_get_by_name(&v, "customer_id", &f, NULL);
    avro_value_set_string(&f, cust);
    avro_value_get_by_name(&v, "placed_at", &f, NULL);
    avro_value_set_long(&f, ms);
    avro_value_get_by_name(&v, "kind", &f, NULL);
    avro_value_set_enum(&f, 0);
    avro_value_get_by_name(&v, "lines", &lines, NULL);
    avro_value_append(&lines, &line, NULL);
    avro_value_get_by_name(&line, "sku", &x, NULL);
    avro_value_set_string(&x, "SKU-1");
    avro_value_get_by_name(&line, "quantity", &x, NULL);
    avro_value_set_long(&x, qty);
    avro_value_get_by_name(&line, "unit_price", &x, NULL);
    avro_value_set_long(&x, price);
    avro_value_get_by_name(&v, "currency", &f, NULL);
    avro_value_set_string(&f, "CNY");
    assert_int_equal(avro_value_write(w, &v), 0);
    *len = (size_t)avro_writer_tell(w);
    avro_writer_free(w);
    avro_value_decref(&v);
    return buf;
}

typedef struct batch {
    apply_msg_t msgs[64];
    char *bufs[64];
    size_t n;
} batch_t;

static void add(batch_t *b, int64_t offset, const char *oid, const char *cust, int64_t ms,
                int64_t qty) {
    apply_msg_t *m = &b->msgs[b->n];
    memset(m, 0, sizeof(*m));
    m->offset = offset;
    b->bufs[b->n] = encode(oid, cust, ms, qty, 100, &m->value_len);
    m->value = b->bufs[b->n];
    m->key = cust;
    m->key_len = strlen(cust);
    b->n++;
}

static void batch_free(batch_t *b) {
    for (size_t i = 0; i < b->n; i++) free(b->bufs[i]);
    b->n = 0;
}

#define APPLY_OK_OR_FAIL(call)                                                                     \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != APPLY_OK) fail_msg("apply: %d: %s", rc_, err);                                  \
    } while (0)

static apply_ctx_t ctx(void) {
    apply_ctx_t a;
    apply_init(&a);
    a.store = store;
    a.decoder = dec;
    strcpy(a.rules.currency, "CNY");
    a.rules.max_future_skew_ms = 86400000;
    a.rules.min_placed_at_ms = VALIDATE_MIN_PLACED_AT_MS_DEFAULT;
    a.window = 3;
    a.zone = zone;
    a.owner = "test";
    a.dead = sink;
    return a;
}

static redisContext *rc;

/* The customer's state as stored (state.h); 0 when it has none. */
static int state_of(int part, const char *cust, state_customer_t *c) {
    char err[200];
    redisReply *r = redisCommand(rc, "HGET tierd:{orders.%d}:c %s", part, cust);
    int ok = r && r->type == REDIS_REPLY_STRING;
    if (ok) assert_int_equal(state_decode(c, r->str, r->len, err, sizeof(err)), 0);
    freeReplyObject(r);
    return ok;
}

/* A customer-month's quantity; -1 when the state keeps no such month. */
static long long qty_of(int part, int yyyymm, const char *cust) {
    state_customer_t c;
    long long q = -1;
    state_init(&c);
    if (state_of(part, cust, &c)) {
        state_month_t *m = state_month(&c, month_from_yyyymm(yyyymm), 0);
        if (m) q = m->agg.qty;
    }
    state_free(&c);
    return q;
}

static void flush(void) {
    freeReplyObject(redisCommand(rc, "FLUSHALL"));
}

/* Nov 2026 in UTC, and the months around it. */
static const int64_t NOV = 1793491200000LL; /* 2026-11-01T00:00:00Z */
#define DAY 86400000LL

static void test_same_record_twice_counts_once(void **state) {
    (void)state;
    flush();
    apply_ctx_t a = ctx();
    apply_part_t p = {"orders", 0, {0}};
    char err[512] = "";
    batch_t b = {0};
    assert_int_equal(store_claim(store, "orders", 0, "test", &p.meta, err, sizeof(err)), 0);
    add(&b, 0, "o1", "c1", NOV + DAY, 5);
    add(&b, 1, "o2", "c1", NOV + DAY, 7);
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    assert_int_equal(qty_of(0, 202611, "c1"), 12);
    /* Kafka hands the same two records over again, and one new one. */
    add(&b, 2, "o3", "c1", NOV + DAY, 1);
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    assert_int_equal(b.msgs[0].state, MSG_REDELIVERED);
    assert_int_equal(b.msgs[1].state, MSG_REDELIVERED);
    assert_int_equal(b.msgs[2].state, MSG_APPLIED);
    assert_int_equal(qty_of(0, 202611, "c1"), 13);
    assert_int_equal(a.stats.redelivered, 2);
    batch_free(&b);
    apply_free(&a);
}

static void test_lost_commit_reply_not_applied_again(void **state) {
    (void)state;
    flush();
    apply_ctx_t a = ctx();
    apply_part_t p = {"orders", 1, {0}};
    char err[512] = "";
    batch_t b = {0};
    assert_int_equal(store_claim(store, "orders", 1, "test", &p.meta, err, sizeof(err)), 0);
    store_meta_t before = p.meta;
    add(&b, 10, "o1", "c2", NOV + DAY, 4);
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    /* As if EXEC's reply never arrived: the cache still holds the old offset. */
    p.meta = before;
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    assert_int_equal(b.msgs[0].state, MSG_REDELIVERED);
    assert_int_equal(qty_of(1, 202611, "c2"), 4);
    assert_int_equal(p.meta.offset, 11);
    batch_free(&b);
    apply_free(&a);
}

static void test_same_order_new_offset_is_duplicate(void **state) {
    (void)state;
    flush();
    apply_ctx_t a = ctx();
    apply_part_t p = {"orders", 2, {0}};
    char err[512] = "";
    batch_t b = {0};
    assert_int_equal(store_claim(store, "orders", 2, "test", &p.meta, err, sizeof(err)), 0);
    add(&b, 0, "dup", "c3", NOV + DAY, 3);
    add(&b, 1, "dup", "c3", NOV + DAY, 3); /* same batch */
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    batch_free(&b);
    add(&b, 2, "dup", "c3", NOV + DAY, 3); /* a later batch */
    add(&b, 3, "dup", "c4", NOV + DAY, 3); /* same id, another customer: counts */
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    assert_int_equal(qty_of(2, 202611, "c3"), 3);
    assert_int_equal(qty_of(2, 202611, "c4"), 3);
    assert_int_equal(a.stats.duplicates, 2);
    batch_free(&b);
    apply_free(&a);
}

static void test_stale_owner_is_fenced(void **state) {
    (void)state;
    flush();
    apply_ctx_t a = ctx();
    apply_part_t old = {"orders", 3, {0}}, young = {"orders", 3, {0}};
    char err[512] = "";
    batch_t b = {0};
    if (store_claim(store, "orders", 3, "old", &old.meta, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    add(&b, 0, "o1", "c5", NOV + DAY, 2);
    APPLY_OK_OR_FAIL(apply_batch(&a, &old, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    batch_free(&b);
    /* A rebalance: the young owner claims; the old one still holds a batch. */
    assert_int_equal(store_claim(store, "orders", 3, "young", &young.meta, err, sizeof(err)), 0);
    assert_true(young.meta.epoch > old.meta.epoch);
    assert_int_equal(young.meta.offset, 1);
    add(&b, 1, "o2", "c5", NOV + DAY, 100);
    err[0] = '\0';
    assert_int_equal(apply_batch(&a, &old, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)),
                     APPLY_FENCED);
    assert_non_null(strstr(err, "another instance"));
    assert_int_equal(qty_of(3, 202611, "c5"), 2); /* nothing written */
    /* The young owner applies the same record once. */
    APPLY_OK_OR_FAIL(apply_batch(&a, &young, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    assert_int_equal(qty_of(3, 202611, "c5"), 102);
    batch_free(&b);
    apply_free(&a);
}

/* The meta field f of partition part as stored; -1 when it has none. */
static long long meta_of(int part, const char *f) {
    redisReply *r = redisCommand(rc, "HGET tierd:{orders.%d}:meta %s", part, f);
    long long v = r && r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : -1;
    freeReplyObject(r);
    return v;
}

static void test_skip_moves_offset_past_deleted_records(void **state) {
    (void)state;
    flush();
    apply_ctx_t a = ctx();
    apply_part_t p = {"orders", 4, {0}}, young = {"orders", 4, {0}};
    char err[512] = "";
    batch_t b = {0};
    assert_int_equal(store_claim(store, "orders", 4, "test", &p.meta, err, sizeof(err)), 0);
    add(&b, 0, "o1", "c6", NOV + DAY, 2);
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    batch_free(&b);
    assert_true(meta_of(4, "prev_fp") >= 0);
    /* Offsets 1..9 were deleted unread: Redis moves to 10, without the
     * hash of a record that is gone; the state stays. */
    APPLY_OK_OR_FAIL(apply_skip(&a, &p, 0, 10, 0, err, sizeof(err)));
    assert_int_equal(p.meta.offset, 10);
    assert_false(p.meta.has_prev_fp);
    assert_int_equal(meta_of(4, "offset"), 10);
    assert_int_equal(meta_of(4, "prev_fp"), -1);
    assert_int_equal(qty_of(4, 202611, "c6"), 2);
    /* Never backwards; the profiles' offset on its own. */
    APPLY_OK_OR_FAIL(apply_skip(&a, &p, 0, 5, 0, err, sizeof(err)));
    assert_int_equal(meta_of(4, "offset"), 10);
    APPLY_OK_OR_FAIL(apply_skip(&a, &p, 1, 3, 0, err, sizeof(err)));
    assert_int_equal(meta_of(4, "poffset"), 3);
    assert_int_equal(meta_of(4, "offset"), 10);
    /* A batch after it goes on from there. */
    add(&b, 10, "o2", "c6", NOV + DAY, 5);
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    batch_free(&b);
    assert_int_equal(meta_of(4, "offset"), 11);
    assert_int_equal(qty_of(4, 202611, "c6"), 7);
    /* Past transaction markers (11, 12): the hash stays, saying it is of
     * the record at 10; again past more markers, still of that record. */
    uint64_t fp = p.meta.prev_fp;
    char want[64];
    snprintf(want, sizeof(want), "%llu@10", (unsigned long long)fp);
    APPLY_OK_OR_FAIL(apply_skip(&a, &p, 0, 13, 1, err, sizeof(err)));
    APPLY_OK_OR_FAIL(apply_skip(&a, &p, 0, 15, 1, err, sizeof(err)));
    redisReply *r = redisCommand(rc, "HGET tierd:{orders.4}:meta prev_fp");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, want);
    freeReplyObject(r);
    assert_int_equal(meta_of(4, "offset"), 15);
    assert_true(p.meta.has_prev_fp);
    assert_int_equal(p.meta.prev_at, 10);
    /* What a partition taken later reads: the record at 10 to check. */
    store_meta_t m;
    assert_int_equal(store_claim(store, "orders", 4, "test", &m, err, sizeof(err)), 0);
    assert_true(m.has_prev_fp);
    assert_true(m.prev_fp == fp);
    assert_int_equal(m.prev_at, 10);
    assert_int_equal(m.offset, 15);
    p.meta = m;
    /* A batch after them hashes its own last record, before its offset. */
    add(&b, 15, "o3", "c6", NOV + DAY, 1);
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    batch_free(&b);
    assert_int_equal(p.meta.prev_at, -1);
    assert_true(store_claim(store, "orders", 4, "test", &m, err, sizeof(err)) == 0 &&
                m.prev_at == -1 && m.has_prev_fp && m.offset == 16);
    p.meta = m;
    /* A stale owner moves nothing. */
    assert_int_equal(store_claim(store, "orders", 4, "young", &young.meta, err, sizeof(err)), 0);
    assert_int_equal(apply_skip(&a, &p, 0, 20, 0, err, sizeof(err)), APPLY_FENCED);
    assert_int_equal(meta_of(4, "offset"), 16);
    apply_free(&a);
}

/* A value whose checksum matches but whose SKU set is not what its stored
 * length says (no tierd writes one): the lazy read steps over that set,
 * so a batch that does not change the month carries its bytes through
 * unchanged, and a batch that changes it stops as a corrupt state before
 * deciding anything. */
static void test_bad_sku_set_stops_batch_that_changes_it(void **state) {
    (void)state;
    flush();
    apply_ctx_t a = ctx();
    apply_part_t p = {"orders", 7, {0}};
    char err[512] = "";
    batch_t b = {0};
    assert_int_equal(store_claim(store, "orders", 7, "test", &p.meta, err, sizeof(err)), 0);
    /* October: one SKU, one order.  Its bytes end [nskus 1][length 4]
     * [4 bytes of set][nfps 1][8 bytes][first_month][checksum 4]. */
    state_customer_t c;
    state_init(&c);
    c.st.tier = 0;
    state_month_t *m = state_month(&c, month_from_yyyymm(202610), 1);
    order_t o;
    memset(&o, 0, sizeof(o));
    int64_t excess;
    o.kind = ORDER_SALE;
    o.qty = 2;
    o.amount = 200;
    uint32_t sku = 0;
    for (int i = 0; !sku || sku >> 31; i++) { /* one below 2^31: a set of 32 bits, 4 bytes */
        char name[16];
        sku = state_sku_fp(name, (size_t)snprintf(name, sizeof(name), "S%d", i));
    }
    assert_int_equal(state_apply_skus(m, &o, &sku, 1, &excess), ORDER_OK);
    assert_int_equal(state_add_fp(m, state_order_fp("old", 3)), 1);
    c.st.first_month = month_from_yyyymm(202610);
    size_t len = state_encoded_size(&c);
    uint8_t *good = malloc(len), *bad = malloc(len + 1);
    state_encode(&c, good);
    state_customer_t l;
    state_init(&l);
    assert_int_equal(state_decode_lazy(&l, good, len, NULL, 0), 0);
    size_t set = (size_t)(l.months[0].raw - good), size = l.months[0].rawlen;
    assert_int_equal(size, 4);
    assert_int_equal(good[set - 1], size);
    memcpy(bad, good, set + size);
    bad[set - 1] = (uint8_t)(size + 1); /* a length one more than the set takes, */
    bad[set + size] = 0;                /* and a zero byte to make it so */
    memcpy(bad + set + size + 1, good + set + size, len - (set + size));
    uint32_t crc = state_checksum(bad, len + 1 - 4);
    for (int i = 0; i < 4; i++) bad[len + 1 - 4 + i] = (uint8_t)(crc >> (8 * i));
    freeReplyObject(redisCommand(rc, "HSET tierd:{orders.7}:c c9 %b", bad, len + 1));

    /* November: the October set is not changed, its bytes carried over */
    add(&b, 0, "n1", "c9", NOV + DAY, 3);
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    assert_int_equal(b.msgs[0].state, MSG_APPLIED);
    redisReply *r = redisCommand(rc, "HGET tierd:{orders.7}:c c9");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_int_equal(state_decode_lazy(&l, r->str, r->len, NULL, 0), 0);
    assert_int_equal(l.nmonths, 2);
    assert_int_equal(l.months[0].rawlen, size + 1);
    assert_memory_equal(l.months[0].raw, bad + set, size + 1);
    assert_int_equal(l.months[1].agg.qty, 3);
    freeReplyObject(r);
    batch_free(&b);

    /* October again: stopped before anything is decided or written */
    add(&b, 1, "o2", "c9", NOV - 10 * DAY, 1);
    add(&b, 2, "o3", "c8", NOV + DAY, 1);
    assert_int_equal(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)),
                     APPLY_CORRUPT);
    assert_non_null(strstr(err, "tierd:{orders.7}:c field c9: state does not parse"));
    char want[64];
    snprintf(want, sizeof(want), "take %zu bytes, not the %zu stored", size, size + 1);
    assert_non_null(strstr(err, want));
    assert_int_equal(a.stats.state_corrupt, 1);
    assert_int_equal(p.meta.offset, 1);
    assert_int_equal(qty_of(7, 202611, "c8"), -1);
    r = redisCommand(rc, "HEXISTS tierd:{orders.7}:c c8");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    batch_free(&b);
    state_free(&l);
    state_free(&c);
    free(good);
    free(bad);
    apply_free(&a);
}

static void test_dead_letter_failure_writes_nothing(void **state) {
    (void)state;
    flush();
    apply_ctx_t a = ctx();
    apply_part_t p = {"orders", 4, {0}};
    char err[512] = "";
    batch_t b = {0};
    assert_int_equal(store_claim(store, "orders", 4, "test", &p.meta, err, sizeof(err)), 0);
    add(&b, 0, "o1", "c6", NOV + DAY, 1);
    add(&b, 1, "o2", "c6", NOV + DAY, -1); /* BAD_QUANTITY */
    sink_fail = 1;
    sink_count = 0;
    assert_int_equal(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)),
                     APPLY_RETRY);
    assert_int_equal(qty_of(4, 202611, "c6"), -1); /* no key at all */
    sink_fail = 0;
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    assert_int_equal(qty_of(4, 202611, "c6"), 1);
    assert_int_equal(sink_count, 1);
    assert_string_equal(sink_codes[0], "BAD_QUANTITY");
    batch_free(&b);
    apply_free(&a);
}

static void test_old_months_deleted_and_late_refused(void **state) {
    (void)state;
    flush();
    apply_ctx_t a = ctx();
    apply_part_t p = {"orders", 5, {0}};
    char err[512] = "";
    batch_t b = {0};
    const int64_t JUL = 1782864000000LL; /* 2026-07-01T00:00:00Z */
    assert_int_equal(store_claim(store, "orders", 5, "test", &p.meta, err, sizeof(err)), 0);
    add(&b, 0, "o1", "c7", JUL + DAY, 1);
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    batch_free(&b);
    assert_int_equal(qty_of(5, 202607, "c7"), 1);
    /* November: the window is Sep..Nov, August is kept as "window plus one",
     * July goes. */
    add(&b, 1, "o2", "c7", NOV + DAY, 1);
    add(&b, 2, "o3", "c7", JUL + 2 * DAY, 1); /* now too late to matter */
    sink_count = 0;
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    assert_int_equal(qty_of(5, 202607, "c7"), -1); /* July left the state */
    assert_int_equal(qty_of(5, 202611, "c7"), 1);
    assert_int_equal(b.msgs[1].state, MSG_DEAD);
    assert_int_equal(sink_count, 1);
    assert_string_equal(sink_codes[0], "LATE");
    assert_string_equal(
        b.msgs[1].reason,
        "placed_at falls in 2026-07, before this partition's window 2026-09..2026-11");
    batch_free(&b);
    apply_free(&a);
}

/* Redis lost acknowledged writes (crash with appendfsync everysec, a
 * restore from an older snapshot): the stored offset is behind ours.  The
 * batch must not be applied on top of the older state; the caller is told
 * to consume again from the stored offset. */
static void test_redis_went_back_in_time(void **state) {
    (void)state;
    flush();
    apply_ctx_t a = ctx();
    apply_part_t p = {"orders", 6, {0}};
    char err[512] = "";
    batch_t b = {0};
    assert_int_equal(store_claim(store, "orders", 6, "test", &p.meta, err, sizeof(err)), 0);
    add(&b, 0, "o1", "c8", NOV + DAY, 1);
    add(&b, 1, "o2", "c8", NOV + DAY, 1);
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    batch_free(&b);
    freeReplyObject(redisCommand(rc, "HSET tierd:{orders.6}:meta offset 1"));
    add(&b, 2, "o3", "c8", NOV + DAY, 1);
    assert_int_equal(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)),
                     APPLY_REWIND);
    assert_non_null(strstr(err, "lost writes"));
    assert_int_equal(qty_of(6, 202611, "c8"), 2); /* untouched */
    batch_free(&b);
    apply_free(&a);
}

/* What the settled hook (apply_settled_fn) was told. */
static struct {
    int calls;
    int32_t partition;
    int64_t offset;
    int rc;
    char err[600];
} told;

static void hook(void *opaque, int32_t partition, int64_t offset, int outcome, const char *errstr) {
    (void)opaque;
    told.calls++;
    told.partition = partition;
    told.offset = offset;
    told.rc = outcome;
    snprintf(told.err, sizeof(told.err), "%s", errstr);
}

/* ctx() with the settled hook: order batches are sent ahead. */
static apply_ctx_t ctx_ahead(void) {
    apply_ctx_t a = ctx();
    a.settled = hook;
    memset(&told, 0, sizeof(told));
    return a;
}

static void test_sent_ahead_counts_once_it_lands(void **state) {
    (void)state;
    flush();
    apply_ctx_t a = ctx_ahead();
    apply_part_t p = {"orders", 4, {0}};
    char err[512] = "";
    batch_t b = {0};
    assert_int_equal(store_claim(store, "orders", 4, "test", &p.meta, err, sizeof(err)), 0);
    add(&b, 0, "o1", "c9", NOV + DAY, 5);
    add(&b, 1, "o2", "c9", NOV + DAY, 7);
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    assert_true(apply_in_flight(&a, 4));
    assert_false(apply_in_flight(&a, 5));
    assert_int_equal(p.meta.offset, 2);   /* the cache moved on at once */
    assert_int_equal(a.stats.applied, 0); /* the counts wait for the reply */
    assert_int_equal(told.calls, 0);
    apply_settle(&a);
    assert_int_equal(told.calls, 1);
    assert_int_equal(told.rc, APPLY_OK);
    assert_int_equal(told.partition, 4);
    assert_int_equal(told.offset, 2);
    assert_int_equal(a.stats.applied, 2);
    assert_int_equal(a.stats.batches, 1);
    assert_false(apply_in_flight(&a, 4));
    apply_settle(&a); /* nothing in the air: nothing told */
    assert_int_equal(told.calls, 1);
    assert_int_equal(qty_of(4, 202611, "c9"), 12);
    batch_free(&b);
    /* Two batches in a row: the second's read takes the first's reply. */
    add(&b, 2, "o3", "c9", NOV + DAY, 1);
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    batch_free(&b);
    add(&b, 3, "o4", "c9", NOV + DAY, 1);
    add(&b, 4, "o1", "c9", NOV + DAY, 5); /* a duplicate, seen through the batch in the air */
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    assert_int_equal(told.calls, 2);
    assert_int_equal(told.offset, 3);
    assert_int_equal(a.stats.applied, 3);
    assert_int_equal(a.flight.from, 3); /* what Redis holds until it lands (the metrics' offset) */
    assert_int_equal(a.flight.offset, 5);
    apply_settle(&a);
    assert_int_equal(told.calls, 3);
    assert_int_equal(told.offset, 5);
    assert_int_equal(a.stats.applied, 4);
    assert_int_equal(a.stats.duplicates, 1);
    assert_int_equal(qty_of(4, 202611, "c9"), 14);
    batch_free(&b);
    apply_free(&a);
}

/* Claims partition p->partition, applies one order of cust (3 units) and
 * settles it, then has Redis hold writes back and sends a second (4
 * units) ahead: its EXEC is in the air, held. */
static void exec_held(apply_ctx_t *a, apply_part_t *p, const char *cust) {
    char err[512] = "";
    batch_t b = {0};
    assert_int_equal(store_claim(store, "orders", p->partition, "test", &p->meta, err, sizeof(err)),
                     0);
    add(&b, 0, "o1", cust, NOV + DAY, 3);
    APPLY_OK_OR_FAIL(apply_batch(a, p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    apply_settle(a);
    batch_free(&b);
    freeReplyObject(redisCommand(rc, "CLIENT PAUSE 10000 WRITE"));
    add(&b, 1, "o2", cust, NOV + DAY, 4);
    APPLY_OK_OR_FAIL(apply_batch(a, p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    assert_true(apply_in_flight(a, p->partition));
    batch_free(&b);
}

/* Over connection c: once Redis holds a client's write back, kills that
 * client (waiting up to 5 s) and unpauses. */
static void kill_held(redisContext *c) {
    long long id = -1;
    for (int i = 0; !c->err && id < 0 && i < 500; i++) {
        redisReply *r = redisCommand(c, "CLIENT LIST");
        for (char *l = r && r->type == REDIS_REPLY_STRING ? r->str : NULL; l && *l;) {
            char *nl = strchr(l, '\n');
            if (nl) *nl = '\0';
            if (strstr(l, "flags=xb")) sscanf(l, "id=%lld", &id);
            l = nl ? nl + 1 : NULL;
        }
        freeReplyObject(r);
        struct timespec ts = {0, 10000000};
        if (id < 0) nanosleep(&ts, NULL);
    }
    if (id >= 0) freeReplyObject(redisCommand(c, "CLIENT KILL ID %lld", id));
    freeReplyObject(redisCommand(c, "CLIENT UNPAUSE"));
}

static void test_sent_ahead_lost_rewinds(void **state) {
    (void)state;
    flush();
    apply_ctx_t a = ctx_ahead();
    apply_part_t p = {"orders", 5, {0}};
    char err[512] = "";
    batch_t b = {0};
    /* Redis holds writes back, takes the next EXEC, and the connection
     * dies before it runs: the transaction never happens. */
    exec_held(&a, &p, "c10");
    kill_held(rc);
    apply_settle(&a);
    assert_int_equal(told.calls, 2);
    assert_int_equal(told.rc, APPLY_REWIND);
    assert_int_equal(told.offset, 2);
    assert_non_null(strstr(told.err, "reply was lost"));
    assert_int_equal(a.stats.applied, 1); /* the lost batch is not counted */
    assert_int_equal(qty_of(5, 202611, "c10"), 3);
    /* The next batch finds Redis behind the cache: consume again. */
    batch_free(&b);
    add(&b, 2, "o3", "c10", NOV + DAY, 5);
    int rc_ = APPLY_RETRY;
    for (int i = 0; i < 100 && rc_ == APPLY_RETRY; i++) { /* past the reconnect backoff */
        rc_ = apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err));
        struct timespec ts = {0, 50000000};
        if (rc_ == APPLY_RETRY) nanosleep(&ts, NULL);
    }
    assert_int_equal(rc_, APPLY_REWIND);
    assert_int_equal(qty_of(5, 202611, "c10"), 3);
    batch_free(&b);
    apply_free(&a);
}

/* kill_held from a connection of its own (the test's thread waits in
 * apply_batch meanwhile). */
static void *kill_when_held(void *arg) {
    (void)arg;
    redisContext *c = redisConnect("127.0.0.1", atoi(getenv("TIERD_TEST_REDIS_PORT")));
    if (c) kill_held(c);
    redisFree(c);
    return NULL;
}

/* The next batch's read goes out right behind the EXEC in the air
 * (73f7ef7): when that EXEC's reply is lost with the connection, the read
 * still tells it lost, fails itself, and the batch after finds Redis
 * behind the cache: nothing counted that did not land, nothing twice. */
static void test_read_behind_lost_exec(void **state) {
    (void)state;
    flush();
    apply_ctx_t a = ctx_ahead();
    apply_part_t p = {"orders", 6, {0}};
    char err[512] = "";
    batch_t b = {0};
    exec_held(&a, &p, "c11");
    /* The next batch's read waits behind the held EXEC until the other
     * thread kills the connection. */
    pthread_t killer;
    assert_int_equal(pthread_create(&killer, NULL, kill_when_held, NULL), 0);
    add(&b, 2, "o3", "c11", NOV + DAY, 5);
    int rc_ = apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err));
    pthread_join(killer, NULL);
    assert_int_equal(rc_, APPLY_RETRY);
    assert_int_equal(told.calls, 2);
    assert_int_equal(told.rc, APPLY_REWIND);
    assert_non_null(strstr(told.err, "reply was lost"));
    assert_false(apply_in_flight(&a, 6));
    assert_int_equal(a.stats.applied, 1);
    assert_int_equal(qty_of(6, 202611, "c11"), 3);
    for (int i = 0; i < 100 && rc_ == APPLY_RETRY; i++) { /* past the reconnect backoff */
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
        rc_ = apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err));
    }
    assert_int_equal(rc_, APPLY_REWIND);
    assert_int_equal(a.stats.applied, 1);
    assert_int_equal(qty_of(6, 202611, "c11"), 3);
    batch_free(&b);
    apply_free(&a);
}

/* A commit sent ahead that the WATCH refuses: the outcome is told as
 * STORE_FENCED, and nothing is written. */
static int store_told = 1;

static void store_hook(void *opaque, int outcome, const char *errstr) {
    (void)opaque;
    (void)errstr;
    store_told = outcome;
}

static void test_sent_ahead_fenced(void **state) {
    (void)state;
    flush();
    char err[512] = "";
    const char *key = "tierd:{orders.7}:meta";
    store_meta_t m;
    store_tx_t tx = {0};
    assert_int_equal(store_claim(store, "orders", 7, "test", &m, err, sizeof(err)), 0);
    assert_int_equal(
        store_read(store, "orders", 7, &m, 0, NULL, NULL, NULL, NULL, NULL, err, sizeof(err)),
        STORE_OK);
    freeReplyObject(redisCommand(rc, "HINCRBY %s epoch 1", key)); /* another owner */
    assert_int_equal(store_tx_addv(&tx, 4, "HSET", (size_t)4, key, strlen(key), "offset", (size_t)6,
                                   "99", (size_t)2),
                     0);
    assert_int_equal(store_exec_send(store, &tx, store_hook, NULL, err, sizeof(err)),
                     STORE_PENDING);
    assert_int_equal(store_told, 1); /* not yet */
    assert_int_equal(store_settle(store), STORE_FENCED);
    assert_int_equal(store_told, STORE_FENCED);
    store_told = 1;
    assert_int_equal(store_settle(store), STORE_OK); /* told once */
    assert_int_equal(store_told, 1);
    redisReply *r = redisCommand(rc, "HGET %s offset", key);
    assert_true(r->type == REDIS_REPLY_NIL || strcmp(r->str, "99") != 0);
    freeReplyObject(r);
    store_tx_free(&tx);
}

static int setup(void **state) {
    (void)state;
    char err[512] = "";
    const char *port = getenv("TIERD_TEST_REDIS_PORT");
    if (!port) {
        fprintf(stderr, "TIERD_TEST_REDIS_PORT is not set: run through with-redis\n");
        return -1;
    }
    setenv("TIERD_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1", 1);
    if (config_load(&conf, NULL, err, sizeof(err)) != 0) return -1;
    conf.redis_port = atoi(port);
    if (month_zone_init(&zone, "UTC", err, sizeof(err)) != 0) return -1;
    store = store_new(&conf, err, sizeof(err));
    if (!store || store_connect(store, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    dec = decode_new(err, sizeof(err));
    if (!dec) return -1;
    if (avro_schema_from_json_length(tierd_schema_order, strlen(tierd_schema_order), &schema))
        return -1;
    iface = avro_generic_class_from_schema(schema);
    rc = redisConnect("127.0.0.1", atoi(port));
    return rc && !rc->err ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    redisFree(rc);
    avro_value_iface_decref(iface);
    avro_schema_decref(schema);
    decode_destroy(dec);
    store_destroy(store);
    config_free(&conf);
    return 0;
}

/* One rule decides for batches, reviews and profiles whether Redis is
 * ours, another owner's, or behind us (lost writes). */
static void test_meta_verdict(void **state) {
    (void)state;
    apply_part_t p;
    memset(&p, 0, sizeof(p));
    p.meta.epoch = 5;
    p.meta.offset = 100;
    p.meta.poffset = 7;
    store_meta_t now = p.meta;
    assert_int_equal(txn_meta_verdict(&p, &now), APPLY_OK);
    now.offset = 120; /* ahead: our own commit whose reply was lost */
    assert_int_equal(txn_meta_verdict(&p, &now), APPLY_OK);
    now = p.meta;
    now.offset = 99;
    assert_int_equal(txn_meta_verdict(&p, &now), APPLY_REWIND);
    now = p.meta;
    now.poffset = 6; /* only the profiles commit was lost */
    assert_int_equal(txn_meta_verdict(&p, &now), APPLY_REWIND);
    now = p.meta;
    now.epoch = 4;
    assert_int_equal(txn_meta_verdict(&p, &now), APPLY_REWIND);
    now = p.meta;
    now.epoch = 6;
    now.offset = 50; /* another owner: fenced, whatever the offsets say */
    assert_int_equal(txn_meta_verdict(&p, &now), APPLY_FENCED);
}

/* Meta as a claim reads it: what tierd writes parses; anything else
 * is named in meta.bad, never read as a number it is not. */
static void test_meta_fields_parse_strictly(void **state) {
    (void)state;
    char err[300], long_id[ORDER_ID_MAX + 2];
    store_meta_t m;
    memset(long_id, 'x', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    static const struct {
        const char *field, *value;
    } bad[] = {{"offset", "12x"},
               {"offset", ""},
               {"offset", "-3"},
               {"offset", " 12"},
               {"offset", "99999999999999999999"},
               {"poffset", "0x10"},
               {"epoch", "seven"},
               {"month", "202613"},
               {"month", "202600"},
               {"month", "2026-11"},
               {"reviewed", "abc"},
               {"rv_month", "20261"},
               {"format", "4.0"},
               {"format", "9999999999"},
               {"prev_fp", "12@"},
               {"prev_fp", "12@x"},
               {"prev_fp", "x"},
               {"prev_pfp", "1@-2"},
               {"prev_pfp", "18446744073709551616"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        flush();
        freeReplyObject(redisCommand(rc, "HSET tierd:{orders.0}:meta offset 5 month 202611 "
                                         "format 4 prev_fp 77@4"));
        freeReplyObject(
            redisCommand(rc, "HSET tierd:{orders.0}:meta %s %s", bad[i].field, bad[i].value));
        assert_int_equal(store_claim(store, "orders", 0, "test", &m, err, sizeof(err)), 0);
        if (strncmp(m.bad, bad[i].field, strlen(bad[i].field)) != 0 ||
            m.bad[strlen(bad[i].field)] != ' ')
            fail_msg("%s \"%s\": meta.bad is \"%s\"", bad[i].field, bad[i].value, m.bad);
    }
    flush();
    freeReplyObject(redisCommand(rc, "HSET tierd:{orders.0}:meta rv_after %s", long_id));
    assert_int_equal(store_claim(store, "orders", 0, "test", &m, err, sizeof(err)), 0);
    assert_memory_equal(m.bad, "rv_after", 8);
    /* What tierd writes, the extremes included. */
    flush();
    freeReplyObject(redisCommand(rc, "HSET tierd:{orders.0}:meta offset 9223372036854775807 "
                                     "month 000000 reviewed 202612 rv_month 000101 poffset 0 "
                                     "format 4 prev_fp 18446744073709551615@0 prev_pfp 0"));
    assert_int_equal(store_claim(store, "orders", 0, "test", &m, err, sizeof(err)), 0);
    assert_string_equal(m.bad, "");
    assert_true(m.offset == INT64_MAX && m.month == -1 && m.poffset == 0 && m.format == 4);
    assert_int_equal(m.reviewed, month_from_yyyymm(202612));
    assert_int_equal(m.rv_month, month_from_yyyymm(101));
    assert_true(m.has_prev_fp && m.prev_fp == UINT64_MAX && m.prev_at == 0);
    assert_true(m.has_prev_pfp && m.prev_pfp == 0 && m.pprev_at == -1);
    flush();
}

/* The commands of docs/operations.md's ACL rule for tierd. */
static const char *const rule_cmds[] = {"watch", "unwatch", "multi", "exec",   "discard",
                                        "hmget", "hgetall", "hset",  "hdel",   "hincrby",
                                        "hscan", "xadd",    "xdel",  "xrange", "xlen"};
#define NRULE (sizeof(rule_cmds) / sizeof(rule_cmds[0]))

/* store_check as user "acl" whose rule lacks rule_cmds[skip] (none when
 * skip >= NRULE), on keys under the prefix "acltest"; errstr filled. */
/* The acl user's password and a wrong one, made at run time. */
static char right_pw[33], wrong_pw[33];

static void random_hex(char *out, size_t n) {
    FILE *f = fopen("/dev/urandom", "rb");
    assert_non_null(f);
    for (size_t i = 0; i + 1 < n; i++) {
        int b = fgetc(f);
        assert_true(b != EOF);
        out[i] = "0123456789abcdef"[b & 15];
    }
    out[n - 1] = '\0';
    fclose(f);
}

/* store_check of a new store with configuration c. */
static int check_with(const config_t *c, char *err, size_t errn) {
    store_t *s = store_new(c, err, errn);
    assert_non_null(s);
    int ret = store_check(s, "orders", err, errn);
    store_destroy(s);
    return ret;
}

static int check_as(size_t skip, const char *password, char *err, size_t errn) {
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "ACL SETUSER acl reset on >%s resetkeys ~acltest:* resetchannels -@all", right_pw);
    for (size_t i = 0; i < NRULE; i++)
        if (i != skip) snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " +%s", rule_cmds[i]);
    redisReply *r = redisCommand(rc, cmd);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    config_t c = conf; /* shares conf's strings: never config_free'd */
    c.redis_user = "acl";
    c.redis_password = (char *)password;
    c.key_prefix = "acltest";
    return check_with(&c, err, errn);
}

/* The start-up check: the rule as documented passes; each of its commands
 * withheld alone is named in a refusal; a wrong password is a refusal, a
 * Redis that does not answer is not; and nothing is ever written. */
static void test_store_check_rights(void **state) {
    (void)state;
    char err[512];
    random_hex(right_pw, sizeof(right_pw));
    random_hex(wrong_pw, sizeof(wrong_pw));
    assert_int_equal(check_as(NRULE, right_pw, err, sizeof(err)), STORE_OK);
    for (size_t i = 0; i < NRULE; i++) {
        char want[64];
        err[0] = '\0';
        assert_int_equal(check_as(i, right_pw, err, sizeof(err)), STORE_DENIED);
        snprintf(want, sizeof(want), "'%s' command", rule_cmds[i]);
        if (!strstr(err, want)) fail_msg("without %s: %s", rule_cmds[i], err);
    }
    assert_int_equal(check_as(NRULE, wrong_pw, err, sizeof(err)), STORE_DENIED);
    assert_non_null(strstr(err, "AUTH refused: WRONGPASS"));
    assert_null(strstr(err, wrong_pw));
    assert_null(strstr(err, right_pw));
    redisReply *r = redisCommand(rc, "KEYS acltest:*");
    assert_non_null(r);
    assert_int_equal(r->elements, 0);
    freeReplyObject(r);
    config_t c = conf;
    c.redis_port = 1; /* nothing listens */
    store_t *s = store_new(&c, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(store_check(s, "orders", err, sizeof(err)), STORE_ERR);
    store_destroy(s);
}

static void redis_ok(const char *cmd) {
    redisReply *r = redisCommand(rc, cmd);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR) fail_msg("%s: %s", cmd, r->str);
    freeReplyObject(r);
}

/* The start-up check refuses a Redis that may evict tierd's keys (a
 * maxmemory with an allkeys-* policy), not one that may not (no maxmemory,
 * a volatile-* policy: tierd's keys never expire), and warns when the
 * user may not run INFO. */
static void test_store_check_eviction(void **state) {
    (void)state;
    char err[512];
    static const char *const refused[] = {"allkeys-lru", "allkeys-lfu", "allkeys-random"};
    redis_ok("CONFIG SET maxmemory 1gb");
    for (size_t i = 0; i < 3; i++) {
        char cmd[96];
        snprintf(cmd, sizeof(cmd), "CONFIG SET maxmemory-policy %s", refused[i]);
        redis_ok(cmd);
        assert_int_equal(check_with(&conf, err, sizeof(err)), STORE_DENIED);
        if (!strstr(err, refused[i]) || !strstr(err, "set maxmemory-policy noeviction"))
            fail_msg("%s: %s", refused[i], err);
    }
    redis_ok("CONFIG SET maxmemory-policy volatile-lru");
    assert_int_equal(check_with(&conf, err, sizeof(err)), STORE_OK);
    assert_string_equal(err, "");
    redis_ok("CONFIG SET maxmemory-policy allkeys-lru");
    redis_ok("CONFIG SET maxmemory 0");
    assert_int_equal(check_with(&conf, err, sizeof(err)), STORE_OK);
    assert_string_equal(err, "");
    redis_ok("CONFIG SET maxmemory-policy noeviction");
    /* The documented rule without +info: a warning, no refusal. */
    if (!right_pw[0]) random_hex(right_pw, sizeof(right_pw));
    assert_int_equal(check_as(NRULE, right_pw, err, sizeof(err)), STORE_OK);
    if (!strstr(err, "INFO refused") || !strstr(err, "noeviction")) fail_msg("%s", err);
}

/* The raw state of every customer of a partition, sorted by customer. */
static redisReply *states_of(int part) {
    redisReply *r = redisCommand(rc, "HGETALL tierd:{orders.%d}:c", part);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    return r;
}

static const char *field_of(const redisReply *r, const char *cust, size_t *len) {
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (strcmp(r->element[i]->str, cust) == 0) {
            *len = r->element[i + 1]->len;
            return r->element[i + 1]->str;
        }
    fail_msg("no state for %s", cust);
    return NULL;
}

/* The supply-tiers policy, and a codec for its events. */
static events_t *with_policy(policy_t *pol) {
    char path[1024], err[512] = "";
    snprintf(path, sizeof(path), "%s/config/policies/supply-tiers.yaml", TIERD_SOURCE_DIR);
    if (policy_load(path, pol, err, sizeof(err)) != 0) fail_msg("policy_load: %s", err);
    events_t *ev = events_new(err, sizeof(err));
    assert_non_null(ev);
    return ev;
}

/* An apply context that decides with pol and encodes its events with ev. */
static apply_ctx_t ctx_deciding(const policy_t *pol, events_t *ev) {
    apply_ctx_t a = ctx();
    a.policy = pol;
    a.events = ev;
    a.tier_topic = "tier-changes";
    a.quota_topic = "quota-events";
    a.window = pol->window;
    return a;
}

/* Redis' count of cmd calls since its start (INFO commandstats). */
static long long calls_of(const char *cmd) {
    redisReply *r = redisCommand(rc, "INFO commandstats");
    char want[64];
    long long n = 0;
    snprintf(want, sizeof(want), "cmdstat_%s:calls=", cmd);
    const char *at = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, want) : NULL;
    if (at) n = atoll(at + strlen(want));
    freeReplyObject(r);
    return n;
}

/* The same orders decided twice with the supply-tiers policy: as one
 * batch in partition 1 (one), and one batch each in partition 2 (each),
 * both settled (twin_open, then twin_apply for each batch). */
typedef struct twin {
    policy_t pol;
    events_t *ev;
    apply_ctx_t one, each;
    apply_part_t p1, p2;
    long long one_hmgets; /* Redis' HMGET calls in the last one batch */
} twin_t;

static void twin_open(twin_t *t) {
    char err[512] = "";
    flush();
    t->ev = with_policy(&t->pol);
    t->one = ctx_deciding(&t->pol, t->ev);
    t->each = ctx_deciding(&t->pol, t->ev);
    t->p1 = (apply_part_t){"orders", 1, {0}};
    t->p2 = (apply_part_t){"orders", 2, {0}};
    assert_int_equal(store_claim(store, "orders", 1, "test", &t->p1.meta, err, sizeof(err)), 0);
    assert_int_equal(store_claim(store, "orders", 2, "test", &t->p2.meta, err, sizeof(err)), 0);
}

static void twin_apply(twin_t *t, apply_msg_t *msgs, size_t n) {
    char err[512] = "";
    long long hmgets = calls_of("hmget");
    APPLY_OK_OR_FAIL(apply_batch(&t->one, &t->p1, msgs, n, NOV + 20 * DAY, err, sizeof(err)));
    apply_settle(&t->one);
    t->one_hmgets = calls_of("hmget") - hmgets;
    for (size_t i = 0; i < n; i++) {
        apply_msg_t m = msgs[i];
        APPLY_OK_OR_FAIL(apply_batch(&t->each, &t->p2, &m, 1, NOV + 20 * DAY, err, sizeof(err)));
    }
    apply_settle(&t->each);
    assert_int_equal(t->one.stats.applied, t->each.stats.applied);
    assert_int_equal(t->one.stats.duplicates, t->each.stats.duplicates);
    assert_int_equal(t->one.stats.tier_events, t->each.stats.tier_events);
    assert_int_equal(t->one.stats.quota_events, t->each.stats.quota_events);
}

/* The states of partitions 1 and 2: exactly the n customers, each the
 * same bytes in both.  Returns partition 1's (HGETALL) for more checks. */
static redisReply *twin_same_states(const char *const *ids, size_t n) {
    redisReply *r1 = states_of(1), *r2 = states_of(2);
    assert_int_equal(r1->elements, 2 * n);
    assert_int_equal(r2->elements, 2 * n);
    for (size_t c = 0; c < n; c++) {
        size_t l1 = 0, l2 = 0;
        const char *s1 = field_of(r1, ids[c], &l1), *s2 = field_of(r2, ids[c], &l2);
        if (l1 != l2 || memcmp(s1, s2, l1) != 0) fail_msg("%s: the states differ", ids[c]);
    }
    freeReplyObject(r2);
    return r1;
}

static void twin_free(twin_t *t) {
    apply_free(&t->one);
    apply_free(&t->each);
    events_destroy(t->ev);
}

/* A batch of any size gives the same state as the records one by one:
 * with a policy (placements, live scores, quota flags, a review between
 * the months), the same orders applied as one batch to partition 1 and
 * record by record to partition 2 leave byte-identical customer states. */
static void test_batch_size_gives_same_state(void **state) {
    (void)state;
    char err[512] = "";
    twin_t t;
    static const char *const custs[] = {"k1", "k2", "k3", "k4"};
    batch_t b = {0};
    int64_t off = 0;
    for (int month = 0; month < 2; month++) /* October, then November */
        for (int i = 0; i < 24; i++) {
            char oid[32];
            snprintf(oid, sizeof(oid), "o%d-%d", month, i);
            int64_t at = NOV - (1 - month) * 31 * DAY + (i + 1) * DAY / 2;
            add(&b, off++, oid, custs[(i * 7 + month) % 4], at, 1 + (i * 13) % 40);
        }
    add(&b, off++, "o0-3", "k2", NOV + 3 * DAY, 9); /* a duplicate */
    twin_open(&t);
    twin_apply(&t, b.msgs, b.n);
    assert_int_equal(t.one.stats.applied, b.n - 1);
    assert_int_equal(t.one.stats.duplicates, 1);
    assert_true(t.one.stats.reviews >= 1);
    redisReply *r1 = twin_same_states(custs, 4);
    for (size_t c = 0; c < 4; c++) {
        size_t l1 = 0;
        const char *s1 = field_of(r1, custs[c], &l1);
        /* The live score is the one over the window of its last order's
         * month (November), whatever came before in the batch. */
        state_customer_t st;
        customer_t cu;
        policy_month_t win[POLICY_WINDOW_MAX];
        policy_score_t sc;
        state_init(&st);
        memset(&cu, 0, sizeof(cu));
        assert_int_equal(state_decode(&st, s1, l1, err, sizeof(err)), 0);
        customer_load(&cu, &st);
        state_window(&st, month_from_yyyymm(202611), t.pol.window, win);
        assert_int_equal(policy_score(&t.pol, customer_profile(&cu, &t.pol), win,
                                      (size_t)t.pol.window, &sc, err, sizeof(err)),
                         0);
        assert_int_equal(st.live_score_c, sc.score_c);
        state_free(&st);
    }
    freeReplyObject(r1);
    batch_free(&b);
    twin_free(&t);
}

/* The element i of an array reply: its string, or NULL for a nil. */
static const char *elem(const redisReply *r, size_t i) {
    assert_true(i < r->elements);
    if (r->element[i]->type == REDIS_REPLY_NIL) return NULL;
    assert_int_equal(r->element[i]->type, REDIS_REPLY_STRING);
    return r->element[i]->str;
}

/* A read sent in parts: the parts' replies come back as one array per
 * key, in order; an aborted one leaves nothing watched; another call
 * while parts are out drops them first and gets its own replies; a part
 * the store refuses fails the read; a connection killed between two parts
 * fails the close, saying why, and the next read works. */
static void test_read_in_parts(void **state) {
    (void)state;
    flush();
    signal(SIGPIPE, SIG_IGN); /* a part written to the killed connection */
    char err[512] = "";
    store_meta_t m;
    redisReply *rep[STORE_READ_KEYS_MAX];
    size_t nk;
    freeReplyObject(redisCommand(rc, "HSET tierd:{orders.4}:c a 1 b 2 c 3 d 4 e 5"));
    freeReplyObject(redisCommand(rc, "HSET tierd:{orders.4}:p a pa e pe"));
    char *keys[2] = {"tierd:{orders.4}:c", "tierd:{orders.4}:p"};
    const char *f1[] = {"a", "b", "x"}, *f2[] = {"e", "c"};
    size_t l1[] = {1, 1, 1}, l2[] = {1, 1};
    const char **fa[2] = {f1, f1}, **fb[2] = {f2, f2};
    size_t *la[2] = {l1, l1}, *lb[2] = {l2, l2};
    const size_t na[2] = {3, 3}, nb[2] = {2, 2};

    assert_int_equal(store_read_open(store, "orders", 4, err, sizeof(err)), STORE_OK);
    assert_int_equal(store_read_part(store, 2, keys, fa, la, na), STORE_OK);
    assert_int_equal(store_read_part(store, 2, keys, fb, lb, nb), STORE_OK);
    assert_int_equal(store_read_close(store, &m, &nk, rep, err, sizeof(err)), STORE_OK);
    assert_int_equal(nk, 2);
    assert_int_equal(rep[0]->elements, 5);
    assert_int_equal(rep[1]->elements, 5);
    static const char *const want_c[] = {"1", "2", NULL, "5", "3"};
    static const char *const want_p[] = {"pa", NULL, NULL, "pe", NULL};
    for (size_t i = 0; i < 5; i++) {
        const char *c = elem(rep[0], i), *p = elem(rep[1], i);
        assert_true(c == want_c[i] || (c && want_c[i] && strcmp(c, want_c[i]) == 0));
        assert_true(p == want_p[i] || (p && want_p[i] && strcmp(p, want_p[i]) == 0));
    }
    store_unwatch(store);

    /* Aborted: the WATCH is gone, so a write to meta meanwhile does not
     * refuse the next transaction. */
    store_tx_t tx = {0};
    assert_int_equal(store_read_open(store, "orders", 4, err, sizeof(err)), STORE_OK);
    assert_int_equal(store_read_part(store, 2, keys, fa, la, na), STORE_OK);
    store_read_abort(store);
    freeReplyObject(redisCommand(rc, "HSET tierd:{orders.4}:meta epoch 99"));
    assert_int_equal(store_tx_addv(&tx, 4, "HSET", (size_t)4, "tierd:{orders.4}:c", (size_t)18, "f",
                                   (size_t)1, "v", (size_t)1),
                     0);
    assert_int_equal(store_exec(store, &tx, err, sizeof(err)), STORE_OK);
    store_tx_free(&tx);

    /* Another call while parts are out: they are read and dropped first,
     * and that call gets its own replies. */
    const char *f3[] = {"d"};
    size_t l3[] = {1};
    const char **fc[2] = {f3, f3};
    size_t *lc[2] = {l3, l3};
    size_t nc[2] = {1, 1};
    assert_int_equal(store_read_open(store, "orders", 4, err, sizeof(err)), STORE_OK);
    assert_int_equal(store_read_part(store, 2, keys, fa, la, na), STORE_OK);
    assert_int_equal(store_read(store, "orders", 4, &m, 2, keys, fc, lc, nc, rep, err, sizeof(err)),
                     STORE_OK);
    assert_int_equal(rep[0]->elements, 1);
    assert_string_equal(elem(rep[0], 0), "4");
    assert_null(elem(rep[1], 0));
    store_unwatch(store);

    /* A part with a key but no field is refused, and so is the read. */
    const size_t none[2] = {3, 0};
    assert_int_equal(store_read_open(store, "orders", 4, err, sizeof(err)), STORE_OK);
    assert_int_equal(store_read_part(store, 2, keys, fa, la, na), STORE_OK);
    assert_int_equal(store_read_part(store, 2, keys, fa, la, none), STORE_ERR);
    assert_int_equal(store_read_close(store, &m, &nk, rep, err, sizeof(err)), STORE_ERR);
    assert_non_null(strstr(err, "refused"));

    /* Killed between the parts. */
    assert_int_equal(store_read_open(store, "orders", 4, err, sizeof(err)), STORE_OK);
    assert_int_equal(store_read_part(store, 2, keys, fa, la, na), STORE_OK);
    freeReplyObject(redisCommand(rc, "CLIENT KILL TYPE normal SKIPME yes"));
    (void)store_read_part(store, 2, keys, fb, lb, nb);
    err[0] = '\0';
    assert_int_equal(store_read_close(store, &m, &nk, rep, err, sizeof(err)), STORE_ERR);
    assert_true(err[0] != '\0'); /* says why, whichever write found the connection gone */
    int rc2 = STORE_ERR;
    for (int i = 0; i < 500 && rc2 != STORE_OK; i++) { /* past the reconnect backoff */
        rc2 = store_read(store, "orders", 4, &m, 2, keys, fa, la, (size_t *)na, rep, err,
                         sizeof(err));
        struct timespec ts = {0, 10000000};
        if (rc2 != STORE_OK) nanosleep(&ts, NULL);
    }
    assert_int_equal(rc2, STORE_OK);
    assert_string_equal(elem(rep[0], 0), "1");
    assert_int_equal(m.epoch, 99);
    store_unwatch(store);
}

/* A batch read in parts (txn_ops_t.stream: the customers first seen are
 * read every PART_RECORDS, 1024, records while the rest are decoded):
 * 2,600 orders of customers that each have a state already, a third of
 * them of customers seen before in the same part or an earlier one, one
 * the duplicate of an order of the stored state and one of an order
 * earlier in the batch, give the same states, counts and events as the
 * same orders one batch each: every customer got its own stored state. */
static void test_batch_read_in_parts(void **state) {
    (void)state;
    enum { N = 2600 };
    twin_t t;
    apply_msg_t *seed = calloc(N, sizeof(*seed)), *msgs = calloc(N, sizeof(*msgs));
    char(*ids)[32] = calloc(N, sizeof(*ids));
    const char **idp = calloc(N, sizeof(*idp));
    size_t *cust = calloc(N, sizeof(*cust));
    assert_true(seed && msgs && ids && idp && cust);
    size_t C = 0; /* the customers: each new one takes the next number */
    for (size_t i = 0; i < N; i++)
        cust[i] = i == N - 1 ? cust[3] : i == N - 2 ? 7 : i % 3 == 2 ? (i * 7) % 600 : C++;
    for (size_t c = 0; c < C; c++) {
        char oid[32];
        snprintf(ids[c], sizeof(ids[c]), "cust-%04zu", c);
        idp[c] = ids[c];
        snprintf(oid, sizeof(oid), "s%zu", c);
        seed[c].offset = (int64_t)c;
        seed[c].value =
            encode(oid, ids[c], NOV + DAY, 1 + (int64_t)(c % 23), 100, &seed[c].value_len);
        seed[c].key = ids[c];
        seed[c].key_len = strlen(ids[c]);
    }
    for (size_t i = 0; i < N; i++) {
        char oid[32];
        snprintf(oid, sizeof(oid), i == N - 1 ? "p3" : i == N - 2 ? "s7" : "p%zu", i);
        msgs[i].offset = (int64_t)(C + i);
        msgs[i].value = encode(oid, ids[cust[i]], NOV + 2 * DAY + (int64_t)i * 1000,
                               1 + (int64_t)(i % 17), 100, &msgs[i].value_len);
        msgs[i].key = ids[cust[i]];
        msgs[i].key_len = strlen(ids[cust[i]]);
    }
    twin_open(&t);
    twin_apply(&t, seed, C);
    twin_apply(&t, msgs, N);
    assert_int_equal(t.one_hmgets, 1 + 3 * 2); /* the meta, three parts of states and profiles */
    assert_int_equal(t.one.stats.applied, C + N - 2);
    assert_int_equal(t.one.stats.duplicates, 2);
    freeReplyObject(twin_same_states(idp, C));
    for (size_t i = 0; i < N; i++) {
        free((void *)seed[i].value);
        free((void *)msgs[i].value);
    }
    free(seed);
    free(msgs);
    free(ids);
    free(idp);
    free(cust);
    twin_free(&t);
}

/* Byte order of ids, as memcmp and then length: what the review's cursor
 * means, written here independently of review.c. */
static int bytes_before(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    int c = memcmp(a, b, la < lb ? la : lb);
    return c ? c < 0 : la < lb;
}

/* A review that resumes at a cursor (as after a crash between pages)
 * reviews exactly the customers after it in byte order, and skips the
 * rest, for ids that the review's 8-byte prefix compare must get right:
 * shorter than 8 bytes, exactly 8, sharing the first 8, multibyte UTF-8
 * (bytes above 0x7f), and the cursor itself. */
/* An empty Redis, a context deciding with supply-tiers (pol, *ev), and
 * p's partition claimed. */
static apply_ctx_t fresh_deciding(policy_t *pol, events_t **ev, apply_part_t *p) {
    char err[512] = "";
    flush();
    *ev = with_policy(pol);
    apply_ctx_t a = ctx_deciding(pol, *ev);
    assert_int_equal(store_claim(store, "orders", p->partition, "test", &p->meta, err, sizeof(err)),
                     0);
    return a;
}

static void test_review_resumes_after_cursor_in_byte_order(void **state) {
    (void)state;
    char err[512] = "";
    policy_t pol;
    events_t *ev;
    apply_part_t p = {"orders", 3, {0}};
    apply_ctx_t a = fresh_deciding(&pol, &ev, &p);
    static const char *const ids[] = {
        "CUSTOME",    "CUSTOMEQ9",
        "CUSTOMER",   "CUSTOMER0",
        "CUSTOMER00", "CUSTOMER~",
        "CUSTOMERA",  "CUSTOMERa",
        "CUSTOMES",   "CUSTOMF",
        "CUSTOM",     "CUSTOMÉ",
        "CUSTOMÉR",   "CUSTOMER\xc3\xa9",
        "C",          "CUSTOMER-a-much-longer-id",
        "D",          "CUSTOMEQ",
        "AAAAAAAA",   "AAAAAAAB",
        "AAAAAAAAA",  "zz",
        "CUSTOMER!",  "CUSTOMER ",
    };
    const size_t n = sizeof(ids) / sizeof(ids[0]);
    const char *cursor = "CUSTOMER";
    batch_t b = {0};
    for (size_t i = 0; i < n; i++) { /* October: each placed */
        char oid[32];
        snprintf(oid, sizeof(oid), "oct-%zu", i);
        add(&b, (int64_t)i, oid, ids[i], NOV - 20 * DAY + (int64_t)i * 1000, 5);
    }
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    assert_int_equal(a.stats.applied, n);
    batch_free(&b);
    /* A review of October that stopped after the cursor's page. */
    redisReply *r =
        redisCommand(rc, "HSET tierd:{orders.3}:meta rv_month 202610 rv_after %s", cursor);
    assert_non_null(r);
    freeReplyObject(r);
    p.meta.rv_month = month_from_yyyymm(202610);
    snprintf(p.meta.rv_after, sizeof(p.meta.rv_after), "%s", cursor);
    /* November's first order closes October: the review resumes. */
    add(&b, (int64_t)n, "nov-0", "trigger", NOV + DAY, 1);
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    assert_int_equal(a.stats.reviews, 1);
    assert_int_equal(p.meta.reviewed, month_from_yyyymm(202610));
    size_t reviewed = 0;
    for (size_t i = 0; i < n; i++) {
        state_customer_t st;
        state_init(&st);
        assert_int_equal(state_of(3, ids[i], &st), 1);
        /* A review records the tier November begins with. */
        const state_month_t *m = state_month(&st, month_from_yyyymm(202611), 0);
        int was = m != NULL && m->tier > 0, want = bytes_before(cursor, ids[i]);
        if (was != want)
            fail_msg("%s: reviewed %d, but it is %s the cursor %s", ids[i], was,
                     want ? "after" : "not after", cursor);
        reviewed += (size_t)was;
        state_free(&st);
    }
    assert_true(reviewed > 0 && reviewed < n);
    batch_free(&b);
    apply_free(&a);
    events_destroy(ev);
}

/* A review of more than two pages with its EXECs sent ahead, as the
 * daemon runs it: each page after the first is decided while Redis
 * executes the one before (review.c), and every customer is reviewed,
 * none skipped at a page's edge.  Under ASan too (scripts/test). */
static void test_review_pages_decided_ahead(void **state) {
    (void)state;
    char err[512] = "";
    policy_t pol;
    events_t *ev;
    apply_part_t p = {"orders", 2, {0}};
    apply_ctx_t a = fresh_deciding(&pol, &ev, &p);
    a.settled = hook;
    memset(&told, 0, sizeof(told));
    enum { N = 2500, CHUNK = 50 }; /* three pages of 1000; batch_t holds 64 */
    static char ids[N][16];
    batch_t b = {0};
    for (int i = 0; i < N; i++) { /* October: each placed */
        char oid[32];
        snprintf(oid, sizeof(oid), "oct-%d", i);
        snprintf(ids[i], sizeof(ids[i]), "cust-%05d", i);
        add(&b, i, oid, ids[i], NOV - 20 * DAY + (int64_t)i * 1000, 1 + i % 90);
        if (b.n == CHUNK || i == N - 1) {
            APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
            batch_free(&b);
        }
    }
    apply_settle(&a);
    assert_int_equal(a.stats.applied, N);
    /* November's first order closes October. */
    add(&b, N, "nov-0", "trigger", NOV + DAY, 1);
    APPLY_OK_OR_FAIL(apply_batch(&a, &p, b.msgs, b.n, NOV + 2 * DAY, err, sizeof(err)));
    batch_free(&b);
    apply_settle(&a);
    assert_int_equal(told.rc, APPLY_OK);
    assert_int_equal(a.stats.reviews, 1);
    assert_int_equal(a.stats.review_pages, 3);
    assert_int_equal(p.meta.reviewed, month_from_yyyymm(202610));
    for (int i = 0; i < N; i++) {
        state_customer_t st;
        state_init(&st);
        assert_int_equal(state_of(2, ids[i], &st), 1);
        /* A review records the tier November begins with. */
        const state_month_t *m = state_month(&st, month_from_yyyymm(202611), 0);
        if (!m || m->tier <= 0) fail_msg("%s was not reviewed", ids[i]);
        state_free(&st);
    }
    apply_free(&a);
    events_destroy(ev);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_check_rights),
        cmocka_unit_test(test_store_check_eviction),
        cmocka_unit_test(test_meta_verdict),
        cmocka_unit_test(test_meta_fields_parse_strictly),
        cmocka_unit_test(test_same_record_twice_counts_once),
        cmocka_unit_test(test_lost_commit_reply_not_applied_again),
        cmocka_unit_test(test_same_order_new_offset_is_duplicate),
        cmocka_unit_test(test_stale_owner_is_fenced),
        cmocka_unit_test(test_skip_moves_offset_past_deleted_records),
        cmocka_unit_test(test_dead_letter_failure_writes_nothing),
        cmocka_unit_test(test_old_months_deleted_and_late_refused),
        cmocka_unit_test(test_redis_went_back_in_time),
        cmocka_unit_test(test_sent_ahead_counts_once_it_lands),
        cmocka_unit_test(test_sent_ahead_lost_rewinds),
        cmocka_unit_test(test_sent_ahead_fenced),
        cmocka_unit_test(test_read_behind_lost_exec),
        cmocka_unit_test(test_bad_sku_set_stops_batch_that_changes_it),
        cmocka_unit_test(test_batch_size_gives_same_state),
        cmocka_unit_test(test_read_in_parts),
        cmocka_unit_test(test_batch_read_in_parts),
        cmocka_unit_test(test_review_resumes_after_cursor_in_byte_order),
        cmocka_unit_test(test_review_pages_decided_ahead),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
