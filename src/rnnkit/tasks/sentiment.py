"""Sentiment analysis (many-to-one): tweets labelled negative / neutral / positive.

Model: :class:`rnnkit.SequenceClassifier` over word embeddings: a bidirectional GRU with attention
pooling (Yang et al. 2016), regularised for 30k tweets: word dropout (a training token becomes
``<unk>`` with probability 0.1; Iyyer et al. 2015), dropout on the embeddings (0.2) and before the
head (0.3), and label smoothing (0.1). Settings chosen on the validation split.
Metric: accuracy and macro-F1 on the held-out tweets. Baselines on the same split: the majority
class, and a bag-of-words (unigrams + bigrams) logistic regression (scikit-learn).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.bundled import TWEETS, tweets
from rnnkit.data.collate import pad
from rnnkit.data.readers import DataError, read_table
from rnnkit.data.text import split_three, tokenize
from rnnkit.data.vocab import Vocab
from rnnkit.models import RecurrentConfig, SequenceClassifier
from rnnkit.models._common import prepare_lengths
from rnnkit.tasks.base import Prepared, Task, TaskConfig, register
from rnnkit.tasks.plots import plot_confusion

__all__ = ["SentimentTask", "macro_f1"]

MAX_TOKENS = 60
UNK_ID = 3  # Vocab's <unk>
WORD_DROPOUT, EMBEDDING_DROPOUT, LABEL_SMOOTHING = 0.1, 0.2, 0.1


def macro_f1(pred: np.ndarray, true: np.ndarray, num_classes: int) -> float:
    scores = []
    for c in range(num_classes):
        tp = float(((pred == c) & (true == c)).sum())
        p, t = float((pred == c).sum()), float((true == c).sum())
        scores.append(0.0 if tp == 0 else 2 * tp / (p + t))
    return float(np.mean(scores))


class _Classifier(SequenceClassifier):
    """:class:`SequenceClassifier` with dropout on the word embeddings in training (same weights)."""

    def __init__(self, *args: Any, embedding_dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.embedding_dropout = nn.Dropout(embedding_dropout)

    def encode(self, x: Tensor, lengths: Tensor | list[int] | None = None) -> Tensor:
        h = self.embedding_dropout(self.inputs(x))  # (B, T, E)
        lengths = prepare_lengths(lengths, h.size(0), h.size(1), h.device)
        outputs, _ = self.rnn(h, lengths=lengths)  # (B, T, O)
        return self.pool(outputs, lengths)


@register
class SentimentTask(Task):
    name = "sentiment"
    title = "tweet sentiment"
    topology = "many-to-one (SequenceClassifier)"
    dataset = TWEETS
    metric, higher_is_better, baseline = "accuracy", True, "bow_logreg_accuracy"
    user_format = "CSV/TSV with columns 'text' and 'label' (any label names); UTF-8; split 80/10/10 by a seeded shuffle"
    defaults = dict(cell="gru", hidden=64, embedding=128, epochs=4, batch_size=128, lr=4e-3, bidirectional=True,
                    max_train=0)
    picture_name = "confusion.png"

    def prepare(self, cfg: TaskConfig) -> Prepared:
        if cfg.data:
            pairs = [(row["label"], row["text"]) for _, row in read_table(cfg.data, ["text", "label"])]
            if len({lab for lab, _ in pairs}) < 2:
                raise DataError(cfg.data, None, "column 'label' has a single value; classification needs two or more")
        else:
            pairs = tweets()
        examples = [(label, tokenize(text)[:MAX_TOKENS] or ["<unk>"], text) for label, text in pairs]
        train, val, test = split_three(examples, seed=cfg.seed)
        if cfg.max_train:
            train = train[: cfg.max_train]
        vocab = Vocab.build((toks for _, toks, _ in train), min_freq=2, max_size=30000)
        labels = sorted({lab for lab, _, _ in train})
        return Prepared(train, val, test, {"vocab": vocab.to_dict(), "labels": labels})

    def length(self, example: Any) -> int:
        return len(example[1])

    def collate(self, examples: list[Any], meta: dict[str, Any]) -> dict[str, Tensor]:
        vocab = meta.get("_vocab") or Vocab.from_dict(meta["vocab"])
        index = {lab: i for i, lab in enumerate(meta["labels"])}
        x, lengths = pad([vocab.encode(toks) for _, toks, _ in examples])
        y = torch.tensor([index.get(lab, -100) for lab, _, _ in examples])
        return {"x": x, "y": y, "lengths": lengths}

    def build(self, cfg: TaskConfig, meta: dict[str, Any]) -> nn.Module:
        rc = RecurrentConfig(cell=cfg.cell, hidden_size=cfg.hidden, num_layers=cfg.layers,
                             bidirectional=cfg.bidirectional)
        return _Classifier(len(meta["labels"]), rc, vocab_size=len(meta["vocab"]["itos"]), embedding_dim=cfg.embedding,
                           padding_idx=0, pooling="attention", head_dropout=0.3, embedding_dropout=EMBEDDING_DROPOUT)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        x = batch["x"]
        if model.training and WORD_DROPOUT:  # word dropout: real tokens become <unk>
            x = x.masked_fill((torch.rand(x.shape, device=x.device) < WORD_DROPOUT) & (x != 0), UNK_ID)
        return F.cross_entropy(model(x, lengths=batch["lengths"]), batch["y"], label_smoothing=LABEL_SMOOTHING)

    @torch.no_grad()
    def _predict_ids(self, model: nn.Module, examples: list[Any], meta: dict[str, Any]) -> tuple[np.ndarray, ...]:
        preds, trues = [], []
        for i in range(0, len(examples), 256):
            b = self.collate(examples[i : i + 256], meta)
            preds.append(model(b["x"], lengths=b["lengths"]).argmax(-1))
            trues.append(b["y"])
        return torch.cat(preds).numpy(), torch.cat(trues).numpy()

    def evaluate(self, model: nn.Module, examples: list[Any], meta: dict[str, Any]) -> dict[str, float]:
        pred, true = self._predict_ids(model, examples, meta)
        return {"accuracy": float((pred == true).mean()), "macro_f1": macro_f1(pred, true, len(meta["labels"]))}

    def baselines(self, data: Prepared) -> dict[str, float]:
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.linear_model import LogisticRegression

        train_y = [lab for lab, _, _ in data.train]
        test_y = np.array([lab for lab, _, _ in data.test])
        majority = max(set(train_y), key=train_y.count)
        bigrams = lambda toks: toks + [a + " " + b for a, b in zip(toks, toks[1:], strict=False)]  # noqa: E731
        if len(set(train_y)) < 2:  # a tiny user file: logistic regression needs two classes
            pred = np.array([majority] * len(test_y))
        else:
            vec = CountVectorizer(analyzer=bigrams, min_df=2 if len(train_y) >= 100 else 1)
            xtr = vec.fit_transform([toks for _, toks, _ in data.train])
            clf = LogisticRegression(max_iter=1000, C=0.5).fit(xtr, train_y)
            pred = clf.predict(vec.transform([toks for _, toks, _ in data.test]))
        labels = sorted(set(train_y))
        ids = {lab: i for i, lab in enumerate(labels)}
        as_ids = lambda a: np.array([ids.get(v, -1) for v in a])  # noqa: E731
        return {"majority_accuracy": float((test_y == majority).mean()),
                "bow_logreg_accuracy": float((pred == test_y).mean()),
                "bow_logreg_macro_f1": macro_f1(as_ids(pred), as_ids(test_y), len(labels))}

    @torch.no_grad()
    def predict(self, model: nn.Module, meta: dict[str, Any], lines: list[str]) -> list[str]:
        vocab = Vocab.from_dict(meta["vocab"])
        out = []
        for line in lines:
            x = torch.tensor([vocab.encode(tokenize(line)[:MAX_TOKENS] or ["<unk>"])])
            p = model(x).softmax(-1)[0]
            out.append(f"{meta['labels'][int(p.argmax())]}\t{float(p.max()):.3f}")
        return out

    def picture(self, model: nn.Module, data: Prepared, path: Path) -> Path:
        pred, true = self._predict_ids(model, data.test, data.meta)
        k = len(data.meta["labels"])
        m = np.zeros((k, k), dtype=int)
        for t, p in zip(true, pred, strict=True):
            if t >= 0:
                m[t, p] += 1
        return plot_confusion(m, data.meta["labels"], path, f"{self.title}: test confusion matrix")

    def export_inputs(self, model, meta):
        vocab = Vocab.from_dict(meta["vocab"])
        x = torch.tensor([vocab.encode(tokenize("this is a great day, love it!"))])
        return model, (x,), ["tokens"]
