"""Generation: chorale melodies and character-level tweets beat a tuned interpolated trigram."""

import pytest

from _task_helpers import assert_beats, train_small
from rnnkit.tasks._lm import NGram


def test_ngram_is_a_distribution_and_tuning_helps():
    seqs = [[4, 5, 6, 4, 5, 6]] * 20
    ng = NGram(seqs, vocab_size=8)
    before = ng.nll(seqs)[0]
    assert ng.tune(seqs).nll(seqs)[0] < before
    probs = [sum(w * p for w, p in zip(ng.weights, parts, strict=True)) for parts in ng._probs([4, 5])]
    assert all(0 < p <= 1 for p in probs)


@pytest.mark.slow
def test_music_beats_ngram(tmp_path):
    task, result = train_small(tmp_path, "music")
    assert result.metrics["perplexity"] < 0.95 * result.baselines["ngram_perplexity"]
    assert any(p.suffix == ".mid" for p in result.run_dir.iterdir())  # a sampled chorale as MIDI


@pytest.mark.slow
def test_chars_beats_ngram(tmp_path):
    task, result = train_small(tmp_path, "chars", max_train=3000, epochs=5)
    assert_beats(task, result, margin=0.15)  # bits per character
