"""The results table: each task's recipe, over several seeds, beside references fitted on the same
split and the published figures (other splits), as Markdown rows for the README.

References (fitted on the training split, their one knob chosen on validation, never on test):

* sentiment -- a linear SVM on TF-IDF word 1-2-grams and character 2-5-grams (scikit-learn), ``C``
  from a grid by validation accuracy;
* tagging -- a feature CRF (sklearn-crfsuite: the word, its lower case, shape, prefixes and
  suffixes, and the same for its neighbours; Lample et al. 2016 list such features), ``c1, c2`` by
  validation entity F1;
* forecast -- the task's own AR(p) baseline (statsmodels), printed with the other baselines;
* g2p -- Phonetisaurus (PyPI ``phonetisaurus``, not an rnnkit dependency: ``pip install
  phonetisaurus``), a joint-sequence n-gram WFST (Novak et al. 2016) trained on the same training
  words with every pronunciation, first-best output, scored like the task;
* chars -- on 1.5 M characters of Shakespeare (``rnnkit.data.shakespeare``, one stream; the task's
  baseline is the Kneser-Ney 5-gram), a Kneser-Ney 7-gram on the same streams.
* speech -- no reference beyond the task's majority-word baseline; the row adds the WER on the
  real voice (Debian's asterisk-core-sounds-en-wav), which training never hears.

    python benchmarks/tasks.py --tasks forecast --seeds 5          # seconds
    python benchmarks/tasks.py --tasks sentiment tagging --seeds 1   # minutes (sklearn-crfsuite for the CRF)
    python benchmarks/tasks.py --tasks chars --seeds 1              # 20 minutes (setup_data.sh fetches the text)
    python benchmarks/tasks.py --tasks g2p --seeds 1                # 20 minutes, and Phonetisaurus's few
    python benchmarks/tasks.py --tasks speech --seeds 2             # 2 x 15 minutes (setup_data.sh: the voices)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from rnnkit.tasks import get_task  # noqa: E402
from rnnkit.tasks.recipes import recipe  # noqa: E402
from rnnkit.tasks.runner import train_task  # noqa: E402
from rnnkit.tasks_cli import quiet  # noqa: E402

#: published figures, on other splits or data (context, not a like-for-like comparison)
PUBLISHED = {
    "forecast": "no standard split; AR(9) is Tong's classic sunspot model",
    "sentiment": "none on this data set",
    "tagging": "WNUT-2016 official test set: 0.524 F1, the shared task's best (Limsopatham & Collier 2016)",
    "g2p": "CMUdict: bi-LSTM WER 23.55% (Yao & Zweig 2015); LSTM + joint n-gram 21.3% (Rao et al. 2015)",
    "chars": "no standard split of these plays; character LSTMs reach ~1.5 bits on large continuous corpora",
    "speech": "none on these clips",
}


def tfidf_svm(data) -> dict[str, float]:
    """Linear SVM on TF-IDF word 1-2-grams and character 2-5-grams; C by validation accuracy."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import f1_score
    from sklearn.svm import LinearSVC

    def texts(split):
        return [" ".join(ex[1]) for ex in split]

    words = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)
    xtr = hstack([words.fit_transform(texts(data.train)), chars.fit_transform(texts(data.train))]).tocsr()

    def features(split):
        return hstack([words.transform(texts(split)), chars.transform(texts(split))]).tocsr()

    ytr, yval, yte = ([ex[0] for ex in s] for s in (data.train, data.val, data.test))
    xval, xte = features(data.val), features(data.test)
    best = max((float(np.mean(LinearSVC(C=c).fit(xtr, ytr).predict(xval) == np.array(yval))), c)
                for c in (0.03, 0.1, 0.3, 1.0, 3.0))
    pred = LinearSVC(C=best[1]).fit(xtr, ytr).predict(xte)
    return {"accuracy": float(np.mean(pred == np.array(yte))), "macro_f1": float(f1_score(yte, pred, average="macro")),
            "C": best[1]}


def _shape(w: str) -> str:
    out = []
    for ch in w:
        c = "X" if ch.isupper() else "x" if ch.islower() else "d" if ch.isdigit() else ch
        if not out or out[-1] != c:
            out.append(c)
    return "".join(out)


def _token_features(words: list[str], i: int) -> dict[str, Any]:
    f: dict[str, Any] = {"bias": 1.0}
    for k in (-1, 0, 1):
        j = i + k
        if 0 <= j < len(words):
            w = words[j]
            f.update({f"{k}:lower": w.lower(), f"{k}:shape": _shape(w), f"{k}:title": w.istitle(),
                      f"{k}:upper": w.isupper()})
            if k == 0:
                f.update({"pre2": w[:2].lower(), "pre3": w[:3].lower(), "suf2": w[-2:].lower(),
                          "suf3": w[-3:].lower(), "hash": w.startswith("#"), "at": w.startswith("@"),
                          "url": w.startswith("http")})
        else:
            f[f"{k}:edge"] = True
    return f


def feature_crf(data) -> dict[str, float]:
    """A linear-chain CRF on word, shape and affix features; c1, c2 by validation entity F1."""
    import sklearn_crfsuite

    from rnnkit.tasks.tagging import entity_f1

    def xy(split):
        return [[_token_features(ws, i) for i in range(len(ws))] for ws, _ in split], [list(ts) for _, ts in split]

    (xtr, ytr), (xval, yval), (xte, yte) = xy(data.train), xy(data.val), xy(data.test)
    best = None
    for c1, c2 in ((0.05, 0.01), (0.1, 0.05), (0.3, 0.01), (0.05, 0.1)):
        crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=c1, c2=c2, max_iterations=150,
                                   all_possible_transitions=True).fit(xtr, ytr)
        f1 = entity_f1(crf.predict(xval), yval)
        if best is None or f1 > best[0]:
            best = (f1, crf, (c1, c2))
    return {"entity_f1": entity_f1(best[1].predict(xte), yte), "val_entity_f1": best[0], "c1_c2": best[2]}


def kneser_ney_7(data) -> dict[str, float]:
    """A Kneser-Ney character 7-gram on the same streams as the task's 5-gram."""
    import math

    from rnnkit.tasks._lm import KneserNey, stream_texts

    kn = KneserNey(stream_texts(data.train), len(data.meta["vocab"]["itos"]), 7, stream=True)
    total, count = kn.nll(stream_texts(data.test))
    return {"bits_per_token": total / count / math.log(2)}


def phonetisaurus(data) -> dict[str, float]:
    """Phonetisaurus trained on the training words (every pronunciation); its best guess per test word."""
    import contextlib
    import os
    import tempfile

    import phonetisaurus as ps

    from rnnkit.tasks.g2p import _scores, pronunciations

    lexicon: dict[str, list[list[str]]] = {}
    for s, t in data.train:
        lexicon.setdefault("".join(s), []).append(t)
    sources, refs = pronunciations(data.test)
    words = ["".join(s) for s in sources]
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as null:
        kept = [os.dup(1), os.dup(2)]
        try:  # its tools log every step to the process's stdout and stderr
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            with contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
                ps.train(lexicon, Path(tmp) / "g2p.fst")
                guess = dict(ps.predict(words, Path(tmp) / "g2p.fst"))
        finally:
            for fd, keep in zip((1, 2), kept, strict=True):
                os.dup2(keep, fd)
                os.close(keep)
    return _scores([guess.get(w, []) for w in words], refs)


REFERENCES = {"sentiment": tfidf_svm, "tagging": feature_crf, "chars": kneser_ney_7, "g2p": phonetisaurus}
#: metrics printed beside the task's own in its row
ALSO = {"g2p": ("wer", "per", "beam_only_wer", "beam_only_per"), "speech": ("real_wer", "real_cer")}


def data_for(name: str) -> dict[str, str]:
    """The --data a task's benchmark reads instead of its bundled data (chars: Shakespeare)."""
    if name == "chars":
        from rnnkit.data.shakespeare import shakespeare_text

        return {"data": str(shakespeare_text())}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["forecast"])
    parser.add_argument("--recipe", default="full", help="default, quick or full")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="runs/bench_tasks")
    parser.add_argument("--no-references", action="store_true")
    args = parser.parse_args()
    quiet()
    rows = []
    for name in args.tasks:
        task = get_task(name)
        figures, seconds, result, ref_runs, extra = [], [], None, [], []
        for seed in range(args.seeds):
            cfg = task.config(seed=seed, progress=False, **recipe(name, args.recipe), **data_for(name))
            t0 = time.time()
            result = train_task(task, cfg, args.out, f"{name}-{args.recipe}-s{seed}", overwrite=True,
                                echo=lambda m: None)
            seconds.append(time.time() - t0)
            figures.append(result.metrics[task.metric])
            extra.append({k: result.metrics[k] for k in ALSO.get(name, ()) if k in result.metrics})
            print(f"{name} seed {seed}: {task.metric} {figures[-1]:.4f} {extra[-1]} ({seconds[-1]:.0f} s)", flush=True)
            if name in REFERENCES and not args.no_references:  # each seed has its own split: fit it there too
                t0 = time.time()
                ref_runs.append(REFERENCES[name](result.data))
                print(f"{name} seed {seed} reference {REFERENCES[name].__name__}: {ref_runs[-1]} "
                      f"({time.time() - t0:.0f} s)", flush=True)
        ours = f"{statistics.mean(figures):.4g}"
        if len(figures) > 1:
            ours += f" ({min(figures):.4g}-{max(figures):.4g}, {len(figures)} seeds)"
        for k in extra[0]:
            values = [e[k] for e in extra]
            ours += f"; {k} {statistics.mean(values):.4g}"
            if len(values) > 1:
                ours += f" ({min(values):.4g}-{max(values):.4g})"
        refs = {k: round(v, 4) for k, v in result.baselines.items()}
        if ref_runs:
            values = [r[task.metric] for r in ref_runs]
            refs[REFERENCES[name].__name__] = round(statistics.mean(values), 4)
            for k in (k for k in ALSO.get(name, ()) if k in ref_runs[0]):
                refs[f"{REFERENCES[name].__name__} {k}"] = round(statistics.mean(r[k] for r in ref_runs), 4)
            if len(values) > 1:
                refs[f"{REFERENCES[name].__name__} per seed"] = [round(v, 4) for v in values]
        print(f"{name}: ours {ours}; baselines and references {refs}", flush=True)
        rows.append(f"| {name} | {task.metric} | {ours} | {statistics.median(seconds):.0f} s | "
                    f"{', '.join(f'{k} {v}' for k, v in refs.items())} | {PUBLISHED.get(name, '')} |")
    print(f"\n| task | metric | ours ({args.recipe} recipe) | time per run | baselines and references, same split | "
          "published (other splits) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
