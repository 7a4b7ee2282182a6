"""The classical axis-ratio baseline (photutils segment moments + Hubble's formula): known shapes,
stored black-on-white cutouts with stars, white fill corners, and the simulator's b_a column."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
import pytest

from galaxy_shapes import oblate
from inclinet_utils import axis_ratio as ar


@pytest.mark.parametrize("inc", [45, 55, 65, 75, 80, 85])
def test_axis_ratio_recovers_thin_galsim_disks(inc):
    galsim = pytest.importorskip("galsim")
    disk = galsim.InclinedExponential(np.radians(inc) * galsim.radians, scale_radius=9.0, scale_h_over_r=0.01)
    image = disk.rotate(25 * galsim.degrees).drawImage(nx=128, ny=128, scale=1.0).array
    # An infinitely thin disk: q = cos i, i.e. Hubble's formula with q0 = 0.
    assert ar.axis_ratio_inclination(image, q0=0.0, galaxy_dark=False) == pytest.approx(inc, abs=2.0)


@pytest.mark.parametrize("inc", [45, 60, 75, 85])
def test_axis_ratio_inverts_hubble_formula_for_thick_disks(inc):
    assert ar.axis_ratio_inclination(oblate(inc) * 200) == pytest.approx(inc, abs=2.0)


def test_axis_ratio_on_stored_black_on_white_cutout_with_noise_and_a_star():
    rng = np.random.default_rng(3)
    flux = oblate(70, n=128, rs=10.0) * 180
    y, x = np.mgrid[0:128, 0:128]
    flux += 250 * np.exp(-((x - 95) ** 2 + (y - 70) ** 2) / (2 * 1.5 ** 2))   # a star beside the disk
    flux += 200 * np.exp(-((x - 15) ** 2 + (y - 20) ** 2) / (2 * 2.0 ** 2))   # another one far out
    stored = np.clip(np.round(235 - flux + rng.normal(0, 4, flux.shape)), 0, 255).astype(np.uint8)
    got = ar.axis_ratio_inclination(stored, galaxy_dark=True)
    assert got == pytest.approx(70, abs=3.0)
    assert ar.axis_ratio_inclination(stored) == pytest.approx(got)  # auto-detects black on white
    assert np.isnan(ar.axis_ratio_inclination(np.full((64, 64), 240, np.uint8)))  # nothing there


def test_white_corners_of_a_rotated_colour_cutout_are_neither_sky_nor_galaxy():
    rng = np.random.default_rng(4)
    flux = oblate(60, n=128, rs=9.0, angle=0.0)
    rgb = np.clip(np.stack([200 * flux, 170 * flux, 140 * flux], -1) + 10 + rng.normal(0, 3, (128, 128, 3)), 0, 254)
    clean = ar.axis_ratio_inclination(rgb.astype(np.uint8), galaxy_dark=False)
    y, x = np.mgrid[0:128, 0:128]
    corners = (x + y < 30) | (x - y > 100) | (y - x > 100) | (x + y > 225)
    rgb[corners] = 255  # pure white, as SDSS serves rotated cutouts
    cornered = rgb.astype(np.uint8)
    # the corners, and the few pixels of their edge that resampling would blur
    edge = ndimage.binary_dilation(corners, iterations=ar.FILL_EDGE_PX)
    np.testing.assert_array_equal(ar.fill_mask(cornered[..., 0]), edge)
    assert ar.axis_ratio_inclination(cornered, galaxy_dark=False) == pytest.approx(clean, abs=1.0)
    assert clean == pytest.approx(60, abs=3.0)


def test_hubble_formula_limits():
    assert ar.inclination_from_axis_ratio(0.15) == 90.0
    assert ar.inclination_from_axis_ratio(1.0) == pytest.approx(0.0)
    q = np.sqrt(np.cos(np.radians(60)) ** 2 * (1 - 0.04) + 0.04)
    assert ar.inclination_from_axis_ratio(q) == pytest.approx(60.0)
    np.testing.assert_array_equal(np.isnan(ar.inclination_from_axis_ratio([0.5, np.nan])), [False, True])


def test_bad_image_shapes_are_refused_naming_the_shape():
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        ar.measure_axis_ratio(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"\(8, 8, 3, 2\)"):
        ar.measure_axis_ratio(np.zeros((8, 8, 3, 2)))
