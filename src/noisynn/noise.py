"""Noise models: what analog computation does to a pre-activation.

A *noise site* is a place in a network right after a matrix-vector multiplication
(bias included, and a batch-norm folded into it included). Every noisy layer of
:mod:`noisynn.layers` and :mod:`noisynn.recurrent` is a site; at every call it hands
its clean pre-activation ``y`` to the *active noise model*, which returns the noisy one.

The two models of the papers (Qin & Vucinic, eqs. 2 and 3):

* :class:`Additive`: ``y + z``, ``z ~ N(0, sigma^2)``, independent of the signal;
* :class:`Multiplicative`: ``y * z``, ``z ~ N(1, sigma^2)``, i.e. SNR = 1 / sigma^2.

Noise is drawn fresh for every call, every time step, every element. It is controlled
independently of ``train()`` / ``eval()``:

* per model, persistently: ``noisynn.set_noise(model, noisynn.Additive(0.5))``;
* for a block of code, overriding every site of every model::

      with noisynn.noise_model("multiplicative", 0.3):
          logits = model(x)

  ``with noisynn.clean(): ...`` forces noise-free computation the same way.

New kinds (per-layer sigma, noise relative to the signal, quantisation, ...) are new
subclasses of :class:`NoiseModel`; the layers never change. :class:`PerSite` is an
example: it routes each site to its own model by the site's qualified name.

Fast paths. On the CPU (float32) the two Gaussian kinds run faster code that draws the
same distribution (different samples): a parallel counter-based sampler inside
:meth:`Additive.apply` / :meth:`Multiplicative.apply` for tensors of at least
``noisynn.kernels.MIN_ELEMENTS`` elements, and a fused LSTM step that draws the noise
itself. A layer takes such a path only when the model describes its noise through
:meth:`NoiseModel.gaussian`; a new subclass does not by default, so it always goes
through :meth:`NoiseModel.apply`. :func:`reference` (``noisynn.reference``;
``with reference(): ...``) or the environment variable
``NOISYNN_REFERENCE=1`` runs the plain reference code instead: ``apply`` at every site
and step, ``Tensor.normal_`` for the noise.
"""

from __future__ import annotations

import contextvars
import fnmatch
import math
import sys
import types
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from noisynn import kernels
from noisynn.kernels import reference, reference_active

__all__ = [
    "NoiseModel",
    "Product",
    "GaussianNoise",
    "Clean",
    "Additive",
    "Multiplicative",
    "PerSite",
    "noise_model",
    "noise",
    "clean",
    "check_sigma",
    "from_config",
    "active_override",
    "reference",
    "reference_active",
    "KINDS",
]

#: Names accepted by :func:`noise_model` for the two papers' noise models.
KINDS = ("additive", "multiplicative")


def check_sigma(sigma: Any) -> float:
    """Return ``sigma`` as a float, or raise ``ValueError`` naming the bad value.

    Args:
        sigma: the noise standard deviation; must be a finite real number ``>= 0``.
    """
    if isinstance(sigma, bool):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    if value > _FLOAT32_MAX:
        raise ValueError(f"sigma {value:g} is beyond float32's range (largest {_FLOAT32_MAX:.3g}): the noise would "
                         "be infinite; give a smaller sigma")
    return value


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


_OVERRIDE: contextvars.ContextVar[NoiseModel | None] = contextvars.ContextVar(
    "noisynn_noise_override", default=None
)


def active_override() -> NoiseModel | None:
    """The noise model set by the innermost ``with`` block, or ``None`` outside any."""
    return _OVERRIDE.get()


class GaussianNoise(NamedTuple):
    """What :meth:`NoiseModel.gaussian` returns: the noise at a site is i.i.d. Gaussian.

    Attributes:
        kind: ``"additive"`` (``y + sigma z``) or ``"multiplicative"`` (``y (1 + sigma z)``),
            ``z ~ N(0, 1)`` fresh for every element, call and step.
        sigma: the standard deviation.
        generator: the ``torch.Generator`` to draw from (``None``: torch's default).
    """

    kind: str
    sigma: float
    generator: torch.Generator | None


class Product(NamedTuple):
    """One matrix product, as a noise site hands it to a model that computes products itself.

    ``op(x, weight, bias)`` is the exact product (``F.linear``, a convolution). Dimension
    1 of ``weight`` is its input (the rows of a crossbar), contracted with dimension
    ``in_dim`` of ``x``. When ``splittable``, slices of that input dimension give partial
    products that add up (what tiles of limited size need).

    Attributes:
        x, weight, bias, op, in_dim, splittable: as above.
        training: the site's ``training`` flag (hardware models re-draw weight noise
            per call in training, and keep one chip's weights in evaluation).
        key: identifies the weight for caching (the site's parameter).
    """

    x: Tensor
    weight: Tensor
    bias: Tensor | None
    op: Any
    in_dim: int = -1
    splittable: bool = True
    training: bool = False
    key: Any = None

    def exact(self, x: Tensor | None = None, weight: Tensor | None = None, bias: Any = "same") -> Tensor:
        """``op`` on the given (or the product's own) input, weight and bias."""
        return self.op(self.x if x is None else x, self.weight if weight is None else weight,
                       self.bias if bias == "same" else bias)


class NoiseModel:
    """Base class of noise models.

    Subclasses implement :meth:`apply`. A noise model is also a context manager that
    makes it the active model of every noise site while the block runs.

    Args:
        generator: optional ``torch.Generator`` the noise is drawn from (on the same
            device as the signal); ``None`` uses torch's default generator, so
            ``torch.manual_seed`` makes runs reproducible.
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator
        self._tokens: list[contextvars.Token] = []

    def apply(self, y: Tensor, site: str = "") -> Tensor:
        """Return the noisy version of the clean pre-activation ``y`` at ``site``.

        Must not modify ``y`` in place when ``y`` requires grad; must treat the noise
        as a constant in the backward pass.
        """
        raise NotImplementedError

    def apply_(self, y: Tensor, site: str = "") -> Tensor:
        """:meth:`apply` on a ``y`` the caller owns and will not read again: it may be overwritten.

        The layers call this on their fresh outputs. The default returns :meth:`apply`;
        the Gaussian models add their noise into ``y`` in place when autograd does not
        need ``y`` (same values as :meth:`apply` from the same generator state), which
        saves allocating and writing a second tensor of the layer's output size.
        """
        return self.apply(y, site)

    def is_identity(self, site: str = "") -> bool:
        """True when :meth:`apply` would return ``y`` unchanged at ``site``.

        Layers then take their exact noise-free path (bit-identical to ``torch.nn``).
        """
        return False

    def computes_products(self, site: str = "") -> bool:
        """True when the model computes whole products (:meth:`product`) rather than noising their result.

        The extension point for noise that acts on the weights or inside the product
        (programming noise, drift, DAC/ADC, tiles: :mod:`noisynn.hardware`). A site
        that can describe its product as a :class:`Product` then calls
        :meth:`product` instead of computing it and calling :meth:`apply`; the site
        stays the one place where noise happens. The default is ``False``.
        """
        return False

    def product(self, p: Product, site: str = "") -> Tensor:
        """The product ``p`` as the modelled hardware computes it (default: exact, then :meth:`apply`)."""
        return self.apply(p.exact(), site)

    def is_clean(self) -> bool:
        """True when :meth:`apply` is the identity at *every* site.

        Used where the sites are not known in advance (products caught at run time in
        a converted model's own code, see :mod:`noisynn.convert`): those run exactly,
        with torch's own fast paths, only when this is true. The default is ``False``
        (safe: the products are then intercepted and :meth:`apply` decides per site).
        """
        return False

    # -- parameters: what sweeps vary and what the results store records ----------
    def params(self) -> dict[str, Any]:
        """The model's parameters as JSON-able values (what :meth:`config` records).

        The default takes every public attribute that is a number, string, bool or
        ``None`` (so ``sigma``), and nested noise models as their :meth:`config`.
        """
        out: dict[str, Any] = {}
        for key, value in vars(self).items():
            if key.startswith("_") or key == "generator":
                continue
            if isinstance(value, NoiseModel):
                out[key] = value.config()
            elif value is None or isinstance(value, (bool, int, float, str)):
                out[key] = value
        return out

    def config(self) -> dict[str, Any]:
        """``{"class": "module:QualName", "params": {...}}``: enough to rebuild the model.

        :func:`from_config` inverts it; the results store and checkpoints record it.
        """
        cls = type(self)
        return {"class": f"{cls.__module__}:{cls.__qualname__}", "params": self.params()}

    def with_params(self, **params: Any) -> NoiseModel:
        """A copy with some parameters changed (``with_params(sigma=0.3)``): what a sweep varies.

        Raises:
            ValueError: a name that is not one of :meth:`params`, or a bad value
                (checked by the class's constructor).
        """
        current = self.params()
        unknown = sorted(set(params) - set(current))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no parameter {', '.join(map(repr, unknown))}: "
                f"its parameters are {', '.join(current) or 'none'}"
            )
        return from_config({"class": self.config()["class"], "params": {**current, **params}})

    def with_sigma(self, sigma: float) -> NoiseModel:
        """A copy at noise level ``sigma`` (``with_params(sigma=sigma)``); :class:`PerSite` overrides."""
        return self.with_params(sigma=check_sigma(sigma))

    def gaussian(self, site: str = "") -> GaussianNoise | None:
        """Describe the noise at ``site`` as one of the papers' Gaussian kinds, or ``None``.

        A capability for fused fast paths: a layer that gets a :class:`GaussianNoise`
        may draw that noise itself, anywhere it is equivalent (e.g. inside a fused LSTM
        step), instead of calling :meth:`apply`. The default is ``None``: the layer
        calls :meth:`apply`, so a new kind of noise needs nothing more than ``apply``.
        """
        return None

    # -- context manager: make this the active model of every site -----------------
    def __enter__(self) -> NoiseModel:
        self._tokens.append(_OVERRIDE.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _OVERRIDE.reset(self._tokens.pop())

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_tokens"] = []
        state["generator"] = None  # generators are neither picklable nor shareable
        return state

    def __deepcopy__(self, memo: dict) -> NoiseModel:
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__getstate__())
        new.generator = self.generator
        return new


class Clean(NoiseModel):
    """No noise at all: every site computes exactly what ``torch.nn`` computes."""

    def apply(self, y: Tensor, site: str = "") -> Tensor:
        return y

    def is_identity(self, site: str = "") -> bool:
        return True

    def is_clean(self) -> bool:
        return True

    def with_sigma(self, sigma: float) -> NoiseModel:
        return self  # no parameter: clean at every sigma

    def __repr__(self) -> str:
        return "Clean()"

    def __eq__(self, other: object) -> bool:
        return type(other) is Clean

    def __hash__(self) -> int:
        return hash("Clean")


class _Gaussian(NoiseModel):
    """Shared part of the two Gaussian models: a validated ``sigma``."""

    kind = ""

    def __init__(self, sigma: float, generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        self.sigma = check_sigma(sigma)

    def is_identity(self, site: str = "") -> bool:
        return self.sigma == 0.0

    def is_clean(self) -> bool:
        return self.sigma == 0.0

    def gaussian(self, site: str = "") -> GaussianNoise | None:
        # a subclass that redefines apply() defines its own noise: it gets apply() calls
        if _defining_class(type(self), "apply") not in (Additive, Multiplicative):
            return None
        return GaussianNoise(self.kind, self.sigma, self.generator)

    def apply_(self, y: Tensor, site: str = "") -> Tensor:
        if (self.sigma != 0.0 and _defining_class(type(self), "apply") in (Additive, Multiplicative)
                and not (y.requires_grad and torch.is_grad_enabled()) and y.is_contiguous() and self._use_fast(y)):
            return kernels.gaussian_noise_(y, self.kind, self.sigma, self.generator)
        return self.apply(y, site)  # a subclass's own apply(), autograd, or torch's sampler

    def _use_fast(self, y: Tensor) -> bool:
        """Whether :meth:`apply` may use the fast sampler for ``y`` (:func:`noisynn.kernels.fast_path` decides)."""
        return kernels.fast_path(y, generator=self.generator, min_elements=kernels.MIN_ELEMENTS)

    def _normal(self, y: Tensor, mean: float) -> Tensor:
        """A fresh tensor like ``y`` filled with N(mean, sigma^2) samples (no grad)."""
        z = torch.empty(y.shape, dtype=y.dtype, device=y.device)
        return z.normal_(mean, self.sigma, generator=self.generator)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma:g})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.sigma == self.sigma

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.sigma))


class Additive(_Gaussian):
    """Additive Gaussian noise, ``y + z`` with ``z ~ N(0, sigma^2)`` (paper eq. 2).

    Models noise whose power does not depend on the signal: sensing, read-out,
    electrical perturbation.

    Args:
        sigma: standard deviation of ``z``; finite, ``>= 0``.
        generator: optional ``torch.Generator`` to draw from.
    """

    kind = "additive"

    def apply(self, y: Tensor, site: str = "") -> Tensor:
        if self.sigma == 0.0:
            return y
        if self._use_fast(y):
            return kernels.gaussian_noise(y, self.kind, self.sigma, self.generator)
        z = self._normal(y, 0.0)
        return z.add_(y)  # in place into the fresh noise buffer: y is left untouched


class Multiplicative(_Gaussian):
    """Multiplicative Gaussian noise, ``y * z`` with ``z ~ N(1, sigma^2)`` (paper eq. 3).

    Equivalent to additive noise of standard deviation ``sigma * |y|``: a constant
    signal-to-noise ratio ``SNR = 1 / sigma^2`` (0 dB at ``sigma = 1``).

    Args:
        sigma: standard deviation of ``z``; finite, ``>= 0``.
        generator: optional ``torch.Generator`` to draw from.
    """

    kind = "multiplicative"

    def apply(self, y: Tensor, site: str = "") -> Tensor:
        if self.sigma == 0.0:
            return y
        if self._use_fast(y):
            return kernels.gaussian_noise(y, self.kind, self.sigma, self.generator)
        z = self._normal(y, 1.0)
        if y.requires_grad:
            return y * z  # autograd keeps z for the backward pass
        return z.mul_(y)

    @property
    def snr_db(self) -> float:
        """Signal-to-noise power ratio in dB, ``10 log10(1 / sigma^2)``."""
        return math.inf if self.sigma == 0 else -20.0 * math.log10(self.sigma)


class PerSite(NoiseModel):
    """Route each noise site to its own model, by glob pattern on the site's name.

    Site names are the modules' qualified names in the model (``"rnn"``, ``"fc"``,
    ``"features.3"``), assigned by :func:`noisynn.set_noise`.

    Args:
        rules: ``{pattern: NoiseModel}``, first match wins (``fnmatch`` patterns).
        default: the model for sites no pattern matches (clean if ``None``).

    Example::

        noisynn.set_noise(model, PerSite({"rnn": Additive(0.5)}, default=Additive(0.1)))
    """

    def __init__(self, rules: Mapping[str, NoiseModel], default: NoiseModel | None = None) -> None:
        super().__init__(None)
        self.rules = dict(rules)
        self.default = default if default is not None else Clean()

    def resolve(self, site: str) -> NoiseModel:
        """The model that applies at ``site``."""
        for pattern, model in self.rules.items():
            if fnmatch.fnmatchcase(site, pattern):
                return model
        return self.default

    def apply(self, y: Tensor, site: str = "") -> Tensor:
        return self.resolve(site).apply(y, site)

    def is_identity(self, site: str = "") -> bool:
        return self.resolve(site).is_identity(site)

    def is_clean(self) -> bool:
        return self.default.is_clean() and all(m.is_clean() for m in self.rules.values())

    def params(self) -> dict[str, Any]:
        return {"rules": {p: m.config() for p, m in self.rules.items()}, "default": self.default.config()}

    def with_params(self, **params: Any) -> NoiseModel:
        """``rules`` / ``default`` replace those of this model; other names go to every sub-model that has them."""
        own = {k: params.pop(k) for k in ("rules", "default") if k in params}
        base = PerSite(own.get("rules", self.rules), own.get("default", self.default))
        if own and not params:
            return base
        missing = [k for k in params if not any(k in m.params() for m in (*base.rules.values(), base.default))]
        if missing:
            raise ValueError(f"no model of this PerSite has parameter {', '.join(map(repr, missing))}")

        def update(m: NoiseModel) -> NoiseModel:
            mine = {k: v for k, v in params.items() if k in m.params()}
            return m.with_params(**mine) if mine else m

        return PerSite({p: update(m) for p, m in base.rules.items()}, update(base.default))

    def with_sigma(self, sigma: float) -> NoiseModel:
        """Every sub-model that has a ``sigma`` gets this one (clean ones stay clean)."""
        sigma = check_sigma(sigma)

        def update(m: NoiseModel) -> NoiseModel:
            return m.with_sigma(sigma) if "sigma" in m.params() or isinstance(m, PerSite) else m

        return PerSite({p: update(m) for p, m in self.rules.items()}, update(self.default))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PerSite) and other.rules == self.rules and other.default == self.default

    def __hash__(self) -> int:
        return hash(("PerSite", tuple(self.rules), self.default))

    def gaussian(self, site: str = "") -> GaussianNoise | None:
        return self.resolve(site).gaussian(site)

    def computes_products(self, site: str = "") -> bool:
        return self.resolve(site).computes_products(site)

    def product(self, p: Product, site: str = "") -> Tensor:
        return self.resolve(site).product(p, site)

    def __repr__(self) -> str:
        return f"PerSite({self.rules!r}, default={self.default!r})"


def noise_model(
    kind: str | NoiseModel | None,
    sigma: float | None = None,
    *,
    generator: torch.Generator | None = None,
) -> NoiseModel:
    """Build a noise model by name; the result is also a context manager.

    Args:
        kind: ``"additive"``, ``"multiplicative"``, ``"none"``/``None`` (clean), or an
            existing :class:`NoiseModel` (returned as it is).
        sigma: the standard deviation (required for the Gaussian kinds).
        generator: optional ``torch.Generator`` to draw from.

    Raises:
        ValueError: unknown kind, or ``sigma`` not a finite number ``>= 0``.

    Example::

        with noisynn.noise_model("additive", 0.5):
            out = model(x)
    """
    if isinstance(kind, NoiseModel):
        return kind
    if kind is None or kind == "none":
        return Clean()
    if kind == "additive":
        return Additive(_required(sigma, kind), generator)
    if kind == "multiplicative":
        return Multiplicative(_required(sigma, kind), generator)
    raise ValueError(f"unknown noise kind {kind!r}: use one of {', '.join(KINDS)} or 'none'")


def _required(sigma: float | None, kind: str) -> float:
    if sigma is None:
        raise ValueError(f"noise kind {kind!r} needs a sigma, e.g. noise_model({kind!r}, 0.5)")
    return check_sigma(sigma)


def from_config(config: Mapping[str, Any]) -> NoiseModel:
    """Rebuild a noise model from :meth:`NoiseModel.config` (``{"class": "mod:Name", "params": {...}}``).

    Nested configs among the parameters (``PerSite``'s rules and default) are rebuilt too.

    Raises:
        ValueError: the class cannot be imported, is not a :class:`NoiseModel`, or does
            not take these parameters.
    """
    import importlib

    if not isinstance(config, Mapping) or not isinstance(config.get("class"), str) or ":" not in config["class"]:
        raise ValueError(f"a noise config needs a 'class' of the form 'module:Name', got {config!r}")
    module_name, _, qualname = config["class"].partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"noise class {config['class']!r} cannot be imported ({exc})") from None
    if not (isinstance(obj, type) and issubclass(obj, NoiseModel)):
        raise ValueError(f"{config['class']!r} is not a noisynn.NoiseModel subclass")
    params = dict(config.get("params") or {})
    if obj is PerSite:
        rules = {p: from_config(c) for p, c in (params.get("rules") or {}).items()}
        default = params.get("default")
        return PerSite(rules, from_config(default) if default is not None else None)
    params = {k: from_config(v) if isinstance(v, Mapping) and "class" in v else v for k, v in params.items()}
    try:
        return obj(**params)
    except TypeError as exc:
        raise ValueError(f"noise class {config['class']!r} does not take parameters {sorted(params)} ({exc})") from None


def clean() -> Clean:
    """Context manager that makes every noise site noise-free while it is active."""
    return Clean()


def _defining_class(cls: type, name: str) -> type | None:
    """The class in ``cls``'s MRO whose body defines attribute ``name``."""
    return next((c for c in cls.__mro__ if name in c.__dict__), None)


#: The builder's name inside this module (``from noisynn.noise import noise``), kept for older code.
noise = noise_model


class _CallableModule(types.ModuleType):
    """This module, callable as the builder it was shadowed by before 0.2: ``noisynn.noise("additive", 0.5)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> NoiseModel:
        warnings.warn("noisynn.noise(...) is deprecated: call noisynn.noise_model(...) (noisynn.noise is the module)",
                      DeprecationWarning, stacklevel=2)
        return noise_model(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
