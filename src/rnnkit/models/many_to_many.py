"""Many-to-many with equal lengths: a label per step (tagging) and next-step forecasting.

Symbols: B batch, T steps, I input features, O recurrent output width, K tags, F series features,
h forecast horizon.

Tagger:  o_{1..T} = Recurrent(x_{1..T});  phi_t = W_e o_t + b_e  (B, T, K)
    without CRF: y_t = argmax phi_t, trained with per-step cross-entropy over real steps;
    with CRF (Lafferty et al. 2001; BiLSTM-CRF of Huang, Xu & Yu 2015 / Lample et al. 2016):
    y = Viterbi(phi), trained with -log p(y | x) (see :mod:`rnnkit.models.crf`).

Forecaster (Graves, "Generating sequences with recurrent neural networks", 2013, for real
values): x^_{t+1} = W_f o_t + b_f with o_t = Recurrent(x_{1..t}); trained one step ahead with
teacher forcing; :meth:`Forecaster.forecast` rolls out h steps by feeding each prediction back,
one ``cell.step`` per layer per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.models._common import (
    InputLayer,
    length_mask,
    prepare_lengths,
    require_unidirectional,
)
from rnnkit.models.config import RecurrentConfig, as_config
from rnnkit.models.crf import LinearChainCRF

__all__ = ["Forecaster", "SequenceTagger"]


class SequenceTagger(nn.Module):
    """A tag per step, with an optional linear-chain CRF on top.

    ``x`` is ``(B, T, input_size)`` floats or ``(B, T)`` token ids (with ``vocab_size`` and
    ``embedding_dim``); ``config`` any :class:`RecurrentConfig` (bidirectional allowed).

    * ``forward(x, lengths=None) -> emissions (B, T, K)`` (per-step tag scores, always).
    * ``loss(x, tags, lengths=None) -> scalar``: mean negative log-likelihood per sequence with
      the CRF, else mean cross-entropy over real steps. Tags at padded steps are ignored.
    * ``decode(x, lengths=None) -> tags (B, T)``: Viterbi with the CRF, else per-step argmax;
      ``pad_tag`` (-1) at padded steps.
    """

    def __init__(
        self, num_tags: int, config: RecurrentConfig | dict | None = None, *, input_size: int | None = None,
        vocab_size: int | None = None, embedding_dim: int | None = None, padding_idx: int | None = None,
        crf: bool = False, pad_tag: int = -1,
    ) -> None:
        super().__init__()
        self.config = as_config(config)
        self.num_tags, self.pad_tag = num_tags, pad_tag
        self.inputs = InputLayer(input_size, vocab_size, embedding_dim, padding_idx)
        self.rnn = self.config.build(self.inputs.output_size)
        self.emit = nn.Linear(self.rnn.output_size, num_tags)  # W_e, b_e
        self.crf = LinearChainCRF(num_tags) if crf else None

    def _emissions(self, x: Tensor, lengths) -> tuple[Tensor, Tensor]:
        h = self.inputs(x)  # (B, T, I)
        B, T = h.shape[:2]
        lengths = prepare_lengths(lengths, B, T, h.device)
        outputs, _ = self.rnn(h, lengths=lengths)  # (B, T, O)
        return self.emit(outputs), length_mask(lengths, B, T, h.device)

    def forward(self, x: Tensor, lengths: Tensor | list[int] | None = None) -> Tensor:
        return self._emissions(x, lengths)[0]

    def loss(self, x: Tensor, tags: Tensor, lengths: Tensor | list[int] | None = None) -> Tensor:
        emissions, mask = self._emissions(x, lengths)
        if tuple(tags.shape) != tuple(mask.shape) or tags.is_floating_point():
            raise ValueError(f"tags must be an integer tensor of shape {tuple(mask.shape)}, got "
                             f"{tags.dtype} {tuple(tags.shape)}")
        if self.crf is not None:
            return -self.crf(emissions, tags, mask).mean()
        return F.cross_entropy(emissions[mask], tags[mask])  # over the real steps only

    @torch.no_grad()
    def decode(self, x: Tensor, lengths: Tensor | list[int] | None = None) -> Tensor:
        emissions, mask = self._emissions(x, lengths)
        if self.crf is not None:
            return self.crf.decode(emissions, mask, self.pad_tag)[0]
        return emissions.argmax(-1).masked_fill(~mask, self.pad_tag)


class Forecaster(nn.Module):
    """Autoregressive forecaster of real-valued series ``(B, T, F)``.

    * ``forward(x, lengths=None) -> predictions (B, T, F)``: ``pred[:, t]`` estimates ``x[:, t+1]``
      from ``x[:, :t+1]`` (train with MSE against ``x[:, 1:]`` on ``pred[:, :-1]``).
    * ``forecast(history, horizon, lengths=None) -> (B, horizon, F)``: the next ``horizon``
      values after each history's own end, each fed back as the next input.

    ``config`` must be unidirectional.
    """

    def __init__(self, num_features: int, config: RecurrentConfig | dict | None = None) -> None:
        super().__init__()
        self.config = as_config(config)
        require_unidirectional(self.config, "Forecaster")
        self.num_features = num_features
        self.inputs = InputLayer(input_size=num_features)
        self.rnn = self.config.build(num_features)
        self.head = nn.Linear(self.rnn.output_size, num_features)  # W_f, b_f

    def forward(self, x: Tensor, lengths: Tensor | list[int] | None = None) -> Tensor:
        x = self.inputs(x)
        lengths = prepare_lengths(lengths, x.size(0), x.size(1), x.device)
        outputs, _ = self.rnn(x, lengths=lengths)  # (B, T, O)
        return self.head(outputs)

    def forecast(self, history: Tensor, horizon: int, lengths: Tensor | list[int] | None = None) -> Tensor:
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {horizon!r}")
        x = self.inputs(history)
        B, T = x.shape[:2]
        lengths = prepare_lengths(lengths, B, T, x.device)
        outputs, state = self.rnn(x, lengths=lengths)  # state at each history's own end
        end = (lengths - 1) if lengths is not None else torch.full((B,), T - 1, dtype=torch.long, device=x.device)
        last = outputs.gather(1, end.view(B, 1, 1).expand(B, 1, outputs.size(2))).squeeze(1)  # (B, O)
        stepping = self.rnn.begin(B, state, like=x)
        pred = self.head(last)  # (B, F): x^_{T+1}
        preds = [pred]
        for _ in range(horizon - 1):
            y, stepping = self.rnn.step(pred, stepping)
            pred = self.head(y)
            preds.append(pred)
        return torch.stack(preds, dim=1)  # (B, horizon, F)
