"""The speed benchmark runs and prints what it claims to (a smoke test: no timing is asserted).

Performance goals are checked by ``benchmarks/bench_speed.py`` itself (ratios against
noise-free torch, printed); this only keeps the one command from breaking unnoticed.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from noisynn import kernels

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_speed.py"


@pytest.fixture(scope="module")
def bench_speed():
    spec = importlib.util.spec_from_file_location("bench_speed", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_bench_speed_prints_the_machine_the_rows_and_the_limits(bench_speed, capsys):
    bench_speed.main(["--only", "sampler,linear,limits", "--quick", "--device", "cpu", "--repeats", "5"])
    out = capsys.readouterr().out
    assert re.search(r"^machine: .+ \| \d+ logical CPUs \| CPU flags .* \| torch CPU capability \S+", out, re.M)
    row = re.compile(r"^(7 eval NoisyLinear \d+x\d+|3 sampler)\D.*?\s(\d+\.\d\d)\s", re.M)
    ratios = {m[1]: float(m[2]) for m in row.finditer(out)}
    assert set(ratios) == {"7 eval NoisyLinear 128x128", "7 eval NoisyLinear 512x512", "3 sampler"}, out
    assert all(r > 0 for r in ratios.values())
    if kernels.available():  # the breakdown: every part at 1 thread, each with a positive time and share
        parts = re.findall(r"^\s+1\s{2}(.+?)\s+(\d+\.\d+)ms\s+(\d+\.\d\d)$", out, re.M)
        assert len(parts) == 9, out
        assert all(float(t) > 0 and float(share) > 0 for _, t, share in parts)
        assert [share for name, _, share in parts if "(the reference)" in name] == ["1.00", "1.00"]
    else:
        assert "limits: the fast kernels are not built here" in out
