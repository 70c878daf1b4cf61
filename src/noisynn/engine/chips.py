"""Chips as a dimension: accuracy over C programmed chips x R noisy reads of each (issue 17).

A hardware noise model with a ``chip`` parameter (:class:`noisynn.hardware.PCM`) *is* one
chip: ``chip`` (with the model's ``seed``) fixes its programming noise, drift exponents and
1/f realisation, site by site, so ``with_params(chip=k)`` is chip ``k``, the same in every
process. A *read* is one pass over the whole test set, drawing only the per-read noise
(output noise, ADC, ...) afresh. :func:`evaluate_chips` programs C chips, reads each R
times and reports both spreads:

* **chip-to-chip spread**: the standard deviation of the C per-chip mean accuracies
  (what a buyer of one chip risks);
* **read-to-read spread**: the mean over chips of the standard deviation of one chip's R
  read accuracies (what re-reading the same chip changes).

Both are sample standard deviations (``n - 1``), 0 with a single chip / read.
:func:`time_sweep` repeats that over time after programming and with / without global
drift compensation: the same chips at every time (their programming and drift exponents do
not depend on ``t``), and the same per-read noise streams, so differences between times
are the drift's.

Seeds: chip ``k``'s reads draw from a generator seeded by ``(seed, "chip-reads", k)``
(:func:`noisynn.engine.seeding.generator`); the R reads of a chip run as one batched pass
per test batch (:func:`noisynn.repeat_forward`), each copy its own read.

Example::

    from noisynn.engine.chips import evaluate_chips, time_sweep
    from noisynn.hardware import PCM

    res = evaluate_chips(model, test, PCM(inp_bits=8, out_bits=8, out_noise=0.04), chips=5, reads=4, t=86400)
    print(res.mean, res.chip_spread, res.read_spread)
    rows = time_sweep(model, test, PCM(inp_bits=8, out_bits=8), chips=5, reads=4)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from noisynn import data as datasets
from noisynn.engine.seeding import generator
from noisynn.noise import NoiseModel, PerSite
from noisynn.repeat import repeat_forward

__all__ = ["ChipsResult", "TimePoint", "evaluate_chips", "vote_chips", "time_sweep", "TIMES"]

#: 1 s, 1 hour, 1 day, 1 month (30 days), 1 year (365 days): seconds after programming.
TIMES = (1.0, 3600.0, 86400.0, 2592000.0, 31536000.0)
#: Largest number of samples sent through the model in one call (R reads x a test batch).
MAX_BATCH = 20_000


def _std(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2 or max(values) == min(values):
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass(frozen=True)
class ChipsResult:
    """Accuracies of C chips x R reads.

    Attributes:
        accuracies: ``accuracies[c][r]``: read ``r`` of chip ``chips[c]`` (a fraction).
        chips: the chip numbers (the noise model's ``chip`` parameter).
        seconds: wall time of the evaluation.
    """

    accuracies: tuple[tuple[float, ...], ...]
    chips: tuple[int, ...]
    seconds: float = 0.0

    @property
    def n_chips(self) -> int:
        return len(self.accuracies)

    @property
    def n_reads(self) -> int:
        return len(self.accuracies[0]) if self.accuracies else 0

    @property
    def chip_means(self) -> tuple[float, ...]:
        """Each chip's mean accuracy over its reads."""
        return tuple(sum(reads) / len(reads) for reads in self.accuracies)

    @property
    def mean(self) -> float:
        """Mean accuracy over all chips and reads."""
        means = self.chip_means
        return sum(means) / len(means)

    @property
    def chip_spread(self) -> float:
        """Chip-to-chip spread: the sample std of the per-chip mean accuracies."""
        return _std(self.chip_means)

    @property
    def read_spread(self) -> float:
        """Read-to-read spread: the mean over chips of the sample std of one chip's reads."""
        return sum(_std(reads) for reads in self.accuracies) / len(self.accuracies)

    def as_dict(self) -> dict[str, Any]:
        return {"accuracy": self.mean, "chip_spread": self.chip_spread, "read_spread": self.read_spread,
                "chips": self.n_chips, "reads": self.n_reads, "per_chip": list(self.chip_means),
                "accuracies": [list(r) for r in self.accuracies], "seconds": self.seconds}


@dataclass(frozen=True)
class TimePoint:
    """One row of :func:`time_sweep`: the chips at ``t`` seconds after programming."""

    t: float
    compensation: bool
    result: ChipsResult

    @property
    def accuracy(self) -> float:
        return self.result.mean

    @property
    def chip_spread(self) -> float:
        return self.result.chip_spread

    @property
    def read_spread(self) -> float:
        return self.result.read_spread

    def as_dict(self) -> dict[str, Any]:
        return {"t": self.t, "compensation": self.compensation, **self.result.as_dict()}


def _has_param(noise: NoiseModel, name: str) -> bool:
    if isinstance(noise, PerSite):
        return any(_has_param(m, name) for m in (*noise.rules.values(), noise.default))
    return name in noise.params()


def _set_generator(noise: NoiseModel, gen: torch.Generator) -> None:
    """Every (sub-)model draws its per-read noise from ``gen``."""
    if isinstance(noise, PerSite):
        for m in (*noise.rules.values(), noise.default):
            _set_generator(m, gen)
    else:
        noise.generator = gen


def _chip_model(noise: NoiseModel, chip: int, overrides: dict[str, Any]) -> NoiseModel:
    """Chip ``chip`` of ``noise`` (a model without a ``chip`` parameter is its only chip, 0)."""
    if _has_param(noise, "chip"):
        return noise.with_params(chip=chip, **overrides)
    return noise.with_params(**overrides) if overrides else noise.with_params()


def _chip_ids(noise: NoiseModel, chips: int | Iterable[int]) -> tuple[int, ...]:
    """The chip numbers asked for, checked against the model (one chip, 0, if it has no ``chip`` parameter)."""
    if not isinstance(noise, NoiseModel):
        raise ValueError(f"chips need a noisynn.NoiseModel (e.g. noisynn.hardware.PCM), got {noise!r}")
    chip_ids = tuple(range(_check_count("chips", chips))) if isinstance(chips, int) else tuple(chips)
    if not chip_ids or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in chip_ids):
        raise ValueError(f"chips must be a count >= 1 or chip numbers >= 0, got {chips!r}")
    if not _has_param(noise, "chip") and chip_ids != (0,):
        raise ValueError(f"{type(noise).__name__} has no 'chip' parameter (its weights are exact: every chip is the "
                         f"same), so it is one chip: give chips=1, or a model with programming noise such as "
                         f"noisynn.hardware.PCM")
    return chip_ids


def _overrides(noise: NoiseModel, t: float | None, compensation: bool | None) -> dict[str, Any]:
    """``t`` / ``compensation`` to set on the chip model (each only if given; refused if the model lacks it)."""
    out: dict[str, Any] = {}
    for name, value in (("t", None if t is None else float(t)),
                        ("compensation", None if compensation is None else bool(compensation))):
        if value is None:
            continue
        if not _has_param(noise, name):
            raise ValueError(f"{type(noise).__name__} has no {name!r} parameter: leave {name} unset")
        out[name] = value
    return out


def _correct(model: nn.Module, test: datasets.Dataset, copies: int, batch_size: int,
             predict: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Correct answers of ``copies`` noisy reads of the whole test set, one batched pass per
    test batch: ``predict`` turns the ``(copies, B, C)`` logits into ``(copies, B)`` answers."""
    correct = torch.zeros(copies, dtype=torch.int64, device=test.y.device)
    for xb, yb in datasets.batches(test, batch_size, shuffle=False):
        logits = repeat_forward(model, xb, copies, max_batch=MAX_BATCH)
        correct += (predict(logits) == yb).sum(1)
    return correct


def _each_chip(model: nn.Module, test: datasets.Dataset, noise: NoiseModel, chip_ids: tuple[int, ...],
               overrides: dict[str, Any], seed: int, stream: tuple, purpose: str,
               read: Callable[[], torch.Tensor]) -> tuple[list[torch.Tensor], float]:
    """``read()`` with each chip's noise model active (``model`` in ``eval()``, no autograd),
    chip ``k``'s per-read noise drawn from ``(seed, *stream, purpose, k)``; ``model``'s mode
    is restored after. Returns the per-chip results and the seconds taken."""
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    results = []
    try:
        with torch.inference_mode():
            for chip in chip_ids:
                chip_model = _chip_model(noise, chip, overrides)
                _set_generator(chip_model, generator(seed, *stream, purpose, chip, device=test.x.device))
                with chip_model:
                    results.append(read())
    finally:
        model.train(was_training)
    return results, time.perf_counter() - t0


def _top1(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1)


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def evaluate_chips(
    model: nn.Module,
    test: datasets.Dataset,
    noise: NoiseModel,
    *,
    chips: int | Iterable[int] = 4,
    reads: int = 5,
    t: float | None = None,
    compensation: bool | None = None,
    seed: int = 0,
    stream: tuple = (),
    batch_size: int = 1000,
) -> ChipsResult:
    """Program ``chips`` chips and read each ``reads`` times over the whole test set.

    Args:
        model: the network (put in ``eval()`` mode for the evaluation, its mode restored after).
        test: the test set (on the model's device).
        noise: a hardware noise model with a ``chip`` parameter (:class:`~noisynn.hardware.PCM`,
            or a :class:`~noisynn.noise.PerSite` holding such models).
        chips: how many chips (numbers 0 .. C-1) or the chip numbers themselves.
        reads: noisy reads per chip (each one pass over the test set).
        t, compensation: if given, override the model's time after programming (s) and
            global drift compensation.
        seed, stream: seed the per-read noise (chip ``k``'s reads: ``(seed, *stream, "chip-reads", k)``;
            the sweep's ``stream`` is the weights' SHA-256, as for its other points).
        batch_size: test samples per batch (times ``reads`` per forward call).

    Returns:
        :class:`ChipsResult` (mean accuracy, both spreads, every (chip, read) accuracy).

    Raises:
        ValueError: bad counts; more than one chip of a model without a ``chip`` parameter
            (:class:`~noisynn.hardware.Crossbar`: its weights are exact, it is one chip);
            ``t`` / ``compensation`` given for a model without them.
    """
    chip_ids = _chip_ids(noise, chips)
    reads = _check_count("reads", reads)
    per_chip, seconds = _each_chip(model, test, noise, chip_ids, _overrides(noise, t, compensation), seed, stream,
                                   "chip-reads", lambda: _correct(model, test, reads, batch_size, _top1))
    return ChipsResult(tuple(tuple((c.double() / len(test)).tolist()) for c in per_chip), chip_ids, seconds)


def vote_chips(
    model: nn.Module,
    test: datasets.Dataset,
    noise: NoiseModel,
    votes: int,
    *,
    chips: int | Iterable[int] = 4,
    t: float | None = None,
    compensation: bool | None = None,
    seed: int = 0,
    stream: tuple = (),
    batch_size: int = 500,
) -> tuple[torch.Tensor, tuple[int, ...], float]:
    """Majority voting over K = 1..``votes`` reads of each chip (paper 2, sec. 3.3, on a programmed chip).

    Each test sample is read ``votes`` times on the same chip (its programming, drift and
    1/f noise fixed, the per-read noise fresh); the prediction with K votes is the mode of
    the first K reads (:func:`noisynn.engine.evaluation.majority_vote`). Voting averages
    out only what changes between reads: what the chip's programming did stays.

    Returns:
        ``(accuracy[chip, K - 1], chip numbers, seconds)``; chip ``k``'s reads draw from
        ``(seed, *stream, "chip-votes", k)``.
    """
    from noisynn.engine.evaluation import majority_vote

    chip_ids = _chip_ids(noise, chips)
    votes = _check_count("votes", votes)
    per_chip, seconds = _each_chip(model, test, noise, chip_ids, _overrides(noise, t, compensation), seed, stream,
                                   "chip-votes", lambda: _correct(model, test, votes, batch_size, majority_vote))
    return torch.stack([c.double().cpu() / len(test) for c in per_chip]), chip_ids, seconds


def time_sweep(
    model: nn.Module,
    test: datasets.Dataset,
    noise: NoiseModel,
    *,
    times: Iterable[float] = TIMES,
    compensation: Iterable[bool] = (False, True),
    chips: int | Iterable[int] = 4,
    reads: int = 5,
    seed: int = 0,
    batch_size: int = 1000,
    log: Any = None,
) -> list[TimePoint]:
    """:func:`evaluate_chips` at every time after programming, with and without drift compensation.

    The same chips and per-read noise streams at every point. ``log``: optional callable
    given one line per point. Returns one :class:`TimePoint` per (compensation, t), in that
    order (``row.as_dict()`` for a table).
    """
    chip_ids = _chip_ids(noise, chips)
    rows = []
    for comp in compensation:
        for t in times:
            res = evaluate_chips(model, test, noise, chips=chip_ids, reads=reads, t=float(t), compensation=bool(comp),
                                 seed=seed, batch_size=batch_size)
            row = TimePoint(float(t), bool(comp), res)
            rows.append(row)
            if log is not None:
                log(f"t={t:g} s compensation={comp}: accuracy {res.mean:.4f} chip spread {res.chip_spread:.4f} "
                    f"read spread {res.read_spread:.4f} ({res.seconds:.1f} s)")
    return rows
