/*
 * arena.h -- bump allocation for the short-lived strings of one batch
 * (dedupe fields, formatted values, map keys).  Nothing is freed one by
 * one: arena_reset makes all of it reusable at once and keeps the memory,
 * so a steady stream of batches stops calling malloc.  Pointers stay
 * valid until the next reset.
 */
#ifndef TIERD_ARENA_H
#define TIERD_ARENA_H

#include <stddef.h>

typedef struct arena_chunk arena_chunk_t;

typedef struct arena {
    arena_chunk_t *head; /* every chunk, oldest first */
    arena_chunk_t *cur;  /* the one being filled */
} arena_t;

/* n bytes aligned for any type; NULL when out of memory. */
void *arena_alloc(arena_t *a, size_t n);
/* Gives back the end of the allocation p, keeping its first n bytes (an
 * allocation made for an upper bound).  p MUST be the last allocation:
 * only a p outside the current chunk is recognised and left alone. */
void arena_shrink(arena_t *a, void *p, size_t n);
/* A NUL-terminated copy of s[0..len). */
char *arena_strndup(arena_t *a, const char *s, size_t len);
void arena_reset(arena_t *a);
void arena_free(arena_t *a);

#endif
