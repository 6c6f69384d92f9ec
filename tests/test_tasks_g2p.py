"""Seq2Seq with attention learns spelling to pronunciation far beyond a letter dictionary."""

import pytest

from _task_helpers import assert_beats, train_small
from rnnkit.tasks import get_task
from rnnkit.tasks.g2p import edit_distance


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
