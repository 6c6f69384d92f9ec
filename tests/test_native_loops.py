"""The fast engine's C++ loops (``rnnkit/scan/fast/csrc/``) against its Python
loops: every LSTM/GRU/Elman/IndRNN option, outputs, final states and every gradient (C++ forward and
backward against the Python forward and backward); saturated and NaN inputs; and the
fallback when the build fails: the Python loops run and ``explain()`` says why."""

import contextlib
import shutil

import pytest
import torch

import rnnkit
from rnnkit.cells import IndRNNCell, LayerNormGRUCell, LayerNormLSTMCell, PeepholeLSTMCell
from rnnkit.scan.fast import native
from rnnkit.scan.fast.native import native_ops, python_loops

if shutil.which("c++") is None and shutil.which("g++") is None:
    pytest.skip("no C++ compiler: the C++ loops cannot be built here", allow_module_level=True)

B, T, I, H = 3, 7, 4, 6
LENGTHS = [7, 2, 5]
REG = {"recurrent_dropout": 0.3, "zoneout": (0.2, 0.4)}
CELLS = {
    "lstm": lambda: rnnkit.LSTMCell(I, H),
    "lstm_proj": lambda: rnnkit.LSTMCell(I, H, proj_size=3),
    "ln_lstm_all": lambda: LayerNormLSTMCell(I, H, peephole=True, proj_size=3, **REG),
    "ln_lstm": lambda: LayerNormLSTMCell(I, H, **REG),
    "peephole": lambda: PeepholeLSTMCell(I, H, **REG),
    "lstm_zoneout_c_only": lambda: LayerNormLSTMCell(I, H, layer_norm=False, zoneout=(0.0, 0.3)),
    "gru": lambda: rnnkit.GRUCell(I, H),
    "ln_gru": lambda: LayerNormGRUCell(I, H, recurrent_dropout=0.3, zoneout=0.2),
    "gru_no_bias": lambda: LayerNormGRUCell(I, H, bias=False, layer_norm=False, recurrent_dropout=0.3),
    "elman": lambda: rnnkit.ElmanCell(I, H),
    "elman_relu": lambda: rnnkit.ElmanCell(I, H, nonlinearity="relu", bias=False),
    "indrnn": lambda: IndRNNCell(I, H, recurrent_dropout=0.3, zoneout=0.2),
}


@pytest.fixture(scope="module", autouse=True)
def built():
    ops = native_ops()
    assert ops is not None, f"the C++ loops should build on a machine with a compiler: {native.BUILD['error']}"


def run(layer, x, lengths, python: bool):
    torch.manual_seed(11)  # the same dropout and zoneout masks in both runs
    x = x.clone().requires_grad_()
    layer.zero_grad()
    with python_loops() if python else contextlib.nullcontext():  # forward and backward loops alike
        out, final = layer(x, lengths=lengths)
        final = final if isinstance(final, tuple) else (final,)
        weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        ((out * weights).sum() + sum((f * f).sum() for f in final)).backward()
    return [out, *final, x.grad] + [p.grad.clone() for p in layer.parameters()]


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpp_loops_equal_python_loops(name, training, dtype):
    """Stacked, bidirectional, with lengths: float64 to 1e-10, float32 to 3e-5, relative to each
    tensor's largest entry (the C++ loops' exp/tanh are polynomials, not libm's or Sleef's, and
    they sum the LayerNorm gradients in another order; the layer-normalised stacks amplify
    rounding: the largest differences seen were 4e-13 (float64) and 1.3e-5 (float32) of the
    gradient's largest entry)."""
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(CELLS[name](), num_layers=2, bidirectional=True, backend="fast").to(dtype)
    layer.train(training)
    x = torch.randn(B, T, I, dtype=dtype) * 2
    tol = 1e-10 if dtype == torch.float64 else 3e-5
    for k, (a, b) in enumerate(zip(run(layer, x, LENGTHS, False), run(layer, x, LENGTHS, True), strict=True)):
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a, b, atol=tol * scale, rtol=tol,
                                   msg=lambda m, k=k: f"{name} training={training}: item {k}\n{m}")


@pytest.mark.parametrize("name", ["ln_lstm_all", "gru", "elman", "indrnn"])
def test_saturated_and_nan_inputs_as_in_python(name):
    """Gates driven far into saturation give the Python loops' 0/1/±1 (no overflow to NaN), and a
    NaN in one sequence stays in that sequence, as in the Python loops."""
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(CELLS[name](), backend="fast").double().eval()
    x = torch.randn(B, T, I, dtype=torch.float64) * 1e4
    x[1, 3, 0] = float("nan")
    with torch.no_grad():
        out, _ = layer(x)
        with python_loops():
            want, _ = layer(x)
    assert torch.equal(out.isnan(), want.isnan()) and out[0].isfinite().all()
    torch.testing.assert_close(out.nan_to_num(), want.nan_to_num(), atol=1e-12, rtol=1e-12)


def test_long_sequences_and_wide_batches_use_threads_alike():
    """A batch wide enough for the elementwise passes to be split over threads gives the same
    result as the Python loops (float64): the forward, and the backward with every LSTM option,
    whose LayerNorm weight gradients are summed per thread."""
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(LayerNormLSTMCell(8, 256, peephole=True), backend="fast").double().eval()
    x = torch.randn(200, 5, 8, dtype=torch.float64)
    with torch.no_grad():
        out, (h, c) = layer(x)
        with python_loops():
            want, (wh, wc) = layer(x)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(c, wc, atol=1e-12, rtol=1e-12)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:  # 96 rows of 4H = 256: three chunks of 32 rows in each backward pass
        cell = LayerNormLSTMCell(8, 64, peephole=True, proj_size=48, **REG)
        layer = rnnkit.Recurrent(cell, backend="fast").double().train()
        x = torch.randn(96, 6, 8, dtype=torch.float64)
        lengths = torch.randint(1, 7, (96,))
        for k, (a, b) in enumerate(zip(run(layer, x, lengths, False), run(layer, x, lengths, True), strict=True)):
            torch.testing.assert_close(a, b, atol=1e-10 * max(1.0, b.abs().max().item()), rtol=1e-10,
                                       msg=lambda m, k=k: f"item {k}\n{m}")
    finally:
        torch.set_num_threads(threads)


def test_explain_says_which_loops_run():
    layer = rnnkit.LSTM(I, H, layer_norm=True)
    assert "its time loops in C++" in layer.explain(torch.zeros(1, 1, I)).path


def test_a_failed_build_falls_back_and_says_why(monkeypatch):
    """No compiler, a compile error, RNNKIT_NATIVE=0: import and forward still work on the Python
    loops, and explain() gives the reason."""

    def broken():
        raise RuntimeError("Error building extension 'rnnkit_steps': [1/2] c++ ...\nsteps.cpp:1: error: no luck")

    monkeypatch.setattr(native, "BUILD", {"ops": None, "error": None, "seconds": None, "tried": False})
    monkeypatch.setattr(native, "_build", broken)
    assert native_ops() is None
    assert "did not build" in native.native_unavailable() and "error: no luck" in native.native_unavailable()
    layer = rnnkit.LSTM(I, H, layer_norm=True, batch_first=True)
    out, _ = layer(torch.randn(B, T, I))
    assert out.shape == (B, T, H)
    assert "its time loops in Python, since the C++ step loops did not build" in layer.explain().path

    monkeypatch.setattr(native, "BUILD", {"ops": None, "error": None, "seconds": None, "tried": False})
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    assert native_ops() is None and "RNNKIT_NATIVE=0" in native.native_unavailable()


def test_a_compiler_without_openmp_still_builds_the_loops(monkeypatch):
    """The threaded build fails (a compiler without OpenMP): the loops are built without it,
    run on one thread per pass, and say so."""
    ops = native_ops()
    tried = []

    def build(threaded=True):
        tried.append(threaded)
        if threaded:
            raise RuntimeError("c++: error: unsupported option '-fopenmp'")
        native.BUILD["ops"] = ops

    monkeypatch.setattr(native, "BUILD", {"ops": None, "error": None, "seconds": None, "tried": False})
    monkeypatch.setattr(native, "_build", build)
    assert native_ops() is ops and tried == [True, False]
    assert native.native_unavailable() is None and "without OpenMP" in native.BUILD["serial"]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpp_linear_scan_equals_the_chunked_scan_and_the_loop(reverse, dtype):
    """``h_t = a_t h_{t-1} + b_t`` over 1,000 steps (the chunked Python scan's regime), any real
    ``a`` (negative and zero too): the C++ pass, the chunked scan and a plain loop agree."""
    from rnnkit.scan.parallel import _plain_scan, _scan_core

    torch.manual_seed(0)
    a = torch.empty(1000, 37, dtype=dtype).uniform_(-1.05, 1.05)
    a[::97] = 0
    b, h0 = torch.randn(1000, 37, dtype=dtype), torch.randn(37, dtype=dtype)
    got = _scan_core(a, b, h0, reverse)
    with python_loops():
        chunked = _scan_core(a, b, h0, reverse)
    loop = _plain_scan(a, b, h0, reverse)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(got, loop, atol=tol, rtol=tol)
    torch.testing.assert_close(chunked, loop, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", ["lstm", "ln_lstm", "gru", "ln_gru"])
def test_onednn_packed_gemms_equal_the_reference(name):
    """At H = 256 the recurrent GEMMs run on oneDNN's packed weights (forward and backward; the
    LSTM family's C++ loops only above 32 rows, below which their own kernel runs); the layer still
    equals the sequential reference (float32, relative to each tensor's largest entry)."""
    from rnnkit.cells._onednn import packed_weight

    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch was built without oneDNN")
    hidden, batch = 256, 40
    assert packed_weight(torch.zeros(4 * hidden, hidden), batch) is not None  # the path under test
    make = {"lstm": lambda: rnnkit.LSTMCell(I, hidden), "ln_lstm": lambda: LayerNormLSTMCell(I, hidden, **REG),
            "gru": lambda: rnnkit.GRUCell(I, hidden), "ln_gru": lambda: LayerNormGRUCell(I, hidden, zoneout=0.2)}[name]
    torch.manual_seed(0)
    fast = rnnkit.Recurrent(make(), backend="fast").train()
    ref = rnnkit.Recurrent(make(), backend="sequential").train()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(batch, T, I)
    lengths = [7, 3, 5, 1] * (batch // 4)
    want = run(ref, x, lengths, False)
    for python in (False, True):  # the C++ loops, and the Python loops' packed GEMMs (their fallback)
        got = run(fast, x, lengths, python)
        for k, (a, b) in enumerate(zip(got, want, strict=True)):
            scale = max(1.0, b.abs().max().item())
            torch.testing.assert_close(a, b, atol=1e-5 * scale, rtol=1e-4,
                                       msg=lambda m, k=k, p=python: f"{name} python={p}: item {k}\n{m}")


def test_a_killed_builds_lock_is_cleared(monkeypatch, tmp_path):
    """torch's extension builder waits for its lock file to go; one left by a build that was killed
    would make every later first use wait forever. A lock older than STALE_LOCK_S is removed."""
    import os
    import time

    from torch.utils import cpp_extension

    calls = []
    monkeypatch.setattr(cpp_extension, "load", lambda **kw: calls.append(kw["name"]))
    name_dirs = []

    def build_dir(name, verbose=False):
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        (d / "lock").touch()
        old = time.time() - native.STALE_LOCK_S - 5
        os.utime(d / "lock", (old, old))
        name_dirs.append(d)
        return str(d)

    monkeypatch.setattr(cpp_extension, "_get_build_directory", build_dir)
    monkeypatch.setattr(native, "BUILD", {"ops": None, "error": None, "seconds": None, "tried": False})
    native._build()
    assert calls and not (name_dirs[0] / "lock").exists()


@pytest.mark.parametrize("norm", [False, True])
def test_input_projections_on_onednn_equal_f_linear(norm):
    """The whole-sequence input projection (and its input gradient) runs on oneDNN at these sizes;
    values and every gradient equal ``F.linear`` (+ ``F.layer_norm``) in float32."""
    from rnnkit.cells._linear import linear, linear_norm
    from rnnkit.cells._onednn import linear_rows

    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch was built without oneDNN")
    torch.manual_seed(0)
    x = torch.randn(40, 8, 128, requires_grad=True)  # (T, B, I): 320 rows
    w = torch.randn(512, 128, requires_grad=True) / 11
    g, b = torch.randn(512, requires_grad=True), torch.randn(512, requires_grad=True)
    assert linear_rows(x.detach().view(-1, 128), w.detach()) is not None  # the path under test
    if norm:
        got = linear_norm(x, w, g, b, 1e-5)
        want = torch.nn.functional.layer_norm(torch.nn.functional.linear(x, w), (512,), g, b, 1e-5)
    else:
        got, want = linear(x, w, b), torch.nn.functional.linear(x, w, b)
    dy = torch.randn_like(want)
    grads = torch.autograd.grad(got, (x, w, g, b) if norm else (x, w, b), dy)
    want_grads = torch.autograd.grad(want, (x, w, g, b) if norm else (x, w, b), dy)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    for a, e in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(a, e, atol=1e-3 * max(1.0, e.abs().max().item()), rtol=1e-4)


@pytest.mark.parametrize(("weight", "bias"), [(True, True), (True, False), (False, False)])
def test_row_layer_norm_kernels_equal_aten(weight, bias):
    """The C++ row LayerNorm that the normalised input projections use: values and every gradient
    equal F.layer_norm(F.linear(...)) in float64 to 1e-12, over enough rows (600 of 64) to be split
    over two threads, whose weight and bias gradients are summed per thread; gradcheck passes."""
    from rnnkit.cells import _linear

    assert _linear._row_norm_ops(torch.zeros(1, dtype=torch.float64)) is not None  # the path under test
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        x = torch.randn(75, 8, 16, dtype=torch.float64, requires_grad=True)
        w = torch.randn(64, 16, dtype=torch.float64, requires_grad=True)
        g = torch.randn(64, dtype=torch.float64, requires_grad=True) if weight else None
        b = torch.randn(64, dtype=torch.float64, requires_grad=True) if bias else None
        got = _linear.linear_norm(x, w, g, b, 1e-5)
        want = torch.nn.functional.layer_norm(torch.nn.functional.linear(x, w), (64,), g, b, 1e-5)
        inputs = [t for t in (x, w, g, b) if t is not None]
        dy = torch.randn_like(want)
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
        for a, e in zip(torch.autograd.grad(got, inputs, dy), torch.autograd.grad(want, inputs, dy), strict=True):
            torch.testing.assert_close(a, e, atol=1e-11, rtol=1e-11)
        small = [t[:3, :2].detach().clone().requires_grad_() if t is x else t for t in inputs]
        def fn(*a):
            return _linear.linear_norm(a[0], a[1], a[2] if weight else None, a[-1] if bias else None, 1e-5)
        assert torch.autograd.gradcheck(fn, small)
    finally:
        torch.set_num_threads(threads)


def test_row_layer_norm_kernels_name_the_bad_shape():
    ops = native_ops()
    z = torch.randn(5, 8)
    with pytest.raises(RuntimeError, match=r"weight and bias need n = 8"):
        ops.layer_norm_rows(z, torch.ones(7), None, 1e-5, torch.empty(5, 8), torch.empty(5), torch.empty(5))
    with pytest.raises(RuntimeError, match=r"a row per thread"):
        ops.layer_norm_rows_backward(z, z, torch.zeros(5), torch.ones(5), torch.ones(8), torch.empty(5, 8),
                                     torch.empty(0, 8), torch.empty(0, 8))


@pytest.mark.parametrize(("dtype", "hidden", "batch"), [(torch.float64, 16, 13), (torch.float64, 16, 32),
                                                         (torch.float32, 32, 12)])
def test_small_batch_recurrent_gemm_equals_python_loops(dtype, hidden, batch):
    """With few rows (B <= 32) and 4H, H multiples of the column block (16 doubles, 32 floats) the
    per-step recurrent GEMMs, forward and backward, run in the register-blocked kernel of common.h
    (rows in blocks of 8, 4 and 1; columns over two threads): equal to the Python loops' torch.mm,
    with recurrent dropout (the GEMM's input is then the dropped h) and lengths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        for cell in (rnnkit.LSTMCell(5, hidden), LayerNormLSTMCell(5, hidden, recurrent_dropout=0.3)):
            layer = rnnkit.Recurrent(cell, backend="fast").to(dtype).train()
            x = torch.randn(batch, 9, 5, dtype=dtype)
            lengths = torch.randint(1, 10, (batch,))
            tol, name = (1e-10 if dtype == torch.float64 else 3e-5), type(cell).__name__
            for k, (a, b) in enumerate(zip(run(layer, x, lengths, False), run(layer, x, lengths, True), strict=True)):
                torch.testing.assert_close(a, b, atol=tol * max(1.0, b.abs().max().item()), rtol=tol,
                                           msg=lambda m, k=k, name=name: f"{name} item {k}\n{m}")
    finally:
        torch.set_num_threads(threads)
