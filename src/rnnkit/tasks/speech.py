"""Speech recognition (many-to-many, unequal lengths): spoken digit strings, BiLSTM + CTC.

Model: a bidirectional :class:`rnnkit.SequenceTagger` over log-mel frames whose per-frame scores
over ``blank + characters`` are trained with connectionist temporal classification (Graves,
Fernandez, Gomez & Schmidhuber, ICML 2006) and decoded by best path (argmax per frame, repeats
merged, blanks dropped). Data: :mod:`rnnkit.data.speech` (espeak-ng voices; test on a held-out
accent and held-out speakers). Metrics: word error rate and character error rate (jiwer). Baseline
on the same clips: always answering the most frequent training word. With Debian's
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
from rnnkit.data.speech import SPEECH, band_mask, log_mel, read_pcm16, real_digits, real_digits_available, spoken_digits
from rnnkit.data.text import split_three
from rnnkit.models import RecurrentConfig, SequenceTagger
from rnnkit.tasks.base import Prepared, Task, TaskConfig, register
from rnnkit.tasks.plots import plot_heatmap

__all__ = ["SpeechTask", "read_wav"]

CHARS = ["<blank>", " ", *"abcdefghijklmnopqrstuvwxyz'"]


def read_wav(path: str | Path, where: tuple[str, int] | None = None) -> np.ndarray:
    """Log-mel features of a 16-bit PCM WAV file (mono, or the first channel)."""
    import wave

    try:
        x, sr = read_pcm16(path)
    except (OSError, EOFError, ValueError, wave.Error) as err:
        if where:
            raise DataError(where[0], where[1], f"cannot read audio {str(path)!r}: {err}") from None
        raise ValueError(f"cannot read audio {str(path)!r}: {err}") from None
    return log_mel(x, sr)


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
class BandLimited(nn.Module):
    """A tagger that sees its features times a fixed 0/1 ``keep`` mask (a buffer: saved with it)."""

    def __init__(self, tagger: nn.Module, keep: Tensor) -> None:
        super().__init__()
        self.tagger = tagger
        self.register_buffer("keep", keep)

    def forward(self, x: Tensor, lengths: Tensor | list[int] | None = None) -> Tensor:
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
                clips.append((read_wav(base / row["audio"], (cfg.data, line)), text, "user"))
            train, val, test = split_three(clips, seed=cfg.seed)
            train = self.cap(cfg, train)
        else:
            train = spoken_digits("train", cfg.max_train or 1600, cfg.seed)
            val, test = spoken_digits("val", 160, cfg.seed), spoken_digits("test", 300, cfg.seed)
        real = not cfg.data and real_digits_available()
        return Prepared(train, val, test, {"chars": CHARS, "features": int(train[0][0].shape[1]), "real_test": real})

    def length(self, example: Any) -> int:
        return len(example[0])

    def collate(self, examples: list[Any], meta: dict[str, Any]) -> dict[str, Tensor]:
        index = {c: i for i, c in enumerate(meta["chars"])}
        feats = [torch.from_numpy(np.asarray(f, dtype=np.float32)) for f, _, _ in examples]
        x, lengths = pad(feats, dtype=torch.float32)  # (B, T, F)
        targets = [torch.tensor([index[c] for c in t], dtype=torch.long) for _, t, _ in examples]
        y = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long)
        return {"x": x, "y": y, "lengths": lengths, "y_lengths": torch.tensor([len(t) for t in targets])}

    def build(self, cfg: TaskConfig, meta: dict[str, Any]) -> nn.Module:
        rc = RecurrentConfig(cell=cfg.cell, hidden_size=cfg.hidden, num_layers=cfg.layers,
                             bidirectional=cfg.bidirectional, dropout=0.2 if cfg.layers > 1 else 0.0)
        tagger = SequenceTagger(len(meta["chars"]), rc, input_size=meta["features"])
        return BandLimited(tagger, torch.from_numpy(band_mask(BAND_LIMIT_HZ, stack=meta["features"] // 40)))

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        logp = model(batch["x"], batch["lengths"]).log_softmax(-1)  # (B, T, K)
        return F.ctc_loss(logp.transpose(0, 1), batch["y"], batch["lengths"], batch["y_lengths"], blank=0,
                          zero_infinity=True)

    @torch.no_grad()
    def transcribe(self, model: nn.Module, feats: list[np.ndarray], meta: dict[str, Any]) -> list[str]:
        out = []
        for i in range(0, len(feats), 64):
            x, lengths = pad([torch.from_numpy(np.asarray(f, dtype=np.float32)) for f in feats[i : i + 64]],
                             dtype=torch.float32)
            best = model(x, lengths).argmax(-1)  # (B, T): best path
            for row, n in zip(best.tolist(), lengths.tolist(), strict=True):
                chars, prev = [], 0
                for k in row[:n]:
                    if k != prev and k != 0:
                        chars.append(meta["chars"][k])
                    prev = k
                out.append(" ".join("".join(chars).split()))
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
        return self.transcribe(model, [read_wav(p) for p in paths], meta)

    @torch.no_grad()
    def picture(self, model: nn.Module, data: Prepared, path: Path) -> Path:
        feats, text, voice = max(data.test[:40], key=lambda e: len(e[1]))
        post = model(torch.from_numpy(feats).unsqueeze(0))[0].softmax(-1).numpy().T  # (K, T)
        used = [i for i, c in enumerate(data.meta["chars"]) if i == 0 or c in text or post[i].max() > 0.3]
        got = self.transcribe(model, [feats], data.meta)[0]
        return plot_heatmap(post[used], [str(t) if t % 10 == 0 else "" for t in range(post.shape[1])],
                            [repr(data.meta["chars"][i]) for i in used], path,
                            f"CTC posteriors, held-out voice {voice}: {text!r} -> {got!r}",
                            xlabel="audio frame", ylabel="character", value="posterior probability")

    def onnx_bundle(self, model, meta):
        from rnnkit.onnx_graphs import FrameGraph, OnnxBundle, OnnxGraph, batch_time, random_lengths

        def example(batch: int, length: int):
            g = torch.Generator().manual_seed(batch * 1000 + length)
            lengths = random_lengths(batch, length, g)
            return torch.randn(batch, length, meta["features"], generator=g), lengths

        graph = OnnxGraph("frames", FrameGraph(model), example, ["features", "lengths"], ["log_probs"],
                          batch_time("features", "log_probs", extra={"lengths": {0: "batch"}}))
        return OnnxBundle("ctc", [graph], {"chars": meta["chars"], "blank": 0})
