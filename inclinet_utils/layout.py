"""Names of every file and folder of a run, built and parsed in one place.

A run folder ``outputs/<run>/`` holds one sub-folder per stage (`run_paths`).
Inside each, ``*_name`` functions give a file or folder name, ``*_path``
functions join that name onto a stage folder you pass (the run's, or a stage's
temporary folder while it writes), and ``parse_*`` functions read a name back
(None when the name is not of that kind). Nothing here touches the disk except
the ``find_*`` listings and the path checks that raise FileNotFoundError.

One band vocabulary: users and the API say ``g r i gri``. On disk the colour
composite keeps the original pipeline's tags, so existing data products stay
readable: ``RGB`` in prepared, compressed and sample names (`band_tag`), ``c``
in the ``filter`` array of augmented batches (`filter_code`).

    prep/<S>x<S>_<tag>/pgc<ID>_<S>x<S>_<label>.<tag>.jpg     (01)
    compressed/<S>x<S>_<tag>.npz                             (02)
    samples/<tag>_<S>x<S>_{train,test}_<NNN>.npz, split.json (03)
    augmented/Uset_<NNN>_npz/<S>x<S>_train_aug_<NN>.npz      (04)
    augmented/<S>x<S>_validation_aug.npz, augment.json       (04)
    models/Uset_<NNN>_<model>.keras, Uset_<NNN>_<model>_ckpt/ (05; a dead attempt: _ckpt.dead-<n>/)
    samples_binary/, augmented_binary/, models/Uset_<NNN>_<model>_binary.keras  (03-05, classifiers)
    evaluation/*.csv, *.png, evaluation.json; metrics.json   (06)
"""

from __future__ import annotations

import dataclasses
import typing
import datetime as _dt
import os
import re
from pathlib import Path

from . import BANDS

IM_ROOT = "d25x2_rot"  # input cutouts: twice the D25 diameter, rotated major axis horizontal
_TAGS = {"g": "g", "r": "r", "i": "i", "gri": "RGB"}      # prep / compressed / samples
_FILTERS = {"g": "g", "r": "r", "i": "i", "gri": "c"}     # augmented `filter` arrays
FILTER_CODES = tuple(_FILTERS[b] for b in BANDS)          # ('g', 'r', 'i', 'c')
SAMPLE_KINDS = ("train", "test")
# The accept/reject classifiers: their sample and augmented folders, and their model
# names, carry this marker (samples_binary/, augmented_binary/, model4_binary).
BINARY = "_binary"
DEAD_MARK = ".dead-"   # models/<stem>_ckpt.dead-<n>/: a training attempt whose network died (05)

# Inside a sample folder in the real input format (a run's input/, or the user's own).
INPUT_IMAGES_DIR = "galaxies"
INPUT_CATALOG = Path("catalogs") / "catalog.csv"

# Record files beside the products.
MISSING_IMAGES = "missing_images.csv"    # prep/
SKIPPED_BAD_FILES = "skipped_bad_files.csv"  # prep/
PADDED_IMAGES = "padded_images.csv"      # prep/: inputs a few pixels off square, padded
SPLIT_RECORD = "split.json"              # samples/
AUGMENT_RECORD = "augment.json"          # augmented/
TRAINED_BANDS = "trained_bands.json"     # run folder: bands each model trained on (06, inference)
CLASSIFIER_RECORD = "classifier.json"    # run folder: rejection threshold of the classifiers (06, predict)
CLASSIFIER_METRICS = "classifier"        # metrics.json: key of the classifiers' metrics (not a row)
EVALUATION_FILES = {                      # evaluation/
    "metrics_csv": "metrics.csv",
    "by_band": "metrics_by_band.csv",
    "bias_fits": "bias_fits.csv",
    "predictions": "predictions_test.csv",
    "info": "evaluation.json",
    "uncertainty": "uncertainty.json",  # calibrated sigma(spread) and the alarm threshold (uncertainty.py)
    "calibration": "calibration_test.csv",  # test images: residual, spread, sigma, disagree
    "framing": "framing.csv",  # the held-out galaxies re-framed (framing.py): RMS per framing
}

_INT = r"(?:0|[1-9]\d*)"
_SIZE = rf"(?P<size>{_INT})x(?P=size)"
_TAG = "(?P<tag>" + "|".join(_TAGS.values()) + ")"
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


# ---- bands ------------------------------------------------------------------------

def check_band(band: str) -> str:
    """`band` if it is one of g, r, i, gri; else a ValueError naming it."""
    if band not in BANDS:
        hint = f" ({band!r} is the on-disk tag of {band_from_tag(band)!r})" if band in ("RGB", "c") else ""
        raise ValueError(f"unknown band {band!r}{hint}; expected one of {list(BANDS)}")
    return band


def check_bands(bands) -> list[str]:
    """The bands as a list without repeats, in the given order; refuses an empty or bad list."""
    bands = [bands] if isinstance(bands, str) else list(dict.fromkeys(bands))
    if not bands:
        raise ValueError(f"no bands given; expected some of {list(BANDS)}")
    return [check_band(b) for b in bands]


def is_colour(band: str) -> bool:
    return check_band(band) == "gri"


def band_tag(band: str) -> str:
    """On-disk tag of a band in prepared, compressed and sample names: gri -> 'RGB'."""
    return _TAGS[check_band(band)]


def band_from_tag(tag: str) -> str:
    """The band of an on-disk tag ('RGB' -> 'gri', also the augmented 'c')."""
    for table in (_TAGS, _FILTERS):
        for band, t in table.items():
            if t == tag:
                return band
    known = sorted(set(_TAGS.values()) | set(_FILTERS.values()))
    raise ValueError(f"unknown band tag {tag!r}; expected one of {known}")


def filter_code(band: str) -> str:
    """Letter of a band in the ``filter`` array of augmented batches: gri -> 'c'."""
    return _FILTERS[check_band(band)]


def size_tag(size: int) -> str:
    """'<S>x<S>' for a positive integer size."""
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"size {size!r}; expected a positive integer number of pixels")
    return f"{int(size)}x{int(size)}"


# ---- run folder -------------------------------------------------------------------

def run_paths(run_dir: str | os.PathLike) -> dict[str, Path]:
    """Where each stage reads and writes inside one run folder."""
    run_dir = Path(run_dir)
    return {
        "run": run_dir,
        "notebooks": run_dir / "notebooks",
        "logs": run_dir / "logs",
        "input": run_dir / "input",                 # 00_simulate's sample (real format)
        "input_images": run_dir / "input" / INPUT_IMAGES_DIR,
        "input_catalog": run_dir / "input" / INPUT_CATALOG,
        "prep": run_dir / "prep",
        "compressed": run_dir / "compressed",
        "samples": run_dir / "samples",
        "samples_binary": run_dir / f"samples{BINARY}",      # 03: classifier splits (accepted + rejected)
        "augmented": run_dir / "augmented",
        "augmented_binary": run_dir / f"augmented{BINARY}",  # 04: class-balanced classifier batches
        "classifier": run_dir / CLASSIFIER_RECORD,
        "models": run_dir / "models",
        "evaluation": run_dir / "evaluation",
        "realism": run_dir / "realism",            # 00: realism report (realism.save_report)
        "metrics": run_dir / "metrics.json",
        "run_json": run_dir / "run.json",
    }


def check_run_name(name: str) -> str:
    """A run folder name: one plain folder (letters, digits, . _ + -), no separators, not '..'."""
    if not isinstance(name, str) or not _RUN_NAME.match(name) or name in (".", ".."):
        raise ValueError(f"run name {name!r}; expected a plain folder name of letters, digits and . _ + - "
                         "(no path separators, no '..')")
    return name


def default_run_name(size: int, bands, when: _dt.datetime | None = None) -> str:
    """'<date>-<time>_<size>_<bands>', e.g. 20260101-120000_128_g-gri."""
    stamp = (when or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}_{int(size)}_{'-'.join(check_bands(bands))}"


def notebook_path(run_dir: str | os.PathLike, stage: str, suffix: str = ".ipynb") -> Path:
    """The executed notebook of a stage (suffix '.html' for its HTML copy)."""
    return run_paths(run_dir)["notebooks"] / f"{stage}{suffix}"


def failed_notebook_name(stage: str, stamp: str, suffix: str = ".ipynb") -> str:
    """Name an earlier failed attempt of a stage's notebook keeps beside the new one."""
    return f"{stage}.failed-{stamp}{suffix}"


# ---- input images (00_simulate writes them; 01_prep reads them) -------------------

def input_image_names(pgc: int, band: str, im_root: str = IM_ROOT) -> list[str]:
    """File names that may hold galaxy `pgc` in `band`, most preferred first."""
    stem = f"pgc{int(pgc)}_{im_root}_{check_band(band)}"
    return [stem + ".sdss.jpg", stem + ".jpg"] if is_colour(band) else [stem + ".png"]


def simulated_image_name(pgc: int, band: str) -> str:
    """Name 00_simulate writes: the local colour composite is ``..._gri.jpg``."""
    return input_image_names(pgc, band)[-1]


_INPUT_IMAGE = re.compile(r"^pgc(?P<pgc>\d+)_(?P<root>.+)_(?:(?P<gray>[gri])\.png|gri(?:\.sdss)?\.jpg)$")


class InputImageName(typing.NamedTuple):
    """An input cutout's name read back: galaxy, band and the root between them."""

    pgc: int
    band: str
    im_root: str


def parse_input_image_name(name: str) -> InputImageName | None:
    """``pgc<ID>_<root>_<band>.png`` / ``..._gri[.sdss].jpg`` read back, or None."""
    found = _INPUT_IMAGE.match(Path(name).name)
    return None if found is None else InputImageName(int(found["pgc"]), found["gray"] or "gri", found["root"])


# ---- 01 prep ----------------------------------------------------------------------

def prepared_folder_name(size: int, band: str) -> str:
    return f"{size_tag(size)}_{band_tag(band)}"


def prepared_dir(prep_dir: str | os.PathLike, size: int, band: str) -> Path:
    return Path(prep_dir) / prepared_folder_name(size, band)


def prepared_name(pgc: int, size: int, label: str, band: str) -> str:
    """``pgc<ID>_<S>x<S>_<label>.<tag>.jpg``; label 'F', '0' or the inclination."""
    return f"pgc{int(pgc)}_{size_tag(size)}_{label}.{band_tag(band)}.jpg"


@dataclasses.dataclass(frozen=True)
class PreparedName:
    pgc: int
    width: int
    height: int
    label: str
    band: str


_PREPARED = re.compile(rf"^pgc(?P<pgc>\d+)_(?P<w>\d+)x(?P<h>\d+)_(?P<label>F|\d+)\.{_TAG}\.jpg$")


def parse_prepared_name(name: str) -> PreparedName | None:
    """A prepared cutout's name read back (width and height as written, even if unequal)."""
    m = _PREPARED.match(Path(name).name)
    if not m:
        return None
    return PreparedName(int(m["pgc"]), int(m["w"]), int(m["h"]), m["label"], band_from_tag(m["tag"]))


def parse_prepared_folder_name(name: str) -> tuple[int, str] | None:
    """(size, band) of a ``<S>x<S>_<tag>`` folder."""
    m = re.match(rf"^{_SIZE}_{_TAG}$", Path(name).name)
    return (int(m["size"]), band_from_tag(m["tag"])) if m else None


# ---- 02 compress ------------------------------------------------------------------

def compressed_name(size: int, band: str) -> str:
    return f"{size_tag(size)}_{band_tag(band)}.npz"


def compressed_path(compressed_dir: str | os.PathLike, size: int, band: str) -> Path:
    return Path(compressed_dir) / compressed_name(size, band)


def parse_compressed_name(name: str) -> tuple[int, str] | None:
    """(size, band) of a ``<S>x<S>_<tag>.npz``."""
    m = re.match(rf"^{_SIZE}_{_TAG}\.npz$", Path(name).name)
    return (int(m["size"]), band_from_tag(m["tag"])) if m else None


# ---- 03 split ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SampleName:
    band: str
    size: int
    kind: str   # 'train' or 'test'
    index: int  # 0: all training galaxies / the held-out test set; 1..: bagging subsamples


def sample_name(band: str, size: int, kind: str, index: int) -> str:
    """``<tag>_<S>x<S>_{train,test}_<NNN>.npz``."""
    if kind not in SAMPLE_KINDS:
        raise ValueError(f"kind {kind!r}; expected 'train' or 'test'")
    if int(index) != index or index < 0:
        raise ValueError(f"sample index {index!r}; expected 0 or more")
    return f"{band_tag(band)}_{size_tag(size)}_{kind}_{int(index):03d}.npz"


def sample_path(samples_dir: str | os.PathLike, band: str, size: int, kind: str, index: int) -> Path:
    return Path(samples_dir) / sample_name(band, size, kind, index)


_SAMPLE = re.compile(rf"^{_TAG}_{_SIZE}_(?P<kind>train|test)_(?P<index>\d{{3}})\.npz$")


def parse_sample_name(name: str) -> SampleName | None:
    m = _SAMPLE.match(Path(name).name)
    if not m:
        return None
    return SampleName(band_from_tag(m["tag"]), int(m["size"]), m["kind"], int(m["index"]))


def find_samples(samples_dir: str | os.PathLike, band: str, size: int, kind: str = "train") -> list[int]:
    """Sorted indices of the `kind` sample files of one band and size present in the folder."""
    samples_dir = Path(samples_dir)
    if not samples_dir.is_dir():
        return []
    want = (check_band(band), int(size), kind)
    parsed = (parse_sample_name(p.name) for p in samples_dir.iterdir())
    return sorted(s.index for s in parsed if s and (s.band, s.size, s.kind) == want)


# ---- 04 augment -------------------------------------------------------------------

def uset_name(uset: int) -> str:
    """'Uset_<NNN>': training set 0 (all training galaxies) or bagging subsample 1.."""
    if int(uset) != uset or uset < 0:
        raise ValueError(f"Uset index {uset!r}; expected 0 or more")
    return f"Uset_{int(uset):03d}"


def parse_uset_name(name: str) -> int | None:
    m = re.match(r"^Uset_(?P<uset>\d{3})$", name)
    return int(m["uset"]) if m else None


def uset_dir_name(uset: int) -> str:
    return f"{uset_name(uset)}_npz"


def uset_dir(augmented_dir: str | os.PathLike, uset: int) -> Path:
    return Path(augmented_dir) / uset_dir_name(uset)


def parse_uset_dir_name(name: str) -> int | None:
    m = re.match(r"^Uset_(?P<uset>\d{3})_npz$", Path(name).name)
    return int(m["uset"]) if m else None


def batch_name(size: int, number: int) -> str:
    """``<S>x<S>_train_aug_<NN>.npz``; batch numbers start at 1."""
    if int(number) != number or number < 1:
        raise ValueError(f"batch number {number!r}; expected 1 or more")
    return f"{size_tag(size)}_train_aug_{int(number):02d}.npz"


def batch_relpath(uset: int, size: int, number: int) -> str:
    """A batch file relative to the augmented folder (as augment.json lists it)."""
    return f"{uset_dir_name(uset)}/{batch_name(size, number)}"


def batch_path(augmented_dir: str | os.PathLike, uset: int, size: int, number: int) -> Path:
    return uset_dir(augmented_dir, uset) / batch_name(size, number)


def parse_batch_name(name: str) -> tuple[int, int] | None:
    """(size, batch number) of a ``<S>x<S>_train_aug_<NN>.npz``."""
    m = re.match(rf"^{_SIZE}_train_aug_(?P<nn>\d+)\.npz$", Path(name).name)
    return (int(m["size"]), int(m["nn"])) if m else None


def batch_number(path: str | os.PathLike) -> int:
    parsed = parse_batch_name(Path(path).name)
    if parsed is None:
        raise ValueError(f"{path} is not an augmented batch file <S>x<S>_train_aug_<NN>.npz")
    return parsed[1]


def validation_name(size: int) -> str:
    return f"{size_tag(size)}_validation_aug.npz"


def validation_path(augmented_dir: str | os.PathLike, size: int) -> Path:
    return Path(augmented_dir) / validation_name(size)


def find_usets(augmented_dir: str | os.PathLike, size: int) -> list[int]:
    """Uset indices that have at least one augmented batch file of this size."""
    augmented_dir = Path(augmented_dir)
    if not augmented_dir.is_dir():
        return []
    found = []
    for d in sorted(augmented_dir.iterdir()):
        uset = parse_uset_dir_name(d.name)
        if uset is not None and d.is_dir() and _batches_in(d, size):
            found.append(uset)
    return found


def _batches_in(folder: Path, size: int) -> list[Path]:
    files = [(parse_batch_name(p.name), p) for p in folder.iterdir()] if folder.is_dir() else []
    return [p for parsed, p in sorted((f for f in files if f[0] and f[0][0] == size), key=lambda f: f[0][1])]


def batch_files(augmented_dir: str | os.PathLike, uset: int, size: int) -> list[Path]:
    """The augmented training files of one Uset and size, sorted by batch number; raises if none."""
    folder = uset_dir(augmented_dir, uset)
    files = _batches_in(folder, size)
    if not files:
        raise FileNotFoundError(f"no augmented batch files {folder}/{size_tag(size)}_train_aug_<NN>.npz; "
                                f"run stage 04 (04_augment) with size={size} first")
    return files


def validation_file(augmented_dir: str | os.PathLike, size: int) -> Path:
    """The fixed augmented validation set; raises if it is not there."""
    path = validation_path(augmented_dir, size)
    if not path.is_file():
        raise FileNotFoundError(f"validation set {path} does not exist; run stage 04 with size={size} first")
    return path


# ---- 05 train ---------------------------------------------------------------------

_MODEL = rf"[A-Za-z0-9]+(?:{BINARY})?"


def binary_name(model: str) -> str:
    """The classifier of a regressor's stack: 'model4' -> 'model4_binary'."""
    return f"{model}{BINARY}"


def is_binary(model: str) -> bool:
    """Whether a model name is a classifier's (ends in the `BINARY` marker)."""
    return str(model).endswith(BINARY)


def model_stem(model: str, uset: int) -> str:
    """'Uset_<NNN>_<model>', the stem of every file of one (model, Uset) training."""
    if not re.fullmatch(_MODEL, str(model)):
        raise ValueError(f"model name {model!r}; expected letters and digits only (e.g. model4), "
                         f"optionally ending in {BINARY}")
    return f"{uset_name(uset)}_{model}"


def model_file_name(model: str, uset: int) -> str:
    return f"{model_stem(model, uset)}.keras"


def parse_model_file_name(name: str) -> tuple[str, int] | None:
    """(model, uset) of a final model file ``Uset_<NNN>_<model>.keras``."""
    m = re.match(rf"^Uset_(?P<uset>\d{{3}})_(?P<model>{_MODEL})\.keras$", Path(name).name)
    return (m["model"], int(m["uset"])) if m else None


def training_paths(models_dir: str | os.PathLike, model: str, uset: int) -> dict[str, Path]:
    """Files of one (model, Uset) training under the run's models/ folder."""
    models_dir = Path(models_dir)
    stem = model_stem(model, uset)
    ckpt_dir = models_dir / f"{stem}_ckpt"
    return {
        "ckpt_dir": ckpt_dir,
        "eval_dict": ckpt_dir / f"{stem}_evalDict.json",
        "eval_fig": ckpt_dir / f"{stem}_evalFig.jpg",
        "checkpoint": ckpt_dir / f"{stem}_checkpoint.npz",
        "params": ckpt_dir / f"{stem}_params.json",
        "csv_log": ckpt_dir / f"{stem}_log.csv",
        "tensorboard": ckpt_dir / "tensorboard",
        "final": models_dir / model_file_name(model, uset),
    }


def dead_training_dir(ckpt_dir: str | os.PathLike, n: int) -> Path:
    """Where 05 sets aside the n-th (1-based) attempt of a training whose network died."""
    ckpt_dir = Path(ckpt_dir)
    return ckpt_dir.with_name(f"{ckpt_dir.name}{DEAD_MARK}{n}")


def dead_training_dirs(ckpt_dir: str | os.PathLike) -> list[Path]:
    """The set-aside dead attempts of one training, in order."""
    ckpt_dir = Path(ckpt_dir)
    prefix = f"{ckpt_dir.name}{DEAD_MARK}"
    found = ckpt_dir.parent.glob(prefix + "*") if ckpt_dir.parent.is_dir() else []
    numbered = {int(p.name[len(prefix):]): p for p in found if p.name[len(prefix):].isdigit()}
    return [numbered[n] for n in sorted(numbered)]


def find_model_files(models_dir: str | os.PathLike, classifiers: bool = False) -> list[tuple[str, int, Path]]:
    """(model, uset, path) of every final regressor file (classifiers=True: of every classifier),
    sorted by model name then Uset."""
    models_dir = Path(models_dir)
    found = []
    if models_dir.is_dir():
        for path in models_dir.iterdir():
            parsed = parse_model_file_name(path.name)
            if parsed and path.is_file() and is_binary(parsed[0]) == classifiers:
                found.append((*parsed, path))
    return sorted(found, key=lambda f: (f[0], f[1]))


# ---- 06 evaluate ------------------------------------------------------------------

def model_row(model: str, uset: int) -> str:
    """Name of one trained network in metrics.json and prediction tables: 'model4/Uset_000'."""
    return f"{model}/{uset_name(uset)}"


def parse_model_row(row: str) -> tuple[str, int] | None:
    """(model, uset) of a 'model4/Uset_000' row (also with '+bc'); None for ensembles."""
    m = re.match(rf"^(?P<model>{_MODEL})/Uset_(?P<uset>\d{{3}})(?:\+bc)?$", row)
    return (m["model"], int(m["uset"])) if m else None


# ---- predict: a table over a survey, written chunk by chunk ------------------------

PREDICT_MANIFEST = "manifest.json"


def prediction_parts_dir(out: str | os.PathLike) -> Path:
    """Folder beside an output table holding its finished chunks until the table is complete."""
    out = Path(out)
    return out.with_name(f"{out.name}.parts")


def prediction_part_name(chunk: int) -> str:
    """``part-<NNNNNN>.csv``: the rows of one chunk of a prediction table."""
    if int(chunk) != chunk or chunk < 0:
        raise ValueError(f"chunk index {chunk!r}; expected 0 or more")
    return f"part-{int(chunk):06d}.csv"


def parse_prediction_part_name(name: str) -> int | None:
    m = re.match(r"^part-(?P<k>\d{6})\.csv$", Path(name).name)
    return int(m["k"]) if m else None


def figure_name(name: str) -> str:
    """File name of an evaluation figure."""
    return f"{name}.png"
