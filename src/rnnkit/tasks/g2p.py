"""Transduction (many-to-many, unequal lengths): English spelling to pronunciation (CMUdict).

Grapheme-to-phoneme conversion is translation between two alphabets: ``"knight" -> N AY T``.
Model: :class:`rnnkit.Seq2Seq` (bidirectional encoder, Luong "general" attention; Sutskever et al.
2014, Bahdanau et al. 2015, Luong et al. 2015), greedy decoding or a beam (``--beam``), dropout
(``--dropout``), label smoothing (0.1); ``--input-feeding`` adds Luong's input feeding (each decoder
step also reads the last step's attentional state h~, so training runs step by step, about 1.5x
slower); ``--joint-ngram N`` reranks the beam's hypotheses by adding a weighted graphone
N-gram score (:mod:`rnnkit.tasks.graphones`; Rao et al. 2015 combine an LSTM with such a model),
the weight chosen on validation words after training. Data: every alphabetic CMUdict word with every
pronunciation; the held-out words are a frozen list shipped with rnnkit
(``rnnkit/data/cmudict_heldout.txt``; ``--seed`` does not move them), and a word's
pronunciations stay in one split. Metrics on held-out words, as in the g2p literature (Yao &
Zweig 2015): a word is right when it matches any of its pronunciations (word error rate = 1 -
exact match); the phoneme error rate is edit distance to the closest
pronunciation over that pronunciation's length (jiwer); BLEU (sacrebleu, over phoneme tokens).
Baseline on the same words: a letter-by-letter
dictionary (each letter's most frequent phoneme, learnt from training words whose spelling and
pronunciation have equal length; repeated phonemes merged), the analogue of word-by-word
dictionary translation.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.bundled import CMUDICT, cmudict_heldout, cmudict_words
from rnnkit.data.collate import pad
from rnnkit.data.readers import read_table
from rnnkit.data.text import split_three
from rnnkit.data.vocab import Vocab
from rnnkit.models import RecurrentConfig, Seq2Seq
from rnnkit.tasks.base import Prepared, Task, TaskConfig, register
from rnnkit.tasks.graphones import MOVES, GraphoneModel
from rnnkit.tasks.plots import plot_heatmap

__all__ = ["G2PTask", "edit_distance", "pronunciations"]

MAX_VAL = 6000  # validation words (of 11,700): the loss at each epoch end, and --joint-ngram's weight
#: the weights of the graphone score tried on validation words (--joint-ngram), best by word then phoneme errors
RERANK_WEIGHTS = tuple(i / 20 for i in range(21))


def edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def _scores(pred: list[list[str]], refs: list[list[list[str]]]) -> dict[str, float]:
    """Scores of ``pred[i]`` against the pronunciations ``refs[i]`` of word i (one or more): exact
    match (the prediction is one of them); the word error rate of the g2p literature (``1 -
    exact``); the phoneme error rate (jiwer, against each word's closest pronunciation: edits over
    its phonemes), also kept under its older name ``token_error_rate``; BLEU over phonemes
    (sacrebleu, every pronunciation a reference)."""
    import jiwer
    import sacrebleu

    if len(pred) != len(refs):
        raise ValueError(f"{len(pred)} predictions for {len(refs)} words")
    exact = float(np.mean([p in r for p, r in zip(pred, refs, strict=True)])) if refs else 0.0
    closest = [min(r, key=lambda g, p=p: edit_distance(p, g)) for p, r in zip(pred, refs, strict=True)]
    per = float(jiwer.wer([" ".join(g) for g in closest], [" ".join(p) for p in pred])) if refs else 0.0
    most = max((len(r) for r in refs), default=1)
    streams = [[" ".join(r[min(k, len(r) - 1)]) for r in refs] for k in range(most)]
    bleu = sacrebleu.corpus_bleu([" ".join(p) for p in pred], streams, tokenize="none")
    return {"exact_match": exact, "wer": 1.0 - exact, "per": per, "token_error_rate": per, "bleu": float(bleu.score)}


def pronunciations(examples: list[tuple[list[str], list[str]]]) -> tuple[list[list[str]], list[list[list[str]]]]:
    """``(sources, refs)``: each distinct source once, in first-seen order, with all its targets."""
    refs: dict[tuple[str, ...], list[list[str]]] = {}
    for s, t in examples:
        refs.setdefault(tuple(s), []).append(t)
    return [list(s) for s in refs], list(refs.values())


#: greedy decoding stops after this many target tokens per (padded) source token, plus the extra
MAX_LEN_PER_SOURCE_TOKEN, MAX_LEN_EXTRA = 2, 5

@register
class G2PTask(Task):
    name = "g2p"
    title = "spelling to pronunciation (G2P)"
    topology = "many-to-many unequal (Seq2Seq + attention)"
    dataset = CMUDICT
    metric, higher_is_better, baseline = "exact_match", True, "letter_dictionary_exact_match"
    user_format = ("CSV/TSV with columns 'source' and 'target', tokens separated by spaces (write 'c a t' for "
                   "characters); UTF-8; rows with the same source are its alternatives (a prediction matching any "
                   "is right) and stay in one split; sources split 80/10/10 by a seeded shuffle")
    predict_format = ("one source per line: a word ('cat') or its tokens separated by spaces ('c a t'), or the --data "
                      "table's 'source' column; prints the target tokens separated by spaces")
    input_column, target_column = "source", "target"
    defaults = dict(hidden=128, embedding=64, epochs=6, batch_size=64, lr=3e-3, bidirectional=True, max_train=30000)
    picture_name = "attention.png"
    #: training targets smoothed towards uniform (Szegedy et al. 2016); with --average 3, the full recipe's test
    #: WER / PER went from 27.7% / 6.5% to 27.1% / 6.4% (seed 0)
    label_smoothing = 0.1

    def prepare(self, cfg: TaskConfig) -> Prepared:
        """Examples are ``(source tokens, target tokens)``, one per pronunciation; the splits keep a
        source's pronunciations together. Validation is capped at ``MAX_VAL`` words (the same pick for every seed).
        With ``--joint-ngram N``, a graphone N-gram fitted on the training pairs goes into ``meta["graphones"]``."""
        if cfg.joint_ngram and cfg.beam < 2:
            raise ValueError(f"--joint-ngram {cfg.joint_ngram} reranks the beam's hypotheses: give --beam 2 or more "
                             f"(got --beam {cfg.beam})")
        if cfg.data:
            groups: dict[tuple[str, ...], list[list[str]]] = {}
            for _, row in read_table(cfg.data, ["source", "target"]):
                groups.setdefault(tuple(row["source"].split()), []).append(row["target"].split())
            train_g, val_g, test_g = split_three(list(groups.items()), seed=cfg.seed)
        else:
            held = cmudict_heldout()
            words = cmudict_words()
            train_g = [(tuple(w), p) for w, p in words.items() if w not in held]
            val_g, test_g = ([(tuple(w), words[w]) for w in sorted(held) if held[w] == k and w in words]
                             for k in ("val", "test"))
            rng = np.random.default_rng(cfg.seed)
            train_g = [train_g[i] for i in rng.permutation(len(train_g))]  # --max-train keeps a seeded pick
        val_g = [val_g[i] for i in sorted(np.random.default_rng(0).permutation(len(val_g))[:MAX_VAL])]
        train, val, test = ([(list(s), t) for s, ts in g for t in ts] for g in (train_g, val_g, test_g))
        train = self.cap(cfg, train)
        meta = {"src": Vocab.build(s for s, _ in train).to_dict(), "tgt": Vocab.build(t for _, t in train).to_dict(),
                "beam": cfg.beam}
        if cfg.joint_ngram:
            meta["graphones"] = GraphoneModel.fit(train, order=cfg.joint_ngram).to_dict()
        return Prepared(train, val, test, meta)

    def length(self, example: Any) -> int:
        return len(example[0])

    def collate(self, examples: list[Any], meta: dict[str, Any]) -> dict[str, Tensor]:
        src_v, tgt_v = Vocab.from_dict(meta["src"]), Vocab.from_dict(meta["tgt"])
        x, lengths = pad([src_v.encode(s) for s, _ in examples])
        y, _ = pad([tgt_v.encode(t, eos=True) for _, t in examples])
        return {"x": x, "y": y, "lengths": lengths}

    @staticmethod
    def recurrent_configs(cfg: TaskConfig) -> tuple[RecurrentConfig, RecurrentConfig]:
        """The encoder's (``hidden`` split between directions) and the decoder's configs."""
        enc = RecurrentConfig(cell=cfg.cell, hidden_size=cfg.hidden // (2 if cfg.bidirectional else 1),
                              num_layers=cfg.layers, bidirectional=cfg.bidirectional, dropout=cfg.dropout)
        return enc, RecurrentConfig(cell=cfg.cell, hidden_size=cfg.hidden, num_layers=cfg.layers, dropout=cfg.dropout)

    def build(self, cfg: TaskConfig, meta: dict[str, Any]) -> nn.Module:
        enc, dec = self.recurrent_configs(cfg)
        return Seq2Seq(len(meta["src"]["itos"]), len(meta["tgt"]["itos"]), enc, dec, attention="general",
                       embedding_dim=cfg.embedding, dropout=cfg.dropout, input_feeding=cfg.input_feeding)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        logits = model(batch["x"], batch["y"], batch["lengths"])  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), batch["y"].flatten(), ignore_index=0,
                               label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def nbest(self, model: nn.Module, sources: list[list[str]], meta: dict[str, Any]):
        """Each source's beam (``meta["beam"]`` wide), best first, as ``(tokens, log-probability,
        attention (steps, S))`` per hypothesis."""
        src_v, tgt_v = Vocab.from_dict(meta["src"]), Vocab.from_dict(meta["tgt"])
        beam = int(meta.get("beam", 1))
        step = max(1, 256 // beam)
        out = []
        for i in range(0, len(sources), step):
            x, lengths = pad([src_v.encode(s) for s in sources[i : i + step]])
            max_len = MAX_LEN_PER_SOURCE_TOKEN * x.size(1) + MAX_LEN_EXTRA
            dec = model.beam_search(x, lengths, beam_width=beam, max_len=max_len, nbest=True)
            for rows, scores, attn in zip(dec.tokens.tolist(), dec.scores.tolist(), dec.attention, strict=True):
                out.append([(tgt_v.decode(r), sc, a) for r, sc, a in zip(rows, scores, attn, strict=True)
                            if sc > float("-inf")])  # a beam wider than the vocabulary keeps empty rows
        return out

    @staticmethod
    def rerank_weight(meta: dict[str, Any]) -> float:
        """The weight of the run's graphone score, as :meth:`finalize` chose it (0: the beam decodes alone)."""
        return float((meta.get("graphones") or {}).get("weight") or 0.0)

    def _rerank(self, model: nn.Module, sources: list[list[str]], meta: dict[str, Any], weights: tuple[float, ...]):
        """For each weight: each source's hypothesis with the best log p(beam) + weight * log p(graphones),
        and its attention."""
        lists = self.nbest(model, sources, meta)
        g = GraphoneModel.from_dict(meta["graphones"])
        joint = iter(g.score([(s, h) for s, hyps in zip(sources, lists, strict=True) for h, _, _ in hyps]))
        scored = [[(h, sc, next(joint), a) for h, sc, a in hyps] for hyps in lists]
        # weight 0 is the beam's own best (0 * -inf, a pair no graphone path aligns, would be nan)
        return [[max(hyps, key=lambda e, w=w: e[1] + w * e[2] if w else e[1]) for hyps in scored] for w in weights]

    def finalize(self, model: nn.Module, data: Prepared) -> None:
        """With ``--joint-ngram``: the graphone score's weight with the fewest word errors on the
        validation words (then the fewest phoneme errors), into ``meta["graphones"]["weight"]``, beside
        the validation word error rates with and without it."""
        g = data.meta.get("graphones")
        if not g:
            return
        if not data.val:
            print("note: --joint-ngram: no validation words to weigh the graphone n-gram on, so the beam decodes "
                  "alone", file=sys.stderr)
            return
        sources, refs = pronunciations(data.val)
        picks = self._rerank(model.eval(), sources, data.meta, RERANK_WEIGHTS)

        def errors(pred):
            return (sum(p not in r for p, r in zip(pred, refs, strict=True)),
                    sum(min(edit_distance(p, t) for t in r) for p, r in zip(pred, refs, strict=True)))

        costs = [errors([e[0] for e in pick]) for pick in picks]
        best = min(range(len(RERANK_WEIGHTS)), key=lambda i: costs[i])
        g["weight"] = RERANK_WEIGHTS[best]
        g["val_wer"] = {"beam": costs[0][0] / len(refs), "reranked": costs[best][0] / len(refs)}

    @torch.no_grad()
    def transduce(self, model: nn.Module, sources: list[list[str]], meta: dict[str, Any]):
        """Greedy decoding, or a beam of ``meta["beam"]`` (the run's ``--beam``), reranked by the
        graphone model when the run has one (``--joint-ngram``)."""
        if self.rerank_weight(meta):
            pick = self._rerank(model, sources, meta, (self.rerank_weight(meta),))[0]
            return [e[0] for e in pick], [e[3] for e in pick]
        src_v, tgt_v = Vocab.from_dict(meta["src"]), Vocab.from_dict(meta["tgt"])
        beam = int(meta.get("beam", 1))
        step = max(1, 256 // beam)  # sources per batch: about 256 decoder rows
        out, attn = [], []
        for i in range(0, len(sources), step):
            x, lengths = pad([src_v.encode(s) for s in sources[i : i + step]])
            max_len = MAX_LEN_PER_SOURCE_TOKEN * x.size(1) + MAX_LEN_EXTRA
            dec = (model.beam_search(x, lengths, beam_width=beam, max_len=max_len) if beam > 1
                   else model.greedy(x, lengths, max_len=max_len))
            out += [tgt_v.decode(row) for row in dec.tokens.tolist()]
            attn += list(dec.attention)
        return out, attn

    def evaluate(self, model: nn.Module, examples: list[Any], meta: dict[str, Any]) -> dict[str, float]:
        """The scores of :func:`_scores`; reranked by graphones, also the beam's own best's
        ``beam_only_wer`` and ``beam_only_per``."""
        sources, refs = pronunciations(examples)
        if not self.rerank_weight(meta):
            return _scores(self.transduce(model, sources, meta)[0], refs)
        plain, reranked = self._rerank(model, sources, meta, (0.0, self.rerank_weight(meta)))
        alone = _scores([e[0] for e in plain], refs)
        return {**_scores([e[0] for e in reranked], refs), "beam_only_wer": alone["wer"], "beam_only_per": alone["per"]}

    def baselines(self, data: Prepared) -> dict[str, float]:
        table: dict[str, Counter] = defaultdict(Counter)
        for s, t in data.train:
            if len(s) == len(t):
                for a, b in zip(s, t, strict=True):
                    table[a][b] += 1
        best = {a: c.most_common(1)[0][0] for a, c in table.items()}
        sources, refs = pronunciations(data.test)
        pred = []
        for s in sources:
            out: list[str] = []
            for a in s:
                if a in best and (not out or out[-1] != best[a]):
                    out.append(best[a])
            pred.append(out)
        scores = _scores(pred, refs)
        return {f"letter_dictionary_{k}": v for k, v in scores.items()}

    def predict(self, model: nn.Module, meta: dict[str, Any], lines: list[str]) -> list[str]:
        """A character model: one word per line, as letters or spaced tokens; other models: space-separated
        tokens. One output line per input line."""
        chars = all(len(t) == 1 for t in meta["src"]["itos"][4:])
        # a character model reads 'cat' and 'c a t' alike (spaces separate tokens, they are not tokens)
        sources = [list(line.replace(" ", "").strip().lower()) if chars else line.split() for line in lines]
        return [" ".join(p) for p in self.transduce(model, sources, meta)[0]]

    def picture(self, model: nn.Module, data: Prepared, path: Path) -> Path:
        src = max(data.test[:200], key=lambda e: len(e[0]))[0]
        pred, attn = self.transduce(model, [src], data.meta)
        a = attn[0][: len(pred[0]) + 1, : len(src)].numpy()
        return plot_heatmap(a, src, [*pred[0], "<eos>"], path,
                            f"{self.picture_title(data.meta)}: attention, {' '.join(src)}",
                            xlabel="source token", ylabel="generated token", value="attention weight")

    def onnx_bundle(self, model, meta):
        from rnnkit.onnx_graphs import (
            OnnxBundle,
            OnnxGraph,
            Seq2SeqEncoderGraph,
            Seq2SeqStepGraph,
            batch_time,
            layer_axes,
            padded_tokens,
            state_names,
        )

        src_size, tgt_size = len(meta["src"]["itos"]), len(meta["tgt"]["itos"])
        encoder = Seq2SeqEncoderGraph(model)
        step = Seq2SeqStepGraph(model)
        states = state_names("state", step.entries)

        def encoded(batch: int, length: int):
            with torch.no_grad():
                return encoder(*padded_tokens(src_size, batch, length))

        def step_example(batch: int, length: int):
            memory, mask, prev, *st = encoded(batch, length)
            g = torch.Generator().manual_seed(batch + length)
            return (torch.randint(4, tgt_size, (batch,), generator=g), prev, *st, memory, mask)

        enc_axes = batch_time("src", "memory", "mask", extra={"src_lengths": {0: "batch"}, "prev": {0: "batch"},
                                                               **layer_axes(states)})
        step_axes = {"token": {0: "batch"}, "prev": {0: "batch"}, "next_prev": {0: "batch"},
                     **layer_axes(states), **layer_axes([f"next_{s}" for s in states]),
                     **batch_time("memory", "mask", "attention"), "log_probs": {0: "batch"}}
        graphs = [
            OnnxGraph("encoder", encoder, lambda b, t: padded_tokens(src_size, b, t), ["src", "src_lengths"],
                      ["memory", "mask", "prev", *states], enc_axes),
            OnnxGraph("decoder_step", step, step_example, ["token", "prev", *states, "memory", "mask"],
                      ["log_probs", "next_prev", *[f"next_{s}" for s in states], "attention"], step_axes),
        ]
        chars = all(len(t) == 1 for t in meta["src"]["itos"][4:])
        return OnnxBundle("seq2seq", graphs, {"src_vocab": meta["src"]["itos"], "tgt_vocab": meta["tgt"]["itos"],
                                              "bos_id": model.bos_id, "eos_id": model.eos_id, "states": states,
                                              "characters": chars, "beam": int(meta.get("beam", 1)),
                                              "max_len": [MAX_LEN_PER_SOURCE_TOKEN, MAX_LEN_EXTRA],
                                              **({"graphones": {**meta["graphones"], "moves": MOVES}}
                                                 if self.rerank_weight(meta) else {})})
