"""Realism report: the same image statistics on real SDSS cutouts and on the synthetic sample.

Every statistic is measured the same way on both, on the images as the pipeline
reads them (:func:`inclinet_utils.images.read_galaxy_image`), each first resized
to REFERENCE_SIZE x REFERENCE_SIZE (the simulator's and the SDSS reference
cutouts' size) so that per-pixel numbers compare like with like:

* the galaxy: the connected region around the centre of the r band image whose
  smoothed depth below the sky exceeds ISOPHOTE_DEPTH gray levels (a fixed
  isophote of the 8-bit image, found with photutils ``detect_sources``); its
  major-axis extent relative to the cutout width, its isophotal axis ratio (second
  moments of the region) and that ratio's excess over the label's expectation,
  and, for edge-on labels, the disk's vertical FWHM relative to its extent;
* the sky: sigma-clipped level and noise of the border of the r band image and
  of the colour composite (astropy ``sigma_clipped_stats``);
* the centre: the fraction of saturated pixels (black in the gray band, a
  channel at 255 in the composite);
* the colour of the disk in the composite (sky-subtracted R/G and B/G);
* the fraction of the frame covered by other sources (stars, background
  galaxies) at the same isophote;
* the white corners that rotated SDSS composites show.

:func:`placement` says where each real galaxy falls in the synthetic
distribution of every statistic; :func:`save_report` writes the tables into the
run folder (``realism/``), atomically.
"""

from __future__ import annotations

import dataclasses
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.ndimage
from astropy.stats import sigma_clipped_stats
from photutils.segmentation import detect_sources
from PIL import Image
from tqdm import tqdm

from . import catalog as icat
from . import images as iim
from . import io as iio
from . import layout
from .axis_ratio import axis_ratio_from_inclination

REFERENCE_SIZE = 512        # every image is resized to this before measuring
ISOPHOTE_DEPTH = 32.0       # gray levels below the sky: the fixed isophote of the gray r band
SMOOTH_SIGMA = 1.5          # pixels (at REFERENCE_SIZE): smoothing before the isophote
MIN_SOURCE_PIXELS = 5       # smallest region counted as a source
BORDER = 1 / 8              # sky: outer strips of this fraction of the width on each side
CENTRE_BOX = 1 / 16         # saturation: central box of this fraction of the width
WHITE_LEVEL = 235           # white corners of a composite: every channel at least this
GRAY_WHITE_LEVEL = 250      # white corners of a gray band (left out of its sky statistics)
EDGE_ON_DEG = 80.0          # edge-on thickness for labels >= this
Q0 = 0.2                    # intrinsic axis ratio of the expected b/a for a label
REAL_FOLDERS = ("real_sdss", "real_sdss_varied")
RANGE = (5.0, 95.0)         # percentiles of the synthetic range a real galaxy should lie in
MAX_SYNTHETIC = 300         # synthetic galaxies measured (a random subset of larger samples)


@dataclasses.dataclass(frozen=True)
class Statistic:
    """One image statistic: column name, axis label with units, and what it measures."""

    name: str
    label: str
    description: str


STATISTICS = (
    Statistic("extent", "major-axis extent / cutout width",
              f"extent of the galaxy along its major axis at {ISOPHOTE_DEPTH:.0f} gray levels below the sky (r)"),
    Statistic("q_excess", "b/a - expected b/a (label, q0 = 0.2)",
              "isophotal axis ratio minus the axis ratio the label implies, usable labels only"),
    Statistic("sky_level", "r sky level [gray level]", "sigma-clipped median of the r image border"),
    Statistic("sky_noise", "r sky noise [gray levels]", "sigma-clipped standard deviation of the r image border"),
    Statistic("sky_level_rgb", "composite sky level [gray level]",
              "per-channel sigma-clipped median of the composite border, mean over R, G, B"),
    Statistic("sky_noise_rgb", "composite sky noise [gray levels]",
              "per-channel sigma-clipped standard deviation of the composite border, mean over R, G, B"),
    Statistic("sat_centre", "saturated fraction of the r centre",
              "fraction of the central box at gray level <= 2 (black core of the inverted r image)"),
    Statistic("sat_centre_rgb", "saturated fraction of the composite centre",
              "fraction of the central box with a channel >= 254"),
    Statistic("disk_rg", "disk R/G in the composite", "sky-subtracted mean R / mean G outside the bulge"),
    Statistic("disk_bg", "disk B/G in the composite", "sky-subtracted mean B / mean G outside the bulge"),
    Statistic("edge_thickness", "edge-on disk FWHM / extent",
              f"median vertical FWHM of the r depth at 0.15-0.5 of the semi-extent, labels >= {EDGE_ON_DEG:.0f}"),
    Statistic("star_cover", "frame fraction covered by other sources",
              "area of every other source at the isophote / area of the frame (r)"),
    Statistic("white_corners", "white-corner fraction of the composite",
              f"area of the regions with every channel >= {WHITE_LEVEL} that touch a frame corner"),
)
STATISTIC_NAMES = tuple(s.name for s in STATISTICS)


def default_shared_dir() -> Path:
    """``../shared`` beside the project checkout."""
    return Path(__file__).resolve().parent.parent.parent / "shared"


def resize_reference(image: np.ndarray, size: int = REFERENCE_SIZE) -> np.ndarray:
    """Resize a gray or colour uint8 image to size x size (bicubic, as 01_prep resizes)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    mode = "RGB" if image.ndim == 3 else "L"
    return np.asarray(Image.fromarray(image, mode).resize((size, size), Image.Resampling.BICUBIC))


def sky_statistics(image: np.ndarray, border: float = BORDER, exclude: np.ndarray | None = None
                   ) -> tuple[np.ndarray | float, np.ndarray | float]:
    """(level, noise) of the sky: sigma-clipped median and std of the border strips.

    Gray images give floats; colour images give per-channel arrays (R, G, B).
    Pixels where `exclude` is True (white corners) are left out; every other pixel
    of the strips is used (every second row and column, to keep it fast). NaN when
    no border pixel is left.
    """
    data = np.asarray(image, dtype=np.float32)
    w = max(1, int(round(border * min(data.shape[:2]))))
    border_mask = np.zeros(data.shape[:2], dtype=bool)
    border_mask[:w] = border_mask[-w:] = border_mask[:, :w] = border_mask[:, -w:] = True
    if exclude is not None:
        border_mask &= ~exclude
    border_mask[1::2] = False
    border_mask[:, 1::2] = False
    if border_mask.sum() < 10:
        nan = np.full(data.shape[2], np.nan) if data.ndim == 3 else float("nan")
        return nan, nan
    _, median, std = sigma_clipped_stats(data[border_mask], sigma=3.0, maxiters=10, axis=0)
    if data.ndim == 3:
        return np.asarray(median, dtype=float), np.asarray(std, dtype=float)
    return float(median), float(std)


def corner_mask(image: np.ndarray, level: float) -> np.ndarray:
    """Near-white regions (every channel >= level) that touch a frame corner.

    Rotated cutouts have such corners where the rotation left no data; a binary
    opening first removes isolated bright noise pixels so only solid regions count.
    """
    data = np.asarray(image)
    white = (data.min(axis=2) if data.ndim == 3 else data) >= level
    if not (white[:4, :4].all() or white[:4, -4:].all() or white[-4:, :4].all() or white[-4:, -4:].all()):
        return np.zeros(white.shape, dtype=bool)
    white = scipy.ndimage.binary_opening(white, structure=np.ones((3, 3)), iterations=2)
    labels, _ = scipy.ndimage.label(white)
    corners = {int(labels[y, x]) for y in (0, -1) for x in (0, -1)} - {0}
    return np.isin(labels, list(corners)) if corners else np.zeros(white.shape, dtype=bool)


@dataclasses.dataclass
class GalaxyRegion:
    """The galaxy at the isophote: its pixels and shape, in pixels of the measured image."""

    mask: np.ndarray      # bool, the galaxy's connected region
    others: np.ndarray    # bool, every other source at the isophote
    xc: float
    yc: float
    theta: float          # major-axis angle, radians from +x, in [0, pi)
    major: float          # full extent along the major axis, pixels
    q: float              # isophotal axis ratio (second moments of the region)


def galaxy_region(depth: np.ndarray, threshold: float = ISOPHOTE_DEPTH) -> GalaxyRegion | None:
    """Segment `depth` (signal above the sky, larger = brighter) at `threshold`.

    The galaxy is the region holding the centre pixel, else the one nearest the
    centre within a tenth of the width; None when there is none.
    """
    segm = detect_sources(depth, threshold, MIN_SOURCE_PIXELS)
    if segm is None:
        return None
    labels = segm.data
    ny, nx = labels.shape
    cy, cx = ny // 2, nx // 2
    lab = int(labels[cy, cx])
    if lab == 0:
        yy, xx = np.nonzero(labels)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        if d2.size == 0 or d2.min() > (0.1 * nx) ** 2:
            return None
        lab = int(labels[yy[np.argmin(d2)], xx[np.argmin(d2)]])
    mask = labels == lab
    yy, xx = np.nonzero(mask)
    xc, yc = xx.mean(), yy.mean()
    cov = np.cov(np.stack([xx - xc, yy - yc]))
    evals, evecs = np.linalg.eigh(cov)
    theta = math.atan2(evecs[1, 1], evecs[0, 1]) % math.pi
    u = (xx - xc) * math.cos(theta) + (yy - yc) * math.sin(theta)
    q = math.sqrt(max(evals[0], 0.0) / evals[1]) if evals[1] > 0 else float("nan")
    return GalaxyRegion(mask=mask, others=(labels > 0) & ~mask, xc=float(xc), yc=float(yc), theta=theta,
                        major=float(u.max() - u.min() + 1.0), q=float(q))


def expected_axis_ratio(inc_deg, q0: float = Q0):
    """b/a of a thick disk of intrinsic axis ratio q0 at inclination inc (degrees)."""
    return axis_ratio_from_inclination(inc_deg, q0)


def centre_box(image: np.ndarray, fraction: float = CENTRE_BOX) -> np.ndarray:
    """The central square of side `fraction` x width."""
    n = image.shape[0]
    half = max(1, int(round(fraction * n / 2)))
    return image[n // 2 - half:n // 2 + half, n // 2 - half:n // 2 + half]


def edge_on_thickness(depth: np.ndarray, region: GalaxyRegion) -> float:
    """Median vertical FWHM of the depth profile over the outer disk, / the major extent.

    Columns at 0.15-0.5 of the semi-extent on both sides of the centre (clear of the
    bulge); each column's FWHM around its peak near the midplane. Cutouts have the
    major axis horizontal, so columns cut the disk vertically.
    """
    a = region.major / 2
    ny, nx = depth.shape
    offsets = np.arange(math.ceil(0.15 * a), math.floor(0.5 * a) + 1)
    cols = np.concatenate([region.xc - offsets, region.xc + offsets]).round().astype(int)
    cols = cols[(cols >= 0) & (cols < nx)]
    y_lo, y_hi = max(0, int(region.yc - a / 2)), min(ny, int(region.yc + a / 2) + 1)
    widths = [_fwhm(depth[y_lo:y_hi, x], region.yc - y_lo, a / 4) for x in cols]
    widths = np.asarray([w for w in widths if np.isfinite(w)])
    return float(np.median(widths) / region.major) if widths.size else float("nan")


def _fwhm(profile: np.ndarray, centre: float, window: float) -> float:
    """Full width at half maximum of the peak within `window` of `centre` (linear interpolation)."""
    lo, hi = max(0, int(centre - window)), min(profile.size, int(centre + window) + 1)
    if hi - lo < 3:
        return float("nan")
    k = lo + int(np.argmax(profile[lo:hi]))
    peak = profile[k]
    if peak <= 0:
        return float("nan")
    half = peak / 2
    below = np.flatnonzero(profile[:k] < half)
    above = np.flatnonzero(profile[k:] < half)
    if below.size == 0 or above.size == 0:
        return float("nan")
    i0, i1 = below[-1], k + above[0]
    left = i0 + (half - profile[i0]) / (profile[i0 + 1] - profile[i0])
    right = i1 - 1 + (profile[i1 - 1] - half) / (profile[i1 - 1] - profile[i1])
    return float(right - left)


def disk_colour(rgb: np.ndarray, region: GalaxyRegion, sky_rgb: np.ndarray) -> tuple[float, float]:
    """(R/G, B/G) of the sky-subtracted composite over the galaxy region outside the bulge.

    The bulge is the central ellipse of 0.3 x the region's extent (same axis ratio).
    """
    yy, xx = np.nonzero(region.mask)
    u = (xx - region.xc) * math.cos(region.theta) + (yy - region.yc) * math.sin(region.theta)
    v = -(xx - region.xc) * math.sin(region.theta) + (yy - region.yc) * math.cos(region.theta)
    a = region.major / 2
    b = max(a * region.q, 1.0)
    outer = (u / a) ** 2 + (v / b) ** 2 > 0.3 ** 2
    if outer.sum() < MIN_SOURCE_PIXELS:
        return float("nan"), float("nan")
    mean = rgb[yy[outer], xx[outer]].astype(np.float64).mean(axis=0) - sky_rgb
    if mean[1] <= 0:
        return float("nan"), float("nan")
    return float(mean[0] / mean[1]), float(mean[2] / mean[1])


def gray_statistics(gray: np.ndarray, label_inc: float | None = None) -> tuple[dict, GalaxyRegion | None]:
    """Statistics of one gray band cutout (black galaxy on white sky), resized to REFERENCE_SIZE.

    `label_inc` is the labelled inclination in degrees (None for 'F' and '0'):
    it gives the axis-ratio excess and, for edge-on labels, the disk thickness.
    """
    gray = resize_reference(gray)
    sky, noise = sky_statistics(gray, exclude=corner_mask(gray, GRAY_WHITE_LEVEL))
    depth = scipy.ndimage.gaussian_filter(sky - gray.astype(np.float32), SMOOTH_SIGMA)
    region = galaxy_region(depth)
    stats = dict.fromkeys(("extent", "q_iso", "q_excess", "edge_thickness"), float("nan"))
    stats.update(sky_level=sky, sky_noise=noise, sat_centre=float((centre_box(gray) <= 2).mean()))
    stats["star_cover"] = float("nan")
    if region is None:
        return stats, None
    stats.update(extent=region.major / gray.shape[1], q_iso=region.q, star_cover=float(region.others.mean()))
    if label_inc is not None and np.isfinite(label_inc):
        stats["q_excess"] = region.q - float(expected_axis_ratio(label_inc))
        if label_inc >= EDGE_ON_DEG:
            stats["edge_thickness"] = edge_on_thickness(depth, region)
    return stats, region


def colour_statistics(rgb: np.ndarray, region: GalaxyRegion | None) -> dict:
    """Statistics of one colour composite (white galaxy on dark sky), resized to REFERENCE_SIZE."""
    rgb = resize_reference(rgb)
    corners = corner_mask(rgb, WHITE_LEVEL)
    sky_rgb, noise_rgb = sky_statistics(rgb, exclude=corners)
    stats = {"sky_level_rgb": float(np.mean(sky_rgb)), "sky_noise_rgb": float(np.mean(noise_rgb)),
             "sat_centre_rgb": float((centre_box(rgb).max(axis=2) >= 254).mean()),
             "white_corners": float(corners.mean()),
             **{f"sky_{c}_rgb": float(v) for c, v in zip("RGB", sky_rgb)}}
    rg, bg = disk_colour(rgb, region, sky_rgb) if region is not None else (float("nan"), float("nan"))
    stats.update(disk_rg=rg, disk_bg=bg)
    return stats


def _label_inclination(label: str) -> float | None:
    return None if label in ("F", "0") else float(label)


def galaxy_statistics(images_dir: str | os.PathLike, pgc: int, label: str) -> dict:
    """Every statistic of one galaxy (NaN where it cannot be measured) and a `note` saying why."""
    row = {"pgc": int(pgc), "label": str(label), "note": ""}
    path = iim.find_image(images_dir, pgc, "r")
    if path is None:
        return {**row, "note": "skipped: no r band image"}
    try:
        gray = iim.read_galaxy_image(path, "r")
    except iim.ImageReadError as exc:
        return {**row, "note": f"skipped: {exc}"}
    stats, region = gray_statistics(gray, _label_inclination(str(label)))
    row.update(stats)
    if region is None:
        row["note"] = f"no galaxy at {ISOPHOTE_DEPTH:.0f} gray levels below the sky"
    path = iim.find_image(images_dir, pgc, "gri")
    if path is None:
        row["note"] = "; ".join(filter(None, [row["note"], "no colour composite"]))
        return row
    try:
        row.update(colour_statistics(iim.read_galaxy_image(path, "gri"), region))
    except iim.ImageReadError as exc:
        row["note"] = "; ".join(filter(None, [row["note"], f"composite skipped: {exc}"]))
    return row


def _galaxy_row(task) -> dict:
    return galaxy_statistics(*task)


def folder_statistics(images_dir: str | os.PathLike, catalog: pd.DataFrame, source: str,
                      progress: bool = False, n_workers: int = 1) -> pd.DataFrame:
    """One row of statistics per catalog galaxy of `images_dir`; `source` names the folder.

    `n_workers` processes share the galaxies (0: one per core); the table is the same.
    """
    tasks = [(str(images_dir), int(pgc), str(label)) for pgc, label in zip(catalog["pgc"], catalog["label"])]
    workers = min(os.cpu_count() or 1, len(tasks)) if n_workers == 0 else min(int(n_workers), max(len(tasks), 1))
    bar = dict(total=len(tasks), desc=f"realism {source}", disable=not progress)
    if workers <= 1:
        rows = [_galaxy_row(t) for t in tqdm(tasks, **bar)]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = list(tqdm(pool.map(_galaxy_row, tasks, chunksize=4), **bar))
    table = pd.DataFrame(rows)
    for name in ("extent", "q_iso") + STATISTIC_NAMES:
        if name not in table.columns:
            table[name] = np.nan
    table.insert(0, "source", source)
    return table


def real_statistics(shared_dir: str | os.PathLike | None = None, folders=REAL_FOLDERS,
                    n_workers: int = 1) -> pd.DataFrame:
    """Statistics of the real galaxies of every folder of `folders` present in `shared_dir`.

    Each folder is in the input format (``galaxies/``, ``catalogs/catalog.csv``); absent ones are
    left out (the table may be empty).
    """
    shared_dir = Path(shared_dir) if shared_dir else default_shared_dir()
    tables = []
    for name in folders:
        images_dir, cat_path = shared_dir / name / layout.INPUT_IMAGES_DIR, shared_dir / name / layout.INPUT_CATALOG
        if images_dir.is_dir() and cat_path.is_file():
            tables.append(folder_statistics(images_dir, icat.read_catalog(cat_path), name, n_workers=n_workers))
    if not tables:
        return pd.DataFrame(columns=["source", "pgc", "label", "note", "q_iso", *STATISTIC_NAMES])
    return pd.concat(tables, ignore_index=True)


def synthetic_statistics(run_dir: str | os.PathLike, max_galaxies: int = MAX_SYNTHETIC, seed: int = 0,
                         progress: bool = True, n_workers: int = 1) -> pd.DataFrame:
    """Statistics of (a random subset of at most `max_galaxies` of) a run's simulated sample."""
    paths = layout.run_paths(run_dir)
    return sample_statistics(paths["input_images"], paths["input_catalog"], max_galaxies, seed, progress,
                             n_workers=n_workers)


def sample_statistics(images_dir: str | os.PathLike, catalog_path: str | os.PathLike, max_galaxies: int = MAX_SYNTHETIC,
                      seed: int = 0, progress: bool = True, source: str = "synthetic",
                      n_workers: int = 1) -> pd.DataFrame:
    """Statistics of a random subset (at most `max_galaxies`) of the galaxies of one catalog."""
    if max_galaxies < 1:
        raise ValueError(f"max_galaxies={max_galaxies}; expected at least 1")
    cat = icat.read_catalog(catalog_path)
    if len(cat) > max_galaxies:
        cat = cat.sample(n=max_galaxies, random_state=seed).sort_index()
    table = folder_statistics(images_dir, cat, source, progress=progress, n_workers=n_workers)
    if "inc_true" in cat.columns:
        table["inc_true"] = cat["inc_true"].to_numpy()
    return table


def placement(real: pd.DataFrame, synthetic: pd.DataFrame, stats=STATISTIC_NAMES,
              percentiles: tuple[float, float] = RANGE) -> pd.DataFrame:
    """Where each real galaxy falls in the synthetic distribution of each statistic.

    One row per (real galaxy, statistic) with a value: the percentile of the value
    among the synthetic values (ties count half), the synthetic `percentiles`
    range, and whether the value lies inside it (bounds included).
    """
    rows = []
    for name in stats:
        synth = synthetic[name].to_numpy(dtype=float)
        synth = np.sort(synth[np.isfinite(synth)])
        if synth.size == 0:
            continue
        lo, hi = np.percentile(synth, percentiles)
        for _, r in real.iterrows():
            value = float(r[name])
            if not np.isfinite(value):
                continue
            pct = 100.0 * (np.searchsorted(synth, value, "left") + np.searchsorted(synth, value, "right")) \
                / (2 * synth.size)
            rows.append({"source": r["source"], "pgc": int(r["pgc"]), "label": r["label"], "statistic": name,
                         "value": value, "percentile": pct, "synthetic_lo": lo, "synthetic_hi": hi,
                         "inside": bool(lo <= value <= hi), "n_synthetic": int(synth.size)})
    return pd.DataFrame(rows, columns=["source", "pgc", "label", "statistic", "value", "percentile",
                                       "synthetic_lo", "synthetic_hi", "inside", "n_synthetic"])


def outside_table(placed: pd.DataFrame) -> pd.DataFrame:
    """Per statistic: how many real galaxies were measured, how many fall outside, and which."""
    rows = []
    for name, group in placed.groupby("statistic", sort=False):
        out = group[~group["inside"]]
        rows.append({"statistic": name, "measured": len(group), "outside": len(out),
                     "galaxies outside (percentile)": ", ".join(
                         f"pgc{p} ({q:.0f})" for p, q in zip(out["pgc"], out["percentile"]))})
    return pd.DataFrame(rows, columns=["statistic", "measured", "outside", "galaxies outside (percentile)"])


def percentile_table(placed: pd.DataFrame) -> pd.DataFrame:
    """Real galaxies x statistics: the percentile in the synthetic distribution, '*' when outside."""
    cells = placed.assign(cell=[f"{p:.0f}" + ("" if inside else "*")
                                for p, inside in zip(placed["percentile"], placed["inside"])])
    table = cells.pivot_table(index=["source", "pgc", "label"], columns="statistic", values="cell", aggfunc="first")
    return table.reindex(columns=[n for n in STATISTIC_NAMES if n in table.columns]).fillna("")


@dataclasses.dataclass
class RealismReport:
    """The report of one run: both statistics tables, the placement, and where they were saved."""

    real: pd.DataFrame
    synthetic: pd.DataFrame
    placed: pd.DataFrame
    folder: Path


def make_report(run_dir: str | os.PathLike, shared_dir: str | os.PathLike | None = None,
                max_synthetic: int = MAX_SYNTHETIC, progress: bool = True, n_workers: int = 1) -> RealismReport:
    """Measure the real galaxies beside the project and the run's synthetic sample, place
    each real galaxy in the synthetic distributions, and save it all in ``<run>/realism/``.

    `n_workers` processes measure the galaxies (0: one per core)."""
    real = real_statistics(shared_dir, n_workers=n_workers)
    synthetic = synthetic_statistics(run_dir, max_galaxies=max_synthetic, progress=progress, n_workers=n_workers)
    placed = placement(real, synthetic)
    return RealismReport(real, synthetic, placed, save_report(run_dir, real, synthetic, placed))


def save_report(run_dir: str | os.PathLike, real: pd.DataFrame, synthetic: pd.DataFrame,
                placed: pd.DataFrame) -> Path:
    """Write ``<run>/realism/`` (real and synthetic statistics, placement, summary) atomically.

    The folder appears only when complete and is never overwritten.
    """
    folder = layout.run_paths(run_dir)["realism"]
    summary = {"reference_size": REFERENCE_SIZE, "isophote_depth_gray_levels": ISOPHOTE_DEPTH,
               "range_percentiles": list(RANGE), "n_real": int(len(real)), "n_synthetic": int(len(synthetic)),
               "statistics": {s.name: s.description for s in STATISTICS},
               "outside": outside_table(placed).to_dict("records")}
    with iio.staged_dir(folder) as tmp:
        iio.write_text(tmp / "real_statistics.csv", real.to_csv(index=False))
        iio.write_text(tmp / "synthetic_statistics.csv", synthetic.to_csv(index=False))
        iio.write_text(tmp / "placement.csv", placed.to_csv(index=False))
        iio.write_json(tmp / "summary.json", summary)
    return folder


# ---- two instruments side by side --------------------------------------------------------

def render_instruments(n_galaxies: int = 4, seed: int = 0, instruments=("sdss", "deep")) -> dict:
    """The same `n_galaxies` usable galaxies (inclination >= 45) seen by each instrument:
    {name: [(pgc, inc_true, r gray (512, 512), composite (512, 512, 3), statistics)]}.

    Each galaxy keeps its parameters and render seed; only the instrument's grid, seeing,
    sky, noise and composite colours change (presets.INSTRUMENTS)."""
    from . import simulate

    out = {}
    for name in instruments:
        params = simulate.draw_parameters(max(40, 4 * n_galaxies), seed, instrument=name)
        keep = params.index[params["inc_flg"] == 0][:n_galaxies]
        rows = []
        for k in keep:
            r = simulate.render_galaxy(params.loc[k].to_dict(), np.random.SeedSequence([seed, int(k)]), name)
            stats, region = gray_statistics(r.gray["r"], float(params.at[k, "inc"]))
            stats.update(colour_statistics(r.rgb, region))
            rows.append((int(params.at[k, "pgc"]), float(params.at[k, "inc_true"]), r.gray["r"], r.rgb, stats))
        out[name] = rows
    return out


def instrument_table(rendered: dict, stats=("extent", "q_excess", "sky_noise", "sky_noise_rgb", "disk_rg",
                                            "disk_bg")) -> pd.DataFrame:
    """Median of each statistic per instrument over the galaxies of `render_instruments`."""
    return pd.DataFrame({name: {s: float(np.nanmedian([row[4][s] for row in rows])) for s in stats}
                         for name, rows in rendered.items()})
