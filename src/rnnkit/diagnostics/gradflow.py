"""How far back the gradient reaches: per-timestep ``||dL/dh_t||`` and per-layer gradient norms.

Backpropagation through time gives (Pascanu, Mikolov & Bengio, "On the difficulty of training
recurrent neural networks", ICML 2013)

    dL/dh_t = d+L/dh_t + (dL/dh_{t+1}) J_{t+1},      J_{t+1} = d h_{t+1} / d h_t

where ``d+L/dh_t`` is the direct contribution of step t's output. For a loss on the last step
only, ``dL/dh_t = dL/dh_T J_T J_{T-1} ... J_{t+1}``: the norm shrinks (vanishing) or grows
(exploding) geometrically with the distance ``T - t`` when ``||J|| < 1`` or ``> 1``.

Measuring the *total* derivative ``dL/dh_t``: the probed forward adds a zero tensor
``p_t`` (requiring grad) to each state ``h_t`` as it leaves the cell, ``h_t' = h_t + p_t``, and
uses ``h_t'`` both as the step's output and as the next step's state. Since ``p_t = 0`` the
forward is unchanged, and ``dL/dp_t = dL/dh_t`` exactly, through every later step. This holds
for ``h = state[0]`` when the cell returns it as its output (every rnnkit cell); a cell whose
output is a different tensor is measured through its recurrence only.

The other state components (the LSTM cell state ``c``) are probed the same way, but a cell
computes ``h_t`` from ``c_t`` inside one step, before the probe is added, so their probe gives
the derivative through the recurrence only: ``dL/dc_t = dL/dc_{t+1} * f_{t+1}`` for the LSTM,
the constant-error-carousel path (Hochreiter & Schmidhuber 1997).

Symbols: B batch, T time steps, N = layers * directions cells, S_k state sizes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from rnnkit.layers import Recurrent
from rnnkit.layers.engine import run_stack
from rnnkit.scan.backends import SequentialBackend
from rnnkit.scan.sequential import length_mask, reverse_padded

__all__ = [
    "HiddenProbe", "layer_grad_norms", "probe_hidden", "probed_forward", "recurrent_layers", "timestep_grad_norms",
]


@dataclass
class HiddenProbe:
    """The probes of one :class:`~rnnkit.Recurrent` call; read them after ``loss.backward()``.

    ``probes[n][k]`` is cell ``n``'s probe for state component ``k``, shape ``(T, B, S_k)`` in
    the cell's own processing order (reversed for a backward direction); ``lengths`` the call's
    lengths or None.
    """

    probes: list[list[Tensor]] = field(default_factory=list)
    lengths: Tensor | None = None
    directions: int = 1
    inputs: Tensor | None = None  # the call's input x, detached, in the layer's own layout

    def grads(self, component: int = 0) -> Tensor:
        """``dL/dh_t`` per cell in sequence order: ``(N, T, B, S_k)`` (zeros at padded steps)."""
        out = []
        for n, probes in enumerate(self.probes):
            g = probes[component].grad
            if g is None:
                raise RuntimeError("the probes have no gradient yet: call loss.backward() on a loss of this forward")
            out.append(reverse_padded(g, self.lengths) if n % self.directions == 1 else g)
        return torch.stack(out)  # (N, T, B, S)

    def norms(self, component: int = 0) -> Tensor:
        """``||dL/dh_t||_2`` per cell and step, averaged over the batch's valid positions:
        ``(N, T)``."""
        g = self.grads(component).norm(dim=-1)  # (N, T, B)
        if self.lengths is None:
            return g.mean(-1)
        mask = length_mask(self.lengths.to(g.device), g.size(1)).to(g.dtype)  # (T, B)
        return (g * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def probed_forward(
    layer: Recurrent, x: Tensor, state=None, lengths=None, *, record: list[HiddenProbe] | None = None
):
    """Same result as ``layer(x, state, lengths)``, computed step by step with zero probes on
    every state (see the module docstring) through the stack driver's ``on_step`` seam. The
    :class:`HiddenProbe` is appended to ``record``."""
    inputs = x.detach()
    x, state, lengths = layer._check(x, state, lengths)  # x: (T, B, I)
    steps = x.size(0)
    if lengths is not None and bool((lengths == steps).all()):
        lengths = None
    probe = HiddenProbe(lengths=lengths, directions=layer.directions, inputs=inputs)
    slices: list[list[tuple[Tensor, ...]]] = []  # per cell, per state entry: the probes' T steps

    def add_probe(index: int, t: int, xp: Tensor, old, new):
        if t == 0:  # the first step of the next cell: its probes, one (T, B, *S_k) per entry
            probes = [torch.zeros(steps, *s.shape, device=s.device, dtype=s.dtype, requires_grad=True) for s in new]
            probe.probes.append(probes)
            slices.append([p.unbind(0) for p in probes])
        return tuple(s + p[t] for s, p in zip(new, slices[index], strict=True))

    out, final = run_stack(
        layer.cells, x, state, lengths, num_layers=layer.num_layers, directions=layer.directions, merge=layer.merge,
        dropout=layer.dropout, training=layer.training, backend=SequentialBackend(add_probe),
    )
    if record is not None:
        record.append(probe)
    out = out.transpose(0, 1) if layer.batch_first else out
    return out, (final[0] if len(final) == 1 else final)


def recurrent_layers(model: nn.Module) -> list[tuple[str, Recurrent]]:
    """Every :class:`~rnnkit.Recurrent` inside ``model`` (itself included), with its name."""
    return [(name or "<model>", m) for name, m in model.named_modules() if isinstance(m, Recurrent)]


@contextlib.contextmanager
def probe_hidden(model: nn.Module) -> Iterator[dict[str, list[HiddenProbe]]]:
    """Within the block, every :class:`~rnnkit.Recurrent` in ``model`` runs :func:`probed_forward`.

    Yields ``{layer name: [HiddenProbe per call]}``; after ``loss.backward()`` read
    ``probes[name][0].norms()``. Example::

        with probe_hidden(model) as probes:
            loss = loss_fn(model(x), y)
            loss.backward()
        curve = probes["rnn"][0].norms()[0]  # (T,): ||dL/dh_t|| of layer 0

    The model must contain at least one Recurrent (torch.nn's fused RNN modules have no steps
    to probe): ValueError otherwise.
    """
    layers = recurrent_layers(model)
    if not layers:
        raise ValueError(
            f"probe_hidden: {type(model).__name__} contains no rnnkit.Recurrent layer to probe; "
            "build the model from rnnkit.Recurrent (torch.nn.RNN/LSTM/GRU and the drop-ins run fused kernels)"
        )
    records: dict[str, list[HiddenProbe]] = {name: [] for name, _ in layers}
    try:
        for name, layer in layers:
            def forward(x, state=None, lengths=None, *, _layer=layer, _rec=records[name]):
                return probed_forward(_layer, x, state, lengths, record=_rec)

            layer.forward = forward  # instance attribute shadows the class method
        yield records
    finally:
        for _, layer in layers:
            layer.__dict__.pop("forward", None)


def timestep_grad_norms(model: nn.Module, compute_loss: Callable[[], Tensor]) -> dict[str, HiddenProbe]:
    """Run ``compute_loss()`` (a forward of ``model`` and a scalar loss) with probes and return
    each Recurrent's first call's :class:`HiddenProbe`, its gradients filled in. Only the probes
    get gradients: the parameters' ``.grad`` are left untouched."""
    with probe_hidden(model) as records:
        loss = compute_loss()
    calls = {name: recs[0] for name, recs in records.items() if recs}
    probes = [p for hp in calls.values() for ps in hp.probes for p in ps]
    grads = torch.autograd.grad(loss, probes, allow_unused=True)
    for p, g in zip(probes, grads, strict=True):
        p.grad = torch.zeros_like(p) if g is None else g
    return calls


def layer_grad_norms(model: nn.Module, *, depth: int | None = None) -> dict[str, float]:
    """L2 norm of the gradient of each layer's parameters, keyed by the module path that owns
    them (``"rnn.cells.0"``, ``"head"``). ``depth`` cuts the path to that many components to
    group coarser. Parameters without a gradient are left out. One host sync in all."""
    groups: dict[str, list[Tensor]] = {}
    for pname, p in model.named_parameters():
        if p.grad is None:
            continue
        owner = pname.rsplit(".", 1)[0] if "." in pname else "<model>"
        if depth is not None:
            owner = ".".join(owner.split(".")[:depth])
        groups.setdefault(owner, []).append(p.grad.detach())
    if not groups:
        return {}
    sq = torch.stack([torch.stack([g.float().pow(2).sum() for g in gs]).sum() for gs in groups.values()])
    return dict(zip(groups, sq.sqrt().tolist(), strict=True))
