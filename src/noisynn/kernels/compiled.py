"""The noisy LSTM step of the reference, compiled by ``torch.compile``: the fused path for GPUs.

:func:`step` is the reference step written once (gate product, Gaussian noise, gate
non-linearities, state update); :func:`lstm_layer` runs it through time after one
batched input projection, as ``NoisyLSTM._unroll_reference`` does. Compiled by
Inductor, everything after the ``addmm`` of a step becomes one kernel (on CUDA a Triton
kernel that draws the noise with Philox in registers), instead of about ten kernels and
a ``normal_`` per step.

It is opt-in (``noisynn.kernels.set_gpu_lstm("compiled")`` or ``NOISYNN_GPU_LSTM=compiled``)
until it has been measured on a GPU: ``python benchmarks/bench_speed.py --device cuda``
times it beside cuDNN's ``nn.LSTM`` and the plain per-step path. The noise comes from
torch's default generator as Inductor draws it (a compiled function takes no
``torch.Generator``), so a noise model with its own generator keeps the reference path.
On the CPU the hand-written operators of this package are faster (measured in
``benchmarks/bench_speed.py``'s ``compiled`` row), so the CPU never takes this path by
default.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["step", "lstm_layer"]


def step(gx: Tensor, h: Tensor, c: Tensor, w_hh_t: Tensor, multiplicative: bool, sigma: float
         ) -> tuple[Tensor, Tensor]:
    """One noisy LSTM step: gates ``gx + h W_hh^T`` made noisy (``+ sigma z`` or ``* (1 + sigma z)``)."""
    gates = torch.addmm(gx, h, w_hh_t)
    z = torch.randn_like(gates)
    gates = gates * (1.0 + sigma * z) if multiplicative else gates + sigma * z
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


@functools.cache
def compiled_step():
    """:func:`step` compiled (once per process; Inductor recompiles per shape and device)."""
    return torch.compile(step, dynamic=False)


def lstm_layer(seq: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor, bias: Tensor | None,
               kind: str, sigma: float) -> tuple[Tensor, Tensor, Tensor]:
    """One direction of one noisy LSTM layer through the compiled step; ``NoisyLSTM._unroll``'s contract."""
    run = compiled_step()
    multiplicative = kind == "multiplicative"
    xproj = F.linear(seq, w_ih, bias)  # all time steps in one GEMM
    h, c = h0, c0
    w_hh_t = w_hh.t()
    outs = []
    for gx in xproj.unbind(0):
        h, c = run(gx, h, c, w_hh_t, multiplicative, sigma)
        outs.append(h)
    return torch.stack(outs), h, c
