"""The report's figures: one function per figure, each returning a matplotlib ``Figure``.

No file I/O and no pyplot state: every function builds a :class:`matplotlib.figure.Figure`
directly (save it with ``fig.savefig("x.png")``; it renders with the Agg backend, no
display needed). Inputs are the store's rows (:meth:`ResultStore.points`,
:meth:`ResultStore.epochs`) or the arrays of :mod:`noisynn.report.analysis`.

==========================  ===================================================================
function                    reproduces
==========================  ===================================================================
accuracy_vs_sigma           paper 1, figs. 2, 10; paper 2, figs. 2, 6, 7 (error rate: log axis)
accuracy_heatmap            the 11 x 11 (σ_train x σ_val) grid with the numbers in the cells
learning_curves             paper 2, fig. 3 (validation accuracy and loss over mini-batches)
state_distributions         paper 1, figs. 3, 4, 7, 8 (LSTM output / cell state per time step)
weight_histograms           paper 1, figs. 5, 9
weight_power                E[w²] (paper 1, text) and √E[w²] (paper 2, table 4) per σ_train
softmax_distribution        paper 2, figs. 4, 5 (10 softmax outputs over 10,000 noisy runs)
vote_accuracy               paper 2, fig. 11 (accuracy against the number of votes K)
stroke_lengths              paper 1, fig. 6 (length of the MNIST pen-stroke sequences)
accuracy_vs_time            issue 17: accuracy on programmed chips against time after programming
chip_vote_accuracy          issue 17: majority voting over K reads of each (drifted) chip
==========================  ===================================================================
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from noisynn.engine.store import sigma_key
from noisynn.report.analysis import accuracy_grid, vote_curves

__all__ = [
    "accuracy_vs_sigma", "accuracy_heatmap", "learning_curves", "state_distributions", "weight_histograms",
    "weight_power", "softmax_distribution", "vote_accuracy", "stroke_lengths", "accuracy_vs_time", "chip_vote_accuracy",
    "SIGMA_VAL_LABEL",
]

SIGMA_VAL_LABEL = "σ_val: inference noise standard deviation (dimensionless)"
_SIGMA_NOTE = {"additive": "additive noise z ~ N(0, σ²)", "multiplicative": "multiplicative noise z ~ N(1, σ²)"}


_KIND_NOTE = {"adversarial": "black-box transferred PGD examples", "adversarial-eot": "white-box EOT PGD examples"}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained", dpi=100)
    return fig


def _sigma_colors(values: Sequence[float] | np.ndarray, cmap: str = "viridis"):
    """A colour per sigma_train: dark for 0, yellow for the largest (the papers' ordering)."""
    hi = max(max(values, default=1.0), 1e-9)
    norm = Normalize(0.0, hi)
    palette = colormaps[cmap]
    return lambda v: palette(0.9 * norm(v))


def _legend_outside(ax, title: str | None = None, ncol: int = 1) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title=title, title_fontsize=8,
              frameon=False, ncol=ncol, borderaxespad=0.0)


def _noise_title(noise: str | None) -> str:
    return _SIGMA_NOTE.get(noise or "", noise or "")


# -- accuracy ------------------------------------------------------------------------------
def accuracy_vs_sigma(points: Sequence[Mapping], *, error_rate: bool = False, kind: str = "noisy", votes: int = 1,
                      title: str = "", noise: str | None = None) -> Figure:
    """Accuracy (or error rate, log axis) against σ_val, one curve per σ_train.

    Error bars: the standard error over the noisy runs. The red dashed line is the
    σ_train = σ_val = 0 reference (conventional training, exact inference): points above
    it (accuracy) / below it (error rate) beat it. An error rate of exactly 0 cannot be
    drawn on a log axis and is left out.

    Args:
        points: store points; those of ``kind`` with ``votes`` votes are drawn.
        error_rate: plot ``100 (1 - accuracy)`` on a logarithmic axis (paper 2's style).
        title, noise: figure title and noise kind (for the subtitle).
    """
    grid = accuracy_grid([dict(p) for p in points], kind=kind, votes=votes)
    ref_grid = grid if kind == "noisy" else accuracy_grid([dict(p) for p in points])
    fig = _figure(7.6, 4.6)
    ax = fig.add_subplot()
    color = _sigma_colors(grid.sigma_train)
    for i, st in enumerate(grid.sigma_train):
        ok = np.isfinite(grid.accuracy[i])
        x = grid.sigma_val[ok]
        acc = grid.accuracy[i][ok]
        se = np.nan_to_num(grid.stderr[i][ok])
        y = 100 * (1 - acc) if error_rate else 100 * acc
        if error_rate:
            keep = y > 0
            x, y, se = x[keep], y[keep], se[keep]
        if not len(x):
            continue
        ax.errorbar(x, y, yerr=100 * se, color=color(st), marker="o", ms=3.5, lw=1.4, capsize=2,
                    label=f"σ_train = {st:g}")
    ref = ref_grid.reference()
    if ref is not None:
        level = 100 * (1 - ref) if error_rate else 100 * ref
        if not error_rate or level > 0:
            natural = "natural inputs, " if kind in _KIND_NOTE else ""
            ax.axhline(level, color="red", ls="--", lw=1.0,
                       label=f"{natural}σ_train = σ_val = 0\n({100 * ref:.2f}% accuracy)")
    if error_rate:
        _plain_log_y(ax)
        ax.set_ylabel("error rate (%), log scale")
    else:
        ax.set_ylabel("accuracy (%)")
    ax.set_xlabel(SIGMA_VAL_LABEL)
    ax.grid(alpha=0.3, which="both" if error_rate else "major")
    if len(grid.sigma_val):
        ax.set_xlim(grid.sigma_val.min() - 0.03, grid.sigma_val.max() + 0.03)
    what = "error rate" if error_rate else "accuracy"
    sub = _noise_title(noise) + (f", majority of K = {votes} votes" if kind == "vote" else
                                 f", {_KIND_NOTE[kind]}" if kind in _KIND_NOTE else ", single noisy inference")
    head = textwrap.fill(f"{what} against σ_val ({sub})", 75)
    ax.set_title(f"{title}\n{head}" if title else head, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        _legend_outside(ax)
    else:
        _empty(ax, "no points measured yet")
    return fig


def accuracy_heatmap(points: Sequence[Mapping], *, kind: str = "noisy", votes: int = 1, title: str = "",
                     noise: str | None = None, sigma_train: Sequence[float] = (),
                     sigma_val: Sequence[float] = ()) -> Figure:
    """The (σ_train x σ_val) accuracy grid as a heat map, the accuracy (%) written in every cell.

    Cells not measured (yet) are grey and marked "–". ``sigma_train`` / ``sigma_val``
    add planned axis values that have no point yet (a partial sweep shows its whole grid).
    """
    grid = accuracy_grid([dict(p) for p in points], kind=kind, votes=votes, sigma_train=sigma_train,
                         sigma_val=sigma_val)
    nr, nc = max(len(grid.sigma_train), 1), max(len(grid.sigma_val), 1)
    fig = _figure(min(max(2.4 + 0.72 * nc, 6.4), 11.5), min(max(2.0 + 0.42 * nr, 3.0), 8.5))
    ax = fig.add_subplot()
    if not grid.filled:
        _empty(ax, "no points measured yet")
        return fig
    data = np.ma.masked_invalid(100 * grid.accuracy)
    cmap = colormaps["viridis"].with_extremes(bad="#d9d9d9")
    vmin, vmax = float(data.min()), float(data.max())
    if vmax - vmin < 1e-6:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    im = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", origin="lower", interpolation="nearest")
    size = 8 if nc <= 8 else 7 if nc <= 11 else 6
    for i in range(len(grid.sigma_train)):
        for j in range(len(grid.sigma_val)):
            v = grid.accuracy[i, j]
            if not np.isfinite(v):
                ax.text(j, i, "–", ha="center", va="center", fontsize=size, color="#555555")
                continue
            frac = (100 * v - vmin) / (vmax - vmin)
            ax.text(j, i, f"{100 * v:.1f}", ha="center", va="center", fontsize=size,
                    color="black" if frac > 0.55 else "white")
    ax.set_xticks(range(len(grid.sigma_val)), [f"{v:g}" for v in grid.sigma_val], fontsize=8)
    ax.set_yticks(range(len(grid.sigma_train)), [f"{v:g}" for v in grid.sigma_train], fontsize=8)
    ax.set_xlabel("σ_val (inference noise std)")
    ax.set_ylabel("σ_train (training noise std)")
    bar = fig.colorbar(im, ax=ax, shrink=0.9)
    bar.set_label("accuracy (%)")
    sub = _noise_title(noise) + (f", majority of K = {votes} votes" if kind == "vote" else "")
    head = f"accuracy (%) per (σ_train, σ_val)\n{sub}"
    ax.set_title(f"{title}: {head}" if title else head, fontsize=10)
    return fig


# -- learning curves -----------------------------------------------------------------------
def learning_curves(epochs: Sequence[Mapping], *, curve: Sequence[Mapping] = (), title: str = "") -> Figure:
    """Validation accuracy and loss against mini-batches seen, one curve per σ_train (paper 2, fig. 3).

    ``epochs``: the store's epoch rows (one marker per finished epoch; validation
    noise-free on the whole test split). ``curve``: the store's within-epoch rows
    (training with ``curve_every``; validation on a fixed test subset), drawn as the
    line where present.
    """
    fig = _figure(11.0, 4.2)
    ax_acc, ax_loss = fig.subplots(1, 2)
    curves: dict[tuple[float, int], list[Mapping]] = {}
    inner: dict[tuple[float, int], list[Mapping]] = {}
    for e in epochs:
        curves.setdefault((sigma_key(e["sigma_train"]), int(e["seed"])), []).append(e)
    for c in curve:
        inner.setdefault((sigma_key(c["sigma_train"]), int(c["seed"])), []).append(c)
    keys = sorted(set(curves) | set(inner))
    seeds = {s for _, s in keys}
    color = _sigma_colors([st for st, _ in keys])
    for st, seed in keys:
        label = f"σ_train = {st:g}" + (f" (seed {seed})" if len(seeds) > 1 else "")
        ends = sorted(curves.get((st, seed), []), key=lambda r: r["batches"])
        steps = sorted(inner.get((st, seed), []), key=lambda r: r["batches"])
        for ax, metric, scale in ((ax_acc, "val_accuracy", 100.0), (ax_loss, "val_loss", 1.0)):
            if steps:
                ax.plot([r["batches"] for r in steps], [scale * r[metric] for r in steps], color=color(st), lw=1.1,
                        label=label)
                ax.plot([r["batches"] for r in ends], [scale * r[metric] for r in ends], color=color(st), ls="none",
                        marker="o", ms=3)
            else:
                ax.plot([r["batches"] for r in ends], [scale * r[metric] for r in ends], color=color(st), marker="o",
                        ms=2.5, lw=1.3, label=label)
    for ax, what in ((ax_acc, "validation accuracy (%)"), (ax_loss, "validation loss (cross-entropy, nats)")):
        ax.set_xlabel("mini-batches trained")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        if keys:
            ax.set_xlim(0, 1.04 * max(r["batches"] for r in [*epochs, *curve]))
    _plain_log_y(ax_loss)
    if keys:
        _legend_outside(ax_loss)
    else:
        _empty(ax_acc, "no finished epoch yet")
    what = ("lines: every few mini-batches on a test subset; dots: epochs, whole test split" if curve
            else "after every epoch, on the test split")
    fig.suptitle((title + ": " if title else "") + f"learning curves (noise-free validation; {what})", fontsize=10)
    return fig


# -- LSTM states ---------------------------------------------------------------------------
def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * (x / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def state_distributions(panels: Sequence[Mapping], *, state: str = "h", title: str = "", bins: int = 80) -> Figure:
    """Distribution of a recurrent state at every time step, one panel per (σ_train, σ_val) pair.

    Args:
        panels: dicts with ``label`` (e.g. "σ_train = 0, σ_val = 1"), ``values``
            (``(T, N, H)`` array from :func:`analysis.recurrent_states`), optional
            ``accuracy`` (shown in the panel title) and ``noise_std`` (draws the N(0, σ²)
            density of the injected additive noise, dashed blue, as paper 1 does).
        state: ``"h"`` (hidden output, in [-1, 1]) or ``"c"`` (cell state).
    """
    n = max(len(panels), 1)
    fig = _figure(4.3 * n + 1.2, 4.0)
    axes = np.atleast_1d(fig.subplots(1, n, sharey=False))
    allv = [np.asarray(p["values"]) for p in panels]
    if state == "h":
        lo, hi = -1.0, 1.0
    elif allv:
        flat = np.concatenate([v.reshape(-1) for v in allv])
        lo, hi = np.percentile(flat, [0.2, 99.8])
        pad = 0.05 * (hi - lo + 1e-9)
        lo, hi = float(lo - pad), float(hi + pad)
    else:
        lo, hi = -1.0, 1.0
    edges = np.linspace(lo, hi, bins + 1)
    mids = 0.5 * (edges[1:] + edges[:-1])
    steps = max((v.shape[0] for v in allv), default=1)
    palette = colormaps["plasma"]
    norm = Normalize(1, max(steps, 2))
    for ax, panel, values in zip(axes, panels, allv, strict=False):  # no panel: one empty axis
        n_steps = values.shape[0]
        labelled = {0, (n_steps - 1) // 2, n_steps - 1}  # first, middle and last step in the legend
        for t in range(n_steps):
            dens, _ = np.histogram(np.clip(values[t].reshape(-1), lo, hi), bins=edges, density=True)
            ax.plot(mids, dens, color=palette(0.85 * norm(t + 1)), lw=1.4 if t in labelled else 0.8,
                    label=f"step {t + 1}" if t in labelled else None, zorder=3 if t in labelled else 2)
        sigma = panel.get("noise_std")
        if sigma:
            ax.plot(mids, _gauss(mids, sigma), color="tab:blue", ls="--", lw=1.3, label=f"noise N(0, {sigma:g}²)")
        head = panel["label"]
        if panel.get("accuracy") is not None:
            head += f"\naccuracy {100 * panel['accuracy']:.1f}%"
        ax.set_title(head, fontsize=9)
        ax.set_xlabel("hidden output h_t (tanh, in [-1, 1])" if state == "h" else "cell state c_t")
        ax.set_xlim(lo, hi)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right", frameon=False)
    axes[0].set_ylabel("probability density")
    if not panels:
        _empty(axes[0], "no recurrent model available")
    else:
        sm = colormaps["plasma"].resampled(256)
        from matplotlib.cm import ScalarMappable

        mappable = ScalarMappable(norm=Normalize(1, max(steps, 2)), cmap=sm)
        bar = fig.colorbar(mappable, ax=list(axes), shrink=0.85, pad=0.01)
        bar.set_label("time step t (LSTM cell)")
    what = "LSTM output h_t" if state == "h" else "LSTM internal (cell) state c_t"
    fig.suptitle(f"{title}: distribution of the {what} at each of {steps} time steps" if title
                 else f"distribution of the {what} at each of {steps} time steps", fontsize=10)
    return fig


# -- weights -------------------------------------------------------------------------------
def weight_histograms(weights: Mapping[float, np.ndarray], *, title: str = "", bins: int = 120) -> Figure:
    """Histogram of all weights (biases included) of every model, one curve per σ_train.

    ``weights``: ``{sigma_train: flat array}`` (:func:`analysis.weight_values`). The
    legend gives each model's E[w²].
    """
    fig = _figure(8.0, 4.6)
    ax = fig.add_subplot()
    if not weights:
        _empty(ax, "no trained model yet")
        return fig
    allw = np.concatenate([np.asarray(w).reshape(-1) for w in weights.values()])
    lim = float(np.max(np.abs(allw))) * 1.001 if allw.size else 1.0
    edges = np.linspace(-lim, lim, bins + 1)
    mids = 0.5 * (edges[1:] + edges[:-1])
    color = _sigma_colors(list(weights))
    for st in sorted(weights):
        w = np.asarray(weights[st]).reshape(-1)
        dens, _ = np.histogram(w, bins=edges, density=True)
        ax.plot(mids, np.where(dens > 0, dens, np.nan), color=color(st), lw=1.2,
                label=f"σ_train = {st:g}: E[w²] = {np.mean(w.astype(np.float64) ** 2):.4f}")
    ax.set_yscale("log")
    ax.set_xlabel("weight value (all trainable parameters: weights, biases, BN scale/shift)")
    ax.set_ylabel("probability density, log scale")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    ax.set_title((title + ": " if title else "") + "distribution of the trained weights", fontsize=10)
    return fig


def weight_power(rows: Sequence[Mapping], *, published: Sequence[Mapping] = (), title: str = "") -> Figure:
    """E[w²] and √E[w²] against σ_train, with the papers' values where published.

    Args:
        rows: ``{sigma_train, mean_square, rms}`` per model (:func:`analysis.weight_power`).
        published: entries of :func:`published.weight_power_published` (``quantity`` is
            ``"E[w^2]"`` or ``"sqrt(E[w^2])"``, ``points`` the published values).
    """
    fig = _figure(10.0, 4.0)
    ax_ms, ax_rms = fig.subplots(1, 2)
    rows = sorted(rows, key=lambda r: r["sigma_train"])
    x = [r["sigma_train"] for r in rows]
    ax_ms.plot(x, [r["mean_square"] for r in rows], "o-", color="tab:blue", label="measured")
    ax_rms.plot(x, [r["rms"] for r in rows], "o-", color="tab:blue", label="measured")
    markers = iter(["X", "D", "s", "^"])
    for entry in published:
        target = ax_rms if entry["quantity"].startswith("sqrt") else ax_ms
        pts = entry["points"]
        target.plot([p["sigma_train"] for p in pts], [p["value"] for p in pts], ls=":", marker=next(markers, "X"),
                    color="tab:red", ms=7, label=f"{'paper 1' if entry['paper'] == 'paper1' else 'paper 2'}, "
                                                 f"{entry['source']}")
    ax_ms.set_ylabel("E[w²]: mean of the squared weights")
    ax_rms.set_ylabel("√E[w²]: root mean square weight")
    for ax in (ax_ms, ax_rms):
        ax.set_xlabel("σ_train (training noise std)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    if not rows:
        _empty(ax_ms, "no trained model yet")
    fig.suptitle((title + ": " if title else "") + "weight power per model (all trainable parameters)", fontsize=10)
    return fig


# -- softmax over noisy runs ---------------------------------------------------------------
def softmax_distribution(probs: Mapping[float, np.ndarray], *, label: int | None = None, title: str = "",
                         class_names: Sequence[str] | None = None, bins: int = 50) -> Figure:
    """Distribution of the softmax outputs of one input over many noisy runs, one panel per σ_val.

    Args:
        probs: ``{sigma_val: (runs, classes) array}`` (:func:`analysis.softmax_runs`).
        label: the input's true class (named in the title).
        class_names: legend names (default ``"0"``..``"9"``).
    """
    sigmas = sorted(probs)
    n = max(len(sigmas), 1)
    cols = min(3, n)
    rows_ = math.ceil(n / cols)
    fig = _figure(4.0 * cols, 3.1 * rows_ + 0.9)
    axes = np.atleast_1d(fig.subplots(rows_, cols, sharex=True, sharey=True)).reshape(-1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    palette = colormaps["tab10"]
    classes = 0
    runs = 0
    for ax, sv in zip(axes, sigmas, strict=False):  # the grid may have spare axes
        p = np.asarray(probs[sv])
        runs, classes = p.shape
        for c in range(classes):
            counts, _ = np.histogram(p[:, c], bins=edges)
            ax.stairs(np.where(counts > 0, counts, np.nan), edges, color=palette(c % 10), lw=1.3 if c == label else 0.9)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, numticks=6))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_ylim(0.7, runs * 1.5)
        acc = float(np.mean(p.argmax(1) == label)) if label is not None else None
        ax.set_title(f"σ_val = {sv:g}" + (f": argmax = {label} in {100 * acc:.1f}% of runs" if acc is not None else ""),
                     fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[len(sigmas):]:
        ax.set_visible(False)
    for ax in axes[(rows_ - 1) * cols:]:
        ax.set_xlabel("softmax output (probability)")
    for ax in axes[::cols]:
        ax.set_ylabel(f"runs (of {runs:,}), log")
    names = list(class_names) if class_names else [str(c) for c in range(classes)]
    handles = [Line2D([], [], color=palette(c % 10), lw=2) for c in range(classes)]
    fig.legend(handles, [f"class {names[c]}" for c in range(classes)], loc="outside lower center",
               ncol=min(classes, 10), fontsize=8, frameon=False)
    head = f"softmax outputs of one test input (true class {label}) over {runs:,} noisy runs"
    fig.suptitle(f"{title}\n{head}" if title else head, fontsize=10)
    if not sigmas:
        _empty(axes[0], "not computed")
    return fig


# -- voting --------------------------------------------------------------------------------
def vote_accuracy(points: Sequence[Mapping], *, title: str = "") -> Figure:
    """Accuracy against the number of votes K, one curve per σ_val, one panel per σ_train (paper 2, fig. 11).

    Error bars: standard error over the independent voting trials.
    """
    curves = vote_curves([dict(p) for p in points])
    sts = sorted({st for st, _ in curves})
    n = max(len(sts), 1)
    cols = min(3, n)
    rows_ = math.ceil(n / cols)
    fig = _figure(4.6 * cols + 1.4, 3.3 * rows_ + 0.6)
    axes = np.atleast_1d(fig.subplots(rows_, cols, sharex=True, squeeze=False)).reshape(-1)
    svs = sorted({sv for _, sv in curves})
    palette = colormaps["magma"]
    norm = Normalize(0, max(max(svs, default=1.0), 1e-9))
    handles: dict[float, Any] = {}  # errorbar containers (legend handles, not Artists to the type stubs)
    for ax, st in zip(axes, sts, strict=False):  # the grid may have spare axes
        for sv in svs:
            byk = curves.get((st, sv))
            if not byk:
                continue
            ks = sorted(byk)
            handles[sv] = ax.errorbar(ks, [100 * byk[k]["accuracy"] for k in ks],
                                      yerr=[100 * byk[k]["stderr"] for k in ks], color=palette(0.8 * norm(sv)),
                                      marker="o", ms=3, lw=1.3, capsize=2)
        ax.set_title(f"σ_train = {st:g}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.set_ylabel("accuracy (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if handles:
        fig.legend([handles[sv] for sv in sorted(handles)], [f"σ_val = {sv:g}" for sv in sorted(handles)],
                   loc="outside right upper", fontsize=8, frameon=False)
    for ax in axes[len(sts):]:
        ax.set_visible(False)
    for ax in axes[max(0, len(sts) - cols):len(sts)]:
        ax.set_xlabel("number of votes K (noisy inferences per prediction)")
        ax.tick_params(labelbottom=True)
    if not curves:
        _empty(axes[0], "no voting points")
    fig.suptitle((title + ": " if title else "") + "accuracy of majority voting against the number of votes",
                 fontsize=10)
    return fig


# -- chips (hardware points) ----------------------------------------------------------------
#: Where the time axis of :func:`accuracy_vs_time` has named ticks (seconds after programming).
TIME_TICKS = ((1.0, "1 s"), (60.0, "1 min"), (3600.0, "1 h"), (86400.0, "1 d"), (2592000.0, "1 mo"),
              (31536000.0, "1 y"))


def _chips_line(ax, x: np.ndarray, pts: Sequence[Mapping], *, color, label: str, ls: str | None = None) -> None:
    """One line of a chips figure: the mean accuracy (%) of ``pts`` at ``x`` and its band, mean ± the
    chip-to-chip spread (``ls``: the line style, default the figure's)."""
    acc = 100 * np.array([r["accuracy"] for r in pts])
    band = 100 * np.array([r["chip_spread"] for r in pts])
    style = {} if ls is None else {"ls": ls}
    ax.plot(x, acc, color=color, marker="o", ms=3.5, lw=1.4, label=label, **style)
    ax.fill_between(x, acc - band, acc + band, color=color, alpha=0.18, lw=0)


def accuracy_vs_time(rows: Sequence[Mapping], *, title: str = "", hardware: str = "") -> Figure:
    """Accuracy on programmed chips against time after programming (log axis), with chip-to-chip bands.

    One line per training kind (colour) and drift compensation (solid: on, dashed: off);
    the band is mean ± the chip-to-chip spread (sample std of the per-chip means); the
    read-to-read spread is in the CSV beside it.

    Args:
        rows: chips points (:meth:`ResultStore.chip_points`), each with a ``training``
            label added (the key of a line), ``t``, ``compensation``, ``accuracy``, ``chip_spread``.
        title, hardware: the figure's title and the chip model's description (subtitle).
    """
    fig = _figure(7.8, 4.6)
    ax = fig.add_subplot()
    lines: dict[tuple, list[Mapping]] = {}
    for r in rows:
        lines.setdefault((r["training"], r["compensation"]), []).append(r)
    trainings = list(dict.fromkeys(r["training"] for r in rows))
    palette = colormaps["tab10"]
    styles = {True: "-", False: "--", None: "-"}
    for (training, comp), pts in sorted(lines.items(), key=lambda kv: (trainings.index(kv[0][0]), kv[0][1] is False)):
        pts = sorted(pts, key=lambda r: r["t"])
        t = np.array([max(float(r["t"]), 1e-1) for r in pts])
        comp_text = "" if comp is None else (", compensated" if comp else ", no compensation")
        _chips_line(ax, t, pts, color=palette(trainings.index(training) % 10), label=f"{training}{comp_text}",
                    ls=styles[comp])
    ax.set_xscale("log")
    ticks = [(v, s) for v, s in TIME_TICKS if rows and min(r["t"] for r in rows) / 3 <= v <= 3 * max(
        r["t"] for r in rows)]
    if ticks:
        ax.set_xticks([v for v, _ in ticks], [s for _, s in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("time after programming (log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    n_chips = sorted({int(r["n_chips"]) for r in rows})
    n_reads = sorted({int(r["n_reads"]) for r in rows})
    sub = (f"{hardware + ': ' if hardware else ''}mean over {'/'.join(map(str, n_chips))} chips x "
           f"{'/'.join(map(str, n_reads))} reads, band: ± chip-to-chip spread")
    head = textwrap.fill("accuracy against time after programming (" + sub + ")", 64)
    return _chips_finish(fig, ax, rows, title, head, "no chips points measured yet")


def chip_vote_accuracy(rows: Sequence[Mapping], *, title: str = "", hardware: str = "") -> Figure:
    """Majority voting over K reads of each chip: accuracy against K, one line per training kind.

    The band is mean ± the chip-to-chip spread: voting averages out the per-read noise,
    not what a chip's programming and drift did.

    Args:
        rows: chips voting points (kind ``chips-vote-*``) with a ``training`` label, ``votes``,
            ``accuracy``, ``chip_spread``, ``t``, ``compensation``.
    """
    fig = _figure(7.4, 4.4)
    ax = fig.add_subplot()
    trainings = list(dict.fromkeys(r["training"] for r in rows))
    palette = colormaps["tab10"]
    for i, training in enumerate(trainings):
        pts = sorted((r for r in rows if r["training"] == training), key=lambda r: r["votes"])
        _chips_line(ax, np.array([int(r["votes"]) for r in pts]), pts, color=palette(i % 10), label=training)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("number of votes K (reads of the same chip per prediction)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    when = sorted({(float(r["t"]), r["compensation"]) for r in rows})
    at = ", ".join(f"t = {t:g} s" + ("" if c is None else (" compensated" if c else " uncompensated")) for t, c in when)
    head = textwrap.fill(f"majority voting on programmed chips ({hardware + ', ' if hardware else ''}{at}; "
                         "band: ± chip-to-chip spread)", 64)
    return _chips_finish(fig, ax, rows, title, head, "no chips voting points measured yet")


def _chips_finish(fig: Figure, ax: Axes, rows: Sequence[Mapping], title: str, head: str, empty: str) -> Figure:
    """The two chips figures' title (the caller's ``title`` over ``head``) and legend, or ``empty``."""
    ax.set_title(f"{title}\n{head}" if title else head, fontsize=10)
    if rows:
        _legend_outside(ax)
    else:
        _empty(ax, empty)
    return fig


# -- strokes -------------------------------------------------------------------------------
def stroke_lengths(lengths: np.ndarray, *, max_len: int = 50, title: str = "") -> Figure:
    """Histogram of the MNIST stroke-sequence lengths (pen points per digit; paper 1, fig. 6).

    The dashed line marks the ``max_len`` points the LSTM reads (longer sequences are cut,
    shorter ones padded with zeros).
    """
    lengths = np.asarray(lengths).reshape(-1)
    fig = _figure(7.0, 4.0)
    ax = fig.add_subplot()
    if lengths.size == 0:
        _empty(ax, "no sequences")
        return fig
    edges = np.arange(lengths.min(), lengths.max() + 2) - 0.5
    ax.hist(lengths, bins=list(edges), color="tab:blue", alpha=0.85)
    ax.axvline(max_len + 0.5, color="red", ls="--", lw=1.2, label=f"LSTM reads the first {max_len} points")
    inside = float(np.mean((lengths >= 20) & (lengths <= 60)))
    cut = float(np.mean(lengths > max_len))
    ax.set_xlabel("stroke-sequence length (number of pen points)")
    ax.set_ylabel("training sequences")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title((title + ": " if title else "")
                 + f"{lengths.size:,} sequences, median {np.median(lengths):g} points, {100 * inside:.0f}% within "
                 f"20–60, {100 * cut:.0f}% cut at {max_len}",
                 fontsize=10)
    return fig


def _plain_log_y(ax) -> None:
    """A logarithmic y axis labelled 0.2, 0.5, 1, 2, 5, 10... rather than 2 x 10^-1."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}".lstrip("0.")[:1] in ("2", "5")
                                               else ""))
    ax.tick_params(axis="y", which="minor", labelsize=7)


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="#666666")
