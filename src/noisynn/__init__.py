"""noisynn: neural networks under noisy analog computation.

Noise models (:mod:`noisynn.noise`, built by name with :func:`noise_model`), noisy drop-ins for ``torch.nn`` layers
(:mod:`noisynn.layers`, :mod:`noisynn.recurrent`), a converter for any torch model
(:func:`convert`), batched noisy repeats (:func:`repeat_forward`) and the networks of
Qin & Vucinic (:mod:`noisynn.models`).

Example::

    import torch, noisynn

    model = noisynn.build_model("lstm-rows").eval()
    x = torch.rand(32, 28, 28)
    with noisynn.noise_model("additive", 0.5):  # every noise site, this block only
        logits = model(x)                     # (32, 10), noisy
    votes = noisynn.repeat_forward(model, x, 20)  # clean here: (20, 32, 10)
"""

from typing import TYPE_CHECKING, Any

from noisynn.attention import NoisyMultiheadAttention, NoisyTransformerEncoder, NoisyTransformerEncoderLayer
from noisynn.convert import ConversionReport, convert, inspect
from noisynn.errors import CheckpointError, DataError, ModelError, NoisynnError
from noisynn.layers import (
    NoiseSite,
    NoisyBatchNorm1d,
    NoisyBatchNorm2d,
    NoisyBatchNorm3d,
    NoisyBilinear,
    NoisyConv1d,
    NoisyConv2d,
    NoisyConv3d,
    NoisyConvTranspose1d,
    NoisyConvTranspose2d,
    NoisyConvTranspose3d,
    NoisyLinear,
    noise_sites,
    set_noise,
)
from noisynn.models import MODELS, build_model, count_parameters
from noisynn.noise import (  # the module itself stays noisynn.noise (callable, deprecated, as noise_model)
    Additive,
    Clean,
    GaussianNoise,
    Multiplicative,
    NoiseModel,
    PerSite,
    Product,
    check_sigma,
    clean,
    noise_model,
    reference,
)
from noisynn.recurrent import NoisyGRU, NoisyGRUCell, NoisyLSTM, NoisyLSTMCell, NoisyRNN, NoisyRNNCell
from noisynn.repeat import repeat_forward

__version__ = "0.1.0"

if TYPE_CHECKING:
    from noisynn.api import evaluate, sweep, vote

_ENGINE_API = ("evaluate", "vote", "sweep")


def __getattr__(name: str) -> Any:
    """``evaluate``, ``vote`` and ``sweep`` import the engine (the ``engine`` extra) at first use.

    So ``import noisynn`` and the layers need only torch and numpy.
    """
    if name in _ENGINE_API:
        from noisynn import api

        return getattr(api, name)
    raise AttributeError(f"module 'noisynn' has no attribute {name!r}")

__all__ = [
    "Additive", "Clean", "Multiplicative", "NoiseModel", "PerSite", "noise_model", "clean", "check_sigma",
    "GaussianNoise", "Product", "reference",
    "NoiseSite", "NoisyLinear", "NoisyBilinear", "NoisyConv1d", "NoisyConv2d", "NoisyConv3d",
    "NoisyConvTranspose1d", "NoisyConvTranspose2d", "NoisyConvTranspose3d",
    "NoisyBatchNorm1d", "NoisyBatchNorm2d", "NoisyBatchNorm3d",
    "NoisyLSTM", "NoisyGRU", "NoisyRNN", "NoisyLSTMCell", "NoisyGRUCell", "NoisyRNNCell",
    "NoisyMultiheadAttention", "NoisyTransformerEncoderLayer", "NoisyTransformerEncoder",
    "set_noise", "noise_sites", "convert", "inspect", "ConversionReport", "repeat_forward",
    "MODELS", "build_model", "count_parameters",
    "NoisynnError", "DataError", "ModelError", "CheckpointError", "__version__",
    "evaluate", "vote", "sweep",
]
