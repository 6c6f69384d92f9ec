"""English-Spanish Bible verses from Debian's SWORD modules (public domain), read with PyPI ``pysword``.

``sword-text-web`` installs the World English Bible (module ``engWEB2015eb``) and
``sword-text-sparv`` the Reina-Valera 1909 (``spaRV1909eb``) under ``/usr/share/sword``. Both
follow the same versification, so a verse's (book, chapter, verse) names the same passage in each;
:func:`bible_pairs` keeps the 31,077 verses present and non-empty in both.

The raw text carries OSIS markup: ``<note>`` elements (translators' footnotes) are dropped with
their text, every other tag is stripped and its text kept. Reading both Bibles takes about a
second, and the parsed pairs are cached as a TSV under ``$RNNKIT_CACHE`` (default
``~/.cache/rnnkit``), written atomically.
"""

from __future__ import annotations

import functools
import html
import os
import re
from pathlib import Path
from typing import NamedTuple

from rnnkit._files import write_bytes_atomic
from rnnkit.data.bundled import DatasetInfo, DataUnavailable

__all__ = ["BIBLE", "Verse", "bible_pairs", "clean_osis"]

SWORD_DIR = Path(os.environ.get("RNNKIT_SWORD", "/usr/share/sword"))
SOURCE_MODULE, TARGET_MODULE = "engWEB2015eb", "spaRV1909eb"
PARSE_VERSION = 1  # bump when clean_osis changes, so that old caches are not reused
BIBLE = DatasetInfo(
    "bible-en-es", f"Debian packages sword-text-web ({SOURCE_MODULE}) and sword-text-sparv ({TARGET_MODULE}) "
                   f"under {SWORD_DIR}, read with PyPI pysword",
    "public domain (World English Bible; Reina-Valera 1909)",
    "31,077 verses present in both: English (WEB) to Spanish (RV 1909)",
    "by chapter: whole chapters go to train / validation / test 80/10/10 by a seeded shuffle, so no passage "
    "straddles two splits",
    "sudo apt-get install sword-text-web sword-text-sparv && pip install pysword (or: bash scripts/setup_data.sh)",
    "World English Bible (2015); Reina-Valera (1909); SWORD modules by CrossWire",
)

_NOTE = re.compile(r"<note\b[^>]*?(?:/>|>.*?</note>)", re.S)
_TAG = re.compile(r"<[^>]*>")


class Verse(NamedTuple):
    book: str  # OSIS name, e.g. "Gen"
    chapter: int
    verse: int
    source: str  # English
    target: str  # Spanish


def clean_osis(text: str) -> str:
    """Plain text of one verse's OSIS markup: notes dropped, tags stripped, entities decoded,
    whitespace collapsed. A note stands between two words, so it becomes a space."""
    return " ".join(html.unescape(_TAG.sub("", _NOTE.sub(" ", text))).split())


def _cache_path() -> Path:
    root = Path(os.environ.get("RNNKIT_CACHE", Path.home() / ".cache" / "rnnkit"))
    return root / f"bible-{SOURCE_MODULE}-{TARGET_MODULE}-v{PARSE_VERSION}.tsv"


def _read_module(modules, name: str) -> dict[tuple[str, int, int], str]:
    bible = modules.get_bible_from_module(name)
    # pysword decompresses a verse's whole block again for every verse in it (most of a minute per
    # Bible); we read in canonical order, so remembering the last few blocks makes it seconds.
    # Private to pysword, hence the guard: without it reading is slow, not wrong.
    if callable(getattr(bible, "_decompressed_text", None)):
        bible._decompressed_text = functools.lru_cache(maxsize=8)(bible._decompressed_text)
    verses: dict[tuple[str, int, int], str] = {}
    for testament in bible.get_structure().get_books().values():
        for book in testament:
            for chapter in range(1, book.num_chapters + 1):
                # one call per chapter (a call per verse is several times slower); \x00 never occurs in the text
                texts = bible.get(books=[book.osis_name], chapters=[chapter], clean=False, join="\x00").split("\x00")
                for number, text in enumerate(texts, 1):
                    verses[(book.osis_name, chapter, number)] = clean_osis(text)
    return verses


def _parse() -> list[Verse]:
    try:
        from pysword.modules import SwordModules
    except ModuleNotFoundError:
        raise DataUnavailable(f"the Python package pysword is missing; run: {BIBLE.install}") from None
    if not (SWORD_DIR / "mods.d").is_dir():
        raise DataUnavailable(f"{SWORD_DIR}/mods.d is missing (no SWORD modules installed); run: {BIBLE.install}")
    modules = SwordModules(str(SWORD_DIR))
    found = modules.parse_modules()
    for name in (SOURCE_MODULE, TARGET_MODULE):
        if name not in found:
            raise DataUnavailable(f"SWORD module {name} is not under {SWORD_DIR} (found {sorted(found)}); "
                                  f"run: {BIBLE.install}")
    src, tgt = _read_module(modules, SOURCE_MODULE), _read_module(modules, TARGET_MODULE)
    return [Verse(*key, s, tgt[key]) for key, s in src.items() if s and tgt.get(key)]


def bible_pairs() -> list[Verse]:
    """Every verse in both Bibles, in canonical order (parsed once, then read from the cache)."""
    path = _cache_path()
    if path.is_file():
        rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
        return [Verse(b, int(c), int(v), s, t) for b, c, v, s, t in rows]
    verses = _parse()
    # clean_osis collapses all whitespace, so no field holds a tab or a newline
    text = "".join(f"{v.book}\t{v.chapter}\t{v.verse}\t{v.source}\t{v.target}\n" for v in verses)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, text.encode("utf-8"))
    return verses
