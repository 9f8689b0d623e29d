# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""``python -m bundle benchmark_neurons``: time and peak memory of 3D neurons from a membrane map.

Each size runs in a fresh process (its peak resident memory is its own): inference.json's 3D neuron settings for a
three-plane map (``scripts.instances.NEURONS_3D``: distance seeds, watershed, agglomeration) and the 3D cell table,
on a ``_prob`` file (e.g. of the FIB-SEM cube) or on a synthetic map of 3D cells. The network is not part of it.
"""

from __future__ import annotations

import resource
import time

from bundle.measure import in_fresh_process


def synthetic_map(side: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """A ``side``-cubed membrane map of 3D Voronoi cells about 25 voxels across: 1 on their faces, blurred."""
    import numpy as np
    from scipy import ndimage
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, side, size=(max(2, (side // 25) ** 3), 3))
    grid = np.indices((side,) * 3).reshape(3, -1).T
    cells = cKDTree(centres).query(grid)[1].reshape((side,) * 3)
    faces = np.zeros(cells.shape, bool)
    for axis in range(3):
        faces |= np.diff(cells, axis=axis, append=np.take(cells, [-1], axis=axis)) != 0
    prob = ndimage.gaussian_filter(faces.astype(np.float32), 1.0) * 2.5 + rng.normal(0, 0.05, cells.shape)
    return np.clip(prob, 0, 1).astype(np.float32)


def _neurons(prob_path: str | None, side: int) -> dict:
    import numpy as np
    from scripts.instances import NEURONS_3D, seed_options, segment_cells
    from scripts.io import read_stack
    from scripts.morphology import cell_table

    prob = synthetic_map(side) if prob_path is None else read_stack(prob_path).array.astype(np.float32)
    options = {**seed_options(), **NEURONS_3D}
    start = time.perf_counter()
    neurons = segment_cells(prob, "3d", **options)
    segmented = time.perf_counter()
    rows = cell_table(neurons, "3d", (10.0, 10.0, 10.0))
    return {
        "shape": list(prob.shape),
        "neurons": len(rows),
        "segment_s": round(segmented - start, 1),
        "table_s": round(time.perf_counter() - segmented, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def run_neurons_benchmark(prob: str | None = None, sides: tuple[int, ...] = (125, 250)) -> list[dict]:
    """One row per size (``sides`` of a synthetic cube), or one for the ``prob`` file."""
    if prob is not None:
        return [in_fresh_process(_neurons, str(prob), 0)]
    return [in_fresh_process(_neurons, None, int(side)) for side in sides]
