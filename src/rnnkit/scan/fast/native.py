"""The fast engine's C++ loops (``csrc/``: the LSTM family forward and backward, the GRU, Elman and
IndRNN forward, the diagonal linear scan): built on first use with torch's
extension builder (a C++ compiler and ninja), cached by torch (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``), loaded as ``torch.ops.rnnkit_cpu``.

Nothing here ever fails a forward: a machine without a compiler, a failed build or
``RNNKIT_NATIVE=0`` leaves the Python loops in charge, and :func:`native_unavailable` says why
(``explain()`` shows it). The build time is kept in :data:`BUILD` for the benchmarks.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time
from pathlib import Path

import torch

from rnnkit.cells import _linear

__all__ = ["BUILD", "native_ops", "native_unavailable", "python_loops"]

_CSRC = Path(__file__).parent / "csrc"  # steps.cpp (GRU, Elman, IndRNN, scan), lstm.cpp, common.h
_lock = threading.Lock()
#: a build lock older than this is a killed build's, not a live one's (a build takes 10-60 s)
STALE_LOCK_S = 600
#: what the first use found: ``ops`` (the loaded namespace) or ``error``; ``seconds`` to build or load
BUILD: dict[str, object] = {"ops": None, "error": None, "seconds": None, "tried": False}


def _flags(threaded: bool = True) -> list[str]:
    """Vector instructions when torch found them on this CPU (the build is for this machine);
    OpenMP threads, or (``threaded=False``, for a compiler without OpenMP) one thread per pass."""
    capability = torch.backends.cpu.get_cpu_capability()
    avx2 = ["-mavx2", "-mfma"]
    avx512 = ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw", *avx2, "-mprefer-vector-width=512"]
    vector = {"AVX2": avx2, "AVX512": avx512}.get(capability, [])
    # -fno-trapping-math lets gcc compute both sides of a select, which its vectoriser needs;
    # -fopenmp makes at::parallel_for (inline OpenMP in ATen's headers) split the loops over torch's
    # threads: without it the pragma is ignored and every pass runs on one thread. The runtime is the
    # one torch already loaded (libgomp.so.1), so there is one thread pool, sized by torch.set_num_threads.
    return ["-O3", "-fopenmp" if threaded else "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", *vector]


def _build(threaded: bool = True) -> None:
    from torch.utils import cpp_extension

    flags = _flags(threaded)
    sources = sorted(_CSRC.glob("*.cpp"))
    source = b"".join(p.read_bytes() for p in sorted(_CSRC.iterdir()) if p.suffix in (".cpp", ".h"))
    # the name changes with the source, the flags and torch, so a stale build is never loaded
    tag = hashlib.sha256(source + " ".join(flags).encode() + torch.__version__.encode()).hexdigest()[:12]
    name = f"rnnkit_steps_{tag}"
    start = time.perf_counter()
    build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
    lock = build_dir / "lock"  # torch's builder waits for this file to go: a build killed midway leaves it
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
        lock.unlink(missing_ok=True)
    if not (build_dir / f"{name}.so").exists():
        print("rnnkit: building the fast engine's C++ step loops (once per machine, 10-60 s)...", file=sys.stderr,
              flush=True)
    cpp_extension.load(name=name, sources=[str(p) for p in sources], extra_cflags=flags,
                       extra_ldflags=["-fopenmp"] if threaded else [], is_python_module=False, verbose=False)
    BUILD["seconds"] = time.perf_counter() - start
    BUILD["ops"] = torch.ops.rnnkit_cpu


def native_ops():
    """``torch.ops.rnnkit_cpu``, building it on the first call; None when it cannot be had."""
    if BUILD["tried"]:
        return BUILD["ops"]
    with _lock:
        if not BUILD["tried"]:
            if os.environ.get("RNNKIT_NATIVE", "1") == "0":
                BUILD["error"] = "switched off (RNNKIT_NATIVE=0)"
            else:
                try:
                    _build()
                except Exception as err:  # no compiler, no ninja, a failed compile: the Python loops run
                    try:  # unless it is a compiler without OpenMP (Apple's clang): the loops on one thread
                        _build(threaded=False)
                        BUILD["serial"] = "built without OpenMP: each step's passes run on one thread"
                    except Exception:
                        _record_failure(err)
            BUILD["tried"] = True
    return BUILD["ops"]


def _record_failure(err: Exception) -> None:
    """The build's error, in the compiler's own words, for explain()."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    said = next((ln for ln in lines if "error:" in ln), lines[0])  # the compiler's own word
    BUILD["error"] = f"the C++ step loops did not build ({type(err).__name__}: {said.strip()[:240]})"


def native_unavailable() -> str | None:
    """Why the C++ loops are not used (None when they are), without building them."""
    return BUILD["error"] if BUILD["tried"] else None


@contextlib.contextmanager
def python_loops():
    """Run the Python loops inside the block (tests and benchmarks compare the two forms)."""
    native_ops()
    saved = BUILD["ops"]
    BUILD["ops"] = None
    try:
        yield
    finally:
        BUILD["ops"] = saved


_linear.ROW_NORM_PROVIDER[:] = [native_ops]  # the cells' normalised input projections use the row kernels
