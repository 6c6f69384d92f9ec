"""Shared machinery of the generation tasks: a conditioned token language model and its n-gram
baseline.

Model: :class:`rnnkit.Generator` (one-to-many) with a learnt vector per condition (a chorale's
mode, a tweet's sentiment), trained with teacher forcing to predict every token and the end.
Metric: held-out perplexity ``exp(-(1/N) sum log p(token))`` over every token and end marker
(and bits per token, ``log2`` of it). Baselines: an interpolated n-gram model (unigram, bigram,
trigram and uniform, Jelinek & Mercer 1980) whose weights are tuned on the validation split, and
an interpolated Kneser-Ney n-gram (:class:`KneserNey`); all use the same vocabulary (tokens seen
once in training become ``<unk>``).
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
from torch.utils.data import Sampler

from rnnkit.data.collate import pad, rank_world
from rnnkit.data.vocab import Vocab
from rnnkit.models import Generator, RecurrentConfig
from rnnkit.tasks.base import Prepared, Task, TaskConfig

__all__ = ["KneserNey", "LanguageModelTask", "NGram", "StreamBatches", "stream_texts", "stream_windows"]


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


class KneserNey:
    """Interpolated Kneser-Ney n-gram over token ids (Kneser & Ney 1995, in the interpolated form
    of Chen & Goodman, "An empirical study of smoothing techniques for language modeling", 1998):

        p_n(w | h) = max(c_n(h w) - D_n, 0) / c_n(h .) + D_n N1+(h .) / c_n(h .) * p_{n-1}(w | h')

    with raw counts at the highest order and continuation counts (distinct left neighbours) below,
    one discount per order ``D_n = n1 / (n1 + 2 n2)`` from that order's count-of-counts, the
    lowest order interpolated with the uniform ``1 / V``, and a context never seen falling back to
    the next order whole.

    ``texts`` are token-id sequences. ``stream=False``: each is one example, predicted from
    ``order - 1`` ``bos`` through its ``eos``, n-grams never crossing examples. ``stream=True``:
    each is a continuous text (no markers) whose first tokens have a shorter context.
    """

    def __init__(self, texts: list[list[int]], vocab_size: int, order: int = 5, *, stream: bool = False,
                 bos: int = 1, eos: int = 2) -> None:
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.V, self.order, self.stream, self.bos, self.eos = vocab_size, order, stream, bos, eos
        docs = [self._text(t) for t in texts]
        N = order
        top: Counter = Counter()  # highest order: raw counts (past the bos padding, every last token is predicted)
        for d in docs:
            top.update(d[j : j + N] for j in range(len(d) - N + 1))
        self.counts: list[Counter] = [Counter() for _ in range(N + 1)]  # by order; [N] raw, below continuation
        self.counts[N] = top
        lower = top
        for n in range(N - 1, 0, -1):  # continuation counts: distinct left extensions
            cont: Counter = Counter()
            for g in lower:
                cont[g[1:]] += 1
            if stream:  # the text's first n-gram has no left neighbour: count it once
                for d in docs:
                    if len(d) >= n and d[:n] not in cont:
                        cont[d[:n]] = 1
            self.counts[n] = cont
            lower = cont
        self.den: list[Counter] = [Counter() for _ in range(N + 1)]  # c_n(h .) per context h
        self.types: list[Counter] = [Counter() for _ in range(N + 1)]  # N1+(h .)
        self.discount = [0.0] * (N + 1)
        for n in range(1, N + 1):
            for g, c in self.counts[n].items():
                self.den[n][g[:-1]] += c
                self.types[n][g[:-1]] += 1
            cc = Counter(self.counts[n].values())
            n1, n2 = cc.get(1, 0), cc.get(2, 0)
            # no singletons (a small or regular corpus): D = 0 would leave unseen tokens impossible
            self.discount[n] = n1 / (n1 + 2 * n2) if n1 else 0.5

    @staticmethod
    def _chars(ids: list[int]) -> str:
        return "".join(map(chr, ids))

    def _text(self, ids: list[int]) -> str:
        if self.stream:
            return self._chars(ids)
        return self._chars([self.bos] * (self.order - 1) + list(ids) + [self.eos])

    def prob(self, context: str, w: str) -> float:
        """``p(w | context)``, both as :meth:`_chars` strings (the context's last ``order - 1`` count)."""
        p = 1.0 / self.V
        for n in range(1, min(self.order, len(context) + 1) + 1):
            h = context[len(context) - n + 1 :] if n > 1 else ""
            d = self.den[n].get(h, 0)
            if not d:
                break  # a longer context containing h is unseen too
            D = self.discount[n]
            p = max(self.counts[n].get(h + w, 0) - D, 0.0) / d + D * self.types[n][h] / d * p
        return p

    def nll(self, texts: list[list[int]]) -> tuple[float, int]:
        """``(summed negative log-likelihood in nats, number of predicted tokens)``: every token
        and end marker of each example; every token but the first (the context of the rest, as a
        language model's first input) of each stream."""
        total, count, k = 0.0, 0, self.order - 1
        for t in texts:
            d = self._text(t)
            first = 1 if self.stream else k
            for i in range(first, len(d)):
                total -= math.log(self.prob(d[max(0, i - k) : i], d[i]))
                count += 1
        return total, count


def stream_windows(ids: np.ndarray, streams: int, k: int, cond: str) -> list[tuple[str, np.ndarray, int]]:
    """A continuous text cut for truncated BPTT: ``streams`` parallel streams of ``L = (N - 1) //
    streams`` predicted tokens each (stream j reads ``ids[j L : j L + L + 1]``; the last ``N - 1 -
    streams L`` tokens are left out), each cut into windows of ``k`` steps (the last may be
    shorter). Example ``w * streams + j`` is ``(cond, window w of stream j: its k + 1 ids, w)``:
    inputs ``[:-1]``, targets ``[1:]``; batch w holds window w of every stream."""
    L = (len(ids) - 1) // streams
    if L < 1:
        raise ValueError(f"a text of {len(ids)} tokens cannot be cut into {streams} streams")
    out = []
    for w, start in enumerate(range(0, L, k)):
        stop = min(start + k, L)
        out += [(cond, ids[j * L + start : j * L + stop + 1], w) for j in range(streams)]
    return out


def stream_texts(examples: list[tuple[str, np.ndarray, int]]) -> list[list[int]]:
    """The streams that :func:`stream_windows` cut, whole again (consecutive windows share a token)."""
    streams = sum(1 for e in examples if e[2] == 0)
    return [np.concatenate([examples[j][1]] + [e[1][1:] for e in examples[j + streams :: streams]]).tolist()
            for j in range(streams)]


class StreamBatches(Sampler[list[int]]):
    """The batches of :func:`stream_windows`' examples: window w of every stream, w in order, so
    each batch continues the streams of the one before (the state is carried between them).
    Under DDP rank r takes streams r, r + W, ... of every batch, so each rank continues its own."""

    def __init__(self, examples: list[tuple[str, np.ndarray, int]], *, shard: bool = True) -> None:
        self.shard = shard  # False: every stream on every rank (scoring a whole split)
        self.streams = sum(1 for e in examples if e[2] == 0)
        self.windows = len(examples) // max(self.streams, 1)
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Nothing to draw: every epoch reads the streams front to back, in the same order."""

    def skip_next(self, batches: int) -> None:
        self._skip = batches

    def __len__(self) -> int:
        return self.windows

    def __iter__(self):
        rank, world = rank_world() if self.shard else (0, 1)
        S = self.streams
        skip, self._skip = self._skip, 0
        return iter([list(range(w * S + rank, (w + 1) * S, world)) for w in range(skip, self.windows)])


def _is_stream(examples: list[Any]) -> bool:
    return bool(examples) and len(examples[0]) == 3


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

    def batch_sampler(self, examples: list[Any], batch_size: int, *, train: bool, seed: int) -> Any:
        if _is_stream(examples):  # one window of every stream per batch, in order (batch_size: the streams)
            return StreamBatches(examples)
        return super().batch_sampler(examples, batch_size, train=train, seed=seed)

    def collate(self, examples: list[Any], meta: dict[str, Any]) -> dict[str, Tensor]:
        if _is_stream(examples):
            window = torch.from_numpy(np.stack([e[1] for e in examples])).long()  # (B, k + 1)
            return {"x": window[:, :-1], "y": window[:, 1:], "cond": torch.zeros(len(examples), dtype=torch.long),
                    "reset": torch.tensor(examples[0][2] == 0)}
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
        if "reset" in batch:  # a window of a stream: from the state the previous window ended in
            logits = self._stream_logits(model, batch, "train" if model.training else "eval")
            return F.cross_entropy(logits.flatten(0, 1), batch["y"].flatten())
        logits = model(batch["cond"], batch["y"])  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), batch["y"].flatten(), ignore_index=0)

    def training_state(self) -> Any:
        """The training streams' state after the last window (None outside stream training)."""
        return getattr(self, "_carried", {}).get("train")

    def restore_training_state(self, state: Any) -> None:
        self._carried = {**getattr(self, "_carried", {}), "train": state}

    def _stream_logits(self, model: nn.Module, batch: dict[str, Tensor], key: str) -> Tensor:
        """Truncated BPTT (Williams & Peng 1990): the window starts from the previous window's
        state, detached (so the gradient reaches back one window), or from ``s_0`` at a stream's
        first window; the training and evaluation streams each carry their own state."""
        from rnnkit.train.tbptt import detach_state  # here: rnnkit.train imports Lightning, which `--help` skips

        carried = getattr(self, "_carried", {})
        state = None if bool(batch["reset"]) else carried.get(key)
        if state is not None and (state[0] if isinstance(state, tuple) else state).size(1) != batch["x"].size(0):
            state = None  # another stream layout: the streams start afresh
        logits, state = model.stream(batch["cond"], batch["x"], state)
        self._carried = {**carried, key: detach_state(state)}
        return logits

    @torch.no_grad()
    def evaluate(self, model: nn.Module, examples: list[Any], meta: dict[str, Any]) -> dict[str, float]:
        total, count = 0.0, 0
        if _is_stream(examples):  # every window of every stream, in order, the state carried across
            for batch in StreamBatches(examples, shard=False):
                b = self.collate([examples[i] for i in batch], meta)
                logits = self._stream_logits(model, b, "score")
                total += float(F.cross_entropy(logits.flatten(0, 1), b["y"].flatten(), reduction="sum"))
                count += b["y"].numel()
            return {"perplexity": math.exp(total / count), "bits_per_token": total / count / math.log(2)}
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
