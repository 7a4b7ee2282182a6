"""The networks on whatever accelerator Keras sees: training and inference throughput per
mixed-precision policy, and whether bfloat16 learns as well as float32.

    python benchmarks/bench_accelerator.py [--models model4 model5 model6] [--size 128]
        [--policies float32 mixed_bfloat16 mixed_float16] [--batch 64] [--n-images 4096]
        [--learn-images 6144] [--learn-epochs 6] [--learn-seeds 2] [--out FILE.json]
    KERAS_BACKEND=jax python benchmarks/bench_accelerator.py   # a machine with jax and no TensorFlow

It builds every model with `models.build_model` (the stage's own builder and compile:
Adam, mse, tanh output in float32) and, for each policy,
  * trains it with `model.fit` on in-memory random pixels, timed epoch end to epoch end
    after a first (compiling) epoch: training images/s at `--batch`;
  * predicts in batches of 256: inference images/s (what `predict` pays per view);
  * learns, from `--learn-seeds` initial weights and with stage 05's learning-rate schedule,
    a small task with a known answer (Gaussian disks whose axis ratio follows Hubble's relation
    with q0 = 0.2) and reports the validation MAE in degrees, so a policy that is fast but
    learns worse shows.
Then the time the production preset's twelve regressor trainings would take at the
fastest measured rate (`presets.PRESETS['production']`), compute only (stage 04's
augmentation and the file reads are not in it).
Model code is plain Keras 3, so this runs under any backend, as stage 05 does (stage 04's
augmentation and `MirroredStrategy` need TensorFlow). Figures: benchmarks/ACCELERATOR.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inclinet_utils import models as M  # noqa: E402
from inclinet_utils.axis_ratio import axis_ratio_from_inclination  # noqa: E402
from inclinet_utils.presets import PRESETS  # noqa: E402


def train_rate(model, x, y, batch: int, epochs: int = 3) -> float:
    """Steady training images/s: epochs after the first (which compiles)."""
    import keras

    ends = []
    stamp = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ends.append(time.perf_counter()))
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[stamp], shuffle=False)
    return len(x) * (epochs - 1) / (ends[-1] - ends[0])


def predict_rate(model, x, batch: int = 256) -> float:
    """Steady inference images/s (a first call compiles)."""
    model.predict(x[:batch], batch_size=batch, verbose=0)
    t0 = time.perf_counter()
    model.predict(x, batch_size=batch, verbose=0)
    return len(x) / (time.perf_counter() - t0)


def disk_images(n: int, size: int, seed: int):
    """Gaussian disks at random inclination (45-90 deg, thickness 0.2) and position angle
    +-15 deg: pixels 0-255 and the network targets of their inclinations."""
    rng = np.random.default_rng(seed)
    inc = np.degrees(np.arccos(rng.uniform(0.0, np.cos(np.radians(45.0)), n)))
    q = axis_ratio_from_inclination(inc, 0.2)
    pa = np.radians(rng.uniform(-15, 15, n))
    r_major = rng.uniform(0.12, 0.3, n) * size
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    out = np.empty((n, size, size, 3), np.float32)
    for k in range(n):
        u = xx * np.cos(pa[k]) + yy * np.sin(pa[k])
        v = -xx * np.sin(pa[k]) + yy * np.cos(pa[k])
        light = 230 * np.exp(-0.5 * ((u / r_major[k]) ** 2 + (v / (q[k] * r_major[k])) ** 2))
        out[k] = (light + rng.normal(4, 3, (size, size)))[..., None]
    return np.clip(out, 0, 255), M.inclination_to_target(inc)


def learn_mae_deg(name: str, size: int, policy, data, epochs: int, batch: int, seed: int) -> float:
    """Validation MAE (deg) of a fresh network trained on the disk task with stage 05's
    learning-rate schedule (one epoch standing for one batch file)."""
    import keras

    from inclinet_utils.train import WARMUP_STEPS, learning_rate_schedule

    keras.utils.set_random_seed(seed)
    (x, y), (xv, yv) = data
    schedule = learning_rate_schedule(1e-3, epochs, len(x) // batch, WARMUP_STEPS)
    model = M.build_model(name, size, learning_rate=schedule, bn_momentum=0.9, mixed_precision=policy)
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
    pred = model.predict(xv, batch_size=256, verbose=0).ravel()
    return float(np.mean(np.abs(M.target_to_inclination(pred) - M.target_to_inclination(yv))))


def production_hours(rate_by_model: dict) -> float:
    """Compute hours of the production preset's regressor trainings at the given rates."""
    p = PRESETS["production"]
    # a file holds batch_size galaxies per 5-deg bin (augment.BIN_LOWS, whose module needs
    # TensorFlow), once in colour and once in grayscale
    n_bins = int(M.INC_SPAN_DEG // 5)
    per_training = p["n_batches"] * n_bins * 2 * p["batch_size"] * p["n_passes"]
    usets = p["m_iter"] + 1
    return sum(per_training * usets / rate_by_model[m] for m in p["models"]) / 3600.0


def measure(args) -> list[dict]:
    """One row per (model, policy)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.n_images, args.size, args.size, 3)).astype(np.float32)
    y = rng.uniform(-0.8, 0.8, (args.n_images, 1)).astype(np.float32)
    xt, yt = disk_images(args.learn_images if args.learn_seeds else 0, args.size, 1)
    xv, yv = disk_images(1024 if args.learn_seeds else 0, args.size, 2)
    rows = []
    for name in args.models:
        for policy in args.policies:
            p = None if policy == "float32" else policy
            row = {"model": name, "policy": policy, "batch": args.batch}
            if args.n_images:
                model = M.build_model(name, args.size, mixed_precision=p)
                row.update(train_img_s=round(train_rate(model, x, y, args.batch), 1),
                           predict_img_s=round(predict_rate(model, x), 1))
            row["learn_mae_deg"] = [round(learn_mae_deg(name, args.size, p, ((xt, yt), (xv, yv)),
                                                        args.learn_epochs, args.batch, seed), 2)
                                    for seed in range(args.learn_seeds)]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["model4", "model5", "model6"])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16", "mixed_float16"])
    ap.add_argument("--batch", type=int, default=PRESETS["production"]["training_batch_size"])
    ap.add_argument("--n-images", type=int, default=4096, help="0: skip the throughput")
    ap.add_argument("--learn-images", type=int, default=6144)
    ap.add_argument("--learn-epochs", type=int, default=6)
    ap.add_argument("--learn-seeds", type=int, default=2, help="0: skip the learning check")
    ap.add_argument("--out", type=Path, help="also write the rows here as JSON")
    args = ap.parse_args(argv)
    import keras

    summary = {"backend": keras.backend.backend(), "devices": ", ".join(n for _, n in M.backend_devices())}
    print(f"keras {keras.__version__}, backend {summary['backend']}, devices: {summary['devices']}, "
          f"python {platform.python_version()}", flush=True)
    rows = summary["rows"] = measure(args)
    best = {m: max(r.get("train_img_s", 0) for r in rows if r["model"] == m) or None for m in args.models}
    if all(best.get(m) for m in PRESETS["production"]["models"]):
        summary["production_regressors_hours"] = round(production_hours(best), 2)
        print(f"production preset, 12 regressor trainings at the best rates: "
              f"{summary['production_regressors_hours']} h of compute")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
