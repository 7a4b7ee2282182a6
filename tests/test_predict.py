"""Prediction for users: the Python API and the CLI on real SDSS images with a tiny run,
preparation identical to stages 01-02, and clear errors for bad files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from inclinet_utils import inference, layout, predict
from inclinet_utils.images import ImageReadError, load_prepared
from inclinet_utils.models import target_to_inclination

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
MODELS = [("model4", 0), ("model4", 1), ("model6", 0)]


def _tiny_trained_model(name: str, seed: int):
    """The real architecture at 32 px, trained for one short epoch on random images."""
    import keras

    from inclinet_utils.models import build_model

    keras.utils.set_random_seed(seed)
    model = build_model(name, SIZE)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (16, SIZE, SIZE, 3)).astype(np.float32)
    model.fit(x, rng.uniform(-1, 1, (16, 1)), epochs=1, batch_size=8, verbose=0)
    return model


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("predict") / "run"
    (run / "models").mkdir(parents=True)
    for k, (model, uset) in enumerate(MODELS):
        _tiny_trained_model(model, k).save(run / "models" / layout.model_file_name(model, uset))
    _record_bands(run, ["g", "r", "i", "gri"])
    return run


def _record_bands(run, bands):
    """The run's trained_bands.json, as stage 06 records it from the augmented `filter` arrays."""
    return inference.record_trained_bands(run, {layout.model_row(*m): list(bands) for m in MODELS})


@pytest.fixture(scope="module")
def colour_only_run(tiny_run, tmp_path_factory):
    """The same models, recorded as trained on colour composites only (a --band gri run)."""
    run = tmp_path_factory.mktemp("colour_only") / "run"
    run.mkdir()
    (run / "models").symlink_to(tiny_run / "models")
    _record_bands(run, ["gri"])
    return run


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "inclinet_utils.predict", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_cli_predicts_real_sdss_images(tiny_run, real_sdss):  # skipped without ../shared/real_sdss
    gal = real_sdss / "galaxies"
    files = [gal / "pgc2148_d25x2_rot_r.png", gal / "pgc676_d25x2_rot_g.png",  # 676 is gray + alpha
             gal / "pgc44182_d25x2_rot_gri.sdss.jpg"]
    proc = _cli(*files, "--run", tiny_run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert all(name in lines[0] for name in ("inclination_deg", "spread_deg", "model4/Uset_000", "model6/Uset_000"))
    assert len(lines) == 1 + len(files)

    table = predict.predict_inclinations(files, tiny_run)
    assert list(table["band"]) == ["r", "g", "gri"] and list(table["pgc"]) == [2148, 676, 44182]
    for line, (_, row) in zip(lines[1:], table.iterrows()):
        assert line.split()[0] == Path(row["path"]).name
        assert float(line.split()[3]) == pytest.approx(row["inclination_deg"], abs=0.051)

    # Each per-model value is that model applied to the image exactly as stages 01-02 prepare it
    # (stored orientation, JPEG round trip, gray repeated into 3 channels), ensemble = median, spread = std.
    import keras

    per_model = np.column_stack([table[layout.model_row(*m)] for m in MODELS])
    for k, m in enumerate(MODELS):
        model = keras.saving.load_model(tiny_run / "models" / layout.model_file_name(*m))
        batch = np.stack([load_prepared(f, b, SIZE) for f, b in zip(files, ["r", "g", "gri"])]).astype(np.float32)
        flips = [batch, batch[:, :, ::-1], batch[:, ::-1], batch[:, ::-1, ::-1]]  # test-time flips, averaged
        expected = target_to_inclination(np.mean([np.asarray(model(v)).ravel() for v in flips], axis=0))
        np.testing.assert_allclose(per_model[:, k], expected, atol=1e-3)
    np.testing.assert_allclose(table["inclination_deg"], np.median(per_model, axis=1))
    np.testing.assert_allclose(table["spread_deg"], per_model.std(axis=1, ddof=1), rtol=1e-6)
    assert per_model.std() > 0  # the models really differ, so the checks above can fail


def test_cli_errors_clearly_on_bad_paths(tiny_run, tmp_path):
    missing = tmp_path / "pgc1_d25x2_rot_g.png"
    proc = _cli(missing, "--run", tiny_run)
    assert proc.returncode != 0 and str(missing) in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr

    text = tmp_path / "pgc2_d25x2_rot_r.png"
    text.write_text("not an image")
    proc = _cli(text, "--run", tiny_run)
    assert proc.returncode != 0 and str(text) in proc.stderr and "not a readable image" in proc.stderr

    good = tmp_path / "pgc3_d25x2_rot_i.png"
    Image.fromarray(np.full((40, 40), 230, np.uint8), "L").save(good)
    proc = _cli(good, "--run", tmp_path / "no_such_run")
    assert proc.returncode != 0 and "no_such_run" in proc.stderr


def test_api_errors_name_the_file(tiny_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.jpg"):
        predict.predict_inclinations([tmp_path / "nothere.jpg"], tiny_run)
    odd = tmp_path / "pgc4_d25x2_rot_g.png"
    Image.fromarray(np.full((40, 30), 230, np.uint8), "L").save(odd)
    with pytest.raises(ImageReadError, match="pgc4_d25x2_rot_g.png"):
        predict.predict_inclinations([odd], tiny_run)
    with pytest.raises(FileNotFoundError, match="no trained models"):
        good = tmp_path / "pgc5_d25x2_rot_g.png"
        Image.fromarray(np.full((40, 40), 230, np.uint8), "L").save(good)
        predict.predict_inclinations([good], tmp_path)


def test_band_is_inferred_from_the_file_name_or_mode(tmp_path):
    assert predict.infer_band("x/pgc1_d25x2_rot_g.png") == "g"
    assert predict.infer_band("x/pgc1_d25x2_rot_I.PNG") == "i"
    assert predict.infer_band("x/pgc1_d25x2_rot_gri.sdss.jpg") == "gri"
    gray_alpha = tmp_path / "galaxy.png"
    Image.fromarray(np.zeros((8, 8, 2), np.uint8), "LA").save(gray_alpha)
    colour = tmp_path / "colour.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8), "RGB").save(colour)
    assert predict.infer_band(gray_alpha) == "r" and predict.infer_band(colour) == "gri"


def test_compare_with_catalog_joins_labels_and_summarises(tiny_run, real_sdss):
    table, summary = predict.compare_with_catalog(real_sdss / "galaxies", real_sdss / "catalogs" / "catalog.csv",
                                                  tiny_run)
    assert len(table) == len(list((real_sdss / "galaxies").iterdir()))
    assert table.set_index(["pgc", "file"]).loc[(44182, "gri.sdss.jpg"), "label"] == "61"
    usable = table[pd.to_numeric(table["label"], errors="coerce") >= 45]
    assert summary["n"] == len(usable) == 5 * 4 + 4  # 5 usable galaxies; pgc676 has no .sdss.jpg
    delta = usable["label"].astype(float) - usable["inclination_deg"]
    assert summary["rms_deg"] == pytest.approx(float(np.sqrt((delta ** 2).mean())), rel=1e-6)


def test_a_gray_image_is_refused_by_a_colour_only_run_naming_the_band(colour_only_run, tmp_path):
    gray = tmp_path / "pgc7_d25x2_rot_g.png"
    Image.fromarray(np.full((40, 40), 230, np.uint8), "L").save(gray)
    with pytest.raises(inference.InferenceError, match=r"band 'g'.*can measure gri$"):
        predict.predict_inclinations([gray], colour_only_run)
    unnamed = tmp_path / "galaxy.png"  # a grayscale file without a band suffix counts as r
    Image.fromarray(np.full((40, 40), 230, np.uint8), "L").save(unnamed)
    with pytest.raises(inference.InferenceError, match="band 'r'"):
        predict.predict_inclinations([unnamed], colour_only_run)
    proc = _cli(gray, "--run", colour_only_run)
    assert proc.returncode != 0 and "band 'g'" in proc.stderr and "can measure gri" in proc.stderr
    assert "Traceback" not in proc.stderr
    colour = tmp_path / "pgc8_d25x2_rot_gri.jpg"
    Image.fromarray(np.full((40, 40, 3), 20, np.uint8), "RGB").save(colour)
    table = predict.predict_inclinations([colour], colour_only_run)
    assert list(table["band"]) == ["gri"] and np.isfinite(table["inclination_deg"]).all()


def test_compare_with_catalog_keeps_to_the_bands_the_run_trained_on(colour_only_run, real_sdss):
    table, summary = predict.compare_with_catalog(real_sdss / "galaxies", real_sdss / "catalogs" / "catalog.csv",
                                                  colour_only_run)
    assert set(table["band"]) == {"gri"} and summary["skipped_bands"] == ["g", "i", "r"]
    assert summary["n"] == 5 + 4  # the usable galaxies' .sdss.jpg and .jpg composites (pgc676: .jpg only)
