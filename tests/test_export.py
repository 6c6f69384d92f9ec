"""Every task's inference model exports to ONNX with dynamic batch and time axes and runs in
onnxruntime like PyTorch at batch sizes 1, 3 and 8 and two lengths: forecasting with scaling
inside, probabilities, Viterbi tags (an ONNX Loop), a seq2seq encoder and one-step decoder, a
generator's init and step graphs, CTC frames. The standalone runner decodes them with numpy and
onnxruntime alone."""

import json

import pytest
import torch

from rnnkit.data.speech import voices_available
from rnnkit.export import check_bundle, check_onnx, export_bundle, export_onnx
from rnnkit.tasks import get_task

CASES = [
    ("forecast", {}),
    ("forecast", {"cell": "mingru"}),  # not a torch kernel: the traced loop is unrolled
    ("sentiment", {"max_train": 500}),
    ("sentiment", {"max_train": 500, "cell": "gru", "layers": 2}),
    pytest.param("sentiment", {"max_train": 500, "ngrams": True}, id="sentiment-ngrams"),  # a third input
    ("tagging", {"max_train": 200}),
    pytest.param("tagging", {"max_train": 200, "ensemble": 2}, id="tagging-ensemble"),  # the members' mean CRF
    ("g2p", {"max_train": 500}),
    pytest.param("g2p", {"max_train": 500, "input_feeding": True}, id="g2p-feeding"),  # h~ is decoder state
    ("music", {"max_train": 40}),
    ("chars", {"max_train": 200}),
    ("caption", {"max_train": 200}),
    ("caption", {"max_train": 200, "cell": "rnn"}),
    pytest.param("speech", {"max_train": 800}, id="speech-default",
                 marks=pytest.mark.skipif(not voices_available(), reason="espeak-ng or flite not installed")),
]
IDS = [None if type(c) is not tuple else f"{c[0]}-{c[1].get('cell', 'default')}" for c in CASES]


@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_inference_graphs_match_pytorch_at_several_batches_and_lengths(tmp_path, name, options):
    task = get_task(name)
    cfg = task.config(progress=False, **options)
    meta = task.prepare(cfg).meta
    torch.manual_seed(0)
    model = task.build(cfg, meta).eval()
    for m in model.modules():
        if getattr(m, "ngrams", None) is not None:  # as if trained: the n-gram weights start at 0
            torch.nn.init.normal_(m.ngrams.weight)
    bundle = task.onnx_bundle(model, meta)
    out = export_bundle(bundle, tmp_path / name, task=name)
    assert check_bundle(bundle, out, atol=1e-4) <= 1e-4
    spec = json.loads((out / "model.json").read_text())
    assert spec["kind"] == bundle.kind and (out / "run_onnx.py").is_file()
    if options.get("cell") == "mingru":  # no ONNX recurrent operator: unrolled, fixed length, and said so
        assert "unrolls" in spec["fixed_time"][name]["reason"]
    else:
        assert spec["fixed_time"] == {}
        names = {i.name for g in bundle.graphs for i in _inputs(out / f"{g.name}.onnx")}
        assert names  # every graph file loads


def _inputs(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()


def test_viterbi_in_the_graph_equals_the_crf_decoder_at_any_length():
    from rnnkit.models.crf import viterbi_decode
    from rnnkit.onnx_graphs import viterbi_graph

    g = torch.Generator().manual_seed(0)
    start, trans, end = torch.randn(5, generator=g), torch.randn(5, 5, generator=g), torch.randn(5, generator=g)
    for b, t in [(1, 1), (3, 9), (8, 20)]:
        em = torch.randn(b, t, 5, generator=g)
        lengths = torch.randint(1, t + 1, (b,), generator=g)
        mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
        assert torch.equal(viterbi_graph(em, mask, start, trans, end), viterbi_decode(em, mask, start, trans, end)[0])


def test_check_onnx_catches_a_mismatch(tmp_path):
    model = torch.nn.Linear(3, 2)
    args = (torch.randn(1, 3),)
    path = export_onnx(model, args, tmp_path / "lin.onnx")
    with torch.no_grad():
        model.bias += 1.0  # PyTorch now differs from the exported file
    with pytest.raises(AssertionError, match="differs from PyTorch"):
        check_onnx(path, model, args)
