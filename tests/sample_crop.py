# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""A small crop of the shipped EM sample, so tests can run the shipped model in seconds."""

from __future__ import annotations

from pathlib import Path

import tifffile
from scripts.io import write_tiff

ROOT = Path(__file__).resolve().parent.parent
# zoom pixel_size: the crop has no pixel size, so the network runs on its own pixels without the zoom estimate (whose
# resampling may round differently under another thread count, and tests compare runs bit for bit)
CROP_OVERRIDES = {"instance_mode": "none", "plots": False, "roi_size": [128, 128], "zoom": "pixel_size"}
CROP_FLAGS = ("--instance_mode", "none", "--plots", "false", "--roi_size", "[128,128]", "--zoom", "pixel_size")


def write_sample_crop(folder: Path, sections: int = 2, height: int = 128, width: int = 160) -> Path:
    """Write ``sample/em-volume.tif[:sections, :height, :width]`` as ``<folder>/em-crop.tif``; return ``folder``."""
    image = tifffile.imread(ROOT / "sample" / "em-volume.tif")[:sections, :height, :width]
    write_tiff(folder / "em-crop.tif", image)
    return folder
