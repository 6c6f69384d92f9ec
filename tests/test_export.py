"""Every task's model exports to ONNX and runs in onnxruntime within 1e-4 of PyTorch, on the
fused path (ONNX RNN operators) and on the sequential path (unrolled by tracing)."""

import pytest
import torch

from rnnkit.data.speech import espeak_available
from rnnkit.export import check_onnx, export_onnx
from rnnkit.tasks import get_task

CASES = [
    ("forecast", {}),
    ("forecast", {"cell": "mingru"}),  # not a torch kernel: the traced loop is unrolled
    ("sentiment", {"max_train": 500}),
    ("sentiment", {"max_train": 500, "cell": "gru", "layers": 2}),
    ("tagging", {"max_train": 200}),
    ("translate", {"max_train": 500}),
    ("music", {"max_train": 40}),
    ("chars", {"max_train": 200}),
    ("caption", {"max_train": 200}),
    ("caption", {"max_train": 200, "cell": "rnn"}),
    pytest.param("speech", {"max_train": 800}, id="speech-default",
                 marks=pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed")),
]
IDS = [None if type(c) is not tuple else f"{c[0]}-{c[1].get('cell', 'default')}" for c in CASES]


@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_export_matches_pytorch(tmp_path, name, options):
    task = get_task(name)
    cfg = task.config(progress=False, **options)
    meta = task.prepare(cfg).meta
    torch.manual_seed(0)
    model = task.build(cfg, meta).eval()
    module, args, names = task.export_inputs(model, meta)
    path = export_onnx(module, args, tmp_path / f"{name}.onnx", input_names=names)
    assert check_onnx(path, module, args, atol=1e-4) <= 1e-4


def test_check_onnx_catches_a_mismatch(tmp_path):
    model = torch.nn.Linear(3, 2)
    args = (torch.randn(1, 3),)
    path = export_onnx(model, args, tmp_path / "lin.onnx")
    with torch.no_grad():
        model.bias += 1.0  # PyTorch now differs from the exported file
    with pytest.raises(AssertionError, match="differs from PyTorch"):
        check_onnx(path, model, args)
