"""Stage 04 augment: uniform-inclination training batches that keep the axis ratio.

This module owns the augmentation transforms (one composite affine resampling
per image with an isotropic zoom, then photometric changes, all run in batches
by TensorFlow), the original pipeline's sampling rules (nine 5-degree bins
filled equally, colour and grayscale equally many, half the grayscale
inverted), and the stage that writes ``augmented/Uset_<jjj>_npz/*.npz``, the
fixed validation set and ``augment.json``.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from . import BANDS, io as iio
from .dataset import sample_path
from .images import band_tag

SALT = 4004  # stage 04's entry in the run seed sequence
_TRAIN_STREAM, _VALIDATION_STREAM = 1, 2

BIN_LOWS = np.arange(45, 90, 5)  # nine 5-degree bins: [45,50], (50,55], ..., (85,90]
N_BINS = len(BIN_LOWS)
BIN_NAMES = [f"{lo}-{lo + 5}" for lo in BIN_LOWS]

GRAY_BANDS = ("g", "r", "i")
FILTER_CODES = {"g": "g", "r": "r", "i": "i", "gri": "c"}  # the `filter` key's letter
CHUNK = 64  # images per TensorFlow call (cache-friendly); fixed so results never depend on the machine


class AugmentInputError(ValueError):
    """A sample file or parameter the stage cannot use."""


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random transforms (uniform draws unless noted)."""

    rotation_deg: tuple[float, float] = (0.0, 360.0)
    zoom: tuple[float, float] = (0.8, 1.2)          # ONE factor for both axes
    translate_frac: float = 0.15                    # of the image size, x and y
    flip_prob: float = 0.5                          # left/right and up/down, each
    # colour only (the original applies them to colour images only)
    blur_prob: float = 0.5
    blur_sigma_px: tuple[float, float] = (0.0, 0.5)
    gain: tuple[float, float] = (0.8, 1.2)
    offset: tuple[float, float] = (-5.0, 5.0)       # in 0-255 pixel units
    noise_sigma: tuple[float, float] = (0.0, 3.0)   # in 0-255 pixel units
    per_channel_prob: float = 0.5                   # gain/offset/noise drawn per channel
    desaturate_prob: float = 0.1
    desaturate_alpha: tuple[float, float] = (0.0, 1.0)
    # colour and grayscale
    gamma: tuple[float, float] = (0.97, 1.03)


DEFAULT_PARAMS = AugmentParams()


# ---- binning --------------------------------------------------------------

def inclination_bin(labels) -> np.ndarray:
    """Bin index 0-8 of each inclination (deg); -1 outside 45-90.

    45 belongs to the first bin; every later bin is open below and closed
    above, as in the original: [45,50], (50,55], ..., (85,90].
    """
    labels = np.asarray(labels, dtype=float)
    b = np.ceil((labels - 45.0) / 5.0).astype(int) - 1
    b[labels == 45] = 0
    b[(labels < 45) | (labels > 90)] = -1
    return b


# ---- geometry -------------------------------------------------------------

def affine_transforms(theta_deg, zoom_x, zoom_y, flip_x, flip_y, tx, ty, size) -> np.ndarray:
    """Rows for ImageProjectiveTransformV3, one composite matrix per image.

    The forward map is out = c + t + R(theta) Z F (in - c) about the image
    centre c, with F the flips and Z = diag(zoom_x, zoom_y); TensorFlow wants
    the inverse (output pixel -> input pixel).  The stage always passes
    zoom_x == zoom_y; separate factors exist only so tests can show what
    anisotropic scaling would do to the axis ratio.
    """
    th = np.deg2rad(np.asarray(theta_deg, dtype=np.float64))
    fx = np.where(flip_x, -1.0, 1.0)
    fy = np.where(flip_y, -1.0, 1.0)
    cos, sin = np.cos(th), np.sin(th)
    # A = F Z^-1 R(-theta)
    a00 = fx / zoom_x * cos
    a01 = fx / zoom_x * sin
    a10 = -fy / zoom_y * sin
    a11 = fy / zoom_y * cos
    c = (size - 1) / 2.0
    ox, oy = c + np.asarray(tx, float), c + np.asarray(ty, float)
    b0 = c - (a00 * ox + a01 * oy)
    b1 = c - (a10 * ox + a11 * oy)
    zero = np.zeros_like(a00)
    return np.stack([a00, a01, b0, a10, a11, b1, zero, zero], axis=1).astype(np.float32)


def sample_geometry(rng: np.random.Generator, n: int, size: int,
                    params: AugmentParams = DEFAULT_PARAMS) -> dict[str, np.ndarray]:
    """Random rotation, isotropic zoom, flips and translation of n images."""
    zoom = rng.uniform(*params.zoom, n)
    return {
        "theta_deg": rng.uniform(*params.rotation_deg, n),
        "zoom_x": zoom,
        "zoom_y": zoom,  # isotropic: the axis ratio (the label) is unchanged
        "flip_x": rng.random(n) < params.flip_prob,
        "flip_y": rng.random(n) < params.flip_prob,
        "tx": rng.uniform(-1, 1, n) * params.translate_frac * size,
        "ty": rng.uniform(-1, 1, n) * params.translate_frac * size,
    }


def _photometric(rng: np.random.Generator, n: int, params: AugmentParams) -> dict[str, np.ndarray]:
    def per_channel(lo_hi):
        v = rng.uniform(*lo_hi, (n, 3))
        same = rng.random(n) >= params.per_channel_prob
        v[same] = v[same, :1]
        return v.astype(np.float32)

    blur = np.where(rng.random(n) < params.blur_prob, rng.uniform(*params.blur_sigma_px, n), 0.0)
    desat = np.where(rng.random(n) < params.desaturate_prob,
                     rng.uniform(*params.desaturate_alpha, n), 0.0)
    return {
        "gamma": rng.uniform(*params.gamma, n).astype(np.float32),
        "blur_sigma": blur.astype(np.float32),
        "gain": per_channel(params.gain),
        "offset": per_channel(params.offset),
        "noise_sigma": rng.uniform(*params.noise_sigma, n).astype(np.float32),
        "noise_per_channel": rng.random(n) < params.per_channel_prob,
        "desaturate": desat.astype(np.float32),
    }


# ---- TensorFlow kernels ---------------------------------------------------

def _sky(x):
    """Sky level (border median) and noise (border interquartile range / 1.349) per image and channel.

    Quantiles of the border pixels ignore the few that a star or the galaxy touches.
    """
    border = tf.concat([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], axis=1)  # (N,4S-4,C)
    s = tf.sort(border, axis=1)
    m = tf.shape(s)[1]
    level = s[:, m // 2]
    sigma = (s[:, (3 * m) // 4] - s[:, m // 4]) / 1.349
    return level[:, None, None], sigma[:, None, None]  # (N,1,1,C)


def _warp(x, transforms):
    """One bilinear resampling per image (outside -> 0) and the inside fraction.

    The fraction of each output pixel's bilinear weight that falls inside the
    source cutout is separable and exact: min(u+1, S-u) clipped to 0-1 along
    each axis, u being the source coordinate.  It blends the sky fill in
    smoothly, so no edge is drawn.
    """
    shape = tf.shape(x)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=shape[1:3], fill_value=tf.constant(0.0),
        interpolation="BILINEAR", fill_mode="CONSTANT")
    size = tf.cast(shape[1], tf.float32)
    grid = tf.range(size)
    gx, gy = grid[None, None, :], grid[None, :, None]
    t = transforms[:, :, None, None]
    u = t[:, 0] * gx + t[:, 1] * gy + t[:, 2]  # source column of each output pixel (N,S,S)
    v = t[:, 3] * gx + t[:, 4] * gy + t[:, 5]  # source row
    inside = (tf.clip_by_value(tf.minimum(u + 1.0, size - u), 0.0, 1.0)
              * tf.clip_by_value(tf.minimum(v + 1.0, size - v), 0.0, 1.0))
    return warped, inside[..., None]


# Pixels brought in from outside the cutout become the image's own sky: its
# border median plus noise of its border scatter.  A constant fill of 0 or 255
# draws an edge on one of the two sky types, and reflect mode mirrors the
# galaxy itself into the corners at large zoom-out and translation.
# Bilinear interpolation averages neighbours, which lowers the noise of the
# resampled interior to about 2/3 of the original on average; the fill matches.
_FILL_NOISE = 2.0 / 3.0


def _gamma_lut(images_u8, gamma):
    """Gamma contrast 255 (x/255)^gamma of uint8 images, as float, by table look-up.

    A 256-entry table per image is far cheaper than a power per pixel.
    """
    n = tf.shape(images_u8)[0]
    levels = tf.range(256, dtype=tf.float32)[None] / 255.0
    table = tf.reshape(255.0 * tf.pow(levels, gamma[:, None]), [-1])  # (N*256,)
    index = tf.cast(images_u8, tf.int32) + 256 * tf.range(n)[:, None, None, None]
    return tf.gather(table, index)


def _blur(y, sigma):
    """Small Gaussian blur with a per-image sigma (px; 0 = none).

    y + c Laplacian(y) with c = sigma^2 / 2 is the heat equation run to
    variance sigma^2 per axis: exact to first order, and sigma <= 0.5 px keeps
    it a small step.  One fixed-kernel depthwise convolution for the batch.
    """
    c = (0.5 * sigma ** 2)[:, None, None, None]
    lap = tf.constant([[0, 1, 0], [1, -4, 1], [0, 1, 0]], tf.float32)[:, :, None, None]
    lap = tf.tile(lap, [1, 1, tf.shape(y)[-1], 1])
    p = tf.pad(y, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")  # no dark rim
    return y + c * tf.nn.depthwise_conv2d(p, lap, [1, 1, 1, 1], "VALID")


_LUMA = (0.299, 0.587, 0.114)


def _colour_matrix(gain, desaturate):
    """Per-image 3x3 matrix: channel gains, then partial desaturation towards luma.

    Rows act on pixel row vectors: y @ M.  One batched matmul replaces
    several full-image passes.
    """
    eye = tf.eye(3, batch_shape=tf.shape(gain)[:1])
    luma = tf.constant(_LUMA)[None, :, None] * tf.ones([1, 1, 3])  # D[c, d] = w_c
    a = desaturate[:, None, None]
    return tf.linalg.diag(gain) @ ((1.0 - a) * eye + a * luma)


def _to_uint8(y):
    return tf.cast(tf.clip_by_value(tf.round(y), 0.0, 255.0), tf.uint8)


_IMG = tf.TensorSpec([None, None, None, 3], tf.uint8)
_TR = tf.TensorSpec([None, 8], tf.float32)
_VEC = tf.TensorSpec([None], tf.float32)
_RGB = tf.TensorSpec([None, 3], tf.float32)
_SEED = tf.TensorSpec([2], tf.int64)


@tf.function(input_signature=[_IMG, _TR, _SEED, _VEC])
def _augment_gray_tf(images, transforms, seed, gamma):
    # The three channels of a grayscale image are equal: work on one, copy at the end.
    x = _gamma_lut(images[..., :1], gamma)
    sky, sky_sigma = _sky(x)
    y, inside = _warp(x, transforms)
    noise = tf.random.stateless_normal(tf.shape(y), seed=seed)
    y = y + (1.0 - inside) * (sky + _FILL_NOISE * sky_sigma * noise)
    return tf.tile(_to_uint8(y), [1, 1, 1, 3])


@tf.function(input_signature=[_IMG, _TR, _SEED, _VEC, _VEC, _RGB, _RGB, _VEC,
                              tf.TensorSpec([None], tf.bool), _VEC])
def _augment_colour_tf(images, transforms, seed, gamma, blur_sigma, gain, offset,
                       noise_sigma, noise_per_channel, desaturate):
    x = _gamma_lut(images, gamma)
    sky, sky_sigma = _sky(x)
    y, inside = _warp(x, transforms)
    outside = 1.0 - inside
    y = _blur(y + outside * sky, blur_sigma)
    shape = tf.shape(y)
    matrix = _colour_matrix(gain, desaturate)
    y = tf.reshape(tf.reshape(y, [shape[0], -1, 3]) @ matrix, shape) + offset[:, None, None, :]
    # One Gaussian draw of N*S*S values (a third of the full size) tiled three
    # times fills all channels: with N >= 3 a value recurs only in other
    # images, so each image's noise is still independent per pixel and channel.
    n_img = tf.maximum(shape[0], 3)
    n = tf.random.stateless_normal([n_img * shape[1] * shape[2]], seed=seed)
    n3 = tf.reshape(tf.tile(n, [3])[: shape[0] * shape[1] * shape[2] * 3], shape)
    noise = tf.where(noise_per_channel[:, None, None, None], n3, n3[..., :1])
    # The same draw serves the sky fill's noise (scaled like the sky by the
    # gain) and the additive noise; independent Gaussians add in quadrature,
    # interpolated linearly across the one-pixel blend at the cutout's edge.
    add_sigma = noise_sigma[:, None, None, None]
    fill_sigma = _FILL_NOISE * sky_sigma * gain[:, None, None, :]
    sigma = add_sigma + (tf.sqrt(add_sigma ** 2 + fill_sigma ** 2) - add_sigma) * outside
    y = y + sigma * noise
    return _to_uint8(y)


def augment_images(images: np.ndarray, rng: np.random.Generator, colour: bool,
                   params: AugmentParams = DEFAULT_PARAMS, transforms: np.ndarray | None = None,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Augment a batch of (N,S,S,3) uint8 images; every random draw comes from `rng`.

    Colour images get the geometric and all photometric transforms; grayscale
    images the geometric ones and gamma contrast only, as in the original.
    `transforms` overrides the random geometry (rows of `affine_transforms`).
    Results are written into `out` when given (same shape, uint8).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise AugmentInputError(f"images must be (N,S,S,3) uint8, got {images.shape} {images.dtype}")
    n, size = images.shape[0], images.shape[1]
    if out is None:
        out = np.empty_like(images)
    for start in range(0, n, CHUNK):
        sl = slice(start, min(start + CHUNK, n))
        m = sl.stop - sl.start
        if transforms is None:
            tr = affine_transforms(size=size, **sample_geometry(rng, m, size, params))
        else:
            tr = np.asarray(transforms[sl], np.float32)
        seed = rng.integers(0, 2**62, size=2, dtype=np.int64)  # TF's stateless ops
        if colour:
            ph = _photometric(rng, m, params)
            res = _augment_colour_tf(images[sl], tr, seed, ph["gamma"],
                                     ph["blur_sigma"], ph["gain"], ph["offset"],
                                     ph["noise_sigma"], ph["noise_per_channel"], ph["desaturate"])
        else:
            gamma = rng.uniform(*params.gamma, m).astype(np.float32)
            res = _augment_gray_tf(images[sl], tr, seed, gamma)
        out[sl] = res.numpy()
    return out


# ---- sample files ---------------------------------------------------------

def _sample_name(band: str, size: int, part: str, j: int) -> str:
    return sample_path("", band_tag(band), size, part, j).name


def discover_usets(samples_dir, size: int, bands) -> list[int]:
    """Indices 0..m_iter of the training sets present for every band.

    Raises when a band lacks train_000/test_000, when the bands disagree, or
    when the numbering has a gap, naming the missing file.
    """
    samples_dir = Path(samples_dir)
    if not samples_dir.is_dir():
        raise FileNotFoundError(f"samples folder {samples_dir} does not exist (run 03_split first)")
    found = {}
    for band in bands:
        pat = re.compile(rf"^{re.escape(band_tag(band))}_{size}x{size}_train_(\d{{3}})\.npz$")
        found[band] = sorted(int(m.group(1)) for p in samples_dir.iterdir()
                             if (m := pat.match(p.name)))
        for part in ("train", "test"):
            f = samples_dir / _sample_name(band, size, part, 0)
            if not f.is_file():
                raise FileNotFoundError(f"{f} not found: band {band!r} at {size}x{size} "
                                        "needs train_000 and test_000 from 03_split")
    union = sorted(set().union(*found.values()))
    for j in range(union[-1] + 1):
        for band in bands:
            if j not in found[band]:
                raise FileNotFoundError(
                    f"{samples_dir / _sample_name(band, size, 'train', j)} not found; expected "
                    f"train_000..train_{union[-1]:03d} for every band in {list(bands)}")
    return list(range(union[-1] + 1))


def _images_header(path: Path) -> tuple[tuple, np.dtype]:
    """Shape and dtype of the `images` array of an npz, read from its header only."""
    with zipfile.ZipFile(path) as zf, zf.open("images.npy") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
    return shape, dtype


def load_sample(path, size: int, images: bool = True):
    """images (N,S,S,3) uint8, labels (N,) int64 in 45-90, pgcIDs (N,) int64, checked.

    With images=False the images are checked from the file header only and
    None is returned in their place (cheap: nothing is decompressed).
    """
    path = Path(path)
    with np.load(path) as d:
        missing = {"images", "labels", "pgcIDs"} - set(d.files)
        if missing:
            raise AugmentInputError(f"{path}: missing keys {sorted(missing)}; expected images, labels, pgcIDs")
        labels, pgc = d["labels"], d["pgcIDs"]
        if images:
            imgs = d["images"]
            shape, dtype = imgs.shape, imgs.dtype
        else:
            imgs = None
            shape, dtype = _images_header(path)
    if dtype != np.uint8 or len(shape) != 4 or tuple(shape[1:]) != (size, size, 3):
        raise AugmentInputError(f"{path}: images {tuple(shape)} {dtype}, expected (N,{size},{size},3) uint8")
    if labels.shape != (shape[0],) or pgc.shape != (shape[0],):
        raise AugmentInputError(f"{path}: labels {labels.shape} / pgcIDs {pgc.shape}, "
                                f"expected ({shape[0]},) each")
    if not (np.issubdtype(labels.dtype, np.integer) and np.issubdtype(pgc.dtype, np.integer)):
        raise AugmentInputError(f"{path}: labels and pgcIDs must be integers, got "
                                f"{labels.dtype} and {pgc.dtype}")
    bad = (labels < 45) | (labels > 90)
    if bad.any():
        raise AugmentInputError(f"{path}: {bad.sum()} labels outside 45-90 deg "
                                f"(e.g. {labels[bad][0]}); 03_split keeps only inclinations >= 45")
    return imgs, labels.astype(np.int64), pgc.astype(np.int64)


class _Pool:
    """One band's source images with their bin members."""

    def __init__(self, band, images, labels, pgc):
        self.band, self.code = band, FILTER_CODES[band]
        self.images, self.labels, self.pgc = images, labels, pgc
        bins = inclination_bin(labels)
        self.members = [np.flatnonzero(bins == k) for k in range(N_BINS)]

    def counts(self) -> list[int]:
        return [len(m) for m in self.members]


def _load_pools(samples_dir, size, bands, part, j, images=True) -> dict[str, _Pool]:
    return {b: _Pool(b, *load_sample(Path(samples_dir) / _sample_name(b, size, part, j), size, images))
            for b in bands}


# ---- sampling rules -------------------------------------------------------

def _fill(rng, members: np.ndarray, n: int) -> np.ndarray:
    """n draws from members: each repeated equally often, the remainder by a seeded draw."""
    reps, rest = divmod(n, len(members))
    return np.concatenate([np.tile(members, reps), rng.choice(members, rest, replace=False)])


def _bin_status(pools: dict[str, _Pool]) -> tuple[list[int], dict[str, list[str]]]:
    """Bins used in a batch, and the empty bins of colour, grayscale and those dropped.

    A bin is used only when every image type present (colour, grayscale) has
    members in it, so colour and grayscale stay equally many; the others are
    reported, never silently lost.
    """
    kinds = {}
    if "gri" in pools:
        kinds["colour"] = np.array(pools["gri"].counts()) > 0
    gray = [pools[b] for b in GRAY_BANDS if b in pools]
    if gray:
        kinds["grayscale"] = np.sum([p.counts() for p in gray], axis=0) > 0
    ok = np.all(list(kinds.values()), axis=0)
    empty = {k: [BIN_NAMES[i] for i in np.flatnonzero(~v)] for k, v in kinds.items()}
    empty["dropped"] = [BIN_NAMES[i] for i in np.flatnonzero(~ok)]
    return [int(i) for i in np.flatnonzero(ok)], empty


def plan_batch(rng: np.random.Generator, pools: dict[str, _Pool], batch_size: int,
               bins: list[int]) -> dict[str, np.ndarray]:
    """Which source image fills each slot of one batch (before augmentation), shuffled.

    Per used bin: batch_size colour images, and batch_size grayscale ones whose
    band is g, r or i with equal chance (among the bands with members in the
    bin), half of them inverted (alternating which bins round up when
    batch_size is odd, so the batch total is exactly half, rounded down).
    """
    code, idx, binv, inv = [], [], [], []
    gray = [b for b in GRAY_BANDS if b in pools]
    n_odd = 0
    for k in bins:
        if "gri" in pools:
            code.append(np.full(batch_size, "c"))
            idx.append(_fill(rng, pools["gri"].members[k], batch_size))
            binv.append(np.full(batch_size, k))
            inv.append(np.zeros(batch_size, bool))
        if gray:
            have = [b for b in gray if len(pools[b].members[k])]
            counts = rng.multinomial(batch_size, np.full(len(have), 1.0 / len(have)))
            for b, c in zip(have, counts):
                code.append(np.full(c, b))
                idx.append(_fill(rng, pools[b].members[k], c))
            binv.append(np.full(batch_size, k))
            n_inv = batch_size // 2 + (batch_size % 2) * (n_odd % 2)
            n_odd += 1
            flags = np.zeros(batch_size, bool)
            flags[rng.choice(batch_size, n_inv, replace=False)] = True
            inv.append(flags)
    plan = {"code": np.concatenate(code).astype("<U1"), "index": np.concatenate(idx).astype(np.int64),
            "bin": np.concatenate(binv), "inverted": np.concatenate(inv)}
    order = rng.permutation(len(plan["code"]))
    return {k: v[order] for k, v in plan.items()}


def _plan_arrays(pools: dict[str, _Pool], plan: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The small per-image arrays of a planned batch: labels, pgcIDs, filter, inverted."""
    labels = np.empty(len(plan["code"]), np.int64)
    pgc = np.empty(len(plan["code"]), np.int64)
    for pool in pools.values():
        m = plan["code"] == pool.code
        labels[m] = pool.labels[plan["index"][m]]  # the source galaxy's own label
        pgc[m] = pool.pgc[plan["index"][m]]
    return {"labels": labels, "pgcIDs": pgc, "filter": plan["code"].astype("<U1"),
            "inverted": plan["inverted"].astype(bool)}


def _render_chunks(rng: np.random.Generator, pools: dict[str, _Pool], plan: dict[str, np.ndarray],
                   params: AugmentParams = DEFAULT_PARAMS):
    """Yield the augmented images of a planned batch in file order, 2*CHUNK at a time."""
    by_code = {p.code: p for p in pools.values()}
    size = next(iter(pools.values())).images.shape[1]
    n = len(plan["code"])
    for start in range(0, n, 2 * CHUNK):
        code = plan["code"][start:start + 2 * CHUNK]
        index = plan["index"][start:start + 2 * CHUNK]
        out = np.empty((len(code), size, size, 3), np.uint8)
        for colour in (True, False):
            slots = np.flatnonzero((code == "c") == colour)
            if not len(slots):
                continue
            src = np.empty((len(slots), size, size, 3), np.uint8)
            for c in np.unique(code[slots]):
                m = code[slots] == c
                src[m] = by_code[c].images[index[slots[m]]]
            out[slots] = augment_images(src, rng, colour, params)
        inv = plan["inverted"][start:start + 2 * CHUNK]
        out[inv] = 255 - out[inv]
        yield out


def render_plan(rng: np.random.Generator, pools: dict[str, _Pool], plan: dict[str, np.ndarray],
                params: AugmentParams = DEFAULT_PARAMS) -> dict[str, np.ndarray]:
    """Augment the planned source images into one in-memory batch (the arrays of one npz file)."""
    images = np.concatenate(list(_render_chunks(rng, pools, plan, params)))
    return {"images": images, **_plan_arrays(pools, plan)}


def batch_counts(batch: dict[str, np.ndarray]) -> dict:
    """Counts of one written batch: per bin, per filter, inverted grayscale."""
    gray = batch["filter"] != "c"
    bins = inclination_bin(batch["labels"])
    return {
        "n": int(len(batch["labels"])),
        "per_bin_colour": np.bincount(bins[~gray], minlength=N_BINS).tolist(),
        "per_bin_grayscale": np.bincount(bins[gray], minlength=N_BINS).tolist(),
        "colour": int((~gray).sum()),
        "grayscale": int(gray.sum()),
        "by_filter": {c: int((batch["filter"] == c).sum()) for c in ("c", "g", "r", "i")},
        "inverted": int(batch["inverted"].sum()),
    }


def validation_plan(rng: np.random.Generator, pools: dict[str, _Pool]) -> dict[str, np.ndarray]:
    """The fixed validation set: every test galaxy once in colour and once in grayscale.

    The grayscale band of each galaxy is g, r or i with equal chance (among
    the bands holding it); half the grayscale images are inverted.  The
    inclination distribution stays natural: it measures the real task.
    """
    code, idx = [], []
    if "gri" in pools:
        code.append(np.full(len(pools["gri"].labels), "c"))
        idx.append(np.arange(len(pools["gri"].labels)))
    gray = [b for b in GRAY_BANDS if b in pools]
    if gray:
        where = {b: {int(p): i for i, p in enumerate(pools[b].pgc)} for b in gray}
        pgcs = sorted(set().union(*[w.keys() for w in where.values()]))
        for p in pgcs:
            have = [b for b in gray if p in where[b]]
            b = have[rng.integers(len(have))]
            code.append(np.array([b]))
            idx.append(np.array([where[b][p]]))
    code, idx = np.concatenate(code).astype("<U1"), np.concatenate(idx).astype(np.int64)
    inv = np.zeros(len(code), bool)
    g = np.flatnonzero(code != "c")
    inv[rng.choice(g, len(g) // 2, replace=False)] = True
    order = rng.permutation(len(code))
    return {"code": code[order], "index": idx[order], "inverted": inv[order]}


# ---- the stage ------------------------------------------------------------

_NPY_IMAGES = "images.npy"


def write_plan(path, rng: np.random.Generator, pools: dict[str, _Pool], plan: dict[str, np.ndarray],
               params: AugmentParams = DEFAULT_PARAMS, executor: ThreadPoolExecutor | None = None) -> dict:
    """Augment a planned batch straight into an npz file; return its small arrays.

    The images are written chunk by chunk in file order into the zip entry
    (deflate level 1), so memory holds a few chunks, never the whole batch;
    with an `executor` (one worker) the compression of one chunk overlaps the
    augmentation of the next.  The file is renamed into place only when
    complete.  np.savez_compressed (level 6) would compress these noisy images
    only ~8% better but 4-5x slower, making writing the bottleneck.
    """
    small = _plan_arrays(pools, plan)
    size = next(iter(pools.values())).images.shape[1]
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (len(plan["code"]), size, size, 3)}
    with iio.atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True) as zf:
            with zf.open(_NPY_IMAGES, "w", force_zip64=True) as fh:
                np.lib.format.write_array_header_2_0(fh, header)
                pending = collections.deque()
                try:
                    for chunk in _render_chunks(rng, pools, plan, params):
                        if executor is None:
                            fh.write(chunk)
                            continue
                        pending.append(executor.submit(fh.write, chunk))
                        while len(pending) > 2:  # bound the chunks in flight
                            pending.popleft().result()
                finally:
                    for f in pending:
                        f.result()
            for key, value in small.items():
                with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, value, allow_pickle=False)
    return small


def augment_stage(samples_dir, out_dir, size: int, bands=("g", "r", "i", "gri"),
                  n_batches: int = 3, batch_size: int = 100, seed: int = 42,
                  params: AugmentParams = DEFAULT_PARAMS, progress: bool = True) -> dict:
    """Write the augmented training batches, validation set and augment.json.

    For every training set Uset_000..Uset_<m_iter> found in `samples_dir`
    (train_000 and the bagging subsamples), `n_batches` files
    ``Uset_<jjj>_npz/<S>x<S>_train_aug_<NN>.npz``; ``<S>x<S>_validation_aug.npz``
    from test_000.  `out_dir` (the run's ``augmented`` folder) must not exist;
    it appears only when everything was written.  Memory holds one Uset's
    source images and a few chunks of one batch file at a time, whatever
    n_batches.  Returns the augment.json record (parameters, counts, empty
    bins, files).
    """
    t0 = time.perf_counter()
    bands = list(dict.fromkeys(bands))
    bad = [b for b in bands if b not in BANDS]
    if not bands or bad:
        raise AugmentInputError(f"bands {bad or bands} invalid; expected some of {list(BANDS)}")
    for name, v in (("size", size), ("n_batches", n_batches), ("batch_size", batch_size)):
        if int(v) != v or v < 1:
            raise AugmentInputError(f"{name}={v!r}: expected a positive integer")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; refusing to overwrite it (use a new run folder)")
    usets = discover_usets(samples_dir, size, bands)

    # Check every source set (and its bins) before writing anything.
    source_counts, empty_bins, used_bins = {}, {}, {}
    for j in usets:
        pools = _load_pools(samples_dir, size, bands, "train", j, images=False)
        name = f"Uset_{j:03d}"
        source_counts[name] = {b: p.counts() for b, p in pools.items()}
        used_bins[name], empty_bins[name] = _bin_status(pools)
        if not used_bins[name]:
            raise AugmentInputError(f"{Path(samples_dir) / _sample_name(bands[0], size, 'train', j)}: "
                                    "no inclination bin has galaxies in every band type")
    if not sum(len(p.labels) for p in _load_pools(samples_dir, size, bands, "test", 0, images=False).values()):
        raise AugmentInputError(f"{Path(samples_dir) / _sample_name(bands[0], size, 'test', 0)}: "
                                "no test galaxies to build the validation set from")

    record = {
        "stage": "04_augment", "seed": seed, "size": size, "bands": bands,
        "n_batches": n_batches, "batch_size": batch_size, "m_iter": usets[-1],
        "usets": [f"Uset_{j:03d}" for j in usets],
        "bins": BIN_NAMES, "bin_rule": "[45,50], then (lo,lo+5] up to 90",
        "transform_params": dataclasses.asdict(params),
        "source_counts": source_counts, "empty_bins": empty_bins,
        "batch_counts": {}, "files": [],
    }
    with iio.staged_dir(out_dir) as tmp, ThreadPoolExecutor(1) as writer:
        bar = tqdm(total=len(usets) * n_batches + 1, desc="04_augment batches", disable=not progress)
        vrng = np.random.default_rng(np.random.SeedSequence([seed, SALT, _VALIDATION_STREAM]))
        pools = _load_pools(samples_dir, size, bands, "test", 0)
        vname = f"{size}x{size}_validation_aug.npz"
        val = write_plan(tmp / vname, vrng, pools, validation_plan(vrng, pools), params, writer)
        record["validation"] = {"file": vname, **batch_counts(val)}
        record["files"].append(vname)
        del pools
        bar.update()
        for j in usets:
            name = f"Uset_{j:03d}"
            pools = _load_pools(samples_dir, size, bands, "train", j)
            record["batch_counts"][name] = {}
            for b in range(n_batches):
                rng = np.random.default_rng(np.random.SeedSequence([seed, SALT, _TRAIN_STREAM, j, b]))
                plan = plan_batch(rng, pools, batch_size, used_bins[name])
                rel = f"{name}_npz/{size}x{size}_train_aug_{b + 1:02d}.npz"
                small = write_plan(tmp / rel, rng, pools, plan, params, writer)
                record["batch_counts"][name][f"{b + 1:02d}"] = batch_counts(small)
                record["files"].append(rel)
                bar.update()
            del pools
        bar.close()
        record["wall_time_s"] = round(time.perf_counter() - t0, 2)
        iio.write_json(tmp / "augment.json", record)
    record["out_dir"] = str(out_dir)
    return record


def load_batch(path) -> dict[str, np.ndarray]:
    """All arrays of one augmented npz file."""
    with np.load(path) as d:
        return {k: d[k] for k in d.files}
