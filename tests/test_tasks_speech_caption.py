"""Speech (BiLSTM + CTC on a held-out espeak-ng voice) and captioning (CNN + RNN on held-out images)."""

import numpy as np
import pytest

from _task_helpers import assert_beats, train_small
from rnnkit.data.readers import DataError
from rnnkit.data.speech import band_mask, espeak_available, real_digits, real_digits_available
from rnnkit.tasks import get_task


@pytest.mark.slow
@pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed: bash scripts/setup_data.sh")
def test_speech_beats_majority_word_on_held_out_voice(tmp_path):
    task, result = train_small(tmp_path, "speech")
    assert_beats(task, result, margin=0.4)  # word error rate
    assert {v for _, _, v in result.data.test}.isdisjoint({v for _, _, v in result.data.train})
    if real_digits_available():  # the real voice is scored too (how well: the benchmark's business)
        assert {"real_wer", "real_cer", "real_exact_match"} <= set(result.metrics)
        assert 0.0 <= result.metrics["real_cer"] <= 2.0


@pytest.mark.skipif(not real_digits_available(), reason="bash scripts/setup_data.sh (asterisk-core-sounds-en-wav)")
def test_real_voice_clips_are_spliced_digit_strings():
    clips = real_digits(30, seed=4)
    assert len(clips) == 30 and all(f.shape[1] == 80 and np.isfinite(f).all() for f, _, _ in clips)
    texts = [t for _, t, _ in clips]
    assert all(1 <= len(t.split()) <= 3 for t in texts) and len(set(texts)) > 10
    assert [t for _, t, _ in real_digits(30, seed=4)] == texts  # seeded
    one = [f for f, t, _ in clips if len(t.split()) == 1]
    three = [f for f, t, _ in clips if len(t.split()) == 3]
    assert np.mean([len(f) for f in three]) > 1.5 * np.mean([len(f) for f in one])  # longer strings, longer clips


def test_band_mask_keeps_the_bands_below_the_limit():
    m = band_mask(4000.0)
    assert m.shape == (80,) and np.array_equal(m[:40], m[40:])  # both stacked frames alike
    assert m[:40].sum() == 29 and m[:29].all() and not m[29:40].any()  # low bands kept, high ones dropped
    assert band_mask(8000.0).all()


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
