# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""``python -m bundle cross_validate``: every section held out once, final checkpoints scored and pooled, the final
run on every section, a rerun that skips what is done, and recipe flags that cannot break the protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bundle import cross_validation
from bundle.cross_validation import (
    config_list,
    cross_validate,
    final_run_flags,
    fold_commands,
    recipe_flags,
    run_environment,
)
from conftest import TINY
from scripts.errors import BundleInputError

RECIPE = f"--features '{TINY}' --patch_size '[64,64]' --epochs 1 --samples_per_section 2 --batch_size 2"


def test_recipe_cannot_override_the_split_or_the_output():
    assert recipe_flags("--context_sections 1 --epochs 2") == ["--context_sections", "1", "--epochs", "2"]
    with pytest.raises(BundleInputError, match="join it with ="):
        recipe_flags(True)  # what fire passes for --overrides "--epochs 2", a value it takes for a flag
    for owned in ("--val_fold 3", "--ckpt_path m.pt", "--output_dir=x", "--dataset_dir d"):
        with pytest.raises(BundleInputError, match="cross_validate sets"):
            recipe_flags(owned)
    assert config_list("configs/train.json, configs/loss_border.json") == [
        "configs/train.json",
        "configs/loss_border.json",
    ]
    with pytest.raises(BundleInputError, match="must start with configs/train.json"):
        config_list("configs/loss_border.json,configs/train.json")
    with pytest.raises(BundleInputError, match="no such config file"):
        config_list("configs/train.json,configs/nope.json")


def test_final_run_keeps_the_folds_number_of_steps():
    # a fold trains on 4/5 of the sections: the final run on all of them takes 4/5 of its epochs
    assert final_run_flags(["configs/train.json"], ["--epochs", "125", "--seed", "1"], 5) == [
        "--seed",
        "1",
        "--epochs",
        "100",
    ]
    assert final_run_flags(["configs/train.json"], ["--epochs=10"], 2) == ["--epochs", "5"]
    assert final_run_flags(["configs/train.json"], [], 5) == ["--epochs", "100"]  # train.json's 125 epochs
    assert final_run_flags(["configs/train.json"], ["--epochs", "1"], 2) == ["--epochs", "1"]
    with pytest.raises(BundleInputError, match="epochs"):
        final_run_flags(["configs/train.json"], ["--epochs", "many"], 5)


def test_runs_side_by_side_share_the_cores(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cross_validation.os, "cpu_count", lambda: 16)
    assert run_environment(4)["OMP_NUM_THREADS"] == "4" and run_environment(32)["OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in run_environment(1)  # one run: PyTorch's own default, every core
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert run_environment(4)["OMP_NUM_THREADS"] == "3"  # the user's choice wins


def test_two_folds_pool_every_section_and_a_rerun_skips_them(labelled_dir: Path, tmp_path: Path):
    out = tmp_path / "cv"
    report = cross_validate(str(out), str(labelled_dir), folds=2, overrides=RECIPE, final=True)
    assert report["pooled"]["sections"] == 5  # 3 + 2 held-out sections: each of the 5 once
    assert [e["sections"] for e in report["pooled"]["per_evaluation"]] == [3, 2]
    assert 0 < report["pooled"]["v_rand"] <= 1
    assert (out / "final" / "model_final.pt").is_file() and (out / "cross_validation.json").is_file()
    assert "--val_fraction 0 " in report["commands"]["-1"]["train"]
    assert report["commands"]["-1"]["train"].endswith("--epochs 1")  # a fold's 1 epoch: at least one
    assert "--val_fold 1" in report["commands"]["1"]["evaluate"]
    assert (
        "eval1" in report["commands"]["1"]["evaluate"] and "fold1/model_final.pt" in report["commands"]["1"]["evaluate"]
    )
    scored = (out / "eval0" / "metrics.csv").stat().st_mtime_ns
    again = cross_validate(
        str(out), str(labelled_dir), folds=2, overrides=RECIPE, final=True, baseline=str(out / "eval*")
    )
    assert (out / "eval0" / "metrics.csv").stat().st_mtime_ns == scored  # not trained or scored again
    assert again["seconds"] == report["seconds"] and again["pooled"]["v_rand"] == report["pooled"]["v_rand"]
    assert again["against_baseline"]["difference"]["v_rand"] == 0


def test_a_killed_fold_goes_on_from_its_checkpoint_and_a_trained_one_is_only_scored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls: list[tuple[list[str], bool]] = []
    monkeypatch.setattr(
        cross_validation, "_run", lambda command, log, env, append=False: calls.append((command, append)) or 1.0
    )
    commands = {"train": ["train"], "evaluate": ["evaluate"]}
    (tmp_path / "logs").mkdir()
    killed, trained = tmp_path / "fold0", tmp_path / "fold1"
    killed.mkdir()
    trained.mkdir()
    torch.save({"epoch": 10}, killed / "checkpoint_epoch=10.pt")
    (killed / "checkpoint_epoch=15.pt").write_bytes(b"cut off while saving")  # not a complete file: skipped
    torch.save({}, trained / "model_final.pt")

    assert cross_validation.run_fold(0, commands, tmp_path, {}) == {
        "train": 1.0,
        "resumed_from_epoch": 10,
        "evaluate": 1.0,
    }
    assert calls == [(["train", "--resume", "true"], True), (["evaluate"], False)]  # the log goes on too
    calls.clear()
    assert cross_validation.run_fold(1, commands, tmp_path, {}) == {"evaluate": 1.0}
    assert calls == [(["evaluate"], False)]
    calls.clear()
    assert cross_validation.run_fold(2, commands, tmp_path, {}) == {"train": 1.0, "evaluate": 1.0}  # a fresh fold
    assert calls[0] == (["train"], False)
    assert cross_validation.resume_epoch(trained) is None and cross_validation.resume_epoch(tmp_path / "none") is None


def test_fold_training_writes_resumable_checkpoints(tmp_path: Path):
    """The fold commands keep train.json's full checkpoints (every save_interval epochs), which resuming needs."""
    train = fold_commands(["configs/train.json"], "data", tmp_path, 0, 5, [], 0)["train"]
    assert "--save_interval" not in train and "--resume" not in train
