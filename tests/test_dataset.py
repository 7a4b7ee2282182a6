"""Stage 02 (compress) and stage 03 (split): npz layout, named errors that write nothing,
and the split rules (disjoint, same test galaxies in every band, bagging subsamples)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inclinet_utils import catalog, dataset, images
from inclinet_utils import io as iio
from inclinet_utils import layout
from inclinet_utils.dataset import DatasetError

ALL_BANDS = ["g", "r", "i", "gri"]
ALL_TAGS = ["g", "r", "i", "RGB"]  # their on-disk names, which must not change


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def prepared(synthetic_input, tmp_path):
    """Stage 01 output (size 16, all four bands) of the synthetic input."""
    cat = catalog.read_catalog(synthetic_input.catalog_path)
    images.prep_stage(cat, synthetic_input.images_dir, tmp_path / "prep", size=16, bands=ALL_BANDS,
                      n_workers=1, progress=False)
    return tmp_path / "prep", synthetic_input


# --- stage 02 ----------------------------------------------------------------------

def test_compress_npz_keys_shapes_dtypes(prepared, tmp_path):
    prep, syn = prepared
    out = tmp_path / "compressed"
    counts = dataset.compress_stage(prep, out, 16, ALL_BANDS, progress=False)
    n = len(syn.labels)
    assert counts == {band: n for band in ALL_BANDS}
    assert sorted(p.name for p in out.iterdir()) == sorted(f"16x16_{t}.npz" for t in ALL_TAGS)
    pgcs = sorted(syn.labels)
    codes = [1 if syn.labels[p] == "F" else int(syn.labels[p]) for p in pgcs]
    for tag in ALL_TAGS:
        with np.load(out / f"16x16_{tag}.npz") as d:
            assert sorted(d.files) == ["images", "labels"]
            imgs, labels = d["images"], d["labels"]
        assert imgs.shape == (n, 16, 16, 3) and imgs.dtype == np.uint8
        assert labels.shape == (2, n) and np.issubdtype(labels.dtype, np.integer)
        assert labels[0].tolist() == pgcs
        assert labels[1].tolist() == codes
        assert labels[1][pgcs.index(110)] == 1 and labels[1][pgcs.index(112)] == 0   # F -> 1, 0 -> 0
        if tag != "RGB":
            assert (imgs[..., 0] == imgs[..., 1]).all() and (imgs[..., 0] == imgs[..., 2]).all()
            assert imgs[:, 0, 0].min() > 200                                  # white sky kept
        else:
            assert not (imgs[..., 0] == imgs[..., 2]).all()
        # Each row holds the JPEG stage 01 wrote for that galaxy.
        k = pgcs.index(104)
        with Image.open(prep / f"16x16_{tag}" / f"pgc104_16x16_66.{tag}.jpg") as im:
            np.testing.assert_array_equal(imgs[k], images.to_three_channels(np.asarray(im)))
    assert dataset.load_compressed(out / "16x16_g.npz")["labels"].shape == (2, n)
    # the 02 notebook's table counts the same labels
    rows = {r["file"]: r for r in dataset.compressed_summary(out, 16, ALL_BANDS)}
    assert set(rows) == {f"16x16_{t}.npz" for t in ALL_TAGS}
    g = rows["16x16_g.npz"]
    assert g["face-on (1)"] == codes.count(1) and g["rejected (0)"] == codes.count(0)
    assert g["usable (>=45)"] == sum(c >= 45 for c in codes) and g["images"] == str((n, 16, 16, 3))


def test_compress_real_galaxies(real_sdss, tmp_path):
    cat = catalog.read_catalog(real_sdss / "catalogs" / "catalog.csv")
    images.prep_stage(cat, real_sdss / "galaxies", tmp_path / "prep", size=16, bands=["g", "gri"],
                      n_workers=1, progress=False)
    dataset.compress_stage(tmp_path / "prep", tmp_path / "compressed", 16, ["g", "gri"], progress=False)
    d = dataset.load_compressed(tmp_path / "compressed" / "16x16_RGB.npz")
    assert d["images"].shape == (8, 16, 16, 3)
    assert dict(zip(d["labels"][0].tolist(), d["labels"][1].tolist())) == {
        44182: 61, 676: 71, 2148: 80, 6864: 81, 354: 56, 118: 1, 56987: 1, 129: 0}


def _assert_compress_fails_naming(prep, tmp_path, bad: Path, match=None):
    out = tmp_path / "compressed"
    with pytest.raises(DatasetError, match=match) as err:
        dataset.compress_stage(prep, out, 16, ALL_BANDS, progress=False)
    assert str(bad) in str(err.value)
    assert not out.exists()
    assert not any(p.name.startswith(".compressed") for p in tmp_path.iterdir())


def test_wrong_size_jpeg_stops_compress(prepared, tmp_path):
    prep, _ = prepared
    bad = prep / "16x16_i" / "pgc105_16x16_72.i.jpg"
    bad.unlink()
    Image.fromarray(np.full((20, 16), 255, np.uint8)).save(bad, "JPEG")
    _assert_compress_fails_naming(prep, tmp_path, bad, match="16x20.*expected 16x16")


@pytest.mark.parametrize("name", ["galaxy.jpg", "pgc105_16x16_abc.r.jpg", "pgc105_16x16.r.jpg",
                                  "105_16x16_72.r.jpg"])
def test_badly_named_file_stops_compress(prepared, tmp_path, name):
    prep, _ = prepared
    bad = prep / "16x16_r" / name
    shutil.copy(prep / "16x16_r" / "pgc105_16x16_72.r.jpg", bad)
    _assert_compress_fails_naming(prep, tmp_path, bad, match="not named")


@pytest.mark.parametrize("name, match", [
    ("pgc105_32x32_72.r.jpg", "16x16"),          # another size in the name
    ("pgc105_16x16_72.g.jpg", "band r"),         # another band's file in the r folder
    ("pgc105_16x16_F.r.jpg", "pgc105"),          # the same galaxy twice
])
def test_misfiled_prepared_file_stops_compress(prepared, tmp_path, name, match):
    prep, _ = prepared
    bad = prep / "16x16_r" / name
    shutil.copy(prep / "16x16_r" / "pgc101_16x16_50.r.jpg", bad)
    _assert_compress_fails_naming(prep, tmp_path, bad, match=match)


def test_unreadable_jpeg_stops_compress(prepared, tmp_path):
    prep, _ = prepared
    bad = prep / "16x16_RGB" / "pgc101_16x16_50.RGB.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 broken")
    _assert_compress_fails_naming(prep, tmp_path, bad)


def test_compress_missing_folder_and_existing_output(prepared, tmp_path):
    prep, _ = prepared
    with pytest.raises(DatasetError, match="16x16_RGB"):
        dataset.compress_stage(prep.parent / "nowhere", tmp_path / "c1", 16, ["gri"], progress=False)
    with pytest.raises(DatasetError, match="32x32_g"):
        dataset.compress_stage(prep, tmp_path / "c1", 32, ["g"], progress=False)
    assert not (tmp_path / "c1").exists()
    out = tmp_path / "compressed"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        dataset.compress_stage(prep, out, 16, ALL_BANDS, progress=False)
    assert listing(out) == {"mine.txt": b"keep"}


# --- stage 03 ----------------------------------------------------------------------

SIZE = 8
N_GAL = 40


def galaxy_table(n=N_GAL):
    """pgc IDs and label codes: most usable (45-90), some face-on (1) and rejected (0)."""
    rng = np.random.default_rng(0)
    pgc = np.arange(1000, 1000 + 37 * n, 37)
    codes = rng.integers(45, 91, n)
    codes[::8] = 1
    codes[3::8] = 0
    codes[5::8] = rng.integers(2, 45, len(codes[5::8]))   # low inclinations: not usable either
    return pgc, codes


def pixel_of(pgc, band):
    return (int(pgc) * 7 + ALL_BANDS.index(band)) % 256


def write_compressed(folder: Path, bands=ALL_BANDS, drop=None, size=SIZE):
    """Per-band npz in stage 02's layout; each image is filled with a value tied to its pgc."""
    pgc, codes = galaxy_table()
    folder.mkdir(parents=True)
    for band in bands:
        keep = ~np.isin(pgc, list((drop or {}).get(band, ())))
        ids = pgc[keep]
        imgs = np.empty((len(ids), size, size, 3), np.uint8)
        for k, p in enumerate(ids):
            imgs[k] = pixel_of(p, band)
        iio.save_npz(layout.compressed_path(folder, size, band), images=imgs,
                     labels=np.stack([ids, codes[keep]]).astype(np.int64))
    return dict(zip(pgc.tolist(), codes.tolist()))


def ids_of(samples, band, kind, k):
    return dataset.load_sample(samples, band, SIZE, kind, k)["pgcIDs"].tolist()


def test_split_rules(tmp_path):
    code_of = write_compressed(tmp_path / "compressed")
    usable = {p for p, c in code_of.items() if c >= 45}
    assert len(usable) >= 20 and len(usable) < len(code_of)
    m_iter = 3
    record = dataset.split_stage(tmp_path / "compressed", tmp_path / "samples", SIZE, ALL_BANDS,
                                 test_fraction=0.2, m_iter=m_iter, seed=5)
    samples = tmp_path / "samples"
    expected_files = {"split.json"} | {f"{t}_{SIZE}x{SIZE}_{kind}_{k:03d}.npz"
                                       for t in ALL_TAGS for kind in ("train", "test") for k in range(m_iter + 1)}
    assert {p.name for p in samples.iterdir()} == expected_files

    test_ids = set(ids_of(samples, "r", "test", 0))
    train_ids = set(ids_of(samples, "r", "train", 0))
    assert len(test_ids) == round(0.2 * len(usable))
    for band in ALL_BANDS:
        assert set(ids_of(samples, band, "test", 0)) == test_ids           # same test galaxies
        assert set(ids_of(samples, band, "train", 0)) == train_ids
        for k in range(m_iter + 1):
            for kind in ("train", "test"):
                d = dataset.load_sample(samples, band, SIZE, kind, k)
                n = len(d["pgcIDs"])
                assert d["images"].shape == (n, SIZE, SIZE, 3) and d["images"].dtype == np.uint8
                assert d["labels"].shape == (n,) and d["labels"].dtype == np.int64
                assert d["pgcIDs"].dtype == np.int64
                assert len(set(d["pgcIDs"].tolist())) == n
                assert d["labels"].tolist() == [code_of[p] for p in d["pgcIDs"].tolist()]
                assert (d["labels"] >= 45).all()
                assert all((img == pixel_of(p, band)).all() for img, p in zip(d["images"], d["pgcIDs"]))
            train_k = set(ids_of(samples, band, "train", k))
            assert not train_k & test_ids, f"{band} train_{k:03d} holds test galaxies"
    assert not train_ids & test_ids
    assert train_ids | test_ids == usable
    for k in range(1, m_iter + 1):
        sub = set(ids_of(samples, "g", "train", k))
        assert len(sub) == len(train_ids) * 2 // 3
        assert sub <= train_ids
        assert set(ids_of(samples, "g", "test", k)) == train_ids - sub
    subs = [frozenset(ids_of(samples, "g", "train", k)) for k in range(1, m_iter + 1)]
    assert len(set(subs)) == m_iter                                          # distinct draws

    saved = json.loads((samples / "split.json").read_text())
    assert {k: saved[k] for k in ("seed", "test_fraction", "m_iter", "size", "tags")} == {
        "seed": 5, "test_fraction": 0.2, "m_iter": m_iter, "size": SIZE, "tags": ALL_TAGS}
    assert set(saved["test_pgc"]) == test_ids
    assert saved["counts"]["RGB_train_000"] == len(train_ids)
    assert [set(s) for s in saved["subsample_pgc"]] == [set(s) for s in subs]
    assert record["split_band"] == "r" and saved["split_band"] == "r"


def test_split_is_deterministic_from_seed(tmp_path):
    write_compressed(tmp_path / "compressed")

    def run(name, seed):
        dataset.split_stage(tmp_path / "compressed", tmp_path / name, SIZE, ["g", "gri"],
                            test_fraction=0.25, m_iter=2, seed=seed)
        return [ids_of(tmp_path / name, band, kind, k) for band in ("g", "gri")
                for kind in ("train", "test") for k in range(3)]

    a, b, c = run("a", 11), run("b", 11), run("c", 12)
    assert a == b
    assert a != c
    assert ids_of(tmp_path / "a", "g", "test", 0) != ids_of(tmp_path / "c", "g", "test", 0)


def test_split_with_galaxies_missing_in_some_bands(tmp_path):
    pgc, codes = galaxy_table()
    usable = pgc[codes >= 45]
    # r (the band that draws the split) lacks two usable galaxies; g lacks two others.
    code_of = write_compressed(tmp_path / "compressed", drop={"r": usable[:2], "g": usable[2:4]})
    dataset.split_stage(tmp_path / "compressed", tmp_path / "samples", SIZE, ALL_BANDS,
                        test_fraction=0.3, m_iter=2, seed=1)
    samples = tmp_path / "samples"
    test_r = set(ids_of(samples, "r", "test", 0))
    assert not test_r & set(usable[:2].tolist())
    for band in ALL_BANDS:
        test = set(ids_of(samples, band, "test", 0))
        assert test <= test_r                                       # drawn once, applied by pgc
        absent = {"r": set(usable[:2].tolist()), "g": set(usable[2:4].tolist())}.get(band, set())
        present = set(usable.tolist()) - absent
        assert test == test_r & present
        assert set(ids_of(samples, band, "train", 0)) == present - test
        for k in range(3):
            assert not set(ids_of(samples, band, "train", k)) & test_r
    assert all(code_of[p] >= 45 for p in test_r)


def test_split_refuses_existing_output(tmp_path):
    write_compressed(tmp_path / "compressed")
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "old.npz").write_bytes(b"previous product")
    before = listing(samples)
    with pytest.raises(FileExistsError, match="samples"):
        dataset.split_stage(tmp_path / "compressed", samples, SIZE, ALL_BANDS, seed=1)
    assert listing(samples) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compressed", "samples"]


def test_split_bad_inputs_write_nothing(tmp_path):
    write_compressed(tmp_path / "compressed", bands=["g"])
    samples = tmp_path / "samples"
    with pytest.raises(DatasetError, match=f"{SIZE}x{SIZE}_r.npz"):
        dataset.split_stage(tmp_path / "compressed", samples, SIZE, ["g", "r"])
    write_compressed(tmp_path / "wrong", bands=["g"], size=4)
    (tmp_path / "wrong" / "4x4_g.npz").rename(tmp_path / "wrong" / f"{SIZE}x{SIZE}_g.npz")
    with pytest.raises(DatasetError, match=r"\(4, 4, 3\)"):
        dataset.split_stage(tmp_path / "wrong", samples, SIZE, ["g"])
    assert not samples.exists()


def test_pipeline_02_03_on_real_galaxies(real_sdss, tmp_path):
    cat = catalog.read_catalog(real_sdss / "catalogs" / "catalog.csv")
    images.prep_stage(cat, real_sdss / "galaxies", tmp_path / "prep", size=16, bands=["r", "gri"],
                      n_workers=1, progress=False)
    dataset.compress_stage(tmp_path / "prep", tmp_path / "compressed", 16, ["r", "gri"], progress=False)
    dataset.split_stage(tmp_path / "compressed", tmp_path / "samples", 16, ["r", "gri"],
                        test_fraction=0.2, m_iter=1, seed=3)
    usable = {44182, 676, 2148, 6864, 354}
    for band in ("r", "gri"):
        test = set(dataset.load_sample(tmp_path / "samples", band, 16, "test", 0)["pgcIDs"].tolist())
        train = set(dataset.load_sample(tmp_path / "samples", band, 16, "train", 0)["pgcIDs"].tolist())
        assert len(test) == 1 and test | train == usable and not test & train


def test_check_split_passes_a_written_split_and_catches_a_leak(tmp_path):
    write_compressed(tmp_path / "compressed")
    record = dataset.split_stage(tmp_path / "compressed", tmp_path / "samples", SIZE, ALL_BANDS,
                                 test_fraction=0.2, m_iter=2, seed=5)
    samples = tmp_path / "samples"
    per_band = dataset.check_split(samples, SIZE, record)
    assert set(per_band) == set(ALL_BANDS) and all(n == len(record["test_pgc"]) for n in per_band.values())

    leaky = dataset.load_sample(samples, "gri", SIZE, "train", 1)
    leaky["pgcIDs"][0] = record["test_pgc"][0]
    iio.save_npz(layout.sample_path(samples, "gri", SIZE, "train", 1), overwrite=True, **leaky)
    with pytest.raises(dataset.DatasetError, match=f"RGB_{SIZE}x{SIZE}_train_001.npz"):
        dataset.check_split(samples, SIZE, record)


@pytest.mark.parametrize("kw, name", [
    ({"test_fraction": 1.5}, "test_fraction 1.5"), ({"test_fraction": 0}, "test_fraction 0"),
    ({"test_fraction": 1}, "test_fraction 1"), ({"test_fraction": float("nan")}, "test_fraction nan"),
    ({"test_fraction": "0.1"}, "test_fraction '0.1'"), ({"test_fraction": True}, "test_fraction True"),
    ({"m_iter": 0}, "m_iter 0"), ({"m_iter": -1}, "m_iter -1"), ({"m_iter": 1.5}, "m_iter 1.5"),
    ({"m_iter": True}, "m_iter True"), ({"bands": ["RGB"]}, "'RGB'"), ({"size": 0}, "size 0"),
    ({"bagging_fraction": 0}, "bagging_fraction 0"), ({"bagging_fraction": 1.5}, "bagging_fraction 1.5"),
])
def test_split_parameters_checked_before_reading(tmp_path, kw, name):
    """A bad parameter is named at once, before the (missing) compressed folder is looked at."""
    args = {"size": SIZE, "bands": ["g"], "test_fraction": 0.1, "m_iter": 1} | kw
    with pytest.raises(ValueError, match=re.escape(name)):
        dataset.split_stage(tmp_path / "nowhere", tmp_path / "samples", **args)
    assert list(tmp_path.iterdir()) == []


def test_check_split_params_accepts_the_valid_range():
    for test_fraction, m_iter in [(0.1, 1), (0.999, 3), (np.float32(0.5), np.int64(2))]:
        dataset.check_split_params(test_fraction, m_iter)
    dataset.check_split_params(0.1, 1, 1.0)


def test_subsample_size_keeps_the_original_two_thirds():
    assert [dataset.subsample_size(n, 2 / 3) for n in range(1, 3000)] == [max(1, n * 2 // 3) for n in range(1, 3000)]
    assert dataset.subsample_size(1620, 1.0) == 1620 and dataset.subsample_size(10, 0.5) == 5


def test_whole_set_subsamples_are_a_seed_ensemble(tmp_path):
    """bagging_fraction 1: every Uset holds the whole training set, no empty complement files,
    and the classifiers' split follows."""
    write_compressed(tmp_path / "compressed")
    samples, binary = tmp_path / "samples", tmp_path / "samples_binary"
    record = dataset.split_stage(tmp_path / "compressed", samples, SIZE, ["g", "gri"], test_fraction=0.2,
                                 m_iter=2, seed=5, bagging_fraction=1.0)
    train_ids = set(ids_of(samples, "g", "train", 0))
    assert [set(ids_of(samples, "g", "train", k)) for k in (1, 2)] == [train_ids, train_ids]
    assert not layout.sample_path(samples, "g", SIZE, "test", 1).exists()
    saved = json.loads((samples / "split.json").read_text())
    assert record["bagging_fraction"] == saved["bagging_fraction"] == 1.0
    dataset.check_split(samples, SIZE, record)
    brec = dataset.split_binary_stage(tmp_path / "compressed", samples, binary, SIZE)
    dataset.check_binary_split(binary, SIZE, brec)
    rejected_train = {p for p in ids_of_binary(binary, "train", 0)} - train_ids
    assert {p for p in ids_of_binary(binary, "train", 1)} - train_ids == rejected_train


def ids_of_binary(binary, kind, k):
    return dataset.load_sample(binary, "g", SIZE, kind, k, binary=True)["pgcIDs"].tolist()


@pytest.fixture
def one_sample(tmp_path):
    """A written split of band g; returns (samples folder, path of g train_000)."""
    write_compressed(tmp_path / "compressed", bands=["g"])
    dataset.split_stage(tmp_path / "compressed", tmp_path / "samples", SIZE, ["g"], test_fraction=0.2, m_iter=1)
    return tmp_path / "samples", layout.sample_path(tmp_path / "samples", "g", SIZE, "train", 0)


def test_load_sample_without_images_reads_the_same_arrays(one_sample):
    samples, _ = one_sample
    full = dataset.load_sample(samples, "g", SIZE, "train", 0)
    light = dataset.load_sample(samples, "g", SIZE, "train", 0, images=False)
    assert light["images"] is None and full["images"].shape == (len(full["labels"]), SIZE, SIZE, 3)
    for key in ("labels", "pgcIDs"):
        np.testing.assert_array_equal(light[key], full[key])
        assert light[key].dtype == np.int64


def _rewrite(path, **changes):
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    arrays.update(changes)
    path.unlink()
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if v is not None})


@pytest.mark.parametrize("images", [True, False], ids=["images", "header only"])
@pytest.mark.parametrize("problem, match", [
    ("missing_key", r"missing keys \['pgcIDs'\]"),
    ("wrong_size", r"images \(\d+, 4, 4, 3\) uint8, expected \(N,8,8,3\)"),
    ("float_images", r"float32, expected"),
    ("short_labels", r"labels \(3,\)"),
    ("float_labels", "must be integers"),
    ("low_label", r"labels outside 45-90 deg \(e.g. 30\)"),
    ("high_label", r"\(e.g. 91\)"),
    ("not_npz", "not a readable npz"),
    ("absent", "does not exist; run 03_split first"),
])
def test_load_sample_names_the_bad_file(one_sample, images, problem, match):
    samples, path = one_sample
    with np.load(path) as d:
        n, labels = len(d["labels"]), d["labels"].copy()
    if problem == "missing_key":
        _rewrite(path, pgcIDs=None)
    elif problem == "wrong_size":
        _rewrite(path, images=np.zeros((n, 4, 4, 3), np.uint8))
    elif problem == "float_images":
        _rewrite(path, images=np.zeros((n, SIZE, SIZE, 3), np.float32))
    elif problem == "short_labels":
        _rewrite(path, labels=labels[:3])
    elif problem == "float_labels":
        _rewrite(path, labels=labels.astype(float))
    elif problem in ("low_label", "high_label"):
        labels[1] = 30 if problem == "low_label" else 91
        _rewrite(path, labels=labels)
    elif problem == "not_npz":
        path.write_bytes(b"not a zip archive")
    else:
        path.unlink()
    with pytest.raises(DatasetError, match=match) as err:
        dataset.load_sample(samples, "g", SIZE, "train", 0, images=images)
    assert str(path) in str(err.value)
