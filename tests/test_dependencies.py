"""The core needs only torch and numpy; every extra, when missing, is one line naming it.

Each check runs in a fresh interpreter in which the optional packages cannot be imported (a
meta-path finder refuses them), as in an environment where only ``pip install noisynn`` ran.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # each check is a fresh interpreter importing torch

OPTIONAL = ("typer", "rich", "pooch", "platformdirs", "sklearn", "safetensors", "tqdm", "matplotlib")

PRELUDE = f"""
import importlib.abc, sys
BLOCKED = {OPTIONAL!r}
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Refuse())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300)


def test_import_noisynn_and_its_layers_need_only_torch_and_numpy():
    done = _run("""
        import torch, noisynn
        model = noisynn.build_model("rnn-rows").eval()
        with noisynn.noise("additive", 0.5):
            out = model(torch.rand(2, 28, 28))
        noisy = noisynn.convert(torch.nn.Sequential(torch.nn.Linear(4, 3)), noisynn.Additive(0.1))
        noisy(torch.rand(2, 4))
        loaded = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
        print(tuple(out.shape), loaded)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["(2,", "10)", "[]"]


def test_a_missing_extra_is_one_line_naming_it(tmp_path):
    done = _run(f"""
        import noisynn
        from noisynn._extras import MissingDependency
        for call, extra in [(lambda: noisynn.evaluate, "engine"),
                            (lambda: __import__("noisynn.cli.main"), "cli"),
                            (lambda: __import__("noisynn.report"), "report"),
                            (lambda: noisynn.data.load("digits"), "data"),
                            (lambda: noisynn.data.fetch("mnist", data_dir={str(tmp_path)!r}), "data")]:
            try:
                import noisynn.data
                call()
            except MissingDependency as exc:
                print(extra, "|", exc)
            else:
                print(extra, "| worked without its extra")
    """)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["engine", "cli", "report", "data", "data"]
    for line in lines:
        extra, message = line.split(" | ")
        assert message.endswith(f"pip install 'noisynn[{extra}]'"), line
