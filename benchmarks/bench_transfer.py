"""Transfer to a new telescope: an SDSS-like run's networks on another instrument, as is,
trained from scratch on the new labels, and fine-tuned from the SDSS-like run.

    python benchmarks/bench_transfer.py --quick               # ~10 min on 2 cores
    python benchmarks/bench_transfer.py --parent outputs/<run> --instrument deep
    python benchmarks/bench_transfer.py --quick --parent RUN/parent --no-scratch --finetune-learning-rate 3e-4 1e-4 1e-3

Steps, all in a new folder (``--run-dir``, default ``outputs/transfer_<time>``):

1. the parent: ``--parent RUN`` (its first model, e.g. ``Uset_000_model4.keras``), or a
   small SDSS-like run trained here (``parent/``) on ``--n-parent`` usable SDSS galaxies;
2. a sample of the other instrument (``--instrument``, default ``deep``), rendered with
   the stage-00 simulator and prepared as stages 00-02 prepare the colour composite
   (JPEG, pad, resize, JPEG). Its first ``--n-test`` usable galaxies (inclination >= 45,
   not rejected) are the held-out test set, never used to choose or stop anything;
3. for each label count (100, 300, 1000: nested subsets of the remaining galaxies) the
   same model, with the same number of steps (``--n-files`` files of ``--file-size``
   randomly flipped images per pass, ``--n-passes`` passes), trained from random weights
   (``scratch_<n>/``) and fine-tuned from the parent (``finetuned_<n>/``, `--init-from`);
4. on the test set: `as_is` (the parent unchanged), `scratch`, `finetuned`, and the
   axis-ratio method (photutils b/a of the r band, q0 = 0.2), against the exact
   inclination: RMS, MAE, bias (truth - predicted), in degrees.

Prints one table and writes ``{"<n>": {"as_is": {...}, "scratch": {...}, "finetuned": {...},
"axis_ratio": {...}}, ..., "wall_s": x}`` to ``--out`` (default transfer.json in the run folder).

``--quick``: 64 px images, galaxies rendered on at most 128 native pixels (binned above;
the networks see 64 px), a parent of 1200 SDSS galaxies, 100 test galaxies, and short
trainings (4 files of 512 images x 2 passes). Without it: 128 px, full-resolution
renders, 3000 parent galaxies, 300 test galaxies, 6 files x 3 passes.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inclinet_utils import finetune, layout, simulate, train  # noqa: E402
from inclinet_utils import simulate_observe as observe  # noqa: E402
from inclinet_utils.axis_ratio import inclination_from_axis_ratio  # noqa: E402
from inclinet_utils.images import encode_jpeg, prepare_image  # noqa: E402

log = logging.getLogger("bench_transfer")
LABEL_COUNTS = (100, 300, 1000)
QUICK = dict(size=64, render_pix=128, n_parent=1200, n_test=100, n_files=4, file_size=512, n_passes=2,
             parent_files=6, parent_passes=3)
FULL = dict(size=128, render_pix=512, n_parent=3000, n_test=300, n_files=6, file_size=1024, n_passes=3,
            parent_files=8, parent_passes=4)
MODEL = "model4"
TRAIN_KW = dict(training_batch_size=16, bn_momentum=0.9, mixed_precision="auto", progress=False)


# ---- samples ------------------------------------------------------------------------------

def _render_one(task):
    """(prepared (S, S, 3) uint8 composite, b_a) of one galaxy, as stages 00-02 hand it on."""
    params, seed, inst, size = task
    from PIL import Image

    rendered = simulate.render_galaxy(params, seed, inst)
    buf = io.BytesIO()
    Image.fromarray(rendered.rgb, mode="RGB").save(buf, format="JPEG", quality=80)  # as 00 writes it
    rgb = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    prepared = prepare_image(rgb, size)
    return np.asarray(Image.open(io.BytesIO(encode_jpeg(prepared))).convert("RGB")), rendered.b_a


def usable_sample(instrument: str, n: int, seed: int, size: int, render_pix: int, workers: int) -> dict:
    """`n` usable galaxies (label 45-90, not rejected) of `instrument`, rendered and prepared."""
    inst = dataclasses.replace(observe.instrument(instrument), max_render_pix=render_pix)
    params = simulate.draw_parameters(int(n / 0.6) + 50, seed, instrument=inst)
    seeds = np.random.SeedSequence([seed, simulate.SALT_RENDER]).spawn(len(params))
    keep = np.flatnonzero(params["inc_flg"].to_numpy() == 0)[:n]
    if len(keep) < n:
        raise RuntimeError(f"only {len(keep)} usable galaxies drawn, {n} asked")
    tasks = [(params.iloc[k].to_dict(), seeds[k], inst, size) for k in keep]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        out = list(pool.map(_render_one, tasks, chunksize=8))
    log.info("%d %s galaxies rendered in %.0f s", n, instrument, time.perf_counter() - t0)
    return {"images": np.stack([o[0] for o in out]), "b_a": np.array([o[1] for o in out], float),
            "inc": params["inc"].to_numpy()[keep].astype(np.int64),
            "inc_true": params["inc_true"].to_numpy()[keep], "pgc": params["pgc"].to_numpy()[keep]}


def _subset(sample: dict, idx) -> dict:
    return {k: v[idx] for k, v in sample.items()}


def write_training_files(run_dir: Path, sample: dict, size: int, n_files: int, file_size: int, seed: int) -> None:
    """augmented/ of a run: n_files files of file_size randomly flipped images drawn from `sample`,
    and a small validation file from the same labels (a monitor only: nothing is chosen on it)."""
    rng = np.random.default_rng(seed)
    aug = layout.run_paths(run_dir)["augmented"]
    layout.uset_dir(aug, 0).mkdir(parents=True, exist_ok=True)

    def arrays(n):
        idx = rng.choice(len(sample["inc"]), size=n, replace=n > len(sample["inc"]))
        images = sample["images"][idx].copy()
        for axis in (1, 2):
            flip = rng.uniform(size=n) < 0.5
            images[flip] = np.flip(images[flip], axis=axis)
        return {"images": images, "labels": sample["inc"][idx], "pgcIDs": sample["pgc"][idx],
                "filter": np.full(n, layout.filter_code("gri"), dtype="<U1"), "inverted": np.zeros(n, bool)}

    for b in range(1, n_files + 1):
        np.savez(layout.batch_path(aug, 0, size, b), **arrays(file_size))
    np.savez(layout.validation_path(aug, size), **arrays(min(64, len(sample["inc"]))))


# ---- trainings and scores -----------------------------------------------------------------

def train_run(run_dir: Path, sample: dict, cfg: dict, seed: int, files: int, passes: int, file_size: int,
              ft=None, learning_rate: float = 1e-3) -> Path:
    """Train MODEL on `sample` in a new run folder; the final model's path."""
    write_training_files(run_dir, sample, cfg["size"], files, file_size, seed)
    t0 = time.perf_counter()
    train.train_all(run_dir, [MODEL], [0], cfg["size"], passes, learning_rate=learning_rate, seed=seed,
                    finetune=ft, **TRAIN_KW)
    log.info("%s trained in %.0f s", run_dir.name, time.perf_counter() - t0)
    return train.training_paths(run_dir, MODEL, 0)["final"]


def scores(truth, predicted) -> dict:
    """RMS, MAE and bias (truth - predicted) in degrees, over the finite predictions."""
    truth, predicted = np.asarray(truth, float), np.asarray(predicted, float)
    ok = np.isfinite(predicted)
    d = truth[ok] - predicted[ok]
    return {"rms_deg": round(float(np.sqrt(np.mean(d ** 2))), 3), "mae_deg": round(float(np.mean(np.abs(d))), 3),
            "bias_deg": round(float(np.mean(d)), 3), "n": int(ok.sum())}


def predict(model_path: Path, images: np.ndarray) -> np.ndarray:
    from inclinet_utils.inference import load_model, predict_images

    return predict_images(load_model(model_path), images)


# ---- the benchmark ------------------------------------------------------------------------

def parent_model(args, cfg: dict, run_dir: Path, workers: int) -> tuple[Path, Path]:
    """(parent run folder, its model file): --parent, or one trained here on SDSS galaxies."""
    if args.parent:
        from inclinet_utils.inference import find_models, load_model, model_input_size

        found = find_models(layout.run_paths(args.parent)["models"])[0]
        cfg["size"] = model_input_size(load_model(found.path), found.path)
        global MODEL
        MODEL = found.model
        return Path(args.parent).resolve(), found.path
    sdss = usable_sample("sdss", cfg["n_parent"], args.seed + 1, cfg["size"], cfg["render_pix"], workers)
    path = train_run(run_dir / "parent", sdss, cfg, args.seed, cfg["parent_files"], cfg["parent_passes"],
                     cfg["file_size"] * 2)
    return run_dir / "parent", path


def run(args) -> dict:
    cfg = dict(QUICK if args.quick else FULL)
    start = time.perf_counter()
    run_dir = Path(args.run_dir or ROOT / "outputs" / time.strftime("transfer_%Y%m%d-%H%M%S")).resolve()
    run_dir.mkdir(parents=True, exist_ok=False)
    workers = args.n_workers or os.cpu_count() or 1
    parent_dir, parent_path = parent_model(args, cfg, run_dir, workers)
    new = usable_sample(args.instrument, cfg["n_test"] + max(LABEL_COUNTS), args.seed + 2, cfg["size"],
                        cfg["render_pix"], workers)
    test = _subset(new, slice(0, cfg["n_test"]))
    pool = _subset(new, slice(cfg["n_test"], None))
    as_is = scores(test["inc_true"], predict(parent_path, test["images"]))
    axis = scores(test["inc_true"], inclination_from_axis_ratio(test["b_a"], q0=0.2))
    rates = list(args.finetune_learning_rate)
    tunes = {("finetuned" if k == 0 else f"finetuned_lr{lr:g}"): finetune.FineTune(
        str(parent_dir), args.trainable, args.frozen_passes, lr) for k, lr in enumerate(rates)}
    ft = tunes["finetuned"]
    result = {}
    for n in LABEL_COUNTS:
        labelled = _subset(pool, slice(0, n))
        kw = dict(files=cfg["n_files"], passes=cfg["n_passes"], file_size=cfg["file_size"])
        result[str(n)] = {"as_is": as_is, "axis_ratio": axis}
        for name, tune in tunes.items():
            tuned = train_run(run_dir / f"{name}_{n}", labelled, cfg, args.seed, ft=tune, **kw)
            result[str(n)][name] = scores(test["inc_true"], predict(tuned, test["images"]))
        if not args.no_scratch:
            scratch = train_run(run_dir / f"scratch_{n}", labelled, cfg, args.seed, **kw)
            result[str(n)]["scratch"] = scores(test["inc_true"], predict(scratch, test["images"]))
        print_table({str(n): result[str(n)]})
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["setup"] = {**cfg, "run_dir": str(run_dir), "instrument": args.instrument, "parent": str(parent_path), "model": MODEL,
                       "n_test": len(test["inc"]), "quick": bool(args.quick), **ft.as_params(),
                       "finetune_learning_rate": ft.learning_rate, "scratch_learning_rate": 1e-3}
    return result


def print_table(result: dict) -> None:
    rows = [(n, kind, r[kind]) for n, r in result.items() if n.isdigit()
            for kind in ("as_is", "scratch", "finetuned", *sorted(k for k in r if k.startswith("finetuned_")),
                         "axis_ratio") if kind in r]
    for n, kind, s in rows:
        print(f"{n:>6} {kind:<18} rms {s['rms_deg']:6.2f}  mae {s['mae_deg']:6.2f}  bias {s['bias_deg']:+6.2f}"
              f"  n {s['n']}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="64 px, small samples, short trainings (~10 min, 2 cores)")
    p.add_argument("--parent", help="an SDSS-like run folder to transfer (default: train one here)")
    p.add_argument("--instrument", default="deep", choices=sorted(k for k in observe.INSTRUMENTS if k != "sdss"))
    p.add_argument("--run-dir", help="new folder for the benchmark's runs (default outputs/transfer_<time>)")
    p.add_argument("--out", help="JSON table (default transfer.json in the run folder)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--n-workers", type=int, default=0, help="render processes; 0: all cores")
    p.add_argument("--trainable", choices=finetune.TRAINABLE, default="all")
    p.add_argument("--frozen-passes", type=int, default=0)
    p.add_argument("--finetune-learning-rate", type=float, nargs="+", default=[finetune.FINETUNE_LEARNING_RATE],
                   help="fine-tuning rate(s): the first gives the 'finetuned' rows, others 'finetuned_lr<x>'")
    p.add_argument("--no-scratch", action="store_true",
                   help="skip the scratch trainings (fine-tuning experiments against a table already measured)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run(args)
    print_table(result)
    out = Path(args.out) if args.out else Path(result["setup"]["run_dir"]) / "transfer.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wall {result['wall_s']:.0f} s; table written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
