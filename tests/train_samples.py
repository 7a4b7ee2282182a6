"""Tiny synthetic stage-04 products (augmented batch files + validation set) for the train tests.

Files follow the run layout: augmented/Uset_<jjj>_npz/<S>x<S>_train_aug_<NN>.npz and
augmented/<S>x<S>_validation_aug.npz with images (N,S,S,3) uint8, labels (N,) int64
inclination, pgcIDs, filter, inverted. Each image is a soft horizontal ellipse
whose axis ratio is that of a thin disk at the label's inclination, so a CNN can learn it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inclinet_utils import layout

Q0 = 0.2  # intrinsic disk thickness


def ellipse_images(rng: np.random.Generator, inc_deg: np.ndarray, size: int) -> np.ndarray:
    """(N,S,S,3) uint8 ellipses: axis ratio sqrt(q0^2 + (1-q0^2) cos^2 i), random size/shift/contrast."""
    n = len(inc_deg)
    q = np.sqrt(Q0**2 + (1 - Q0**2) * np.cos(np.radians(inc_deg)) ** 2)
    a = size * rng.uniform(0.28, 0.38, n)
    cx = (size - 1) / 2 + rng.uniform(-1.5, 1.5, n)
    cy = (size - 1) / 2 + rng.uniform(-1.5, 1.5, n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r2 = ((xx[None] - cx[:, None, None]) / a[:, None, None]) ** 2 \
        + ((yy[None] - cy[:, None, None]) / (a * q)[:, None, None]) ** 2
    disk = 1.0 / (1.0 + np.exp((r2 - 1.0) * 6.0))  # soft edge
    img = 15 + rng.uniform(150, 230, n)[:, None, None] * disk + rng.normal(0, 4, (n, size, size))
    img = np.clip(img, 0, 255).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=-1)


def _arrays(rng, n, size):
    inc = rng.integers(45, 91, n).astype(np.int64)
    return {"images": ellipse_images(rng, inc, size), "labels": inc,
            "pgcIDs": rng.integers(1, 10**6, n).astype(np.int64),
            "filter": np.full(n, layout.filter_code("gri"), dtype="<U1"), "inverted": np.zeros(n, bool)}


def write_augmented(run_dir, size: int = 32, usets=(0,), n_batches: int = 3, n_per_batch: int = 64,
                    n_val: int = 64, seed: int = 0) -> Path:
    """Write a tiny augmented/ folder into run_dir; returns it."""
    rng = np.random.default_rng(seed)
    aug = layout.run_paths(run_dir)["augmented"]
    for u in usets:
        layout.uset_dir(aug, u).mkdir(parents=True, exist_ok=True)
        for b in range(1, n_batches + 1):
            np.savez_compressed(layout.batch_path(aug, u, size, b), **_arrays(rng, n_per_batch, size))
    np.savez_compressed(layout.validation_path(aug, size), **_arrays(rng, n_val, size))
    return aug
