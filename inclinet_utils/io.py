"""Files and run folders: atomic writes and provenance records (names: `layout`).

Every product is written under a temporary name and renamed into place, so a
killed stage never leaves a half-written file under the final name, and nothing
that already exists is overwritten unless the caller asks for it explicitly.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import layout

# Packages whose versions every run records.
RECORDED_PACKAGES = (
    "inclinet-utils", "numpy", "pandas", "Pillow", "matplotlib", "seaborn", "tqdm",
    "scipy", "astropy", "galsim", "tensorflow", "keras", "papermill", "nbclient", "nbconvert",
)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def _check_new(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; refusing to overwrite it (use a new run folder)"
        )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` on success.

    On any exception the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    _check_new(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder that becomes `path` only if the block succeeds.

    A stage writes all its files into the yielded folder; a failure removes it,
    so the final folder either holds the complete product or does not exist.
    """
    path = Path(path)
    _check_new(path, overwrite=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    if tmp.exists():  # left by a killed earlier attempt of this same process id
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def save_npz(path: str | os.PathLike, overwrite: bool = False, **arrays: np.ndarray) -> Path:
    """Write a compressed npz atomically (np.savez_compressed under a temporary name)."""
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:  # a file object stops numpy appending '.npz'
            np.savez_compressed(fh, **arrays)
    return path


def write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return path


def write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def write_json(path: str | os.PathLike, obj: Any, overwrite: bool = False) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n", overwrite)


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as fh:
        return json.load(fh)


def save_figure(fig, path: str | os.PathLike, overwrite: bool = True, **savefig_kw) -> Path:
    """Save a matplotlib figure atomically (figures are redrawn, so overwrite by default)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg" if fmt == "jpg" else fmt, **savefig_kw)
    return write_bytes(path, buf.getvalue(), overwrite=overwrite)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, _dt.datetime)):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


# --- provenance --------------------------------------------------------------


def package_versions(names: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(repo_dir: str | os.PathLike | None = None) -> str | None:
    """The checked-out commit (with '+dirty' if the tree has changes), or None."""
    repo_dir = Path(repo_dir or Path(__file__).resolve().parent.parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo_dir, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def resolve_input(run_dir: str | os.PathLike, images_dir: str = "", catalog_path: str = "") -> tuple[Path, Path]:
    """The galaxy image folder and catalog of a run.

    Empty strings mean the run's own simulated sample (written by 00_simulate).
    """
    paths = layout.run_paths(run_dir)
    images = Path(images_dir) if images_dir else paths["input_images"]
    catalog = Path(catalog_path) if catalog_path else paths["input_catalog"]
    return images, catalog
