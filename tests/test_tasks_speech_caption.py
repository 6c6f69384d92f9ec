"""Speech (BiLSTM + CTC on a held-out espeak-ng voice) and captioning (CNN + RNN on held-out images)."""

import numpy as np
import pytest

from _task_helpers import assert_beats, train_small
from rnnkit.data.readers import DataError
from rnnkit.data.speech import espeak_available
from rnnkit.tasks import get_task


@pytest.mark.slow
@pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed: bash scripts/setup_data.sh")
def test_speech_beats_majority_word_on_held_out_voice(tmp_path):
    task, result = train_small(tmp_path, "speech")
    assert_beats(task, result, margin=0.4)  # word error rate
    assert {v for _, _, v in result.data.test}.isdisjoint({v for _, _, v in result.data.train})


@pytest.mark.slow
def test_caption_beats_majority_caption(tmp_path):
    task, result = train_small(tmp_path, "caption", max_train=3000, epochs=6)
    assert_beats(task, result, margin=0.4)  # exact caption match
    assert (result.run_dir / "captions.png").is_file()


def test_user_image_csv(tmp_path):
    from PIL import Image

    rows = []
    for i in range(10):
        Image.fromarray((np.random.default_rng(i).random((20, 20)) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,a noisy square")
    (tmp_path / "caps.csv").write_text("image,caption\n" + "\n".join(rows) + "\n")
    data = get_task("caption").prepare(get_task("caption").config(data=str(tmp_path / "caps.csv")))
    assert data.meta["size"] == [32, 32]
    (tmp_path / "bad.csv").write_text("image,caption\n0.png,ok\nmissing.png,gone\n")
    with pytest.raises(DataError, match=r"bad\.csv, line 3: cannot read image"):
        get_task("caption").prepare(get_task("caption").config(data=str(tmp_path / "bad.csv")))


def test_user_audio_csv_rejects_bad_transcripts(tmp_path):
    (tmp_path / "a.csv").write_text("audio,text\nx.wav,Hello World!\n")
    with pytest.raises(DataError, match=r"a\.csv, line 2: transcript has characters \['!'\]"):
        get_task("speech").prepare(get_task("speech").config(data=str(tmp_path / "a.csv")))
