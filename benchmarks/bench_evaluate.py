"""Speed of stage 06's inner loops: the axis-ratio baseline per 512x512 input image and the
network predictions per image, with and without test-time flips (model4, untrained weights: speed only).

    python benchmarks/bench_evaluate.py [--size 128] [--n 200]

Prints figures; no pass/fail. Uses the real SDSS reference images when present
(../shared/real_sdss), else a rendered ellipse.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real_sdss" / "galaxies"


def _images():
    from inclinet_utils.images import read_galaxy_image

    files = sorted(REAL.glob("*.png")) + sorted(REAL.glob("*_gri.jpg")) if REAL.is_dir() else []
    if files:
        return [(read_galaxy_image(f, "gri" if f.suffix == ".jpg" else "r"), f.suffix != ".jpg") for f in files]
    y, x = np.mgrid[0:512, 0:512] - 255.5
    flux = np.exp(-np.hypot(x, y / 0.4) / 40)
    return [(np.clip(235 - 200 * flux, 0, 255).astype(np.uint8), True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="network input size (pixels)")
    parser.add_argument("--n", type=int, default=200, help="images per prediction timing")
    args = parser.parse_args()

    from inclinet_utils.axis_ratio import axis_ratio_inclination
    from inclinet_utils.inference import predict_images
    from inclinet_utils.models import build_model

    images = _images()
    t0 = time.perf_counter()
    for image, dark in images * 3:
        axis_ratio_inclination(image, galaxy_dark=dark)
    per = (time.perf_counter() - t0) / (3 * len(images))
    print(f"axis_ratio_inclination: {1000 * per:.1f} ms per {images[0][0].shape[0]}-pixel image "
          f"({len(images)} images x 3)")

    model = build_model("model4", args.size, compile=False)
    batch = np.random.default_rng(0).integers(0, 256, (args.n, args.size, args.size, 3), dtype=np.uint8)
    for flips in (False, True):
        predict_images(model, batch[:8], flips=flips)  # warm-up (graph tracing)
        t0 = time.perf_counter()
        predict_images(model, batch, flips=flips)
        per = (time.perf_counter() - t0) / args.n
        print(f"model4 prediction at {args.size}x{args.size}, flips={flips}: {1000 * per:.2f} ms per image "
              f"({args.n} images)")


if __name__ == "__main__":
    main()
