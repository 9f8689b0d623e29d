# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""NIfTI through nibabel: nibabel's ``(X, Y, Z)`` order, turned into sections along the last axis (by the
registry's reader) and back on output; a NIfTI result of a NIfTI input keeps the input's header (affine,
orientation, units), as MONAI's ``SaveImage`` does.

Pixel size: ``pixdim`` in the unit ``xyzt_units`` names (metre, mm, micron); an unknown unit is no pixel size.
Results of other inputs store theirs in micrometres (``xyzt_units`` micron); NIfTI has one unit and a spacing for
each axis, so a stack whose section spacing is unknown is stored with 1 µm between sections.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import BundleInputError
from ..outputs import atomic_path
from .common import Image, OpenFileReader, Spacing, check_not_empty, unreadable
from .pixel_size import UNIT_NM, PixelSize, make_pixel_size

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: nibabel's names of NIfTI's spatial units, in nm.
NIFTI_UNIT_NM = {"meter": UNIT_NM["m"], "mm": UNIT_NM["mm"], "micron": UNIT_NM["µm"]}


def nifti_spacing(img) -> Spacing | None:
    """``(z, y, x)`` voxel size of a nibabel image in its own unit (``z`` 1.0 for a 2D image)."""
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if len(zooms) == 2:
        zooms = (*zooms, 1.0)
    return tuple(reversed(zooms)) if len(zooms) == 3 else None  # type: ignore[return-value]


def nifti_pixel_size(img) -> PixelSize | None:
    """The pixel size of a nibabel image from ``pixdim`` and ``xyzt_units`` (None for an unknown unit)."""
    unit = img.header.get_xyzt_units()[0]
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    if len(zooms) < 2:
        return None
    zyx = list(reversed(zooms)) if len(zooms) == 3 else [None, zooms[1], zooms[0]]
    return make_pixel_size(zyx, NIFTI_UNIT_NM.get(unit), f"NIfTI pixdim ({unit})")


def read_nifti(path: str) -> Image:
    """The whole NIfTI image of ``path`` in nibabel's ``(X, Y, Z)`` order, its spacing and pixel size."""
    import nibabel as nib

    img = nib.load(path)
    return Image(np.asarray(img.dataobj), nifti_spacing(img), nifti_pixel_size(img))


def read_nifti_pixel_size(path: str) -> PixelSize | None:
    """The pixel size of the NIfTI file at ``path`` (its header only)."""
    import nibabel as nib

    return nifti_pixel_size(nib.load(path))


class NiftiSections(OpenFileReader):
    """A NIfTI image read a section (or a range of sections) at a time; the same interface as ``TiffSections``.
    NIfTI stores ``(X, Y, Z)`` in Fortran order, so a section along Z is one contiguous run of bytes; the file
    (gzip-compressed or not) stays open between reads, so reading sections in order reads it once.

    Attributes:
        path: the file.
        shape: ``(Z, Y, X)``, or ``(Y, X)`` for a 2D image (the working order of ``read_stack``).
        dtype: the sections' dtype (after the file's intensity scaling, as nibabel applies it).
        spacing: ``(z, y, x)`` voxel size.
        pixel_size: the pixel size in nm (:func:`nifti_pixel_size`), or None.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import nibabel as nib

        self.path = str(path)
        try:
            img = nib.load(self.path)
        except Exception as e:  # nibabel raises many types for truncated or foreign files
            raise unreadable(self.path, "NIfTI", e) from e
        if len(img.shape) not in (2, 3):
            raise BundleInputError(
                self.path, f"has shape {img.shape}, expected a 2D section or a 3D stack", "save one 3D volume"
            )
        self.shape = tuple(int(n) for n in reversed(img.shape))
        self.dtype, self.spacing, self.pixel_size = img.get_data_dtype(), nifti_spacing(img), nifti_pixel_size(img)
        check_not_empty(self.shape, self.path)

    def _read(self, start: int, stop: int) -> np.ndarray:
        """NIfTI's sections lie along its last axis: transposed to ``(Z, Y, X)``."""
        import nibabel as nib

        if self._handle is None:
            self._handle = _OpenImage(nib.load(self.path, keep_file_open=True))
        data = self._handle.image.dataobj
        sections = np.asarray(data[..., start:stop]).T if len(self.shape) == 3 else np.asarray(data).T[None]
        return np.ascontiguousarray(sections)


class _OpenImage:
    """A nibabel image whose file ``keep_file_open`` holds open; closing drops it, which closes the file."""

    def __init__(self, image) -> None:
        self.image = image

    def close(self) -> None:
        self.image = None


def nifti_header(
    shape: Sequence[int],
    dtype: np.dtype,
    spacing: Sequence[float] | None,
    reference: str | None,
    pixel_size: PixelSize | None = None,
):
    """The header of a NIfTI result of working-order ``shape`` ``(Z, Y, X)`` or ``(Y, X)``: ``reference``'s
    (affine, orientation codes, units; as MONAI's ``SaveImage`` keeps them) if it is a NIfTI file, else a
    NIfTI-1 header whose affine scales by ``pixel_size`` in µm (units micron), else by ``spacing`` ``(z, y, x)``
    (units unknown); intensity scaling off."""
    import nibabel as nib

    file_shape = tuple(int(n) for n in reversed(tuple(shape)))
    if reference is not None and str(reference).lower().endswith(NIFTI_SUFFIXES):
        header = nib.load(str(reference)).header.copy()
    else:
        if pixel_size is not None:
            zyx = [1.0 if n is None else n / UNIT_NM["µm"] for n in pixel_size.nm]
        else:
            zyx = list(spacing) if spacing else None
        zooms = list(reversed(zyx))[: len(file_shape)] if zyx else [1.0] * len(file_shape)
        affine = np.diag([*zooms, *[1.0] * (3 - len(zooms)), 1.0])
        header = nib.Nifti1Image(np.zeros((1,) * len(file_shape), np.uint8), affine).header
        header.set_xyzt_units("micron" if pixel_size is not None else "unknown")
    header.set_data_shape(file_shape)
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)  # the input's intensity scaling does not apply to results
    return header


def write_nifti_sections(
    path: str,
    sections: Iterator[np.ndarray],
    shape: Sequence[int],
    dtype: np.dtype,
    spacing: Sequence[float] | None = None,
    pixel_size: PixelSize | None = None,
    reference: str | None = None,
) -> None:
    """Write ``(Y, X)`` sections as they come into a NIfTI file (gzip-compressed for ``.nii.gz``), atomically,
    with the header of :func:`nifti_header`. NIfTI's Fortran-order ``(X, Y, Z)`` puts each section's C-order
    ``(Y, X)`` bytes one after the other, so no more than one section is held."""
    header = nifti_header(shape, dtype, spacing, reference, pixel_size)
    stored = header.get_data_dtype()  # with the header's byte order
    with atomic_path(path) as tmp, (
        gzip.open(tmp, "wb", compresslevel=6) if str(path).endswith(".gz") else open(tmp, "wb")
    ) as f:
        header.write_to(f)
        f.write(b"\0" * (int(header.get_data_offset()) - f.tell()))
        for section in sections:
            f.write(np.ascontiguousarray(section, dtype=stored).tobytes())
