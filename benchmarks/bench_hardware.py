"""Benchmark: the cost of hardware-realistic noise (issue 17) against the same network clean.

Each row evaluates a papers' network on a PCM chip one day after programming (global
drift compensation, 8-bit DAC and ADC, output noise 0.04: ``PCM(t=86400, inp_bits=8,
out_bits=8, out_noise=0.04)``), and the same network clean, alternately in one process
(median of ``--repeats``), and prints the ratio. The target of issue 17: <= 2x.

* ``lstm-rows``: the papers' LSTM (28 steps of 28 pixels, 128 units), batch 256, and
  2,560 (the 10 reads x 256 of one batched evaluation group, ``RUN_GROUP``);
* ``cnn6``: batch 64 and 640 (10 x 64).

A chip's programmed and drifted weights are computed once (cached per chip, time and
weight version); what each read costs is the periphery: noise management, DAC, the
product, output noise, ADC (and, for the LSTM, its cell: the fused noise-free step).
``--tiles N`` adds crossbars of N rows.

**aihwkit** (``--aihwkit-python PYTHON``, default: this interpreter if it can import
``aihwkit``): the same two networks built from plain torch layers, converted with
``aihwkit.nn.conversion.convert_to_analog`` (cnn6) / ``AnalogRNN(AnalogLSTMCellCombinedWeight)``
(lstm-rows: one crossbar for ``[W_ih W_hh]``, as noisynn's), with the same periphery
(``inp_res = out_res = 1/254``, ``out_noise = 0.04``, ``out_bound = 12``, abs-max noise
management, no bound management, one tile), ``PCMLikeNoiseModel`` and
``GlobalDriftCompensation``, ``drift_analog_weights(86400)`` once, then timed against
the plain torch network clean in the same interpreter: its C++ tile (``InferenceRPUConfig``)
and its pure-torch tile (``TorchInferenceRPUConfig``). When aihwkit cannot be imported,
the benchmark says so and prints no aihwkit numbers.

Usage::

    python benchmarks/bench_hardware.py [--repeats 7] [--threads 2] [--tiles 256]
        [--aihwkit-python /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

import noisynn
from noisynn.hardware import PCM

CASES = (("lstm-rows", 256), ("lstm-rows", 2560), ("cnn6", 64), ("cnn6", 640))


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def time_pair(a, b, repeats: int) -> tuple[float, float]:
    """Medians of ``a`` and ``b`` timed alternately (``repeats`` each, after one warm-up of each)."""
    a(), b()
    ta, tb = [], []
    for r in range(repeats):
        for fn, acc in (((a, ta), (b, tb)) if r % 2 == 0 else ((b, tb), (a, ta))):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def _input(name: str, batch: int) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(batch, 28, 28) if name.startswith("lstm") else torch.randn(batch, 1, 28, 28)


# -- aihwkit, in its own interpreter ----------------------------------------------------------------------------------
AIHWKIT_SCRIPT = r'''
import json, statistics, sys, time
import torch
from torch import nn
import aihwkit
from aihwkit.simulator.configs import InferenceRPUConfig, TorchInferenceRPUConfig
from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType
from aihwkit.inference.noise.pcm import PCMLikeNoiseModel
from aihwkit.inference.compensation.drift import GlobalDriftCompensation
from aihwkit.nn.conversion import convert_to_analog
from aihwkit.nn import AnalogRNN, AnalogLinear
from aihwkit.nn.modules.rnn.cells import AnalogLSTMCellCombinedWeight

cases, repeats, threads = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)

def rpu(cls):
    c = cls()
    f = c.forward
    f.inp_res, f.out_res, f.out_noise, f.inp_bound, f.out_bound = 1 / 254, 1 / 254, 0.04, 1.0, 12.0
    f.noise_management, f.bound_management = NoiseManagementType.ABS_MAX, BoundManagementType.NONE
    f.w_noise = 0.0
    c.mapping.max_input_size, c.mapping.max_output_size = 0, 0
    c.noise_model = PCMLikeNoiseModel(g_max=25.0)
    c.drift_compensation = GlobalDriftCompensation()
    return c

def cnn6():
    def block(i, o):
        return [nn.Conv2d(i, o, 3, bias=False), nn.BatchNorm2d(o, affine=False), nn.ReLU()]
    return nn.Sequential(*block(1, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64), *block(64, 64),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1024, 256, bias=False),
                         nn.BatchNorm1d(256, affine=False), nn.ReLU(), nn.Linear(256, 10))

class LSTMRows(nn.Module):
    def __init__(self, rnn, fc, analog):
        super().__init__()
        self.rnn, self.fc, self.analog = rnn, fc, analog
    def forward(self, x):
        seq = x.transpose(0, 1)  # (T, B, F)
        return self.fc(self.rnn(seq)[0][-1])

def drift(module, t):
    """drift_analog_weights on every analog layer or container (programs the chip, then drifts it)."""
    if hasattr(module, "drift_analog_weights"):
        module.drift_analog_weights(t)
    else:
        for child in module.children():
            drift(child, t)

def build(name, kind):
    if name == "cnn6":
        plain = cnn6().eval()
        return plain if kind == "clean" else convert_to_analog(plain, rpu(kind)).eval()
    if kind == "clean":
        return LSTMRows(nn.LSTM(28, 128), nn.Linear(128, 10), False).eval()
    return LSTMRows(AnalogRNN(AnalogLSTMCellCombinedWeight, 28, 128, rpu_config=rpu(kind)),
                    AnalogLinear(128, 10, rpu_config=rpu(kind)), True).eval()

def time_pair(a, b, repeats):
    a(), b()
    ta, tb = [], []
    for r in range(repeats):
        for fn, acc in (((a, ta), (b, tb)) if r % 2 == 0 else ((b, tb), (a, ta))):
            t0 = time.perf_counter(); fn(); acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)

rows = []
for name, batch in cases:
    torch.manual_seed(0)
    x = torch.rand(batch, 28, 28) if name.startswith("lstm") else torch.randn(batch, 1, 28, 28)
    clean = build(name, "clean")
    for label, cls in (("C++ tile", InferenceRPUConfig), ("torch tile", TorchInferenceRPUConfig)):
        analog = build(name, cls)
        drift(analog, 86400.0)
        def run_clean():
            with torch.no_grad(): clean(x)
        def run_analog():
            with torch.no_grad(): analog(x)
        tc, ta = time_pair(run_clean, run_analog, max(1, repeats // (4 if name.startswith("lstm") else 2)))
        rows.append([name, batch, label, tc, ta])
print(json.dumps({"version": aihwkit.__version__, "rows": rows}))
'''


def _aihwkit(python: str | None, cases, repeats: int, threads: int) -> tuple[str | None, dict | None]:
    """``(why not, None)`` or ``(None, {"version", "rows"})``."""
    if python is None:
        try:
            import aihwkit  # noqa: F401
        except Exception as exc:  # not installed, or its compiled part missing
            return f"aihwkit cannot be imported here ({type(exc).__name__}: {exc}); see --aihwkit-python", None
        python = sys.executable
    proc = subprocess.run([python, "-c", AIHWKIT_SCRIPT, json.dumps(cases), str(repeats), str(threads)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"aihwkit run with {python} failed: {tail}", None
    return None, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--tiles", type=int, default=0, help="rows per crossbar tile (0: one tile)")
    parser.add_argument("--aihwkit-python", default=None,
                        help="an interpreter that can import aihwkit (default: this one, if it can)")
    parser.add_argument("--no-aihwkit", action="store_true", help="skip the aihwkit comparison")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"{_cpu()} | torch {torch.__version__} | threads {threads} | load average {os.getloadavg()[0]:.2f}")
    chip = PCM(t=86400.0, inp_bits=8, out_bits=8, out_noise=0.04, max_input_size=args.tiles)
    print(f"noise model: {chip!r}")
    print(f"{'network':<12} {'batch':>6} {'clean ms':>9} {'PCM ms':>9} {'ratio':>6}  target <= 2x")
    models = {}
    for name, batch in CASES:
        model = models.setdefault(name, noisynn.build_model(name).eval())
        x = _input(name, batch)

        def clean(model=model, x=x):
            with torch.inference_mode(), noisynn.clean():
                model(x)

        def pcm(model=model, x=x):
            with torch.inference_mode(), chip:
                model(x)

        tc, tp = time_pair(clean, pcm, args.repeats)
        print(f"{name:<12} {batch:>6} {tc * 1e3:>9.1f} {tp * 1e3:>9.1f} {tp / tc:>6.2f}  "
              f"{'met' if tp / tc <= 2 else 'NOT met'}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.no_aihwkit:
        return
    why, result = _aihwkit(args.aihwkit_python, CASES, args.repeats, threads)
    if why is not None:
        print(f"aihwkit: no comparison: {why}")
        return
    print(f"aihwkit {result['version']} (same periphery and PCM model; its own interpreter, same threads; "
          f"fewer repeats: it is slow):")
    print(f"{'network':<12} {'batch':>6} {'tile':<11} {'clean ms':>9} {'aihwkit ms':>11} {'ratio':>7}")
    for name, batch, label, tc, ta in result["rows"]:
        print(f"{name:<12} {batch:>6} {label:<11} {tc * 1e3:>9.1f} {ta * 1e3:>11.1f} {ta / tc:>7.1f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
