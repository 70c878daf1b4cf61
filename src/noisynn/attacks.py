"""L-infinity PGD (iterative FGSM) with random restarts, and an expectation-over-noise option.

The attack of Madry et al. (2018) as used by paper 2, sec. 4 (table 10)::

    attack = noisynn.attacks.PGD(model, eps=0.3, alpha=0.05, steps=20, restarts=20)
    x_adv = attack(x, y)            # same shape as x, |x_adv - x|_inf <= eps, pixels in [0, 1]

    noisynn.attacks.PGD.mnist(model)     # eps 0.3, step 0.05, 20 iterations, 20 restarts
    noisynn.attacks.PGD.cifar10(model)   # eps 8/256, step 2/256, 7 iterations, 10 restarts

Each restart starts from a uniformly random point of the eps-cube around ``x`` (clipped
to the pixel range) and takes ``steps`` signed-gradient ascent steps of size ``alpha``
on the cross-entropy, each followed by a projection onto the eps-cube and the pixel
range. Per sample, the attack returns the first iterate found that the model
misclassifies (over all steps and restarts); a sample never misclassified gets the
final iterate of highest loss. Restart ``r`` draws its random start from ``generator``
as the ``r``-th full-batch draw, so with the same seed the first ``R`` restarts of a
longer attack are exactly the ``R`` restarts of a shorter one: more restarts never make
a deterministic model more accurate.

**Pixel space.** The eps-ball and the clipping are in pixel units on the [0, 1] scale
(the papers' convention). A model that reads per-channel normalised inputs (noisynn's
CIFAR-10) is attacked by giving its ``mean`` and ``std``: ``x`` and the returned
``x_adv`` stay in the normalised space of the data set, the attack itself
de-normalises, perturbs and clips in pixel space, and re-normalises
(:class:`Normalized` wraps a model the same way for other uses).

**Noisy models, EOT.** The attack calls ``model`` as it is: inside a
``with noisynn.noise_model(...)`` block (or with a model's own noise set) every forward pass is
noisy and so is every gradient. ``eot=K`` averages the loss (hence the gradient) over
``K`` independent noisy forward passes per step (expectation over transformation,
Athalye et al. 2018); the success test then uses the mean of the K logits. With a
clean model ``eot > 1`` only costs time.

The model is put in ``eval()`` mode for the attack and restored afterwards; its
parameters receive no gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PGD", "Normalized", "MNIST_SETTINGS", "CIFAR10_SETTINGS"]

#: Paper 2, table 10.
MNIST_SETTINGS = {"eps": 0.3, "alpha": 0.05, "steps": 20, "restarts": 20}
CIFAR10_SETTINGS = {"eps": 8 / 256, "alpha": 2 / 256, "steps": 7, "restarts": 10}


def _channels(values: Sequence[float] | Tensor, like: Tensor) -> Tensor:
    t = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return t.view(1, -1, *([1] * (like.dim() - 2))) if t.dim() == 1 and like.dim() > 2 else t


class Normalized(nn.Module):
    """``model`` preceded by per-channel normalisation: reads pixels in [0, 1]."""

    mean: Tensor  # buffers (registered in __init__)
    std: Tensor

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - _channels(self.mean, x)) / _channels(self.std, x))


class PGD:
    """L-inf projected gradient descent with random restarts (see the module doc).

    Args:
        model: maps a batch of inputs to logits.
        eps: radius of the L-inf ball, in pixel units ([0, 1] scale).
        alpha: step size (pixel units).
        steps: gradient steps per restart (>= 1).
        restarts: random starts (>= 1); the worst case per sample is kept.
        eot: noisy forward passes averaged per step (>= 1).
        random_start: start from a random point of the ball (else from ``x``; then
            all restarts are identical for a clean model).
        mean, std: per-channel normalisation the model expects (see "Pixel space").
        clip: the valid pixel range.
        generator: ``torch.Generator`` for the random starts (reproducible attacks).
    """

    def __init__(self, model: nn.Module, eps: float, alpha: float, steps: int, restarts: int = 1, eot: int = 1, *,
                 random_start: bool = True, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 clip: tuple[float, float] = (0.0, 1.0), generator: torch.Generator | None = None) -> None:
        if not (eps >= 0 and alpha > 0):
            raise ValueError(f"PGD needs eps >= 0 and alpha > 0, got eps={eps}, alpha={alpha}")
        for name, value in (("steps", steps), ("restarts", restarts), ("eot", eot)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"PGD {name} must be an integer >= 1, got {value!r}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (or neither)")
        self.model = model
        self.eps, self.alpha, self.steps, self.restarts, self.eot = float(eps), float(alpha), steps, restarts, eot
        self.random_start = random_start
        self.mean, self.std = mean, std
        self.clip = (float(clip[0]), float(clip[1]))
        self.generator = generator

    @classmethod
    def mnist(cls, model: nn.Module, **kw) -> PGD:
        """Paper 2, table 10, MNIST: eps 0.3, step 0.05, 20 iterations, 20 restarts."""
        return cls(model, **{**MNIST_SETTINGS, **kw})

    @classmethod
    def cifar10(cls, model: nn.Module, **kw) -> PGD:
        """Paper 2, table 10, CIFAR-10: eps 8/256, step 2/256, 7 iterations, 10 restarts."""
        return cls(model, **{**CIFAR10_SETTINGS, **kw})

    def __repr__(self) -> str:
        return (f"PGD(eps={self.eps:g}, alpha={self.alpha:g}, steps={self.steps}, restarts={self.restarts}, "
                f"eot={self.eot})")

    # -- the attack -------------------------------------------------------------------
    def _to_pixels(self, x: Tensor) -> Tensor:
        if self.mean is None or self.std is None:  # both or neither (checked in __init__)
            return x
        return x * _channels(self.std, x) + _channels(self.mean, x)

    def _from_pixels(self, x: Tensor) -> Tensor:
        if self.mean is None or self.std is None:
            return x
        return (x - _channels(self.mean, x)) / _channels(self.std, x)

    def _logits_loss(self, x_pix: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Mean logits over the EOT passes and per-sample mean loss, both (B, ...)."""
        b = x_pix.shape[0]
        inp = self._from_pixels(x_pix)
        if self.eot > 1:
            inp = inp.unsqueeze(0).expand(self.eot, *inp.shape).reshape(self.eot * b, *inp.shape[1:])
        logits = self.model(inp)
        loss = F.cross_entropy(logits, y.repeat(self.eot), reduction="none")
        return logits.view(self.eot, b, -1).mean(0), loss.view(self.eot, b).mean(0)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples for ``(x, y)``: a new tensor like ``x`` (same space as ``x``)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                return self._attack(x.detach(), y.detach())
        finally:
            self.model.train(was_training)

    def _attack(self, x: Tensor, y: Tensor) -> Tensor:
        x0 = self._to_pixels(x)
        lo, hi = self.clip
        low, high = (x0 - self.eps).clamp(lo, hi), (x0 + self.eps).clamp(lo, hi)
        best = x0.clone()
        best_loss = torch.full(y.shape, -float("inf"), device=x.device)
        fooled = torch.zeros(y.shape, dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            if self.random_start:  # a full-batch draw per restart, whatever is left to attack
                u = torch.rand(x0.shape, generator=self.generator, dtype=x0.dtype, device=x0.device)
                start = (x0 + (2 * u - 1) * self.eps).clamp(lo, hi)
            else:
                start = x0
            active = ~fooled
            if not active.any():
                continue
            idx = active.nonzero().squeeze(1)
            xa, ya, la, ha = start[idx], y[idx], low[idx], high[idx]
            for step in range(self.steps + 1):
                xa.requires_grad_(True)
                logits, loss = self._logits_loss(xa, ya)
                wrong = logits.argmax(-1) != ya
                hit = wrong & ~fooled[idx]
                if hit.any():  # first misclassified iterate of each sample: keep it for good
                    best[idx[hit]] = xa.detach()[hit]
                    fooled[idx[hit]] = True
                if step == self.steps:
                    break
                (grad,) = torch.autograd.grad(loss.sum(), xa)
                xa = torch.minimum(torch.maximum(xa.detach() + self.alpha * grad.sign(), la), ha)
            last = loss.detach()
            better = ~fooled[idx] & (last > best_loss[idx])
            if better.any():
                best[idx[better]] = xa.detach()[better]
                best_loss[idx[better]] = last[better]
        return self._from_pixels(best).detach()
