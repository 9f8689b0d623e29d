# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""EM-like synthetic stacks with known membranes, for the default sample and for tests.

Cells are a 3D Voronoi tessellation; membranes are the dark, slightly blurred boundaries between cells; interiors get
texture, dark organelle-like blobs and shot noise. Labels follow ISBI 2012: 0 = membrane, 255 = cell interior.
By default the stack is ssTEM-like: sections 4 pixels apart (neighbouring sections correlated, each drawn on its
own); ``isotropic`` makes a FIB-SEM-like volume instead, alike along z, y and x.
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
    isotropic: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate an EM-like ``(Z, Y, X)`` uint8 image and its uint8 ISBI label (0 = membrane, 255 = cell).

    Args:
        shape: ``(Z, Y, X)`` size.
        cell_size: typical cell diameter in pixels.
        membrane_width: membrane thickness in pixels.
        noise: standard deviation of the additive noise (grey levels).
        seed: random seed; the same seed gives the same stack.
        isotropic: sections 1 pixel apart, membranes, texture and blur in 3D (FIB-SEM-like), instead of 4 pixels
            apart with everything drawn within each section (ssTEM-like).
    """
    rng = np.random.default_rng(seed)
    z, y, x = shape
    spacing = 1.0 if isotropic else 4.0  # ssTEM: z stretched (x4) so sections look alike but drift slowly
    depth = max(1.0, z * spacing / cell_size * (1.0 if isotropic else 0.5))  # cells deep (ssTEM: twice as many)
    n_cells = max(2, int(y * x / cell_size**2 * depth))
    centres = rng.uniform(0, 1, size=(n_cells, 3)) * np.array([max(z, 1) * spacing, y, x])
    # Each voxel takes the nearest centre.
    grid = np.stack(np.meshgrid(np.arange(z) * spacing, np.arange(y), np.arange(x), indexing="ij"), axis=-1)
    from scipy.spatial import cKDTree

    _, cells = cKDTree(centres).query(grid.reshape(-1, 3))
    cells = cells.reshape(shape)
    boundary = np.zeros(shape, dtype=bool)
    for axis in (0, 1, 2) if isotropic else (1, 2):
        diff = np.diff(cells, axis=axis) != 0
        pad = [(0, 0)] * 3
        pad[axis] = (0, 1)
        boundary |= np.pad(diff, pad)
    z_width, z_blur = (membrane_width, 1.0) if isotropic else (1, 0.0)  # ssTEM: each section drawn on its own
    membrane = ndimage.binary_dilation(boundary, structure=np.ones((z_width, membrane_width, membrane_width)))
    interior = 170 + rng.normal(0, 15, size=n_cells)[cells]
    texture = ndimage.gaussian_filter(rng.normal(0, 1, size=shape), sigma=(2 * z_blur, 2, 2)) * 25
    blobs = ndimage.gaussian_filter((rng.uniform(size=shape) > 0.9995).astype(float), sigma=(4 * z_blur, 4, 4)) * 4000
    image = interior + texture - np.minimum(blobs, 90) * ~membrane
    image = np.where(membrane, 50 + rng.normal(0, 10, size=shape), image)
    image = ndimage.gaussian_filter(image, sigma=(z_blur, 1.0, 1.0)) + rng.normal(0, noise, size=shape)
    label = np.where(membrane, 0, 255).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8), label
