"""Initialisers: the parameters they promise, on cells, Recurrent stacks and torch.nn layers,
and the effect they exist for: the gradient reaches further back at initialisation."""

import math

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit import Recurrent, make_cell
from rnnkit.init import chrono_init_, forget_gate_bias_, identity_recurrent_, initialise_, orthogonal_recurrent_


def _blocks(w, gates):
    return w.detach().chunk(gates, 0)


@pytest.mark.parametrize("module, gates", [
    (lambda: make_cell("lstm", 3, 5), 4),
    (lambda: Recurrent(make_cell("gru", 3, 5), num_layers=2, bidirectional=True), 3),
    (lambda: rnnkit.LSTM(3, 5, num_layers=2), 4),
    (lambda: nn.RNN(3, 5), 1),
])
def test_orthogonal_blocks(module, gates):
    m = module()
    biases = [p.detach().clone() for n, p in m.named_parameters() if "bias" in n]
    orthogonal_recurrent_(m, gain=1.0)
    found = 0
    for name, p in m.named_parameters():
        if "weight_hh" in name:
            for block in _blocks(p, gates):
                torch.testing.assert_close(block @ block.t(), torch.eye(5), atol=1e-5, rtol=0)
                found += 1
    assert found >= gates
    assert all(torch.equal(a, p) for a, (n, p) in zip(biases, [(n, p) for n, p in m.named_parameters() if "bias" in n],
                                                       strict=True))


def test_orthogonal_projected_lstm_is_semi_orthogonal():
    cell = make_cell("lstm", 3, 6, proj_size=2)
    orthogonal_recurrent_(cell)
    for block in _blocks(cell.weight_hh, 4):  # (6, 2): orthonormal columns
        torch.testing.assert_close(block.t() @ block, torch.eye(2), atol=1e-5, rtol=0)


def test_identity_irnn():
    layer = Recurrent(make_cell("rnn_relu", 2, 4), num_layers=2)
    identity_recurrent_(layer)
    for c in layer.cells:
        assert torch.equal(c.weight_hh.detach(), torch.eye(4))
        assert c.bias_ih.abs().sum() == 0 and c.bias_hh.abs().sum() == 0
        assert c.weight_ih.detach().std() < 0.01
    with pytest.raises(ValueError, match="Elman"):
        identity_recurrent_(make_cell("gru", 2, 4))


def _effective(cell, k, gates):
    return (cell.bias_ih + cell.bias_hh).detach().chunk(gates)[k]


def test_forget_gate_bias():
    lstm, gru = make_cell("lstm", 2, 4), make_cell("gru", 2, 4)
    before = (lstm.bias_ih + lstm.bias_hh).detach().clone()
    forget_gate_bias_(lstm)
    forget_gate_bias_(gru, 2.0)
    torch.testing.assert_close(_effective(lstm, 1, 4), torch.ones(4))  # i, f, g, o
    after = (lstm.bias_ih + lstm.bias_hh).detach()
    assert torch.equal(after[:4], before[:4]) and torch.equal(after[8:], before[8:])
    torch.testing.assert_close(_effective(gru, 1, 3), torch.full((4,), 2.0))  # r, z, n
    with pytest.raises(ValueError, match="no forget gate"):
        forget_gate_bias_(make_cell("rnn", 2, 4))
    with pytest.raises(ValueError, match="no recurrent weights"):
        forget_gate_bias_(nn.Linear(2, 3))


def test_chrono():
    torch.manual_seed(0)
    layer = rnnkit.LSTM(2, 64)
    chrono_init_(layer, 100)
    b = layer.bias_ih_l0.detach() + layer.bias_hh_l0.detach()
    f, i = b[64:128], b[:64]
    assert (f >= 0).all() and (f <= math.log(99) + 1e-6).all() and f.std() > 0.5
    torch.testing.assert_close(i, -f)
    gru = make_cell("gru", 2, 8)
    chrono_init_(gru, 50)
    z = _effective(gru, 1, 3)
    assert (z >= 0).all() and (z <= math.log(49) + 1e-6).all()
    with pytest.raises(ValueError, match="max_len must be >= 3"):
        chrono_init_(gru, 2)


def test_initialise_by_name_skips_what_does_not_apply():
    elman, lstm = make_cell("rnn", 2, 4), make_cell("lstm", 2, 4)
    initialise_(elman, "orthogonal+chrono", max_len=20)  # chrono does not apply to Elman: skipped
    initialise_(lstm, "orthogonal+chrono", max_len=20)
    torch.testing.assert_close(elman.weight_hh @ elman.weight_hh.t(), torch.eye(4), atol=1e-5, rtol=0)
    assert (_effective(lstm, 1, 4) >= 0).all()
    with pytest.raises(ValueError, match="unknown initialiser"):
        initialise_(lstm, "xavier")
    with pytest.raises(ValueError, match="needs max_len"):
        initialise_(lstm, "chrono")


def _reach(layer, steps=60):
    """||dL/dh_0|| / ||dL/dh_{T-1}|| for a loss on the last output."""
    from rnnkit.diagnostics import timestep_grad_norms

    x = torch.rand(16, steps, 2)
    norms = timestep_grad_norms(layer, lambda: layer(x)[0][:, -1].sum())["<model>"].norms()[0]
    return float(norms[0] / norms[-1])


def test_gate_initialisers_let_the_gradient_reach_further():
    torch.manual_seed(0)
    plain = Recurrent(make_cell("lstm", 2, 32))
    torch.manual_seed(0)
    chrono = chrono_init_(Recurrent(make_cell("lstm", 2, 32)), 60)
    torch.manual_seed(0)
    elman = Recurrent(make_cell("rnn", 2, 32))
    torch.manual_seed(0)
    ortho = orthogonal_recurrent_(Recurrent(make_cell("rnn", 2, 32)))
    assert _reach(chrono) > 1e3 * _reach(plain)
    assert _reach(ortho) > 1e3 * _reach(elman)
