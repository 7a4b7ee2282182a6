"""Loading a run's models, batched prediction with test-time flips, and the bands a run trained on."""

from __future__ import annotations

import numpy as np
import pytest

from inclinet_utils import inference
from inclinet_utils import layout
from inclinet_utils.models import target_to_inclination

SIZE = 16


def _model(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(3, 3), keras.layers.Flatten(), keras.layers.Dense(1, activation="tanh"),
    ])


def test_flips_average_the_four_orientations_in_batches():
    model = _model(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, SIZE, SIZE, 3)).astype(np.uint8)
    x = images.astype(np.float32)
    views = [x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]]
    raw = [np.asarray(model(v, training=False)).ravel() for v in views]
    expected = np.clip(target_to_inclination(np.mean(raw, axis=0)), 0, 90)
    for batch_size in (4, 64):  # several batches, and one
        got = inference.predict_images(model, images, batch_size=batch_size, flips=True)
        np.testing.assert_allclose(got, expected, atol=1e-4)
    plain = inference.predict_images(model, images, flips=False)
    np.testing.assert_allclose(plain, np.clip(target_to_inclination(raw[0]), 0, 90), atol=1e-4)
    assert np.abs(plain - expected).max() > 1e-3  # a non-symmetric model: the flips change something
    # An image and its flips get the same flip-averaged inclination.
    np.testing.assert_allclose(inference.predict_images(model, images[:, ::-1]), expected, atol=1e-4)
    assert inference.predict_images(model, images[:0]).shape == (0,)


def _run_with(tmp_path, filters_by_uset: dict[int, list[str]]):
    run = tmp_path / "run"
    paths = layout.run_paths(run)
    paths["models"].mkdir(parents=True)
    for uset, codes in filters_by_uset.items():
        (paths["models"] / layout.model_file_name("model4", uset)).write_bytes(b"")  # names only
        folder = layout.uset_dir(paths["augmented"], uset)
        folder.mkdir(parents=True)
        for k, part in enumerate((codes[: len(codes) // 2 + 1], codes)):
            np.savez(folder / layout.batch_name(SIZE, k + 1), filter=np.array(part, dtype="<U1"),
                     labels=np.zeros(len(part)))
    return run


def test_trained_bands_come_from_the_augmented_filter_arrays_and_are_recorded(tmp_path):
    run = _run_with(tmp_path, {0: ["c", "c", "g"], 1: ["c", "c"]})
    by_model = inference.trained_bands(run)
    assert by_model == {"model4/Uset_000": ["g", "gri"], "model4/Uset_001": ["gri"]}
    path = inference.record_trained_bands(run)
    assert path.name == layout.TRAINED_BANDS and path.parent == run
    # The record wins over the augmented files, and is never overwritten.
    layout.run_paths(run)["augmented"].rename(run / "augmented_moved")
    assert inference.trained_bands(run) == by_model
    assert inference.record_trained_bands(run, {"model4/Uset_000": ["r"]}) == path
    assert inference.trained_bands(run) == by_model
    assert inference.check_bands(["gri", "g"], by_model, run) == ["g", "gri"]
    with pytest.raises(inference.InferenceError, match=r"band 'r'.*can measure g gri"):
        inference.check_bands(["gri", "r"], by_model, run)


def test_unknown_bands_are_not_recorded_and_not_checked(tmp_path, caplog):
    run = _run_with(tmp_path, {0: ["c"]})
    (layout.run_paths(run)["models"] / layout.model_file_name("model6", 2)).write_bytes(b"")
    by_model = inference.trained_bands(run)
    assert by_model == {"model4/Uset_000": ["gri"], "model6/Uset_002": []}
    with pytest.raises(inference.InferenceError, match="model6/Uset_002"):
        inference.record_trained_bands(run)
    assert inference.check_bands(["r"], {"model6/Uset_002": []}, run) == ["g", "r", "i", "gri"]
    assert "no trained bands" in caplog.text
    bad = layout.uset_dir(layout.run_paths(run)["augmented"], 0) / layout.batch_name(SIZE, 9)
    np.savez(bad, filter=np.array(["x"]))
    with pytest.raises(inference.InferenceError, match=r"filter codes \['x'\]"):
        inference.trained_bands(run)
