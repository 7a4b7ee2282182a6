"""Figures read the run's files the way the stages do: galleries of input and prepared cutouts."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from inclinet_utils import catalog, images, plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_simulated_gallery_orders_by_inclination_and_shows_every_galaxy(synthetic_input):
    cat = catalog.read_catalog(synthetic_input.catalog_path)
    fig = plots.simulated_gallery(synthetic_input.images_dir, cat, n_columns=len(cat))
    n = len(fig.axes) // 2
    assert n == len(cat)   # one column per galaxy: the 'LA' PNGs and the .jpg-only colour included
    incs = [float(re.match(r"i = (\d+)", ax.get_title())[1]) for ax in fig.axes[:n]]
    assert incs == sorted(incs) and sorted(incs) == sorted(cat["inc"].astype(float))
    for gray, colour in zip(fig.axes[:n], fig.axes[n:]):
        assert gray.images[0].get_array().ndim == 2 and colour.images[0].get_array().shape[-1] == 3
    assert plots._read_cutout(synthetic_input.images_dir, 999, "g") is None


def test_prepared_examples_show_the_same_galaxies_in_every_band(synthetic_input, tmp_path):
    cat = catalog.read_catalog(synthetic_input.catalog_path)
    images.prep_stage(cat, synthetic_input.images_dir, tmp_path / "prep", size=16, bands=["g", "gri"],
                      n_workers=1, progress=False)
    fig = plots.prepared_examples(tmp_path / "prep", 16, ["g", "gri"], n_examples=5)
    rows = [fig.axes[:5], fig.axes[5:]]
    titles = [[ax.get_title() for ax in row] for row in rows]
    assert titles[0] == titles[1] and len(set(titles[0])) == 5
    for title in titles[0]:
        pgc, label = re.match(r"pgc(\d+)\nlabel (\w+)", title).groups()
        assert synthetic_input.labels[int(pgc)] == label
    assert all(ax.images[0].get_array().shape[:2] == (16, 16) for row in rows for ax in row)
