# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""MRC (mrcfile) in and out: whole and section by section, voxel size as pixel size, --output_format mrc and the
mode rule for labels (scripts/io/mrc.py)."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest
from scripts.data import find_images
from scripts.errors import BundleInputError
from scripts.io import PixelSize, open_sections, read_pixel_size, read_stack, write_sections

STACK = np.random.default_rng(0).integers(0, 3000, (4, 20, 24)).astype(np.uint16)


def _mrc(path: Path, data: np.ndarray, voxel: object = (40.0, 40.0, 500.0)) -> Path:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = voxel
    return path


@pytest.mark.parametrize("suffix", [".mrc", ".mrcs", ".rec", ".map"])
@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.int8, np.float32, ">f4"], ids=str)
def test_mrc_reads_whole_and_by_section(tmp_path: Path, suffix: str, dtype: object) -> None:
    """Every MRC suffix and mode the bundle meets, big-endian files included, read whole and streamed alike."""
    data = (STACK % 100).astype(dtype)
    path = _mrc(tmp_path / f"v{suffix}", data)
    stack = read_stack(path)
    assert stack.layout == "zyx" and stack.array.dtype.isnative and stack.spacing == (500.0, 40.0, 40.0)
    assert stack.pixel_size == PixelSize((50.0, 4.0, 4.0), "MRC voxel size (Angstrom)")
    np.testing.assert_array_equal(stack.array, data)
    with open_sections(path) as sections:
        assert sections.shape == (4, 20, 24) and sections.pixel_size == stack.pixel_size
        np.testing.assert_array_equal(sections.read(1, 3), data[1:3])
        np.testing.assert_array_equal(np.stack(list(sections)), data)


def test_single_mrc_image_is_2d(tmp_path: Path) -> None:
    path = _mrc(tmp_path / "s.mrc", STACK[0])
    stack = read_stack(path)
    assert stack.layout == "yx" and stack.array.shape == (1, 20, 24) and stack.pixel_size.nm[0] is None
    with open_sections(path) as sections:
        np.testing.assert_array_equal(np.stack(list(sections)), STACK[:1])


def test_bad_mrc_files_give_clear_errors(tmp_path: Path) -> None:
    path = _mrc(tmp_path / "v.mrc", STACK)
    (tmp_path / "cut.mrc").write_bytes(path.read_bytes()[:2000])  # header and a part of the first section
    (tmp_path / "junk.mrc").write_bytes(b"not an MRC file" * 100)
    for name in ("cut.mrc", "junk.mrc"):
        for read in (read_stack, open_sections):
            with pytest.raises(BundleInputError) as info:
                read(tmp_path / name)
            assert name in str(info.value)
    complex_data = (STACK[:2] + 1j).astype(np.complex64)
    with pytest.raises(BundleInputError, match="dtype"):
        read_stack(_mrc(tmp_path / "fft.mrc", complex_data))


def _written(path: Path, data: np.ndarray, pixel_size: PixelSize | None = None) -> mrcfile.mrcfile.MrcFile:
    write_sections(str(path), iter(data), data.shape, data.dtype, pixel_size=pixel_size)
    assert mrcfile.validate(str(path), print_file=open("/dev/null", "w"))
    return mrcfile.open(path)


def test_results_modes(tmp_path: Path) -> None:
    """float32 probability: mode 2; labels up to 65535: mode 6 (uint16); more: mode 2 (exact to 2**24); beyond
    that refused, naming formats that hold them, with no file left."""
    prob = np.random.default_rng(1).random((3, 8, 9), dtype=np.float32)
    with _written(tmp_path / "p.mrc", prob, PixelSize((None, 4.0, 5.0), "test")) as mrc:
        assert mrc.header.mode == 2 and np.array_equal(mrc.data, prob)
        assert (float(mrc.voxel_size.x), float(mrc.voxel_size.y), float(mrc.voxel_size.z)) == (50.0, 40.0, 0.0)
        assert mrc.header.dmax == pytest.approx(prob.max()) and mrc.header.dmean == pytest.approx(prob.mean())
    labels = np.arange(3 * 8 * 9, dtype=np.uint32).reshape(3, 8, 9)
    with _written(tmp_path / "few.mrc", labels) as mrc:
        assert mrc.header.mode == 6 and np.array_equal(mrc.data, labels)
    many = labels + 70000
    with _written(tmp_path / "many.mrc", many) as mrc:
        assert mrc.header.mode == 2 and np.array_equal(mrc.data.astype(np.uint32), many)
    with pytest.raises(BundleInputError, match="--output_format tif"):
        write_sections(str(tmp_path / "huge.mrc"), iter(labels + 2**24), labels.shape, np.uint32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.mrc", "many.mrc", "p.mrc"]


def test_mrc_files_are_inputs(tmp_path: Path) -> None:
    names = ["a.map", "b.mrc", "c.mrcs", "d.rec"]
    for name in names:
        _mrc(tmp_path / name, STACK)
    assert find_images(tmp_path) == [str(tmp_path / name) for name in names]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_inference_on_mrc(tmp_path: Path, stream: bool) -> None:
    """An MRC stack segments with its shape, and its pixel size goes with the results (TIFF by default, MRC with
    --output_format mrc); whole-volume and streamed inference write the same files."""
    from conftest import run_workflow

    data = tmp_path / "in"
    data.mkdir()
    _mrc(data / "fib.mrc", np.random.default_rng(2).integers(0, 255, (2, 48, 40)).astype(np.uint8), (40.0, 40.0, 40))
    configs = ["inference.json", "inference_stream.json"] if stream else "inference.json"
    options = {"roi_size": [32, 32], "plots": False, "zoom": 1}
    for output_format, extension in (("auto", "tif"), ("mrc", "mrc")):
        out = tmp_path / output_format
        run_workflow(configs, dataset_dir=str(data), output_dir=str(out), output_format=output_format, **options)
        for kind in ("prob", "seg"):
            result = read_stack(out / f"fib_{kind}.{extension}")
            assert result.array.shape == (2, 48, 40)
            assert read_pixel_size(out / f"fib_{kind}.{extension}").nm == (4.0, 4.0, 4.0)


def test_mrc_without_sampling_or_cell_size_has_no_pixel_size(tmp_path: Path) -> None:
    """Writers that leave the sampling (mx, my, mz) 0 make mrcfile's voxel size 0 / 0 = NaN: unknown, like a bare
    TIFF, not a traceback."""
    path = tmp_path / "unset.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.arange(3 * 16 * 16, dtype=np.uint8).reshape(3, 16, 16))
        mrc.header.mx, mrc.header.my, mrc.header.mz = 0, 0, 0
        mrc.header.cella = (0.0, 0.0, 0.0)
    assert read_pixel_size(str(path)) is None
    assert read_stack(str(path)).array.shape == (3, 16, 16)
