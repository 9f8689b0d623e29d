# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest
import tifffile
from scripts.errors import BundleInputError
from scripts.io import image_stem, read_stack, to_file_order, write_tiff


def test_tiff_stack_keeps_section_order(tmp_path: Path) -> None:
    stack = np.arange(3 * 8 * 10, dtype=np.uint8).reshape(3, 8, 10)
    write_tiff(tmp_path / "s.tif", stack)
    loaded = read_stack(tmp_path / "s.tif")
    assert loaded.layout == "zyx"
    np.testing.assert_array_equal(loaded.array, stack)


@pytest.mark.parametrize("sections", [3, 4])
def test_three_or_four_sections_are_not_taken_for_colour(tmp_path: Path, sections: int) -> None:
    stack = np.random.default_rng(3).integers(0, 255, (sections, 20, 24)).astype(np.uint8)
    write_tiff(tmp_path / "s.tif", stack)
    with tifffile.TiffFile(tmp_path / "s.tif") as tif:
        assert len(tif.pages) == sections
    np.testing.assert_array_equal(read_stack(tmp_path / "s.tif").array, stack)


def test_nifti_is_read_sections_first_and_restored(tmp_path: Path) -> None:
    xyz = np.random.default_rng(0).integers(0, 255, (10, 8, 3)).astype(np.uint8)
    nib.save(nib.Nifti1Image(xyz, np.diag([4.0, 4.0, 50.0, 1.0])), tmp_path / "v.nii.gz")
    loaded = read_stack(tmp_path / "v.nii.gz")
    assert loaded.array.shape == (3, 8, 10) and loaded.layout == "xyz"
    assert loaded.spacing == (50.0, 4.0, 4.0)
    np.testing.assert_array_equal(to_file_order(loaded.array, loaded.layout), xyz)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_formats(tmp_path: Path, suffix: str) -> None:
    stack = np.random.default_rng(1).integers(0, 255, (2, 16, 12)).astype(np.uint8)
    itk.imwrite(itk.image_from_array(stack), str(tmp_path / f"v{suffix}"))
    np.testing.assert_array_equal(read_stack(tmp_path / f"v{suffix}").array, stack)


def test_png_section_is_one_section(tmp_path: Path) -> None:
    section = np.random.default_rng(2).integers(0, 255, (16, 12)).astype(np.uint8)
    itk.imwrite(itk.image_from_array(section), str(tmp_path / "s.png"))
    loaded = read_stack(tmp_path / "s.png")
    assert loaded.array.shape == (1, 16, 12) and loaded.layout == "yx"
    np.testing.assert_array_equal(to_file_order(loaded.array, loaded.layout), section)


def test_image_stem_handles_double_suffix() -> None:
    assert image_stem("/a/b/x.nii.gz") == "x"
    assert image_stem("train-volume.tif") == "train-volume"


def test_write_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "out.tif"
    with pytest.raises(KeyError):
        write_tiff(target, np.zeros((2, 2), dtype=object))  # tifffile fails on object arrays mid-write
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file is left


def test_written_files_are_readable_by_others(tmp_path: Path) -> None:
    write_tiff(tmp_path / "out.tif", np.zeros((4, 4), np.uint8))
    assert (tmp_path / "out.tif").stat().st_mode & 0o044 == 0o044


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"this is not a tiff at all"), "cannot be read"),
        (lambda p: tifffile.imwrite(p, np.full((4, 4), np.nan, np.float32)), "NaN"),
        (lambda p: tifffile.imwrite(p, np.zeros((32, 32, 3), np.uint8)), "colour"),
        (lambda p: tifffile.imwrite(p, np.zeros((2, 2, 4, 4), np.uint8)), "4 dimensions"),
    ],
    ids=["zero-byte", "corrupt", "nan", "rgb", "4d"],
)
def test_bad_images_give_clear_errors(tmp_path: Path, make, match: str) -> None:
    path = tmp_path / "bad.tif"
    make(path)
    with pytest.raises(BundleInputError, match=match) as info:
        read_stack(path)
    assert str(path) in str(info.value) and "Fix:" in str(info.value)


def test_truncated_tiff_gives_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    write_tiff(path, np.random.default_rng(0).integers(0, 255, (4, 64, 64)).astype(np.uint8))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(BundleInputError, match="cut.tif"):
        read_stack(path)


def test_missing_file_and_unknown_type(tmp_path: Path) -> None:
    with pytest.raises(BundleInputError, match="not found"):
        read_stack(tmp_path / "nope.tif")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BundleInputError, match="not a recognised image type"):
        read_stack(tmp_path / "notes.txt")
