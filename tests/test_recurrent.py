"""rnnkit.Recurrent against a hand-written reference: each sequence run alone, unpadded, step by
step through ``cell.forward``, reversed by plain slicing, merged by hand."""

import itertools

import pytest
import torch
from tests.conftest import as_tuple

import rnnkit
from rnnkit.layers.engine import merge_directions

CELLS = ["rnn", "rnn_relu", "gru", "lstm"]
B, T, I, H = 3, 6, 4, 5


def reference(rec: rnnkit.Recurrent, x: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, list]:
    """Loop over sequences, layers, directions and steps; returns padded output and, per cell,
    the final state of every sequence."""
    D = rec.directions
    outputs, finals = [], [[None] * B for _ in rec.cells]
    for b in range(B):
        seq = x[b, : lengths[b]]  # (L_b, I)
        for layer in range(rec.num_layers):
            per_dir = []
            for d in range(D):
                cell = rec.cells[layer * D + d]
                steps = seq.flip(0) if d else seq
                state, ys = None, []
                for x_t in steps:
                    y, state = cell(x_t.unsqueeze(0), state)
                    ys.append(y[0])
                ys = torch.stack(ys)
                per_dir.append(ys.flip(0) if d else ys)
                finals[layer * D + d][b] = state
            seq = merge_directions(per_dir, rec.merge)
        pad = seq.new_zeros(T - lengths[b], seq.size(-1))
        outputs.append(torch.cat([seq, pad]))
    return torch.stack(outputs), finals


@pytest.mark.parametrize("backend", ["auto", "sequential"])
@pytest.mark.parametrize(
    ("cell_name", "num_layers", "bidirectional", "merge"),
    [c for c in itertools.product(CELLS, [1, 2], [False, True], ["concat", "sum", "mul", "ave"])
     if c[2] or c[3] == "concat"],
)
def test_matches_per_sequence_reference(cell_name, num_layers, bidirectional, merge, backend):
    cell = rnnkit.make_cell(cell_name, I, H).double()
    rec = rnnkit.Recurrent(cell, num_layers=num_layers, bidirectional=bidirectional, merge=merge, backend=backend)
    x = torch.randn(B, T, I, dtype=torch.float64)
    lengths = [6, 2, 4]
    out, state = rec(x, lengths=lengths)
    ref_out, ref_finals = reference(rec, x, lengths)
    torch.testing.assert_close(out, ref_out, atol=1e-10, rtol=1e-10)
    for k, s in enumerate(as_tuple(state)):  # (N, B, S_k)
        for n, per_seq in enumerate(ref_finals):
            expected = torch.cat([st[k] for st in per_seq])
            torch.testing.assert_close(s[n], expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cell_name", CELLS)
def test_padding_never_leaks(cell_name):
    rec = rnnkit.Recurrent(rnnkit.make_cell(cell_name, I, H), num_layers=2, bidirectional=True, backend="sequential")
    x = torch.randn(B, T, I)
    lengths = torch.tensor([6, 2, 4])
    out, state = rec(x, lengths=lengths)
    x2 = x.clone()
    for b, n in enumerate(lengths.tolist()):
        x2[b, n:] = 1e3  # garbage in the padding
    out2, state2 = rec(x2, lengths=lengths)
    torch.testing.assert_close(out, out2)
    for b, n in enumerate(lengths.tolist()):
        assert torch.all(out[b, n:] == 0)
    for s, s2 in zip(as_tuple(state), as_tuple(state2), strict=True):
        torch.testing.assert_close(s, s2)


@pytest.mark.parametrize("backend", ["auto", "sequential"])
@pytest.mark.parametrize("cell_name", CELLS)
def test_streaming_equals_whole_sequence(cell_name, backend):
    rec = rnnkit.Recurrent(rnnkit.make_cell(cell_name, I, H), num_layers=2, backend=backend).double()
    x = torch.randn(B, T, I, dtype=torch.float64)
    whole, whole_state = rec(x)
    state, ys = None, []
    for x_t in x.unbind(1):
        y, state = rec.step(x_t, state)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), whole, atol=1e-12, rtol=1e-12)
    # chunks of 4 and 2 steps carry the state the same way
    a, st = rec(x[:, :4])
    b, st = rec(x[:, 4:], st)
    torch.testing.assert_close(torch.cat([a, b], 1), whole, atol=1e-12, rtol=1e-12)
    for s, w in zip(as_tuple(st), as_tuple(whole_state), strict=True):
        torch.testing.assert_close(s, w, atol=1e-12, rtol=1e-12)


def test_bidirectional_cannot_be_stepped():
    rec = rnnkit.Recurrent(rnnkit.GRUCell(I, H), bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        rec.step(torch.randn(B, I))


def test_time_major_layout_and_lstm_projection():
    cell = rnnkit.LSTMCell(I, H, proj_size=2)
    rec = rnnkit.Recurrent(cell, num_layers=2, bidirectional=True, batch_first=False)
    out, (h, c) = rec(torch.randn(T, B, I))
    assert out.shape == (T, B, 4) and h.shape == (4, B, 2) and c.shape == (4, B, H)


def test_fused_is_refused_for_a_cell_that_changes_the_math():
    class Leaky(rnnkit.ElmanCell):
        def step(self, x_proj, state):
            y, (h,) = super().step(x_proj, state)
            h = 0.5 * h + 0.5 * state[0]
            return h, (h,)

    rec = rnnkit.Recurrent(Leaky(I, H))
    report = rec.explain()
    assert report.name == "sequential" and "overrides" in report.rejected["fused"]
    with pytest.raises(ValueError, match="fused"):
        rnnkit.Recurrent(Leaky(I, H), backend="fused")(torch.randn(B, T, I))


def test_gradcheck_engine_with_lengths_bidirectional():
    rec = rnnkit.Recurrent(rnnkit.LSTMCell(2, 3), num_layers=2, bidirectional=True, merge="ave",
                           backend="sequential").double()
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    params = list(rec.parameters())

    def f(x, *ps):
        return rec(x, lengths=[4, 2])[0]

    assert torch.autograd.gradcheck(f, (x, *params))


@pytest.mark.parametrize("cell_name", CELLS + ["lstm_proj"])
def test_gradcheck_cells(cell_name):
    cell = rnnkit.LSTMCell(3, 4, proj_size=2) if cell_name == "lstm_proj" else rnnkit.make_cell(cell_name, 3, 4)
    cell = cell.double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    state = tuple(torch.randn(2, s, dtype=torch.float64, requires_grad=True) for s in cell.state_sizes)

    def f(x, *state):
        y, new = cell(x, state)
        return (y, *new)

    assert torch.autograd.gradcheck(f, (x, *state))
    assert torch.autograd.gradcheck(lambda *ps: f(x, *state), tuple(cell.parameters()))


@pytest.mark.parametrize(("ours", "theirs"), [
    (lambda: rnnkit.ElmanCell(I, H, nonlinearity="relu"), lambda: torch.nn.RNNCell(I, H, nonlinearity="relu")),
    (lambda: rnnkit.GRUCell(I, H), lambda: torch.nn.GRUCell(I, H)),
    (lambda: rnnkit.LSTMCell(I, H), lambda: torch.nn.LSTMCell(I, H)),
])
def test_cells_match_torch_cells(ours, theirs):
    cell, ref = ours(), theirs()
    cell.load_state_dict(ref.state_dict())
    x = torch.randn(B, I)
    s0 = tuple(torch.randn(B, s) for s in cell.state_sizes)
    _, new = cell(x, s0)
    expected = ref(x, s0 if len(s0) == 2 else s0[0])
    for a, b in zip(new, as_tuple(expected), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("make", [
    lambda: rnnkit.Recurrent(rnnkit.cells.LayerNormLSTMCell(3, 4), num_layers=2),
    lambda: rnnkit.Recurrent(rnnkit.cells.GRUCell(3, 4), bidirectional=True, batch_first=True),
    lambda: rnnkit.Recurrent(rnnkit.cells.MinGRUCell(3, 4)),
])
def test_autocast_runs_the_whole_layer_in_the_autocast_dtype(make):
    """Under autocast a Recurrent computes as its bfloat16 copy would (outputs and state in
    bfloat16, as torch.nn's LSTM), and the float32 parameters get float32 gradients."""
    torch.manual_seed(0)
    layer, x = make(), torch.randn(2, 5, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = layer(x)
    low = make()
    low.load_state_dict(layer.state_dict())
    y_low, state_low = low.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.equal(y, y_low)
    for s, s_low in zip(state if isinstance(state, tuple) else (state,),
                        state_low if isinstance(state_low, tuple) else (state_low,), strict=True):
        assert s.dtype == torch.bfloat16 and torch.equal(s, s_low)
    y.float().square().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in layer.parameters())
