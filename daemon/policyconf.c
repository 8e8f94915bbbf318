/*
 * policyconf.c -- see policyconf.h.
 */
#include "policyconf.h"

#include "log.h"

#include <stdio.h>
#include <string.h>

static void warn_zone(const config_t *c, const policy_t *p) {
    if (strcmp(p->time_zone, c->time_zone) != 0)
        log_warn("policy", "policy %s says time_zone %s, tierd uses %s for months and holidays",
                 p->name, p->time_zone, c->time_zone);
}

int policyconf_load_file(const char *path, const config_t *c, policy_t *p, char *errstr,
                         size_t errstr_size) {
    if (policy_load(path, p, errstr, errstr_size) != 0) return -1;
    warn_zone(c, p);
    return 0;
}

int policyconf_load(const config_t *c, policy_t *p, char *errstr, size_t errstr_size) {
    int rc = c->policy_path
                 ? policy_load(c->policy_path, p, errstr, errstr_size)
                 : policy_parse(tierd_policy_supply_tiers, strlen(tierd_policy_supply_tiers),
                                "built-in supply-tiers", p, errstr, errstr_size);
    if (rc != 0) return -1;
    if (p->window != c->window_months) {
        snprintf(errstr, errstr_size,
                 "policy %s has window_months %d but the configuration says %d; make them agree",
                 p->name, (int)p->window, (int)c->window_months);
        return -1;
    }
    /* The built-in policy says UTC only for its holiday dates: no warning. */
    if (c->policy_path) warn_zone(c, p);
    return 0;
}
