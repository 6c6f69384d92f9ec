"""The tasks' metrics come from the libraries the field uses (seqeval, jiwer, scikit-learn); each
agrees with the definition written out by hand, on random cases, wherever the definitions agree."""

import random

import numpy as np
import pytest

from rnnkit.tasks.g2p import _scores, edit_distance
from rnnkit.tasks.sentiment import class_f1, macro_f1
from rnnkit.tasks.speech import _errors
from rnnkit.tasks.tagging import entity_f1, span_f1


def test_seqeval_entity_f1_equals_the_bio_span_count():
    rng = random.Random(0)
    tags = ["O", "B-per", "I-per", "B-loc", "I-loc", "NN"]  # NN: a non-entity tag, outside for both
    for _ in range(200):
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(4)]
        pred = [[rng.choice(tags) for _ in g] for g in gold]
        assert entity_f1(pred, gold) == pytest.approx(span_f1(pred, gold), abs=1e-12)
    assert entity_f1([["B-per", "I-per", "O"]], [["B-per", "I-per", "O"]]) == 1.0
    assert entity_f1([["O", "O"]], [["O", "O"]]) == 0.0  # no entity anywhere: nothing right


def test_jiwer_error_rates_equal_the_edit_distance():
    rng = random.Random(1)
    words = ["zero", "one", "two", "three", "oh"]
    for _ in range(50):
        gold = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) for _ in range(5)]
        pred = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 6))) for _ in range(5)]  # empty ones too
        got = _errors(pred, gold)
        pairs = list(zip(pred, gold, strict=True))
        wer = sum(edit_distance(p.split(), g.split()) for p, g in pairs) / sum(len(g.split()) for g in gold)
        cer = sum(edit_distance(list(p), list(g)) for p, g in pairs) / sum(len(g) for g in gold)
        assert got["wer"] == pytest.approx(wer, abs=1e-12) and got["cer"] == pytest.approx(cer, abs=1e-12)


def test_g2p_word_and_phoneme_error_rates():
    gold = [["K", "AE1", "T"], ["D", "AO1", "G"], ["AH0"]]
    pred = [["K", "AE1", "T"], ["D", "AO1"], ["AH0", "N"]]
    s = _scores(pred, [[g] for g in gold])
    assert s["wer"] == pytest.approx(2 / 3) and s["exact_match"] == pytest.approx(1 / 3)
    assert s["per"] == pytest.approx(2 / 7) == s["token_error_rate"]  # one deletion, one insertion, 7 phonemes


def test_g2p_scores_against_the_closest_of_several_pronunciations():
    refs = [[["R", "IY", "D"], ["R", "EH", "D"]],
            [["T", "AH", "M", "EY", "T", "OW"], ["T", "AH", "M", "AA", "T", "OW"]]]
    pred = [["R", "EH", "D"], ["T", "AH", "M", "AA", "OW"]]
    s = _scores(pred, refs)
    assert s["exact_match"] == pytest.approx(1 / 2)  # 'read' matches its second pronunciation
    assert s["per"] == pytest.approx(1 / 9)  # one deletion against the closer 'tomato', over 3 + 6 phonemes
    with pytest.raises(ValueError, match="2 predictions for 1 words"):
        _scores(pred, refs[:1])


def test_scikit_learn_macro_f1_equals_the_per_class_count():
    rng = np.random.default_rng(2)
    for _ in range(50):
        true, pred = rng.integers(0, 4, 30), rng.integers(0, 4, 30)
        pred[pred == 3] = 0  # a class never predicted
        assert macro_f1(pred, true, 5) == pytest.approx(class_f1(pred, true, 5), abs=1e-12)  # class 4: absent
