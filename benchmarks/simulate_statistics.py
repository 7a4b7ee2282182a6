"""Image statistics of a rendered synthetic sample, to show a simulator change keeps them.

    nice -n 15 python benchmarks/simulate_statistics.py [N] [--seed 42] [--csv after.csv] [--compare before.csv]

Renders N galaxies (default 200) with ``simulate.render_galaxy`` in this process, with
the seeds ``simulate_sample`` uses, writes nothing unless ``--csv`` is given, and prints,
over the sample, the 10/50/90th percentiles and the mean of:

* sky: median and robust noise of the sky-subtracted native r image (nanomaggies/pixel),
  the 1-sigma surface brightness of that noise (mag/arcsec^2, SDSS r: ~24.4), the same
  for g and i;
* galaxy extent: the centre's connected region above 2 sky sigma (smoothed r image):
  its major-axis half length over R25 and its area over the cutout;
* flux: r flux inside R25 (circular aperture) over the catalog's total r flux, and the
  aperture g-r minus the catalog g_r;
* axis ratio: the isophotal b/a of that region minus cos(i) (inclination bins), and the
  simulator's own ``b_a`` column minus cos(i);
* stars: fraction of the field outside 1.5 R25 brighter than 5 sky sigma;
* display: sky level, sky noise and the centre's level of the 8-bit r image, the
  fraction of black (0) pixels at the centre, and the sky level of the colour composite.

No pass/fail: run it before and after a change and compare the two tables (with the
same N and seed, a change that keeps the random streams gives identical numbers);
``--compare`` pairs each galaxy with its earlier rendering (the population is the same,
only the random realisation of its light and noise may differ). The results for the
render_galaxy split of issue 9 are in benchmarks/SIMULATE_STATISTICS.md.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd
import scipy.ndimage


def _mad_sigma(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def _clipped_std(x: np.ndarray) -> float:
    """Standard deviation of the values within 4 robust sigma of the median (8-bit skies)."""
    med, sig = np.median(x), max(_mad_sigma(x), 1.0)
    return float(np.std(x[np.abs(x - med) < 4 * sig]))


def _border(a: np.ndarray, w: int = 24) -> np.ndarray:
    return np.concatenate([a[:w].ravel(), a[-w:].ravel(), a[w:-w, :w].ravel(), a[w:-w, -w:].ravel()])


def _isophote(r: np.ndarray, sigma: float):
    """Centre's connected region above 2 sigma of the smoothed image: (half major axis, b/a, area)."""
    smooth = scipy.ndimage.gaussian_filter(r.astype(np.float32), 1.5)
    noise = _mad_sigma(_border(smooth))
    labels, _ = scipy.ndimage.label(smooth > 2.0 * noise)
    n = r.shape[0]
    lab = labels[n // 2 - 2:n // 2 + 3, n // 2 - 2:n // 2 + 3].max()
    if lab == 0:
        return float("nan"), float("nan"), 0
    yy, xx = np.nonzero(labels == lab)
    xm, ym = xx.mean(), yy.mean()
    cov = np.cov(np.stack([xx - xm, yy - ym]))
    lo, hi = np.linalg.eigvalsh(cov)
    major = float(np.max(np.abs(xx - xm)))
    return major, float(math.sqrt(max(lo, 0.0) / hi)), int(xx.size)


def galaxy_statistics(row: dict, rendered) -> dict:
    """The statistics of one rendered galaxy (see the module docstring)."""
    scale, n = rendered.scale, rendered.native["r"].shape[0]
    r25 = row["d25"] * 30.0 / scale                            # pixels
    out = {"inc_true": row["inc_true"]}
    for b in ("g", "r", "i"):
        sky = _border(rendered.native[b])
        sig = _mad_sigma(sky)
        out[f"sky_median_{b}"] = float(np.median(sky)) / sig
        out[f"mu_1sigma_{b}"] = 22.5 - 2.5 * math.log10(sig / scale ** 2)
    r = rendered.native["r"]
    sigma = _mad_sigma(_border(r))
    out["sky_sigma_r"] = sigma
    major, q_iso, area = _isophote(r, sigma)
    out["extent_major_r25"] = major / r25
    out["extent_area_frac"] = area / r.size
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2.0
    ap = xx ** 2 + yy ** 2 < r25 ** 2
    f_r, f_g = float(r[ap].sum()), float(rendered.native["g"][ap].sum())
    out["flux_ap_over_total"] = f_r / 10 ** (-0.4 * (row["m_r"] - 22.5))
    out["gr_ap_minus_cat"] = (-2.5 * math.log10(f_g / f_r) - row["g_r"]) if f_g > 0 and f_r > 0 else float("nan")
    cos_i = math.cos(math.radians(row["inc_true"]))
    out["q_iso_minus_cos_i"] = q_iso - cos_i
    out["b_a_minus_cos_i"] = rendered.b_a - cos_i
    outer = (xx / r25) ** 2 + (yy / (r25 * max(cos_i, 0.3))) ** 2 > 1.5 ** 2
    out["stars_outer_frac"] = float((r[outer] > 5 * sigma).mean()) if outer.any() else float("nan")
    g8 = rendered.gray["r"].astype(np.float64)
    m = g8.shape[0] // 2
    out["gray_sky_level"] = float(np.median(_border(g8)))
    out["gray_sky_noise"] = _clipped_std(_border(g8))
    out["gray_centre"] = float(g8[m - 6:m + 6, m - 6:m + 6].mean())
    out["gray_centre_black_frac"] = float((g8[m - 6:m + 6, m - 6:m + 6] == 0).mean())
    rgb = rendered.rgb.astype(np.float64).mean(axis=2)
    out["rgb_sky_level"] = float(np.median(_border(rgb)))
    out["rgb_sky_noise"] = _clipped_std(_border(rgb))
    out["rgb_centre"] = float(rgb[m - 6:m + 6, m - 6:m + 6].mean())
    return out


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """10/50/90th percentiles and mean of every statistic, plus b/a residuals by inclination."""
    cols = [c for c in table.columns if c != "inc_true"]
    rows = {c: {"p10": table[c].quantile(0.1), "p50": table[c].median(), "p90": table[c].quantile(0.9),
                "mean": table[c].mean(), "n_nan": int(table[c].isna().sum())} for c in cols}
    bins = pd.cut(table["inc_true"], [0, 45, 70, 90])
    for col in ("q_iso_minus_cos_i", "b_a_minus_cos_i"):
        for interval, g in table.groupby(bins, observed=True)[col]:
            rows[f"{col} i{interval.left:.0f}-{interval.right:.0f}"] = {
                "p10": g.quantile(0.1), "p50": g.median(), "p90": g.quantile(0.9), "mean": g.mean(),
                "n_nan": int(g.isna().sum())}
    return pd.DataFrame(rows).T


def paired(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Mean of each statistic before and after, and the mean per-galaxy difference with its z score."""
    if len(before) != len(after) or not np.allclose(before["inc_true"], after["inc_true"]):
        raise SystemExit("--compare: the two tables are not the same galaxies (use the same N and seed)")
    rows = {}
    for c in (c for c in after.columns if c != "inc_true"):
        d = (after[c] - before[c]).dropna()
        se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
        rows[c] = {"before": before[c].mean(), "after": after[c].mean(), "mean_diff": d.mean(),
                   "z": d.mean() / se if se > 0 else 0.0}
    return pd.DataFrame(rows).T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=200, help="number of galaxies (default 200)")
    parser.add_argument("--seed", type=int, default=42, help="random seed of the sample")
    parser.add_argument("--csv", default="", help="also write the per-galaxy statistics to this CSV file")
    parser.add_argument("--compare", default="", help="per-galaxy CSV of an earlier run (same N and seed): "
                        "also print the paired differences")
    args = parser.parse_args()

    from inclinet_utils import simulate

    params = simulate.draw_parameters(args.n, args.seed)
    seeds = np.random.SeedSequence([args.seed, simulate.SALT_RENDER]).spawn(args.n)
    t0, cpu0 = time.perf_counter(), time.process_time()
    stats = []
    for row, s in zip(params.to_dict("records"), seeds):
        stats.append(galaxy_statistics(row, simulate.render_galaxy(row, s)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    table = pd.DataFrame(stats)
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(f"{args.n} galaxies, seed {args.seed}: rendered in {wall:.1f} s wall, "
          f"{1000 * cpu / args.n:.0f} ms CPU per galaxy (render + statistics)")
    with pd.option_context("display.width", 120, "display.max_rows", 100):
        print(summary(table).round(4).to_string())
        if args.compare:
            print(f"\npaired against {args.compare} (same galaxies; 'z' = mean difference / its standard error)")
            print(paired(pd.read_csv(args.compare), table).round(4).to_string())


if __name__ == "__main__":
    main()
