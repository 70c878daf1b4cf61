"""Typed plans: a preset's training settings and its attack table as dataclasses, the TOML unchanged."""

from __future__ import annotations

import dataclasses

import pytest

from noisynn.engine.presets import AttackSettings, PresetError, TrainSettings, load_plan
from noisynn.engine.training import TrainSpec


def test_train_settings_default_as_trainspec_and_read_as_the_old_dict():
    spec = {f.name: f for f in dataclasses.fields(TrainSpec)}
    for f in dataclasses.fields(TrainSettings):
        if f.name != "epochs":
            assert (f.default, f.default_factory) == (spec[f.name].default, spec[f.name].default_factory), f.name
    assert set(spec) - {f.name for f in dataclasses.fields(TrainSettings)} == {
        "model", "dataset", "noise", "sigma_train", "seed"}
    plan = load_plan("paper1-lstm-rows", "papers")
    t = plan.train
    assert isinstance(t, TrainSettings) and (t.optimizer, t.batch_size, t.lr) == ("adam", 32, 1e-4)
    assert t["epochs"] == t.epochs and dict(t)["early_stopping"] == t.early_stopping and t.get("nothing") is None
    assert plan.train_spec(0.5, 0).early_stopping == t.early_stopping and plan.attack is None and plan.extra == {}


def test_attack_settings_of_the_attack_preset():
    plan = load_plan("paper2-adversarial", "quick")
    assert plan.attack == AttackSettings(source_model="madry-cnn4", eps=0.3, alpha=0.05, steps=10, restarts=2,
                                         limit=500, eot=4, eot_restarts=1, eot_limit=200)
    assert plan.attack.table() == {"eps": 0.3, "alpha": 0.05, "steps": 10, "restarts": 2, "limit": 500, "eot": 4,
                                   "eot_restarts": 1, "eot_limit": 200}
    assert plan.extra == {"attack": plan.attack.table(), "source_model": "madry-cnn4"}


def test_attack_preset_errors_are_unchanged(tmp_path):
    text = ('model = "madry-cnn4"\ndataset = "digits"\nnoise = "multiplicative"\n[profile.quick]\n'
            'sigma_train = "0"\nsigma_val = "0"\nepochs = 1\nattack = {eps = 0.1}\n')
    path = tmp_path / "a.toml"
    path.write_text(text)
    with pytest.raises(PresetError, match="an attack preset needs the top-level key source_model"):
        load_plan(path, "quick")
