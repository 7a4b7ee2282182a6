"""Stage-00 instruments (presets.INSTRUMENTS, simulate_observe.Instrument): the default renders
bit for bit as before the instruments existed; another instrument changes grid, seeing and noise."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from inclinet_utils import config, simulate
from inclinet_utils import simulate_display as display
from inclinet_utils import simulate_observe as observe
from inclinet_utils.presets import INSTRUMENTS

# sha256[:16] of gray, native and colour images of three galaxies (seed 5), and of a 40-row
# catalog, written by the simulator before the instrument parameters (commit dbf9c18). Galaxy 15
# renders differently in the last bits on CPUs with and without AVX-512 (the SIMD paths of the
# FFTs and of NumPy differ); the second digest is dbf9c18's own on an AVX2-only CPU (2026-12-02).
# The composites' Lupton Q range has changed since (2-9 then, simulate_display.RGB_Q now): the
# test renders with the former range, so the digests also show that nothing else moved.
BEFORE = {15: {"d7b233905b0523d0", "03cfbd590ca4a633"}, 17: {"d418c81e577af10a"}, 5: {"60c6f3abe5834f5c"}}
CATALOG_BEFORE = "f537a31b9085a8a9"


def _digest(r) -> str:
    h = hashlib.sha256()
    for b in "gri":
        h.update(r.gray[b].tobytes())
        h.update(np.ascontiguousarray(r.native[b]).tobytes())
    h.update(r.rgb.tobytes())
    h.update(np.float64(r.scale).tobytes())
    return h.hexdigest()[:16]


def test_default_instrument_renders_bit_identically_to_before(monkeypatch):
    monkeypatch.setattr(display, "RGB_Q", (2.0, 9.0))
    p = simulate.draw_parameters(40, seed=5)
    table = simulate.catalog_table(p, np.zeros(len(p)))
    assert hashlib.sha256(table.to_csv().encode()).hexdigest()[:16] == CATALOG_BEFORE
    seeds = np.random.SeedSequence([5, simulate.SALT_RENDER]).spawn(len(p))
    for k, expected in BEFORE.items():
        assert _digest(simulate.render_galaxy(p.loc[k].to_dict(), seeds[k])) in expected
        assert _digest(simulate.render_galaxy(p.loc[k].to_dict(), seeds[k], "sdss")) in expected


def test_deep_instrument_has_finer_pixels_better_seeing_and_less_noise():
    sdss, deep = observe.instrument("sdss"), observe.instrument("deep")
    assert deep.pixel_scale < sdss.pixel_scale
    p_s, p_d = simulate.draw_parameters(200, seed=3), simulate.draw_parameters(200, seed=3, instrument="deep")
    assert p_d["psf_fwhm"].median() < 0.6 * p_s["psf_fwhm"].median()
    assert (p_s["inc_true"] == p_d["inc_true"]).all()  # the same galaxies, seen otherwise
    k = int(p_s["d25"].idxmin())
    r_s = simulate.render_galaxy(p_s.loc[k].to_dict(), 11, "sdss")
    r_d = simulate.render_galaxy(p_d.loc[k].to_dict(), 11, "deep")
    assert r_d.scale == pytest.approx(deep.pixel_scale) and r_s.scale == pytest.approx(sdss.pixel_scale)
    assert r_d.rgb.shape == r_s.rgb.shape == (observe.IMAGE_SIZE,) * 2 + (3,)
    # sky noise of one arcsec^2 of sky (nmgy): the deep survey reaches ~1 mag fainter
    noise = {n: np.std(r.native["r"][:8, :8]) / r.scale for n, r in (("sdss", r_s), ("deep", r_d))}
    assert noise["deep"] < 0.5 * noise["sdss"]


def test_instrument_is_a_validated_stage_00_parameter(tmp_path):
    assert config.RULES["instrument"].choices == tuple(INSTRUMENTS)
    param = config.Parameter("instrument", "str", "sdss", "", "00_simulate")
    assert config.check_value(param, "deep", "test") == "deep"
    with pytest.raises(config.ConfigError, match="--instrument hubble"):
        config.check_value(param, "hubble", "test")
    with pytest.raises(ValueError, match="instrument 'hubble'"):
        simulate.simulate_sample(tmp_path / "s", 1, seed=1, instrument="hubble")
    assert not (tmp_path / "s").exists()
