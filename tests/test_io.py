# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest
import tifffile
from scripts.errors import BundleInputError
from scripts.io import H5Sections, TiffSections, image_stem, read_stack, to_file_order, write_tiff


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
        (lambda p: tifffile.imwrite(p, np.zeros((2, 2, 4, 4), np.uint8), photometric="minisblack"), "several stacks"),
    ],
    ids=["zero-byte", "corrupt", "nan", "4d"],
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


# ------------------------------------------------------------------ TIFF read as the file says (issue 16)
def _sections(n: int = 3, shape: tuple[int, int] = (24, 20), dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 200, (n, *shape)).astype(dtype)


def _same_sections_streamed(path: Path, expected: np.ndarray) -> None:
    """``read_stack`` and the streaming reader give ``expected`` (``(Z, Y, X)``), section by section too."""
    whole = read_stack(path).array
    np.testing.assert_array_equal(whole, expected)
    with TiffSections(path) as stack:
        assert len(stack) == len(expected)
        np.testing.assert_array_equal(stack.read(0, len(stack)), expected)
        np.testing.assert_array_equal(np.stack(list(stack)), expected)
        assert stack.dtype == expected.dtype


def test_pages_appended_one_by_one_are_one_stack(tmp_path: Path) -> None:
    stack = _sections(4)
    for section in stack:
        tifffile.imwrite(tmp_path / "pages.tif", section, append=True)
    with tifffile.TiffFile(tmp_path / "pages.tif") as tif:
        assert len(tif.series) == 4  # tifffile sees four images; Fiji and the bundle one stack
    _same_sections_streamed(tmp_path / "pages.tif", stack)
    loaded = read_stack(tmp_path / "pages.tif")
    assert loaded.layout == "zyx" and loaded.array.shape == (4, 24, 20)


def test_stacks_appended_to_one_file_are_one_stack(tmp_path: Path) -> None:
    first, second = _sections(3, seed=1), _sections(2, seed=2)
    write_tiff(tmp_path / "two.tif", first)
    tifffile.imwrite(tmp_path / "two.tif", second, append=True, photometric="minisblack")
    _same_sections_streamed(tmp_path / "two.tif", np.concatenate([first, second]))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_min_is_white_is_inverted_back(tmp_path: Path, dtype: type) -> None:
    grey = _sections(2, dtype=dtype)
    if np.issubdtype(dtype, np.unsignedinteger):
        stored, expected = np.iinfo(dtype).max - grey, grey
    else:
        stored, expected = grey, (~grey if np.issubdtype(dtype, np.integer) else -grey)
    tifffile.imwrite(tmp_path / "white.tif", stored.astype(dtype), photometric="miniswhite")
    _same_sections_streamed(tmp_path / "white.tif", expected.astype(dtype))


@pytest.mark.parametrize("planar", [True, False], ids=["planar-separate", "contiguous"])
def test_rgb_is_one_grey_section_not_three(tmp_path: Path, planar: bool) -> None:
    """Colour that a colour writer made: interleaved RGB, and planar RGB without tifffile's shaped description
    (``metadata=None``: as libtiff-based programs write it)."""
    rgb = np.random.default_rng(4).integers(0, 255, (24, 20, 3)).astype(np.uint8)
    data = np.moveaxis(rgb, -1, 0) if planar else rgb
    planarconfig = "separate" if planar else "contig"
    tifffile.imwrite(tmp_path / "rgb.tif", data, photometric="rgb", planarconfig=planarconfig, metadata=None)
    expected = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.float32)
    loaded = read_stack(tmp_path / "rgb.tif")
    assert loaded.array.shape == (1, 24, 20) and loaded.layout == "yx" and loaded.array.dtype == np.float32
    np.testing.assert_allclose(loaded.array[0], expected, atol=1e-3)
    _same_sections_streamed(tmp_path / "rgb.tif", loaded.array)


def test_rgb_stack_and_grey_stored_as_rgb(tmp_path: Path) -> None:
    grey = _sections(3)
    tifffile.imwrite(tmp_path / "rgb.tif", np.repeat(grey[..., None], 3, axis=-1), photometric="rgb")
    loaded = read_stack(tmp_path / "rgb.tif")
    assert loaded.array.shape == (3, 24, 20)
    np.testing.assert_allclose(loaded.array, grey, atol=1e-4)
    _same_sections_streamed(tmp_path / "rgb.tif", loaded.array)


def test_palette_tiff_is_read_through_its_colour_map(tmp_path: Path) -> None:
    indices = _sections(1)[0]
    colormap = np.zeros((3, 256), np.uint16)
    colormap[:] = (255 - np.arange(256)) * 257  # an inverted grey ramp
    tifffile.imwrite(tmp_path / "pal.tif", indices, photometric="palette", colormap=colormap)
    loaded = read_stack(tmp_path / "pal.tif").array
    np.testing.assert_allclose(loaded[0], (255 - indices.astype(np.float32)) * 257, rtol=1e-5)


def test_grey_with_alpha_keeps_its_grey(tmp_path: Path) -> None:
    grey = _sections(1)[0]
    data = np.stack([grey, np.full_like(grey, 255)], axis=-1)
    tifffile.imwrite(tmp_path / "ga.tif", data, photometric="minisblack", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(read_stack(tmp_path / "ga.tif").array, grey[None])


def test_ome_tiff_channels_are_not_sections(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "two.ome.tif", _sections(2), metadata={"axes": "CYX"})
    with pytest.raises(BundleInputError, match="has 2 channels") as info:
        read_stack(tmp_path / "two.ome.tif")
    assert "Split Channels" in info.value.fix
    with pytest.raises(BundleInputError, match="has 2 channels"):
        TiffSections(tmp_path / "two.ome.tif")
    tifffile.imwrite(tmp_path / "zc.ome.tif", np.stack([_sections(4)] * 2, axis=1), metadata={"axes": "ZCYX"})
    with pytest.raises(BundleInputError, match="has 2 channels"):
        read_stack(tmp_path / "zc.ome.tif")


def test_ome_tiff_stack_and_single_channel(tmp_path: Path) -> None:
    stack = _sections(4)
    tifffile.imwrite(tmp_path / "z.ome.tif", stack, metadata={"axes": "ZYX"})
    _same_sections_streamed(tmp_path / "z.ome.tif", stack)
    tifffile.imwrite(tmp_path / "c1.ome.tif", stack[:, None], metadata={"axes": "ZCYX"})
    _same_sections_streamed(tmp_path / "c1.ome.tif", stack)
    assert image_stem(tmp_path / "two.ome.tif") == "two" and image_stem("x.OME.TIFF") == "x"


def test_imagej_hyperstack_of_several_stacks_is_refused(tmp_path: Path) -> None:
    data = np.stack([_sections(3)] * 2)
    tifffile.imwrite(tmp_path / "tz.tif", data, imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(BundleInputError, match="several stacks"):
        read_stack(tmp_path / "tz.tif")
    tifffile.imwrite(tmp_path / "t.tif", data[:, 0], imagej=True, metadata={"axes": "TYX"})
    _same_sections_streamed(tmp_path / "t.tif", data[:, 0])  # time points of one plane are sections


def test_series_of_different_sizes_are_refused(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "mixed.tif", _sections(1)[0], append=True)
    tifffile.imwrite(tmp_path / "mixed.tif", _sections(1, shape=(12, 20))[0], append=True)
    with pytest.raises(BundleInputError, match="2 image series of different sizes"):
        read_stack(tmp_path / "mixed.tif")


@pytest.mark.parametrize("compression", ["lzw", "jpeg", "zstd", "packbits", "deflate"])
def test_compressed_tiffs_read(tmp_path: Path, compression: str) -> None:
    stack = _sections(3, shape=(32, 32))
    tifffile.imwrite(tmp_path / "c.tif", stack, compression=compression, photometric="minisblack")
    if compression == "jpeg":  # lossy
        assert np.abs(read_stack(tmp_path / "c.tif").array.astype(int) - stack).mean() < 40
    else:
        _same_sections_streamed(tmp_path / "c.tif", stack)


def test_colour_png_is_grey(tmp_path: Path) -> None:
    rgb = np.random.default_rng(5).integers(0, 255, (16, 12, 3)).astype(np.uint8)
    itk.imwrite(itk.image_view_from_array(rgb, is_vector=True), str(tmp_path / "c.png"))
    loaded = read_stack(tmp_path / "c.png")
    assert loaded.array.shape == (1, 16, 12) and loaded.layout == "yx"
    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(loaded.array[0], expected, atol=1e-3)


def test_hdf5_dataset_without_sections(tmp_path: Path) -> None:
    import h5py

    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_dataset("volume", shape=(0, 16, 16), dtype=np.uint8)
    with pytest.raises(BundleInputError, match=r"holds no pixels \(shape \(0, 16, 16\)\)") as info:
        read_stack(tmp_path / "empty.h5")
    assert "empty.h5" in info.value.what
    with pytest.raises(BundleInputError, match="holds no pixels"):
        H5Sections(tmp_path / "empty.h5")


# ----------------------------------------------------------------------------- stacks as their writer meant them
@pytest.mark.filterwarnings("ignore:.*stored as RGB with separate component planes:DeprecationWarning")
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("sections", [3, 4])
def test_tifffile_default_stack_of_three_or_four_is_sections(
    tmp_path: Path, sections: int, dtype: type, caplog: pytest.LogCaptureFixture
) -> None:
    """``tifffile.imwrite(path, stack)`` stores a (3|4, Y, X) array as one planar RGB page (tifffile's default);
    it reads back as the 3 or 4 sections ``tifffile.imread`` gives, whole and streamed, and without a colour
    warning."""
    stack = _sections(sections, dtype=dtype)
    tifffile.imwrite(tmp_path / "s.tif", stack)
    with tifffile.TiffFile(tmp_path / "s.tif") as tif:  # what makes it look like colour
        assert tif.pages[0].photometric.name == "RGB" and len(tif.pages) == 1
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "s.tif"), stack)
    with caplog.at_level("WARNING"):
        loaded = read_stack(tmp_path / "s.tif")
    assert loaded.layout == "zyx" and loaded.array.dtype == dtype and "colour" not in caplog.text
    _same_sections_streamed(tmp_path / "s.tif", stack)


def test_planar_rgb_whose_writer_named_the_axis_is_sections(tmp_path: Path) -> None:
    """``metadata={"axes": "ZYX"}`` with tifffile's planar-RGB default: the writer said Z."""
    stack = _sections(3, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", stack, photometric="rgb", planarconfig="separate", metadata={"axes": "ZYX"})
    loaded = read_stack(tmp_path / "z.tif")
    assert loaded.array.dtype == np.uint16
    _same_sections_streamed(tmp_path / "z.tif", stack)


def test_jpeg_ycbcr_colour_is_grey_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rgb = np.repeat(_sections(1, shape=(32, 32))[0][..., None], 3, axis=-1)
    tifffile.imwrite(tmp_path / "j.tif", rgb, photometric="rgb", compression="jpeg")
    with tifffile.TiffFile(tmp_path / "j.tif") as tif:
        assert tif.pages[0].photometric.name == "YCBCR"
    with caplog.at_level("WARNING"):
        loaded = read_stack(tmp_path / "j.tif")
    assert loaded.array.shape == (1, 32, 32) and loaded.array.dtype == np.float32 and "read as grey" in caplog.text
    assert np.abs(loaded.array[0] - rgb[..., 0]).mean() < 10  # lossy


@pytest.mark.filterwarnings("ignore:.*stored as RGB with separate component planes:DeprecationWarning")
def test_planar_rgb_stack_of_several_pages_stays_colour(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A (Z, 3, Y, X) array is Z planar RGB pages for tifffile too: Z grey sections, with the colour warning."""
    rgb = _sections(6).reshape(2, 3, 24, 20)
    tifffile.imwrite(tmp_path / "c.tif", rgb)
    with caplog.at_level("WARNING"):
        loaded = read_stack(tmp_path / "c.tif")
    expected = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    assert loaded.array.shape == (2, 24, 20) and "read as grey" in caplog.text
    np.testing.assert_allclose(loaded.array, expected, atol=1e-3)
