"""Galaxy images: finding and reading the real input format, and stage 01 (prep).

Input images follow the original pipeline: per galaxy ``pgc<ID>_<root>_<band>.png``
for the SDSS g, r, i bands (8-bit grayscale, black galaxy on white sky, possibly
with an alpha channel) and ``pgc<ID>_<root>_gri.sdss.jpg`` (preferred) or
``pgc<ID>_<root>_gri.jpg`` for the colour composite (white galaxy on black sky).
Stage 01 cuts and resizes each into
``<size>x<size>_<tag>/pgc<ID>_<size>x<size>_<label>.<tag>.jpg`` where the tag is
the band, or ``RGB`` for the colour composite, as the original did.
"""

from __future__ import annotations

import dataclasses
import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from . import BANDS, io as iio

IM_ROOT = "d25x2_rot"
JPEG_QUALITY = 95  # prepared cutouts: high enough that compression does not blur the disk edge


class ImageReadError(ValueError):
    """An input image is missing, unreadable, corrupt or of an unexpected kind."""


def band_tag(band: str) -> str:
    """File tag of a band: the colour composite 'gri' is stored as 'RGB'."""
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; expected one of {list(BANDS)}")
    return "RGB" if band == "gri" else band


def is_colour(band: str) -> bool:
    return band == "gri"


def candidate_paths(images_dir: str | os.PathLike, pgc: int, band: str, im_root: str = IM_ROOT) -> list[Path]:
    """Files that may hold galaxy `pgc` in `band`, in order of preference."""
    stem = Path(images_dir) / f"pgc{int(pgc)}_{im_root}_{band}"
    if is_colour(band):
        return [stem.with_name(stem.name + ".sdss.jpg"), stem.with_name(stem.name + ".jpg")]
    return [stem.with_name(stem.name + ".png")]


def find_image(images_dir: str | os.PathLike, pgc: int, band: str, im_root: str = IM_ROOT) -> Path | None:
    """The input file of galaxy `pgc` in `band`, or None when there is none."""
    for path in candidate_paths(images_dir, pgc, band, im_root):
        if path.is_file():
            return path
    return None


def read_galaxy_image(path: str | os.PathLike, band: str) -> np.ndarray:
    """Read one input image as stored: gray (H, W) uint8 or colour (H, W, 3) uint8.

    Grayscale with alpha is composited onto the white sky (alpha 0 = sky).
    Raises ImageReadError naming the file when it cannot be read as an image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            return _to_array(im, band, path)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageReadError(f"image {path} is not a readable image file: {exc}") from exc


def _to_array(im: Image.Image, band: str, path: Path) -> np.ndarray:
    if im.width != im.height:
        raise ImageReadError(f"image {path} is {im.width}x{im.height}; expected a square cutout")
    if is_colour(band):
        return np.asarray(im.convert("RGB"))
    if im.mode in ("LA", "RGBA", "PA"):
        rgba = im.convert("LA")
        gray = np.asarray(rgba, dtype=np.float32)
        alpha = gray[..., 1] / 255.0
        # Transparent pixels show the white sky of the black-on-white cutouts.
        return np.round(gray[..., 0] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if im.mode in ("I", "I;16", "I;16B", "F"):
        raise ImageReadError(f"image {path} has {im.mode} pixels; expected an 8-bit grayscale PNG")
    return np.asarray(im.convert("L"))


def prepare_image(image: np.ndarray, size: int, rotation_deg: float = 0.0, zoom: float = 1.0) -> np.ndarray:
    """Rotate, zoom (crop the centre 1/zoom) and resize a cutout to size x size.

    Rotation is counter-clockwise in degrees, filling the corners with the sky
    level (median of the image border) so no edge is drawn. zoom must be >= 1:
    the cutouts span twice the galaxy diameter and can only be cropped.
    """
    if zoom < 1:
        raise ValueError(f"zoom {zoom} < 1; expected a crop factor >= 1")
    if size < 8:
        raise ValueError(f"size {size} too small; expected at least 8 pixels")
    mode = "RGB" if image.ndim == 3 else "L"
    pil = Image.fromarray(image, mode)
    if rotation_deg:
        sky = _border_median(image)
        pil = pil.rotate(rotation_deg, resample=Image.Resampling.BICUBIC,
                         fillcolor=tuple(sky) if mode == "RGB" else int(sky))
    if zoom > 1:
        n = pil.width
        p = n / zoom
        lo = (n - p) / 2
        pil = pil.crop((round(lo), round(lo), round(lo + p), round(lo + p)))
    return np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC))


def _border_median(image: np.ndarray) -> np.ndarray | int:
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    med = np.median(border, axis=0)
    return np.round(med).astype(int) if image.ndim == 3 else int(round(float(med)))


def to_three_channels(image: np.ndarray) -> np.ndarray:
    """(H, W) gray -> (H, W, 3) with the gray repeated; colour passes through."""
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    return image


def encode_jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, "RGB" if image.ndim == 3 else "L").save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def load_prepared(path: str | os.PathLike, band: str, size: int, rotation_deg: float = 0.0,
                  zoom: float = 1.0) -> np.ndarray:
    """One image exactly as stages 01-02 hand it to the networks: (size, size, 3) uint8.

    Reads, prepares, passes through the same JPEG encoding 01 writes, and
    repeats gray into three channels as 02 does.
    """
    prepared = prepare_image(read_galaxy_image(path, band), size, rotation_deg, zoom)
    with Image.open(io.BytesIO(encode_jpeg(prepared))) as im:
        return to_three_channels(np.asarray(im))


def prepared_name(pgc: int, size: int, label: str, band: str) -> str:
    tag = band_tag(band)
    return f"pgc{int(pgc)}_{size}x{size}_{label}.{tag}.jpg"


def prepared_folder(size: int, band: str) -> str:
    return f"{size}x{size}_{band_tag(band)}"


# --- stage 01 ----------------------------------------------------------------

@dataclasses.dataclass
class PrepReport:
    """What stage 01 did: images written per band, galaxies without images, bad files skipped."""

    written: dict[str, int]
    missing: pd.DataFrame     # pgc, band, expected (file names looked for)
    bad_files: pd.DataFrame   # pgc, band, path, error
    out_root: Path

    def summary(self) -> pd.DataFrame:
        rows = []
        for band, n in self.written.items():
            rows.append({"band": band, "written": n,
                         "missing": int((self.missing["band"] == band).sum()),
                         "bad_skipped": int((self.bad_files["band"] == band).sum())})
        return pd.DataFrame(rows)


def _prep_one(task):
    """Prepare every requested band of one galaxy; return encoded JPEGs and problems."""
    pgc, label, images_dir, im_root, bands, size, rotation_deg, zoom, skip_bad = task
    done, missing, bad = [], [], []
    for band in bands:
        path = find_image(images_dir, pgc, band, im_root)
        if path is None:
            missing.append((pgc, band, " or ".join(p.name for p in candidate_paths(images_dir, pgc, band, im_root))))
            continue
        try:
            prepared = prepare_image(read_galaxy_image(path, band), size, rotation_deg, zoom)
        except ImageReadError as exc:
            if not skip_bad:
                raise
            bad.append((pgc, band, str(path), str(exc)))
            continue
        done.append((band, prepared_name(pgc, size, label, band), encode_jpeg(prepared)))
    return done, missing, bad


def prep_stage(catalog: pd.DataFrame, images_dir: str | os.PathLike, out_root: str | os.PathLike,
               size: int = 128, bands=BANDS, rotation_deg: float = 0.0, zoom: float = 1.0,
               skip_bad_files: bool = False, im_root: str = IM_ROOT, n_workers: int = 0,
               progress: bool = True) -> PrepReport:
    """Stage 01: write every catalog galaxy's prepared cutout in every band.

    Output appears atomically under `out_root` (which must not exist). A bad
    image file stops the stage naming the file, unless `skip_bad_files`, in
    which case it is listed in the report.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder {images_dir} does not exist")
    bands = list(bands)
    for band in bands:
        band_tag(band)  # validates
    if zoom < 1:
        raise ValueError(f"zoom {zoom} < 1; expected a crop factor >= 1")
    tasks = [(int(p), str(lbl), str(images_dir), im_root, bands, size, rotation_deg, zoom, skip_bad_files)
             for p, lbl in zip(catalog["pgc"], catalog["label"])]
    written = {b: 0 for b in bands}
    missing, bad = [], []
    n_workers = n_workers or os.cpu_count() or 1
    with iio.staged_dir(out_root) as tmp:
        for band in bands:
            (tmp / prepared_folder(size, band)).mkdir()
        results = _map(_prep_one, tasks, n_workers, progress, desc="prep galaxies")
        for done, miss, wrong in results:
            for band, name, data in done:
                (tmp / prepared_folder(size, band) / name).write_bytes(data)
                written[band] += 1
            missing += miss
            bad += wrong
        report = PrepReport(
            written=written,
            missing=pd.DataFrame(missing, columns=["pgc", "band", "expected"]),
            bad_files=pd.DataFrame(bad, columns=["pgc", "band", "path", "error"]),
            out_root=Path(out_root),
        )
        # Kept with the product so the audit trail lists what was not prepared.
        report.missing.to_csv(tmp / "missing_images.csv", index=False)
        report.bad_files.to_csv(tmp / "skipped_bad_files.csv", index=False)
    return report


def _map(func, tasks, n_workers, progress, desc):
    """Ordered map over a process pool (serial for one worker), with a progress bar."""
    chunksize = max(1, len(tasks) // (n_workers * 8))
    bar = dict(total=len(tasks), desc=desc, disable=not progress, mininterval=1.0)
    if n_workers <= 1 or len(tasks) < 2 * n_workers:
        yield from tqdm(map(func, tasks), **bar)
        return
    with ProcessPoolExecutor(n_workers) as pool:
        yield from tqdm(pool.map(func, tasks, chunksize=chunksize), **bar)
