/*
 * strmap.h -- a string-keyed hash map (open addressing, FNV-1a) for
 * working sets: per batch, the customer-months touched and order ids seen;
 * per partition, the events acknowledged whose outbox entry still waits
 * (publish.c).  Keys are copied into the map's arena; values are the
 * caller's.  Cleared, keeping its memory, so it never grows past its
 * largest set.
 */
#ifndef TIERD_STRMAP_H
#define TIERD_STRMAP_H

#include "arena.h"

#include <stddef.h>

typedef struct strmap_slot {
    char *key;
    size_t len;
    void *value;
} strmap_slot_t;

typedef struct strmap {
    strmap_slot_t *slots;
    size_t cap, n;
    arena_t keys; /* the copies of the keys */
} strmap_t;

/* Returns the slot for key, inserting it (value NULL) when absent;
 * *created tells which.  NULL only when out of memory. */
strmap_slot_t *strmap_put(strmap_t *m, const char *key, size_t len, int *created);
strmap_slot_t *strmap_get(const strmap_t *m, const char *key, size_t len);
/* Empties the map, keeping its memory; free_value (may be NULL) is called per value. */
void strmap_clear(strmap_t *m, void (*free_value)(void *));
void strmap_free(strmap_t *m, void (*free_value)(void *));

#endif
