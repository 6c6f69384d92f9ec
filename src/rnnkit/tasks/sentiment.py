"""Sentiment analysis (many-to-one): tweets labelled negative / neutral / positive.

Model: :class:`rnnkit.SequenceClassifier` over word embeddings: a bidirectional GRU with attention
pooling (Yang et al. 2016), regularised for 30k tweets: word dropout (a training token becomes
``<unk>`` with probability 0.1; Iyyer et al. 2015), dropout on the embeddings (0.2) and before the
head (0.3), and label smoothing (0.1). ``--ensemble N`` (default 3) trains N such classifiers side
by side from different initialisations and averages their probabilities (Hansen & Salamon 1990);
each member is also scored alone. ``--ngrams`` gives each member a linear part over the tweet's
word 1-2-grams, trained with the network (wide & deep; see :class:`_Classifier`). Each training
tweet's loss is weighted by the corpus's annotator confidence in its label. Settings chosen on the
validation split.

Data hygiene: texts that tokenize the same (retweets, copies: 6% of the corpus) are merged before
the split, so no test tweet is also a training tweet.

Metric: accuracy and macro-F1 on the held-out tweets. Baselines on the same split: the majority
class, and a bag-of-words (unigrams + bigrams) logistic regression (scikit-learn) trained with the
same confidence weights, its regularisation ``C`` chosen on the validation split.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.bundled import TWEETS, rated_tweets
from rnnkit.data.collate import pad
from rnnkit.data.readers import DataError, read_table
from rnnkit.data.text import split_three, tokenize
from rnnkit.data.vocab import Vocab
from rnnkit.models import RecurrentConfig, SequenceClassifier
from rnnkit.models._common import prepare_lengths
from rnnkit.tasks.base import Prepared, Task, TaskConfig, register
from rnnkit.tasks.plots import plot_confusion

__all__ = ["Ensemble", "SentimentTask", "deduplicate", "macro_f1", "text_ngrams"]

Example = tuple[str, list[str], str, float]  # (label, tokens, raw text, loss weight)

MAX_TOKENS = 60
UNK_ID = 3  # Vocab's <unk>
WORD_DROPOUT, EMBEDDING_DROPOUT, LABEL_SMOOTHING = 0.1, 0.2, 0.1
NGRAM_DROPOUT = 0.2  # --ngrams: each n-gram of a training tweet is left out with this probability
NGRAM_MIN_TEXTS = 2  # --ngrams: an n-gram is a feature when it occurs in this many training texts
BOW_C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0)  # the baseline's C, picked on the validation split


def text_ngrams(tokens: list[str]) -> list[str]:
    """A text's n-gram features, each once, in order of appearance: its tokens and each pair of
    neighbouring tokens, joined by a space (word 1- and 2-grams; ``rnnkit.onnx_runner`` repeats this)."""
    return list(dict.fromkeys(tokens + [a + " " + b for a, b in zip(tokens, tokens[1:], strict=False)]))


def macro_f1(pred: np.ndarray, true: np.ndarray, num_classes: int) -> float:
    """Macro-averaged F1 over all ``num_classes`` classes (a class never predicted nor present scores
    0), by scikit-learn."""
    from sklearn.metrics import f1_score

    return float(f1_score(true, pred, labels=list(range(num_classes)), average="macro", zero_division=0))


def class_f1(pred: np.ndarray, true: np.ndarray, num_classes: int) -> float:
    """The same macro-F1 written out (the test checks that scikit-learn agrees with it)."""
    scores = []
    for c in range(num_classes):
        tp = float(((pred == c) & (true == c)).sum())
        p, t = float((pred == c).sum()), float((true == c).sum())
        scores.append(0.0 if tp == 0 else 2 * tp / (p + t))
    return float(np.mean(scores))


def deduplicate(examples: list[Example]) -> list[Example]:
    """One example per token sequence, so no test text is also a training text. Copies with
    different labels take the majority label (a tie drops the text) and the mean weight of the
    copies that carry it; the first copy's raw text is kept."""
    groups: dict[tuple[str, ...], list[Example]] = {}
    for ex in examples:
        groups.setdefault(tuple(ex[1]), []).append(ex)
    out = []
    for copies in groups.values():
        votes = Counter(ex[0] for ex in copies).most_common(2)
        if len(votes) > 1 and votes[0][1] == votes[1][1]:
            continue
        label = votes[0][0]
        weights = [ex[3] for ex in copies if ex[0] == label]
        out.append((label, copies[0][1], copies[0][2], sum(weights) / len(weights)))
    return out


def _weight(path: str, line: int, value: str | None) -> float:
    if value is None or value == "":
        return 1.0
    try:
        w = float(value)
    except ValueError:
        raise DataError(path, line, f"column 'weight' must be a number, got {value!r}") from None
    if not (w >= 0 and np.isfinite(w)):
        raise DataError(path, line, f"column 'weight' must be finite and >= 0, got {value!r}")
    return w


class _Classifier(SequenceClassifier):
    """:class:`SequenceClassifier` with dropout on the word embeddings in training (same weights).

    With ``ngram_features`` > 0, a linear model over the tweet's n-grams (:func:`text_ngrams`, given as
    ids ``(B, F)``, 0 for padding) adds its logits to the network's: the "wide" part of wide & deep
    (Cheng et al. 2016), trained jointly, as an RNN and a bag-of-n-grams model complement each other
    in an ensemble (Mesnil et al. 2014). Each n-gram has a weight per class, initialised to 0; a
    tweet's n-gram logits are the sum of its n-grams' weights over sqrt(their number). In training
    each n-gram is left out with probability ``NGRAM_DROPOUT``.
    """

    def __init__(self, num_classes: int, *args: Any, embedding_dropout: float = 0.0, ngram_features: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(num_classes, *args, **kwargs)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.ngrams = nn.Embedding(ngram_features + 1, num_classes, padding_idx=0) if ngram_features else None
        if self.ngrams is not None:
            nn.init.zeros_(self.ngrams.weight)

    def encode(self, x: Tensor, lengths: Tensor | list[int] | None = None) -> Tensor:
        h = self.embedding_dropout(self.inputs(x))  # (B, T, E)
        lengths = prepare_lengths(lengths, h.size(0), h.size(1), h.device)
        outputs, _ = self.rnn(h, lengths=lengths)  # (B, T, O)
        return self.pool(outputs, lengths)

    def ngram_logits(self, ngrams: Tensor) -> Tensor:
        """The linear part's logits ``(B, C)`` for n-gram ids ``(B, F)`` (0: padding)."""
        if ngrams.dim() != 2:
            raise ValueError(f"ngrams must be n-gram ids (B, F), got shape {tuple(ngrams.shape)}")
        present = (ngrams != 0).to(self.ngrams.weight.dtype)  # (B, F)
        scale = present.sum(1, keepdim=True).clamp(min=1).rsqrt()
        if self.training and NGRAM_DROPOUT:
            present = present * (torch.rand_like(present) >= NGRAM_DROPOUT)
        return (self.ngrams(ngrams) * present.unsqueeze(-1)).sum(1) * scale

    def forward(self, x: Tensor, lengths: Tensor | list[int] | None = None, ngrams: Tensor | None = None) -> Tensor:
        logits = super().forward(x, lengths)
        if self.ngrams is None:
            return logits
        if ngrams is None:
            raise ValueError("this classifier has an n-gram part (--ngrams): pass ngrams, the ids (B, F) of each "
                             "text's n-grams")
        if ngrams.size(0) != x.size(0):
            raise ValueError(f"ngrams has {ngrams.size(0)} rows but x has {x.size(0)} texts")
        return logits + self.ngram_logits(ngrams)


class Ensemble(nn.Module):
    """Classifiers trained side by side on the same batches, each with its own loss.

    ``forward`` returns the log of the members' mean probability, ``(B, C)``: its softmax is the
    ensemble's prediction, its argmax the predicted class. ``member_logits`` gives ``(M, B, C)``.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("Ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def member_logits(self, x: Tensor, lengths: Tensor | list[int] | None = None,
                      ngrams: Tensor | None = None) -> Tensor:
        extra = {} if ngrams is None else {"ngrams": ngrams}
        return torch.stack([m(x, lengths=lengths, **extra) for m in self.members])

    def clip_groups(self) -> list[nn.Module]:
        """Gradient clipping applies to each member alone, as if it were trained on its own."""
        return list(self.members)

    @staticmethod
    def combine(member_logits: Tensor) -> Tensor:
        """``(M, B, C)`` member logits -> ``(B, C)``, the log of their mean probability."""
        return torch.logsumexp(member_logits.log_softmax(-1), 0) - math.log(member_logits.size(0))

    def forward(self, x: Tensor, lengths: Tensor | list[int] | None = None, ngrams: Tensor | None = None) -> Tensor:
        return self.combine(self.member_logits(x, lengths, ngrams))


@register
class SentimentTask(Task):
    name = "sentiment"
    title = "tweet sentiment"
    topology = "many-to-one (SequenceClassifier)"
    dataset = TWEETS
    metric, higher_is_better, baseline = "accuracy", True, "bow_logreg_accuracy"
    user_format = ("CSV/TSV with columns 'text' and 'label' (any label names) and optionally 'weight' (a loss "
                   "weight per row, >= 0; default 1); UTF-8; texts that tokenize the same are merged (majority "
                   "label; ties dropped), then split 80/10/10 by a seeded shuffle")
    predict_format = ("plain text, one text per line, or the --data table's 'text' column; prints "
                      "LABEL<TAB>probability")
    input_column, target_column = "text", "label"
    defaults = dict(cell="gru", hidden=64, embedding=128, epochs=4, batch_size=128, lr=4e-3, bidirectional=True,
                    max_train=0, ensemble=3, keep_best=True)
    picture_name = "confusion.png"
    select_on_metric = True  # label smoothing makes the validation loss a poor judge of accuracy
    max_ensemble = 64

    def prepare(self, cfg: TaskConfig) -> Prepared:
        if cfg.data:
            rows = read_table(cfg.data, ["text", "label"], optional=["weight"])
            rated = [(row["label"], row["text"], _weight(cfg.data, line, row.get("weight"))) for line, row in rows]
            if len({lab for lab, _, _ in rated}) < 2:
                raise DataError(cfg.data, None, "column 'label' has a single value; classification needs two or more")
        else:
            rated = rated_tweets()
        examples = deduplicate([(label, tokenize(text)[:MAX_TOKENS] or ["<unk>"], text, w) for label, text, w in rated])
        train, val, test = split_three(examples, seed=cfg.seed)
        train = self.cap(cfg, train)
        vocab = Vocab.build((ex[1] for ex in train), min_freq=2, max_size=30000)
        labels = sorted({ex[0] for ex in train})
        meta: dict[str, Any] = {"vocab": vocab.to_dict(), "labels": labels}
        if cfg.ngrams:  # the n-grams of NGRAM_MIN_TEXTS or more training texts, sorted: feature i + 1
            texts = Counter(g for ex in train for g in text_ngrams(ex[1]))
            meta["ngrams"] = sorted(g for g, n in texts.items() if n >= NGRAM_MIN_TEXTS)
        return Prepared(train, val, test, meta)

    def length(self, example: Any) -> int:
        return len(example[1])

    def collate(self, examples: list[Any], meta: dict[str, Any]) -> dict[str, Tensor]:
        vocab = meta.get("_vocab") or Vocab.from_dict(meta["vocab"])
        index = {lab: i for i, lab in enumerate(meta["labels"])}
        x, lengths = pad([vocab.encode(ex[1]) for ex in examples])
        y = torch.tensor([index.get(ex[0], -100) for ex in examples])
        weight = torch.tensor([float(ex[3]) for ex in examples])
        batch = {"x": x, "y": y, "lengths": lengths, "weight": weight}
        if "ngrams" in meta:
            batch["ngrams"] = self.ngram_ids([ex[1] for ex in examples], meta)
        return batch

    def ngram_ids(self, texts: list[list[str]], meta: dict[str, Any]) -> Tensor:
        """``(B, F)`` ids of each tokenized text's known n-grams (:func:`text_ngrams`), 0-padded."""
        known = meta["ngrams"]
        cached = getattr(self, "_ngram_index", None)
        if cached is None or cached[0] is not known:  # one dict per vocabulary, not one per batch
            cached = self._ngram_index = (known, {g: i for i, g in enumerate(known, 1)})
        index = cached[1]
        rows = [[index[g] for g in text_ngrams(tokens) if g in index] for tokens in texts]
        return pad([row or [0] for row in rows])[0]

    def build(self, cfg: TaskConfig, meta: dict[str, Any]) -> nn.Module:
        rc = RecurrentConfig(cell=cfg.cell, hidden_size=cfg.hidden, num_layers=cfg.layers,
                             bidirectional=cfg.bidirectional)
        members = [
            _Classifier(len(meta["labels"]), rc, vocab_size=len(meta["vocab"]["itos"]), embedding_dim=cfg.embedding,
                        padding_idx=0, pooling="attention", head_dropout=0.3, embedding_dropout=EMBEDDING_DROPOUT,
                        ngram_features=len(meta.get("ngrams", ())))
            for _ in range(cfg.ensemble)
        ]
        return members[0] if cfg.ensemble == 1 else Ensemble(members)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        x, y = batch["x"], batch["y"]
        members = model.members if isinstance(model, Ensemble) else [model]
        extra = {"ngrams": batch["ngrams"]} if "ngrams" in batch else {}
        logits = []
        for member in members:  # each member draws its own word-dropout mask: real tokens become <unk>
            xm = x
            if model.training and WORD_DROPOUT:
                xm = x.masked_fill((torch.rand(x.shape, device=x.device) < WORD_DROPOUT) & (x != 0), UNK_ID)
            logits.append(member(xm, lengths=batch["lengths"], **extra))
        logits = torch.stack(logits)  # (M, B, C)
        losses = F.cross_entropy(logits.flatten(0, 1), y.repeat(len(members)), label_smoothing=LABEL_SMOOTHING,
                                 ignore_index=-100, reduction="none").view(len(members), -1)  # (M, B)
        # training: the per-tweet weights; validation: every tweet counts the same, as in the metric
        w = batch["weight"] if model.training else torch.ones_like(batch["weight"])
        w = w * (y != -100)
        return (losses * w).sum() / w.sum().clamp(min=1e-12)  # the members' losses add up

    @torch.no_grad()
    def _predict_ids(self, model: nn.Module, examples: list[Any],
                     meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Predicted and true class ids ``(N,)``, and for an :class:`Ensemble` each member's own
        predictions ``(M, N)`` (else None), from one forward of each member per batch."""
        preds, trues, alone = [], [], []
        device = next(model.parameters()).device  # also called on the training device (keep_best)
        for i in range(0, len(examples), 256):
            b = self.collate(examples[i : i + 256], meta)
            extra = {"ngrams": b["ngrams"].to(device)} if "ngrams" in b else {}
            if isinstance(model, Ensemble):
                logits = model.member_logits(b["x"].to(device), lengths=b["lengths"], **extra)  # (M, B, C)
                preds.append(model.combine(logits).argmax(-1).cpu())
                alone.append(logits.argmax(-1).cpu())
            else:
                preds.append(model(b["x"].to(device), lengths=b["lengths"], **extra).argmax(-1).cpu())
            trues.append(b["y"])
        return torch.cat(preds).numpy(), torch.cat(trues).numpy(), torch.cat(alone, 1).numpy() if alone else None

    def evaluate(self, model: nn.Module, examples: list[Any], meta: dict[str, Any]) -> dict[str, float]:
        pred, true, alone = self._predict_ids(model, examples, meta)
        scores = {"accuracy": float((pred == true).mean()), "macro_f1": macro_f1(pred, true, len(meta["labels"]))}
        if alone is not None:  # what one member scores alone, for an honest comparison
            scores["member_accuracy_mean"] = float(np.mean([(p == true).mean() for p in alone]))
            scores["member_macro_f1_mean"] = float(np.mean([macro_f1(p, true, len(meta["labels"])) for p in alone]))
        return scores

    def baselines(self, data: Prepared) -> dict[str, float]:
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.linear_model import LogisticRegression

        train_y = [ex[0] for ex in data.train]
        test_y = np.array([ex[0] for ex in data.test])
        majority = max(set(train_y), key=train_y.count)
        bigrams = lambda toks: toks + [a + " " + b for a, b in zip(toks, toks[1:], strict=False)]  # noqa: E731
        if len(set(train_y)) < 2:  # a tiny user file: logistic regression needs two classes
            pred = np.array([majority] * len(test_y))
        else:
            vec = CountVectorizer(analyzer=bigrams, min_df=2 if len(train_y) >= 100 else 1)
            xtr = vec.fit_transform([ex[1] for ex in data.train])
            weight = np.array([ex[3] for ex in data.train])
            xval, val_y = vec.transform([ex[1] for ex in data.val]), np.array([ex[0] for ex in data.val])
            best = None  # the inverse regularisation C with the best validation accuracy
            for c in BOW_C_GRID:  # from strong to weak regularisation; fits slow down as C grows
                clf = LogisticRegression(max_iter=2000, C=c).fit(xtr, train_y, sample_weight=weight)
                acc = float((clf.predict(xval) == val_y).mean())
                if best is not None and acc < best[0]:
                    break  # past the peak (validation accuracy rises, then falls): the larger Cs fit worse still
                if best is None or acc > best[0]:
                    best = (acc, clf)
            pred = best[1].predict(vec.transform([ex[1] for ex in data.test]))
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
            tokens = tokenize(line)[:MAX_TOKENS] or ["<unk>"]
            extra = {"ngrams": self.ngram_ids([tokens], meta)} if "ngrams" in meta else {}
            p = model(torch.tensor([vocab.encode(tokens)]), **extra).softmax(-1)[0]
            out.append(f"{meta['labels'][int(p.argmax())]}\t{float(p.max()):.3f}")
        return out

    def picture(self, model: nn.Module, data: Prepared, path: Path) -> Path:
        pred, true, _ = self._predict_ids(model, data.test, data.meta)
        k = len(data.meta["labels"])
        m = np.zeros((k, k), dtype=int)
        for t, p in zip(true, pred, strict=True):
            if t >= 0:
                m[t, p] += 1
        return plot_confusion(m, data.meta["labels"], path, f"{self.picture_title(data.meta)}: test confusion matrix")

    def onnx_bundle(self, model, meta):
        from rnnkit.data.text import TOKEN_PATTERNS
        from rnnkit.onnx_graphs import ClassifierGraph, OnnxBundle, OnnxGraph, batch_time, padded_tokens

        vocab = len(meta["vocab"]["itos"])
        names, axes = ["tokens", "lengths"], {"lengths": {0: "batch"}, "probabilities": {0: "batch"}}
        config = {"vocab": meta["vocab"]["itos"], "labels": meta["labels"], "max_tokens": MAX_TOKENS,
                  "tokenizer": TOKEN_PATTERNS}
        features = len(meta.get("ngrams", ()))

        def example(b: int, t: int) -> tuple[Tensor, ...]:  # with n-grams: ids 1..features, 2t columns
            tokens = padded_tokens(vocab, b, t)
            return (*tokens, padded_tokens(features + 1, b, 2 * t, seed=1, low=1)[0]) if features else tokens

        if features:  # the runner finds each text's n-grams (text_ngrams) in this list: id = index + 1
            names, config["ngrams"] = [*names, "ngrams"], meta["ngrams"]
            axes["ngrams"] = {0: "batch", 1: "ngrams"}
        graph = OnnxGraph("classify", ClassifierGraph(model), example, names, ["probabilities"],
                          batch_time("tokens", extra=axes))
        return OnnxBundle("classify", [graph], config)
