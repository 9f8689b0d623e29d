# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""V_rand and V_info as the ISBI 2012 EM segmentation challenge computes them, plus MONAI metrics and handlers.

The challenge scores a membrane probability map ``p`` (1 = membrane) against an ISBI label image (0 = membrane,
non-zero = cell interior) as follows, for each threshold ``t`` of :data:`DEFAULT_THRESHOLDS`:

1. ground-truth segments are the 4-connected components of the cell pixels (``label != 0``); membrane pixels
   are left out entirely ("foreground-restricted" scoring: only the ``n`` ground-truth cell pixels count);
2. predicted segments: the 4-connected components of ``q = 1 - p > t`` are seeds, a 4-connected watershed of
   ``p`` grows them over the membrane until only 1-pixel lines (label 0) separate them
   (:func:`threshold_segments`);
3. over the ground-truth cell pixels, the contingency table ``p_ij`` (fraction of pixels in ground-truth segment
   ``i`` and predicted segment ``j``) is built; predicted label-0 pixels are singletons, each its own segment;
4. ``V_rand = 2 sum_ij p_ij^2 / (sum_i a_i^2 + sum_j b_j^2)``, the harmonic mean of
   ``precision = sum p_ij^2 / sum b_j^2`` and ``recall = sum p_ij^2 / sum a_i^2`` (``a``, ``b``: row and column
   marginals);
5. ``V_info = 2 I(GT; seg) / (H(GT) + H(seg))``;
6. each score is averaged over the sections at each threshold; the reported score is the maximum of that
   average over the thresholds (one global threshold for the whole stack).

:func:`rand_info_scores` scores two given label arrays of any dimension (2D sections or 3D instance
segmentations), :func:`isbi_scores` runs the whole threshold pipeline on a stack, :class:`VRandMetric` /
:class:`VInfoMetric` wrap it as MONAI cumulative metrics and :class:`VRand` / :class:`VInfo` as ignite handlers
for bundle configs, e.g.
``{"_target_": "scripts.isbi_metrics.VRand", "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}``.
The handlers need the membrane *probability* map as ``pred``, not a thresholded one.

Degenerate cases:
    - no scored pixel (no ground-truth foreground): both scores are NaN; such sections are left out of the
      section averages, and a stack without any foreground scores NaN with NaN best thresholds;
    - ``H(GT) + H(seg) == 0`` (one ground-truth segment and one predicted segment, so the partitions are
      identical): ``V_info = 1``; ``V_rand`` is never degenerate once ``n > 0`` (``sum a_i^2 > 0``);
    - ties between thresholds: the smallest threshold reaching the maximum is reported.

Unlike ``skimage.metrics.adapted_rand_error`` (which counts distinct pixel pairs, i.e. subtracts the self-pairs,
and treats predicted label 0 as one ordinary segment), ``p_ij`` here are plain pixel fractions as in the
challenge, so self-pairs are included and ``V_rand`` of a perfect prediction is exactly 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from scipy import ndimage
from skimage.segmentation import watershed

__all__ = [
    "DEFAULT_THRESHOLDS",
    "rand_info_scores",
    "threshold_segments",
    "isbi_scores",
    "mean_over_sections",
    "best_of_curve",
    "ISBIMetric",
    "VRandMetric",
    "VInfoMetric",
    "VRand",
    "VInfo",
    "benchmark_isbi_scoring",
]

#: The challenge's thresholds on the cell-interior probability ``q = 1 - p``: 0.0, 0.1, ..., 1.0.
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))

_SCORES = ("rand", "info")
# above this many pixels, squared counts could overflow int64: sum them as float64 instead
_INT64_SAFE_N = 3_000_000_000
# np.bincount is used for label compaction / joint counts while the count array stays this small (else np.unique)
_BINCOUNT_MIN_LIMIT = 1 << 22


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map 1D ``labels`` to consecutive indices ``0..K-1``; returns ``(indices (N,) int64, counts (K,) int64)``."""
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.uint64:
        lo, hi = int(labels.min()), int(labels.max())
        if lo >= 0 and hi < max(4 * labels.size, _BINCOUNT_MIN_LIMIT):
            counts = np.bincount(labels)
            present = counts > 0
            remap = np.cumsum(present) - 1
            return remap[labels], counts[present]
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return inverse.reshape(-1).astype(np.int64, copy=False), counts.astype(np.int64, copy=False)


def _joint_counts(keys: np.ndarray, n_keys: int) -> np.ndarray:
    """Non-zero counts of the int64 ``keys`` (values in ``0..n_keys-1``), in no particular order."""
    if keys.size == 0:
        return np.zeros(0, dtype=np.int64)
    if n_keys <= max(4 * keys.size, _BINCOUNT_MIN_LIMIT):
        counts = np.bincount(keys, minlength=0)
        return counts[counts > 0]
    return np.unique(keys, return_counts=True)[1].astype(np.int64, copy=False)


def _sum_sq(counts: np.ndarray, n: int) -> float:
    """``sum(counts**2)``, exact in int64 while it cannot overflow (``n`` = total of ``counts``)."""
    if n < _INT64_SAFE_N:
        return float(np.dot(counts, counts))
    c = counts.astype(np.float64)
    return float(np.dot(c, c))


def _sum_xlogx(counts: np.ndarray) -> float:
    """``sum(c * log(c))`` over the counts (all >= 1, so singletons contribute 0)."""
    c = counts.astype(np.float64)
    return float(np.dot(c, np.log(c))) if c.size else 0.0


@dataclass
class _GroundTruth:
    """Ground-truth side of the contingency table, computed once and reused for many predictions."""

    shape: tuple[int, ...]
    mask: np.ndarray | None  # flat bool mask of the scored pixels, None = all pixels
    index: np.ndarray  # (n,) int64 compact ground-truth segment index of each scored pixel
    n_segments: int
    n: int
    sum_a2: float  # sum of squared segment sizes (pixel counts)
    xlogx_a: float  # sum of a log a over segment sizes


def _prepare_gt(gt: np.ndarray, ignore_gt_zero: bool) -> _GroundTruth:
    gt = np.asarray(gt)
    flat = gt.reshape(-1)
    mask = flat != 0 if ignore_gt_zero else None
    scored = flat[mask] if mask is not None else flat
    index, counts = _compact(scored)
    n = int(scored.size)
    return _GroundTruth(gt.shape, mask, index, int(counts.size), n, _sum_sq(counts, n), _sum_xlogx(counts))


def _score(gt: _GroundTruth, pred: np.ndarray, pred_zero_singletons: bool) -> tuple[float, float]:
    """``(V_rand, V_info)`` of ``pred`` against the prepared ground truth ``gt``."""
    pred = np.asarray(pred)
    if pred.shape != gt.shape:
        raise ValueError(f"gt and pred must have the same shape, got {gt.shape} and {pred.shape}.")
    n = gt.n
    if n == 0:
        return float("nan"), float("nan")
    flat = pred.reshape(-1)
    s = flat[gt.mask] if gt.mask is not None else flat
    g = gt.index
    n_singletons = 0
    if pred_zero_singletons:
        labelled = s != 0
        n_singletons = n - int(np.count_nonzero(labelled))
        if n_singletons:
            s, g = s[labelled], g[labelled]
    s_index, b = _compact(s)
    c = _joint_counts(g * max(int(b.size), 1) + s_index, gt.n_segments * max(int(b.size), 1))

    # V_rand: p_ij = c_ij / n, so the 1/n^2 factors cancel; each singleton adds 1 to sum c^2 and to sum b^2
    sum_c2 = _sum_sq(c, n) + n_singletons
    sum_b2 = _sum_sq(b, n) + n_singletons
    v_rand = 2.0 * sum_c2 / (gt.sum_a2 + sum_b2)

    # V_info (natural log): H(X) = log n - sum(x log x) / n over the counts x; singletons have x log x = 0
    log_n = float(np.log(n))
    h_gt = max(log_n - gt.xlogx_a / n, 0.0)
    h_seg = max(log_n - _sum_xlogx(b) / n, 0.0)
    h_joint = max(log_n - _sum_xlogx(c) / n, 0.0)
    denom = h_gt + h_seg
    if denom <= 1e-12 * max(log_n, 1.0):
        v_info = 1.0  # one segment on each side: identical partitions
    else:
        v_info = min(max(2.0 * (h_gt + h_seg - h_joint) / denom, 0.0), 1.0)
    return float(v_rand), float(v_info)


def rand_info_scores(
    gt_labels: np.ndarray | torch.Tensor,
    pred_labels: np.ndarray | torch.Tensor,
    ignore_gt_zero: bool = True,
    pred_zero_singletons: bool = True,
) -> tuple[float, float]:
    """Foreground-restricted ``(V_rand, V_info)`` of two label arrays of the same shape (2D, 3D or any dimension).

    Labels are used as given (no connected-component relabelling): pixels/voxels sharing a label form one segment.

    Args:
        gt_labels: ground-truth instance labels, shape ``(Y, X)`` or ``(Z, Y, X)`` (any shape), integer labels.
        pred_labels: predicted instance labels, same shape.
        ignore_gt_zero: score only the pixels where ``gt_labels != 0`` (the challenge's foreground restriction);
            if False, ground-truth 0 is an ordinary segment.
        pred_zero_singletons: each pixel with ``pred_labels == 0`` (a boundary line) is its own segment; if False,
            predicted 0 is an ordinary segment.

    Returns:
        ``(v_rand, v_info)`` in ``[0, 1]``; ``(nan, nan)`` if no pixel is scored. ``v_info`` is 1 when both sides
        consist of a single segment (``H(GT) + H(seg) == 0``).
    """
    gt = gt_labels.detach().cpu().numpy() if isinstance(gt_labels, torch.Tensor) else np.asarray(gt_labels)
    pred = pred_labels.detach().cpu().numpy() if isinstance(pred_labels, torch.Tensor) else np.asarray(pred_labels)
    return _score(_prepare_gt(gt, ignore_gt_zero), pred, pred_zero_singletons)


def _check_probability(prob: np.ndarray) -> np.ndarray:
    prob = np.asarray(prob, dtype=np.float64)
    if prob.size and not (np.isfinite(prob).all() and prob.min() >= -1e-6 and prob.max() <= 1.0 + 1e-6):
        raise ValueError(
            f"the membrane map must be a probability in [0, 1], got values in [{np.nanmin(prob)}, {np.nanmax(prob)}]"
            " (apply a sigmoid to logits, and score the probability map, not a thresholded one)."
        )
    return np.clip(prob, 0.0, 1.0)


def threshold_segments(prob_membrane_2d: np.ndarray, t: float) -> np.ndarray:
    """Predicted segments of one section at threshold ``t``, as in the ISBI 2012 challenge.

    Seeds are the 4-connected components of ``1 - p > t``; a 4-connected watershed of ``p`` grows them over the
    membrane until 1-pixel lines separate them.

    Args:
        prob_membrane_2d: membrane probability ``p``, shape ``(Y, X)``, values in ``[0, 1]`` (1 = membrane).
        t: threshold on the cell-interior probability ``q = 1 - p``.

    Returns:
        ``(Y, X)`` uint32 labels ``1..K``, 0 = boundary line; all 0 when there is no seed (``q <= t`` everywhere).
    """
    p = _check_probability(prob_membrane_2d)
    if p.ndim != 2:
        raise ValueError(f"threshold_segments expects a 2D section (Y, X), got shape {p.shape}.")
    seeds = (1.0 - p) > t
    markers, n_seeds = ndimage.label(seeds)  # default structure: 4-connectivity
    if n_seeds == 0:
        return np.zeros(p.shape, dtype=np.uint32)
    if n_seeds == 1:
        return np.ones(p.shape, dtype=np.uint32)  # one seed floods everything, no line can form
    if seeds.all():
        return markers.astype(np.uint32)  # nothing left to flood
    return watershed(p, markers, connectivity=1, watershed_line=True).astype(np.uint32, copy=False)


def _as_stack(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3:
        raise ValueError(f"{name} must be (Z, Y, X) or (Y, X), got shape {array.shape}.")
    return array


def _section_curves(
    prob_stack: np.ndarray, label_stack: np.ndarray, thresholds: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-section, per-threshold scores: ``(v_rand (Z, T), v_info (Z, T))``; NaN rows for sections without cells."""
    probs, labels = _as_stack(prob_stack, "prob_stack"), _as_stack(label_stack, "label_stack")
    if probs.shape != labels.shape:
        raise ValueError(f"prob_stack and label_stack must have the same shape, got {probs.shape} and {labels.shape}.")
    thresholds = [float(t) for t in thresholds]
    if not thresholds:
        raise ValueError("thresholds must not be empty.")
    v_rand = np.full((probs.shape[0], len(thresholds)), np.nan)
    v_info = np.full_like(v_rand, np.nan)
    for z in range(probs.shape[0]):
        p = _check_probability(probs[z])
        gt_segments, _ = ndimage.label(labels[z] != 0)  # 4-connected cells; membrane = 0
        gt = _prepare_gt(gt_segments, ignore_gt_zero=True)
        if gt.n == 0:
            continue
        for k, t in enumerate(thresholds):
            v_rand[z, k], v_info[z, k] = _score(gt, threshold_segments(p, t), pred_zero_singletons=True)
    return v_rand, v_info


def mean_over_sections(scores: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted mean of ``scores`` (R, T) over the rows that are not NaN; NaN where no row is valid."""
    w = np.ones(scores.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    valid = ~np.isnan(scores) & (w[:, None] > 0)
    total = (np.where(valid, w[:, None], 0.0)).sum(axis=0)
    summed = np.where(valid, np.nan_to_num(scores) * w[:, None], 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, summed / np.maximum(total, 1e-300), np.nan)


def best_of_curve(curve: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> tuple[float, float]:
    """``(max of curve, smallest threshold reaching it)``; ``(nan, nan)`` if the curve is all NaN."""
    if np.isnan(curve).all():
        return float("nan"), float("nan")
    k = int(np.nanargmax(curve))
    return float(curve[k]), float(thresholds[k])


def isbi_scores(
    prob_stack: np.ndarray, label_stack: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> dict[str, Any]:
    """ISBI 2012 challenge scores of a membrane probability stack against its ISBI labels.

    Args:
        prob_stack: membrane probability, shape ``(Z, Y, X)`` or ``(Y, X)``, values in ``[0, 1]`` (1 = membrane).
        label_stack: ISBI labels of the same shape: 0 = membrane, non-zero = cell interior.
        thresholds: thresholds on the cell probability ``1 - p``, default 0.0, 0.1, ..., 1.0.

    Returns:
        ``{"v_rand": float, "v_info": float, "best_threshold_rand": float, "best_threshold_info": float,
        "curves": {"v_rand": [T floats], "v_info": [T floats]}, "thresholds": [T floats]}``: the curves are the
        section averages at each threshold (sections without any cell pixel left out), the scores their maxima.
    """
    thresholds = [float(t) for t in thresholds]
    v_rand, v_info = _section_curves(prob_stack, label_stack, thresholds)
    curve_rand, curve_info = mean_over_sections(v_rand), mean_over_sections(v_info)
    best_rand, t_rand = best_of_curve(curve_rand, thresholds)
    best_info, t_info = best_of_curve(curve_info, thresholds)
    return {
        "v_rand": best_rand,
        "v_info": best_info,
        "best_threshold_rand": t_rand,
        "best_threshold_info": t_info,
        "curves": {"v_rand": curve_rand.tolist(), "v_info": curve_info.tolist()},
        "thresholds": thresholds,
    }


class ISBIMetric(CumulativeIterationMetric):
    """ISBI 2012 V_rand or V_info of membrane probability maps, as a MONAI cumulative metric.

    Each call scores a batch at every threshold; :meth:`aggregate` averages over all accumulated sections at each
    threshold and returns the maximum over the thresholds, as :func:`isbi_scores` does for a stack.

    Args:
        score: "rand" for V_rand or "info" for V_info.
        thresholds: thresholds on the cell probability ``1 - p``, default 0.0, 0.1, ..., 1.0.

    Inputs:
        ``y_pred``: membrane probability, ``(B, 1, Y, X)``, or ``(B, 1, Z, Y, X)`` taken as ``Z`` sections; values in
        ``[0, 1]``. ``y``: membrane target of the same shape, 1 = membrane, 0 = cell (the inverse of the ISBI label
        file, as produced by ``scripts.transforms.MakeTargetd(target="membrane")``). Lists of channel-first tensors
        are accepted too.
    """

    def __init__(self, score: str = "rand", thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> None:
        if score not in _SCORES:
            raise ValueError(f"score must be one of {_SCORES}, got {score!r}.")
        self.score = score
        self.thresholds = [float(t) for t in thresholds]
        if not self.thresholds:
            raise ValueError("thresholds must not be empty.")
        self._section_counts: list[int] = []
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self._section_counts = []

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """Per-item scores at each threshold, shape ``(B, n_thresholds)``.

        For ``(B, 1, Z, Y, X)`` inputs an item's row is the mean over its ``Z`` sections (weighted by ``Z`` in
        :meth:`aggregate`). Items without any cell pixel give a NaN row, which :meth:`aggregate` leaves out.
        """
        if y is None:
            raise ValueError(f"{self.__class__.__name__} needs the target y.")
        if y_pred.ndim not in (4, 5) or y_pred.shape[1] != 1:
            raise ValueError(f"y_pred must be (B, 1, Y, X) or (B, 1, Z, Y, X), got shape {tuple(y_pred.shape)}.")
        if y.shape != y_pred.shape:
            raise ValueError(f"y_pred and y must have the same shape, got {tuple(y_pred.shape)} and {tuple(y.shape)}.")
        prob = torch.as_tensor(y_pred).detach().float().cpu().numpy()
        cells = (torch.as_tensor(y).detach().float().cpu().numpy() < 0.5).astype(np.uint8)  # y == 0: cell
        rows = []
        for b in range(prob.shape[0]):
            v_rand, v_info = _section_curves(prob[b, 0], cells[b, 0], self.thresholds)
            scores = v_rand if self.score == "rand" else v_info
            n_valid = int((~np.isnan(scores[:, 0])).sum())
            self._section_counts.append(n_valid)
            rows.append(mean_over_sections(scores))
        return torch.as_tensor(np.stack(rows), dtype=torch.float64, device=y_pred.device)

    def aggregate_curve(self) -> torch.Tensor:
        """Section-averaged score at each threshold over everything accumulated, shape ``(n_thresholds,)``."""
        buffer = self.get_buffer()
        if not isinstance(buffer, torch.Tensor) or buffer.numel() == 0:
            raise RuntimeError(f"{self.__class__.__name__}: nothing accumulated yet, call the metric on data first.")
        scores = buffer.detach().cpu().double().numpy().reshape(-1, len(self.thresholds))
        # weights = sections per item; fall back to equal weights if the buffer was gathered from other processes
        weights = np.asarray(self._section_counts) if len(self._section_counts) == scores.shape[0] else None
        return torch.as_tensor(mean_over_sections(scores, weights), dtype=torch.float64)

    def best_threshold(self) -> float:
        """The smallest threshold reaching the maximum of :meth:`aggregate_curve` (NaN if nothing was scored)."""
        return best_of_curve(self.aggregate_curve().numpy(), self.thresholds)[1]

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """Maximum over the thresholds of the section-averaged score, a scalar float64 tensor (NaN if no cell)."""
        return torch.tensor(best_of_curve(self.aggregate_curve().numpy(), self.thresholds)[0], dtype=torch.float64)


class VRandMetric(ISBIMetric):
    """ISBI 2012 foreground-restricted V_rand of membrane probability maps (see :class:`ISBIMetric`)."""

    def __init__(self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> None:
        super().__init__(score="rand", thresholds=thresholds)


class VInfoMetric(ISBIMetric):
    """ISBI 2012 foreground-restricted V_info of membrane probability maps (see :class:`ISBIMetric`)."""

    def __init__(self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> None:
        super().__init__(score="info", thresholds=thresholds)


class ISBIMetricHandler(IgniteMetricHandler):
    """Ignite handler for :class:`ISBIMetric`, built like ``monai.handlers.MeanDice``.

    Args:
        score: "rand" for V_rand or "info" for V_info.
        thresholds: thresholds on the cell probability ``1 - p``, default 0.0, 0.1, ..., 1.0.
        output_transform: extracts ``(y_pred, y)`` from ``engine.state.output``, e.g.
            ``monai.handlers.from_engine(["pred", "label"])``; ``pred`` must be the membrane probability map.
        save_details: store each item's per-threshold scores (``(N, n_thresholds)``) in
            ``engine.state.metric_details`` under the metric's name.
    """

    def __init__(
        self,
        score: str = "rand",
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric = ISBIMetric(score=score, thresholds=thresholds)
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=save_details)


class VRand(ISBIMetricHandler):
    """Ignite handler for ISBI 2012 V_rand (arguments as :class:`ISBIMetricHandler`, without ``score``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("rand", *args, **kwargs)


class VInfo(ISBIMetricHandler):
    """Ignite handler for ISBI 2012 V_info (arguments as :class:`ISBIMetricHandler`, without ``score``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("info", *args, **kwargs)


def _benchmark_stack(n_slices: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(membrane probability (Z, Y, X) float32, ISBI labels (Z, Y, X) uint8)``: synthetic EM labels, and a map
    that blurs their membranes, weakens some stretches of them and adds noise."""
    from .synthetic import make_em_stack

    rng = np.random.default_rng(seed)
    _, labels = make_em_stack((n_slices, size, size), seed=seed)
    membrane = labels == 0
    weak = ndimage.gaussian_filter(rng.normal(size=membrane.shape), (0, 8, 8)) > 0.02
    prob = ndimage.gaussian_filter(membrane * np.where(weak, 0.2, 1.0), (0, 1.0, 1.0)) * 2.0
    prob += ndimage.gaussian_filter(rng.normal(scale=0.3, size=membrane.shape), (0, 1.0, 1.0))
    return np.clip(prob, 0.0, 1.0).astype(np.float32), labels


def benchmark_isbi_scoring(n_slices: int = 10, size: int = 512) -> dict[str, float]:
    """Time :func:`isbi_scores` on a synthetic ``(n_slices, size, size)`` stack at the 11 default thresholds.

    Returns:
        ``{"seconds": scoring time, "seconds_per_slice": ..., "v_rand": ..., "v_info": ...}``; the time excludes
        making the synthetic data.
    """
    prob, labels = _benchmark_stack(n_slices, size)
    start = time.perf_counter()
    result = isbi_scores(prob, labels)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "seconds_per_slice": seconds / max(n_slices, 1),
        "v_rand": result["v_rand"],
        "v_info": result["v_info"],
    }
