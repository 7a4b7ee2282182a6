"""The classical inclination: the galaxy's axis ratio b/a, measured with photutils, and Hubble's formula.

One implementation for every user: stage 06's baseline, the simulator's ``b_a``
catalog column and the tests. `measure_axis_ratio` finds the galaxy at the image
centre as a photutils segment (`detect_sources` above an isophote), keeps the
light that is point-symmetric about its centroid (stars and neighbours that
touch the disk on one side drop out), and reads the axis ratio from the second
moments of the central segment (`SourceCatalog`: semiminor / semimajor axis). `axis_ratio_inclination` turns it into
degrees with cos^2 i = (q^2 - q0^2) / (1 - q0^2).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FILL_MIN_FRAC = 0.005  # constant border regions larger than this fraction of the frame are fill
FILL_EDGE_PX = 3  # pixels of the fill's blurred edge counted as fill too
SKY_SAMPLE = 5000  # sky pixels the sky level and noise are estimated from


def axis_ratio_from_inclination(inc_deg, q0: float = 0.2):
    """Hubble's relation forwards: b/a of a disk of intrinsic axis ratio q0 seen at inclination inc (deg)."""
    c = np.cos(np.radians(np.asarray(inc_deg, dtype=float)))
    return np.sqrt(c ** 2 * (1 - q0 ** 2) + q0 ** 2)


def inclination_from_axis_ratio(q, q0: float = 0.2):
    """Hubble's formula: cos^2 i = (q^2 - q0^2) / (1 - q0^2); q <= q0 gives 90 deg, q >= 1 gives 0."""
    q = np.asarray(q, dtype=float)
    cos2 = (np.clip(q, q0, 1.0) ** 2 - q0 ** 2) / (1.0 - q0 ** 2)
    inc = np.degrees(np.arccos(np.sqrt(cos2)))
    inc = np.where(np.isfinite(q), inc, np.nan)
    return float(inc) if inc.ndim == 0 else inc


def fill_mask(image: np.ndarray) -> np.ndarray:
    """Constant fill outside the sky footprint of an 8-bit cutout: the corners of rotated
    cutouts (pure white in SDSS colour JPEGs) and transparent areas, i.e. large regions at
    exactly 0 or 255 that touch the border. They are neither sky nor galaxy."""
    img = np.asarray(image)
    fill = np.zeros(img.shape, bool)
    for value in (0, 255):
        labels, n = ndimage.label(img == value)
        if n == 0:
            continue
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        sizes = ndimage.sum_labels(np.ones(img.shape), labels, index=edge)
        big = edge[(edge > 0) & (sizes >= FILL_MIN_FRAC * img.size)]
        fill |= np.isin(labels, big)
    # Resampling and JPEG blur the fill's edge into a ramp of a few pixels that is neither
    # (on 128 px composites with large corners those near-white pixels set the sky level).
    return ndimage.binary_dilation(fill, iterations=FILL_EDGE_PX) if fill.any() else fill


def _as_gray(image) -> tuple[np.ndarray, np.ndarray]:
    """(float image, fill mask) of a (H, W) or (H, W, 3) image; colour -> mean of the channels."""
    img = np.asarray(image)
    if img.ndim == 3:
        fill = np.all([fill_mask(img[..., c]) for c in range(img.shape[2])], axis=0) \
            if img.dtype == np.uint8 else np.zeros(img.shape[:2], bool)
        img = img.astype(np.float64).mean(axis=2)
    elif img.ndim == 2:
        fill = fill_mask(img) if img.dtype == np.uint8 else np.zeros(img.shape, bool)
        img = img.astype(np.float64)
    else:
        raise ValueError(f"image of shape {np.shape(image)}; expected (H, W) or (H, W, 3)")
    if min(img.shape) < 8:
        raise ValueError(f"image of shape {np.shape(image)} is too small; expected H, W >= 8")
    return img, fill


def _centre_box(shape) -> tuple[slice, slice]:
    ny, nx = shape
    return (slice(int(ny * 0.4), int(np.ceil(ny * 0.6)) + 1), slice(int(nx * 0.4), int(np.ceil(nx * 0.6)) + 1))


def _sky_stats(values: np.ndarray) -> tuple[float, float]:
    """Robust (level, noise) of sky pixels: median and MAD-based std (stars and the galaxy's
    outskirts in the frame barely move them); a regular subsample of SKY_SAMPLE is plenty."""
    from astropy.stats import mad_std

    values = values[::max(1, len(values) // SKY_SAMPLE)]
    return float(np.median(values)), float(mad_std(values))


def _sky_subtracted(img: np.ndarray, fill: np.ndarray, galaxy_dark: bool | None):
    """Galaxy-bright, sky-subtracted image (0 on fill) and the sky mask (outer 10% frame)."""
    ny, nx = img.shape
    w = max(2, min(ny, nx) // 10)
    sky_mask = np.ones(img.shape, bool)
    sky_mask[w:-w, w:-w] = False
    sky_mask &= ~fill
    if sky_mask.sum() < 20:  # the fill covers the whole frame: take whatever is not fill
        sky_mask = ~fill
    if sky_mask.sum() < 20:
        return None, None
    if galaxy_dark is None:  # black galaxy on white sky, as the stored g, r, i cutouts?
        galaxy_dark = np.median(img[_centre_box(img.shape)]) < np.median(img[sky_mask])
    if galaxy_dark:
        img = -img
    sky, _ = _sky_stats(img[sky_mask])
    return np.where(fill, 0.0, img - sky), sky_mask


def _smoothed(img: np.ndarray, smooth_px: float | None) -> np.ndarray:
    smooth_px = max(1.0, min(img.shape) / 256.0) if smooth_px is None else smooth_px
    return ndimage.gaussian_filter(img, smooth_px)


def central_segment(img: np.ndarray, fill: np.ndarray, sky_mask: np.ndarray, nsigma: float = 3.0,
                    peak_frac: float = 0.02, smooth_px: float | None = None):
    """(photutils SegmentationImage, label of the galaxy at the centre) of a galaxy-bright,
    sky-subtracted image, or None when nothing stands out of the sky there.

    Segments (`detect_sources`, at least 5 pixels) lie above the isophote
    max(nsigma x sky noise, peak_frac x central peak) of the lightly smoothed
    image; the galaxy's is the one under the brightest smoothed pixel of the
    central 20% box.
    """
    from photutils.segmentation import detect_sources

    sm = _smoothed(img, smooth_px)
    _, noise = _sky_stats(sm[sky_mask])
    box = _centre_box(img.shape)
    peak = float(sm[box].max())
    if not peak > 0:
        return None
    segm = detect_sources(sm, max(nsigma * noise, peak_frac * peak), n_pixels=5, mask=fill)
    if segm is None:
        return None
    iy, ix = np.unravel_index(np.argmax(sm[box]), sm[box].shape)
    label = int(segm.data[iy + box[0].start, ix + box[1].start])
    return (segm, label) if label else None


def _mirrored(a: np.ndarray, centre: tuple[float, float], outside) -> np.ndarray:
    """`a` reflected through the point `centre` (y, x), rounded to half a pixel: out[i] = a[2c - i];
    `outside` where 2c - i leaves the frame."""
    out = np.full_like(a, outside)
    (ny, nx), k = a.shape, [int(round(2 * c)) - (n - 1) for c, n in zip(centre, a.shape)]
    flipped = a[::-1, ::-1]
    out[max(k[0], 0):ny + min(k[0], 0), max(k[1], 0):nx + min(k[1], 0)] = \
        flipped[max(-k[0], 0):ny - max(k[0], 0), max(-k[1], 0):nx - max(k[1], 0)]
    return out


def _point_symmetric(img: np.ndarray, fill: np.ndarray, centre: tuple[float, float]):
    """The light that is point-symmetric about `centre` (y, x): min(I(x), I(2c - x)), with the
    fill mirrored too. Stars and neighbours overlapping the disk on one side drop out;
    the disk, symmetric about its centre, keeps its shape."""
    return np.minimum(img, _mirrored(img, centre, 0.0)), fill | _mirrored(fill, centre, True)


def measure_axis_ratio(image, galaxy_dark: bool | None = None, **kw) -> float:
    """Axis ratio b/a of the galaxy at the image centre (photutils segment moments); NaN if none.

    `image`: (H, W) gray or (H, W, 3) colour, 8-bit or float, any size. Stored
    g, r, i cutouts are black galaxy on white sky (galaxy_dark=True), colour
    composites and simulated native images bright on dark (False); None decides
    from the centre against the border. Constant fill (white corners of rotated
    cutouts, transparent areas) is neither sky nor galaxy. The galaxy's segment
    (`central_segment`) gives its centroid; the image is then made point-symmetric
    about it (removing overlapping stars and neighbours), segmented again, and
    b/a = semiminor / semimajor axis of the central segment's second moments
    (`SourceCatalog`). `kw` go to `central_segment` (nsigma, peak_frac, smooth_px).
    """
    from photutils.segmentation import SourceCatalog

    img, fill = _as_gray(image)
    img, sky_mask = _sky_subtracted(img, fill, galaxy_dark)
    if img is None:
        return float("nan")
    found = central_segment(img, fill, sky_mask, **kw)
    if found is None:
        return float("nan")
    source = SourceCatalog(np.clip(img, 0, None), found[0]).select_label(found[1])
    img, fill = _point_symmetric(img, fill, (float(source.y_centroid), float(source.x_centroid)))
    found = central_segment(img, fill, sky_mask, **kw)
    if found is None:
        return float("nan")
    source = SourceCatalog(np.clip(img, 0, None), found[0]).select_label(found[1])
    a, b = float(source.semimajor_axis.value), float(source.semiminor_axis.value)
    return b / a if np.isfinite(a) and a > 0 and np.isfinite(b) else float("nan")


def axis_ratio_inclination(image, q0: float = 0.2, galaxy_dark: bool | None = None, **kw) -> float:
    """Classical inclination (deg) of the central galaxy: `measure_axis_ratio` + Hubble's formula.

    q0 is the intrinsic thickness (q <= q0 gives 90 deg). NaN when no galaxy is found.
    """
    return inclination_from_axis_ratio(measure_axis_ratio(image, galaxy_dark=galaxy_dark, **kw), q0)
