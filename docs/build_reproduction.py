"""Fill the measured part of docs/reproduction.md from the reproduction's run directories.

For each experiment of the reproduction (issue 9) whose run directory exists under
``--runs``, this writes its report (``noisynn report``: figures, CSV tables, comparison
with the papers) into ``RUN/report``, copies two figures as small PNGs into
``docs/figures/`` and writes, between the markers ``<!-- BEGIN measured -->`` and
``<!-- END measured -->`` of ``docs/reproduction.md``, one section per experiment:
the command, the profile, epochs and busy times from ``results.sqlite``, the clean test
accuracy of every model, the measured grid, the published numbers next to the
measured ones (difference and standard error, cells more than 2 points apart marked),
the papers' claims checked on the grid and the weight power. An experiment whose run
directory is absent keeps the section it already has (the run directories live outside
the repository and need not all be on one machine). Everything outside the markers (the
discussion) is left alone.

Usage (the run directories are those of ``noisynn sweep PRESET --profile cpu --out RUNS/PRESET``)::

    NOISYNN_DATA_DIR=../shared/data python docs/build_reproduction.py --runs /work/runs
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from noisynn.engine import ResultStore, load_plan  # noqa: E402
from noisynn.report.builder import build_report  # noqa: E402

DOCS = Path(__file__).resolve().parent
EXPERIMENTS = [
    "paper1-lstm-rows",
    "paper1-lstm-strokes",
    "paper1-rnn-rows",
    "paper2-cnn6-multiplicative",
    "paper2-cnn6-additive",
    "paper2-lstm-strokes-multiplicative",
]
FIGURES = ["accuracy", "heatmap", "votes", "learning_curves", "weight_power"]  # those the report made
BEGIN, END = "<!-- BEGIN measured -->", "<!-- END measured -->"


def pct(x, digits: int = 1) -> str:
    return "" if x in (None, "") or (isinstance(x, float) and math.isnan(x)) else f"{100 * float(x):.{digits}f}"


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def small_png(src: Path, dst: Path, width_px: int = 760) -> None:
    """A reduced copy of a report figure (the docs keep small files; Pillow comes with matplotlib)."""
    from PIL import Image

    with Image.open(src) as img:
        img.thumbnail((width_px, width_px * 4), Image.LANCZOS)
        img.convert("RGB").quantize(colors=128).save(dst, optimize=True)  # a palette PNG: a third of the size


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def section(preset: str, run: Path, args) -> list[str]:
    plan = load_plan(preset, "cpu")
    say = (lambda m: print(f"  {m}", flush=True)) if args.verbose else None
    report = build_report(run, data_dir=args.data_dir, device="cpu", softmax_runs=args.softmax_runs,
                          state_samples=200, model_figures=not args.no_models, log=say)
    with ResultStore(run / "results.sqlite") as store:
        points = [p for p in store.points() if p["experiment"] == plan.name]
        epochs = [e for e in store.epochs() if e["experiment"] == plan.name]
    noisy = [p for p in points if p["kind"] == "noisy"]
    votes = [p for p in points if p["kind"] == "vote"]
    expected_noisy = len(plan.sigma_train) * len(plan.sigma_val)
    t = plan.train
    lines = [f"### {plan.title}", "",
             f"`noisynn sweep {preset} --profile cpu --out runs/{preset}` then `noisynn report runs/{preset}`", "",
             f"Profile `cpu`: σ_train ∈ {{{', '.join(f'{s:g}' for s in plan.sigma_train)}}}, "
             f"σ_val ∈ {{{', '.join(f'{s:g}' for s in plan.sigma_val)}}}, {t.epochs} epochs of Adam "
             f"(batch {t.batch_size}, lr {t.lr:g}) on the 60,000 training samples, "
             f"{plan.runs} runs per noisy point over the whole 10,000-sample test set (one exact run at σ_val = 0)"
             + (f", voting with K = 1…{plan.votes} at σ_val ∈ {{{', '.join(f'{s:g}' for s in plan.vote_sigma_val)}}}"
                + (f" on the first {plan.vote_limit:,} test samples" if plan.vote_limit else "") if plan.votes else "")
             + ".", ""]
    train_s = sum(e["seconds"] for e in epochs)
    eval_s = sum(p["seconds"] for p in noisy)
    vote_s = sum(p["seconds"] for p in votes)
    done_models = sorted({e["sigma_train"] for e in epochs if e["epoch"] == t.epochs})
    status = "complete" if len(noisy) >= expected_noisy and (not plan.votes or votes) else "**partial**"
    lines += [f"Status: {status}: {len(done_models)}/{len(plan.sigma_train)} models trained, "
              f"{len(noisy)}/{expected_noisy} grid points, {len(votes)} voting points. Busy time recorded in "
              f"`results.sqlite`: training {train_s / 60:.0f} min, evaluation {eval_s / 60:.0f} min"
              + (f", voting {vote_s / 60:.0f} min" if votes else "")
              + " (summed over the work units; see \"Wall times\" for how the cores were shared).", ""]
    last = {}
    for e in epochs:
        if e["epoch"] <= t.epochs:
            last[e["sigma_train"]] = e
    if last:
        lines += ["Clean test accuracy after the last epoch (%), per σ_train:", ""]
        sts = sorted(last)
        lines += table(["σ_train"] + [f"{s:g}" for s in sts],
                       [["accuracy (epoch)"]
                        + [f"{pct(last[s]['val_accuracy'], 2)} ({last[s]['epoch']})" for s in sts]])
        lines.append("")
    grid = read_csv(report.out / "grid_accuracy.csv")
    if grid:
        cols = [c for c in grid[0] if c != "sigma_train"]
        se = max((p["stderr"] for p in noisy if p["n_runs"] > 1), default=float("nan"))
        lines += [f"Measured accuracy (%), rows σ_train, columns σ_val (largest standard error of a cell: "
                  f"{pct(se, 2)} points):", ""]
        lines += table(["σ_train \\ σ_val"] + cols,
                       [[f"{float(r['sigma_train']):g}"] + [pct(r[c]) for c in cols] for r in grid])
        lines.append("")
    comp = list(report.comparison)
    if comp:
        lines += ["Published against measured (%; Δ = measured − paper; ⚠ marks |Δ| > 2 points). For the "
                  "papers' \"Best\" rows the measured value is this run's best σ_train at that σ_val (among the "
                  "σ_train it trained):", ""]
        index = {(p["kind"], round(p["sigma_train"], 9), round(p["sigma_val"], 9), int(p["votes"])): p for p in points}
        rows = []
        for r in comp:
            st = r["sigma_train"]
            paper_st = "/".join(f"{v:g}" for v in st) if isinstance(st, (list, tuple)) else f"{st:g}"
            measured, se, n_runs, here = r["measured"], r["stderr"], r["n_runs"], paper_st
            if r.get("best"):
                measured, here = r.get("measured_best"), r.get("measured_best_sigma_train")
                point = index.get((r["kind"], round(here, 9), round(r["sigma_val"], 9),
                                   int(r["votes_measured"] or r["votes"]))) if here is not None else None
                se, n_runs = (point["stderr"], point["n_runs"]) if point else (None, None)
                here = f"{here:g}" if here is not None else ""
            diff = None if measured is None else measured - r["value"]
            flag = " ⚠" if diff is not None and abs(diff) > 0.02 else ""
            rows.append([r["source"], r["row"], f"{r['sigma_val']:g}", r["votes"], f"{pct(r['value'])} ({paper_st})",
                         f"{pct(measured)} ({here})" if measured is not None else "not measured",
                         f"{100 * diff:+.1f}{flag}" if diff is not None else "",
                         pct(se, 2) if n_runs and n_runs > 1 else "–", n_runs or ""])
        lines += table(["source", "row", "σ_val", "K", "paper (σ_train)", "measured (σ_train)", "Δ", "SE", "runs"],
                       rows)
        lines.append("")
    if report.claims:
        lines += ["The papers' claims, checked on the measured grid:", ""]
        lines += table(["source", "claim", "status", "detail"],
                       [[c["source"], c["text"], c["status"], c["detail"]] for c in report.claims])
        lines.append("")
    power = read_csv(report.out / "weight_power.csv")
    if power:
        lines += ["Weight power E[w²] of every trainable parameter (paper 1, fig. 5), per σ_train:", ""]
        lines += table(["σ_train"] + [f"{float(p['sigma_train']):g}" for p in power],
                       [["E[w²]"] + [f"{float(p['mean_square']):.4f}" for p in power]])
        lines.append("")
    figs = []
    for stem in FIGURES:
        src = report.out / f"{stem}.png"
        if src.is_file():
            dst = DOCS / "figures" / f"{preset}-{stem}.png"
            dst.parent.mkdir(exist_ok=True)
            small_png(src, dst)
            figs.append(f"![{preset} {stem}](figures/{dst.name})")
    lines += [" ".join(figs), ""] if figs else []
    return lines


def existing_sections(block: str) -> dict[str, list[str]]:
    """The sections of the current measured block, keyed by their ``### `` heading."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in block.splitlines():
        if line.startswith("### "):
            current = sections.setdefault(line[4:].strip(), [])
        if current is not None:
            current.append(line)
    return {k: v for k, v in sections.items() if not (len(v) < 4 and "Not run yet." in v)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="folder holding one run directory per preset")
    parser.add_argument("--data-dir", default=None, help="data directory (default: $NOISYNN_DATA_DIR)")
    parser.add_argument("--softmax-runs", type=int, default=2000, help="noisy runs of the softmax figure")
    parser.add_argument("--no-models", action="store_true", help="skip the figures that load checkpoints")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    doc = DOCS / "reproduction.md"
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"error: {doc} has no {BEGIN} ... {END} markers: add them where the tables go")
    head, rest = text.split(BEGIN, 1)
    block, tail = rest.split(END, 1)
    kept = existing_sections(block)
    out = [BEGIN, "",
           "*Generated by `python docs/build_reproduction.py --runs RUNS` from the run directories; "
           "do not edit by hand.*", ""]
    for preset in EXPERIMENTS:
        run = args.runs / preset
        if not (run / "results.sqlite").is_file():
            title = load_plan(preset, "cpu").title
            old = kept.get(title)
            if old:
                print(f"{preset}: no run directory, its section is kept", flush=True)
                while old and not old[-1].strip():
                    old = old[:-1]
            out += old + [""] if old else [f"### {title}", "", "Not run yet.", ""]
            continue
        print(f"{preset} ...", flush=True)
        out += section(preset, run, args)
    doc.write_text(head + "\n".join(out) + "\n" + END + tail)
    print(f"wrote {doc}")


if __name__ == "__main__":
    main()
