// noisynn kernels: the plain row-range functions behind the torch operators of ops.cpp.
//
// Everything here works on raw float32 buffers and never allocates a tensor; ops.cpp
// checks the tensors, splits the rows among torch's threads (at::parallel_for) and calls
// one of these functions per range. The functions exist three times, compiled for three
// instruction sets (kernels_base.cpp: the compiler's baseline; kernels_avx2.cpp: x86-64
// AVX2 + FMA; kernels_avx512.cpp: AVX-512 + FMA, 16 float lanes); table() picks one at run
// time from the CPU's features. All three draw the same random numbers.
#pragma once

#include <cstdint>

namespace noisynn {

// Noise modes, as the ops take them: 0 none (or a plain N(mean, sigma^2) fill), 1 additive
// (x + sigma z), 2 multiplicative (x (1 + sigma z)).
enum Mode : int { kNone = 0, kAdditive = 1, kMultiplicative = 2 };

// Elements of one sub-stream of the flat sampler: sub-stream k covers [k CHUNK, (k+1) CHUNK).
constexpr int64_t kChunk = 2048;

// One step of a noisy LSTM on a range of rows (all pointers at row 0).
// g (B, 4H) = [x_t, h_{t-1}] W^T without bias, gates in torch's order i, f, g, o.
// pre = g + bias becomes pre + sigma z (mode 1) or pre (1 + sigma z) (mode 2); row b draws
// sub-stream stream0 + b. Reads c_in, writes c_out (may alias), h to h_out (row stride hs)
// and, if xh is set, [x_next, h] to xh (row stride F + H), the next step's GEMM input
// (x_next, row stride xs, may be null: then only h is written). act (B, 4H), if set, gets
// the gate activations; noise (B, 4H), if set, the added term or the factor.
struct LstmStep {
  int64_t H;
  const float* g;
  const float* bias;
  const float* c_in;
  float* c_out;
  float* h_out;
  int64_t hs;
  float* xh;
  int64_t F;
  const float* x_next;
  int64_t xs;
  int mode;
  float sigma;
  uint32_t seed[3];
  uint64_t stream0;
  float* act;
  float* noise;
};

// One step of a noisy vanilla RNN on a range of rows, as LstmStep with g (B, H) and
// h = tanh(pre) or relu(pre).
struct RnnStep {
  int64_t H;
  const float* g;
  const float* bias;
  float* h_out;
  int64_t hs;
  float* xh;
  int64_t F;
  const float* x_next;
  int64_t xs;
  int mode;
  float sigma;
  uint32_t seed[3];
  uint64_t stream0;
  bool relu;
  float* noise;
};

// Backward of LstmStep: from the gradients of h_t (dh_a, row stride as, plus dh_b (row
// stride H); either may be null: zero) and of c_t (dc, overwritten with that of c_{t-1}) to the gradient of
// the pre-activation (dg, (B, 4H)); factor is the multiplicative noise (null: additive).
struct LstmBackward {
  int64_t H;
  const float* act;
  const float* c_prev;
  const float* c_cur;
  const float* factor;
  const float* dh_a;
  int64_t as;
  const float* dh_b;
  float* dc;
  float* dg;
};

struct KernelTable {
  const char* isa;
  // The first n (a multiple of 8) raw words of sub-stream `stream`, lane-interleaved.
  void (*words)(uint32_t* out, int64_t n, const uint32_t* seed, uint64_t stream);
  // Sub-streams [k0, k1) of a flat tensor of n elements: mode 0 out = mean + sigma z,
  // 1 out = in + sigma z, 2 out = in (1 + sigma z).
  void (*noise_chunks)(float* out, const float* in, int64_t n, int mode, float mean, float sigma,
                       const uint32_t* seed, int64_t k0, int64_t k1);
  void (*lstm_rows)(const LstmStep& s, int64_t b0, int64_t b1);
  void (*rnn_rows)(const RnnStep& s, int64_t b0, int64_t b1);
  void (*lstm_backward_rows)(const LstmBackward& s, int64_t b0, int64_t b1);
};

const KernelTable& base_table();
#if defined(__x86_64__) || defined(_M_X64)
const KernelTable& avx2_table();
const KernelTable& avx512_table();
#endif

// The table for this CPU: AVX-512 (F, DQ, BW, VL) + FMA where the CPU and OS have them,
// else AVX2 + FMA where it has both, else the baseline. NOISYNN_ISA=baseline|avx2 caps it.
const KernelTable& table();

}  // namespace noisynn
