"""The custom cells (LayerNorm LSTM/GRU, peephole LSTM, IndRNN) and their options: float64 gradcheck,
equality with the plain cell when the extra feature is off, an outside reference for the layer
norm, recurrent-dropout and zoneout statistics, forget-gate initialisers, errors."""

import pytest
import torch
import torch.nn.functional as F

import rnnkit
from rnnkit.cells import IndRNNCell, LayerNormGRUCell, LayerNormLSTMCell, PeepholeLSTMCell
from rnnkit.scan import sequential_scan

T, B, I, H = 5, 3, 4, 6
NEW = {
    "layernorm_lstm": lambda **kw: LayerNormLSTMCell(I, H, **kw),
    "layernorm_lstm_proj_peephole": lambda **kw: LayerNormLSTMCell(I, H, proj_size=4, peephole=True, **kw),
    "layernorm_gru": lambda **kw: LayerNormGRUCell(I, H, **kw),
    "peephole_lstm": lambda **kw: PeepholeLSTMCell(I, H, **kw),
    "indrnn": lambda **kw: IndRNNCell(I, H, **kw),
    "indrnn_tanh": lambda **kw: IndRNNCell(I, H, nonlinearity="tanh", **kw),
}


def copy_shared(dst, src):
    with torch.no_grad():
        for name, p in src.named_parameters():
            getattr(dst, name).copy_(p)


def run(cell, x, state=None, lengths=None):
    """Sequential scan of ``cell`` over time-major ``x``: (outputs, final state)."""
    state = state if state is not None else cell.initial_state(x.size(1), dtype=x.dtype)
    noise = cell.draw_noise(x.size(1), x.device, x.dtype)  # once per sequence, as the driver does
    return sequential_scan(cell, cell.project_input(x), state, lengths, noise=noise)


@pytest.mark.parametrize("name", list(NEW))
@pytest.mark.parametrize("train", [False, True])
def test_gradcheck_float64(name, train):
    options = {"recurrent_dropout": 0.3, "zoneout": 0.2} if train else {}
    cell = NEW[name](dtype=torch.float64, **options).train(train)
    x = torch.randn(T, 2, I, dtype=torch.float64, requires_grad=True)
    state = tuple(torch.randn(2, s, dtype=torch.float64, requires_grad=True) for s in cell.state_sizes)
    params = tuple(cell.parameters())

    def f(x, *args):
        torch.manual_seed(1)  # the same masks on every call
        y, final = run(cell, x, args[: len(state)], lengths=torch.tensor([T, 3]))
        return (y, *final)

    assert torch.autograd.gradcheck(f, (x, *state, *params))


def test_layernorm_off_is_torch_lstm_and_gru():
    x = torch.randn(T, B, I)
    for ours, ref in [
        (LayerNormLSTMCell(I, H, layer_norm=False), rnnkit.LSTMCell(I, H)),
        (LayerNormLSTMCell(I, H, layer_norm=False, proj_size=3), rnnkit.LSTMCell(I, H, proj_size=3)),
        (LayerNormGRUCell(I, H, layer_norm=False), rnnkit.GRUCell(I, H)),
    ]:
        copy_shared(ours, ref)
        y, s = run(ours, x)
        y_ref, s_ref = run(ref, x)
        torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=1e-6)
        for a, b in zip(s, s_ref, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_zero_peepholes_and_diagonal_elman_are_the_plain_cells():
    x = torch.randn(T, B, I)
    peep, lstm = PeepholeLSTMCell(I, H), rnnkit.LSTMCell(I, H)
    copy_shared(peep, lstm)
    with torch.no_grad():
        peep.peephole_weight.zero_()
    torch.testing.assert_close(run(peep, x)[0], run(lstm, x)[0])
    ind, elman = IndRNNCell(I, H), rnnkit.ElmanCell(I, H, nonlinearity="relu", bias=True)
    with torch.no_grad():  # IndRNN is an Elman cell with a diagonal recurrent matrix
        elman.weight_ih.copy_(ind.weight_ih)
        elman.bias_ih.copy_(ind.bias_ih)
        elman.bias_hh.zero_()
        elman.weight_hh.copy_(torch.diag(ind.weight_hh))
    torch.testing.assert_close(run(ind, x)[0], run(elman, x)[0])


def test_layernorm_lstm_matches_the_paper_written_with_torch_layernorm():
    cell = LayerNormLSTMCell(I, H, peephole=True).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_()  # non-trivial LN gains and shifts too
    ln_x, ln_h, ln_c = (torch.nn.LayerNorm(4 * H, elementwise_affine=False).double(),
                        torch.nn.LayerNorm(4 * H, elementwise_affine=False).double(),
                        torch.nn.LayerNorm(H).double())
    ln_c.weight.data, ln_c.bias.data = cell.ln_cell_weight.data, cell.ln_cell_bias.data
    x = torch.randn(T, B, I, dtype=torch.float64)
    h, c = torch.zeros(B, H, dtype=torch.float64), torch.zeros(B, H, dtype=torch.float64)
    outs = []
    for x_t in x:
        pre = (ln_x(x_t @ cell.weight_ih.T) * cell.ln_ih_weight + ln_h(h @ cell.weight_hh.T) * cell.ln_hh_weight
               + cell.bias_ih + cell.bias_hh)
        i, f, g, o = pre.chunk(4, dim=1)
        w_ci, w_cf, w_co = cell.peephole_weight
        c = torch.sigmoid(f + w_cf * c) * c + torch.sigmoid(i + w_ci * c) * torch.tanh(g)
        h = torch.sigmoid(o + w_co * c) * torch.tanh(ln_c(c))
        outs.append(h)
    y, (h_last, c_last) = run(cell, x)
    torch.testing.assert_close(y, torch.stack(outs), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(c_last, c, atol=1e-10, rtol=1e-10)


def test_layernorm_gru_matches_a_hand_written_step():
    cell = LayerNormGRUCell(I, H).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_()
    x, h = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    xx = F.layer_norm(x @ cell.weight_ih.T, (3 * H,)) * cell.ln_ih_weight + cell.bias_ih
    hh = F.layer_norm(h @ cell.weight_hh.T, (3 * H,)) * cell.ln_hh_weight + cell.bias_hh
    r = torch.sigmoid(xx[:, :H] + hh[:, :H])
    z = torch.sigmoid(xx[:, H : 2 * H] + hh[:, H : 2 * H])
    n = torch.tanh(xx[:, 2 * H :] + r * hh[:, 2 * H :])
    torch.testing.assert_close(cell(x, (h,))[0], (1 - z) * n + z * h, atol=1e-12, rtol=1e-12)


def test_recurrent_dropout_mask_is_drawn_once_per_sequence():
    p = 0.4
    cell = LayerNormLSTMCell(I, 400, layer_norm=False, recurrent_dropout=p).train()
    layer = rnnkit.Recurrent(cell, batch_first=False, backend="sequential")
    draws = []
    draw = cell.draw_noise
    cell.draw_noise = lambda *a: draws.append(draw(*a)) or draws[-1]
    seen = []
    step = cell.step
    cell.step = lambda xp, st, noise=None: (seen.append(noise), step(xp, st, noise))[1]
    layer(torch.randn(T, 50, I))
    assert len(draws) == 1 and len(seen) == T and all(m is draws[0] for m in seen)  # one mask, every step
    assert not hasattr(cell, "_dropout_mask")  # the mask is an input, never state of the cell
    mask = draws[0]
    assert mask.shape == (50, 400)
    assert torch.isclose(mask, torch.tensor(1 / (1 - p))).logical_or(mask == 0).all()  # inverted dropout
    assert abs((mask == 0).float().mean().item() - p) < 0.02
    layer(torch.randn(T, 50, I))
    assert not torch.equal(draws[1], draws[0])  # a new sequence, a new mask


def test_recurrent_dropout_acts_on_the_matmul_input_only_and_is_off_in_eval():
    cell = LayerNormGRUCell(I, H, layer_norm=False, recurrent_dropout=0.5).train()
    plain = rnnkit.GRUCell(I, H)
    copy_shared(cell, plain)
    x, h = torch.randn(B, I), torch.randn(B, H)
    m = cell.draw_noise(B)
    y = cell(x, (h,), noise=m)[0]
    # torch's GRU with the masked state in the matmul and the clean state in z * h
    hh = (h * m) @ plain.weight_hh.T + plain.bias_hh
    xx = x @ plain.weight_ih.T + plain.bias_ih
    r, z = torch.sigmoid(xx[:, :H] + hh[:, :H]), torch.sigmoid(xx[:, H : 2 * H] + hh[:, H : 2 * H])
    n = torch.tanh(xx[:, 2 * H :] + r * hh[:, 2 * H :])
    torch.testing.assert_close(y, (1 - z) * n + z * h)
    cell.eval()
    torch.testing.assert_close(cell(x, (h,))[0], plain(x, (h,))[0])


def test_zoneout_statistics_and_expectation_in_eval():
    p_h, p_c = 0.3, 0.6
    cell = LayerNormLSTMCell(I, 300, layer_norm=False, zoneout=(p_h, p_c)).train()
    x = torch.randn(40, 20, I)
    h, c = cell.initial_state(20)
    x_proj = cell.project_input(x)  # the masks are drawn here, per step
    kept_h, kept_c, masks = [], [], []
    for xp in x_proj.unbind(0):
        _, (h_new, c_new) = cell.step(xp, (h, c))
        kept_h.append((h_new == h).float().mean())
        kept_c.append((c_new == c).float().mean())
        masks.append(cell.split_noise(xp)[1][1])
        h, c = h_new, c_new
    assert abs(torch.stack(kept_h[1:]).mean().item() - p_h) < 0.02
    assert abs(torch.stack(kept_c[1:]).mean().item() - p_c) < 0.02
    assert not torch.equal(masks[0], masks[1])  # zoneout draws per step, not per sequence
    cell.eval()  # the expectation, deterministic
    y1, y2 = run(cell, x[:3]), run(cell, x[:3])
    torch.testing.assert_close(y1[0], y2[0], rtol=0, atol=0)
    plain = rnnkit.LSTMCell(I, 300)
    copy_shared(plain, cell)
    h0, c0 = torch.randn(20, 300), torch.randn(20, 300)
    y, (h1, c1) = cell(x[0], (h0, c0))
    _, (h_new, c_new) = plain(x[0], (h0, c0))
    torch.testing.assert_close(c1, p_c * c0 + (1 - p_c) * c_new)
    torch.testing.assert_close(h1, p_h * h0 + (1 - p_h) * h_new)


def test_options_off_in_training_equal_the_eval_cell():
    cell = LayerNormLSTMCell(I, H, recurrent_dropout=0.0, zoneout=0.0)
    x = torch.randn(T, B, I)
    torch.testing.assert_close(run(cell.train(), x)[0], run(cell.eval(), x)[0], rtol=0, atol=0)


def test_forget_gate_initialisers():
    lstm = LayerNormLSTMCell(I, H, forget_bias=1.0)
    torch.testing.assert_close((lstm.bias_ih + lstm.bias_hh)[H : 2 * H], torch.ones(H))
    gru = LayerNormGRUCell(I, H, layer_norm=False, forget_bias=2.0)
    torch.testing.assert_close((gru.bias_ih + gru.bias_hh)[H : 2 * H], torch.full((H,), 2.0))  # z gate
    chrono = PeepholeLSTMCell(I, 64, chrono_init=100)
    b = chrono.bias_ih + chrono.bias_hh
    b_i, b_f = b[:64], b[64:128]
    assert (b_f >= 0).all() and (b_f <= torch.log(torch.tensor(99.0))).all() and b_f.std() > 0.3
    torch.testing.assert_close(b_i, -b_f)
    replica = chrono.replicate(3)  # other layers of a Recurrent get the same initialiser
    assert ((replica.bias_ih + replica.bias_hh)[64:128] >= 0).all()


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: LayerNormLSTMCell(I, H, zoneout=1.5), r"zoneout must be a probability"),
        (lambda: LayerNormLSTMCell(I, H, zoneout=(0.1, 0.2, 0.3)), r"one per state entry \(h, c\)"),
        (lambda: LayerNormGRUCell(I, H, recurrent_dropout=1.0), r"recurrent_dropout must be .* \[0, 1\)"),
        (lambda: LayerNormLSTMCell(I, H, proj_size=H), r"proj_size must be 0 or in \[1, hidden_size=6\)"),
        (lambda: LayerNormLSTMCell(I, H, forget_bias=1.0, chrono_init=10), r"forget_bias or chrono_init"),
        (lambda: LayerNormLSTMCell(I, H, bias=False, forget_bias=1.0), r"bias=False"),
        (lambda: IndRNNCell(I, H, nonlinearity="sigmoid"), r"nonlinearity must be 'relu' or 'tanh'"),
        (lambda: rnnkit.make_cell("indrnn", I, H, forget_bias=1.0), r"takes no option\(s\) \['forget_bias'\]"),
    ],
)
def test_errors_name_the_argument(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_registry_and_recurrent_stepping():
    for name in ("layernorm_lstm", "layernorm_gru", "peephole_lstm", "indrnn"):
        cell = rnnkit.make_cell(name, I, H)
        rec = rnnkit.Recurrent(cell).eval()
        x = torch.randn(B, T, I)
        out, state = rec(x)
        stepped, st = [], None
        for t in range(T):  # streaming equals the whole-sequence call
            y, st = rec.step(x[:, t], st)
            stepped.append(y)
        torch.testing.assert_close(torch.stack(stepped, 1), out)
