"""``rnnkit.RNN``, ``rnnkit.GRU``, ``rnnkit.LSTM``: drop-in replacements for torch.nn's.

They *are* ``torch.nn.RNN/GRU/LSTM`` subclasses: same constructor, parameter names
(``weight_ih_l0``, ``weight_hh_l1_reverse``, ``weight_hr_l0``, ...), ``state_dict``s in both
directions, forward signature and outputs (tensors, ``PackedSequence``s, unbatched input). They
add:

* ``lengths=``: padded input without sorting; outputs at padded steps are zero and final states
  are those at each sequence's own end (the reverse direction starts at its own last element);
* ``ValueError``/``TypeError`` that name the argument and shapes, before any kernel runs;
* ``backend=``: ``"auto"``/``"fused"`` run torch's vendor kernels (oneDNN on CPU, cuDNN on GPU);
  ``"sequential"`` runs rnnkit's engine with rnnkit cells bound to these very parameters;
* ``explain()``: which path a call takes and why.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit.cells import ElmanCell, GRUCell, LSTMCell, RecurrentCell
from rnnkit.layers.checks import check_input, check_lengths, check_state
from rnnkit.layers.engine import BACKENDS, PathReport, choose_path, run_stack


class _DropIn:
    """Shared forward of the three drop-ins (mixed in before the torch.nn class)."""

    _cell_type: type[RecurrentCell]

    def _init_backend(self, backend: str) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self._engine_key: tuple[int, ...] | None = None
        self._engine_cells: list[RecurrentCell] = []

    # -- rnnkit cells viewing this module's parameters ----------------------------------------
    def _cell_kwargs(self) -> dict:
        return {"bias": self.bias}

    def engine_cells(self) -> list[RecurrentCell]:
        """rnnkit cells bound to this module's current parameter tensors (rebuilt if they were
        replaced, e.g. by ``.to()`` or ``torch.func.functional_call``); not registered as
        submodules, so they add nothing to ``state_dict`` or ``parameters()``."""
        current = [getattr(self, name) for name in self._flat_weights_names]
        key = tuple(id(w) for w in current)
        if key != self._engine_key:
            cells = []
            directions = 2 if self.bidirectional else 1
            out = self.proj_size or self.hidden_size
            for layer in range(self.num_layers):
                in_size = self.input_size if layer == 0 else directions * out
                for d in range(directions):
                    cell = self._cell_type(in_size, self.hidden_size, **self._cell_kwargs(), device="meta")
                    suffix = f"_l{layer}" + ("_reverse" if d else "")
                    for name in list(cell._parameters):
                        if cell._parameters[name] is not None:
                            cell._parameters[name] = getattr(self, name + suffix)
                    cells.append(cell)
            self._engine_cells, self._engine_key = cells, key
        return self._engine_cells

    def explain(self, input: Tensor | None = None) -> PathReport:
        """The path this layer takes for ``input`` and why faster ones do not apply."""
        probe = input.data if isinstance(input, PackedSequence) else input
        if probe is None:
            probe = self._flat_weights[0].new_empty(0)
        return choose_path(self.engine_cells(), probe, self.backend)

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
            check_input(input.data, self.input_size, weight, (2,), "(sum of lengths, features)")
            batch = int(input.batch_sizes[0])
            if hx is not None:
                check_state(hx, self._state_shapes(batch), weight, "hx")
        else:
            layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
            check_input(input, self.input_size, weight, (2, 3), f"{layout} or unbatched (time, features)")
            batched = input.dim() == 3
            batch = (input.size(0) if self.batch_first else input.size(1)) if batched else None
            if hx is not None:
                check_state(hx, self._state_shapes(batch), weight, "hx")
            if lengths is not None:
                if not batched:
                    raise ValueError("lengths= needs batched 3-D input; unbatched input is one whole sequence")
                steps = input.size(1) if self.batch_first else input.size(0)
                lengths = check_lengths(lengths, batch, steps)
        path = choose_path(self.engine_cells(), input.data if packed else input, self.backend)
        if path.path.startswith("fused"):
            if lengths is None:
                return super().forward(input, hx)
            steps = input.size(1) if self.batch_first else input.size(0)
            seq = pack_padded_sequence(input, lengths, batch_first=self.batch_first, enforce_sorted=False)
            out, hidden = super().forward(seq, hx)
            out, _ = pad_packed_sequence(out, batch_first=self.batch_first, total_length=steps)
            return out, hidden
        return self._engine_forward(input, hx, lengths, path.path)

    def _engine_forward(self, input, hx, lengths, path):
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
        out, final = run_stack(
            self.engine_cells(), x, state, lengths, num_layers=self.num_layers,
            directions=2 if self.bidirectional else 1, dropout=self.dropout, training=self.training, path=path,
        )
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


class RNN(_DropIn, nn.RNN):
    """``torch.nn.RNN`` (Elman, tanh or relu) plus ``lengths=``, ``backend=`` and ``explain()``."""

    _cell_type = ElmanCell

    def __init__(self, *args, backend: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_backend(backend)

    def _cell_kwargs(self) -> dict:
        return {"bias": self.bias, "nonlinearity": self.nonlinearity}


class GRU(_DropIn, nn.GRU):
    """``torch.nn.GRU`` plus ``lengths=``, ``backend=`` and ``explain()``."""

    _cell_type = GRUCell

    def __init__(self, *args, backend: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_backend(backend)


class LSTM(_DropIn, nn.LSTM):
    """``torch.nn.LSTM`` (with ``proj_size``) plus ``lengths=``, ``backend=`` and ``explain()``."""

    _cell_type = LSTMCell

    def __init__(self, *args, backend: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_backend(backend)

    def _cell_kwargs(self) -> dict:
        return {"bias": self.bias, "proj_size": self.proj_size}


__all__ = ["GRU", "LSTM", "RNN"]
