# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""2.5D input (``context_sections``): each section with its neighbours as channels, in training and evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import EVALUATE, TINY, run_workflow, tiny_train_overrides, workflow
from sample_crop import write_sample_crop
from scripts.annotation import AnnotatedDataset
from scripts.data import input_channels, labelled_items, split_labelled, with_neighbours
from scripts.errors import BundleInputError, find_input_error
from scripts.fusionnet import FusionNet
from scripts.io import OpenFileReader, read_stack, write_tiff
from scripts.transforms import normalize_sections


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


@pytest.fixture(scope="module")
def context_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained, seeded 2.5D FusionNet (one neighbour on each side: 3 input channels)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ctx") / "model.pt"
    torch.save(FusionNet(2, 3, 1, TINY).state_dict(), path)
    return path


def test_inference_and_streaming_give_the_same_2_5d_result(
    context_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    data = write_sample_crop(tmp_path / "data", sections=4, height=96, width=112)
    options = dict(
        dataset_dir=str(data),
        ckpt_path=str(context_checkpoint),
        features=TINY,
        context_sections=1,
        plots=False,
        zoom="pixel_size",  # no zoom estimate, which reads a few sample sections of its own
    )
    run_workflow("inference.json", output_dir=str(tmp_path / "whole"), **options)
    read, sections_read = OpenFileReader.read, []

    def counted(self: OpenFileReader, start: int, stop: int) -> np.ndarray:
        if Path(self.path).name == "em-crop.tif":  # the input, not the probability read back for the cells
            sections_read.extend(range(start, stop))
        return read(self, start, stop)

    monkeypatch.setattr(OpenFileReader, "read", counted)
    run_workflow(["inference.json", "inference_stream.json"], output_dir=str(tmp_path / "stream"), **options)
    assert sorted(sections_read) == [0, 1, 2, 3]  # each section read (and normalized) once, not once per neighbour
    whole, streamed = (tifffile.imread(tmp_path / d / "em-crop_prob.tif") for d in ("whole", "stream"))
    assert whole.shape == (4, 96, 112)
    np.testing.assert_array_equal(streamed, whole)
    # the neighbours matter: the middle section's probability is not what the section alone would give
    alone = normalize_sections(read_stack(str(data / "em-crop.tif")).array[1:2].astype(np.float32)).repeat(3, 1, 1)
    network = FusionNet(2, 3, 1, TINY).eval()
    network.load_state_dict(torch.load(context_checkpoint))
    with torch.no_grad():
        isolated = torch.sigmoid(network(alone[None])).numpy()[0, 0]
    assert np.abs(isolated - whole[1]).max() > 1e-5  # a tiny network trained 2 epochs: small, but far above rounding


def test_a_2_5d_checkpoint_without_its_context_names_the_fix(context_checkpoint: Path, tmp_path: Path):
    data = write_sample_crop(tmp_path / "data", sections=2, height=64, width=64)
    with pytest.raises(Exception) as caught:
        run_workflow(
            "inference.json",
            dataset_dir=str(data),
            output_dir=str(tmp_path / "out"),
            ckpt_path=str(context_checkpoint),
            features=TINY,
        )
    assert "--context_sections 1" in str(find_input_error(caught.value))
    with pytest.raises(BundleInputError, match="context_sections"):
        input_channels(1, spatial_dims=3)
