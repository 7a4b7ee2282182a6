"""Atomic writes: no partial or temporary files on failure, no overwriting, exact npz names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inclinet_utils import io as iio
from inclinet_utils import layout


class Boom(RuntimeError):
    pass


def test_atomic_path_leaves_nothing_on_exception(tmp_path):
    target = tmp_path / "out" / "product.bin"
    with pytest.raises(Boom):
        with iio.atomic_path(target) as tmp:
            assert tmp != target and tmp.parent == target.parent
            tmp.write_bytes(b"half written")
            raise Boom()
    assert not target.exists()
    assert list(target.parent.iterdir()) == []      # temporary file removed too


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "product.bin"
    with iio.atomic_path(target) as tmp:
        tmp.write_bytes(b"complete")
        assert not target.exists()                   # invisible until the block ends
    assert target.read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["product.bin"]


def test_atomic_path_refuses_to_overwrite(tmp_path):
    target = tmp_path / "user.txt"
    target.write_text("user data")
    with pytest.raises(FileExistsError, match="user.txt"):
        with iio.atomic_path(target) as tmp:
            tmp.write_text("replacement")
    assert target.read_text() == "user data"
    assert [p.name for p in tmp_path.iterdir()] == ["user.txt"]
    with pytest.raises(FileExistsError):
        iio.write_json(target, {"a": 1})
    with pytest.raises(FileExistsError):
        iio.save_npz(target, x=np.zeros(2))
    assert target.read_text() == "user data"
    iio.write_text(target, "explicit", overwrite=True)
    assert target.read_text() == "explicit"


def test_staged_dir_removes_temp_folder_on_failure(tmp_path):
    final = tmp_path / "stage"
    with pytest.raises(Boom):
        with iio.staged_dir(final) as tmp:
            (tmp / "sub").mkdir()
            (tmp / "sub" / "a.npz").write_bytes(b"partial")
            assert not final.exists()
            raise Boom()
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_staged_dir_success_and_refusal(tmp_path):
    final = tmp_path / "stage"
    with iio.staged_dir(final) as tmp:
        iio.save_npz(tmp / "x.npz", x=np.arange(3))
    assert [p.name for p in final.iterdir()] == ["x.npz"]
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]
    with pytest.raises(FileExistsError, match="stage"):
        with iio.staged_dir(final) as tmp:
            (tmp / "y").write_text("new")
    assert [p.name for p in final.iterdir()] == ["x.npz"]
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]


@pytest.mark.parametrize("name", ["data.npz", "data", "data.bin"])
def test_save_npz_writes_exactly_the_given_name(tmp_path, name):
    images = np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3)
    path = iio.save_npz(tmp_path / name, images=images, labels=np.array([[1, 2], [61, 1]]))
    assert path == tmp_path / name
    assert [p.name for p in tmp_path.iterdir()] == [name]
    with np.load(path) as d:
        assert sorted(d.files) == ["images", "labels"]
        np.testing.assert_array_equal(d["images"], images)
        assert d["images"].dtype == np.uint8


def test_write_json_round_trip_with_numpy_values(tmp_path):
    path = iio.write_json(tmp_path / "r.json", {"ids": np.array([3, 4]), "n": np.int64(2), "x": np.float32(0.5)})
    assert iio.read_json(path) == {"ids": [3, 4], "n": 2, "x": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_save_figure_writes_the_format_of_the_suffix(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    for name, magic in [("a.png", b"\x89PNG"), ("b.jpg", b"\xff\xd8\xff"), ("c.pdf", b"%PDF")]:
        assert iio.save_figure(fig, tmp_path / name) == tmp_path / name
        assert (tmp_path / name).read_bytes().startswith(magic), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.jpg", "c.pdf"]
    iio.save_figure(fig, tmp_path / "a.png")                     # figures are redrawn: overwritten by default
    with pytest.raises(FileExistsError, match="a.png"):
        iio.save_figure(fig, tmp_path / "a.png", overwrite=False)


def test_resolve_input_defaults_to_the_run_sample(tmp_path):
    paths = layout.run_paths(tmp_path)
    assert iio.resolve_input(tmp_path) == (paths["input_images"], paths["input_catalog"])
    assert iio.resolve_input(tmp_path, "mine/galaxies", "mine/cat.csv") == (Path("mine/galaxies"),
                                                                            Path("mine/cat.csv"))
