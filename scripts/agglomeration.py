# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Agglomeration of watershed fragments by their boundary evidence (waterz).

A seeded watershed of a membrane map cuts each neuron into fragments wherever its interior holds more than one seed
(a neurite's narrow neck, a blurred stretch of membrane). Agglomeration merges neighbouring fragments, weakest
boundary first, while the mean membrane probability along their shared face stays below ``threshold``: two fragments
of one neuron meet across faint "membrane", two neurons across a real one. The affinity of two neighbouring voxels
is ``1 - max(p, p')`` (``p`` the membrane probability) and waterz's mean-affinity hierarchical merging does the rest
(``OneMinus<MeanAffinity>``, waterz's default scoring, compiled ahead of time in its wheels). waterz
(https://github.com/funkey/waterz, MIT) is the agglomeration of the CREMI and FlyEM pipelines; it is used here
rather than scikit-image's RAG merging, which walks a Python graph and is slower on 10^4-10^5 fragments.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from .errors import BundleInputError


def affinities(prob: np.ndarray) -> np.ndarray:
    """``(3, Z, Y, X)`` float32 affinities of a ``(Z, Y, X)`` membrane probability: channel ``a`` holds, at each
    voxel, ``1 - max(p, p')`` with ``p'`` its predecessor along axis ``a`` (0 where it has none), waterz's layout."""
    prob = np.asarray(prob, dtype=np.float32)
    affs = np.zeros((3, *prob.shape), dtype=np.float32)
    for axis in range(3):
        here = [slice(None)] * 3
        before = [slice(None)] * 3
        here[axis], before[axis] = slice(1, None), slice(None, -1)
        np.maximum(prob[tuple(here)], prob[tuple(before)], out=affs[axis][tuple(here)])
        np.subtract(1.0, affs[axis][tuple(here)], out=affs[axis][tuple(here)])
    return affs


def _waterz():  # type: ignore[no-untyped-def]
    try:
        import waterz
    except ImportError as e:
        raise BundleInputError(
            "agglomeration",
            "needs waterz, which is not installed (its wheels are for Python 3.11 and newer)",
            "pip install waterz (see requirements.txt), or pass --agglomeration 0",
        ) from e
    return waterz


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence waterz's progress lines (Python prints and C++ ``std::cout``, so the file descriptor itself)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def agglomerate(fragments: np.ndarray, prob: np.ndarray, threshold: float) -> np.ndarray:
    """Merge the ``fragments`` ``(Z, Y, X)`` (0 = boundary, kept) of the membrane map ``prob`` (same shape) across
    faces whose mean membrane probability is below ``threshold``. Returns uint32 labels 1..N (0 where
    ``fragments`` is 0); a 2D ``(Y, X)`` input is treated as one section."""
    flat = fragments.ndim == 2
    frags = np.ascontiguousarray(fragments[None] if flat else fragments, dtype=np.uint64)
    probability = prob[None] if flat else prob
    if frags.max(initial=0) == 0:
        return np.zeros(fragments.shape, np.uint32)
    waterz = _waterz()
    with _quiet_stdout():
        merged = next(iter(waterz.agglomerate(affinities(probability), [float(threshold)], fragments=frags)))
    merged = np.where(frags == 0, 0, merged)
    ids, inverse = np.unique(merged, return_inverse=True)  # ids sorted: a boundary's 0 comes first and stays 0
    labels = inverse.reshape(merged.shape).astype(np.uint32) + np.uint32(ids[0] != 0)
    return labels[0] if flat else labels
