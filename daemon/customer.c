/*
 * customer.c -- see customer.h.
 */
#include "customer.h"

const policy_profile_t *customer_profile(const customer_t *c, const policy_t *policy) {
    return c->has_profile ? &c->profile : &policy->profile_default;
}

void customer_load(customer_t *c, const state_customer_t *s) {
    c->st = s->st;
    c->seq = s->seq;
    c->live_score_c = s->live_score_c;
    c->scale = s->scale;
}

void customer_store(const customer_t *c, state_customer_t *s) {
    s->st = c->st;
    s->seq = c->seq;
    s->live_score_c = c->live_score_c;
    s->scale = c->scale;
}
