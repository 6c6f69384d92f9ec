import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _threads_restored():
    """Every test leaves torch's thread count as it found it, and says so if it did not (an
    in-process ``rnnkit diagnose --threads 1`` once left every later test on one thread)."""
    threads = torch.get_num_threads()
    yield
    changed = torch.get_num_threads()
    torch.set_num_threads(threads)
    assert changed == threads, f"the test left torch on {changed} threads (it found {threads})"


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-tensor tests: faster, and on a busy 2-core
    machine the default two make torch's CPU kernels (oneDNN's LSTM above all) tens of times
    slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tolerance(dtype: torch.dtype) -> float:
    """The issue's bar: 1e-5 in float32, 1e-10 in float64."""
    return 1e-10 if dtype == torch.float64 else 1e-5


def as_tuple(state):
    """A layer's state as a tuple (one-tensor states come back bare)."""
    return state if isinstance(state, tuple) else (state,)
