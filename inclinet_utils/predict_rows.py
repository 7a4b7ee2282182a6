"""The rows of a survey prediction table: which files to measure, and one chunk measured.

`find_jobs` turns a folder, a list of files or a folder plus catalog into jobs
(file, band, pgc); `RunContext` holds what every chunk needs from the run folder
(model rows, trained bands, the bias fit and uncertainty calibration of stage 06);
`measure_chunk` prepares a chunk's images exactly as stages 01-02 do and returns
one row per job: ok rows carry the flip-averaged inclination of every member,
their median, its bias-corrected value, the calibrated sigma and the `disagree`
alarm, and, when the run trained accept/reject classifiers, the ensemble
probability that a human would reject the image (`p_reject`) and `accepted`
(p_reject at most 06's threshold, `classify.rejection_threshold`); the others carry the reason in `status`. Models are loaded once per
process (`run_models`), so a Dask worker loads them for its first chunk only.
Per-row columns derived from the measurement are added in ONE place,
`add_run_columns`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from . import inference, layout
from . import io as iio
from .images import ImageReadError, find_image, load_prepared
from .metrics import BiasFit

log = logging.getLogger(__name__)

ENSEMBLE_ROW = "all/median"  # the ensemble the table reports; its 06 bias fit and calibration
BASE_COLUMNS = ["file", "pgc", "band", "inclination_deg", "inclination_bc_deg", "sigma_deg", "spread_deg",
                "n_models", "disagree", "status"]
CLASSIFIER_COLUMNS = ["p_reject", "accepted"]  # only for runs with trained classifiers
OK = "ok"
_PGC = re.compile(r"pgc(?P<pgc>\d+)", re.IGNORECASE)
_BAND_SUFFIX = re.compile(r"_(?P<band>[gri])\.png$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Job:
    """One image to measure: its file, band (None: read from the file) and galaxy; a
    `status` set here (e.g. no file for a catalog galaxy) means it is not measured."""

    file: str
    band: str | None
    pgc: int | None
    status: str | None = None


def pgc_of(name: str) -> int | None:
    m = _PGC.search(name)
    return int(m["pgc"]) if m else None


def band_from_name(name: str) -> str | None:
    """``*_g.png`` -> 'g', ``*.jpg`` -> 'gri'; None when the name does not say."""
    m = _BAND_SUFFIX.search(name)
    if m:
        return m["band"].lower()
    return "gri" if name.lower().endswith((".jpg", ".jpeg")) else None


def folder_files(images_dir: Path) -> list[Path]:
    """Every plain, non-hidden file of a folder, sorted by name (non-images included: they get a status)."""
    return sorted(p for p in images_dir.iterdir() if not p.name.startswith(".") and p.is_file())


def find_jobs(images, catalog=None, bands=None) -> list[Job]:
    """Jobs for a folder (every file), a list of files, or a folder with a catalog (its galaxies x `bands`).

    `bands` overrides the band of every file (file or folder input) or lists the
    bands to look for (catalog input; then it is required).
    """
    if catalog is not None:
        return _catalog_jobs(Path(images), catalog, bands)
    if isinstance(images, (str, os.PathLike)) and Path(images).is_dir():
        files = folder_files(Path(images))
    elif isinstance(images, (str, os.PathLike)):
        files = [Path(images)]
    else:
        files = [Path(p) for p in images]
    if not files:
        raise ValueError(f"no image files in {images}; expected a folder of images or a list of files")
    band = bands if isinstance(bands, str) or bands is None else None
    if band is not None:
        layout.check_band(band)
    jobs = []
    for f in files:
        named = layout.parse_input_image_name(f.name)  # pgc<ID>_<root>_<band>.png / ..._gri[.sdss].jpg
        jobs.append(Job(str(f), band or (named.band if named else band_from_name(f.name)),
                        named.pgc if named else pgc_of(f.name),
                        None if f.is_file() else f"missing: image {f} does not exist"))
    return jobs


def _catalog_jobs(images_dir: Path, catalog, bands) -> list[Job]:
    from .catalog import read_catalog

    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder {images_dir} does not exist")
    table = catalog if isinstance(catalog, pd.DataFrame) else read_catalog(catalog)
    bands = layout.check_bands(bands)
    jobs = []
    for pgc in table["pgc"].astype(int):
        for band in bands:
            path = find_image(images_dir, pgc, band)
            if path is None:
                names = " or ".join(layout.input_image_names(pgc, band))
                jobs.append(Job(str(images_dir / layout.input_image_names(pgc, band)[0]), band, int(pgc),
                                f"missing: no {names} in {images_dir}"))
            else:
                jobs.append(Job(str(path), band, int(pgc)))
    return jobs


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What measuring a chunk needs from the run folder; small and picklable (sent to Dask workers)."""

    run_dir: str
    rows: tuple[str, ...]                   # model/Uset members, column order
    by_model: dict                          # member -> bands it trained on
    bias: BiasFit | None                    # 06 fit of ENSEMBLE_ROW (None before 06)
    calibration: object | None              # uncertainty.Calibration (None before 06)
    flips: bool = True
    batch_size: int = 64
    classifier_rows: tuple[str, ...] = ()   # accept/reject classifiers (none: no p_reject column)
    classifier_bands: tuple[str, ...] = ()  # bands they trained on
    reject_threshold: float | None = None   # 06's threshold (None before 06)

    @property
    def columns(self) -> list[str]:
        return BASE_COLUMNS + (CLASSIFIER_COLUMNS if self.classifier_rows else []) + list(self.rows)


def _bias_fit(run_dir: Path) -> BiasFit | None:
    path = layout.run_paths(run_dir)["evaluation"] / layout.EVALUATION_FILES["bias_fits"]
    if not path.is_file():
        return None
    fits = pd.read_csv(path).set_index("row")
    if ENSEMBLE_ROW not in fits.index:
        return None
    f = fits.loc[ENSEMBLE_ROW]
    return BiasFit(float(f["m"]), float(f["b"]), int(f["n_fit"]), float(f["rms_fit_before"]),
                   float(f["rms_fit_after"]))


def run_context(run_dir, flips: bool = True, batch_size: int = 64) -> RunContext:
    """Read the run folder once: members, trained bands, 06's bias fit and uncertainty calibration."""
    from . import uncertainty

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    files = inference.find_models(layout.run_paths(run_dir)["models"])
    bias, cal = _bias_fit(run_dir), uncertainty.load_calibration(run_dir)
    if bias is None or cal is None:
        log.warning("%s has no stage-06 evaluation (bias_fits.csv, uncertainty.json): inclination_bc_deg and "
                    "sigma_deg are left empty and no disagreement alarm is raised; run 06_evaluate first", run_dir)
    by_model = inference.trained_bands(run_dir, files)
    return RunContext(str(run_dir), tuple(mf.row for mf in files), by_model, bias, cal, flips, batch_size,
                      **_classifier_context(run_dir, by_model))


def _classifier_context(run_dir: Path, by_model: dict) -> dict:
    """The run's classifiers, their bands and 06's rejection threshold (RunContext fields)."""
    from . import classify

    files = classify.find_classifiers(layout.run_paths(run_dir)["models"])
    if not files:
        return {}
    record = layout.run_paths(run_dir)["classifier"]
    bands = iio.read_json(record)["bands"] if record.is_file() else sorted({b for v in by_model.values() for b in v})
    threshold = classify.rejection_threshold(run_dir) if record.is_file() else None
    if threshold is None:
        log.warning("%s has classifiers but no %s: p_reject is given, accepted is left empty; run 06_evaluate",
                    run_dir, record.name)
    return {"classifier_rows": tuple(mf.row for mf in files), "classifier_bands": tuple(bands),
            "reject_threshold": threshold}


_MODELS: dict = {}
_MODELS_LOCK = threading.Lock()


def _cached(run_dir: str, family: str, files, load):
    """`load()` once per process for these files (a Dask worker loads them at its first chunk)."""
    key = (str(Path(run_dir).resolve()), family, tuple((str(mf.path), mf.path.stat().st_mtime_ns) for mf in files))
    with _MODELS_LOCK:
        if key not in _MODELS:
            for old in [k for k in _MODELS if k[1] == family]:
                del _MODELS[old]  # one run at a time per process
            _MODELS[key] = load()
        return _MODELS[key]


def run_models(run_dir: str):
    """The run's loaded regressors and their image size, cached per process."""
    files = inference.find_models(layout.run_paths(run_dir)["models"])
    return _cached(run_dir, "regressors", files, lambda: inference.load_run_models(run_dir))


def run_classifiers(run_dir: str) -> list:
    """[(ModelFile, model)] of the run's accept/reject classifiers, cached per process."""
    from . import classify

    files = classify.find_classifiers(layout.run_paths(run_dir)["models"])
    return _cached(run_dir, "classifiers", files, lambda: [(mf, inference.load_model(mf.path)) for mf in files])


def load_chunk(jobs: list[Job], ctx: RunContext, size: int) -> tuple[list[dict], np.ndarray]:
    """(a row start per job, the prepared images of the jobs that can be measured, in order)."""
    from .predict import infer_band

    rows, images = [], []
    for job in jobs:
        row = {"file": job.file, "pgc": job.pgc, "band": job.band or "", "status": job.status}
        if row["status"] is None:
            try:
                row["band"] = job.band or infer_band(job.file)
                inference.check_bands([row["band"]], ctx.by_model, ctx.run_dir)
                images.append(load_prepared(job.file, row["band"], size))
                row["status"] = OK
            except inference.InferenceError as exc:
                row["status"] = f"untrained band: {exc}"
            except (ImageReadError, FileNotFoundError) as exc:
                row["status"] = f"unreadable: {exc}"
            except (ValueError, OSError) as exc:  # e.g. too small to prepare
                row["status"] = f"failed: {exc}"
        rows.append(row)
    empty = np.zeros((0, size, size, 3), np.uint8)
    return rows, (np.stack(images) if images else empty)


def predict_loaded(rows: list[dict], images: np.ndarray, ctx: RunContext, models) -> pd.DataFrame:
    """The table of one loaded chunk: every member on its images, then `add_run_columns`."""
    table = pd.DataFrame(rows, columns=["file", "pgc", "band", "status"])
    ok = (table["status"] == OK).to_numpy()
    values = np.full((len(table), len(ctx.rows)), np.nan)
    if ok.any():
        values[ok] = np.column_stack([inference.predict_images(model, images, ctx.batch_size, flips=ctx.flips)
                                      for _, model in models])
    table["pgc"] = pd.array(table["pgc"], dtype="Int64")
    add_ensemble_columns(table, values, ctx.rows)
    if ctx.classifier_rows:
        _add_rejection(table, images, ok, ctx)
    return add_run_columns(table, ctx)[ctx.columns]


def add_ensemble_columns(table: pd.DataFrame, values: np.ndarray, rows) -> None:
    """inclination_deg (median over the members), spread_deg (their standard deviation; NaN with one
    member), n_models, then one column per member, from `values` (images x members; NaN rows: not measured)."""
    table["inclination_deg"] = np.median(values, axis=1)
    table["spread_deg"] = values.std(axis=1, ddof=1) if values.shape[1] > 1 else np.full(len(values), np.nan)
    table["n_models"] = np.isfinite(values).all(axis=1) * values.shape[1]
    for k, name in enumerate(rows):
        table[name] = values[:, k]


def _add_rejection(table: pd.DataFrame, images: np.ndarray, ok: np.ndarray, ctx: RunContext) -> None:
    """p_reject (mean over the classifiers, flip-averaged) of the ok rows in a band they trained
    on, and `accepted` where 06's threshold is known; empty elsewhere."""
    from .classify import reject_probability

    p = np.full(len(table), np.nan)
    usable = ok & table["band"].isin(ctx.classifier_bands).to_numpy()
    if usable.any():
        measured = images[usable[ok]]  # images hold the ok rows, in order
        p[usable] = np.mean([reject_probability(model, measured, ctx.batch_size, ctx.flips)
                             for _, model in run_classifiers(ctx.run_dir)], axis=0)
    table["p_reject"] = p
    accepted = pd.array([pd.NA] * len(table), dtype="boolean")
    if ctx.reject_threshold is not None:
        accepted[usable] = p[usable] <= ctx.reject_threshold
    table["accepted"] = accepted


def add_run_columns(table: pd.DataFrame, ctx: RunContext) -> pd.DataFrame:
    """Columns derived from the ensemble value: bias-corrected inclination (06's fit), calibrated
    sigma and the disagreement alarm. The one place to add further per-row columns."""
    ok = (table["status"] == OK).to_numpy()
    nan = np.full(len(table), np.nan)
    table["inclination_bc_deg"] = np.where(ok, ctx.bias.apply(table["inclination_deg"]), np.nan) \
        if ctx.bias is not None else nan
    cal = ctx.calibration
    table["sigma_deg"] = np.where(ok, cal.sigma(table["spread_deg"]), np.nan) if cal is not None else nan
    table["disagree"] = (ok & cal.disagree(table["spread_deg"])) if cal is not None else np.zeros(len(table), bool)
    return table


def measure_chunk(jobs: list[Job], ctx: RunContext) -> pd.DataFrame:
    """One chunk's rows (loads the run's models on first use in this process)."""
    models, size = run_models(ctx.run_dir)
    if [mf.row for mf, _ in models] != list(ctx.rows):
        raise inference.InferenceError(f"models of {ctx.run_dir} changed while predicting")
    rows, images = load_chunk(jobs, ctx, size)
    return predict_loaded(rows, images, ctx, models)
