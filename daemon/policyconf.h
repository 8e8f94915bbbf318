/*
 * policyconf.h -- which policy a configuration means: the file named by
 * `policy`, or the built-in supply-tiers.  tierd and tierctl both load it
 * here, so the operator's tool judges customers by the daemon's rules.
 */
#ifndef TIERD_POLICYCONF_H
#define TIERD_POLICYCONF_H

#include "config.h"
#include "tierd/policy.h"

#include <stddef.h>

/* The built-in supply-tiers policy (config/policies/supply-tiers.yaml). */
extern const char tierd_policy_supply_tiers[];

/* Loads c->policy_path, or the built-in policy when it is NULL, and checks
 * that its window agrees with c->window_months (months in Redis are kept
 * for that window).  A policy naming another time zone is accepted with a
 * warning: c->time_zone buckets the months.  -1 with errstr otherwise. */
int policyconf_load(const config_t *c, policy_t *p, char *errstr, size_t errstr_size);

/* The same, for a candidate policy file that need not agree with the
 * configuration's window (tierctl backtest keeps its own keyspace). */
int policyconf_load_file(const char *path, const config_t *c, policy_t *p, char *errstr,
                         size_t errstr_size);

#endif
