"""torch's own ``module_db`` entries for ``torch.nn.RNN/GRU/LSTM``, run on ``rnnkit.RNN/GRU/LSTM``.

The behaviours are those that PyTorch's ``test/test_modules.py`` checks for every module (forward
against the entry's reference, factory kwargs, repr, save/load, inputs left untouched,
non-contiguous inputs, gradcheck/gradgradcheck, the entry's error inputs, train/eval, ``.to()``,
``.to_empty()``, construction under a device context, memory formats, device transfer), each on
CPU for every backend that runs these layers there. Every output is also compared with the
``torch.nn`` module holding the same ``state_dict``.

Each test loops over the entry's samples (as test_modules.py does) and fails with the list of
samples that failed, grouped by error. A forced backend that cannot run a layer raises
``ValueError``; such a sample is skipped only where ``backend="auto"`` rejects that path too
(its ``explain()`` gives the reason), otherwise it fails.

rnnkit has no drop-in cells, so the RNNCell/GRUCell/LSTMCell entries are not run.
"""

from __future__ import annotations

import contextlib
import copy
import io
import pickle
import re
import sys
import types
import unittest
import warnings
from collections import defaultdict
from itertools import product

import pytest
import torch
import torch.utils._pytree as pytree
from torch.nn.utils.rnn import PackedSequence

import rnnkit


def _import_common_modules():
    """``torch.testing._internal.common_modules``, without leaking its import-time side effects
    (frozen ``torch.backends`` flags, a hypothesis profile, patched TorchScript calls) into the
    rest of the test session. ``expecttest`` is only needed by torch's TestCase base class."""
    try:
        import expecttest  # noqa: F401
    except ImportError:
        stub = types.ModuleType("expecttest")
        stub.TestCase = unittest.TestCase
        stub.ACCEPT = False
        sys.modules["expecttest"] = stub
    frozen = torch.backends.flags_frozen()
    script_calls = (torch._C.ScriptFunction.__call__, torch._C.ScriptMethod.__call__)
    try:
        import hypothesis

        profile = hypothesis.settings.get_current_profile_name()
    except (ImportError, AttributeError):
        hypothesis, profile = None, None
    try:
        from torch.testing._internal import common_modules, common_utils
    finally:
        if not frozen:
            setattr(torch.backends, "__allow_nonbracketed_mutation_flag", True)
        torch._C.ScriptFunction.__call__, torch._C.ScriptMethod.__call__ = script_calls
        if hypothesis is not None and profile is not None:
            hypothesis.settings.load_profile(profile)
    return common_modules, common_utils


common_modules, common_utils = _import_common_modules()
ModuleErrorEnum = common_modules.ModuleErrorEnum
freeze_rng_state = common_utils.freeze_rng_state
gradcheck = common_utils.gradcheck  # torch's wrapper: fast_mode and check_batched_grad on
gradgradcheck = common_utils.gradgradcheck

DROP_INS = {torch.nn.RNN: rnnkit.RNN, torch.nn.GRU: rnnkit.GRU, torch.nn.LSTM: rnnkit.LSTM}
INFOS = [info for info in common_modules.module_db if info.module_cls in DROP_INS]
BACKENDS = ("auto", "fused", "fast", "sequential")
DEVICE = "cpu"
DTYPES = (torch.float32, torch.float64)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def _cases(dtypes=DTYPES):
    return [
        pytest.param(info, backend, dtype, id=f"{info.module_cls.__name__}-{backend}-{str(dtype)[6:]}")
        for info in INFOS
        for backend in BACKENDS
        for dtype in dtypes
        if dtype in info.supported_dtypes(DEVICE)
    ]


def test_module_db_has_the_three_layers():
    assert {info.module_cls for info in INFOS} == set(DROP_INS)


# -- helpers ----------------------------------------------------------------------------------


class _CannotRun(Exception):
    """A forced backend refused a layer that ``backend="auto"`` also rejects for that path."""


def _samples(info, dtype, requires_grad=False, training=True, thin=False, few=False):
    """The entry's samples. ``thin`` keeps the half whose (bias, batch_first, bidirectional)
    have an even number of True (every pair of those options still meets in all four ways),
    to keep the slower checks short; test_forward and test_errors take every sample. ``few``
    keeps, of those, the bidirectional ones given an hx (both directions, the hx gradient)."""
    inputs = info.module_inputs_func(info, device=DEVICE, dtype=dtype, requires_grad=requires_grad, training=training)
    out = [s for s in inputs if s.forward_input is not None]
    if thin or few:
        kw = [s.constructor_input.kwargs for s in out]
        out = [s for s, k in zip(out, kw, strict=True) if (k["bias"] + k["batch_first"] + k["bidirectional"]) % 2 == 0]
    if few:
        out = [s for s in out if s.constructor_input.kwargs["bidirectional"] and len(s.forward_input.args) == 2]
    return out


@contextlib.contextmanager
def _swapping(swap: bool):
    """``torch.__future__``'s swap-on-conversion flag set to ``swap`` within the block."""
    old = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(swap)
    try:
        yield
    finally:
        torch.__future__.set_swap_module_params_on_conversion(old)


def _no_swap():
    """torch.nn's RNNs keep weakrefs to their weights, so ``load_state_dict`` cannot swap them."""
    return _swapping(False)


def _describe(sample) -> str:
    kw = sample.constructor_input.kwargs
    keys = ("num_layers", "bias", "batch_first", "bidirectional", "nonlinearity", "proj_size", "hidden_size")
    cfg = ",".join(f"{k}={kw[k]}" for k in keys if k in kw)
    shapes = [tuple(t.shape) for t in _tensors(sample.forward_input.args)]
    return f"({cfg}) inputs {shapes}"


def _tensors(obj) -> list[torch.Tensor]:
    return [t for t in pytree.tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


def _rnnkit(info, sample, backend, **extra):
    c = sample.constructor_input
    return DROP_INS[info.module_cls](*c.args, **c.kwargs, **extra, backend=backend)


def _twin(info, sample, m):
    """The torch.nn module with ``m``'s constructor arguments and state."""
    c = sample.constructor_input
    ref = info.module_cls(*c.args, **c.kwargs)
    ref.to(next(m.parameters()).dtype)
    with _no_swap():
        ref.load_state_dict(m.state_dict())
    ref.train(m.training)
    return ref


def _call(info, sample, m, *args, **kwargs):
    """``m(*args, **kwargs)``; a forced backend's refusal becomes :class:`_CannotRun` where
    ``backend="auto"`` rejects the same path for this input (and stays an error where not)."""
    try:
        return m(*args, **kwargs)
    except ValueError as e:
        if m.backend == "auto" or "was requested but" not in str(e):
            raise
        probe = args[0]
        auto = _rnnkit(info, sample, "auto").to(next(m.parameters()).dtype)
        report = auto.explain(probe)
        if m.backend in report.rejected:
            raise _CannotRun(f"{m.backend}: {report.rejected[m.backend]}") from e
        raise AssertionError(f"backend={m.backend!r} refused a layer that backend='auto' runs on it: {e}") from e


def _close(actual, expected, **tol):
    if isinstance(expected, PackedSequence):
        assert isinstance(actual, PackedSequence)
        torch.testing.assert_close(actual.data, expected.data, **tol)
        torch.testing.assert_close(actual.batch_sizes, expected.batch_sizes)
        return
    torch.testing.assert_close(actual, expected, **tol)


def _run_samples(samples, body) -> None:
    """Run ``body(sample)`` for each sample; fail listing the failed samples grouped by error,
    skip if every sample was refused by its forced backend."""
    errors: dict[str, list[str]] = defaultdict(list)
    refused: dict[str, int] = defaultdict(int)
    for sample in samples:
        try:
            body(sample)
        except _CannotRun as e:
            refused[str(e)] += 1
        except Exception as e:  # noqa: BLE001 - collect every sample's failure
            text = f"{type(e).__name__}: {str(e).strip()}"
            if e.__cause__ is not None and not isinstance(e.__cause__, ValueError):
                text += f" (from {type(e.__cause__).__name__}: {e.__cause__})"
            text = re.sub(r"\s+", " ", text)[:600]
            errors[text].append(_describe(sample))
    if errors:
        lines = [f"{sum(map(len, errors.values()))} of {len(samples)} samples failed"]
        for text, where in errors.items():
            lines.append(f"[{len(where)}x, e.g. {where[0]}] {text}")
        pytest.fail("\n".join(lines), pytrace=False)
    if refused and sum(refused.values()) == len(samples):
        pytest.skip("; ".join(f"{n}x {why}" for why, n in refused.items()))
    if refused:
        warnings.warn("forced backend refused some samples: " + "; ".join(f"{n}x {why}" for why, n in refused.items()),
                      stacklevel=2)


def _other(dtype):
    return torch.float64 if dtype == torch.float32 else torch.float32


def _cast(obj, dtype):
    return pytree.tree_map(lambda t: t.to(dtype) if isinstance(t, torch.Tensor) else t, obj)


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(("info", "backend", "dtype"), _cases())
def test_forward(info, backend, dtype, training):
    """Output equals the entry's reference (batched run of the unbatched input) and torch.nn's;
    the inputs are not modified; ``.float()``/``.double()`` convert every parameter."""
    method = {torch.float32: "float", torch.float64: "double"}[dtype]

    def body(sample):
        args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
        with freeze_rng_state():
            m = _rnnkit(info, sample, backend)
            m.to(DEVICE).to(dtype)
            m.train(training)
            before = [(t._version, t.clone()) for t in _tensors((args, kwargs))]
            out = _call(info, sample, m, *args, **kwargs)
            for t, (version, value) in zip(_tensors((args, kwargs)), before, strict=True):
                assert t._version == version, "forward modified an input in place"
                torch.testing.assert_close(t, value, rtol=0, atol=0)
            if sample.reference_fn is not None:
                _close(out, sample.reference_fn(m, *args, **kwargs))
            _close(out, _twin(info, sample, m)(*args, **kwargs))
            getattr(m, method)()
            _call(info, sample, m, *args, **kwargs)
            for name, p in [*m.named_parameters(), *m.named_buffers()]:
                assert p.device.type == DEVICE and p.dtype == dtype, f"{name}: {p.device} {p.dtype}"

    _run_samples(_samples(info, dtype, training=training), body)


@pytest.mark.parametrize(("info", "backend", "dtype"), _cases())
def test_factory_kwargs(info, backend, dtype):
    """``device=``/``dtype=`` reach every parameter and buffer; names and shapes are torch.nn's."""

    def body(sample):
        m = _rnnkit(info, sample, backend, device=DEVICE, dtype=dtype)
        for name, p in [*m.named_parameters(), *m.named_buffers()]:
            assert p.device == torch.device(DEVICE), f"{name} on {p.device}"
            if p.dtype.is_floating_point:
                assert p.dtype == dtype, f"{name} is {p.dtype}"
        c = sample.constructor_input
        ref = info.module_cls(*c.args, **c.kwargs, device=DEVICE, dtype=dtype)
        assert [(n, p.shape) for n, p in m.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]

    _run_samples(_samples(info, dtype), body)


@pytest.mark.parametrize(("info", "backend", "dtype"), _cases())
def test_repr(info, backend, dtype):
    """repr/str work; with the default backend they are torch.nn's."""

    def body(sample):
        m = _rnnkit(info, sample, backend).to(dtype)
        text = repr(m)
        str(m)
        if backend == "auto":
            assert text == repr(_twin(info, sample, m))
        else:
            assert f"backend={backend!r}" in text

    _run_samples(_samples(info, dtype), body)


@pytest.mark.parametrize(("info", "backend", "dtype"), _cases())
def test_save_load(info, backend, dtype):
    """A pickled/deep-copied module gives the same output; the state_dict survives
    ``torch.save``/``torch.load(weights_only=True)`` and loads into rnnkit and torch.nn alike."""

    def body(sample):
        args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
        with freeze_rng_state():
            m = _rnnkit(info, sample, backend).to(dtype)
            out = _call(info, sample, m, *args, **kwargs)
            for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
                _close(clone(*args, **kwargs), out)
            sd = m.state_dict()
            buf = io.BytesIO()
            torch.save(sd, buf)
            buf.seek(0)
            loaded = torch.load(buf, weights_only=True)
            _close(dict(loaded), dict(sd))
            fresh = _rnnkit(info, sample, backend).to(dtype)
            fresh.load_state_dict(loaded, strict=True)
            _close(fresh(*args, **kwargs), out)
            ref = info.module_cls(*sample.constructor_input.args, **sample.constructor_input.kwargs).to(dtype)
            ref.load_state_dict(loaded, strict=True)
            _close(ref(*args, **kwargs), out)

    _run_samples(_samples(info, dtype, thin=True), body)


@pytest.mark.parametrize(("info", "backend", "dtype"), _cases())
def test_inputs_not_modified(info, backend, dtype):
    """test_check_inplace's out-of-place half (these modules have no ``inplace=``): neither
    forward nor backward bumps an input's version counter, and the output aliases no input."""

    def body(sample):
        args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
        m = _rnnkit(info, sample, backend).to(dtype)
        versions = [t._version for t in _tensors((args, kwargs))]
        out = _call(info, sample, m, *args, **kwargs)
        assert [t._version for t in _tensors((args, kwargs))] == versions, "forward wrote to an input"
        ptrs = {t.data_ptr() for t in _tensors((args, kwargs))}
        assert not any(o.data_ptr() in ptrs for o in _tensors(out) if o.numel()), "an output aliases an input"
        sum(o.sum() for o in _tensors(out)).backward()
        assert [t._version for t in _tensors((args, kwargs))] == versions, "backward wrote to an input"

    _run_samples(_samples(info, dtype, requires_grad=True, thin=True), body)


@pytest.mark.parametrize(("info", "backend", "dtype"), _cases())
def test_non_contiguous_tensors(info, backend, dtype):
    """Non-contiguous inputs and grad_outputs give the same outputs and gradients."""

    def noncontig(obj):
        def one(t):
            if not isinstance(t, torch.Tensor) or t.dim() == 0:
                return t
            out = torch.repeat_interleave(t, 2, dim=-1)[..., ::2].detach()
            out.requires_grad_(t.requires_grad)
            return out

        return pytree.tree_map(one, obj)

    def run(m, sample, inputs, grads):
        args, kwargs = inputs
        leaves = [t for t in _tensors(inputs) if t.requires_grad]
        for t in [*leaves, *m.parameters()]:
            t.grad = None
        with freeze_rng_state():
            out = _call(info, sample, m, *args, **kwargs)
        pairs = [(o, g) for o, g in zip(_tensors(out), _tensors(grads), strict=True) if o.requires_grad]
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        return out, [t.grad for t in leaves], [p.grad for p in m.parameters()]

    def body(sample):
        m = _rnnkit(info, sample, backend).to(dtype)
        inputs = (sample.forward_input.args, sample.forward_input.kwargs)
        with freeze_rng_state():
            probe = _call(info, sample, m, *inputs[0], **inputs[1])
        grads = pytree.tree_map(lambda t: torch.randn_like(t) if isinstance(t, torch.Tensor) else t, probe)
        ref_out, ref_in_grads, ref_p_grads = run(m, sample, inputs, grads)
        ref_in_grads = [g.clone() for g in ref_in_grads]
        ref_p_grads = [g.clone() for g in ref_p_grads]
        twin = _twin(info, sample, m)
        twin_out, twin_in_grads, twin_p_grads = run(twin, sample, inputs, grads)
        _close(ref_out, twin_out)
        _close(ref_in_grads, [g.clone() for g in twin_in_grads])
        _close(ref_p_grads, [g.clone() for g in twin_p_grads])
        for ins, gs in product((inputs, noncontig(inputs)), (grads, noncontig(grads))):
            out, in_grads, p_grads = run(m, sample, ins, gs)
            _close(out, ref_out)
            _close(in_grads, ref_in_grads, atol=1e-4, rtol=0)
            _close(p_grads, ref_p_grads)

    _run_samples(_samples(info, dtype, requires_grad=True, thin=True), body)


def _gradients(info, backend, dtype, check, partial: bool, bias_only: bool = False):
    """test_grad/test_gradgrad: ``check`` on input + parameters + hx, then, if ``partial``, on
    input and hx with one parameter at a time (on the first sample with biases, to keep it short)."""
    samples = _samples(info, dtype, requires_grad=True, few=True)
    if bias_only:
        samples = [s for s in samples if s.constructor_input.kwargs["bias"]]
    partial_on = [s for s in samples if s.constructor_input.kwargs["bias"]][:1] if partial else []

    def body(sample):
        with_partial = any(sample is s for s in partial_on)
        m = _rnnkit(info, sample, backend).to(dtype)
        params = tuple(m.parameters())
        args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
        assert not kwargs
        with freeze_rng_state():
            _call(info, sample, m, *args)  # a refused backend shows here, not inside the check

        def fn(*flat):
            new_args = pytree.tree_unflatten(list(flat), spec)[: len(args)]
            with freeze_rng_state():
                return pytree.tree_flatten(m(*new_args))[0]

        flat, spec = pytree.tree_flatten((*args, *params))
        assert check(fn, flat), "check returned False"
        # the analytical gradients also equal torch.nn's
        twin = _twin(info, sample, m)
        for mod in (m, twin):
            for t in [*flat]:
                t.grad = None
            outs = pytree.tree_flatten(mod(*args))[0]
            sum((o * (k + 1)).sum() for k, o in enumerate(outs)).backward()
            if mod is m:
                mine = [t.grad.clone() if t.grad is not None else None for t in [*_tensors(args), *params]]
            else:
                theirs = [t.grad for t in [*_tensors(args), *twin.parameters()]]
        _close(mine, theirs)
        if not with_partial:
            return
        for p in params:
            p.requires_grad_(False)
        try:
            for p in params:
                p.requires_grad_(True)
                flat, spec = pytree.tree_flatten((*args, *params))
                assert check(fn, flat), "check returned False"
                p.requires_grad_(False)
        finally:
            for p in params:
                p.requires_grad_(True)

    _run_samples(samples, body)


@pytest.mark.parametrize(("info", "backend", "dtype"), _cases((torch.float64,)))
def test_grad(info, backend, dtype):
    _gradients(info, backend, dtype, gradcheck, partial=True)


@pytest.mark.parametrize(("info", "backend", "dtype"), _cases((torch.float64,)))
def test_gradgrad(info, backend, dtype):
    assert info.supports_gradgrad
    _gradients(info, backend, dtype, gradgradcheck, partial=False, bias_only=True)


@pytest.mark.parametrize(("info", "backend", "dtype"), _cases())
def test_errors(info, backend, dtype):
    """Each of the entry's error inputs raises the class torch expects, with torch's message."""
    cases = info.module_error_inputs_func(info, device=DEVICE, dtype=dtype, requires_grad=False, training=True)
    failures = []
    for case in cases:
        c = case.module_error_input.constructor_input
        label = f"{case.error_on.name} {c.args} {c.kwargs} -> {case.error_type.__name__}({case.error_regex!r})"
        try:
            if case.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
                DROP_INS[info.module_cls](*c.args, **c.kwargs, backend=backend)
            else:
                m = DROP_INS[info.module_cls](*c.args, **c.kwargs, backend=backend)
                f = case.module_error_input.forward_input
                m(*f.args, **f.kwargs)
        except Exception as e:  # noqa: BLE001
            if not isinstance(e, case.error_type):
                failures.append(f"{label}: raised {type(e).__name__}: {e}")
            elif not re.search(case.error_regex, str(e)):
                failures.append(f"{label}: right class {type(e).__name__}, message does not match: {e}")
        else:
            failures.append(f"{label}: nothing raised")
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


@pytest.mark.parametrize(("info", "backend", "dtype"), _cases())
def test_if_train_and_eval_modes_differ(info, backend, dtype):
    """Without a ``training`` attribute the forward either runs or fails on reading it; the
    entry says train and eval differ (dropout), which is then consistent."""

    def body(sample):
        m = _rnnkit(info, sample, backend).to(dtype)
        delattr(m, "training")
        try:
            _call(info, sample, m, *sample.forward_input.args, **sample.forward_input.kwargs)
        except AttributeError as e:
            if "'training'" not in str(e):
                raise
            assert info.train_and_eval_differ

    _run_samples(_samples(info, dtype, thin=True), body)


@pytest.mark.parametrize("set_grad", [False, True], ids=["nograd", "grad"])
@pytest.mark.parametrize("swap", [False, True], ids=["setdata", "swap"])
@pytest.mark.parametrize(("info", "backend", "dtype"), _cases())
def test_to(info, backend, dtype, swap, set_grad):
    """``.to(dtype)`` keeps Parameters (the same objects), converts their grads, works after a
    forward/backward with swapped parameters, and the layer then equals torch.nn's."""

    def body(sample):
        args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
        m = _rnnkit(info, sample, backend)
        for name, p in list(m.named_parameters()):  # place the parameters without .to()
            new = torch.nn.Parameter(p.detach().clone().to(DEVICE, dtype))
            setattr(m, name, new)
            if set_grad:
                new.grad = torch.randn_like(new)
        if swap and not set_grad:
            out = _call(info, sample, m, *_cast(args, dtype), **kwargs)
            pytree.tree_flatten(out)[0][0].sum().backward()
            m.to(dtype=torch.half)
            m.to(dtype=dtype)
        prev = dtype
        for new_dtype in info.supported_dtypes(DEVICE):
            ids = [id(p) for p in m.parameters()]
            cdatas = [p._cdata for p in m.parameters()]
            m.to(device=DEVICE, dtype=new_dtype)
            params = list(m.parameters())
            assert all(isinstance(p, torch.nn.Parameter) for p in params)
            assert all(p.device.type == DEVICE and p.dtype == new_dtype for p in params)
            assert [id(p) for p in params] == ids, "parameters were replaced by new objects"
            if not swap:
                assert [p._cdata for p in params] == cdatas
            elif new_dtype != prev:
                assert all(a != b for a, b in zip(cdatas, [p._cdata for p in params], strict=True))
            if set_grad:
                assert all(p.grad is not None and p.grad.dtype == new_dtype for p in params)
            prev = new_dtype
            x = _cast(args, new_dtype)
            _close(_call(info, sample, m, *x, **kwargs), _twin(info, sample, m)(*x, **kwargs))

    with _swapping(swap):
        _run_samples(_samples(info, dtype, few=True), body)


@pytest.mark.parametrize("swap", [False, True], ids=["setdata", "swap"])
@pytest.mark.parametrize(("info", "backend", "dtype"), _cases((torch.float32,)))
def test_to_empty(info, backend, dtype, swap):
    """A layer built on the meta device and moved with ``.to_empty()`` has real CPU Parameters
    (the same objects when swapping) and, given torch.nn's weights, computes what torch.nn does."""

    def body(sample):
        with torch.device("meta"):
            m = _rnnkit(info, sample, backend)
        ids = [id(p) for p in m.parameters()]
        m.to_empty(device=DEVICE)
        params = list(m.parameters())
        assert all(isinstance(p, torch.nn.Parameter) for p in params)
        assert all(p.device == torch.device(DEVICE) and p.dtype == dtype for p in params)
        if swap:
            assert [id(p) for p in params] == ids
        c = sample.constructor_input
        ref = info.module_cls(*c.args, **c.kwargs).to(dtype)
        with _no_swap():
            m.load_state_dict(ref.state_dict())
        args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
        _close(_call(info, sample, m, *args, **kwargs), ref(*args, **kwargs))

    with _swapping(swap):
        _run_samples(_samples(info, dtype, few=True), body)


@pytest.mark.parametrize(("info", "backend", "dtype"), _cases((torch.float32,)))
def test_device_ctx_init(info, backend, dtype):
    """Built under ``with torch.device("meta")``, every parameter is on meta with the metadata
    of the CPU-built layer's."""

    def body(sample):
        cpu = _rnnkit(info, sample, backend)
        with torch.device("meta"):
            meta = _rnnkit(info, sample, backend)
        pairs = list(zip(meta.named_parameters(), cpu.named_parameters(), strict=True))
        pairs += list(zip(meta.named_buffers(), cpu.named_buffers(), strict=True))
        for (n_meta, p_meta), (n_cpu, p_cpu) in pairs:
            assert n_meta == n_cpu
            assert p_meta.is_meta, n_meta
            assert (p_meta.shape, p_meta.dtype, p_meta.stride(), p_meta.requires_grad) == (
                p_cpu.shape, p_cpu.dtype, p_cpu.stride(), p_cpu.requires_grad
            ), n_meta

    _run_samples(_samples(info, dtype, few=True), body)


@pytest.mark.parametrize(("info", "backend", "dtype"), _cases())
def test_memory_format(info, backend, dtype):
    """``.to(memory_format=...)`` (contiguous/preserve: the inputs are not 4-/5-D) changes
    nothing: same outputs and gradients, all contiguous (training mode, where test_modules.py
    also checks the gradients; these layers have no dropout here, so eval runs the same)."""
    training = True

    def body(sample):
        args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
        with freeze_rng_state():
            m = _rnnkit(info, sample, backend).to(dtype)
            m.train(training)
            ref = _call(info, sample, m, *args, **kwargs)
            diff_in = [t for t in [*_tensors((args, kwargs)), *m.parameters()] if t.requires_grad]
            diff_out = [t for t in _tensors(ref) if t.requires_grad]
            g_out = [torch.rand_like(t) for t in diff_out]
            ref_grads = torch.autograd.grad(diff_out, diff_in, g_out) if training else None
            for fmt in (torch.preserve_format, torch.contiguous_format):
                m.to(memory_format=fmt)
                out = m(*args, **kwargs)
                _close(out, ref)
                assert all(t.is_contiguous() for t in _tensors(out)), "an output is not contiguous"
                if training:
                    d_in = [t for t in [*_tensors((args, kwargs)), *m.parameters()] if t.requires_grad]
                    grads = torch.autograd.grad([t for t in _tensors(out) if t.requires_grad], d_in, g_out)
                    _close(grads, ref_grads)
                    assert all(g.is_contiguous() for g in grads), "a gradient is not contiguous"

    _run_samples(_samples(info, dtype, requires_grad=True, training=training, thin=True), body)


@pytest.mark.parametrize(("info", "backend", "dtype"), _cases())
def test_multiple_device_transfer(info, backend, dtype):
    """CPU only here: ``.cpu()``, ``.to("cpu")``, ``.to(torch.device("cpu"))`` and a dtype round
    trip each leave a working layer on CPU, equal to torch.nn's."""

    def body(sample):
        args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
        m = _rnnkit(info, sample, backend).to(DEVICE).to(dtype)
        expected = _twin(info, sample, m)(*args, **kwargs)
        for move in (lambda: m.cpu(), lambda: m.to("cpu"), lambda: m.to(torch.device("cpu")),
                     lambda: m.to(_other(dtype)).to(dtype)):
            move()
            assert all(p.device.type == "cpu" and p.dtype == dtype for p in m.parameters())
            _close(_call(info, sample, m, *args, **kwargs), expected)

    _run_samples(_samples(info, dtype, few=True), body)
