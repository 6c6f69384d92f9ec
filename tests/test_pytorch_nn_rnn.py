"""The CPU behaviours that PyTorch's ``test/test_nn.py`` (the RNN/GRU/LSTM tests) and
``test/nn/test_packed_sequence.py`` check, run on ``rnnkit.RNN/GRU/LSTM`` for each backend that
runs these layers on CPU and compared with ``torch.nn``'s layer holding the same weights.

Also: an empty batch returns empty outputs as torch does; no time steps, a wrong input size, a
wrong hx shape or device raise errors catchable both as torch's ``RuntimeError`` and as rnnkit's
``ValueError``; ``hx`` as a list; CPU bfloat16 autocast; double backward; parametrized weights
(weight_norm, spectral_norm, a custom parametrization) over many eval calls and an SGD loop.
"""

from __future__ import annotations

import copy
import pickle
import re
import warnings
from itertools import product

import pytest
import torch
import torch.nn.utils.parametrize as parametrize
import torch.nn.utils.rnn as rnn_utils
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

import rnnkit

MODES = ("RNN", "GRU", "LSTM")
BACKENDS = ("auto", "fused", "fast", "sequential")


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


mode_backend = pytest.mark.parametrize(
    ("mode", "backend"), list(product(MODES, BACKENDS)), ids=[f"{m}-{b}" for m, b in product(MODES, BACKENDS)]
)
backends = pytest.mark.parametrize("backend", BACKENDS)


def _pair(mode: str, *args, backend: str, dtype=torch.float32, **kwargs):
    """(rnnkit layer, torch.nn layer) with the same configuration and weights."""
    ref = getattr(nn, mode)(*args, **kwargs).to(dtype)
    m = getattr(rnnkit, mode)(*args, backend=backend, **kwargs).to(dtype)
    m.load_state_dict(ref.state_dict())
    return m, ref


def _state(mode, n, batch, hidden, proj=0, dtype=torch.float32, fill=None):
    shape = (n, batch) if batch is not None else (n,)
    make = (lambda s: torch.full(s, float(fill), dtype=dtype)) if fill is not None else (
        lambda s: torch.randn(s, dtype=dtype)
    )
    h = make((*shape, proj or hidden))
    return (h, make((*shape, hidden))) if mode == "LSTM" else h


def _tensors(obj):
    if isinstance(obj, rnn_utils.PackedSequence):
        return [obj.data]
    if isinstance(obj, torch.Tensor):
        return [obj]
    return [t for o in obj for t in _tensors(o)]


def _close(actual, expected, **tol):
    a, e = _tensors(actual), _tensors(expected)
    assert len(a) == len(e)
    for x, y in zip(a, e, strict=True):
        torch.testing.assert_close(x, y, **tol)


def _grads(module, leaves):
    return [t.grad for t in leaves] + [p.grad for p in module.parameters()]


def _forward_backward(module, x, hx, seed=0):
    """Outputs, then the gradients of the inputs/hx and of every parameter after a backward
    with fixed random output gradients."""
    out = module(x, hx) if hx is not None else module(x)
    gen = torch.Generator().manual_seed(seed)
    outs = _tensors(out)
    torch.autograd.backward(outs, [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs])
    return out


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


def _leaves(hx):
    if hx is None:
        return None
    return tuple(_leaf(h) for h in hx) if isinstance(hx, tuple) else _leaf(hx)


def _same_as_torch(m, ref, x, hx=None, **tol):
    """Forward + backward of both; outputs, input/hx grads and parameter grads agree."""
    results = []
    for module in (m, ref):
        module.zero_grad(set_to_none=True)
        xs = _leaf(x) if isinstance(x, torch.Tensor) else x
        hs = _leaves(hx)
        out = _forward_backward(module, xs, hs)
        leaves = [t for t in [*_tensors(xs), *(_tensors(hs) if hs is not None else [])] if t.requires_grad]
        results.append((out, _grads(module, leaves)))
    (out, grads), (ref_out, ref_grads) = results
    _close(out, ref_out, **tol)
    _close(grads, ref_grads, **tol)


def _raises_both(fn, torch_fn=None):
    """``fn()`` raises an error that is a RuntimeError (torch's class) and a ValueError
    (rnnkit's); ``torch_fn()``, if given, raises a RuntimeError."""
    with pytest.raises(RuntimeError) as info:
        fn()
    assert isinstance(info.value, ValueError), f"{type(info.value).__name__} is not a ValueError: {info.value}"
    if torch_fn is not None:
        with pytest.raises(RuntimeError):
            torch_fn()
    return info.value


# -- empty batch, no time steps, argument checks -------------------------------------------


@pytest.mark.parametrize("with_hx", [False, True], ids=["no_hx", "hx"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@mode_backend
def test_empty_batch_returns_empty_outputs(mode, backend, batch_first, with_hx):
    """test_RNN_input_size_zero: a batch of 0 sequences runs, returns torch's empty shapes, and
    backward through it works."""
    m, ref = _pair(mode, 3, 4, num_layers=2, bidirectional=True, batch_first=batch_first, backend=backend)
    x = torch.zeros((0, 5, 3) if batch_first else (5, 0, 3), requires_grad=True)
    hx = _state(mode, 4, 0, 4) if with_hx else None
    out, ref_out = (mod(x, hx) if with_hx else mod(x) for mod in (m, ref))
    assert [t.shape for t in _tensors(out)] == [t.shape for t in _tensors(ref_out)]
    assert [t.dtype for t in _tensors(out)] == [t.dtype for t in _tensors(ref_out)]
    out[0].sum().backward()
    assert x.grad is None or x.grad.shape == x.shape


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@mode_backend
def test_no_time_steps_raises(mode, backend, batch_first):
    """test_error_RNN_seq_len_zero: zero time steps raise (torch: RuntimeError), also unbatched."""
    m, ref = _pair(mode, 5, 6, bidirectional=True, batch_first=batch_first, backend=backend)
    x = torch.ones((10, 0, 5) if batch_first else (0, 10, 5))
    _raises_both(lambda: m(x), lambda: ref(x))
    _raises_both(lambda: m(torch.ones(0, 5)), lambda: ref(torch.ones(0, 5)))


def _bad_shape_cases(mode, proj=0):
    """(input shape, hx shapes) pairs of test_rnn_args_check / test_projections_lstm_args_check:
    sizes 6 time, 4 batch, 3 features, 2 layers, hidden 5, 7 wherever a size is wrong."""
    h_size = proj or 5
    good_x, good_h, good_c = (6, 4, 3), (2, 4, h_size), (2, 4, 5)

    def bad(shape, dim):
        s = list(shape)
        s[dim] = 7
        return tuple(s)

    cases = [(bad(good_x, 1), None), (bad(good_x, 2), None)]  # input batch (vs hx), input size
    for dim in (1, 2, 0):  # hidden batch, hidden size, hidden[0] (layers)
        if mode != "LSTM":
            cases.append((good_x, (bad(good_h, dim),)))
        elif proj:
            cases.append((good_x, (bad(good_h, dim), bad(good_c, dim))))
        else:
            cases += [(good_x, (bad(good_h, dim), good_c)), (good_x, (good_h, bad(good_c, dim)))]
    if proj:  # h sized like c, h's layers wrong, c's layers wrong
        cases += [(good_x, ((2, 4, 5), good_c)), (good_x, (bad(good_h, 0), good_c)), (good_x, (good_h, bad(good_c, 0)))]
    return cases


def _run_bad(module, mode, x_shape, h_shapes):
    x = torch.randn(x_shape)
    if h_shapes is None:
        h_shapes = [(2, 4, 5)] if mode != "LSTM" else [(2, 4, module.proj_size or 5), (2, 4, 5)]
    hs = [torch.randn(s) for s in h_shapes]
    return module(x, tuple(hs) if mode == "LSTM" else hs[0])


@mode_backend
def test_rnn_args_check(mode, backend):
    """test_rnn_args_check: wrong input batch, input size, hidden batch/size/layers raise."""
    m, ref = _pair(mode, 3, 5, 2, backend=backend)
    for x_shape, h_shapes in _bad_shape_cases(mode):
        _raises_both(lambda xs=x_shape, hs=h_shapes: _run_bad(m, mode, xs, hs),
                     lambda xs=x_shape, hs=h_shapes: _run_bad(ref, mode, xs, hs))


@backends
def test_projections_lstm_args_check(backend):
    """test_projections_lstm_args_check, with proj_size=2."""
    m, ref = _pair("LSTM", 3, 5, 2, proj_size=2, backend=backend)
    for x_shape, h_shapes in _bad_shape_cases("LSTM", proj=2):
        _raises_both(lambda xs=x_shape, hs=h_shapes: _run_bad(m, "LSTM", xs, hs),
                     lambda xs=x_shape, hs=h_shapes: _run_bad(ref, "LSTM", xs, hs))


@pytest.mark.parametrize(("mode", "proj"), [("RNN", 0), ("GRU", 0), ("LSTM", 0), ("LSTM", 10)],
                         ids=["RNN", "GRU", "LSTM", "LSTM-proj"])
@backends
def test_forward_exception_messages(mode, proj, backend):
    """test_cudnn_forward_exception (it runs on CPU too): torch's RuntimeError messages for a
    wrong hidden size and a wrong input size."""
    kw = {"proj_size": proj} if proj else {}
    m, _ = _pair(mode, 10, 20, batch_first=True, backend=backend, **kw)
    hidden = (torch.zeros(1, 2, 19), torch.zeros(1, 2, 19)) if mode == "LSTM" else torch.zeros(1, 2, 19)
    with pytest.raises(RuntimeError, match=re.escape("input.size(-1) must be equal to input_size")):
        m(torch.randn(2, 3, 3))
    with pytest.raises(RuntimeError, match="Expected hidden.*size.*got"):
        m(torch.randn(2, 3, 10), hidden)


@mode_backend
def test_device_mismatch_raises(mode, backend):
    """test_rnn_check_device (CPU only: the meta device stands in for another device)."""
    m, ref = _pair(mode, 3, 5, 2, backend=backend)
    x = torch.randn(6, 4, 3)
    _raises_both(lambda: m(x.to("meta")), lambda: ref(x.to("meta")))
    hx = _state(mode, 2, 4, 5)
    meta = tuple(h.to("meta") for h in hx) if mode == "LSTM" else hx.to("meta")
    _raises_both(lambda: m(x, meta), lambda: ref(x, meta))


@mode_backend
def test_dtype_mismatch_raises(mode, backend):
    """A float64 input on a float32 layer: torch raises ValueError; rnnkit's error is also the
    TypeError it raised before and a RuntimeError."""
    m, ref = _pair(mode, 3, 5, backend=backend)
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    with pytest.raises(ValueError):
        ref(x)
    with pytest.raises(ValueError) as info:
        m(x)
    assert isinstance(info.value, TypeError) and isinstance(info.value, RuntimeError)


@pytest.mark.parametrize("mode", ["RNN", "GRU"])
@backends
def test_projections_errors_on_gru_and_rnn(mode, backend):
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM, not RNN or GRU"):
        getattr(rnnkit, mode)(30, 20, 2, proj_size=10, backend=backend)


@backends
def test_rnn_nonlinearity(backend):
    """test_RNN_nonlinearity / _passed_as_arg: tanh by default, relu on request, else ValueError;
    the relu layer computes torch's relu RNN."""
    assert rnnkit.RNN(1, 10, backend=backend).nonlinearity == "tanh"
    m, ref = _pair("RNN", 3, 10, nonlinearity="relu", backend=backend)
    assert m.nonlinearity == "relu"
    _same_as_torch(m, ref, torch.randn(5, 2, 3))
    m2, ref2 = _pair("RNN", 3, 10, 1, "relu", backend=backend)  # passed as an argument
    assert m2.nonlinearity == "relu"
    _same_as_torch(m2, ref2, torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="Unknown nonlinearity 'garbage'"):
        rnnkit.RNN(1, 10, nonlinearity="garbage", backend=backend)


# -- hidden states ------------------------------------------------------------------------


@pytest.mark.parametrize("proj", [0, 2], ids=["plain", "proj"])
@backends
def test_hx_as_list(backend, proj):
    """An LSTM takes ``hx`` as a list ``[h, c]`` as torch.nn.LSTM does."""
    m, ref = _pair("LSTM", 3, 4, 2, proj_size=proj, backend=backend)
    x = torch.randn(5, 2, 3)
    h, c = _state("LSTM", 2, 2, 4, proj=proj)
    out, (hn, cn) = m(x, [h, c])
    _close((out, hn, cn), ref(x, (h, c)))
    _close(m(x[:, 0], [h[:, 0], c[:, 0]]), ref(x[:, 0], (h[:, 0], c[:, 0])))  # unbatched


@mode_backend
def test_rnn_initial_hidden_state(mode, backend):
    """test_rnn_initial_hidden_state / test_projections_lstm_initial_hidden_state: zeros as hx
    equal no hx."""
    configs = [({}, 2)] + ([({"proj_size": 10, "bidirectional": bidir}, 2 * (1 + bidir)) for bidir in (False, True)]
                           if mode == "LSTM" else [])
    for kw, n in configs:
        m, _ = _pair(mode, 30, 20, 2, backend=backend, **kw)
        x = torch.randn(10, 8, 30)
        hidden = _state(mode, n, 8, 20, proj=kw.get("proj_size", 0), fill=0)
        _close(m(x, hidden), m(x))


# -- against torch.nn's CPU layers --------------------------------------------------------


def _noncontig(t):
    nd = t.dim()
    return torch.stack([t.clone().zero_(), t], nd).select(nd, 1)


def _reference_parity(mode, backend, proj=0, nonlinearity=None, dropout=0.0, combos=None):
    """_test_RNN_cpu_vs_cudnn's comparisons, with torch.nn's CPU layer as the reference: every
    combination of bias, bidirectional, batch_first, contiguity and packed variable lengths,
    float64; outputs, final states, input/hx/cx gradients and weight gradients."""
    input_size, hidden, layers, steps, batch = 10, 6, 2, 7, 6
    out_size = proj or hidden
    failures = []
    combos = combos or list(product((True, False), repeat=5))
    for k, (bias, bidir, batch_first, contig, variable_len) in enumerate(combos):
        kw = {"proj_size": proj} if proj else {}
        if nonlinearity:
            kw["nonlinearity"] = nonlinearity
        m, ref = _pair(mode, input_size, hidden, layers, bias=bias, dropout=dropout, bidirectional=bidir,
                       batch_first=batch_first, backend=backend, dtype=torch.float64, **kw)
        dirs = 2 if bidir else 1
        shape = (batch, steps, input_size) if batch_first else (steps, batch, input_size)
        x = torch.randn(shape, dtype=torch.float64)
        hx = torch.randn(layers * dirs, batch, out_size, dtype=torch.float64)
        cx = torch.randn(layers * dirs, batch, hidden, dtype=torch.float64)
        if not contig:
            x, hx, cx = _noncontig(x), _noncontig(hx), _noncontig(cx)
        state = (hx, cx) if mode == "LSTM" else hx
        try:
            if variable_len:
                lengths = [7, 5, 5, 2, 1, 1]
                if k % 2:
                    lengths = torch.tensor(lengths, dtype=torch.long)
                results = []
                for module in (m, ref):
                    module.train()
                    xs = _leaf(x)
                    packed = rnn_utils.pack_padded_sequence(xs, lengths, batch_first=batch_first)
                    hs = _leaves(state)
                    out = _forward_backward(module, packed, hs)
                    results.append((out, [xs.grad, *[h.grad for h in _tensors(hs)], *_grads(module, [])]))
                (out, grads), (ref_out, ref_grads) = results
                assert torch.equal(out[0].batch_sizes, ref_out[0].batch_sizes)
                _close(out, ref_out)
                _close(grads, ref_grads)
            else:
                m.train()
                ref.train()
                _same_as_torch(m, ref, x, state)
        except Exception as e:  # noqa: BLE001 - collect each combination's failure
            flags = dict(bias=bias, bidirectional=bidir, batch_first=batch_first, contig=contig, packed=variable_len)
            failures.append(f"{flags}: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
    if failures:
        pytest.fail(f"{len(failures)} of {len(combos)} combinations differ:\n" + "\n".join(failures[:6]), pytrace=False)


@mode_backend
def test_cpu_reference_parity(mode, backend):
    _reference_parity(mode, backend)


@backends
def test_cpu_reference_parity_relu(backend):
    _reference_parity("RNN", backend, nonlinearity="relu", combos=[(True, False, False, True, False),
                                                                   (False, True, True, False, True)])


@backends
def test_cpu_reference_parity_projections(backend):
    _reference_parity("LSTM", backend, proj=3)


@mode_backend
def test_cpu_reference_parity_dropout_one(mode, backend):
    """test_RNN_cpu_vs_cudnn_with_dropout: dropout=1 (deterministic) in training mode."""
    _reference_parity(mode, backend, dropout=1.0, combos=[(True, True, False, True, False),
                                                          (False, False, True, True, True)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@mode_backend
def test_variable_sequence(mode, backend, dtype):
    """test_variable_sequence: a packed batch (sorted or not, with or without hx) equals running
    each sequence on its own, forward and backward; and torch.nn's packed run."""
    cases = [(True, [5]), (False, [5]), (True, [10, 10, 6, 2, 2, 1, 1]), (False, [10, 10, 6, 2, 2, 1, 1]),
             (False, [2, 1, 3, 2, 10, 5, 3])]
    projs = (0, 2) if mode == "LSTM" else (0,)
    for (enforce_sorted, lengths), default_hidden, proj in product(cases, (True, False), projs):
        kw = {"proj_size": proj} if proj else {}
        m, ref = _pair(mode, 3, 4, 2, bidirectional=True, backend=backend, dtype=dtype, **kw)
        alone = copy.deepcopy(m)
        steps, batch = max(lengths), len(lengths)
        x = torch.randn(steps, batch, 3, dtype=dtype, requires_grad=True)
        hidden = None if default_hidden else _state(mode, 4, batch, 4, proj=proj, dtype=dtype)
        outs, finals = [], []
        for i, length in enumerate(lengths):
            h_i = None if hidden is None else (
                tuple(h[:, i : i + 1] for h in hidden) if mode == "LSTM" else hidden[:, i : i + 1])
            out, fin = alone(x[:length, i : i + 1], h_i) if h_i is not None else alone(x[:length, i : i + 1])
            outs.append(torch.cat([out, out.new_zeros(steps - length, *out.shape[1:])]))
            finals.append(fin if mode == "LSTM" else (fin,))
        seq_out = torch.cat(outs, 1)
        seq_final = tuple(torch.cat(parts, 1) for parts in zip(*finals, strict=True))
        packed = rnn_utils.pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
        packed_out, packed_final = m(packed, hidden) if hidden is not None else m(packed)
        unpacked, unpacked_len = rnn_utils.pad_packed_sequence(packed_out)
        tol = {"atol": 1e-5, "rtol": 0}
        _close(packed_final, seq_final, **tol)
        _close(unpacked, seq_out, **tol)
        assert unpacked_len.tolist() == list(lengths)
        ref_out, ref_final = ref(packed, hidden) if hidden is not None else ref(packed)
        _close((packed_out, packed_final), (ref_out, ref_final), **tol)
        seq_out.sum().backward()
        grad_x = x.grad.clone()
        x.grad = None
        unpacked.sum().backward()
        _close(x.grad, grad_x, **tol)
        _close([p.grad for p in m.parameters()], [p.grad for p in alone.parameters()], **tol)


@mode_backend
def test_rnn_retain_variables(mode, backend):
    """test_rnn_retain_variables: backward through one graph several times (retain_graph)
    gives the same gradients each time."""
    m, _ = _pair(mode, 10, 20, num_layers=2, backend=backend, dtype=torch.float64)
    x = torch.randn(5, 6, 10, dtype=torch.float64, requires_grad=True)
    out = m(x)
    out[0].sum().backward(retain_graph=True)
    grads = [x.grad.clone()] + [p.grad.clone() for p in m.parameters()]
    for _ in range(4):
        m.zero_grad()
        x.grad.zero_()
        out[0].sum().backward(retain_graph=True)
        _close([x.grad] + [p.grad for p in m.parameters()], grads)


@mode_backend
def test_backward_from_one_output(mode, backend):
    """Gradients flow from the final state alone (h_n, or c_n alone for an LSTM), the output
    being unused, as in torch (cf. test_lstmcell_backward_only_one_output_grad)."""
    m, ref = _pair(mode, 3, 4, 2, bidirectional=True, backend=backend, dtype=torch.float64)
    picks = (0, 1) if mode == "LSTM" else (None,)
    for pick in picks:
        grads = []
        for module in (m, ref):
            module.zero_grad(set_to_none=True)
            x = torch.randn(5, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
            _, final = module(x)
            (final if pick is None else final[pick]).sum().backward()
            grads.append([x.grad, *(p.grad for p in module.parameters())])
        _close(grads[0], grads[1])


# -- gradients ----------------------------------------------------------------------------

GRAD_CONFIGS = [("RNN", {}), ("GRU", {}), ("LSTM", {}), ("LSTM", {"proj_size": 2})]
grad_configs = pytest.mark.parametrize(
    ("mode", "extra"), GRAD_CONFIGS, ids=["RNN", "GRU", "LSTM", "LSTM-proj"]
)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@grad_configs
@backends
def test_grad(mode, extra, backend, bias):
    """test_LSTM_grad_and_gradgrad / test_GRU_grad_and_gradgrad: gradcheck (float64) of the
    output w.r.t. the input and every parameter."""
    m = getattr(rnnkit, mode)(4, 4, bias=bias, backend=backend, **extra).double()
    x = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    params = tuple(m.parameters())
    assert gradcheck(lambda x, *p: m(x)[0], (x, *params))


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@grad_configs
@backends
def test_gradgrad(mode, extra, backend, bias):
    """Double backward (gradgradcheck, float64) through input, hx and parameters."""
    m = getattr(rnnkit, mode)(4, 4, bias=bias, backend=backend, **extra).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    h = torch.randn(1, 3, extra.get("proj_size", 4), dtype=torch.float64, requires_grad=True)
    params = tuple(m.parameters())
    if mode == "LSTM":
        c = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
        assert gradgradcheck(lambda x, h, c, *p: m(x, (h, c))[0], (x, h, c, *params), fast_mode=True)
    else:
        assert gradgradcheck(lambda x, h, *p: m(x, h)[0], (x, h, *params), fast_mode=True)


# -- dropout ------------------------------------------------------------------------------


@backends
def test_rnn_dropout(backend):
    """test_RNN_dropout (its CPU half): dropout sits between the layers, scaled by 1/(1-p)."""
    for p, train in product((0, 0.276, 0.731, 1), (True, False)):
        m = rnnkit.RNN(10, 1000, 2, bias=False, dropout=p, nonlinearity="relu", backend=backend).double()
        m.train(train)
        with torch.no_grad():
            for w in (m.weight_ih_l0, m.weight_hh_l0, m.weight_ih_l1, m.weight_hh_l1):
                w.fill_(1)
        out, hy = m(torch.ones(1, 1, 10, dtype=torch.float64), torch.zeros(2, 1, 1000, dtype=torch.float64))
        assert out.min() == out.max()
        val = float(out[0, 0, 0])
        if p == 0 or not train:
            assert val == 10000
        elif p == 1:
            assert val == 0
        else:
            assert 8000 < val < 12000
            denorm = (val * (1 - p)) % 10
            assert min(denorm, 10 - denorm) < 1e-2
        assert hy[0].min() == hy[0].max() and hy[1].min() == hy[1].max()
        assert float(hy[0, 0, 0]) == 10 and float(hy[1, 0, 0]) == val


@backends
def test_rnn_change_dropout(backend):
    """test_RNN_change_dropout: ``layer.dropout`` changed between calls takes effect."""
    for train in (True, False):
        m = rnnkit.RNN(100, 100, 2, dropout=0, nonlinearity="relu", backend=backend).double()
        x = torch.rand(3, 2, 100, dtype=torch.float64)
        m.train(train)
        prev = None
        for p in (0, 0.5, 0, 0.7, 0.2, 1, 0.2, 0):
            m.dropout = p
            out1, hy1 = m(x)
            out2, hy2 = m(x)
            if p in (0, 1) or not train:
                assert torch.equal(out1, out2) and torch.equal(hy1, hy2)
            else:
                assert not torch.equal(out1, out2) and not torch.equal(hy1, hy2)
            if prev is not None:
                assert torch.equal(out1, prev) == (not train), f"p={p}, train={train}"
                assert torch.equal(out2, prev) == (not train), f"p={p}, train={train}"
            prev = out1.detach()


@backends
def test_rnn_dropout_state(backend):
    """test_RNN_dropout_state: a pickled copy (then flatten_parameters()) behaves the same;
    dropout draws differ between calls in training only."""
    for p, train in product((0, 0.1234), (True, False)):
        m = rnnkit.RNN(100, 100, 2, bias=False, dropout=p, nonlinearity="relu", backend=backend)
        m.train(train)
        x, hx = torch.rand(1, 1, 100), torch.rand(2, 1, 100)
        out1, hy1 = m(x, hx)
        out2, hy2 = m(x, hx)
        m2 = pickle.loads(pickle.dumps(m))
        m2.flatten_parameters()
        out3, hy3 = m2(x, hx)
        same = p == 0 or not train
        assert torch.equal(out1, out2) == same and torch.equal(out1, out3) == same
        assert torch.equal(hy1, hy2) == same and torch.equal(hy1, hy3) == same


# -- autocast, layout ---------------------------------------------------------------------


@mode_backend
def test_autocast_bfloat16(mode, backend):
    """Under CPU bfloat16 autocast the outputs have torch.nn's dtypes and its values (bf16
    tolerance)."""
    m, ref = _pair(mode, 3, 4, 2, backend=backend)
    x = torch.randn(5, 2, 3)
    hx = _state(mode, 2, 2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_out = ref(x, hx)
        out = m(x, hx)
    assert [t.dtype for t in _tensors(out)] == [t.dtype for t in _tensors(ref_out)]
    _close([t.float() for t in _tensors(out)], [t.float() for t in _tensors(ref_out)], atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@mode_backend
def test_outputs_contiguous_like_torch(mode, backend, batch_first):
    """torch.nn returns contiguous outputs and states (test_modules' memory-format check)."""
    m, ref = _pair(mode, 3, 4, 2, bidirectional=True, batch_first=batch_first, backend=backend)
    x = torch.randn(2, 5, 3)
    got = [t.is_contiguous() for t in _tensors(m(x))]
    assert got == [t.is_contiguous() for t in _tensors(ref(x))]


# -- packed sequences ---------------------------------------------------------------------


def _sequences(lengths, size=3, dtype=torch.float32):
    gen = torch.Generator().manual_seed(3)
    return [torch.randn(n, size, generator=gen, dtype=dtype) for n in lengths]


@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
@mode_backend
def test_packed_sequence_matches_torch(mode, backend, enforce_sorted):
    """test_pack_sequence's layouts through the layer: the output PackedSequence keeps batch
    sizes and (un)sorted indices, and data, final state and gradients equal torch.nn's."""
    lengths = [6, 4, 4, 2, 1] if enforce_sorted else [2, 6, 1, 4, 4]
    m, ref = _pair(mode, 3, 4, 2, bidirectional=True, backend=backend, dtype=torch.float64)
    seqs = _sequences(lengths, dtype=torch.float64)
    hx = _state(mode, 4, len(lengths), 4, dtype=torch.float64)
    outs = []
    for module in (m, ref):
        leaves = [_leaf(s) for s in seqs]
        packed = rnn_utils.pack_sequence(leaves, enforce_sorted=enforce_sorted)
        out, final = _forward_backward(module, packed, _leaves(hx))
        outs.append((out, final, [s.grad for s in leaves] + _grads(module, [])))
    (out, final, grads), (ref_out, ref_final, ref_grads) = outs
    assert isinstance(out, rnn_utils.PackedSequence)
    assert torch.equal(out.batch_sizes, ref_out.batch_sizes)
    for a, b in ((out.sorted_indices, ref_out.sorted_indices), (out.unsorted_indices, ref_out.unsorted_indices)):
        assert (a is None and b is None) or torch.equal(a, b)
    _close((out, final), (ref_out, ref_final))
    _close(grads, ref_grads)
    assert [len(s) for s in rnn_utils.unpack_sequence(out)] == lengths


@mode_backend
def test_packed_sequence_type_casts(mode, backend):
    """test_type_casts through the layer: ``packed.double()``/``.float()`` feed a layer of that
    dtype, as with torch.nn."""
    lengths = [5, 3, 2]
    for cast, dtype in (("double", torch.float64), ("float", torch.float32)):
        m, ref = _pair(mode, 3, 4, backend=backend, dtype=dtype)
        packed = rnn_utils.pack_sequence(_sequences(lengths, dtype=torch.float32), enforce_sorted=False)
        packed = getattr(packed, cast)()
        assert packed.data.dtype == dtype
        out, ref_out = m(packed), ref(packed)
        assert out[0].data.dtype == dtype
        _close(out, ref_out)


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@mode_backend
def test_pad_packed_output_total_length(mode, backend, batch_first):
    """test_total_length through the layer: the padded output, grown to total_length, is zero
    past each sequence's end and equals torch.nn's."""
    lengths = [5, 3, 3, 1]
    m, ref = _pair(mode, 3, 4, 2, bidirectional=True, batch_first=batch_first, backend=backend)
    packed = rnn_utils.pack_sequence(_sequences(lengths))
    for total in (5, 6, 13):
        out, lens = rnn_utils.pad_packed_sequence(m(packed)[0], batch_first=batch_first, total_length=total)
        ref_out, _ = rnn_utils.pad_packed_sequence(ref(packed)[0], batch_first=batch_first, total_length=total)
        assert out.size(1 if batch_first else 0) == total
        assert lens.tolist() == lengths
        _close(out, ref_out)
        for b, n in enumerate(lengths):
            pad = out[b, n:] if batch_first else out[n:, b]
            assert torch.count_nonzero(pad) == 0


# -- weight norm and parametrizations ---------------------------------------------------------


@pytest.mark.parametrize("name", ["weight_hh_l0", "weight_hr_l0"])
@backends
def test_legacy_weight_norm(backend, name):
    """test_RNN_cudnn_weight_norm (CPU): torch.nn.utils.weight_norm leaves the output unchanged,
    and so does removing it."""
    kw = {"proj_size": 3} if name == "weight_hr_l0" else {}
    m = rnnkit.LSTM(10, 6, 2, backend=backend, **kw)
    x = torch.randn(7, 6, 10)
    expected = m(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        m = torch.nn.utils.weight_norm(m, name=name)
        _close(m(x), expected)
        m = torch.nn.utils.remove_weight_norm(m, name=name)
    _close(m(x), expected)


class _Scaled(nn.Module):
    """A custom parametrization with a parameter of its own."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.9))

    def forward(self, w):
        return w * self.scale + 0.01 * torch.tanh(w)


def _parametrize(module, kind):
    if kind == "weight_norm":
        weight_norm(module, "weight_hh_l0")
    elif kind == "spectral_norm":
        spectral_norm(module, "weight_hh_l0")
    else:
        parametrize.register_parametrization(module, "weight_hh_l0", _Scaled())
        parametrize.register_parametrization(module, "weight_ih_l0", _Scaled())
    return module


def _parametrized_pair(mode, backend, kind, **kw):
    torch.manual_seed(0)
    ref = _parametrize(getattr(nn, mode)(3, 4, 2, **kw), kind)
    m = _parametrize(getattr(rnnkit, mode)(3, 4, 2, backend=backend, **kw), kind)
    m.load_state_dict(ref.state_dict())
    assert parametrize.is_parametrized(m, "weight_hh_l0")
    return m, ref


KINDS = ("weight_norm", "spectral_norm", "custom")
TOL = {"rtol": 1e-4, "atol": 1e-5}  # float32, over several SGD steps


@pytest.mark.parametrize("kind", KINDS)
@mode_backend
def test_parametrized_weights_eval(mode, backend, kind):
    """50 eval-mode calls (fresh inputs) on a parametrized layer equal torch.nn's, also inside
    ``parametrize.cached()``."""
    m, ref = _parametrized_pair(mode, backend, kind)
    m.eval()
    ref.eval()
    with torch.no_grad():
        for step in range(50):
            x = torch.randn(4, 2, 3)
            _close(m(x), ref(x), **TOL)
            if step == 25:
                with parametrize.cached():
                    _close(m(x), ref(x), **TOL)
                    _close(m(x), ref(x), **TOL)


@pytest.mark.parametrize("kind", KINDS)
@mode_backend
def test_parametrized_weights_training(mode, backend, kind):
    """A short SGD loop on a parametrized layer: each step's outputs and every parameter's
    gradient (the parametrization's originals included) equal torch.nn's; no step reuses an
    earlier step's graph."""
    m, ref = _parametrized_pair(mode, backend, kind, bidirectional=True)
    m.train()
    ref.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    names = [n for n, _ in ref.named_parameters()]
    assert [n for n, _ in m.named_parameters()] == names
    for _ in range(6):
        x = torch.randn(5, 3, 3)
        hx = _state(mode, 4, 3, 4)
        results = []
        for module, o in ((m, opt), (ref, ref_opt)):
            o.zero_grad()
            out, final = module(x, hx)
            loss = out.square().mean() + sum(t.square().mean() for t in _tensors(final))
            loss.backward()
            results.append((out, final, [p.grad for p in module.parameters()]))
        (out, final, grads), (ref_out, ref_final, ref_grads) = results
        _close((out, final), (ref_out, ref_final), **TOL)
        for name, g, rg in zip(names, grads, ref_grads, strict=True):
            assert (g is None) == (rg is None), name
            if g is not None:
                torch.testing.assert_close(g, rg, **TOL, msg=lambda s, name=name: f"{name}: {s}")
        opt.step()
        ref_opt.step()
    _close(list(m.state_dict().values()), list(ref.state_dict().values()), **TOL)
