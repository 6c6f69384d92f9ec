"""Sentiment (tweets) and named-entity tagging (WNUT16) beat their baselines on held-out data."""

import pytest

from _task_helpers import assert_beats, train_small
from rnnkit.tasks import get_task
from rnnkit.tasks.tagging import spans


def test_bio_spans():
    assert spans(["B-per", "I-per", "O", "I-loc", "B-loc"]) == {(0, 2, "per"), (3, 4, "loc"), (4, 5, "loc")}


@pytest.mark.slow
def test_sentiment_beats_majority_and_bag_of_words(tmp_path):
    # all 28.8k training tweets, the task's defaults (3 bi-GRUs side by side, 4 epochs): about 3 minutes on 2 cores.
    task, result = train_small(tmp_path, "sentiment")
    m, b = result.metrics, result.baselines
    assert m["accuracy"] > b["majority_accuracy"] + 0.25, (m, b)
    # Measured (2 threads): accuracy 0.768 vs the weighted, validation-tuned bag-of-words model's 0.761,
    # macro-F1 0.751 vs 0.739; on validation 0.756 vs 0.748. A small margin (McNemar one-sided p = 0.10):
    # the members alone score 0.758, level with the bag of words.
    assert m["accuracy"] > b["bow_logreg_accuracy"] + 0.002, (m, b)
    assert m["macro_f1"] > b["bow_logreg_macro_f1"] + 0.005, (m, b)
    assert m["member_accuracy_mean"] > b["majority_accuracy"] + 0.25, (m, b)
    assert (result.run_dir / "confusion.png").is_file()


@pytest.mark.slow
def test_tagging_beats_most_frequent_tag(tmp_path):
    task, result = train_small(tmp_path, "tagging")
    assert_beats(task, result, margin=0.03)  # entity F1


def test_user_files_for_text_tasks(tmp_path):
    csv = tmp_path / "reviews.csv"
    csv.write_text("text,label\n" + "".join(f"good movie {i},pos\nbad film {i},neg\n" for i in range(20)))
    data = get_task("sentiment").prepare(get_task("sentiment").config(data=str(csv)))
    assert data.meta["labels"] == ["neg", "pos"] and len(data.train) + len(data.val) + len(data.test) == 40
    conll = tmp_path / "tags.txt"
    conll.write_text("".join(f"Ann\tB-per\nsaw\tO\nit{i}\tO\n\n" for i in range(20)))
    data = get_task("tagging").prepare(get_task("tagging").config(data=str(conll)))
    assert data.meta["tags"] == ["B-per", "O"]


def test_tagger_ensemble_decodes_the_best_path_of_the_members_summed_crf_scores():
    import itertools

    import torch

    from rnnkit.models.crf import crf_score
    from rnnkit.tasks.tagging import TaggerEnsemble

    task = get_task("tagging")
    sents = [(["Ann", "saw", "Paris", "today"], ["B-per", "O", "B-loc", "O"]), (["Bob", "ran"], ["B-per", "O"])]
    meta = {"vocab": {"itos": ["<pad>", "<bos>", "<eos>", "<unk>", "ann", "saw", "paris", "today", "bob", "ran"]},
            "tags": ["B-loc", "B-per", "O"]}
    torch.manual_seed(0)
    model = task.build(task.config(ensemble=3, hidden=8, embedding=8), meta).eval()
    assert isinstance(model, TaggerEnsemble) and len(model.members) == 3
    for m in model.members:  # CRF scores away from their initial values, so that averaging them matters
        for p in (m.crf.start, m.crf.transitions, m.crf.end):
            p.data.normal_(0, 2)
    b = task.collate(sents, meta)
    got = model.decode(b["x"], b["lengths"])
    emissions = [m(b["x"], b["lengths"]) for m in model.members]
    for i, n in enumerate(b["lengths"].tolist()):  # brute force: every tag path of the sentence
        paths = torch.tensor(list(itertools.product(range(3), repeat=n)))  # (P, n)
        every = torch.ones(len(paths), n, dtype=torch.bool)
        total = sum(crf_score(e[i : i + 1, :n].expand(len(paths), n, 3), paths, every, m.crf.start, m.crf.transitions,
                              m.crf.end) for e, m in zip(emissions, model.members, strict=True))
        assert got[i, :n].tolist() == paths[total.argmax()].tolist()
        assert (got[i, n:] == -1).all()
    # the losses add up, and one member alone is a plain ShapeTagger
    assert torch.allclose(model.loss(b["x"], b["y"], b["lengths"]),
                          sum(m.loss(b["x"], b["y"], b["lengths"]) for m in model.members))
    assert not isinstance(task.build(task.config(ensemble=1, hidden=8, embedding=8), meta), TaggerEnsemble)
    # one forward of each member gives the ensemble's tags and each member's own, as decoding each alone does
    both, own = model.decode_with_members(b["x"], b["lengths"])
    assert torch.equal(both, got) and len(own) == 3
    for tags, m in zip(own, model.members, strict=True):
        assert torch.equal(tags, m.decode(b["x"], b["lengths"]))
    assert not all(torch.equal(tags, got) for tags in own)  # the members disagree with the ensemble somewhere
    from rnnkit.tasks.tagging import entity_f1

    gold = [ts for _, ts in sents]
    want = sum(entity_f1(task.tag(m, [ws for ws, _ in sents], meta), gold) for m in model.members) / 3
    calls = []
    hooks = [m.tagger.rnn.register_forward_hook(lambda *a: calls.append(1)) for m in model.members]
    scores = task.evaluate(model, sents, meta)
    assert len(calls) == 3  # one batch: each member ran once
    assert scores["member_entity_f1_mean"] == pytest.approx(want)
    for h in hooks:
        h.remove()
