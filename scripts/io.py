# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Reading EM stacks and writing results without leaving partial files behind.

Arrays are returned in the order the file's own library gives: ``(Z, Y, X)`` for TIFF stacks and the ITK
formats (numpy order), ``(X, Y, Z)`` for NIfTI through nibabel. ``read_stack`` also returns the stack in the
bundle's working order ``(Z, Y, X)`` (sections first) plus the permutation that restores the file's order,
so outputs keep the input's shape and axis order.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleInputError

TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr", ".png", ".jpg", ".jpeg", ".bmp", ".hdr", ".vtk")
HDF5_SUFFIXES = (".h5", ".hdf5")
IMAGE_SUFFIXES = TIFF_SUFFIXES + NIFTI_SUFFIXES + HDF5_SUFFIXES + ITK_SUFFIXES


def image_suffix(path: str | os.PathLike) -> str:
    """The recognised suffix of ``path`` (``.nii.gz`` counts as one), or '' if it is not an image file."""
    name = Path(path).name.lower()
    return next((s for s in sorted(IMAGE_SUFFIXES, key=len, reverse=True) if name.endswith(s)), "")


def image_stem(path: str | os.PathLike) -> str:
    """File name without its image suffix: ``a/b/x.nii.gz -> x``."""
    name = Path(path).name
    suffix = image_suffix(path)
    return name[: len(name) - len(suffix)] if suffix else Path(path).stem


@dataclass
class Stack:
    """An image in working order.

    Attributes:
        array: ``(Z, Y, X)`` array; a single 2D image has ``Z == 1``.
        layout: the file's own axis order: "zyx" (TIFF/ITK stacks), "yx" (2D images) or "xyz" (NIfTI).
        spacing: ``(z, y, x)`` voxel size in the file's units, or None if the file does not say.
        path: where it was read from.
    """

    array: np.ndarray
    layout: str
    spacing: tuple[float, float, float] | None
    path: str


class OpenFileReader:
    """Base of the section readers: ``_handle`` is the file a reader keeps open between reads; :meth:`close` or a
    ``with`` block closes it (a later read opens it again)."""

    _handle = None

    def close(self) -> None:
        """Close the file kept open for reading."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def to_file_order(array: np.ndarray, layout: str) -> np.ndarray:
    """Turn a working-order ``(Z, Y, X)`` array back into the file's shape and axis order ``layout``."""
    if layout == "zyx":
        return array
    if layout == "yx":
        return array[0]
    if layout == "xyz":
        return np.ascontiguousarray(array.transpose(2, 1, 0))
    raise ValueError(f"unknown layout {layout!r}, expected 'zyx', 'yx' or 'xyz'")


class _WarningRecorder(logging.Handler):
    """Collects a library's warnings (tifffile only logs truncated pages and returns what it could read)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _fail_on_warnings(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    recorder = _WarningRecorder()
    logger.addHandler(recorder)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(recorder)
        logger.propagate = propagate
    if recorder.messages:
        raise ValueError("; ".join(m.strip().splitlines()[0] for m in recorder.messages[:2]))


def tiff_spacing(tif) -> tuple[float, float, float] | None:
    """``(z, y, x)`` voxel size of an open ``tifffile.TiffFile`` from its resolution tags (None if unset)."""
    tags = tif.pages[0].tags
    if "XResolution" in tags and "YResolution" in tags:
        xr, yr = tags["XResolution"].value, tags["YResolution"].value
        if xr[0] and yr[0] and (xr != (1, 1) or yr != (1, 1)):
            z = float(tif.imagej_metadata.get("spacing", 1.0)) if tif.imagej_metadata else 1.0
            return (z, yr[1] / yr[0], xr[1] / xr[0])
    return None


def _read_tiff(path: str) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    import tifffile

    with _fail_on_warnings("tifffile"), tifffile.TiffFile(path) as tif:
        return tif.asarray(), tiff_spacing(tif)


def _read_nifti(path: str) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    import nibabel as nib

    img = nib.load(path)
    array = np.asarray(img.dataobj)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    spacing = tuple(reversed(zooms)) if len(zooms) == 3 else None
    return array, spacing  # type: ignore[return-value]


def _read_itk(path: str) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    import itk

    img = itk.imread(path)
    array = np.asarray(itk.array_view_from_image(img)).copy()
    sp = tuple(float(s) for s in reversed(tuple(img.GetSpacing())))
    spacing = sp if len(sp) == 3 else None
    return array, spacing  # type: ignore[return-value]


def _read_h5(path: str) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    from .hdf5 import read_h5

    return read_h5(path)


def read_array(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """Read an image file as its library returns it, with a clear error for missing or corrupt files."""
    path = str(path)
    suffix = image_suffix(path)
    if not os.path.isfile(path):
        raise BundleInputError(path, "file not found", "check the path, or pass --dataset_dir with the right folder")
    if os.path.getsize(path) == 0:
        raise BundleInputError(path, "file is empty (0 bytes)", "re-export or re-copy the image")
    if not suffix:
        raise BundleInputError(
            path, "not a recognised image type", f"use one of {', '.join(IMAGE_SUFFIXES)} (TIFF stacks preferred)"
        )
    readers = {**dict.fromkeys(TIFF_SUFFIXES, _read_tiff), **dict.fromkeys(NIFTI_SUFFIXES, _read_nifti)}
    readers.update(dict.fromkeys(HDF5_SUFFIXES, _read_h5))
    try:
        array, spacing = readers.get(suffix, _read_itk)(path)
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
    return array, spacing


SEGMENT_IN_2D = "give a 3D stack, or segment it with a 2D model (configs/inference.json without the 3D override)"


def require_volume(path: str, shape: tuple[int, ...], fix: str = SEGMENT_IN_2D) -> None:
    """A 3D network needs a stack: reject a single 2D section (``shape`` ``(Y, X)`` or ``(1, Y, X)``), which it would
    otherwise train on, score or segment as a volume of copies of that section."""
    if len(shape) < 3 or shape[0] < 2:
        problem = f"is a single 2D section (shape {tuple(shape[-2:])}), but the network is 3D (spatial_dims 3)"
        raise BundleInputError(path, problem, fix)


def check_values(array: np.ndarray, path: str) -> None:
    """Reject dtypes that are not numbers and floating images with NaN or Inf, naming ``path``."""
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating) or array.dtype == bool):
        raise BundleInputError(path, f"has unsupported dtype {array.dtype}", "save it as uint8, uint16 or float32")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise BundleInputError(
            path, "contains NaN or Inf values", "replace them (e.g. with the mean intensity) before segmenting"
        )
    if array.dtype.itemsize > 4 and np.issubdtype(array.dtype, np.floating) and array.size:
        peak = float(np.abs(array).max())
        if peak > float(np.finfo(np.float32).max):
            problem = f"has values up to {peak:.3g}, beyond float32 (the network's input type)"
            raise BundleInputError(path, problem, "rescale it, e.g. to 0..1 or uint16")


def read_stack(path: str | os.PathLike) -> Stack:
    """Read a 2D image or 3D stack as ``(Z, Y, X)``; NIfTI ``(X, Y, Z)`` is transposed and restored on output."""
    array, spacing = read_array(path)
    path = str(path)
    if (
        array.ndim == 3
        and array.shape[-1] in (3, 4)
        and image_suffix(path) not in NIFTI_SUFFIXES
        and array.shape[0] > 4
    ):
        raise BundleInputError(
            path,
            f"looks like a colour (RGB/RGBA) image of shape {array.shape}",
            "convert it to single-channel grayscale",
        )
    if array.ndim not in (2, 3):
        raise BundleInputError(
            path,
            f"has {array.ndim} dimensions (shape {array.shape}), expected a 2D section or a 3D stack",
            "save a single-channel 2D or 3D image",
        )
    check_values(array, path)
    if image_suffix(path) in NIFTI_SUFFIXES and array.ndim == 3:
        return Stack(np.ascontiguousarray(array.transpose(2, 1, 0)), "xyz", spacing, path)
    if array.ndim == 2:
        return Stack(array[None], "yx", spacing, path)
    return Stack(array, "zyx", spacing, path)


_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


def make_output_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) if missing; a ``BundleInputError`` naming it if that fails."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BundleInputError(
            folder, f"output folder cannot be created ({e.strerror})", "choose a writable --output_dir"
        ) from e
    return folder


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary name beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary file is removed on any failure. A full disk, a quota, a read-only file system or a permission
    error while writing becomes a ``BundleInputError`` that names ``path``.
    """
    path = Path(path)
    make_output_folder(path.parent)
    if not os.access(path.parent, os.W_OK):
        raise BundleInputError(path.parent, "output folder is not writable", "choose a writable --output_dir")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as e:
        problem = f"output folder is not writable ({e.strerror})"
        raise BundleInputError(path.parent, problem, "choose a writable --output_dir") from e
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno in _DISK_ERRORS:
            fix = f"free space in {path.parent} or choose another --output_dir"
            raise BundleInputError(path, f"could not be written ({os.strerror(e.errno)})", fix) from e
        raise


def write_tiff(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as a (multi-page) zlib-compressed TIFF, atomically."""
    import tifffile

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, array, compression="zlib", photometric="minisblack")
