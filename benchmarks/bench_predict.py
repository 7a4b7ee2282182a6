"""Throughput and memory of survey prediction (`predict.write_table`) on image files.

Prints, for each number of images: images/s of the whole table pipeline (find the
files, decode, prepare as stages 01-02, measure with flips, write the table in
chunks) against `model.predict` on in-memory tensors of the same shape doing the
same work (the four flipped views), their ratio (target >= 0.8), and the peak
resident memory of the process (target: 1,000 and 10,000 images within 20%).
Each case runs in a fresh process so its peak memory is its own.

Inputs are synthetic gray disks written once as PNG files (default 64 px, so the
10,000 case stays feasible on 2 CPU cores) into a cache folder, with an untrained
model4 at the same size (speed does not depend on the weights)::

    python benchmarks/bench_predict.py                    # 1,000 and 10,000 images, 64 px, 1 member
    python benchmarks/bench_predict.py --n 1000 --size 128 --members 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _cache(args) -> Path:
    return Path(args.cache or Path(tempfile.gettempdir()) / "inclinet_bench_predict") / f"{args.size}px"


def prepare(args) -> Path:
    """Write the image folders and the run (once; kept in the cache folder)."""
    from PIL import Image

    from inclinet_utils import inference, layout
    from inclinet_utils.models import build_model

    root = _cache(args)
    run = root / f"run_{args.members}"
    if not (run / "models").is_dir():
        (run / "models").mkdir(parents=True)
        for uset in range(args.members):
            build_model("model4", args.size).save(run / "models" / layout.model_file_name("model4", uset))
        inference.record_trained_bands(run, {layout.model_row("model4", u): ["g", "r", "i", "gri"]
                                             for u in range(args.members)})
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:args.size, :args.size] - (args.size - 1) / 2
    for n in args.n:
        folder = root / f"images_{n}"
        if folder.is_dir() and len(list(folder.iterdir())) == n:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            q, r = rng.uniform(0.2, 0.7), args.size * rng.uniform(0.2, 0.35)
            disk = (xx / r) ** 2 + (yy / (r * q)) ** 2 <= 1
            img = np.clip(np.where(disk, 40, 240) + rng.normal(0, 6, disk.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img, "L").save(folder / layout.simulated_image_name(100000 + k, "r"))
    return run


def child_pipeline(args) -> dict:
    from inclinet_utils import inference, predict, predict_rows

    run, folder = _cache(args) / f"run_{args.members}", _cache(args) / f"images_{args.child}"
    out = Path(tempfile.mkdtemp(prefix="bench_predict_")) / "table.csv"
    start_up = time.perf_counter()
    models, size = predict_rows.run_models(str(run))  # loaded once per process, as a Dask worker does
    for _, m in models:  # warm up (graph tracing), as the baseline does
        inference.predict_images(m, np.zeros((16, size, size, 3), np.uint8))
    start = time.perf_counter()
    summary = predict.write_table(folder, run, out, chunk_size=args.chunk, progress=False)
    elapsed = time.perf_counter() - start
    assert summary["n_ok"] == args.child, summary
    return {"n": args.child, "seconds": elapsed, "start_up_s": start - start_up, "images_per_s": args.child / elapsed,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_baseline(args) -> dict:
    """model.predict on in-memory (n, S, S, 3) tensors and their flips: the same work, no files."""
    from inclinet_utils import inference, layout

    run = _cache(args) / f"run_{args.members}"
    models, size = inference.load_run_models(run)
    x = np.random.default_rng(1).integers(0, 256, (args.child, size, size, 3)).astype(np.float32)
    views = np.concatenate([x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]])
    for _, m in models:
        m.predict(views[:64], batch_size=64, verbose=0)  # warm up (graph tracing)
    start = time.perf_counter()
    for _, m in models:
        m.predict(views, batch_size=64, verbose=0)
    elapsed = time.perf_counter() - start
    return {"n": args.child, "seconds": elapsed, "images_per_s": args.child / elapsed}


def _run_child(kind: str, n: int, args) -> dict:
    cmd = [sys.executable, __file__, "--child", str(n), "--kind", kind, "--size", str(args.size),
           "--members", str(args.members), "--chunk", str(args.chunk)] + (["--cache", args.cache] if args.cache else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10000], help="numbers of images")
    p.add_argument("--size", type=int, default=64, help="image size in pixels (input = model size)")
    p.add_argument("--members", type=int, default=1, help="model4 Usets in the run")
    p.add_argument("--chunk", type=int, default=256, help="images per chunk")
    p.add_argument("--baseline-n", type=int, default=1000, help="images of the in-memory model.predict case")
    p.add_argument("--cache", help="folder for the generated images and run (default: a temp folder)")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--kind", default="pipeline", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child_pipeline(args) if args.kind == "pipeline" else child_baseline(args)))
        return 0
    prepare(args)
    base = _run_child("baseline", args.baseline_n, args)
    print(f"model.predict on in-memory ({args.baseline_n}, {args.size}, {args.size}, 3) tensors x 4 flips, "
          f"{args.members} member(s): {base['images_per_s']:.1f} images/s")
    rows = []
    for n in args.n:
        r = _run_child("pipeline", n, args)
        rows.append(r)
        print(f"table of {n:>6} image files: {r['images_per_s']:8.1f} images/s  ratio "
              f"{r['images_per_s'] / base['images_per_s']:.2f} (target >= 0.8)  peak RSS {r['peak_rss_mb']:.0f} MB "
              f"({r['seconds']:.1f} s + {r['start_up_s']:.1f} s loading the models)")
    if len(rows) > 1:
        mem = [r["peak_rss_mb"] for r in rows]
        print(f"peak memory {max(mem) / min(mem) - 1:+.1%} from {min(args.n)} to {max(args.n)} images (target within 20%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
