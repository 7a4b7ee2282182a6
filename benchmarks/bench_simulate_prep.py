"""Speed of stage 00 (simulate: four 512x512 images per galaxy) and stage 01 (prep) on that sample.

    python benchmarks/bench_simulate_prep.py [N] [--seed 42] [--workers 0] [--size 128]

Renders N synthetic galaxies (default 200) into a temporary folder with
simulate.simulate_sample, then prepares them for bands g, r, i, gri with
images.prep_stage, and prints galaxies per second for each, the CPU time per
galaxy and the machine load (the machine may be shared). No pass/fail; the
stage-00 target is >= 20 galaxies/s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def _load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
        return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"
    except OSError:
        return "load average unavailable"


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the worker processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=200, help="number of galaxies (default 200)")
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    parser.add_argument("--workers", type=int, default=0, help="worker processes; 0 = all cores")
    parser.add_argument("--size", type=int, default=128, help="stage-01 output size in pixels")
    args = parser.parse_args()

    from inclinet_utils import catalog, layout, simulate

    print(f"before: {_load()}")
    with tempfile.TemporaryDirectory(prefix="bench_simulate_") as tmp:
        paths = layout.run_paths(tmp)
        out = paths["input"]
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        simulate.simulate_sample(out, args.n, seed=args.seed, n_workers=args.workers, progress=False)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        print(f"00_simulate: {args.n} galaxies (4 images each) in {wall:.1f} s -> {args.n / wall:.1f} galaxies/s "
              f"({1000 * cpu / args.n:.0f} ms CPU per galaxy, all processes)")
        print(f"after 00: {_load()}")

        try:
            from inclinet_utils.images import prep_stage
        except ImportError as exc:       # stage 01 not available in this checkout
            print(f"01_prep: skipped ({exc})")
            return
        cat = catalog.read_catalog(paths["input_catalog"])
        bands = ["g", "r", "i", "gri"]
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        prep_stage(cat, paths["input_images"], paths["prep"], size=args.size, bands=bands,
                   n_workers=args.workers, progress=False)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        print(f"01_prep: {args.n} galaxies x {len(bands)} bands at {args.size}x{args.size} in {wall:.1f} s "
              f"-> {args.n / wall:.1f} galaxies/s ({1000 * cpu / args.n:.0f} ms CPU per galaxy)")
        print(f"after 01: {_load()}")


if __name__ == "__main__":
    main()
