"""Benchmark: the cost of noise (issue 8). Noisy noisynn vs noise-free torch, side by side.

Every row times noisynn and its reference in the same process, alternately (A B B A ...),
after a warm-up, and reports the median of ``--repeats`` repeats of each and their ratio:

1. train   lstm-rows training step, batch 256, additive sigma 0.5, vs ``nn.LSTM`` +
           ``nn.Linear`` noise-free (same shapes, same SGD optimiser);
2. eval    lstm-rows evaluation, sigma 0.5, 40 noisy repeats of 256 sequences batched
           by ``noisynn.repeat_forward``, vs ``nn.LSTM`` + ``nn.Linear`` noise-free on the
           same 10,240 sequences in batches of 256 (its fastest batch here);
3. sampler noisynn's Gaussian sampler vs ``torch.randn`` filling the same 2^22 floats
           (``Tensor.normal_`` shown for reference: what noisynn used before);
4. cnn6    cnn6 (fixed batch-norm) evaluation, additive sigma 0.5, 40 repeats of 64
           images, vs the same network as plain ``torch.nn`` modules noise-free;
5. GFLOP/s the achieved rate of the noisy evaluations (matrix-product FLOPs / time) vs
           ``torch.mm`` on the same GEMM shapes;
7. linear  ``NoisyLinear(n, n)`` inference at batch 512 (n = 128, 512, 2048), additive sigma
           0.5, one call vs ``nn.Linear`` noise-free (issue 20's small layers); "batches":
           one noisy lstm-rows pass at batch 256, 1,024, 4,096 vs ``nn.LSTM`` on the same batch;
   "limits" (not in the default set): where the time of a noisy lstm-rows pass (batch 256) and
           of a ``NoisyLinear`` 128 x 128 (batch 512) goes: GEMMs alone, noise alone, fused layer
           without and with noise, as shares of the noise-free torch reference, 1 and N threads;
6. memory  peak resident memory (VmHWM) of a whole lstm-rows evaluation point (40 runs x
           10,000 random 28x28 sequences, as the engine runs it: groups of 10 runs, test
           batches of 1,000, ``max_batch=20_000``, inference mode), in a subprocess; its
           time gives the projected time of a paper grid (11 models x 11 sigma_val points).

Usage::

    python benchmarks/bench_speed.py                      # all rows, --device auto
    python benchmarks/bench_speed.py --device cuda --repeats 9
    python benchmarks/bench_speed.py --only eval,sampler --quick
    NOISYNN_REFERENCE=1 python benchmarks/bench_speed.py  # noisynn's plain reference paths

Other processes on the machine distort the numbers (the load average is printed: on a
2-core box, anything above ~0.5 before the run means the table is not trustworthy).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

import noisynn

try:  # the fast paths (noisynn.kernels since issue 16; absent before issue 8: the benchmark still runs)
    from noisynn import kernels as _fast
except ImportError:  # pragma: no cover
    try:
        from noisynn import _fast  # type: ignore[no-redef]
    except ImportError:
        _fast = None

SIGMA = 0.5
REPEATS = 40  # noisy runs per evaluation point (the papers' protocol)
GRID_POINTS = 11 * 11  # 11 trained models x 11 sigma_val
# what the engine evaluates for such a grid: 40 runs at the 10 noisy sigma_val, one exact
# run at sigma_val = 0, over the 10,000 test sequences
GRID_SEQUENCES = 11 * (10 * REPEATS + 1) * 10_000


# -- timing -------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pair(a: Callable[[], object], b: Callable[[], object], device: torch.device,
              repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Median seconds of ``a()`` and of ``b()``, timed alternately (A B B A A B ...)."""
    for _ in range(warmup):
        a(), b()
    _sync(device)
    times: dict[int, list[float]] = {0: [], 1: []}
    for r in range(repeats):
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            fn = a if which == 0 else b
            start = time.perf_counter()
            fn()
            _sync(device)
            times[which].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def time_one(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- models -------------------------------------------------------------------------------
class TorchLSTMRows(nn.Module):
    """lstm-rows as plain torch: ``nn.LSTM(28, 128)`` read out by ``nn.Linear(128, 10)``."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(28, 128, batch_first=True)
        self.fc = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


def plain_torch_copy(model: nn.Module) -> nn.Module:
    """A copy of a noisynn network in which every noisy layer is its ``torch.nn`` parent class."""
    plain = copy.deepcopy(model)
    for module in plain.modules():
        if isinstance(module, noisynn.NoiseSite):
            module.__class__ = next(c for c in type(module).__mro__ if c.__module__.startswith("torch.nn"))
    return plain


def gemm_rate(shapes: list[tuple[int, int, int]], device: torch.device, repeats: int) -> float:
    """GFLOP/s of ``torch.mm`` over the GEMMs ``(m, k) x (k, n)`` in ``shapes`` (one each)."""
    by_shape = {(m, k, n): (torch.randn(m, k, device=device), torch.randn(k, n, device=device))
                for m, k, n in set(shapes)}

    def run() -> None:
        for shape in shapes:
            torch.mm(*by_shape[shape])

    seconds = time_one(run, device, repeats)
    return sum(2 * m * k * n for m, k, n in shapes) / seconds / 1e9


def conv_linear_gemms(model: nn.Module, x: torch.Tensor) -> list[tuple[int, int, int]]:
    """The GEMM shape (im2col for convolutions) of every Conv2d / Linear of one forward pass."""
    shapes: list[tuple[int, int, int]] = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            b, cout, oh, ow = output.shape
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            shapes.append((b * oh * ow, k, cout))
        elif isinstance(module, nn.Linear):
            shapes.append((output.numel() // module.out_features, module.in_features, module.out_features))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.inference_mode():
        model(x)
    for h in handles:
        h.remove()
    return shapes


# -- the rows -----------------------------------------------------------------------------
Row = dict


def bench_train(device: torch.device, repeats: int, batch: int) -> list[Row]:
    torch.manual_seed(0)
    noisy = noisynn.build_model("lstm-rows").to(device).train()
    noisynn.set_noise(noisy, "additive", SIGMA)
    ref = TorchLSTMRows().to(device).train()
    x = torch.rand(batch, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def stepper(model: nn.Module) -> Callable[[], None]:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        return step

    t_noisy, t_ref = time_pair(stepper(noisy), stepper(ref), device, repeats)
    return [dict(name="1 train lstm-rows, batch 256", unit="seq/s", noisy=batch / t_noisy, ref=batch / t_ref,
                 target=0.75, stretch=0.9)]


def time_noisy_eval(model: str, ref: Callable[[torch.Tensor], object], device: torch.device, repeats: int,
                    batch: int) -> tuple[float, float, int]:
    """Seconds of ``REPEATS`` noisy passes of ``batch`` sequences through ``model`` (batched
    by ``repeat_forward``) and of ``ref`` noise-free on the same sequences in chunks of 256
    (its fastest batch here); and the number of sequences."""
    torch.manual_seed(0)
    noisy = noisynn.build_model(model).to(device).eval()
    noisynn.set_noise(noisy, "additive", SIGMA)
    x = torch.rand(batch, 28, 28, device=device)
    tiled = x.repeat(REPEATS, 1, 1)

    def run_noisy() -> None:
        with torch.inference_mode():
            noisynn.repeat_forward(noisy, x, REPEATS)

    def run_ref() -> None:
        with torch.inference_mode():
            for chunk in tiled.split(256):
                ref(chunk)

    t_noisy, t_ref = time_pair(run_noisy, run_ref, device, repeats)
    return t_noisy, t_ref, REPEATS * batch


def bench_eval(device: torch.device, repeats: int, batch: int) -> tuple[list[Row], tuple[float, float]]:
    torch.manual_seed(0)
    ref = TorchLSTMRows().to(device).eval()
    t_noisy, t_ref, n = time_noisy_eval("lstm-rows", ref, device, repeats, batch)
    rows = [dict(name=f"2 eval lstm-rows, {REPEATS} x {batch} seq", unit="seq/s", noisy=n / t_noisy, ref=n / t_ref,
                 target=0.5, stretch=0.7)]
    # 5: achieved GFLOP/s (both networks do the same matrix products) vs torch.mm on them
    flops = 2 * 28 * 4 * 128 * (28 + 128) + 2 * 128 * 10
    block = min(n, getattr(_fast, "LSTM_BLOCK", 256))
    mm = gemm_rate([(block, 28 + 128, 4 * 128)] * 28 + [(block, 128, 10)], device, repeats)
    rows.append(dict(name="5 GFLOP/s lstm-rows eval (ref: torch.mm)", unit="GFLOP/s", noisy=flops * n / t_noisy / 1e9,
                     ref=mm, target=None, extra=f"nn.LSTM {flops * n / t_ref / 1e9:.1f}"))
    return rows, (n / t_noisy, n / t_ref)


def bench_lstm_batches(device: torch.device, repeats: int, batches: tuple[int, ...]) -> list[Row]:
    """Issue 20's rows: one noisy lstm-rows pass (no repeats) at each batch size vs noise-free
    ``nn.LSTM`` + ``nn.Linear`` on the same batch, inference."""
    torch.manual_seed(0)
    noisy = noisynn.build_model("lstm-rows").to(device).eval()
    noisynn.set_noise(noisy, "additive", SIGMA)
    ref = TorchLSTMRows().to(device).eval()
    rows = []
    for batch in batches:
        x = torch.rand(batch, 28, 28, device=device)

        def run_noisy(x: torch.Tensor = x) -> None:
            with torch.inference_mode():
                noisy(x)

        def run_ref(x: torch.Tensor = x) -> None:
            with torch.inference_mode():
                ref(x)

        t_noisy, t_ref = time_pair(run_noisy, run_ref, device, repeats)
        rows.append(dict(name=f"2b eval lstm-rows, one pass of {batch}", unit="seq/s", noisy=batch / t_noisy,
                         ref=batch / t_ref, target=1.2 if batch >= 256 else None))
    return rows


def bench_linear(device: torch.device, repeats: int, batch: int, sizes: tuple[int, ...]) -> list[Row]:
    """Issue 20's small layers: ``NoisyLinear(n, n)`` inference, additive sigma 0.5, one call on
    ``batch`` rows, vs ``nn.Linear(n, n)`` noise-free; each call timed many times per repeat."""
    rows = []
    for n in sizes:
        torch.manual_seed(0)
        noisy = noisynn.NoisyLinear(n, n).to(device).eval()
        noisynn.set_noise(noisy, "additive", SIGMA)
        ref = nn.Linear(n, n).to(device).eval()
        ref.load_state_dict(noisy.state_dict())
        x = torch.randn(batch, n, device=device)
        inner = max(1, int(2e8 // (2 * batch * n * n)))  # ~0.2 GFLOP per timed repeat

        def run_noisy(x: torch.Tensor = x, inner: int = inner, noisy: nn.Module = noisy) -> None:
            with torch.inference_mode():
                for _ in range(inner):
                    noisy(x)

        def run_ref(x: torch.Tensor = x, inner: int = inner, ref: nn.Module = ref) -> None:
            with torch.inference_mode():
                for _ in range(inner):
                    ref(x)

        t_noisy, t_ref = time_pair(run_noisy, run_ref, device, repeats)
        rows.append(dict(name=f"7 eval NoisyLinear {n}x{n}, batch {batch}", unit="call/s", noisy=inner / t_noisy,
                         ref=inner / t_ref, target=0.8 if n < 512 else 0.95))
    return rows


def bench_rnn(device: torch.device, repeats: int, batch: int) -> list[Row]:
    """Extra row: rnn-rows noisy evaluation vs nn.RNN + nn.Linear noise-free."""
    torch.manual_seed(0)
    rnn, head = nn.RNN(28, 128, batch_first=True).to(device).eval(), nn.Linear(128, 10).to(device)
    t_noisy, t_ref, n = time_noisy_eval("rnn-rows", lambda xb: head(rnn(xb)[0][:, -1]), device, repeats, batch)
    return [dict(name=f"+ eval rnn-rows, {REPEATS} x {batch} seq", unit="seq/s", noisy=n / t_noisy, ref=n / t_ref,
                 target=None, extra="vs nn.RNN + nn.Linear")]


def bench_compiled(device: torch.device, repeats: int, batch: int) -> list[Row]:
    """Extra row: lstm-rows noisy evaluation through the torch.compile'd reference step
    (noisynn.kernels.compiled) vs, on the CPU, the hand-written fused operator and, on CUDA,
    cuDNN's nn.LSTM noise-free (and the plain per-step path, shown beside)."""
    from noisynn.kernels import compiled

    torch.manual_seed(0)
    model = noisynn.build_model("lstm-rows").to(device).eval()
    lstm = model.rnn
    x = torch.rand(batch, 28, 28, device=device).repeat(REPEATS, 1, 1).transpose(0, 1).contiguous()
    w_ih, w_hh, b_ih, b_hh = lstm._cell_weights(0)
    bias = _fast.merged_bias(b_ih, b_hh)
    zeros = torch.zeros(x.shape[1], lstm.hidden_size, device=device)

    def run_compiled() -> None:
        with torch.inference_mode():
            compiled.lstm_layer(x, zeros, zeros, w_ih, w_hh, bias, "additive", SIGMA)

    if device.type == "cpu":
        def run_other() -> None:
            with torch.inference_mode():
                _fast.lstm_layer(x, zeros, zeros, w_ih, w_hh, b_ih, b_hh, "additive", SIGMA, None)
        other = "the fused CPU operator"
    else:
        ref = nn.LSTM(28, 128).to(device).eval()

        def run_other() -> None:
            with torch.inference_mode():
                ref(x)
        other = "cuDNN nn.LSTM noise-free"
    run_compiled()  # compile outside the timing
    t_comp, t_other = time_pair(run_compiled, run_other, device, repeats)
    n = x.shape[1]
    extra = f"vs {other}"
    if device.type != "cpu":
        def run_plain() -> None:
            with torch.inference_mode(), noisynn.Additive(SIGMA):
                lstm(x.transpose(0, 1))
        extra += f"; plain per-step path {n / time_one(run_plain, device, repeats) :.0f} seq/s"
    return [dict(name=f"+ compiled LSTM step, {REPEATS} x {batch} seq", unit="seq/s", noisy=n / t_comp,
                 ref=n / t_other, target=None, extra=extra)]


def bench_sampler(device: torch.device, repeats: int, numel: int) -> list[Row]:
    t = torch.empty(numel, device=device)
    fast = _fast is not None and (_fast.fast_path(t) if hasattr(_fast, "fast_path") else _fast.usable(t, None))

    def sample() -> None:
        if fast:
            _fast.normal_(t)
        else:
            t.normal_()

    t_fast, t_randn = time_pair(sample, lambda: torch.randn(numel, device=device, out=t), device, 2 * repeats)
    t_normal = time_one(lambda: t.normal_(), device, 2 * repeats)
    label = "fast" if fast else "normal_"
    return [dict(name=f"3 sampler ({label}) vs torch.randn", unit="M/s", noisy=numel / t_fast / 1e6,
                 ref=numel / t_randn / 1e6, target=None, extra=f"normal_ {numel / t_normal / 1e6:.0f}")]


def bench_cnn6(device: torch.device, repeats: int, batch: int) -> list[Row]:
    torch.manual_seed(0)
    noisy = noisynn.build_model("cnn6", noise_kind="additive").to(device).eval()
    ref = plain_torch_copy(noisy).eval()
    noisynn.set_noise(noisy, "additive", SIGMA)
    x = torch.rand(batch, 1, 28, 28, device=device)
    tiled = x.repeat(REPEATS, 1, 1, 1)

    def run_noisy() -> None:
        with torch.inference_mode():
            noisynn.repeat_forward(noisy, x, REPEATS)

    def run_ref() -> None:
        with torch.inference_mode():
            ref(tiled)

    t_noisy, t_ref = time_pair(run_noisy, run_ref, device, repeats)
    n = REPEATS * batch
    shapes = conv_linear_gemms(ref, tiled)
    flops = sum(2 * m * k * q for m, k, q in shapes) / n
    mm = gemm_rate(shapes, device, max(3, repeats // 2))
    return [
        dict(name=f"4 eval cnn6, {REPEATS} x {batch} images", unit="img/s", noisy=n / t_noisy, ref=n / t_ref,
             target=0.8),
        dict(name="5 GFLOP/s cnn6 eval (ref: torch.mm)", unit="GFLOP/s", noisy=flops * n / t_noisy / 1e9, ref=mm,
             target=None, extra=f"plain {flops * n / t_ref / 1e9:.1f}"),
    ]


def bench_limits(repeats: int) -> None:
    """Issue 20's limits: where the time of a noisy lstm-rows pass (batch 256) and of a small
    ``NoisyLinear`` (128 x 128, batch 512) goes, part by part, against the noise-free torch
    reference, at one thread and at torch's thread count (CPU, fast kernels only).

    Parts: the GEMMs alone (``torch.mm`` on the fused layer's shapes), the noise alone (the
    fused sampler drawing the same number of normals, per step into a cache-sized buffer), the
    fused layer without noise (mode 0) and with it.
    """
    if _fast is None or not _fast.available():
        print("limits: the fast kernels are not built here")
        return
    threads = torch.get_num_threads()
    seed = torch.tensor([1, 2, 3])
    T, B, Fi, H = 28, 256, 28, 128
    torch.manual_seed(0)
    x, h0, c0 = torch.rand(T, B, Fi), torch.zeros(B, H), torch.zeros(B, H)
    lstm = nn.LSTM(Fi, H)
    w = torch.cat([lstm.weight_ih_l0, lstm.weight_hh_l0], 1).detach()
    bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach()
    xh, gates, z = torch.rand(B, Fi + H), torch.empty(B, 4 * H), torch.empty(B, 4 * H)
    n, rows = 128, 512
    lin = nn.Linear(n, n)
    noisy_lin = noisynn.NoisyLinear(n, n)
    noisy_lin.load_state_dict(lin.state_dict())
    noisynn.set_noise(noisy_lin, "additive", SIGMA)
    xl, yl = torch.randn(rows, n), torch.empty(rows, n)

    def per_call(fn: Callable[[], object], inner: int) -> float:
        return time_one(lambda: [fn() for _ in range(inner)], torch.device("cpu"), repeats) / inner

    print("limits: seconds per call, one process; share = time / the noise-free torch reference's time")
    print(f"{'threads':>7}  {'part':<58} {'time':>10}  {'share':>6}")
    try:
        for k in sorted({1, threads}):
            torch.set_num_threads(k)
            with torch.inference_mode():
                ref = per_call(lambda: lstm(x), 5)
                lstm_parts = [
                    ("lstm-rows pass, batch 256: nn.LSTM (the reference)", ref),
                    ("  28 GEMMs alone, (256 x 156) (156 x 512)",
                     per_call(lambda: [torch.mm(xh, w.t(), out=gates) for _ in range(T)], 5)),
                    ("  its 3.67 M normals alone (28 draws of 256 x 512)",
                     per_call(lambda: [torch.ops.noisynn.noise_(z, None, 0, 0.0, 1.0, seed) for _ in range(T)], 5)),
                    ("  fused layer, no noise (mode 0)",
                     per_call(lambda: torch.ops.noisynn.lstm_infer(x, h0, c0, w, bias, 0, 0.0, seed,
                                                                   _fast.LSTM_BLOCK, False), 5)),
                    ("  fused layer, additive sigma 0.5",
                     per_call(lambda: torch.ops.noisynn.lstm_infer(x, h0, c0, w, bias, 1, SIGMA, seed,
                                                                   _fast.LSTM_BLOCK, False), 5)),
                ]
                lref = per_call(lambda: lin(xl), 200)
                linear_parts = [
                    ("Linear 128 x 128, batch 512: nn.Linear (the reference)", lref),
                    ("  GEMM alone (addmm into a buffer)",
                     per_call(lambda: torch.addmm(lin.bias, xl, lin.weight.t(), out=yl), 200)),
                    ("  noise alone (in place on the 512 x 128 output)",
                     per_call(lambda: torch.ops.noisynn.noise_(yl, yl, 1, 0.0, SIGMA, seed), 200)),
                    ("  NoisyLinear, additive sigma 0.5", per_call(lambda: noisy_lin(xl), 200)),
                ]
            for parts, base in ((lstm_parts, ref), (linear_parts, lref)):
                for name, t in parts:
                    print(f"{k:>7}  {name:<58} {t * 1e3:>8.3f}ms  {t / base:>6.2f}")
    finally:
        torch.set_num_threads(threads)


def rss_child(device: str, test_size: int, runs: int) -> None:
    """Subprocess body: one lstm-rows evaluation point; prints peak RSS and seconds as JSON."""
    dev = torch.device(device)
    torch.manual_seed(0)
    model = noisynn.build_model("lstm-rows").to(dev).eval()
    test_x = torch.rand(test_size, 28, 28, device=dev)  # random data of the right shape
    test_y = torch.randint(0, 10, (test_size,), device=dev)
    group, batch, max_batch = 10, 1000, 20_000  # as noisynn.engine.evaluation runs a point
    start = time.perf_counter()
    correct = 0
    with torch.inference_mode():
        for g in range(0, runs, group):
            r = min(group, runs - g)
            gen = torch.Generator(device=dev).manual_seed(g)
            with noisynn.noise_model("additive", SIGMA, generator=gen):
                for xb, yb in zip(test_x.split(batch), test_y.split(batch), strict=True):
                    logits = noisynn.repeat_forward(model, xb, r, max_batch=max_batch)
                    correct += int((logits.argmax(-1) == yb).sum())
    _sync(dev)
    seconds = time.perf_counter() - start
    print(json.dumps({"maxrss_kib": _peak_rss_kib(), "seconds": seconds, "sequences": runs * test_size,
                      "cuda_bytes": torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else 0,
                      "accuracy": correct / (runs * test_size)}))


def _peak_rss_kib() -> int:
    """This process's peak resident memory. On Linux from VmHWM: ``ru_maxrss`` carries the
    parent's high-water mark across fork + exec, so a child of a big parent would read big."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak // 1024 if sys.platform == "darwin" else peak


def bench_memory(device: torch.device, test_size: int, runs: int) -> list[Row]:
    cmd = [sys.executable, os.path.abspath(__file__), "--rss-child", "--device", device.type,
           "--rss-test-size", str(test_size), "--rss-runs", str(runs)]
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    gib = result["maxrss_kib"] / 2**20
    rows = [dict(name=f"6 peak RSS, point {runs} x {test_size}", unit="GiB", noisy=gib, ref=None,
                 status=f"<=2 {'MET' if gib <= 2.0 else 'not met'}",
                 extra=f"cuda {result['cuda_bytes'] / 2**30:.2f} GiB" if result["cuda_bytes"] else "")]
    per_seq = result["seconds"] / result["sequences"]
    grid = per_seq * GRID_SEQUENCES / 60
    rows.append(dict(name="6 that point's time", unit="s", noisy=result["seconds"], ref=None,
                     status=f"grid {grid:.0f} min", extra=f"{result['sequences'] / result['seconds']:.0f} seq/s; "
                     f"{GRID_POINTS} points: {grid:.1f} min ({'MET' if grid <= 30 else 'not met'}: target <= 30)"))
    return rows


# -- main ---------------------------------------------------------------------------------
def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its children)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / tick  # all but idle and iowait
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy, me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _foreign_load(start: tuple[float, float] | None, seconds: float) -> str:
    """How busy other processes kept the CPUs while the benchmark ran (contaminates the table)."""
    end = _cpu_seconds()
    if start is None or end is None or seconds <= 0:
        return "unknown"
    other = max(0.0, (end[0] - start[0]) - (end[1] - start[1]))
    return f"{other / seconds:.2f} cores"


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def print_table(rows: list[Row]) -> None:
    head = f"{'benchmark':<42} {'unit':<8} {'noisynn':>10} {'reference':>10} {'ratio':>7}  {'target':<14} notes"
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = r["noisy"] / r["ref"] if r.get("ref") else None
        target = r.get("status", "")
        if r.get("target") is not None and ratio is not None:
            status = "MET" if ratio >= r["target"] else "not met"
            if r.get("stretch") and ratio >= r["stretch"]:
                status = "MET+stretch"
            target = f">={r['target']} {status}"
        print(f"{r['name']:<42} {r['unit']:<8} {_fmt(r['noisy']):>10} {_fmt(r.get('ref')):>10} "
              f"{(f'{ratio:.2f}' if ratio is not None else '-'):>7}  {target:<14} {r.get('extra', '')}")


def machine() -> str:
    """The CPU (model, vector ISA levels) that every ratio below belongs to: ratios differ between kinds."""
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    torch_isa = torch.backends.cpu.get_cpu_capability()
    onednn = "oneDNN " + (torch.backends.mkldnn.is_available() and "on" or "off")
    if _fast is None:
        kernels = "no noisynn kernels"
    elif hasattr(_fast, "fast_path"):
        isa_used = torch.ops.noisynn.isa() if _fast.available() else "not built"
        kernels = f"noisynn kernels: portable build, runtime dispatch: {isa_used}"
    else:
        kernels = "noisynn kernels: -march=native (all of the CPU's flags)"
    return (f"machine: {model} | {os.cpu_count()} logical CPUs | CPU flags {' '.join(isa) or 'none of avx2/avx512'} | "
            f"torch CPU capability {torch_isa} ({onednn}) | {kernels}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per side (median), >= 5")
    parser.add_argument("--only", default="train,eval,batches,linear,sampler,cnn6,memory",
                        help="comma-separated subset of: train, eval, batches (one lstm-rows pass at batch 256, "
                             "1024, 4096), linear (NoisyLinear 128, 512, 2048 at batch 512), sampler, cnn6, memory, "
                             "and the extra rows rnn (the vanilla RNN), limits (issue 20: where the time of a "
                             "noisy LSTM pass and a small NoisyLinear goes, part by part) and compiled (the "
                             "torch.compile'd LSTM step: against the fused CPU operator, or on --device cuda "
                             "against cuDNN's nn.LSTM)")
    parser.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run; noisier numbers)")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rss-test-size", type=int, default=10_000, help=argparse.SUPPRESS)
    parser.add_argument("--rss-runs", type=int, default=REPEATS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    if args.rss_child:
        rss_child(device.type, args.rss_test_size, args.rss_runs)
        return
    only = set(args.only.split(","))
    if device.type == "cuda" and args.only == parser.get_default("only"):
        only.add("compiled")  # on a GPU the fused path is the compiled step: measure it against cuDNN
    quick = args.quick
    reference = os.environ.get("NOISYNN_REFERENCE", "") not in ("", "0")
    fast = _fast is not None and device.type == "cpu" and not reference and _fast.available()
    print(f"noisynn {noisynn.__version__} | torch {torch.__version__} | device {device} | "
          f"threads {torch.get_num_threads()} | fast paths {'on' if fast else 'off'} | "
          f"repeats {args.repeats} | load average {os.getloadavg()[0]:.2f}")
    print(machine())
    rows: list[Row] = []
    throughput = None
    cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
    if "train" in only:
        rows += bench_train(device, args.repeats, 256)
    if "eval" in only:
        eval_rows, throughput = bench_eval(device, args.repeats, 64 if quick else 256)
        rows += eval_rows
    if "batches" in only:
        rows += bench_lstm_batches(device, args.repeats, (64, 256) if quick else (256, 1024, 4096))
    if "linear" in only:
        rows += bench_linear(device, args.repeats, 512, (128, 512) if quick else (128, 512, 2048))
    if "rnn" in only:
        rows += bench_rnn(device, args.repeats, 64 if quick else 256)
    if "compiled" in only:
        rows += bench_compiled(device, args.repeats, 64 if quick else 256)
    if "sampler" in only:
        rows += bench_sampler(device, args.repeats, 2**20 if quick else 2**22)
    if "cnn6" in only:
        rows += bench_cnn6(device, args.repeats, 16 if quick else 64)
    if "memory" in only:
        rows += bench_memory(device, 1_000 if quick else 10_000, REPEATS)
    print_table(rows)
    if "limits" in only and device.type == "cpu":
        bench_limits(args.repeats)
    if throughput is not None:
        noisy, plain = throughput
        print(f"projected paper grid (lstm-rows, {GRID_POINTS} points, {REPEATS} runs x 10,000 sequences at each noisy "
              f"sigma_val, one exact run at 0) from row 2: {GRID_SEQUENCES / noisy / 60:.1f} min (target <= 30 min); "
              f"noise-free torch.nn.LSTM at its row-2 rate: {GRID_SEQUENCES / plain / 60:.1f} min")
    print(f"load average after: {os.getloadavg()[0]:.2f}; other processes used "
          f"{_foreign_load(cpu_start, time.perf_counter() - wall_start)} on average during the run "
          f"(anything but ~0 distorts the table)")


if __name__ == "__main__":
    main()
