"""IncliNET helpers: the logic behind the pipeline notebooks.

One module per concern: catalog, images, simulate, dataset, augment, models,
train, evaluate (with metrics, axis_ratio and inference), predict, plots, io.
"""

__version__ = "0.1.0"

BANDS = ("g", "r", "i", "gri")  # as the user names them
GRAY_BANDS = ("g", "r", "i")
