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
- zarr / OME-Zarr (zarr v2, OME-NGFF 0.1-0.4; a ``*.zarr`` folder is one image): the first (highest-resolution)
  dataset of ``multiscales[0]``, read lazily by :func:`open_zarr`; time/channel axes of size 1 are dropped, larger
  ones refused; the spacing is the dataset's "scale". Chunked OME-Zarr results: :func:`create_zarr`.
- NIfTI: nibabel's ``(X, Y, Z)`` order, turned into sections along the last axis and back on output.
- ITK formats: numpy order ``(Z, Y, X)``; colour pixels become grey as for TIFF.

``read_stack`` returns the stack in the bundle's working order ``(Z, Y, X)`` (sections first) plus the file's
layout, so outputs keep the input's shape and axis order. :func:`open_sections` reads TIFF, HDF5 and zarr stacks a
section at a time with exactly the sections ``read_stack`` gives. Result files are written atomically
(``scripts.outputs.atomic_path``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleInputError
from .outputs import atomic_path, make_output_folder, result_path, temporary_tag

TIFF_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr", ".png", ".jpg", ".jpeg", ".bmp", ".hdr", ".vtk")
HDF5_SUFFIXES = (".h5", ".hdf5")
ZARR_SUFFIXES = (".ome.zarr", ".zarr")  # folders, not files
IMAGE_SUFFIXES = TIFF_SUFFIXES + NIFTI_SUFFIXES + HDF5_SUFFIXES + ZARR_SUFFIXES + ITK_SUFFIXES
STREAMED_SUFFIXES = TIFF_SUFFIXES + HDF5_SUFFIXES + ZARR_SUFFIXES  # what :func:`open_sections` reads by section
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
        layout: the file's own axis order: "zyx" (TIFF/ITK/HDF5/zarr stacks), "yx" (2D images), "xyz" (NIfTI) or
            "xy" (2D NIfTI).
        spacing: ``(z, y, x)`` voxel size in the file's units, or None if the file does not say.
        path: where it was read from.
    """

    array: np.ndarray
    layout: str
    spacing: tuple[float, float, float] | None
    path: str


class OpenFileReader:
    """Base of the section readers: ``_handle`` is the file a reader keeps open between reads; :meth:`close` or a
    ``with`` block closes it (a later read opens it again). Subclasses set ``path`` and ``shape`` (``(Z, Y, X)``, or
    ``(Y, X)`` for a single image) and give ``_read(start, stop)``, the sections as stored; :meth:`read` checks the
    range and the values around it."""

    _handle = None
    path: str
    shape: tuple[int, ...]

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
                "streaming reads TIFF, HDF5, NIfTI and zarr stacks only",
                "convert it to a multi-page TIFF, HDF5 or OME-Zarr, or use configs/inference.json",
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

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Only the pages of sections ``start .. stop - 1``; the file stays open between calls (random access
        without re-parsing it)."""
        import tifffile

        try:
            with _fail_on_warnings("tifffile"):
                if self._handle is None:
                    self._handle = tifffile.TiffFile(self.path)
                return np.stack([self._section(z) for z in range(start, stop)])
        except Exception as e:
            raise BundleInputError(
                self.path,
                f"sections {start}..{stop - 1} cannot be read ({type(e).__name__}: {e})",
                "the file is truncated; re-export it",
            ) from e

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

    def _read(self, start: int, stop: int) -> np.ndarray:
        import h5py

        if self._handle is None:
            self._handle = h5py.File(self.path, "r")
        dataset = self._handle[self.name]
        return dataset[start:stop] if len(self.shape) == 3 else dataset[()][None]


def write_h5_sections(
    path: str,
    sections: Iterator[np.ndarray],
    shape: Sequence[int],
    dtype: np.dtype,
    name: str = "data",
    spacing: Sequence[float] | None = None,
) -> None:
    """Write ``(Y, X)`` sections as they come into dataset ``name`` of a new HDF5 file, atomically, with the
    ``(z, y, x)`` ``spacing`` as its ``element_size_um`` attribute (as ilastik writes it) if given."""
    import h5py

    shape = tuple(int(s) for s in shape)
    chunks = (1, *shape[-2:]) if len(shape) == 3 else shape
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        dataset = f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, compression="gzip")
        if spacing is not None:
            dataset.attrs["element_size_um"] = [float(s) for s in spacing]
        for z, section in enumerate(sections):
            if len(shape) == 3:
                dataset[z] = section
            else:
                dataset[()] = section


# ------------------------------------------------------------------------------------------------ zarr / OME-Zarr
#: Non-spatial OME-NGFF axes (time, channel, ...) may have size 1 only; they are dropped from the view read.
SPATIAL_AXES = ("z", "y", "x")
ZARR_CHUNK_SIDE = 1024  # default chunks: one section per chunk, at most 1024 x 1024 pixels
_NGFF_VERSION = "0.4"  # the last OME-NGFF version stored as zarr v2 (0.5 is zarr v3)


def is_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr v2 array or group (a folder with ``.zarray`` or ``.zgroup``)."""
    return os.path.isfile(os.path.join(path, ".zarray")) or os.path.isfile(os.path.join(path, ".zgroup"))


class _SqueezedStore(MutableMapping):
    """A read-only view of a zarr v2 array's store without some of its size-1 axes: ``.zarray`` is rewritten
    without them and chunk key ``i.j`` is read from the stored ``0.i.j``. Valid because an axis of size 1 chunked
    by 1 does not change a chunk's bytes."""

    def __init__(self, array, keep: Sequence[bool]) -> None:
        import json

        self.store, self.prefix, self.keep = array.store, f"{array.path}/" if array.path else "", list(keep)
        meta = json.loads(self.store[self.prefix + ".zarray"])
        meta["shape"] = [n for n, k in zip(meta["shape"], keep) if k]
        meta["chunks"] = [n for n, k in zip(meta["chunks"], keep) if k]
        self.separator = meta.get("dimension_separator") or "."
        self.meta = json.dumps(meta).encode()

    def __getitem__(self, key: str) -> bytes:
        if key == ".zarray":
            return self.meta
        if key.startswith("."):
            return self.store[self.prefix + key]
        indices = iter(key.split(self.separator))
        return self.store[self.prefix + self.separator.join(next(indices) if k else "0" for k in self.keep)]

    def __iter__(self):
        return iter((".zarray",))

    def __len__(self) -> int:
        return 1

    def __setitem__(self, key: str, value: bytes) -> None:
        raise PermissionError("a squeezed zarr view is read-only")

    __delitem__ = __setitem__


def _ngff_axes(multiscale: dict, ndim: int) -> list[str]:
    """The axis names of an OME-NGFF multiscale (0.4: dicts with "name"; 0.3: names), lower case; 0.1/0.2 had no
    axes and were always ``t, c, z, y, x``."""
    axes = multiscale.get("axes")
    if axes is None:
        return ["t", "c", "z", "y", "x"][-ndim:]
    return [str(a["name"] if isinstance(a, dict) else a).lower() for a in axes]


def _ngff_scale(multiscale: dict, dataset: dict, ndim: int) -> list[float] | None:
    """The voxel size of one multiscale dataset: its "scale" transformations times the multiscale's own."""
    scales = [
        t["scale"]
        for t in list(dataset.get("coordinateTransformations", []))
        + list(multiscale.get("coordinateTransformations", []))
        if t.get("type") == "scale" and len(t.get("scale", [])) == ndim
    ]
    return [float(np.prod([s[i] for s in scales])) for i in range(ndim)] if scales else None


def _zarr_image(path: str) -> tuple[object, list[str], list[float] | None]:
    """The highest-resolution image array of a zarr store, its axis names and voxel size per axis (or None)."""
    import zarr

    if os.path.isfile(os.path.join(path, "zarr.json")):
        raise BundleInputError(
            path, "is a zarr v3 store (OME-NGFF 0.5), which zarr 2 cannot read", "convert it to OME-NGFF 0.4 (zarr v2)"
        )
    if not is_zarr(path):
        raise BundleInputError(path, "is not a zarr array or group (no .zarray or .zgroup in it)", "check the path")
    node = zarr.open(zarr.storage.DirectoryStore(path), mode="r")
    if isinstance(node, zarr.Array):
        return node, ["z", "y", "x"][-node.ndim :] if node.ndim in (2, 3) else [], _zarr_attr_spacing(node)
    multiscales = node.attrs.get("multiscales")
    if multiscales:
        multiscale = multiscales[0]
        dataset = multiscale["datasets"][0]
        array = node[dataset["path"]]
        return array, _ngff_axes(multiscale, array.ndim), _ngff_scale(multiscale, dataset, array.ndim)
    arrays = [(name, a) for name, a in node.arrays(recurse=True) if a.ndim in (2, 3) and a.dtype.kind in "biuf"]
    preferred = [(name, a) for name, a in arrays if name.rsplit("/", 1)[-1] in PREFERRED_NAMES]
    for found in (arrays, preferred):
        if len(found) == 1:
            array = found[0][1]
            return array, ["z", "y", "x"][-array.ndim :], _zarr_attr_spacing(array)
    problem = f"is a zarr group without OME-NGFF multiscales and {'no' if not arrays else 'several'} 2D/3D arrays"
    raise BundleInputError(
        path, problem, f"pass the array's own folder, or name it one of {', '.join(PREFERRED_NAMES)}"
    )


def _zarr_attr_spacing(array) -> list[float] | None:
    """A plain zarr array's ``(z, y, x)`` voxel size from ``element_size_um``/``resolution`` as for HDF5."""
    spacing = dataset_spacing(array)
    return list(spacing[-array.ndim :]) if spacing else None


def _spatial(path: str, array, axes: list[str]) -> list[bool]:
    """Which axes of ``array`` to keep: the spatial ones ((z,) y, x, in that order and last); a non-spatial axis
    (time, channel) of size 1 is dropped, one of larger size refused."""
    shape = tuple(int(n) for n in array.shape)
    described = ", ".join(f"{a}={n}" for a, n in zip(axes, shape)) or f"shape {shape}"
    if len(axes) != len(shape) or axes[-2:] != ["y", "x"]:
        raise BundleInputError(
            path, f"has axes the bundle cannot place ({described})", "save it as a (z, y, x) or (y, x) array"
        )
    keep = [a in SPATIAL_AXES for a in axes]
    spatial = [a for a in axes if a in SPATIAL_AXES]
    if spatial not in (["z", "y", "x"], ["y", "x"]):
        raise BundleInputError(path, f"has spatial axes {spatial} ({described})", "save them in the order z, y, x")
    extra = [(a, n) for a, n, k in zip(axes, shape, keep) if not k and n > 1]
    if extra:
        channel = any(a.startswith("c") for a, _ in extra)
        raise BundleInputError(
            path,
            f"has {' and '.join(f'{n} {a}' for a, n in extra)} ({described}), but the network segments one grey "
            "volume",
            "save the " + ("channel" if channel else "time point") + " to segment as its own OME-Zarr (z, y, x)",
        )
    chunks = tuple(int(c) for c in array.chunks)
    if any(not k and c != 1 for k, c in zip(keep, chunks)):
        raise BundleInputError(
            path, f"has chunks {chunks} on its size-1 axes ({described})", "save it as a (z, y, x) array"
        )
    return keep


def open_zarr(path: str | os.PathLike) -> "zarr.Array":  # noqa: F821  (zarr is imported where it is used)
    """Open a zarr v2 image lazily (nothing is read until it is indexed).

    ``path`` is a plain zarr array (a folder with ``.zarray``), an OME-Zarr group (OME-NGFF 0.1-0.4: the first,
    highest-resolution dataset of ``multiscales[0]``) or a zarr group holding one 2D/3D array (or one named
    ``volume``, ``raw``, ``data`` or ``image``, as for HDF5).

    Returns:
        a read-only ``zarr.Array`` of shape ``(Z, Y, X)`` or ``(Y, X)``. OME-Zarr time and channel axes of size 1
        (e.g. bioformats2raw's ``(t, c, z, y, x)``) are dropped by a view of the same chunks; a time or channel
        axis of more than one is refused (``BundleInputError`` naming the file and the fix), as are plain arrays
        that are not 2D or 3D.
    """
    import zarr

    path = str(path)
    try:
        array, axes, _ = _zarr_image(path)
    except BundleInputError:
        raise
    except Exception as e:  # zarr and json raise many types for broken metadata
        raise BundleInputError(path, f"cannot be read as zarr ({type(e).__name__}: {e})", "re-export it") from e
    if not axes:
        raise BundleInputError(
            path, f"is a zarr array of shape {array.shape}, expected (Z, Y, X) or (Y, X)", "save a single-channel stack"
        )
    keep = _spatial(path, array, axes)
    if not all(keep):
        array = zarr.Array(zarr.storage.KVStore(_SqueezedStore(array, keep)), read_only=True)
    check_not_empty(array.shape, path)
    return array


def zarr_spacing(path: str | os.PathLike) -> tuple[float, float, float] | None:
    """The ``(z, y, x)`` voxel size of the zarr image :func:`open_zarr` opens: the OME-NGFF "scale" of its dataset
    (times the multiscale's), or a plain array's ``element_size_um``/``resolution`` attribute; ``z`` is 1.0 for a
    2D image. None if the file does not say."""
    array, axes, scale = _zarr_image(str(path))
    if scale is None:
        return None
    spatial = {a: s for a, s in zip(axes, scale) if a in SPATIAL_AXES}
    return (spatial.get("z", 1.0), spatial["y"], spatial["x"])


def zarr_temporary(path: str | os.PathLike) -> str:
    """Where :func:`create_zarr` writes ``path`` until :func:`finalize_zarr`: a hidden folder beside it named as
    ``scripts.outputs.atomic_path`` names temporaries, so the next run removes it if this process is killed."""
    path = Path(path)
    return str(path.parent / f".{path.name}.{temporary_tag()}.zarr.part")


def create_zarr(
    path: str | os.PathLike,
    shape: Sequence[int],
    dtype: np.dtype | str,
    chunks: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
) -> "zarr.Array":  # noqa: F821
    """Create an OME-Zarr (OME-NGFF 0.4, zarr v2) image to be written chunk by chunk; returns its writable array.

    The group holds one dataset "0" of ``shape`` ``(Z, Y, X)`` (axes z, y, x) or ``(Y, X)`` (axes y, x) and
    ``dtype``, Blosc-compressed, with ``chunks`` (default one section per chunk, at most 1024 x 1024 pixels:
    ``(1, min(Y, 1024), min(X, 1024))``) and "/" chunk keys as NGFF 0.4 asks, and a "scale" transformation of
    ``spacing`` ``(z, y, x)`` (1.0 where None).

    Nothing appears at ``path`` until :func:`finalize_zarr` ``(path)`` renames the finished folder into place:
    it is written at :func:`zarr_temporary` ``(path)`` (readable by other processes, e.g. Dask workers, through
    the returned array's ``store.path``). A run killed before that leaves only the hidden temporary, which
    ``scripts.outputs.remove_stale_temporaries`` removes at the next start; :func:`discard_zarr` removes it on
    an error.
    """
    import zarr

    path = Path(path)
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"an OME-Zarr image is (Z, Y, X) or (Y, X), got shape {shape}")
    if chunks is None:
        plane = tuple(min(n, ZARR_CHUNK_SIDE) for n in shape[-2:])
        chunks = (1, *plane) if len(shape) == 3 else plane
    axes = list(SPATIAL_AXES[-len(shape) :])
    scale = [1.0] * len(shape) if spacing is None else [float(s) for s in tuple(spacing)[-len(shape) :]]
    make_output_folder(path.parent)
    tmp = zarr_temporary(path)
    discard_zarr(path)
    try:
        root = zarr.open_group(zarr.storage.DirectoryStore(tmp, dimension_separator="/"), mode="w")
        array = root.create_dataset("0", shape=shape, chunks=tuple(chunks), dtype=dtype, dimension_separator="/")
        root.attrs["multiscales"] = [
            {
                "version": _NGFF_VERSION,
                "name": image_stem(path),
                "axes": [{"name": a, "type": "space"} for a in axes],
                "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
            }
        ]
    except OSError as e:
        discard_zarr(path)
        raise BundleInputError(path, f"could not be written ({e.strerror})", "choose a writable --output_dir") from e
    return array


def finalize_zarr(path: str | os.PathLike) -> str:
    """Move the image :func:`create_zarr` ``(path)`` wrote (in this process) into place at ``path``, replacing an
    older result of that name; returns ``path``."""
    import shutil

    tmp = zarr_temporary(path)
    if not os.path.isdir(tmp):
        raise FileNotFoundError(f"no zarr image is being written to {path} by this process ({tmp} is missing)")
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
    os.replace(tmp, path)
    return str(path)


def discard_zarr(path: str | os.PathLike) -> None:
    """Remove what :func:`create_zarr` ``(path)`` wrote in this process, if anything (after an error)."""
    import shutil

    shutil.rmtree(zarr_temporary(path), ignore_errors=True)


def write_zarr_sections(
    path: str, sections: Iterator[np.ndarray], shape: Sequence[int], dtype: np.dtype, spacing=None
) -> None:
    """Write ``(Y, X)`` sections as they come into a new OME-Zarr image (:func:`create_zarr`), atomically."""
    array = create_zarr(path, shape, dtype, spacing=spacing)
    try:
        for z, section in enumerate(sections):
            if len(array.shape) == 3:
                array[z] = section
            else:
                array[...] = section
        finalize_zarr(path)
    except BaseException:
        discard_zarr(path)
        raise


class ZarrSections(OpenFileReader):
    """A zarr / OME-Zarr image (:func:`open_zarr`) read a section (or a range of sections) at a time; the same
    interface as :class:`TiffSections`.

    Attributes:
        path: the zarr folder.
        shape: ``(Z, Y, X)``, or ``(Y, X)`` for a single image.
        dtype: its dtype.
        spacing: ``(z, y, x)`` voxel size (:func:`zarr_spacing`), or None.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        self.array = open_zarr(self.path)
        self.shape, self.dtype, self.spacing = tuple(self.array.shape), self.array.dtype, zarr_spacing(self.path)

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Only the chunks that hold sections ``start .. stop - 1``."""
        try:
            return self.array[start:stop] if len(self.shape) == 3 else self.array[...][None]
        except Exception as e:  # missing or corrupt chunk files
            raise BundleInputError(
                self.path,
                f"sections {start}..{stop - 1} cannot be read ({type(e).__name__}: {e})",
                "the store is incomplete; re-export it",
            ) from e


def read_zarr(path: str) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """The whole zarr image of ``path`` (:func:`open_zarr`) and its ``(z, y, x)`` spacing, or None."""
    return open_zarr(path)[...], zarr_spacing(path)


# --------------------------------------------------------------------------------------------- NIfTI and ITK
def _read_nifti(path: str) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    import nibabel as nib

    img = nib.load(path)
    array = np.asarray(img.dataobj)
    return array, _nifti_spacing(img)


def _nifti_spacing(img) -> tuple[float, float, float] | None:
    """``(z, y, x)`` voxel size of a nibabel image (``z`` 1.0 for a 2D image)."""
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if len(zooms) == 2:
        zooms = (*zooms, 1.0)
    return tuple(reversed(zooms)) if len(zooms) == 3 else None  # type: ignore[return-value]


class NiftiSections(OpenFileReader):
    """A NIfTI image read a section (or a range of sections) at a time; the same interface as
    :class:`TiffSections`. NIfTI stores ``(X, Y, Z)`` in Fortran order, so a section along Z is one contiguous run
    of bytes; the file (gzip-compressed or not) stays open between reads, so reading sections in order reads it
    once.

    Attributes:
        path: the file.
        shape: ``(Z, Y, X)``, or ``(Y, X)`` for a 2D image (the working order of :func:`read_stack`).
        dtype: the sections' dtype (after the file's intensity scaling, as nibabel applies it).
        spacing: ``(z, y, x)`` voxel size.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import nibabel as nib

        self.path = str(path)
        try:
            img = nib.load(self.path)
        except Exception as e:  # nibabel raises many types for truncated or foreign files
            raise BundleInputError(
                self.path, f"cannot be read as NIfTI ({type(e).__name__}: {e})", "re-export it"
            ) from e
        if len(img.shape) not in (2, 3):
            raise BundleInputError(
                self.path, f"has shape {img.shape}, expected a 2D section or a 3D stack", "save one 3D volume"
            )
        self.shape = tuple(int(n) for n in reversed(img.shape))
        self.dtype, self.spacing = img.get_data_dtype(), _nifti_spacing(img)
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


def _nifti_header(shape: Sequence[int], dtype: np.dtype, spacing: Sequence[float] | None, reference: str | None):
    """The header of a NIfTI result of working-order ``shape`` ``(Z, Y, X)`` or ``(Y, X)``: ``reference``'s
    (affine, orientation codes, units; as MONAI's ``SaveImage`` keeps them) if it is a NIfTI file, else a
    NIfTI-1 header whose affine scales by ``spacing`` ``(z, y, x)``; intensity scaling off."""
    import nibabel as nib

    file_shape = tuple(int(n) for n in reversed(tuple(shape)))
    if reference is not None and image_suffix(reference) in NIFTI_SUFFIXES:
        source = nib.load(str(reference))
        header = source.header.copy()
    else:
        zooms = list(reversed(tuple(spacing)))[: len(file_shape)] if spacing else [1.0] * len(file_shape)
        affine = np.diag([*zooms, *[1.0] * (3 - len(zooms)), 1.0])
        header = nib.Nifti1Image(np.zeros((1,) * len(file_shape), np.uint8), affine).header
        header.set_xyzt_units("unknown")
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
    reference: str | None = None,
) -> None:
    """Write ``(Y, X)`` sections as they come into a NIfTI file (gzip-compressed for ``.nii.gz``), atomically,
    with the header of :func:`_nifti_header`. NIfTI's Fortran-order ``(X, Y, Z)`` puts each section's C-order
    ``(Y, X)`` bytes one after the other, so no more than one section is held."""
    import gzip

    header = _nifti_header(shape, dtype, spacing, reference)
    stored = header.get_data_dtype()  # with the header's byte order
    with atomic_path(path) as tmp, (
        gzip.open(tmp, "wb", compresslevel=6) if str(path).endswith(".gz") else open(tmp, "wb")
    ) as f:
        header.write_to(f)
        f.write(b"\0" * (int(header.get_data_offset()) - f.tell()))
        for section in sections:
            f.write(np.ascontiguousarray(section, dtype=stored).tobytes())


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


# ------------------------------------------------------------------------------------------------ whole stacks
def read_array(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """Read an image file as grey ``(Y, X)`` or ``(Z, Y, X)`` (``(X, Y, Z)`` for NIfTI) with its ``(z, y, x)``
    spacing (see the module docstring), with a clear error for missing, corrupt or unsupported files."""
    path = str(path)
    suffix = image_suffix(path)
    if _is_zarr_input(path):
        return read_zarr(path)
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
    """Read a 2D image or 3D stack as ``(Z, Y, X)``; NIfTI ``(X, Y, Z)`` (or ``(X, Y)``) is transposed, and
    restored in NIfTI results."""
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
    if image_suffix(path) in NIFTI_SUFFIXES:  # nibabel's (X, Y, Z) / (X, Y)
        layout = "xyz" if array.ndim == 3 else "xy"
        array = np.ascontiguousarray(array.T)
        return Stack(array if array.ndim == 3 else array[None], layout, spacing, path)
    if array.ndim == 2:
        return Stack(array[None], "yx", spacing, path)
    return Stack(array, "zyx", spacing, path)


# --------------------------------------------------------------------------------------- section by section
def _is_zarr_input(path: str | os.PathLike) -> bool:
    return image_suffix(path) in ZARR_SUFFIXES or os.path.isdir(path) and is_zarr(path)


def open_sections(path: str | os.PathLike) -> TiffSections | H5Sections | ZarrSections | NiftiSections:
    """A stack read section by section, with the sections :func:`read_stack` gives: :class:`H5Sections`,
    :class:`ZarrSections`, :class:`NiftiSections` or (any other file) :class:`TiffSections`."""
    if image_suffix(path) in HDF5_SUFFIXES:
        return H5Sections(path)
    if image_suffix(path) in NIFTI_SUFFIXES:
        return NiftiSections(path)
    if _is_zarr_input(path):
        return ZarrSections(path)
    return TiffSections(path)


def write_sections(
    path: str,
    sections: Iterator[np.ndarray],
    shape: Sequence[int],
    dtype: np.dtype,
    spacing: Sequence[float] | None = None,
    reference: str | None = None,
) -> None:
    """Write ``(Y, X)`` sections as they come, atomically, in the format of ``path``'s extension.

    Args:
        path: ``.tif``/``.tiff`` (zlib TIFF), ``.h5`` (dataset named after the file's ``_prob``/``_seg`` suffix,
            one section a chunk), ``.zarr`` (OME-Zarr, :func:`create_zarr`) or ``.nii``/``.nii.gz``.
        sections: the sections in working order, ``(Y, X)`` each.
        shape: the result's working-order shape: ``(Z, Y, X)``, or ``(Y, X)`` for one 2D image.
        dtype: the stored dtype.
        spacing: ``(z, y, x)`` voxel size, kept where the format has a place for it (HDF5 ``element_size_um``,
            OME-Zarr scale, NIfTI affine), or None.
        reference: the input image; a NIfTI input gives a NIfTI result its header (affine, orientation).
    """
    suffix = image_suffix(path)
    if suffix in HDF5_SUFFIXES:
        write_h5_sections(path, sections, shape, dtype, name=image_stem(path).rsplit("_", 1)[-1], spacing=spacing)
    elif suffix in ZARR_SUFFIXES:
        write_zarr_sections(path, sections, shape, dtype, spacing=spacing)
    elif suffix in NIFTI_SUFFIXES:
        write_nifti_sections(path, sections, shape, dtype, spacing=spacing, reference=reference)
    else:
        write_tiff_sections(path, sections, shape, dtype)


# ------------------------------------------------------------------------------------------------------ results
#: ``output_format`` values: "auto" writes NIfTI results for NIfTI inputs and OME-Zarr results for zarr inputs
#: (the input's own format: affine kept, volumes beyond memory stay chunked), TIFF for every other input.
OUTPUT_FORMATS = ("auto", "tif", "h5", "zarr", "nii.gz")
#: Every extension of image results: the formats, and ``nii`` for an uncompressed NIfTI input under "auto".
RESULT_EXTENSIONS = (*OUTPUT_FORMATS[1:], "nii")


def result_extension(image_path: str | os.PathLike, output_format: str = "auto") -> str:
    """The extension of the image results of ``image_path`` for ``output_format`` (:data:`OUTPUT_FORMATS`, checked
    by the callers where they read the setting): "auto" gives ``nii.gz``/``nii`` for NIfTI, ``zarr`` for zarr,
    ``tif`` for every other input; any other value is its own extension."""
    if output_format != "auto":
        return output_format
    suffix = image_suffix(image_path)
    if suffix in NIFTI_SUFFIXES:
        return suffix.lstrip(".")
    return "zarr" if _is_zarr_input(image_path) else "tif"


def write_result(
    output_dir: str | os.PathLike,
    image_path: str | os.PathLike,
    kind: str,
    sections: Iterator[np.ndarray],
    shape: Sequence[int],
    dtype: np.dtype,
    output_format: str = "auto",
    spacing: Sequence[float] | None = None,
) -> str:
    """Write one image result of ``image_path`` (``kind`` "_prob" or "_seg") from its ``(Y, X)`` sections as they
    come: the one writer of whole-volume (``scripts.writers``) and streamed (``scripts.streaming``) results.

    The file is ``<output_dir>/<stem><kind>.<ext>`` (``scripts.outputs.result_path``, :func:`result_extension`),
    written atomically by :func:`write_sections`. Its axis order is the format's: ``(Z, Y, X)`` (or ``(Y, X)``)
    for TIFF, HDF5 and zarr, NIfTI's ``(X, Y, Z)`` for NIfTI, so a result in the input's format has the input's
    shape and axis order.

    Returns:
        the path written.
    """
    path = result_path(output_dir, image_stem(image_path), kind, result_extension(image_path, output_format))
    write_sections(path, sections, shape, dtype, spacing=spacing, reference=str(image_path))
    return path
