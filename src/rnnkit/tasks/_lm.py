"""Shared machinery of the generation tasks: a conditioned token language model and its n-gram
baseline.

Model: :class:`rnnkit.Generator` (one-to-many) with a learnt vector per condition (a chorale's
mode, a tweet's sentiment), trained with teacher forcing to predict every token and the end.
Metric: held-out perplexity ``exp(-(1/N) sum log p(token))`` over every token and end marker
(and bits per token, ``log2`` of it). Baseline: an interpolated n-gram model (unigram, bigram,
trigram and uniform, Jelinek & Mercer 1980) whose weights are tuned on the validation split;
both use the same vocabulary (tokens seen once in training become ``<unk>``).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.collate import pad
from rnnkit.data.vocab import Vocab
from rnnkit.models import Generator, RecurrentConfig
from rnnkit.tasks.base import Prepared, Task, TaskConfig

__all__ = ["LanguageModelTask", "NGram"]


class NGram:
    """Interpolated trigram over token ids with ``<bos> <bos>`` context and an end marker."""

    def __init__(self, sequences: list[list[int]], vocab_size: int, eos: int = 2, bos: int = 1) -> None:
        self.V, self.eos, self.bos = vocab_size, eos, bos
        self.c1, self.c2, self.c3 = Counter(), Counter(), Counter()
        self.h1, self.h2 = Counter(), Counter()
        for seq in sequences:
            s = [bos, bos, *seq, eos]
            for i in range(2, len(s)):
                self.c1[s[i]] += 1
                self.c2[s[i - 1], s[i]] += 1
                self.c3[s[i - 2], s[i - 1], s[i]] += 1
                self.h1[s[i - 1]] += 1
                self.h2[s[i - 2], s[i - 1]] += 1
        self.n = sum(self.c1.values())
        self.weights = (0.1, 0.3, 0.3, 0.3)  # uniform, unigram, bigram, trigram

    def _probs(self, seq: list[int]) -> list[tuple[float, float, float, float]]:
        s = [self.bos, self.bos, *seq, self.eos]
        out = []
        for i in range(2, len(s)):
            a, b, c = s[i - 2], s[i - 1], s[i]
            p2 = self.c2[b, c] / self.h1[b] if self.h1[b] else 0.0
            p3 = self.c3[a, b, c] / self.h2[a, b] if self.h2[a, b] else 0.0
            out.append((1.0 / self.V, self.c1[c] / self.n, p2, p3))
        return out

    def _table(self, sequences: list[list[int]]) -> np.ndarray:
        return np.array([p for seq in sequences for p in self._probs(seq)], dtype=np.float64)  # (N, 4)

    def nll(self, sequences: list[list[int]], weights: tuple[float, ...] | None = None) -> tuple[float, int]:
        """``(summed negative log-likelihood in nats, number of predicted tokens)``."""
        table = self._table(sequences)
        return float(-np.log(table @ np.asarray(weights or self.weights)).sum()), len(table)

    def tune(self, sequences: list[list[int]]) -> NGram:
        """Pick the interpolation weights (a grid step 0.05, uniform >= 0.01) with the lowest validation NLL."""
        table = self._table(sequences)
        grid = [x / 20 for x in range(1, 20)]
        ws = np.array([(1.0 - a - b - c, a, b, c) for a, b, c in itertools.product(grid, grid, grid)
                       if 1.0 - a - b - c >= 0.01])  # (G, 4)
        nll = -np.log(table @ ws.T).sum(0)  # (G,)
        self.weights = tuple(float(v) for v in ws[int(nll.argmin())])
        return self


class LanguageModelTask(Task):
    """A generation task; subclasses implement :meth:`sequences` -> ``(condition, tokens)`` splits."""

    joiner = " "  # how sampled tokens are printed (chars: "")

    metric, higher_is_better, baseline = "perplexity", False, "ngram_perplexity"
    conditions: tuple[str, ...] = ()
    max_len = 200

    def sequences(self, cfg: TaskConfig) -> tuple[list[Any], list[Any], list[Any]]:
        raise NotImplementedError

    def prepare(self, cfg: TaskConfig) -> Prepared:
        train, val, test = self.sequences(cfg)
        train = self.cap(cfg, train)
        vocab = Vocab.build((toks for _, toks in train), min_freq=2)
        conds = sorted({c for c, _ in train})
        return Prepared(train, val, test, {"vocab": vocab.to_dict(), "conditions": conds})

    def length(self, example: Any) -> int:
        return len(example[1])

    def collate(self, examples: list[Any], meta: dict[str, Any]) -> dict[str, Tensor]:
        vocab = Vocab.from_dict(meta["vocab"])
        index = {c: i for i, c in enumerate(meta["conditions"])}
        y, lengths = pad([vocab.encode(toks[: self.max_len], eos=True) for _, toks in examples])
        cond = torch.tensor([index.get(c, 0) for c, _ in examples])
        return {"x": y, "y": y, "cond": cond, "lengths": lengths}

    def onnx_bundle(self, model, meta):
        from rnnkit.onnx_graphs import generator_bundle

        g = torch.Generator().manual_seed(0)
        conditions = meta["conditions"]
        return generator_bundle(model, lambda b: torch.randint(0, len(conditions), (b,), generator=g), "condition",
                                {"vocab": meta["vocab"]["itos"], "conditions": conditions,
                                 "joiner": self.joiner})

    def build(self, cfg: TaskConfig, meta: dict[str, Any]) -> nn.Module:
        rc = RecurrentConfig(cell=cfg.cell, hidden_size=cfg.hidden, num_layers=cfg.layers, dropout=0.2)
        return Generator(len(meta["vocab"]["itos"]), 16, rc, embedding_dim=cfg.embedding,
                         num_conditions=len(meta["conditions"]))

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        logits = model(batch["cond"], batch["y"])  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), batch["y"].flatten(), ignore_index=0)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, examples: list[Any], meta: dict[str, Any]) -> dict[str, float]:
        total, count = 0.0, 0
        for i in range(0, len(examples), 64):
            b = self.collate(examples[i : i + 64], meta)
            logits = model(b["cond"], b["y"])
            total += float(F.cross_entropy(logits.flatten(0, 1), b["y"].flatten(), ignore_index=0, reduction="sum"))
            count += int((b["y"] != 0).sum())
        return {"perplexity": math.exp(total / count), "bits_per_token": total / count / math.log(2)}

    def baselines(self, data: Prepared) -> dict[str, float]:
        vocab = Vocab.from_dict(data.meta["vocab"])
        enc = lambda ex: [vocab.encode(toks[: self.max_len]) for _, toks in ex]  # noqa: E731
        ngram = NGram(enc(data.train), len(vocab)).tune(enc(data.val))
        total, count = ngram.nll(enc(data.test))
        bigram_total, _ = NGram(enc(data.train), len(vocab)).nll(enc(data.test), (0.05, 0.15, 0.8, 0.0))
        return {"ngram_perplexity": math.exp(total / count), "ngram_bits_per_token": total / count / math.log(2),
                "bigram_perplexity": math.exp(bigram_total / count)}

    def sample(self, model: nn.Module, meta: dict[str, Any], condition: str, n: int = 1, seed: int = 0,
               max_len: int | None = None) -> list[list[str]]:
        if condition not in meta["conditions"]:
            raise ValueError(f"unknown condition {condition!r}; this model knows {meta['conditions']}")
        vocab = Vocab.from_dict(meta["vocab"])
        cond = torch.full((n,), meta["conditions"].index(condition))
        g = torch.Generator().manual_seed(seed)
        out = model.generate(cond, max_len or self.max_len, strategy="sample", temperature=0.9, generator=g)
        return [vocab.decode(row) for row in out.tokens.tolist()]
