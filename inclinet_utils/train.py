"""Stage 05: train the registered CNN regressors with `model.fit`, one augmented batch file per epoch.

Each (model, Uset) is one `model.fit` over a `train_dataset.BatchFileDataset`: epoch
k trains on the whole file plan[k] of the seeded `step_plan` and is evaluated on the
fixed validation set. Keras callbacks (`train_callbacks`) record each step's
evalDict entry and timings, write the checkpoint (every model and optimizer
variable, the next step, the history), the evalDict JSON, the curve figure, a CSV
and a TensorBoard log. A killed run resumes with `initial_epoch` from its last
checkpoint, with the same file order and random streams, so the history has no gap
or repeat and the weights equal an uninterrupted run's. Also the CLI for spreading
single (model, Uset) trainings over machines, and the summary tables.

The training hyperparameters (`training_batch_size`, `learning_rate`, `bn_momentum`,
`n_passes`, `output_activation`, `mixed_precision`) pass through `train_all`,
`train_model` and the CLI alike. A classifier (`models.is_classifier`, e.g.
``model4_binary``) trains the same way on the run's ``augmented_binary`` files, with
its own targets (0/1), loss and metrics; the name decides.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from . import layout
from .presets import PRESETS
from .train_files import (CONSTANT_OUTPUT_STD, INIT, NO_BETTER, TrainInputError, int_seed,  # noqa: F401
                          is_constant, load_arrays, no_better_than_constant, step_plan, training_seed,
                          uset_files, validation_loss)

log = logging.getLogger(__name__)

# Steps (batch files) over which the learning rate warms up from a tenth to its peak. One
# step was too short: model4's 8-unit ReLU head died in the first full-rate step for one
# training seed in five (constant output, 12 deg RMS); over four steps every seed trained and
# the seeds' scatter shrank (benchmarks/ACCURACY.md, sixth session).
WARMUP_STEPS = 4
# Restarts with a new seed stream for a network that dies anyway (train_callbacks.DeadOutputStop):
# even with the warm-up, 3 of 12 development model4 trainings (one Uset and seed) did not learn.
MAX_RESTARTS = 3

# Parameters added after the first checkpoints were written: their value in those.
_PARAM_DEFAULTS = {"output_activation": "tanh", "mixed_precision": None, "target_range": [-1.0, 1.0],
                   "warmup_steps": 1, "init_attempt": 0, "dense_activation": "relu"}


# ---- run folder layout --------------------------------------------------------

def training_paths(run_dir, model_name: str, uset: int) -> dict[str, Path]:
    """Files of one (model, Uset) training under the run's models/ folder."""
    return layout.training_paths(layout.run_paths(run_dir)["models"], model_name, uset)


def find_usets(run_dir, size: int, binary: bool = False) -> list[int]:
    """Uset indices that have at least one augmented batch file of this size (binary: classifier files)."""
    from .train_files import augmented_dir

    return layout.find_usets(augmented_dir(run_dir, binary), size)


def batch_files(run_dir, uset: int, size: int) -> list[Path]:
    """The augmented training files of one Uset, sorted by batch number."""
    return uset_files(run_dir, uset, size)[0]


def validation_file(run_dir, size: int, binary: bool = False) -> Path:
    from .train_files import augmented_dir

    return layout.validation_file(augmented_dir(run_dir, binary), size)


# ---- TensorFlow set-up ----------------------------------------------------------

def configure_threads(intra: int | None = None, inter: int | None = None) -> bool:
    """Give TF's op pool one thread per usable core and a small inter-op pool.

    Only possible before TF runs its first op; returns False (and changes
    nothing) when TF is already initialized, e.g. in a notebook that used it, or when
    Keras runs on another backend (JAX, PyTorch), which sizes its own pools.
    """
    from .models import tensorflow_backend

    if not tensorflow_backend():
        return False
    import tensorflow as tf

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra or n)
        tf.config.threading.set_inter_op_parallelism_threads(inter or min(2, n))
    except RuntimeError:
        return False
    return True


def get_strategy():
    """MirroredStrategy over all GPUs when more than one is visible, else the default strategy.

    On another Keras backend (JAX, PyTorch: the models are plain Keras) nothing is distributed:
    a strategy whose scope does nothing.
    """
    from .models import tensorflow_backend

    if not tensorflow_backend():
        return _NoStrategy()
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([g.name for g in gpus])
    return tf.distribute.get_strategy()


class _NoStrategy:
    """The `scope()` of a tf.distribute strategy, for backends without one."""

    def scope(self):
        return contextlib.nullcontext()


def save_keras_atomic(model, path: Path) -> Path:
    """model.save under a temporary *.keras name (Keras insists on the suffix), then rename."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; refusing to overwrite it (use a new run folder)")
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ---- history ------------------------------------------------------------------

def load_history(run_dir, model_name: str, uset: int) -> dict[int, dict]:
    """The evalDict of one training as {step: entry} (empty if it has not started)."""
    from . import io as iio

    path = training_paths(run_dir, model_name, uset)["eval_dict"]
    if not path.is_file():
        return {}
    return {int(k): v for k, v in iio.read_json(path).items()}


# ---- one training ---------------------------------------------------------------

def check_hyperparameters(model_name: str, size, n_passes, training_batch_size, learning_rate,
                          bn_momentum, output_activation, mixed_precision) -> None:
    """Raise TrainInputError naming the first value one training cannot use."""
    from .models import ModelError, check_build_options

    for name, v in (("size", size), ("n_passes", n_passes), ("training_batch_size", training_batch_size)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise TrainInputError(f"{name}={v!r}: expected a positive integer")
    if not learning_rate > 0:
        raise TrainInputError(f"learning_rate={learning_rate!r}: expected a positive number")
    try:
        check_build_options(model_name, size, bn_momentum=bn_momentum, output_activation=output_activation,
                            mixed_precision=mixed_precision)
    except ModelError as exc:
        raise TrainInputError(str(exc)) from exc


def training_params(model_name, uset, size, n_passes, training_batch_size, learning_rate, seed,
                    bn_momentum, output_activation, mixed_precision, files, val_path,
                    init_attempt: int = 0) -> dict:
    """The parameters of one training, as written to <stem>_params.json and the checkpoint.

    init_attempt: how many earlier attempts died (`train_model`); it picks the seed stream."""
    from .models import MODELS, TARGET_RANGE

    return {"model": model_name, "dense_activation": MODELS[model_name].dense_activation,  # model4 was ReLU before
            "uset": int(uset), "size": int(size), "n_passes": int(n_passes),
            "training_batch_size": int(training_batch_size), "learning_rate": float(learning_rate),
            "seed": int(seed), "bn_momentum": float(bn_momentum), "output_activation": output_activation,
            "mixed_precision": mixed_precision, "target_range": [float(t) for t in TARGET_RANGE],
            "warmup_steps": WARMUP_STEPS, "init_attempt": int(init_attempt),
            "batch_files": [f.name for f in files], "validation_file": val_path.name}


def _check_params(path: Path, saved: dict, params: dict) -> None:
    for key, value in params.items():
        if saved.get(key, _PARAM_DEFAULTS.get(key)) != value:
            raise TrainInputError(
                f"{path}: the training being resumed has {key}={saved.get(key)!r}, this call "
                f"{key}={value!r}; use the same parameters or a new run folder")


def learning_rate_schedule(peak: float, n_steps: int, updates_per_step: int, warmup_steps: int):
    """The rate of a training of n_steps files: it rises linearly from a tenth of `peak` over
    the updates of the first `warmup_steps` files (at most half the training), then decays on
    a cosine to a tenth over the rest.

    With a constant rate the step-to-step scatter dominates the final error of short runs;
    without a long enough warm-up the first full-rate Adam updates can kill the narrow ReLU
    head of model4 for good (it then predicts one constant; benchmarks/ACCURACY.md). Keras
    evaluates it at the optimizer's own iteration count, so a resumed training continues it.
    """
    import keras

    total = max(2, n_steps * updates_per_step)
    warmup = min(max(1, warmup_steps * updates_per_step), total // 2)
    return keras.optimizers.schedules.CosineDecay(
        peak / 10, decay_steps=total - warmup, alpha=0.1, warmup_target=peak, warmup_steps=warmup)


def _build(params: dict, n_steps: int, updates_per_step: int):
    """The compiled model under the device strategy, its optimizer built (same initial weights
    every time), with the `learning_rate_schedule` of its parameters."""
    import keras

    from .models import build_model

    schedule = learning_rate_schedule(params["learning_rate"], n_steps, updates_per_step, params["warmup_steps"])
    keras.utils.set_random_seed(int_seed(_seed(params), INIT, params["uset"]))
    with get_strategy().scope():
        model = build_model(params["model"], params["size"], learning_rate=schedule,
                            bn_momentum=params["bn_momentum"], output_activation=params["output_activation"],
                            mixed_precision=params["mixed_precision"])
        model.optimizer.build(model.trainable_variables)
    return model


def _seed(params: dict) -> int:
    """The seed of this attempt's initial weights, file order and shuffles (`training_seed`)."""
    return training_seed(params["seed"], params.get("init_attempt", 0))


def _restore(model, paths: dict, params: dict) -> tuple[int, dict]:
    """(next step, history) from an existing checkpoint, else (0, {}); readies the folder."""
    from . import io as iio
    from .train_callbacks import load_checkpoint, trim_csv_log

    start, history = 0, {}
    if paths["checkpoint"].exists():
        start, history, _ = load_checkpoint(paths["checkpoint"], model)
        history = {str(k): v for k, v in history.items() if int(k) < start}
    paths["ckpt_dir"].mkdir(parents=True, exist_ok=True)
    for stale in paths["ckpt_dir"].glob(".*.partial-*"):  # left by a killed writer
        stale.unlink()
    trim_csv_log(paths["csv_log"], start)
    if start == 0:  # a fresh start (or one killed before its first checkpoint)
        iio.write_json(paths["params"], params, overwrite=True)
    return start, history


def _fit(model, params, paths, files, plan, start, stop, history, validation, progress, figure,
         extra_callbacks=()) -> None:
    """model.fit over epochs start..stop-1, one batch file each, with the stage's callbacks."""
    from .models import DEG_PER_TARGET, is_classifier
    from .train_callbacks import BackgroundWriter, training_callbacks
    from .train_dataset import BatchFileDataset

    title = f"{layout.uset_name(params['uset'])} {params['model']}"
    dataset = BatchFileDataset(files, plan, params["size"], params["training_batch_size"], _seed(params),
                               params["uset"], start=start, stop=stop, model=params["model"])
    writer = BackgroundWriter()
    # The checkpoint writer collects garbage after every step (train_callbacks); with the
    # objects alive now (TF, Keras, the model) frozen out of the collector that takes
    # milliseconds instead of seconds.
    gc.collect()
    gc.freeze()
    try:
        callbacks = training_callbacks(paths, history, params, plan, files, dataset, writer, title,
                                       None if is_classifier(params["model"]) else DEG_PER_TARGET,
                                       figure=figure, progress=progress) + list(extra_callbacks)
        # shuffle=False: the dataset shuffles each file itself, with the step's seeded stream
        model.fit(dataset, epochs=stop, initial_epoch=start, validation_data=validation.dataset,
                  shuffle=False, verbose=0, callbacks=callbacks)
    finally:
        gc.unfreeze()
        writer.close()
        dataset.close()


def _finished(paths: dict, params: dict, resume: bool) -> bool:
    """True when the final model exists; refuses existing work unless `resume`, and a
    checkpoint whose parameters differ from `params`."""
    if paths["final"].exists():
        if not resume:
            raise FileExistsError(f"{paths['final']} already exists; use resume=True or a new run folder")
        return True
    if paths["checkpoint"].exists():
        if not resume:
            raise FileExistsError(f"{paths['checkpoint']} already exists (a started training); "
                                  "use resume=True to continue it, or a new run folder")
        from .train_callbacks import checkpoint_params

        _check_params(paths["checkpoint"], checkpoint_params(paths["checkpoint"]), params)
    return False


def _model_at_start(run_dir, params: dict, paths: dict, files, plan, finetune):
    """(model, first step, history, fine-tuning callbacks): built, started from the parent run
    when fine-tuning, then restored from this training's checkpoint if there is one."""
    from .train_files import batches_per_file

    model = _build(params, len(plan), batches_per_file(files, params["training_batch_size"]))
    if finetune is None:
        start, history = _restore(model, paths, params)
        return model, start, history, []
    from . import finetune as ift

    ift.initialise(model, finetune, run_dir, params["model"], params["uset"], params["size"])  # a checkpoint overrides it
    start, history = _restore(model, paths, params)
    return model, start, history, ift.prepare(model, finetune, start, len(files), len(plan))


def train_model(run_dir, model_name: str, uset: int, size: int, n_passes: int,
                training_batch_size: int = 64, learning_rate: float = 1e-3, seed: int = 42,
                resume: bool = True, progress: bool = True, max_steps: int | None = None,
                validation=None, figure: bool = True, bn_momentum: float = 0.9,
                output_activation: str = "tanh", mixed_precision: str | None = None, finetune=None) -> dict:
    """Train one (model, Uset) for n_passes over its augmented files; returns a summary.

    Step k (0-based) is epoch k of one `model.fit`: it trains on file plan[k]; the
    evalDict entry, checkpoint, figure and logs are written after each step. With
    resume=True an existing checkpoint is continued (parameters must match); with
    resume=False an existing training folder is an error. `max_steps` stops after that
    many completed steps in total (the run can be resumed later), e.g. for job time
    limits. bn_momentum: BatchNorm moving-average momentum; 0.9 because a laptop run
    makes too few updates for the original's 0.99 statistics to settle (production
    preset: 0.99). output_activation ('tanh', 'linear') and mixed_precision (None,
    'mixed_bfloat16', 'mixed_float16', or 'auto': `models.resolve_mixed_precision`): see
    `models.build_model`. `validation`: a `train_dataset.ValidationSet` to reuse.
    `finetune`: a `finetune.FineTune` (start from another run's model, freezing, its rate).
    A network that dies (one output for every image, or after the warm-up no better than one
    constant answer for three steps: `train_callbacks.DeadOutputStop`) is stopped, its folder
    set aside (`layout.dead_training_dir`) and the training started again with a new seed
    stream (`train_files.training_seed`: initial weights, file order, shuffles), at most
    `MAX_RESTARTS` times (not when fine-tuning).
    """
    import keras

    from .models import CLASSIFIER_ACTIVATION, is_classifier, resolve_mixed_precision

    if finetune is not None and finetune.learning_rate is not None:
        learning_rate = finetune.learning_rate

    mixed_precision = resolve_mixed_precision(mixed_precision)  # recorded resolved, so resume agrees
    binary = is_classifier(model_name)
    output_activation = CLASSIFIER_ACTIVATION if binary else output_activation
    check_hyperparameters(model_name, size, n_passes, training_batch_size, learning_rate, bn_momentum,
                          output_activation, mixed_precision)
    files, val_path = uset_files(run_dir, uset, size, binary)
    paths = training_paths(run_dir, model_name, uset)
    if validation is None or validation.path != val_path:
        from .train_dataset import ValidationSet

        validation = ValidationSet(val_path, size, training_batch_size, model_name)
    while True:  # a network that dies is set aside and started again with a new seed stream
        attempt = len(layout.dead_training_dirs(paths["ckpt_dir"]))
        plan = step_plan(len(files), n_passes, training_seed(seed, attempt), uset)
        params = training_params(model_name, uset, size, n_passes, training_batch_size, learning_rate, seed,
                                 bn_momentum, output_activation, mixed_precision, files, val_path, attempt)
        if finetune is not None:
            params.update(finetune.as_params())
        summary = _attempt(run_dir, params, paths, files, plan, validation, resume, max_steps, progress,
                           figure, finetune)
        keras.backend.clear_session()  # the attempt's model and graphs
        if summary is not None:
            return summary


def _attempt(run_dir, params, paths, files, plan, validation, resume, max_steps, progress, figure,
             finetune) -> dict | None:
    """One attempt of a training: its summary, or None when its network died (then its folder
    is set aside for the next attempt; see `MAX_RESTARTS`)."""
    from .train_callbacks import DeadOutputStop
    from .train_dataset import training_reference

    if _finished(paths, params, resume):
        from .inference import load_model

        check = check_constant_output(load_model(paths["final"]), validation, params)
        return _summary(params, paths, load_history(run_dir, params["model"], params["uset"]), len(plan), True, check)
    model, start, history, extra = _model_at_start(run_dir, params, paths, files, plan, finetune)
    stop = len(plan) if max_steps is None else min(len(plan), int(max_steps))
    # Fine-tuning starts from the parent's weights, which new initial weights would not change.
    warmup_end = min(params["warmup_steps"], len(plan) // 2)
    guard = DeadOutputStop(*training_reference(files[0], params["size"], params["model"]), warmup_end) \
        if finetune is None and params["init_attempt"] < MAX_RESTARTS else None
    if start < stop:
        _fit(model, params, paths, files, plan, start, stop, history, validation, progress, figure,
             extra + ([guard] if guard else []))
    if guard is not None and guard.dead_after is not None:
        _set_aside(paths, params, guard.dead_after)
        return None
    done = stop == len(plan)
    check = None
    if done:
        save_keras_atomic(model, paths["final"])
        check = check_constant_output(model, validation, params)
    return _summary(params, paths, {int(k): v for k, v in history.items()}, len(plan), done, check)


def _set_aside(paths: dict, params: dict, dead_after: int) -> None:
    """Rename a dead training's folder to its `layout.dead_training_dir` (kept for the record)."""
    target = layout.dead_training_dir(paths["ckpt_dir"], params["init_attempt"] + 1)
    paths["ckpt_dir"].rename(target)
    log.warning("%s %s did not learn by step %d (one answer for every image, or no better than one): set "
                "aside as %s, restarting with a new seed (attempt %d of at most %d)",
                layout.uset_name(params["uset"]), params["model"], dead_after, target.name,
                params["init_attempt"] + 2, MAX_RESTARTS + 1)


def _validation_output(model, validation) -> np.ndarray:
    return np.asarray(model.predict(validation.dataset, verbose=0), dtype=np.float64).ravel()


def check_constant_output(model, validation, params: dict) -> dict:
    """{'val_output_std', 'val_loss_vs_constant', 'constant_output'} of a trained network: its
    output spread over the validation images, its loss there over the best constant answer's,
    and whether it is one constant or no better than one (`train_files.NO_BETTER`). Warns
    when it is: it would pull an ensemble towards one value and narrow its spread."""
    from .models import is_classifier

    out = _validation_output(model, validation)
    loss = validation_loss(out, validation.targets, is_classifier(params["model"]))
    ratio = loss / validation.constant_loss
    dead = is_constant(out) or no_better_than_constant(loss, validation.constant_loss)
    if dead:
        log.warning("%s %s is no better than one constant answer for every validation image (output std "
                    "%.2g, loss %.2f of the constant's): its head died (attempt %d); retrain it in a new "
                    "run with another seed", layout.uset_name(params["uset"]), params["model"], np.std(out),
                    ratio, params.get("init_attempt", 0) + 1)
    return {"val_output_std": float(np.std(out)), "val_loss_vs_constant": float(ratio), "constant_output": bool(dead)}


def _summary(params: dict, paths: dict, history: dict, n_steps: int, done: bool,
             output_check: dict | None = None) -> dict:
    last = history[max(history)] if history else {}
    return {"model": params["model"], "uset": params["uset"], "steps_done": len(history),
            "n_steps": n_steps, "done": done, "final_val_mae_deg": last.get("val_mae_deg"),
            **({"final_val_auc": last["val_auc"]} if "val_auc" in last else {}),
            **(output_check or {}),
            "final_model": str(paths["final"]) if done else None}


def _requested_usets(run_dir, usets, size: int, binary: bool = False) -> list[int]:
    """The Uset indices to train (usets=[]: all present), each checked to have files."""
    from .train_files import augmented_dir

    augmented = augmented_dir(run_dir, binary)
    present = find_usets(run_dir, size, binary)
    usets = [int(u) for u in ([usets] if isinstance(usets, int) else list(usets))] or present
    if not usets:
        raise FileNotFoundError(
            f"no augmented training files {augmented}/Uset_<jjj>_npz/{layout.size_tag(size)}_train_aug_<NN>.npz; "
            f"run stage 04 with size={size} first")
    missing = [u for u in usets if u not in present]
    if missing:
        raise FileNotFoundError(f"Uset(s) {missing} have no {size}x{size} augmented files in {augmented}; "
                                f"present: {present}")
    return usets


def train_all(run_dir, models, usets, size: int, n_passes: int, training_batch_size: int = 64,
              learning_rate: float = 1e-3, seed: int = 42, resume: bool = True,
              progress: bool = True, max_steps: int | None = None, bn_momentum: float = 0.9,
              output_activation: str = "tanh", mixed_precision: str | None = None,
              finetune=None) -> list[dict]:
    """Train every requested model on every requested Uset (usets=[]: all present), in turn.

    Every value is checked before the first training starts. The models must be of one
    family: regressors, or classifiers (``*_binary``, trained on ``augmented_binary``).
    `finetune`: a `finetune.FineTune`; its parents are checked first and recorded in run.json.
    """
    from .models import MODELS, is_classifier, resolve_mixed_precision

    mixed_precision = resolve_mixed_precision(mixed_precision)
    models = [models] if isinstance(models, str) else list(models)
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise TrainInputError(f"models {models}: expected a non-empty list from {sorted(MODELS)}")
    binary = is_classifier(models[0])
    if any(is_classifier(m) != binary for m in models):
        raise TrainInputError(f"models {models}: regressors and classifiers (*_binary) train on different "
                              "files; train them in separate calls")
    for name in models:
        check_hyperparameters(name, size, n_passes, training_batch_size, learning_rate, bn_momentum,
                              output_activation, mixed_precision)
    usets = _requested_usets(run_dir, usets, size, binary)
    val_path = validation_file(run_dir, size, binary)  # fail before any training starts
    configure_threads()  # before the parents below start TensorFlow
    if finetune is not None:
        from . import finetune as ift

        ift.check_parents(finetune, run_dir, models, usets, size)
        ift.record_parent(run_dir, finetune)
    from .train_dataset import ValidationSet

    validation = ValidationSet(val_path, size, training_batch_size, models[0])
    kw = dict(training_batch_size=training_batch_size, learning_rate=learning_rate, seed=seed,
              resume=resume, progress=progress, max_steps=max_steps, validation=validation,
              bn_momentum=bn_momentum, output_activation=output_activation, mixed_precision=mixed_precision,
              finetune=finetune)
    return [train_model(run_dir, name, uset, size, n_passes, **kw) for uset in usets for name in models]


# ---- tables for the notebook -----------------------------------------------------

def results_table(run_dir, models, usets, size: int | None = None):
    """One row per (model, Uset): steps, final/best validation MAE (deg), timings."""
    import pandas as pd

    from .models import DEG_PER_TARGET

    rows = []
    for uset in usets:
        for name in models:
            h = load_history(run_dir, name, uset)
            if not h:
                continue
            steps = sorted(h)
            last = h[steps[-1]]
            times = np.array([h[s]["time_s"] for s in steps])
            fit_rate = [h[s]["n_images"] / h[s]["time_fit_s"] for s in steps[1:]] or [np.nan]
            rows.append({
                "model": name, "uset": uset, "steps": len(steps),
                "final_val_mae_deg": last["val_mae_deg"],
                "final_val_rms_deg": float(np.sqrt(last["val_mse"]) * DEG_PER_TARGET),
                "best_val_mae_deg": min(h[s]["val_mae_deg"] for s in steps),
                "median_step_s": float(np.median(times[1:] if len(times) > 1 else times)),
                "first_step_s": float(times[0]),
                "train_images_per_s": float(np.median(fit_rate)),
                "total_s": float(times.sum()),
                "final_model": training_paths(run_dir, name, uset)["final"].exists(),
            })
    return pd.DataFrame(rows)


def timing_table(run_dir, models, usets):
    """Per (model, Uset): median seconds of each part of a step (first step, with compiling, left out)."""
    import pandas as pd

    rows = []
    for uset in usets:
        for name in models:
            h = load_history(run_dir, name, uset)
            steps = sorted(h)[1:] or sorted(h)
            if not steps:
                continue
            row = {"model": name, "uset": uset, "images_per_step": h[steps[-1]]["n_images"]}
            for k in ("time_s", "time_data_s", "time_fit_s", "time_eval_s", "time_save_s"):
                row[k] = float(np.median([h[s][k] for s in steps]))
            rows.append(row)
    return pd.DataFrame(rows)


# ---- command line -----------------------------------------------------------------

_OPTIONS = ("models", "size", "n_passes", "training_batch_size", "learning_rate", "bn_momentum",
            "output_activation", "mixed_precision")


def _parser() -> argparse.ArgumentParser:
    from .models import MIXED_PRECISION, OUTPUT_ACTIVATIONS

    p = argparse.ArgumentParser(
        description="Stage 05: train (model, Uset) pairs on a run's augmented files; resumable.")
    p.add_argument("--run-dir", required=True, help="run folder (outputs/<run>)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="parameter set; options below override it")
    p.add_argument("--models", nargs="+", help="models to train (default: the preset's)")
    p.add_argument("--usets", nargs="*", type=int, default=[], help="Uset indices; none = all present")
    p.add_argument("--size", type=int, help="image size in pixels (default 128)")
    p.add_argument("--n-passes", type=int, help="passes over the batch files")
    p.add_argument("--training-batch-size", type=int, help="images per gradient step (default 64)")
    p.add_argument("--learning-rate", type=float, help="Adam learning rate (default 1e-3)")
    p.add_argument("--bn-momentum", type=float, help="BatchNorm momentum (laptop 0.9, production 0.99)")
    p.add_argument("--output-activation", choices=OUTPUT_ACTIVATIONS, help="output unit (default tanh)")
    p.add_argument("--mixed-precision", choices=[m for m in MIXED_PRECISION if m] + ["auto", "float32"],
                   help="Keras mixed-precision policy; auto: bfloat16 where the hardware has it (default)")
    p.add_argument("--seed", type=int, default=42, help="random seed of the run")
    p.add_argument("--no-resume", action="store_true", help="refuse to continue existing trainings")
    p.add_argument("--max-steps", type=int, help="stop each training after this many steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    from .finetune import add_arguments

    add_arguments(p)
    return p


def _finetune(args):
    from .finetune import from_options

    return from_options(args.init_from or "", args.trainable, args.frozen_passes, args.finetune_learning_rate)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    values = {"output_activation": "tanh", "mixed_precision": "auto", **PRESETS["laptop"]}
    if args.preset:
        values.update(PRESETS[args.preset])
    from .models import is_classifier

    if args.models and all(is_classifier(m) for m in args.models):  # the preset's values for the classifiers
        values.update({k: values[f"classifier_{k}"] for k in ("n_passes", "learning_rate")
                       if f"classifier_{k}" in values})
    values.update({k: getattr(args, k) for k in _OPTIONS if getattr(args, k) is not None})
    summaries = train_all(args.run_dir, values["models"], args.usets, values["size"], values["n_passes"],
                          values["training_batch_size"], values["learning_rate"], args.seed,
                          resume=not args.no_resume, progress=not args.no_progress,
                          max_steps=args.max_steps, bn_momentum=values["bn_momentum"],
                          output_activation=values["output_activation"],
                          mixed_precision=values["mixed_precision"], finetune=_finetune(args))
    for s in summaries:
        print(json.dumps(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
