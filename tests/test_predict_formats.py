"""`rnnkit predict` reads exactly the --data formats (header skipped, gold column scored, never read as
input) and a plain format; one output line per input line with blank lines kept; NaN refused."""

from __future__ import annotations

import pytest

from rnnkit.cli import main
from rnnkit.tasks import get_task
from rnnkit.tasks.runner import train_task


def _train(tmp_path_factory, name, data_name, content, **overrides):
    root = tmp_path_factory.mktemp(name)
    data = root / data_name
    data.write_text(content)
    task = get_task(name)
    cfg = task.config(data=str(data), epochs=1, hidden=8, embedding=8, progress=False, **overrides)
    return train_task(task, cfg, root).run_dir


@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory):
    rows = "".join(f"good great movie {i}\tpos\nbad awful film {i}\tneg\n" for i in range(30))
    return _train(tmp_path_factory, "sentiment", "reviews.tsv", "text\tlabel\n" + rows, ensemble=1)


@pytest.fixture(scope="module")
def tagging_run(tmp_path_factory):
    return _train(tmp_path_factory, "tagging", "tags.txt",
                  "".join(f"Ann\tB-per\nsaw\tO\nit{i}\tO\n\n" for i in range(30)))


@pytest.fixture(scope="module")
def g2p_run(tmp_path_factory):
    words = ["cat", "dog", "bat", "cab", "tab", "god", "act", "cod"] * 8
    rows = "".join(f"{' '.join(w)},{' '.join(w.upper())}\n" for w in words)
    return _train(tmp_path_factory, "g2p", "pairs.csv", "source,target\n" + rows)


def _predict(capsys, run, path):
    code = main(["predict", str(run), str(path)])
    out = capsys.readouterr()
    return code, out.out.split("\n")[:-1], out.err


@pytest.mark.slow
def test_sentiment_reads_its_table_and_plain_lines(sentiment_run, tmp_path, capsys):
    table = tmp_path / "new.tsv"
    table.write_text("text\tlabel\ngood great movie\tpos\n\nbad awful film\tneg\n")
    code, lines, err = _predict(capsys, sentiment_run, table)
    assert code == 0 and len(lines) == 3 and lines[1] == ""  # header skipped, blank row kept
    assert all(line.split("\t")[0] in ("pos", "neg") for line in (lines[0], lines[2]))
    assert "scored against the file's 'label' column: exact match" in err and "of 2)" in err
    plain = tmp_path / "new.txt"
    plain.write_text("good great movie\n\n\nbad awful film\n")
    code, lines, _ = _predict(capsys, sentiment_run, plain)
    assert code == 0 and len(lines) == 4 and lines[1:3] == ["", ""]


@pytest.mark.slow
def test_tagging_reads_conll_and_writes_it_back(tagging_run, tmp_path, capsys):
    conll = tmp_path / "new.txt"
    conll.write_text("Ann\tB-per\nsaw\tO\nit\tO\n\nAnn\tB-per\nran\tO\n")
    code, lines, err = _predict(capsys, tagging_run, conll)
    assert code == 0 and len(lines) == 6 and lines[3] == ""
    assert [line.split("\t")[0] for line in lines if line] == ["Ann", "saw", "it", "Ann", "ran"]  # not the tags
    assert all(line.split("\t")[1] in ("B-per", "O") for line in lines if line)
    assert "token accuracy" in err and "of 5 tokens" in err
    plain = tmp_path / "plain.txt"
    plain.write_text("Ann saw it\n\nAnn ran\n")
    code, lines, _ = _predict(capsys, tagging_run, plain)
    assert code == 0 and len(lines) == 3 and lines[1] == "" and lines[0].startswith("Ann/")


@pytest.mark.slow
def test_g2p_reads_spaced_tokens_and_words_alike(g2p_run, tmp_path, capsys):
    spaced, word = tmp_path / "spaced.txt", tmp_path / "word.txt"
    spaced.write_text("c a t\n\nd o g\n")
    word.write_text("cat\n\ndog\n")
    code, a, _ = _predict(capsys, g2p_run, spaced)
    assert code == 0
    assert _predict(capsys, g2p_run, word)[1] == a and len(a) == 3 and a[1] == ""
    table = tmp_path / "pairs.csv"
    table.write_text("source,target\nc a t,C A T\nd o g,D O G\n")
    code, lines, err = _predict(capsys, g2p_run, table)
    assert code == 0 and lines == [a[0], a[2]] and "'target' column" in err


@pytest.fixture(scope="module")
def forecast_run(tmp_path_factory):
    task = get_task("forecast")
    return train_task(task, task.config(epochs=1, hidden=8, progress=False), tmp_path_factory.mktemp("fc")).run_dir


@pytest.mark.slow
def test_forecast_says_which_steps_and_refuses_nan(forecast_run, tmp_path, capsys):
    history = tmp_path / "h.txt"
    history.write_text("".join(f"{50 + i}\n" for i in range(30)))
    code, lines, err = _predict(capsys, forecast_run, history)
    assert code == 0 and [line.split("\t")[0] for line in lines] == ["+1", "+2", "+3", "+4", "+5"]
    assert "the 5 steps after the last of the 30 given values" in err
    history.write_text("1\n2\nnan\n4\n")
    code, lines, err = _predict(capsys, forecast_run, history)
    assert code == 2 and lines == [] and f"{history}, line 3: column 1: missing value" in err
    table = tmp_path / "h.csv"
    table.write_text("value\n1\n2\n3\n")
    assert _predict(capsys, forecast_run, table)[0] == 0
