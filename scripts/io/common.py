# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""What every format module shares: the :class:`Stack` a reader returns, the base of the section readers, and the
checks of shapes and values that name the file and the fix."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import BundleInputError
from .pixel_size import PixelSize

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as most viewers and PIL's "L" mode turn RGB into grey
#: A ``(z, y, x)`` voxel size in the file's own units (None where the file says nothing).
Spacing = tuple[float, float, float]


class Image(NamedTuple):
    """What a format's whole-image reader returns: the array in the file's own axis order (NIfTI ``(X, Y, Z)``,
    every other format ``(Z, Y, X)`` or ``(Y, X)``), its spacing in the file's units and its pixel size."""

    array: np.ndarray
    spacing: Spacing | None
    pixel_size: PixelSize | None = None


@dataclass
class Stack:
    """An image in working order.

    Attributes:
        array: ``(Z, Y, X)`` array; a single 2D image has ``Z == 1``.
        layout: the file's own axis order: "zyx" (TIFF/ITK/HDF5/zarr/MRC stacks), "yx" (2D images), "xyz" (NIfTI) or
            "xy" (2D NIfTI).
        spacing: ``(z, y, x)`` voxel size in the file's units, or None if the file does not say.
        path: where it was read from.
        pixel_size: the pixel size in nanometres with its source (``scripts.io.read_pixel_size``), or None where
            the file gives none (or only a screen default).
    """

    array: np.ndarray
    layout: str
    spacing: Spacing | None
    path: str
    pixel_size: PixelSize | None = None


class OpenFileReader:
    """Base of the section readers: ``_handle`` is the file a reader keeps open between reads; :meth:`close` or a
    ``with`` block closes it (a later read opens it again). Subclasses set ``path``, ``shape`` (``(Z, Y, X)``, or
    ``(Y, X)`` for a single image), ``dtype``, ``spacing`` and ``pixel_size`` and give ``_read(start, stop)``, the
    sections as stored; :meth:`read` checks the range and the values around it."""

    _handle = None
    path: str
    shape: tuple[int, ...]
    spacing: Spacing | None = None
    pixel_size: PixelSize | None = None

    def __len__(self) -> int:
        return self.shape[0] if len(self.shape) == 3 else 1

    def read(self, start: int, stop: int) -> np.ndarray:
        """Sections ``start .. stop - 1`` as ``(stop - start, Y, X)``; the file stays open until :meth:`close`."""
        if not 0 <= start < stop <= len(self):
            raise IndexError(f"sections {start}..{stop - 1} are outside {self.path} ({len(self)} sections)")
        sections = self._read(start, stop)
        check_values(sections, f"{self.path} (sections {start}..{stop - 1})")
        return sections

    def _read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def __iter__(self) -> Iterator[np.ndarray]:
        """The sections one by one, ``(Y, X)`` each, with the file open throughout."""
        with self:
            for z in range(len(self)):
                yield self.read(z, z + 1)[0]

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
    if layout == "xy":
        return np.ascontiguousarray(array[0].T)
    raise ValueError(f"unknown layout {layout!r}, expected 'zyx', 'yx', 'xyz' or 'xy'")


# ------------------------------------------------------------------------------------------------ value checks
SEGMENT_IN_2D = "give a 3D stack, or segment it with a 2D model (configs/inference.json without the 3D override)"


def require_volume(path: str, shape: tuple[int, ...], fix: str = SEGMENT_IN_2D) -> None:
    """A 3D network needs a stack: reject a single 2D section (``shape`` ``(Y, X)`` or ``(1, Y, X)``), which it would
    otherwise train on, score or segment as a volume of copies of that section."""
    if len(shape) < 3 or shape[0] < 2:
        problem = f"is a single 2D section (shape {tuple(shape[-2:])}), but the network is 3D (spatial_dims 3)"
        raise BundleInputError(path, problem, fix)


def check_not_empty(shape: Sequence[int], path: str) -> None:
    """Reject an image with no pixels (an HDF5 dataset of 0 sections, a 0-pixel-wide section)."""
    if any(int(s) == 0 for s in shape):
        problem = f"holds no pixels (shape {tuple(int(s) for s in shape)})"
        raise BundleInputError(path, problem, "write the sections into it, or pass the file that has them")


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


def luma(rgb: np.ndarray) -> np.ndarray:
    """Grey ``(...)`` float32 of colour pixels ``(..., 3)`` (ITU-R BT.601 weights, :data:`LUMA`)."""
    rgb = rgb.astype(np.float32, copy=False)
    return rgb[..., 0] * np.float32(LUMA[0]) + rgb[..., 1] * np.float32(LUMA[1]) + rgb[..., 2] * np.float32(LUMA[2])


class _WarningRecorder(logging.Handler):
    """Collects a library's warnings (tifffile only logs truncated pages and returns what it could read)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def fail_on_warnings(logger_name: str) -> Iterator[None]:
    """Turn the warnings a library logs to ``logger_name`` inside the block into one ``ValueError`` at its end."""
    library = logging.getLogger(logger_name)
    recorder = _WarningRecorder()
    library.addHandler(recorder)
    propagate, library.propagate = library.propagate, False
    try:
        yield
    finally:
        library.removeHandler(recorder)
        library.propagate = propagate
    if recorder.messages:
        raise ValueError("; ".join(m.strip().splitlines()[0] for m in recorder.messages[:2]))


def unreadable(path: str, kind: str, error: Exception) -> BundleInputError:
    """The error for a file a library could not open as ``kind`` (truncated, corrupt, foreign)."""
    return BundleInputError(path, f"cannot be read as {kind} ({type(error).__name__}: {error})", "re-export it")
