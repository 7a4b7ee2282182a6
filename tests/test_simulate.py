"""Stage 00 (inclinet_utils.simulate): the synthetic sample's files, catalog, labels,
physics sanity, determinism across worker counts, and refusal to overwrite."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from inclinet_utils import catalog, simulate
from inclinet_utils.simulate import SimulationError

N_SMALL = 6
NAME = re.compile(r"^pgc(\d+)_d25x2_rot_(g|r|i)\.png$|^pgc(\d+)_d25x2_rot_gri\.jpg$")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A small sample rendered once with a single worker: (out_dir, returned table)."""
    out = tmp_path_factory.mktemp("sim") / "input"
    table = simulate.simulate_sample(out, N_SMALL, seed=11, n_workers=1, progress=False)
    return out, table


def expected_label(inc_true: float, note: str) -> str:
    if inc_true < simulate.FACE_ON_DEG:
        return "F"
    if inc_true < simulate.USABLE_MIN_DEG or "[star]" in note or "[multiple]" in note:
        return "0"
    return str(int(round(inc_true)))


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# --- files and catalog -----------------------------------------------------------------

def test_files_names_sizes_modes(sample):
    out, table = sample
    assert sorted(p.name for p in out.iterdir()) == ["catalogs", "galaxies"]
    assert listing(out / "catalogs") == {"catalog.csv"}
    files = sorted((out / "galaxies").iterdir())
    assert len(files) == 4 * N_SMALL
    pgcs = set()
    for path in files:
        m = NAME.match(path.name)
        assert m, f"unexpected file {path.name}"
        pgcs.add(int(m.group(1) or m.group(3)))
        with Image.open(path) as im:
            assert im.size == (512, 512)
            if path.suffix == ".png":
                assert (im.format, im.mode) == ("PNG", "L")
                a = np.asarray(im).astype(float)
                # Black galaxy on a white sky: dark centre, light border.
                border = np.median(np.concatenate([a[:20].ravel(), a[-20:].ravel()]))
                assert border > 200 and a[246:266, 246:266].mean() < border - 60
            else:
                assert (im.format, im.mode) == ("JPEG", "RGB")
                a = np.asarray(im).astype(float).mean(axis=2)
                border = np.median(np.concatenate([a[:20].ravel(), a[-20:].ravel()]))
                assert border < 40 and a[246:266, 246:266].mean() > border + 60   # white on black
    assert pgcs == set(table["pgc"])


def test_catalog_round_trip_and_labels(sample):
    out, table = sample
    cat = catalog.read_catalog(out / "catalogs" / "catalog.csv")
    assert list(cat["pgc"]) == list(table["pgc"])
    for col in ("pgc", "inc", "inc_flg", "fon", "inc_note", "b_a", "inc_true", "d25", "pa", "hz_hr", "bt",
                "psf_fwhm", "mu0_r", "contam"):
        assert col in cat.columns
    for _, row in cat.iterrows():
        assert row["label"] == expected_label(row["inc_true"], row["inc_note"])
    np.testing.assert_allclose(cat["inc_true"], table["inc_true"], atol=1e-4)
    finite = cat["b_a"].dropna()
    assert len(finite) >= N_SMALL - 1 and ((finite > 0) & (finite <= 1)).all()


def test_labels_follow_catalog_rules_over_many_parameter_sets(tmp_path):
    # Label logic without rendering: 600 parameter sets through write_catalog/read_catalog.
    params = simulate.draw_parameters(600, seed=5)
    table = simulate.catalog_table(params, np.full(len(params), np.nan))
    path = tmp_path / "catalog.csv"
    catalog.write_catalog(table, path)
    cat = catalog.read_catalog(path)
    inc_true = cat["inc_true"].to_numpy()
    usable = cat["label_code"] >= 45
    np.testing.assert_array_equal(cat.loc[usable, "inc"], np.rint(inc_true[usable]))
    assert (cat.loc[usable, "inc_flg"] == 0).all()
    assert (cat.loc[~usable, "inc_flg"] == 1).all() and (cat.loc[~usable, "inc"] == 0).all()
    face_on = inc_true < simulate.FACE_ON_DEG
    assert (cat.loc[face_on, "label"] == "F").all()
    assert (cat.loc[face_on, "fon"] == "F").all()
    assert cat.loc[face_on, "inc_note"].str.contains(r"\[face_on\]").all()
    low = (inc_true >= simulate.FACE_ON_DEG) & (inc_true < simulate.USABLE_MIN_DEG)
    assert (cat.loc[low, "label"] == "0").all()
    for _, row in cat.iterrows():
        assert row["label"] == expected_label(row["inc_true"], row["inc_note"])
    # Some contaminated galaxies are rejected, some kept with a '?' note.
    contaminated = cat["contam"] != "none"
    assert 0.07 < contaminated.mean() < 0.2
    rejected = contaminated & (inc_true >= 45) & (cat["label"] == "0")
    kept = contaminated & (cat["label_code"] >= 45)
    assert rejected.sum() > 0 and kept.sum() > 0
    assert cat.loc[kept, "inc_note"].str.contains(r"\?").all()


def test_inclinations_from_random_orientations():
    params = simulate.draw_parameters(300, seed=3)
    inc = params["inc_true"].to_numpy()
    assert inc.min() >= 0 and inc.max() <= 90
    assert ((inc >= 45) & (inc <= 90)).mean() >= 0.6
    # cos i uniform on [0, 1]: mean 1/2, variance 1/12.
    cos_i = np.cos(np.radians(inc))
    assert abs(cos_i.mean() - 0.5) < 0.05 and abs(cos_i.var() - 1 / 12) < 0.02
    assert (inc < simulate.FACE_ON_DEG).sum() > 10   # face-on galaxies exist


def test_physical_parameter_ranges():
    p = simulate.draw_parameters(500, seed=8)
    assert p["hz_hr"].between(0.1, 0.3).all() and p["hz_hr"].std() > 0.04
    assert p["bt"].between(0, 0.6).all() and p["bt"].max() > 0.4 and p["bt"].min() < 0.02
    assert p["psf_fwhm"].between(1.0, 2.0).all()
    assert (p["gr_bulge"] > p["gr_disk"]).mean() > 0.95            # bulges redder than disks
    assert p["pa_img"].abs().max() <= 4.0                            # major axis ~horizontal
    assert p["d25"].max() / p["d25"].min() > 3                       # a range of sizes
    assert p["mu0_r"].max() - p["mu0_r"].min() > 2.5                 # and of surface brightness
    assert p["pgc"].is_unique


# --- determinism -----------------------------------------------------------------------

def test_same_seed_same_bytes_any_worker_count(sample, tmp_path):
    out1, table1 = sample
    out2 = tmp_path / "two_workers"
    table2 = simulate.simulate_sample(out2, N_SMALL, seed=11, n_workers=2, progress=False)
    pd.testing.assert_frame_equal(table1, table2)
    names = sorted(p.name for p in (out1 / "galaxies").iterdir())
    assert names == sorted(p.name for p in (out2 / "galaxies").iterdir())
    for name in names:
        assert (out1 / "galaxies" / name).read_bytes() == (out2 / "galaxies" / name).read_bytes(), name
    assert (out1 / "catalogs" / "catalog.csv").read_bytes() == (out2 / "catalogs" / "catalog.csv").read_bytes()


def test_different_seed_differs():
    p1, p2 = simulate.draw_parameters(20, seed=1), simulate.draw_parameters(20, seed=2)
    assert not np.allclose(p1["inc_true"], p2["inc_true"])
    row = simulate.draw_parameters(1, seed=4).iloc[0].to_dict()
    a = simulate.render_galaxy(row, np.random.SeedSequence(1)).gray["r"]
    b = simulate.render_galaxy(row, np.random.SeedSequence(2)).gray["r"]
    c = simulate.render_galaxy(row, np.random.SeedSequence(1)).gray["r"]
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b)      # same galaxy, new noise and stars


# --- physics checks on rendered images -------------------------------------------------

def _clean_row(base, inc):
    """A bulge-light, uncontaminated 0.8-arcmin galaxy at inclination `inc` (deg)."""
    row = dict(base)
    h = 0.8 * 30 / 3.3          # R25 ~ 3.3 scale lengths for a Freeman disk
    row.update(inc_true=inc, contam="", contam_rejected=False, bt=0.05, bar=False, bar_frac=0.0,
               dust_a=0.0, trail=False, star_density=1.0, bg_density=0.5, d25=0.8, h_arcsec=h,
               re_arcsec=0.2 * h, mu0_r=20.5)
    return row


def test_axis_ratio_small_edge_on_large_face_on():
    base = simulate.draw_parameters(1, seed=9).iloc[0].to_dict()
    edge = [simulate.render_galaxy(_clean_row(base, 88.0), np.random.SeedSequence(s)).b_a for s in range(3)]
    face = [simulate.render_galaxy(_clean_row(base, 8.0), np.random.SeedSequence(s)).b_a for s in range(3)]
    assert max(edge) < 0.4, edge
    assert min(face) > 0.75, face


def test_sky_noise_at_sdss_depth():
    row = _clean_row(simulate.draw_parameters(1, seed=2).iloc[0].to_dict(), 60.0)
    row["sky_dmag"] = 0.0
    img = simulate.render_galaxy(row, np.random.SeedSequence(0))
    assert math.isclose(img.scale, simulate.PIXEL_SCALE)
    r = img.native["r"]
    corner = np.concatenate([r[:30, :30].ravel(), r[-30:, -30:].ravel()])
    sigma = 1.4826 * np.median(np.abs(corner - np.median(corner)))          # nmgy / pixel
    mu_1sigma = 22.5 - 2.5 * np.log10(sigma / img.scale ** 2)
    assert 24.0 < mu_1sigma < 24.7                                        # SDSS r: ~24.3-24.4
    assert abs(np.median(corner)) < 0.3 * sigma                            # sky subtracted


# --- refusing bad input ----------------------------------------------------------------

def test_existing_out_dir_is_refused_untouched(tmp_path):
    out = tmp_path / "input"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    before = listing(tmp_path)
    with pytest.raises(FileExistsError, match=str(out)):
        simulate.simulate_sample(out, 2, seed=1, n_workers=1, progress=False)
    assert listing(tmp_path) == before
    assert (out / "keep.txt").read_text() == "user file"


@pytest.mark.parametrize("kwargs, word", [
    (dict(n_galaxies=0, seed=1), "n_galaxies"),
    (dict(n_galaxies=2.5, seed=1), "n_galaxies"),
    (dict(n_galaxies=2, seed=-1), "seed"),
    (dict(n_galaxies=2, seed=1, n_workers=-2), "n_workers"),
])
def test_bad_arguments_named_and_nothing_written(tmp_path, kwargs, word):
    with pytest.raises(SimulationError, match=word):
        simulate.simulate_sample(tmp_path / "input", progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []
