"""An exported run decodes with numpy and onnxruntime alone (torch and rnnkit unimportable) to what
`rnnkit predict` prints; the runner's tokenizer and word shapes are rnnkit's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rnnkit.cli import main
from rnnkit.tasks import get_task
from rnnkit.tasks.runner import train_task

#: run_onnx.py with torch and rnnkit made unimportable, as on a machine without them
ISOLATED = ("import runpy, sys\nsys.modules['torch'] = None\nsys.modules['rnnkit'] = None\n"
            "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n")


def _train(root, name, data_name, content, **overrides):
    data = root / data_name
    data.write_text(content)
    task = get_task(name)
    cfg = task.config(**{"data": str(data), "epochs": 2, "hidden": 8, "embedding": 8, "progress": False, **overrides})
    return train_task(task, cfg, root / "runs").run_dir


def _runner(export, inputs):
    proc = subprocess.run([sys.executable, "-c", ISOLATED, str(export / "run_onnx.py"), str(export), str(inputs)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _predict(capsys, run, inputs):
    assert main(["predict", str(run), str(inputs)]) == 0
    return capsys.readouterr().out


RUNS = {
    "g2p": ("pairs.csv", "source,target\n" + "".join(f"{' '.join(w)},{' '.join(w.upper())}\n"
                                                           for w in ["cat", "dog", "bat", "cab", "tab", "god"] * 8),
                  "cat\n\nd o g\ntab\n"),
    "tagging": ("tags.txt", "".join(f"Ann\tB-per\nsaw\tO\nit{i}\tO\n\n" for i in range(30)), "Ann saw it\n\nBob ran\n"),
    "sentiment": ("r.tsv", "text\tlabel\n" + "".join(f"good great {i}\tpos\nbad awful {i}\tneg\n" for i in range(30)),
                  "good great movie\n\nbad, awful! @you http://x.y #sad\n"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_the_exported_run_decodes_without_rnnkit_like_predict(tmp_path, capsys, name):
    data_name, content, inputs = RUNS[name]
    extra = {"sentiment": {"ensemble": 1}, "g2p": {"beam": 3}}.get(name, {})  # g2p: the runner's beam as predict's
    run = _train(tmp_path, name, data_name, content, **extra)
    assert main(["export", str(run)]) == 0
    out = capsys.readouterr().out
    assert "batch sizes 1, 3, 8" in out and "run_onnx.py" in out
    path = tmp_path / "in.txt"
    path.write_text(inputs)
    want = _predict(capsys, run, path)
    got = _runner(run / "onnx", path)
    if name == "sentiment":  # the probabilities agree to the printed precision (float rounding aside)
        got, want = [g.split("\t")[0] for g in got.splitlines()], [w.split("\t")[0] for w in want.splitlines()]
    assert got == want


@pytest.mark.slow
def test_a_classifier_with_an_ngram_part_decodes_without_rnnkit_like_predict(tmp_path, capsys):
    import json

    data_name, content, inputs = RUNS["sentiment"]
    run = _train(tmp_path, "sentiment", data_name, content, ensemble=2, ngrams=True, lr=0.05)  # weights far from 0
    assert main(["export", str(run)]) == 0
    capsys.readouterr()
    assert "good great" in json.loads((run / "onnx" / "model.json").read_text())["ngrams"]
    path = tmp_path / "in.txt"
    path.write_text(inputs)
    want = [w for w in _predict(capsys, run, path).splitlines() if w]  # a blank input line: a blank output line
    got = [g for g in _runner(run / "onnx", path).splitlines() if g]
    assert [g.split("\t")[0] for g in got] == [w.split("\t")[0] for w in want] and len(got) == 2
    assert all(abs(float(a.split("\t")[1]) - float(b.split("\t")[1])) < 2e-3 for a, b in zip(got, want, strict=True))


@pytest.mark.slow
def test_forecast_and_generation_exports_decode_without_rnnkit(tmp_path, capsys):
    import torch

    task = get_task("forecast")
    run = train_task(task, task.config(epochs=1, hidden=8, progress=False), tmp_path).run_dir
    assert main(["export", str(run)]) == 0
    capsys.readouterr()
    history = tmp_path / "h.txt"
    history.write_text("".join(f"{40 + 3 * i}\n" for i in range(25)))
    want = _predict(capsys, run, history).splitlines()
    got = _runner(run / "onnx", history).splitlines()
    assert [g.split("\t")[0] for g in got] == ["+1", "+2", "+3", "+4", "+5"]
    assert all(abs(float(a.split("\t")[1]) - float(b.split("\t")[1])) < 2e-3 for a, b in zip(got, want, strict=True))
    # generation: the runner's greedy sample equals the model's greedy decoding
    music = get_task("music")
    mrun = train_task(music, music.config(epochs=1, hidden=8, embedding=8, max_train=30, progress=False),
                      tmp_path / "m").run_dir
    assert main(["export", str(mrun)]) == 0
    _, _, meta, model = __import__("rnnkit.tasks.runner", fromlist=["load_run"]).load_run(mrun)
    cond = tmp_path / "c.txt"
    cond.write_text("major\n\nminor\n")
    got = _runner(mrun / "onnx", cond).splitlines()
    index = {c: i for i, c in enumerate(meta["conditions"])}
    dec = model.generate(torch.tensor([index["major"], index["minor"]]), 64)
    itos = meta["vocab"]["itos"]
    want = [" ".join(itos[t] for t in row[:n]) for row, n in zip(dec.tokens.tolist(), dec.lengths.tolist(),
                                                                  strict=True)]
    assert got == [want[0], "", want[1]]


def test_the_runner_tokenizes_and_shapes_words_like_rnnkit():
    import importlib.util

    from rnnkit.data.text import TOKEN_PATTERNS, tokenize
    from rnnkit.tasks.tagging import CHAR_IDS, CHAR_SLOTS, SHAPES, char_ids, word_shape

    spec = importlib.util.spec_from_file_location("runner", __import__("rnnkit.onnx_runner").onnx_runner.__file__)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    texts = ["Good movie!!", "@bob see http://x.y/z #wow it's 10/10", "  ", "ÄÖ déjà-vu", "www.a.com"]
    assert [runner.tokenize(t, TOKEN_PATTERNS) for t in texts] == [tokenize(t) for t in texts]
    words = ["http://a", "@x", "#tag", "123", "!!", "lower", "UPPER", "Title", "mIxed", "a1", "ÄB", "é"]
    assert [runner.word_shape(w, SHAPES) for w in words] == [word_shape(w) for w in words]
    spelled = [*words, "a" * 40, "naïve", "日本", "😀x", ""]
    assert [runner.char_ids(w, CHAR_SLOTS, CHAR_IDS) for w in spelled] == [char_ids(w) for w in spelled]


def test_the_runners_graphone_scores_are_rnnkits():
    from rnnkit.onnx_runner import Graphones
    from rnnkit.tasks.graphones import MOVES, GraphoneModel
    from test_graphones import lexicon

    model = GraphoneModel.fit(lexicon(400, 0), order=3)
    runner = Graphones({**model.to_dict(), "weight": 0.5, "moves": MOVES})
    pairs = lexicon(60, 4) + [(list("tqx"), ["T", "ZZ", "K", "S"]), (list("a"), ["AE", "B", "D"]), ([], ["T"])]
    want = model.score(pairs)
    got = [runner.score(s, t) for s, t in pairs]
    assert got[-2:] == want[-2:] == [float("-inf")] * 2
    assert got[:-2] == pytest.approx(want[:-2], abs=1e-9)


@pytest.mark.slow
def test_a_g2p_export_reranks_its_beam_like_predict(tmp_path, capsys):
    import json

    from test_graphones import lexicon

    words = lexicon(900, 0)
    content = "source,target\n" + "".join(f"{' '.join(s)},{' '.join(t)}\n" for s, t in words)
    run = _train(tmp_path, "g2p", "pairs.csv", content, beam=4, joint_ngram=4, epochs=10, hidden=32, embedding=16,
                 lr=1e-2)
    assert main(["export", str(run)]) == 0
    capsys.readouterr()
    spec = json.loads((run / "onnx" / "model.json").read_text())
    assert spec["graphones"]["weight"] > 0  # chosen on validation: the reranker is in use
    path = tmp_path / "in.txt"
    path.write_text("".join("".join(s) + "\n" for s, _ in lexicon(40, 7)))
    want = _predict(capsys, run, path)
    assert _runner(run / "onnx", path) == want
