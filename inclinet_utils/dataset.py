"""Data products of stages 02 and 03: the per-band npz archives and the splits.

02 packs each prepared folder ``<size>x<size>_<tag>/`` into ``<size>x<size>_<tag>.npz``
with ``images`` (N, size, size, 3) uint8 (grayscale repeated in three channels)
and ``labels`` (2, N) int64: row 0 the pgc ID, row 1 the label code
('F' -> 1, '0' -> 0, else the inclination), the original layout.

03 keeps galaxies labelled 45 or more, draws the held-out test set once (from
the first available band, original order r, i, g, gri) and applies it to every
band by pgc ID, then draws ``m_iter`` bagging subsamples of ``bagging_fraction`` (the original: 2/3)
of the training set: ``<tag>_<size>x<size>_{train,test}_<NNN>.npz`` (test_<NNN>, NNN > 0: the
complement inside the training set, absent for fraction 1) with ``images``, ``labels``
(inclination, deg) and ``pgcIDs``.  `load_sample` is the one checked reader of
those files (stages 04 and 06 use it too).  File names come from `layout`.

For the accept/reject classifiers, `split_binary_stage` writes the same file names
into ``samples_binary/`` with labels 0 (accepted: >= 45 deg) and 1 (rejected: 'F'
or '0'): the regressors' test set and bagging subsamples for the accepted galaxies,
plus the rejected galaxies split the same way with their own seeded stream.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from . import io as iio
from . import layout
from .catalog import label_code

SPLIT_BAND_ORDER = ("r", "i", "g", "gri")  # the original's choice of the band that draws the split
MIN_USABLE_INCLINATION = 45
BAGGING_FRACTION = 2 / 3   # the original's bagging subsample: 2/3 of the training set
MAX_INCLINATION = 90
SAMPLE_KEYS = ("images", "labels", "pgcIDs")
ACCEPTED, REJECTED = 0, 1  # classifier labels (samples_binary/): the network gives P(rejected)
REJECTED_CODES = (0, 1)    # stage-02 label codes of '0' (rejected) and 'F' (face-on)


class DatasetError(ValueError):
    """A data product is missing or malformed."""


# --- stage 02 ----------------------------------------------------------------

def compress_folder(folder: str | os.PathLike, size: int, progress: bool = True,
                    band: str | None = None) -> dict[str, np.ndarray]:
    """Read every prepared JPEG of one folder into the original npz arrays (sorted by pgc).

    Each name must carry `size` and, when given, the `band`; one file per galaxy.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.jpg"))
    parsed, seen = [], {}
    for path in files:
        m = layout.parse_prepared_name(path.name)
        if not m:
            raise DatasetError(f"file {path} is not named pgc<ID>_<size>x<size>_<label>.<tag>.jpg "
                               "(tag g, r, i or RGB)")
        # A misfiled cutout (other size or band) would otherwise be packed silently.
        if (m.width, m.height) != (size, size):
            raise DatasetError(f"file {path} is named {m.width}x{m.height}; expected {size}x{size} in this folder")
        if band is not None and m.band != band:
            raise DatasetError(f"file {path} is named for band {layout.band_tag(m.band)}; expected band "
                               f"{layout.band_tag(band)} in this folder")
        pgc = m.pgc
        if pgc in seen:
            raise DatasetError(f"file {path} repeats galaxy pgc{pgc} (also in {seen[pgc].name}); "
                               "expected one file per galaxy")
        seen[pgc] = path
        parsed.append((pgc, path, m.label))
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
    """Stage 02: one ``<size>x<size>_<tag>.npz`` per prepared folder; returns galaxies per band."""
    folders = {b: layout.prepared_dir(prep_root, size, b) for b in layout.check_bands(bands)}
    for folder in folders.values():
        if not folder.is_dir():
            raise DatasetError(f"prepared folder {folder} does not exist; run 01_prep with size {size} first")
    # Read everything before writing, so a bad file leaves no npz behind.
    arrays = {band: compress_folder(folder, size, progress, band) for band, folder in folders.items()}
    counts = {}
    with iio.staged_dir(out_root) as tmp:
        for band, data in arrays.items():
            if len(data["labels"][0]) == 0:
                raise DatasetError(f"prepared folder {folders[band]} holds no images")
            iio.save_npz(layout.compressed_path(tmp, size, band), **data)
            counts[band] = len(data["labels"][0])
    return counts


def load_compressed(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A stage-02 archive: images (N,S,S,3) uint8 and labels (2, N); DatasetError naming a missing file or key."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"compressed file {path} does not exist")
    with np.load(path) as data:
        missing = {"images", "labels"} - set(data.files)
        if missing:
            raise DatasetError(f"compressed file {path} lacks keys {sorted(missing)}")
        return {"images": data["images"], "labels": data["labels"]}


def compressed_summary(compressed_dir: str | os.PathLike, size: int, bands) -> list[dict]:
    """One row per band's npz for the 02 notebook: shape, dtype, label counts, mean pixel."""
    rows = []
    for band in bands:
        path = layout.compressed_path(compressed_dir, size, band)
        d = load_compressed(path)
        codes = d["labels"][1]
        rows.append({"file": path.name, "images": str(d["images"].shape), "dtype": str(d["images"].dtype),
                     "face-on (1)": int((codes == 1).sum()), "rejected (0)": int((codes == 0).sum()),
                     "usable (>=45)": int((codes >= 45).sum()), "mean pixel": round(float(d["images"].mean()), 1)})
    return rows


# --- stage 03 ----------------------------------------------------------------

def _npy_header(path: Path, key: str) -> tuple[tuple, np.dtype]:
    """Shape and dtype of one array of an npz, read from its header only (nothing decompressed)."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
    return shape, dtype


def _check_sample(path: Path, size: int, shape: tuple, dtype: np.dtype, labels, pgc,
                  binary: bool = False) -> None:
    """Raise DatasetError naming `path` unless its arrays have the stage-03 layout."""
    if dtype != np.uint8 or len(shape) != 4 or tuple(shape[1:]) != (size, size, 3):
        raise DatasetError(f"{path}: images {tuple(shape)} {dtype}, expected (N,{size},{size},3) uint8")
    if labels.shape != (shape[0],) or pgc.shape != (shape[0],):
        raise DatasetError(f"{path}: labels {labels.shape} / pgcIDs {pgc.shape}, expected ({shape[0]},) each")
    if not (np.issubdtype(labels.dtype, np.integer) and np.issubdtype(pgc.dtype, np.integer)):
        raise DatasetError(f"{path}: labels and pgcIDs must be integers, got {labels.dtype} and {pgc.dtype}")
    if binary:
        bad = ~np.isin(labels, (ACCEPTED, REJECTED))
        if bad.any():
            raise DatasetError(f"{path}: {bad.sum()} labels not {ACCEPTED} (accepted) or {REJECTED} (rejected) "
                               f"(e.g. {labels[bad][0]}); expected a classifier split file")
        return
    bad = (labels < MIN_USABLE_INCLINATION) | (labels > MAX_INCLINATION)
    if bad.any():
        raise DatasetError(f"{path}: {bad.sum()} labels outside {MIN_USABLE_INCLINATION}-{MAX_INCLINATION} deg "
                           f"(e.g. {labels[bad][0]}); 03_split keeps only inclinations >= {MIN_USABLE_INCLINATION}")


def load_sample(samples_dir: str | os.PathLike, band: str, size: int, kind: str, index: int,
                images: bool = True, binary: bool = False) -> dict[str, np.ndarray | None]:
    """One split file, checked: images (N,S,S,3) uint8, labels (N,) int64 in 45-90 deg, pgcIDs (N,) int64.

    `band` is g, r, i or gri.  With images=False the images are checked from
    the file header only and None stands in their place (cheap: nothing is
    decompressed).  Raises DatasetError naming the file when it is missing or
    malformed.  binary=True reads a classifier split file (labels 0 accepted, 1 rejected).
    """
    path = layout.sample_path(samples_dir, band, size, kind, index)
    if not path.is_file():
        raise DatasetError(f"sample file {path} does not exist; run 03_split first")
    try:
        with np.load(path) as data:
            missing = set(SAMPLE_KEYS) - set(data.files)
            arrays = {} if missing else {k: data[k] for k in SAMPLE_KEYS if images or k != "images"}
        if not missing:
            shape, dtype = (arrays["images"].shape, arrays["images"].dtype) if images else _npy_header(path, "images")
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path} is not a readable npz sample file: {exc}") from exc
    if missing:
        raise DatasetError(f"{path}: missing keys {sorted(missing)}; expected {list(SAMPLE_KEYS)}")
    _check_sample(path, size, shape, dtype, arrays["labels"], arrays["pgcIDs"], binary)
    return {"images": arrays.get("images"), "labels": arrays["labels"].astype(np.int64),
            "pgcIDs": arrays["pgcIDs"].astype(np.int64)}


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.number))


def check_split_params(test_fraction: float, m_iter: int, bagging_fraction: float = BAGGING_FRACTION) -> None:
    """Raise ValueError naming the value unless 0 < test_fraction < 1, m_iter is an integer >= 1
    and 0 < bagging_fraction <= 1."""
    if not _is_number(test_fraction) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction {test_fraction!r}; expected a fraction between 0 and 1 (exclusive)")
    if not _is_number(bagging_fraction) or not 0 < bagging_fraction <= 1:
        raise ValueError(f"bagging_fraction {bagging_fraction!r}; expected a fraction of the training set "
                         "above 0 and at most 1")
    if isinstance(m_iter, bool) or not isinstance(m_iter, (int, np.integer)) or m_iter < 1:
        raise ValueError(f"m_iter {m_iter!r}; expected an integer number of bagging subsamples, 1 or more")


def subsample_size(n_train: int, bagging_fraction: float) -> int:
    """Galaxies in one bagging subsample of n_train: floor(fraction * n_train), at least 1."""
    return max(1, int(np.floor(n_train * bagging_fraction + 1e-9)))  # 1e-9: 2/3 of 3k is 2k, not 2k - 1


def draw_split(pgc_ids: np.ndarray, test_fraction: float, m_iter: int, seed: int,
               bagging_fraction: float = BAGGING_FRACTION) -> dict[str, np.ndarray | list]:
    """Choose test IDs and bagging subsamples from the usable galaxies of one band.

    Returns {"test": ids, "train": ids, "subsamples": [ids, ...]}, each sorted. With
    bagging_fraction 1 every subsample is the whole training set: the Usets then differ
    only in their augmentation and initialisation (a seed ensemble).
    """
    check_split_params(test_fraction, m_iter, bagging_fraction)
    ids = np.unique(pgc_ids)
    if len(ids) < 3:
        raise DatasetError(f"only {len(ids)} galaxies labelled >= {MIN_USABLE_INCLINATION}; need at least 3 to split")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    order = rng.permutation(ids)
    n_test = min(max(1, int(round(test_fraction * len(ids)))), len(ids) - 2)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    n_sub = subsample_size(len(train), bagging_fraction)
    subsamples = [np.sort(rng.permutation(train)[:n_sub]) for _ in range(m_iter)]
    return {"test": test, "train": train, "subsamples": subsamples}


def _load_usable(compressed_dir, size: int, band: str, binary: bool = False) -> dict[str, np.ndarray]:
    """One band's compressed galaxies labelled >= 45 deg: images, labels (deg), pgcIDs.

    binary=True: those and the rejected ones ('F', '0'), labels ACCEPTED / REJECTED.
    """
    path = layout.compressed_path(compressed_dir, size, band)
    d = load_compressed(path)
    if d["images"].shape[1:] != (size, size, 3):
        raise DatasetError(f"{path} holds images of shape {d['images'].shape[1:]}; expected ({size}, {size}, 3)")
    codes = d["labels"][1]
    accepted = codes >= MIN_USABLE_INCLINATION
    keep = (accepted | np.isin(codes, REJECTED_CODES)) if binary else accepted
    labels = np.where(accepted, ACCEPTED, REJECTED) if binary else codes
    return {"images": d["images"][keep], "labels": labels[keep].astype(np.int64),
            "pgcIDs": d["labels"][0][keep].astype(np.int64)}


def _split_sets(pgc: np.ndarray, split: dict) -> dict[tuple[str, int], np.ndarray]:
    """Masks of one band's usable galaxies: (kind, index) -> in that sample file."""
    is_test = np.isin(pgc, split["test"])
    sets = {("test", 0): is_test, ("train", 0): ~is_test}
    for k, sub in enumerate(split["subsamples"], start=1):
        in_sub = np.isin(pgc, sub)
        sets[("train", k)] = in_sub & ~is_test
        if (~in_sub & ~is_test).any():  # a whole-set subsample (bagging_fraction 1) has no complement
            sets[("test", k)] = ~in_sub & ~is_test  # complement inside the training set
    return sets


def split_stage(compressed_dir: str | os.PathLike, samples_dir: str | os.PathLike, size: int, bands,
                test_fraction: float = 0.1, m_iter: int = 3, seed: int = 42,
                bagging_fraction: float = BAGGING_FRACTION) -> dict:
    """Stage 03: write the held-out test set and bagging subsamples for every band.

    The parameters are checked before anything is read.  Returns the split
    record also written to ``samples/split.json``.
    """
    check_split_params(test_fraction, m_iter, bagging_fraction)
    layout.size_tag(size)
    bands = layout.check_bands(bands)
    data = {b: _load_usable(compressed_dir, size, b) for b in bands}
    main = next(b for b in SPLIT_BAND_ORDER if b in bands)
    split = draw_split(data[main]["pgcIDs"], test_fraction, m_iter, seed, bagging_fraction)
    record = {"seed": seed, "test_fraction": test_fraction, "m_iter": m_iter,
              "bagging_fraction": bagging_fraction, "size": size,
              "bands": bands, "tags": [layout.band_tag(b) for b in bands], "split_band": main,
              "counts": {}, "test_pgc": split["test"], "subsample_pgc": split["subsamples"]}
    with iio.staged_dir(samples_dir) as tmp:
        for band, d in data.items():
            for (kind, k), mask in _split_sets(d["pgcIDs"], split).items():
                iio.save_npz(layout.sample_path(tmp, band, size, kind, k), **{key: v[mask] for key, v in d.items()})
                record["counts"][f"{layout.band_tag(band)}_{kind}_{k:03d}"] = int(mask.sum())
        iio.write_json(tmp / layout.SPLIT_RECORD, record)
    return record


def check_split(samples_dir: str | os.PathLike, size: int, record: dict) -> dict[str, int]:
    """Verify a written split: no held-out galaxy in any training file of any band, and
    every band's test set drawn from the one recorded list. Returns test galaxies per band."""
    held_out = set(np.asarray(record["test_pgc"]).tolist())

    def ids(band, kind, k):
        return set(load_sample(samples_dir, band, size, kind, k, images=False)["pgcIDs"].tolist())

    per_band = {}
    for band in record["bands"]:
        test_ids = ids(band, "test", 0)
        if not test_ids <= held_out:
            raise DatasetError(f"{layout.sample_path(samples_dir, band, size, 'test', 0)} holds galaxies "
                               f"{sorted(test_ids - held_out)[:5]} outside the recorded test set")
        for k in range(record["m_iter"] + 1):
            leaked = held_out & ids(band, "train", k)
            if leaked:
                raise DatasetError(f"{layout.sample_path(samples_dir, band, size, 'train', k)} holds held-out "
                                   f"test galaxies {sorted(leaked)[:5]}")
        per_band[band] = len(test_ids)
    return per_band


# --- stage 03, the classifiers' split ------------------------------------------------

def draw_binary_split(record: dict, rejected_ids: np.ndarray) -> dict[str, np.ndarray | list]:
    """The regressors' split (from their split record) with the rejected galaxies added.

    The rejected galaxies are split like the accepted ones (test_fraction held out, each
    bagging subsample bagging_fraction of the rest) with their own seeded stream, so the regressors'
    draw is untouched. Both classes land in every file; refuses fewer than 3 rejected.
    """
    ids = np.unique(rejected_ids)
    if len(ids) < 3:
        raise DatasetError(f"only {len(ids)} rejected galaxies (labels 'F' or '0'); the classifiers need "
                           "at least 3 to split")
    rng = np.random.default_rng(np.random.SeedSequence([record["seed"], 3, REJECTED]))
    order = rng.permutation(ids)
    n_test = min(max(1, int(round(record["test_fraction"] * len(ids)))), len(ids) - 2)
    train = np.sort(order[n_test:])
    n_sub = subsample_size(len(train), record.get("bagging_fraction", BAGGING_FRACTION))  # older records: 2/3
    subs = [np.sort(rng.permutation(train)[:n_sub]) for _ in range(record["m_iter"])]
    return {"test": np.union1d(record["test_pgc"], order[:n_test]),
            "subsamples": [np.union1d(a, r) for a, r in zip(record["subsample_pgc"], subs)]}


def split_binary_stage(compressed_dir: str | os.PathLike, samples_dir: str | os.PathLike,
                       binary_dir: str | os.PathLike, size: int) -> dict:
    """Stage 03 for the classifiers: ``samples_binary/`` beside the regressors' ``samples/``.

    Reads the regressors' split.json from `samples_dir` (run `split_stage` first), so
    the accepted galaxies keep their test set and Usets. Same file names, labels 0
    (accepted) / 1 (rejected). Returns the record also written to its split.json.
    """
    base = iio.read_json(Path(samples_dir) / layout.SPLIT_RECORD)
    bands = base["bands"]
    data = {b: _load_usable(compressed_dir, size, b, binary=True) for b in bands}
    main = data[base["split_band"]]
    split = draw_binary_split(base, main["pgcIDs"][main["labels"] == REJECTED])
    record = {**{k: base[k] for k in ("seed", "test_fraction", "m_iter", "size", "bands", "tags", "split_band")},
              "bagging_fraction": base.get("bagging_fraction", BAGGING_FRACTION),
              "labels": {"accepted (>= 45 deg)": ACCEPTED, "rejected (F, 0)": REJECTED}, "counts": {},
              "test_pgc": split["test"], "subsample_pgc": split["subsamples"]}
    sets = {band: _split_sets(d["pgcIDs"], split) for band, d in data.items()}
    for band, d in data.items():  # both classes in every file, checked before anything is written
        for (kind, k), mask in sets[band].items():
            if len(np.unique(d["labels"][mask])) < 2:
                raise DatasetError(f"{layout.sample_path(binary_dir, band, size, kind, k)} would hold only one "
                                   "class (galaxies missing in this band?); the classifiers need both")
    with iio.staged_dir(binary_dir) as tmp:
        for band, d in data.items():
            for (kind, k), mask in sets[band].items():
                iio.save_npz(layout.sample_path(tmp, band, size, kind, k), **{key: v[mask] for key, v in d.items()})
                tag = f"{layout.band_tag(band)}_{kind}_{k:03d}"
                record["counts"][tag] = {"accepted": int((d["labels"][mask] == ACCEPTED).sum()),
                                         "rejected": int((d["labels"][mask] == REJECTED).sum())}
        iio.write_json(tmp / layout.SPLIT_RECORD, record)
    return record


def check_binary_split(binary_dir: str | os.PathLike, size: int, record: dict) -> dict[str, dict]:
    """Verify the classifiers' split: both classes in every file, no held-out galaxy in a
    training file, the test set drawn from the recorded list. Returns class counts of test_000 per band."""
    held_out = set(np.asarray(record["test_pgc"]).tolist())
    per_band = {}
    for band in record["bands"]:
        for kind in layout.SAMPLE_KINDS:
            for k in range(record["m_iter"] + 1):
                path = layout.sample_path(binary_dir, band, size, kind, k)
                if kind == "test" and k > 0 and not path.is_file() \
                        and record.get("bagging_fraction", BAGGING_FRACTION) >= 1:
                    continue  # whole-set subsamples have no complement file
                s = load_sample(binary_dir, band, size, kind, k, images=False, binary=True)
                missing = {ACCEPTED, REJECTED} - set(s["labels"].tolist())
                if missing:
                    raise DatasetError(f"{path} holds no galaxy of class {sorted(missing)} (0 accepted, 1 rejected)")
                ids = set(s["pgcIDs"].tolist())
                if kind == "train" and ids & held_out:
                    raise DatasetError(f"{path} holds held-out test galaxies {sorted(ids & held_out)[:5]}")
                if (kind, k) == ("test", 0):
                    if not ids <= held_out:
                        raise DatasetError(f"{path} holds galaxies {sorted(ids - held_out)[:5]} outside the "
                                           "recorded test set")
                    per_band[band] = {"accepted": int((s["labels"] == ACCEPTED).sum()),
                                      "rejected": int((s["labels"] == REJECTED).sum())}
    return per_band
