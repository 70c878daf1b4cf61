"""transformer-rows: Deep Noise Injection beyond the papers, on a small transformer (docs/transformer.md)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import noisynn
from noisynn.engine.presets import load_plan
from noisynn.engine.training import build_for_data
from noisynn.models import TransformerClassifier, transformer_parameters
from noisynn.noise import Additive, Clean, NoiseModel, PerSite

LAYER_SITES = ["self_attn:q", "self_attn:k", "self_attn:v", "self_attn:scores", "self_attn:weighted_sum",
               "self_attn.out_proj", "linear1", "linear2"]
SITES = ["embed"] + [f"encoder.layers.{i}.{s}" for i in range(2) for s in LAYER_SITES] + ["head"]


class Recorder(NoiseModel):
    """Adds nothing, records every site it is called at."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def apply(self, y, site=""):
        self.calls.append(site)
        return y


def test_parameter_count_is_the_formula_and_near_the_lstm():
    model = noisynn.build_model("transformer-rows")
    d, f, i, t, c = 64, 168, 28, 28, 10
    per_layer = 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d  # attention, feed-forward, two layer norms
    assert noisynn.count_parameters(model) == (i * d + d) + t * d + 2 * per_layer + 2 * d + (d * c + c) == 81_690
    assert transformer_parameters() == 81_690
    assert abs(81_690 - noisynn.count_parameters(noisynn.build_model("lstm-rows"))) == 16
    digits = build_for_data("transformer-rows", (8, 8))
    assert digits.input_shape == (8, 8)
    assert noisynn.count_parameters(digits) == transformer_parameters(steps=8, input_size=8)
    assert digits(torch.rand(3, 8, 8)).shape == (3, 10)


def test_every_product_is_a_named_site_and_nothing_else_is_left_clean_silently():
    model = noisynn.build_model("transformer-rows")
    for report in (noisynn.inspect(model), noisynn.inspect(model, torch.rand(2, 28, 28))):
        assert [s.name for s in report.sites] == SITES
        assert report.gaps == [] and report.hosts == []
        assert sorted(c.type for c in report.clean) == ["Embedding"] + ["LayerNorm"] * 5
    recorder = Recorder()
    with recorder:
        model(torch.rand(2, 28, 28))
    assert recorder.calls == SITES  # each site once per forward, in execution order


def test_sigma_zero_is_torch_bit_for_bit_and_noise_survives_eval_no_grad():
    torch.manual_seed(0)
    model = noisynn.build_model("transformer-rows").eval()
    x = torch.rand(8, 28, 28)
    # the plain torch computation with the same weights (its fused fast path under no_grad)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(64, 4, 168, dropout=0.0, batch_first=True,
                                                               norm_first=True), 2, norm=nn.LayerNorm(64),
                                    enable_nested_tensor=False).eval()
    encoder.load_state_dict(model.encoder.state_dict())
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            ref = F.linear(encoder(F.linear(x, model.embed.weight, model.embed.bias) + model.positions.weight)
                           .mean(1), model.head.weight, model.head.bias)
            clean = model(x)
            assert torch.equal(clean, ref)
            for kind in ("additive", "multiplicative"):
                with noisynn.noise_model(kind, 0.0):
                    assert torch.equal(model(x), clean)
                with noisynn.noise_model(kind, 0.3):
                    a, b = model(x), model(x)
                assert not torch.equal(a, b) and not torch.equal(a, clean)  # fresh noise per pass, fast path bypassed


def test_repeat_forward_copies_are_independent():
    model = noisynn.build_model("transformer-rows").eval()
    x = torch.rand(5, 28, 28)
    with torch.no_grad():
        clean = model(x)
        out = noisynn.repeat_forward(model, x, 3)
        assert out.shape == (3, 5, 10) and torch.allclose(out[1], clean, atol=1e-5)
        with noisynn.noise_model("additive", 0.5):
            noisy = noisynn.repeat_forward(model, x, 3)
    assert not torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[1], noisy[2])


def test_per_site_noise_reaches_exactly_the_chosen_sites():
    model = noisynn.build_model("transformer-rows").eval()
    x = torch.rand(4, 28, 28)
    recorder = Recorder()
    attention_only = PerSite({"*:scores": recorder, "*:weighted_sum": recorder}, default=Clean())
    with torch.no_grad(), attention_only:
        model(x)
    assert recorder.calls == [f"encoder.layers.{i}.self_attn:{s}" for i in range(2) for s in ("scores", "weighted_sum")]
    with torch.no_grad():
        clean = model(x)
        with PerSite({"*:scores": Clean(), "*:weighted_sum": Clean()}, default=Additive(0.0)):
            assert torch.equal(model(x), clean)
        with PerSite({"*:scores": Additive(0.5)}, default=Clean()):
            assert not torch.equal(model(x), clean)


@pytest.mark.slow
def test_deep_noise_injection_steps_lower_the_loss_on_digits():
    torch.manual_seed(0)
    from noisynn.data import load

    model = TransformerClassifier(steps=8, input_size=8)
    data = load("digits", "train", layout="rows")
    x, y = torch.as_tensor(data.x[:256]), torch.as_tensor(data.y[:256]).long()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    noisynn.set_noise(model, "additive", 0.5)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


@pytest.mark.parametrize("preset", ["transformer-rows-additive", "transformer-rows-multiplicative"])
def test_presets_load_in_every_profile(preset):
    kind = preset.rsplit("-", 1)[1]
    for profile in ("quick", "cpu"):
        plan = load_plan(preset, profile)
        assert (plan.model, plan.dataset, plan.noise) == ("transformer-rows", "mnist", kind)
        assert 0.0 in plan.sigma_train and plan.sigma_val[0] == 0.0 and plan.sigma_val[-1] == 1.0
        assert plan.votes >= 5 and plan.vote_sigma_val
    assert load_plan(preset, "cpu").eval_limit is None  # the whole test set
