"""Calibrated uncertainty of an ensemble inclination, and the disagreement alarm.

Stage 06 fits, on TRAINING galaxies only, how the real error of the bias-corrected
ensemble inclination grows with the ensemble spread (the standard deviation over
the run's (model, Uset) members): sigma^2 = a^2 spread^2 + b^2, by maximum
likelihood of Gaussian residuals (`fit_calibration`). With a single member the
spread is undefined and only b is fitted. The alarm threshold is a high
percentile of the spread on those training galaxies (`Calibration.disagree`).
Real errors have a narrower core and heavier tails than a Gaussian, so after the fit
(a, b) are scaled together until 68% of the training residuals lie within 1 sigma, and
the 95% half-width is stored in sigmas (`z95`, 1.96 for Gaussian errors), both read off
the same training galaxies (split-conformal style). `coverage` checks, on held-out test
galaxies, how often |residual| <= z sigma for the 68% and 95% intervals. `predict` reads the stored fit (`load_calibration`).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd
from scipy import optimize, stats

from . import io as iio
from . import layout

LEVELS = (0.68, 0.95)
ALARM_PERCENTILE = 99.0  # spread above this percentile of the training galaxies' raises `disagree`
MIN_SIGMA_DEG = 0.1  # floor on b: a perfect fit on training galaxies must not promise zero error


class CalibrationError(ValueError):
    """Too few or unusable values to fit or apply the uncertainty calibration."""


@dataclasses.dataclass(frozen=True)
class Calibration:
    """sigma^2 = a^2 spread^2 + b^2 (degrees), fitted on n training images of `row`,
    and the spread percentiles the alarm uses."""

    a: float
    b: float
    n: int
    row: str = "all/median+bc"
    spread_p95: float = float("nan")
    spread_p99: float = float("nan")
    alarm_percentile: float = ALARM_PERCENTILE
    z95: float = 1.959963984540054  # 95% half-width in sigmas (from the training residuals)
    method: str = ("maximum likelihood, sigma^2 = a^2 spread^2 + b^2, on train_000 galaxies; scaled so that "
                   "68% of them lie within 1 sigma, z95 from the same galaxies")

    def z(self, level: float) -> float:
        """Half-width in sigmas of the central `level` interval (68%: the Gaussian 0.994, by construction)."""
        return self.z95 if round(level * 100) == 95 else z_of(level)

    @property
    def alarm_spread(self) -> float:
        return self.spread_p99 if self.alarm_percentile == 99.0 else self.spread_p95

    def sigma(self, spread) -> np.ndarray:
        """Calibrated 1-sigma uncertainty (deg); a missing spread (one member) counts as 0."""
        s = np.nan_to_num(np.asarray(spread, dtype=float), nan=0.0)
        return np.sqrt((self.a * s) ** 2 + self.b ** 2)

    def disagree(self, spread) -> np.ndarray:
        """True where the members' spread is beyond what 06 found normal on training galaxies."""
        s = np.asarray(spread, dtype=float)
        if not np.isfinite(self.alarm_spread):
            return np.zeros(s.shape, bool)
        return np.isfinite(s) & (s > self.alarm_spread)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _neg_log_likelihood(log_ab, resid, spread):
    a, b = np.exp(log_ab)
    var = (a * spread) ** 2 + b ** 2
    return 0.5 * np.sum(np.log(var) + resid ** 2 / var)


def fit_calibration(residual, spread, row: str = "all/median+bc") -> Calibration:
    """Maximum-likelihood (a, b) of sigma^2 = a^2 spread^2 + b^2 from TRAINING residuals.

    `residual` = measured - predicted (bias-corrected ensemble) and `spread` (std
    over members; NaN with one member) of the same images. Never pass test
    galaxies: their coverage is what judges the fit.
    """
    resid = np.asarray(residual, dtype=float)
    spread = np.asarray(spread, dtype=float)
    ok = np.isfinite(resid)
    if ok.sum() < 3:
        raise CalibrationError(f"uncertainty fit needs at least 3 training images with predictions; got {ok.sum()}")
    resid, spread = resid[ok], spread[ok]
    rms = max(float(np.sqrt(np.mean(resid ** 2))), MIN_SIGMA_DEG)
    has_spread = np.isfinite(spread).all() and np.ptp(spread) > 0
    if has_spread:
        start = np.log([max(rms / max(np.mean(spread), 1e-3), 1e-3), rms])
        best = optimize.minimize(_neg_log_likelihood, start, args=(resid, spread), method="Nelder-Mead",
                                 options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 4000})
        a, b = (float(v) for v in np.exp(best.x))
    else:  # one member (or identical spreads): sigma is the training RMS
        a, b = 0.0, rms
    b = max(b, MIN_SIGMA_DEG)
    u = np.abs(resid) / np.sqrt((a * np.nan_to_num(spread, nan=0.0)) ** 2 + b ** 2)  # residuals in sigmas
    scale = max(float(np.quantile(u, LEVELS[0])) / z_of(LEVELS[0]), MIN_SIGMA_DEG / b)
    z95 = float(np.quantile(u / scale, LEVELS[1]))
    finite = spread[np.isfinite(spread)]
    p95, p99 = (float(np.percentile(finite, q)) if len(finite) else float("nan") for q in (95, 99))
    return Calibration(a=a * scale, b=b * scale, n=int(len(resid)), row=row, spread_p95=p95, spread_p99=p99,
                       z95=z95)


def z_of(level: float) -> float:
    """Half-width in sigmas of the central `level` interval of a Gaussian (0.68 -> 0.994)."""
    return float(stats.norm.ppf(0.5 + level / 2))


def coverage(residual, sigma, levels=LEVELS, calibration: Calibration | None = None) -> dict:
    """Fraction of images with |residual| <= z(level) sigma, for each level: {'coverage_68': ...};
    z from `calibration` (its z95) when given, else the Gaussian one."""
    resid = np.asarray(residual, dtype=float)
    sigma = np.asarray(sigma, dtype=float)
    ok = np.isfinite(resid) & np.isfinite(sigma)
    out = {}
    for level in levels:
        z = calibration.z(level) if calibration is not None else z_of(level)
        inside = np.abs(resid[ok]) <= z * sigma[ok]
        out[f"coverage_{round(level * 100)}"] = float(inside.mean()) if ok.any() else float("nan")
    return out


def member_spread(predictions: pd.DataFrame, sources) -> pd.DataFrame:
    """(band, pgc, spread_deg, n_members) of a long prediction table: std (ddof 1) over `sources`."""
    sel = predictions[predictions["source"].isin(list(sources))]
    out = (sel.groupby(["band", "pgc"], sort=False)["predicted_deg"]
           .agg(spread_deg=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan, n_members="count")
           .reset_index())
    return out


def residual_table(rows: pd.DataFrame, spread: pd.DataFrame) -> pd.DataFrame:
    """A row table (band, pgc, measured_deg, predicted_deg) with residual_deg and the members' spread."""
    out = rows.merge(spread, on=["band", "pgc"], how="left", validate="one_to_one")
    out["residual_deg"] = out["measured_deg"] - out["predicted_deg"]
    return out


def calibrate(train_rows: pd.DataFrame, test_rows: pd.DataFrame, train_preds: pd.DataFrame,
              test_preds: pd.DataFrame, sources, row: str = "all/median+bc"):
    """Fit on the training rows, score on the test rows: (calibration, coverage, test table with
    sigma_deg and disagree, training table)."""
    train = residual_table(train_rows, member_spread(train_preds, sources))
    test = residual_table(test_rows, member_spread(test_preds, sources))
    cal = fit_calibration(train["residual_deg"], train["spread_deg"], row=row)
    test["sigma_deg"] = cal.sigma(test["spread_deg"])
    test["disagree"] = cal.disagree(test["spread_deg"])
    cov = coverage(test["residual_deg"], test["sigma_deg"], calibration=cal)
    cov["disagree_frac"] = float(test["disagree"].mean()) if len(test) else float("nan")
    return cal, cov, test, train


def calibration_path(run_dir: str | os.PathLike):
    return layout.run_paths(run_dir)["evaluation"] / layout.EVALUATION_FILES["uncertainty"]


def load_calibration(run_dir: str | os.PathLike) -> Calibration | None:
    """The run's stored calibration (evaluation/uncertainty.json), or None before 06 has run."""
    path = calibration_path(run_dir)
    if not path.is_file():
        return None
    data = iio.read_json(path)
    fields = {f.name for f in dataclasses.fields(Calibration)}
    try:
        return Calibration(**{k: v for k, v in data.items() if k in fields})
    except TypeError as exc:
        raise CalibrationError(f"{path} is not an uncertainty calibration: {exc}") from exc
