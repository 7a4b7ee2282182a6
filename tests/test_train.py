"""Stage 05 training (model.fit over one batch file per epoch): learning, step history, logs,
checkpoints, exact resume after SIGKILL, hyperparameters, bad input."""

from __future__ import annotations

import csv
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

from inclinet_utils import layout, train, train_files
from inclinet_utils.train_callbacks import trim_csv_log
from inclinet_utils.train_dataset import BatchFileDataset
from inclinet_utils.models import DEG_PER_TARGET, inclination_to_target, target_to_inclination

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
        for k in train_files.HISTORY_KEYS + ("mae_deg", "val_mae_deg", "time_s"):
            assert k in e
        assert e["val_mae_deg"] == pytest.approx(e["val_mae"] * DEG_PER_TARGET)
        parts = e["time_save_s"] + e["time_data_s"] + e["time_fit_s"] + e["time_eval_s"]
        assert 0 < parts <= e["time_s"] * 1.001 + 1e-3
    # Keras' CSVLogger: one row per step, none repeated, the same numbers as the evalDict
    with open(paths["csv_log"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == list(range(len(plan)))
    for r in rows:
        for k in ("loss", "mae", "val_mae", "val_mse"):
            assert float(r[k]) == pytest.approx(hist[int(r["epoch"])][k], rel=1e-6)
    assert list((paths["tensorboard"] / "train").glob("events.out.tfevents.*"))
    assert list((paths["tensorboard"] / "validation").glob("events.out.tfevents.*"))
    return hist


def test_step_plan_visits_every_file_once_per_pass_in_seeded_orders():
    plan = train.step_plan(6, 3, seed=7, uset=1)
    assert len(plan) == 18
    passes = [[i for p, i in plan if p == k] for k in range(3)]
    assert all(sorted(o) == list(range(6)) for o in passes)
    assert len({tuple(o) for o in passes}) > 1  # shuffled anew each pass
    assert plan == train.step_plan(6, 3, seed=7, uset=1)
    assert plan != train.step_plan(6, 3, seed=8, uset=1)


def test_learning_rate_warms_up_over_warmup_steps_then_decays():
    """A tenth of the peak at the first update, the peak after `warmup_steps` files, a tenth at the end;
    the warm-up never takes more than half of a short training; the warm-up is recorded."""
    rate = train.learning_rate_schedule(1e-3, n_steps=36, updates_per_step=10, warmup_steps=4)
    lr = [float(rate(k)) for k in (0, 20, 40, 360)]
    assert lr[0] == pytest.approx(1e-4) and lr[1] < lr[2]
    assert lr[2] == pytest.approx(1e-3) and lr[3] == pytest.approx(1e-4, rel=1e-3)
    short = train.learning_rate_schedule(1e-3, n_steps=4, updates_per_step=10, warmup_steps=4)
    assert float(short(19)) < 1e-3 and float(short(20)) == pytest.approx(1e-3)
    params = train.training_params("model4", 0, 32, 1, 16, 1e-3, 0, 0.9, "tanh", None, [], Path("v"))
    assert params["warmup_steps"] == train.WARMUP_STEPS == 4


def test_a_relu_era_checkpoint_of_model4_is_not_resumed_with_the_leaky_head(tmp_path):
    """Checkpoints written before dense_activation was recorded had model4's ReLU head: resuming
    one with today's LeakyReLU model4 is refused, naming the parameter; model6's still resumes."""
    for model, refused in (("model4", True), ("model6", False)):
        params = train.training_params(model, 0, 32, 1, 16, 1e-3, 0, 0.9, "tanh", None, [], Path("v"))
        old = {k: v for k, v in params.items() if k != "dense_activation"}
        if refused:
            with pytest.raises(train.TrainInputError, match="dense_activation"):
                train._check_params(tmp_path / "p.json", old, params)
        else:
            train._check_params(tmp_path / "p.json", old, params)


def test_training_learns_the_axis_ratio(tmp_path):
    write_augmented(tmp_path, size=S, usets=(0,), n_batches=3, n_per_batch=256, n_val=128, seed=1)
    summary = train.train_all(tmp_path, ["model4"], [], S, n_passes=3, training_batch_size=32,
                              seed=3, progress=False)[0]
    assert summary["done"] and summary["steps_done"] == 9
    assert summary["constant_output"] is False and summary["val_output_std"] > 0.05
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


def test_a_network_that_has_not_learnt_is_flagged(tiny_run, caplog):
    """An untrained network is no better than one constant answer; a head whose ReLUs are all
    off gives every image the same output: the summary says so and a warning names it."""
    from inclinet_utils.models import build_model
    from inclinet_utils.train_dataset import ValidationSet

    validation = ValidationSet(train.validation_file(tiny_run, S), S, 16)
    assert validation.constant_loss == pytest.approx(np.var(validation.targets))
    model = build_model("model4", S)
    params = {"model": "model4", "uset": 1}
    untrained = train.check_constant_output(model, validation, params)
    assert untrained["constant_output"] is True and untrained["val_loss_vs_constant"] > train.NO_BETTER
    assert untrained["val_output_std"] > train.CONSTANT_OUTPUT_STD
    hidden = model.layers[-2]  # the last ReLU layer before the output
    hidden.set_weights([np.zeros_like(w) for w in hidden.get_weights()])  # all units off for every image
    with caplog.at_level("WARNING", logger="inclinet_utils.train"):
        check = train.check_constant_output(model, validation, params)
    assert check["constant_output"] is True and check["val_output_std"] < train.CONSTANT_OUTPUT_STD
    assert "Uset_001 model4" in caplog.text and "no better than one constant" in caplog.text


def test_the_guard_judges_by_a_training_file_not_the_held_out_galaxies(tiny_run):
    """The probe and the constant's loss of the dead-network guard come from a training batch
    file (the validation set holds the test galaxies, which must choose no attempt)."""
    from inclinet_utils.models import training_targets
    from inclinet_utils.train_dataset import PROBE_IMAGES, training_reference

    first = train.batch_files(tiny_run, 0, S)[0]
    probe, constant = training_reference(first, S, "model4")
    with np.load(first) as z:
        images, labels = z["images"], z["labels"]
    assert probe.shape == (PROBE_IMAGES, S, S, 3)
    assert all(any(np.array_equal(p, im) for im in images) for p in probe)
    assert constant == pytest.approx(np.var(training_targets("model4", labels)))
    with np.load(train.validation_file(tiny_run, S)) as z:
        assert not any(np.array_equal(probe[0], im) for im in z["images"])


def test_losses_of_a_constant_and_the_stop_after_the_warm_up():
    from inclinet_utils.train_callbacks import DeadOutputStop
    from inclinet_utils.train_files import constant_loss

    targets = np.linspace(-0.8, 0.8, 32)
    assert train.is_constant(np.full(32, 0.3)) and not train.is_constant(0.01 * targets)
    assert constant_loss(targets, False) == pytest.approx(np.var(targets))
    assert constant_loss(np.array([0.0, 1.0]), True) == pytest.approx(np.log(2))
    assert train.validation_loss(targets, targets, False) == 0
    assert train.no_better_than_constant(0.99, 1.0) and not train.no_better_than_constant(0.8, 1.0)

    class Varied:  # a stand-in model with varied outputs
        stop_training = False

        def predict_on_batch(self, images):
            return targets[:, None]

    stop = DeadOutputStop(np.zeros((32, 4, 4, 3), np.uint8), constant_loss=1.0, from_epoch=3, patience=2)
    stop.set_model(Varied())
    for epoch in range(4):  # no better than a constant: normal in the warm-up, then it must last
        stop.on_epoch_end(epoch, {"loss": 1.0, "val_loss": 0.1})
    assert stop.dead_after is None and not stop.model.stop_training
    stop.on_epoch_end(4, {"loss": 1.0, "val_loss": 0.1})  # the training loss decides
    assert stop.dead_after == 4 and stop.model.stop_training
    learning = DeadOutputStop(np.zeros((32, 4, 4, 3), np.uint8), constant_loss=1.0, from_epoch=0, patience=2)
    learning.set_model(Varied())
    for epoch, loss in enumerate([1.0, 0.5, 1.0, 0.5]):  # not at successive steps
        learning.on_epoch_end(epoch, {"loss": loss, "val_loss": 1.0})
    assert learning.dead_after is None


def _dead_until(monkeypatch, first_alive: int):
    """train._build gives a dead head to every attempt before `first_alive`: the last hidden layer
    and the output's weights zeroed, so no gradient reaches either whatever the activation (only
    the output's bias learns: one constant answer)."""
    build = train._build

    def build_dead(params, *args):
        model = build(params, *args)
        if params["init_attempt"] < first_alive:
            for layer in model.layers[-2:]:
                layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
        return model

    monkeypatch.setattr(train, "_build", build_dead)


def test_a_network_that_dies_is_set_aside_and_restarted(tiny_run, tmp_path, monkeypatch, caplog):
    run = _copy_augmented(tiny_run, tmp_path)
    _dead_until(monkeypatch, 1)
    with caplog.at_level("WARNING", logger="inclinet_utils.train"):
        summary = train.train_model(run, "model4", 0, S, n_passes=1, training_batch_size=16, seed=4, progress=False)
    paths = train.training_paths(run, "model4", 0)
    dead = layout.dead_training_dir(paths["ckpt_dir"], 1)
    # alive (a 3-step toy training may not have learnt yet: its `constant_output` is not asserted)
    assert summary["done"] and summary["val_output_std"] > train.CONSTANT_OUTPUT_STD and summary["steps_done"] == 3
    assert layout.dead_training_dirs(paths["ckpt_dir"]) == [dead]
    dead_history = json.loads((dead / paths["eval_dict"].name).read_text())
    assert list(dead_history) == ["0"]            # stopped after its first step, not trained on
    assert json.loads(paths["params"].read_text())["init_attempt"] == 1
    _assert_complete_history(run, "model4", 0, 3, 1, train.training_seed(4, 1))  # the restart's own seed
    assert "set aside as Uset_000_model4_ckpt.dead-1" in caplog.text
    again = train.train_model(run, "model4", 0, S, n_passes=1, training_batch_size=16, seed=4, progress=False)
    assert again["done"] and layout.dead_training_dirs(paths["ckpt_dir"]) == [dead]  # resumes the live attempt


def test_restarts_are_bounded(tiny_run, tmp_path, monkeypatch):
    run = _copy_augmented(tiny_run, tmp_path)
    _dead_until(monkeypatch, 99)
    summary = train.train_model(run, "model4", 1, S, n_passes=1, training_batch_size=16, seed=4, progress=False)
    paths = train.training_paths(run, "model4", 1)
    assert len(layout.dead_training_dirs(paths["ckpt_dir"])) == train.MAX_RESTARTS
    assert summary["done"] and summary["constant_output"] is True   # the last attempt is flagged, not hidden


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
    deadline = time.monotonic() + 600  # generous: the test machine may be shared
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
    bad = layout.batch_path(layout.run_paths(tmp_path)["augmented"], 0, S, 2)
    np.savez(bad, images=np.zeros((4, S, S), np.uint8), labels=np.full(4, 60))
    with pytest.raises(train.TrainInputError, match="train_aug_02.npz"):
        train.load_arrays(bad, S)
    np.savez(bad, images=np.zeros((4, S, S, 3), np.uint8), labels=np.array([60, 61, 30, 70]))
    with pytest.raises(train.TrainInputError, match="45-90"):
        train.load_arrays(bad, S)
    assert not (tmp_path / "models").exists()


def test_dataset_serves_each_steps_whole_file_in_its_own_seeded_shuffle(tiny_run):
    files = train.batch_files(tiny_run, 0, S)
    plan = train.step_plan(len(files), 2, seed=4, uset=0)
    ds = BatchFileDataset(files, plan, S, batch_size=20, seed=4, uset=0, start=1)
    try:
        assert len(ds) == 3  # 48 images in batches of 20: 20, 20, 8
        orders = []
        for step in (1, 2, 3):
            ds.select(step)
            x = np.concatenate([ds[i][0] for i in range(len(ds))])
            y = np.concatenate([ds[i][1] for i in range(len(ds))])
            images, inc = train.load_arrays(files[plan[step][1]], S)
            assert x.dtype == np.uint8 and x.shape == images.shape and ds.n_images == 48
            # the same images as the file, each once, with its own label, in a shuffled order
            order = [int(np.flatnonzero((images == xi).all(axis=(1, 2, 3)))[0]) for xi in x]
            assert sorted(order) == list(range(48)) and order != list(range(48))
            assert np.allclose(target_to_inclination(y), inc[order])
            orders.append(order)
        assert len({tuple(o) for o in orders}) == 3  # every step its own shuffle
        ds.select(3)  # selecting the current step again changes nothing
        assert np.array_equal(np.concatenate([ds[i][0] for i in range(len(ds))]), x)
    finally:
        ds.close()
    # the same step always gets the same shuffle (resume), whatever was served before
    again = BatchFileDataset(files, plan, S, batch_size=20, seed=4, uset=0, start=3)
    try:
        assert np.array_equal(np.concatenate([again[i][0] for i in range(len(again))]), x)
    finally:
        again.close()


def test_in_memory_validation_of_other_backends_scores_as_the_tf_data_pipeline(tiny_run):
    """`ArrayDataset` (the validation input on JAX / PyTorch) serves every image once, in order,
    and a model scores it exactly as it scores TensorFlow's `make_dataset` pipeline."""
    from inclinet_utils.models import build_model
    from inclinet_utils.train_dataset import ArrayDataset, make_dataset

    images, inc = train.load_arrays(train.validation_file(tiny_run, S), S)
    targets = inclination_to_target(inc)
    ds = ArrayDataset(images, targets, batch_size=7)
    assert len(ds) == -(-len(inc) // 7) and len(ds[len(ds) - 1][1]) == len(inc) - 7 * (len(ds) - 1)
    assert np.array_equal(np.concatenate([ds[i][0] for i in range(len(ds))]), images)
    keras.utils.set_random_seed(0)
    model = build_model("model4", S)
    via_arrays = model.evaluate(ds, verbose=0, return_dict=True)
    via_tf_data = model.evaluate(make_dataset(images, targets, 7), verbose=0, return_dict=True)
    assert via_arrays["loss"] == pytest.approx(via_tf_data["loss"], rel=1e-5)
    assert via_arrays["mae"] == pytest.approx(via_tf_data["mae"], rel=1e-5)


def test_hyperparameters_pass_through_the_command_line(tiny_run, tmp_path):
    run = _copy_augmented(tiny_run, tmp_path)
    args = ["--run-dir", str(run), "--models", "model4", "--usets", "1", "--size", str(S), "--n-passes", "1",
            "--training-batch-size", "24", "--learning-rate", "0.002", "--bn-momentum", "0.8",
            "--output-activation", "linear", "--mixed-precision", "mixed_bfloat16", "--seed", "3",
            "--no-progress"]
    assert train.main(args + ["--max-steps", "1"]) == 0
    paths = train.training_paths(run, "model4", 1)
    params = json.loads(paths["params"].read_text())
    assert {k: params[k] for k in ("training_batch_size", "learning_rate", "bn_momentum", "n_passes",
                                   "output_activation", "mixed_precision", "seed")} == {
        "training_batch_size": 24, "learning_rate": 0.002, "bn_momentum": 0.8, "n_passes": 1,
        "output_activation": "linear", "mixed_precision": "mixed_bfloat16", "seed": 3}
    # a resumed training must keep them
    with pytest.raises(train.TrainInputError, match="output_activation"):
        train.train_model(run, "model4", 1, S, 1, 24, 0.002, seed=3, bn_momentum=0.8, progress=False,
                          mixed_precision="mixed_bfloat16")
    with pytest.raises(train.TrainInputError, match="mixed_precision"):
        train.train_model(run, "model4", 1, S, 1, 24, 0.002, seed=3, bn_momentum=0.8, progress=False,
                          output_activation="linear", mixed_precision="mixed_float16")
    assert train.main(args) == 0
    hist = _assert_complete_history(run, "model4", 1, 3, 1, 3)
    assert hist[0]["n_images"] == 48
    model = keras.saving.load_model(paths["final"])
    assert model.layers[-1].activation is keras.activations.linear
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.get_layer("fc_out2").compute_dtype == "float32"
    assert model.get_layer("bn_2").momentum == pytest.approx(0.8)
    assert int(model.optimizer.iterations.numpy()) == 3 * 2  # 3 steps of 48 images in batches of 24
    assert keras.mixed_precision.global_policy().name == "float32"


def test_csv_log_of_a_killed_step_is_dropped_on_resume(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss\n0,0.5\n1,0.4\n2,0.3\n")
    trim_csv_log(log, 2)
    assert log.read_text() == "epoch,loss\n0,0.5\n1,0.4\n"
    trim_csv_log(log, 2)
    assert log.read_text() == "epoch,loss\n0,0.5\n1,0.4\n"
    trim_csv_log(log, 0)
    assert not log.exists()
    trim_csv_log(log, 3)  # no log yet: nothing to do
    assert not log.exists()


def test_bad_hyperparameters_and_uneven_files_are_refused_before_writing(tmp_path):
    write_augmented(tmp_path, size=S, usets=(0,), n_batches=2, n_per_batch=16, n_val=8)
    for kw, word in ((dict(output_activation="relu"), "output_activation"),
                     (dict(mixed_precision="float8"), "mixed_precision"),
                     (dict(bn_momentum=1.0), "bn_momentum"),
                     (dict(training_batch_size=0), "training_batch_size"),
                     (dict(learning_rate=-1.0), "learning_rate")):
        with pytest.raises(train.TrainInputError, match=word):
            train.train_all(tmp_path, ["model4"], [], S, n_passes=1, progress=False, **kw)
    aug = tmp_path / "augmented" / "Uset_000_npz"
    np.savez(aug / f"{S}x{S}_train_aug_03.npz", images=np.zeros((40, S, S, 3), np.uint8),
             labels=np.full(40, 60))
    with pytest.raises(train.TrainInputError, match="train_aug_03.npz"):
        train_files.batches_per_file(train.batch_files(tmp_path, 0, S), 16)
    with pytest.raises(train.TrainInputError, match="same number of images"):
        train.train_all(tmp_path, ["model4"], [], S, n_passes=1, progress=False, training_batch_size=16)
    assert not (tmp_path / "models").exists()
