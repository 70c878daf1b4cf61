"""The papers' published numbers (``noisynn/published/papers.json``) and their match to a run.

The data file holds paper 2's tables 2, 3, 5–9 and 11 as printed (with, for every
row, the experiment preset, ``sigma_train`` and number of votes that produce each
cell), the accuracies paper 1 quotes in its text, the weight powers (paper 1, figs. 5
and 9; paper 2, table 4) and the bounds stated in the text ("> 98% for all σ_val"),
which are *claims* to check, not cells.

* :func:`published_cells` expands the tables into one :class:`PublishedCell` per
  printed number;
* :func:`cells_for_run` picks those a run directory can measure: the cells of its
  experiment, and of any shipped preset with the same network, data set and noise;
* :func:`compare` puts the measured point next to each cell;
* :func:`check_claims` evaluates the claims on the measured grid.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from importlib import resources

from noisynn.engine.store import sigma_key

__all__ = [
    "PublishedCell", "Claim", "load_published", "published_cells", "claims", "weight_power_published",
    "preset_signature", "matching_experiments", "cells_for_run", "compare", "check_claims", "paper_runs",
]


_s = sigma_key  # a sigma as the results store keys it


@functools.lru_cache(maxsize=1)
def load_published() -> dict:
    """The parsed ``papers.json`` shipped with noisynn."""
    text = (resources.files("noisynn") / "published" / "papers.json").read_text(encoding="utf-8")
    return json.loads(text)


@dataclass(frozen=True)
class PublishedCell:
    """One published accuracy and what measures it.

    Attributes:
        id: stable identifier (``p2-table2/1/0.4``: table, row, sigma_val).
        paper, source: ``paper1``/``paper2`` and the table or section.
        row: the row label as printed (``Best accu.``).
        experiment: the preset that measures it.
        kind: ``noisy`` (single noisy inference), ``vote`` or ``adversarial``.
        sigma_train, sigma_val, votes: the grid point (votes 1: no voting).
        value: the published accuracy as a fraction (0.995 for "99.5%").
        best: the row is a "Best" row: ``sigma_train`` is the one the paper names for it.
        text: the sentence or caption it comes from.
    """

    id: str
    paper: str
    source: str
    row: str
    experiment: str
    kind: str
    sigma_train: float
    sigma_val: float
    votes: int
    value: float
    best: bool = False
    text: str = ""


@dataclass(frozen=True)
class Claim:
    """A bound stated in a paper's text (checked pass/fail).

    Types: ``min_above`` (accuracy at ``sigma_train`` > ``value`` % for every sigma_val in
    ``sigma_val_range``), ``max_drop`` (accuracy at ``sigma_train`` is at most ``value``
    percentage points below the sigma_train = sigma_val = 0 reference over the range),
    ``exists_above_reference`` (some other grid point beats the reference; optionally only
    at ``sigma_val`` or above ``sigma_val_gt``).
    """

    id: str
    paper: str
    source: str
    experiment: str
    type: str
    text: str
    sigma_train: float | None = None
    sigma_val_range: tuple[float, float] | None = None
    value: float | None = None
    sigma_val: float | None = None
    sigma_val_gt: float | None = None


def published_cells(experiment: str | None = None) -> list[PublishedCell]:
    """Every published accuracy (tables and text), optionally of one experiment only."""
    doc = load_published()
    cells: list[PublishedCell] = []
    for table in doc["tables"]:
        for r, row in enumerate(table["rows"]):
            sts = row["sigma_train"]
            for c, (sv, value) in enumerate(zip(table["sigma_val"], row["values"], strict=True)):
                st = sts[c] if isinstance(sts, list) else sts
                cells.append(PublishedCell(
                    id=f"{table['id']}/{r}/{sv:g}", paper=table["paper"], source=table["source"], row=row["label"],
                    experiment=table["experiment"], kind=row.get("kind", table["kind"]), sigma_train=_s(st),
                    sigma_val=_s(sv), votes=int(row["votes"]), value=round(value / 100.0, 9),
                    best=bool(row.get("best")), text=table["caption"]))
    for q in doc["quoted"]:
        cells.append(PublishedCell(
            id=q["id"], paper=q["paper"], source=q["source"], row="quoted in the text", experiment=q["experiment"],
            kind=q["kind"], sigma_train=_s(q["sigma_train"]), sigma_val=_s(q["sigma_val"]), votes=int(q["votes"]),
            value=round(q["value"] / 100.0, 9), text=q["text"]))
    if experiment is not None:
        cells = [c for c in cells if c.experiment == experiment]
    return cells


def claims(experiment: str | None = None) -> list[Claim]:
    """The papers' stated bounds, optionally of one experiment only."""
    out = []
    for c in load_published()["claims"]:
        rng = c.get("sigma_val_range")
        out.append(Claim(id=c["id"], paper=c["paper"], source=c["source"], experiment=c["experiment"], type=c["type"],
                         text=c["text"], sigma_train=c.get("sigma_train"),
                         sigma_val_range=tuple(rng) if rng else None, value=c.get("value"),
                         sigma_val=c.get("sigma_val"), sigma_val_gt=c.get("sigma_val_gt")))
    return [c for c in out if experiment is None or c.experiment == experiment]


def weight_power_published(experiment: str | None = None) -> list[dict]:
    """Published weight powers: ``{id, paper, source, experiment, quantity, text, points}``.

    ``quantity`` is ``"E[w^2]"`` (paper 1) or ``"sqrt(E[w^2])"`` (paper 2, table 4).
    """
    rows = load_published()["weight_power"]
    return [dict(r) for r in rows if experiment is None or r["experiment"] == experiment]


def paper_runs(experiment: str) -> int | None:
    """Noisy runs per point the paper used for this experiment (paper 1: 40, paper 2: 50)."""
    papers = load_published()["papers"]
    for key in papers:
        if experiment.startswith(key):
            return int(papers[key]["runs_per_point"])
    return None


@functools.cache
def preset_signature(experiment: str) -> tuple[str, str, str, bool] | None:
    """``(model, dataset, noise, adversarial)`` of a shipped preset, or None if there is no such preset.

    ``adversarial``: the preset trains adversarially or runs attacks (paper 2, sec. 4): its
    networks are not the ones of the accuracy tables even when model, data and noise agree.
    """
    from noisynn.engine.presets import PresetError, load_plan

    try:
        plan = load_plan(experiment, "paper")
    except PresetError:
        return None
    adversarial = bool(plan.attack or plan.train.adversarial)
    return (plan.model, plan.dataset, plan.noise, adversarial)


def matching_experiments(meta: dict) -> dict[str, str]:
    """Published experiments a run measures, each with why: ``{experiment: reason}``.

    A run measures the cells of its own experiment (same preset name), and those of any
    shipped preset with the same network, data set and noise kind (``paper2-voting``
    measures table 2 and 7 cells of ``paper2-cnn6-multiplicative``).
    """
    names = {c.experiment for c in published_cells()} | {c.experiment for c in claims()}
    names |= {w["experiment"] for w in weight_power_published()}
    run = meta.get("experiment", "")
    own = preset_signature(run) if run else None
    adversarial = bool(own and own[3]) or "source_model" in meta or "attack" in meta
    signature = (meta.get("model"), meta.get("dataset"), meta.get("noise"))
    found: dict[str, str] = {}
    for name in sorted(names):
        sig = preset_signature(name)
        if name == run:
            found[name] = "same experiment"
            if sig is not None and None not in signature and sig[:3] != signature:
                found[name] = (f"same experiment name, but this run used {signature[0]} on {signature[1]} "
                               f"({signature[2]} noise) where the paper used {sig[0]} on {sig[1]} ({sig[2]} noise)")
        elif (None not in signature and sig is not None and sig[:3] == signature
              and not sig[3] and not adversarial):
            found[name] = f"same network, data set and noise as {name}"
    return found


def cells_for_run(meta: dict) -> list[PublishedCell]:
    """The published cells of the experiments a run measures (see :func:`matching_experiments`)."""
    wanted = matching_experiments(meta)
    return [c for c in published_cells() if c.experiment in wanted]


def _index(points: list[dict]) -> dict:
    """``{(kind, sigma_train, sigma_val, votes): point}`` (first seed wins)."""
    index: dict = {}
    for p in sorted(points, key=lambda p: p.get("seed", 0)):
        index.setdefault((p["kind"], _s(p["sigma_train"]), _s(p["sigma_val"]), int(p["votes"])), p)
    return index


def compare(cells: list[PublishedCell], points: list[dict]) -> list[dict]:
    """One row per published cell: the paper's value next to the measured point.

    ``points`` are the store's point dicts (:meth:`ResultStore.points`). A voting cell
    (K = 20) is measured by the ``vote`` point with that K; if the run voted with fewer
    votes at that point, its largest K is used and ``note`` says so. Rows of cells the
    run does not cover have ``measured = None``.

    Row keys: the cell's fields, plus ``measured``, ``stderr``, ``n_runs``, ``votes_measured``,
    ``difference`` (measured - paper, fraction), ``point_id``, ``note``, and for "Best"
    rows ``measured_best`` / ``measured_best_sigma_train`` (the run's own best at that
    sigma_val and votes).
    """
    index = _index(points)
    rows = []
    for cell in cells:
        row = asdict(cell)
        row.update(measured=None, stderr=None, n_runs=None, votes_measured=None, difference=None, point_id=None,
                   note="", measured_best=None, measured_best_sigma_train=None)
        point = index.get((cell.kind, cell.sigma_train, cell.sigma_val, cell.votes))
        if point is None and cell.kind == "vote":
            ks = [k for (kind, st, sv, k) in index if kind == "vote" and st == cell.sigma_train
                  and sv == cell.sigma_val and k < cell.votes]
            if ks:
                point = index[("vote", cell.sigma_train, cell.sigma_val, max(ks))]
                row["note"] = f"measured with K = {max(ks)} votes (the paper: {cell.votes})"
        if point is not None:
            row.update(measured=point["accuracy"], stderr=point["stderr"], n_runs=point["n_runs"],
                       votes_measured=int(point["votes"]), difference=point["accuracy"] - cell.value,
                       point_id=point["id"])
        if cell.best:
            k = row["votes_measured"] or cell.votes
            same = [(p["accuracy"], st) for (kind, st, sv, kk), p in index.items()
                    if kind == cell.kind and sv == cell.sigma_val and kk == k]
            if same:
                acc, st = max(same)
                row.update(measured_best=acc, measured_best_sigma_train=st)
        rows.append(row)
    return rows


def _noisy_grid(points: list[dict]) -> dict[tuple[float, float], dict]:
    return {(_s(p["sigma_train"]), _s(p["sigma_val"])): p for p in points if p["kind"] == "noisy" and p["votes"] == 1}


def check_claims(claim_list: list[Claim], points: list[dict]) -> list[dict]:
    """Evaluate each claim on the measured noisy grid.

    Returns one dict per claim: its fields plus ``status`` (``pass``, ``fail`` or ``not
    covered``), ``measured`` (the decisive number, a fraction: the minimum accuracy, the
    largest drop, or the best competitor), ``at`` (where it occurs), ``coverage`` (grid
    points used / expected) and ``detail`` (one sentence).
    """
    grid = _noisy_grid(points)
    sigma_vals = sorted({sv for (_, sv) in grid})
    out = []
    for claim in claim_list:
        row = asdict(claim)
        row.update(status="not covered", measured=None, at="", coverage="", detail="")
        if claim.type in ("min_above", "max_drop"):
            if claim.sigma_train is None or claim.value is None:  # pragma: no cover - a malformed data file
                row["detail"] = f"a {claim.type} claim needs sigma_train and value"
                out.append(row)
                continue
            st = _s(claim.sigma_train)
            lo, hi = claim.sigma_val_range or (0.0, float("inf"))
            have = [grid[(st, sv)] for sv in sigma_vals if lo - 1e-9 <= sv <= hi + 1e-9 and (st, sv) in grid]
            wanted = [sv for sv in sigma_vals if lo - 1e-9 <= sv <= hi + 1e-9]
            row["coverage"] = f"{len(have)} of {len(wanted)} σ_val of this run"
            if not have:
                row["detail"] = f"no measured point with σ_train = {st:g} in σ_val [{lo:g}, {hi:g}]"
            elif claim.type == "min_above":
                worst = min(have, key=lambda p: p["accuracy"])
                row.update(measured=worst["accuracy"], at=f"σ_val = {worst['sigma_val']:g}")
                ok = 100 * worst["accuracy"] > claim.value
                row["status"] = "fail" if not ok else ("pass (partial)" if len(have) < len(wanted) else "pass")
                row["detail"] = (f"lowest accuracy at σ_train = {st:g}: {100 * worst['accuracy']:.2f}% "
                                 f"(σ_val = {worst['sigma_val']:g}); claimed > {claim.value:g}%")
            else:
                ref = grid.get((0.0, 0.0))
                if ref is None:
                    row["detail"] = "no reference point σ_train = σ_val = 0 measured yet"
                else:
                    worst = min(have, key=lambda p: p["accuracy"])
                    drop = ref["accuracy"] - worst["accuracy"]
                    row.update(measured=drop, at=f"σ_val = {worst['sigma_val']:g}")
                    ok = 100 * drop <= claim.value + 1e-9
                    row["status"] = "fail" if not ok else ("pass (partial)" if len(have) < len(wanted) else "pass")
                    row["detail"] = (f"largest drop from {100 * ref['accuracy']:.2f}% (σ_train = σ_val = 0): "
                                     f"{100 * drop:.2f} points at σ_val = {worst['sigma_val']:g}; "
                                     f"claimed < {claim.value:g}")
        elif claim.type == "exists_above_reference":
            ref = grid.get((0.0, 0.0))
            cands = [p for (st, sv), p in grid.items() if (st, sv) != (0.0, 0.0)
                     and (claim.sigma_val is None or sv == _s(claim.sigma_val))
                     and (claim.sigma_val_gt is None or sv > claim.sigma_val_gt)]
            row["coverage"] = f"{len(cands)} candidate points"
            if ref is None or not cands:
                row["detail"] = "needs the reference σ_train = σ_val = 0 and at least one other point"
            else:
                best = max(cands, key=lambda p: p["accuracy"])
                row.update(measured=best["accuracy"],
                           at=f"σ_train = {best['sigma_train']:g}, σ_val = {best['sigma_val']:g}")
                row["status"] = "pass" if best["accuracy"] > ref["accuracy"] else "fail"
                row["detail"] = (f"best other point {100 * best['accuracy']:.2f}% ({row['at']}) vs reference "
                                 f"{100 * ref['accuracy']:.2f}%")
        else:  # pragma: no cover - a malformed data file
            row["detail"] = f"unknown claim type {claim.type!r}"
        out.append(row)
    return out
