"""Stage 00 (simulate): a synthetic SDSS-like spiral-galaxy sample in the real input format.

This module owns the default data source of the pipeline: `simulate_sample` draws a
population (:mod:`.simulate_population`, priors in ``PRIORS``), renders each galaxy
with `render_galaxy` and writes it exactly as the real cutouts:
``pgc<ID>_d25x2_rot_{g,r,i}.png`` (512x512, 8-bit, black galaxy on white sky, asinh
stretch), ``pgc<ID>_d25x2_rot_gri.jpg`` (Lupton asinh colour composite) and a
pipe-delimited ``catalog.csv`` labelled by the rules of :mod:`inclinet_utils.catalog`,
with the true inclination in ``inc_true``.

`render_galaxy` assembles one galaxy from the parts that draw it, one module each:
the smooth components, arms and knots (:mod:`.simulate_galaxy`: thick inclined
exponential disk, rounder Sersic bulge, optional bar, log-spiral arms and
star-forming knots, a midplane dust lane); stars and contaminants
(:mod:`.simulate_field`: foreground stars, faint background galaxies, an
overlapping bright star or neighbour galaxy for some); observing
(:mod:`.simulate_observe`: SDSS pixel scale, seeing PSF, sky, Poisson and read
noise); the display stretch to the 8-bit products (:mod:`.simulate_display`). The telescope is
an `instrument` (``presets.INSTRUMENTS``: "sdss", the default, or "deep"), the same files
for any of them.
"""

from __future__ import annotations

import io as _io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import galsim
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm
from tqdm.contrib.concurrent import process_map

from . import catalog as icat
from . import io as iio
from . import layout
from . import simulate_display as display
from . import simulate_field as field
from . import simulate_galaxy as galaxy
from . import simulate_observe as observe
from . import simulate_population as population
from .axis_ratio import measure_axis_ratio
from .simulate_observe import BANDS, E_PER_NMGY, IMAGE_SIZE, MAX_RENDER_PIX, PIXEL_SCALE, READ_NOISE_E, SKY_MAG
from .simulate_population import (CONTAM_FRACTION, FACE_ON_DEG, PRIORS, SALT_PARAMS, USABLE_MIN_DEG, Priors)

__all__ = [
    "BANDS", "CATALOG_COLUMNS", "CONTAM_FRACTION", "E_PER_NMGY", "FACE_ON_DEG", "IMAGE_SIZE", "MAX_RENDER_PIX",
    "PIXEL_SCALE", "PRIORS", "Priors", "READ_NOISE_E", "RenderedGalaxy", "SALT_PARAMS", "SALT_RENDER", "SKY_MAG",
    "SimulationError", "USABLE_MIN_DEG", "catalog_table", "draw_parameters", "galaxy_file_names",
    "label_summary", "png_gray_bytes", "render_galaxy", "simulate_sample",
]

log = logging.getLogger(__name__)

SALT_RENDER = 0x51A1            # seed salt of the per-galaxy render streams
GALSIM_STREAM = 0x6A15          # spawn key of a galaxy's GalSim stream below its numpy one
GALAXIES_DIR = layout.INPUT_IMAGES_DIR   # inside the sample folder (the run's input/)
CATALOG_FILE = layout.INPUT_CATALOG

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


def draw_parameters(n: int, seed: int, priors: Priors = PRIORS, instrument="sdss") -> pd.DataFrame:
    """Draw the physical parameters and catalog labels of `n` galaxies (no rendering).

    Deterministic in (n, seed, priors, instrument: a name of presets.INSTRUMENTS or an
    `simulate_observe.Instrument`); see :func:`.simulate_population.draw_parameters`.
    """
    _check_args(n, seed, None)
    return population.draw_parameters(int(n), int(seed), priors, observe.instrument(instrument))


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


def render_galaxy(params: Mapping, seed, instrument="sdss") -> RenderedGalaxy:
    """Render one galaxy of `draw_parameters` in g, r, i and make its output images.

    `seed` is an int or a numpy SeedSequence; the result depends only on
    (params, seed, instrument), so any worker can render any galaxy. `instrument`: a
    name of presets.INSTRUMENTS or a `simulate_observe.Instrument` (pixel grid, noise, colours).
    """
    p = dict(params)
    inst = observe.instrument(instrument)
    seed = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng = np.random.default_rng(seed)
    deviate = _galsim_deviate(seed)
    frame = observe.make_frame(p, inst)
    geo = galaxy.Geometry.of(p)
    fluxes = galaxy.ComponentFluxes.of(p)
    smooth = galaxy.smooth_components(p, geo, frame)
    points = observe.PointLight()
    galaxy.add_arms_and_knots(points, p, geo, fluxes, frame, rng, deviate)
    bright = field.add_faint_sources(points, p, geo, frame, rng)
    canvas = points.observe(frame)                     # (3, npix, npix) float32, nmgy / pixel
    field.add_bright_stars(canvas, bright, p, geo, frame, rng)
    neighbour = field.neighbour_image(p, geo, frame, rng)
    trail = observe.trail(rng, frame) if p["trail"] else None
    native = {}
    for b_i, b in enumerate(BANDS):
        model = canvas[b_i]
        smooth.add_band(model, b, fluxes)
        if neighbour is not None:
            model += np.float32(neighbour[1][b]) * neighbour[0]
        if trail is not None and b in trail[0]:
            model += (trail[1] * observe.sky_per_pixel(b, p["sky_dmag"], frame.scale, inst)).astype(np.float32)
        native[b] = observe.add_sky_and_noise(model, b, p["sky_dmag"], frame.scale, deviate, inst)
    b_a = measure_axis_ratio(native["r"], galaxy_dark=False)  # the baseline's photutils measurement
    gray, rgb = display.to_display(native, frame.scale, rng, inst.rgb_weights)
    return RenderedGalaxy(gray=gray, rgb=rgb, native=native, scale=frame.scale, b_a=b_a)


def _galsim_deviate(seed: np.random.SeedSequence) -> galsim.BaseDeviate:
    """GalSim's random stream of one galaxy (knots, noise), a child of its seed that leaves the
    numpy stream `np.random.default_rng(seed)` untouched."""
    child = np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, GALSIM_STREAM))
    # 63-bit seed; 0 would mean "seed from the clock".
    return galsim.BaseDeviate(int(child.generate_state(1, np.uint64)[0] >> 1) or 1)


# ---------------------------------------------------------------------------
# Files and the sample
# ---------------------------------------------------------------------------

def galaxy_file_names(pgc: int) -> dict[str, str]:
    """Output file names of one galaxy, by band ('g', 'r', 'i', 'gri')."""
    return {b: layout.simulated_image_name(pgc, b) for b in (*BANDS, "gri")}


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
    """Render one galaxy and write its four images; (pgc, b_a). Runs in a worker process."""
    params, seed_seq, folder, inst = task
    rendered = render_galaxy(params, seed_seq, inst)
    names = galaxy_file_names(params["pgc"])
    for band, data in _encode(rendered).items():
        iio.write_bytes(Path(folder) / names[band], data)
    return int(params["pgc"]), rendered.b_a


def catalog_table(params: pd.DataFrame, b_a, instrument="sdss") -> pd.DataFrame:
    """The catalog written by stage 00 (column order CATALOG_COLUMNS)."""
    inst = observe.instrument(instrument)
    t = params.copy()
    t["b_a"] = np.asarray(b_a, dtype=float)
    t["bar"] = t["bar"].astype(int)
    t["trail"] = t["trail"].astype(int)
    t["contam"] = t["contam"].replace("", "none")
    t["render_scale"] = [observe.render_grid(d, inst)[1] for d in t["d25"]]
    for col in ("inc_true", "d25", "pa", "pa_img", "m_r", "g_r", "mu0_r", "h_arcsec", "hz_hr", "bt",
                "re_arcsec", "arm_frac", "knot_frac", "dust_a", "psf_fwhm", "sky_r", "star_density",
                "contam_sep", "render_scale", "b_a"):
        t[col] = t[col].astype(float).round(4)
    return t[CATALOG_COLUMNS].reset_index(drop=True)


def label_summary(galaxies: pd.DataFrame) -> pd.DataFrame:
    """One row of counts of a catalog read by `catalog.read_catalog`: face-on ('F'),
    rejected ('0') and usable (45-90 deg) galaxies, the usable fraction, and each kind
    of contamination."""
    kind = galaxies["label"].map(lambda s: s if s in ("F", "0") else "45-90")
    row = {k: int((kind == k).sum()) for k in ("F", "0", "45-90")}
    row["usable_fraction"] = round(row["45-90"] / max(len(galaxies), 1), 3)
    for name, n in galaxies["contam"].value_counts().items():
        row[f"contam_{name}"] = int(n)
    return pd.DataFrame([row], index=["galaxies"])


def _resolve_workers(n_workers):
    cores = os.cpu_count() or 1
    if n_workers in (None, 0):
        return cores
    return int(n_workers)


def _render_all(tasks: list, workers: int, progress: bool, client=None) -> list:
    """`_work` over `tasks` in order, in `workers` processes (this one if 1), with a progress bar;
    on the workers of a Dask `client` (`executor`) when one is given."""
    if client is not None:
        from .executor import dask_client, map_ordered

        with dask_client(client) as c:
            return map_ordered(_work, tasks, c, progress, "00_simulate")
    bar = dict(desc="00_simulate", unit="galaxy", disable=not progress)
    if workers <= 1:
        return [_work(task) for task in tqdm(tasks, **bar)]
    return process_map(_work, tasks, max_workers=workers, chunksize=2, **bar)


def simulate_sample(out_dir, n_galaxies: int, seed: int, n_workers: int | None = None,
                    progress: bool = True, instrument="sdss", client=None) -> pd.DataFrame:
    """Render a synthetic sample into `out_dir` (which must not exist) and return its catalog.

    Writes ``out_dir/galaxies/pgc<ID>_d25x2_rot_{g,r,i}.png`` and ``..._gri.jpg``
    and ``out_dir/catalogs/catalog.csv``; the folder appears only when complete.
    `n_workers` None or 0 uses every core. The output is identical for any
    number of workers (each galaxy has its own seed from a SeedSequence). `instrument`:
    a name of presets.INSTRUMENTS ("sdss", the default, or "deep") or an Instrument. A
    Dask `client` or scheduler address (`executor.dask_client`) renders on its workers
    (they must share the output file system).
    """
    _check_args(n_galaxies, seed, n_workers)
    inst = observe.instrument(instrument)
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; stage 00 writes a new folder (use a new run folder)")
    start = time.perf_counter()
    params = draw_parameters(int(n_galaxies), int(seed), instrument=inst)
    seeds = np.random.SeedSequence([int(seed), SALT_RENDER]).spawn(len(params))
    workers = min(_resolve_workers(n_workers), len(params))
    with iio.staged_dir(out_dir) as tmp:
        folder = tmp / GALAXIES_DIR
        folder.mkdir()
        tasks = [(rec, s, str(folder), inst) for rec, s in zip(params.to_dict("records"), seeds)]
        b_a = [q for _, q in _render_all(tasks, workers, progress, client)]
        table = catalog_table(params, b_a, inst)
        icat.write_catalog(table, tmp / CATALOG_FILE)
    log.info("rendered %d %s galaxies with %d worker(s) in %.1f s into %s", len(params), inst.name, workers,
             time.perf_counter() - start, out_dir)
    return table
