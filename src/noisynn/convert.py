"""Turn any torch model into a noisy one: :func:`convert`."""

from __future__ import annotations

import copy

from torch import nn

from noisynn.layers import (
    NoisyBatchNorm1d,
    NoisyBatchNorm2d,
    NoisyConv2d,
    NoisyLinear,
    noise_sites,
)
from noisynn.noise import NoiseModel
from noisynn.recurrent import NoisyGRU, NoisyLSTM, NoisyRNN

__all__ = ["convert"]

# torch class -> noisy subclass that keeps the same state (swapped in place of the class)
_SUBCLASS = {
    nn.Linear: NoisyLinear,
    nn.Conv2d: NoisyConv2d,
    nn.BatchNorm1d: NoisyBatchNorm1d,
    nn.BatchNorm2d: NoisyBatchNorm2d,
}
_MATVEC = (nn.Linear, nn.Conv2d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)


def convert(module: nn.Module, noise: NoiseModel | None = None, *, fold_batchnorm: bool = True) -> nn.Module:
    """Return a noisy copy of ``module``; the original is left untouched.

    Replaces, at any depth, every ``nn.Linear``, ``nn.Conv2d``, ``nn.LSTM``, ``nn.RNN``
    and ``nn.GRU`` with its noisy equivalent carrying the same weights. When
    ``fold_batchnorm`` is true and a linear/conv layer is directly followed by a
    ``nn.BatchNorm1d/2d`` *inside an ``nn.Sequential``* (the only container whose
    child order is its execution order), the pair becomes one noise site with the
    noise after the batch-norm (the papers' "conv - BN - noise" order): the conv stays
    a plain layer and the batch-norm becomes a ``NoisyBatchNorm``.

    With no noise, or ``sigma = 0``, the copy computes exactly (``torch.equal``) what
    the original computes.

    Args:
        module: any ``nn.Module``.
        noise: optional noise model set on every site of the copy (see
            :func:`noisynn.set_noise`); ``None`` leaves it clean.
        fold_batchnorm: put the noise after a batch-norm that follows a linear/conv.

    Raises:
        ValueError: a recurrent layer with a feature noisynn does not simulate
            (``proj_size``).
    """
    model = copy.deepcopy(module)
    model = _convert_in_place(model, fold_batchnorm)
    for _, site in noise_sites(model):  # also names every site
        site.noise = noise
    return model


def _convert_in_place(module: nn.Module, fold: bool) -> nn.Module:
    replacement = _noisy_version(module)
    if replacement is not None:
        return replacement
    children = list(module.named_children())
    exact: set[str] = set()  # matvecs folded into the BN after them: stay noise-free
    if fold and isinstance(module, nn.Sequential):
        for (name, child), (bn_name, bn) in zip(children, children[1:]):
            if type(child) in _MATVEC and type(bn) in _BATCHNORM:
                exact.add(name)
                bn.__class__ = _SUBCLASS[type(bn)]  # the BN carries the pair's noise
    for name, child in children:
        if name not in exact:
            setattr(module, name, _convert_in_place(child, fold))
    return module


def _noisy_version(module: nn.Module) -> nn.Module | None:
    """The noisy replacement of a convertible leaf, or ``None`` to recurse into it."""
    if type(module) in _MATVEC:
        module.__class__ = _SUBCLASS[type(module)]  # same state; forward + noise
        return module
    if type(module) in (nn.LSTM, nn.GRU, nn.RNN):
        return _recurrent(module)
    return None


def _recurrent(module: nn.RNNBase) -> nn.Module:
    if getattr(module, "proj_size", 0):
        raise ValueError("convert: nn.LSTM with proj_size > 0 is not supported by NoisyLSTM; use proj_size=0")
    kwargs = dict(
        num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
        dropout=module.dropout, bidirectional=module.bidirectional,
    )
    if isinstance(module, nn.LSTM):
        noisy = NoisyLSTM(module.input_size, module.hidden_size, **kwargs)
    elif isinstance(module, nn.GRU):
        noisy = NoisyGRU(module.input_size, module.hidden_size, **kwargs)
    else:
        noisy = NoisyRNN(module.input_size, module.hidden_size, nonlinearity=module.nonlinearity, **kwargs)
    noisy = noisy.to(device=module.weight_ih_l0.device, dtype=module.weight_ih_l0.dtype)
    noisy.load_state_dict(module.state_dict())
    noisy.train(module.training)
    return noisy

