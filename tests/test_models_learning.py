"""Small learning tests: each topology must actually learn its task (seeded, CPU, well under a
minute each). Thresholds are the issue's; the figures reached are in the comments."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from rnnkit.models import (
    Forecaster,
    Generator,
    RecurrentConfig,
    Seq2Seq,
    SequenceClassifier,
    SequenceRegressor,
    SequenceTagger,
)

pytestmark = pytest.mark.slow
PAD, BOS, EOS, DIGIT0 = 0, 1, 2, 3  # digit d is token d + DIGIT0


def fit(model: torch.nn.Module, steps: int, loss_fn, lr: float = 1e-2) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()


# -- many-to-many, unequal lengths: reverse / sort digit strings -----------------------------------
def digit_batch(strings: list[tuple[int, ...]], task: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """src (B, S) padded digits, tgt (B, S + 1) the transformed digits then EOS, lengths (B,)."""
    S = max(map(len, strings))
    src, tgt = torch.full((len(strings), S), PAD), torch.full((len(strings), S + 1), PAD)
    for i, s in enumerate(strings):
        out = tuple(reversed(s)) if task == "reverse" else tuple(sorted(s))
        src[i, : len(s)] = torch.tensor(s) + DIGIT0
        tgt[i, : len(s)] = torch.tensor(out) + DIGIT0
        tgt[i, len(s)] = EOS
    return src, tgt, torch.tensor([len(s) for s in strings])


def exact_match(tokens: torch.Tensor, tgt: torch.Tensor) -> float:
    """A hypothesis matches when it equals the target up to and including EOS."""
    hits = 0
    for hyp, ref in zip(tokens.tolist(), tgt.tolist(), strict=True):
        ref = ref[: ref.index(EOS) + 1]
        hits += hyp[: len(ref)] == ref
    return hits / len(tokens)


@pytest.mark.parametrize("task,attention,cell,steps", [
    ("reverse", "bahdanau", "gru", 400),  # reached 1.00 greedy and beam
    ("sort", "general", "lstm", 800),  # reached 0.997 greedy and beam
])
def test_seq2seq_reverses_or_sorts_held_out_digit_strings(task: str, attention: str, cell: str, steps: int) -> None:
    torch.manual_seed(0)
    rng = random.Random(0)

    def rand_string() -> tuple[int, ...]:
        return tuple(rng.randrange(10) for _ in range(rng.randint(3, 8)))

    held_out: set[tuple[int, ...]] = set()
    while len(held_out) < 300:
        held_out.add(rand_string())

    def train_batch():
        strings = []
        while len(strings) < 64:
            s = rand_string()
            if s not in held_out:  # never train on an evaluation string
                strings.append(s)
        return digit_batch(strings, task)

    model = Seq2Seq(13, 13, RecurrentConfig(cell, 64, bidirectional=True), RecurrentConfig(cell, 64),
                    attention=attention, embedding_dim=32, bos_id=BOS, eos_id=EOS, pad_id=PAD)

    def loss():
        src, tgt, lengths = train_batch()
        logits = model(src, tgt, lengths)
        return F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=PAD)

    fit(model, steps, loss, lr=3e-3)
    src, tgt, lengths = digit_batch(sorted(held_out), task)
    greedy = exact_match(model.greedy(src, lengths, max_len=10).tokens, tgt)
    beam = exact_match(model.beam_search(src, lengths, beam_width=4, max_len=10, length_penalty=0.6).tokens, tgt)
    print(f"{task}/{attention}/{cell}: held-out exact match greedy {greedy:.3f}, beam {beam:.3f}")
    assert greedy >= 0.95, f"greedy exact match {greedy:.3f}"
    assert beam >= 0.95, f"beam exact match {beam:.3f}"


# -- many-to-one: parity (classification) and sum (regression) -------------------------------------
def bits(n: int, g: torch.Generator, T: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.randint(2, T + 1, (n,), generator=g)
    mask = torch.arange(T) < lengths[:, None]
    return torch.randint(0, 2, (n, T), generator=g) * mask, lengths


@pytest.mark.parametrize("cell,pooling", [("gru", "last"), ("lstm", "attention")])
def test_classifier_learns_parity_of_variable_length_bit_strings(cell: str, pooling: str) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = SequenceClassifier(2, RecurrentConfig(cell, 32), vocab_size=2, embedding_dim=4, pooling=pooling)

    def loss():
        x, lengths = bits(128, g)
        return F.cross_entropy(model(x, lengths), x.sum(1) % 2)

    fit(model, 800, loss)
    x, lengths = bits(1000, g)
    with torch.no_grad():
        acc = (model(x, lengths).argmax(-1) == x.sum(1) % 2).float().mean().item()
    print(f"parity {cell}/{pooling}: accuracy {acc:.3f}")
    assert acc >= 0.95, f"parity accuracy {acc:.3f}"  # reached 1.00 with both


def test_regressor_learns_the_sum_of_a_variable_length_series() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)

    def data(n: int, T: int = 16):
        lengths = torch.randint(2, T + 1, (n,), generator=g)
        x = torch.rand(n, T, generator=g) * (torch.arange(T) < lengths[:, None])
        return x.unsqueeze(-1), x.sum(1, keepdim=True), lengths

    model = SequenceRegressor(1, RecurrentConfig("lstm", 32), input_size=1, pooling="last")

    def loss():
        x, y, lengths = data(128)
        return F.mse_loss(model(x, lengths), y)

    fit(model, 400, loss)
    x, y, lengths = data(1000)
    with torch.no_grad():
        mae = (model(x, lengths) - y).abs().mean().item()
    baseline = (y - y.mean()).abs().mean().item()  # predicting the mean sum: ~1.9
    print(f"sum: MAE {mae:.3f}, mean-predictor baseline {baseline:.3f}")
    assert mae < 0.1 * baseline, f"MAE {mae:.3f} vs baseline {baseline:.3f}"  # reached 0.09


# -- many-to-many, equal lengths: rule-labelled tagging, forecasting -------------------------------
def bioes(n: int, g: torch.Generator, T: int = 12):
    """Tokens 1..10 (0 pads); tokens >= 6 form entity spans, tagged O=0 B=1 I=2 E=3 S=4: the
    tag of a step depends on both neighbours, so a tagger must look ahead as well as back."""
    lengths = torch.randint(3, T + 1, (n,), generator=g)
    mask = torch.arange(T) < lengths[:, None]
    x = torch.randint(1, 11, (n, T), generator=g) * mask
    ent = x >= 6
    prev = F.pad(ent[:, :-1], (1, 0))
    nxt = F.pad(ent[:, 1:], (0, 1))
    tags = torch.zeros_like(x)
    tags[ent & ~prev & nxt] = 1
    tags[ent & prev & nxt] = 2
    tags[ent & prev & ~nxt] = 3
    tags[ent & ~prev & ~nxt] = 4
    return x, tags, lengths, mask


@pytest.mark.parametrize("crf", [False, True])
def test_tagger_learns_a_rule_that_needs_both_neighbours(crf: bool) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = SequenceTagger(5, RecurrentConfig("lstm", 32, bidirectional=True), vocab_size=11, embedding_dim=16,
                           padding_idx=0, crf=crf)

    def loss():
        x, tags, lengths, _ = bioes(64, g)
        return model.loss(x, tags, lengths)

    fit(model, 300, loss)
    x, tags, lengths, mask = bioes(500, g)
    pred = model.decode(x, lengths)
    token_acc = (pred[mask] == tags[mask]).float().mean().item()
    print(f"tagger crf={crf}: token accuracy {token_acc:.4f}")
    assert token_acc >= 0.98, f"token accuracy {token_acc:.3f}"
    assert torch.all(pred[~mask] == -1)


def test_forecaster_rolls_out_sine_waves_better_than_persistence() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)

    def waves(n: int, T: int) -> torch.Tensor:
        freq = 0.15 + 0.25 * torch.rand(n, 1, generator=g)
        phase = 2 * math.pi * torch.rand(n, 1, generator=g)
        amp = 0.5 + 0.5 * torch.rand(n, 1, generator=g)
        return (amp * torch.sin(freq * torch.arange(T).float() + phase)).unsqueeze(-1)  # (n, T, 1)

    model = Forecaster(1, RecurrentConfig("gru", 32))

    def loss():
        x = waves(64, 30)
        return F.mse_loss(model(x)[:, :-1], x[:, 1:])  # one step ahead, teacher forced

    fit(model, 1500, loss)
    x = waves(500, 40)
    with torch.no_grad():
        fc = model.forecast(x[:, :30], 10)  # 10 steps ahead, predictions fed back
    mse = F.mse_loss(fc, x[:, 30:]).item()
    persistence = F.mse_loss(x[:, 29:30].expand(-1, 10, -1), x[:, 30:]).item()  # ~0.55
    print(f"forecast: 10-step MSE {mse:.4f}, persistence {persistence:.4f}")
    assert mse < 0.3 * persistence, f"10-step MSE {mse:.4f} vs persistence {persistence:.4f}"  # reached 0.074


# -- one-to-many: reproduce sequences from their conditioning codes ---------------------------------
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_generator_reproduces_sequences_from_their_codes(cell: str) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    N = 64
    codes = torch.randn(N, 16, generator=g)  # one random "image feature" vector per sequence
    lengths = torch.randint(3, 9, (N,), generator=g)
    seqs = torch.full((N, 9), PAD)
    for i, L in enumerate(lengths.tolist()):
        seqs[i, :L] = torch.randint(3, 13, (L,), generator=g)
        seqs[i, L] = EOS
    model = Generator(13, 16, RecurrentConfig(cell, 64), embedding_dim=16, bos_id=BOS, eos_id=EOS, pad_id=PAD)

    def loss():
        idx = torch.randint(N, (32,), generator=g)
        return F.cross_entropy(model(codes[idx], seqs[idx]).flatten(0, 1), seqs[idx].flatten(), ignore_index=PAD)

    fit(model, 400, loss)
    out = model.generate(codes, max_len=12)
    hits = sum(out.tokens[i, : L + 1].tolist() == seqs[i, : L + 1].tolist() for i, L in enumerate(lengths.tolist()))
    print(f"generator {cell}: exact reproduction {hits / N:.3f}")
    assert hits / N >= 0.95, f"exact reproduction {hits / N:.3f}"  # reached 1.00
