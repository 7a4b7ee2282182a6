"""The galaxy catalog: reading the original pipe-delimited format and labelling.

The catalog is `|`-delimited with space-padded columns and the names on the
first line; columns beyond the ones used here are carried along untouched.
Each galaxy's label follows the original pipeline exactly:

* ``F`` (face-on) when (``fon`` is ``F`` and ``inc_flg`` > 0) or
  (``inc_flg`` > 0 and ``face_on`` appears in ``inc_note``);
* ``0`` (rejected) when ``inc_flg`` > 0 otherwise;
* else the integer inclination ``inc`` in degrees (90 = edge-on).

Labels become integer codes in the npz products: ``F`` -> 1, ``0`` -> 0, else
the inclination (usable inclinations are 45-90, so the codes never collide).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import io as iio

REQUIRED_COLUMNS = ("pgc", "inc", "inc_flg", "fon", "inc_note")


class CatalogError(ValueError):
    """The catalog file is missing something or holds a value the pipeline cannot use."""


def _row_name(path: Path, i: int, pgc: object = None) -> str:
    # Data row i is on line i + 2 of the file (line 1 holds the names).
    where = f"{path}, line {i + 2}"
    return f"{where} (pgc {pgc})" if pgc is not None else where


def read_catalog(path: str | os.PathLike) -> pd.DataFrame:
    """Read a catalog and add ``label`` (str) and ``label_code`` (int) columns.

    Raises CatalogError naming the column or row for a missing required column,
    a non-numeric or out-of-range (0-90) ``inc``, a non-integer ``pgc`` or
    ``inc_flg``, or a duplicated ``pgc``.
    """
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"catalog {path} does not exist or is not a file")
    try:
        raw = pd.read_csv(path, sep="|", dtype=str, keep_default_na=False, engine="python")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CatalogError(f"catalog {path} is not a '|'-delimited table: {exc}") from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    cat = raw.apply(lambda col: col.str.strip())

    missing = [c for c in REQUIRED_COLUMNS if c not in cat.columns]
    if missing:
        raise CatalogError(
            f"catalog {path} lacks required column(s) {missing}; found {list(cat.columns)[:12]}..."
        )
    if len(cat) == 0:
        raise CatalogError(f"catalog {path} has no galaxies")

    pgc = _integer_column(cat, "pgc", path)
    dup = pgc.duplicated(keep=False)
    if dup.any():
        rows = [_row_name(path, i, pgc[i]) for i in np.flatnonzero(dup.to_numpy())]
        raise CatalogError(f"catalog {path}: duplicate pgc IDs at " + "; ".join(rows))
    inc = _numeric_column(cat, "inc", path, pgc)
    bad = (inc < 0) | (inc > 90)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise CatalogError(
            f"column 'inc' at {_row_name(path, i, pgc[i])} is {cat['inc'][i]!r}; "
            "expected an inclination in degrees between 0 and 90"
        )
    inc_flg = _integer_column(cat, "inc_flg", path, pgc)

    out = cat.copy()
    out["pgc"] = pgc.astype(np.int64)
    out["inc"] = inc
    out["inc_flg"] = inc_flg.astype(np.int64)
    for name in ("b_a", "inc_true"):
        if name in out.columns:
            out[name] = pd.to_numeric(out[name], errors="coerce")
    out["label"] = [
        galaxy_label(f, fl, note, i) for f, fl, note, i in zip(out["fon"], out["inc_flg"], out["inc_note"], inc)
    ]
    out["label_code"] = out["label"].map(label_code).astype(np.int64)
    return out


def galaxy_label(fon: str, inc_flg: int, inc_note: str, inc: float) -> str:
    """The original pipeline's label: 'F', '0' or the integer inclination as text."""
    fon = " ".join(str(fon).split())
    if (fon == "F" and inc_flg > 0) or (inc_flg > 0 and "face_on" in str(inc_note)):
        return "F"
    if inc_flg > 0:
        return "0"
    return "%d" % int(inc)


def label_code(label: str) -> int:
    """npz code of a label: 'F' -> 1, '0' -> 0, else the inclination in degrees."""
    if label == "F":
        return 1
    return int(label)


def _numeric_column(cat: pd.DataFrame, name: str, path: Path, pgc=None) -> pd.Series:
    values = pd.to_numeric(cat[name], errors="coerce")
    bad = values.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        who = pgc[i] if pgc is not None else None
        raise CatalogError(
            f"column '{name}' at {_row_name(path, i, who)} is {cat[name][i]!r}; expected a number"
        )
    return values


def _integer_column(cat: pd.DataFrame, name: str, path: Path, pgc=None) -> pd.Series:
    values = _numeric_column(cat, name, path, pgc)
    bad = values != np.round(values)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        who = pgc[i] if pgc is not None else None
        raise CatalogError(
            f"column '{name}' at {_row_name(path, i, who)} is {cat[name][i]!r}; expected an integer"
        )
    return values.astype(np.int64)


def format_catalog(table: pd.DataFrame) -> str:
    """Render a table in the original padded, '|'-delimited layout."""
    cols = [str(c) for c in table.columns]
    cells = [[_cell(v) for v in table[c]] for c in table.columns]
    widths = [max([len(c)] + [len(v) for v in col]) for c, col in zip(cols, cells)]
    lines = [" | ".join(c.rjust(w) for c, w in zip(cols, widths))]
    for row in zip(*cells):
        lines.append(" | ".join(v.rjust(w) for v, w in zip(row, widths)))
    return "\n".join(lines) + "\n"


def write_catalog(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a catalog atomically in the original format (never overwrites)."""
    return iio.write_text(path, format_catalog(table))


def _cell(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.4f}".rstrip("0").rstrip(".") if np.isfinite(value) else "nan"
    return str(value)
