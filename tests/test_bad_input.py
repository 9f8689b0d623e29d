# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Bad input through the workflows: one clear error naming the culprit and the fix, nothing half-written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli, run_workflow, tiny_train_overrides

from scripts.errors import BundleInputError, find_input_error
from scripts.fusionnet import FusionNet
from scripts.io import write_tiff
from scripts.synthetic import make_em_stack


def _input_error(config: str, **overrides) -> BundleInputError:
    with pytest.raises(Exception) as info:
        run_workflow(config, **overrides)
    error = find_input_error(info.value)
    assert error is not None, f"expected a BundleInputError, got {info.value!r}"
    assert "Fix:" in str(error)
    return error


@pytest.fixture()
def images_dir(tmp_path: Path) -> Path:
    write_tiff(tmp_path / "in" / "a.tif", make_em_stack((2, 64, 64), seed=1)[0])
    return tmp_path / "in"


def _infer(tiny_checkpoint: Path, dataset_dir: Path, output_dir: Path, **extra) -> dict:
    return dict(
        dataset_dir=str(dataset_dir), output_dir=str(output_dir), ckpt_path=str(tiny_checkpoint), features=TINY, **extra
    )


def test_cli_reports_a_missing_folder_in_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--dataset_dir", str(tmp_path / "nope")
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"error: {tmp_path / 'nope'}: dataset folder not found. Fix: pass --dataset_dir" in result.stderr


def test_bundle_cli_reports_a_bad_width_list(tmp_path: Path) -> None:
    result = run_cli("-m", "bundle", "train", "--features", "[16,32,64]", "--output_dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: features: must list 5 positive widths")
    assert list(tmp_path.iterdir()) == []


def test_empty_dataset_folder(tmp_path: Path, tiny_checkpoint: Path) -> None:
    (tmp_path / "empty").mkdir()
    error = _input_error("inference.json", **_infer(tiny_checkpoint, tmp_path / "empty", tmp_path / "out"))
    assert "no images found" in str(error)


def test_corrupt_image_leaves_no_output(tmp_path: Path, tiny_checkpoint: Path, images_dir: Path) -> None:
    (images_dir / "b.tif").write_bytes(b"II*\x00garbage")
    error = _input_error("inference.json", **_infer(tiny_checkpoint, images_dir, tmp_path / "out"))
    assert error.what.endswith("b.tif")
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["a_cells.csv", "a_morphology.png", "a_overlay.png", "a_prob.tif", "a_seg.tif"]  # nothing of b.tif


def test_missing_model_file(tmp_path: Path, images_dir: Path) -> None:
    error = _input_error(
        "inference.json", **_infer(tmp_path / "absent.pt", images_dir, tmp_path / "out")
    )
    assert "model weights not found" in str(error)
    assert not (tmp_path / "out").exists()


def test_corrupt_model_file(tmp_path: Path, images_dir: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    error = _input_error("inference.json", **_infer(tmp_path / "model.pt", images_dir, tmp_path / "out"))
    assert "not a readable PyTorch checkpoint" in str(error)


def test_checkpoint_of_another_width_names_the_right_width(tmp_path: Path, images_dir: Path) -> None:
    torch.save(FusionNet(features=(8, 8, 8, 8, 8)).state_dict(), tmp_path / "model.pt")
    error = _input_error("inference.json", **_infer(tmp_path / "model.pt", images_dir, tmp_path / "out"))
    assert "trained with features [8, 8, 8, 8, 8]" in str(error)
    assert '--features "[8, 8, 8, 8, 8]"' in str(error)


def test_roi_not_divisible_by_16(tmp_path: Path, tiny_checkpoint: Path, images_dir: Path) -> None:
    error = _input_error("inference.json", **_infer(tiny_checkpoint, images_dir, tmp_path / "out", roi_size=[100, 100]))
    assert error.what == "roi_size"


def test_unknown_instance_mode(tmp_path: Path, tiny_checkpoint: Path, images_dir: Path) -> None:
    error = _input_error(
        "inference.json", **_infer(tiny_checkpoint, images_dir, tmp_path / "out", instance_mode="4d")
    )
    assert error.what == "instance_mode"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_output_folder(tmp_path: Path, tiny_checkpoint: Path, images_dir: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o555)
    error = _input_error("inference.json", **_infer(tiny_checkpoint, images_dir, tmp_path / "ro"))
    assert "not writable" in str(error)


def test_output_folder_that_cannot_be_created(tmp_path: Path, tiny_checkpoint: Path, images_dir: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    error = _input_error("inference.json", **_infer(tiny_checkpoint, images_dir, tmp_path / "a_file" / "out"))
    assert "output folder cannot be created" in str(error) and "--output_dir" in str(error)


def test_training_on_labels_that_are_not_binary(tmp_path: Path) -> None:
    image, label = make_em_stack((4, 64, 64), seed=2)
    label[:, :3, :3] = 7
    write_tiff(tmp_path / "d" / "x-volume.tif", image)
    write_tiff(tmp_path / "d" / "x-labels.tif", label)
    error = _input_error("train.json", **tiny_train_overrides(tmp_path / "d", tmp_path / "out"))
    assert error.what.endswith("x-labels.tif") and "not binary-like" in str(error)


def test_training_patch_larger_than_sections(tmp_path: Path, labelled_dir: Path) -> None:
    overrides = tiny_train_overrides(labelled_dir, tmp_path / "out")
    overrides["patch_size"] = [128, 128]
    error = _input_error("train.json", **overrides)
    assert "smaller than the patch size" in str(error)


def test_evaluate_with_mismatched_label_shape(tmp_path: Path, tiny_checkpoint: Path) -> None:
    image, label = make_em_stack((3, 64, 64), seed=5)
    write_tiff(tmp_path / "d" / "images" / "s.tif", image)
    write_tiff(tmp_path / "d" / "labels" / "s.tif", label[:, :32])
    error = _input_error(
        "evaluate.json", dataset_dir=str(tmp_path / "d"), ckpt_path=str(tiny_checkpoint), features=TINY,
        output_dir=str(tmp_path / "out"),
    )  # fmt: skip
    assert "does not match" in str(error)


def test_wrong_dimensions_for_the_network() -> None:
    with pytest.raises(BundleInputError, match="spatial_dims"):
        FusionNet(spatial_dims=4)
    with pytest.raises(BundleInputError, match="features"):
        FusionNet(features="wide")  # type: ignore[arg-type]


def test_image_file_of_unsupported_dtype(tmp_path: Path, tiny_checkpoint: Path) -> None:
    write_tiff(tmp_path / "in" / "c.tif", np.ones((32, 32), np.complex64))
    error = _input_error("inference.json", **_infer(tiny_checkpoint, tmp_path / "in", tmp_path / "out"))
    assert "unsupported dtype complex64" in str(error)
