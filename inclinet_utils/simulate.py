"""Stage 00 (simulate): a synthetic SDSS-like spiral-galaxy sample in the real input format.

This module owns the default data source of the pipeline. It draws a population
of disk galaxies (thick inclined exponential disk, rounder Sersic bulge, optional
bar, log-spiral arms and star-forming knots, a midplane dust lane), renders them
with GalSim through an SDSS-like seeing PSF at the native SDSS pixel scale with
SDSS sky and Poisson noise, adds foreground stars, faint background galaxies and
(for some) an overlapping bright star or neighbour galaxy, and writes each galaxy
exactly as the real cutouts: ``pgc<ID>_d25x2_rot_{g,r,i}.png`` (512x512, 8-bit,
black galaxy on white sky, asinh stretch), ``pgc<ID>_d25x2_rot_gri.jpg`` (Lupton
asinh colour composite) and a pipe-delimited ``catalog.csv`` labelled by the
rules of :mod:`inclinet_utils.catalog`, with the true inclination in ``inc_true``.
"""

from __future__ import annotations

import io as _io
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import galsim
import numpy as np
import pandas as pd
import scipy.fft
import scipy.ndimage
from astropy.visualization import make_lupton_rgb
from PIL import Image
from tqdm import tqdm

from . import catalog as icat
from . import io as iio

# Seed salts: the parameter table and the per-galaxy render streams are independent.
SALT_PARAMS = 0x51A0
SALT_RENDER = 0x51A1

IMAGE_SIZE = 512                # every output image is IMAGE_SIZE x IMAGE_SIZE
PIXEL_SCALE = 0.396             # SDSS native pixel scale (arcsec/pixel)
MAX_RENDER_PIX = IMAGE_SIZE     # fields wider than this are drawn binned (coarser pixels)
BANDS = ("g", "r", "i")

# SDSS photometry (typical DR7/DR8 frames, 53.9 s drift scan). Fluxes are handled in
# nanomaggies (m = 22.5 - 2.5 log10 f); electrons per nanomaggy = gain / NMGYPERCOUNT.
E_PER_NMGY = {"g": 920.0, "r": 900.0, "i": 750.0}
SKY_MAG = {"g": 21.8, "r": 20.9, "i": 20.3}      # dark-sky brightness, mag/arcsec^2
READ_NOISE_E = 5.0                               # e- per native pixel
# r-band sky ~620 e-/pixel -> 1-sigma per-pixel surface brightness ~24.4 mag/arcsec^2.

FACE_ON_DEG = 35.0              # below this: fon 'F' and '[face_on]' (label 'F')
USABLE_MIN_DEG = 45.0           # below this: rejected for inclination work (label '0')
CONTAM_FRACTION = 0.13          # galaxies with an overlapping bright star or neighbour
SERSIC_N_GRID = np.arange(1.0, 4.01, 0.5)  # bulge indices (GalSim caches each n's tables)
# Colour composite weights (i, r, g) -> (R, G, B): a g-r ~ 0.5 disk looks white, the
# bulge orange and star-forming knots blue, as in the SDSS colour images.
RGB_WEIGHTS = {"g": 2.0, "r": 1.3, "i": 1.0}

# Catalog column order: the columns the labelling reads first, then what was drawn.
CATALOG_COLUMNS = [
    "pgc", "d25", "b_a", "pa", "inc", "inc_flg", "fon", "inc_note", "inc_true",
    "pa_img", "m_r", "g_r", "mu0_r", "h_arcsec", "hz_hr", "bt", "n_bulge", "re_arcsec",
    "bar", "arm_frac", "knot_frac", "n_arms", "dust_a", "psf_fwhm", "sky_r",
    "star_density", "trail", "contam", "contam_sep", "render_scale",
]


class SimulationError(ValueError):
    """A simulation argument is out of range."""


def _check_args(n_galaxies, seed, n_workers) -> None:
    if isinstance(n_galaxies, bool) or not isinstance(n_galaxies, (int, np.integer)) or n_galaxies < 1:
        raise SimulationError(f"n_galaxies={n_galaxies!r}; expected an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SimulationError(f"seed={seed!r}; expected an integer >= 0")
    if n_workers is not None and (isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer))
                                  or n_workers < 0):
        raise SimulationError(f"n_workers={n_workers!r}; expected None, 0 (all cores) or a positive integer")


# ---------------------------------------------------------------------------
# Population: every per-galaxy number that the catalog reports
# ---------------------------------------------------------------------------

def _mag_to_nmgy(m):
    return 10.0 ** (-0.4 * (np.asarray(m, dtype=float) - 22.5))


def draw_parameters(n: int, seed: int) -> pd.DataFrame:
    """Draw the physical parameters and catalog labels of `n` galaxies (no rendering).

    Deterministic in (n, seed). One row per galaxy; angles in degrees, sizes in
    arcsec unless named otherwise (``d25`` in arcmin), surface brightnesses in
    mag/arcsec^2, fluxes in nanomaggies.
    """
    _check_args(n, seed, None)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SALT_PARAMS]))
    p = pd.DataFrame(index=pd.RangeIndex(n))
    # Unique PGC-like IDs in the range of the real catalogue.
    p["pgc"] = (rng.choice(6_000_000, size=n, replace=False) + 1).astype(np.int64)

    # Random orientation in 3-D: cos(i) uniform, so P(i >= 45) = cos 45 = 71%.
    p["inc_true"] = np.degrees(np.arccos(rng.uniform(0.0, 1.0, n)))

    # Apparent size: log-normal around the ~1 arcmin galaxies of the real sample
    # (Cosmicflows-4 SDSS cutouts), 0.5-4 arcmin.
    p["d25"] = np.clip(10 ** rng.normal(np.log10(1.1), 0.2, n), 0.5, 4.0)
    # Face-on disk central surface brightness in r: Freeman-law disks (21.65 B ~ 20.7 r)
    # with ~0.8 mag scatter, from high to low surface brightness (R25 >= 1.5 h).
    p["mu0_r"] = np.clip(rng.normal(20.5, 0.8, n), 18.5, 22.5)
    p["gr_disk"] = rng.normal(0.50, 0.07, n)
    p["ri_disk"] = rng.normal(0.27, 0.04, n)
    p["gr_bulge"] = rng.normal(0.80, 0.05, n)   # old, red bulge and bar
    p["ri_bulge"] = rng.normal(0.40, 0.04, n)
    p["gr_knot"] = rng.normal(0.12, 0.10, n)    # young star-forming regions, blue
    p["ri_knot"] = rng.normal(0.00, 0.08, n)
    # D25 is the isophotal diameter at mu_B = 25; B from g, r with Jester et al. (2005).
    mu0_g = p["mu0_r"] + p["gr_disk"]
    mu0_b = mu0_g + 0.39 * p["gr_disk"] + 0.21
    r25 = p["d25"] * 30.0                        # arcsec
    p["h_arcsec"] = r25 / ((25.0 - mu0_b) / 1.0857)   # exponential: mu(R) = mu0 + 1.0857 R/h
    p["hz_hr"] = rng.uniform(0.10, 0.30, n)      # intrinsic thickness (scale height / length)

    # Bulge: B/T 0-0.6 peaking at ~0.15, Sersic n 1-4, Re ~ 0.1-0.45 h (Courteau+1996),
    # oblate with intrinsic flattening 0.55-0.85, so rounder than the disk when inclined.
    p["bt"] = 0.6 * rng.beta(1.3, 3.2, n)
    p["n_bulge"] = rng.choice(SERSIC_N_GRID, n)
    p["re_arcsec"] = p["h_arcsec"] * 10 ** rng.uniform(np.log10(0.12), np.log10(0.45), n)
    p["q0_bulge"] = rng.uniform(0.55, 0.85, n)
    # Bars in ~30% of disks (strong bars), flux taken from the disk.
    p["bar"] = rng.uniform(size=n) < 0.30
    p["bar_frac"] = np.where(p["bar"], rng.uniform(0.04, 0.12, n), 0.0)
    p["bar_len_h"] = rng.uniform(0.8, 1.8, n)
    p["bar_q"] = rng.uniform(0.25, 0.40, n)
    p["bar_angle"] = rng.uniform(0.0, 180.0, n)
    # Spiral structure: flocculent segments, or 2 (grand design), 3 or 4 arms; late
    # types (small B/T) have more light in arms and knots.
    late = np.clip(1.0 - 1.3 * p["bt"], 0.2, 1.0)
    p["n_arms"] = rng.choice([0, 2, 2, 2, 3, 4], n)    # 0 = flocculent
    p["pitch_deg"] = rng.uniform(10.0, 30.0, n)
    p["arm_frac"] = rng.uniform(0.12, 0.45, n) * late
    p["knot_frac"] = rng.uniform(0.01, 0.05, n) * late
    p["n_knots"] = rng.integers(10, 60, n)
    # Midplane dust lane, seen when the disk is inclined more than ~60 deg:
    # fraction of midplane light absorbed in r (g absorbs 1.35x, i 0.75x).
    p["dust_a"] = np.where(p["inc_true"] > 60.0,
                           rng.uniform(0.3, 0.7, n) * np.clip((p["inc_true"] - 60.0) / 25.0, 0, 1), 0.0)

    # Seeing: SDSS median ~1.4 arcsec, 1.0-2.0; slightly elliptical.
    p["psf_fwhm"] = np.clip(10 ** rng.normal(np.log10(1.4), 0.08, n), 1.0, 2.0)
    p["psf_g1"] = rng.normal(0, 0.02, n)
    p["psf_g2"] = rng.normal(0, 0.02, n)
    # Sky: moon, airmass and season change it by a few tenths of a magnitude.
    p["sky_dmag"] = rng.normal(0.0, 0.15, n)
    p["sky_r"] = SKY_MAG["r"] + p["sky_dmag"]
    # Stellar density (r < 22.5) from high galactic latitude to the plane.
    p["star_density"] = 10 ** rng.uniform(np.log10(1.0), np.log10(12.0), n)   # per arcmin^2
    p["bg_density"] = rng.uniform(0.5, 2.0, n)                                 # per arcmin^2
    p["trail"] = rng.uniform(size=n) < 0.04    # satellite / aircraft trail in one or two bands

    # Orientation: sky position angle (as in the real catalogue) and the residual
    # angle of the major axis in the rotated cutout (a few degrees at most).
    p["pa"] = rng.uniform(0.0, 180.0, n)
    p["pa_img"] = np.clip(rng.normal(0.0, 1.5, n), -4.0, 4.0)
    p["dx"] = rng.normal(0.0, 0.3, n)      # centring error, arcsec
    p["dy"] = rng.normal(0.0, 0.3, n)

    # Total r flux: disk 2 pi h^2 I0 plus bulge.
    disk_nmgy = 2 * np.pi * p["h_arcsec"] ** 2 * _mag_to_nmgy(p["mu0_r"])
    tot_nmgy = disk_nmgy / (1.0 - p["bt"])
    p["m_r"] = 22.5 - 2.5 * np.log10(tot_nmgy)
    p["g_r"] = -2.5 * np.log10(((1 - p["bt"]) * 10 ** (-0.4 * p["gr_disk"]) + p["bt"] * 10 ** (-0.4 * p["gr_bulge"])))

    # Contamination: a bright star or a neighbour galaxy overlapping the disk.
    u = rng.uniform(size=n)
    p["contam"] = np.where(u < CONTAM_FRACTION / 2, "star", np.where(u < CONTAM_FRACTION, "neighbour", ""))
    p["contam_sep"] = np.where(p["contam"] != "", rng.uniform(0.15, 1.3, n), np.nan)   # in units of R25
    p["contam_angle"] = rng.uniform(0.0, 360.0, n)
    # star: magnitude relative to the galaxy; neighbour: r-flux ratio and shape.
    p["contam_dmag"] = rng.uniform(-2.0, 2.0, n)
    p["nb_flux_ratio"] = 10 ** rng.uniform(np.log10(0.15), np.log10(0.9), n)
    p["nb_inc"] = np.degrees(np.arccos(rng.uniform(0.0, 1.0, n)))
    p["nb_pa"] = rng.uniform(0.0, 180.0, n)
    p["nb_gr"] = rng.uniform(0.45, 0.95, n)
    p["nb_bt"] = rng.uniform(0.0, 0.5, n)
    # Rejected when the contaminant sits on the disk (inside ~0.8 R25) and is not faint.
    p["contam_rejected"] = (p["contam"] != "") & (p["contam_sep"] < 0.8) & (
        (p["contam"] == "neighbour") | (p["contam_dmag"] < 1.0))

    _add_labels(p)
    return p


def _add_labels(p: pd.DataFrame) -> None:
    """Catalog flags as the real catalogue sets them (see catalog.galaxy_label)."""
    inc_true = p["inc_true"].to_numpy()
    face_on = inc_true < FACE_ON_DEG
    low = inc_true < USABLE_MIN_DEG
    rejected = p["contam_rejected"].to_numpy()
    notes, fon = [], []
    for k in range(len(p)):
        tags = []
        kind = p["contam"].iat[k]
        if kind == "star":
            tags.append("[star]" if rejected[k] else "[star?]")
        elif kind == "neighbour":
            tags.append("[merger] [multiple]" if rejected[k] and p["contam_sep"].iat[k] < 0.4
                        else "[multiple]" if rejected[k] else "[multiple?]")
        if face_on[k]:
            tags.append("[face_on]")
        elif low[k]:
            tags.append("[low_inc]")
        notes.append(" ".join(tags))
        fon.append("F" if face_on[k] else "")
    flg = (low | rejected).astype(np.int64)
    p["inc_flg"] = flg
    p["inc"] = np.where(flg > 0, 0, np.rint(inc_true)).astype(np.int64)
    p["fon"] = fon
    p["inc_note"] = notes


# ---------------------------------------------------------------------------
# Rendering one galaxy
# ---------------------------------------------------------------------------

@dataclass
class RenderedGalaxy:
    """Images of one galaxy: 8-bit outputs plus the noisy native-scale bands."""
    gray: dict          # band -> (512, 512) uint8, black galaxy on white sky
    rgb: np.ndarray     # (512, 512, 3) uint8, white on black
    native: dict        # band -> noisy sky-subtracted image, nanomaggies / pixel
    scale: float        # arcsec / pixel of `native`
    b_a: float          # axis ratio measured on the r image (NaN if it failed)


def _band_flux(f_r, gr, ri):
    """(g, r, i) fluxes of a component from its r flux and colours g-r, r-i."""
    return {"g": f_r * 10 ** (-0.4 * gr), "r": f_r, "i": f_r * 10 ** (0.4 * ri)}


class _PointLight:
    """Light convolved with the PSF in one FFT per band: arm particles, knots, faint
    stars and background galaxies, as pixel positions with (g, r, i) fluxes."""

    def __init__(self):
        self.x, self.y, self.w = [], [], []

    def add(self, x_pix, y_pix, flux):
        x_pix = np.atleast_1d(np.asarray(x_pix, dtype=np.float64))
        n = x_pix.size
        self.x.append(x_pix)
        self.y.append(np.atleast_1d(np.asarray(y_pix, dtype=np.float64)))
        self.w.append(np.stack([np.broadcast_to(np.asarray(flux[b], dtype=np.float64), (n,)) for b in BANDS]))

    def deposit(self, npix):
        """Cloud-in-cell deposit onto a (3, npix, npix) grid with one bincount."""
        if not self.x:
            return np.zeros((3, npix, npix))
        x, y, w = np.concatenate(self.x), np.concatenate(self.y), np.concatenate(self.w, axis=1)
        x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
        fx, fy = x - x0, y - y0
        idx, wts = [], []
        for dx, dy, cw in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                           (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            xi, yi = x0 + dx, y0 + dy
            ok = (xi >= 0) & (xi < npix) & (yi >= 0) & (yi < npix)
            flat = yi[ok] * npix + xi[ok]
            for b in range(3):
                idx.append(flat + b * npix * npix)
                wts.append(w[b, ok] * cw[ok])
        grid = np.bincount(np.concatenate(idx), weights=np.concatenate(wts), minlength=3 * npix * npix)
        return grid.reshape(3, npix, npix)


def _fft_convolve_same(images, kernel):
    """Convolve each (ny, nx) image of `images` with an odd-sized kernel, same size out."""
    _, ny, nx = images.shape
    ky, kx = kernel.shape
    sy = scipy.fft.next_fast_len(ny + ky - 1, real=True)
    sx = scipy.fft.next_fast_len(nx + kx - 1, real=True)
    kf = scipy.fft.rfft2(kernel, s=(sy, sx))
    out = scipy.fft.irfft2(scipy.fft.rfft2(images, s=(sy, sx), axes=(1, 2)) * kf, s=(sy, sx), axes=(1, 2))
    oy, ox = ky // 2, kx // 2
    return out[:, oy:oy + ny, ox:ox + nx]


def _add_stamp(image, stamp, x0, y0):
    """Add `stamp` into `image` with its [0, 0] pixel at (x0, y0), clipped to the image."""
    ny, nx = image.shape
    sy, sx = stamp.shape
    xa, ya = max(x0, 0), max(y0, 0)
    xb, yb = min(x0 + sx, nx), min(y0 + sy, ny)
    if xa < xb and ya < yb:
        image[ya:yb, xa:xb] += stamp[ya - y0:yb - y0, xa - x0:xb - x0]


def _spike_stamp(size, fwhm_pix, angle_deg, frac):
    """Four diffraction spikes of the secondary-mirror vanes, total `frac` of a unit-flux star."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - np.float32(c)
    out = np.zeros((size, size), dtype=np.float32)
    w = max(0.35 * fwhm_pix, 0.7)
    d0 = 2.0 * fwhm_pix
    for k in range(2):          # two vane directions, each gives a spike on both sides
        a = math.radians(angle_deg + 90 * k)
        along = np.abs(xx * math.cos(a) + yy * math.sin(a))
        perp = -xx * math.sin(a) + yy * math.cos(a)
        out += (1 + along / d0) ** -2 * np.exp(-along / (8 * d0) - 0.5 * (perp / w) ** 2)
    return out * (frac / (4 * d0 * math.sqrt(2 * math.pi) * w))


def _star_colours(rng, n, bright=False):
    """Colours on the SDSS stellar locus: halo turn-off stars, disk dwarfs, M dwarfs."""
    kind = rng.uniform(size=n)
    gr = np.where(kind < 0.55, rng.normal(0.45, 0.12, n),
                  np.where(kind < 0.8, rng.uniform(0.6, 1.3, n), rng.uniform(1.35, 1.55, n)))
    ri = np.where(kind < 0.8, 0.37 * gr - 0.03 + rng.normal(0, 0.04, n), rng.uniform(0.6, 1.6, n))
    if bright:   # bright foreground stars are mostly F/G/K dwarfs
        gr, ri = np.clip(gr, 0.2, 1.2), np.clip(ri, 0.05, 0.5)
    return gr, ri


def _spiral_structure(p, rng, h):
    """In-plane positions (x, y) of arm particles and of star-forming knots with weights.

    Log-spiral arms (2-4, or flocculent segments) starting at the bar ends or
    inside the disk, with wiggles and a spread in width; knots are HII complexes,
    mostly on the arms, with the HII-region luminosity function dN/dL ~ L^-2.
    """
    n_arms = int(p["n_arms"])
    if p["bar"]:
        r_in, phase0 = p["bar_len_h"] * h, math.radians(p["bar_angle"])
    else:
        r_in, phase0 = rng.uniform(0.3, 0.9) * h, rng.uniform(0, 2 * np.pi)
    tan_pitch = math.tan(math.radians(p["pitch_deg"]))
    n_seg = n_arms if n_arms > 0 else 12
    seg_phase = phase0 + 2 * np.pi * np.arange(n_seg) / n_seg
    if n_arms == 0:   # flocculent: short arm segments at random phases and radii
        seg_phase = rng.uniform(0, 2 * np.pi, n_seg)
        seg_r = r_in + rng.gamma(2.0, 0.8 * h, n_seg)
        seg_len = rng.uniform(0.6, 1.4, n_seg) * h
    wig_amp = rng.uniform(0.05, 0.25, n_seg)
    wig_len = rng.uniform(0.8, 2.0, n_seg) * h
    wig_phase = rng.uniform(0, 2 * np.pi, n_seg)
    width = rng.uniform(0.15, 0.35) * h

    def along_arms(n_pts, scatter):
        k = rng.integers(0, n_seg, n_pts)
        if n_arms == 0:
            r = seg_r[k] + rng.uniform(-0.5, 0.5, n_pts) * seg_len[k]
        else:
            r = r_in + rng.gamma(2.0, 0.8 * h, n_pts)
        r = np.clip(r, 0.5 * r_in, 4.5 * h)
        theta = (seg_phase[k] + np.log(r / r_in) / tan_pitch
                 + wig_amp[k] * np.sin(2 * np.pi * r / wig_len[k] + wig_phase[k]))
        s = scatter * np.sqrt(np.clip(r / h, 0.3, 3.0))   # arms widen outwards
        return r * np.cos(theta) + rng.normal(0, 1, n_pts) * s, r * np.sin(theta) + rng.normal(0, 1, n_pts) * s

    # Enough particles that their discreteness is far below the sky noise.
    ax, ay = along_arms(12000, width)
    aw = np.full(ax.size, 1.0 / ax.size)

    nk = int(p["n_knots"])
    n_on = int(round(0.7 * nk))
    kx1, ky1 = along_arms(n_on, 0.4 * width)
    rr = rng.gamma(2.0, h, nk - n_on)
    tt = rng.uniform(0, 2 * np.pi, rr.size)
    kx = np.concatenate([kx1, rr * np.cos(tt)])
    ky = np.concatenate([ky1, rr * np.sin(tt)])
    lum = 1.0 / rng.uniform(1.0 / 10.0, 1.0, kx.size)      # L from 1 to 10 x the faintest
    # Each knot is a small cluster of particles (HII complexes of a few hundred pc).
    n_sub = 8
    size = rng.uniform(0.4, 1.2, kx.size)
    kx = (kx[:, None] + rng.normal(0, 1, (kx.size, n_sub)) * size[:, None]).ravel()
    ky = (ky[:, None] + rng.normal(0, 1, (ky.size, n_sub)) * size[:, None]).ravel()
    kw = np.repeat(lum / max(lum.sum(), 1e-30) / n_sub, n_sub)
    return (ax, ay, aw), (kx, ky, kw)


def render_galaxy(params: Mapping, seed) -> RenderedGalaxy:
    """Render one galaxy of `draw_parameters` in g, r, i and make its output images.

    `seed` is an int or a numpy SeedSequence; the result depends only on
    (params, seed), so any worker can render any galaxy.
    """
    p = dict(params)
    rng = np.random.default_rng(seed)
    field = 2.0 * p["d25"] * 60.0                  # cutout side: twice D25, arcsec
    npix, scale = _render_grid(p["d25"])
    c = (npix - 1) / 2.0                           # GalSim's true centre in 0-based pixels
    inc = math.radians(p["inc_true"])
    cos_i, sin_i = math.cos(inc), math.sin(inc)
    h = p["h_arcsec"]
    hz = p["hz_hr"] * h
    r25 = p["d25"] * 30.0
    rot = galsim.Angle(p["pa_img"], galsim.degrees)
    gsp = galsim.GSParams(maximum_fft_size=8192)
    psf = galsim.Kolmogorov(fwhm=p["psf_fwhm"], gsparams=gsp).shear(g1=p["psf_g1"], g2=p["psf_g2"])
    fwhm_pix = p["psf_fwhm"] / scale
    centre = galsim.PositionD(p["dx"], p["dy"])

    def draw(obj):
        img = galsim.ImageF(npix, npix, scale=scale)
        galsim.Convolve(obj, psf, gsparams=gsp).drawImage(image=img)
        return img.array                     # float32

    # --- fluxes (nanomaggies) of the components ----------------------------------------
    disk_total_r = 2 * np.pi * h ** 2 * _mag_to_nmgy(p["mu0_r"])
    bulge_r = disk_total_r * p["bt"] / (1.0 - p["bt"])
    bar_r = disk_total_r * p["bar_frac"]
    arm_r = disk_total_r * p["arm_frac"]
    knot_r = disk_total_r * p["knot_frac"]
    f_disk = _band_flux(disk_total_r - bar_r - arm_r - knot_r, p["gr_disk"], p["ri_disk"])
    f_old = _band_flux(1.0, p["gr_bulge"], p["ri_bulge"])          # per unit r flux
    f_arm = _band_flux(arm_r, p["gr_disk"] - 0.2, p["ri_disk"] - 0.1)
    f_knot = _band_flux(knot_r, p["gr_knot"], p["ri_knot"])
    lane_frac = {"g": min(1.35 * p["dust_a"], 0.9), "r": p["dust_a"], "i": 0.75 * p["dust_a"]}

    # --- smooth components: each drawn once at unit colour with GalSim ------------------
    disk = galsim.InclinedExponential(inc * galsim.radians, scale_radius=h, scale_height=hz, gsparams=gsp)
    disk_img = draw(disk.rotate(rot).shift(centre))
    old_img = None
    if bulge_r + bar_r > 0:
        parts = []
        if bulge_r > 0:
            # Oblate spheroid of intrinsic flattening q0 seen at inclination i.
            q_b = math.sqrt(cos_i ** 2 + (p["q0_bulge"] * sin_i) ** 2)
            parts.append(galsim.Sersic(n=float(p["n_bulge"]), half_light_radius=p["re_arcsec"], flux=bulge_r,
                                       gsparams=gsp).shear(q=q_b, beta=0 * galsim.degrees))
        if bar_r > 0:
            # Bar in the disk plane at bar_angle, projected; vertically thick (boxy/peanut).
            bar = galsim.Sersic(n=0.6, half_light_radius=0.5 * p["bar_len_h"] * h, gsparams=gsp)
            bar = bar.shear(q=p["bar_q"], beta=p["bar_angle"] * galsim.degrees)
            q_proj = math.sqrt(cos_i ** 2 + (0.35 * sin_i) ** 2)
            parts.append(bar.transform(1.0, 0.0, 0.0, q_proj).withFlux(bar_r))
        old_img = draw(galsim.Add(parts).rotate(rot).shift(centre))
    lane_img = None
    if p["dust_a"] > 0:
        # Dust lane: a thin layer (0.4 x the stellar scale height) with the disk's radial
        # profile; subtracting it removes fraction dust_a of the light at the midplane.
        lane = galsim.InclinedExponential(inc * galsim.radians, scale_radius=h, scale_height=0.4 * hz,
                                          gsparams=gsp)
        lane_img = draw(lane.rotate(rot).shift(centre)) * 0.4

    # --- point-like light ---------------------------------------------------------------
    pts = _PointLight()
    cr, sr = math.cos(rot.rad), math.sin(rot.rad)

    def disk_to_pix(x, y, z_scale):
        # disk plane -> sky (inclined about the major axis x) -> rotated, centred pixels
        ys = y * cos_i + rng.laplace(0, z_scale, x.size) * sin_i
        return ((x * cr - ys * sr + p["dx"]) / scale + c, (x * sr + ys * cr + p["dy"]) / scale + c)

    (ax, ay, aw), (kx, ky, kw) = _spiral_structure(p, rng, h)
    pts.add(*disk_to_pix(ax, ay, 0.4 * hz), {b: aw * f_arm[b] for b in BANDS})
    pts.add(*disk_to_pix(kx, ky, 0.3 * hz), {b: kw * f_knot[b] for b in BANDS})

    # Foreground stars: counts dN/dm ~ 10^(0.25 m) to r = 22.5.
    area = (field / 60.0) ** 2
    n_star = rng.poisson(p["star_density"] * area)
    m_star = 22.5 + np.log10(rng.uniform(1e-4, 1.0, n_star)) / 0.25
    xs = rng.uniform(-field / 2, field / 2, n_star)
    ys = rng.uniform(-field / 2, field / 2, n_star)
    # Bright random stars are moved off the disk: overlaps are the labelled contamination.
    on_disk = (xs / r25) ** 2 + (ys / (r25 * max(cos_i, 0.3))) ** 2 < 1.5 ** 2
    move = (m_star < 18.0) & on_disk
    xs[move] = np.where(xs[move] >= 0, 1, -1) * rng.uniform(1.6 * r25, max(field / 2, 1.7 * r25), move.sum())
    star_gr, star_ri = _star_colours(rng, n_star)
    faint = m_star >= 16.5
    pts.add(xs[faint] / scale + c, ys[faint] / scale + c,
            _band_flux(_mag_to_nmgy(m_star[faint]), star_gr[faint], star_ri[faint]))
    bright = [(xs[k], ys[k], m_star[k], star_gr[k], star_ri[k]) for k in np.flatnonzero(~faint)]

    # Faint background galaxies (r 17.5-22.5), Monte Carlo samples of exponential disks.
    n_bg = rng.poisson(p["bg_density"] * area)
    for _ in range(n_bg):
        m = 22.5 + np.log10(rng.uniform(10 ** (-0.45 * 5.0), 1.0)) / 0.45
        x0, y0 = rng.uniform(-field / 2, field / 2, 2)
        if m < 20 and (x0 / r25) ** 2 + (y0 / (r25 * max(cos_i, 0.3))) ** 2 < 1.0:
            continue     # a bright one on the disk would be an unlabelled neighbour
        hlr = 10 ** (-0.15 * (m - 20.0)) * rng.uniform(0.5, 1.3)
        q, beta = rng.uniform(0.2, 1.0), rng.uniform(0, np.pi)
        f = _mag_to_nmgy(m)
        npts = int(np.clip(f * E_PER_NMGY["r"] / 100.0, 60, 1000))   # ~100 e- per particle
        rr = rng.gamma(2.0, hlr / 1.678, npts)
        tt = rng.uniform(0, 2 * np.pi, npts)
        u, v = rr * np.cos(tt) / math.sqrt(q), rr * np.sin(tt) * math.sqrt(q)
        xb = x0 + u * math.cos(beta) - v * math.sin(beta)
        yb = y0 + u * math.sin(beta) + v * math.cos(beta)
        gr = rng.uniform(0.4, 1.3)
        pts.add(xb / scale + c, yb / scale + c, _band_flux(f / npts, gr, 0.45 * gr))

    points = pts.deposit(npix)
    kn = int(min(2 * math.ceil(6 * fwhm_pix) + 1, 2 * (npix // 2) - 1))
    kernel = psf.drawImage(nx=kn, ny=kn, scale=scale).array
    points = _fft_convolve_same(points.astype(np.float32), kernel)   # PSF and pixel response

    # --- bright stars (foreground, and the contaminating one): stamps with spikes ---------
    ang = math.radians(p["contam_angle"])
    if p["contam"] == "star":
        sep = p["contam_sep"] * r25
        gr, ri = _star_colours(rng, 1, bright=True)
        bright.append((sep * math.cos(ang), sep * math.sin(ang) * max(cos_i, 0.35),
                       max(p["m_r"] + p["contam_dmag"], 9.0), gr[0], ri[0]))
    spike_angle = p["pa"] % 90.0       # CCD axes in the rotated cutout
    for xs_, ys_, m, gr, ri in bright:
        f = _band_flux(_mag_to_nmgy(m), gr, ri)
        half = int(min(npix // 2, (12 + 20 * (16.5 - m)) * PIXEL_SCALE / scale))
        size = 2 * half + 1
        x_img, y_img = xs_ / scale + c, ys_ / scale + c
        ix, iy = int(round(x_img)), int(round(y_img))
        st = galsim.ImageF(size, size, scale=scale)
        psf.drawImage(image=st, offset=(x_img - ix, y_img - iy))
        stamp = st.array
        if m < 15.0:
            stamp = stamp + _spike_stamp(size, fwhm_pix, spike_angle, 0.006)
        for b_i, b in enumerate(BANDS):
            _add_stamp(points[b_i], stamp * f[b], ix - half, iy - half)

    nb_img = None
    if p["contam"] == "neighbour":
        sep = p["contam_sep"] * r25
        h_n = h * rng.uniform(0.35, 0.8)
        nb_disk = galsim.InclinedExponential(p["nb_inc"] * galsim.degrees, scale_radius=h_n,
                                             scale_height=0.2 * h_n, flux=1 - p["nb_bt"], gsparams=gsp)
        nb_bulge = galsim.Sersic(n=2.0, half_light_radius=0.25 * h_n, flux=p["nb_bt"], gsparams=gsp)
        nb = galsim.Add([nb_disk, nb_bulge]).rotate(p["nb_pa"] * galsim.degrees)
        nb = nb.withFlux(p["nb_flux_ratio"] * _mag_to_nmgy(p["m_r"]))
        nb_img = draw(nb.shift(sep * math.cos(ang), sep * math.sin(ang) * max(cos_i, 0.5)))
    f_nb = _band_flux(1.0, p["nb_gr"], 0.45 * p["nb_gr"])

    trail = _trail(rng, npix, fwhm_pix) if p["trail"] else None

    # --- per band: model + sky, Poisson and read noise, sky subtraction -------------------
    native = {}
    bin_area = (scale / PIXEL_SCALE) ** 2
    for b_i, b in enumerate(BANDS):
        e = E_PER_NMGY[b]
        sky = float(_mag_to_nmgy(SKY_MAG[b] + p["sky_dmag"]) * scale ** 2)     # nmgy / pixel
        model = points[b_i]                                                      # float32, nmgy / pixel
        model += np.float32(f_disk[b]) * disk_img
        if old_img is not None:
            model += np.float32(f_old[b]) * old_img
        if lane_img is not None:
            model -= np.float32(lane_frac[b] * f_disk[b]) * lane_img
        if nb_img is not None:
            model += np.float32(f_nb[b]) * nb_img
        if trail is not None and b in trail[0]:
            model += (trail[1] * sky).astype(np.float32)
        # Expected electrons (source + sky) -> Poisson counts, plus read noise; then
        # subtract the sky as the SDSS pipeline does.
        model += np.float32(sky)
        np.maximum(model, 0.0, out=model)
        model *= np.float32(e)
        counts = rng.poisson(model).astype(np.float32)
        counts += rng.standard_normal(counts.shape, dtype=np.float32) * np.float32(READ_NOISE_E * math.sqrt(bin_area))
        counts *= np.float32(1.0 / e)
        counts -= np.float32(sky)
        native[b] = counts

    b_a = _measure_axis_ratio(native["r"], scale, h, cos_i, r25)
    gray, rgb = _to_display(native, scale, rng)
    return RenderedGalaxy(gray=gray, rgb=rgb, native=native, scale=scale, b_a=b_a)


def _render_grid(d25_arcmin):
    """(pixels, arcsec/pixel) of the rendered field: native SDSS pixels, or binned
    ones when the 2 x D25 field is wider than MAX_RENDER_PIX native pixels."""
    field = 2.0 * d25_arcmin * 60.0
    n_native = int(round(field / PIXEL_SCALE))
    if n_native <= MAX_RENDER_PIX:
        return n_native, PIXEL_SCALE
    return MAX_RENDER_PIX, field / MAX_RENDER_PIX


def _trail(rng, npix, fwhm_pix):
    """A satellite or aircraft trail: a PSF-wide line seen in one or two bands only,
    because SDSS exposes g, r, i at different times. Amplitude in units of the sky."""
    bands = tuple(rng.choice(BANDS, size=rng.integers(1, 3), replace=False))
    a = rng.uniform(0, np.pi)
    x0, y0 = rng.uniform(0, npix, 2)
    yy, xx = np.mgrid[0:npix, 0:npix]
    d = np.abs((xx - x0) * math.sin(a) - (yy - y0) * math.cos(a))
    sigma = fwhm_pix / 2.355
    amp = rng.uniform(0.05, 0.3)
    return bands, amp * np.exp(-0.5 * (d / sigma) ** 2)


def _measure_axis_ratio(r_image, scale, h, cos_i, r25):
    """b/a from HSM adaptive moments of the noisy r image (isophotal moments if they fail).

    Tried on the central +-1.2 R25 (stars and neighbours further out cannot pull
    the iteration away), then on the whole cutout. `h` and `cos_i` only set
    the starting size of the weight function.
    """
    full = np.ascontiguousarray(r_image, dtype=np.float32)
    n = full.shape[0]
    half = int(min(n // 2, max(8, 1.2 * r25 / scale)))
    crops = [full[n // 2 - half:n // 2 + half, n // 2 - half:n // 2 + half], full]
    guess = max(1.5, h / scale * max(cos_i, 0.3) ** 0.5)
    for arr in crops:
        img = galsim.Image(np.ascontiguousarray(arr), scale=scale)
        try:
            res = galsim.hsm.FindAdaptiveMom(img, guess_sig=guess, guess_centroid=img.true_center, strict=False)
        except (galsim.GalSimError, RuntimeError, ValueError):
            continue
        if res.moments_status == 0 and np.isfinite(res.moments_sigma) and res.moments_sigma > 0:
            return float(res.observed_shape.q)
    return _isophotal_axis_ratio(full)


def _isophotal_axis_ratio(image, n_sigma=2.0):
    """Fallback b/a: second moments of the central connected region above an isophote.

    Adaptive moments diverge for low-surface-brightness disks whose weight
    function outgrows the 2 x D25 cutout; this isophotal estimate (smoothed image,
    `n_sigma` x sky noise) is what photometric catalogues quote. NaN if the centre
    is not above the isophote.
    """
    smooth = scipy.ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), 2.0)
    sub = smooth[::4, ::4]
    noise = 1.4826 * np.median(np.abs(sub - np.median(sub)))
    labels, _ = scipy.ndimage.label(smooth > n_sigma * noise)
    n = image.shape[0]
    centre_label = labels[n // 2, n // 2]
    if centre_label == 0:
        return float("nan")
    yy, xx = np.nonzero(labels == centre_label)
    if xx.size < 10:
        return float("nan")
    w = smooth[yy, xx]
    xm, ym = np.average(xx, weights=w), np.average(yy, weights=w)
    cxx = np.average((xx - xm) ** 2, weights=w)
    cyy = np.average((yy - ym) ** 2, weights=w)
    cxy = np.average((xx - xm) * (yy - ym), weights=w)
    eig = np.linalg.eigvalsh(np.array([[cxx, cxy], [cxy, cyy]]))
    return float(np.sqrt(max(eig[0], 0.0) / eig[1])) if eig[1] > 0 else float("nan")


def _resample(img, size=IMAGE_SIZE):
    """Resample a band to size x size (cubic), as the SDSS cutout service does; a new array."""
    if img.shape[0] == size:
        return np.array(img, dtype=np.float32)
    return np.array(Image.fromarray(np.asarray(img, dtype=np.float32), mode="F")
                    .resize((size, size), Image.BICUBIC), dtype=np.float32)


def _robust_sigma(x):
    """Noise from the median absolute deviation (sky pixels dominate every cutout)."""
    sub = x[::7, ::7]
    return float(1.4826 * np.median(np.abs(sub - np.median(sub)))) or 1e-12


def _asinh_softening(c, x_sat):
    """Softening s with s * asinh(x_sat / s) = c, so sky noise spans the chosen gray levels."""
    if x_sat <= c * 1.05:
        return 1e3 * x_sat        # faint galaxy: the stretch is essentially linear
    lo, hi = 1e-6 * c, 1e3 * x_sat
    for _ in range(50):           # s * asinh(x / s) increases with s: bisect in log s
        mid = math.sqrt(lo * hi)
        if mid * math.asinh(x_sat / mid) < c:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def _to_display(native, scale, rng):
    """8-bit products: an inverted asinh gray image per band, and the Lupton colour composite.

    Gray: sky at a light gray level with noise of ~8-12 gray levels and the galaxy core
    black, as the real cutouts. Colour: SDSS-like band weights (i, r, g) -> (R, G, B).
    """
    sky_level = rng.uniform(228.0, 242.0)
    noise_gl = rng.uniform(8.5, 12.0)
    sat_frac = 10 ** rng.uniform(np.log10(0.25), np.log10(2.5))   # > 1: core not saturated
    m = IMAGE_SIZE // 2
    gray = {}
    for b in BANDS:
        x = _resample(native[b])
        sigma = _robust_sigma(x)
        core = float(np.percentile(x[m - 6:m + 6, m - 6:m + 6], 75))
        x_sat = max(sat_frac * core, 15.0 * sigma)
        soft = _asinh_softening(sky_level * sigma / noise_gl, x_sat)
        # gray = sky_level * (1 - asinh(x / soft) / asinh(x_sat / soft)), in place (float32)
        x *= np.float32(1.0 / soft)
        np.arcsinh(x, out=x)
        x *= np.float32(-sky_level / math.asinh(x_sat / soft))
        x += np.float32(sky_level + 0.5)                  # + 0.5: round on the cast below
        np.clip(x, 0.0, 255.0, out=x)
        gray[b] = x.astype(np.uint8)
    # Colour at the rendered scale (surface brightness units), then resampled like the bands.
    sb = {b: native[b] * (RGB_WEIGHTS[b] / scale ** 2) for b in BANDS}
    sigma = np.mean([_robust_sigma(sb[b]) for b in BANDS])
    stretch = 255.0 * sigma / rng.uniform(10.0, 18.0)      # sky noise -> 10-18 levels
    with np.errstate(invalid="ignore", divide="ignore"):   # zero-intensity pixels
        rgb = make_lupton_rgb(sb["i"], sb["r"], sb["g"], stretch=stretch, Q=8.0)
    if rgb.shape[0] != IMAGE_SIZE:
        rgb = np.asarray(Image.fromarray(rgb, mode="RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC))
    return gray, rgb


# ---------------------------------------------------------------------------
# Files and the sample
# ---------------------------------------------------------------------------

def galaxy_file_names(pgc: int) -> dict[str, str]:
    """Output file names of one galaxy, by band ('g', 'r', 'i', 'gri')."""
    names = {b: f"pgc{int(pgc)}_d25x2_rot_{b}.png" for b in BANDS}
    names["gri"] = f"pgc{int(pgc)}_d25x2_rot_gri.jpg"
    return names


def png_gray_bytes(image: np.ndarray) -> bytes:
    """Encode a 2-D uint8 array as an 8-bit grayscale PNG (Pillow, fast compression:
    noisy skies barely compress, so higher levels only cost time)."""
    a = np.asarray(image)
    if a.ndim != 2 or a.dtype != np.uint8:
        raise ValueError(f"png_gray_bytes expects a 2-D uint8 array, got shape {a.shape} {a.dtype}")
    buf = _io.BytesIO()
    Image.fromarray(a, mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _encode(rendered: RenderedGalaxy) -> dict[str, bytes]:
    out = {b: png_gray_bytes(rendered.gray[b]) for b in BANDS}
    buf = _io.BytesIO()
    Image.fromarray(rendered.rgb, mode="RGB").save(buf, format="JPEG", quality=80)
    out["gri"] = buf.getvalue()
    return out


def _work(task):
    params, seed_seq, folder = task
    rendered = render_galaxy(params, seed_seq)
    names = galaxy_file_names(params["pgc"])
    for band, data in _encode(rendered).items():
        iio.write_bytes(Path(folder) / names[band], data)
    return int(params["pgc"]), rendered.b_a


def catalog_table(params: pd.DataFrame, b_a) -> pd.DataFrame:
    """The catalog written by stage 00 (column order CATALOG_COLUMNS)."""
    t = params.copy()
    t["b_a"] = np.asarray(b_a, dtype=float)
    t["bar"] = t["bar"].astype(int)
    t["trail"] = t["trail"].astype(int)
    t["contam"] = t["contam"].replace("", "none")
    t["render_scale"] = np.where(2 * t["d25"] * 60 / PIXEL_SCALE <= MAX_RENDER_PIX, PIXEL_SCALE,
                                 2 * t["d25"] * 60 / MAX_RENDER_PIX)
    for col in ("inc_true", "d25", "pa", "pa_img", "m_r", "g_r", "mu0_r", "h_arcsec", "hz_hr", "bt",
                "re_arcsec", "arm_frac", "knot_frac", "dust_a", "psf_fwhm", "sky_r", "star_density",
                "contam_sep", "render_scale", "b_a"):
        t[col] = t[col].astype(float).round(4)
    return t[CATALOG_COLUMNS].reset_index(drop=True)


def _resolve_workers(n_workers):
    cores = os.cpu_count() or 1
    if n_workers in (None, 0):
        return cores
    return int(n_workers)


def simulate_sample(out_dir, n_galaxies: int, seed: int, n_workers: int | None = None,
                    progress: bool = True) -> pd.DataFrame:
    """Render a synthetic sample into `out_dir` (which must not exist) and return its catalog.

    Writes ``out_dir/galaxies/pgc<ID>_d25x2_rot_{g,r,i}.png`` and ``..._gri.jpg``
    and ``out_dir/catalogs/catalog.csv``; the folder appears only when complete.
    `n_workers` None or 0 uses every core. The output is identical for any
    number of workers (each galaxy has its own seed from a SeedSequence).
    """
    _check_args(n_galaxies, seed, n_workers)
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; stage 00 writes a new folder (use a new run folder)")
    params = draw_parameters(int(n_galaxies), int(seed))
    seeds = np.random.SeedSequence([int(seed), SALT_RENDER]).spawn(len(params))
    workers = min(_resolve_workers(n_workers), len(params))
    records = params.to_dict("records")
    with iio.staged_dir(out_dir) as tmp:
        folder = tmp / "galaxies"
        folder.mkdir()
        tasks = [(rec, s, str(folder)) for rec, s in zip(records, seeds)]
        bar = tqdm(total=len(tasks), desc="00_simulate", unit="galaxy", disable=not progress)
        b_a = []
        try:
            if workers <= 1:
                for task in tasks:
                    b_a.append(_work(task)[1])
                    bar.update()
            else:
                with ProcessPoolExecutor(max_workers=workers) as pool:
                    for _, q in pool.map(_work, tasks, chunksize=2):
                        b_a.append(q)
                        bar.update()
        finally:
            bar.close()
        table = catalog_table(params, b_a)
        icat.write_catalog(table, tmp / "catalogs" / "catalog.csv")
    return table
