"""Survey prediction tables: a row and a status for every file, 06's bias fit and calibrated sigma,
resuming an interrupted table, and the same table from Dask workers (also when one is killed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from inclinet_utils import executor, images, inference, layout, predict, predict_stream, uncertainty
from inclinet_utils import io as iio
from inclinet_utils.images import load_prepared
from inclinet_utils.metrics import BiasFit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import disk_image  # noqa: E402
from train_samples import write_augmented  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
MEMBERS = [("model4", 0), ("model4", 1), ("model6", 0)]
TRAINED = ["g", "r", "i"]  # not gri: a colour composite is an untrained band for this run
BIAS = BiasFit(m=0.1, b=-3.0, n=50, rms_fit_before=6.0, rms_fit_after=5.0)


def _tiny_model(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1, kernel_initializer=keras.initializers.RandomNormal(stddev=2.0)),
    ])


def _write_folder(folder: Path, n_gal: int = 5) -> dict:
    folder.mkdir(parents=True)
    good = []
    for k in range(n_gal):
        for j, band in enumerate(("g", "r")):
            path = folder / layout.simulated_image_name(200 + k, band)
            Image.fromarray(disk_image(48, 50 + 8 * k + 3 * j, radius=10 + k), "L").save(path)
            good.append(path)
    corrupt = folder / layout.simulated_image_name(300, "i")
    corrupt.write_bytes(good[0].read_bytes()[:60])  # a PNG cut short
    text = folder / "notes.txt"
    text.write_text("observing log, not an image\n")
    colour = folder / layout.simulated_image_name(301, "gri")
    Image.fromarray(np.full((48, 48, 3), 30, np.uint8), "RGB").save(colour)
    return {"good": good, "corrupt": corrupt, "text": text, "colour": colour}


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """A run of three tiny members with 06's products (bias fit, calibration) and a folder of images."""
    root = tmp_path_factory.mktemp("survey")
    run = root / "run"
    paths = layout.run_paths(run)
    paths["models"].mkdir(parents=True)
    models = []
    for k, (model, uset) in enumerate(MEMBERS):
        m = _tiny_model(k)
        m.save(paths["models"] / layout.model_file_name(model, uset))
        models.append(m)
    inference.record_trained_bands(run, {layout.model_row(*m): TRAINED for m in MEMBERS})
    files = _write_folder(root / "galaxies")
    batch = np.stack([load_prepared(p, layout.parse_input_image_name(p.name).band, SIZE) for p in files["good"]])
    values = np.column_stack([inference.predict_images(m, batch) for m in models])
    spread = values.std(axis=1, ddof=1)
    paths["evaluation"].mkdir()
    pd.DataFrame([{"row": "all/median", "m": BIAS.m, "b": BIAS.b, "n_fit": BIAS.n, "applied": True,
                   "rms_fit_before": BIAS.rms_fit_before, "rms_fit_after": BIAS.rms_fit_after}]
                 ).to_csv(paths["evaluation"] / layout.EVALUATION_FILES["bias_fits"], index=False)
    threshold = float(np.median(spread))  # half the good images raise the alarm
    cal = uncertainty.Calibration(a=1.5, b=2.0, n=100, spread_p95=threshold / 2, spread_p99=threshold)
    iio.write_json(paths["evaluation"] / layout.EVALUATION_FILES["uncertainty"], cal.to_dict())
    return {"run": run, "root": root, "values": values, "cal": cal, **files}


def _statuses(table):
    return dict(zip(table["file"].map(lambda f: Path(f).name), table["status"]))


def test_a_row_for_every_file_with_its_status(survey, tmp_path):
    out = tmp_path / "table.csv"
    summary = predict.write_table(survey["root"] / "galaxies", survey["run"], out, chunk_size=4, progress=False)
    table = predict_stream.read_table(out)
    assert len(table) == len(survey["good"]) + 3 and summary["n_ok"] == len(survey["good"])
    status = _statuses(table)
    assert status[survey["corrupt"].name].startswith("unreadable:") and survey["corrupt"].name in \
        status[survey["corrupt"].name]
    assert status["notes.txt"].startswith("unreadable:") and "not a readable image" in status["notes.txt"]
    assert status[survey["colour"].name].startswith("untrained band: band 'gri'")
    assert "can measure g r i" in status[survey["colour"].name]
    ok = table[table["status"] == "ok"].reset_index(drop=True)
    assert [Path(f) for f in ok["file"]] == survey["good"]  # sorted folder order, none lost
    assert list(ok["pgc"]) == [200 + k // 2 for k in range(len(survey["good"]))]
    rows = [layout.model_row(*m) for m in MEMBERS]
    np.testing.assert_allclose(ok[rows].to_numpy(), survey["values"], atol=1e-4)  # flip-averaged members
    np.testing.assert_allclose(ok["inclination_deg"], np.median(survey["values"], axis=1), atol=1e-4)
    np.testing.assert_allclose(ok["spread_deg"], survey["values"].std(axis=1, ddof=1), atol=1e-4)
    np.testing.assert_allclose(ok["inclination_bc_deg"], BIAS.apply(ok["inclination_deg"]), atol=1e-6)
    assert not np.allclose(ok["inclination_bc_deg"], ok["inclination_deg"])
    cal = survey["cal"]
    np.testing.assert_allclose(ok["sigma_deg"], np.sqrt((1.5 * ok["spread_deg"]) ** 2 + 4.0), rtol=1e-9)
    assert list(ok["disagree"]) == list(ok["spread_deg"] > cal.spread_p99) and 0 < ok["disagree"].sum() < len(ok)
    bad = table[table["status"] != "ok"]
    assert bad["inclination_deg"].isna().all() and (bad["n_models"] == 0).all() and not bad["disagree"].any()
    assert not layout.prediction_parts_dir(out).exists()
    with pytest.raises(FileExistsError, match="table.csv"):
        predict.write_table(survey["root"] / "galaxies", survey["run"], out, progress=False)

    # The in-memory API and a Parquet table hold the same rows.
    pd.testing.assert_frame_equal(predict.predict_table(survey["root"] / "galaxies", survey["run"], progress=False),
                                  table, check_dtype=False, atol=1e-6)
    predict.write_table(survey["root"] / "galaxies", survey["run"], tmp_path / "t.parquet", progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), table, check_dtype=False)


def test_catalog_galaxies_without_a_file_get_a_missing_row(survey, tmp_path):
    cat = pd.DataFrame({"pgc": [200, 201, 999]})
    table = predict.predict_table(survey["root"] / "galaxies", survey["run"], catalog=cat, progress=False)
    assert len(table) == 3 * len(TRAINED)  # every catalog galaxy in every trained band
    got = table.set_index(["pgc", "band"])["status"]
    assert got[(200, "g")] == "ok" and got[(201, "r")] == "ok"
    assert got[(200, "i")].startswith("missing:") and "pgc200_d25x2_rot_i.png" in got[(200, "i")]
    assert got[(999, "g")].startswith("missing:")


def test_cli_writes_the_table_and_fails_only_when_nothing_is_measured(survey, tmp_path):
    out = tmp_path / "cli.csv"
    proc = subprocess.run([sys.executable, "-m", "inclinet_utils.predict", "--run", str(survey["run"]),
                           "--images", str(survey["root"] / "galaxies"), "--out", str(out), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"({len(survey['good'])} ok)" in proc.stdout and "notes.txt: unreadable" in proc.stderr
    assert len(predict_stream.read_table(out)) == len(survey["good"]) + 3
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "a.txt").write_text("x")
    assert predict.main(["--run", str(survey["run"]), "--images", str(only_bad), "--no-progress"]) == 1
    assert predict.main(["--run", str(survey["run"]), "--images", str(tmp_path / "none"), "--no-progress"]) == 2


class Interrupt(Exception):
    pass


def test_resume_continues_an_interrupted_table(survey, tmp_path):
    folder = survey["root"] / "galaxies"
    whole = tmp_path / "whole.csv"
    predict.write_table(folder, survey["run"], whole, chunk_size=3, progress=False)
    out = tmp_path / "cut.csv"

    def stop_after_two(k, table):
        if k == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        predict.write_table(folder, survey["run"], out, chunk_size=3, progress=False, on_chunk=stop_after_two)
    parts = layout.prediction_parts_dir(out)
    assert not out.exists() and sorted(p.name for p in parts.glob("part-*.csv")) == ["part-000000.csv",
                                                                                       "part-000001.csv"]
    (parts / ".part-000002.csv.partial-999").write_text("file,pgc\nhalf a ro")  # a write cut by a kill
    with pytest.raises(FileExistsError, match="resume"):
        predict.write_table(folder, survey["run"], out, chunk_size=3, progress=False)
    with pytest.raises(ValueError, match="chunk_size"):
        predict.write_table(folder, survey["run"], out, chunk_size=4, resume=True, progress=False)
    measured = []
    summary = predict.write_table(folder, survey["run"], out, chunk_size=3, resume=True, progress=False,
                                  on_chunk=lambda k, t: measured.append(k))
    assert summary["resumed_chunks"] == 2 and measured == list(range(2, summary["n_chunks"]))
    assert out.read_text() == whole.read_text()  # no row lost, none twice
    assert not parts.exists()


def test_dask_workers_give_the_same_table_also_when_one_is_killed(survey, tmp_path):
    distributed = pytest.importorskip("distributed")
    folder = survey["root"] / "galaxies"
    local = tmp_path / "local.csv"
    predict.write_table(folder, survey["run"], local, chunk_size=2, progress=False)
    expected = predict_stream.read_table(local)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")}) as cluster, \
            distributed.Client(cluster) as client:
        out = tmp_path / "dask.csv"
        predict.write_table(folder, survey["run"], out, chunk_size=2, progress=False, scheduler=client)
        pd.testing.assert_frame_equal(predict_stream.read_table(out), expected, rtol=1e-5)

        pids = list(client.run(os.getpid).values())
        killed = []

        def kill_one(k, table):
            if not killed:
                os.kill(pids[0], signal.SIGKILL)  # a worker dies with chunks in flight
                killed.append(k)

        out2 = tmp_path / "dask_killed.csv"
        predict.write_table(folder, survey["run"], out2, chunk_size=2, progress=False, scheduler=client,
                            on_chunk=kill_one)
        assert killed
        pd.testing.assert_frame_equal(predict_stream.read_table(out2), expected, rtol=1e-5)

        # The same executor serves stage 01's map (images.parallel_map) ...
        tasks = list(range(7))
        assert images.parallel_map(_square, tasks, 2, progress=False, client=client) == [t * t for t in tasks]

        # ... and stage 05's (model, Uset) trainings, one Dask task each (no GPU declared: no resource asked).
        run = tmp_path / "train_run"
        write_augmented(run, size=SIZE, usets=(0, 1), n_batches=1, n_per_batch=16, n_val=8)
        assert executor.worker_resources(client) == set()
        codes = executor.submit_trainings(client, run, [("model4", 0), ("model4", 1)],
                                          {"size": SIZE, "n_passes": 1, "training_batch_size": 8, "max_steps": 1,
                                           "no_progress": True}, progress=False)
        assert codes == {("model4", 0): 0, ("model4", 1): 0}
        assert [(m, u) for m, u, _ in layout.find_model_files(run / "models")] == [("model4", 0), ("model4", 1)]


def _square(x):
    return x * x


def test_training_arguments_and_scheduler_values():
    assert executor.training_argv("r", "model6", 2, {"n_passes": 3, "no_progress": True, "seed": None}) == [
        "--run-dir", "r", "--models", "model6", "--usets", "2", "--n-passes", "3", "--no-progress"]
    with executor.dask_client(None) as client:
        assert client is None
    with pytest.raises(ValueError, match="tcp://host:8786"):
        with executor.dask_client("nonsense"):
            pass


def test_rows_carry_the_rejection_probability_of_the_run_classifiers(survey, tmp_path):
    """A run with an accept/reject classifier: every measured row gets the ensemble P(rejected)
    (flip-averaged, strictly inside (0, 1)) and `accepted` from 06's threshold; other rows none."""
    import shutil

    import keras

    run = tmp_path / "run"
    shutil.copytree(survey["run"], run)
    keras.utils.set_random_seed(7)
    clf = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255),
                            keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(1, activation="sigmoid",
                                               kernel_initializer=keras.initializers.RandomNormal(stddev=3.0))])
    clf.save(layout.run_paths(run)["models"] / layout.model_file_name(layout.binary_name("model4"), 0))
    batch = np.stack([load_prepared(p, layout.parse_input_image_name(p.name).band, SIZE) for p in survey["good"]])
    expected = inference.flip_averaged_output(clf, batch)
    threshold = float(np.median(expected))
    iio.write_json(layout.run_paths(run)["classifier"], {"threshold": threshold, "bands": TRAINED,
                                                        "members": [layout.model_row(layout.binary_name("model4"), 0)]})
    table = predict.predict_table(survey["root"] / "galaxies", run, progress=False)
    assert {"p_reject", "accepted"} <= set(table.columns)
    assert layout.model_row(layout.binary_name("model4"), 0) not in table.columns  # not a regressor member
    ok = table[table["status"] == "ok"].reset_index(drop=True)
    np.testing.assert_allclose(ok["p_reject"], expected, atol=1e-5)
    assert ((ok["p_reject"] > 0) & (ok["p_reject"] < 1)).all() and np.ptp(ok["p_reject"]) > 0
    assert list(ok["accepted"]) == list(ok["p_reject"] <= threshold) and 0 < ok["accepted"].sum() < len(ok)
    bad = table[table["status"] != "ok"]
    assert bad["p_reject"].isna().all() and bad["accepted"].isna().all()
    # without a classifier the table has no such columns
    assert "p_reject" not in predict.predict_table(survey["root"] / "galaxies", survey["run"], progress=False)
