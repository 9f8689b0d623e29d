# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Scoring the cells (``_seg``) with the ISBI metrics: CellBoundariesd and configs/evaluate_cells.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EVALUATE, TINY, run_workflow
from scipy import ndimage
from scripts.errors import BundleInputError
from scripts.instances import DEFAULT_SEED_THRESHOLD, CellBoundariesd, segment_cells
from scripts.isbi_metrics import isbi_scores, rand_info_scores
from scripts.synthetic import make_em_stack


def noisy_membrane_map(label: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    blurred = ndimage.gaussian_filter((label == 0).astype(np.float32), 1.5) * 2
    return np.clip(blurred + rng.normal(0, 0.15, label.shape), 0, 1).astype(np.float32)


def test_boundary_map_scores_exactly_the_cells() -> None:
    _, label = make_em_stack((1, 96, 96), cell_size=24, seed=7)
    prob = noisy_membrane_map(label)
    boundaries = CellBoundariesd("pred", seed_threshold=0.3)({"pred": torch.from_numpy(prob)})["pred"]
    assert boundaries.shape == (1, 96, 96) and set(np.unique(boundaries.numpy())) == {0.0, 1.0}
    cells = segment_cells(prob, seed_threshold=0.3)
    expected = rand_info_scores(ndimage.label(label[0] != 0)[0], cells[0])
    scores = isbi_scores(boundaries.numpy(), label)
    assert scores["v_rand"] == pytest.approx(expected[0]) and scores["v_info"] == pytest.approx(expected[1])


def test_a_stack_keeps_its_shape_and_bad_modes_are_named() -> None:
    _, label = make_em_stack((3, 64, 64), cell_size=20, seed=1)
    prob = torch.from_numpy(noisy_membrane_map(label))[None]  # (1, Z, Y, X)
    assert CellBoundariesd("pred", mode="3d")({"pred": prob})["pred"].shape == prob.shape
    with pytest.raises(BundleInputError, match="instance_mode"):
        CellBoundariesd("pred", mode="none")
    with pytest.raises(BundleInputError, match="seed_threshold"):
        CellBoundariesd("pred", seed_threshold=1.5)


def test_evaluate_cells_config_scores_the_segmentation(labelled_dir: Path, tiny_checkpoint: Path, tmp_path: Path):
    common = dict(dataset_dir=str(labelled_dir), ckpt_path=str(tiny_checkpoint), features=TINY, subset="all")
    run_workflow(EVALUATE, output_dir=str(tmp_path / "map"), **common)
    run_workflow([*EVALUATE, "evaluate_cells.json"], output_dir=str(tmp_path / "cells"), **common)
    cells_rand = (tmp_path / "cells" / "v_rand_raw.csv").read_text()
    assert cells_rand != (tmp_path / "map" / "v_rand_raw.csv").read_text()
    # the boundary map is 0/1, so every threshold below 1 gives the same segments: one flat score curve
    rows = [line.split(",")[1:-2] for line in cells_rand.splitlines()[1:]]
    assert all(len(set(row)) == 1 for row in rows)


def test_seed_threshold_defaults_per_target() -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config("configs/inference.json")
    assert parser.get_parsed_content("seed_threshold") == DEFAULT_SEED_THRESHOLD == 0.15
    for target, dims in (("foreground", 2), ("boundaries", 3)):
        parser["target"], parser["spatial_dims"] = target, dims
        assert parser.get_parsed_content("seed_threshold", lazy=False) == 0.5
    assert segment_cells.__defaults__[1] == DEFAULT_SEED_THRESHOLD
