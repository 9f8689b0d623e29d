# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Cells segmented block by block, made into one labelling of the whole volume.

Each block is segmented on its own (``scripts.instances.segment_cells``) with labels ``1..n_b``; adding the count of
the blocks before it makes every label unique in the volume (:func:`block_offsets`). A cell cut by a block face
has one label on each side: the two labels are matched on the two voxel planes either side of the face, each the
other's best overlap (:func:`face_matches`), and joined into one cell (:func:`merged_labels`, connected components
of the match graph, i.e. union-find), which gets one id in the whole volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components


def block_offsets(counts: Sequence[int]) -> np.ndarray:
    """Label offset of each block: the number of labels in the blocks before it (int64, one per block)."""
    return np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))[:-1]]).astype(np.int64)


def core_labels(cells: np.ndarray) -> np.ndarray:
    """A block's labels cut out of labels computed with a halo of context around it, renumbered ``1..n`` in
    order (0 stays 0); uint32, shape kept.

    The halo gives a cell cut by the block face the seed it has in the neighbouring block, so both blocks label
    it alike up to the face and the halves match (without it, a sliver of a cell whose seed lies beyond the face
    is flooded by a neighbour's label and joins that neighbour to it).
    """
    ids, inverse = np.unique(cells, return_inverse=True)
    return (inverse.reshape(cells.shape) + int(ids[0] != 0)).astype(np.uint32)


def face_matches(before: np.ndarray, after: np.ndarray, min_overlap: float = 0.5) -> np.ndarray:
    """Pairs of labels that are one cell across a block face.

    ``before`` and ``after`` are the labels (already offset, so unique in the volume) on the two voxel planes
    either side of the face, of one shape. Label ``a`` of ``before`` and ``b`` of ``after`` are joined when each
    is the other's largest overlap on the face and that overlap is at least ``min_overlap`` of the smaller of the
    two: the two halves of a cut cell overlap almost wholly, while a neuron that only grazes the face with a few
    voxels (dense 3D labels leave no boundary between neighbours) lies mostly on its neighbour's half, which has
    a better partner; joining it there merged whole neurons (FIB-SEM held-out block, docs/experiments.md). A cell
    that one block split in two joins its other half through the larger piece only. Boundary voxels (label 0)
    are ignored.

    Returns:
        ``(N, 2)`` int64 array of ``(a, b)`` pairs.
    """
    a, b = np.asarray(before).ravel().astype(np.int64), np.asarray(after).ravel().astype(np.int64)
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.zeros((0, 2), dtype=np.int64)
    pairs, overlap = np.unique(np.stack([a[both], b[both]], axis=1), axis=0, return_counts=True)
    labels_a, area_a = np.unique(a[a > 0], return_counts=True)
    labels_b, area_b = np.unique(b[b > 0], return_counts=True)
    smaller = np.minimum(area_a[np.searchsorted(labels_a, pairs[:, 0])], area_b[np.searchsorted(labels_b, pairs[:, 1])])
    mutual = _best_overlap(pairs[:, 0], overlap) & _best_overlap(pairs[:, 1], overlap)
    return pairs[mutual & (overlap >= min_overlap * smaller)]


def _best_overlap(labels: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """For pairs with first (or second) label ``labels`` and ``overlap``: True at each label's largest overlap (one
    pair per label; the later pair on a tie)."""
    order = np.lexsort((overlap, labels))  # by label, then overlap: each label's best pair is its last
    last = np.append(labels[order][1:] != labels[order][:-1], True)
    best = np.zeros(len(labels), dtype=bool)
    best[order[last]] = True
    return best


def merged_labels(count: int, matches: np.ndarray) -> np.ndarray:
    """A lookup table from the ``count`` volume-unique labels to cell ids: labels joined by ``matches`` (pairs from
    :func:`face_matches`, directly or through others) get one id; ids are ``1..M`` in the order of each cell's
    smallest label, 0 stays 0.

    Returns:
        ``(count + 1,)`` uint32 array, ``lookup[label] = id``.
    """
    matches = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
    graph = sparse.coo_matrix(
        (np.ones(len(matches), dtype=np.int8), (matches[:, 0], matches[:, 1])), shape=(count + 1, count + 1)
    )
    _, component = connected_components(graph, directed=False)
    # number the components in the order of their smallest label, so label 0 (alone) keeps id 0
    _, first = np.unique(component, return_index=True)
    rank = np.empty(len(first), dtype=np.uint32)
    rank[np.argsort(first)] = np.arange(len(first), dtype=np.uint32)
    return rank[component]


def relabel(local: np.ndarray, offset: int, lookup: np.ndarray | None = None) -> np.ndarray:
    """Block labels ``1..n`` (0 = boundary) as volume ids: ``local + offset``, through ``lookup`` if given
    (:func:`merged_labels`). Shape kept; uint32."""
    local = np.asarray(local)
    shifted = local.astype(np.int64) + int(offset)
    ids = shifted if lookup is None else lookup[shifted]
    return np.where(local > 0, ids, 0).astype(np.uint32)
