"""Stage 05 training loop: learning, step history, checkpoints, resume after SIGKILL, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from inclinet_utils import train
from inclinet_utils.models import DEG_PER_TARGET, target_to_inclination

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_samples import write_augmented  # noqa: E402

S = 32
REPO = Path(__file__).resolve().parents[1]


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate steps {keys}"
    return dict(pairs)


def _read_eval_dict(path: Path) -> dict[int, dict]:
    return {int(k): v for k, v in json.loads(path.read_text(), object_pairs_hook=_no_duplicate_keys).items()}


def _assert_complete_history(run_dir, model, uset, n_files, n_passes, seed):
    paths = train.training_paths(run_dir, model, uset)
    hist = _read_eval_dict(paths["eval_dict"])
    plan = train.step_plan(n_files, n_passes, seed, uset)
    assert sorted(hist) == list(range(len(plan)))
    names = [p.name for p in train.batch_files(run_dir, uset, S)]
    for step, (p, i) in enumerate(plan):
        e = hist[step]
        assert (e["pass"], e["batchFile"]) == (p, names[i])
        for k in train.HISTORY_KEYS + ("mae_deg", "val_mae_deg", "time_s"):
            assert k in e
        assert e["val_mae_deg"] == pytest.approx(e["val_mae"] * DEG_PER_TARGET)
    return hist


def test_step_plan_visits_every_file_once_per_pass_in_seeded_orders():
    plan = train.step_plan(6, 3, seed=7, uset=1)
    assert len(plan) == 18
    passes = [[i for p, i in plan if p == k] for k in range(3)]
    assert all(sorted(o) == list(range(6)) for o in passes)
    assert len({tuple(o) for o in passes}) > 1  # shuffled anew each pass
    assert plan == train.step_plan(6, 3, seed=7, uset=1)
    assert plan != train.step_plan(6, 3, seed=8, uset=1)


def test_training_learns_the_axis_ratio(tmp_path):
    write_augmented(tmp_path, size=S, usets=(0,), n_batches=3, n_per_batch=256, n_val=128, seed=1)
    summary = train.train_all(tmp_path, ["model4"], [], S, n_passes=3, training_batch_size=32,
                              seed=3, progress=False)[0]
    assert summary["done"] and summary["steps_done"] == 9
    hist = _assert_complete_history(tmp_path, "model4", 0, 3, 3, 3)
    with np.load(train.validation_file(tmp_path, S)) as z:
        val_inc = z["labels"].astype(float)
    mean_mae = np.abs(val_inc - val_inc.mean()).mean()  # predicting the mean (~11 deg)
    assert hist[8]["val_mae_deg"] < 0.4 * mean_mae
    assert hist[8]["val_mae_deg"] < hist[0]["val_mae_deg"]
    # the final model predicts inclinations from raw pixels as well as the last evaluation said
    paths = train.training_paths(tmp_path, "model4", 0)
    model = keras.saving.load_model(paths["final"])
    with np.load(train.validation_file(tmp_path, S)) as z:
        pred = target_to_inclination(model.predict(z["images"], verbose=0)[:, 0])
    assert np.abs(pred - val_inc).mean() == pytest.approx(hist[8]["val_mae_deg"], rel=1e-3)
    assert paths["eval_fig"].stat().st_size > 1000
    assert not list(paths["ckpt_dir"].glob(".*partial*"))
    table = train.results_table(tmp_path, ["model4"], [0])
    assert table.loc[0, "final_val_mae_deg"] == pytest.approx(hist[8]["val_mae_deg"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    write_augmented(d, size=S, usets=(0, 1), n_batches=3, n_per_batch=48, n_val=32, seed=2)
    return d


def _copy_augmented(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src / "augmented", dst / "augmented")
    return dst


def test_resume_gives_the_uninterrupted_weights(tiny_run, tmp_path):
    kw = dict(size=S, n_passes=2, training_batch_size=16, seed=5, progress=False)
    full = _copy_augmented(tiny_run, tmp_path / "full")
    split = _copy_augmented(tiny_run, tmp_path / "split")
    train.train_model(full, "model6", 1, **kw)
    part = train.train_model(split, "model6", 1, max_steps=2, **kw)
    paths = train.training_paths(split, "model6", 1)
    assert not part["done"] and not paths["final"].exists()
    assert sorted(train.load_history(split, "model6", 1)) == [0, 1]
    with np.load(paths["checkpoint"]) as z:
        assert int(z["next_step"]) == 2
    train.train_model(split, "model6", 1, **kw)
    h_full = _assert_complete_history(full, "model6", 1, 3, 2, 5)
    h_split = _assert_complete_history(split, "model6", 1, 3, 2, 5)
    for s in h_full:
        assert h_split[s]["loss"] == pytest.approx(h_full[s]["loss"], rel=1e-4, abs=1e-6)
    w_full = keras.saving.load_model(train.training_paths(full, "model6", 1)["final"]).get_weights()
    w_split = keras.saving.load_model(paths["final"]).get_weights()
    for a, b in zip(w_full, w_split):
        assert np.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_sigkill_then_resume_has_complete_duplicate_free_history(tiny_run, tmp_path):
    run = _copy_augmented(tiny_run, tmp_path)
    n_passes = 6  # 18 steps, long enough to be killed in the middle
    args = ["--run-dir", str(run), "--models", "model4", "--usets", "0", "--size", str(S),
            "--n-passes", str(n_passes), "--training-batch-size", "16", "--seed", "9", "--no-progress"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen([sys.executable, "-m", "inclinet_utils.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    paths = train.training_paths(run, "model4", 0)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if paths["eval_dict"].exists() and len(json.loads(paths["eval_dict"].read_text())) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done_before = len(_read_eval_dict(paths["eval_dict"]))
    assert 3 <= done_before < 3 * n_passes
    assert not paths["final"].exists()

    with pytest.raises(FileExistsError, match="resume"):
        train.train_model(run, "model4", 0, S, n_passes, 16, seed=9, resume=False, progress=False)
    with pytest.raises(train.TrainInputError, match="n_passes"):
        train.train_model(run, "model4", 0, S, n_passes + 1, 16, seed=9, progress=False)
    assert train.main(args) == 0  # resume (the default)
    hist = _assert_complete_history(run, "model4", 0, 3, n_passes, 9)
    assert len(hist) == 3 * n_passes
    assert paths["final"].exists() and paths["params"].exists()
    with np.load(paths["checkpoint"]) as z:
        assert int(z["next_step"]) == 3 * n_passes
        assert sorted(json.loads(str(z["history_json"]))) == sorted(str(k) for k in hist)
    assert not list(paths["ckpt_dir"].glob(".*partial*"))
    # a finished training is left alone on resume, refused without it
    again = train.train_model(run, "model4", 0, S, n_passes, 16, seed=9, progress=False)
    assert again["done"] and again["steps_done"] == 3 * n_passes
    with pytest.raises(FileExistsError):
        train.train_model(run, "model4", 0, S, n_passes, 16, seed=9, resume=False, progress=False)


def test_bad_input_is_refused_before_writing(tmp_path):
    with pytest.raises(FileNotFoundError, match="04"):
        train.train_all(tmp_path, ["model4"], [], S, n_passes=1, progress=False)
    write_augmented(tmp_path, size=S, usets=(0,), n_batches=1, n_per_batch=8, n_val=8)
    with pytest.raises(train.TrainInputError, match="model9"):
        train.train_all(tmp_path, ["model9"], [], S, n_passes=1, progress=False)
    with pytest.raises(FileNotFoundError, match=r"\[3\]"):
        train.train_all(tmp_path, ["model4"], [3], S, n_passes=1, progress=False)
    bad = tmp_path / "augmented" / "Uset_000_npz" / f"{S}x{S}_train_aug_02.npz"
    np.savez(bad, images=np.zeros((4, S, S), np.uint8), labels=np.full(4, 60))
    with pytest.raises(train.TrainInputError, match="train_aug_02.npz"):
        train.load_arrays(bad, S)
    np.savez(bad, images=np.zeros((4, S, S, 3), np.uint8), labels=np.array([60, 61, 30, 70]))
    with pytest.raises(train.TrainInputError, match="45-90"):
        train.load_arrays(bad, S)
    assert not (tmp_path / "models").exists()
