"""Benchmark of stage 04 augment: augmented images per second and peak memory.

Runs `augment.augment_stage` (the stage's own code path) on synthetic stage-03
sample files at 64 and 128 px and prints, per size, images/s end to end
(sampling, augmentation, npz writing) and for the augmentation alone (one
batch planned and rendered, not written).  Then runs the stage in fresh
subprocesses with 2 and 8 batches and compares their peak resident memory,
(sampled while the stage runs), which must not grow with the number of batches.  Target: >= 500 images/s at
128 px on 2 cores; peak memory for 8 batches within 20% of that for 2.

    python benchmarks/bench_augment.py            # full benchmark
    python benchmarks/bench_augment.py --quick    # smaller, for a smoke test
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # synthetic sample writer shared with the tests

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _samples(dir_, size, n_galaxies):
    from augment_samples import write_samples
    write_samples(dir_, size=size, n_galaxies=n_galaxies, m_iter=0, seed=1)


def throughput(size: int, n_galaxies: int, n_batches: int, batch_size: int) -> dict:
    import numpy as np
    from inclinet_utils import BANDS
    from inclinet_utils import augment as A

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _samples(tmp / "samples", size, n_galaxies)
        # warm-up: traces the TensorFlow functions once, as any real run does
        A.augment_stage(tmp / "samples", tmp / "warm", size, n_batches=1, batch_size=4, progress=False)

        t0, c0 = time.perf_counter(), time.process_time()
        rec = A.augment_stage(tmp / "samples", tmp / "augmented", size, n_batches=n_batches,
                              batch_size=batch_size, seed=42, progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        n = sum(c["n"] for b in rec["batch_counts"].values() for c in b.values()) + rec["validation"]["n"]
        mb = sum(p.stat().st_size for p in (tmp / "augmented").rglob("*.npz")) / 1e6

        # augmentation alone: plan and render batches in memory, no file written
        pools = A._load_pools(tmp / "samples", size, list(BANDS), "train", 0)
        bins, _ = A._bin_status(pools)
        t1 = time.perf_counter()
        m = 0
        for b in range(n_batches):
            rng = np.random.default_rng(b)
            m += len(A.render_plan(rng, pools, A.plan_batch(rng, pools, batch_size, bins))["labels"])
        aug_wall = time.perf_counter() - t1
    return {"size": size, "images": n, "stage_s": wall, "stage_img_s": n / wall, "cpu_s": cpu,
            "written_MB": mb, "augment_only_img_s": m / aug_wall}


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _memory_child(size: int, n_batches: int, batch_size: int, samples: str, out: str) -> None:
    import threading

    from inclinet_utils import BANDS
    from inclinet_utils import augment as A
    # Importing TensorFlow alone peaks near 0.9 GB, which would hide the stage in
    # ru_maxrss; so sample the resident size while the stage runs instead.
    before = _rss_mb()
    peak, done = [before], threading.Event()

    def sample():
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_mb())

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    A.augment_stage(samples, out, size, n_batches=n_batches, batch_size=batch_size, seed=42, progress=False)
    done.set()
    t.join()
    print(json.dumps({"stage_peak_MB": max(peak[0], _rss_mb()), "before_MB": before,
                      "maxrss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6}))


def peak_memory(size: int, n_galaxies: int, batch_size: int, batches=(2, 8)) -> dict:
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _samples(tmp / "samples", size, n_galaxies)
        for nb in batches:
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", str(size), str(nb), str(batch_size),
                 str(tmp / "samples"), str(tmp / f"aug_{nb}")],
                capture_output=True, text=True, check=True)
            res[nb] = json.loads(out.stdout.strip().splitlines()[-1])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke test")
    ap.add_argument("--memory-child", nargs=5, metavar=("SIZE", "N_BATCHES", "BATCH_SIZE", "SAMPLES", "OUT"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        s, nb, bs, samples, out = args.memory_child
        _memory_child(int(s), int(nb), int(bs), samples, out)
        return

    n_gal, n_batches, batch_size = (60, 2, 20) if args.quick else (200, 4, 50)
    print(f"machine: {os.cpu_count()} cores; load average before: {os.getloadavg()}")
    for size in (64, 128):
        r = throughput(size, n_gal, n_batches, batch_size)
        print(f"{size:>3d} px: stage {r['stage_img_s']:7.0f} images/s end to end "
              f"({r['images']} images in {r['stage_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, "
              f"{r['written_MB']:.0f} MB written); augmentation alone {r['augment_only_img_s']:7.0f} images/s")
    mem_bs = 20 if args.quick else 100
    mem = peak_memory(128, n_gal, mem_bs)
    batch_mb = 9 * 2 * mem_bs * 128 * 128 * 3 / 1e6
    ratio = mem[8]["stage_peak_MB"] / mem[2]["stage_peak_MB"]
    print(f"peak resident memory during the stage at 128 px, batch_size {mem_bs} "
          f"(one batch file = {batch_mb:.0f} MB of images): 2 batches {mem[2]['stage_peak_MB']:.0f} MB, "
          f"8 batches {mem[8]['stage_peak_MB']:.0f} MB, ratio {ratio:.3f} "
          f"({'within' if abs(ratio - 1) <= 0.2 else 'NOT within'} 20%); before the stage "
          f"{mem[2]['before_MB']:.0f} / {mem[8]['before_MB']:.0f} MB; ru_maxrss (incl. TensorFlow import) "
          f"{mem[2]['maxrss_MB']:.0f} / {mem[8]['maxrss_MB']:.0f} MB")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
