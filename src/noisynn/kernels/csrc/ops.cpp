// noisynn kernels as torch operators: torch.ops.noisynn.*
//
// The schemas (TORCH_LIBRARY) and their CPU implementations: each checks its tensors,
// allocates its outputs, runs the GEMMs with ATen and hands rows to the kernels of
// kernels.h, shared among torch's intra-op threads with at::parallel_for (so the thread
// count is torch's own, and a kernel called inside another parallel region runs on its
// caller's thread). The fake (meta) kernels and the autograd formulas are registered from
// Python (noisynn/kernels/_ops.py). Noise is a function of the seed (3 int64 holding 32-bit
// words) and of each element's position only: never of the thread count or the schedule.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "kernels.h"

namespace noisynn {

// -- dispatch on the CPU's instruction set ------------------------------------------
static const KernelTable& pick_table() {
#if defined(__x86_64__) || defined(_M_X64)
  // NOISYNN_ISA caps the choice (benchmarks, tests): "baseline", "avx2"; unset or "avx512": the
  // best; any other value: the best too, and the Python side warns (kernels._check_isa_cap)
  const char* env = std::getenv("NOISYNN_ISA");
  const std::string cap = env ? env : "";
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  if (cap == "baseline") return base_table();
  if (avx512 && cap != "avx2") return avx512_table();
  if (avx2) return avx2_table();
#endif
  return base_table();
}

const KernelTable& table() {
  static const KernelTable& t = pick_table();
  return t;
}

namespace {

using at::Tensor;
using std::optional;

constexpr int64_t kParallelWork = 4096;  // rows x units below which a step stays on one thread

void check_f32(const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, "noisynn: ", name,
              " must be a float32 CPU tensor, got ", t.scalar_type(), " on ", t.device());
}

void read_seed(const Tensor& seed, uint32_t out[3]) {
  TORCH_CHECK(seed.device().is_cpu() && seed.scalar_type() == at::kLong && seed.numel() == 3,
              "noisynn: seed must be 3 int64 words (each < 2^32) on the CPU");
  Tensor s = seed.contiguous();
  const int64_t* p = s.data_ptr<int64_t>();
  for (int i = 0; i < 3; i++) out[i] = static_cast<uint32_t>(p[i]);
}

// torch.empty (float32, CPU) whose large interior is backed by transparent huge pages where
// the OS grants them on request: the first touch of fresh memory costs a page fault per
// 4 KiB, more than drawing the noise that fills it. Advice only: values are unaffected.
Tensor empty_f32(at::IntArrayRef sizes) {
  Tensor t = at::empty(sizes, at::TensorOptions().dtype(at::kFloat));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = 2u << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t nbytes = static_cast<uintptr_t>(t.numel()) * sizeof(float);
  if (nbytes >= 2 * kHuge) {
    uintptr_t start = (begin + kHuge - 1) / kHuge * kHuge, end = (begin + nbytes) / kHuge * kHuge;
    if (end > start) madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
  }
#endif
  return t;
}

float* fptr(const optional<Tensor>& t) { return t && t->numel() ? t->data_ptr<float>() : nullptr; }

// Rows [0, n) of one step: split among torch's threads when there is enough work.
template <typename Step, typename Fn>
void run_rows(const Step& s, int64_t n, int64_t units, bool parallel, Fn fn) {
  if (parallel && at::get_num_threads() > 1 && n * units >= kParallelWork && !at::in_parallel_region())
    at::parallel_for(0, n, 1, [&](int64_t b0, int64_t b1) { fn(s, b0, b1); });
  else
    fn(s, 0, n);
}

// -- the flat sampler -------------------------------------------------------------------
void fill(float* out, const float* in, int64_t n, int64_t mode, double mean, double sigma, const uint32_t seed[3]) {
  const KernelTable& k = table();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  auto body = [&](int64_t k0, int64_t k1) {
    k.noise_chunks(out, in, n, (int)mode, (float)mean, (float)sigma, seed, k0, k1);
  };
  if (chunks >= 8 && at::get_num_threads() > 1)
    at::parallel_for(0, chunks, 1, body);
  else
    body(0, chunks);
}

void noise_(Tensor out, const optional<Tensor>& input, int64_t mode, double mean, double sigma, const Tensor& seed) {
  at::NoGradGuard no_grad;  // the ops' own autograd is registered from Python
  check_f32(out, "out");
  TORCH_CHECK(out.is_contiguous(), "noisynn.noise_: out must be contiguous");
  TORCH_CHECK(mode >= 0 && mode <= 2, "noisynn.noise_: mode must be 0, 1 or 2, got ", mode);
  Tensor src;
  if (input) {
    check_f32(*input, "input");
    TORCH_CHECK(input->numel() == out.numel(), "noisynn.noise_: input and out differ in size");
    src = input->contiguous();
  }
  TORCH_CHECK(mode == kNone || src.defined(), "noisynn.noise_: modes 1 and 2 need an input");
  uint32_t s[3];
  read_seed(seed, s);
  fill(out.data_ptr<float>(), src.defined() ? src.data_ptr<float>() : nullptr, out.numel(), mode, mean, sigma, s);
}

Tensor gaussian(const Tensor& input, int64_t mode, double sigma, const Tensor& seed) {
  at::NoGradGuard no_grad;  // the ops' own autograd is registered from Python
  check_f32(input, "input");
  TORCH_CHECK(mode == kAdditive || mode == kMultiplicative, "noisynn.gaussian: mode must be 1 or 2, got ", mode);
  uint32_t s[3];
  read_seed(seed, s);
  Tensor src = input.contiguous(), out = empty_f32(input.sizes());
  fill(out.data_ptr<float>(), src.data_ptr<float>(), out.numel(), mode, 0.0, sigma, s);
  return out;
}

Tensor normal(at::IntArrayRef size, double mean, double std, const Tensor& seed) {
  at::NoGradGuard no_grad;  // the ops' own autograd is registered from Python
  uint32_t s[3];
  read_seed(seed, s);
  Tensor out = empty_f32(size);
  fill(out.data_ptr<float>(), nullptr, out.numel(), kNone, mean, std, s);
  return out;
}

Tensor words(const Tensor& seed, int64_t stream, int64_t n) {
  TORCH_CHECK(n >= 0 && n % 8 == 0, "noisynn.words: n must be a multiple of 8");
  uint32_t s[3];
  read_seed(seed, s);
  std::vector<uint32_t> w(static_cast<size_t>(n));
  table().words(w.data(), n, s, static_cast<uint64_t>(stream));
  Tensor out = at::empty({n}, at::TensorOptions().dtype(at::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; i++) o[i] = w[static_cast<size_t>(i)];
  return out;
}

std::string isa() { return table().isa; }

// -- shapes -----------------------------------------------------------------------------
struct Shape {
  int64_t T, B, F, H;
};

Shape layer_shape(const Tensor& x, const Tensor& h0, const Tensor& w, int64_t gates) {
  check_f32(x, "input");
  check_f32(h0, "h0");
  check_f32(w, "weight");
  TORCH_CHECK(x.dim() == 3, "noisynn: the input must be (T, B, F), got ", x.sizes());
  TORCH_CHECK(w.dim() == 2 && w.size(0) % gates == 0, "noisynn: the weight must be (", gates, " H, F + H)");
  Shape s{x.size(0), x.size(1), x.size(2), w.size(0) / gates};
  TORCH_CHECK(s.T > 0, "noisynn: the input has no time steps");
  TORCH_CHECK(w.size(1) == s.F + s.H, "noisynn: the weight must be (", gates, " H, F + H) = (", gates * s.H, ", ",
              s.F + s.H, "), got ", w.sizes());
  TORCH_CHECK(h0.sizes() == at::IntArrayRef({s.B, s.H}), "noisynn: h0 must be (B, H), got ", h0.sizes());
  return s;
}

Tensor bias_of(const optional<Tensor>& bias, int64_t n) {
  if (!bias) return Tensor();
  check_f32(*bias, "bias");
  TORCH_CHECK(bias->numel() == n, "noisynn: the bias must have ", n, " elements");
  return bias->contiguous();
}

// -- the noisy LSTM layer, inference -------------------------------------------------------
// Blocks of `block` rows run through all T steps, each with its own buffers (its gates, states
// and GEMM operands stay in the caches). One block or one thread: the blocks one after the
// other, each step's GEMM and rows multi-threaded. Otherwise whole blocks are shared among
// the threads, each single-threaded (one block's GEMM overlaps another's gate arithmetic).
//
// A batch of at most one block is still split into one block per thread when each gets
// at least kMinShared rows: a step's GEMM and rows shared among threads cost two thread
// hand-offs per step, more than the GEMM gains from the second thread at such sizes
// (batch 256 of lstm-rows on 2 threads: 0.82-0.88 of nn.LSTM as one block, 0.92 as two).
constexpr int64_t kMinShared = 64;

template <typename Block>
void share_blocks(int64_t B, int64_t& block, Block run) {
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (threads > 1 && B <= block && B >= threads * kMinShared) block = (B + threads - 1) / threads;
  const int64_t n_blocks = (B + block - 1) / block;
  if (n_blocks <= 1 || at::get_num_threads() <= 1 || at::in_parallel_region()) {
    for (int64_t k = 0; k < n_blocks; k++) run(k, true);
  } else {
    // the pool's threads get the caller's grad and inference mode (ATen ops run in the blocks)
    const at::ThreadLocalState caller;
    at::parallel_for(0, n_blocks, 1, [&](int64_t k0, int64_t k1) {
      at::ThreadLocalStateGuard same_modes(caller);
      for (int64_t k = k0; k < k1; k++) run(k, false);
    });
  }
}

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_infer(const Tensor& x_in, const Tensor& h0, const Tensor& c0,
                                                      const Tensor& w, const optional<Tensor>& bias_in, int64_t mode,
                                                      double sigma, const Tensor& seed, int64_t block, bool keep_noise) {
  at::NoGradGuard no_grad;  // the ops' own autograd is registered from Python
  const Shape d = layer_shape(x_in, h0, w, 4);
  const int64_t T = d.T, B = d.B, F = d.F, H = d.H;
  check_f32(c0, "c0");
  TORCH_CHECK(c0.sizes() == h0.sizes(), "noisynn: c0 must be (B, H)");
  Tensor x = x_in.stride(2) == 1 ? x_in : x_in.contiguous();
  Tensor wt = w.t(), wt_x = wt.narrow(0, 0, F);  // (F + H, 4H): one GEMM on [x_t, h_{t-1}]
  Tensor bias = bias_of(bias_in, 4 * H);
  uint32_t s[3];
  read_seed(seed, s);
  Tensor out = empty_f32({T, B, H}), c_n = at::empty({B, H}, x.options());
  Tensor noise = keep_noise ? empty_f32({T, B, 4 * H}) : at::empty({0}, x.options());
  block = std::max<int64_t>(1, std::min(B, block));
  const float *xp = x.data_ptr<float>(), *bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float *op = out.data_ptr<float>(), *np = keep_noise ? noise.data_ptr<float>() : nullptr;
  const KernelTable& kt = table();
  share_blocks(B, block, [&](int64_t k, bool parallel) {
    const int64_t b0 = k * block, n = std::min(block, B - b0);
    Tensor xh = at::empty({n, F + H}, x.options()), gates = at::empty({n, 4 * H}, x.options());
    Tensor c = c0.narrow(0, b0, n).contiguous().clone();
    xh.narrow(1, 0, F).copy_(x[0].narrow(0, b0, n));
    Tensor h_start = h0.narrow(0, b0, n);
    xh.narrow(1, F, H).copy_(h_start);
    const bool first_clean = !h_start.any().item<bool>();  // zero state: skip h_0 W_hh at t = 0
    for (int64_t t = 0; t < T; t++) {
      if (t == 0 && first_clean)
        at::mm_out(gates, xh.narrow(1, 0, F), wt_x);
      else
        at::mm_out(gates, xh, wt);
      const bool last = t == T - 1;
      LstmStep st{H, gates.data_ptr<float>(), bp, c.data_ptr<float>(), c.data_ptr<float>(),
                  op + (t * B + b0) * H, H, last ? nullptr : xh.data_ptr<float>(), F,
                  last ? nullptr : xp + (t + 1) * x.stride(0) + b0 * x.stride(1), x.stride(1),
                  (int)mode, (float)sigma, {s[0], s[1], s[2]}, static_cast<uint64_t>(t * B + b0), nullptr,
                  np ? np + (t * B + b0) * 4 * H : nullptr};
      run_rows(st, n, H, parallel, kt.lstm_rows);
    }
    c_n.narrow(0, b0, n).copy_(c);
  });
  return {out, out[T - 1].clone(), c_n, noise};
}

// -- the noisy LSTM layer, training: the forward keeps what the fused backward needs -----
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_train(
    const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w, const optional<Tensor>& bias_in,
    int64_t mode, double sigma, const Tensor& seed, bool keep_noise) {
  at::NoGradGuard no_grad;  // the ops' own autograd is registered from Python
  const Shape d = layer_shape(x, h0, w, 4);
  const int64_t T = d.T, B = d.B, F = d.F, H = d.H;
  check_f32(c0, "c0");
  TORCH_CHECK(c0.sizes() == h0.sizes(), "noisynn: c0 must be (B, H)");
  Tensor wt = w.t();
  Tensor bias = bias_of(bias_in, 4 * H);
  uint32_t s[3];
  read_seed(seed, s);
  Tensor xh = empty_f32({T, B, F + H});  // every step's GEMM input, for dW
  xh.narrow(2, 0, F).copy_(x);
  xh[0].narrow(1, F, H).copy_(h0);
  Tensor cs = empty_f32({T + 1, B, H});  // c_0 ... c_T
  cs[0].copy_(c0);
  Tensor act = empty_f32({T, B, 4 * H});
  const bool keep = keep_noise || mode == kMultiplicative;  // the factors are the backward's
  Tensor noise = keep ? empty_f32({T, B, 4 * H}) : at::empty({0}, x.options());
  Tensor out = empty_f32({T, B, H}), gates = at::empty({B, 4 * H}, x.options());
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  for (int64_t t = 0; t < T; t++) {
    at::mm_out(gates, xh[t], wt);
    const bool last = t == T - 1;
    LstmStep st{H, gates.data_ptr<float>(), bp, cs[t].data_ptr<float>(), cs[t + 1].data_ptr<float>(),
                out[t].data_ptr<float>(), H, last ? nullptr : xh[t + 1].data_ptr<float>(), F, nullptr, 0,
                (int)mode, (float)sigma, {s[0], s[1], s[2]}, static_cast<uint64_t>(t * B),
                act[t].data_ptr<float>(), keep ? noise[t].data_ptr<float>() : nullptr};
    run_rows(st, B, H, true, table().lstm_rows);
  }
  return {out, out[T - 1].clone(), cs[T].clone(), xh, cs, act, noise};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const optional<Tensor>& d_out_in, const optional<Tensor>& d_hn, const optional<Tensor>& d_cn, const Tensor& w,
    const Tensor& xh, const Tensor& cs, const Tensor& act, const optional<Tensor>& factor, bool need_dx) {
  at::NoGradGuard no_grad;  // the ops' own autograd is registered from Python
  const int64_t T = act.size(0), B = act.size(1), H = act.size(2) / 4, F = xh.size(2) - H;
  Tensor w_ih = w.narrow(1, 0, F), w_hh = w.narrow(1, F, H);
  // An absent gradient (autograd passes None for an output that reaches no loss) is zero:
  // nothing is allocated or filled for it (the step kernel skips a null dh).
  Tensor d_out = d_out_in ? d_out_in->contiguous() : Tensor();
  Tensor dc = d_cn ? d_cn->contiguous().clone() : at::zeros({B, H}, act.options());
  Tensor dh_rec = d_hn ? d_hn->contiguous() : Tensor();
  Tensor dg = empty_f32({T, B, 4 * H});
  Tensor dh_buf[2] = {at::empty({B, H}, act.options()), at::empty({B, H}, act.options())};
  const bool mult = factor && factor->numel();
  for (int64_t t = T - 1; t >= 0; t--) {
    LstmBackward st{H, act[t].data_ptr<float>(), cs[t].data_ptr<float>(), cs[t + 1].data_ptr<float>(),
                    mult ? (*factor)[t].data_ptr<float>() : nullptr,
                    d_out.defined() ? d_out[t].data_ptr<float>() : nullptr, H,
                    dh_rec.defined() ? dh_rec.data_ptr<float>() : nullptr, dc.data_ptr<float>(),
                    dg[t].data_ptr<float>()};
    run_rows(st, B, H, true, table().lstm_backward_rows);
    Tensor& next = dh_buf[t & 1];  // not the buffer the step above read
    at::mm_out(next, dg[t], w_hh);  // the gradient of h_{t-1} through the recurrence
    dh_rec = next;
  }
  Tensor dg2 = dg.view({T * B, 4 * H});
  Tensor dw = dg2.t().mm(xh.view({T * B, F + H}));
  Tensor dx = need_dx ? dg2.mm(w_ih).view({T, B, F}) : at::empty({0}, act.options());
  return {dx, dh_rec, dc, dw, dg2.sum(0)};
}

// -- the noisy vanilla RNN layer, inference ----------------------------------------------
std::tuple<Tensor, Tensor, Tensor> rnn_infer(const Tensor& x_in, const Tensor& h0, const Tensor& w,
                                             const optional<Tensor>& bias_in, bool relu, int64_t mode, double sigma,
                                             const Tensor& seed, int64_t block, bool keep_noise) {
  at::NoGradGuard no_grad;  // the ops' own autograd is registered from Python
  const Shape d = layer_shape(x_in, h0, w, 1);
  const int64_t T = d.T, B = d.B, F = d.F, H = d.H;
  Tensor x = x_in.stride(2) == 1 ? x_in : x_in.contiguous();
  Tensor wt = w.t();
  Tensor bias = bias_of(bias_in, H);
  uint32_t s[3];
  read_seed(seed, s);
  Tensor out = empty_f32({T, B, H});
  Tensor noise = keep_noise ? empty_f32({T, B, H}) : at::empty({0}, x.options());
  block = std::max<int64_t>(1, std::min(B, block));
  const float *xp = x.data_ptr<float>(), *bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float *op = out.data_ptr<float>(), *np = keep_noise ? noise.data_ptr<float>() : nullptr;
  const KernelTable& kt = table();
  share_blocks(B, block, [&](int64_t k, bool parallel) {
    const int64_t b0 = k * block, n = std::min(block, B - b0);
    Tensor xh = at::empty({n, F + H}, x.options()), pre = at::empty({n, H}, x.options());
    xh.narrow(1, 0, F).copy_(x[0].narrow(0, b0, n));
    xh.narrow(1, F, H).copy_(h0.narrow(0, b0, n));
    for (int64_t t = 0; t < T; t++) {
      at::mm_out(pre, xh, wt);
      const bool last = t == T - 1;
      RnnStep st{H, pre.data_ptr<float>(), bp, op + (t * B + b0) * H, H, last ? nullptr : xh.data_ptr<float>(), F,
                 last ? nullptr : xp + (t + 1) * x.stride(0) + b0 * x.stride(1), x.stride(1), (int)mode, (float)sigma,
                 {s[0], s[1], s[2]}, static_cast<uint64_t>(t * B + b0), relu, np ? np + (t * B + b0) * H : nullptr};
      run_rows(st, n, H, parallel, kt.rnn_rows);
    }
  });
  return {out, out[T - 1].clone(), noise};
}

// -- noise-free cells, for layers whose products are computed elsewhere (crossbars) --------
void check_cell(const Tensor& g, int64_t units, const Tensor& h_out, const optional<Tensor>& xh,
                const optional<Tensor>& x_next) {
  check_f32(g, "gates");
  check_f32(h_out, "h_out");
  TORCH_CHECK(g.dim() == 2 && g.is_contiguous(), "noisynn: the gates must be a contiguous (n, units) tensor");
  TORCH_CHECK(h_out.dim() == 2 && h_out.size(0) == g.size(0) && h_out.size(1) * units == g.size(1) &&
                  h_out.stride(1) == 1,
              "noisynn: h_out must be (n, H) with unit stride along H");
  if (xh) TORCH_CHECK(xh->dim() == 2 && xh->is_contiguous() && xh->size(0) == g.size(0) && xh->size(1) >= h_out.size(1),
                      "noisynn: xh must be a contiguous (n, F + H) tensor");
  if (x_next) TORCH_CHECK(xh && x_next->dim() == 2 && x_next->stride(1) == 1 &&
                              x_next->size(1) == xh->size(1) - h_out.size(1),
                          "noisynn: x_next must be (n, F) with unit stride, and needs xh");
}

void lstm_cell_(const Tensor& g, const optional<Tensor>& bias_in, Tensor c, Tensor h_out, const optional<Tensor>& xh,
                const optional<Tensor>& x_next) {
  at::NoGradGuard no_grad;  // the ops' own autograd is registered from Python
  check_cell(g, 4, h_out, xh, x_next);
  const int64_t n = g.size(0), H = h_out.size(1);
  check_f32(c, "c");
  TORCH_CHECK(c.is_contiguous() && c.numel() == n * H, "noisynn: c must be a contiguous (n, H) tensor");
  Tensor bias = bias_of(bias_in, 4 * H);
  LstmStep st{H, g.data_ptr<float>(), bias.defined() ? bias.data_ptr<float>() : nullptr, c.data_ptr<float>(),
              c.data_ptr<float>(), h_out.data_ptr<float>(), h_out.stride(0), fptr(xh), xh ? xh->size(1) - H : 0,
              fptr(x_next), x_next ? x_next->stride(0) : 0, kNone, 0.0f, {0, 0, 0}, 0, nullptr, nullptr};
  run_rows(st, n, H, true, table().lstm_rows);
}

void rnn_cell_(const Tensor& g, const optional<Tensor>& bias_in, bool relu, Tensor h_out, const optional<Tensor>& xh,
               const optional<Tensor>& x_next) {
  at::NoGradGuard no_grad;  // the ops' own autograd is registered from Python
  check_cell(g, 1, h_out, xh, x_next);
  const int64_t n = g.size(0), H = h_out.size(1);
  Tensor bias = bias_of(bias_in, H);
  RnnStep st{H, g.data_ptr<float>(), bias.defined() ? bias.data_ptr<float>() : nullptr, h_out.data_ptr<float>(),
             h_out.stride(0), fptr(xh), xh ? xh->size(1) - H : 0, fptr(x_next), x_next ? x_next->stride(0) : 0,
             kNone, 0.0f, {0, 0, 0}, 0, relu, nullptr};
  run_rows(st, n, H, true, table().rnn_rows);
}

}  // namespace

TORCH_LIBRARY(noisynn, m) {
  m.def("isa() -> str", &isa);
  m.def("noise_(Tensor(a!) out, Tensor? input, int mode, float mean, float sigma, Tensor seed) -> ()");
  m.def("gaussian(Tensor input, int mode, float sigma, Tensor seed) -> Tensor");
  m.def("normal(int[] size, float mean, float std, Tensor seed) -> Tensor");
  m.def("words(Tensor seed, int stream, int n) -> Tensor");
  m.def("lstm_infer(Tensor x, Tensor h0, Tensor c0, Tensor w, Tensor? bias, int mode, float sigma, Tensor seed, "
        "int block, bool keep_noise) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("lstm_train(Tensor x, Tensor h0, Tensor c0, Tensor w, Tensor? bias, int mode, float sigma, Tensor seed, "
        "bool keep_noise) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("lstm_backward(Tensor? d_out, Tensor? d_hn, Tensor? d_cn, Tensor w, Tensor xh, Tensor cs, Tensor act, "
        "Tensor? factor, bool need_dx) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("rnn_infer(Tensor x, Tensor h0, Tensor w, Tensor? bias, bool relu, int mode, float sigma, Tensor seed, "
        "int block, bool keep_noise) -> (Tensor, Tensor, Tensor)");
  m.def("lstm_cell_(Tensor g, Tensor? bias, Tensor(a!) c, Tensor(b!) h_out, Tensor(c!)? xh, Tensor? x_next) -> ()");
  m.def("rnn_cell_(Tensor g, Tensor? bias, bool relu, Tensor(a!) h_out, Tensor(b!)? xh, Tensor? x_next) -> ()");
}

TORCH_LIBRARY_IMPL(noisynn, CPU, m) {
  m.impl("noise_", &noise_);
  m.impl("gaussian", &gaussian);
  m.impl("normal", &normal);
  m.impl("words", &words);
  m.impl("lstm_infer", &lstm_infer);
  m.impl("lstm_train", &lstm_train);
  m.impl("lstm_backward", &lstm_backward);
  m.impl("rnn_infer", &rnn_infer);
  m.impl("lstm_cell_", &lstm_cell_);
  m.impl("rnn_cell_", &rnn_cell_);
}

}  // namespace noisynn
