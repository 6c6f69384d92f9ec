"""The fast engine (hand-written backward through time) against the sequential reference: outputs,
final states and every gradient, for every cell it runs, with lengths, bidirectional stacks,
recurrent dropout and zoneout in training; plus a direct gradcheck of its Functions, the path
report, the buffer pool, and the drop-in variants."""

import pytest
import torch
from tests.conftest import as_tuple
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit.cells import IndRNNCell, LayerNormGRUCell, LayerNormLSTMCell, PeepholeLSTMCell
from rnnkit.cells import _buffers as buffers
from rnnkit.scan.fast import gru_sequence, lstm_sequence, simple_sequence

B, T, I, H = 3, 6, 4, 5
LENGTHS = [6, 2, 4]
OPTS = {"recurrent_dropout": 0.3, "zoneout": (0.2, 0.4)}
CELLS = {
    "lstm": lambda **kw: rnnkit.LSTMCell(I, H),
    "lstm_proj": lambda **kw: rnnkit.LSTMCell(I, H, proj_size=3),
    "gru": lambda **kw: rnnkit.GRUCell(I, H),
    "rnn_tanh": lambda **kw: rnnkit.ElmanCell(I, H),
    "rnn_relu": lambda **kw: rnnkit.ElmanCell(I, H, nonlinearity="relu", bias=False),
    "ln_lstm": lambda **kw: LayerNormLSTMCell(I, H, **kw),
    "ln_lstm_peep_proj": lambda **kw: LayerNormLSTMCell(I, H, peephole=True, proj_size=3, **kw),
    "peephole": lambda **kw: PeepholeLSTMCell(I, H, **kw),
    "lstm_regularised": lambda **kw: LayerNormLSTMCell(I, H, layer_norm=False, **kw),
    "ln_gru": lambda **kw: LayerNormGRUCell(I, H, **{**kw, "zoneout": kw.get("zoneout", (0.0,))[-1:]}),
    "gru_nobias": lambda **kw: LayerNormGRUCell(I, H, bias=False, layer_norm=False, **{
        **kw, "zoneout": kw.get("zoneout", (0.0,))[-1:]}),
    "indrnn": lambda **kw: IndRNNCell(I, H, **{**kw, "zoneout": kw.get("zoneout", (0.0,))[-1:]}),
}
REGULARISABLE = [k for k in CELLS if k not in ("lstm", "lstm_proj", "gru", "rnn_tanh", "rnn_relu")]


def pair(name, dtype, options, **layer):
    """The same layer twice, on the fast engine and on the sequential reference."""
    cell = CELLS[name](**options).to(dtype)
    fast = rnnkit.Recurrent(cell, backend="fast", **layer)
    ref = rnnkit.Recurrent(CELLS[name](**options).to(dtype), backend="sequential", **layer)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def forward_backward(layer, x, state, lengths, seed):
    torch.manual_seed(seed)  # identical masks on both engines
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    out, final = layer(x, state if len(state) > 1 else state[0], lengths=lengths)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    ((out * weights).sum() + sum((s * s).sum() for s in as_tuple(final))).backward()
    grads = [x.grad, *(s.grad for s in state)] + [p.grad for p in layer.parameters()]
    return [out, *as_tuple(final), *grads]


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize(("lengths", "layer"), [
    (None, {}),
    (LENGTHS, {"num_layers": 2, "bidirectional": True}),
])
def test_fast_equals_sequential_values_and_every_gradient(name, lengths, layer):
    """float64: equal to 1e-10. float32: within 1e-5 (relative to each tensor's size) of the float64
    result, or at least as close to it as the sequential loop in float32 is (the layer-normalised
    cells, stacked and bidirectional, amplify float32 rounding in both engines alike)."""
    cases = [("eval", {})] + ([("train", OPTS), ("eval", OPTS)] if name in REGULARISABLE else [])
    for mode, options in cases:
        fast, ref = pair(name, torch.float64, options, **layer)
        fast.train(mode == "train")
        ref.train(mode == "train")
        assert fast.explain().name == "fast" and ref.explain().name == "sequential"
        x = torch.randn(B, T, I, dtype=torch.float64)
        n = len(fast.cells)
        state = tuple(torch.randn(n, B, s, dtype=torch.float64) for s in fast.cells[0].state_sizes)
        truth = forward_backward(ref, x, state, lengths, seed=7)
        got = forward_backward(fast, x, state, lengths, seed=7)
        for k, (a, b) in enumerate(zip(got, truth, strict=True)):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10, msg=f"{name} {mode} {options}: item {k}")
        fast32, ref32 = fast.float(), ref.float()
        got = forward_backward(fast32, x.float(), [s.float() for s in state], lengths, seed=7)
        loop = forward_backward(ref32, x.float(), [s.float() for s in state], lengths, seed=7)
        for k, (a, b, c) in enumerate(zip(got, loop, truth, strict=True)):
            err, loop_err = (a.double() - c).abs().max().item(), (b.double() - c).abs().max().item()
            bound = max(1e-5 * max(1.0, c.abs().max().item()), 2 * loop_err)
            assert err <= bound, f"{name} {mode} {options}: item {k}: float32 error {err:.1e}, loop's {loop_err:.1e}"


def test_functions_pass_gradcheck_with_every_feature():
    d = torch.float64
    Tn, Bn, Hn, R = 4, 2, 3, 2

    def r(*shape):
        return torch.randn(*shape, dtype=d, requires_grad=True)

    keep = (torch.rand(Tn, Bn, 1, dtype=d) < 0.3).to(d)
    drop = (torch.rand(Bn, R, dtype=d) < 0.7).to(d) / 0.7
    inputs = (r(Tn, Bn, 4 * Hn), r(Bn, R), r(Bn, Hn), r(4 * Hn, R), r(R, Hn), r(4 * Hn), r(4 * Hn), r(Hn), r(Hn),
              r(3, Hn))

    def lstm(xp, h0, c0, w, w_hr, hw, hb, cw, cb, peep):
        return lstm_sequence(xp, h0, c0, w, weight_hr=w_hr, ln_hh=(hw, hb), ln_cell=(cw, cb), peephole=peep,
                             drop=drop, keep_h=keep, keep_c=keep.expand(Tn, Bn, Hn).flip(0), keep_from=1)

    assert torch.autograd.gradcheck(lstm, inputs)
    g_in = (r(Tn, Bn, 3 * Hn), r(Bn, Hn), r(3 * Hn, Hn), r(3 * Hn), r(3 * Hn))
    g_drop = (torch.rand(Bn, Hn, dtype=d) < 0.7).to(d) / 0.7
    assert torch.autograd.gradcheck(
        lambda xp, h0, w, b, ln: gru_sequence(xp, h0, w, b, ln_hh=ln, drop=g_drop, keep=keep), g_in)
    for w in (r(Hn, Hn), r(Hn)):  # Elman, IndRNN
        assert torch.autograd.gradcheck(
            lambda xp, h0, w: simple_sequence(xp, h0, w, drop=g_drop, keep=keep), (r(Tn, Bn, Hn), r(Bn, Hn), w))


def test_explain_names_each_path_and_why_the_faster_ones_do_not_apply():
    report = rnnkit.Recurrent(LayerNormLSTMCell(I, H)).explain()
    assert report.name == "fast"
    assert "layer_norm" in report.rejected["fused"]
    assert "parallel_scan" in report.rejected["parallel"]
    assert "triton" in report.rejected and "fast" not in report.rejected
    assert rnnkit.Recurrent(rnnkit.LSTMCell(I, H)).explain().name == "fused"
    assert rnnkit.Recurrent(rnnkit.LSTMCell(I, H), backend="fast").explain().name == "fast"
    report = rnnkit.Recurrent(LayerNormLSTMCell(I, H), backend="sequential").explain()
    assert report.name == "sequential" and set(report.rejected) == {"fused", "parallel", "triton", "fast"}

    class Leaky(LayerNormLSTMCell):  # changes the math: no engine may run it
        def step(self, x_proj, state):
            y, (h, c) = super().step(x_proj, state)
            return y, (0.5 * h, c)

    report = rnnkit.Recurrent(Leaky(I, H)).explain()
    assert report.name == "sequential" and "overrides the step" in report.rejected["fast"]
    with pytest.raises(ValueError, match="backend='fast' was requested but .*overrides"):
        rnnkit.Recurrent(Leaky(I, H), backend="fast")(torch.randn(B, T, I))


def test_buffer_reuse_never_overwrites_a_held_output():
    layer = rnnkit.Recurrent(LayerNormLSTMCell(I, 512), backend="fast")  # buffers above the pool's 1 MiB floor
    x = torch.randn(2, 300, I)
    first, _ = layer(x)
    kept = first.clone()
    for _ in range(3):
        second, _ = layer(torch.randn(2, 300, I))
        second.sum().backward()
        torch.testing.assert_close(first, kept, rtol=0, atol=0)
    del first, second
    again, _ = layer(x)  # the pool hands memory back only when nothing holds it
    torch.testing.assert_close(again, kept, rtol=0, atol=0)
    buffers.clear()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropin_variants_equal_recurrent_and_load_torch_weights(bidirectional):
    kw = dict(num_layers=2, bidirectional=bidirectional, batch_first=True)
    torch_lstm = nn.LSTM(I, H, **kw)
    ours = rnnkit.LSTM(I, H, layer_norm=True, peephole=True, zoneout=(0.1, 0.3), **kw).double()
    missing = ours.load_state_dict(torch_lstm.double().state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith(("ln_", "peephole_")) for k in missing)
    assert "ln_cell_bias_l1_reverse" in missing if bidirectional else "ln_cell_bias_l1" in missing
    assert ours.explain().name == "fast" and "zoneout" in ours.explain().rejected["fused"]
    rec = rnnkit.Recurrent(LayerNormLSTMCell(I, H, peephole=True, zoneout=(0.1, 0.3)), merge="concat",
                           backend="sequential", **kw).double()
    for k, cell in enumerate(rec.cells):  # copy weights by the drop-in's names
        suffix = f"_l{k // (2 if bidirectional else 1)}" + ("_reverse" if bidirectional and k % 2 else "")
        for name, p in cell.named_parameters():
            p.data.copy_(getattr(ours, name + suffix).data)
    x = torch.randn(B, T, I, dtype=torch.float64)
    for mode in (False, True):
        ours.train(mode)
        rec.train(mode)
        torch.manual_seed(3)
        out, (h, c) = ours(x, lengths=LENGTHS)
        torch.manual_seed(3)
        ref_out, (ref_h, ref_c) = rec(x, lengths=LENGTHS)
        torch.testing.assert_close(out, ref_out)
        torch.testing.assert_close(c, ref_c)
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=True, enforce_sorted=False)
    ours.eval()
    torch.testing.assert_close(ours(packed)[1][0], ours(x, lengths=LENGTHS)[1][0])


def test_dropin_gru_variant_train_eval_and_initialisers():
    gru = rnnkit.GRU(I, H, layer_norm=True, recurrent_dropout=0.5, forget_bias=1.0)
    assert [n for n, _ in gru.named_parameters()][-2:] == ["ln_ih_weight_l0", "ln_hh_weight_l0"]
    torch.testing.assert_close((gru.bias_ih_l0 + gru.bias_hh_l0)[H : 2 * H], torch.ones(H))
    x = torch.randn(T, B, I)
    gru.eval()
    torch.testing.assert_close(gru(x)[0], gru(x)[0], rtol=0, atol=0)  # eval: no dropout
    gru.train()
    assert not torch.equal(gru(x)[0], gru(x)[0])  # training: a new mask per call
    plain = rnnkit.LSTM(I, H, forget_bias=1.0)  # an initialiser alone keeps the vendor kernel
    assert plain.explain().name == "fused"
    torch.testing.assert_close(plain.bias_ih_l0[H : 2 * H] + plain.bias_hh_l0[H : 2 * H], torch.ones(H))
