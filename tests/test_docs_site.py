"""The README and the documentation site: what `mkdocs build --strict` (in .ci/run) does not check itself."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# CI and new users copy these from the README: they must stay exactly as they are
COMMANDS = (
    'pip install torch==2.13.0 && pip install -e ".[all]" && noisynn demo --out noisynn-demo',
    'pip install -e ".[test,ray,slurm]" && python -m pytest -q',
)


def test_the_readme_opens_with_the_two_commands():
    text = README.read_text()
    first_block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    assert [line for line in first_block.splitlines() if not line.startswith("#")] == list(COMMANDS)
    assert text.index("```bash") < text.index("\n## ")  # before any section


def test_every_relative_link_of_the_readme_exists():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert "docs/benchmarks.md" in local and "docs/index.md" in local
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


@pytest.fixture(scope="module")
def rst():
    pytest.importorskip("griffe", reason="the docs extra (griffe) is not installed")
    path = ROOT / "docs" / "_griffe" / "rst_markup.py"
    spec = importlib.util.spec_from_file_location("rst_markup", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_roles_become_inline_code(rst):
    assert rst.to_markdown("See :func:`~noisynn.noise.clean` and :mod:`noisynn.layers`.") == (
        "See `clean` and `noisynn.layers`."
    )


def test_a_literal_block_becomes_a_fence(rst):
    text = "Example::\n\n    with noisynn.clean():\n        y = model(x)\n\nAfter."
    assert rst.to_markdown(text) == (
        "Example:\n\n```python\nwith noisynn.clean():\n    y = model(x)\n```\n\nAfter."
    )
    doctest = rst.to_markdown("Intro.\n\n>>> 1 + 1\n2\n\nEnd.")
    assert "```pycon\n>>> 1 + 1\n2\n```" in doctest


def test_doctests_of_an_examples_section_are_left_to_griffe(rst):
    text = "Summary.\n\nExamples:\n    >>> 1 + 1\n    2\n"
    assert rst.to_markdown(text) == text.rstrip("\n")


def test_a_simple_table_becomes_a_markdown_table(rst):
    text = "\n".join([
        "=====  ===============",
        "key    meaning",
        "=====  ===============",
        "runs   noisy runs (see",
        "       ``target``)",
        "a|b    a pipe",
        "=====  ===============",
    ])
    assert rst.to_markdown(text).strip().splitlines() == [
        "| key | meaning |",
        "| --- | --- |",
        "| runs | noisy runs (see ``target``) |",
        "| a\\|b | a pipe |",
    ]


def test_every_public_module_is_in_the_api_reference():
    """A new module of noisynn gets its `::: noisynn.x` line in a page of docs/api/ (the command line is --help's)."""
    documented = set()
    for page in (ROOT / "docs" / "api").glob("*.md"):
        documented |= set(re.findall(r"^::: ([\w.]+)", page.read_text(), flags=re.M))
    src = ROOT / "src"
    modules = set()
    for path in (src / "noisynn").rglob("*.py"):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts) or parts[:2] == ("noisynn", "cli"):
            continue
        modules.add(".".join(parts))
    missing = sorted(modules - documented)
    assert not missing, f"modules in no page of docs/api/: {missing}: add `::: NAME` to the page of its package"
    assert not documented - modules, f"docs/api/ names modules that do not exist: {sorted(documented - modules)}"
