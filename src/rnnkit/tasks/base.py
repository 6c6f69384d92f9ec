"""The task contract, its config, and the registry.

A :class:`Task` bundles everything one application needs: the data (bundled or a user file),
the model (from a :class:`TaskConfig`), the loss, the metric and baselines on the same held-out
split, predictions for new inputs, a picture, and example inputs for ONNX export. Training,
evaluation and the run directory are the same for every task (:mod:`rnnkit.tasks.runner`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from rnnkit.data.bundled import DatasetInfo

__all__ = ["TASKS", "PredictInput", "Prepared", "Task", "TaskConfig", "get_task", "register"]


@dataclass
class TaskConfig:
    """The model, training and data options of every task (each task sets its own defaults: ``Task.defaults``)."""

    cell: str = "lstm"  # recurrent cell: rnn, rnn_relu, gru, lstm, mingru, minlstm, ... (any registered name)
    hidden: int = 64  # hidden width per layer (and direction)
    layers: int = 1  # stacked recurrent layers
    bidirectional: bool = False  # bidirectional encoder/tagger/classifier (generators always run left to right)
    embedding: int = 64  # token embedding width
    epochs: int = 5  # passes over the training split
    batch_size: int = 32  # examples per batch
    lr: float = 3e-3  # Adam learning rate (the peak, with a schedule)
    schedule: str = "constant"  # learning-rate schedule: constant, cosine or linear (decay to 0 over training)
    clip: float = 1.0  # gradient-norm clipping threshold, Pascanu et al. 2013 (0: off)
    ensemble: int = 1  # N models trained together (sentiment: mean probability; tagging: summed CRF scores)
    keep_best: bool = False  # test and save the best validation epoch's weights instead of the last epoch's
    average: int = 0  # test and save the mean of the weights at the last N epoch ends (checkpoint averaging; 0: off)
    max_train: int = 0  # cap on training examples (0: all; a user's --data file is read whole unless given)
    seed: int = 0  # seed of the data split, initialisation and order
    data: str = ""  # your own data file instead of the bundled data set (format: `rnnkit tasks --task NAME`)
    devices: int = 1  # processes (DDP when > 1)
    accelerator: str = "cpu"  # cpu, gpu or auto
    progress: bool = True  # rich progress bar
    missing: str = "error"  # forecast: a blank, NaN or inf value is an error, or is interpolated linearly
    period: int = 0  # forecast: the seasonal period of the seasonal-naive baseline (0: detected from the data)
    max_length: int = 0  # translate: training pairs with a longer source or target (in tokens) are left out (0: none)
    copy: bool = True  # summarize: the pointer-generator copies source words (False: plain attention seq2seq)
    bptt: int = 128  # chars: steps per truncated-BPTT window when a plain-text --data file trains as one stream
    dropout: float = 0.0  # g2p: dropout on the embeddings, between stacked layers and before the output, in training
    beam: int = 1  # g2p: beam width of test decoding and predict (1: greedy)
    input_feeding: bool = False  # g2p: Luong's input feeding, the decoder also reads the last step's h~ (a step loop)
    joint_ngram: int = 0  # g2p: order of a graphone n-gram whose weighted score reranks the beam (0: off)
    units: str = "auto"  # speech: CTC units: words, chars, or auto (words on the bundled digits, chars on --data)
    ngrams: bool = False  # sentiment: a linear part over word 1-2-grams beside the network, trained with it
    augment: bool = True  # speech: SpecAugment masks in training, and augmented synthetic clips (bundled data)

    def __post_init__(self) -> None:
        for name in self.field_names():
            problem = option_problem(name, getattr(self, name))
            if problem:
                raise ValueError(f"--{name.replace('_', '-')} {problem}")
        if self.average and self.keep_best:
            raise ValueError(f"--average {self.average} and --keep-best both choose the weights a run keeps: give one")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: the smallest value of each numeric option, and whether it must be strictly greater
_LOWEST: dict[str, tuple[float, bool]] = {
    "hidden": (1, False), "layers": (1, False), "embedding": (1, False), "epochs": (1, False),
    "batch_size": (1, False), "ensemble": (1, False), "devices": (1, False), "max_train": (0, False),
    "lr": (0, True), "clip": (0, False), "seed": (0, False), "period": (0, False), "max_length": (0, False),
    "bptt": (2, False), "dropout": (0, False), "beam": (1, False),
    "average": (0, False), "joint_ngram": (0, False),
}
#: the largest value of an option, and whether it must be strictly smaller
_HIGHEST: dict[str, tuple[float, bool]] = {"dropout": (1, True)}
_CHOICES: dict[str, tuple[str, ...]] = {
    "schedule": ("constant", "cosine", "linear"), "accelerator": ("cpu", "gpu", "auto"),
    "missing": ("error", "interpolate"), "units": ("auto", "words", "chars"),
}


def option_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for the TaskConfig option ``name`` ("must be >= 1, got -1"), or None."""
    if name in _LOWEST:
        low, strict = _LOWEST[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {value!r}"
        if value != value or value in (float("inf"), float("-inf")):
            return f"must be finite, got {value}"
        if (value <= low) if strict else (value < low):
            return f"must be {'>' if strict else '>='} {low:g}, got {value}"
    if name in _HIGHEST:
        high, strict = _HIGHEST[name]
        if (value >= high) if strict else (value > high):
            return f"must be {'<' if strict else '<='} {high:g}, got {value}"
    if name in _CHOICES and value not in _CHOICES[name]:
        return f"must be one of {', '.join(_CHOICES[name])}; got {value!r}"
    if name == "cell":
        from rnnkit.cells import cell_names

        if value not in cell_names(None):
            return f"must be a registered cell ({', '.join(cell_names(None))}); got {value!r}"
    return None


@dataclass
class Prepared:
    """A task's data: examples per split (task-specific form) and ``meta``: JSON-able state
    (vocabularies, scaling) that the model and predictions need, saved in the run directory."""

    train: list[Any]
    val: list[Any]
    test: list[Any]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class PredictInput:
    """What ``rnnkit predict`` read: one entry per output line (None: a blank line, printed blank),
    each a string that :meth:`Task.predict` takes, and the gold column when the file had one."""

    items: list[str | None]
    targets: list[str | None] | None = None
    target_name: str = ""
    #: how the outputs of the non-blank items become the printed lines (default: one per item,
    #: blank lines kept); e.g. a CoNLL file's tags written back one token per line
    expand: Any = None
    note: str = ""  # a line for stderr (what the outputs are)


def _table_header(path: Path, text: str) -> list[str] | None:
    """The header fields of a CSV/TSV file (by its suffix), or None for other files."""
    if path.suffix.lower() not in (".csv", ".tsv", ".tab"):
        return None
    first = text.split("\n", 1)[0]
    return [h.strip() for h in first.split("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")]


class Task:
    """One application. Subclasses set the class attributes and implement the methods."""

    name: str = ""
    title: str = ""
    topology: str = ""  # e.g. "many-to-one"
    dataset: DatasetInfo
    metric: str = ""  # the headline metric's key in evaluate()'s dict
    higher_is_better: bool = True
    baseline: str = ""  # the headline baseline's key in baselines()'s dict
    user_format: str = ""  # what --data PATH must contain
    predict_format: str = ""  # the plain input of `rnnkit predict` (it also reads the --data format)
    input_column: str = ""  # the --data table's input column, read by predict ("" for a task without a table)
    target_column: str = ""  # the --data table's gold column: predict scores against it when present
    input_is_path: bool = False  # the input column names files (images, audio), relative to the table
    defaults: dict[str, Any] = {}
    data_keys: tuple[str, ...] = ()  # meta entries that describe the data, not the model (replaced on evaluate)
    picture_name: str = "picture.png"
    # What picks the best epoch (TaskConfig.keep_best): False, the validation loss; True, the task's
    # own metric on the validation split (logged as ``val_<metric>``), for tasks where the loss
    # (label smoothing, say) ranks epochs differently from the metric that is reported.
    # keep_best is on by default only where it was measured to help (sentiment).
    select_on_metric: bool = False
    max_ensemble: int = 1  # the largest TaskConfig.ensemble the task can build (1: no ensembles)
    cell_feature_dims: int = 1  # the cells the task takes: 1, over feature vectors; 3, over feature maps (convlstm)

    def config(self, **overrides: Any) -> TaskConfig:
        """The task's defaults with ``overrides`` (None values ignored); unknown names raise."""
        unknown = sorted(set(overrides) - set(TaskConfig.field_names()))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}; known: {TaskConfig.field_names()}")
        given = {k: v for k, v in overrides.items() if v is not None}
        values = {**self.defaults, **given}
        if values.get("data") and "max_train" not in given:
            values["max_train"] = 0  # the default caps are for the bundled data; a user's file is read whole
        cfg = TaskConfig(**values)
        from rnnkit.cells import cell_names

        fitting = cell_names(self.cell_feature_dims)
        if cfg.cell not in fitting:
            raise ValueError(f"--cell {cfg.cell}: task {self.name!r} takes {', '.join(fitting)}")
        if not 1 <= cfg.ensemble <= self.max_ensemble:
            limit = "only 1 (no ensembles)" if self.max_ensemble == 1 else f"1 to {self.max_ensemble}"
            raise ValueError(f"ensemble={cfg.ensemble}: task {self.name!r} takes {limit}")
        return cfg

    # -- data --------------------------------------------------------------------------------
    def prepare(self, cfg: TaskConfig) -> Prepared:
        raise NotImplementedError

    def cap(self, cfg: TaskConfig, train: list[Any]) -> list[Any]:
        """The first ``cfg.max_train`` training examples (all when 0). The bundled data sets have
        default caps (``rnnkit tasks --task NAME``); a cut of the user's own file says so on stderr."""
        if not cfg.max_train or len(train) <= cfg.max_train:
            return train
        if cfg.data:
            import sys

            print(f"note: --max-train {cfg.max_train} keeps {cfg.max_train} of the {len(train)} training examples "
                  f"of {cfg.data} ({len(train) - cfg.max_train} dropped; --max-train 0 keeps all)", file=sys.stderr)
        return train[: cfg.max_train]

    def length(self, example: Any) -> int:
        """Length used to bucket examples into batches."""
        return 1

    def training_state(self) -> Any:
        """What the task carries from one training batch to the next (tensors, tuples), saved in
        checkpoints so that a resumed run continues from it; None when nothing is carried."""
        return None

    def restore_training_state(self, state: Any) -> None:
        """Take back :meth:`training_state` from a checkpoint (None: start afresh)."""

    def batch_sampler(self, examples: list[Any], batch_size: int, *, train: bool, seed: int) -> Any:
        """The loaders' batches of ``examples`` (indices): length buckets, shuffled for training.
        Anything with ``set_epoch`` and ``skip_next`` (counted in batches) resumes mid-epoch."""
        from rnnkit.data.collate import BucketBatchSampler

        return BucketBatchSampler([self.length(e) for e in examples], batch_size, shuffle=train, seed=seed)

    def collate(self, examples: list[Any], meta: dict[str, Any]) -> dict[str, Tensor]:
        """A batch dict with at least ``"x"`` and ``"y"`` tensors."""
        raise NotImplementedError

    # -- model -------------------------------------------------------------------------------
    def build(self, cfg: TaskConfig, meta: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    # -- results -----------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, examples: list[Any], meta: dict[str, Any]) -> dict[str, float]:
        raise NotImplementedError

    def baselines(self, data: Prepared) -> dict[str, float]:
        raise NotImplementedError

    def finalize(self, model: nn.Module, data: Prepared) -> None:
        """After training, before the test: fit what depends on the trained model into ``data.meta``,
        on validation data only (g2p: the weight of its graphone reranker). Nothing by default."""

    def test_extras(self, model: nn.Module, data: Prepared) -> dict[str, float]:
        """Further test metrics beside :meth:`evaluate`'s on ``data.test`` (speech: a real voice); none
        by default."""
        return {}

    def beats(self, ours: float, base: float, margin: float = 0.0) -> bool:
        """Whether ``ours`` is better than ``base`` by at least ``margin`` (in the metric's units)."""
        return ours >= base + margin if self.higher_is_better else ours <= base - margin

    def predict(self, model: nn.Module, meta: dict[str, Any], lines: list[str]) -> list[str]:
        """One output line per input line (the ``--data`` format's input column / plain text)."""
        raise NotImplementedError

    def read_predict(self, path: str | Path, text: str) -> PredictInput:
        """The inputs of ``rnnkit predict``: a ``--data`` table (the header row skipped, the input
        column read, the target column kept for scoring), else one input per line with blank lines
        kept. ``text`` is the file's content (stdin for ``-``)."""
        from rnnkit.data.readers import read_table

        path = Path(path)
        header = _table_header(path, text)
        if header is not None and self.input_column and self.input_column in header:
            optional = [self.target_column] if self.target_column in header else []
            rows = read_table(path, [self.input_column], optional=optional, keep_blank=True,
                              allow_empty=[self.input_column])
            items = [self.table_input(path, row[self.input_column]) if row[self.input_column] else None
                     for _, row in rows]
            targets = [row.get(self.target_column) for _, row in rows] if optional else None
            return PredictInput(items, targets, self.target_column if optional else "")
        lines = text.split("\n")
        if lines and lines[-1] == "":  # the newline that ends the last line
            lines.pop()
        return PredictInput([line if line.strip() else None for line in lines])

    def table_input(self, path: Path, value: str) -> str:
        """A table cell as :meth:`predict` takes it: for a task whose input is a file
        (``input_is_path``), the path taken relative to the table, as ``--data`` reads it."""
        if self.input_is_path and not Path(value).is_absolute():
            return str(Path(path).parent / value)
        return value

    def score(self, outputs: list[str], targets: list[str]) -> str:
        """One line comparing predictions with the file's gold column: the share that match exactly
        (the first tab-separated field of each output)."""
        pairs = [(o.split("\t")[0].strip(), t.strip()) for o, t in zip(outputs, targets, strict=True)]
        hits = sum(o == t for o, t in pairs)
        return f"exact match {hits / max(len(pairs), 1):.4f} ({hits} of {len(pairs)})"

    def picture(self, model: nn.Module, data: Prepared, path: Path) -> Path | None:
        return None

    def picture_title(self, meta: dict[str, Any]) -> str:
        """The pictures' title: the task's for its bundled data, the file's name for a user's data."""
        name = meta.get("data_name")
        return f"{self.name} on {name}" if name else self.title

    def onnx_bundle(self, model: nn.Module, meta: dict[str, Any]):
        """The inference model as ONNX graphs with dynamic axes (:class:`rnnkit.onnx_graphs.OnnxBundle`)."""
        raise NotImplementedError(f"task {self.name!r} has no ONNX inference graphs")

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "title": self.title, "topology": self.topology, "metric": self.metric,
                "higher_is_better": self.higher_is_better, "baseline": self.baseline, "data": self.dataset.to_dict(),
                "user_format": self.user_format, "predict_format": self.predict_format}


TASKS: dict[str, Task] = {}


def register(task_cls: type[Task]) -> type[Task]:
    TASKS[task_cls.name] = task_cls()
    return task_cls


def get_task(name: str) -> Task:
    from rnnkit.tasks import _load_all

    _load_all()
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]
