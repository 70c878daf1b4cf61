"""Noisy layers are drop-ins: same weights, same state_dict, bit-identical when clean."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import noisynn
from noisynn.noise import NoiseModel


class ForcePlainPath(NoiseModel):
    """A noise model that adds nothing but is not the identity: forces the unrolled path."""

    def apply(self, y, site=""):
        return y


ZERO_NOISE = [
    pytest.param(lambda: None, id="no-noise"),
    pytest.param(lambda: noisynn.Additive(0.0), id="additive-0"),
    pytest.param(lambda: noisynn.Multiplicative(0.0), id="multiplicative-0"),
]


def torch_layers():
    """(torch module, input) pairs covering every convertible layer and its options."""
    torch.manual_seed(0)
    yield nn.Linear(7, 5), torch.randn(4, 7)
    yield nn.Linear(7, 5, bias=False), torch.randn(2, 3, 7)
    yield nn.Conv2d(3, 4, 3, padding=1, stride=2), torch.randn(2, 3, 9, 9)
    yield nn.Conv2d(4, 4, 3, groups=2, bias=False, dilation=2), torch.randn(2, 4, 9, 9)
    for cls in (nn.LSTM, nn.GRU, nn.RNN):
        yield cls(5, 6), torch.randn(7, 3, 5)
        yield cls(5, 6, num_layers=2, batch_first=True, bidirectional=True), torch.randn(3, 7, 5)
        yield cls(5, 6, bias=False, batch_first=True), torch.randn(3, 7, 5)
        yield cls(5, 6), torch.randn(7, 5)  # unbatched
    yield nn.RNN(5, 6, nonlinearity="relu"), torch.randn(7, 3, 5)


def as_tensors(out):
    if isinstance(out, tuple):
        return [t for o in out for t in as_tensors(o)]
    return [out]


@pytest.mark.parametrize("make_noise", ZERO_NOISE)
def test_convert_at_sigma_zero_is_bit_identical(make_noise):
    for module, x in torch_layers():
        noisy = noisynn.convert(module, make_noise())
        assert type(noisy) is not type(module)
        expected = as_tensors(module(x))
        got = as_tensors(noisy(x))
        assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True)), type(module)
        with noisynn.noise_model(make_noise() or "none"):
            got = as_tensors(noisy(x))
        assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True)), type(module)


def test_state_dicts_interchange_with_torch():
    for module, _ in torch_layers():
        noisy = noisynn.convert(module)
        assert noisy.state_dict().keys() == module.state_dict().keys()
        for key, value in module.state_dict().items():
            assert torch.equal(noisy.state_dict()[key], value)
    fresh = noisynn.NoisyLSTM(5, 6, num_layers=2, bidirectional=True)
    fresh.load_state_dict(nn.LSTM(5, 6, num_layers=2, bidirectional=True).state_dict())


def test_convert_leaves_the_original_untouched():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    noisynn.convert(model)
    assert type(model[0]) is nn.Linear


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_unrolled_noisy_path_matches_torch_when_noise_adds_nothing(cls):
    """The reference (unrolled) implementation computes the same function as torch's kernel."""
    torch.manual_seed(5)
    module = cls(5, 6, num_layers=2, batch_first=True, bidirectional=True)
    noisy = noisynn.convert(module)
    x = torch.randn(3, 7, 5)
    h0 = torch.randn(4, 3, 6)
    hx = (h0, torch.randn(4, 3, 6)) if cls is nn.LSTM else h0
    expected = as_tensors(module(x, hx))
    with ForcePlainPath():
        got = as_tensors(noisy(x, hx))
    for a, b in zip(expected, got, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_conv_batchnorm_noise_order_in_sequential():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5),
                        nn.BatchNorm1d(5), nn.Linear(5, 2))
    noisy = noisynn.convert(net)
    kinds = [type(m).__name__ for m in noisy]
    assert kinds == ["NoisyConv2d", "NoisyBatchNorm2d", "ReLU", "Flatten", "NoisyLinear", "NoisyBatchNorm1d",
                     "NoisyLinear"]
    assert [m.folded for m in (noisy[0], noisy[4], noisy[6])] == [True, True, False]
    net.eval()
    noisy.eval()
    x = torch.randn(8, 1, 8, 8)
    assert torch.equal(noisy(x), net(x))
    # the noise lands after the BN: additive noise of sigma on the BN output exactly
    with torch.no_grad():
        clean_bn = net[1](net[0](x))
        noisynn.set_noise(noisy, "additive", 0.7)
        assert torch.equal(noisy[0](x), net[0](x))  # the folded conv stays exact: its noise is the BN's
        noisy_bn = noisy[1](noisy[0](x))
    assert abs((noisy_bn - clean_bn).std().item() - 0.7) < 0.1


def test_convert_without_folding_puts_noise_on_the_conv():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    noisy = noisynn.convert(net, fold_batchnorm=False)
    assert [type(m).__name__ for m in noisy] == ["NoisyConv2d", "BatchNorm2d"]


def test_convert_recurses_into_custom_modules_and_sets_noise():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(3, 4, batch_first=True)
            self.head = nn.Sequential(nn.Linear(4, 2))

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    noisy = noisynn.convert(Net(), noisynn.Additive(0.2))
    sites = dict(noisynn.noise_sites(noisy))
    assert set(sites) == {"rnn", "head.0"}
    assert all(site.noise == noisynn.Additive(0.2) for site in sites.values())
    x = torch.randn(2, 5, 3)
    assert not torch.equal(noisy(x), noisy(x))


def test_convert_rejects_projected_lstm():
    with pytest.raises(ValueError, match="proj_size"):
        noisynn.convert(nn.LSTM(3, 4, proj_size=2))


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_noise_changes_output_and_gradients_flow(kind):
    torch.manual_seed(7)
    model = noisynn.build_model("lstm-rows").train()
    noisynn.set_noise(model, kind, 0.5)
    x = torch.rand(4, 28, 28)
    loss = model(x).logsumexp(1).sum()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_noise_is_a_constant_in_the_backward_pass():
    """d(y * z)/d(b) = z: the gradient sees the very noise drawn in the forward pass."""
    layer = noisynn.NoisyLinear(3, 1000)
    x = torch.randn(1, 3)
    g = torch.Generator().manual_seed(9)
    with noisynn.Multiplicative(0.5, generator=g):
        layer(x).sum().backward()
    z = torch.empty(1, 1000).normal_(1.0, 0.5, generator=torch.Generator().manual_seed(9))
    assert torch.allclose(layer.bias.grad, z[0])
    layer.zero_grad()
    with noisynn.Additive(0.5):  # additive noise leaves the gradient of y unchanged
        layer(x).sum().backward()
    assert torch.equal(layer.bias.grad, torch.ones(1000))


def test_wrong_input_shape_is_one_clear_line():
    lstm = noisynn.NoisyLSTM(28, 8, batch_first=True)
    with pytest.raises(noisynn.ModelError,
                       match=r"expects input of shape \(batch, seq, features\) with features = 28.*got \(2, 28, 5\)"):
        lstm(torch.randn(2, 28, 5))
    with pytest.raises(noisynn.ModelError, match="got \\(3,\\)"):
        lstm(torch.randn(3))


def test_repeat_forward_shapes_chunks_and_errors():
    model = noisynn.build_model("rnn-rows").eval()
    x = torch.rand(5, 28, 28)
    out = noisynn.repeat_forward(model, x, 3)
    assert out.shape == (3, 5, 10)
    assert torch.equal(out[0], out[2])  # clean: every copy identical
    assert torch.allclose(out[1], model(x), atol=1e-6)  # batch size changes GEMM blocking only
    noisynn.set_noise(model, "additive", 0.5)
    chunked = noisynn.repeat_forward(model, x, 7, max_batch=10)  # 2 copies per call
    assert chunked.shape == (7, 5, 10)
    assert len({tuple(c.flatten().tolist()) for c in chunked}) == 7  # all copies differ
    with pytest.raises(ValueError, match="repeats"):
        noisynn.repeat_forward(model, x, 0)
