"""Named sets of a task's options: ``rnnkit train TASK --recipe NAME``.

A recipe is nothing but option values, applied over the task's defaults (flags given on the
command line still win), so nothing is hidden: ``rnnkit tasks --task NAME`` prints them.

* ``default`` -- the task's own defaults (no overrides).
* ``quick`` -- what ``make demo``'s tour trains: minutes for all tasks on 2 CPU cores, each
  beating its baseline except chars: on the bundled tweets its quick run (3.00 bits per character)
  beats the interpolated trigram (3.29) but not the Kneser-Ney 5-gram (2.40), the task's baseline
  since the 5-gram replaced the trigram. The full recipe on a long text beats it, and so does a
  wider model on all the tweets, measured at 14 minutes: ``--max-train 0 --hidden 512 --embedding 64
  --batch-size 64 --epochs 7 --schedule cosine``, 2.014 against the 5-gram's 2.129 (seed 0).
* ``full`` -- the best configuration measured that fits about 20 minutes on 2 CPU cores
  (``benchmarks/tasks.py`` reruns them against references). A task listed with no overrides has
  had no configuration measured beyond its defaults yet: its defaults are its full recipe.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RECIPES", "recipe", "recipe_names"]

RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "quick": {  # lighter than each task's defaults, so that the whole tour takes minutes
        "g2p": dict(max_train=10000, epochs=5),
        "chars": dict(max_train=3000, epochs=5),
        "image": dict(max_train=20000, epochs=3),
        "translate": dict(max_train=6000, epochs=2, hidden=128, embedding=64, batch_size=32, lr=3e-3),
        "video": dict(max_train=2000, epochs=3),
        "frames": dict(max_train=600, epochs=2, hidden=32),
        "summarize": dict(max_train=8000, epochs=2, hidden=128, embedding=64, lr=3e-3),
    },
    "full": {
        # tagging: the README table has its figure (5 taggers, summed CRF scores). Measured beside it, entity F1 on
        # seeds 0/1/2: one tagger 0.414/0.409/0.464 (51 s a run); 3 taggers 0.407/0.447/0.467 (140 s); the feature
        # CRF 0.441/0.443/0.470
        "tagging": dict(embedding=100, epochs=30, keep_best=True, ensemble=5),
        # chars: on 1.5 M characters of Shakespeare (--data, one stream; benchmarks/tasks.py), 4 epochs of this
        # model reached 2.188 bits per character against the Kneser-Ney 5-gram's 2.317 (7 min); the full
        # recipe's figure is in the README table
        "chars": dict(hidden=512, layers=2, embedding=64, batch_size=64, bptt=128, epochs=10, lr=3e-3,
                      schedule="cosine"),
        # g2p: the README table has its figure; measured beside it (seed 0, beam 4, WER / PER on the frozen test
        # words): hidden 256, dropout 0.3, 12 epochs 28.8% / 6.9% (15 min); hidden 384, 10 epochs 28.0% / 6.7%
        # (19 min); hidden 320 without label smoothing or --average 27.7% / 6.5% (17 min); Phonetisaurus 27.4% / 6.7%;
        # with --input-feeding (1.5x the time a step, so 8 epochs for the same budget) 29.7% / 7.0%. That model (beam 4)
        # alone: 27.1% / 6.4%; its beam of 8 reranked by a graphone n-gram (--joint-ngram; validation WER, 6,000 words,
        # by order and beam: 5 / 8 25.2%, 6 / 4 25.2%, 6 / 8 24.97%, 8 / 8 24.95%; the beam alone 28.3%); seed 1:
        # 23.6% / 5.6% (its beam alone 27.4% / 6.5%)
        "g2p": dict(max_train=0, hidden=320, layers=2, dropout=0.25, epochs=12, schedule="cosine", beam=8, average=3,
                    joint_ngram=8),
        # speech: the README table has its figure (WER on the real voice). Measured beside it, real / synthetic voice
        # by seed: 3000 clips, 40 epochs, average 10: 0.170 / 0.050, 0.175 / 0.052, 0.067 / 0.128 (4 min);
        # without the averaging (seed 0) 0.235 / 0.034; with 2 layers 0.269 / 0.057
        "speech": dict(max_train=6000, epochs=30, average=10),
        # sentiment: the README table has its figure. Screened on seed 0 (3 members; validation / test accuracy):
        # the defaults (4 epochs, constant lr) 0.755 / 0.767; 8 cosine epochs 0.766 / 0.770; 12 cosine epochs 0.765 /
        # 0.769 (overfits after 7); 8 cosine with 5 members 0.761 / 0.771; with a character CNN per word 0.763 / 0.766
        # (2x slower); an auxiliary bidirectional language-model loss (Rei 2017) 5x slower and behind after 2 epochs;
        # hidden 128 with 8 cosine epochs 0.763 / 0.773. With it, --ngrams (a linear part over word 1-2-grams):
        # 0.764 / 0.779, and on seeds 1/2 0.773 / 0.787, 0.776 / 0.778; adding character 2-5-grams to it 0.766 / 0.776;
        # word pairs hashed from the token ids into 2^18 buckets instead (no count threshold) 0.767 / 0.772. Through
        # train_task as benchmarks/tasks.py runs it, test accuracy on seeds 0-4 without --ngrams 0.771 / 0.789 / 0.775 /
        # 0.776 / 0.778 (mean 0.7775), with it 0.779 / 0.781 / 0.781 / 0.776 / 0.781 (0.7796; the SVM's 0.7702).
        # With 5 members instead of 3: 0.778 / 0.786 / 0.784 / 0.778 / 0.784 (0.7820), best validation accuracy by seed
        # 0.770 / 0.779 / 0.778 / 0.781 / 0.780 (mean 0.7775; 0.7767 with 3 members)
        "sentiment": dict(hidden=128, epochs=8, schedule="cosine", ngrams=True, ensemble=5),
        # forecast: its defaults keep the best validation epoch, measured over ten seeds: MAE 12.87 +- 0.44
        # (AR(9) 13.86); more epochs or a cosine schedule did worse (15.1, 13.7)
    },
}


def recipe_names() -> list[str]:
    return list(RECIPES)


def recipe(task: str, name: str) -> dict[str, Any]:
    """The options that recipe ``name`` sets for ``task`` (``{}``: the task's defaults)."""
    if name not in RECIPES:
        raise ValueError(f"--recipe {name!r}: known recipes are {', '.join(RECIPES)}")
    return dict(RECIPES[name].get(task, {}))
