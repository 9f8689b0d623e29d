# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""zarr and OME-Zarr (OME-NGFF 0.4, zarr v2) as input and as chunked output (scripts.io)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from scripts.data import find_images
from scripts.errors import BundleInputError
from scripts.io import (
    create_zarr,
    discard_zarr,
    finalize_zarr,
    open_sections,
    open_zarr,
    read_stack,
    zarr_spacing,
    zarr_temporary,
)
from scripts.outputs import remove_stale_temporaries

STACK = np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30)


def write_ome_zarr(
    path: Path, data: np.ndarray, axes: str, scale: list[float] | None = None, separator: str = "/"
) -> Path:
    """``data`` as the one dataset "0" of an OME-NGFF 0.4 group with ``axes`` (e.g. "tczyx"), one section a chunk."""
    kinds = {"t": "time", "c": "channel"}
    group = zarr.open_group(str(path), mode="w")
    chunks = tuple(n if a in "yx" else 1 for a, n in zip(axes, data.shape))
    dataset = group.create_dataset(
        "0", shape=data.shape, chunks=chunks, dtype=data.dtype, dimension_separator=separator
    )
    dataset[...] = data
    transforms = [{"type": "scale", "scale": scale or [1.0] * data.ndim}]
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": a, "type": kinds.get(a, "space")} for a in axes],
            "datasets": [{"path": "0", "coordinateTransformations": transforms}],
        }
    ]
    return path


def test_create_zarr_is_hidden_until_finalized_and_reads_back(tmp_path: Path) -> None:
    target = tmp_path / "v_prob.zarr"
    array = create_zarr(target, (3, 20, 30), np.float32, spacing=(50.0, 4.0, 4.0))
    assert array.chunks == (1, 20, 30) and not target.exists()
    assert os.path.isdir(zarr_temporary(target)) and array.store.path == zarr_temporary(target)
    array[...] = STACK.astype(np.float32)
    assert finalize_zarr(target) == str(target) and not os.path.exists(zarr_temporary(target))
    opened = open_zarr(target)
    assert opened.shape == (3, 20, 30) and opened.dtype == np.float32
    np.testing.assert_array_equal(opened[...], STACK)
    assert zarr_spacing(target) == (50.0, 4.0, 4.0)
    meta = zarr.open_group(str(target), mode="r").attrs["multiscales"][0]
    assert meta["version"] == "0.4" and [a["name"] for a in meta["axes"]] == ["z", "y", "x"]
    big = create_zarr(tmp_path / "big.zarr", (2, 3000, 700), np.uint32)
    assert big.chunks == (1, 1024, 700)
    discard_zarr(tmp_path / "big.zarr")
    assert list(tmp_path.iterdir()) == [target]


def test_a_killed_zarr_write_is_removed_at_the_next_start(tmp_path: Path) -> None:
    create_zarr(tmp_path / "x_prob.zarr", (2, 8, 8), np.float32)
    temporary = Path(zarr_temporary(tmp_path / "x_prob.zarr"))
    dead = tmp_path / temporary.name.replace(f"-{os.getpid()}.", "-999999999.")
    temporary.rename(dead)  # as if the process that wrote it had been killed
    assert remove_stale_temporaries(tmp_path) == [dead.name] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("separator", ["/", "."])
def test_ome_zarr_with_size_one_time_and_channel_axes(tmp_path: Path, separator: str) -> None:
    """bioformats2raw writes (t, c, z, y, x) with t = c = 1: read as (z, y, x), whole and by section."""
    path = write_ome_zarr(tmp_path / "v.ome.zarr", STACK[None, None], "tczyx", [1.0, 1.0, 40.0, 5.0, 6.0], separator)
    assert open_zarr(path).shape == (3, 20, 30) and zarr_spacing(path) == (40.0, 5.0, 6.0)
    stack = read_stack(path)
    assert stack.layout == "zyx" and stack.spacing == (40.0, 5.0, 6.0) and stack.array.dtype == np.uint16
    np.testing.assert_array_equal(stack.array, STACK)
    with open_sections(path) as sections:
        np.testing.assert_array_equal(sections.read(1, 3), STACK[1:3])
        np.testing.assert_array_equal(np.stack(list(sections)), STACK)


def test_plain_zarr_array_and_2d_ome_zarr(tmp_path: Path) -> None:
    plain = zarr.open(str(tmp_path / "p.zarr"), mode="w", shape=STACK.shape, chunks=(1, 20, 30), dtype=STACK.dtype)
    plain[...] = STACK
    plain.attrs["element_size_um"] = [0.05, 0.004, 0.004]
    np.testing.assert_array_equal(read_stack(tmp_path / "p.zarr").array, STACK)
    assert zarr_spacing(tmp_path / "p.zarr") == (0.05, 0.004, 0.004)
    flat = write_ome_zarr(tmp_path / "s.zarr", STACK[0], "yx", [5.0, 6.0])
    loaded = read_stack(flat)
    assert loaded.layout == "yx" and loaded.array.shape == (1, 20, 30) and loaded.spacing == (1.0, 5.0, 6.0)


def test_channel_axis_is_refused(tmp_path: Path) -> None:
    path = write_ome_zarr(tmp_path / "two.ome.zarr", np.stack([STACK, STACK]), "czyx")
    for read in (open_zarr, read_stack, open_sections):
        with pytest.raises(BundleInputError, match="2 c") as info:
            read(path)
        assert str(path) in str(info.value) and "channel to segment" in info.value.fix
    plain = zarr.open(str(tmp_path / "four.zarr"), mode="w", shape=(2, 3, 8, 8), dtype=np.uint8)
    with pytest.raises(BundleInputError, match=r"expected \(Z, Y, X\)"):
        open_zarr(tmp_path / "four.zarr")
    assert plain.ndim == 4


def test_a_zarr_folder_is_one_input_and_its_chunks_never_are(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_ome_zarr(data / "vol.zarr", STACK, "zyx")
    (data / "vol.zarr" / "0" / "stray.tif").write_bytes(b"")  # files inside the store are not inputs
    plain = zarr.open(str(data / "raw.zarr"), mode="w", shape=(2, 8, 8), dtype=np.uint8)
    plain[...] = 1
    (data / "notzarr.zarr").mkdir()  # an empty folder named .zarr is no image
    assert find_images(data) == [str(data / "raw.zarr"), str(data / "vol.zarr")]
    assert find_images(data / "vol.zarr") == [str(data / "vol.zarr")]
