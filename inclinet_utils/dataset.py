"""Data products of stages 02 and 03: the per-band npz archives and the splits.

02 packs each prepared folder ``<size>x<size>_<tag>/`` into ``<size>x<size>_<tag>.npz``
with ``images`` (N, size, size, 3) uint8 (grayscale repeated in three channels)
and ``labels`` (2, N) int64: row 0 the pgc ID, row 1 the label code
('F' -> 1, '0' -> 0, else the inclination), the original layout.

03 keeps galaxies labelled 45 or more, draws the held-out test set once (from
the first available band, original order r, i, g, RGB) and applies it to every
band by pgc ID, then draws ``m_iter`` bagging subsamples of 2/3 of the training
set: ``<tag>_<size>x<size>_{train,test}_<NNN>.npz`` with ``images``, ``labels``
(inclination, deg) and ``pgcIDs``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from . import io as iio
from .catalog import label_code
from .images import band_tag

SPLIT_BAND_ORDER = ("r", "i", "g", "RGB")  # the original's choice of the band that draws the split
MIN_USABLE_INCLINATION = 45
_PREPARED_NAME = re.compile(r"^pgc(?P<pgc>\d+)_(?P<w>\d+)x(?P<h>\d+)_(?P<label>F|\d+)\.(?P<tag>[A-Za-z]+)\.jpg$")


class DatasetError(ValueError):
    """A data product is missing or malformed."""


# --- stage 02 ----------------------------------------------------------------

def compress_folder(folder: str | os.PathLike, size: int, progress: bool = True,
                    tag: str | None = None) -> dict[str, np.ndarray]:
    """Read every prepared JPEG of one folder into the original npz arrays (sorted by pgc).

    Each name must carry `size` and, when given, the band `tag`; one file per galaxy.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.jpg"))
    parsed, seen = [], {}
    for path in files:
        m = _PREPARED_NAME.match(path.name)
        if not m:
            raise DatasetError(f"file {path} is not named pgc<ID>_<size>x<size>_<label>.<band>.jpg")
        # A misfiled cutout (other size or band) would otherwise be packed silently.
        if (int(m["w"]), int(m["h"])) != (size, size):
            raise DatasetError(f"file {path} is named {m['w']}x{m['h']}; expected {size}x{size} in this folder")
        if tag is not None and m["tag"] != tag:
            raise DatasetError(f"file {path} is named for band {m['tag']}; expected band {tag} in this folder")
        pgc = int(m["pgc"])
        if pgc in seen:
            raise DatasetError(f"file {path} repeats galaxy pgc{pgc} (also in {seen[pgc].name}); "
                               "expected one file per galaxy")
        seen[pgc] = path
        parsed.append((pgc, path, m["label"]))
    parsed.sort(key=lambda t: t[0])
    images = np.empty((len(parsed), size, size, 3), np.uint8)
    labels = np.empty((2, len(parsed)), np.int64)
    for k, (pgc, path, label) in enumerate(tqdm(parsed, desc=folder.name, disable=not progress, mininterval=1.0)):
        try:
            with Image.open(path) as im:
                pixels = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
        except (UnidentifiedImageError, OSError) as exc:
            raise DatasetError(f"file {path} is not a readable JPEG: {exc}") from exc
        if pixels.shape[:2] != (size, size):
            raise DatasetError(
                f"file {path} is {pixels.shape[1]}x{pixels.shape[0]} pixels; expected {size}x{size}"
            )
        images[k] = pixels[..., None] if pixels.ndim == 2 else pixels  # gray broadcasts into 3 channels
        labels[:, k] = (pgc, label_code(label))
    return {"images": images, "labels": labels}


def compress_stage(prep_root: str | os.PathLike, out_root: str | os.PathLike, size: int,
                   bands, progress: bool = True) -> dict[str, int]:
    """Stage 02: one ``<size>x<size>_<tag>.npz`` per prepared folder; returns counts per tag."""
    prep_root = Path(prep_root)
    folders = {band_tag(b): prep_root / f"{size}x{size}_{band_tag(b)}" for b in bands}
    for folder in folders.values():
        if not folder.is_dir():
            raise DatasetError(f"prepared folder {folder} does not exist; run 01_prep with size {size} first")
    # Read everything before writing, so a bad file leaves no npz behind.
    arrays = {tag: compress_folder(folder, size, progress, tag) for tag, folder in folders.items()}
    counts = {}
    with iio.staged_dir(out_root) as tmp:
        for tag, data in arrays.items():
            if len(data["labels"][0]) == 0:
                raise DatasetError(f"prepared folder {folders[tag]} holds no images")
            iio.save_npz(tmp / f"{size}x{size}_{tag}.npz", **data)
            counts[tag] = len(data["labels"][0])
    return counts


def load_compressed(path: str | os.PathLike) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"compressed file {path} does not exist")
    with np.load(path) as data:
        missing = {"images", "labels"} - set(data.files)
        if missing:
            raise DatasetError(f"compressed file {path} lacks keys {sorted(missing)}")
        return {"images": data["images"], "labels": data["labels"]}


# --- stage 03 ----------------------------------------------------------------

def sample_path(samples_dir: str | os.PathLike, tag: str, size: int, kind: str, index: int) -> Path:
    if kind not in ("train", "test"):
        raise ValueError(f"kind {kind!r}; expected 'train' or 'test'")
    return Path(samples_dir) / f"{tag}_{size}x{size}_{kind}_{index:03d}.npz"


def load_sample(samples_dir: str | os.PathLike, tag: str, size: int, kind: str, index: int) -> dict[str, np.ndarray]:
    """One split file as a dict with images, labels (inclination, deg) and pgcIDs."""
    path = sample_path(samples_dir, tag, size, kind, index)
    if not path.is_file():
        raise DatasetError(f"sample file {path} does not exist; run 03_split first")
    with np.load(path) as data:
        return {k: data[k] for k in ("images", "labels", "pgcIDs")}


def draw_split(pgc_ids: np.ndarray, test_fraction: float, m_iter: int, seed: int) -> dict[str, np.ndarray | list]:
    """Choose test IDs and bagging subsamples from the usable galaxies of one band.

    Returns {"test": ids, "train": ids, "subsamples": [ids, ...]}, each sorted.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction {test_fraction}; expected a fraction between 0 and 1")
    if m_iter < 0:
        raise ValueError(f"m_iter {m_iter}; expected 0 or more bagging subsamples")
    ids = np.unique(pgc_ids)
    if len(ids) < 3:
        raise DatasetError(f"only {len(ids)} galaxies labelled >= {MIN_USABLE_INCLINATION}; need at least 3 to split")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    order = rng.permutation(ids)
    n_test = min(max(1, int(round(test_fraction * len(ids)))), len(ids) - 2)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    n_sub = len(train) * 2 // 3
    subsamples = [np.sort(rng.permutation(train)[:n_sub]) for _ in range(m_iter)]
    return {"test": test, "train": train, "subsamples": subsamples}


def split_stage(compressed_dir: str | os.PathLike, samples_dir: str | os.PathLike, size: int, bands,
                test_fraction: float = 0.1, m_iter: int = 3, seed: int = 42) -> dict:
    """Stage 03: write the held-out test set and bagging subsamples for every band.

    Returns the split record also written to ``samples/split.json``.
    """
    compressed_dir = Path(compressed_dir)
    tags = [band_tag(b) for b in bands]
    data = {tag: load_compressed(compressed_dir / f"{size}x{size}_{tag}.npz") for tag in tags}
    for tag, d in data.items():
        if d["images"].shape[1:] != (size, size, 3):
            raise DatasetError(f"{compressed_dir / f'{size}x{size}_{tag}.npz'} holds images of shape "
                               f"{d['images'].shape[1:]}; expected ({size}, {size}, 3)")
    usable = {tag: d["labels"][1] >= MIN_USABLE_INCLINATION for tag, d in data.items()}
    main = next(t for t in SPLIT_BAND_ORDER if t in tags)
    split = draw_split(data[main]["labels"][0][usable[main]], test_fraction, m_iter, seed)
    record = {"seed": seed, "test_fraction": test_fraction, "m_iter": m_iter, "size": size,
              "tags": tags, "split_band": main, "counts": {},
              "test_pgc": split["test"], "subsample_pgc": split["subsamples"]}
    with iio.staged_dir(samples_dir) as tmp:
        for tag, d in data.items():
            keep = usable[tag]
            images, incl, pgc = d["images"][keep], d["labels"][1][keep], d["labels"][0][keep]
            is_test = np.isin(pgc, split["test"])
            sets = {("test", 0): is_test, ("train", 0): ~is_test}
            for k, sub in enumerate(split["subsamples"], start=1):
                in_sub = np.isin(pgc, sub)
                sets[("train", k)] = in_sub & ~is_test
                sets[("test", k)] = ~in_sub & ~is_test  # complement inside the training set
            for (kind, k), mask in sets.items():
                iio.save_npz(sample_path(tmp, tag, size, kind, k),
                             images=images[mask], labels=incl[mask].astype(np.int64),
                             pgcIDs=pgc[mask].astype(np.int64))
                record["counts"][f"{tag}_{kind}_{k:03d}"] = int(mask.sum())
        iio.write_json(tmp / "split.json", record)
    return record


def check_split(samples_dir: str | os.PathLike, size: int, record: dict) -> dict[str, int]:
    """Verify a written split: no held-out galaxy in any training file of any band, and
    every band's test set drawn from the one recorded list. Returns test galaxies per band."""
    held_out = set(np.asarray(record["test_pgc"]).tolist())
    per_band = {}
    for tag in record["tags"]:
        test_ids = set(load_sample(samples_dir, tag, size, "test", 0)["pgcIDs"].tolist())
        if not test_ids <= held_out:
            raise DatasetError(f"{sample_path(samples_dir, tag, size, 'test', 0)} holds galaxies "
                               f"{sorted(test_ids - held_out)[:5]} outside the recorded test set")
        for k in range(record["m_iter"] + 1):
            leaked = held_out & set(load_sample(samples_dir, tag, size, "train", k)["pgcIDs"].tolist())
            if leaked:
                raise DatasetError(f"{sample_path(samples_dir, tag, size, 'train', k)} holds held-out "
                                   f"test galaxies {sorted(leaked)[:5]}")
        per_band[tag] = len(test_ids)
    return per_band
