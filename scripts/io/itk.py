# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The other formats ITK reads (mha, mhd, nrrd, png, jpg, bmp, Analyze hdr, vtk): numpy order ``(Z, Y, X)``;
colour pixels become grey as for TIFF. Read whole only (no section reader), never written.

Pixel size: none. ITK gives a spacing without a unit (MetaImage and VTK have no unit field, PNG's pHYs and NRRD's
``space units`` are not passed on), so the spacing is kept in ``Stack.spacing`` but no pixel size is claimed.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import BundleInputError
from .common import Image, luma

ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr", ".png", ".jpg", ".jpeg", ".bmp", ".hdr", ".vtk")

logger = logging.getLogger(__name__)


def read_itk(path: str) -> Image:
    """The whole image of ``path`` as ``(Z, Y, X)`` or ``(Y, X)``, grey, with ITK's spacing (unit unknown)."""
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
    spacing = tuple(float(s) for s in reversed(tuple(img.GetSpacing())))
    return Image(array, spacing if len(spacing) == 3 else None)  # type: ignore[arg-type]


def read_itk_pixel_size(path: str) -> None:
    """ITK formats carry no length unit: never a pixel size (see the module docstring)."""
    return None
