# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The pixel size in nm from every format's metadata and unit (scripts.io.read_pixel_size), what counts as unknown
(screen defaults, unit-less lengths), and results that carry their input's pixel size (write_result)."""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import tifffile
from conftest import ZARR3, needs_zarr3
from scripts.io import (
    OUTPUT_FORMATS,
    PixelSize,
    open_sections,
    read_pixel_size,
    read_stack,
    unit_nm,
    write_result,
    write_tiff,
)

STACK = np.arange(3 * 12 * 10, dtype=np.uint16).reshape(3, 12, 10)


def close(found: PixelSize | None, nm: tuple[float | None, float, float]) -> bool:
    """Whether ``found`` is ``nm`` (to 1e-6, relative; an unknown z must be unknown)."""
    return found is not None and all(
        a is None and b is None or None not in (a, b) and b == pytest.approx(a, rel=1e-6) for a, b in zip(nm, found.nm)
    )


def _same_everywhere(path: Path, nm: tuple[float | None, float, float] | None) -> PixelSize | None:
    """The pixel size of ``path`` as read_pixel_size, read_stack and open_sections give it, checked equal to ``nm``."""
    found = read_pixel_size(path)
    with open_sections(path) as sections:
        streamed = sections.pixel_size
    assert read_stack(path).pixel_size == found == streamed
    if nm is None:
        assert found is None
    else:
        assert close(found, nm), found
        assert found.source and str(found).startswith(f"{nm[1]:.4g} x")
    return found


# -------------------------------------------------------------------------------------------------------- TIFF
@pytest.mark.parametrize(
    "per_unit,unit,nm",
    [(1e7 / 4, "CENTIMETER", 4.0), (2.54e7 / 5, "INCH", 5.0), (1e7 / 12.5, "CENTIMETER", 12.5)],
    ids=["4nm-cm", "5nm-inch", "12.5nm-cm"],
)
def test_tiff_resolution_tags(tmp_path: Path, per_unit: float, unit: str, nm: float) -> None:
    tifffile.imwrite(
        tmp_path / "t.tif", STACK, photometric="minisblack", resolution=(per_unit,) * 2, resolutionunit=unit
    )
    found = _same_everywhere(tmp_path / "t.tif", (None, nm, nm))
    assert ("cm" if unit == "CENTIMETER" else "inch") in found.source


@pytest.mark.parametrize(
    "resolution,unit",
    [
        ((1, 1), "NONE"),  # tifffile's default
        ((2.5e6, 2.5e6), "NONE"),  # a length without unit
        ((1, 1), "CENTIMETER"),  # 1 pixel per unit
        ((72, 72), "INCH"),
        ((96, 96), "INCH"),
        ((150, 150), "INCH"),
        ((300, 300), "INCH"),
        ((72 / 2.54, 72 / 2.54), "CENTIMETER"),  # 72 dpi as programs write it in cm
    ],
    ids=["default", "unitless", "1-per-cm", "72dpi", "96dpi", "150dpi", "300dpi", "72dpi-cm"],
)
def test_tiff_screen_defaults_are_no_pixel_size(tmp_path: Path, resolution: tuple, unit: str) -> None:
    tifffile.imwrite(tmp_path / "t.tif", STACK, photometric="minisblack", resolution=resolution, resolutionunit=unit)
    _same_everywhere(tmp_path / "t.tif", None)


@pytest.mark.parametrize("unit,to_nm", [("micron", 1e3), ("um", 1e3), ("\\u00B5m", 1e3), ("nm", 1.0)])
def test_imagej_unit_and_spacing(tmp_path: Path, unit: str, to_nm: float) -> None:
    """Fiji writes its unit in the description (µ escaped as ``\\u00B5``), pixels per unit in the resolution tags
    (ResolutionUnit NONE) and the section spacing as ``spacing``."""
    size, spacing = 4.0 / to_nm, 50.0 / to_nm
    metadata = {"unit": unit, "spacing": spacing, "axes": "ZYX"}
    tifffile.imwrite(tmp_path / "ij.tif", STACK, imagej=True, resolution=(1 / size, 1 / size), metadata=metadata)
    found = _same_everywhere(tmp_path / "ij.tif", (50.0, 4.0, 4.0))
    assert "ImageJ" in found.source


def test_imagej_without_unit_is_no_pixel_size(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "ij.tif", STACK, imagej=True, resolution=(0.25, 0.25), metadata={"axes": "ZYX"})
    _same_everywhere(tmp_path / "ij.tif", None)


@pytest.mark.parametrize("unit,nm", [(None, 4.0 * 1e3), ("nm", 4.0), ("Å", 0.4)], ids=["default-um", "nm", "angstrom"])
def test_ome_tiff_physical_size(tmp_path: Path, unit: str | None, nm: float) -> None:
    """OME PhysicalSizeX/Y/Z; without PhysicalSizeXUnit the OME schema's default, µm."""
    metadata: dict = {"axes": "ZYX", "PhysicalSizeX": 4, "PhysicalSizeY": 4, "PhysicalSizeZ": 50}
    if unit:
        metadata.update({f"PhysicalSize{a}Unit": unit for a in "XYZ"})
    tifffile.imwrite(tmp_path / "o.ome.tif", STACK, metadata=metadata)
    found = _same_everywhere(tmp_path / "o.ome.tif", (nm * 12.5, nm, nm))
    assert "OME PhysicalSize" in found.source


# ------------------------------------------------------------------------------------------------ NIfTI, HDF5
@pytest.mark.parametrize("unit,to_nm", [("mm", 1e6), ("micron", 1e3), ("meter", 1e9), ("unknown", None)])
def test_nifti_pixdim_and_units(tmp_path: Path, unit: str, to_nm: float | None) -> None:
    per_unit = to_nm or 1e6
    image = nib.Nifti1Image(STACK.transpose(2, 1, 0), np.diag([5 / per_unit, 4 / per_unit, 50 / per_unit, 1.0]))
    image.header.set_xyzt_units(unit)
    nib.save(image, tmp_path / "v.nii.gz")
    expected = None if to_nm is None else (50.0, 4.0, 5.0)
    _same_everywhere(tmp_path / "v.nii.gz", expected)


def test_nifti_2d(tmp_path: Path) -> None:
    image = nib.Nifti1Image(STACK[0].T, np.diag([0.005, 0.004, 1.0, 1.0]))
    image.header.set_xyzt_units("micron")
    nib.save(image, tmp_path / "s.nii")
    assert close(read_pixel_size(tmp_path / "s.nii"), (None, 4.0, 5.0))


@pytest.mark.parametrize(
    "attrs,nm",
    [
        ({"element_size_um": [0.05, 0.004, 0.005]}, (50.0, 4.0, 5.0)),
        ({"resolution": [40, 4, 4]}, (40.0, 4.0, 4.0)),  # CREMI: nm
        ({"resolution": [0.04, 0.004, 0.004], "unit": "um"}, (40.0, 4.0, 4.0)),
        ({"resolution": [1, 1, 1]}, None),  # a placeholder
        ({"resolution": [40, 4, 4], "unit": "pixel"}, None),
    ],
    ids=["element_size_um", "resolution-nm", "resolution-unit", "ones", "not-a-length"],
)
def test_hdf5_attributes(tmp_path: Path, attrs: dict, nm: tuple | None) -> None:
    with h5py.File(tmp_path / "v.h5", "w") as f:
        dataset = f.create_dataset("raw", data=STACK)
        dataset.attrs.update(attrs)
    _same_everywhere(tmp_path / "v.h5", nm)


# ------------------------------------------------------------------------------------------------ zarr, MRC, ITK
def _ome_zarr(path: Path, units: dict[str, str], version: str = "0.4") -> Path:
    from test_zarr import write_ome_zarr

    return write_ome_zarr(path, STACK[None], "czyx", [1.0, 50.0, 4.0, 5.0], version=version, units=units)


@pytest.mark.parametrize(
    "units,nm",
    [
        ({"z": "nanometer", "y": "nanometer", "x": "nanometer"}, (50.0, 4.0, 5.0)),
        ({"z": "micrometer", "y": "micrometer", "x": "micrometer"}, (50e3, 4e3, 5e3)),
        ({"y": "angstrom", "x": "angstrom"}, (None, 0.4, 0.5)),  # z without unit: its spacing unknown
        ({}, None),
    ],
    ids=["nanometer", "micrometer", "angstrom-yx", "no-unit"],
)
def test_ome_zarr_scale_with_units(tmp_path: Path, units: dict, nm: tuple | None) -> None:
    found = _same_everywhere(_ome_zarr(tmp_path / "v.ome.zarr", units), nm)
    assert found is None or "OME-Zarr 0.4 scale" in found.source


@needs_zarr3
def test_ome_zarr_05_scale(tmp_path: Path) -> None:
    units = {"z": "nanometer", "y": "nanometer", "x": "nanometer"}
    found = _same_everywhere(_ome_zarr(tmp_path / "v.ome.zarr", units, "0.5"), (50.0, 4.0, 5.0))
    assert "OME-Zarr 0.5" in found.source


def test_plain_zarr_attributes(tmp_path: Path) -> None:
    from test_zarr import plain_zarr

    array = plain_zarr(tmp_path / "p.zarr", STACK.shape, STACK.dtype)
    array[...] = STACK
    array.attrs["resolution"] = [40, 4, 4]
    assert _same_everywhere(tmp_path / "p.zarr", (40.0, 4.0, 4.0)).source.startswith("zarr resolution")


@pytest.mark.parametrize(
    "voxel,nm",
    [((40.0, 40.0, 500.0), (50.0, 4.0, 4.0)), ((40.0, 40.0, 0.0), (None, 4.0, 4.0)), (0.0, None), (1.0, None)],
    ids=["xyz", "no-z", "unset", "one-angstrom"],
)
def test_mrc_voxel_size(tmp_path: Path, voxel: object, nm: tuple | None) -> None:
    import mrcfile

    with mrcfile.new(tmp_path / "v.mrc", STACK.astype(np.float32)) as mrc:
        mrc.voxel_size = voxel
    found = _same_everywhere(tmp_path / "v.mrc", nm)
    assert found is None or found.source == "MRC voxel size (Angstrom)"


def test_itk_formats_claim_no_pixel_size(tmp_path: Path) -> None:
    import itk

    image = itk.image_from_array(STACK)
    image.SetSpacing((5.0, 4.0, 50.0))
    itk.imwrite(image, str(tmp_path / "v.mha"))
    assert read_stack(tmp_path / "v.mha").spacing == (50.0, 4.0, 5.0)
    assert read_pixel_size(tmp_path / "v.mha") is None


def test_unit_words() -> None:
    assert unit_nm("Micron") == unit_nm("µm") == unit_nm("\u03bcm") == unit_nm("\\u00B5m") == 1e3
    assert unit_nm("Å") == unit_nm("\u212b") == unit_nm("angstrom") == 0.1
    assert unit_nm("pixel") is None and unit_nm("") is None and unit_nm(None) is None


# ------------------------------------------------------------------------------------------------- round trip
FORMATS = [f for f in OUTPUT_FORMATS if f != "auto" and (ZARR3 or f != "ome-zarr-0.5")]


@pytest.mark.parametrize("output_format", FORMATS)
@pytest.mark.parametrize("z", [50.0, None], ids=["zyx", "yx-only"])
def test_results_carry_the_input_pixel_size(tmp_path: Path, output_format: str, z: float | None) -> None:
    """A result written for an input with a pixel size (write_result's default: the input's own) reads back with
    the same shape and pixel size, in every output format; NIfTI, with one unit for all axes, stores an unknown
    section spacing as 1 µm."""
    source = tmp_path / "in.tif"
    write_tiff(source, STACK, pixel_size=PixelSize((z, 4.0, 5.0), "test"))
    assert close(read_pixel_size(source), (z, 4.0, 5.0))
    prob = np.random.default_rng(0).random(STACK.shape, dtype=np.float32)
    for kind, data in (("_prob", prob), ("_seg", STACK.astype(np.uint32))):
        path = write_result(tmp_path / "out", source, kind, iter(data), data.shape, data.dtype, output_format)
        result = read_stack(path)
        assert result.array.shape == (3, 12, 10) and result.layout == ("xyz" if output_format == "nii.gz" else "zyx")
        expected_z = 1000.0 if z is None and output_format == "nii.gz" else z
        assert close(result.pixel_size, (expected_z, 4.0, 5.0)), (output_format, kind, result.pixel_size)
        np.testing.assert_array_equal(result.array, data)


@pytest.mark.parametrize("output_format", FORMATS)
def test_2d_result_round_trip(tmp_path: Path, output_format: str) -> None:
    pixel_size = PixelSize((None, 8.0, 8.0), "test")
    section = np.random.default_rng(1).random((12, 10), dtype=np.float32)
    path = write_result(
        tmp_path, "x.tif", "_prob", iter([section]), (12, 10), np.float32, output_format, None, pixel_size
    )
    result = read_stack(path)
    assert result.array.shape == (1, 12, 10) and result.layout in ("yx", "xy")
    assert close(result.pixel_size, (None, 8.0, 8.0))
    np.testing.assert_array_equal(result.array[0], section)
