"""Stage 00, the field around the galaxy: foreground stars, background galaxies and contaminants.

Faint stars (r >= 16.5) and faint background galaxies are point-like light added to
the frame's `PointLight`; bright stars, including the labelled contaminating one,
are PSF stamps with diffraction spikes placed on the image through GalSim image
bounds; the contaminating neighbour galaxy is a GalSim disk + bulge drawn through
the PSF. Bright random stars are kept off the disk: overlaps are only the
labelled contamination of the catalog.
"""

from __future__ import annotations

import math

import galsim
import numpy as np

from .simulate_galaxy import Geometry
from .simulate_observe import BANDS, E_PER_NMGY, GSPARAMS, PIXEL_SCALE, Frame, PointLight, band_flux, mag_to_nmgy

STAR_FAINT_MAG = 22.5           # star counts dN/dm ~ 10^(0.25 m) up to this r magnitude
STAR_STAMP_MAG = 16.5           # brighter stars are drawn as stamps, fainter ones as points
STAR_OFF_DISK_MAG = 18.0        # random stars brighter than this are moved off the disk
SPIKE_MAG = 15.0                # brighter stars show diffraction spikes ...
SPIKE_FLUX_FRACTION = 0.006     # ... holding this fraction of their flux
BG_MAG_RANGE = (17.5, 22.5)     # background galaxies, counts dN/dm ~ 10^(0.45 m)
BG_E_PER_PARTICLE = 100.0       # background galaxies are clouds of ~100 e- particles


def star_colours(rng, n, bright=False):
    """Colours on the SDSS stellar locus: halo turn-off stars, disk dwarfs, M dwarfs."""
    kind = rng.uniform(size=n)
    gr = np.where(kind < 0.55, rng.normal(0.45, 0.12, n),
                  np.where(kind < 0.8, rng.uniform(0.6, 1.3, n), rng.uniform(1.35, 1.55, n)))
    ri = np.where(kind < 0.8, 0.37 * gr - 0.03 + rng.normal(0, 0.04, n), rng.uniform(0.6, 1.6, n))
    if bright:   # bright foreground stars are mostly F/G/K dwarfs
        gr, ri = np.clip(gr, 0.2, 1.2), np.clip(ri, 0.05, 0.5)
    return gr, ri


def add_faint_sources(points: PointLight, p, geo: Geometry, frame: Frame, rng) -> list[tuple]:
    """Add faint foreground stars and background galaxies to `points`; return the bright
    stars to stamp, as (x, y) arcsec from the centre, r magnitude, g-r, r-i."""
    bright = _foreground_stars(points, p, geo, frame, rng)
    _background_galaxies(points, p, geo, frame, rng)
    return bright


def _foreground_stars(points: PointLight, p, geo: Geometry, frame: Frame, rng) -> list[tuple]:
    field, r25 = geo.field, geo.r25
    n_star = rng.poisson(p["star_density"] * (field / 60.0) ** 2)
    m_star = STAR_FAINT_MAG + np.log10(rng.uniform(1e-4, 1.0, n_star)) / 0.25
    xs = rng.uniform(-field / 2, field / 2, n_star)
    ys = rng.uniform(-field / 2, field / 2, n_star)
    on_disk = (xs / r25) ** 2 + (ys / (r25 * max(geo.cos_i, 0.3))) ** 2 < 1.5 ** 2
    move = (m_star < STAR_OFF_DISK_MAG) & on_disk
    xs[move] = np.where(xs[move] >= 0, 1, -1) * rng.uniform(1.6 * r25, max(field / 2, 1.7 * r25), move.sum())
    gr, ri = star_colours(rng, n_star)
    faint = m_star >= STAR_STAMP_MAG
    points.add(xs[faint] / frame.scale + frame.c, ys[faint] / frame.scale + frame.c,
               band_flux(mag_to_nmgy(m_star[faint]), gr[faint], ri[faint]))
    return [(xs[k], ys[k], m_star[k], gr[k], ri[k]) for k in np.flatnonzero(~faint)]


def _background_galaxies(points: PointLight, p, geo: Geometry, frame: Frame, rng) -> None:
    """Faint background galaxies: Monte Carlo samples of exponential disks."""
    field, r25, cos_i = geo.field, geo.r25, geo.cos_i
    m_lo, m_hi = BG_MAG_RANGE
    for _ in range(rng.poisson(p["bg_density"] * (field / 60.0) ** 2)):
        m = m_hi + np.log10(rng.uniform(10 ** (-0.45 * (m_hi - m_lo)), 1.0)) / 0.45
        x0, y0 = rng.uniform(-field / 2, field / 2, 2)
        if m < 20 and (x0 / r25) ** 2 + (y0 / (r25 * max(cos_i, 0.3))) ** 2 < 1.0:
            continue     # a bright one on the disk would be an unlabelled neighbour
        hlr = 10 ** (-0.15 * (m - 20.0)) * rng.uniform(0.5, 1.3)
        q, beta = rng.uniform(0.2, 1.0), rng.uniform(0, np.pi)
        f = mag_to_nmgy(m)
        npts = int(np.clip(f * E_PER_NMGY["r"] / BG_E_PER_PARTICLE, 60, 1000))
        rr = rng.gamma(2.0, hlr / 1.678, npts)
        tt = rng.uniform(0, 2 * np.pi, npts)
        u, v = rr * np.cos(tt) / math.sqrt(q), rr * np.sin(tt) * math.sqrt(q)
        xb = x0 + u * math.cos(beta) - v * math.sin(beta)
        yb = y0 + u * math.sin(beta) + v * math.cos(beta)
        gr = rng.uniform(0.4, 1.3)
        points.add(xb / frame.scale + frame.c, yb / frame.scale + frame.c, band_flux(f / npts, gr, 0.45 * gr))


def add_bright_stars(canvas: np.ndarray, bright: list[tuple], p, geo: Geometry, frame: Frame, rng) -> None:
    """Stamp the bright stars, and the contaminating star of a 'star' galaxy, onto the
    (3, npix, npix) `canvas` (nmgy / pixel), clipped to the frame by GalSim bounds."""
    if p["contam"] == "star":
        ang, sep = math.radians(p["contam_angle"]), p["contam_sep"] * geo.r25
        gr, ri = star_colours(rng, 1, bright=True)
        bright = bright + [(sep * math.cos(ang), sep * math.sin(ang) * max(geo.cos_i, 0.35),
                            max(p["m_r"] + p["contam_dmag"], 9.0), gr[0], ri[0])]
    views = [frame.image(canvas[b_i]) for b_i in range(len(BANDS))]
    spike_angle = p["pa"] % 90.0       # CCD axes in the rotated cutout
    for x, y, m, gr, ri in bright:
        stamp = _star_stamp(x / frame.scale + frame.c, y / frame.scale + frame.c, m, spike_angle, frame)
        bounds = stamp.bounds & views[0].bounds
        if not bounds.isDefined():
            continue
        f = band_flux(mag_to_nmgy(m), gr, ri)
        for view, b in zip(views, BANDS):
            view[bounds] += stamp[bounds] * f[b]


def _star_stamp(x_img, y_img, m, spike_angle, frame: Frame) -> galsim.Image:
    """Unit-flux PSF stamp of a star of r magnitude `m` centred at pixel (x_img, y_img),
    wider for brighter stars, with spikes when brighter than SPIKE_MAG."""
    # at least a few pixels: a contaminating star can be fainter than STAR_STAMP_MAG
    half = max(4, int(min(frame.npix // 2, (12 + 20 * (STAR_STAMP_MAG - m)) * PIXEL_SCALE / frame.scale)))
    ix, iy = int(round(x_img)), int(round(y_img))
    stamp = galsim.ImageF(2 * half + 1, 2 * half + 1, scale=frame.scale)
    frame.psf.drawImage(image=stamp, offset=(x_img - ix, y_img - iy))
    if m < SPIKE_MAG:
        stamp += galsim.Image(_spikes(2 * half + 1, frame.fwhm_pix, spike_angle, SPIKE_FLUX_FRACTION))
    stamp.setCenter(ix, iy)
    return stamp


def _spikes(size, fwhm_pix, angle_deg, frac):
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


def neighbour_image(p, geo: Geometry, frame: Frame, rng):
    """The neighbour galaxy overlapping a 'neighbour' galaxy, else None: its image
    through the PSF (r flux, nmgy / pixel) and its (g, r, i) flux per unit r flux."""
    if p["contam"] != "neighbour":
        return None
    ang, sep = math.radians(p["contam_angle"]), p["contam_sep"] * geo.r25
    h_n = geo.h * rng.uniform(0.35, 0.8)
    disk = galsim.InclinedExponential(p["nb_inc"] * galsim.degrees, scale_radius=h_n, scale_height=0.2 * h_n,
                                      flux=1 - p["nb_bt"], gsparams=GSPARAMS)
    bulge = galsim.Sersic(n=2.0, half_light_radius=0.25 * h_n, flux=p["nb_bt"], gsparams=GSPARAMS)
    nb = galsim.Add([disk, bulge]).rotate(p["nb_pa"] * galsim.degrees)
    nb = nb.withFlux(p["nb_flux_ratio"] * mag_to_nmgy(p["m_r"]))
    image = frame.draw(nb.shift(sep * math.cos(ang), sep * math.sin(ang) * max(geo.cos_i, 0.5)))
    return image, band_flux(1.0, p["nb_gr"], 0.45 * p["nb_gr"])
