"""PGD attacks, adversarial training and the transfer pipeline (paper 2, sec. 4), on the embedded digits."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from typer.testing import CliRunner

import noisynn
from noisynn.attacks import PGD, Normalized
from noisynn.engine.adversarial import run_transfer
from noisynn.engine.presets import load_plan
from noisynn.engine.store import ResultStore
from noisynn.engine.training import TrainSpec, load_data, load_trained, train
from noisynn.errors import CheckpointError, NoisynnError
from noisynn.noise import clean


def _acc(model, x, y) -> float:
    with torch.no_grad(), clean():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="module")
def digits_models(tmp_path_factory):
    """A naturally trained madry-cnn4 and two adversarially trained ones (NN_adv, NN_val) on 8x8 digits."""
    root = tmp_path_factory.mktemp("adv")
    adv = {"eps": 0.2, "alpha": 0.07, "steps": 3}
    specs = {
        "natural": TrainSpec("madry-cnn4", "digits", "multiplicative", 0.0, epochs=3, lr=1e-3, seed=0),
        "source": TrainSpec("madry-cnn4", "digits", "multiplicative", 0.0, epochs=3, lr=1e-3, seed=1, adversarial=adv),
        "target": TrainSpec("madry-cnn4", "digits", "multiplicative", 0.0, epochs=3, lr=1e-3, seed=2, adversarial=adv),
    }
    paths = {}
    for name, spec in specs.items():
        paths[name] = root / f"{name}.safetensors"
        train(spec, paths[name], progress=False)
    test = load_data("madry-cnn4", "digits", "test")
    return paths, specs, test


def test_pgd_stays_in_the_eps_ball_and_the_pixel_range():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x, y = torch.rand(50, 1, 8, 8), torch.randint(0, 10, (50,))
    x[:5] = 0.0  # at the edge of the pixel range
    x_adv = PGD(model, 0.1, 0.07, 5, restarts=3, generator=torch.Generator().manual_seed(0))(x, y)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert model[1].weight.grad is None  # the model's parameters get no gradient


def test_pgd_in_pixel_space_for_a_normalised_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10))
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    pixels, y = torch.rand(20, 3, 4, 4), torch.randint(0, 10, (20,))
    x = (pixels - m) / s  # what noisynn's CIFAR-10 loader hands out
    x_adv = PGD(net, 8 / 256, 2 / 256, 4, mean=mean, std=std)(x, y)
    adv_pixels = x_adv * s + m
    assert (adv_pixels - pixels).abs().max() <= 8 / 256 + 1e-5
    assert adv_pixels.min() >= -1e-6 and adv_pixels.max() <= 1 + 1e-6
    # the wrapper is the same model on pixels
    assert torch.allclose(Normalized(net, mean, std)(pixels), net(x), atol=1e-5)


def test_pgd_rejects_bad_settings():
    model = torch.nn.Linear(2, 2)
    for kw in ({"steps": 0}, {"restarts": 0}, {"eot": 0}, {"alpha": 0.0}):
        with pytest.raises(ValueError):
            PGD(model, **{"eps": 0.1, "alpha": 0.01, "steps": 2, **kw})
    assert PGD.mnist(model).restarts == 20 and PGD.cifar10(model).steps == 7


@pytest.mark.slow
def test_pgd_accuracy_far_below_clean_and_restarts_never_raise_it(digits_models):
    paths, _, test = digits_models
    model, _ = load_trained(paths["natural"])
    clean_acc = _acc(model, test.x, test.y)
    assert clean_acc > 0.85
    x_adv = PGD(model, 0.2, 0.05, 10, restarts=1, generator=torch.Generator().manual_seed(0))(test.x, test.y)
    assert _acc(model, x_adv, test.y) < clean_acc - 0.6
    accs = []
    for restarts in (1, 2, 4, 8):  # the same seed: restart r draws the same random start every time
        attack = PGD(model, 0.07, 0.02, 5, restarts=restarts, generator=torch.Generator().manual_seed(3))
        accs.append(_acc(model, attack(test.x, test.y), test.y))
    assert all(b <= a for a, b in itertools.pairwise(accs)), accs
    assert accs[-1] < accs[0] and accs[0] < clean_acc  # restarts matter at this small eps


@pytest.mark.slow
def test_eot_attack_on_a_noisy_model(digits_models):
    paths, _, test = digits_models
    model, _ = load_trained(paths["natural"])
    x, y = test.x[:100], test.y[:100]
    with noisynn.noise_model("multiplicative", 0.3, generator=torch.Generator().manual_seed(0)):
        x_adv = PGD(model, 0.2, 0.05, 5, eot=4, generator=torch.Generator().manual_seed(0))(x, y)
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6
    assert _acc(model, x_adv, y) < _acc(model, x, y) - 0.5


@pytest.mark.slow
def test_adversarial_training_spec_identity(digits_models, tmp_path):
    paths, specs, test = digits_models
    natural, source = specs["natural"], specs["source"]
    assert "adversarial" not in natural.identity()  # old natural checkpoints still resume
    assert source.identity()["adversarial"]["eps"] == 0.2 and source.key.endswith("-adv-seed1")
    with pytest.raises(NoisynnError):
        TrainSpec("madry-cnn4", "digits", "multiplicative", 0.0, epochs=1, adversarial={"eps": 0.1})
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(paths["source"].read_bytes())
    with pytest.raises(CheckpointError):  # an adversarial checkpoint is not resumed as a natural one
        train(TrainSpec("madry-cnn4", "digits", "multiplicative", 0.0, epochs=4, lr=1e-3, seed=1), ckpt,
              progress=False)
    # adversarial training makes the model more robust than natural training
    x, y = test.x, test.y
    robust = {}
    for name in ("natural", "source"):
        model, _ = load_trained(paths[name])
        robust[name] = _acc(model, PGD(model, 0.2, 0.05, 10, generator=torch.Generator().manual_seed(0))(x, y), y)
    assert robust["source"] > robust["natural"] + 0.1, robust


@pytest.mark.slow
def test_transfer_pipeline_writes_points_and_resumes(digits_models, tmp_path):
    paths, _, _ = digits_models
    kw = dict(sigma_val=(0.0, 0.3), runs=3, limit=120, settings={"eps": 0.2, "alpha": 0.05, "steps": 5,
                                                                     "restarts": 2},
              eot=2, eot_settings={"restarts": 1}, eot_limit=60)
    report = run_transfer(paths["source"], paths["target"], tmp_path, **kw)
    by = {(r["kind"], r["sigma_val"]): r for r in report.rows}
    assert set(by) == {("adversarial-source", 0.0), ("noisy", 0.0), ("noisy", 0.3), ("adversarial", 0.0),
                       ("adversarial", 0.3), ("adversarial-eot", 0.0), ("adversarial-eot", 0.3)}
    assert by[("adversarial", 0.3)]["n_runs"] == 3 and by[("adversarial", 0.0)]["n_runs"] == 1
    assert by[("adversarial-eot", 0.3)]["samples"] == 60
    # white-box on the source is the strongest; transferred examples still hurt the target
    assert by[("adversarial-source", 0.0)]["accuracy"] < by[("adversarial", 0.0)]["accuracy"]
    assert by[("adversarial", 0.0)]["accuracy"] < by[("noisy", 0.0)]["accuracy"]
    with ResultStore(tmp_path / "results.sqlite") as store:
        assert len(store.points(kind="adversarial")) == 2 and len(store.points(kind="adversarial-eot")) == 2
    from noisynn.engine.rundir import RunDir

    cached = sorted(RunDir(tmp_path).adversarial.iterdir())  # the transfer examples, where RunDir names them
    assert len(cached) == 1 and cached[0] == RunDir(tmp_path).adversarial_examples(
        cached[0].name.removeprefix("transfer-").removesuffix(".safetensors"))
    again = run_transfer(paths["source"], paths["target"], tmp_path, **kw)  # all cached: same numbers
    assert [r["accuracy"] for r in again.rows] == [r["accuracy"] for r in report.rows]


@pytest.mark.slow
def test_attack_cli_json_and_errors(digits_models, tmp_path):
    from noisynn.cli.main import app

    paths, _, _ = digits_models
    runner = CliRunner()
    args = ["attack", "--source", str(paths["source"]), "--target", str(paths["target"]), "--sigma", "0,0.2",
            "--runs", "2", "--limit", "40", "--steps", "3", "--restarts", "1", "--out", str(tmp_path)]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    points = json.loads(res.stdout)["points"]
    assert {p["kind"] for p in points} == {"adversarial-source", "noisy", "adversarial"}
    res = runner.invoke(app, [*args[:-2], "--out", str(tmp_path / "x"), "--sigma", "-1"])
    assert res.exit_code == 2 and "error:" in res.output


def test_adversarial_preset_loads():
    plan = load_plan("paper2-adversarial", "paper")
    assert plan.extra["source_model"] == "madry-cnn4" and plan.model == "cnn6"
    assert plan.extra["attack"] | {} == {**plan.extra["attack"], "eps": 0.3, "alpha": 0.05, "steps": 20,
                                         "restarts": 20}
    assert plan.train_spec(0.0, 0).adversarial["eps"] == 0.3 and plan.runs == 20
    quick = load_plan("paper2-adversarial", "quick")
    assert quick.sigma_val == (0.0, 0.1, 0.2, 0.3, 0.4)
