/*
 * bench_decode.c -- ns per record for the two Order decoding paths.
 *
 * Prints, asserts nothing: timings belong to a machine, not to a test.
 * Each shape of record is decoded over and over by decode_order() (the
 * direct path the daemon uses) and decode_order_libavro() (the libavro
 * generic values it replaced), in alternating rounds so that a noisy
 * neighbour slows both alike; the best and the median round are printed.
 *
 *   bench_decode [rounds]      (default 7)
 *
 * Records are spliced from avro-c's own encodings (tbuf.c), as the unit
 * tests build them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "decode.h"
#include "tbuf.h"

typedef order_err_t (*decode_fn)(decoder_t *, const void *, size_t, order_t *, char *, size_t);

typedef struct shape {
    const char *name;
    size_t nlines;
    int framed;
} shape_t;

/* An Order of n lines, spliced field by field. */
static void build(tbuf_t *b, size_t nlines, int framed) {
    char sku[32];
    size_t i;

    if (framed) tb_confluent(b, 42);
    tb_string(b, "O-2024-000123", 13);
    tb_string(b, "C-000042", 8);
    tb_long(b, 1700000000000LL);
    tb_long(b, 0); /* SALE */
    tb_long(b, (int64_t)nlines);
    for (i = 0; i < nlines; i++) {
        int n = snprintf(sku, sizeof(sku), "SKU-%06zu", i);

        tb_string(b, sku, (size_t)n);
        tb_long(b, (int64_t)(i % 5) + 1);
        tb_long(b, 1250 + (int64_t)i * 7);
    }
    tb_long(b, 0);
    tb_string(b, "EUR", 3);
}

static double now_ns(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* ns per record over n decodes. */
static double run(decode_fn fn, decoder_t *d, const tbuf_t *b, order_t *o, long n) {
    char errstr[256];
    double t0 = now_ns();
    long i;

    for (i = 0; i < n; i++) {
        if (fn(d, b->b, b->n, o, errstr, sizeof(errstr)) != ORDER_OK) {
            fprintf(stderr, "bench_decode: a record did not decode: %s\n", errstr);
            exit(1);
        }
    }
    return (now_ns() - t0) / (double)n;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    static const shape_t shapes[] = {
        {"1 line", 1, 0},    {"2 lines", 2, 0},     {"2 lines, framed", 2, 1},
        {"10 lines", 10, 0}, {"100 lines", 100, 0}, {"1000 lines", 1000, 0},
    };
    int rounds = argc > 1 ? atoi(argv[1]) : 7;
    char errstr[256];
    decoder_t *d = decode_new(errstr, sizeof(errstr));
    order_t o_direct = {0}, o_libavro = {0};
    double direct[64], libavro[64];
    size_t s;
    int r;

    if (d == NULL) {
        fprintf(stderr, "bench_decode: %s\n", errstr);
        return 1;
    }
    if (rounds < 1 || rounds > 64) rounds = 7;
    printf("%-16s %6s  %22s  %22s  %7s\n", "record", "bytes", "direct ns (best/median)",
           "libavro ns (best/median)", "speedup");
    for (s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        tbuf_t b = tb_new();
        long n;

        build(&b, shapes[s].nlines, shapes[s].framed);
        /* About 50 ms of libavro decoding per round, after a warm-up. */
        n = (long)(5e7 / run(decode_order_libavro, d, &b, &o_libavro, 2000)) + 1;
        (void)run(decode_order, d, &b, &o_direct, n);
        for (r = 0; r < rounds; r++) {
            libavro[r] = run(decode_order_libavro, d, &b, &o_libavro, n);
            direct[r] = run(decode_order, d, &b, &o_direct, n);
        }
        qsort(direct, (size_t)rounds, sizeof(double), cmp_double);
        qsort(libavro, (size_t)rounds, sizeof(double), cmp_double);
        printf("%-16s %6zu  %10.1f / %9.1f  %10.1f / %9.1f  %6.1fx\n", shapes[s].name, b.n,
               direct[0], direct[rounds / 2], libavro[0], libavro[rounds / 2],
               libavro[rounds / 2] / direct[rounds / 2]);
        tb_free(&b);
    }
    order_reset(&o_direct);
    order_reset(&o_libavro);
    decode_destroy(d);
    return 0;
}
