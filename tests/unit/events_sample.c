/*
 * events_sample.c -- the C half of crosscheck_events.py, which proves a
 * subscriber in another language (Python's avro library, reading the .avsc
 * files, not our embedded copies) reads what tierd publishes, and that
 * tierd reads profiles another language wrote.
 *
 *   events_sample write POLICY.yaml DIR   writes DIR/tier_change.avro and
 *                                         DIR/quota_event.avro (plain Avro)
 *   events_sample profile FILE            decodes FILE as a CustomerProfile
 *                                         and prints one line of fields
 *
 * The tier change is an INITIAL_EVALUATION made by the real engine on a
 * hand-made window; the quota event has no hard cap (null on the wire).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "events.h"
#include "tierd/policy.h"

#define APR_2025 (2025 * 12 + 3)

static int write_file(const char *dir, const char *name, const char *buf, size_t len) {
    char path[4096];
    FILE *f;
    int ok;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    ok = fwrite(buf, 1, len, f) == len;
    if (fclose(f) != 0) ok = 0;
    return ok ? 0 : -1;
}

static int cmd_write(events_t *ev, const char *policy_path, const char *dir) {
    static const int64_t qty[3] = {300, 320, 340};
    policy_t *p = NULL; /* owned: policy_t is large */
    policy_month_t w[3];
    policy_decision_t d;
    policy_quota_limits_t lim;
    char err[512], *buf = NULL, cls[POLICY_CODE_MAX];
    size_t len = 0;
    int ret = 1;

    p = calloc(1, sizeof(*p));
    if (p == NULL || policy_load(policy_path, p, err, sizeof(err)) != 0) {
        fprintf(stderr, "policy: %s\n", p == NULL ? "out of memory" : err);
        goto out;
    }
    for (int i = 0; i < 3; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].month = APR_2025 - 2 + i;
        w[i].qty = qty[i];
        w[i].amount = qty[i] * 20000;
        w[i].orders = 4 + i;
        w[i].skus = 25 + i;
        w[i].tier_in_effect = 2;
        w[i].grade = POLICY_GRADE_A;
    }
    policy_customer_t c = {
        .state = {.tier = 2, .first_month = APR_2025 - 2},
        .profile = p->profile_default,
        .window = w,
        .nwindow = 3,
    };
    if (policy_review(p, &c, APR_2025, &d, err, sizeof(err)) != 0 || !d.changed) {
        fprintf(stderr, "review: %s\n", d.changed ? err : "no change");
        goto out;
    }
    policy_classification(&c.profile, false, '2', cls);

    events_tier_change_t tc = {
        .customer_id = "C-42",
        .sequence = 2,
        .decision = &d,
        .window = w,
        .nwindow = 3,
        .month = APR_2025,
        .classification = cls,
        .policy = p,
        .decided_at_ms = 1743465600123LL,
    };
    if (events_encode_tier_change(ev, &tc, &buf, &len, NULL, 0, err, sizeof(err)) != 0) {
        fprintf(stderr, "tier change: %s\n", err);
        goto out;
    }
    if (write_file(dir, "tier_change.avro", buf, len) != 0) goto out;
    free(buf);
    buf = NULL;

    policy_quota_limits(p, 3, POLICY_FORMAT_OTHER, false, &lim);
    lim.hard_cap = POLICY_NO_HARD_CAP;
    events_quota_t q = {
        .customer_id = "C-42",
        .month = APR_2025,
        .tier = 3,
        .kind = POLICY_QUOTA_EXCEEDED,
        .limits = &lim,
        .consumed = 201,
        .order_id = "O-1001",
        .placed_at_ms = 1743465600123LL,
        .policy = p,
    };
    if (events_encode_quota(ev, &q, &buf, &len, NULL, 0, err, sizeof(err)) != 0) {
        fprintf(stderr, "quota: %s\n", err);
        goto out;
    }
    if (write_file(dir, "quota_event.avro", buf, len) != 0) goto out;
    ret = 0;
out:
    free(buf);
    free(p);
    return ret;
}

static int cmd_profile(const char *path) {
    char bytes[4096], err[512], id[ORDER_ID_MAX + 1];
    policy_profile_t prof;
    int64_t updated = 0;
    size_t n;
    order_err_t rc;
    decoder_t *dec = NULL; /* owned */
    FILE *f = fopen(path, "rb");

    if (f == NULL) {
        perror(path);
        return 1;
    }
    n = fread(bytes, 1, sizeof(bytes), f);
    fclose(f);
    dec = decode_new(err, sizeof(err));
    if (dec == NULL) {
        fprintf(stderr, "decode_new: %s\n", err);
        return 1;
    }
    rc = decode_profile(dec, bytes, n, NULL, 0, id, &prof, &updated, err, sizeof(err));
    decode_destroy(dec);
    if (rc != ORDER_OK) {
        printf("%s %s\n", order_reason_code(rc), err);
        return 0;
    }
    printf("OK %s %c %c %d %c %.17g %.17g %d %" PRId32 " %" PRId64 "\n", id, (char)prof.format,
           (char)prof.market, prof.chain ? 1 : 0, (char)prof.grade, prof.cooperation, prof.growth,
           prof.has_override ? 1 : 0, prof.tier_override, updated);
    return 0;
}

int main(int argc, char **argv) {
    char err[512];
    events_t *ev = NULL; /* owned */
    int ret = 2;

    ev = events_new(err, sizeof(err));
    if (ev == NULL) {
        fprintf(stderr, "events_new: %s\n", err);
        return 1;
    }
    if (argc == 4 && strcmp(argv[1], "write") == 0)
        ret = cmd_write(ev, argv[2], argv[3]);
    else if (argc == 3 && strcmp(argv[1], "profile") == 0)
        ret = cmd_profile(argv[2]);
    else
        fprintf(stderr, "usage: %s write POLICY.yaml DIR | profile FILE\n", argv[0]);
    events_destroy(ev);
    return ret;
}
