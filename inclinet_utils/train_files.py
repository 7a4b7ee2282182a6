"""Stage 05 input files: where a Uset's augmented batches are, their checks, and the step plan.

`step_plan` fixes the seeded file order of a training (each pass visits every
file once); `rng`/`int_seed` give stage 05's random sub-streams; `load_arrays`
reads one augmented file and refuses a bad one naming it. NumPy only (no Keras
import), so the tables and the notebooks can use it cheaply.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import layout

SALT = 5005  # stage 05's entry in the run seed sequence
# sub-streams: file order per pass, initial weights, per-step randomness, restarted attempts
ORDER, INIT, STEP, RESTART = 1, 2, 3, 4
# The keys of every evalDict entry (the original's names) besides the derived degrees and timings.
HISTORY_KEYS = ("loss", "mse", "mae", "val_loss", "val_mse", "val_mae", "batchNo", "batchFile")


class TrainInputError(ValueError):
    """An augmented file, parameter or existing training folder the stage cannot use."""


# A network whose raw output varies by less than this over a set of images (the guard's training
# probe, or the validation set in the final check) gives every
# galaxy the same answer: a dead ReLU head.
CONSTANT_OUTPUT_STD = 1e-4
# A network whose loss stays above this fraction of the best constant answer's has not learnt.
# model4 on Uset 1 of the seed-7 development run stayed at 0.99-1.07 (validation) for all 36
# steps of two trainings (12 deg RMS), one with a single live last ReLU, one with outputs that
# still varied; nine working trainings were at 0.37-0.85 from the first step after the warm-up.
# The guard (train_callbacks.DeadOutputStop) reads the training loss: working model4 regressors
# of the seed-42 main run were at 0.28-0.68 of it from step 2 on, the classifier at 0.69-0.90
# from the end of its warm-up on.
NO_BETTER = 0.95


def is_constant(predicted) -> bool:
    """Whether raw outputs are one value (spread below CONSTANT_OUTPUT_STD)."""
    return float(np.std(np.asarray(predicted, dtype=np.float64))) < CONSTANT_OUTPUT_STD


def validation_loss(predicted, targets, classifier: bool) -> float:
    """The training loss of raw outputs: mse, or binary cross-entropy for a classifier."""
    p, t = np.asarray(predicted, dtype=np.float64).ravel(), np.asarray(targets, dtype=np.float64).ravel()
    if not classifier:
        return float(np.mean((p - t) ** 2))
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))


def constant_loss(targets, classifier: bool) -> float:
    """The loss of the best constant answer: the targets' mean (variance / class-mix entropy)."""
    t = np.asarray(targets, dtype=np.float64)
    return validation_loss(np.full_like(t, t.mean()), t, classifier)


def no_better_than_constant(loss: float, constant: float) -> bool:
    """Whether a loss is above NO_BETTER of the best constant answer's."""
    return loss > NO_BETTER * constant


def training_seed(seed: int, init_attempt: int = 0) -> int:
    """The seed of one attempt of a training: the run seed for the first, a sub-stream of it for
    each restart (`train.train_model`): new initial weights, file order and shuffles."""
    return int(seed) if not init_attempt else int_seed(seed, RESTART, init_attempt)


# ---- determinism --------------------------------------------------------------

def rng(seed: int, *stream: int) -> np.random.Generator:
    """The NumPy generator of one sub-stream of stage 05 under the run seed."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), SALT, *map(int, stream)]))


def int_seed(seed: int, *stream: int) -> int:
    """A non-negative int seed (e.g. for keras.utils.set_random_seed) of one sub-stream."""
    return int(np.random.SeedSequence([int(seed), SALT, *map(int, stream)]).generate_state(1)[0] >> 1)


def step_plan(n_files: int, n_passes: int, seed: int, uset: int) -> list[tuple[int, int]]:
    """(pass, file index) of every step: each pass visits all files in its own seeded order."""
    plan = []
    for p in range(n_passes):
        plan += [(p, int(i)) for i in rng(seed, ORDER, uset, p).permutation(n_files)]
    return plan


# ---- files --------------------------------------------------------------------

def load_arrays(path, size: int, binary: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(images (N,S,S,3) uint8, inclinations (N,) int) of an augmented npz, checked.

    binary=True: a classifier batch, labels 0 (accepted) or 1 (rejected).
    """
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
    if binary:
        if not np.all((labels == 0) | (labels == 1)):
            bad = labels[(labels != 0) & (labels != 1)][:5]
            raise TrainInputError(f"{path}: labels {bad.tolist()} are not 0 (accepted) or 1 (rejected)")
    elif not np.all((labels >= 45) & (labels <= 90)):
        bad = labels[(labels < 45) | (labels > 90)][:5]
        raise TrainInputError(f"{path}: labels {bad.tolist()} outside the 45-90 degree inclination range")
    return images, labels


def n_images(path) -> int:
    """Number of images of an augmented file, from its (small) labels array."""
    try:
        with np.load(path) as z:
            return len(z["labels"])
    except (OSError, ValueError, KeyError) as exc:
        raise TrainInputError(f"{path} is not a readable augmented npz file with labels: {exc}") from exc


def batches_per_file(files: list[Path], batch_size: int) -> int:
    """Gradient updates per file; every file of a Uset must give the same number (one epoch each)."""
    counts = {}
    for f in files:
        counts.setdefault(-(-n_images(f) // batch_size), f)
    if len(counts) > 1:
        (n1, f1), (n2, f2) = list(counts.items())[:2]
        raise TrainInputError(
            f"{f1} gives {n1} batches of {batch_size} images, {f2} gives {n2}: the batch files of a "
            "Uset must hold the same number of images (re-run stage 04 for this Uset)")
    return next(iter(counts))



def augmented_dir(run_dir, binary: bool = False) -> Path:
    """The run's augmented folder of the regressors, or (binary) of the classifiers."""
    return layout.run_paths(run_dir)["augmented_binary" if binary else "augmented"]


def uset_files(run_dir, uset: int, size: int, binary: bool = False) -> tuple[list[Path], Path]:
    """(batch files sorted by number, validation file) of one Uset; FileNotFoundError if absent."""
    augmented = augmented_dir(run_dir, binary)
    return layout.batch_files(augmented, uset, size), layout.validation_file(augmented, size)
