"""A token vocabulary with the ids rnnkit's models expect: pad 0, bos 1, eos 2, unk 3."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["BOS", "EOS", "PAD", "SPECIALS", "UNK", "Vocab"]

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3: Seq2Seq's and Generator's default pad/bos/eos ids


class Vocab:
    """Tokens to ids and back. Unknown tokens map to ``<unk>`` (id 3).

    ``Vocab.build(sequences, min_freq=1, max_size=None)`` counts tokens, most frequent first
    (ties broken by the token, so the ids do not depend on the data order).
    """

    def __init__(self, tokens: Sequence[str], specials: Sequence[str] = SPECIALS) -> None:
        self.itos: list[str] = list(specials) + [t for t in tokens if t not in specials]
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("Vocab tokens must be unique")
        self.specials = tuple(specials)

    @classmethod
    def build(cls, sequences: Iterable[Iterable[str]], min_freq: int = 1, max_size: int | None = None,
              specials: Sequence[str] = SPECIALS) -> Vocab:
        counts = Counter(t for seq in sequences for t in seq)
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls(ranked[:max_size] if max_size else ranked, specials)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    @property
    def unk_id(self) -> int:
        return self.stoi.get(UNK, 0)

    def encode(self, tokens: Iterable[str], *, bos: bool = False, eos: bool = False) -> list[int]:
        ids = [self.stoi.get(t, self.unk_id) for t in tokens]
        return ([self.stoi[BOS]] if bos else []) + ids + ([self.stoi[EOS]] if eos else [])

    def decode(self, ids: Iterable[int], *, strip: bool = True) -> list[str]:
        """Tokens for ``ids``; with ``strip``, stop at ``<eos>`` and drop pad/bos."""
        out = []
        for i in ids:
            tok = self.itos[int(i)]
            if strip and tok == EOS:
                break
            if strip and tok in (PAD, BOS):
                continue
            out.append(tok)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"itos": self.itos, "specials": list(self.specials)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocab:
        specials = d.get("specials", SPECIALS)
        return cls(d["itos"][len(specials):], specials)
