#include "strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash(const char *k, size_t len) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static strmap_slot_t *find(strmap_slot_t *slots, size_t cap, const char *key, size_t len) {
    size_t i = (size_t)hash(key, len) & (cap - 1);
    for (;;) {
        strmap_slot_t *s = &slots[i];
        if (!s->key || (s->len == len && memcmp(s->key, key, len) == 0)) return s;
        i = (i + 1) & (cap - 1);
    }
}

static int grow(strmap_t *m) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    strmap_slot_t *slots = calloc(cap, sizeof(*slots));
    if (!slots) return -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key) continue;
        *find(slots, cap, m->slots[i].key, m->slots[i].len) = m->slots[i];
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

strmap_slot_t *strmap_put(strmap_t *m, const char *key, size_t len, int *created) {
    strmap_slot_t *s;
    if ((m->n + 1) * 4 > m->cap * 3 && grow(m) != 0) return NULL; /* load <= 3/4 */
    s = find(m->slots, m->cap, key, len);
    *created = 0;
    if (!s->key) {
        s->key = arena_strndup(&m->keys, key, len);
        if (!s->key) return NULL;
        s->len = len;
        s->value = NULL;
        m->n++;
        *created = 1;
    }
    return s;
}

strmap_slot_t *strmap_get(const strmap_t *m, const char *key, size_t len) {
    strmap_slot_t *s;
    if (!m->cap) return NULL;
    s = find(m->slots, m->cap, key, len);
    return s->key ? s : NULL;
}

void strmap_clear(strmap_t *m, void (*free_value)(void *)) {
    if (m->n == 0) return;
    if (free_value)
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].key) free_value(m->slots[i].value);
    memset(m->slots, 0, m->cap * sizeof(*m->slots));
    arena_reset(&m->keys);
    m->n = 0;
}

void strmap_free(strmap_t *m, void (*free_value)(void *)) {
    if (!m) return;
    strmap_clear(m, free_value);
    arena_free(&m->keys);
    free(m->slots);
    m->slots = NULL;
    m->cap = 0;
}
