r"""Hardware-realistic analog noise: crossbar periphery (DAC, ADC, tiles, output noise) and PCM devices.

The papers model analog error as one Gaussian after each product. The models here
compute the product the way an analog crossbar does, through the extension point
:meth:`noisynn.NoiseModel.product`: a noise site (``Linear``, ``Conv1d/2d/3d``, the
recurrent layers' gate products, attention's projections, a host's ``F.linear`` /
``addmm``) hands its :class:`~noisynn.noise.Product` to the model, so the layers do
not change and the site stays the one place where noise happens. Products of two
activations (attention scores and weighted sums) are digital under these models:
:meth:`Crossbar.apply` is the identity.

:class:`Crossbar` — the periphery of one crossbar, per tile, in the tile's normalised
units (inputs scaled to ``[-1, 1]``, weights to ``[-1, 1]`` by ``max|W|``):

1. *noise management*: each input vector is divided by its ``max |x|``
   (``noise_management=False``: by ``inp_bound``);
2. *DAC*: inputs clipped to ``[-inp_bound, inp_bound]`` and rounded to
   ``2^(inp_bits-1) - 1`` levels a side (``inp_bits=0``: no DAC);
3. the product, split into *tiles* of at most ``max_input_size`` inputs (rows), each
   with its own noise and ADC, then summed digitally;
4. *per-product weight read noise*: ``+ weight_read_noise * sqrt(sum_j |w_ij| x_j^2) * xi``;
5. *output noise*: ``+ out_noise * xi`` (normalised units), and the
   AIHWKIT-Lightning *relative* output noise ``+ relative_out_noise * max_j|x_j| *
   max|W| * xi`` (in real units; with noise management it equals ``out_noise``);
6. *ADC*: outputs clipped to ``[-out_bound, out_bound]`` and rounded to
   ``2^(out_bits-1) - 1`` levels a side (``out_bits=0``: no ADC); then scaled back and
   the bias added digitally.

:class:`PCM` — a :class:`Crossbar` whose weights are PCM conductances (aihwkit's
``PCMLikeNoiseModel``, Nandakumar et al. 2019): ``g_T = |w| / max|W| * g_max``, one
device of a pair per sign; programming noise ``g_T + sigma_prog(g_r) xi`` clipped at 0
with ``sigma_prog = (c0 + c1 g_r + c2 g_r^2) * g_max / 25 uS``; drift ``g(t) = g_prog
((t + t0) / t0)^(-nu)`` with ``nu = |N(mu_nu(g_r), sigma_nu(g_r))|`` per device; the
accumulated 1/f read noise ``|g(t)| q_s sqrt(ln((t + t0 + t_read) / (2 t_read))) xi``;
and an optional global drift compensation: a reference read at programming time
(``mean |W_prog|``, the mean output of one-hot inputs) against the same read at ``t``
rescales the output.

**Chips and reads.** A :class:`PCM` model *is* one chip: ``chip`` (with ``seed``)
seeds its programming noise, drift coefficients and 1/f realisation at time ``t``,
site by site, so the same chip gives the same programmed weights at every read and in
every process, and ``with_params(chip=k)`` is another chip. A *read* (one forward
pass) draws only the per-product noise (steps 4–6) fresh. So an evaluation over C
chips × R reads measures both spreads; batched repeats (:func:`noisynn.repeat_forward`)
are R reads of one chip.

**Training.** In ``train()`` mode the weight noise is drawn afresh at every call (so at
every mini-batch) from the model's generator, and the gradient reaches the weights
through the straight-through path ``W + (W_noisy - W).detach()``; the rounding of the
DAC and ADC is straight-through too (``x + (round(x) - x).detach()``); clipping keeps
its own gradient (zero outside the bounds).

**Evaluation** (no autograd) computes the same arithmetic in fewer passes: a site's weights
are prepared once per chip (programmed, drifted, divided by ``max|W|`` and by the ADC step,
sliced into tiles; cached while the weight tensors, their versions and the model's
parameters stay), the per-read noise is added in one fused pass of noisynn's sampler, and
one multiplication takes the ADC's levels back to real units. A recurrent layer binds its
gate product once per pass (:func:`bind`, a :class:`BoundProduct`) and runs its steps with
noisynn's fused noise-free cell (:mod:`noisynn.recurrent`). Same distribution as
:meth:`Crossbar._tile`; a rounding boundary may fall on the other side in the last bit.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from noisynn import kernels
from noisynn.noise import NoiseModel, Product, _defining_class

__all__ = ["Crossbar", "PCM", "PCM_DEFAULT_COEFFS", "BoundProduct", "bind"]

#: aihwkit's PCMLikeNoiseModel programming-noise coefficients (uS, for g_max = 25 uS).
PCM_DEFAULT_COEFFS = (0.26348, 1.9650, -1.1731)


def _ste_round(x: Tensor) -> Tensor:
    return x + (torch.round(x) - x).detach()


def _check(name: str, value: Any, *, integer: bool = False, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or (positive and value == 0) or (integer and int(value) != value):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} {'> 0' if positive else '>= 0'}, got {value!r}")
    return int(value) if integer else float(value)


class Crossbar(NoiseModel):
    """The periphery of an analog crossbar (see the module docstring for the steps).

    Args:
        out_noise: output noise std, normalised units (aihwkit's ``out_noise``, e.g. 0.04).
        relative_out_noise: output noise std relative to ``max|x| * max|W|`` (AIHWKIT-Lightning).
        weight_read_noise: std factor of the per-product noise ``sqrt(sum_j |w_ij| x_j^2)``.
        inp_bits, inp_bound: DAC resolution (0: none) and input bound.
        out_bits, out_bound: ADC resolution (0: none) and output bound (normalised units).
        noise_management: scale each input vector by its ``max |x|`` before the DAC.
        max_input_size: rows per crossbar tile (0: one tile, any size).
        generator: draws the per-read noise (``None``: torch's default generator).
    """

    def __init__(self, out_noise: float = 0.0, relative_out_noise: float = 0.0, weight_read_noise: float = 0.0,
                 inp_bits: int = 0, inp_bound: float = 1.0, out_bits: int = 0, out_bound: float = 12.0,
                 noise_management: bool = True, max_input_size: int = 0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        self.out_noise = _check("out_noise", out_noise)
        self.relative_out_noise = _check("relative_out_noise", relative_out_noise)
        self.weight_read_noise = _check("weight_read_noise", weight_read_noise)
        self.inp_bits = _check("inp_bits", inp_bits, integer=True)
        self.inp_bound = _check("inp_bound", inp_bound, positive=True)
        self.out_bits = _check("out_bits", out_bits, integer=True)
        self.out_bound = _check("out_bound", out_bound, positive=True)
        if self.inp_bits == 1 or self.out_bits == 1:
            raise ValueError("inp_bits and out_bits must be 0 (off) or >= 2 (a sign bit and one level)")
        self.noise_management = bool(noise_management)
        self.max_input_size = int(_check("max_input_size", max_input_size, integer=True))

    # -- the extension point -------------------------------------------------------
    def computes_products(self, site: str = "") -> bool:
        return True

    def apply(self, y: Tensor, site: str = "") -> Tensor:
        """Products of two activations (attention) are computed digitally: unchanged."""
        return y

    def weights(self, p: Product, site: str) -> tuple[Tensor, Tensor | float]:
        """``(the weights the crossbar holds now, the output's compensation factor)``: exact here."""
        return p.weight, 1.0

    def product(self, p: Product, site: str = "") -> Tensor:
        if _needs_grad(p):
            return self._product_ste(p, site)
        prep = self._prepare(p, site)
        op = p.op
        y = self._forward(prep, p.x, lambda a, b: op(a, b, None), p.in_dim)
        if p.bias is not None:
            channel = p.in_dim if p.in_dim >= 0 else y.dim() + p.in_dim
            y = y.add_(p.bias.detach().view([-1 if d == channel else 1 for d in range(y.dim())]))
        return y

    # -- training (autograd): the definition, straight-through -------------------
    def _product_ste(self, p: Product, site: str) -> Tensor:
        weight, alpha = self.weights(p, site)
        wmax = p.weight.detach().abs().amax().clamp_min(1e-12)
        wn = weight / wmax
        y = None
        for start, length in self._tile_ranges(p):
            x_tile = p.x if length is None else p.x.narrow(p.in_dim, start, length)
            w_tile = wn if length is None else wn[:, start:start + length]
            part = self._tile(p, x_tile, w_tile, wmax)
            y = part if y is None else y + part
        assert y is not None
        if not (isinstance(alpha, float) and alpha == 1.0):
            y = y * alpha
        if p.bias is not None:
            channel = p.in_dim if p.in_dim >= 0 else y.dim() + p.in_dim
            y = y + p.bias.view([-1 if d == channel else 1 for d in range(y.dim())])
        return y

    def _tile_ranges(self, p: Product) -> list[tuple[int, int | None]]:
        """``(first input, count)`` of each tile; ``[(0, None)]``: one tile holds the whole product."""
        n_in = p.weight.size(1)
        rows = 1
        for k in p.weight.shape[2:]:
            rows *= k  # a conv's kernel positions share a crossbar's rows with its channels
        per_tile = n_in if not self.max_input_size else max(1, self.max_input_size // rows)
        if per_tile >= n_in:
            return [(0, None)]
        if not p.splittable:
            raise ValueError(f"max_input_size={self.max_input_size}: this product (grouped convolution) "
                             "cannot be split into tiles; use max_input_size=0")
        return [(start, min(per_tile, n_in - start)) for start in range(0, n_in, per_tile)]

    def _tile(self, p: Product, x: Tensor, wn: Tensor, wmax: Tensor) -> Tensor:
        """One crossbar tile in real units, differentiable (training): the straight-through definition.

        Inputs go in as DAC levels; the output leaves as ADC levels. :meth:`_tile_fast` computes
        the same without autograd, in fewer passes.
        """
        grad = torch.is_grad_enabled() and (x.requires_grad or wn.requires_grad)
        linear = p.in_dim in (-1, x.dim() - 1)
        flat = x.detach() if linear else x.detach().reshape(x.size(0), -1)
        amax = _amax_abs(flat)  # max |x| of each input vector (linear) or sample (conv)
        if not linear:
            amax = amax.reshape(x.size(0), *([1] * (x.dim() - 1)))
        scale = amax.clamp_min(1e-12) if self.noise_management else torch.full_like(amax, self.inp_bound)
        unit = 1.0  # what one unit of the tile's input is worth, in normalised units
        if self.inp_bits:
            levels = 2 ** (self.inp_bits - 1) - 1
            unit = self.inp_bound / levels
            if grad:
                xn = _ste_round((x / scale).clamp(-self.inp_bound, self.inp_bound) / unit)
            else:
                xn = torch.div(x, scale * unit).round_().clamp_(-levels, levels)
        else:
            xn = x / scale
        y = p.exact(xn, wn, None)  # normalised units / unit
        read_std = (self.weight_read_noise * p.exact(xn.detach() ** 2, wn.detach().abs(), None).clamp_min(0).sqrt()
                    if self.weight_read_noise else None)
        noise_std: Tensor | float | None = read_std  # in y's units
        if self.out_noise:
            o = self.out_noise / unit
            noise_std = o if read_std is None else (read_std ** 2 + o ** 2).sqrt()
        out_scale = _channel_view(scale, y, p)
        if self.relative_out_noise:  # real units sigma * max|x| * max|W|  =  normalised sigma * max|x| / scale
            rel = self.relative_out_noise / unit * _channel_view(amax, y, p) / out_scale
            noise_std = rel if noise_std is None else (noise_std ** 2 + rel ** 2).sqrt()
        if noise_std is not None:
            z = self._randn(y)
            y = y + z * noise_std if grad else y.addcmul_(z, noise_std) if isinstance(noise_std, Tensor) \
                else y.add_(z, alpha=noise_std)
        if self.out_bits:
            levels = 2 ** (self.out_bits - 1) - 1
            step = self.out_bound / levels / unit  # one ADC level in y's units
            if grad:
                y = _ste_round(y.clamp(-self.out_bound / unit, self.out_bound / unit) / step)
            else:
                y = y.div_(step).round_().clamp_(-levels, levels)
            unit *= step
        factor = out_scale * (wmax * unit)
        return y * factor if grad else y.mul_(factor)

    # -- evaluation (no autograd): prepared weights, few passes ------------------
    def _units(self) -> tuple[float, float]:
        """``(unit, step)``: one DAC level in normalised input units, one ADC level in ``levels @ wn`` units."""
        unit = self.inp_bound / (2 ** (self.inp_bits - 1) - 1) if self.inp_bits else 1.0
        step = self.out_bound / (2 ** (self.out_bits - 1) - 1) / unit if self.out_bits else 1.0
        return unit, step

    def _prepare(self, p: Product, site: str) -> _Prepared:
        """The product's weights as the tiles use them (kept per site while the weights and the chip stay)."""
        cacheable = not p.training and _defining_class(type(self), "weights") in (Crossbar, PCM)
        if cacheable:
            cache = self.__dict__.setdefault("_prepared", {})
            hit = cache.get(site)
            if hit is not None and hit.matches(p, self):
                return hit
        with torch.no_grad():
            weight, alpha = self.weights(p, site)
            weight = weight.detach()
            wmax = p.weight.detach().abs().amax().clamp_min(1e-12)
            _, step = self._units()
            wn = weight / wmax
            tiles = []
            for start, length in self._tile_ranges(p):
                w_tile = wn if length is None else wn[:, start:start + length]
                wq = (w_tile / step if step != 1.0 else w_tile).contiguous()  # op(levels, wq): in ADC steps
                tiles.append((start, length, wq, w_tile.abs() if self.weight_read_noise else None))
            scale = wmax * alpha if isinstance(alpha, Tensor) else wmax * float(alpha)
        prep = _Prepared(tiles, scale.detach(), _Prepared.ident(p, self) if cacheable else None)
        if cacheable:
            cache[site] = prep
        return prep

    def _forward(self, prep: _Prepared, x: Tensor, op: Any, in_dim: int, seeds: list | None = None) -> Tensor:
        """The tiles' outputs summed, in real units, no bias (``seeds``: one per tile, for the fast sampler)."""
        y = None
        for k, (start, length, wq, wabs) in enumerate(prep.tiles):
            x_tile = x if length is None else x.narrow(in_dim, start, length)
            part = self._tile_fast(x_tile, wq, wabs, op, in_dim, prep.scale, None if seeds is None else seeds[k])
            y = part if y is None else y.add_(part)
        assert y is not None
        return y

    def _tile_fast(self, x: Tensor, wq: Tensor, wabs: Tensor | None, op: Any, in_dim: int, wscale: Tensor,
                   seed: Any = None) -> Tensor:
        """One tile without autograd: :meth:`_tile`'s arithmetic with the ADC step folded into the weights.

        ``g = op(levels, wn / step)`` is the output in ADC steps; the noise is added in those
        units (one fused pass where the fast sampler runs), rounded and clipped by the ADC,
        and one multiplication takes it back to real units (``max|x| * unit * step * max|W| *
        alpha`` per input vector).
        """
        linear = in_dim in (-1, x.dim() - 1)
        unit, step = self._units()
        nm = self.noise_management
        amax = None
        if nm or self.relative_out_noise:
            flat = x if linear else x.reshape(x.size(0), -1)
            amax = _amax_abs(flat)
            if not linear:
                amax = amax.reshape(x.size(0), *([1] * (x.dim() - 1)))
        scale: Tensor | float = amax.clamp_min(1e-12) if nm else self.inp_bound  # type: ignore[union-attr]
        if self.inp_bits:
            levels = 2 ** (self.inp_bits - 1) - 1
            xl = torch.div(x, scale * unit).round_()
            if not (nm and self.inp_bound >= 1.0):  # |x / scale| <= 1 with noise management
                xl = xl.clamp_(-levels, levels)
        else:
            xl = x / scale
        g = op(xl, wq)
        var = (self.out_noise / unit / step) ** 2 if self.out_noise else 0.0  # in g's units
        var_t: Tensor | None = None
        if self.relative_out_noise:
            rel = self.relative_out_noise / unit / step
            if nm:  # max|x| / scale = 1
                var += rel ** 2
            else:
                assert amax is not None  # computed above whenever relative_out_noise
                var_t = (rel * amax / scale) ** 2
        if self.weight_read_noise:
            wr = (self.weight_read_noise / step) ** 2 * op(xl * xl, wabs).clamp_min_(0)
            var_t = wr if var_t is None else wr.add_(var_t)
        if var_t is not None:
            std = var_t.add_(var).sqrt_() if var else var_t.sqrt_()
            g = g.addcmul_(self._randn(g, seed), std)
        elif var:
            g = self._add_noise(g, math.sqrt(var), seed)
        if self.out_bits:
            levels = 2 ** (self.out_bits - 1) - 1
            g = g.round_().clamp_(-levels, levels)
        factor = scale * (wscale * (unit * step))  # scale: (..., 1) per input vector or (B, 1, ...) per sample
        return g.mul_(factor)

    def _add_noise(self, g: Tensor, std: float, seed: Any = None) -> Tensor:
        """``g + std * z`` in place (one fused pass with the fast sampler)."""
        if g.is_contiguous() and kernels.fast_path(g, generator=self.generator,
                                                   min_elements=1 if seed is not None else kernels.MIN_ELEMENTS):
            return kernels.add_noise_(g, std, self.generator, seed=seed)
        return g.add_(self._randn(g), alpha=std)

    def _randn(self, like: Tensor, seed: Any = None) -> Tensor:
        """Standard normals shaped like ``like`` (the fast parallel sampler where it can run).

        ``seed``: the fast sampler's seed words for this draw (drawn beforehand from the
        model's generator, so that row blocks run in threads stay reproducible).
        """
        z = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        if kernels.fast_path(z, generator=self.generator, min_elements=1 if seed is not None else kernels.MIN_ELEMENTS):
            return kernels.normal_(z, 0.0, 1.0, self.generator, seed=seed)
        return z.normal_(generator=self.generator)

    def is_identity(self, site: str = "") -> bool:
        return False

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.params() == self.params()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.params().items()))))

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_cache", None)
        state.pop("_prepared", None)
        return state


class BoundProduct:
    """``model.product(p._replace(x=x), site)`` for many inputs with the same weights, prepared once.

    What a recurrent layer's steps use in evaluation (:func:`bind`): the chip's weights are looked
    up, scaled and sliced into tiles once per pass instead of once per step. The bias is not
    included (the caller adds it digitally, as :meth:`Crossbar.product` does). ``seeds``: one
    fast-sampler seed per tile (:attr:`n_seeds`), drawn by the caller from the model's generator
    beforehand, so that row blocks computed in threads stay reproducible.
    """

    __slots__ = ("model", "prep", "op", "in_dim")

    def __init__(self, model: Crossbar, prep: _Prepared, op: Any, in_dim: int) -> None:
        self.model, self.prep, self.op, self.in_dim = model, prep, op, in_dim

    @property
    def n_seeds(self) -> int:
        return len(self.prep.tiles)

    def __call__(self, x: Tensor, seeds: list | None = None) -> Tensor:
        return self.model._forward(self.prep, x, self.op, self.in_dim, seeds)


_OWN_EVALUATION = ("product", "_prepare", "_forward", "_tile_fast", "_tile_ranges", "_add_noise", "_randn", "_units")


def bind(model: NoiseModel, p: Product, site: str) -> BoundProduct | None:
    """A :class:`BoundProduct` of ``p`` (its ``x`` is ignored) on ``model``, or ``None`` when ``model``
    is not a :class:`Crossbar` computing products by this module's own evaluation code (a subclass
    that redefines it), or ``p`` is a training product."""
    if not isinstance(model, Crossbar) or p.training or p.weight.requires_grad and torch.is_grad_enabled():
        return None
    if any(_defining_class(type(model), name) not in (Crossbar, PCM) for name in _OWN_EVALUATION):
        return None
    if p.op is F.linear:
        op = F.linear
    else:
        def op(a: Tensor, b: Tensor, _op: Any = p.op) -> Tensor:
            return _op(a, b, None)
    return BoundProduct(model, model._prepare(p, site), op, p.in_dim)


def _needs_grad(p: Product) -> bool:
    """Whether autograd records this product (then the straight-through definition runs)."""
    return torch.is_grad_enabled() and (p.x.requires_grad or p.weight.requires_grad
                                        or (p.bias is not None and p.bias.requires_grad))


def _amax_abs(flat: Tensor) -> Tensor:
    """``max |x|`` over the last dimension, keepdim (two reductions: no ``|x|`` temporary, unlike aminmax)."""
    if flat.numel() < 65536:
        return flat.abs().amax(-1, keepdim=True)
    return torch.maximum(flat.amax(-1, keepdim=True), flat.amin(-1, keepdim=True).neg_())


class _Prepared:
    """A product's weights as its tiles use them in evaluation: per tile ``(start, count, wn / step,
    |wn| or None)``, and ``scale = max|W| * alpha`` (the compensation included)."""

    __slots__ = ("tiles", "scale", "_ident")

    def __init__(self, tiles: list, scale: Tensor, ident: tuple | None) -> None:
        self.tiles, self.scale, self._ident = tiles, scale, ident

    @staticmethod
    def ident(p: Product, model: NoiseModel) -> tuple:
        """What the prepared weights depend on: the weight tensors themselves (weak references: a
        freed tensor's address reused is not a hit), their in-place versions, the model's parameters."""
        keys = _keys(p)
        return (tuple(weakref.ref(k) for k in keys), tuple(_version(k) for k in keys),
                p.weight.shape, p.weight.dtype, p.weight.device, _param_key(model))

    def matches(self, p: Product, model: NoiseModel) -> bool:
        if self._ident is None:
            return False
        keys = _keys(p)
        refs, versions, shape, dtype, device, params = self._ident
        return (len(refs) == len(keys) and all(r() is k for r, k in zip(refs, keys, strict=True))
                and versions == tuple(_version(k) for k in keys)
                and shape == p.weight.shape and dtype == p.weight.dtype and device == p.weight.device
                and params == _param_key(model))


def _keys(p: Product) -> tuple:
    """The tensors a product's weight is made of (``Product.key``: one tensor or a tuple of them)."""
    keys = p.key if isinstance(p.key, tuple) else (p.key,)
    return tuple(k for k in keys if isinstance(k, Tensor)) or (p.weight,)


def _version(t: Tensor) -> int:
    """``t``'s in-place version counter (-1 for an inference tensor, which keeps none)."""
    try:
        return t._version
    except RuntimeError:
        return -1


def _param_key(model: NoiseModel) -> tuple:
    return tuple(v for k, v in vars(model).items() if not k.startswith("_") and isinstance(v, (bool, int, float)))


def _channel_view(per_sample: Tensor, y: Tensor, p: Product) -> Tensor:
    """A per-input-vector factor shaped to multiply the product's output ``y``."""
    if p.in_dim in (-1, p.x.dim() - 1):
        return per_sample  # (..., 1): the same leading shape as y
    return per_sample.reshape(per_sample.shape[0], *([1] * (y.dim() - 1)))


class PCM(Crossbar):
    """A PCM chip: programming noise, drift (with optional global compensation), 1/f read noise.

    Args:
        chip: which chip (seeds its programming, drift and 1/f noise with ``seed``).
        t: seconds since programming (0: just programmed; 3600: an hour; 86400: a day).
        compensation: global drift compensation (a reference read at programming time).
        g_max: conductance of ``max|W|`` (uS).
        prog_c0, prog_c1, prog_c2: programming-noise polynomial (uS at ``prog_g_ref``).
        prog_g_ref: the ``g_max`` the coefficients were fitted at (25 uS).
        t0: the drift model's first read (s); t_read: the 1/f fit's read time (s).
        prog_noise_scale, read_noise_scale, drift_scale: scale each effect (0 turns it off).
        seed: with ``chip``, the chip's identity.
        **periphery: the :class:`Crossbar` arguments (DAC, ADC, tiles, output noise).
    """

    def __init__(self, chip: int = 0, t: float = 0.0, compensation: bool = True, g_max: float = 25.0,
                 prog_c0: float = PCM_DEFAULT_COEFFS[0], prog_c1: float = PCM_DEFAULT_COEFFS[1],
                 prog_c2: float = PCM_DEFAULT_COEFFS[2], prog_g_ref: float = 25.0, t0: float = 20.0,
                 t_read: float = 250e-9, prog_noise_scale: float = 1.0, read_noise_scale: float = 1.0,
                 drift_scale: float = 1.0, seed: int = 0, **periphery: Any) -> None:
        super().__init__(**periphery)
        self.chip = _check("chip", chip, integer=True)
        self.t = _check("t", t)
        self.compensation = bool(compensation)
        self.g_max = _check("g_max", g_max, positive=True)
        for name, value in (("prog_c0", prog_c0), ("prog_c1", prog_c1), ("prog_c2", prog_c2)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        self.prog_c0, self.prog_c1, self.prog_c2 = float(prog_c0), float(prog_c1), float(prog_c2)
        self.prog_g_ref = _check("prog_g_ref", prog_g_ref, positive=True)
        self.t0 = _check("t0", t0, positive=True)
        self.t_read = _check("t_read", t_read, positive=True)
        self.prog_noise_scale = _check("prog_noise_scale", prog_noise_scale)
        self.read_noise_scale = _check("read_noise_scale", read_noise_scale)
        self.drift_scale = _check("drift_scale", drift_scale)
        self.seed = _check("seed", seed, integer=True)
        self._cache: dict[str, tuple[_Prepared, Tensor, Tensor]] = {}

    # -- the device physics, each a formula of its own (tested against the papers' values) ----
    def sigma_prog(self, g_target: Tensor) -> Tensor:
        """Programming-noise std (uS) at target conductance ``g_target`` (uS)."""
        g_r = g_target / self.g_max
        return (self.prog_c0 + self.prog_c1 * g_r + self.prog_c2 * g_r ** 2) * (self.g_max / self.prog_g_ref)

    def drift_nu_params(self, g_target: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu_nu, sigma_nu)`` of the drift exponent, clamped log-linear in ``g_r`` (aihwkit's pcm.py)."""
        g_r = (g_target / self.g_max).abs().clamp_min(1e-7)
        mu = (-0.0155 * torch.log(g_r) + 0.0244).clamp(0.049, 0.1)
        sigma = (-0.0125 * torch.log(g_r) - 0.0059).clamp(0.008, 0.045)
        return mu, sigma

    def drift_factor(self, nu: Tensor, t: float) -> Tensor:
        """``((t + t0) / t0)^(-nu)``: what drift multiplies a conductance by at ``t`` s."""
        return ((t + self.t0) / self.t0) ** (-nu) if t > 0 else torch.ones_like(nu)

    def read_noise_std(self, g_prog: Tensor, t: float) -> Tensor:
        """Relative std of the accumulated 1/f read noise at ``t`` s (``q_s sqrt(ln((t+t0+t_read)/(2 t_read)))``)."""
        q_s = (0.0088 / ((g_prog.abs() / self.g_max) ** 0.65).clamp_min(1e-3)).clamp(max=0.2)
        tt = t + self.t0
        return q_s * math.sqrt(math.log((tt + self.t_read) / (2 * self.t_read)))

    # -- one chip's weights --------------------------------------------------------
    def weights(self, p: Product, site: str) -> tuple[Tensor, Tensor | float]:
        w = p.weight
        if p.training:  # a new draw per mini-batch, straight-through to the weights
            noisy, alpha = self._chip_weights(w.detach(), None)
            return w + (noisy - w).detach(), alpha
        cache = self.__dict__.setdefault("_cache", {})
        cached = cache.get(site)
        if cached is not None and cached[0].matches(p, self):
            return cached[1], cached[2]
        gen = self._chip_generator(site, w.device)
        with torch.no_grad():
            noisy, alpha = self._chip_weights(w.detach(), gen)
        cache[site] = (_Prepared([], alpha, _Prepared.ident(p, self)), noisy, alpha)  # _Prepared: only its ident
        return noisy, alpha

    def _chip_generator(self, site: str, device: torch.device) -> torch.Generator:
        digest = hashlib.sha256(f"noisynn-pcm:{self.seed}:{self.chip}:{site}".encode()).digest()
        gen = torch.Generator(device=device)
        gen.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        return gen

    def _chip_weights(self, w: Tensor, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """(the effective weights at ``t``, the compensation factor), one draw of everything."""
        gen = gen if gen is not None else self.generator
        wmax = w.abs().amax()
        if wmax == 0:  # nothing to program: every device stays at zero conductance
            return w.clone(), torch.ones((), dtype=w.dtype, device=w.device)
        g_target = w.abs() / wmax * self.g_max
        positive = w > 0

        def randn() -> Tensor:
            return torch.randn(w.shape, dtype=w.dtype, device=w.device, generator=gen)

        effective = []
        programmed = []
        for device_on in (positive, ~positive & (w != 0)):  # the pair: g+ holds w > 0, g- holds w < 0
            g_t = torch.where(device_on, g_target, torch.zeros_like(g_target))
            g_prog = (g_t + self.prog_noise_scale * self.sigma_prog(g_t) * randn()).clamp_min(0.0)
            mu, sigma = self.drift_nu_params(g_t)
            nu = (mu + sigma * randn()).abs() * self.drift_scale
            g_drift = g_prog * self.drift_factor(nu, self.t)
            g_final = (g_drift + g_drift.abs() * self.read_noise_scale * self.read_noise_std(g_prog, self.t)
                       * randn()).clamp_min(0.0)
            effective.append(g_final)
            programmed.append(g_prog)
        to_w = wmax / self.g_max
        w_eff = (effective[0] - effective[1]) * to_w
        if not self.compensation:
            return w_eff, torch.ones((), dtype=w.dtype, device=w.device)
        w_ref = (programmed[0] - programmed[1]) * to_w  # the reference read at programming time
        alpha = w_ref.abs().mean() / w_eff.abs().mean().clamp_min(1e-12)
        return w_eff, alpha
