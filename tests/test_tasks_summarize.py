"""Summarization of Debian package descriptions into their synopses: unknown source words get
per-example ids that the pointer-generator can copy, whole source packages stay in one split, the
baselines are what the issue names, brief training beats both on held-out packages, and a user's
own table goes through train, evaluate, predict and export (the exported beam search, run without
torch, prints what ``rnnkit predict`` prints, copied words included)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from _task_helpers import train_small
from rnnkit.cli import main
from rnnkit.data import debian
from rnnkit.models import PointerGenerator, Seq2Seq
from rnnkit.tasks import get_task
from rnnkit.tasks.summarize import extend, lead, rouge
from test_onnx_runner import ISOLATED

#: the brief training of the test and the tour
BRIEF = dict(max_train=8000, epochs=2, hidden=128, embedding=64, lr=3e-3)

needs_data = pytest.mark.skipif(not list(debian.APT_LISTS.glob("*_i18n_Translation-en*")),
                                reason="no Translation-en index (bash scripts/setup_data.sh)")


def test_unknown_source_words_get_ids_past_the_vocabulary_in_order_of_first_use():
    stoi = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, "a": 4, "tool": 5}
    src, tgt, oov = extend("zork is a zork tool for qux".split(), stoi, 3, "zork tool for bar".split())
    assert oov == ["zork", "is", "for", "qux"]
    assert src == [6, 7, 4, 6, 5, 8, 9]
    assert tgt == [6, 5, 8, 3]  # "bar" is in neither the vocabulary nor the source: <unk>
    from rnnkit.onnx_runner import _extended

    runner_oov: list[str] = []
    assert _extended("zork is a zork tool for qux".split(), stoi, runner_oov) == src and runner_oov == oov


def test_an_extended_id_past_the_sources_unknown_words_is_dropped_not_an_error():
    """The copy distribution leaves extended ids past a source's own unknown words at the 1e-12
    floor; if beam search emits one anyway, it stands for nothing: dropped like <unk>, where it
    used to raise IndexError."""
    import torch

    from rnnkit.data.vocab import Vocab
    from rnnkit.models.decoding import Decoded

    vocab = Vocab.build([["a", "tool"]], min_freq=1)
    size = len(vocab.itos)

    class Emits:  # a stand-in model: emits "a", the first unknown source word, an id for none, <eos>
        def beam_search(self, x, lengths, beam_width, max_len):
            tokens = torch.tensor([[vocab.stoi["a"], size, size + 5, vocab.stoi["<eos>"]]] * x.size(0))
            return Decoded(tokens, torch.full((x.size(0),), 4), torch.zeros(x.size(0)),
                           torch.zeros(x.size(0), 4, x.size(1)))

    task = get_task("summarize")
    out, _ = task.transduce(Emits(), [["zork", "is", "a", "tool"]], {"vocab": vocab.to_dict(), "copy": True})
    assert out == [["a", "zork"]]


def test_lead_is_the_first_sentence_cut_to_the_length():
    assert lead("foo frobs files . it is fast .".split(), 8) == ["foo", "frobs", "files"]
    assert lead("a b c d e".split(), 3) == ["a", "b", "c"]


def test_rouge_scores_overlap():
    same = rouge([["fast", "file", "tool"]], [["fast", "file", "tool"]])
    assert same == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    assert rouge([["red"]], [["blue"]]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    half = rouge([["file", "tools", "x", "y"]], [["file", "tool"]])  # the stemmer matches tools and tool
    assert half["rouge1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)


@needs_data
def test_the_loader_keeps_each_source_package_in_one_split():
    from rnnkit.tasks.translate import _split_by_group, tokenize_words

    task = get_task("summarize")
    found = debian.package_descriptions()
    source = {d.package: d.source for d in found}
    parts = _split_by_group([(d.source, d.package, d.synopsis) for d in found], seed=0)
    train, val, test = ({source[p] for p, _ in part} for part in parts)
    assert not train & test and not train & val and not val & test and len(test) > 3000
    data = task.prepare(task.config())
    assert [t for _, t in data.test] == [tokenize_words(syn) for _, syn in parts[2][:1000]]
    assert len(data.train) > 45_000 and len(data.test) == 1000
    assert data.meta["copy"] and 6 <= data.meta["lead_length"] <= 10
    assert all(len(s) <= 80 and 1 <= len(t) <= 20 for s, t in data.train)


@pytest.mark.slow
@needs_data
def test_brief_training_beats_the_lead_and_retrieval_on_held_out_packages(tmp_path):
    task, result = train_small(tmp_path, "summarize", **BRIEF)
    m, b = result.metrics, result.baselines
    # ROUGE-L F points, on the same 1,000 held-out descriptions
    assert m["rougeL"] >= b["lead_rougeL"] + 0.02 and m["rougeL"] >= b["retrieval_rougeL"] + 0.02, (m, b)
    assert m["rouge2"] > b["retrieval_rouge2"], (m, b)
    assert (result.run_dir / "attention.png").is_file()


def _table(tmp_path, n=80):
    """Each summary names the package, a made-up word no other row has: only copying gets it right."""
    verbs = [("converts images to text", "image converter"), ("plays music files", "music player"),
             ("edits text files", "text editor"), ("draws charts", "chart tool")]
    rows = []
    for i in range(n):
        name = "".join("bcdfgklmnprstvz"[(i * 7 + k * 3) % 15] + "aeiou"[(i + k) % 5] for k in range(3)) + str(i)
        does, short = verbs[i % 4]
        rows.append(f"{name} is a small program that {does} . it is written in c .\t{name} - {short}\tg{i % 8}")
    path = tmp_path / "packages.tsv"
    path.write_text("text\tsummary\tgroup\n" + "\n".join(rows) + "\n")
    return path


def test_a_users_table_and_the_plain_option(tmp_path):
    task = get_task("summarize")
    cfg = task.config(data=str(_table(tmp_path)), copy=False, hidden=16, embedding=8)
    data = task.prepare(cfg)
    assert len(data.train) + len(data.val) + len(data.test) == 80 and len(data.test) == 10
    assert not data.meta["copy"] and isinstance(task.build(cfg, data.meta), Seq2Seq)
    batch = task.collate(data.test[:4], data.meta)
    assert int(batch["x"].max()) < len(data.meta["vocab"]["itos"])  # the plain model reads <unk>
    copying = task.config(data=str(_table(tmp_path)), hidden=16, embedding=8)
    meta = task.prepare(copying).meta
    model = task.build(copying, meta)
    assert isinstance(model, PointerGenerator)
    batch = task.collate(data.test[:4], meta)
    assert int(batch["x"].max()) >= len(meta["vocab"]["itos"])  # the held-out names took extended ids
    assert task.loss(model, batch).item() > 0


@pytest.mark.slow
def test_cli_round_trip_on_a_users_table_copies_unseen_names(tmp_path, capsys):
    data = _table(tmp_path)
    assert main(["train", "summarize", "--data", str(data), "--epochs", "30", "--hidden", "32", "--embedding", "16",
                 "--lr", "0.01", "--batch-size", "16", "--out", str(tmp_path), "--name", "mine", "--no-progress"]) == 0
    run = tmp_path / "mine"
    assert "summarize: rougeL = " in capsys.readouterr().out
    assert main(["evaluate", str(run)]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), str(data)]) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 80 and "ROUGE-L" in out.err
    inputs = tmp_path / "in.txt"
    inputs.write_text("quxtrel9 is a small program that plays music files . it is written in c .\n\n"
                      "wibblex is a small program that draws charts . it is written in c .\n")
    assert main(["predict", str(run), str(inputs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1] == ""
    assert lines[0].startswith("quxtrel9") and lines[2].startswith("wibblex"), lines  # never seen in training
    assert main(["export", str(run)]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    proc = subprocess.run([sys.executable, "-c", ISOLATED, str(run / "onnx" / "run_onnx.py"), str(run / "onnx"),
                           str(inputs)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == lines  # the runner's extended ids, beam search and detokenizer are rnnkit's


def test_bad_user_files_name_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("description\tsynopsis\nfoo frobs\tfrobber\n")
    assert main(["train", "summarize", "--data", str(bad), "--out", str(tmp_path)]) == 2
    assert f"{bad}, line 1: missing column(s) ['text', 'summary']" in capsys.readouterr().err
    bad.write_text("text\tsummary\nfoo frobs files\tfrobber\nbar\t\n")
    assert main(["train", "summarize", "--data", str(bad), "--out", str(tmp_path)]) == 2
    assert f"{bad}, line 3" in capsys.readouterr().err
