"""Stage 04 augment: uniform-inclination training batches that keep the axis ratio.

This module owns the original pipeline's sampling rules (nine 5-degree bins
filled equally, colour and grayscale equally many, half the grayscale
inverted) and the stage that writes ``augmented/Uset_<jjj>_npz/*.npz``, the
fixed validation set and ``augment.json``.  The image transforms themselves
are in `transforms`; file names come from `layout`.

With ``binary=True`` the same machinery writes the accept/reject classifiers'
batches from ``samples_binary/`` into ``augmented_binary/``: the two classes
(accepted, rejected) take the place of the nine bins, so every batch is
class-balanced, with the regressors' transforms (`BINARY_PARAMS`).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import GRAY_BANDS, io as iio, layout, transforms
from .dataset import load_sample
from .transforms import CHUNK, DEFAULT_PARAMS, AugmentParams
from .dataset import ACCEPTED, REJECTED

log = logging.getLogger(__name__)

SALT = 4004  # stage 04's entry in the run seed sequence
_TRAIN_STREAM, _VALIDATION_STREAM = 1, 2
_BINARY_STREAMS = 3, 4  # the classifiers' training and validation streams

BIN_LOWS = np.arange(45, 90, 5)  # nine 5-degree bins: [45,50], (50,55], ..., (85,90]
N_BINS = len(BIN_LOWS)
BIN_NAMES = [f"{lo}-{lo + 5}" for lo in BIN_LOWS]
CLASS_NAMES = ["accepted", "rejected"]  # the classifiers' "bins": labels ACCEPTED, REJECTED
# The classifiers' label does not depend on orientation, so any rotation would be allowed; but the
# cutouts come rotated (major axis horizontal) and, as for the regressors, the +-15 deg range learned
# better in the short laptop training (64 px, 600 galaxies: validation AUC 0.88 vs 0.85 with +-180).
# Pass params=dataclasses.replace(BINARY_PARAMS, rotation_deg=(-180.0, 180.0)) for full rotation.
BINARY_PARAMS = DEFAULT_PARAMS

COLOUR = layout.filter_code("gri")  # the `filter` letter of colour images, 'c'
FILTER_ORDER = (COLOUR, *(layout.filter_code(b) for b in GRAY_BANDS))  # as augment.json lists them


class AugmentInputError(ValueError):
    """A parameter or training set the stage cannot use."""


# ---- binning --------------------------------------------------------------

def inclination_bin(labels) -> np.ndarray:
    """Bin index 0-8 of each inclination (deg); -1 outside 45-90.

    45 belongs to the first bin; every later bin is open below and closed
    above, as in the original: [45,50], (50,55], ..., (85,90].
    """
    labels = np.asarray(labels, dtype=float)
    b = np.ceil((labels - 45.0) / 5.0).astype(int) - 1
    b[labels == 45] = 0
    b[(labels < 45) | (labels > 90)] = -1
    return b


# ---- sample files ---------------------------------------------------------

def discover_usets(samples_dir, size: int, bands) -> list[int]:
    """Indices 0..m_iter of the training sets present for every band.

    Raises when a band lacks train_000/test_000, when the bands disagree, or
    when the numbering has a gap, naming the missing file.
    """
    found = {}
    for band in bands:
        found[band] = layout.find_samples(samples_dir, band, size, "train")
        for kind in layout.SAMPLE_KINDS:
            f = layout.sample_path(samples_dir, band, size, kind, 0)
            if not f.is_file():
                raise FileNotFoundError(f"{f} not found: band {band!r} at {size}x{size} "
                                        "needs train_000 and test_000 from 03_split")
    last = max(max(f) for f in found.values())
    for j in range(last + 1):
        for band in bands:
            if j not in found[band]:
                raise FileNotFoundError(
                    f"{layout.sample_path(samples_dir, band, size, 'train', j)} not found; expected "
                    f"train_000..train_{last:03d} for every band in {list(bands)}")
    return list(range(last + 1))


class _Pool:
    """One band's source images (None when only counted) with their bin members."""

    def __init__(self, band, images, labels, pgcIDs, binary: bool = False):
        self.band, self.code = band, layout.filter_code(band)
        self.images, self.labels, self.pgc = images, labels, pgcIDs
        bins = labels if binary else inclination_bin(labels)
        self.members = [np.flatnonzero(bins == k) for k in ((ACCEPTED, REJECTED) if binary else range(N_BINS))]

    def counts(self) -> list[int]:
        return [len(m) for m in self.members]


def _load_pools(samples_dir, size, bands, kind, j, images=True, binary=False) -> dict[str, _Pool]:
    return {b: _Pool(b, **load_sample(samples_dir, b, size, kind, j, images=images, binary=binary), binary=binary)
            for b in bands}


# ---- sampling rules -------------------------------------------------------

def _fill(rng, members: np.ndarray, n: int) -> np.ndarray:
    """n draws from members: each repeated equally often, the remainder by a seeded draw."""
    reps, rest = divmod(n, len(members))
    return np.concatenate([np.tile(members, reps), rng.choice(members, rest, replace=False)])


def _bin_status(pools: dict[str, _Pool], names=BIN_NAMES) -> tuple[list[int], dict[str, list[str]]]:
    """Bins used in a batch, and the empty bins of colour, grayscale and those dropped.

    A bin is used only when every image type present (colour, grayscale) has
    members in it, so colour and grayscale stay equally many; the others are
    reported, never silently lost.
    """
    kinds = {}
    if "gri" in pools:
        kinds["colour"] = np.array(pools["gri"].counts()) > 0
    gray = [pools[b] for b in GRAY_BANDS if b in pools]
    if gray:
        kinds["grayscale"] = np.sum([p.counts() for p in gray], axis=0) > 0
    ok = np.all(list(kinds.values()), axis=0)
    empty = {k: [names[i] for i in np.flatnonzero(~v)] for k, v in kinds.items()}
    empty["dropped"] = [names[i] for i in np.flatnonzero(~ok)]
    return [int(i) for i in np.flatnonzero(ok)], empty


def plan_batch(rng: np.random.Generator, pools: dict[str, _Pool], batch_size: int,
               bins: list[int]) -> dict[str, np.ndarray]:
    """Which source image fills each slot of one batch (before augmentation), shuffled.

    Per used bin: batch_size colour images, and batch_size grayscale ones whose
    band is g, r or i with equal chance (among the bands with members in the
    bin), half of them inverted (alternating which bins round up when
    batch_size is odd, so the batch total is exactly half, rounded down).
    """
    code, idx, binv, inv = [], [], [], []
    gray = [b for b in GRAY_BANDS if b in pools]
    n_odd = 0
    for k in bins:
        if "gri" in pools:
            code.append(np.full(batch_size, COLOUR))
            idx.append(_fill(rng, pools["gri"].members[k], batch_size))
            binv.append(np.full(batch_size, k))
            inv.append(np.zeros(batch_size, bool))
        if gray:
            have = [b for b in gray if len(pools[b].members[k])]
            counts = rng.multinomial(batch_size, np.full(len(have), 1.0 / len(have)))
            for b, c in zip(have, counts):
                code.append(np.full(c, b))
                idx.append(_fill(rng, pools[b].members[k], c))
            binv.append(np.full(batch_size, k))
            n_inv = batch_size // 2 + (batch_size % 2) * (n_odd % 2)
            n_odd += 1
            flags = np.zeros(batch_size, bool)
            flags[rng.choice(batch_size, n_inv, replace=False)] = True
            inv.append(flags)
    plan = {"code": np.concatenate(code).astype("<U1"), "index": np.concatenate(idx).astype(np.int64),
            "bin": np.concatenate(binv), "inverted": np.concatenate(inv)}
    order = rng.permutation(len(plan["code"]))
    return {k: v[order] for k, v in plan.items()}


def _plan_arrays(pools: dict[str, _Pool], plan: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The small per-image arrays of a planned batch: labels, pgcIDs, filter, inverted."""
    labels = np.empty(len(plan["code"]), np.int64)
    pgc = np.empty(len(plan["code"]), np.int64)
    for pool in pools.values():
        m = plan["code"] == pool.code
        labels[m] = pool.labels[plan["index"][m]]  # the source galaxy's own label
        pgc[m] = pool.pgc[plan["index"][m]]
    return {"labels": labels, "pgcIDs": pgc, "filter": plan["code"].astype("<U1"),
            "inverted": plan["inverted"].astype(bool)}


def _render_chunks(rng: np.random.Generator, pools: dict[str, _Pool], plan: dict[str, np.ndarray],
                   params: AugmentParams = DEFAULT_PARAMS):
    """Yield the augmented images of a planned batch in file order, 2*CHUNK at a time."""
    by_code = {p.code: p for p in pools.values()}
    size = next(iter(pools.values())).images.shape[1]
    n = len(plan["code"])
    for start in range(0, n, 2 * CHUNK):
        code = plan["code"][start:start + 2 * CHUNK]
        index = plan["index"][start:start + 2 * CHUNK]
        out = np.empty((len(code), size, size, 3), np.uint8)
        for colour in (True, False):
            slots = np.flatnonzero((code == COLOUR) == colour)
            if not len(slots):
                continue
            src = np.empty((len(slots), size, size, 3), np.uint8)
            for c in np.unique(code[slots]):
                m = code[slots] == c
                src[m] = by_code[c].images[index[slots[m]]]
            out[slots] = transforms.augment_images(src, rng, colour, params)
        inv = plan["inverted"][start:start + 2 * CHUNK]
        out[inv] = 255 - out[inv]
        yield out


def render_plan(rng: np.random.Generator, pools: dict[str, _Pool], plan: dict[str, np.ndarray],
                params: AugmentParams = DEFAULT_PARAMS) -> dict[str, np.ndarray]:
    """Augment the planned source images into one in-memory batch (the arrays of one npz file)."""
    images = np.concatenate(list(_render_chunks(rng, pools, plan, params)))
    return {"images": images, **_plan_arrays(pools, plan)}


def batch_counts(batch: dict[str, np.ndarray], binary: bool = False) -> dict:
    """Counts of one written batch: per bin (binary: per class), per filter, inverted grayscale."""
    gray = batch["filter"] != COLOUR
    bins = batch["labels"] if binary else inclination_bin(batch["labels"])
    n_bins = len(CLASS_NAMES) if binary else N_BINS
    return {
        "n": int(len(batch["labels"])),
        "per_bin_colour": np.bincount(bins[~gray], minlength=n_bins).tolist(),
        "per_bin_grayscale": np.bincount(bins[gray], minlength=n_bins).tolist(),
        "colour": int((~gray).sum()),
        "grayscale": int(gray.sum()),
        "by_filter": {c: int((batch["filter"] == c).sum()) for c in FILTER_ORDER},
        "inverted": int(batch["inverted"].sum()),
    }


def validation_plan(rng: np.random.Generator, pools: dict[str, _Pool]) -> dict[str, np.ndarray]:
    """The fixed validation set: every test galaxy once in colour and once in grayscale.

    The grayscale band of each galaxy is g, r or i with equal chance (among
    the bands holding it); half the grayscale images are inverted.  The
    inclination distribution stays natural: it measures the real task.
    """
    code, idx = [], []
    if "gri" in pools:
        code.append(np.full(len(pools["gri"].labels), COLOUR))
        idx.append(np.arange(len(pools["gri"].labels)))
    gray = [b for b in GRAY_BANDS if b in pools]
    if gray:
        where = {b: {int(p): i for i, p in enumerate(pools[b].pgc)} for b in gray}
        pgcs = sorted(set().union(*[w.keys() for w in where.values()]))
        for p in pgcs:
            have = [b for b in gray if p in where[b]]
            b = have[rng.integers(len(have))]
            code.append(np.array([b]))
            idx.append(np.array([where[b][p]]))
    code, idx = np.concatenate(code).astype("<U1"), np.concatenate(idx).astype(np.int64)
    inv = np.zeros(len(code), bool)
    g = np.flatnonzero(code != COLOUR)
    inv[rng.choice(g, len(g) // 2, replace=False)] = True
    order = rng.permutation(len(code))
    return {"code": code[order], "index": idx[order], "inverted": inv[order]}


# ---- the stage ------------------------------------------------------------

_NPY_IMAGES = "images.npy"


def write_plan(path, rng: np.random.Generator, pools: dict[str, _Pool], plan: dict[str, np.ndarray],
               params: AugmentParams = DEFAULT_PARAMS, executor: ThreadPoolExecutor | None = None) -> dict:
    """Augment a planned batch straight into an npz file; return its small arrays.

    The images are written chunk by chunk in file order into the zip entry
    (deflate level 1), so memory holds a few chunks, never the whole batch;
    with an `executor` (one worker) the compression of one chunk overlaps the
    augmentation of the next.  The file is renamed into place only when
    complete.  np.savez_compressed (level 6) would compress these noisy images
    only ~8% better but 4-5x slower, making writing the bottleneck.
    """
    small = _plan_arrays(pools, plan)
    size = next(iter(pools.values())).images.shape[1]
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (len(plan["code"]), size, size, 3)}
    with iio.atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True) as zf:
            with zf.open(_NPY_IMAGES, "w", force_zip64=True) as fh:
                np.lib.format.write_array_header_2_0(fh, header)
                pending = collections.deque()
                try:
                    for chunk in _render_chunks(rng, pools, plan, params):
                        if executor is None:
                            fh.write(chunk)
                            continue
                        pending.append(executor.submit(fh.write, chunk))
                        while len(pending) > 2:  # bound the chunks in flight
                            pending.popleft().result()
                finally:
                    for f in pending:
                        f.result()
            for key, value in small.items():
                with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, value, allow_pickle=False)
    return small



def _check_params(size, bands, n_batches, batch_size) -> list[str]:
    """The bands without repeats; AugmentInputError naming any bad value."""
    try:
        bands = layout.check_bands(bands)
    except ValueError as exc:
        raise AugmentInputError(str(exc)) from exc
    for name, v in (("size", size), ("n_batches", n_batches), ("batch_size", batch_size)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise AugmentInputError(f"{name}={v!r}: expected a positive integer")
    return bands


def _survey(samples_dir, size: int, bands: list[str], usets: list[int], binary: bool = False) -> dict:
    """Source counts, used and empty bins of every training set, read without the images.

    Raises AugmentInputError when a training set has no usable bin or the test
    set (the validation source) is empty, before anything is written.
    """
    survey = {"source_counts": {}, "empty_bins": {}, "used_bins": {}}
    for j in usets:
        pools = _load_pools(samples_dir, size, bands, "train", j, images=False, binary=binary)
        name = layout.uset_name(j)
        survey["source_counts"][name] = {b: p.counts() for b, p in pools.items()}
        survey["used_bins"][name], survey["empty_bins"][name] = _bin_status(pools, CLASS_NAMES if binary
                                                                            else BIN_NAMES)
        if binary and len(survey["used_bins"][name]) < len(CLASS_NAMES):
            raise AugmentInputError(f"{layout.sample_path(samples_dir, bands[0], size, 'train', j)}: a class "
                                    f"has no galaxies in some band type ({survey['empty_bins'][name]})")
        if not survey["used_bins"][name]:
            raise AugmentInputError(f"{layout.sample_path(samples_dir, bands[0], size, 'train', j)}: "
                                    "no inclination bin has galaxies in every band type")
    if not sum(len(p.labels) for p in _load_pools(samples_dir, size, bands, "test", 0, images=False,
                                                  binary=binary).values()):
        raise AugmentInputError(f"{layout.sample_path(samples_dir, bands[0], size, 'test', 0)}: "
                                "no test galaxies to build the validation set from")
    return survey


@dataclasses.dataclass(frozen=True)
class _Run:
    """What every file of one stage run shares: its sources, seed, transforms and writer thread."""

    samples_dir: Path
    size: int
    bands: list[str]
    seed: int
    params: AugmentParams
    writer: ThreadPoolExecutor
    binary: bool = False

    def stream(self, k: int) -> int:
        """Seed stream k (0 training, 1 validation) of this run's kind of batches."""
        return (_BINARY_STREAMS if self.binary else (_TRAIN_STREAM, _VALIDATION_STREAM))[k]


def _write_validation(tmp: Path, run: _Run) -> dict:
    """The fixed validation set from test_000; returns its augment.json entry."""
    rng = np.random.default_rng(np.random.SeedSequence([run.seed, SALT, run.stream(1)]))
    pools = _load_pools(run.samples_dir, run.size, run.bands, "test", 0, binary=run.binary)
    name = layout.validation_name(run.size)
    small = write_plan(tmp / name, rng, pools, validation_plan(rng, pools), run.params, run.writer)
    return {"file": name, **batch_counts(small, run.binary)}


def _write_uset(tmp: Path, run: _Run, j: int, used_bins: list[int], n_batches: int, batch_size: int,
                bar: tqdm) -> dict[str, dict]:
    """The n_batches files of training set j, in order; returns {relative file name: its counts}."""
    pools = _load_pools(run.samples_dir, run.size, run.bands, "train", j, binary=run.binary)
    written = {}
    for b in range(n_batches):
        rng = np.random.default_rng(np.random.SeedSequence([run.seed, SALT, run.stream(0), j, b]))
        plan = plan_batch(rng, pools, batch_size, used_bins)
        rel = layout.batch_relpath(j, run.size, b + 1)
        written[rel] = batch_counts(write_plan(tmp / rel, rng, pools, plan, run.params, run.writer), run.binary)
        bar.update()
    return written


def augment_stage(samples_dir, out_dir, size: int, bands=("g", "r", "i", "gri"),
                  n_batches: int = 3, batch_size: int = 100, seed: int = 42,
                  params: AugmentParams | None = None, progress: bool = True, binary: bool = False) -> dict:
    """Write the augmented training batches, validation set and augment.json.

    For every training set Uset_000..Uset_<m_iter> found in `samples_dir`
    (train_000 and the bagging subsamples), `n_batches` files
    ``Uset_<jjj>_npz/<S>x<S>_train_aug_<NN>.npz``; ``<S>x<S>_validation_aug.npz``
    from test_000.  `out_dir` (the run's ``augmented`` folder) must not exist;
    it appears only when everything was written.  Memory holds one Uset's
    source images and a few chunks of one batch file at a time, whatever
    n_batches.  Returns the augment.json record (parameters, counts, empty
    bins, files).  binary=True: the classifiers' class-balanced batches from
    ``samples_binary/`` (`batch_size` images per class, colour and grayscale
    each), into the run's ``augmented_binary`` folder; params default to
    BINARY_PARAMS (else DEFAULT_PARAMS).
    """
    t0 = time.perf_counter()
    params = params or (BINARY_PARAMS if binary else DEFAULT_PARAMS)
    bands = _check_params(size, bands, n_batches, batch_size)
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; refusing to overwrite it (use a new run folder)")
    usets = discover_usets(samples_dir, size, bands)
    survey = _survey(samples_dir, size, bands, usets, binary)  # every source set checked before writing
    record = {
        "stage": "04_augment", "seed": seed, "size": size, "bands": bands,
        "n_batches": n_batches, "batch_size": batch_size, "m_iter": usets[-1],
        "usets": [layout.uset_name(j) for j in usets],
        "bins": CLASS_NAMES if binary else BIN_NAMES,
        "bin_rule": "classes 0 accepted, 1 rejected" if binary else "[45,50], then (lo,lo+5] up to 90",
        "transform_params": dataclasses.asdict(params),
        "source_counts": survey["source_counts"], "empty_bins": survey["empty_bins"],
        "batch_counts": {}, "files": [],
    }
    with iio.staged_dir(out_dir) as tmp, ThreadPoolExecutor(1) as writer:
        run = _Run(Path(samples_dir), size, bands, seed, params, writer, binary)
        with tqdm(total=len(usets) * n_batches + 1, desc="04_augment batches", disable=not progress) as bar:
            record["validation"] = _write_validation(tmp, run)
            record["files"].append(record["validation"]["file"])
            bar.update()
            for j in usets:
                name = layout.uset_name(j)
                written = _write_uset(tmp, run, j, survey["used_bins"][name], n_batches, batch_size, bar)
                record["batch_counts"][name] = {f"{nn:02d}": c for nn, c in enumerate(written.values(), 1)}
                record["files"].extend(written)
        record["wall_time_s"] = round(time.perf_counter() - t0, 2)
        iio.write_json(tmp / layout.AUGMENT_RECORD, record)
    log.info("04_augment: %d files in %s (%.1f s)", len(record["files"]), out_dir, record["wall_time_s"])
    record["out_dir"] = str(out_dir)
    return record


def load_batch(path, keys=None) -> dict[str, np.ndarray]:
    """The arrays of one augmented npz file; only `keys` when given (the small ones load without the images)."""
    with np.load(path) as d:
        return {k: d[k] for k in (d.files if keys is None else keys)}


# ---- the record as tables (the 04 notebook) ------------------------------------

def _count_row(counts: dict) -> dict[str, int]:
    return {"images": counts["n"], "colour": counts["colour"], "grayscale": counts["grayscale"],
            **{f"filter {k}": v for k, v in counts["by_filter"].items()}, "inverted": counts["inverted"]}


def summary_tables(record: dict) -> dict[str, pd.DataFrame | pd.Series]:
    """augment.json as tables: empty bins and source galaxies per bin of every training set,
    the counts of every batch file, and those of the validation set."""
    empty = pd.DataFrame({u: {kind: ", ".join(bins) or "none" for kind, bins in e.items()}
                          for u, e in record["empty_bins"].items()}).T
    source = pd.DataFrame({(u, b): c for u, per_band in record["source_counts"].items()
                           for b, c in per_band.items()}, index=record.get("bins", BIN_NAMES)).T
    source.index.names = ["training set", "band"]
    batches = pd.DataFrame({(u, nn): _count_row(c) for u, per_file in record["batch_counts"].items()
                            for nn, c in per_file.items()}).T
    batches.index.names = ["training set", "batch"]
    return {"empty_bins": empty, "source_counts": source, "batch_counts": batches,
            "validation": pd.Series(_count_row(record["validation"]), name="validation")}


def uset_bin_counts(record: dict, uset: str) -> dict[str, np.ndarray]:
    """Images per bin summed over the batch files of one training set, colour and grayscale
    (an image type the run does not have is left out)."""
    per_file = record["batch_counts"][uset].values()
    counts = {"colour": np.sum([c["per_bin_colour"] for c in per_file], axis=0),
              "grayscale": np.sum([c["per_bin_grayscale"] for c in per_file], axis=0)}
    return {k: v for k, v in counts.items() if v.sum()}
