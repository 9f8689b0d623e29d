# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""HDF5 volumes (h5py): which dataset of a file holds the image, read in part or whole, written section by section.

A file's image is its only 2D/3D numeric dataset, or, where there are several, the one named ``volume``, ``raw``,
``data`` or ``image`` (the names connectomics tools use). Outputs are written as one dataset per file, chunked one
section per chunk and gzip-compressed, so they stream back section by section too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np

from .errors import BundleInputError
from .io import OpenFileReader, atomic_path, check_values

PREFERRED_NAMES = ("volume", "raw", "data", "image")


def image_dataset(h5file) -> str:
    """The name of the image dataset in an open ``h5py.File`` (see the module docstring)."""
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


def read_h5(path: str) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """The whole image dataset of ``path`` and its ``(z, y, x)`` spacing (attribute ``element_size_um`` or
    ``resolution``, as ilastik and CREMI write them), or None."""
    import h5py

    with h5py.File(path, "r") as f:
        dataset = f[image_dataset(f)]
        return dataset[()], dataset_spacing(dataset)


def dataset_spacing(dataset) -> tuple[float, float, float] | None:
    """``(z, y, x)`` voxel size from an h5py dataset's ``element_size_um`` or ``resolution`` attribute, or None."""
    for key in ("element_size_um", "resolution"):
        if key in dataset.attrs and len(dataset.attrs[key]) == 3:
            return tuple(float(s) for s in dataset.attrs[key])  # type: ignore[return-value]
    return None


class H5Sections(OpenFileReader):
    """An HDF5 image dataset read a section (or a range of sections) at a time; the same interface as
    ``scripts.streaming.TiffSections``.

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

    def __iter__(self) -> Iterator[np.ndarray]:
        with self:
            for z in range(len(self)):
                yield self.read(z, z + 1)[0]


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
