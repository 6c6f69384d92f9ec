"""The bundled datasets load from the files their packages ship, with the documented sizes."""

import numpy as np
import pytest

from rnnkit.data import bundled
from rnnkit.data.music import bach_chorales, parse_melody
from rnnkit.data.speech import DIGIT_WORDS, VOICES, espeak_available, log_mel, spoken_digits, synthesize


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


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed (bash scripts/setup_data.sh)")
def test_espeak_clips_and_held_out_voices(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path))
    assert synthesize("seven", "en-us+m1").size > 2000
    clips = spoken_digits("test", 4)
    assert all(set(t.split()) <= set(DIGIT_WORDS) and v in VOICES["test"] for _, t, v in clips)
    assert not set(VOICES["test"]) & set(VOICES["train"]) and not set(VOICES["val"]) & set(VOICES["train"])
    again = spoken_digits("test", 4)  # from the cache
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(clips, again, strict=True))
