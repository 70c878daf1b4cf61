"""A transfer-attack preset swept by run_sweep (paper 2, sec. 4): its tasks, where they run, resuming."""

from __future__ import annotations

from pathlib import Path

import pytest

from noisynn.engine.presets import load_plan
from noisynn.engine.store import ResultStore
from noisynn.engine.sweep import AttackTask, LocalExecutor, TrainTask, attack_stages, run_sweep

PRESET = """
name = "atk"
model = "madry-cnn4"
source_model = "madry-cnn4"
dataset = "digits"
noise = "multiplicative"

[profile.quick]
sigma_train = "0.2,0.4"
train_limit = 600
sigma_val = "0,0.3"
epochs = 2
lr = 1e-3
runs = 2
adversarial = { eps = 0.2, alpha = 0.1, steps = 2, restarts = 1 }
attack = { eps = 0.2, alpha = 0.1, steps = 2, restarts = 1, limit = 60, eot = 2, eot_restarts = 1, eot_limit = 30 }
"""


class _Remote(LocalExecutor):
    """An executor whose workers may not see the run directory; it records what it was given."""

    remote = True

    def __init__(self) -> None:
        self.given: list[str] = []

    def submit(self, task):
        self.given.append(type(task).__name__)
        return super().submit(task)


@pytest.fixture(scope="module")
def attack_plan(tmp_path_factory):
    path = tmp_path_factory.mktemp("preset") / "atk.toml"
    path.write_text(PRESET)
    return load_plan(path, "quick")


def _points(run: Path) -> list[tuple]:
    with ResultStore(run / "results.sqlite") as store:
        return sorted((p["model"], p["sigma_train"], p["kind"], p["sigma_val"], p["accuracy"]) for p in store.points())


def test_attack_stages_train_both_networks_then_attack_each_nn_val(attack_plan, tmp_path):
    trains = [TrainTask(attack_plan.train_spec(s, 0), str(tmp_path), "atk") for s in attack_plan.sigma_train]
    training, attacks = attack_stages(attack_plan, trains, run_dir=str(tmp_path), experiment="atk", seed=0,
                                      data_dir=None, device="cpu")
    assert [c[0].spec.sigma_train for c in training] == [0.0, 0.2, 0.4] and all(len(c) == 1 for c in training)
    assert [type(c[0]) for c in attacks] == [AttackTask, AttackTask]
    assert {a[0].source for a in attacks} == {str(training[0][0].checkpoint)}
    assert [a[0].target for a in attacks] == [str(t.checkpoint) for t in trains]
    no_attack = load_plan("demo", "quick")
    assert attack_stages(no_attack, [], run_dir=str(tmp_path), experiment="demo", seed=0, data_dir=None,
                         device="cpu") == []


def test_attack_sweep_records_every_kind_logs_and_resumes(attack_plan, tmp_path):
    run, logs = tmp_path / "run", []
    executor = _Remote()
    summary = run_sweep(attack_plan, run, device="cpu", progress=False, log=logs.append, executor=executor)
    assert summary.computed == 2 and executor.given.count("TrainTask") >= 3
    assert "AttackTask" not in executor.given  # a remote executor's workers never run an attack: the driver does
    points = _points(run)
    kinds = {(st, kind, sv) for _, st, kind, sv, _ in points}
    assert (0.0, "adversarial-source", 0.0) in kinds
    for st in (0.2, 0.4):
        for kind in ("noisy", "adversarial", "adversarial-eot"):
            assert {(st, kind, 0.0), (st, kind, 0.3)} <= kinds, (st, kind)
    assert sum("(adversarially, sigma_train" in m for m in logs) == 3
    assert sum(m.strip().startswith("adversarial-eot madry-cnn4 sigma_val") for m in logs) == 4
    with ResultStore(run / "results.sqlite") as store:
        epochs = len(store.epochs())
    again: list[str] = []
    summary = run_sweep(attack_plan, run, device="cpu", progress=False, log=again.append)
    assert summary.computed == 2 and _points(run) == points  # all found: the same numbers, nothing retrained
    with ResultStore(run / "results.sqlite") as store:
        assert len(store.epochs()) == epochs == 6
    assert sorted(again[1:]) == sorted(logs[1:])
