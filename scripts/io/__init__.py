# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Every image format the bundle reads and writes: whole stacks, stacks a section at a time, pixel sizes, results.

One module per format, each with its reader, section reader, pixel-size reader and writer, and one table of them
(``formats.FORMATS``):

- ``tiff``: TIFF, OME-TIFF, ImageJ TIFF (tifffile); colour becomes grey; a tifffile-default planar ``(3|4, Y, X)``
  stack is 3 or 4 sections.
- ``hdf5``: HDF5 (h5py): the one 2D/3D dataset, or the one named ``volume``, ``raw``, ``data`` or ``image``.
- ``omezarr``: zarr and OME-Zarr 0.1-0.5 folders (zarr-python 3; 2 for zarr v2 only), lazily, and OME-Zarr results.
- ``nifti``: NIfTI (nibabel), ``(X, Y, Z)`` on disk.
- ``mrc``: MRC (mrcfile): ``.mrc``, ``.mrcs``, ``.rec``, ``.map``.
- ``itk``: the other ITK formats (mha, nrrd, png, ...), read whole.

Shared: ``common`` (:class:`Stack`, :class:`OpenFileReader`, value checks) and ``pixel_size`` (:class:`PixelSize`,
units). The public face: :func:`read_stack` returns the stack in the bundle's working order ``(Z, Y, X)``
(sections first) with the file's layout, spacing and pixel size, so outputs keep the input's shape, axis order and
pixel size; :func:`open_sections` reads a stack a section at a time with exactly the sections :func:`read_stack`
gives; :func:`read_pixel_size` reads the metadata alone; :func:`write_result` writes a result atomically
(``scripts.outputs.atomic_path``) in the input's or the chosen format.
"""

from .common import (
    LUMA,
    SEGMENT_IN_2D,
    Image,
    OpenFileReader,
    Stack,
    check_not_empty,
    check_values,
    luma,
    require_volume,
    to_file_order,
)
from .formats import (
    FORMATS,
    IMAGE_SUFFIXES,
    OUTPUT_FORMATS,
    RESULT_EXTENSIONS,
    STREAMED_SUFFIXES,
    ImageFormat,
    image_format,
    image_stem,
    image_suffix,
    open_sections,
    read_array,
    read_image,
    read_pixel_size,
    read_stack,
    result_extension,
    write_result,
    write_sections,
)
from .hdf5 import (
    HDF5_SUFFIXES,
    PREFERRED_NAMES,
    H5Sections,
    attribute_pixel_size,
    dataset_spacing,
    image_dataset,
    read_h5,
    write_h5_sections,
)
from .itk import ITK_SUFFIXES
from .mrc import MRC_SUFFIXES, MrcSections, read_mrc, write_mrc_sections
from .nifti import NIFTI_SUFFIXES, NiftiSections, read_nifti, write_nifti_sections
from .omezarr import (
    DEFAULT_NGFF_VERSION,
    NGFF_VERSIONS,
    SPATIAL_AXES,
    ZARR_CHUNK_SIDE,
    ZARR_SUFFIXES,
    SpatialView,
    ZarrSections,
    create_zarr,
    discard_zarr,
    finalize_zarr,
    is_zarr,
    open_zarr,
    read_zarr,
    write_zarr_sections,
    zarr_ngff_version,
    zarr_pixel_size,
    zarr_spacing,
    zarr_temporary,
)
from .pixel_size import SCREEN_DPI, UNIT_NM, PixelSize, unit_nm
from .tiff import (
    BIGTIFF_BYTES,
    TIFF_SUFFIXES,
    TiffSections,
    tiff_pixel_size,
    tiff_spacing,
    write_tiff,
    write_tiff_sections,
)
