"""Accuracy of a run's networks against the classical axis-ratio method, on synthetic truth and real galaxies.

    python benchmarks/bench_accuracy.py                      # runs the main command, then measures it
    python benchmarks/bench_accuracy.py --run-dir outputs/<run>
    python benchmarks/bench_accuracy.py -- --n-galaxies 60 --size 32   # extra options for run_notebooks.py

Prints one table and saves it as ``accuracy.json`` in the run folder:

* synthetic test set (06's predictions_test.csv) against the exact inclination
  ``inc_true``: each single (model, Uset), the ensemble raw and bias-corrected
  (the run's own fits on training galaxies), and the axis-ratio method, all on the
  same images (those where the axis-ratio method found a galaxy), every band pooled;
* real labelled galaxies (label >= 45 deg) of ../shared/real_sdss and
  ../shared/real_sdss_varied (absent folders are skipped): the ensemble median on
  the colour composite and on each grayscale band the run trained on, raw and with
  the run's all/median correction, next to the axis-ratio method on the same
  images; files that cannot be read are listed, not fatal;
* the wall time of every stage (run.json);
* the held-out galaxies re-framed (06's evaluation/framing.csv: other zooms, an
  off-centre galaxy, coarser pixels, shallower images), ensemble vs axis-ratio
  method, under "framing" in accuracy.json when 06 checked it;
* the default classifiers' rejection probability (ensemble of the run's ``*_binary``
  models) of every labelled real galaxy of those folders, accepted (>= 45 deg) vs
  rejected (``F`` / ``0``), with the AUC per band and the run's threshold
  (classifier.json), under "classifier" in accuracy.json.

Columns: RMS, MAE, bias (mean of truth - predicted) and outlier fraction
(|delta| > 10 deg) in degrees, and RMS and MAE over the axis-ratio method's on
the same images (ratio < 1: the network is better).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inclinet_utils import io as iio  # noqa: E402
from inclinet_utils import layout  # noqa: E402
from inclinet_utils.framing import summary_table  # noqa: E402
from inclinet_utils.metrics import AXIS_RATIO, BC, BiasFit, compute_metrics, row_table  # noqa: E402

SHARED = ROOT.parent / "shared"
REAL_FOLDERS = ("real_sdss", "real_sdss_varied")
MAIN_COMMAND = ["run_notebooks.py", "--size", "128", "--band", "gri"]
ACCURACY_FILE = "accuracy.json"
log = logging.getLogger("bench_accuracy")


def run_main_command(extra: list[str]) -> Path:
    """Run the main command (plus `extra` options) into a new run folder; returns it."""
    known = argparse.ArgumentParser(add_help=False)
    known.add_argument("--size", type=int, default=128)
    known.add_argument("--band", nargs="+", default=["gri"])
    chosen, _ = known.parse_known_args(extra)  # the run's name tells its size and bands
    name = layout.default_run_name(chosen.size, chosen.band)
    cmd = [sys.executable, *MAIN_COMMAND, "--run-name", name, *extra]
    print("running:", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return ROOT / "outputs" / name


def _evaluation_file(run_dir: Path, key: str) -> Path:
    return layout.run_paths(run_dir)["evaluation"] / layout.EVALUATION_FILES[key]


def _score(part: pd.DataFrame, truth_col: str) -> dict:
    m = compute_metrics(part[truth_col], part["predicted_deg"])
    return {k: m[k] for k in ("rms_deg", "mae_deg", "bias_deg", "outlier_frac", "n")}


def _with_ratios(rows: list[dict]) -> list[dict]:
    """Add rms_ratio and mae_ratio: each row over the axis-ratio row of its group."""
    base = {r["group"]: r for r in rows if r["row"] == AXIS_RATIO}
    for r in rows:
        b = base.get(r["group"])
        for key in ("rms", "mae"):
            r[f"{key}_ratio"] = r[f"{key}_deg"] / b[f"{key}_deg"] if b and b[f"{key}_deg"] else float("nan")
    return rows


def synthetic_rows(run_dir: Path) -> list[dict]:
    """Single models, ensembles (raw, +bc) and the axis ratio vs inc_true on the same test images."""
    from inclinet_utils.catalog import read_catalog

    pred = pd.read_csv(_evaluation_file(run_dir, "predictions"))
    fits = pd.read_csv(_evaluation_file(run_dir, "bias_fits")).set_index("row")
    catalog = read_catalog(layout.run_paths(run_dir)["input_catalog"])
    if "inc_true" not in catalog:
        log.warning("%s has no inc_true column: not a synthetic run, no synthetic rows", run_dir)
        return []
    truth = dict(zip(catalog["pgc"].astype(int), catalog["inc_true"].astype(float)))
    ar = pred[pred["source"] == AXIS_RATIO].dropna(subset=["predicted_deg"])
    same = pred.merge(ar[["band", "pgc"]], on=["band", "pgc"])  # the images the formula measured
    singles = sorted(s for s in same["source"].unique() if layout.parse_model_row(s))
    wanted = [(s, [s], "mean") for s in singles]
    wanted += [("all/mean", singles, "mean"), ("all/median", singles, "median"), (AXIS_RATIO, [AXIS_RATIO], "mean")]
    rows = []
    for name, sources, how in wanted:
        table = row_table(same, sources, how, truth)
        variants = [(name, table)]
        if name.startswith("all/"):
            fit = BiasFit(*(float(fits.loc[name, k]) for k in ("m", "b")), int(fits.loc[name, "n_fit"]),
                          float(fits.loc[name, "rms_fit_before"]), float(fits.loc[name, "rms_fit_after"]))
            variants.append((name + BC, table.assign(predicted_deg=fit.apply(table["predicted_deg"]))))
        for row, t in variants:
            rows.append({"group": "synthetic vs inc_true", "row": row, **_score(t, "true_deg")})
    return _with_ratios(rows)


def _real_images(folder: Path, bands: list[str]) -> tuple[list[tuple[int, float, str, Path]], list[str]]:
    """(pgc, label, band, path) of every labelled >= 45 deg galaxy's image in `bands`, and missing ones."""
    from inclinet_utils.catalog import read_catalog
    from inclinet_utils.images import find_image

    catalog = read_catalog(folder / "catalogs" / "catalog.csv")
    label = pd.to_numeric(catalog["label"], errors="coerce")
    found, missing = [], []
    for pgc, inc in zip(catalog["pgc"][label >= 45].astype(int), label[label >= 45]):
        for band in bands:
            path = find_image(folder / "galaxies", pgc, band)
            if path is None:
                missing.append(f"pgc{pgc} {band}")
            else:
                found.append((pgc, float(inc), band, path))
    return found, missing


def predict_real(run_dir: Path, items, models) -> tuple[pd.DataFrame, list[str]]:
    """Ensemble median and axis-ratio inclination of each (pgc, label, band, path); unreadable files listed."""
    from inclinet_utils.axis_ratio import axis_ratio_inclination
    from inclinet_utils.images import read_galaxy_image
    from inclinet_utils.predict import predict_inclinations

    rows, failed = [], []
    for pgc, label, band, path in items:
        try:
            table = predict_inclinations([path], run_dir, bands=[band], models=models)
            ar = axis_ratio_inclination(read_galaxy_image(path, band), galaxy_dark=band != "gri")
        except (ValueError, OSError) as exc:  # ImageReadError is a ValueError
            failed.append(f"{path}: {exc}")
            continue
        rows.append({"pgc": pgc, "label": label, "band": band, "file": path.name,
                     "ensemble": float(table["inclination_deg"].iloc[0]), AXIS_RATIO: ar})
    return pd.DataFrame(rows), failed


def real_rows(run_dir: Path, folders: list[Path]) -> tuple[list[dict], dict]:
    """Ensemble (raw, +bc) and axis ratio vs the human labels, per band, on the same real images."""
    from inclinet_utils import inference

    bands = inference.check_bands([], inference.trained_bands(run_dir), run_dir)
    fits = pd.read_csv(_evaluation_file(run_dir, "bias_fits")).set_index("row")
    fit = BiasFit(*(float(fits.loc["all/median", k]) for k in ("m", "b")), int(fits.loc["all/median", "n_fit"]),
                  float(fits.loc["all/median", "rms_fit_before"]), float(fits.loc["all/median", "rms_fit_after"]))
    models = inference.load_run_models(run_dir)
    rows, notes, tables = [], {"missing": [], "failed": [], "folders": [str(f) for f in folders]}, []
    for folder in folders:
        items, missing = _real_images(folder, bands)
        table, failed = predict_real(run_dir, items, models)
        notes["missing"] += [f"{folder.name}: {m}" for m in missing]
        notes["failed"] += failed
        tables.append(table.assign(folder=folder.name))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    for band in bands:
        part = table[(table["band"] == band) & table[AXIS_RATIO].notna()] if len(table) else table
        if not len(part):
            continue
        group = f"real labelled >= 45, {band}"
        for row, values in (("all/median", part["ensemble"]), ("all/median" + BC, fit.apply(part["ensemble"])),
                            (AXIS_RATIO, part[AXIS_RATIO])):
            rows.append({"group": group, "row": row,
                         **_score(pd.DataFrame({"label": part["label"], "predicted_deg": values}), "label")})
    notes["per_image"] = table.round(2).to_dict("records") if len(table) else []
    return _with_ratios(rows), notes


def _labelled_real(folder: Path, bands: list[str]):
    """(pgc, label, rejected, band, path) of every accepted (>= 45) or rejected (F, 0) real galaxy's image."""
    from inclinet_utils.catalog import read_catalog
    from inclinet_utils.images import find_image

    catalog = read_catalog(folder / "catalogs" / "catalog.csv")
    for pgc, label in zip(catalog["pgc"].astype(int), catalog["label"].astype(str)):
        rejected = label in ("F", "0")
        if not rejected and not (label.isdigit() and int(label) >= 45):
            continue
        for band in bands:
            path = find_image(folder / "galaxies", pgc, band)
            if path is not None:
                yield pgc, label, rejected, band, path


def classifier_rows(run_dir: Path, folders: list[Path]) -> dict:
    """P(rejected) of the run's classifier ensemble for each labelled real galaxy, and the AUC per band."""
    from inclinet_utils import classify
    from inclinet_utils.images import load_prepared

    run = layout.run_paths(run_dir)
    if not classify.find_classifiers(run["models"]) or not run["classifier"].is_file():
        return {"note": f"no classifiers (or no {layout.CLASSIFIER_RECORD}) in {run_dir}"}
    record = iio.read_json(run["classifier"])
    from inclinet_utils.config import run_config

    size = run_config(run_dir).size
    rows, failed = [], []
    for folder in folders:
        for pgc, label, rejected, band, path in _labelled_real(folder, record["bands"]):
            try:
                image = load_prepared(path, band, size)
            except (ValueError, OSError) as exc:
                failed.append(f"{path}: {exc}")
                continue
            rows.append({"folder": folder.name, "pgc": pgc, "label": label, "rejected": rejected, "band": band,
                         "image": image})
    table = pd.DataFrame(rows)
    out = {"threshold": record["threshold"], "members": record["members"], "failed": failed, "auc": {}}
    if not len(table):
        return out
    import numpy as np

    table["p_reject"] = np.nan
    for band, part in table.groupby("band"):
        table.loc[part.index, "p_reject"] = classify.reject_probabilities(run_dir, np.stack(part["image"]), band)
        if part["rejected"].any() and not part["rejected"].all():
            out["auc"][band] = classify.auc(part["rejected"], table.loc[part.index, "p_reject"])
    table["accepted"] = table["p_reject"] <= record["threshold"]
    out["per_image"] = table.drop(columns="image").round(4).to_dict("records")
    return out


def format_classifier(result: dict) -> str:
    if "per_image" not in result:
        return "\nclassifiers: " + result.get("note", "no labelled real images")
    t = pd.DataFrame(result["per_image"])
    lines = ["", f"classifiers {', '.join(result['members'])}: P(rejected) of the labelled real galaxies "
             f"(rejected when > {result['threshold']:.3f})",
             t.pivot_table(index=["folder", "pgc", "label"], columns="band", values="p_reject").round(3).to_string(),
             "AUC (accepted >= 45 vs F/0): " + (", ".join(f"{b} {a:.3f}" for b, a in result["auc"].items()) or "n/a")]
    return "\n".join(lines)


def framing_rows(run_dir: Path) -> list[dict]:
    """06's re-framed held-out galaxies (evaluation/framing.csv); [] when 06 did not check them."""
    path = _evaluation_file(run_dir, "framing")
    return pd.read_csv(path).to_dict("records") if path.is_file() else []


def format_framing(rows: list[dict]) -> str:
    if not rows:
        return "\nframing: not checked by 06 (framing_check=False)"
    t = summary_table(pd.DataFrame(rows), ("rms_deg", "bias_deg", "rms_vs_axis_ratio")).round(2)
    return (f"\nheld-out galaxies re-framed (degrees against the {rows[0]['against']}; axis ratio on the "
            f"prepared images):\n{t.to_string()}")


def stage_times(run_dir: Path) -> dict:
    """Stage -> wall seconds from run.json (empty when the run has none)."""
    path = layout.run_paths(run_dir)["run_json"]
    if not path.is_file():
        return {}
    return {stage: entry.get("wall_s") for stage, entry in iio.read_json(path).get("stages", {}).items()}


def format_table(rows: list[dict], times: dict, notes: dict) -> str:
    """The printed table: one line per row, grouped, then stage times and unreadable files."""
    head = f"{'row':<22}{'RMS':>7}{'MAE':>7}{'bias':>7}{'>10deg':>8}{'n':>5}{'RMS/AR':>8}{'MAE/AR':>8}"
    lines, group = [], None
    for r in rows:
        if r["group"] != group:
            group = r["group"]
            lines += ["", group, head, "-" * len(head)]
        lines.append(f"{r['row']:<22}{r['rms_deg']:7.2f}{r['mae_deg']:7.2f}{r['bias_deg']:7.2f}"
                     f"{r['outlier_frac']:8.3f}{r['n']:5d}{r['rms_ratio']:8.2f}{r['mae_ratio']:8.2f}")
    lines += ["", "degrees; bias = mean(truth - predicted); AR = axis-ratio method on the same images"]
    if times:
        lines += ["", "stage wall time [s]: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items() if v is not None),
                  f"total {sum(v for v in times.values() if v):.0f} s"]
    for what in ("failed", "missing"):
        if notes.get(what):
            lines += ["", f"real images {what} ({len(notes[what])}):", *("  " + f for f in notes[what])]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="an existing run folder (default: run the main command)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing accuracy.json")
    parser.add_argument("extra", nargs="*", help="after --: options passed on to run_notebooks.py")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_dir = args.run_dir if args.run_dir else run_main_command(args.extra)
    out = run_dir / ACCURACY_FILE
    if not layout.run_paths(run_dir)["metrics"].is_file():
        parser.error(f"{run_dir} has no metrics.json; run its 06_evaluate stage first")
    if out.exists() and not args.overwrite:
        parser.error(f"{out} already exists; pass --overwrite to replace it")
    folders = [SHARED / f for f in REAL_FOLDERS if (SHARED / f / "galaxies").is_dir()]
    rows = synthetic_rows(run_dir)
    real, notes = real_rows(run_dir, folders)
    times = stage_times(run_dir)
    clf = classifier_rows(run_dir, folders)
    framed = framing_rows(run_dir)
    print(format_table(rows + real, times, notes))
    print(format_framing(framed))
    print(format_classifier(clf))
    iio.write_json(out, {"run_dir": str(run_dir), "rows": rows + real, "stage_wall_s": times, **notes,
                         "framing": framed, "classifier": clf}, overwrite=args.overwrite)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
