"""The CNN regressors (model4, model5, model6) and the label scaling they are trained on.

Owns the registry MODELS (name -> builder), `build_model`, the optimizer/loss/metric
choice (`compile_model`) and the one place where inclinations in degrees (45-90) are
mapped to the tanh output range and back. Every model starts with
`Rescaling(1/255)`, so callers always feed raw 0-255 pixels.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np

INC_MIN_DEG = 45.0  # usable inclinations are 45-90 deg
INC_SPAN_DEG = 45.0
DEG_PER_TARGET = INC_SPAN_DEG / 2.0  # d(inclination)/d(target): 22.5 deg per tanh unit

MODELS: dict[str, Callable[..., keras.Model]] = {}


class ModelError(ValueError):
    """An unknown model name or an image size the model cannot take."""


BN_MOMENTUM = 0.99  # Keras' and the original's BatchNormalization default


def register_model(fn: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
    """Add a builder `fn(size, padding="same", bn_momentum=BN_MOMENTUM) -> keras.Model` to MODELS."""
    MODELS[fn.__name__] = fn
    return fn


# ---- label scaling ------------------------------------------------------------

def inclination_to_target(inc_deg):
    """Inclination in degrees (45-90) -> network target in [-1, 1]: 2*(inc-45)/45 - 1."""
    return 2.0 * (np.asarray(inc_deg, dtype=np.float32) - INC_MIN_DEG) / INC_SPAN_DEG - 1.0


def target_to_inclination(t):
    """Inverse of `inclination_to_target`: network output -> inclination in degrees."""
    return (np.asarray(t, dtype=np.float32) + 1.0) * INC_SPAN_DEG / 2.0 + INC_MIN_DEG


# ---- layer stacks -------------------------------------------------------------

def _conv(n: int, name: str, padding: str) -> keras.layers.Layer:
    return keras.layers.Conv2D(n, (3, 3), activation="relu", padding=padding, name=name)


def _head(widths: tuple[int, ...], names: tuple[str, ...]) -> list[keras.layers.Layer]:
    layers: list[keras.layers.Layer] = [keras.layers.Flatten(name="flatten")]
    layers += [keras.layers.Dense(w, activation="relu", name=n) for w, n in zip(widths, names)]
    layers.append(keras.layers.Dense(1, activation="tanh", name="fc_out2"))
    return layers


def _bn(name: str, momentum: float) -> keras.layers.Layer:
    return keras.layers.BatchNormalization(axis=3, momentum=momentum, name=name)


def _sequential(name: str, size: int, layers: list[keras.layers.Layer]) -> keras.Model:
    model = keras.Sequential(
        [keras.Input(shape=(size, size, 3), name="image"),
         keras.layers.Rescaling(1.0 / 255, name="rescale")] + layers,
        name=name,
    )
    return model


@register_model
def model4(size: int, padding: str = "same", bn_momentum: float = BN_MOMENTUM) -> keras.Model:
    """Conv 16,16 - MaxPool 2 - Dropout - Conv 32,32 - BN - MaxPool 4 - Dropout - Dense 256,32,8 - tanh."""
    return _sequential("model4", size, [
        _conv(16, "conv1", padding), _conv(16, "conv2", padding),
        keras.layers.MaxPooling2D((2, 2), name="pool1"), keras.layers.Dropout(0.25, name="drop1"),
        _conv(32, "conv3", padding), _conv(32, "conv4", padding),
        _bn("bn_2", bn_momentum),
        keras.layers.MaxPooling2D((4, 4), name="pool2"), keras.layers.Dropout(0.25, name="drop2"),
        *_head((256, 32, 8), ("fc_2", "fc_4", "fc_5")),
    ])


@register_model
def model5(size: int, padding: str = "same", bn_momentum: float = BN_MOMENTUM) -> keras.Model:
    """Conv 128,128 - MP2 - Drop - Conv 256,256 - BN - MP4 - Drop - Conv 256,256 - BN - MP4 - Dense 256,128,64,8 - tanh."""
    return _sequential("model5", size, [
        _conv(128, "conv1", padding), _conv(128, "conv2", padding),
        keras.layers.MaxPooling2D((2, 2), name="pool1"), keras.layers.Dropout(0.25, name="drop1"),
        _conv(256, "conv3", padding), _conv(256, "conv4", padding),
        _bn("bn_2", bn_momentum),
        keras.layers.MaxPooling2D((4, 4), name="pool2"), keras.layers.Dropout(0.25, name="drop2"),
        _conv(256, "conv5", padding), _conv(256, "conv6", padding),
        _bn("bn_3", bn_momentum),
        keras.layers.MaxPooling2D((4, 4), name="pool3"),
        *_head((256, 128, 64, 8), ("fc_2", "fc_3", "fc_4", "fc_5")),
    ])


@register_model
def model6(size: int, padding: str = "same", bn_momentum: float = BN_MOMENTUM) -> keras.Model:
    """Conv 32,32 - MaxPool 2 - Dropout - Conv 64,64 - BN - MaxPool 4 - Dropout - Dense 128,64,8 - tanh."""
    return _sequential("model6", size, [
        _conv(32, "conv1", padding), _conv(32, "conv2", padding),
        keras.layers.MaxPooling2D((2, 2), name="pool1"), keras.layers.Dropout(0.25, name="drop1"),
        _conv(64, "conv3", padding), _conv(64, "conv4", padding),
        _bn("bn_2", bn_momentum),
        keras.layers.MaxPooling2D((4, 4), name="pool2"), keras.layers.Dropout(0.25, name="drop2"),
        *_head((128, 64, 8), ("fc_3", "fc_4", "fc_5")),
    ])


# ---- build / compile ----------------------------------------------------------

def compile_model(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    """Adam + mse loss, metrics named 'mse' and 'mae' (the original's evalDict names)."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="mse",
        metrics=[keras.metrics.MeanSquaredError(name="mse"),
                 keras.metrics.MeanAbsoluteError(name="mae")],
    )
    return model


def build_model(name: str, size: int, learning_rate: float = 1e-3, compile: bool = True,
                padding: str = "same", bn_momentum: float = BN_MOMENTUM) -> keras.Model:
    """Build the registered model `name` for (size, size, 3) uint8-range input, compiled.

    padding="same" (default) keeps every model valid down to 32 px; padding="valid"
    is Keras' default that the original TFmodels.py used (model5 then needs >= 76 px).
    bn_momentum: BatchNormalization moving-average momentum. The default 0.99 needs a
    few hundred updates before the inference-time statistics settle; short runs
    (laptop scale) use 0.9.
    """
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    if int(size) != size or size < 16:
        raise ModelError(f"image size {size!r} for {name}: expected an integer >= 16 pixels")
    if not 0.0 <= bn_momentum < 1.0:
        raise ModelError(f"bn_momentum {bn_momentum!r}: expected a number in [0, 1)")
    if padding not in ("same", "valid"):
        raise ModelError(f"padding {padding!r}: expected 'same' or 'valid'")
    try:
        model = MODELS[name](int(size), padding=padding, bn_momentum=float(bn_momentum))
    except ValueError as exc:  # a stack that shrinks the image to nothing
        raise ModelError(f"{name} cannot take {size}x{size} images with padding={padding!r}: {exc}") from exc
    return compile_model(model, learning_rate) if compile else model
