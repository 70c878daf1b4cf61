"""Fast paths for the two Gaussian noise models: torch operators in C++, and one place that picks them.

The plain code of :mod:`noisynn.noise` and :mod:`noisynn.recurrent` is the reference (the
specification): every noise site hands its pre-activation to ``NoiseModel.apply``, which
draws the noise with ``Tensor.normal_``. On the CPU that sampler costs as much as the
network itself (torch's CPU generator is one Mersenne Twister stream, one thread). For
float32 CPU tensors and the Gaussian kinds only, this package replaces:

* the sampler, by a counter-based, parallel one. Every call draws 96 fresh bits from the
  noise model's ``torch.Generator`` (so ``torch.manual_seed`` and ``generator=`` keep
  making runs reproducible); sub-stream ``k`` of the call (a chunk of 2048 elements of a
  flat tensor, or one row of a recurrent step) runs 8 xoshiro128++ lanes (Blackman &
  Vigna 2018) seeded by Philox4x32-10 (Salmon et al. 2011) of ``(k, lane, nonce)`` under
  the call's key, and Box-Muller turns pairs of 32-bit words into pairs of independent
  normals (radius from 31 bits, so tails out to 6.6 sigma). Every element of every call
  has its own words; the values depend only on the seed and the element's position, not
  on the number of threads;
* the noisy LSTM (and, for inference, vanilla RNN) layer: one fused pass per step and row
  draws the noise, adds or multiplies it into the pre-activation (with the bias), applies
  the gate non-linearities and updates ``c`` and ``h``; the matrix products stay with
  ATen (one GEMM per step on ``[x_t, h_{t-1}]``), the batch runs in cache-sized blocks of
  rows shared among torch's threads, and training has a matching fused backward.

Same distribution, different draws: with sigma > 0 a fast path and the reference give
different (equally distributed) samples. ``NOISYNN_REFERENCE=1`` or ``with reference():``
runs the reference everywhere.

The operators (``torch.ops.noisynn.*``) live in ``csrc/``: ``ops.cpp`` registers them
with ``TORCH_LIBRARY`` (tensors in, tensors out; threads by ``at::parallel_for``);
``kernels_impl.h`` holds the arithmetic, compiled three times (``kernels_base.cpp``: the
compiler's baseline; ``kernels_avx2.cpp``: AVX2 + FMA; ``kernels_avx512.cpp``: AVX-512 +
FMA, float arithmetic on 16 lanes), and the CPU's features pick one at load time
(``torch.ops.noisynn.isa()`` says which; ``NOISYNN_ISA=baseline`` or ``avx2`` caps the
choice). Every copy draws the same random numbers for the same seed: the sampler's
definition (8 xoshiro lanes per sub-stream) does not depend on the vector width.
:mod:`noisynn.kernels._ops` registers their fake kernels and the LSTM's
autograd formula, so ``torch.compile`` traces through a noisy model.

Why a JIT build at first use, not an extension compiled by ``pip install``: the wheel
stays pure Python (one wheel for every platform and every torch build: the CPU and CUDA
wheels of torch have different ABIs, and a binary extension would have to be built per
torch version); a user who never runs on the CPU, or has no compiler, installs nothing
more and loses nothing but speed. The cost is one build of about a minute on first use
(``torch.utils.cpp_extension.load``: it needs a C++ compiler and ``ninja``), cached per
machine under ``$NOISYNN_CACHE_DIR/kernels`` (else the user cache directory) and loaded
from there only after its hash, versions and sources check out (:mod:`._build`). Where
the build fails (no compiler, no ninja, Windows' MSVC, which lacks the vector
extensions), noisynn warns once, saying how to get the fast path, and runs the
reference.

On CUDA the fused kernels do not apply; :mod:`noisynn.kernels.compiled` offers the
reference LSTM step compiled by ``torch.compile`` (opt-in: :func:`set_gpu_lstm`).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = [
    "MIN_ELEMENTS", "LSTM_BLOCK", "MODES", "reference", "reference_active", "available", "fast_path",
    "lstm_path", "set_gpu_lstm", "merged_bias", "seed_words", "normal_", "add_noise_", "gaussian_noise",
    "gaussian_noise_", "lstm_layer", "rnn_layer", "lstm_cell_", "rnn_cell_",
]

#: Tensors with fewer elements keep torch's sampler: below this a call's fixed cost
#: (drawing the seed, calling the operator) outweighs the faster generation.
MIN_ELEMENTS = 4096
#: Rows of the batch an LSTM / RNN evaluation runs through all its steps at a time: the
#: block's gates, states and GEMM operands stay in the caches.
LSTM_BLOCK = 512

MODES = {"additive": 1, "multiplicative": 2}


# -- the reference switch ------------------------------------------------------------------
_REFERENCE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "noisynn_reference", default=os.environ.get("NOISYNN_REFERENCE", "") not in ("", "0")
)


@contextlib.contextmanager
def reference(enabled: bool = True) -> Iterator[None]:
    """Run the plain reference code while the block is active (``enabled=False``: the fast paths).

    Reference: every noise site calls :meth:`~noisynn.noise.NoiseModel.apply` at every
    step, and the Gaussian models draw with ``Tensor.normal_``. The default is the fast
    paths, unless the environment variable ``NOISYNN_REFERENCE=1`` is set.

    Example::

        from noisynn import reference

        with reference():
            logits = model(x)   # slow, plain: the definition of what the fast paths compute
    """
    token = _REFERENCE.set(enabled)
    try:
        yield
    finally:
        _REFERENCE.reset(token)


def reference_active() -> bool:
    """True inside :func:`reference` (or with ``NOISYNN_REFERENCE=1``)."""
    return _REFERENCE.get()


# -- loading the operators -------------------------------------------------------------------
_STATE: dict[str, object] = {}  # "path" once loaded, "error" once failed
_LOCK = threading.Lock()

_HOW = ("to get it, install a C++ compiler and ninja (`pip install ninja`), then check with "
        "`python -c \"import noisynn.kernels as k; print(k.available())\"`; set NOISYNN_REFERENCE=1 to choose "
        "the reference path and silence this warning")


def _load() -> bool:
    if "path" in _STATE or "error" in _STATE:
        return "path" in _STATE
    with _LOCK:
        if "path" not in _STATE and "error" not in _STATE:
            from noisynn.kernels import _build, _ops

            reason = _build.compiler_missing()
            try:
                if reason is not None and not _build.verified(_build.target(_build.kernel_spec(), _build.cache_dir()),
                                                              _build.kernel_spec()):
                    raise RuntimeError(reason)
                _STATE["path"] = _build.build(_build.kernel_spec())
                _ops.register()
            except Exception as exc:  # any failure: the reference path still works
                last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
                _STATE["error"] = f"{type(exc).__name__}: {last}"
                warnings.warn(f"noisynn: the fast CPU kernels are unavailable ({_STATE['error']}); noisynn runs its "
                              f"reference path instead (same distribution, 2-7x slower); {_HOW}",
                              RuntimeWarning, stacklevel=4)
            if "path" in _STATE:
                _check_isa_cap()
    return "path" in _STATE


#: The values of ``NOISYNN_ISA`` (a cap on the kernels' instruction set; unset: the best the CPU has).
ISA_CAPS = ("baseline", "avx2", "avx512")


def _check_isa_cap() -> None:
    """Say so when ``NOISYNN_ISA`` holds a value the kernels do not know (they then take the best copy)."""
    cap = os.environ.get("NOISYNN_ISA", "")
    if cap and cap not in ISA_CAPS:
        warnings.warn(f"noisynn: NOISYNN_ISA={cap!r} is not one of {', '.join(ISA_CAPS)}: it is ignored and the "
                      f"kernels use {torch.ops.noisynn.isa()}, the best copy for this CPU", RuntimeWarning,
                      stacklevel=5)


def available() -> bool:
    """True when the fast operators are built and loaded (builds them on the first call)."""
    return _load()


# -- the one decision: fast path or reference ---------------------------------------------------
def fast_path(*tensors: Tensor | None, generator: torch.Generator | None = None, min_elements: int = 0,
              differentiable: bool = True) -> bool:
    """Whether the fused CPU operators may compute on ``tensors`` (and draw from ``generator``) now.

    Args:
        tensors: the inputs (``None`` entries are ignored); the first one's size is checked
            against ``min_elements``.
        generator: the noise model's generator (must be a CPU one, or ``None``).
        min_elements: below this many elements the reference sampler is faster.
        differentiable: ``False`` for an operator without a backward: it is taken only
            when autograd needs nothing from ``tensors``.
    """
    given = [t for t in tensors if t is not None]
    if not given or reference_active():
        return False
    if given[0].numel() < min_elements:
        return False
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 for t in given):
        return False
    if generator is not None and generator.device.type != "cpu":
        return False
    if not differentiable and torch.is_grad_enabled() and any(t.requires_grad for t in given):
        return False
    return available()


_GPU_LSTM = {"mode": os.environ.get("NOISYNN_GPU_LSTM", "reference")}


def set_gpu_lstm(mode: str) -> None:
    """Choose the noisy LSTM's path on devices the fused CPU kernels do not serve (CUDA).

    ``"compiled"``: :func:`noisynn.kernels.compiled.lstm_layer`, the reference step
    compiled by ``torch.compile`` (gate noise, non-linearities and the state update fused
    into one kernel per step); ``"reference"`` (the default, also ``NOISYNN_GPU_LSTM``):
    the plain per-step code. The compiled step needs ``generator=None``.
    """
    if mode not in ("compiled", "reference"):
        raise ValueError(f"gpu LSTM mode must be 'compiled' or 'reference', got {mode!r}")
    _GPU_LSTM["mode"] = mode


def lstm_path(seq: Tensor, generator: torch.Generator | None) -> str:
    """``"fused"`` (the CPU operator), ``"compiled"`` (see :func:`set_gpu_lstm`) or ``"reference"``."""
    if fast_path(seq, generator=generator):
        return "fused"
    if (seq.device.type != "cpu" and generator is None and not reference_active()
            and _GPU_LSTM["mode"] == "compiled"):
        return "compiled"
    return "reference"


def merged_bias(b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor | None:
    """The one bias of a gate product ``W_ih x + W_hh h + b``: ``b_ih + b_hh`` (either may be absent)."""
    if b_ih is None:
        return b_hh
    return b_ih if b_hh is None else b_ih + b_hh


# -- the sampler -------------------------------------------------------------------------------
def seed_words(generator: torch.Generator | None) -> Tensor:
    """96 fresh random bits for one call (Philox key and nonce), drawn from ``generator``: 3 int64."""
    return torch.randint(0, 2**32, (3,), dtype=torch.int64, generator=generator)


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None, *,
            seed: Tensor | None = None) -> Tensor:
    """Fill the contiguous float32 CPU tensor ``t`` with N(mean, std^2) samples, in place.

    ``seed``: words drawn beforehand (:func:`seed_words`) instead of from ``generator``.
    """
    _check_contiguous(t)
    torch.ops.noisynn.noise_(t, None, 0, mean, std, seed_words(generator) if seed is None else seed)
    return t


def add_noise_(t: Tensor, std: float, generator: torch.Generator | None = None, *,
               seed: Tensor | None = None) -> Tensor:
    """``t += std z`` in place, ``z ~ N(0, 1)``, one fused pass (``t`` contiguous float32 CPU)."""
    _check_contiguous(t)
    torch.ops.noisynn.noise_(t, t, MODES["additive"], 0.0, std, seed_words(generator) if seed is None else seed)
    return t


def _check_contiguous(t: Tensor) -> None:
    if not (t.is_contiguous() and fast_path(t)):
        raise ValueError("the fast sampler needs a contiguous float32 CPU tensor, its kernels built, "
                         "and no reference mode")


def gaussian_noise_(y: Tensor, kind: str, sigma: float, generator: torch.Generator | None) -> Tensor:
    """:func:`gaussian_noise` into ``y`` itself (contiguous, no autograd): the same values from
    the same generator state, without a second tensor."""
    torch.ops.noisynn.noise_(y, y, MODES[kind], 0.0, sigma, seed_words(generator))
    return y


def gaussian_noise(y: Tensor, kind: str, sigma: float, generator: torch.Generator | None) -> Tensor:
    """``y + sigma z`` (additive) or ``y * (1 + sigma z)`` (multiplicative), ``z ~ N(0, 1)``.

    A fresh tensor; ``y`` is not modified. When ``y`` needs a gradient the noise is
    drawn into its own tensor and combined with torch ops, so autograd treats it as a
    constant (exactly like the reference ``apply``).
    """
    seed = seed_words(generator)
    if y.requires_grad and torch.is_grad_enabled():
        additive = kind == "additive"
        z = torch.ops.noisynn.normal(list(y.shape), 0.0 if additive else 1.0, sigma, seed)
        return z.add_(y) if additive else y * z
    return torch.ops.noisynn.gaussian(y, MODES[kind], sigma, seed)


# -- the noisy recurrent layers ----------------------------------------------------------------
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
        ``(output (T, B, H), h_T, c_T)``; differentiable when autograd needs it (the
        fused backward). Row ``b`` of step ``t`` draws sub-stream ``t B + b``, so the
        values do not depend on the blocks or the thread count.
    """
    seed = seed_words(generator)
    w = torch.cat([w_ih, w_hh], 1)  # (4H, F + H): one GEMM on [x_t, h_{t-1}]
    bias = merged_bias(b_ih, b_hh)
    keep = record is not None
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (seq, h0, c0, w, bias)):
        out, h, c, _, _, _, noise = torch.ops.noisynn.lstm_train(seq, h0, c0, w, bias, MODES[kind], sigma, seed, keep)
    else:
        out, h, c, noise = torch.ops.noisynn.lstm_infer(seq, h0, c0, w, bias, MODES[kind], sigma, seed, LSTM_BLOCK,
                                                        keep)
    if record is not None:
        record.copy_(noise.detach())
    return out, h, c


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
        ``(output (T, B, H), h_T)``; rows in blocks of :data:`LSTM_BLOCK`, as :func:`lstm_layer`.
    """
    with torch.no_grad():
        w = torch.cat([w_ih, w_hh], 1)
        out, h, noise = torch.ops.noisynn.rnn_infer(seq, h0, w, merged_bias(b_ih, b_hh), nonlinearity == "relu",
                                                    MODES[kind], sigma, seed_words(generator), LSTM_BLOCK,
                                                    record is not None)
    if record is not None:
        record.copy_(noise)
    return out, h


def lstm_cell_(g: Tensor, bias: Tensor | None, c: Tensor, h_out: Tensor, xh: Tensor | None = None,
               x_next: Tensor | None = None) -> None:
    """A noise-free LSTM cell on gate products ``g`` (n, 4H) computed elsewhere (a crossbar), in place.

    ``c`` (n, H) is updated; ``h`` goes to ``h_out`` and, if given, to ``xh[:, F:]``, and
    ``x_next`` (n, F) to ``xh[:, :F]`` (the next step's product input).
    """
    torch.ops.noisynn.lstm_cell_(g, bias, c, h_out, xh, x_next)


def rnn_cell_(g: Tensor, bias: Tensor | None, relu: bool, h_out: Tensor, xh: Tensor | None = None,
              x_next: Tensor | None = None) -> None:
    """A noise-free vanilla-RNN cell on products ``g`` (n, H), as :func:`lstm_cell_`."""
    torch.ops.noisynn.rnn_cell_(g, bias, relu, h_out, xh, x_next)
