"""Tiny synthetic stage-03 sample files (and ellipse rendering) for the augment tests and benchmark.

The files follow the run layout: samples/<tag>_<S>x<S>_{train,test}_<NNN>.npz with
images (N,S,S,3) uint8, labels (N,) int64 inclination, pgcIDs (N,) int64.
Colour galaxies are bright on a black sky, grayscale ones dark on a white sky.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inclinet_utils import layout


def render_ellipse(size, axis_ratio, pa_deg, colour, rng=None, a_frac=0.25, noise=2.0):
    """A flat ellipse (semi-major a_frac*size, anti-aliased 4x4) on sky, uint8 (S,S,3)."""
    ss = 4
    yy, xx = (np.mgrid[0:size * ss, 0:size * ss] + 0.5) / ss - 0.5
    c = (size - 1) / 2
    th = np.deg2rad(pa_deg)
    u = (xx - c) * np.cos(th) + (yy - c) * np.sin(th)
    v = -(xx - c) * np.sin(th) + (yy - c) * np.cos(th)
    a = a_frac * size
    inside = ((u / a) ** 2 + (v / (axis_ratio * a)) ** 2) <= 1
    frac = inside.reshape(size, ss, size, ss).mean(axis=(1, 3))
    img = 20 + 200 * frac if colour else 235 - 200 * frac
    img = np.repeat(img[..., None], 3, -1)
    if rng is not None:
        img = img + rng.normal(0, noise, img.shape if colour else img.shape[:2] + (1,))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def axis_ratio_moments(image, colour):
    """Axis ratio from intensity-weighted second moments of the half-level isophote.

    Weights are the sky-subtracted signal above half its peak, which is an
    ellipse of the true axis ratio for any elliptical profile, and ignores the
    sky level, sky noise and brightness changes.
    """
    x = image.astype(float).mean(-1)
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    sky = np.median(border)
    s = (x - sky) if colour else (sky - x)
    peak = np.percentile(s, 99.5)
    w = np.where(s > 0.5 * peak, s, 0.0)
    yy, xx = np.mgrid[0:x.shape[0], 0:x.shape[1]]
    tot = w.sum()
    mx, my = (w * xx).sum() / tot, (w * yy).sum() / tot
    cxx = (w * (xx - mx) ** 2).sum() / tot
    cyy = (w * (yy - my) ** 2).sum() / tot
    cxy = (w * (xx - mx) * (yy - my)).sum() / tot
    lo, hi = np.linalg.eigvalsh([[cxx, cxy], [cxy, cyy]])
    return float(np.sqrt(lo / hi))


def render_galaxy(size, inc_deg, pa_deg, colour, rng, q0=0.2):
    """An exponential disk of inclination inc_deg (thickness q0) with sky noise."""
    q = np.sqrt(np.cos(np.deg2rad(inc_deg)) ** 2 * (1 - q0 ** 2) + q0 ** 2)
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    th = np.deg2rad(pa_deg)
    u = xx * np.cos(th) + yy * np.sin(th)
    v = -xx * np.sin(th) + yy * np.cos(th)
    prof = np.exp(-np.hypot(u, v / q) / (size / 14))
    if colour:
        img = 4 + prof[..., None] * np.array([230.0, 200.0, 160.0]) + rng.normal(0, 3, (size, size, 3))
    else:
        img = 245 - 220 * prof[..., None] + rng.normal(0, 3, (size, size, 1))
        img = np.repeat(img, 3, -1)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def write_samples(samples_dir, size=32, bands=("g", "r", "i", "gri"), n_galaxies=60, m_iter=1,
                  seed=0, inc_range=(45, 90), test_fraction=0.2, missing=None):
    """Write stage-03-like sample files; return {pgc: label} of all galaxies.

    `missing` = {band: set of pgc} leaves those galaxies out of that band.
    """
    samples_dir = Path(samples_dir)
    samples_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pgc = np.arange(1000, 1000 + n_galaxies, dtype=np.int64)
    labels = rng.integers(inc_range[0], inc_range[1] + 1, n_galaxies).astype(np.int64)
    # Make sure the range ends are present so every bin is populated in a uniform draw.
    labels[:2] = inc_range
    pa = rng.uniform(-3, 3, n_galaxies)
    images = {b: np.stack([render_galaxy(size, inc, p, b == "gri", rng) for inc, p in zip(labels, pa)])
              for b in bands}
    order = rng.permutation(n_galaxies)
    n_test = max(1, int(round(test_fraction * n_galaxies)))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    splits = {0: (train, test)}
    for j in range(1, m_iter + 1):
        sub = rng.permutation(train)
        k = int(round(2 / 3 * len(train)))
        splits[j] = (np.sort(sub[:k]), np.sort(sub[k:]))
    missing = missing or {}
    for b in bands:
        for j, (tr, te) in splits.items():
            for part, idx in (("train", tr), ("test", te)):
                keep = idx[~np.isin(pgc[idx], list(missing.get(b, ())))]
                np.savez_compressed(layout.sample_path(samples_dir, b, size, part, j),
                                    images=images[b][keep], labels=labels[keep], pgcIDs=pgc[keep])
    return dict(zip(pgc.tolist(), labels.tolist()))
