# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Every image format the bundle reads and writes: whole stacks, and stacks a section at a time.

Formats: TIFF (tifffile; compressed TIFFs through imagecodecs), HDF5 (h5py), NIfTI (nibabel) and the other ITK
formats (mha, nrrd, png, ...). An image is read as the user sees it in a viewer:

- TIFF: every page of every series is a section (a file written page by page, ``tifffile.imwrite(p, page,
  append=True)``, is one stack, as Fiji opens it); RGB (contiguous or planar), YCbCr and palette images become one
  grey channel (ITU-R BT.601 luma, float32) and grey images with extra samples (alpha) keep their grey; MinIsWhite
  images are inverted back; OME/ImageJ axes are honoured: a channel axis with more than one channel is refused
  (the channel to segment must be chosen), any other non-spatial axis (Z, T, Q, ...) holds the sections;
  reduced-resolution previews are skipped.
- HDF5: the file's only 2D/3D numeric dataset, or the one named ``volume``, ``raw``, ``data`` or ``image``.
- NIfTI: nibabel's ``(X, Y, Z)`` order, turned into sections along the last axis and back on output.
- ITK formats: numpy order ``(Z, Y, X)``; colour pixels become grey as for TIFF.

``read_stack`` returns the stack in the bundle's working order ``(Z, Y, X)`` (sections first) plus the file's
layout, so outputs keep the input's shape and axis order. :func:`open_sections` reads TIFF and HDF5 stacks a
section at a time with exactly the sections ``read_stack`` gives. Result files are written atomically
(``scripts.outputs.atomic_path``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleInputError
from .outputs import atomic_path, make_output_folder  # noqa: F401  (make_output_folder: for older importers)

TIFF_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr", ".png", ".jpg", ".jpeg", ".bmp", ".hdr", ".vtk")
HDF5_SUFFIXES = (".h5", ".hdf5")
IMAGE_SUFFIXES = TIFF_SUFFIXES + NIFTI_SUFFIXES + HDF5_SUFFIXES + ITK_SUFFIXES
STREAMED_SUFFIXES = TIFF_SUFFIXES + HDF5_SUFFIXES  # formats :func:`open_sections` reads a section at a time
BIGTIFF_BYTES = 2**32 - 2**25  # classic TIFF offsets are 32-bit; leave room for the page tables
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as most viewers and PIL's "L" mode turn RGB into grey

logger = logging.getLogger(__name__)


def image_suffix(path: str | os.PathLike) -> str:
    """The recognised suffix of ``path`` (``.nii.gz`` and ``.ome.tif`` count as one), or '' if it is no image."""
    name = Path(path).name.lower()
    return next((s for s in sorted(IMAGE_SUFFIXES, key=len, reverse=True) if name.endswith(s)), "")


def image_stem(path: str | os.PathLike) -> str:
    """File name without its image suffix: ``a/b/x.nii.gz -> x``, ``two.ome.tif -> two``."""
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
    ``with`` block closes it (a later read opens it again). Subclasses give ``__len__`` (the section count) and
    ``read(start, stop)`` (sections ``start .. stop - 1`` as ``(stop - start, Y, X)``)."""

    _handle = None

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, start: int, stop: int) -> np.ndarray:
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
    raise ValueError(f"unknown layout {layout!r}, expected 'zyx', 'yx' or 'xyz'")


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
def _fail_on_warnings(logger_name: str) -> Iterator[None]:
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


# -------------------------------------------------------------------------------------------------------- TIFF
def tiff_spacing(tif) -> tuple[float, float, float] | None:
    """``(z, y, x)`` voxel size of an open ``tifffile.TiffFile`` from its resolution tags (None if unset)."""
    tags = tif.pages[0].tags
    if "XResolution" in tags and "YResolution" in tags:
        xr, yr = tags["XResolution"].value, tags["YResolution"].value
        if xr[0] and yr[0] and (xr != (1, 1) or yr != (1, 1)):
            z = float(tif.imagej_metadata.get("spacing", 1.0)) if tif.imagej_metadata else 1.0
            return (z, yr[1] / yr[0], xr[1] / xr[0])
    return None


_SPATIAL = ("Y", "X")
_NOT_SECTIONS = ("Y", "X", "S", "C")  # every other axis of a series (Z, T, Q, I, ...) holds sections


@dataclass
class _TiffSeries:
    """How one series of a TIFF file turns into grey ``(Y, X)`` sections.

    Attributes:
        index: the series' index in ``tifffile.TiffFile.series``.
        sections: how many sections it holds.
        page_axes: the axes of one page as ``TiffFile.asarray(key=k, series=index)`` returns it, when every page is
            one section; "" when a page holds several sections (e.g. SGI volumes), which are then read whole.
        photometric: the TIFF photometric interpretation's name ("MINISBLACK", "MINISWHITE", "RGB", ...).
        colormap: ``(3, 2**bits)`` palette of a palette image, else None.
        bits: bits per sample.
        shape, axes, dtype: the series as tifffile gives it; ``dtype`` is the stored type.
    """

    index: int
    sections: int
    page_axes: str
    photometric: str
    colormap: np.ndarray | None
    bits: int
    shape: tuple[int, ...]
    axes: str
    dtype: np.dtype

    @property
    def section_shape(self) -> tuple[int, int]:
        return tuple(self.shape[self.axes.index(a)] for a in _SPATIAL)  # type: ignore[return-value]

    @property
    def grey_dtype(self) -> np.dtype:
        """The dtype of its grey sections: float32 for colour images (luma), else the stored type."""
        return np.dtype(np.float32) if self.photometric in ("RGB", "YCBCR", "PALETTE") else np.dtype(self.dtype)

    def grey(self, data: np.ndarray, axes: str, path: str) -> np.ndarray:
        """``data`` (with ``axes``, as tifffile returns a series or a page of it) as grey ``(n, Y, X)`` sections."""
        axes = axes.upper()
        if "S" in axes:
            data, axes = np.moveaxis(data, axes.index("S"), -1), axes.replace("S", "") + "S"
            if self.photometric in ("RGB", "YCBCR") and data.shape[-1] >= 3:
                data = luma(data[..., :3])  # tifffile returns JPEG-compressed YCbCr already as RGB
            else:  # grey with extra samples (alpha, masks): the grey is the first sample
                data = data[..., 0]
            axes = axes[:-1]
        elif self.photometric == "PALETTE" and self.colormap is not None:
            data = luma(np.moveaxis(self.colormap[:, data], 0, -1))
        if "C" in axes:  # one channel (more are refused when the file is opened)
            data, axes = np.take(data, 0, axis=axes.index("C")), axes.replace("C", "")
        plane = (data.shape[axes.index("Y")], data.shape[axes.index("X")])
        order = [i for i, a in enumerate(axes) if a not in _SPATIAL] + [axes.index("Y"), axes.index("X")]
        data = np.transpose(data, order).reshape(-1, *plane)  # the one section axis (or none) first
        if self.photometric == "MINISWHITE":
            data = _invert(data, self.bits)
        return data


def _invert(data: np.ndarray, bits: int) -> np.ndarray:
    """A MinIsWhite image (0 = white) as MinIsBlack: ``max - v`` for unsigned ``bits``-bit samples, ``-1 - v`` for
    signed ones, ``-v`` for floats (per-section normalization makes the offset irrelevant)."""
    if data.dtype == bool:
        return ~data
    if np.issubdtype(data.dtype, np.unsignedinteger):
        top = (1 << bits) - 1 if 0 < bits < data.dtype.itemsize * 8 else np.iinfo(data.dtype).max
        return (np.asarray(top, data.dtype) - data).astype(data.dtype, copy=False)
    if np.issubdtype(data.dtype, np.signedinteger):
        return ~data
    return -data


def _tiff_series(tif, path: str) -> list[_TiffSeries]:
    """The series of an open TIFF file that hold sections (previews skipped), checked to form one stack."""
    parts: list[_TiffSeries] = []
    candidates = list(enumerate(tif.series))
    full = [(i, s) for i, s in candidates if not getattr(s.keyframe, "is_reduced", False)]
    for index, series in full or candidates:
        axes, shape = series.axes.upper(), tuple(int(n) for n in series.shape)
        size = dict(zip(axes, shape))
        if "Y" not in axes or "X" not in axes:
            raise BundleInputError(path, f"has no image plane (axes {axes}, shape {shape})", "save it as (Z, Y, X)")
        if size.get("C", 1) > 1:
            raise BundleInputError(
                path,
                f"has {size['C']} channels (axes {axes}, shape {shape}), but the network segments one grey channel",
                "save the channel to segment on its own (e.g. Fiji: Image > Color > Split Channels, then save it)",
            )
        stacked = [a for a in axes if a not in _NOT_SECTIONS and size[a] > 1]
        if len(stacked) > 1:
            raise BundleInputError(
                path,
                f"holds several stacks (axes {axes}, shape {shape}: {' and '.join(stacked)} both > 1)",
                "save the one stack of sections to segment (e.g. one time point) as its own file",
            )
        keyframe = series.keyframe
        photometric = getattr(keyframe.photometric, "name", str(keyframe.photometric))
        if photometric not in ("MINISBLACK", "MINISWHITE", "RGB", "YCBCR", "PALETTE"):
            raise BundleInputError(
                path, f"has photometric interpretation {photometric}", "convert it to greyscale (8- or 16-bit)"
            )
        sections = math.prod(size[a] for a in axes if a not in _NOT_SECTIONS)
        page_axes = keyframe.axes.upper()
        per_page = math.prod(n for a, n in zip(page_axes, keyframe.shape) if a not in _NOT_SECTIONS)
        one_per_page = per_page == 1 and len(series.pages) == sections
        colormap = getattr(keyframe, "colormap", None) if photometric == "PALETTE" else None
        parts.append(
            _TiffSeries(
                index=index,
                sections=sections,
                page_axes=page_axes if one_per_page else "",
                photometric=photometric,
                colormap=None if colormap is None else np.asarray(colormap),
                bits=int(keyframe.bitspersample),
                shape=shape,
                axes=axes,
                dtype=np.dtype(series.dtype),
            )
        )
    if not parts:  # e.g. a header without any image directory: corrupt, caught and named by the readers
        raise ValueError("no image in the file")
    kinds = {(p.section_shape, p.grey_dtype) for p in parts}
    if len(kinds) > 1:
        found = ", ".join(f"{p.sections} x {p.section_shape} {p.grey_dtype}" for p in parts[:6])
        raise BundleInputError(
            path,
            f"holds {len(parts)} image series of different sizes or types ({found})",
            "save the sections to segment as one stack of equal sections (e.g. Fiji: File > Save As > Tiff)",
        )
    return parts


def _is_2d(parts: list[_TiffSeries]) -> bool:
    """A TIFF holding one 2D image (no section axis at all) is written back as one 2D image."""
    return len(parts) == 1 and parts[0].sections == 1 and all(a in _NOT_SECTIONS for a in parts[0].axes)


def _read_tiff(path: str) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    import tifffile

    with _fail_on_warnings("tifffile"), tifffile.TiffFile(path) as tif:
        parts = _tiff_series(tif, path)
        stacks = [part.grey(tif.asarray(series=part.index), part.axes, path) for part in parts]
        array = stacks[0] if len(stacks) == 1 else np.concatenate(stacks)
        for part in parts:
            if part.photometric in ("RGB", "YCBCR", "PALETTE"):
                logger.warning("%s: colour image (%s) read as grey (ITU-R BT.601 luma)", path, part.photometric)
                break
        return (array[0] if _is_2d(parts) else array), tiff_spacing(tif)


class TiffSections(OpenFileReader):
    """A TIFF stack read one ``(Y, X)`` section at a time: exactly the sections :func:`read_stack` reads (every
    page of every series, grey, MinIsWhite inverted), without reading the others.

    Attributes:
        path: the file.
        shape: the stack's shape as results are written: ``(Z, Y, X)``, or ``(Y, X)`` for a single 2D image.
        dtype: the sections' dtype.
        spacing: ``(z, y, x)`` voxel size, or None.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import tifffile

        self.path = str(path)
        if image_suffix(self.path) not in TIFF_SUFFIXES:
            raise BundleInputError(
                self.path,
                "streaming reads TIFF and HDF5 stacks only",
                "convert it to a multi-page TIFF or HDF5, or use configs/inference.json",
            )
        if not os.path.isfile(self.path) or os.path.getsize(self.path) == 0:
            raise BundleInputError(self.path, "file not found or empty", "check the path or re-copy the stack")
        try:
            with _fail_on_warnings("tifffile"), tifffile.TiffFile(self.path) as tif:
                self.parts = _tiff_series(tif, self.path)
                self.spacing = tiff_spacing(tif)
        except BundleInputError:
            raise
        except Exception as e:  # tifffile raises many types for corrupt files
            raise BundleInputError(
                self.path, f"cannot be read as a TIFF ({type(e).__name__}: {e})", "re-export it"
            ) from e
        total = sum(p.sections for p in self.parts)
        plane = self.parts[0].section_shape
        self.shape = plane if _is_2d(self.parts) else (total, *plane)
        self.dtype = self.parts[0].grey_dtype
        self._whole: dict[int, np.ndarray] = {}  # series whose pages hold several sections, read whole once

    def __len__(self) -> int:
        return self.shape[0] if len(self.shape) == 3 else 1

    def _section(self, z: int) -> np.ndarray:
        """Section ``z`` of the stack, ``(Y, X)``."""
        for part in self.parts:
            if z < part.sections:
                break
            z -= part.sections
        if part.page_axes:
            return part.grey(self._handle.asarray(key=z, series=part.index), part.page_axes, self.path)[0]
        if part.index not in self._whole:
            self._whole[part.index] = part.grey(self._handle.asarray(series=part.index), part.axes, self.path)
        return self._whole[part.index][z]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Sections ``start .. stop - 1`` as ``(stop - start, Y, X)``, reading only those pages.

        The file stays open between calls (random access without re-parsing it); :meth:`close` or a ``with``
        block closes it.
        """
        import tifffile

        if not 0 <= start < stop <= len(self):
            raise IndexError(f"sections {start}..{stop - 1} are outside {self.path} ({len(self)} sections)")
        try:
            with _fail_on_warnings("tifffile"):
                if self._handle is None:
                    self._handle = tifffile.TiffFile(self.path)
                sections = np.stack([self._section(z) for z in range(start, stop)])
        except Exception as e:
            raise BundleInputError(
                self.path,
                f"sections {start}..{stop - 1} cannot be read ({type(e).__name__}: {e})",
                "the file is truncated; re-export it",
            ) from e
        check_values(sections, f"{self.path} (sections {start}..{stop - 1})")
        return sections

    def close(self) -> None:
        super().close()
        self._whole = {}


def write_tiff(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as a (multi-page) zlib-compressed grey TIFF, atomically."""
    import tifffile

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, array, compression="zlib", photometric="minisblack")


def write_tiff_sections(path: str, sections: Iterator[np.ndarray], shape: Sequence[int], dtype: np.dtype) -> None:
    """Write ``(Y, X)`` sections as they come into one zlib-compressed TIFF series of ``shape``, atomically
    (BigTIFF when the data would not fit classic TIFF's 4 GB)."""
    import tifffile

    big = int(np.prod(shape)) * np.dtype(dtype).itemsize > BIGTIFF_BYTES
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            data=sections,
            shape=tuple(shape),
            dtype=dtype,
            compression="zlib",
            photometric="minisblack",
            bigtiff=big,
        )


# -------------------------------------------------------------------------------------------------------- HDF5
PREFERRED_NAMES = ("volume", "raw", "data", "image")


def image_dataset(h5file) -> str:
    """The name of the image dataset in an open ``h5py.File``: its only 2D/3D numeric dataset, or, where there are
    several, the one named ``volume``, ``raw``, ``data`` or ``image`` (the names connectomics tools use)."""
    import h5py

    found: list[str] = []
    h5file.visititems(
        lambda name, obj: (
            found.append(name)
            if isinstance(obj, h5py.Dataset) and obj.ndim in (2, 3) and obj.dtype.kind in "biuf"
            else None
        )
    )
    if len(found) == 1:
        return found[0]
    preferred = [n for n in found if n.rsplit("/", 1)[-1] in PREFERRED_NAMES]
    if len(preferred) == 1:
        return preferred[0]
    problem = f"has {'no' if not found else 'several'} 2D/3D image datasets ({', '.join(found) or 'none'})"
    raise BundleInputError(h5file.filename, problem, f"keep one, or name it one of {', '.join(PREFERRED_NAMES)}")


def dataset_spacing(dataset) -> tuple[float, float, float] | None:
    """``(z, y, x)`` voxel size from an h5py dataset's ``element_size_um`` or ``resolution`` attribute, or None."""
    for key in ("element_size_um", "resolution"):
        if key in dataset.attrs and len(dataset.attrs[key]) == 3:
            return tuple(float(s) for s in dataset.attrs[key])  # type: ignore[return-value]
    return None


def read_h5(path: str) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """The whole image dataset of ``path`` and its ``(z, y, x)`` spacing (attribute ``element_size_um`` or
    ``resolution``, as ilastik and CREMI write them), or None."""
    import h5py

    with h5py.File(path, "r") as f:
        dataset = f[image_dataset(f)]
        check_not_empty(dataset.shape, f"{path} (dataset {dataset.name})")
        return dataset[()], dataset_spacing(dataset)


class H5Sections(OpenFileReader):
    """An HDF5 image dataset read a section (or a range of sections) at a time; the same interface as
    :class:`TiffSections`. Outputs are one dataset per file, chunked one section per chunk and gzip-compressed, so
    they stream back section by section too.

    Attributes:
        path: the file.
        shape: the dataset's shape: ``(Z, Y, X)``, or ``(Y, X)`` for a single image.
        spacing: ``(z, y, x)`` voxel size, or None.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import h5py

        self.path = str(path)
        try:
            with h5py.File(self.path, "r") as f:
                self.name = image_dataset(f)
                dataset = f[self.name]
                self.shape, self.dtype, self.spacing = tuple(dataset.shape), dataset.dtype, dataset_spacing(dataset)
        except BundleInputError:
            raise
        except Exception as e:  # h5py raises OSError and others for missing, truncated or foreign files
            raise BundleInputError(
                self.path, f"cannot be read as HDF5 ({type(e).__name__}: {e})", "re-export it"
            ) from e
        check_not_empty(self.shape, f"{self.path} (dataset {self.name})")

    def __len__(self) -> int:
        return self.shape[0] if len(self.shape) == 3 else 1

    def read(self, start: int, stop: int) -> np.ndarray:
        """Sections ``start .. stop - 1`` as ``(stop - start, Y, X)``; the file stays open until ``close()``."""
        import h5py

        if not 0 <= start < stop <= len(self):
            raise IndexError(f"sections {start}..{stop - 1} are outside {self.path} ({len(self)} sections)")
        if self._handle is None:
            self._handle = h5py.File(self.path, "r")
        dataset = self._handle[self.name]
        sections = dataset[start:stop] if len(self.shape) == 3 else dataset[()][None]
        check_values(sections, f"{self.path} (sections {start}..{stop - 1})")
        return sections


def write_h5_sections(
    path: str, sections: Iterator[np.ndarray], shape: Sequence[int], dtype: np.dtype, name: str = "data"
) -> None:
    """Write ``(Y, X)`` sections as they come into dataset ``name`` of a new HDF5 file, atomically."""
    import h5py

    shape = tuple(int(s) for s in shape)
    chunks = (1, *shape[-2:]) if len(shape) == 3 else shape
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        dataset = f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, compression="gzip")
        for z, section in enumerate(sections):
            if len(shape) == 3:
                dataset[z] = section
            else:
                dataset[()] = section


# --------------------------------------------------------------------------------------------- NIfTI and ITK
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
    components = int(img.GetNumberOfComponentsPerPixel())
    if components > 1:  # colour (RGB, RGBA) or grey + alpha pixels, on the last axis
        if components > 4:
            problem = f"has {components} values per pixel"
            raise BundleInputError(path, problem, "save one grey channel (8- or 16-bit)")
        array = luma(array[..., :3]) if components >= 3 else array[..., 0]
        if components >= 3:
            logger.warning("%s: colour image read as grey (ITU-R BT.601 luma)", path)
    sp = tuple(float(s) for s in reversed(tuple(img.GetSpacing())))
    spacing = sp if len(sp) == 3 else None
    return array, spacing  # type: ignore[return-value]


def result_extension(image_path: str | os.PathLike) -> str:
    """The extension of whole-volume results for an input image: NIfTI in, NIfTI out (``nii.gz`` or ``nii``, with
    the input's affine, :func:`write_like`); ``tif`` for every other format."""
    suffix = image_suffix(image_path)
    return suffix.lstrip(".") if suffix in NIFTI_SUFFIXES else "tif"


def write_like(path: str | os.PathLike, array: np.ndarray, reference: str | os.PathLike) -> None:
    """Write ``array`` (in the file order of ``reference``) atomically, as a NIfTI file with ``reference``'s affine,
    spacing and orientation codes if ``path`` ends in ``.nii``/``.nii.gz`` (as MONAI's ``SaveImage`` keeps them),
    else as a TIFF (:func:`write_tiff`)."""
    if image_suffix(path) not in NIFTI_SUFFIXES:
        write_tiff(path, array)
        return
    import gzip

    import nibabel as nib

    source = nib.load(str(reference))
    header = source.header.copy()
    header.set_data_dtype(array.dtype)
    image = type(source)(array, source.affine, header=header)
    image.header.set_slope_inter(1.0, 0.0)  # the input's intensity scaling does not apply to results
    data = image.to_bytes()
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(gzip.compress(data, compresslevel=6) if str(path).endswith(".gz") else data)


# ------------------------------------------------------------------------------------------------ whole stacks
def read_array(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """Read an image file as grey ``(Y, X)`` or ``(Z, Y, X)`` (``(X, Y, Z)`` for NIfTI) with its ``(z, y, x)``
    spacing (see the module docstring), with a clear error for missing, corrupt or unsupported files."""
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
    readers.update(dict.fromkeys(HDF5_SUFFIXES, read_h5))
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


def read_stack(path: str | os.PathLike) -> Stack:
    """Read a 2D image or 3D stack as ``(Z, Y, X)``; NIfTI ``(X, Y, Z)`` is transposed and restored on output."""
    array, spacing = read_array(path)
    path = str(path)
    if array.ndim not in (2, 3):
        raise BundleInputError(
            path,
            f"has {array.ndim} dimensions (shape {array.shape}), expected a 2D section or a 3D stack",
            "save a single-channel 2D or 3D image",
        )
    check_not_empty(array.shape, path)
    check_values(array, path)
    if image_suffix(path) in NIFTI_SUFFIXES and array.ndim == 3:
        return Stack(np.ascontiguousarray(array.transpose(2, 1, 0)), "xyz", spacing, path)
    if array.ndim == 2:
        return Stack(array[None], "yx", spacing, path)
    return Stack(array, "zyx", spacing, path)


# --------------------------------------------------------------------------------------- section by section
def open_sections(path: str | os.PathLike) -> TiffSections | H5Sections:
    """A stack read section by section: :class:`TiffSections`, or :class:`H5Sections` for ``.h5``/``.hdf5`` files."""
    return H5Sections(path) if image_suffix(path) in HDF5_SUFFIXES else TiffSections(path)


def write_sections(path: str, sections: Iterator[np.ndarray], shape: Sequence[int], dtype: np.dtype) -> None:
    """Write sections as they come to a TIFF, or to an HDF5 file (dataset named after the file's ``_prob``/``_seg``
    suffix) when ``path`` ends in ``.h5``, atomically."""
    if image_suffix(path) in HDF5_SUFFIXES:
        write_h5_sections(path, sections, shape, dtype, name=image_stem(path).rsplit("_", 1)[-1])
    else:
        write_tiff_sections(path, sections, shape, dtype)
