"""Fine-tuning from another run (finetune.py and its hooks in train.py): exact weight loading,
frozen blocks, refused parents, the parent in run.json, the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from inclinet_utils import finetune, layout, train
from inclinet_utils.inference import load_model
from inclinet_utils.train_files import TrainInputError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_samples import ellipse_images, write_augmented  # noqa: E402

S = 32
KW = dict(training_batch_size=32, progress=False, mixed_precision="float32")


@pytest.fixture(scope="module")
def parent_run(tmp_path_factory):
    """A trained tiny parent run (model4, Uset 000, 32 px) with a metrics.json."""
    run = tmp_path_factory.mktemp("parent")
    write_augmented(run, size=S, usets=(0,), n_batches=2, n_per_batch=64, n_val=32, seed=1)
    train.train_all(run, ["model4"], [], S, n_passes=1, seed=3, **KW)
    (run / "metrics.json").write_text(json.dumps({"ensemble_mean": {"rms_deg": 7.5}}))
    return run


def _child(tmp_path, size=S, usets=(0,)):
    write_augmented(tmp_path, size=size, usets=usets, n_batches=2, n_per_batch=64, n_val=32, seed=2)
    return tmp_path


def _final(run, model="model4", uset=0):
    return load_model(train.training_paths(run, model, uset)["final"])


def _block_weights(model):
    return [w.numpy() for layer in finetune.block_layers(model) for w in layer.weights]


def _head_weights(model):
    blocks = {id(layer) for layer in finetune.block_layers(model)}
    return [w.numpy() for layer in model.layers if id(layer) not in blocks for w in layer.weights]


def test_child_starts_with_the_parents_predictions(parent_run, tmp_path):
    child = _child(tmp_path)
    ft = finetune.FineTune(str(parent_run))
    files, val = train.uset_files(child, 0, S)
    params = train.training_params("model4", 0, S, 1, 32, 3e-4, 9, 0.9, "tanh", None, files, val)
    model = train._build(params, 2, 2)
    images = ellipse_images(np.random.default_rng(5), np.linspace(45, 90, 12), S).astype(np.float32)
    before = np.asarray(model(images, training=False))
    finetune.initialise(model, ft, child, "model4", 0, S)
    parent = _final(parent_run)
    expected = np.asarray(parent(images, training=False))
    assert not np.allclose(before, expected)  # a fresh model predicts otherwise
    np.testing.assert_array_equal(np.asarray(model(images, training=False)), expected)


def test_head_training_keeps_the_blocks_and_changes_the_head(parent_run, tmp_path):
    child = _child(tmp_path)
    ft = finetune.FineTune(str(parent_run), trainable="head", learning_rate=1e-3)
    train.train_all(child, ["model4"], [], S, n_passes=1, seed=4, finetune=ft, **KW)
    parent, trained = _final(parent_run), _final(child)
    for a, b in zip(_block_weights(parent), _block_weights(trained)):
        np.testing.assert_array_equal(a, b)  # BatchNorm statistics too
    assert any(not np.array_equal(a, b) for a, b in zip(_head_weights(parent), _head_weights(trained)))


def test_frozen_passes_then_every_layer_trains(parent_run, tmp_path):
    ft = finetune.FineTune(str(parent_run), trainable="all", frozen_passes=1, learning_rate=1e-3)
    parent_conv1 = _final(parent_run).get_layer("conv1").kernel.numpy()
    stopped = _child(tmp_path / "stopped")
    train.train_all(stopped, ["model4"], [], S, n_passes=2, seed=4, max_steps=2, finetune=ft, **KW)
    with np.load(train.training_paths(stopped, "model4", 0)["checkpoint"]) as z:
        np.testing.assert_array_equal(z["v0000"], parent_conv1)  # after the frozen pass (2 files)
    whole = _child(tmp_path / "whole")  # one model.fit: the callback thaws the blocks at step 2
    train.train_all(whole, ["model4"], [], S, n_passes=2, seed=4, finetune=ft, **KW)
    assert not np.array_equal(_final(whole).get_layer("conv1").kernel.numpy(), parent_conv1)


def test_parent_of_another_size_or_model_is_refused_naming_both(parent_run, tmp_path):
    small = _child(tmp_path / "small", size=24)
    with pytest.raises(TrainInputError) as exc:
        train.train_all(small, ["model4"], [], 24, n_passes=1, finetune=finetune.FineTune(str(parent_run)), **KW)
    assert str(parent_run) in str(exc.value) and str(small) in str(exc.value) and "24x24" in str(exc.value)
    other = _child(tmp_path / "other")
    with pytest.raises(TrainInputError) as exc:
        train.train_all(other, ["model6"], [], S, n_passes=1, finetune=finetune.FineTune(str(parent_run)), **KW)
    assert str(parent_run) in str(exc.value) and str(other) in str(exc.value) and "model6" in str(exc.value)
    for run in (small, other):  # refused before anything was written
        assert not layout.run_paths(run)["models"].exists() and not (run / "run.json").exists()
    with pytest.raises(TrainInputError, match="trainable"):
        finetune.FineTune(str(parent_run), trainable="conv")


def test_command_line_fine_tunes_and_run_json_names_the_parent(parent_run, tmp_path):
    child = _child(tmp_path, usets=(1,))  # no Uset 001 in the parent: starts from its Uset 000
    code = train.main(["--run-dir", str(child), "--models", "model4", "--size", str(S), "--n-passes", "1",
                       "--training-batch-size", "32", "--mixed-precision", "float32", "--no-progress",
                       "--init-from", str(parent_run), "--trainable", "head"])
    assert code == 0
    record = json.loads((child / "run.json").read_text())
    assert record["parent"]["run_dir"] == str(parent_run.resolve())
    assert record["parent"]["metrics"] == {"ensemble_mean": {"rms_deg": 7.5}}
    assert record["finetune"]["trainable"] == "head"
    params = json.loads(train.training_paths(child, "model4", 1)["params"].read_text())
    assert params["init_from"] == str(parent_run.resolve())
    assert params["learning_rate"] == pytest.approx(finetune.FINETUNE_LEARNING_RATE)
    parent, trained = _final(parent_run, uset=0), _final(child, uset=1)
    for a, b in zip(_block_weights(parent), _block_weights(trained)):
        np.testing.assert_array_equal(a, b)


def test_runner_records_the_parent_of_a_fine_tuning_run(parent_run):
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_notebooks", Path(__file__).resolve().parents[1] / "run_notebooks.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    assert runner._parent({"init_from": ""}) == {}
    parent = runner._parent({"init_from": str(parent_run)})["parent"]
    assert parent["run_dir"] == str(parent_run.resolve()) and parent["metrics"]["ensemble_mean"]["rms_deg"] == 7.5


def test_evaluation_shows_the_parents_metrics_beside_the_childs(parent_run, tmp_path):
    from inclinet_utils import plots

    assert finetune.metrics_beside_parent(tmp_path, {"ensemble_mean": {"rms_deg": 5.0}}) is None  # no parent
    finetune.record_parent(tmp_path, finetune.FineTune(str(parent_run)))
    table = finetune.metrics_beside_parent(tmp_path, {"ensemble_mean": {"rms_deg": 5.0, "mae_deg": 4.0}})
    assert table.loc["ensemble_mean", ("rms_deg", "this run")] == 5.0
    assert table.loc["ensemble_mean", ("rms_deg", f"parent {parent_run.name}")] == 7.5
    ft = finetune.FineTune(str(parent_run))
    history = finetune.parent_history(ft, "model4", 3)  # no Uset 003 in the parent: Uset 000's
    assert sorted(history) == [0, 1]
    fig = plots.chained_training_curves(history, history)
    assert len(fig.axes[1].lines) >= 4  # parent and child, train and validation
