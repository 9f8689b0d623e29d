# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""zarr and OME-Zarr folders (a ``*.zarr`` folder is one image), through zarr-python 3 or 2.

- Read: OME-Zarr 0.5 (zarr v3: ``zarr.json``, metadata under the ``"ome"`` attribute) and 0.1-0.4 (zarr v2:
  ``.zgroup``/``.zarray``, metadata in ``"multiscales"``): the first (highest-resolution) dataset of
  ``multiscales[0]``, opened lazily (nothing is read until it is indexed, so Dask workers and the streaming reader
  take chunks one by one); time/channel axes of size 1 are dropped, larger ones refused. A plain zarr array, or a
  group holding one 2D/3D array (or one named ``volume``, ``raw``, ``data`` or ``image``), is read like HDF5.
- Spacing: the dataset's "scale" (times the multiscale's). Pixel size: that scale where the axes carry a length
  "unit" (nanometer, micrometer, angstrom, ...); a scale without unit is no pixel size. Plain arrays: the HDF5
  attributes (``element_size_um``, ``resolution``).
- Write (:func:`create_zarr`): an OME-Zarr image group with one dataset "0".

zarr-python 3 reads and writes both zarr formats; zarr-python 2 (the only zarr for Python 3.10, where the MONAI
model zoo installs bundles) reads and writes zarr v2, i.e. OME-Zarr up to 0.4, and refuses 0.5 with a message.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import BundleInputError
from ..outputs import make_output_folder, temporary_prefix
from .common import Image, OpenFileReader, Spacing, check_not_empty, unreadable
from .hdf5 import PREFERRED_NAMES, attribute_pixel_size, dataset_spacing
from .pixel_size import PixelSize, unit_nm

ZARR_SUFFIXES = (".ome.zarr", ".zarr")  # folders, not files
#: Non-spatial OME-NGFF axes (time, channel, ...) may have size 1 only; they are dropped from the view read.
SPATIAL_AXES = ("z", "y", "x")
ZARR_CHUNK_SIDE = 1024  # default chunks: one section per chunk, at most 1024 x 1024 pixels
#: OME-Zarr versions results can be written in. 0.4 (zarr v2) is the default: every OME-Zarr reader opens it
#: (napari, Fiji/MoBIE, neuroglancer, ome-zarr-py, bioio, and zarr-python 2, the only zarr on Python 3.10, where
#: the model zoo runs bundles); 0.5 (zarr v3) needs zarr-python 3 in the reader too. "auto" results of a 0.5 input
#: are 0.5 (the user's tools read it); ``--output_format ome-zarr-0.5`` asks for it for any input.
NGFF_VERSIONS = ("0.4", "0.5")
DEFAULT_NGFF_VERSION = "0.4"
#: The OME-Zarr "unit" of written scales (UDUNITS-2, as OME-NGFF asks).
NGFF_UNIT = "nanometer"


def zarr_python() -> int:
    """The major version of the installed zarr-python (2 or 3)."""
    import zarr

    return int(zarr.__version__.split(".", 1)[0])


def is_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr array or group: a folder with ``.zarray`` or ``.zgroup`` (zarr v2) or
    ``zarr.json`` (zarr v3)."""
    return any(os.path.isfile(os.path.join(path, name)) for name in (".zarray", ".zgroup", "zarr.json"))


def _is_v3(path: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(path, "zarr.json"))


def _open(path: str, writable: bool = False):
    """The zarr group or array at ``path`` (either zarr format under zarr-python 3)."""
    import zarr

    mode = "r+" if writable else "r"
    if zarr_python() >= 3:
        return zarr.open(store=path, mode=mode)
    if _is_v3(path):
        raise BundleInputError(
            path,
            "is a zarr v3 store (OME-Zarr 0.5), which zarr-python 2 cannot read",
            "install zarr 3 (Python >= 3.11: pip install -r requirements.txt), or convert it to OME-Zarr 0.4",
        )
    return zarr.open(zarr.storage.DirectoryStore(path), mode=mode)


def _attributes(node) -> dict:
    return dict(node.attrs.asdict() if hasattr(node.attrs, "asdict") else node.attrs)


def _multiscales(node) -> tuple[list, str | None]:
    """The OME-Zarr multiscales of a group and their version: 0.5 keeps them under ``"ome"``, 0.1-0.4 at the
    top of the attributes (version in each multiscale)."""
    attrs = _attributes(node)
    if isinstance(attrs.get("ome"), dict):
        ome = attrs["ome"]
        return list(ome.get("multiscales") or []), str(ome.get("version", "0.5"))
    multiscales = list(attrs.get("multiscales") or [])
    version = multiscales[0].get("version") if multiscales and isinstance(multiscales[0], dict) else None
    return multiscales, None if version is None else str(version)


def _arrays(group) -> list[tuple[str, object]]:
    """Every array in a zarr group and its sub-groups, with its path."""
    import zarr

    if zarr_python() >= 3:
        return [(name, node) for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array)]
    return list(group.arrays(recurse=True))


def _ngff_axes(multiscale: dict, ndim: int) -> list[str]:
    """The axis names of an OME-NGFF multiscale (0.4/0.5: dicts with "name"; 0.3: names), lower case; 0.1/0.2 had
    no axes and were always ``t, c, z, y, x``."""
    axes = multiscale.get("axes")
    if axes is None:
        return ["t", "c", "z", "y", "x"][-ndim:]
    return [str(a["name"] if isinstance(a, dict) else a).lower() for a in axes]


def _ngff_units(multiscale: dict, ndim: int) -> list[str | None]:
    """The "unit" of each axis of an OME-NGFF multiscale (None where it has none)."""
    axes = multiscale.get("axes") or [None] * ndim
    return [a.get("unit") if isinstance(a, dict) else None for a in axes]


def _ngff_scale(multiscale: dict, dataset: dict, ndim: int) -> list[float] | None:
    """The voxel size of one multiscale dataset: its "scale" transformations times the multiscale's own."""
    scales = [
        t["scale"]
        for t in list(dataset.get("coordinateTransformations", []))
        + list(multiscale.get("coordinateTransformations", []))
        if t.get("type") == "scale" and len(t.get("scale", [])) == ndim
    ]
    return [float(np.prod([s[i] for s in scales])) for i in range(ndim)] if scales else None


class ZarrImage(NamedTuple):
    """The image array of a zarr store and what its metadata say about it.

    Attributes:
        array: the (highest-resolution) image array, all its axes.
        axes: their names ("t", "c", "z", "y", "x", ...), or [] where the array is not 2D/3D and says nothing.
        scale: the voxel size along each axis, or None.
        units: the length unit of each axis (None where none).
        version: the OME-Zarr version, or None for a plain array or group.
        pixel_size: plain arrays' attribute pixel size (HDF5's conventions), else None.
    """

    array: object
    axes: list[str]
    scale: list[float] | None
    units: list[str | None]
    version: str | None
    pixel_size: PixelSize | None = None


def _zarr_image(path: str, writable: bool = False) -> ZarrImage:
    """The highest-resolution image array of a zarr store and its metadata."""
    import zarr

    if not is_zarr(path):
        raise BundleInputError(
            path, "is not a zarr array or group (no zarr.json, .zarray or .zgroup in it)", "check the path"
        )
    node = _open(path, writable)
    if isinstance(node, zarr.Array):
        return _plain(node)
    multiscales, version = _multiscales(node)
    if multiscales:
        multiscale = multiscales[0]
        dataset = multiscale["datasets"][0]
        array = node[dataset["path"]]
        ndim = array.ndim
        axes, units = _ngff_axes(multiscale, ndim), _ngff_units(multiscale, ndim)
        return ZarrImage(array, axes, _ngff_scale(multiscale, dataset, ndim), units, version or "0.4")
    arrays = [(name, a) for name, a in _arrays(node) if a.ndim in (2, 3) and a.dtype.kind in "biuf"]
    preferred = [(name, a) for name, a in arrays if name.rsplit("/", 1)[-1] in PREFERRED_NAMES]
    for found in (arrays, preferred):
        if len(found) == 1:
            return _plain(found[0][1])
    problem = f"is a zarr group without OME-NGFF multiscales and {'no' if not arrays else 'several'} 2D/3D arrays"
    raise BundleInputError(
        path, problem, f"pass the array's own folder, or name it one of {', '.join(PREFERRED_NAMES)}"
    )


def _plain(array) -> ZarrImage:
    """A plain zarr array: ``(z, y, x)`` or ``(y, x)``, with HDF5's voxel size attributes."""
    axes = ["z", "y", "x"][-array.ndim :] if array.ndim in (2, 3) else []
    spacing = dataset_spacing(array)
    scale = list(spacing[-array.ndim :]) if spacing and axes else None
    return ZarrImage(array, axes, scale, [None] * array.ndim, None, attribute_pixel_size(array.attrs, "zarr"))


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
    return keep


class SpatialView:
    """A read-only, lazy view of a zarr array without some of its size-1 axes (OME-Zarr's time and channel):
    indexing it indexes the array with 0 on those axes, so only the chunks asked for are read. It has the
    ``shape``, ``chunks``, ``dtype`` and ``ndim`` Dask and the section readers use, and pickles with the array."""

    def __init__(self, array, keep: Sequence[bool]) -> None:
        self.array, self.keep = array, tuple(bool(k) for k in keep)
        self.shape = tuple(int(n) for n, k in zip(array.shape, self.keep) if k)
        self.chunks = tuple(int(n) for n, k in zip(array.chunks, self.keep) if k)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1 :]
        key = iter(key + (slice(None),) * (self.ndim - len(key)))
        return np.asarray(self.array[tuple(next(key) if k else 0 for k in self.keep)])

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)


def open_zarr(path: str | os.PathLike, writable: bool = False):
    """Open a zarr image lazily (nothing is read until it is indexed).

    ``path`` is a plain zarr array, an OME-Zarr group (OME-NGFF 0.1-0.5: the first, highest-resolution dataset of
    ``multiscales[0]``) or a zarr group holding one 2D/3D array (or one named ``volume``, ``raw``, ``data`` or
    ``image``, as for HDF5).

    Args:
        writable: open for writing (the bundle's own results, e.g. blocks written by Dask workers).

    Returns:
        a ``zarr.Array`` (read-only unless ``writable``) of shape ``(Z, Y, X)`` or ``(Y, X)``, or, for OME-Zarr
        with time and channel axes of size 1 (e.g. bioformats2raw's ``(t, c, z, y, x)``), a read-only
        :class:`SpatialView` without them. A time or channel axis of more than one is refused
        (``BundleInputError`` naming the file and the fix), as are plain arrays that are not 2D or 3D.
    """
    path = str(path)
    image = _describe(path, writable)
    keep = _spatial(path, image.array, image.axes)
    array = image.array if all(keep) else SpatialView(image.array, keep)
    check_not_empty(array.shape, path)
    return array


def _describe(path: str, writable: bool = False) -> ZarrImage:
    """:func:`_zarr_image` with the errors a user can act on."""
    try:
        image = _zarr_image(path, writable)
    except BundleInputError:
        raise
    except Exception as e:  # zarr and json raise many types for broken metadata
        raise unreadable(path, "zarr", e) from e
    if not image.axes:
        raise BundleInputError(
            path,
            f"is a zarr array of shape {image.array.shape}, expected (Z, Y, X) or (Y, X)",
            "save a single-channel stack",
        )
    return image


def _spacing(image: ZarrImage) -> Spacing | None:
    if image.scale is None:
        return None
    spatial = {a: s for a, s in zip(image.axes, image.scale) if a in SPATIAL_AXES}
    return (spatial.get("z", 1.0), spatial["y"], spatial["x"])


def _pixel_size(image: ZarrImage) -> PixelSize | None:
    """The OME-Zarr scale in nm where the y and x axes have a length unit (z where it has one too)."""
    if image.version is None:
        return image.pixel_size
    if image.scale is None:
        return None
    nm = {
        a: (s * unit_nm(u) if unit_nm(u) is not None and s > 0 else None)
        for a, s, u in zip(image.axes, image.scale, image.units)
    }
    if nm.get("y") is None or nm.get("x") is None:
        return None
    units = sorted({str(u) for a, u in zip(image.axes, image.units) if a in SPATIAL_AXES and unit_nm(u)})
    return PixelSize((nm.get("z"), nm["y"], nm["x"]), f"OME-Zarr {image.version} scale ({', '.join(units)})")


def zarr_spacing(path: str | os.PathLike) -> Spacing | None:
    """The ``(z, y, x)`` voxel size of the zarr image :func:`open_zarr` opens: the OME-NGFF "scale" of its dataset
    (times the multiscale's), or a plain array's ``element_size_um``/``resolution`` attribute; ``z`` is 1.0 for a
    2D image. None if the file does not say."""
    return _spacing(_describe(str(path)))


def zarr_pixel_size(path: str | os.PathLike) -> PixelSize | None:
    """The pixel size in nm of the zarr image :func:`open_zarr` opens (its metadata only), or None."""
    return _pixel_size(_describe(str(path)))


def zarr_ngff_version(path: str | os.PathLike) -> str | None:
    """The OME-Zarr version of the image at ``path`` ("0.4", "0.5", ...), or None for a plain zarr array."""
    return _describe(str(path)).version


def read_zarr(path: str) -> Image:
    """The whole zarr image of ``path`` (:func:`open_zarr`), its ``(z, y, x)`` spacing and pixel size."""
    image = _describe(path)
    keep = _spatial(path, image.array, image.axes)
    array = image.array if all(keep) else SpatialView(image.array, keep)
    check_not_empty(array.shape, path)
    return Image(np.asarray(array[...]), _spacing(image), _pixel_size(image))


class ZarrSections(OpenFileReader):
    """A zarr / OME-Zarr image (:func:`open_zarr`) read a section (or a range of sections) at a time; the same
    interface as ``TiffSections``.

    Attributes:
        path: the zarr folder.
        shape: ``(Z, Y, X)``, or ``(Y, X)`` for a single image.
        dtype: its dtype.
        spacing: ``(z, y, x)`` voxel size (:func:`zarr_spacing`), or None.
        pixel_size: the pixel size in nm (:func:`zarr_pixel_size`), or None.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        image = _describe(self.path)
        self.array = open_zarr(self.path)
        self.shape, self.dtype = tuple(self.array.shape), self.array.dtype
        self.spacing, self.pixel_size = _spacing(image), _pixel_size(image)

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Only the chunks that hold sections ``start .. stop - 1``."""
        try:
            return np.asarray(self.array[start:stop] if len(self.shape) == 3 else self.array[...][None])
        except Exception as e:  # missing or corrupt chunk files
            raise BundleInputError(
                self.path,
                f"sections {start}..{stop - 1} cannot be read ({type(e).__name__}: {e})",
                "the store is incomplete; re-export it",
            ) from e


# ---------------------------------------------------------------------------------------------------- writing
def zarr_temporary(path: str | os.PathLike) -> str:
    """Where :func:`create_zarr` writes ``path`` until :func:`finalize_zarr`: a hidden folder beside it named as
    ``scripts.outputs.atomic_path`` names temporaries, so the next run removes it if this process is killed (its
    copy of the name cut where the file system's limit needs it: ``scripts.outputs.temporary_prefix``)."""
    path = Path(path)
    return str(path.parent / f"{temporary_prefix(path, len('zarr.part'))}zarr.part")


def _scale_and_axes(
    ndim: int, spacing: Sequence[float] | None, pixel_size: PixelSize | None
) -> tuple[list[float], list[dict]]:
    """The "scale" and "axes" of a written image: ``pixel_size`` in nanometres with the unit on the axes it
    knows, else ``spacing`` (unit unknown: no unit), else ones."""
    names = list(SPATIAL_AXES[-ndim:])
    axes: list[dict] = [{"name": a, "type": "space"} for a in names]
    if pixel_size is not None:
        known = list(pixel_size.nm[-ndim:])
        for axis, value in zip(axes, known):
            if value is not None:
                axis["unit"] = NGFF_UNIT
        return [1.0 if v is None else float(v) for v in known], axes
    return ([1.0] * ndim if spacing is None else [float(s) for s in tuple(spacing)[-ndim:]]), axes


def create_zarr(
    path: str | os.PathLike,
    shape: Sequence[int],
    dtype: np.dtype | str,
    chunks: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    pixel_size: PixelSize | None = None,
    ngff_version: str | None = None,
):
    """Create an OME-Zarr image to be written chunk by chunk; returns its writable ``zarr.Array``.

    The group holds one dataset "0" of ``shape`` ``(Z, Y, X)`` (axes z, y, x) or ``(Y, X)`` (axes y, x) and
    ``dtype``, compressed (zarr's default codec), with ``chunks`` (default one section per chunk, at most
    1024 x 1024 pixels: ``(1, min(Y, 1024), min(X, 1024))``) and a "scale" transformation: ``pixel_size`` in
    nanometres with unit "nanometer" on the axes it knows, else ``spacing`` ``(z, y, x)`` without unit, else 1.0.

    Args:
        ngff_version: "0.4" (zarr v2, "/" chunk keys as NGFF 0.4 asks; the default, :data:`DEFAULT_NGFF_VERSION`,
            which every reader opens) or "0.5" (zarr v3, metadata under "ome", the arrays' dimension names; needs
            zarr-python 3).

    Nothing appears at ``path`` until :func:`finalize_zarr` ``(path)`` renames the finished folder into place:
    it is written at :func:`zarr_temporary` ``(path)`` (readable by other processes, e.g. Dask workers, which get
    the returned array pickled). A run killed before that leaves only the hidden temporary, which
    ``scripts.outputs.remove_stale_temporaries`` removes at the next start; :func:`discard_zarr` removes it on
    an error.
    """
    import zarr

    version = ngff_version or DEFAULT_NGFF_VERSION
    if version not in NGFF_VERSIONS:
        raise ValueError(f"unknown OME-Zarr version {version!r}, expected one of {NGFF_VERSIONS}")
    if version == "0.5" and zarr_python() < 3:
        raise BundleInputError(
            path,
            "OME-Zarr 0.5 (zarr v3) cannot be written with zarr-python 2",
            "install zarr 3 (Python >= 3.11: pip install -r requirements.txt), or use --output_format zarr (0.4)",
        )
    path = Path(path)
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"an OME-Zarr image is (Z, Y, X) or (Y, X), got shape {shape}")
    if chunks is None:
        plane = tuple(min(n, ZARR_CHUNK_SIDE) for n in shape[-2:])
        chunks = (1, *plane) if len(shape) == 3 else plane
    scale, axes = _scale_and_axes(len(shape), spacing, pixel_size)
    stem = path.name[: -len(next((s for s in ZARR_SUFFIXES if path.name.endswith(s)), ""))] or path.name
    multiscale = {
        "name": stem,
        "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
    }
    make_output_folder(path.parent)
    tmp = zarr_temporary(path)
    discard_zarr(path)
    try:
        if zarr_python() < 3:
            root = zarr.open_group(zarr.storage.DirectoryStore(tmp, dimension_separator="/"), mode="w")
            array = root.create_dataset("0", shape=shape, chunks=tuple(chunks), dtype=dtype, dimension_separator="/")
            root.attrs["multiscales"] = [{"version": version, **multiscale}]
        elif version == "0.4":
            root = zarr.open_group(tmp, mode="w", zarr_format=2)
            encoding = {"name": "v2", "separator": "/"}
            array = root.create_array("0", shape=shape, chunks=tuple(chunks), dtype=dtype, chunk_key_encoding=encoding)
            root.attrs["multiscales"] = [{"version": version, **multiscale}]
        else:
            root = zarr.open_group(tmp, mode="w", zarr_format=3)
            names = [a["name"] for a in axes]
            array = root.create_array("0", shape=shape, chunks=tuple(chunks), dtype=dtype, dimension_names=names)
            root.attrs["ome"] = {"version": version, "multiscales": [multiscale]}
    except OSError as e:
        discard_zarr(path)
        raise BundleInputError(path, f"could not be written ({e.strerror})", "choose a writable --output_dir") from e
    return array


def finalize_zarr(path: str | os.PathLike) -> str:
    """Move the image :func:`create_zarr` ``(path)`` wrote (in this process) into place at ``path``, replacing an
    older result of that name; returns ``path``."""
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
    shutil.rmtree(zarr_temporary(path), ignore_errors=True)


def write_zarr_sections(
    path: str,
    sections: Iterator[np.ndarray],
    shape: Sequence[int],
    dtype: np.dtype,
    spacing: Sequence[float] | None = None,
    pixel_size: PixelSize | None = None,
    reference: str | None = None,
    ngff_version: str | None = None,
) -> None:
    """Write ``(Y, X)`` sections as they come into a new OME-Zarr image (:func:`create_zarr`), atomically.

    Args:
        reference: the input image; where ``ngff_version`` is None, a result of an OME-Zarr 0.5 input is 0.5 too,
            every other one :data:`DEFAULT_NGFF_VERSION`.
    """
    if ngff_version is None and reference is not None and is_zarr(reference) and _is_v3(reference):
        ngff_version = "0.5" if zarr_python() >= 3 else None
    array = create_zarr(path, shape, dtype, spacing=spacing, pixel_size=pixel_size, ngff_version=ngff_version)
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
