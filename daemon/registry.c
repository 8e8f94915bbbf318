/*
 * registry.c -- the schema registry client (registry.h): libcurl for HTTP,
 * jansson (libavro's own JSON library) for the bodies.
 *
 * Owns one libcurl easy handle, kept between requests so its connection is
 * reused, and the base URL.  Every request is bounded by the configured
 * timeout (connecting included), so a dead or slow registry costs the
 * caller one timeout, never a hang.  Bodies are bounded too: a registry
 * answer larger than REGISTRY_BODY_MAX is not a schema tierd will read.
 *
 * Must never: put the password in a message or a log (libcurl gets it
 * through CURLOPT_PASSWORD, and config.c refuses a URL with credentials
 * in it, so the URL messages name holds none), or mistake "no answer"
 * for "no such id" (the first pauses a partition, the second dead-letters
 * a record).
 */
#include "registry.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "errstr.h"

/* Larger than any schema tierd reads or writes by far. */
#define REGISTRY_BODY_MAX (4u << 20)

/* After a request got no answer, the next ones within this long fail at
 * once: every paused partition asks, and a dead registry should cost the
 * main loop one timeout per second, not one per partition. */
#define REGISTRY_HOLD_OFF_MS 1000

struct registry {
    CURL *curl;     /* owned */
    char *base;     /* owned: the URL without trailing slashes */
    char *user;     /* owned, may be NULL */
    char *password; /* owned, may be NULL; wiped on destroy */
    char *ca_file;  /* owned, may be NULL */
    long timeout_ms;
    char *body; /* owned: the last answer, NUL-terminated */
    size_t body_len;
    size_t body_cap;
    int body_overflow;
    int64_t failed_at_ms; /* monotonic; 0: the last request was answered */
    char failed_why[200];
};

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx) {
    registry_t *r = ctx;
    size_t n = size * nmemb;

    if (r->body_len + n + 1 > REGISTRY_BODY_MAX) {
        r->body_overflow = 1;
        return 0; /* libcurl stops with CURLE_WRITE_ERROR */
    }
    if (r->body_len + n + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 4096;
        char *b;

        while (cap < r->body_len + n + 1) cap *= 2;
        if ((b = realloc(r->body, cap)) == NULL) return 0;
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return n;
}

static char *dup_or_null(const char *s, int *oom) {
    char *d;

    if (s == NULL) return NULL;
    if ((d = strdup(s)) == NULL) *oom = 1;
    return d;
}

registry_t *registry_new(const registry_conf_t *conf, char *errstr, size_t errstr_size) {
    static int curl_ready; /* curl_global_init once: main and tierctl are single-threaded here */
    registry_t *r = NULL;  /* owned here until returned */
    registry_t *ret = NULL;
    int oom = 0;
    size_t n;

    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            errstr_fmt(errstr, errstr_size, "libcurl could not start");
            goto out;
        }
        curl_ready = 1;
    }
    if ((r = calloc(1, sizeof(*r))) == NULL) {
        errstr_fmt(errstr, errstr_size, "out of memory creating the schema registry client");
        goto out;
    }
    r->base = dup_or_null(conf->url, &oom);
    r->user = dup_or_null(conf->user, &oom);
    r->password = dup_or_null(conf->password, &oom);
    r->ca_file = dup_or_null(conf->ca_file, &oom);
    r->timeout_ms = conf->timeout_ms > 0 ? conf->timeout_ms : 2000;
    if (oom || r->base == NULL || (r->curl = curl_easy_init()) == NULL) {
        errstr_fmt(errstr, errstr_size, "out of memory creating the schema registry client");
        goto out;
    }
    for (n = strlen(r->base); n > 0 && r->base[n - 1] == '/'; n--) r->base[n - 1] = '\0';
    ret = r;
    r = NULL; /* now owned by the caller */
out:
    registry_destroy(r);
    return ret;
}

void registry_destroy(registry_t *r) {
    if (r == NULL) return;
    if (r->curl != NULL) curl_easy_cleanup(r->curl);
    if (r->password != NULL) memset(r->password, 0, strlen(r->password));
    free(r->password);
    free(r->user);
    free(r->ca_file);
    free(r->base);
    free(r->body);
    free(r);
}

/* The registry's own words for a refusal: {"error_code":..., "message":...}. */
static void registry_message(const registry_t *r, char *out, size_t out_size) {
    json_t *root = r->body_len ? json_loads(r->body, 0, NULL) : NULL;
    const char *msg = root ? json_string_value(json_object_get(root, "message")) : NULL;

    snprintf(out, out_size, "%.300s", msg ? msg : (r->body_len ? r->body : "no message"));
    json_decref(root);
}

/*
 * One request: GET when post is NULL, else POST of that JSON body.  Sets
 * *status to the HTTP status.  REGISTRY_UNAVAILABLE with errstr when no
 * answer came in time (or was too large); otherwise REGISTRY_OK and the
 * answer in r->body, whatever its status.
 */
static registry_rc_t registry_call(registry_t *r, const char *path, const char *post, long *status,
                                   char *errstr, size_t errstr_size) {
    struct curl_slist *headers = NULL; /* owned */
    char *url = NULL;                  /* owned */
    size_t len = strlen(r->base) + strlen(path) + 1;
    registry_rc_t rc = REGISTRY_UNAVAILABLE;
    CURLcode cc;

    if (r->failed_at_ms && mono_ms() - r->failed_at_ms < REGISTRY_HOLD_OFF_MS) {
        errstr_fmt(errstr, errstr_size, "%s (less than a second ago; asking again shortly)",
                   r->failed_why);
        goto out;
    }
    if ((url = malloc(len)) == NULL) {
        errstr_fmt(errstr, errstr_size, "out of memory");
        goto out;
    }
    snprintf(url, len, "%s%s", r->base, path);
    headers = curl_slist_append(headers, "Accept: application/vnd.schemaregistry.v1+json, "
                                         "application/json");
    if (post != NULL)
        headers =
            curl_slist_append(headers, "Content-Type: application/vnd.schemaregistry.v1+json");
    r->body_len = 0;
    r->body_overflow = 0;
    if (r->body) r->body[0] = '\0';

    curl_easy_reset(r->curl);
    curl_easy_setopt(r->curl, CURLOPT_URL, url);
    curl_easy_setopt(r->curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(r->curl, CURLOPT_TIMEOUT_MS, r->timeout_ms);
    curl_easy_setopt(r->curl, CURLOPT_CONNECTTIMEOUT_MS, r->timeout_ms);
    curl_easy_setopt(r->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(r->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(r->curl, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->curl, CURLOPT_USERAGENT, "tierd");
    if (r->user != NULL) {
        curl_easy_setopt(r->curl, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
        curl_easy_setopt(r->curl, CURLOPT_USERNAME, r->user);
        curl_easy_setopt(r->curl, CURLOPT_PASSWORD, r->password ? r->password : "");
    }
    if (r->ca_file != NULL) curl_easy_setopt(r->curl, CURLOPT_CAINFO, r->ca_file);
    if (post != NULL) curl_easy_setopt(r->curl, CURLOPT_POSTFIELDS, post);

    cc = curl_easy_perform(r->curl);
    if (cc != CURLE_OK) {
        errstr_fmt(errstr, errstr_size, "schema registry %s: %s", r->base,
                   r->body_overflow ? "answer larger than 4 MiB" : curl_easy_strerror(cc));
        r->failed_at_ms = mono_ms();
        snprintf(r->failed_why, sizeof(r->failed_why), "%s", errstr ? errstr : "no answer");
        goto out;
    }
    r->failed_at_ms = 0;
    curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, status);
    rc = REGISTRY_OK;
out:
    curl_slist_free_all(headers);
    free(url);
    return rc;
}

/* What a status that is neither success nor "not found" means. */
static registry_rc_t registry_failed(const registry_t *r, const char *what, long status,
                                     char *errstr, size_t errstr_size) {
    char msg[320];

    registry_message(r, msg, sizeof(msg));
    errstr_fmt(errstr, errstr_size, "schema registry %s: %s: HTTP %ld: %s", r->base, what, status,
               msg);
    /* 409 (incompatible) and 422 (invalid schema) are answers about the
     * schema; anything else (auth, 5xx...) is the registry's state. */
    return status == 409 || status == 422 ? REGISTRY_REFUSED : REGISTRY_UNAVAILABLE;
}

registry_rc_t registry_schema_by_id(registry_t *r, int64_t id, char **schema, char *errstr,
                                    size_t errstr_size) {
    char path[64], what[64];
    long status = 0;
    json_t *root = NULL; /* owned */
    const char *text;
    registry_rc_t rc;

    snprintf(path, sizeof(path), "/schemas/ids/%" PRId64, id);
    snprintf(what, sizeof(what), "schema id %" PRId64, id);
    rc = registry_call(r, path, NULL, &status, errstr, errstr_size);
    if (rc != REGISTRY_OK) return rc;
    if (status == 404) {
        errstr_fmt(errstr, errstr_size, "schema id %" PRId64 " is not in the schema registry", id);
        return REGISTRY_NOT_FOUND;
    }
    if (status != 200) {
        rc = registry_failed(r, what, status, errstr, errstr_size);
        return rc == REGISTRY_REFUSED ? REGISTRY_UNAVAILABLE : rc;
    }
    root = json_loads(r->body, 0, NULL);
    text = root ? json_string_value(json_object_get(root, "schema")) : NULL;
    if (text == NULL) {
        errstr_fmt(errstr, errstr_size, "schema registry %s: %s: an answer without a schema",
                   r->base, what);
        rc = REGISTRY_UNAVAILABLE;
    } else if ((*schema = strdup(text)) == NULL) {
        errstr_fmt(errstr, errstr_size, "out of memory");
        rc = REGISTRY_UNAVAILABLE;
    }
    json_decref(root);
    return rc;
}

registry_rc_t registry_register(registry_t *r, const char *subject, const char *schema, int64_t *id,
                                char *errstr, size_t errstr_size) {
    char *esc = NULL, *body = NULL, *path = NULL; /* owned */
    json_t *req = NULL, *root = NULL;             /* owned */
    registry_rc_t rc = REGISTRY_UNAVAILABLE;
    long status = 0;
    json_int_t got;
    size_t len;

    esc = curl_easy_escape(r->curl, subject, 0);
    req = json_pack("{s:s}", "schema", schema);
    body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    len = esc ? strlen(esc) + 32 : 0;
    if (esc == NULL || body == NULL || (path = malloc(len)) == NULL) {
        errstr_fmt(errstr, errstr_size, "out of memory");
        goto out;
    }
    snprintf(path, len, "/subjects/%s/versions", esc);
    rc = registry_call(r, path, body, &status, errstr, errstr_size);
    if (rc != REGISTRY_OK) goto out;
    if (status != 200) {
        char what[200];
        snprintf(what, sizeof(what), "registering under %.150s", subject);
        rc = registry_failed(r, what, status, errstr, errstr_size);
        goto out;
    }
    root = json_loads(r->body, 0, NULL);
    if (root == NULL || !json_is_integer(json_object_get(root, "id")) ||
        (got = json_integer_value(json_object_get(root, "id"))) < 0 || got > INT32_MAX) {
        errstr_fmt(errstr, errstr_size,
                   "schema registry %s: registering under %.150s: an answer without an id", r->base,
                   subject);
        rc = REGISTRY_UNAVAILABLE;
        goto out;
    }
    *id = (int64_t)got;
out:
    json_decref(root);
    json_decref(req);
    free(body);
    free(path);
    curl_free(esc);
    return rc;
}

int registry_fetch(void *ctx, int64_t id, char **json, char *errstr, size_t errstr_size) {
    switch (registry_schema_by_id(ctx, id, json, errstr, errstr_size)) {
    case REGISTRY_OK: return 0;
    case REGISTRY_NOT_FOUND: return 1;
    default: return -1;
    }
}
