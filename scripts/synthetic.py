# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""EM-like synthetic stacks with known membranes, for the default sample and for tests.

Cells are a 3D Voronoi tessellation (so neighbouring sections are correlated, as in ssTEM); membranes are
the dark, slightly blurred boundaries between cells; interiors get texture, dark organelle-like blobs and
shot noise. Labels follow ISBI 2012: 0 = membrane, 255 = cell interior.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def make_em_stack(
    shape: tuple[int, int, int] = (4, 256, 256),
    cell_size: float = 40.0,
    membrane_width: int = 3,
    noise: float = 12.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate an EM-like ``(Z, Y, X)`` uint8 image and its uint8 ISBI label (0 = membrane, 255 = cell).

    Args:
        shape: ``(Z, Y, X)`` size.
        cell_size: typical cell diameter in pixels.
        membrane_width: membrane thickness in pixels.
        noise: standard deviation of the additive noise (grey levels).
        seed: random seed; the same seed gives the same stack.
    """
    rng = np.random.default_rng(seed)
    z, y, x = shape
    n_cells = max(2, int(y * x / cell_size**2 * max(1.0, z / cell_size * 2)))
    centres = rng.uniform(0, 1, size=(n_cells, 3)) * np.array([max(z, 1) * 4.0, y, x])
    # Each voxel takes the nearest centre; z is stretched (x4) so sections look alike but drift slowly.
    grid = np.stack(np.meshgrid(np.arange(z) * 4.0, np.arange(y), np.arange(x), indexing="ij"), axis=-1)
    from scipy.spatial import cKDTree

    _, cells = cKDTree(centres).query(grid.reshape(-1, 3))
    cells = cells.reshape(shape)
    boundary = np.zeros(shape, dtype=bool)
    for axis in (1, 2):
        diff = np.diff(cells, axis=axis) != 0
        pad = [(0, 0)] * 3
        pad[axis] = (0, 1)
        boundary |= np.pad(diff, pad)
    membrane = ndimage.binary_dilation(boundary, structure=np.ones((1, membrane_width, membrane_width)))
    interior = 170 + rng.normal(0, 15, size=n_cells)[cells]
    texture = ndimage.gaussian_filter(rng.normal(0, 1, size=shape), sigma=(0, 2, 2)) * 25
    blobs = ndimage.gaussian_filter((rng.uniform(size=shape) > 0.9995).astype(float), sigma=(0, 4, 4)) * 4000
    image = interior + texture - np.minimum(blobs, 90) * ~membrane
    image = np.where(membrane, 50 + rng.normal(0, 10, size=shape), image)
    image = ndimage.gaussian_filter(image, sigma=(0, 1.0, 1.0)) + rng.normal(0, noise, size=shape)
    label = np.where(membrane, 0, 255).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8), label
