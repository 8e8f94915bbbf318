/*
 * log.h -- the one log macro.  Lines go to stderr, one per event, so
 * journald (or a terminal) gets them as they are; the level is checked
 * before anything is formatted.  Never pass a secret to these.
 */
#ifndef TIERD_LOG_H
#define TIERD_LOG_H

typedef enum { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG } log_level_t;

/* The only mutable global: set at start or by SIGHUP, read by every
 * thread that logs (librdkafka's, the HTTP server's): atomic. */
extern _Atomic int log_level;

int log_level_parse(const char *name); /* -1 when unknown */
void log_write(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_at(lvl, mod, ...)                                                                      \
    do {                                                                                           \
        if ((lvl) <= log_level) log_write((lvl), (mod), __VA_ARGS__);                              \
    } while (0)
#define log_error(mod, ...) log_at(LOG_ERROR, mod, __VA_ARGS__)
#define log_warn(mod, ...) log_at(LOG_WARN, mod, __VA_ARGS__)
#define log_info(mod, ...) log_at(LOG_INFO, mod, __VA_ARGS__)
#define log_debug(mod, ...) log_at(LOG_DEBUG, mod, __VA_ARGS__)

#endif
