"""Stage 04 augment: sampling rules, label safety (axis ratio), files, determinism, bad input."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works under any pytest import mode
from augment_samples import axis_ratio_moments, render_ellipse, write_samples
from inclinet_utils import augment as A
from inclinet_utils import layout
from inclinet_utils import transforms as T
from inclinet_utils.dataset import DatasetError, load_sample

SIZE = 32
BATCH = 24
N_BATCHES = 2
KEYS = {"images": np.uint8, "labels": np.int64, "pgcIDs": np.int64, "filter": np.dtype("<U1"),
        "inverted": np.bool_}


def _run(tmp_path, name="run", bands=("g", "r", "i", "gri"), seed=7, batch_size=BATCH,
         sample_kw=None, **kw):
    samples = tmp_path / name / "samples"
    truth = write_samples(samples, size=SIZE, bands=bands, seed=3, **(sample_kw or {}))
    out = tmp_path / name / "augmented"
    summary = A.augment_stage(samples, out, SIZE, bands=list(bands), n_batches=N_BATCHES,
                              batch_size=batch_size, seed=seed, progress=False, **kw)
    return samples, out, summary, truth


def _batches(out):
    return {p: A.load_batch(p) for p in sorted(out.glob("Uset_*_npz/*.npz"))}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("aug"))


# ---- bins -----------------------------------------------------------------

def test_bin_edges_follow_the_original_rule():
    labels = np.array([44, 45, 46, 50, 51, 55, 56, 85, 86, 90, 91])
    assert A.inclination_bin(labels).tolist() == [-1, 0, 0, 0, 1, 1, 2, 7, 8, 8, -1]


# ---- sampling rules -------------------------------------------------------

def test_files_keys_dtypes_and_layout(full_run):
    samples, out, summary, _ = full_run
    expected = {f"Uset_{j:03d}_npz/{SIZE}x{SIZE}_train_aug_{b:02d}.npz" for j in (0, 1)
                for b in range(1, N_BATCHES + 1)}
    assert {str(p.relative_to(out)) for p in out.glob("Uset_*_npz/*.npz")} == expected
    for path in [*out.glob("Uset_*_npz/*.npz"), out / f"{SIZE}x{SIZE}_validation_aug.npz"]:
        d = A.load_batch(path)
        assert set(d) == set(KEYS)
        for k, dt in KEYS.items():
            assert d[k].dtype == dt, (path, k)
        n = len(d["labels"])
        assert d["images"].shape == (n, SIZE, SIZE, 3)
        assert all(d[k].shape == (n,) for k in KEYS if k != "images")
    record = json.loads((out / "augment.json").read_text())
    assert record["usets"] == ["Uset_000", "Uset_001"] and record["m_iter"] == 1
    assert record["transform_params"]["zoom"] == list(T.DEFAULT_PARAMS.zoom)
    assert not list(out.parent.glob(".*partial*"))


def test_bins_equal_and_colour_equals_grayscale(full_run):
    _, out, summary, _ = full_run
    for path, d in _batches(out).items():
        bins = A.inclination_bin(d["labels"])
        gray = d["filter"] != "c"
        used = [k for k in range(A.N_BINS) if A.BIN_NAMES[k] not in
                summary["empty_bins"][path.parent.name[:-4]]["dropped"]]
        assert len(used) >= 7
        for sel in (~gray, gray):
            counts = np.bincount(bins[sel], minlength=A.N_BINS)
            assert counts[used].tolist() == [BATCH] * len(used), path
            assert counts.sum() == BATCH * len(used)
        assert gray.sum() == (~gray).sum()
        # inverted: exactly half of the grayscale images, never a colour one
        assert d["inverted"][gray].sum() == gray.sum() // 2
        assert not d["inverted"][~gray].any()
        # shuffled: colour and grayscale interleaved, bins not in blocks
        assert 0 < gray[: len(gray) // 2].sum() < len(gray) // 2


def test_grayscale_bands_about_a_third_each(full_run):
    _, out, _, _ = full_run
    filters = np.concatenate([d["filter"] for d in _batches(out).values()])
    gray = filters[filters != "c"]
    for band in "gri":
        assert abs((gray == band).mean() - 1 / 3) < 0.05, band


def test_labels_and_sources_unchanged(full_run):
    samples, out, _, truth = full_run
    for path, d in _batches(out).items():
        j = int(path.parent.name[5:8])
        for band, code in (("g", "g"), ("r", "r"), ("i", "i"), ("gri", "c")):
            with np.load(layout.sample_path(samples, band, SIZE, "train", j)) as s:
                src = dict(zip(s["pgcIDs"].tolist(), s["labels"].tolist()))
            sel = d["filter"] == code
            # every image comes from this Uset's own training set, with its label
            assert all(src[p] == lab for p, lab in zip(d["pgcIDs"][sel].tolist(), d["labels"][sel].tolist()))
        assert all(truth[p] == lab for p, lab in zip(d["pgcIDs"].tolist(), d["labels"].tolist()))


def test_images_match_their_flags(full_run):
    """Colour sky is dark, grayscale sky white, inverted grayscale sky dark; gray stays gray."""
    _, out, _, _ = full_run
    d = next(iter(_batches(out).values()))
    border = np.concatenate([d["images"][:, 0], d["images"][:, -1]], axis=1).astype(float)
    sky = np.median(border, axis=(1, 2))
    gray = d["filter"] != "c"
    # dark sky plus at most the sky-pedestal offset (times the gain)
    assert (sky[~gray] < 20 + 1.2 * T.DEFAULT_PARAMS.offset[1]).all()
    assert (sky[gray & ~d["inverted"]] > 200).all()
    assert (sky[gray & d["inverted"]] < 55).all()
    g = d["images"][gray]
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 0] == g[..., 2]).all()


def test_validation_set(full_run):
    samples, out, summary, _ = full_run
    d = A.load_batch(out / f"{SIZE}x{SIZE}_validation_aug.npz")
    with np.load(layout.sample_path(samples, "gri", SIZE, "test", 0)) as s:
        test = dict(zip(s["pgcIDs"].tolist(), s["labels"].tolist()))
    gray = d["filter"] != "c"
    # every test galaxy once in colour and once in grayscale, with its label
    assert sorted(d["pgcIDs"][~gray].tolist()) == sorted(test)
    assert sorted(d["pgcIDs"][gray].tolist()) == sorted(test)
    assert all(test[p] == lab for p, lab in zip(d["pgcIDs"].tolist(), d["labels"].tolist()))
    assert d["inverted"][gray].sum() == gray.sum() // 2 and not d["inverted"][~gray].any()
    assert summary["validation"]["n"] == len(d["labels"])


def test_odd_batch_size_inverts_half_within_one(tmp_path):
    _, out, _, _ = _run(tmp_path, bands=("g", "r"), batch_size=7)
    for d in _batches(out).values():
        bins = A.inclination_bin(d["labels"])
        assert set(np.bincount(bins, minlength=A.N_BINS).tolist()) <= {0, 7}
        n = len(d["labels"])
        assert d["inverted"].sum() == n // 2
        per_bin = np.bincount(bins[d["inverted"]], minlength=A.N_BINS)
        assert set(per_bin[np.bincount(bins, minlength=A.N_BINS) > 0].tolist()) <= {3, 4}


@pytest.mark.parametrize("bands, filters", [(("gri",), {"c"}), (("g",), {"g"}), (("r", "i"), {"r", "i"})])
def test_only_colour_or_only_grayscale(tmp_path, bands, filters):
    _, out, summary, _ = _run(tmp_path, bands=bands)
    for d in _batches(out).values():
        assert set(d["filter"].tolist()) == filters
        bins = np.bincount(A.inclination_bin(d["labels"]), minlength=A.N_BINS)
        assert len(set(bins[bins > 0].tolist())) == 1 and bins.max() == BATCH
        gray = d["filter"] != "c"
        assert d["inverted"].sum() == gray.sum() // 2
    assert set(A.uset_bin_counts(summary, "Uset_000")) == ({"colour"} if filters == {"c"} else {"grayscale"})


def test_empty_bins_reported_not_hidden(tmp_path):
    _, out, summary, _ = _run(tmp_path, sample_kw={"inc_range": (45, 84)})
    record = json.loads((out / "augment.json").read_text())
    for name in ("Uset_000", "Uset_001"):
        assert "85-90" in summary["empty_bins"][name]["dropped"]
        assert record["empty_bins"][name] == summary["empty_bins"][name]
    for d in _batches(out).values():
        assert (A.inclination_bin(d["labels"]) != 8).all()


def test_galaxy_missing_from_one_band(tmp_path):
    """A band without a galaxy still fills its bins; a band with none in a bin is skipped there."""
    _, out, _, _ = _run(tmp_path, bands=("g", "r"), sample_kw={"missing": {"g": set(range(1000, 1030))}})
    for d in _batches(out).values():
        assert not np.isin(d["pgcIDs"][d["filter"] == "g"], np.arange(1000, 1030)).any()
        bins = np.bincount(A.inclination_bin(d["labels"]), minlength=A.N_BINS)
        assert set(bins[bins > 0].tolist()) == {BATCH}


def test_summary_tables_match_the_written_files(full_run):
    samples, out, summary, _ = full_run
    tables = A.summary_tables(summary)
    batches = _batches(out)
    assert len(tables["batch_counts"]) == len(batches)
    for path, d in batches.items():
        row = tables["batch_counts"].loc[(path.parent.name[:-4], f"{layout.batch_number(path):02d}")]
        assert row["images"] == len(d["labels"]) and row["inverted"] == d["inverted"].sum()
        assert row["colour"] == (d["filter"] == "c").sum() and row["grayscale"] == (d["filter"] != "c").sum()
        assert all(row[f"filter {c}"] == (d["filter"] == c).sum() for c in "cgri")
        small = A.load_batch(path, keys=("filter", "inverted"))
        assert set(small) == {"filter", "inverted"} and np.array_equal(small["inverted"], d["inverted"])
    for band in ("g", "gri"):
        labels = load_sample(samples, band, SIZE, "train", 1, images=False)["labels"]
        assert tables["source_counts"].loc[("Uset_001", band)].tolist() == \
            np.bincount(A.inclination_bin(labels), minlength=A.N_BINS).tolist()
    dropped = summary["empty_bins"]["Uset_000"]["dropped"]
    assert tables["empty_bins"].loc["Uset_000", "dropped"] == (", ".join(dropped) or "none")
    val = A.load_batch(out / summary["validation"]["file"])
    assert tables["validation"]["images"] == len(val["labels"])

    files = [d for p, d in batches.items() if p.parent.name == "Uset_000_npz"]
    gray = np.concatenate([d["filter"] != "c" for d in files])
    bins = np.concatenate([A.inclination_bin(d["labels"]) for d in files])
    after = A.uset_bin_counts(summary, "Uset_000")
    assert after["colour"].tolist() == np.bincount(bins[~gray], minlength=A.N_BINS).tolist()
    assert after["grayscale"].tolist() == np.bincount(bins[gray], minlength=A.N_BINS).tolist()


# ---- determinism ------------------------------------------------------------

def test_same_seed_same_files_other_seed_differs(tmp_path, full_run):
    _, out1, _, _ = full_run
    _, out2, _, _ = _run(tmp_path, name="again")
    _, out3, _, _ = _run(tmp_path, name="other", seed=8)
    b1, b2, b3 = _batches(out1), _batches(out2), _batches(out3)
    assert [p.relative_to(out1) for p in b1] == [p.relative_to(out2) for p in b2]
    for (p, d1), d2, d3 in zip(b1.items(), b2.values(), b3.values()):
        for k in KEYS:
            np.testing.assert_array_equal(d1[k], d2[k], err_msg=f"{p} {k}")
        assert not np.array_equal(d1["images"], d3["images"])
    v1, v2 = (A.load_batch(o / f"{SIZE}x{SIZE}_validation_aug.npz") for o in (out1, out2))
    for k in KEYS:
        np.testing.assert_array_equal(v1[k], v2[k])


# ---- transforms keep the label ------------------------------------------------

def _ellipses(rng, colour, size=64):
    qs = np.repeat(np.linspace(0.2, 0.9, 8), 25)  # 200 images, 25 random transforms each q
    imgs = np.stack([render_ellipse(size, q, rng.uniform(0, 180), colour, rng) for q in qs])
    before = np.array([axis_ratio_moments(im, colour) for im in imgs])
    assert np.abs(before - qs).max() < 0.03  # the measurement itself is sound
    return imgs, before


@pytest.mark.parametrize("colour", [True, False], ids=["colour", "grayscale"])
@pytest.mark.parametrize("zoom", ["isotropic", "anisotropic"])
def test_axis_ratio_preserved_only_by_isotropic_zoom(colour, zoom):
    rng = np.random.default_rng(11)
    imgs, before = _ellipses(rng, colour)
    size = imgs.shape[1]
    if zoom == "isotropic":  # the stage's own random transforms
        out = T.augment_images(imgs, rng, colour)
    else:  # the original's independent x/y scaling, through the same resampler
        geo = T.sample_geometry(rng, len(imgs), size)
        geo["zoom_y"] = rng.uniform(0.8, 1.2, len(imgs))
        out = T.augment_images(imgs, rng, colour, transforms=T.affine_transforms(size=size, **geo))
    after = np.array([axis_ratio_moments(im, colour) for im in out])
    err = np.abs(after - before).max()
    # isotropic: only resampling at zoom-outs down to 0.55 and the sky pedestal move it a little
    if zoom == "isotropic":
        assert err < 0.06
    else:
        assert err > 0.12  # the test can tell label-corrupting scaling apart


def test_sampled_zoom_is_isotropic_and_in_range():
    g = T.sample_geometry(np.random.default_rng(0), 1000, 64)
    assert np.array_equal(g["zoom_x"], g["zoom_y"])
    lo, hi = T.DEFAULT_PARAMS.zoom
    assert lo <= g["zoom_x"].min() and g["zoom_x"].max() <= hi
    # log-uniform: as many zoom-outs by a factor f as zoom-ins by f around the geometric mean
    mid = np.sqrt(lo * hi)
    assert 0.45 < np.mean(g["zoom_x"] < mid) < 0.55
    assert np.abs(g["tx"]).max() <= 0.15 * 64 and np.abs(g["ty"]).max() <= 0.15 * 64
    # the cutouts come with the major axis horizontal: only small rotations
    assert np.abs(g["theta_deg"]).max() <= 15 and np.abs(g["theta_deg"]).max() > 14
    assert 0.4 < g["flip_x"].mean() < 0.6


def test_offset_only_on_the_requested_share_of_colour_images():
    params = T.AugmentParams(offset=(10.0, 30.0), offset_prob=0.6)
    ph = T._photometric(np.random.default_rng(1), 2000, params)
    has = np.any(ph["offset"] != 0, axis=1)
    assert abs(has.mean() - 0.6) < 0.05
    assert ph["offset"][has].min() >= 10 and ph["offset"].max() <= 30


@pytest.mark.parametrize("colour", [True, False], ids=["colour", "grayscale"])
def test_brightness_scales_the_light_above_the_sky_and_keeps_the_sky(colour):
    """A shallower exposure or softer stretch: the galaxy's light times b, the sky level unchanged."""
    rng = np.random.default_rng(3)
    imgs, _ = _ellipses(rng, colour)
    still = dict(rotation_deg=(0.0, 0.0), zoom=(1.0, 1.0), translate_frac=0.0, flip_prob=0.0, blur_prob=0.0,
                 gain=(1.0, 1.0), offset=(0.0, 0.0), noise_sigma=(0.0, 0.0), desaturate_prob=0.0, gamma=(1.0, 1.0))
    same = T.augment_images(imgs, np.random.default_rng(1), colour, T.AugmentParams(**still, brightness=(1.0, 1.0)))
    half = T.augment_images(imgs, np.random.default_rng(1), colour, T.AugmentParams(**still, brightness=(0.5, 0.5)))
    sky = np.median(imgs[:, 0].astype(float))
    light = lambda x: np.abs(x.astype(float) - sky).sum(axis=(1, 2, 3))
    assert np.abs(same.astype(int) - imgs).max() <= 1                       # the identity passes images through
    assert np.allclose(light(half) / light(same), 0.5, atol=0.03)
    assert abs(np.median(half[:, 0].astype(float)) - sky) <= 1              # the sky stays where it was
    lo, hi = 0.5, 2.0
    drawn = T._photometric(np.random.default_rng(0), 4000, T.AugmentParams(brightness=(lo, hi)))["brightness"]
    assert lo <= drawn.min() and drawn.max() <= hi and 0.45 < np.mean(drawn < np.sqrt(lo * hi)) < 0.55
    # a fixed factor (the default: off) draws nothing, so the other transforms do not change
    fixed, default = np.random.default_rng(0), np.random.default_rng(0)
    T._photometric(fixed, 10, T.AugmentParams(brightness=(0.7, 0.7)))
    T._photometric(default, 10, T.DEFAULT_PARAMS)
    assert T.DEFAULT_PARAMS.brightness == (1.0, 1.0) and fixed.random() == default.random()
    assert T.with_brightness(2.0).brightness == (0.5, 2.0) and T.with_brightness(1.0) == T.DEFAULT_PARAMS
    with pytest.raises(ValueError, match="brightness_range 0.5"):
        T.with_brightness(0.5)


@pytest.mark.parametrize("colour, sky", [(True, 12), (False, 236)], ids=["colour", "grayscale"])
def test_border_fill_draws_no_edge(colour, sky):
    """A blank sky field stays blank: what comes from outside matches level and noise."""
    rng = np.random.default_rng(5)
    n, size = 64, 48
    field = np.clip(np.round(sky + rng.normal(0, 4, (n, size, size, 1))), 0, 255).astype(np.uint8)
    field = np.repeat(field, 3, -1)
    geo = T.sample_geometry(rng, n, size)
    geo.update(zoom_x=np.full(n, 0.8), zoom_y=np.full(n, 0.8), theta_deg=np.full(n, 45.0))
    out = T.augment_images(field, rng, colour, transforms=T.affine_transforms(size=size, **geo))
    corner = out[:, :6, :6].astype(float)          # outside the source after 45 deg, zoom 0.8
    centre = out[:, 18:30, 18:30].astype(float)    # inside
    assert abs(corner.mean() - centre.mean()) < 2.0
    assert 0.5 < corner.std() / centre.std() < 1.6


# ---- bad input ------------------------------------------------------------------

def test_existing_output_folder_refused(tmp_path):
    samples = tmp_path / "samples"
    write_samples(samples, size=SIZE, bands=("g",), n_galaxies=20)
    out = tmp_path / "augmented"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="augmented"):
        A.augment_stage(samples, out, SIZE, bands=["g"], n_batches=1, batch_size=4, progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("problem", ["missing_band", "gap", "wrong_size", "bad_label", "bad_band", "empty_test"])
def test_bad_input_named_and_nothing_written(tmp_path, problem):
    samples = tmp_path / "samples"
    write_samples(samples, size=SIZE, bands=("g", "r"), n_galaxies=20, m_iter=2)
    bands = ["g", "r"]
    if problem == "missing_band":
        bands, err, name = ["g", "r", "gri"], FileNotFoundError, "RGB_32x32_train_000.npz"
    elif problem == "gap":
        (samples / "r_32x32_train_001.npz").unlink()
        err, name = FileNotFoundError, "r_32x32_train_001.npz"
    elif problem == "wrong_size":
        p = samples / "g_32x32_train_002.npz"
        np.savez(p, images=np.zeros((3, 16, 16, 3), np.uint8), labels=np.full(3, 60), pgcIDs=np.arange(3))
        err, name = DatasetError, "g_32x32_train_002.npz"
    elif problem == "bad_label":
        p = samples / "r_32x32_test_000.npz"
        with np.load(p) as d:
            arrays = {k: d[k] for k in d.files}
        arrays["labels"][0] = 30
        np.savez(p, **arrays)
        err, name = DatasetError, "r_32x32_test_000.npz"
    elif problem == "empty_test":
        for b in ("g", "r"):
            np.savez(samples / f"{b}_32x32_test_000.npz", images=np.zeros((0, 32, 32, 3), np.uint8),
                     labels=np.zeros(0, np.int64), pgcIDs=np.zeros(0, np.int64))
        err, name = A.AugmentInputError, "g_32x32_test_000.npz"
    else:
        bands, err, name = ["g", "u"], A.AugmentInputError, "'u'"
    out = tmp_path / "augmented"
    with pytest.raises(err, match=name.replace(".", r"\.")):
        A.augment_stage(samples, out, SIZE, bands=bands, n_batches=1, batch_size=4, progress=False)
    assert not out.exists()
    assert not list(tmp_path.glob(".augmented*"))


@pytest.mark.parametrize("kw, name", [({"size": 0}, "size=0"), ({"n_batches": 0}, "n_batches=0"),
                                      ({"batch_size": 2.5}, "batch_size=2.5"), ({"bands": []}, "no bands"),
                                      ({"bands": ["RGB"]}, "'RGB'")])
def test_bad_parameters_refused_before_reading(tmp_path, kw, name):
    """Parameters are checked first: the (missing) samples folder is never looked at."""
    args = {"size": SIZE, "bands": ["g"], "n_batches": 1, "batch_size": 4} | kw
    with pytest.raises(A.AugmentInputError, match=re.escape(name)):
        A.augment_stage(tmp_path / "nowhere", tmp_path / "augmented", progress=False, **args)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape, dtype", [((2, 8, 8), np.uint8), ((2, 8, 8, 3), np.float32),
                                          ((2, 8, 8, 1), np.uint8)])
def test_augment_images_refuses_other_layouts(shape, dtype):
    with pytest.raises(ValueError, match=re.escape(f"{shape} {np.dtype(dtype)}")):
        T.augment_images(np.zeros(shape, dtype), np.random.default_rng(0), colour=True)


def test_failure_midway_leaves_no_output(tmp_path, monkeypatch):
    samples = tmp_path / "samples"
    write_samples(samples, size=SIZE, bands=("g", "gri"), n_galaxies=30)
    calls = {"n": 0}
    real = T.augment_images

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("disk full")
        return real(*args, **kw)

    monkeypatch.setattr(T, "augment_images", flaky)
    out = tmp_path / "augmented"
    with pytest.raises(RuntimeError, match="disk full"):
        A.augment_stage(samples, out, SIZE, bands=["g", "gri"], n_batches=2, batch_size=8, progress=False)
    assert calls["n"] > 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples"]
