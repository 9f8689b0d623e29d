# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""HDF5 through h5py: the file's only 2D/3D numeric dataset, or the one named ``volume``, ``raw``, ``data`` or
``image`` (the names connectomics tools use).

Voxel size attributes of a dataset (HDF5 has no standard; these are the two conventions in use, also read from
plain zarr arrays):

- ``element_size_um``: ``(z, y, x)`` (or ``(y, x)``) in micrometres, as ilastik and Fiji's HDF5 plugin write it.
- ``resolution``: ``(z, y, x)`` in nanometres, as CREMI and most connectomics tools write it, unless a ``unit`` or
  ``units`` attribute of the dataset names another unit; all ones is a placeholder, not a pixel size.

Results keep their pixel size as ``element_size_um``; a spacing of unknown unit is kept as ``spacing``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from ..errors import BundleInputError
from ..outputs import atomic_path
from .common import Image, OpenFileReader, Spacing, check_not_empty, unreadable
from .pixel_size import UNIT_NM, PixelSize, make_pixel_size, unit_nm

HDF5_SUFFIXES = (".h5", ".hdf5")
PREFERRED_NAMES = ("volume", "raw", "data", "image")
#: Attributes whose values are a voxel size (in this order of preference); "spacing" is the bundle's own, unit-less.
SPACING_ATTRIBUTES = ("element_size_um", "resolution", "spacing")


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


def _numbers(value: object) -> list[float] | None:
    try:
        numbers = [float(v) for v in np.asarray(value).ravel()]
    except (TypeError, ValueError):
        return None
    return numbers


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.ravel()[0])
    return value if isinstance(value, str) else None


def dataset_spacing(dataset) -> Spacing | None:
    """``(z, y, x)`` voxel size from an h5py dataset's (or zarr array's) ``element_size_um``, ``resolution`` or
    ``spacing`` attribute, in that attribute's unit, or None."""
    for key in SPACING_ATTRIBUTES:
        values = _numbers(dataset.attrs[key]) if key in dataset.attrs else None
        if values is not None and len(values) == 3:
            return tuple(values)  # type: ignore[return-value]
    return None


def attribute_pixel_size(attrs: Mapping, kind: str = "HDF5") -> PixelSize | None:
    """The pixel size given by the attributes ``attrs`` of an HDF5 dataset (or a ``kind`` array, e.g. "zarr"; see
    the module docstring), or None."""
    if "element_size_um" in attrs:
        values = _numbers(attrs["element_size_um"])
        if values is not None:
            return make_pixel_size(values, UNIT_NM["µm"], f"{kind} element_size_um (µm)")
    if "resolution" in attrs:
        values = _numbers(attrs["resolution"])
        unit = next((_text(attrs[k]) for k in ("unit", "units") if k in attrs), None)
        if values is None or all(v == 1.0 for v in values):
            return None
        if unit is None:
            return make_pixel_size(values, 1.0, f"{kind} resolution (nm, as CREMI writes it)")
        return make_pixel_size(values, unit_nm(unit), f"{kind} resolution ({unit})")
    return None


def read_h5(path: str) -> Image:
    """The whole image dataset of ``path``, its ``(z, y, x)`` spacing and pixel size."""
    import h5py

    with h5py.File(path, "r") as f:
        dataset = f[image_dataset(f)]
        check_not_empty(dataset.shape, f"{path} (dataset {dataset.name})")
        return Image(dataset[()], dataset_spacing(dataset), attribute_pixel_size(dataset.attrs))


def read_h5_pixel_size(path: str) -> PixelSize | None:
    """The pixel size of the image dataset of ``path`` (its attributes only)."""
    import h5py

    with h5py.File(path, "r") as f:
        return attribute_pixel_size(f[image_dataset(f)].attrs)


class H5Sections(OpenFileReader):
    """An HDF5 image dataset read a section (or a range of sections) at a time; the same interface as
    ``TiffSections``. Outputs are one dataset per file, chunked one section per chunk and gzip-compressed, so
    they stream back section by section too.

    Attributes:
        path: the file.
        shape: the dataset's shape: ``(Z, Y, X)``, or ``(Y, X)`` for a single image.
        spacing: ``(z, y, x)`` voxel size in the attribute's unit, or None.
        pixel_size: the pixel size in nm, or None.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import h5py

        self.path = str(path)
        try:
            with h5py.File(self.path, "r") as f:
                self.name = image_dataset(f)
                dataset = f[self.name]
                self.shape, self.dtype, self.spacing = tuple(dataset.shape), dataset.dtype, dataset_spacing(dataset)
                self.pixel_size = attribute_pixel_size(dataset.attrs)
        except BundleInputError:
            raise
        except Exception as e:  # h5py raises OSError and others for missing, truncated or foreign files
            raise unreadable(self.path, "HDF5", e) from e
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
    name: str | None = None,
    spacing: Sequence[float] | None = None,
    pixel_size: PixelSize | None = None,
    reference: str | None = None,
) -> None:
    """Write ``(Y, X)`` sections as they come into dataset ``name`` of a new HDF5 file, atomically.

    Args:
        name: the dataset's name; default the last ``_`` part of the file's name (``x_prob.h5`` -> ``prob``).
        spacing: a ``(z, y, x)`` voxel size of unknown unit, kept as the ``spacing`` attribute when there is no
            ``pixel_size``.
        pixel_size: kept as ``element_size_um`` (as ilastik writes it): ``(z, y, x)`` in µm, or ``(y, x)`` where
            the section spacing is unknown.
        reference: unused (the same signature as the other formats' writers).
    """
    import h5py

    shape = tuple(int(s) for s in shape)
    chunks = (1, *shape[-2:]) if len(shape) == 3 else shape
    if name is None:
        stem = os.path.basename(path).rsplit(".", 1)[0]
        name = stem.rsplit("_", 1)[-1] or "data"
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        dataset = f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, compression="gzip")
        if pixel_size is not None:
            known = pixel_size.nm[3 - len(shape) :] if pixel_size.nm[0] is not None else pixel_size.yx
            dataset.attrs["element_size_um"] = [float(n) / UNIT_NM["µm"] for n in known]
        elif spacing is not None:
            dataset.attrs["spacing"] = [float(s) for s in spacing]
        for z, section in enumerate(sections):
            if len(shape) == 3:
                dataset[z] = section
            else:
                dataset[()] = section
