"""rnnkit on a CUDA device: the drop-ins against torch.nn on cuDNN, the fast engine and the parallel
scans against the sequential reference on the GPU, the CPU and GPU results against each other, and
``torch.compile`` on the GPU. Skipped without CUDA (CI has none); run on a lent GPU by
``scripts/gpu_checks.sh``. The Triton kernels have their own file (``test_triton_kernels.py``)."""

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.cells import LayerNormGRUCell, LayerNormLSTMCell, MinGRUCell, MinLSTMCell, PeepholeLSTMCell

if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

CUDA = torch.device("cuda")
B, T, I, H = 4, 9, 6, 8
LENGTHS = [9, 3, 7, 1]


def run(layer, x, lengths=None, call=None, seed=3):
    """Output, final state and every gradient after a weighted-sum loss (``call(layer, x)`` runs
    the layer, when given)."""
    torch.manual_seed(seed)
    x = x.clone().requires_grad_()
    if call is not None:
        out, final = call(layer, x)
    else:
        out, final = layer(x, lengths=lengths) if lengths is not None else layer(x)
    final = final if isinstance(final, tuple) else (final,)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)
    ((out * weights).sum() + sum((f * f).sum() for f in final)).backward()
    return [out, *final, x.grad] + [p.grad for p in layer.parameters()]


def close(got, want, tol, what):
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a.cpu(), b.cpu(), atol=tol * scale, rtol=tol,
                                   msg=lambda m, k=k: f"{what}: item {k}\n{m}")


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dropins_equal_torch_nn_on_cudnn(kind, dtype):
    """Same state_dict, same cuDNN kernel: rnnkit's drop-in (with ``lengths=``) equals torch.nn
    run on a PackedSequence of the same batch, values and gradients."""
    torch.manual_seed(0)
    ours = getattr(rnnkit, kind)(I, H, num_layers=2, bidirectional=True, batch_first=True).to(CUDA, dtype)
    ref = getattr(nn, kind)(I, H, num_layers=2, bidirectional=True, batch_first=True).to(CUDA, dtype)
    ref.load_state_dict(ours.state_dict())
    assert "cuDNN" in str(ours.explain(torch.zeros(1, 1, I, device=CUDA, dtype=dtype)))
    x = torch.randn(B, T, I, device=CUDA, dtype=dtype)
    got = run(ours, x, lengths=LENGTHS)

    def packed(layer, x):
        pack = nn.utils.rnn.pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
        out, final = layer(pack)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
        return out, final

    want = run(ref, x, call=packed)
    close(got, want, 1e-10 if dtype == torch.float64 else 1e-5, kind)


CELLS = {
    "ln_lstm": lambda: LayerNormLSTMCell(I, H, peephole=True, recurrent_dropout=0.3, zoneout=(0.2, 0.4)),
    "peephole_proj": lambda: PeepholeLSTMCell(I, H, proj_size=5),
    "ln_gru": lambda: LayerNormGRUCell(I, H, recurrent_dropout=0.3, zoneout=0.2),
    "indrnn": lambda: rnnkit.IndRNNCell(I, H),
}


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("training", [True, False])
def test_fast_engine_on_gpu_equals_sequential_reference(name, training):
    """float64 on the GPU: the fast engine (hand-written backward) equals the per-step autograd
    loop to 1e-10, stacked, bidirectional, with lengths, dropout masks drawn alike."""
    torch.manual_seed(0)
    fast = rnnkit.Recurrent(CELLS[name](), num_layers=2, bidirectional=True, backend="fast").to(CUDA, torch.float64)
    ref = rnnkit.Recurrent(CELLS[name](), num_layers=2, bidirectional=True, backend="sequential")
    ref = ref.to(CUDA, torch.float64)
    ref.load_state_dict(fast.state_dict())
    fast.train(training)
    ref.train(training)
    x = torch.randn(B, T, I, device=CUDA, dtype=torch.float64)
    close(run(fast, x, lengths=LENGTHS), run(ref, x, lengths=LENGTHS), 1e-10, name)


@pytest.mark.parametrize("cell", [MinGRUCell, MinLSTMCell])
@pytest.mark.parametrize("scan", ["log", "linear", "auto"])
def test_parallel_scans_on_gpu_equal_the_step_loop(cell, scan):
    """The parallel scans on the GPU (float64) equal the step-by-step recurrence, with lengths;
    "linear" and "auto" run the fused Triton scan kernels."""
    torch.manual_seed(0)
    par = rnnkit.Recurrent(cell(I, H, scan=scan), backend="parallel").to(CUDA, torch.float64)
    fused = "fused Triton" in par.explain(torch.zeros(1, 1, I, device=CUDA, dtype=torch.float64)).path
    assert fused == (scan != "log")
    ref = rnnkit.Recurrent(cell(I, H, scan=scan), backend="sequential").to(CUDA, torch.float64)
    ref.load_state_dict(par.state_dict())
    x = torch.randn(B, 300, I, device=CUDA, dtype=torch.float64)
    lengths = [300, 17, 150, 1]
    close(run(par, x, lengths=lengths), run(ref, x, lengths=lengths), 1e-9, f"{cell.__name__} {scan}")


def test_gpu_and_cpu_give_the_same_layer_norm_lstm():
    """The same float64 layer on CPU and GPU: same outputs and gradients (no device-specific math)."""
    torch.manual_seed(0)
    cpu = rnnkit.LSTM(I, H, num_layers=2, layer_norm=True, batch_first=True, dtype=torch.float64)
    gpu = rnnkit.LSTM(I, H, num_layers=2, layer_norm=True, batch_first=True, dtype=torch.float64).to(CUDA)
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(B, T, I, dtype=torch.float64)
    close(run(gpu, x.to(CUDA), lengths=LENGTHS), run(cpu, x, lengths=LENGTHS), 1e-10, "cpu vs gpu")


@pytest.mark.parametrize("options", [{}, {"layer_norm": True}], ids=["cudnn", "layer_norm"])
def test_compile_fullgraph_on_gpu(options):
    """``torch.compile(fullgraph=True)`` on the GPU: no graph break, the eager result, values and
    gradients. float64, because cuDNN's float32 RNN may use TF32 (``cudnn.allow_tf32`` is on by
    default; measured: 2e-4 from the compiled float32 result)."""
    torch.manual_seed(0)
    layer = rnnkit.LSTM(I, H, batch_first=True, **options).to(CUDA, torch.float64)
    x = torch.randn(B, T, I, device=CUDA, dtype=torch.float64)
    want = run(layer, x)
    layer.zero_grad()
    compiled = torch.compile(layer, fullgraph=True)
    got = run(compiled, x)
    close(got, want, 1e-9, f"compiled {options}")


@pytest.mark.parametrize("cell", [
    lambda: LayerNormLSTMCell(I, 72, recurrent_dropout=0.3, zoneout=(0.2, 0.1)),  # H > 64: per-step forward
    lambda: PeepholeLSTMCell(I, 16),  # the persistent forward, a graphed backward
    lambda: LayerNormGRUCell(I, H, recurrent_dropout=0.3, zoneout=0.2),
], ids=["ln_lstm", "peephole", "ln_gru"])
def test_triton_loops_replayed_as_cuda_graphs_equal_plain_launches(cell, monkeypatch):
    """The Triton path's loops replayed from CUDA graphs give the plain launches' values and
    gradients (float64), call after call with fresh dropout/zoneout masks, and one graph per
    signature is captured and then reused."""
    from rnnkit.scan.triton import graphs

    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell(), backend="triton", batch_first=True).to(CUDA, torch.float64)
    x = torch.randn(B, 12, I, device=CUDA, dtype=torch.float64)
    graphs.clear()
    for seed in (1, 2, 3):  # new masks each call: they are the graph's inputs, not baked in
        got = run(layer, x, lengths=[12, 5, 9, 1], seed=seed)
        layer.zero_grad()
        with monkeypatch.context() as m:
            m.setenv("RNNKIT_CUDA_GRAPHS", "0")
            want = run(layer, x, lengths=[12, 5, 9, 1], seed=seed)
        layer.zero_grad()
        close(got, want, 1e-12, f"graphs, seed {seed}")
    captured = len(graphs._graphs)
    assert 1 <= captured <= 2  # the backward (and the forward, unless persistent), captured once
    run(layer, x, lengths=[12, 5, 9, 1], seed=4)
    assert len(graphs._graphs) == captured
