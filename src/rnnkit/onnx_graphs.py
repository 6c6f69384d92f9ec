"""The inference models of the tasks as ONNX-exportable modules, with dynamic batch and time axes.

Each task's :meth:`~rnnkit.tasks.base.Task.onnx_bundle` returns an :class:`OnnxBundle`: one or
more :class:`OnnxGraph` (a module, named inputs and outputs, which axes are dynamic, and example
inputs at any batch size and length) and the JSON the standalone runner
(:mod:`rnnkit.onnx_runner`) needs: vocabularies, special ids, scaling. The graphs are what a
deployment runs:

* forecast: raw history ``(B, T, 1)`` -> the next ``H`` raw values ``(B, H, 1)`` (scaling and the
  autoregressive steps inside);
* a classifier: token ids and lengths -> class probabilities;
* a tagger: ids and lengths -> tags ``(B, T)``, by Viterbi over the CRF inside the graph (a
  TorchScript loop, ONNX ``Loop``), or per-step argmax without a CRF;
* seq2seq: an ``encoder`` graph (source, lengths -> memory, mask, first decoder state) and a
  ``decoder_step`` graph (previous token, state, memory, mask -> log-probabilities, next state,
  attention), which the runner loops greedily;
* generation (music, chars, caption): an ``init`` graph (condition or image -> state) and a
  ``step`` graph (token, state -> log-probabilities, state);
* CTC (speech): features and lengths -> per-frame log-probabilities.

Recurrences on torch's kernels (rnn/gru/lstm cells) become ONNX ``RNN``/``GRU``/``LSTM``
operators, whose time axis is dynamic. Other cells are unrolled by tracing, so their sequence
graphs are fixed to the example length: :func:`dynamic_time_reason` says so, and export refuses
a dynamic time axis for them with that reason. The decoders' one-step graphs have no time axis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "OnnxBundle", "OnnxGraph", "dynamic_time_reason", "generator_bundle", "padded_tokens", "random_lengths",
    "viterbi_graph",
]


@dataclass
class OnnxGraph:
    """One ONNX file: ``module(*example(batch, length))``, its names and dynamic axes."""

    name: str
    module: nn.Module
    example: Callable[[int, int], tuple[Tensor, ...]]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    has_time: bool = True  # whether some input has a time (length) axis


@dataclass
class OnnxBundle:
    kind: str  # forecast | classify | tag | seq2seq | generate | caption | ctc
    graphs: list[OnnxGraph]
    config: dict[str, Any] = field(default_factory=dict)


def dynamic_time_reason(model: nn.Module) -> str | None:
    """Why ``model``'s sequence graphs cannot have a dynamic time axis (None: they can): a
    recurrent layer that is not on torch's kernels is unrolled step by step by tracing."""
    from rnnkit.layers.recurrent import Recurrent
    from rnnkit.scan.fused import fused_unavailable

    for layer in model.modules():
        if isinstance(layer, Recurrent):
            probe = torch.zeros(2, 1, layer.cells[0].input_size)
            reason = fused_unavailable(list(layer.cells), probe)
            if reason is not None:
                return (f"{type(layer.cells[0]).__name__} has no ONNX recurrent operator ({reason}); tracing "
                        "unrolls it, so the graph is fixed to the example's length")
    return None


def random_lengths(batch: int, length: int, generator: torch.Generator) -> Tensor:
    """Lengths in ``[1, length]``, the first one full (so that ``length`` is the padded size)."""
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length
    return lengths


def padded_tokens(vocab_size: int, batch: int, length: int, seed: int = 0, low: int = 4) -> tuple[Tensor, Tensor]:
    """Random token ids ``(B, T)`` (ids from ``low``), zero-padded past random lengths."""
    g = torch.Generator().manual_seed(seed + 1000 * batch + length)
    x = torch.randint(low, max(low + 1, vocab_size), (batch, length), generator=g)
    lengths = random_lengths(batch, length, g)
    x = x.masked_fill(torch.arange(length).unsqueeze(0) >= lengths.unsqueeze(1), 0)
    return x, lengths


def batch_time(*names: str, extra: dict[str, dict[int, str]] | None = None) -> dict[str, dict[int, str]]:
    axes = {n: {0: "batch", 1: "time"} for n in names}
    axes.update(extra or {})
    return axes


# -- Viterbi inside the graph ------------------------------------------------------------------------
@torch.jit.script
def viterbi_graph(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor) -> Tensor:
    """The best tag path ``(B, T)`` (-1 at padded steps): :func:`rnnkit.models.crf.viterbi_decode`
    written for TorchScript, so that it exports as ONNX ``Loop`` over a dynamic time axis."""
    B = emissions.size(0)
    T = emissions.size(1)
    K = emissions.size(2)
    identity = torch.arange(K, device=emissions.device).unsqueeze(0).expand(B, K)
    delta = start.unsqueeze(0) + emissions[:, 0]
    pointers = [identity]
    for t in range(1, T):
        best, arg = (delta.unsqueeze(2) + transitions.unsqueeze(0)).max(dim=1)
        m = mask[:, t].unsqueeze(1)
        delta = torch.where(m, best + emissions[:, t], delta)
        pointers.append(torch.where(m, arg, identity))
    tag = (delta + end.unsqueeze(0)).argmax(dim=1)
    path = [tag]
    for i in range(T - 1):
        tag = pointers[T - 1 - i].gather(1, tag.unsqueeze(1)).squeeze(1)
        path.append(tag)
    # collected from the last step back; (a list reverse is lost in the ONNX export: flip instead)
    return torch.stack(path, dim=1).flip([1]).masked_fill(~mask, -1)


# -- the graphs ---------------------------------------------------------------------------------------
class ForecastGraph(nn.Module):
    """Raw history ``(B, T, 1)`` -> the next ``horizon`` raw values ``(B, horizon, 1)``."""

    def __init__(self, model: nn.Module, mean: float, std: float, horizon: int) -> None:
        super().__init__()
        self.model, self.mean, self.std, self.horizon = model, float(mean), float(std), int(horizon)

    def forward(self, history: Tensor) -> Tensor:
        z = (history - self.mean) / self.std
        return self.model.forecast(z, self.horizon) * self.std + self.mean


class ClassifierGraph(nn.Module):
    """Token ids ``(B, T)``, lengths ``(B,)`` and, for a model with an n-gram part, n-gram ids
    ``(B, F)`` -> class probabilities ``(B, K)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, lengths: Tensor, ngrams: Tensor | None = None) -> Tensor:
        extra = {} if ngrams is None else {"ngrams": ngrams}
        return self.model(tokens, lengths, **extra).softmax(-1)


class TaggerGraph(nn.Module):
    """Inputs ``(B, T, ...)`` and lengths -> tags ``(B, T)`` (-1 at padded steps): Viterbi with a
    CRF, else per-step argmax."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        emissions = self.model(x, lengths)  # (B, T, K)
        mask = torch.arange(emissions.size(1), device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
        crf = self.model.crf
        if crf is None:
            return emissions.argmax(-1).masked_fill(~mask, -1)
        return viterbi_graph(emissions, mask, crf.start, crf.transitions, crf.end)


class FrameGraph(nn.Module):
    """Features ``(B, T, F)`` and lengths -> per-frame log-probabilities ``(B, T, K)`` (CTC)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        return self.model(features, lengths).log_softmax(-1)


class Seq2SeqEncoderGraph(nn.Module):
    """``src (B, S)``, ``src_lengths (B,)`` -> ``memory (B, S, M)``, ``mask (B, S)``, the first
    attention query / previous output ``(B, O)`` and the decoder state entries ``(L, B, H)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, src_lengths: Tensor):
        memory, mask, (prev, stepping) = self.model.encode(src, src_lengths)
        return (memory, mask, prev, *stepping.state)


class Seq2SeqStepGraph(nn.Module):
    """One greedy decoder step: ``token (B,)``, ``prev (B, O)``, state entries, memory, mask ->
    ``log_probs (B, V)``, the next ``prev`` and state entries, ``attention (B, S)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.entries = len(model.decoder.cells[0].state_sizes)

    def forward(self, token: Tensor, prev: Tensor, *rest: Tensor):
        states, (memory, mask) = rest[: self.entries], rest[self.entries :]
        m = self.model
        stepping = m.decoder.begin(token.size(0), states[0] if len(states) == 1 else tuple(states), like=memory)
        # the model's own step function (a LexicalSeq2Seq adds its lexicon bias there)
        logits, (prev, stepping), attn = m._step_fn(memory, mask)(token, (prev, stepping))
        return (logits.log_softmax(-1), prev, *stepping.state, attn)


class GeneratorInitGraph(nn.Module):
    """A condition -> the generator's state entries ``(L, B, H)``; for captions, ``encode`` first."""

    def __init__(self, generator: nn.Module, encode: nn.Module | None = None) -> None:
        super().__init__()
        self.generator, self.encode = generator, encode

    def forward(self, cond: Tensor):
        from rnnkit.models._common import stacked_state

        c = self.encode(cond) if self.encode is not None else cond
        flat = self.generator.initial_state(c)
        stacked = stacked_state(flat, self.generator._entries)
        return stacked if isinstance(stacked, tuple) else (stacked,)


class GeneratorStepGraph(nn.Module):
    """``token (B,)`` and state entries -> ``log_probs (B, V)`` and the next state entries."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, token: Tensor, *states: Tensor):
        g = self.generator
        stepping = g.rnn.begin(token.size(0), states[0] if len(states) == 1 else tuple(states), like=states[0])
        y, stepping = g.rnn.step(g.embed(token), stepping)
        return (g.out(y).log_softmax(-1), *stepping.state)


def state_names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{k}" for k in range(count)]


def layer_axes(names: list[str]) -> dict[str, dict[int, str]]:
    """State entries ``(L, B, H)``: the batch is axis 1."""
    return {n: {1: "batch"} for n in names}


def generator_bundle(generator: nn.Module, conditions: Callable[[int], Tensor], cond_name: str,
                     config: dict[str, Any], *, encode: nn.Module | None = None, kind: str = "generate") -> OnnxBundle:
    """The ``init`` and ``step`` graphs of a :class:`~rnnkit.models.Generator` (after ``encode``)."""
    init, step = GeneratorInitGraph(generator, encode), GeneratorStepGraph(generator)
    states = state_names("state", generator._entries)
    vocab = generator.vocab_size

    def step_example(batch: int, length: int):
        with torch.no_grad():
            st = init(conditions(batch))
        g = torch.Generator().manual_seed(batch)
        return (torch.randint(4, vocab, (batch,), generator=g), *st)

    graphs = [
        OnnxGraph("init", init, lambda b, t: (conditions(b),), [cond_name], states,
                  {cond_name: {0: "batch"}, **layer_axes(states)}, has_time=False),
        OnnxGraph("step", step, step_example, ["token", *states], ["log_probs", *[f"next_{s}" for s in states]],
                  {"token": {0: "batch"}, "log_probs": {0: "batch"}, **layer_axes(states),
                   **layer_axes([f"next_{s}" for s in states])}, has_time=False),
    ]
    return OnnxBundle(kind, graphs, {"max_len": 64, **config, "bos_id": generator.bos_id,
                                     "eos_id": generator.eos_id, "states": states})
