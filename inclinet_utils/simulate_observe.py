"""Stage 00, observing: how an instrument (SDSS by default) sees a synthetic galaxy (grid, seeing PSF, sky and noise).

The camera side of :mod:`inclinet_utils.simulate`: the `Instrument` (pixel scale, seeing,
depth, sky, read noise, composite colours; named ones in `presets.INSTRUMENTS`), the
pixel grid of a 2 x D25 cutout (`Frame`), the Kolmogorov seeing PSF that every
component is drawn through, the point-like light (arm particles, knots, faint
stars, background galaxies) convolved with that PSF in one FFT per band, satellite
trails, and the sky with its Poisson and read noise (``galsim.CCDNoise``), after
which the sky is subtracted as the SDSS pipeline does. Fluxes are nanomaggies
(m = 22.5 - 2.5 log10 f).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import galsim
import numpy as np
import scipy.fft

from .presets import INSTRUMENTS

IMAGE_SIZE = 512                # every output image is IMAGE_SIZE x IMAGE_SIZE
BANDS = ("g", "r", "i")


@dataclass(frozen=True)
class Instrument:
    """How a telescope and camera see the sample: the named instruments are in
    `inclinet_utils.presets.INSTRUMENTS` ("sdss" is the default).

    pixel_scale: native arcsec / pixel; psf_fwhm: seeing (arcsec) as a log-normal
    (median, dex, lo, hi); e_per_nmgy: electrons per nanomaggy per band (gain / NMGYPERCOUNT,
    i.e. the depth of an exposure); sky_mag: dark-sky brightness (mag/arcsec^2);
    read_noise_e: e- per native pixel; rgb_weights: g, r, i weights of the colour composite;
    max_render_pix: fields wider than this many native pixels are drawn binned.
    """
    name: str
    pixel_scale: float
    psf_fwhm: tuple
    e_per_nmgy: Mapping[str, float]
    sky_mag: Mapping[str, float]
    read_noise_e: float
    rgb_weights: Mapping[str, float]
    max_render_pix: int = IMAGE_SIZE


def instrument(name_or_instrument="sdss") -> Instrument:
    """The Instrument of a name in presets.INSTRUMENTS (an Instrument passes through)."""
    if isinstance(name_or_instrument, Instrument):
        return name_or_instrument
    if name_or_instrument not in INSTRUMENTS:
        raise ValueError(f"instrument {name_or_instrument!r}: expected one of {', '.join(sorted(INSTRUMENTS))}")
    return Instrument(name=name_or_instrument, **INSTRUMENTS[name_or_instrument])


SDSS = instrument("sdss")
# SDSS's values under their historical names (typical DR7/DR8 frames, 53.9 s drift scan).
PIXEL_SCALE = SDSS.pixel_scale  # SDSS native pixel scale (arcsec/pixel)
MAX_RENDER_PIX = IMAGE_SIZE     # fields wider than this are drawn binned (coarser pixels)
E_PER_NMGY = dict(SDSS.e_per_nmgy)
SKY_MAG = dict(SDSS.sky_mag)    # mag/arcsec^2
READ_NOISE_E = SDSS.read_noise_e
# r-band sky ~620 e-/pixel -> 1-sigma per-pixel surface brightness ~24.4 mag/arcsec^2.
TRAIL_AMPLITUDE = (0.05, 0.3)                    # satellite trails, in units of the sky

GSPARAMS = galsim.GSParams(maximum_fft_size=8192)


def mag_to_nmgy(m):
    """Flux in nanomaggies of AB magnitude `m` (array or scalar)."""
    return 10.0 ** (-0.4 * (np.asarray(m, dtype=float) - 22.5))


def band_flux(f_r, gr, ri):
    """(g, r, i) fluxes of a component from its r flux and colours g-r, r-i."""
    return {"g": f_r * 10 ** (-0.4 * gr), "r": f_r, "i": f_r * 10 ** (0.4 * ri)}


def render_grid(d25_arcmin, inst: Instrument = SDSS):
    """(pixels, arcsec/pixel) of the rendered field: the instrument's native pixels, or
    binned ones when the 2 x D25 field is wider than inst.max_render_pix native pixels."""
    field = 2.0 * d25_arcmin * 60.0
    n_native = int(round(field / inst.pixel_scale))
    if n_native <= inst.max_render_pix:
        return n_native, inst.pixel_scale
    return inst.max_render_pix, field / inst.max_render_pix


@dataclass(frozen=True)
class Frame:
    """The pixel grid of one cutout and the seeing it is observed through.

    Pixel coordinates are 0-based with the cutout centre at `c`; GalSim images of
    the frame (`image`) use the same coordinates (``xmin = ymin = 0``).
    """
    npix: int
    scale: float                # arcsec / pixel
    psf: galsim.GSObject
    fwhm_pix: float

    @property
    def c(self) -> float:
        return (self.npix - 1) / 2.0

    def image(self, array: np.ndarray) -> galsim.Image:
        """A GalSim view of the (npix, npix) `array` on the frame's grid (writes go to `array`)."""
        return galsim.Image(array, scale=self.scale, xmin=0, ymin=0)

    def draw(self, obj: galsim.GSObject) -> np.ndarray:
        """`obj` seen through the PSF and the pixels, as a float32 array (flux per pixel)."""
        img = galsim.ImageF(self.npix, self.npix, scale=self.scale)
        galsim.Convolve(obj, self.psf, gsparams=GSPARAMS).drawImage(image=img)
        return img.array


def make_frame(p, inst: Instrument = SDSS) -> Frame:
    """Frame of galaxy `p`: its 2 x D25 grid and a slightly elliptical Kolmogorov seeing PSF."""
    npix, scale = render_grid(p["d25"], inst)
    psf = galsim.Kolmogorov(fwhm=p["psf_fwhm"], gsparams=GSPARAMS).shear(g1=p["psf_g1"], g2=p["psf_g2"])
    return Frame(npix=npix, scale=scale, psf=psf, fwhm_pix=p["psf_fwhm"] / scale)


class PointLight:
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

    def observe(self, frame: Frame) -> np.ndarray:
        """(3, npix, npix) float32 images of the points seen through the PSF and the pixels."""
        points = self.deposit(frame.npix)
        kn = int(min(2 * math.ceil(6 * frame.fwhm_pix) + 1, 2 * (frame.npix // 2) - 1))
        kernel = frame.psf.drawImage(nx=kn, ny=kn, scale=frame.scale).array
        return np.ascontiguousarray(_fft_convolve_same(points.astype(np.float32), kernel))


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


def trail(rng, frame: Frame):
    """A satellite or aircraft trail: a PSF-wide line seen in one or two bands only,
    because SDSS exposes g, r, i at different times. (bands, amplitude in units of the sky)."""
    npix = frame.npix
    bands = tuple(rng.choice(BANDS, size=rng.integers(1, 3), replace=False))
    a = rng.uniform(0, np.pi)
    x0, y0 = rng.uniform(0, npix, 2)
    yy, xx = np.mgrid[0:npix, 0:npix]
    d = np.abs((xx - x0) * math.sin(a) - (yy - y0) * math.cos(a))
    sigma = frame.fwhm_pix / 2.355
    amp = rng.uniform(*TRAIL_AMPLITUDE)
    return bands, amp * np.exp(-0.5 * (d / sigma) ** 2)


def sky_per_pixel(band: str, sky_dmag: float, scale: float, inst: Instrument = SDSS) -> float:
    """Sky brightness of `band` in nanomaggies per pixel of `scale` arcsec."""
    return float(mag_to_nmgy(inst.sky_mag[band] + sky_dmag) * scale ** 2)


def add_sky_and_noise(model: np.ndarray, band: str, sky_dmag: float, scale: float,
                      deviate: galsim.BaseDeviate, inst: Instrument = SDSS) -> np.ndarray:
    """Observe a noiseless float32 model (nmgy/pixel) in place: sky, Poisson and read noise, sky subtracted.

    ``galsim.CCDNoise`` in nanomaggy "ADU" (gain = electrons per nanomaggy): the sky
    enters the Poisson variance but not the result, as after the SDSS pipeline's sky
    subtraction; negative expectations count as zero. The read noise R (per binned
    pixel) is counted as R^2 extra Poisson electrons of sky, as in the CCD equation:
    the same variance and, at the ~600 e- of an SDSS sky pixel, the same distribution
    as a separate Gaussian, which GalSim draws at twice the cost of the whole noise.
    """
    gain = inst.e_per_nmgy[band]
    read_e2 = inst.read_noise_e ** 2 * (scale / inst.pixel_scale) ** 2   # read-noise variance, e-^2
    noise = galsim.CCDNoise(deviate, sky_level=sky_per_pixel(band, sky_dmag, scale, inst) + read_e2 / gain,
                            gain=gain)
    galsim.Image(model, scale=scale).addNoise(noise)
    return model
