"""Speech recognition (many-to-many, unequal lengths): spoken digit strings, BiLSTM + CTC.

Model: a bidirectional :class:`rnnkit.SequenceTagger` over log-mel frames whose per-frame scores
over ``blank + units`` are trained with connectionist temporal classification (Graves, Fernandez,
Gomez & Schmidhuber, ICML 2006) and decoded by best path (argmax per frame, repeats merged, blanks
dropped). The units are whole words for a closed vocabulary such as the ten digits (whole-word
models, as digit recognisers have long used) or characters for open transcripts (``--units``).
Data: :mod:`rnnkit.data.speech` (espeak-ng and flite voices, augmented; test on a held-out accent
and held-out speakers). In training, SpecAugment (Park et al., Interspeech 2019) masks random mel
bands and time spans. Metrics: word error rate and character error rate (jiwer). Baseline on the
same clips: always answering the most frequent training word. With Debian's
``asterisk-core-sounds-en-wav`` installed, the same metrics on a real human voice too
(``real_wer``...: :func:`rnnkit.data.speech.real_digits`), which the model never hears in training.
The model sees only the mel bands below 4 kHz, as 8 kHz audio has nothing above.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.collate import pad
from rnnkit.data.readers import DataError, read_table
from rnnkit.data.speech import (
    DIGIT_WORDS,
    SPEECH,
    TOP_DB,
    band_mask,
    log_mel,
    read_pcm16,
    real_digits,
    real_digits_available,
    spoken_digits,
)
from rnnkit.data.text import split_three
from rnnkit.models import RecurrentConfig, SequenceTagger
from rnnkit.tasks.base import Prepared, Task, TaskConfig, register
from rnnkit.tasks.plots import plot_heatmap

__all__ = ["SpeechTask", "read_wav"]

CHARS = ["<blank>", " ", *"abcdefghijklmnopqrstuvwxyz'"]


def _units(meta: dict[str, Any]) -> tuple[list[str], str]:
    """The CTC output units (index 0 the blank) and the string that joins decoded units (a model
    saved before word units existed has ``meta["chars"]``)."""
    if "units" in meta:
        return meta["units"], meta["joiner"]
    return meta["chars"], ""


def read_wav(path: str | Path, where: tuple[str, int] | None = None, top_db: float | None = TOP_DB) -> np.ndarray:
    """Log-mel features of a 16-bit PCM WAV file (mono, or the first channel), with ``top_db`` the
    floor of :func:`rnnkit.data.speech.log_mel` (a model keeps the one it was trained with)."""
    import wave

    try:
        x, sr = read_pcm16(path)
    except (OSError, EOFError, ValueError, wave.Error) as err:
        if where:
            raise DataError(where[0], where[1], f"cannot read audio {str(path)!r}: {err}") from None
        raise ValueError(f"cannot read audio {str(path)!r}: {err}") from None
    return log_mel(x, sr, top_db=top_db)


def _errors(pred: list[str], gold: list[str]) -> dict[str, float]:
    """Corpus word and character error rates (edits over the gold words / characters, by jiwer) and
    the share of utterances transcribed exactly."""
    import jiwer

    return {"wer": float(jiwer.wer(gold, pred)), "cer": float(jiwer.cer(gold, pred)),
            "exact_match": float(np.mean([p == g for p, g in zip(pred, gold, strict=True)]))}


#: the model hears only the mel bands below this (the features above are zeroed): telephone audio
#: (8 kHz sampling) has nothing there, so a model that used them would not transfer to it. Measured
#: (20 epochs): synthetic test WER 0.201 with the limit, 0.211 without; the real voice stays near 1.1
BAND_LIMIT_HZ = 4000.0


class SpecAugment(nn.Module):
    """In training only (as dropout), each example's features with ``bands`` random spans of up to
    ``band_width`` mel bands and ``spans`` random time spans of up to ``span`` frames (at most a fifth
    of its frames) set to zero, its mean (the features are normalised per utterance): Park et al.,
    "SpecAugment", Interspeech 2019, without the time warping. ``n_mels`` bands repeat across the
    stacked frames of :func:`rnnkit.data.speech.log_mel`, and a band is masked in each."""

    def __init__(self, n_mels: int = 40, bands: int = 2, band_width: int = 6, spans: int = 2, span: int = 8) -> None:
        super().__init__()
        self.n_mels, self.bands, self.band_width, self.spans, self.span = n_mels, bands, band_width, spans, span

    def forward(self, x: Tensor, lengths: Tensor | list[int] | None = None) -> Tensor:
        if not self.training:
            return x
        B, T, D = x.shape
        lengths = torch.as_tensor(lengths if lengths is not None else [T] * B, device=x.device)
        keep = torch.ones(B, T, D, dtype=x.dtype, device=x.device)
        bands = torch.arange(D, device=x.device) % self.n_mels  # (D,): each feature's mel band
        steps = torch.arange(T, device=x.device)
        for _ in range(self.bands):
            width = torch.randint(0, self.band_width + 1, (B, 1), device=x.device)
            start = (torch.rand(B, 1, device=x.device) * (self.n_mels - width + 1)).floor()
            keep = keep * ~((bands >= start) & (bands < start + width)).unsqueeze(1)
        for _ in range(self.spans):
            most = torch.clamp(lengths // 5, 0, self.span)
            width = (torch.rand(B, device=x.device) * (most + 1)).floor().unsqueeze(1)  # (B, 1)
            start = (torch.rand(B, 1, device=x.device) * (lengths.unsqueeze(1) - width + 1)).floor()
            keep = keep * ~((steps >= start) & (steps < start + width)).unsqueeze(2)
        return x * keep


class BandLimited(nn.Module):
    """A tagger that sees its features times a fixed 0/1 ``keep`` mask (a buffer: saved with it),
    after ``mask`` (a :class:`SpecAugment`, active in training only) when given."""

    def __init__(self, tagger: nn.Module, keep: Tensor, mask: nn.Module | None = None) -> None:
        super().__init__()
        self.tagger = tagger
        self.register_buffer("keep", keep)
        self.mask = mask

    def forward(self, x: Tensor, lengths: Tensor | list[int] | None = None) -> Tensor:
        if self.mask is not None:
            x = self.mask(x, lengths)
        return self.tagger(x * self.keep, lengths)


@register
class SpeechTask(Task):
    name = "speech"
    title = "spoken digit strings"
    topology = "many-to-many unequal (BiLSTM + CTC)"
    dataset = SPEECH
    metric, higher_is_better, baseline = "wer", False, "majority_word_wer"
    user_format = ("CSV/TSV with columns 'audio' (path of a 16-bit PCM WAV file, relative to the CSV) and 'text' "
                   "(its transcript: lower-case letters, spaces, apostrophes); split 80/10/10 by a seeded shuffle")
    predict_format = "one 16-bit WAV path per line, or the --data table's 'audio' column; prints the transcript"
    input_column, target_column, input_is_path = "audio", "text", True
    defaults = dict(hidden=64, epochs=20, batch_size=32, lr=3e-3, bidirectional=True, layers=1, max_train=800)
    picture_name = "ctc.png"

    data_keys = ("real_test",)

    def prepare(self, cfg: TaskConfig) -> Prepared:
        if cfg.data:
            base = Path(cfg.data).parent
            clips = []
            for line, row in read_table(cfg.data, ["audio", "text"]):
                text = " ".join(row["text"].lower().split())
                bad = sorted(set(text) - set(CHARS[1:]))
                if bad:
                    raise DataError(cfg.data, line, f"transcript has characters {bad}; use a-z, space and '")
                if not text:
                    raise DataError(cfg.data, line, "the transcript is empty")
                clips.append((read_wav(base / row["audio"], (cfg.data, line)), text, "user"))
            train, val, test = split_three(clips, seed=cfg.seed)
            train = self.cap(cfg, train)
            words = sorted({w for _, t, _ in train for w in t.split()})
        else:
            train = spoken_digits("train", cfg.max_train or 1600, cfg.seed, augmented=cfg.augment,
                                  progress=cfg.progress)
            val = spoken_digits("val", 160, cfg.seed, progress=cfg.progress)
            test = spoken_digits("test", 300, cfg.seed, progress=cfg.progress)
            words = list(DIGIT_WORDS)
        by_word = cfg.units == "words" or (cfg.units == "auto" and not cfg.data)
        units, joiner = (["<blank>", *words], " ") if by_word else (CHARS, "")
        real = not cfg.data and real_digits_available()
        return Prepared(train, val, test, {"units": units, "joiner": joiner, "features": int(train[0][0].shape[1]),
                                           "real_test": real, "spec_augment": cfg.augment, "top_db": TOP_DB})

    def length(self, example: Any) -> int:
        return len(example[0])

    def collate(self, examples: list[Any], meta: dict[str, Any]) -> dict[str, Tensor]:
        """Padded features and concatenated CTC targets. With word units, a word outside the
        training vocabulary (in a validation or test transcript) is left out of the target: the
        model cannot say it, and the error rates still count it."""
        units, joiner = _units(meta)
        index = {c: i for i, c in enumerate(units)}
        feats = [torch.from_numpy(np.asarray(f, dtype=np.float32)) for f, _, _ in examples]
        x, lengths = pad(feats, dtype=torch.float32)  # (B, T, F)
        tokens = [t.split() if joiner else list(t) for _, t, _ in examples]
        targets = [torch.tensor([index[c] for c in ts if c in index], dtype=torch.long) for ts in tokens]
        y = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long)
        return {"x": x, "y": y, "lengths": lengths, "y_lengths": torch.tensor([len(t) for t in targets])}

    def build(self, cfg: TaskConfig, meta: dict[str, Any]) -> nn.Module:
        rc = RecurrentConfig(cell=cfg.cell, hidden_size=cfg.hidden, num_layers=cfg.layers,
                             bidirectional=cfg.bidirectional, dropout=0.2 if cfg.layers > 1 else 0.0)
        tagger = SequenceTagger(len(_units(meta)[0]), rc, input_size=meta["features"])
        mask = SpecAugment() if meta.get("spec_augment") else None
        return BandLimited(tagger, torch.from_numpy(band_mask(BAND_LIMIT_HZ, stack=meta["features"] // 40)), mask)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        logp = model(batch["x"], batch["lengths"]).log_softmax(-1)  # (B, T, K)
        return F.ctc_loss(logp.transpose(0, 1), batch["y"], batch["lengths"], batch["y_lengths"], blank=0,
                          zero_infinity=True)

    @torch.no_grad()
    def transcribe(self, model: nn.Module, feats: list[np.ndarray], meta: dict[str, Any]) -> list[str]:
        units, joiner = _units(meta)
        out = []
        for i in range(0, len(feats), 64):
            x, lengths = pad([torch.from_numpy(np.asarray(f, dtype=np.float32)) for f in feats[i : i + 64]],
                             dtype=torch.float32)
            best = model(x, lengths).argmax(-1)  # (B, T): best path
            for row, n in zip(best.tolist(), lengths.tolist(), strict=True):
                chars, prev = [], 0
                for k in row[:n]:
                    if k != prev and k != 0:
                        chars.append(units[k])
                    prev = k
                out.append(" ".join(joiner.join(chars).split()))
        return out

    def evaluate(self, model: nn.Module, examples: list[Any], meta: dict[str, Any]) -> dict[str, float]:
        return _errors(self.transcribe(model, [f for f, _, _ in examples], meta), [t for _, t, _ in examples])

    def test_extras(self, model: nn.Module, data: Prepared) -> dict[str, float]:
        """With the bundled data and Debian's asterisk-core-sounds-en-wav installed: the same metrics
        on 200 digit strings spliced from a real speaker's recordings (``real_wer``, ...)."""
        if not data.meta.get("real_test"):
            return {}
        clips = real_digits()
        scores = _errors(self.transcribe(model, [f for f, _, _ in clips], data.meta), [t for _, t, _ in clips])
        return {f"real_{k}": v for k, v in scores.items()}

    def baselines(self, data: Prepared) -> dict[str, float]:
        word = Counter(w for _, t, _ in data.train for w in t.split()).most_common(1)[0][0]
        scores = _errors([word] * len(data.test), [t for _, t, _ in data.test])
        return {f"majority_word_{k}": v for k, v in scores.items()}

    def predict(self, model: nn.Module, meta: dict[str, Any], lines: list[str]) -> list[str]:
        """Each input line is the path of a 16-bit WAV file; prints its transcript."""
        paths = [line.strip() for line in lines]
        # a model saved before the floor existed has no "top_db": its features had none
        return self.transcribe(model, [read_wav(p, top_db=meta.get("top_db")) for p in paths], meta)

    @torch.no_grad()
    def picture(self, model: nn.Module, data: Prepared, path: Path) -> Path:
        feats, text, voice = max(data.test[:40], key=lambda e: len(e[1]))
        post = model(torch.from_numpy(feats).unsqueeze(0))[0].softmax(-1).numpy().T  # (K, T)
        units, joiner = _units(data.meta)
        said = set(text.split() if joiner else text)
        used = [i for i, c in enumerate(units) if i == 0 or c in said or post[i].max() > 0.3]
        got = self.transcribe(model, [feats], data.meta)[0]
        return plot_heatmap(post[used], [str(t) if t % 10 == 0 else "" for t in range(post.shape[1])],
                            [repr(units[i]) for i in used], path,
                            f"CTC posteriors, held-out voice {voice}: {text!r} -> {got!r}",
                            xlabel="audio frame", ylabel="word" if joiner else "character",
                            value="posterior probability")

    def onnx_bundle(self, model, meta):
        from rnnkit.onnx_graphs import FrameGraph, OnnxBundle, OnnxGraph, batch_time, random_lengths

        def example(batch: int, length: int):
            g = torch.Generator().manual_seed(batch * 1000 + length)
            lengths = random_lengths(batch, length, g)
            return torch.randn(batch, length, meta["features"], generator=g), lengths

        graph = OnnxGraph("frames", FrameGraph(model), example, ["features", "lengths"], ["log_probs"],
                          batch_time("features", "log_probs", extra={"lengths": {0: "batch"}}))
        units, joiner = _units(meta)
        return OnnxBundle("ctc", [graph], {"chars": units, "joiner": joiner, "blank": 0})
