"""The uncertainty calibration: maximum likelihood recovers sigma(spread), its coverage is nominal on
fresh galaxies, the alarm threshold is the training spread's percentile, and the stored fit reads back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from inclinet_utils import io as iio
from inclinet_utils import layout, uncertainty


def _draw(rng, n, a, b):
    spread = rng.gamma(2.0, 1.5, n)
    return rng.normal(0.0, np.sqrt((a * spread) ** 2 + b ** 2)), spread


def test_maximum_likelihood_recovers_a_and_b_and_covers_fresh_galaxies():
    rng = np.random.default_rng(3)
    resid, spread = _draw(rng, 4000, a=1.8, b=2.5)
    cal = uncertainty.fit_calibration(resid, spread)
    assert cal.a == pytest.approx(1.8, rel=0.08) and cal.b == pytest.approx(2.5, rel=0.08) and cal.n == 4000
    assert cal.spread_p99 == pytest.approx(np.percentile(spread, 99)) and cal.spread_p95 < cal.spread_p99
    fresh_resid, fresh_spread = _draw(rng, 4000, a=1.8, b=2.5)
    cov = uncertainty.coverage(fresh_resid, cal.sigma(fresh_spread))
    assert cov["coverage_68"] == pytest.approx(0.68, abs=0.03) and cov["coverage_95"] == pytest.approx(0.95, abs=0.02)
    # The spread matters: a constant sigma (the overall RMS) misses the wide galaxies.
    wide = fresh_spread > np.percentile(fresh_spread, 90)
    flat = np.abs(fresh_resid[wide]) <= 1.96 * np.sqrt(np.mean(resid ** 2))
    assert flat.mean() < 0.85 < uncertainty.coverage(fresh_resid[wide], cal.sigma(fresh_spread[wide]))["coverage_95"]
    assert cal.disagree([cal.spread_p99 * 1.01, cal.spread_p99 * 0.99, np.nan]).tolist() == [True, False, False]


def test_a_single_member_gives_a_constant_sigma_and_no_alarm():
    resid = np.array([3.0, -4.0, 1.0, 0.0, -2.0])
    cal = uncertainty.fit_calibration(resid, np.full(5, np.nan))
    # sigma is the training RMS scaled so that 68% of the training residuals lie inside it
    assert cal.a == 0 and cal.b == pytest.approx(np.quantile(np.abs(resid), 0.68) / uncertainty.z_of(0.68))
    assert np.allclose(cal.sigma([np.nan, np.nan]), cal.b) and not cal.disagree([np.nan]).any()
    with pytest.raises(uncertainty.CalibrationError, match="at least 3"):
        uncertainty.fit_calibration([1.0, np.nan], [1.0, 2.0])


def test_calibrate_fits_on_train_rows_only_and_reads_back(tmp_path):
    rng = np.random.default_rng(0)

    def rows_and_preds(n, noise):
        pgc = np.arange(n)
        meas = rng.uniform(45, 90, n)
        members = meas[:, None] + rng.normal(0, noise, (n, 3))
        preds = pd.DataFrame([{"source": f"model4/Uset_00{k}", "band": "g", "pgc": p, "measured_deg": m,
                               "predicted_deg": members[i, k]} for i, (p, m) in enumerate(zip(pgc, meas))
                              for k in range(3)])
        rows = pd.DataFrame({"band": "g", "pgc": pgc, "measured_deg": meas,
                             "predicted_deg": np.median(members, axis=1)})
        return rows, preds

    train_rows, train_preds = rows_and_preds(300, 2.0)
    test_rows, test_preds = rows_and_preds(200, 6.0)  # a much worse test set: the fit must not see it
    sources = [f"model4/Uset_00{k}" for k in range(3)]
    cal, cov, table, train = uncertainty.calibrate(train_rows, test_rows, train_preds, test_preds, sources)
    alone = uncertainty.fit_calibration(*uncertainty.residual_table(
        train_rows, uncertainty.member_spread(train_preds, sources))[["residual_deg", "spread_deg"]].T.to_numpy())
    assert (cal.a, cal.b) == pytest.approx((alone.a, alone.b))
    assert len(train) == 300 and cov["coverage_95"] < 0.9 and len(table) == 200 and table["disagree"].mean() > 0.5
    path = layout.run_paths(tmp_path)["evaluation"] / layout.EVALUATION_FILES["uncertainty"]
    iio.write_json(path, cal.to_dict())
    assert uncertainty.load_calibration(tmp_path) == cal
    assert uncertainty.load_calibration(tmp_path / "other") is None


def test_heavy_tailed_errors_get_intervals_that_cover_their_nominal_share():
    """Errors with a narrow core and wide tails (a Student t): a Gaussian sigma from the RMS would
    cover far more than 68% within 1 sigma; the scaled fit and its z95 cover 68% and 95% of fresh ones."""
    rng = np.random.default_rng(5)

    def draw(n):
        spread = rng.gamma(2.0, 1.0, n)
        return np.sqrt((1.2 * spread) ** 2 + 2.0 ** 2) * rng.standard_t(3, n), spread

    resid, spread = draw(6000)
    cal = uncertainty.fit_calibration(resid, spread)
    fresh, fresh_spread = draw(6000)
    cov = uncertainty.coverage(fresh, cal.sigma(fresh_spread), calibration=cal)
    assert cov["coverage_68"] == pytest.approx(0.68, abs=0.02) and cov["coverage_95"] == pytest.approx(0.95, abs=0.01)
    assert cal.z95 > 1.2 * uncertainty.z_of(0.95)  # wider tails than a Gaussian
    rms_sigma = np.sqrt(np.mean(resid ** 2))
    assert (np.abs(fresh) <= rms_sigma).mean() > 0.75  # what an unscaled Gaussian sigma would give
