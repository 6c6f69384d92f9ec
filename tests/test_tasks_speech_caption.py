"""Speech (BiLSTM + CTC on a held-out synthetic voice) and captioning (CNN + RNN on held-out images)."""

import numpy as np
import pytest

from _task_helpers import assert_beats, train_small
from rnnkit.data.readers import DataError
from rnnkit.data.speech import DIGIT_WORDS, band_mask, real_digits, real_digits_available, voices_available
from rnnkit.tasks import get_task


@pytest.mark.slow
@pytest.mark.skipif(not voices_available(), reason="espeak-ng or flite not installed: bash scripts/setup_data.sh")
def test_speech_beats_majority_word_on_held_out_voice(tmp_path):
    task, result = train_small(tmp_path, "speech")
    assert_beats(task, result, margin=0.4)  # word error rate
    assert {v for _, _, v in result.data.test}.isdisjoint({v for _, _, v in result.data.train})
    assert result.data.meta["units"][1:] == DIGIT_WORDS and result.data.meta["joiner"] == " "  # whole-word CTC
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


def test_spec_augment_masks_bands_and_spans_in_training_only():
    import torch

    from rnnkit.tasks.speech import SpecAugment

    torch.manual_seed(0)
    x, lengths = torch.randn(64, 50, 80) + 5.0, torch.tensor([50] * 32 + [20] * 32)
    mask = SpecAugment(bands=1, band_width=6, spans=1, span=8)
    assert torch.equal(mask.eval()(x, lengths), x)  # identity outside training, as dropout
    y = mask.train()(x, lengths)
    zero = y == 0  # (B, T, D)
    assert torch.equal(zero[:, :, :40], zero[:, :, 40:])  # a band is masked in both stacked frames
    bands = zero.all(1)[:, :40]  # (B, 40): bands masked over all time
    widths = bands.sum(1)
    assert widths.max() <= 6 and widths.float().mean() > 1.5  # widths uniform in 0..6
    for row in bands[widths > 0]:  # one contiguous span of bands
        idx = row.nonzero().flatten()
        assert idx[-1] - idx[0] + 1 == len(idx)
    steps = zero.all(2)  # (B, T): time steps masked in every band
    spans = steps.sum(1)
    assert spans[:32].max() <= 8 and spans[32:].max() <= 4 and spans.float().mean() > 1  # at most a fifth of 20
    assert not steps[32:, 20:].any()  # never in the padding
    kept = ~zero
    assert torch.equal(y[kept], x[kept])


def test_word_units_decode_whole_words_and_chars_stay_for_open_transcripts(tmp_path):
    import wave

    import torch

    from rnnkit.data.speech import TOP_DB
    from rnnkit.tasks.speech import CHARS, _units, read_wav

    task = get_task("speech")
    meta = {"units": ["<blank>", *DIGIT_WORDS], "joiner": " ", "features": 80, "spec_augment": True}
    clips = [(np.zeros((30, 80), np.float32), "four two", "v"), (np.zeros((20, 80), np.float32), "nine", "v")]
    batch = task.collate(clips, meta)
    assert batch["y"].tolist() == [5, 3, 10] and batch["y_lengths"].tolist() == [2, 1]
    unseen = task.collate([(np.zeros((9, 80), np.float32), "four eleven", "v")], meta)  # not in the vocabulary
    assert unseen["y"].tolist() == [5] and unseen["y_lengths"].tolist() == [1]

    class Path_(torch.nn.Module):  # scores that spell blank four four blank two blank two
        def forward(self, x, lengths=None):
            ids = torch.tensor([0, 5, 5, 0, 3, 0, 3])
            return torch.nn.functional.one_hot(ids, 11).float().expand(x.shape[0], -1, -1)

    assert task.transcribe(Path_(), [np.zeros((7, 80), np.float32)], meta) == ["four two two"]
    assert _units({"chars": CHARS}) == (CHARS, "")  # a model saved before word units
    model = task.build(task.config(), meta)
    assert model.mask is not None and sum(p.numel() for p in model.mask.parameters()) == 0

    (tmp_path / "a.csv").write_text("audio,text\n" + "".join(f"{i}.wav,hello there\n" for i in range(10)))
    for i in range(10):
        with wave.open(str(tmp_path / f"{i}.wav"), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            w.writeframes((np.random.default_rng(i).normal(0, 0.1, 8000) * 32767).astype(np.int16).tobytes())
    data = task.prepare(task.config(data=str(tmp_path / "a.csv")))
    assert data.meta["units"] == CHARS and data.meta["joiner"] == ""  # auto: characters on a user's files
    assert data.meta["top_db"] == TOP_DB  # the features' floor, kept with the model

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x, lengths=None):
            seen.append(x[0, : int(lengths[0])].clone())
            return torch.zeros(x.shape[0], x.shape[1], len(CHARS))

    with wave.open(str(tmp_path / "quiet.wav"), "wb") as w:  # a tone, then digital silence
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        tone = np.sin(np.arange(16000) / 3) * (np.arange(16000) < 8000)
        w.writeframes((tone * 20000).astype(np.int16).tobytes())
    for meta in ({**data.meta}, {k: v for k, v in data.meta.items() if k != "top_db"}):  # new, and saved before
        task.predict(Recorder(), meta, [str(tmp_path / "quiet.wav")])
    assert torch.allclose(seen[0], torch.from_numpy(read_wav(tmp_path / "quiet.wav")))
    assert torch.allclose(seen[1], torch.from_numpy(read_wav(tmp_path / "quiet.wav", top_db=None)))
    assert not torch.allclose(seen[0], seen[1])
    words = task.prepare(task.config(data=str(tmp_path / "a.csv"), units="words"))
    assert words.meta["units"] == ["<blank>", "hello", "there"] and words.meta["joiner"] == " "
