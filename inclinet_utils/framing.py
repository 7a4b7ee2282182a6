"""Does a run's accuracy survive a different framing? The held-out galaxies re-framed.

Real collections do not frame galaxies as the simulator does: more or less sky around
the galaxy (cutouts of 1.5 or 3 D25 instead of 2), a galaxy off the centre, coarser
pixels or seeing relative to its size, shallower imaging, a fainter galaxy (another
exposure depth or display stretch). `FRAMINGS` re-frames the held-out ``test_000``
images in those ways (the geometry with the augmentation's own resampling and sky
fill, `transforms.augment_images`, photometry untouched but for the fainter row), and
`framing_table` scores the ensemble (mean over the run's regressors) and the axis-ratio
method on the same re-framed images. The first row is the images as prepared: the
baseline each other row is read against. 06 runs it with one view per image (no flip
averaging, 4x cheaper), so that row is its one-view ``all/mean``; the axis-ratio method
here measures the prepared images, not the full-resolution input 06's own row uses.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .metrics import AXIS_RATIO, compute_metrics, row_table

ENSEMBLE = "all/mean"


@dataclasses.dataclass(frozen=True)
class Framing:
    """One way of framing a cutout differently from the simulator's."""

    name: str
    zoom: float = 1.0          # galaxy size on the image relative to the prepared one (< 1: more sky)
    shift_frac: float = 0.0    # centre moved by this fraction of the image along x and y
    pixel_factor: int = 1      # pixels this many times coarser (resampled down, then back up)
    noise_sigma: float = 0.0   # extra Gaussian noise (0-255 levels): shallower imaging
    brightness: float = 1.0    # the galaxy's light above the sky times this: another depth or stretch


FRAMINGS = (
    Framing("as prepared"),
    Framing("galaxy 0.6x (3.3 D25 of sky)", zoom=0.6),
    Framing("galaxy 0.8x", zoom=0.8),
    Framing("galaxy 1.25x", zoom=1.25),
    Framing("galaxy 1.6x (cropped to 1.25 D25)", zoom=1.6),
    Framing("off-centre by 10%", shift_frac=0.1),
    Framing("pixels 2x coarser", pixel_factor=2),
    Framing("shallower (noise +6 levels)", noise_sigma=6.0),
    Framing("fainter (light above the sky 0.5x)", brightness=0.5),
)

# The augmentation's resampling with every photometric change switched off.
_GEOMETRY_ONLY = dict(rotation_deg=(0.0, 0.0), blur_prob=0.0, gain=(1.0, 1.0), offset=(0.0, 0.0),
                      noise_sigma=(0.0, 0.0), desaturate_prob=0.0, gamma=(1.0, 1.0))


def _coarser(images: np.ndarray, factor: int) -> np.ndarray:
    """Average `factor` x `factor` pixel blocks, then resample back to the image size (bilinear)."""
    import tensorflow as tf

    size = images.shape[1]
    small = tf.image.resize(images.astype(np.float32), (size // factor, size // factor), method="area")
    back = tf.image.resize(small, (size, size), method="bilinear").numpy()
    return np.clip(np.rint(back), 0, 255).astype(np.uint8)


def reframe(images: np.ndarray, framing: Framing, colour: bool, seed: int = 0) -> np.ndarray:
    """The (N, S, S, 3) uint8 `images` framed as `framing` says (same shape and type)."""
    from .transforms import AugmentParams, affine_transforms, augment_images

    images = np.asarray(images)
    rng = np.random.default_rng(seed)
    n, size = len(images), images.shape[1]
    out = images
    if framing.zoom != 1.0 or framing.shift_frac or framing.brightness != 1.0:
        shift = np.full(n, framing.shift_frac * size)
        tr = affine_transforms(np.zeros(n), np.full(n, framing.zoom), np.full(n, framing.zoom),
                               np.zeros(n, bool), np.zeros(n, bool), shift, shift, size)
        params = AugmentParams(**_GEOMETRY_ONLY, brightness=(framing.brightness,) * 2)
        out = augment_images(out, rng, colour, params, transforms=tr)
    if framing.pixel_factor > 1:
        out = _coarser(out, framing.pixel_factor)
    if framing.noise_sigma:
        noisy = out + rng.normal(0.0, framing.noise_sigma, out.shape[:3] + (1 if not colour else 3,))
        out = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return out


def reframed_sets(test_images: dict, framings=FRAMINGS, seed: int = 0) -> dict:
    """framing name -> band -> re-framed copy of the test sample (images, labels, pgcIDs)."""
    from . import GRAY_BANDS

    return {f.name: {band: {**sample, "images": reframe(sample["images"], f, band not in GRAY_BANDS, seed)}
                     for band, sample in test_images.items()}
            for f in framings}


def framing_table(run_dir, test_images: dict, truth: dict | None = None, framings=FRAMINGS,
                  q0: float = 0.2, flips: bool = True, seed: int = 0, axis_ratio: bool = True) -> pd.DataFrame:
    """One row per (framing, estimator): RMS, MAE, bias (deg) against the truth where known, else the labels.

    The ensemble rows' ``rms_vs_axis_ratio`` is its RMS over the axis-ratio method's on the images
    where that method found a galaxy (below 1: the networks win on this framing).

    `test_images` is band -> test sample as 06 loads it; the ensemble is 06's ``all/mean`` row
    (`metrics.row_table`) over the run's regressors (each flip-averaged with `flips`).
    """
    from . import layout
    from .evaluate import predict_run
    from .inference import find_models

    sets = reframed_sets(test_images, framings, seed)
    size = next(iter(test_images.values()))["images"].shape[1]
    models = find_models(layout.run_paths(run_dir)["models"])
    preds = predict_run(models, sets, size, progress=False, flips=flips)
    rows = []
    for f in framings:
        ensemble = row_table(preds[f.name], [mf.row for mf in models], "mean", truth)
        rows.append({"framing": f.name, "estimator": ENSEMBLE, **_scores(ensemble, bool(truth))})
        if axis_ratio:
            classical = row_table(_axis_ratio_rows(sets[f.name], q0), [AXIS_RATIO], "mean", truth)
            found = classical.loc[classical["predicted_deg"].notna(), ["band", "pgc"]]
            rows[-1]["rms_vs_axis_ratio"] = (_scores(ensemble.merge(found), bool(truth))["rms_deg"]
                                             / _scores(classical, bool(truth))["rms_deg"])
            rows.append({"framing": f.name, "estimator": AXIS_RATIO, **_scores(classical, bool(truth))})
    return pd.DataFrame(rows)


def summary_table(table: pd.DataFrame, values=("rms_deg", "mae_deg", "bias_deg", "rms_vs_axis_ratio")) -> pd.DataFrame:
    """`framing_table` (or its framing.csv) as one line per framing, in the order of FRAMINGS."""
    wide = table.pivot(index="framing", columns="estimator", values=[v for v in values if v in table])
    return wide.dropna(axis=1, how="all").loc[list(dict.fromkeys(table["framing"]))]


def _axis_ratio_rows(by_band: dict, q0: float) -> pd.DataFrame:
    """The axis-ratio method on every re-framed image (long table, as 06's)."""
    from .evaluate import axis_ratio_predictions, long_predictions

    return pd.concat([long_predictions(AXIS_RATIO, AXIS_RATIO, -1, band, sample,
                                       axis_ratio_predictions(sample["pgcIDs"], band, None, sample["images"], q0))
                      for band, sample in by_band.items()], ignore_index=True)


def _scores(table: pd.DataFrame, with_truth: bool) -> dict:
    """RMS, MAE, bias of a `metrics.row_table`: against true_deg on synthetic runs, else the labels."""
    m = compute_metrics(table["measured_deg"], table["predicted_deg"], table["true_deg"] if with_truth else None)
    if with_truth:  # against the exact inclination: what a synthetic run is judged by
        bias = float(np.nanmean(table["true_deg"] - table["predicted_deg"]))
        return {"n": m["n"], "rms_deg": m["rms_true_deg"], "mae_deg": m["mae_true_deg"], "bias_deg": bias,
                "against": "truth"}
    return {"n": m["n"], "rms_deg": m["rms_deg"], "mae_deg": m["mae_deg"], "bias_deg": m["bias_deg"],
            "against": "labels"}
