"""English-Spanish translation of Bible verses (Debian's SWORD modules, read with pysword): the
loader cleans the markup and aligns the verses, IBM Model 1 learns a dictionary, whole chapters
stay in one split, and a user's own parallel file goes through train, evaluate, predict and export
(the exported beam search, run without torch, prints what ``rnnkit predict`` prints)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from _task_helpers import assert_beats, train_small
from rnnkit.cli import main
from rnnkit.data.bible import SWORD_DIR, clean_osis
from rnnkit.data.bundled import DataUnavailable
from rnnkit.onnx_runner import _detokenize, _words
from rnnkit.tasks import get_task
from rnnkit.tasks.translate import TOKENIZER, detokenize, ibm_model1, tokenize_words
from test_onnx_runner import ISOLATED

#: the brief training of the test and the tour: 6,000 verses twice, a narrower model
BRIEF = dict(max_train=6000, epochs=2, hidden=128, embedding=64, batch_size=32, lr=3e-3)

needs_data = pytest.mark.skipif(
    importlib.util.find_spec("pysword") is None or not (SWORD_DIR / "mods.d").is_dir(),
    reason="sword-text-web / sword-text-sparv or pysword not installed (bash scripts/setup_data.sh)")


def test_markup_is_cleaned():
    raw = ('<w lemma="strong:H0430">God</w><note placement="foot"><reference>1:1 </reference>The Hebrew '
           'word “God” is <hi>Elohim</hi>.</note><w>created</w> the <milestone type="x-p"/>heavens &amp; earth.')
    assert clean_osis(raw) == "God created the heavens & earth."
    assert clean_osis("a<note/>b") == "a b"


def test_tokens_and_text_and_the_exported_runner_agree():
    text = "¿Quién dijo: “God’s Spirit,” (Génesis 1:2)?"
    tokens = tokenize_words(text)
    assert tokens == ["¿", "quién", "dijo", ":", "“", "god", "'", "s", "spirit", ",", "”", "(", "génesis", "1", ":",
                      "2", ")", "?"]
    assert _words(text, TOKENIZER) == tokens  # the standalone runner's copy of the rules
    assert detokenize(["¿", "quién", "dijo", "?", "(", "sí", ")", "."]) == "¿quién dijo? (sí)."
    assert _detokenize(tokens, TOKENIZER) == detokenize(tokens)


def test_ibm_model1_learns_a_dictionary_from_sentence_pairs_alone():
    # the textbook example (Koehn, Statistical Machine Translation, ch. 4): no word is aligned by hand
    pairs = [("das haus", "the house"), ("das buch", "the book"), ("ein buch", "a book"), ("ein haus", "a house")]
    table = ibm_model1([(s.split(), t.split()) for s, t in pairs], iterations=10, top=2)
    assert {e: best[0][0] for e, best in table.items()} == {"das": "the", "haus": "house", "buch": "book", "ein": "a"}
    assert all(len(best) == 2 and best[0][1] > 0.5 > best[1][1] for best in table.values())


def test_a_missing_module_names_the_install_command(monkeypatch, tmp_path):
    import rnnkit.data.bible as bible

    monkeypatch.setattr(bible, "SWORD_DIR", tmp_path)
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataUnavailable, match="sword-text-web sword-text-sparv"):
        bible.bible_pairs()


@needs_data
def test_the_loader_aligns_both_bibles_and_splits_by_chapter():
    from rnnkit.data.bible import bible_pairs

    verses = bible_pairs()
    assert len(verses) == 31077
    first = verses[0]
    assert (first.book, first.chapter, first.verse) == ("Gen", 1, 1)
    assert first.source == "In the beginning, God created the heavens and the earth."
    assert first.target == "EN el principio crió Dios los cielos y la tierra."
    assert not any("<" in v.source or "<" in v.target for v in verses)
    task = get_task("translate")
    data = task.prepare(task.config())
    # whole chapters per split; a few formulae ("Yahweh spoke to Moses, saying,") recur in other chapters
    train = {(tuple(s), tuple(t)) for s, t in data.train}
    assert sum((tuple(s), tuple(t)) in train for s, t in data.test) < 0.03 * len(data.test)
    assert len(data.train) > 24000 and len(data.test) == 1000


def test_groups_are_never_cut():
    from rnnkit.tasks.translate import _split_by_group

    items = [(f"chapter {i % 20}", [str(i)], [str(i)]) for i in range(400)]
    parts = _split_by_group(items, seed=3)
    groups = [{int(s[0]) % 20 for s, _ in part} for part in parts]
    assert [len(g) for g in groups] == [16, 2, 2] and not (groups[0] & groups[1] | groups[0] & groups[2])
    assert sum(map(len, parts)) == 400


@pytest.mark.slow
@needs_data
def test_brief_training_beats_word_by_word_translation_on_held_out_chapters(tmp_path):
    task, result = train_small(tmp_path, "translate", **BRIEF)
    assert_beats(task, result, margin=1.0)  # BLEU points, on the same 1,000 held-out verses
    assert (result.run_dir / "attention.png").is_file()


def _pairs(tmp_path, n=60):
    colours = [("red", "rojo"), ("green", "verde"), ("white", "blanco"), ("black", "negro")]
    things = [("dog", "perro"), ("cat", "gato"), ("horse", "caballo")]
    rows = [f"the {c} {t}.\tel {t2} {c2}.\tg{i % 6}"  # Spanish puts the adjective after the noun
            for i in range(n) for (c, c2), (t, t2) in [(colours[i % 4], things[i % 3])]]
    path = tmp_path / "pairs.tsv"
    path.write_text("source\ttarget\tgroup\n" + "\n".join(rows) + "\n")
    return path


def test_user_groups_stay_in_one_split(tmp_path):
    task = get_task("translate")
    data = task.prepare(task.config(data=str(_pairs(tmp_path))))
    assert len(data.train) + len(data.val) + len(data.test) == 60 and "perro" in data.meta["tgt"]["itos"]
    assert len(data.test) == 10 and len(data.val) == 10  # one group of 10 rows each, of 6 groups


@pytest.mark.slow
def test_cli_round_trip_on_a_users_parallel_file(tmp_path, capsys):
    data = _pairs(tmp_path)
    assert main(["train", "translate", "--data", str(data), "--epochs", "15", "--hidden", "32", "--embedding", "16",
                 "--lr", "0.01", "--out", str(tmp_path), "--name", "mine", "--no-progress"]) == 0
    run = tmp_path / "mine"
    assert "translate: bleu = " in capsys.readouterr().out
    assert main(["evaluate", str(run)]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), str(data)]) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 60 and "BLEU" in out.err
    inputs = tmp_path / "in.txt"
    inputs.write_text("The red dog.\n\nthe black horse.\n")
    assert main(["predict", str(run), str(inputs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1] == "" and lines[0].endswith(".")
    assert main(["export", str(run)]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    proc = subprocess.run([sys.executable, "-c", ISOLATED, str(run / "onnx" / "run_onnx.py"), str(run / "onnx"),
                           str(inputs)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == lines  # the runner's beam search and detokenizer are rnnkit's


def test_bad_user_files_name_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("english\tspanish\nthe dog\tel perro\n")
    assert main(["train", "translate", "--data", str(bad), "--out", str(tmp_path)]) == 2
    assert f"{bad}, line 1: missing column(s) ['source', 'target']" in capsys.readouterr().err
    bad.write_text("source\ttarget\nthe dog\tel perro\nthe cat\t\n")
    assert main(["train", "translate", "--data", str(bad), "--out", str(tmp_path)]) == 2
    assert f"{bad}, line 3" in capsys.readouterr().err


def test_unknown_output_words_take_the_dictionary_translation_or_the_source_word():
    from rnnkit.tasks.translate import replace_unknown

    table = {"house": "casa"}
    assert replace_unknown("<unk>", "house", table) == "casa"
    assert replace_unknown("<unk>", "zaccur", table) == "zaccur"  # a name: copied
    assert replace_unknown("la", "house", table) == "la"
