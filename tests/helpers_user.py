"""A user's own model factories, data function and noise model, importable as ``helpers_user:NAME``.

The tests put this folder on the path (pytest does for its own process; the CLI tests set
``PYTHONPATH``), as a user's package would be.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from noisynn import NoiseModel


def tiny_mlp(input_shape=(1, 8, 8), hidden: int = 64, classes: int = 10) -> nn.Module:
    """A plain torch MLP (no noise site): noisynn converts it."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(), nn.Linear(hidden, classes))


def not_a_module() -> int:
    return 42


def digits_arrays() -> dict[str, np.ndarray]:
    """The embedded 8x8 digits as the four arrays of a user's data set (uint8-like floats in [0, 1])."""
    from noisynn import data

    train, test = data.load("digits", "train"), data.load("digits", "test")
    return {"x_train": train.x.numpy(), "y_train": train.y.numpy(), "x_test": test.x.numpy(), "y_test": test.y.numpy()}


class UniformNoise(NoiseModel):
    """``y + u``, ``u ~ U(-width, width)``: a noise model whose swept parameter is ``width``, not ``sigma``."""

    def __init__(self, width: float, generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        self.width = float(width)

    def apply(self, y: torch.Tensor, site: str = "") -> torch.Tensor:
        if self.width == 0:
            return y
        u = torch.rand(y.shape, dtype=y.dtype, device=y.device, generator=self.generator)
        return y + (2 * u - 1) * self.width

    def is_identity(self, site: str = "") -> bool:
        return self.width == 0

    def is_clean(self) -> bool:
        return self.width == 0
