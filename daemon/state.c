/*
 * state.c -- one customer's state, its encoding and its arithmetic.
 *
 * Owns the byte layout described in state.h.  Must never read past the
 * buffer it is given, nor size an allocation from a count it has not first
 * bounded by the bytes left; a value it cannot fully vouch for is refused,
 * never half-read.  No I/O, no clock, no globals: the only static data is
 * the CRC table, a constant.
 */
#include "state.h"

#include "errstr.h"
#include "month.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Hashes                                                              */

/* CRC-32C, reflected polynomial 0x82F63B78, four bits at a time: a table
 * of 16 words is small enough to check by hand and still costs only two
 * lookups a byte.  Chosen over a hash because a CRC of 32 bits detects
 * every error burst of up to 32 bits: every single changed byte, surely. */
static const uint32_t crc32c_nibble[16] = {
    0x00000000, 0x105ec76f, 0x20bd8ede, 0x30e349b1, 0x417b1dbc, 0x5125dad3, 0x61c69362, 0x7198540d,
    0x82f63b78, 0x92a8fc17, 0xa24bb5a6, 0xb21572c9, 0xc38d26c4, 0xd3d3e1ab, 0xe330a81a, 0xf36e6f75,
};

#if defined(__x86_64__)
/* The same CRC with SSE 4.2's crc32 instruction (8 bytes a step), chosen
 * at run time: every state is checked on every read, and reviews and
 * tierctl dump read them all. */
__attribute__((target("sse4.2"))) static uint32_t crc_hw(const uint8_t *p, size_t n, uint32_t crc) {
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        crc = (uint32_t)__builtin_ia32_crc32di(crc, v);
    }
    for (; n > 0; p++, n--) crc = __builtin_ia32_crc32qi(crc, *p);
    return crc;
}
#endif

uint32_t state_checksum(const void *buf, size_t len) {
    const uint8_t *p = buf;
    uint32_t crc = 0xffffffffu;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) return crc_hw(p, len, crc) ^ 0xffffffffu;
#endif
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ crc32c_nibble[crc & 15];
        crc = (crc >> 4) ^ crc32c_nibble[crc & 15];
    }
    return crc ^ 0xffffffffu;
}

static uint64_t hash64(const char *s, size_t len) {
    uint64_t h = 0xcbf29ce484222325u; /* FNV-1a 64 offset basis */
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3u; /* FNV 64 prime */
    }
    /* splitmix64's finaliser: FNV-1a alone leaves the high bits depending
     * weakly on the last bytes, and the SKU fingerprint takes those. */
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9u;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebu;
    h ^= h >> 31;
    return h;
}

uint64_t state_order_fp(const char *order_id, size_t len) {
    return hash64(order_id, len);
}

uint32_t state_sku_fp(const char *sku, size_t len) {
    return (uint32_t)(hash64(sku, len) >> 32);
}

/* ------------------------------------------------------------------ */
/* Customer and months                                                 */

static uint64_t load_le64(const uint8_t *p);
static int sets_decode(state_month_t *m, uint32_t i, char *errstr, size_t errstr_size);

/* A month slot back to "just inserted", arrays kept. */
static void month_clear(state_month_t *m, int32_t month) {
    m->month = month;
    memset(&m->agg, 0, sizeof(m->agg));
    m->tier = 0;
    m->grade = POLICY_GRADE_NONE;
    m->qmask = 0;
    m->nskus = 0;
    m->nfps = 0;
    m->raw = m->rawfps = NULL;
    m->rawlen = 0;
}

void state_init(state_customer_t *c) {
    memset(c, 0, sizeof(*c));
    c->live_score_c = -1;
    c->scale = 'X';
}

void state_reset(state_customer_t *c) {
    memset(&c->st, 0, sizeof(c->st));
    c->seq = 0;
    c->live_score_c = -1;
    c->scale = 'X';
    c->nmonths = 0;
}

void state_free(state_customer_t *c) {
    if (!c) return;
    for (uint32_t i = 0; i < c->capmonths; i++) {
        free(c->months[i].skus);
        free(c->months[i].fps);
    }
    free(c->months);
    state_init(c);
}

/* Index of the first kept month >= m. */
static uint32_t month_lower(const state_customer_t *c, int32_t m) {
    uint32_t lo = 0, hi = c->nmonths;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (c->months[mid].month < m)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Room for n month slots (n <= STATE_MONTHS_MAX): -1 out of memory. */
static int months_reserve(state_customer_t *c, uint32_t n) {
    if (n <= c->capmonths) return 0;
    uint32_t cap = c->capmonths ? c->capmonths : 4;
    while (cap < n) cap *= 2;
    if (cap > STATE_MONTHS_MAX) cap = STATE_MONTHS_MAX;
    state_month_t *v = realloc(c->months, cap * sizeof(*v));
    if (!v) return -1;
    memset(v + c->capmonths, 0, (cap - c->capmonths) * sizeof(*v));
    c->months = v;
    c->capmonths = cap;
    return 0;
}

state_month_t *state_month(state_customer_t *c, int32_t m, int create) {
    uint32_t at = month_lower(c, m);
    if (at < c->nmonths && c->months[at].month == m) return &c->months[at];
    if (!create || c->nmonths == STATE_MONTHS_MAX) return NULL;
    if (months_reserve(c, c->nmonths + 1) != 0) return NULL;
    /* The spare slot just past the end moves to `at`, so its arrays are
     * reused rather than leaked or shared. */
    state_month_t spare = c->months[c->nmonths];
    memmove(&c->months[at + 1], &c->months[at], (c->nmonths - at) * sizeof(c->months[0]));
    c->months[at] = spare;
    month_clear(&c->months[at], m);
    c->nmonths++;
    return &c->months[at];
}

void state_drop_before(state_customer_t *c, int32_t m) {
    uint32_t k = month_lower(c, m);
    state_month_t dropped[STATE_MONTHS_MAX];
    if (k == 0) return;
    /* Rotate: the dropped slots go behind the kept ones, as spares. */
    memcpy(dropped, c->months, k * sizeof(c->months[0]));
    memmove(&c->months[0], &c->months[k], (c->nmonths - k) * sizeof(c->months[0]));
    memcpy(&c->months[c->nmonths - k], dropped, k * sizeof(c->months[0]));
    c->nmonths -= k;
}

/* Binary search of a sorted, distinct fingerprint array (element i read
 * by AT(v, i)): 1 when fp is there; *at is where it is, or where it would
 * go.  Branch-free: each step keeps lo or moves it by half with a
 * conditional move, so the random fingerprints cost no mispredicted
 * branches (this runs for every order and every SKU of a batch). */
#define FIND_FP(name, elem, type, AT)                                                              \
    static int name(const elem *v, uint32_t n, type fp, uint32_t *at) {                            \
        uint32_t lo = 0, len = n;                                                                  \
        if (n == 0) {                                                                              \
            *at = 0;                                                                               \
            return 0;                                                                              \
        }                                                                                          \
        while (len > 1) {                                                                          \
            uint32_t half = len / 2;                                                               \
            lo = AT(v, lo + half) < fp ? lo + half : lo;                                           \
            len -= half;                                                                           \
        }                                                                                          \
        lo += AT(v, lo) < fp;                                                                      \
        *at = lo;                                                                                  \
        return lo < n && AT(v, lo) == fp;                                                          \
    }
#define AT_INDEX(v, i) ((v)[i])
#define AT_LE64(v, i) load_le64((v) + 8 * (size_t)(i)) /* still in a value's bytes */
FIND_FP(fp_find, uint64_t, uint64_t, AT_INDEX)
FIND_FP(sku_find, uint32_t, uint32_t, AT_INDEX)
FIND_FP(raw_fp_find, uint8_t, uint64_t, AT_LE64)

int state_seen(const state_customer_t *c, uint64_t fp) {
    uint32_t at;
    for (uint32_t i = 0; i < c->nmonths; i++) {
        const state_month_t *m = &c->months[i];
        if (m->raw ? raw_fp_find(m->rawfps, m->nfps, fp, &at) : fp_find(m->fps, m->nfps, fp, &at))
            return 1;
    }
    return 0;
}

/* Room for `want` elements of `size` bytes in *v (capacity *cap), growing
 * at least twofold.  0, or -1 with *v untouched. */
static int reserve(void **v, uint32_t *cap, uint64_t want, size_t size) {
    uint64_t ncap;
    void *nv;
    if (want <= *cap) return 0;
    if (want > UINT32_MAX || want > SIZE_MAX / size) return -1;
    ncap = *cap ? (uint64_t)*cap * 2 : 8;
    if (ncap < want) ncap = want;
    if (ncap > UINT32_MAX || ncap > SIZE_MAX / size) ncap = want;
    nv = realloc(*v, (size_t)ncap * size);
    if (!nv) return -1;
    *v = nv;
    *cap = (uint32_t)ncap;
    return 0;
}

int state_add_fp(state_month_t *m, uint64_t fp) {
    uint32_t at;
    if (m->raw && sets_decode(m, 0, NULL, 0) < 0) return -1;
    /* Orders mostly come in id order: skip the search when fp is last. */
    if (m->nfps == 0 || m->fps[m->nfps - 1] < fp)
        at = m->nfps;
    else if (fp_find(m->fps, m->nfps, fp, &at))
        return 0;
    if (reserve((void **)&m->fps, &m->capfps, (uint64_t)m->nfps + 1, sizeof(*m->fps)) < 0)
        return -1;
    memmove(&m->fps[at + 1], &m->fps[at], (m->nfps - at) * sizeof(*m->fps));
    m->fps[at] = fp;
    m->nfps++;
    return 1;
}

static int u32_cmp(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

size_t state_order_skus(const order_t *o, uint32_t *out) {
    size_t k = 0, j = 0;
    for (uint32_t i = 0; i < o->nlines; i++)
        out[k++] = state_sku_fp(o->lines[i].sku, o->lines[i].sku_len);
    if (k > 24) {
        qsort(out, k, sizeof(*out), u32_cmp);
    } else {
        for (size_t i = 1; i < k; i++) { /* most orders have a few lines */
            uint32_t v = out[i];
            size_t at = i;
            for (; at > 0 && out[at - 1] > v; at--) out[at] = out[at - 1];
            out[at] = v;
        }
    }
    for (size_t i = 0; i < k; i++) /* distinct within the order */
        if (j == 0 || out[j - 1] != out[i]) out[j++] = out[i];
    return j;
}

/* Adds skus (sorted, distinct) to m->skus, all or none: the ones not there
 * yet are counted by binary search, then merged in one pass from the back,
 * so a large order costs O(k log n + n), not a memmove per SKU. */
static int add_skus(state_month_t *m, const uint32_t *skus, size_t n) {
    uint32_t at, k = 0;
    for (size_t j = 0; j < n; j++)
        if (!sku_find(m->skus, m->nskus, skus[j], &at)) k++;
    if (k == 0) return 0;
    if (reserve((void **)&m->skus, &m->capskus, (uint64_t)m->nskus + k, sizeof(*m->skus)) < 0)
        return -1;
    /* w is where the next largest goes; it never passes an element of
     * m->skus not yet read, since w - i new ones are still to come. */
    uint32_t i = m->nskus, w = m->nskus + k;
    size_t j = n;
    while (j > 0) {
        if (i > 0 && m->skus[i - 1] > skus[j - 1])
            m->skus[--w] = m->skus[--i];
        else if (i > 0 && m->skus[i - 1] == skus[j - 1])
            j--; /* there already */
        else
            m->skus[--w] = skus[--j];
    }
    m->nskus += k;
    return 0;
}

order_err_t state_apply_skus(state_month_t *m, const order_t *o, const uint32_t *skus, size_t n,
                             int64_t *excess) {
    *excess = 0;
    if (o->kind == ORDER_RETURN) {
        int64_t q = m->agg.qty - o->qty, a = m->agg.amount - o->amount;
        /* Both operands are >= 0, so these differences cannot overflow. */
        if (q < 0) {
            *excess = -q;
            q = 0;
        }
        m->agg.qty = q;
        m->agg.amount = a < 0 ? 0 : a;
        return ORDER_OK;
    }
    int64_t q, a, c;
    if (__builtin_add_overflow(m->agg.qty, o->qty, &q) ||
        __builtin_add_overflow(m->agg.amount, o->amount, &a) ||
        __builtin_add_overflow(m->agg.orders, 1, &c))
        return ORDER_ERR_OVERFLOW;
    if ((m->raw && sets_decode(m, 0, NULL, 0) < 0) || add_skus(m, skus, n) < 0)
        return ORDER_ERR_INTERNAL;
    m->agg.qty = q;
    m->agg.amount = a;
    m->agg.orders = c;
    m->agg.skus = (int64_t)m->nskus;
    return ORDER_OK;
}

order_err_t state_apply(state_month_t *m, const order_t *o, int64_t *excess) {
    uint32_t small[64], *skus = small;
    if (o->kind != ORDER_SALE) return state_apply_skus(m, o, NULL, 0, excess);
    if (o->nlines > sizeof(small) / sizeof(small[0]) &&
        !(skus = malloc((size_t)o->nlines * sizeof(*skus)))) /* owned here */
        return ORDER_ERR_INTERNAL;
    size_t n = state_order_skus(o, skus);
    order_err_t e = state_apply_skus(m, o, skus, n, excess);
    if (skus != small) free(skus);
    return e;
}

void state_window(const state_customer_t *c, int32_t end, int32_t W, policy_month_t *w) {
    int64_t first = (int64_t)end - W + 1;
    uint32_t k;
    if (W <= 0) return;
    k = first < INT32_MIN ? 0 : month_lower(c, (int32_t)first);
    for (int32_t i = 0; i < W; i++) {
        int64_t want = first + i;
        policy_month_t *p = &w[i];
        memset(p, 0, sizeof(*p));
        p->month = (int32_t)want; /* months below INT32_MIN wrap: no customer has them */
        p->grade = POLICY_GRADE_NONE;
        while (k < c->nmonths && c->months[k].month < want) k++;
        if (k < c->nmonths && c->months[k].month == want) {
            const state_month_t *m = &c->months[k];
            p->qty = m->agg.qty;
            p->amount = m->agg.amount;
            p->orders = m->agg.orders;
            p->skus = m->agg.skus;
            p->tier_in_effect = m->tier;
            p->grade = m->grade;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Encoding                                                            */

enum {
    FLAG_EVALUATED = 1u,
    FLAG_OVERRIDE = 2u,
    FLAGS_ALL = FLAG_EVALUATED | FLAG_OVERRIDE,
    CHECKSUM_SIZE = 4,
    MONTH_MIN_SIZE = 8,   /* eight one-byte varints and two empty sets */
    MONTH_MIN_SIZE_3 = 7, /* format 3: no SKU set length */
    MONTH_MIN_SIZE_2 = 9, /* format 2: nine one-byte varints, no fingerprints */
    GRADE_CODES = 5,
    SCALE_CODES = 4, /* 'X', '1', '2', '3' */
};

/* The scale digits by their code in customer_mark. */
static const char scales[] = "X123";

static const policy_grade_t grades[] = {POLICY_GRADE_NONE, POLICY_GRADE_A, POLICY_GRADE_B,
                                        POLICY_GRADE_C, POLICY_GRADE_D};

static uint64_t grade_code(policy_grade_t g) {
    for (uint64_t i = 0; i < sizeof(grades) / sizeof(grades[0]); i++)
        if (grades[i] == g) return i;
    return UINT64_MAX; /* refused on decode */
}

static uint64_t zigzag(int64_t v) {
    return v >= 0 ? (uint64_t)v * 2 : ((uint64_t) - (v + 1)) * 2 + 1;
}

static int64_t unzigzag(uint64_t z) {
    return (z & 1) ? -(int64_t)(z / 2) - 1 : (int64_t)(z / 2);
}

/* A writer that only counts when out is NULL, so the size and the bytes
 * come from one walk and cannot disagree. */
typedef struct wr {
    uint8_t *out;
    size_t n;
} wr_t;

static void put_u8(wr_t *w, uint8_t b) {
    if (w->out) w->out[w->n] = b;
    w->n++;
}

static void put_uv(wr_t *w, uint64_t v) {
    while (v >= 0x80) {
        put_u8(w, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    put_u8(w, (uint8_t)v);
}

static void put_bytes(wr_t *w, const void *v, size_t n) {
    if (w->out && n) memcpy(w->out + w->n, v, n);
    w->n += n;
}

static void put_le(wr_t *w, uint64_t v, int bytes) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (w->out) memcpy(w->out + w->n, &v, (size_t)bytes);
    w->n += (size_t)bytes;
#else
    for (int i = 0; i < bytes; i++) put_u8(w, (uint8_t)(v >> (8 * i)));
#endif
}

/* ------------------------------------------------------------------ */
/* Rice-coded sets (formats 3 and 4)                                  */

/* A strictly ascending set of n 32-bit SKU fingerprints is written as the
 * gaps between them: the first value itself, then each value minus the
 * one before minus 1.  A gap g is its high part g >> k in unary (that many
 * 1 bits, then a 0 bit) followed by its low k bits, least significant
 * first.  k = 32 - bitlen(n) is fixed by n, near log2 of the mean gap, so
 * n random fingerprints cost about 34 - log2(n) bits each instead of 32:
 * less from about 6 SKUs a month on.  Bits fill each byte from bit 0 up;
 * the last byte's unused high bits are 0.  (Order fingerprints stay fixed
 * width: a month holds few, and Rice would save under a byte.) */
static unsigned rice_k(uint32_t n) {
    unsigned b = 0;
    while (b < 32 && (n >> b)) b++; /* bit length of n */
    return 32 - b;
}

typedef struct bitwr {
    wr_t *w;
    uint64_t acc; /* bits not yet written, from bit 0 */
    unsigned n;   /* how many: always < 32 between calls */
} bitwr_t;

/* The low k bits of v, k <= 32; whole 32-bit words go out at once. */
static void bits_put(bitwr_t *b, uint64_t v, unsigned k) {
    b->acc |= (v & ((UINT64_C(1) << k) - 1)) << b->n;
    b->n += k;
    if (b->n >= 32) {
        put_le(b->w, b->acc, 4);
        b->acc >>= 32;
        b->n -= 32;
    }
}

/* q 1 bits, then a 0. */
static void bits_unary_put(bitwr_t *b, uint64_t q) {
    for (; q >= 31; q -= 31) bits_put(b, UINT64_C(0x7fffffff), 31);
    bits_put(b, (UINT64_C(1) << q) - 1, (unsigned)q + 1);
}

/* A value not above the one before (a struct state_check refuses) ends
 * the set with a unary part longer than any gap may have, which decode
 * refuses: the bytes stay within rice_bound whatever the struct holds. */
static void put_rice(wr_t *w, const uint32_t *v, uint32_t n) {
    bitwr_t b = {w, 0, 0};
    const unsigned k = rice_k(n);
    const uint64_t low = (UINT64_C(1) << k) - 1;
    uint64_t prev = 0;
    for (uint32_t j = 0; j < n; j++) {
        uint64_t x = v[j];
        if (j && x <= prev) {
            bits_unary_put(&b, (UINT32_MAX >> k) + 1);
            break;
        }
        uint64_t gap = j ? x - prev - 1 : x, q = gap >> k;
        prev = x;
        if (q + 1 + k <= 32) { /* the usual case: unary and low bits in one */
            bits_put(&b, ((UINT64_C(1) << q) - 1) | (gap & low) << (q + 1), (unsigned)(q + 1 + k));
        } else {
            bits_unary_put(&b, q);
            bits_put(&b, gap, k);
        }
    }
    for (; b.n > 0; b.n = b.n > 8 ? b.n - 8 : 0) {
        put_u8(w, (uint8_t)b.acc);
        b.acc >>= 8;
    }
}

/* The bytes put_rice writes for v: ceil of the bits, the refused value's
 * long unary part included. */
static size_t rice_size(const uint32_t *v, uint32_t n) {
    const unsigned k = rice_k(n);
    uint64_t bits = 0, prev = 0;
    for (uint32_t j = 0; j < n; j++) {
        uint64_t x = v[j];
        if (j && x <= prev) {
            bits += (UINT32_MAX >> k) + 2;
            break;
        }
        bits += ((j ? x - prev - 1 : x) >> k) + 1 + k;
        prev = x;
    }
    return (size_t)((bits + 7) / 8);
}

/* The bytes a set of n values takes at most: n (k + 1) bits, plus the
 * unary parts, which add up to at most UINT32_MAX >> k < 2n, plus a
 * refused value's (UINT32_MAX >> k) + 2. */
static size_t rice_bound(uint32_t n) {
    return ((size_t)n * 36 + 2 + 7) / 8;
}

/* n fingerprints of `bytes` bytes each, little-endian: copied whole on a
 * little-endian host (the layout in memory is the encoding's). */
static void put_fps(wr_t *w, const void *v, uint32_t n, int bytes) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (w->out && n) memcpy(w->out + w->n, v, (size_t)n * (size_t)bytes);
    w->n += (size_t)n * (size_t)bytes;
#else
    for (uint32_t j = 0; j < n; j++)
        put_le(w, bytes == 4 ? ((const uint32_t *)v)[j] : ((const uint64_t *)v)[j], bytes);
#endif
}

enum {
    /* The largest customer_mark and month_mark; one more is refused. */
    CUSTOMER_MARK_MAX = 4 * SCALE_CODES * (POLICY_TIERS_MAX + 1) - 1,
    MONTH_MARK_MAX = (POLICY_TIERS_MAX + 1) * GRADE_CODES * (1 << POLICY_QUOTA__COUNT) - 1,
};

/* flags, scale and override tier in one varint, mixed radix: one byte
 * without an override.  A struct with a part out of range gets a mark
 * decode refuses. */
static uint64_t customer_mark(const state_customer_t *c) {
    uint64_t flags =
        (c->st.evaluated ? FLAG_EVALUATED : 0u) | (c->st.has_override ? FLAG_OVERRIDE : 0u);
    const char *at = c->scale ? strchr(scales, c->scale) : NULL;
    if (!at || c->st.override_tier < 0 || c->st.override_tier > POLICY_TIERS_MAX)
        return CUSTOMER_MARK_MAX + 1;
    return flags + 4 * ((uint64_t)(at - scales) + SCALE_CODES * (uint64_t)c->st.override_tier);
}

/* tier, grade and quota mask in one varint, mixed radix: one byte for a
 * month with no quota fired.  Out of range parts: as customer_mark. */
static uint64_t month_mark(const state_month_t *m) {
    uint64_t g = grade_code(m->grade);
    if (m->tier < 0 || m->tier > POLICY_TIERS_MAX || g >= GRADE_CODES ||
        m->qmask >> POLICY_QUOTA__COUNT)
        return MONTH_MARK_MAX + 1;
    return (uint64_t)m->tier + (POLICY_TIERS_MAX + 1) * (g + GRADE_CODES * (uint64_t)m->qmask);
}

static size_t put_customer(const state_customer_t *c, uint8_t *out) {
    wr_t w = {out, 0};
    put_u8(&w, STATE_FORMAT);
    put_uv(&w, customer_mark(c));
    put_uv(&w, (uint64_t)(int64_t)c->st.tier);
    put_uv(&w, (uint64_t)c->seq);
    put_uv(&w, (uint64_t)((int64_t)c->live_score_c + 1)); /* -1 (none) is 0 */
    put_uv(&w, c->nmonths);
    for (uint32_t i = 0; i < c->nmonths; i++) {
        const state_month_t *m = &c->months[i];
        if (i == 0)
            put_uv(&w, zigzag(m->month));
        else /* ascending, so this is >= 0; (uint64_t) keeps a bad value visible */
            put_uv(&w, (uint64_t)((int64_t)m->month - c->months[i - 1].month - 1));
        put_uv(&w, (uint64_t)m->agg.qty);
        put_uv(&w, (uint64_t)m->agg.amount);
        put_uv(&w, (uint64_t)m->agg.orders);
        put_uv(&w, month_mark(m));
        put_uv(&w, m->nskus);
        if (m->raw) { /* unchanged since decoded: its bytes as they were */
            put_uv(&w, m->rawlen);
            put_bytes(&w, m->raw, m->rawlen);
            put_uv(&w, m->nfps);
            put_bytes(&w, m->rawfps, 8 * (size_t)m->nfps);
            continue;
        }
        put_uv(&w, rice_size(m->skus, m->nskus));
        put_rice(&w, m->skus, m->nskus);
        put_uv(&w, m->nfps);
        put_fps(&w, m->fps, m->nfps, 8);
    }
    /* first_month from the first kept month: one byte, not three */
    put_uv(&w, zigzag((int64_t)c->st.first_month - (c->nmonths ? c->months[0].month : 0)));
    if (out) {
        uint32_t crc = state_checksum(out, w.n);
        put_le(&w, crc, CHECKSUM_SIZE);
    } else {
        w.n += CHECKSUM_SIZE;
    }
    return w.n;
}

size_t state_encoded_size(const state_customer_t *c) {
    return put_customer(c, NULL);
}

size_t state_encoded_bound(const state_customer_t *c) {
    /* A varint takes at most 10 bytes: the header's 4, the count and
     * first_month, each month's 5, its two counts and the SKU set's
     * length, then the sets. */
    size_t n = 1 + 8 * 10 + 1 + CHECKSUM_SIZE;
    for (uint32_t i = 0; i < c->nmonths; i++) {
        const state_month_t *m = &c->months[i];
        n += 8 * 10 + (m->raw ? m->rawlen : rice_bound(m->nskus)) + 8 * (size_t)m->nfps;
    }
    return n;
}

size_t state_encode(const state_customer_t *c, uint8_t *out) {
    return put_customer(c, out);
}

const uint8_t *state_encode_in(const state_customer_t *c, arena_t *a, size_t *len) {
    uint8_t *blob = arena_alloc(a, state_encoded_bound(c));
    if (!blob) return NULL;
    *len = put_customer(c, blob);
    arena_shrink(a, blob, *len);
    return blob;
}

/* A reader over [p, end): every get checks what is left first. */
typedef struct rd {
    const uint8_t *p, *end;
    char *errstr;
    size_t errstr_size;
    int lazy; /* formats 3 and 4: the sets left in the bytes (state_decode_lazy) */
} rd_t;

static size_t left(const rd_t *r) {
    return (size_t)(r->end - r->p);
}

static int get_u8(rd_t *r, const char *what, uint8_t *v) {
    if (r->p == r->end) {
        errstr_fmt(r->errstr, r->errstr_size, "customer state truncated at %s", what);
        return -1;
    }
    *v = *r->p++;
    return 0;
}

/* A varint in its shortest form, at most 64 bits. */
static int get_uv(rd_t *r, const char *what, uint64_t *v) {
    if (r->p < r->end && *r->p < 0x80) { /* one byte: most of a value's varints */
        *v = *r->p++;
        return 0;
    }
    uint64_t x = 0;
    for (unsigned shift = 0;; shift += 7) {
        uint8_t b;
        if (get_u8(r, what, &b) < 0) return -1;
        if (shift == 63 && b > 1) {
            errstr_fmt(r->errstr, r->errstr_size, "customer state: %s does not fit 64 bits", what);
            return -1;
        }
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            if (b == 0 && shift > 0) {
                errstr_fmt(r->errstr, r->errstr_size,
                           "customer state: %s is a varint with a redundant zero byte", what);
                return -1;
            }
            *v = x;
            return 0;
        }
    }
}

/* An unsigned varint in [0, max]. */
static int get_range(rd_t *r, const char *what, uint64_t max, uint64_t *v) {
    if (get_uv(r, what, v) < 0) return -1;
    if (*v > max) {
        errstr_fmt(r->errstr, r->errstr_size, "customer state: %s %llu is above %llu", what,
                   (unsigned long long)*v, (unsigned long long)max);
        return -1;
    }
    return 0;
}

/* A zigzag varint in [lo, hi]. */
static int get_sv(rd_t *r, const char *what, int64_t lo, int64_t hi, int64_t *v) {
    uint64_t z;
    if (get_uv(r, what, &z) < 0) return -1;
    *v = unzigzag(z);
    if (*v < lo || *v > hi) {
        errstr_fmt(r->errstr, r->errstr_size, "customer state: %s %lld is outside %lld..%lld", what,
                   (long long)*v, (long long)lo, (long long)hi);
        return -1;
    }
    return 0;
}

#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
static uint64_t get_le(rd_t *r, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)r->p[i] << (8 * i);
    r->p += bytes;
    return v;
}
#endif

/* n fingerprints of `bytes` bytes, little-endian, into v (format 2);
 * get_count checked that they are there. */
static void get_fps(rd_t *r, void *v, uint32_t n, int bytes) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (n) memcpy(v, r->p, (size_t)n * (size_t)bytes);
    r->p += (size_t)n * (size_t)bytes;
#else
    for (uint32_t j = 0; j < n; j++) {
        if (bytes == 4)
            ((uint32_t *)v)[j] = (uint32_t)get_le(r, 4);
        else
            ((uint64_t *)v)[j] = get_le(r, 8);
    }
#endif
}

/* A count of items of `size` bytes each that must fit in what is left
 * (format 2): the bound every allocation below relies on. */
static int get_count(rd_t *r, const char *what, size_t size, uint32_t *n) {
    uint64_t v;
    if (get_uv(r, what, &v) < 0) return -1;
    if (v > left(r) / size) {
        errstr_fmt(r->errstr, r->errstr_size,
                   "customer state: %llu %s need more than the %zu bytes left",
                   (unsigned long long)v, what, left(r));
        return -1;
    }
    *n = (uint32_t)v;
    return 0;
}

/* The count of a Rice-coded SKU set (format 3): its n values take at
 * least n (k + 1) bits, which must fit in what is left, so a count never
 * asks for more than 32 bytes of memory for a byte of the value. */
static int get_set_count(rd_t *r, uint32_t *n) {
    uint64_t v;
    if (get_uv(r, "SKU count", &v) < 0) return -1;
    if (v > UINT32_MAX || v * (rice_k((uint32_t)v) + 1) > (uint64_t)left(r) * 8) {
        errstr_fmt(r->errstr, r->errstr_size,
                   "customer state: %llu SKU fingerprints need more than the %zu bytes left",
                   (unsigned long long)v, left(r));
        return -1;
    }
    *n = (uint32_t)v;
    return 0;
}

typedef struct bitrd {
    rd_t *r;
    uint64_t acc; /* bits read from r and not yet used, from bit 0; 0 above */
    unsigned n;   /* how many */
} bitrd_t;

static uint32_t load_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t load_le64(const uint8_t *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
#else
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
#endif
}

/* Whole bytes into acc while they fit: eight at once while eight are
 * left, else one by one. */
static void bits_fill(bitrd_t *b) {
    if (b->n <= 56 && left(b->r) >= 8) {
        unsigned c = (64 - b->n) / 8; /* bytes that fit: 1 to 8 */
        uint64_t v = load_le64(b->r->p);
        if (c < 8) v &= (UINT64_C(1) << (8 * c)) - 1;
        b->acc |= v << b->n;
        b->r->p += c;
        b->n += 8 * c;
        return;
    }
    while (b->n <= 56 && b->r->p < b->r->end) {
        b->acc |= (uint64_t)*b->r->p++ << b->n;
        b->n += 8;
    }
}

/* k <= 32 bits; -1 when the value ends first. */
static int bits_get(bitrd_t *b, unsigned k, uint64_t *v) {
    if (b->n < k) {
        bits_fill(b);
        if (b->n < k) return -1;
    }
    *v = b->acc & ((UINT64_C(1) << k) - 1);
    b->acc >>= k;
    b->n -= k;
    return 0;
}

/* The 1 bits before the next 0: -1 when the value ends first, -2 when
 * there are more than max. */
static int bits_unary(bitrd_t *b, uint64_t max, uint64_t *q) {
    uint64_t c = 0;
    for (;;) {
        if (b->n == 0) {
            bits_fill(b);
            if (b->n == 0) return -1;
        }
        uint64_t zeros = ~b->acc;
        if (b->n < 64) zeros &= (UINT64_C(1) << b->n) - 1;
        if (zeros) {
            unsigned t = (unsigned)__builtin_ctzll(zeros);
            c += t;
            b->acc = t + 1 < 64 ? b->acc >> (t + 1) : 0;
            b->n -= t + 1;
            *q = c;
            return c > max ? -2 : 0;
        }
        c += b->n;
        b->acc = 0;
        b->n = 0;
        if (c > max) return -2;
    }
}

/* A set put_rice wrote, into v (room for n), or only checked when v is
 * NULL: values strictly ascending by construction, below 2^32, the last
 * byte's spare bits 0. */
static int get_rice(rd_t *r, uint32_t *v, uint32_t n, uint32_t i) {
    const unsigned k = rice_k(n);
    const uint8_t *base = r->p;
    const size_t avail = left(r);
    uint64_t prev = 0, pos = 0; /* pos: bits used from base */
    uint32_t j = 0;
    /* The usual gap whole in the eight bytes at pos (at least 57 bits of
     * them past pos): its unary part by one count of trailing ones, its
     * low bits by one shift.  Anything else goes on bit by bit below. */
    for (; j < n && (pos >> 3) + 8 <= avail; j++) {
        uint64_t w = load_le64(base + (pos >> 3)) >> (pos & 7);
        uint64_t zeros = ~w & ((UINT64_C(1) << 57) - 1);
        if (!zeros) break;
        unsigned q = (unsigned)__builtin_ctzll(zeros);
        if (q + 1 + k > 57) break;
        if (q > (UINT32_MAX >> k)) goto big;
        uint64_t x = (uint64_t)q << k | (w >> (q + 1) & ((UINT64_C(1) << k) - 1));
        if (j) x += prev + 1;
        if (x > UINT32_MAX) goto big;
        if (v) v[j] = (uint32_t)x;
        prev = x;
        pos += q + 1 + k;
    }
    r->p = base + (pos >> 3);
    bitrd_t b = {r, 0, 0};
    if (pos & 7) { /* the byte partly used: its bits not used yet */
        b.acc = (uint64_t)*r->p++ >> (pos & 7);
        b.n = 8 - (unsigned)(pos & 7);
    }
    for (; j < n; j++) {
        uint64_t q, x;
        int rc = bits_unary(&b, UINT32_MAX >> k, &q);
        if (rc == -2) goto big;
        if (rc < 0 || bits_get(&b, k, &x) < 0) goto trunc;
        x |= q << k;
        if (j) x += prev + 1;
        if (x > UINT32_MAX) goto big;
        if (v) v[j] = (uint32_t)x;
        prev = x;
    }
    /* What was read ahead goes back; the bits left of the last byte
     * used must be 0. */
    r->p -= b.n / 8;
    if (b.acc & ((UINT64_C(1) << (b.n % 8)) - 1)) {
        errstr_fmt(r->errstr, r->errstr_size,
                   "customer state: SKU fingerprints of month %u end in bits that are not 0", i);
        return -1;
    }
    return 0;
trunc:
    errstr_fmt(r->errstr, r->errstr_size,
               "customer state truncated in the SKU fingerprints of month %u", i);
    return -1;
big:
    errstr_fmt(r->errstr, r->errstr_size,
               "customer state: SKU fingerprints of month %u exceed 32 bits", i);
    return -1;
}

/* n little-endian words of `bytes` bytes (4 or 8) at v, in a value's
 * bytes: strictly ascending, or -1 naming what. */
static int ascending(rd_t *r, const uint8_t *v, uint32_t n, int bytes, const char *what,
                     uint32_t i) {
    for (uint32_t j = 1; j < n; j++) {
        const uint8_t *p = v + (size_t)j * (size_t)bytes;
        if (bytes == 4 ? load_le32(p) <= load_le32(p - 4) : load_le64(p) <= load_le64(p - 8)) {
            errstr_fmt(r->errstr, r->errstr_size,
                       "customer state: %s of month %u not strictly ascending", what, i);
            return -1;
        }
    }
    return 0;
}

/* Tier, grade and quota mask: one varint in format 3 (month_mark), three
 * in format 2. */
static int get_month_mark(rd_t *r, int format, state_month_t *m) {
    const uint64_t tiers = POLICY_TIERS_MAX + 1, qmasks = UINT64_C(1) << POLICY_QUOTA__COUNT;
    uint64_t v, t, g, q;
    if (format == 2) {
        if (get_range(r, "month tier", POLICY_TIERS_MAX, &t) < 0 ||
            get_range(r, "grade", GRADE_CODES - 1, &g) < 0 ||
            get_range(r, "quota mask", qmasks - 1, &q) < 0)
            return -1;
    } else {
        if (get_range(r, "month's tier, grade and quota mask", MONTH_MARK_MAX, &v) < 0) return -1;
        t = v % tiers;
        g = v / tiers % GRADE_CODES;
        q = v / tiers / GRADE_CODES;
    }
    m->tier = (int32_t)t;
    m->grade = grades[g];
    m->qmask = (uint32_t)q;
    return 0;
}

/* The SKU set's length in bytes (format 4): within what is left, and
 * between n codes of k + 1 bits and rice_bound (0 for an empty set). */
static int get_set_size(rd_t *r, uint32_t n, uint32_t i, size_t *size) {
    uint64_t v, lo = ((uint64_t)n * (rice_k(n) + 1) + 7) / 8, hi = n ? rice_bound(n) : 0;
    if (get_uv(r, "SKU set length", &v) < 0) return -1;
    if (v > left(r) || v < lo || v > hi) {
        errstr_fmt(r->errstr, r->errstr_size,
                   "customer state: the SKU fingerprints of month %u claim %llu bytes (%zu left, "
                   "%u of them take %llu to %llu)",
                   i, (unsigned long long)v, left(r), n, (unsigned long long)lo,
                   (unsigned long long)hi);
        return -1;
    }
    *size = (size_t)v;
    return 0;
}

/* A set put_rice wrote in exactly size bytes (format 4), as get_rice. */
static int get_rice_sized(rd_t *r, uint32_t *v, uint32_t n, size_t size, uint32_t i) {
    rd_t s = *r;
    s.end = r->p + size;
    if (get_rice(&s, v, n, i) < 0) return -1;
    if (s.p != s.end) {
        errstr_fmt(r->errstr, r->errstr_size,
                   "customer state: the SKU fingerprints of month %u take %zu bytes, not the %zu "
                   "stored",
                   i, (size_t)(s.p - r->p), size);
        return -1;
    }
    r->p = s.end;
    return 0;
}

/* The lazy reading of a month's sets (state_decode_lazy): left where
 * they are.  Format 4's SKU set is skipped by its length, its codes read
 * when the set is first changed (sets_decode); format 3's has no length,
 * so it is walked (and checked) to find its end.  The order fingerprints
 * are checked here, as state_seen searches them in place. */
static int get_sets_lazy(rd_t *r, int format, state_month_t *m, uint32_t i) {
    const uint8_t *skus;
    size_t size;
    if (get_set_count(r, &m->nskus) < 0) return -1;
    if (format == 3) {
        skus = r->p;
        if (get_rice(r, NULL, m->nskus, i) < 0) return -1;
        size = (size_t)(r->p - skus);
    } else {
        if (get_set_size(r, m->nskus, i, &size) < 0) return -1;
        skus = r->p;
        r->p += size;
    }
    m->agg.skus = (int64_t)m->nskus;
    if (get_count(r, "order fingerprints", 8, &m->nfps) < 0 ||
        ascending(r, r->p, m->nfps, 8, "order fingerprints", i) < 0)
        return -1;
    m->rawfps = r->p;
    r->p += 8 * (size_t)m->nfps;
    m->raw = skus;
    m->rawlen = size;
    return 0;
}

/* One month's SKU and order fingerprints, in any format. */
static int get_sets(rd_t *r, int format, state_month_t *m, uint32_t i) {
    size_t size = 0;
    if (format >= 3 && r->lazy) return get_sets_lazy(r, format, m, i);
    if (format == 2 ? get_count(r, "SKU fingerprints", 4, &m->nskus) : get_set_count(r, &m->nskus))
        return -1;
    if (format == 4 && get_set_size(r, m->nskus, i, &size) < 0) return -1;
    if (reserve((void **)&m->skus, &m->capskus, m->nskus, sizeof(*m->skus)) < 0) goto oom;
    if (format == 2) {
        if (ascending(r, r->p, m->nskus, 4, "SKU fingerprints", i) < 0) return -1;
        get_fps(r, m->skus, m->nskus, 4);
    } else if ((format == 3 ? get_rice(r, m->skus, m->nskus, i)
                            : get_rice_sized(r, m->skus, m->nskus, size, i)) < 0) {
        return -1;
    }
    m->agg.skus = (int64_t)m->nskus;

    if (get_count(r, "order fingerprints", 8, &m->nfps) < 0) return -1;
    if (reserve((void **)&m->fps, &m->capfps, m->nfps, sizeof(*m->fps)) < 0) goto oom;
    if (ascending(r, r->p, m->nfps, 8, "order fingerprints", i) < 0) return -1;
    get_fps(r, m->fps, m->nfps, 8);
    return 0;
oom:
    /* The counts were bounded by the buffer, so this is a real shortage. */
    m->nskus = m->nfps = 0;
    errstr_fmt(r->errstr, r->errstr_size, "customer state: out of memory for month %u", i);
    return -1;
}

/* Month i, which state_decode_lazy left in the bytes, gets its sets
 * decoded, the SKU codes checked as state_decode checks them: 0; -1 when
 * they do not parse, -2 out of memory (errstr says which); either way m
 * is left as it was. */
static int sets_decode(state_month_t *m, uint32_t i, char *errstr, size_t errstr_size) {
    rd_t r = {m->raw, m->raw + m->rawlen, errstr, errstr_size, 0};
    if (reserve((void **)&m->skus, &m->capskus, m->nskus, sizeof(*m->skus)) < 0 ||
        reserve((void **)&m->fps, &m->capfps, m->nfps, sizeof(*m->fps)) < 0) {
        errstr_fmt(errstr, errstr_size, "customer state: out of memory for month %u", i);
        return -2;
    }
    if (get_rice_sized(&r, m->skus, m->nskus, m->rawlen, i) < 0) return -1;
    r.p = m->rawfps;
    r.end = m->rawfps + 8 * (size_t)m->nfps;
    get_fps(&r, m->fps, m->nfps, 8);
    m->raw = m->rawfps = NULL;
    m->rawlen = 0;
    return 0;
}

int state_unpack(state_customer_t *c, int32_t month, char *errstr, size_t errstr_size) {
    for (uint32_t i = 0; i < c->nmonths; i++)
        if (c->months[i].month == month)
            return c->months[i].raw ? sets_decode(&c->months[i], i, errstr, errstr_size) : 0;
    return 0;
}

static int get_month(rd_t *r, int format, state_customer_t *c, uint32_t i) {
    state_month_t *m = &c->months[i];
    uint64_t v;
    int64_t s;

    if (i == 0) {
        if (get_sv(r, "month", MONTH_MIN, MONTH_MAX, &s) < 0) return -1;
    } else {
        if (get_uv(r, "month gap", &v) < 0) return -1;
        s = (int64_t)c->months[i - 1].month + 1;
        if (s > MONTH_MAX || v > (uint64_t)(MONTH_MAX - s)) {
            errstr_fmt(r->errstr, r->errstr_size,
                       "customer state: month gap %llu takes month %u past the last "
                       "representable month",
                       (unsigned long long)v, i);
            return -1;
        }
        s += (int64_t)v;
    }
    month_clear(m, (int32_t)s);
    if (get_range(r, "qty", INT64_MAX, &v) < 0) return -1;
    m->agg.qty = (int64_t)v;
    if (get_range(r, "amount", INT64_MAX, &v) < 0) return -1;
    m->agg.amount = (int64_t)v;
    if (get_range(r, "orders", INT64_MAX, &v) < 0) return -1;
    m->agg.orders = (int64_t)v;
    if (get_month_mark(r, format, m) < 0) return -1;
    return get_sets(r, format, m, i);
}

/* first_month: format 2 holds it in the header, format 3 after the months,
 * from the first kept month. */
static int get_first_month(rd_t *r, int format, state_customer_t *c) {
    int64_t base = format == 2 || c->nmonths == 0 ? 0 : c->months[0].month, s;
    if (get_sv(r, "first month", MONTH_MIN - base, MONTH_MAX - base, &s) < 0) return -1;
    c->st.first_month = (int32_t)(s + base);
    return 0;
}

/* Format 2's header, after the format byte. */
static int get_header_2(rd_t *r, state_customer_t *c) {
    uint8_t b;
    uint64_t v;
    int64_t s;
    if (get_range(r, "flags", FLAGS_ALL, &v) < 0) return -1;
    c->st.evaluated = (v & FLAG_EVALUATED) != 0;
    c->st.has_override = (v & FLAG_OVERRIDE) != 0;
    if (get_range(r, "tier", POLICY_TIERS_MAX, &v) < 0) return -1;
    c->st.tier = (int32_t)v;
    if (get_first_month(r, 2, c) < 0) return -1;
    if (get_range(r, "override tier", POLICY_TIERS_MAX, &v) < 0) return -1;
    c->st.override_tier = (int32_t)v;
    if (get_range(r, "sequence", INT64_MAX, &v) < 0) return -1;
    c->seq = (int64_t)v;
    if (get_sv(r, "live score", -1, STATE_SCORE_MAX, &s) < 0) return -1;
    c->live_score_c = (int32_t)s;
    if (get_u8(r, "scale", &b) < 0) return -1;
    if (b != 'X' && (b < '1' || b > '3')) {
        errstr_fmt(r->errstr, r->errstr_size,
                   "customer state: scale byte 0x%02x is not 'X', '1', '2' or '3'", b);
        return -1;
    }
    c->scale = (char)b;
    return 0;
}

/* Format 3's header, after the format byte: customer_mark, tier, seq,
 * live score + 1. */
static int get_header_3(rd_t *r, state_customer_t *c) {
    uint64_t v;
    if (get_range(r, "flags, scale and override tier", CUSTOMER_MARK_MAX, &v) < 0) return -1;
    c->st.evaluated = (v & FLAG_EVALUATED) != 0;
    c->st.has_override = (v & FLAG_OVERRIDE) != 0;
    c->scale = scales[v / 4 % SCALE_CODES];
    c->st.override_tier = (int32_t)(v / 4 / SCALE_CODES);
    if (get_range(r, "tier", POLICY_TIERS_MAX, &v) < 0) return -1;
    c->st.tier = (int32_t)v;
    if (get_range(r, "sequence", INT64_MAX, &v) < 0) return -1;
    c->seq = (int64_t)v;
    if (get_range(r, "live score", STATE_SCORE_MAX + 1, &v) < 0) return -1;
    c->live_score_c = (int32_t)v - 1;
    return 0;
}

static int get_customer(rd_t *r, state_customer_t *c) {
    uint8_t b;
    uint64_t v;
    int format;

    if (get_u8(r, "format", &b) < 0) return -1;
    format = b; /* state_decode checked it before the checksum */
    if ((format == 2 ? get_header_2(r, c) : get_header_3(r, c)) < 0) return -1;
    if (get_range(r, "month count", STATE_MONTHS_MAX, &v) < 0) return -1;
    if (v > left(r) / (format == 2   ? MONTH_MIN_SIZE_2
                       : format == 3 ? MONTH_MIN_SIZE_3
                                     : MONTH_MIN_SIZE)) {
        errstr_fmt(r->errstr, r->errstr_size,
                   "customer state: %llu months need more than the %zu bytes left",
                   (unsigned long long)v, left(r));
        return -1;
    }
    if (months_reserve(c, (uint32_t)v) != 0) {
        errstr_fmt(r->errstr, r->errstr_size, "out of memory");
        return -1;
    }
    for (uint32_t i = 0; i < (uint32_t)v; i++) {
        if (get_month(r, format, c, i) < 0) return -1;
        c->nmonths = i + 1;
    }
    return format == 2 ? 0 : get_first_month(r, format, c);
}

static int decode(state_customer_t *c, const void *buf, size_t len, int lazy, char *errstr,
                  size_t errstr_size) {
    const uint8_t *p = buf;
    rd_t r = {p, p, errstr, errstr_size, lazy};
    uint32_t want, got;

    state_reset(c);
    if (len < 1 + CHECKSUM_SIZE) {
        errstr_fmt(errstr, errstr_size, "customer state of %zu bytes is truncated", len);
        return -1;
    }
    /* The format first: a value of another format gets the message that
     * says so, not "checksum mismatch". */
    if (p[0] < STATE_FORMAT_OLDEST || p[0] > STATE_FORMAT) {
        errstr_fmt(errstr, errstr_size,
                   "customer state has format %u, this tierd reads only formats %d to %d", p[0],
                   STATE_FORMAT_OLDEST, STATE_FORMAT);
        return -1;
    }
    r.end = p + len - CHECKSUM_SIZE;
    want = state_checksum(p, len - CHECKSUM_SIZE);
    got = load_le32(p + len - CHECKSUM_SIZE);
    if (want != got) {
        errstr_fmt(errstr, errstr_size,
                   "customer state checksum mismatch (stored %08x, computed %08x): "
                   "truncated or edited",
                   got, want);
        return -1;
    }
    if (get_customer(&r, c) < 0) goto fail;
    if (r.p != r.end) {
        errstr_fmt(errstr, errstr_size, "customer state has %zu trailing bytes", left(&r));
        goto fail;
    }
    return 0;
fail:
    state_reset(c);
    return -1;
}

int state_decode(state_customer_t *c, const void *buf, size_t len, char *errstr,
                 size_t errstr_size) {
    return decode(c, buf, len, 0, errstr, errstr_size);
}

int state_decode_lazy(state_customer_t *c, const void *buf, size_t len, char *errstr,
                      size_t errstr_size) {
    return decode(c, buf, len, 1, errstr, errstr_size);
}

int state_check(const state_customer_t *c, char *errstr, size_t errstr_size) {
    const policy_state_t *st = &c->st;
    if (st->tier < 0 || st->tier > POLICY_TIERS_MAX || st->override_tier < 0 ||
        st->override_tier > POLICY_TIERS_MAX) {
        errstr_fmt(errstr, errstr_size, "tier %d or override tier %d outside 0..%d", (int)st->tier,
                   (int)st->override_tier, POLICY_TIERS_MAX);
        return -1;
    }
    if (c->seq < 0 || c->live_score_c < -1 || c->live_score_c > STATE_SCORE_MAX) {
        errstr_fmt(errstr, errstr_size, "sequence %lld or live score %d out of range",
                   (long long)c->seq, (int)c->live_score_c);
        return -1;
    }
    if (c->scale != 'X' && (c->scale < '1' || c->scale > '3')) {
        errstr_fmt(errstr, errstr_size, "scale 0x%02x is not 'X', '1', '2' or '3'",
                   (unsigned)(unsigned char)c->scale);
        return -1;
    }
    if (st->first_month < MONTH_MIN || st->first_month > MONTH_MAX) {
        errstr_fmt(errstr, errstr_size, "first month %d is not a representable month",
                   (int)st->first_month);
        return -1;
    }
    if (c->nmonths > STATE_MONTHS_MAX) {
        errstr_fmt(errstr, errstr_size, "%u months, at most %d", c->nmonths, STATE_MONTHS_MAX);
        return -1;
    }
    for (uint32_t i = 0; i < c->nmonths; i++) {
        const state_month_t *m = &c->months[i];
        if (m->month < MONTH_MIN || m->month > MONTH_MAX ||
            (i > 0 && m->month <= c->months[i - 1].month)) {
            errstr_fmt(errstr, errstr_size,
                       "month %u not representable or not after the one before it", i);
            return -1;
        }
        if (m->agg.qty < 0 || m->agg.amount < 0 || m->agg.orders < 0 ||
            m->agg.skus != (int64_t)m->nskus) {
            errstr_fmt(errstr, errstr_size, "month %u: negative sums or skus != nskus", i);
            return -1;
        }
        if (m->tier < 0 || m->tier > POLICY_TIERS_MAX || grade_code(m->grade) == UINT64_MAX ||
            m->qmask >> POLICY_QUOTA__COUNT) {
            errstr_fmt(errstr, errstr_size, "month %u: tier, grade or quota mask out of range", i);
            return -1;
        }
        if (m->raw) continue; /* checked as decoded, unchanged since */
        for (uint32_t j = 1; j < m->nskus; j++)
            if (m->skus[j] <= m->skus[j - 1]) {
                errstr_fmt(errstr, errstr_size, "month %u: SKU fingerprints not ascending", i);
                return -1;
            }
        for (uint32_t j = 1; j < m->nfps; j++)
            if (m->fps[j] <= m->fps[j - 1]) {
                errstr_fmt(errstr, errstr_size, "month %u: order fingerprints not ascending", i);
                return -1;
            }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Text for logs                                                       */

int state_describe(const state_customer_t *c, char *buf, size_t size) {
    /* Sized for the longest of everything, so t is never cut. */
    char t[160 + STATE_MONTHS_MAX * 24], first[24], score[24], ovr[16];
    size_t n;
    int k;

    if (c->live_score_c < 0)
        snprintf(score, sizeof(score), "none");
    else
        snprintf(score, sizeof(score), "%d.%02d", (int)(c->live_score_c / 100),
                 (int)(c->live_score_c % 100));
    snprintf(ovr, sizeof(ovr), "%d", c->st.has_override ? (int)c->st.override_tier : 0);
    if (c->st.tier > 0)
        policy_month_text(c->st.first_month, first, sizeof(first));
    else
        snprintf(first, sizeof(first), "none");
    k = snprintf(t, sizeof(t),
                 "tier=%d first=%s evaluated=%d override=%s seq=%lld score=%s scale=%c months=",
                 (int)c->st.tier, first, c->st.evaluated ? 1 : 0, ovr, (long long)c->seq, score,
                 c->scale ? c->scale : '?');
    n = k < 0 ? 0 : (size_t)k;
    for (uint32_t i = 0; i < c->nmonths && i < STATE_MONTHS_MAX && n + 24 < sizeof(t); i++) {
        if (i) t[n++] = ',';
        n += strlen(policy_month_text(c->months[i].month, t + n, sizeof(t) - n));
    }
    t[n] = '\0';
    if (size > 0) snprintf(buf, size, "%s", t);
    return (int)n;
}
