"""Generation (one-to-many): Bach chorale melodies, one note token at a time, conditioned on the
mode (major / minor); samples are written as MIDI. See :mod:`rnnkit.tasks._lm` for the model,
metric (held-out perplexity per note) and the interpolated n-gram baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from rnnkit.data.music import CHORALES, bach_chorales, parse_token, write_melody
from rnnkit.data.readers import DataError, read_lines
from rnnkit.data.text import split_three
from rnnkit.tasks._lm import LanguageModelTask
from rnnkit.tasks.base import Prepared, TaskConfig, register
from rnnkit.tasks.plots import plt, save_figure

__all__ = ["MusicTask"]


@register
class MusicTask(LanguageModelTask):
    name = "music"
    title = "Bach chorale melodies"
    topology = "one-to-many (Generator)"
    dataset = CHORALES
    user_format = ("plain text, one melody per line: a condition word, a tab, then space-separated note tokens "
                   "'<midi>_<quarter lengths>' or 'R_<quarter lengths>' (e.g. 'major<TAB>72_1 74_0.5 R_1'); "
                   "split 80/10/10 by a seeded shuffle")
    predict_format = ("one condition per line ('major' or 'minor'), or --data lines 'condition<TAB>notes' (the notes "
                      "ignored); prints a sampled melody of note tokens")
    defaults = dict(hidden=128, embedding=64, epochs=30, batch_size=16, lr=3e-3)
    picture_name = "sample.png"

    def sequences(self, cfg: TaskConfig):
        if cfg.data:
            melodies = []
            for line, text in read_lines(cfg.data):
                cond, sep, notes = text.partition("\t")
                if not sep or not notes.split():
                    raise DataError(cfg.data, line, "needs '<condition><TAB><note tokens>'")
                melodies.append((cond.strip(), notes.split()))
        else:
            melodies = bach_chorales()
        return split_three(melodies, seed=cfg.seed)

    def read_predict(self, path, text):
        """Conditions, one per line; a --data line's notes after the tab are ignored."""
        read = super().read_predict(path, text)
        read.items = [None if item is None else item.split("\t", 1)[0].strip() for item in read.items]
        return read

    def predict(self, model: nn.Module, meta: dict[str, Any], lines: list[str]) -> list[str]:
        """Each input line names a condition (``major`` or ``minor``); prints a sampled melody."""
        return [" ".join(self.sample(model, meta, line.strip(), seed=i)[0]) for i, line in enumerate(lines)]

    def picture(self, model: nn.Module, data: Prepared, path: Path) -> Path:
        """A piano roll of one sampled melody per condition, also written as MIDI next to it."""
        fig, axes = plt.subplots(len(data.meta["conditions"]), 1, figsize=(9, 2.2 * len(data.meta["conditions"])),
                                 squeeze=False)
        for ax, cond in zip(axes[:, 0], data.meta["conditions"], strict=True):
            toks = self.sample(model, data.meta, cond, seed=1, max_len=64)[0]
            try:
                write_melody(toks, path.with_name(f"sample_{cond}.mid"))
            except Exception as err:  # noqa: BLE001 - a picture must not fail a run
                print(f"could not write MIDI: {err}")
            t = 0.0
            for parsed in filter(None, map(parse_token, toks)):
                pitch, length = parsed
                if pitch is not None:
                    ax.broken_barh([(t, length)], (pitch - 0.4, 0.8))
                t += length
            ax.set_ylabel(f"{cond}\nMIDI pitch")
            ax.set_xlim(0, max(t, 1.0))
        axes[-1, 0].set_xlabel("quarter notes")
        fig.suptitle(f"{self.picture_title(data.meta)}: sampled melodies (MIDI in sample_*.mid)")
        return save_figure(fig, path)


_ = np  # numpy is re-exported for plots of user subclasses
