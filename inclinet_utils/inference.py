"""A run's trained networks: finding and loading them, the bands they trained on, batched prediction.

Used by stage 06 (`evaluate`) and by `predict`. `find_models` lists the final
``models/Uset_<jjj>_<model>.keras`` files; `load_run_models` loads them all and
checks they take one image size; `predict_images` turns raw 0-255 (N, S, S, 3)
images into inclinations in degrees, by default averaged over the image and its
horizontal, vertical and double flips (the inclination is invariant under
them). `trained_bands` tells which bands (g, r, i, gri) each model saw in
training, from the run's record ``trained_bands.json`` (written by
`record_trained_bands`) or else from the ``filter`` arrays of the augmented
files each Uset trained on; `check_bands` refuses a band none of them saw.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from . import BANDS
from . import io as iio
from . import layout
from .metrics import INC_LIMITS

log = logging.getLogger(__name__)

TRAINED_BANDS_FILE = layout.TRAINED_BANDS  # in the run folder
FLIPS = ((), (2,), (1,), (1, 2))  # none, horizontal, vertical, both: axes of (N, S, S, 3)


class InferenceError(ValueError):
    """A run's models cannot be used as asked (unloadable, mixed sizes, untrained band)."""


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """One trained network of a run: models/Uset_<uset>_<model>.keras."""

    model: str
    uset: int
    path: Path

    @property
    def row(self) -> str:
        return layout.model_row(self.model, self.uset)


def find_models(models_dir: str | os.PathLike) -> list[ModelFile]:
    """Every final model file of a run, sorted by model name then Uset."""
    found = [ModelFile(model, uset, path) for model, uset, path in layout.find_model_files(models_dir)]
    if not found:
        raise FileNotFoundError(f"no trained models (Uset_<jjj>_<model>.keras) in {models_dir}; run 05_train first")
    return found


def load_model(path: str | os.PathLike):
    """Load a final .keras model for inference (no optimizer state needed)."""
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # keras raises many kinds for a bad file
        raise InferenceError(f"model file {path} cannot be loaded: {exc}") from exc


def model_input_size(model, path: str | os.PathLike = "model") -> int:
    """Image size the model takes, from its (None, S, S, 3) input shape."""
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or shape[1] is None:
        raise InferenceError(f"{path} takes input of shape {shape}; expected (None, S, S, 3)")
    return int(shape[1])


def each_model(model_files: list[ModelFile], size: int | None = None):
    """Yield (ModelFile, loaded model) one at a time, checking its image size, and free each one
    before the next loads (evaluation keeps one model in memory)."""
    import keras

    for mf in model_files:
        model = load_model(mf.path)
        got = model_input_size(model, mf.path)
        if size is not None and got != size:
            raise InferenceError(f"model {mf.path} takes {got}x{got} images; expected {size}x{size}")
        yield mf, model
        del model
        keras.backend.clear_session()


def load_run_models(run_dir: str | os.PathLike):
    """([(ModelFile, model)] of every final model in the run, the image size they all take)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    files = find_models(layout.run_paths(run_dir)["models"])
    loaded = [(mf, load_model(mf.path)) for mf in files]
    sizes = {model_input_size(m, mf.path) for mf, m in loaded}
    if len(sizes) != 1:
        raise InferenceError(f"models in {run_dir} take different image sizes {sorted(sizes)}; expected one size")
    return loaded, sizes.pop()


def flip_averaged_output(model, images: np.ndarray, batch_size: int = 64, flips: bool = True) -> np.ndarray:
    """The model's raw output for raw 0-255 (N, S, S, 3) images (its first layer rescales).

    With `flips`, each image's output is the mean over the image and its horizontal,
    vertical and double flips (the four go through the model in one batch): neither the
    inclination nor whether a human would reject the galaxy changes under them.
    """
    if len(images) == 0:
        return np.zeros(0)
    flip_axes = FLIPS if flips else FLIPS[:1]
    step = max(1, batch_size // len(flip_axes))
    out = []
    for start in range(0, len(images), step):
        batch = np.asarray(images[start:start + step], dtype=np.float32)
        views = np.concatenate([np.flip(batch, axis=a) if a else batch for a in flip_axes])
        # predict_on_batch runs the compiled predict function: about twice as fast as an eager call
        raw = np.asarray(model.predict_on_batch(views), dtype=np.float64).reshape(len(views), -1)[:, 0]
        out.append(raw.reshape(len(flip_axes), len(batch)).mean(axis=0))
    return np.concatenate(out)


def predict_images(model, images: np.ndarray, batch_size: int = 64, flips: bool = True) -> np.ndarray:
    """Inclinations (deg) a regressor gives raw 0-255 images, flip-averaged
    (`flip_averaged_output`), clipped to 0-90 degrees."""
    from .models import target_to_inclination

    raw = flip_averaged_output(model, images, batch_size, flips)
    return np.clip(target_to_inclination(raw).astype(float), *INC_LIMITS) if len(raw) else raw


# ---- the bands a run's models trained on ------------------------------------------

def _bands_of_uset(uset_dir: Path) -> list[str]:
    """Bands in the `filter` arrays of one Uset's augmented batch files."""
    seen = set()
    for path in sorted(uset_dir.glob("*.npz")):
        with np.load(path) as data:
            if "filter" not in data.files:
                raise InferenceError(f"augmented file {path} has no 'filter' array; cannot tell its bands")
            seen.update(np.unique(data["filter"]).tolist())
    unknown = seen - set(layout.FILTER_CODES)
    if unknown:
        raise InferenceError(f"augmented files in {uset_dir} hold filter codes {sorted(unknown)}; "
                             f"expected some of {list(layout.FILTER_CODES)}")
    return [b for b in BANDS if layout.filter_code(b) in seen]


def bands_from_augmented(run_dir: str | os.PathLike, model_files: list[ModelFile]) -> dict[str, list[str]]:
    """model row -> bands of the augmented files of its Uset (empty when they are absent)."""
    aug = layout.run_paths(run_dir)["augmented"]
    by_uset = {}
    for mf in model_files:
        if mf.uset not in by_uset:
            folder = layout.uset_dir(aug, mf.uset)
            by_uset[mf.uset] = _bands_of_uset(folder) if folder.is_dir() else []
    return {mf.row: by_uset[mf.uset] for mf in model_files}


def record_trained_bands(run_dir: str | os.PathLike, by_model: dict[str, list[str]] | None = None) -> Path:
    """Write the run's ``trained_bands.json`` (model row -> bands it trained on).

    `by_model` defaults to what the augmented files say (`bands_from_augmented`).
    Refuses when some model's bands are unknown; an existing record is left as
    it is (its path is returned).
    """
    path = layout.run_paths(run_dir)["run"] / TRAINED_BANDS_FILE
    if path.exists():
        return path
    if by_model is None:
        by_model = bands_from_augmented(run_dir, find_models(layout.run_paths(run_dir)["models"]))
    missing = [row for row, bands in by_model.items() if not bands]
    if missing or not by_model:
        raise InferenceError(f"no augmented files in {layout.run_paths(run_dir)['augmented']} for "
                             f"{missing or 'any model'}; cannot record which bands they trained on")
    return iio.write_json(path, {"source": "filter arrays of augmented/Uset_<jjj>_npz/*.npz",
                                 "models": by_model})


def trained_bands(run_dir: str | os.PathLike, model_files: list[ModelFile] | None = None) -> dict[str, list[str]]:
    """model row -> bands it trained on: the run's record, else its augmented files.

    Rows the record does not list are read from the augmented files; a row with
    neither maps to an empty list (unknown).
    """
    model_files = model_files if model_files is not None else find_models(layout.run_paths(run_dir)["models"])
    path = layout.run_paths(run_dir)["run"] / TRAINED_BANDS_FILE
    recorded = iio.read_json(path)["models"] if path.is_file() else {}
    out = {mf.row: list(recorded[mf.row]) for mf in model_files if mf.row in recorded}
    rest = [mf for mf in model_files if mf.row not in out]
    if rest:
        out.update(bands_from_augmented(run_dir, rest))
    return out


def check_bands(bands, by_model: dict[str, list[str]], run_dir: str | os.PathLike = "run") -> list[str]:
    """Refuse any band that none of the run's models trained on; returns the bands the run can measure.

    When no model's bands are known (no record, no augmented files) nothing can
    be checked: a warning is logged and every band passes.
    """
    known = [b for b in BANDS if any(b in v for v in by_model.values())]
    if not known:
        log.warning("%s records no trained bands (no %s, no augmented files): band of the images not checked",
                    run_dir, TRAINED_BANDS_FILE)
        return list(BANDS)
    for band in dict.fromkeys(bands):
        if band not in known:
            raise InferenceError(f"band {band!r}: none of the models of {run_dir} trained on it; "
                                 f"this run can measure {' '.join(known)}")
    return known
