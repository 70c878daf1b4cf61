"""What torch needs besides the C++ of ``torch.ops.noisynn`` (private): fake kernels and autograd.

The fake (meta) kernels give every operator's output shapes without running it, so that
``torch.compile`` (and ``torch.export``) can trace a model through the noisy layers. The
autograd formula of ``lstm_train`` is the fused backward, itself an operator
(``lstm_backward``); the other operators are used only where autograd needs nothing from
them (the caller checks), or, for the sampler, on tensors that are constants of the graph.

:func:`register` runs once, right after the library is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

_NS = "noisynn::"
MULTIPLICATIVE = 2


def _fake_noise_(out, input, mode, mean, sigma, seed):
    return None


def _fake_gaussian(input, mode, sigma, seed):
    return torch.empty_like(input, memory_format=torch.contiguous_format)


def _fake_normal(size, mean, std, seed):
    return torch.empty(size, dtype=torch.float32, device=seed.device)


def _fake_words(seed, stream, n):
    return seed.new_empty(n)


def _fake_lstm_infer(x, h0, c0, w, bias, mode, sigma, seed, block, keep_noise):
    T, B, _ = x.shape
    H = w.shape[0] // 4
    noise = x.new_empty(T, B, 4 * H) if keep_noise else x.new_empty(0)
    return x.new_empty(T, B, H), x.new_empty(B, H), x.new_empty(B, H), noise


def _fake_lstm_train(x, h0, c0, w, bias, mode, sigma, seed, keep_noise):
    T, B, F = x.shape
    H = w.shape[0] // 4
    noise = x.new_empty(T, B, 4 * H) if keep_noise or mode == MULTIPLICATIVE else x.new_empty(0)
    return (x.new_empty(T, B, H), x.new_empty(B, H), x.new_empty(B, H), x.new_empty(T, B, F + H),
            x.new_empty(T + 1, B, H), x.new_empty(T, B, 4 * H), noise)


def _fake_lstm_backward(d_out, d_hn, d_cn, w, xh, cs, act, factor, need_dx):
    T, B, G = act.shape
    F = xh.shape[2] - G // 4
    dx = act.new_empty(T, B, F) if need_dx else act.new_empty(0)
    return dx, act.new_empty(B, G // 4), act.new_empty(B, G // 4), w.new_empty(w.shape), w.new_empty(G)


def _fake_rnn_infer(x, h0, w, bias, relu, mode, sigma, seed, block, keep_noise):
    T, B, _ = x.shape
    H = w.shape[0]
    noise = x.new_empty(T, B, H) if keep_noise else x.new_empty(0)
    return x.new_empty(T, B, H), x.new_empty(B, H), noise


def _fake_cell_(*args):
    return None


def _lstm_setup_context(ctx, inputs, output):
    x, h0, c0, w, bias, mode, sigma, seed, keep_noise = inputs
    _, _, _, xh, cs, act, noise = output
    ctx.mark_non_differentiable(xh, cs, act, noise)
    ctx.save_for_backward(w, xh, cs, act, noise if mode == MULTIPLICATIVE else None)
    ctx.has_bias = bias is not None
    # Gradients of outputs that reach no loss stay None (the backward treats them as zero):
    # materialising them would fill (T, B, 4H) zeros for act and noise at every step.
    ctx.set_materialize_grads(False)


def _lstm_backward(ctx, d_out, d_hn, d_cn, *unused):
    """The fused backward of ``lstm_train``: gradients of x, h0, c0, the stacked weight and the bias."""
    w, xh, cs, act, factor = ctx.saved_tensors
    need_dx = ctx.needs_input_grad[0]
    dx, dh0, dc0, dw, db = torch.ops.noisynn.lstm_backward(d_out, d_hn, d_cn, w, xh, cs, act, factor, need_dx)
    return dx if need_dx else None, dh0, dc0, dw, db if ctx.has_bias else None, None, None, None, None


def register() -> None:
    """Register the fake kernels and the autograd formula (once per process)."""
    fakes: dict[str, Callable[..., Any]] = {
        "noise_": _fake_noise_, "gaussian": _fake_gaussian, "normal": _fake_normal, "words": _fake_words,
        "lstm_infer": _fake_lstm_infer, "lstm_train": _fake_lstm_train, "lstm_backward": _fake_lstm_backward,
        "rnn_infer": _fake_rnn_infer, "lstm_cell_": _fake_cell_, "rnn_cell_": _fake_cell_,
    }
    for name, fn in fakes.items():
        torch.library.register_fake(_NS + name, fn)
    torch.library.register_autograd(_NS + "lstm_train", _lstm_backward, setup_context=_lstm_setup_context)
