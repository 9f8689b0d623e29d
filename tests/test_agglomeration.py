# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""3D neurons: the dense 3D watershed, agglomeration of its fragments (waterz), the 3D cell table."""

from __future__ import annotations

import numpy as np
import pytest
from scripts.agglomeration import affinities, agglomerate
from scripts.errors import BundleInputError
from scripts.instances import (
    AGGLOMERATION_3D,
    NEURONS_3D,
    boundary_lines,
    instance_options,
    resolve_instance_mode,
    seed_options,
    segment_cells,
)
from scripts.isbi_metrics import rand_info_scores
from scripts.morphology import COLUMNS_3D, cell_table

pytest.importorskip("waterz")


def _two_neurons(faint: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """A (12, 24, 48) map: two neurons split by a strong membrane at x = 24, the left one with a faint band at
    x = 12 (a blurred stretch of membrane inside one neuron); and the true labels."""
    prob = np.full((12, 24, 48), 0.05, np.float32)
    prob[:, :, 23:25] = 0.95
    prob[:, :, 11:13] = faint
    truth = np.where(np.arange(48) < 24, 1, 2)[None, None].repeat(12, 0).repeat(24, 1)
    return prob, truth


def test_affinities_are_one_minus_the_larger_probability() -> None:
    prob = np.array([[[0.1, 0.7, 0.2]]], np.float32)
    affs = affinities(prob)
    assert affs.shape == (3, 1, 1, 3)
    np.testing.assert_allclose(affs[2, 0, 0], [0.0, 0.3, 0.3])
    assert not affs[0].any() and not affs[1].any()  # no predecessor along z or y


def test_agglomeration_merges_across_faint_faces_only() -> None:
    prob, truth = _two_neurons()
    fragments = np.where(np.arange(48) < 12, 1, np.where(np.arange(48) < 24, 2, 3)).astype(np.uint32)
    fragments = np.broadcast_to(fragments, prob.shape).copy()
    merged = agglomerate(fragments, prob, 0.5)
    assert len(np.unique(merged)) == 2 and merged[0, 0, 0] == merged[0, 0, 20] != merged[0, 0, 30]
    assert len(np.unique(agglomerate(fragments, prob, 0.1))) == 3  # a faint face of 0.2 stays below 0.1: kept
    assert agglomerate(np.zeros((2, 3, 3), np.uint32), prob[:2, :3, :3], 0.5).max() == 0


def test_3d_neurons_with_agglomeration_score_better() -> None:
    prob, truth = _two_neurons()
    options = dict(seed_threshold=0.15, min_seed_size=4, seeds="components", seed_distance=2.0)
    split = segment_cells(prob, "3d", **options)
    merged = segment_cells(prob, "3d", **options, agglomeration=0.5)
    assert split.dtype == merged.dtype == np.uint32
    assert len(np.unique(split[split > 0])) == 3 and len(np.unique(merged[merged > 0])) == 2
    assert rand_info_scores(truth, merged)[0] > rand_info_scores(truth, split)[0]


def test_3d_neurons_are_dense_and_2d_cells_keep_their_lines() -> None:
    """Every voxel of a volume belongs to a neuron (no boundary singletons to lose against dense ground truth, as
    FIB-SEM's is); sections keep ISBI's 1-pixel lines."""
    prob, truth = _two_neurons()
    options = dict(seed_threshold=0.15, min_seed_size=4, seeds="components", agglomeration=0.5)
    neurons = segment_cells(prob, "3d", **options)
    assert neurons.min() == 1 and len(np.unique(neurons)) == 2
    assert rand_info_scores(truth, neurons)[0] == pytest.approx(1.0)
    cells = segment_cells(prob, "2d", **options)
    assert (cells == 0).any() and len(np.unique(cells[0][cells[0] > 0])) == 2


def test_boundary_lines_are_one_voxel() -> None:
    labels = np.ones((2, 4, 6), np.uint32)
    labels[:, :, 3:] = 2
    lined = boundary_lines(labels)
    assert (lined[:, :, 3] == 0).all() and (lined[:, :, :3] == 1).all() and (lined[:, :, 4:] == 2).all()
    labels[:, :, 3] = 0  # a face with background (a masked region) is no boundary
    assert (boundary_lines(labels) == labels).all()


def test_auto_instance_mode_and_neuron_settings() -> None:
    assert resolve_instance_mode("auto", True) == "3d" and resolve_instance_mode("auto", False) == "2d"
    assert resolve_instance_mode("2d", True) == "2d"
    options = seed_options(0.15, 16, "components", 2.0)
    assert options["agglomeration"] is None
    assert instance_options(options, "3d", "auto") == {**options, **NEURONS_3D}
    assert instance_options(options, "3d", "3d")["agglomeration"] == AGGLOMERATION_3D
    assert instance_options(options, "2d", "auto")["agglomeration"] == 0.0
    with pytest.raises(BundleInputError, match="agglomeration"):
        seed_options(agglomeration=1.5)


def test_3d_table_has_bounding_boxes_and_bounded_solidity() -> None:
    labels = np.zeros((6, 10, 12), np.uint32)
    labels[1:5, 2:8, 3:6] = 1
    labels[0:6, 0:3, 8:12] = 2
    labels[2, 5, 9] = 2  # a stray voxel: not convex
    rows = cell_table(labels, "3d", (10.0, 10.0, 10.0))
    assert set(rows[0]) == set(COLUMNS_3D)
    first, second = rows
    assert (first["bbox_z0"], first["bbox_y0"], first["bbox_x0"], first["bbox_z1"], first["bbox_y1"], first["bbox_x1"]) == (
        1, 2, 3, 5, 8, 6,
    )  # fmt: skip
    assert first["solidity"] == pytest.approx(1.0) and 0 < second["solidity"] < 1.0
    assert first["volume_phys"] == 4 * 6 * 3 * 1000.0  # nm^3


def test_default_agglomeration_is_dropped_without_waterz(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    import scripts.instances

    monkeypatch.setattr(scripts.instances, "agglomeration_available", lambda: False)
    options = seed_options(0.15, 16, "components", 2.0)
    assert instance_options(options, "3d", "auto")["agglomeration"] == 0.0 and "waterz" in caplog.text
    explicit = seed_options(0.15, 16, "components", 2.0, agglomeration=0.4)
    assert instance_options(explicit, "3d", "3d")["agglomeration"] == 0.4  # asked for: agglomerate() says why not


def test_neuron_benchmark_reports_time_and_memory() -> None:
    from bundle.benchmark_neurons import run_neurons_benchmark, synthetic_map

    prob = synthetic_map(40)
    assert prob.shape == (40, 40, 40) and 0.0 <= prob.min() and prob.max() <= 1.0 and (prob > 0.5).any()
    (row,) = run_neurons_benchmark(sides=(40,))
    assert row["shape"] == [40, 40, 40] and row["neurons"] > 0 and row["peak_rss_mb"] > 0
    assert {"segment_s", "table_s"} <= set(row)
