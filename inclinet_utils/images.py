"""Galaxy images: finding and reading the real input format, and stage 01 (prep).

Input images follow the original pipeline: per galaxy ``pgc<ID>_<root>_<band>.png``
for the SDSS g, r, i bands (8-bit grayscale, black galaxy on white sky, possibly
with an alpha channel) and ``pgc<ID>_<root>_gri.sdss.jpg`` (preferred) or
``pgc<ID>_<root>_gri.jpg`` for the colour composite (white galaxy on black sky).
Stage 01 cuts and resizes each into
``<size>x<size>_<tag>/pgc<ID>_<size>x<size>_<label>.<tag>.jpg`` where the tag is
the band, or ``RGB`` for the colour composite, as the original did.

Real folders are not that clean, so the reader also takes what users have: band
images stored as RGB or RGBA with equal channels, JPEG bytes behind a ``.png``
name (formats are found from the content), grayscale colour composites, any
size, and cutouts a few pixels off square (padded to square with the sky level
before resizing, as the original deployment did).
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageChops, UnidentifiedImageError
from tqdm import tqdm
from tqdm.contrib.concurrent import process_map

from . import BANDS, io as iio
from . import layout
from .layout import IM_ROOT, is_colour

JPEG_QUALITY = 95  # prepared cutouts: high enough that compression does not blur the disk edge
# Cutouts whose sides differ by at most this many pixels, or this fraction of the long
# side, are padded to square; anything further off square is not a cutout and is refused.
OFF_SQUARE_PIXELS = 3
OFF_SQUARE_FRACTION = 0.02
CHANNEL_TOLERANCE = 8  # a band image's R, G, B may differ this much (JPEG rounding) and count as gray
_DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class ImageReadError(ValueError):
    """An input image is missing, unreadable, corrupt or of an unexpected kind."""


def candidate_paths(images_dir: str | os.PathLike, pgc: int, band: str, im_root: str = IM_ROOT) -> list[Path]:
    """Files that may hold galaxy `pgc` in `band`, in order of preference."""
    return [Path(images_dir) / name for name in layout.input_image_names(pgc, band, im_root)]


def find_image(images_dir: str | os.PathLike, pgc: int, band: str, im_root: str = IM_ROOT) -> Path | None:
    """The input file of galaxy `pgc` in `band`, or None when there is none."""
    for path in candidate_paths(images_dir, pgc, band, im_root):
        if path.is_file():
            return path
    return None


def read_galaxy_image(path: str | os.PathLike, band: str) -> np.ndarray:
    """Read one input image: gray (H, W) uint8 for g, r, i, colour (H, W, 3) uint8 for gri.

    The format is found from the file's content, not its extension (real
    folders hold JPEG bytes behind ``.png`` names). A band image may be 8-bit
    gray, gray with alpha, or RGB/RGBA with equal channels (taken as gray);
    alpha is composited onto the white sky (alpha 0 = sky). A colour composite
    in grayscale (mode L) is repeated into three channels. The array keeps the
    stored size, which may be a few pixels off square (`prepare_image` pads it).
    Raises ImageReadError naming the file when it cannot be read as such an image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            _check_shape(im, path)
            return _colour_array(im) if is_colour(band) else _band_array(im, path)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"image {path} is not a readable image file: {exc}") from exc



def _check_shape(im: Image.Image, path: Path) -> None:
    w, h = im.size
    if min(w, h) < 1:
        raise ImageReadError(f"image {path} is empty ({w}x{h})")
    if abs(w - h) > max(OFF_SQUARE_PIXELS, OFF_SQUARE_FRACTION * max(w, h)):
        raise ImageReadError(
            f"image {path} is {w}x{h}; expected a square cutout (sides within {OFF_SQUARE_PIXELS} "
            f"pixels or {OFF_SQUARE_FRACTION:.0%} of each other are padded to square)")


def _colour_array(im: Image.Image) -> np.ndarray:
    # Mode L (a grayscale composite) and palettes become three equal or mapped channels.
    return np.asarray(im.convert("RGB"))


def _band_array(im: Image.Image, path: Path) -> np.ndarray:
    if im.mode in _DEEP_MODES:
        raise ImageReadError(f"image {path} has {im.mode} pixels; expected an 8-bit grayscale PNG")
    if im.mode in ("1", "L"):
        return np.asarray(im.convert("L"))
    if im.mode == "LA":
        gray, alpha = im.split()
    else:  # RGB, RGBA, P, PA, CMYK, ...: must be gray stored in colour channels
        if im.mode not in ("RGB", "RGBA"):
            im = im.convert("RGBA" if im.mode.endswith("A") or "transparency" in im.info else "RGB")
        channels = im.split()
        gray, alpha = _equal_channels(channels[:3], path), (channels[3] if len(channels) == 4 else None)
    gray = np.asarray(gray)
    if alpha is None or alpha.getextrema()[0] == 255:
        return gray
    # Transparent pixels show the white sky of the black-on-white cutouts.
    a = np.asarray(alpha, dtype=np.float32) / 255.0
    return np.round(gray * a + 255.0 * (1.0 - a)).astype(np.uint8)


def _equal_channels(rgb: tuple[Image.Image, ...], path: Path) -> Image.Image | np.ndarray:
    """The gray of a band image stored as three channels that agree; ImageReadError otherwise."""
    spread = max(ImageChops.difference(rgb[i], rgb[j]).getextrema()[1] for i, j in ((0, 1), (0, 2), (1, 2)))
    if spread == 0:
        return rgb[0]
    if spread > CHANNEL_TOLERANCE:
        raise ImageReadError(
            f"image {path} is a colour image (its channels differ by up to {spread}); "
            "a g, r or i band image must be grayscale (equal channels)")
    return np.round(np.mean([np.asarray(c, dtype=np.float32) for c in rgb], axis=0)).astype(np.uint8)


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Pad an (H, W) or (H, W, 3) cutout to square with its sky level, centred.

    The sky level is the median of the image border; the extra row or column
    of an odd difference goes to the bottom or right. Square images pass through.
    """
    h, w = image.shape[:2]
    if h == w:
        return image
    n = max(h, w)
    out = np.empty((n, n) + image.shape[2:], dtype=image.dtype)
    out[...] = _border_median(image)
    top, left = (n - h) // 2, (n - w) // 2
    out[top:top + h, left:left + w] = image
    return out


def prepare_image(image: np.ndarray, size: int, rotation_deg: float = 0.0, zoom: float = 1.0) -> np.ndarray:
    """Pad to square, rotate, zoom (crop the centre 1/zoom) and resize a cutout to size x size.

    Rotation is counter-clockwise in degrees, filling the corners with the sky
    level (median of the image border) so no edge is drawn. zoom must be >= 1:
    the cutouts span twice the galaxy diameter and can only be cropped.
    """
    if zoom < 1:
        raise ValueError(f"zoom {zoom} < 1; expected a crop factor >= 1")
    if size < 8:
        raise ValueError(f"size {size} too small; expected at least 8 pixels")
    image = pad_to_square(image)
    if image.ndim == 3:
        image = normalise_composite_sky(image)
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


COMPOSITE_SKY = 4  # sky level of the simulator's (and the SDSS service's) colour composites, 0-255
WHITE = 250  # at or above this in every channel: the white corners of a rotated cutout, not sky


def normalise_composite_sky(image: np.ndarray) -> np.ndarray:
    """A colour composite with its sky pedestal moved to COMPOSITE_SKY in every channel.

    Composites from other services or stretches carry a sky of up to ~35 counts
    (often blue-grey); the networks would read that as the galaxy's light
    (benchmarks/ACCURACY.md). The sky is the per-channel median of the border
    without white rotation corners. A composite whose sky is bright is a negative
    (a band image saved as the composite, black galaxy on white) and is inverted.
    Left unchanged when nearly all of the border is white.
    """
    ring = max(2, image.shape[0] // 50)
    border = np.concatenate([image[:ring].reshape(-1, 3), image[-ring:].reshape(-1, 3),
                             image[:, :ring].reshape(-1, 3), image[:, -ring:].reshape(-1, 3)])
    sky_px = border[~np.all(border >= WHITE, axis=1)]
    if len(sky_px) < 0.1 * len(border):
        return image
    if np.median(sky_px) > 127:  # white sky: a negative
        image, sky_px = 255 - image, 255 - sky_px
    sky = np.median(sky_px, axis=0)
    out = image.astype(np.float32) - sky + COMPOSITE_SKY
    white = np.all(image >= WHITE, axis=-1)
    out[white] = 255.0  # white rotation corners stay as they are
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


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


# --- stage 01 ----------------------------------------------------------------

PADDED_COLUMNS = ["pgc", "band", "path", "width", "height"]


@dataclasses.dataclass
class PrepReport:
    """What stage 01 did: images written per band, galaxies without images,
    bad files skipped, and off-square cutouts padded to square."""

    written: dict[str, int]
    missing: pd.DataFrame     # pgc, band, expected (file names looked for)
    bad_files: pd.DataFrame   # pgc, band, path, error
    out_root: Path
    padded: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=PADDED_COLUMNS))  # pgc, band, path, width, height

    def summary(self) -> pd.DataFrame:
        rows = []
        for band, n in self.written.items():
            rows.append({"band": band, "written": n,
                         "missing": int((self.missing["band"] == band).sum()),
                         "bad_skipped": int((self.bad_files["band"] == band).sum()),
                         "padded": int((self.padded["band"] == band).sum())})
        return pd.DataFrame(rows)



def _prep_one(task):
    """Prepare every requested band of one galaxy; return encoded JPEGs and what was odd."""
    pgc, label, images_dir, im_root, bands, size, rotation_deg, zoom, skip_bad = task
    done, missing, bad, padded = [], [], [], []
    for band in bands:
        path = find_image(images_dir, pgc, band, im_root)
        if path is None:
            missing.append((pgc, band, " or ".join(p.name for p in candidate_paths(images_dir, pgc, band, im_root))))
            continue
        try:
            image = read_galaxy_image(path, band)
        except ImageReadError as exc:
            if not skip_bad:
                raise
            bad.append((pgc, band, str(path), str(exc)))
            continue
        height, width = image.shape[:2]
        if width != height:
            padded.append((pgc, band, str(path), width, height))
        prepared = prepare_image(image, size, rotation_deg, zoom)
        done.append((band, layout.prepared_name(pgc, size, label, band), encode_jpeg(prepared)))
    return done, missing, bad, padded


def prep_stage(catalog: pd.DataFrame, images_dir: str | os.PathLike, out_root: str | os.PathLike,
               size: int = 128, bands=BANDS, rotation_deg: float = 0.0, zoom: float = 1.0,
               skip_bad_files: bool = False, im_root: str = IM_ROOT, n_workers: int = 0,
               progress: bool = True, client=None) -> PrepReport:
    """Stage 01: write every catalog galaxy's prepared cutout in every band.

    Output appears atomically under `out_root` (which must not exist). A bad
    image file stops the stage naming the file, unless `skip_bad_files`, in
    which case it is listed in the report. Cutouts a few pixels off square are
    padded to square with their sky level and listed in the report. A Dask
    `client` (`executor.dask_client`) prepares the galaxies on its workers.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder {images_dir} does not exist")
    bands = layout.check_bands(bands)
    if zoom < 1:
        raise ValueError(f"zoom {zoom} < 1; expected a crop factor >= 1")
    tasks = [(int(p), str(lbl), str(images_dir), im_root, bands, size, rotation_deg, zoom, skip_bad_files)
             for p, lbl in zip(catalog["pgc"], catalog["label"])]
    n_workers = n_workers or os.cpu_count() or 1
    with iio.staged_dir(out_root) as tmp:
        for band in bands:
            layout.prepared_dir(tmp, size, band).mkdir()
        results = parallel_map(_prep_one, tasks, n_workers, progress, desc="prep galaxies", client=client)
        report = _write_prepared(results, tmp, size, bands, Path(out_root))
        # Kept with the product so the audit trail lists what was not prepared as is.
        report.missing.to_csv(tmp / layout.MISSING_IMAGES, index=False)
        report.bad_files.to_csv(tmp / layout.SKIPPED_BAD_FILES, index=False)
        report.padded.to_csv(tmp / layout.PADDED_IMAGES, index=False)
    return report


def _write_prepared(results, tmp: Path, size: int, bands: list[str], out_root: Path) -> PrepReport:
    written = {b: 0 for b in bands}
    missing, bad, padded = [], [], []
    for done, miss, wrong, pad in results:
        for band, name, data in done:
            (layout.prepared_dir(tmp, size, band) / name).write_bytes(data)
            written[band] += 1
        missing += miss
        bad += wrong
        padded += pad
    return PrepReport(
        written=written,
        missing=pd.DataFrame(missing, columns=["pgc", "band", "expected"]),
        bad_files=pd.DataFrame(bad, columns=["pgc", "band", "path", "error"]),
        out_root=out_root,
        padded=pd.DataFrame(padded, columns=PADDED_COLUMNS),
    )


def parallel_map(func, tasks, n_workers: int, progress: bool = True, desc: str = "", client=None) -> list:
    """Ordered ``[func(t) for t in tasks]`` over `n_workers` processes, with a progress bar.

    Serial in this process for one worker or few tasks (no pool start-up cost).
    With a Dask `client` (or scheduler address, `executor.dask_client`) the tasks
    run on its workers instead. An exception in any task is raised here.
    """
    tasks = list(tasks)
    if client is not None:
        from .executor import dask_client, map_ordered

        with dask_client(client) as c:
            return map_ordered(func, tasks, c, progress, desc)
    bar = dict(desc=desc, disable=not progress, mininterval=1.0)
    if n_workers <= 1 or len(tasks) < 2 * n_workers:
        return [func(t) for t in tqdm(tasks, **bar)]
    chunksize = max(1, len(tasks) // (n_workers * 8))
    return process_map(func, tasks, max_workers=n_workers, chunksize=chunksize, **bar)
