"""The CNN regressors (model4, model5, model6), their accept/reject classifiers, and the label scaling.

Each model is a block specification (`ModelSpec`: convolution blocks, then a dense
head) in the registry MODELS; the one builder `build_from_spec` turns any spec into a
Keras model, `build_model` builds and compiles a registered one (Adam, mse). This is
also the one place where inclinations in degrees (45-90) are mapped to network
targets and back (`TARGET_RANGE`). Every model starts with `Rescaling(1/255)`, so
callers always feed raw 0-255 pixels. Keras is imported on first use, so the scaling
constants are cheap to import (the plots use them).

The classifiers ``model4_binary``, ``model5_binary``, ``model6_binary`` are the same
specs with one sigmoid output (the probability that a human rejects the image: label
1 = 'F' or '0', 0 = accepted >= 45 deg), compiled with binary cross-entropy and an AUC
metric; `is_classifier` tells the two families apart by name, `training_targets` maps
either family's labels to its network targets.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

INC_MIN_DEG = 45.0  # usable inclinations are 45-90 deg
INC_SPAN_DEG = 45.0
# Network targets of 45 and 90 degrees. (-1, 1) is the original's mapping; a margin,
# e.g. (-0.9, 0.9), keeps the edges of the range off the tanh output's saturation.
TARGET_RANGE = (-0.8, 0.8)
DEG_PER_TARGET = INC_SPAN_DEG / (TARGET_RANGE[1] - TARGET_RANGE[0])  # 22.5 deg per target unit

BN_MOMENTUM = 0.99  # Keras' and the original's BatchNormalization default
OUTPUT_ACTIVATIONS = ("tanh", "linear")
CLASSIFIER_ACTIVATION = "sigmoid"
MIXED_PRECISION = (None, "mixed_bfloat16", "mixed_float16")


class ModelError(ValueError):
    """An unknown model name, a bad build option, or an image size the model cannot take."""


# ---- label scaling ------------------------------------------------------------

def inclination_to_target(inc_deg):
    """Inclination in degrees (45-90) -> network target, linearly onto TARGET_RANGE."""
    return (TARGET_RANGE[0] + (np.asarray(inc_deg, dtype=np.float32) - INC_MIN_DEG) / DEG_PER_TARGET
            ).astype(np.float32)


def target_to_inclination(t):
    """Inverse of `inclination_to_target`: network output -> inclination in degrees."""
    return ((np.asarray(t, dtype=np.float32) - TARGET_RANGE[0]) * DEG_PER_TARGET + INC_MIN_DEG
            ).astype(np.float32)


# ---- block specifications -------------------------------------------------------

@dataclass(frozen=True)
class ConvBlock:
    """Two 3x3 ReLU convolutions, an optional BatchNorm, max-pooling, an optional Dropout.

    Layers of the k-th block (1-based) are named conv<2k-1>, conv<2k>, bn_<k>, pool<k>, drop<k>.
    """

    filters: int
    pool: int
    batch_norm: bool = False
    dropout: float = 0.25  # 0: no Dropout layer


@dataclass(frozen=True)
class ModelSpec:
    """Convolution blocks, then Flatten, dense layers (name, width) and one output unit."""

    blocks: tuple[ConvBlock, ...]
    dense: tuple[tuple[str, int], ...]
    dense_activation: str = "relu"  # Keras activation of the dense layers


# model4's head narrows to 8 units; with ReLU most of them die in a laptop training and the
# seed-to-seed scatter grows (benchmarks/ACCURACY.md, eighth session): LeakyReLU keeps them
# passing gradient. Same layer names and shapes, so the original's weights still load.
MODELS: dict[str, ModelSpec] = {
    "model4": ModelSpec(blocks=(ConvBlock(16, 2), ConvBlock(32, 4, batch_norm=True)),
                        dense=(("fc_2", 256), ("fc_4", 32), ("fc_5", 8)), dense_activation="leaky_relu"),
    "model5": ModelSpec(blocks=(ConvBlock(128, 2), ConvBlock(256, 4, batch_norm=True),
                                ConvBlock(256, 4, batch_norm=True, dropout=0.0)),
                        dense=(("fc_2", 256), ("fc_3", 128), ("fc_4", 64), ("fc_5", 8))),
    "model6": ModelSpec(blocks=(ConvBlock(32, 2), ConvBlock(64, 4, batch_norm=True)),
                        dense=(("fc_3", 128), ("fc_4", 64), ("fc_5", 8))),
}


def _binary(name: str) -> str:
    from .layout import binary_name

    return binary_name(name)


# The accept/reject classifiers: the regressors' stacks (same spec objects), sigmoid output.
MODELS.update({_binary(name): MODELS[name] for name in ("model4", "model5", "model6")})


def is_classifier(name: str) -> bool:
    """Whether `name` is an accept/reject classifier (its name carries layout.BINARY)."""
    from .layout import is_binary

    return is_binary(name)


def training_targets(name: str, labels):
    """Network targets of model `name` for its labels: inclinations -> TARGET_RANGE, or 0/1 as float32."""
    if is_classifier(name):
        return np.asarray(labels, dtype=np.float32)
    return inclination_to_target(labels)


def register_model(name: str, spec: ModelSpec) -> ModelSpec:
    """Add a model to MODELS: from then on `build_model(name, ...)` and the stages know it."""
    if not isinstance(spec, ModelSpec):
        raise ModelError(f"model {name!r}: expected a ModelSpec, got {type(spec).__name__}")
    MODELS[name] = spec
    return spec


def _block_layers(k: int, block: ConvBlock, padding: str, bn_momentum: float) -> list:
    import keras

    L = keras.layers
    layers = [L.Conv2D(block.filters, (3, 3), activation="relu", padding=padding, name=f"conv{2 * k - 1}"),
              L.Conv2D(block.filters, (3, 3), activation="relu", padding=padding, name=f"conv{2 * k}")]
    if block.batch_norm:
        layers.append(L.BatchNormalization(axis=3, momentum=bn_momentum, name=f"bn_{k}"))
    layers.append(L.MaxPooling2D((block.pool, block.pool), name=f"pool{k}"))
    if block.dropout:
        layers.append(L.Dropout(block.dropout, name=f"drop{k}"))
    return layers


def build_from_spec(name: str, spec: ModelSpec, size: int, padding: str = "same",
                    bn_momentum: float = BN_MOMENTUM, output_activation: str = "tanh"):
    """The Keras Sequential model of a spec for (size, size, 3) raw-pixel input, uncompiled.

    Under a mixed-precision policy the output layer stays float32 (Keras' advice), so
    the regression output and the loss keep full precision.
    """
    import keras

    L = keras.layers
    layers = [keras.Input(shape=(size, size, 3), name="image"), L.Rescaling(1.0 / 255, name="rescale")]
    for k, block in enumerate(spec.blocks, start=1):
        layers += _block_layers(k, block, padding, bn_momentum)
    layers.append(L.Flatten(name="flatten"))
    layers += [L.Dense(width, activation=spec.dense_activation, name=n) for n, width in spec.dense]
    layers.append(L.Dense(1, activation=output_activation, dtype="float32", name="fc_out2"))
    return keras.Sequential(layers, name=name)


# ---- build / compile ----------------------------------------------------------

def compile_model(model, learning_rate=1e-3, classifier: bool = False):
    """Adam + mse loss, metrics named 'mse' and 'mae' (the original's evalDict names).

    `learning_rate`: a number or a keras LearningRateSchedule. classifier=True: binary
    cross-entropy loss, metrics 'mse' (Brier score), 'mae', 'auc' and 'accuracy'.
    """
    import keras

    if classifier:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                      loss=keras.losses.BinaryCrossentropy(),
                      metrics=[keras.metrics.MeanSquaredError(name="mse"),
                               keras.metrics.MeanAbsoluteError(name="mae"),
                               keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")])
        return model
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="mse",
        metrics=[keras.metrics.MeanSquaredError(name="mse"),
                 keras.metrics.MeanAbsoluteError(name="mae")],
    )
    return model


def fast_bfloat16_cpu(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has AMX bfloat16 tiles, where oneDNN trains faster in bfloat16 than float32.

    AVX512-BF16 alone is not enough: on a 2-core Xeon with AVX512-BF16 and no AMX, model4 at
    128 px trained at 58 img/s in bfloat16 against 108 in float32 (benchmarks/ACCURACY.md).
    """
    try:
        flags = open(cpuinfo).read()
    except OSError:
        return False
    return " amx_bf16" in flags


def resolve_mixed_precision(choice: str | None) -> str | None:
    """'auto' -> the policy this machine runs fastest at the same accuracy; 'float32' -> None.

    bfloat16 on GPUs and on CPUs with AMX (on model4 at 128 px the accuracy is
    the same as float32, benchmarks/ACCURACY.md), else float32 (None). bfloat16 rather than
    float16 on GPUs: no loss scaling needed, and the Ampere-and-later GPUs run it as fast.
    """
    if choice in (None, "float32"):
        return None
    if choice != "auto":
        return choice
    if accelerator_present() or fast_bfloat16_cpu():
        return "mixed_bfloat16"
    return None


def tensorflow_backend() -> bool:
    """Whether Keras runs on TensorFlow (the default) rather than JAX or PyTorch."""
    import keras

    return keras.backend.backend() == "tensorflow"


def backend_devices() -> list[tuple[str, str]]:
    """(kind 'cpu' / 'gpu', name) of every device Keras' backend sees (TensorFlow, JAX or PyTorch)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax
        return [(d.platform, str(d)) for d in jax.devices()]
    if keras.backend.backend() == "torch":
        import torch
        gpus = [("gpu", torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]
        return gpus or [("cpu", "cpu")]
    import tensorflow as tf
    return [(d.device_type.lower(), d.name) for d in tf.config.list_physical_devices()]


def accelerator_present() -> bool:
    """Whether Keras' backend sees a GPU."""
    return any(kind == "gpu" for kind, _ in backend_devices())


@contextlib.contextmanager
def dtype_policy(mixed_precision: str | None):
    """Set Keras' global dtype policy (None: float32) for the block, then restore the previous one."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(mixed_precision or "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def check_build_options(name: str, size, padding: str = "same", bn_momentum: float = BN_MOMENTUM,
                        output_activation: str = "tanh", mixed_precision: str | None = None) -> None:
    """Raise ModelError naming the first option `build_model` cannot use."""
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    if isinstance(size, bool) or int(size) != size or size < 16:
        raise ModelError(f"image size {size!r} for {name}: expected an integer >= 16 pixels")
    if not 0.0 <= bn_momentum < 1.0:
        raise ModelError(f"bn_momentum {bn_momentum!r}: expected a number in [0, 1)")
    if padding not in ("same", "valid"):
        raise ModelError(f"padding {padding!r}: expected 'same' or 'valid'")
    if output_activation not in OUTPUT_ACTIVATIONS and not is_classifier(name):
        raise ModelError(f"output_activation {output_activation!r}: expected one of {OUTPUT_ACTIVATIONS}")
    if output_activation == "tanh" and not is_classifier(name) and max(abs(t) for t in TARGET_RANGE) > 1:
        raise ModelError(f"TARGET_RANGE {TARGET_RANGE} lies outside the tanh output range (-1, 1); "
                         "use output_activation='linear' or a narrower range")
    if mixed_precision not in MIXED_PRECISION:
        raise ModelError(f"mixed_precision {mixed_precision!r}: expected one of {MIXED_PRECISION}")


def build_model(name: str, size: int, learning_rate=1e-3, compile: bool = True,
                padding: str = "same", bn_momentum: float = BN_MOMENTUM,
                output_activation: str = "tanh", mixed_precision: str | None = None):
    """Build the registered model `name` for (size, size, 3) uint8-range input, compiled.

    padding="same" (default) keeps every model valid down to 32 px; padding="valid"
    is Keras' default that the original TFmodels.py used (model5 then needs >= 76 px).
    bn_momentum: BatchNormalization moving-average momentum. The default 0.99 needs a
    few hundred updates before the inference-time statistics settle; short runs
    (laptop scale) use 0.9. output_activation: 'tanh' (the original) or 'linear'.
    mixed_precision: None (float32), 'mixed_bfloat16' or 'mixed_float16' (Keras then
    scales the loss itself); the output layer stays float32. A classifier
    (`is_classifier`) always gets the sigmoid output and the binary loss.
    """
    check_build_options(name, size, padding, bn_momentum, output_activation, mixed_precision)
    classifier = is_classifier(name)
    with dtype_policy(mixed_precision):
        try:
            model = build_from_spec(name, MODELS[name], int(size), padding, float(bn_momentum),
                                    CLASSIFIER_ACTIVATION if classifier else output_activation)
        except ValueError as exc:  # a stack that shrinks the image to nothing
            raise ModelError(f"{name} cannot take {size}x{size} images with padding={padding!r}: {exc}") from exc
        return compile_model(model, learning_rate, classifier) if compile else model
