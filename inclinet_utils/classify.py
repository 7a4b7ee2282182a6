"""Which galaxies can be measured: the accept/reject classifiers' probabilities and their evaluation.

The classifiers (``models/Uset_<jjj>_<model>_binary.keras``, `models.is_classifier`)
give the probability that a human would reject an image ('F' face-on or '0'
rejected) instead of measuring it (>= 45 deg). `reject_probabilities` is the
ensemble (mean over the classifier members, each the mean over the image and its
flips) that `predict` can call. Stage 06 (`evaluate_classifiers`) predicts the
classifiers' held-out ``samples_binary`` test galaxies, chooses the threshold that
keeps 95% of the accepted *training* galaxies (`threshold_for_recall`), and reports
ROC/AUC, precision and recall of "reject", the confusion matrix per band and the
regressors' accuracy on the accepted galaxies; `write_classifier_evaluation` stores
the threshold in ``classifier.json`` (for predict) and the metrics under the
"classifier" key of metrics.json. ROC and AUC are computed here with NumPy.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import io as iio
from . import layout
from .dataset import ACCEPTED, REJECTED, load_sample
from .inference import InferenceError, ModelFile, each_model, flip_averaged_output

ACCEPTED_RECALL = 0.95  # share of accepted training galaxies the threshold keeps


# ---- probabilities --------------------------------------------------------------

def find_classifiers(models_dir: str | os.PathLike) -> list[ModelFile]:
    """Every final classifier file of a run (may be empty), sorted by model then Uset."""
    return [ModelFile(m, u, p) for m, u, p in layout.find_model_files(models_dir, classifiers=True)]


def reject_probability(model, images: np.ndarray, batch_size: int = 64, flips: bool = True) -> np.ndarray:
    """P(rejected) of one classifier for raw 0-255 (N, S, S, 3) images, mean over the flips."""
    return flip_averaged_output(model, images, batch_size, flips)


def member_probabilities(files: list[ModelFile], images: np.ndarray, size: int | None = None) -> pd.DataFrame:
    """One column of P(rejected) per classifier (row name, e.g. model4_binary/Uset_000), one model at a time."""
    return pd.DataFrame({mf.row: reject_probability(model, images) for mf, model in each_model(files, size)})


def reject_probabilities(run_dir: str | os.PathLike, images: np.ndarray, band: str) -> np.ndarray:
    """Ensemble P(rejected) (mean over the run's classifiers) of prepared raw 0-255 (N, S, S, 3) images.

    `band` must be one the classifiers trained on (classifier.json, else the run's bands).
    Raises FileNotFoundError when the run has no classifier, InferenceError for a wrong band or size.
    """
    run = layout.run_paths(run_dir)
    files = find_classifiers(run["models"])
    if not files:
        raise FileNotFoundError(f"no trained classifiers (Uset_<jjj>_<model>{layout.BINARY}.keras) in "
                                f"{run['models']}; train them in 05_train (classifiers)")
    bands = iio.read_json(run["classifier"])["bands"] if run["classifier"].is_file() else None
    if bands is not None and layout.check_band(band) not in bands:
        raise InferenceError(f"band {band!r}: the classifiers of {run_dir} trained on {bands} only")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3:
        raise InferenceError(f"images of shape {images.shape}; expected (N, S, S, 3) raw 0-255 pixels")
    return member_probabilities(files, images, images.shape[1]).mean(axis=1).to_numpy()


def rejection_threshold(run_dir: str | os.PathLike) -> float:
    """The run's P(rejected) threshold from classifier.json (06): a row is accepted when p <= it."""
    path = layout.run_paths(run_dir)["classifier"]
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run 06_evaluate on a run with classifiers first")
    return float(iio.read_json(path)["threshold"])


# ---- scores ---------------------------------------------------------------------

def roc_curve(rejected, p_reject) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, thresholds) of "reject when p >= threshold"."""
    y, p = np.asarray(rejected, bool), np.asarray(p_reject, float)
    if y.all() or not y.any():
        raise ValueError("ROC needs both accepted and rejected galaxies")
    order = np.argsort(-p, kind="stable")
    p, y = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]  # the last index of each distinct score
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    return np.r_[0, fp / (~y).sum()], np.r_[0, tp / y.sum()], np.r_[np.inf, p[last]]


def auc(rejected, p_reject) -> float:
    """Area under the ROC curve: the chance a rejected galaxy scores above an accepted one (ties half)."""
    fpr, tpr, _ = roc_curve(rejected, p_reject)
    return float(np.trapezoid(tpr, fpr))


def threshold_for_recall(p_accepted, recall: float = ACCEPTED_RECALL) -> float:
    """The P(rejected) threshold below or at which `recall` of these accepted galaxies fall."""
    p = np.sort(np.asarray(p_accepted, float))
    if not len(p):
        raise ValueError("no accepted galaxies to choose the threshold on")
    return float(p[min(len(p) - 1, int(np.ceil(recall * len(p))) - 1)])


def scores_at(rejected, p_reject, threshold: float) -> dict:
    """Confusion counts and precision/recall of "reject" (p > threshold), recall of accepted."""
    y, flag = np.asarray(rejected, bool), np.asarray(p_reject, float) > threshold
    tp, fp, fn, tn = int((flag & y).sum()), int((flag & ~y).sum()), int((~flag & y).sum()), int((~flag & ~y).sum())
    return {"n": len(y), "n_rejected": int(y.sum()), "true_reject": tp, "false_reject": fp,
            "missed_reject": fn, "true_accept": tn,
            "precision_reject": tp / (tp + fp) if tp + fp else float("nan"),
            "recall_reject": tp / (tp + fn) if tp + fn else float("nan"),
            "recall_accepted": tn / (tn + fp) if tn + fp else float("nan")}


# ---- stage 06 -------------------------------------------------------------------

@dataclasses.dataclass
class ClassifierEvaluation:
    """What `evaluate_classifiers` measured; `write_classifier_evaluation` writes it."""

    test: pd.DataFrame      # band, pgc, rejected, p_reject (ensemble), one column per member
    train: pd.DataFrame     # the same on the training galaxies that chose the threshold
    threshold: float
    members: list[str]
    metrics: dict           # metrics.json's "classifier" entry
    test_images: dict       # band -> test_000 sample of samples_binary (for the galleries)


def _predict_sets(files, samples_dir, size, bands, kind, max_n, seed) -> tuple[pd.DataFrame, dict]:
    samples = {}
    for band in bands:
        s = load_sample(samples_dir, band, size, kind, 0, binary=True)
        if max_n and len(s["labels"]) > max_n:
            keep = np.sort(np.random.default_rng([seed, 11]).choice(len(s["labels"]), max_n, replace=False))
            s = {k: v[keep] for k, v in s.items()}
        samples[band] = s
    # every band in one pass, so each classifier is loaded once
    members = member_probabilities(files, np.concatenate([s["images"] for s in samples.values()]), size)
    rows = pd.DataFrame({"band": np.concatenate([[b] * len(s["labels"]) for b, s in samples.items()]),
                         "pgc": np.concatenate([s["pgcIDs"] for s in samples.values()]),
                         "rejected": np.concatenate([s["labels"] == REJECTED for s in samples.values()]),
                         "p_reject": members.mean(axis=1).to_numpy()})
    return pd.concat([rows, members], axis=1), samples


def regressor_accuracy(predictions: pd.DataFrame, accepted: pd.DataFrame) -> dict:
    """Ensemble-median regressor errors (deg) on all held-out galaxies and on those the classifiers accept.

    `predictions`: evaluation/predictions_test.csv (one row per source, band, pgc);
    `accepted`: band, pgc of the accepted test galaxies.
    """
    cnn = predictions[predictions["source"].map(lambda s: layout.parse_model_row(s) is not None)]
    med = cnn.groupby(["band", "pgc"]).agg(measured_deg=("measured_deg", "first"),
                                            predicted_deg=("predicted_deg", "median")).reset_index()
    keep = med.merge(accepted[["band", "pgc"]], on=["band", "pgc"])

    def errors(t):
        d = t["measured_deg"] - t["predicted_deg"]
        return {"n": len(t), "rms_deg": float(np.sqrt((d ** 2).mean())) if len(t) else float("nan"),
                "mae_deg": float(d.abs().mean()) if len(t) else float("nan"),
                "outlier_frac": float((d.abs() > 10).mean()) if len(t) else float("nan")}

    return {"all": errors(med), "accepted": errors(keep)}


def evaluate_classifiers(run_dir: str | os.PathLike, size: int, bands, max_train: int = 300,
                         seed: int = 42, recall: float = ACCEPTED_RECALL) -> ClassifierEvaluation | None:
    """Stage 06's classifier report on the held-out samples_binary test set; None without classifiers.

    The threshold keeps `recall` of the accepted galaxies of (at most `max_train` per band
    of) the classifiers' train_000, never test galaxies.
    """
    run = layout.run_paths(run_dir)
    files = find_classifiers(run["models"])
    if not files:
        return None
    bands = layout.check_bands(bands)
    test, images = _predict_sets(files, run["samples_binary"], size, bands, "test", 0, seed)
    train, _ = _predict_sets(files, run["samples_binary"], size, bands, "train", max_train, seed)
    threshold = threshold_for_recall(train.loc[~train["rejected"], "p_reject"], recall)
    members = [mf.row for mf in files]
    per_band = {b: scores_at(t["rejected"], t["p_reject"], threshold) for b, t in test.groupby("band")}
    metrics = {"members": members, "threshold": threshold, "accepted_recall_target": recall,
               "threshold_chosen_on": f"train_000 of {run['samples_binary'].name} (accepted galaxies)",
               "auc": auc(test["rejected"], test["p_reject"]),
               "auc_per_member": {m: auc(test["rejected"], test[m]) for m in members},
               "auc_per_band": {b: auc(t["rejected"], t["p_reject"]) for b, t in test.groupby("band")},
               **scores_at(test["rejected"], test["p_reject"], threshold), "per_band": per_band}
    predictions = run["evaluation"] / layout.EVALUATION_FILES["predictions"]
    if predictions.is_file():
        accepted = test[~test["rejected"] & (test["p_reject"] <= threshold)]
        metrics["regressors"] = regressor_accuracy(pd.read_csv(predictions), accepted)
    return ClassifierEvaluation(test, train, threshold, members, metrics, images)


def write_classifier_evaluation(result: ClassifierEvaluation, run_dir: str | os.PathLike, bands) -> Path:
    """classifier.json (threshold, members, bands: for predict), evaluation/classifier_*.csv, and the
    "classifier" entry of metrics.json (added to the file 06 wrote). Refuses an existing classifier.json."""
    run = layout.run_paths(run_dir)
    record = {"threshold": result.threshold, "accepted_recall_target": result.metrics["accepted_recall_target"],
              "members": result.members, "bands": layout.check_bands(bands),
              "rule": "rejected when the ensemble P(rejected) > threshold"}
    if run["classifier"].exists():
        raise FileExistsError(f"{run['classifier']} already exists; refusing to overwrite it (use a new run folder)")
    run["evaluation"].mkdir(parents=True, exist_ok=True)
    for name, table in (("classifier_test", result.test), ("classifier_train", result.train)):
        with iio.atomic_path(run["evaluation"] / f"{name}.csv") as tmp:
            table.round(5).to_csv(tmp, index=False)
    metrics = iio.read_json(run["metrics"]) if run["metrics"].is_file() else {}
    metrics[layout.CLASSIFIER_METRICS] = result.metrics
    iio.write_json(run["metrics"], metrics, overwrite=True)
    iio.write_json(run["classifier"], record)
    return run["classifier"]


def confusion_table(result: ClassifierEvaluation) -> pd.DataFrame:
    """Per band (and all): true/false rejections, missed rejections, true accepts, precision, recall."""
    rows = {**result.metrics["per_band"], "all": {k: result.metrics[k] for k in result.metrics["per_band"]
                                                  [next(iter(result.metrics["per_band"]))]}}
    return pd.DataFrame(rows).T


def gallery_items(result: ClassifierEvaluation, n: int = 8) -> dict[str, list]:
    """(image, pgc, band, label, p) of the most confident rejections and of the worst mistakes."""
    t = result.test.copy()
    t["error"] = np.where(t["rejected"], 1 - t["p_reject"], t["p_reject"])

    def items(rows):
        out = []
        for _, r in rows.iterrows():
            s = result.test_images[r["band"]]
            k = int(np.flatnonzero(s["pgcIDs"] == r["pgc"])[0])
            out.append((s["images"][k], int(r["pgc"]), r["band"], "rejected" if r["rejected"] else "accepted",
                        float(r["p_reject"])))
        return out

    return {"confident_rejections": items(t.sort_values("p_reject", ascending=False).head(n)),
            "worst_mistakes": items(t.sort_values("error", ascending=False).head(n))}


def roc_points(result: ClassifierEvaluation) -> tuple[dict, dict]:
    """ROC curves of the ensemble and each member, and the ensemble's working point at the threshold."""
    t = result.test
    curves = {name: (*roc_curve(t["rejected"], t[col])[:2], auc(t["rejected"], t[col]))
              for name, col in [("ensemble", "p_reject")] + [(m, m) for m in result.members]}
    s = scores_at(t["rejected"], t["p_reject"], result.threshold)
    return curves, {"ensemble": (1 - s["recall_accepted"], s["recall_reject"])}


def results_table(run_dir, models, usets) -> pd.DataFrame:
    """05's table for the classifiers: per (model, Uset) the steps and final/best validation AUC, loss."""
    from .train import load_history

    rows = []
    for uset in usets:
        for name in models:
            h = load_history(run_dir, name, uset)
            if h:
                last = h[max(h)]
                rows.append({"model": name, "uset": uset, "steps": len(h), "final_val_auc": last.get("val_auc"),
                             "best_val_auc": max(v.get("val_auc", np.nan) for v in h.values()),
                             "final_val_loss": last["val_loss"], "final_val_accuracy": last.get("val_accuracy"),
                             "total_s": float(sum(v["time_s"] for v in h.values()))})
    return pd.DataFrame(rows)
