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
            hidden = keras.activations.leaky_relu if name == "model4" else keras.activations.relu
            assert layer.activation is (keras.activations.tanh if p == 1 else hidden)
    assert model.output_shape == (None, 1)
    assert model.loss == "mse" and isinstance(model.optimizer, keras.optimizers.Adam)


# The original's layer names (checkpoints and saved models refer to them).
NAMES = {
    "model4": "conv1 conv2 pool1 drop1 conv3 conv4 bn_2 pool2 drop2 flatten fc_2 fc_4 fc_5 fc_out2",
    "model5": "conv1 conv2 pool1 drop1 conv3 conv4 bn_2 pool2 drop2 conv5 conv6 bn_3 pool3 flatten "
              "fc_2 fc_3 fc_4 fc_5 fc_out2",
    "model6": "conv1 conv2 pool1 drop1 conv3 conv4 bn_2 pool2 drop2 flatten fc_3 fc_4 fc_5 fc_out2",
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_layer_names(name):
    model = M.build_model(name, 32, bn_momentum=0.9)
    assert model.name == name
    assert [layer.name for layer in model.layers] == ["rescale"] + NAMES[name].split()
    assert all(layer.momentum == 0.9 for layer in model.layers if isinstance(layer, L.BatchNormalization))


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
    assert t.dtype == np.float32
    assert t[0] == pytest.approx(M.TARGET_RANGE[0]) and t[-1] == pytest.approx(M.TARGET_RANGE[1])
    assert M.inclination_to_target(67.5) == pytest.approx(sum(M.TARGET_RANGE) / 2)
    assert np.all(np.diff(t) > 0)
    assert np.allclose(np.diff(t), 1 / M.DEG_PER_TARGET)
    assert np.allclose(M.target_to_inclination(t), inc, atol=1e-4)
    assert M.DEG_PER_TARGET * (M.TARGET_RANGE[1] - M.TARGET_RANGE[0]) == pytest.approx(45)


def test_target_range_margin_keeps_the_edges_off_tanh_saturation(monkeypatch):
    monkeypatch.setattr(M, "TARGET_RANGE", (-0.8, 0.8))
    monkeypatch.setattr(M, "DEG_PER_TARGET", 45 / 1.6)
    assert M.inclination_to_target([45, 67.5, 90]) == pytest.approx([-0.8, 0.0, 0.8])
    assert M.target_to_inclination(0.4) == pytest.approx(78.75)
    assert M.target_to_inclination(M.inclination_to_target(52.0)) == pytest.approx(52.0)
    monkeypatch.setattr(M, "TARGET_RANGE", (0.0, 2.0))
    with pytest.raises(M.ModelError, match="TARGET_RANGE"):
        M.build_model("model4", 32)  # 90 deg would be out of tanh's reach
    assert M.build_model("model4", 32, output_activation="linear").layers[-1].activation \
        is keras.activations.linear


def test_linear_output_is_unbounded_and_float32_under_mixed_precision():
    model = M.build_model("model6", 32, output_activation="linear", mixed_precision="mixed_bfloat16")
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the build
    out_layer = model.layers[-1]
    assert out_layer.activation is keras.activations.linear
    assert out_layer.dtype_policy.name == "float32" and out_layer.compute_dtype == "float32"
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.get_layer("conv1").kernel.dtype == "float32"  # variables stay float32
    x = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    out = model.predict(x, verbose=0)
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    # a linear output can leave the tanh range: shift the output layer's bias up
    w, b = out_layer.get_weights()
    out_layer.set_weights([w, b + 5.0])
    assert np.all(model.predict(x, verbose=0) > 1)
    with pytest.raises(M.ModelError, match="mixed_precision"):
        M.build_model("model4", 32, mixed_precision="float16")
    with pytest.raises(M.ModelError, match="output_activation"):
        M.build_model("model4", 32, output_activation="sigmoid")


def test_mixed_float16_scales_the_loss():
    model = M.build_model("model4", 32, mixed_precision="mixed_float16")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.get_layer("fc_2").compute_dtype == "float16"


def test_sizes_and_errors():
    assert M.build_model("model5", 64).output_shape == (None, 1)
    assert M.build_model("model4", 128, padding="valid").layers[-4].input.shape[-1] == 6272  # original's flatten
    with pytest.raises(M.ModelError, match="model7"):
        M.build_model("model7", 32)
    with pytest.raises(M.ModelError, match="64x64"):
        M.build_model("model5", 64, padding="valid")  # the original's stack shrinks to nothing
    with pytest.raises(M.ModelError, match="bn_momentum"):
        M.build_model("model4", 32, bn_momentum=1.5)


def test_registry_takes_a_new_model_as_one_spec():
    spec = M.ModelSpec(blocks=(M.ConvBlock(4, 4, batch_norm=True, dropout=0.0),), dense=(("fc_1", 3),))
    M.register_model("tiny", spec)
    try:
        model = M.build_model("tiny", 32)
        assert [layer.name for layer in model.layers] == [
            "rescale", "conv1", "conv2", "bn_1", "pool1", "flatten", "fc_1", "fc_out2"]
        # convs 3*3*3*4+4 and 3*3*4*4+4, BN 4*4, dense 8*8*4*3+3, output 3+1
        assert model.count_params() == 112 + 148 + 16 + 771 + 4
    finally:
        del M.MODELS["tiny"]
    assert set(M.MODELS) == {"model4", "model5", "model6", "model4_binary", "model5_binary", "model6_binary"}
    with pytest.raises(M.ModelError, match="ModelSpec"):
        M.register_model("bad", lambda size: None)


def test_mixed_precision_auto_follows_the_hardware(tmp_path):
    from inclinet_utils.models import fast_bfloat16_cpu, resolve_mixed_precision

    with_bf16 = tmp_path / "bf16"
    with_bf16.write_text("flags\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    plain = tmp_path / "plain"
    plain.write_text("flags\t: fpu sse2 avx2\n")
    avx512_only = tmp_path / "avx512_bf16"  # slower in bfloat16 than float32 without AMX
    avx512_only.write_text("flags\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert fast_bfloat16_cpu(str(with_bf16)) and not fast_bfloat16_cpu(str(plain))
    assert not fast_bfloat16_cpu(str(avx512_only))
    assert not fast_bfloat16_cpu(str(tmp_path / "absent"))
    assert resolve_mixed_precision("float32") is None and resolve_mixed_precision(None) is None
    assert resolve_mixed_precision("mixed_float16") == "mixed_float16"
    assert resolve_mixed_precision("auto") in (None, "mixed_bfloat16")
