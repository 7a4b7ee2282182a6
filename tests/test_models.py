"""The three regressors: layer stacks as in the original, tanh output range, label scaling."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from inclinet_utils import models as M

L = keras.layers
# (layer type, width or parameter) after the Rescaling layer, in order.
EXPECTED = {
    "model4": [(L.Conv2D, 16), (L.Conv2D, 16), (L.MaxPooling2D, 2), (L.Dropout, 0.25),
               (L.Conv2D, 32), (L.Conv2D, 32), (L.BatchNormalization, None), (L.MaxPooling2D, 4),
               (L.Dropout, 0.25), (L.Flatten, None), (L.Dense, 256), (L.Dense, 32), (L.Dense, 8),
               (L.Dense, 1)],
    "model5": [(L.Conv2D, 128), (L.Conv2D, 128), (L.MaxPooling2D, 2), (L.Dropout, 0.25),
               (L.Conv2D, 256), (L.Conv2D, 256), (L.BatchNormalization, None), (L.MaxPooling2D, 4),
               (L.Dropout, 0.25), (L.Conv2D, 256), (L.Conv2D, 256), (L.BatchNormalization, None),
               (L.MaxPooling2D, 4), (L.Flatten, None), (L.Dense, 256), (L.Dense, 128), (L.Dense, 64),
               (L.Dense, 8), (L.Dense, 1)],
    "model6": [(L.Conv2D, 32), (L.Conv2D, 32), (L.MaxPooling2D, 2), (L.Dropout, 0.25),
               (L.Conv2D, 64), (L.Conv2D, 64), (L.BatchNormalization, None), (L.MaxPooling2D, 4),
               (L.Dropout, 0.25), (L.Flatten, None), (L.Dense, 128), (L.Dense, 64), (L.Dense, 8),
               (L.Dense, 1)],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_layer_stack(name):
    model = M.build_model(name, 32)
    assert model.input_shape == (None, 32, 32, 3)
    first, *rest = model.layers
    assert isinstance(first, L.Rescaling) and first.scale == pytest.approx(1 / 255)
    assert [type(layer) for layer in rest] == [t for t, _ in EXPECTED[name]]
    for layer, (kind, p) in zip(rest, EXPECTED[name]):
        if kind is L.Conv2D:
            assert (layer.filters, tuple(layer.kernel_size), layer.padding) == (p, (3, 3), "same")
            assert layer.activation is keras.activations.relu
        elif kind is L.MaxPooling2D:
            assert tuple(layer.pool_size) == (p, p)
        elif kind is L.Dropout:
            assert layer.rate == p
        elif kind is L.Dense:
            assert layer.units == p
            want = keras.activations.tanh if p == 1 else keras.activations.relu
            assert layer.activation is want
    assert model.output_shape == (None, 1)
    assert model.loss == "mse" and isinstance(model.optimizer, keras.optimizers.Adam)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_output_inside_tanh_range(name):
    model = M.build_model(name, 32)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(0, 256, (6, 32, 32, 3)), np.zeros((1, 32, 32, 3)),
                        np.full((1, 32, 32, 3), 255)]).astype(np.uint8)
    out = model.predict(x, verbose=0)
    assert out.shape == (8, 1) and np.all(np.isfinite(out))
    assert np.all(np.abs(out) < 1)


def test_raw_pixels_are_rescaled_inside_the_model():
    model = M.build_model("model4", 32, compile=False)
    rescaled = keras.Model(model.inputs[0], model.layers[0].output)(np.full((1, 32, 32, 3), 255, np.uint8))
    assert np.allclose(np.asarray(rescaled), 1.0)


def test_label_scaling_round_trip():
    inc = np.arange(45, 91)
    t = M.inclination_to_target(inc)
    assert t[0] == pytest.approx(-1) and t[-1] == pytest.approx(1)
    assert M.inclination_to_target(67.5) == pytest.approx(0)
    assert np.all(np.diff(t) > 0) and np.all(np.abs(t) <= 1)
    assert np.allclose(M.target_to_inclination(t), inc, atol=1e-4)
    assert M.target_to_inclination(0.5) == pytest.approx(78.75)


def test_sizes_and_errors():
    assert M.build_model("model5", 64).output_shape == (None, 1)
    assert M.build_model("model4", 128, padding="valid").layers[-4].input.shape[-1] == 6272  # original's flatten
    with pytest.raises(M.ModelError, match="model7"):
        M.build_model("model7", 32)
    with pytest.raises(M.ModelError, match="64x64"):
        M.build_model("model5", 64, padding="valid")  # the original's stack shrinks to nothing
    with pytest.raises(M.ModelError, match="bn_momentum"):
        M.build_model("model4", 32, bn_momentum=1.5)


def test_registry_takes_a_new_model_as_one_function():
    @M.register_model
    def tiny(size, padding="same", bn_momentum=M.BN_MOMENTUM):
        return M._sequential("tiny", size, [L.Flatten(), L.Dense(1, activation="tanh")])

    try:
        assert M.build_model("tiny", 32).count_params() == 32 * 32 * 3 + 1
    finally:
        del M.MODELS["tiny"]
    assert set(M.MODELS) == {"model4", "model5", "model6"}
