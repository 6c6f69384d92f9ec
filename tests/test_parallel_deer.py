"""quasi-DEER GRU against the sequential GRU: the unrolled step and its Jacobian diagonal, values
(with lengths, stacked, bidirectional), implicit-function-theorem gradients, and both fallbacks
(forward not converged, adjoint not converged)."""

import math
import warnings

import pytest
import torch

import rnnkit
import rnnkit.scan.deer as deer
from rnnkit.cells.gru import GRUCell
from rnnkit.scan.deer import DeerGRUCell, DeerNotConverged, deer_gru, deer_solve, gru_eval
from rnnkit.scan.sequential import sequential_scan

F64 = torch.float64


def test_gru_eval_is_the_gru_step_and_its_jacobian_diagonal():
    cell = GRUCell(3, 4, dtype=F64)
    x_proj = cell.project_input(torch.randn(5, 2, 3, dtype=F64))  # (T, B, 3H)
    h_prev = torch.randn(5, 2, 4, dtype=F64)
    f, d = gru_eval(cell, x_proj, h_prev)
    step, _ = cell.step(x_proj.reshape(10, 12), (h_prev.reshape(10, 4),))
    torch.testing.assert_close(f, step.view(5, 2, 4), rtol=0, atol=1e-15)
    for t in range(5):
        for b in range(2):
            xp = x_proj[t, b : b + 1]  # (1, 3H)
            jac = torch.autograd.functional.jacobian(lambda h, xp=xp: cell.step(xp, (h,))[0][0], h_prev[t, b : b + 1])
            torch.testing.assert_close(d[t, b], jac[:, 0].diagonal())  # jac: (H, 1, H)


@pytest.mark.parametrize("bias", [True, False])
def test_equals_sequential_gru_with_lengths(bias):
    cell = GRUCell(8, 32, bias=bias)
    x_proj = cell.project_input(torch.randn(600, 4, 8))
    h0 = torch.randn(4, 32) * 0.5
    lengths = torch.tensor([600, 1, 250, 599])
    for lens in (None, lengths):
        stats = {}
        y, (s,) = deer_gru(cell, x_proj, h0, lens, stats=stats)
        y_ref, (s_ref,) = sequential_scan(cell, x_proj, (h0,), lens)
        assert stats["converged"] and 1 < stats["iterations"] < 100
        torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-4)
        torch.testing.assert_close(s, s_ref, rtol=0, atol=1e-4)
    assert (y[1:, 1] == 0).all()


def _grads(layer_or_fn, params, x, h0, lengths):
    xs, hs = x.clone().requires_grad_(), h0.clone().requires_grad_()
    y, s = layer_or_fn(xs, hs, lengths)
    s = s[0] if isinstance(s, tuple) else s
    weight = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    ((y * weight).sum() + (s**2).sum()).backward()
    grads = [xs.grad, hs.grad] + [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return grads


@pytest.mark.parametrize("bias", [True, False])
def test_implicit_gradients_equal_bptt(bias):
    cell = DeerGRUCell(5, 6, bias=bias, tol=1e-12, max_iter=300, dtype=F64)
    x, h0 = torch.randn(80, 3, 5, dtype=F64), torch.randn(3, 6, dtype=F64)
    lengths = torch.tensor([80, 41, 1])
    params = list(cell.parameters())

    def par(x, h0, lengths):
        return cell.parallel_scan(cell.project_input(x), (h0,), lengths)

    def seq(x, h0, lengths):
        return sequential_scan(cell, cell.project_input(x), (h0,), lengths)

    for gp, gs in zip(_grads(par, params, x, h0, lengths), _grads(seq, params, x, h0, lengths), strict=True):
        torch.testing.assert_close(gp, gs, rtol=1e-8, atol=1e-8)
    assert cell.stats["converged"] and cell.stats["backward_converged"]


def test_gradcheck():
    cell = GRUCell(2, 3, dtype=F64)
    x_proj = cell.project_input(torch.randn(9, 2, 2, dtype=F64)).detach().requires_grad_()
    h0 = torch.randn(2, 3, dtype=F64, requires_grad=True)

    def run(xp, h):
        y, (last,) = deer_gru(cell, xp, h, torch.tensor([9, 4]), tol=1e-13, max_iter=50)
        return y, last

    assert torch.autograd.gradcheck(run, (x_proj, h0))
    assert torch.autograd.gradgradcheck(run, (x_proj, h0))  # double backward: the plain form's autograd


def _deer_layer():
    torch.manual_seed(0)
    return rnnkit.Recurrent(DeerGRUCell(3, 5, tol=1e-12, max_iter=200), num_layers=2, backend="parallel").double()


def test_compile_fullgraph_with_lengths_equals_eager_values_and_gradients():
    """Under torch.compile the Newton solve and its adjoint are the rnnkit::deer_gru_* custom ops."""
    layer = _deer_layer()
    x, lengths = torch.randn(3, 30, 3, dtype=F64), torch.tensor([30, 4, 17])

    def loss(layer, x):
        y, s = layer(x, lengths=lengths)
        return (y.square().sum() + s.square().sum())

    params = list(layer.parameters())
    want = torch.autograd.grad(loss(layer, x), params)
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(loss(compiled, x), params)
    torch.testing.assert_close(compiled(x, lengths=lengths)[0], layer(x, lengths=lengths)[0], rtol=0, atol=1e-10)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)
    ref = rnnkit.Recurrent(GRUCell(3, 5), num_layers=2, backend="sequential").double()  # and it is the GRU
    ref.load_state_dict(layer.state_dict())
    torch.testing.assert_close(compiled(x, lengths=lengths)[0], ref(x, lengths=lengths)[0], rtol=0, atol=1e-9)


def test_export_round_trip_holds_the_op_and_falls_back_inside_it():
    layer = _deer_layer()
    x = torch.randn(2, 12, 3, dtype=F64)
    program = torch.export.export(layer, (x,))
    assert [n for n in program.graph.nodes if "deer_gru_forward" in str(n.target)]
    torch.testing.assert_close(program.module()(x)[0], layer(x)[0], rtol=0, atol=1e-10)
    layer.cells[0].max_iter = 1  # not converged: the op warns and returns the sequential trajectory
    program = torch.export.export(layer, (x,))
    ref = rnnkit.Recurrent(GRUCell(3, 5), num_layers=2, backend="sequential").double()
    ref.load_state_dict(layer.state_dict())
    with pytest.warns(DeerNotConverged):
        got = program.module()(x)[0]
    torch.testing.assert_close(got, ref(x)[0], rtol=0, atol=1e-10)


def test_recurrent_stacked_bidirectional_equals_fused_gru():
    deer_layer = rnnkit.Recurrent(DeerGRUCell(4, 16), num_layers=2, bidirectional=True, backend="parallel")
    gru_layer = rnnkit.Recurrent(GRUCell(4, 16), num_layers=2, bidirectional=True)
    gru_layer.load_state_dict(deer_layer.state_dict())
    assert deer_layer.explain().name == "parallel"
    assert gru_layer.explain().name == "fused"
    x, state = torch.randn(3, 120, 4), torch.randn(4, 3, 16) * 0.5
    lengths = torch.tensor([120, 7, 64])
    y, s = deer_layer(x, state, lengths)
    y_ref, s_ref = gru_layer(x, state, lengths)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-4)
    torch.testing.assert_close(s, s_ref, rtol=0, atol=1e-4)
    assert all(c.stats["converged"] for c in deer_layer.cells)


def test_paths_reported():
    cell = DeerGRUCell(3, 4)
    # same math as the GRU: the vendor kernel may run it under "auto"; "parallel" asks for DEER
    assert cell.fused_reason() is None
    assert rnnkit.Recurrent(cell).explain().name == "fused"
    report = rnnkit.Recurrent(cell, backend="parallel").explain()
    assert report.name == "parallel" and "requested" in report.rejected["fused"]
    copy = cell.replicate(9)
    assert isinstance(copy, DeerGRUCell) and (copy.tol, copy.max_iter, copy.input_size) == (cell.tol, 100, 9)


def test_not_converged_warns_and_returns_the_sequential_result():
    cell = GRUCell(3, 8)
    x_proj = cell.project_input(torch.randn(200, 2, 3))
    h0 = torch.randn(2, 8)
    lengths = torch.tensor([200, 90])
    assert not deer_solve(cell, x_proj, h0, lengths, max_iter=1).converged
    stats = {}
    with pytest.warns(DeerNotConverged, match="did not converge in 1 of max_iter=1"):
        y, (s,) = deer_gru(cell, x_proj, h0, lengths, max_iter=1, stats=stats)
    y_ref, (s_ref,) = sequential_scan(cell, x_proj, (h0,), lengths)
    assert torch.equal(y, y_ref) and torch.equal(s, s_ref)
    assert stats == {"iterations": 1, "converged": False, "delta": stats["delta"]}
    with pytest.warns(DeerNotConverged, match="adjoint"):  # max_iter=1 is too few for the adjoint too
        y.sum().backward()  # the fallback is differentiable
    assert torch.isfinite(cell.weight_hh.grad).all()


def test_diverging_newton_stops_early_and_falls_back():
    cell = GRUCell(3, 8)
    with torch.no_grad():
        cell.weight_hh.mul_(40.0)  # strongly non-contractive: diagonal Newton steps blow up
    x_proj = cell.project_input(torch.randn(3000, 2, 3) * 3)
    sol = deer_solve(cell, x_proj, torch.zeros(2, 8), max_iter=500)
    assert not sol.converged and sol.iterations < 500 and not math.isfinite(sol.delta)  # stopped at inf/nan
    with pytest.warns(DeerNotConverged):
        y, _ = deer_gru(cell, x_proj, torch.zeros(2, 8), max_iter=5)
    assert torch.equal(y, sequential_scan(cell, x_proj, (torch.zeros(2, 8),))[0])


def test_adjoint_not_converged_falls_back_to_bptt(monkeypatch):
    cell = GRUCell(3, 5, dtype=F64)
    x, h0 = torch.randn(40, 2, 3, dtype=F64), torch.randn(2, 5, dtype=F64)
    lengths = torch.tensor([40, 13])
    params = list(cell.parameters())
    ref = _grads(lambda x, h, n: sequential_scan(cell, cell.project_input(x), (h,), n), params, x, h0, lengths)
    xs, hs = x.clone().requires_grad_(), h0.clone().requires_grad_()
    y, (s,) = deer_gru(cell, cell.project_input(xs), hs, lengths, tol=1e-12, max_iter=200)

    def broken(a, b, h0=None, lengths=None, *, reverse=False):  # the adjoint's scan returns nan
        return torch.full_like(b, float("nan")), b[0]

    monkeypatch.setattr(deer, "linear_scan", broken)
    weight = torch.linspace(-1, 1, y.numel(), dtype=F64).view_as(y)
    with pytest.warns(DeerNotConverged, match="adjoint did not converge"):
        ((y * weight).sum() + (s**2).sum()).backward()
    for got, want in zip([xs.grad, hs.grad] + [p.grad for p in params], ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)


def test_converged_runs_do_not_warn():
    cell = DeerGRUCell(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, _ = rnnkit.Recurrent(cell, backend="parallel")(torch.randn(2, 50, 3))
        y.sum().backward()


def test_errors():
    cell = GRUCell(3, 4)
    x_proj, h0 = torch.randn(5, 2, 12), torch.zeros(2, 4)
    with pytest.raises(TypeError, match="cell must be a GRUCell"):
        deer_gru(rnnkit.LSTMCell(3, 4), x_proj, h0)
    with pytest.raises(ValueError, match=r"x_proj must have shape \(T, B, 12\)"):
        deer_gru(cell, x_proj[..., :8], h0)
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 4\)"):
        deer_gru(cell, x_proj, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="max_iter must be a positive int"):
        deer_gru(cell, x_proj, h0, max_iter=0)
    with pytest.raises(ValueError, match="tol must be positive"):
        DeerGRUCell(3, 4, tol=0.0)
