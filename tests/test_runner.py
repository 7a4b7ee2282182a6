"""End-to-end runs of run_notebooks.py: the whole pipeline on a tiny synthetic sample,
stages 01-03 on the real SDSS reference folder, and the runner's safety rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "real_sdss"

# Smallest settings that still exercise every stage and every band kind.
TINY = ["--size", "32", "--band", "g", "gri", "--n-galaxies", "60", "--seed", "7", "--m-iter", "1",
        "--n-batches", "2", "--batch-size", "6", "--models", "model4", "--n-passes", "1"]


def run(args, root: Path, timeout=900):
    return subprocess.run([sys.executable, str(REPO / "run_notebooks.py"), "--output-root", str(root), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    proc = run([*TINY, "--run-name", "tiny"], root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "tiny", proc


@pytest.mark.slow
def test_full_pipeline_on_tiny_synthetic_sample(tiny_run):
    run_dir, proc = tiny_run
    record = json.loads((run_dir / "run.json").read_text())
    stages = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert list(record["stages"]) == stages
    for stage, entry in record["stages"].items():
        assert entry["status"] == "completed", stage
        assert entry["wall_s"] > 0
        assert (run_dir / "notebooks" / f"{stage}.ipynb").is_file()
        assert (run_dir / "notebooks" / f"{stage}.html").stat().st_size > 10_000
    assert record["parameters"]["size"] == 32 and record["parameters"]["bands"] == ["g", "gri"]
    assert record["packages"]["tensorflow"] and record["packages"]["galsim"]
    assert record["input"] == "simulated"

    # Executed notebooks carry their figures inline.
    nb = json.loads((run_dir / "notebooks" / "00_simulate.ipynb").read_text())
    assert any("image/png" in out.get("data", {}) for c in nb["cells"] for out in c.get("outputs", []))

    for tag in ("g", "RGB"):
        with np.load(run_dir / "compressed" / f"32x32_{tag}.npz") as d:
            assert d["images"].shape[1:] == (32, 32, 3) and d["images"].dtype == np.uint8
            assert d["labels"].shape[0] == 2
        assert (run_dir / "samples" / f"{tag}_32x32_train_001.npz").is_file()
    assert (run_dir / "metrics.json").is_file()
    assert "model4" in proc.stdout  # the end-of-run summary of metrics.json


@pytest.mark.slow
def test_existing_run_is_never_overwritten_and_resume_skips_completed(tiny_run):
    run_dir, _ = tiny_run
    before = (run_dir / "run.json").read_bytes()
    proc = run([*TINY, "--run-name", "tiny"], run_dir.parent)
    assert proc.returncode != 0 and "already exists" in proc.stderr
    assert (run_dir / "run.json").read_bytes() == before

    proc = run([*TINY, "--run-name", "tiny", "--resume", "--to", "03_split"], run_dir.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("[skip]") == 4 and "[run ]" not in proc.stdout

    proc = run(["--run-name", "tiny", "--resume", "--size", "64"], run_dir.parent)
    assert proc.returncode != 0 and "differ from the recorded run" in proc.stderr


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_sdss not present")
def test_real_sdss_input_through_split(tmp_path):
    proc = run(["--images", str(REAL / "galaxies"), "--catalog", str(REAL / "catalogs" / "catalog.csv"),
                "--size", "64", "--run-name", "real", "--to", "03_split"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "real"
    record = json.loads((run_dir / "run.json").read_text())
    assert list(record["stages"]) == ["01_prep", "02_compress", "03_split"]  # no simulation
    assert record["input"] == "real"
    assert (run_dir / "prep" / "64x64_RGB" / "pgc44182_64x64_61.RGB.jpg").is_file()
    assert (run_dir / "prep" / "64x64_g" / "pgc118_64x64_F.g.jpg").is_file()
    with np.load(run_dir / "compressed" / "64x64_r.npz") as d:
        assert sorted(d["labels"][0]) == [118, 129, 354, 676, 2148, 6864, 44182, 56987]
    with np.load(run_dir / "samples" / "RGB_64x64_train_000.npz") as tr, \
            np.load(run_dir / "samples" / "RGB_64x64_test_000.npz") as te:
        assert sorted(np.r_[tr["pgcIDs"], te["pgcIDs"]]) == [354, 676, 2148, 6864, 44182]
    for stage in record["stages"]:
        assert (run_dir / "notebooks" / f"{stage}.html").is_file()


def test_failing_stage_stops_the_run_and_names_notebook_and_file(tmp_path):
    images = tmp_path / "galaxies"
    images.mkdir()
    sky = np.full((64, 64), 250, np.uint8)
    for pgc in (11, 12, 13, 14):
        Image.fromarray(sky, "L").save(images / f"pgc{pgc}_d25x2_rot_g.png")
    (images / "pgc12_d25x2_rot_g.png").write_bytes(b"not a png at all")
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("pgc | inc | inc_flg | fon | inc_note\n"
                       + "".join(f" {p} | {60 + p} | 0 |  | \n" for p in (11, 12, 13, 14)))
    proc = run(["--images", str(images), "--catalog", str(catalog), "--band", "g", "--size", "32",
                "--run-name", "bad"], tmp_path / "runs")
    assert proc.returncode == 1
    assert "01_prep" in proc.stderr and "pgc12_d25x2_rot_g.png" in proc.stderr
    run_dir = tmp_path / "runs" / "bad"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["stages"]["01_prep"]["status"] == "failed"
    assert list(record["stages"]) == ["01_prep"]  # later stages did not run
    assert not (run_dir / "prep").exists()  # nothing partial
    assert (run_dir / "notebooks" / "01_prep.html").is_file()  # the failed notebook stays readable


def test_bad_catalog_is_refused_before_anything_is_written(tmp_path):
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("pgc | inc | inc_flg | fon\n 1 | 60 | 0 | \n")
    proc = run(["--images", str(tmp_path), "--catalog", str(catalog), "--run-name", "x"], tmp_path / "runs")
    assert proc.returncode != 0 and "inc_note" in proc.stderr
    assert not (tmp_path / "runs").exists()
