"""Stage 00 (inclinet_utils.simulate and its simulate_* parts): the synthetic sample's
files, catalog, labels, priors, physics sanity of each drawing part, determinism
across worker counts, and refusal to overwrite."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import galsim

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from inclinet_utils import catalog, realism, simulate
from inclinet_utils import simulate_display as display
from inclinet_utils import simulate_field as field
from inclinet_utils import simulate_galaxy as galaxy
from inclinet_utils import simulate_observe as observe
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
                border = np.concatenate([a[:20].ravel(), a[-20:].ravel()])
                border = np.median(border[border < 235])   # not the white corners of rotated frames
                assert border < 40 and a[246:266, 246:266].mean() > border + 60   # white on black (or navy)
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
    summary = simulate.label_summary(cat).iloc[0]
    assert summary["F"] + summary["0"] + summary["45-90"] == N_SMALL
    assert summary["F"] == (cat["label"] == "F").sum() and summary["0"] == (cat["label"] == "0").sum()
    assert summary["usable_fraction"] == round(summary["45-90"] / N_SMALL, 3)
    assert sum(v for k, v in summary.items() if k.startswith("contam_")) == N_SMALL


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


def test_one_prior_changes_only_its_own_column():
    base = simulate.draw_parameters(400, seed=6)
    thin = simulate.draw_parameters(400, seed=6, priors=dataclasses.replace(simulate.PRIORS, hz_hr=(0.1, 0.12)))
    assert thin["hz_hr"].between(0.1, 0.12).all() and not base["hz_hr"].between(0.1, 0.12).all()
    # The same random draws in the same order: everything else is unchanged.
    others = [c for c in base.columns if c != "hz_hr"]
    pd.testing.assert_frame_equal(base[others], thin[others])


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


def _frame(npix=101, scale=simulate.PIXEL_SCALE, fwhm=1.4):
    psf = galsim.Kolmogorov(fwhm=fwhm)
    return observe.Frame(npix=npix, scale=scale, psf=psf, fwhm_pix=fwhm / scale)


def test_sky_and_noise_match_ccd_statistics():
    # Flat source of 0.5 nmgy/pixel on a binned grid: after sky subtraction the mean is
    # the source and the variance is Poisson (source + sky) plus the binned read noise.
    scale, band = 2 * simulate.PIXEL_SCALE, "r"
    model = np.full((300, 300), 0.5, dtype=np.float32)
    out = observe.add_sky_and_noise(model, band, 0.0, scale, galsim.BaseDeviate(7))
    assert out is model and out.dtype == np.float32
    e = simulate.E_PER_NMGY[band]
    sky = observe.sky_per_pixel(band, 0.0, scale)
    expected_var = (0.5 + sky) / e + (simulate.READ_NOISE_E * 2) ** 2 / e ** 2
    assert abs(out.mean() - 0.5) < 3 * math.sqrt(expected_var / out.size)
    assert abs(out.var() / expected_var - 1) < 0.02


def test_bright_star_stamps_are_clipped_to_the_frame():
    frame = _frame()
    row = dict(contam="", pa=0.0)
    geo = galaxy.Geometry(inc=0.5, h=3.0, hz=0.6, r25=10.0, field=frame.npix * frame.scale,
                          rot=galsim.Angle(0.0, galsim.degrees), dx=0.0, dy=0.0)
    edge = (frame.npix - 1) / 2 * frame.scale          # arcsec from the centre to the last pixel centre

    def stamped(x, y, m=15.5):
        canvas = np.zeros((3, frame.npix, frame.npix), dtype=np.float32)
        field.add_bright_stars(canvas, [(x, y, m, 0.5, 0.2)], row, geo, frame, np.random.default_rng(0))
        return canvas

    flux_r = observe.mag_to_nmgy(15.5)
    centre, corner, outside = stamped(0.0, 0.0), stamped(edge, edge), stamped(3 * edge, 0.0)
    assert 0.95 < centre[1].sum() / flux_r <= 1.0 + 1e-6           # the whole PSF, r band
    np.testing.assert_allclose(centre.sum(axis=(1, 2)) / centre[1].sum(), [10 ** -0.2, 1, 10 ** 0.08], rtol=1e-4)
    # On the corner pixel: only the stamp's lower-left quarter (to its centre row and column) lands.
    half = frame.npix // 2
    np.testing.assert_array_equal(corner[:, half:, half:], centre[:, :half + 1, :half + 1])
    assert not corner[:, :half].any() and not corner[:, :, :half].any()
    assert not outside.any()                                        # nothing outside, no error
    # a faint contaminating star (fainter than the stamp-size magnitude) still gets a stamp
    faint = stamped(0.0, 0.0, m=field.STAR_STAMP_MAG + 3.0)
    assert 0.8 < faint[1].sum() / observe.mag_to_nmgy(field.STAR_STAMP_MAG + 3.0) <= 1.0 + 1e-6


def test_knots_follow_the_disk_and_sum_to_one():
    row = dict(n_knots=59, bar=False, n_arms=2, pitch_deg=20.0)
    rng, dev = np.random.default_rng(3), galsim.BaseDeviate(3)
    radii = []
    for _ in range(40):
        arms = galaxy._arm_layout(row, 4.0, rng)
        kx, ky, kw = galaxy._knots(row, arms, 4.0, rng, dev)
        assert kx.size == ky.size == kw.size == 59 * galaxy.KNOT_PARTICLES
        assert math.isclose(kw.sum(), 1.0) and (kw > 0).all()
        centres = np.hypot(kx.reshape(59, -1).mean(axis=1), ky.reshape(59, -1).mean(axis=1))
        radii.append(centres[-(59 - round(0.7 * 59)):])            # the knots off the arms
    r = np.concatenate(radii)
    assert 1.8 * 4.0 < r.mean() < 2.4 * 4.0                         # exponential disk: <r> = 2 h


def test_gray_stretch_puts_sky_at_chosen_level():
    # Unit sky noise and a bright galaxy core: the sky lands at the chosen gray level with
    # the chosen noise in gray levels, and the core saturates to black.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512] - 255.5
    image = (rng.normal(0.0, 1.0, (512, 512)) + 500.0 * np.exp(-0.5 * (xx ** 2 + yy ** 2) / 6.0 ** 2))
    gray = display.gray_image(image.astype(np.float32), sky_level=235.0, noise_gl=10.0, sat_frac=1.0)
    assert gray.dtype == np.uint8 and gray.shape == (512, 512)
    border = np.concatenate([gray[:60].ravel(), gray[-60:].ravel()]).astype(float)
    robust_sigma = 1.4826 * np.median(np.abs(border - np.median(border)))   # the 255 clip cuts the tail
    assert abs(np.median(border) - 235) <= 1 and 9.3 < robust_sigma < 10.5
    assert gray[256, 256] == 0 and gray[250:262, 250:262].mean() < 10
    # A fainter galaxy (no core above 15 sky sigma) is stretched linearly and never saturates.
    faint = display.gray_image(rng.normal(0.0, 1.0, (512, 512)).astype(np.float32), 235.0, 10.0, 1.0)
    assert faint.min() > 0 and abs(np.median(faint) - 235) <= 1


def _unsaturated_centres(rendered, monkeypatch, q_range) -> int:
    """Composites of the rendered galaxies, at Lupton Q from `q_range`, whose centre has no
    saturated pixel (the realism report's sat_centre_rgb is 0)."""
    monkeypatch.setattr(display, "RGB_Q", q_range)
    rgbs = [display.to_display(g.native, g.scale, np.random.default_rng(k))[1] for k, g in enumerate(rendered)]
    return sum(realism.colour_statistics(rgb, None)["sat_centre_rgb"] == 0 for rgb in rgbs)


def test_composite_centres_saturate_about_as_often_as_real_sdss(monkeypatch):
    # 12 of the 21 real composites of ../shared have no saturated pixel at the centre
    # (the realism report's sat_centre_rgb); Lupton Q 2-9 saturated about two thirds.
    p = simulate.draw_parameters(100, seed=5)
    rendered = [simulate.render_galaxy(row.to_dict(), np.random.SeedSequence(k))
                for k, (_, row) in enumerate(p[p["contam"] == ""].head(16).iterrows())]
    now = _unsaturated_centres(rendered, monkeypatch, display.RGB_Q)
    before = _unsaturated_centres(rendered, monkeypatch, (2.0, 9.0))
    assert 8 <= now <= 12 and now > before          # 12 of 21 real: 9 of 16


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
