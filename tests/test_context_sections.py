# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""2.5D input (``context_sections``): each section with its neighbours as channels, in training and evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import EVALUATE, run_workflow, tiny_train_overrides, workflow
from scripts.annotation import AnnotatedDataset
from scripts.data import labelled_items, split_labelled, with_neighbours
from scripts.errors import BundleInputError
from scripts.io import write_tiff


def test_neighbours_are_channels_with_the_edges_repeated():
    stack = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 2, 3), np.float32)
    channels = with_neighbours(stack, 1)
    assert channels.shape == (4, 3, 2, 3)
    np.testing.assert_array_equal(channels[:, :, 0, 0], [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]])
    np.testing.assert_array_equal(with_neighbours(stack, 0), stack[:, None])
    assert (with_neighbours(stack[:1], 2) == stack[0]).all()  # a lone section: copies of itself
    with pytest.raises(BundleInputError, match="context_sections"):
        with_neighbours(stack, -1)


def test_validation_sections_see_their_neighbours_from_the_whole_stack(labelled_dir: Path):
    image = np.asarray(split_labelled(labelled_dir, 0.0)["training"][0]["image"])  # context 0: one channel
    assert image.shape[0] == 1
    split = split_labelled(labelled_dir, 0.4, val_fold=-1, context_sections=1)  # 5 sections: 3 train, 2 held out
    first_held_out, last_trained = split["validation"][0]["image"], split["training"][-1]["image"]
    assert first_held_out.shape[0] == 3 and split["validation"][0]["label"].shape[0] == 1
    np.testing.assert_array_equal(first_held_out[0], last_trained[1])  # the section above is a training image
    assert labelled_items(labelled_dir, "all", context_sections=2)[0]["image"].shape[0] == 5
    with pytest.raises(BundleInputError, match="context_sections"):
        split_labelled(labelled_dir, 0.4, spatial_dims=3, context_sections=1)


def test_monailabel_pairs_get_neighbours_too(tmp_path: Path):
    image = np.random.default_rng(0).integers(0, 255, (3, 32, 32)).astype(np.uint8)
    mask = np.zeros((3, 32, 32), np.uint8)
    mask[:, ::8] = 1
    write_tiff(tmp_path / "a.tif", image)
    write_tiff(tmp_path / "a_label.tif", mask)
    items = AnnotatedDataset(
        [{"image": str(tmp_path / "a.tif"), "label": str(tmp_path / "a_label.tif")}], None, context_sections=1
    )
    assert len(items) == 3 and items[1]["image"].shape == (3, 32, 32)
    np.testing.assert_array_equal(items[1]["image"][2], image[2])


def test_train_and_evaluate_a_2_5d_network(labelled_dir: Path, tmp_path: Path):
    overrides = {**tiny_train_overrides(labelled_dir, tmp_path / "train"), "epochs": 1, "context_sections": 1}
    wf = workflow("train.json", **overrides)
    assert wf.parser.get_parsed_content("network_def").state_dict()["encoders.0.conv_in.conv.weight"].shape[1] == 3
    wf.run()
    wf.finalize()
    checkpoint = tmp_path / "train" / "model_final.pt"
    run_workflow(
        EVALUATE,
        dataset_dir=str(labelled_dir),
        output_dir=str(tmp_path / "eval"),
        ckpt_path=str(checkpoint),
        features=overrides["features"],
        context_sections=1,
        subset="validation",
    )
    assert (tmp_path / "eval" / "metrics.csv").is_file()
