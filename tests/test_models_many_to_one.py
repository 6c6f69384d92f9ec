"""Many-to-one models: shapes, pooling equations, and padding that never reaches the result."""

from __future__ import annotations

import pytest
import torch

from rnnkit.cells.registry import cell_names
from rnnkit.models import RecurrentConfig, SequenceClassifier, SequenceRegressor
from rnnkit.models.many_to_one import POOLINGS

LENGTHS = [5, 2, 4, 1]


def padded_pair(tokens: bool):
    """Two inputs equal on the real steps and different (garbage) on the padded ones."""
    B, T = len(LENGTHS), max(LENGTHS)
    mask = torch.arange(T).unsqueeze(0) < torch.tensor(LENGTHS).unsqueeze(1)
    if tokens:
        a, b = torch.randint(1, 9, (B, T)), torch.randint(1, 9, (B, T))
        return a, torch.where(mask, a, b)
    a, b = torch.randn(B, T, 3), torch.randn(B, T, 3) * 10
    return a, torch.where(mask.unsqueeze(-1), a, b)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cfg", [RecurrentConfig("lstm", 6), RecurrentConfig("gru", 6, 2, True),
                                 RecurrentConfig("rnn", 6, 1, True, "sum")])
def test_padding_never_changes_the_result(pooling: str, cfg: RecurrentConfig) -> None:
    if pooling == "last" and cfg.bidirectional and cfg.merge != "concat":
        with pytest.raises(ValueError, match="merge='concat'"):
            SequenceClassifier(3, cfg, input_size=3, pooling=pooling)
        return
    model = SequenceClassifier(3, cfg, input_size=3, pooling=pooling)
    x, x_garbage = padded_pair(tokens=False)
    out = model(x, LENGTHS)
    assert out.shape == (4, 3)
    torch.testing.assert_close(model(x_garbage, LENGTHS), out)
    # and each sequence alone, unpadded, gives the same answer
    for b, L in enumerate(LENGTHS):
        torch.testing.assert_close(model(x[b : b + 1, :L]), out[b : b + 1], atol=1e-5, rtol=1e-4)


def test_token_input_with_embedding_and_padding() -> None:
    model = SequenceRegressor(2, RecurrentConfig("gru", 5), vocab_size=9, embedding_dim=4, padding_idx=0,
                              pooling="attention")
    x, x_garbage = padded_pair(tokens=True)
    out = model(x, torch.tensor(LENGTHS))
    assert out.shape == (4, 2)
    torch.testing.assert_close(model(x_garbage, torch.tensor(LENGTHS)), out)
    w = model.attention_weights(x, LENGTHS)
    assert w.shape == (4, 5) and torch.all(w[1, 2:] == 0) and torch.allclose(w.sum(1), torch.ones(4))


@pytest.mark.parametrize("pooling", POOLINGS)
def test_pooling_equations(pooling: str) -> None:
    model = SequenceClassifier(2, RecurrentConfig("gru", 4, bidirectional=True), input_size=3, pooling=pooling)
    x = torch.randn(4, 5, 3)
    lengths = torch.tensor(LENGTHS)
    outputs, _ = model.rnn(x, lengths=lengths)  # (B, T, 8)
    z = model.encode(x, lengths)
    for b, L in enumerate(LENGTHS):
        o = outputs[b, :L]
        if pooling == "last":
            want = torch.cat([o[-1, :4], o[0, 4:]])
        elif pooling == "mean":
            want = o.mean(0)
        elif pooling == "max":
            want = o.max(0).values
        else:
            a = torch.softmax(model.pool.v(torch.tanh(model.pool.proj(o))).squeeze(-1), 0)
            want = a @ o
        torch.testing.assert_close(z[b], want)


@pytest.mark.parametrize("cell", cell_names())
def test_any_registered_cell(cell: str) -> None:
    model = SequenceClassifier(4, {"cell": cell, "hidden_size": 5, "num_layers": 2}, input_size=3, pooling="mean")
    assert model(torch.randn(2, 6, 3)).shape == (2, 4)


def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequenceClassifier(2, input_size=3, pooling="median")
    model = SequenceClassifier(2, RecurrentConfig("gru", 4), input_size=3)
    with pytest.raises(ValueError, match=r"lengths\[0\] = 9 exceeds the sequence length 5"):
        model(torch.randn(2, 5, 3), [9, 2])
    with pytest.raises(ValueError, match="Expected 3, got 2"):
        model(torch.randn(2, 5, 2))
    with pytest.raises(ValueError, match="needs pooling='attention'"):
        model.attention_weights(torch.randn(2, 5, 3))
