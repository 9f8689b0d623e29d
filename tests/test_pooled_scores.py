# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Scores pooled over several evaluations (cross-validation folds) and the paired bootstrap between two models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bundle.cli import pool_scores
from bundle.flags import folders
from conftest import EVALUATE, TINY, run_cli, run_workflow, workflow
from scripts.errors import BundleInputError
from scripts.evaluation import compare_pooled, pooled_scores

THRESHOLDS = 11


def _write_raw(folder: Path, names: list[str], rand: np.ndarray, info: np.ndarray, dice: np.ndarray) -> Path:
    """An evaluate.json output folder with MetricsSaver's per-section files."""
    folder.mkdir(parents=True)
    for file_name, rows in (("v_rand_raw.csv", rand), ("v_info_raw.csv", info), ("mean_dice_raw.csv", dice[:, None])):
        header = ",".join(["filename", *[f"class{k}" for k in range(rows.shape[1])], "mean"])
        lines = [f"{n}," + ",".join(f"{v:.4f}" for v in row) + f",{np.nanmean(row):.4f}" for n, row in zip(names, rows)]
        (folder / file_name).write_text("\n".join([header, *lines]) + "\n")
    return folder


def _fold(folder: Path, sections: range, level: float) -> Path:
    """Sections whose V_rand curve peaks at threshold 0.5 with ``level`` minus a per-section offset."""
    curve = 1.0 - np.abs(np.linspace(0, 1, THRESHOLDS) - 0.5)
    rand = np.stack([curve * (level - 0.01 * z) for z in sections])
    dice = np.array([0.8 + 0.01 * z for z in sections])
    return _write_raw(folder, [f"x.tif[{z}]" for z in sections], rand, rand * 0.99, dice)


def test_pooling_scores_the_union_of_the_folds(tmp_path: Path) -> None:
    folds = [_fold(tmp_path / "f0", range(0, 2), 0.95), _fold(tmp_path / "f1", range(2, 4), 0.99)]
    pooled = pooled_scores(folds)
    assert pooled["sections"] == 4
    # section V_rand at threshold 0.5: 0.95, 0.94, 0.97, 0.96 -> their mean is the pooled best
    assert pooled["v_rand"] == pytest.approx(0.955)
    assert pooled["best_threshold_rand"] == 0.5
    assert pooled["mean_dice"] == pytest.approx(0.815)
    assert [e["v_rand"] for e in pooled["per_evaluation"]] == pytest.approx([0.945, 0.965])


def test_pooling_takes_one_best_threshold_for_all_sections(tmp_path: Path) -> None:
    """Sections that peak at different thresholds pool to the best common threshold, not the mean of their peaks."""
    a, b = np.zeros((1, THRESHOLDS)), np.zeros((1, THRESHOLDS))
    a[0, 2], a[0, 8] = 1.0, 0.5
    b[0, 2], b[0, 8] = 0.5, 0.9
    folds = [
        _write_raw(tmp_path / "a", ["s[0]"], a, a, np.ones(1)),
        _write_raw(tmp_path / "b", ["s[1]"], b, b, np.ones(1)),
    ]
    assert pooled_scores(folds)["v_rand"] == pytest.approx(0.75)  # threshold 0.2: (1.0 + 0.5) / 2


def test_paired_bootstrap_against_a_baseline(tmp_path: Path) -> None:
    model = [_fold(tmp_path / "m0", range(0, 3), 0.97), _fold(tmp_path / "m1", range(3, 6), 0.97)]
    baseline = [_fold(tmp_path / "b0", range(0, 3), 0.95), _fold(tmp_path / "b1", range(3, 6), 0.95)]
    result = compare_pooled(model, baseline, resamples=200)
    assert result["difference"]["v_rand"] == pytest.approx(0.02, abs=1e-4)
    assert result["p_better"]["v_rand"] == 1.0  # better on every section, so on every draw
    assert result["ci95"]["v_rand"][0] > 0.0
    assert result["difference"]["mean_dice"] == pytest.approx(0.0) and result["p_better"]["mean_dice"] == 0.0
    reversed_result = compare_pooled(baseline, model, resamples=200)
    assert reversed_result["p_better"]["v_rand"] == 0.0
    with pytest.raises(BundleInputError, match="scores other sections"):
        compare_pooled(model, baseline[:1])


def test_missing_or_foreign_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(BundleInputError, match=r"v_rand_raw.csv: not found"):
        pooled_scores([tmp_path])
    (tmp_path / "v_rand_raw.csv").write_text("a,b\n1,2\n")
    with pytest.raises(BundleInputError, match="not a MetricsSaver per-section file"):
        pooled_scores([tmp_path])
    with pytest.raises(BundleInputError, match="none given"):
        pooled_scores([])


def test_folder_patterns_expand_in_order(tmp_path: Path) -> None:
    for name in ("fold1", "fold0", "other"):
        (tmp_path / name).mkdir()
    assert folders((str(tmp_path / "fold*"),)) == [str(tmp_path / "fold0"), str(tmp_path / "fold1")]
    assert folders(f"{tmp_path / 'other'},{tmp_path / 'fold1'}") == [str(tmp_path / "other"), str(tmp_path / "fold1")]
    with pytest.raises(BundleInputError, match="matches no folder"):
        folders((str(tmp_path / "absent*"),))
    result = run_cli("-m", "bundle", "pool_scores", str(tmp_path / "absent*"))
    assert result.returncode != 0 and "matches no folder" in result.stderr


def test_cross_validation_through_the_configs(labelled_dir: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """--val_fold reaches train.json's split and evaluate.json's scored sections; pool_scores joins the folds."""
    held_out = workflow("train.json", dataset_dir=str(labelled_dir), val_fold=1).parser.get_parsed_content("sections")
    assert [s["name"] for s in held_out["validation"]] == ["em-volume.tif[1]"]
    for fold in range(5):
        run_workflow(
            EVALUATE, dataset_dir=str(labelled_dir), ckpt_path=str(tiny_checkpoint), features=TINY,
            roi_size=[64, 64], output_dir=str(tmp_path / f"fold{fold}"), subset="validation", val_fold=fold,
        )  # fmt: skip
    pooled = pool_scores(str(tmp_path / "fold*"))
    assert pooled["sections"] == 5
    assert [e["sections"] for e in pooled["per_evaluation"]] == [1] * 5
