"""Shared fixtures: the real SDSS reference folder (skipped when absent) and a tiny
synthetic input set written in the real input format, so the tests also run without it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from inclinet_utils import catalog

REAL_SDSS = Path(__file__).resolve().parents[1].parent / "shared" / "real_sdss"

SYN_CUTOUT = 64   # input cutout side in pixels (the real ones are 512; tiny keeps tests fast)
SYN_ROOT = "d25x2_rot"


@pytest.fixture
def real_sdss() -> Path:
    """The real SDSS reference folder beside the project; skip the test when it is absent."""
    if not (REAL_SDSS / "galaxies").is_dir() or not (REAL_SDSS / "catalogs" / "catalog.csv").is_file():
        pytest.skip(f"real SDSS reference folder {REAL_SDSS} not available")
    return REAL_SDSS


def disk_image(n: int, inc_deg: float, radius: float, dark: int = 20, sky: int = 255) -> np.ndarray:
    """A gray (n, n) uint8 cutout: a dark elliptical disk, major axis horizontal, on a bright sky."""
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    q = max(np.cos(np.radians(inc_deg)), 0.15)
    inside = (x / radius) ** 2 + (y / (radius * q)) ** 2 <= 1
    return np.where(inside, dark, sky).astype(np.uint8)


@dataclasses.dataclass
class SyntheticInput:
    images_dir: Path
    catalog_path: Path
    table: pd.DataFrame           # what was written (before read_catalog)
    labels: dict[int, str]        # expected label of each pgc
    la_pgc: int                   # galaxy whose gray PNGs are 'LA'
    jpg_only_pgc: int             # galaxy with only the locally made .jpg colour composite
    n: int = SYN_CUTOUT

    def gray_path(self, pgc: int, band: str) -> Path:
        return self.images_dir / f"pgc{pgc}_{SYN_ROOT}_{band}.png"

    def colour_paths(self, pgc: int) -> tuple[Path, Path]:
        stem = f"pgc{pgc}_{SYN_ROOT}_gri"
        return self.images_dir / f"{stem}.sdss.jpg", self.images_dir / f"{stem}.jpg"


# pgc, inc, inc_flg, fon, inc_note -> expected label
SYN_ROWS = [
    (101, 50, 0, "", "[standard]", "50"),
    (102, 55, 0, "", "", "55"),
    (103, 61, 0, "", "[multiple?]", "61"),
    (104, 66, 0, "F", "", "66"),              # fon F but inc_flg 0: the inclination stands
    (105, 72, 0, "", "", "72"),
    (106, 78, 0, "", "", "78"),
    (107, 84, 0, "", "", "84"),
    (108, 90, 0, "", "", "90"),
    (109, 47, 0, "", "", "47"),
    (110, 0, 1, "F", "[bad_TF]", "F"),        # face-on by fon
    (111, 0, 2, "", "[loose arms] [face_on]", "F"),  # face-on by the note
    (112, 30, 1, "", "[merger] [multiple]", "0"),    # rejected
]


def make_synthetic_input(root: Path) -> SyntheticInput:
    images_dir = root / "galaxies"
    images_dir.mkdir(parents=True)
    n = SYN_CUTOUT
    la_pgc, jpg_only_pgc = 102, 105
    for k, (pgc, inc, _flg, _fon, _note, _label) in enumerate(SYN_ROWS):
        gray = disk_image(n, inc, radius=n / 4)
        for j, band in enumerate(("g", "r", "i")):
            img = np.clip(gray.astype(int) + 5 * j, 0, 255).astype(np.uint8)
            path = images_dir / f"pgc{pgc}_{SYN_ROOT}_{band}.png"
            if pgc == la_pgc:
                # Grayscale with alpha, as pgc676 is stored: opaque disk, a transparent top strip.
                alpha = np.full_like(img, 255)
                alpha[: n // 8] = 0
                img_la = img.copy()
                img_la[: n // 8] = 0   # hidden under alpha 0, must come out as white sky
                Image.fromarray(np.dstack([img_la, alpha]), "LA").save(path)
            else:
                Image.fromarray(img, "L").save(path)
        # Colour composite: white-on-black; the .sdss.jpg and the local .jpg differ in tint.
        white = 255 - gray
        sdss = np.dstack([white, white // 2, white // 4]).astype(np.uint8)
        local = np.dstack([white // 4, white // 2, white]).astype(np.uint8)
        sdss_path = images_dir / f"pgc{pgc}_{SYN_ROOT}_gri.sdss.jpg"
        jpg_path = images_dir / f"pgc{pgc}_{SYN_ROOT}_gri.jpg"
        if pgc != jpg_only_pgc:
            Image.fromarray(sdss, "RGB").save(sdss_path, quality=95)
        Image.fromarray(local, "RGB").save(jpg_path, quality=95)

    table = pd.DataFrame({
        "pgc": [r[0] for r in SYN_ROWS],
        "ra": np.linspace(1.0, 300.0, len(SYN_ROWS)).round(4),
        "b_a": [round(float(max(np.cos(np.radians(r[1])), 0.15)), 2) for r in SYN_ROWS],
        "fon": [r[3] for r in SYN_ROWS],
        "note": ["free text, with < symbols" if r[0] % 3 == 0 else "" for r in SYN_ROWS],
        "inc": [r[1] for r in SYN_ROWS],
        "inc_e": [3] * len(SYN_ROWS),
        "inc_flg": [r[2] for r in SYN_ROWS],
        "inc_note": [r[4] for r in SYN_ROWS],
        "inc_true": [r[1] + 0.25 for r in SYN_ROWS],
    })
    catalog_path = catalog.write_catalog(table, root / "catalogs" / "catalog.csv")
    return SyntheticInput(images_dir=images_dir, catalog_path=catalog_path, table=table,
                          labels={r[0]: r[5] for r in SYN_ROWS}, la_pgc=la_pgc, jpg_only_pgc=jpg_only_pgc)


@pytest.fixture
def synthetic_input(tmp_path) -> SyntheticInput:
    """A tiny input set in the real format: gray 'L' PNGs (one galaxy 'LA'), colour
    .sdss.jpg and .jpg (one galaxy .jpg only), and a padded '|' catalog."""
    return make_synthetic_input(tmp_path / "input")
