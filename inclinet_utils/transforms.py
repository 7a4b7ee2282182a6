"""Image transforms of stage 04 that keep the label (the galaxy's axis ratio).

One composite affine resampling per image (rotation, flips, ONE isotropic zoom
factor, translation), the border filled with the image's own sky level and
noise; then photometric changes (gamma and the brightness above the sky for every
image; blur, channel gain and offset, noise and partial desaturation for colour
images only, as in the original).  Random draws come from a NumPy Generator; the
pixel work runs in TensorFlow, CHUNK images per call.  The stage that decides which images to
augment is `augment`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

CHUNK = 64  # images per TensorFlow call (cache-friendly); fixed so results never depend on the machine


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random transforms (uniform draws unless noted).

    Why these ranges (benchmarks/ACCURACY.md has the experiments): cutouts come
    rotated so the major axis is horizontal, so a full 0-360 deg rotation only
    made the regressors learn a harder, rotation-invariant task (single-model RMS
    9.9 deg vs 3.3 deg with +-15 deg at the laptop budget); +-15 deg still covers
    position-angle errors of real cutouts. Real collections frame galaxies
    differently from the simulator: hence a wide, log-uniform zoom. Their sky
    pedestals differ too, but that is removed before the networks see an image
    (`images.normalise_composite_sky`); training on random pedestals instead cost
    1.3-1.8 deg of synthetic RMS for the same real-galaxy accuracy.
    """

    rotation_deg: tuple[float, float] = (-15.0, 15.0)
    zoom: tuple[float, float] = (0.55, 1.8)         # ONE factor for both axes, log-uniform
    translate_frac: float = 0.15                    # of the image size, x and y
    flip_prob: float = 0.5                          # left/right and up/down, each
    # colour only (the original applies them to colour images only)
    blur_prob: float = 0.5
    blur_sigma_px: tuple[float, float] = (0.0, 0.5)
    gain: tuple[float, float] = (0.8, 1.2)
    offset: tuple[float, float] = (-5.0, 5.0)       # in 0-255 pixel units
    offset_prob: float = 1.0                        # share of colour images given an offset
    noise_sigma: tuple[float, float] = (0.0, 3.0)   # in 0-255 pixel units
    per_channel_prob: float = 0.5                   # gain/offset/noise drawn per channel
    desaturate_prob: float = 0.1
    desaturate_alpha: tuple[float, float] = (0.0, 1.0)
    # colour and grayscale
    gamma: tuple[float, float] = (0.97, 1.03)
    # The galaxy's light above the sky times ONE log-uniform factor per image (exposure depth
    # and display stretch differ between collections). Off by default: (0.5, 2.0) made the
    # regressors 4x less sensitive to a fainter galaxy but cost 0.5 deg of synthetic RMS at
    # the laptop budget (benchmarks/ACCURACY.md, experiment G).
    brightness: tuple[float, float] = (1.0, 1.0)


DEFAULT_PARAMS = AugmentParams()


def with_brightness(brightness_range: float, base: AugmentParams = DEFAULT_PARAMS) -> AugmentParams:
    """`base` with the light above the sky scaled by a log-uniform factor in [1/range, range] (1: off)."""
    if not brightness_range >= 1.0:
        raise ValueError(f"brightness_range {brightness_range!r}: expected a factor >= 1 (1: off)")
    return dataclasses.replace(base, brightness=(1.0 / brightness_range, float(brightness_range)))


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
    zoom = np.exp(rng.uniform(*np.log(params.zoom), n))  # log-uniform: no preferred scale
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
        "offset": per_channel(params.offset) * (rng.random(n) < params.offset_prob)[:, None].astype(np.float32),
        "noise_sigma": rng.uniform(*params.noise_sigma, n).astype(np.float32),
        "noise_per_channel": rng.random(n) < params.per_channel_prob,
        "desaturate": desat.astype(np.float32),
        "brightness": _brightness(rng, n, params),
    }


def _brightness(rng: np.random.Generator, n: int, params: AugmentParams) -> np.ndarray:
    lo, hi = params.brightness
    if lo == hi:  # a fixed factor draws nothing: the other transforms stay as they were without it
        return np.full(n, lo, np.float32)
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n)).astype(np.float32)


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


def _scale_about_sky(y, sky, brightness):
    """The light above the sky times `brightness` (one factor per image); the sky stays.

    A factor of exactly 1 leaves the image untouched: sky + (y - sky) rounds differently in
    a few pixels per million, and training amplifies that into another network."""
    b = brightness[:, None, None, None]
    return tf.where(tf.equal(b, 1.0), y, sky + b * (y - sky))


@tf.function(input_signature=[_IMG, _TR, _SEED, _VEC, _VEC])
def _augment_gray_tf(images, transforms, seed, gamma, brightness):
    # The three channels of a grayscale image are equal: work on one, copy at the end.
    x = _gamma_lut(images[..., :1], gamma)
    sky, sky_sigma = _sky(x)
    y, inside = _warp(x, transforms)
    noise = tf.random.stateless_normal(tf.shape(y), seed=seed)
    y = y + (1.0 - inside) * (sky + _FILL_NOISE * sky_sigma * noise)
    return tf.tile(_to_uint8(_scale_about_sky(y, sky, brightness)), [1, 1, 1, 3])


@tf.function(input_signature=[_IMG, _TR, _SEED, _VEC, _VEC, _RGB, _RGB, _VEC,
                              tf.TensorSpec([None], tf.bool), _VEC, _VEC])
def _augment_colour_tf(images, transforms, seed, gamma, blur_sigma, gain, offset,
                       noise_sigma, noise_per_channel, desaturate, brightness):
    x = _gamma_lut(images, gamma)
    sky, sky_sigma = _sky(x)
    y, inside = _warp(x, transforms)
    outside = 1.0 - inside
    y = _scale_about_sky(_blur(y + outside * sky, blur_sigma), sky, brightness)
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
    fill_sigma = _FILL_NOISE * sky_sigma * gain[:, None, None, :] * brightness[:, None, None, None]
    sigma = add_sigma + (tf.sqrt(add_sigma ** 2 + fill_sigma ** 2) - add_sigma) * outside
    y = y + sigma * noise
    return _to_uint8(y)


def augment_images(images: np.ndarray, rng: np.random.Generator, colour: bool,
                   params: AugmentParams = DEFAULT_PARAMS,
                   transforms: np.ndarray | None = None) -> np.ndarray:
    """Augment a batch of (N,S,S,3) uint8 images; every random draw comes from `rng`.

    Colour images get the geometric and all photometric transforms; grayscale
    images the geometric ones, gamma contrast and the brightness above the sky.
    `transforms` overrides the random geometry (rows of `affine_transforms`).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N,S,S,3) uint8, got {images.shape} {images.dtype}")
    n, size = images.shape[0], images.shape[1]
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
                                     ph["noise_sigma"], ph["noise_per_channel"], ph["desaturate"],
                                     ph["brightness"])
        else:
            gamma = rng.uniform(*params.gamma, m).astype(np.float32)
            res = _augment_gray_tf(images[sl], tr, seed, gamma, _brightness(rng, m, params))
        out[sl] = res.numpy()
    return out
