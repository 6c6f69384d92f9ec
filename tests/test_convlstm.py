"""ConvLSTMCell (Shi et al. 2015): an independent reference loop (one conv2d per step, explicit gate
split), torch.nn.LSTMCell as the 1x1-kernel special case, float64 gradcheck, errors, the registry,
and the cell under rnnkit.Recurrent (stacked, bidirectional, lengths, streaming step)."""

import pytest
import torch
import torch.nn.functional as F

import rnnkit
from rnnkit.cells import ConvLSTMCell, make_cell
from rnnkit.init import forget_gate_bias_

D64 = torch.float64
B, T, C_IN, C_H, HGT, WID = 3, 4, 2, 3, 5, 6  # non-square maps catch an H/W swap


# -- the reference, written from the paper's equations, sharing no code with the cell -----------
def random_weights(c_in, c_h, k, *, bias=True, peephole=False, dtype=D64):
    w = {
        "weight_ih": torch.randn(4 * c_h, c_in, k, k, dtype=dtype) * 0.3,
        "weight_hh": torch.randn(4 * c_h, c_h, k, k, dtype=dtype) * 0.3,
    }
    if bias:
        w["bias_ih"] = torch.randn(4 * c_h, dtype=dtype) * 0.3
        w["bias_hh"] = torch.randn(4 * c_h, dtype=dtype) * 0.3
    if peephole:
        w["peephole_weight"] = torch.randn(3, c_h, 1, 1, dtype=dtype) * 0.3
    return w


def weights_of(cell):
    return {n: p.detach().clone() for n, p in cell.named_parameters()}


def load(cell, w):
    with torch.no_grad():
        for name, p in cell.named_parameters():
            p.copy_(w[name])
    return cell


def ref_step(x, h, c, w):
    """One ConvLSTM step, x (B, C_in, H, W), h and c (B, C_h, H, W)."""
    k = w["weight_ih"].shape[-1]
    c_h = w["weight_hh"].shape[1]
    pre = F.conv2d(x, w["weight_ih"], w.get("bias_ih"), padding=k // 2) + F.conv2d(
        h, w["weight_hh"], w.get("bias_hh"), padding=k // 2
    )
    pi, pf, pg, po = (pre[:, n * c_h : (n + 1) * c_h] for n in range(4))
    p = w.get("peephole_weight")
    if p is not None:
        pi = pi + p[0] * c
        pf = pf + p[1] * c
    c_new = torch.sigmoid(pf) * c + torch.sigmoid(pi) * torch.tanh(pg)
    if p is not None:
        po = po + p[2] * c_new
    h_new = torch.sigmoid(po) * torch.tanh(c_new)
    return h_new, c_new


def ref_sequence(xs, h, c, w, reverse=False):
    """xs (L, B, C_in, H, W) -> outputs (L, B, C_h, H, W) in xs' order, final (h, c)."""
    order = range(xs.size(0) - 1, -1, -1) if reverse else range(xs.size(0))
    out = [None] * xs.size(0)
    for t in order:
        h, c = ref_step(xs[t], h, c, w)
        out[t] = h
    return torch.stack(out), (h, c)


def ref_recurrent(layer_weights, x, lengths, h0, c0, directions):
    """A stacked (bi)directional ConvLSTM over batch-first x (B, T, C, H, W), one sequence at a
    time on its own valid prefix. layer_weights[l * directions + d]; h0/c0 (N, B, C_h, H, W).
    Returns output (B, T, D*C_h, H, W) (zero after each length) and h_n, c_n (N, B, C_h, H, W)."""
    n_layers = len(layer_weights) // directions
    outs, h_n, c_n = [], torch.empty_like(h0), torch.empty_like(c0)
    for b in range(x.size(0)):
        L = int(lengths[b])
        inp = x[b, :L].unsqueeze(1)  # (L, 1, C, H, W)
        for layer in range(n_layers):
            per_dir = []
            for d in range(directions):
                k = layer * directions + d
                y, (h, c) = ref_sequence(inp, h0[k, b : b + 1], c0[k, b : b + 1], layer_weights[k], reverse=d == 1)
                per_dir.append(y)
                h_n[k, b], c_n[k, b] = h[0], c[0]
            inp = torch.cat(per_dir, dim=-3)  # channels of the two directions, (L, 1, D*C_h, H, W)
        pad = inp.new_zeros(x.size(1) - L, *inp.shape[2:])
        outs.append(torch.cat([inp[:, 0], pad]))
    return torch.stack(outs), h_n, c_n


# -- the cell against the reference -------------------------------------------------------------
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("peephole", [False, True])
def test_cell_equals_reference_loop(kernel_size, bias, peephole):
    w = random_weights(C_IN, C_H, kernel_size, bias=bias, peephole=peephole)
    cell = load(ConvLSTMCell(C_IN, C_H, kernel_size, bias=bias, peephole=peephole, dtype=D64), w)
    assert set(w) == {n for n, _ in cell.named_parameters()}
    xs = torch.randn(T, B, C_IN, HGT, WID, dtype=D64)
    h0, c0 = torch.randn(2, B, C_H, HGT, WID, dtype=D64)
    want, (want_h, want_c) = ref_sequence(xs, h0, c0, w)

    x_proj = cell.project_input(xs)  # all steps at once
    assert x_proj.shape == (T, B, 4 * C_H, HGT, WID)
    state, ys = (h0, c0), []
    for t in range(T):
        y, state = cell.step(x_proj[t], state)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(state[0], want_h, rtol=0, atol=1e-12)
    torch.testing.assert_close(state[1], want_c, rtol=0, atol=1e-12)
    assert state[0] is ys[-1]

    # forward() is one step; from no state it starts at zeros
    y1, (h1, c1) = cell(xs[0], (h0, c0))
    torch.testing.assert_close(y1, want[0], rtol=0, atol=1e-12)
    z = torch.zeros(B, C_H, HGT, WID, dtype=D64)
    y0, _ = cell(xs[0])
    torch.testing.assert_close(y0, ref_step(xs[0], z, z, w)[0], rtol=0, atol=1e-12)


def test_project_input_any_leading_shape():
    cell = ConvLSTMCell(C_IN, C_H, dtype=D64)
    x = torch.randn(2, 3, 4, C_IN, HGT, WID, dtype=D64)
    out = cell.project_input(x)
    assert out.shape == (2, 3, 4, 4 * C_H, HGT, WID)
    torch.testing.assert_close(out[1, 2], cell.project_input(x[1, 2]), rtol=0, atol=1e-12)
    assert cell.project_input(x[0, 0, 0]).shape == (4 * C_H, HGT, WID)  # no leading dims


def test_kernel_1_is_torch_lstm_cell_at_every_pixel():
    """With a 1x1 kernel each pixel is an independent torch.nn.LSTMCell (same gate order)."""
    cell = ConvLSTMCell(C_IN, C_H, kernel_size=1, dtype=D64)
    ref = torch.nn.LSTMCell(C_IN, C_H, dtype=D64)
    with torch.no_grad():
        ref.weight_ih.copy_(cell.weight_ih[:, :, 0, 0])
        ref.weight_hh.copy_(cell.weight_hh[:, :, 0, 0])
        ref.bias_ih.copy_(cell.bias_ih)
        ref.bias_hh.copy_(cell.bias_hh)
    x = torch.randn(B, C_IN, HGT, WID, dtype=D64)
    h, c = torch.randn(2, B, C_H, HGT, WID, dtype=D64)
    y, (h1, c1) = cell(x, (h, c))

    def pixels(t):  # (B, C, H, W) -> (B*H*W, C)
        return t.permute(0, 2, 3, 1).reshape(-1, t.size(1))

    want_h, want_c = ref(pixels(x), (pixels(h), pixels(c)))
    torch.testing.assert_close(pixels(h1), want_h, rtol=0, atol=1e-12)
    torch.testing.assert_close(pixels(c1), want_c, rtol=0, atol=1e-12)


@pytest.mark.parametrize("peephole", [False, True])
def test_gradcheck_float64(peephole):
    b, c_in, c_h, size, steps = 2, 2, 3, 5, 3
    cell = ConvLSTMCell(c_in, c_h, 3, peephole=peephole, dtype=D64)
    x = torch.randn(steps, b, c_in, size, size, dtype=D64, requires_grad=True)
    h0 = torch.randn(b, c_h, size, size, dtype=D64, requires_grad=True)
    c0 = torch.randn(b, c_h, size, size, dtype=D64, requires_grad=True)
    params = tuple(cell.parameters())  # gradcheck perturbs these in place, so the cell sees it

    def f(x, h0, c0, *_params):
        x_proj = cell.project_input(x)
        state, ys = (h0, c0), []
        for xp in x_proj.unbind(0):
            y, state = cell.step(xp, state)
            ys.append(y)
        return torch.stack(ys), state[1]  # the final h is ys[-1]

    # the peephole cell runs every term: full Jacobians; the plain one: gradcheck's fast mode (v^T J u)
    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), fast_mode=not peephole)


# -- construction, states, errors, registry ------------------------------------------------------
def test_sizes_config_replicate_and_registry():
    cell = ConvLSTMCell(C_IN, C_H, kernel_size=5, bias=False, peephole=True)
    assert (cell.input_size, cell.hidden_size, cell.output_size, cell.state_sizes) == (C_IN, C_H, C_H, (C_H, C_H))
    assert (cell.input_channels, cell.hidden_channels) == (C_IN, C_H)
    assert ConvLSTMCell.feature_dims == 3 and ConvLSTMCell.gate_layout == "ifgo"
    assert cell.fused_mode is None and cell.fused_reason() is not None
    assert cell.config == dict(input_size=C_IN, hidden_size=C_H, kernel_size=5, bias=False, peephole=True)
    assert cell.weight_ih.shape == (4 * C_H, C_IN, 5, 5) and cell.weight_hh.shape == (4 * C_H, C_H, 5, 5)
    assert cell.bias_ih is None and cell.peephole_weight.shape == (3, C_H, 1, 1)
    bound = 1 / (C_H * 25) ** 0.5
    assert all(p.abs().max() <= bound for p in cell.parameters())

    other = cell.to(D64).replicate(input_size=7)
    assert type(other) is ConvLSTMCell and other.input_size == 7 and other.weight_ih.shape == (4 * C_H, 7, 5, 5)
    assert other.config == {**cell.config, "input_size": 7} and other.weight_ih.dtype == D64
    assert not torch.equal(other.weight_hh, cell.weight_hh)  # fresh weights

    made = make_cell("convlstm", C_IN, C_H, kernel_size=1, peephole=True)
    assert isinstance(made, ConvLSTMCell) and made.kernel_size == 1 and made.peephole
    assert rnnkit.cells.CELLS["convlstm"][0] is ConvLSTMCell
    with pytest.raises(ValueError, match="takes no option"):
        make_cell("convlstm", C_IN, C_H, proj_size=2)


def test_initial_and_checked_state():
    cell = ConvLSTMCell(C_IN, C_H, dtype=D64)
    h, c = cell.initial_state(B, input_shape=(C_IN, HGT, WID))
    assert h.shape == c.shape == (B, C_H, HGT, WID) and h.dtype == D64 and not h.any() and not c.any()
    assert cell.initial_state(2, dtype=torch.float32, input_shape=torch.Size([C_IN, 4, 7]))[0].dtype == torch.float32
    with pytest.raises(ValueError, match="input_shape"):
        cell.initial_state(B)
    with pytest.raises(ValueError, match=r"input_shape must end in the spatial size \(H, W\).*got \(5,\)"):
        cell.initial_state(B, input_shape=(HGT,))
    assert cell.initial_state(1, input_shape=(C_H, HGT, WID))[0].shape == (1, C_H, HGT, WID)  # only (H, W) is read

    good = (torch.zeros(B, C_H, HGT, WID), torch.zeros(B, C_H, HGT, WID))
    assert cell.check_state(good, B) == good
    with pytest.raises(ValueError, match="state must be a tuple of 2"):
        cell.check_state(good[0], B)
    with pytest.raises(ValueError, match=r"state\[0\] must have shape \(3, 3, H, W\), got \(3, 3, 5\)"):
        cell.check_state((torch.zeros(B, C_H, HGT), good[1]), B)
    with pytest.raises(ValueError, match=r"h0\[0\] must have shape \(2, 3, H, W\)"):
        cell.check_state(good, 2, name="h0")
    with pytest.raises(ValueError, match=r"state\[1\] must have shape \(3, 3, 5, 6\), got \(3, 3, 5, 5\)"):
        cell.check_state((good[0], torch.zeros(B, C_H, HGT, HGT)), B)  # h and c disagree
    with pytest.raises(ValueError, match=r"state\[0\] must have shape \(3, 3, 4, 4\)"):
        cell.check_state(good, B, spatial_size=(4, 4))


def test_errors_name_the_argument_and_shapes():
    for k in (2, 0, -1, 3.0, True):
        with pytest.raises(ValueError, match="kernel_size must be a positive odd int"):
            ConvLSTMCell(C_IN, C_H, kernel_size=k)
    with pytest.raises(ValueError, match="input_size"):
        ConvLSTMCell(0, C_H)
    with pytest.raises(ValueError, match="hidden_size"):
        ConvLSTMCell(C_IN, 0)
    cell = ConvLSTMCell(C_IN, C_H)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2, H, W\), got \(3, 4, 5, 6\)"):
        cell(torch.randn(B, C_IN + 2, HGT, WID))  # wrong channels
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2, H, W\), got \(3, 2\)"):
        cell(torch.randn(B, C_IN))  # a vector input
    msg = r"project_input: x must have shape \(\.\.\., 2, H, W\), got \(4, 3, 5, 5, 6\)"
    with pytest.raises(ValueError, match=msg):
        cell.project_input(torch.randn(T, B, 5, HGT, WID))
    x = torch.randn(B, C_IN, HGT, WID)
    with pytest.raises(ValueError, match=r"state\[0\] must have shape \(3, 3, 5, 6\), got \(3, 3, 6, 5\)"):
        cell(x, (torch.zeros(B, C_H, WID, HGT), torch.zeros(B, C_H, WID, HGT)))  # maps of another size


def test_init_module_reads_the_gate_layout():
    cell = ConvLSTMCell(C_IN, C_H)
    forget_gate_bias_(cell, 2.0)
    f_rows = slice(C_H, 2 * C_H)  # i, f, g, o
    assert (cell.bias_ih[f_rows] == 2.0).all() and (cell.bias_hh[f_rows] == 0.0).all()
    assert (cell.bias_ih[:C_H] != 2.0).all()


# -- under the driver (rnnkit.Recurrent; needs the driver generalised to feature_dims = 3) --------
def _layer_weights(rec):
    return [weights_of(c) for c in rec.cells]


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent_stacked_with_lengths_equals_reference(bidirectional, with_state):
    D, L = (2 if bidirectional else 1), 2
    cell = ConvLSTMCell(C_IN, C_H, peephole=True, dtype=D64)
    rec = rnnkit.Recurrent(cell, num_layers=L, bidirectional=bidirectional, batch_first=True)
    assert rec.cells[D].input_size == D * C_H  # layer 1 reads the merged channels
    x = torch.randn(B, T, C_IN, HGT, WID, dtype=D64)
    lengths = torch.tensor([T, 2, 3])
    if with_state:
        h0, c0 = torch.randn(2, L * D, B, C_H, HGT, WID, dtype=D64)
        out, (h_n, c_n) = rec(x, (h0, c0), lengths=lengths)
    else:
        h0 = c0 = torch.zeros(L * D, B, C_H, HGT, WID, dtype=D64)
        out, (h_n, c_n) = rec(x, lengths=lengths)
    want, want_h, want_c = ref_recurrent(_layer_weights(rec), x, lengths, h0, c0, D)
    assert out.shape == (B, T, D * C_H, HGT, WID) and h_n.shape == (L * D, B, C_H, HGT, WID)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(h_n, want_h, rtol=0, atol=1e-10)
    torch.testing.assert_close(c_n, want_c, rtol=0, atol=1e-10)
    assert not out[1, 2:].any() and not out[2, 3:].any()  # zero after each length


def test_recurrent_step_streaming_equals_forward():
    rec = rnnkit.Recurrent(ConvLSTMCell(C_IN, C_H, dtype=D64), num_layers=2, batch_first=True)
    x = torch.randn(B, T, C_IN, HGT, WID, dtype=D64)
    want, (want_h, want_c) = rec(x)
    state, ys = None, []
    for t in range(T):
        y, state = rec.step(x[:, t], state)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), want, rtol=0, atol=1e-10)
    final = getattr(state, "state", state)  # a StepState carries forward()'s form in .state
    torch.testing.assert_close(final[0], want_h, rtol=0, atol=1e-10)
    torch.testing.assert_close(final[1], want_c, rtol=0, atol=1e-10)
    # and both equal the reference
    zeros = torch.zeros(2, B, C_H, HGT, WID, dtype=D64)
    ref, ref_h, _ = ref_recurrent(_layer_weights(rec), x, torch.full((B,), T), zeros, zeros, 1)
    torch.testing.assert_close(want, ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(want_h, ref_h, rtol=0, atol=1e-10)
