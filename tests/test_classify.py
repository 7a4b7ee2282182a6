"""The accept/reject classifiers: their split (03), class-balanced batches (04), training (05)
and evaluation (06, `classify`), on tiny 32 px images (disk vs disk with a bright star)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from inclinet_utils import augment, classify, dataset, layout, models, train
from inclinet_utils.dataset import ACCEPTED, REJECTED

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dataset import ALL_BANDS, SIZE, write_compressed  # noqa: E402
from train_samples import ellipse_images  # noqa: E402

S = 32


def star_disks(rng, rejected: np.ndarray, size: int = S) -> np.ndarray:
    """Disks (random inclination 45-90) on a dark sky; the rejected ones with a bright star on the disk."""
    images = ellipse_images(rng, rng.uniform(45, 90, len(rejected)), size).astype(float)
    images = 15 + (images - 15) * 0.4   # dim disks (peak ~70-100), so that the star stands out
    yy, xx = np.mgrid[0:size, 0:size]
    for k in np.flatnonzero(rejected):
        r, phi = rng.uniform(0.1, 0.3) * size, rng.uniform(0, 2 * np.pi)
        cx, cy = (size - 1) / 2 + r * np.cos(phi), (size - 1) / 2 + 0.3 * r * np.sin(phi)
        images[k] += 220 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 1.5 ** 2))[..., None]
    return np.clip(images, 0, 255).astype(np.uint8)


# ---- 03: the split ------------------------------------------------------------------

def test_binary_split_keeps_the_regressors_split_and_adds_both_classes(tmp_path):
    code_of = write_compressed(tmp_path / "compressed")
    m_iter = 3
    record = dataset.split_stage(tmp_path / "compressed", tmp_path / "samples", SIZE, ALL_BANDS,
                                 test_fraction=0.2, m_iter=m_iter, seed=5)
    before = {p.name: p.read_bytes() for p in (tmp_path / "samples").iterdir()}
    binary = tmp_path / "samples_binary"
    brec = dataset.split_binary_stage(tmp_path / "compressed", tmp_path / "samples", binary, SIZE)
    assert {p.name: p.read_bytes() for p in (tmp_path / "samples").iterdir()} == before  # untouched
    assert {p.name for p in binary.iterdir()} == set(before)
    rejected = {p for p, c in code_of.items() if c in (0, 1)}
    counts = dataset.check_binary_split(binary, SIZE, brec)   # both classes everywhere, no leak
    assert all(c["accepted"] and c["rejected"] for c in counts.values())
    test_ids = set(brec["test_pgc"])
    for band in ALL_BANDS:
        for kind in ("train", "test"):
            for k in range(m_iter + 1):
                b = dataset.load_sample(binary, band, SIZE, kind, k, binary=True)
                r = dataset.load_sample(tmp_path / "samples", band, SIZE, kind, k)
                ids = b["pgcIDs"].tolist()
                # the labels: 1 exactly for the F / 0 galaxies; low inclinations (2-44) left out
                assert b["labels"].tolist() == [REJECTED if p in rejected else ACCEPTED for p in ids]
                assert all(code_of[p] >= 45 or p in rejected for p in ids)
                # the accepted galaxies are the regressors' file, galaxy for galaxy
                assert sorted(p for p in ids if p not in rejected) == sorted(r["pgcIDs"].tolist())
                assert {REJECTED, ACCEPTED} <= set(b["labels"].tolist())
                if kind == "train":
                    assert not set(ids) & test_ids
        assert set(dataset.load_sample(binary, band, SIZE, "test", 0, binary=True)["pgcIDs"].tolist()) == test_ids
    assert set(record["test_pgc"]) < test_ids
    assert json.loads((binary / "split.json").read_text())["counts"]["RGB_test_000"]["rejected"] >= 1
    with pytest.raises(dataset.DatasetError, match="not 0"):  # a regressor file is not a classifier file
        dataset.load_sample(tmp_path / "samples", "g", SIZE, "train", 0, binary=True)


def test_binary_split_refuses_too_few_rejected(tmp_path):
    record = {"seed": 1, "test_fraction": 0.1, "m_iter": 1, "test_pgc": [1], "subsample_pgc": [[2]]}
    with pytest.raises(dataset.DatasetError, match="rejected galaxies"):
        dataset.draw_binary_split(record, np.array([7, 8]))


# ---- scores ---------------------------------------------------------------------------

def test_auc_roc_and_threshold():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
    assert classify.auc(y, np.arange(8.0)) == 1.0
    assert classify.auc(y, -np.arange(8.0)) == 0.0
    assert classify.auc(y, np.ones(8)) == 0.5                       # ties count half
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.7, 0.6])
    pairs = np.mean([a > b for a in p[y] for b in p[~y]])             # Mann-Whitney
    assert classify.auc(y, p) == pytest.approx(pairs)
    fpr, tpr, _ = classify.roc_curve(y, p)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)
    acc = np.linspace(0, 1, 101)
    t = classify.threshold_for_recall(acc, 0.95)
    assert (acc <= t).mean() >= 0.95 and (acc < t).mean() < 0.95
    s = classify.scores_at(y, p, 0.5)
    assert (s["true_reject"], s["false_reject"], s["missed_reject"], s["true_accept"]) == (3, 1, 1, 3)
    assert s["precision_reject"] == 0.75 and s["recall_reject"] == 0.75


# ---- 04 + 05 + 06 on a learnable set ----------------------------------------------------

def _write_binary_samples(samples_dir: Path, rng, n_train=60, n_test=40):
    pgc = 0
    for kind, n in (("train", n_train), ("test", n_test)):
        rejected = np.arange(n) % 3 == 0   # a third rejected, as in the real catalogs
        ids = np.arange(pgc, pgc + n) + 1000
        pgc += n
        gray = star_disks(rng, rejected)
        for band in ("g", "gri"):
            img = gray if band == "g" else np.stack([gray[..., 0], gray[..., 0] // 2 + 20, gray[..., 0] // 3 + 10],
                                                     axis=-1).astype(np.uint8)
            np.savez_compressed(layout.sample_path(samples_dir, band, S, kind, 0), images=img,
                                labels=np.where(rejected, REJECTED, ACCEPTED).astype(np.int64), pgcIDs=ids)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("clf")
    paths = layout.run_paths(run)
    paths["samples_binary"].mkdir()
    _write_binary_samples(paths["samples_binary"], np.random.default_rng(3))
    record = augment.augment_stage(paths["samples_binary"], paths["augmented_binary"], S, ["g", "gri"],
                                   n_batches=2, batch_size=48, seed=4, progress=False, binary=True)
    first = train.train_model(run, "model4_binary", 0, S, n_passes=4, training_batch_size=16, seed=2,
                              progress=False, max_steps=3)   # killed after 3 steps ...
    summary = train.train_all(run, ["model4_binary"], [0], S, n_passes=4, training_batch_size=16, seed=2,
                              progress=False)[0]              # ... and resumed
    return run, record, first, summary


def test_binary_batches_are_class_balanced(trained):
    run, record, _, _ = trained
    assert record["bins"] == augment.CLASS_NAMES and tuple(record["transform_params"]["rotation_deg"]) == augment.BINARY_PARAMS.rotation_deg
    files = layout.batch_files(layout.run_paths(run)["augmented_binary"], 0, S)
    assert len(files) == 2
    for f in files:
        b = augment.load_batch(f)
        assert b["images"].shape == (4 * 48, S, S, 3)
        for colour in (True, False):
            m = (b["filter"] == "c") == colour
            assert np.bincount(b["labels"][m], minlength=2).tolist() == [48, 48]
        assert b["inverted"].sum() == 48 and not b["inverted"][b["filter"] == "c"].any()
    assert not layout.run_paths(run)["augmented"].exists()      # the regressors' folder is not touched


def test_classifier_trains_resumes_and_beats_the_majority_class(trained):
    run, _, first, summary = trained
    assert not first["done"] and first["steps_done"] == 3
    assert summary["done"] and summary["steps_done"] == 8
    hist = train.load_history(run, "model4_binary", 0)
    assert sorted(hist) == list(range(8))
    assert all({"loss", "val_loss", "val_auc", "val_accuracy", "auc"} <= set(e) for e in hist.values())
    assert "val_mae_deg" not in hist[0]
    paths = train.training_paths(run, "model4_binary", 0)
    assert paths["final"].is_file() and paths["eval_fig"].stat().st_size > 1000
    assert layout.find_model_files(paths["final"].parent) == []   # not a regressor for 06/predict
    # the held-out galaxies, not augmented: a third rejected, so the majority class scores 2/3
    test = dataset.load_sample(layout.run_paths(run)["samples_binary"], "gri", S, "test", 0, binary=True)
    p = classify.reject_probabilities(run, test["images"], "gri")
    assert p.shape == (len(test["labels"]),) and np.all((p > 0) & (p < 1))
    rejected = test["labels"] == REJECTED
    majority = max(rejected.mean(), 1 - rejected.mean())
    assert ((p > 0.5) == rejected).mean() > majority + 0.15
    assert classify.auc(rejected, p) > 0.9
    assert classify.results_table(run, ["model4_binary"], [0]).loc[0, "final_val_auc"] == hist[7]["val_auc"]
    # the per-(model, Uset) command line finds the finished training and leaves it alone
    assert train.main(["--run-dir", str(run), "--models", "model4_binary", "--usets", "0", "--size", str(S),
                       "--n-passes", "4", "--training-batch-size", "16", "--seed", "2", "--no-progress"]) == 0
    assert train.load_history(run, "model4_binary", 0) == hist


def test_classifier_evaluation_writes_threshold_and_metrics(trained):
    run, _, _, _ = trained
    result = classify.evaluate_classifiers(run, S, ["g", "gri"], max_train=40, seed=1)
    train_acc = result.train.loc[~result.train["rejected"], "p_reject"]
    assert (train_acc <= result.threshold).mean() >= 0.95        # chosen on training galaxies
    assert len(result.train) == 2 * 40
    m = result.metrics
    assert m["auc"] > 0.9 and m["n"] == 2 * 40 and set(m["per_band"]) == {"g", "gri"}
    assert m["true_reject"] + m["missed_reject"] == m["n_rejected"]
    assert 0 < m["precision_reject"] <= 1 and 0 < m["recall_reject"] <= 1
    classify.write_classifier_evaluation(result, run, ["g", "gri"])
    saved = json.loads(layout.run_paths(run)["metrics"].read_text())[layout.CLASSIFIER_METRICS]
    assert saved["auc"] == pytest.approx(m["auc"])
    rec = json.loads(layout.run_paths(run)["classifier"].read_text())
    assert rec["threshold"] == pytest.approx(result.threshold) and rec["members"] == ["model4_binary/Uset_000"]
    assert classify.rejection_threshold(run) == rec["threshold"]
    with pytest.raises(FileExistsError):
        classify.write_classifier_evaluation(result, run, ["g", "gri"])
    with pytest.raises(classify.InferenceError, match="trained on"):
        classify.reject_probabilities(run, np.zeros((1, S, S, 3), np.uint8), "r")
    items = classify.gallery_items(result, n=4)
    assert len(items["worst_mistakes"]) == 4 and items["confident_rejections"][0][4] == result.test["p_reject"].max()


def test_classifier_models_and_names():
    assert models.is_classifier("model4_binary") and not models.is_classifier("model4")
    assert models.MODELS["model6_binary"] is models.MODELS["model6"]
    m = models.build_model("model5_binary", S)
    assert m.layers[-1].activation.__name__ == "sigmoid"
    out = np.asarray(m(np.random.default_rng(0).integers(0, 256, (4, S, S, 3)).astype("float32")))
    assert np.all((out > 0) & (out < 1))
    assert layout.parse_model_file_name(layout.model_file_name("model4_binary", 2)) == ("model4_binary", 2)
    assert layout.parse_model_row("model6_binary/Uset_001") == ("model6_binary", 1)
    with pytest.raises(train.TrainInputError, match="separate"):
        train.train_all("nowhere", ["model4", "model4_binary"], [], S, 1)


def test_binary_split_refuses_a_file_with_one_class_before_writing(tmp_path):
    code_of = write_compressed(tmp_path / "compressed")
    rejected = [p for p, c in code_of.items() if c in (0, 1)]
    compressed = tmp_path / "compressed"
    # band g loses every rejected galaxy: its files would hold accepted galaxies only
    d = dataset.load_compressed(layout.compressed_path(compressed, SIZE, "g"))
    keep = ~np.isin(d["labels"][0], rejected)
    layout.compressed_path(compressed, SIZE, "g").unlink()
    np.savez_compressed(layout.compressed_path(compressed, SIZE, "g"), images=d["images"][keep],
                        labels=d["labels"][:, keep])
    dataset.split_stage(compressed, tmp_path / "samples", SIZE, ALL_BANDS, test_fraction=0.2, m_iter=1, seed=5)
    with pytest.raises(dataset.DatasetError, match="one class"):
        dataset.split_binary_stage(compressed, tmp_path / "samples", tmp_path / "samples_binary", SIZE)
    assert not (tmp_path / "samples_binary").exists()


def test_metrics_summary_keeps_the_classifier_entry_out_of_the_rows():
    from inclinet_utils import evaluate

    row = {"rms_deg": 5.0, "mae_deg": 4.0, "bias_deg": 0.1, "outlier_frac": 0.05, "n": 10}
    metrics = {"all/median": row, layout.CLASSIFIER_METRICS: {
        "members": ["model4_binary/Uset_000"], "auc": 0.912, "n": 30, "precision_reject": 0.8, "recall_reject": 0.5}}
    assert list(evaluate.metrics_table(metrics).index) == ["all/median"]
    text = evaluate.summarize_metrics(metrics)
    assert "AUC 0.912" in text and "\nclassifier " not in text
