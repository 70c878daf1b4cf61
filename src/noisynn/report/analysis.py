"""Computations behind the report's figures and tables: arrays and rows, no plotting, no files.

* :func:`accuracy_grid`: the store's points as a (sigma_train x sigma_val) matrix.
* :func:`weight_values` / :func:`weight_power`: the trained parameters and their power
  ``E[w^2]`` (paper 1, figs. 5 and 9; paper 2, table 4).
* :func:`recurrent_states`: the hidden output ``h_t`` and cell state ``c_t`` of a
  recurrent classifier at every time step, clean or noisy (paper 1, figs. 3, 4, 7, 8).
* :func:`softmax_runs`: the softmax output of one input over many independent noisy
  runs (paper 2, figs. 4 and 5).
* :func:`count_noisy_layers` / :func:`voting_cost`: the latency and power of voting
  (paper 2, sec. 3.3).
* :func:`runs_summary`: noisy runs used against the papers' 40 / 50 per point.

What counts as a *weight*: every trainable parameter, i.e. the weight matrices and
convolution kernels, the biases (paper 1, sec. I: "since a bias can be viewed as a
weight ... we will indiscriminately call it a weight") and the trainable batch-norm
scale and shift (trainable parameters of paper 2's networks for multiplicative
noise). Batch-norm running statistics are buffers, not trained weights, and are left
out. ``E[w^2]`` is the mean of the squares over all these numbers pooled together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from noisynn.engine.store import sigma_key
from noisynn.noise import noise
from noisynn.recurrent import NoisyGRU, NoisyLSTM, NoisyRNN
from noisynn.repeat import repeat_forward

__all__ = [
    "Grid", "accuracy_grid", "weight_values", "weight_power", "recurrent_states", "softmax_runs",
    "count_noisy_layers", "voting_cost", "vote_curves", "runs_summary", "pick_input",
]

_RECURRENT = (NoisyLSTM, NoisyGRU, NoisyRNN)


_s = sigma_key  # a sigma as the results store keys it


@dataclass(frozen=True)
class Grid:
    """Accuracies on the (sigma_train, sigma_val) grid; NaN where a point is not measured (yet).

    Attributes:
        sigma_train, sigma_val: the sorted axes.
        accuracy, stderr: ``(len(sigma_train), len(sigma_val))`` fractions.
        n_runs: runs per point (0 where missing).
    """

    sigma_train: np.ndarray
    sigma_val: np.ndarray
    accuracy: np.ndarray
    stderr: np.ndarray
    n_runs: np.ndarray

    @property
    def filled(self) -> int:
        return int(np.isfinite(self.accuracy).sum())

    def reference(self) -> float | None:
        """Accuracy at sigma_train = sigma_val = 0 (conventional training, exact inference)."""
        i = np.flatnonzero(self.sigma_train == 0.0)
        j = np.flatnonzero(self.sigma_val == 0.0)
        if len(i) and len(j) and np.isfinite(self.accuracy[i[0], j[0]]):
            return float(self.accuracy[i[0], j[0]])
        return None


def accuracy_grid(points: list[dict], *, kind: str = "noisy", votes: int = 1, sigma_train=(), sigma_val=()) -> Grid:
    """The points of ``kind`` with ``votes`` votes as a grid (see :class:`Grid`).

    ``sigma_train`` / ``sigma_val``: axis values to include even without a point (NaN).
    """
    rows = [p for p in points if p["kind"] == kind and int(p["votes"]) == votes]
    st = np.array(sorted({_s(p["sigma_train"]) for p in rows} | {_s(v) for v in sigma_train}), dtype=float)
    sv = np.array(sorted({_s(p["sigma_val"]) for p in rows} | {_s(v) for v in sigma_val}), dtype=float)
    acc = np.full((len(st), len(sv)), np.nan)
    se = np.full_like(acc, np.nan)
    n = np.zeros(acc.shape, dtype=int)
    ist = {v: i for i, v in enumerate(st)}
    isv = {v: i for i, v in enumerate(sv)}
    for p in rows:
        i, j = ist[_s(p["sigma_train"])], isv[_s(p["sigma_val"])]
        if n[i, j]:  # several seeds: keep the first
            continue
        acc[i, j], se[i, j], n[i, j] = p["accuracy"], p["stderr"], p["n_runs"]
    return Grid(st, sv, acc, se, n)


# -- weights -------------------------------------------------------------------------------
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def weight_values(model: nn.Module, *, normalization: bool = True) -> np.ndarray:
    """Every trainable parameter of ``model`` (weights, biases, batch-norm scale/shift), flat.

    ``normalization=False`` leaves out the normalisation layers' scale and shift (the
    batch-norm gamma ~ 1 of a CNN can dominate E[w^2]; both variants are reported).
    """
    skip: set[int] = set()
    if not normalization:
        skip = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
    params = [p.detach().reshape(-1).cpu().double() for p in model.parameters() if p.requires_grad
              and id(p) not in skip]
    if not params:
        return np.zeros(0)
    return torch.cat(params).numpy()


def weight_power(model_or_values: nn.Module | np.ndarray) -> dict:
    """``{"count", "mean_square" (E[w^2]), "rms" (sqrt(E[w^2])), "max_abs"}`` of the weights."""
    w = weight_values(model_or_values) if isinstance(model_or_values, nn.Module) else np.asarray(model_or_values)
    if w.size == 0:
        return {"count": 0, "mean_square": math.nan, "rms": math.nan, "max_abs": math.nan}
    ms = float(np.mean(np.square(w, dtype=np.float64)))
    return {"count": int(w.size), "mean_square": ms, "rms": math.sqrt(ms), "max_abs": float(np.max(np.abs(w)))}


# -- recurrent states ----------------------------------------------------------------------
def recurrent_layer(model: nn.Module) -> nn.Module | None:
    """The model's noisy recurrent layer (``model.rnn`` of the papers' RNNs), or None."""
    layer = getattr(model, "rnn", None)
    return layer if isinstance(layer, _RECURRENT) and layer.batch_first else None


@torch.inference_mode()
def recurrent_states(model: nn.Module, x: torch.Tensor, kind: str | None = None, sigma: float = 0.0, *,
                     generator: torch.Generator | None = None) -> dict[str, np.ndarray]:
    """The recurrent layer's states at every time step, for every sample.

    The layer (``model.rnn``) is run one time step at a time, each call given the state
    the previous one returned, so ``h_t`` (the output) and ``c_t`` (an LSTM's cell
    state, returned as ``c_n``) come out of one noisy trajectory per sample without
    touching the layer's internals. Noise is drawn independently at every step, so each
    step's values are a sample of that step's marginal distribution.

    Args:
        model: a recurrent classifier with a noisy recurrent layer ``model.rnn``.
        x: inputs ``(N, T, features)``.
        kind, sigma: the inference noise (``None`` or ``sigma = 0``: exact).
        generator: the noise stream.

    Returns:
        ``{"h": (T, N, H)}`` plus ``"c": (T, N, H)`` for an LSTM (last layer, float32).

    Raises:
        ValueError: the model has no batch-first noisy recurrent layer ``rnn``.
    """
    layer = recurrent_layer(model)
    if layer is None:
        raise ValueError(f"{type(model).__name__} has no batch-first noisy recurrent layer 'rnn'")
    model.eval()
    hs, cs = [], []
    state = None
    with _noise_at(kind, sigma, generator):
        for t in range(x.shape[1]):
            out, state = layer(x[:, t:t + 1], state)
            hs.append(out[:, 0].float().cpu())
            if isinstance(layer, NoisyLSTM):
                cs.append(state[1][-1].float().cpu())
    result = {"h": torch.stack(hs).numpy()}
    if cs:
        result["c"] = torch.stack(cs).numpy()
    return result


def _noise_at(kind, sigma: float, generator: torch.Generator | None):
    """The noise of ``kind`` (a name, ``pkg.module:Class`` or a noise family) at ``sigma``; clean at 0."""
    if not sigma:
        return noise(None)
    from noisynn.engine.plugins import resolve_noise

    return resolve_noise(kind).at(sigma, generator=generator)


# -- softmax over noisy runs ---------------------------------------------------------------
def pick_input(y: torch.Tensor, label: int = 6) -> int:
    """Index of the first sample with ``label`` (paper 2 uses an image of a "6"), else 0."""
    hits = torch.nonzero(y == label).flatten()
    return int(hits[0]) if len(hits) else 0


@torch.inference_mode()
def softmax_runs(model: nn.Module, x: torch.Tensor, kind: str | None, sigma: float, runs: int = 10_000, *,
                 chunk: int = 1000, generator: torch.Generator | None = None) -> np.ndarray:
    """Softmax outputs of one input over ``runs`` independent noisy inferences.

    Args:
        model: any classifier (put in eval mode).
        x: one input, with or without its batch dimension.
        kind, sigma: the inference noise.
        runs: independent noisy runs (paper 2: 10,000), computed ``chunk`` at a time
            with :func:`noisynn.repeat_forward`.

    Returns:
        ``(runs, classes)`` float32 probabilities.
    """
    if runs < 1 or chunk < 1:
        raise ValueError(f"runs and chunk must be >= 1, got {runs} and {chunk}")
    model.eval()
    if x.dim() == len(getattr(model, "input_shape", x.shape[1:])):
        x = x.unsqueeze(0)
    out = []
    with _noise_at(kind, sigma, generator):
        for start in range(0, runs, chunk):
            r = min(chunk, runs - start)
            logits = repeat_forward(model, x[:1], r)[:, 0]
            out.append(logits.float().softmax(-1).cpu())
    return torch.cat(out).numpy()


# -- voting cost ---------------------------------------------------------------------------
def count_noisy_layers(model: nn.Module) -> int:
    """L of paper 2, sec. 3.3: the noisy layers an inference passes through, in order.

    Each noise site that is a feed-forward layer counts once; a recurrent layer counts
    once per time step and layer (the network unrolled in time, paper 1, sec. II), since
    each step is one more matrix-vector stage. cnn6: 6; lstm-rows: 28 + 1 = 29.
    """
    from noisynn.layers import noise_sites

    steps = int(getattr(model, "input_shape", (1,))[0]) if len(getattr(model, "input_shape", ())) == 2 else 1
    total = 0
    for _, module in noise_sites(model):
        if getattr(module, "folded", False):
            continue  # its noise is the batch-norm's: one stage
        total += steps * module.num_layers if isinstance(module, _RECURRENT) else 1
    return total


def vote_curves(points: list[dict]) -> dict[tuple[float, float], dict[int, dict]]:
    """Vote points grouped: ``{(sigma_train, sigma_val): {K: point}}``."""
    out: dict[tuple[float, float], dict[int, dict]] = {}
    for p in points:
        if p["kind"] == "vote":
            out.setdefault((_s(p["sigma_train"]), _s(p["sigma_val"])), {}).setdefault(int(p["votes"]), p)
    return dict(sorted(out.items()))


def voting_cost(points: list[dict], layers: int, ks: tuple[int, ...] | None = None) -> list[dict]:
    """Accuracy gain of voting next to its cost (paper 2, sec. 3.3), one row per (σ_train, σ_val, K).

    With ``L = layers`` noisy layers each taking time ``T`` and one inference costing
    power ``P``: K votes take ``(L + K) T`` pipelined (``K L T`` one after another;
    a single inference takes ``L T``, so the latency overhead is ``K / L``), and ``K P``
    power whatever the schedule.

    Args:
        points: store points (only ``kind == "vote"`` are used).
        layers: ``L`` (:func:`count_noisy_layers`).
        ks: the K to list (default: every K measured).

    Returns:
        rows with ``sigma_train, sigma_val, votes, accuracy, stderr, gain`` (accuracy(K) -
        accuracy(1), fraction), ``latency_pipelined_T`` (L + K), ``latency_sequential_T``
        (K L), ``latency_overhead`` (K / L), ``power_P`` (K).
    """
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    rows = []
    for (st, sv), byk in vote_curves(points).items():
        base = byk.get(1)
        for k in sorted(byk):
            if ks is not None and k not in ks:
                continue
            p = byk[k]
            rows.append({
                "sigma_train": st, "sigma_val": sv, "votes": k, "accuracy": p["accuracy"], "stderr": p["stderr"],
                "trials": p["n_runs"], "gain": None if base is None else p["accuracy"] - base["accuracy"],
                "layers_L": layers, "latency_pipelined_T": layers + k, "latency_sequential_T": k * layers,
                "latency_overhead": k / layers, "power_P": k,
            })
    return rows


# -- runs used -----------------------------------------------------------------------------
def runs_summary(points: list[dict], paper_runs: int | None) -> dict:
    """Noisy runs the run used against what the paper's fixed count would have used.

    Returns ``{points, runs_used, runs_min, runs_median, runs_max, varying, paper_runs,
    paper_total, saving}`` over the ``noisy`` points (``saving``: fraction of the paper's
    total not needed; ``None`` without a paper count).
    """
    noisy = [p for p in points if p["kind"] == "noisy"]
    counts = np.array([p["n_runs"] for p in noisy], dtype=int)
    noisy_counts = np.array([p["n_runs"] for p in noisy if p["sigma_val"] > 0], dtype=int)
    used = int(counts.sum()) if len(counts) else 0
    total = paper_runs * len(noisy) if paper_runs else None
    return {
        "points": len(noisy),
        "runs_used": used,
        "runs_min": int(counts.min()) if len(counts) else 0,
        "runs_median": float(np.median(counts)) if len(counts) else 0.0,
        "runs_max": int(counts.max()) if len(counts) else 0,
        "varying": bool(len(set(noisy_counts.tolist())) > 1),
        "paper_runs": paper_runs,
        "paper_total": total,
        "saving": (1 - used / total) if total else None,
    }
