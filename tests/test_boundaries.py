"""The core (cells, scan, layers, models, init) imports torch and numpy only, never the training
stack, so ``import rnnkit`` stays light."""

import subprocess
import sys

HEAVY = ["lightning", "pytorch_lightning", "matplotlib", "safetensors", "rich", "tensorboard", "onnx"]


def test_core_imports_no_training_stack():
    code = (
        "import sys, importlib, pkgutil, rnnkit\n"
        "for pkg in ['rnnkit.cells', 'rnnkit.scan', 'rnnkit.layers', 'rnnkit.models']:\n"
        "    try:\n"
        "        mod = importlib.import_module(pkg)\n"
        "    except ModuleNotFoundError:\n"
        "        continue\n"
        "    for info in pkgutil.walk_packages(mod.__path__, pkg + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "for name in ['rnnkit.init']:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError:\n"
        "        pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
