# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""MRC (``.mrc``, ``.mrcs``, ``.rec``, ``.map``: FIB-SEM, cryo-ET, IMOD) through mrcfile.

- Read: the data as stored, ``(Z, Y, X)`` (``nz`` sections of ``ny`` rows of ``nx``; a file of one image is
  ``(Y, X)``), whole or section by section through a memory map; big-endian files come out in native byte order.
  Volume stacks (4D) and complex modes are refused.
- Pixel size: the header's voxel size in Angstrom (``cella / mx``). 0 (mrcfile's default header) or exactly
  1 Angstrom (a header whose cell is the grid, as many writers leave it) is no pixel size; the section spacing
  likewise, and none for a single image.
- Write (``--output_format mrc``): float32 probabilities as mode 2. Integer results (the uint32 cells) as mode 6
  (uint16) when every label fits (<= 65535), else as mode 2 float32, which holds integers exactly up to
  16,777,216; a label beyond that is refused, naming formats that hold it. The result's voxel size is its pixel
  size (0 where unknown).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import BundleInputError
from ..outputs import atomic_path
from .common import Image, OpenFileReader, Spacing, check_not_empty, unreadable
from .pixel_size import UNIT_NM, PixelSize

MRC_SUFFIXES = (".mrc", ".mrcs", ".rec", ".map")
#: The largest integer float32 (MRC mode 2) holds exactly: the most cells an MRC result can label.
FLOAT32_EXACT = 2**24
UINT16_MAX = 2**16 - 1
#: Header voxel sizes (Angstrom) that mean "not set": mrcfile's default 0, and 1 where the cell is the grid.
UNSET_VOXEL_SIZES = (0.0, 1.0)

logger = logging.getLogger(__name__)


def _open(path: str, header_only: bool = False, mmap: bool = False):
    """The MRC file at ``path``, opened read-only and permissively (real files bend the standard); the warnings
    mrcfile gives go to the log, and a file whose data cannot be read is refused."""
    import mrcfile

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if mmap:
            mrc = mrcfile.mmap(path, mode="r", permissive=True)
        else:
            mrc = mrcfile.open(path, mode="r", permissive=True, header_only=header_only)
    for warning in caught:
        logger.warning("%s: %s", path, warning.message)
    if not header_only and mrc.data is None:
        mrc.close()
        raise ValueError("its header does not describe readable data")
    return mrc


def _voxel_size(mrc) -> tuple[float, float, float]:
    """The header's ``(z, y, x)`` voxel size in Angstrom; 0 (unset) where it is not finite: mrcfile divides the
    cell size by the sampling, which several writers leave 0 (0 / 0 is NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the 0 / 0 above
        size = mrc.voxel_size
    values = (float(size.z), float(size.y), float(size.x))
    return tuple(v if math.isfinite(v) else 0.0 for v in values)  # type: ignore[return-value]


def mrc_spacing(mrc) -> Spacing | None:
    """``(z, y, x)`` voxel size in Angstrom (``z`` 1.0 where unset), or None where x or y is unset (0)."""
    z, y, x = _voxel_size(mrc)
    return (z if z > 0 else 1.0, y, x) if y > 0 and x > 0 else None


def mrc_pixel_size(mrc) -> PixelSize | None:
    """The pixel size in nm of an open MRC file (see the module docstring), or None."""
    z, y, x = _voxel_size(mrc)
    if y in UNSET_VOXEL_SIZES or x in UNSET_VOXEL_SIZES or y < 0 or x < 0:
        return None
    sections = int(mrc.header.nz) > 1
    known_z = z if sections and z > 0 and z not in UNSET_VOXEL_SIZES else None
    to_nm = UNIT_NM["å"]
    return PixelSize((None if known_z is None else known_z * to_nm, y * to_nm, x * to_nm), "MRC voxel size (Angstrom)")


def _check_layout(path: str, mrc) -> None:
    header = mrc.header
    order = (int(header.mapc), int(header.mapr), int(header.maps))
    if order != (1, 2, 3):
        logger.warning("%s: axes stored in order %s (mapc, mapr, maps), read as stored", path, order)


def _native(array: np.ndarray) -> np.ndarray:
    """``array`` in native byte order (MRC files may be big-endian; torch takes native arrays only)."""
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def read_mrc(path: str) -> Image:
    """The whole MRC image of ``path`` as ``(Z, Y, X)`` (``(Y, X)`` for one image), spacing and pixel size."""
    mrc = _open(path)
    try:
        _check_layout(path, mrc)
        return Image(_native(np.asarray(mrc.data)), mrc_spacing(mrc), mrc_pixel_size(mrc))
    finally:
        mrc.close()


def read_mrc_pixel_size(path: str) -> PixelSize | None:
    """The pixel size of the MRC file at ``path`` (its header only)."""
    mrc = _open(path, header_only=True)
    try:
        return mrc_pixel_size(mrc)
    finally:
        mrc.close()


class MrcSections(OpenFileReader):
    """An MRC image read a section (or a range of sections) at a time through a memory map; the same interface
    as ``TiffSections``.

    Attributes:
        path: the file.
        shape: ``(Z, Y, X)``, or ``(Y, X)`` for a single image.
        dtype: the sections' dtype (native byte order).
        spacing: ``(z, y, x)`` voxel size in Angstrom, or None.
        pixel_size: the pixel size in nm (:func:`mrc_pixel_size`), or None.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        try:
            mrc = _open(self.path, mmap=True)
        except Exception as e:  # mrcfile raises ValueError and others for truncated or foreign files
            raise unreadable(self.path, "MRC", e) from e
        try:
            _check_layout(self.path, mrc)
            self.shape, self.dtype = tuple(int(n) for n in mrc.data.shape), mrc.data.dtype.newbyteorder("=")
            self.spacing, self.pixel_size = mrc_spacing(mrc), mrc_pixel_size(mrc)
        finally:
            mrc.close()
        if len(self.shape) not in (2, 3):
            raise BundleInputError(
                self.path, f"has shape {self.shape}, expected a 2D image or a 3D stack", "save one volume per file"
            )
        check_not_empty(self.shape, self.path)

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._handle is None:
            self._handle = _open(self.path, mmap=True)
        data = self._handle.data
        return _native(np.array(data[start:stop] if len(self.shape) == 3 else data[None]))


# ---------------------------------------------------------------------------------------------------- writing
def _mode(dtype: np.dtype) -> int | None:
    """The MRC mode that stores ``dtype`` exactly, or None for integers that need :func:`write_mrc_sections`'s
    float32-then-uint16 rule."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return 2
    if dtype == bool or dtype in (np.uint8, np.uint16):
        return 6
    return {np.dtype(np.int8): 0, np.dtype(np.int16): 1}.get(dtype)


class _Stats:
    """Running minimum, maximum, mean and RMS deviation of the sections written (the header's statistics)."""

    def __init__(self) -> None:
        self.low, self.high, self.total, self.squares, self.count = np.inf, -np.inf, 0.0, 0.0, 0

    def add(self, section: np.ndarray) -> None:
        values = section.astype(np.float64, copy=False)
        self.low, self.high = min(self.low, float(values.min())), max(self.high, float(values.max()))
        self.total, self.squares = self.total + float(values.sum()), self.squares + float((values**2).sum())
        self.count += values.size

    def write(self, header) -> None:
        mean = self.total / max(self.count, 1)
        header.dmin, header.dmax, header.dmean = self.low, self.high, mean
        header.rms = float(np.sqrt(max(self.squares / max(self.count, 1) - mean**2, 0.0)))


def _new(path: str, shape: tuple[int, ...], mode: int, pixel_size: PixelSize | None):
    """A new memory-mapped MRC file of ``shape`` and ``mode`` with ``pixel_size`` as its voxel size."""
    import mrcfile

    mrc = mrcfile.new_mmap(path, shape=shape, mrc_mode=mode, overwrite=True)
    if pixel_size is not None:
        z, y, x = pixel_size.nm
        per_angstrom = UNIT_NM["å"]
        mrc.voxel_size = (x / per_angstrom, y / per_angstrom, 0.0 if z is None else z / per_angstrom)
    return mrc


def write_mrc_sections(
    path: str,
    sections: Iterator[np.ndarray],
    shape: Sequence[int],
    dtype: np.dtype,
    spacing: Sequence[float] | None = None,
    pixel_size: PixelSize | None = None,
    reference: str | None = None,
) -> None:
    """Write ``(Y, X)`` sections as they come into an MRC file of ``shape`` (``(Z, Y, X)`` or ``(Y, X)``),
    atomically, in the mode of the module docstring's rule, with ``pixel_size`` as the voxel size (Angstrom).
    ``spacing`` (unit unknown) is not written, since MRC's unit is Angstrom; ``reference`` is unused."""
    shape = tuple(int(s) for s in shape)
    mode = _mode(dtype)
    with atomic_path(path) as tmp:
        stats = _Stats()
        with _new(tmp, shape, 2 if mode is None else mode, pixel_size) as mrc:
            data = mrc.data if len(shape) == 3 else mrc.data[None]
            for z, section in enumerate(sections):
                section = np.asarray(section)
                stats.add(section)
                if mode is None and max(abs(stats.low), abs(stats.high)) > FLOAT32_EXACT:
                    raise BundleInputError(
                        path,
                        f"has labels up to {stats.high:.0f}, more than MRC's float32 holds exactly ({FLOAT32_EXACT})",
                        "use --output_format tif, h5 or zarr for this many cells",
                    )
                data[z] = section
            stats.write(mrc.header)
        if mode is None and stats.low >= 0 and stats.high <= UINT16_MAX:
            _to_uint16(tmp, shape, pixel_size, stats)


def _to_uint16(path: str, shape: tuple[int, ...], pixel_size: PixelSize | None, stats: _Stats) -> None:
    """Rewrite the float32 MRC file at ``path`` as mode 6 (uint16), a section at a time."""
    import mrcfile

    with atomic_path(path) as tmp, mrcfile.mmap(path, mode="r") as source, _new(tmp, shape, 6, pixel_size) as mrc:
        if len(shape) == 3:
            for z in range(shape[0]):
                mrc.data[z] = source.data[z].astype(np.uint16)
        else:
            mrc.data[...] = source.data.astype(np.uint16)
        stats.write(mrc.header)
