"""Sequence tagging (many-to-many, equal lengths): named entities in tweets (WNUT 2016, BIO).

Model: a word embedding plus a word-shape embedding (capitalisation, digits, @, #, URL) into a
bidirectional :class:`rnnkit.SequenceTagger` with a linear-chain CRF (Huang, Xu & Yu 2015;
Lample et al. 2016). ``--ensemble N`` trains N such taggers side by side and decodes the best path
of their summed CRF scores (:class:`TaggerEnsemble`); each member is also scored alone. Metrics:
entity F1 (exact span and type, as CoNLL's conlleval) and token accuracy on held-out tweets.
Baseline on the same split: each word's most frequent training tag (``O`` for unseen words),
repaired to valid BIO.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.data.bundled import WNUT16, wnut16
from rnnkit.data.collate import pad
from rnnkit.data.readers import DataError, read_blocks
from rnnkit.data.text import split_three
from rnnkit.data.vocab import Vocab
from rnnkit.models import RecurrentConfig, SequenceTagger
from rnnkit.models._common import length_mask, prepare_lengths
from rnnkit.models.crf import viterbi_decode
from rnnkit.tasks.base import PredictInput, Prepared, Task, TaskConfig, register
from rnnkit.tasks.plots import plot_heatmap

__all__ = ["ShapeTagger", "TaggerEnsemble", "TaggingTask", "entity_f1", "spans", "word_shape"]

SHAPES = ["<pad>", "lower", "Title", "UPPER", "mixed", "digit", "punct", "@", "#", "url", "other"]


def word_shape(w: str) -> int:
    if w.startswith("http") or w.startswith("www."):
        s = "url"
    elif w.startswith("@"):
        s = "@"
    elif w.startswith("#"):
        s = "#"
    elif w.isdigit():
        s = "digit"
    elif not any(c.isalnum() for c in w):
        s = "punct"
    elif w.islower():
        s = "lower"
    elif w.isupper():
        s = "UPPER"
    elif w[:1].isupper() and w[1:].islower():
        s = "Title"
    elif any(c.isalpha() for c in w):
        s = "mixed"
    else:
        s = "other"
    return SHAPES.index(s)


def spans(tags: list[str]) -> set[tuple[int, int, str]]:
    """``(start, end, type)`` entity spans of a BIO sequence; an ``I-`` without ``B-`` starts one."""
    out, start, kind = set(), None, None
    for i, t in enumerate([*tags, "O"]):
        if start is not None and not (t.startswith("I-") and t[2:] == kind):
            out.add((start, i, kind))
            start = None
        if t.startswith("B-") or (t.startswith("I-") and start is None):
            start, kind = i, t[2:]
    return out


def entity_f1(pred: list[list[str]], gold: list[list[str]]) -> float:
    """Micro-averaged entity F1 (exact spans and types), by seqeval in its default conlleval mode (an
    ``I-`` without ``B-`` starts an entity), the figure the CoNLL and WNUT shared tasks report. Only
    ``B-``/``I-`` tags make entities."""
    from seqeval.metrics import f1_score

    def bio(tags: list[str]) -> list[str]:  # tags without a B-/I- prefix (a user's POS tags) are outside
        return [t if t.startswith(("B-", "I-")) else "O" for t in tags]

    return float(f1_score([bio(g) for g in gold], [bio(p) for p in pred], zero_division=0))


def span_f1(pred: list[list[str]], gold: list[list[str]]) -> float:
    """The same F1 from :func:`spans`, written out (the test checks that seqeval agrees with it)."""
    tp = n_pred = n_gold = 0
    for p, g in zip(pred, gold, strict=True):
        ps, gs = spans(p), spans(g)
        tp, n_pred, n_gold = tp + len(ps & gs), n_pred + len(ps), n_gold + len(gs)
    return 0.0 if tp == 0 else 2 * tp / (n_pred + n_gold)


#: characters of a word the character encoder reads (the first ones), and its character ids: code
#: point + 1 below 199, 199 for any other character, 0 for padding
CHAR_SLOTS, CHAR_IDS = 16, 200


def char_ids(w: str) -> list[int]:
    """The first :data:`CHAR_SLOTS` characters of ``w`` as ids, zero-padded."""
    ids = [1 + ord(c) if ord(c) < CHAR_IDS - 1 else CHAR_IDS - 1 for c in w[:CHAR_SLOTS]]
    return ids + [0] * (CHAR_SLOTS - len(ids))


class ShapeTagger(nn.Module):
    """``[Embed(word); Embed(shape); CharCNN(word)]`` into a :class:`SequenceTagger` with a CRF;
    ``x`` is ``(B, T, 2 + CHAR_SLOTS)`` ids (word, shape, characters). ``forward`` returns the
    emissions ``(B, T, K)``.

    The character encoder reads each word's spelling, so that a word never seen in training still
    has features: a width-3 convolution over character embeddings, max-pooled over the word (Ma &
    Hovy, ACL 2016; Lample et al., NAACL 2016 use a character BiLSTM for the same purpose). Measured
    on WNUT-2016, seeds 0/1, 20 epochs, best validation F1: entity F1 0.414/0.357 with it, 0.351/0.310
    without."""

    def __init__(self, num_tags: int, config: RecurrentConfig, vocab_size: int, embedding_dim: int,
                 char_dim: int = 24, char_filters: int = 48) -> None:
        super().__init__()
        self.words = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.shapes = nn.Embedding(len(SHAPES), 16, padding_idx=0)
        self.chars = nn.Embedding(CHAR_IDS, char_dim, padding_idx=0)
        self.char_conv = nn.Conv1d(char_dim, char_filters, 3, padding=1)
        self.drop = nn.Dropout(0.25)
        self.tagger = SequenceTagger(num_tags, config, input_size=embedding_dim + 16 + char_filters, crf=True)

    def spelling(self, chars: Tensor) -> Tensor:
        """``(B, T, CHAR_SLOTS)`` character ids -> ``(B, T, char_filters)``: the max over each word's
        characters of the ReLU convolution (0 for a padding position)."""
        B, T, L = chars.shape
        h = torch.relu(self.char_conv(self.chars(chars.reshape(B * T, L)).transpose(1, 2)))  # (BT, F, L)
        h = h.masked_fill((chars.reshape(B * T, 1, L) == 0), 0.0)  # after the ReLU: 0 never wins over a real one
        return h.amax(-1).view(B, T, -1)

    def features(self, x: Tensor) -> Tensor:
        parts = [self.words(x[..., 0]), self.shapes(x[..., 1]), self.spelling(x[..., 2:])]
        return self.drop(torch.cat(parts, dim=-1))  # (B, T, E + 16 + F)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.tagger(self.features(x), lengths)

    def loss(self, x: Tensor, tags: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.tagger.loss(self.features(x), tags, lengths)

    def decode(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.tagger.decode(self.features(x), lengths)

    @property
    def crf(self):
        return self.tagger.crf


class _MeanCRF:
    """The members' CRF scores averaged: ``start``, ``transitions`` and ``end`` read like a
    :class:`~rnnkit.models.crf.LinearChainCRF`'s (what the ONNX graph's Viterbi reads)."""

    def __init__(self, crfs: list[nn.Module]) -> None:
        self._crfs = crfs  # the members own the parameters

    @property
    def start(self) -> Tensor:
        return torch.stack([c.start for c in self._crfs]).mean(0)

    @property
    def transitions(self) -> Tensor:
        return torch.stack([c.transitions for c in self._crfs]).mean(0)

    @property
    def end(self) -> Tensor:
        return torch.stack([c.end for c in self._crfs]).mean(0)


class TaggerEnsemble(nn.Module):
    """:class:`ShapeTagger` members trained side by side on the same batches, each with its own CRF
    loss (the losses add up). ``forward`` gives the members' mean emissions ``(B, T, K)``, and
    ``decode`` is Viterbi over them with the members' mean start, transition and end scores: the
    path that maximises the sum of the members' log-potentials, i.e. the best path under the
    normalised product of their CRF distributions (log-linear pooling of experts; Hinton 2002)."""

    def __init__(self, members: list[ShapeTagger]) -> None:
        super().__init__()
        if not members:
            raise ValueError("TaggerEnsemble needs at least one member")
        self.members = nn.ModuleList(members)

    def clip_groups(self) -> list[nn.Module]:
        """Gradient clipping applies to each member alone, as if it were trained on its own."""
        return list(self.members)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return torch.stack([m(x, lengths) for m in self.members]).mean(0)

    def loss(self, x: Tensor, tags: Tensor, lengths: Tensor | None = None) -> Tensor:
        return torch.stack([m.loss(x, tags, lengths) for m in self.members]).sum()

    @torch.no_grad()
    def decode(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        emissions = self(x, lengths)
        return self._viterbi(emissions, self._mask(emissions, lengths), self.crf)

    @torch.no_grad()
    def decode_with_members(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """``decode``'s tags and each member's own (its ``decode``), from one forward of each member."""
        emissions = [m(x, lengths) for m in self.members]
        mask = self._mask(emissions[0], lengths)
        own = [self._viterbi(e, mask, m.crf) for e, m in zip(emissions, self.members, strict=True)]
        return self._viterbi(torch.stack(emissions).mean(0), mask, self.crf), own

    @staticmethod
    def _mask(emissions: Tensor, lengths: Tensor | None) -> Tensor:
        B, T = emissions.shape[:2]
        return length_mask(prepare_lengths(lengths, B, T, emissions.device), B, T, emissions.device)

    def _viterbi(self, emissions: Tensor, mask: Tensor, crf: Any) -> Tensor:
        pad_tag = self.members[0].tagger.pad_tag  # what one member's decode writes at padded steps
        return viterbi_decode(emissions, mask, crf.start, crf.transitions, crf.end, pad_tag)[0]

    @property
    def crf(self) -> _MeanCRF:
        return _MeanCRF([m.crf for m in self.members])


@register
class TaggingTask(Task):
    name = "tagging"
    title = "named entities in tweets"
    topology = "many-to-many equal (SequenceTagger + CRF)"
    dataset = WNUT16
    metric, higher_is_better, baseline = "entity_f1", True, "most_frequent_tag_entity_f1"
    user_format = ("CoNLL-style text: one 'token<TAB>tag' per line, a blank line between sentences, UTF-8; "
                   "any tag set (BIO tags get entity F1); split 80/10/10 by a seeded shuffle")
    predict_format = ("one sentence per line, tokens separated by spaces, printed as 'word/TAG ...'; or the --data "
                      "CoNLL format ('token<TAB>tag' lines, the tag ignored or scored), printed back as "
                      "'token<TAB>predicted tag' lines with the blank lines kept")
    # 20 epochs, not 12: measured entity F1 over the most-frequent-tag baseline, seeds 0/1/2, +0.064/+0.077/+0.021
    # (12 epochs: +0.004/+0.078/+0.035); the spread between seeds is larger than the gain
    defaults = dict(hidden=64, embedding=64, epochs=20, batch_size=32, lr=5e-3, bidirectional=True)
    picture_name = "tags.png"
    select_on_metric = True  # keep_best picks the epoch by validation entity F1, the figure reported
    max_ensemble = 16

    def prepare(self, cfg: TaskConfig) -> Prepared:
        sents = ([([t for t, _ in rows], [g for _, g in rows]) for _, rows in read_blocks(cfg.data, 2)]
                 if cfg.data else wnut16())
        train, val, test = split_three(sents, seed=cfg.seed)
        train = self.cap(cfg, train)
        vocab = Vocab.build(([w.lower() for w in ws] for ws, _ in train), min_freq=1)
        tags = sorted({t for _, ts in train for t in ts})
        return Prepared(train, val, test, {"vocab": vocab.to_dict(), "tags": tags})

    def length(self, example: Any) -> int:
        return len(example[0])

    def encode(self, words: list[str], vocab: Vocab) -> Tensor:
        """``(T, 2 + CHAR_SLOTS)``: each word's id, shape and characters."""
        return torch.tensor([[vocab.stoi.get(w.lower(), vocab.unk_id), word_shape(w), *char_ids(w)] for w in words],
                            dtype=torch.long).view(len(words), 2 + CHAR_SLOTS)

    def collate(self, examples: list[Any], meta: dict[str, Any]) -> dict[str, Tensor]:
        vocab = Vocab.from_dict(meta["vocab"])
        index = {t: i for i, t in enumerate(meta["tags"])}
        x, lengths = pad([self.encode(ws, vocab) for ws, _ in examples])  # (B, T, 2)
        y = torch.zeros_like(x[..., 0])  # (B, T); no tags when predicting
        for i, (_, ts) in enumerate(examples):
            y[i, : len(ts)] = torch.tensor([index.get(t, index.get("O", 0)) for t in ts], dtype=torch.long)
        return {"x": x, "y": y, "lengths": lengths}

    def build(self, cfg: TaskConfig, meta: dict[str, Any]) -> nn.Module:
        rc = RecurrentConfig(cell=cfg.cell, hidden_size=cfg.hidden, num_layers=cfg.layers,
                             bidirectional=cfg.bidirectional)
        members = [ShapeTagger(len(meta["tags"]), rc, len(meta["vocab"]["itos"]), cfg.embedding)
                   for _ in range(cfg.ensemble)]
        return members[0] if cfg.ensemble == 1 else TaggerEnsemble(members)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return model.loss(batch["x"], batch["y"], batch["lengths"])

    def tag(self, model: nn.Module, sentences: list[list[str]], meta: dict[str, Any]) -> list[list[str]]:
        return self._tag(model, sentences, meta)[0]

    def _tag(self, model: nn.Module, sentences: list[list[str]], meta: dict[str, Any], members: bool = False):
        """``(tags per sentence, each member's tags per sentence or None)``; with ``members`` (an
        ensemble), one forward of each member per batch gives both."""
        members = members and isinstance(model, TaggerEnsemble)
        out: list[list[str]] = []
        alone: list[list[list[str]]] = [[] for _ in model.members] if members else []
        for i in range(0, len(sentences), 128):
            b = self.collate([(ws, []) for ws in sentences[i : i + 128]], meta)
            ids, own = model.decode_with_members(b["x"], b["lengths"]) if members else (
                model.decode(b["x"], b["lengths"]), [])
            for dest, rows in zip([out, *alone], [ids, *own], strict=True):
                dest += [[meta["tags"][int(t)] for t in row[:n]] for row, n in zip(rows, b["lengths"], strict=True)]
        return out, (alone if members else None)

    def evaluate(self, model: nn.Module, examples: list[Any], meta: dict[str, Any]) -> dict[str, float]:
        pred, alone = self._tag(model, [ws for ws, _ in examples], meta, members=True)
        gold = [ts for _, ts in examples]
        acc = np.mean([p == g for ps, gs in zip(pred, gold, strict=True) for p, g in zip(ps, gs, strict=True)])
        scores = {"entity_f1": entity_f1(pred, gold), "token_accuracy": float(acc)}
        if alone is not None:  # what one member scores alone, for an honest comparison
            scores["member_entity_f1_mean"] = float(np.mean([entity_f1(a, gold) for a in alone]))
        return scores

    def baselines(self, data: Prepared) -> dict[str, float]:
        counts: dict[str, Counter] = defaultdict(Counter)
        for ws, ts in data.train:
            for w, t in zip(ws, ts, strict=True):
                counts[w.lower()][t] += 1
        pred = []
        for ws, _ in data.test:
            tags = [counts[w.lower()].most_common(1)[0][0] if w.lower() in counts else "O" for w in ws]
            pred.append(tags)
        gold = [ts for _, ts in data.test]
        acc = np.mean([p == g for ps, gs in zip(pred, gold, strict=True) for p, g in zip(ps, gs, strict=True)])
        return {"most_frequent_tag_entity_f1": entity_f1(pred, gold), "most_frequent_tag_token_accuracy": float(acc)}

    @torch.no_grad()
    def read_predict(self, path, text):
        """Plain sentences (one per line), or the --data CoNLL format (a line holding a tab): its
        tags are ignored, or scored when every token has one, and the output is CoNLL again."""
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not any("\t" in line for line in lines):
            return super().read_predict(path, text)
        sentences: list[list[str]] = [[]]
        gold: list[list[str]] = [[]]
        layout: list[tuple[int, int] | None] = []  # per input line: (sentence, token), None for a blank line
        for i, line in enumerate(lines, 1):
            if not line.strip():
                if sentences[-1]:
                    sentences.append([])
                    gold.append([])
                layout.append(None)
                continue
            token, _, tag = line.partition("\t")
            if not token.strip():
                raise DataError(path, i, "no token before the tab")
            layout.append((len(sentences) - 1, len(sentences[-1])))
            sentences[-1].append(token.strip())
            gold[-1].append(tag.strip())
        if not sentences[-1]:
            sentences.pop()
            gold.pop()

        def expand(outputs: list[str]) -> list[str]:
            tags = [[pair.rsplit("/", 1)[1] for pair in out.split()] for out in outputs]
            return ["" if at is None else f"{sentences[at[0]][at[1]]}\t{tags[at[0]][at[1]]}" for at in layout]

        scored = all(all(g) for g in gold)
        return PredictInput([" ".join(s) for s in sentences], [" ".join(g) for g in gold] if scored else None,
                            "tag", expand)

    def score(self, outputs: list[str], targets: list[str]) -> str:
        pred = [[pair.rsplit("/", 1)[1] for pair in out.split()] for out in outputs]
        gold = [t.split() for t in targets]
        pairs = [(p, g) for ps, gs in zip(pred, gold, strict=True) for p, g in zip(ps, gs, strict=True)]
        hits = sum(p == g for p, g in pairs)
        return f"token accuracy {hits / max(len(pairs), 1):.4f} ({hits} of {len(pairs)} tokens)"

    def predict(self, model: nn.Module, meta: dict[str, Any], lines: list[str]) -> list[str]:
        """Each input line is a whitespace-tokenised sentence; prints ``word/TAG`` pairs."""
        sents = [line.split() for line in lines]
        return [" ".join(f"{w}/{t}" for w, t in zip(ws, ts, strict=True))
                for ws, ts in zip(sents, self.tag(model, sents, meta), strict=True)]

    @torch.no_grad()
    def picture(self, model: nn.Module, data: Prepared, path: Path) -> Path:
        ws = max(data.test[:50], key=lambda e: len(spans(e[1])))[0][:25]
        b = self.collate([(ws, [])], data.meta)
        probs = model(b["x"], b["lengths"])[0].softmax(-1).numpy().T  # (K, T)
        return plot_heatmap(probs, ws, data.meta["tags"], path,
                            f"{self.picture_title(data.meta)}: per-token tag probabilities", xlabel="token",
                            ylabel="tag", value="probability")

    def onnx_bundle(self, model, meta):
        from rnnkit.onnx_graphs import OnnxBundle, OnnxGraph, TaggerGraph, batch_time, padded_tokens

        vocab = len(meta["vocab"]["itos"])

        def example(batch: int, length: int):
            ids, lengths = padded_tokens(vocab, batch, length)
            g = torch.Generator().manual_seed(length)
            shapes = torch.randint(0, len(SHAPES), ids.shape, generator=g).masked_fill(ids == 0, 0)
            chars = torch.randint(0, CHAR_IDS, (*ids.shape, CHAR_SLOTS), generator=g).masked_fill(
                (ids == 0).unsqueeze(-1), 0)
            return torch.cat([ids.unsqueeze(-1), shapes.unsqueeze(-1), chars], dim=-1), lengths  # (B, T, 2 + C)

        graph = OnnxGraph("tag", TaggerGraph(model), example, ["words_and_shapes", "lengths"], ["tags"],
                          batch_time("words_and_shapes", "tags", extra={"lengths": {0: "batch"}}))
        return OnnxBundle("tag", [graph], {"vocab": meta["vocab"]["itos"], "tags": meta["tags"], "shapes": SHAPES,
                                           "char_slots": CHAR_SLOTS, "char_ids": CHAR_IDS})
