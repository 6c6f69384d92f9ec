"""Many-to-many with unequal lengths: an encoder-decoder with attention.

Symbols: B batch, S source steps, T target steps, V target vocabulary, E embedding width, M the
encoder's output width (memory), O the decoder's output width, L decoder layers.

Encoder (Sutskever et al. 2014, bidirectional as in Bahdanau et al. 2015): ``m_{1..S}, h_enc =
Encoder(Embed(x))``; padded source steps are masked out of every attention. Bridge: the decoder's
initial state (and initial attention query) is ``tanh(W_b [h_enc of the last layer, every
direction and state entry] + b_b)`` (Bahdanau et al.'s ``s_0 = tanh(W_s h_1)``, generalised to
any cell). Decoder step t, from the previous token ``y_{t-1}`` (``bos_id`` at t = 1):

    "bahdanau":  c_t, a_t = Attn(q_{t-1}, m);   q_t, s_t = Dec([Embed(y_{t-1}); c_t], s_{t-1})
                 logits_t = W_o [q_t; c_t]                         (q_0 comes from the bridge)
    "dot"/"general" (Luong et al. 2015):
                 q_t, s_t = Dec(Embed(y_{t-1}) [; h~_{t-1} with input_feeding], s_{t-1})
                 c_t, a_t = Attn(q_t, m);   h~_t = tanh(W_c [c_t; q_t]);   logits_t = W_o h~_t

Deviation: Bahdanau's deep output with maxout is a single linear layer here. In training,
``forward`` feeds the true previous token with probability ``teacher_forcing`` per sequence and
step (Williams & Zipser 1989; scheduled sampling, Bengio et al. 2015), else the model's own
argmax. With Luong attention, no input feeding and full teacher forcing the decoder runs as one
whole-sequence :class:`rnnkit.Recurrent` call (its fast scan) instead of step by step; a test
checks the two agree.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.models._common import (
    InputLayer,
    check_tokens,
    length_mask,
    prepare_lengths,
    require_unidirectional,
    stacked_state,
)
from rnnkit.models.attention import ATTENTIONS, make_attention
from rnnkit.models.config import RecurrentConfig, as_config
from rnnkit.models.decoding import Decoded, DecodeState, beam_search, greedy_search

__all__ = ["LexicalSeq2Seq", "PointerGenerator", "Seq2Seq"]


class Seq2Seq(nn.Module):
    """Encoder-decoder with Bahdanau (additive) or Luong (dot/general) attention.

    Args:
        src_vocab_size, tgt_vocab_size: vocabularies of source and target token ids.
        encoder, decoder: :class:`RecurrentConfig` (the encoder may be bidirectional; the decoder
            may not). Any registered cell, and different cells for the two.
        attention: ``"bahdanau"``, ``"dot"`` (needs decoder output width = memory width) or
            ``"general"``.
        embedding_dim: E, for both vocabularies; attention_size: A of additive attention
            (default O); input_feeding: Luong's feeding of ``h~_{t-1}`` into the next step.
        bos_id, eos_id, pad_id: target ids that start, end and pad a sequence.
        dropout: in training, dropout on the source and target embeddings and on what the output
            layer reads (``h~`` with Luong attention; Zaremba et al. 2014 apply it to
            non-recurrent connections only). Between stacked layers it is ``RecurrentConfig.dropout``.

    ``forward(src (B, S), tgt (B, T), src_lengths (B,) | None, teacher_forcing=1.0)`` returns the
    logits ``(B, T, V)`` predicting ``tgt`` (which should end with ``eos_id``, padded with
    ``pad_id``); :meth:`greedy` and :meth:`beam_search` return :class:`Decoded` with attention
    ``(B, T_out, S)`` for plotting.
    """

    def __init__(
        self, src_vocab_size: int, tgt_vocab_size: int, encoder: RecurrentConfig | dict | None = None,
        decoder: RecurrentConfig | dict | None = None, *, attention: str = "bahdanau", embedding_dim: int = 64,
        attention_size: int | None = None, input_feeding: bool = False, bos_id: int = 1, eos_id: int = 2,
        pad_id: int = 0, dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        enc_cfg, dec_cfg = as_config(encoder, "encoder"), as_config(decoder, "decoder")
        require_unidirectional(dec_cfg, "the Seq2Seq decoder")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
            if not 0 <= value < tgt_vocab_size:
                raise ValueError(f"{name}={value} is not a target token id (tgt_vocab_size={tgt_vocab_size})")
        if not 0 <= pad_id < src_vocab_size:
            raise ValueError(f"pad_id={pad_id} is not a source token id (src_vocab_size={src_vocab_size})")
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.attention_kind, self.input_feeding = attention, input_feeding
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.luong = attention != "bahdanau"

        self.src_embed = InputLayer(vocab_size=src_vocab_size, embedding_dim=embedding_dim, padding_idx=pad_id)
        self.drop = nn.Dropout(dropout)
        self.encoder = enc_cfg.build(embedding_dim)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, embedding_dim, padding_idx=pad_id)
        memory_size = self.encoder.output_size  # M
        out_size = dec_cfg.output_size()  # O
        if self.luong:
            dec_in = embedding_dim + (out_size if input_feeding else 0)
        else:
            dec_in = embedding_dim + memory_size
        self.decoder = dec_cfg.build(dec_in)
        self.attention = make_attention(attention, out_size, memory_size, attention_size)
        if self.luong:
            self.combine = nn.Linear(memory_size + out_size, out_size)  # W_c
            self.out = nn.Linear(out_size, tgt_vocab_size)  # W_o
        else:
            self.combine = None
            self.out = nn.Linear(out_size + memory_size, tgt_vocab_size)
        self.out_size, self.memory_size = out_size, memory_size

        enc_cell, dec_cell = self.encoder.cells[0], self.decoder.cells[0]
        self._dec_entries = len(dec_cell.state_sizes)
        bridge_in = enc_cfg.directions * sum(enc_cell.state_sizes)
        self._dec_splits = [s for _ in range(dec_cfg.num_layers) for s in dec_cell.state_sizes]
        if not self.luong:
            self._dec_splits.append(out_size)  # q_0, the first attention query
        self.bridge = nn.Linear(bridge_in, sum(self._dec_splits))  # W_b, b_b

    # -- encoder ---------------------------------------------------------------------------------
    def encode(self, src: Tensor, src_lengths: Tensor | list[int] | None = None) -> tuple[Tensor, Tensor, DecodeState]:
        """``(memory (B, S, M), mask (B, S), initial decoder state)``."""
        check_tokens(src, self.src_vocab_size, "src")
        B, S = src.shape
        lengths = prepare_lengths(src_lengths, B, S, src.device)
        memory, h_enc = self.encoder(self.drop(self.src_embed(src)), lengths=lengths)  # (B, S, M)
        mask = length_mask(lengths, B, S, src.device)
        D = self.encoder.directions
        parts = (h_enc,) if isinstance(h_enc, Tensor) else h_enc  # each (L_enc * D, B, S_k)
        top = torch.cat([p[-D:].transpose(0, 1).reshape(B, -1) for p in parts], dim=1)  # (B, D * sum S_k)
        init = torch.tanh(self.bridge(top)).split(self._dec_splits, dim=1)
        if self.luong:  # h~_0 = 0 (read only with input feeding)
            prev, flat = top.new_zeros(B, self.out_size), init
        else:
            prev, flat = init[-1], init[:-1]
        # (q_0 (B, O), the decoder's stepping state: stacked state and this sequence's noise)
        return memory, mask, (prev, self.decoder.begin(B, stacked_state(flat, self._dec_entries), like=top))

    # -- one decoder step ------------------------------------------------------------------------
    def _step(self, tok: Tensor, state: DecodeState, memory: Tensor, mask: Tensor, prepared: Tensor):
        """``tok (N,)``, ``state = (q or h~ (N, O), decoder StepState)`` -> logits, state, attention."""
        prev, rnn_state = state
        emb = self.drop(self.tgt_embed(tok))  # (N, E)
        if self.luong:
            x = torch.cat([emb, prev], dim=1) if self.input_feeding else emb
            y, rnn_state = self.decoder.step(x, rnn_state)  # (N, O)
            ctx, a = self.attention(y.unsqueeze(1), memory, mask, prepared)  # (N, 1, M), (N, 1, S)
            h_tilde = torch.tanh(self.combine(torch.cat([ctx.squeeze(1), y], dim=1)))  # (N, O)
            return self.out(self.drop(h_tilde)), (h_tilde, rnn_state), a.squeeze(1)
        ctx, a = self.attention(prev.unsqueeze(1), memory, mask, prepared)
        ctx = ctx.squeeze(1)  # (N, M)
        y, rnn_state = self.decoder.step(torch.cat([emb, ctx], dim=1), rnn_state)
        return self.out(self.drop(torch.cat([y, ctx], dim=1))), (y, rnn_state), a.squeeze(1)

    def _step_fn(self, memory: Tensor, mask: Tensor):
        prepared = self.attention.prepare(memory)
        return lambda tok, state: self._step(tok, state, memory, mask, prepared)

    # -- training --------------------------------------------------------------------------------
    def forward(
        self, src: Tensor, tgt: Tensor, src_lengths: Tensor | list[int] | None = None, teacher_forcing: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        check_tokens(tgt, self.tgt_vocab_size, "tgt")
        if tgt.size(0) != src.size(0):
            raise ValueError(f"tgt has batch size {tgt.size(0)} but src has {src.size(0)}")
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing must be in [0, 1], got {teacher_forcing}")
        memory, mask, state = self.encode(src, src_lengths)
        B, T = tgt.shape
        inputs = torch.cat([tgt.new_full((B, 1), self.bos_id), tgt[:, :-1]], dim=1)  # (B, T): y_{t-1}
        if self.luong and not self.input_feeding and teacher_forcing == 1.0:
            return self._forward_whole(inputs, memory, mask, state)
        step = self._step_fn(memory, mask)
        logits = []
        tok = inputs[:, 0]
        for t in range(T):
            lg, state, _ = step(tok, state)
            logits.append(lg)
            if t + 1 < T:
                tok = inputs[:, t + 1]
                if teacher_forcing < 1.0:
                    own = lg.detach().argmax(-1)
                    keep = torch.rand(B, device=tgt.device, generator=generator) < teacher_forcing
                    tok = torch.where(keep, tok, own)
        return torch.stack(logits, dim=1)  # (B, T, V)

    def _decode_whole(self, inputs: Tensor, memory: Tensor, mask: Tensor, state: DecodeState):
        """Teacher-forced Luong decoding without input feeding: every step's input is known, so
        the decoder runs once over the whole target and attention is one batched product.
        ``(h~ (B, T, O), context (B, T, M), attention (B, T, S), input embeddings (B, T, E))``."""
        init = state[1].state  # the stacked initial decoder state
        emb = self.drop(self.tgt_embed(inputs))
        ys, _ = self.decoder(emb, init[0] if len(init) == 1 else init)  # (B, T, O)
        ctx, a = self.attention(ys, memory, mask)  # (B, T, M), (B, T, S)
        return torch.tanh(self.combine(torch.cat([ctx, ys], dim=-1))), ctx, a, emb

    def _forward_whole(self, inputs: Tensor, memory: Tensor, mask: Tensor, state: DecodeState) -> Tensor:
        return self.out(self.drop(self._decode_whole(inputs, memory, mask, state)[0]))  # (B, T, V)

    # -- inference -------------------------------------------------------------------------------
    @torch.no_grad()
    def greedy(self, src: Tensor, src_lengths: Tensor | list[int] | None = None, max_len: int = 50) -> Decoded:
        """Greedy decoding: tokens ``(B, T_out)``, lengths, scores and attention ``(B, T_out, S)``."""
        memory, mask, state = self.encode(src, src_lengths)
        return greedy_search(self._step_fn(memory, mask), state, batch_size=src.size(0), bos_id=self.bos_id,
                             eos_id=self.eos_id, pad_id=self.pad_id, max_len=max_len)

    @torch.no_grad()
    def beam_search(
        self, src: Tensor, src_lengths: Tensor | list[int] | None = None, beam_width: int = 4, max_len: int = 50,
        length_penalty: float = 0.0, nbest: bool = False,
    ) -> Decoded:
        """Beam search with the GNMT length penalty exponent ``length_penalty`` (alpha); the best
        hypothesis per sequence, with its attention ``(B, T_out, S)``. ``beam_width=1`` is greedy.
        ``nbest=True``: all ``beam_width`` hypotheses, best first (``(B, K, T_out)`` tokens, ``(B, K)``
        scores; see :func:`rnnkit.models.decoding.beam_search`)."""
        K = beam_width
        if not isinstance(K, int) or K < 1:
            raise ValueError(f"beam_width must be a positive int, got {beam_width!r}")
        memory, mask, state = self.encode(src, src_lengths)
        memory, mask = memory.repeat_interleave(K, 0), mask.repeat_interleave(K, 0)  # (B*K, S, M), (B*K, S)
        state = tuple(s.repeat_interleave(K, 0) for s in state)
        return beam_search(self._step_fn(memory, mask), state, batch_size=src.size(0), beam_width=K,
                           bos_id=self.bos_id, eos_id=self.eos_id, pad_id=self.pad_id, max_len=max_len,
                           alpha=length_penalty, nbest=nbest)

    def extra_repr(self) -> str:
        ids = f"bos_id={self.bos_id}, eos_id={self.eos_id}, pad_id={self.pad_id}"
        return f"attention={self.attention_kind!r}, input_feeding={self.input_feeding}, {ids}"


class LexicalSeq2Seq(Seq2Seq):
    """:class:`Seq2Seq` whose output is biased by a discrete translation lexicon, through attention
    (Arthur, Neubig & Nakamura, "Incorporating discrete translation lexicons into neural machine
    translation", EMNLP 2016, the "bias" method):

        p_lex,t(v) = sum_j a_t(j) * lex(v | x_j);   logits_t += log(p_lex,t + eps)

    ``lexicon_ids (V_src, K)`` and ``lexicon_probs (V_src, K)`` list, for every source token, the
    ``K`` target tokens it most probably translates to and their probabilities (from IBM Model 1,
    say; zero-probability entries are padding). A freshly initialised model then already puts its
    mass on the attended words' translations, which is what makes it learn from a small parallel
    corpus in minutes instead of hours. Beyond the base class, nothing changes: the source
    positions' lexicon entries ride along as the last ``2K`` channels of the memory that
    :meth:`encode` returns, so beam search (which repeats the memory per beam) and the ONNX step
    graph carry them without knowing.
    """

    def __init__(self, *args, lexicon_ids: Tensor, lexicon_probs: Tensor, eps: float = 1e-3, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if lexicon_ids.shape != lexicon_probs.shape or lexicon_ids.dim() != 2:
            raise ValueError(f"lexicon_ids {tuple(lexicon_ids.shape)} and lexicon_probs {tuple(lexicon_probs.shape)} "
                             f"must both be (src_vocab_size, K)")
        if lexicon_ids.size(0) != self.src_vocab_size:
            raise ValueError(f"the lexicon has {lexicon_ids.size(0)} rows, src_vocab_size is {self.src_vocab_size}")
        if lexicon_ids.numel() and not (0 <= int(lexicon_ids.min()) and int(lexicon_ids.max()) < self.tgt_vocab_size):
            raise ValueError(f"lexicon_ids must be target token ids in [0, {self.tgt_vocab_size})")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.register_buffer("lexicon_ids", lexicon_ids.long(), persistent=False)
        self.register_buffer("lexicon_probs", lexicon_probs.float(), persistent=False)
        self.lexicon_k, self.eps = lexicon_ids.size(1), eps

    def encode(self, src: Tensor, src_lengths: Tensor | list[int] | None = None) -> tuple[Tensor, Tensor, DecodeState]:
        """As :meth:`Seq2Seq.encode`, with memory ``(B, S, M + 2K)``: each step's ``K`` lexicon
        target ids (as floats; exact below 2**24) and their probabilities."""
        memory, mask, state = super().encode(src, src_lengths)
        lex = torch.cat([self.lexicon_ids[src].to(memory.dtype), self.lexicon_probs[src].to(memory.dtype)], dim=-1)
        return torch.cat([memory, lex], dim=-1), mask, state

    def _split(self, memory: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        M, K = self.memory_size, self.lexicon_k
        return memory[..., :M], memory[..., M : M + K].long(), memory[..., M + K :]

    def _lexical_bias(self, attention: Tensor, ids: Tensor, probs: Tensor) -> Tensor:
        """``log(p_lex + eps)`` ``(B, T, V)`` from attention ``(B, T, S)``, ids and probs ``(B, S, K)``."""
        B, T, S = attention.shape
        weights = (attention.unsqueeze(-1) * probs.unsqueeze(1)).reshape(B, T, S * self.lexicon_k)
        index = ids.reshape(B, 1, S * self.lexicon_k).expand(B, T, S * self.lexicon_k)
        p_lex = attention.new_zeros(B, T, self.tgt_vocab_size).scatter_add(2, index, weights)
        return torch.log(p_lex + self.eps)

    def _step_fn(self, memory: Tensor, mask: Tensor):
        memory, ids, probs = self._split(memory)
        prepared = self.attention.prepare(memory)

        def step(tok: Tensor, state: DecodeState):
            logits, state, a = self._step(tok, state, memory, mask, prepared)
            return logits + self._lexical_bias(a.unsqueeze(1), ids, probs).squeeze(1), state, a

        return step

    def _forward_whole(self, inputs: Tensor, memory: Tensor, mask: Tensor, state: DecodeState) -> Tensor:
        memory, ids, probs = self._split(memory)
        h_tilde, _, a, _ = self._decode_whole(inputs, memory, mask, state)
        return self.out(h_tilde) + self._lexical_bias(a, ids, probs)


class PointerGenerator(Seq2Seq):
    """:class:`Seq2Seq` that can copy source tokens, including ones outside its vocabulary: the
    pointer-generator of See, Liu & Manning, "Get To The Point: Summarization with Pointer-Generator
    Networks", ACL 2017, eqs. (8)-(9). At decoder step t, with attention ``a_t`` over the source,
    context ``c_t = sum_j a_t(j) m_j``, decoder output ``q_t`` and input embedding ``e_t``::

        p_gen = sigmoid(w_c . c_t + w_q . q_t + w_e . e_t + b)
        P(w)  = p_gen * softmax(logits_t)(w) + (1 - p_gen) * sum_{j: x_j = w} a_t(j)

    Source and target share one vocabulary of ``vocab_size`` ids, extended by ``extra`` ids
    ``vocab_size .. vocab_size + extra - 1``: the caller numbers each example's out-of-vocabulary
    source words with them (the first new word ``vocab_size``, and so on), in ``src`` and in ``tgt``.
    The embeddings read an extended id as ``unk_id``; the output distribution covers all
    ``vocab_size + extra`` ids, so a copied word comes out under its extended id.

    ``forward`` and the decoder steps return log-probabilities ``(B, T, vocab_size + extra)`` in
    place of logits (decoding's log-softmax leaves them as they are, and cross-entropy on them is the
    negative log-likelihood). The source ids ride along as the last channel of the memory that
    :meth:`encode` returns, so beam search and the step graph carry them without knowing.
    Deviation: no coverage mechanism (the paper's section 2.3).
    """

    def __init__(self, vocab_size: int, *args, extra: int = 0, unk_id: int = 3, **kwargs) -> None:
        super().__init__(vocab_size, vocab_size, *args, **kwargs)
        if isinstance(extra, bool) or not isinstance(extra, int) or extra < 0:
            raise ValueError(f"extra must be an int >= 0 (ids for out-of-vocabulary source words), got {extra!r}")
        if not 0 <= unk_id < vocab_size:
            raise ValueError(f"unk_id={unk_id} is not a token id (vocab_size={vocab_size})")
        self.extra, self.unk_id, self.extended_size = extra, unk_id, vocab_size + extra
        # q_t is h~_t with Luong attention, the decoder's output with Bahdanau's: O wide either way
        self.switch = nn.Linear(self.memory_size + self.out_size + self.tgt_embed.embedding_dim, 1)  # w_c, w_q, w_e, b

    def _in_vocab(self, ids: Tensor) -> Tensor:
        return ids.masked_fill(ids >= self.tgt_vocab_size, self.unk_id)

    def encode(self, src: Tensor, src_lengths: Tensor | list[int] | None = None) -> tuple[Tensor, Tensor, DecodeState]:
        """As :meth:`Seq2Seq.encode` for ``src`` in the extended vocabulary; memory ``(B, S, M + 1)``,
        its last channel each step's id (as a float; exact below 2**24)."""
        check_tokens(src, self.extended_size, "src")
        memory, mask, state = super().encode(self._in_vocab(src), src_lengths)
        return torch.cat([memory, src.to(memory.dtype).unsqueeze(-1)], dim=-1), mask, state

    def _mix(self, logits: Tensor, attention: Tensor, ctx: Tensor, query: Tensor, emb: Tensor, ids: Tensor) -> Tensor:
        """log P ``(..., V + X)`` from logits ``(..., V)``, attention ``(..., S)``, ``ctx``, ``query``,
        ``emb`` and the source ids ``(B, S)`` (the leading dims are ``(B,)`` or ``(B, T)``)."""
        p_gen = torch.sigmoid(self.switch(torch.cat([ctx, query, emb], dim=-1)))  # (..., 1)
        vocab = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
        vocab = torch.nn.functional.pad(vocab, (0, self.extra))  # (..., V + X)
        index = ids if attention.dim() == 2 else ids.unsqueeze(1).expand(-1, attention.size(1), -1)
        copy = vocab.new_zeros(vocab.shape).scatter_add(-1, index, attention.to(vocab.dtype))
        return torch.log((p_gen * vocab + (1 - p_gen) * copy).clamp_min(1e-12))

    def _step_fn(self, memory: Tensor, mask: Tensor):
        ids = memory[..., -1].long()
        memory = memory[..., :-1]
        prepared = self.attention.prepare(memory)

        def step(tok: Tensor, state: DecodeState):
            tok = self._in_vocab(tok)
            logits, state, a = self._step(tok, state, memory, mask, prepared)
            ctx = torch.bmm(a.unsqueeze(1), memory).squeeze(1)  # (N, M)
            return self._mix(logits, a, ctx, state[0], self.tgt_embed(tok), ids), state, a

        return step

    def _forward_whole(self, inputs: Tensor, memory: Tensor, mask: Tensor, state: DecodeState) -> Tensor:
        ids = memory[..., -1].long()
        h_tilde, ctx, a, emb = self._decode_whole(inputs, memory[..., :-1], mask, state)
        return self._mix(self.out(h_tilde), a, ctx, h_tilde, emb, ids)

    def forward(
        self, src: Tensor, tgt: Tensor, src_lengths: Tensor | list[int] | None = None, teacher_forcing: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Log-probabilities ``(B, T, vocab_size + extra)`` predicting ``tgt`` (extended ids allowed)."""
        check_tokens(tgt, self.extended_size, "tgt")
        return super().forward(src, self._in_vocab(tgt), src_lengths, teacher_forcing, generator)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, extra={self.extra}, unk_id={self.unk_id}"
