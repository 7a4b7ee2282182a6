"""The runner and its configuration: every bad value stops run_notebooks.py before anything
is written, the precedence of defaults, presets, config files and options, the notebooks
declaring only their own parameters, the README options table, and end-to-end runs (the
whole pipeline on a tiny synthetic sample, stages 01-03 on the real SDSS reference folder)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from inclinet_utils import BANDS, config
from inclinet_utils.presets import PRESETS

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
REAL = REPO.parent / "shared" / "real_sdss"

# Smallest settings that still exercise every stage and every band kind.
TINY = ["--size", "32", "--band", "g", "gri", "--n-galaxies", "60", "--seed", "7", "--m-iter", "1",
        "--n-batches", "2", "--batch-size", "6", "--models", "model4", "--n-passes", "1"]


def run(args, root: Path, timeout=2400):  # generous: the tiny run takes ~17 min on 2 busy cores
    return subprocess.run([sys.executable, str(REPO / "run_notebooks.py"), "--output-root", str(root), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def runner():
    """run_notebooks.py imported as a module, to call its functions in this process."""
    spec = importlib.util.spec_from_file_location("run_notebooks", REPO / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def params():
    return config.all_parameters(config.stage_parameters(NOTEBOOKS, config.discover_stages(NOTEBOOKS)))


def refused(runner, capsys, argv) -> str:
    """The runner's error message for `argv`; it must exit with status 2 before running anything."""
    with pytest.raises(SystemExit) as exc:
        runner.main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


# ---- bad values stop the run at once, writing nothing -------------------------------

@pytest.mark.parametrize("args, named", [
    (["--run-name", "../x"], "'../x'"),
    (["--run-name", "a/b"], "'a/b'"),
    (["--run-name", ".."], "'..'"),
    (["--run-name", ""], "''"),
    (["--test-fraction", "1.5"], "--test-fraction 1.5"),
    (["--test-fraction", "0"], "--test-fraction 0"),
    (["--bagging-fraction", "1.5"], "--bagging-fraction 1.5"),
    (["--bagging-fraction", "0"], "--bagging-fraction 0"),
    (["--size", "0"], "--size 0"),
    (["--band", "q"], "--band q"),
    (["--band", "g", "RGB"], "--band g RGB"),
    (["--models", "model9"], "--models model9"),
    (["--usets", "-1"], "--usets -1"),
    (["--zoom", "0.5"], "--zoom 0.5"),
    (["--bn-momentum", "1"], "--bn-momentum 1"),
    (["--axis-ratio-image", "both"], "--axis-ratio-image both"),
    (["--from", "04", "--to", "02"], "--from 04"),
    (["--stages", "9"], "'9'"),
    (["--stages", "02"], "00_simulate before 02_compress"),  # a new run cannot start in the middle
])
def test_bad_value_is_refused_naming_it_and_nothing_is_written(runner, capsys, tmp_path, args, named):
    root = tmp_path / "runs"
    err = refused(runner, capsys, ["--output-root", str(root), *args])
    assert named in err
    assert list(tmp_path.iterdir()) == []  # no output root, no run folder beside it


def test_missing_catalog_and_images_are_named(runner, capsys, tmp_path):
    root = tmp_path / "runs"
    missing = tmp_path / "nowhere" / "catalog.csv"
    err = refused(runner, capsys, ["--output-root", str(root), "--images", str(tmp_path), "--catalog", str(missing)])
    assert f"--catalog {missing}" in err and "does not exist" in err
    err = refused(runner, capsys, ["--output-root", str(root), "--images", str(tmp_path / "no_images")])
    assert f"--images {tmp_path / 'no_images'}" in err
    err = refused(runner, capsys, ["--output-root", str(root), "--images", str(tmp_path)])
    assert "--catalog" in err and "missing" in err  # images without a catalog
    assert not root.exists()


def test_command_line_refusals_exit_nonzero_in_a_fresh_process(tmp_path):
    for args, named in ((["--run-name", "../x"], "../x"), (["--size", "0"], "--size 0")):
        proc = run(args, tmp_path / "runs", timeout=300)
        assert proc.returncode == 2 and named in proc.stderr, proc.stderr
        assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_bad_catalog_is_refused_before_anything_is_written(tmp_path):
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("pgc | inc | inc_flg | fon\n 1 | 60 | 0 | \n")
    proc = run(["--images", str(tmp_path), "--catalog", str(catalog), "--run-name", "x"], tmp_path / "runs")
    assert proc.returncode != 0 and "inc_note" in proc.stderr and str(catalog) in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_existing_run_folder_is_refused_and_resume_checks_recorded_values(runner, capsys, tmp_path):
    run_dir = tmp_path / "runs" / "old"
    run_dir.mkdir(parents=True)
    err = refused(runner, capsys, ["--output-root", str(tmp_path / "runs"), "--run-name", "old"])
    assert "already exists" in err
    err = refused(runner, capsys, ["--output-root", str(tmp_path / "runs"), "--run-name", "old", "--resume"])
    assert "run.json not found" in err
    (run_dir / "run.json").write_text(json.dumps({"parameters": {"size": 32, "bands": ["g"]}, "stages": {}}))
    err = refused(runner, capsys, ["--output-root", str(tmp_path / "runs"), "--run-name", "old", "--resume",
                                   "--size", "64"])
    assert "differ from the recorded run" in err and "--size: recorded 32, given 64" in err
    # The same values as recorded are accepted, and resuming may start in the middle.
    plan = runner.plan_run(["--output-root", str(tmp_path / "runs"), "--run-name", "old", "--resume",
                            "--size", "32", "--stages", "03"])
    run_dir_planned, record, selected, _, _ = plan
    assert run_dir_planned == run_dir and selected == ["03_split"]
    assert record["parameters"]["size"] == 32 and record["parameters"]["test_fraction"] == 0.1


# ---- precedence: notebook default < preset < --config FILE.yaml < command line ------------

def test_precedence_default_preset_config_file_command_line(runner, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("n_passes: 7\nsize: 64\nbands: [g, gri]\n")
    plan = runner.plan_run(["--output-root", str(tmp_path / "runs"), "--run-name", "p", "--preset", "production",
                            "--config", str(cfg), "--size", "48"])
    _, record, selected, _, _ = plan
    values, sources = record["parameters"], record["parameter_sources"]
    prod = PRESETS["production"]
    assert values["size"] == 48 and sources["size"] == "command line"                 # beats file and preset
    assert values["n_passes"] == 7 and sources["n_passes"] == f"--config {cfg}"         # beats the preset
    assert values["bands"] == ["g", "gri"]
    assert values["batch_size"] == prod["batch_size"] and sources["batch_size"] == "preset production"
    assert values["models"] == prod["models"]
    assert values["q0"] == 0.2 and "q0" not in sources                                  # notebook default
    assert selected[0] == "00_simulate" and record["config_file"] == str(cfg)
    assert not (tmp_path / "runs").exists()  # planning writes nothing


def test_config_file_errors_name_the_file_and_key(runner, capsys, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("n_pases: 3\n")
    err = refused(runner, capsys, ["--output-root", str(tmp_path / "runs"), "--config", str(cfg)])
    assert str(cfg) in err and "'n_pases'" in err and "'n_passes'" in err  # the near miss is suggested
    cfg.write_text("test_fraction: 2\n")
    err = refused(runner, capsys, ["--output-root", str(tmp_path / "runs"), "--config", str(cfg)])
    assert f"--test-fraction 2 (--config {cfg})" in err
    cfg.write_text("- just\n- a list\n")
    assert "expected a mapping" in refused(runner, capsys, ["--output-root", str(tmp_path / "runs"),
                                                            "--config", str(cfg)])
    err = refused(runner, capsys, ["--output-root", str(tmp_path / "runs"), "--config", str(tmp_path / "no.yaml")])
    assert "no.yaml: no such file" in err
    assert not (tmp_path / "runs").exists()


def test_config_file_paths_are_relative_to_the_file(params, tmp_path):
    (tmp_path / "data" / "galaxies").mkdir(parents=True)
    cfg = tmp_path / "data" / "run.yaml"
    cfg.write_text("images_dir: galaxies\n")
    assert config.read_config_file(cfg, params) == {"images_dir": str(tmp_path / "data" / "galaxies")}


def test_check_value_types(params):
    assert config.check_value(params["learning_rate"], 1, "x") == 1.0 and \
        isinstance(config.check_value(params["learning_rate"], 1, "x"), float)
    for name, bad in (("size", 12.5), ("size", True), ("skip_bad_files", 1), ("bands", "g"),
                      ("usets", [0, "a"]), ("learning_rate", float("nan")), ("real_sdss_dir", 3)):
        with pytest.raises(config.ConfigError, match=re.escape(params[name].flag)):
            config.check_value(params[name], bad, "test")


# ---- declarations ---------------------------------------------------------------------

def test_notebooks_declare_only_their_own_parameters_with_types(params):
    run_wide = {f.name for f in dataclasses.fields(config.RunConfig)}
    stage_params = config.stage_parameters(NOTEBOOKS, config.discover_stages(NOTEBOOKS))
    for stage, declared in stage_params.items():
        assert not run_wide & set(declared), stage
        for p in declared.values():
            assert p.type in config.TYPES and p.help, (stage, p.name)
    # Each notebook reads the run-wide values from its run folder, right after its parameters.
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        i = next(k for k, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
        assert "run_config(run_dir)" in cells[i + 1].source, path.name


def test_a_notebook_redeclaring_a_run_wide_or_untyped_parameter_is_refused(tmp_path):
    for body, message in (('size: int = 64  # px', "run-wide"), ("n_things = 3  # count", "type annotation")):
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                               "display_name": "Python 3"}})
        nb.cells = [nbformat.v4.new_code_cell(f'run_dir: str = "x"  # run\n{body}', metadata={"tags": ["parameters"]})]
        nbformat.write(nb, tmp_path / "01_x.ipynb")
        with pytest.raises(config.ConfigError, match=message):
            config.stage_parameters(tmp_path, ["01_x"])


def test_rules_name_declared_parameters_and_cover_every_number(params):
    assert set(config.RULES) <= set(params)
    numeric = {n for n, p in params.items() if p.type in ("int", "float", "list[int]")}
    assert numeric <= set(config.RULES)


def test_model_choices_are_the_registered_models():
    from inclinet_utils import models

    assert sorted(config.MODEL_NAMES + config.CLASSIFIER_NAMES) == sorted(models.MODELS)


def test_presets_use_known_parameters_and_laptop_equals_the_defaults(params):
    for name, preset in PRESETS.items():
        for key, value in preset.items():
            assert key in params, (name, key)
            config.check_value(params[key], value, f"preset {name}")
    assert {k: params[k].default for k in PRESETS["laptop"]} == PRESETS["laptop"]


def test_run_config_reads_the_run_folder_or_gives_the_defaults(tmp_path):
    assert config.run_config(tmp_path) == config.RunConfig()
    assert config.RunConfig().bands == list(BANDS)
    (tmp_path / "run.json").write_text(json.dumps({"parameters": {"size": 32, "bands": ["gri"], "seed": 3,
                                                                  "n_passes": 1}}))
    cfg = config.run_config(tmp_path)
    assert (cfg.size, cfg.bands, cfg.seed, cfg.images_dir) == (32, ["gri"], 3, "")
    (tmp_path / "run.json").write_text(json.dumps({"parameters": {"size": 0}}))
    with pytest.raises(config.ConfigError, match="run.json"):
        config.run_config(tmp_path)


def test_stage_selection():
    stages = config.discover_stages(NOTEBOOKS)
    assert config.select_stages(stages) == stages
    assert config.select_stages(stages, real_input=True) == stages[1:]
    assert config.select_stages(stages, last="03") == stages[:4]
    assert config.select_stages(stages, ["split", "06"], new_run=False) == ["03_split", "06_evaluate"]
    with pytest.raises(config.ConfigError, match="01_prep before 03_split"):
        config.select_stages(stages, ["00", "03"])
    with pytest.raises(config.ConfigError, match="no stage selected"):
        config.select_stages(stages, ["00"], real_input=True)


def test_readme_options_table_is_the_generated_one():
    proc = subprocess.run([sys.executable, str(REPO / "run_notebooks.py"), "--options-table"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    readme = (REPO / "README.md").read_text()
    m = re.search(r"<!-- options-table: begin[^\n]*-->\n(.*?)<!-- options-table: end -->", readme, re.S)
    assert m, "README.md lacks the options-table markers"
    assert m.group(1) == proc.stdout, "README options table is stale: paste `python run_notebooks.py --options-table`"
    for p in config.run_parameters().values():
        assert f"`{p.flag}`" in proc.stdout


# ---- end to end -----------------------------------------------------------------------

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
    stages = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert list(record["stages"]) == stages
    for stage, entry in record["stages"].items():
        assert entry["status"] == "completed", stage
        assert entry["wall_s"] > 0
        assert (run_dir / "notebooks" / f"{stage}.ipynb").is_file()
        assert (run_dir / "notebooks" / f"{stage}.html").stat().st_size > 10_000
        assert (run_dir / "logs" / f"{stage}.log").is_file()
    assert record["parameters"]["size"] == 32 and record["parameters"]["bands"] == ["g", "gri"]
    assert record["parameter_sources"]["n_galaxies"] == "command line"
    assert record["packages"]["tensorflow"] and record["packages"]["galsim"] and record["git_commit"]
    assert record["input"] == "simulated"

    # The notebooks got the run-wide values from run.json: 01 prepared 32 px images of g and gri only.
    assert sorted(p.name for p in (run_dir / "prep").iterdir() if p.is_dir()) == ["32x32_RGB", "32x32_g"]
    nb = json.loads((run_dir / "notebooks" / "00_simulate.ipynb").read_text())
    assert any("image/png" in out.get("data", {}) for c in nb["cells"] for out in c.get("outputs", []))

    for tag in ("g", "RGB"):
        with np.load(run_dir / "compressed" / f"32x32_{tag}.npz") as d:
            assert d["images"].shape[1:] == (32, 32, 3) and d["images"].dtype == np.uint8
            assert d["labels"].shape[0] == 2
        assert (run_dir / "samples" / f"{tag}_32x32_train_001.npz").is_file()
    assert (run_dir / "metrics.json").is_file()

    # Terminal: one line per stage, the final table, no library chatter (that is in logs/).
    lines = proc.stdout.splitlines()
    for k, stage in enumerate(stages, 1):
        assert sum(line.startswith(f"[{k}/{len(stages)}] {stage}") and "completed" in line for line in lines) == 1
    assert "model4" in proc.stdout  # the end-of-run summary of metrics.json
    for chatter in ("tensorflow", "cuda", "Kernel", "papermill", "Executing"):
        assert chatter.lower() not in (proc.stdout + proc.stderr).lower(), chatter
    assert "papermill" in (run_dir / "logs" / "runner.log").read_text()


@pytest.mark.slow
def test_existing_run_is_never_overwritten_and_resume_skips_completed(tiny_run):
    run_dir, _ = tiny_run
    before = (run_dir / "run.json").read_bytes()
    proc = run([*TINY, "--run-name", "tiny"], run_dir.parent)
    assert proc.returncode != 0 and "already exists" in proc.stderr
    assert (run_dir / "run.json").read_bytes() == before

    proc = run([*TINY, "--run-name", "tiny", "--resume", "--to", "03_split"], run_dir.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("skipped (completed before)") == 4
    assert not re.search(r"^\[\d/\d\] \S+ +completed", proc.stdout, re.M)  # no stage ran again
    assert len(json.loads((run_dir / "run.json").read_text())["resumed_at"]) == 1

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
    assert re.search(r"^\[1/6\] 01_prep +failed", proc.stdout, re.M)
    run_dir = tmp_path / "runs" / "bad"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["stages"]["01_prep"]["status"] == "failed"
    assert list(record["stages"]) == ["01_prep"]  # later stages did not run
    assert not (run_dir / "prep").exists()  # nothing partial
    assert (run_dir / "notebooks" / "01_prep.html").is_file()  # the failed notebook stays readable
