# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Helpers for evaluation: section names for ``MetricsSaver``, scores pooled over several evaluations (the folds
of a cross-validation) and scoring of instance segmentations."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.utils import ImageMetaKey

from .errors import BundleInputError
from .io import read_stack
from .isbi_metrics import DEFAULT_THRESHOLDS, best_of_curve, mean_over_sections, rand_info_scores

# evaluate.json's MetricsSaver files: one row per section, one column per threshold (V_rand, V_info) or class (Dice)
_RAW_FILES = {"v_rand": "v_rand_raw.csv", "v_info": "v_info_raw.csv", "mean_dice": "mean_dice_raw.csv"}


def section_names(batch: list[dict] | dict) -> list[dict[str, str]]:
    """Per-item ``{"filename_or_obj": "file.tif[z]"}`` for ``MetricsSaver``'s per-section metric details."""
    items = batch if isinstance(batch, list) else [batch]
    names: list[str] = []
    for item in items:
        name = item.get("name", "")
        names.extend(name if isinstance(name, (list, tuple)) else [name])
    return [{ImageMetaKey.FILENAME_OR_OBJ: n} for n in names]


def _read_raw(path: Path) -> tuple[list[str], np.ndarray]:
    """Section names and the ``(sections, columns)`` scores of a MetricsSaver ``*_raw.csv`` (its "mean" column
    dropped)."""
    fix = "run configs/evaluate.json with --output_dir set to this folder first"
    if not path.is_file():
        raise BundleInputError(path, "not found", fix)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2 or rows[0][0] != "filename" or rows[0][-1] != "mean":
        raise BundleInputError(path, "is not a MetricsSaver per-section file (no filename ... mean header)", fix)
    try:
        scores = np.array([[float(v) for v in row[1:-1]] for row in rows[1:]], dtype=np.float64)
    except ValueError as error:
        raise BundleInputError(path, f"has a value that is not a number ({error})", fix) from error
    return [row[0] for row in rows[1:]], scores


def _per_section_tables(
    evaluations: Sequence[str | os.PathLike],
) -> tuple[list[str], dict[str, np.ndarray], list[dict]]:
    """Section names, ``{metric: (sections, columns)}`` scores stacked over ``evaluations``, and each folder's
    own scores."""
    if not evaluations:
        raise BundleInputError("evaluations", "none given", "name the output folders of evaluate.json runs")
    names: list[str] = []
    tables: dict[str, list[np.ndarray]] = {key: [] for key in _RAW_FILES}
    per_evaluation = []
    for folder in map(Path, evaluations):
        folder_names = None
        for key, file_name in _RAW_FILES.items():
            sections, scores = _read_raw(folder / file_name)
            if folder_names is not None and sections != folder_names:
                raise BundleInputError(
                    folder / file_name, "lists other sections than v_rand_raw.csv", "re-run evaluate.json"
                )
            if key != "mean_dice" and scores.shape[1] != len(DEFAULT_THRESHOLDS):
                raise BundleInputError(
                    folder / file_name,
                    f"has {scores.shape[1]} thresholds, not {len(DEFAULT_THRESHOLDS)}",
                    "re-run evaluate.json",
                )
            folder_names = sections
            tables[key].append(scores)
        per_evaluation.append(
            {
                "evaluation": str(folder),
                "sections": len(folder_names or []),
                **_scores({k: v[-1] for k, v in tables.items()}),
            }
        )
        names.extend(folder_names or [])
    return names, {key: np.concatenate(parts) for key, parts in tables.items()}, per_evaluation


def _scores(tables: dict[str, np.ndarray]) -> dict[str, float]:
    """V_rand and V_info (section mean at each threshold, best threshold) and Dice (section mean) of the rows."""
    return {
        "v_rand": best_of_curve(mean_over_sections(tables["v_rand"]))[0],
        "v_info": best_of_curve(mean_over_sections(tables["v_info"]))[0],
        "mean_dice": float(np.nanmean(tables["mean_dice"])),
    }


def pooled_scores(evaluations: Sequence[str | os.PathLike]) -> dict:
    """ISBI V_rand, V_info and Dice over the sections of several ``configs/evaluate.json`` runs taken together.

    Each folder holds one evaluation's per-section files (``v_rand_raw.csv``, ``v_info_raw.csv``,
    ``mean_dice_raw.csv``), e.g. the held-out block of each cross-validation fold (``--val_fold k``). As within one
    evaluation, V_rand and V_info average the sections at each threshold and take the best threshold, and Dice is
    the mean over sections, so pooling the folds scores the union of their sections as one evaluation would (from
    the four decimals MetricsSaver writes).

    Returns ``{"sections": N, "v_rand", "v_info", "mean_dice", "best_threshold_rand", "best_threshold_info",
    "per_evaluation": [{"evaluation": folder, "sections": n, "v_rand", "v_info", "mean_dice"}, ...]}``.
    """
    names, tables, per_evaluation = _per_section_tables(evaluations)
    return {
        "sections": len(names),
        **_scores(tables),
        "best_threshold_rand": best_of_curve(mean_over_sections(tables["v_rand"]))[1],
        "best_threshold_info": best_of_curve(mean_over_sections(tables["v_info"]))[1],
        "per_evaluation": per_evaluation,
    }


def compare_pooled(
    evaluations: Sequence[str | os.PathLike],
    baseline: Sequence[str | os.PathLike],
    resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Pooled scores of ``evaluations`` against ``baseline`` on the same sections, with a paired bootstrap.

    Both lists must score the same sections in the same order (e.g. the same cross-validation folds of two
    models). Sections are drawn with replacement ``resamples`` times, the same draw for both models, and each
    draw is scored as :func:`pooled_scores` does. The spread of the differences shows how much of a lead the
    choice of sections could give.

    Returns ``{"sections": N, "scores": {...}, "baseline_scores": {...}, "difference": {metric: d},
    "ci95": {metric: [low, high]}, "p_better": {metric: share of draws where evaluations > baseline}}``, metrics
    ``v_rand``, ``v_info``, ``mean_dice``.
    """
    names, tables, _ = _per_section_tables(evaluations)
    base_names, base_tables, _ = _per_section_tables(baseline)
    if names != base_names:
        raise BundleInputError(
            "baseline", f"scores other sections ({len(base_names)}) than the evaluations ({len(names)})",
            "compare evaluations of the same folds, in the same order",
        )  # fmt: skip
    scores, base_scores = _scores(tables), _scores(base_tables)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {key: [] for key in scores}
    for _ in range(int(resamples)):
        rows = rng.integers(0, len(names), len(names))
        a = _scores({k: v[rows] for k, v in tables.items()})
        b = _scores({k: v[rows] for k, v in base_tables.items()})
        for key in draws:
            draws[key].append(a[key] - b[key])
    return {
        "sections": len(names),
        "scores": scores,
        "baseline_scores": base_scores,
        "difference": {key: scores[key] - base_scores[key] for key in scores},
        "ci95": {key: np.percentile(d, [2.5, 97.5]).round(5).tolist() for key, d in draws.items()},
        "p_better": {key: float(np.mean(np.asarray(d) > 0)) for key, d in draws.items()},
    }


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
            seg_path,
            f"shape {seg.shape} differs from the labels' {truth.shape} ({labels_path})",
            "score matching files",
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
