"""Debian package descriptions (for the summarization task): the Translation-en stanzas parse into
synopsis and long description as Debian Policy 5.6.13 lays them out, packages are mapped to their
source package, and the archive's index on this machine holds tens of thousands of them."""

from __future__ import annotations

import gzip
import importlib

import pytest

from rnnkit.data import debian
from rnnkit.data.bundled import DataUnavailable

TRANSLATION = """Package: foo
Description-md5: 0123
Description-en: frobnicate files quickly
 Foo frobnicates files. It is
 fast.
 .
 Features:
   * speed
   * more speed
 .
 This package contains the tool.

Package: foo-doc
Description-md5: 4567
Description-en: documentation for foo
 Foo frobnicates files.
 .
 This package contains the manual.

Package: empty
Description-md5: 89ab
Description-en: a package without a long description
"""

PACKAGES = """Package: foo
Version: 1.0
Description: frobnicate files quickly

Package: foo-doc
Source: foo (1.0-2)
Version: 1.0-2
"""


def test_paragraphs_and_verbatim_lines():
    got = debian.parse_translations(TRANSLATION)
    assert set(got) == {"foo", "foo-doc"}  # no long description: left out
    synopsis, text = got["foo"]
    assert synopsis == "frobnicate files quickly"
    assert text.split("\n") == ["Foo frobnicates files. It is fast.", "Features:", "* speed", "* more speed",
                                "This package contains the tool."]


def test_packages_map_to_their_source():
    assert debian.parse_sources(PACKAGES) == {"foo": "foo", "foo-doc": "foo"}


def test_indices_are_read_compressed_and_cached(tmp_path, monkeypatch):
    lists, cache = tmp_path / "lists", tmp_path / "cache"
    lists.mkdir()
    (lists / "m_dists_x_main_i18n_Translation-en.gz").write_bytes(gzip.compress(TRANSLATION.encode()))
    (lists / "m_dists_x_main_binary-amd64_Packages").write_text(PACKAGES)
    monkeypatch.setenv("RNNKIT_APT_LISTS", str(lists))
    monkeypatch.setenv("RNNKIT_CACHE", str(cache))
    mod = importlib.reload(debian)
    try:
        first = mod.package_descriptions()
        assert [(d.package, d.source) for d in first] == [("foo", "foo"), ("foo-doc", "foo")]
        assert len(list(cache.glob("debian-descriptions-*"))) == 1
        assert mod.package_descriptions() == first  # from the cache
    finally:
        monkeypatch.undo()
        importlib.reload(debian)


def test_a_machine_without_the_index_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_APT_LISTS", str(tmp_path))
    mod = importlib.reload(debian)
    try:
        with pytest.raises(DataUnavailable, match="Acquire::Languages=en update"):
            mod.package_descriptions()
    finally:
        monkeypatch.undo()
        importlib.reload(debian)


@pytest.mark.skipif(not list(debian.APT_LISTS.glob("*_i18n_Translation-en*")),
                    reason="no Translation-en index (bash scripts/setup_data.sh)")
def test_the_archive_holds_tens_of_thousands_of_described_packages():
    found = debian.package_descriptions()
    assert len(found) > 50_000
    by_name = {d.package: d for d in found}
    python = by_name["python3"]
    assert python.source == "python3-defaults" and "python" in python.synopsis.lower() and python.text
    sources = {d.source for d in found}
    assert len(sources) < 0.7 * len(found)  # many sources build several packages (35,077 for 64,602 here)
