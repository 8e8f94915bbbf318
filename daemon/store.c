/*
 * store.c -- Redis I/O with hiredis, pipelined: a batch costs two round
 * trips (watched read, then MULTI/EXEC), whatever its size.
 *
 * Numbers are compared and decided in C; Redis only stores text.  No Lua:
 * Lua turns integers above 2^53 into doubles.
 */
#include "store.h"

#include "arena.h"
#include "decimal.h"
#include "metrics.h"
#include "month.h"
#include "slots.h"

#include <ctype.h>
#include <errno.h>
#include <hiredis/sds.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

struct store {
    const config_t *conf; /* borrowed: outlives the store */
    redisContext *rc;
    uint64_t commands;
    /* Round-trip latency: the wait for the first reply of each pipeline. */
    double rtt_sum;
    uint64_t rtt_count;
    double rtt_buckets[METRICS_RTT_BUCKETS];
    /* After a failure, callers fail fast until retry_at (monotonic ms),
     * so one unreachable Redis costs the loop one timeout per backoff
     * step, not one per partition. */
    int64_t retry_at, backoff;
    /* Redis Cluster (redis.cluster set): the slot map and a connection
     * per master; rc is then the connection of the current request, to
     * master `node`, and each master backs off on its own (slots.h). */
    slots_t *cl;
    int node;
    int asking; /* the current request was sent on by ASK: ASKING first */
    int redir;  /* SLOTS_REDIR_* of the first error reply of a request */
    /* Redirecting replies seen, by SLOTS_REDIR_* - 1 (for /metrics). */
    uint64_t redirects[METRICS_REDIR__COUNT];
    slots_addr_t redir_to;
    char watched[256]; /* the key store_read watched, for store_exec */
    /* A transaction store_exec_send sent whose replies are still to be
     * read (fn NULL: none): store_settle reads them, and every other call
     * that talks to Redis settles it first. */
    struct {
        store_settled_fn fn;
        void *opaque;
        size_t ncmds; /* tx's commands, without MULTI and EXEC */
    } flight;
    char tag[128]; /* the hash tag's head instead of the topic ("": the topic) */
    /* The last connection was refused (AUTH or SELECT answered with an
     * error) rather than not answered: store_check's STORE_DENIED. */
    int denied;
    /* store_read's replies to the key reads are built here, not with a
     * malloc per reply and per string (see reply_arena_on). */
    arena_t ra;
    int ra_on;
    redisReplyObjectFunctions *ra_saved;
    /* A read sent in parts (store_read_open): open, and the keys of each
     * part and how many parts were appended. */
    struct {
        int open;
        int refused; /* a part's arguments were refused: the close fails */
        size_t nkeys, nparts;
    } part;
};

static int setup(void *opaque, redisContext *rc, char *errstr, size_t errstr_size);

_Static_assert(SLOTS_REDIR_MOVED - 1 == METRICS_REDIR_MOVED &&
                   SLOTS_REDIR_ASK - 1 == METRICS_REDIR_ASK &&
                   SLOTS_REDIR_TRYAGAIN - 1 == METRICS_REDIR_TRYAGAIN &&
                   SLOTS_REDIR_CLUSTERDOWN - 1 == METRICS_REDIR_CLUSTERDOWN,
               "redirect kinds count in metrics' order");

store_t *store_new(const config_t *c, char *errstr, size_t errstr_size) {
    store_t *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->conf = c;
    if (c->redis_cluster) {
        char why[512];
        s->cl = slots_new(c->redis_cluster, (int)c->redis_timeout_ms, setup, s, why, sizeof(why));
        if (!s->cl) {
            snprintf(errstr, errstr_size, "redis.cluster: %s", why);
            free(s);
            return NULL;
        }
    }
    return s;
}

void store_destroy(store_t *s) {
    if (!s) return;
    if (s->cl)
        slots_free(s->cl); /* it owns the connections */
    else if (s->rc)
        redisFree(s->rc);
    arena_free(&s->ra);
    free(s);
}

int store_connected(const store_t *s) {
    if (s->cl) { /* one master up will do: the partitions of the others wait */
        for (int i = 0; i < slots_nmasters(s->cl); i++)
            if (slots_up(s->cl, i)) return 1;
        return 0;
    }
    return s->rc != NULL && s->backoff == 0;
}

int store_set_tag(store_t *s, const char *tag) {
    if (strlen(tag) >= sizeof(s->tag) || strpbrk(tag, "{}")) return -1;
    snprintf(s->tag, sizeof(s->tag), "%s", tag);
    return 0;
}

int store_cluster(const store_t *s) {
    return s->cl != NULL;
}

void store_redirects(const store_t *s, uint64_t *counts) {
    memcpy(counts, s->redirects, sizeof(s->redirects));
}

int store_partition_node(store_t *s, const char *topic, int32_t partition, char *name,
                         size_t size) {
    char key[256];
    const config_t *c = s->conf;
    if (!s->cl) {
        if (c->redis_unix_socket)
            snprintf(name, size, "%s", c->redis_unix_socket);
        else
            snprintf(name, size, strchr(c->redis_host, ':') ? "[%s]:%d" : "%s:%d", c->redis_host,
                     (int)c->redis_port);
        return store_connected(s);
    }
    store_key(s, topic, partition, "meta", key, sizeof(key));
    int i = slots_master(s->cl, slots_key_slot(key, strlen(key)));
    if (i < 0) {
        snprintf(name, size, "-");
        return 0;
    }
    snprintf(name, size, "%s", slots_name(s->cl, i));
    return slots_up(s->cl, i);
}
uint64_t store_commands(const store_t *s) {
    return s->commands;
}

void store_rtt(const store_t *s, double *sum, uint64_t *count, double *buckets) {
    *sum = s->rtt_sum;
    *count = s->rtt_count;
    memcpy(buckets, s->rtt_buckets, sizeof(s->rtt_buckets));
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void observe(store_t *s, double seconds) {
    metrics_hist_observe(metrics_rtt_bounds, METRICS_RTT_BUCKETS, s->rtt_buckets, &s->rtt_sum,
                         &s->rtt_count, seconds);
}

/* redisGetReply; the first reply of a pipeline is its round trip. */
static int get_reply(store_t *s, redisReply **r, int first) {
    double t0 = first ? mono_s() : 0;
    int rc = redisGetReply(s->rc, (void **)r);
    if (first && rc == REDIS_OK) observe(s, mono_s() - t0);
    if (rc == REDIS_OK) s->backoff = 0;
    if (rc == REDIS_OK && s->cl) slots_ok(s->cl, s->node);
    if (rc == REDIS_OK && s->cl && (*r)->type == REDIS_REPLY_ERROR) {
        slots_addr_t to = {{0}, 0};
        int kind = slots_redirect(*r, NULL, &to);
        if (kind != SLOTS_REDIR_NONE) s->redirects[kind - 1]++;
        if (!s->redir) {
            s->redir = kind;
            s->redir_to = to;
        }
    }
    return rc;
}

/* Reply objects in an arena (the reader's privdata): s->ra, freed all at
 * once by the next store_read, or the caller's (store_pipeline_in).
 * hiredis 0.14 builds each reply through the reader's functions; these do
 * what its own do (link a child into its parent array) with memory from
 * the arena.  Such a reply must never reach freeReplyObject. */
static redisReply *ra_reply(const redisReadTask *t) {
    redisReply *r = arena_alloc(t->privdata, sizeof(*r));
    if (!r) return NULL;
    memset(r, 0, sizeof(*r));
    r->type = t->type;
    if (t->parent) {
        redisReply *parent = t->parent->obj;
        parent->element[t->idx] = r;
    }
    return r;
}

static void *ra_string(const redisReadTask *t, char *str, size_t len) {
    char *copy = arena_strndup(t->privdata, str, len);
    if (!copy) return NULL;
    redisReply *r = ra_reply(t);
    if (!r) return NULL;
    r->str = copy;
    r->len = len;
    return r;
}

static void *ra_array(const redisReadTask *t, int elements) {
    redisReply **el = NULL;
    if (elements > 0) {
        el = arena_alloc(t->privdata, (size_t)elements * sizeof(*el));
        if (!el) return NULL;
        memset(el, 0, (size_t)elements * sizeof(*el));
    }
    redisReply *r = ra_reply(t);
    if (!r) return NULL;
    r->elements = elements > 0 ? (size_t)elements : 0;
    r->element = el;
    return r;
}

static void *ra_integer(const redisReadTask *t, long long value) {
    redisReply *r = ra_reply(t);
    if (r) r->integer = value;
    return r;
}

static void *ra_nil(const redisReadTask *t) {
    redisReply *r = ra_reply(t); /* the task's type is the bulk's or array's */
    if (r) r->type = REDIS_REPLY_NIL;
    return r;
}

static void ra_free(void *reply) {
    (void)reply; /* the arena's reset frees it */
}

static redisReplyObjectFunctions ra_fns = {ra_string, ra_array, ra_integer, ra_nil, ra_free};

static void reply_arena_on(store_t *s, arena_t *a) {
    s->ra_saved = s->rc->reader->fn;
    s->rc->reader->fn = &ra_fns;
    s->rc->reader->privdata = a;
    s->ra_on = 1;
}

/* A deep copy of r in a (what ra_fns would have built); NULL when out of
 * memory. */
static redisReply *reply_copy(arena_t *a, const redisReply *r) {
    redisReply *c = arena_alloc(a, sizeof(*c));
    if (!c) return NULL;
    *c = *r;
    if (r->str && !(c->str = arena_strndup(a, r->str, r->len))) return NULL;
    if (r->elements) {
        if (!(c->element = arena_alloc(a, r->elements * sizeof(*c->element)))) return NULL;
        for (size_t i = 0; i < r->elements; i++)
            if (!(c->element[i] = reply_copy(a, r->element[i]))) return NULL;
    }
    return c;
}

/* hiredis keeps a reply it has begun in reader->reply (a read cut off
 * leaves it there, and redisFree frees it with the functions in force):
 * one begun in the arena is forgotten before hiredis' own come back. */
static void reply_arena_off(store_t *s) {
    if (s->ra_on && s->rc) {
        s->rc->reader->reply = NULL;
        s->rc->reader->fn = s->ra_saved;
    }
    s->ra_on = 0;
}

/* Frees a reply read by get_reply: one built in the arena is left to it. */
static void reply_free(store_t *s, redisReply *r) {
    if (!s->ra_on) freeReplyObject(r);
}

/* redisAppendCommandArgv, with the command formatted in one pass straight
 * into the context's output buffer: hiredis 0.14 formats each argument's
 * header with sdscatfmt into a new string and then copies that, which
 * cost more than the rest of a batch's Redis I/O.  argvlen NULL: strlen. */
static char *append_args(char *p, size_t n, const char **argv, const size_t *argvlen) {
    for (size_t i = 0; i < n; i++) {
        size_t len = argvlen ? argvlen[i] : strlen(argv[i]);
        *p++ = '$';
        p += decimal_u64(p, len);
        *p++ = '\r';
        *p++ = '\n';
        memcpy(p, argv[i], len);
        p += len;
        *p++ = '\r';
        *p++ = '\n';
    }
    return p;
}

/* One command of the arguments head[0..nhead) then tail[0..ntail) (an
 * HMGET's key and then its fields, without copying them into one array
 * first). */
static void append_argv2(redisContext *c, size_t nhead, const char **head, const size_t *headlen,
                         size_t ntail, const char **tail, const size_t *taillen) {
    size_t need = 1 + 20 + 2;
    for (size_t i = 0; i < nhead; i++)
        need += 1 + 20 + 2 + (headlen ? headlen[i] : strlen(head[i])) + 2;
    for (size_t i = 0; i < ntail; i++) need += 1 + 20 + 2 + taillen[i] + 2;
    sds ob = need <= INT_MAX ? sdsMakeRoomFor(c->obuf, need) : NULL;
    if (!ob) { /* the write that follows fails with this */
        c->err = REDIS_ERR_OOM;
        snprintf(c->errstr, sizeof(c->errstr), "out of memory for a command of %zu bytes", need);
        return;
    }
    c->obuf = ob;
    char *start = ob + sdslen(ob), *p = start;
    *p++ = '*';
    p += decimal_u64(p, nhead + ntail);
    *p++ = '\r';
    *p++ = '\n';
    p = append_args(p, nhead, head, headlen);
    p = append_args(p, ntail, tail, taillen);
    sdsIncrLen(ob, (int)(p - start));
}

static void append_argv(redisContext *c, int argc, const char **argv, const size_t *argvlen) {
    append_argv2(c, (size_t)argc, argv, argvlen, 0, NULL, NULL);
}

/* Appends a command of head then tail (append_argv2); after an ASK, an
 * ASKING before it. */
static void append2(store_t *s, size_t nhead, const char **head, const size_t *headlen,
                    size_t ntail, const char **tail, const size_t *taillen) {
    if (s->asking) {
        redisAppendCommand(s->rc, "ASKING");
        s->commands++;
    }
    append_argv2(s->rc, nhead, head, headlen, ntail, tail, taillen);
    s->commands++;
}

static void append(store_t *s, int argc, const char **argv, const size_t *argvlen) {
    append2(s, (size_t)argc, argv, argvlen, 0, NULL, NULL);
}

/* HMGET key fields[0..n), or HGETALL key when n is 0. */
static void append_hmget(store_t *s, const char *key, size_t n, const char **fields,
                         const size_t *lens) {
    const char *head[2] = {n ? "HMGET" : "HGETALL", key};
    append2(s, 2, head, NULL, n, fields, lens);
}

/* The reply of a command sent with append: ASKING's +OK is read first. */
static int next_reply(store_t *s, redisReply **r, int first) {
    if (s->asking) {
        if (get_reply(s, r, first) != REDIS_OK) return REDIS_ERR;
        reply_free(s, *r);
        *r = NULL;
        first = 0;
    }
    return get_reply(s, r, first);
}

/* Closes the connection after a failure; the next attempt waits out a
 * backoff of 100 ms doubling to 2 s. */
static void drop(store_t *s) {
    if (s->cl) {
        slots_fail(s->cl, s->node);
        s->rc = NULL;
        return;
    }
    if (s->rc) redisFree(s->rc);
    s->rc = NULL;
    s->backoff = s->backoff ? s->backoff * 2 : 100;
    if (s->backoff > 2000) s->backoff = 2000;
    s->retry_at = mono_ms() + s->backoff;
}

/* Connects when not connected, unless the last failure is too recent. */
static int ensure(store_t *s, char *errstr, size_t errstr_size) {
    store_settle(s);
    if (s->rc) return STORE_OK;
    int64_t wait = s->retry_at - mono_ms();
    if (wait > 0) {
        snprintf(errstr, errstr_size, "redis: unreachable; next try in %" PRId64 " ms", wait);
        return STORE_ERR;
    }
    return store_connect(s, errstr, errstr_size);
}

/* Points rc at the master of key's slot (a cluster), or at the one node:
 * the connection every command of the request goes to. */
static int route(store_t *s, const char *key, char *errstr, size_t errstr_size) {
    char why[512];
    s->redir = 0;
    s->asking = 0;
    if (!s->cl) return ensure(s, errstr, errstr_size);
    (void)slots_refresh_if_stale(s->cl, why, sizeof(why)); /* the map we have may still do */
    int slot = slots_key_slot(key, strlen(key));
    int i = slots_master(s->cl, slot);
    if (i < 0) {
        slots_mark_stale(s->cl);
        snprintf(errstr, errstr_size, "redis cluster: no master serves slot %d of %s yet", slot,
                 key);
        return STORE_ERR;
    }
    s->node = i;
    s->rc = slots_conn(s->cl, i, why, sizeof(why));
    if (!s->rc) {
        snprintf(errstr, errstr_size, "redis cluster: slot %d of %s: %s", slot, key, why);
        return STORE_ERR;
    }
    return STORE_OK;
}

/* After a request failed on a redirection: whether to send it again at
 * once.  MOVED refreshes the map (route then finds the new master) unless
 * `fresh` says it was refreshed after the request was sent; ASK sends it
 * to the node named, ASKING first.  TRYAGAIN and CLUSTERDOWN are for the
 * caller's backoff. */
static int redirected(store_t *s, const char *key, int fresh, char *errstr, size_t errstr_size) {
    char why[512];
    int kind = s->redir;
    if (!s->cl || (kind != SLOTS_REDIR_MOVED && kind != SLOTS_REDIR_ASK)) return 0;
    if (kind == SLOTS_REDIR_MOVED) {
        if (!fresh && slots_refresh(s->cl, why, sizeof(why)) != 0) {
            snprintf(errstr, errstr_size, "redis cluster: %s", why);
            return 0;
        }
        return route(s, key, errstr, errstr_size) == STORE_OK;
    }
    slots_addr_t to = s->redir_to;
    int i = slots_node(s->cl, &to);
    if (i < 0) return 0;
    redisContext *rc = slots_conn(s->cl, i, why, sizeof(why));
    if (!rc) {
        snprintf(errstr, errstr_size, "redis cluster: ASK to %s: %s", slots_name(s->cl, i), why);
        return 0;
    }
    s->node = i;
    s->rc = rc;
    s->redir = 0;
    s->asking = 1;
    return 1;
}

/* Sends argv and reads one reply; drops the connection on I/O errors. */
static redisReply *command(store_t *s, int argc, const char **argv, const size_t *argvlen,
                           char *errstr, size_t errstr_size) {
    redisReply *r;
    store_settle(s);
    if (!s->rc) {
        snprintf(errstr, errstr_size, "redis: not connected");
        return NULL;
    }
    s->commands++;
    double t0 = mono_s();
    r = redisCommandArgv(s->rc, argc, argv, argvlen);
    if (r) {
        observe(s, mono_s() - t0);
        s->backoff = 0;
    }
    if (!r) {
        snprintf(errstr, errstr_size, "redis: %s", s->rc->errstr[0] ? s->rc->errstr : "I/O error");
        drop(s);
    }
    return r;
}

/* A new connection made ready: read timeouts, keepalive, AUTH.  The
 * same for the one node and for every master of a cluster. */
static int setup(void *opaque, redisContext *rc, char *errstr, size_t errstr_size) {
    store_t *s = opaque;
    const config_t *c = s->conf;
    struct timeval tv = {c->redis_timeout_ms / 1000, (c->redis_timeout_ms % 1000) * 1000};
    /* A silent network must not hang the daemon: reads time out, and TCP
     * keepalive notices a dead peer. */
    if (redisSetTimeout(rc, tv) != REDIS_OK ||
        (!(c->redis_unix_socket && !s->cl) && redisEnableKeepAlive(rc) != REDIS_OK)) {
        snprintf(errstr, errstr_size, "cannot set socket options: %s", rc->errstr);
        return -1;
    }
    /* hiredis frees its read buffer whenever it is empty and larger than
     * 16 kB, so every batch's large reply grew it again from nothing, a
     * malloc and realloc of megabytes each time (3 % of the drain's CPU).
     * It is kept instead: at most the largest reply, once. */
    rc->reader->maxbuf = 0;
    if (!c->redis_password) return 0;
    const char *argv[3] = {"AUTH", c->redis_user ? c->redis_user : c->redis_password,
                           c->redis_password};
    redisReply *r = redisCommandArgv(rc, c->redis_user ? 3 : 2, argv, NULL);
    if (!r) {
        snprintf(errstr, errstr_size, "AUTH: %s", rc->errstr[0] ? rc->errstr : "I/O error");
        return -1;
    }
    int rc2 = 0;
    if (r->type == REDIS_REPLY_ERROR) { /* the reply names no secret; pass it on */
        snprintf(errstr, errstr_size, "AUTH refused: %s", r->str);
        s->denied = 1;
        rc2 = -1;
    }
    freeReplyObject(r);
    return rc2;
}

/* A cluster: the slot map, then a connection to every master, so that a
 * wrong password or an unreachable master shows at start. */
static int connect_cluster(store_t *s, char *errstr, size_t errstr_size) {
    char why[1024];
    if (slots_refresh(s->cl, why, sizeof(why)) != 0) {
        snprintf(errstr, errstr_size, "redis.cluster: %s", why);
        if (strstr(why, "NOPERM")) s->denied = 1; /* the ACL withholds CLUSTER SLOTS */
        return STORE_ERR;
    }
    const slots_map_t *m = slots_map(s->cl);
    for (int j = 0; j < m->nmasters; j++) {
        int i = slots_node(s->cl, &m->masters[j]);
        if (i >= 0 && !slots_conn(s->cl, i, why, sizeof(why))) {
            snprintf(errstr, errstr_size, "redis.cluster: master %s: %s", slots_name(s->cl, i),
                     why);
            return STORE_ERR;
        }
    }
    return STORE_OK;
}

/* Also sets s->denied when Redis answered but refused AUTH, SELECT or
 * (a cluster) CLUSTER SLOTS, rather than not answering. */
int store_connect(store_t *s, char *errstr, size_t errstr_size) {
    const config_t *c = s->conf;
    struct timeval tv = {c->redis_timeout_ms / 1000, (c->redis_timeout_ms % 1000) * 1000};
    redisReply *r = NULL;
    char why[512];

    s->denied = 0;
    store_settle(s);
    if (s->cl) return connect_cluster(s, errstr, errstr_size);
    if (s->rc) redisFree(s->rc);
    s->rc = NULL;
    if (c->redis_unix_socket)
        s->rc = redisConnectUnixWithTimeout(c->redis_unix_socket, tv);
    else
        s->rc = redisConnectWithTimeout(c->redis_host, (int)c->redis_port, tv);
    if (!s->rc || s->rc->err) {
        snprintf(errstr, errstr_size, "redis: cannot connect to %s:%d: %s",
                 c->redis_unix_socket ? c->redis_unix_socket : c->redis_host,
                 c->redis_unix_socket ? 0 : (int)c->redis_port,
                 s->rc ? s->rc->errstr : "out of memory");
        drop(s);
        return STORE_ERR;
    }
    if (setup(s, s->rc, why, sizeof(why)) != 0) {
        snprintf(errstr, errstr_size, "redis: %s", why);
        drop(s);
        return STORE_ERR;
    }
    if (c->redis_db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", (int)c->redis_db);
        const char *argv[2] = {"SELECT", db};
        r = command(s, 2, argv, NULL, errstr, errstr_size);
        if (!r) return STORE_ERR;
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(errstr, errstr_size, "redis: SELECT %s refused: %s", db, r->str);
            s->denied = 1;
            freeReplyObject(r);
            drop(s);
            return STORE_ERR;
        }
        freeReplyObject(r);
    }
    return STORE_OK;
}

/* Every command tierd sends to Redis after AUTH and SELECT, each with the
 * key it touches: its meta hash (m), customer states (c), outbox stream
 * (o).  docs/operations.md's ACL rule allows exactly these; store_check
 * queues each in a MULTI that it discards. */
static const struct {
    const char *argv[6];
    int argc;
} needed[] = {
    {{"HMGET", "m", "epoch"}, 3},
    {{"HGETALL", "m"}, 2},
    {{"HSET", "m", "format", "0"}, 4},
    {{"HDEL", "m", "lease"}, 3},
    {{"HINCRBY", "m", "epoch", "0"}, 4},
    {{"HSCAN", "c", "0", "COUNT", "1"}, 5},
    {{"XADD", "o", "*", "t", "x"}, 5},
    {{"XDEL", "o", "0-1"}, 3},
    {{"XRANGE", "o", "-", "+", "COUNT", "1"}, 6},
    {{"XLEN", "o"}, 2},
};
#define NNEEDED (sizeof(needed) / sizeof(needed[0]))

/* And on a cluster: ASKING before a request sent on by ASK, EXISTS after
 * a WATCH fired (did the key leave the node?).  CLUSTER SLOTS has run by
 * then: the map was read. */
static const struct {
    const char *argv[6];
    int argc;
} needed_cluster[] = {
    {{"ASKING"}, 1},
    {{"EXISTS", "m"}, 2},
};
#define NNEEDED_CLUSTER (sizeof(needed_cluster) / sizeof(needed_cluster[0]))

/* Sends n commands (argv lists of up to 6 strings) in one pipeline and
 * reads every reply.  STORE_DENIED at the first error reply (errstr names
 * its command and Redis' reply), after closing the connection: a MULTI
 * left open goes with it. */
static int probe(store_t *s, size_t n, const char *(*argv)[6], const int *argc, char *errstr,
                 size_t errstr_size) {
    redisReply *r = NULL;
    int failed = 0;
    s->redir = 0;
    for (size_t i = 0; i < n; i++) redisAppendCommandArgv(s->rc, argc[i], argv[i], NULL);
    s->commands += n;
    for (size_t i = 0; i < n; i++) {
        if (get_reply(s, &r, i == 0) != REDIS_OK) {
            snprintf(errstr, errstr_size, "redis: %s", s->rc->errstr);
            drop(s);
            return STORE_ERR;
        }
        if (r->type == REDIS_REPLY_ERROR && !failed) {
            failed = 1;
            snprintf(
                errstr, errstr_size,
                "redis: %s%s%s refused: %s (the ACL rule tierd needs is in docs/operations.md)",
                argv[i][0], argc[i] > 1 ? " " : "", argc[i] > 1 ? argv[i][1] : "", r->str);
        }
        freeReplyObject(r);
        r = NULL;
    }
    if (!failed) return STORE_OK;
    drop(s);
    /* A slot migrating or moved under the check is no refusal. */
    return s->redir ? STORE_ERR : STORE_DENIED;
}

/* First WATCH, UNWATCH and an empty MULTI/EXEC; only when those pass,
 * MULTI, the needed commands and DISCARD, on the keys of partition.
 * Nothing runs, yet Redis checks the ACL of each command as it queues it
 * (NOPERM). */
static int check_access(store_t *s, const char *topic, int32_t partition, char *errstr,
                        size_t errstr_size) {
    char keys[3][256];
    const char *argv[NNEEDED + NNEEDED_CLUSTER + 2][6];
    int argc[NNEEDED + NNEEDED_CLUSTER + 2], rc;
    size_t n = 0;
    const char *first[4][6] = {{"WATCH", NULL}, {"UNWATCH"}, {"MULTI"}, {"EXEC"}};
    static const int first_argc[4] = {2, 1, 1, 1};

    store_key(s, topic, partition, "meta", keys[0], sizeof(keys[0]));
    store_key(s, topic, partition, "c", keys[1], sizeof(keys[1]));
    store_key(s, topic, partition, "outbox", keys[2], sizeof(keys[2]));
    memcpy(argv, first, sizeof(first));
    argv[0][1] = keys[0];
    rc = probe(s, 4, argv, first_argc, errstr, errstr_size);
    if (rc != STORE_OK) return rc;
    memset(argv, 0, sizeof(argv));
    argv[n][0] = "MULTI";
    argc[n++] = 1;
    for (size_t i = 0; i < NNEEDED + (s->cl ? NNEEDED_CLUSTER : 0); i++, n++) {
        const char *const *need = i < NNEEDED ? needed[i].argv : needed_cluster[i - NNEEDED].argv;
        memcpy(argv[n], need, sizeof(argv[n]));
        argc[n] = i < NNEEDED ? needed[i].argc : needed_cluster[i - NNEEDED].argc;
        if (argc[n] > 1) argv[n][1] = keys[need[1][0] == 'm' ? 0 : need[1][0] == 'c' ? 1 : 2];
    }
    argv[n][0] = "DISCARD";
    argc[n++] = 1;
    return probe(s, n, argv, argc, errstr, errstr_size);
}

/* A partition of topic whose slot master i serves (-1: none found), so
 * that the check's keys are that master's own: a key of another node's
 * slot is answered MOVED, even inside MULTI. */
static int32_t partition_on(store_t *s, const char *topic, int i) {
    char key[256];
    for (int32_t p = 0; p < 65536; p++) {
        store_key(s, topic, p, "meta", key, sizeof(key));
        if (slots_master(s->cl, slots_key_slot(key, strlen(key))) == i) return p;
    }
    return -1;
}

/* A number or word after "\r\nname:" in an INFO reply, into out. */
static void info_field(const redisReply *r, const char *name, char *out, size_t size) {
    char key[64];
    int n = snprintf(key, sizeof(key), "\n%s:", name);
    const char *at = strstr(r->str, key);
    out[0] = '\0';
    if (!at) return;
    at += n;
    size_t len = strcspn(at, "\r\n");
    snprintf(out, size, "%.*s", (int)(len < size ? len : size - 1), at);
}

/* Whether Redis may evict tierd's keys: a maxmemory with an allkeys-*
 * policy drops any key when memory runs short -- a customer's state, a
 * partition's offset -- and nothing would say so: sums would start over,
 * orders apply twice.  STORE_DENIED then.  A volatile-* policy only
 * evicts keys with an expiry, which tierd's never have.  INFO refused
 * (no +info in the user's ACL): STORE_OK with errstr saying it could not
 * tell, for a warning. */
static int check_eviction(store_t *s, char *errstr, size_t errstr_size) {
    const char *argv[2] = {"INFO", "memory"};
    char max[32], policy[64];
    redisReply *r = NULL;
    append(s, 2, argv, NULL);
    s->commands++;
    if (next_reply(s, &r, 0) != REDIS_OK) {
        snprintf(errstr, errstr_size, "redis: %s", s->rc->errstr);
        drop(s);
        return STORE_ERR;
    }
    int rc = STORE_OK;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(errstr, errstr_size,
                 "redis: INFO refused (%s): cannot tell whether Redis may evict tierd's keys; "
                 "make sure maxmemory-policy is noeviction (docs/operations.md)",
                 r->str);
    } else if (r->type == REDIS_REPLY_STRING) {
        info_field(r, "maxmemory", max, sizeof(max));
        info_field(r, "maxmemory_policy", policy, sizeof(policy));
        if (strtoll(max, NULL, 10) > 0 && strncmp(policy, "allkeys-", 8) == 0) {
            snprintf(errstr, errstr_size,
                     "redis: maxmemory %s bytes with maxmemory-policy %s: Redis may evict "
                     "tierd's state and offsets when memory runs short, and orders would count "
                     "twice; set maxmemory-policy noeviction (docs/operations.md)",
                     max, policy);
            rc = STORE_DENIED;
        }
    }
    reply_free(s, r);
    return rc;
}

int store_check(store_t *s, const char *topic, char *errstr, size_t errstr_size) {
    char why[512];
    int rc = store_connect(s, errstr, errstr_size);
    if (rc != STORE_OK) return s->denied ? STORE_DENIED : rc;
    errstr[0] = '\0';
    if (!s->cl) {
        rc = check_access(s, topic, 0, errstr, errstr_size);
        return rc == STORE_OK ? check_eviction(s, errstr, errstr_size) : rc;
    }
    /* A cluster: ACLs are each node's own, so every master is checked,
     * on the keys of a partition it serves. */
    const slots_map_t *m = slots_map(s->cl);
    for (int j = 0; j < m->nmasters; j++) {
        int i = slots_node(s->cl, &m->masters[j]);
        int32_t p = i < 0 ? -1 : partition_on(s, topic, i);
        if (p < 0) continue;
        s->node = i;
        s->rc = slots_conn(s->cl, i, why, sizeof(why));
        if (!s->rc) {
            snprintf(errstr, errstr_size, "redis.cluster: master %s: %s", slots_name(s->cl, i),
                     why);
            return STORE_ERR;
        }
        rc = check_access(s, topic, p, why, sizeof(why));
        if (rc == STORE_OK) {
            why[0] = '\0';
            rc = check_eviction(s, why, sizeof(why));
            if (rc == STORE_OK && why[0] && !errstr[0])
                snprintf(errstr, errstr_size, "redis.cluster: master %s: %s", slots_name(s->cl, i),
                         why);
        }
        if (rc != STORE_OK) {
            snprintf(errstr, errstr_size, "redis.cluster: master %s: %s", slots_name(s->cl, i),
                     why);
            return rc;
        }
    }
    return STORE_OK;
}

void store_key(const store_t *s, const char *topic, int32_t partition, const char *suffix,
               char *buf, size_t size) {
    snprintf(buf, size, "%s:{%s.%d}:%s", s->conf->key_prefix, s->tag[0] ? s->tag : topic,
             (int)partition, suffix);
}

int64_t store_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A meta field that holds something no tierd writes: noted in m->bad
 * (the first such field only). */
static void meta_bad(store_meta_t *m, const char *field, const redisReply *r) {
    if (!m->bad[0])
        snprintf(m->bad, sizeof(m->bad), "%s \"%.*s\"", field, r->len > 24 ? 24 : (int)r->len,
                 r->str);
}

/* A decimal integer, the whole value: 1, or 0 when absent (*v = dflt);
 * -1 when it does not parse or is below min. */
static int reply_int(const redisReply *r, int64_t dflt, int64_t min, int64_t *v) {
    char *end;
    *v = dflt;
    if (!r || r->type != REDIS_REPLY_STRING) return 0;
    if (r->len == 0 || r->len > 20 || (!isdigit((unsigned char)r->str[0]) && r->str[0] != '-'))
        return -1;
    errno = 0;
    long long x = strtoll(r->str, &end, 10);
    if (errno || end != r->str + r->len || x < min) return -1;
    *v = x;
    return 1;
}

static int64_t meta_int(store_meta_t *m, const redisReply *r, const char *field, int64_t dflt,
                        int64_t min) {
    int64_t v;
    if (reply_int(r, dflt, min, &v) >= 0) return v;
    meta_bad(m, field, r);
    return dflt;
}

/* month, reviewed, rv_month: YYYYMM, or 0 (written as 000000) for none. */
static int32_t meta_month(store_meta_t *m, const redisReply *r, const char *field) {
    int64_t ym;
    int32_t month;
    int rc = reply_int(r, -1, INT32_MIN, &ym);
    if (rc > 0 && ym > 0 && ym <= INT32_MAX && month_from_yyyymm_checked((int)ym, &month) == 0)
        return month;
    if (rc < 0 || ym > 0) meta_bad(m, field, r); /* absent and <= 0 are none */
    return -1;
}

/* prev_fp, prev_pfp: "HASH" (of the record before the offset) or
 * "HASH@AT" (of the record at offset AT: markers follow it, apply_skip). */
static int prev_hash(store_meta_t *m, const redisReply *f, const char *field, uint64_t *fp,
                     int64_t *at) {
    char *end;
    *fp = 0;
    *at = -1;
    if (!f || f->type != REDIS_REPLY_STRING) return 0;
    if (!isdigit((unsigned char)f->str[0])) goto bad;
    errno = 0;
    *fp = strtoull(f->str, &end, 10);
    if (errno) goto bad;
    if (*end == '@') {
        const char *a = end + 1;
        if (!isdigit((unsigned char)*a)) goto bad;
        long long x = strtoll(a, &end, 10);
        if (errno || x < 0) goto bad;
        *at = x;
    }
    if (end == f->str + f->len) return 1;
bad:
    meta_bad(m, field, f);
    *fp = 0;
    *at = -1;
    return 0;
}

#define META_FIELDS "epoch offset month reviewed poffset format rv_month rv_after prev_fp prev_pfp"
#define META_NFIELDS STORE_META_NFIELDS
#define META_FIELD_LIST                                                                            \
    "epoch", "offset", "month", "reviewed", "poffset", "format", "rv_month", "rv_after",           \
        "prev_fp", "prev_pfp" /* the same, as argv */

const char *const store_meta_fields[STORE_META_NFIELDS] = {META_FIELD_LIST};

static void meta_from_reply(const redisReply *r, store_meta_t *m) {
    const redisReply *const *e = (const redisReply *const *)r->element;
    m->bad[0] = '\0';
    m->orphan = 0;
    m->epoch = meta_int(m, e[0], "epoch", 0, 0);
    m->offset = meta_int(m, e[1], "offset", -1, 0);
    m->month = meta_month(m, e[2], "month");
    m->reviewed = meta_month(m, e[3], "reviewed");
    m->poffset = meta_int(m, e[4], "poffset", -1, 0);
    int64_t format = meta_int(m, e[5], "format", 0, 0);
    if (format > INT32_MAX) {
        meta_bad(m, "format", e[5]);
        format = 0;
    }
    m->format = (int32_t)format;
    m->rv_month = meta_month(m, e[6], "rv_month");
    m->rv_after[0] = '\0';
    const redisReply *a = e[7];
    if (a && a->type == REDIS_REPLY_STRING) {
        if (a->len <= ORDER_ID_MAX) {
            memcpy(m->rv_after, a->str, a->len);
            m->rv_after[a->len] = '\0';
        } else {
            meta_bad(m, "rv_after", a); /* longer than any order id */
        }
    }
    m->has_prev_fp = prev_hash(m, e[8], "prev_fp", &m->prev_fp, &m->prev_at);
    m->has_prev_pfp = prev_hash(m, e[9], "prev_pfp", &m->prev_pfp, &m->pprev_at);
}

int store_meta_empty(const store_meta_t *m) {
    return m->format == 0 && m->offset < 0 && m->poffset < 0 && m->reviewed < 0;
}

int store_meta_orphan(store_meta_t *m, const redisReply *scan) {
    m->orphan = 0;
    if (!scan || scan->type != REDIS_REPLY_ARRAY || scan->elements != 2 ||
        scan->element[0]->type != REDIS_REPLY_STRING || scan->element[1]->type != REDIS_REPLY_ARRAY)
        return -1;
    /* A first step that finds a field, or leaves a cursor to go on from. */
    int states = scan->element[1]->elements > 0 || strcmp(scan->element[0]->str, "0") != 0;
    m->orphan = states && !m->bad[0] && store_meta_empty(m);
    return 0;
}

int store_meta_parse(const redisReply *r, store_meta_t *m) {
    int any = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != META_NFIELDS) return -1;
    for (size_t i = 0; i < r->elements; i++) any |= r->element[i]->type == REDIS_REPLY_STRING;
    meta_from_reply(r, m);
    return any;
}

int store_tx_add(store_tx_t *tx, int argc, const char **argv, const size_t *argvlen) {
    if (tx->ncmds == tx->cap) {
        size_t cap = tx->cap ? tx->cap * 2 : 16;
        struct store_cmd *c = realloc(tx->cmds, cap * sizeof(*c));
        if (!c) return -1;
        tx->cmds = c;
        tx->cap = cap;
    }
    struct store_cmd *c = &tx->cmds[tx->ncmds];
    c->argv = malloc((size_t)argc * sizeof(*c->argv));
    c->argvlen = malloc((size_t)argc * sizeof(*c->argvlen));
    if (!c->argv || !c->argvlen) {
        free(c->argv);
        free(c->argvlen);
        return -1;
    }
    memcpy(c->argv, argv, (size_t)argc * sizeof(*argv));
    for (int i = 0; i < argc; i++) c->argvlen[i] = argvlen ? argvlen[i] : strlen(argv[i]);
    c->argc = argc;
    tx->ncmds++;
    return 0;
}

/* Copies a (ptr, len) argument into the tx's own storage. */
static const char *tx_own(store_tx_t *tx, const char *p, size_t len) {
    if (tx->nowned == tx->capowned) {
        size_t cap = tx->capowned ? tx->capowned * 2 : 32;
        char **o = realloc(tx->owned, cap * sizeof(*o));
        if (!o) return NULL;
        tx->owned = o;
        tx->capowned = cap;
    }
    char *c = malloc(len + 1);
    if (!c) return NULL;
    memcpy(c, p, len);
    c[len] = '\0';
    tx->owned[tx->nowned++] = c;
    return c;
}

int store_tx_addv(store_tx_t *tx, int argc, ...) {
    const char *argv[64];
    size_t argvlen[64];
    va_list ap;
    if (argc > 64) return -1;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++) {
        const char *p = va_arg(ap, const char *);
        size_t len = va_arg(ap, size_t);
        argv[i] = tx_own(tx, p, len);
        argvlen[i] = len;
        if (!argv[i]) {
            va_end(ap);
            return -1;
        }
    }
    va_end(ap);
    return store_tx_add(tx, argc, argv, argvlen);
}

int store_tx_add_copy(store_tx_t *tx, int argc, const char *const *argv, const size_t *argvlen) {
    const char **v = malloc((size_t)(argc > 0 ? argc : 1) * sizeof(*v));
    size_t *len = malloc((size_t)(argc > 0 ? argc : 1) * sizeof(*len));
    int rc = -1;
    if (!v || !len) goto out;
    for (int i = 0; i < argc; i++) {
        len[i] = argvlen ? argvlen[i] : strlen(argv[i]);
        if (!(v[i] = tx_own(tx, argv[i], len[i]))) goto out;
    }
    rc = store_tx_add(tx, argc, v, len);
out:
    free(v);
    free(len);
    return rc;
}

void store_tx_free(store_tx_t *tx) {
    if (!tx) return;
    for (size_t i = 0; i < tx->ncmds; i++) {
        free(tx->cmds[i].argv);
        free(tx->cmds[i].argvlen);
    }
    for (size_t i = 0; i < tx->nowned; i++) free(tx->owned[i]);
    free(tx->cmds);
    free(tx->owned);
    memset(tx, 0, sizeof(*tx));
}

/* Appends MULTI, tx's commands and EXEC to the connection's output. */
static void transact_send(store_t *s, const store_tx_t *tx) {
    /* After an ASK: ASKING once, before MULTI; it holds until EXEC. */
    const char *multi[1] = {"MULTI"};
    append(s, 1, multi, NULL);
    for (size_t i = 0; i < tx->ncmds; i++)
        append_argv(s->rc, tx->cmds[i].argc, tx->cmds[i].argv, tx->cmds[i].argvlen);
    redisAppendCommand(s->rc, "EXEC");
    s->commands += tx->ncmds + 1;
}

/* Reads the replies to what transact_send sent for ncmds commands.  Reads
 * every reply, so the connection stays in step even when one fails, and
 * hands back EXEC's (caller frees; nil when a watched key changed).
 * STORE_ERR on an I/O error or a command refused while queueing. */
static int transact_replies(store_t *s, size_t ncmds, const char *what, redisReply **exec,
                            char *errstr, size_t errstr_size) {
    redisReply *r = NULL;
    int failed = 0;

    *exec = NULL;
    ncmds += 2;
    for (size_t i = 0; i < ncmds; i++) {
        if (r) freeReplyObject(r);
        if ((i == 0 ? next_reply(s, &r, 1) : get_reply(s, &r, 0)) != REDIS_OK) {
            snprintf(errstr, errstr_size, "redis: %s", s->rc->errstr);
            drop(s);
            return STORE_ERR;
        }
        if (r->type == REDIS_REPLY_ERROR && !failed) {
            snprintf(errstr, errstr_size, "redis: %s: %s", what, r->str);
            failed = 1;
        }
    }
    if (failed) {
        freeReplyObject(r);
        return STORE_ERR;
    }
    *exec = r;
    return STORE_OK;
}

/* One round trip: MULTI, tx's commands, EXEC (transact_replies). */
static int transact(store_t *s, const store_tx_t *tx, const char *what, redisReply **exec,
                    char *errstr, size_t errstr_size) {
    transact_send(s, tx);
    return transact_replies(s, tx->ncmds, what, exec, errstr, errstr_size);
}

/* After a WATCH fired in a cluster: whether the watched key left this
 * node (a slot migration deletes it here, which fires the WATCH too).
 * The request fails as a retry then, not as a fence: the next read,
 * where the key now lives, judges the epoch. */
static int slot_moved(store_t *s) {
    if (!s->cl || !s->rc || !s->watched[0]) return 0;
    const char *argv[2] = {"EXISTS", s->watched};
    redisReply *r = NULL;
    int moved = 0;
    append(s, 2, argv, NULL);
    if (next_reply(s, &r, 0) != REDIS_OK) {
        drop(s);
        return 1; /* unknown: the retry judges */
    }
    int kind = slots_redirect(r, NULL, NULL);
    moved = kind != SLOTS_REDIR_NONE;
    if (kind == SLOTS_REDIR_MOVED) slots_mark_stale(s->cl);
    freeReplyObject(r);
    return moved;
}

/* What an EXEC reply r says of the transaction: STORE_FENCED when a
 * watched key changed (another owner). */
static int exec_verdict(store_t *s, const redisReply *r, char *errstr, size_t errstr_size) {
    if (r->type == REDIS_REPLY_NIL) { /* a watched key changed: another owner */
        if (!slot_moved(s)) return STORE_FENCED;
        snprintf(errstr, errstr_size,
                 "redis cluster: %s moved to another node during the transaction", s->watched);
        return STORE_ERR;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
        snprintf(errstr, errstr_size, "redis: unexpected EXEC reply");
        return STORE_ERR;
    }
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_ERROR) {
            snprintf(errstr, errstr_size, "redis: transaction: %s", r->element[i]->str);
            return STORE_ERR;
        }
    return STORE_OK;
}

int store_settle(store_t *s) {
    /* Every call that talks to Redis settles first: a read left open in
     * parts is read and dropped before anything else is. */
    if (s->part.open) store_read_abort(s);
    store_settled_fn fn = s->flight.fn;
    void *opaque = s->flight.opaque;
    char err[512] = "";
    redisReply *r = NULL;
    int rc = STORE_ERR;
    if (!fn) return STORE_OK;
    s->flight.fn = NULL;
    if (!s->rc)
        snprintf(err, sizeof(err), "redis: the connection closed before EXEC's reply came");
    else if (transact_replies(s, s->flight.ncmds, "transaction", &r, err, sizeof(err)) == STORE_OK)
        rc = exec_verdict(s, r, err, sizeof(err));
    if (r) freeReplyObject(r);
    fn(opaque, rc, err);
    return rc;
}

int store_exec(store_t *s, const store_tx_t *tx, char *errstr, size_t errstr_size) {
    redisReply *r = NULL;
    int rc;

    store_settle(s);
    if (!s->rc) {
        snprintf(errstr, errstr_size, "redis: not connected");
        return STORE_ERR;
    }
    s->redir = 0;
    if (transact(s, tx, "transaction", &r, errstr, errstr_size) != STORE_OK) {
        if (s->cl && s->redir == SLOTS_REDIR_MOVED) slots_mark_stale(s->cl);
        return STORE_ERR;
    }
    rc = exec_verdict(s, r, errstr, errstr_size);
    freeReplyObject(r);
    return rc;
}

/* Writes out everything appended, now; on failure the connection is
 * dropped and errstr says why. */
static int write_out(store_t *s, char *errstr, size_t errstr_size) {
    for (int done = 0; !done;)
        if (redisBufferWrite(s->rc, &done) != REDIS_OK) {
            snprintf(errstr, errstr_size, "redis: %s", s->rc->errstr);
            drop(s);
            return STORE_ERR;
        }
    return STORE_OK;
}

int store_exec_send(store_t *s, const store_tx_t *tx, store_settled_fn fn, void *opaque,
                    char *errstr, size_t errstr_size) {
    if (s->cl) return store_exec(s, tx, errstr, errstr_size);
    store_settle(s);
    if (!s->rc) {
        snprintf(errstr, errstr_size, "redis: not connected");
        return STORE_ERR;
    }
    transact_send(s, tx);
    /* Written out whole now, so Redis works on it while we go on; a
     * transaction cut short never runs (Redis drops a MULTI whose
     * connection closes). */
    if (write_out(s, errstr, errstr_size) != STORE_OK) return STORE_ERR;
    s->flight.fn = fn;
    s->flight.opaque = opaque;
    s->flight.ncmds = tx->ncmds;
    return STORE_PENDING;
}

/* An error reply made here, for a command that could not be sent: the
 * caller reads it as Redis's refusal of that one command. */
static redisReply *error_reply(const char *fmt, ...) {
    char text[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text + 1, sizeof(text) - 3, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n > sizeof(text) - 4) n = (int)sizeof(text) - 4;
    text[0] = '-';
    for (int i = 1; i <= n; i++)
        if (text[i] == '\r' || text[i] == '\n') text[i] = ' ';
    memcpy(text + 1 + n, "\r\n", 3);
    redisReader *rd = redisReaderCreate();
    void *r = NULL;
    if (rd && redisReaderFeed(rd, text, (size_t)n + 3) == REDIS_OK)
        (void)redisReaderGetReply(rd, &r);
    if (rd) redisReaderFree(rd);
    return r;
}

/* One command alone on a cluster, following MOVED and ASK (three hops at
 * most).  NULL with errstr when its node cannot be reached. */
static redisReply *single(store_t *s, const struct store_cmd *c, char *errstr, size_t errstr_size) {
    char key[512];
    snprintf(key, sizeof(key), "%.*s", (int)c->argvlen[1], c->argv[1]);
    if (route(s, key, errstr, errstr_size) != STORE_OK) return NULL;
    for (int hop = 0;; hop++) {
        redisReply *r = NULL;
        append(s, c->argc, c->argv, c->argvlen);
        if (next_reply(s, &r, 1) != REDIS_OK) {
            snprintf(errstr, errstr_size, "redis: %s", s->rc->errstr);
            drop(s);
            return NULL;
        }
        if (hop == 2 || !s->redir || !redirected(s, key, 0, errstr, errstr_size)) return r;
        freeReplyObject(r);
    }
}

/* store_pipeline on a cluster: the commands grouped by the master of
 * their key's slot (argv[1]), each group pipelined to its master, all
 * sent before any reply is read; a redirected command is sent again
 * alone.  A command whose master cannot be reached gets an error reply;
 * STORE_ERR only when none could be sent. */
static int pipeline_cluster(store_t *s, const store_tx_t *tx, redisReply **replies, char *errstr,
                            size_t errstr_size) {
    char why[512];
    int *node = malloc((tx->ncmds + 1) * sizeof(*node));
    int sent = 0;
    if (!node) {
        snprintf(errstr, errstr_size, "out of memory");
        return STORE_ERR;
    }
    (void)slots_refresh_if_stale(s->cl, why, sizeof(why));
    int nm = slots_nmasters(s->cl);
    for (size_t i = 0; i < tx->ncmds; i++) {
        const struct store_cmd *c = &tx->cmds[i];
        int slot = c->argc < 2 ? -1 : slots_key_slot(c->argv[1], c->argvlen[1]);
        node[i] = slot < 0 ? -1 : slots_master(s->cl, slot);
        if (c->argc < 2)
            replies[i] = error_reply("ERR %s has no key to route by", c->argv[0]);
        else if (node[i] < 0)
            replies[i] = error_reply("CLUSTERDOWN no master serves slot %d", slot);
    }
    for (int n = 0; n < nm; n++) {
        redisContext *rc = NULL;
        for (size_t i = 0; i < tx->ncmds; i++) {
            if (node[i] != n) continue;
            if (!rc && !(rc = slots_conn(s->cl, n, why, sizeof(why)))) break;
            append_argv(rc, tx->cmds[i].argc, tx->cmds[i].argv, tx->cmds[i].argvlen);
            s->commands++;
        }
        for (size_t i = 0; !rc && i < tx->ncmds; i++)
            if (node[i] == n) {
                replies[i] = error_reply("TIERDDOWN %s", why);
                node[i] = -1;
            }
    }
    for (int n = 0; n < nm; n++) {
        int first = 1, failed = 0;
        s->node = n;
        s->asking = 0;
        s->rc = NULL;
        for (size_t i = 0; i < tx->ncmds; i++) {
            if (node[i] != n) continue;
            if (!s->rc) s->rc = slots_conn(s->cl, n, why, sizeof(why));
            if (!failed && get_reply(s, &replies[i], first) != REDIS_OK) {
                snprintf(why, sizeof(why), "%s", s->rc->errstr);
                drop(s);
                failed = 1;
            }
            first = 0;
            if (failed)
                replies[i] = error_reply("TIERDDOWN %s", why);
            else
                sent = 1;
        }
    }
    /* After a reshard many commands may come back MOVED: the map is read
     * again once, at the first, and serves the others. */
    int fresh = 0;
    for (size_t i = 0; i < tx->ncmds; i++) {
        int kind = slots_redirect(replies[i], NULL, NULL);
        if (kind != SLOTS_REDIR_MOVED && kind != SLOTS_REDIR_ASK) continue;
        if (kind == SLOTS_REDIR_MOVED && !fresh) slots_mark_stale(s->cl);
        s->redir = kind;
        (void)slots_redirect(replies[i], NULL, &s->redir_to);
        char key[512];
        snprintf(key, sizeof(key), "%.*s", (int)tx->cmds[i].argvlen[1], tx->cmds[i].argv[1]);
        redisReply *r = NULL;
        int again = redirected(s, key, fresh, why, sizeof(why));
        if (kind == SLOTS_REDIR_MOVED && again) fresh = 1;
        if (again) {
            append(s, tx->cmds[i].argc, tx->cmds[i].argv, tx->cmds[i].argvlen);
            if (next_reply(s, &r, 1) != REDIS_OK) {
                drop(s);
                r = NULL;
            }
            if (r && slots_redirect(r, NULL, NULL) != SLOTS_REDIR_NONE) {
                freeReplyObject(r);
                r = single(s, &tx->cmds[i], why, sizeof(why));
            }
        }
        if (r) {
            freeReplyObject(replies[i]);
            replies[i] = r;
        }
        s->asking = 0;
    }
    free(node);
    int ok = 1;
    for (size_t i = 0; i < tx->ncmds; i++) ok &= replies[i] != NULL;
    if (ok && (sent || tx->ncmds == 0)) return STORE_OK;
    snprintf(errstr, errstr_size, "redis cluster: %s", ok ? why : "out of memory");
    for (size_t i = 0; i < tx->ncmds; i++) {
        if (replies[i]) freeReplyObject(replies[i]);
        replies[i] = NULL;
    }
    return STORE_ERR;
}

/* One Redis: tx's commands into the output buffer (sent by the first
 * read, or by store_pipeline_send). */
static int append_all(store_t *s, const store_tx_t *tx, char *errstr, size_t errstr_size) {
    if (ensure(s, errstr, errstr_size) != STORE_OK) return STORE_ERR;
    for (size_t i = 0; i < tx->ncmds; i++)
        append_argv(s->rc, tx->cmds[i].argc, tx->cmds[i].argv, tx->cmds[i].argvlen);
    s->commands += tx->ncmds;
    return STORE_OK;
}

/* One Redis: the next n replies; the first is the round trip when rtt is
 * set.  On a failure none is kept and the connection is dropped. */
static int next_replies(store_t *s, size_t n, redisReply **replies, int rtt, char *errstr,
                        size_t errstr_size) {
    for (size_t i = 0; i < n; i++) {
        if (get_reply(s, &replies[i], rtt && i == 0) != REDIS_OK) {
            snprintf(errstr, errstr_size, "redis: %s", s->rc->errstr);
            for (size_t j = 0; j < i; j++) {
                reply_free(s, replies[j]);
                replies[j] = NULL;
            }
            replies[i] = NULL;
            reply_arena_off(s); /* before drop: the reader's half-read reply is the arena's */
            drop(s);
            return STORE_ERR;
        }
    }
    return STORE_OK;
}

/* store_pipeline, its replies in a when a is not NULL. */
static int pipeline(store_t *s, const store_tx_t *tx, redisReply **replies, arena_t *a,
                    char *errstr, size_t errstr_size) {
    for (size_t i = 0; i < tx->ncmds; i++) replies[i] = NULL;
    if (s->cl) {
        int rc = pipeline_cluster(s, tx, replies, errstr, errstr_size), copied = 1;
        if (!a) return rc;
        for (size_t i = 0; i < tx->ncmds; i++) { /* from hiredis' objects into a */
            redisReply *own = replies[i];
            replies[i] = rc == STORE_OK && own && copied ? reply_copy(a, own) : NULL;
            copied = copied && (replies[i] || !own);
            if (own) freeReplyObject(own);
        }
        if (rc == STORE_OK && !copied) {
            for (size_t i = 0; i < tx->ncmds; i++) replies[i] = NULL;
            snprintf(errstr, errstr_size, "out of memory");
            rc = STORE_ERR;
        }
        return rc;
    }
    if (append_all(s, tx, errstr, errstr_size) != STORE_OK) return STORE_ERR;
    if (a) reply_arena_on(s, a);
    int rc = next_replies(s, tx->ncmds, replies, 1, errstr, errstr_size);
    reply_arena_off(s);
    return rc;
}

int store_pipeline(store_t *s, const store_tx_t *tx, redisReply **replies, char *errstr,
                   size_t errstr_size) {
    return pipeline(s, tx, replies, NULL, errstr, errstr_size);
}

int store_pipeline_in(store_t *s, const store_tx_t *tx, redisReply **replies, arena_t *a,
                      char *errstr, size_t errstr_size) {
    return pipeline(s, tx, replies, a, errstr, errstr_size);
}

int store_pipeline_send(store_t *s, const store_tx_t *tx, char *errstr, size_t errstr_size) {
    int done = 0;
    if (s->cl) {
        snprintf(errstr, errstr_size, "redis cluster: a pipeline in halves needs one node");
        return STORE_ERR;
    }
    if (append_all(s, tx, errstr, errstr_size) != STORE_OK) return STORE_ERR;
    /* Written now, so Redis works on it while the caller reads. */
    while (!done)
        if (redisBufferWrite(s->rc, &done) != REDIS_OK) {
            snprintf(errstr, errstr_size, "redis: %s", s->rc->errstr);
            drop(s);
            return STORE_ERR;
        }
    return STORE_OK;
}

int store_pipeline_recv(store_t *s, size_t n, redisReply **replies, char *errstr,
                        size_t errstr_size) {
    for (size_t i = 0; i < n; i++) replies[i] = NULL;
    if (s->cl || !s->rc) {
        snprintf(errstr, errstr_size, "redis: no pipeline was sent");
        return STORE_ERR;
    }
    return next_replies(s, n, replies, 0, errstr, errstr_size);
}

int store_claim(store_t *s, const char *topic, int32_t partition, const char *owner,
                store_meta_t *out, char *errstr, size_t errstr_size) {
    char key[256], ckey[256], lease[32], what[300];
    redisReply *r = NULL;
    store_tx_t tx = {0};
    int rc = STORE_ERR;

    store_key(s, topic, partition, "meta", key, sizeof(key));
    store_key(s, topic, partition, "c", ckey, sizeof(ckey));
    if (route(s, key, errstr, errstr_size) != STORE_OK) return STORE_ERR;
    snprintf(lease, sizeof(lease), "%" PRId64, store_now_ms() + STORE_LEASE_MS);
    snprintf(what, sizeof(what), "claim of %s", key);
    const char *hmget[2 + META_NFIELDS] = {"HMGET", key, META_FIELD_LIST};
    if (store_tx_addv(&tx, 4, "HINCRBY", (size_t)7, key, strlen(key), "epoch", (size_t)5, "1",
                      (size_t)1) != 0 ||
        store_tx_addv(&tx, 6, "HSET", (size_t)4, key, strlen(key), "owner", (size_t)5, owner,
                      strlen(owner), "lease", (size_t)5, lease, strlen(lease)) != 0 ||
        store_tx_add(&tx, 2 + META_NFIELDS, hmget, NULL) != 0 ||
        store_tx_addv(&tx, 5, "HSCAN", (size_t)5, ckey, strlen(ckey), "0", (size_t)1, "COUNT",
                      (size_t)5, "1", (size_t)1) != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        goto out;
    }
    for (int hop = 0; transact(s, &tx, what, &r, errstr, errstr_size) != STORE_OK; hop++)
        if (hop == 2 || !redirected(s, key, 0, errstr, errstr_size)) goto out;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 ||
        store_meta_parse(r->element[2], out) < 0 || store_meta_orphan(out, r->element[3]) < 0) {
        snprintf(errstr, errstr_size, "redis: %s: unexpected reply", what);
        goto out;
    }
    rc = STORE_OK;
out:
    if (r) freeReplyObject(r);
    store_tx_free(&tx);
    return rc;
}

int store_lease(store_t *s, const char *topic, int32_t partition, int64_t epoch, int64_t until_ms,
                store_meta_t *out, char *errstr, size_t errstr_size) {
    char key[256], until[32];
    store_meta_t now;
    store_tx_t tx = {0};
    int rc;

    if (store_read(s, topic, partition, &now, 0, NULL, NULL, NULL, NULL, NULL, errstr,
                   errstr_size) != STORE_OK)
        return STORE_ERR;
    if (out) *out = now;
    if (now.epoch != epoch) {
        store_unwatch(s);
        snprintf(errstr, errstr_size, "%s [%d]: epoch is %" PRId64 ", ours %" PRId64, topic,
                 (int)partition, now.epoch, epoch);
        return STORE_FENCED;
    }
    store_key(s, topic, partition, "meta", key, sizeof(key));
    snprintf(until, sizeof(until), "%" PRId64, until_ms);
    rc = until_ms > 0
             ? store_tx_addv(&tx, 4, "HSET", (size_t)4, key, strlen(key), "lease", (size_t)5, until,
                             strlen(until))
             : store_tx_addv(&tx, 3, "HDEL", (size_t)4, key, strlen(key), "lease", (size_t)5);
    if (rc != 0) {
        store_unwatch(s);
        store_tx_free(&tx);
        snprintf(errstr, errstr_size, "out of memory");
        return STORE_ERR;
    }
    rc = store_exec(s, &tx, errstr, errstr_size);
    store_tx_free(&tx);
    return rc;
}

int store_unwatch(store_t *s) {
    char err[256];
    const char *argv[1] = {"UNWATCH"};
    if (!s->rc) return STORE_ERR;
    redisReply *r = command(s, 1, argv, NULL, err, sizeof(err));
    if (!r) return STORE_ERR;
    freeReplyObject(r);
    return STORE_OK;
}

/* Reads store_read's nkeys + 2 replies: WATCH, HMGET meta, then one per
 * key into replies[].  A Redis error drains the rest before failing. */
static int read_replies(store_t *s, store_meta_t *meta, size_t nkeys, redisReply **replies,
                        char *errstr, size_t errstr_size) {
    int failed = 0;
    for (size_t i = 0; i < nkeys + 2; i++) {
        redisReply *r = NULL;
        if (i == 2)
            reply_arena_on(s, &s->ra); /* the keys' replies, up to the whole batch's state */
        if (next_reply(s, &r, i == 0) != REDIS_OK) {
            snprintf(errstr, errstr_size, "redis: %s", s->rc->errstr);
            reply_arena_off(s); /* before drop: the reader's half-read reply is the arena's */
            drop(s);
            return STORE_ERR;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            if (!failed) snprintf(errstr, errstr_size, "redis: read: %s", r->str);
            failed = 1;
            reply_free(s, r);
            continue; /* drain the rest, fail below */
        }
        if (i == 1) {
            if (r->type != REDIS_REPLY_ARRAY || r->elements != META_NFIELDS) {
                snprintf(errstr, errstr_size, "redis: unexpected reply to HMGET meta");
                failed = 1;
            } else {
                meta_from_reply(r, meta);
            }
        }
        if (i >= 2)
            replies[i - 2] = r;
        else
            freeReplyObject(r);
    }
    reply_arena_off(s);
    if (!failed) return STORE_OK;
    store_unwatch(s);
    return STORE_ERR;
}

/* WATCH meta and HMGET meta: the head of every watched read. */
static void append_watch(store_t *s, const char *mkey) {
    const char *watch[2] = {"WATCH", mkey};
    const char *hmget[2 + META_NFIELDS] = {"HMGET", mkey, META_FIELD_LIST};
    append(s, 2, watch, NULL);
    append(s, 2 + META_NFIELDS, hmget, NULL);
}

/* Writes out what is appended, behind the transaction in the air, whose
 * reply is read (and handed to its fn, a lost reply included) first;
 * STORE_ERR, errstr saying why, when the connection is gone by then. */
static int out_behind_flight(store_t *s, char *errstr, size_t errstr_size) {
    int failed = s->rc && write_out(s, errstr, errstr_size) != STORE_OK; /* errstr set */
    store_settle(s);
    if (s->rc) return STORE_OK;
    if (!failed) snprintf(errstr, errstr_size, "redis: the connection closed");
    return STORE_ERR;
}

/* store_read's request, sent to rc as route or a redirection set it. */
static int read_once(store_t *s, const char *mkey, store_meta_t *meta, size_t nkeys, char **keys,
                     const char ***fields, size_t **fieldlens, size_t *nfields,
                     redisReply **replies, char *errstr, size_t errstr_size) {
    int rc = STORE_ERR;

    for (size_t i = 0; i < nkeys; i++) replies[i] = NULL;
    arena_reset(&s->ra); /* the previous store_read's replies */
    append_watch(s, mkey);
    for (size_t i = 0; i < nkeys; i++)
        append_hmget(s, keys[i], nfields[i], fields[i], fieldlens[i]);
    /* A transaction in the air (store_exec_send) went first: this request
     * follows it at once, so Redis goes from the one to the other without
     * waiting for us. */
    if (s->flight.fn && out_behind_flight(s, errstr, errstr_size) != STORE_OK) goto out;
    rc = read_replies(s, meta, nkeys, replies, errstr, errstr_size);
out:
    if (rc != STORE_OK) /* in the arena: nothing to free */
        for (size_t i = 0; i < nkeys; i++) replies[i] = NULL;
    return rc;
}

int store_read(store_t *s, const char *topic, int32_t partition, store_meta_t *meta, size_t nkeys,
               char **keys, const char ***fields, size_t **fieldlens, size_t *nfields,
               redisReply **replies, char *errstr, size_t errstr_size) {
    char mkey[256];
    for (size_t i = 0; i < nkeys; i++) replies[i] = NULL;
    if (s->part.open) store_read_abort(s);
    store_key(s, topic, partition, "meta", mkey, sizeof(mkey));
    snprintf(s->watched, sizeof(s->watched), "%s", mkey);
    if (!s->cl && s->rc && s->flight.fn) {
        s->redir = 0; /* one node, connected: the read follows the transaction in the air */
        s->asking = 0;
    } else if (route(s, mkey, errstr, errstr_size) != STORE_OK) {
        return STORE_ERR;
    }
    for (int hop = 0;; hop++) {
        int rc = read_once(s, mkey, meta, nkeys, keys, fields, fieldlens, nfields, replies, errstr,
                           errstr_size);
        if (rc == STORE_OK || hop == 2 || !s->redir || !redirected(s, mkey, 0, errstr, errstr_size))
            return rc;
    }
}

int store_read_open(store_t *s, const char *topic, int32_t partition, char *errstr,
                    size_t errstr_size) {
    char mkey[256];
    if (s->cl) {
        snprintf(errstr, errstr_size, "a cluster's reads go in one piece");
        return STORE_ERR;
    }
    /* Connected with a transaction in the air: behind it (store_read). */
    if (!(s->rc && s->flight.fn) && ensure(s, errstr, errstr_size) != STORE_OK) return STORE_ERR;
    store_key(s, topic, partition, "meta", mkey, sizeof(mkey));
    snprintf(s->watched, sizeof(s->watched), "%s", mkey);
    s->redir = 0;
    s->asking = 0;
    arena_reset(&s->ra); /* the previous read's replies */
    append_watch(s, mkey);
    s->part.open = 1;
    s->part.refused = 0;
    s->part.nkeys = 0;
    s->part.nparts = 0;
    return STORE_OK;
}

int store_read_part(store_t *s, size_t nkeys, char *const *keys, const char **const *fields,
                    size_t *const *fieldlens, const size_t *nfields) {
    char why[256];
    if (!s->part.open || !s->rc) return STORE_ERR; /* dropped: close says so */
    int bad =
        nkeys == 0 || nkeys > STORE_READ_KEYS_MAX || (s->part.nparts && nkeys != s->part.nkeys);
    for (size_t i = 0; !bad && i < nkeys; i++) bad = nfields[i] == 0;
    if (bad) { /* the caller's replies would not be what it asked for */
        s->part.refused = 1;
        return STORE_ERR;
    }
    for (size_t i = 0; i < nkeys; i++)
        append_hmget(s, keys[i], nfields[i], fields[i], fieldlens[i]);
    s->part.nkeys = nkeys;
    s->part.nparts++;
    /* Out now: Redis reads these while the caller goes on. */
    return write_out(s, why, sizeof(why));
}

/* The parts' replies to each key as one array, in the arena. */
static int merge_parts(store_t *s, redisReply **parts, size_t nkeys, size_t nparts,
                       redisReply **replies, char *errstr, size_t errstr_size) {
    for (size_t i = 0; i < nkeys; i++) {
        size_t n = 0;
        for (size_t j = 0; j < nparts; j++) {
            const redisReply *r = parts[j * nkeys + i];
            if (r->type != REDIS_REPLY_ARRAY) {
                snprintf(errstr, errstr_size, "redis: unexpected reply to HMGET");
                return STORE_ERR;
            }
            n += r->elements;
        }
        redisReply *m = arena_alloc(&s->ra, sizeof(*m));
        redisReply **el = arena_alloc(&s->ra, (n ? n : 1) * sizeof(*el));
        if (!m || !el) {
            snprintf(errstr, errstr_size, "out of memory");
            return STORE_ERR;
        }
        memset(m, 0, sizeof(*m));
        m->type = REDIS_REPLY_ARRAY;
        m->elements = n;
        m->element = el;
        for (size_t j = 0; j < nparts; j++) {
            const redisReply *r = parts[j * nkeys + i];
            if (r->elements) memcpy(el, r->element, r->elements * sizeof(*el));
            el += r->elements;
        }
        replies[i] = m;
    }
    return STORE_OK;
}

int store_read_close(store_t *s, store_meta_t *meta, size_t *nkeys, redisReply **replies,
                     char *errstr, size_t errstr_size) {
    const size_t nk = s->part.nkeys, np = s->part.nparts;
    redisReply **parts = NULL;
    *nkeys = 0;
    if (!s->part.open) {
        snprintf(errstr, errstr_size, "no read is open");
        return STORE_ERR;
    }
    s->part.open = 0;
    for (size_t i = 0; i < STORE_READ_KEYS_MAX; i++) replies[i] = NULL;
    /* A part that could not be written dropped the connection. */
    if (out_behind_flight(s, errstr, errstr_size) != STORE_OK) return STORE_ERR;
    if (np && !(parts = arena_alloc(&s->ra, np * nk * sizeof(*parts)))) {
        snprintf(errstr, errstr_size, "out of memory");
        drop(s); /* its replies unread: the connection is out of step */
        return STORE_ERR;
    }
    if (read_replies(s, meta, np * nk, parts, errstr, errstr_size) != STORE_OK) return STORE_ERR;
    if (s->part.refused) {
        snprintf(errstr, errstr_size, "a part of the read was refused: no key, or no field");
        store_unwatch(s);
        return STORE_ERR;
    }
    if (merge_parts(s, parts, nk, np, replies, errstr, errstr_size) != STORE_OK) {
        store_unwatch(s);
        return STORE_ERR;
    }
    *nkeys = np ? nk : 0;
    return STORE_OK;
}

void store_read_abort(store_t *s) {
    store_meta_t m;
    redisReply *r[STORE_READ_KEYS_MAX];
    size_t n;
    char why[512];
    if (s->part.open && store_read_close(s, &m, &n, r, why, sizeof(why)) == STORE_OK)
        store_unwatch(s);
}

/* SCAN on the connection rc points at, every key to fn. */
static int scan_node(store_t *s, const char *pattern, store_scan_fn fn, void *opaque, char *errstr,
                     size_t errstr_size) {
    char cursor[32] = "0";
    do {
        const char *argv[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
        redisReply *r = command(s, 6, argv, NULL, errstr, errstr_size);
        if (!r) return STORE_ERR;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            snprintf(errstr, errstr_size, "redis: SCAN: %s",
                     r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
            freeReplyObject(r);
            return STORE_ERR;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        int rc = 0;
        for (size_t i = 0; rc == 0 && i < r->element[1]->elements; i++) {
            const redisReply *k = r->element[1]->element[i];
            if (k->type == REDIS_REPLY_STRING) rc = fn(opaque, k->str, k->len);
        }
        freeReplyObject(r);
        if (rc != 0) {
            snprintf(errstr, errstr_size, "stopped while listing keys");
            return STORE_ERR;
        }
    } while (strcmp(cursor, "0") != 0);
    return STORE_OK;
}

int store_scan(store_t *s, const char *pattern, store_scan_fn fn, void *opaque, char *errstr,
               size_t errstr_size) {
    char why[512];
    if (!s->cl) {
        if (ensure(s, errstr, errstr_size) != STORE_OK) return STORE_ERR;
        return scan_node(s, pattern, fn, opaque, errstr, errstr_size);
    }
    (void)slots_refresh_if_stale(s->cl, why, sizeof(why));
    const slots_map_t *m = slots_map(s->cl);
    for (int j = 0; j < m->nmasters; j++) {
        int i = slots_node(s->cl, &m->masters[j]);
        if (i < 0) continue;
        s->node = i;
        s->asking = 0;
        if (!(s->rc = slots_conn(s->cl, i, why, sizeof(why)))) {
            snprintf(errstr, errstr_size, "redis cluster: %s", why);
            return STORE_ERR;
        }
        if (scan_node(s, pattern, fn, opaque, errstr, errstr_size) != STORE_OK) return STORE_ERR;
    }
    return STORE_OK;
}
