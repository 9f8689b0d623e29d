# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""3D neurons of a membrane probability stack larger than memory, slab by slab (``configs/inference_stream.json``).

The stack is cut along z into slabs of whole sections, as few as :data:`SLAB_VOXELS` allows (and at least
2 x :data:`HALO` sections each, so that the context never outweighs the slab). Each slab is segmented
in 3D (``scripts.instances.segment_cells``) with :data:`HALO` sections of context on either side, cut back to the
slab and labelled ``1..n`` into a uint32 scratch file; neurons cut by a slab face are joined across it by mutual
best overlap, exactly as Dask joins its blocks (``scripts.blockwise.stitching``). A second pass writes each section
with its neurons' volume ids and sums the 3D cell table (``scripts.morphology.merged_volume_rows``). Memory holds one
slab with its halo, whatever the stack's depth; a stack of one slab is segmented whole, as ``inference.json`` does.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .blockwise.stitching import block_offsets, core_labels, face_matches, merged_labels, relabel
from .instances import segment_cells
from .io import OpenFileReader
from .morphology import block_volume_sums
from .scratch import ScratchVolume

#: Voxels of probability segmented at once, halo included (128 MB of float32; the watershed, seeds and
#: agglomeration take a few times that): the whole 250^3 FIB-SEM cube is one slab.
SLAB_VOXELS = 1 << 25
#: Sections of context on either side of a slab, as Dask's ``cell_halo``: about a neuron's radius, so a neuron cut by
#: a slab face has its seed on both sides.
HALO = 16


def slab_bounds(depth: int, section_voxels: int) -> list[slice]:
    """The slabs of whole sections that tile ``depth`` sections of ``section_voxels`` voxels each."""
    step = max(2 * HALO, SLAB_VOXELS // max(1, section_voxels) - 2 * HALO)
    return [slice(z, min(z + step, depth)) for z in range(0, depth, step)]


def label_slabs(
    probabilities: OpenFileReader, labels: ScratchVolume, options: dict
) -> tuple[list[slice], np.ndarray, np.ndarray]:
    """Segment every slab of ``probabilities`` into ``labels`` (slab-local ids ``1..n``) with the watershed
    ``options``; returns the slabs, each slab's label offset and the lookup from offset labels to neuron ids
    (``scripts.blockwise.stitching.merged_labels``)."""
    depth, height, width = probabilities.shape
    slabs = slab_bounds(depth, height * width)
    counts: list[int] = []
    matches = [np.zeros((0, 2), np.int64)]
    last_plane: np.ndarray | None = None  # the previous slab's last section, in offset labels
    with probabilities:
        for slab in slabs:
            start, stop = max(0, slab.start - HALO), min(depth, slab.stop + HALO)
            prob = probabilities.read(start, stop).astype(np.float32, copy=False)
            cells = core_labels(segment_cells(prob, "3d", **options)[slab.start - start : slab.stop - start])
            labels[slab] = cells
            offset = int(sum(counts))
            if last_plane is not None:
                matches.append(face_matches(last_plane, relabel(cells[:1], offset)))
            last_plane = relabel(cells[-1:], offset)
            counts.append(int(cells.max(initial=0)))
    return slabs, block_offsets(counts), merged_labels(int(sum(counts)), np.concatenate(matches))


def neuron_sections(
    labels: ScratchVolume, slabs: list[slice], offsets: np.ndarray, lookup: np.ndarray, table: list[dict]
) -> Iterator[np.ndarray]:
    """Each section ``(Y, X)`` of the neurons, uint32 volume ids, read back slab by slab from ``labels``; each slab's
    part of the 3D table (``block_volume_sums``) is appended to ``table`` as it is read."""
    for slab, offset in zip(slabs, offsets):
        neurons = relabel(labels[slab], int(offset), lookup)
        table.append(block_volume_sums(neurons, (slab.start, 0, 0)))
        yield from neurons
