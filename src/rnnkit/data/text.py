"""Text helpers: a tweet-aware word tokenizer and seeded splits."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["TOKEN_PATTERNS", "split_three", "tokenize"]

T = TypeVar("T")

#: the tokenizer's patterns, also written into exported models for the standalone ONNX runner
TOKEN_PATTERNS = {"url": r"https?://\S+|www\.\S+", "user": r"@\w+", "word": r"[#]?[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]"}
_URL = re.compile(TOKEN_PATTERNS["url"])
_USER = re.compile(TOKEN_PATTERNS["user"])
_WORD = re.compile(TOKEN_PATTERNS["word"])


def tokenize(text: str) -> list[str]:
    """Lower-cased words, ``#hashtags`` and punctuation; URLs become ``<url>``, @mentions ``<user>``."""
    text = _USER.sub(" <user> ", _URL.sub(" <url> ", text.lower()))
    out = []
    for piece in text.split():
        if piece in ("<url>", "<user>"):
            out.append(piece)
        else:
            out.extend(_WORD.findall(piece))
    return out


def split_three(items: Sequence[T], val: float = 0.1, test: float = 0.1, seed: int = 0) -> tuple[list[T], list[T],
                                                                                                  list[T]]:
    """A seeded shuffle cut into train / validation / test (at least one item in each)."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_test, n_val = max(1, round(len(items) * test)), max(1, round(len(items) * val))
    pick = [items[i] for i in order]
    return pick[n_test + n_val :], pick[n_test : n_test + n_val], pick[:n_test]
