/*
 * main.c -- tierd: order events in, exact monthly aggregates out.
 * Parses the command line, loads the configuration, wires the modules
 * (store, decoder, event codec, the producer of dead letters and events,
 * apply, consumer) and runs the loop until SIGTERM or SIGINT.  Signals
 * only set a flag; a second SIGINT exits at once.
 */
#include "apply.h"
#include "config.h"
#include "consumer.h"
#include "decode.h"
#include "kafkaconf.h"
#include "log.h"
#include "metrics.h"
#include "month.h"
#include "policyconf.h"
#include "publish.h"
#include "registry.h"
#include "startcheck.h"
#include "store.h"
#include "tierd/policy.h"

#include <ctype.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef TIERD_VERSION
#define TIERD_VERSION "0.1.0"
#endif

/* Process-wide because a signal handler has no argument to reach them
 * through; the loop receives their addresses (consumer_run). */
static volatile sig_atomic_t stop_flag, reload_flag;

static void on_signal(int sig) {
    if (sig == SIGHUP) {
        reload_flag = 1;
        return;
    }
    if (sig == SIGINT && stop_flag) _exit(130); /* second Ctrl-C: now */
    stop_flag = 1;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: tierd [-c FILE] [--check-config] [--help-config] [--version]\n"
            "\n"
            "  -c, --config FILE   YAML configuration (default: none; defaults and TIERD_* env)\n"
            "      --check-config  validate the configuration and exit (0 when valid)\n"
            "      --help-config   list every configuration key and its environment name\n"
            "      --version       print the version\n"
            "  -h, --help          this text\n"
            "\n"
            "Every key can be set in the environment: redis.port is TIERD_REDIS_PORT,\n"
            "kafka.<property> is TIERD_KAFKA_<PROPERTY> with dots as underscores.\n"
            "SIGTERM or SIGINT: finish the batch in flight, persist, leave the group, exit 0.\n"
            "SIGHUP: re-read the configuration and the policy; a valid policy applies to later\n"
            "decisions, an invalid one is logged and the running one kept.\n"
            "HTTP: /metrics, /healthz and /readyz on http.listen (default 127.0.0.1:9464).\n");
}

/* SIGHUP: build the new configuration and policy aside, swap only what
 * can change at run time, and only when all of it is valid. */
typedef struct reload {
    const char *path;
    config_t *conf; /* the running one */
    apply_ctx_t *apply;
    policy_t slots[2]; /* the running policy and the next one */
    int cur;
} reload_t;

/* A key the table marks restart-only changed in the file: said, not applied. */
static void reload_restart_changed(const char *key, void *opaque) {
    (void)opaque;
    log_warn("reload", "%s changed: it applies at the next restart, not now", key);
}

static void do_reload(void *opaque) {
    reload_t *r = opaque;
    config_t fresh;
    char err[1024] = "";
    policy_t *next = &r->slots[1 - r->cur];

    log_info("reload", "SIGHUP: reading %s", r->path ? r->path : "the environment");
    if (config_load(&fresh, r->path, err, sizeof(err)) != 0) {
        log_error("reload", "configuration refused, the running one stays: %s", err);
        config_free(&fresh);
        return;
    }
    /* As at start (and --check-config): a file tierd would refuse at its
     * next start is refused now, though time_zone itself waits for it. */
    if (month_zone_check(fresh.time_zone, err, sizeof(err)) != 0) {
        log_error("reload", "configuration refused, the running one stays: %s: time_zone: %s",
                  config_where(&fresh, "time_zone"), err);
        config_free(&fresh);
        return;
    }
    /* The window changes only at a restart, so the policy must fit the
     * running one: a policy for another window would fail every decision. */
    config_t *c = r->conf;
    int64_t asked_window = fresh.window_months;
    fresh.window_months = c->window_months;
    if (policyconf_load(&fresh, next, err, sizeof(err)) != 0) {
        log_error("reload", "policy refused, the running one stays: %s%s", err,
                  asked_window != c->window_months
                      ? " (window_months changes only at a restart: the running window counts)"
                      : "");
        config_free(&fresh);
        return;
    }
    fresh.window_months = asked_window; /* so the change is reported below */
    /* The configuration table says which keys change now (moved into the
     * running configuration, where the consumer reads batch.* and
     * shutdown_timeout_ms) and which wait for a restart (logged). */
    config_reload(c, &fresh, reload_restart_changed, NULL);
    /* What is derived from the keys that change now. */
    log_level = log_level_parse(c->log_level);
    r->apply->rules.max_future_skew_ms = c->max_future_skew_s * 1000;
    r->apply->rules.min_placed_at_ms = c->min_placed_at_s * 1000;
    r->apply->idle_close_after_ms = c->idle_close_after_s * 1000;
    r->apply->policy = next; /* later decisions name the new policy and version */
    r->cur = 1 - r->cur;
    log_info("reload", "policy %s version %s applies to decisions from now on; log_level %s",
             next->name, next->version, c->log_level);
    config_free(&fresh);
}

/* ---- librdkafka's verdict on kafka.* --------------------------------- */

/* Builds and destroys the clients tierd runs (the producer of dead letters
 * and events, the orders and the profiles consumers) with the constructors
 * tierd runs them with, so the properties tierd fixes and defaults are the
 * same as at run time.  kafka.* comes from c, less bootstrap.servers (so no
 * broker thread starts and nothing connects) and less entry `skip` (none
 * when >= c->nkafka).  0, or -1 with librdkafka's reason in why. */
static int kafka_clients_try(const config_t *c, size_t skip, char *why, size_t why_size) {
    config_t t = *c; /* shares every string with c: never config_free'd */
    config_kv_t *kv = calloc(c->nkafka + 1, sizeof(*kv)); /* owned here */
    apply_ctx_t apply;
    publish_t *pub = NULL;
    consumer_t *cons = NULL;
    int rc = -1;

    apply_init(&apply);
    why[0] = '\0';
    if (!kv) {
        snprintf(why, why_size, "out of memory");
        goto out;
    }
    t.kafka = kv;
    t.nkafka = 0;
    for (size_t i = 0; i < c->nkafka; i++)
        if (i != skip && strcmp(c->kafka[i].name, "bootstrap.servers") != 0)
            kv[t.nkafka++] = c->kafka[i];
    pub = publish_new(&t, why, why_size);
    if (!pub) goto out;
    cons = consumer_new(&t, &apply, pub, why, why_size);
    if (!cons) goto out;
    rc = 0;
out:
    consumer_destroy(cons);
    publish_destroy(pub);
    apply_free(&apply);
    free(kv);
    return rc;
}

/* `word` occurs in `text` with no name character on either side. */
static int mentions(const char *text, const char *word) {
    size_t n = strlen(word);
    if (n == 0) return 0;
    for (const char *p = text; (p = strstr(p, word)) != NULL; p++) {
        char before = p == text ? ' ' : p[-1], after = p[n];
        if (!isalnum((unsigned char)before) && !strchr("._-", before) &&
            !isalnum((unsigned char)after) && (!after || !strchr("._-", after)))
            return 1;
    }
    return 0;
}

/* librdkafka's refusals at rd_kafka_new ("Unsupported SASL mechanism:
 * BOGUS") do not name the property.  The suspects are the entries without
 * which the clients build, or fail for another reason (without
 * sasl.mechanisms the default GSSAPI may fail otherwise); of those, the
 * ones the reason mentions by name or value, when there are such.  Writes
 * "WHERE: kafka.NAME, ...: why" into errstr, or "kafka.*: why" when no
 * single entry is to blame. */
static void kafka_blame(const config_t *c, const char *why, char *errstr, size_t errstr_size) {
    char *lone = calloc(c->nkafka + 1, 1), *named = calloc(c->nkafka + 1, 1);
    char scratch[512];
    size_t nlone = 0, nboth = 0, len = 0;

    if (!lone || !named) {
        snprintf(errstr, errstr_size, "kafka.*: %s", why);
        goto out;
    }
    for (size_t i = 0; i < c->nkafka; i++) {
        if (strcmp(c->kafka[i].name, "bootstrap.servers") == 0) continue; /* never built in */
        lone[i] =
            kafka_clients_try(c, i, scratch, sizeof(scratch)) == 0 || strcmp(scratch, why) != 0;
        named[i] = mentions(why, c->kafka[i].name) ||
                   (strlen(c->kafka[i].value) >= 3 && mentions(why, c->kafka[i].value));
        nlone += lone[i] != 0;
        nboth += lone[i] && named[i];
    }
    errstr[0] = '\0';
    for (size_t i = 0; i < c->nkafka && len < errstr_size; i++) {
        int blame = nboth ? lone[i] && named[i] : nlone ? lone[i] : named[i];
        if (!blame) continue;
        len += (size_t)snprintf(errstr + len, errstr_size - len, "%s%s: kafka.%s", len ? ", " : "",
                                c->kafka[i].where, c->kafka[i].name);
    }
    if (len < errstr_size)
        snprintf(errstr + len, errstr_size - len, "%s%s", len ? ": " : "kafka.*: ", why);
out:
    free(lone);
    free(named);
}

/* librdkafka judges the kafka.* properties: each one as it is set, then
 * the clients as a whole, as they are created.  Nothing connects.  Its
 * log lines while it does: warnings for --check-config (a property the
 * consumer ignores, say), only errors at a start, which builds the
 * clients again right after and would say the same twice. */
static int kafka_check(const config_t *c, int check, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *kc = kafkaconf_build(c, NULL, errstr, errstr_size);
    char why[512];
    int saved = log_level, rc = 0;

    if (!kc) return -1; /* errstr: "where: kafka.name: reason" */
    rd_kafka_conf_destroy(kc);
    int cap = check ? LOG_WARN : LOG_ERROR;
    if (saved > cap) log_level = cap;
    if (kafka_clients_try(c, SIZE_MAX, why, sizeof(why)) != 0) {
        log_level = -1; /* the blame rebuilds the clients, quietly */
        kafka_blame(c, why, errstr, errstr_size);
        rc = -1;
    }
    log_level = saved;
    return rc;
}

/* Generated from schemas/ at build time. */
extern const char tierd_schema_tier_change[];
extern const char tierd_schema_quota_event[];

/*
 * The schema registry, at start: framed orders and profiles are read by
 * their writer schema from now on, and the event schemas are registered
 * (or found, when they are there already) under the topic-name strategy's
 * subjects, <topic>-value, so every event goes out framed with its id.  A
 * registry that refuses them (incompatible with what the subject holds)
 * or does not answer stops tierd here, with the registry's message.
 */
static int registry_start(const config_t *c, decoder_t *dec, publish_t *pub, registry_t **reg,
                          char *errstr, size_t errstr_size) {
    registry_conf_t rc = {c->registry_url, c->registry_user, c->registry_password,
                          c->registry_ca_file, (long)c->registry_timeout_ms};
    const char *topics[2] = {c->topic_tier_changes, c->topic_quota_events};
    const char *schemas[2] = {tierd_schema_tier_change, tierd_schema_quota_event};
    int64_t ids[2] = {-1, -1};
    char subject[300];

    if ((*reg = registry_new(&rc, errstr, errstr_size)) == NULL) return -1;
    if (decode_use_registry(dec, registry_fetch, *reg, (size_t)c->registry_cache_size, errstr,
                            errstr_size) != 0)
        return -1;
    for (size_t i = 0; i < 2; i++) {
        snprintf(subject, sizeof(subject), "%s-value", topics[i]);
        if (registry_register(*reg, subject, schemas[i], &ids[i], errstr, errstr_size) !=
            REGISTRY_OK)
            return -1;
        log_info("main", "events to %s are framed with schema id %lld (subject %s)", topics[i],
                 (long long)ids[i], subject);
    }
    if (publish_set_frames(pub, topics[0], ids[0], topics[1], ids[1]) != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"check-config", no_argument, NULL, 'C'},
        {"help-config", no_argument, NULL, 'H'},  {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    const char *path = NULL;
    int check = 0, opt, rc = 1;
    char err[1024] = "", owner[300];
    config_t conf;
    store_t *store = NULL;
    decoder_t *dec = NULL;
    registry_t *reg = NULL;
    publish_t *pub = NULL; /* dead letters and the outboxes */
    events_t *events = NULL;
    reload_t *rl = NULL;     /* owned; the policies are large: on the heap */
    policy_t *policy = NULL; /* the policy at start: rl->slots[0] */
    consumer_t *cons = NULL;
    metrics_t *metrics = NULL;
    apply_ctx_t apply;
    int conf_loaded = 0;

    apply_init(&apply);
    while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 'C': check = 1; break;
        case 'H': config_print_reference(); return 0;
        case 'V': printf("tierd %s\n", TIERD_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }

    if (config_load(&conf, path, err, sizeof(err)) != 0) {
        fprintf(stderr, "tierd: configuration refused: %s\n", err);
        config_free(&conf);
        return 2;
    }
    conf_loaded = 1;
    rl = calloc(1, sizeof(*rl));
    if (!rl) {
        fprintf(stderr, "tierd: out of memory\n");
        goto out;
    }
    policy = &rl->slots[0];
    log_level = log_level_parse(conf.log_level);
    if (month_zone_init(&apply.zone, conf.time_zone, err, sizeof(err)) != 0) {
        fprintf(stderr, "tierd: configuration refused: %s: time_zone: %s\n",
                config_where(&conf, "time_zone"), err);
        rc = 2;
        goto out;
    }
    if (kafka_check(&conf, check, err, sizeof(err)) != 0) {
        fprintf(stderr, "tierd: configuration refused: %s\n", err);
        rc = 2;
        goto out;
    }
    if (policyconf_load(&conf, policy, err, sizeof(err)) != 0) {
        fprintf(stderr, "tierd: policy refused: %s\n", err);
        rc = 2;
        goto out;
    }
    if (check) {
        printf("tierd: configuration %s is valid (policy %s version %s)\n",
               path ? path : "(defaults and environment)", policy->name, policy->version);
        rc = 0;
        goto out;
    }

    if (conf.instance_id) {
        snprintf(owner, sizeof(owner), "%s", conf.instance_id);
    } else {
        char host[256] = "tierd";
        gethostname(host, sizeof(host) - 1);
        snprintf(owner, sizeof(owner), "%s-%d", host, (int)getpid());
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* A server that refuses tierd at start (a wrong password, a Redis user
     * without the rights tierd needs, a broker certificate it does not
     * trust) is a mistake to fix: tierd stops with the reason before it
     * writes anything.  One that does not answer yet is an outage: tierd
     * starts and keeps trying, as it does after the start. */
    store = store_new(&conf, err, sizeof(err));
    if (!store) goto fail;
    switch (store_check(store, conf.topic_orders, err, sizeof(err))) {
    case STORE_OK:
        if (err[0]) log_warn("main", "%s", err); /* could not tell the eviction policy */
        break;
    case STORE_DENIED: goto fail;
    default:
        /* A cluster that cannot be mapped at start is a configuration
         * error too (a node that is no cluster node, seeds that all
         * fail): said once, before anything is consumed or written. */
        if (store_cluster(store)) goto fail;
        log_warn("main", "%s; will keep trying", err); /* claims retry */
    }
    err[0] = '\0';
    switch (startcheck_kafka(&conf, STARTCHECK_KAFKA_MS, &stop_flag, err, sizeof(err))) {
    case STARTCHECK_OK: break;
    case STARTCHECK_REFUSED: goto fail;
    default: log_warn("main", "%s; starting anyway, librdkafka keeps trying", err);
    }
    err[0] = '\0';
    dec = decode_new(err, sizeof(err));
    if (!dec) goto fail;
    events = events_new(err, sizeof(err));
    if (!events) goto fail;
    pub = publish_new(&conf, err, sizeof(err));
    if (!pub) goto fail;
    if (conf.registry_url && registry_start(&conf, dec, pub, &reg, err, sizeof(err)) != 0)
        goto fail;

    apply.store = store;
    apply.decoder = dec;
    snprintf(apply.rules.currency, sizeof(apply.rules.currency), "%s", conf.currency);
    apply.rules.max_future_skew_ms = conf.max_future_skew_s * 1000;
    apply.rules.min_placed_at_ms = conf.min_placed_at_s * 1000;
    apply.window = (int32_t)conf.window_months;
    apply.owner = owner;
    apply.dead = publish_dead;
    apply.dead_opaque = pub;
    apply.policy = policy;
    apply.events = events;
    apply.tier_topic = conf.topic_tier_changes;
    apply.quota_topic = conf.topic_quota_events;
    apply.profile_topic = conf.topic_profiles;
    apply.idle_close_after_ms = conf.idle_close_after_s * 1000;
    fault_from_env(&apply.fault); /* test builds only: fault.h */

    cons = consumer_new(&conf, &apply, pub, err, sizeof(err));
    if (!cons) goto fail;
    metrics = metrics_start(conf.http_listen, err, sizeof(err));
    if (!metrics) goto fail;
    if (metrics_port(metrics))
        log_info("main", "serving /metrics, /healthz and /readyz on port %d (http.listen %s)",
                 metrics_port(metrics), conf.http_listen);
    /* A Redis call may wait up to its timeout: the probes allow for two. */
    metrics_set_stale_after_ms(metrics, 3000 + 2 * (unsigned)conf.redis_timeout_ms);
    consumer_set_metrics(cons, metrics);
    log_info("main",
             "tierd %s started as %s: orders from %s, profiles from %s, policy %s version %s, "
             "zone %s, window %d",
             TIERD_VERSION, owner, conf.topic_orders, conf.topic_profiles, policy->name,
             policy->version, conf.time_zone, (int)conf.window_months);
    rl->path = path;
    rl->conf = &conf;
    rl->apply = &apply;
    rc = consumer_run(cons, &stop_flag, &reload_flag, do_reload, rl);
    log_info("main", "stopped (%s)", rc == 0 ? "clean" : "after a fatal error");
    goto out;

fail:
    log_error("main", "%s", err);
    rc = 1;
out:
    metrics_stop(metrics);
    consumer_destroy(cons);
    apply_free(&apply);
    publish_destroy(pub);
    events_destroy(events);
    decode_destroy(dec);
    registry_destroy(reg);
    store_destroy(store);
    free(rl);
    if (conf_loaded) config_free(&conf);
    return rc;
}
