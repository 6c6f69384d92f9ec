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


def test_user_files_for_generation(tmp_path):
    from rnnkit.data.readers import DataError
    from rnnkit.tasks import get_task

    chars = get_task("chars")
    (tmp_path / "a.csv").write_text("text\n" + "".join(f"hello {i}\n" for i in range(20)))
    (tmp_path / "b.csv").write_text("text,label\n" + "".join(f"hello {i},{'ab'[i % 2]}\n" for i in range(20)))
    assert chars.prepare(chars.config(data=str(tmp_path / "a.csv"))).meta["conditions"] == ["text"]
    assert chars.prepare(chars.config(data=str(tmp_path / "b.csv"))).meta["conditions"] == ["a", "b"]
    music = get_task("music")
    (tmp_path / "m.txt").write_text("".join(f"major\t72_1 74_0.5 R_1 7{i % 10}_1\n" for i in range(20)))
    assert music.prepare(music.config(data=str(tmp_path / "m.txt"))).meta["conditions"] == ["major"]
    (tmp_path / "bad.txt").write_text("major\t72_1\nminor 72_1 74_1\n")
    with pytest.raises(DataError, match=r"bad\.txt, line 2: needs '<condition><TAB><note tokens>'"):
        music.prepare(music.config(data=str(tmp_path / "bad.txt")))
