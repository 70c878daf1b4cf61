"""The papers' networks: exact sizes, noise sites, errors, and a real training run that learns."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import noisynn

PUBLISHED = {"lstm-rows": 81_674, "lstm-strokes": 68_362, "rnn-rows": 21_386, "madry-cnn4": 3_274_634}


@pytest.mark.parametrize("name,params", PUBLISHED.items())
def test_published_parameter_counts_are_exact(name, params):
    model = noisynn.build_model(name)
    assert noisynn.count_parameters(model) == params
    assert noisynn.MODELS[name].params == params


def test_architecture_parameter_counts():
    assert noisynn.count_parameters(noisynn.build_model("densenet40")) == 1_019_722  # "around one million"
    assert noisynn.count_parameters(noisynn.build_model("cnn6")) == 330_410
    # paper 2: fixed BN (beta = 0, gamma = 1) for additive noise -> no BN parameters
    fixed = noisynn.build_model("cnn6", noise_kind="additive")
    assert noisynn.count_parameters(fixed) == 330_410 - 2 * (32 + 32 + 64 + 64 + 256)
    assert all(not m.affine for m in fixed.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


@pytest.mark.parametrize(
    "name,sites",
    [
        ("lstm-rows", ["rnn", "fc"]),
        ("rnn-rows", ["rnn", "fc"]),
        ("cnn6", ["features.1", "features.4", "features.8", "features.11", "classifier.2", "classifier.4"]),
        ("madry-cnn4", ["features.0", "features.3", "classifier.1", "classifier.3"]),
    ],
)
def test_noise_sites_are_the_papers(name, sites):
    """Where output noise lands; a folded linear/conv (cnn6) is exact there, its BN carries the noise."""
    model = noisynn.build_model(name)
    assert [n for n, m in noisynn.noise_sites(model) if not getattr(m, "folded", False)] == sites
    folded = [n for n, m in noisynn.noise_sites(model) if getattr(m, "folded", False)]
    assert folded == (["features.0", "features.3", "features.7", "features.10", "classifier.1"]
                      if name == "cnn6" else [])


def test_densenet40_has_a_site_after_every_conv_and_the_classifier():
    model = noisynn.build_model("densenet40")
    sites = [m for _, m in noisynn.noise_sites(model)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 39 and len(sites) == 40  # 1 + 36 + 2 convs, + the FC
    assert all(isinstance(m, noisynn.NoiseSite) for m in convs)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("densenet") else n
                                  for n in noisynn.MODELS])
def test_every_model_runs_clean_and_noisy_on_its_input_shape(name):
    if name == "densenet100":
        pytest.skip("same code as densenet40, 7 M parameters: covered by densenet40")
    model = noisynn.build_model(name).eval()
    x = torch.rand(2, *noisynn.MODELS[name].input_shape)
    clean = model(x)
    assert clean.shape == (2, 10)
    with noisynn.noise_model("multiplicative", 0.0):
        assert torch.equal(model(x), clean)
    with noisynn.noise_model("multiplicative", 0.5):
        assert not torch.equal(model(x), clean)


def test_unknown_model_and_wrong_shapes_are_one_line_errors():
    with pytest.raises(noisynn.ModelError, match="unknown model 'lstm'.*lstm-rows"):
        noisynn.build_model("lstm")
    with pytest.raises(noisynn.ModelError,
                       match=r"cnn6 expects input of shape \(batch, 1, 28, 28\), got \(2, 28, 28\)"):
        noisynn.build_model("cnn6")(torch.rand(2, 28, 28))
    with pytest.raises(noisynn.ModelError, match=r"lstm-strokes expects input of shape \(batch, 50, 2\)"):
        noisynn.build_model("lstm-strokes")(torch.rand(2, 28, 28))
    with pytest.raises(noisynn.ModelError, match="does not take"):
        noisynn.build_model("rnn-rows", colour=True)


@pytest.mark.slow
def test_deep_noise_injection_training_learns_on_real_digits():
    """lstm-rows (8 x 8 rows of sklearn's real digits) trained with noise learns far above chance."""
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = order[:1400], order[1400:]
    model = noisynn.build_model("lstm-rows", steps=8, input_size=8)
    noisynn.set_noise(model, "additive", 0.3)  # Deep Noise Injection
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(4):
        for batch in train[torch.randperm(len(train))].split(32):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        noisy_acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
        with noisynn.clean():
            clean_acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    assert clean_acc > 0.75, clean_acc  # chance is 0.1
    assert noisy_acc > 0.7, noisy_acc
