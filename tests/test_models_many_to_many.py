"""Equal-length many-to-many: the tagger (with and without CRF) and the forecaster."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnkit.cells.registry import cell_names
from rnnkit.models import Forecaster, RecurrentConfig, SequenceTagger

LENGTHS = [6, 3, 1, 5]


def pair_with_garbage_padding(B: int, T: int, vocab: int):
    mask = torch.arange(T).unsqueeze(0) < torch.tensor(LENGTHS).unsqueeze(1)
    a = torch.randint(vocab, (B, T))
    return a, torch.where(mask, a, torch.randint(vocab, (B, T))), mask


@pytest.mark.parametrize("crf", [False, True])
@pytest.mark.parametrize("cfg", [RecurrentConfig("lstm", 6, 2, True), RecurrentConfig("gru", 6)])
def test_tagger_shapes_masking_and_decode(crf: bool, cfg: RecurrentConfig) -> None:
    tagger = SequenceTagger(4, cfg, vocab_size=10, embedding_dim=5, crf=crf)
    x, x_garbage, mask = pair_with_garbage_padding(4, 6, 10)
    tags = torch.randint(4, (4, 6))
    em = tagger(x, LENGTHS)
    assert em.shape == (4, 6, 4)
    torch.testing.assert_close(tagger(x_garbage, LENGTHS)[mask], em[mask])
    loss = tagger.loss(x, tags, LENGTHS)
    other_tags = torch.where(mask, tags, torch.randint(4, (4, 6)))
    torch.testing.assert_close(tagger.loss(x_garbage, other_tags, LENGTHS), loss)
    loss.backward()
    assert all(p.grad is not None for p in tagger.parameters() if p.requires_grad)
    dec = tagger.decode(x, LENGTHS)
    assert dec.shape == (4, 6) and torch.all(dec[~mask] == -1) and torch.all((dec[mask] >= 0) & (dec[mask] < 4))
    if not crf:
        assert torch.equal(dec[mask], em.argmax(-1)[mask])
        torch.testing.assert_close(loss, F.cross_entropy(em[mask], tags[mask]))
    else:
        torch.testing.assert_close(dec, tagger.crf.decode(em.detach(), mask)[0])
        torch.testing.assert_close(loss, -tagger.crf(em, tags, mask).mean())


def test_tagger_errors() -> None:
    tagger = SequenceTagger(3, RecurrentConfig("gru", 4), input_size=2)
    with pytest.raises(ValueError, match=r"tags must be an integer tensor of shape \(2, 5\)"):
        tagger.loss(torch.randn(2, 5, 2), torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.parametrize("cell", cell_names())
@pytest.mark.parametrize("layers", [1, 2])
def test_forecast_rollout_equals_feeding_predictions_back_through_forward(cell: str, layers: int) -> None:
    model = Forecaster(2, RecurrentConfig(cell, 5, layers)).eval()
    history = torch.randn(3, 4, 2)
    lengths = [4, 2, 3]
    fc = model.forecast(history, 3, lengths)
    assert fc.shape == (3, 3, 2)
    for b, L in enumerate(lengths):  # reference: re-run the whole sequence with each prediction appended
        seq = history[b : b + 1, :L]
        for h in range(3):
            nxt = model(seq)[:, -1]
            torch.testing.assert_close(fc[b, h], nxt[0], atol=1e-5, rtol=1e-4)
            seq = torch.cat([seq, nxt.unsqueeze(1)], dim=1)


def test_forecaster_one_step_predictions_and_errors() -> None:
    model = Forecaster(1, RecurrentConfig("lstm", 4))
    x = torch.randn(2, 6, 1)
    assert model(x).shape == (2, 6, 1)
    with pytest.raises(ValueError, match="bidirectional"):
        Forecaster(1, RecurrentConfig("lstm", 4, bidirectional=True))
    with pytest.raises(ValueError, match="horizon must be a positive int"):
        model.forecast(x, 0)
