"""Noisy drop-ins for ``torch.nn`` layers that compute a matrix-vector product.

Each class here subclasses its ``torch.nn`` counterpart, keeps its constructor, its
parameters and its ``state_dict`` keys, and adds one thing: its output passes through
the active noise model (:mod:`noisynn.noise`). With no noise, or ``sigma = 0``, the
forward pass *is* the ``torch.nn`` forward pass, bit for bit.

* :class:`NoisyLinear`, :class:`NoisyBilinear`, :class:`NoisyConv1d`/``2d``/``3d``,
  :class:`NoisyConvTranspose1d`/``2d``/``3d``: noise on ``W x + b``.
* :class:`NoisyBatchNorm1d`/``2d``/``3d``: a batch-norm folded into the preceding
  (noise-free) linear/conv layer: noise on ``BN(W x + b)``, the papers' "Conv - BN -
  Gaussian noise - ReLU" order (paper 2, table 1).
* :func:`noisy_class`: the noisy version of any of these classes *or a subclass of
  one* (``NonDynamicallyQuantizableLinear``, a user's ``Linear`` subclass): noise on
  whatever the class's own ``forward`` returns. :func:`noisynn.convert` uses it.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import zlib
from collections.abc import Iterator
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from noisynn.errors import ModelError
from noisynn.noise import NoiseModel, Product, active_override

__all__ = [
    "NoiseSite",
    "NoisyLinear",
    "NoisyBilinear",
    "NoisyConv1d",
    "NoisyConv2d",
    "NoisyConv3d",
    "NoisyConvTranspose1d",
    "NoisyConvTranspose2d",
    "NoisyConvTranspose3d",
    "NoisyBatchNorm1d",
    "NoisyBatchNorm2d",
    "NoisyBatchNorm3d",
    "noisy_class",
    "set_noise",
    "noise_sites",
]

# Run-time interception of products in a model's own code (noisynn.functional): the
# innermost scope. ``None``: no interception anywhere (the common case, one lookup).
# A noise site computing its own product marks its scope exact, so that the product
# it makes noisy itself is not intercepted a second time.
INTERCEPT: contextvars.ContextVar[Any] = contextvars.ContextVar("noisynn_intercept", default=None)
EXACT = object()  # INTERCEPT's value inside a noise site's own computation


@contextlib.contextmanager
def exact_scope() -> Iterator[None]:
    """Inside the block, products are not intercepted (a noise site's own computation)."""
    token = INTERCEPT.set(EXACT)
    try:
        yield
    finally:
        INTERCEPT.reset(token)


class NoiseSite:
    """Mixin for modules that are noise sites.

    Attributes:
        noise: the module's own noise model (``None``: clean), used unless a
            ``with noisynn.noise_model(...)`` block overrides it.
        site_name: the module's qualified name in its model (set by :func:`set_noise`),
            passed to the noise model so that it can tell sites apart.
    """

    noise: NoiseModel | None = None
    site_name: str = ""

    def site_names(self) -> list[str]:
        """The names this module passes to :meth:`NoiseModel.apply` (one per product kind)."""
        return [self.site_name]

    def active_model(self) -> NoiseModel | None:
        """The override of a ``with`` block, else the module's own model (may be an identity)."""
        model = active_override()
        return self.noise if model is None else model

    def active_noise(self) -> NoiseModel | None:
        """The noise model that applies now, or ``None`` when computation is exact."""
        model = active_override()
        if model is None:
            model = self.noise
        if model is None or model.is_identity(self.site_name):
            return None
        return model

    def inject(self, y: Tensor) -> Tensor:
        """Apply the active noise model to the clean pre-activation ``y``."""
        model = self.active_noise()
        return y if model is None else model.apply(y, self.site_name)

    def extra_repr(self) -> str:  # shown by print(model)
        base = super().extra_repr()  # type: ignore[misc]
        return f"{base}, noise={self.noise!r}" if self.noise is not None else base


class _NoisyOutput(NoiseSite):
    """A noise site whose noise goes on the output of its ``torch.nn`` base's ``forward``.

    ``folded``: a linear/conv whose noise the batch-norm right after it carries (the
    papers' "conv - BN - noise"): exact under noise that acts on outputs, but the
    analog product itself under a model that computes products
    (:meth:`NoiseModel.computes_products`, e.g. :mod:`noisynn.hardware`), the
    batch-norm then being digital.
    """

    folded: bool = False

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        model = self.active_noise()
        if INTERCEPT.get() is None:
            return self._noisy_forward(model, args, kwargs)
        with exact_scope():
            return self._noisy_forward(model, args, kwargs)

    def _noisy_forward(self, model: NoiseModel | None, args: tuple, kwargs: dict) -> Tensor:
        if model is None:
            return super().forward(*args, **kwargs)  # type: ignore[misc]
        if model.computes_products(self.site_name):
            if isinstance(self, nn.modules.batchnorm._BatchNorm):
                return super().forward(*args, **kwargs)  # type: ignore[misc]  # digital, after its product
            return model.product(self.as_product(*args, **kwargs), self.site_name)
        y = super().forward(*args, **kwargs)  # type: ignore[misc]
        return y if self.folded else model.apply_(y, self.site_name)  # y is this call's own fresh output

    def as_product(self, *args: Any, **kwargs: Any) -> Product:
        """This layer's product as a :class:`~noisynn.noise.Product` (for models that compute products)."""
        own = next((c for c in type(self).__mro__[1:] if "forward" in c.__dict__
                    and c not in (_NoisyOutput, NoiseSite)), None)
        x = args[0] if args else kwargs.get("input")
        if own in (nn.Linear,) and x is not None and len(args) <= 1:
            return Product(x, self.weight, self.bias, F.linear, -1, True, self.training, self.weight)  # type: ignore[attr-defined]
        if own in (nn.Conv1d, nn.Conv2d, nn.Conv3d) and x is not None and len(args) <= 1:
            return Product(x, self.weight, self.bias, self._conv_forward, 1,  # type: ignore[attr-defined]
                           self.groups == 1, self.training, self.weight)  # type: ignore[attr-defined]
        raise ModelError(
            f"{self.site_name or type(self).__name__} ({type(self).__name__}) cannot hand its product to a noise "
            f"model that computes products (only Linear and Conv1d/2d/3d without a forward of their own can); "
            f"use an output noise model here (e.g. PerSite with Additive for this site)"
        )


class NoisyLinear(_NoisyOutput, nn.Linear):
    """``nn.Linear`` whose output ``x W^T + b`` gets noise: a drop-in with the same arguments."""


class NoisyBilinear(_NoisyOutput, nn.Bilinear):
    """``nn.Bilinear`` whose output ``x1^T A x2 + b`` gets noise: a drop-in with the same arguments."""


class NoisyConv1d(_NoisyOutput, nn.Conv1d):
    """``nn.Conv1d`` whose output (bias included) gets noise: a drop-in with the same arguments."""


class NoisyConv2d(_NoisyOutput, nn.Conv2d):
    """``nn.Conv2d`` whose output (bias included) gets noise: a drop-in with the same arguments."""


class NoisyConv3d(_NoisyOutput, nn.Conv3d):
    """``nn.Conv3d`` whose output (bias included) gets noise: a drop-in with the same arguments."""


class NoisyConvTranspose1d(_NoisyOutput, nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` whose output (bias included) gets noise."""


class NoisyConvTranspose2d(_NoisyOutput, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` whose output (bias included) gets noise."""


class NoisyConvTranspose3d(_NoisyOutput, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` whose output (bias included) gets noise."""


class NoisyBatchNorm1d(_NoisyOutput, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that ends a noisy matrix-vector product: noise on its output.

    Use it right after a noise-free ``nn.Linear``: the pair is one noise site.
    Whether the BN uses batch or running statistics follows ``train()``/``eval()``
    as usual; noise does not.
    """


class NoisyBatchNorm2d(_NoisyOutput, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that ends a noisy convolution: noise on its output (conv - BN - noise)."""


class NoisyBatchNorm3d(_NoisyOutput, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` that ends a noisy 3-D convolution: noise on its output."""


#: torch class -> its noisy drop-in (same state; :func:`noisy_class` makes the others)
NOISY_CLASSES: dict[type, type] = {
    nn.Linear: NoisyLinear, nn.Bilinear: NoisyBilinear,
    nn.Conv1d: NoisyConv1d, nn.Conv2d: NoisyConv2d, nn.Conv3d: NoisyConv3d,
    nn.ConvTranspose1d: NoisyConvTranspose1d, nn.ConvTranspose2d: NoisyConvTranspose2d,
    nn.ConvTranspose3d: NoisyConvTranspose3d,
    nn.BatchNorm1d: NoisyBatchNorm1d, nn.BatchNorm2d: NoisyBatchNorm2d, nn.BatchNorm3d: NoisyBatchNorm3d,
}


def noisy_class(cls: type) -> type:
    """The noisy version of ``cls``: a drop-in with noise on its ``forward``'s output.

    ``cls`` is one of the classes of :data:`NOISY_CLASSES` or a subclass of one (its
    own ``forward``, if it has one, runs unchanged, then the noise). Classes made
    here are registered in this module, so models holding them pickle.
    """
    if issubclass(cls, NoiseSite):
        return cls
    known = NOISY_CLASSES.get(cls)
    if known is not None:
        return known
    name = f"Noisy{cls.__name__}"
    existing = getattr(sys.modules[__name__], name, None)
    if isinstance(existing, type) and existing.__bases__ == (_NoisyOutput, cls):
        return existing
    if existing is not None:
        name = f"Noisy{cls.__name__}_{zlib.crc32((cls.__module__ + ':' + cls.__qualname__).encode()):08x}"
    made = type(name, (_NoisyOutput, cls), {
        "__module__": __name__, "__qualname__": name,
        "__doc__": f"``{cls.__module__}.{cls.__qualname__}`` with noise on its output (made by noisy_class).",
    })
    setattr(sys.modules[__name__], name, made)
    NOISY_CLASSES[cls] = made
    return made

def noise_sites(model: nn.Module, *, hosts: bool = False) -> Iterator[tuple[str, NoiseSite]]:
    """Yield ``(qualified_name, module)`` for every noise site in ``model``.

    Also records each site's qualified name in its ``site_name`` (what a
    :class:`~noisynn.noise.PerSite` model matches on). ``hosts=True`` also yields the
    hosts of :mod:`noisynn.functional` (modules whose own code's products are caught
    at run time; they carry a noise model like a site).
    """
    for name, module in model.named_modules():
        if isinstance(module, NoiseSite):
            module.site_name = name
            if hosts or not getattr(module, "is_host", False):
                yield name, module


def set_noise(model: nn.Module, noise: NoiseModel | str | None, sigma: float | None = None) -> nn.Module:
    """Set the noise model of every noise site in ``model`` (persistently).

    Args:
        model: any module; its noise sites are found by type.
        noise: a :class:`~noisynn.noise.NoiseModel`, a kind name
            (``"additive"``/``"multiplicative"``, with ``sigma``) or ``None`` for clean.
        sigma: the standard deviation when ``noise`` is a kind name.

    Returns:
        ``model``, for chaining.

    Raises:
        ValueError: bad kind or sigma.
    """
    from noisynn.noise import noise as make_noise

    resolved = None if noise is None else make_noise(noise, sigma)
    for _, module in noise_sites(model, hosts=True):
        module.noise = resolved
    return model

