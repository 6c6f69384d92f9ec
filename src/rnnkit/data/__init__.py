"""Data for rnnkit's tasks: real datasets that ship in packages, user-file readers with errors
that name the file, line and problem, vocabularies, and padding/bucketing.

Imports numpy and the standard library (the loaders import their packages lazily); ``import
rnnkit`` never imports this package.
"""

from rnnkit.data.bundled import DatasetInfo, DataUnavailable
from rnnkit.data.collate import BucketBatchSampler, pad
from rnnkit.data.readers import DataError, decode_file, read_blocks, read_lines, read_table
from rnnkit.data.vocab import SPECIALS, Vocab

__all__ = [
    "SPECIALS", "BucketBatchSampler", "DataError", "DataUnavailable", "DatasetInfo", "Vocab", "decode_file", "pad",
    "read_blocks", "read_lines", "read_table",
]
