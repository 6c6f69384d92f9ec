"""Options shared by rnnkit's custom cells: recurrent (variational) dropout, zoneout, and the
forget-gate initialisers.

Recurrent dropout (Gal & Ghahramani, "A theoretically grounded application of dropout in recurrent
neural networks", NeurIPS 2016). The recurrent input of the matmul is masked with one mask per
sequence, the same at every step::

    a_t = (h_{t-1} * m) W_hh^T,   m ~ Bernoulli(1 - p) / (1 - p),  m of shape (B, R), drawn once

The mask never touches ``h`` elsewhere (a GRU's ``z * h_{t-1}`` keeps the clean state). In eval
mode ``m = 1``. Gal & Ghahramani also drop the input with a per-sequence mask; for that use
dropout on ``x`` (``torch.nn.Dropout1d`` over time-major features) before the layer.

Zoneout (Krueger et al., "Zoneout: regularizing RNNs by randomly preserving hidden activations",
ICLR 2017). Each state entry ``s`` (``h`` and ``c`` for an LSTM) keeps its previous value with
probability ``p_s``, per unit and per step::

    s_t = d_t * s_{t-1} + (1 - d_t) * s~_t,   d_t ~ Bernoulli(p_s)   (training)
    s_t = p_s * s_{t-1} + (1 - p_s) * s~_t                          (eval: the expectation)

where ``s~_t`` is what the cell would have produced. As in the paper, an LSTM's ``h~_t`` is
computed from the un-zoned ``c~_t``.

How the masks reach a step. Zoneout masks are independent per step, so ``project_input`` (which
sees every step at once) draws them in training and appends them as extra columns of ``x_proj``;
``step`` splits them off again (:meth:`SequenceOptions.split_noise`). The fast engine and the Triton
path skip that round trip (:meth:`SequenceOptions.project_split`): the same masks, drawn by the same
calls in the same order, reach their loops beside ``x_proj`` rather than inside it, which spares a
concatenation, a copy of the core columns and a full-width zero-filled gradient. The recurrent-dropout mask
belongs to a sequence and is an input, never state of the cell: the driver draws it once per
sequence with :meth:`SequenceOptions.draw_noise` and passes it to every step as
``step(x_proj, state, noise)`` (a step without it applies no recurrent dropout). Every backend
gets its masks from the same driver, so under one seed the fast engine and the plain loop see
identical noise.

Forget-gate initialisers (``forget_bias``, ``chrono_init``) call :mod:`rnnkit.init`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rnnkit.cells.initialisers import chrono_init_, forget_gate_bias_

__all__ = ["SequenceOptions"]

Keep = Tensor | float | None


class SequenceOptions:
    """Mixin for :class:`~rnnkit.cells.RecurrentCell` subclasses (put it first in the bases).

    The cell calls :meth:`_init_options` in its constructor, defines ``project_core(x)`` (its
    projection without zoneout columns) and ``project_input(x)`` as ``_append_noise(project_core(x))``
    (:meth:`_append_noise`), and in ``step``: :meth:`split_noise`, :meth:`recurrent_input` (with the noise) on the
    state it multiplies by ``weight_hh``, and :meth:`zoneout_state` on the new state.
    """

    recurrent_dropout: float
    zoneout: tuple[float, ...]

    def _init_options(self, recurrent_dropout: float, zoneout: float | Sequence[float]) -> None:
        if not isinstance(recurrent_dropout, int | float) or not 0.0 <= recurrent_dropout < 1.0:
            raise ValueError(f"recurrent_dropout must be a probability in [0, 1), got {recurrent_dropout!r}")
        entries = len(self.state_sizes)
        rates = (zoneout,) * entries if isinstance(zoneout, int | float) else tuple(zoneout)
        if len(rates) != entries or not all(isinstance(p, int | float) and 0.0 <= p <= 1.0 for p in rates):
            names = {1: "(h,)", 2: "(h, c)"}.get(entries, f"{entries} state entries")
            raise ValueError(
                f"zoneout must be a probability in [0, 1] or one per state entry {names}, got {zoneout!r}"
            )
        self.recurrent_dropout = float(recurrent_dropout)
        self.zoneout = tuple(float(p) for p in rates)

    def _init_gates(self, forget_bias: float | None, chrono_init: int | None) -> None:
        """Apply :func:`rnnkit.init.forget_gate_bias_` or :func:`rnnkit.init.chrono_init_`."""
        if forget_bias is not None and chrono_init is not None:
            raise ValueError("give forget_bias or chrono_init, not both (chrono_init sets the forget-gate bias)")
        if forget_bias is None and chrono_init is None:
            return
        if getattr(self, "bias_ih", None) is None:
            raise ValueError("forget_bias/chrono_init set gate biases; this cell was built with bias=False")
        if forget_bias is not None:
            forget_gate_bias_(self, float(forget_bias))
        else:
            chrono_init_(self, int(chrono_init))

    def _option_repr(self) -> dict:
        return {"recurrent_dropout": self.recurrent_dropout, "zoneout": self.zoneout}

    # -- recurrent dropout -------------------------------------------------------------------
    def draw_noise(
        self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Tensor | None:
        """The per-sequence recurrent-dropout mask ``(batch, R)``, or None (eval mode, or no
        dropout). A driver draws it once per sequence and passes it to every step."""
        if not (self.training and self.recurrent_dropout > 0.0):
            return None
        p = self.recurrent_dropout
        ref = self.weight_hh
        device = ref.device if device is None else device
        dtype = ref.dtype if dtype is None else dtype
        # drawn in float32 whatever the dtype, so float32 and float64 runs share masks
        keep = torch.rand((batch, self.state_sizes[0]), device=device) >= p
        return keep.to(dtype).div_(1.0 - p)

    @staticmethod
    def recurrent_input(h: Tensor, noise: Tensor | None) -> Tensor:
        """``h * m``: what the recurrent matmul reads (``h`` itself without a mask)."""
        return h if noise is None else h * noise

    # -- zoneout -----------------------------------------------------------------------------
    def _noise_width(self) -> int:
        if not self.training:
            return 0
        return sum(s for s, p in zip(self.state_sizes, self.zoneout, strict=True) if p > 0.0)

    def zoneout_keeps(self, x_proj: Tensor) -> list[Keep]:
        """Per state entry the keep factor for the steps of ``x_proj (..., P)`` (the projection
        without zoneout columns): a fresh 0/1 mask ``(..., S_k)`` in training, the rate ``p`` in
        eval, None where zoneout is off. The masks :meth:`_append_noise` appends are these."""
        if self._noise_width() == 0:
            return [p if p > 0.0 else None for p in self.zoneout]
        lead = x_proj.shape[:-1]
        return [
            (torch.rand((*lead, s), device=x_proj.device) < p).to(x_proj.dtype) if p > 0.0 else None
            for s, p in zip(self.state_sizes, self.zoneout, strict=True)
        ]

    def _append_noise(self, x_proj: Tensor) -> Tensor:
        """In training, append the zoneout keep masks ``d`` (one column block per zoned state
        entry) to ``x_proj (..., P)``: ``(..., P + sum S_k)``."""
        if self._noise_width() == 0:
            return x_proj
        return torch.cat([x_proj, *(k for k in self.zoneout_keeps(x_proj) if k is not None)], dim=-1)

    def project_split(self, x: Tensor) -> tuple[Tensor, list[Keep]]:
        """``split_noise(project_input(x))`` without building the concatenation: the projection
        (``project_core``, which the cell defines) and the keep factors, drawn as
        ``project_input`` draws them (the same random numbers under one seed)."""
        core = self.project_core(x)
        return core, self.zoneout_keeps(core)

    def split_noise(self, x_proj: Tensor) -> tuple[Tensor, list[Keep]]:
        """``x_proj`` without the zoneout columns, and per state entry its keep factor: a 0/1 mask
        ``(..., S_k)`` in training, the rate ``p`` in eval, or None where zoneout is off."""
        width = self._noise_width()
        if width == 0:
            return x_proj, [p if p > 0.0 else None for p in self.zoneout]
        core = x_proj[..., : x_proj.size(-1) - width]
        masks = iter(x_proj[..., x_proj.size(-1) - width :].split(
            [s for s, p in zip(self.state_sizes, self.zoneout, strict=True) if p > 0.0], dim=-1
        ))
        return core, [next(masks) if p > 0.0 else None for p in self.zoneout]

    @staticmethod
    def zoneout_state(new: tuple[Tensor, ...], old: tuple[Tensor, ...], keeps: list[Keep]) -> tuple[Tensor, ...]:
        """``d * old + (1 - d) * new`` per state entry (unchanged where the keep factor is None)."""
        return tuple(n if k is None else torch.lerp(n, o, k) for n, o, k in zip(new, old, keeps, strict=True))
