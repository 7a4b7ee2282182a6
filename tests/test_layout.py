"""The run layout: every name built by `layout` parses back to what built it, the band
vocabulary maps to the original's on-disk tags, and the files real stages write parse."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from inclinet_utils import BANDS, catalog, dataset, images
from inclinet_utils import layout as L


def test_band_vocabulary_maps_to_the_original_tags():
    assert [L.band_tag(b) for b in BANDS] == ["g", "r", "i", "RGB"]
    assert [L.filter_code(b) for b in BANDS] == ["g", "r", "i", "c"]
    assert L.FILTER_CODES == ("g", "r", "i", "c")
    for b in BANDS:
        assert L.band_from_tag(L.band_tag(b)) == b
        assert L.band_from_tag(L.filter_code(b)) == b
    assert [L.is_colour(b) for b in BANDS] == [False, False, False, True]
    assert L.check_bands(["gri", "g", "gri"]) == ["gri", "g"]
    assert L.check_bands("r") == ["r"]


@pytest.mark.parametrize("bad", ["RGB", "c", "z", "G", "", "gri "])
def test_on_disk_tags_and_unknown_names_are_not_bands(bad):
    with pytest.raises(ValueError, match=repr(bad)):
        L.check_band(bad)
    with pytest.raises(ValueError, match=repr(bad)):
        L.sample_name(bad, 64, "train", 0)


def test_bad_tags_sizes_and_indices_are_refused():
    with pytest.raises(ValueError, match="'x'"):
        L.band_from_tag("x")
    with pytest.raises(ValueError):
        L.check_bands([])
    for size in (0, -4, 12.5, True):
        with pytest.raises(ValueError, match="size"):
            L.size_tag(size)
    with pytest.raises(ValueError, match="kind"):
        L.sample_name("g", 64, "val", 0)
    with pytest.raises(ValueError, match="batch number"):
        L.batch_name(64, 0)
    with pytest.raises(ValueError, match="Uset"):
        L.uset_name(-1)
    with pytest.raises(ValueError, match="model name"):
        L.model_stem("model_4", 0)


@pytest.mark.parametrize("band", BANDS)
@pytest.mark.parametrize("size", [16, 128, 1000])
def test_prep_compressed_and_sample_names_round_trip(band, size):
    for label in ("F", "0", "45", "90"):
        name = L.prepared_name(44182, size, label, band)
        assert L.parse_prepared_name(name) == L.PreparedName(44182, size, size, label, band)
    assert L.parse_prepared_folder_name(L.prepared_folder_name(size, band)) == (size, band)
    assert L.prepared_dir("prep", size, band).parent == Path("prep")
    assert L.parse_compressed_name(L.compressed_name(size, band)) == (size, band)
    assert L.compressed_path("c", size, band) == Path("c") / L.compressed_name(size, band)
    for kind in L.SAMPLE_KINDS:
        for index in (0, 7, 123):
            path = L.sample_path("samples", band, size, kind, index)
            assert L.parse_sample_name(path.name) == L.SampleName(band, size, kind, index)


def test_names_keep_the_original_format():
    assert L.prepared_name(118, 128, "F", "gri") == "pgc118_128x128_F.RGB.jpg"
    assert L.prepared_folder_name(64, "gri") == "64x64_RGB"
    assert L.compressed_name(64, "r") == "64x64_r.npz"
    assert L.sample_name("gri", 64, "test", 0) == "RGB_64x64_test_000.npz"
    assert L.batch_relpath(2, 128, 5) == "Uset_002_npz/128x128_train_aug_05.npz"
    assert L.validation_name(128) == "128x128_validation_aug.npz"
    assert L.model_file_name("model4", 3) == "Uset_003_model4.keras"
    assert L.model_row("model6", 1) == "model6/Uset_001"


@pytest.mark.parametrize("name", [
    "pgc1_64x64_61.gri.jpg",      # the user's band name is not an on-disk tag
    "pgc1_64x64_61.RGB.png", "pgc1_64x64_ab.g.jpg", "pgc_64x64_61.g.jpg", "x.jpg",
])
def test_foreign_prepared_names_do_not_parse(name):
    assert L.parse_prepared_name(name) is None


def test_foreign_names_do_not_parse():
    assert L.parse_prepared_name("pgc5_64x63_50.r.jpg") == L.PreparedName(5, 64, 63, "50", "r")
    assert L.parse_compressed_name("64x32_g.npz") is None
    assert L.parse_compressed_name("64x64_gri.npz") is None
    assert L.parse_sample_name("RGB_64x64_train_1.npz") is None
    assert L.parse_sample_name("gri_64x64_train_001.npz") is None
    assert L.parse_batch_name("64x32_train_aug_01.npz") is None
    assert L.parse_uset_dir_name("Uset_01_npz") is None
    assert L.parse_model_file_name("Uset_000_model4.h5") is None
    assert L.parse_model_row("all/median") is None
    with pytest.raises(ValueError, match="notes.txt"):
        L.batch_number("notes.txt")


@pytest.mark.parametrize("uset", [0, 3, 42])
def test_augmented_and_model_names_round_trip(uset):
    assert L.parse_uset_name(L.uset_name(uset)) == uset
    assert L.parse_uset_dir_name(L.uset_dir_name(uset)) == uset
    for size, number in ((64, 1), (128, 50), (256, 123)):
        path = L.batch_path("aug", uset, size, number)
        assert path == Path("aug") / L.batch_relpath(uset, size, number)
        assert L.parse_uset_dir_name(path.parent.name) == uset
        assert L.parse_batch_name(path.name) == (size, number) and L.batch_number(path) == number
    for model in ("model4", "model5", "model6"):
        assert L.parse_model_file_name(L.model_file_name(model, uset)) == (model, uset)
        assert L.parse_model_row(L.model_row(model, uset)) == (model, uset)
        assert L.parse_model_row(L.model_row(model, uset) + "+bc") == (model, uset)
        paths = L.training_paths("models", model, uset)
        assert paths["final"] == Path("models") / L.model_file_name(model, uset)
        assert all(p.parent == paths["ckpt_dir"] for k, p in paths.items() if k not in ("final", "ckpt_dir"))
        assert len(set(paths.values())) == len(paths)


def test_input_image_names_round_trip():
    for band in BANDS:
        names = L.input_image_names(676, band)
        assert all(L.parse_input_image_name(n) == L.InputImageName(676, band, L.IM_ROOT) for n in names)
        assert L.simulated_image_name(676, band) in names
    assert L.input_image_names(676, "gri") == ["pgc676_d25x2_rot_gri.sdss.jpg", "pgc676_d25x2_rot_gri.jpg"]
    assert L.parse_input_image_name("pgc676_d25x2_rot_gri.png") is None


def test_real_sdss_file_names_parse(real_sdss):
    files = sorted((real_sdss / "galaxies").iterdir())
    parsed = [L.parse_input_image_name(p.name) for p in files if p.suffix in (".png", ".jpg")]
    assert parsed and all(parsed)
    assert {p.band for p in parsed} == set(BANDS)
    for p in parsed:  # every name the reader looks for resolves back to a file here
        assert any((real_sdss / "galaxies" / n).is_file() for n in L.input_image_names(p.pgc, p.band))


def test_run_paths_and_run_names(tmp_path):
    paths = L.run_paths(tmp_path)
    assert paths["run"] == tmp_path and paths["metrics"] == tmp_path / "metrics.json"
    assert all(p == tmp_path or tmp_path in p.parents for p in paths.values())
    assert len(set(paths.values())) == len(paths)
    assert L.notebook_path(tmp_path, "01_prep", ".html") == tmp_path / "notebooks" / "01_prep.html"
    assert len(set(L.EVALUATION_FILES.values())) == len(L.EVALUATION_FILES)
    assert L.figure_name("outlier_gallery") == "outlier_gallery.png"
    assert L.default_run_name(128, ["g", "gri"], dt.datetime(2026, 1, 2, 3, 4, 5)) == "20260102-030405_128_g-gri"
    assert L.check_run_name("20260102-030405_128_g-gri") == "20260102-030405_128_g-gri"
    for bad in ("..", ".", "../x", "a/b", "a\\b", "", "/tmp/x", " x"):
        with pytest.raises(ValueError, match="run name"):
            L.check_run_name(bad)


def test_finders_list_only_matching_files(tmp_path):
    aug = tmp_path / "augmented"
    for uset, size, numbers in ((0, 32, (2, 1, 10)), (1, 32, (1,)), (2, 64, (1,))):
        for n in numbers:
            p = L.batch_path(aug, uset, size, n)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"")
    (aug / "Uset_000_npz" / "notes.npz").write_bytes(b"")
    (aug / "Uset_009_npz").mkdir()
    assert L.find_usets(aug, 32) == [0, 1] and L.find_usets(aug, 64) == [2]
    assert [L.batch_number(p) for p in L.batch_files(aug, 0, 32)] == [1, 2, 10]
    with pytest.raises(FileNotFoundError, match="Uset_002_npz"):
        L.batch_files(aug, 2, 32)
    with pytest.raises(FileNotFoundError, match="32x32_validation_aug.npz"):
        L.validation_file(aug, 32)
    assert L.find_usets(tmp_path / "absent", 32) == []
    models = tmp_path / "models"
    for name in ("Uset_001_model6.keras", "Uset_000_model6.keras", "Uset_000_model4.keras", "x.keras"):
        (models / name).parent.mkdir(exist_ok=True)
        (models / name).write_bytes(b"")
    (models / "Uset_000_model4_ckpt").mkdir()
    assert [(m, u) for m, u, _ in L.find_model_files(models)] == [("model4", 0), ("model6", 0), ("model6", 1)]


def test_files_written_by_stages_01_to_03_parse_back(synthetic_input, tmp_path):
    """The names the real stages write all parse, and rebuild to themselves."""
    size, bands = 16, ["g", "i", "gri"]
    table = catalog.read_catalog(synthetic_input.catalog_path)
    run = L.run_paths(tmp_path / "run")
    images.prep_stage(table, synthetic_input.images_dir, run["prep"], size=size, bands=bands,
                      n_workers=1, progress=False)
    dataset.compress_stage(run["prep"], run["compressed"], size, bands, progress=False)
    dataset.split_stage(run["compressed"], run["samples"], size, bands, test_fraction=0.2, m_iter=2)
    folders = sorted(p for p in run["prep"].iterdir() if p.is_dir())
    assert {L.parse_prepared_folder_name(p.name) for p in folders} == {(size, b) for b in bands}
    n_prepared = 0
    for folder in folders:
        for f in folder.iterdir():
            p = L.parse_prepared_name(f.name)
            assert (p.width, p.height, p.band) == (size, size, L.parse_prepared_folder_name(folder.name)[1])
            assert L.prepared_dir(run["prep"], size, p.band) / L.prepared_name(p.pgc, size, p.label, p.band) == f
            n_prepared += 1
    assert n_prepared > 0
    assert {L.parse_compressed_name(f.name) for f in run["compressed"].iterdir()} == {(size, b) for b in bands}
    samples = [L.parse_sample_name(f.name) for f in run["samples"].iterdir() if f.suffix == ".npz"]
    assert {(s.band, s.kind, s.index) for s in samples} == {
        (b, k, i) for b in bands for k in L.SAMPLE_KINDS for i in range(3)}
    assert (run["samples"] / L.SPLIT_RECORD).is_file() and (run["prep"] / L.MISSING_IMAGES).is_file()
    for band in bands:
        assert L.find_samples(run["samples"], band, size, "train") == [0, 1, 2]
        with np.load(L.sample_path(run["samples"], band, size, "test", 0)) as d:
            assert len(d["pgcIDs"]) > 0
