"""The PyTorch stack sees through every rnnkit layer on every backend that can run it:
``torch.compile(fullgraph=True)`` equals eager, ``torch.export`` round-trips, ``torch.func``
per-sample gradients equal a loop, and double backward passes ``gradgradcheck``. Plus the
stepping contract (noise drawn once per sequence) and the import layering of the core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch.func import functional_call, grad, vmap

import rnnkit
from rnnkit.cells import LayerNormGRUCell, LayerNormLSTMCell, MinGRUCell, MinLSTMCell
from rnnkit.scan.deer import DeerGRUCell

SRC = Path(rnnkit.__file__).parent

# (id, factory, backends that can run it on CPU)
VENDOR = ["fused", "fast", "sequential"]
OURS = ["fast", "sequential"]
LAYERS = [
    ("lstm-2x-bi", lambda b: rnnkit.LSTM(3, 4, num_layers=2, bidirectional=True, backend=b), VENDOR),
    ("lstm-proj", lambda b: rnnkit.LSTM(3, 5, proj_size=2, backend=b), VENDOR),
    ("gru", lambda b: rnnkit.GRU(3, 4, num_layers=2, backend=b), VENDOR),
    ("rnn-relu", lambda b: rnnkit.RNN(3, 4, nonlinearity="relu", backend=b), VENDOR),
    ("ln-lstm-peephole", lambda b: rnnkit.LSTM(3, 4, layer_norm=True, peephole=True, backend=b), OURS),
    ("ln-gru-bi", lambda b: rnnkit.GRU(3, 4, layer_norm=True, bidirectional=True, backend=b), OURS),
    ("recurrent-ln-lstm", lambda b: rnnkit.Recurrent(LayerNormLSTMCell(3, 4), num_layers=2, backend=b),
     OURS),
    ("recurrent-ln-gru", lambda b: rnnkit.Recurrent(LayerNormGRUCell(3, 4), backend=b), OURS),
    ("recurrent-indrnn", lambda b: rnnkit.Recurrent(rnnkit.cells.IndRNNCell(3, 4), backend=b), OURS),
    ("recurrent-mingru", lambda b: rnnkit.Recurrent(MinGRUCell(3, 4), backend=b), ["parallel", "sequential"]),
    ("recurrent-minlstm-bi", lambda b: rnnkit.Recurrent(MinLSTMCell(3, 4), bidirectional=True, backend=b),
     ["parallel", "sequential"]),
    ("recurrent-deer-bi", lambda b: rnnkit.Recurrent(DeerGRUCell(3, 4, tol=1e-6), bidirectional=True, backend=b),
     ["parallel", "sequential"]),
]
CASES = [pytest.param(make, b, id=f"{name}-{b}") for name, make, backends in LAYERS for b in [*backends, "auto"]]


def _build(make, backend, dtype=torch.float32):
    torch.manual_seed(0)
    return make(backend).to(dtype).eval()


def _inputs(dtype=torch.float32, batch=3, steps=6):
    return torch.randn(batch, steps, 3, dtype=dtype)


def _first(out):
    return out[0]


@pytest.mark.parametrize(("make", "backend"), CASES)
def test_compile_fullgraph_equals_eager(make, backend):
    torch._dynamo.reset()
    m = _build(make, backend)
    x = _inputs().requires_grad_()
    want = _first(m(x))
    (gx_want,) = torch.autograd.grad(want.square().sum(), x)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    got = _first(compiled(x))
    (gx_got,) = torch.autograd.grad(got.square().sum(), x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx_got, gx_want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("make", "backend"), CASES)
def test_export_round_trip_runs_and_equals_eager(make, backend):
    m = _build(make, backend)
    x = _inputs()
    program = torch.export.export(m, (x,))
    torch.testing.assert_close(_first(program.module()(x)), _first(m(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("make", "backend"), CASES)
def test_vmap_per_sample_gradients_equal_a_loop(make, backend):
    if backend == "fused":
        pytest.skip("forced onto torch's kernels, which have no batching rule (torch.nn fails too); auto reroutes")
    if backend == "parallel" and isinstance(getattr(make(backend), "cells", [None])[0], DeerGRUCell):
        pytest.skip("forced onto DEER, whose Newton loop stops on a data-dependent test; auto reroutes")
    m = _build(make, backend, torch.float64)
    x = _inputs(torch.float64)
    params = {k: v.detach() for k, v in m.named_parameters()}

    def loss(p, sample):
        return functional_call(m, p, (sample.unsqueeze(0),))[0].square().sum()

    batched = vmap(grad(loss), in_dims=(None, 0))(params, x)
    for b in range(x.size(0)):
        one = grad(loss)(params, x[b])
        for name in params:
            torch.testing.assert_close(batched[name][b], one[name], atol=1e-10, rtol=1e-8)
    # and the loop of grads equals autograd's on the module itself
    m.zero_grad()
    loss(dict(m.named_parameters()), x[0]).backward()
    first = next(iter(params))
    torch.testing.assert_close(batched[first][0], m.get_parameter(first).grad, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize(("make", "backend"), CASES)
def test_gradgradcheck_float64(make, backend):
    m = _build(make, backend, torch.float64)
    x = _inputs(torch.float64, batch=2, steps=4).requires_grad_()
    weight = next(m.parameters())
    assert torch.autograd.gradgradcheck(lambda x, w: _first(m(x)) * w.sum(), (x, weight), fast_mode=True)


def test_explain_names_the_traceable_form_under_a_transform():
    m = rnnkit.LSTM(3, 4, layer_norm=True)
    seen = []

    def f(x):
        seen.append(str(m.explain(x.unsqueeze(0))))
        return m(x.unsqueeze(0))[0].sum()

    vmap(grad(f))(torch.randn(2, 5, 3))
    assert "traceable form" in seen[0]
    plain = rnnkit.LSTM(3, 4)
    reports = []
    vmap(lambda x: reports.append(plain.explain(x.unsqueeze(0))) or plain(x.unsqueeze(0))[0])(torch.randn(2, 5, 3))
    assert reports[0].name == "fast" and "batching rule" in reports[0].rejected["fused"]


# -- stepping --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", [
    lambda: LayerNormLSTMCell(3, 5, recurrent_dropout=0.4),
    lambda: LayerNormGRUCell(3, 5, recurrent_dropout=0.4, layer_norm=False),
    lambda: rnnkit.cells.IndRNNCell(3, 5, recurrent_dropout=0.4),
])
def test_stepping_in_training_equals_forward_under_the_same_masks(cell):
    torch.manual_seed(1)
    layer = rnnkit.Recurrent(cell(), num_layers=2).train()
    x = torch.randn(4, 7, 3)
    torch.manual_seed(5)
    want, want_state = layer(x)  # draws layer 0's mask, then layer 1's
    torch.manual_seed(5)
    state = layer.begin(4, like=x)  # draws every cell's mask, in the same order
    ys = []
    for x_t in x.unbind(1):
        y, state = layer.step(x_t, state)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), want)
    want_state = (want_state,) if isinstance(want_state, torch.Tensor) else want_state
    for got, ref in zip(state.state, want_state, strict=True):
        torch.testing.assert_close(got, ref)
    # the masks are per sequence: a new sequence draws new ones, and stepping reuses its own
    other = layer.begin(4, like=x)
    assert all(a is not None and not torch.equal(a, b) for a, b in zip(state.noise, other.noise, strict=True))
    _, again = layer.step(x[:, 0], state)
    assert all(a is b for a, b in zip(again.noise, state.noise, strict=True))


def test_zoneout_stepping_draws_per_step_and_matches_forward_statistics():
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(LayerNormLSTMCell(3, 64, zoneout=(0.5, 0.0), layer_norm=False)).train()
    x = torch.randn(8, 30, 3)
    state = layer.begin(8, like=x)
    kept = []
    prev = state.state[0][0]
    for x_t in x.unbind(1):
        _, state = layer.step(x_t, state)
        kept.append((state.state[0][0] == prev).float().mean())
        prev = state.state[0][0]
    assert abs(torch.stack(kept[1:]).mean().item() - 0.5) < 0.05  # each unit kept with p_h, per step


def test_seq2seq_decoder_draws_new_masks_for_every_batch():
    from rnnkit.models import Seq2Seq

    torch.manual_seed(0)
    decoder = {"cell": "layernorm_lstm", "hidden_size": 6, "cell_options": {"recurrent_dropout": 0.5}}
    model = Seq2Seq(11, 13, {"hidden_size": 6}, decoder, embedding_dim=4).train()
    src = torch.randint(3, 11, (2, 5))
    _, _, s1 = model.encode(src)
    _, _, s2 = model.encode(src)
    assert not torch.equal(s1[1].noise[0], s2[1].noise[0])


# -- layering ------------------------------------------------------------------------------------
ORDER = {"cells": 0, "scan": 1, "layers": 2, "models": 3}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rnnkit"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("rnnkit"))
    return found


@pytest.mark.parametrize("package", list(ORDER))
def test_core_packages_import_nothing_above_them(package):
    level = ORDER[package]
    for path in (SRC / package).rglob("*.py"):
        for module in _imports(path):
            parts = module.split(".")
            top = parts[1] if len(parts) > 1 else ""
            assert top in ORDER, f"{path.relative_to(SRC)} imports {module}, outside the core"
            assert ORDER[top] <= level, f"{path.relative_to(SRC)} ({package}) imports {module}, a layer above it"


def test_one_stack_loop():
    """The layer-by-direction loop lives in the driver alone: only layers/engine.py merges
    directions or hands a layer to a backend, and only the scans step cells over time."""
    merges, runs, steps = [], [], []
    for path in SRC.rglob("*.py"):
        text, name = path.read_text(), str(path.relative_to(SRC))
        if "merge_directions(" in text and name != "layers/engine.py":
            merges.append(name)
        if ".run_layer(" in text and name != "layers/engine.py":
            runs.append(name)
        if ".step(xp" in text and not name.startswith(("scan/", "cells/", "diagnostics/jacobian.py")):
            steps.append(name)
    assert (merges, runs, steps) == ([], [], []), (merges, runs, steps)


# -- the fast engine under graph capture: one custom op per layer and direction ------------------
@pytest.mark.parametrize(("make", "op"), [
    (lambda: rnnkit.LSTM(3, 4, layer_norm=True, peephole=True, num_layers=2), "rnnkit.lstm_forward"),
    (lambda: rnnkit.LSTM(3, 5, proj_size=2, backend="fast"), "rnnkit.lstm_forward"),
    (lambda: rnnkit.GRU(3, 4, layer_norm=True, bidirectional=True), "rnnkit.gru_forward"),
    (lambda: rnnkit.RNN(3, 4, backend="fast"), "rnnkit.simple_forward"),
    (lambda: rnnkit.Recurrent(rnnkit.cells.IndRNNCell(3, 4), backend="fast"), "rnnkit.simple_forward"),
    (lambda: rnnkit.Recurrent(DeerGRUCell(3, 4), num_layers=2, backend="parallel"), "rnnkit.deer_gru_forward"),
])
def test_graph_capture_holds_one_rnnkit_op_per_direction(make, op):
    torch.manual_seed(0)
    m = make().eval()
    x = torch.randn(2, 40, 3)
    graph = torch.export.export(m, (x,)).graph
    found = [n for n in graph.nodes if str(n.target).startswith(op)]
    directions = 2 if getattr(m, "bidirectional", False) else 1
    assert len(found) == getattr(m, "num_layers", 1) * directions
    assert not [n for n in graph.nodes if "sigmoid" in str(n.target) or "tanh" in str(n.target)]  # not unrolled


def test_inductor_compiles_the_fast_engine_and_equals_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = rnnkit.LSTM(3, 4, layer_norm=True, zoneout=0.2, batch_first=True).train()
    x = torch.randn(2, 30, 3, requires_grad=True)
    compiled = torch.compile(m, fullgraph=True)
    with torch._inductor.config.patch(fallback_random=True):  # inductor draws eager's random numbers
        torch.manual_seed(1)
        got = compiled(x)[0]
    (g_got,) = torch.autograd.grad(got.square().sum(), x)
    torch.manual_seed(1)
    want = m(x)[0]
    (g_want,) = torch.autograd.grad(want.square().sum(), x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_got, g_want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: rnnkit.LSTM(3, 4, backend="fast"), lambda: rnnkit.LSTM(3, 4, layer_norm=True),
    lambda: rnnkit.GRU(3, 4, backend="fast"), lambda: rnnkit.RNN(3, 4, backend="fast"),
])
def test_a_forward_keeps_no_reference_to_the_weights(make):
    """Nothing of a forward outlives its outputs (a ctx holding an output made a cycle that kept
    every buffer and weight alive), so .to() can swap parameters."""
    import gc
    import sys

    m = make()
    before = {n: sys.getrefcount(p) for n, p in m.named_parameters()}
    out = m(torch.randn(2, 5, 3))
    del out
    gc.collect()
    assert {n: sys.getrefcount(p) for n, p in m.named_parameters()} == before


def test_no_global_dynamo_switch_and_inductor_compiles_every_drop_in():
    """rnnkit leaves torch._dynamo.config.allow_rnn alone (torch.nn's own layers compile as
    before), and the drop-ins compile with inductor in training and inference."""
    assert torch._dynamo.config.allow_rnn is False
    for cls in (rnnkit.RNN, rnnkit.GRU, rnnkit.LSTM):
        for train in (True, False):
            torch._dynamo.reset()
            torch.manual_seed(0)
            m = cls(3, 4, batch_first=True).train(train)
            x = torch.randn(2, 6, 3)
            got = torch.compile(m, fullgraph=True)(x)[0]
            torch.testing.assert_close(got, m(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: rnnkit.GRU(3, 4, bidirectional=True, batch_first=True),  # auto: the fast op under compile on CPU
    lambda: rnnkit.LSTM(3, 4, layer_norm=True, batch_first=True),
    lambda: rnnkit.Recurrent(LayerNormLSTMCell(3, 4), num_layers=2, bidirectional=True, backend="sequential"),
    lambda: rnnkit.Recurrent(MinGRUCell(3, 4), bidirectional=True),
])
def test_compile_fullgraph_with_lengths_equals_eager(make):
    """Lengths are values: under compile the driver masks every step instead of reading them."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = make().eval()
    x, lengths = torch.randn(3, 6, 3), torch.tensor([6, 2, 4])
    want = m(x, lengths=lengths)[0]
    got = torch.compile(m, fullgraph=True, backend="aot_eager")(x, lengths=lengths)[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert got[1, 2:].abs().max() == 0


def test_deer_routes_around_transforms_and_says_why():
    """quasi-DEER's Newton loop stops on a data-dependent test: under vmap the parallel backend refuses
    it, auto runs the same GRU function elsewhere, and explain() says so; under compile it stays on
    the parallel backend as a custom op."""
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(DeerGRUCell(3, 4, tol=1e-10, max_iter=200), backend="auto").double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    reports = []

    def f(sample):
        reports.append(layer.explain(sample.unsqueeze(0)))
        return layer(sample.unsqueeze(0))[0].sum()

    vmap(grad(f))(x)
    assert reports[0].name != "parallel" and "data-dependent" in reports[0].rejected["parallel"]
    forced = rnnkit.Recurrent(layer.cells[0], backend="parallel")
    compiled_reports = []

    def g(x):
        compiled_reports.append(forced.explain(x))
        return forced(x)[0]

    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(g, fullgraph=True, backend="aot_eager")(x), forced(x)[0])
    assert compiled_reports[0].name == "parallel"
