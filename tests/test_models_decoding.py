"""Greedy, sampling and beam search on a hand-made step function, checked against brute force."""

from __future__ import annotations

import itertools

import pytest
import torch

from rnnkit.models.decoding import beam_search, greedy_search, length_penalty, sample_search

PAD, BOS, EOS = 0, 1, 2
V = 5


def table_model(batch: int, steps: int, seed: int = 0):
    """A fixed random 'model': logits depend on the sequence, the step and the previous token.
    State: (row id (N, 1), step (N, 1)), both batch-first so that beam search can reorder them."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(batch, steps + 1, V, V, generator=g) * 2.0  # [b, t, prev, next]

    def step(tok, state):
        row, t = state
        logits = table[row[:, 0], t[:, 0].clamp(max=steps), tok]  # (N, V)
        attn = torch.softmax(logits[:, :3], -1)  # a fake attention over 3 source steps
        return logits, (row, t + 1), attn

    def start(k: int = 1):
        rows = torch.arange(batch).repeat_interleave(k).unsqueeze(1)
        return (rows, torch.zeros_like(rows))

    return step, start, table


def ranked(table: torch.Tensor, b: int, max_len: int, alpha: float) -> list[tuple[float, list[int], float]]:
    """Every complete hypothesis (one that ends with EOS at any length <= max_len, or runs to
    max_len without one) as (normalised score, tokens, raw score), best first; ties keep
    enumeration order."""
    out = []
    for L in range(1, max_len + 1):
        for seq in itertools.product(range(V), repeat=L):
            if EOS in seq[:-1] or (L < max_len and seq[-1] != EOS):
                continue
            prev, raw = BOS, 0.0
            for t, tok in enumerate(seq):
                raw += float(torch.log_softmax(table[b, t, prev], -1)[tok])
                prev = tok
            out.append((raw / float(length_penalty(torch.tensor(L), alpha)), list(seq), raw))
    return sorted(out, key=lambda r: -r[0])


def brute_force(table: torch.Tensor, b: int, max_len: int, alpha: float) -> tuple[list[int], float]:
    """Best complete hypothesis by normalised score, enumerating every sequence."""
    _, best, raw = ranked(table, b, max_len, alpha)[0]
    return best, raw


@pytest.mark.parametrize("alpha", [0.0, 0.7, 2.0])
def test_wide_beam_is_exhaustive_search(alpha: float) -> None:
    B, max_len, K = 3, 3, 128  # K exceeds every set of distinct prefixes: nothing is pruned
    step, start, table = table_model(B, max_len, seed=1)
    out = beam_search(step, start(K), batch_size=B, beam_width=K, bos_id=BOS, eos_id=EOS, pad_id=PAD,
                      max_len=max_len, alpha=alpha)
    for b in range(B):
        want, raw = brute_force(table, b, max_len, alpha)
        L = int(out.lengths[b])
        assert out.tokens[b, :L].tolist() == want
        assert torch.all(out.tokens[b, L:] == PAD)
        assert float(out.scores[b]) == pytest.approx(raw, abs=1e-5)


def test_length_penalty_favours_longer_hypotheses() -> None:
    # the penalty changes the winner on at least one of these seeded problems
    changed = 0
    for seed in range(6):
        step, start, _ = table_model(4, 4, seed)
        kw = dict(batch_size=4, beam_width=8, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_len=4)
        plain = beam_search(step, start(8), alpha=0.0, **kw)
        long = beam_search(step, start(8), alpha=3.0, **kw)
        assert torch.all(long.lengths >= plain.lengths)
        changed += int((long.lengths > plain.lengths).sum())
    assert changed > 0
    assert float(length_penalty(torch.tensor(1), 1.0)) == pytest.approx(1.0)
    assert float(length_penalty(torch.tensor(7), 0.6)) == pytest.approx((12 / 6) ** 0.6)


def test_beam_width_one_equals_greedy() -> None:
    step, start, _ = table_model(6, 7, seed=3)
    kw = dict(batch_size=6, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_len=7)
    g = greedy_search(step, start(), **kw)
    b = beam_search(step, start(), beam_width=1, alpha=0.6, **kw)
    assert torch.equal(g.tokens, b.tokens) and torch.equal(g.lengths, b.lengths)
    torch.testing.assert_close(g.scores, b.scores)
    torch.testing.assert_close(g.attention, b.attention)


def test_greedy_conventions_after_eos() -> None:
    step, start, _ = table_model(8, 6, seed=4)
    g = greedy_search(step, start(), batch_size=8, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_len=6)
    for b in range(8):
        L = int(g.lengths[b])
        seq = g.tokens[b].tolist()
        assert EOS not in seq[: L - 1]
        assert L == 6 or seq[L - 1] == EOS
        assert all(t == PAD for t in seq[L:])
        assert torch.all(g.attention[b, L:] == 0) and torch.all(g.attention[b, :L].sum(-1) > 0.99)


def test_sampling_top_k_and_temperature() -> None:
    step, start, table = table_model(400, 1, seed=5)
    kw = dict(batch_size=400, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_len=1)
    gen = torch.Generator().manual_seed(0)
    s = sample_search(step, start(), top_k=2, generator=gen, **kw)
    top2 = table[:, 0, BOS].topk(2, -1).indices  # (400, 2)
    assert torch.all((s.tokens[:, :1] == top2).any(-1))
    cold = sample_search(step, start(), temperature=1e-4, generator=gen, **kw)
    assert torch.equal(cold.tokens[:, 0], table[:, 0, BOS].argmax(-1))
    hot = sample_search(step, start(), temperature=1.0, generator=gen, **kw)
    assert hot.tokens.unique().numel() == V  # full vocabulary reachable without top_k
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample_search(step, start(), temperature=0.0, **kw)
    with pytest.raises(ValueError, match="top_k must be"):
        sample_search(step, start(), top_k=-1, **kw)


def test_decoding_errors() -> None:
    step, start, _ = table_model(2, 3)
    with pytest.raises(ValueError, match="max_len must be a positive int"):
        greedy_search(step, start(), batch_size=2, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_len=0)
    with pytest.raises(ValueError, match=r"state\[0\] must have 6 rows"):
        beam_search(step, start(1), batch_size=2, beam_width=3, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_len=3)


def test_nbest_lists_every_hypothesis_best_first() -> None:
    # a beam wide enough to hold every complete hypothesis: its n-best list is the brute-force ranking
    B, max_len, K, alpha = 2, 3, 128, 0.7
    step, start, table = table_model(B, max_len, seed=5)
    kw = dict(batch_size=B, beam_width=K, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_len=max_len, alpha=alpha)
    best = beam_search(step, start(K), **kw)
    out = beam_search(step, start(K), nbest=True, **kw)
    assert out.tokens.shape[:2] == (B, K) and out.scores.shape == out.lengths.shape == (B, K)
    assert out.attention.shape[:3] == out.tokens.shape
    for b in range(B):
        for k, (_, seq, raw) in enumerate(ranked(table, b, max_len, alpha)[:6]):
            assert out.tokens[b, k, : int(out.lengths[b, k])].tolist() == seq
            assert float(out.scores[b, k]) == pytest.approx(raw, abs=1e-5)
        L = int(best.lengths[b])
        assert out.tokens[b, 0, :L].tolist() == best.tokens[b, :L].tolist()  # the first is beam search's pick
        torch.testing.assert_close(out.attention[b, 0, :L], best.attention[b, :L])
