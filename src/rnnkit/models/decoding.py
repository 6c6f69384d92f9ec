"""Autoregressive decoding for any model that exposes one step: greedy, sampling, beam search.

A model hands over ``step_fn(tokens (N,), state) -> (logits (N, V), state, attention (N, S) or
None)`` and an initial ``state``: a tuple of tensors with the batch (N rows) on dim 0, so that
beam search can reorder every entry with ``index_select(0, ...)``. Each call costs one step of
the model, so decoding T tokens is O(T).

Symbols: B batch, K beam width, V vocabulary, S source steps, T generated steps.

Conventions shared by every function here: outputs start after ``bos_id``; a sequence ends with
``eos_id`` (which is kept and counted in its length) or at ``max_len`` tokens; positions after the
end hold ``pad_id`` and zero attention; ``scores`` is the sum of the model's log-probabilities
``log softmax(logits)`` of the emitted tokens (temperature and top-k change what is sampled, not
the reported score).

Beam search ranks hypotheses by the GNMT length-normalised score (Wu et al., "Google's neural
machine translation system", 2016, eq. 14, without the coverage term):

    s(Y) = log P(Y | X) / lp(Y),    lp(Y) = ((5 + |Y|) / 6) ** alpha

A finished hypothesis stays in the beam with its score frozen (its only continuation is
``pad_id`` at log-probability 0), so with K = 1 beam search is exactly greedy search, and with K
at least the number of distinct prefixes it is exhaustive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["Decoded", "StepFn", "beam_search", "greedy_search", "length_penalty", "sample_search"]

DecodeState = tuple[Tensor, ...]
StepFn = Callable[[Tensor, DecodeState], tuple[Tensor, DecodeState, Tensor | None]]


class Decoded(NamedTuple):
    """What every decoder returns.

    tokens ``(B, T)`` long, ``pad_id`` after each end; lengths ``(B,)`` tokens emitted including
    ``eos_id``; scores ``(B,)`` summed log-probabilities; attention ``(B, T, S)`` (zero rows after
    the end) or None for a model without attention.
    """

    tokens: Tensor
    lengths: Tensor
    scores: Tensor
    attention: Tensor | None


def length_penalty(lengths: Tensor, alpha: float) -> Tensor:
    """GNMT's ``lp = ((5 + |Y|) / 6) ** alpha`` (Wu et al. 2016); 1 when ``alpha == 0``."""
    return ((5.0 + lengths.to(torch.float32)) / 6.0) ** alpha


def _log_probs(logits: Tensor) -> Tensor:
    """``log softmax`` in at least float32 (half-precision logits are promoted, float64 kept)."""
    return torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)


def _check(max_len: int, batch_size: int, state: DecodeState, rows: int) -> None:
    if not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive int, got {max_len!r}")
    for k, s in enumerate(state):
        if s.size(0) != rows:
            raise ValueError(
                f"state[{k}] must have {rows} rows on dim 0 (batch_size={batch_size}), got {tuple(s.shape)}"
            )


def _rollout(
    step_fn: StepFn, state: DecodeState, choose: Callable[[Tensor], Tensor], *, batch_size: int, bos_id: int,
    eos_id: int, pad_id: int, max_len: int,
) -> Decoded:
    """One token per step for each sequence, picked by ``choose(logits (B, V)) -> (B,)``."""
    _check(max_len, batch_size, state, batch_size)
    device = state[0].device if state else None
    tok = torch.full((batch_size,), bos_id, dtype=torch.long, device=device)
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
    scores = torch.zeros(batch_size, device=device)
    tokens, attns = [], []
    for _ in range(max_len):
        logits, state, attn = step_fn(tok, state)
        logp = _log_probs(logits)  # (B, V)
        nxt = choose(logits)
        live = ~done
        scores = scores.to(logp.dtype) + torch.where(live, logp.gather(1, nxt.unsqueeze(1)).squeeze(1), 0.0)
        tok = torch.where(live, nxt, pad_id)
        lengths = lengths + live.long()
        tokens.append(tok)
        if attn is not None:
            attns.append(attn * live.unsqueeze(1))
        done = done | (tok == eos_id)
        if bool(done.all()):
            break
    attention = torch.stack(attns, dim=1) if attns else None  # (B, T, S)
    return Decoded(torch.stack(tokens, dim=1), lengths, scores, attention)


def greedy_search(
    step_fn: StepFn, state: DecodeState, *, batch_size: int, bos_id: int, eos_id: int, pad_id: int, max_len: int
) -> Decoded:
    """Take the most probable token at every step."""
    return _rollout(step_fn, state, lambda logits: logits.argmax(-1), batch_size=batch_size, bos_id=bos_id,
                    eos_id=eos_id, pad_id=pad_id, max_len=max_len)


def sample_search(
    step_fn: StepFn, state: DecodeState, *, batch_size: int, bos_id: int, eos_id: int, pad_id: int, max_len: int,
    temperature: float = 1.0, top_k: int = 0, generator: torch.Generator | None = None,
) -> Decoded:
    """Sample each token from ``softmax(logits / temperature)``, restricted to the ``top_k`` most
    probable tokens when ``top_k > 0`` (Fan et al., "Hierarchical neural story generation", 2018)."""
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0 (use greedy_search for argmax decoding), got {temperature}")
    if not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 = whole vocabulary), got {top_k!r}")

    def choose(logits: Tensor) -> Tensor:
        logits = logits.float() / temperature
        if 0 < top_k < logits.size(-1):
            kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return _rollout(step_fn, state, choose, batch_size=batch_size, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id,
                    max_len=max_len)


def beam_search(
    step_fn: StepFn, state: DecodeState, *, batch_size: int, beam_width: int, bos_id: int, eos_id: int, pad_id: int,
    max_len: int, alpha: float = 0.0, nbest: bool = False,
) -> Decoded:
    """Keep the ``beam_width`` best hypotheses per sequence under the GNMT score; return the best,
    or with ``nbest=True`` all ``K`` of them, best first: tokens ``(B, K, T)``, lengths and scores
    ``(B, K)``, attention ``(B, K, T, S)`` (for reranking by a second model).

    ``state`` must already hold ``batch_size * beam_width`` rows, sequence b's beams in rows
    ``b*K .. b*K + K-1`` (``repeat_interleave``); ``step_fn`` sees the same layout. ``alpha`` is the
    length-penalty exponent (0: plain log-probability; Wu et al. use 0.6 to 0.7).
    """
    B, K = batch_size, beam_width
    if not isinstance(K, int) or K < 1:
        raise ValueError(f"beam_width must be a positive int, got {beam_width!r}")
    if alpha < 0:
        raise ValueError(f"alpha (length penalty) must be >= 0, got {alpha}")
    _check(max_len, B, state, B * K)
    device = state[0].device if state else None
    tok = torch.full((B * K,), bos_id, dtype=torch.long, device=device)
    scores = torch.zeros(B, K, device=device)  # raw log P of each hypothesis
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    done = torch.zeros(B, K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B, K, dtype=torch.long, device=device)
    history = torch.zeros(B, K, 0, dtype=torch.long, device=device)  # (B, K, t)
    attn_history: Tensor | None = None  # (B, K, t, S)
    offsets = (torch.arange(B, device=device) * K).unsqueeze(1)  # (B, 1)
    for _ in range(max_len):
        logits, state, attn = step_fn(tok, state)
        V = logits.size(-1)
        logp = _log_probs(logits).view(B, K, V)
        scores = scores.to(logp.dtype)
        # a finished hypothesis continues only with pad_id, at no cost
        frozen = torch.full((V,), float("-inf"), device=logp.device, dtype=logp.dtype)
        frozen[pad_id] = 0.0
        logp = torch.where(done.unsqueeze(-1), frozen, logp)
        cand = scores.unsqueeze(-1) + logp  # (B, K, V)
        cand_len = (lengths + (~done).long()).unsqueeze(-1).expand(B, K, V)
        norm = cand / length_penalty(cand_len, alpha)
        _, idx = norm.reshape(B, K * V).topk(K, dim=1)  # (B, K) into the flattened (K, V)
        src, tok2 = idx // V, idx % V  # beam each winner extends, and its token
        scores = cand.reshape(B, K * V).gather(1, idx)
        lengths = cand_len.reshape(B, K * V).gather(1, idx)
        was_done = done.gather(1, src)
        done = was_done | (tok2 == eos_id)
        rows = (offsets + src).reshape(-1)  # (B*K,) rows of the previous beams
        state = tuple(s.index_select(0, rows) for s in state)
        history = torch.cat([history.gather(1, src.unsqueeze(-1).expand_as(history)), tok2.unsqueeze(-1)], dim=2)
        if attn is not None:
            a = (attn.index_select(0, rows) * (~was_done).reshape(-1, 1)).view(B, K, 1, -1)  # (B, K, 1, S)
            if attn_history is None:
                attn_history = a
            else:
                prev = attn_history.gather(1, src.view(B, K, 1, 1).expand_as(attn_history))
                attn_history = torch.cat([prev, a], dim=2)
        tok = tok2.reshape(-1)
        if bool(done.all()):
            break
    if nbest:
        order = (scores / length_penalty(lengths, alpha)).argsort(dim=1, descending=True, stable=True)  # (B, K)
        steps = int(lengths.max())
        tokens = history.gather(1, order.unsqueeze(-1).expand_as(history))[:, :, :steps]
        attention = None
        if attn_history is not None:
            attention = attn_history.gather(1, order[..., None, None].expand_as(attn_history))[:, :, :steps]
        return Decoded(tokens, lengths.gather(1, order), scores.gather(1, order), attention)
    best = (scores / length_penalty(lengths, alpha)).argmax(dim=1)  # (B,)
    pick = best.view(B, 1)
    out_len = lengths.gather(1, pick).squeeze(1)
    steps = int(out_len.max())  # drop trailing columns where every best hypothesis had ended
    tokens = history.gather(1, pick.unsqueeze(-1).expand(B, 1, history.size(2))).squeeze(1)[:, :steps]
    attention = None
    if attn_history is not None:
        attention = attn_history[torch.arange(B, device=device), best][:, :steps]  # (B, T, S)
    return Decoded(tokens, out_len, scores.gather(1, pick).squeeze(1), attention)
