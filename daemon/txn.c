/*
 * txn.c -- see txn.h.
 */
#include "txn.h"

#include "log.h"
#include "state.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int txn_format_ok(const store_meta_t *m) {
    /* Older formats are read, and each customer is rewritten in the
     * current one when a batch or a review touches it; meta says the
     * current one from the first commit, so an older tierd, which cannot
     * read it, refuses the partition. */
    if (m->format >= STATE_FORMAT_OLDEST && m->format <= STATE_FORMAT) return 1;
    /* No format and no offsets: a partition nobody has written yet. */
    return store_meta_empty(m);
}

int txn_meta_verdict(const apply_part_t *p, const store_meta_t *now) {
    if (now->epoch > p->meta.epoch) return APPLY_FENCED; /* whatever the offsets say */
    if (now->epoch < p->meta.epoch || now->offset < p->meta.offset ||
        now->poffset < p->meta.poffset)
        return APPLY_REWIND;
    return APPLY_OK;
}

int txn_meta_unreadable(apply_ctx_t *a, const apply_part_t *p, const store_meta_t *now,
                        char *errstr, size_t errstr_size) {
    char mkey[256];
    if (!now->bad[0] && !(p->meta.orphan && store_meta_empty(now))) return APPLY_OK;
    store_key(a->store, p->topic, p->partition, "meta", mkey, sizeof(mkey));
    a->stats.state_corrupt++;
    if (now->bad[0])
        snprintf(errstr, errstr_size,
                 "%s field %s does not parse: run `tierctl rebuild --partition %d` to rebuild "
                 "the partition from the topic",
                 mkey, now->bad, (int)p->partition);
    else
        snprintf(errstr, errstr_size,
                 "%s holds no offset, yet the partition holds customer states (its meta was "
                 "deleted?): run `tierctl rebuild --partition %d` to rebuild the partition from "
                 "the topic",
                 mkey, (int)p->partition);
    return APPLY_CORRUPT;
}

static int verdict(apply_ctx_t *a, apply_part_t *p, const store_meta_t *now, char *errstr,
                   size_t errstr_size) {
    /* Before the offsets: they may be what does not parse. */
    if (txn_meta_unreadable(a, p, now, errstr, errstr_size) != APPLY_OK) return APPLY_CORRUPT;
    if (p->meta.bad[0] || p->meta.orphan) { /* repaired since we read it: read it again */
        snprintf(errstr, errstr_size, "%s [%d]: its meta parses again (it did not: %s)", p->topic,
                 (int)p->partition, p->meta.bad[0] ? p->meta.bad : "no offset, yet states");
        return APPLY_REWIND;
    }
    int v = txn_meta_verdict(p, now);
    if (v == APPLY_FENCED) {
        a->stats.fenced++;
        snprintf(errstr, errstr_size,
                 "%s [%d]: epoch is %" PRId64 ", ours %" PRId64 ": another instance owns it",
                 p->topic, (int)p->partition, now->epoch, p->meta.epoch);
    } else if (v == APPLY_REWIND) {
        snprintf(errstr, errstr_size,
                 "%s [%d]: Redis holds epoch %" PRId64 " offset %" PRId64 " poffset %" PRId64
                 ", older than ours (%" PRId64 ", %" PRId64 ", %" PRId64 "): it lost writes",
                 p->topic, (int)p->partition, now->epoch, now->offset, now->poffset, p->meta.epoch,
                 p->meta.offset, p->meta.poffset);
    } else if (!txn_format_ok(now)) {
        v = APPLY_CORRUPT;
        snprintf(errstr, errstr_size,
                 "%s [%d] holds state format %d, and this tierd reads formats %d to %d: "
                 "run `tierctl rebuild --partition %d` to rebuild it from the topic",
                 p->topic, (int)p->partition, now->format ? now->format : 1, STATE_FORMAT_OLDEST,
                 STATE_FORMAT, (int)p->partition);
    }
    return v;
}

/* What a refused EXEC says, waited for or read later. */
static const char fenced_text[] = "commit refused: another instance took it";

/* The reply to a batch's EXEC sent ahead (store_exec_send). */
static void settled(void *opaque, int rc, const char *err) {
    apply_ctx_t *a = opaque;
    apply_flight_t *f = &a->flight;
    int arc = APPLY_REWIND;
    char why[600];
    f->active = 0;
    snprintf(why, sizeof(why), "its EXEC failed or its reply was lost: %s", err);
    if (rc == STORE_OK) {
        apply_stats_add(&a->stats, &f->tally);
        arc = APPLY_OK;
    } else if (rc == STORE_FENCED) {
        a->stats.fenced++;
        arc = APPLY_FENCED;
        snprintf(why, sizeof(why), "%s", fenced_text);
    }
    if (a->settled) a->settled(a->settled_opaque, f->partition, f->offset, arc, why);
}

/* EXEC, waiting for its reply or (ops->later) not: STORE_OK, STORE_PENDING
 * (committed has run; the outcome goes to settled), or an error. */
static int commit(apply_ctx_t *a, apply_part_t *p, const txn_ops_t *ops, void *ctx,
                  const store_tx_t *tx, char *errstr, size_t errstr_size) {
    apply_flight_t *f = &a->flight;
    apply_stats_t *tally = &a->stats;
    int64_t from = p->meta.offset;
    int rc = ops->later && a->settled
                 ? store_exec_send(a->store, tx, settled, a, errstr, errstr_size)
                 : store_exec(a->store, tx, errstr, errstr_size);
    if (rc != STORE_OK && rc != STORE_PENDING) return rc;
    if (rc == STORE_PENDING) { /* counted once the reply says so */
        memset(&f->tally, 0, sizeof(f->tally));
        tally = &f->tally;
    }
    p->meta.format = STATE_FORMAT;
    ops->committed(ctx, tally);
    if (rc == STORE_PENDING) {
        f->active = 1;
        f->partition = p->partition;
        f->from = from;
        f->offset = p->meta.offset;
    }
    return rc;
}

struct txn_stream {
    store_t *store;
    int open; /* the read goes in parts (store_read_open) */
};

void txn_stream_part(txn_stream_t *st, const txn_read_t *r) {
    /* A part that cannot be written drops the connection: the attempt's
     * store_read_close says so. */
    if (st->open && r->nkeys)
        (void)store_read_part(st->store, r->nkeys, r->keys, r->fields, r->flens, r->nfields);
}

/* The attempt's read: the one sent in parts (streamed), or plan's. */
static int read_state(apply_ctx_t *a, apply_part_t *p, const txn_ops_t *ops, void *ctx,
                      int streamed, store_meta_t *now, redisReply **replies, char *errstr,
                      size_t errstr_size) {
    txn_read_t r;
    size_t n;
    int rc;
    if (streamed)
        return store_read_close(a->store, now, &n, replies, errstr, errstr_size) == STORE_OK
                   ? APPLY_OK
                   : APPLY_RETRY;
    memset(&r, 0, sizeof(r));
    if ((rc = ops->plan(ctx, &r, errstr, errstr_size)) != APPLY_OK) return rc;
    if (store_read(a->store, p->topic, p->partition, now, r.nkeys, r.keys, r.fields, r.flens,
                   r.nfields, replies, errstr, errstr_size) != STORE_OK)
        return APPLY_RETRY;
    return APPLY_OK;
}

static int attempt(apply_ctx_t *a, apply_part_t *p, const txn_ops_t *ops, void *ctx, int streamed,
                   char *errstr, size_t errstr_size) {
    redisReply *replies[TXN_KEYS_MAX] = {NULL};
    store_tx_t tx = {0};
    store_meta_t now;
    char mkey[256];
    int rc;

    if ((rc = read_state(a, p, ops, ctx, streamed, &now, replies, errstr, errstr_size)) != APPLY_OK)
        return rc;
    rc = verdict(a, p, &now, errstr, errstr_size);
    if (rc == APPLY_OK) {
        store_key(a->store, p->topic, p->partition, "meta", mkey, sizeof(mkey));
        char fmt[16];
        snprintf(fmt, sizeof(fmt), "%d", STATE_FORMAT);
        rc = ops->decide(ctx, &now, replies, &tx, errstr, errstr_size);
        if (rc == APPLY_OK && store_tx_addv(&tx, 4, "HSET", (size_t)4, mkey, strlen(mkey), "format",
                                            (size_t)6, fmt, strlen(fmt)) != 0) {
            snprintf(errstr, errstr_size, "out of memory");
            rc = APPLY_RETRY;
        }
    }
    /* The replies stay in the store's arena until the next store_read. */
    if (rc == TXN_AGAIN) {
        store_unwatch(a->store);
        log_info("txn",
                 "%s [%d]: Redis holds offset %" PRId64 " month %d reviewed %d (cached %" PRId64
                 " %d %d): deciding again",
                 p->topic, (int)p->partition, now.offset, (int)now.month, (int)now.reviewed,
                 p->meta.offset, (int)p->meta.month, (int)p->meta.reviewed);
        p->meta = now;
        p->outbox_dirty = 1; /* what that commit decided waits in the outbox */
    } else if (rc != APPLY_OK) {
        store_unwatch(a->store);
    } else {
        fault_stall(&a->fault, ops->fault); /* test builds only: fault.h */
        int src = commit(a, p, ops, ctx, &tx, errstr, errstr_size);
        if (src == STORE_FENCED) {
            a->stats.fenced++;
            snprintf(errstr, errstr_size, "%s [%d]: %s", p->topic, (int)p->partition, fenced_text);
            rc = APPLY_FENCED;
        } else if (src != STORE_OK && src != STORE_PENDING) {
            rc = APPLY_RETRY;
        }
    }
    store_tx_free(&tx);
    return rc;
}

int txn_run(apply_ctx_t *a, apply_part_t *p, const txn_ops_t *ops, void *ctx, char *errstr,
            size_t errstr_size) {
    txn_stream_t st = {a->store, 0};
    if (ops->stream) {
        char why[256];
        st.open = store_read_open(a->store, p->topic, p->partition, why, sizeof(why)) == STORE_OK;
        int rc = ops->stream(ctx, &st, errstr, errstr_size);
        if (rc != APPLY_OK) {
            if (st.open) store_read_abort(a->store);
            return rc == TXN_SKIP ? APPLY_OK : rc;
        }
    }
    for (int i = 0; i < 3; i++) {
        int rc = attempt(a, p, ops, ctx, st.open && i == 0, errstr, errstr_size);
        if (rc != TXN_AGAIN) return rc;
    }
    snprintf(errstr, errstr_size, "%s [%d]: the partition's state kept changing", p->topic,
             (int)p->partition);
    return APPLY_RETRY;
}
