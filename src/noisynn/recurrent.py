"""Noisy recurrent layers: drop-ins for ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN``.

Same constructor arguments, same parameter names (``weight_ih_l{k}``,
``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``, ``_reverse`` for the backward
direction), same inputs and outputs (``batch_first``, unbatched input, ``h_0``/``c_0``),
multi-layer and bidirectional.

Where the noise goes, at every time step and in every layer and direction (paper 1,
fig. 1: one noise per matrix-vector product, the products that share an output summed
first):

* LSTM: each of the four gate pre-activations ``W_i* x_t + U_h* h_{t-1} + b``; the
  element-wise cell update ``c_t = f * c_{t-1} + i * g`` and ``h_t = o * tanh(c_t)``
  get none.
* RNN: the pre-activation ``W x_t + U h_{t-1} + b`` before ``tanh`` (or ``relu``).
* GRU: the reset and update gate pre-activations ``W x_t + U h_{t-1} + b``; the
  candidate's two products are separate in a GRU (``W_n x_t + b_in`` and
  ``U_n h_{t-1} + b_hn``, with the reset gate between them), so each gets its own noise.

With no noise or ``sigma = 0`` the layer calls the very kernel ``torch.nn`` calls, so
the result is bit-identical. With noise, the reference path unrolls time in Python (one
batched input projection for all steps, then one ``addmm`` per step, the noise model's
``apply`` on its result) and autograd differentiates through it, the noise being a
constant. On the CPU in float32, when the noise model describes its noise as Gaussian
(:meth:`~noisynn.noise.NoiseModel.gaussian`), the LSTM takes a fused fast path instead
(:func:`noisynn.kernels.lstm_layer`: the noise drawn inside one fused step kernel, same
distribution); :func:`noisynn.reference` or ``NOISYNN_REFERENCE=1`` forces the reference
path. :func:`noisynn.kernels.lstm_path` makes that choice (and, on CUDA, the opt-in
compiled step of :mod:`noisynn.kernels.compiled`).

``single_bias=True`` keeps one bias vector per gate (``bias_l{k}``) instead of torch's
two, as the papers' networks do (81,674 parameters for the LSTM of paper 1, table I).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import _VF, Tensor, nn

from noisynn import kernels
from noisynn.errors import ModelError
from noisynn.kernels import merged_bias
from noisynn.layers import INTERCEPT, NoiseSite, exact_scope
from noisynn.noise import NoiseModel, PerSite, Product

__all__ = ["NoisyLSTM", "NoisyGRU", "NoisyRNN", "NoisyLSTMCell", "NoisyGRUCell", "NoisyRNNCell"]

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


class _NoisyRNNBase(NoiseSite, nn.Module):
    """Shared machinery of the noisy recurrent layers (parameters, checks, unrolling)."""

    mode = ""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        single_bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0 or num_layers <= 0:
            raise ValueError(
                f"input_size, hidden_size and num_layers must be positive, got "
                f"{input_size}, {hidden_size}, {num_layers}"
            )
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.single_bias = single_bias and bias
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        gate_size = _GATES[self.mode] * hidden_size
        self._weight_names: list[list[str]] = []
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else hidden_size * self.num_directions
            for direction in range(self.num_directions):
                sfx = f"_l{layer}" + ("_reverse" if direction else "")
                names = [f"weight_ih{sfx}", f"weight_hh{sfx}"]
                setattr(self, names[0], nn.Parameter(torch.empty(gate_size, layer_in, **factory)))
                setattr(self, names[1], nn.Parameter(torch.empty(gate_size, hidden_size, **factory)))
                if self.single_bias:
                    names.append(f"bias{sfx}")
                    setattr(self, names[2], nn.Parameter(torch.empty(gate_size, **factory)))
                elif bias:
                    names += [f"bias_ih{sfx}", f"bias_hh{sfx}"]
                    setattr(self, names[2], nn.Parameter(torch.empty(gate_size, **factory)))
                    setattr(self, names[3], nn.Parameter(torch.empty(gate_size, **factory)))
                self._weight_names.append(names)
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def reset_parameters(self) -> None:
        """``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))`` for every parameter, as in torch."""
        bound = 1.0 / self.hidden_size**0.5
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.single_bias:
            s += ", single_bias=True"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.noise is not None:
            s += f", noise={self.noise!r}"
        return s

    # -- weights -------------------------------------------------------------------
    def _cell_weights(self, index: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """``(w_ih, w_hh, b_ih, b_hh)`` of layer/direction ``index`` (biases may be None)."""
        names = self._weight_names[index]
        w_ih, w_hh = getattr(self, names[0]), getattr(self, names[1])
        if len(names) == 2:
            return w_ih, w_hh, None, None
        if len(names) == 3:
            return w_ih, w_hh, getattr(self, names[2]), None
        return w_ih, w_hh, getattr(self, names[2]), getattr(self, names[3])

    def _flat_weights(self) -> list[Tensor]:
        """Weights in the order torch's fused kernels take them (a zero second bias if single)."""
        flat: list[Tensor] = []
        for index in range(len(self._weight_names)):
            w_ih, w_hh, b_ih, b_hh = self._cell_weights(index)
            flat += [w_ih, w_hh]
            if b_ih is not None:
                flat += [b_ih, b_hh if b_hh is not None else torch.zeros_like(b_ih)]
        return flat

    # -- forward -------------------------------------------------------------------
    def _check_input(self, input: Tensor) -> None:
        shape = "(batch, seq, features)" if self.batch_first else "(seq, batch, features)"
        if not isinstance(input, Tensor):
            raise ModelError(f"{type(self).__name__} expects a tensor, got {type(input).__name__}")
        if input.dim() not in (2, 3) or input.size(-1) != self.input_size:
            raise ModelError(
                f"{type(self).__name__} expects input of shape {shape} with features = "
                f"{self.input_size} (or unbatched (seq, {self.input_size})), got {tuple(input.shape)}"
            )
        if not input.is_floating_point():
            raise ModelError(f"{type(self).__name__} expects a floating-point input, got {input.dtype}")

    def _zeros_state(self, input: Tensor, batch: int) -> Tensor:
        return torch.zeros(
            self.num_layers * self.num_directions, batch, self.hidden_size,
            dtype=input.dtype, device=input.device,
        )

    def forward(self, input: Tensor, hx: Tensor | tuple[Tensor, Tensor] | None = None):
        """Run the layer; see ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` for shapes."""
        self._check_input(input)
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
            if hx is not None:
                hx = cast("tuple[Tensor, Tensor]", tuple(h.unsqueeze(1) for h in hx)) if isinstance(hx, tuple) \
                    else hx.unsqueeze(1)
        batch = input.size(batch_dim)
        if hx is None:
            hx = self._zeros_state(input, batch)
            if self.mode == "LSTM":
                hx = (hx, torch.zeros_like(hx))

        model = self.active_noise()
        if model is None:
            output, hidden = self._exact_forward(input, hx)
        elif INTERCEPT.get() is None:
            output, hidden = self._noisy_forward(input, hx, model)
        else:  # inside a converted model's intercepted code: these products are this site's
            with exact_scope():
                output, hidden = self._noisy_forward(input, hx, model)

        if not batched:
            output = output.squeeze(batch_dim)
            hidden = tuple(h.squeeze(1) for h in hidden) if isinstance(hidden, tuple) else hidden.squeeze(1)
        return output, hidden

    def _exact_forward(self, input: Tensor, hx):
        by_mode: dict[str, Callable[..., Any]] = {
            "LSTM": _VF.lstm, "GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}
        kernel = by_mode[self.mode]
        result = kernel(
            input, hx, self._flat_weights(), self.bias, self.num_layers,
            self.dropout, self.training, self.bidirectional, self.batch_first,
        )
        if self.mode == "LSTM":
            return result[0], (result[1], result[2])
        return result[0], result[1]

    def _noisy_forward(self, input: Tensor, hx, model: NoiseModel):
        x = input.transpose(0, 1) if self.batch_first else input  # (T, B, F)
        h0 = hx[0] if self.mode == "LSTM" else hx
        c0 = hx[1] if self.mode == "LSTM" else None
        h_n: list[Tensor] = []
        c_n: list[Tensor] = []
        for layer in range(self.num_layers):
            outs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                seq = x.flip(0) if direction else x
                state = (h0[index], c0[index] if c0 is not None else None)
                weights = self._cell_weights(index)
                if model.computes_products(self.site_name):
                    out, h_last, c_last = self._unroll_products(seq, state, weights, model, index)
                else:
                    out, h_last, c_last = self._unroll(seq, state, weights, model)
                outs.append(out.flip(0) if direction else out)
                h_n.append(h_last)
                if c_last is not None:
                    c_n.append(c_last)
            x = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        output = x.transpose(0, 1) if self.batch_first else x
        h = torch.stack(h_n)
        hidden = (h, torch.stack(c_n)) if self.mode == "LSTM" else h
        return output, hidden

    def _unroll(self, seq: Tensor, state, weights, model: NoiseModel) -> tuple[Tensor, Tensor, Tensor | None]:
        raise NotImplementedError

    def _product_site(self, index: int) -> str:
        """The name a product-computing model sees for layer/direction ``index`` (its chip cache key)."""
        return self.site_name if len(self._weight_names) == 1 else f"{self.site_name}[{index}]"

    def _unroll_products(self, seq: Tensor, state, weights, model: NoiseModel, index: int):
        """Each step's gate product as one crossbar ``[W_ih W_hh] [x_t; h] + b`` computed by ``model.product``.

        The model is resolved at the layer's own name (a :class:`~noisynn.noise.PerSite` rule
        for ``"rnn"`` covers every product of the layer); ``site`` (with ``[index]`` for a
        layer/direction of a deep or bidirectional layer, ``.in`` / ``.hn`` for a GRU's
        candidate products) names each product's weights (a chip's cache key).
        """
        model = _resolve(model, self.site_name)
        w_ih, w_hh, b_ih, b_hh = weights
        site = self._product_site(index)
        training = self.training
        h, c = state
        outs = []
        if self.mode == "GRU":
            hidden = self.hidden_size
            w_rz = torch.cat([w_ih[: 2 * hidden], w_hh[: 2 * hidden]], 1)
            b_rz = merged_bias(None if b_ih is None else b_ih[: 2 * hidden],
                               None if b_hh is None else b_hh[: 2 * hidden])
            for x_t in seq.unbind(0):
                rz = model.product(Product(torch.cat([x_t, h], 1), w_rz, b_rz, F.linear, -1, True, training,
                                           (w_ih, w_hh)), site)
                gi_n = model.product(Product(x_t, w_ih[2 * hidden:], None if b_ih is None else b_ih[2 * hidden:],
                                             F.linear, -1, True, training, w_ih), f"{site}.in")
                gh_n = model.product(Product(h, w_hh[2 * hidden:], None if b_hh is None else b_hh[2 * hidden:],
                                             F.linear, -1, True, training, w_hh), f"{site}.hn")
                r, z = torch.sigmoid(rz).chunk(2, 1)
                h = torch.lerp(torch.tanh(gi_n + r * gh_n), h, z)
                outs.append(h)
            return torch.stack(outs), h, None
        w = torch.cat([w_ih, w_hh], 1)
        bias = merged_bias(b_ih, b_hh)
        if not training and not (torch.is_grad_enabled() and any(
                t is not None and t.requires_grad for t in (seq, h, c, w_ih, w_hh, b_ih, b_hh))):
            from noisynn import hardware

            template = Product(seq.new_empty(0, w.size(1)), w, None, F.linear, -1, True, False, (w_ih, w_hh))
            bound = hardware.bind(model, template, site)
            if bound is not None and kernels.fast_path(seq, h, c, generator=model.generator):
                return self._unroll_bound(seq, h, c, bound, bias, model.generator)
        for x_t in seq.unbind(0):
            pre = model.product(Product(torch.cat([x_t, h], 1), w, bias, F.linear, -1, True, training,
                                        (w_ih, w_hh)), site)
            if self.mode == "LSTM":
                i, f, g, o = pre.chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:
                h = torch.tanh(pre) if self.mode == "RNN_TANH" else torch.relu(pre)
            outs.append(h)
        return torch.stack(outs), h, (c if self.mode == "LSTM" else None)


    def _unroll_bound(self, seq: Tensor, h0: Tensor, c0: Tensor | None, bound, bias: Tensor | None,
                      generator: torch.Generator | None):
        """Evaluation on a crossbar: each step's gate product by ``bound``, then the cell in one fused pass.

        The rows run in blocks of :data:`BOUND_BLOCK` through all steps (each block's buffers
        stay in the caches), shared out among torch's threads, each running whole blocks
        single-threaded; block ``k``'s per-read noise at step ``t`` comes from seed words drawn
        beforehand, so the result depends neither on the thread count nor on the scheduling.
        The cell is :mod:`noisynn.kernels`' noise-free LSTM / RNN step (bias, gate activations,
        state update, and the next step's ``[x_{t+1}, h_t]`` written in place).
        """
        T, B, F_in = seq.shape
        H = self.hidden_size
        x = seq if seq.stride(2) == 1 else seq.contiguous()
        lstm = self.mode == "LSTM"
        relu = self.mode == "RNN_RELU"
        out = torch.empty(T, B, H, dtype=x.dtype)
        c_n = torch.empty(B, H, dtype=x.dtype) if lstm else None
        starts = list(range(0, B, BOUND_BLOCK))
        words = torch.randint(0, 2**32, (len(starts), T, bound.n_seeds, 3), dtype=torch.int64, generator=generator)
        bias = None if bias is None else bias.detach().contiguous()

        def run(blocks) -> None:
            for k in blocks:
                b0 = starts[k]
                n = min(BOUND_BLOCK, B - b0)
                xh = torch.empty(n, F_in + H, dtype=x.dtype)
                xh[:, :F_in] = x[0, b0:b0 + n]
                xh[:, F_in:] = h0[b0:b0 + n]
                c = None
                if lstm:
                    assert c0 is not None  # an LSTM has its cell state
                    c = c0[b0:b0 + n].contiguous().clone()
                for t in range(T):
                    g = bound(xh, list(words[k, t])).contiguous()
                    last = t == T - 1
                    h_out = out[t, b0:b0 + n]
                    xh_next = None if last else xh  # the kernel writes [x_{t+1}, h_t] into it
                    x_next = None if last else x[t + 1, b0:b0 + n]
                    if c is not None:  # the LSTM
                        kernels.lstm_cell_(g, bias, c, h_out, xh_next, x_next)
                    else:
                        kernels.rnn_cell_(g, bias, relu, h_out, xh_next, x_next)
                if c is not None and c_n is not None:  # the LSTM
                    c_n[b0:b0 + n] = c

        _run_blocks(run, len(starts))
        return out, out[T - 1].clone(), c_n


#: Rows of the batch a crossbar evaluation runs through all its steps at a time (fixed: the
#: noise of a row does not depend on the number of threads).
BOUND_BLOCK = 256


def _run_blocks(run, n_blocks: int) -> None:
    """``run(blocks)`` over all blocks: on this thread (multi-threaded kernels) when there is one
    block or one thread, else shared out among Python threads, torch single-threaded meanwhile.

    (The crossbar's product is Python code, so the blocks cannot be shared out inside one
    operator as the fused layers of :mod:`noisynn.kernels` share theirs.)"""
    workers = min(torch.get_num_threads(), n_blocks)
    if workers <= 1:
        run(range(n_blocks))
        return
    from concurrent.futures import ThreadPoolExecutor

    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def part(i: int) -> None:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            run(range(i, n_blocks, workers))

    with _torch_threads(1), ThreadPoolExecutor(workers) as pool:
        for job in [pool.submit(part, i) for i in range(workers)]:
            job.result()


class _torch_threads:
    """Temporarily set torch's intra-op thread count."""

    def __init__(self, n: int) -> None:
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)


def _resolve(model: NoiseModel, site: str) -> NoiseModel:
    """The model that computes a layer's products (a :class:`~noisynn.noise.PerSite` resolved at the layer)."""
    while isinstance(model, PerSite):
        model = model.resolve(site)
    return model


class NoisyLSTM(_NoisyRNNBase):
    r"""LSTM with noise on each gate pre-activation at every time step.

    .. math::
        \begin{array}{ll}
        (i_t, f_t, g_t, o_t) = \mathcal{N}\big(W_{i} x_t + W_{h} h_{t-1} + b\big) \\
        c_t = \sigma(f_t) \odot c_{t-1} + \sigma(i_t) \odot \tanh(g_t) \\
        h_t = \sigma(o_t) \odot \tanh(c_t)
        \end{array}

    where :math:`\mathcal{N}` is the active noise model (identity when clean).

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional:
            as ``torch.nn.LSTM`` (``proj_size`` is not supported).
        single_bias: one bias per gate instead of torch's ``b_ih + b_hh``.

    Inputs: ``input, (h_0, c_0)`` as ``torch.nn.LSTM``.
    Outputs: ``output, (h_n, c_n)`` as ``torch.nn.LSTM``.

    Example::

        >>> lstm = NoisyLSTM(28, 128, batch_first=True)
        >>> with noisynn.noise_model("additive", 0.5):
        ...     out, (h, c) = lstm(torch.randn(32, 28, 28))
    """

    mode = "LSTM"

    def _unroll(self, seq, state, weights, model):
        spec = model.gaussian(self.site_name)
        path = "reference" if spec is None else kernels.lstm_path(seq, spec.generator)
        if path == "fused":
            return kernels.lstm_layer(seq, *state, *weights, *spec)
        if path == "compiled":
            from noisynn.kernels import compiled

            w_ih, w_hh, b_ih, b_hh = weights
            return compiled.lstm_layer(seq, *state, w_ih, w_hh, merged_bias(b_ih, b_hh), spec.kind, spec.sigma)
        return self._unroll_reference(seq, state, weights, model)

    def _unroll_reference(self, seq, state, weights, model):
        """The plain definition: ``model.apply`` on the gate pre-activations at every step."""
        w_ih, w_hh, b_ih, b_hh = weights
        xproj = F.linear(seq, w_ih, merged_bias(b_ih, b_hh))  # all time steps in one GEMM
        h, c = state
        w_hh_t = w_hh.t()
        outs = []
        for x_t in xproj.unbind(0):  # unbind/chunk: their backward is one op, not one per slice
            gates = model.apply(torch.addmm(x_t, h, w_hh_t), self.site_name)
            i, f, g, o = gates.chunk(4, 1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c = f * c + i * g
            h = o * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs), h, c


class NoisyRNN(_NoisyRNNBase):
    r"""Elman RNN with noise on the pre-activation at every step.

    :math:`h_t = \tanh(\mathcal{N}(W x_t + U h_{t-1} + b))` (``nonlinearity="relu"``
    for ReLU). Arguments, inputs and outputs as ``torch.nn.RNN``, plus ``single_bias``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, **kwargs) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, **kwargs)

    def _unroll(self, seq, state, weights, model):
        w_ih, w_hh, b_ih, b_hh = weights
        spec = model.gaussian(self.site_name)
        # the fused RNN has no backward: only where autograd needs nothing
        if spec is not None and kernels.fast_path(seq, state[0], *weights, generator=spec.generator,
                                                  differentiable=False):
            return (*kernels.rnn_layer(seq, state[0], w_ih, w_hh, b_ih, b_hh, self.nonlinearity, *spec), None)
        return self._unroll_reference(seq, state, weights, model)

    def _unroll_reference(self, seq, state, weights, model):
        """The plain definition: ``model.apply`` on the pre-activation at every step."""
        w_ih, w_hh, b_ih, b_hh = weights
        act = torch.tanh if self.mode == "RNN_TANH" else torch.relu
        xproj = F.linear(seq, w_ih, merged_bias(b_ih, b_hh))
        h = state[0]
        w_hh_t = w_hh.t()
        outs = []
        for x_t in xproj.unbind(0):
            h = act(model.apply(torch.addmm(x_t, h, w_hh_t), self.site_name))
            outs.append(h)
        return torch.stack(outs), h, None


class NoisyGRU(_NoisyRNNBase):
    r"""GRU with noise on every matrix-vector product at every step.

    .. math::
        \begin{array}{ll}
        (r_t, z_t) = \sigma\big(\mathcal{N}(W_{rz} x_t + U_{rz} h_{t-1} + b_{rz})\big) \\
        n_t = \tanh\big(\mathcal{N}(W_n x_t + b_{in}) + r_t \odot \mathcal{N}(U_n h_{t-1} + b_{hn})\big) \\
        h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}
        \end{array}

    Arguments, inputs and outputs as ``torch.nn.GRU``, plus ``single_bias`` (then
    ``b_hn = 0``).
    """

    mode = "GRU"

    def _unroll(self, seq, state, weights, model):
        w_ih, w_hh, b_ih, b_hh = weights
        hidden = self.hidden_size
        xproj = F.linear(seq, w_ih, b_ih)
        h = state[0]
        w_hh_t = w_hh.t()
        site = self.site_name
        outs = []
        for gi in xproj.unbind(0):
            gh = torch.addmm(b_hh, h, w_hh_t) if b_hh is not None else h @ w_hh_t
            gi_rz, gi_n = gi.split([2 * hidden, hidden], 1)
            gh_rz, gh_n = gh.split([2 * hidden, hidden], 1)
            r, z = torch.sigmoid(model.apply(gi_rz + gh_rz, site)).chunk(2, 1)
            n = torch.tanh(model.apply(gi_n, site) + r * model.apply(gh_n, site))
            h = torch.lerp(n, h, z)  # (1 - z) * n + z * h
            outs.append(h)
        return torch.stack(outs), h, None


# -- cells: one time step, the user's own loop ------------------------------------------
class _NoisyCell(NoiseSite):
    """Shared part of the noisy cells: exact ``torch.nn`` forward when clean, else the noisy step."""

    def forward(self, input: Tensor, hx=None):
        model = self.active_noise()
        if model is None:
            return super().forward(input, hx)  # type: ignore[misc]
        if input.dim() not in (1, 2) or input.size(-1) != self.input_size:  # type: ignore[attr-defined]
            raise ModelError(
                f"{type(self).__name__} expects input of shape (batch, {self.input_size}) or "  # type: ignore[attr-defined]
                f"({self.input_size},), got {tuple(input.shape)}"  # type: ignore[attr-defined]
            )
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
            hx = None if hx is None else (tuple(h.unsqueeze(0) for h in hx) if isinstance(hx, tuple)
                                          else hx.unsqueeze(0))
        if hx is None:
            zeros = input.new_zeros(input.size(0), self.hidden_size)  # type: ignore[attr-defined]
            hx = (zeros, zeros) if isinstance(self, nn.LSTMCell) else zeros
        step = self._product_step if model.computes_products(self.site_name) else self._step
        if INTERCEPT.get() is None:
            out = step(input, hx, model)
        else:
            with exact_scope():
                out = step(input, hx, model)
        if not batched:
            out = tuple(h.squeeze(0) for h in out) if isinstance(out, tuple) else out.squeeze(0)
        return out

    def _step(self, x: Tensor, hx, model: NoiseModel):
        raise NotImplementedError

    def _product_step(self, x: Tensor, hx, model: NoiseModel):
        """One step with the gate product ``[W_ih W_hh] [x; h] + b`` computed by ``model.product``."""
        model = _resolve(model, self.site_name)
        h = hx[0] if isinstance(hx, tuple) else hx
        w_ih, w_hh, b_ih, b_hh = self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh  # type: ignore
        site, n = self.site_name, self.hidden_size  # type: ignore[attr-defined]
        if isinstance(self, nn.GRUCell):
            b_rz = merged_bias(None if b_ih is None else b_ih[: 2 * n], None if b_hh is None else b_hh[: 2 * n])
            rz = model.product(Product(torch.cat([x, h], 1), torch.cat([w_ih[: 2 * n], w_hh[: 2 * n]], 1), b_rz,
                                       F.linear, -1, True, self.training, (w_ih, w_hh)), site)
            gi_n = model.product(Product(x, w_ih[2 * n:], None if b_ih is None else b_ih[2 * n:], F.linear, -1, True,
                                         self.training, w_ih), f"{site}.in")
            gh_n = model.product(Product(h, w_hh[2 * n:], None if b_hh is None else b_hh[2 * n:], F.linear, -1, True,
                                         self.training, w_hh), f"{site}.hn")
            r, z = torch.sigmoid(rz).chunk(2, 1)
            return torch.lerp(torch.tanh(gi_n + r * gh_n), h, z)
        bias = merged_bias(b_ih, b_hh)
        pre = model.product(Product(torch.cat([x, h], 1), torch.cat([w_ih, w_hh], 1), bias, F.linear, -1, True,
                                    self.training, (w_ih, w_hh)), site)  # type: ignore[attr-defined]
        if isinstance(self, nn.LSTMCell):
            i, f, g, o = pre.chunk(4, 1)
            c = torch.sigmoid(f) * hx[1] + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        return torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)  # type: ignore[attr-defined]


class NoisyLSTMCell(_NoisyCell, nn.LSTMCell):
    """``nn.LSTMCell`` with noise on each gate pre-activation ``W x + U h + b`` (as :class:`NoisyLSTM`)."""

    def _step(self, x, hx, model):
        h, c = hx
        gates = model.apply(F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh),
                            self.site_name)
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class NoisyRNNCell(_NoisyCell, nn.RNNCell):
    """``nn.RNNCell`` with noise on the pre-activation before ``tanh``/``relu`` (as :class:`NoisyRNN`)."""

    def _step(self, x, hx, model):
        pre = model.apply(F.linear(x, self.weight_ih, self.bias_ih) + F.linear(hx, self.weight_hh, self.bias_hh),
                          self.site_name)
        return torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)


class NoisyGRUCell(_NoisyCell, nn.GRUCell):
    """``nn.GRUCell`` with noise on every product, placed as in :class:`NoisyGRU`."""

    def _step(self, x, hx, model):
        site = self.site_name
        gi = F.linear(x, self.weight_ih, self.bias_ih)
        gh = F.linear(hx, self.weight_hh, self.bias_hh)
        gi_rz, gi_n = gi.split([2 * self.hidden_size, self.hidden_size], 1)
        gh_rz, gh_n = gh.split([2 * self.hidden_size, self.hidden_size], 1)
        r, z = torch.sigmoid(model.apply(gi_rz + gh_rz, site)).chunk(2, 1)
        n = torch.tanh(model.apply(gi_n, site) + r * model.apply(gh_n, site))
        return torch.lerp(n, hx, z)
