"""Stage 06: how good a run's inclinations are, against the labels, the truth and the classical method.

Predicts the held-out ``test_000`` galaxies (and up to `bias_fit_max` ``train_000``
galaxies for the bias fits) with every trained (model, Uset) (`inference`),
measures the axis-ratio baseline on the same galaxies (`axis_ratio`), scores every
row (`metrics`), and writes ``metrics.json`` and ``evaluation/``, plus the run's
``trained_bands.json``; `summarize_metrics` is the short table the runner prints.

Rows of ``metrics.json`` pool *every test image in every evaluated band* as one
prediction (a galaxy in g, r, i and gri counts four times; n = test galaxies x
bands); ensembles combine one image's predictions over models/Usets, never over
bands. The per-band breakdown, including a ``combined`` pseudo-band with one
prediction per galaxy, is ``evaluation/metrics_by_band.csv``. Each row's ``+bc``
twin uses the correction fitted on that row's predictions of ``train_000``
galaxies; it equals the plain row (flagged in ``bias_fits.csv``) when the
correction would raise the RMS on those training galaxies.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import BANDS, GRAY_BANDS
from . import io as iio
from . import layout
from .axis_ratio import axis_ratio_inclination
from .inference import (InferenceError, ModelFile, each_model, find_models, predict_images, record_trained_bands,
                        trained_bands)
from .metrics import AXIS_RATIO, BC, OUTLIER_DEG, BiasFit, evaluate_predictions

log = logging.getLogger(__name__)

SALT = 6  # this stage's stream of the run seed
AXIS_RATIO_IMAGES = ("original", "prepared")


class EvaluationError(ValueError):
    """A run lacks something stage 06 needs, or holds something it cannot use."""


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
    calibration: dict = dataclasses.field(default_factory=dict)  # uncertainty: fit, coverage, test table
    framing: pd.DataFrame | None = None  # framing.framing_table of the test images, or None

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
    from .images import find_image, parallel_map, read_galaxy_image

    dark = band in GRAY_BANDS  # stored gray cutouts are black on white, colour white on black
    if images_dir is None:  # in-memory images: over the machine's cores (0.04-0.1 s each)
        tasks = [(image, dark, q0) for image in prepared]
        return np.asarray(parallel_map(_prepared_axis_ratio, tasks, os.cpu_count() or 1, progress,
                                       f"axis ratio {band}"), dtype=float)
    out = np.full(len(pgc_ids), np.nan)
    for k, pgc in enumerate(tqdm(pgc_ids, desc=f"axis ratio {band}", disable=not progress, mininterval=1.0)):
        path = find_image(images_dir, int(pgc), band)
        if path is not None:
            out[k] = axis_ratio_inclination(read_galaxy_image(path, band), q0=q0, galaxy_dark=dark)
    return out


def _prepared_axis_ratio(task) -> float:
    image, dark, q0 = task
    return axis_ratio_inclination(image[..., 0] if dark else image, q0=q0, galaxy_dark=dark)


def long_predictions(source: str, model: str, uset: int, band: str, sample: dict, predicted: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({
        "source": source, "model": model, "uset": uset, "band": band,
        "pgc": sample["pgcIDs"].astype(np.int64), "measured_deg": sample["labels"].astype(float),
        "predicted_deg": predicted.astype(float),
    })


def predict_run(model_files: list[ModelFile], sets: dict, size: int, batch_size: int = 64,
                progress: bool = True, flips: bool = True) -> dict[str, pd.DataFrame]:
    """Predict every set (name -> band -> sample dict) with every model, one model in memory at a time."""
    frames = {name: [] for name in sets}
    for mf, model in each_model(tqdm(model_files, desc="models", disable=not progress), size):
        for name, by_band in sets.items():
            for band, sample in by_band.items():
                pred = predict_images(model, sample["images"], batch_size, flips=flips)
                frames[name].append(long_predictions(mf.row, mf.model, mf.uset, band, sample, pred))
    return {name: pd.concat(f, ignore_index=True) for name, f in frames.items()}


def load_test_and_fit_samples(samples_dir: Path, size: int, bands: list[str], bias_fit_max: int,
                              seed: int) -> tuple[dict, dict]:
    """(band -> test_000 sample, band -> the bias-fit subset of train_000), the same galaxies in every band.

    Refuses a split whose train_000 and test_000 share a galaxy.
    """
    from .dataset import load_sample

    test = {b: load_sample(samples_dir, b, size, "test", 0) for b in bands}
    train_ids = {}
    for b in bands:
        path = layout.sample_path(samples_dir, b, size, "train", 0)
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
        sample = load_sample(samples_dir, b, size, "train", 0)
        keep = np.isin(sample["pgcIDs"], fit_ids)
        train[b] = {k: v[keep] for k, v in sample.items()}
        del sample
    return test, train


def _check_settings(bands, axis_ratio_image: str) -> list[str]:
    bands = layout.check_bands(bands)
    if axis_ratio_image not in AXIS_RATIO_IMAGES:
        raise ValueError(f"axis_ratio_image {axis_ratio_image!r}; expected one of {AXIS_RATIO_IMAGES}")
    return bands


def _with_axis_ratio(preds: dict, sets: dict, images_root: Path | None, q0: float, progress: bool) -> None:
    """Add the baseline's predictions of every set and band to `preds` (name -> long table)."""
    for name, by_band in sets.items():
        extra = [long_predictions(AXIS_RATIO, AXIS_RATIO, -1, b, sample,
                       axis_ratio_predictions(sample["pgcIDs"], b, images_root, sample["images"], q0=q0,
                                              progress=progress))
                 for b, sample in by_band.items()]
        preds[name] = pd.concat([preds[name], *extra], ignore_index=True)


def evaluate_run(run_dir: str | os.PathLike, size: int = 128, bands=BANDS, images_dir: str = "",
                 catalog_path: str = "", seed: int = 42, bias_fit_max: int = 300, batch_size: int = 64,
                 q0: float = 0.2, axis_ratio_image: str = "original", progress: bool = True,
                 flips: bool = True, framing_check: bool = False) -> Evaluation:
    """Predict the held-out test_000 galaxies with every trained model and score everything.

    Bias fits use up to `bias_fit_max` galaxies of ``train_000`` (the same
    galaxies in every band, drawn from `seed`), never the test set. The
    axis-ratio baseline measures the full-resolution input images
    (`axis_ratio_image="original"`) or the prepared sample images ("prepared").
    `flips` averages each network prediction over the image's flips
    (`inference.predict_images`). `framing_check` also scores the test images
    re-framed (`framing.framing_table`). Nothing is written; see `write_evaluation`.
    """
    paths = layout.run_paths(run_dir)
    bands = _check_settings(bands, axis_ratio_image)
    model_files = find_models(paths["models"])
    images_root, catalog = iio.resolve_input(run_dir, images_dir, catalog_path)
    truth = _truth(catalog, explicit=bool(catalog_path))
    if axis_ratio_image == "original" and not Path(images_root).is_dir():
        raise FileNotFoundError(f"input image folder {images_root} does not exist (needed by the axis-ratio "
                                "baseline; use axis_ratio_image='prepared' to measure the prepared images)")
    test, train = load_test_and_fit_samples(paths["samples"], size, bands, bias_fit_max, seed)
    preds = predict_run(model_files, {"test": test, "train": train}, size, batch_size, progress, flips)
    _with_axis_ratio(preds, {"test": test, "train": train},
                     images_root if axis_ratio_image == "original" else None, q0, progress)
    metrics, by_band, fits, test_rows, train_rows = evaluate_predictions(preds["test"], preds["train"], truth, bands)
    n_missing_ar = int(preds["test"].query("source == @AXIS_RATIO")["predicted_deg"].isna().sum())
    if n_missing_ar:
        log.warning("axis-ratio baseline has no value for %d test images (input image absent or no galaxy "
                    "found); its n is smaller", n_missing_ar)
    info = {
        "run_dir": str(run_dir), "size": size, "bands": bands, "seed": seed, "flips": bool(flips),
        "models": [str(mf.path.name) for mf in model_files],
        "n_test_galaxies": {b: int(len(test[b]["pgcIDs"])) for b in bands},
        "n_bias_fit_galaxies": {b: int(len(train[b]["pgcIDs"])) for b in bands},
        "bias_fit_sample": f"train_000 (up to {bias_fit_max} galaxies, seed {seed}); never test_000",
        "axis_ratio_image": axis_ratio_image, "q0": q0, "images_dir": str(images_root),
        "has_truth": bool(truth), "outlier_deg": OUTLIER_DEG, "delta": "measured - predicted (deg)",
        "rows": "metrics.json rows pool every test image in every band (n = galaxies x bands); "
                "ensembles combine one image's predictions over models/Usets, never over bands",
        "combined_band": "metrics_by_band.csv band 'combined': one prediction per galaxy, the row's "
                         "mean (median for median rows) over its bands",
        "axis_ratio_missing": n_missing_ar,
        "trained_bands": trained_bands(run_dir, model_files),
    }
    calibration = calibrate_uncertainty(preds, fits, train_rows, test_rows, [mf.row for mf in model_files])
    info["uncertainty"] = calibration.get("summary")
    framed = None
    if framing_check:
        from .framing import framing_table

        framed = framing_table(run_dir, test, truth, q0=q0, flips=False, seed=seed)  # one view: 4x cheaper
    return Evaluation(metrics, by_band, fits, test_rows, train_rows, preds["test"], test, info, calibration,
                      framed)


def calibrate_uncertainty(preds: dict, fits: pd.DataFrame, train_rows: dict, test_rows: dict,
                          sources: list[str], row: str = "all/median") -> dict:
    """sigma(spread) of the bias-corrected ensemble `row`, fitted on the training galaxies
    (`uncertainty.calibrate`), its held-out coverage, and the test table; {} when it cannot be fitted."""
    from . import uncertainty

    if row not in train_rows:
        return {}
    fit = BiasFit(**fits.set_index("row").loc[row, ["m", "b", "n_fit", "rms_fit_before", "rms_fit_after"]]
                  .set_axis(["m", "b", "n", "rms_fit_before", "rms_fit_after"]).to_dict())
    train = train_rows[row].assign(predicted_deg=fit.apply(train_rows[row]["predicted_deg"]))
    try:
        cal, cov, table, train_table = uncertainty.calibrate(train, test_rows[row + BC], preds["train"],
                                                preds["test"], sources, row=row + BC)
    except uncertainty.CalibrationError as exc:
        log.warning("no uncertainty calibration: %s", exc)
        return {}
    return {"fit": cal, "coverage": cov, "table": table, "train_table": train_table,
            "summary": {**cal.to_dict(), **cov}}


def metrics_table(metrics: dict) -> pd.DataFrame:
    """metrics.json as a table, one line per row name."""
    metrics = {k: v for k, v in metrics.items() if k != layout.CLASSIFIER_METRICS}  # not a row
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
    evaluation.json (settings and definitions), uncertainty.json (the calibrated
    sigma(spread) `predict` uses; its held-out coverage goes into metrics.json's
    row of that ensemble), calibration_test.csv and framing.csv (when checked); figures: <name>.png; and the
    run's trained_bands.json (bands each model trained on, read by `predict`).
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
        if evaluation.calibration:
            cal = evaluation.calibration
            iio.write_json(tmp / names["uncertainty"], cal["fit"].to_dict())
            cal["table"].round(4).to_csv(tmp / names["calibration"], index=False)
            metrics[cal["fit"].row].update({k: round(float(v), 4) for k, v in cal["coverage"].items()})
        if evaluation.framing is not None:
            evaluation.framing.round(4).to_csv(tmp / names["framing"], index=False)
        by_model = evaluation.info.get("trained_bands") or {}
        if by_model and all(by_model.values()):
            record_trained_bands(run_dir, by_model)  # for predict; kept when it exists
        else:
            log.warning("bands of %s unknown (no augmented files): %s not written",
                        [r for r, b in by_model.items() if not b], layout.TRAINED_BANDS)
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
    extra = {}
    if evaluation.calibration:
        extra["uncertainty_calibration"] = plots.uncertainty_calibration(evaluation.calibration["table"],
                                                                         evaluation.calibration["fit"])
    if evaluation.framing is not None:
        extra["framing"] = plots.framing_accuracy(evaluation.framing)
    return {
        **extra,
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
    clf = metrics.get(layout.CLASSIFIER_METRICS)
    metrics = {k: v for k, v in metrics.items() if k != layout.CLASSIFIER_METRICS}  # not a row
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
    if clf:
        lines.append(f"classifiers ({', '.join(clf['members'])}): AUC {clf['auc']:.3f} on {clf['n']} held-out images; "
                     f"reject precision {clf['precision_reject']:.2f}, recall {clf['recall_reject']:.2f}")
    return "\n".join(lines)
