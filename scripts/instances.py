# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Cells from a membrane probability map: seeded watershed (scikit-image)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import remove_small_objects
from skimage.segmentation import watershed

INSTANCE_MODES = ("2d", "3d", "none")


def _watershed(prob: np.ndarray, seed_threshold: float, min_seed_size: int, foreground: bool) -> np.ndarray:
    """Seeds are connected regions of ``prob < seed_threshold`` (cell interiors) of at least ``min_seed_size``
    pixels; they grow over the probability landscape until 1-pixel boundary lines (label 0) separate them.
    For a ``foreground`` map (probability of cell bodies) the roles flip and growth stays inside the objects."""
    boundary = 1.0 - prob if foreground else prob
    interior = boundary < seed_threshold
    if min_seed_size > 1:
        interior = remove_small_objects(interior, max_size=min_seed_size - 1)
    seeds, _ = ndimage.label(interior)
    mask = interior if foreground else None
    return watershed(boundary, seeds, connectivity=1, watershed_line=True, mask=mask).astype(np.uint32)


def segment_cells(
    prob: np.ndarray, mode: str = "2d", seed_threshold: float = 0.5, min_seed_size: int = 16, foreground: bool = False
) -> np.ndarray:
    """Label cells in a ``(Z, Y, X)`` membrane probability stack.

    Args:
        prob: membrane probability in [0, 1], ``(Z, Y, X)``.
        mode: "2d" labels each section on its own (anisotropic ssTEM; ids are unique across the stack),
            "3d" labels the volume at once (isotropic FIB-SEM).
        seed_threshold: pixels below it are confident cell interior and seed the watershed.
        min_seed_size: smaller seed regions (pixels or voxels) are dropped as noise.
        foreground: ``prob`` is the probability of objects (cell bodies, nuclei) rather than of membrane;
            objects are the connected regions above ``1 - seed_threshold``.

    Returns:
        ``(Z, Y, X)`` uint32 labels: 0 on the 1-pixel boundaries between cells, 1..N for cells.
    """
    if mode not in INSTANCE_MODES[:2]:
        raise ValueError(f"instance mode must be '2d' or '3d', got {mode!r}")
    if mode == "3d":
        return _watershed(prob, seed_threshold, min_seed_size, foreground)
    labels = np.zeros(prob.shape, dtype=np.uint32)
    offset = 0
    for z, section in enumerate(prob):
        cells = _watershed(section, seed_threshold, min_seed_size, foreground)
        labels[z] = np.where(cells > 0, cells + offset, 0)
        offset = int(labels[z].max(initial=offset))
    return labels
