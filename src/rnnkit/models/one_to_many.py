"""One-to-many: a conditioning vector to a sequence of tokens.

Symbols: B batch, C conditioning width, T steps, E embedding width, O the recurrent output width,
V vocabulary, L layers.

    s_0 = tanh(W_c c + b_c)                    split into every layer's state entries
    o_t, s_t = Recurrent(Embed(y_{t-1}), s_{t-1})        (y_0 = bos_id)
    p(y_t | y_<t, c) = softmax(W_o o_t + b_o)

as in image captioning (Vinyals et al., "Show and tell", 2015, where c is the image's CNN
features) and conditional generation (Graves 2013; Sutskever et al. 2014). ``c`` is a float
vector ``(B, C)`` (image features, a style) or, with ``num_conditions``, an id ``(B,)`` (a class,
a seed token) looked up in a ``(num_conditions, C)`` table. Training uses teacher forcing: one
whole-sequence :class:`rnnkit.Recurrent` call on the true previous tokens. Generation steps the
cells one token at a time (greedy, temperature and top-k sampling, or beam search) until
``eos_id`` or ``max_len``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.models._common import check_tokens, require_unidirectional, stacked_state
from rnnkit.models.config import RecurrentConfig, as_config
from rnnkit.models.decoding import Decoded, DecodeState, beam_search, greedy_search, sample_search

__all__ = ["Generator"]


class Generator(nn.Module):
    """Conditioned sequence generator.

    * ``forward(cond, tgt) -> logits (B, T, V)`` predicting ``tgt`` (ending with ``eos_id``,
      padded with ``pad_id``) with teacher forcing.
    * ``stream(cond, tokens, state=None) -> (logits, state)``: a window of a long stream, from
      the state the previous window ended in (truncated BPTT).
    * ``generate(cond, max_len, strategy="greedy" | "sample" | "beam", temperature, top_k,
      beam_width, length_penalty, generator) -> Decoded`` (its ``attention`` is None).

    ``config`` must be unidirectional (any cell, any number of layers).
    """

    def __init__(
        self, vocab_size: int, cond_size: int, config: RecurrentConfig | dict | None = None, *,
        embedding_dim: int = 32, num_conditions: int = 0, bos_id: int = 1, eos_id: int = 2, pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.config = as_config(config)
        require_unidirectional(self.config, "Generator")
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
            if not 0 <= value < vocab_size:
                raise ValueError(f"{name}={value} is not a token id (vocab_size={vocab_size})")
        self.vocab_size, self.cond_size, self.num_conditions = vocab_size, cond_size, num_conditions
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.cond_table = nn.Embedding(num_conditions, cond_size) if num_conditions else None
        self.embed = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.rnn = self.config.build(embedding_dim)
        cell = self.rnn.cells[0]
        self._entries = len(cell.state_sizes)
        self._splits = [s for _ in range(self.config.num_layers) for s in cell.state_sizes]
        self.init = nn.Linear(cond_size, sum(self._splits))  # W_c, b_c
        self.out = nn.Linear(self.rnn.output_size, vocab_size)  # W_o, b_o

    def initial_state(self, cond: Tensor) -> DecodeState:
        """``s_0`` as a flat tuple of ``L * K`` tensors ``(B, S_k)``."""
        if self.cond_table is not None:
            c = self.cond_table(check_tokens(cond, self.num_conditions, "cond", dims=1))  # (B, C)
        else:
            if not isinstance(cond, Tensor) or cond.dim() != 2 or cond.size(1) != self.cond_size:
                shape = tuple(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
                raise ValueError(f"cond must have shape (batch, {self.cond_size}), got {shape}")
            c = cond
        return tuple(torch.tanh(self.init(c)).split(self._splits, dim=1))

    def forward(self, cond: Tensor, tgt: Tensor) -> Tensor:
        check_tokens(tgt, self.vocab_size, "tgt")
        state = self.initial_state(cond)
        if tgt.size(0) != state[0].size(0):
            raise ValueError(f"tgt has batch size {tgt.size(0)} but cond has {state[0].size(0)}")
        inputs = torch.cat([tgt.new_full((tgt.size(0), 1), self.bos_id), tgt[:, :-1]], dim=1)  # (B, T): y_{t-1}
        outputs, _ = self.rnn(self.embed(inputs), stacked_state(state, self._entries))  # (B, T, O)
        return self.out(outputs)

    def stream(self, cond: Tensor, tokens: Tensor, state: tuple | None = None) -> tuple[Tensor, tuple]:
        """Continue a long text: ``tokens (B, T)`` are the inputs themselves (no ``bos`` in front),
        run from ``state`` (the stacked recurrent state a previous call returned) or, when None,
        from ``s_0`` of ``cond``. Returns ``(logits (B, T, V) predicting each next token, state)``,
        for truncated backpropagation through time over a stream cut into windows (detach the
        state between windows)."""
        check_tokens(tokens, self.vocab_size, "tokens")
        if state is None:
            flat = self.initial_state(cond)
            if tokens.size(0) != flat[0].size(0):
                raise ValueError(f"tokens has batch size {tokens.size(0)} but cond has {flat[0].size(0)}")
            state = stacked_state(flat, self._entries)
        outputs, state = self.rnn(self.embed(tokens), state)  # (B, T, O)
        return self.out(outputs), state

    def _step(self, tok: Tensor, state: DecodeState) -> tuple[Tensor, DecodeState, None]:
        y, stepping = self.rnn.step(self.embed(tok), state[0])  # state: (StepState,)
        return self.out(y), (stepping,), None

    def _stepping(self, flat: DecodeState) -> DecodeState:
        """The flat ``s_0`` as a decoding state: one :class:`~rnnkit.layers.engine.StepState`
        (the stacked state and the sequence's noise, drawn now)."""
        return (self.rnn.begin(flat[0].size(0), stacked_state(flat, self._entries), like=flat[0]),)

    @torch.no_grad()
    def generate(
        self, cond: Tensor, max_len: int = 50, *, strategy: str = "greedy", temperature: float = 1.0, top_k: int = 0,
        beam_width: int = 4, length_penalty: float = 0.0, generator: torch.Generator | None = None,
    ) -> Decoded:
        """Generate up to ``max_len`` tokens per condition; see :mod:`rnnkit.models.decoding`."""
        state = self.initial_state(cond)
        ids = dict(bos_id=self.bos_id, eos_id=self.eos_id, pad_id=self.pad_id, max_len=max_len)
        B = state[0].size(0)
        if strategy == "greedy":
            return greedy_search(self._step, self._stepping(state), batch_size=B, **ids)
        if strategy == "sample":
            return sample_search(self._step, self._stepping(state), batch_size=B, temperature=temperature,
                                 top_k=top_k, generator=generator, **ids)
        if strategy == "beam":
            if not isinstance(beam_width, int) or beam_width < 1:
                raise ValueError(f"beam_width must be a positive int, got {beam_width!r}")
            state = self._stepping(tuple(s.repeat_interleave(beam_width, 0) for s in state))
            return beam_search(self._step, state, batch_size=B, beam_width=beam_width, alpha=length_penalty, **ids)
        raise ValueError(f"strategy must be 'greedy', 'sample' or 'beam', got {strategy!r}")
