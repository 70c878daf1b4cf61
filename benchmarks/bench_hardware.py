"""Benchmark: the cost of hardware-realistic noise (issue 17) against the same network clean.

Each row evaluates a papers' network on a PCM chip one day after programming (global
drift compensation, 8-bit DAC and ADC, output noise 0.04: ``PCM(t=86400, inp_bits=8,
out_bits=8, out_noise=0.04)``), and the same network clean, alternately in one process
(median of ``--repeats``), and prints the ratio. The target of issue 17: <= 2x.

* ``lstm-rows``: 2,560 sequences (10 repeats x 256) in one batch;
* ``cnn6``: 640 images (10 repeats x 64) in one batch.

A chip's programmed and drifted weights are computed once (cached per chip, time and
weight version); what each read costs is the periphery: noise management, DAC, the
product, output noise, ADC. ``--tiles N`` adds crossbars of N rows.

Usage::

    python benchmarks/bench_hardware.py [--repeats 7] [--tiles 256]

aihwkit is not compared here: its wheels need a CUDA/C++ build that this machine's
registries do not offer for torch 2.13 (see the README's hardware section).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

import noisynn
from noisynn.hardware import PCM


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def time_pair(a, b, repeats: int) -> tuple[float, float]:
    a(), b()
    ta, tb = [], []
    for r in range(repeats):
        for fn, acc in (((a, ta), (b, tb)) if r % 2 == 0 else ((b, tb), (a, ta))):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiles", type=int, default=0, help="rows per crossbar tile (0: one tile)")
    args = parser.parse_args()
    print(f"{_cpu()} | torch {torch.__version__} | threads {torch.get_num_threads()} | "
          f"load average {os.getloadavg()[0]:.2f}")
    chip = PCM(t=86400.0, inp_bits=8, out_bits=8, out_noise=0.04, max_input_size=args.tiles)
    print(f"noise model: {chip!r}")
    print(f"{'network':<12} {'batch':>6} {'clean ms':>9} {'PCM ms':>9} {'ratio':>6}  target <= 2x")
    for name, x in (("lstm-rows", torch.rand(2560, 28, 28)), ("cnn6", torch.randn(640, 1, 28, 28))):
        model = noisynn.build_model(name).eval()

        def clean():
            with torch.inference_mode(), noisynn.clean():
                model(x)

        def pcm():
            with torch.inference_mode(), chip:
                model(x)

        tc, tp = time_pair(clean, pcm, args.repeats)
        print(f"{name:<12} {len(x):>6} {tc * 1e3:>9.1f} {tp * 1e3:>9.1f} {tp / tc:>6.2f}  "
              f"{'met' if tp / tc <= 2 else 'NOT met'}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
