"""Noisy evaluation and voting over a whole test set, with batched repeats.

A *run* is one independent noisy pass over the whole test set; its accuracy is one
sample. Runs are computed in fixed groups of :data:`RUN_GROUP`, all the runs of a group
in one batched forward pass per test batch (:func:`noisynn.repeat_forward`), each group
drawing from its own noise stream seeded by (seed, sigma_train, sigma_val, group). The
numbers therefore do not depend on how many runs fit in memory at once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from noisynn import data as datasets
from noisynn.engine import validation
from noisynn.engine.plugins import NoiseFamily, resolve_noise
from noisynn.engine.seeding import generator
from noisynn.noise import NoiseModel, check_sigma
from noisynn.repeat import repeat_forward

__all__ = ["RUN_GROUP", "PointResult", "evaluate_point", "vote_curve", "majority_vote", "mean_stderr", "parse_sigmas",
           "parse_range"]

#: Runs computed together in one batched pass (and sharing one noise stream).
RUN_GROUP = 10
#: Largest number of samples sent through the model in one call (bounds peak memory).
MAX_BATCH = 20_000


@dataclass(frozen=True)
class PointResult:
    """The runs of one evaluated point."""

    accuracies: tuple[float, ...]
    seconds: float

    @property
    def n_runs(self) -> int:
        return len(self.accuracies)

    @property
    def accuracy(self) -> float:
        return mean_stderr(self.accuracies)[0]

    @property
    def stderr(self) -> float:
        return mean_stderr(self.accuracies)[1]


def mean_stderr(values) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for fewer than two values)."""
    values = list(values)
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def _correct_per_run(model: nn.Module, test: datasets.Dataset, repeats: int, batch_size: int) -> torch.Tensor:
    correct = torch.zeros(repeats, dtype=torch.int64, device=test.y.device)
    for xb, yb in datasets.batches(test, batch_size, shuffle=False):
        logits = repeat_forward(model, xb, repeats, max_batch=MAX_BATCH)  # (R, B, C)
        correct += (logits.argmax(-1) == yb).sum(1)
    return correct


@torch.inference_mode()
def evaluate_point(
    model: nn.Module,
    test: datasets.Dataset,
    kind: str | NoiseModel | NoiseFamily,
    sigma_val: float,
    *,
    runs: int | str = 40,
    seed: int = 0,
    stream: tuple = (),
    batch_size: int = 1000,
    target: float = 0.0005,
    max_runs: int = 200,
) -> PointResult:
    """Accuracy of ``model`` on ``test`` under noise, over independent runs.

    Args:
        model: the network (put in ``eval()`` mode here: batch-norm uses running statistics).
        test: the test set (on the model's device).
        kind, sigma_val: the inference noise: ``additive``/``multiplicative``, ``pkg.module:Class``,
            a :class:`~noisynn.NoiseModel` or a :class:`~noisynn.engine.plugins.NoiseFamily`,
            at ``sigma_val`` of its swept parameter.
        runs: number of runs, or ``"auto"``: add groups of :data:`RUN_GROUP` runs until
            the 95% confidence half-width of the mean accuracy falls below ``target``
            (a fraction: 0.0005 = 0.05 percentage points) or ``max_runs`` is reached.
            Where the noise is clean (``sigma_val = 0`` for the papers' kinds) inference is
            deterministic and one run is exact.
        seed, stream: identify the noise streams: ``(seed, *stream, sigma_val, group)``.
        batch_size: test samples per batch (times the group's runs per forward call).
    """
    sigma_val = check_sigma(sigma_val)
    family = resolve_noise(kind)
    model.eval()
    auto = runs == "auto"
    if auto:
        wanted = max_runs
    elif isinstance(runs, int) and runs >= 1:
        wanted = runs
    else:
        raise ValueError(f"runs must be a positive integer or 'auto', got {runs!r}")
    if family.at(sigma_val).is_clean():
        wanted = 1
    device = test.x.device
    t0 = time.perf_counter()
    accs: list[float] = []
    group = 0
    while len(accs) < wanted:
        r = min(RUN_GROUP, wanted - len(accs))
        gen = generator(seed, *stream, float(sigma_val), group, device=device)
        with family.at(sigma_val, generator=gen):
            correct = _correct_per_run(model, test, r, batch_size)
        accs += (correct.double() / len(test)).tolist()
        group += 1
        if auto and len(accs) >= 2 * RUN_GROUP:
            _, se = mean_stderr(accs)
            if 1.96 * se < target:
                break
    return PointResult(tuple(accs), time.perf_counter() - t0)


@torch.inference_mode()
def vote_curve(
    model: nn.Module,
    test: datasets.Dataset,
    kind: str | NoiseModel | NoiseFamily,
    sigma_val: float,
    votes: int,
    *,
    trials: int = 1,
    seed: int = 0,
    stream: tuple = (),
    batch_size: int = 500,
) -> tuple[torch.Tensor, float]:
    """Accuracy of majority voting over K = 1..``votes`` noisy inferences.

    Each test sample is classified ``votes`` times with independent noise; the
    prediction with K votes is the mode of the first K predictions, ties broken by the
    larger summed softmax (paper 2, sec. 3.3). Repeated over ``trials`` independent
    trials (one noise stream each).

    Returns:
        ``(accuracy[trial, K - 1], seconds)``: a ``(trials, votes)`` float tensor.
    """
    sigma_val = check_sigma(sigma_val)
    family = resolve_noise(kind)
    if votes < 1 or trials < 1:
        raise ValueError(f"votes and trials must be >= 1, got {votes} and {trials}")
    model.eval()
    device = test.x.device
    t0 = time.perf_counter()
    result = torch.zeros(trials, votes, dtype=torch.float64)
    for trial in range(trials):
        correct = torch.zeros(votes, dtype=torch.int64, device=device)
        gen = generator(seed, *stream, float(sigma_val), "vote", trial, device=device)
        with family.at(sigma_val, generator=gen):
            for xb, yb in datasets.batches(test, batch_size, shuffle=False):
                logits = repeat_forward(model, xb, votes, max_batch=MAX_BATCH)  # (K, B, C)
                correct += (majority_vote(logits) == yb).sum(1)
        result[trial] = correct.double().cpu() / len(test)
    return result, time.perf_counter() - t0


def majority_vote(logits: torch.Tensor) -> torch.Tensor:
    """Decisions of majority voting after each number of votes.

    Args:
        logits: ``(K, B, C)``, the outputs of K independent noisy inferences.

    Returns:
        ``(K, B)`` int64: row ``k - 1`` is the mode of the first ``k`` predictions,
        ties broken by the larger summed softmax over those ``k`` inferences.
    """
    k = logits.shape[0]
    probs = logits.float().softmax(-1)
    one_hot = torch.zeros_like(probs).scatter_(-1, probs.argmax(-1, keepdim=True), 1.0)
    counts = one_hot.cumsum(0)  # votes of each class after 1..K inferences
    ks = torch.arange(1, k + 1, device=logits.device, dtype=probs.dtype).view(k, 1, 1)
    tie_break = probs.cumsum(0) / (ks + 1)  # in [0, 1): decides only between equal counts
    return (counts + tie_break).argmax(-1)


def parse_range(text: str, name: str | None = None) -> list[float]:
    """Parse ``"0:1:0.1"`` (start:stop:step, stop included) or ``"0,0.5,1"`` into sigmas.

    ``name`` (a preset key or an option) prefixes the message. The rules are
    :mod:`noisynn.engine.validation`'s: finite parts, at most ``MAX_SIGMAS`` values, each
    sigma finite, >= 0 and within float32's range.

    Raises:
        ValueError: malformed text, a range that is not finite or gives too many values, or
            a sigma that breaks the rules.
    """
    raw = str(text).strip()
    try:
        return _range_values(raw)
    except ValueError as exc:
        message = str(exc).splitlines()[0]
        raise ValueError(f"{name}: {message}" if name else message) from None


def _range_values(text: str) -> list[float]:
    malformed = ValueError(f"malformed sigma range {text!r}: use start:stop:step (e.g. 0:1:0.1) or a list (0,0.5,1)")
    if ":" in text:
        try:
            parts = [float(p) for p in text.split(":")]
        except ValueError:
            raise malformed from None
        if len(parts) != 3:
            raise malformed
        start, stop, step = parts
        n = validation.sigma_count(start, stop, step, text)  # finite, and a sane count
        if n == 0:
            raise malformed
        values = [round(start + i * step, 9) for i in range(n)]
    else:
        try:
            values = [float(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise malformed from None
        if not values:
            raise malformed
    return validation.sigma_list(values, f"sigma list {text!r}")


def parse_sigmas(value, name: str | None = None) -> list[float]:
    """A sigma list from a range string, a number or a list of numbers (``name`` prefixes the message).

    Raises:
        ValueError: as :func:`parse_range`; an empty list; a value of another type (a bool, a table).
    """
    if isinstance(value, str):
        return parse_range(value, name)
    what = validation.show(name, value) if name else f"sigmas {value!r}"
    if isinstance(value, (bool, dict)) or value is None:
        raise ValueError(f"{what}: give a range such as \"0:1:0.1\", a list such as [0, 0.5, 1] or one number")
    if isinstance(value, (int, float)):
        values = [value]
    else:
        try:
            values = list(value)
        except TypeError:
            raise ValueError(f"{what}: give a range such as \"0:1:0.1\", a list such as [0, 0.5, 1] or one "
                             "number") from None
    try:
        return validation.sigma_list(values, what)
    except ValueError as exc:
        message = str(exc).splitlines()[0]
        raise ValueError(message if message.startswith(what) else f"{what}: {message}") from None
