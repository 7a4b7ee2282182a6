"""Accuracy of inclination predictions: errors, RMS/MAE/bias/outliers, the bias correction, ensemble rows.

Conventions: delta = measured - predicted (degrees). `compute_metrics` scores one
set of pairs; `fit_bias` fits the original project's correction delta = m * i + b
on TRAINING galaxies only (`BiasFit.apply` gives i_pc = (i_p + b) / (1 - m));
`evaluate_predictions` scores every ensemble row (`row_definitions`: each
(model, Uset), the mean/median over a model's Usets and over everything, the
axis-ratio baseline) before and after its own correction, pooled over bands and
per band. Ensembles combine one image's predictions over models, never over bands.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd

from . import layout

OUTLIER_DEG = 10.0  # |delta| above this is an outlier
INC_LIMITS = (0.0, 90.0)  # physical range; (bias-corrected) predictions are clipped to it
METRIC_KEYS = ("rms_deg", "mae_deg", "bias_deg", "outlier_frac", "n")
TRUE_KEYS = ("rms_true_deg", "mae_true_deg")
BC = "+bc"
AXIS_RATIO = "axis_ratio"


class MetricsError(ValueError):
    """Too few or unusable values to compute a metric or fit."""


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
        raise MetricsError(f"bias fit needs at least 2 training galaxies with predictions; got {len(x)}")
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


def against_baseline(metrics: dict, has_truth: bool,
                     rows=("all/median", "all/median+bc", "all/mean", "all/mean+bc")) -> pd.DataFrame:
    """RMS and MAE of the ensemble rows beside the axis-ratio method's, as ratios network / formula
    (against `inc_true` on synthetic runs, the labels otherwise); rows a run lacks are left out."""
    rms, mae = ("rms_true_deg", "mae_true_deg") if has_truth else ("rms_deg", "mae_deg")
    base = metrics[AXIS_RATIO]
    out = [{"row": r, "rms_deg": metrics[r][rms], "mae_deg": metrics[r][mae],
            "rms_ratio": metrics[r][rms] / base[rms], "mae_ratio": metrics[r][mae] / base[mae]}
           for r in (*rows, AXIS_RATIO) if r in metrics]
    return pd.DataFrame(out).set_index("row")
