/*
 * One training step's exact top-k mask, updated in place from the last step's (CPU, float32).
 *
 * The Python side (impresslearn/layers/native.py) loads this file's shared library with ctypes;
 * it is not a Python module. It implements TopKSelector's band selection (see masks.py) in one
 * pass over the scores instead of a dozen NumPy passes: the mask changes in a few hundred places
 * per step, so the step is a read of the scores plus work proportional to the changes.
 *
 * Ranked values: |scores| (SupSup's top-k) or the signed scores (mode & 1); mode >> 1 is the
 * scan to run, il_topk_simd() or lower. Ties at the cut are broken as everywhere else in
 * impresslearn: every value above the k-th largest, then the values equal to it that come first
 * by flat position.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The SIMD scans need GCC or Clang on x86-64; function clones (the fused passes) need ifunc
   support, which Linux has. Elsewhere, or with -DIL_PORTABLE, the portable loops run. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(IL_PORTABLE)
#include <immintrin.h>
#define HAVE_X86 1
#endif
#if defined(HAVE_X86) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

enum { DONE = 0, NARROW = 1, CROWDED = 2 };

static inline float ranked(float x, int rs) { return rs ? x : fabsf(x); }

/* kept[i] = v and prod[i] = w[i] * v, the bits of weight * mask (w * 0 keeps w's sign) */
static inline void set_bit(int64_t i, uint8_t v, uint8_t *kept, float *prod, const float *w)
{
    kept[i] = v;
    if (prod) prod[i] = w[i] * (float)v;
}

typedef struct {
    const float *s, *w;
    uint8_t *kept;
    float *prod;
    int32_t *band;
    int64_t nb, cap, count;
} scan_t;

/* One value's events: its mask bit against kept (flipped in place), its place in the band. */
static inline void on_events(scan_t *x, int64_t i, int flip, int in_band)
{
    if (flip) set_bit(i, x->kept[i] ^ 1, x->kept, x->prod, x->w);
    if (in_band) {
        if (x->nb < x->cap) x->band[x->nb] = (int32_t)i;
        x->nb++;
    }
}

/* A block of up to 64 values from i: its bits above t (gt), kept before (old) and in the band.
   Handles the (rare) events one by one; returns how many values are above t. */
static inline int64_t on_block(scan_t *x, int64_t i, uint64_t gt, uint64_t old, uint64_t in_band)
{
    uint64_t flips = gt ^ old, events = flips | in_band;
    while (events) {
        int j = __builtin_ctzll(events);
        events &= events - 1;
        on_events(x, i + j, (flips >> j) & 1, (in_band >> j) & 1);
    }
    return __builtin_popcountll(gt);
}

static void scan_scalar(scan_t *x, int64_t from, int64_t n, float t, float lo, float hi, int rs)
{
    int64_t c = 0;
    for (int64_t i = from; i < n; i++) {
        float a = ranked(x->s[i], rs);
        int gt = a > t;
        c += gt;
        int flip = gt != x->kept[i], in_band = a >= lo && a <= hi;
        if (flip | in_band) on_events(x, i, flip, in_band);
    }
    x->count += c;
}

#ifdef HAVE_X86
/* 32 values per iteration: comparison bitmasks, a population count, and the (rare) events. */
__attribute__((target("avx2,popcnt"))) static int64_t scan_avx2(scan_t *x, int64_t n, float t,
                                                              float lo, float hi, int rs)
{
    const __m256 tv = _mm256_set1_ps(t), lov = _mm256_set1_ps(lo), hiv = _mm256_set1_ps(hi);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(rs ? -1 : 0x7fffffff));
    int64_t c = 0, i = 0;
    for (; i + 32 <= n; i += 32) {
        uint32_t gt = 0, in_band = 0;
        for (int j = 0; j < 4; j++) {
            __m256 a = _mm256_and_ps(_mm256_loadu_ps(x->s + i + 8 * j), absmask);
            uint32_t g = (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a, tv, _CMP_GT_OQ));
            uint32_t b = (uint32_t)_mm256_movemask_ps(_mm256_and_ps(
                _mm256_cmp_ps(a, lov, _CMP_GE_OQ), _mm256_cmp_ps(a, hiv, _CMP_LE_OQ)));
            gt |= g << (8 * j);
            in_band |= b << (8 * j);
        }
        /* kept holds 0/1 bytes: bit 0 of each byte moved to its top bit, then gathered */
        __m256i k = _mm256_loadu_si256((const __m256i *)(x->kept + i));
        uint32_t old = (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi64(k, 7));
        c += on_block(x, i, gt, old, in_band);
    }
    x->count += c;
    return i;
}

/* 64 values per iteration, with AVX-512's comparison masks. */
__attribute__((target("avx512f,avx512bw,popcnt"))) static int64_t scan_avx512(scan_t *x, int64_t n,
                                                                            float t, float lo,
                                                                            float hi, int rs)
{
    const __m512 tv = _mm512_set1_ps(t), lov = _mm512_set1_ps(lo), hiv = _mm512_set1_ps(hi);
    const __m512i absmask = _mm512_set1_epi32(rs ? -1 : 0x7fffffff);
    int64_t c = 0, i = 0;
    for (; i + 64 <= n; i += 64) {
        uint64_t gt = 0, in_band = 0;
        for (int j = 0; j < 4; j++) /* the scores a few KB ahead (they may sit in the other core) */
            _mm_prefetch((const char *)(x->s + i + 2048 + 16 * j), _MM_HINT_T0);
        for (int j = 0; j < 4; j++) {
            __m512 a = _mm512_castsi512_ps(
                _mm512_and_si512(_mm512_loadu_si512((const void *)(x->s + i + 16 * j)), absmask));
            uint64_t g = _mm512_cmp_ps_mask(a, tv, _CMP_GT_OQ);
            uint64_t b = _mm512_mask_cmp_ps_mask(_mm512_cmp_ps_mask(a, lov, _CMP_GE_OQ), a, hiv,
                                                 _CMP_LE_OQ);
            gt |= g << (16 * j);
            in_band |= b << (16 * j);
        }
        __m512i k = _mm512_loadu_si512((const void *)(x->kept + i));
        uint64_t old = _mm512_test_epi8_mask(k, k);
        c += on_block(x, i, gt, old, in_band);
    }
    x->count += c;
    return i;
}
#endif

/* ascending rank r (0-based) of a[0..n); reorders a so that a[j] <= a[r] for every j < r */
static float select_rank(float *a, int64_t n, int64_t r)
{
    int64_t lo = 0, hi = n - 1;
    while (hi > lo) {
        float pivot = a[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) {
                float tmp = a[i];
                a[i] = a[j];
                a[j] = tmp;
                i++;
                j--;
            }
        }
        if (r <= j) hi = j;
        else if (r >= i) lo = i;
        else break;
    }
    return a[r];
}

/* 2 where this machine runs the AVX-512 scan, 1 the AVX2 scan, 0 the portable loop */
int32_t il_topk_simd(void)
{
#ifdef HAVE_X86
    if (!__builtin_cpu_supports("popcnt")) return 0;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return 2;
    return __builtin_cpu_supports("avx2") ? 1 : 0;
#else
    return 0;
#endif
}

/*
 * Brings kept (0/1 bytes) and, unless prod is NULL, prod = w * kept from the last step's mask to
 * the exact top-k of the scores s (n values, k kept; the arguments that stay the same from call
 * to call come first). td = {t, d}: the last threshold (kept was ranked > t) and the band's
 * half-width, both updated. The mask bits that cross t are flipped
 * while scanning; then, if not exactly k values are above t, the band [t - d, t + d] holds the
 * values that cross the new cut: the smallest kept ones to drop, or the largest others to add.
 * band, vals, tmp: scratch of cap entries. Returns DONE, NARROW (the band holds too few values:
 * widen it and call again) or CROWDED (more than cap values in the band: narrow it and call
 * again). kept and prod agree after every return.
 */
static int32_t il_topk_step(int64_t n, int64_t k, int32_t mode, float *td, uint8_t *kept, int32_t *band,
                     float *vals, float *tmp, int64_t cap, const float *s, const float *w,
                     float *prod)
{
    const int rs = mode & 1;
    const float t = td[0], d = td[1];
    scan_t x = {s, w, kept, prod, band, 0, cap, 0};
    int64_t from = 0;
#ifdef HAVE_X86
    switch (mode >> 1) {
    case 2: from = scan_avx512(&x, n, t, t - d, t + d, rs); break;
    case 1: from = scan_avx2(&x, n, t, t - d, t + d, rs); break;
    }
#endif
    scan_scalar(&x, from, n, t, t - d, t + d, rs);
    const int64_t c = x.count;
    if (c == k) return DONE; /* exactly k values above t: the top k, and no tie at the cut */
    if (x.nb > cap) return CROWDED;
    const int dropping = c > k;
    const int64_t change = dropping ? c - k : k - c; /* values that cross the cut */
    /* The candidates, in ascending position: kept values in the band (dropping) or values in
       the band not kept (adding). Comparing the same floats with the same t as the scan keeps
       the two sets exactly complementary. */
    int64_t nc = 0;
    for (int64_t j = 0; j < x.nb; j++) {
        float a = ranked(s[band[j]], rs);
        if ((a > t) == dropping) {
            band[nc] = band[j];
            vals[nc] = a;
            nc++;
        }
    }
    if (nc <= change) return NARROW;
    memcpy(tmp, vals, (size_t)nc * sizeof(float));
    /* ascending ranks: dropping removes the `change` smallest candidates, adding takes the
       `change` largest; kth is the k-th largest value of all, below the (k+1)-th */
    const int64_t r = dropping ? change : nc - change;
    const float kth = select_rank(tmp, nc, r);
    float below = tmp[0];
    for (int64_t j = 1; j < r; j++) below = tmp[j] > below ? tmp[j] : below;
    if (kth != below) {
        for (int64_t j = 0; j < nc; j++) {
            if (dropping ? vals[j] <= below : vals[j] >= kth)
                set_bit(band[j], (uint8_t)!dropping, kept, prod, w);
        }
    } else {
        /* equal values straddle the cut: every value above it, then the first equal ones */
        int64_t above = c; /* values above the cut once the candidates are settled */
        for (int64_t j = 0; j < nc; j++) {
            if (dropping && vals[j] <= kth) {
                if (vals[j] < kth) set_bit(band[j], 0, kept, prod, w);
                above--;
            }
            if (!dropping && vals[j] > kth) {
                set_bit(band[j], 1, kept, prod, w);
                above++;
            }
        }
        for (int64_t j = 0; j < nc; j++) {
            if (vals[j] != kth) continue;
            uint8_t keep = above < k;
            set_bit(band[j], keep, kept, prod, w);
            above += keep;
        }
    }
    /* follow how far the cut moves: a band a few times that wide holds it next time */
    float nd = 0.8f * d;
    if (4.0f * fabsf(kth - t) > nd) nd = 4.0f * fabsf(kth - t);
    if (1e-6f * fabsf(t) > nd) nd = 1e-6f * fabsf(t);
    td[1] = nd;
    /* any threshold in [below, kth) separates the mask; the midpoint stays valid longest */
    float mid = (float)(0.5 * ((double)kth + (double)below));
    td[0] = (below <= mid && mid < kth) ? mid : below;
    return DONE;
}

/* A selector's constant arguments of il_topk_step, filled once (see native.py). */
typedef struct {
    int64_t n, k;
    int32_t mode, tries;
    float *td;
    uint8_t *kept;
    int32_t *band;
    float *vals, *tmp;
    int64_t cap;
} il_topk_t;

/* The interface native.py binds, declared once, here: il_topk_t's fields (name:type, in order)
   and the signature of every function it calls (p = pointer, i32 / i64 = integers). native.py
   builds its ctypes struct and argument types from this text, and refuses the library if the
   struct it built does not have the size and field offsets il_topk_layout reports (so this text
   and the struct above cannot drift apart unnoticed). */
static const char IL_INTERFACE[] =
    "struct n:i64 k:i64 mode:i32 tries:i32 td:p kept:p band:p vals:p tmp:p cap:i64\n"
    "il_topk_run p p p p -> i32\n"
    "il_straight_through p p p p i64 i32 -> void\n"
    "il_threshold_product p p p i64 -> void\n"
    "il_topk_simd -> i32\n";

const char *il_interface(void) { return IL_INTERFACE; }

/* out[0] = sizeof(il_topk_t), out[1 + i] = the offset of its i-th field; returns the count */
int32_t il_topk_layout(int64_t *out)
{
    const int64_t layout[] = {
        sizeof(il_topk_t),          offsetof(il_topk_t, n),    offsetof(il_topk_t, k),
        offsetof(il_topk_t, mode),  offsetof(il_topk_t, tries), offsetof(il_topk_t, td),
        offsetof(il_topk_t, kept),  offsetof(il_topk_t, band), offsetof(il_topk_t, vals),
        offsetof(il_topk_t, tmp),   offsetof(il_topk_t, cap),
    };
    int32_t count = (int32_t)(sizeof(layout) / sizeof(layout[0]));
    for (int32_t i = 0; i < count; i++) out[i] = layout[i];
    return count;
}

/* il_topk_step, widening a band too narrow (4x) or narrowing a crowded one (1/4) up to `tries`
   times; 1 when the mask is the top k, 0 when the caller must select afresh */
int32_t il_topk_run(const il_topk_t *a, const float *s, const float *w, float *prod)
{
    for (int32_t i = 0; i < a->tries; i++) {
        int32_t status = il_topk_step(a->n, a->k, a->mode, a->td, a->kept, a->band, a->vals,
                                      a->tmp, a->cap, s, w, prod);
        if (status == DONE) return 1;
        a->td[1] *= status == NARROW ? 4.0f : 0.25f;
    }
    return 0;
}

/* out = sign(s) * w * g (through |s|, mode 1) or w * g (mode 0): the straight-through gradient
   of the scores, with the bits of torch's sign(s), then the two products in that order. */
CLONES
void il_straight_through(const float *g, const float *w, const float *s, float *out, int64_t n,
                         int32_t mode)
{
    if (mode & 1) {
        for (int64_t i = 0; i < n; i++) {
            float sg = (float)(s[i] > 0.0f) - (float)(s[i] < 0.0f);
            out[i] = sg * w[i] * g[i];
        }
    } else {
        for (int64_t i = 0; i < n; i++) out[i] = w[i] * g[i];
    }
}

/* prod = w * (s >= 0): a threshold mask's effective weight, the bits of torch's weight * mask
   (w * 0 keeps w's sign; a NaN score keeps nothing, as torch's comparison) */
CLONES
void il_threshold_product(const float *s, const float *w, float *prod, int64_t n)
{
    for (int64_t i = 0; i < n; i++) prod[i] = w[i] * (float)(s[i] >= 0.0f);
}
