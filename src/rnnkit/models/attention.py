"""Attention over a memory of encoder states, with padded positions masked out.

Symbols: B batch, T_q queries per sequence (1 when a decoder steps), S source (memory) steps,
Q query width, K key width, A attention width.

    additive (Bahdanau et al. 2015):  e_{t,s} = v^T tanh(W_q q_t + W_k k_s + b)
    dot      (Luong et al. 2015):     e_{t,s} = q_t . k_s                       (Q = K)
    general  (Luong et al. 2015):     e_{t,s} = q_t^T W_a k_s
    alpha_{t,s} = softmax_s(e_{t,s}) over the unmasked s;   c_t = sum_s alpha_{t,s} k_s

Bahdanau, Cho & Bengio, "Neural machine translation by jointly learning to align and translate",
ICLR 2015. Luong, Pham & Manning, "Effective approaches to attention-based neural machine
translation", EMNLP 2015. The memory's own projection (``W_k k`` or ``W_a k``) depends only on
the source, so :meth:`prepare` computes it once per source sequence and every decoder step
reuses it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ATTENTIONS", "AdditiveAttention", "Attention", "LuongAttention", "make_attention", "masked_softmax"]

ATTENTIONS = ("bahdanau", "dot", "general")


def masked_softmax(scores: Tensor, mask: Tensor | None, dim: int = -1) -> Tensor:
    """Softmax over ``dim`` where ``mask`` is False gets exactly zero weight.

    ``mask`` broadcasts against ``scores``; every row needs at least one True (sequences have
    length >= 1), else the row would be NaN.
    """
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=dim)


class Attention(nn.Module):
    """Base class: ``forward(query (B, T_q, Q), memory (B, S, K), mask (B, S), prepared=None)``
    returns ``(context (B, T_q, K), weights (B, T_q, S))``; ``prepared`` is :meth:`prepare`'s
    result for this memory (computed on the fly when omitted)."""

    query_size: int
    key_size: int

    def prepare(self, memory: Tensor) -> Tensor:
        return memory

    def scores(self, query: Tensor, memory: Tensor, prepared: Tensor) -> Tensor:  # (B, T_q, S)
        raise NotImplementedError

    def forward(
        self, query: Tensor, memory: Tensor, mask: Tensor | None = None, prepared: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        self._check(query, memory, mask)
        if prepared is None:
            prepared = self.prepare(memory)
        weights = masked_softmax(self.scores(query, memory, prepared), None if mask is None else mask.unsqueeze(1))
        context = torch.bmm(weights, memory)  # (B, T_q, S) @ (B, S, K) -> (B, T_q, K)
        return context, weights

    def _check(self, query: Tensor, memory: Tensor, mask: Tensor | None) -> None:
        name = type(self).__name__
        if query.dim() != 3 or query.size(-1) != self.query_size:
            raise ValueError(
                f"{name}: query must have shape (batch, queries, {self.query_size}), got {tuple(query.shape)}"
            )
        if memory.dim() != 3 or memory.size(-1) != self.key_size or memory.size(0) != query.size(0):
            raise ValueError(
                f"{name}: memory must have shape ({query.size(0)}, source steps, {self.key_size}), "
                f"got {tuple(memory.shape)}"
            )
        if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != tuple(memory.shape[:2])):
            raise ValueError(
                f"{name}: mask must be a bool tensor of shape {tuple(memory.shape[:2])}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )


class AdditiveAttention(Attention):
    """Bahdanau's additive (concat) attention: ``e = v^T tanh(W_q q + W_k k + b)``."""

    def __init__(self, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        self.query_size, self.key_size, self.attention_size = query_size, key_size, attention_size
        self.query_proj = nn.Linear(query_size, attention_size, bias=False)  # W_q
        self.key_proj = nn.Linear(key_size, attention_size)  # W_k, b
        self.v = nn.Linear(attention_size, 1, bias=False)  # v

    def prepare(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory)  # (B, S, A)

    def scores(self, query: Tensor, memory: Tensor, prepared: Tensor) -> Tensor:
        q = self.query_proj(query).unsqueeze(2)  # (B, T_q, 1, A)
        return self.v(torch.tanh(q + prepared.unsqueeze(1))).squeeze(-1)  # (B, T_q, S, A) -> (B, T_q, S)


class LuongAttention(Attention):
    """Luong's multiplicative attention: ``"dot"`` (``e = q . k``, needs Q = K) or ``"general"``
    (``e = q^T W_a k``)."""

    def __init__(self, query_size: int, key_size: int, score: str = "general") -> None:
        super().__init__()
        if score not in ("dot", "general"):
            raise ValueError(f"LuongAttention score must be 'dot' or 'general', got {score!r}")
        if score == "dot" and query_size != key_size:
            raise ValueError(
                f"dot attention needs query and key of the same width, got query_size={query_size}, "
                f"key_size={key_size}; use score='general'"
            )
        self.query_size, self.key_size, self.score = query_size, key_size, score
        self.weight = nn.Linear(key_size, query_size, bias=False) if score == "general" else None  # W_a

    def prepare(self, memory: Tensor) -> Tensor:
        return memory if self.weight is None else self.weight(memory)  # (B, S, Q)

    def scores(self, query: Tensor, memory: Tensor, prepared: Tensor) -> Tensor:
        return torch.bmm(query, prepared.transpose(1, 2))  # (B, T_q, Q) @ (B, Q, S) -> (B, T_q, S)

    def extra_repr(self) -> str:
        return f"{self.query_size}, {self.key_size}, score={self.score!r}"


def make_attention(kind: str, query_size: int, key_size: int, attention_size: int | None = None) -> Attention:
    """``"bahdanau"`` (additive, ``attention_size`` wide, default ``query_size``), ``"dot"`` or ``"general"``."""
    if kind == "bahdanau":
        return AdditiveAttention(query_size, key_size, attention_size or query_size)
    if kind in ("dot", "general"):
        return LuongAttention(query_size, key_size, kind)
    raise ValueError(f"attention must be one of {ATTENTIONS}, got {kind!r}")
