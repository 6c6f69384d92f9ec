"""``rnnkit.RNN``, ``rnnkit.GRU``, ``rnnkit.LSTM``: drop-in replacements for torch.nn's.

They are ``torch.nn.RNNBase`` subclasses, as torch.nn's three are, and run torch.nn's own
``forward`` on the fused path: same constructor, parameter names
(``weight_ih_l0``, ``weight_hh_l1_reverse``, ``weight_hr_l0``, ...), ``state_dict``s in both
directions, forward signature and outputs (tensors, ``PackedSequence``s, unbatched input). They
add:

* ``lengths=``: padded input without sorting; outputs at padded steps are zero and final states
  are those at each sequence's own end (the reverse direction starts at its own last element);
* ``ValueError``/``TypeError`` that name the argument and shapes, before any kernel runs;
* ``backend=``: ``"auto"`` takes the fastest path that can run the layer; ``"fused"`` torch's
  vendor kernels (oneDNN on CPU, cuDNN on GPU); ``"triton"`` rnnkit's Triton kernels (CUDA);
  ``"fast"`` rnnkit's engine (hand-written backward through time); ``"sequential"`` the plain
  per-step autograd loop (the reference). rnnkit's paths run rnnkit cells bound to these very
  parameters;
* ``explain()``: which path a call takes and why;
* custom variants by keyword (``LSTM``: ``layer_norm``, ``peephole``, ``recurrent_dropout``,
  ``zoneout``, ``layer_norm_eps``; ``GRU``: the same without ``peephole``). Any of them moves the
  layer off the vendor kernel onto rnnkit's fast engine, running
  :class:`~rnnkit.cells.LayerNormLSTMCell`/:class:`~rnnkit.cells.LayerNormGRUCell`. The shared
  weights keep torch's names; the new ones are ``ln_ih_weight_l{k}``, ``ln_hh_weight_l{k}``,
  ``ln_cell_weight_l{k}``, ``ln_cell_bias_l{k}``, ``peephole_weight_l{k}`` (``_reverse`` for the
  reverse direction), so a ``torch.nn.LSTM`` state dict loads with ``strict=False``;
* ``forget_bias=``/``chrono_init=`` (LSTM, GRU): forget-gate initialisation (:mod:`rnnkit.init`);
  it changes values only, so the vendor kernel still runs.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit.cells import ElmanCell, GRUCell, LSTMCell, RecurrentCell
from rnnkit.cells.layernorm import LayerNormGRUCell, LayerNormLSTMCell
from rnnkit.layers.checks import check_input, check_lengths, check_state
from rnnkit.layers.engine import BACKEND_NAMES, PathReport, choose_backend, run_stack

# Why RNNBase and not torch.nn.LSTM itself: Dynamo refuses to trace any instance of torch.nn.RNN,
# GRU or LSTM (unless torch._dynamo.config.allow_rnn, a process-wide switch that also changes how
# every torch.nn layer compiles). The drop-ins are written to be traced, so they sit beside
# torch.nn's classes, reuse their methods, and need no global switch.


class _DropIn:
    """Shared forward of the three drop-ins (mixed in before the torch.nn class)."""

    _cell_type: type[RecurrentCell]
    _torch_class: type[nn.RNNBase]  # the torch.nn layer whose forward runs the fused path

    _variant_type: type[RecurrentCell] | None = None

    def _init_backend(self, backend: str) -> None:
        if backend not in BACKEND_NAMES:
            raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {backend!r}")
        self.backend = backend
        self._choices: dict = {}  # the backend choice per (device, dtype, mode) key
        self._skeleton: list[RecurrentCell] | None = None
        self._meta_params: list[dict] | None = None
        self._extra_names: list[str] = []

    def _init_variant(self, variant: dict, forget_bias: float | None, chrono_init: int | None) -> None:
        """Switch to the variant cell if any option is on, registering its extra parameters."""
        def on(key, value) -> bool:
            if key == "zoneout":
                return any(p != 0 for p in (value if isinstance(value, tuple | list) else (value,)))
            return key != "eps" and bool(value)

        self.variant = {k: v for k, v in variant.items() if k == "eps" or on(k, v)}
        self._gate_init = (forget_bias, chrono_init)
        if set(self.variant) - {"eps"}:
            self.variant.setdefault("layer_norm", False)
            self._cell_type = self._variant_type
            ref = self._flat_weights[0]
            for cell, suffix in zip(self._layer_cells(ref.device, ref.dtype), self._suffixes(), strict=True):
                for name, p in cell.named_parameters():
                    if not hasattr(self, name + suffix):
                        self.register_parameter(name + suffix, p)
                        self._extra_names.append(name + suffix)
        else:
            self.variant = {}
        self._reset_extras()
        self._cell_skeleton()  # built here, never inside a traced forward

    def _suffixes(self) -> list[str]:
        directions = 2 if self.bidirectional else 1
        return [f"_l{layer}" + ("_reverse" if d else "") for layer in range(self.num_layers) for d in range(directions)]

    def _layer_cells(self, device, dtype=None) -> list[RecurrentCell]:
        directions = 2 if self.bidirectional else 1
        out = self.proj_size or self.hidden_size
        return [
            self._cell_type(self.input_size if layer == 0 else directions * out, self.hidden_size,
                            **self._cell_kwargs(), device=device, dtype=dtype)
            for layer in range(self.num_layers) for _ in range(directions)
        ]

    def _reset_extras(self) -> None:
        """LN gains 1 and shifts 0 (peepholes keep torch's uniform init), then the gate init."""
        with torch.no_grad():
            for name in getattr(self, "_extra_names", []):
                if name.startswith("ln_"):
                    getattr(self, name).fill_(1.0 if "_weight_" in name else 0.0)
        forget_bias, chrono_init = getattr(self, "_gate_init", (None, None))
        if forget_bias is not None and chrono_init is not None:
            raise ValueError("give forget_bias or chrono_init, not both (chrono_init sets the forget-gate bias)")
        if forget_bias is not None or chrono_init is not None:
            from rnnkit.cells import initialisers as init

            if not self.bias:
                raise ValueError("forget_bias/chrono_init set gate biases; this layer was built with bias=False")
            if forget_bias is not None:
                init.forget_gate_bias_(self, float(forget_bias))
            else:
                init.chrono_init_(self, int(chrono_init))

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self._reset_extras()

    # -- rnnkit cells viewing this module's parameters ----------------------------------------
    def _cell_kwargs(self) -> dict:
        return {"bias": self.bias}

    def _cell_skeleton(self) -> list[RecurrentCell]:
        """rnnkit cells of this layer's kinds and options on the meta device, built once: what
        the backend choice reads (no weight is touched, so a parametrization is not evaluated)."""
        if self._skeleton is None:
            self._skeleton = self._layer_cells("meta")
            self._meta_params = [dict(cell._parameters) for cell in self._skeleton]
        for cell in self._skeleton:
            if cell.training != self.training:
                cell.train(self.training)  # not submodules: .train()/.eval() do not reach them
        return self._skeleton

    def engine_cells(self, dtype: torch.dtype | None = None) -> list[RecurrentCell]:
        """rnnkit cells bound to this module's parameters as they are now (cast to ``dtype`` if
        given: autocast). torch.nn's weights are read the way torch.nn reads them
        (``_update_flat_weights``, then ``_flat_weights``), so a parametrized weight
        (``weight_norm``, ``spectral_norm``, any ``torch.nn.utils.parametrize`` parametrization) is
        evaluated as often as in torch.nn, never cached by ``id()``; weights replaced by ``.to()``
        or ``torch.func.functional_call`` are seen. The cells are not submodules (nothing in
        ``state_dict`` or ``parameters()``); :meth:`_release` drops the binding after a forward."""
        self._update_flat_weights()
        current = dict(zip(self._flat_weights_names, self._flat_weights, strict=True))
        cells = self._cell_skeleton()
        for cell, suffix in zip(cells, self._suffixes(), strict=True):
            params = cell._parameters
            for name in params:
                if params[name] is not None:
                    key = name + suffix
                    w = current[key] if key in current else getattr(self, key)
                    params[name] = w if dtype is None or w.dtype == dtype else w.to(dtype)
        return cells

    def _release(self) -> None:
        """Unbind the skeleton from the parameters, so that no reference outlives the forward
        (``.to()`` with swapped parameters needs them unshared)."""
        for cell, held in zip(self._cell_skeleton(), self._meta_params, strict=True):
            cell._parameters.update(held)

    def extra_repr(self) -> str:
        parts = [super().extra_repr()] + [f"{k}={v!r}" for k, v in getattr(self, "variant", {}).items()]
        return ", ".join(parts + ([f"backend={self.backend!r}"] if self.backend != "auto" else []))

    def explain(self, input: Tensor | None = None) -> PathReport:
        """The path this layer takes for ``input`` and why faster ones do not apply."""
        probe = input.data if isinstance(input, PackedSequence) else input
        if probe is None:
            probe = self._flat_weights[0].new_empty(0)
        return choose_backend(self._cell_skeleton(), probe, self.backend)

    # -- forward ------------------------------------------------------------------------------
    def _state_shapes(self, batch: int | None) -> list[tuple[int, ...]]:
        """hx shapes: (N, B, S) for batched input, (N, S) for unbatched (``batch`` None)."""
        n = self.num_layers * (2 if self.bidirectional else 1)
        sizes = [self.proj_size or self.hidden_size] + ([self.hidden_size] if self.mode == "LSTM" else [])
        return [(n, s) if batch is None else (n, batch, s) for s in sizes]

    def forward(self, input, hx=None, *, lengths=None):
        weight = self._flat_weights[0]
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("lengths= is for padded tensors; a PackedSequence carries its own lengths")
            check_input(input.data, self.input_size, weight, (2,), "(sum of lengths, features)", time_dims={2: 0})
            batch = int(input.batch_sizes[0])
            if hx is not None:
                check_state(hx, self._state_shapes(batch), weight, "hx")
        else:
            layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
            check_input(input, self.input_size, weight, (2, 3), f"{layout} or unbatched (time, features)",
                        time_dims={3: 1 if self.batch_first else 0, 2: 0})
            batched = input.dim() == 3
            batch = (input.size(0) if self.batch_first else input.size(1)) if batched else None
            if hx is not None:
                check_state(hx, self._state_shapes(batch), weight, "hx")
            if lengths is not None:
                if not batched:
                    raise ValueError("lengths= needs batched 3-D input; unbatched input is one whole sequence")
                steps = input.size(1) if self.batch_first else input.size(0)
                lengths = check_lengths(lengths, batch, steps)
        report = choose_backend(self._cell_skeleton(), input.data if packed else input, self.backend, self._choices)
        if report.name == "fused":
            if lengths is None:
                out, hidden = self._torch_class.forward(self, input, hx)
                return out, self._documented_shape(hidden, batch)
            steps = input.size(1) if self.batch_first else input.size(0)
            seq = pack_padded_sequence(input, lengths, batch_first=self.batch_first, enforce_sorted=False)
            out, hidden = self._torch_class.forward(self, seq, hx)
            out, _ = pad_packed_sequence(out, batch_first=self.batch_first, total_length=steps)
            return out, self._documented_shape(hidden, batch)
        return self._engine_forward(input, hx, lengths, report.backend)

    def _documented_shape(self, hidden, batch: int | None):
        """The final state in its documented shape. Under torch.compile on CUDA, torch's own forward
        returned ``h_n`` and ``c_n`` with an extra dimension, ``(1, N, B, S)`` (seen with torch 2.11 on
        an H200; pytorch/pytorch#130791, #151200); a view puts them back, and costs nothing where
        they are right."""
        if not torch.compiler.is_compiling():
            return hidden
        shapes = self._state_shapes(batch)
        if isinstance(hidden, tuple):
            return tuple(h.view(shape) for h, shape in zip(hidden, shapes, strict=True))
        return hidden.view(shapes[0])

    #: the modes whose torch.nn layer computes in autocast's lower precision (as measured: CPU
    #: bfloat16 autocast gives RNN and LSTM outputs in bfloat16, GRU outputs in float32)
    _AUTOCAST_LOWER = ("LSTM", "RNN_TANH", "RNN_RELU")

    def _autocast_dtype(self, x: Tensor) -> torch.dtype | None:
        """The dtype torch.nn's layer computes in under an active autocast (None: no autocast)."""
        device = x.device.type
        if not torch.is_autocast_enabled(device):
            return None
        if self.mode in self._AUTOCAST_LOWER:
            return torch.get_autocast_dtype(device)
        return self._flat_weights[0].dtype

    def _engine_forward(self, input, hx, lengths, backend):
        packed = isinstance(input, PackedSequence)
        if packed:
            x, lengths = pad_packed_sequence(input)  # (T, B, I) and lengths, in the caller's order
            batched = True
        else:
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)  # unbatched (T, I) -> (T, 1, I)
            if batched and self.batch_first:
                x = x.transpose(0, 1)  # (T, B, I)
        state = None
        if hx is not None:
            state = (hx,) if isinstance(hx, Tensor) else tuple(hx)
            if not batched:
                state = tuple(s.unsqueeze(1) for s in state)  # (N, H) -> (N, 1, H)
        if lengths is not None:
            lengths = lengths.to(x.device)
        dtype = self._autocast_dtype(x)
        if dtype is not None:  # as torch.nn under autocast: the whole layer in that dtype
            x = x.to(dtype)
            state = None if state is None else tuple(s.to(dtype) for s in state)
        try:
            with torch.autocast(x.device.type, enabled=False) if dtype is not None else nullcontext():
                out, final = run_stack(
                    self.engine_cells(dtype), x, state, lengths, num_layers=self.num_layers,
                    directions=2 if self.bidirectional else 1, dropout=self.dropout, training=self.training,
                    backend=backend,
                )
        finally:
            self._release()
        if not batched:
            out, final = out.squeeze(1), tuple(s.squeeze(1) for s in final)
        elif packed:
            order = input.sorted_indices
            if order is not None:
                out, lengths = out.index_select(1, order), lengths[order.to(lengths.device)]
            data = pack_padded_sequence(out, lengths.cpu(), enforce_sorted=True).data
            out = PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, (final[0] if self.mode != "LSTM" else final)


class RNN(_DropIn, nn.RNNBase):
    """``torch.nn.RNN`` (Elman, tanh or relu) plus ``lengths=``, ``backend=`` and ``explain()``."""

    _cell_type = ElmanCell
    _torch_class = nn.RNN

    def __init__(self, *args, backend: str = "auto", **kwargs) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        # nonlinearity is torch.nn.RNN's 4th positional argument (input_size, hidden_size, num_layers, ...)
        self.nonlinearity = args[3] if len(args) > 3 else kwargs.pop("nonlinearity", "tanh")
        args = args[:3] + args[4:]
        modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
        if self.nonlinearity not in modes:
            raise ValueError(f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'.")
        nn.RNNBase.__init__(self, modes[self.nonlinearity], *args, **kwargs)
        self._init_backend(backend)
        self._cell_skeleton()  # built here, never inside a traced forward

    def _cell_kwargs(self) -> dict:
        return {"bias": self.bias, "nonlinearity": self.nonlinearity}


class GRU(_DropIn, nn.RNNBase):
    """``torch.nn.GRU`` plus ``lengths=``, ``backend=``, ``explain()`` and the variants
    ``layer_norm``, ``recurrent_dropout``, ``zoneout`` (see :class:`~rnnkit.cells.LayerNormGRUCell`),
    ``forget_bias``/``chrono_init`` (on the update gate z)."""

    _cell_type = GRUCell
    _variant_type = LayerNormGRUCell
    _torch_class = nn.GRU

    def __init__(
        self, *args, backend: str = "auto", layer_norm: bool = False, recurrent_dropout: float = 0.0,
        zoneout: float = 0.0, layer_norm_eps: float = 1e-5, forget_bias: float | None = None,
        chrono_init: int | None = None, **kwargs,
    ) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        nn.RNNBase.__init__(self, "GRU", *args, **kwargs)
        self._init_backend(backend)
        variant = dict(layer_norm=layer_norm, recurrent_dropout=recurrent_dropout, zoneout=zoneout, eps=layer_norm_eps)
        self._init_variant(variant, forget_bias, chrono_init)

    def _cell_kwargs(self) -> dict:
        return {"bias": self.bias, **self.variant} if self.variant else {"bias": self.bias}


class LSTM(_DropIn, nn.RNNBase):
    """``torch.nn.LSTM`` (with ``proj_size``) plus ``lengths=``, ``backend=``, ``explain()`` and
    the variants ``layer_norm``, ``peephole``, ``recurrent_dropout``, ``zoneout`` (a rate, or
    ``(p_h, p_c)``; see :class:`~rnnkit.cells.LayerNormLSTMCell`), ``forget_bias``/``chrono_init``.

    Example: ``rnnkit.LSTM(128, 256, num_layers=2, layer_norm=True, zoneout=(0.05, 0.5))``."""

    _cell_type = LSTMCell
    _variant_type = LayerNormLSTMCell
    _torch_class = nn.LSTM
    # torch.nn.LSTM's own checks of (h, c), which its forward calls
    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden

    def __init__(
        self, *args, backend: str = "auto", layer_norm: bool = False, peephole: bool = False,
        recurrent_dropout: float = 0.0, zoneout: float | tuple[float, float] = 0.0, layer_norm_eps: float = 1e-5,
        forget_bias: float | None = None, chrono_init: int | None = None, **kwargs,
    ) -> None:
        nn.RNNBase.__init__(self, "LSTM", *args, **kwargs)
        self._init_backend(backend)
        variant = dict(layer_norm=layer_norm, peephole=peephole, recurrent_dropout=recurrent_dropout,
                       zoneout=zoneout, eps=layer_norm_eps)
        self._init_variant(variant, forget_bias, chrono_init)

    def _cell_kwargs(self) -> dict:
        return {"bias": self.bias, "proj_size": self.proj_size, **self.variant}


__all__ = ["GRU", "LSTM", "RNN"]
