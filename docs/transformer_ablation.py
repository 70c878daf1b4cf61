"""Which products of the transformer matter? A PerSite ablation of transformer-rows (docs/transformer.md).

Evaluates trained ``transformer-rows`` checkpoints (the sweep's ``models/`` directory)
with noise at some sites only, on the whole MNIST test set, and prints a Markdown table
(accuracy % ± standard error over the runs) to stdout::

    NOISYNN_DATA_DIR=/work/shared/data OMP_NUM_THREADS=1 \\
        python docs/transformer_ablation.py --runs-dir /work/transformer-runs/additive \\
        --sigma-train 0,0.5 --sigma-val 0.5,1 --runs 5

Site groups (every product of the model is a site, see ``noisynn inspect transformer-rows``):
``embed`` (row -> token), ``qkv`` (the three input projections of each attention),
``attention products`` (``*:scores`` = Q K^T and ``*:weighted_sum`` = A V: activations
times activations, often digital on analog hardware), ``out_proj``, ``feed-forward``
(``linear1``, ``linear2``) and ``head``. Each row is one PerSite noise model: the named
groups noisy at sigma_val with the checkpoint's noise kind, every other site exact.
Each run draws from its own seeded stream, so the table is reproducible.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import noisynn
from noisynn.engine.evaluation import mean_stderr
from noisynn.engine.seeding import generator
from noisynn.engine.training import load_for_evaluation
from noisynn.noise import Additive, Clean, Multiplicative, NoiseModel, PerSite

GROUPS = {
    "embed": ["embed"],
    "qkv": ["*:q", "*:k", "*:v"],
    "attention products": ["*:scores", "*:weighted_sum"],
    "out_proj": ["*.out_proj"],
    "feed-forward": ["*.linear1", "*.linear2"],
    "head": ["head"],
}
ALL = list(GROUPS)
#: (row label, the groups that are noisy)
CONFIGS = [
    ("all noisy", ALL),
    ("attention products clean (all else noisy)", [g for g in ALL if g != "attention products"]),
    ("only the attention products noisy", ["attention products"]),
    ("only q, k, v noisy", ["qkv"]),
    ("only out_proj noisy", ["out_proj"]),
    ("only the feed-forward noisy", ["feed-forward"]),
    ("only embed noisy", ["embed"]),
    ("only head noisy", ["head"]),
    ("embed and head clean (all else noisy)", [g for g in ALL if g not in ("embed", "head")]),
]


class _Power(NoiseModel):
    """Adds nothing; accumulates the mean square of the clean pre-activation at every site."""

    def __init__(self) -> None:
        super().__init__()
        self.sums: dict[str, list[float]] = {}

    def apply(self, y, site=""):
        acc = self.sums.setdefault(site, [0.0, 0])
        acc[0] += float(y.double().pow(2).sum())
        acc[1] += y.numel()
        return y


def group_rms(model, test) -> dict[str, float]:
    """RMS of the clean pre-activation per site group (one clean pass): what additive noise of sigma compares to."""
    power = _Power()
    with torch.inference_mode(), power:
        for start in range(0, len(test), 1000):
            model(test.x[start:start + 1000])
    out = {}
    for group, patterns in GROUPS.items():
        import fnmatch

        sums = [v for k, v in power.sums.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)]
        out[group] = (sum(a for a, _ in sums) / sum(n for _, n in sums)) ** 0.5
    return out


def per_site(kind: str, sigma: float, groups: list[str], gen: torch.Generator) -> PerSite:
    make = Additive if kind == "additive" else Multiplicative
    noisy = make(sigma, generator=gen)
    return PerSite({pattern: noisy for g in groups for pattern in GROUPS[g]}, default=Clean())


@torch.inference_mode()
def accuracy_runs(model, test, noise_model_for_run, runs: int, batch_size: int = 1000) -> list[float]:
    accs = []
    for run in range(runs):
        with noise_model_for_run(run):
            correct = 0
            for start in range(0, len(test), batch_size):
                xb, yb = test.x[start:start + batch_size], test.y[start:start + batch_size]
                correct += (model(xb).argmax(-1) == yb).sum().item()
        accs.append(correct / len(test))
    return accs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", required=True, type=Path, help="a transformer-rows sweep's run directory")
    ap.add_argument("--sigma-train", default="0,0.5", help="the checkpoints to ablate (comma-separated)")
    ap.add_argument("--sigma-val", default="0.5,1", help="the inference noise levels (comma-separated)")
    ap.add_argument("--runs", type=int, default=5, help="noisy passes over the test set per cell")
    ap.add_argument("--limit", type=int, default=None, help="first N test images only (default: all 10,000)")
    args = ap.parse_args()
    sigma_train = [float(s) for s in args.sigma_train.split(",")]
    sigma_val = [float(s) for s in args.sigma_val.split(",")]

    columns, cells, kind, rms = [], {}, None, {}
    t0 = time.perf_counter()
    for st in sigma_train:
        ckpt = next((args.runs_dir / "models").glob(f"transformer-rows-*-s{st:.2f}-seed0.safetensors"))
        model, test, meta = load_for_evaluation(ckpt, device="cpu", limit=args.limit)
        kind = meta["noise"]
        noisynn.set_noise(model, None)
        rms[st] = group_rms(model, test)
        for sv in sigma_val:
            col = (st, sv)
            columns.append(col)
            for label, groups in CONFIGS:
                accs = accuracy_runs(
                    model, test,
                    lambda run, k=kind, g=groups, sv=sv, st=st, lab=label: per_site(
                        k, sv, g, generator("transformer-ablation", lab, st, sv, run)),
                    args.runs)
                cells[label, col] = mean_stderr(accs)
    seconds = time.perf_counter() - t0

    header = " | ".join(f"σ_train {st:g}, σ_val {sv:g}" for st, sv in columns)
    print(f"{kind} noise; accuracy % ± standard error over {args.runs} noisy passes of "
          f"{len(test):,} test images; sites not named are exact\n")
    print(f"| noisy sites | {header} |")
    print("| --- |" + " --- |" * len(columns))
    for label, _ in CONFIGS:
        row = " | ".join(f"{100 * cells[label, c][0]:.1f} ± {100 * cells[label, c][1]:.2f}" for c in columns)
        print(f"| {label} | {row} |")
    print("\nRMS of the clean pre-activation per site group (what additive noise of σ_val is added to):\n")
    print("| site group | " + " | ".join(f"σ_train {st:g}" for st in sigma_train) + " |")
    print("| --- |" + " --- |" * len(sigma_train))
    for group in GROUPS:
        print(f"| {group} | " + " | ".join(f"{rms[st][group]:.2f}" for st in sigma_train) + " |")
    print(f"\n({seconds:.0f} s)")


if __name__ == "__main__":
    main()
