"""Stage 00, display: the noisy g, r, i bands stretched into the 8-bit SDSS cutout format.

Each band becomes an inverted asinh gray image (black galaxy on a light-gray sky, the
galaxy core black), resampled to 512 x 512 as the SDSS cutout service does; the
three bands together become a Lupton asinh colour composite (white galaxy on a black sky or,
as the newer SDSS services give, a navy one; SDSS-like band weights in a varying balance;
some with the white corners of a rotated frame). The stretch levels vary from galaxy to galaxy as the real
cutouts do; their ranges are the constants below.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.visualization import make_lupton_rgb
from PIL import Image

from .simulate_observe import BANDS, IMAGE_SIZE

GRAY_SKY_LEVEL = (226.0, 251.0)     # gray level of the sky (uniform range)
GRAY_SKY_NOISE = (4.5, 30.0)        # gray levels of sky noise the stretch aims at
CORE_SATURATION = (0.12, 2.5)       # saturation level / core brightness, log-uniform (> 1: core not black)
CORE_BOX = 12                       # central box whose 75th percentile is the core brightness
# Colour composite weights (i, r, g) -> (R, G, B): a g-r ~ 0.5 disk looks white, the
# bulge orange and star-forming knots blue, as in the SDSS colour images.
RGB_WEIGHTS = {"g": 2.0, "r": 1.3, "i": 1.0}
RGB_SKY_NOISE = (2.5, 45.0)         # colour composite: sky noise -> this many levels of 255 (log-uniform)
RGB_Q = (4.0, 12.0)                 # Lupton asinh softening (uniform): about half the centres unsaturated, as real SDSS
RGB_G_WEIGHT = (0.4, 1.2)           # colour balance: g (blue) weight multiplier, log-uniform
RGB_I_WEIGHT = (0.85, 1.35)         # colour balance: i (red) weight multiplier
RGB_NAVY_FRACTION = 0.65            # composites on the navy sky of the newer SDSS services ...
RGB_NAVY_SKY = (17.0, 23.0, 35.0)   # ... at this (R, G, B) sky level ...
RGB_NAVY_SCALE = (0.85, 1.3)        # ... times this
RGB_CORNER_FRACTION = 0.15          # rotated composites with white corners (frame tilted 5-45 deg)


def resample(img, size=IMAGE_SIZE):
    """Resample a band to size x size (cubic), as the SDSS cutout service does; a new array."""
    if img.shape[0] == size:
        return np.array(img, dtype=np.float32)
    return np.array(Image.fromarray(np.asarray(img, dtype=np.float32), mode="F")
                    .resize((size, size), Image.BICUBIC), dtype=np.float32)


def robust_sigma(x):
    """Noise from the median absolute deviation (sky pixels dominate every cutout)."""
    sub = x[::7, ::7]
    return float(1.4826 * np.median(np.abs(sub - np.median(sub)))) or 1e-12


def asinh_softening(c, x_sat):
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


def to_display(native: dict, scale: float, rng, rgb_weights=None) -> tuple[dict, np.ndarray]:
    """8-bit products of the bands (nmgy / pixel at `scale` arcsec): a gray image per
    band (band -> (512, 512) uint8) and the colour composite ((512, 512, 3) uint8);
    `rgb_weights`: the instrument's composite band weights (None: RGB_WEIGHTS)."""
    sky_level = rng.uniform(*GRAY_SKY_LEVEL)
    noise_gl = rng.uniform(*GRAY_SKY_NOISE)
    sat_frac = 10 ** rng.uniform(*np.log10(CORE_SATURATION))
    gray = {b: gray_image(native[b], sky_level, noise_gl, sat_frac) for b in BANDS}
    look = {"noise": 10 ** rng.uniform(*np.log10(RGB_SKY_NOISE)), "q": rng.uniform(*RGB_Q),
            "g": 10 ** rng.uniform(*np.log10(RGB_G_WEIGHT)), "i": rng.uniform(*RGB_I_WEIGHT),
            "sky": np.array(RGB_NAVY_SKY) * rng.uniform(*RGB_NAVY_SCALE) * (rng.uniform() < RGB_NAVY_FRACTION),
            "corner_deg": rng.uniform(5.0, 45.0) if rng.uniform() < RGB_CORNER_FRACTION else 0.0}
    return gray, colour_image(native, scale, look, rgb_weights)


def gray_image(band: np.ndarray, sky_level: float, noise_gl: float, sat_frac: float) -> np.ndarray:
    """Inverted asinh stretch: sky at `sky_level` with noise of ~`noise_gl` gray levels,
    black from `sat_frac` x the core brightness (at least 15 sky sigma) up."""
    x = resample(band)
    m, k = IMAGE_SIZE // 2, CORE_BOX // 2
    sigma = robust_sigma(x)
    core = float(np.percentile(x[m - k:m + k, m - k:m + k], 75))
    x_sat = max(sat_frac * core, 15.0 * sigma)
    soft = asinh_softening(sky_level * sigma / noise_gl, x_sat)
    # gray = sky_level * (1 - asinh(x / soft) / asinh(x_sat / soft)), in place (float32)
    x *= np.float32(1.0 / soft)
    np.arcsinh(x, out=x)
    x *= np.float32(-sky_level / math.asinh(x_sat / soft))
    x += np.float32(sky_level + 0.5)                  # + 0.5: round on the cast below
    np.clip(x, 0.0, 255.0, out=x)
    return x.astype(np.uint8)


def colour_image(native: dict, scale: float, look: dict, rgb_weights=None) -> np.ndarray:
    """Lupton composite at the rendered scale (surface brightness units), resampled like
    the bands. `look`: sky noise in levels of 255 ('noise'), softening 'q', g and i weight
    multipliers, (R, G, B) sky pedestal 'sky', tilt of a rotated frame 'corner_deg' (0: none)."""
    base = RGB_WEIGHTS if rgb_weights is None else rgb_weights
    weights = {"g": base["g"] * look["g"], "r": base["r"], "i": base["i"] * look["i"]}
    sb = {b: native[b] * (weights[b] / scale ** 2) for b in BANDS}
    sigma = np.mean([robust_sigma(sb[b]) for b in BANDS])
    with np.errstate(invalid="ignore", divide="ignore"):   # zero-intensity pixels
        rgb = make_lupton_rgb(sb["i"], sb["r"], sb["g"], stretch=255.0 * sigma / look["noise"], Q=look["q"])
    if rgb.shape[0] != IMAGE_SIZE:
        rgb = np.asarray(Image.fromarray(rgb, mode="RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC))
    rgb = np.clip(rgb + np.round(look["sky"]), 0, 255).astype(np.uint8)
    if look["corner_deg"]:
        rgb[~rotated_frame(IMAGE_SIZE, look["corner_deg"])] = 255
    return rgb


def rotated_frame(n: int, angle_deg: float) -> np.ndarray:
    """Pixels inside the largest square tilted by `angle_deg` that fits the n x n frame:
    SDSS composites cut from a rotated frame are white outside it."""
    t = math.radians(angle_deg)
    half = n / (math.cos(t) + math.sin(t)) / 2
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    u, v = xx * math.cos(t) + yy * math.sin(t), -xx * math.sin(t) + yy * math.cos(t)
    return (np.abs(u) <= half) & (np.abs(v) <= half)
