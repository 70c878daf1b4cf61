"""Keep the issue-18 fidelity runs' stores in the repository, and put them back to resume.

The three paper-1 experiments at the ``papers`` profile take longer than one working
session on a 2-core machine, and a session's machine does not outlive it. Their
``results.sqlite`` files (small: points, runs, epoch rows, early stopping) are kept
here; checkpoints never are. A sweep resumed from a kept store retrains no model whose
points are all measured (``noisynn.engine.sweep``), so only the model in training when
the session ended is lost.

    python docs/fidelity/keep.py save    --runs /work/fidelity   # consistent copies -> docs/fidelity/*.sqlite
    python docs/fidelity/keep.py restore --runs /work/fidelity   # docs/fidelity/*.sqlite -> RUNS/NAME/results.sqlite
    python docs/fidelity/keep.py status                          # what each kept store holds

``save`` also writes ``NAME.papers.weights.json``: the weight power (E[w^2], RMS, max |w|
over every trainable parameter) of each finished model, read from the checkpoint that
was evaluated, which is checked against the store (its SHA-256 is the points'
``checkpoint``). ``docs/fidelity/build.py`` needs only these committed files; ``save`` runs it.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPERIMENTS = {"paper1-lstm-rows": "lstm-rows", "paper1-lstm-strokes": "lstm-strokes", "paper1-rnn-rows": "rnn-rows"}
MODELS, SIGMA_VAL = 11, 11


def _copy(src: Path, dst: Path) -> None:
    """A consistent copy of a live WAL database (SQLite's online backup), written beside and renamed."""
    tmp = dst.with_suffix(".tmp")
    with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as a, sqlite3.connect(tmp) as b:
        a.backup(b)
        b.execute("PRAGMA journal_mode=DELETE")
    tmp.replace(dst)


def weight_power(run: Path, store: Path, kept: dict | None = None) -> dict:
    """``{sigma_train: {count, mean_square, rms, max_abs, checkpoint}}`` of the finished models of one run.

    ``kept``: the entries saved before. A finished model whose checkpoint is not here (a
    later session's machine) or is being retrained (its file holds other weights) keeps its
    saved entry when that entry names the weights the store evaluated.
    """
    import torch
    from safetensors.torch import load_file

    from noisynn.engine.checkpoint import weights_sha256

    out: dict[str, dict] = {}
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as c:
        finished = c.execute("SELECT model, noise, sigma_train, seed, checkpoint FROM stopping").fetchall()
    for model, noise, sigma, seed, sha in finished:
        path = run / "models" / f"{model}-{noise}-s{sigma:.2f}-seed{seed}.safetensors"
        before = (kept or {}).get(f"{sigma:g}")
        state = ({k[len("model."):]: v for k, v in load_file(path).items() if k.startswith("model.")}
                 if path.exists() else None)
        if state is None or weights_sha256(state) != sha:  # gone, or retrained since: the saved entry
            if before is not None and before.get("checkpoint") == sha:
                out[f"{sigma:g}"] = before
            continue
        w = torch.cat([v.reshape(-1).double() for k, v in state.items() if v.is_floating_point()
                       and not k.endswith(("running_mean", "running_var"))])
        ms = float(w.square().mean())
        out[f"{sigma:g}"] = {"count": int(w.numel()), "mean_square": ms, "rms": math.sqrt(ms),
                             "max_abs": float(w.abs().max()), "checkpoint": sha}
    return out


def status(path: Path) -> str:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
        points = c.execute("SELECT COUNT(*) FROM points WHERE kind = 'noisy'").fetchone()[0]
        models = c.execute("SELECT COUNT(*) FROM stopping").fetchone()[0]
        epochs = c.execute("SELECT sigma_train, MAX(epoch) FROM epochs GROUP BY sigma_train").fetchall()
    done = "complete" if points == MODELS * SIGMA_VAL else "in progress"
    return (f"{path.name}: {done}: {models}/{MODELS} models stopped, {points}/{MODELS * SIGMA_VAL} points; "
            f"epochs per sigma_train {dict(epochs)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["save", "restore", "status"])
    ap.add_argument("--runs", type=Path, default=Path("/work/fidelity"))
    args = ap.parse_args()
    for name, folder in EXPERIMENTS.items():
        kept, live = HERE / f"{name}.papers.sqlite", args.runs / folder / "results.sqlite"
        if args.action == "save" and live.exists():
            weights = HERE / f"{name}.papers.weights.json"
            before = json.loads(weights.read_text())["sigma_train"] if weights.exists() else None
            _copy(live, kept)
            power = weight_power(live.parent, kept, before)
            (HERE / f"{name}.papers.weights.json").write_text(
                json.dumps({"experiment": name, "profile": "papers", "sigma_train": power}, indent=1) + "\n")
        elif args.action == "restore" and kept.exists():
            if live.exists():
                raise SystemExit(f"{live} exists: move it away first (restore never overwrites a run)")
            live.parent.mkdir(parents=True, exist_ok=True)
            _copy(kept, live)
        if kept.exists():
            print(status(kept))
    if args.action == "save":
        import build  # this folder's docs/reproduction.md generator: the document follows the stores

        build.write()


if __name__ == "__main__":
    main()
