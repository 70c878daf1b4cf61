"""The experiment engine: training, noisy evaluation, voting, sweeps, results store.

The pieces, each usable from Python:

* :func:`train` (a :class:`TrainSpec` -> a resumable checkpoint),
* :func:`evaluate_point` / :func:`vote_curve` (a model + a test set -> accuracies),
* :func:`run_sweep` (a preset's :class:`Plan` -> a run directory with ``results.sqlite``),
* :class:`ResultStore` (the SQLite results), :func:`load_plan` / :func:`list_presets`.
"""

from noisynn._extras import require

for _module in ("safetensors", "tqdm"):  # the `engine` extra: one line naming it when missing
    require(_module, "engine", "noisynn.engine (training, evaluation, sweeps, checkpoints)")

from noisynn.engine.evaluation import evaluate_point, mean_stderr, parse_range, vote_curve  # noqa: E402 - after the extras check
from noisynn.engine.presets import Plan, PresetError, list_presets, load_plan  # noqa: E402 - after the extras check
from noisynn.engine.store import Point, PointKey, ResultStore, StoreError  # noqa: E402 - after the extras check
from noisynn.engine.sweep import EvalTask, LocalExecutor, ProcessExecutor, TrainTask, VoteTask, run_sweep  # noqa: E402 - after the extras check
from noisynn.engine.training import TrainSpec, load_trained, train  # noqa: E402 - after the extras check

__all__ = [
    "TrainSpec", "train", "load_trained", "evaluate_point", "vote_curve", "mean_stderr", "parse_range",
    "Plan", "PresetError", "list_presets", "load_plan", "ResultStore", "StoreError", "Point", "PointKey",
    "TrainTask", "EvalTask", "VoteTask", "LocalExecutor", "ProcessExecutor", "run_sweep",
]
