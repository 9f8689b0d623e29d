# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Per-cell morphology table (the paper's cell statistics) from an instance label stack."""

from __future__ import annotations

import csv
from collections.abc import Sequence

import numpy as np
from skimage.measure import regionprops

from .instances import map_sections
from .outputs import atomic_path

COLUMNS_2D = (
    "id", "slice", "area_px", "area_phys", "equivalent_diameter_px", "perimeter_px", "eccentricity",
    "solidity", "centroid_y", "centroid_x",
)  # fmt: skip
COLUMNS_3D = (
    "id", "slice", "volume_px", "volume_phys", "equivalent_diameter_px", "surface_area_px", "elongation",
    "solidity", "centroid_z", "centroid_y", "centroid_x",
)  # fmt: skip


def _surface_area(mask: np.ndarray) -> float:
    """Number of voxel faces between the object and background (a simple, unbiased-enough surface measure)."""
    padded = np.pad(mask, 1)
    return float(sum(np.count_nonzero(np.diff(padded.astype(np.int8), axis=a)) for a in range(mask.ndim)))


def cell_table(labels: np.ndarray, mode: str = "2d", spacing: Sequence[float] | None = None) -> list[dict]:
    """Measure every cell of a ``(Z, Y, X)`` label stack.

    Args:
        labels: uint labels, 0 = background/boundary.
        mode: "2d" measures each cell in its section (``slice`` column = section index); "3d" measures whole
            3D objects (``slice`` = -1).
        spacing: ``(z, y, x)`` voxel size; ``area_phys``/``volume_phys`` are left empty when it is unknown.

    Returns:
        One dict per cell with the keys of ``COLUMNS_2D`` or ``COLUMNS_3D``.
    """
    rows: list[dict] = []
    if mode == "3d":
        voxel = float(np.prod(spacing)) if spacing else None
        for r in regionprops(labels):
            inertia = np.sort(np.abs(r.inertia_tensor_eigvals))
            rows.append(
                {
                    "id": r.label, "slice": -1, "volume_px": int(r.area),
                    "volume_phys": r.area * voxel if voxel else "",
                    "equivalent_diameter_px": float(r.equivalent_diameter_area),
                    "surface_area_px": _surface_area(r.image),
                    "elongation": float(np.sqrt(inertia[-1] / inertia[0])) if inertia[0] > 0 else float("inf"),
                    "solidity": float(r.solidity) if r.area >= 4 else 1.0,
                    "centroid_z": float(r.centroid[0]), "centroid_y": float(r.centroid[1]),
                    "centroid_x": float(r.centroid[2]),
                }  # fmt: skip
            )
        return rows
    pixel = float(spacing[1] * spacing[2]) if spacing else None

    def measure(section: np.ndarray) -> list[dict]:
        return [
            {
                "id": r.label, "area_px": int(r.area), "area_phys": r.area * pixel if pixel else "",
                "equivalent_diameter_px": float(r.equivalent_diameter_area), "perimeter_px": float(r.perimeter),
                "eccentricity": float(r.eccentricity), "solidity": float(r.solidity),
                "centroid_y": float(r.centroid[0]), "centroid_x": float(r.centroid[1]),
            }  # fmt: skip
            for r in regionprops(section)
        ]

    for z, section_rows in enumerate(map_sections(measure, labels)):
        rows += [{**row, "slice": z} for row in section_rows]
    return rows


def write_cell_table(path: str, rows: list[dict], mode: str = "2d") -> None:
    """Write ``rows`` from :func:`cell_table` as CSV (header always present), atomically."""
    columns = COLUMNS_3D if mode == "3d" else COLUMNS_2D
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def block_volume_sums(labels: np.ndarray, corner: Sequence[int]) -> dict[str, list]:
    """What a block adds to the 3D table of :func:`merged_volume_rows`: for each label in the ``(z, y, x)`` block
    ``labels`` (volume ids, 0 = boundary) whose first voxel is at ``corner`` in the volume, its voxel count and the
    sum of its voxels' volume coordinates. JSON-serialisable lists under "id", "voxels" and "sums"."""
    nonzero = labels > 0
    ids, inverse, voxels = np.unique(labels[nonzero], return_inverse=True, return_counts=True)
    coordinates = np.nonzero(nonzero)
    sums = [np.bincount(inverse, weights=c + int(o), minlength=len(ids)) for c, o in zip(coordinates, corner)]
    return {"id": ids.tolist(), "voxels": voxels.tolist(), "sums": np.stack(sums, axis=1).tolist() if len(ids) else []}


def merged_volume_rows(blocks: Sequence[dict[str, list]], spacing: Sequence[float] | None = None) -> list[dict]:
    """The 3D cell table of a volume segmented block by block, from each block's :func:`block_volume_sums`: the
    columns of ``COLUMNS_3D`` that add up across blocks (volume, equivalent diameter, centroid), exact for cells
    that span blocks; the shape columns (surface area, elongation, solidity) need each cell whole and are left
    empty. One row per cell, by id."""
    voxels: dict[int, int] = {}
    sums: dict[int, np.ndarray] = {}
    for block in blocks:
        for i, n, s in zip(block["id"], block["voxels"], block["sums"]):
            voxels[i] = voxels.get(i, 0) + int(n)
            sums[i] = sums.get(i, 0) + np.asarray(s, dtype=np.float64)
    voxel = float(np.prod(spacing)) if spacing else None
    rows = []
    for i in sorted(voxels):
        n, centroid = voxels[i], sums[i] / voxels[i]
        rows.append(
            {
                "id": i, "slice": -1, "volume_px": n, "volume_phys": n * voxel if voxel else "",
                "equivalent_diameter_px": float((6 * n / np.pi) ** (1 / 3)), "surface_area_px": "", "elongation": "",
                "solidity": "", "centroid_z": float(centroid[0]), "centroid_y": float(centroid[1]),
                "centroid_x": float(centroid[2]),
            }  # fmt: skip
        )
    return rows
