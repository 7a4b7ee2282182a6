"""Catalog reader: labels of the real galaxies, the labelling rules, named errors for
bad catalogs, and the padded '|' format round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inclinet_utils import catalog
from inclinet_utils.catalog import CatalogError

# From ../shared/real_sdss/README.md.
REAL_LABELS = {44182: "61", 676: "71", 2148: "80", 6864: "81", 354: "56", 118: "F", 56987: "F", 129: "0"}
REAL_CODES = {44182: 61, 676: 71, 2148: 80, 6864: 81, 354: 56, 118: 1, 56987: 1, 129: 0}

HEADER = "pgc | inc | inc_flg | fon | inc_note"


def write_raw(tmp_path, text: str, name: str = "catalog.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def table(rows, **extra) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["pgc", "inc", "inc_flg", "fon", "inc_note"])
    for k, v in extra.items():
        df[k] = v
    return df


# --- real galaxies ---------------------------------------------------------------

def test_real_catalog_labels_match_readme(real_sdss):
    cat = catalog.read_catalog(real_sdss / "catalogs" / "catalog.csv")
    assert len(cat) == 8
    assert dict(zip(cat["pgc"].tolist(), cat["label"].tolist())) == REAL_LABELS
    assert dict(zip(cat["pgc"].tolist(), cat["label_code"].tolist())) == REAL_CODES
    assert cat["pgc"].dtype == np.int64 and cat["label_code"].dtype == np.int64
    # Extra padded columns come through stripped, e.g. the free-text note of the merger.
    note = cat.loc[cat["pgc"] == 129, "note"].item()
    assert note == "Interacting galaxies, < 1 arcmin"
    assert cat.loc[cat["pgc"] == 118, "inc_note"].item() == "[loose arms] [bad_TF] [ambiguous] [face_on]"


# From ../shared/real_sdss_varied/README.md: three rejected (no label, disputed), the rest usable.
VARIED_REJECTED = {14246, 40085, 41812}
VARIED_INC = {3351: 83, 5702: 80, 30197: 75, 31677: 85, 32992: 90, 36431: 90, 40201: 90, 41578: 54,
              65375: 50, 71047: 70, 71866: 65, 1166532: 83, 1794291: 64}


def test_real_varied_catalog_labels_match_readme():
    path = Path(__file__).resolve().parents[1].parent / "shared" / "real_sdss_varied" / "catalogs" / "catalog.csv"
    if not path.is_file():
        pytest.skip(f"real SDSS varied-format catalog {path} not available")
    cat = catalog.read_catalog(path)
    labels = dict(zip(cat["pgc"].tolist(), cat["label"].tolist()))
    assert labels == {**{p: "0" for p in VARIED_REJECTED}, **{p: str(i) for p, i in VARIED_INC.items()}}
    # The free-text label_source (with ':' and ',') is carried along, stripped.
    assert cat.set_index("pgc").loc[41812, "label_source"].startswith("human estimates disagree: 32")


def test_spreadsheet_export_with_bom_and_crlf_reads_the_same(tmp_path):
    plain = "pgc | inc | inc_flg | fon | inc_note\n 7 | 61 | 0 |   | [standard]\n 8 | 0 | 1 | F |\n"
    a = catalog.read_catalog(write_raw(tmp_path, plain, "plain.csv"))
    exported = tmp_path / "exported.csv"
    exported.write_bytes(b"\xef\xbb\xbf" + plain.replace("\n", "\r\n").encode())
    b = catalog.read_catalog(exported)
    assert list(b.columns) == list(a.columns)
    pd.testing.assert_frame_equal(a, b)
    assert b["label"].tolist() == ["61", "F"]


# --- labelling rules ---------------------------------------------------------------

RULES = [
    # fon, inc_flg, inc_note, inc, expected label
    ("F", 1, "", 0, "F"),                        # fon F with inc_flg > 0
    ("F", 3, "[bad_TF]", 52, "F"),
    ("", 1, "[loose arms] [face_on]", 0, "F"),   # face_on in the note with inc_flg > 0
    ("", 2, "[bad_TF] [face_on]", 70, "F"),
    ("", 1, "[merger] [multiple]", 0, "0"),      # inc_flg > 0 otherwise
    ("", 1, "", 63, "0"),                        # rejected even though inc is usable
    ("F", 0, "", 66, "66"),                      # fon F but inc_flg 0: the inclination
    ("", 0, "[face_on]", 75, "75"),              # face_on note but not flagged
    ("", 0, "[standard]", 45, "45"),
    ("", 0, "", 90, "90"),
    ("", 0, "", 30, "30"),
]


@pytest.mark.parametrize("fon, inc_flg, inc_note, inc, expected", RULES)
def test_galaxy_label_rules(fon, inc_flg, inc_note, inc, expected):
    assert catalog.galaxy_label(fon, inc_flg, inc_note, inc) == expected


def test_label_rules_through_a_written_catalog(tmp_path):
    rows = [(1000 + k, inc, flg, fon, note) for k, (fon, flg, note, inc, _) in enumerate(RULES)]
    path = catalog.write_catalog(table(rows), tmp_path / "cat.csv")
    cat = catalog.read_catalog(path)
    assert cat["label"].tolist() == [r[-1] for r in RULES]
    expected_codes = [1 if r[-1] == "F" else int(r[-1]) for r in RULES]
    assert cat["label_code"].tolist() == expected_codes


def test_label_codes():
    assert catalog.label_code("F") == 1
    assert catalog.label_code("0") == 0
    assert catalog.label_code("61") == 61
    assert catalog.label_code("90") == 90


# --- bad input ---------------------------------------------------------------------

@pytest.mark.parametrize("column", catalog.REQUIRED_COLUMNS)
def test_missing_required_column_is_named(tmp_path, column):
    df = table([(1, 60, 0, "", ""), (2, 70, 0, "", "")]).drop(columns=[column])
    path = catalog.write_catalog(df, tmp_path / "cat.csv")
    with pytest.raises(CatalogError, match=rf"\b{column}\b") as err:
        catalog.read_catalog(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("value", ["abc", "", "6o"])
def test_non_numeric_inc_names_column_line_and_pgc(tmp_path, value):
    text = f"{HEADER}\n 11 | 60 | 0 |   | \n 22 | {value} | 0 |   | \n 33 | 70 | 0 |   | \n"
    path = write_raw(tmp_path, text)
    with pytest.raises(CatalogError) as err:
        catalog.read_catalog(path)
    msg = str(err.value)
    assert "'inc'" in msg
    assert "line 3" in msg and "pgc 22" in msg
    assert repr(value) in msg
    assert str(path) in msg


def test_duplicate_pgc_names_the_pgc(tmp_path):
    text = f"{HEADER}\n 11 | 60 | 0 |   | \n 4567 | 70 | 0 |   | \n 33 | 70 | 0 |   | \n 4567 | 80 | 0 |   | \n"
    path = write_raw(tmp_path, text)
    with pytest.raises(CatalogError, match="duplicate") as err:
        catalog.read_catalog(path)
    msg = str(err.value)
    assert "pgc 4567" in msg
    assert "line 3" in msg and "line 5" in msg
    assert "pgc 11" not in msg and "pgc 33" not in msg


@pytest.mark.parametrize("value", ["95", "-3", "90.5"])
def test_inc_outside_0_90_is_named(tmp_path, value):
    text = f"{HEADER}\n 11 | 60 | 0 |   | \n 22 | {value} | 0 |   | \n"
    path = write_raw(tmp_path, text)
    with pytest.raises(CatalogError, match="between 0 and 90") as err:
        catalog.read_catalog(path)
    msg = str(err.value)
    assert "'inc'" in msg and value in msg and "pgc 22" in msg and "line 3" in msg


@pytest.mark.parametrize("good", ["0", "90", "45"])
def test_inc_bounds_are_inclusive(tmp_path, good):
    path = write_raw(tmp_path, f"{HEADER}\n 22 | {good} | 0 |   | \n")
    assert catalog.read_catalog(path)["inc"].item() == float(good)


def test_non_integer_pgc_and_inc_flg_are_named(tmp_path):
    path = write_raw(tmp_path, f"{HEADER}\n 11 | 60 | 0 |   | \n PGC22 | 60 | 0 |   | \n")
    with pytest.raises(CatalogError, match="'pgc'.*line 3.*'PGC22'"):
        catalog.read_catalog(path)
    path = write_raw(tmp_path, f"{HEADER}\n 11 | 60 | yes |   | \n", name="flg.csv")
    with pytest.raises(CatalogError, match="'inc_flg'.*line 2.*pgc 11"):
        catalog.read_catalog(path)


def test_missing_or_empty_catalog(tmp_path):
    with pytest.raises(CatalogError, match="nope.csv"):
        catalog.read_catalog(tmp_path / "nope.csv")
    with pytest.raises(CatalogError, match="no galaxies"):
        catalog.read_catalog(write_raw(tmp_path, HEADER + "\n"))


# --- format ------------------------------------------------------------------------

def test_write_read_round_trip(tmp_path, synthetic_input):
    written = synthetic_input.table
    cat = catalog.read_catalog(synthetic_input.catalog_path)
    assert list(cat.columns[: len(written.columns)]) == list(written.columns)
    assert cat["pgc"].tolist() == written["pgc"].tolist()
    assert cat["inc"].tolist() == written["inc"].tolist()
    assert cat["inc_flg"].tolist() == written["inc_flg"].tolist()
    assert cat["fon"].tolist() == written["fon"].tolist()
    assert cat["inc_note"].tolist() == written["inc_note"].tolist()
    assert cat["note"].tolist() == written["note"].tolist()
    np.testing.assert_allclose(cat["b_a"], written["b_a"])
    np.testing.assert_allclose(cat["inc_true"], written["inc_true"])
    assert dict(zip(cat["pgc"], cat["label"])) == synthetic_input.labels


def test_written_catalog_is_padded_and_never_overwritten(tmp_path):
    df = table([(5, 61, 0, "", "[standard]"), (123456, 0, 1, "F", "[face_on]")])
    path = catalog.write_catalog(df, tmp_path / "cat.csv")
    lines = path.read_text().splitlines()
    assert lines[0].split("|")[0].strip() == "pgc"
    assert len({len(line) for line in lines}) == 1           # fixed-width columns
    assert all(line.count("|") == 4 for line in lines)
    assert lines[1].startswith(" " * 5 + "5 |")               # right-aligned under '123456'
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="cat.csv"):
        catalog.write_catalog(table([(9, 60, 0, "", "")]), path)
    assert path.read_bytes() == before


def test_extra_columns_ignored_and_padding_tolerated(tmp_path):
    text = (
        "  ra  |pgc| weird col | inc  |inc_flg|  fon  | inc_note             |  note\n"
        " 1.5 |   7|  x y?      |  61  |   0   |       | [standard]           | whatever, text\n"
        "  2  |  8 | !!        |   0  | 1     |   F   |                      |\n"
        " 3   |9   |           |   0  |  2    |       |  [bad_TF] [face_on]  | n/a\n"
        " 4   |10  | 12abc     |  0   |  1    |       |  [merger]            | \n"
    )
    cat = catalog.read_catalog(write_raw(tmp_path, text))
    assert cat["pgc"].tolist() == [7, 8, 9, 10]
    assert cat["label"].tolist() == ["61", "F", "F", "0"]
    assert cat["fon"].tolist() == ["", "F", "", ""]
    assert cat["weird col"].tolist() == ["x y?", "!!", "", "12abc"]   # carried untouched, stripped
    assert cat["note"].tolist() == ["whatever, text", "", "n/a", ""]
