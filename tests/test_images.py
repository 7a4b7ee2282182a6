"""Reading the real input images (LA PNG, .sdss.jpg / .jpg choice) and stage 01 prep:
output names, missing and corrupt files, rotation and zoom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from inclinet_utils import catalog, images
from inclinet_utils.images import ImageReadError

from conftest import disk_image

TAGS = {"g": "g", "r": "r", "i": "i", "gri": "RGB"}


def run_prep(syn, out_root, size=32, bands=("g", "r", "i", "gri"), **kw):
    cat = catalog.read_catalog(syn.catalog_path)
    kw.setdefault("n_workers", 1)
    return images.prep_stage(cat, syn.images_dir, out_root, size=size, bands=bands, progress=False, **kw)


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# --- reading -------------------------------------------------------------------------

def test_real_la_png_reads_as_gray(real_sdss):
    path = real_sdss / "galaxies" / "pgc676_d25x2_rot_g.png"
    with Image.open(path) as im:
        assert im.mode == "LA"
        la = np.asarray(im)
    gray = images.read_galaxy_image(path, "g")
    assert gray.shape == (512, 512) and gray.dtype == np.uint8
    opaque = la[..., 1] == 255
    assert opaque.sum() > 1000
    np.testing.assert_array_equal(gray[opaque], la[..., 0][opaque])


def test_synthetic_la_png_composites_onto_white_sky(synthetic_input):
    path = synthetic_input.gray_path(synthetic_input.la_pgc, "r")
    with Image.open(path) as im:
        assert im.mode == "LA"
        la = np.asarray(im)
    gray = images.read_galaxy_image(path, "r")
    n = synthetic_input.n
    assert gray.shape == (n, n) and gray.dtype == np.uint8
    opaque = la[..., 1] == 255
    np.testing.assert_array_equal(gray[opaque], la[..., 0][opaque])
    # Transparent pixels (stored black) are the white sky, not a black band.
    assert (la[..., 0][~opaque] == 0).all() and (gray[~opaque] == 255).all()


def test_gray_png_reads_as_stored(synthetic_input):
    path = synthetic_input.gray_path(101, "g")
    gray = images.read_galaxy_image(path, "g")
    with Image.open(path) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(gray, np.asarray(im))
    assert gray[0, 0] == 255 and gray[gray.shape[0] // 2, gray.shape[1] // 2] < 50  # black on white


def test_real_colour_prefers_sdss_jpg_and_falls_back_to_jpg(real_sdss):
    gal = real_sdss / "galaxies"
    assert images.find_image(gal, 44182, "gri") == gal / "pgc44182_d25x2_rot_gri.sdss.jpg"
    assert not (gal / "pgc676_d25x2_rot_gri.sdss.jpg").exists()
    path = images.find_image(gal, 676, "gri")
    assert path == gal / "pgc676_d25x2_rot_gri.jpg"
    rgb = images.read_galaxy_image(path, "gri")
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    with Image.open(path) as im:
        np.testing.assert_array_equal(rgb, np.asarray(im.convert("RGB")))
    assert images.find_image(gal, 676, "g") == gal / "pgc676_d25x2_rot_g.png"
    assert images.find_image(gal, 999999, "gri") is None


def test_synthetic_colour_choice(synthetic_input):
    syn = synthetic_input
    sdss, local = syn.colour_paths(101)
    assert images.find_image(syn.images_dir, 101, "gri") == sdss
    red_first = images.read_galaxy_image(sdss, "gri")
    sdss.unlink()
    assert images.find_image(syn.images_dir, 101, "gri") == local
    blue_first = images.read_galaxy_image(local, "gri")
    c = syn.n // 2
    assert red_first[c, c, 0] > red_first[c, c, 2] and blue_first[c, c, 2] > blue_first[c, c, 0]
    only_jpg = images.find_image(syn.images_dir, syn.jpg_only_pgc, "gri")
    assert only_jpg == syn.colour_paths(syn.jpg_only_pgc)[1]
    assert images.read_galaxy_image(only_jpg, "gri").shape == (syn.n, syn.n, 3)


def test_band_tag():
    assert [images.band_tag(b) for b in ("g", "r", "i", "gri")] == ["g", "r", "i", "RGB"]
    with pytest.raises(ValueError, match="'z'"):
        images.band_tag("z")


@pytest.mark.parametrize("content", [b"", b"not an image at all", "truncated"])
def test_corrupt_file_raises_named_error(synthetic_input, content):
    path = synthetic_input.gray_path(103, "i")
    if content == "truncated":
        content = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=path.name):
        images.read_galaxy_image(path, "i")


def test_non_square_and_16bit_images_rejected(tmp_path):
    path = tmp_path / "pgc1_d25x2_rot_g.png"
    Image.fromarray(np.zeros((20, 30), np.uint8), "L").save(path)
    with pytest.raises(ImageReadError, match=r"30x20.*square"):
        images.read_galaxy_image(path, "g")
    path16 = tmp_path / "pgc2_d25x2_rot_g.png"
    Image.fromarray(np.zeros((16, 16), np.uint16)).save(path16)
    with pytest.raises(ImageReadError, match=path16.name):
        images.read_galaxy_image(path16, "g")
    with pytest.raises(ImageReadError, match="pgc3"):
        images.read_galaxy_image(tmp_path / "pgc3_d25x2_rot_g.png", "g")


# --- stage 01 ----------------------------------------------------------------------

def test_prep_output_names(synthetic_input, tmp_path):
    syn = synthetic_input
    out = tmp_path / "prep"
    report = run_prep(syn, out, size=32)
    expected = {"missing_images.csv", "skipped_bad_files.csv"}
    for band, tag in TAGS.items():
        expected.add(f"32x32_{tag}")
        for pgc, label in syn.labels.items():
            expected.add(f"32x32_{tag}/pgc{pgc}_32x32_{label}.{tag}.jpg")
    assert listing(out) == expected
    assert report.written == {b: len(syn.labels) for b in TAGS}
    assert report.missing.empty and report.bad_files.empty
    with Image.open(out / "32x32_RGB" / "pgc110_32x32_F.RGB.jpg") as im:
        assert im.format == "JPEG" and im.size == (32, 32) and im.mode == "RGB"
    with Image.open(out / "32x32_g" / "pgc112_32x32_0.g.jpg") as im:
        assert im.format == "JPEG" and im.size == (32, 32) and im.mode == "L"
    # Nothing left beside the product (no temporary folder).
    assert [p.name for p in tmp_path.iterdir() if p.name != "input"] == ["prep"]


def test_prep_real_galaxies(real_sdss, tmp_path):
    cat = catalog.read_catalog(real_sdss / "catalogs" / "catalog.csv")
    report = images.prep_stage(cat, real_sdss / "galaxies", tmp_path / "prep", size=16,
                               bands=["r", "gri"], n_workers=1, progress=False)
    assert report.written == {"r": 8, "gri": 8} and report.missing.empty
    names = {p.name for p in (tmp_path / "prep" / "16x16_RGB").iterdir()}
    assert {"pgc44182_16x16_61.RGB.jpg", "pgc676_16x16_71.RGB.jpg", "pgc118_16x16_F.RGB.jpg",
            "pgc129_16x16_0.RGB.jpg", "pgc56987_16x16_F.RGB.jpg"} <= names
    assert "pgc354_16x16_56.r.jpg" in {p.name for p in (tmp_path / "prep" / "16x16_r").iterdir()}


def test_prep_counts_missing_images(synthetic_input, tmp_path):
    syn = synthetic_input
    for path in syn.images_dir.glob("pgc107_*"):
        path.unlink()                                   # no image at all
    syn.gray_path(109, "r").unlink()                   # one band missing
    for path in syn.colour_paths(103):
        path.unlink()                                   # neither colour file
    out = tmp_path / "prep"
    report = run_prep(syn, out, size=16)
    n = len(syn.labels)
    assert report.written == {"g": n - 1, "r": n - 2, "i": n - 1, "gri": n - 2}
    got = set(zip(report.missing["pgc"], report.missing["band"]))
    assert got == {(107, "g"), (107, "r"), (107, "i"), (107, "gri"), (109, "r"), (103, "gri")}
    expected_103 = report.missing.loc[report.missing["pgc"] == 103, "expected"].item()
    assert "pgc103_d25x2_rot_gri.sdss.jpg" in expected_103 and "pgc103_d25x2_rot_gri.jpg" in expected_103
    on_disk = pd.read_csv(out / "missing_images.csv")
    assert set(zip(on_disk["pgc"], on_disk["band"])) == got
    summary = report.summary().set_index("band")
    assert summary.loc["r", "missing"] == 2 and summary.loc["gri", "written"] == n - 2
    assert not (out / "16x16_r" / "pgc109_16x16_47.r.jpg").exists()
    assert (out / "16x16_g" / "pgc109_16x16_47.g.jpg").exists()


@pytest.mark.parametrize("n_workers", [1, 2])
def test_corrupt_image_stops_prep_and_writes_nothing(synthetic_input, tmp_path, n_workers):
    syn = synthetic_input
    bad = syn.gray_path(106, "g")
    bad.write_bytes(bad.read_bytes()[:60])   # truncated PNG
    out = tmp_path / "run" / "prep"
    out.parent.mkdir()
    with pytest.raises(ImageReadError, match=str(bad)):
        run_prep(syn, out, size=16, n_workers=n_workers)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []      # no temporary folder either


def test_corrupt_colour_image_named(synthetic_input, tmp_path):
    syn = synthetic_input
    sdss, _ = syn.colour_paths(108)
    sdss.write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "prep"
    with pytest.raises(ImageReadError, match=sdss.name):
        run_prep(syn, out, size=16, bands=["gri"])
    assert not out.exists()


def test_skip_bad_files_lists_them_and_goes_on(synthetic_input, tmp_path):
    syn = synthetic_input
    bad = syn.gray_path(106, "g")
    bad.write_bytes(b"garbage")
    out = tmp_path / "prep"
    report = run_prep(syn, out, size=16, skip_bad_files=True)
    n = len(syn.labels)
    assert report.written == {"g": n - 1, "r": n, "i": n, "gri": n}
    assert report.bad_files[["pgc", "band", "path"]].values.tolist() == [[106, "g", str(bad)]]
    assert bad.name in report.bad_files["error"].item()
    on_disk = pd.read_csv(out / "skipped_bad_files.csv")
    assert on_disk["path"].tolist() == [str(bad)]
    assert not (out / "16x16_g" / "pgc106_16x16_78.g.jpg").exists()
    assert (out / "16x16_r" / "pgc106_16x16_78.r.jpg").exists()
    assert report.missing.empty


def test_prep_refuses_existing_output(synthetic_input, tmp_path):
    out = tmp_path / "prep"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="prep"):
        run_prep(synthetic_input, out, size=16)
    assert listing(out) == {"keep.txt"}


def test_prep_rejects_missing_image_folder_and_unknown_band(synthetic_input, tmp_path):
    cat = catalog.read_catalog(synthetic_input.catalog_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        images.prep_stage(cat, tmp_path / "nowhere", tmp_path / "prep", size=16, progress=False)
    with pytest.raises(ValueError, match="'u'"):
        images.prep_stage(cat, synthetic_input.images_dir, tmp_path / "prep", size=16,
                          bands=["g", "u"], progress=False)
    assert not (tmp_path / "prep").exists()


# --- rotation and zoom -------------------------------------------------------------

def dark_width(img: np.ndarray, row: int, threshold: int = 128) -> int:
    return int((img[row] < threshold).sum())


def test_zoom_two_doubles_a_centred_disk():
    img = disk_image(64, 0, radius=8)
    plain = images.prepare_image(img, 64)
    zoomed = images.prepare_image(img, 64, zoom=2)
    w1, w2 = dark_width(plain, 32), dark_width(zoomed, 32)
    assert 15 <= w1 <= 18
    assert abs(w2 / w1 - 2) < 0.15
    assert zoomed.shape == (64, 64) and zoomed.dtype == np.uint8


def test_zoom_below_one_names_the_value(synthetic_input, tmp_path):
    with pytest.raises(ValueError, match="0.5"):
        images.prepare_image(disk_image(32, 0, 8), 32, zoom=0.5)
    with pytest.raises(ValueError, match="0.75"):
        run_prep(synthetic_input, tmp_path / "prep", size=16, zoom=0.75)
    assert not (tmp_path / "prep").exists()


def test_rotation_fills_with_sky_on_white_gray_image():
    img = disk_image(64, 80, radius=28)                       # thin dark bar on white
    rotated = images.prepare_image(img, 64, rotation_deg=30)
    border = np.concatenate([rotated[0], rotated[-1], rotated[:, 0], rotated[:, -1]])
    assert border.min() >= 250                                 # no dark edge or corner
    assert rotated[0, 0] >= 250 and rotated[-1, -1] >= 250
    assert (rotated < 128).sum() > 50                          # the galaxy is still there


def test_rotation_is_counter_clockwise():
    img = np.full((65, 65), 255, np.uint8)
    img[30:35, 50:55] = 0                                      # a dark spot right of centre
    rotated = images.prepare_image(img, 65, rotation_deg=90)
    rows, cols = np.nonzero(rotated < 128)
    assert rows.mean() < 20 and abs(cols.mean() - 32) < 3     # moved to the top


def test_colour_rotation_fills_with_its_sky():
    img = np.zeros((48, 48, 3), np.uint8)
    img[:] = (10, 20, 30)                                      # dark coloured sky
    img[20:28, 4:44] = 250                                     # white bar
    rotated = images.prepare_image(img, 48, rotation_deg=45)
    assert rotated.shape == (48, 48, 3)
    np.testing.assert_array_equal(rotated[0, 0], (10, 20, 30))
    np.testing.assert_array_equal(rotated[-1, -1], (10, 20, 30))


def test_prepare_without_rotation_or_zoom_is_a_resize():
    img = disk_image(64, 60, radius=16)
    np.testing.assert_array_equal(images.prepare_image(img, 64), img)
    small = images.prepare_image(img, 16)
    expected = np.asarray(Image.fromarray(img).resize((16, 16), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(small, expected)


@pytest.mark.parametrize("band", ["g", "gri"])
def test_load_prepared_matches_stage_01_output(synthetic_input, tmp_path, band):
    syn = synthetic_input
    path = images.find_image(syn.images_dir, 104, band)
    arr = images.load_prepared(path, band, 24)
    assert arr.shape == (24, 24, 3) and arr.dtype == np.uint8
    if band == "g":
        assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all()
    run_prep(syn, tmp_path / "prep", size=24, bands=[band])
    written = tmp_path / "prep" / f"24x24_{TAGS[band]}" / f"pgc104_24x24_66.{TAGS[band]}.jpg"
    with Image.open(written) as im:
        np.testing.assert_array_equal(arr, images.to_three_channels(np.asarray(im)))


def test_prep_with_rotation_and_zoom_applies_them(synthetic_input, tmp_path):
    syn = synthetic_input
    run_prep(syn, tmp_path / "a", size=32, bands=["g"])
    run_prep(syn, tmp_path / "b", size=32, bands=["g"], zoom=1.5)
    run_prep(syn, tmp_path / "c", size=32, bands=["g"], rotation_deg=90)

    def load(run, name):
        with Image.open(tmp_path / run / "32x32_g" / name) as im:
            return np.asarray(im)

    a, b = load("a", "pgc101_32x32_50.g.jpg"), load("b", "pgc101_32x32_50.g.jpg")

    def extent(img, axis):  # most dark pixels in one row (axis 1) or one column (axis 0)
        return int((img < 128).sum(axis=axis).max())

    assert abs(extent(b, 1) / extent(a, 1) - 1.5) < 0.15
    a, c = load("a", "pgc108_32x32_90.g.jpg"), load("c", "pgc108_32x32_90.g.jpg")  # edge-on bar
    assert extent(a, 1) > 3 * extent(a, 0)   # horizontal
    assert extent(c, 0) > 3 * extent(c, 1)   # turned vertical
    assert c[0, 0] > 240 and c[-1, -1] > 240
