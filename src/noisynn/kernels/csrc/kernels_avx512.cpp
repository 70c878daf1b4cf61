// The kernels compiled for x86-64 AVX-512 (F, DQ, BW, VL) + FMA: float arithmetic on
// 16 lanes (selected at run time: see table() in ops.cpp). The random words stay 8 lanes
// per sub-stream, so this copy draws the very numbers the AVX2 copy draws.
// Every header is included before the target switch (see kernels_impl.h).
#include <cstdint>
#include <cstdlib>

#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
#endif

#define NN_ISA avx512
#define NN_ISA_NAME "avx512+fma"
#define NN_AVX2 1
#define NN_W 16
#include "kernels_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace noisynn {
const KernelTable& avx512_table() { return avx512::kTable; }
}  // namespace noisynn
#endif
