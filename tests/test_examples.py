"""Every script in examples/ runs to the end (a subprocess, as a user runs it) and prints sensible numbers."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import noisynn

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 240  # each takes < 60 s on 2 idle cores; the margin is for a machine shared with other jobs
NUMBER = r"[-+]?\d+(?:\.\d+)?"


def run(name: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=EXAMPLES.parent, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    return proc.stdout


#: 01 and 04 use noisynn.evaluate / noisynn.sweep (src/noisynn/api.py), landing separately
needs_api = pytest.mark.skipif(not (hasattr(noisynn, "evaluate") and hasattr(noisynn, "sweep")),
                               reason="noisynn.evaluate / noisynn.sweep (src/noisynn/api.py) are not in this checkout")


def rows(out: str, first: str) -> dict[str, list[float]]:
    """Table rows whose first cell matches ``first`` (a regex): first cell -> the numbers after it."""
    found = {}
    for line in out.splitlines():
        m = re.match(rf"\s*({first})\s+(.*)$", line)
        if m:
            found[m.group(1)] = [float(v) for v in re.findall(NUMBER, m.group(2))]
    return found


def test_every_example_is_tested_and_documented():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    tested = {n.removeprefix("test_example_") for n in globals() if n.startswith("test_example_")}
    assert {s[:2] for s in scripts} == tested, (scripts, tested)
    for s in scripts:
        text = (EXAMPLES / s).read_text()
        assert text.startswith('"""') and f"python examples/{s}" in text, f"{s}: docstring saying how to run it"


@pytest.mark.slow
@needs_api
def test_example_01():
    out = run("01_convert_your_cnn.py")
    table = rows(out, r"\d+\.\d\d")  # sigma_val, repeat_forward %, sd, evaluate %, stderr
    sigmas = sorted(table, key=float)
    assert [float(s) for s in sigmas] == [0.0, 0.25, 0.5, 1.0, 1.5], out
    clean, worst = table[sigmas[0]], table[sigmas[-1]]
    assert clean[0] > 90 and clean[0] == clean[2] and clean[1] == 0.0, out  # exact at sigma 0, far above chance
    assert worst[0] < clean[0] - 10 and abs(worst[0] - worst[2]) < 5, out  # both measurements agree
    assert "features.1" in out and "BN(Wx + b)" in out and "GAP" not in out


@pytest.mark.slow
def test_example_02():
    out = run("02_dni_in_your_training_loop.py")
    table = rows(out, "conventional|DNI")  # clean %, noisy %, (sd)
    assert set(table) == {"conventional", "DNI"}, out
    for name, (clean, noisy, sd) in table.items():
        assert clean > 85 and 10 < noisy <= 100 and sd >= 0, (name, out)
    assert table["DNI"][1] > table["conventional"][1] - 2, out  # DNI is not worse at sigma_val 0.5


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                    reason="HF transformers is not installed (it is in the test extra: pip install -e '.[test]')")
def test_example_03():
    out = run("03_hf_gpt2_from_config.py")
    for site in ("lm_head", "transformer.h.1.attn.c_attn:addmm", "transformer.h.0.attn:scores",
                 "transformer.h.0.attn:weighted_sum", "transformer.h.1.mlp.c_proj:addmm"):
        assert f"site  {site} " in out, site
    assert "13 noise sites (traced)" in out and "GAP" not in out and "look-up" in out
    table = rows(out, r"0\.\d\d")  # sigma_val, loss, perplexity
    assert sorted(table) == ["0.00", "0.10", "0.30"], out
    loss0, ppl0 = table["0.00"]
    assert loss0 < 0.5 * math.log(50) and abs(math.exp(loss0) - ppl0) < 0.05 * ppl0, out  # learnt the toy language
    assert table["0.30"][0] > loss0, out  # noise costs something


@pytest.mark.slow
@needs_api
def test_example_04():
    out = run("04_custom_noise_model.py")
    header = next(line for line in out.splitlines() if "sigma_val" in line and "sigma_train" in line)
    sigma_vals = [float(v) for v in re.findall(NUMBER, header)]
    table = rows(out, r"\d+\.\d\d")  # sigma_train -> accuracy per sigma_val
    assert sorted(table, key=float) == ["0.00", "0.20"] and sigma_vals == [0.0, 0.15, 0.3, 0.45, 0.6], out
    for st, accs in table.items():
        assert len(accs) == len(sigma_vals) and accs[0] > 80 and accs[-1] < accs[0] - 20, (st, out)
