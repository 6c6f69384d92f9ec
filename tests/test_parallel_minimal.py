"""minGRU / minLSTM: the step is the paper's equations; every parallel scan equals the step loop
(values and gradients, with lengths, stacked and bidirectional through Recurrent); no inf/nan at
T = 65,536."""

import pytest
import torch

import rnnkit
from rnnkit.cells import make_cell
from rnnkit.cells.minimal import MinGRUCell, MinLSTMCell, g, log_g
from rnnkit.scan.fast.native import BUILD, native_ops, python_loops
from rnnkit.scan.parallel import minimal_scan
from rnnkit.scan.sequential import sequential_scan

F64 = torch.float64
CELLS = [MinGRUCell, MinLSTMCell]
SCANS = ["log", "linear", "auto"]


def test_g_and_log_g():
    x = torch.linspace(-30, 30, 601, dtype=F64)
    expected = torch.where(x >= 0, x + 0.5, torch.sigmoid(x))
    torch.testing.assert_close(g(x), expected)
    torch.testing.assert_close(log_g(x), expected.log())
    assert (g(x) > 0).all()


def test_steps_are_the_papers_equations():
    x, h = torch.randn(4, 3, dtype=F64), torch.randn(4, 5, dtype=F64)
    gru = MinGRUCell(3, 5, dtype=F64)
    W, bias = gru.weight_ih, gru.bias_ih
    z = torch.sigmoid(x @ W[:5].t() + bias[:5])
    h_tilde = g(x @ W[5:].t() + bias[5:])
    y, (s,) = gru(x, h)
    torch.testing.assert_close(y, (1 - z) * h + z * h_tilde)
    assert s is y

    lstm = MinLSTMCell(3, 5, dtype=F64)
    W, bias = lstm.weight_ih, lstm.bias_ih
    f = torch.sigmoid(x @ W[:5].t() + bias[:5])
    i = torch.sigmoid(x @ W[5:10].t() + bias[5:10])
    h_tilde = g(x @ W[10:].t() + bias[10:])
    y, _ = lstm(x, h)
    torch.testing.assert_close(y, f / (f + i) * h + i / (f + i) * h_tilde)


@pytest.mark.parametrize("cls", CELLS)
def test_log_coefficients_are_the_logs_of_the_coefficients(cls):
    cell = cls(3, 4, dtype=F64)
    x_proj = cell.project_input(torch.randn(50, 2, 3, dtype=F64) * 10)  # saturated gates too
    a, b = cell.coefficients(x_proj)
    log_a, log_b = cell.log_coefficients(x_proj)
    torch.testing.assert_close(log_a, a.log())
    torch.testing.assert_close(log_b, b.log())


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_parallel_scan_equals_step_loop(cls, scan, dtype):
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    cell = cls(3, 6, scan=scan, dtype=dtype)
    x_proj = cell.project_input(torch.randn(90, 4, 3, dtype=dtype))
    h0 = torch.randn(4, 6, dtype=dtype)
    lengths = torch.tensor([90, 1, 45, 70])
    for lens in (None, lengths):
        y, (s,) = minimal_scan(cell, x_proj, (h0,), lens)
        y_ref, (s_ref,) = sequential_scan(cell, x_proj, (h0,), lens)
        torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)
        torch.testing.assert_close(s, s_ref, rtol=tol, atol=tol)


def _pair(cls, scan, dtype, **layer):
    par = rnnkit.Recurrent(cls(3, 5, scan=scan, dtype=dtype), backend="parallel", **layer)
    seq = rnnkit.Recurrent(cls(3, 5, scan=scan, dtype=dtype), backend="sequential", **layer)
    seq.load_state_dict(par.state_dict())
    return par, seq


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("scan", ["log", "linear"])
def test_recurrent_stacked_bidirectional_with_lengths(cls, scan):
    par, seq = _pair(cls, scan, torch.float32, num_layers=2, bidirectional=True)
    assert str(par.explain()).startswith("path: parallel")
    x = torch.randn(4, 40, 3)
    state = torch.randn(4, 4, 5)  # (L * D, B, H)
    lengths = torch.tensor([40, 3, 17, 1])
    y, s = par(x, state, lengths)
    y_ref, s_ref = seq(x, state, lengths)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s, s_ref, rtol=1e-5, atol=1e-5)
    assert (y[1, 3:] == 0).all()


@pytest.mark.parametrize("cls", CELLS)
def test_streaming_steps_equal_one_parallel_call(cls):
    layer = rnnkit.Recurrent(cls(3, 5), num_layers=2, backend="parallel")
    x = torch.randn(2, 30, 3)
    y, s = layer(x)
    state, ys = None, []
    for t in range(30):
        y_t, state = layer.step(x[:, t], state)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state.state[0], s, rtol=1e-5, atol=1e-5)  # a StepState's stacked state


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("scan", ["log", "linear"])
def test_gradients_equal_the_sequential_reference(cls, scan):
    par, seq = _pair(cls, scan, F64, num_layers=2, bidirectional=True)
    x = torch.randn(3, 25, 3, dtype=F64)
    state = torch.randn(4, 3, 5, dtype=F64)
    lengths = torch.tensor([25, 9, 1])
    grads = []
    for layer in (par, seq):
        xs, s0 = x.clone().requires_grad_(), state.clone().requires_grad_()
        y, s = layer(xs, s0, lengths)
        weight = torch.linspace(-1, 1, y.numel(), dtype=F64).view_as(y)  # a loss that sees every output
        ((y * weight).sum() + (s**2).sum()).backward()
        grads.append([xs.grad, s0.grad] + [p.grad for p in layer.parameters()])
    for gp, gs in zip(*grads, strict=True):
        torch.testing.assert_close(gp, gs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("scan", ["log", "linear"])
def test_gradcheck(cls, scan):
    cell = cls(2, 3, scan=scan, dtype=F64)
    x_proj = torch.randn(12, 2, cell.gates * 3, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=F64, requires_grad=True)
    lengths = torch.tensor([12, 5])

    def run(xp, h):
        y, (last,) = minimal_scan(cell, xp, (h,), lengths)
        return y, last

    assert torch.autograd.gradcheck(run, (x_proj, h0))


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("scan", ["log", "linear"])
def test_stable_at_65536_steps(cls, scan):
    T = 65536
    cell = cls(2, 4, scan=scan)
    x = torch.randn(T, 2, 2) * 8  # large pre-activations: saturated gates, long memories
    x.requires_grad_()
    y, (s,) = minimal_scan(cell, cell.project_input(x), cell.initial_state(2))
    assert torch.isfinite(y).all() and torch.isfinite(s).all()
    (y.mean() + s.sum()).backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in cell.parameters())
    with torch.no_grad():  # against float64 arithmetic
        ref, _ = minimal_scan(cell.double(), cell.project_input(x.double()), cell.initial_state(2))
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-4)


def test_registry_replicate_and_paths():
    cell = make_cell("mingru", 3, 4, scan="log", bias=False)
    assert isinstance(cell, MinGRUCell) and cell.bias_ih is None and cell.scan == "log"
    assert isinstance(make_cell("minlstm", 3, 4), MinLSTMCell)
    copy = cell.replicate(7)
    assert (copy.input_size, copy.scan, copy.bias_ih) == (7, "log", None)
    report = rnnkit.Recurrent(MinLSTMCell(3, 4)).explain()  # backend="auto"
    assert report.name == "parallel" and "no vendor kernel" in report.rejected["fused"]


def test_errors():
    with pytest.raises(ValueError, match="scan must be one of"):
        MinGRUCell(3, 4, scan="fast")
    cell = MinLSTMCell(3, 4)
    with pytest.raises(ValueError, match=r"x_proj must have shape \(T, B, 12\)"):
        minimal_scan(cell, torch.randn(5, 2, 8), cell.initial_state(2))
    with pytest.raises(ValueError, match=r"state\[0\] must have shape \(2, 4\)"):
        minimal_scan(cell, torch.randn(5, 2, 12), (torch.zeros(3, 4),))


@pytest.mark.parametrize("cell_cls", CELLS)
def test_time_chunks_on_cpu_equal_the_step_loop(cell_cls, monkeypatch):
    """On a CPU the linear scan runs the sequence in time chunks (cache-sized); with chunks of 32
    steps, T = 100 and lengths ending inside, between and past chunks, values, final states and
    gradients equal the step loop (float64)."""
    import rnnkit.scan.parallel as parallel

    monkeypatch.setattr(parallel, "CHUNK_ELEMENTS", 32 * 3 * 2 * cell_cls.gates)  # 32 steps at B=3, H=2
    torch.manual_seed(0)
    cell = cell_cls(4, 2, scan="linear", dtype=F64)
    x = torch.randn(100, 3, 2 * cell.gates, dtype=F64, requires_grad=True)
    h0 = torch.randn(3, 2, dtype=F64, requires_grad=True)
    lengths = torch.tensor([100, 64, 7])
    with python_loops():  # the chunks are the path without the C++ loops
        got, (last,) = minimal_scan(cell, x, (h0,), lengths)
    want, (want_last,) = sequential_scan(cell, x, (h0,), lengths)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(last, want_last)
    weights = torch.randn_like(got)
    grads = torch.autograd.grad((got * weights).sum() + last.square().sum(), (x, h0))
    want_grads = torch.autograd.grad((want * weights).sum() + want_last.square().sum(), (x, h0))
    for a, b in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cell_cls", CELLS)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_fused_cpp_scan_equals_the_torch_ops(cell_cls, dtype):
    """minGRU/minLSTM's fused C++ loop (coefficients, scan and adjoint in one pass each way) against
    the same recurrence in torch ops, with lengths, saturated gates and an expanded incoming gradient;
    explain() names it."""
    from rnnkit.scan.parallel import min_scan_plain, native_min_scan

    if native_ops() is None:
        pytest.skip(f"no C++ loops here: {BUILD['error']}")
    torch.manual_seed(3)
    H, gates = 70, cell_cls.gates  # 70: a full 64-channel block and a partial one
    x = (torch.randn(40, 3, gates * H, dtype=dtype) * 4).requires_grad_()
    with torch.no_grad():
        x[:, :, :5] = torch.tensor([-200.0, 200.0, -30.0, 30.0, 0.0], dtype=dtype)  # saturated and zero gates
    h0 = torch.randn(3, H, dtype=dtype, requires_grad=True)
    lens = torch.tensor([40, 13, 1])
    got, want = native_min_scan(x, h0, lens, gates), min_scan_plain(x, h0, lens, gates)
    tol = 1e-12 if dtype == F64 else 2e-6
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    gy = torch.randn_like(got)
    got_grads = torch.autograd.grad((got * gy).sum() + got.sum(), (x, h0))
    want_grads = torch.autograd.grad((want * gy).sum() + want.sum(), (x, h0))
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, atol=tol * max(1.0, b.abs().max().item()), rtol=tol)
    layer = rnnkit.Recurrent(cell_cls(3, 4), backend="parallel")
    assert "fused C++ scan loop" in layer.explain(torch.zeros(1, 1, 3)).path
    assert "fused" not in rnnkit.Recurrent(cell_cls(3, 4, scan="log")).explain(torch.zeros(1, 1, 3)).path


def test_fused_cpp_scan_gradcheck_and_double_backward():
    from rnnkit.scan.parallel import native_min_scan

    if native_ops() is None:
        pytest.skip(f"no C++ loops here: {BUILD['error']}")
    x = torch.randn(9, 2, 9, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=F64, requires_grad=True)
    lens = torch.tensor([9, 4])
    assert torch.autograd.gradcheck(lambda x, h: native_min_scan(x, h, lens, 3), (x, h0))
    assert torch.autograd.gradgradcheck(lambda x, h: native_min_scan(x, h, lens, 3), (x, h0))


def test_fused_scans_check_lengths_like_the_others():
    cell = MinGRUCell(2, 3)  # scan="auto": the fused loop where it is built
    x_proj = torch.randn(5, 2, 6)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=5\], got \[0, 4\]"):
        minimal_scan(cell, x_proj, cell.initial_state(2), torch.tensor([0, 4]))
    shape = r"lengths must have shape \(2,\) for x_proj of shape \(T, B, \.\.\.\) = \(5, 2, 6\)"
    with pytest.raises(ValueError, match=shape):
        minimal_scan(cell, x_proj, cell.initial_state(2), torch.tensor([1]))
