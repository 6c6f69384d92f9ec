"""The Triton path against the fast engine (itself checked against the sequential reference):
outputs, states and every gradient, per-step and persistent kernels, on CUDA when there is one and
otherwise on CPU under ``TRITON_INTERPRET=1``. Skipped when triton is not installed."""

import importlib.util
import os

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed (pip install triton)", allow_module_level=True)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are first imported
    if os.environ["TRITON_INTERPRET"] != "1":
        pytest.skip("no CUDA device and TRITON_INTERPRET is not 1", allow_module_level=True)

import rnnkit  # noqa: E402
from rnnkit.cells import LayerNormGRUCell, LayerNormLSTMCell, PeepholeLSTMCell  # noqa: E402
from rnnkit.scan.triton import persistent  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
B, T, I, H = 2, 4, 3, 5
CELLS = {
    "lstm": lambda h: rnnkit.LSTMCell(I, h),
    "ln_lstm_regularised": lambda h: LayerNormLSTMCell(I, h, recurrent_dropout=0.3, zoneout=(0.2, 0.4)),
    "peephole_zoneout_c": lambda h: PeepholeLSTMCell(I, h, zoneout=(0.0, 0.3)),
    "gru": lambda h: rnnkit.GRUCell(I, h),
    "ln_gru_regularised": lambda h: LayerNormGRUCell(I, h, recurrent_dropout=0.3, zoneout=0.2),
    "gru_no_bias": lambda h: LayerNormGRUCell(I, h, bias=False, layer_norm=False, recurrent_dropout=0.3),
}


def run(layer, x, state, lengths):
    torch.manual_seed(5)  # the same masks on both paths
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    out, final = layer(x, state if len(state) > 1 else state[0], lengths=lengths)
    final = final if isinstance(final, tuple) else (final,)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)
    ((out * weights).sum() + sum((f * f).sum() for f in final)).backward()
    return [out, *final, x.grad, *(s.grad for s in state)] + [p.grad for p in layer.parameters()]


def compare(name, hidden, batch, lengths, dtype, **layer):
    tri = rnnkit.Recurrent(CELLS[name](hidden), backend="triton", **layer).to(DEVICE, dtype)
    fast = rnnkit.Recurrent(CELLS[name](hidden), backend="fast", **layer).to(DEVICE, dtype)
    fast.load_state_dict(tri.state_dict())
    x = torch.randn(batch, T, I, dtype=dtype, device=DEVICE)
    assert tri.explain(x).name == "triton"
    state = tuple(torch.randn(len(tri.cells), batch, s, dtype=dtype, device=DEVICE) for s in tri.cells[0].state_sizes)
    # float32 on a GPU: cuBLAS and the Triton kernels sum in different orders; a weight gradient's sum over
    # T*B rows differed by 1.6e-5 of its largest entry on an H200 (float64 agrees to 1e-10 there)
    tol = 1e-10 if dtype == torch.float64 else (1e-5 if DEVICE == "cpu" else 5e-5)
    for mode in (True, False):
        tri.train(mode)
        fast.train(mode)
        for k, (a, b) in enumerate(zip(run(tri, x, state, lengths), run(fast, x, state, lengths), strict=True)):
            scale = max(1.0, b.abs().max().item())
            torch.testing.assert_close(a, b, atol=tol * scale, rtol=tol,
                                       msg=lambda m, k=k, mode=mode: f"{name} train={mode}: item {k}\n{m}")


@pytest.mark.parametrize("name", list(CELLS))
def test_triton_equals_the_fast_engine(name):
    compare(name, H, B, None, torch.float64)


@pytest.mark.parametrize("name", ["ln_lstm_regularised", "ln_gru_regularised"])
def test_triton_stacked_bidirectional_with_lengths(name):
    compare(name, H, B, [4, 2], torch.float64, num_layers=2, bidirectional=True)


def test_per_step_kernels_and_the_persistent_kernel_agree(monkeypatch):
    compare("ln_lstm_regularised", 6, 17, [4, 1] * 8 + [3], torch.float32)  # 2 batch tiles, padded H
    monkeypatch.setattr(persistent, "PERSISTENT_MAX_H", 0)  # now the per-step forward kernel
    layer = rnnkit.Recurrent(LayerNormLSTMCell(I, 6), backend="triton")
    assert "per step" in layer.explain(torch.randn(1, 1, I, device=DEVICE)).path
    compare("ln_lstm_regularised", 6, 17, [4, 1] * 8 + [3], torch.float32)


def test_explain_says_why_triton_does_not_apply():
    rec = rnnkit.Recurrent(LayerNormLSTMCell(I, H))
    report = rec.explain(torch.randn(B, T, I))
    if DEVICE == "cpu":
        assert report.name == "fast" and "CUDA" in report.rejected["triton"]
    with pytest.raises(ValueError, match="no Triton kernel for ElmanCell"):
        rnnkit.Recurrent(rnnkit.ElmanCell(I, H), backend="triton").to(DEVICE)(torch.randn(B, T, I, device=DEVICE))
    with pytest.raises(ValueError, match="proj_size"):
        rnnkit.Recurrent(rnnkit.LSTMCell(I, H, proj_size=2), backend="triton").explain(torch.randn(1, 1, I,
                                                                                                device=DEVICE))


@pytest.mark.parametrize("name", ["lstm", "ln_lstm_regularised", "gru", "ln_gru_regularised"])
def test_graph_capture_runs_the_triton_kernels_as_custom_ops(name):
    """Under torch.export (and compile) the Triton path is one rnnkit::triton_* op per layer; the
    exported program equals the eager Triton layer, values and gradients through the op."""
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(CELLS[name](H), backend="triton").to(DEVICE, torch.float64).eval()
    x = torch.randn(B, T, I, device=DEVICE, dtype=torch.float64)
    program = torch.export.export(layer, (x,))
    op = "rnnkit.triton_lstm_forward" if "lstm" in name else "rnnkit.triton_gru_forward"
    assert [str(n.target) for n in program.graph.nodes].count(f"{op}.default") == 1
    torch.testing.assert_close(program.module()(x)[0], layer(x)[0])
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    xg = x.clone().requires_grad_()
    (got,) = torch.autograd.grad(compiled(xg)[0].square().sum(), xg)
    (want,) = torch.autograd.grad(layer(xg)[0].square().sum(), xg)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", ["ln_lstm_regularised", "peephole_zoneout_c", "ln_gru_regularised"])
def test_double_backward_on_the_triton_path(name):
    """gradgradcheck (float64) on the Triton backend: the Functions' backward differentiates the
    engine's plain form when a graph of it is asked for, as the fast engine's do."""
    layer = rnnkit.Recurrent(CELLS[name](H), backend="triton").to(DEVICE, torch.float64).eval()
    assert layer.explain(torch.zeros(1, T, I, dtype=torch.float64, device=DEVICE)).name == "triton"
    x = torch.randn(B, T, I, dtype=torch.float64, device=DEVICE, requires_grad=True)
    weight = next(layer.parameters())
    assert torch.autograd.gradgradcheck(lambda x, w: layer(x)[0] * w.sum(), (x, weight), fast_mode=True)


@pytest.mark.parametrize("gates", [2, 3], ids=["mingru", "minlstm"])
@pytest.mark.parametrize("lengths", [None, [70, 1, 33]], ids=["full", "lengths"])
def test_fused_min_scan_equals_the_linear_scan(gates, lengths):
    """minGRU/minLSTM's fused Triton scan (coefficients, chunked scan and its adjoint in three kernels
    each way) against the same recurrence in torch ops, over several chunks, values and gradients."""
    from rnnkit.scan.parallel import min_scan_plain as _plain
    from rnnkit.scan.triton.min_scan import min_scan

    torch.manual_seed(1)
    T, B, H = 70, 3, 5  # 16-step chunks: 5 chunks, the last one partial
    x = torch.randn(T, B, gates * H, dtype=torch.float64, device=DEVICE, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.float64, device=DEVICE, requires_grad=True)
    lens = None if lengths is None else torch.tensor(lengths, device=DEVICE)
    got, want = min_scan(x, h0, lens, gates), _plain(x, h0, lens, gates)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    gy = torch.randn_like(got)
    got_grads = torch.autograd.grad(got, (x, h0), gy, retain_graph=True)
    for a, b in zip(got_grads, torch.autograd.grad(want, (x, h0), gy, retain_graph=True), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    (a,), (b,) = torch.autograd.grad(got.sum(), x, retain_graph=True), torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)  # an expanded (stride-0) incoming gradient
    if lengths is not None:  # past each end the state stays at the end, and no gradient reaches x there
        torch.testing.assert_close(got[1:, 1], got[0, 1].expand(T - 1, H))
        assert torch.autograd.grad(got[:, 1].sum(), x)[0][1:, 1].abs().max() == 0


def test_fused_min_scan_gradcheck_and_double_backward():
    from rnnkit.scan.triton.min_scan import min_scan

    x = torch.randn(20, 2, 6, dtype=torch.float64, device=DEVICE, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, h: min_scan(x, h, None, 2), (x, h0), fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda x, h: min_scan(x, h, None, 2), (x, h0), fast_mode=True)


def test_fused_min_scan_float32_at_long_t():
    """float32 over 2,000 steps (125 chunks) stays within 1e-5 of float64."""
    from rnnkit.scan.parallel import min_scan_plain as _plain
    from rnnkit.scan.triton.min_scan import min_scan

    torch.manual_seed(2)
    x = torch.randn(2000, 1, 6, device=DEVICE)
    h0 = torch.randn(1, 2, device=DEVICE)
    want = _plain(x.double(), h0.double(), None, 3)
    torch.testing.assert_close(min_scan(x, h0, None, 3).double(), want, atol=1e-5, rtol=1e-5)


def test_cuda_graphs_capture_a_signature_on_its_second_call(monkeypatch):
    """A loop's first call with a new signature runs as plain launches, the second captures, later
    ones replay; at most MAX_GRAPHS graphs are kept (oldest dropped). The capture itself is faked
    here (no GPU needed): the GPU test checks replayed values."""
    from rnnkit.scan.triton import graphs

    made = []

    class FakeGraph:
        def __init__(self, fn, inputs, scalars):
            made.append(tuple(inputs[0].shape))
            self.fn, self.scalars = fn, scalars

        def __call__(self, inputs):
            return ("replayed", *self.fn(*inputs, *self.scalars))

    monkeypatch.setattr(graphs, "_Graph", FakeGraph)
    monkeypatch.setattr(graphs, "enabled", lambda x, steps: True)
    monkeypatch.setattr(graphs, "MAX_GRAPHS", 2)
    graphs.clear()

    def loop(x, scale):
        return (x * scale,)

    x = torch.ones(3)
    assert torch.equal(graphs.run(loop, (x,), (2.0,), 10)[0], x * 2) and not made  # plain launches
    assert graphs.run(loop, (x,), (2.0,), 10)[0] == "replayed" and made == [(3,)]  # captured
    assert graphs.run(loop, (x,), (2.0,), 10)[0] == "replayed" and made == [(3,)]  # replayed, no new capture
    assert isinstance(graphs.run(loop, (x,), (3.0,), 10)[0], torch.Tensor)  # another signature: plain first
    for n in (4, 5, 4, 5):
        graphs.run(loop, (torch.ones(n),), (2.0,), 10)
    assert made == [(3,), (4,), (5,)] and len(graphs._graphs) == 2  # the oldest graph dropped
    graphs.clear()
