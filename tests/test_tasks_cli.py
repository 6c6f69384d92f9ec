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
        main(["train", "forecast", "--help"])
    out = capsys.readouterr().out
    for flag in ("--cell", "--layers", "--hidden", "--bidirectional", "--epochs", "--devices", "--data"):
        assert flag in out


def test_missing_run_directory(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope")]) == 2
    assert "is not a finished run directory" in capsys.readouterr().err


def test_the_catalog_that_rnnkit_tasks_reads_is_what_the_tasks_say():
    from rnnkit.catalog import build_catalog, read_catalog

    assert read_catalog() == json.loads(json.dumps(build_catalog())), "run `python -m rnnkit.catalog`"


@pytest.mark.parametrize("argv", [["--help"], ["tasks"], ["tasks", "--task", "forecast"], ["train", "--help"],
                                  ["train", "forecast", "--help"]])
def test_light_commands_import_no_torch(argv):
    """`rnnkit --help` and `rnnkit tasks` answer without importing torch, Lightning or matplotlib
    (their time is measured in benchmarks/cli_startup.py); `train TASK --help` needs the task's
    classes but not Lightning."""
    import subprocess
    import sys

    code = ("import sys\nfrom rnnkit.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'lightning', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True).stdout
    loaded = out.strip().splitlines()[-1]
    if argv[:2] == ["train", "forecast"]:  # the task classes (torch, matplotlib), not the trainer
        assert "lightning" not in loaded, loaded
    else:
        assert loaded == "[]", (argv, loaded)


def test_train_task_help_shows_that_tasks_defaults_and_format(capsys):
    with pytest.raises(SystemExit):
        main(["train", "forecast", "--help"])
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())  # the help wraps to the terminal's width
    assert "--epochs INT passes over the training split (default: 40)" in out and "numeric 'value' column" in out


def test_a_recipe_sets_the_defaults_and_flags_still_win(capsys):
    """``--recipe quick`` is the tour's option set; a flag given beside it overrides it; an unknown
    recipe names the known ones and exits 2."""
    from rnnkit.tasks.recipes import RECIPES, recipe

    assert recipe("g2p", "quick") == RECIPES["quick"]["g2p"] and recipe("forecast", "full") == {}
    with pytest.raises(SystemExit) as stop:
        main(["train", "g2p", "--recipe", "quick", "--help"])
    assert stop.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "(default: 10000)" in shown and "(default: 5)" in shown  # max-train and epochs of the quick recipe
    with pytest.raises(SystemExit) as stop:
        main(["train", "forecast", "--recipe", "nope"])
    assert stop.value.code == 2
    assert "known recipes are default, quick, full" in capsys.readouterr().err


@pytest.mark.slow
def test_a_flag_beside_a_recipe_wins(tmp_path, monkeypatch):
    from rnnkit.tasks import recipes

    monkeypatch.setitem(recipes.RECIPES["quick"], "forecast", {"epochs": 3, "hidden": 8})
    assert main(["train", "forecast", "--recipe=quick", "--epochs", "2", "--no-progress", "--out", str(tmp_path),
                 "--name", "r"]) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert (saved["epochs"], saved["hidden"]) == (2, 8)
