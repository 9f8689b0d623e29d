# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""TIFF, OME-TIFF and ImageJ TIFF through tifffile (compressed TIFFs through imagecodecs).

Every page of every series is a section (a file written page by page, ``tifffile.imwrite(p, page, append=True)``,
is one stack, as Fiji opens it). Colour becomes grey: RGB (contiguous or planar), YCbCr and palette images become
one grey channel (ITU-R BT.601 luma, float32, with a warning); grey images with extra samples (alpha) keep their
grey; MinIsWhite images are inverted back. OME/ImageJ axes are honoured: a channel axis with more than one channel
is refused (the channel to segment must be chosen), any other non-spatial axis (Z, T, Q, ...) holds the sections;
reduced-resolution previews are skipped.

Stacks as their writer meant them: ``tifffile.imwrite(path, stack)`` stores a ``(3, Y, X)`` or ``(4, Y, X)`` array
of any dtype as one planar RGB page (tifffile's default until it changes to grey pages) and describes it as shape
``[3, Y, X]``; ``tifffile.imread`` gives the array back, so the bundle reads 3 or 4 sections too. The rule: a planar
RGB page whose tifffile description gives its samples as the first axis of a 3D shape (or names them Z, T, ...
with ``metadata={"axes": ...}``) is a stack. Planar RGB that other writers made (no tifffile description),
interleaved RGB ``(Y, X, 3)``, JPEG/YCbCr and palette images are colour.

The pixel size (:func:`tiff_pixel_size`) comes from OME PhysicalSizeX/Y/Z, else ImageJ's ``unit``/``spacing`` with
the resolution tags, else the resolution tags with ResolutionUnit centimetre or inch; screen defaults and unit-less
tags are no pixel size. Results carry theirs as resolution tags in centimetres, with the section spacing in
tifffile's description (``pixel_size_nm``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import BundleInputError
from ..outputs import atomic_path
from .common import Image, OpenFileReader, Spacing, fail_on_warnings, luma, unreadable
from .pixel_size import UNIT_NM, PixelSize, is_screen_default, make_pixel_size, unit_nm

TIFF_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff")
BIGTIFF_BYTES = 2**32 - 2**25  # classic TIFF offsets are 32-bit; leave room for the page tables
#: tifffile's description key in which results keep their ``(z, y, x)`` pixel size in nm (TIFF tags have no z).
PIXEL_SIZE_KEY = "pixel_size_nm"

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- pixel size
def tiff_spacing(tif) -> Spacing | None:
    """``(z, y, x)`` voxel size of an open ``tifffile.TiffFile`` from its resolution tags, in the tags' own unit
    (None if unset)."""
    tags = tif.pages[0].tags
    if "XResolution" in tags and "YResolution" in tags:
        xr, yr = tags["XResolution"].value, tags["YResolution"].value
        if xr[0] and yr[0] and (xr != (1, 1) or yr != (1, 1)):
            z = float(tif.imagej_metadata.get("spacing", 1.0)) if tif.imagej_metadata else 1.0
            return (z, yr[1] / yr[0], xr[1] / xr[0])
    return None


def _resolution(tif) -> tuple[float, float] | None:
    """``(y, x)`` pixels per unit from the first page's resolution tags, or None if missing or zero."""
    tags = tif.pages[0].tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    (xn, xd), (yn, yd) = tags["XResolution"].value, tags["YResolution"].value
    if not (xn and xd and yn and yd):
        return None
    return (yn / yd, xn / xd)


def _ome_pixel_size(tif) -> PixelSize | None:
    """OME-XML ``Pixels`` PhysicalSizeX/Y/Z with their units (the OME schema's default unit is µm)."""
    try:
        root = ElementTree.fromstring(tif.ome_metadata)
    except (ElementTree.ParseError, TypeError, ValueError):
        return None
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    units = {a: unit_nm(pixels.get(f"PhysicalSize{a}Unit", "µm")) for a in "XYZ"}
    sizes = {a: pixels.get(f"PhysicalSize{a}") for a in "XYZ"}
    if units["X"] is None or units["Y"] is None or units["X"] != units["Y"]:
        return None
    z_unit = units["Z"] if sizes["Z"] is not None else None
    unit = pixels.get("PhysicalSizeXUnit", "µm")
    axes = "X/Y/Z" if sizes["Z"] is not None and z_unit is not None else "X/Y"
    source = f"OME PhysicalSize{axes} ({unit})"
    return make_pixel_size((sizes["Z"] if z_unit else None, sizes["Y"], sizes["X"]), units["X"], source, z_unit)


def _imagej_pixel_size(tif, resolution: tuple[float, float] | None) -> PixelSize | None:
    """ImageJ/Fiji: the resolution tags count pixels per ``unit`` (``yunit``/``zunit`` where they differ), and
    ``spacing`` is the section spacing in ``zunit`` (else ``unit``)."""
    meta = tif.imagej_metadata or {}
    unit = meta.get("unit")
    x_unit = unit_nm(unit)
    if x_unit is None or resolution is None or is_screen_default(resolution, x_unit):
        return None
    y_unit = unit_nm(meta.get("yunit", unit)) or x_unit
    z_unit = unit_nm(meta.get("zunit", unit)) or x_unit
    nm = (1.0 / resolution[0] * y_unit, 1.0 / resolution[1] * x_unit)
    return make_pixel_size((meta.get("spacing"), *nm), 1.0, f"ImageJ unit {unit!r}", z_unit)


def _tag_pixel_size(tif, resolution: tuple[float, float] | None) -> PixelSize | None:
    """Resolution tags in pixels per centimetre or inch (TIFF's default unit when ResolutionUnit is absent); a
    unit-less tag (ResolutionUnit NONE) or a screen/print default is no pixel size."""
    if resolution is None:
        return None
    tags = tif.pages[0].tags
    code = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    unit = {2: "inch", 3: "cm"}.get(code)
    if unit is None or is_screen_default(resolution, UNIT_NM[unit]):
        return None
    pixel_size = make_pixel_size((None, 1.0 / resolution[0], 1.0 / resolution[1]), UNIT_NM[unit], "")
    if pixel_size is None:
        return None
    z, source = None, f"TIFF resolution tags ({unit})"
    described = _described(tif.pages[0]).get(PIXEL_SIZE_KEY)
    if isinstance(described, list) and len(described) == 3 and described[0]:
        z, source = float(described[0]), f"{source}, sections from the description"
    return PixelSize((z, *pixel_size.yx), source)


def tiff_pixel_size(tif) -> PixelSize | None:
    """The pixel size of an open ``tifffile.TiffFile`` in nm: OME PhysicalSize, else ImageJ ``unit``, else the
    resolution tags with their ResolutionUnit (see the module docstring); None if none of them gives one."""
    resolution = _resolution(tif)
    if tif.is_ome:
        found = _ome_pixel_size(tif)
        if found is not None:
            return found
    if tif.is_imagej:
        found = _imagej_pixel_size(tif, resolution)
        if found is not None:
            return found
    return _tag_pixel_size(tif, resolution)


def read_tiff_pixel_size(path: str) -> PixelSize | None:
    """:func:`tiff_pixel_size` of the file at ``path`` (its tags and descriptions only)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return tiff_pixel_size(tif)


# ------------------------------------------------------------------------------------------- series as sections
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


def _described(page) -> dict:
    """tifffile's own JSON description of a page (``{"shape": [...], ...}``), or {} if it has none."""
    description = getattr(page, "description", "") or ""
    if not description.startswith("{"):
        return {}
    try:
        described = json.loads(description)
    except ValueError:
        return {}
    return described if isinstance(described, dict) else {}


def _is_tifffile_stack(series, keyframe, axes: str, shape: tuple[int, ...]) -> bool:
    """Whether a planar RGB series is in truth a stack that ``tifffile.imwrite(path, stack)`` stored as colour
    (its default for ``(3|4, Y, X)`` arrays): one page, described by tifffile as shape ``[S, Y, X]``, or with the
    samples named a section axis (``metadata={"axes": "ZYX"}``)."""
    planar = getattr(keyframe.planarconfig, "name", str(keyframe.planarconfig)) == "SEPARATE"
    if not planar or len(series.pages) != 1 or not getattr(series.parent, "is_shaped", False):
        return False
    described = _described(keyframe).get("shape")
    samples = int(keyframe.samplesperpixel)
    if "S" not in axes:  # the writer named the axis: Z, T, Q, ...
        return True
    return axes == "SYX" and described == list(shape) and shape[0] == samples


def _tiff_series(tif, path: str) -> list[_TiffSeries]:
    """The series of an open TIFF file that hold sections (previews skipped), checked to form one stack."""
    parts: list[_TiffSeries] = []
    candidates = list(enumerate(tif.series))
    full = [(i, s) for i, s in candidates if not getattr(s.keyframe, "is_reduced", False)]
    for index, series in full or candidates:
        axes, shape = series.axes.upper(), tuple(int(n) for n in series.shape)
        keyframe = series.keyframe
        photometric = getattr(keyframe.photometric, "name", str(keyframe.photometric))
        if photometric == "RGB" and _is_tifffile_stack(series, keyframe, axes, shape):
            photometric, axes = "MINISBLACK", axes.replace("S", "Q")
            logger.info("%s: %d sections stored as planar RGB by tifffile, read as sections", path, shape[0])
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


def read_tiff(path: str) -> Image:
    """The whole TIFF stack of ``path`` as grey ``(Z, Y, X)`` (``(Y, X)`` for one 2D image)."""
    import tifffile

    with fail_on_warnings("tifffile"), tifffile.TiffFile(path) as tif:
        parts = _tiff_series(tif, path)
        stacks = [part.grey(tif.asarray(series=part.index), part.axes, path) for part in parts]
        array = stacks[0] if len(stacks) == 1 else np.concatenate(stacks)
        for part in parts:
            if part.photometric in ("RGB", "YCBCR", "PALETTE"):
                logger.warning("%s: colour image (%s) read as grey (ITU-R BT.601 luma)", path, part.photometric)
                break
        return Image(array[0] if _is_2d(parts) else array, tiff_spacing(tif), tiff_pixel_size(tif))


class TiffSections(OpenFileReader):
    """A TIFF stack read one ``(Y, X)`` section at a time: exactly the sections :func:`read_tiff` reads (every
    page of every series, grey, MinIsWhite inverted), without reading the others.

    Attributes:
        path: the file.
        shape: the stack's shape as results are written: ``(Z, Y, X)``, or ``(Y, X)`` for a single 2D image.
        dtype: the sections' dtype.
        spacing: ``(z, y, x)`` voxel size in the file's units, or None.
        pixel_size: the pixel size in nm (:func:`tiff_pixel_size`), or None.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import tifffile

        self.path = str(path)
        if not self.path.lower().endswith(TIFF_SUFFIXES):
            raise BundleInputError(
                self.path,
                "streaming reads TIFF, HDF5, NIfTI, MRC and zarr stacks only",
                "convert it to a multi-page TIFF, HDF5 or OME-Zarr, or use configs/inference.json",
            )
        if not os.path.isfile(self.path) or os.path.getsize(self.path) == 0:
            raise BundleInputError(self.path, "file not found or empty", "check the path or re-copy the stack")
        try:
            with fail_on_warnings("tifffile"), tifffile.TiffFile(self.path) as tif:
                self.parts = _tiff_series(tif, self.path)
                self.spacing, self.pixel_size = tiff_spacing(tif), tiff_pixel_size(tif)
        except BundleInputError:
            raise
        except Exception as e:  # tifffile raises many types for corrupt files
            raise unreadable(self.path, "a TIFF", e) from e
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
            with fail_on_warnings("tifffile"):
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


# ---------------------------------------------------------------------------------------------------- writing
def _tags(pixel_size: PixelSize | None) -> dict:
    """tifffile.imwrite's arguments that store ``pixel_size``: resolution tags in pixels per centimetre (what
    Fiji, napari and most readers take), and the whole ``(z, y, x)`` in nm in tifffile's description."""
    if pixel_size is None:
        return {}
    y, x = pixel_size.yx
    cm = UNIT_NM["cm"]
    return {
        "resolution": (cm / x, cm / y),
        "resolutionunit": "CENTIMETER",
        "metadata": {PIXEL_SIZE_KEY: list(pixel_size.nm)},
    }


def write_tiff(path: str | os.PathLike, array: np.ndarray, pixel_size: PixelSize | None = None) -> None:
    """Write ``array`` as a (multi-page) zlib-compressed grey TIFF, atomically, with ``pixel_size`` if given."""
    import tifffile

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, array, compression="zlib", photometric="minisblack", **_tags(pixel_size))


def write_tiff_sections(
    path: str,
    sections: Iterator[np.ndarray],
    shape: Sequence[int],
    dtype: np.dtype,
    spacing: Sequence[float] | None = None,
    pixel_size: PixelSize | None = None,
    reference: str | None = None,
) -> None:
    """Write ``(Y, X)`` sections as they come into one zlib-compressed TIFF series of ``shape``, atomically
    (BigTIFF when the data would not fit classic TIFF's 4 GB), with ``pixel_size`` as resolution tags in cm.
    A ``spacing`` of unknown unit is not written (TIFF's units are lengths); ``reference`` is unused."""
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
            **_tags(pixel_size),
        )
