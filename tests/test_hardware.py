"""Hardware noise models: each formula against values computed here, chips and reads, tiles, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import noisynn
from noisynn.hardware import PCM, Crossbar
from noisynn.noise import Product, from_config

QUIET = dict(prog_noise_scale=0.0, read_noise_scale=0.0, drift_scale=0.0, compensation=False)


def _linear_product(w, x, training=False, bias=None):
    return Product(x, w, bias, F.linear, -1, True, training, w)


@pytest.mark.parametrize("g_max", [25.0, 50.0])
def test_programming_noise_std_is_the_nandakumar_polynomial(g_max):
    pcm = PCM(g_max=g_max)
    for g_r in (0.0, 0.1, 0.5, 1.0):
        expected = (0.26348 + 1.9650 * g_r - 1.1731 * g_r**2) * g_max / 25.0
        got = pcm.sigma_prog(torch.tensor(g_r * g_max)).item()
        assert got == pytest.approx(expected, rel=1e-6)


def test_drift_exponent_parameters_are_clamped_log_linear():
    pcm = PCM()
    for g_r in (1.0, 0.2, 0.01, 1e-4):
        mu = -0.0155 * math.log(g_r) + 0.0244
        sigma = -0.0125 * math.log(g_r) - 0.0059
        got_mu, got_sigma = pcm.drift_nu_params(torch.tensor(g_r * 25.0))
        assert got_mu.item() == pytest.approx(min(max(mu, 0.049), 0.1), rel=1e-5)
        assert got_sigma.item() == pytest.approx(min(max(sigma, 0.008), 0.045), rel=1e-5)


def test_drift_factor_and_read_noise_at_several_times():
    pcm = PCM()
    nu = torch.tensor(0.06)
    for t in (1.0, 3600.0, 86400.0, 3.15e7):
        assert pcm.drift_factor(nu, t).item() == pytest.approx(((t + 20) / 20) ** -0.06, rel=1e-6)
        q_s = min(0.0088 / max(0.5**0.65, 1e-3), 0.2)
        expected = q_s * math.sqrt(math.log((t + 20 + 250e-9) / (2 * 250e-9)))
        assert pcm.read_noise_std(torch.tensor(12.5), t).item() == pytest.approx(expected, rel=1e-5)
    assert pcm.drift_factor(nu, 0.0).item() == 1.0


def test_programmed_weights_have_the_device_pair_statistics():
    """w = max|W| everywhere: g+ ~ N(25, s(25)^2), g- = max(0, N(0, s(0)^2)); W_eff = (g+ - g-) / 25."""
    w = torch.ones(400, 500)
    pcm = PCM(read_noise_scale=0.0, drift_scale=0.0, compensation=False)
    w_eff, _ = pcm.weights(_linear_product(w, torch.ones(1, 500)), "site")
    g = w_eff * 25.0
    s_plus, s_minus = 0.26348 + 1.9650 - 1.1731, 0.26348
    mean = 25.0 - s_minus / math.sqrt(2 * math.pi)
    var = s_plus**2 + s_minus**2 * (0.5 - 1 / (2 * math.pi))
    n = g.numel()
    assert abs(g.mean().item() - mean) < 5 * math.sqrt(var / n)
    assert g.var().item() == pytest.approx(var, rel=0.02)
    zero = pcm.weights(_linear_product(torch.zeros(3, 4).fill_(0), torch.ones(1, 4)), "zero")[0]
    assert torch.equal(zero, torch.zeros(3, 4))  # an all-zero matrix programs nothing... (max|W| = 0)


def test_the_same_chip_gives_the_same_weights_and_other_chips_other_weights():
    torch.manual_seed(0)
    w = torch.randn(64, 32)
    p = _linear_product(w, torch.ones(1, 32))
    a1, _ = PCM(chip=0, t=3600).weights(p, "fc")
    a2, _ = PCM(chip=0, t=3600).weights(p, "fc")  # another object, another process: the same chip
    b, _ = PCM(chip=1, t=3600).weights(p, "fc")
    other_site, _ = PCM(chip=0, t=3600).weights(p, "fc2")
    assert torch.equal(a1, a2)
    assert not torch.equal(a1, b) and not torch.equal(a1, other_site)
    c0, c1 = (PCM(chip=c, drift_scale=0.0).weights(p, "fc")[0] for c in (0, 1))  # no drift common to both
    corr = torch.corrcoef(torch.stack([(c0 - w).flatten(), (c1 - w).flatten()]))[0, 1]
    assert abs(corr.item()) < 0.1  # chips are independent draws


def test_reads_of_one_chip_differ_only_by_per_read_noise():
    torch.manual_seed(1)
    layer = noisynn.NoisyLinear(32, 16).eval()
    x = torch.randn(8, 32)
    with torch.no_grad():
        quiet_chip = PCM(chip=3, t=86400)
        assert torch.equal(layer_out(layer, quiet_chip, x), layer_out(layer, quiet_chip, x))
        noisy_reads = PCM(chip=3, t=86400, out_noise=0.05)
        assert not torch.equal(layer_out(layer, noisy_reads, x), layer_out(layer, noisy_reads, x))


def layer_out(layer, model, x):
    with model:
        return layer(x)


def test_drift_shrinks_weights_and_global_compensation_restores_their_scale():
    torch.manual_seed(2)
    w = torch.randn(128, 128)
    p = _linear_product(w, torch.ones(1, 128))
    fresh, _ = PCM(t=0.0, compensation=False, read_noise_scale=0.0).weights(p, "s")
    day, _ = PCM(t=86400.0, compensation=False, read_noise_scale=0.0).weights(p, "s")
    ratio = (day.abs().mean() / fresh.abs().mean()).item()
    assert 4321**-0.1 < ratio < 4321**-0.049  # nu in [0.049, 0.1] for most devices
    comp, alpha = PCM(t=86400.0, compensation=True, read_noise_scale=0.0).weights(p, "s")
    assert (alpha * comp).abs().mean().item() == pytest.approx(fresh.abs().mean().item(), rel=1e-5)


def test_dac_and_adc_put_values_on_their_grids():
    torch.manual_seed(3)
    x = torch.randn(16, 24)
    w = torch.randn(10, 24)
    xb = Crossbar(inp_bits=4)
    captured = {}

    def op(xn, wn, b):
        captured["x"] = xn
        return F.linear(xn, wn, b)

    y = xb.product(Product(x, w, None, op, -1, True, False, w))
    levels = captured["x"]  # the DAC's levels: 4 bits, 7 a side, inputs scaled by max|x| per row
    assert torch.equal(levels, levels.round()) and levels.abs().max() == 7
    assert torch.allclose(levels / 7 * x.abs().amax(1, keepdim=True), x, atol=x.abs().max().item() / 14 + 1e-6)
    adc = Crossbar(out_bits=5, out_bound=2.0)
    y = adc.product(_linear_product(w, x))
    wmax = w.abs().max()
    normalised = y / (x.abs().amax(1, keepdim=True) * wmax)  # back to the ADC's units
    steps = normalised / (2.0 / 15)
    assert torch.allclose(steps, steps.round(), atol=1e-4) and normalised.abs().max() <= 2.0 + 1e-6


def test_quiet_crossbar_is_the_exact_product():
    torch.manual_seed(4)
    conv = noisynn.NoisyConv2d(3, 5, 3, bias=True).eval()
    lstm = noisynn.NoisyLSTM(6, 8, batch_first=True).eval()
    x, seq = torch.randn(2, 3, 9, 9), torch.randn(4, 7, 6)
    with torch.no_grad():
        with noisynn.clean():
            ref_conv, ref_lstm = conv(x), lstm(seq)[0]
        with PCM(**QUIET):
            assert torch.allclose(conv(x), ref_conv, atol=1e-5)
            assert torch.allclose(lstm(seq)[0], ref_lstm, atol=1e-5)
        with Crossbar(max_input_size=10):  # tiles alone change nothing but rounding
            assert torch.allclose(conv(x), ref_conv, atol=1e-5)


def test_each_tile_has_its_own_output_noise():
    """Per tile: noise 0.05 * max|x_tile| * max|W| in real units, independent; the sum's variance adds up."""
    torch.manual_seed(5)
    w, x = torch.randn(64, 256), torch.randn(2000, 256)
    ref = F.linear(x, w)
    for tiles in (1, 4):
        y = Crossbar(out_noise=0.05, max_input_size=256 // tiles).product(_linear_product(w, x))
        amax = torch.stack([t.abs().amax(1) for t in x.chunk(tiles, 1)], 1)  # (2000, tiles)
        expected = ((0.05 * w.abs().max()) ** 2 * (amax**2).sum(1, keepdim=True))
        assert ((y - ref) ** 2 / expected).mean().item() == pytest.approx(1.0, rel=0.03), tiles


def test_weight_read_noise_and_relative_output_noise_have_their_variances():
    torch.manual_seed(6)
    w, x = torch.randn(32, 48), torch.randn(4000, 48)
    wn, xn = w / w.abs().max(), x / x.abs().amax(1, keepdim=True)
    ref = F.linear(x, w)
    y = Crossbar(weight_read_noise=0.1).product(_linear_product(w, x))
    z = (y - ref) / (x.abs().amax(1, keepdim=True) * w.abs().max())
    expected_var = 0.01 * F.linear(xn**2, wn.abs())
    assert (z**2 / expected_var).mean().item() == pytest.approx(1.0, rel=0.05)
    rel = Crossbar(relative_out_noise=0.02, noise_management=False).product(_linear_product(w, x))
    zr = (rel - ref) / (0.02 * x.abs().amax(1, keepdim=True) * w.abs().max())
    assert zr.std().item() == pytest.approx(1.0, rel=0.03) and abs(zr.mean().item()) < 0.02


def test_training_redraws_weights_and_gradients_reach_them():
    torch.manual_seed(7)
    model = nn.Sequential(noisynn.NoisyLinear(10, 16), nn.ReLU(), noisynn.NoisyLinear(16, 3))
    noisynn.set_noise(model, PCM(inp_bits=8, out_bits=8, out_noise=0.02))
    x, y = torch.randn(64, 10), torch.randint(0, 3, (64,))
    a, b = model(x), model(x)
    assert not torch.equal(a, b)  # a new draw per call in training
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])


def test_papers_networks_run_on_a_pcm_chip_and_drift_hurts_without_compensation():
    torch.manual_seed(8)
    model = noisynn.build_model("cnn6").eval()
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        with noisynn.clean():
            clean = model(x)
        with PCM(t=0.0, **QUIET):
            quiet = model(x)
        with PCM(t=3.15e7, compensation=False, read_noise_scale=0.0, prog_noise_scale=0.0):
            year = model(x)
    assert torch.allclose(quiet, clean, atol=1e-4)  # the folded convs are the analog products
    assert not torch.allclose(year, clean, atol=1e-2)
    lstm = noisynn.build_model("lstm-rows").eval()
    seq = torch.rand(4, 28, 28)
    with torch.no_grad():
        with noisynn.clean():
            clean_logits = lstm(seq)
        with PCM(t=3600.0, inp_bits=8, out_bits=8):
            out = lstm(seq)
    assert out.shape == (4, 10)
    # the chip computes the same network (its logits follow the clean ones: r ~ 0.995, NaN fails) with its own
    # errors (programming, drift, read noise: ~0.01 off, where the 8-bit rounding alone is ~0.0015 off)
    assert torch.corrcoef(torch.stack([out.flatten(), clean_logits.flatten()]))[0, 1] > 0.9
    assert not torch.allclose(out, clean_logits, atol=5e-3)


def test_configs_round_trip_and_bad_parameters_are_refused():
    pcm = PCM(chip=2, t=60.0, out_noise=0.04, max_input_size=256)
    assert from_config(pcm.config()) == pcm
    assert pcm.with_params(chip=5).chip == 5 and pcm.with_params(t=3600.0).t == 3600.0
    for bad in (dict(t=-1), dict(chip=1.5), dict(out_bits=1), dict(g_max=0), dict(prog_c0=float("nan"))):
        with pytest.raises(ValueError):
            PCM(**bad)
    with pytest.raises(ValueError, match="no parameter"):
        pcm.with_params(sigma=0.1)


def test_layers_that_cannot_hand_their_product_say_so():
    layer = noisynn.NoisyBilinear(3, 3, 2)
    with pytest.raises(noisynn.ModelError, match="cannot hand its product"), PCM():
        layer(torch.randn(2, 3), torch.randn(2, 3))


# -- evaluation's fast paths: recurrent steps bound to a chip, prepared weights, caches ---------------------------
from noisynn.noise import PerSite, reference  # noqa: E402

PLAIN = dict(inp_bits=0, out_bits=0)  # no rounding: the fast path and the definition agree to float precision


@pytest.mark.slow
def test_recurrent_evaluation_on_a_chip_matches_the_per_step_definition():
    """The bound path (weights prepared once, the fused cell) computes what model.product does step by step."""
    torch.manual_seed(9)
    for layer in (noisynn.NoisyLSTM(12, 16, batch_first=True, num_layers=2, bidirectional=True),
                  noisynn.NoisyRNN(12, 16, batch_first=True), noisynn.NoisyRNN(12, 16, nonlinearity="relu")):
        layer.eval()
        seq = torch.randn(300, 9, 12)  # 300 rows: two row blocks
        for chip in (PCM(t=86400.0, **PLAIN), PCM(t=3600.0, compensation=False, max_input_size=10, **PLAIN),
                     Crossbar(**PLAIN)):
            with torch.no_grad(), chip:
                fast = layer(seq)[0]
                with reference():
                    slow = layer(seq)[0]
            assert torch.allclose(fast, slow, atol=1e-5), (type(layer).__name__, chip)
    lstm = noisynn.NoisyLSTM(12, 16, batch_first=True).eval()
    with torch.no_grad(), PCM(t=86400.0, inp_bits=8, out_bits=8):  # rounding: a level may flip, rarely
        fast = lstm(seq)[0]
        with reference():
            slow = lstm(seq)[0]
    assert (fast - slow).abs().mean() < 1e-3 * slow.abs().mean()


def test_per_read_noise_of_the_bound_recurrent_path_has_its_variance():
    """relu RNN, one step, a large bias: h = the product itself; per-read std = out_noise * max|x| * max|W|."""
    torch.manual_seed(10)
    rnn = noisynn.NoisyRNN(20, 30, nonlinearity="relu", batch_first=True).eval()
    with torch.no_grad():
        rnn.bias_ih_l0.fill_(50.0)
    x = torch.randn(1, 1, 20).expand(4000, 1, 20).contiguous()
    wmax = torch.cat([rnn.weight_ih_l0, rnn.weight_hh_l0], 1).abs().max()
    expected = 0.05 * x[0].abs().max() * wmax
    for ref in (False, True):
        with torch.no_grad(), Crossbar(out_noise=0.05), reference(ref):
            h = rnn(x)[0][:, 0]  # (4000, 30): 4000 reads of the same input
        clean = F.linear(x[0, 0], rnn.weight_ih_l0, rnn.bias_ih_l0 + rnn.bias_hh_l0)
        assert torch.allclose(h.mean(0), clean, atol=5 * expected.item() / math.sqrt(4000) + 1e-6)
        assert (h.std(0) / expected).mean().item() == pytest.approx(1.0, rel=0.03), ref


def test_bound_recurrent_reads_are_reproducible_and_do_not_depend_on_threads():
    torch.manual_seed(11)
    lstm = noisynn.NoisyLSTM(10, 24, batch_first=True).eval()
    seq = torch.randn(600, 6, 10)
    outs = []
    threads = torch.get_num_threads()
    try:
        for n in (threads, 1, threads):
            torch.set_num_threads(n)
            chip = PCM(t=60.0, out_noise=0.04, inp_bits=8, out_bits=8, generator=torch.Generator().manual_seed(3))
            with torch.no_grad(), chip:
                outs.append(lstm(seq)[0])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outs[0], outs[2])
    assert (outs[0] - outs[1]).abs().mean() < 1e-4  # same noise; the GEMMs may differ in their last bits
    with torch.no_grad(), PCM(t=60.0, out_noise=0.04):
        a, b = lstm(seq)[0], lstm(seq)[0]
    assert not torch.equal(a, b)  # every read draws its own noise


def test_a_per_site_rule_for_a_recurrent_layer_covers_all_its_products():
    torch.manual_seed(12)
    for cls in (noisynn.NoisyGRU, noisynn.NoisyLSTM):
        net = nn.Sequential()
        net.add_module("rnn", cls(6, 8, num_layers=2, batch_first=True))
        net.eval()
        list(noisynn.noise_sites(net))  # names the site "rnn"
        seq = torch.randn(5, 4, 6)
        chip = PCM(t=3.15e7, compensation=False, read_noise_scale=0.0)
        with torch.no_grad():
            with chip:
                direct = net(seq)[0]
            with PerSite({"rnn": chip}):
                routed = net(seq)[0]
            with noisynn.clean():
                clean = net(seq)[0]
        assert torch.allclose(direct, routed) and not torch.allclose(direct, clean, atol=1e-3), cls.__name__


def test_a_chip_reprograms_when_any_weight_of_a_product_changes():
    """The gate product's cache key is both matrices: an in-place change of W_hh alone is seen."""
    torch.manual_seed(13)
    lstm = noisynn.NoisyLSTM(5, 7, batch_first=True).eval()
    seq = torch.randn(3, 4, 5)
    chip = PCM(**QUIET)
    with torch.no_grad():
        with chip:
            before = lstm(seq)[0]
        lstm.weight_hh_l0.mul_(0.5)
        with chip:
            after = lstm(seq)[0]
        with noisynn.clean():
            clean = lstm(seq)[0]
    assert torch.allclose(after, clean, atol=1e-5) and not torch.allclose(before, after, atol=1e-3)


def test_a_pickled_chip_is_the_same_chip():
    import pickle

    torch.manual_seed(14)
    layer = noisynn.NoisyLinear(16, 8).eval()
    x = torch.randn(4, 16)
    chip = PCM(chip=4, t=86400.0)
    with torch.no_grad():
        first = layer_out(layer, chip, x)
        copy = pickle.loads(pickle.dumps(chip))
        assert torch.equal(layer_out(layer, copy, x), first)


def test_bound_recurrent_path_edge_cases():
    """No bias, an empty batch, an unbatched sequence: as the per-step definition."""
    torch.manual_seed(15)
    lstm = noisynn.NoisyLSTM(5, 7, bias=False, batch_first=True).eval()
    chip = PCM(t=600.0, **PLAIN)
    seq = torch.randn(3, 4, 5)
    with torch.no_grad(), chip:
        fast = lstm(seq)[0]
        with reference():
            slow = lstm(seq)[0]
        assert torch.allclose(fast, slow, atol=1e-5)
        out, (h, c) = lstm(torch.randn(0, 4, 5))
        assert out.shape == (0, 4, 7) and h.shape == (1, 0, 7)
        assert torch.allclose(lstm(seq[0])[0], fast[0], atol=1e-5)
