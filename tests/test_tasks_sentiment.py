"""Sentiment task pieces: de-duplication, loss weights, the ensemble, per-member clipping, user files, the
linear n-gram part."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from rnnkit.data.readers import DataError
from rnnkit.tasks import get_task
from rnnkit.tasks.base import Prepared
from rnnkit.tasks.runner import TaskModule
from rnnkit.tasks.sentiment import Ensemble, deduplicate


class _Lambda(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class _Member(nn.Module):
    """A stand-in classifier: ``inner(x)`` with the task's ``(x, lengths=...)`` signature."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x, lengths=None):
        return self.inner(x)


def test_deduplicate_merges_copies_by_majority_and_drops_ties():
    ex = [
        ("pos", ["a", "b"], "a b!", 1.0), ("pos", ["a", "b"], "A b", 0.5), ("neg", ["a", "b"], "a  b", 0.9),
        ("neg", ["c"], "c", 1.0), ("pos", ["c"], "C", 1.0),  # a tie: dropped
        ("neu", ["d"], "d", 0.7),
    ]
    out = deduplicate(ex)
    assert out == [("pos", ["a", "b"], "a b!", 0.75), ("neu", ["d"], "d", 0.7)]


def test_bundled_split_has_no_text_in_two_splits():
    task = get_task("sentiment")
    data = task.prepare(task.config())
    seen = {tuple(ex[1]) for ex in data.train}
    assert not any(tuple(ex[1]) in seen for ex in data.val + data.test)
    weights = np.array([ex[3] for ex in data.train])
    assert 0 < weights.min() < 0.5 and weights.max() == 1.0  # the corpus's annotator confidence


def test_loss_is_the_weighted_mean_and_validation_ignores_weights():
    task = get_task("sentiment")
    torch.manual_seed(0)
    # stand-in members: the first token's embedding serves as the logits
    model = Ensemble([_Member(nn.Sequential(nn.Embedding(10, 3), _Lambda(lambda h: h[:, 0]))) for _ in range(2)])
    batch = {"x": torch.tensor([[1, 2], [3, 0], [4, 5]]), "y": torch.tensor([0, 2, 1]),
             "lengths": torch.tensor([2, 1, 2]), "weight": torch.tensor([1.0, 0.0, 0.5])}
    model.eval()  # no word dropout, unit weights
    ce = torch.stack([nn.functional.cross_entropy(m(batch["x"]), batch["y"], label_smoothing=0.1, reduction="none")
                      for m in model.members])
    torch.testing.assert_close(task.loss(model, batch), ce.sum() / 3)
    model.train()
    import rnnkit.tasks.sentiment as s
    old, s.WORD_DROPOUT = s.WORD_DROPOUT, 0.0
    try:
        w = batch["weight"]
        torch.testing.assert_close(task.loss(model, batch), (ce * w).sum() / w.sum())
    finally:
        s.WORD_DROPOUT = old


def test_ensemble_predicts_the_mean_probability():
    members = [_Member(nn.Linear(4, 3)) for _ in range(3)]
    model = Ensemble(members)
    x = torch.randn(5, 4)
    mean = torch.stack([m(x).softmax(-1) for m in members]).mean(0)
    torch.testing.assert_close(model(x).exp(), mean)
    assert model.member_logits(x).shape == (3, 5, 3)
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])


def test_ensemble_members_are_clipped_each_on_its_own():
    model = Ensemble([nn.Linear(4, 4), nn.Linear(4, 4)])
    module = TaskModule(model, get_task("sentiment"), clip_val=1.0)
    for p in model.members[0].parameters():
        p.grad = torch.full_like(p, 10.0)  # norm far above the threshold
    for p in model.members[1].parameters():
        p.grad = torch.full_like(p, 0.01)  # well below it: a global clip would shrink it too
    before = [p.grad.clone() for p in model.members[1].parameters()]
    module.configure_gradient_clipping(None)
    norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.members[0].parameters()]))
    assert norm.item() == pytest.approx(1.0, rel=1e-5)
    for p, b in zip(model.members[1].parameters(), before, strict=True):
        torch.testing.assert_close(p.grad, b, rtol=0, atol=0)


def test_ensemble_option_is_refused_where_a_task_cannot_build_one():
    assert get_task("sentiment").config(ensemble=5).ensemble == 5
    with pytest.raises(ValueError, match="ensemble=2: task 'forecast' takes only 1"):
        get_task("forecast").config(ensemble=2)
    with pytest.raises(ValueError, match="--ensemble must be >= 1, got 0"):
        get_task("sentiment").config(ensemble=0)


def test_user_weights_are_read_and_checked(tmp_path):
    task = get_task("sentiment")
    good = tmp_path / "w.csv"
    good.write_text("text,label,weight\n" + "".join(f"good {i},pos,1\nbad {i},neg,0.25\n" for i in range(20)))
    data = task.prepare(task.config(data=str(good)))
    assert {ex[0]: ex[3] for ex in data.train} == {"pos": 1.0, "neg": 0.25}
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label,weight\ngood,pos,1\nbad,neg,lots\n")
    with pytest.raises(DataError, match=r"bad\.csv.*line 3.*'weight' must be a number"):
        task.prepare(task.config(data=str(bad)))
    bad.write_text("text,label,weight\ngood,pos,-1\nbad,neg,1\n")
    with pytest.raises(DataError, match=r"line 2.*finite and >= 0"):
        task.prepare(task.config(data=str(bad)))


def test_bag_of_words_baseline_uses_the_weights():
    # half the training rows carry the wrong label with weight 0: only a weighted fit ignores them
    words = [f"w{i}" for i in range(40)]
    good = [("pos" if i % 2 else "neg", [w], w, 1.0) for i, w in enumerate(words)]
    noise = [("neg" if i % 2 else "pos", [w], w, 0.0) for i, w in enumerate(words)]
    data = Prepared(good + noise + good, good, good)
    b = get_task("sentiment").baselines(data)
    assert b["bow_logreg_accuracy"] == 1.0, b
    assert math.isclose(b["majority_accuracy"], 0.5)



def _ngram_classifier(features=30, vocab=40):
    from rnnkit.models import RecurrentConfig
    from rnnkit.tasks.sentiment import _Classifier

    torch.manual_seed(0)
    model = _Classifier(3, RecurrentConfig(cell="gru", hidden_size=6, bidirectional=True), vocab_size=vocab,
                        embedding_dim=5, padding_idx=0, pooling="attention", ngram_features=features)
    nn.init.normal_(model.ngrams.weight)
    return model.eval()


def test_ngram_part_adds_the_sum_of_its_ngram_weights_over_their_root_count():
    from rnnkit.models import SequenceClassifier

    model = _ngram_classifier()
    x, lengths = torch.randint(1, 40, (3, 5)), torch.tensor([5, 2, 4])
    rows = [[4, 9, 30], [7], [2, 2, 11, 1]]  # 0-padded below; an id may repeat
    ngrams = torch.zeros(3, 4, dtype=torch.long)
    for b, row in enumerate(rows):
        ngrams[b, : len(row)] = torch.tensor(row)
    got = model.ngram_logits(ngrams)
    for b, row in enumerate(rows):
        torch.testing.assert_close(got[b], model.ngrams.weight[row].sum(0) / math.sqrt(len(row)))
    network = SequenceClassifier.forward(model, x, lengths)
    torch.testing.assert_close(model(x, lengths, ngrams=ngrams), network + got)
    torch.testing.assert_close(model(x, lengths, ngrams=torch.cat([ngrams, torch.zeros(3, 2, dtype=torch.long)], 1)),
                               network + got)  # more padding changes nothing
    with pytest.raises(ValueError, match="has an n-gram part"):
        model(x, lengths)
    with pytest.raises(ValueError, match="ngrams has 2 rows but x has 3 texts"):
        model(x, lengths, ngrams=ngrams[:2])
    with pytest.raises(ValueError, match=r"ngrams must be n-gram ids \(B, F\), got shape \(3,\)"):
        model(x, lengths, ngrams=ngrams[:, 0])


def test_ngram_part_drops_ngrams_only_in_training():
    model = _ngram_classifier()
    ngrams = torch.randint(1, 31, (8, 20))
    torch.testing.assert_close(model.ngram_logits(ngrams), model.ngram_logits(ngrams))
    model.train()
    assert not torch.allclose(model.ngram_logits(ngrams), model.ngram_logits(ngrams))


def test_ngrams_of_two_or_more_training_texts_become_features(tmp_path):
    from rnnkit.tasks.sentiment import text_ngrams

    assert text_ngrams(["so", "good", "so", "good"]) == ["so", "good", "so good", "good so"]
    path = tmp_path / "t.csv"
    path.write_text("text,label\n" + "".join(f"so good {i},pos\nnot good {i},neg\n" for i in range(40)))
    task = get_task("sentiment")
    cfg = task.config(data=str(path), ngrams=True, hidden=4, embedding=4, ensemble=2)
    data = task.prepare(cfg)
    train_texts = [ex[1] for ex in data.train]
    counts = {g: sum(g in text_ngrams(t) for t in train_texts) for t in train_texts for g in text_ngrams(t)}
    assert data.meta["ngrams"] == sorted(g for g, n in counts.items() if n >= 2)
    assert {"so good", "not good", "good"} <= set(data.meta["ngrams"]) and "good 0" not in data.meta["ngrams"]
    batch = task.collate(data.test[:4], data.meta)
    for row, ex in zip(batch["ngrams"].tolist(), data.test[:4], strict=True):
        assert [data.meta["ngrams"][i - 1] for i in row if i] == [g for g in text_ngrams(ex[1]) if g in counts
                                                                    and counts[g] >= 2]
    model = task.build(cfg, data.meta)
    assert all(m.ngrams.weight.shape == (len(data.meta["ngrams"]) + 1, 2) and not m.ngrams.weight.any()
               for m in model.members)
    assert task.loss(model.train(), task.collate(data.train[:8], data.meta)).isfinite()
    plain = task.config(data=str(path), hidden=4, embedding=4)
    assert "ngrams" not in task.prepare(plain).meta
    assert all(m.ngrams is None for m in task.build(plain, task.prepare(plain).meta).members)


def test_an_empty_ngram_list_builds_and_exports_without_an_ngram_part():
    task = get_task("sentiment")  # a tiny --data file where no n-gram occurs in two training texts
    meta = {"vocab": {"itos": ["<pad>", "<bos>", "<eos>", "<unk>", "good"]}, "labels": ["neg", "pos"], "ngrams": []}
    model = task.build(task.config(hidden=4, embedding=4, ngrams=True), meta).eval()
    assert all(m.ngrams is None for m in model.members)
    graph = task.onnx_bundle(model, meta).graphs[0]
    assert graph.input_names == ["tokens", "lengths"] and len(graph.example(2, 3)) == 2
    tokens, lengths = graph.example(2, 3)
    torch.testing.assert_close(graph.module(tokens, lengths), model(tokens, lengths).exp())
