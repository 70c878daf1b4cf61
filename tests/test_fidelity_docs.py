"""Issue 18: docs/reproduction.md's papers-profile section is regenerated from the committed stores alone."""

from __future__ import annotations

import importlib.util
import shutil
import sqlite3
from pathlib import Path

import pytest

FIDELITY = Path(__file__).resolve().parents[1] / "docs" / "fidelity"


def _build(folder: Path):
    spec = importlib.util.spec_from_file_location("fidelity_build", FIDELITY / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.HERE = folder  # read the stores of this folder instead
    return mod


def test_committed_stores_regenerate_the_document():
    build = _build(FIDELITY)
    assert any(build.store_path(n).exists() for n in build.EXPERIMENTS), "no kept store in docs/fidelity"
    assert build.write(check=True) == 0  # the committed section is exactly what the committed stores give


def test_the_section_follows_the_store(tmp_path):
    name = next(n for n in _build(FIDELITY).EXPERIMENTS if (FIDELITY / f"{n}.papers.sqlite").exists())
    for f in FIDELITY.glob(f"{name}.papers.*"):
        shutil.copy(f, tmp_path / f.name)
    build = _build(tmp_path)
    before = build.generate()
    with sqlite3.connect(tmp_path / f"{name}.papers.sqlite") as c:
        sv = c.execute("SELECT MAX(sigma_val) FROM points WHERE kind = 'noisy' AND sigma_train = 0").fetchone()[0]
        c.execute("UPDATE points SET accuracy = 0.4321, stderr = 0.0123 WHERE kind = 'noisy' AND sigma_train = 0 "
                  "AND sigma_val = ?", (sv,))
    after = build.generate()
    assert after != before
    assert "43.2 ± 1.23" in after and "43.2 ± 1.23" not in before
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{build.BEGIN}\nold\n{build.END}\noutro\n")
    assert build.write(doc, check=True) == 1  # stale
    assert build.write(doc) == 0 and build.write(doc, check=True) == 0
    assert doc.read_text().startswith("intro\n") and doc.read_text().endswith("\noutro\n")


def test_a_missing_store_says_not_started(tmp_path):
    build = _build(tmp_path)
    text = build.generate()
    assert text.count("*Not started") == 3
    assert text.count("*Not run: no `docs/fidelity/checks/") == len(build.CHECKS)  # said, not left out


@pytest.mark.parametrize("broken", ["no markers here\n"])
def test_a_document_without_markers_is_refused(tmp_path, broken):
    doc = tmp_path / "doc.md"
    doc.write_text(broken)
    assert _build(FIDELITY).write(doc) == 2
    assert doc.read_text() == broken
