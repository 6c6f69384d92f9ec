"""Linear-chain conditional random field over per-step tag scores.

Symbols: B batch, T steps, K tags; ``emissions (B, T, K)`` are the scores ``phi_t(y)`` a
network gives tag ``y`` at step ``t``; ``mask (B, T)`` bool marks each sequence's real steps, a
prefix of length ``L_b >= 1``. Parameters: ``start (K)``, ``transitions (K, K)`` (row = from,
column = to), ``end (K)``.

    score(y) = start[y_1] + sum_{t=1..L} phi_t(y_t) + sum_{t=2..L} transitions[y_{t-1}, y_t] + end[y_L]
    log Z    = log sum_y exp score(y)                       (the forward algorithm, in log space)
    log p(y | x) = score(y) - log Z
    y*       = argmax_y score(y)                            (Viterbi)

Forward recursion: ``alpha_1 = start + phi_1``, ``alpha_t[j] = logsumexp_i(alpha_{t-1}[i] +
transitions[i, j]) + phi_t[j]``, ``log Z = logsumexp(alpha_L + end)``; Viterbi replaces
logsumexp by max and keeps the argmax as back-pointers. At padded steps alpha is carried
unchanged and the back-pointer is the identity, so backtracking from the last column passes
through padding to each sequence's own end.

Lafferty, McCallum & Pereira, "Conditional random fields: probabilistic models for segmenting
and labeling sequence data", ICML 2001; for neural emissions, Lample et al., "Neural
architectures for named entity recognition", NAACL 2016.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LinearChainCRF", "crf_log_partition", "crf_score", "viterbi_decode"]


def crf_score(emissions: Tensor, tags: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor) -> Tensor:
    """``score(tags)`` for each sequence: ``(B,)``. Tags at padded steps are ignored (any value)."""
    tags = tags.masked_fill(~mask, 0)
    emit = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)  # (B, T): phi_t(y_t)
    trans = transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1): transitions[y_{t-1}, y_t]
    last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)  # (B,): y_L
    return (
        start[tags[:, 0]]
        + (emit * mask).sum(1)
        + (trans * mask[:, 1:]).sum(1)
        + end[last]
    )


def crf_log_partition(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor) -> Tensor:
    """``log Z`` by the forward algorithm in log space: ``(B,)``."""
    steps = emissions.unbind(1)  # T x (B, K)
    valid = mask.unsqueeze(-1).unbind(1)  # T x (B, 1)
    alpha = start + steps[0]  # (B, K)
    for phi, m in zip(steps[1:], valid[1:], strict=True):
        # (B, K_from, 1) + (K_from, K_to) -> logsumexp over K_from -> (B, K_to)
        nxt = torch.logsumexp(alpha.unsqueeze(2) + transitions, dim=1) + phi
        alpha = torch.where(m, nxt, alpha)
    return torch.logsumexp(alpha + end, dim=1)


def viterbi_decode(
    emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor, pad_tag: int = -1
) -> tuple[Tensor, Tensor]:
    """The best tag sequence and its score: ``(tags (B, T) long, pad_tag at padded steps;
    scores (B,))``."""
    B, T, K = emissions.shape
    identity = torch.arange(K, device=emissions.device).expand(B, K)
    delta = start + emissions[:, 0]  # (B, K): best score of a path ending in each tag
    pointers = []
    for t in range(1, T):
        cand = delta.unsqueeze(2) + transitions  # (B, K_from, K_to)
        best, arg = cand.max(dim=1)  # (B, K_to)
        m = mask[:, t].unsqueeze(1)  # (B, 1)
        delta = torch.where(m, best + emissions[:, t], delta)
        pointers.append(torch.where(m, arg, identity))
    scores, tag = (delta + end).max(dim=1)  # (B,)
    path = [tag]
    for arg in reversed(pointers):
        tag = arg.gather(1, tag.unsqueeze(1)).squeeze(1)
        path.append(tag)
    tags = torch.stack(path[::-1], dim=1)  # (B, T)
    return tags.masked_fill(~mask, pad_tag), scores


class LinearChainCRF(nn.Module):
    """A linear-chain CRF layer with learned start, transition and end scores.

    ``forward(emissions, tags, mask)`` is the log-likelihood ``log p(tags | x)`` per sequence
    ``(B,)`` (maximise it; the loss is its negative mean). :meth:`decode` is Viterbi. ``mask``
    may be None (no padding); otherwise it must be a prefix mask with ``mask[:, 0]`` all True.
    """

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags must be positive, got {num_tags}")
        self.num_tags = num_tags
        self.start = nn.Parameter(torch.empty(num_tags))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))  # [from, to]
        self.end = nn.Parameter(torch.empty(num_tags))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.start, self.transitions, self.end):
            nn.init.uniform_(p, -0.1, 0.1)

    def _check(self, emissions: Tensor, mask: Tensor | None, tags: Tensor | None = None) -> Tensor:
        if emissions.dim() != 3 or emissions.size(-1) != self.num_tags:
            raise ValueError(f"emissions must have shape (batch, time, {self.num_tags}), got {tuple(emissions.shape)}")
        B, T = emissions.shape[:2]
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=emissions.device)
        if mask.dtype != torch.bool or tuple(mask.shape) != (B, T):
            raise ValueError(f"mask must be a bool tensor of shape ({B}, {T}), got {mask.dtype} {tuple(mask.shape)}")
        if not bool(mask[:, 0].all()):
            raise ValueError("mask[:, 0] must be True: every sequence needs at least one step")
        if T > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
            raise ValueError("mask must be a prefix mask (True for the first L_b steps, then False)")
        if tags is not None:
            if tuple(tags.shape) != (B, T) or tags.is_floating_point():
                raise ValueError(
                    f"tags must be an integer tensor of shape ({B}, {T}), got {tags.dtype} {tuple(tags.shape)}"
                )
            real = tags[mask]
            if real.numel() and (int(real.min()) < 0 or int(real.max()) >= self.num_tags):
                raise ValueError(f"tags at unpadded steps must be in [0, {self.num_tags}), got [{int(real.min())}, "
                                 f"{int(real.max())}]")
        return mask

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = self._check(emissions, mask, tags)
        numerator = crf_score(emissions, tags, mask, self.start, self.transitions, self.end)
        return numerator - crf_log_partition(emissions, mask, self.start, self.transitions, self.end)

    def log_partition(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = self._check(emissions, mask)
        return crf_log_partition(emissions, mask, self.start, self.transitions, self.end)

    def score(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = self._check(emissions, mask, tags)
        return crf_score(emissions, tags, mask, self.start, self.transitions, self.end)

    def decode(self, emissions: Tensor, mask: Tensor | None = None, pad_tag: int = -1) -> tuple[Tensor, Tensor]:
        """Viterbi: ``(tags (B, T), best scores (B,))``; ``pad_tag`` at padded steps."""
        mask = self._check(emissions, mask)
        return viterbi_decode(emissions, mask, self.start, self.transitions, self.end, pad_tag)

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"
