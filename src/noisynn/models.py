r"""The papers' networks, by name.

====================  ==============  ===========  =========================================
name                  input           parameters   source
====================  ==============  ===========  =========================================
``lstm-rows``         (28, 28)        81,674       paper 1, table I (MNIST rows)
``lstm-strokes``      (50, 2)         68,362       paper 1, table II; paper 2, sec. 3.1
``rnn-rows``          (28, 28)        21,386       paper 1, table III
``cnn6``              (1, 28, 28)     330,410*     paper 2, table 1 (MNIST)
``densenet40``        (3, 32, 32)     1,019,722    paper 2, sec. 3.1 (CIFAR-10)
``densenet100``       (3, 32, 32)     6,979,642    paper 2, sec. 4 (CIFAR-10, adversarial)
``madry-cnn4``        (1, 28, 28)     3,274,634    Madry et al. 2018 (paper 2, sec. 4)
``transformer-rows``  (28, 28)        81,690       beyond the papers (docs/transformer.md)
====================  ==============  ===========  =========================================

\* 330,410 with trainable batch-norm (multiplicative noise); 329,514 with the fixed
batch-norm paper 2 uses for additive noise. The papers state no count for cnn6 and
the DenseNets; those are what the architectures described give.

Every network is built from noisy layers, so its noise sites are exactly the
papers' (each class docstring names them); by default they are clean. Use
:func:`build_model` to make one and :func:`noisynn.set_noise` or ``with
noisynn.noise_model(...)`` to make it noisy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import Tensor, nn

from noisynn.convert import convert
from noisynn.errors import ModelError
from noisynn.layers import NoisyBatchNorm1d, NoisyBatchNorm2d, NoisyConv2d, NoisyLinear, noise_sites
from noisynn.recurrent import NoisyGRU, NoisyLSTM, NoisyRNN

__all__ = [
    "RecurrentClassifier",
    "CNN6",
    "MadryCNN4",
    "DenseNet",
    "TransformerClassifier",
    "transformer_parameters",
    "ModelSpec",
    "MODELS",
    "build_model",
    "count_parameters",
]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (what the papers' tables count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class _Network(nn.Module):
    """Base of the papers' networks: checks the input shape, names its noise sites."""

    input_shape: tuple[int, ...] = ()
    name = ""

    def _check_input(self, x: Tensor) -> None:
        want = self.input_shape
        if not isinstance(x, Tensor) or x.dim() != len(want) + 1 or tuple(x.shape[1:]) != want:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ModelError(
                f"{self.name or type(self).__name__} expects input of shape "
                f"(batch, {', '.join(map(str, want))}), got {got}"
            )

    def _name_sites(self) -> None:
        for _ in noise_sites(self):
            pass


_Folded = TypeVar("_Folded", NoisyConv2d, NoisyLinear)


def _folded(layer: _Folded) -> _Folded:
    """Mark a linear/conv whose noise the batch-norm after it carries (see ``noisynn.layers``)."""
    layer.folded = True
    return layer


class RecurrentClassifier(_Network):
    """A recurrent layer read out by a fully connected layer at the last time step.

    Noise sites: the recurrent layer (every gate pre-activation at every step, see
    :mod:`noisynn.recurrent`) and the output layer ``fc``: five matrix-vector
    products per step for an LSTM (paper 1, sec. III-A).

    Args:
        cell: ``"lstm"``, ``"rnn"`` or ``"gru"``.
        steps, input_size: sequence length and features per step.
        hidden_size, num_classes: as in the papers, 128 and 10.
        single_bias: one bias per gate, as the papers' parameter counts show.

    Input: ``(batch, steps, input_size)``. Output: logits ``(batch, num_classes)``.
    """

    def __init__(self, cell: str = "lstm", steps: int = 28, input_size: int = 28,
                 hidden_size: int = 128, num_classes: int = 10, single_bias: bool = True) -> None:
        super().__init__()
        layer = {"lstm": NoisyLSTM, "rnn": NoisyRNN, "gru": NoisyGRU}.get(cell)
        if layer is None:
            raise ModelError(f"unknown recurrent cell {cell!r}: use 'lstm', 'rnn' or 'gru'")
        self.input_shape = (steps, input_size)
        self.rnn = layer(input_size, hidden_size, batch_first=True, single_bias=single_bias)
        self.fc = NoisyLinear(hidden_size, num_classes)
        self._name_sites()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


class CNN6(_Network):
    """The 6-layer CNN of paper 2, table 1 (MNIST).

    ``[conv3x3 - BN - noise - ReLU] x 2 (32 ch) - maxpool - [same] x 2 (64 ch) - maxpool
    - FC 256 - BN - noise - ReLU - FC 10 - noise``. Noise sites: the five batch-norms
    (each closes its conv/FC, "conv - BN - noise") and the output layer. The convs and
    the first FC have no bias: the batch-norm right after makes one redundant.

    Args:
        batchnorm_affine: trainable BN scale/shift (paper 2 for multiplicative noise);
            ``False`` fixes ``beta = 0, gamma = 1`` (paper 2 for additive noise).
        in_channels, image_size, num_classes: MNIST defaults 1, 28, 10.
    """

    def __init__(self, batchnorm_affine: bool = True, in_channels: int = 1,
                 image_size: int = 28, num_classes: int = 10) -> None:
        super().__init__()
        self.input_shape = (in_channels, image_size, image_size)

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [_folded(NoisyConv2d(cin, cout, 3, bias=False)), NoisyBatchNorm2d(cout, affine=batchnorm_affine),
                    nn.ReLU()]

        self.features = nn.Sequential(
            *block(in_channels, 32), *block(32, 32), nn.MaxPool2d(2),
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
        )
        side = ((image_size - 4) // 2 - 4) // 2
        if side <= 0:
            raise ModelError(f"cnn6 needs images of at least 12x12 pixels, got {image_size}x{image_size}")
        self.classifier = nn.Sequential(
            nn.Flatten(),
            _folded(NoisyLinear(64 * side * side, 256, bias=False)), NoisyBatchNorm1d(256, affine=batchnorm_affine),
            nn.ReLU(),
            NoisyLinear(256, num_classes),
        )
        self._name_sites()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.classifier(self.features(x))


class MadryCNN4(_Network):
    """The 4-layer MNIST CNN of Madry et al. (2018), the adversary's model in paper 2.

    ``conv5x5-32 (same) - ReLU - maxpool - conv5x5-64 (same) - ReLU - maxpool - FC 1024
    - ReLU - FC 10``: 3,274,634 parameters. Noise sites: both convs and both FCs.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> None:
        super().__init__()
        self.input_shape = (in_channels, image_size, image_size)
        side = image_size // 4
        self.features = nn.Sequential(
            NoisyConv2d(in_channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            NoisyConv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), NoisyLinear(64 * side * side, 1024), nn.ReLU(), NoisyLinear(1024, num_classes),
        )
        self._name_sites()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.classifier(self.features(x))


class _DenseLayer(nn.Module):
    """BN - ReLU - conv3x3 (noisy) producing ``growth`` new feature maps."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = NoisyConv2d(channels, growth, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.conv(torch.relu(self.bn(x)))], 1)


class _Transition(nn.Module):
    """BN - ReLU - conv1x1 (noisy) - avgpool 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = NoisyConv2d(channels, channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(torch.relu(self.bn(x))))


class DenseNet(_Network):
    """DenseNet for CIFAR-10 (Huang et al. 2017), the original (non-BC) variant.

    Three dense blocks of ``(depth - 4) / 3`` BN-ReLU-conv3x3 layers each, with growth
    rate ``growth``; a 16-channel first conv; transitions BN-ReLU-conv1x1-avgpool;
    BN-ReLU-global average pool-FC. Depth 40 / growth 12 has 1,019,722 parameters
    (paper 2: "around one million"). Noise sites: every convolution and the output
    layer (paper 2: "after each matrix-vector multiplication"); the batch-norms come
    *before* the convs here (pre-activation), so nothing is folded.
    """

    def __init__(self, depth: int = 40, growth: int = 12, num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32) -> None:
        super().__init__()
        if (depth - 4) % 3:
            raise ModelError(f"DenseNet depth must be 3n + 4, got {depth}")
        self.input_shape = (in_channels, image_size, image_size)
        per_block = (depth - 4) // 3
        channels = 16
        layers: list[nn.Module] = [NoisyConv2d(in_channels, channels, 3, padding=1, bias=False)]
        for block in range(3):
            for _ in range(per_block):
                layers.append(_DenseLayer(channels, growth))
                channels += growth
            if block < 2:
                layers.append(_Transition(channels))
        layers += [nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc = NoisyLinear(channels, num_classes)
        self._name_sites()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.fc(self.features(x))


def transformer_parameters(steps: int = 28, input_size: int = 28, d_model: int = 64, layers: int = 2,
                           ff: int = 168, num_classes: int = 10) -> int:
    """Trainable parameters of :class:`TransformerClassifier` (81,690 with the defaults).

    ``embed (i d + d) + positions (T d) + layers (4 d^2 + 4 d [attention: q, k, v, out]
    + 2 d f + f + d [feed-forward] + 4 d [two layer norms]) + final norm 2 d + head (d c + c)``.
    """
    d, f = d_model, ff
    per_layer = (4 * d * d + 4 * d) + (2 * d * f + f + d) + 4 * d
    return (input_size * d + d) + steps * d + layers * per_layer + 2 * d + (d * num_classes + num_classes)


class TransformerClassifier(_Network):
    """A small transformer encoder reading an image row by row: each row is one token.

    ``rows (T x i) - embed: NoisyLinear i -> d - + learned position embedding - 2 x
    pre-norm encoder layer [x + MHA(LN(x)); x + FF(LN(x))] - LN - mean over the tokens -
    head: NoisyLinear d -> 10``. ``d = 64``, 4 heads (16 features each), feed-forward
    width 168 (ReLU): 168 makes the parameter count 81,690, the LSTM's 81,674 within
    16 (formula: :func:`transformer_parameters`). No dropout (the papers' networks have
    none; the training noise regularises).

    Pre-norm (``norm_first``), as in most current transformers: it trains at lr 1e-3
    without warm-up. Mean pooling instead of a CLS token keeps every weight in a
    module whose product is a site or that is clean for a known reason (the position
    embedding is an ``nn.Embedding``, a look-up, added to the tokens).

    Noise sites (every matrix product): ``embed``; per layer ``encoder.layers.N.self_attn:q``,
    ``:k``, ``:v``, ``:scores`` (Q K^T / sqrt(16), per head, before the softmax),
    ``:weighted_sum`` (A V, per head), ``encoder.layers.N.self_attn.out_proj``,
    ``encoder.layers.N.linear1``, ``encoder.layers.N.linear2``; and ``head``: 2 + 8 x 2 = 18.
    The encoder is torch's ``nn.TransformerEncoder`` passed through
    :func:`noisynn.convert`, so its fused inference fast path runs when every site is
    clean (bit-identical) and never while any site is noisy. Layer norms, the position
    embedding and the residual additions are exact.

    Args:
        steps, input_size: tokens (rows) and features per token: 28 x 28 for MNIST, 8 x 8
            for the embedded digits.
        d_model, heads, ff, layers, num_classes: the encoder's sizes.

    Input: ``(batch, steps, input_size)``. Output: logits ``(batch, num_classes)``.
    """

    def __init__(self, steps: int = 28, input_size: int = 28, d_model: int = 64, heads: int = 4, ff: int = 168,
                 layers: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        if d_model % heads:
            raise ModelError(f"transformer: d_model {d_model} is not a multiple of heads {heads}")
        self.input_shape = (steps, input_size)
        self.embed = NoisyLinear(input_size, d_model)
        self.positions = nn.Embedding(steps, d_model)
        nn.init.normal_(self.positions.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout=0.0, batch_first=True, norm_first=True)
        encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.encoder = convert(encoder, None, strict=True)
        self.head = NoisyLinear(d_model, num_classes)
        self._name_sites()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        tokens = self.embed(x) + self.positions.weight
        return self.head(self.encoder(tokens).mean(dim=1))


@dataclass(frozen=True)
class ModelSpec:
    """A registered network.

    Attributes:
        name: registry name (``noisynn models`` lists them).
        build: ``build(**options) -> nn.Module``.
        input_shape: shape of one sample.
        dataset: the data set the papers use it with.
        params: the paper's parameter count, when it states one exactly.
        source: where in the papers it is defined.
    """

    name: str
    build: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    dataset: str
    params: int | None
    source: str
    options: dict = field(default_factory=dict)


def _cnn6(noise_kind: str | None = None, **kw) -> CNN6:
    # paper 2: trainable BN for multiplicative noise, fixed (beta=0, gamma=1) for additive
    kw.setdefault("batchnorm_affine", noise_kind != "additive")
    return CNN6(**kw)


_SPECS = [
    ModelSpec("lstm-rows", lambda **kw: RecurrentClassifier("lstm", **{"steps": 28, "input_size": 28, **kw}),
              (28, 28), "mnist", 81_674, "paper 1, table I"),
    ModelSpec("lstm-strokes", lambda **kw: RecurrentClassifier("lstm", **{"steps": 50, "input_size": 2, **kw}),
              (50, 2), "mnist-strokes", 68_362, "paper 1, table II; paper 2, sec. 3.1"),
    ModelSpec("rnn-rows", lambda **kw: RecurrentClassifier("rnn", **{"steps": 28, "input_size": 28, **kw}),
              (28, 28), "mnist", 21_386, "paper 1, table III"),
    ModelSpec("cnn6", _cnn6, (1, 28, 28), "mnist", None, "paper 2, table 1"),
    ModelSpec("densenet40", lambda **kw: DenseNet(40, 12, **kw), (3, 32, 32), "cifar10", None,
              "paper 2, sec. 3.1 (depth 40, growth 12)"),
    ModelSpec("densenet100", lambda **kw: DenseNet(100, 12, **kw), (3, 32, 32), "cifar10", None,
              "paper 2, sec. 4 (depth 100, growth 12)"),
    ModelSpec("madry-cnn4", MadryCNN4, (1, 28, 28), "mnist", 3_274_634, "Madry et al. 2018; paper 2, sec. 4"),
    ModelSpec("transformer-rows", TransformerClassifier, (28, 28), "mnist", None,
              "beyond the papers (docs/transformer.md)"),
]

#: Registry of the papers' networks, by name.
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


def build_model(name: str, *, noise_kind: str | None = None, **options) -> nn.Module:
    """Build a registered network by name, with fresh (seeded by torch) weights.

    Args:
        name: a key of :data:`MODELS` (``noisynn models`` lists them).
        noise_kind: the noise kind it will be trained with; only ``cnn6`` uses it
            (fixed batch-norm for ``"additive"``, as in paper 2).
        **options: passed to the network's class (e.g. ``input_size=8, steps=8``
            for the embedded 8x8 digits).

    Raises:
        ModelError: unknown name, or options the network does not take.
    """
    spec = MODELS.get(name)
    if spec is None:
        raise ModelError(f"unknown model {name!r}: choose one of {', '.join(MODELS)} (see `noisynn models`)")
    try:
        model = spec.build(noise_kind=noise_kind, **options) if name == "cnn6" else spec.build(**options)
    except TypeError as exc:
        raise ModelError(f"model {name!r} does not take these options {sorted(options)}: {exc}") from None
    model.name = name  # type: ignore[assignment]  # torch types Module.__setattr__ too narrowly
    return model
