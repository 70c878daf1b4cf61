"""Noisy drop-ins for ``torch.nn`` layers that compute a matrix-vector product.

Each class here subclasses its ``torch.nn`` counterpart, keeps its constructor, its
parameters and its ``state_dict`` keys, and adds one thing: its output passes through
the active noise model (:mod:`noisynn.noise`). With no noise, or ``sigma = 0``, the
forward pass *is* the ``torch.nn`` forward pass, bit for bit.

* :class:`NoisyLinear`, :class:`NoisyConv2d`: noise on ``W x + b``.
* :class:`NoisyBatchNorm1d`, :class:`NoisyBatchNorm2d`: a batch-norm folded into the
  preceding (noise-free) linear/conv layer: noise on ``BN(W x + b)``, the papers'
  "Conv - BN - Gaussian noise - ReLU" order (paper 2, table 1).
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor, nn

from noisynn.noise import NoiseModel, active_override

__all__ = [
    "NoiseSite",
    "NoisyLinear",
    "NoisyConv2d",
    "NoisyBatchNorm1d",
    "NoisyBatchNorm2d",
    "set_noise",
    "noise_sites",
]


class NoiseSite:
    """Mixin for modules that are noise sites.

    Attributes:
        noise: the module's own noise model (``None``: clean), used unless a
            ``with noisynn.noise(...)`` block overrides it.
        site_name: the module's qualified name in its model (set by :func:`set_noise`),
            passed to the noise model so that it can tell sites apart.
    """

    noise: NoiseModel | None = None
    site_name: str = ""

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


class NoisyLinear(NoiseSite, nn.Linear):
    """``nn.Linear`` whose output ``x W^T + b`` gets noise: a drop-in with the same arguments."""

    def forward(self, input: Tensor) -> Tensor:
        return self.inject(super().forward(input))


class NoisyConv2d(NoiseSite, nn.Conv2d):
    """``nn.Conv2d`` whose output (bias included) gets noise: a drop-in with the same arguments."""

    def forward(self, input: Tensor) -> Tensor:
        return self.inject(super().forward(input))


class NoisyBatchNorm1d(NoiseSite, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that ends a noisy matrix-vector product: noise on its output.

    Use it right after a noise-free ``nn.Linear``: the pair is one noise site.
    Whether the BN uses batch or running statistics follows ``train()``/``eval()``
    as usual; noise does not.
    """

    def forward(self, input: Tensor) -> Tensor:
        return self.inject(super().forward(input))


class NoisyBatchNorm2d(NoiseSite, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that ends a noisy convolution: noise on its output (conv - BN - noise)."""

    def forward(self, input: Tensor) -> Tensor:
        return self.inject(super().forward(input))


def noise_sites(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(qualified_name, module)`` for every noise site in ``model``.

    Also records each site's qualified name in its ``site_name`` (what a
    :class:`~noisynn.noise.PerSite` model matches on).
    """
    for name, module in model.named_modules():
        if isinstance(module, NoiseSite):
            module.site_name = name
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
    for _, module in noise_sites(model):
        module.noise = resolved
    return model

