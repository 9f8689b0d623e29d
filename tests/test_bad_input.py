# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Bad input through the workflows: one clear error naming the culprit and the fix, nothing half-written.

Every case runs configs/inference.json, train.json or evaluate.json in this process (``run_workflow``) and checks
the ``BundleInputError`` it stops with (the file or key, the problem, "Fix: ..."), and that no result or temporary
file was left behind; a few go through ``python -m monai.bundle run`` / ``python -m bundle`` and check that the
error is one ``error: ...`` line, with no traceback on stderr or in the log on stdout.

Cases (pytest id in brackets):

- dataset folders: missing [inference, train, evaluate, CLI], empty [inference, train, evaluate], a dataset_dir that
  is a file but not an image, a folder holding no image files;
- image files given to inference: zero-byte, corrupt, truncated TIFF, unreadable (permission denied), NaN, Inf,
  4D, complex dtype, float64 beyond float32 (RGB is read as grey: tests/test_io.py); the error names the file and
  nothing of it is written, also through the CLI (no traceback in the log);
- images that are fine and must segment: float64, int16, uint16, bool, a flat (one-value) image, an image smaller
  than the window (roi_size larger than the image shrinks the window), a 3D stack for the 2D network;
- dimensions: a 3D network (--spatial_dims 3) given a single 2D image in inference, and 2D images in training and
  evaluation; a 2D label for a 3D stack; a 3D checkpoint for the 2D network;
- labels: an image without a label, a datalist naming a missing label file, label shape mismatch (evaluate),
  labels all one value (all membrane, all cell; train and evaluate), labels that are not binary;
- train.json settings: epochs 0, -1, 1.5, "ten"; batch_size 0, -2; learning_rate 0, -0.001; weight_decay -1;
  patch_size negative, not a multiple of 16, a number instead of a list, of the wrong length, larger than the
  sections (also raised in a DataLoader worker, --num_workers 1); samples_per_section 0; val_interval 0;
  num_workers -1; features of the wrong length or with a zero width; val_fraction 1; spatial_dims 4;
  --epochs 0 and a width list of the wrong length through the CLI;
- inference/evaluate settings: roi_size not a multiple of 16, negative, of the wrong length; overlap 1;
  sw_batch_size 0; precision "fp8"; tta "maybe"; instance_mode "4d"; seeds "random"; seed_threshold 0 and 1.5;
  min_seed_size -3; seed_distance 0; subset "test";
- unknown keys: a misspelt override (--epoch) through ``python -m bundle``;
- models: missing model.pt [inference, evaluate], corrupt, truncated, a file holding no state dict, a checkpoint
  of another width [inference, evaluate], of another architecture (BasicUNet), of a 3D network;
- output folders: read-only (chmod, as non-root), on a read-only file system (simulated EROFS), a full disk
  (simulated ENOSPC mid-write: no partial file), a folder that cannot be created [inference, train, evaluate].
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
from conftest import EVALUATE, run_cli, run_workflow
from scripts.errors import BundleInputError, find_input_error
from scripts.fusionnet import FusionNet
from scripts.io import write_tiff
from scripts.synthetic import make_em_stack

WIDTH = [4, 8, 8, 8, 8]  # the smallest FusionNet: every case here fails or finishes in about a second
RESULT_SUFFIXES = ("_prob.tif", "_seg.tif", "_cells.csv", "_overlay.png", "_morphology.png")


# ----------------------------------------------------------------------------------------------------- helpers
def _input_error(config: str | list[str], **overrides: Any) -> BundleInputError:
    """Run ``configs/<config>`` with ``overrides``; return the ``BundleInputError`` it must stop with."""
    with pytest.raises(Exception) as info:
        run_workflow(config, **overrides)
    error = find_input_error(info.value)
    assert error is not None, f"expected a BundleInputError, got {info.value!r}"
    assert error.problem and error.fix and "Fix:" in str(error)
    return error


def _leftovers(folder: Path, stem: str | None = None) -> list[str]:
    """Temporary files in ``folder`` and, with ``stem``, any result file of that image."""
    if not folder.exists():
        return []
    names = sorted(p.name for p in folder.iterdir())
    return [n for n in names if n.startswith(".") or n.endswith(".part") or (stem and n.startswith(f"{stem}_"))]


def _infer(model: Path, dataset_dir: Path, output_dir: Path, **extra: Any) -> dict[str, Any]:
    overrides = dict(dataset_dir=str(dataset_dir), output_dir=str(output_dir), ckpt_path=str(model), features=WIDTH)
    return {**overrides, **extra}


def _train(dataset_dir: Path, output_dir: Path, **extra: Any) -> dict[str, Any]:
    overrides = dict(
        dataset_dir=str(dataset_dir), output_dir=str(output_dir), model_dir=str(output_dir), features=WIDTH,
        patch_size=[32, 32], epochs=1,
        val_interval=1, samples_per_section=1, batch_size=2, val_fraction=0.34,
    )  # fmt: skip
    return {**overrides, **extra}


def _evaluate(model: Path, dataset_dir: Path, output_dir: Path, **extra: Any) -> dict[str, Any]:
    return _infer(model, dataset_dir, output_dir, **extra)


def _write_pair(folder: Path, image: np.ndarray, label: np.ndarray, name: str = "x") -> Path:
    """An ISBI-style pair ``<name>-volume.tif`` + ``<name>-labels.tif`` in ``folder``."""
    write_tiff(folder / f"{name}-volume.tif", image)
    write_tiff(folder / f"{name}-labels.tif", label)
    return folder


def _no_result(output_dir: Path) -> None:
    """Nothing a run writes is in ``output_dir``: no model, no result of any image, no temporary file."""
    assert not (output_dir / "model.pt").exists()
    assert not [p.name for p in output_dir.glob("*") if p.name.endswith(RESULT_SUFFIXES)]
    assert _leftovers(output_dir) == []


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 2D FusionNet of width ``WIDTH`` saved as a state dict: enough to run inference and evaluation."""
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.save(FusionNet(features=WIDTH).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def model_3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model_3d") / "model.pt"
    torch.save(FusionNet(spatial_dims=3, features=WIDTH).state_dict(), path)
    return path


@pytest.fixture()
def images_dir(tmp_path: Path) -> Path:
    """``in/a.tif``: one good 2 x 64 x 64 stack."""
    write_tiff(tmp_path / "in" / "a.tif", make_em_stack((2, 64, 64), seed=1)[0])
    return tmp_path / "in"


@pytest.fixture()
def pair_dir(tmp_path: Path) -> Path:
    """An ISBI-style labelled folder with one 3 x 64 x 64 stack."""
    return _write_pair(tmp_path / "pair", *make_em_stack((3, 64, 64), seed=3))


# --------------------------------------------------------------------------------------------- dataset folders
@pytest.mark.parametrize("config", ["inference.json", "train.json", EVALUATE], ids=["inference", "train", "evaluate"])
def test_missing_dataset_folder(tmp_path: Path, model: Path, config: str) -> None:
    overrides = _train(tmp_path / "nope", tmp_path / "out") if config == "train.json" else (
        _infer(model, tmp_path / "nope", tmp_path / "out")
    )  # fmt: skip
    error = _input_error(config, **overrides)
    assert error.what == str(tmp_path / "nope") and "dataset folder not found" in error.problem
    assert "--dataset_dir" in error.fix
    _no_result(tmp_path / "out")


@pytest.mark.parametrize(
    "config,problem",
    [("inference.json", "no images found"), ("train.json", "no labelled"), (EVALUATE, "no labelled")],
    ids=["inference", "train", "evaluate"],
)
def test_empty_dataset_folder(tmp_path: Path, model: Path, config: str, problem: str) -> None:
    (tmp_path / "empty").mkdir()
    overrides = _train(tmp_path / "empty", tmp_path / "out") if config == "train.json" else (
        _infer(model, tmp_path / "empty", tmp_path / "out")
    )  # fmt: skip
    error = _input_error(config, **overrides)
    assert error.what == str(tmp_path / "empty") and problem in error.problem
    _no_result(tmp_path / "out")


def test_folder_without_image_files(tmp_path: Path, model: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("not an image")
    error = _input_error("inference.json", **_infer(model, tmp_path / "docs", tmp_path / "out"))
    assert "no images found" in error.problem and ".tif" in error.fix


def test_dataset_dir_that_is_a_file_but_not_an_image(tmp_path: Path, model: Path) -> None:
    (tmp_path / "stack.csv").write_text("1,2,3")
    error = _input_error("inference.json", **_infer(model, tmp_path / "stack.csv", tmp_path / "out"))
    assert error.what == str(tmp_path / "stack.csv") and "is not a folder" in error.problem


def test_cli_reports_a_missing_folder_in_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--dataset_dir", str(tmp_path / "nope")
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"error: {tmp_path / 'nope'}: dataset folder not found. Fix: pass --dataset_dir" in result.stderr


# ----------------------------------------------------------------------------------------------------- images
def _truncated(path: Path) -> None:
    write_tiff(path, np.random.default_rng(0).integers(0, 255, (4, 64, 64)).astype(np.uint8))
    path.write_bytes(path.read_bytes()[:5000])


def _unreadable(path: Path) -> None:
    write_tiff(path, np.zeros((32, 32), np.uint8))
    path.chmod(0)


BAD_IMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "zero-byte": (lambda p: p.write_bytes(b""), "empty (0 bytes)"),
    "corrupt": (lambda p: p.write_bytes(b"II*\x00garbage"), "cannot be read as an image"),
    "truncated": (_truncated, "cannot be read as an image"),
    "unreadable": (_unreadable, "permission denied"),
    "nan": (lambda p: tifffile.imwrite(p, np.full((2, 32, 32), np.nan, np.float32)), "NaN or Inf"),
    "inf": (lambda p: tifffile.imwrite(p, np.where(np.eye(32) > 0, np.inf, 1.0).astype(np.float32)), "NaN or Inf"),
    "4d": (lambda p: tifffile.imwrite(p, np.zeros((2, 2, 32, 32), np.uint8)), "holds several stacks"),
    "complex": (lambda p: tifffile.imwrite(p, np.ones((32, 32), np.complex64)), "unsupported dtype complex64"),
    "float64-beyond-float32": (lambda p: tifffile.imwrite(p, np.full((32, 32), 1e300)), "beyond float32"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_is_named_and_nothing_of_it_is_written(
    tmp_path: Path, model: Path, images_dir: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, problem = BAD_IMAGES[case]
    bad = images_dir / "b.tif"
    make(bad)
    if case == "unreadable" and os.geteuid() == 0:  # root reads any file: simulate what open() raises for others
        original = tifffile.TiffFile

        def refuse(file: Any, *args: Any, **kwargs: Any) -> Any:
            if str(file) == str(bad):
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return original(file, *args, **kwargs)

        monkeypatch.setattr(tifffile, "TiffFile", refuse)
    error = _input_error("inference.json", **_infer(model, images_dir, tmp_path / "out"))
    assert error.what == str(bad) and problem in error.problem
    assert (tmp_path / "out" / "a_prob.tif").is_file()  # the good image before it is done
    assert _leftovers(tmp_path / "out", "b") == []


GOOD_IMAGES: dict[str, np.ndarray] = {
    "float64": make_em_stack((2, 48, 48), seed=4)[0].astype(np.float64) / 255,
    "int16": make_em_stack((2, 48, 48), seed=4)[0].astype(np.int16) - 128,
    "uint16": make_em_stack((2, 48, 48), seed=4)[0].astype(np.uint16) * 200,
    "bool": make_em_stack((2, 48, 48), seed=4)[0] > 120,
    "flat": np.full((2, 48, 48), 7, np.uint8),
    "2d-section": make_em_stack((1, 48, 48), seed=4)[0][0],
}


@pytest.mark.parametrize("case", list(GOOD_IMAGES))
def test_unusual_but_valid_images_are_segmented(tmp_path: Path, model: Path, case: str) -> None:
    image = GOOD_IMAGES[case]
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "c.tif", image)
    run_workflow("inference.json", **_infer(model, tmp_path / "in", tmp_path / "out"))
    prob = tifffile.imread(tmp_path / "out" / "c_prob.tif")
    assert prob.shape == image.shape and prob.dtype == np.float32
    assert np.isfinite(prob).all() and 0 <= prob.min() <= prob.max() <= 1
    assert tifffile.imread(tmp_path / "out" / "c_seg.tif").shape == image.shape


def test_roi_larger_than_the_image_shrinks_the_window(tmp_path: Path, model: Path) -> None:
    image = make_em_stack((2, 40, 50), seed=5)[0]  # not even a multiple of 16
    write_tiff(tmp_path / "in" / "small.tif", image)
    run_workflow("inference.json", **_infer(model, tmp_path / "in", tmp_path / "out", roi_size=[512, 512]))
    prob = tifffile.imread(tmp_path / "out" / "small_prob.tif")
    assert prob.shape == image.shape and np.isfinite(prob).all()


def test_cli_reports_a_corrupt_image_in_one_line_without_a_traceback_in_the_log(tmp_path: Path, model: Path) -> None:
    write_tiff(tmp_path / "in" / "a.tif", make_em_stack((1, 32, 32), seed=1)[0])
    (tmp_path / "in" / "b.tif").write_bytes(b"II*\x00garbage")
    result = run_cli(
        "-m", "bundle", "infer", "--dataset_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "out"),
        "--ckpt_path", str(model), "--features", str(WIDTH), "--plots", "false",
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout  # MONAI logs to stdout
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'in' / 'b.tif'}: cannot be read")
    assert "stopped: " in result.stdout  # the log says why the run stopped, in one line
    assert (tmp_path / "out" / "a_prob.tif").is_file() and _leftovers(tmp_path / "out", "b") == []


# ------------------------------------------------------------------------------------------------- dimensions
def test_3d_network_given_a_single_2d_image(tmp_path: Path, model_3d: Path) -> None:
    write_tiff(tmp_path / "in" / "section.tif", make_em_stack((1, 64, 64), seed=1)[0][0])
    error = _input_error(
        "inference.json", **_infer(model_3d, tmp_path / "in", tmp_path / "out", spatial_dims=3, roi_size=[16, 32, 32])
    )
    assert error.what.endswith("section.tif") and "single 2D section" in error.problem and "3D" in error.problem
    assert _leftovers(tmp_path / "out", "section") == []


@pytest.mark.parametrize("config", ["train.json", EVALUATE], ids=["train", "evaluate"])
def test_3d_network_given_2d_labelled_images(tmp_path: Path, model_3d: Path, config: str) -> None:
    image, label = make_em_stack((1, 64, 64), seed=2)
    _write_pair(tmp_path / "d", image[0], label[0])
    if config == "train.json":
        overrides = _train(tmp_path / "d", tmp_path / "out", spatial_dims=3, patch_size=[16, 32, 32], val_fraction=0)
    else:
        overrides = _evaluate(model_3d, tmp_path / "d", tmp_path / "out", spatial_dims=3, roi_size=[16, 32, 32])
    error = _input_error(config, **overrides)
    assert error.what.endswith("x-volume.tif") and "single 2D section" in error.problem
    assert "--spatial_dims 2" in error.fix
    _no_result(tmp_path / "out")


def test_2d_label_for_a_3d_stack(tmp_path: Path) -> None:
    image, label = make_em_stack((3, 64, 64), seed=2)
    _write_pair(tmp_path / "d", image, label[0])
    error = _input_error("train.json", **_train(tmp_path / "d", tmp_path / "out"))
    assert error.what.endswith("x-labels.tif") and "(1, 64, 64) does not match" in error.problem
    _no_result(tmp_path / "out")


# ----------------------------------------------------------------------------------------------------- labels
def test_image_without_a_label(tmp_path: Path) -> None:
    image, label = make_em_stack((3, 64, 64), seed=2)
    for name in ("a", "b"):
        write_tiff(tmp_path / "d" / "images" / f"{name}.tif", image)
    write_tiff(tmp_path / "d" / "labels" / "a.tif", label)
    error = _input_error("train.json", **_train(tmp_path / "d", tmp_path / "out"))
    assert error.what == str(tmp_path / "d" / "images" / "b.tif") and "no label file" in error.problem
    assert "labels/b.tif" in error.fix
    _no_result(tmp_path / "out")


def test_datalist_naming_a_missing_label_file(tmp_path: Path, pair_dir: Path) -> None:
    entries = [{"image": str(pair_dir / "x-volume.tif"), "label": str(pair_dir / "gone-labels.tif")}]
    (tmp_path / "datalist.json").write_text(json.dumps({"training": entries}))
    error = _input_error("train.json", **_train(tmp_path / "datalist.json", tmp_path / "out"))
    assert error.what == str(pair_dir / "gone-labels.tif") and "file not found" in error.problem


def test_evaluate_with_mismatched_label_shape(tmp_path: Path, model: Path) -> None:
    image, label = make_em_stack((3, 64, 64), seed=5)
    write_tiff(tmp_path / "d" / "images" / "s.tif", image)
    write_tiff(tmp_path / "d" / "labels" / "s.tif", label[:, :32])
    error = _input_error(EVALUATE, **_evaluate(model, tmp_path / "d", tmp_path / "out"))
    assert error.what.endswith("s.tif") and "does not match" in error.problem


@pytest.mark.parametrize(
    "config,value", [("train.json", 0), ("train.json", 255), (EVALUATE, 255)],
    ids=["train-all-membrane", "train-all-cell", "evaluate-all-cell"],
)  # fmt: skip
def test_labels_that_are_all_one_value(tmp_path: Path, model: Path, config: str, value: int) -> None:
    image = make_em_stack((3, 64, 64), seed=2)[0]
    _write_pair(tmp_path / "d", image, np.full(image.shape, value, np.uint8))
    overrides = _train(tmp_path / "d", tmp_path / "out") if config == "train.json" else (
        _evaluate(model, tmp_path / "d", tmp_path / "out")
    )  # fmt: skip
    error = _input_error(config, **overrides)
    assert error.what.endswith("x-labels.tif") and f"same value {value}" in error.problem
    assert "0 = membrane" in error.fix
    _no_result(tmp_path / "out")


def test_training_on_labels_that_are_not_binary(tmp_path: Path) -> None:
    image, label = make_em_stack((4, 64, 64), seed=2)
    label[:, :3, :3] = 7
    _write_pair(tmp_path / "d", image, label)
    error = _input_error("train.json", **_train(tmp_path / "d", tmp_path / "out"))
    assert error.what.endswith("x-labels.tif") and "not binary-like" in error.problem


# ------------------------------------------------------------------------------------------- train.json values
BAD_TRAIN_SETTINGS: list[tuple[str, object, str]] = [
    ("epochs", 0, "positive integer"),
    ("epochs", -1, "positive integer"),
    ("epochs", 1.5, "positive integer"),
    ("epochs", "ten", "positive integer"),
    ("batch_size", 0, "positive integer"),
    ("batch_size", -2, "positive integer"),
    ("learning_rate", 0, "positive number"),
    ("learning_rate", -0.001, "positive number"),
    ("weight_decay", -1, "number >= 0"),
    ("patch_size", [-32, -32], "positive multiples of 16"),
    ("patch_size", [30, 30], "positive multiples of 16"),
    ("patch_size", 32, "list of 2"),
    ("patch_size", [32], "list of 2"),
    ("samples_per_section", 0, "positive integer"),
    ("val_interval", 0, "positive integer"),
    ("num_workers", -1, "integer >= 0"),
    ("features", [4, 8, 8], "must list 5 positive widths"),
    ("features", [0, 8, 8, 8, 8], "must list 5 positive widths"),
    ("features", "wide", "must be a list of 5 integers"),
    ("val_fraction", 1.0, "must be in [0, 1)"),
    ("spatial_dims", 4, "must be 2 or 3"),
]


@pytest.mark.parametrize(
    "key,value,problem", BAD_TRAIN_SETTINGS, ids=[f"{k}={v}".replace(" ", "") for k, v, _ in BAD_TRAIN_SETTINGS]
)
def test_bad_training_setting_names_the_key(
    tmp_path: Path, pair_dir: Path, key: str, value: object, problem: str
) -> None:
    error = _input_error("train.json", **_train(pair_dir, tmp_path / "out", **{key: value}))
    assert error.what == key and problem in error.problem and f"--{key}" in error.fix
    _no_result(tmp_path / "out")


@pytest.mark.parametrize("num_workers", [0, 1], ids=["main-process", "dataloader-worker"])
def test_training_patch_larger_than_sections(tmp_path: Path, pair_dir: Path, num_workers: int) -> None:
    overrides = _train(pair_dir, tmp_path / "out", patch_size=[96, 96], num_workers=num_workers)
    error = _input_error("train.json", **overrides)
    assert error.what.startswith("x-volume.tif[") and "smaller than the patch size (96, 96)" in error.problem
    assert "--patch_size" in error.fix
    _no_result(tmp_path / "out")


def test_bundle_cli_reports_a_bad_width_list(tmp_path: Path) -> None:
    result = run_cli("-m", "bundle", "train", "--features", "[16,32,64]", "--output_dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: features: must list 5 positive widths")
    assert list(tmp_path.iterdir()) == []


def test_bundle_cli_reports_zero_epochs_before_reading_data(tmp_path: Path) -> None:
    result = run_cli("-m", "bundle", "train", "--epochs", "0", "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    line = result.stderr.strip().splitlines()[-1]
    assert line == "error: epochs: must be a positive integer, got 0. Fix: pass e.g. --epochs 100"
    assert not (tmp_path / "out").exists()


def test_bundle_cli_rejects_a_misspelt_key(tmp_path: Path) -> None:
    result = run_cli("-m", "bundle", "train", "--epoch", "1", "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line == "error: --epoch: is not a setting of train.json, so it would be ignored. Fix: did you mean --epochs?"
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ inference and evaluate values
BAD_INFERENCE_SETTINGS: list[tuple[str, object, str]] = [
    ("roi_size", [100, 100], "positive multiples of 16"),
    ("roi_size", [-16, -16], "positive multiples of 16"),
    ("roi_size", [256], "list of 2 positive multiples"),
    ("roi_size", "wide", "must be a list of 2 sizes"),
    ("overlap", 1.0, "must be in [0, 1)"),
    ("sw_batch_size", 0, "must be a positive integer"),
    ("precision", "fp8", "unknown value"),
    ("tta", "maybe", "must be true or false"),
    ("instance_mode", "4d", "unknown value"),
    ("seeds", "random", "unknown value"),
    ("seed_threshold", 0, "between 0 and 1"),
    ("seed_threshold", 1.5, "between 0 and 1"),
    ("min_seed_size", -3, "integer >= 0"),
    ("seed_distance", 0, "positive number"),
]


@pytest.mark.parametrize(
    "key,value,problem", BAD_INFERENCE_SETTINGS, ids=[f"{k}={v}".replace(" ", "") for k, v, _ in BAD_INFERENCE_SETTINGS]
)
def test_bad_inference_setting_names_the_key(
    tmp_path: Path, model: Path, images_dir: Path, key: str, value: object, problem: str
) -> None:
    error = _input_error("inference.json", **_infer(model, images_dir, tmp_path / "out", **{key: value}))
    assert error.what == key and problem in error.problem
    _no_result(tmp_path / "out")


def test_evaluate_unknown_subset(tmp_path: Path, model: Path, pair_dir: Path) -> None:
    error = _input_error(EVALUATE, **_evaluate(model, pair_dir, tmp_path / "out", subset="test"))
    assert error.what == "subset" and "all, training or validation" in error.fix


# ----------------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("config", ["inference.json", EVALUATE], ids=["inference", "evaluate"])
def test_missing_model_file(tmp_path: Path, images_dir: Path, pair_dir: Path, config: str) -> None:
    data = images_dir if config == "inference.json" else pair_dir
    error = _input_error(config, **_infer(tmp_path / "absent.pt", data, tmp_path / "out"))
    assert error.what == str(tmp_path / "absent.pt") and "model weights not found" in error.problem
    assert "--ckpt_path" in error.fix
    _no_result(tmp_path / "out")


def _truncated_model(path: Path) -> None:
    torch.save(FusionNet(features=WIDTH).state_dict(), path)
    path.write_bytes(path.read_bytes()[:2000])


BAD_MODELS: dict[str, tuple[Callable[[Path], None], str]] = {
    "corrupt": (lambda p: p.write_bytes(b"not a checkpoint"), "not a readable PyTorch checkpoint"),
    "truncated": (_truncated_model, "not a readable PyTorch checkpoint"),
    "no-state-dict": (lambda p: torch.save([1, 2, 3], p), "does not hold a model state dict"),
    "other-architecture": (
        lambda p: torch.save(torch.nn.Conv2d(1, 1, 3).state_dict(), p),
        "does not fit network_def (Missing key(s)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_model_file(tmp_path: Path, images_dir: Path, case: str) -> None:
    make, problem = BAD_MODELS[case]
    make(tmp_path / "model.pt")
    error = _input_error("inference.json", **_infer(tmp_path / "model.pt", images_dir, tmp_path / "out"))
    assert error.what == str(tmp_path / "model.pt") and problem in error.problem
    _no_result(tmp_path / "out")


@pytest.mark.parametrize("config", ["inference.json", EVALUATE], ids=["inference", "evaluate"])
def test_checkpoint_of_another_width_names_the_right_width(
    tmp_path: Path, images_dir: Path, pair_dir: Path, config: str
) -> None:
    torch.save(FusionNet(features=(8, 8, 8, 8, 8)).state_dict(), tmp_path / "model.pt")
    data = images_dir if config == "inference.json" else pair_dir
    error = _input_error(config, **_infer(tmp_path / "model.pt", data, tmp_path / "out"))
    assert "trained with features [8, 8, 8, 8, 8]" in error.problem
    assert '--features "[8, 8, 8, 8, 8]"' in error.fix


def test_3d_checkpoint_for_the_2d_network(tmp_path: Path, model_3d: Path, images_dir: Path) -> None:
    error = _input_error("inference.json", **_infer(model_3d, images_dir, tmp_path / "out", features=[8] * 5))
    assert error.what == str(model_3d) and "holds a 3D network, but network_def is 2D" in error.problem
    assert "configs/inference_3d.json" in error.fix and f'--features "{WIDTH}"' in error.fix


def test_2d_checkpoint_for_the_3d_configs_asks_for_3d_weights(tmp_path: Path, model: Path, images_dir: Path) -> None:
    """inference_3d.json with 2D weights: the fix is 3D weights (or no inference_3d.json), not --spatial_dims 2."""
    overrides = _infer(model, images_dir, tmp_path / "out", roi_size=[16, 32, 32])
    error = _input_error(["inference.json", "inference_3d.json"], **overrides)
    assert error.what == str(model) and "holds a 2D network, but network_def is 3D" in error.problem
    assert "--ckpt_path to 3D weights" in error.fix and "configs/train_3d.json" in error.fix
    assert "--spatial_dims" not in error.fix and "--features" not in error.fix


def test_fusionnet_checkpoint_for_the_basicunet_override_asks_for_basicunet_weights(
    tmp_path: Path, model: Path, images_dir: Path
) -> None:
    """basicunet.json with FusionNet weights: the fix is BasicUNet weights (--ckpt_path), not a FusionNet width."""
    overrides = _infer(model, images_dir, tmp_path / "out", features=[4, 4, 8, 8, 8, 4])
    error = _input_error(["inference.json", "basicunet.json"], **overrides)
    assert "holds FusionNet weights, but network_def is a BasicUNet" in error.problem
    assert "--ckpt_path to BasicUNet weights" in error.fix and "--features" not in error.fix


def test_basicunet_checkpoint_names_basicunet_json_or_its_width(tmp_path: Path, images_dir: Path) -> None:
    from monai.networks.nets import BasicUNet

    unet = dict(spatial_dims=2, in_channels=1, out_channels=1)
    torch.save(BasicUNet(features=(4, 4, 8, 8, 8, 4), **unet).state_dict(), tmp_path / "unet.pt")
    error = _input_error("inference.json", **_infer(tmp_path / "unet.pt", images_dir, tmp_path / "out"))
    assert "holds BasicUNet weights, but network_def is a FusionNet" in error.problem
    assert "configs/basicunet.json" in error.fix
    overrides = _infer(tmp_path / "unet.pt", images_dir, tmp_path / "out", features=[8, 8, 8, 8, 8, 8])
    error = _input_error(["inference.json", "basicunet.json"], **overrides)
    assert "trained with features [4, 4, 8, 8, 8, 4]" in error.problem
    assert '--features "[4, 4, 8, 8, 8, 4]"' in error.fix


# --------------------------------------------------------------------------------------------- output folders
@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders (see the EROFS case)")
def test_read_only_output_folder(tmp_path: Path, model: Path, images_dir: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o555)
    error = _input_error("inference.json", **_infer(model, images_dir, tmp_path / "ro"))
    assert "not writable" in error.problem


def test_output_folder_on_a_read_only_file_system(
    tmp_path: Path, model: Path, images_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    original = tempfile.mkstemp

    def read_only(*args: Any, dir: Any = None, **kwargs: Any) -> tuple[int, str]:  # noqa: A002
        if dir is not None and Path(dir) == out:
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return original(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    error = _input_error("inference.json", **_infer(model, images_dir, out))
    assert error.what == str(out) and "not writable (Read-only file system)" in error.problem
    assert "--output_dir" in error.fix
    assert list(out.iterdir()) == []


def test_full_disk_leaves_no_partial_file(
    tmp_path: Path, model: Path, images_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = tifffile.imwrite

    def fill_the_disk(file: Any, data: Any, *args: Any, **kwargs: Any) -> None:
        Path(file).write_bytes(b"II*\x00" + b"\x00" * 100)  # part of the file made it to disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", fill_the_disk)
    error = _input_error("inference.json", **_infer(model, images_dir, tmp_path / "out"))
    monkeypatch.setattr(tifffile, "imwrite", original)
    assert error.what == str(tmp_path / "out" / "a_prob.tif") and "No space left on device" in error.problem
    assert "free space" in error.fix
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("config", ["inference.json", "train.json", EVALUATE], ids=["inference", "train", "evaluate"])
def test_output_folder_that_cannot_be_created(
    tmp_path: Path, model: Path, images_dir: Path, pair_dir: Path, config: str
) -> None:
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "out"
    if config == "train.json":
        overrides = _train(pair_dir, out)
    else:
        overrides = _infer(model, images_dir if config == "inference.json" else pair_dir, out)
    error = _input_error(config, **overrides)
    assert error.what == str(out) and "output folder cannot be created" in error.problem
    assert "--output_dir" in error.fix


def test_bundle_input_error_survives_pickling_whole() -> None:
    """DataLoader workers and Dask send errors between processes by pickling them: the parts must come back."""
    import pickle

    error = pickle.loads(pickle.dumps(BundleInputError("a.tif", "is corrupt", "write it again")))
    assert (error.what, error.problem, error.fix) == ("a.tif", "is corrupt", "write it again")
    assert str(error) == "a.tif: is corrupt. Fix: write it again"
