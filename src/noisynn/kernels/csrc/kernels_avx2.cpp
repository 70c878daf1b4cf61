// The kernels compiled for x86-64 AVX2 + FMA (selected at run time: see table() in ops.cpp).
// Every header is included before the target switch (see kernels_impl.h).
#include <cstdint>
#include <cstdlib>

#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

#define NN_ISA avx2
#define NN_ISA_NAME "avx2+fma"
#define NN_AVX2 1
#include "kernels_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace noisynn {
const KernelTable& avx2_table() { return avx2::kTable; }
}  // namespace noisynn
#endif
