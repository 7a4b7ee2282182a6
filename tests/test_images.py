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


@pytest.mark.parametrize("content", [b"", b"not an image at all", "truncated"])
def test_corrupt_file_raises_named_error(synthetic_input, content):
    path = synthetic_input.gray_path(103, "i")
    if content == "truncated":
        content = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=path.name):
        images.read_galaxy_image(path, "i")


def test_far_from_square_and_16bit_images_rejected(tmp_path):
    path = tmp_path / "pgc1_d25x2_rot_g.png"
    Image.fromarray(np.zeros((20, 30), np.uint8), "L").save(path)
    with pytest.raises(ImageReadError, match=r"pgc1_d25x2_rot_g.png is 30x20.*square"):
        images.read_galaxy_image(path, "g")
    path16 = tmp_path / "pgc2_d25x2_rot_g.png"
    Image.fromarray(np.zeros((16, 16), np.uint16)).save(path16)
    with pytest.raises(ImageReadError, match=path16.name):
        images.read_galaxy_image(path16, "g")
    with pytest.raises(ImageReadError, match="pgc3"):
        images.read_galaxy_image(tmp_path / "pgc3_d25x2_rot_g.png", "g")


# --- real folders as users have them -------------------------------------------------

def noisy_disk(n: int, inc_deg: float = 60, seed: int = 0, height: int | None = None) -> np.ndarray:
    """A black-on-white gray cutout with sky noise (so nothing reads back by luck), n wide."""
    rng = np.random.default_rng(seed)
    img = disk_image(n, inc_deg, radius=n / 4).astype(int) - rng.integers(0, 12, (n, n))
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img if height is None else img[:height]


def test_rgba_band_png_with_opaque_alpha_reads_as_its_gray(tmp_path):
    gray = noisy_disk(40)
    path = tmp_path / "pgc1_d25x2_rot_g.png"
    Image.fromarray(np.dstack([gray, gray, gray, np.full_like(gray, 255)]), "RGBA").save(path)
    out = images.read_galaxy_image(path, "g")
    assert out.shape == (40, 40) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, gray)


def test_rgba_band_png_transparent_pixels_are_white_sky(tmp_path):
    gray = noisy_disk(40)
    alpha = np.full_like(gray, 255)
    alpha[:5] = 0
    alpha[5:8] = 128
    path = tmp_path / "pgc1_d25x2_rot_r.png"
    Image.fromarray(np.dstack([gray, gray, gray, alpha]), "RGBA").save(path)
    out = images.read_galaxy_image(path, "r")
    assert (out[:5] == 255).all()
    expected = np.round(gray[5:8] * (128 / 255) + 255 * (1 - 128 / 255))
    assert np.abs(out[5:8].astype(int) - expected).max() <= 1
    np.testing.assert_array_equal(out[8:], gray[8:])


def test_jpeg_bytes_behind_png_name_read_by_content(tmp_path):
    gray = noisy_disk(48)
    path = tmp_path / "pgc1_d25x2_rot_i.png"
    Image.fromarray(np.dstack([gray] * 3), "RGB").save(path, format="JPEG", quality=95)
    assert path.read_bytes()[:3] == b"\xff\xd8\xff"        # JPEG bytes, .png name
    out = images.read_galaxy_image(path, "i")
    assert out.shape == (48, 48) and out.dtype == np.uint8
    with Image.open(path) as im:
        decoded = np.asarray(im)
    np.testing.assert_array_equal(out, decoded[..., 0])      # the stored gray, not a luminance mix
    assert np.abs(out.astype(int) - gray).mean() < 3           # and close to what was saved


def test_band_image_with_differing_channels_is_refused(tmp_path):
    gray = noisy_disk(32)
    path = tmp_path / "pgc1_d25x2_rot_g.png"
    Image.fromarray(np.dstack([gray, gray // 2, gray // 3]), "RGB").save(path)
    with pytest.raises(ImageReadError, match=r"pgc1_d25x2_rot_g.png is a colour image"):
        images.read_galaxy_image(path, "g")
    # The same file is a fine colour composite.
    assert images.read_galaxy_image(path, "gri").shape == (32, 32, 3)


def test_grayscale_colour_composite_becomes_three_equal_channels(tmp_path):
    white = 255 - noisy_disk(36)
    path = tmp_path / "pgc1_d25x2_rot_gri.jpg"
    Image.fromarray(white, "L").save(path, quality=95)
    out = images.read_galaxy_image(path, "gri")
    assert out.shape == (36, 36, 3) and out.dtype == np.uint8
    with Image.open(path) as im:
        assert im.mode == "L"
        stored = np.asarray(im)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], stored)


@pytest.mark.parametrize("width,height", [(33, 32), (32, 33), (52, 50)])
def test_off_square_gray_is_padded_with_its_sky(tmp_path, width, height):
    n = max(width, height)
    img = np.full((height, width), 231, np.uint8)          # sky level 231, not white
    img[height // 2 - 3: height // 2 + 3, 4:width - 4] = 10    # a dark bar
    path = tmp_path / "pgc1_d25x2_rot_g.png"
    Image.fromarray(img, "L").save(path)
    stored = images.read_galaxy_image(path, "g")
    np.testing.assert_array_equal(stored, img)                # read as stored
    square = images.pad_to_square(stored)
    assert square.shape == (n, n)
    top, left = (n - height) // 2, (n - width) // 2
    np.testing.assert_array_equal(square[top:top + height, left:left + width], img)
    rest = np.ones((n, n), bool)
    rest[top:top + height, left:left + width] = False
    assert rest.sum() == n * n - width * height and (square[rest] == 231).all()
    prepared = images.prepare_image(stored, 16)
    expected = np.asarray(Image.fromarray(square).resize((16, 16), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(prepared, expected)


def test_off_square_colour_composite_padded_with_its_sky():
    img = np.zeros((41, 40, 3), np.uint8)
    img[:] = (12, 20, 33)
    img[18:23, 5:35] = 240
    square = images.pad_to_square(img)
    assert square.shape == (41, 41, 3)
    np.testing.assert_array_equal(square[:, 40], np.tile([12, 20, 33], (41, 1)))
    np.testing.assert_array_equal(square[:, :40], img)
    assert images.prepare_image(img, 20).shape == (20, 20, 3)


@pytest.mark.parametrize("n", [237, 1201])
def test_any_cutout_size_prepares_to_the_same_galaxy(tmp_path, n):
    """A small and a large cutout of the same disk give nearly the same prepared image."""
    path = tmp_path / "pgc1_d25x2_rot_r.png"
    big = disk_image(n, 70, radius=n / 4)
    Image.fromarray(np.dstack([big] * 3 + [np.full_like(big, 255)]), "RGBA").save(path)
    prepared = images.load_prepared(path, "r", 32)
    reference = images.prepare_image(disk_image(512, 70, radius=128), 32)
    assert prepared.shape == (32, 32, 3)
    assert np.abs(prepared[..., 0].astype(int) - reference).mean() < 4


def test_load_prepared_off_square_jpeg_behind_png(tmp_path):
    """What `predict` does with such a file: a square (size, size, 3) image, no error."""
    img = noisy_disk(60, height=59)
    path = tmp_path / "pgc1_d25x2_rot_g.png"
    Image.fromarray(np.dstack([img] * 3), "RGB").save(path, format="JPEG", quality=95)
    arr = images.load_prepared(path, "g", 24)
    assert arr.shape == (24, 24, 3) and arr.dtype == np.uint8
    assert (arr[..., 0] == arr[..., 2]).all()
    assert arr[0, 12, 0] > 200 and arr[12, 12, 0] < 100      # white sky above, dark centre


def write_users_folder(syn) -> dict[str, Path]:
    """Turn some synthetic galaxies into the cases of real users' folders; return their files."""
    gray = noisy_disk(syn.n, seed=1)
    rgba = syn.gray_path(101, "g")                                  # RGBA, opaque
    Image.fromarray(np.dstack([gray] * 3 + [np.full_like(gray, 255)]), "RGBA").save(rgba)
    jpeg_png = syn.gray_path(102, "r")                              # JPEG bytes, .png name
    Image.fromarray(np.dstack([gray] * 3), "RGB").save(jpeg_png, format="JPEG", quality=95)
    off_square = syn.gray_path(103, "i")                            # one row short
    Image.fromarray(gray[:-1], "L").save(off_square)
    colour_off = syn.colour_paths(103)[0]
    with Image.open(colour_off) as im:
        Image.fromarray(np.asarray(im)[:, :-2]).save(colour_off, format="JPEG", quality=95)
    for path in syn.colour_paths(104):                              # grayscale composite
        Image.fromarray(255 - gray, "L").save(path, format="JPEG", quality=95)
    for path in syn.colour_paths(105):                              # no composite
        path.unlink(missing_ok=True)
    return {"rgba": rgba, "jpeg_png": jpeg_png, "off_square": off_square, "colour_off": colour_off}


def test_prep_reads_a_users_folder_and_lists_padded_cutouts(synthetic_input, tmp_path):
    syn = synthetic_input
    files = write_users_folder(syn)
    out = tmp_path / "prep"
    report = run_prep(syn, out, size=16)
    n = len(syn.labels)
    assert report.written == {"g": n, "r": n, "i": n, "gri": n - 1}
    assert report.bad_files.empty
    assert set(zip(report.missing["pgc"], report.missing["band"])) == {(105, "gri")}
    padded = report.padded.sort_values("band")
    assert padded[["pgc", "band", "path", "width", "height"]].values.tolist() == [
        [103, "gri", str(files["colour_off"]), syn.n - 2, syn.n],
        [103, "i", str(files["off_square"]), syn.n, syn.n - 1]]
    on_disk = pd.read_csv(out / "padded_images.csv")
    assert sorted(on_disk["path"]) == sorted(padded["path"])
    assert report.summary().set_index("band").loc["i", "padded"] == 1
    with Image.open(out / "16x16_RGB" / "pgc104_16x16_66.RGB.jpg") as im:
        assert im.mode == "RGB" and im.size == (16, 16)
    for name, band in (("pgc101_16x16_50.g.jpg", "g"), ("pgc102_16x16_55.r.jpg", "r")):
        with Image.open(out / f"16x16_{band}" / name) as im:
            written = np.asarray(im).astype(int)
        expected = images.prepare_image(noisy_disk(syn.n, seed=1), 16).astype(int)
        assert np.abs(written - expected).mean() < 3


def test_prep_still_stops_at_a_truly_unreadable_file(synthetic_input, tmp_path):
    syn = synthetic_input
    write_users_folder(syn)
    bad = syn.gray_path(108, "r")
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but nothing after the signature")
    with pytest.raises(ImageReadError, match=bad.name):
        run_prep(syn, tmp_path / "prep", size=16)
    assert not (tmp_path / "prep").exists()
    report = run_prep(syn, tmp_path / "prep", size=16, skip_bad_files=True)
    assert report.bad_files["path"].tolist() == [str(bad)]
    assert len(report.padded) == 2                     # the odd but readable files still go through


VARIED_OFF_SQUARE = {32992: (505, 506), 36431: (1154, 1153), 65375: (1292, 1293), 30197: (3103, 3102)}
VARIED_NO_COMPOSITE = {30197, 41812, 71047}


def test_real_users_folder_reads_every_case(tmp_path):
    varied = Path(__file__).resolve().parents[1].parent / "shared" / "real_sdss_varied"
    if not (varied / "galaxies").is_dir() or not (varied / "catalogs" / "catalog.csv").is_file():
        pytest.skip(f"real SDSS varied-format folder {varied} not available")
    cat = catalog.read_catalog(varied / "catalogs" / "catalog.csv")
    report = images.prep_stage(cat, varied / "galaxies", tmp_path / "prep", size=16,
                               n_workers=1, progress=False)
    n = len(cat)
    assert n == 16 and report.bad_files.empty
    assert report.written == {"g": n, "r": n, "i": n, "gri": n - len(VARIED_NO_COMPOSITE)}
    assert set(report.missing["pgc"]) == VARIED_NO_COMPOSITE and set(report.missing["band"]) == {"gri"}
    got = {(int(r.pgc), r.band): (int(r.width), int(r.height)) for r in report.padded.itertuples()}
    expected = {(pgc, band): wh for pgc, wh in VARIED_OFF_SQUARE.items()
                for band in ("g", "r", "i", "gri") if not (band == "gri" and pgc in VARIED_NO_COMPOSITE)}
    assert got == expected
    # RGBA, JPEG-behind-png and off-square band images read as black galaxy on a bright
    # sky, composites as bright on dark.
    for pgc in (3351, 5702, 32992):
        for band, tag in TAGS.items():
            label = cat.set_index("pgc").loc[pgc, "label"]
            with Image.open(tmp_path / "prep" / f"16x16_{tag}" / f"pgc{pgc}_16x16_{label}.{tag}.jpg") as im:
                arr = np.asarray(im).astype(int)
            sky = np.median(np.concatenate([arr[0], arr[-1]]))
            assert (sky > 180) if band != "gri" else (sky < 80), (pgc, band, sky)
    # 31677's composite is mode L (its g image saved again): three equal channels, as stored.
    gal = varied / "galaxies"
    rgb = images.read_galaxy_image(gal / "pgc31677_d25x2_rot_gri.jpg", "gri")
    assert rgb.shape == (1485, 1485, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    g = images.read_galaxy_image(gal / "pgc31677_d25x2_rot_g.png", "g")
    assert np.abs(rgb[..., 1].astype(int) - g).mean() < 1


# --- stage 01 ----------------------------------------------------------------------

def test_prep_output_names(synthetic_input, tmp_path):
    syn = synthetic_input
    out = tmp_path / "prep"
    report = run_prep(syn, out, size=32)
    expected = {"missing_images.csv", "skipped_bad_files.csv", "padded_images.csv"}
    for band, tag in TAGS.items():
        expected.add(f"32x32_{tag}")
        for pgc, label in syn.labels.items():
            expected.add(f"32x32_{tag}/pgc{pgc}_32x32_{label}.{tag}.jpg")
    assert listing(out) == expected
    assert report.written == {b: len(syn.labels) for b in TAGS}
    assert report.missing.empty and report.bad_files.empty and report.padded.empty
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
    sky = (images.COMPOSITE_SKY,) * 3  # the pedestal is normalised first, then the corners filled with it
    np.testing.assert_array_equal(rotated[0, 0], sky)
    np.testing.assert_array_equal(rotated[-1, -1], sky)


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


def _composite_with_sky(sky, n=64, seed=0):
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(0, 2, (n, n, 3)) + np.asarray(sky, float), 0, 255)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    disk = 200 * np.exp(-((xx / 12) ** 2 + (yy / 4) ** 2))
    return np.clip(img + disk[..., None], 0, 255).astype(np.uint8), disk > 100


def test_composite_sky_pedestal_is_moved_to_the_simulator_level():
    from inclinet_utils.images import COMPOSITE_SKY, normalise_composite_sky

    tinted, core = _composite_with_sky((17, 22, 35))
    out = normalise_composite_sky(tinted)
    border = np.concatenate([out[:3].reshape(-1, 3), out[-3:].reshape(-1, 3)])
    assert np.allclose(np.median(border, axis=0), COMPOSITE_SKY, atol=1)
    # the galaxy keeps its light above the sky
    assert np.allclose(out[core].astype(float).mean(0), tinted[core].astype(float).mean(0) - (17 - 4, 22 - 4, 35 - 4),
                       atol=2)
    # a composite already at the simulator's sky level is left alone
    plain, _ = _composite_with_sky((4, 4, 4))
    assert np.abs(normalise_composite_sky(plain).astype(int) - plain).max() <= 1


def test_composite_negative_is_inverted_and_white_corners_kept():
    from inclinet_utils.images import normalise_composite_sky

    img, core = _composite_with_sky((4, 4, 4))
    negative = 255 - img  # a band image saved as the composite: black galaxy on white sky
    out = normalise_composite_sky(negative)
    assert abs(out[core].astype(float).mean() - img[core].astype(float).mean()) < 3 and np.median(out[:3]) < 10
    corners = img.copy()
    corners[:10, :10] = 255  # white corners of a rotated cutout
    out = normalise_composite_sky(corners)
    assert (out[:10, :10] == 255).all() and np.median(out[20:, :3]) < 10
