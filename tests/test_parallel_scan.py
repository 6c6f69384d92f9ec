"""The parallel scans of rnnkit.scan.parallel against a plain loop over h_t = a_t h_{t-1} + b_t:
values (negative and zero coefficients, chunk boundaries, reversed, lengths), float64 gradcheck,
and float32 accuracy of the log-space scans at T = 65,536."""

import pytest
import torch

from rnnkit.scan.parallel import heinsen_scan, linear_scan, log_scan

F64 = torch.float64


def loop(a, b, h0, reverse=False):
    """The reference: one step at a time."""
    out = [None] * a.size(0)
    h = h0
    for t in reversed(range(a.size(0))) if reverse else range(a.size(0)):
        h = a[t] * h + b[t]
        out[t] = h
    return torch.stack(out)


def masked_loop(a, b, h0, lengths):
    """Each sequence b alone, to its own end; zeros after it. Returns (h, h_last)."""
    h = torch.zeros_like(b)
    last = []
    for i, n in enumerate(lengths.tolist()):
        h[:n, i] = loop(a[:n, i], b[:n, i], h0[i])
        last.append(h[n - 1, i])
    return h, torch.stack(last)


# T around the plain-loop limit (32), chunk sizes that do and do not divide T, and 1
@pytest.mark.parametrize("T", [1, 7, 32, 33, 100, 1000, 1025])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_equals_loop_with_negative_and_zero_coefficients(T, reverse):
    a = torch.randn(T, 3, 4, dtype=F64) * 1.2  # |a| > 1 in places, negative in about half
    a[::5, 0] = 0.0  # a zero coefficient forgets the past
    b, h0 = torch.randn(T, 3, 4, dtype=F64), torch.randn(3, 4, dtype=F64)
    h, last = linear_scan(a, b, h0, reverse=reverse)
    ref = loop(a, b, h0, reverse)
    torch.testing.assert_close(h, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(last, ref[0] if reverse else ref[-1], rtol=1e-9, atol=1e-9)


def test_linear_scan_float32_and_default_h0():
    a, b = torch.rand(300, 2, 5) * 2 - 1, torch.randn(300, 2, 5)
    h, _ = linear_scan(a, b)
    torch.testing.assert_close(h, loop(a, b, torch.zeros(2, 5)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scan", ["linear", "log"])
def test_lengths_freeze_the_state_and_zero_the_outputs(scan):
    T = 70
    lengths = torch.tensor([70, 1, 33, 64])
    log_a = -torch.rand(T, 4, 3, dtype=F64) * 2
    log_b = torch.randn(T, 4, 3, dtype=F64)
    h0 = torch.randn(4, 3, dtype=F64)
    if scan == "linear":
        h, last = linear_scan(log_a.exp(), log_b.exp(), h0, lengths)
    else:
        h, last = log_scan(log_a, log_b, h0, lengths, chunk=16)
    ref, ref_last = masked_loop(log_a.exp(), log_b.exp(), h0, lengths)
    torch.testing.assert_close(h, ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(last, ref_last, rtol=1e-9, atol=1e-12)
    assert (h[33:, 2] == 0).all() and (h[1:, 1] == 0).all()


@pytest.mark.parametrize("T", [1, 5, 64, 200])
@pytest.mark.parametrize("chunk", [1, 16, 64])
def test_log_scans_equal_loop(T, chunk):
    log_a, log_b = -torch.rand(T, 2, 3, dtype=F64) * 3, torch.randn(T, 2, 3, dtype=F64)
    h0 = torch.randn(2, 3, dtype=F64)  # any sign: h0 enters linearly
    ref = loop(log_a.exp(), log_b.exp(), h0)
    torch.testing.assert_close(heinsen_scan(log_a, log_b, h0), ref, rtol=1e-10, atol=1e-12)
    h, last = log_scan(log_a, log_b, h0, chunk=chunk)
    torch.testing.assert_close(h, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(last, ref[-1])


@pytest.mark.parametrize("T", [5, 40])
def test_linear_scan_gradcheck(T):
    a = torch.randn(T, 2, 3, dtype=F64, requires_grad=True)
    b = torch.randn(T, 2, 3, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=F64, requires_grad=True)
    lengths = torch.tensor([T, 2])
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0), (a, b, h0))
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0, reverse=True), (a, b, h0))
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0, lengths), (a, b, h0))


def test_log_scans_gradcheck():
    log_a = (-torch.rand(37, 2, 3, dtype=F64) * 2).requires_grad_()
    log_b = torch.randn(37, 2, 3, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=F64, requires_grad=True)
    lengths = torch.tensor([20, 37])
    assert torch.autograd.gradcheck(lambda a, b, h0: log_scan(a, b, h0, lengths, chunk=8), (log_a, log_b, h0))
    assert torch.autograd.gradcheck(heinsen_scan, (log_a, log_b, h0))


def test_log_scan_stays_accurate_at_65536_steps_in_float32():
    """Chunking keeps log prefix sums short: float32 stays near float64 where one
    unchunked Heinsen scan has drifted (|a*_T| ~ 45,000 here)."""
    T, N = 65536, 4
    log_a = -torch.rand(T, N, dtype=F64) * 1.4
    log_b = torch.randn(T, N, dtype=F64)
    ref, _ = linear_scan(log_a.exp(), log_b.exp())  # float64
    la, lb = log_a.float().requires_grad_(), log_b.float().requires_grad_()
    h, last = log_scan(la, lb)
    assert torch.isfinite(h).all()
    rel = ((h.double() - ref).abs() / ref.abs()).max().item()
    assert rel < 1e-4, rel
    (h.sum() + last.sum()).backward()
    assert torch.isfinite(la.grad).all() and torch.isfinite(lb.grad).all()
    drift = ((heinsen_scan(la.detach(), lb.detach()).double() - ref).abs() / ref.abs()).max().item()
    assert drift > rel  # what the chunking buys


def test_errors_name_the_argument():
    a = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"a and b must have the same shape"):
        linear_scan(a, torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 3\)"):
        linear_scan(a, a, torch.zeros(3))
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        linear_scan(a, a, lengths=torch.tensor([5, 5, 5]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=5\]"):
        linear_scan(a, a, lengths=torch.tensor([6, 1]))
    with pytest.raises(ValueError, match="reverse=True takes no lengths"):
        linear_scan(a, a, lengths=torch.tensor([5, 1]), reverse=True)
    with pytest.raises(TypeError, match="log_a must be a floating-point"):
        log_scan(torch.ones(5, 2, dtype=torch.long), a[:, 0])
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        log_scan(a, a, chunk=0)
