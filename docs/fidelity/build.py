"""Write paper 1's `papers`-profile section of docs/reproduction.md from the kept stores alone.

Issue 18 runs paper 1's three experiments at the papers' own schedule (``--profile
papers``). Their results stores are kept in this folder (``keep.py save``) together with
the weight power of every finished model (``*.papers.weights.json``, computed by
``keep.py save`` from the checkpoints, which are never committed). This script reads
only those committed files and writes, between ``<!-- BEGIN papers -->`` and
``<!-- END papers -->`` of ``docs/reproduction.md``, one section per experiment:

* the state of the run (models stopped, points measured of 11 x 11);
* every finished model: epochs run, best epoch, why it stopped, clean test accuracy;
* the measured grid (accuracy and its standard error over the 40 runs), cells not yet
  measured left empty;
* the published cells next to the measured ones (difference, SE, > 2 points marked);
* the papers' claims checked on what is measured (``pass (partial)`` while the row is
  incomplete);
* the weight power E[w^2] per sigma_train against the paper's;

and then the checks (``docs/checks/*-patience15.toml``, stores in ``checks/``): one model of a
grid trained with a longer patience, beside the grid's own model.

Nothing here depends on a run directory or a checkpoint, so the document can be
regenerated anywhere from the repository::

    python docs/fidelity/build.py            # rewrite the section
    python docs/fidelity/build.py --check    # exit 1 if the section is not what the stores give
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "reproduction.md"
EXPERIMENTS = {
    "paper1-lstm-rows": "Paper 1, fig. 2(a): LSTM reading MNIST row by row, additive noise",
    "paper1-lstm-strokes": "Paper 1, fig. 2(b): LSTM reading the first 50 pen movements, additive noise",
    "paper1-rnn-rows": "Paper 1, fig. 10: vanilla RNN reading MNIST row by row, additive noise",
}
GRID = [round(0.1 * i, 1) for i in range(11)]
BEGIN, END = "<!-- BEGIN papers -->", "<!-- END papers -->"


def store_path(name: str) -> Path:
    return HERE / f"{name}.papers.sqlite"


def weights_path(name: str) -> Path:
    return HERE / f"{name}.papers.weights.json"


def _pct(x: float | None, digits: int = 1) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _key(x: float) -> float:
    return round(float(x), 9)


def read(name: str) -> dict:
    """The kept store of one experiment as plain data (points, stopping rows, epochs, meta)."""
    from noisynn.engine import ResultStore

    with ResultStore(store_path(name), readonly=True) as store:
        return {"meta": store.meta(), "points": store.points(kind="noisy"), "stopping": store.stopping(),
                "epochs": store.epochs()}


def section(name: str, title: str) -> list[str]:
    from noisynn.report import published

    if not store_path(name).exists():
        return [f"### {title}", "", f"*Not started: no `docs/fidelity/{store_path(name).name}` yet.*", ""]
    data = read(name)
    points = [p for p in data["points"] if p["votes"] == 1]
    grid = {(_key(p["sigma_train"]), _key(p["sigma_val"])): p for p in points}
    stopping = {_key(s["sigma_train"]): s for s in data["stopping"]}
    epochs: dict[float, list[dict]] = {}
    for e in data["epochs"]:
        epochs.setdefault(_key(e["sigma_train"]), []).append(e)
    done = len(grid)
    state = "complete" if done == 121 and len(stopping) == 11 else "in progress"
    lines = [f"### {title}", "",
             f"`noisynn sweep {name} --profile papers` — store `docs/fidelity/{store_path(name).name}`: "
             f"**{state}**, {len(stopping)} of 11 models stopped, {done} of 121 points measured.", ""]

    rows = []
    for st in GRID:
        s, ran = stopping.get(st), epochs.get(st, [])
        minutes = f"{sum(e['seconds'] for e in ran) / 60:.0f}"
        evaluating = f"{sum(p['seconds'] for (t, _), p in grid.items() if t == st) / 60:.0f}"
        if s is not None:
            clean = grid.get((st, 0.0))
            rows.append([f"{st:g}", s["epochs_run"], s["best_epoch"], s["stopped"],
                         _pct(clean["accuracy"], 2) if clean else "", minutes, evaluating])
        elif ran:
            rows.append([f"{st:g}", f"{max(e['epoch'] for e in ran)} so far", "", "training", "", minutes, evaluating])
    if rows:
        train_min = sum(e["seconds"] for ran in epochs.values() for e in ran) / 60
        eval_min = sum(p["seconds"] for p in grid.values()) / 60
        lines += ["Models (early stopping on the held-out part of the training set):", ""]
        lines += _table(["σ_train", "epochs run", "best epoch", "stopped", "clean test %", "training min",
                         "evaluation min"], rows)
        lines += ["", f"Busy time, summed from the store's epoch and point times: training {train_min:.0f} min, "
                      f"evaluation {eval_min:.0f} min, {(train_min + eval_min) / 60:.1f} h in all (one thread per "
                      "task, on machines shared with other work).", ""]

    measured = [st for st in GRID if any((st, sv) in grid for sv in GRID)]
    if measured:
        lines += ["Measured accuracy (%) ± standard error over the runs, whole test set "
                  "(rows σ_train, columns σ_val):", ""]
        body = []
        for st in measured:
            cells = []
            for sv in GRID:
                p = grid.get((st, sv))
                cells.append("" if p is None else (_pct(p["accuracy"]) + (f" ± {_pct(p['stderr'], 2)}"
                                                                          if p["n_runs"] > 1 else "")))
            body.append([f"{st:g}"] + cells)
        lines += _table(["σ_train \\ σ_val"] + [f"{sv:g}" for sv in GRID], body) + [""]

    cmp = [r for r in published.compare(published.published_cells(name), points) if r["measured"] is not None]
    if cmp:
        lines += ["Published against measured (%; Δ = measured − paper; **bold**: more than 2 points apart):", ""]
        body = []
        for r in cmp:
            d = 100 * r["difference"]
            dd = f"{d:+.1f}"
            body.append([r["source"], f"{r['sigma_train']:g}", f"{r['sigma_val']:g}", f"{100 * r['value']:.1f}",
                         _pct(r["measured"]), _pct(r["stderr"], 2), f"**{dd}**" if abs(d) > 2 else dd])
        lines += _table(["source", "σ_train", "σ_val", "paper", "measured", "SE", "Δ"], body) + [""]

    claims = published.check_claims(published.claims(name), points)
    if claims:
        lines += ["The paper's claims on what is measured:", ""]
        partial = "" if state == "complete" else " (so far)"
        lines += _table(["claim", "status", "detail"],
                        [[c["text"], c["status"] + (partial if c["status"] != "not covered" else ""),
                          c["detail"] or c["coverage"]] for c in claims]) + [""]

    if weights_path(name).exists():
        power = {_key(float(k)): v for k, v in json.loads(weights_path(name).read_text())["sigma_train"].items()}
        pub = {}
        for w in published.weight_power_published(name):
            for pt in w["points"]:
                pub[_key(pt["sigma_train"])] = pt["value"]
        body = [[f"{st:g}", f"{power[st]['mean_square']:.4f}", "" if st not in pub else f"{pub[st]:.4f}"]
                for st in GRID if st in power]
        if body:
            lines += ["Weight power E[w²] of the evaluated weights (all trainable parameters):", ""]
            lines += _table(["σ_train", "measured", "paper"], body) + [""]
    return lines


CHECKS = {  # docs/checks/NAME.toml -> docs/fidelity/checks/NAME.sqlite: one model of a grid, another rule
    "lstm-rows-patience15": "paper1-lstm-rows",
    "rnn-rows-patience15": "paper1-rnn-rows",
}


def checks_section() -> list[str]:
    """One model of a papers grid trained with patience 15 against the grid's model (patience 5)."""
    from noisynn.engine import ResultStore

    rows, missing = [], []
    for check, grid_name in CHECKS.items():
        path = HERE / "checks" / f"{check}.sqlite"
        if not path.exists():  # said in the section, as a grid's "Not started"
            missing.append(f"*Not run: no `docs/fidelity/checks/{path.name}`.*")
            continue
        with ResultStore(path, readonly=True) as store:
            (stop,) = store.stopping()
            points = {_key(p["sigma_val"]): p for p in store.points(kind="noisy") if p["votes"] == 1}
            epochs = store.epochs()
        power = json.loads((HERE / "checks" / f"{check}.weights.json").read_text())
        grid = read(grid_name)
        st = _key(stop["sigma_train"])
        grid_points = {_key(p["sigma_val"]): p for p in grid["points"]
                       if p["votes"] == 1 and _key(p["sigma_train"]) == st}
        (grid_stop,) = [r for r in grid["stopping"] if _key(r["sigma_train"]) == st]
        grid_power = json.loads(weights_path(grid_name).read_text())["sigma_train"][f"{st:g}"]["mean_square"]
        minutes = (sum(e["seconds"] for e in epochs) + sum(p["seconds"] for p in points.values())) / 60
        for label, s, pts, w in (("grid: patience 5", grid_stop, grid_points, grid_power),
                                 ("check: patience 15", stop, points, power["sigma_train"][f"{st:g}"]["mean_square"])):
            accs = [pts[v]["accuracy"] for v in GRID if v in pts]
            rows.append([f"`{grid_name}`", f"{st:g}", label, s["epochs_run"], s["best_epoch"], s["stopped"],
                         _pct(pts[0.0]["accuracy"], 2), _pct(pts[1.0]["accuracy"], 2),
                         f"{_pct(min(accs), 2)}–{_pct(max(accs), 2)}", f"{w:.4f}",
                         "" if s is grid_stop else f"{minutes:.0f}"])
    return ["### Checks: a longer patience for the noise-trained models that stopped soonest", "",
            "`noisynn sweep docs/checks/NAME.toml --profile papers`, stores `docs/fidelity/checks/NAME.sqlite`: "
            "the same model, schedule, seed, σ_val grid and 40 runs, patience 15 instead of 5. Accuracy % over the "
            "whole test set; the busy minutes are the check's epochs and points (the row LSTM went on from the "
            "grid model's epoch 35).", "",
            *(_table(["grid", "σ_train", "rule", "epochs run", "best epoch", "stopped", "σ_val = 0", "σ_val = 1",
                      "range over σ_val", "E[w²]", "busy min"], rows) if rows else []), *missing, ""]


def generate() -> str:
    lines = [BEGIN, "", "*Generated by `python docs/fidelity/build.py` from the kept stores in `docs/fidelity/`; "
             "do not edit by hand.*", ""]
    for name, title in EXPERIMENTS.items():
        lines += section(name, title)
    lines += checks_section()
    return "\n".join(lines + [END])


def write(doc: Path = DOC, *, check: bool = False) -> int:
    """Rewrite (or with ``check``, compare) the section of ``doc``; 0 when it is (now) up to date."""
    text = doc.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        print(f"{doc}: no {BEGIN} ... {END} markers: add them where the section belongs", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    new = head + generate() + rest.split(END, 1)[1]
    if check:
        if new != text:
            print(f"{doc}: the papers section is not what the kept stores give: run python docs/fidelity/build.py",
                  file=sys.stderr)
            return 1
        return 0
    doc.write_text(new, encoding="utf-8")
    print(f"wrote the papers section of {doc}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/reproduction.md's section is stale")
    ap.add_argument("--doc", type=Path, default=DOC)
    args = ap.parse_args()
    return write(args.doc, check=args.check)


if __name__ == "__main__":
    sys.exit(main())
