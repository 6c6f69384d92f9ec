"""Training on Lightning: a model-agnostic LightningModule, truncated BPTT, gradient clipping,
gradient-flow callbacks, safetensors checkpoints with bit-identical resume, and DDP by flags.

Imports lightning, safetensors and matplotlib; ``import rnnkit`` never imports this package.
"""

from rnnkit.train.callbacks import GradientFlowMonitor, NonFiniteError, NonFiniteGuard
from rnnkit.train.checkpoint import SafetensorsCheckpointIO, load_weights, read_checkpoint, write_checkpoint
from rnnkit.train.data import EpochSampler, ResumableLoader
from rnnkit.train.losses import LOSSES, METRICS
from rnnkit.train.module import TrainModule
from rnnkit.train.optim import OptimConfig
from rnnkit.train.tbptt import TBPTTConfig
from rnnkit.train.trainer import TrainConfig, build_trainer, fit

__all__ = [
    "LOSSES", "METRICS", "EpochSampler", "GradientFlowMonitor", "NonFiniteError", "NonFiniteGuard", "OptimConfig",
    "ResumableLoader", "SafetensorsCheckpointIO", "TBPTTConfig", "TrainConfig", "TrainModule", "build_trainer", "fit",
    "load_weights", "read_checkpoint", "write_checkpoint",
]
