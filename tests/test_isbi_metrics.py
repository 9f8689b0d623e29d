# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""ISBI 2012 V_rand / V_info: hand-computed cases, independent references, the threshold pipeline, MONAI wrappers."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import ndimage
from scripts.isbi_metrics import (
    DEFAULT_THRESHOLDS,
    VInfo,
    VInfoMetric,
    VRand,
    VRandMetric,
    _benchmark_stack,
    isbi_scores,
    rand_info_scores,
    threshold_segments,
)
from skimage.metrics import adapted_rand_error, variation_of_information
from skimage.segmentation import watershed


def entropy(*counts: int) -> float:
    """Natural-log entropy of a partition given its segment sizes."""
    n = sum(counts)
    return -sum(c / n * math.log(c / n) for c in counts)


def slow_reference(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Dictionary-based V_rand / V_info straight from the definitions (GT 0 ignored, predicted 0 = singletons)."""
    fresh = itertools.count()
    pairs, a, b = Counter(), Counter(), Counter()
    for g, s in zip(gt.ravel().tolist(), pred.ravel().tolist()):
        if g == 0:
            continue
        if s == 0:
            s = ("singleton", next(fresh))
        pairs[(g, s)] += 1
        a[g] += 1
        b[s] += 1
    n = sum(a.values())
    sum_p2 = sum((c / n) ** 2 for c in pairs.values())
    precision = sum_p2 / sum((c / n) ** 2 for c in b.values())
    recall = sum_p2 / sum((c / n) ** 2 for c in a.values())
    v_rand = 2 / (1 / precision + 1 / recall)
    h_a, h_b, h_ab = entropy(*a.values()), entropy(*b.values()), entropy(*pairs.values())
    v_info = 1.0 if h_a + h_b == 0 else 2 * (h_a + h_b - h_ab) / (h_a + h_b)
    return v_rand, v_info


def singletons_relabelled(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``pred`` with every predicted-0 pixel in the GT foreground given its own new label (others unchanged)."""
    out = pred.astype(np.int64).copy()
    zeros = (pred == 0) & (gt != 0)
    out[zeros] = out.max() + 1 + np.arange(int(zeros.sum()))
    return out


def random_labels(rng: np.random.Generator, shape: tuple[int, ...], n_gt: int, n_pred: int):
    """Blocky random GT (with zeros) and a prediction that partly agrees with it and has zero-lines."""
    coarse = tuple(max(s // 4, 1) for s in shape)
    gt = ndimage.zoom(rng.integers(0, n_gt, size=coarse), [s / c for s, c in zip(shape, coarse)], order=0)
    pred = np.where(rng.random(shape) < 0.7, gt * 3 + 1, rng.integers(0, n_pred, size=shape))
    pred[rng.random(shape) < 0.15] = 0
    return gt[tuple(slice(0, s) for s in shape)], pred[tuple(slice(0, s) for s in shape)]


# ---------------------------------------------------------------- rand_info_scores: hand-computed cases


def test_perfect_prediction_scores_one() -> None:
    gt = np.array([[1, 1, 0, 2, 2], [1, 1, 0, 2, 2], [0, 0, 0, 0, 0], [3, 3, 0, 4, 4]])
    # other label values, and anything (even 0 or a merge) where the GT is membrane: ignored
    pred = np.array([[7, 7, 0, 9, 9], [7, 7, 9, 9, 9], [5, 0, 5, 5, 5], [8, 8, 5, 6, 6]])
    assert rand_info_scores(gt, pred) == (1.0, 1.0)
    assert rand_info_scores(torch.as_tensor(gt), torch.as_tensor(pred)) == (1.0, 1.0)


def test_merge_of_two_cells() -> None:
    gt = np.array([[1, 1, 1, 2]])
    pred = np.array([[5, 5, 5, 5]])
    # n = 4; p_ij = 3/4 (cell 1), 1/4 (cell 2); a = (3/4, 1/4); b = (1)
    # sum p_ij^2 = 9/16 + 1/16 = 10/16; sum a^2 = 10/16; sum b^2 = 1
    # precision = (10/16) / 1 = 10/16; recall = (10/16) / (10/16) = 1
    # V_rand = 2 P R / (P + R) = (20/16) / (26/16) = 10/13
    v_rand, v_info = rand_info_scores(gt, pred)
    assert v_rand == pytest.approx(10 / 13, abs=1e-12)
    # H(seg) = 0, so I = 0 and V_info = 0 / H(GT) = 0
    assert v_info == 0.0


def test_split_of_one_cell() -> None:
    gt = np.array([[4, 4, 4, 4]])
    pred = np.array([[1, 1, 1, 2]])
    # n = 4; p_ij = 3/4, 1/4; a = (1); b = (3/4, 1/4)
    # sum p_ij^2 = 10/16; sum a^2 = 1; sum b^2 = 10/16 -> precision = 1, recall = 10/16 -> V_rand = 10/13
    v_rand, v_info = rand_info_scores(gt, pred)
    assert v_rand == pytest.approx(10 / 13, abs=1e-12)
    assert v_info == 0.0  # H(GT) = 0, so I = 0


def test_predicted_zero_pixels_are_singletons() -> None:
    gt = np.array([[1, 1, 1, 2, 2]])
    pred = np.array([[3, 3, 0, 4, 4]])
    # n = 5; table: (1,3) = 2, (1,singleton) = 1, (2,4) = 2 pixels
    # sum p_ij^2 = (4 + 1 + 4) / 25 = 9/25; sum b^2 = (4 + 1 + 4) / 25 = 9/25; sum a^2 = (9 + 4) / 25 = 13/25
    # precision = 1, recall = 9/13 -> V_rand = 2 (9/13) / (22/13) = 9/11
    v_rand, v_info = rand_info_scores(gt, pred)
    assert v_rand == pytest.approx(9 / 11, abs=1e-12)
    # the joint partition equals the predicted one (precision 1), so I = H(GT) and V_info = 2 H(GT) / (H(GT) + H(seg))
    h_gt, h_seg = entropy(3, 2), entropy(2, 1, 2)
    assert v_info == pytest.approx(2 * h_gt / (h_gt + h_seg), abs=1e-12)

    gt, pred = np.array([[1, 1, 1, 1]]), np.array([[0, 0, 1, 1]])
    # singletons: sum c^2 = 1 + 1 + 4 = 6 = sum b^2, sum a^2 = 16 -> V_rand = 12 / 22 = 6/11
    assert rand_info_scores(gt, pred)[0] == pytest.approx(6 / 11, abs=1e-12)
    # predicted 0 as one ordinary segment: sum c^2 = 4 + 4 = 8 = sum b^2 -> V_rand = 16 / 24 = 2/3
    assert rand_info_scores(gt, pred, pred_zero_singletons=False)[0] == pytest.approx(2 / 3, abs=1e-12)


def test_all_boundary_prediction() -> None:
    gt = np.array([[1, 1, 0, 2]])
    pred = np.zeros_like(gt)
    # n = 3 GT-foreground pixels, each its own predicted segment
    # sum p_ij^2 = 3/9 = sum b^2; sum a^2 = (4 + 1) / 9 -> precision = 1, recall = 3/5 -> V_rand = (6/5) / (8/5) = 3/4
    v_rand, v_info = rand_info_scores(gt, pred)
    assert v_rand == pytest.approx(3 / 4, abs=1e-12)
    # H(seg) = H(joint) = log 3, so I = H(GT)
    h_gt = entropy(2, 1)
    assert v_info == pytest.approx(2 * h_gt / (h_gt + math.log(3)), abs=1e-12)


def test_degenerate_cases() -> None:
    # one GT segment, one predicted segment: H(GT) + H(seg) = 0 -> V_info defined as 1
    assert rand_info_scores(np.ones((3, 3), int), np.full((3, 3), 2)) == (1.0, 1.0)
    # a single scored pixel predicted as boundary: identical partitions as well
    assert rand_info_scores(np.array([[0, 1]]), np.array([[3, 0]])) == (1.0, 1.0)
    # no GT foreground at all: undefined
    assert all(math.isnan(v) for v in rand_info_scores(np.zeros((2, 2), int), np.ones((2, 2), int)))
    with pytest.raises(ValueError, match="same shape"):
        rand_info_scores(np.ones((2, 2), int), np.ones((2, 3), int))


def test_ignore_gt_zero_false_scores_gt_zero_as_a_segment() -> None:
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[1, 1, 1, 1]])
    # all 4 pixels scored; merge of two 2-pixel segments: sum p^2 = 8/16 = sum a^2, sum b^2 = 1 -> V_rand = 1 / 1.5
    assert rand_info_scores(gt, pred, ignore_gt_zero=False)[0] == pytest.approx(2 / 3, abs=1e-12)
    assert rand_info_scores(gt, pred) == (1.0, 1.0)  # only GT cell 1 is scored: perfect


# ---------------------------------------------------------------- rand_info_scores: independent references


@pytest.mark.parametrize("shape", [(23, 31), (4, 12, 10)])
def test_matches_slow_dictionary_reference(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    gt, pred = random_labels(rng, shape, n_gt=9, n_pred=6)
    expected = slow_reference(gt, pred)
    assert rand_info_scores(gt, pred) == pytest.approx(expected, abs=1e-12)
    # huge / sparse label values take the np.unique path and must give the same result
    assert rand_info_scores(gt * 1_000_003, pred.astype(np.int64) * 2**40) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("shape", [(40, 50), (5, 20, 24)])
def test_v_rand_agrees_with_skimage_adapted_rand_error(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1 + len(shape))
    gt, pred = random_labels(rng, shape, n_gt=12, n_pred=8)
    v_rand, _ = rand_info_scores(gt, pred)
    are, sk_precision, sk_recall = adapted_rand_error(gt, singletons_relabelled(gt, pred), ignore_labels=(0,))
    # skimage counts pairs of *distinct* pixels: with C = sum n_ij^2, A = sum a_i^2, B = sum b_j^2 (counts) and
    # n scored pixels, sk_precision = (C - n) / (A - n) and sk_recall = (C - n) / (B - n); the challenge's formula
    # keeps the self-pairs: V_rand = 2 C / (A + B). A is easy to count; recover C and B from skimage's ratios.
    n = int((gt != 0).sum())
    sizes = np.unique(gt[gt != 0], return_counts=True)[1].astype(float)
    a2 = float(sizes @ sizes)
    c2 = n + sk_precision * (a2 - n)
    b2 = n + (c2 - n) / sk_recall
    assert v_rand == pytest.approx(2 * c2 / (a2 + b2), abs=1e-10)
    # so "V_rand = 1 - are" holds up to the self-pair terms only (small for large segments)
    assert v_rand == pytest.approx(1 - are, abs=0.05)


def test_v_info_agrees_with_skimage_variation_of_information() -> None:
    rng = np.random.default_rng(5)
    gt, pred = random_labels(rng, (36, 44), n_gt=10, n_pred=7)
    _, v_info = rand_info_scores(gt, pred)
    relabelled = singletons_relabelled(gt, pred)
    # conditional entropies in bits over the GT foreground; normalize with the marginal entropies (bits too)
    h_cond = variation_of_information(gt, relabelled, ignore_labels=(0,)).sum()
    fg = gt != 0
    h_gt = entropy(*np.unique(gt[fg], return_counts=True)[1].tolist()) / math.log(2)
    h_seg = entropy(*np.unique(relabelled[fg], return_counts=True)[1].tolist()) / math.log(2)
    # VI = H(GT|seg) + H(seg|GT) = H(GT) + H(seg) - 2 I  ->  V_info = 2 I / (H(GT) + H(seg)) = 1 - VI / (H(GT) + H(seg))
    assert v_info == pytest.approx(1 - h_cond / (h_gt + h_seg), abs=1e-10)
    assert 0.0 < v_info < 1.0


# ---------------------------------------------------------------- threshold pipeline


def test_threshold_segments_seeds_watershed_and_lines() -> None:
    rng = np.random.default_rng(0)
    prob, _ = _benchmark_stack(1, 64, seed=3)
    p = prob[0]
    seg = threshold_segments(p, 0.5)
    assert seg.dtype == np.uint32 and seg.shape == p.shape
    assert np.array_equal(
        seg, watershed(p.astype(np.float64), ndimage.label(1 - p > 0.5)[0], connectivity=1, watershed_line=True)
    )
    # seeds keep one label each; different segments never touch 4-connectedly (1-pixel lines of 0 between them)
    assert (seg[(1 - p) > 0.5] > 0).all()
    for a, b in ((seg[:, 1:], seg[:, :-1]), (seg[1:, :], seg[:-1, :])):
        assert not ((a != b) & (a > 0) & (b > 0)).any()
    # no seeds at all: every pixel is boundary
    assert not threshold_segments(p, 1.0).any()
    # one seed floods everything, exactly as the watershed would
    one = np.full((5, 6), 0.9)
    one[2, 1:3] = 0.1
    assert np.array_equal(
        threshold_segments(one, 0.5),
        watershed(one, ndimage.label(1 - one > 0.5)[0], connectivity=1, watershed_line=True),
    )
    assert (threshold_segments(one, 0.5) == 1).all()
    with pytest.raises(ValueError, match="probability"):
        threshold_segments(rng.normal(size=(4, 4)) * 5, 0.5)


def gap_stack() -> tuple[np.ndarray, np.ndarray]:
    """Two sections of 6 x 9: cells of 18 (x 0..2) and 30 pixels (x 4..8) split by a membrane column at x = 3.

    Section 0's membrane map has a weak pixel (p = 0.35) in that column, section 1's is perfect.
    """
    label = np.full((6, 9), 255, np.uint8)
    label[:, 3] = 0
    prob = np.where(label == 0, 1.0, 0.05)
    leaky = prob.copy()
    leaky[2, 3] = 0.35
    return np.stack([leaky, prob]), np.stack([label, label])


def test_isbi_scores_on_a_leaky_membrane() -> None:
    prob, label = gap_stack()
    t = list(DEFAULT_THRESHOLDS)
    # section 0, t <= 0.6: q = 0.65 > t at the gap joins both cells into one seed -> merge of 18 and 30:
    #   sum c^2 = 18^2 + 30^2 = 1224 = sum a^2, sum b^2 = 48^2 = 2304 -> V_rand = 2448 / 3528 = 34/49, V_info = 0
    # t in 0.7 .. 0.9: two seeds, every cell pixel labelled correctly -> 1, 1 (section 1: 1, 1 for all t < 1)
    # t = 1.0: no seed, 48 singletons: sum c^2 = sum b^2 = 48 -> V_rand = 96 / 1272 = 4/53,
    #   V_info = 2 H(GT) / (H(GT) + log 48) (the joint partition is the singleton one, so I = H(GT))
    h_gt = entropy(18, 30)
    rand_0 = [34 / 49] * 7 + [1.0] * 3 + [4 / 53]
    info_0 = [0.0] * 7 + [1.0] * 3 + [2 * h_gt / (h_gt + math.log(48))]
    single = isbi_scores(prob[0], label[0])
    assert single["curves"]["v_rand"] == pytest.approx(rand_0, abs=1e-12)
    assert single["curves"]["v_info"] == pytest.approx(info_0, abs=1e-12)
    assert (single["v_rand"], single["best_threshold_rand"]) == (1.0, 0.7)
    assert (single["v_info"], single["best_threshold_info"]) == (1.0, 0.7)
    # the stack: section averages at each threshold, then the max over thresholds
    both = isbi_scores(prob, label)
    assert both["curves"]["v_rand"] == pytest.approx([(r + 1) / 2 for r in rand_0[:10]] + [4 / 53], abs=1e-12)
    assert both["v_rand"] == 1.0 and both["best_threshold_rand"] == 0.7
    assert both["thresholds"] == t
    # the pipeline is rand_info_scores on threshold_segments against the 4-connected GT cells
    for k in (0, 6, 7, 10):
        assert both["curves"]["v_info"][k] == pytest.approx(
            np.mean(
                [rand_info_scores(ndimage.label(lab)[0], threshold_segments(p, t[k]))[1] for p, lab in zip(prob, label)]
            ),
            abs=1e-12,
        )
    # custom thresholds; only the leaky thresholds -> best is the merge value
    low = isbi_scores(prob[0], label[0], thresholds=[0.2, 0.4])
    assert low["curves"]["v_rand"] == pytest.approx([34 / 49] * 2) and low["best_threshold_rand"] == 0.2


def test_isbi_scores_on_synthetic_voronoi_maps() -> None:
    prob, label = _benchmark_stack(2, 128, seed=1)
    result = isbi_scores(prob, label)
    assert len(result["curves"]["v_rand"]) == len(result["curves"]["v_info"]) == 11
    assert 0.0 < result["v_rand"] <= 1.0 and 0.0 < result["v_info"] <= 1.0
    assert result["v_rand"] == max(result["curves"]["v_rand"])
    assert result["curves"]["v_rand"][10] < 0.05  # t = 1: all singletons
    # the ideal membrane map (the label itself) scores 1 at every threshold below 1
    ideal = isbi_scores((label == 0).astype(np.float32), label)
    assert ideal["curves"]["v_rand"][:10] == [1.0] * 10 and ideal["curves"]["v_info"][:10] == [1.0] * 10
    assert result["v_rand"] < 1.0
    # a section without any cell pixel is left out of the averages
    padded = isbi_scores(
        np.concatenate([prob, np.ones((1, 128, 128), np.float32)]),
        np.concatenate([label, np.zeros((1, 128, 128), np.uint8)]),
    )
    for key in ("v_rand", "v_info"):
        assert padded["curves"][key] == pytest.approx(result["curves"][key], abs=1e-12)
    empty = isbi_scores(np.ones((8, 8)), np.zeros((8, 8)))
    assert math.isnan(empty["v_rand"]) and math.isnan(empty["best_threshold_info"])
    with pytest.raises(ValueError, match="same shape"):
        isbi_scores(prob, label[:1])


# ---------------------------------------------------------------- MONAI metrics and ignite handlers


def as_batch(prob: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(Z, Y, X) probability + ISBI labels -> (Z, 1, Y, X) y_pred and membrane target y (1 = membrane)."""
    return torch.as_tensor(prob[:, None], dtype=torch.float32), torch.as_tensor(label[:, None] == 0).float()


def test_metric_aggregate_equals_isbi_scores() -> None:
    prob, label = _benchmark_stack(3, 48, seed=2)
    prob = prob.astype(np.float32)
    expected = isbi_scores(prob, label)
    y_pred, y = as_batch(prob, label)
    for cls, key in ((VRandMetric, "v_rand"), (VInfoMetric, "v_info")):
        metric = cls()
        per_item = metric(y_pred[:2], y[:2])
        assert per_item.shape == (2, 11)
        metric([y_pred[2]], [y[2]])  # a list of channel-first tensors, as from_engine gives after decollation
        assert metric.aggregate().ndim == 0
        assert metric.aggregate().item() == pytest.approx(expected[key], abs=1e-12)
        assert metric.aggregate_curve().tolist() == pytest.approx(expected["curves"][key], abs=1e-12)
        assert metric.best_threshold() == expected[f"best_threshold_{key[2:]}"]
        metric.reset()
        with pytest.raises(RuntimeError, match="nothing accumulated"):
            metric.aggregate()


def test_metric_weights_volume_items_by_their_sections() -> None:
    prob, label = gap_stack()
    prob = np.concatenate([prob, prob[:1]])  # 3 sections: leaky, perfect, leaky
    label = np.concatenate([label, label[:1]])
    y_pred, y = as_batch(prob, label)
    metric = VRandMetric(thresholds=[0.5, 1.0])
    # (B, 1, Z, Y, X): one item of 2 sections, then one of 1 section
    metric(y_pred[:2].permute(1, 0, 2, 3)[None], y[:2].permute(1, 0, 2, 3)[None])
    metric(y_pred[2:].permute(1, 0, 2, 3)[None], y[2:].permute(1, 0, 2, 3)[None])
    expected = isbi_scores(prob, label, thresholds=[0.5, 1.0])
    # at t = 0.5: (34/49 + 1 + 34/49) / 3, the section average, not the item average (34/49 + 1) / 2 / 2 + ...
    assert metric.aggregate_curve().tolist() == pytest.approx(expected["curves"]["v_rand"], abs=1e-12)
    assert metric.aggregate().item() == pytest.approx((2 * 34 / 49 + 1) / 3, abs=1e-12)
    with pytest.raises(ValueError, match="probability"):
        VRandMetric()(y_pred * 3, y)
    with pytest.raises(ValueError, match="B, 1"):
        VRandMetric()(y_pred[:, 0], y[:, 0])


def test_ignite_handlers_report_the_metric() -> None:
    from ignite.engine import Engine
    from monai.handlers import from_engine

    prob, label = _benchmark_stack(3, 48, seed=4)
    y_pred, y = as_batch(prob, label)
    batches = [{"pred": y_pred[:2], "label": y[:2]}, {"pred": y_pred[2:], "label": y[2:]}]
    engine = Engine(lambda engine, batch: batch)
    VRand(output_transform=from_engine(["pred", "label"])).attach(engine, "v_rand")
    VInfo(output_transform=from_engine(["pred", "label"]), thresholds=[0.3, 0.6, 0.9]).attach(engine, "v_info")
    engine.run(batches, max_epochs=1)
    assert engine.state.metrics["v_rand"] == pytest.approx(isbi_scores(prob, label)["v_rand"], abs=1e-6)
    expected_info = isbi_scores(prob, label, thresholds=[0.3, 0.6, 0.9])["v_info"]
    assert engine.state.metrics["v_info"] == pytest.approx(expected_info, abs=1e-6)
    assert tuple(engine.state.metric_details["v_rand"].shape) == (3, 11)
    assert tuple(engine.state.metric_details["v_info"].shape) == (3, 3)
