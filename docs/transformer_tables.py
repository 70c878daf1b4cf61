"""The tables of docs/transformer.md from a transformer-rows sweep's run directory (Markdown to stdout).

    python docs/transformer_tables.py /work/transformer-runs/additive

Reads ``results.sqlite`` only (sqlite3, no noisynn import): clean accuracy after the
last epoch per sigma_train, the measured grid (accuracy % ± standard error over the
runs; sigma_val = 0 is one exact pass), majority voting, and the busy times.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path


def _g(x: float) -> str:
    return f"{x:g}"


def main(run_dir: str) -> None:
    db = sqlite3.connect(Path(run_dir) / "results.sqlite")
    db.row_factory = sqlite3.Row
    experiment = db.execute("SELECT DISTINCT experiment FROM points").fetchone()
    print(f"### {experiment[0] if experiment else run_dir}\n")

    epochs = db.execute("SELECT sigma_train, MAX(epoch) AS epoch FROM epochs GROUP BY sigma_train").fetchall()
    last = {r["sigma_train"]: db.execute("SELECT val_accuracy FROM epochs WHERE sigma_train = ? AND epoch = ?",
                                         (r["sigma_train"], r["epoch"])).fetchone()[0] for r in epochs}
    evaluated = {r[0] for r in db.execute("SELECT DISTINCT sigma_train FROM points")}
    st = sorted(s for s in last if s in evaluated)
    print("Clean test accuracy after the last epoch (%):\n")
    print("| σ_train | " + " | ".join(map(_g, st)) + " |")
    print("| --- |" + " --- |" * len(st))
    print("| accuracy (epoch) | " + " | ".join(
        f"{100 * last[s]:.2f} ({next(r['epoch'] for r in epochs if r['sigma_train'] == s)})" for s in st) + " |\n")
    others = sorted(s for s in last if s not in evaluated)
    if others:
        print("Trained but not evaluated yet (epochs done): " + ", ".join(
            f"σ_train {_g(s)} ({next(r['epoch'] for r in epochs if r['sigma_train'] == s)})" for s in others) + ".\n")

    noisy = db.execute("SELECT * FROM points WHERE kind = 'noisy'").fetchall()
    cell = {(r["sigma_train"], r["sigma_val"]): r for r in noisy}
    st = sorted({k[0] for k in cell})
    sv = sorted({k[1] for k in cell})
    runs = sorted({r["n_runs"] for r in noisy if r["sigma_val"] > 0})
    print(f"Accuracy (%) ± standard error, rows σ_train, columns σ_val ({'/'.join(map(str, runs))} noisy runs "
          "per point over the whole test set; σ_val = 0: one exact pass):\n")
    print("| σ_train \\ σ_val | " + " | ".join(map(_g, sv)) + " |")
    print("| --- |" + " --- |" * len(sv))
    for s in st:
        row = []
        for v in sv:
            r = cell.get((s, v))
            row.append("–" if r is None else f"{100 * r['accuracy']:.1f}" + (
                f" ± {100 * r['stderr']:.2f}" if r["n_runs"] > 1 else ""))
        print(f"| {_g(s)} | " + " | ".join(row) + " |")
    best = []
    for v in sv:
        col = [(cell[s, v]["accuracy"], s) for s in st if (s, v) in cell]
        if col:
            acc, s = max(col)
            best.append(f"{100 * acc:.1f} ({_g(s)})")
    print("| best (σ_train) | " + " | ".join(best) + " |\n")

    votes = db.execute("SELECT * FROM points WHERE kind = 'vote'").fetchall()
    if votes:
        ks = sorted({r["votes"] for r in votes})
        show = [k for k in ks if k in (1, 2, 3, 5, 7, 10, 20)] or ks
        print("Majority voting over K noisy inferences (%; one trial over the whole test set):\n")
        print("| σ_train | σ_val | " + " | ".join(f"K = {k}" for k in show) + " | gain K = 1 → "
              f"{show[-1]} |")
        print("| --- | --- |" + " --- |" * (len(show) + 1))
        vcell = {(r["sigma_train"], r["sigma_val"], r["votes"]): r["accuracy"] for r in votes}
        for s, v in sorted({(r["sigma_train"], r["sigma_val"]) for r in votes}):
            accs = [vcell.get((s, v, k)) for k in show]
            gain = "–" if None in (accs[0], accs[-1]) else f"{100 * (accs[-1] - accs[0]):+.1f}"
            print(f"| {_g(s)} | {_g(v)} | " + " | ".join("–" if a is None else f"{100 * a:.1f}" for a in accs)
                  + f" | {gain} |")
        print()

    train_s = sum(r[1] for r in db.execute("SELECT sigma_train, seconds FROM epochs") if r[0] in evaluated)
    eval_s = db.execute("SELECT COALESCE(SUM(seconds), 0) FROM points WHERE kind = 'noisy'").fetchone()[0]
    vote_s = db.execute("SELECT COALESCE(SUM(seconds), 0) FROM points WHERE kind = 'vote'").fetchone()[0]
    print(f"Busy time recorded in `results.sqlite` (the evaluated models): training {train_s / 60:.0f} min, evaluation "
          f"{eval_s / 60:.0f} min, voting {vote_s / 60:.0f} min.")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
