"""Stage 00, the population: the priors of the synthetic sample and the catalog labels they imply.

`draw_parameters` draws every per-galaxy number the renderer and the catalog use
from the distributions in `Priors` (one frozen dataclass; `PRIORS` holds the
defaults, so retuning one prior is a one-line change there). Labels follow the
rules of :mod:`inclinet_utils.catalog`: face-on below FACE_ON_DEG, rejected below
USABLE_MIN_DEG or when a contaminant sits on the disk, else the inclination.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .simulate_observe import SDSS, Instrument, mag_to_nmgy

SALT_PARAMS = 0x51A0            # seed salt of the parameter table (renders use their own)
FACE_ON_DEG = 35.0              # below this: fon 'F' and '[face_on]' (label 'F')
USABLE_MIN_DEG = 45.0           # below this: rejected for inclination work (label '0')
SERSIC_N_GRID = np.arange(1.0, 4.01, 0.5)  # bulge indices (GalSim caches each n's tables)


@dataclass(frozen=True)
class Priors:
    """Distributions of the population. (lo, hi) pairs are uniform ranges, (mean, sigma)
    pairs Gaussians, 'log' ranges log-uniform; magnitudes in r, sizes as named."""
    d25_arcmin: tuple = (1.1, 0.2, 0.5, 4.0)     # log-normal median, dex, clipped to [lo, hi]
    d25_true_dex: tuple = (0.04, 0.12)           # log10(true D25 / catalogue D25, which sets the cutout)
    d25_seen_q0: float = 0.2                     # axis ratio of edge-on disks in the seen D25
    mu0_r: tuple = (20.5, 0.8, 18.5, 22.5)       # face-on disk central SB (mag/arcsec^2), clipped
    gr_disk: tuple = (0.50, 0.07)
    ri_disk: tuple = (0.27, 0.04)
    gr_bulge: tuple = (0.80, 0.05)               # old, red bulge and bar
    ri_bulge: tuple = (0.40, 0.04)
    gr_knot: tuple = (0.12, 0.10)                # young star-forming regions, blue
    ri_knot: tuple = (0.00, 0.08)
    hz_hr: tuple = (0.10, 0.30)                  # thick disk: scale height / scale length
    bt_max: float = 0.6                          # B/T = bt_max * Beta(bt_beta)
    bt_beta: tuple = (1.3, 3.2)
    re_h_log: tuple = (0.12, 0.45)               # bulge Re / disk h
    q0_bulge: tuple = (0.55, 0.85)               # intrinsic bulge flattening
    bar_fraction: float = 0.30
    bar_flux: tuple = (0.04, 0.12)               # of the disk light
    n_arms_choices: tuple = (0, 2, 2, 2, 3, 4)   # 0 = flocculent
    pitch_deg: tuple = (10.0, 30.0)
    arm_frac: tuple = (0.12, 0.45)               # of the disk light, times the late-type factor
    knot_frac: tuple = (0.01, 0.05)
    n_knots: tuple = (10, 60)
    dust_a: tuple = (0.3, 0.7)                   # midplane absorption in r at i >= dust_full_deg
    dust_start_deg: float = 60.0
    dust_full_deg: float = 85.0
    psf_g: float = 0.02                          # PSF ellipticity sigma per component
    sky_dmag: float = 0.15                       # sky brightness scatter (mag)
    star_density_log: tuple = (0.4, 45.0)        # stars (r < 22.5) per arcmin^2
    bg_density: tuple = (0.5, 2.0)               # background galaxies per arcmin^2
    trail_fraction: float = 0.04                 # satellite / aircraft trails
    pa_img_sigma: float = 1.5                    # residual major-axis angle in the cutout (deg) ...
    pa_img_max: float = 4.0                      # ... clipped to +-this
    centring_arcsec: float = 0.3
    contam_fraction: float = 0.13                # bright star or neighbour overlapping (half each)
    contam_sep_r25: tuple = (0.15, 1.3)
    reject_sep_r25: float = 0.8                  # rejected when closer and not faint
    star_dmag: tuple = (-2.0, 2.0)               # contaminating star, relative to the galaxy
    nb_flux_log: tuple = (0.15, 0.9)             # neighbour / galaxy r flux


PRIORS = Priors()
CONTAM_FRACTION = PRIORS.contam_fraction


def draw_parameters(n: int, seed: int, priors: Priors = PRIORS, inst: Instrument = SDSS) -> pd.DataFrame:
    """Draw the physical parameters and catalog labels of `n` galaxies (no rendering).

    Deterministic in (n, seed, priors, inst); the instrument sets the seeing and sky. One row per galaxy; angles in degrees,
    sizes in arcsec unless named otherwise (``d25`` in arcmin), surface
    brightnesses in mag/arcsec^2, fluxes in nanomaggies. Arguments are checked by
    the caller (:func:`inclinet_utils.simulate.draw_parameters`).
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SALT_PARAMS]))
    p = pd.DataFrame(index=pd.RangeIndex(n))
    p["pgc"] = (rng.choice(6_000_000, size=n, replace=False) + 1).astype(np.int64)   # PGC-like IDs
    # Random orientation in 3-D: cos(i) uniform, so P(i >= 45) = cos 45 = 71%.
    p["inc_true"] = np.degrees(np.arccos(rng.uniform(0.0, 1.0, n)))
    _draw_disk(p, rng, priors)
    _draw_structure(p, rng, priors)
    _draw_observing(p, rng, priors, inst)
    # Total r flux (disk 2 pi h^2 I0 plus bulge) and colour.
    tot_nmgy = 2 * np.pi * p["h_arcsec"] ** 2 * mag_to_nmgy(p["mu0_r"]) / (1.0 - p["bt"])
    p["m_r"] = 22.5 - 2.5 * np.log10(tot_nmgy)
    p["g_r"] = -2.5 * np.log10(((1 - p["bt"]) * 10 ** (-0.4 * p["gr_disk"]) + p["bt"] * 10 ** (-0.4 * p["gr_bulge"])))
    _draw_contamination(p, rng, priors)
    _add_labels(p)
    return p


def _draw_disk(p: pd.DataFrame, rng, pr: Priors) -> None:
    """Apparent size, surface brightness, colours and thickness of the disks."""
    n = len(p)
    # Log-normal around the ~1 arcmin galaxies of the real sample (Cosmicflows-4 SDSS cutouts).
    med, dex, lo, hi = pr.d25_arcmin
    p["d25"] = np.clip(10 ** rng.normal(np.log10(med), dex, n), lo, hi)
    # Freeman-law disks (21.65 B ~ 20.7 r) with scatter, from high to low surface brightness.
    mean, sigma, lo, hi = pr.mu0_r
    p["mu0_r"] = np.clip(rng.normal(mean, sigma, n), lo, hi)
    for col in ("gr_disk", "ri_disk", "gr_bulge", "ri_bulge", "gr_knot", "ri_knot"):
        p[col] = rng.normal(*getattr(pr, col), n)
    # D25 is the isophotal diameter at mu_B = 25; B from g, r with Jester et al. (2005).
    mu0_b = p["mu0_r"] + p["gr_disk"] + 0.39 * p["gr_disk"] + 0.21
    # D25 as seen: an inclined (transparent) disk is brighter by 1 / its axis ratio, and
    # the catalogue's D25, which sets the cutout, scatters about the true one (realism report).
    q_seen = np.sqrt(np.cos(np.radians(p["inc_true"])) ** 2 + pr.d25_seen_q0 ** 2)
    r25_true = p["d25"] * 30.0 * 10 ** rng.normal(*pr.d25_true_dex, n)
    p["h_arcsec"] = r25_true / ((25.0 - mu0_b - 2.5 * np.log10(q_seen)) / 1.0857)   # mu(R) = mu0 + 1.0857 R/h
    p["hz_hr"] = rng.uniform(*pr.hz_hr, n)


def _draw_structure(p: pd.DataFrame, rng, pr: Priors) -> None:
    """Bulge, bar, spiral arms, knots and the dust lane."""
    n = len(p)
    # Bulge: B/T peaking at ~0.15, Sersic n 1-4, Re ~ 0.1-0.45 h (Courteau+1996), oblate,
    # so rounder than the disk when inclined.
    p["bt"] = pr.bt_max * rng.beta(*pr.bt_beta, n)
    p["n_bulge"] = rng.choice(SERSIC_N_GRID, n)
    p["re_arcsec"] = p["h_arcsec"] * 10 ** rng.uniform(*np.log10(pr.re_h_log), n)
    p["q0_bulge"] = rng.uniform(*pr.q0_bulge, n)
    # Strong bars, flux taken from the disk.
    p["bar"] = rng.uniform(size=n) < pr.bar_fraction
    p["bar_frac"] = np.where(p["bar"], rng.uniform(*pr.bar_flux, n), 0.0)
    p["bar_len_h"] = rng.uniform(0.8, 1.8, n)
    p["bar_q"] = rng.uniform(0.25, 0.40, n)
    p["bar_angle"] = rng.uniform(0.0, 180.0, n)
    # Late types (small B/T) have more light in arms and knots.
    late = np.clip(1.0 - 1.3 * p["bt"], 0.2, 1.0)
    p["n_arms"] = rng.choice(list(pr.n_arms_choices), n)
    p["pitch_deg"] = rng.uniform(*pr.pitch_deg, n)
    p["arm_frac"] = rng.uniform(*pr.arm_frac, n) * late
    p["knot_frac"] = rng.uniform(*pr.knot_frac, n) * late
    p["n_knots"] = rng.integers(*pr.n_knots, n)
    # Midplane dust lane of inclined disks: fraction of midplane light absorbed in r
    # (g absorbs 1.35x, i 0.75x).
    ramp = np.clip((p["inc_true"] - pr.dust_start_deg) / (pr.dust_full_deg - pr.dust_start_deg), 0, 1)
    p["dust_a"] = np.where(p["inc_true"] > pr.dust_start_deg, rng.uniform(*pr.dust_a, n) * ramp, 0.0)


def _draw_observing(p: pd.DataFrame, rng, pr: Priors, inst: Instrument) -> None:
    """Seeing (the instrument's), sky, field crowding, trails and the orientation in the cutout."""
    n = len(p)
    med, dex, lo, hi = inst.psf_fwhm
    p["psf_fwhm"] = np.clip(10 ** rng.normal(np.log10(med), dex, n), lo, hi)
    p["psf_g1"] = rng.normal(0, pr.psf_g, n)
    p["psf_g2"] = rng.normal(0, pr.psf_g, n)
    # Moon, airmass and season change the sky by a few tenths of a magnitude.
    p["sky_dmag"] = rng.normal(0.0, pr.sky_dmag, n)
    p["sky_r"] = inst.sky_mag["r"] + p["sky_dmag"]
    # Stellar density from high galactic latitude to the plane.
    p["star_density"] = 10 ** rng.uniform(*np.log10(pr.star_density_log), n)
    p["bg_density"] = rng.uniform(*pr.bg_density, n)
    p["trail"] = rng.uniform(size=n) < pr.trail_fraction   # in one or two bands
    # Sky position angle (as in the real catalogue) and the residual angle of the major
    # axis in the rotated cutout; centring error.
    p["pa"] = rng.uniform(0.0, 180.0, n)
    p["pa_img"] = np.clip(rng.normal(0.0, pr.pa_img_sigma, n), -pr.pa_img_max, pr.pa_img_max)
    p["dx"] = rng.normal(0.0, pr.centring_arcsec, n)
    p["dy"] = rng.normal(0.0, pr.centring_arcsec, n)


def _draw_contamination(p: pd.DataFrame, rng, pr: Priors) -> None:
    """A bright star or a neighbour galaxy overlapping the disk; rejected when it sits on
    the disk (inside reject_sep_r25) and is not faint."""
    n = len(p)
    u = rng.uniform(size=n)
    p["contam"] = np.where(u < pr.contam_fraction / 2, "star", np.where(u < pr.contam_fraction, "neighbour", ""))
    p["contam_sep"] = np.where(p["contam"] != "", rng.uniform(*pr.contam_sep_r25, n), np.nan)   # R25 units
    p["contam_angle"] = rng.uniform(0.0, 360.0, n)
    # star: magnitude relative to the galaxy; neighbour: r-flux ratio and shape.
    p["contam_dmag"] = rng.uniform(*pr.star_dmag, n)
    p["nb_flux_ratio"] = 10 ** rng.uniform(*np.log10(pr.nb_flux_log), n)
    p["nb_inc"] = np.degrees(np.arccos(rng.uniform(0.0, 1.0, n)))
    p["nb_pa"] = rng.uniform(0.0, 180.0, n)
    p["nb_gr"] = rng.uniform(0.45, 0.95, n)
    p["nb_bt"] = rng.uniform(0.0, 0.5, n)
    p["contam_rejected"] = (p["contam"] != "") & (p["contam_sep"] < pr.reject_sep_r25) & (
        (p["contam"] == "neighbour") | (p["contam_dmag"] < 1.0))


def _add_labels(p: pd.DataFrame) -> None:
    """Catalog flags as the real catalogue sets them (see catalog.galaxy_label)."""
    inc_true = p["inc_true"].to_numpy()
    face_on = inc_true < FACE_ON_DEG
    low = inc_true < USABLE_MIN_DEG
    rejected = p["contam_rejected"].to_numpy()
    notes = [_note(p["contam"].iat[k], rejected[k], p["contam_sep"].iat[k], face_on[k], low[k])
             for k in range(len(p))]
    flg = (low | rejected).astype(np.int64)
    p["inc_flg"] = flg
    p["inc"] = np.where(flg > 0, 0, np.rint(inc_true)).astype(np.int64)
    p["fon"] = ["F" if f else "" for f in face_on]
    p["inc_note"] = notes


def _note(kind: str, rejected: bool, sep: float, face_on: bool, low: bool) -> str:
    """The catalogue's inc_note tags of one galaxy."""
    tags = []
    if kind == "star":
        tags.append("[star]" if rejected else "[star?]")
    elif kind == "neighbour":
        tags.append("[merger] [multiple]" if rejected and sep < 0.4 else "[multiple]" if rejected else "[multiple?]")
    if face_on:
        tags.append("[face_on]")
    elif low:
        tags.append("[low_inc]")
    return " ".join(tags)
