"""Stage 05, fine-tuning: start each network of a run from the same network of another run.

`FineTune` holds the options (the parent run folder, which layers train, how many
passes the convolution blocks stay frozen, the learning rate). `check_parents` finds,
before anything is written, the parent model of every (model, Uset) to train: the
parent's ``models/Uset_<jjj>_<model>.keras`` of the same Uset where it exists, else of
Uset 000, and refuses (naming both runs) a parent whose model or image size differs.
`initialise` copies its weights into the freshly built network, `set_frozen` freezes or
thaws the convolution blocks, and `unfreeze_at` (a Keras callback) thaws them after
`frozen_passes` passes. `record_parent` writes the parent run and its metrics into the
child's run.json, so the chain of runs can be followed back.

The learning rate: FINETUNE_LEARNING_RATE, chosen with benchmarks/bench_transfer.py
(README, "Fine-tuning"): 3e-4 for all layers from the first step, under the stage's
cosine decay.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from . import io as iio
from . import layout
from .train_files import TrainInputError

log = logging.getLogger(__name__)

TRAINABLE = ("all", "head")
FINETUNE_LEARNING_RATE = 3e-4      # Adam rate of a fine-tuning (bench_transfer.py experiment)
FROZEN_PREFIXES = ("conv", "bn_")  # layers of the convolution blocks (models.ConvBlock names)


@dataclasses.dataclass(frozen=True)
class FineTune:
    """Fine-tuning options: the parent run folder; trainable 'all' (every layer, after
    `frozen_passes` passes with the convolution blocks frozen) or 'head' (the blocks stay
    frozen); the Adam learning rate (None: the training's own)."""

    init_from: str
    trainable: str = "all"
    frozen_passes: int = 0
    learning_rate: float | None = FINETUNE_LEARNING_RATE

    def __post_init__(self):
        if self.trainable not in TRAINABLE:
            raise TrainInputError(f"trainable={self.trainable!r}: expected one of {', '.join(TRAINABLE)}")
        if isinstance(self.frozen_passes, bool) or int(self.frozen_passes) != self.frozen_passes \
                or self.frozen_passes < 0:
            raise TrainInputError(f"frozen_passes={self.frozen_passes!r}: expected an integer >= 0")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise TrainInputError(f"finetune learning_rate={self.learning_rate!r}: expected a positive number")
        if not Path(self.init_from).is_dir():
            raise TrainInputError(f"init_from={self.init_from}: no such run folder")
        object.__setattr__(self, "init_from", str(Path(self.init_from).resolve()))

    def as_params(self) -> dict:
        """The options as recorded in the training's params.json and checkpoint (resume checks them)."""
        return {"init_from": self.init_from, "trainable": self.trainable, "frozen_passes": int(self.frozen_passes)}


def from_options(init_from: str = "", trainable: str = "all", frozen_passes: int = 0,
                 learning_rate: float | None = FINETUNE_LEARNING_RATE) -> FineTune | None:
    """A FineTune from notebook / command-line values; None when init_from is empty."""
    if not init_from:
        return None
    return FineTune(str(init_from), trainable, int(frozen_passes), learning_rate)


def add_arguments(parser) -> None:
    """The fine-tuning options of `python -m inclinet_utils.train`."""
    parser.add_argument("--init-from", metavar="RUN", help="start each model from the same model of this run folder "
                        "(same Uset, else Uset 000)")
    parser.add_argument("--trainable", choices=TRAINABLE, default="all",
                        help="with --init-from: all layers (after --frozen-passes) or the dense head only")
    parser.add_argument("--frozen-passes", type=int, default=0,
                        help="with --init-from: passes with the convolution blocks frozen before all train")
    parser.add_argument("--finetune-learning-rate", type=float, default=FINETUNE_LEARNING_RATE,
                        help=f"with --init-from: Adam learning rate (default {FINETUNE_LEARNING_RATE:g})")


# ---- the parent models ----------------------------------------------------------------

def parent_model_path(ft: FineTune, model_name: str, uset: int, run_dir=None) -> Path:
    """The parent's final model of `model_name`: same Uset if present, else Uset 000."""
    models_dir = layout.run_paths(ft.init_from)["models"]
    for u in dict.fromkeys((int(uset), 0)):
        path = layout.training_paths(models_dir, model_name, u)["final"]
        if path.is_file():
            return path
    present = sorted(p.name for p in models_dir.glob("Uset_*.keras")) if models_dir.is_dir() else []
    child = f"this run {Path(run_dir).resolve()} trains" if run_dir is not None else "the run trains"
    raise TrainInputError(
        f"parent run {ft.init_from} has no finished {model_name} for Uset {uset:03d} or 000 "
        f"(it has: {', '.join(present) or 'no finished models'}); {child} {model_name}: fine-tuning "
        "starts each model from the same model of the parent")


def _parent_model_name(path: Path) -> str:
    """The parent's model name: its training's params.json if kept, else its file name."""
    name, uset = layout.parse_model_file_name(path.name)
    params = layout.training_paths(path.parent, name, uset)["params"]
    return iio.read_json(params).get("model", name) if params.is_file() else name


def _load_parent(path: Path):
    from .inference import load_model

    return load_model(path)


def check_parent(ft: FineTune, run_dir, model_name: str, uset: int, size: int):
    """The parent model (loaded) of one training; TrainInputError naming both runs when its
    model or image size differs from the child's."""
    from .inference import model_input_size

    path = parent_model_path(ft, model_name, uset, run_dir)
    parent = _load_parent(path)
    p_name, p_size = _parent_model_name(path), model_input_size(parent, path)
    if (p_name, p_size) != (model_name, int(size)):
        raise TrainInputError(
            f"parent {path} is {p_name} at {p_size}x{p_size} px; this run {Path(run_dir).resolve()} trains "
            f"{model_name} at {size}x{size} px: fine-tuning needs the same model and image size")
    return parent


def check_parents(ft: FineTune, run_dir, models, usets, size: int) -> dict:
    """{(model, uset): parent path} for every training, all checked before the first starts."""
    found = {}
    for uset in usets:
        for name in models:
            check_parent(ft, run_dir, name, uset, size)
            found[(name, uset)] = parent_model_path(ft, name, uset, run_dir)
    return found


def initialise(model, ft: FineTune, run_dir, model_name: str, uset: int, size: int) -> Path:
    """Copy the parent's weights (BatchNorm statistics too) into the freshly built `model`."""
    parent = check_parent(ft, run_dir, model_name, uset, size)
    path = parent_model_path(ft, model_name, uset, run_dir)
    shapes = [tuple(w.shape) for w in model.weights], [tuple(w.shape) for w in parent.weights]
    if shapes[0] != shapes[1]:
        raise TrainInputError(f"parent {path} has other layers than {model_name} at {size} px of this run "
                              f"{Path(run_dir).resolve()}: fine-tuning needs the same model and image size")
    for target, source in zip(model.weights, parent.weights):
        target.assign(source.numpy().astype(target.dtype))
    log.info("%s Uset %03d starts from %s", model_name, uset, path)
    return path


# ---- freezing ---------------------------------------------------------------------------

def block_layers(model) -> list:
    """The layers of the convolution blocks (convolutions and their BatchNorms)."""
    return [layer for layer in model.layers if layer.name.startswith(FROZEN_PREFIXES)]


def set_frozen(model, frozen: bool) -> None:
    """Freeze (trainable False, BatchNorm in inference mode) or thaw the convolution blocks."""
    for layer in block_layers(model):
        layer.trainable = not frozen


def frozen_steps(ft: FineTune, n_files: int, n_steps: int) -> int:
    """Steps (epochs) with the convolution blocks frozen: all for 'head', else frozen_passes passes."""
    return n_steps if ft.trainable == "head" else min(n_steps, int(ft.frozen_passes) * int(n_files))


def unfreeze_at(step: int):
    """A Keras callback that thaws the convolution blocks at the start of epoch `step` and
    rebuilds the train function, so that epoch's first batch already updates them."""
    import keras

    class UnfreezeAt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == step:
                set_frozen(self.model, False)
                self.model.make_train_function(force=True)
                log.info("step %d: convolution blocks thawed", epoch)

    return UnfreezeAt()


def prepare(model, ft: FineTune, start: int, n_files: int, n_steps: int) -> list:
    """Freeze the blocks if training resumes (or starts) inside the frozen steps; the callbacks."""
    n_frozen = frozen_steps(ft, n_files, n_steps)
    set_frozen(model, start < n_frozen)
    return [unfreeze_at(n_frozen)] if start < n_frozen < n_steps else []


# ---- the record ---------------------------------------------------------------------------

def parent_record(parent_dir) -> dict:
    """The parent run (folder, name, its parent) and its metrics.json (None if not evaluated yet)."""
    parent_dir = Path(parent_dir).resolve()
    paths = layout.run_paths(parent_dir)
    run = iio.read_json(paths["run_json"]) if paths["run_json"].is_file() else {}
    return {"run_dir": str(parent_dir), "run_name": run.get("run_name", parent_dir.name),
            "parameters": run.get("parameters"), "parent": run.get("parent"),
            "metrics": iio.read_json(paths["metrics"]) if paths["metrics"].is_file() else None}


def record_parent(run_dir, ft: FineTune) -> Path:
    """Write the parent into the run's run.json (created if the run has none)."""
    path = layout.run_paths(run_dir)["run_json"]
    record = iio.read_json(path) if path.is_file() else {"run_name": Path(run_dir).resolve().name}
    record["parent"] = parent_record(ft.init_from)
    record["finetune"] = {**ft.as_params(), "learning_rate": ft.learning_rate}
    iio.write_json(path, record, overwrite=True)
    return path


# ---- what the notebooks show ----------------------------------------------------------------

def parent_history(ft: FineTune, model_name: str, uset: int) -> dict:
    """The step history (evalDict) of the parent training a child (model, Uset) started from."""
    from .train import load_history

    name, parent_uset = layout.parse_model_file_name(parent_model_path(ft, model_name, uset).name)
    return load_history(ft.init_from, name, parent_uset)


def parent_of(run_dir) -> dict | None:
    """The parent recorded in a run's run.json (None: not a fine-tuned run); its metrics are
    re-read from the parent's metrics.json when it was evaluated after the child started."""
    path = layout.run_paths(run_dir)["run_json"]
    parent = iio.read_json(path).get("parent") if path.is_file() else None
    if parent and parent.get("metrics") is None and Path(parent["run_dir"]).is_dir():
        parent = {**parent, "metrics": parent_record(parent["run_dir"])["metrics"]}
    return parent


def metrics_beside_parent(run_dir, metrics: dict, columns=("rms_deg", "mae_deg", "bias_deg", "rms_true_deg")):
    """The child's metrics.json rows beside its parent's (same row names), or None without a parent."""
    import pandas as pd

    parent = parent_of(run_dir)
    if not parent or not parent.get("metrics"):
        return None
    both = {"this run": pd.DataFrame.from_dict(metrics, orient="index"),
            f"parent {parent['run_name']}": pd.DataFrame.from_dict(parent["metrics"], orient="index")}
    keep = [c for c in columns if all(c in t.columns for t in both.values())]
    table = pd.concat({k: t[keep] for k, t in both.items()}, axis=1)
    table.index.name = "row"
    return table.swaplevel(axis=1).sort_index(axis=1, level=0, sort_remaining=False)
