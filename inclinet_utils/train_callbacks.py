"""Stage 05's Keras callbacks: step record, checkpoint for exact resume, evalDict JSON, curves, logs.

One epoch of `model.fit` is one step (one batch file). `StepRecord` turns each
epoch's logs and timings into that step's evalDict entry. `Checkpoint` snapshots
every model and optimizer variable (weights, BatchNorm statistics, Dropout seed
states, Adam moments and iteration count) and writes them, the next step and the
history as one atomic npz; `EvalDictJSON` and `CurveFigure` then write the evalDict
and the curve figure. The three hand their writes, in that order, to one
`BackgroundWriter` thread, so saving overlaps the next step's training, and a kill
between two writes is repaired from the checkpoint on resume. `training_callbacks`
assembles them with Keras' CSVLogger and TensorBoard and a tqdm bar. `DeadOutputStop`
ends a training whose network has started to answer every image alike.
"""

from __future__ import annotations

import concurrent.futures
import gc
import importlib.util
import json
import logging
import re
import time
from pathlib import Path

import keras
import numpy as np

from . import io as iio
from . import layout
from .train_files import HISTORY_KEYS, TrainInputError, is_constant, no_better_than_constant

log = logging.getLogger(__name__)


class BackgroundWriter:
    """One thread that runs write jobs in submission order; `drain` waits and re-raises their errors."""

    def __init__(self):
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._pending: list[concurrent.futures.Future] = []

    def submit(self, fn, *args, **kwargs) -> None:
        self._pending.append(self._pool.submit(fn, *args, **kwargs))

    def drain(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True)


# ---- checkpoint file ------------------------------------------------------------

def _variables(model) -> list:
    # model.variables includes BatchNorm statistics and the Dropout seed-generator states.
    return list(model.variables) + list(model.optimizer.variables)


def snapshot(model) -> tuple[list[np.ndarray], int]:
    """Copies of every model and optimizer variable (and how many belong to the model)."""
    return [np.array(v.numpy()) for v in _variables(model)], len(model.variables)


def save_checkpoint(path: Path, model_or_snapshot, next_step: int, history: dict, params: dict) -> None:
    """Write weights, optimizer state, RNG state, next step and history in one atomic npz.

    Uncompressed: zlib on float weights costs ~1 s per step for ~3% of the size.
    """
    values, n_model = (model_or_snapshot if isinstance(model_or_snapshot, tuple)
                       else snapshot(model_or_snapshot))
    arrays = {f"v{i:04d}": v for i, v in enumerate(values)}
    arrays["n_model_variables"] = np.int64(n_model)
    arrays["next_step"] = np.int64(next_step)
    arrays["history_json"] = np.array(json.dumps(history, default=iio._json_default))
    arrays["params_json"] = np.array(json.dumps(params, default=iio._json_default))
    with iio.atomic_path(path, overwrite=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_checkpoint(path: Path, model) -> tuple[int, dict, dict]:
    """Restore a checkpoint into a built, compiled model; returns (next_step, history, params)."""
    opt = model.optimizer
    if not opt.built:
        opt.build(model.trainable_variables)
    variables = _variables(model)
    with np.load(path) as z:
        n_saved = sum(1 for k in z.files if re.fullmatch(r"v\d{4}", k))
        if n_saved != len(variables) or int(z["n_model_variables"]) != len(model.variables):
            raise TrainInputError(
                f"checkpoint {path} holds {n_saved} variables; the model has {len(variables)} "
                "(different model, size or mixed precision?)")
        for i, v in enumerate(variables):
            value = z[f"v{i:04d}"]
            if tuple(value.shape) != tuple(v.shape):
                raise TrainInputError(f"checkpoint {path}: variable {v.path} has shape {value.shape}, "
                                      f"the model expects {tuple(v.shape)}")
            v.assign(value)
        return int(z["next_step"]), json.loads(str(z["history_json"])), json.loads(str(z["params_json"]))


def checkpoint_params(path: Path) -> dict:
    """The training parameters a checkpoint was written with (read without loading its weights)."""
    with np.load(path) as z:
        return json.loads(str(z["params_json"]))


def trim_csv_log(path: Path, start: int) -> None:
    """Keep only the CSVLogger rows of epochs before `start` (a killed run may have logged one more)."""
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    if start == 0 or not lines:
        path.unlink()
        return
    rows = [ln for ln in lines[1:] if ln.split(",", 1)[0].isdigit() and int(ln.split(",", 1)[0]) < start]
    if len(rows) != len(lines) - 1:
        iio.write_text(path, "".join(lines[:1] + rows), overwrite=True)


# ---- callbacks ------------------------------------------------------------------

class StepRecord(keras.callbacks.Callback):
    """Builds each step's evalDict entry: epoch logs, file, pass, errors in degrees and timings.

    time_s is the whole step period (the previous step's saving included), split into
    time_save_s (waiting for the previous step's saving), time_data_s (waiting for
    the file), time_fit_s (training) and time_eval_s (validation).
    """

    def __init__(self, history: dict, plan, files, dataset, deg_per_target: float | None):
        super().__init__()
        self.history, self.plan, self.files, self.dataset = history, plan, files, dataset
        self.deg = deg_per_target

    def on_train_begin(self, logs=None):
        self._t_end = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._t_begin = time.perf_counter()
        self._save_s = self._t_begin - self._t_end

    def on_test_begin(self, logs=None):
        self._t_eval = time.perf_counter()

    def on_test_end(self, logs=None):
        self._t_eval_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        t = time.perf_counter()
        p, i = self.plan[epoch]
        entry = {k: float(logs[k]) for k in ("loss", "mse", "mae", "val_loss", "val_mse", "val_mae")}
        # a classifier (deg_per_target None) records its AUC and accuracy instead of degrees
        scores = ({k: float(logs[k]) for k in ("auc", "accuracy", "val_auc", "val_accuracy") if k in logs}
                  if self.deg is None else
                  {"mae_deg": entry["mae"] * self.deg, "val_mae_deg": entry["val_mae"] * self.deg})
        entry.update({
            "batchNo": layout.batch_number(self.files[i]), "batchFile": self.files[i].name, "pass": p,
            **scores,
            "n_images": self.dataset.n_images, "time_s": t - self._t_end,
            "time_data_s": self.dataset.wait_s,
            "time_fit_s": self._t_eval - self._t_begin - self.dataset.wait_s,
            "time_eval_s": self._t_eval_end - self._t_eval, "time_save_s": self._save_s,
        })
        self.history[str(epoch)] = entry
        self._t_end = t


def _save_and_collect(path, state, next_step, history, params) -> None:
    save_checkpoint(path, state, next_step, history, params)
    # Each step leaves reference cycles (Keras/TF exception frames, figure artists) holding
    # up to a batch file's arrays; the rare automatic full collections would let memory
    # creep up by several MB per step, so collect here, off the training thread.
    gc.collect()


class Checkpoint(keras.callbacks.Callback):
    """After each step: snapshot every variable at once, write the checkpoint in the writer thread."""

    def __init__(self, path: Path, history: dict, params: dict, writer: BackgroundWriter):
        super().__init__()  # (not self.params: Keras sets that to the fit's epochs and steps)
        self.path, self.history, self.train_params, self.writer = path, history, params, writer

    def on_epoch_end(self, epoch, logs=None):
        self.writer.drain()  # the previous step's files are complete (errors raised) first
        self.writer.submit(_save_and_collect, self.path, snapshot(self.model), epoch + 1,
                           dict(self.history), self.train_params)


class EvalDictJSON(keras.callbacks.Callback):
    """The evalDict {step: entry} as JSON after each step (and at the start, repairing a lagging one)."""

    def __init__(self, path: Path, history: dict, writer: BackgroundWriter):
        super().__init__()
        self.path, self.history, self.writer = path, history, writer

    def _write(self):
        self.writer.submit(iio.write_json, self.path, dict(self.history), overwrite=True)

    def on_train_begin(self, logs=None):
        if self.history:
            self._write()

    def on_epoch_end(self, epoch, logs=None):
        self._write()


class CurveFigure(keras.callbacks.Callback):
    """The training curves (plots.training_curves) as a JPEG, redrawn as training goes on.

    Drawing costs about half a second of CPU, a large share of a short step on a
    laptop, so after a step the figure is redrawn only when `min_interval_s` have
    passed since the last drawing began; always at the start of a resumed training and
    at the end. One Figure is reused: a new one per drawing would be a reference
    cycle that only the rare full garbage collections free.
    """

    def __init__(self, path: Path, history: dict, writer: BackgroundWriter, title: str,
                 min_interval_s: float = 30.0):
        from matplotlib.figure import Figure

        super().__init__()
        self.path, self.history, self.writer, self.title = path, history, writer, title
        self.min_interval_s = min_interval_s
        self.figure = Figure(figsize=(7, 2.6))
        self._last = -float("inf")

    def _draw(self, history: dict) -> None:
        from .plots import classifier_curves, training_curves

        classifier = any("val_auc" in v for v in history.values())
        fig = (classifier_curves if classifier else training_curves)({int(k): v for k, v in history.items()}, title=self.title, fig=self.figure)
        iio.save_figure(fig, self.path, dpi=80)

    def _submit(self) -> None:
        self._last = time.perf_counter()
        self.writer.submit(self._draw, dict(self.history))

    def on_train_begin(self, logs=None):
        if self.history:
            self._submit()

    def on_epoch_end(self, epoch, logs=None):
        if time.perf_counter() - self._last >= self.min_interval_s:
            self._submit()

    def on_train_end(self, logs=None):
        self._submit()


class DeadOutputStop(keras.callbacks.Callback):
    """Stop model.fit when the network has died: at once when it gives a fixed probe of training
    images one and the same output, or when its training loss over a step has been no better than
    the best constant answer's (`train_files.no_better_than_constant`) at `patience` successive
    steps from step `from_epoch` on (the first full-rate step: during the warm-up healthy networks
    are often still there). `probe` and `constant_loss` come from a training file
    (`train_dataset.training_reference`): the validation set is made of the held-out test galaxies,
    and which attempt of a training is kept must not depend on them.

    Such a network did not recover in a whole training, so the rest of it would be wasted
    (`train.train_model` restarts it). The probe costs one small prediction per step.
    """

    def __init__(self, probe: np.ndarray, constant_loss: float, from_epoch: int, patience: int = 3):
        super().__init__()
        self.probe, self.constant_loss, self.from_epoch, self.patience = probe, constant_loss, from_epoch, patience
        self.stuck_steps, self.dead_after = 0, None

    def on_epoch_end(self, epoch, logs=None):
        out = np.asarray(self.model.predict_on_batch(self.probe), dtype=np.float64)
        loss = (logs or {}).get("loss")
        stuck = epoch >= self.from_epoch and loss is not None and no_better_than_constant(loss, self.constant_loss)
        self.stuck_steps = self.stuck_steps + 1 if stuck else 0
        log.debug("step %d: training loss %.3f of the best constant's", epoch,
                  float("nan") if loss is None else loss / self.constant_loss)
        if (len(self.probe) > 1 and is_constant(out)) or self.stuck_steps >= self.patience:
            self.dead_after = int(epoch)
            self.model.stop_training = True


def training_callbacks(paths: dict, history: dict, params: dict, plan, files, dataset,
                       writer: BackgroundWriter, title: str, deg_per_target: float,
                       figure: bool = True, progress: bool = True) -> list:
    """The callbacks of one training, in the order they must run at each epoch's end.

    The caller closes `writer` after model.fit: that waits for the last writes.
    """
    from tqdm import tqdm
    from tqdm.keras import TqdmCallback

    callbacks = [StepRecord(history, plan, files, dataset, deg_per_target), dataset.select_callback(),
                 Checkpoint(paths["checkpoint"], history, params, writer),
                 EvalDictJSON(paths["eval_dict"], history, writer)]
    if figure:
        callbacks.append(CurveFigure(paths["eval_fig"], history, writer, title))
    callbacks.append(keras.callbacks.CSVLogger(str(paths["csv_log"]), append=True))
    if importlib.util.find_spec("tensorflow"):  # Keras writes TensorBoard logs through tf.summary
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(paths["tensorboard"]), write_graph=False))
    if progress:
        callbacks.append(TqdmCallback(epochs=len(plan), verbose=0, tqdm_class=tqdm, desc=f"05_train {title}"))
    return callbacks
