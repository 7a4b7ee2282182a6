"""Throughput and memory of stage 05's training (model.fit over its PyDataset and callbacks) against a plain `model.fit`.

    python benchmarks/bench_train.py [--models model4 model6] [--sizes 64 128]
                                     [--n-images 1800] [--n-val 268] [--steps 2] [--repeats 2]

For each (model, size) it prints steady-state training images/s
  * through the stage's own code path (train.train_all: one model.fit over the
    BatchFileDataset, one batch file per epoch read in a background thread, validation,
    and the callbacks: step record, checkpoint, evalDict JSON, figure, CSV and
    TensorBoard logs, progress off), counting every second of the step periods after
    the first (compiling) step;
  * through a plain Keras `model.fit` of the same work, the ceiling: one fit over
    in-memory tensors of one file's shape with the same validation set every epoch,
    no callbacks, timed epoch end to epoch end after the first epoch;
and "ratio" = stage / plain fit (target >= 0.95). "no-val fit" is a plain fit without
validation, for reference (the stage's ratio to it also pays the validation pass).
It keeps the best of --repeats alternating runs of each (the machine is shared).
Then the peak resident memory (ru_maxrss) of a whole training over 2 and over 8
batch files (target: within 20%). Every figure comes from its own fresh subprocess.
Defaults mirror stage 04's laptop files (1800 images = 9 bins x 2 x 100) and a
~270-image validation set. Random pixels: speed does not depend on the image content.
Prints `uptime` (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_run(run_dir: Path, size: int, n_files: int, n_images: int, n_val: int, seed: int = 0) -> None:
    """An augmented/ folder of random-pixel files in stage 04's layout."""
    import numpy as np

    from inclinet_utils import layout

    rng = np.random.default_rng(seed)

    def arrays(n):
        return {"images": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                "labels": rng.integers(45, 91, n).astype(np.int64),
                "pgcIDs": np.arange(n, dtype=np.int64), "filter": np.full(n, layout.filter_code("gri"), "<U1"),
                "inverted": np.zeros(n, bool)}

    aug = layout.run_paths(run_dir)["augmented"]
    layout.uset_dir(aug, 0).mkdir(parents=True, exist_ok=True)
    for b in range(1, n_files + 1):
        np.savez_compressed(layout.batch_path(aug, 0, size, b), **arrays(n_images))
    np.savez_compressed(layout.validation_path(aug, size), **arrays(n_val))


# ---- measurements, each run in a fresh child process ------------------------------

def child_stage(run_dir: str, model: str, size: int, batch: int) -> dict:
    import resource

    from inclinet_utils import train

    train.train_all(run_dir, [model], [0], size, n_passes=1, training_batch_size=batch,
                    seed=1, progress=False)
    h = train.load_history(run_dir, model, 0)
    steady = [h[s] for s in sorted(h)[1:]]
    n = sum(e["n_images"] for e in steady)
    t = sum(e["time_s"] for e in steady)
    parts = {k: sum(e[k] for e in steady) / len(steady) if steady else None
             for k in ("time_s", "time_data_s", "time_fit_s", "time_eval_s", "time_save_s")}
    return {"images_per_s": n / t if t else None, "steps": len(h), "first_step_s": h[0]["time_s"],
            "per_step": parts, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_fit(model: str, size: int, batch: int, n_images: int, steps: int, n_val: int,
              validation: bool = True) -> dict:
    import time

    import keras
    import numpy as np

    from inclinet_utils import train
    from inclinet_utils.models import build_model, inclination_to_target, tensorflow_backend

    train.configure_threads()
    tensor = np.asarray  # the other Keras backends take arrays
    if tensorflow_backend():
        import tensorflow as tf

        tensor = tf.constant
    rng = np.random.default_rng(0)

    def data(n):
        return (tensor(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)),
                tensor(inclination_to_target(rng.integers(45, 91, n))))

    x, y = data(n_images)
    val = data(n_val) if validation else None
    ends = []
    clock = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs=None: ends.append(time.perf_counter()))
    m = build_model(model, size)
    m.fit(x, y, batch_size=batch, epochs=steps + 1, validation_data=val, validation_batch_size=batch,
          verbose=0, callbacks=[clock])  # the first epoch compiles: timed from its end
    return {"images_per_s": steps * n_images / (ends[-1] - ends[0])}


def _run_child(fn: str, *args) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import bench_train as b; print('RESULT' + json.dumps(b.{fn}(*{args!r})))")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[6:])
    raise RuntimeError(f"{fn}{args} failed:\n{out.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["model4", "model6"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    ap.add_argument("--n-images", type=int, default=1800, help="images per batch file (one step)")
    ap.add_argument("--n-val", type=int, default=268, help="validation images")
    ap.add_argument("--steps", type=int, default=2, help="timed steps after the first (compiling) one")
    ap.add_argument("--batch", type=int, default=64, help="training_batch_size")
    ap.add_argument("--repeats", type=int, default=2, help="alternating repeats; the best of each is kept")
    ap.add_argument("--memory-model", default="model4")
    ap.add_argument("--memory-size", type=int, default=128)
    ap.add_argument("--memory-images", type=int, default=900, help="images per file in the memory test")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    from inclinet_utils import layout  # after the arguments: --help stays instant

    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"files of {args.n_images} images, validation {args.n_val}, batch {args.batch}, "
          f"{args.steps} timed steps after the first, best of {args.repeats}\n")
    print(f"{'model':8s} {'size':>4s} {'stage img/s':>12s} {'fit img/s':>10s} {'ratio':>6s} "
          f"{'no-val fit':>10s} {'ratio':>6s}   stage step parts (s): period = data + fit + eval + save(prev)")
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        for size in args.sizes:
            run = Path(tmp) / f"run{size}"
            write_run(run, size, args.steps + 1, args.n_images, args.n_val)
            for model in args.models:
                stages, fits, bare = [], [], []
                for r in range(args.repeats):  # alternate, keep the best of each (shared machine)
                    shutil.rmtree(layout.run_paths(run)["models"], ignore_errors=True)
                    stages.append(_run_child("child_stage", str(run), model, size, args.batch))
                    fit_args = (model, size, args.batch, args.n_images, args.steps, args.n_val)
                    fits.append(_run_child("child_fit", *fit_args, True))
                    bare.append(_run_child("child_fit", *fit_args, False))
                stage, fit, nv = (max(d, key=lambda e: e["images_per_s"]) for d in (stages, fits, bare))
                p = stage["per_step"]
                print(f"{model:8s} {size:4d} {stage['images_per_s']:12.1f} {fit['images_per_s']:10.1f} "
                      f"{stage['images_per_s'] / fit['images_per_s']:6.3f} {nv['images_per_s']:10.1f} "
                      f"{stage['images_per_s'] / nv['images_per_s']:6.3f}   "
                      f"{p['time_s']:.2f} = {p['time_data_s']:.2f} + {p['time_fit_s']:.2f} + "
                      f"{p['time_eval_s']:.2f} + {p['time_save_s']:.2f}  (first step {stage['first_step_s']:.1f} s)",
                      flush=True)
        if not args.skip_memory:
            print(f"\npeak memory, {args.memory_model} at {args.memory_size} px, "
                  f"{args.memory_images} images per file, one pass:")
            rss = {}
            for n_files in (2, 8):
                run = Path(tmp) / f"mem{n_files}"
                write_run(run, args.memory_size, n_files, args.memory_images, args.n_val)
                rss[n_files] = _run_child("child_stage", str(run), args.memory_model, args.memory_size,
                                          args.batch)["maxrss_mb"]
                print(f"  {n_files} batch files: {rss[n_files]:.0f} MB", flush=True)
            print(f"  8 / 2 files: {rss[8] / rss[2]:.3f} (target <= 1.20)")
    print("\nuptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
