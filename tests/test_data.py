# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from scripts.data import (
    find_images,
    find_labelled_pairs,
    held_out_block,
    labelled_items,
    split_sections,
    split_volumes,
    write_datalist,
)
from scripts.errors import BundleInputError
from scripts.io import write_tiff


def _stack(z: int = 5, value: int = 255) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(z)
    image = rng.integers(0, 255, (z, 32, 32)).astype(np.uint8)
    label = np.full((z, 32, 32), value, np.uint8)
    label[:, ::8] = 0
    return image, label


def test_images_and_labels_folders(tmp_path: Path) -> None:
    image, label = _stack()
    for name in ("a.tif", "b.tif"):
        write_tiff(tmp_path / "images" / name, image)
        write_tiff(tmp_path / "labels" / name, label)
    pairs = find_labelled_pairs(tmp_path)["training"]
    assert [Path(p["image"]).name for p in pairs] == ["a.tif", "b.tif"]
    assert all(Path(p["label"]).parent.name == "labels" for p in pairs)
    assert [Path(p).name for p in find_images(tmp_path)] == ["a.tif", "b.tif"]


def test_isbi_style_pairs_and_inference_skips_labels(tmp_path: Path) -> None:
    image, label = _stack()
    write_tiff(tmp_path / "train-volume.tif", image)
    write_tiff(tmp_path / "train-labels.tif", label)
    write_tiff(tmp_path / "test-volume.tif", image)
    pairs = find_labelled_pairs(tmp_path)["training"]
    assert [(Path(p["image"]).name, Path(p["label"]).name) for p in pairs] == [("train-volume.tif", "train-labels.tif")]
    assert [Path(p).name for p in find_images(tmp_path)] == ["test-volume.tif", "train-volume.tif"]


def test_a_single_image_file_is_a_dataset(tmp_path: Path) -> None:
    write_tiff(tmp_path / "one.tif", _stack()[0])
    assert find_images(tmp_path / "one.tif") == [str(tmp_path / "one.tif")]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BundleInputError, match="is not a folder"):
        find_images(tmp_path / "notes.txt")


def test_datalist_json_with_its_own_validation(tmp_path: Path) -> None:
    image, label = _stack(3)
    for name in ("a", "b"):
        write_tiff(tmp_path / f"{name}.tif", image)
        write_tiff(tmp_path / f"{name}_lab.tif", label)
    datalist = {
        "training": [{"image": "a.tif", "label": "a_lab.tif"}],
        "validation": [{"image": "b.tif", "label": "b_lab.tif"}],
    }
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    split = split_sections(tmp_path / "datalist.json", 0.2)
    assert len(split["training"]) == 3 and len(split["validation"]) == 3
    assert split["validation"][0]["name"] == "b.tif[0]"
    with pytest.raises(BundleInputError, match="names its validation sections"):
        split_sections(tmp_path / "datalist.json", 0.2, val_fold=0)


def test_make_datalist_pairs_files_whose_names_do_not(tmp_path: Path) -> None:
    """A datalist for e.g. the FIB-SEM cube (volume.tif + neuron-labels.tif), made where the user wants it instead of
    a config in the bundle pointing outside it; paths are relative to the JSON, as MONAI reads them."""
    image, label = _stack(10)
    write_tiff(tmp_path / "data" / "volume.tif", image)
    write_tiff(tmp_path / "data" / "neuron-labels.tif", label)
    with pytest.raises(BundleInputError, match="no labelled images found"):
        find_labelled_pairs(tmp_path / "data")
    output = tmp_path / "lists" / "cube.json"
    write_datalist(str(tmp_path / "data" / "volume.tif"), str(tmp_path / "data" / "neuron-labels.tif"), output)
    assert json.loads(output.read_text()) == {
        "training": [{"image": "../data/volume.tif", "label": "../data/neuron-labels.tif"}]
    }
    split = split_sections(output, 0.2)
    assert len(split["training"]) == 8 and [s["name"] for s in split["validation"]] == [
        "volume.tif[8]",
        "volume.tif[9]",
    ]
    with pytest.raises(BundleInputError, match="file not found"):
        write_datalist(str(tmp_path / "data" / "absent.tif"), str(tmp_path / "data" / "volume.tif"), output)
    with pytest.raises(BundleInputError, match="2 images but 1 labels"):
        write_datalist([tmp_path / "data" / "volume.tif"] * 2, str(tmp_path / "data" / "volume.tif"), output)
    result = run_cli("-m", "bundle", "make_datalist", "--image", str(tmp_path / "data" / "volume.tif"),
                     "--label", str(tmp_path / "data" / "neuron-labels.tif"), "--output", str(tmp_path / "cli.json"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "cli.json").read_text())["training"][0]["image"] == "data/volume.tif"


def test_last_sections_are_held_out(tmp_path: Path) -> None:
    image, label = _stack(20)
    write_tiff(tmp_path / "x-volume.tif", image)
    write_tiff(tmp_path / "x-labels.tif", label)
    split = split_sections(tmp_path, 0.2)
    assert [s["name"] for s in split["validation"]] == [f"x-volume.tif[{z}]" for z in range(16, 20)]
    assert len(split["training"]) == 16
    assert split["training"][3]["image"].shape == (1, 32, 32)
    np.testing.assert_array_equal(split["training"][3]["image"][0], image[3])
    assert len(labelled_items(tmp_path, "all")) == 20
    assert len(labelled_items(tmp_path, "validation", 0.2)) == 4


def test_cross_validation_folds_hold_out_each_block(tmp_path: Path) -> None:
    image, label = _stack(20)
    write_tiff(tmp_path / "x-volume.tif", image)
    write_tiff(tmp_path / "x-labels.tif", label)
    held_out = []
    for fold in range(5):
        split = split_sections(tmp_path, 0.2, val_fold=fold)
        validation = [int(s["name"].split("[")[1][:-1]) for s in split["validation"]]
        training = [int(s["name"].split("[")[1][:-1]) for s in split["training"]]
        assert validation == list(range(4 * fold, 4 * fold + 4))
        assert training == [z for z in range(20) if z not in validation]
        held_out += validation
    assert held_out == list(range(20))  # every section is held out exactly once
    np.testing.assert_array_equal(split_sections(tmp_path, 0.2, val_fold=1)["validation"][0]["image"][0], image[4])
    assert [s["name"] for s in labelled_items(tmp_path, "validation", 0.2, val_fold=0)] == [
        f"x-volume.tif[{z}]" for z in range(4)
    ]


def test_fold_blocks_and_bad_folds() -> None:
    assert held_out_block(20, 0.2) == slice(16, 20) == held_out_block(20, 0.2, 4)
    assert held_out_block(10, 0.3, 3) == slice(9, 10)  # the last of 4 blocks of 3 is short
    assert held_out_block(10, 0.3) == slice(7, 10)  # the default keeps the last 3 sections
    assert held_out_block(10, 0.0) == slice(10, 10)
    with pytest.raises(BundleInputError, match=r"a fold 0..4 \(20 sections in blocks of 4\), got 5"):
        held_out_block(20, 0.2, 5)
    with pytest.raises(BundleInputError, match="val_fold"):
        held_out_block(20, 0.2, -2)
    with pytest.raises(BundleInputError, match="val_fold: must be an integer"):
        held_out_block(20, 0.2, "last")


def test_volumes_hold_out_only_their_last_block(tmp_path: Path) -> None:
    image, label = _stack(10)
    write_tiff(tmp_path / "x-volume.tif", image)
    write_tiff(tmp_path / "x-labels.tif", label)
    assert split_volumes(tmp_path, 0.2, val_fold=-1)["validation"][0]["name"] == "x-volume.tif[8:10]"
    with pytest.raises(BundleInputError, match="3D volumes hold out only their last sections"):
        split_volumes(tmp_path, 0.2, val_fold=0)


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(BundleInputError, match="dataset folder not found"):
        find_images(tmp_path / "absent")
    with pytest.raises(BundleInputError, match="no images found"):
        find_images(tmp_path)
    with pytest.raises(BundleInputError, match="no labelled images found"):
        find_labelled_pairs(tmp_path)


def test_image_without_label(tmp_path: Path) -> None:
    image, label = _stack()
    write_tiff(tmp_path / "images" / "a.tif", image)
    write_tiff(tmp_path / "labels" / "other.tif", label)
    with pytest.raises(BundleInputError, match="has no label file of the same name"):
        find_labelled_pairs(tmp_path)


def test_shape_mismatch_names_the_label_file(tmp_path: Path) -> None:
    image, label = _stack()
    write_tiff(tmp_path / "x-volume.tif", image)
    write_tiff(tmp_path / "x-labels.tif", label[:3])
    with pytest.raises(BundleInputError, match=r"x-labels.tif: shape \(3, 32, 32\) does not match"):
        split_sections(tmp_path, 0.2)


def test_labels_that_are_not_binary(tmp_path: Path) -> None:
    image, label = _stack()
    label[:, 1, :5] = np.arange(5)
    write_tiff(tmp_path / "x-volume.tif", image)
    write_tiff(tmp_path / "x-labels.tif", label)
    with pytest.raises(BundleInputError, match="not binary-like"):
        split_sections(tmp_path, 0.2)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 2])
def test_bad_validation_fraction(tmp_path: Path, fraction: float) -> None:
    with pytest.raises(BundleInputError, match="val_fraction"):
        split_sections(tmp_path, fraction)


def test_too_few_sections_for_validation(tmp_path: Path) -> None:
    image, label = _stack(1)
    write_tiff(tmp_path / "x-volume.tif", image)
    write_tiff(tmp_path / "x-labels.tif", label)
    with pytest.raises(BundleInputError, match="too few to hold out"):
        split_sections(tmp_path, 0.2)


def test_inverted_labels_stop_with_the_other_convention_as_the_fix(tmp_path: Path) -> None:
    """1 = membrane saved where the bundle reads 0 = membrane: membrane would cover 75% of every section."""
    image, label = _stack()
    write_tiff(tmp_path / "em-volume.tif", image)
    write_tiff(tmp_path / "em-labels.tif", np.where(label == 0, 1, 0).astype(np.uint8))
    with pytest.raises(BundleInputError, match="em-labels.tif") as error:
        split_sections(tmp_path, 0.0)
    assert "covers 88% of the pixels" in str(error.value) and "--label_convention mask" in error.value.fix
    masked = split_sections(tmp_path, 0.0, label_convention="mask")["training"]  # read as what it is
    write_tiff(tmp_path / "em-labels.tif", label)
    isbi = split_sections(tmp_path, 0.0)["training"]
    assert all(np.array_equal(m["label"] == 0, i["label"] == 0) for m, i in zip(masked, isbi))
    with pytest.raises(BundleInputError, match="--label_convention isbi"):  # ISBI labels read as masks: inverted
        split_sections(tmp_path, 0.0, label_convention="mask")
    with pytest.raises(BundleInputError, match="label_convention"):
        labelled_items(tmp_path, label_convention="1=membrane")


def test_a_section_without_membrane_stops(tmp_path: Path) -> None:
    image, label = _stack()
    label[2] = 255
    write_tiff(tmp_path / "em-volume.tif", image)
    write_tiff(tmp_path / "em-labels.tif", label)
    with pytest.raises(BundleInputError, match=r"is missing from section\(s\) \[2\]"):
        split_sections(tmp_path, 0.0)
