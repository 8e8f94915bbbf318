/*
 * profile_text.c -- see profile_text.h.
 */
#include "profile_text.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int copy_text(char *buf, size_t bufsize, const char *s, size_t len) {
    if (len == 0 || len >= bufsize) return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return 0;
}

int profile_text_parse(policy_profile_t *p, int64_t *updated_at, const char *s, size_t len) {
    char buf[256], fmt, mkt, grade;
    int chain, has_ovr, ovr;
    double coop, growth;
    long long upd;
    if (copy_text(buf, sizeof(buf), s, len) != 0) return -1;
    if (sscanf(buf, "%c %c %d %c %lf %lf %d %d %lld", &fmt, &mkt, &chain, &grade, &coop, &growth,
               &has_ovr, &ovr, &upd) != 9)
        return -1;
    p->format = (policy_format_t)fmt;
    p->market = (policy_market_t)mkt;
    p->chain = chain != 0;
    p->grade = (policy_grade_t)grade;
    p->cooperation = coop;
    p->growth = growth;
    p->has_override = has_ovr != 0;
    p->tier_override = ovr;
    *updated_at = upd;
    return 0;
}

int profile_text_format(const policy_profile_t *p, int64_t updated_at, char *buf, size_t size) {
    return snprintf(buf, size, "%c %c %d %c %.17g %.17g %d %d %" PRId64, (char)p->format,
                    (char)p->market, p->chain ? 1 : 0, (char)p->grade, p->cooperation, p->growth,
                    p->has_override ? 1 : 0, (int)p->tier_override, updated_at);
}
