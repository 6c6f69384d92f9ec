"""Shared model pieces: configs, stepping a stack by hand, attention, and the import boundary."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rnnkit.models as M
from rnnkit.cells.registry import cell_names
from rnnkit.models._common import InputLayer, stacked_state
from rnnkit.models.attention import AdditiveAttention, LuongAttention, make_attention, masked_softmax
from rnnkit.models.config import RecurrentConfig, as_config

MODELS_DIR = Path(M.__file__).parent


@pytest.mark.parametrize("cell", cell_names())
@pytest.mark.parametrize("layers", [1, 2])
def test_stepping_equals_whole_sequence(cell: str, layers: int) -> None:
    torch.manual_seed(0)
    rnn = RecurrentConfig(cell, 6, layers).build(3)
    x = torch.randn(2, 5, 3)
    start = tuple(torch.randn(layers, 2, s) for s in rnn.cells[0].state_sizes)
    start = start[0] if len(start) == 1 else start
    want, want_state = rnn(x, start)
    parts = (start,) if isinstance(start, torch.Tensor) else start
    flat = tuple(p[layer] for layer in range(layers) for p in parts)  # entry l * K + k: layer l, entry k
    back = stacked_state(flat, len(parts))
    for a, b in zip(*[(s,) if isinstance(s, torch.Tensor) else s for s in (back, start)], strict=True):
        assert torch.equal(a, b)
    stepping = None
    ys = []
    for t, x_t in enumerate(x.unbind(1)):
        y, stepping = rnn.step(x_t, start if t == 0 else stepping)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), want)
    got_state = stepping.state
    for g, w in zip(got_state,
                    (want_state,) if isinstance(want_state, torch.Tensor) else want_state, strict=True):
        torch.testing.assert_close(g, w)


def test_config_builds_every_registered_cell_and_reports_width() -> None:
    for name in cell_names():
        for bidirectional, merge in [(False, "concat"), (True, "concat"), (True, "sum")]:
            cfg = RecurrentConfig(name, 5, 2, bidirectional, merge)
            rnn = cfg.build(3)
            assert rnn.output_size == cfg.output_size()
            assert rnn(torch.randn(2, 4, 3))[0].shape == (2, 4, cfg.output_size())


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="hidden_size"):
        RecurrentConfig(hidden_size=0)
    with pytest.raises(ValueError, match="unknown field.*'hidden'"):
        as_config({"hidden": 3})
    with pytest.raises(ValueError, match="unknown cell"):
        RecurrentConfig("nope").build(3)
    with pytest.raises(ValueError, match="takes no option"):
        RecurrentConfig("gru", cell_options={"proj_size": 2}).build(3)
    assert as_config({"cell": "gru", "hidden_size": 7}) == RecurrentConfig("gru", 7)


def test_input_layer_validates() -> None:
    with pytest.raises(ValueError, match="exactly one of input_size"):
        InputLayer(3, 5, 4)
    tokens = InputLayer(vocab_size=5, embedding_dim=4)
    with pytest.raises(ValueError, match=r"ids in \[0, 5\)"):
        tokens(torch.tensor([[0, 5]]))
    with pytest.raises(TypeError, match="integer token ids"):
        tokens(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="Expected 3, got 4"):
        InputLayer(3)(torch.zeros(1, 2, 4))


def test_masked_softmax_gives_zero_weight_to_masked() -> None:
    scores = torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    w = masked_softmax(scores, mask)
    assert torch.all(w[~mask] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(3))


@pytest.mark.parametrize("kind", ["bahdanau", "dot", "general"])
def test_attention_masks_padding_and_matches_hand_formula(kind: str) -> None:
    torch.manual_seed(0)
    att = make_attention(kind, 6, 6, 4)
    q, mem = torch.randn(2, 3, 6), torch.randn(2, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    ctx, w = att(q, mem, mask)
    assert ctx.shape == (2, 3, 6) and w.shape == (2, 3, 5)
    assert torch.all(w[0, :, 3:] == 0)
    mem2 = mem.clone()
    mem2[0, 3:] = 100.0  # padded memory never matters
    ctx2, w2 = att(q, mem2, mask)
    torch.testing.assert_close(ctx2, ctx)
    torch.testing.assert_close(w2, w)
    # the equations of the docstring, written out for one query
    b, t = 1, 2
    if isinstance(att, AdditiveAttention):
        e = torch.stack([att.v.weight[0] @ torch.tanh(att.query_proj.weight @ q[b, t] + att.key_proj(mem[b, s]))
                         for s in range(5)])
    elif att.score == "dot":
        e = mem[b] @ q[b, t]
    else:
        e = mem[b] @ att.weight.weight.t() @ q[b, t]
    torch.testing.assert_close(w[b, t], torch.softmax(e, 0))
    torch.testing.assert_close(ctx[b, t], torch.softmax(e, 0) @ mem[b])


def test_attention_errors() -> None:
    with pytest.raises(ValueError, match="same width"):
        LuongAttention(4, 6, "dot")
    att = LuongAttention(4, 6, "general")
    with pytest.raises(ValueError, match=r"query must have shape \(batch, queries, 4\)"):
        att(torch.zeros(2, 3), torch.zeros(2, 5, 6))
    with pytest.raises(ValueError, match="mask must be a bool tensor of shape"):
        att(torch.zeros(2, 1, 4), torch.zeros(2, 5, 6), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attention must be one of"):
        make_attention("cosine", 4, 4)


def test_models_import_only_torch_numpy_and_the_core() -> None:
    allowed_rnnkit = ("rnnkit.cells", "rnnkit.scan", "rnnkit.layers", "rnnkit.models")
    for path in MODELS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                if top == "rnnkit":
                    assert name.startswith(allowed_rnnkit), f"{path.name} imports {name}"
                else:
                    assert top in ("torch", "numpy", "__future__") or top in sys.stdlib_module_names, \
                        f"{path.name} imports {name}"
    code = ("import sys, rnnkit.models; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('lightning', 'pytorch_lightning', 'rnnkit') and not m.startswith(('rnnkit.cells', 'rnnkit.scan', "
            "'rnnkit.layers', 'rnnkit.models')) and m != 'rnnkit']; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_every_module_declares_all() -> None:
    for path in MODELS_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        assert any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets)
                   for n in tree.body), path.name
        assert len(path.read_text().splitlines()) < 500, path.name
