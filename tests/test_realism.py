"""Realism statistics: they recover known shapes, sky, colours and corners from drawn images."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from inclinet_utils import realism

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def _sky(n, level, noise, seed=0):
    rng = np.random.default_rng(seed)
    return level + noise * rng.standard_normal((n, n))


def _ellipse_mask(n, a, b, angle_deg=0.0):
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    t = math.radians(angle_deg)
    u = xx * math.cos(t) + yy * math.sin(t)
    v = -xx * math.sin(t) + yy * math.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _gray(values):
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("n, a, b, angle", [(512, 130, 52, 0.0), (512, 100, 70, 30.0), (1024, 300, 60, 0.0)])
def test_drawn_ellipse_extent_and_axis_ratio(n, a, b, angle):
    # A black-on-white ellipse of known size and shape in a noisy sky.
    image = _sky(n, 235.0, 9.0)
    image[_ellipse_mask(n, a, b, angle)] = 60.0
    stats, region = realism.gray_statistics(_gray(image))
    assert region is not None
    assert stats["extent"] == pytest.approx(2 * a / n, rel=0.03)
    assert stats["q_iso"] == pytest.approx(b / a, abs=0.02)
    assert (math.degrees(region.theta) - angle + 90) % 180 - 90 == pytest.approx(0.0, abs=2.0)
    assert stats["star_cover"] == 0.0


def test_axis_ratio_excess_against_the_label():
    n, a = 512, 120
    q_expected = float(realism.expected_axis_ratio(60.0))
    image = _sky(n, 235.0, 8.0)
    image[_ellipse_mask(n, a, a * q_expected)] = 50.0
    stats, _ = realism.gray_statistics(_gray(image), label_inc=60.0)
    assert abs(stats["q_excess"]) < 0.02
    stats, _ = realism.gray_statistics(_gray(image), label_inc=85.0)
    assert stats["q_excess"] == pytest.approx(q_expected - float(realism.expected_axis_ratio(85.0)), abs=0.02)
    assert np.isfinite(stats["edge_thickness"])  # label 85 is edge-on: thickness measured


@pytest.mark.parametrize("level, noise", [(228.0, 9.0), (241.0, 4.0), (200.0, 15.0)])
def test_sky_level_and_noise_of_a_noisy_frame(level, noise):
    image = _gray(_sky(512, level, noise, seed=3))
    sky, sigma = realism.sky_statistics(image)
    assert sky == pytest.approx(level, abs=0.6)
    assert sigma == pytest.approx(noise, rel=0.05)


def test_sky_ignores_the_galaxy_and_stars():
    image = _sky(512, 232.0, 10.0, seed=4)
    image[_ellipse_mask(512, 200, 60)] = 40.0
    rng = np.random.default_rng(5)
    for x, y in rng.integers(0, 512, (30, 2)):
        image[max(0, y - 2):y + 3, max(0, x - 2):x + 3] = 0.0
    stats, _ = realism.gray_statistics(_gray(image))
    assert stats["sky_level"] == pytest.approx(232.0, abs=1.0)
    assert stats["sky_noise"] == pytest.approx(10.0, rel=0.1)
    assert stats["star_cover"] > 0


def test_edge_on_thickness_of_a_gaussian_disk():
    n, a, sigma_y = 512, 150, 6.0
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    depth = 200.0 * np.exp(-0.5 * (yy / sigma_y) ** 2) * (np.abs(xx) <= a)
    image = _gray(_sky(n, 235.0, 4.0) - depth)
    stats, _ = realism.gray_statistics(image, label_inc=88.0)
    fwhm = 2 * math.sqrt(2 * math.log(2)) * math.hypot(sigma_y, realism.SMOOTH_SIGMA)
    assert stats["edge_thickness"] == pytest.approx(fwhm / stats["extent"] / n, rel=0.05)
    assert stats["extent"] == pytest.approx((2 * a + 1) / n, rel=0.02)


def _composite(n=512, disk=(120, 100, 80), sky=(4, 5, 9), corners_deg=None):
    rng = np.random.default_rng(6)
    rgb = np.array(sky, dtype=float) + 2.0 * rng.standard_normal((n, n, 3))
    mask = _ellipse_mask(n, 120, 50)
    rgb[mask] += np.array(disk, dtype=float)
    rgb = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    if corners_deg is None:
        return rgb, 0.0
    t = math.radians(corners_deg)
    side = n / (math.cos(t) + math.sin(t))     # a rotated square that just fits the frame
    c = n / 2
    pts = [(c + side / 2 * (math.cos(t + k * math.pi / 2) - math.sin(t + k * math.pi / 2)),
            c + side / 2 * (math.sin(t + k * math.pi / 2) + math.cos(t + k * math.pi / 2))) for k in range(4)]
    keep = Image.new("L", (n, n), 0)
    ImageDraw.Draw(keep).polygon(pts, fill=255)
    rgb[np.asarray(keep) == 0] = 255
    return rgb, 1.0 - (side / n) ** 2


def test_disk_colour_sky_and_white_corners_of_a_rotated_composite():
    n = 512
    gray = _sky(n, 235.0, 8.0)
    gray[_ellipse_mask(n, 120, 50)] = 60.0
    _, region = realism.gray_statistics(_gray(gray))
    rgb, white = _composite(corners_deg=30.0)
    stats = realism.colour_statistics(rgb, region)
    assert white > 0.3
    assert stats["white_corners"] == pytest.approx(white, abs=0.01)
    assert stats["sky_level_rgb"] == pytest.approx(6.0, abs=0.5)      # corners left out of the sky
    assert stats["sky_B_rgb"] == pytest.approx(9.0, abs=0.5)
    assert stats["disk_rg"] == pytest.approx(1.2, abs=0.03)
    assert stats["disk_bg"] == pytest.approx(0.8, abs=0.03)
    plain = realism.colour_statistics(_composite()[0], region)
    assert plain["white_corners"] == 0.0


def test_placement_percentiles_and_range():
    synthetic = pd.DataFrame({"extent": np.arange(1.0, 101.0), "sky_noise": np.full(100, np.nan)})
    real = pd.DataFrame({"source": "real", "pgc": [1, 2, 3], "label": ["60", "F", "0"],
                         "extent": [50.5, 200.0, 3.0], "sky_noise": [1.0, 2.0, 3.0]})
    placed = realism.placement(real, synthetic, stats=("extent", "sky_noise"))
    assert list(placed["statistic"]) == ["extent"] * 3     # no synthetic sky_noise: not placed
    assert placed["percentile"].tolist() == pytest.approx([50.0, 100.0, 2.5])
    assert placed["inside"].tolist() == [True, False, False]
    lo, hi = np.percentile(np.arange(1.0, 101.0), realism.RANGE)
    assert placed["synthetic_lo"].iat[0] == pytest.approx(lo) and placed["synthetic_hi"].iat[0] == pytest.approx(hi)
    outside = realism.outside_table(placed)
    assert outside["outside"].tolist() == [2]
    assert "pgc2" in outside["galaxies outside (percentile)"].iat[0]


def _write_galaxy(folder, pgc, gray, rgb=None):
    for band in "gri":
        Image.fromarray(gray, "L").save(folder / f"pgc{pgc}_d25x2_rot_{band}.png")
    if rgb is not None:
        Image.fromarray(rgb, "RGB").save(folder / f"pgc{pgc}_d25x2_rot_gri.jpg", quality=95)


def test_folder_statistics_skips_bad_files_with_a_reason_and_saves_atomically(tmp_path):
    folder = tmp_path / "galaxies"
    folder.mkdir()
    gray = _sky(512, 235.0, 9.0)
    gray[_ellipse_mask(512, 120, 60)] = 50.0
    _write_galaxy(folder, 1, _gray(gray), _composite()[0])
    _write_galaxy(folder, 2, _gray(gray))                          # no composite
    (folder / "pgc3_d25x2_rot_r.png").write_bytes(b"not an image")  # unreadable
    catalog = pd.DataFrame({"pgc": [1, 2, 3, 4], "label": ["70", "F", "80", "0"]})
    table = realism.folder_statistics(folder, catalog, "test").set_index("pgc")
    assert table.loc[1, "extent"] == pytest.approx(240 / 512, rel=0.03)
    assert np.isfinite(table.loc[1, "disk_rg"])
    assert table.loc[2, "note"] == "no colour composite" and np.isnan(table.loc[2, "disk_rg"])
    assert table.loc[3, "note"].startswith("skipped:") and "pgc3_d25x2_rot_r.png" in table.loc[3, "note"]
    assert table.loc[4, "note"] == "skipped: no r band image"
    parallel = realism.folder_statistics(folder, catalog, "test", n_workers=2).set_index("pgc")
    pd.testing.assert_frame_equal(parallel, table)
    placed = realism.placement(table.reset_index(), table.reset_index())
    out = realism.save_report(tmp_path / "run", table.reset_index(), table.reset_index(), placed)
    assert sorted(p.name for p in out.iterdir()) == ["placement.csv", "real_statistics.csv", "summary.json",
                                                     "synthetic_statistics.csv"]
    assert len(pd.read_csv(out / "real_statistics.csv")) == 4
    with pytest.raises(FileExistsError):
        realism.save_report(tmp_path / "run", table.reset_index(), table.reset_index(), placed)


@pytest.mark.skipif(not (SHARED / "real_sdss" / "galaxies").is_dir(), reason="../shared/real_sdss is absent")
def test_real_sdss_statistics():
    table = realism.real_statistics(SHARED, folders=("real_sdss",))
    assert len(table) == 8 and set(table["source"]) == {"real_sdss"}
    assert table["extent"].between(0.25, 0.9).all()                   # the 2 x D25 cutouts
    assert table["sky_level"].between(220, 250).all()                 # white sky of the inverted bands
    corners = table.set_index("pgc")["white_corners"]
    assert corners[44182] > 0.2 and (corners.drop(44182) == 0).all()  # the rotated SDSS composite


def _input_folder(root, pgcs, incs):
    from inclinet_utils import catalog as icat
    from inclinet_utils import layout
    (root / layout.INPUT_IMAGES_DIR).mkdir(parents=True)
    for k, (pgc, inc) in enumerate(zip(pgcs, incs)):
        q = float(realism.expected_axis_ratio(inc))
        gray = _sky(512, 232.0 + k, 9.0, seed=k)
        gray[_ellipse_mask(512, 110 + 10 * k, (110 + 10 * k) * q)] = 50.0
        _write_galaxy(root / layout.INPUT_IMAGES_DIR, pgc, _gray(gray), _composite()[0])
    table = pd.DataFrame({"pgc": pgcs, "inc": incs, "inc_flg": 0, "fon": "", "inc_note": ""})
    icat.write_catalog(table, root / layout.INPUT_CATALOG)


def test_make_report_places_real_galaxies_in_the_run_sample(tmp_path):
    from inclinet_utils import layout
    run = tmp_path / "run"
    _input_folder(layout.run_paths(run)["input"], [11, 12, 13, 14, 15], [50, 60, 70, 80, 88])
    _input_folder(tmp_path / "shared" / "real_sdss", [21, 22], [50, 85])   # 21 is drawn as 11
    report = realism.make_report(run, shared_dir=tmp_path / "shared", progress=False)
    assert list(report.real["pgc"]) == [21, 22] and len(report.synthetic) == 5
    assert report.folder == layout.run_paths(run)["realism"] and (report.folder / "placement.csv").is_file()
    percentiles = realism.percentile_table(report.placed)
    assert list(percentiles.index.get_level_values("pgc")) == [21, 22]
    # Measured the same way: the same drawing gives the same numbers in both tables.
    real, synthetic = report.real.set_index("pgc"), report.synthetic.set_index("pgc")
    for name in realism.STATISTIC_NAMES:
        assert real.loc[21, name] == pytest.approx(synthetic.loc[11, name], nan_ok=True)
    assert report.placed["statistic"].value_counts()["extent"] == 2
