"""Stage 06: metrics, bias correction kept off the test set, and a whole evaluation of a tiny
hand-built run (tiny Keras models, tiny samples)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galaxy_shapes import oblate
from inclinet_utils import evaluate as ev
from inclinet_utils import uncertainty as ev_uncertainty
from inclinet_utils import inference
from inclinet_utils import metrics as mt
from inclinet_utils import io as iio
from inclinet_utils import layout
from inclinet_utils.catalog import write_catalog
from inclinet_utils.images import load_prepared

SIZE = 32


# ---- metrics ----------------------------------------------------------------------

def test_metrics_equal_hand_computed_values():
    measured = [60, 70, 80, 50, 66]
    predicted = [58, 73, 80, 62, np.nan]   # the NaN pair is left out
    true = [59.5, 71, 79, 51, 66]
    m = mt.compute_metrics(measured, predicted, true)
    # delta = 2, -3, 0, -12 ; true - predicted = 1.5, -2, -1, -11
    assert m["n"] == 4
    assert m["rms_deg"] == pytest.approx(np.sqrt((4 + 9 + 0 + 144) / 4))
    assert m["mae_deg"] == pytest.approx((2 + 3 + 0 + 12) / 4)
    assert m["bias_deg"] == pytest.approx((2 - 3 + 0 - 12) / 4)
    assert m["outlier_frac"] == pytest.approx(1 / 4)
    assert m["rms_true_deg"] == pytest.approx(np.sqrt((2.25 + 4 + 1 + 121) / 4))
    assert m["mae_true_deg"] == pytest.approx((1.5 + 2 + 1 + 11) / 4)
    assert "rms_true_deg" not in mt.compute_metrics(measured, predicted)


def _long(rows):
    return pd.DataFrame(rows, columns=["source", "band", "pgc", "measured_deg", "predicted_deg"])


def test_ensemble_rows_and_band_pooling_equal_hand_computed_values():
    # Two models x two Usets predicting 2 galaxies in 2 bands (4 test images).
    test = []
    values = {  # (band, pgc): [m4/U0, m4/U1, m6/U0, m6/U1], measured
        ("g", 1): ([50, 52, 60, 58], 55), ("gri", 1): ([54, 54, 57, 59], 55),
        ("g", 2): ([80, 86, 70, 90], 85), ("gri", 2): ([82, 84, 88, 86], 85),
    }
    sources = ["model4/Uset_000", "model4/Uset_001", "model6/Uset_000", "model6/Uset_001"]
    for (band, pgc), (preds, meas) in values.items():
        test += [(s, band, pgc, meas, p) for s, p in zip(sources, preds)]
    test = _long(test)
    train = test.assign(pgc=test["pgc"] + 100)  # stand-in training galaxies
    metrics, by_band, fits, test_rows, _ = mt.evaluate_predictions(test, train, bands=["g", "gri"])

    assert [r for r in metrics if not r.endswith("+bc")] == [
        "model4/Uset_000", "model4/Uset_001", "model4/mean", "model4/median",
        "model6/Uset_000", "model6/Uset_001", "model6/mean", "model6/median", "all/mean", "all/median"]
    assert all(r + "+bc" in metrics for r in ("all/median", "model4/Uset_000"))
    # all/median per image: g1 55, gri1 55.5, g2 83, gri2 85 -> delta 0, -0.5, 2, 0
    assert metrics["all/median"]["n"] == 4
    assert metrics["all/median"]["rms_deg"] == pytest.approx(np.sqrt((0.25 + 4) / 4))
    assert metrics["all/median"]["bias_deg"] == pytest.approx(1.5 / 4)
    # model4/mean per image: 51, 54, 83, 83 -> delta 4, 1, 2, 2
    assert metrics["model4/mean"]["mae_deg"] == pytest.approx(9 / 4)
    # model6/Uset_001: 58, 59, 90, 86 -> delta -3, -4, -5, -1
    assert metrics["model6/Uset_001"]["rms_deg"] == pytest.approx(np.sqrt((9 + 16 + 25 + 1) / 4))
    g = by_band.set_index(["row", "band"])
    assert g.loc[("model6/Uset_001", "g"), "rms_deg"] == pytest.approx(np.sqrt((9 + 25) / 2))
    assert g.loc[("model6/Uset_001", "all"), "n"] == 4
    # combined: one prediction per galaxy, the mean over bands -> 58.5, 88 -> delta -3.5, -3
    assert g.loc[("model6/Uset_001", "combined"), "n"] == 2
    assert g.loc[("model6/Uset_001", "combined"), "mae_deg"] == pytest.approx(3.25)


# ---- bias correction ----------------------------------------------------------------

def test_bias_fit_recovers_a_known_compression_and_undoes_it():
    x = np.repeat(np.arange(45, 91, 5.0), 3)
    m_true, b_true = 0.3, -15.0                 # delta = 0.3 x - 15 -> i_p = 0.7 x + 15
    predicted = x - (m_true * x + b_true)
    fit = mt.fit_bias(x, predicted)
    assert (fit.m, fit.b, fit.n) == (pytest.approx(m_true), pytest.approx(b_true), len(x))
    assert fit.applied and fit.rms_fit_after < 1e-9 < fit.rms_fit_before
    np.testing.assert_allclose(fit.apply(predicted), x, atol=1e-9)


def test_bias_fit_is_not_applied_when_predictions_ignore_the_labels():
    x = np.arange(45, 91, 1.0)
    with pytest.warns(UserWarning, match="not applied"):
        fit = mt.fit_bias(x, np.full_like(x, 67.0))
    assert not fit.applied and np.all(fit.apply([60.0, 70.0]) == [60.0, 70.0])
    # A weak trend under large scatter: dividing by (1 - m) would blow the scatter up on the
    # very training galaxies it was fitted on, so it is not applied either.
    rng = np.random.default_rng(2)
    weak = 0.25 * x + 50 + rng.normal(0, 5, len(x))
    with pytest.warns(UserWarning, match="not applied"):
        fit = mt.fit_bias(x, weak)
    assert 1 - fit.m > mt.MIN_ONE_MINUS_M and fit.rms_fit_after > fit.rms_fit_before and not fit.applied


def test_bias_fit_only_sees_training_galaxies_poisoned_test_changes_nothing():
    rng = np.random.default_rng(1)
    sources = ["model4/Uset_000", "model4/Uset_001"]

    def table(n, pgc0):
        x = rng.integers(45, 91, n).astype(float)
        return _long([(s, "g", pgc0 + k, x[k], 0.7 * x[k] + 20 + rng.normal(0, 2)) for s in sources for k in range(n)])

    train, test = table(40, 0), table(15, 1000)
    _, _, fits, rows, train_rows = mt.evaluate_predictions(test, train)
    poisoned = test.assign(measured_deg=90.0, predicted_deg=rng.uniform(0, 90, len(test)))
    m2, _, fits2, rows2, _ = mt.evaluate_predictions(poisoned, train)
    pd.testing.assert_frame_equal(fits, fits2)
    # The fit is exactly the one of the row's training predictions, and of nothing else.
    direct = mt.fit_bias(train_rows["all/mean"]["measured_deg"], train_rows["all/mean"]["predicted_deg"])
    row = fits.set_index("row").loc["all/mean"]
    assert (row["m"], row["b"]) == (pytest.approx(direct.m), pytest.approx(direct.b))
    assert set(train_rows["all/mean"]["pgc"]).isdisjoint(rows["all/mean"]["pgc"])
    # ... while the corrected test predictions do follow the (poisoned) test inputs.
    assert not np.allclose(rows["all/mean+bc"]["predicted_deg"], rows2["all/mean+bc"]["predicted_deg"])


# ---- a whole evaluation of a tiny hand-built run -------------------------------------

def _tiny_model(seed: int, size: int = SIZE):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((size, size, 3)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(2, 3), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1, activation="tanh"),
    ])


def _write_sample(samples, band, kind, images, labels, pgc, overwrite=False):
    iio.save_npz(layout.sample_path(samples, band, SIZE, kind, 0), overwrite=overwrite,
                 images=images, labels=labels.astype(np.int64), pgcIDs=pgc.astype(np.int64))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Input images + catalog (with inc_true), train/test samples and three tiny models."""
    run = tmp_path_factory.mktemp("eval") / "run"
    paths = layout.run_paths(run)
    rng = np.random.default_rng(0)
    n = 24
    pgc = np.arange(101, 101 + n)
    inc_true = rng.uniform(46, 89, n)
    label = np.clip(np.round(inc_true + rng.normal(0, 2, n)), 45, 90).astype(int)
    paths["input_images"].mkdir(parents=True)
    for p, inc in zip(pgc, inc_true):
        flux = oblate(inc, n=64, rs=4.0, angle=0.0)
        gray = np.clip(240 - 200 * flux + rng.normal(0, 3, flux.shape), 0, 255).astype(np.uint8)
        Image.fromarray(gray, "L").save(paths["input_images"] / layout.simulated_image_name(p, "g"))
        colour = np.clip(np.stack([220 * flux, 180 * flux, 140 * flux], -1) + 8, 0, 255).astype(np.uint8)
        Image.fromarray(colour, "RGB").save(paths["input_images"] / layout.simulated_image_name(p, "gri"),
                                            quality=95)
    write_catalog(pd.DataFrame({"pgc": pgc, "inc": label, "inc_flg": 0, "fon": "", "inc_note": "",
                                "inc_true": inc_true.round(3)}), paths["input_catalog"])
    is_test = np.zeros(n, bool)
    is_test[::4] = True
    for band in ("g", "gri"):
        images = np.stack([load_prepared(paths["input_images"] / layout.simulated_image_name(p, band), band, SIZE)
                           for p in pgc])
        for kind, mask in (("train", ~is_test), ("test", is_test)):
            _write_sample(paths["samples"], band, kind, images[mask], label[mask], pgc[mask])
    paths["models"].mkdir()
    for k, (model, uset) in enumerate([("model4", 0), ("model4", 1), ("model6", 0)]):
        _tiny_model(k).save(paths["models"] / layout.model_file_name(model, uset))
    return run, {"pgc": pgc, "is_test": is_test, "label": label, "inc_true": inc_true}


@pytest.mark.filterwarnings("ignore:bias correction not applied")  # untrained tiny models predict ~constants
def test_evaluate_run_writes_metrics_json_and_tables(tiny_run):
    run, truth = tiny_run
    result = ev.evaluate_run(run, size=SIZE, bands=["g", "gri"], bias_fit_max=12, seed=5, progress=False)
    n_test = int(truth["is_test"].sum())
    expected = ["model4/Uset_000", "model4/Uset_001", "model4/mean", "model4/median", "model6/Uset_000",
                "model6/mean", "model6/median", "all/mean", "all/median", "axis_ratio"]
    assert [r for r in result.metrics if not r.endswith("+bc")] == expected
    for row in expected:
        for name in (row, row + "+bc"):
            m = result.metrics[name]
            assert set(m) == set(mt.METRIC_KEYS) | set(mt.TRUE_KEYS)
            assert m["n"] == 2 * n_test  # every test image in both bands
    # Bias fits: 12 training galaxies in each band, none of them a test galaxy.
    assert (result.fits["n_fit"] == 24).all() and "applied" in result.fits
    test_ids = set(truth["pgc"][truth["is_test"]])
    assert test_ids.isdisjoint(result.train_rows["all/median"]["pgc"])
    # The axis-ratio baseline measures these clean noiseless-ish ellipses well.
    assert result.metrics["axis_ratio"]["rms_true_deg"] < 4.0

    figures = ev.make_figures(result, n_outliers=4)
    ev.write_evaluation(result, run, figures)
    written = json.loads((run / "metrics.json").read_text())
    assert list(written) == list(result.metrics)
    assert written["all/median"]["n"] == 2 * n_test
    for name in ("metrics.csv", "metrics_by_band.csv", "bias_fits.csv", "predictions_test.csv",
                 "evaluation.json", "pred_vs_measured.png", "outlier_gallery.png"):
        assert (run / "evaluation" / name).is_file(), name
    by_band = pd.read_csv(run / "evaluation" / "metrics_by_band.csv")
    assert set(by_band["band"]) == {"g", "gri", "all", "combined"}
    # Calibrated uncertainty: fitted on training galaxies, its held-out coverage in metrics.json.
    cal = json.loads((run / "evaluation" / "uncertainty.json").read_text())
    assert cal["row"] == "all/median+bc" and cal["n"] == 24 and cal["b"] > 0
    calib = pd.read_csv(run / "evaluation" / "calibration_test.csv")
    assert len(calib) == 2 * n_test and set(calib["pgc"]) == test_ids
    for level in (68, 95):
        inside = (calib["residual_deg"].abs() <= ev_uncertainty.z_of(level / 100) * calib["sigma_deg"]).mean()
        assert written["all/median+bc"][f"coverage_{level}"] == pytest.approx(inside, abs=1e-4)
    text = ev.summarize_metrics(written)
    assert "all/median" in text and "axis_ratio+bc" in text and "model4/Uset_000" not in text
    with pytest.raises(FileExistsError, match="metrics.json|evaluation"):
        ev.write_evaluation(result, run, {})

    # Poison the test labels: the bias fits stay exactly the same.
    paths = layout.run_paths(run)
    for band in ("g", "gri"):
        with np.load(layout.sample_path(paths["samples"], band, SIZE, "test", 0)) as d:
            data = {k: d[k] for k in d.files}
        _write_sample(paths["samples"], band, "test", data["images"], np.full_like(data["labels"], 45),
                      data["pgcIDs"], overwrite=True)
    poisoned = ev.evaluate_run(run, size=SIZE, bands=["g", "gri"], bias_fit_max=12, seed=5, progress=False)
    pd.testing.assert_frame_equal(poisoned.fits, result.fits)
    assert poisoned.metrics["all/median"]["rms_deg"] != result.metrics["all/median"]["rms_deg"]


def test_evaluate_run_refuses_a_model_of_another_size(tiny_run, tmp_path):
    run, _ = tiny_run
    other = tmp_path / "run"
    (other / "models").mkdir(parents=True)
    _tiny_model(0, size=48).save(other / "models" / layout.model_file_name("model4", 0))
    for sub in ("samples", "input"):
        (other / sub).symlink_to(run / sub)
    with pytest.raises(inference.InferenceError, match="48x48"):
        ev.evaluate_run(other, size=SIZE, bands=["g"], progress=False)
    with pytest.raises(FileNotFoundError, match="no trained models"):
        inference.find_models(tmp_path / "nothing")


def test_against_baseline_ratios_of_the_ensemble_rows():
    m = {"all/mean": {"rms_true_deg": 3.0, "mae_true_deg": 2.0, "rms_deg": 9.0, "mae_deg": 9.0},
         mt.AXIS_RATIO: {"rms_true_deg": 6.0, "mae_true_deg": 2.5, "rms_deg": 1.0, "mae_deg": 1.0}}
    t = mt.against_baseline(m, has_truth=True)
    assert list(t.index) == ["all/mean", mt.AXIS_RATIO]  # rows the run lacks are left out
    assert t.loc["all/mean", "rms_ratio"] == pytest.approx(0.5)
    assert t.loc["all/mean", "mae_ratio"] == pytest.approx(0.8)
    assert mt.against_baseline(m, has_truth=False).loc["all/mean", "rms_ratio"] == pytest.approx(9.0)


# ---- re-framed held-out galaxies (framing) -------------------------------------------

def _moments(gray_flux: np.ndarray) -> tuple[float, float, float, float]:
    """(x centroid, y centroid, major-axis rms, minor/major) of a flux image."""
    y, x = np.mgrid[0:gray_flux.shape[0], 0:gray_flux.shape[1]]
    gray_flux = np.clip(gray_flux, 0, None)  # noise below the sky carries no galaxy light
    w = gray_flux / gray_flux.sum()
    cx, cy = (w * x).sum(), (w * y).sum()
    cov = np.cov(np.stack([x.ravel() - cx, y.ravel() - cy]), aweights=w.ravel())
    lo, hi = np.linalg.eigvalsh(cov)
    return cx, cy, float(np.sqrt(hi)), float(np.sqrt(lo / hi))


def test_reframe_changes_the_framing_and_keeps_the_axis_ratio():
    from inclinet_utils import framing

    n = 64
    flux = oblate(60.0, n=n, rs=4.0, angle=0.0, centre=(0.0, 0.0))
    image = np.repeat(np.clip(10 + 230 * flux, 0, 255).astype(np.uint8)[None, ..., None], 3, axis=-1)
    before = _moments(image[0, ..., 0].astype(float) - 10)

    def after(f):
        out = framing.reframe(image, f, colour=True, seed=1)
        assert out.shape == image.shape and out.dtype == np.uint8
        return out, _moments(out[0, ..., 0].astype(float) - 10)

    _, small = after(framing.Framing("x", zoom=0.6))
    assert small[2] == pytest.approx(0.6 * before[2], rel=0.05)       # the galaxy shrinks by the zoom
    assert small[3] == pytest.approx(before[3], abs=0.03)             # its axis ratio does not change
    _, moved = after(framing.Framing("x", shift_frac=0.1))
    assert moved[0] - before[0] == pytest.approx(0.1 * n, abs=0.3)   # moved by 10% of the image in x and y
    assert moved[1] - before[1] == pytest.approx(0.1 * n, abs=0.3)
    coarse, _ = after(framing.Framing("x", pixel_factor=2))
    assert np.abs(np.diff(coarse[0, ..., 0].astype(float), axis=1)).max() < np.abs(
        np.diff(image[0, ..., 0].astype(float), axis=1)).max()      # smoother: no sharper step than before
    noisy, _ = after(framing.Framing("x", noise_sigma=6.0))
    sky = (noisy[0, :8, :8].astype(float) - image[0, :8, :8])
    assert sky.std() == pytest.approx(6.0, rel=0.2)
    gray = framing.reframe(image, framing.Framing("x", noise_sigma=6.0), colour=False, seed=1)
    assert (gray[..., 0] == gray[..., 2]).all()                      # grayscale stays one channel thrice
    faint, faint_shape = after(framing.Framing("x", brightness=0.5))
    light = lambda x: (x[0].astype(float) - 10).clip(0).sum()
    assert light(faint) == pytest.approx(0.5 * light(image), rel=0.03)   # half the light above the sky ...
    assert np.median(faint[0, :8, :8]) == pytest.approx(np.median(image[0, :8, :8]), abs=1)  # ... on the same sky
    assert faint_shape[3] == pytest.approx(before[3], abs=0.03)     # the same shape
    same, _ = after(framing.FRAMINGS[0])
    assert (same == image).all()


@pytest.mark.filterwarnings("ignore:bias correction not applied", "ignore:Polyfit")  # constant tiny models
def test_framing_table_repeats_06_for_the_prepared_images(tiny_run):
    from inclinet_utils import framing

    run, truth = tiny_run
    result = ev.evaluate_run(run, size=SIZE, bands=["g", "gri"], bias_fit_max=12, seed=5, progress=False,
                             axis_ratio_image="prepared", framing_check=True, flips=False)
    table = result.framing
    assert list(table["framing"].unique()) == [f.name for f in framing.FRAMINGS]
    assert "framing" in ev.make_figures(result, n_outliers=2)
    wide = framing.summary_table(table)  # what 06 and bench_accuracy show: one line per framing, in order
    assert list(wide.index) == [f.name for f in framing.FRAMINGS]
    assert wide[("rms_deg", "axis_ratio")].tolist() == table.query("estimator == 'axis_ratio'")["rms_deg"].tolist()
    assert set(table["estimator"]) == {"all/mean", "axis_ratio"} and (table["against"] == "truth").all()
    first = table.set_index(["framing", "estimator"]).loc[framing.FRAMINGS[0].name]
    for estimator in ("all/mean", "axis_ratio"):
        assert first.loc[estimator, "rms_deg"] == pytest.approx(result.metrics[estimator]["rms_true_deg"], rel=1e-4)  # float32 batches differ
    assert (table["n"] == 2 * truth["is_test"].sum()).all()
    # the ensemble against the axis-ratio method on the images where that method found a galaxy
    assert table.query("estimator == 'all/mean'")["rms_vs_axis_ratio"].notna().all()
    assert first.loc["all/mean", "rms_vs_axis_ratio"] == pytest.approx(
        first.loc["all/mean", "rms_deg"] / first.loc["axis_ratio", "rms_deg"], rel=1e-6)  # found in every image
