"""Stage 05's Keras inputs: a PyDataset serving one augmented batch file per epoch, and the validation set.

`BatchFileDataset` is the `keras.utils.PyDataset` that `model.fit` trains on: its
epoch k is the whole file plan[k] (`train_files.step_plan`), shuffled with step k's
own seeded stream, while a background thread reads the next file. `ValidationSet`
is the fixed augmented validation set as a cached tf.data pipeline, with the loss of the best
constant answer on it. `training_reference` is what the dead-network guard judges by: a probe
of a training file and the best constant's loss there (training galaxies only: the validation
set is made of the held-out test galaxies, which must choose nothing).
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import keras
import numpy as np

from .train_files import STEP, batches_per_file, constant_loss, load_arrays, rng

PROBE_IMAGES = 32  # training images `train_callbacks.DeadOutputStop` predicts after every step


class BatchFileDataset(keras.utils.PyDataset):
    """Epoch k of `model.fit` = one pass over file plan[k], in step k's own seeded shuffle.

    `select(step)` (called by `select_callback` at each epoch's start) makes that
    step's file current and starts reading the next one in a background thread;
    `wait_s` is how long it waited for the file. Pixels stay uint8, targets are
    `models.training_targets` of the labels for model `model` (a classifier's: 0/1).
    """

    def __init__(self, files, plan, size: int, batch_size: int, seed: int, uset: int,
                 start: int = 0, stop: int | None = None, model: str = "model4"):
        super().__init__(workers=1, use_multiprocessing=False)
        self.model = model
        self.files, self.plan, self.size, self.batch_size = list(files), list(plan), size, batch_size
        self.seed, self.uset, self.start = seed, uset, start
        self.stop = len(self.plan) if stop is None else stop
        self.n_batches = batches_per_file(self.files, batch_size)
        self.wait_s, self.n_images = 0.0, 0
        self._current = None  # (step, images, targets), replaced as one object
        self._loader = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._next: tuple[int, concurrent.futures.Future] | None = None

    def _prepare(self, step: int):
        from .models import is_classifier, training_targets

        images, inc = load_arrays(self.files[self.plan[step][1]], self.size, is_classifier(self.model))
        order = rng(self.seed, STEP, self.uset, step).permutation(len(inc))
        return images[order], training_targets(self.model, inc[order])

    def select(self, step: int) -> None:
        """Serve step `step`'s file from now on (waiting for it if it is still being read)."""
        if self._current is not None and self._current[0] == step:
            return
        t = time.perf_counter()
        if self._next is not None and self._next[0] == step:
            images, targets = self._next[1].result()
        else:
            images, targets = self._prepare(step)
        self.wait_s = time.perf_counter() - t
        self._current, self._next = (step, images, targets), None
        self.n_images = len(targets)
        if step + 1 < self.stop:
            self._next = (step + 1, self._loader.submit(self._prepare, step + 1))

    def select_callback(self) -> keras.callbacks.Callback:
        return keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: self.select(epoch))

    def __len__(self) -> int:
        return self.n_batches

    def __getitem__(self, index: int):
        if self._current is None:  # Keras reads two batches for the tensor spec before epoch 1
            self.select(self.start)
        _, images, targets = self._current
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return images[part], targets[part]

    def close(self) -> None:
        """Stop the reader thread and drop the files held."""
        if self._next is not None:
            self._next[1].cancel()
        self._loader.shutdown(wait=True)
        self._current = self._next = None


class ArrayDataset(keras.utils.PyDataset):
    """In-memory arrays in fixed batches: the validation input on backends without tf.data."""

    def __init__(self, images, targets, batch_size: int):
        super().__init__()
        self.images, self.targets, self.batch_size = images, targets, batch_size

    def __len__(self) -> int:
        return -(-len(self.targets) // self.batch_size)

    def __getitem__(self, index: int):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.images[part], self.targets[part]


def make_dataset(images, targets, batch_size: int):
    """In-memory arrays as a cached tf.data pipeline: slices -> batch -> cache -> prefetch (pixels
    stay uint8); an `ArrayDataset` when Keras runs on another backend."""
    from .models import tensorflow_backend

    if not tensorflow_backend():
        return ArrayDataset(np.asarray(images), np.asarray(targets), batch_size)
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, targets)).batch(batch_size).cache()
    options = tf.data.Options()
    # in-memory data: under MirroredStrategy split each batch between the GPUs (no files to shard)
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


class ValidationSet:
    """The fixed augmented validation set, read once and kept as a cached tf.data pipeline
    (in memory as an `ArrayDataset` on other backends)."""

    def __init__(self, path, size: int, batch_size: int, model: str = "model4"):
        from .models import is_classifier, training_targets

        images, labels = load_arrays(path, size, is_classifier(model))
        self.path, self.n = Path(path), len(labels)
        self.targets = training_targets(model, labels)
        self.constant_loss = constant_loss(self.targets, is_classifier(model))  # of the best constant answer
        self.dataset = make_dataset(images, self.targets, batch_size)


def training_reference(path, size: int, model: str) -> tuple[np.ndarray, float]:
    """(probe, constant loss) of one training batch file: PROBE_IMAGES of its (shuffled) images,
    evenly spaced over it, and the loss of the best constant answer on its targets. Every file of
    a Uset is drawn alike (balanced over inclination bins or classes), so one stands for them all."""
    from .models import is_classifier, training_targets

    images, labels = load_arrays(path, size, is_classifier(model))
    probe = np.array(images[np.unique(np.linspace(0, len(images) - 1, PROBE_IMAGES).astype(int))])
    return probe, constant_loss(training_targets(model, labels), is_classifier(model))
