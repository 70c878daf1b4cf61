"""Reports of a run directory (placeholder until the report module lands): an accuracy figure and a table."""

from __future__ import annotations

import html
from pathlib import Path

__all__ = ["write_report"]


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` and ``accuracy.png`` for the sweep in ``run_dir``; return the HTML path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from noisynn.engine.store import ResultStore

    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    with ResultStore(run_dir / "results.sqlite") as store:
        points = store.points(kind="noisy")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    for st in sorted({p["sigma_train"] for p in points}):
        rows = sorted((p for p in points if p["sigma_train"] == st), key=lambda p: p["sigma_val"])
        ax.errorbar([p["sigma_val"] for p in rows], [100 * p["accuracy"] for p in rows],
                    yerr=[100 * p["stderr"] for p in rows], marker="o", ms=3, capsize=2, label=f"σ_train = {st:g}")
    ax.set_xlabel("σ_val")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    fig.savefig(out / "accuracy.png", dpi=120)
    plt.close(fig)
    rows = "".join(f"<tr><td>{p['sigma_train']:g}</td><td>{p['sigma_val']:g}</td><td>{100 * p['accuracy']:.2f}</td>"
                   f"<td>{100 * p['stderr']:.2f}</td></tr>" for p in points)
    page = out / "report.html"
    page.write_text(f"<!doctype html><meta charset='utf-8'><h1>{html.escape(str(run_dir))}</h1>"
                    f"<img src='accuracy.png'><table>{rows}</table>")
    return page
