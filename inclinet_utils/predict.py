"""Inclinations of new galaxy images from a run's trained networks (Python API and CLI).

Owns `predict_inclinations` and ``python -m inclinet_utils.predict IMAGE... --run
outputs/<run-name>``. Images come in the real input format (band PNGs, stored
black galaxy on white sky, possibly with alpha; colour JPEGs; any square size)
and are prepared exactly as stages 01-02 prepare the training images
(`images.load_prepared`), at the size the models take. Every image gets the
median over all models and Usets, the spread over them and each model's value.

Whole surveys: `predict_table` / `write_table` and ``python -m inclinet_utils.predict
--run RUN --images DIR [--catalog FILE] --out TABLE`` (`predict_rows`,
`predict_stream`): one row per image with a status, the bias-corrected
inclination and calibrated sigma from stage 06, streamed in chunks, resumable,
locally or over Dask workers (`--scheduler`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from . import inference
from .images import ImageReadError, load_prepared, read_galaxy_image
from .predict_rows import add_ensemble_columns, band_from_name, pgc_of



def infer_band(path: str | os.PathLike) -> str:
    """Band of an input file from its name: ``*_g.png`` -> 'g' (r, i alike); ``.jpg`` -> 'gri'.

    Other files: grayscale -> 'r' (g, r and i are prepared identically), colour -> 'gri'.
    """
    path = Path(path)
    named = band_from_name(path.name)
    if named is not None:
        return named
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = im.mode
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageReadError(f"image {path} is not a readable image file: {exc}") from exc
    return "r" if mode in ("1", "L", "LA", "P", "I", "I;16", "F") else "gri"


def check_images(image_paths, bands=None) -> list[tuple[Path, str]]:
    """Each path with its band, after checking it is a readable image; errors name the file."""
    paths = [Path(p) for p in image_paths]
    if not paths:
        raise ValueError("no images given; expected one or more image files")
    if bands is not None and len(bands) != len(paths):
        raise ValueError(f"{len(bands)} bands for {len(paths)} images; expected one per image")
    out = []
    for k, path in enumerate(paths):
        if not path.exists():
            raise FileNotFoundError(f"image {path} does not exist")
        if not path.is_file():
            raise ImageReadError(f"image {path} is not a file")
        band = bands[k] if bands is not None else infer_band(path)
        read_galaxy_image(path, band)  # raises ImageReadError naming the file
        out.append((path, band))
    return out


def predict_inclinations(image_paths, run_dir: str | os.PathLike, bands=None, models=None,
                         flips: bool = True) -> pd.DataFrame:
    """Inclination of each image from every trained model of `run_dir`.

    Returns one row per image: path, pgc (from a ``pgc<ID>`` file name, else
    missing), band, inclination_deg (median over all models and Usets),
    spread_deg (standard deviation over them; NaN with a single model),
    n_models, then one column per model (``model4/Uset_000``, ...). `bands`
    overrides the band inferred from each file name; `models` takes the output
    of `inference.load_run_models` to avoid reloading; `flips` averages each
    model's prediction over the image's flips. Raises FileNotFoundError or
    ImageReadError (a ValueError) naming a missing, unreadable or non-image
    file, and InferenceError naming a band none of the run's models trained on
    (with the bands it can measure), before any model is loaded.
    """
    checked = check_images(image_paths, bands)
    check_run_bands(run_dir, [b for _, b in checked])
    loaded, size = models if models is not None else inference.load_run_models(run_dir)
    batch = np.stack([load_prepared(path, band, size) for path, band in checked])
    values = np.column_stack([inference.predict_images(model, batch, flips=flips) for _, model in loaded])
    table = pd.DataFrame({
        "path": [str(p) for p, _ in checked],
        "pgc": pd.array([pgc_of(p.name) for p, _ in checked], dtype="Int64"),
        "band": [b for _, b in checked],
    })
    add_ensemble_columns(table, values, [mf.row for mf, _ in loaded])  # as the survey table's rows
    return table


def check_run_bands(run_dir: str | os.PathLike, bands) -> list[str]:
    """Refuse bands none of the run's models trained on (`inference.check_bands`); the bands it can measure."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    return inference.check_bands(bands, inference.trained_bands(run_dir), run_dir)


def compare_with_catalog(images_dir: str | os.PathLike, catalog_path: str | os.PathLike,
                         run_dir: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """Predict every image of a folder in the real input format and join the catalog labels.

    Only images of bands the run's models trained on are predicted (the others
    are left out; `summary["skipped_bands"]` names them). Returns the per-image
    table (with `label` and `file`, the band suffix) and a summary over images
    of galaxies labelled 45-90 deg: n, RMS and median |delta|.
    """
    from .catalog import read_catalog

    files = sorted(p for p in Path(images_dir).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    measurable = check_run_bands(run_dir, [])
    bands = {f: infer_band(f) for f in files}
    files = [f for f in files if bands[f] in measurable]
    table = predict_inclinations(files, run_dir)
    labels = read_catalog(catalog_path).set_index("pgc")["label"]
    table["label"] = table["pgc"].map(labels)
    table["file"] = [Path(p).name.split("_rot_")[-1] for p in table["path"]]  # g.png ... gri.sdss.jpg
    inc_label = pd.to_numeric(table["label"], errors="coerce")
    delta = (inc_label - table["inclination_deg"])[inc_label >= 45]
    summary = {"n": int(len(delta)), "rms_deg": float(np.sqrt((delta ** 2).mean())) if len(delta) else None,
               "median_abs_deg": float(delta.abs().median()) if len(delta) else None,
               "skipped_bands": sorted(set(bands.values()) - set(measurable))}
    return table, summary


def format_predictions(table: pd.DataFrame) -> str:
    """A prediction table as printed by the CLI (file names, degrees to 0.1)."""
    show = table.copy()
    key = "path" if "path" in show else "file"
    show[key] = [Path(p).name for p in show[key]]
    show = show.rename(columns={key: "image"}).drop(columns=["n_models"])
    return show.to_string(index=False, float_format=lambda v: f"{v:.1f}", na_rep="-")


def predict_table(images, run_dir, catalog=None, bands=None, **kwargs) -> pd.DataFrame:
    """The survey table in memory (`predict_stream.predict_table`): one row per (galaxy, band) image
    with pgc, band, file, inclination_deg, inclination_bc_deg, sigma_deg, spread_deg, n_models,
    disagree, status ('ok' or the reason) and each member's value; bad files never stop the others."""
    from .predict_stream import predict_table as _predict_table

    return _predict_table(images, run_dir, catalog=catalog, bands=bands, **kwargs)


def write_table(images, run_dir, out, catalog=None, bands=None, **kwargs) -> dict:
    """The survey table written to `out` (.csv / .parquet) chunk by chunk (`predict_stream.write_table`)."""
    from .predict_stream import write_table as _write_table

    return _write_table(images, run_dir, out, catalog=catalog, bands=bands, **kwargs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inclinet_utils.predict",
        description="Inclinations (deg) of galaxy images from a run's trained IncliNET models: one row per "
                    "(galaxy, band) image with the ensemble median, its bias-corrected value and calibrated "
                    "1-sigma uncertainty (from 06_evaluate), the spread, the disagreement alarm, each model's "
                    "value and a status ('ok' or why the file could not be used).",
    )
    parser.add_argument("files", nargs="*", metavar="IMAGE",
                        help="input images: pgc<ID>_..._{g,r,i}.png (black galaxy on white) or colour .jpg")
    parser.add_argument("--run", required=True, help="run folder holding models/Uset_<jjj>_<model>.keras")
    parser.add_argument("--images", help="folder of input images (every file in it, or the catalog's galaxies)")
    parser.add_argument("--catalog", help="catalog (pgc column) of the galaxies to measure in --images")
    parser.add_argument("--band", choices=["g", "r", "i", "gri"],
                        help="band of every image (default: from each file name); with --catalog the band to "
                             "measure (default: every band the run trained on)")
    parser.add_argument("--out", help="write the table to this .csv or .parquet file (must not exist)")
    parser.add_argument("--csv", help="same as --out FILE.csv (kept for older scripts)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted --out table")
    parser.add_argument("--chunk-size", type=int, default=256, help="images per chunk (default 256)")
    parser.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786) or 'local' for a "
                                            "LocalCluster; default: this process")
    parser.add_argument("--no-flips", action="store_true", help="do not average over the image's flips")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _inputs(args, parser):
    if bool(args.files) == bool(args.images):
        parser.error("give image files or --images DIR (not both)")
    if args.catalog and not args.images:
        parser.error("--catalog needs --images DIR")
    if args.images and not Path(args.images).is_dir():
        raise FileNotFoundError(f"image folder {args.images} does not exist")
    if args.catalog and not Path(args.catalog).is_file():
        raise FileNotFoundError(f"catalog {args.catalog} does not exist")
    if args.chunk_size < 1:
        raise ValueError(f"--chunk-size {args.chunk_size}; expected 1 or more")
    return args.images or args.files


def _report_failures(table: pd.DataFrame, most: int = 50) -> None:
    """The files not measured and why, on stderr (the first `most`, then a count)."""
    bad = table[table["status"] != "ok"]
    for _, row in bad.head(most).iterrows():
        print(f"{row['file']}: {row['status']}", file=sys.stderr)
    if len(bad) > most:
        print(f"... and {len(bad) - most} more files not measured (see the status column)", file=sys.stderr)


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out
    out = args.out or args.csv
    opts = dict(catalog=args.catalog, bands=args.band, chunk_size=args.chunk_size, scheduler=args.scheduler,
                flips=not args.no_flips, progress=not args.no_progress)
    try:
        images = _inputs(args, parser)
        if not Path(args.run).is_dir():
            raise FileNotFoundError(f"run folder {args.run} does not exist")
        if out:
            summary = write_table(images, args.run, out, resume=args.resume, **opts)
            from .predict_stream import read_table

            n_ok, table = summary["n_ok"], None
            print(f"wrote {summary['n_rows']} rows ({n_ok} ok) to {out}")
            if n_ok < summary["n_rows"]:
                _report_failures(read_table(out, columns=["file", "status"]))
        else:
            table = predict_table(images, args.run, **opts)
            n_ok = int((table["status"] == "ok").sum())
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if table is not None:
        print(format_predictions(table))
        _report_failures(table)
    if n_ok == 0:
        print("error: no image could be measured", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
