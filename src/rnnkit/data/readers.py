"""Reading users' files with errors that name the file, the line and the problem.

Three formats cover every task (each task documents which one it reads and its columns):

* a table (:func:`read_table`): CSV, or TSV for ``.tsv``/``.tab`` files, UTF-8, with a header
  row naming the columns;
* plain text (:func:`read_lines`): one example per line, UTF-8;
* blocks (:func:`read_blocks`): ``token<TAB>tag`` lines, a blank line between sentences (CoNLL).

Every problem raises :class:`DataError`: ``data.csv, line 7: has 3 fields but the header has 2``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DataError", "decode_file", "read_blocks", "read_header", "read_lines", "read_table"]


class DataError(ValueError):
    """A problem in a data file; ``str(err)`` is ``"<path>, line <n>: <problem>"``."""

    def __init__(self, path: str | os.PathLike, line: int | None, problem: str) -> None:
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


def decode_file(path: str | os.PathLike, errors: str = "strict") -> str:
    """The file's text as UTF-8 (a BOM is dropped); missing, empty or non-UTF-8 files raise :class:`DataError`
    (``errors="replace"`` reads known-messy bundled files instead)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, None, "no such file")
    raw = p.read_bytes()
    if not raw.strip():
        raise DataError(p, None, "the file is empty")
    try:
        text = raw.decode("utf-8-sig", errors=errors)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(p, line, f"is not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {column}); "
                                 "re-save the file as UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_lines(path: str | os.PathLike, *, skip_blank: bool = True) -> list[tuple[int, str]]:
    """``(line number, line)`` for every (non-blank) line of a UTF-8 text file."""
    text = decode_file(path)
    rows = [(i, line) for i, line in enumerate(text.split("\n"), 1) if line.strip() or not skip_blank]
    if not rows:
        raise DataError(path, None, "the file has no non-blank lines")
    return rows


def _delimiter(path: Path, delimiter: str | None) -> str:
    if delimiter is not None:
        return delimiter
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def read_header(path: str | os.PathLike, *, delimiter: str | None = None) -> list[str]:
    """The column names of a CSV/TSV file's header row (for a task whose columns are the user's)."""
    p = Path(path)
    try:
        return [h.strip() for h in next(csv.reader(io.StringIO(decode_file(p)), delimiter=_delimiter(p, delimiter)))]
    except StopIteration:
        raise DataError(p, 1, "has no header row") from None
    except csv.Error as err:
        raise DataError(p, 1, f"is not valid CSV ({err})") from None


def read_table(
    path: str | os.PathLike, columns: Sequence[str], *, delimiter: str | None = None, allow_empty: Sequence[str] = (),
    errors: str = "strict", optional: Sequence[str] = (), keep_blank: bool = False,
) -> list[tuple[int, dict[str, str]]]:
    """``(line number, {column: value})`` for every data row of a CSV/TSV file with a header.

    ``columns`` must all appear in the header (others are ignored); ``optional`` columns are read
    when the header has them. Every row must have as many fields as the header, and no required
    column may be empty unless listed in ``allow_empty``. Blank lines are skipped, unless
    ``keep_blank``: then a blank line between data rows is a row of empty values (in a one-column
    file it is a blank cell) and only blank lines at the end are skipped.
    """
    p = Path(path)
    text = decode_file(p, errors)
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(p, delimiter))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError(p, 1, "has no header row") from None
    except csv.Error as err:
        raise DataError(p, reader.line_num, f"is not valid CSV ({err})") from None
    missing = [c for c in columns if c not in header]
    if missing:
        sep = "tab" if _delimiter(p, delimiter) == "\t" else repr(_delimiter(p, delimiter))
        raise DataError(p, 1, f"missing column(s) {missing}; the header ({sep}-separated) has {header}, "
                              f"the task needs {list(columns)}")
    index = {c: header.index(c) for c in [*columns, *optional] if c in header}
    rows: list[tuple[int, dict[str, str]]] = []
    blanks: list[int] = []  # blank lines since the last data row
    try:
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                blanks.append(line)
                continue
            if keep_blank:
                for b in blanks:
                    empty = {c: "" for c in index}
                    for c in columns:
                        if c not in allow_empty:
                            raise DataError(p, b, f"column {c!r} is empty (a blank line)")
                    rows.append((b, empty))
            blanks = []
            if len(fields) != len(header):
                raise DataError(p, line, f"has {len(fields)} field(s) but the header has {len(header)}")
            row = {c: fields[i].strip() for c, i in index.items()}
            for c in columns:
                if not row[c] and c not in allow_empty:
                    raise DataError(p, line, f"column {c!r} is empty")
            rows.append((line, row))
    except csv.Error as err:
        raise DataError(p, reader.line_num, f"is not valid CSV ({err})") from None
    if not rows:
        raise DataError(p, None, "has a header but no data rows")
    return rows


def read_blocks(path: str | os.PathLike, fields: int = 2) -> list[tuple[int, list[list[str]]]]:
    """Sentences of ``fields`` tab-separated columns per line, separated by blank lines.

    Returns ``(first line number, [[token, tag, ...], ...])`` per sentence.
    """
    text = decode_file(path)
    blocks: list[tuple[int, list[list[str]]]] = []
    current: list[list[str]] = []
    start = 0
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            if current:
                blocks.append((start, current))
                current = []
            continue
        parts = line.split("\t")
        if len(parts) != fields or not all(x.strip() for x in parts):
            raise DataError(path, i, f"needs {fields} non-empty tab-separated fields (token<TAB>tag), "
                                     f"got {len(parts)}: {line[:60]!r}")
        if not current:
            start = i
        current.append([x.strip() for x in parts])
    if current:
        blocks.append((start, current))
    if not blocks:
        raise DataError(path, None, "has no sentences")
    return blocks
