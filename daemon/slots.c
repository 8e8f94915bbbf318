/*
 * slots.c -- see slots.h.
 */
#include "slots.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint16_t slots_crc16(const char *buf, size_t len) {
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint8_t)buf[i] << 8);
        for (int b = 0; b < 8; b++) crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

int slots_key_slot(const char *key, size_t len) {
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t from = (size_t)(open - key) + 1;
        const char *close = memchr(open + 1, '}', len - from);
        if (close && close > open + 1) /* "{}" is no tag: the whole key counts */
            return slots_crc16(open + 1, (size_t)(close - open - 1)) % SLOTS_N;
    }
    return slots_crc16(key, len) % SLOTS_N;
}

int slots_addr_parse(const char *s, size_t len, slots_addr_t *a) {
    const char *colon = NULL;
    for (size_t i = len; i > 0; i--)
        if (s[i - 1] == ':') {
            colon = s + i - 1;
            break;
        }
    if (!colon || colon == s) return -1;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (h[0] == '[') { /* [v6]:port */
        if (hl < 3 || h[hl - 1] != ']') return -1;
        h++;
        hl -= 2;
    }
    if (hl >= sizeof(a->host)) return -1;
    long port = 0;
    const char *p = colon + 1, *end = s + len;
    if (p == end || end - p > 5) return -1;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9') return -1;
        port = port * 10 + (*p - '0');
    }
    if (port < 1 || port > 65535) return -1;
    memcpy(a->host, h, hl);
    a->host[hl] = '\0';
    a->port = (int)port;
    return 0;
}

/* A node in a CLUSTER SLOTS range: [host, port, id, ...]. */
static int node_addr(const redisReply *n, slots_addr_t *a) {
    if (n->type != REDIS_REPLY_ARRAY || n->elements < 2 ||
        n->element[0]->type != REDIS_REPLY_STRING || n->element[1]->type != REDIS_REPLY_INTEGER ||
        n->element[0]->len >= sizeof(a->host) || n->element[1]->integer < 1 ||
        n->element[1]->integer > 65535)
        return -1;
    memcpy(a->host, n->element[0]->str, n->element[0]->len);
    a->host[n->element[0]->len] = '\0';
    a->port = (int)n->element[1]->integer;
    return 0;
}

static int addr_index(slots_addr_t *v, int *n, const slots_addr_t *a) {
    for (int i = 0; i < *n; i++)
        if (v[i].port == a->port && strcmp(v[i].host, a->host) == 0) return i;
    if (*n == SLOTS_NODES_MAX) return -1;
    v[*n] = *a;
    return (*n)++;
}

int slots_map_parse(const redisReply *r, slots_map_t *m, char *errstr, size_t errstr_size) {
    memset(m, 0, sizeof(*m));
    for (int i = 0; i < SLOTS_N; i++) m->owner[i] = -1;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(errstr, errstr_size, "CLUSTER SLOTS refused: %s", r->str);
        return -1;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
        snprintf(errstr, errstr_size, "CLUSTER SLOTS: unexpected reply");
        return -1;
    }
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        slots_addr_t a;
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER || node_addr(e->element[2], &a) != 0) {
            snprintf(errstr, errstr_size, "CLUSTER SLOTS: range %zu is malformed", i);
            return -1;
        }
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        if (lo < 0 || hi >= SLOTS_N || lo > hi) {
            snprintf(errstr, errstr_size, "CLUSTER SLOTS: range %lld-%lld is out of bounds", lo,
                     hi);
            return -1;
        }
        int mi = addr_index(m->masters, &m->nmasters, &a);
        if (mi < 0) {
            snprintf(errstr, errstr_size, "CLUSTER SLOTS: more than %d masters", SLOTS_NODES_MAX);
            return -1;
        }
        for (long long s = lo; s <= hi; s++) {
            if (m->owner[s] < 0) m->covered++;
            m->owner[s] = (int16_t)mi;
        }
        for (size_t j = 3; j < e->elements; j++)
            if (node_addr(e->element[j], &a) == 0)
                (void)addr_index(m->replicas, &m->nreplicas, &a); /* a full list: skip */
    }
    return 0;
}

static int has_prefix(const char *s, size_t len, const char *p) {
    size_t n = strlen(p);
    return len >= n && memcmp(s, p, n) == 0 && (len == n || s[n] == ' ');
}

int slots_redirect(const redisReply *r, int *slot, slots_addr_t *to) {
    if (!r || r->type != REDIS_REPLY_ERROR) return SLOTS_REDIR_NONE;
    int kind = has_prefix(r->str, r->len, "MOVED") ? SLOTS_REDIR_MOVED
               : has_prefix(r->str, r->len, "ASK") ? SLOTS_REDIR_ASK
               : has_prefix(r->str, r->len, "TRYAGAIN") || has_prefix(r->str, r->len, "LOADING") ||
                       has_prefix(r->str, r->len, "MASTERDOWN")
                   ? SLOTS_REDIR_TRYAGAIN
               : has_prefix(r->str, r->len, "CLUSTERDOWN") ? SLOTS_REDIR_CLUSTERDOWN
                                                           : SLOTS_REDIR_NONE;
    if (kind != SLOTS_REDIR_MOVED && kind != SLOTS_REDIR_ASK) return kind;
    /* "MOVED 3999 127.0.0.1:6381" */
    const char *p = memchr(r->str, ' ', r->len);
    const char *end = r->str + r->len;
    long s = 0;
    if (!p) return SLOTS_REDIR_NONE;
    for (p++; p < end && *p >= '0' && *p <= '9'; p++) s = s * 10 + (*p - '0');
    if (p == end || *p != ' ' || s >= SLOTS_N) return SLOTS_REDIR_NONE;
    slots_addr_t a;
    if (slots_addr_parse(p + 1, (size_t)(end - p - 1), &a) != 0) return SLOTS_REDIR_NONE;
    if (slot) *slot = (int)s;
    if (to) *to = a;
    return kind;
}

/* ------------------------------------------------------------------ */
/* connections                                                         */

typedef struct node {
    slots_addr_t addr;
    char name[SLOTS_HOST_MAX + 8];
    redisContext *rc;
    int64_t retry_at, backoff; /* monotonic ms */
} node_t;

struct slots {
    int timeout_ms;
    slots_setup_fn setup;
    void *opaque;
    int nseeds;
    slots_addr_t seeds[SLOTS_NODES_MAX];
    int nnodes; /* a node keeps its index while it serves slots or is connected (node_add) */
    node_t nodes[SLOTS_NODES_MAX];
    slots_map_t map; /* as CLUSTER SLOTS said; owner[] mapped below */
    int16_t owner[SLOTS_N];
    int stale;
    int64_t refreshed_at;
};

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

slots_t *slots_new(const char *seeds, int timeout_ms, slots_setup_fn setup, void *opaque,
                   char *errstr, size_t errstr_size) {
    slots_t *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->timeout_ms = timeout_ms;
    s->setup = setup;
    s->opaque = opaque;
    for (int i = 0; i < SLOTS_N; i++) s->owner[i] = -1;
    for (const char *p = seeds; *p;) {
        while (*p == ' ' || *p == ',') p++;
        size_t n = strcspn(p, ", ");
        if (n == 0) break;
        if (s->nseeds == SLOTS_NODES_MAX || slots_addr_parse(p, n, &s->seeds[s->nseeds]) != 0) {
            snprintf(errstr, errstr_size, "\"%.*s\" is not host:port", (int)(n < 200 ? n : 200), p);
            free(s);
            return NULL;
        }
        s->nseeds++;
        p += n;
    }
    if (s->nseeds == 0) {
        snprintf(errstr, errstr_size, "no seed node given");
        free(s);
        return NULL;
    }
    s->stale = 1;
    return s;
}

void slots_free(slots_t *s) {
    if (!s) return;
    for (int i = 0; i < s->nnodes; i++)
        if (s->nodes[i].rc) redisFree(s->nodes[i].rc);
    free(s);
}

int slots_nmasters(const slots_t *s) {
    return s->nnodes;
}
const char *slots_name(const slots_t *s, int i) {
    return s->nodes[i].name;
}
const slots_map_t *slots_map(const slots_t *s) {
    return &s->map;
}
int slots_master(const slots_t *s, int slot) {
    return slot >= 0 && slot < SLOTS_N ? s->owner[slot] : -1;
}
void slots_mark_stale(slots_t *s) {
    s->stale = 1;
}

/* An index no one needs: no slot of the map in force names it, keep[]
 * does not hold it, and it has no connection.  -1 when every one is used. */
static int node_unused(const slots_t *s, const int *keep, int nkeep) {
    char used[SLOTS_NODES_MAX] = {0};
    for (int i = 0; i < SLOTS_N; i++)
        if (s->owner[i] >= 0) used[s->owner[i]] = 1;
    for (int k = 0; k < nkeep; k++)
        if (keep[k] >= 0) used[keep[k]] = 1;
    for (int i = 0; i < s->nnodes; i++)
        if (!used[i] && !s->nodes[i].rc) return i;
    return -1;
}

/* The index of a, added when it is new.  The table holds SLOTS_NODES_MAX
 * addresses; a cluster whose nodes come back on new addresses (failovers,
 * containers restarted) passes through more than that over a long life,
 * so once it is full an address that serves no slot and is not connected
 * gives its index to the new one. */
static int node_add(slots_t *s, const slots_addr_t *a, const int *keep, int nkeep) {
    for (int i = 0; i < s->nnodes; i++)
        if (s->nodes[i].addr.port == a->port && strcmp(s->nodes[i].addr.host, a->host) == 0)
            return i;
    int i = s->nnodes < SLOTS_NODES_MAX ? s->nnodes++ : node_unused(s, keep, nkeep);
    if (i < 0) return -1;
    node_t *n = &s->nodes[i];
    memset(n, 0, sizeof(*n));
    n->addr = *a;
    snprintf(n->name, sizeof(n->name), strchr(a->host, ':') ? "[%s]:%d" : "%s:%d", a->host,
             a->port);
    return i;
}

int slots_node(slots_t *s, const slots_addr_t *a) {
    return node_add(s, a, NULL, 0);
}

/* A new connection to a, set up; NULL with errstr. */
static redisContext *dial(slots_t *s, const slots_addr_t *a, char *errstr, size_t errstr_size) {
    struct timeval tv = {s->timeout_ms / 1000, (s->timeout_ms % 1000) * 1000};
    redisContext *rc = redisConnectWithTimeout(a->host, a->port, tv);
    if (!rc || rc->err) {
        snprintf(errstr, errstr_size, "cannot connect to %s:%d: %s", a->host, a->port,
                 rc ? rc->errstr : "out of memory");
        if (rc) redisFree(rc);
        return NULL;
    }
    if (s->setup && s->setup(s->opaque, rc, errstr, errstr_size) != 0) {
        redisFree(rc);
        return NULL;
    }
    return rc;
}

redisContext *slots_conn(slots_t *s, int i, char *errstr, size_t errstr_size) {
    node_t *n = &s->nodes[i];
    if (n->rc) return n->rc;
    int64_t wait = n->retry_at - mono_ms();
    if (wait > 0) {
        snprintf(errstr, errstr_size, "%s unreachable; next try in %lld ms", n->name,
                 (long long)wait);
        return NULL;
    }
    char why[512];
    n->rc = dial(s, &n->addr, why, sizeof(why));
    if (!n->rc) {
        snprintf(errstr, errstr_size, "%s", why);
        slots_fail(s, i);
    }
    return n->rc;
}

void slots_fail(slots_t *s, int i) {
    node_t *n = &s->nodes[i];
    if (n->rc) redisFree(n->rc);
    n->rc = NULL;
    n->backoff = n->backoff ? n->backoff * 2 : 100;
    if (n->backoff > 2000) n->backoff = 2000;
    n->retry_at = mono_ms() + n->backoff;
    s->stale = 1;
}

void slots_ok(slots_t *s, int i) {
    s->nodes[i].backoff = 0;
}

int slots_up(const slots_t *s, int i) {
    return i >= 0 && i < s->nnodes && s->nodes[i].rc && s->nodes[i].backoff == 0;
}

/* CLUSTER SLOTS on rc into m: 0, -1 on a refusal (errstr), -2 on I/O. */
static int ask_map(redisContext *rc, slots_map_t *m, char *errstr, size_t errstr_size) {
    redisReply *r = redisCommand(rc, "CLUSTER SLOTS");
    if (!r) {
        snprintf(errstr, errstr_size, "%s", rc->errstr[0] ? rc->errstr : "I/O error");
        return -2;
    }
    int rc2 = slots_map_parse(r, m, errstr, errstr_size);
    freeReplyObject(r);
    return rc2;
}

void slots_install(slots_t *s, const slots_map_t *m) {
    int idx[SLOTS_NODES_MAX], master[SLOTS_NODES_MAX] = {0};
    for (int i = 0; i < m->nmasters; i++) {
        /* Not one that an earlier master of m was just given. */
        idx[i] = node_add(s, &m->masters[i], idx, i);
        if (idx[i] >= 0) master[idx[i]] = 1;
    }
    for (int i = 0; i < SLOTS_N; i++)
        s->owner[i] = m->owner[i] < 0 ? -1 : (int16_t)idx[m->owner[i]];
    for (int i = 0; i < s->nnodes; i++)
        if (!master[i] && s->nodes[i].rc) {
            redisFree(s->nodes[i].rc);
            s->nodes[i].rc = NULL;
        }
    s->map = *m;
}

int slots_refresh(slots_t *s, char *errstr, size_t errstr_size) {
    slots_map_t *m = malloc(sizeof(*m));
    slots_addr_t cand[4 * SLOTS_NODES_MAX]; /* connections, masters, replicas, seeds */
    int ncand = 0, rc = -1;
    char why[512] = "", tried[1024] = "";
    size_t tl = 0;

    if (!m) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    s->refreshed_at = mono_ms();
    for (int i = 0; i < s->nnodes; i++) /* open connections first: no dial */
        if (s->nodes[i].rc) cand[ncand++] = s->nodes[i].addr;
    for (int i = 0; i < s->map.nmasters; i++) cand[ncand++] = s->map.masters[i];
    for (int i = 0; i < s->map.nreplicas; i++) cand[ncand++] = s->map.replicas[i];
    for (int i = 0; i < s->nseeds; i++) cand[ncand++] = s->seeds[i];
    for (int c = 0; c < ncand; c++) {
        int dup = 0;
        for (int d = 0; d < c && !dup; d++)
            dup = cand[d].port == cand[c].port && strcmp(cand[d].host, cand[c].host) == 0;
        if (dup) continue;
        int ni = -1;
        for (int i = 0; i < s->nnodes && ni < 0; i++)
            if (s->nodes[i].rc && s->nodes[i].addr.port == cand[c].port &&
                strcmp(s->nodes[i].addr.host, cand[c].host) == 0)
                ni = i;
        redisContext *ctx = ni >= 0 ? s->nodes[ni].rc : dial(s, &cand[c], why, sizeof(why));
        int r = ctx ? ask_map(ctx, m, why, sizeof(why)) : -2;
        if (ni >= 0 && r == -2) slots_fail(s, ni);
        if (ni < 0 && ctx) redisFree(ctx);
        if (r == 0 && m->covered > 0) {
            slots_install(s, m);
            s->stale = 0;
            rc = 0;
            break;
        }
        if (r == 0) snprintf(why, sizeof(why), "it serves no slot yet");
        if (r == -1 && strstr(why, "cluster support disabled")) {
            snprintf(errstr, errstr_size,
                     "%s:%d is not a cluster node (it has cluster support disabled): "
                     "give a single node as redis.host/redis.port, not redis.cluster",
                     cand[c].host, cand[c].port);
            goto out;
        }
        if (tl < sizeof(tried))
            tl += (size_t)snprintf(tried + tl, sizeof(tried) - tl, "%s%s:%d (%s)", tl ? "; " : "",
                                   cand[c].host, cand[c].port, why);
        if (strstr(why, "AUTH") || strstr(why, "WRONGPASS") || strstr(why, "NOPERM")) {
            /* a refusal: no better elsewhere */
            snprintf(errstr, errstr_size, "%s", tried);
            goto out;
        }
    }
    if (rc != 0) snprintf(errstr, errstr_size, "no cluster node answered: %s", tried);
out:
    free(m);
    return rc;
}

int slots_refresh_if_stale(slots_t *s, char *errstr, size_t errstr_size) {
    if (!s->stale) return 0;
    int64_t wait = s->refreshed_at + 100 - mono_ms();
    if (wait > 0) return 0; /* the map we have will do until then */
    return slots_refresh(s, errstr, errstr_size);
}
