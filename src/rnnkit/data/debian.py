"""Debian package descriptions, each long description with its one-line synopsis, written by people.

``apt-get -o Acquire::Languages=en update`` stores the archive's English descriptions as
``/var/lib/apt/lists/*_i18n_Translation-en`` (lz4-, gzip- or xz-compressed, or plain): deb822
stanzas of ``Package``, ``Description-md5`` and ``Description-en``, whose first line is the
synopsis and whose continuation lines (one leading space) the long description. In those lines a
lone ``.`` is a paragraph break, and a line with two leading spaces is shown verbatim (a list or
code), as Debian Policy 5.6.13 says.

The binary ``Packages`` indices in the same directory name each package's source package
(``Source``, else the package itself): packages built from one source often share most of their
description, so a split must keep the packages of one source together.

Parsed once, then cached as JSON lines under ``$RNNKIT_CACHE`` (default ``~/.cache/rnnkit``), keyed by
the size and time of the index files.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import json
import lzma
import os
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

from rnnkit._files import write_bytes_atomic
from rnnkit.data.bundled import DatasetInfo, DataUnavailable

__all__ = ["DESCRIPTIONS", "Description", "clean_description", "package_descriptions", "parse_translations"]

APT_LISTS = Path(os.environ.get("RNNKIT_APT_LISTS", "/var/lib/apt/lists"))
PARSE_VERSION = 1
INSTALL = ("sudo apt-get install lz4 && sudo apt-get -o Acquire::Languages=en update (or: bash "
           "scripts/setup_data.sh)")
DESCRIPTIONS = DatasetInfo(
    "debian-descriptions",
    f"the Debian archive's English package descriptions, {APT_LISTS}/*_i18n_Translation-en.lz4 (fetched by "
    "apt-get -o Acquire::Languages=en update), with source packages from the Packages indices",
    "the descriptions are part of each package (DFSG-free; Debian's packages)",
    "about 64,000 binary packages: a long description and the one-line synopsis written for it",
    "by source package: all packages of one source go to one of train / validation / test (80/10/10, seeded)",
    INSTALL,
    "Debian Policy 5.6.13 (the Description field)",
)


class Description(NamedTuple):
    package: str
    source: str
    synopsis: str
    text: str  # the long description: one line per paragraph or verbatim line


def clean_description(lines: list[str]) -> str:
    """The long description of a stanza's continuation lines (their one leading space removed):
    each paragraph (ended by a ``.`` line) becomes one line of words, and each verbatim line (a
    further leading space) a line of its own."""
    out: list[str] = []
    words: list[str] = []

    def end_paragraph() -> None:
        if words:
            out.append(" ".join(" ".join(words).split()))
            words.clear()

    for line in lines:
        if line.strip() == ".":
            end_paragraph()
        elif line.startswith(" "):
            end_paragraph()
            if line.strip():
                out.append(" ".join(line.split()))
        else:
            words.append(line)
    end_paragraph()
    return "\n".join(out)


def _stanzas(text: str):
    """Each deb822 stanza as ``(fields, continuation lines of the last multi-line field)``."""
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        more: dict[str, list[str]] = {}
        key = None
        for line in block.split("\n"):
            if not line:
                continue
            if line[0] in " \t" and key is not None:
                more.setdefault(key, []).append(line[1:])
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            yield fields, more


def parse_translations(text: str) -> dict[str, tuple[str, str]]:
    """``{package: (synopsis, long description)}`` of a ``Translation-en`` file's text; packages
    without a long description are left out."""
    out = {}
    for fields, more in _stanzas(text):
        name, synopsis = fields.get("Package"), fields.get("Description-en", "")
        body = clean_description(more.get("Description-en", []))
        if name and synopsis and body:
            out[name] = (synopsis, body)
    return out


def parse_sources(text: str) -> dict[str, str]:
    """``{binary package: source package}`` of a ``Packages`` index (``Source: name (version)``)."""
    out = {}
    for fields, _ in _stanzas(text):
        name = fields.get("Package")
        if name:
            out[name] = fields.get("Source", name).split(" ")[0] or name
    return out


def _read(path: Path) -> str:
    if path.suffix == ".lz4":
        tool = shutil.which("lz4")
        if tool is None:
            try:
                import lz4.frame
            except ModuleNotFoundError:
                raise DataUnavailable(f"{path} is lz4-compressed and neither the lz4 tool nor the Python "
                                      f"package lz4 is installed; run: {INSTALL}") from None
            return lz4.frame.decompress(path.read_bytes()).decode("utf-8", "replace")
        data = subprocess.run([tool, "-dc", str(path)], capture_output=True, check=True).stdout
        return data.decode("utf-8", "replace")
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
    if path.suffix == ".xz":
        return lzma.decompress(path.read_bytes()).decode("utf-8", "replace")
    return path.read_text(encoding="utf-8", errors="replace")


def _indices(pattern: str) -> list[Path]:
    """The index files of one kind, one per (mirror, suite, component): the first of the
    compressions present, the largest suite first (so that it wins ties)."""
    chosen: dict[str, Path] = {}
    for path in sorted(APT_LISTS.glob(pattern + "*")):
        stem = path.name.removesuffix(path.suffix) if path.suffix in (".lz4", ".gz", ".xz") else path.name
        if fnmatch.fnmatch(stem, pattern) and stem not in chosen:  # not a .diff or a partial download
            chosen[stem] = path
    return sorted(chosen.values(), key=lambda p: -p.stat().st_size)


def _cache_path(files: list[Path]) -> Path:
    key = hashlib.sha256(repr([(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in files]).encode())
    root = Path(os.environ.get("RNNKIT_CACHE", Path.home() / ".cache" / "rnnkit"))
    return root / f"debian-descriptions-v{PARSE_VERSION}-{key.hexdigest()[:12]}.tsv"


def package_descriptions() -> list[Description]:
    """Every package with a long description, sorted by name (parsed once, then cached)."""
    translations = _indices("*_i18n_Translation-en")
    if not translations:
        raise DataUnavailable(f"no *_i18n_Translation-en index under {APT_LISTS}; run: {INSTALL}")
    packages = _indices("*_binary-*_Packages")
    files = translations + packages
    cache = _cache_path(files)
    if cache.is_file():
        return [Description(*json.loads(line)) for line in cache.read_text(encoding="utf-8").splitlines()]
    texts: dict[str, tuple[str, str]] = {}
    for path in translations:  # the largest (the main suite) first; updates add packages, never replace
        for name, pair in parse_translations(_read(path)).items():
            texts.setdefault(name, pair)
    sources: dict[str, str] = {}
    for path in packages:
        for name, source in parse_sources(_read(path)).items():
            sources.setdefault(name, source)
    out = [Description(name, sources.get(name, name), syn, body) for name, (syn, body) in sorted(texts.items())]
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(cache, "".join(json.dumps(list(d), ensure_ascii=False) + "\n" for d in out).encode("utf-8"))
    return out
