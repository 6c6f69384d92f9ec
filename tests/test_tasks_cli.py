"""`rnnkit tasks` lists every task with its data; --help everywhere; errors exit 2 with a message."""

import json

import pytest

from rnnkit.cli import main
from rnnkit.tasks import TASK_MODULES


def test_tasks_lists_every_task_with_source_licence_and_split(capsys):
    assert main(["tasks", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["task"] for t in listed] == list(TASK_MODULES)
    for t in listed:
        assert all(t["data"][k] for k in ("source", "licence", "size", "split", "install")), t["task"]
        assert t["metric"] and t["baseline"] and t["user_format"]
    assert main(["tasks", "--task", "speech"]) == 0
    assert "apt-get install espeak-ng" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "export", "tasks"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "usage: rnnkit " + command in capsys.readouterr().out


def test_train_flags_cover_the_config(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for flag in ("--cell", "--layers", "--hidden", "--bidirectional", "--epochs", "--devices", "--data"):
        assert flag in out


def test_missing_run_directory(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope")]) == 2
    assert "is not a finished run directory" in capsys.readouterr().err
