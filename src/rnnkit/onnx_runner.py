"""Run a model exported by ``rnnkit export`` with numpy and onnxruntime alone.

``rnnkit export RUN`` copies this file into ``RUN/onnx/run_onnx.py``; it imports nothing from
rnnkit or torch, so the directory can be deployed by itself::

    pip install onnxruntime numpy
    python run_onnx.py EXPORT_DIR [INPUT]      # INPUT: a file, or - (stdin, the default)

It checks every graph file against the sha256 in ``model.json`` first. Input, one item per
line (blank lines are kept as blank output lines), by the export's kind:

* forecast: the history, one number per line -> ``+k<TAB>value`` for the next steps;
* classify: a text per line -> ``LABEL<TAB>probability``;
* tag: a sentence per line (tokens separated by spaces) -> ``word/TAG ...``;
* seq2seq: a source per line (a word, or tokens separated by spaces; with a tokenizer, a sentence or a
  text) -> greedy or beam-search target tokens; a pointer-generator copies the source's unknown words;
  a g2p run trained with ``--joint-ngram`` reranks its beam by its graphone n-gram, as rnnkit does;
* generate: a condition per line -> a greedy sample;
* caption: a ``.npy`` grayscale image path per line -> a greedy caption;
* image: a ``.npy`` grayscale image path per line -> ``LABEL<TAB>probability``;
* ctc: a ``.npy`` feature matrix ``(T, F)`` path per line -> the greedy CTC transcript;
* video: a ``.npy`` clip ``(T, H, W)`` path per line -> ``NAME=VALUE (probability)`` per tag,
  tab-separated;
* frames: a ``.npy`` clip ``(T, H, W)`` path per line (uint8 0-255 or floats in [0, 1]; its first
  ``context`` frames are read) -> writes the predicted frames to ``PATH.next.npy`` and prints that
  path and each predicted frame's mean pixel.

The tokenizer, word shapes and character ids below follow ``rnnkit.data.text.tokenize``,
``rnnkit.tasks.tagging.word_shape`` and ``char_ids`` (rnnkit's tests check that they agree).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

UNK = 3  # rnnkit's vocabularies: <pad> 0, <bos> 1, <eos> 2, <unk> 3


class ExportError(ValueError):
    pass


def load(directory: str | Path) -> tuple[dict, dict]:
    """``(model.json, {graph name: onnxruntime session})`` after checking every file's sha256."""
    import onnxruntime as ort

    d = Path(directory)
    try:
        spec = json.loads((d / "model.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ExportError(f"{d / 'model.json'}: not readable ({err})") from err
    if spec.get("format") != "rnnkit-onnx":
        raise ExportError(f"{d / 'model.json'}: not an rnnkit ONNX export")
    sessions = {}
    for name, g in spec["graphs"].items():
        path = d / g["file"]
        if not path.is_file():
            raise ExportError(f"{path}: missing")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != g["sha256"]:
            raise ExportError(f"{path}: sha256 {digest[:12]}... does not match model.json; the file is damaged")
        sessions[name] = _Session(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
    return spec, sessions


class _Session:
    """An onnxruntime session fed only the inputs its graph reads (ONNX drops unused ones)."""

    def __init__(self, session) -> None:
        self.session = session
        self.inputs = {i.name for i in session.get_inputs()}

    def run(self, outputs, feeds: dict):
        return self.session.run(outputs, {k: v for k, v in feeds.items() if k in self.inputs})


def tokenize(text: str, patterns: dict) -> list[str]:
    """Lower-cased words, #hashtags and punctuation; URLs become <url>, @mentions <user>."""
    text = re.sub(patterns["user"], " <user> ", re.sub(patterns["url"], " <url> ", text.lower()))
    out: list[str] = []
    for piece in text.split():
        out.extend([piece] if piece in ("<url>", "<user>") else re.findall(patterns["word"], piece))
    return out


def char_ids(w: str, slots: int, ids: int) -> list[int]:
    """The first ``slots`` characters of ``w`` as ids (code point + 1 below ``ids - 1``, else
    ``ids - 1``), zero-padded: ``rnnkit.tasks.tagging.char_ids``."""
    out = [1 + ord(c) if ord(c) < ids - 1 else ids - 1 for c in w[:slots]]
    return out + [0] * (slots - len(out))


def word_shape(w: str, shapes: list[str]) -> int:
    if w.startswith("http") or w.startswith("www."):
        s = "url"
    elif w.startswith("@"):
        s = "@"
    elif w.startswith("#"):
        s = "#"
    elif w.isdigit():
        s = "digit"
    elif not any(c.isalnum() for c in w):
        s = "punct"
    elif w.islower():
        s = "lower"
    elif w.isupper():
        s = "UPPER"
    elif w[:1].isupper() and w[1:].islower():
        s = "Title"
    elif any(c.isalpha() for c in w):
        s = "mixed"
    else:
        s = "other"
    return shapes.index(s)


def _pad(rows: list[list], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([max(1, len(r)) for r in rows], dtype=np.int64)
    T = int(lengths.max())
    first = np.asarray(rows[0][0]) if rows[0] else np.asarray(0)
    out = np.zeros((len(rows), T, *first.shape), dtype=np.int64)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = np.asarray(r)
    return out, lengths


def _ngrams(tokens: list[str]) -> list[str]:
    """The tokens and each neighbouring pair, each once in order: ``rnnkit.tasks.sentiment.text_ngrams``."""
    return list(dict.fromkeys(tokens + [a + " " + b for a, b in zip(tokens, tokens[1:], strict=False)]))


def _ids(texts: list[list[str]], vocab: list[str]) -> list[list[int]]:
    """Each text's token ids (unknown: UNK; an empty text: [UNK]), one vocabulary index for all."""
    index = {t: i for i, t in enumerate(vocab)}
    return [[index.get(t, UNK) for t in tokens] or [UNK] for tokens in texts]


def _extended(tokens: list[str], index: dict[str, int], oov: list[str]) -> list[int]:
    """A pointer-generator's source ids (``rnnkit.tasks.summarize.extend``): an unknown word is
    ``V + i``, ``i`` its rank among the source's distinct unknown words, which ``oov`` collects."""
    ids = []
    for w in tokens:
        if w not in index and w not in oov:
            oov.append(w)
        ids.append(index[w] if w in index else len(index) + oov.index(w))
    return ids or [UNK]


def _greedy(step, feeds: dict, spec: dict, batch: int, source_length: int = 0) -> list[list[int]]:
    """Greedy decoding: ``step(token, state) -> (log_probs, state)`` until <eos> or the most tokens:
    ``max_len``, or ``[per source token, extra]``."""
    limit = spec["max_len"]
    if isinstance(limit, list):
        limit = limit[0] * source_length + limit[1]
    token = np.full(batch, spec["bos_id"], dtype=np.int64)
    done = np.zeros(batch, dtype=bool)
    out: list[list[int]] = [[] for _ in range(batch)]
    for _ in range(limit):
        log_probs, feeds = step(token, feeds)[:2]
        token = log_probs.argmax(-1).astype(np.int64)
        for i in range(batch):
            if not done[i]:
                if token[i] == spec["eos_id"]:
                    done[i] = True
                else:
                    out[i].append(int(token[i]))
        if done.all():
            break
    return out


def _rows(feeds: dict, rows: np.ndarray) -> dict:
    """The decoder state of the given batch rows (a stacked state ``(L, B, H)`` on axis 1)."""
    return {k: (v[:, rows] if v.ndim == 3 else v[rows]) for k, v in feeds.items()}


def _beam(step, feeds: dict, spec: dict, batch: int, source_length: int,
          choose=None) -> tuple[list[list[int]], list]:
    """Beam search as rnnkit's (``rnnkit.models.decoding.beam_search`` without a length penalty):
    ``spec["beam"]`` hypotheses per source, scored by their summed log-probabilities; a finished
    hypothesis stays in the beam unchanged; the best when all have ended or at the length limit.
    Returns each source's best tokens and that hypothesis's attention ``(steps, S)``; with
    ``choose(b, [(tokens, score), ...])`` (the beam best first), the hypothesis it picks instead."""
    K = spec["beam"]
    limit = spec["max_len"][0] * source_length + spec["max_len"][1]
    step_feeds = _rows(feeds, np.repeat(np.arange(batch), K))  # each source's state, once per beam
    token = np.full(batch * K, spec["bos_id"], dtype=np.int64)
    scores = np.zeros((batch, K))
    scores[:, 1:] = -np.inf  # every beam starts the same: extend only the first
    done = np.zeros((batch, K), dtype=bool)
    history = np.zeros((batch, K, 0), dtype=np.int64)
    attention = np.zeros((batch, K, 0, source_length))  # each hypothesis's attention per step
    for _ in range(limit):
        log_probs, step_feeds, attn = step(token, step_feeds)
        V = log_probs.shape[-1]
        logp = log_probs.reshape(batch, K, V).astype(np.float64)
        frozen = np.full(V, -np.inf)
        frozen[0] = 0.0  # a finished hypothesis continues only with <pad>, at no cost
        logp = np.where(done[..., None], frozen, logp)
        cand = (scores[..., None] + logp).reshape(batch, K * V)
        done_before = done
        idx = np.argsort(-cand, axis=1, kind="stable")[:, :K]
        src, tok = idx // V, idx % V
        scores = np.take_along_axis(cand, idx, 1)
        done = np.take_along_axis(done, src, 1) | (tok == spec["eos_id"])
        history = np.concatenate([np.take_along_axis(history, src[..., None], 1), tok[..., None]], axis=2)
        was_done = np.take_along_axis(done_before, src, 1)
        a = attn.reshape(batch, K, 1, -1)[np.arange(batch)[:, None], src] * ~was_done[..., None, None]
        attention = np.concatenate([np.take_along_axis(attention, src[..., None, None], 1), a], axis=2)
        step_feeds = _rows(step_feeds, (np.arange(batch)[:, None] * K + src).reshape(-1))
        token = tok.reshape(-1)
        if done.all():
            break

    def tokens(b: int, k: int) -> list[int]:
        row = []
        for t in history[b, k].tolist():
            if t == spec["eos_id"]:
                break
            if t not in (0, spec["bos_id"]):
                row.append(t)
        return row

    best = scores.argmax(1)
    if choose is not None:
        for b in range(batch):
            ranked = [k for k in np.argsort(-scores[b], kind="stable").tolist() if scores[b, k] > -np.inf]
            best[b] = ranked[choose(b, [(tokens(b, k), float(scores[b, k])) for k in ranked])]
    return [tokens(b, int(best[b])) for b in range(batch)], [attention[b, best[b]] for b in range(batch)]


class Graphones:
    """The run's graphone n-gram (``spec["graphones"]``), as ``rnnkit.tasks.graphones.GraphoneModel``:
    :meth:`score` is ``log p(letters, phonemes)``, the pair's best path under the graphones' unigram
    probabilities scored by an interpolated Kneser-Ney n-gram (``rnnkit.tasks._lm.KneserNey``)
    rebuilt from the training words' graphone sequences. rnnkit's tests check that they agree."""

    UNSEEN = 1e-12  # rnnkit.tasks.graphones.UNSEEN

    def __init__(self, g: dict) -> None:
        def unpack(text: str, dtype: str) -> list[int]:
            return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=dtype).tolist()

        self.moves = [tuple(m) for m in g["moves"]]
        self.src = {c: i + 1 for i, c in enumerate(g["src_symbols"])}
        self.tgt = {c: i + 1 for i, c in enumerate(g["tgt_symbols"])}
        self.Vs, self.Vt = len(self.src) + 1, len(self.tgt) + 1
        keys = unpack(g["keys"], "<i8")
        self.index = {k: i for i, k in enumerate(keys)}
        self.prob = dict(zip(keys, g["probs"], strict=True))
        self.order, self.weight, self.unseen_id = int(g["order"]), float(g["weight"]), len(keys) + 3
        texts, cur = [], []
        for v in unpack(g["corpus"], "<i4"):  # sequences ended by 0
            if v:
                cur.append(v)
            else:
                texts.append(cur)
                cur = []
        N = self.order
        self.counts = [Counter() for _ in range(N + 1)]  # order N raw counts, below continuation counts
        for t in texts:
            d = (1,) * (N - 1) + tuple(t) + (2,)
            self.counts[N].update(d[j : j + N] for j in range(len(d) - N + 1))
        for n in range(N - 1, 0, -1):
            for gram in self.counts[n + 1]:
                self.counts[n][gram[1:]] += 1
        self.den = [Counter() for _ in range(N + 1)]
        self.types = [Counter() for _ in range(N + 1)]
        self.discount = [0.0] * (N + 1)
        for n in range(1, N + 1):
            for gram, c in self.counts[n].items():
                self.den[n][gram[:-1]] += c
                self.types[n][gram[:-1]] += 1
            cc = Counter(self.counts[n].values())
            n1, n2 = cc.get(1, 0), cc.get(2, 0)
            self.discount[n] = n1 / (n1 + 2 * n2) if n1 else 0.5

    def _p(self, context: tuple, w: int) -> float:
        p = 1.0 / (self.unseen_id + 1)
        for n in range(1, min(self.order, len(context) + 1) + 1):
            h = context[len(context) - n + 1 :] if n > 1 else ()
            d = self.den[n].get(h, 0)
            if not d:
                break
            D = self.discount[n]
            p = max(self.counts[n].get(h + (w,), 0) - D, 0.0) / d + D * self.types[n][h] / d * p
        return p

    def _key(self, s: list[int], t: list[int], i: int, j: int, k: int) -> int:
        a, b = self.moves[k]
        x = s[i] if a == 1 else s[i] * (self.Vs + 1) + s[i + 1]
        y = 0 if b == 0 else t[j] if b == 1 else t[j] * (self.Vt + 1) + t[j + 1]
        return (k * (self.Vs + 1) ** 2 + x) * (self.Vt + 1) ** 2 + y

    def score(self, letters: list[str], phonemes: list[str]) -> float:
        s = [self.src.get(c, self.Vs) for c in letters]
        t = [self.tgt.get(c, self.Vt) for c in phonemes]
        n, m = len(s), len(t)
        if not n or m > max(b for _, b in self.moves) * n:
            return -math.inf
        alpha = {(0, 0): 1.0}
        back = {}
        for i in range(1, n + 1):  # Viterbi over the letters x phonemes grid; the first best move wins ties
            for j in range(m + 1):
                best, move = 0.0, -1
                for k, (a, b) in enumerate(self.moves):
                    if i >= a and j >= b:
                        key = self._key(s, t, i - a, j - b, k)
                        v = alpha.get((i - a, j - b), 0.0) * self.prob.get(key, self.UNSEEN)
                        if v > best:
                            best, move = v, k
                alpha[i, j], back[i, j] = best, move
        if not alpha[n, m] > 0:
            return -math.inf
        ids, i, j = [], n, m
        while i > 0:
            k = back[i, j]
            a, b = self.moves[k]
            i, j = i - a, j - b
            key = self._key(s, t, i, j, k)
            ids.append(self.index[key] + 3 if key in self.index else self.unseen_id)
        d = (1,) * (self.order - 1) + tuple(ids[::-1]) + (2,)
        k = self.order - 1
        return sum(math.log(self._p(d[max(0, i - k) : i], d[i])) for i in range(k, len(d)))


def _words(text: str, rules: dict) -> list[str]:
    """rnnkit's word tokenizer (``rnnkit.tasks.translate.tokenize_words``), by the rules in model.json."""
    for a, b in rules["replace"].items():
        text = text.replace(a, b)
    return re.findall(rules["pattern"], text.lower() if rules["lower"] else text)


def _detokenize(tokens: list[str], rules: dict) -> str:
    out = ""
    for tok in tokens:
        if out and tok not in rules["attach_left"] and out[-1] not in rules["attach_right"]:
            out += " "
        out += tok
    return out


def _clip(path: str, size: tuple) -> np.ndarray:
    """A ``.npy`` clip ``(T, H, W)`` as floats in [0, 1], read at 8 bits as rnnkit reads it."""
    clip = np.load(path, allow_pickle=False)
    if clip.ndim != 3 or tuple(clip.shape[1:]) != size:
        raise ExportError(f"{path}: clip of shape {clip.shape}; the model reads frames of {size[0]}x{size[1]}")
    if clip.dtype != np.uint8:  # floats in [0, 1]
        clip = np.rint(np.clip(clip, 0.0, 1.0) * 255)
    return clip.astype(np.float32) / 255.0


def predict(spec: dict, sessions: dict, items: list[str]) -> list[str]:
    """One output per item (no blank items)."""
    kind = spec["kind"]
    if kind == "forecast":
        history = np.array([float(v) for v in items], dtype=np.float32).reshape(1, -1, 1)
        if not np.isfinite(history).all():
            raise ExportError("the history must be finite numbers")
        (pred,) = sessions["forecast"].run(None, {"history": history})
        return [f"+{k}\t{v:.3f}" for k, v in enumerate(pred.reshape(-1).tolist(), 1)]
    if kind == "classify":
        texts = [tokenize(t, spec["tokenizer"])[: spec["max_tokens"]] or ["<unk>"] for t in items]
        tokens, lengths = _pad(_ids(texts, spec["vocab"]))
        feeds = {"tokens": tokens, "lengths": lengths}
        if "ngrams" in spec:  # a linear part over each text's known word 1-2-grams
            index = {g: i for i, g in enumerate(spec["ngrams"], 1)}
            feeds["ngrams"] = _pad([[index[g] for g in _ngrams(t) if g in index] or [0] for t in texts])[0]
        (probs,) = sessions["classify"].run(None, feeds)
        return [f"{spec['labels'][int(p.argmax())]}\t{float(p.max()):.3f}" for p in probs]
    if kind == "tag":
        sentences = [line.split() for line in items]
        index = {t: i for i, t in enumerate(spec["vocab"])}
        rows = [[[index.get(w.lower(), UNK), word_shape(w, spec["shapes"]),
                  *char_ids(w, spec["char_slots"], spec["char_ids"])] for w in ws] for ws in sentences]
        x, lengths = _pad(rows)
        (tags,) = sessions["tag"].run(None, {"words_and_shapes": x, "lengths": lengths})
        return [" ".join(f"{w}/{spec['tags'][int(t)]}" for w, t in zip(ws, row, strict=False))
                for ws, row in zip(sentences, tags, strict=True)]
    if kind == "seq2seq":
        if "tokenizer" in spec:
            sources = [_words(s, spec["tokenizer"]) for s in items]
        else:
            sources = [list(s.replace(" ", "").lower()) if spec["characters"] else s.split() for s in items]
        oovs: list[list[str]] = [[] for _ in sources]
        if "max_source" in spec:
            sources = [s[: spec["max_source"]] for s in sources]
        if spec.get("pointer"):  # an unknown source word is V + its rank among the source's unknown words
            index = {t: i for i, t in enumerate(spec["src_vocab"])}
            rows = [_extended(s, index, oov) for s, oov in zip(sources, oovs, strict=True)]
        else:
            rows = _ids(sources, spec["src_vocab"])
        src, lengths = _pad(rows)
        memory, mask, prev, *states = sessions["encoder"].run(None, {"src": src, "src_lengths": lengths})
        names = spec["states"]

        if spec.get("beam", 1) > 1:  # every source's memory once per beam (rnnkit's repeat_interleave)
            memory, mask = np.repeat(memory, spec["beam"], 0), np.repeat(mask, spec["beam"], 0)

        def step(token, feeds):
            out = sessions["decoder_step"].run(None, {"token": token, **feeds, "memory": memory, "mask": mask})
            return out[0], {"prev": out[1], **dict(zip(names, out[2 : 2 + len(names)], strict=True))}, out[-1]

        feeds = {"prev": prev, **dict(zip(names, states, strict=True))}
        choose = None
        if spec.get("graphones") and spec["graphones"].get("weight"):  # g2p --joint-ngram: rerank the beam
            g, vocab = Graphones(spec["graphones"]), spec["tgt_vocab"]

            def choose(b, hyps):
                combined = [sc + g.weight * g.score(sources[b], [vocab[i] for i in row]) for row, sc in hyps]
                return combined.index(max(combined))

        if spec.get("beam", 1) > 1:
            decoded, attention = _beam(step, feeds, spec, len(items), src.shape[1], choose)
        else:
            decoded, attention = _greedy(step, feeds, spec, len(items), src.shape[1]), None
        vocab = spec["tgt_vocab"]
        words = [[vocab[i] if i < len(vocab) else oov[i - len(vocab)] if i - len(vocab) < len(oov) else "<unk>"
                  for i in row] for row, oov in zip(decoded, oovs, strict=True)]  # an id for no source word: <unk>
        if "unknown_dictionary" in spec and attention is not None:
            # an <unk> becomes the translation of the source word it attends to most (or that word)
            table = spec["unknown_dictionary"]
            attended = [[sources[b][int(attention[b][t, : len(sources[b])].argmax())] for t in range(len(row))]
                        for b, row in enumerate(words)]
            words = [[table.get(a, a) if w == "<unk>" else w for w, a in zip(row, att, strict=True)]
                     for row, att in zip(words, attended, strict=True)]
        words = [[w for w in row if w not in spec.get("drop", ())] for row in words]
        return [_detokenize(w, spec["tokenizer"]) if "tokenizer" in spec else " ".join(w) for w in words]
    if kind in ("generate", "caption"):
        if kind == "generate":
            cond = np.array([spec["conditions"].index(c.strip()) for c in items], dtype=np.int64)
            init = sessions["init"].run(None, {"condition": cond})
        else:
            images = np.stack([np.load(p.strip()).astype(np.float32) for p in items])
            init = sessions["init"].run(None, {"image": images})
        names = spec["states"]

        def step(token, feeds):
            out = sessions["step"].run(None, {"token": token, **feeds})
            return out[0], dict(zip(names, out[1:], strict=True))

        decoded = _greedy(step, dict(zip(names, init, strict=True)), spec, len(items))
        return [spec["joiner"].join(spec["vocab"][i] for i in row) for row in decoded]
    if kind == "image":
        images = np.stack([np.load(p.strip(), allow_pickle=False).astype(np.float32) for p in items])
        (probs,) = sessions["classify_image"].run(None, {"image": images})
        return [f"{spec['labels'][int(p.argmax())]}\t{float(p.max()):.3f}" for p in probs]
    if kind == "ctc":
        feats = [np.load(p.strip()).astype(np.float32) for p in items]
        T = max(f.shape[0] for f in feats)
        x = np.zeros((len(feats), T, feats[0].shape[1]), dtype=np.float32)
        for i, f in enumerate(feats):
            x[i, : len(f)] = f
        lengths = np.array([len(f) for f in feats], dtype=np.int64)
        (logp,) = sessions["frames"].run(None, {"features": x, "lengths": lengths})
        out = []
        for row, n in zip(logp.argmax(-1), lengths, strict=True):
            ids = [int(k) for j, k in enumerate(row[:n]) if k != spec["blank"] and (j == 0 or k != row[j - 1])]
            out.append(spec.get("joiner", "").join(spec["chars"][k] for k in ids))
        return out
    if kind == "video":
        out = []
        for p in items:
            clip = _clip(p.strip(), tuple(spec["size"]))
            (probs,) = sessions["tag_clip"].run(None, {"clip": clip[None]})
            fields, start = [], 0
            for name, labels in zip(spec["tags"], spec["labels"], strict=True):
                block = probs[0, start : start + len(labels)]
                start += len(labels)
                fields.append(f"{name}={labels[int(block.argmax())]} ({float(block.max()):.3f})")
            out.append("\t".join(fields))
        return out
    if kind == "frames":
        context, size = spec["context"], tuple(spec["size"])
        clips = []
        for p in items:
            clip = _clip(p.strip(), size)
            if clip.shape[0] < context:
                raise ExportError(f"{p.strip()}: a clip of {clip.shape[0]} frames; the model reads {context}")
            clips.append(clip[:context])
        (frames,) = sessions["forecast_frames"].run(None, {"context": np.stack(clips).astype(np.float32)})
        out = []
        for p, f in zip(items, frames, strict=True):
            path = Path(p.strip())
            target = path.with_name(path.name + ".next.npy")
            np.save(target, f.astype(np.float32), allow_pickle=False)
            out.append(f"{target}\t" + " ".join(f"{m:.4f}" for m in f.reshape(len(f), -1).mean(1)))
        return out
    raise ExportError(f"model.json: unknown kind {kind!r}")


def run(directory: str | Path, lines: list[str]) -> list[str]:
    """The output lines for the input lines (blank lines kept; forecast: the whole input is one history)."""
    spec, sessions = load(directory)
    if spec["kind"] == "forecast":
        return predict(spec, sessions, [v for v in lines if v.strip()])
    todo = [line for line in lines if line.strip()]
    it = iter(predict(spec, sessions, todo) if todo else [])
    return [next(it) if line.strip() else "" for line in lines]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    source = argv[1] if len(argv) > 1 else "-"
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    try:
        for line in run(argv[0], text.splitlines()):
            print(line)
    except (ExportError, ValueError, OSError) as err:
        print(f"run_onnx: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
