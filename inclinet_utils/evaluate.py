"""Stage 06: how good the inclinations are, against the labels, the truth and the classical method.

Owns the accuracy metrics, the bias correction (fitted on training galaxies
only), the classical axis-ratio baseline (`axis_ratio_inclination`), the
evaluation of every trained (model, Uset) and their ensembles on the held-out
``test_000`` galaxies, the run's ``metrics.json`` and ``evaluation/`` folder,
and the short summary (`summarize_metrics`) the runner prints at the end.

Conventions: delta = measured - predicted (degrees). Rows of ``metrics.json``
pool *every test image in every evaluated band* as one prediction (a galaxy in
g, r, i and gri counts four times; n = test galaxies x bands); ensembles
(``<model>/mean``, ``all/median``, ...) combine the predictions of one image
(same galaxy, same band) over models/Usets, never over bands. The per-band
breakdown, including a ``combined`` pseudo-band with one prediction per galaxy
aggregated over bands, is ``evaluation/metrics_by_band.csv``. Each row's ``+bc``
twin uses the original project's correction fitted on that row's predictions
of ``train_000`` galaxies; it is left out (``+bc`` = plain, flagged in
``bias_fits.csv``) when it would raise the RMS on those training galaxies.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm import tqdm

from . import BANDS, GRAY_BANDS
from . import io as iio
from . import layout

SALT = 6  # this stage's stream of the run seed
OUTLIER_DEG = 10.0  # |delta| above this is an outlier
INC_LIMITS = (0.0, 90.0)  # physical range; (bias-corrected) predictions are clipped to it
METRIC_KEYS = ("rms_deg", "mae_deg", "bias_deg", "outlier_frac", "n")
TRUE_KEYS = ("rms_true_deg", "mae_true_deg")
BC = "+bc"
AXIS_RATIO = "axis_ratio"


class EvaluationError(ValueError):
    """A run lacks something stage 06 needs, or holds something it cannot use."""


# ---- metrics --------------------------------------------------------------------

def compute_metrics(measured, predicted, true=None, outlier_deg: float = OUTLIER_DEG) -> dict:
    """RMS, MAE, mean bias and outlier fraction of delta = measured - predicted (degrees).

    Pairs with a non-finite prediction are left out (n counts the rest). With
    `true` (exact inclinations of a synthetic sample) also rms_true_deg and
    mae_true_deg of true - predicted over the same pairs.
    """
    measured = np.asarray(measured, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    if measured.shape != predicted.shape:
        raise ValueError(f"measured {measured.shape} and predicted {predicted.shape} differ in shape")
    ok = np.isfinite(predicted) & np.isfinite(measured)
    delta = measured[ok] - predicted[ok]
    n = int(ok.sum())
    nan = float("nan")
    out = {
        "rms_deg": float(np.sqrt(np.mean(delta ** 2))) if n else nan,
        "mae_deg": float(np.mean(np.abs(delta))) if n else nan,
        "bias_deg": float(np.mean(delta)) if n else nan,
        "outlier_frac": float(np.mean(np.abs(delta) > outlier_deg)) if n else nan,
        "n": n,
    }
    if true is not None:
        true = np.asarray(true, dtype=float)[ok]
        dt = true - predicted[ok]
        has = np.isfinite(dt)
        out["rms_true_deg"] = float(np.sqrt(np.mean(dt[has] ** 2))) if has.any() else nan
        out["mae_true_deg"] = float(np.mean(np.abs(dt[has]))) if has.any() else nan
    return out


# ---- bias correction --------------------------------------------------------------

MIN_ONE_MINUS_M = 0.1  # below this the predictions barely follow the labels: do not correct


def _corrected(predicted, m: float, b: float) -> np.ndarray:
    """i_pc = (i_p + b) / (1 - m), clipped to 0-90 deg (the original project's correction)."""
    return np.clip((np.asarray(predicted, dtype=float) + b) / (1.0 - m), *INC_LIMITS)


@dataclasses.dataclass(frozen=True)
class BiasFit:
    """delta = m * i_measured + b, least squares on training galaxies (n pairs), and the
    RMS of delta on those same training galaxies before and after the correction."""

    m: float
    b: float
    n: int
    rms_fit_before: float = float("nan")
    rms_fit_after: float = float("nan")

    @property
    def applied(self) -> bool:
        """Whether the correction is used. Not when 1 - m < MIN_ONE_MINUS_M, or when it makes
        the training galaxies it was fitted on worse: (i_p + b) / (1 - m) multiplies the
        scatter by 1 / (1 - m), which for weakly trained models outweighs the bias it removes."""
        if (1.0 - self.m) < MIN_ONE_MINUS_M:
            return False
        return not (self.rms_fit_after > self.rms_fit_before)

    def apply(self, predicted) -> np.ndarray:
        """The corrected inclinations (a copy of `predicted` when the correction is not applied)."""
        if not self.applied:
            return np.asarray(predicted, dtype=float).copy()
        return _corrected(predicted, self.m, self.b)


def fit_bias(measured_train, predicted_train) -> BiasFit:
    """Fit delta = m * i_measured + b on TRAINING (or validation) galaxies only.

    Never pass test-set values: the corrected test metrics would then be fitted
    to the very galaxies they judge. Callers in this module only hand it
    predictions of ``train_000`` galaxies.
    """
    measured = np.asarray(measured_train, dtype=float)
    predicted = np.asarray(predicted_train, dtype=float)
    ok = np.isfinite(measured) & np.isfinite(predicted)
    x, p = measured[ok], predicted[ok]
    delta = x - p
    if len(x) < 2:
        raise EvaluationError(f"bias fit needs at least 2 training galaxies with predictions; got {len(x)}")
    if np.ptp(x) == 0:  # a slope needs more than one measured value
        m, b = 0.0, float(delta.mean())
    else:
        m, b = (float(v) for v in np.polyfit(x, delta, 1))
    before = float(np.sqrt(np.mean(delta ** 2)))
    after = float(np.sqrt(np.mean((x - _corrected(p, m, b)) ** 2))) if m < 1 else float("inf")
    fit = BiasFit(m, b, int(len(x)), before, after)
    if not fit.applied:
        warnings.warn(f"bias fit m = {m:.3f}, b = {b:.2f} is not applied: on its training galaxies the "
                      f"correction gives RMS {after:.2f} vs {before:.2f} deg (1 - m = {1 - m:.3f})", stacklevel=2)
    return fit


# ---- classical baseline: axis ratio from second moments ----------------------------

def inclination_from_axis_ratio(q, q0: float = 0.2):
    """Hubble's formula: cos^2 i = (q^2 - q0^2) / (1 - q0^2); q <= q0 gives 90 deg, q >= 1 gives 0."""
    q = np.asarray(q, dtype=float)
    cos2 = (np.clip(q, q0, 1.0) ** 2 - q0 ** 2) / (1.0 - q0 ** 2)
    inc = np.degrees(np.arccos(np.sqrt(cos2)))
    inc = np.where(np.isfinite(q), inc, np.nan)
    return float(inc) if inc.ndim == 0 else inc


def _sky(values: np.ndarray) -> tuple[float, float]:
    """Sigma-clipped median and std of sky pixels."""
    from astropy.stats import sigma_clipped_stats

    values = values.ravel()
    stride = max(1, len(values) // 20000)  # a regular subsample is plenty for two numbers
    _, median, std = sigma_clipped_stats(values[::stride], sigma=3.0, maxiters=10)
    return float(median), float(std)


def _fill_mask(img: np.ndarray, is_uint8: bool) -> np.ndarray:
    """Constant fill outside the sky footprint: rotated cutouts' corners (pure white in
    SDSS colour JPEGs) and transparent areas, i.e. large regions at exactly 0 or 255
    that touch the border. They are neither sky nor galaxy."""
    fill = np.zeros(img.shape, bool)
    if not is_uint8:
        return fill
    for value in (0.0, 255.0):
        labels, n = ndimage.label(img == value)
        if n == 0:
            continue
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        sizes = ndimage.sum_labels(np.ones(img.shape), labels, index=edge)
        big = edge[(edge > 0) & (sizes >= 0.005 * img.size)]
        fill |= np.isin(labels, big)
    return fill


def axis_ratio_moments(image, galaxy_dark: bool | None = None, nsigma: float = 3.0,
                       peak_frac: float = 0.02, smooth_px: float | None = None) -> float:
    """Axis ratio b/a of the galaxy at the image centre from intensity-weighted second moments.

    Steps: colour -> mean of the channels; black-on-white images (the stored
    g, r, i cutouts) are inverted (`galaxy_dark`; None = decide from centre vs
    border); constant fill (white corners of rotated cutouts, transparent
    areas) is set aside; sky = sigma-clipped median of the outer 10% frame;
    the galaxy region is the connected region above max(nsigma x sky noise,
    peak_frac x central peak) in a lightly smoothed image that holds the
    brightest pixel near the centre (separate sources drop out). Sources that
    touch or overlap the disk are removed by point symmetry about the galaxy
    centre: each pixel keeps min(I(x), I(2c - x)), pixels whose mirror lies
    outside the region are dropped, and only the symmetric light connected to
    the centre is kept; the centre starts at the central peak (a neighbour in
    the region would pull a plain centroid off) and is refined once on the
    cleaned region. Returns NaN when nothing stands out of the sky at the centre.
    """
    img = np.asarray(image)
    is_uint8 = img.dtype == np.uint8
    img = img.astype(np.float64)
    if img.ndim == 3:
        img = img.mean(axis=2)
    if img.ndim != 2 or min(img.shape) < 8:
        raise ValueError(f"image of shape {np.shape(image)}; expected (H, W) or (H, W, 3) with H, W >= 8")
    ny, nx = img.shape
    fill = _fill_mask(img, is_uint8)
    w = max(2, min(ny, nx) // 10)
    frame_mask = np.ones(img.shape, bool)
    frame_mask[w:-w, w:-w] = False
    sky_mask = frame_mask & ~fill
    if sky_mask.sum() < 20:  # the fill covers the whole frame: take whatever is not fill
        sky_mask = ~fill
    if sky_mask.sum() < 20:
        return float("nan")
    box = (slice(int(ny * 0.4), int(np.ceil(ny * 0.6)) + 1), slice(int(nx * 0.4), int(np.ceil(nx * 0.6)) + 1))
    if galaxy_dark is None:
        galaxy_dark = np.median(img[box]) < np.median(img[sky_mask])
    if galaxy_dark:
        img = -img
    sky, _ = _sky(img[sky_mask])
    img = np.where(fill, 0.0, img - sky)

    smooth_px = max(1.0, min(ny, nx) / 256.0) if smooth_px is None else smooth_px
    sm = ndimage.gaussian_filter(img, smooth_px)
    _, noise = _sky(sm[sky_mask])
    centre_sm = sm[box]
    peak = float(centre_sm.max())
    if peak <= 0:
        return float("nan")
    threshold = max(nsigma * noise, peak_frac * peak)
    labels, _ = ndimage.label((sm > threshold) & ~fill)
    iy, ix = np.unravel_index(np.argmax(centre_sm), centre_sm.shape)
    iy, ix = iy + box[0].start, ix + box[1].start
    lab = labels[iy, ix]
    if lab == 0:
        return float("nan")
    region = ndimage.binary_fill_holes(labels == lab)

    # Centre: the cutouts are centred on their galaxy, so start from the light-weighted
    # centre of the peak near the image centre (a neighbour in the same region would pull
    # the region's centroid away), then refine it once on the cleaned region.
    r0 = 3.0 * smooth_px + 2.0
    yy, xx = np.ogrid[0:ny, 0:nx]
    near = region & ((yy - iy) ** 2 + (xx - ix) ** 2 <= r0 ** 2)
    w0 = np.clip(sm[near], 0, None)
    ys_n, xs_n = np.nonzero(near)
    cy, cx = (w0 * ys_n).sum() / w0.sum(), (w0 * xs_n).sum() / w0.sum()

    # Work on the region's pixels only (fast for large cutouts).
    ys, xs = np.nonzero(region)
    ys, xs = ys.astype(np.float64), xs.astype(np.float64)
    values, values_sm = img[region], sm[region]
    region_f = region.astype(np.float64)
    for iteration in range(2):
        coords = np.vstack([2 * cy - ys, 2 * cx - xs])
        mirror_in = ndimage.map_coordinates(region_f, coords, order=0, cval=0.0) > 0.5
        sym_sm = np.minimum(values_sm, ndimage.map_coordinates(sm, coords, order=1, cval=0.0))
        # Keep the symmetric light connected to the centre: drops neighbours and stars
        # that overlap the disk on one side only.
        keep_img = np.zeros(img.shape, bool)
        keep_img[ys.astype(int), xs.astype(int)] = mirror_in & (sym_sm > threshold)
        lab_sym, _ = ndimage.label(keep_img)
        centre_lab = lab_sym[int(round(cy)), int(round(cx))]
        if centre_lab == 0:
            return float("nan")
        keep = lab_sym[ys.astype(int), xs.astype(int)] == centre_lab
        mirror = ndimage.map_coordinates(img, coords, order=1, cval=0.0)
        weights = np.where(keep, np.clip(np.minimum(values, mirror), 0, None), 0.0)
        if iteration == 0:  # re-centre on the raw light of the cleaned region
            raw = np.where(keep, np.clip(values, 0, None), 0.0)
            if raw.sum() <= 0:
                return float("nan")
            cy, cx = (raw * ys).sum() / raw.sum(), (raw * xs).sum() / raw.sum()
    total = weights.sum()
    if total <= 0:
        return float("nan")
    my, mx = (weights * ys).sum() / total, (weights * xs).sum() / total
    dy, dx = ys - my, xs - mx
    mxx = (weights * dx * dx).sum() / total
    myy = (weights * dy * dy).sum() / total
    mxy = (weights * dx * dy).sum() / total
    lam = np.linalg.eigvalsh(np.array([[mxx, mxy], [mxy, myy]]))
    if lam[1] <= 0:
        return float("nan")
    return float(np.sqrt(max(lam[0], 0.0) / lam[1]))


def axis_ratio_inclination(image, q0: float = 0.2, galaxy_dark: bool | None = None, **kw) -> float:
    """Classical inclination (deg) of the central galaxy: second-moment axis ratio + Hubble's formula.

    `image` is (H, W) gray or (H, W, 3) colour, any size; stored g, r, i
    cutouts are black galaxy on white sky (galaxy_dark=True), colour
    composites white on black (False); None decides from the image. See
    `axis_ratio_moments` for sky subtraction and masking; q0 is the intrinsic
    thickness (q <= q0 gives 90 deg). NaN when no galaxy is found.
    """
    return inclination_from_axis_ratio(axis_ratio_moments(image, galaxy_dark=galaxy_dark, **kw), q0)


# ---- models and predictions -------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ModelFile:
    """One trained network of a run: models/Uset_<uset>_<model>.keras."""

    model: str
    uset: int
    path: Path

    @property
    def row(self) -> str:
        return layout.model_row(self.model, self.uset)


def find_models(models_dir: str | os.PathLike) -> list[ModelFile]:
    """Every final model file of a run, sorted by model name then Uset."""
    found = [ModelFile(model, uset, path) for model, uset, path in layout.find_model_files(models_dir)]
    if not found:
        raise FileNotFoundError(
            f"no trained models (Uset_<jjj>_<model>.keras) in {models_dir}; run 05_train first"
        )
    return found


def load_model(path: str | os.PathLike):
    """Load a final .keras model for inference (no optimizer state needed)."""
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # keras raises many kinds for a bad file
        raise EvaluationError(f"model file {path} cannot be loaded: {exc}") from exc


def model_input_size(model, path: str | os.PathLike = "model") -> int:
    """Image size the model takes, from its (None, S, S, 3) input shape."""
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or shape[1] is None:
        raise EvaluationError(f"{path} takes input of shape {shape}; expected (None, S, S, 3)")
    return int(shape[1])


def predict_images(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Inclinations (deg) the model gives raw 0-255 (N, S, S, 3) images (its first layer rescales)."""
    from .models import target_to_inclination

    if len(images) == 0:
        return np.zeros(0)
    out = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], dtype=np.float32)
        out.append(np.asarray(model(batch, training=False)).reshape(len(batch), -1)[:, 0])
    return np.clip(target_to_inclination(np.concatenate(out)).astype(float), *INC_LIMITS)


# ---- a run's evaluation -----------------------------------------------------------

@dataclasses.dataclass
class Evaluation:
    """Everything stage 06 measured; `write_evaluation` turns it into files."""

    metrics: dict                      # row -> metrics (metrics.json)
    by_band: pd.DataFrame              # row, band, metrics: per band, 'all' and 'combined'
    fits: pd.DataFrame                 # row, m, b, n_fit: bias fits on training galaxies
    test_rows: dict                    # row (incl. +bc) -> table band, pgc, measured_deg, true_deg, predicted_deg
    train_rows: dict                   # row -> same on the bias-fit training galaxies
    predictions: pd.DataFrame          # long table of every test prediction per source
    test_images: dict                  # band -> test_000 sample dict (images, labels, pgcIDs)
    info: dict                         # settings and definitions (evaluation/evaluation.json)

    @property
    def rows(self) -> list[str]:
        return list(self.metrics)


def check_outputs_free(run_dir: str | os.PathLike) -> None:
    """Refuse early (before any work) when the run already holds stage-06 products."""
    paths = layout.run_paths(run_dir)
    for key in ("evaluation", "metrics"):
        if paths[key].exists():
            raise FileExistsError(f"{paths[key]} already exists; refusing to overwrite it (use a new run folder)")


def _sample_subset(ids: np.ndarray, max_n: int, seed: int) -> np.ndarray:
    ids = np.unique(ids)
    if max_n <= 0 or len(ids) <= max_n:
        return ids
    rng = np.random.default_rng(np.random.SeedSequence([seed, SALT]))
    return np.sort(rng.choice(ids, size=max_n, replace=False))


def _truth(catalog_path: Path, explicit: bool) -> dict[int, float] | None:
    """pgc -> inc_true from the run's catalog (synthetic runs), or None."""
    from .catalog import read_catalog

    if not catalog_path.is_file():
        if explicit:
            raise FileNotFoundError(f"catalog {catalog_path} does not exist")
        return None
    cat = read_catalog(catalog_path)
    if "inc_true" not in cat.columns:
        return None
    return dict(zip(cat["pgc"].astype(int), cat["inc_true"].astype(float)))


def axis_ratio_predictions(pgc_ids, band: str, images_dir: str | os.PathLike | None = None,
                           prepared: np.ndarray | None = None, q0: float = 0.2,
                           progress: bool = False) -> np.ndarray:
    """Classical inclinations of galaxies in one band: from the full-resolution
    input images in `images_dir` (default), else from the prepared sample
    images `prepared` (N, S, S, 3). NaN where an input image is absent."""
    from .images import find_image, read_galaxy_image

    dark = band in GRAY_BANDS  # stored gray cutouts are black on white, colour white on black
    out = np.full(len(pgc_ids), np.nan)
    for k, pgc in enumerate(tqdm(pgc_ids, desc=f"axis ratio {band}", disable=not progress, mininterval=1.0)):
        if images_dir is not None:
            path = find_image(images_dir, int(pgc), band)
            if path is None:
                continue
            image = read_galaxy_image(path, band)
        else:
            image = prepared[k][..., 0] if dark else prepared[k]
        out[k] = axis_ratio_inclination(image, q0=q0, galaxy_dark=dark)
    return out


def _long(source: str, model: str, uset: int, band: str, sample: dict, predicted: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({
        "source": source, "model": model, "uset": uset, "band": band,
        "pgc": sample["pgcIDs"].astype(np.int64), "measured_deg": sample["labels"].astype(float),
        "predicted_deg": predicted.astype(float),
    })


def predict_run(model_files: list[ModelFile], sets: dict, size: int, batch_size: int = 64,
                progress: bool = True) -> dict[str, pd.DataFrame]:
    """Predict every set (name -> band -> sample dict) with every model, one model in memory at a time."""
    import keras

    frames = {name: [] for name in sets}
    for mf in tqdm(model_files, desc="models", disable=not progress):
        model = load_model(mf.path)
        got = model_input_size(model, mf.path)
        if got != size:
            raise EvaluationError(f"model {mf.path} takes {got}x{got} images; this evaluation uses size {size}")
        for name, by_band in sets.items():
            for band, sample in by_band.items():
                pred = predict_images(model, sample["images"], batch_size)
                frames[name].append(_long(mf.row, mf.model, mf.uset, band, sample, pred))
        del model
        keras.backend.clear_session()
    return {name: pd.concat(f, ignore_index=True) for name, f in frames.items()}


def row_definitions(sources: list[str]) -> dict[str, tuple[list[str], str]]:
    """Row name -> (sources it combines, aggregation) in metrics.json order (before +bc rows)."""
    cnn = [s for s in sources if s != AXIS_RATIO]
    rows: dict[str, tuple[list[str], str]] = {}
    for model in sorted({layout.parse_model_row(s)[0] for s in cnn}):
        mine = sorted(s for s in cnn if layout.parse_model_row(s)[0] == model)
        for s in mine:
            rows[s] = ([s], "mean")
        rows[f"{model}/mean"] = (mine, "mean")
        rows[f"{model}/median"] = (mine, "median")
    if cnn:
        rows["all/mean"] = (sorted(cnn), "mean")
        rows["all/median"] = (sorted(cnn), "median")
    if AXIS_RATIO in sources:
        rows[AXIS_RATIO] = ([AXIS_RATIO], "mean")
    return rows


def row_table(predictions: pd.DataFrame, sources: list[str], how: str,
              truth: dict[int, float] | None = None) -> pd.DataFrame:
    """One prediction per image (band, pgc): the `how` (mean/median) over `sources`."""
    sel = predictions[predictions["source"].isin(sources)]
    table = (sel.groupby(["band", "pgc"], sort=False)
             .agg(measured_deg=("measured_deg", "first"), predicted_deg=("predicted_deg", how))
             .reset_index())
    table["true_deg"] = table["pgc"].map(truth).astype(float) if truth else np.nan
    return table


def combine_bands(table: pd.DataFrame, how: str = "mean") -> pd.DataFrame:
    """One prediction per galaxy: the `how` over its bands."""
    out = (table.groupby("pgc", sort=False)
           .agg(measured_deg=("measured_deg", "first"), true_deg=("true_deg", "first"),
                predicted_deg=("predicted_deg", how))
           .reset_index())
    out["band"] = "combined"
    return out


def _metrics_of(table: pd.DataFrame, with_truth: bool) -> dict:
    return compute_metrics(table["measured_deg"], table["predicted_deg"],
                           table["true_deg"] if with_truth else None)


def evaluate_predictions(test: pd.DataFrame, train: pd.DataFrame, truth: dict | None = None,
                         bands: list[str] | None = None):
    """Metrics of every row before and after bias correction.

    `test` and `train` are long tables (source, band, pgc, measured_deg,
    predicted_deg). Each row's (m, b) is fitted on its `train` predictions only
    and then applied to its `test` predictions. Returns (metrics, by_band,
    fits, test_rows, train_rows).
    """
    with_truth = bool(truth)
    bands = bands or sorted(test["band"].unique())
    metrics, by_band, fits, test_rows, train_rows = {}, [], [], {}, {}
    for row, (sources, how) in row_definitions(sorted(test["source"].unique())).items():
        t = row_table(test, sources, how, truth)
        tr = row_table(train, sources, how, truth)
        with warnings.catch_warnings():  # reported once for all rows below
            warnings.simplefilter("ignore", UserWarning)
            fit = fit_bias(tr["measured_deg"], tr["predicted_deg"])
        fits.append({"row": row, "m": fit.m, "b": fit.b, "n_fit": fit.n, "rms_fit_before": fit.rms_fit_before,
                     "rms_fit_after": fit.rms_fit_after, "applied": fit.applied})
        tc = t.assign(predicted_deg=fit.apply(t["predicted_deg"]))
        test_rows[row], test_rows[row + BC], train_rows[row] = t, tc, tr
        for name, table in ((row, t), (row + BC, tc)):
            metrics[name] = _metrics_of(table, with_truth)
            for band in bands:
                part = table[table["band"] == band]
                if len(part):
                    by_band.append({"row": name, "band": band, **_metrics_of(part, with_truth)})
            by_band.append({"row": name, "band": "all", **metrics[name]})
            by_band.append({"row": name, "band": "combined",
                            **_metrics_of(combine_bands(table, "median" if how == "median" else "mean"),
                                          with_truth)})
    fits = pd.DataFrame(fits)
    skipped = fits.loc[~fits["applied"], "row"].tolist()
    if skipped:
        warnings.warn(f"bias correction not applied to {skipped}: on the training galaxies it would not "
                      "lower the RMS (see bias_fits.csv); their +bc rows equal the plain ones", stacklevel=2)
    return metrics, pd.DataFrame(by_band), fits, test_rows, train_rows


def evaluate_run(run_dir: str | os.PathLike, size: int = 128, bands=BANDS, images_dir: str = "",
                 catalog_path: str = "", seed: int = 42, bias_fit_max: int = 300, batch_size: int = 64,
                 q0: float = 0.2, axis_ratio_image: str = "original", progress: bool = True) -> Evaluation:
    """Predict the held-out test_000 galaxies with every trained model and score everything.

    Bias fits use up to `bias_fit_max` galaxies of ``train_000`` (the same
    galaxies in every band, drawn from `seed`), never the test set. The
    axis-ratio baseline measures the full-resolution input images
    (`axis_ratio_image="original"`) or the prepared sample images ("prepared").
    Nothing is written; see `write_evaluation`.
    """
    from .dataset import load_sample

    paths = layout.run_paths(run_dir)
    bands = layout.check_bands(bands)
    if axis_ratio_image not in ("original", "prepared"):
        raise ValueError(f"axis_ratio_image {axis_ratio_image!r}; expected 'original' or 'prepared'")
    model_files = find_models(paths["models"])
    images_root, catalog = iio.resolve_input(run_dir, images_dir, catalog_path)
    truth = _truth(catalog, explicit=bool(catalog_path))
    if axis_ratio_image == "original" and not Path(images_root).is_dir():
        raise FileNotFoundError(f"input image folder {images_root} does not exist (needed by the axis-ratio "
                                "baseline; use axis_ratio_image='prepared' to measure the prepared images)")

    test = {b: load_sample(paths["samples"], b, size, "test", 0) for b in bands}
    train_ids = {}
    for b in bands:
        path = layout.sample_path(paths["samples"], b, size, "train", 0)
        if not path.is_file():
            raise FileNotFoundError(f"sample file {path} does not exist; run 03_split first")
        with np.load(path) as data:  # only the IDs: the images are read for the chosen galaxies below
            train_ids[b] = data["pgcIDs"]
        overlap = np.intersect1d(test[b]["pgcIDs"], train_ids[b])
        if len(overlap):
            raise EvaluationError(f"band {b}: galaxies {overlap[:5].tolist()} are in both train_000 and "
                                  "test_000; the split is broken")
    fit_ids = _sample_subset(np.concatenate(list(train_ids.values())), bias_fit_max, seed)
    train = {}
    for b in bands:  # one band's training images in memory at a time
        sample = load_sample(paths["samples"], b, size, "train", 0)
        keep = np.isin(sample["pgcIDs"], fit_ids)
        train[b] = {k: v[keep] for k, v in sample.items()}
        del sample

    preds = predict_run(model_files, {"test": test, "train": train}, size, batch_size, progress)
    for name, sets in (("test", test), ("train", train)):
        extra = []
        for b, sample in sets.items():
            inc = axis_ratio_predictions(
                sample["pgcIDs"], b, images_root if axis_ratio_image == "original" else None,
                sample["images"], q0=q0, progress=progress)
            extra.append(_long(AXIS_RATIO, AXIS_RATIO, -1, b, sample, inc))
        preds[name] = pd.concat([preds[name], *extra], ignore_index=True)

    metrics, by_band, fits, test_rows, train_rows = evaluate_predictions(preds["test"], preds["train"], truth, bands)
    n_missing_ar = int(preds["test"].query("source == @AXIS_RATIO")["predicted_deg"].isna().sum())
    if n_missing_ar:
        warnings.warn(f"axis-ratio baseline has no value for {n_missing_ar} test images "
                      "(input image absent or no galaxy found); its n is smaller", stacklevel=2)
    info = {
        "run_dir": str(run_dir), "size": size, "bands": bands, "seed": seed,
        "models": [str(mf.path.name) for mf in model_files],
        "n_test_galaxies": {b: int(len(test[b]["pgcIDs"])) for b in bands},
        "n_bias_fit_galaxies": {b: int(len(train[b]["pgcIDs"])) for b in bands},
        "bias_fit_sample": f"train_000 (up to {bias_fit_max} galaxies, seed {seed}); never test_000",
        "axis_ratio_image": axis_ratio_image, "q0": q0, "images_dir": str(images_root),
        "has_truth": bool(truth), "outlier_deg": OUTLIER_DEG,
        "delta": "measured - predicted (deg)",
        "rows": "metrics.json rows pool every test image in every band (n = galaxies x bands); "
                "ensembles combine one image's predictions over models/Usets, never over bands",
        "combined_band": "metrics_by_band.csv band 'combined': one prediction per galaxy, the row's "
                         "mean (median for median rows) over its bands",
        "axis_ratio_missing": n_missing_ar,
    }
    return Evaluation(metrics, by_band, fits, test_rows, train_rows, preds["test"], test, info)


def metrics_table(metrics: dict) -> pd.DataFrame:
    """metrics.json as a table, one line per row name."""
    table = pd.DataFrame.from_dict(metrics, orient="index")
    table.index.name = "row"
    return table


def _rounded(metrics: dict) -> dict:
    return {row: {k: (int(v) if k == "n" else (None if not np.isfinite(v) else round(float(v), 4)))
                  for k, v in m.items()} for row, m in metrics.items()}


def write_evaluation(evaluation: Evaluation, run_dir: str | os.PathLike, figures: dict | None = None) -> Path:
    """Write evaluation/ (tables, figures, settings) atomically, then metrics.json.

    Tables: metrics.csv (= metrics.json), metrics_by_band.csv, bias_fits.csv,
    predictions_test.csv (every source's prediction of every test image),
    evaluation.json (settings and definitions); figures: <name>.png.
    """
    paths = layout.run_paths(run_dir)
    check_outputs_free(run_dir)
    metrics = _rounded(evaluation.metrics)
    names = layout.EVALUATION_FILES
    with iio.staged_dir(paths["evaluation"]) as tmp:
        metrics_table(metrics).to_csv(tmp / names["metrics_csv"])
        evaluation.by_band.round(4).to_csv(tmp / names["by_band"], index=False)
        evaluation.fits.round(6).to_csv(tmp / names["bias_fits"], index=False)
        evaluation.predictions.round(3).to_csv(tmp / names["predictions"], index=False)
        iio.write_json(tmp / names["info"], evaluation.info)
        for name, fig in (figures or {}).items():
            iio.save_figure(fig, tmp / layout.figure_name(name), dpi=110, bbox_inches="tight")
        # Last inside the staged block: a failure leaves neither product behind.
        iio.write_json(paths["metrics"], metrics)
    return paths["metrics"]


def make_figures(evaluation: Evaluation, n_outliers: int = 16) -> dict:
    """The stage's figures (plots.py, evaluate section), keyed by file name."""
    from . import plots

    # One panel per model (its mean over Usets), then the ensembles and the baseline.
    panels = [r for r in evaluation.metrics if r.endswith("/mean") and not r.startswith("all/")]
    panels += [r for r in ("all/mean", "all/median", AXIS_RATIO) if r in evaluation.metrics]
    fits = evaluation.fits.set_index("row")
    panel_data = {
        r: (evaluation.test_rows[r], evaluation.test_rows[r + BC],
            (fits.loc[r, "m"], fits.loc[r, "b"], fits.loc[r, "applied"]))
        for r in panels
    }
    best = "all/median" if "all/median" in evaluation.test_rows else panels[0]
    hist = {r: evaluation.test_rows[r] for r in (best, best + BC, AXIS_RATIO, AXIS_RATIO + BC)
            if r in evaluation.test_rows}
    worst = evaluation.test_rows[best].copy()
    worst["abs_delta"] = (worst["measured_deg"] - worst["predicted_deg"]).abs()
    worst = worst.sort_values("abs_delta", ascending=False).head(n_outliers)
    gallery = []
    for _, r in worst.iterrows():
        sample = evaluation.test_images[r["band"]]
        k = int(np.flatnonzero(sample["pgcIDs"] == r["pgc"])[0])
        gallery.append((sample["images"][k], int(r["pgc"]), r["band"], r["measured_deg"], r["predicted_deg"]))
    return {
        "pred_vs_measured": plots.pred_vs_measured(panel_data),
        "residual_histogram": plots.residual_histograms(hist),
        "metric_vs_inclination": plots.metric_vs_inclination(hist),
        "outlier_gallery": plots.outlier_gallery(gallery, title=f"Worst test images of {best}"),
    }


# ---- summary for the runner -------------------------------------------------------

def summarize_metrics(metrics: dict, per_uset: bool = False) -> str:
    """Short text table of metrics.json: ensembles, model means/medians, axis ratio (+bc).

    Per-Uset rows are left out unless `per_uset`.
    """
    if not metrics:
        return "metrics.json is empty"
    has_true = any("rms_true_deg" in m for m in metrics.values())
    head = f"{'row':<22}{'RMS':>7}{'MAE':>7}{'bias':>7}{'>10deg':>8}{'n':>7}"
    head += f"{'RMS_true':>10}{'MAE_true':>10}" if has_true else ""
    lines = [head, "-" * len(head)]
    skipped = 0

    def fmt(v, width, spec):
        return f"{'nan':>{width}}" if v is None or not np.isfinite(v) else f"{v:>{width}{spec}}"

    for row, m in metrics.items():
        if layout.parse_model_row(row) and not per_uset:
            skipped += 1
            continue
        line = (f"{row:<22}{fmt(m.get('rms_deg'), 7, '.2f')}{fmt(m.get('mae_deg'), 7, '.2f')}"
                f"{fmt(m.get('bias_deg'), 7, '.2f')}{fmt(m.get('outlier_frac'), 8, '.3f')}{m.get('n', 0):>7d}")
        if has_true:
            line += f"{fmt(m.get('rms_true_deg'), 10, '.2f')}{fmt(m.get('mae_true_deg'), 10, '.2f')}"
        lines.append(line)
    lines.append("degrees; delta = measured - predicted; +bc = bias-corrected (fit on training galaxies)")
    if skipped:
        lines.append(f"({skipped} per-Uset rows in metrics.json not shown)")
    return "\n".join(lines)
