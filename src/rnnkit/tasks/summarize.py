"""Abstractive summarization (many-to-many, unequal lengths): a Debian package's long description
to its one-line synopsis, both written by people (:mod:`rnnkit.data.debian`).

Packages built from one source package share much of their text, so whole source packages go to
one split. Model: :class:`rnnkit.PointerGenerator` (See, Liu & Manning 2017) over one shared
vocabulary of lower-cased word tokens: a bidirectional LSTM encoder, Luong "general" attention,
and a switch that mixes generating a word with copying a source word by its attention weight,
which is how a package or program name that the vocabulary lacks reaches the summary. Each
example's unknown source words get ids past the vocabulary (the first such word ``V``, the next
``V + 1``, ...). ``--no-copy`` trains the plain attention seq2seq instead. Beam search (width 4).

Metrics on held-out source packages: ROUGE-1, ROUGE-2 and ROUGE-L F-measures (Lin 2004;
``rouge-score`` with its Porter stemmer). Baselines on the same descriptions: the lead (the first
sentence, cut to the training synopses' mean length in tokens) and retrieval (the synopsis of the
training description nearest by TF-IDF cosine).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.collate import pad
from rnnkit.data.debian import DESCRIPTIONS, package_descriptions
from rnnkit.data.readers import read_table
from rnnkit.data.vocab import UNK, Vocab
from rnnkit.models import PointerGenerator, Seq2Seq
from rnnkit.tasks.base import Prepared, TaskConfig, register
from rnnkit.tasks.g2p import G2PTask
from rnnkit.tasks.translate import TOKENIZER, _split_by_group, detokenize, tokenize_words

__all__ = ["SummarizeTask", "extend", "lead", "rouge"]

MAX_SOURCE = 80  # tokens of a description read (the median description has 54; the first sentences count most)
MAX_SUMMARY = 20  # training synopses longer than this (in tokens; 1 in 100) are left out
MAX_TEST = 1000  # held-out descriptions scored (of about 6,000)
BEAM = 4
MAX_LEN = (0, 24)  # a summary stops after 24 tokens, whatever the description's length
VOCAB = 10000  # most frequent tokens of descriptions and synopses together; the rest are copied or <unk>


def extend(source: list[str], stoi: dict[str, int], unk_id: int, target: list[str] | None = None):
    """A source's ids in the extended vocabulary (an unknown word ``w`` is ``V + i``, ``i`` its
    rank among the source's distinct unknown words), the target's (an unknown word that the source
    has takes the same id, else ``<unk>``) and the list of those unknown words."""
    size, oov = len(stoi), {}
    src = []
    for w in source:
        src.append(stoi[w] if w in stoi else size + oov.setdefault(w, len(oov)))
    tgt = None if target is None else [stoi[w] if w in stoi else size + oov[w] if w in oov else unk_id
                                       for w in target]
    return src, tgt, list(oov)


def rouge(pred: list[list[str]], gold: list[list[str]]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures of token lists (rouge-score, Porter stemmer)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for p, g in zip(pred, gold, strict=True):
        for key, s in scorer.score(" ".join(g), " ".join(p)).items():
            totals[key] += s.fmeasure
    return {k: v / max(1, len(pred)) for k, v in totals.items()}


def lead(source: list[str], length: int) -> list[str]:
    """The first sentence (up to the first ``.``, ``!`` or ``?``) of at most ``length`` tokens."""
    out = []
    for w in source[:length]:
        if w in (".", "!", "?"):
            break
        out.append(w)
    return out


@register
class SummarizeTask(G2PTask):
    name = "summarize"
    title = "package description to synopsis (Debian)"
    topology = "many-to-many unequal (pointer-generator Seq2Seq, beam search)"
    dataset = DESCRIPTIONS
    metric, higher_is_better, baseline = "rougeL", True, "retrieval_rougeL"
    user_format = ("CSV/TSV with columns 'text' (a document) and 'summary', and an optional 'group' (rows of one "
                   "group stay in one split); tokenized into lower-cased words and punctuation, the text cut to its "
                   f"first {MAX_SOURCE} tokens; UTF-8; split 80/10/10 by a seeded shuffle of groups (of rows "
                   "without one)")
    predict_format = "one text per line, or the --data table's 'text' column; prints its one-line summary"
    input_column, target_column = "text", "summary"
    defaults = dict(hidden=256, embedding=128, epochs=3, batch_size=64, lr=2e-3, bidirectional=True, max_train=0,
                    schedule="cosine")

    def prepare(self, cfg: TaskConfig) -> Prepared:
        if cfg.data:
            rows = read_table(cfg.data, ["text", "summary"], optional=["group"])
            items = [(row.get("group") or f"line {line}", tokenize_words(row["text"])[:MAX_SOURCE],
                      tokenize_words(row["summary"])) for line, row in rows]
        else:
            items = [(d.source, tokenize_words(d.text)[:MAX_SOURCE], tokenize_words(d.synopsis))
                     for d in package_descriptions()]
        train, val, test = _split_by_group(items, cfg.seed)
        train = self.cap(cfg, [(s, t) for s, t in train if s and t and len(t) <= MAX_SUMMARY])
        val, test = val[:MAX_TEST], test[:MAX_TEST]
        vocab = Vocab.build(([*s, *t] for s, t in train), max_size=VOCAB)
        mean = sum(len(t) for _, t in train) / max(1, len(train))
        return Prepared(train, val, test, {"vocab": vocab.to_dict(), "copy": cfg.copy, "lead_length": round(mean)})

    def collate(self, examples: list[Any], meta: dict[str, Any]) -> dict[str, Tensor]:
        vocab = Vocab.from_dict(meta["vocab"])
        rows = [extend(s, vocab.stoi, vocab.unk_id, t) for s, t in examples]
        if not meta["copy"]:  # the plain model reads and writes <unk> for them
            rows = [([i if i < len(vocab) else vocab.unk_id for i in s],
                     [i if i < len(vocab) else vocab.unk_id for i in t], oov) for s, t, oov in rows]
        x, lengths = pad([s for s, _, _ in rows])
        y, _ = pad([t + [vocab.stoi["<eos>"]] for _, t, _ in rows])
        return {"x": x, "y": y, "lengths": lengths}

    def build(self, cfg: TaskConfig, meta: dict[str, Any]) -> nn.Module:
        enc, dec = self.recurrent_configs(cfg)
        size = len(meta["vocab"]["itos"])
        if meta["copy"]:
            return PointerGenerator(size, enc, dec, extra=MAX_SOURCE, attention="general",
                                    embedding_dim=cfg.embedding)
        return Seq2Seq(size, size, enc, dec, attention="general", embedding_dim=cfg.embedding)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        out = model(batch["x"], batch["y"], batch["lengths"])  # log-probabilities (copying) or logits
        if isinstance(model, PointerGenerator):
            return F.nll_loss(out.flatten(0, 1), batch["y"].flatten(), ignore_index=0)
        return F.cross_entropy(out.flatten(0, 1), batch["y"].flatten(), ignore_index=0)

    @torch.no_grad()
    def transduce(self, model: nn.Module, sources: list[list[str]], meta: dict[str, Any], beam: int = BEAM):
        """Beam-search summaries of ``sources`` (cut to MAX_SOURCE tokens), in their order, and
        each one's attention ``(T_out, S)``. An extended id becomes the source word it stands for (one
        that stands for no word of this source, as ``<unk>``); an ``<unk>`` is left out."""
        vocab = Vocab.from_dict(meta["vocab"])
        sources = [s[:MAX_SOURCE] or [UNK] for s in sources]
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        out: list[list[str]] = [[] for _ in sources]
        attn: list[Any] = [None for _ in sources]
        for start in range(0, len(order), 128):
            chunk = order[start : start + 128]
            rows = [extend(sources[i], vocab.stoi, vocab.unk_id) for i in chunk]
            ids = [s if meta["copy"] else [j if j < len(vocab) else vocab.unk_id for j in s] for s, _, _ in rows]
            x, lengths = pad(ids)
            dec = model.beam_search(x, lengths, beam_width=beam, max_len=MAX_LEN[0] * x.size(1) + MAX_LEN[1])
            for b, i in enumerate(chunk):
                words = []
                for t in dec.tokens[b].tolist():
                    if t == vocab.stoi["<eos>"]:
                        break
                    oov = rows[b][2]  # an extended id past this source's unknown words (its probability is
                    words.append(vocab.itos[t] if t < len(vocab)  # only the 1e-12 floor) stands for nothing
                                 else oov[t - len(vocab)] if t - len(vocab) < len(oov) else UNK)
                out[i] = [w for w in words if w not in (UNK, "<pad>", "<bos>")]
                attn[i] = dec.attention[b, : len(words) + 1, : len(sources[i])]
        return out, attn

    def evaluate(self, model: nn.Module, examples: list[Any], meta: dict[str, Any]) -> dict[str, float]:
        pred, _ = self.transduce(model, [s for s, _ in examples], meta)
        return rouge(pred, [t for _, t in examples])

    def baselines(self, data: Prepared) -> dict[str, float]:
        from sklearn.feature_extraction.text import TfidfVectorizer

        gold = [t for _, t in data.test]
        scores = {f"lead_{k}": v for k, v in rouge([lead(s, data.meta["lead_length"]) for s, _ in data.test],
                                                   gold).items()}
        tfidf = TfidfVectorizer(analyzer=lambda tokens: tokens, sublinear_tf=True)
        train = tfidf.fit_transform([s for s, _ in data.train])
        nearest = []
        test = tfidf.transform([s for s, _ in data.test])
        for start in range(0, test.shape[0], 500):  # (test rows x training rows) similarities, in slices
            sims = test[start : start + 500] @ train.T
            nearest += [int(sims[r].toarray().argmax()) for r in range(sims.shape[0])]
        retrieved = [data.train[j][1] for j in nearest]
        scores.update({f"retrieval_{k}": v for k, v in rouge(retrieved, gold).items()})
        return scores

    def predict(self, model: nn.Module, meta: dict[str, Any], lines: list[str]) -> list[str]:
        return [detokenize(p) for p in self.transduce(model, [tokenize_words(line) for line in lines], meta)[0]]

    def score(self, outputs: list[str], targets: list[str]) -> str:
        s = rouge([tokenize_words(o) for o in outputs], [tokenize_words(t) for t in targets])
        return (f"ROUGE-1 {s['rouge1']:.4f}, ROUGE-2 {s['rouge2']:.4f}, ROUGE-L {s['rougeL']:.4f} "
                f"({len(outputs)} summaries)")

    def picture(self, model, data, path):
        from rnnkit.tasks.plots import plot_heatmap

        src = min((s for s, _ in data.test[:300] if 15 <= len(s) <= 30), key=len, default=data.test[0][0])
        pred, attn = self.transduce(model, [src], data.meta)
        stoi = Vocab.from_dict(data.meta["vocab"]).stoi
        shown = [w if w in stoi else f"{w} (oov)" for w in src]
        generated = [w if w in stoi else f"{w} (copied)" for w in pred[0]]
        a = attn[0][: len(pred[0]) + 1, : len(src)].numpy()
        return plot_heatmap(a, shown, [*generated, "<eos>"], path,
                            f"{self.picture_title(data.meta)}: attention while summarizing one held-out description",
                            xlabel="description token", ylabel="generated summary token", value="attention weight")

    def onnx_bundle(self, model, meta):
        size = len(meta["vocab"]["itos"])
        extended = size + (MAX_SOURCE if meta["copy"] else 0)
        # G2P's graphs, their example inputs drawn from the extended ids (so the export is checked on
        # copied words too); the real vocabulary and decoding rules replace the placeholders below
        bundle = super().onnx_bundle(model, {"src": {"itos": ["?"] * extended}, "tgt": {"itos": ["?"] * extended}})
        bundle.config.update(src_vocab=meta["vocab"]["itos"], tgt_vocab=meta["vocab"]["itos"], characters=False,
                             tokenizer=TOKENIZER, beam=BEAM, max_len=list(MAX_LEN), max_source=MAX_SOURCE,
                             pointer=bool(meta["copy"]), drop=[UNK, "<pad>", "<bos>"])
        return bundle
