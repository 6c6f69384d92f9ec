"""``Recurrent``: any cell unfolded over time, stacked, bidirectional, with lengths."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.cells.base import RecurrentCell
from rnnkit.layers.checks import check_input, check_lengths, check_state
from rnnkit.layers.engine import (
    BACKEND_NAMES,
    MERGES,
    PathReport,
    StepState,
    choose_backend,
    draw_noise,
    merged_size,
    run_stack,
)
from rnnkit.scan.backends import get_backend

StateArg = Tensor | tuple[Tensor, ...]


class Recurrent(nn.Module):
    """Run any :class:`~rnnkit.cells.RecurrentCell` over a sequence.

    Args:
        cell: the layer-0 forward cell; the other layers and the reverse direction get fresh
            cells of the same kind and options (``cell.replicate``).
        num_layers: stacked layers; layer ``l > 0`` reads layer ``l - 1``'s merged output.
        bidirectional: add a reverse direction per layer that reads each sequence from its own
            last element backwards.
        merge: how the two directions combine: ``"concat"`` (width 2O), ``"sum"``, ``"mul"``,
            ``"ave"`` (width O).
        dropout: dropout on each layer's output except the last, in training.
        batch_first: input and output are ``(B, T, *)`` if True, else ``(T, B, *)``.
        backend: ``"auto"`` takes the first path that can run the layer, in the order
            ``"fused"`` (torch's vendor kernels), ``"parallel"`` (the cells' own scan in time),
            ``"triton"`` (GPU kernels), ``"fast"`` (rnnkit's engine with a hand-written backward
            through time), then ``"sequential"`` (the reference loop). Naming one of them
            forces it (an error says why if it cannot run); :meth:`explain` reports the choice.

    Shapes (N = L * D with L layers and D directions, S_k the cell's state sizes):
        x ``(B, T, I)``; state: a tensor ``(N, B, S_0)`` for one-tensor states (Elman, GRU) or a
        tuple of ``(N, B, S_k)`` (LSTM: ``(h, c)``); lengths ``(B,)`` in ``[1, T]``.
        Returns ``(output (B, T, D*O or O), final state)`` in the same form as ``state``;
        outputs at padded steps are zero and final states are taken at each sequence's end.
    """

    def __init__(
        self, cell: RecurrentCell, num_layers: int = 1, bidirectional: bool = False,
        merge: str = "concat", dropout: float = 0.0, batch_first: bool = True, backend: str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(cell, RecurrentCell):
            raise TypeError(f"cell must be an rnnkit RecurrentCell, got {type(cell).__name__}")
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        if backend not in BACKEND_NAMES:
            raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {backend!r}")
        self.num_layers, self.bidirectional, self.merge = num_layers, bidirectional, merge
        self.dropout, self.batch_first, self.backend = dropout, batch_first, backend
        self.directions = 2 if bidirectional else 1
        cells = []
        for layer in range(num_layers):
            in_size = cell.input_size if layer == 0 else merged_size(cell, self.directions, merge)
            for d in range(self.directions):
                cells.append(cell if layer == 0 and d == 0 else cell.replicate(in_size))
        self.cells = nn.ModuleList(cells)  # index = layer * directions + direction
        self.input_size = cell.input_size
        self.output_size = merged_size(cell, self.directions, merge)
        self.feature_dims = cell.feature_dims
        self._choices: dict = {}  # the backend choice per (device, dtype, mode) key

    def _state_shapes(self, batch: int, step_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Expected state entry shapes ``(N, B, *S_k)`` for one step's input shape ``step_shape``."""
        cell = self.cells[0]
        if self.feature_dims == 1:
            return [(len(self.cells), batch, s) for s in cell.state_sizes]
        zeros = cell.initial_state(batch, device="meta", input_shape=step_shape)
        return [(len(self.cells), *z.shape) for z in zeros]

    def _layout(self, time: bool) -> str:
        features = "features" if self.feature_dims == 1 else "channels, height, width"
        if not time:
            return f"(batch, {features})"
        return f"(batch, time, {features})" if self.batch_first else f"(time, batch, {features})"

    def _check(self, x: Tensor, state, lengths) -> tuple[Tensor, tuple[Tensor, ...] | None, Tensor | None]:
        weight = next(self.cells[0].parameters())
        check_input(x, self.input_size, weight, (2 + self.feature_dims,), self._layout(True),
                    feature_dim=-self.feature_dims, time_dims={2 + self.feature_dims: 1 if self.batch_first else 0})
        x = x.transpose(0, 1) if self.batch_first else x  # (T, B, *F)
        steps, batch = x.shape[:2]
        if state is not None:
            state = check_state(state, self._state_shapes(batch, tuple(x.shape[2:])), weight, "state")
        if lengths is not None:
            lengths = check_lengths(lengths, batch, steps).to(x.device)
        return x, state, lengths

    def explain(self, x: Tensor | None = None) -> PathReport:
        """The backend this layer takes (for input ``x``, or a CPU input by default) and why the
        faster ones do not apply."""
        weight = next(self.cells[0].parameters())
        probe = x if x is not None else weight.new_empty(0)
        return choose_backend(self.cells, probe, self.backend)

    def forward(
        self, x: Tensor, state: StateArg | None = None, lengths: Tensor | list[int] | None = None
    ) -> tuple[Tensor, StateArg]:
        dtype = self._autocast_dtype(x)
        if dtype is not None:
            return self._forward_in(dtype, x, state, lengths)
        x, state, lengths = self._check(x, state, lengths)
        report = choose_backend(self.cells, x, self.backend, self._choices)
        out, final = run_stack(
            self.cells, x, state, lengths, num_layers=self.num_layers, directions=self.directions,
            merge=self.merge, dropout=self.dropout, training=self.training, backend=report.backend,
        )
        if self.batch_first:
            out = out.transpose(0, 1)  # (B, T, O)
        return out, (final[0] if len(final) == 1 else final)

    def _autocast_dtype(self, x: Tensor) -> torch.dtype | None:
        """The dtype an active autocast asks for, when it is not the weights' (None: no autocast)."""
        if not isinstance(x, Tensor) or not x.is_floating_point() or not torch.is_autocast_enabled(x.device.type):
            return None
        device = x.device.type
        dtype = torch.get_autocast_dtype(device)
        return None if dtype == next(self.cells[0].parameters()).dtype else dtype

    def _forward_in(self, dtype: torch.dtype, x: Tensor, state, lengths) -> tuple[Tensor, StateArg]:
        """Autocast's policy for a whole recurrent layer: every step in ``dtype``. The recurrence
        is a chain of matmuls and gates, so it runs with the weights, input and state cast once
        (the parameters stay where they are and receive their gradients in their own dtype), and
        returns outputs and state in ``dtype``, as torch.nn's LSTM and RNN do under autocast."""

        def cast(t):
            if isinstance(t, Tensor):
                return t.to(dtype) if t.is_floating_point() else t
            return None if t is None else type(t)(cast(v) for v in t)

        weights = {k: cast(v) for k, v in (*self.named_parameters(), *self.named_buffers())}
        with torch.autocast(x.device.type, enabled=False):
            return torch.func.functional_call(self, weights, (cast(x), cast(state), lengths))

    def begin(self, batch: int, state: StateArg | None = None, *, like: Tensor | None = None,
              step_shape: tuple[int, ...] | None = None) -> StepState:
        """Start stepping a batch of ``batch`` sequences from ``state`` (zeros if None): the
        noise of each cell (recurrent dropout) is drawn now, once for the whole sequence.
        ``like`` gives the device and dtype (the weights' by default); ``step_shape`` one step's
        trailing input shape, for cells with spatial states."""
        weight = next(self.cells[0].parameters())
        like = weight if like is None else like
        shape = step_shape if step_shape is not None else (self.input_size,)
        if state is None:
            zeros = [c.initial_state(batch, device=like.device, dtype=like.dtype, input_shape=shape)
                     for c in self.cells]
            parts = tuple(torch.stack(p) for p in zip(*zeros, strict=True))  # each (N, B, *S_k)
        else:
            parts = check_state(state, self._state_shapes(batch, shape), weight, "state")
        return StepState(parts, draw_noise(self.cells, batch, like))

    def step(self, x_t: Tensor, state: StateArg | StepState | None = None) -> tuple[Tensor, StepState]:
        """One time step for streaming: ``x_t (B, *F)`` -> ``(y_t (B, *O), StepState)``.

        Pass the returned :class:`~rnnkit.layers.engine.StepState` to the next step; a plain
        state (or None) begins a new sequence (:meth:`begin`). Its ``.state`` is the state in
        :meth:`forward`'s form. Feeding a sequence step by step equals one :meth:`forward` call
        on the whole of it under the same noise (in eval mode: exactly)."""
        if self.bidirectional:
            raise ValueError("a bidirectional layer reads the future and cannot be stepped; use forward()")
        weight = next(self.cells[0].parameters())
        check_input(x_t, self.input_size, weight, (1 + self.feature_dims,), self._layout(False),
                    feature_dim=-self.feature_dims)
        if not isinstance(state, StepState):
            state = self.begin(x_t.size(0), state, like=x_t, step_shape=tuple(x_t.shape[1:]))
        elif state.state[0].size(1) != x_t.size(0):
            raise ValueError(f"x_t has batch size {x_t.size(0)} but the stepping state holds "
                             f"{state.state[0].size(1)} sequences")
        out, final = run_stack(
            self.cells, x_t.unsqueeze(0), state.state, None, num_layers=self.num_layers, directions=1,
            merge=self.merge, dropout=self.dropout, training=self.training, backend=get_backend("sequential"),
            noise=state.noise,
        )
        return out.squeeze(0), StepState(final, state.noise)

    def extra_repr(self) -> str:
        parts = [f"num_layers={self.num_layers}", f"bidirectional={self.bidirectional}"]
        if self.bidirectional:
            parts.append(f"merge={self.merge!r}")
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        parts += [f"batch_first={self.batch_first}", f"backend={self.backend!r}"]
        return ", ".join(parts)
