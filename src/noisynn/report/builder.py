"""Build the report of a run directory: figures (PNG + SVG), CSV tables, ``report.html``.

Everything is read from the run directory as it is now: ``results.sqlite`` (points,
voting points, learning curves, meta) and the checkpoints in ``models/`` (weights,
LSTM states, softmax runs). A sweep still running gives the report of what is finished.

Two steps, usable on their own: :func:`collect` reads the store and the run directory and
runs the models (recurrent states, softmax outputs under noise) into a :class:`RunData`
of plain values; :func:`render` writes the figures, the CSV tables and the page from it
and runs nothing. :func:`build_report` is the two in a row.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from noisynn.engine.checkpoint_meta import CheckpointMeta, read_checkpoint_meta
from noisynn.engine.rundir import RunDir
from noisynn.engine.store import sigma_key
from noisynn.errors import NoisynnError
from noisynn.report import analysis, figures, published
from noisynn.report.render import Cell, esc, figure, fmt_pct, fmt_pp, page, table

__all__ = ["Report", "ReportError", "build_report", "collect", "render", "RunData", "TrainedModel", "ModelRuns"]

#: Point kinds of the attack experiments (paper 2, sec. 4) and what they measure.
ADVERSARIAL_KINDS = {
    "adversarial": "black-box PGD examples transferred from the source network NN_adv",
    "adversarial-eot": "white-box PGD examples made on the noisy network itself (EOT gradients)",
}


class ReportError(NoisynnError):
    """The directory is not a run directory (no results database)."""


@dataclass
class Report:
    """What :func:`build_report` wrote.

    Attributes:
        html: the page (``OUT/report.html``).
        out: the report folder.
        figures: figure file stems (each has ``.png`` and ``.svg`` in ``out``).
        tables: CSV file names in ``out``.
        comparison: rows of :func:`published.compare` (published cells of this run).
        claims: rows of :func:`published.check_claims`.
        notes: what was skipped and why.
        meta: the store's meta (experiment, profile, ...).
    """

    html: Path
    out: Path
    figures: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    comparison: list[dict] = field(default_factory=list)
    claims: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"html": str(self.html), "out": str(self.out), "figures": self.figures, "tables": self.tables,
                "comparison": self.comparison, "claims": self.claims, "notes": self.notes, "meta": self.meta}


PROFILE_TEXT = {
    "paper": ("paper", ("Profile <b>paper</b>: the papers' settings (full data, epochs and runs per point). "
                        "Differences from the published numbers are differences in the reproduction.")),
    "cpu": ("cpu", ("Profile <b>cpu</b>: the reproduction on 2 CPU cores (docs/reproduction.md): the whole test set, "
                    "more runs per point than quick, fewer epochs than the papers with a larger batch and learning "
                    "rate (and, for paper 2, fewer σ_train). Differences from the published numbers include the "
                    "shorter training.")),
    "quick": ("quick", ("Profile <b>quick</b>: a reduced run (fewer epochs, a subset of the training data, few runs "
                        "per point) that takes minutes, not the papers' settings. Its numbers show the trends; they "
                        "are not expected to match the published values.")),
}


class _Writer:
    """Saves figures and CSV tables into the report folder and remembers them."""

    def __init__(self, out: Path, dpi: int = 130) -> None:
        self.out, self.dpi = out, dpi
        self.figures: list[str] = []
        self.tables: list[str] = []

    def fig(self, stem: str, fig) -> str:
        fig.savefig(self.out / f"{stem}.png", dpi=self.dpi)
        fig.set_layout_engine("none")  # keep the layout just computed: the SVG is the same figure, faster
        fig.savefig(self.out / f"{stem}.svg")
        self.figures.append(stem)
        return stem

    def csv(self, name: str, rows: list[dict], columns: list[str]) -> str:
        with open(self.out / name, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
        self.tables.append(name)
        return name


def _checkpoints(run_dir: RunDir, seed: int | None, model: str | None,
                 notes: list[str] | None = None) -> dict[float, tuple[Path, CheckpointMeta]]:
    """``{sigma_train: (checkpoint, metadata)}`` of the run's trained models of ``model`` (any epoch).

    Other networks in ``models/`` (an attack's source network NN_adv) are left out; a file
    that is not a readable checkpoint is skipped with a note saying why.
    """
    found: dict[float, tuple[Path, CheckpointMeta]] = {}
    for path in run_dir.model_checkpoints():  # not early stopping's copies: the checkpoint is what was evaluated
        try:
            meta = read_checkpoint_meta(path)
        except NoisynnError as exc:
            if notes is not None:
                notes.append(f"models/{path.name} skipped: {str(exc).splitlines()[0]}")
            continue
        if seed is not None and (meta.seed or 0) != seed:
            continue
        if model is not None and meta.model != model:
            continue
        found.setdefault(sigma_key(meta.sigma_train), (path, meta))
    return dict(sorted(found.items()))


def _expected(meta: dict, points: list[dict]) -> dict | None:
    """The grid the run's preset plans (to tell a partial sweep), if the preset is known and fits."""
    from noisynn.engine.presets import PresetError, load_plan

    try:
        plan = load_plan(meta.get("experiment", ""), meta.get("profile", "quick"))
    except (PresetError, OSError):
        return None
    if (plan.model, plan.dataset, plan.noise) != (meta.get("model"), meta.get("dataset"), meta.get("noise")):
        return None
    st, sv = {sigma_key(v) for v in plan.sigma_train}, {sigma_key(v) for v in plan.sigma_val}
    noisy = [p for p in points if p["kind"] == "noisy"]
    if any(sigma_key(p["sigma_train"]) not in st or sigma_key(p["sigma_val"]) not in sv for p in noisy):
        return None
    return {"models": len(st), "noisy": len(st) * len(sv), "sigma_train": sorted(st), "sigma_val": sorted(sv),
            "vote_sigma_val": sorted(sigma_key(v) for v in plan.vote_sigma_val),
            "vote": len(st) * len(plan.vote_sigma_val) * plan.votes if plan.votes else 0,
            "epochs": int(plan.train.epochs)}


# -- collect: the run directory as plain data ----------------------------------------------------
@dataclass
class TrainedModel:
    """One trained model of the run, as the report shows it (its weights read once, in :func:`collect`).

    Attributes:
        sigma_train: its σ_train (the store's key).
        path: its checkpoint.
        meta: the checkpoint's metadata (``sha256``: of the weights loaded).
        weights: every trainable parameter, pooled (:func:`analysis.weight_values`).
        power: :func:`analysis.weight_power` of ``weights``.
        power_without_norm: the same without batch-norm scale/shift.
    """

    sigma_train: float
    path: Path
    meta: CheckpointMeta
    weights: np.ndarray
    power: dict
    power_without_norm: dict


@dataclass
class ModelRuns:
    """What the report measured by running the trained models on test inputs (in :func:`collect`).

    Attributes:
        noise: the noise the figures apply (a user's noise family, with its parameters, or a kind).
        layers: L, the noisy layers an inference passes through (:func:`analysis.count_noisy_layers`).
        states: ``{"h" | "c": [panel, ...]}`` for :func:`figures.state_distributions` (empty: no
            recurrent layer, or no test data); ``state_pairs`` their (σ_train, σ_val), over
            ``state_count`` test samples.
        softmax: ``{σ_train: {σ_val: (runs, classes) probabilities}}`` of test input ``softmax_input``
            (index, label) at ``softmax_sigmas``, ``softmax_runs`` noisy runs each (empty: none asked).
    """

    noise: Any
    layers: int
    states: dict[str, list[dict]] = field(default_factory=dict)
    state_pairs: list[tuple[float, float]] = field(default_factory=list)
    state_count: int = 0
    softmax: dict[float, dict[float, np.ndarray]] = field(default_factory=dict)
    softmax_input: tuple[int, int] = (0, 0)
    softmax_sigmas: list[float] = field(default_factory=list)
    softmax_runs: int = 0


@dataclass
class RunData:
    """Everything a report shows, read from the run directory (and computed from its models) by :func:`collect`.

    Attributes:
        run_dir: the run directory.
        meta: the store's meta (experiment, profile, seed, model, dataset, noise ...).
        experiment, title, profile, noise: what the run is (``noise``: the store's, may be None).
        points, epochs, curve: the store's rows of ``experiment``; ``others``: other experiments in it.
        expected: the grid the run's preset plans (:func:`_expected`), None if unknown.
        matched, comparison, claims: the papers' experiments matched, their cells and claims against the points.
        chips: the hardware points, labelled by training kind and sorted (empty: none).
        models: the trained models (empty: none read), ``runs`` what running them gave (None: not run).
        stroke_lengths: the MNIST stroke lengths and the points the LSTM reads (None: not a strokes run).
        notes: what was skipped and why.
    """

    run_dir: RunDir
    meta: dict
    experiment: str
    title: str
    profile: str
    noise: str | None
    points: list[dict]
    epochs: list[dict]
    curve: list[dict]
    others: list[str]
    expected: dict | None
    matched: dict
    comparison: list[dict]
    claims: list[dict]
    chips: list[dict] = field(default_factory=list)
    models: dict[float, TrainedModel] = field(default_factory=dict)
    runs: ModelRuns | None = None
    stroke_lengths: tuple[np.ndarray, int] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def noisy(self) -> list[dict]:
        return [p for p in self.points if p["kind"] == "noisy"]

    @property
    def votes(self) -> list[dict]:
        return [p for p in self.points if p["kind"] == "vote"]


def collect(run_dir: str | Path, *, data_dir: str | None = None, device: str = "cpu", softmax_runs: int = 10_000,
            state_samples: int = 300, model_figures: bool = True, cache: Path | None = None,
            log: Callable[[str], None] | None = None) -> RunData:
    """Read the run directory into :class:`RunData`: the store, the checkpoints, and what running the models gives.

    Every model is loaded and run here (LSTM states, softmax runs; ``cache``: a folder where the
    softmax runs are kept between reports), so rendering runs none. Arguments as :func:`build_report`.

    Raises:
        ReportError: ``run_dir`` has no results database.
    """
    from noisynn.engine.store import ResultStore

    say = log or (lambda _m: None)
    rd = RunDir(Path(run_dir))
    with ResultStore(rd.existing_store(ReportError), readonly=True) as store:  # writes nothing to the run directory
        meta = store.meta()
        all_points = store.points()
        all_epochs = store.epochs()
        all_curve = store.curve()
        experiment = meta.get("experiment") or (all_points[0]["experiment"] if all_points else "")
        chip_rows = store.chip_points(experiment or None)
    points = [p for p in all_points if p["experiment"] == experiment] if experiment else all_points
    profile = meta.get("profile", "unknown")
    expected = _expected(meta, points)
    matched = published.matching_experiments(meta)
    data = RunData(
        run_dir=rd, meta=meta, experiment=experiment, title=experiment or rd.path.name, profile=profile,
        noise=meta.get("noise") or (points[0]["noise"] if points else None), points=points,
        epochs=[e for e in all_epochs if e["experiment"] == experiment] if experiment else all_epochs,
        curve=[c for c in all_curve if c["experiment"] == experiment] if experiment else all_curve,
        others=sorted({p["experiment"] for p in all_points} - {experiment}), expected=expected, matched=matched,
        comparison=_comparison(points, matched, profile), claims=_claims(points, matched, expected),
        chips=_chip_rows(chip_rows, meta))
    if data.others:
        data.notes.append(f"the store also holds points of {', '.join(data.others)}; this report covers "
                          f"{experiment} only")
    if not data.epochs:
        data.notes.append("no learning curve: no training epoch is recorded in the store")
    if model_figures:
        seed = int(meta["seed"]) if meta.get("seed", "").lstrip("-").isdigit() else None
        ckpts = _checkpoints(rd, seed, meta.get("model"), data.notes)
        if ckpts:
            loaded = _load_models(ckpts, device, data.notes)
            data.models = {st: trained for st, (trained, _) in loaded.items()}
            if loaded:
                data.runs = _run_models(data, {st: module for st, (_, module) in loaded.items()}, data_dir=data_dir,
                                        device=device, softmax_runs=softmax_runs, state_samples=state_samples,
                                        cache=cache, say=say)
        else:
            data.notes.append("no checkpoint in models/: weight, state and softmax figures skipped")
    else:
        data.notes.append("model figures skipped (model_figures=False / --no-models)")
    if meta.get("dataset") == "mnist-strokes":
        try:
            from noisynn import data as datasets

            train = datasets.load("mnist-strokes", "train", data_dir=data_dir)
            data.stroke_lengths = (np.asarray(train.meta["lengths"]), int(train.meta.get("max_len", 50)))
        except NoisynnError as exc:
            data.notes.append(f"stroke-length histogram skipped: {str(exc).splitlines()[0]}")
    return data


def _comparison(points: list[dict], matched: dict, profile: str) -> list[dict]:
    """The published cells of the matched experiments, each with this run's measured point."""
    cells = [c for c in published.published_cells() if c.experiment in matched]
    rows = published.compare(cells, points)
    for row in rows:
        row["profile"] = profile
        row["matched_by"] = matched.get(row["experiment"], "")
    return rows


def _claims(points: list[dict], matched: dict, expected: dict | None) -> list[dict]:
    """The published claims of the matched experiments, checked on the points (a partial grid says so)."""
    rows = published.check_claims([c for c in published.claims() if c.experiment in matched], points)
    if expected is not None and len([p for p in points if p["kind"] == "noisy"]) < expected["noisy"]:
        for row in rows:  # no better point *yet*: the rest of the grid may still have one
            if row["type"] == "exists_above_reference" and row["status"] == "fail":
                row["status"] = "fail (partial)"
    return rows


def _chip_rows(rows: list[dict], meta: dict) -> list[dict]:
    """The hardware points, each labelled with its ``training`` kind, in the order the report shows them."""
    def training(r: dict) -> str:
        if r["noise"] == meta.get("noise", r["noise"]) and r["noise"] in ("additive", "multiplicative"):
            return "conventional" if r["sigma_train"] == 0 else f"Gaussian DNI σ_train = {r['sigma_train']:g}"
        return f"hardware-aware ({r['noise'].split('-')[0]}) σ_train = {r['sigma_train']:g}"

    rows = [dict(r, training=training(r)) for r in rows]
    rank = {"conventional": 0, "Gaussian DNI": 1, "hardware-aware": 2}
    rows.sort(key=lambda r: (next(v for k, v in rank.items() if r["training"].startswith(k)), r["noise"],
                             r["sigma_train"], r["kind"], r["t"], r["votes"]))
    return rows


def _load_models(ckpts: dict[float, tuple[Path, CheckpointMeta]], device: str,
                 notes: list[str]) -> dict[float, tuple[TrainedModel, nn.Module]]:
    """The trained models of ``ckpts``, read and loaded (one that does not load is noted and left out)."""
    from noisynn.engine.training import load_trained

    models = {}
    for st, (path, _) in ckpts.items():
        try:
            model, full = load_trained(path, device=device)
        except NoisynnError as exc:
            notes.append(f"checkpoint {path.name} skipped: {str(exc).splitlines()[0]}")
            continue
        weights = analysis.weight_values(model)
        models[st] = (TrainedModel(st, path, full, weights, analysis.weight_power(weights),
                                   analysis.weight_power(analysis.weight_values(model, normalization=False))), model)
    return models


def _run_models(data: RunData, models: dict[float, nn.Module], *, data_dir: str | None, device: str,
                softmax_runs: int, state_samples: int, cache: Path | None, say: Callable[[str], None]) -> ModelRuns:
    """Run the trained ``models`` on test inputs: recurrent states and softmax outputs under noise."""
    from noisynn.engine.plugins import noise_of
    from noisynn.engine.seeding import generator
    from noisynn.engine.training import load_data

    first = next(iter(data.models.values()))
    family = noise_of(first.meta)
    noise: Any = data.noise
    if not family.builtin:
        noise = family  # a user's noise class, with its parameters
    elif noise is None:  # a `noisynn train` directory: its store names no noise, the checkpoints do
        noise = family.kind
    runs = ModelRuns(noise=noise, layers=analysis.count_noisy_layers(next(iter(models.values()))))
    st_lo, st_hi = min(models), max(models)
    meta_lo = data.models[st_lo].meta
    spec = meta_lo.spec
    try:
        test = load_data(meta_lo.model, meta_lo.dataset, "test", data_dir=data_dir, device=device,
                         allow_partial=spec.get("allow_partial", False), data_options=spec.get("data_options") or {})
    except NoisynnError as exc:
        data.notes.append(f"LSTM-state and softmax figures skipped: test data unavailable ({str(exc).splitlines()[0]})")
        return runs
    grid = analysis.accuracy_grid(data.points)
    expected = data.expected
    sv_hi = max(expected["sigma_val"]) if expected else (float(grid.sigma_val.max()) if len(grid.sigma_val) else 1.0)
    if sv_hi <= 0:
        sv_hi = 1.0

    def acc_at(st: float, sv: float) -> float | None:
        i, j = np.flatnonzero(grid.sigma_train == st), np.flatnonzero(np.isclose(grid.sigma_val, sv))
        if len(i) and len(j) and np.isfinite(grid.accuracy[i[0], j[0]]):
            return float(grid.accuracy[i[0], j[0]])
        return None

    if analysis.recurrent_layer(models[st_lo]) is not None:  # LSTM / RNN states
        x = test.x[:state_samples]
        runs.state_pairs = [(st_lo, 0.0), (st_lo, sv_hi)] + ([(st_hi, sv_hi)] if st_hi != st_lo else [])
        runs.state_count = len(x)
        runs.states = {"h": [], "c": []}
        for st, sv in runs.state_pairs:
            say(f"report: recurrent states, σ_train = {st:g}, σ_val = {sv:g}")
            gen = generator(0, "report-states", data.models[st].meta.sha256, float(sv))
            for key, values in analysis.recurrent_states(models[st], x, noise, sv, generator=gen).items():
                runs.states[key].append({"label": f"σ_train = {st:g}, σ_val = {sv:g}", "values": values,
                                         "accuracy": acc_at(st, sv),
                                         "noise_std": sv if (noise == "additive" and sv > 0) else None})
    if softmax_runs > 0:  # softmax runs of one input
        idx = analysis.pick_input(test.y, 6)
        runs.softmax_input = (idx, int(test.y[idx]))
        runs.softmax_sigmas = [round(float(v), 3) for v in np.linspace(0.0, sv_hi, 6)]
        runs.softmax_runs = softmax_runs
        for st in sorted({st_lo, st_hi}):
            sha = data.models[st].meta.sha256
            probs: dict[float, np.ndarray] = {}
            for sv in runs.softmax_sigmas:
                path = cache / f"softmax-{sha[:16]}-{idx}-{sv:g}-{softmax_runs}.npy" if cache is not None else None
                if path is not None and path.is_file():
                    probs[sv] = np.load(path)
                    continue
                say(f"report: {softmax_runs} noisy runs of one input, σ_train = {st:g}, σ_val = {sv:g}")
                gen = generator(0, "report-softmax", sha, float(sv))
                probs[sv] = analysis.softmax_runs(models[st], test.x[idx], noise, sv, softmax_runs if sv > 0 else 1,
                                                  generator=gen)
                if sv == 0:  # exact inference: every run is the same
                    probs[sv] = np.repeat(probs[sv], softmax_runs, axis=0)
                if path is not None:
                    path.parent.mkdir(exist_ok=True)
                    np.save(path, probs[sv])
            runs.softmax[st] = probs
    return runs


def build_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    data_dir: str | None = None,
    device: str = "cpu",
    softmax_runs: int = 10_000,
    state_samples: int = 300,
    model_figures: bool = True,
    log: Callable[[str], None] | None = None,
) -> Report:
    """Write the report of ``run_dir`` into ``out`` (default ``run_dir/report``): :func:`collect`, then :func:`render`.

    Args:
        run_dir: a sweep's ``--out`` directory (``results.sqlite``, ``models/``).
        out: the report folder (created); it is self-contained: ``report.html``
            references the PNGs beside it.
        data_dir: where the data sets are (for the figures that run a model on test
            inputs: LSTM states, softmax runs, stroke lengths).
        device: where those models run.
        softmax_runs: noisy runs of the one test input (paper 2: 10,000).
        state_samples: test samples whose LSTM states are collected.
        model_figures: ``False`` skips the figures that load checkpoints.
        log: called with progress messages.

    Raises:
        ReportError: ``run_dir`` has no results database.
    """
    rd = RunDir(Path(run_dir))
    rd.existing_store(ReportError)
    folder = Path(out) if out is not None else rd.report
    folder.mkdir(parents=True, exist_ok=True)
    data = collect(rd.path, data_dir=data_dir, device=device, softmax_runs=softmax_runs, state_samples=state_samples,
                   model_figures=model_figures, cache=folder / "cache", log=log)
    return render(data, folder)


# -- render: figures, tables and the page, from RunData alone --------------------------------------
def render(data: RunData, out: Path) -> Report:
    """Write the figures, the CSV tables and ``report.html`` of ``data`` into ``out`` (runs no model)."""
    from noisynn import __version__

    w = _Writer(out)
    report = Report(html=out / "report.html", out=out, meta=data.meta, comparison=data.comparison,
                    claims=data.claims, notes=list(data.notes))
    w.csv("comparison.csv", data.comparison, [
        "id", "paper", "source", "row", "experiment", "kind", "sigma_train", "sigma_val", "votes", "value",
        "measured", "difference", "stderr", "n_runs", "votes_measured", "point_id", "measured_best",
        "measured_best_sigma_train", "profile", "note", "matched_by"])
    w.csv("claims.csv", data.claims, ["id", "paper", "source", "experiment", "text", "status", "measured", "at",
                                      "coverage", "detail"])
    sections: list[tuple[str, str, str] | None] = [None]  # (id, title, html); the comparison goes first, last made
    sections.append(("accuracy", "Accuracy against σ_val", _accuracy_section(data, w)))
    sections.append(_adversarial_section(data, w))
    sections.append(_learning_section(data, w))
    models_html: list[str] = []
    weight_cmp: list[dict] = []
    if data.models:
        sections.append(("weights", "Weights", _weights_section(data, w, models_html, weight_cmp)))
    if data.runs is not None:
        sections.append(_states_section(data.runs, data.title, w))
        sections.append(_softmax_section(data.runs, data.title, w))
    if data.votes:
        sections.append(("voting", "Voting", _voting_section(data.votes, w, data.title, data.noise,
                                                             data.runs.layers if data.runs else None, data.points)))
    sections.append(_chips_section(data, w))
    runs = analysis.runs_summary(data.points, published.paper_runs(data.experiment) or _paper_runs_for_model(data.meta))
    sections.append(("runs", "Noisy runs used", _runs_html(runs, data.experiment)))
    sections.append(_strokes_section(data, w))
    if weight_cmp:
        w.csv("weight_power_comparison.csv", weight_cmp, ["id", "paper", "source", "experiment", "quantity",
                                                          "sigma_train", "value", "measured", "difference",
                                                          "measured_without_norm"])
    sections[0] = ("published", "Published against measured",
                   _comparison_html(data.comparison, data.claims, data.matched, data.profile, data.meta, weight_cmp))
    shown = [s for s in sections if s is not None]
    report.html.write_text(page(f"noisynn report: {data.title}", _page_body(data, shown, models_html, w.tables,
                                                                            report.notes, __version__)),
                           encoding="utf-8")
    report.figures, report.tables = w.figures, w.tables
    return report


def _page_body(data: RunData, sections: list[tuple[str, str, str]], models_html: list[str], tables: list[str],
               notes: list[str], version: str) -> str:
    summary = _summary_html(data.run_dir.path, data.meta, data.profile, data.points, data.noisy, data.votes,
                            data.epochs, data.expected, models_html)
    nav = "<nav><h2>Contents</h2><ul>" + "".join(
        f'<li><a href="#{sid}">{esc(stitle)}</a></li>' for sid, stitle, _ in sections) + (
        '<li><a href="#files">Files and notes</a></li></ul></nav>')
    files = ("<section id=\"files\"><h2>Files</h2><p>CSV tables: "
             + ", ".join(f'<a href="{esc(t)}">{esc(t)}</a>' for t in tables)
             + ". Every figure is also an SVG beside its PNG.</p>"
             + ("<h3>Notes</h3><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>" if notes else "")
             + "</section>")
    return (f"<header><h1>noisynn report: {esc(data.title)}</h1>{summary}</header>\n{nav}\n"
            + "\n".join(f'<section id="{sid}"><h2>{esc(stitle)}</h2>\n{shtml}\n</section>'
                        for sid, stitle, shtml in sections)
            + f"\n{files}\n<footer><p class=\"note\">Generated by noisynn {esc(version)} on "
            f"{esc(time.strftime('%Y-%m-%d %H:%M:%S'))} from <code>{esc(data.run_dir.path)}</code>.</p></footer>")


def _accuracy_section(data: RunData, w: _Writer) -> str:
    """Accuracy and error rate against σ_val, the grid; ``points.csv`` and ``grid_accuracy.csv``."""
    noisy, title, noise, expected = data.noisy, data.title, data.noise, data.expected
    body = []
    if noisy:
        w.fig("accuracy", figures.accuracy_vs_sigma(noisy, title=title, noise=noise))
        w.fig("error_rate", figures.accuracy_vs_sigma(noisy, error_rate=True, title=title, noise=noise))
        w.fig("heatmap", figures.accuracy_heatmap(noisy, title=title, noise=noise,
                                                  sigma_train=expected["sigma_train"] if expected else (),
                                                  sigma_val=expected["sigma_val"] if expected else ()))
        body += [
            figure("accuracy", "accuracy against sigma_val",
                   "Accuracy against σ_val, one curve per σ_train (paper 1, figs. 2 and 10; paper 2, figs. 2, 6, 7). "
                   "Each point is the mean over the noisy runs, the error bar its standard error; the red dashed "
                   "line is σ_train = σ_val = 0."),
            figure("error_rate", "error rate against sigma_val",
                   "Error rate (100 − accuracy) on a logarithmic axis, as paper 2 plots it."),
            figure("heatmap", "accuracy grid",
                   "The (σ_train × σ_val) grid, accuracy (%) in each cell; grey cells are not measured (yet)."),
        ]
    else:
        body.append("<p class=\"note\">No noisy point has been measured yet.</p>")
    w.csv("points.csv", data.points, ["id", "experiment", "model", "dataset", "noise", "kind", "sigma_train",
                                      "sigma_val", "votes", "n_runs", "seed", "accuracy", "stderr", "seconds",
                                      "checkpoint"])
    grid = analysis.accuracy_grid(data.points)
    grid_rows = []
    for i, st in enumerate(grid.sigma_train):
        row = {"sigma_train": st}
        for j, sv in enumerate(grid.sigma_val):
            row[f"{sv:g}"] = "" if not np.isfinite(grid.accuracy[i, j]) else grid.accuracy[i, j]
        grid_rows.append(row)
    w.csv("grid_accuracy.csv", grid_rows, ["sigma_train"] + [f"{sv:g}" for sv in grid.sigma_val])
    return "\n".join(body)


def _adversarial_section(data: RunData, w: _Writer) -> tuple[str, str, str] | None:
    """Accuracy on adversarial examples against σ_val (paper 2, sec. 4), None without attack points."""
    kinds = sorted({p["kind"] for p in data.points if p["kind"] in ADVERSARIAL_KINDS})
    if not kinds:
        return None
    body = []
    for kind in kinds:
        stem = kind.replace("adversarial", "adv").replace("-", "_")
        w.fig(stem, figures.accuracy_vs_sigma(data.points, kind=kind, title=data.title, noise=data.noise))
        body.append(figure(stem, f"{kind} accuracy against sigma_val",
                           f"Accuracy on {esc(ADVERSARIAL_KINDS[kind])} against σ_val, one curve per σ_train "
                           "(paper 2, table 11); the red line is the natural accuracy at σ_train = σ_val = 0."))
    return ("adversarial", "Adversarial examples under noisy inference", "\n".join(body))


def _learning_section(data: RunData, w: _Writer) -> tuple[str, str, str] | None:
    """The learning curves and their CSVs, None when no epoch is recorded."""
    if not data.epochs:
        return None
    w.fig("learning_curves", figures.learning_curves(data.epochs, curve=data.curve, title=data.title))
    if data.curve:
        w.csv("learning_curves_batches.csv", data.curve, ["experiment", "model", "noise", "sigma_train", "seed",
                                                          "batches", "epoch", "val_loss", "val_accuracy"])
    w.csv("learning_curves.csv", data.epochs, ["experiment", "model", "noise", "sigma_train", "seed", "epoch",
                                               "batches", "train_loss", "train_accuracy", "val_loss",
                                               "val_accuracy", "seconds", "checkpoint"])
    return ("learning", "Learning curves", figure(
        "learning_curves", "learning curves",
        "Validation accuracy and loss (noise-free, on the test split, after every epoch; with "
        "<code>curve_every</code>, also every few mini-batches on a fixed test subset) against the number "
        "of mini-batches trained, one curve per σ_train (paper 2, fig. 3)."))


def _weights_section(data: RunData, w: _Writer, models_html: list[str], weight_cmp: list[dict]) -> str:
    """Weight histograms and power of the trained models; their table goes to ``models_html``, the comparison
    with the published weight power to ``weight_cmp``."""
    power_rows = []
    has_norm = False
    for st, m in data.models.items():
        pw, no_norm = m.power, m.power_without_norm
        has_norm = has_norm or no_norm["count"] != pw["count"]
        metrics = m.meta.metrics or {}
        power_rows.append({"sigma_train": st, "count": pw["count"], "mean_square": pw["mean_square"], "rms": pw["rms"],
                           "max_abs": pw["max_abs"], "count_without_norm": no_norm["count"],
                           "mean_square_without_norm": no_norm["mean_square"], "rms_without_norm": no_norm["rms"],
                           "epoch": m.meta.epoch, "epochs": m.meta.epochs,
                           "clean_test_accuracy": metrics.get("val_accuracy"), "checkpoint": m.path.name})
    w.csv("weight_power.csv", power_rows, ["sigma_train", "count", "mean_square", "rms", "max_abs",
                                           "count_without_norm", "mean_square_without_norm", "rms_without_norm",
                                           "epoch", "epochs", "clean_test_accuracy", "checkpoint"])
    pub = [p for p in published.weight_power_published() if p["experiment"] in data.matched]
    w.fig("weights", figures.weight_histograms({st: m.weights for st, m in data.models.items()}, title=data.title))
    w.fig("weight_power", figures.weight_power(power_rows, published=pub, title=data.title))
    rows = []
    for r in power_rows:
        epoch = f"{r['epoch']}/{r['epochs']}" if r["epochs"] else str(r["epoch"])
        rows.append([f"{r['sigma_train']:g}", epoch, fmt_pct(r["clean_test_accuracy"]), f"{r['count']:,}",
                     f"{r['mean_square']:.4f}", f"{r['rms']:.4f}"]
                    + ([f"{r['rms_without_norm']:.4f}"] if has_norm else [])
                    + [(esc(r["checkpoint"]), {"class": "text"})])
    models_html.append("<h3>Trained models</h3>" + table(
        ["σ_train", "epochs", "clean test accuracy (%)", "weights", "E[w²]", "√E[w²]"]
        + (["√E[w²] without batch-norm scale/shift"] if has_norm else []) + [("checkpoint", {"class": "text"})],
        rows, id="models"))
    measured = {r["sigma_train"]: r for r in power_rows}
    for p in pub:
        key = "rms" if p["quantity"].startswith("sqrt") else "mean_square"
        for q in p["points"]:
            got = measured.get(sigma_key(q["sigma_train"]))
            weight_cmp.append({"id": p["id"], "paper": p["paper"], "source": p["source"], "experiment": p["experiment"],
                               "quantity": p["quantity"], "sigma_train": sigma_key(q["sigma_train"]),
                               "value": q["value"], "measured": None if got is None else got[key],
                               "difference": None if got is None else got[key] - q["value"],
                               "measured_without_norm": None if got is None or not has_norm
                               else got[key + "_without_norm"], "text": p["text"]})
    return "\n".join([
        figure("weights", "weight histograms",
               "Distribution of all trainable parameters of each model (paper 1, figs. 5 and 9). \"Weights\" are "
               "all trainable parameters: weight matrices and kernels, biases (the papers count biases as weights) "
               "and trainable batch-norm scale/shift; batch-norm running statistics are not weights."),
        figure("weight_power", "weight power",
               "E[w²] (paper 1: 0.013 → 0.037 for the row LSTM, 0.018 → 0.042 for the stroke LSTM) and √E[w²] "
               "(paper 2, table 4) per model; red markers: published values for this experiment (also tabulated "
               "under \"Published against measured\")."),
    ])


def _states_section(runs: ModelRuns, title: str, w: _Writer) -> tuple[str, str, str] | None:
    """The distributions of the recurrent states (collected by :func:`collect`), None without them."""
    if not runs.states:
        return None
    parts = []
    pairs = runs.state_pairs
    for key, what in (("h", "output (hidden) state h_t"), ("c", "internal (cell) state c_t")):
        if runs.states.get(key):
            stem = f"states_{key}"
            w.fig(stem, figures.state_distributions(runs.states[key], state=key, title=title))
            pair_text = "; ".join(f"σ_train = {st:g}, σ_val = {sv:g}" for st, sv in pairs)
            parts.append(figure(stem, f"distribution of the {what}",
                                f"Distribution of the {what} at every time step over {runs.state_count} test "
                                f"samples, noise-free and noisy (paper 1, figs. 3/4 and 7/8), for ({esc(pair_text)}): "
                                "conventional training without and with inference noise"
                                + (", and noise-injected training with inference noise" if len(pairs) > 2 else "")
                                + ". Colour: time step"
                                + ("; dashed blue: the density of the additive noise N(0, σ_val²)."
                                   if runs.noise == "additive" else ".")))
    return ("states", "Recurrent states", "\n".join(parts))


def _softmax_section(runs: ModelRuns, title: str, w: _Writer) -> tuple[str, str, str] | None:
    """The softmax outputs of one test input over noisy runs (collected by :func:`collect`), None without them."""
    if not runs.softmax:
        return None
    idx, label = runs.softmax_input
    sigmas = runs.softmax_sigmas
    parts = []
    for st, probs in runs.softmax.items():
        stem = f"softmax_st{st:g}"
        w.fig(stem, figures.softmax_distribution(probs, label=label, title=f"{title}, σ_train = {st:g}"))
        parts.append(figure(stem, f"softmax distribution sigma_train {st:g}",
                            f"Histogram of each of the {probs[sigmas[0]].shape[1]} softmax outputs of test input "
                            f"#{idx} (class {label}) over {runs.softmax_runs:,} independent noisy runs at σ_val = "
                            f"{', '.join(f'{s:g}' for s in sigmas)}; model trained with σ_train = {st:g} "
                            "(paper 2, figs. 4 and 5: σ_train = 0 and 1). Mass at the right means the class is "
                            "often given a high probability."))
    return ("softmax", "Softmax outputs over noisy runs", "\n".join(parts))


def _strokes_section(data: RunData, w: _Writer) -> tuple[str, str, str] | None:
    """The histogram of the MNIST stroke lengths (a strokes run), None otherwise."""
    if data.stroke_lengths is None:
        return None
    lengths, max_len = data.stroke_lengths
    w.fig("stroke_lengths", figures.stroke_lengths(lengths, max_len=max_len, title="MNIST pen strokes, training split"))
    return ("strokes", "Stroke-sequence lengths", figure(
        "stroke_lengths", "stroke length histogram",
        "Number of pen points per MNIST training digit (paper 1, fig. 6: mostly between 20 and 60); the "
        "LSTM reads the first 50."))


# ---------------------------------------------------------------------------------------------
def _paper_runs_for_model(meta: dict) -> int:
    """The runs per point of the paper a network comes from (paper 1: 40 for the RNNs; paper 2: 50)."""
    return 40 if str(meta.get("model", "")).startswith(("lstm-rows", "rnn-")) else 50


def _summary_html(run_dir, meta, profile, points, noisy, votes, epochs, expected, models_html) -> str:
    cls, text = PROFILE_TEXT.get(profile, ("other", f"Profile <b>{esc(profile)}</b>."))
    parts = [f'<p class="banner {cls}">{text}</p>']
    rows = [(esc(k), esc(v)) for k, v in sorted(meta.items())]
    rows.append(("run directory", esc(run_dir)))
    done = f"{len(noisy)} noisy points, {len(votes)} voting points, {len(epochs)} training epochs recorded"
    if expected:
        complete = len(noisy) >= expected["noisy"] and len(votes) >= expected["vote"]
        done += (f" of {expected['noisy']} noisy and {expected['vote']} voting points planned"
                 + (": <b>complete</b>" if complete else ": <b>partial sweep</b> (what is finished so far)"))
    rows.append(("progress", done))
    parts.append(table([("key", {"class": "text"}), ("value", {"class": "text"})],
                       [[(k, {"class": "text"}), (v, {"class": "text"})] for k, v in rows], id="run-meta"))
    parts.extend(models_html)
    return "\n".join(parts)


def _comparison_html(rows: list[dict], claim_rows: list[dict], matched: dict, profile: str, meta: dict,
                     weight_cmp: list[dict]) -> str:
    if not matched:
        return ("<p>No published number belongs to this run: the papers' tables and quoted figures are mapped to the "
                "experiments <code>paper1-*</code> and <code>paper2-*</code> (or a run of the same network, data set "
                "and noise). The measured grid is in the sections below.</p>")
    parts = ["<p>Published cells matched: " + "; ".join(f"<b>{esc(k)}</b> ({esc(v)})" for k, v in matched.items())
             + f". All measured values come from this run, profile <b>{esc(profile)}</b>.</p>"]
    covered = [r for r in rows if r["measured"] is not None]
    missing = len(rows) - len(covered)
    if covered:
        headers: list[Cell] = [
            "paper", ("source", {"class": "text"}), ("row", {"class": "text"}), "σ_train", "σ_val", "K",
            "paper (%)", "measured (%)", "Δ (pp)", "SE (pp)", "runs", "measured best (%) at σ_train",
            ("profile", {"class": "text"}), ("note", {"class": "text"})]
        body: list[list[Cell]] = []
        for r in covered:
            best = ("–" if r["measured_best"] is None
                    else f"{fmt_pct(r['measured_best'])} at {r['measured_best_sigma_train']:g}")
            body.append([
                esc("1" if r["paper"] == "paper1" else "2"), (esc(r["source"]), {"class": "text"}),
                (esc(r["row"]), {"class": "text"}), f"{r['sigma_train']:g}", f"{r['sigma_val']:g}", str(r["votes"]),
                (fmt_pct(r["value"], 1), {"class": "paper", "data-value": repr(r["value"])}),
                (fmt_pct(r["measured"]), {"class": "measured", "data-point-id": r["point_id"],
                                          "data-value": repr(r["measured"])}),
                fmt_pp(r["difference"]), fmt_pp(r["stderr"], sign=False), str(r["n_runs"]), best,
                (esc(r["profile"]), {"class": "text"}), (esc(r["note"]), {"class": "text"}),
            ])
        parts.append(table(headers, body, id="comparison"))
        parts.append("<p class=\"note\">Δ = measured − paper in percentage points; SE = standard error of the "
                     "measured mean over its runs (voting: over its trials). The paper's numbers are means of 40 "
                     "(paper 1) or 50 (paper 2) runs, printed to 0.1%. \"Best\" rows take the σ_train the paper "
                     "names for that column; the last column gives this run's own best at that σ_val.</p>")
    else:
        parts.append("<p>None of the published cells is covered by this run yet.</p>")
    if missing:
        parts.append(f"<p class=\"note\">{missing} further published cell(s) of these experiments are not covered by "
                     "this run (σ_train / σ_val / K not in its grid, or not measured yet); comparison.csv lists them "
                     "with an empty measured value.</p>")
    if claim_rows:
        body = []  # the same type as above
        for c in claim_rows:
            status = c["status"]
            cls = "pass" if status.startswith("pass") else "fail" if status == "fail" else "na"
            body.append([(esc(c["source"]), {"class": "text"}), (esc(c["text"]), {"class": "text"}),
                         (esc(status), {"class": cls}), (esc(c["detail"]), {"class": "text"}),
                         (esc(c["coverage"]), {"class": "text"})])
        parts.append("<h3>Bounds stated in the text (claims)</h3>")
        claim_headers: list[Cell] = [("source", {"class": "text"}), ("claim", {"class": "text"}), "status",
                                     ("measured", {"class": "text"}), ("coverage", {"class": "text"})]
        parts.append(table(claim_headers, body, id="claims"))
    if weight_cmp:
        norm = any(r["measured_without_norm"] is not None for r in weight_cmp)
        parts.append("<h3>Weight power</h3>")
        weight_headers: list[Cell] = ["paper", ("source", {"class": "text"}), ("quantity", {"class": "text"}),
                                      "σ_train", "paper", "measured", "Δ"]
        weight_rows: list[list[Cell]] = []
        for r in weight_cmp:
            row: list[Cell] = [
                esc("1" if r["paper"] == "paper1" else "2"), (esc(r["source"]), {"class": "text"}),
                (esc(r["quantity"].replace("sqrt(E[w^2])", "√E[w²]").replace("E[w^2]", "E[w²]")), {"class": "text"}),
                f"{r['sigma_train']:g}", f"{r['value']:.3f}",
                "–" if r["measured"] is None else f"{r['measured']:.4f}",
                "–" if r["difference"] is None else f"{r['difference']:+.4f}"]
            if norm:
                row.append("–" if r["measured_without_norm"] is None else f"{r['measured_without_norm']:.4f}")
            weight_rows.append([*row, (esc(profile), {"class": "text"})])
        parts.append(table(weight_headers + (["measured without batch-norm scale/shift"] if norm else [])
                           + [("profile", {"class": "text"})], weight_rows, id="weight-power-comparison"))
        parts.append("<p class=\"note\">Weights: every trainable parameter (weight matrices and kernels, biases, "
                     "trainable batch-norm scale/shift), pooled; the papers count biases as weights. Where the network "
                     "has batch-norm, the power without its scale/shift (γ ≈ 1 weighs heavily) is given too.</p>")
    return "\n".join(parts)


def _runs_html(runs: dict, experiment: str) -> str:
    if not runs["points"]:
        return "<p>No noisy point yet.</p>"
    text = (f"<p>{runs['points']} noisy points used {runs['runs_used']:,} runs in total "
            f"(per point: min {runs['runs_min']}, median {runs['runs_median']:g}, max {runs['runs_max']}; "
            "σ_val = 0 is exact and needs one run).")
    if runs["paper_total"]:
        saving = runs["saving"]
        amount = (f"<b>{100 * saving:.0f}% fewer runs</b>" if saving >= 0
                  else f"<b>{-100 * saving:.0f}% more runs</b>")
        text += (f" The paper's fixed {runs['paper_runs']} runs per point would have used {runs['paper_total']:,}: "
                 f"this run used {amount}" + (
                     ", the number of runs varying from point to point (<code>runs = \"auto\"</code>: runs are "
                     "added until the 95% confidence half-width of each mean reaches the target)"
                     if runs["varying"] else "") + ".")
    elif runs["varying"]:
        text += " The number of runs varies between points (<code>runs = \"auto\"</code>)."
    return text + "</p>"


def _voting_section(votes: list[dict], w: _Writer, title: str, noise: str | None, layers: int | None,
                    points: list[dict]) -> str:
    parts = []
    w.fig("votes", figures.vote_accuracy(votes, title=title))
    parts.append(figure("votes", "accuracy against the number of votes",
                        "Accuracy of majority voting (the mode of K independent noisy inferences) against K, one "
                        "curve per σ_val, one panel per σ_train (paper 2, fig. 11); error bars: standard error over "
                        "the independent voting trials."))
    kmax = max(int(p["votes"]) for p in votes)
    top = [p for p in votes if int(p["votes"]) == kmax]
    if len({p["sigma_val"] for p in top}) >= 2:
        stem = f"vote_heatmap_k{kmax}"
        w.fig(stem, figures.accuracy_heatmap(top, kind="vote", votes=kmax, title=title, noise=noise))
        parts.append(figure(stem, "voting accuracy grid",
                            f"Accuracy with K = {kmax} votes per (σ_train, σ_val) (paper 2, figs. 8–10 (b))."))
        stem = f"vote_accuracy_k{kmax}"
        w.fig(stem, figures.accuracy_vs_sigma(top, kind="vote", votes=kmax, title=title, noise=noise))
        parts.append(figure(stem, "voting accuracy against sigma_val",
                            f"Accuracy with K = {kmax} votes against σ_val, one curve per σ_train."))
    ks = tuple(k for k in (1, 2, 3, 5, 10, 20, 50, kmax) if k <= kmax)
    if layers:
        rows = analysis.voting_cost(points, layers)
        w.csv("voting_cost.csv", rows, ["sigma_train", "sigma_val", "votes", "accuracy", "stderr", "trials", "gain",
                                        "layers_L", "latency_pipelined_T", "latency_sequential_T",
                                        "latency_overhead", "power_P"])
        # the page shows, at each sigma_val, the sigma_train with the best accuracy at K max
        best: dict[float, tuple[float, float]] = {}
        for r in rows:
            if r["votes"] == kmax and (r["sigma_val"] not in best or r["accuracy"] > best[r["sigma_val"]][1]):
                best[r["sigma_val"]] = (r["sigma_train"], r["accuracy"])
        shown = [r for r in rows if r["votes"] in ks and r["sigma_val"] in best
                 and r["sigma_train"] == best[r["sigma_val"]][0]]
        parts.append(f"<h3>Cost of voting (paper 2, sec. 3.3)</h3><p>L = {layers} noisy layers an inference passes "
                     "through (each noise site once; a recurrent layer once per time step). With every layer taking "
                     "time T, K pipelined votes take (L + K)·T (the paper's count; a pipeline fed one input per T "
                     "finishes after (L + K − 1)·T) instead of K·L·T one after another, against L·T for one "
                     "inference: a latency overhead of K / L. Power is K·P for a single inference's P, whatever the "
                     "schedule. "
                     "Shown: at each σ_val the σ_train with the best accuracy at K = "
                     f"{kmax}; voting_cost.csv has every (σ_train, σ_val, K).</p>")
        parts.append(table(
            ["σ_train", "σ_val", "K", "accuracy (%)", "gain over K = 1 (pp)", "latency, pipelined (T)",
             "latency, sequential (T)", "latency overhead K/L", "power (P)"],
            [[f"{r['sigma_train']:g}", f"{r['sigma_val']:g}", str(r["votes"]), fmt_pct(r["accuracy"]),
              fmt_pp(r["gain"]), str(r["latency_pipelined_T"]), str(r["latency_sequential_T"]),
              f"{r['latency_overhead']:.2f}", str(r["power_P"])] for r in shown], id="voting-cost"))
    w.csv("votes.csv", votes, ["sigma_train", "sigma_val", "votes", "n_runs", "accuracy", "stderr", "seconds"])
    return "\n".join(parts)


def _chips_section(data: RunData, w: _Writer) -> tuple[str, str, str] | None:
    """The hardware section (a preset's ``[hardware]`` table): accuracy against time after programming with
    chip-to-chip bands, voting on a chip, their table and CSV; None when the store has no chips points."""
    rows, title = data.chips, data.title
    if not rows:
        return None
    hardware = ", ".join(sorted({r["hardware"] for r in rows}))
    single = [r for r in rows if not r["kind"].startswith("chips-vote")]
    voted = [r for r in rows if r["kind"].startswith("chips-vote")]
    w.csv("chips.csv", rows, ["experiment", "model", "noise", "sigma_train", "training", "kind", "hardware", "t",
                              "compensation", "votes", "n_chips", "n_reads", "accuracy", "chip_spread",
                              "read_spread", "per_chip", "seconds", "checkpoint"])
    body = []
    if single:
        w.fig("chips_time", figures.accuracy_vs_time(single, title=title, hardware=hardware))
        body.append(figure("chips_time", "accuracy against time after programming",
                           "Accuracy on programmed chips against the time after programming (log axis), one line "
                           "per training kind, solid with global drift compensation, dashed without; the band is "
                           "the mean ± the chip-to-chip spread (sample std of the per-chip means). Every model is "
                           "read on the same chips at every time."))
        times = sorted({r["t"] for r in single})
        head = ["training", "compensation"] + [f"t = {t:g} s" for t in times]
        lines: dict[tuple, dict] = {}
        for r in single:
            lines.setdefault((r["training"], r["compensation"]), {})[r["t"]] = r
        cells = []
        for (name, comp), by_t in lines.items():
            cells.append([esc(name), "–" if comp is None else ("yes" if comp else "no")] + [
                (f"{fmt_pct(by_t[t]['accuracy'])} ± {fmt_pct(by_t[t]['chip_spread'])} "
                 f"[{fmt_pct(by_t[t]['read_spread'])}]") if t in by_t else "–" for t in times])
        body.append("<p>Accuracy (%): mean over chips × reads ± chip-to-chip spread [read-to-read spread].</p>"
                    + table(head, cells))
    if voted:
        w.fig("chips_votes", figures.chip_vote_accuracy(voted, title=title, hardware=hardware))
        body.append(figure("chips_votes", "majority voting on a programmed chip",
                           "Majority voting over K reads of the same chip, accuracy against K, one line per "
                           "training kind; the band is the mean ± the chip-to-chip spread."))
    return ("hardware", "On programmed chips: accuracy against time", "\n".join(body))
