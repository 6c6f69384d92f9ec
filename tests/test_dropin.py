"""rnnkit.RNN/GRU/LSTM against torch.nn.RNN/GRU/LSTM with copied weights: outputs, final states
and every parameter gradient, for tensors, PackedSequences and ``lengths=``, on the fused path
and on the engine (forced)."""

import itertools

import pytest
import torch
from tests.conftest import as_tuple, tolerance
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnkit

KINDS = {  # name -> (rnnkit class, torch class, extra kwargs)
    "rnn_tanh": (rnnkit.RNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (rnnkit.RNN, nn.RNN, {"nonlinearity": "relu"}),
    "gru": (rnnkit.GRU, nn.GRU, {}),
    "lstm": (rnnkit.LSTM, nn.LSTM, {}),
    "lstm_proj": (rnnkit.LSTM, nn.LSTM, {"proj_size": 3}),
}
T, B, I, H = 5, 4, 3, 6
LENGTHS = [5, 2, 1, 4]


def make_pair(kind, num_layers, bidirectional, batch_first, bias, dtype, backend):
    ours_cls, ref_cls, extra = KINDS[kind]
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias, dtype=dtype)
    ref = ref_cls(I, H, **kw, **extra)
    ours = ours_cls(I, H, **kw, **extra, backend=backend)
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def initial_state(ref, kind, dtype):
    n = ref.num_layers * (2 if ref.bidirectional else 1)
    h = torch.randn(n, B, ref.proj_size or H, dtype=dtype)
    return (h, torch.randn(n, B, H, dtype=dtype)) if kind.startswith("lstm") else h


def assert_same_grads(ours, ref, tol):
    for (name, p), (ref_name, q) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        assert name == ref_name
        torch.testing.assert_close(p.grad, q.grad, atol=tol, rtol=tol, msg=f"grad of {name}")


def assert_same_run(ours, ref, result, ref_result, tol):
    """Equal outputs and final states; then, after the same loss on both, equal gradients."""
    (out, state), (ref_out, ref_state) = result, ref_result
    torch.testing.assert_close(out, ref_out, atol=tol, rtol=tol)
    for s, r in zip(as_tuple(state), as_tuple(ref_state), strict=True):
        torch.testing.assert_close(s, r, atol=tol, rtol=tol)
    (out.square().sum() + sum(s.sum() for s in as_tuple(state))).backward()
    (ref_out.square().sum() + sum(s.sum() for s in as_tuple(ref_state))).backward()
    assert_same_grads(ours, ref, tol)


CASES = list(itertools.product(KINDS, [1, 2], [False, True], [False, True], [True, False]))


@pytest.mark.parametrize("backend", ["auto", "sequential"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("kind", "num_layers", "bidirectional", "batch_first", "bias"), CASES)
def test_tensor_and_lengths_match_torch(kind, num_layers, bidirectional, batch_first, bias, dtype, backend):
    tol = tolerance(dtype)
    ours, ref = make_pair(kind, num_layers, bidirectional, batch_first, bias, dtype, backend)
    x = torch.randn(B, T, I, dtype=dtype) if batch_first else torch.randn(T, B, I, dtype=dtype)
    hx = initial_state(ref, kind, dtype)

    # whole tensors, with an initial state
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, state = ours(x1, hx)
    ref_out, ref_state = ref(x2, hx)
    assert_same_run(ours, ref, (out, state), (ref_out, ref_state), tol)
    torch.testing.assert_close(x1.grad, x2.grad, atol=tol, rtol=tol)

    # lengths= (unsorted) against torch on a PackedSequence
    ours.zero_grad()
    ref.zero_grad()
    out, state = ours(x, hx, lengths=torch.tensor(LENGTHS))
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=batch_first, enforce_sorted=False)
    ref_packed, ref_state = ref(packed, hx)
    ref_out, _ = pad_packed_sequence(ref_packed, batch_first=batch_first, total_length=T)
    assert_same_run(ours, ref, (out, state), (ref_out, ref_state), tol)


@pytest.mark.parametrize("backend", ["auto", "sequential"])
@pytest.mark.parametrize("enforce_sorted", [False, True])
@pytest.mark.parametrize(("kind", "num_layers", "bidirectional"), list(itertools.product(KINDS, [1, 2], [False, True])))
def test_packed_sequence_matches_torch(kind, num_layers, bidirectional, enforce_sorted, backend):
    dtype, tol = torch.float64, tolerance(torch.float64)
    ours, ref = make_pair(kind, num_layers, bidirectional, False, True, dtype, backend)
    x = torch.randn(T, B, I, dtype=dtype)
    lengths = sorted(LENGTHS, reverse=True) if enforce_sorted else LENGTHS
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)
    hx = initial_state(ref, kind, dtype)
    out, state = ours(packed, hx)
    ref_out, ref_state = ref(packed, hx)
    assert isinstance(out, PackedSequence)
    torch.testing.assert_close(out.data, ref_out.data, atol=tol, rtol=tol)
    assert torch.equal(out.batch_sizes, ref_out.batch_sizes)
    for a, b in [(out.sorted_indices, ref_out.sorted_indices), (out.unsorted_indices, ref_out.unsorted_indices)]:
        assert (a is None and b is None) or torch.equal(a, b)
    for s, r in zip(as_tuple(state), as_tuple(ref_state), strict=True):
        torch.testing.assert_close(s, r, atol=tol, rtol=tol)
    (out.data.square().sum() + sum(s.sum() for s in as_tuple(state))).backward()
    (ref_out.data.square().sum() + sum(s.sum() for s in as_tuple(ref_state))).backward()
    assert_same_grads(ours, ref, tol)


@pytest.mark.parametrize("backend", ["auto", "sequential"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_unbatched_input_matches_torch(kind, backend):
    dtype, tol = torch.float64, tolerance(torch.float64)
    ours, ref = make_pair(kind, 2, True, False, True, dtype, backend)
    x = torch.randn(T, I, dtype=dtype)
    hx = initial_state(ref, kind, dtype)
    hx = tuple(h[:, 0] for h in hx) if isinstance(hx, tuple) else hx[:, 0]  # (N, H)
    for args in [(x,), (x, hx)]:
        out, state = ours(*args)
        ref_out, ref_state = ref(*args)
        torch.testing.assert_close(out, ref_out, atol=tol, rtol=tol)
        for s, r in zip(as_tuple(state), as_tuple(ref_state), strict=True):
            assert s.shape == r.shape
            torch.testing.assert_close(s, r, atol=tol, rtol=tol)


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_dict_loads_both_ways_and_is_a_torch_module(kind):
    ours_cls, ref_cls, extra = KINDS[kind]
    ours = ours_cls(I, H, num_layers=2, bidirectional=True, **extra)
    ref = ref_cls(I, H, num_layers=2, bidirectional=True, **extra)
    # an RNNBase like torch.nn's three (not a subclass of ref_cls: Dynamo refuses to trace those)
    assert isinstance(ours, torch.nn.RNNBase) and not isinstance(ours, ref_cls) and ours.mode == ref.mode
    assert list(ours.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(ours.state_dict())  # rnnkit -> torch
    for (n, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.equal(p, q), n


def test_engine_cells_share_parameters_and_follow_dtype_changes():
    layer = rnnkit.LSTM(I, H, num_layers=2, backend="sequential")
    cell = layer.engine_cells()[1]
    assert cell.weight_ih is layer.weight_ih_l1
    assert sum(p.numel() for p in layer.parameters()) == sum(p.numel() for p in nn.LSTM(I, H, 2).parameters())
    layer.double()
    out, _ = layer(torch.randn(T, B, I, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert layer.engine_cells()[1].weight_ih is layer.weight_ih_l1


def test_dropout_between_layers_is_active_in_training_only():
    layer = rnnkit.GRU(I, H, num_layers=2, dropout=0.5, backend="sequential")
    x = torch.randn(T, B, I)
    layer.train()
    a, _ = layer(x)
    b, _ = layer(x)
    assert not torch.allclose(a, b)
    layer.eval()
    ref = nn.GRU(I, H, num_layers=2, dropout=0.5).eval()
    ref.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x)[0], ref(x)[0])


def test_explain_names_the_path_and_the_reason():
    assert rnnkit.LSTM(I, H).explain().name == "fused"
    report = rnnkit.LSTM(I, H, backend="sequential").explain()
    assert report.name == "sequential" and "backend='sequential'" in report.rejected["fused"]
    assert "sequential" in str(report)
