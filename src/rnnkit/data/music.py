"""Bach chorale melodies from music21's bundled corpus, as note tokens, and back to MIDI.

The 371 four-part chorales of ``music21.corpus.chorales.Iterator()`` ship as compressed MusicXML
inside the music21 wheel. Parsing them with music21 takes about a second each, so this module
reads the soprano part (the first ``<part>``) straight from the XML (a few ms each): notes of the
first voice, ties merged, chords and grace notes skipped. Each melody is transposed to C major /
A minor (by its key signature), and every note becomes one token ``"<midi pitch>_<quarter
lengths>"`` (``"R_<quarter lengths>"`` for a rest); the mode (major/minor) is kept as a condition.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from rnnkit.data.bundled import DatasetInfo, require

__all__ = ["CHORALES", "Melody", "bach_chorales", "parse_melody", "parse_token", "write_melody"]

CHORALES = DatasetInfo(
    "bach-chorales", "music21: music21/corpus/bach (corpus.chorales.Iterator(), Riemenschneider numbering)",
    "BSD-3-Clause (music21); the chorale encodings are public domain",
    "371 four-part chorales; rnnkit reads the soprano melodies of the 368 in MusicXML",
    "chorales split 80 / 10 / 10 by a seeded shuffle (whole chorales held out)", "pip install music21",
    "J. S. Bach, 371 four-part chorales; Cuthbert & Ariza, music21, ISMIR 2010",
)

_STEPS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}

Melody = tuple[str, list[str]]  # (mode, tokens)


def _quarter(duration: int, divisions: int) -> str:
    q = round(4 * duration / divisions) / 4  # to the nearest sixteenth
    return f"{max(q, 0.25):g}"


def parse_melody(xml_text: str | bytes) -> Melody | None:
    """``(mode, tokens)`` of the first part of a MusicXML score, or None without notes."""
    root = ET.fromstring(xml_text)
    part = root.find("part")
    if part is None:
        return None
    divisions, fifths, mode = 1, 0, "major"
    notes: list[list] = []  # [midi or None, duration in divisions]
    for measure in part.iter("measure"):
        for el in measure:
            if el.tag == "attributes":
                divisions = int(el.findtext("divisions") or divisions)
                key = el.find("key")
                if key is not None:
                    fifths = int(key.findtext("fifths") or 0)
                    mode = key.findtext("mode") or mode
            elif el.tag == "note":
                if el.find("chord") is not None or el.find("grace") is not None:
                    continue
                if (el.findtext("voice") or "1") != "1":
                    continue
                dur = int(el.findtext("duration") or 0)
                if el.find("rest") is not None:
                    midi = None
                else:
                    p = el.find("pitch")
                    midi = 12 * (int(p.findtext("octave")) + 1) + _STEPS[p.findtext("step")] + int(
                        float(p.findtext("alter") or 0))
                tied = any(t.get("type") == "stop" for t in el.findall("tie"))
                if tied and notes and notes[-1][0] == midi:
                    notes[-1][1] += dur
                else:
                    notes.append([midi, dur, divisions])
    if not any(n[0] is not None for n in notes):
        return None
    shift = -((fifths * 7) % 12)  # semitones to C major / A minor
    if shift < -6:
        shift += 12
    tokens = [("R" if m is None else str(m + shift)) + "_" + _quarter(d, div) for m, d, div in notes]
    return ("minor" if mode == "minor" else "major"), tokens


def _chorale_paths() -> list[Path]:
    require("music21", CHORALES.install)
    from music21 import corpus

    paths = []
    for item in corpus.chorales.Iterator(returnType="filename"):
        work = corpus.getWork(item)
        work = work[0] if isinstance(work, list) else work
        paths.append(Path(work))
    return paths


def _read_score(path: Path) -> bytes:
    if path.suffix == ".mxl":
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if not n.startswith("META-INF") and n.endswith((".xml", ".musicxml")))
            return z.read(name)
    return path.read_bytes()


def bach_chorales(limit: int | None = None) -> list[Melody]:
    """The soprano melodies of Bach's chorales as ``(mode, tokens)``, in corpus order."""
    out = []
    for path in [p for p in _chorale_paths() if p.suffix in (".mxl", ".xml", ".musicxml")][:limit]:
        melody = parse_melody(_read_score(path))
        if melody is not None and len(melody[1]) >= 8:
            out.append(melody)
    return out


def parse_token(token: str) -> tuple[int | None, float] | None:
    """``"<pitch>_<quarters>"`` -> ``(midi pitch, quarter lengths)``; a rest has pitch None.
    Tokens that are no note (end marks, unknown words) give None."""
    pitch, _, quarters = token.partition("_")
    try:
        length = float(quarters)
    except ValueError:
        return None
    if pitch == "R":
        return None, length
    return (int(pitch), length) if pitch.isdigit() else None


def write_melody(tokens: list[str], path: str | Path) -> Path:
    """Write note tokens as a MIDI file (``.mid``) or MusicXML (``.musicxml``) with music21."""
    from music21 import note, stream

    s = stream.Stream()
    for tok in tokens:
        parsed = parse_token(tok)
        if parsed is None:
            continue
        pitch, length = parsed
        s.append(note.Rest(quarterLength=length) if pitch is None else note.Note(pitch, quarterLength=length))
    path = Path(path)
    s.write("midi" if path.suffix in (".mid", ".midi") else "musicxml", fp=str(path))
    return path
