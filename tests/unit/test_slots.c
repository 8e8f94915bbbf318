/*
 * test_slots.c -- the cluster routing module's pure parts: the slot of a
 * key (values as a real redis-server's CLUSTER KEYSLOT gives them), the
 * slot map of a CLUSTER SLOTS reply and the redirections, with replies
 * read from RESP bytes by hiredis's own reader.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "slots.h"
#include "store.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

static redisReply *resp(const char *bytes) {
    redisReader *rd = redisReaderCreate();
    void *r = NULL;
    assert_non_null(rd);
    assert_int_equal(redisReaderFeed(rd, bytes, strlen(bytes)), REDIS_OK);
    assert_int_equal(redisReaderGetReply(rd, &r), REDIS_OK);
    assert_non_null(r);
    redisReaderFree(rd);
    return r;
}

static int slot_of(const char *k) {
    return slots_key_slot(k, strlen(k));
}

static void test_crc16(void **state) {
    (void)state;
    /* The CRC16/XMODEM check value. */
    assert_int_equal(slots_crc16("123456789", 9), 0x31C3);
    assert_int_equal(slots_crc16("", 0), 0);
}

/* Each value is what redis-server 7.0's CLUSTER KEYSLOT answered. */
static void test_key_slot(void **state) {
    (void)state;
    assert_int_equal(slot_of("foo"), 12182);
    assert_int_equal(slot_of("bar"), 5061);
    assert_int_equal(slot_of("somekey"), 11058);
    assert_int_equal(slot_of("hello"), 866);
    assert_int_equal(slot_of(""), 0);
    /* Hash tags: the first "{" to the next "}", when not empty. */
    assert_int_equal(slot_of("foo{hash_tag}"), 2515);
    assert_int_equal(slot_of("{user1000}.following"), 3443);
    assert_int_equal(slot_of("foo{}{bar}"), 8363);    /* empty tag: whole key */
    assert_int_equal(slot_of("foo{{bar}}zap"), 4015); /* the tag is "{bar" */
    assert_int_equal(slot_of("foo{bar}{zap}"), 5061); /* the first tag: "bar" */
    assert_int_equal(slot_of("tierd:{orders.0}:meta"), 11829);
    /* Every key of a partition is in the slot of its tag. */
    assert_int_equal(slot_of("tierd:{orders.7}:c"), 7890);
    assert_int_equal(slot_of("tierd:{orders.7}:outbox"), 7890);
    assert_int_equal(slot_of("scratch-1-configured:{orders.7}:meta"), 7890);
    assert_int_equal(slot_of("orders.7"), 7890);
    assert_int_equal(slot_of("x{orders.3}y"), 7766);
    /* Length-bounded: bytes after len do not count, NUL inside does. */
    assert_int_equal(slots_key_slot("foobar", 3), 12182);
    assert_int_equal(slots_key_slot("a{b\0c}", 6), slots_crc16("b\0c", 3) % SLOTS_N);
}

/* tierctl backtest's scratch keys (store_set_tag): one slot per scratch
 * partition, never the live partition's. */
static void test_scratch_tag(void **state) {
    (void)state;
    config_t c;
    char err[256], key[256], live[256];
    memset(&c, 0, sizeof(c));
    c.key_prefix = "tierd";
    store_t *s = store_new(&c, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(store_set_tag(s, "a{b"), -1);
    assert_int_equal(store_set_tag(s, "a}b"), -1);
    for (int32_t p = 0; p < 8; p++) {
        store_key(s, "orders", p, "meta", live, sizeof(live));
        assert_int_equal(store_set_tag(s, "tierd-bt.41-1700000000000-configured"), 0);
        store_key(s, "orders", p, "meta", key, sizeof(key));
        char want[128];
        snprintf(want, sizeof(want), "tierd:{tierd-bt.41-1700000000000-configured.%d}:meta", p);
        assert_string_equal(key, want);
        int slot = slot_of(key);
        assert_int_not_equal(slot, slot_of(live));
        static const char *const sfx[] = {"c", "p", "outbox", "m.202611"};
        for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
            store_key(s, "orders", p, sfx[i], key, sizeof(key));
            assert_int_equal(slot_of(key), slot);
        }
        assert_int_equal(store_set_tag(s, ""), 0); /* back to the topic */
        store_key(s, "orders", p, "meta", key, sizeof(key));
        assert_string_equal(key, live);
    }
    store_destroy(s);
}

static void test_addr(void **state) {
    (void)state;
    slots_addr_t a;
    assert_int_equal(slots_addr_parse("127.0.0.1:7001", 14, &a), 0);
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 7001);
    assert_int_equal(slots_addr_parse("[::1]:6379", 10, &a), 0);
    assert_string_equal(a.host, "::1");
    assert_int_equal(a.port, 6379);
    assert_int_equal(slots_addr_parse("redis-a:6379", 12, &a), 0);
    assert_string_equal(a.host, "redis-a");
    const char *bad[] = {"127.0.0.1", ":6379", "h:",       "h:0",
                         "h:65536",   "h:12x", "h:123456", "[::1:5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        assert_int_equal(slots_addr_parse(bad[i], strlen(bad[i]), &a), -1);
}

/* Three masters, each with one replica, as `redis-cli --cluster create`
 * lays them out; master 2 holds two ranges. */
static const char three_shards[] = "*4\r\n"
                                   "*4\r\n:0\r\n:5460\r\n"
                                   "*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$2\r\nid\r\n"
                                   "*3\r\n$9\r\n127.0.0.1\r\n:7004\r\n$2\r\nid\r\n"
                                   "*4\r\n:5461\r\n:10922\r\n"
                                   "*3\r\n$9\r\n127.0.0.1\r\n:7002\r\n$2\r\nid\r\n"
                                   "*3\r\n$9\r\n127.0.0.1\r\n:7005\r\n$2\r\nid\r\n"
                                   "*3\r\n:10923\r\n:16000\r\n"
                                   "*3\r\n$9\r\n127.0.0.1\r\n:7003\r\n$2\r\nid\r\n"
                                   "*4\r\n:16001\r\n:16383\r\n"
                                   "*3\r\n$9\r\n127.0.0.1\r\n:7003\r\n$2\r\nid\r\n"
                                   "*3\r\n$9\r\n127.0.0.1\r\n:7006\r\n$2\r\nid\r\n";

static void test_map(void **state) {
    (void)state;
    static slots_map_t m;
    char err[256];
    redisReply *r = resp(three_shards);
    assert_int_equal(slots_map_parse(r, &m, err, sizeof(err)), 0);
    freeReplyObject(r);
    assert_int_equal(m.nmasters, 3);
    assert_int_equal(m.nreplicas, 3);
    assert_int_equal(m.covered, SLOTS_N);
    assert_int_equal(m.masters[m.owner[0]].port, 7001);
    assert_int_equal(m.masters[m.owner[5460]].port, 7001);
    assert_int_equal(m.masters[m.owner[5461]].port, 7002);
    assert_int_equal(m.masters[m.owner[16000]].port, 7003);
    assert_int_equal(m.masters[m.owner[16383]].port, 7003);
    assert_int_equal(m.owner[16001], m.owner[10923]);
    assert_string_equal(m.replicas[2].host, "127.0.0.1");
    assert_int_equal(m.replicas[2].port, 7006);
}

/* The node table is bounded: addresses that serve nothing and are not
 * connected give their indices to new ones, the masters in force never. */
static void test_node_table_reuse(void **state) {
    (void)state;
    static slots_map_t m, m2;
    char err[256], moved[sizeof(three_shards)];
    slots_t *s = slots_new("127.0.0.1:7001", 1000, NULL, NULL, err, sizeof(err));
    assert_non_null(s);
    redisReply *r = resp(three_shards);
    assert_int_equal(slots_map_parse(r, &m, err, sizeof(err)), 0);
    freeReplyObject(r);
    slots_install(s, &m);
    assert_int_equal(slots_nmasters(s), 3);
    /* Addresses an ASK named once, up to the table's size. */
    for (int p = 0; p < SLOTS_NODES_MAX - 3; p++) {
        slots_addr_t a = {"127.0.0.1", 8000 + p};
        assert_true(slots_node(s, &a) >= 3);
    }
    assert_int_equal(slots_nmasters(s), SLOTS_NODES_MAX);
    slots_addr_t x = {"127.0.0.1", 9000};
    int i = slots_node(s, &x);
    assert_true(i >= 3);
    assert_string_equal(slots_name(s, i), "127.0.0.1:9000");
    assert_int_equal(slots_node(s, &x), i);
    assert_string_equal(slots_name(s, slots_master(s, 0)), "127.0.0.1:7001");
    assert_string_equal(slots_name(s, slots_master(s, 5461)), "127.0.0.1:7002");
    assert_string_equal(slots_name(s, slots_master(s, 16383)), "127.0.0.1:7003");
    /* The whole cluster comes back on new addresses, with the table full:
     * every slot is routed to its new master. */
    memcpy(moved, three_shards, sizeof(three_shards));
    for (char *p = moved; (p = strstr(p, ":700")) != NULL; p += 4) p[2] = '1'; /* :7001 -> :7101 */
    r = resp(moved);
    assert_int_equal(slots_map_parse(r, &m2, err, sizeof(err)), 0);
    freeReplyObject(r);
    slots_install(s, &m2);
    assert_int_equal(slots_nmasters(s), SLOTS_NODES_MAX);
    assert_string_equal(slots_name(s, slots_master(s, 0)), "127.0.0.1:7101");
    assert_string_equal(slots_name(s, slots_master(s, 5461)), "127.0.0.1:7102");
    assert_string_equal(slots_name(s, slots_master(s, 16383)), "127.0.0.1:7103");
    assert_int_equal(slots_master(s, 16001), slots_master(s, 10923));
    assert_int_not_equal(slots_master(s, 0), slots_master(s, 5461));
    assert_int_not_equal(slots_master(s, 5461), slots_master(s, 16383));
    slots_free(s);
}

static void test_map_gaps_and_refusals(void **state) {
    (void)state;
    static slots_map_t m;
    char err[256];
    /* A slot no master serves (a master failed, no replica yet). */
    redisReply *r = resp("*1\r\n*3\r\n:100\r\n:200\r\n*2\r\n$1\r\nh\r\n:1\r\n");
    assert_int_equal(slots_map_parse(r, &m, err, sizeof(err)), 0);
    freeReplyObject(r);
    assert_int_equal(m.covered, 101);
    assert_int_equal(m.owner[99], -1);
    assert_int_equal(m.owner[201], -1);
    assert_int_equal(m.owner[150], 0);
    /* A node that is no cluster: its refusal is quoted. */
    r = resp("-ERR This instance has cluster support disabled\r\n");
    assert_int_equal(slots_map_parse(r, &m, err, sizeof(err)), -1);
    freeReplyObject(r);
    assert_non_null(strstr(err, "cluster support disabled"));
    /* Out-of-range and malformed ranges. */
    const char *bad[] = {
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n",
        "*1\r\n*3\r\n:9\r\n:8\r\n*2\r\n$1\r\nh\r\n:1\r\n",
        "*1\r\n*2\r\n:0\r\n:1\r\n",
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:0\r\n",
        ":1\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        r = resp(bad[i]);
        assert_int_equal(slots_map_parse(r, &m, err, sizeof(err)), -1);
        freeReplyObject(r);
    }
}

static void test_redirect(void **state) {
    (void)state;
    int slot = -1;
    slots_addr_t to;
    redisReply *r = resp("-MOVED 3999 127.0.0.1:6381\r\n");
    assert_int_equal(slots_redirect(r, &slot, &to), SLOTS_REDIR_MOVED);
    assert_int_equal(slot, 3999);
    assert_string_equal(to.host, "127.0.0.1");
    assert_int_equal(to.port, 6381);
    freeReplyObject(r);
    r = resp("-ASK 7890 10.0.0.2:7002\r\n");
    assert_int_equal(slots_redirect(r, &slot, &to), SLOTS_REDIR_ASK);
    assert_int_equal(slot, 7890);
    assert_string_equal(to.host, "10.0.0.2");
    freeReplyObject(r);
    struct {
        const char *resp;
        int want;
    } cases[] = {
        {"-TRYAGAIN Multiple keys request during rehashing of slot\r\n", SLOTS_REDIR_TRYAGAIN},
        {"-CLUSTERDOWN The cluster is down\r\n", SLOTS_REDIR_CLUSTERDOWN},
        {"-CLUSTERDOWN Hash slot not served\r\n", SLOTS_REDIR_CLUSTERDOWN},
        {"-LOADING Redis is loading the dataset in memory\r\n", SLOTS_REDIR_TRYAGAIN},
        {"-MASTERDOWN Link with MASTER is down\r\n", SLOTS_REDIR_TRYAGAIN},
        {"-ERR wrong number of arguments\r\n", SLOTS_REDIR_NONE},
        {"-ASKING is not a redirect\r\n", SLOTS_REDIR_NONE},
        {"-MOVED 16384 h:1\r\n", SLOTS_REDIR_NONE},
        {"-MOVED 12 h\r\n", SLOTS_REDIR_NONE},
        {"-MOVED\r\n", SLOTS_REDIR_NONE},
        {"+OK\r\n", SLOTS_REDIR_NONE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        r = resp(cases[i].resp);
        assert_int_equal(slots_redirect(r, NULL, NULL), cases[i].want);
        freeReplyObject(r);
    }
    assert_int_equal(slots_redirect(NULL, NULL, NULL), SLOTS_REDIR_NONE);
}

static void test_seeds(void **state) {
    (void)state;
    char err[256];
    slots_t *s =
        slots_new("127.0.0.1:7001, 127.0.0.1:7002,[::1]:7003", 1000, NULL, NULL, err, sizeof(err));
    assert_non_null(s);
    slots_free(s);
    assert_null(slots_new("127.0.0.1:7001,redis-b", 1000, NULL, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "\"redis-b\" is not host:port"));
    assert_null(slots_new(" , ", 1000, NULL, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "no seed"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16),
        cmocka_unit_test(test_key_slot),
        cmocka_unit_test(test_scratch_tag),
        cmocka_unit_test(test_addr),
        cmocka_unit_test(test_map),
        cmocka_unit_test(test_map_gaps_and_refusals),
        cmocka_unit_test(test_redirect),
        cmocka_unit_test(test_seeds),
        cmocka_unit_test(test_node_table_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
