# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The one table of image formats (:data:`FORMATS`) and what reads and writes through it: whole stacks, stacks a
section at a time, pixel sizes and results.

Adding a format is one module (its reader, section reader, pixel-size reader and writer) and one row here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BundleInputError
from ..outputs import result_path
from .common import Image, OpenFileReader, Spacing, Stack, check_not_empty, check_values
from .hdf5 import HDF5_SUFFIXES, H5Sections, read_h5, read_h5_pixel_size, write_h5_sections
from .itk import ITK_SUFFIXES, read_itk, read_itk_pixel_size
from .mrc import MRC_SUFFIXES, MrcSections, read_mrc, read_mrc_pixel_size, write_mrc_sections
from .nifti import NIFTI_SUFFIXES, NiftiSections, read_nifti, read_nifti_pixel_size, write_nifti_sections
from .omezarr import ZARR_SUFFIXES, ZarrSections, is_zarr, read_zarr, write_zarr_sections, zarr_pixel_size
from .pixel_size import PixelSize
from .tiff import TIFF_SUFFIXES, TiffSections, read_tiff, read_tiff_pixel_size, write_tiff_sections

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFormat:
    """One image format and the functions that read and write it.

    Attributes:
        name: its name in messages.
        suffixes: the file (or folder) name endings that select it, lower case.
        read: ``read(path) -> Image``: the whole image in the file's axis order, spacing, pixel size.
        pixel_size: ``pixel_size(path) -> PixelSize | None`` from the metadata alone.
        sections: ``sections(path) -> OpenFileReader`` for streaming, or None where it is read whole only.
        write: ``write(path, sections, shape, dtype, spacing=, pixel_size=, reference=, **options)``, or None.
        outputs: the ``--output_format`` values that write it, each with the writer's ``options``.
        extension: the extension of its results.
        auto: whether ``--output_format auto`` writes the results of its inputs in it (else TIFF).
        folder: whether an image is a folder (zarr), not a file.
        xyz: whether it stores ``(X, Y, Z)`` (NIfTI), turned into working order ``(Z, Y, X)`` on reading.
    """

    name: str
    suffixes: tuple[str, ...]
    read: Callable[[str], Image]
    pixel_size: Callable[[str], PixelSize | None]
    sections: Callable[[str], OpenFileReader] | None = None
    write: Callable[..., None] | None = None
    outputs: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    extension: str = ""
    auto: bool = False
    folder: bool = False
    xyz: bool = False


TIFF = ImageFormat(
    "TIFF", TIFF_SUFFIXES, read_tiff, read_tiff_pixel_size, TiffSections, write_tiff_sections, {"tif": {}}, "tif"
)
ZARR = ImageFormat(
    "zarr",
    ZARR_SUFFIXES,
    read_zarr,
    zarr_pixel_size,
    ZarrSections,
    write_zarr_sections,
    {"zarr": {"ngff_version": "0.4"}, "ome-zarr-0.5": {"ngff_version": "0.5"}},
    "zarr",
    auto=True,
    folder=True,
)
#: Every format, in the order suffixes are matched (longest suffix first, whatever the row).
FORMATS: tuple[ImageFormat, ...] = (
    TIFF,
    ImageFormat("HDF5", HDF5_SUFFIXES, read_h5, read_h5_pixel_size, H5Sections, write_h5_sections, {"h5": {}}, "h5"),
    ZARR,
    ImageFormat(
        "NIfTI",
        NIFTI_SUFFIXES,
        read_nifti,
        read_nifti_pixel_size,
        NiftiSections,
        write_nifti_sections,
        {"nii.gz": {}},
        "nii.gz",
        auto=True,
        xyz=True,
    ),
    ImageFormat(
        "MRC", MRC_SUFFIXES, read_mrc, read_mrc_pixel_size, MrcSections, write_mrc_sections, {"mrc": {}}, "mrc"
    ),
    ImageFormat("ITK", ITK_SUFFIXES, read_itk, read_itk_pixel_size),
)

IMAGE_SUFFIXES = tuple(s for f in FORMATS for s in f.suffixes)
STREAMED_SUFFIXES = tuple(s for f in FORMATS if f.sections is not None for s in f.suffixes)
#: ``output_format`` values: "auto" writes the results of NIfTI and zarr inputs in their own format (affine kept,
#: volumes beyond memory stay chunked, an OME-Zarr 0.5 input gives 0.5), TIFF for every other input; the others
#: name a format (``zarr`` is OME-Zarr 0.4, ``ome-zarr-0.5`` OME-Zarr 0.5 on zarr v3).
OUTPUT_FORMATS = ("auto", *(name for f in FORMATS for name in f.outputs))
#: Every extension of image results: the formats', and ``nii`` for an uncompressed NIfTI input under "auto".
RESULT_EXTENSIONS = (*dict.fromkeys(f.extension for f in FORMATS if f.outputs), "nii")


def image_suffix(path: str | os.PathLike) -> str:
    """The recognised suffix of ``path`` (``.nii.gz`` and ``.ome.tif`` count as one), or '' if it is no image."""
    name = Path(path).name.lower()
    return next((s for s in sorted(IMAGE_SUFFIXES, key=len, reverse=True) if name.endswith(s)), "")


def image_stem(path: str | os.PathLike) -> str:
    """File name without its image suffix: ``a/b/x.nii.gz -> x``, ``two.ome.tif -> two``."""
    name = Path(path).name
    suffix = image_suffix(path)
    return name[: len(name) - len(suffix)] if suffix else Path(path).stem


def image_format(path: str | os.PathLike) -> ImageFormat | None:
    """The format of ``path`` by its suffix (a zarr folder whatever its name), or None."""
    suffix = image_suffix(path)
    if suffix:
        return next(f for f in FORMATS if suffix in f.suffixes)
    return ZARR if os.path.isdir(path) and is_zarr(path) else None


def _is_zarr_input(path: str | os.PathLike) -> bool:
    return image_format(path) is ZARR


# ------------------------------------------------------------------------------------------------ whole stacks
def _read(path: str, read: Callable[[ImageFormat], object]):
    """``read(format)`` of the image at ``path``, with a clear error for missing, corrupt or unsupported files."""
    found = image_format(path)
    if found is None or not found.folder:
        if not os.path.isfile(path):
            fix = "check the path, or pass --dataset_dir with the right folder"
            raise BundleInputError(path, "file not found", fix)
        if os.path.getsize(path) == 0:
            raise BundleInputError(path, "file is empty (0 bytes)", "re-export or re-copy the image")
    if found is None:
        raise BundleInputError(
            path, "not a recognised image type", f"use one of {', '.join(IMAGE_SUFFIXES)} (TIFF stacks preferred)"
        )
    try:
        return read(found)
    except BundleInputError:
        raise
    except PermissionError as e:
        fix = f"make it readable: chmod a+r {path}"
        raise BundleInputError(path, "cannot be opened (permission denied)", fix) from e
    except Exception as e:  # the libraries raise many types for truncated or corrupt files
        raise BundleInputError(
            path,
            f"cannot be read as an image ({type(e).__name__}: {e})",
            "the file is corrupt or truncated; re-export it",
        ) from e


def read_image(path: str | os.PathLike) -> Image:
    """The whole image at ``path`` in the file's axis order (NIfTI ``(X, Y, Z)``, else ``(Z, Y, X)`` or
    ``(Y, X)``), grey, with its spacing and pixel size; a clear error for missing, corrupt or unsupported files."""
    path = str(path)
    return _read(path, lambda found: found.read(path))


def read_array(path: str | os.PathLike) -> tuple[np.ndarray, Spacing | None]:
    """:func:`read_image`'s array and ``(z, y, x)`` spacing."""
    image = read_image(path)
    return image.array, image.spacing


def read_pixel_size(path: str | os.PathLike) -> PixelSize | None:
    """The pixel size in nanometres of the image at ``path``, from its metadata alone (no pixel data is read),
    with where it came from; None where the file gives none, or only a screen default or a length without unit.

    Sources, by format: TIFF resolution tags with ResolutionUnit (cm, inch), ImageJ ``unit``/``spacing``,
    OME-TIFF PhysicalSizeX/Y/Z; HDF5 ``element_size_um`` (µm) or ``resolution`` (nm); OME-Zarr scale with the
    axes' unit; NIfTI pixdim with xyzt_units; MRC voxel size (Angstrom). ITK formats give none.
    """
    path = str(path)
    return _read(path, lambda found: found.pixel_size(path))


def read_stack(path: str | os.PathLike) -> Stack:
    """Read a 2D image or 3D stack as ``(Z, Y, X)``; NIfTI ``(X, Y, Z)`` (or ``(X, Y)``) is transposed, and
    restored in NIfTI results."""
    path = str(path)
    array, spacing, pixel_size = read_image(path)
    if array.ndim not in (2, 3):
        raise BundleInputError(
            path,
            f"has {array.ndim} dimensions (shape {array.shape}), expected a 2D section or a 3D stack",
            "save a single-channel 2D or 3D image",
        )
    check_not_empty(array.shape, path)
    check_values(array, path)
    if image_format(path).xyz:  # nibabel's (X, Y, Z) / (X, Y)
        layout = "xyz" if array.ndim == 3 else "xy"
        array = np.ascontiguousarray(array.T)
        return Stack(array if array.ndim == 3 else array[None], layout, spacing, path, pixel_size)
    if array.ndim == 2:
        return Stack(array[None], "yx", spacing, path, pixel_size)
    return Stack(array, "zyx", spacing, path, pixel_size)


# --------------------------------------------------------------------------------------- section by section
def open_sections(path: str | os.PathLike) -> OpenFileReader:
    """A stack read section by section, with the sections :func:`read_stack` gives: the format's section reader
    (``TiffSections``, ``H5Sections``, ``ZarrSections``, ``NiftiSections``, ``MrcSections``); any other file goes
    to ``TiffSections``, which names the formats that stream."""
    found = image_format(path)
    return found.sections(str(path)) if found is not None and found.sections else TiffSections(path)


def write_sections(
    path: str,
    sections: Iterator[np.ndarray],
    shape: Sequence[int],
    dtype: np.dtype,
    spacing: Sequence[float] | None = None,
    reference: str | None = None,
    pixel_size: PixelSize | None = None,
    **options: object,
) -> None:
    """Write ``(Y, X)`` sections as they come, atomically, in the format of ``path``'s extension.

    Args:
        path: ``.tif``/``.tiff`` (zlib TIFF), ``.h5`` (dataset named after the file's ``_prob``/``_seg`` suffix,
            one section a chunk), ``.zarr`` (OME-Zarr, ``create_zarr``), ``.nii``/``.nii.gz`` or ``.mrc``.
        sections: the sections in working order, ``(Y, X)`` each.
        shape: the result's working-order shape: ``(Z, Y, X)``, or ``(Y, X)`` for one 2D image.
        dtype: the stored dtype.
        spacing: ``(z, y, x)`` voxel size of unknown unit, kept where there is no ``pixel_size`` and the format has
            a unit-less place for it (OME-Zarr scale, NIfTI affine, HDF5 ``spacing``), or None.
        reference: the input image; a NIfTI input gives a NIfTI result its header (affine, orientation), an
            OME-Zarr 0.5 input a zarr result its version.
        pixel_size: the pixel size in nm, kept where the format has a place for it (TIFF resolution tags, HDF5
            ``element_size_um``, OME-Zarr scale with unit, NIfTI pixdim in µm, MRC voxel size), or None.
        options: the format writer's own (``ngff_version`` for zarr).
    """
    found = image_format(path)
    writer = found.write if found is not None and found.write is not None else write_tiff_sections
    writer(path, sections, shape, dtype, spacing=spacing, pixel_size=pixel_size, reference=reference, **options)


# ------------------------------------------------------------------------------------------------------ results
def _output(image_path: str | os.PathLike, output_format: str) -> tuple[str, Mapping[str, object]]:
    """The extension and writer options of the results of ``image_path`` for ``output_format``."""
    if output_format == "auto":
        found = image_format(image_path)
        if found is not None and found.auto:
            suffix = image_suffix(image_path)
            return (suffix.lstrip(".") if found.xyz else found.extension), {}
        return TIFF.extension, {}
    for found in FORMATS:
        if output_format in found.outputs:
            return found.extension, found.outputs[output_format]
    return output_format, {}  # an extension (callers check the setting against OUTPUT_FORMATS)


def result_extension(image_path: str | os.PathLike, output_format: str = "auto") -> str:
    """The extension of the image results of ``image_path`` for ``output_format`` (:data:`OUTPUT_FORMATS`, checked
    by the callers where they read the setting): "auto" gives ``nii.gz``/``nii`` for NIfTI, ``zarr`` for zarr,
    ``tif`` for every other input; any other value its format's extension."""
    return _output(image_path, output_format)[0]


def _input_pixel_size(image_path: str | os.PathLike) -> PixelSize | None:
    """The input's pixel size for its results; None (logged) where it cannot be read again."""
    try:
        return read_pixel_size(image_path)
    except (BundleInputError, OSError) as e:
        logger.debug("%s: no pixel size for its results (%s)", image_path, e)
        return None


def write_result(
    output_dir: str | os.PathLike,
    image_path: str | os.PathLike,
    kind: str,
    sections: Iterator[np.ndarray],
    shape: Sequence[int],
    dtype: np.dtype,
    output_format: str = "auto",
    spacing: Sequence[float] | None = None,
    pixel_size: PixelSize | None = None,
) -> str:
    """Write one image result of ``image_path`` (``kind`` "_prob" or "_seg") from its ``(Y, X)`` sections as they
    come: the one writer of whole-volume (``scripts.writers``) and streamed (``scripts.streaming``) results.

    The file is ``<output_dir>/<stem><kind>.<ext>`` (``scripts.outputs.result_path``, :func:`result_extension`),
    written atomically by :func:`write_sections`. Its axis order is the format's: ``(Z, Y, X)`` (or ``(Y, X)``)
    for TIFF, HDF5, zarr and MRC, NIfTI's ``(X, Y, Z)`` for NIfTI, so a result in the input's format has the
    input's shape and axis order.

    Args:
        spacing: the input's ``(z, y, x)`` spacing (file units), kept where no pixel size is known.
        pixel_size: the result's pixel size in nm; None: the input's own (:func:`read_pixel_size` of
            ``image_path``), so a result carries its input's pixel size wherever both formats have a place for it.

    Returns:
        the path written.
    """
    extension, options = _output(image_path, output_format)
    if pixel_size is None:
        pixel_size = _input_pixel_size(image_path)
    path = result_path(output_dir, image_stem(image_path), kind, extension)
    write_sections(path, sections, shape, dtype, spacing, str(image_path), pixel_size, **options)
    return path
