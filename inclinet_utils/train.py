"""Stage 05: batch training of the registered CNN regressors, one augmented file per step.

Owns the training loop over (model, Uset): the model stays in memory, each step
streams one augmented batch file through tf.data for one epoch (the next file is
read in a background thread meanwhile), evaluates on the fixed validation set, and
hands a snapshot to a writer thread that atomically writes the checkpoint (weights,
optimizer state, Dropout RNG state, step, history), then the evalDict JSON and the
curve figure, while the next step trains. A killed run resumes from its last
checkpoint with the same file order and the same random streams, so the step
history has no gap or repeat. Also the run presets, the CLI for spreading single
(model, Uset) trainings over machines, and the summary tables.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from . import io as iio
from .presets import PRESETS

SALT = 5005  # stage 05's entry in the run seed sequence
_ORDER, _INIT, _STEP = 1, 2, 3  # sub-streams: file order per pass, initial weights, per-step randomness

HISTORY_KEYS = ("loss", "mse", "mae", "val_loss", "val_mse", "val_mae", "batchNo", "batchFile")
_BATCH_FILE = re.compile(r"^(?P<size>\d+)x(?P=size)_train_aug_(?P<nn>\d+)\.npz$")
_USET_DIR = re.compile(r"^Uset_(?P<uset>\d{3})_npz$")


class TrainInputError(ValueError):
    """An augmented file, parameter or existing training folder the stage cannot use."""


# ---- run folder layout --------------------------------------------------------

def uset_name(uset: int) -> str:
    return f"Uset_{int(uset):03d}"


def training_paths(run_dir, model_name: str, uset: int) -> dict[str, Path]:
    """Files of one (model, Uset) training under models/."""
    models_dir = iio.run_paths(run_dir)["models"]
    stem = f"{uset_name(uset)}_{model_name}"
    ckpt_dir = models_dir / f"{stem}_ckpt"
    return {
        "ckpt_dir": ckpt_dir,
        "eval_dict": ckpt_dir / f"{stem}_evalDict.json",
        "eval_fig": ckpt_dir / f"{stem}_evalFig.jpg",
        "checkpoint": ckpt_dir / f"{stem}_checkpoint.npz",
        "params": ckpt_dir / f"{stem}_params.json",
        "final": models_dir / f"{stem}.keras",
    }


def find_usets(run_dir, size: int) -> list[int]:
    """Uset indices that have at least one augmented batch file of this size."""
    aug = iio.run_paths(run_dir)["augmented"]
    found = []
    if aug.is_dir():
        for d in sorted(aug.iterdir()):
            m = _USET_DIR.match(d.name)
            if m and d.is_dir() and any(_is_batch_file(p, size) for p in d.iterdir()):
                found.append(int(m["uset"]))
    return found


def _is_batch_file(path: Path, size: int) -> bool:
    m = _BATCH_FILE.match(path.name)
    return bool(m) and int(m["size"]) == size


def batch_files(run_dir, uset: int, size: int) -> list[Path]:
    """The augmented training files of one Uset, sorted by batch number."""
    d = iio.run_paths(run_dir)["augmented"] / f"{uset_name(uset)}_npz"
    files = sorted((p for p in d.glob(f"{size}x{size}_train_aug_*.npz") if _is_batch_file(p, size)),
                   key=lambda p: int(_BATCH_FILE.match(p.name)["nn"]))
    if not files:
        raise FileNotFoundError(
            f"no augmented batch files {d}/{size}x{size}_train_aug_<NN>.npz; run stage 04 "
            f"(04_augment) with size={size} first")
    return files


def validation_file(run_dir, size: int) -> Path:
    path = iio.run_paths(run_dir)["augmented"] / f"{size}x{size}_validation_aug.npz"
    if not path.is_file():
        raise FileNotFoundError(f"validation set {path} does not exist; run stage 04 with size={size} first")
    return path


def batch_number(path: Path) -> int:
    return int(_BATCH_FILE.match(Path(path).name)["nn"])


def load_arrays(path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (N,S,S,3) uint8, inclinations (N,) int) of an augmented npz, checked."""
    path = Path(path)
    try:
        with np.load(path) as z:
            missing = [k for k in ("images", "labels") if k not in z.files]
            if missing:
                raise TrainInputError(f"{path} lacks array(s) {missing}; found {z.files}")
            images, labels = z["images"], z["labels"]
    except (OSError, ValueError) as exc:
        if isinstance(exc, TrainInputError):
            raise
        raise TrainInputError(f"{path} is not a readable npz file: {exc}") from exc
    if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3):
        raise TrainInputError(
            f"{path}: images are {images.dtype} {images.shape}; expected uint8 (N, {size}, {size}, 3)")
    if labels.shape != images.shape[:1]:
        raise TrainInputError(f"{path}: labels have shape {labels.shape}; expected ({len(images)},)")
    if len(labels) == 0:
        raise TrainInputError(f"{path} holds no images")
    if not np.all((labels >= 45) & (labels <= 90)):
        bad = labels[(labels < 45) | (labels > 90)][:5]
        raise TrainInputError(f"{path}: labels {bad.tolist()} outside the 45-90 degree inclination range")
    return images, labels


# ---- determinism --------------------------------------------------------------

def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), SALT, *map(int, stream)]))


def _int_seed(seed: int, *stream: int) -> int:
    return int(np.random.SeedSequence([int(seed), SALT, *map(int, stream)]).generate_state(1)[0] >> 1)


def step_plan(n_files: int, n_passes: int, seed: int, uset: int) -> list[tuple[int, int]]:
    """(pass, file index) of every step: each pass visits all files in its own seeded order."""
    plan = []
    for p in range(n_passes):
        plan += [(p, int(i)) for i in _rng(seed, _ORDER, uset, p).permutation(n_files)]
    return plan


# ---- TensorFlow set-up ----------------------------------------------------------

def configure_threads(intra: int | None = None, inter: int | None = None) -> bool:
    """Give TF's op pool one thread per usable core and a small inter-op pool.

    Only possible before TF runs its first op; returns False (and changes
    nothing) when TF is already initialized, e.g. in a notebook that used it.
    """
    import tensorflow as tf

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra or n)
        tf.config.threading.set_inter_op_parallelism_threads(inter or min(2, n))
    except RuntimeError:
        return False
    return True


def get_strategy():
    """MirroredStrategy over all GPUs when more than one is visible, else the default strategy."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([g.name for g in gpus])
    return tf.distribute.get_strategy()


def make_dataset(images, targets, batch_size: int):
    """One file as a tf.data pipeline: slices -> batch -> prefetch (pixels stay uint8)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, targets)).batch(batch_size)
    options = tf.data.Options()
    # in-memory data: under MirroredStrategy split each batch between the GPUs (no files to shard)
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


class ValidationSet:
    """The fixed augmented validation set, read once and kept as a cached tf.data pipeline."""

    def __init__(self, path, size: int, batch_size: int):
        import tensorflow as tf

        from .models import inclination_to_target

        images, labels = load_arrays(path, size)
        self.path, self.n = Path(path), len(labels)
        self.dataset = make_dataset(tf.constant(images), tf.constant(inclination_to_target(labels)),
                                    batch_size).cache()


# ---- checkpoint ---------------------------------------------------------------

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
                "(different model or size?)")
        for i, v in enumerate(variables):
            value = z[f"v{i:04d}"]
            if tuple(value.shape) != tuple(v.shape):
                raise TrainInputError(f"checkpoint {path}: variable {v.path} has shape {value.shape}, "
                                      f"the model expects {tuple(v.shape)}")
            v.assign(value)
        return int(z["next_step"]), json.loads(str(z["history_json"])), json.loads(str(z["params_json"]))


def save_keras_atomic(model, path: Path) -> Path:
    """model.save under a temporary *.keras name (Keras insists on the suffix), then rename."""
    path = Path(path)
    iio._check_new(path, overwrite=False)
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
    path = training_paths(run_dir, model_name, uset)["eval_dict"]
    if not path.is_file():
        return {}
    return {int(k): v for k, v in iio.read_json(path).items()}


def _write_products(paths: dict, history: dict, title: str, figure=True) -> float:
    """evalDict JSON, then the curve figure; returns the seconds spent.

    `figure`: False for none, True for a new Figure, or a Figure to redraw (reusing
    one avoids a garbage figure per step: they are reference cycles, which only
    the rare full garbage collections free, so memory would creep up step by step).
    """
    t = time.perf_counter()
    iio.write_json(paths["eval_dict"], history, overwrite=True)
    if figure is not False:
        from .plots import training_curves

        fig = training_curves({int(k): v for k, v in history.items()}, title=title, figsize=(7, 2.6),
                              fig=None if figure is True else figure)
        iio.save_figure(fig, paths["eval_fig"], dpi=80)
    return time.perf_counter() - t


# ---- training -----------------------------------------------------------------

def _check_params(path: Path, saved: dict, params: dict) -> None:
    for key, value in params.items():
        if saved.get(key) != value:
            raise TrainInputError(
                f"{path}: the training being resumed has {key}={saved.get(key)!r}, this call "
                f"{key}={value!r}; use the same parameters or a new run folder")


def train_model(run_dir, model_name: str, uset: int, size: int, n_passes: int,
                training_batch_size: int = 64, learning_rate: float = 1e-3, seed: int = 42,
                resume: bool = True, progress: bool = True, max_steps: int | None = None,
                validation: ValidationSet | None = None, figure: bool = True,
                bn_momentum: float = 0.9) -> dict:
    """Train one (model, Uset) for n_passes over its augmented files; returns a summary.

    Step k (0-based) trains one epoch on file plan[k]; the evalDict entry, the
    checkpoint and the figure are written after each step. With resume=True an
    existing checkpoint is continued (parameters must match); with resume=False
    an existing training folder is an error. `max_steps` stops after that many
    completed steps in total (the run can be resumed later), e.g. for job time limits.
    bn_momentum: BatchNorm moving-average momentum; 0.9 because a laptop run makes too
    few updates for the original's 0.99 statistics to settle (production preset: 0.99).
    """
    import keras
    import tensorflow as tf

    from .models import DEG_PER_TARGET, MODELS, build_model, inclination_to_target

    if model_name not in MODELS:
        raise TrainInputError(f"unknown model {model_name!r}; expected one of {sorted(MODELS)}")
    for name, v in (("size", size), ("n_passes", n_passes), ("training_batch_size", training_batch_size)):
        if int(v) != v or v < 1:
            raise TrainInputError(f"{name}={v!r}: expected a positive integer")
    if not learning_rate > 0:
        raise TrainInputError(f"learning_rate={learning_rate!r}: expected a positive number")
    files = batch_files(run_dir, uset, size)
    val_path = validation_file(run_dir, size)
    paths = training_paths(run_dir, model_name, uset)
    plan = step_plan(len(files), n_passes, seed, uset)
    n_steps = len(plan)
    params = {"model": model_name, "uset": int(uset), "size": int(size), "n_passes": int(n_passes),
              "training_batch_size": int(training_batch_size), "learning_rate": float(learning_rate),
              "seed": int(seed), "bn_momentum": float(bn_momentum),
              "batch_files": [f.name for f in files], "validation_file": val_path.name}
    title = f"{uset_name(uset)} {model_name}"

    if paths["final"].exists():
        if not resume:
            raise FileExistsError(f"{paths['final']} already exists; use resume=True or a new run folder")
        history = load_history(run_dir, model_name, uset)
        return _summary(params, paths, history, n_steps, done=True)
    if paths["checkpoint"].exists() and not resume:
        raise FileExistsError(f"{paths['checkpoint']} already exists (a started training); "
                              "use resume=True to continue it, or a new run folder")

    # Cosine decay of the rate to a tenth over the whole training: with a constant rate
    # the step-to-step scatter dominates the final error of short runs. It follows the
    # optimizer's own iteration count, so a resumed training continues it exactly.
    with np.load(files[0]) as first:
        updates_per_step = -(-len(first["labels"]) // training_batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=max(1, n_steps * updates_per_step), alpha=0.1)
    strategy = get_strategy()
    keras.utils.set_random_seed(_int_seed(seed, _INIT, uset))  # same initial weights on resume
    with strategy.scope():
        model = build_model(model_name, size, learning_rate=schedule, bn_momentum=bn_momentum)
        model.optimizer.build(model.trainable_variables)
    start, history = 0, {}
    if paths["checkpoint"].exists():
        start, history, saved = load_checkpoint(paths["checkpoint"], model)
        _check_params(paths["checkpoint"], saved, params)
        history = {str(k): v for k, v in history.items() if int(k) < start}
    paths["ckpt_dir"].mkdir(parents=True, exist_ok=True)
    for stale in paths["ckpt_dir"].glob(".*.partial-*"):  # left by a killed writer
        stale.unlink()
    if start == 0:  # a fresh start (or one killed before its first checkpoint)
        iio.write_json(paths["params"], params, overwrite=True)
    if start > 0:  # the JSON may lag the checkpoint by one step if killed in between
        _write_products(paths, history, title, figure)

    if validation is None or validation.path != val_path:
        validation = ValidationSet(val_path, size, training_batch_size)
    stop = n_steps if max_steps is None else min(n_steps, int(max_steps))

    def prepare(step: int):
        # Runs in the loader thread: read + check the file, shuffle it with the step's
        # own stream, hand tensors to TF, so step k+1's I/O overlaps step k's training.
        x, inc = load_arrays(files[plan[step][1]], size)
        order = _rng(seed, _STEP, uset, step).permutation(len(inc))
        return tf.constant(x[order]), tf.constant(inclination_to_target(inc[order])), len(inc)

    from tqdm import tqdm

    bar = tqdm(total=n_steps, initial=start, desc=f"05_train {title}", disable=not progress)
    t_prev = time.perf_counter()
    t_save = 0.0
    pending = None
    if figure:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(7, 2.6))  # redrawn by the writer thread after every step

    def save_step(state, next_step, hist):
        # Checkpoint first, JSON second: the checkpoint carries the history, so a
        # kill in between is repaired from it on resume.
        save_checkpoint(paths["checkpoint"], state, next_step, hist, params)
        _write_products(paths, hist, title, figure)
        # Each step leaves reference cycles (Keras/TF exception frames, figure artists)
        # holding up to a batch file's tensors; the rare automatic full collections
        # let memory creep up by several MB per step, so collect here, off the main thread.
        gc.collect()

    # Two helper threads: `loader` reads the next file, `writer` saves the last step,
    # both while the main thread trains; at most one file ahead and one save in flight.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as loader, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as writer:
        future = loader.submit(prepare, start) if start < stop else None
        for step in range(start, stop):
            t0 = time.perf_counter()
            x, y, n_img = future.result()
            if step + 1 < stop:
                future = loader.submit(prepare, step + 1)
            t1 = time.perf_counter()
            # Every random stream of the step (Python, NumPy, TF, Keras) restarts from (seed, step).
            keras.utils.set_random_seed(_int_seed(seed, _STEP, uset, step))
            fit = model.fit(make_dataset(x, y, training_batch_size), epochs=1, verbose=0, shuffle=False)
            t2 = time.perf_counter()
            val = model.evaluate(validation.dataset, verbose=0, return_dict=True)
            t3 = time.perf_counter()
            del x, y
            p, i = plan[step]
            entry = {k: float(fit.history[k][-1]) for k in ("loss", "mse", "mae")}
            entry.update({f"val_{k}": float(val[k]) for k in ("loss", "mse", "mae")})
            entry.update({
                "batchNo": batch_number(files[i]), "batchFile": files[i].name, "pass": p,
                "mae_deg": entry["mae"] * DEG_PER_TARGET, "val_mae_deg": entry["val_mae"] * DEG_PER_TARGET,
                "n_images": n_img,
                # time_s: the full step period (previous step's saving included)
                "time_s": t3 - t_prev, "time_data_s": t1 - t0, "time_fit_s": t2 - t1,
                "time_eval_s": t3 - t2, "time_save_s": t_save,
            })
            t_prev = t3
            history[str(step)] = entry
            state = snapshot(model)  # the writer must not see the next step's updates
            if pending is not None:
                pending.result()  # previous save done (and its errors raised) before the next
            pending = writer.submit(save_step, state, step + 1, dict(history))
            t_save = time.perf_counter() - t3  # what the step waited for: snapshot + previous save
            bar.update(1)
            bar.set_postfix(val_mae_deg=f"{entry['val_mae_deg']:.2f}")
        if pending is not None:
            pending.result()
    bar.close()

    done = stop == n_steps
    if done:
        save_keras_atomic(model, paths["final"])
    summary = _summary(params, paths, {int(k): v for k, v in history.items()}, n_steps, done)
    del model
    keras.backend.clear_session()
    return summary


def _summary(params: dict, paths: dict, history: dict, n_steps: int, done: bool) -> dict:
    last = history[max(history)] if history else {}
    return {"model": params["model"], "uset": params["uset"], "steps_done": len(history),
            "n_steps": n_steps, "done": done, "final_val_mae_deg": last.get("val_mae_deg"),
            "final_model": str(paths["final"]) if done else None}


def train_all(run_dir, models, usets, size: int, n_passes: int, training_batch_size: int = 64,
              learning_rate: float = 1e-3, seed: int = 42, resume: bool = True,
              progress: bool = True, max_steps: int | None = None, bn_momentum: float = 0.9) -> list[dict]:
    """Train every requested model on every requested Uset (usets=[]: all present), in turn."""
    configure_threads()
    from .models import MODELS

    models = [models] if isinstance(models, str) else list(models)
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise TrainInputError(f"models {models}: expected a non-empty list from {sorted(MODELS)}")
    present = find_usets(run_dir, size)
    usets = [int(u) for u in ([usets] if isinstance(usets, int) else list(usets))] or present
    if not usets:
        raise FileNotFoundError(
            f"no augmented training files {iio.run_paths(run_dir)['augmented']}/Uset_<jjj>_npz/"
            f"{size}x{size}_train_aug_<NN>.npz; run stage 04 with size={size} first")
    missing = [u for u in usets if u not in present]
    if missing:
        raise FileNotFoundError(f"Uset(s) {missing} have no {size}x{size} augmented files in "
                                f"{iio.run_paths(run_dir)['augmented']}; present: {present}")
    validation_file(run_dir, size)  # fail before any training starts
    validation = None
    summaries = []
    for uset in usets:
        for name in models:
            if validation is None:
                validation = ValidationSet(validation_file(run_dir, size), size, training_batch_size)
            summaries.append(train_model(run_dir, name, uset, size, n_passes, training_batch_size,
                                         learning_rate, seed, resume, progress, max_steps, validation,
                                         bn_momentum=bn_momentum))
    return summaries


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

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Stage 05: train (model, Uset) pairs on a run's augmented files; resumable.")
    parser.add_argument("--run-dir", required=True, help="run folder (outputs/<run>)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="parameter set; options below override it")
    parser.add_argument("--models", nargs="+", help="models to train (default: preset or model4 model6)")
    parser.add_argument("--usets", nargs="*", type=int, default=[], help="Uset indices; none = all present")
    parser.add_argument("--size", type=int, help="image size in pixels (default 128)")
    parser.add_argument("--n-passes", type=int, help="passes over the batch files")
    parser.add_argument("--training-batch-size", type=int, help="images per gradient step (default 64)")
    parser.add_argument("--learning-rate", type=float, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--bn-momentum", type=float, help="BatchNorm momentum (laptop 0.9, production 0.99)")
    parser.add_argument("--seed", type=int, default=42, help="random seed of the run")
    parser.add_argument("--no-resume", action="store_true", help="refuse to continue existing trainings")
    parser.add_argument("--max-steps", type=int, help="stop each training after this many steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    values = dict(PRESETS["laptop"])
    if args.preset:
        values.update(PRESETS[args.preset])
    for key in ("models", "size", "n_passes", "training_batch_size", "learning_rate", "bn_momentum"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    summaries = train_all(args.run_dir, values["models"], args.usets, values["size"], values["n_passes"],
                          values["training_batch_size"], values["learning_rate"], args.seed,
                          resume=not args.no_resume, progress=not args.no_progress,
                          max_steps=args.max_steps, bn_momentum=values["bn_momentum"])
    for s in summaries:
        print(json.dumps(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
