"""TrainModule: clipping bounds the gradient, TBPTT with k >= T is full BPTT, truncation cuts
the gradient but not the forward, and the non-finite guard stops or skips naming step and layer."""

import math

import pytest
import torch
from torch import nn

pytest.importorskip("lightning")

import lightning as L  # noqa: E402

from rnnkit import Recurrent, make_cell  # noqa: E402
from rnnkit.train import NonFiniteError, NonFiniteGuard, OptimConfig, TBPTTConfig, TrainModule  # noqa: E402
from rnnkit.train.tbptt import Chunk, detach_state, reset_state, tbptt_chunks  # noqa: E402


class Tagger(nn.Module):
    """Per-step regression: Recurrent + Linear on every output. ``poison`` can make one layer NaN."""

    def __init__(self, cell="gru", hidden=6) -> None:
        super().__init__()
        self.rnn = Recurrent(make_cell(cell, 2, hidden))
        self.poison = Poison()
        self.head = nn.Linear(hidden, 1)

    def forward(self, x, state=None, lengths=None):
        out, state = self.rnn(x, state, lengths)
        return self.head(self.poison(out)).squeeze(-1), state  # (B, T)


class Poison(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mode = None  # None | "forward" (NaN output) | "backward" (NaN gradient)

    def forward(self, x):
        if self.mode == "forward":
            return x * float("nan")
        if self.mode == "backward":
            return _NaNGrad.apply(x)
        return x


class _NaNGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def _loader(n_batches=6, batch=4, steps=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = []
    for _ in range(n_batches):
        x = torch.randn(batch, steps, 2, generator=g)
        data.append((x, x[..., 0].cumsum(1) * 0.3))  # per-step target (B, T)
    return torch.utils.data.DataLoader(data, batch_size=None)


def _trainer(steps, callbacks=()):
    return L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, callbacks=list(callbacks), accelerator="cpu")


class _Norms(L.Callback):
    """Total gradient norm / max |g| as the monitors see it (before clipping) and as the
    optimizer sees it (after clipping)."""

    def __init__(self):
        self.before, self.after, self.after_max = [], [], []

    def on_train_start(self, trainer, pl_module):
        def hook(opt, args, kwargs):
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            self.after.append(float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))))
            self.after_max.append(max(float(g.abs().max()) for g in grads))
        trainer.optimizers[0].register_step_post_hook(hook)  # grads as the step used them

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = [p.grad.flatten() for p in pl_module.parameters() if p.grad is not None]
        self.before.append(float(torch.linalg.vector_norm(torch.cat(grads))))


def _big_loss(pred, target, mask=None):
    return 1e3 * (pred - target).pow(2).mean()


@pytest.mark.parametrize("tbptt", [None, TBPTTConfig(4)], ids=["bptt", "tbptt"])
def test_clip_by_norm_bounds_the_gradient_norm(tbptt):
    torch.manual_seed(0)
    norms = _Norms()
    module = TrainModule(Tagger(), _big_loss, optim=OptimConfig(name="sgd", lr=1e-4), clip_val=0.5, tbptt=tbptt)
    _trainer(6, [norms]).fit(module, _loader())
    assert max(norms.before) > 5.0  # clipping had work to do
    assert len(norms.after) == 6 and max(norms.after) <= 0.5 * (1 + 1e-5)


def test_clip_by_value_bounds_every_entry():
    torch.manual_seed(0)
    norms = _Norms()
    module = TrainModule(Tagger(), _big_loss, optim=OptimConfig(name="sgd", lr=1e-4), clip_val=0.01,
                         clip_algorithm="value")
    _trainer(3, [norms]).fit(module, _loader())
    assert max(norms.before) > 1.0 and max(norms.after_max) <= 0.01


@pytest.mark.parametrize("k", [9, 20])
@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_tbptt_with_k_at_least_T_equals_full_bptt(k, cell):
    def run(tbptt):
        torch.manual_seed(0)
        module = TrainModule(Tagger(cell), "mse", optim=OptimConfig(lr=1e-2), clip_val=1.0, tbptt=tbptt)
        _trainer(5).fit(module, _loader(steps=9))
        return module

    full, truncated = run(None), run(TBPTTConfig(k))
    for (name, a), (_, b) in zip(full.state_dict().items(), truncated.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7, msg=name)
    untouched = TrainModule(Tagger(cell))
    assert not torch.equal(untouched.model.head.weight, full.model.head.weight)  # training did move


def test_tbptt_with_k_below_T_differs_from_full_bptt():
    def run(tbptt):
        torch.manual_seed(0)
        module = TrainModule(Tagger(), "mse", optim=OptimConfig(lr=1e-2), tbptt=tbptt)
        _trainer(2).fit(module, _loader(steps=9))
        return module.model.head.weight.detach().clone()

    assert not torch.allclose(run(None), run(TBPTTConfig(3)))


def test_chunks_reproduce_the_forward_and_cut_the_gradient():
    torch.manual_seed(0)
    layer = Recurrent(make_cell("lstm", 2, 5)).double()
    x = torch.randn(3, 10, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([10, 4, 7])
    full, final = layer(x, lengths=lengths)

    def run(xc, lc, state):
        return layer(xc, state, lc)

    outs, state, chunks = [], None, list(tbptt_chunks(10, 3, lengths))
    assert [(c.start, c.stop, c.last) for c in chunks] == [(0, 3, False), (3, 6, False), (6, 9, False), (9, 10, True)]
    for c in chunks:
        y, state = c.run(run, x[:, c.start : c.stop], state)
        outs.append(y.masked_fill(~c.mask(y).unsqueeze(-1), 0.0))
        if c.start == 3:
            second = y.sum()
        state = detach_state(state)
    torch.testing.assert_close(torch.cat(outs, 1), full)
    for s, f in zip(state, final, strict=True):
        torch.testing.assert_close(s, f)  # each sample's own final state, ended samples frozen
    (gx,) = torch.autograd.grad(second, x)
    assert gx[:, :3].abs().sum() == 0 and gx[:, 3:6].abs().sum() > 0  # the gradient stops at the chunk edge


def test_reset_state_zeroes_only_flagged_samples():
    h, c = torch.ones(2, 3, 4), torch.full((2, 3, 4), 2.0)
    h2, c2 = reset_state((h, c), torch.tensor([False, True, False]), 3)
    assert h2[:, 1].abs().sum() == 0 and c2[:, 1].abs().sum() == 0
    assert torch.equal(h2[:, [0, 2]], h[:, [0, 2]]) and torch.equal(c2[:, [0, 2]], c[:, [0, 2]])
    assert reset_state((h, c), None, 5) is None  # another batch size: start afresh
    assert isinstance(Chunk(0, 1, True, None).mask(h), type(None))


class _PoisonAt(L.Callback):
    def __init__(self, step, mode):
        self.step, self.mode = step, mode
        self.before = self.after = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        on = trainer.global_step == self.step
        pl_module.model.poison.mode = self.mode if on else None
        if on:
            self.before = [p.detach().clone() for p in pl_module.parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step + 1:
            self.after = [p.detach().clone() for p in pl_module.parameters()]


def test_nonfinite_loss_stops_naming_step_and_layer():
    module = TrainModule(Tagger(), "mse")
    with pytest.raises(NonFiniteError, match=r"non-finite loss .* at global step 3 .*layer model\.poison \(Poison\)"):
        _trainer(6, [_PoisonAt(3, "forward"), NonFiniteGuard("stop")]).fit(module, _loader())


def test_nonfinite_gradient_stops_naming_step_and_layer():
    module = TrainModule(Tagger(), "mse")
    match = r"non-finite gradient at global step 2 .* in layer 'model\.rnn\.cells\.0'"
    with pytest.raises(NonFiniteError, match=match):
        _trainer(6, [_PoisonAt(2, "backward"), NonFiniteGuard("stop")]).fit(module, _loader())


@pytest.mark.parametrize("mode", ["forward", "backward"])
def test_nonfinite_step_is_skipped_on_request(mode):
    torch.manual_seed(0)
    poison, guard = _PoisonAt(2, mode), NonFiniteGuard("skip")
    module = TrainModule(Tagger(), "mse", optim=OptimConfig(lr=1e-2), clip_val=1.0)
    with pytest.warns(UserWarning, match="skipping this optimizer step"):
        trainer = _trainer(5, [poison, guard])
        trainer.fit(module, _loader())
    assert trainer.global_step == 5 and [s for s, _ in guard.skipped] == [2]
    for a, b in zip(poison.before, poison.after, strict=True):
        assert torch.equal(a, b)  # the poisoned step moved nothing
    assert all(math.isfinite(float(p.sum())) for p in module.parameters())


def test_gradient_flow_monitor_records_and_plots(tmp_path):
    from rnnkit.train import GradientFlowMonitor

    torch.manual_seed(0)
    probe = next(iter(_loader(1, steps=9)))
    monitor = GradientFlowMonitor(2, probe_batch=probe, probe_every_n_steps=3, jacobian_iters=3,
                                  out_dir=str(tmp_path))
    _trainer(6, [monitor]).fit(TrainModule(Tagger(), "mse"), _loader())
    assert [s for s, _ in monitor.layer_norms] == [0, 2, 4]
    assert set(monitor.layer_norms[0][1]) == {"rnn.cells.0", "head"}
    assert [s for s, _ in monitor.timestep_norms] == [1, 3, 6]
    per_cell = monitor.timestep_norms[0][1]["rnn"]
    assert len(per_cell) == 1 and len(per_cell[0]) == 9  # (cells, T)
    assert all(v > 0 for v in monitor.jacobian_norms[0][1]["rnn"])
    for name in ["grad_norms.png", "timestep_grad_norms.png", "jacobian_norms.png", "gradflow.json"]:
        assert (tmp_path / name).stat().st_size > 0, name


def test_fit_logs_checkpoints_and_stops_early(tmp_path):
    from rnnkit.train import TrainConfig, fit

    torch.manual_seed(0)
    module = TrainModule(Tagger(), "mse", optim=OptimConfig(lr=1e-2), metrics={"mae": "mae"})
    cfg = TrainConfig(max_steps=40, out_dir=str(tmp_path), val_every_n_steps=2, early_stop_below=1e9,
                      checkpoint_every_n_steps=2, grad_monitor_every=1)
    trainer = fit(module, _loader(), _loader(2, seed=1), cfg)
    assert trainer.global_step == 2  # the first validation is below the threshold: stop there
    assert "val_mae" in trainer.callback_metrics
    run = tmp_path / "rnnkit"
    assert "val_loss" in (run / "csv" / "version_0" / "metrics.csv").read_text()
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last.ckpt" / "weights.safetensors").is_file()
    assert (run / "gradflow" / "grad_norms.png").is_file()


def test_stateful_tbptt_carries_state_across_batches_and_resets_per_sample():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    x1, x2 = torch.randn(3, 8, 2, generator=g), torch.randn(3, 8, 2, generator=g)
    reset = torch.tensor([False, True, False])
    batches = [{"x": x1, "y": torch.zeros(3, 8)}, {"x": x2, "y": torch.zeros(3, 8), "reset": reset}]
    module = TrainModule(Tagger(), "mse", optim=OptimConfig(name="sgd", lr=1e-12),  # weights stay put
                         tbptt=TBPTTConfig(3, carry_across_batches=True))
    _trainer(6).fit(module, torch.utils.data.DataLoader(batches, batch_size=None))  # 2 batches x 3 chunks
    with torch.no_grad():
        _, h1 = module.model(x1)
        h1 = h1.clone()
        h1[:, 1] = 0.0  # sample 1 starts a new stream in batch 2
        _, want = module.model(x2, h1)
    torch.testing.assert_close(module._carried, want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        _, not_reset = module.model(x2, module.model(x1)[1])
    assert torch.allclose(want[:, 0], not_reset[:, 0]) and not torch.allclose(want[:, 1], not_reset[:, 1])


def test_mixed_precision_bf16_on_cpu():
    torch.manual_seed(0)
    module = TrainModule(Tagger("lstm"), "mse", optim=OptimConfig(lr=1e-2))
    trainer = L.Trainer(max_steps=3, precision="bf16-mixed", accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, _loader())
    assert trainer.global_step == 3 and math.isfinite(float(trainer.callback_metrics["train_loss"]))
    assert module.model.head.weight.dtype == torch.float32  # autocast: the weights stay float32
