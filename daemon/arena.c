#include "arena.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

enum { ARENA_CHUNK = 64 * 1024 };

struct arena_chunk {
    arena_chunk_t *next;
    size_t size, used;
    alignas(max_align_t) char data[];
};

void *arena_alloc(arena_t *a, size_t n) {
    const size_t align = alignof(max_align_t);
    n = (n + align - 1) & ~(align - 1);
    /* Move on through chunks kept from before the last reset; a request
     * bigger than the next one gets a chunk of its own, inserted there. */
    while (a->cur && a->cur->size - a->cur->used < n) {
        arena_chunk_t *next = a->cur->next;
        if (!next || next->size < n) break;
        next->used = 0;
        a->cur = next;
    }
    if (!a->cur || a->cur->size - a->cur->used < n) {
        size_t size = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        arena_chunk_t *c = malloc(sizeof(*c) + size);
        if (!c) return NULL;
        c->size = size;
        c->used = 0;
        if (a->cur) {
            c->next = a->cur->next;
            a->cur->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
        a->cur = c;
    }
    void *p = a->cur->data + a->cur->used;
    a->cur->used += n;
    return p;
}

void arena_shrink(arena_t *a, void *p, size_t n) {
    const size_t align = alignof(max_align_t);
    arena_chunk_t *c = a->cur;
    if (!c || (char *)p < c->data || (char *)p >= c->data + c->used) return;
    size_t end = (size_t)((char *)p - c->data) + ((n + align - 1) & ~(align - 1));
    if (end < c->used) c->used = end;
}

char *arena_strndup(arena_t *a, const char *s, size_t len) {
    char *p = arena_alloc(a, len + 1);
    if (!p) return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void arena_reset(arena_t *a) {
    a->cur = a->head;
    if (a->cur) a->cur->used = 0;
}

void arena_free(arena_t *a) {
    if (!a) return;
    for (arena_chunk_t *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->head = a->cur = NULL;
}
