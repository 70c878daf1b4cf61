"""Reports of a run directory: figures (PNG/SVG), CSV tables and a self-contained HTML page.

``noisynn report DIR`` / :func:`write_report` reads a sweep's ``results.sqlite`` and its
checkpoints and writes ``DIR/report/``: ``report.html`` (referencing the PNGs beside it),
every figure as PNG and SVG, and CSV tables. The page puts the papers' published numbers
(:mod:`noisynn.report.published`, data in ``noisynn/published/papers.json``) next to the
measured ones.

The pieces are usable on their own:

* :mod:`noisynn.report.figures`: one function per figure, each returning a matplotlib
  ``Figure`` (accuracy / error rate against σ_val, heat map, learning curves, LSTM state
  distributions, weight histograms and power, softmax over noisy runs, voting, stroke lengths);
* :mod:`noisynn.report.analysis`: the computations (state distributions, weight power,
  softmax runs, voting cost) returning arrays;
* :mod:`noisynn.report.published`: the published cells and claims, and their match to a run.
"""

from __future__ import annotations

from pathlib import Path

from noisynn._extras import require

require("matplotlib", "report", "noisynn.report")  # the `report` extra: one line naming it when missing

from noisynn.report.builder import Report, ReportError, build_report  # noqa: E402 - after the extras check

__all__ = ["write_report", "build_report", "Report", "ReportError"]


def write_report(run_dir: str | Path, out: str | Path | None = None, **options) -> Path:
    """Write ``report.html`` (and figures, tables) for the sweep in ``run_dir``; return its path.

    Args:
        run_dir: a sweep's ``--out`` directory.
        out: the report folder (default ``run_dir/report``).
        **options: passed to :func:`build_report` (``data_dir``, ``device``,
            ``softmax_runs``, ``state_samples``, ``model_figures``, ``log``).

    Raises:
        ReportError: ``run_dir`` has no ``results.sqlite``.
    """
    return build_report(run_dir, out, **options).html
