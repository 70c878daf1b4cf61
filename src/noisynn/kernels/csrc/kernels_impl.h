// noisynn kernels: Gaussian noise and the fused noisy LSTM / RNN steps (float32).
//
// Included once per instruction set by kernels_base.cpp and kernels_avx2.cpp, inside
// namespace noisynn::NN_ISA, after every header those files need: this file includes
// nothing itself and calls only compiler builtins and C functions, so nothing inline
// from a library header is ever compiled for AVX2 (an AVX2 copy of a shared inline
// function could otherwise be picked by the linker for the baseline code).
//
// The sampler: sub-stream k of a call (a chunk of a flat tensor, one row of a step)
// runs W = 8 xoshiro128++ lanes (Blackman & Vigna 2018) seeded by Philox4x32-10
// (Salmon et al. 2011) of (k, lane, nonce) under the call's key; Box-Muller turns pairs
// of 32-bit words into pairs of independent normals (radius from 31 bits: tails out to
// 6.6 sigma; angle from 27 bits).

#ifndef NN_ISA
#error "define NN_ISA (the namespace of this copy) before including kernels_impl.h"
#endif

namespace noisynn {
namespace NN_ISA {

typedef uint32_t u32;
typedef int32_t i32;
typedef uint64_t u64;
typedef int64_t i64;

/* Two widths: RW = 8 lanes of random words (the sampler's definition: 8 xoshiro lanes per
   sub-stream, on every instruction set) and W lanes of float arithmetic, 8 (AVX2, 2 x SSE,
   NEON, ...) or 16 (AVX-512, NN_W = 16). GCC/Clang vector extensions; a W = 16 copy draws the
   same numbers as a W = 8 copy (Box-Muller on two iterations' words at once, put back in
   order), so the noise does not depend on the machine. */
#ifndef NN_W
#define NN_W 8
#endif
#define W NN_W
#define RW 8
typedef float vf __attribute__((vector_size(4 * W)));
typedef u32 vu __attribute__((vector_size(4 * W)));
typedef i32 vi __attribute__((vector_size(4 * W)));
typedef u32 ru __attribute__((vector_size(4 * RW))); /* one sub-stream's random words */

static inline vf vload(const float* p) { vf v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float* p, vf v) { __builtin_memcpy(p, &v, sizeof v); }
static inline vf vsplat(float x) { vf v = {}; return v + x; }
static inline ru usplat(u32 x) { ru v = {}; return v + x; }
static inline vf vsel(vi m, vf a, vf b) { return (vf)(((vu)a & (vu)m) | ((vu)b & ~(vu)m)); }

/* ---- random words -------------------------------------------------------------- */
/* Philox4x32-10 on W counters at once; it only seeds the xoshiro lanes. */
static inline void mulhilo(ru a, u32 m, ru* hi, ru* lo) {
#if NN_AVX2
    __m256i va = (__m256i)a, vm = _mm256_set1_epi32((int)m);
    __m256i even = _mm256_mul_epu32(va, vm);
    __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(va, 32), vm);
    *lo = (ru)_mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    *hi = (ru)_mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
#else
    for (int l = 0; l < RW; l++) {
        u64 p = (u64)a[l] * m;
        (*lo)[l] = (u32)p;
        (*hi)[l] = (u32)(p >> 32);
    }
#endif
}

static void philox10(ru c[4], u32 k0, u32 k1) {
    for (int r = 0; r < 10; r++) {
        ru hi0, lo0, hi1, lo1;
        mulhilo(c[0], 0xD2511F53u, &hi0, &lo0);
        mulhilo(c[2], 0xCD9E8D57u, &hi1, &lo1);
        ru n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0; c[1] = lo1; c[2] = n2; c[3] = lo0;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
}

/* xoshiro128++, W independent lanes. */
struct rng_t { ru s0, s1, s2, s3; };

static inline ru rotl(ru x, int k) { return (x << k) | (x >> (32 - k)); }

static inline ru rng_next(rng_t* g) {
    ru r = rotl(g->s0 + g->s3, 7) + g->s0;
    ru t = g->s1 << 9;
    g->s2 ^= g->s0; g->s3 ^= g->s1; g->s1 ^= g->s2; g->s0 ^= g->s3;
    g->s2 ^= t; g->s3 = rotl(g->s3, 11);
    return r;
}

/* Sub-stream `stream` of the call seeded with (key0, key1, nonce): lane l starts from
   Philox(counter = (stream_lo, stream_hi, l, nonce), key = (key0, key1)). */
static inline rng_t rng_seed(const u32* seed, u64 stream) {
    const ru lane = {0, 1, 2, 3, 4, 5, 6, 7};
    ru c[4] = {usplat((u32)stream), usplat((u32)(stream >> 32)), lane, usplat(seed[2])};
    philox10(c, seed[0], seed[1]);
    rng_t g = {c[0], c[1], c[2], c[3] | 1u}; /* never the all-zero state */
    return g;
}

/* ---- float math (cephes single-precision polynomials) ------------------------- */
static inline vf vlog01(vf x) { /* natural log for x in (0, 1] */
    vu b = (vu)x;
    vi e = (vi)(b >> 23) - 126;
    vf m = (vf)((b & 0x007FFFFFu) | 0x3F000000u); /* mantissa in [0.5, 1) */
    vi small = m < 0.70710678f;                   /* -1 where true */
    e += small;
    m = m - 1.0f + (vf)((vu)m & (vu)small);
    vf z = m * m;
    vf y = 7.0376836292E-2f * m - 1.1514610310E-1f;
    y = y * m + 1.1676998740E-1f; y = y * m - 1.2420140846E-1f;
    y = y * m + 1.4249322787E-1f; y = y * m - 1.6668057665E-1f;
    y = y * m + 2.0000714765E-1f; y = y * m - 2.4999993993E-1f;
    y = y * m + 3.3333331174E-1f;
    y = y * m * z;
    vf fe = __builtin_convertvector(e, vf);
    y += -2.12194440e-4f * fe;
    y += -0.5f * z;
    return m + y + 0.693359375f * fe;
}

static inline vf vsqrt(vf x) {
#if NN_W == 16
    return (vf)_mm512_sqrt_ps((__m512)x);
#elif NN_AVX2
    return (vf)_mm256_sqrt_ps((__m256)x);
#else
    vf r;
    for (int l = 0; l < W; l++) r[l] = __builtin_sqrtf(x[l]);
    return r;
#endif
}

static inline vf vexp(vf x) { /* NaN stays NaN */
    x = vsel(x > 88.0f, vsplat(88.0f), x);
    x = vsel(x < -87.0f, vsplat(-87.0f), x);
    vf k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(x / ln 2) */
    vf r = x - k * 0.693359375f - k * -2.12194440e-4f;
    vf p = 1.9875691500E-4f * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f; p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f; p = p * r + 5.0000001201E-1f;
    p = p * r * r + r + 1.0f;
    vi ki = __builtin_convertvector(k, vi);
    return p * (vf)((vu)(ki + 127) << 23);
}

static inline vf vsigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }

static inline vf vtanh(vf x) { return 2.0f * vsigmoid(x + x) - 1.0f; } /* absolute error ~1e-7 */

/* ---- Gaussian samples ------------------------------------------------------------ */
/* Box-Muller: 2W independent standard normals from two vectors of random words.
   Radius from u = (a / 2 + 1/2) 2^-31 in (0, 1]; angle = an angle in [0, pi/4) from 24
   bits of b, moved to one of the 8 octants by b's top 3 bits (swap cos/sin, two signs). */
static inline void box_muller(vu a, vu b, vf* z0, vf* z1) {
    vf u = __builtin_convertvector((vi)(a >> 1), vf) * 4.656612873077393e-10f + 2.3283064365386963e-10f;
    vf r = vsqrt(-2.0f * vlog01(u));
    vf p = __builtin_convertvector((vi)(b & 0xFFFFFFu), vf) * (5.9604644775390625e-08f * 0.78539816339744831f);
    vf p2 = p * p;
    vf s = p + p * p2 * (-1.6666654611e-1f + p2 * (8.3321608736e-3f + p2 * -1.9515295891e-4f));
    vf c = 1.0f - 0.5f * p2
           + p2 * p2 * (4.166664568298827e-2f + p2 * (-1.388731625493765e-3f + p2 * 2.443315711809948e-5f));
    vi swap = -(vi)((b >> 29) & 1u);
    vu x = (vu)vsel(swap, s, c), y = (vu)vsel(swap, c, s);
    x ^= ((b >> 30) & 1u) << 31;
    y ^= (b >> 31) << 31;
    *z0 = r * (vf)x;
    *z1 = r * (vf)y;
}

/* The first n standard normals of sub-stream `stream`: per two words vectors (a, b) the
   RW normals of Box-Muller's cosine branch, then the RW of its sine branch. */
#if NN_W == 16 /* AVX-512 intrinsics: every compiler that has them (GCC < 12 has no __builtin_shufflevector) */
static inline vu join(ru lo, ru hi) { /* (lo | hi) */
    return (vu)_mm512_inserti64x4(_mm512_castsi256_si512((__m256i)lo), (__m256i)hi, 1);
}

/* out[0, 32) = cos1, sin1, cos2, sin2 (the order of two 8-lane iterations) from z0 = (cos1 | cos2),
   z1 = (sin1 | sin2) */
static inline void store_pairs(float* out, vf z0, vf z1) {
    vstore(out, (vf)_mm512_shuffle_f32x4((__m512)z0, (__m512)z1, 0x44));
    vstore(out + 2 * RW, (vf)_mm512_shuffle_f32x4((__m512)z0, (__m512)z1, 0xEE));
}
#endif

static void normals(float* out, i64 n, const u32* seed, u64 stream) {
    rng_t g = rng_seed(seed, stream);
    vf z0, z1;
    i64 i = 0;
#if NN_W == 16 /* two iterations at once: z0 = (cos1 | cos2), z1 = (sin1 | sin2) */
    for (; i + 4 * RW <= n; i += 4 * RW) {
        ru a1 = rng_next(&g), b1 = rng_next(&g), a2 = rng_next(&g), b2 = rng_next(&g);
        box_muller(join(a1, a2), join(b1, b2), &z0, &z1);
        store_pairs(out + i, z0, z1);
    }
    if (i < n) {
        float tail[4 * RW];
        ru a1 = rng_next(&g), b1 = rng_next(&g), a2 = rng_next(&g), b2 = rng_next(&g);
        box_muller(join(a1, a2), join(b1, b2), &z0, &z1);
        store_pairs(tail, z0, z1);
        __builtin_memcpy(out + i, tail, (size_t)(n - i) * sizeof(float));
    }
#else
    for (; i + 2 * W <= n; i += 2 * W) {
        vu a = rng_next(&g), b = rng_next(&g);
        box_muller(a, b, &z0, &z1);
        vstore(out + i, z0);
        vstore(out + i + W, z1);
    }
    if (i < n) {
        float tail[2 * W];
        vu a = rng_next(&g), b = rng_next(&g);
        box_muller(a, b, &z0, &z1);
        vstore(tail, z0);
        vstore(tail + W, z1);
        __builtin_memcpy(out + i, tail, (size_t)(n - i) * sizeof(float));
    }
#endif
}

/* The first n normals of two sub-streams at once, into out0 and out1: on 16 lanes, each
   stream's 8 xoshiro lanes side by side in one vector (the same numbers as two normals()
   calls, with half the random-word instructions). Elsewhere: two normals() calls. */
#if NN_W == 16
struct rng2_t { vu s0, s1, s2, s3; };

static inline vu rotl2(vu x, int k) { return (x << k) | (x >> (32 - k)); }

static inline vu rng2_next(rng2_t* g) {
    vu r = rotl2(g->s0 + g->s3, 7) + g->s0;
    vu t = g->s1 << 9;
    g->s2 ^= g->s0; g->s3 ^= g->s1; g->s1 ^= g->s2; g->s0 ^= g->s3;
    g->s2 ^= t; g->s3 = rotl2(g->s3, 11);
    return r;
}
#endif

static void normals2(float* out0, float* out1, i64 n, const u32* seed, u64 stream0, u64 stream1) {
#if NN_W == 16
    rng_t a = rng_seed(seed, stream0), b = rng_seed(seed, stream1);
    rng2_t g = {join(a.s0, b.s0), join(a.s1, b.s1), join(a.s2, b.s2), join(a.s3, b.s3)};
    vf z0, z1;
    i64 i = 0;
    for (; i + 2 * RW <= n; i += 2 * RW) { /* z0 = (cos0 | cos1), z1 = (sin0 | sin1) */
        vu u = rng2_next(&g), v = rng2_next(&g);
        box_muller(u, v, &z0, &z1);
        vstore(out0 + i, (vf)_mm512_shuffle_f32x4((__m512)z0, (__m512)z1, 0x44));
        vstore(out1 + i, (vf)_mm512_shuffle_f32x4((__m512)z0, (__m512)z1, 0xEE));
    }
    if (i < n) {
        float t0[2 * RW], t1[2 * RW];
        vu u = rng2_next(&g), v = rng2_next(&g);
        box_muller(u, v, &z0, &z1);
        vstore(t0, (vf)_mm512_shuffle_f32x4((__m512)z0, (__m512)z1, 0x44));
        vstore(t1, (vf)_mm512_shuffle_f32x4((__m512)z0, (__m512)z1, 0xEE));
        __builtin_memcpy(out0 + i, t0, (size_t)(n - i) * sizeof(float));
        __builtin_memcpy(out1 + i, t1, (size_t)(n - i) * sizeof(float));
    }
#else
    normals(out0, n, seed, stream0);
    normals(out1, n, seed, stream1);
#endif
}

static void words(u32* out, i64 n, const u32* seed, u64 stream) {
    rng_t g = rng_seed(seed, stream);
    for (i64 i = 0; i + RW <= n; i += RW) {
        ru r = rng_next(&g);
        __builtin_memcpy(out + i, &r, sizeof r);
    }
}

/* ---- element-wise noise on a flat tensor --------------------------------------- */
static inline void noise_apply(float* o, const float* x, const float* z, i64 len, int mode, float mean, float sigma) {
    if (mode == kNone) {
        for (i64 i = 0; i < len; i++) o[i] = mean + sigma * z[i];
    } else if (mode == kAdditive) {
        for (i64 i = 0; i < len; i++) o[i] = x[i] + sigma * z[i];
    } else {
        for (i64 i = 0; i < len; i++) o[i] = x[i] * (1.0f + sigma * z[i]);
    }
}

static void noise_chunks(float* out, const float* in, i64 n, int mode, float mean, float sigma,
                         const u32* seed, i64 k0, i64 k1) {
    float z[2 * kChunk];
    i64 k = k0;
    for (; k + 1 < k1 && (k + 2) * kChunk <= n; k += 2) { /* two whole chunks at once */
        i64 start = k * kChunk;
        normals2(z, z + kChunk, kChunk, seed, (u64)k, (u64)(k + 1));
        noise_apply(out + start, in ? in + start : nullptr, z, 2 * kChunk, mode, mean, sigma);
    }
    for (; k < k1; k++) {
        i64 start = k * kChunk, len = n - start < kChunk ? n - start : kChunk;
        normals(z, len, seed, (u64)k);
        noise_apply(out + start, in ? in + start : nullptr, z, len, mode, mean, sigma);
    }
}

/* ---- noisy pre-activations --------------------------------------------------------- */
/* pre = g + bias made noisy: + sigma z (mode 1), * (1 + sigma z) (mode 2), as is (mode 0);
   noise, if set, gets the added term or the factor. One loop per mode, on whole vectors
   (the mode tested per element kept the compiler from vectorising: half the step's time). */
static inline void noisy_pre(i64 n, const float* g, const float* bias, const float* z, int mode, float sigma,
                             float* pre, float* noise) {
    i64 j = 0;
    if (mode == kAdditive) {
        for (; j + W <= n; j += W) {
            vf e = sigma * vload(z + j), p = vload(g + j);
            if (bias) p += vload(bias + j);
            if (noise) vstore(noise + j, e);
            vstore(pre + j, p + e);
        }
    } else if (mode == kMultiplicative) {
        for (; j + W <= n; j += W) {
            vf e = 1.0f + sigma * vload(z + j), p = vload(g + j);
            if (bias) p += vload(bias + j);
            if (noise) vstore(noise + j, e);
            vstore(pre + j, p * e);
        }
    } else {
        for (; j + W <= n; j += W) vstore(pre + j, bias ? vload(g + j) + vload(bias + j) : vload(g + j));
    }
    for (; j < n; j++) { /* the last partial vector */
        float p = g[j] + (bias ? bias[j] : 0.0f);
        if (mode == kAdditive) {
            float e = sigma * z[j];
            p += e;
            if (noise) noise[j] = e;
        } else if (mode == kMultiplicative) {
            float e = 1.0f + sigma * z[j];
            p *= e;
            if (noise) noise[j] = e;
        }
        pre[j] = p;
    }
}

/* ---- noisy LSTM step ------------------------------------------------------------- */
/* The math of W cells, on full vectors. Gates come as their activations i, f, g, o. */
static inline void cell_forward(const float* i, const float* f, const float* g, const float* o,
                                const float* c_in, float* c_out, float* h_out, float* h_copy) {
    vf c = vload(f) * vload(c_in) + vload(i) * vload(g);
    vf h = vload(o) * vtanh(c);
    vstore(c_out, c);
    vstore(h_out, h);
    if (h_copy) vstore(h_copy, h);
}

static void lstm_rows(const LstmStep& s, i64 b0, i64 b1) {
    const i64 H = s.H, G = 4 * H, Hp = (H + W - 1) / W * W; /* gate blocks padded to whole vectors */
    const i64 F = s.F;
    float* zz = (float*)malloc((size_t)(2 * G + 4 * Hp) * sizeof(float)); /* two rows' normals */
    float* pre = zz + 2 * G;
    __builtin_memset(pre, 0, (size_t)(4 * Hp) * sizeof(float));
    for (i64 b = b0; b < b1; b++) {
        const float* gb = s.g + b * G;
        const float* z = zz + ((b - b0) & 1) * G;
        if (s.mode && ((b - b0) & 1) == 0) { /* this row's and the next one's, drawn together */
            if (b + 1 < b1)
                normals2(zz, zz + G, G, s.seed, s.stream0 + (u64)b, s.stream0 + (u64)b + 1);
            else
                normals(zz, G, s.seed, s.stream0 + (u64)b);
        }
        for (int k = 0; k < 4; k++) {
            float* pk = pre + k * Hp;
            noisy_pre(H, gb + k * H, s.bias ? s.bias + k * H : nullptr, z + k * H, s.mode, s.sigma, pk,
                      s.noise ? s.noise + b * G + k * H : nullptr);
            /* activations in place: short independent iterations overlap well */
            for (i64 j = 0; j < Hp; j += W)
                vstore(pk + j, k == 2 ? vtanh(vload(pk + j)) : vsigmoid(vload(pk + j)));
            if (s.act) __builtin_memcpy(s.act + b * G + k * H, pk, (size_t)H * sizeof(float));
        }
        const float* cp = s.c_in + b * H;
        float *cn = s.c_out + b * H, *hn = s.h_out + b * s.hs;
        float* hx = s.xh ? s.xh + b * (F + H) + F : nullptr;
        i64 j = 0;
        for (; j + W <= H; j += W)
            cell_forward(pre + j, pre + Hp + j, pre + 2 * Hp + j, pre + 3 * Hp + j, cp + j, cn + j, hn + j,
                         hx ? hx + j : nullptr);
        if (j < H) { /* the last partial vector, through padded copies */
            size_t n = (size_t)(H - j) * sizeof(float);
            float c0[W] = {0}, c1[W], h1[W];
            __builtin_memcpy(c0, cp + j, n);
            cell_forward(pre + j, pre + Hp + j, pre + 2 * Hp + j, pre + 3 * Hp + j, c0, c1, h1, nullptr);
            __builtin_memcpy(cn + j, c1, n);
            __builtin_memcpy(hn + j, h1, n);
            if (hx) __builtin_memcpy(hx + j, h1, n);
        }
        if (s.xh && s.x_next) __builtin_memcpy(s.xh + b * (F + H), s.x_next + b * s.xs, (size_t)F * sizeof(float));
    }
    free(zz);
}

/* ---- noisy vanilla RNN step -------------------------------------------------------- */
static void rnn_rows(const RnnStep& s, i64 b0, i64 b1) {
    const i64 H = s.H, Hp = (H + W - 1) / W * W, F = s.F;
    float* zz = (float*)malloc((size_t)(2 * H + Hp) * sizeof(float)); /* two rows' normals */
    float* pre = zz + 2 * H;
    __builtin_memset(pre, 0, (size_t)Hp * sizeof(float));
    for (i64 b = b0; b < b1; b++) {
        const float* gb = s.g + b * H;
        float *nb = s.noise ? s.noise + b * H : nullptr, *hn = s.h_out + b * s.hs;
        const float* z = zz + ((b - b0) & 1) * H;
        if (s.mode && ((b - b0) & 1) == 0) { /* this row's and the next one's, drawn together */
            if (b + 1 < b1)
                normals2(zz, zz + H, H, s.seed, s.stream0 + (u64)b, s.stream0 + (u64)b + 1);
            else
                normals(zz, H, s.seed, s.stream0 + (u64)b);
        }
        noisy_pre(H, gb, s.bias, z, s.mode, s.sigma, pre, nb);
        if (s.relu)
            for (i64 j = 0; j < H; j++) pre[j] = pre[j] > 0.0f ? pre[j] : 0.0f;
        else
            for (i64 j = 0; j < Hp; j += W) vstore(pre + j, vtanh(vload(pre + j)));
        __builtin_memcpy(hn, pre, (size_t)H * sizeof(float));
        if (s.xh) {
            __builtin_memcpy(s.xh + b * (F + H) + F, pre, (size_t)H * sizeof(float));
            if (s.x_next) __builtin_memcpy(s.xh + b * (F + H), s.x_next + b * s.xs, (size_t)F * sizeof(float));
        }
    }
    free(zz);
}

/* ---- LSTM step backward ------------------------------------------------------------- */
/* Backward of W cells: a holds the activations i, f, g, o (gate stride H); dh the
   gradient of h_t; dc that of c_t in, of c_{t-1} out; d the pre-activation gradient
   (gate stride H); m the multiplicative noise (null: additive). */
static inline void cell_backward(const float* a, i64 H, const float* c_prev, const float* c_cur, const float* m,
                                 vf dh, float* dc, float* d) {
    vf i = vload(a), f = vload(a + H), gg = vload(a + 2 * H), o = vload(a + 3 * H);
    vf tc = vtanh(vload(c_cur));
    vf dct = vload(dc) + dh * o * (1.0f - tc * tc);
    vf di = dct * gg * i * (1.0f - i);
    vf df = dct * vload(c_prev) * f * (1.0f - f);
    vf dgg = dct * i * (1.0f - gg * gg);
    vf dout = dh * tc * o * (1.0f - o);
    if (m) {
        di *= vload(m);
        df *= vload(m + H);
        dgg *= vload(m + 2 * H);
        dout *= vload(m + 3 * H);
    }
    vstore(d, di);
    vstore(d + H, df);
    vstore(d + 2 * H, dgg);
    vstore(d + 3 * H, dout);
    vstore(dc, dct * f);
}

static void lstm_backward_rows(const LstmBackward& s, i64 b0, i64 b1) {
    const i64 H = s.H, G = 4 * H;
    for (i64 b = b0; b < b1; b++) {
        const float *a = s.act + b * G, *m = s.factor ? s.factor + b * G : nullptr;
        const float *cp = s.c_prev + b * H, *cc = s.c_cur + b * H, *da = s.dh_a ? s.dh_a + b * s.as : nullptr;
        const float* db = s.dh_b ? s.dh_b + b * H : nullptr;
        float *d = s.dg + b * G, *dcb = s.dc + b * H;
        i64 j = 0;
        for (; j + W <= H; j += W) {
            vf dh = (da ? vload(da + j) : vsplat(0.0f)) + (db ? vload(db + j) : vsplat(0.0f));
            cell_backward(a + j, H, cp + j, cc + j, m ? m + j : nullptr, dh, dcb + j, d + j);
        }
        if (j < H) { /* the last partial vector, through padded copies (gate stride W) */
            i64 n = H - j;
            float ta[4 * W] = {0}, tm[4 * W] = {0}, td[4 * W], tp[W] = {0}, tc[W] = {0}, tdc[W] = {0}, th[W] = {0};
            for (int k = 0; k < 4; k++) {
                __builtin_memcpy(ta + k * W, a + k * H + j, (size_t)n * sizeof(float));
                if (m) __builtin_memcpy(tm + k * W, m + k * H + j, (size_t)n * sizeof(float));
            }
            for (i64 l = 0; l < n; l++) {
                tp[l] = cp[j + l];
                tc[l] = cc[j + l];
                tdc[l] = dcb[j + l];
                th[l] = (da ? da[j + l] : 0.0f) + (db ? db[j + l] : 0.0f);
            }
            cell_backward(ta, W, tp, tc, m ? tm : nullptr, vload(th), tdc, td);
            for (int k = 0; k < 4; k++) __builtin_memcpy(d + k * H + j, td + k * W, (size_t)n * sizeof(float));
            __builtin_memcpy(dcb + j, tdc, (size_t)n * sizeof(float));
        }
    }
}

#undef W
#undef RW

static const KernelTable kTable = {
    NN_ISA_NAME, words, noise_chunks, lstm_rows, rnn_rows, lstm_backward_rows,
};

}  // namespace NN_ISA
}  // namespace noisynn
