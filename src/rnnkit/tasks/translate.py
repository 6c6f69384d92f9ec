"""Machine translation (many-to-many, unequal lengths): English to Spanish Bible verses.

The guide's first example of unequal-length many-to-many. Data: the World English Bible and the
Reina-Valera 1909, aligned verse by verse (:mod:`rnnkit.data.bible`); whole chapters go to one
split, so no passage straddles two.

Model: :class:`rnnkit.LexicalSeq2Seq` over lower-cased word tokens (bidirectional LSTM encoder,
Luong "general" attention; Sutskever et al. 2014, Luong et al. 2015), its output biased through
attention by the IBM Model 1 lexicon of the training split (Arthur et al. 2016), decoded by beam
search (width 4); an unknown output word becomes the dictionary translation of the source word
it attends to most (or that word). The lexicon
is what lets it learn on two CPU cores: after one epoch, greedy BLEU on 300 held-out verses is
17.1 with it and 0.5 without.

Metrics on held-out chapters: BLEU and chrF (sacrebleu) on the lower-cased tokens, so that casing
and tokenization count for neither side. Baseline on the same verses: word-by-word translation
with a dictionary learnt on the training split by IBM Model 1 (Brown et al. 1993; EM over all
alignments), each English word replaced by its most probable Spanish word, unknown words copied.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch import nn

from rnnkit.data.bible import BIBLE, bible_pairs
from rnnkit.data.collate import pad
from rnnkit.data.readers import read_table
from rnnkit.data.text import split_three
from rnnkit.data.vocab import UNK, Vocab
from rnnkit.models import LexicalSeq2Seq
from rnnkit.tasks.base import Prepared, TaskConfig, register
from rnnkit.tasks.g2p import G2PTask

__all__ = ["TOKENIZER", "TranslateTask", "detokenize", "ibm_model1", "replace_unknown", "tokenize_words"]

#: how text becomes tokens and tokens text again; written into the ONNX export's model.json so that
#: the standalone runner applies the same rules
TOKENIZER = {
    "pattern": r"\w+|[^\w\s]",  # words (any script) and single punctuation marks
    "lower": True,
    "replace": {"’": "'", "‘": "'"},
    "attach_left": ".,;:!?)]»”'",  # no space before these
    "attach_right": "¿¡([«“",  # no space after these
}
_PATTERN = re.compile(TOKENIZER["pattern"])
MAX_TEST = 1000  # held-out verses scored (beam search over all 3,100 adds a minute and little else)
BEAM = 4
MAX_LEN = (2, 10)  # decoding stops after 2 target tokens per (padded) source token, plus 10
VOCAB = 8000  # most frequent tokens of each side kept; the rest are <unk>
LEXICON_K = 8  # translations per source word in the model's lexicon (LexicalSeq2Seq)
#: word-count ratio beyond which a verse pair is misaligned (the two Bibles number a few verses
#: differently, and the WEB's last verse carries its glossary): 80 of 31,077 pairs
MAX_RATIO = 2.0


def tokenize_words(text: str) -> list[str]:
    for a, b in TOKENIZER["replace"].items():
        text = text.replace(a, b)
    return _PATTERN.findall(text.lower() if TOKENIZER["lower"] else text)


def detokenize(tokens: list[str]) -> str:
    out = ""
    for tok in tokens:
        if out and tok not in TOKENIZER["attach_left"] and out[-1] not in TOKENIZER["attach_right"]:
            out += " "
        out += tok
    return out


def ibm_model1(pairs: list[tuple[list[str], list[str]]], iterations: int = 5,
               top: int = 1) -> dict[str, list[tuple[str, float]]]:
    """The ``top`` most probable target words ``(word, t(word | source word))`` of each source word
    under IBM Model 1 (with a NULL source word), trained by EM on ``(source tokens, target tokens)``
    pairs. Vectorised over every (source word, target word) co-occurrence of the corpus."""
    src_ids: dict[str, int] = {"<null>": 0}
    tgt_ids: dict[str, int] = {}
    e_all, f_all, group_all = [], [], []
    group = 0
    for s, t in pairs:
        es = np.array([0] + [src_ids.setdefault(w, len(src_ids)) for w in s], dtype=np.int64)
        fs = np.array([tgt_ids.setdefault(w, len(tgt_ids)) for w in t], dtype=np.int64)
        if not len(fs):
            continue
        e_all.append(np.tile(es, len(fs)))  # for target position j: every source word
        f_all.append(np.repeat(fs, len(es)))
        group_all.append(np.repeat(np.arange(group, group + len(fs)), len(es)))
        group += len(fs)
    e, f, g = np.concatenate(e_all), np.concatenate(f_all), np.concatenate(group_all)
    pair_ids, inverse = np.unique(e * len(tgt_ids) + f, return_inverse=True)
    pair_e = pair_ids // len(tgt_ids)
    t = np.ones(len(pair_ids))  # t(f | e), uniform to start
    for _ in range(iterations):
        p = t[inverse]
        posterior = p / np.bincount(g, weights=p)[g]  # P(a_j = i | e, f)
        counts = np.bincount(inverse, weights=posterior, minlength=len(pair_ids))
        t = counts / np.bincount(pair_e, weights=counts)[pair_e]
    order = np.lexsort((-t, pair_e))  # by source word, then most probable first
    starts = np.r_[0, np.flatnonzero(pair_e[order][1:] != pair_e[order][:-1]) + 1, len(order)]
    src_words, tgt_words = list(src_ids), list(tgt_ids)
    table = {}
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        best = order[a : min(b, a + top)]
        if pair_e[best[0]] != 0:
            table[src_words[pair_e[best[0]]]] = [(tgt_words[pair_ids[i] % len(tgt_ids)], float(t[i])) for i in best]
    return table


def replace_unknown(word: str, attended: str, dictionary: dict[str, str]) -> str:
    """An output ``<unk>`` becomes the dictionary's translation of the source word it attends to
    most, or that word itself when the dictionary has none (a name, mostly): Luong et al. 2015,
    "Addressing the rare word problem in neural machine translation"."""
    return dictionary.get(attended, attended) if word == UNK else word


def _scores(pred: list[list[str]], gold: list[list[str]]) -> dict[str, float]:
    import sacrebleu

    hyps, refs = [" ".join(p) for p in pred], [[" ".join(g) for g in gold]]
    return {"bleu": float(sacrebleu.corpus_bleu(hyps, refs, tokenize="none", force=True).score),
            "chrf": float(sacrebleu.corpus_chrf(hyps, refs).score)}


def _split_by_group(items: list[tuple[Any, Any, Any]], seed: int):
    """Whole groups (the first field) to train / validation / test 80/10/10, by a seeded shuffle."""
    groups: dict[Any, list] = defaultdict(list)
    for key, s, t in items:
        groups[key].append((s, t))
    parts = split_three(sorted(groups, key=str), seed=seed)
    out = [[e for key in part for e in groups[key]] for part in parts]
    random.Random(seed).shuffle(out[0])  # --max-train then samples every book, not the first chapters
    return out


@register
class TranslateTask(G2PTask):
    name = "translate"
    title = "English to Spanish (Bible verses)"
    topology = "many-to-many unequal (Seq2Seq + attention, beam search)"
    dataset = BIBLE
    metric, higher_is_better, baseline = "bleu", True, "word_by_word_bleu"
    user_format = ("CSV/TSV with columns 'source' and 'target' (sentences; tokenized into lower-cased words and "
                   "punctuation) and an optional 'group' (rows of one group, e.g. a document, stay in one split); "
                   "UTF-8; split 80/10/10 by a seeded shuffle of groups (of rows without one)")
    predict_format = "one source sentence per line, or the --data table's 'source' column; prints its translation"
    defaults = dict(hidden=256, embedding=128, epochs=4, batch_size=64, lr=2e-3, bidirectional=True, max_train=0,
                    max_length=80, schedule="cosine")
    label_smoothing = 0.0  # g2p's smoothing is not measured here

    def prepare(self, cfg: TaskConfig) -> Prepared:
        if cfg.data:
            rows = read_table(cfg.data, ["source", "target"], optional=["group"])
            items = [(row.get("group") or f"line {line}", tokenize_words(row["source"]),
                      tokenize_words(row["target"])) for line, row in rows]
        else:
            items = [((v.book, v.chapter), tokenize_words(v.source), tokenize_words(v.target)) for v in bible_pairs()
                     if 1 / MAX_RATIO <= len(v.source.split()) / len(v.target.split()) <= MAX_RATIO]
        train, val, test = _split_by_group(items, cfg.seed)
        if cfg.max_length:
            train = [(s, t) for s, t in train if len(s) <= cfg.max_length and len(t) <= cfg.max_length]
        train = self.cap(cfg, train)
        val, test = val[:MAX_TEST], test[:MAX_TEST]
        src_v, tgt_v = Vocab.build((s for s, _ in train), max_size=VOCAB), Vocab.build((t for _, t in train),
                                                                                          max_size=VOCAB)
        table = self._dictionary(train)
        ids = [[0] * LEXICON_K for _ in range(len(src_v))]
        probs = [[0.0] * LEXICON_K for _ in range(len(src_v))]
        for word, best in table.items():
            if word in src_v:
                kept = [(tgt_v.stoi[w], p) for w, p in best if w in tgt_v][:LEXICON_K]
                for k, (i, p) in enumerate(kept):
                    ids[src_v.stoi[word]][k], probs[src_v.stoi[word]][k] = i, round(p, 5)
        # every training source word's best translation, for the <unk>s of the output
        dictionary = {word: best[0][0] for word, best in table.items()}
        meta = {"src": src_v.to_dict(), "tgt": tgt_v.to_dict(), "lexicon": {"ids": ids, "probs": probs},
                "dictionary": dictionary}
        return Prepared(train, val, test, meta)

    def _dictionary(self, train: list[tuple[list[str], list[str]]]) -> dict[str, list[tuple[str, float]]]:
        """IBM Model 1 on the training pairs (15 s on the Bible), shared by the model's lexicon and the
        word-by-word baseline of the same run."""
        key = hash(tuple((tuple(s), tuple(t)) for s, t in train))
        if getattr(self, "_ibm_key", None) != key:
            self._ibm_key, self._ibm = key, ibm_model1(train, top=LEXICON_K)
        return self._ibm

    def build(self, cfg: TaskConfig, meta: dict[str, Any]) -> nn.Module:
        enc, dec = self.recurrent_configs(cfg)
        lex = meta["lexicon"]
        return LexicalSeq2Seq(len(meta["src"]["itos"]), len(meta["tgt"]["itos"]), enc, dec, attention="general",
                              embedding_dim=cfg.embedding, lexicon_ids=torch.tensor(lex["ids"]),
                              lexicon_probs=torch.tensor(lex["probs"]))

    @torch.no_grad()
    def transduce(self, model: nn.Module, sources: list[list[str]], meta: dict[str, Any], beam: int = BEAM):
        """Beam-search translations of ``sources`` (in their order) and each one's attention
        ``(T_out, S)``. Sources are decoded in batches of similar length, since a batch runs until
        its longest translation ends."""
        src_v, tgt_v = Vocab.from_dict(meta["src"]), Vocab.from_dict(meta["tgt"])
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        out: list[list[str]] = [[] for _ in sources]
        attn: list[Any] = [None for _ in sources]
        for start in range(0, len(order), 128):
            chunk = order[start : start + 128]
            x, lengths = pad([src_v.encode(sources[i]) or [src_v.unk_id] for i in chunk])
            dec = model.beam_search(x, lengths, beam_width=beam, max_len=MAX_LEN[0] * x.size(1) + MAX_LEN[1])
            for b, i in enumerate(chunk):
                words = tgt_v.decode(dec.tokens[b].tolist())
                attn[i] = dec.attention[b, :, : len(sources[i])]
                attended = [sources[i][int(attn[i][t].argmax())] for t in range(len(words))]
                out[i] = [replace_unknown(w, a, meta["dictionary"]) for w, a in zip(words, attended, strict=True)]
        return out, attn

    def evaluate(self, model: nn.Module, examples: list[Any], meta: dict[str, Any]) -> dict[str, float]:
        pred, _ = self.transduce(model, [s for s, _ in examples], meta)
        return _scores(pred, [t for _, t in examples])

    def baselines(self, data: Prepared) -> dict[str, float]:
        table = self._dictionary(data.train)
        pred = [[table[w][0][0] if w in table else w for w in s] for s, _ in data.test]
        scores = _scores(pred, [t for _, t in data.test])
        return {f"word_by_word_{k}": v for k, v in scores.items()}

    def predict(self, model: nn.Module, meta: dict[str, Any], lines: list[str]) -> list[str]:
        return [detokenize(p) for p in self.transduce(model, [tokenize_words(line) for line in lines], meta)[0]]

    def score(self, outputs: list[str], targets: list[str]) -> str:
        s = _scores([tokenize_words(o) for o in outputs], [tokenize_words(t) for t in targets])
        return f"BLEU {s['bleu']:.2f}, chrF {s['chrf']:.2f} ({len(outputs)} sentences)"

    def picture(self, model, data, path):
        from rnnkit.tasks.plots import plot_heatmap

        src = min((s for s, _ in data.test[:300] if 12 <= len(s) <= 20), key=len, default=data.test[0][0])
        pred, attn = self.transduce(model, [src], data.meta)
        src_v = Vocab.from_dict(data.meta["src"])
        shown = [w if w in src_v.stoi else f"{w} (unk)" for w in src]
        a = attn[0][: len(pred[0]) + 1, : len(src)].numpy()
        return plot_heatmap(a, shown, [*pred[0], "<eos>"], path,
                            f"{self.picture_title(data.meta)}: attention while translating one held-out verse",
                            xlabel="English token", ylabel="generated Spanish token", value="attention weight")

    def onnx_bundle(self, model, meta):
        bundle = super().onnx_bundle(model, meta)
        bundle.config.update(characters=False, tokenizer=TOKENIZER, beam=BEAM, max_len=list(MAX_LEN),
                             unknown_dictionary=meta["dictionary"])
        return bundle
