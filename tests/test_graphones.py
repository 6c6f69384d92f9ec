"""The graphone (joint-sequence) n-gram: EM alignment finds the letters behind each phoneme, the
n-gram prefers true pronunciations to near misses, and the model survives JSON."""

import json
import math
import random

import numpy as np
import pytest

from rnnkit.tasks.graphones import GraphoneModel, align

#: a made-up spelling rule: x reads K S, a final e is silent, "ph" reads F (p, then a silent h)
RULE = {"a": ["AE"], "b": ["B"], "d": ["D"], "o": ["OW"], "t": ["T"], "x": ["K", "S"], "p": ["F"], "h": []}


def pronounce(word: str) -> list[str]:
    out: list[str] = []
    for i, c in enumerate(word):
        if c == "e":
            out += [] if i == len(word) - 1 else ["IY"]
        elif c == "h" and (i == 0 or word[i - 1] != "p"):
            out.append("HH")
        else:
            out += RULE[c]
    return out


def lexicon(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    words = {"".join(rng.choice("abdotxpeh") for _ in range(rng.randint(3, 7))) for _ in range(n)}
    return [(list(w), pronounce(w)) for w in sorted(words)]


@pytest.fixture(scope="module")
def model():
    return GraphoneModel.fit(lexicon(600, 0), order=4)


def test_em_alignment_recovers_the_rule(model):
    assert model.segment(list("taxe"), pronounce("taxe")) == [
        (("t",), ("T",)), (("a",), ("AE",)), (("x",), ("K", "S")), (("e",), ())]
    assert model.segment(list("phot"), pronounce("phot")) == [
        (("p",), ("F",)), (("h",), ()), (("o",), ("OW",)), (("t",), ("T",))]
    assert model.segment(list("hoh"), pronounce("hoh")) == [(("h",), ("HH",)), (("o",), ("OW",)), (("h",), ("HH",))]


def test_unigram_probabilities_are_a_distribution():
    pairs = [([1, 2], [1]), ([1, 1], [2, 2]), ([2], [1, 2])]
    probs, paths = align(pairs, 2, 2, iterations=3)
    assert sum(probs.values()) == pytest.approx(1.0) and all(p > 0 for p in probs.values())
    assert all(paths)  # every pair has a path
    assert align([([1], [1, 2, 1])], 2, 2)[1] == [[]]  # three phonemes from one letter: no path


def test_true_pronunciations_score_above_near_misses(model):
    held = [p for p in lexicon(300, 1) if p not in lexicon(600, 0)]
    rng = random.Random(2)
    wins = tried = 0
    for src, tgt in held:
        wrong = list(tgt)
        i = rng.randrange(len(wrong)) if wrong else 0
        wrong[i:i + 1] = [rng.choice(["AE", "B", "D", "OW", "T", "K", "F", "IY", "HH"])]
        if wrong == tgt:
            continue
        good, bad = model.score([(src, tgt), (src, wrong)])
        wins, tried = wins + (good > bad), tried + 1
    assert tried > 200 and wins >= 0.95 * tried


def test_pairs_without_a_path_and_unseen_symbols(model):
    assert model.score([(list("a"), ["AE", "B", "D"])]) == [-math.inf]  # more than two phonemes per letter
    assert model.score([([], ["AE"])]) == [-math.inf]
    (seen,), (unseen,) = model.score([(list("tat"), ["T", "AE", "T"])]), model.score([(list("tqt"), ["T", "ZZ", "T"])])
    assert math.isfinite(unseen) and unseen < seen  # a new letter and phoneme: possible, improbable
    assert model.segment(list("tq"), ["T", "ZZ"])[1] == (("?",), ("?",))


def test_round_trip_through_json_keeps_every_score(model):
    again = GraphoneModel.from_dict(json.loads(json.dumps(model.to_dict())))
    pairs = lexicon(50, 3) + [(list("tab"), ["T", "B"])]
    np.testing.assert_array_equal(again.score(pairs), model.score(pairs))
    assert again.order == model.order == 4


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="order must be >= 1"):
        GraphoneModel.fit(lexicon(20, 0), order=0)
    with pytest.raises(ValueError, match="at most 10000 source and target symbols"):
        align([([1], [1])], 20_000, 5)
    d = GraphoneModel.fit(lexicon(20, 0), order=2).to_dict()
    with pytest.raises(ValueError, match="graphones but"):
        GraphoneModel.from_dict({**d, "probs": d["probs"][:-1]})
