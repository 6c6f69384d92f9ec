"""Gradient-flow measurement: per-timestep dL/dh_t against a hand-computed case and an
independent step-by-step autograd reference; the probed forward changes nothing; the Jacobian
spectral-norm estimate against the explicit Jacobian."""

import pytest
import torch
from torch import nn

from rnnkit import Recurrent, make_cell
from rnnkit.diagnostics import (
    jacobian_spectral_norm,
    layer_grad_norms,
    probe_hidden,
    timestep_grad_norms,
    trajectory_jacobian_norms,
)


def _scalar_elman(w_ih, w_hh, b):
    layer = Recurrent(make_cell("rnn", 1, 1)).double()
    cell = layer.cells[0]
    with torch.no_grad():
        cell.weight_ih.fill_(w_ih)
        cell.weight_hh.fill_(w_hh)
        cell.bias_ih.fill_(b)
        cell.bias_hh.zero_()
    return layer


def test_timestep_gradient_matches_a_hand_computed_elman():
    # h_t = tanh(0.7 x_t + 0.1 + 0.9 h_{t-1}). BPTT by hand (Pascanu et al. 2013):
    #   loss on the last step, L = h_{T-1}^2 / 2:  g_{T-1} = h_{T-1},  g_t = g_{t+1} * 0.9 * (1 - h_{t+1}^2)
    #   loss on every step,  L = sum_t h_t:        g_t = 1 + g_{t+1} * 0.9 * (1 - h_{t+1}^2)
    layer = _scalar_elman(0.7, 0.9, 0.1)
    x = torch.tensor([0.5, -1.0, 2.0, 0.3, -0.2, 1.5], dtype=torch.float64)
    h, hs = 0.0, []
    for v in x.tolist():
        h = torch.tanh(torch.tensor(0.7 * v + 0.1 + 0.9 * h, dtype=torch.float64)).item()
        hs.append(h)
    last, every = [0.0] * 6, [0.0] * 6
    last[5], every[5] = hs[5], 1.0
    for t in range(4, -1, -1):
        jac = 0.9 * (1 - hs[t + 1] ** 2)
        last[t] = last[t + 1] * jac
        every[t] = 1.0 + every[t + 1] * jac
    xs = x.view(1, 6, 1)
    got_last = timestep_grad_norms(layer, lambda: layer(xs)[0][0, -1, 0].pow(2) / 2)["<model>"].norms()[0]
    got_every = timestep_grad_norms(layer, lambda: layer(xs)[0].sum())["<model>"].norms()[0]
    torch.testing.assert_close(got_last, torch.tensor([abs(v) for v in last], dtype=torch.float64))
    torch.testing.assert_close(got_every, torch.tensor([abs(v) for v in every], dtype=torch.float64))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_probes_give_the_total_derivative_of_the_hidden_state(cell):
    # Reference: step the cell by hand and retain_grad on each h_t, which then holds dL/dh_t
    # through every later use (the output and the recurrence).
    torch.manual_seed(0)
    layer = Recurrent(make_cell(cell, 3, 4)).double()
    head = nn.Linear(4, 1).double()
    x = torch.randn(2, 7, 3, dtype=torch.float64)

    def loss_of(out):
        return head(out).pow(2).sum() + out[:, -1].sum()

    c = layer.cells[0]
    state, kept, outs, projs = c.initial_state(2), [], [], c.project_input(x.transpose(0, 1)).unbind(0)
    for xp in projs:
        y, state = c.step(xp, state)
        for s in state:
            s.retain_grad()
        kept.append(state)
        outs.append(y)
    loss_of(torch.stack(outs, 1)).backward()

    probe = timestep_grad_norms(layer, lambda: loss_of(layer(x)[0]))["<model>"]
    want = torch.stack([s[0].grad for s in kept])  # (T, B, H)
    torch.testing.assert_close(probe.grads(0)[0], want)
    torch.testing.assert_close(probe.norms(0)[0], want.norm(dim=-1).mean(-1))
    if cell == "lstm":
        # the cell state's probe measures the path through the recurrence, c_t -> c_{t+1}:
        # dL/dc_t = dL/dc_{t+1} * f_{t+1}  (zero after the last step)
        H = 4
        for t in range(6):
            gates = projs[t + 1] + kept[t][0] @ c.weight_hh.t()  # (B, 4H)
            f = torch.sigmoid(gates[:, H : 2 * H])
            torch.testing.assert_close(probe.grads(1)[0, t], kept[t + 1][1].grad * f)
        assert probe.grads(1)[0, 6].abs().sum() == 0


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_probed_forward_changes_nothing(cell):
    torch.manual_seed(0)
    layer = Recurrent(make_cell(cell, 3, 5), num_layers=2, bidirectional=True).double()
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 5, 1])
    ref_out, ref_state = layer(x, lengths=lengths)
    ref_grads = torch.autograd.grad(ref_out.pow(2).sum(), list(layer.parameters()))
    with probe_hidden(layer) as records:
        out, state = layer(x, lengths=lengths)
    grads = torch.autograd.grad(out.pow(2).sum(), list(layer.parameters()), retain_graph=True)
    torch.testing.assert_close(out, ref_out)
    for a, b in zip(state, ref_state, strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b)
    assert "forward" not in layer.__dict__  # the layer is itself again after the block
    probe = records["<model>"][0]
    out.pow(2).sum().backward()
    norms = probe.norms()
    assert norms.shape == (4, 6)  # (layers * directions, T)
    assert probe.grads()[:, 2:, 1].abs().sum() == 0  # sample 1 has 2 steps: no gradient on its padding


def test_probe_hidden_needs_a_recurrent_layer():
    with pytest.raises(ValueError, match="contains no rnnkit.Recurrent"):
        with probe_hidden(nn.LSTM(2, 3)):
            pass


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_jacobian_spectral_norm_matches_the_explicit_jacobian(cell):
    torch.manual_seed(0)
    c = make_cell(cell, 3, 6).double()
    with torch.no_grad():
        c.weight_hh.mul_(3.0)  # a norm away from 1 in either direction
    x_proj = c.project_input(torch.randn(3, 3, dtype=torch.float64))
    state = tuple(torch.randn(3, s, dtype=torch.float64) * 0.5 for s in c.state_sizes)
    est = jacobian_spectral_norm(c, x_proj, state, iters=200, generator=torch.Generator().manual_seed(0))
    for b in range(3):
        def step(s, b=b):
            parts = torch.split(s, list(c.state_sizes), -1)
            return torch.cat(c.step(x_proj[b : b + 1], parts)[1], -1)

        s0 = torch.cat([s[b : b + 1] for s in state], -1)
        jac = torch.autograd.functional.jacobian(step, s0)[0, :, 0, :]  # (S, S)
        torch.testing.assert_close(est[b], torch.linalg.matrix_norm(jac, ord=2), rtol=1e-6, atol=1e-8)


def test_trajectory_jacobian_norms_shape_and_contraction():
    torch.manual_seed(0)
    layer = Recurrent(make_cell("rnn", 2, 8), num_layers=2, bidirectional=True)
    with torch.no_grad():
        for c in layer.cells:
            c.weight_hh.mul_(0.1)  # a strong contraction: ||J|| <= 0.1 * ||W_hh||_2 * max tanh'
    sig = trajectory_jacobian_norms(layer, torch.randn(3, 10, 2), stride=3)
    assert sig.shape == (4, 4)  # (cells, ceil(10 / 3))
    bound = torch.stack([torch.linalg.matrix_norm(c.weight_hh.detach(), ord=2) for c in layer.cells])
    assert (sig <= bound.unsqueeze(1) + 1e-6).all() and (sig > 0).all()


def test_layer_grad_norms_groups_by_module():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    model(torch.randn(5, 3)).sum().backward()
    norms = layer_grad_norms(model)
    want0 = torch.cat([model[0].weight.grad.flatten(), model[0].bias.grad.flatten()]).norm()
    assert set(norms) == {"0", "1"}
    assert norms["0"] == pytest.approx(float(want0), rel=1e-6)
