"""Fast CPU paths for the two Gaussian noise models (private).

The plain code of :mod:`noisynn.noise` and :mod:`noisynn.recurrent` is the reference:
every noise site hands its pre-activation to ``NoiseModel.apply``, which draws the noise
with ``Tensor.normal_``. On the CPU that sampler costs as much as the network itself
(torch's CPU generator is a single Mersenne Twister stream, one thread). This module
replaces, for float32 CPU tensors and the Gaussian kinds only:

* the sampler: a counter-based, parallel one. Every call draws 96 fresh bits from the
  noise model's ``torch.Generator`` (so ``torch.manual_seed`` and ``generator=`` keep
  making runs reproducible); sub-stream ``k`` of the call (a chunk of a flat tensor, or
  one row of an LSTM step) runs 8 xoshiro128++ lanes (Blackman & Vigna 2018) seeded by
  Philox4x32-10 (Salmon et al. 2011) of ``(k, lane, nonce)`` under the call's key, and
  Box-Muller turns pairs of 32-bit words into pairs of independent normals (radius from
  31 bits, so tails out to 6.6 sigma; angle from 27 bits). Nothing is ever reused:
  every element of every call has its own words. The values depend only on the seed
  and the element's position, not on the number of threads;
* the noisy LSTM step: one fused pass per step and row that draws the noise, adds or
  multiplies it into the pre-activation (with the bias), applies the gate
  non-linearities and updates ``c`` and ``h``; the matrix products stay with torch
  (one GEMM per step on ``[x_t, h_{t-1}]``), the batch is processed in cache-sized
  blocks of rows, and training has a matching fused backward.

The kernels are a small C file compiled on first use with the system C compiler
(``cc``/``gcc``, about 1-2 s, cached per machine under ``$NOISYNN_CACHE_DIR`` or the
user cache directory, in a ``kernels/`` folder only its owner can write, and loaded only
if its SHA-256, package version and C-source hash match the record written when it was
built; anything else is rebuilt) and loaded with :mod:`ctypes`; they use torch's own OpenMP
runtime, so they share its threads. Without a compiler, on other devices or dtypes,
with ``NOISYNN_REFERENCE=1`` or inside :func:`noisynn.noise.reference`, everything
takes the plain reference path. Same distribution, different draws: with sigma > 0 a
fast path and the reference give different (equally distributed) samples.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "available", "usable", "seed_words", "empty", "normal_", "gaussian_noise", "lstm_layer", "rnn_layer",
    "MIN_ELEMENTS", "LSTM_BLOCK",
]

#: Tensors with fewer elements keep torch's sampler: below this a call's fixed cost
#: (drawing the seed, calling the kernel: ~15 us) outweighs the faster generation
#: (measured crossover: 2,048-4,096 elements).
MIN_ELEMENTS = 4096
#: Rows of the batch an LSTM evaluation runs through all its steps at a time: the
#: block's gates, states and GEMM operands stay in the caches.
LSTM_BLOCK = 512

MODES = {"additive": 1, "multiplicative": 2}

_SOURCE = r"""
/* noisynn fast kernels: Gaussian noise and the fused noisy LSTM step (float32). */
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__)
#include <immintrin.h>
#endif

typedef uint32_t u32;
typedef int32_t i32;
typedef uint64_t u64;
typedef int64_t i64;

#define W 8 /* lanes of a vector (GCC/Clang vector extensions: AVX2, 2 x SSE, NEON, ...) */
typedef float vf __attribute__((vector_size(32)));
typedef u32 vu __attribute__((vector_size(32)));
typedef i32 vi __attribute__((vector_size(32)));

static inline vf vload(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf vsplat(float x) { return (vf){0} + x; }
static inline vf vsel(vi m, vf a, vf b) { return (vf)(((vu)a & (vu)m) | ((vu)b & ~(vu)m)); }

/* ---- random words -------------------------------------------------------------- */
/* Philox4x32-10 on W counters at once; it only seeds the xoshiro lanes. */
static inline void mulhilo(vu a, u32 m, vu *hi, vu *lo) {
#if defined(__AVX2__)
    __m256i va = (__m256i)a, vm = _mm256_set1_epi32((int)m);
    __m256i even = _mm256_mul_epu32(va, vm);
    __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(va, 32), vm);
    *lo = (vu)_mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    *hi = (vu)_mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
#else
    for (int l = 0; l < W; l++) {
        u64 p = (u64)a[l] * m;
        (*lo)[l] = (u32)p;
        (*hi)[l] = (u32)(p >> 32);
    }
#endif
}

static void philox10(vu c[4], u32 k0, u32 k1) {
    for (int r = 0; r < 10; r++) {
        vu hi0, lo0, hi1, lo1;
        mulhilo(c[0], 0xD2511F53u, &hi0, &lo0);
        mulhilo(c[2], 0xCD9E8D57u, &hi1, &lo1);
        vu n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0; c[1] = lo1; c[2] = n2; c[3] = lo0;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
}

/* xoshiro128++, W independent lanes. */
typedef struct { vu s0, s1, s2, s3; } rng_t;

static inline vu rotl(vu x, int k) { return (x << k) | (x >> (32 - k)); }

static inline vu rng_next(rng_t *g) {
    vu r = rotl(g->s0 + g->s3, 7) + g->s0;
    vu t = g->s1 << 9;
    g->s2 ^= g->s0; g->s3 ^= g->s1; g->s1 ^= g->s2; g->s0 ^= g->s3;
    g->s2 ^= t; g->s3 = rotl(g->s3, 11);
    return r;
}

/* Sub-stream `stream` of the call seeded with (key0, key1, nonce): lane l starts from
   Philox(counter = (stream_lo, stream_hi, l, nonce), key = (key0, key1)). */
static inline rng_t rng_seed(const u32 *seed, u64 stream) {
    const vu lane = {0, 1, 2, 3, 4, 5, 6, 7};
    vu c[4] = {(vu){0} + (u32)stream, (vu){0} + (u32)(stream >> 32), lane, (vu){0} + seed[2]};
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
    vf r;
    for (int l = 0; l < W; l++) r[l] = sqrtf(x[l]);
    return r;
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
static inline void box_muller(vu a, vu b, vf *z0, vf *z1) {
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

/* The first n standard normals of sub-stream `stream`. */
static void normals(float *out, i64 n, const u32 *seed, u64 stream) {
    rng_t g = rng_seed(seed, stream);
    vf z0, z1;
    i64 i = 0;
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
        memcpy(out + i, tail, (size_t)(n - i) * sizeof(float));
    }
}

int nn_version(void) { return 2; }

/* The first n (a multiple of W) raw words of a sub-stream, lane-interleaved: for tests. */
void nn_words(u32 *out, i64 n, const u32 *seed, u64 stream) {
    rng_t g = rng_seed(seed, stream);
    for (i64 i = 0; i + W <= n; i += W) {
        vu r = rng_next(&g);
        memcpy(out + i, &r, sizeof r);
    }
}

/* ---- element-wise noise on a flat tensor --------------------------------------- */
#define CHUNK 2048 /* sub-stream k covers elements [k CHUNK, (k + 1) CHUNK) */

/* mode 0: out = mean + sigma z;  1: out = in + sigma z;  2: out = in (1 + sigma z). */
void nn_noise(float *out, const float *in, i64 n, int mode, float mean, float sigma,
              const u32 *seed, int threads) {
    i64 chunks = (n + CHUNK - 1) / CHUNK;
    #pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && chunks >= 8)
    for (i64 k = 0; k < chunks; k++) {
        float z[CHUNK];
        i64 start = k * CHUNK, len = n - start < CHUNK ? n - start : CHUNK;
        float *o = out + start;
        normals(z, len, seed, (u64)k);
        if (mode == 0) {
            for (i64 i = 0; i < len; i++) o[i] = mean + sigma * z[i];
        } else if (mode == 1) {
            const float *x = in + start;
            for (i64 i = 0; i < len; i++) o[i] = x[i] + sigma * z[i];
        } else {
            const float *x = in + start;
            for (i64 i = 0; i < len; i++) o[i] = x[i] * (1.0f + sigma * z[i]);
        }
    }
}

/* ---- noisy pre-activations --------------------------------------------------------- */
/* pre = g + bias made noisy: + sigma z (mode 1), * (1 + sigma z) (mode 2), as is (mode 0);
   noise, if set, gets the added term or the factor. A plain loop: auto-vectorised. */
static inline void noisy_pre(i64 n, const float *g, const float *bias, const float *z, int mode, float sigma,
                             float *pre, float *noise) {
    for (i64 j = 0; j < n; j++) {
        float p = g[j] + (bias ? bias[j] : 0.0f);
        if (mode == 1) {
            float e = sigma * z[j];
            p += e;
            if (noise) noise[j] = e;
        } else if (mode == 2) {
            float e = 1.0f + sigma * z[j];
            p *= e;
            if (noise) noise[j] = e;
        }
        pre[j] = p;
    }
}

/* ---- noisy LSTM step ------------------------------------------------------------- */
/* The math of W cells, on full vectors. Gates come as their activations i, f, g, o. */
static inline void cell_forward(const float *i, const float *f, const float *g, const float *o,
                                const float *c_in, float *c_out, float *h_out, float *h_copy) {
    vf c = vload(f) * vload(c_in) + vload(i) * vload(g);
    vf h = vload(o) * vtanh(c);
    vstore(c_out, c);
    vstore(h_out, h);
    if (h_copy) vstore(h_copy, h);
}

/* One step of a noisy LSTM on B rows: g (B, 4H) = [x_t, h_{t-1}] W^T (no bias), gates
   in torch's order i, f, g, o. Reads c_in, writes c_out (may alias), h to h_out (row
   stride hs) and, if xh is set, [x_next, h] to xh (B, F + H), the next step's GEMM
   input. Row b draws sub-stream stream0 + b: pre = g + bias becomes pre + sigma z
   (mode 1) or pre (1 + sigma z) (mode 2); noise (B, 4H), if set, gets the added term or
   the factor, act (B, 4H), if set, the gate activations. */
void nn_lstm_step(i64 B, i64 H, const float *g, const float *bias, const float *c_in, float *c_out,
                  float *h_out, i64 hs, float *xh, i64 F, const float *x_next, i64 xs,
                  int mode, float sigma, const u32 *seed, u64 stream0, float *act, float *noise,
                  int threads) {
    const i64 G = 4 * H, Hp = (H + W - 1) / W * W; /* gate blocks padded to whole vectors */
    #pragma omp parallel num_threads(threads) if (threads > 1 && B * H >= 4096)
    {
        float *z = malloc((size_t)(G + 4 * Hp) * sizeof(float)), *pre = z + G;
        memset(pre, 0, (size_t)(4 * Hp) * sizeof(float));
        #pragma omp for schedule(static)
        for (i64 b = 0; b < B; b++) {
            const float *gb = g + b * G;
            if (mode) normals(z, G, seed, stream0 + (u64)b);
            for (int k = 0; k < 4; k++) {
                float *pk = pre + k * Hp;
                noisy_pre(H, gb + k * H, bias ? bias + k * H : NULL, z + k * H, mode, sigma, pk,
                          noise ? noise + b * G + k * H : NULL);
                /* activations in place: short independent iterations overlap well */
                for (i64 j = 0; j < Hp; j += W)
                    vstore(pk + j, k == 2 ? vtanh(vload(pk + j)) : vsigmoid(vload(pk + j)));
                if (act) memcpy(act + b * G + k * H, pk, (size_t)H * sizeof(float));
            }
            const float *cp = c_in + b * H;
            float *cn = c_out + b * H, *hn = h_out + b * hs;
            float *hx = xh ? xh + b * (F + H) + F : NULL;
            i64 j = 0;
            for (; j + W <= H; j += W)
                cell_forward(pre + j, pre + Hp + j, pre + 2 * Hp + j, pre + 3 * Hp + j, cp + j, cn + j, hn + j,
                             hx ? hx + j : NULL);
            if (j < H) { /* the last partial vector, through padded copies */
                size_t n = (size_t)(H - j) * sizeof(float);
                float c0[W] = {0}, c1[W], h1[W];
                memcpy(c0, cp + j, n);
                cell_forward(pre + j, pre + Hp + j, pre + 2 * Hp + j, pre + 3 * Hp + j, c0, c1, h1, NULL);
                memcpy(cn + j, c1, n);
                memcpy(hn + j, h1, n);
                if (hx) memcpy(hx + j, h1, n);
            }
            if (xh && x_next) memcpy(xh + b * (F + H), x_next + b * xs, (size_t)F * sizeof(float));
        }
        free(z);
    }
}

/* One step of a noisy vanilla RNN on B rows, inference: g (B, H) = [x_t, h_{t-1}] W^T
   (no bias); pre = g + bias made noisy as in nn_lstm_step (row b: sub-stream stream0 + b);
   h = tanh(pre) (act 0) or relu(pre) (act 1) to h_out (row stride hs) and, if xh is set,
   [x_next, h] to xh (B, F + H); noise (B, H), if set, gets the added term or the factor. */
void nn_rnn_step(i64 B, i64 H, const float *g, const float *bias, float *h_out, i64 hs,
                 float *xh, i64 F, const float *x_next, i64 xs, int mode, float sigma,
                 const u32 *seed, u64 stream0, int act, float *noise, int threads) {
    const i64 Hp = (H + W - 1) / W * W;
    #pragma omp parallel num_threads(threads) if (threads > 1 && B * H >= 4096)
    {
        float *z = malloc((size_t)(H + Hp) * sizeof(float)), *pre = z + H;
        memset(pre, 0, (size_t)Hp * sizeof(float));
        #pragma omp for schedule(static)
        for (i64 b = 0; b < B; b++) {
            const float *gb = g + b * H;
            float *nb = noise ? noise + b * H : NULL, *hn = h_out + b * hs;
            if (mode) normals(z, H, seed, stream0 + (u64)b);
            noisy_pre(H, gb, bias, z, mode, sigma, pre, nb);
            if (act)
                for (i64 j = 0; j < H; j++) pre[j] = pre[j] > 0.0f ? pre[j] : 0.0f;
            else
                for (i64 j = 0; j < Hp; j += W) vstore(pre + j, vtanh(vload(pre + j)));
            memcpy(hn, pre, (size_t)H * sizeof(float));
            if (xh) {
                memcpy(xh + b * (F + H) + F, pre, (size_t)H * sizeof(float));
                if (x_next) memcpy(xh + b * (F + H), x_next + b * xs, (size_t)F * sizeof(float));
            }
        }
        free(z);
    }
}

/* Backward of W cells: a holds the activations i, f, g, o (gate stride H); dh the
   gradient of h_t; dc that of c_t in, of c_{t-1} out; d the pre-activation gradient
   (gate stride H); m the multiplicative noise (NULL: additive). */
static inline void cell_backward(const float *a, i64 H, const float *c_prev, const float *c_cur, const float *m,
                                 vf dh, float *dc, float *d) {
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

/* Backward of nn_lstm_step: from the gradients of h_t (dh_a, row stride as, plus dh_b
   if set) and of c_t (dc, overwritten with that of c_{t-1}) to the gradient of the
   pre-activation g (dg); factor is the multiplicative noise (NULL for additive). */
void nn_lstm_step_backward(i64 B, i64 H, const float *act, const float *c_prev, const float *c_cur,
                           const float *factor, const float *dh_a, i64 as, const float *dh_b,
                           float *dc, float *dg, int threads) {
    const i64 G = 4 * H;
    #pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && B * H >= 4096)
    for (i64 b = 0; b < B; b++) {
        const float *a = act + b * G, *m = factor ? factor + b * G : NULL;
        const float *cp = c_prev + b * H, *cc = c_cur + b * H, *da = dh_a + b * as, *db = dh_b ? dh_b + b * H : NULL;
        float *d = dg + b * G, *dcb = dc + b * H;
        i64 j = 0;
        for (; j + W <= H; j += W) {
            vf dh = vload(da + j) + (db ? vload(db + j) : vsplat(0.0f));
            cell_backward(a + j, H, cp + j, cc + j, m ? m + j : NULL, dh, dcb + j, d + j);
        }
        if (j < H) { /* the last partial vector, through padded copies (gate stride W) */
            i64 n = H - j;
            float ta[4 * W] = {0}, tm[4 * W] = {0}, td[4 * W], tp[W] = {0}, tc[W] = {0}, tdc[W] = {0}, th[W] = {0};
            for (int k = 0; k < 4; k++) {
                memcpy(ta + k * W, a + k * H + j, (size_t)n * sizeof(float));
                if (m) memcpy(tm + k * W, m + k * H + j, (size_t)n * sizeof(float));
            }
            for (i64 l = 0; l < n; l++) {
                tp[l] = cp[j + l];
                tc[l] = cc[j + l];
                tdc[l] = dcb[j + l];
                th[l] = da[j + l] + (db ? db[j + l] : 0.0f);
            }
            cell_backward(ta, W, tp, tc, m ? tm : NULL, vload(th), tdc, td);
            for (int k = 0; k < 4; k++) memcpy(d + k * H + j, td + k * W, (size_t)n * sizeof(float));
            memcpy(dcb + j, tdc, (size_t)n * sizeof(float));
        }
    }
}
"""

_VERSION = 2
# -fno-math-errno lets sqrtf vectorise; no -ffast-math: NaN and infinities behave
_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-std=gnu11", "-shared", "-fPIC")


# -- building and loading --------------------------------------------------------------
# The library runs native code in this process, so it is never loaded from a place another
# user could write: it lives in a directory of ours only (0o700, owned by us, in a parent
# nobody else can rename it out of), and its SHA-256 is recorded when it is built, beside the
# package version and a hash of the C source, in ``<library>.json``. A library whose record
# is missing or does not match is rebuilt, never loaded.
_RECORD = ".json"


def _cache_dir() -> Path:
    env = os.environ.get("NOISYNN_CACHE_DIR")
    if env:
        return Path(env) / "kernels"
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("noisynn")) / "kernels"
    except Exception:  # pragma: no cover - platformdirs is a dependency
        return Path(tempfile.gettempdir()) / "noisynn-kernels"


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU's feature flags."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def _unsafe(path: Path, *, leaf: bool) -> str | None:
    """Why ``path`` is not a safe home for the library (None if it is)."""
    import stat

    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) and leaf:
        return f"{path} is a symbolic link"
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if hasattr(os, "getuid") and st.st_uid != os.getuid() and (leaf or st.st_uid != 0):
        return f"{path} is owned by uid {st.st_uid}, not by this user"
    if st.st_mode & 0o022 and (leaf or not st.st_mode & stat.S_ISVTX):
        return f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _private_dir() -> Path:
    """The kernel cache directory, created 0o700; a fresh private one if it is not safe."""
    folder = _cache_dir()
    try:
        if not folder.is_dir():
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.mkdir(mode=0o700, exist_ok=True)
        reason = _unsafe(folder, leaf=True) or _unsafe(folder.parent, leaf=False)
    except OSError as exc:
        reason = f"{folder} is not usable ({exc})"
    if reason is None:
        return folder
    fresh = Path(tempfile.mkdtemp(prefix="noisynn-kernels-"))  # 0o700, ours, new
    warnings.warn(f"noisynn: not loading kernels from {folder}: {reason}; building into {fresh} for this process "
                  f"(make it private with `chmod 700 {folder}`)", RuntimeWarning, stacklevel=4)
    return fresh


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _identity() -> dict:
    """What a cached library must have been built from: package version, kernel version, C source."""
    from noisynn import __version__

    return {"package_version": __version__, "kernel_version": _VERSION,
            "source_sha256": hashlib.sha256(_SOURCE.encode()).hexdigest(), "flags": list(_FLAGS)}


def _verified(target: Path) -> bool:
    """True if ``target`` is the library its record describes, built from this package's source."""
    import json

    try:
        record = json.loads(Path(str(target) + _RECORD).read_text())
        return (isinstance(record, dict) and {k: record.get(k) for k in _identity()} == _identity()
                and record.get("sha256") == _file_sha256(target))
    except (OSError, ValueError):
        return False


def _compile(compiler: str, target: Path, openmp: bool) -> ctypes.CDLL:
    """Compile into a temporary name in ``target``'s directory, load that file, then publish it and its record.

    The library loaded is the file just compiled and hashed: a concurrent builder replacing
    ``target`` in between cannot swap it.
    """
    import json

    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "noisynn_fast.c"
        src.write_text(_SOURCE)
        out = Path(tmp) / target.name
        cmd = [compiler, *_FLAGS, *(["-fopenmp"] if openmp else []), str(src), "-o", str(out), "-lm"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        lib = ctypes.CDLL(str(out))
        record = Path(tmp) / (target.name + _RECORD)
        record.write_text(json.dumps({**_identity(), "sha256": _file_sha256(out)}, indent=1) + "\n")
        # library first, then its record: a reader between the two sees a mismatch and rebuilds
        os.replace(out, target)
        os.replace(record, str(target) + _RECORD)
        return lib


def _build() -> ctypes.CDLL:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise RuntimeError("no C compiler found (set CC)")
    key = hashlib.sha256("\0".join([_SOURCE, *_FLAGS, compiler, _cpu_id(), sys.platform]).encode()).hexdigest()[:16]
    folder = _private_dir()
    errors = []
    for openmp in (True, False):  # without OpenMP the kernels run on one thread
        target = folder / f"noisynn_fast_{key}{'_omp' if openmp else ''}.so"
        try:
            lib = ctypes.CDLL(str(target)) if target.is_file() and _verified(target) else None
            if lib is None or lib.nn_version() != _VERSION:
                lib = _compile(compiler, target, openmp)  # missing, unrecorded, altered or stale: rebuild
            if lib.nn_version() != _VERSION:
                raise RuntimeError("stale kernel library")
            return lib
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            errors.append(f"{exc} {detail.decode(errors='replace')[:300]}".strip())
    raise RuntimeError("; ".join(dict.fromkeys(errors)))  # each distinct failure once


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, i32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
    lib.nn_words.argtypes = [p, i64, p, ctypes.c_uint64]
    lib.nn_noise.argtypes = [p, p, i64, i32, f32, f32, p, i32]
    lib.nn_lstm_step.argtypes = [i64, i64, p, p, p, p, p, i64, p, i64, p, i64, i32, f32, p, ctypes.c_uint64, p, p, i32]
    lib.nn_lstm_step_backward.argtypes = [i64, i64, p, p, p, p, p, i64, p, p, p, i32]
    lib.nn_rnn_step.argtypes = [i64, i64, p, p, p, i64, p, i64, p, i64, i32, f32, p, ctypes.c_uint64, i32, p, i32]
    for fn in (lib.nn_words, lib.nn_noise, lib.nn_lstm_step, lib.nn_lstm_step_backward, lib.nn_rnn_step):
        fn.restype = None
    return lib


_LIB: ctypes.CDLL | None = None
_LIB_ERROR: str | None = None
_LOCK = threading.Lock()


def _library() -> ctypes.CDLL | None:
    global _LIB, _LIB_ERROR
    if _LIB is None and _LIB_ERROR is None:
        with _LOCK:
            if _LIB is None and _LIB_ERROR is None:
                try:
                    _LIB = _declare(_build())
                except Exception as exc:  # any failure: the reference path still works
                    _LIB_ERROR = str(exc)
                    warnings.warn(f"noisynn: fast CPU noise kernels unavailable, using the reference path ({exc})",
                                  RuntimeWarning, stacklevel=3)
    return _LIB


def available() -> bool:
    """True when the fast kernels are compiled and loaded (builds them on first call)."""
    return _library() is not None


def usable(t: Tensor, generator: torch.Generator | None) -> bool:
    """Whether the fast kernels can handle ``t`` (and draw from ``generator``) right now."""
    from noisynn.noise import reference_active

    return (
        t.device.type == "cpu"
        and t.dtype == torch.float32
        and (generator is None or generator.device.type == "cpu")
        and not reference_active()
        and available()
    )


# -- sampling -------------------------------------------------------------------------
def seed_words(generator: torch.Generator | None) -> ctypes.Array:
    """96 fresh random bits for one call (Philox key and nonce), drawn from ``generator``."""
    words = torch.randint(0, 2**32, (3,), dtype=torch.int64, generator=generator).tolist()
    return (ctypes.c_uint32 * 3)(*words)


def _threads() -> int:
    return torch.get_num_threads()


_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14  # Linux


def _madvise():
    """libc's ``madvise`` (Linux), or ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn


_MADVISE = _madvise()


def empty(*shape: int) -> Tensor:
    """``torch.empty(shape)`` (float32, CPU) whose large interior is backed by huge pages.

    The first touch of fresh memory costs a page fault per 4 KiB, more than drawing
    the noise that fills it; asking for transparent huge pages (where the kernel allows
    them on request) makes that 512 times rarer. Values are unaffected; a no-op elsewhere.
    """
    t = torch.empty(shape, dtype=torch.float32)
    nbytes = t.numel() * 4
    if _MADVISE is not None and nbytes >= 2 * _HUGE_PAGE:
        start = -(-t.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
        end = (t.data_ptr() + nbytes) // _HUGE_PAGE * _HUGE_PAGE
        if end > start:
            _MADVISE(start, end - start, _MADV_HUGEPAGE)  # advice only: failure changes nothing
    return t


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Fill the contiguous float32 CPU tensor ``t`` with N(mean, std^2) samples, in place."""
    if not (t.is_contiguous() and usable(t, generator)):
        raise ValueError("the fast sampler needs a contiguous float32 CPU tensor, its kernels built, "
                         "and no reference mode")
    _library().nn_noise(t.data_ptr(), None, t.numel(), 0, mean, std, seed_words(generator), _threads())
    return t


def gaussian_noise(y: Tensor, kind: str, sigma: float, generator: torch.Generator | None) -> Tensor:
    """``y + sigma z`` (additive) or ``y * (1 + sigma z)`` (multiplicative), ``z ~ N(0, 1)``.

    A fresh tensor; ``y`` is not modified. When ``y`` needs a gradient the noise is
    drawn into its own tensor and combined with torch ops, so autograd treats it as a
    constant (exactly like the reference ``apply``).
    """
    lib = _library()
    seed = seed_words(generator)
    if y.requires_grad and torch.is_grad_enabled():
        mean = 0.0 if kind == "additive" else 1.0
        z = empty(*y.shape)
        lib.nn_noise(z.data_ptr(), None, z.numel(), 0, mean, sigma, seed, _threads())
        return z.add_(y) if kind == "additive" else y * z
    src = y.contiguous()
    out = empty(*y.shape)
    lib.nn_noise(out.data_ptr(), src.data_ptr(), out.numel(), MODES[kind], 0.0, sigma, seed, _threads())
    return out


# -- the noisy LSTM layer ---------------------------------------------------------------
def _bias(b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor | None:
    if b_ih is None:
        return None
    return (b_ih if b_hh is None else b_ih + b_hh).contiguous()


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def lstm_layer(
    seq: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
    b_ih: Tensor | None, b_hh: Tensor | None, kind: str, sigma: float,
    generator: torch.Generator | None, record: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One direction of one noisy LSTM layer, fused; same contract as ``NoisyLSTM._unroll``.

    Args:
        seq: ``(T, B, F)`` input; h0, c0: ``(B, H)``; weights as in torch (gates i, f, g, o).
        kind, sigma, generator: the Gaussian noise (see ``NoiseModel.gaussian``).
        record: optional ``(T, B, 4H)`` tensor that receives the noise applied to every
            gate pre-activation (the added value, or the factor): for tests.

    Returns:
        ``(output (T, B, H), h_T, c_T)``; differentiable when autograd needs it.
    """
    seed = seed_words(generator)
    tensors = (seq, h0, c0, w_ih, w_hh, b_ih, b_hh)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _LSTMFunction.apply(*tensors, MODES[kind], sigma, seed, record)
    with torch.no_grad():
        return _lstm_forward(seq, h0, c0, w_ih, w_hh, _bias(b_ih, b_hh), MODES[kind], sigma, seed, record)


def _lstm_forward(x, h0, c0, w_ih, w_hh, bias, mode, sigma, seed, record):
    """Inference: blocks of rows through all steps (:func:`_share_blocks`), nothing kept
    for a backward pass. The noise of a row depends only on its position, so the result
    does not depend on the number of threads."""
    T, B, F = x.shape
    H = w_hh.shape[1]
    if x.stride(2) != 1:
        x = x.contiguous()
    wt = torch.cat([w_ih, w_hh], 1).t()  # (F + H, 4H): one GEMM on [x_t, h_{t-1}]
    out = empty(T, B, H)
    c_n = torch.empty(B, H, dtype=x.dtype)
    _share_blocks(_lstm_blocks, B, x, h0, c0, wt, bias, mode, sigma, seed, record, out, c_n)
    return out, out[T - 1].clone(), c_n


def _share_blocks(run, B: int, *args) -> None:
    """Call ``run(starts, threads, block, *args)`` on the row blocks of ``B`` rows.

    One thread: all blocks, the kernels multi-threaded. Several threads and blocks: the
    blocks are shared out among threads that each run whole blocks single-threaded (one
    block's GEMM overlaps another's gate arithmetic instead of every small GEMM being
    split). Grad and inference mode are per thread: the pool's threads get the caller's.
    """
    from concurrent.futures import ThreadPoolExecutor

    block = max(1, min(B, LSTM_BLOCK))
    starts = list(range(0, B, block))
    threads = _threads()
    workers = min(threads, len(starts))
    if workers <= 1:
        run(starts, threads, block, *args)
        return
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def part(i: int) -> None:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            run(starts[i::workers], 1, block, *args)

    with _torch_threads(1), ThreadPoolExecutor(workers) as pool:
        for job in [pool.submit(part, i) for i in range(workers)]:
            job.result()


class _torch_threads:
    """Temporarily set torch's intra-op thread count."""

    def __init__(self, n: int) -> None:
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)


def _lstm_blocks(starts, threads, block, x, h0, c0, wt, bias, mode, sigma, seed, record, out, c_n):
    """Run the LSTM row blocks beginning at ``starts`` through all T steps (own buffers)."""
    lib = _library()
    T, B, F = x.shape
    H = wt.shape[1] // 4
    bias_ptr, f32 = _ptr(bias), 4
    xh = torch.empty(block, F + H, dtype=x.dtype)
    gates = torch.empty(block, 4 * H, dtype=x.dtype)
    cell = torch.empty(block, H, dtype=x.dtype)
    for b0 in starts:
        n = min(block, B - b0)
        xh_n, gates_n, c = xh[:n], gates[:n], cell[:n]
        xh_n[:, :F] = x[0, b0 : b0 + n]
        xh_n[:, F:] = h0[b0 : b0 + n]
        c.copy_(c0[b0 : b0 + n])
        first_clean = not bool(h0[b0 : b0 + n].any())  # zero state: skip h_0 W_hh at t = 0
        for t in range(T):
            if t == 0 and first_clean:
                torch.mm(xh_n[:, :F], wt[:F], out=gates_n)
            else:
                torch.mm(xh_n, wt, out=gates_n)
            last = t == T - 1
            lib.nn_lstm_step(
                n, H, gates_n.data_ptr(), bias_ptr, c.data_ptr(), c.data_ptr(),
                out.data_ptr() + (t * B + b0) * H * f32, H,
                None if last else xh_n.data_ptr(), F,
                None if last else x.data_ptr() + ((t + 1) * x.stride(0) + b0 * x.stride(1)) * f32, x.stride(1),
                mode, sigma, seed, t * B + b0, None,
                None if record is None else record.data_ptr() + (t * B + b0) * 4 * H * f32,
                threads,
            )
        c_n[b0 : b0 + n] = c


@torch.no_grad()
def rnn_layer(
    seq: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None,
    nonlinearity: str, kind: str, sigma: float, generator: torch.Generator | None, record: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One direction of one noisy vanilla-RNN layer, fused, for inference (no autograd).

    Args:
        seq: ``(T, B, F)`` input; h0: ``(B, H)``; weights as in torch.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        kind, sigma, generator: the Gaussian noise on every pre-activation.
        record: optional ``(T, B, H)`` tensor that receives the noise applied (tests).

    Returns:
        ``(output (T, B, H), h_T)``. Rows run in blocks of :data:`LSTM_BLOCK` shared out
        among threads, as in :func:`lstm_layer`; row b of step t draws sub-stream
        ``t B + b``, so the result does not depend on the thread count.
    """
    T, B, F = seq.shape
    H = w_hh.shape[1]
    x = seq if seq.stride(2) == 1 else seq.contiguous()
    wt = torch.cat([w_ih, w_hh], 1).t()
    out = empty(T, B, H)
    _share_blocks(_rnn_blocks, B, x, h0, wt, _bias(b_ih, b_hh), MODES[kind], sigma, seed_words(generator), record,
                  out, 1 if nonlinearity == "relu" else 0)
    return out, out[T - 1].clone()


def _rnn_blocks(starts, threads, block, x, h0, wt, bias, mode, sigma, seed, record, out, act):
    """Run the vanilla-RNN row blocks beginning at ``starts`` through all T steps."""
    lib = _library()
    T, B, F = x.shape
    H = wt.shape[1]
    f32 = 4
    xh = torch.empty(block, F + H, dtype=x.dtype)
    pre = torch.empty(block, H, dtype=x.dtype)
    for b0 in starts:
        n = min(block, B - b0)
        xh_n, pre_n = xh[:n], pre[:n]
        xh_n[:, :F] = x[0, b0 : b0 + n]
        xh_n[:, F:] = h0[b0 : b0 + n]
        for t in range(T):
            torch.mm(xh_n, wt, out=pre_n)
            last = t == T - 1
            lib.nn_rnn_step(
                n, H, pre_n.data_ptr(), _ptr(bias), out.data_ptr() + (t * B + b0) * H * f32, H,
                None if last else xh_n.data_ptr(), F,
                None if last else x.data_ptr() + ((t + 1) * x.stride(0) + b0 * x.stride(1)) * f32, x.stride(1),
                mode, sigma, seed, t * B + b0, act,
                None if record is None else record.data_ptr() + (t * B + b0) * H * f32, threads,
            )


class _LSTMFunction(torch.autograd.Function):
    """Training: the fused forward keeps the activations; the backward is fused too."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode, sigma, seed, record):
        lib = _library()
        T, B, F = x.shape
        H = w_hh.shape[1]
        wt = torch.cat([w_ih, w_hh], 1).t()
        bias = _bias(b_ih, b_hh)
        xh = empty(T, B, F + H)  # every step's GEMM input, for dW
        xh[:, :, :F] = x
        xh[0, :, F:] = h0
        cs = empty(T + 1, B, H)  # c_0 ... c_T
        cs[0] = c0
        act = empty(T, B, 4 * H)
        factor = empty(T, B, 4 * H) if mode == MODES["multiplicative"] else None
        keep = factor if factor is not None else record
        out = empty(T, B, H)
        gates = torch.empty(B, 4 * H, dtype=x.dtype)
        threads = _threads()
        for t in range(T):
            torch.mm(xh[t], wt, out=gates)
            last = t == T - 1
            lib.nn_lstm_step(
                B, H, gates.data_ptr(), _ptr(bias), cs[t].data_ptr(), cs[t + 1].data_ptr(),
                out[t].data_ptr(), H, None if last else xh[t + 1].data_ptr(), F, None, 0,
                mode, sigma, seed, t * B, act[t].data_ptr(), _ptr(None if keep is None else keep[t]), threads,
            )
        if record is not None and factor is not None:
            record.copy_(factor)
        ctx.save_for_backward(w_ih, w_hh)
        ctx.buffers = (xh, cs, act, factor)
        ctx.has_bias = (b_ih is not None, b_hh is not None)
        return out, out[T - 1].clone(), cs[T].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out, d_hn, d_cn):
        lib = _library()
        w_ih, w_hh = ctx.saved_tensors
        xh, cs, act, factor = ctx.buffers
        T, B, H = cs.shape[0] - 1, cs.shape[1], cs.shape[2]
        F = xh.shape[2] - H
        d_out = torch.zeros(T, B, H, dtype=xh.dtype) if d_out is None else d_out.contiguous()
        dc = torch.zeros(B, H, dtype=xh.dtype) if d_cn is None else d_cn.contiguous().clone()
        dh_rec = None if d_hn is None else d_hn.contiguous()
        dg = empty(T, B, 4 * H)
        threads = _threads()
        for t in reversed(range(T)):
            lib.nn_lstm_step_backward(
                B, H, act[t].data_ptr(), cs[t].data_ptr(), cs[t + 1].data_ptr(),
                _ptr(None if factor is None else factor[t]), d_out[t].data_ptr(), H,
                _ptr(dh_rec), dc.data_ptr(), dg[t].data_ptr(), threads,
            )
            dh_rec = torch.mm(dg[t], w_hh)  # gradient of h_{t-1} through the recurrence
        dg2 = dg.view(T * B, 4 * H)
        dw = dg2.t().mm(xh.view(T * B, F + H))
        needs = ctx.needs_input_grad
        dx = dg2.mm(w_ih).view(T, B, F) if needs[0] else None
        db = dg2.sum(0) if any(ctx.has_bias) else None
        return (
            dx, dh_rec if needs[1] else None, dc if needs[2] else None,
            dw[:, :F] if needs[3] else None, dw[:, F:] if needs[4] else None,
            db if ctx.has_bias[0] else None, db if ctx.has_bias[1] else None,
            None, None, None, None,
        )
