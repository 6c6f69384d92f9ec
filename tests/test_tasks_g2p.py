"""Seq2Seq with attention learns spelling to pronunciation far beyond a letter dictionary."""

import pytest
import torch

from _task_helpers import assert_beats, train_small
from rnnkit.data.bundled import cmudict_heldout
from rnnkit.data.collate import pad
from rnnkit.data.vocab import Vocab
from rnnkit.tasks import get_task
from rnnkit.tasks.g2p import MAX_LEN_EXTRA, MAX_LEN_PER_SOURCE_TOKEN, edit_distance, pronunciations


def test_edit_distance():
    assert edit_distance(list("kitten"), list("sitting")) == 3 and edit_distance([], ["a"]) == 1


@pytest.mark.slow
def test_g2p_beats_letter_dictionary(tmp_path):
    task, result = train_small(tmp_path, "g2p", max_train=5000, epochs=4)
    assert_beats(task, result, margin=0.1)  # exact word match
    assert result.metrics["token_error_rate"] < result.baselines["letter_dictionary_token_error_rate"]
    assert (result.run_dir / "attention.png").is_file()
    words = {"".join(s) for s, _ in result.data.train}
    assert not any("".join(s) in words for s, _ in result.data.test)  # held-out words


def test_user_parallel_file(tmp_path):
    f = tmp_path / "pairs.tsv"
    f.write_text("source\ttarget\n" + "".join(f"the cat {i}\tle chat {i}\n" for i in range(30)))
    data = get_task("g2p").prepare(get_task("g2p").config(data=str(f)))
    assert "chat" in data.meta["tgt"]["itos"]


def test_bundled_held_out_words_are_frozen_and_keep_every_pronunciation():
    task = get_task("g2p")
    a, b = (task.prepare(task.config(seed=s, max_train=2000)) for s in (0, 1))
    assert a.test == b.test and a.val == b.val  # --seed moves initialisation and order, not the split
    assert a.train != b.train  # ... and which words --max-train keeps
    test_words = {"".join(s) for s, _ in a.test}
    assert not test_words & {"".join(s) for s, _ in a.train} and not test_words & {"".join(s) for s, _ in a.val}
    assert len(test_words) == sum(v == "test" for v in cmudict_heldout().values())
    assert sorted(t for s, t in a.test if s == list("added")) == [["AE", "D", "AH", "D"], ["AE", "D", "IH", "D"]]


def test_a_sources_targets_stay_in_one_split_and_any_of_them_is_right(tmp_path, monkeypatch):
    f = tmp_path / "pairs.csv"
    rows = [(f"w {i}", t) for i in range(40) for t in (f"a {i}", f"b {i}")]
    f.write_text("source,target\n" + "".join(f"{s},{t}\n" for s, t in rows))
    task = get_task("g2p")
    data = task.prepare(task.config(data=str(f)))
    splits = [{tuple(s) for s, _ in part} for part in (data.train, data.val, data.test)]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    sources, refs = pronunciations(data.test)
    assert len(sources) == len(data.test) // 2 and all(len(r) == 2 for r in refs)
    # a prediction matching either target is right; the phoneme error is against the closer one
    monkeypatch.setattr(task, "transduce", lambda model, src, meta: ([["b", s[1]] for s in src], []))
    assert task.evaluate(None, data.test, data.meta)["exact_match"] == 1.0
    monkeypatch.setattr(task, "transduce", lambda model, src, meta: ([["c", s[1]] for s in src], []))
    scores = task.evaluate(None, data.test, data.meta)
    assert scores["exact_match"] == 0.0 and scores["per"] == pytest.approx(0.5)


def test_beam_option_decodes_with_a_beam(tmp_path):
    f = tmp_path / "pairs.csv"
    f.write_text("source,target\n" + "".join(f"{' '.join(w)},{' '.join(w.upper())}\n"
                                             for w in ("cat", "dog", "bird", "fish", "cow", "hen", "ant", "bee") * 4))
    task = get_task("g2p")
    cfg = task.config(data=str(f), beam=3, hidden=16, embedding=8)
    data = task.prepare(cfg)
    assert data.meta["beam"] == 3
    torch.manual_seed(0)
    model = task.build(cfg, data.meta).eval()
    sources = [list("cat"), list("bird")]
    got, _ = task.transduce(model, sources, data.meta)
    x, lengths = pad([Vocab.from_dict(data.meta["src"]).encode(s) for s in sources])
    want = model.beam_search(x, lengths, beam_width=3, max_len=MAX_LEN_PER_SOURCE_TOKEN * 4 + MAX_LEN_EXTRA)
    assert got == [Vocab.from_dict(data.meta["tgt"]).decode(r) for r in want.tokens.tolist()]
    assert len(task.transduce(model, sources, {**data.meta, "beam": 300})[0]) == 2  # a beam wider than a batch
    with pytest.raises(ValueError, match="--beam must be >= 1"):
        task.config(beam=0)
    with pytest.raises(ValueError, match="--dropout must be < 1"):
        task.config(dropout=1.0)


def test_g2p_smooths_its_training_targets_and_translate_does_not(tmp_path):
    import torch.nn.functional as F

    f = tmp_path / "pairs.tsv"
    f.write_text("source\ttarget\n" + "".join(f"c a t {i}\tK AE T {i}\n" for i in range(30)))
    for name, smoothing in [("g2p", 0.1), ("translate", 0.0)]:
        task = get_task(name)
        cfg = task.config(data=str(f), hidden=8, embedding=8)
        data = task.prepare(cfg)
        torch.manual_seed(0)
        model = task.build(cfg, data.meta).eval()
        batch = task.collate(data.train[:6], data.meta)
        logits = model(batch["x"], batch["y"], batch["lengths"]).flatten(0, 1)
        y = batch["y"].flatten()
        want = F.cross_entropy(logits, y, ignore_index=0, label_smoothing=smoothing)
        torch.testing.assert_close(task.loss(model, batch), want)
        if smoothing:  # and it differs from the plain loss
            assert not torch.allclose(want, F.cross_entropy(logits, y, ignore_index=0))


def test_input_feeding_option_feeds_the_attentional_state_back(tmp_path):
    f = tmp_path / "pairs.tsv"
    f.write_text("source\ttarget\n" + "".join(f"c a t {i}\tK AE T {i}\n" for i in range(30)))
    task = get_task("g2p")
    for feeding in (False, True):
        cfg = task.config(data=str(f), hidden=8, embedding=6, bidirectional=False, input_feeding=feeding)
        data = task.prepare(cfg)
        torch.manual_seed(0)
        model = task.build(cfg, data.meta)
        assert model.input_feeding is feeding
        cell = model.decoder.cells[0]
        assert cell.input_size == 6 + (8 if feeding else 0)  # the target embedding, then h~ of the last step
        if feeding:  # the loss reaches the weights that read h~_{t-1}: it is fed back, step by step
            task.loss(model, task.collate(data.train[:6], data.meta)).backward()
            assert cell.weight_ih.grad[:, 6:].abs().sum() > 0


def test_joint_ngram_reranks_the_beam_with_a_weight_chosen_on_validation(tmp_path):
    import json

    from _task_helpers import train_small
    from rnnkit.tasks.g2p import RERANK_WEIGHTS
    from rnnkit.tasks.graphones import GraphoneModel
    from rnnkit.tasks.runner import load_run
    from test_graphones import lexicon

    task = get_task("g2p")
    with pytest.raises(ValueError, match="--joint-ngram 4 reranks the beam's hypotheses: give --beam 2 or more"):
        task.prepare(task.config(joint_ngram=4, max_train=100))
    f = tmp_path / "pairs.csv"  # a made-up spelling rule, which a graphone model learns from few words
    f.write_text("source,target\n" + "".join(f"{' '.join(s)},{' '.join(t)}\n" for s, t in lexicon(900, 0)))
    task, result = train_small(tmp_path, "g2p", data=str(f), epochs=10, hidden=32, embedding=16, lr=1e-2, beam=4,
                               joint_ngram=4)
    g = result.data.meta["graphones"]
    assert g["weight"] in RERANK_WEIGHTS and g["weight"] > 0
    assert g["val_wer"]["reranked"] <= g["val_wer"]["beam"]  # weight 0 is among those tried
    m = result.metrics
    assert m["wer"] < m["beam_only_wer"] and m["per"] < m["beam_only_per"], m  # and it helps on the test words
    # the run's saved meta reranks again after loading: predict picks the best combined score of the beam
    saved = json.loads((result.run_dir / "config.json").read_text())["meta"]["graphones"]
    assert saved["weight"] == g["weight"]
    task, _, meta, model = load_run(result.run_dir)
    sources = [s for s, _ in result.data.test[:20]]
    lists = task.nbest(model, sources, meta)
    gm = GraphoneModel.from_dict(meta["graphones"])
    want = [max(hyps, key=lambda e, s=s: e[1] + meta["graphones"]["weight"] * gm.score([(s, e[0])])[0])[0]
            for s, hyps in zip(sources, lists, strict=True)]
    assert task.transduce(model, sources, meta)[0] == want
    assert task.predict(model, meta, [" ".join(s) for s in sources]) == [" ".join(w) for w in want]
