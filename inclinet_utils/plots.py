"""Figures shown in the notebooks: galleries, histograms, training curves, evaluation.

Every function takes arrays or tables and returns a matplotlib Figure with
labelled axes and units; saving is the caller's business (io.save_figure).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from PIL import Image

from . import images as iim
from . import layout
from .axis_ratio import axis_ratio_from_inclination
from .models import DEG_PER_TARGET as _DEG_PER_TARGET  # degrees per network target unit

# ---- section: simulate / prep / split (stages 00-03) ----
def _read_cutout(images_dir, pgc: int, band: str):
    """A raw input cutout as 01_prep reads it (gray 2-D, colour (H, W, 3)), or None when there is none."""
    path = iim.find_image(images_dir, pgc, band)
    return None if path is None else iim.read_galaxy_image(path, band)


def _inclination_column(catalog):
    """Exact inclinations when the catalog has them (synthetic), else the catalog 'inc'."""
    return catalog["inc_true"] if "inc_true" in catalog.columns else catalog["inc"]


def simulated_gallery(images_dir, catalog, n_columns: int = 10, gray_band: str = "r"):
    """Galaxies ordered by inclination: a gray row (black on white) and a colour row.

    Picks the galaxies closest to `n_columns` inclinations spaced evenly over the
    sample's range; titles give the exact inclination (deg) and the catalog label.
    """
    inc = _inclination_column(catalog).to_numpy(dtype=float)
    targets = np.linspace(np.nanmin(inc), np.nanmax(inc), n_columns)
    chosen = []
    for t in targets:
        order = np.argsort(np.abs(inc - t))
        pick = next((k for k in order if k not in chosen), None)
        if pick is not None:
            chosen.append(int(pick))
    chosen = sorted(set(chosen), key=lambda k: inc[k])
    fig, axes = plt.subplots(2, len(chosen), figsize=(1.7 * len(chosen), 3.9), squeeze=False)
    for col, k in enumerate(chosen):
        row = catalog.iloc[k]
        pgc = int(row["pgc"])
        label = row["label"] if "label" in catalog.columns else ""
        for r, band in enumerate((gray_band, "gri")):
            ax = axes[r, col]
            img = _read_cutout(images_dir, pgc, band)
            if img is not None:
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, col].set_title(f"i = {inc[k]:.0f}°\nlabel {label}", fontsize=9)
    axes[0, 0].set_ylabel(f"{gray_band} band", fontsize=9)
    axes[1, 0].set_ylabel("gri colour", fontsize=9)
    fig.suptitle("Synthetic galaxies ordered by inclination (0° face-on, 90° edge-on)", fontsize=11)
    fig.tight_layout()
    return fig


def inclination_histogram(catalog, face_on_deg: float = 35.0, usable_deg: float = 45.0):
    """Histogram of inclinations (deg) with the label ranges and the random-orientation law.

    For randomly oriented disks p(i) = sin(i): the dashed curve is that expectation
    for the sample size.
    """
    inc = _inclination_column(catalog).to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.arange(0, 91, 5)
    sns.histplot(inc, bins=bins, ax=ax, color="tab:blue", edgecolor="white")
    x = np.linspace(0, 90, 200)
    ax.plot(x, len(inc) * 5 * np.sin(np.radians(x)) * np.pi / 180, "k--", lw=1,
            label="random orientation, p(i) = sin i")
    ax.axvspan(0, face_on_deg, color="tab:orange", alpha=0.12, label=f"label F (< {face_on_deg:.0f}°)")
    ax.axvspan(face_on_deg, usable_deg, color="tab:red", alpha=0.10, label="label 0 (rejected)")
    ax.axvspan(usable_deg, 90, color="tab:green", alpha=0.08, label=f"usable ({usable_deg:.0f}-90°)")
    if "label" in catalog.columns:
        labels = catalog["label"].astype(str)
        counts = f"F: {(labels == 'F').sum()}, 0: {(labels == '0').sum()}, 45-90: {(~labels.isin(['F', '0'])).sum()}"
        ax.set_title(f"Inclinations of {len(inc)} galaxies ({counts})", fontsize=10)
    ax.set_xlabel("inclination (deg; 0 face-on, 90 edge-on)")
    ax.set_ylabel("number of galaxies")
    ax.set_xlim(0, 90)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def axis_ratio_vs_inclination(catalog, q0_values=(0.1, 0.2, 0.3)):
    """Measured axis ratio b/a against the true inclination, with Hubble's relation.

    cos^2 i = (q^2 - q0^2) / (1 - q0^2) for an oblate disk of intrinsic thickness q0;
    the scatter comes from bulges, PSF, noise and contamination.
    """
    inc = _inclination_column(catalog).to_numpy(dtype=float)
    q = catalog["b_a"].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    contaminated = (catalog["contam"].astype(str) != "none").to_numpy() if "contam" in catalog else np.zeros(len(q), bool)
    ax.scatter(inc[~contaminated], q[~contaminated], s=6, alpha=0.5, label="galaxies")
    if contaminated.any():
        ax.scatter(inc[contaminated], q[contaminated], s=10, marker="x", color="tab:red", alpha=0.7,
                   label="star / neighbour overlapping")
    x = np.linspace(0, 90, 200)
    for q0 in q0_values:
        ax.plot(x, axis_ratio_from_inclination(x, q0), lw=1,
                label=f"Hubble relation, q0 = {q0}")
    ax.set_xlabel("true inclination (deg)")
    ax.set_ylabel("measured axis ratio b/a (r band)")
    ax.set_xlim(0, 90)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    n_nan = int(np.isnan(q).sum())
    ax.set_title(f"b/a: photutils segment moments, as the axis-ratio baseline ({n_nan} failed)", fontsize=10)
    fig.tight_layout()
    return fig


def synthetic_vs_real(sim_images_dir, sim_catalog, real_images_dir, real_catalog, gray_band: str = "r"):
    """Real SDSS cutouts beside synthetic galaxies of the same label / inclination.

    Columns: each real galaxy; rows: real gray, synthetic gray, real colour,
    synthetic colour. The synthetic partner has the same label ('F', '0') or the
    nearest inclination for usable galaxies.
    """
    sim_inc = _inclination_column(sim_catalog).to_numpy(dtype=float)
    sim_label = sim_catalog["label"].astype(str).to_numpy()
    used = set()
    pairs = []
    for _, real in real_catalog.iterrows():
        label = str(real["label"])
        if label in ("F", "0"):
            cand = np.flatnonzero(sim_label == label)
            target = 20.0 if label == "F" else 40.0
        else:
            cand = np.flatnonzero(~np.isin(sim_label, ["F", "0"]))
            target = float(real["inc"])
        cand = [k for k in cand[np.argsort(np.abs(sim_inc[cand] - target))] if k not in used]
        if not cand:
            continue
        used.add(cand[0])
        pairs.append((real, sim_catalog.iloc[cand[0]]))
    fig, axes = plt.subplots(4, max(len(pairs), 1), figsize=(1.8 * max(len(pairs), 1), 7.6), squeeze=False)
    rows = [("real", gray_band), ("synthetic", gray_band), ("real", "gri"), ("synthetic", "gri")]
    for col, (real, sim) in enumerate(pairs):
        for r, (kind, band) in enumerate(rows):
            ax = axes[r, col]
            src, folder = (real, real_images_dir) if kind == "real" else (sim, sim_images_dir)
            img = _read_cutout(folder, int(src["pgc"]), band)
            if img is not None:
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, col].set_title(f"pgc{int(real['pgc'])}\nlabel {real['label']}", fontsize=8)
        sim_inc_k = float(sim["inc_true"] if "inc_true" in sim.index else sim["inc"])
        axes[1, col].set_title(f"synthetic i = {sim_inc_k:.0f}°, label {sim['label']}", fontsize=7)
    for r, (kind, band) in enumerate(rows):
        axes[r, 0].set_ylabel(f"{kind}\n{'gri colour' if band == 'gri' else band + ' band'}", fontsize=9)
    fig.suptitle("Real SDSS cutouts (rows 1, 3) and synthetic galaxies (rows 2, 4)", fontsize=11)
    fig.tight_layout()
    return fig
# ---- end section: simulate / prep / split ----

# ---- section: prep / compress / split (stages 01-03) ----
def prepared_examples(prep_root, size: int, bands, n_examples: int = 8, seed: int = 0):
    """Grid of prepared cutouts: one row per band, the same galaxies in every row."""
    folders = [layout.prepared_dir(prep_root, size, b) for b in bands]
    files = [{p.pgc: (f, p.label) for f in folder.glob("*.jpg") if (p := layout.parse_prepared_name(f.name))}
             for folder in folders]
    names = sorted(files[0], key=str)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(names, size=min(n_examples, len(names)), replace=False), key=str) if names else []
    fig, axes = plt.subplots(len(folders), max(len(chosen), 1), squeeze=False,
                             figsize=(1.6 * max(len(chosen), 1), 1.8 * len(folders)))
    for row, (band, found) in enumerate(zip(bands, files)):
        for col, pgc in enumerate(chosen):
            ax = axes[row, col]
            ax.set_xticks([]); ax.set_yticks([])
            if pgc in found:
                path, label = found[pgc]
                with Image.open(path) as im:
                    ax.imshow(np.asarray(im), cmap="gray", vmin=0, vmax=255)
                ax.set_title(f"pgc{pgc}\nlabel {label}", fontsize=7)
            if col == 0:
                ax.set_ylabel(band, fontsize=9)
    fig.suptitle(f"Prepared {size}x{size} cutouts (label: inclination in deg, F face-on, 0 rejected)", fontsize=9)
    fig.tight_layout()
    return fig


def split_histograms(inclinations: dict):
    """Inclination histograms of the training and held-out test sets.

    `inclinations` maps a set name (e.g. 'train_000', 'test_000') to an array of degrees.
    """
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.arange(45, 91, 2.5)
    for name, values in inclinations.items():
        ax.hist(values, bins=bins, histtype="step", lw=1.8, density=True, label=f"{name} (N={len(values)})")
    ax.set_xlabel("inclination [deg]")
    ax.set_ylabel("fraction per degree")
    ax.set_title("Inclination distribution of the split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
# ---- end section: prep / compress / split ----

# ---- section: augment (stage 04) ----

_FILTER_NAMES = {layout.filter_code(b): "colour (gri)" if layout.is_colour(b) else b for b in ("gri", "g", "r", "i")}


def _bin_bars(ax, series: dict, bin_names, title):
    x = np.arange(len(bin_names))
    width = 0.8 / max(len(series), 1)
    for k, (name, counts) in enumerate(series.items()):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, counts, width, label=name)
    top = max((max(c) for c in series.values() if len(c)), default=1)
    ax.set_ylim(0, 1.25 * top)  # headroom for the legend
    ax.set_xticks(x, bin_names, rotation=45)
    ax.set_xlabel("inclination bin (deg)")
    ax.set_ylabel("images per 5-deg bin")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=len(series), loc="upper center")


def plot_augment_histograms(before: dict, after: dict, bin_names, before_title="before: training set",
                            after_title="after: augmented batches"):
    """Inclination counts per 5-degree bin before (per band) and after augmentation.

    `before` and `after` map a series name to its nine bin counts.
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True)
    _bin_bars(axes[0], before, bin_names, before_title)
    _bin_bars(axes[1], after, bin_names, after_title)
    return fig


def plot_augment_counts(filters, inverted, title="augmented images by band"):
    """Counts of augmented images per band (c = colour), grayscale split by inversion."""
    filters, inverted = np.asarray(filters), np.asarray(inverted, bool)
    codes = [c for c in _FILTER_NAMES if (filters == c).any()]
    plain = [int(((filters == c) & ~inverted).sum()) for c in codes]
    inv = [int(((filters == c) & inverted).sum()) for c in codes]
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    names = [_FILTER_NAMES[c] for c in codes]
    ax.bar(names, plain, label="as observed")
    ax.bar(names, inv, bottom=plain, label="inverted (255 - x)")
    for k, (p, q) in enumerate(zip(plain, inv)):
        ax.text(k, p + q, f"{p + q}", ha="center", va="bottom", fontsize=9)
    ax.set_xlabel("band")
    ax.set_ylabel("number of images")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def plot_augmented_examples(images, labels, pgc_ids, filters, inverted=None, n=24, ncols=8,
                            title="augmented examples"):
    """Grid of augmented images annotated with pgc ID, inclination (deg) and band."""
    n = min(n, len(images))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.8 * ncols, 2.0 * nrows), squeeze=False,
                             constrained_layout=True)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(images[k], vmin=0, vmax=255, interpolation="nearest")
        band = _FILTER_NAMES.get(str(filters[k]), str(filters[k]))
        inv = " inv" if inverted is not None and inverted[k] else ""
        ax.set_title(f"pgc{int(pgc_ids[k])}\n{int(labels[k])} deg, {band}{inv}", fontsize=8)
    fig.suptitle(title)
    return fig

# ---- end section: augment ----

# ---- section: train (stage 05) ----
# Built on matplotlib.figure.Figure, not pyplot: the training loop redraws a figure
# every step, and pyplot would keep each one alive until closed.


def _curves_on(ax_mse, ax_mae, history: dict, label: str = "", color=None) -> None:
    steps = sorted(history)
    x = np.asarray(steps)
    get = lambda k: np.array([history[s][k] for s in steps], dtype=float)
    sq = _DEG_PER_TARGET ** 2
    ax_mse.plot(x, get("mse") * sq, "-", color=color, alpha=0.5, label=f"{label}train".strip())
    ax_mse.plot(x, get("val_mse") * sq, "-o", ms=2.5, color=color, label=f"{label}validation".strip())
    ax_mae.plot(x, get("mae") * _DEG_PER_TARGET, "-", color=color, alpha=0.5, label=f"{label}train".strip())
    ax_mae.plot(x, get("val_mae") * _DEG_PER_TARGET, "-o", ms=2.5, color=color,
                label=f"{label}validation".strip())
    passes = [s for s, prev in zip(steps[1:], steps) if history[s].get("pass") != history[prev].get("pass")]
    for s in passes:  # pass boundaries
        for ax in (ax_mse, ax_mae):
            ax.axvline(s - 0.5, color="0.8", lw=0.8, zorder=0)


def _two_panels(fig, figsize, title: str):
    """`fig` cleared (or a new Figure) with two side-by-side axes at fixed margins: the
    constrained layout engine would double the cost of each per-step redraw."""
    if fig is None:
        fig = Figure(figsize=figsize)
    else:
        fig.clear()
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.18, top=0.86 if title else 0.95, wspace=0.3)
    return (fig, *fig.subplots(1, 2))


def _label_mse_mae(fig, ax_mse, ax_mae, xlabel: str, title: str):
    ax_mse.set_yscale("log")
    ax_mse.set(xlabel=xlabel, ylabel="MSE (deg$^2$)")
    ax_mae.set(xlabel=xlabel, ylabel="MAE (deg)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def training_curves(history: dict, title: str = "", figsize=(8, 3), fig=None):
    """MSE (deg^2) and MAE (deg) of one training vs step, training and validation.

    `history` is an evalDict as {step: {"mse", "mae", "val_mse", "val_mae", ...}}
    with mse/mae in network target units (tanh range), converted here to degrees.
    `fig`: a Figure to clear and redraw (the training loop reuses one, so that no
    figure per step waits for the garbage collector).
    """
    fig, ax_mse, ax_mae = _two_panels(fig, figsize, title)
    if history:
        _curves_on(ax_mse, ax_mae, history, color="C0")
        ax_mae.legend(fontsize=7)
    return _label_mse_mae(fig, ax_mse, ax_mae, "step (one batch file)", title)


def step_timing(histories: dict):
    """Seconds per step (fit, validation, data wait, saving) for every (model, uset)."""
    fig = Figure(figsize=(7, 3), layout="constrained")
    ax = fig.subplots()
    parts = [("time_fit_s", "fit"), ("time_eval_s", "validation"), ("time_data_s", "data wait"),
             ("time_save_s", "wait for saving")]
    keys = sorted(histories, key=lambda k: (k[1], k[0]))
    bottom = np.zeros(len(keys))
    for col, name in parts:
        # median over steps, leaving out step 0 (graph tracing) when there are others
        vals = np.array([np.median([histories[k][s][col] for s in sorted(histories[k])[1:] or sorted(histories[k])])
                         for k in keys])
        ax.bar(range(len(keys)), vals, bottom=bottom, label=name)
        bottom += vals
    ax.set_xticks(range(len(keys)), [f"{m}\nUset {u:03d}" for m, u in keys], fontsize=7)
    ax.set(ylabel="median time per step (s)")
    ax.legend(fontsize=7)
    return fig
# ---- end section: train ----

# ---- section: evaluate (stage 06) ----
def _eval_delta(table):
    return np.asarray(table["measured_deg"], float) - np.asarray(table["predicted_deg"], float)


def pred_vs_measured(panels: dict):
    """Predicted vs measured inclination, before (top) and after (bottom) bias correction.

    `panels` maps a row name to (table, corrected_table, (m, b[, applied])):
    tables with measured_deg and predicted_deg of the test images; (m, b) the
    bias fit delta = m * i_measured + b from the training galaxies, drawn on
    the top panel as i_p = (1 - m) i_m - b (dotted when the correction was not
    applied). The dashed line on the bottom panel is the least-squares trend of
    the corrected test predictions (diagnostic only).
    """
    n = len(panels)
    fig, axes = plt.subplots(2, n, figsize=(3.0 * n, 6.0), squeeze=False, sharex=True, sharey=True)
    grid = np.linspace(40, 92, 2)
    for col, (name, (table, corrected, fit)) in enumerate(panels.items()):
        m, b = fit[0], fit[1]
        applied = bool(fit[2]) if len(fit) > 2 else True
        for row, (tab, title) in enumerate(((table, name), (corrected, name + " +bc"))):
            ax = axes[row, col]
            x = np.asarray(tab["measured_deg"], float)
            y = np.asarray(tab["predicted_deg"], float)
            ok = np.isfinite(y)
            jitter = np.random.default_rng(0).uniform(-0.3, 0.3, ok.sum())  # integer labels overlap
            ax.scatter(x[ok] + jitter, y[ok], s=8, alpha=0.4, lw=0, color="C0")
            ax.plot(grid, grid, color="k", lw=0.8, label="1:1")
            if row == 0:
                ax.plot(grid, (1 - m) * grid - b, color="C3", lw=1.3, ls="-" if applied else ":",
                        label=f"bias fit (train): m={m:.3f}, b={b:.1f}" + ("" if applied else ", not applied"))
            elif ok.sum() > 2:
                slope, icpt = np.polyfit(x[ok], y[ok], 1)
                ax.plot(grid, slope * grid + icpt, color="C3", ls="--", lw=1.1, label="trend on test")
            rms = np.sqrt(np.mean((x[ok] - y[ok]) ** 2)) if ok.any() else np.nan
            ax.set_title(f"{title}\nRMS {rms:.2f} deg", fontsize=8)
            ax.set_xlim(42, 92)
            ax.set_ylim(35, 92)
            ax.legend(fontsize=6, loc="upper left")
            if row == 1:
                ax.set_xlabel("measured inclination [deg]")
            if col == 0:
                ax.set_ylabel("predicted inclination [deg]")
    fig.tight_layout()
    return fig


def residual_histograms(tables: dict, outlier_deg: float = 10.0):
    """Histograms of delta = measured - predicted for each row (name -> table)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    bins = np.arange(-30, 30.5, 1.0)
    for name, table in tables.items():
        d = _eval_delta(table)
        d = d[np.isfinite(d)]
        if len(d):
            ax.hist(np.clip(d, bins[0], bins[-1]), bins=bins, histtype="step", lw=1.6,
                    label=f"{name}: RMS {np.sqrt(np.mean(d ** 2)):.2f}, N={len(d)}")
    for s in (-outlier_deg, outlier_deg):
        ax.axvline(s, color="gray", ls=":", lw=1)
    ax.set_xlabel("measured - predicted inclination [deg] (clipped at +-30)")
    ax.set_ylabel("test images")
    ax.set_title("Residuals on the held-out test set (dotted: outlier limit)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def metric_vs_inclination(tables: dict, bin_width: float = 5.0):
    """RMS and mean bias of delta in bins of measured inclination, one line per row."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    edges = np.arange(45, 90 + bin_width, bin_width)
    centres = (edges[:-1] + edges[1:]) / 2
    for name, table in tables.items():
        x = np.asarray(table["measured_deg"], float)
        d = _eval_delta(table)
        ok = np.isfinite(d)
        which = np.clip(np.digitize(x[ok], edges) - 1, 0, len(centres) - 1)
        rms = [np.sqrt(np.mean(d[ok][which == k] ** 2)) if (which == k).any() else np.nan for k in range(len(centres))]
        bias = [np.mean(d[ok][which == k]) if (which == k).any() else np.nan for k in range(len(centres))]
        ax1.plot(centres, rms, marker="o", ms=3, label=name)
        ax2.plot(centres, bias, marker="o", ms=3, label=name)
    ax1.set_ylabel("RMS of measured - predicted [deg]")
    ax2.set_ylabel("mean of measured - predicted [deg]")
    ax2.axhline(0, color="k", lw=0.8)
    for ax in (ax1, ax2):
        ax.set_xlabel(f"measured inclination [deg] ({bin_width:g}-deg bins)")
        ax.legend(fontsize=7)
    fig.suptitle("Accuracy vs inclination on the held-out test set", fontsize=9)
    fig.tight_layout()
    return fig


def framing_accuracy(table):
    """RMS and bias per framing of the held-out galaxies (framing.framing_table), one bar per estimator."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    names = list(dict.fromkeys(table["framing"]))
    y = np.arange(len(names))
    estimators = list(dict.fromkeys(table["estimator"]))
    height = 0.8 / len(estimators)
    for k, est in enumerate(estimators):
        part = table[table["estimator"] == est].set_index("framing").loc[names]
        ax1.barh(y + k * height, part["rms_deg"], height, label=est)
        ax2.barh(y + k * height, part["bias_deg"], height, label=est)
    ax1.set_yticks(y + 0.4 - height / 2, names, fontsize=8)
    ax1.invert_yaxis()
    against = table["against"].iat[0]
    ax1.set_xlabel(f"RMS of {against} - predicted [deg]")
    ax2.set_xlabel(f"mean of {against} - predicted [deg]")
    ax2.axvline(0, color="k", lw=0.8)
    ax1.legend(fontsize=7)
    fig.suptitle("Held-out galaxies re-framed: does the accuracy survive another cutout?", fontsize=9)
    fig.tight_layout()
    return fig


def outlier_gallery(items: list, n_cols: int = 8, title: str = "Worst test images"):
    """Images with the largest |measured - predicted|.

    `items`: (image (S, S, 3) uint8, pgc, band, measured_deg, predicted_deg).
    """
    n = max(len(items), 1)
    n_cols = min(n_cols, n)
    n_rows = int(np.ceil(n / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.9 * n_cols, 2.5 * n_rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= len(items):
            ax.axis("off")
    for ax, (image, pgc, band, measured, predicted) in zip(axes.ravel(), items):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(f"pgc{pgc} [{band}]\nmeas {measured:.0f}, pred {predicted:.1f} deg", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
# ---- end section: evaluate ----

# ---- section: realism report (stage 00) ----
def realism_distributions(real, synthetic, placed, labels: dict, n_cols: int = 4):
    """One panel per statistic: the synthetic histogram, its 5-95% range shaded, and each
    real galaxy as a vertical line (green inside the range, red outside).

    `placed` is realism.placement's table; `labels` maps statistic -> axis label with units.
    """
    names = [n for n in labels if n in synthetic.columns and synthetic[n].notna().any()]
    n_rows = int(np.ceil(max(len(names), 1) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.4 * n_cols, 2.6 * n_rows), squeeze=False)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        values = synthetic[name].dropna()
        sns.histplot(values, bins=30, ax=ax, color="0.6", edgecolor="none")
        rows = placed[placed["statistic"] == name]
        if len(rows):
            ax.axvspan(rows["synthetic_lo"].iat[0], rows["synthetic_hi"].iat[0], color="C0", alpha=0.12)
        for value, inside in zip(rows["value"], rows["inside"]):
            ax.axvline(value, color="C2" if inside else "C3", lw=1.0, alpha=0.8)
        n_out = int((~rows["inside"]).sum())
        ax.set_title(f"{name}: {n_out}/{len(rows)} real outside", fontsize=9)
        ax.set_xlabel(labels[name], fontsize=8)
        ax.set_ylabel("synthetic galaxies", fontsize=8)
    fig.suptitle("Synthetic distributions (gray, 5-95% shaded) and real galaxies (lines: green inside, red outside)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def realism_axis_ratio(real, synthetic, expected):
    """Isophotal b/a against the labelled inclination, synthetic and real, with the
    thick-disk expectation `expected` (a function of the inclination in degrees)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for table, kind, style in ((synthetic, "synthetic", dict(s=10, color="0.6")),
                               (real, "real", dict(s=36, color="C3", marker="D"))):
        numeric = ~table["label"].astype(str).isin(["F", "0"])
        ax.scatter(table.loc[numeric, "label"].astype(float), table.loc[numeric, "q_iso"], label=kind, **style)
    inc = np.linspace(45, 90, 100)
    ax.plot(inc, expected(inc), color="C0", label="expected, q0 = 0.2")
    ax.set_xlabel("labelled inclination [deg]")
    ax.set_ylabel("isophotal axis ratio b/a")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
# ---- end section: realism report ----


# ---- section: uncertainty calibration (stage 06) ----
def uncertainty_calibration(table, calibration, levels=np.linspace(0.05, 0.99, 20)):
    """Left: |residual| of test images against the members' spread with the calibrated 1- and
    2-sigma curves; right: coverage of the central intervals against their nominal level."""
    from .uncertainty import coverage

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    spread = np.nan_to_num(table["spread_deg"].to_numpy(dtype=float), nan=0.0)
    resid = table["residual_deg"].to_numpy(dtype=float)
    ax1.scatter(spread, np.abs(resid), s=6, alpha=0.4, color="C0", label="test images")
    grid = np.linspace(0, max(spread.max(), 1e-3) * 1.05, 100)
    for z, style in ((1.0, "-"), (calibration.z95, "--")):
        ax1.plot(grid, z * calibration.sigma(grid), "k" + style, label=f"{z:.2f} sigma (fit on training)")
    if np.isfinite(calibration.spread_p99):
        ax1.axvline(calibration.spread_p99, color="C3", lw=1, label="alarm: 99th pct of training spread")
    ax1.set(xlabel="spread over members (deg)", ylabel="|measured - predicted| (deg)",
            title=f"sigma^2 = ({calibration.a:.2f} spread)^2 + {calibration.b:.2f}^2")
    ax1.legend(fontsize=7)
    sigma = table["sigma_deg"].to_numpy(dtype=float)
    got = [coverage(resid, sigma, [lv])[f"coverage_{round(lv * 100)}"] for lv in levels]
    ax2.plot([0, 1], [0, 1], color="0.6", lw=1)
    ax2.plot(levels, got, "o-", ms=3, color="C0")
    for lv in (0.68, 0.95):
        ax2.axvline(lv, color="0.85", lw=1)
    ax2.set(xlabel="nominal coverage", ylabel="fraction of test images inside", xlim=(0, 1), ylim=(0, 1),
            title="calibration on held-out test images")
    fig.tight_layout()
    return fig
# ---- end section: uncertainty calibration ----


def chained_training_curves(parent_history: dict, history: dict, title: str = "", figsize=(8, 3)):
    """A fine-tuned training's curves after its parent's: parent steps at negative x (grey),
    the child's from 0 (blue); the dashed line marks where the fine-tuning starts."""
    fig, ax_mse, ax_mae = _two_panels(None, figsize, title)
    n_parent = len(parent_history)
    if parent_history:
        shifted = {int(s) - n_parent: e for s, e in sorted(parent_history.items(), key=lambda kv: int(kv[0]))}
        _curves_on(ax_mse, ax_mae, shifted, label="parent ", color="0.5")
    if history:
        _curves_on(ax_mse, ax_mae, {int(s): e for s, e in history.items()}, label="fine-tuned ", color="C0")
    for ax in (ax_mse, ax_mae):
        ax.axvline(-0.5, color="k", ls="--", lw=0.8)
    ax_mae.legend(fontsize=7)
    return _label_mse_mae(fig, ax_mse, ax_mae, "step (parent < 0 <= this run)", title)


# ---- section: classifiers (stages 05, 06) ----
def classifier_curves(history: dict, title: str = "", figsize=(8, 3), fig=None):
    """Binary cross-entropy and AUC of one classifier training vs step, training and validation."""
    fig, ax_loss, ax_auc = _two_panels(fig, figsize, title)
    steps = sorted(history)
    get = lambda k: np.array([history[s].get(k, np.nan) for s in steps], dtype=float)
    for ax, key in ((ax_loss, "loss"), (ax_auc, "auc")):
        ax.plot(steps, get(key), "-", color="C0", alpha=0.5, label="train")
        ax.plot(steps, get(f"val_{key}"), "-o", ms=2.5, color="C0", label="validation")
    if steps:
        ax_auc.legend(fontsize=7)
    ax_loss.set(xlabel="step (one batch file)", ylabel="binary cross-entropy")
    ax_auc.set(xlabel="step (one batch file)", ylabel="AUC")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def instrument_gallery(rendered: dict, size: float = 1.8):
    """Galaxies of `realism.render_instruments`: per instrument a row of composites and a row of r bands."""
    names = list(rendered)
    n = max(len(rows) for rows in rendered.values())
    fig = Figure(figsize=(size * n, size * 2 * len(names) + 0.3), layout="constrained")
    axes = np.atleast_2d(fig.subplots(2 * len(names), n, squeeze=False))
    for i, name in enumerate(names):
        for j in range(n):
            for k, ax in enumerate((axes[2 * i, j], axes[2 * i + 1, j])):
                ax.set_axis_off()
                if j < len(rendered[name]):
                    pgc, inc, gray, rgb, _ = rendered[name][j]
                    ax.imshow(rgb if k == 0 else gray, cmap=None if k == 0 else "gray", vmin=0, vmax=255)
                    ax.set_title(f"{name} {'gri' if k == 0 else 'r'}, i={inc:.0f}", fontsize=7)
    return fig


def roc_curves(curves: dict, threshold_points: dict | None = None):
    """ROC curves {name: (false-positive rate, true-positive rate, auc)} of "reject", with the
    working point of each name (fpr, tpr) from `threshold_points` marked."""
    fig = Figure(figsize=(4.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for k, (name, (fpr, tpr, auc)) in enumerate(curves.items()):
        ax.plot(fpr, tpr, color=f"C{k}", label=f"{name} (AUC {auc:.3f})")
        if threshold_points and name in threshold_points:
            ax.plot(*threshold_points[name], "o", color=f"C{k}", ms=6)
    ax.plot([0, 1], [0, 1], ":", color="0.6")
    ax.set(xlabel="accepted galaxies rejected (false-positive rate)",
           ylabel="rejected galaxies caught (true-positive rate)", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    return fig


def probability_gallery(items: list, n_cols: int = 8, title: str = ""):
    """Images with their rejection probability: (image, pgc, band, label text, probability)."""
    n = max(len(items), 1)
    n_cols = min(n_cols, n)
    n_rows = int(np.ceil(n / n_cols))
    fig = Figure(figsize=(1.9 * n_cols, 2.4 * n_rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False)).ravel()
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    for ax, (image, pgc, band, label, p) in zip(axes, items):
        ax.axis("on")
        ax.imshow(image, vmin=0, vmax=255)
        ax.set_title(f"pgc{pgc} [{band}]\n{label}, P(reject) {p:.2f}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig
# ---- end section: classifiers ----
