"""A joint-sequence ("graphone") n-gram model of spellings and pronunciations, for reranking.

A word and its pronunciation are cut into a sequence of *graphones*, pairs of one letter and
zero to two phonemes (``x:K S``; ``e:`` for a silent e; ``ph`` as ``p:F h:``), and an n-gram model
over graphones gives the pair a joint probability (Bisani & Ney, "Joint-sequence models for
grapheme-to-phoneme conversion", Speech Communication 2008, who found such small graphones with a
long n-gram best; Phonetisaurus, Novak et al. 2016, builds the same kind of model as a WFST). With
graphones of up to two letters as well, reranking the g2p recipe's beam did worse here: 25.3%
validation WER against 24.1% (order 6, 2,000 words). Rao et al. (ICASSP 2015) found that an LSTM and such a
model err differently, and that combining their scores cuts the word error rate; here the
combination reranks the sequence model's beam (:class:`GraphoneModel` is the second opinion,
not a decoder).

Steps:

1. **Alignment** (Jiampojamarn et al. 2007, "many-to-many" alignment, trained by EM): each
   training pair is a path through the letters x phonemes grid with the moves of ``MOVES``; EM
   over all paths (forward-backward, vectorised over the words of one shape) learns a unigram
   probability per graphone, and each word keeps its single best (Viterbi) path.
2. **n-gram**: interpolated Kneser-Ney (:class:`rnnkit.tasks._lm.KneserNey`) over the training
   words' graphone sequences.
3. **Scoring** a hypothesis: its Viterbi path under the unigram probabilities (graphones never seen
   in training are allowed at a tiny probability, so every pair has a path), scored by the n-gram:
   ``log p(letters, phonemes)`` in nats. The best path stands in for the sum over paths.

The model is saved as the graphone inventory and the training words' graphone sequences
(:meth:`to_dict`, compressed); the n-gram counts are rebuilt from them on load, in seconds.
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from rnnkit.tasks._lm import KneserNey

__all__ = ["MOVES", "GraphoneModel", "align"]

#: (letters, phonemes) per graphone: a letter may be silent or make one or two phonemes (the code takes
#: two-letter moves as well, e.g. (2, 1), but see the module docstring)
MOVES = ((1, 0), (1, 1), (1, 2))
#: probability of a graphone never seen in training, so that any pair can still be aligned
UNSEEN = 1e-12
#: above this many distinct source or target symbols the integer keys of graphones would overflow
MAX_SYMBOLS = 10_000


def _keys(src: np.ndarray, tgt: np.ndarray, Vs: int, Vt: int) -> np.ndarray:
    """``(n+1, m+1, len(MOVES), G)`` int64 keys of the graphone that each move from each grid
    point reads, for ``G`` pairs of ``n`` source and ``m`` target ids (ids >= 1); -1 where the
    move leaves the grid."""
    G, n = src.shape
    m = tgt.shape[1]
    keys = np.full((n + 1, m + 1, len(MOVES), G), -1, dtype=np.int64)
    for k, (a, b) in enumerate(MOVES):
        for i in range(n - a + 1):
            s = src[:, i] if a == 1 else src[:, i] * (Vs + 1) + src[:, i + 1]
            for j in range(m - b + 1):
                t = (np.zeros(G, dtype=np.int64) if b == 0 else tgt[:, j] if b == 1
                     else tgt[:, j] * (Vt + 1) + tgt[:, j + 1])
                keys[i, j, k] = (k * (Vs + 1) ** 2 + s) * (Vt + 1) ** 2 + t
    return keys


def _groups(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> dict[tuple[int, int], list[int]]:
    """Indices of ``pairs`` by shape ``(len(src), len(tgt))``, pairs that no path can align left out."""
    groups: dict[tuple[int, int], list[int]] = {}
    for idx, (s, t) in enumerate(pairs):
        n, m = len(s), len(t)
        if n and m <= 2 * n:  # every move reads a letter and at most two phonemes
            groups.setdefault((n, m), []).append(idx)
    return groups


def _forward(prob: np.ndarray, n: int, m: int, viterbi: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Forward sums (or Viterbi maxima with back-pointers) over the grid; ``prob (n+1, m+1, M, G)``
    is each move's probability (0 off the grid)."""
    G = prob.shape[-1]
    alpha = np.zeros((n + 1, m + 1, G))
    alpha[0, 0] = 1.0
    back = np.full((n + 1, m + 1, G), -1, dtype=np.int8) if viterbi else None
    for i in range(1, n + 1):
        for j in range(m + 1):
            best = alpha[i, j]
            for k, (a, b) in enumerate(MOVES):
                if i < a or j < b:
                    continue
                v = alpha[i - a, j - b] * prob[i - a, j - b, k]
                if viterbi:
                    better = v > best
                    best = np.where(better, v, best)
                    back[i, j] = np.where(better, k, back[i, j])
                else:
                    best = best + v
            alpha[i, j] = best
    return alpha, back


def _backward(prob: np.ndarray, n: int, m: int) -> np.ndarray:
    G = prob.shape[-1]
    beta = np.zeros((n + 1, m + 1, G))
    beta[n, m] = 1.0
    for i in range(n - 1, -1, -1):
        for j in range(m, -1, -1):
            total = beta[i, j]
            for k, (a, b) in enumerate(MOVES):
                if i + a <= n and j + b <= m:
                    total = total + prob[i, j, k] * beta[i + a, j + b]
            beta[i, j] = total
    return beta


def _paths(back: np.ndarray, keys: np.ndarray, ok: np.ndarray, n: int, m: int) -> list[list[int]]:
    """Each pair's Viterbi path as graphone keys, in reading order ([] where ``ok`` is False)."""
    G = back.shape[-1]
    cols = np.arange(G)
    i, j = np.full(G, n), np.full(G, m)
    steps: list[np.ndarray] = []
    while True:
        live = (i > 0) & ok
        if not live.any():
            break
        k = np.where(live, back[i, j, cols], 0).astype(np.int64)
        a = np.array([mv[0] for mv in MOVES])[k] * live
        b = np.array([mv[1] for mv in MOVES])[k] * live
        i, j = i - a, j - b
        steps.append(np.where(live, keys[i, j, k, cols], -1))
    out = np.stack(steps[::-1], axis=1) if steps else np.zeros((G, 0), dtype=np.int64)
    return [[int(v) for v in row if v >= 0] if good else [] for row, good in zip(out, ok, strict=True)]


def align(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], Vs: int, Vt: int, iterations: int = 6,
          ) -> tuple[dict[int, float], list[list[int]]]:
    """EM alignment of ``(source ids, target ids)`` pairs (ids in ``1..Vs`` and ``1..Vt``; the models
    here keep the last id of each for symbols never seen in training): the
    graphones' unigram probabilities ``{key: p}`` and each pair's Viterbi path as graphone keys
    (``[]`` for a pair no path aligns, e.g. more than two phonemes per letter)."""
    if max(Vs, Vt) > MAX_SYMBOLS:
        raise ValueError(f"a graphone model takes at most {MAX_SYMBOLS} source and target symbols, got {Vs} and {Vt}")
    groups = _groups(pairs)
    arrays = {}
    for (n, m), idx in groups.items():
        src = np.array([pairs[i][0] for i in idx], dtype=np.int64)
        tgt = np.array([pairs[i][1] for i in idx], dtype=np.int64).reshape(len(idx), m)
        arrays[(n, m)] = _keys(src, tgt, Vs, Vt)
    vocab = np.unique(np.concatenate([k[k >= 0] for k in arrays.values()])) if arrays else np.zeros(0, np.int64)
    # compact ids, with len(vocab) for "off the grid" (probability 0)
    ids = {s: np.where(k >= 0, np.searchsorted(vocab, np.maximum(k, 0)), len(vocab)) for s, k in arrays.items()}
    p = np.full(len(vocab) + 1, 1.0 / max(len(vocab), 1))
    p[-1] = 0.0
    for _ in range(iterations):
        counts = np.zeros(len(vocab) + 1)
        for (n, m), c in ids.items():
            prob = p[c]
            alpha, _ = _forward(prob, n, m, viterbi=False)
            beta = _backward(prob, n, m)
            z = alpha[n, m]
            good = z > 0
            post = np.zeros_like(prob)
            for k, (a, b) in enumerate(MOVES):
                end = np.zeros_like(alpha)
                end[: n + 1 - a, : m + 1 - b] = beta[a:, b:]
                post[:, :, k] = alpha * prob[:, :, k] * end
            post = np.where(good, post / np.where(good, z, 1.0), 0.0)
            counts += np.bincount(c.ravel(), weights=post.ravel(), minlength=len(vocab) + 1)
        counts[-1] = 0.0
        p = counts / max(counts.sum(), 1e-300)
    paths: list[list[int]] = [[] for _ in pairs]
    for (n, m), c in ids.items():
        alpha, back = _forward(p[c], n, m, viterbi=True)
        for i, path in zip(groups[(n, m)], _paths(back, arrays[(n, m)], alpha[n, m] > 0, n, m), strict=True):
            paths[i] = path
    return {int(k): float(v) for k, v in zip(vocab, p[:-1], strict=True) if v > 0}, paths


def _pack(values: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(values.astype("<i4").tobytes(), 9)).decode("ascii")


def _unpack(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<i4")


@lru_cache(maxsize=4)
def _ngram(corpus: str, vocab_size: int, order: int) -> KneserNey:
    flat = _unpack(corpus)
    cuts = np.flatnonzero(flat == 0)
    texts = [seq.tolist() for seq in np.split(flat, cuts + 1)[:-1]]
    return KneserNey([t[:-1] for t in texts], vocab_size, order=order)  # without the separator


class GraphoneModel:
    """A graphone n-gram of ``order`` over ``(source tokens, target tokens)`` pairs.

    ``GraphoneModel.fit(pairs, order)`` trains it; :meth:`score` gives ``log p(source, target)``
    (nats) of any pair; :meth:`to_dict` / :meth:`from_dict` round-trip it through JSON.
    """

    def __init__(self, src_symbols: list[str], tgt_symbols: list[str], probs: dict[int, float],
                 corpus: str, order: int) -> None:
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.src_symbols, self.tgt_symbols, self.order = list(src_symbols), list(tgt_symbols), order
        self._src = {s: i + 1 for i, s in enumerate(self.src_symbols)}
        self._tgt = {t: i + 1 for i, t in enumerate(self.tgt_symbols)}
        self.probs, self.corpus = probs, corpus
        self._keys = np.array(sorted(probs), dtype=np.int64)
        self._p = np.array([probs[int(k)] for k in self._keys])
        # n-gram ids: 0 pad, 1 bos, 2 eos (KneserNey's markers), graphones from 3, then one id for "unseen"
        self.unseen_id = len(self._keys) + 3

    @classmethod
    def fit(cls, pairs: Sequence[tuple[Sequence[str], Sequence[str]]], order: int = 6,
            iterations: int = 6) -> GraphoneModel:
        """Align ``pairs`` by EM and count the n-grams of their graphone paths."""
        src_symbols = sorted({s for src, _ in pairs for s in src})
        tgt_symbols = sorted({t for _, tgt in pairs for t in tgt})
        si = {s: i + 1 for i, s in enumerate(src_symbols)}
        ti = {t: i + 1 for i, t in enumerate(tgt_symbols)}
        coded = [([si[s] for s in src], [ti[t] for t in tgt]) for src, tgt in pairs]
        probs, paths = align(coded, len(src_symbols) + 1, len(tgt_symbols) + 1, iterations)
        used = {k for path in paths for k in path}  # EM leaves a little mass on graphones no best path takes
        probs = {k: v for k, v in probs.items() if k in used}
        keys = np.array(sorted(probs), dtype=np.int64)
        seqs = [np.searchsorted(keys, np.array(path, dtype=np.int64)) + 3 for path in paths if path]
        flat = np.concatenate([np.append(s, 0) for s in seqs]) if seqs else np.zeros(0, np.int64)
        return cls(src_symbols, tgt_symbols, probs, _pack(flat), order)

    def to_dict(self) -> dict[str, Any]:
        keys = np.array(sorted(self.probs), dtype=np.int64)
        return {"order": self.order, "src_symbols": self.src_symbols, "tgt_symbols": self.tgt_symbols,
                "keys": _pack_keys(keys), "probs": [self.probs[int(k)] for k in keys], "corpus": self.corpus}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GraphoneModel:
        keys = _unpack_keys(d["keys"])
        if len(keys) != len(d["probs"]):
            raise ValueError(f"graphone model: {len(keys)} graphones but {len(d['probs'])} probabilities")
        return cls(d["src_symbols"], d["tgt_symbols"], dict(zip(keys.tolist(), d["probs"], strict=True)),
                   d["corpus"], int(d["order"]))

    @property
    def ngram(self) -> KneserNey:
        return _ngram(self.corpus, self.unseen_id + 1, self.order)

    def _sizes(self) -> tuple[int, int]:
        return len(self.src_symbols) + 1, len(self.tgt_symbols) + 1  # the last id of each: a symbol never seen

    def _known(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(position in the inventory, whether the key is in it)`` of each key."""
        if not len(self._keys):
            return np.zeros(keys.shape, np.int64), np.zeros(keys.shape, bool)
        pos = np.clip(np.searchsorted(self._keys, keys), 0, len(self._keys) - 1)
        return pos, (keys >= 0) & (self._keys[pos] == keys)

    def paths(self, pairs: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[list[int] | None]:
        """Each pair's best path under the unigram graphone probabilities (a graphone never seen in
        training at probability ``UNSEEN``), as graphone keys; None for a pair no path aligns."""
        Vs, Vt = self._sizes()
        coded = [([self._src.get(s, Vs) for s in src], [self._tgt.get(t, Vt) for t in tgt]) for src, tgt in pairs]
        out: list[list[int] | None] = [None] * len(pairs)
        for (n, m), idx in _groups(coded).items():
            src = np.array([coded[i][0] for i in idx], dtype=np.int64)
            tgt = np.array([coded[i][1] for i in idx], dtype=np.int64).reshape(len(idx), m)
            keys = _keys(src, tgt, Vs, Vt)
            pos, known = self._known(keys)
            prob = np.where(known, self._p[pos] if len(self._keys) else 0.0, np.where(keys >= 0, UNSEEN, 0.0))
            alpha, back = _forward(prob, n, m, viterbi=True)
            for i, path in zip(idx, _paths(back, keys, alpha[n, m] > 0, n, m), strict=True):
                out[i] = path
        return out

    def segment(self, source: Sequence[str], target: Sequence[str]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        """The pair's best path as graphones, ``[(letters, phonemes), ...]`` (``[]`` when none aligns);
        a symbol never seen in training reads ``"?"``."""
        path = self.paths([(source, target)])[0] or []
        Vs, Vt = self._sizes()
        src_names, tgt_names = [*self.src_symbols, "?"], [*self.tgt_symbols, "?"]
        out = []
        for key in path:
            rest, t = divmod(key, (Vt + 1) ** 2)
            k, s = divmod(rest, (Vs + 1) ** 2)
            a, b = MOVES[k]
            letters = [s] if a == 1 else list(divmod(s, Vs + 1))
            phones = [] if b == 0 else [t] if b == 1 else list(divmod(t, Vt + 1))
            out.append((tuple(src_names[i - 1] for i in letters), tuple(tgt_names[i - 1] for i in phones)))
        return out

    def score(self, pairs: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[float]:
        """``log p(source, target)`` in nats of each pair (its best path, end marker included);
        ``-inf`` for a pair that no path aligns."""
        lm = self.ngram
        k = self.order - 1
        out = []
        for path in self.paths(pairs):
            if path is None:
                out.append(-math.inf)
                continue
            pos, known = self._known(np.array(path, dtype=np.int64))
            d = lm._text(np.where(known, pos + 3, self.unseen_id).tolist())
            out.append(sum(math.log(lm.prob(d[max(0, i - k) : i], d[i])) for i in range(k, len(d))))
        return out


def _pack_keys(keys: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(keys.astype("<i8").tobytes(), 9)).decode("ascii")


def _unpack_keys(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<i8").astype(np.int64)
