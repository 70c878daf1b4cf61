"""docs/hardware.md's experiment: cnn6 on MNIST, conventional and with Gaussian DNI, on PCM chips over time.

1. Trains (or resumes) cnn6 twice with the engine's ``train`` (the same as ``noisynn train cnn6
   --noise additive --sigma S --epochs E --batch-size 64 --lr 1e-3 --out DIR``): sigma_train 0
   (conventional) and sigma_train = ``--sigma-train`` (paper 2's additive Deep Noise Injection,
   fixed batch-norm; the cpu profile of ``paper2-cnn6-additive``: Adam, lr 1e-3, batch 64).
2. Puts each on PCM chips (``PCM(inp_bits=8, out_bits=8, out_noise=0.04)``: Nandakumar programming
   noise, per-device drift, 1/f read noise, 8-bit DAC/ADC with noise management, output noise
   0.04) and measures accuracy at 1 s, 1 h, 1 day, 1 month and 1 year after programming,
   with and without global drift compensation, over C chips x R reads
   (:func:`noisynn.engine.chips.time_sweep`).
3. Prints a Markdown table (and writes ``DIR/hardware_experiment.json``).

Usage::

    OMP_NUM_THREADS=1 nice -n 19 python docs/hardware_experiment.py --out runs/hardware \\
        --data-dir /work/shared/data --epochs 1 --chips 4 --reads 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from noisynn.engine import TrainSpec, load_trained, train
from noisynn.engine.chips import TIMES, time_sweep
from noisynn.engine.training import clean_metrics, load_data
from noisynn.hardware import PCM

LABELS = {1.0: "1 s", 3600.0: "1 h", 86400.0: "1 day", 2592000.0: "1 month", 31536000.0: "1 year"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/hardware"))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-limit", type=int, default=None, help="train on the first N images only")
    parser.add_argument("--sigma-train", type=float, default=0.5, help="sigma_train of the DNI model")
    parser.add_argument("--chips", type=int, default=4)
    parser.add_argument("--reads", type=int, default=3)
    parser.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test images only")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--models", default="conventional,dni", help="which of conventional,dni to run")
    parser.add_argument("--table", nargs="+", type=Path, default=None,
                        help="only print the table of these hardware_experiment.json files (runs split in parts)")
    args = parser.parse_args()
    if args.table:
        merged: dict = {}
        for path in args.table:
            part = json.loads(path.read_text())
            merged = {**part, **merged, "models": {**merged.get("models", {}), **part["models"]}}
        print(table(merged))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - started:7.0f} s] {msg}", file=sys.stderr, flush=True)

    log(f"{platform.processor() or platform.machine()} | torch {torch.__version__} | threads "
        f"{torch.get_num_threads()} | load {os.getloadavg()[0]:.2f}")
    test = load_data("cnn6", "mnist", "test", data_dir=args.data_dir, limit=args.test_limit)
    chip = PCM(inp_bits=8, out_bits=8, out_noise=0.04)
    results = {"noise": chip.config(), "chips": args.chips, "reads": args.reads, "test_samples": len(test),
               "epochs": args.epochs, "train_limit": args.train_limit, "models": {}}
    wanted = set(args.models.split(","))
    for key, label, sigma in (("conventional", "conventional", 0.0),
                              ("dni", f"DNI sigma_train {args.sigma_train:g}", args.sigma_train)):
        if key not in wanted:
            continue
        spec = TrainSpec("cnn6", "mnist", "additive", sigma, epochs=args.epochs, batch_size=64, lr=1e-3, seed=0,
                         train_limit=args.train_limit)
        ckpt = args.out / f"cnn6-additive-s{sigma:g}.safetensors"
        t0 = time.time()
        train(spec, ckpt, device="cpu", data_dir=args.data_dir, progress=False)
        log(f"{label}: trained ({time.time() - t0:.0f} s)")
        model, _ = load_trained(ckpt)
        model.eval()
        _, clean_acc = clean_metrics(model, test)
        log(f"{label}: clean accuracy {clean_acc:.4f}")
        rows = time_sweep(model, test, chip, times=TIMES, compensation=(False, True), chips=args.chips,
                          reads=args.reads, seed=0, batch_size=args.batch_size,
                          log=lambda m, label=label: log(f"{label}: {m}"))
        results["models"][label] = {"sigma_train": sigma, "clean": clean_acc, "rows": [r.as_dict() for r in rows]}
        (args.out / "hardware_experiment.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    log("done")


def table(results: dict) -> str:
    """Accuracy (%) mean +- chip-to-chip spread [read-to-read spread] per model, time and compensation."""
    lines = ["| model | clean | compensation | " + " | ".join(LABELS[t] for t in TIMES) + " |",
             "|---|---|---|" + "---|" * len(TIMES)]
    for label, m in results["models"].items():
        for comp in (False, True):
            cells = []
            for t in TIMES:
                row = next(r for r in m["rows"] if r["t"] == t and r["compensation"] == comp)
                cells.append(f"{100 * row['accuracy']:.2f} ± {100 * row['chip_spread']:.2f} "
                             f"[{100 * row['read_spread']:.2f}]")
            head = f"| {label} | {100 * m['clean']:.2f} | {'yes' if comp else 'no'} | "
            lines.append(head + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
