"""Products in a model's own code: noise on ``F.linear``, ``torch.matmul``, ``F.conv*``, attention.

Not every matrix product of a model lives in a ``torch.nn`` layer. HF GPT-2's
``Conv1D`` calls ``torch.addmm`` on its own weight; attention code calls
``torch.matmul`` or ``F.scaled_dot_product_attention`` directly; a research model
multiplies by a raw ``nn.Parameter``. :func:`noisynn.convert` makes every module whose
class is not ``torch.nn``'s (nor noisynn's) a **host**: while a host's ``forward`` runs
with noise, a ``torch.overrides.TorchFunctionMode`` intercepts the product functions
below that the host's own code calls and puts its noise model on their output.

Caught (as functions or ``Tensor`` methods): ``F.linear``, ``F.bilinear``,
``torch.matmul`` / ``@``, ``mm``, ``bmm``, ``mv``, ``addmm``, ``addmv``, ``baddbmm``,
``addbmm``, ``einsum``, ``tensordot``, ``F.conv1d/2d/3d``,
``F.conv_transpose1d/2d/3d`` and ``F.scaled_dot_product_attention``, which is split
into its two products: the scores ``Q K^T * scale`` (noise before the mask and the
softmax) and the weighted sum ``A V``.

Site names are ``HOST:op`` (``h.0.attn.c_attn:addmm``), with ``.1``, ``.2``, ... for
the second, third call of the same op in one forward pass, and ``HOST:scores`` /
``HOST:weighted_sum`` for attention, as for :class:`~noisynn.attention.NoisyMultiheadAttention`.
For ``addmm``/``baddbmm``/``addmv`` the added term is part of the product (a bias).

Not caught: products computed outside torch's Python-visible functions (a custom
C++/CUDA extension, a Triton kernel, ``torch.jit`` scripted code), element-wise
products (``*``, not matrix products), and code run outside a host's ``forward``
(e.g. a ``torch.autograd.Function`` calling ops in its own ``forward``: those run
while the mode is active, so they *are* caught if called from a host). Gradients: the
noise is a constant of the backward pass, as at every noisynn site (``y + z`` or
``y * z`` differentiated by autograd).

Cost: none when the model is clean (no mode is entered: torch's own paths, bit-identical
results). When noisy, every torch call inside a host pays a Python dispatch (about a
microsecond), negligible beside the products of a real batch.
"""

from __future__ import annotations

import math
import sys
import zlib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from noisynn.layers import EXACT, INTERCEPT, NoiseSite
from noisynn.noise import NoiseModel, Product

__all__ = ["PRODUCTS", "Host", "host_class", "is_host"]


def _products() -> dict[Any, str]:
    table: dict[Any, str] = {}
    for name in ("matmul", "mm", "bmm", "mv", "addmm", "addmv", "baddbmm", "addbmm"):
        table[getattr(torch, name)] = name
        table[getattr(Tensor, name)] = name
    table[Tensor.__matmul__] = "matmul"
    table[Tensor.__rmatmul__] = "matmul"
    table[torch.einsum] = "einsum"
    table[torch.tensordot] = "tensordot"
    table[F.linear] = "linear"
    table[F.bilinear] = "bilinear"
    for name in ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
        table[getattr(F, name)] = name
    return table


#: Functions whose output gets noise inside a host, with the op name used in site names.
PRODUCTS: dict[Any, str] = _products()
_SDPA = F.scaled_dot_product_attention


@dataclass
class _Frame:
    """The innermost host's scope: its name, its noise model, calls counted per op."""

    host: nn.Module
    name: str
    model: NoiseModel | None
    calls: dict[str, int] = field(default_factory=dict)

    def site(self, op: str) -> str:
        n = self.calls.get(op, 0)
        self.calls[op] = n + 1
        return f"{self.name}:{op}" if n == 0 else f"{self.name}:{op}.{n}"


#: Set by noisynn.convert.inspect while tracing: called with (frame, site, op, output, args).
RECORDER: list = []


class _Interceptor(TorchFunctionMode):
    """Noise on the output of every product called by a host's own code."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        frame = INTERCEPT.get()
        if frame is None or frame is EXACT:
            return func(*args, **kwargs)
        if func is _SDPA:
            return _attention(frame, *args, **kwargs)
        op = PRODUCTS.get(func)
        if op is None:
            return func(*args, **kwargs)
        if frame.model is not None and op in ("linear", "addmm") and not RECORDER:
            site = frame.site(op)
            if frame.model.computes_products(site):  # weights on a crossbar: the model computes it
                return frame.model.product(_as_product(frame, op, args, kwargs), site)
            return _noisy(frame, site, op, func(*args, **kwargs), args)
        out = func(*args, **kwargs)
        if not isinstance(out, Tensor):
            return out
        return _noisy(frame, frame.site(op), op, out, args)


def _as_product(frame: _Frame, op: str, args: tuple, kwargs: dict) -> Product:
    """``F.linear(x, w, b)`` or ``torch.addmm(b, x, w)`` (HF's Conv1D: ``w`` is (in, out)) as a Product."""
    training = bool(getattr(frame.host, "training", False))
    if op == "linear":
        x, w = args[0], args[1]
        b = args[2] if len(args) > 2 else kwargs.get("bias")
        return Product(x, w, b, F.linear, -1, True, training, w)
    bias, x, w = (list(args) + [kwargs.get("input"), kwargs.get("mat1"), kwargs.get("mat2")])[:3]
    if kwargs.get("beta", 1) != 1 or kwargs.get("alpha", 1) != 1:
        raise ValueError(f"{frame.name}: addmm with beta/alpha other than 1 cannot be handed to a model that "
                         "computes products")
    return Product(x, w.t(), bias, F.linear, -1, True, training, w)


def _noisy(frame: _Frame, site: str, op: str, y: Tensor, args: tuple) -> Tensor:
    for record in RECORDER:
        record(frame, site, op, y, args)
    model = frame.model
    if model is None or model.is_identity(site):
        return y
    return model.apply(y, site)


def _attention(frame: _Frame, query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
               dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
               enable_gqa: bool = False) -> Tensor:
    """``F.scaled_dot_product_attention`` as its two products, each a noise site."""
    L, S = query.size(-2), key.size(-2)
    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    if enable_gqa and key.size(-3) != query.size(-3):
        group = query.size(-3) // key.size(-3)
        key, value = key.repeat_interleave(group, -3), value.repeat_interleave(group, -3)
    scores = _noisy(frame, frame.site("scores"), "scores", torch.matmul(query, key.transpose(-2, -1)) * scale,
                    (query, key))
    if is_causal:
        causal = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    weights = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return _noisy(frame, frame.site("weighted_sum"), "weighted_sum", torch.matmul(weights, value), (weights, value))


_MODE = _Interceptor()


class Host(NoiseSite):
    """Mixin that :func:`noisynn.convert` puts on a module whose own code may compute products.

    Its noise model (``noise``, set like any site's) applies to the products its own
    ``forward`` calls (see the module docstring); its sub-modules keep their own.
    """

    is_host = True

    def site_names(self) -> list[str]:
        return [f"{self.site_name}:*"]

    def _host_model(self) -> NoiseModel | None:
        model = self.active_model()
        return None if model is None or model.is_clean() else model

    def active_noise(self) -> NoiseModel | None:
        return self._host_model()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        model = self._host_model()
        outer = INTERCEPT.get()
        if model is None and outer is None and not RECORDER:
            return super().forward(*args, **kwargs)  # type: ignore[misc]
        token = INTERCEPT.set(_Frame(self, self.site_name, model))  # type: ignore[arg-type]
        try:
            if outer is None:  # the outermost noisy host enters the mode, once
                with _MODE:
                    return super().forward(*args, **kwargs)  # type: ignore[misc]
            return super().forward(*args, **kwargs)  # type: ignore[misc]
        finally:
            INTERCEPT.reset(token)


_HOSTS: dict[type, type] = {}


def is_host(module: nn.Module) -> bool:
    return isinstance(module, Host)


def host_class(cls: type) -> type:
    """``cls`` with the :class:`Host` mixin (registered in this module, so it pickles)."""
    if issubclass(cls, Host):
        return cls
    made = _HOSTS.get(cls)
    if made is None:
        name = f"Host_{cls.__name__}_{zlib.crc32((cls.__module__ + ':' + cls.__qualname__).encode()):08x}"
        made = type(name, (Host, cls), {"__module__": __name__, "__qualname__": name, "__doc__": cls.__doc__})
        setattr(sys.modules[__name__], name, made)
        _HOSTS[cls] = made
    return made
