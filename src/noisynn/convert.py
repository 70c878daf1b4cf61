"""Turn any torch model into a noisy one, with nothing left clean in silence: :func:`convert`, :func:`inspect`.

:func:`convert` puts a noise site after every matrix product ``torch.nn`` computes:

===========================================  ===========================================
torch.nn                                     becomes
===========================================  ===========================================
``Linear`` (and any subclass), ``Bilinear``  noise on the output (:func:`~noisynn.layers.noisy_class`)
``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d``  noise on the output, bias included
``Linear``/``Conv`` + ``BatchNorm`` in a     one site: noise after the batch-norm (the
``Sequential`` (``fold_batchnorm``)          papers' "conv - BN - noise")
``LSTM``, ``GRU``, ``RNN``                   :mod:`noisynn.recurrent` (noise per gate, per step)
``LSTMCell``, ``GRUCell``, ``RNNCell``       the same, one step
``MultiheadAttention``                       noise after q, k, v, the scores, the weighted
                                             sum and ``out_proj`` (:mod:`noisynn.attention`)
``TransformerEncoderLayer``/``Encoder``      their fused fast paths never bypass the noise
any other module class (yours, HF's)         a *host*: products its own code calls
                                             (``F.linear``, ``matmul``, ``addmm``, ``conv``,
                                             SDPA ...) are caught at run time
                                             (:mod:`noisynn.functional`)
===========================================  ===========================================

Left clean, with the reason in the report: ``Embedding``/``EmbeddingBag`` (a look-up,
not a product), normalisations (``LayerNorm``, ``GroupNorm``, a ``BatchNorm`` with
no product to fold into: element-wise), ``PReLU`` (element-wise), and a linear/conv
folded into the batch-norm after it. Anything else that holds weights and is not
covered is a *gap*: :func:`convert` warns (one line per model, naming the modules)
and ``strict=True`` raises. A host's own weights count as covered when the host is a
known third-party module (HF ``Conv1D``) or when a traced forward pass
(``example_inputs``) saw them used in a caught product (or only element-wise).

:func:`inspect` returns the same :class:`ConversionReport` for any model.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from torch import Tensor, nn

from noisynn import attention as _attention
from noisynn.errors import ModelError
from noisynn.functional import RECORDER, Host, host_class
from noisynn.layers import NOISY_CLASSES, NoiseSite, noise_sites, noisy_class
from noisynn.noise import NoiseModel
from noisynn.recurrent import NoisyGRU, NoisyGRUCell, NoisyLSTM, NoisyLSTMCell, NoisyRNN, NoisyRNNCell

__all__ = ["convert", "inspect", "ConversionReport", "SiteInfo", "CleanModule", "KNOWN_MODULES"]

_MATVEC = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CELLS = {nn.LSTMCell: NoisyLSTMCell, nn.GRUCell: NoisyGRUCell, nn.RNNCell: NoisyRNNCell}
_SWAPPED = {
    nn.MultiheadAttention: _attention.NoisyMultiheadAttention,
    nn.TransformerEncoderLayer: _attention.NoisyTransformerEncoderLayer,
    nn.TransformerEncoder: _attention.NoisyTransformerEncoder,
}
_CLEAN_REASONS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    ((nn.Embedding, nn.EmbeddingBag), "a look-up, not a product"),
    ((nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm, nn.RMSNorm),
     "element-wise normalisation, not a product"),
    (nn.modules.batchnorm._BatchNorm, "element-wise affine normalisation, not a product (no linear/conv right "
                                      "before it in an nn.Sequential to fold into)"),
    (nn.PReLU, "element-wise, not a product"),
)

#: Third-party module classes by ``module:QualName``: ``("host", why)``: their own code's
#: products are caught at run time; ``("clean", why)``: their own weights are not multiplied.
KNOWN_MODULES: dict[str, tuple[str, str]] = {
    "transformers.pytorch_utils:Conv1D": ("host", "torch.addmm on its own weight, caught at run time"),
    "transformers.models.vit.modeling_vit:ViTEmbeddings":
        ("clean", "CLS token and position embeddings are concatenated and added, not multiplied"),
    "transformers.models.vit.modeling_vit:ViTPatchEmbeddings": ("clean", "its projection is an nn.Conv2d site"),
}


@dataclass(frozen=True)
class SiteInfo:
    """One noise site: ``name`` (what :class:`~noisynn.noise.PerSite` matches), the module's
    qualified name and type, what is noisy, and a shape (weight, or output when traced)."""

    name: str
    module: str
    type: str
    product: str
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class CleanModule:
    """A module holding weights that computes exactly, and why; ``gap`` when the reason is unknown."""

    module: str
    type: str
    reason: str
    gap: bool = False


@dataclass
class ConversionReport:
    """What :func:`convert` made noisy and what it left clean.

    Attributes:
        sites: every noise site (module sites, and the run-time sites a trace saw).
        hosts: modules whose own code's products are caught at run time.
        clean: modules with weights that stay exact, each with its reason.
        traced: whether a forward pass was traced (then ``sites`` holds run-time sites).
    """

    sites: list[SiteInfo] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    clean: list[CleanModule] = field(default_factory=list)
    traced: bool = False

    @property
    def gaps(self) -> list[CleanModule]:
        """The clean modules with no known reason (what ``strict=True`` refuses)."""
        return [c for c in self.clean if c.gap]

    def __str__(self) -> str:
        lines = [f"{len(self.sites)} noise sites" + (" (traced)" if self.traced else "")
                 + f", {len(self.hosts)} hosts, {len(self.clean)} modules with weights left clean"
                 + (f", {len(self.gaps)} of them gaps" if self.gaps else "")]
        width = max([len(s.name) for s in self.sites] + [len(c.module) for c in self.clean] + [4])
        lines += [f"  site  {s.name:<{width}}  {s.type:<28} {s.product:<18} {'x'.join(map(str, s.shape))}"
                  for s in self.sites]
        lines += [f"  host  {h or '(root)'}" for h in self.hosts]
        lines += [f"  {'GAP ' if c.gap else 'clean'} {c.module or '(root)':<{width}}  {c.type:<28} {c.reason}"
                  for c in self.clean]
        return "\n".join(lines)


def convert(
    module: nn.Module,
    noise: NoiseModel | None = None,
    *,
    fold_batchnorm: bool = True,
    functional: bool = True,
    strict: bool = False,
    warn: bool = True,
    example_inputs: Sequence[Any] | None = None,
) -> nn.Module:
    """Return a noisy copy of ``module``, a noise site after every matrix product; the original is untouched.

    See the module docstring for what becomes what. With no noise, or ``sigma = 0``,
    the copy computes exactly (``torch.equal``) what the original computes, torch's
    fast paths included.

    Args:
        module: any ``nn.Module``.
        noise: optional noise model set on every site (see :func:`noisynn.set_noise`);
            ``None`` leaves it clean (``with noisynn.noise_model(...)`` still applies).
        fold_batchnorm: a linear/conv directly followed by a batch-norm inside an
            ``nn.Sequential`` (the only container whose child order is its execution
            order) becomes one site with the noise after the batch-norm.
        functional: make modules of other libraries and the user's own classes hosts
            whose own products are caught at run time (:mod:`noisynn.functional`).
        strict: raise :class:`~noisynn.ModelError` if the report has a gap.
        warn: warn (one line) if the report has a gap and ``strict`` is false.
        example_inputs: positional inputs of one forward pass; if given, it is traced
            (clean) to find the run-time sites and to check the hosts' own weights.

    Raises:
        ModelError: ``strict`` and a module with weights is left clean for no known
            reason; or a recurrent layer with a feature noisynn does not simulate
            (``proj_size``).
    """
    model = copy.deepcopy(module)
    model = _convert(model, fold_batchnorm, functional)
    for _, site in noise_sites(model, hosts=True):  # also names every site
        site.noise = noise
    report = inspect(model, *(example_inputs or ()), traced=example_inputs is not None)
    if report.gaps:
        listed = ", ".join(f"{c.module or '(root)'} ({c.type})" for c in report.gaps)
        message = (f"convert: {len(report.gaps)} module(s) with weights stay clean for no known reason: {listed}; "
                   "pass example_inputs=(x,) to trace them, or see noisynn.inspect(model)")
        if strict:
            raise ModelError(message)
        if warn:
            warnings.warn(message, stacklevel=2)
    return model


def _convert(module: nn.Module, fold: bool, functional: bool) -> nn.Module:
    replacement = _replace(module, functional)
    if replacement is not module:
        return replacement
    children = list(module.named_children())
    folded: set[str] = set()  # matvecs folded into the BN after them: stay noise-free
    if fold and isinstance(module, nn.Sequential):
        for (name, child), (_, bn) in itertools.pairwise(children):
            if _plain(child, _MATVEC) and type(bn) in _BATCHNORM:
                folded.add(name)
                child.__class__ = noisy_class(type(child))
                # exact under output noise; the analog product under hardware models
                child.folded = True  # type: ignore[assignment]  # torch types Module.__setattr__ too narrowly
                bn.__class__ = NOISY_CLASSES[type(bn)]  # the BN carries the pair's noise
    for name, child in children:
        if name not in folded:
            setattr(module, name, _convert(child, fold, functional))
    return module


def _plain(module: nn.Module, kinds: tuple[type, ...]) -> bool:
    return isinstance(module, kinds) and not isinstance(module, NoiseSite)


def _replace(module: nn.Module, functional: bool) -> nn.Module:
    """The noisy version of ``module`` (the same object when only its class changes or nothing does)."""
    cls = type(module)
    if isinstance(module, NoiseSite) and not isinstance(module, _attention.NoisyMultiheadAttention):
        return module  # already noisy
    if _plain(module, _MATVEC):
        module.__class__ = noisy_class(cls)
        return module
    if cls in (nn.LSTM, nn.GRU, nn.RNN):
        return _recurrent(cast("nn.LSTM | nn.GRU | nn.RNN", module))
    if cls in _CELLS:
        module.__class__ = _CELLS[cls]
        return module
    if cls in _SWAPPED:
        module.__class__ = _SWAPPED[cls]
        return module  # children (out_proj, linear1, ...) are converted by the caller
    if functional and _is_foreign(cls) and not _known_clean(cls):
        module.__class__ = host_class(cls)
    return module


def _qualname(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_foreign(cls: type) -> bool:
    """A class that is neither torch's nor noisynn's: its own code may compute products."""
    mod = cls.__module__ or ""
    return not (mod == "torch" or mod.startswith(("torch.", "noisynn.")))


def _known_clean(cls: type) -> bool:
    entry = KNOWN_MODULES.get(_qualname(cls))
    return entry is not None and entry[0] == "clean"


def _recurrent(module: nn.LSTM | nn.GRU | nn.RNN) -> nn.Module:
    if getattr(module, "proj_size", 0):
        raise ModelError("convert: nn.LSTM with proj_size > 0 is not supported by NoisyLSTM; use proj_size=0")
    kwargs: dict[str, Any] = dict(
        num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
        dropout=module.dropout, bidirectional=module.bidirectional,
    )
    noisy: nn.Module
    if isinstance(module, nn.LSTM):
        noisy = NoisyLSTM(module.input_size, module.hidden_size, **kwargs)
    elif isinstance(module, nn.GRU):
        noisy = NoisyGRU(module.input_size, module.hidden_size, **kwargs)
    else:
        noisy = NoisyRNN(module.input_size, module.hidden_size, nonlinearity=module.nonlinearity, **kwargs)
    first = module.all_weights[0][0]  # weight_ih_l0
    noisy = noisy.to(device=first.device, dtype=first.dtype)
    noisy.load_state_dict(module.state_dict())
    noisy.train(module.training)
    return noisy


# -- the report ------------------------------------------------------------------------
def inspect(model: nn.Module, *example_inputs: Any, traced: bool | None = None) -> ConversionReport:
    """The sites of ``model`` and every module with weights it computes exactly, with the reason.

    Works on any model (converted, built from noisy layers, or plain torch: then every
    product is reported clean, as a gap). With ``example_inputs``, one clean forward
    pass is traced (in ``eval`` mode, no grad, the model's state restored) and the
    report also lists the run-time sites of the hosts and checks their own weights.
    """
    names = dict(noise_sites(model, hosts=True))  # also names the sites
    report = ConversionReport()
    seen: dict[str, SiteInfo] = {}
    host_use: dict[str, set[str]] = {}
    module: nn.Module  # named_modules() is unannotated in torch
    if example_inputs or traced:
        report.traced = True
        _trace(model, example_inputs, seen, host_use)
    for name, module in model.named_modules():
        if isinstance(module, Host):
            report.hosts.append(name)
        elif isinstance(module, NoiseSite):
            report.sites += _module_sites(name, module)
    report.sites += [s for s in seen.values() if not any(s.name == m.name for m in report.sites)]
    for name, module in model.named_modules():
        reason = _clean_reason(name, module, names, host_use, report.traced)
        if reason is not None:
            report.clean.append(CleanModule(name, _base_class(module).__name__, reason[1], gap=reason[0]))
    return report


def _module_sites(name: str, module: nn.Module) -> list[SiteInfo]:
    kind = type(module).__name__
    if isinstance(module, _attention.NoisyMultiheadAttention):
        e = module.embed_dim
        shapes = {"q": (e, e), "k": (e, module.kdim), "v": (e, module.vdim)}
        return [SiteInfo(f"{name}:{s}", name, kind, s if s in shapes else f"attention {s}", shapes.get(s, ()))
                for s in _attention.ATTENTION_SITES]
    weight = getattr(module, "weight", None) if not isinstance(module, (NoisyLSTM, NoisyGRU, NoisyRNN)) else \
        getattr(module, "weight_hh_l0", None)
    product = "BN(Wx + b) (folded)" if isinstance(module, _BATCHNORM) else "Wx + b"
    if getattr(module, "folded", False):
        product = "Wx, noise after its BN"
    if isinstance(module, (NoisyLSTM, NoisyGRU, NoisyRNN, NoisyLSTMCell, NoisyGRUCell, NoisyRNNCell)):
        product = "gates, every step"
    return [SiteInfo(name, name, kind, product, tuple(weight.shape) if isinstance(weight, Tensor) else ())]


def _clean_reason(name: str, module: nn.Module, sites: dict, host_use: dict[str, set[str]],
                  traced: bool) -> tuple[bool, str] | None:
    """``(gap, reason)`` for a module with its own weights that is not a site; ``None`` otherwise."""
    own = list(module.parameters(recurse=False))
    if not own or (isinstance(module, NoiseSite) and not isinstance(module, Host)):
        return None
    if _plain(module, _MATVEC):
        if _precedes_noisy_bn(name, sites):  # e.g. a network built from noisy layers (cnn6)
            return False, "folded into the batch-norm site after it (noise after the batch-norm)"
        return True, f"{type(module).__name__} is a product with no noise site (run noisynn.convert on the model)"
    for kinds, why in _CLEAN_REASONS:
        if isinstance(module, kinds):
            return False, why
    known = KNOWN_MODULES.get(_qualname(_base_class(module)))
    if known is not None:
        return None if known[0] == "host" else (False, known[1])  # a known host's products are sites
    if isinstance(module, Host):
        uses = host_use.get(name)
        if not uses:
            return True, ("its own weights may be multiplied by code noisynn sees only at run time: "
                          + ("not used in the traced pass" if traced else "pass example_inputs to trace it"))
        if "product" in uses:
            return None  # traced: its weights go through caught products, which are sites
        return False, "its own weights are used element-wise only (traced: " + ", ".join(sorted(uses)) + ")"
    return True, f"{type(module).__name__} holds weights and noisynn has no noisy version of it"


def _base_class(module: nn.Module) -> type:
    """The module's class before noisynn's mixin (a host's original class)."""
    return type(module).__bases__[1] if isinstance(module, Host) else type(module)


def _precedes_noisy_bn(name: str, sites: dict) -> bool:
    parent, _, last = name.rpartition(".")
    if not last.isdigit():
        return False
    after = f"{parent}.{int(last) + 1}" if parent else str(int(last) + 1)
    return isinstance(sites.get(after), tuple(NOISY_CLASSES[b] for b in _BATCHNORM))


def _trace(model: nn.Module, inputs: Sequence[Any], seen: dict[str, SiteInfo], host_use: dict[str, set[str]]) -> None:
    import torch

    from noisynn import functional as fn

    params_of: dict[int, str] = {}
    module: nn.Module  # named_modules() is unannotated in torch
    for name, module in model.named_modules():
        if isinstance(module, Host):
            host_use.setdefault(name, set())
            for p in module.parameters(recurse=False):
                params_of[id(p)] = name

    def record(frame, site, op, y, args) -> None:
        seen.setdefault(site, SiteInfo(site, frame.name, _base_class(frame.host).__name__, op, tuple(y.shape)))
        for a in args:
            owner = params_of.get(id(a))
            if owner is not None:
                host_use[owner].add("product")

    class _ElementWise(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func not in fn.PRODUCTS and func is not fn._SDPA:
                for a in list(args) + list(kwargs.values()):
                    owner = params_of.get(id(a))
                    if owner is not None:
                        host_use[owner].add(getattr(func, "__name__", str(func)))
            return func(*args, **kwargs)

    was_training = model.training
    RECORDER.append(record)
    try:
        model.eval()
        with torch.no_grad(), _ElementWise():
            model(*inputs)
    finally:
        RECORDER.remove(record)
        model.train(was_training)
