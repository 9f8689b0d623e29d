# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Helpers for evaluation: section names for ``MetricsSaver`` and scoring of instance segmentations."""

from __future__ import annotations

import numpy as np
from monai.utils import ImageMetaKey

from .errors import BundleInputError
from .io import read_stack
from .isbi_metrics import rand_info_scores


def section_names(batch: list[dict] | dict) -> list[dict[str, str]]:
    """Per-item ``{"filename_or_obj": "file.tif[z]"}`` for ``MetricsSaver``'s per-section metric details."""
    items = batch if isinstance(batch, list) else [batch]
    names: list[str] = []
    for item in items:
        name = item.get("name", "")
        names.extend(name if isinstance(name, (list, tuple)) else [name])
    return [{ImageMetaKey.FILENAME_OR_OBJ: n} for n in names]


def score_instance_files(
    seg_path: str, labels_path: str, z_start: int = 0, z_stop: int | None = None
) -> dict[str, float | int | list[int]]:
    """V_rand and V_info of a cell/neuron instance segmentation against ground-truth instance labels.

    Both files are ``(Z, Y, X)`` label stacks of the same shape; only sections ``z_start:z_stop`` are scored (e.g. a
    held-out sub-cube). Ground-truth label 0 is left out, predicted label 0 (boundary) counts as singletons, as in
    ISBI 2012. Works in 3D: segments are compared as whole 3D objects.
    """
    seg = read_stack(seg_path).array
    truth = read_stack(labels_path).array
    if seg.shape != truth.shape:
        raise BundleInputError(
            seg_path, f"shape {seg.shape} differs from the labels' {truth.shape} ({labels_path})", "score matching files"
        )
    window = slice(int(z_start), None if z_stop is None else int(z_stop))
    seg, truth = seg[window], truth[window]
    if seg.size == 0:
        raise BundleInputError("z_start/z_stop", f"select no sections of {seg_path}", "pick a range inside the stack")
    v_rand, v_info = rand_info_scores(truth, seg)
    return {
        "v_rand": v_rand,
        "v_info": v_info,
        "sections": [int(z_start), int(z_start) + int(seg.shape[0])],
        "cells_true": int(len(np.unique(truth[truth > 0]))),
        "cells_pred": int(len(np.unique(seg[seg > 0]))),
    }
