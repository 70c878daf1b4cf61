"""A custom noise model, trained against and swept with ``noisynn.sweep``.

What it shows: a new kind of noise is a subclass of ``noisynn.NoiseModel`` with an
``apply(y, site)`` method and a parameter (here ``sigma``); no layer changes. The model
below adds Gaussian noise whose standard deviation is ``sigma`` times the largest
``|y|`` of each row of the pre-activation (of each sample's output vector), as an analog
array whose read-out range is set per product. ``noisynn.sweep`` trains one model per
sigma_train with that noise (Deep Noise Injection) and evaluates every
(sigma_train, sigma_val) point with repeated noisy passes. The model factory is your own
(a function building a plain torch MLP, converted by noisynn); the data are the embedded
digits (an ``.npz``, ``(x, y)`` tensors or a DataLoader work too).

Run: ``python examples/04_custom_noise_model.py`` (under 30 s on 2 CPU cores).
"""

import time

import torch
from torch import nn

import noisynn

torch.set_num_threads(1)  # a tiny model: one thread is fastest (and much faster on a busy machine)
start = time.perf_counter()


class RowMaxRelative(noisynn.NoiseModel):
    """``y + sigma * max|y_row| * z``, ``z ~ N(0, 1)``: noise relative to each row's largest magnitude."""

    def __init__(self, sigma: float, generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        self.sigma = noisynn.check_sigma(sigma)

    def apply(self, y: torch.Tensor, site: str = "") -> torch.Tensor:
        if self.sigma == 0:
            return y
        rows = y.flatten(1) if y.dim() > 1 else y[None]  # one row per sample: all its outputs
        scale = rows.detach().abs().amax(dim=1).view(-1, *([1] * (y.dim() - 1)))  # a constant of the backward
        z = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=self.generator)
        return y + self.sigma * scale * z

    def is_identity(self, site: str = "") -> bool:  # sigma 0: the layers' exact path, bit-identical
        return self.sigma == 0

    def is_clean(self) -> bool:
        return self.sigma == 0


def mlp(input_shape=(1, 8, 8)) -> nn.Module:
    """Your model factory: a plain torch MLP (noisynn converts it)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


table = noisynn.sweep(mlp, "digits", noise=RowMaxRelative(0.0), sigma_train="0,0.2", sigma_val="0:0.6:0.15",
                      runs=10, epochs=12, lr=2e-3, device="cpu")
sigma_vals = sorted({r["sigma_val"] for r in table})
print("accuracy (%) under RowMaxRelative noise, mean over 10 noisy passes of the 360 test digits")
print("sigma_train \\ sigma_val " + "".join(f"{s:>8.2f}" for s in sigma_vals))
for st in sorted({r["sigma_train"] for r in table}):
    cells = {r["sigma_val"]: r["accuracy"] for r in table if r["sigma_train"] == st and r["kind"] == "noisy"}
    print(f"{st:>23.2f} " + "".join(f"{100 * cells[s]:8.2f}" for s in sigma_vals))
print(f"done in {time.perf_counter() - start:.1f} s")
