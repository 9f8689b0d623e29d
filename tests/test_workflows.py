# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The bundle's three workflows, run the way users run them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import EVALUATE, ISBI, ROOT, TINY, run_cli, run_workflow, tiny_train_overrides, workflow
from ignite.engine import Events
from monai.handlers import from_engine
from scipy import ndimage
from scripts.io import write_tiff
from scripts.synthetic import make_em_stack


def test_training_loss_falls(labelled_dir: Path, tmp_path: Path) -> None:
    overrides = tiny_train_overrides(labelled_dir, tmp_path)
    overrides.update(samples_per_section=8, epochs=2, learning_rate=0.01)
    wf = workflow("train.json", **overrides)
    trainer = wf.parser.get_parsed_content("train#trainer")
    losses: dict[int, list[float]] = {}
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: losses.setdefault(e.state.epoch, []).append(from_engine(["loss"], first=True)(e.state.output)),
    )
    wf.run()
    assert set(losses) == {1, 2}
    assert np.mean(losses[2]) < np.mean(losses[1])
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "model_final.pt").is_file()
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_train_3d_json_swaps_only_the_2d_augmentations() -> None:
    """train_3d.json overrides two entries of train.json's augmentation list by position (the 2D quarter turn and
    the 2D elastic deformation become a flip along y and quarter turns in the y-x plane of a volume); every other
    entry stays train.json's own. A change to train.json's list that moves those two entries fails here."""
    from monai.bundle import ConfigParser

    train = ConfigParser.load_config_files(str(ROOT / "configs" / "train.json"))["train"]["preprocessing"]
    merged = ConfigParser.load_config_files([str(ROOT / "configs" / n) for n in ("train.json", "train_3d.json")])
    volume = merged["train"]["preprocessing"]["transforms"]
    assert len(volume) == len(train["transforms"])
    changed = {i for i, (a, b) in enumerate(zip(train["transforms"], volume)) if a != b}
    assert changed == {5, 6}
    assert [t["_target_"] for t in train["transforms"][5:7]] == ["RandRotate90d", "Rand2DElasticd"]
    assert volume[5] == {"_target_": "RandFlipd", "keys": ["image", "label"], "prob": 0.5, "spatial_axis": 1}
    assert volume[6]["_target_"] == "RandRotate90d" and volume[6]["spatial_axes"] == [1, 2]
    assert not [t for t in volume if "2D" in t["_target_"]]


def test_3d_training_and_inference_on_instance_labels(tmp_path: Path) -> None:
    """configs/train_3d.json over train.json: a 3D FusionNet learns boundaries derived from neuron labels."""
    image, label = make_em_stack((24, 48, 48), cell_size=20, seed=9)
    neurons = ndimage.label(label > 0)[0].astype(np.uint32)
    write_tiff(tmp_path / "d" / "cube-volume.tif", image)
    write_tiff(tmp_path / "d" / "cube-labels.tif", neurons)
    overrides = tiny_train_overrides(tmp_path / "d", tmp_path / "train")
    overrides.update(patch_size=[16, 32, 32], features=[4, 8, 8, 8, 8])
    wf = workflow(["train.json", "train_3d.json"], **overrides)
    assert wf.parser.get_parsed_content("network_def").spatial_dims == 3
    wf.run()
    run_workflow(
        ["inference.json", "inference_3d.json"], dataset_dir=str(tmp_path / "d"), output_dir=str(tmp_path / "out"),
        features=[4, 8, 8, 8, 8], roi_size=[16, 32, 32], ckpt_path=str(tmp_path / "train" / "model.pt"),
    )  # fmt: skip
    _check_outputs(tmp_path / "out", "cube-volume", (24, 48, 48))
    assert list(csv.DictReader((tmp_path / "out" / "cube-volume_cells.csv").open()))[0]["slice"] == "-1"
    from bundle.cli import score_instances

    scores = score_instances(str(tmp_path / "out" / "cube-volume_seg.tif"), str(tmp_path / "d" / "cube-labels.tif"), 19)
    assert scores["sections"] == [19, 24] and 0.0 <= scores["v_rand"] <= 1.0 and scores["cells_true"] > 0
    perfect = score_instances(str(tmp_path / "d" / "cube-labels.tif"), str(tmp_path / "d" / "cube-labels.tif"))
    assert perfect["v_rand"] == pytest.approx(1.0) and perfect["v_info"] == pytest.approx(1.0)


def test_basicunet_baseline_override_trains_and_evaluates(labelled_dir: Path, tmp_path: Path) -> None:
    """configs/basicunet.json swaps the network for MONAI's BasicUNet in train.json and evaluate.json alike."""
    from monai.networks.nets import BasicUNet

    unet = {"features": [4, 4, 8, 8, 8, 4]}
    wf = workflow(["train.json", "basicunet.json"], **{**tiny_train_overrides(labelled_dir, tmp_path / "t"), **unet})
    assert isinstance(wf.parser.get_parsed_content("network_def"), BasicUNet)
    wf.run()
    run_workflow(
        [*EVALUATE, "basicunet.json"], dataset_dir=str(labelled_dir), output_dir=str(tmp_path / "e"),
        ckpt_path=str(tmp_path / "t" / "model.pt"), **unet,
    )  # fmt: skip
    assert (tmp_path / "e" / "metrics.csv").is_file()


def test_memory_format_and_batch_norm_folding_follow_the_configs(labelled_dir: Path, tiny_checkpoint: Path) -> None:
    """FusionNet trains with channels-last weights, BasicUNet (slower so) and 3D FusionNet (NaN gradients under bf16
    with channels_last_3d on CPU) without; inference folds the batch norms."""

    def channels_last(network: torch.nn.Module) -> bool:
        weight = next(p for p in network.parameters() if p.ndim == 4 and p.shape[-1] == 3 and p.shape[1] > 1)
        return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()

    def batch_norms(network: torch.nn.Module) -> int:
        return sum(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())

    train = {"dataset_dir": str(labelled_dir), "features": TINY}
    assert channels_last(workflow("train.json", **train).parser.get_parsed_content("network"))
    unet = workflow(["train.json", "basicunet.json"], dataset_dir=str(labelled_dir), features=[4, 4, 8, 8, 8, 4])
    assert not channels_last(unet.parser.get_parsed_content("network"))
    volume = workflow(["train.json", "train_3d.json"], dataset_dir=str(labelled_dir), features=TINY)
    volume_weights = volume.parser.get_parsed_content("network").parameters()
    assert next(p for p in volume_weights if p.ndim == 5 and p.shape[1] > 1).is_contiguous()
    weights = {"ckpt_path": str(tiny_checkpoint), "features": TINY}
    inference = workflow("inference.json", **weights).parser.get_parsed_content("network")
    assert channels_last(inference) and batch_norms(inference) == 0
    assert (
        batch_norms(workflow("inference.json", fold_batch_norm=False, **weights).parser.get_parsed_content("network"))
        > 0
    )
    evaluation = workflow(EVALUATE, dataset_dir=str(labelled_dir), **weights).parser.get_parsed_content("network")
    assert batch_norms(evaluation) == 0


def test_evaluation_scores_the_checkpoint_it_is_given(labelled_dir: Path, tiny_checkpoint: Path) -> None:
    """evaluate.json loads --ckpt_path in initialize into network_def, and validate#evaluator runs that network."""
    wf = workflow(EVALUATE, dataset_dir=str(labelled_dir), ckpt_path=str(tiny_checkpoint), features=TINY,
                  fold_batch_norm=False)  # fmt: skip
    state = wf.parser.get_parsed_content("validate#evaluator").network.state_dict()
    saved = torch.load(tiny_checkpoint, weights_only=True)
    assert state.keys() == saved.keys() and all(torch.equal(state[k].cpu(), saved[k]) for k in saved)


def test_same_seed_gives_the_same_weights(labelled_dir: Path, tmp_path: Path) -> None:
    for run in ("a", "b"):
        run_workflow("train.json", **tiny_train_overrides(labelled_dir, tmp_path / run))
    a, b = (torch.load(tmp_path / run / "model_final.pt", weights_only=True) for run in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    run_workflow("train.json", **{**tiny_train_overrides(labelled_dir, tmp_path / "c"), "seed": 1})
    c = torch.load(tmp_path / "c" / "model_final.pt", weights_only=True)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_configs_have_the_monai_properties(labelled_dir: Path, tiny_checkpoint: Path) -> None:
    weights = {"ckpt_path": str(tiny_checkpoint), "features": TINY}
    assert workflow("train.json", dataset_dir=str(labelled_dir)).check_properties() == []
    assert workflow("inference.json", **weights).check_properties() == []
    assert workflow(EVALUATE, dataset_dir=str(labelled_dir), **weights).check_properties() == []


def test_evaluate_writes_metrics_csv(labelled_dir: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    run_workflow(
        EVALUATE,
        dataset_dir=str(labelled_dir),
        ckpt_path=str(tiny_checkpoint),
        features=TINY,
        roi_size=[64, 64],
        output_dir=str(tmp_path),
        subset="validation",
    )
    rows = dict(csv.reader((tmp_path / "metrics.csv").open()))
    for metric in ("v_rand", "v_info", "mean_dice"):
        assert 0.0 <= float(rows[metric]) <= 1.0
    details = (tmp_path / "mean_dice_raw.csv").read_text()
    assert "em-volume.tif[4]" in details

    # python -m bundle evaluate runs the same list (train.json, then evaluate.json) and still catches misspelt keys
    flags = ("--dataset_dir", str(labelled_dir), "--ckpt_path", str(tiny_checkpoint), "--features", str(TINY),
             "--roi_size", "[64,64]", "--output_dir", str(tmp_path / "cli"))  # fmt: skip
    result = run_cli("-m", "bundle", "evaluate", *flags, "--subset", "validation")
    assert result.returncode == 0, result.stderr[-3000:]
    sections = [
        [row[0] for row in csv.reader((folder / "v_rand_raw.csv").open())] for folder in (tmp_path / "cli", tmp_path)
    ]
    assert sections[0] == sections[1] and len(sections[0]) == 2  # the header and the held-out section
    result = run_cli("-m", "bundle", "evaluate", *flags, "--subsett", "validation")
    assert result.returncode == 2 and "did you mean --subset?" in result.stderr


def _check_outputs(output_dir: Path, stem: str, shape: tuple[int, ...]) -> None:
    prob = tifffile.imread(output_dir / f"{stem}_prob.tif")
    assert prob.shape == shape and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    seg = tifffile.imread(output_dir / f"{stem}_seg.tif")
    assert seg.shape == shape and seg.dtype == np.uint32
    rows = list(csv.DictReader((output_dir / f"{stem}_cells.csv").open()))
    assert {int(r["id"]) for r in rows} == set(np.unique(seg[seg > 0]).tolist())
    assert not list(output_dir.glob("*.part"))


def test_inference_writes_probability_cells_and_table(tiny_checkpoint: Path, tmp_path: Path) -> None:
    image, _ = make_em_stack((3, 80, 112), seed=3)
    write_tiff(tmp_path / "in" / "stack.tif", image)
    write_tiff(tmp_path / "in" / "single.tif", image[0])
    run_workflow(
        "inference.json",
        dataset_dir=str(tmp_path / "in"),
        output_dir=str(tmp_path / "out"),
        ckpt_path=str(tiny_checkpoint),
        features=TINY,
        roi_size=[64, 64],
        tta=True,
    )
    _check_outputs(tmp_path / "out", "stack", (3, 80, 112))
    _check_outputs(tmp_path / "out", "single", (80, 112))
    for figure in ("stack_overlay.png", "stack_morphology.png"):
        assert (tmp_path / "out" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inference_instance_mode_none_writes_probability_only(tiny_checkpoint: Path, tmp_path: Path) -> None:
    write_tiff(tmp_path / "in" / "a.tif", make_em_stack((1, 64, 64), seed=4)[0][0])
    run_workflow(
        "inference.json",
        dataset_dir=str(tmp_path / "in"),
        output_dir=str(tmp_path / "out"),
        ckpt_path=str(tiny_checkpoint),
        features=TINY,
        instance_mode="none",
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_prob.tif"]


@pytest.mark.skipif(not (ROOT / "models" / "model.pt").is_file(), reason="no shipped models/model.pt")
def test_default_inference_on_the_shipped_sample(tmp_path: Path) -> None:
    """README's main job: the shipped model on the embedded sample, through `python -m monai.bundle run`."""
    result = run_cli(
        "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--output_dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _check_outputs(tmp_path, "em-volume", tifffile.imread(ROOT / "sample" / "em-volume.tif").shape)
    prob = tifffile.imread(tmp_path / "em-volume_prob.tif")
    membrane = tifffile.imread(ROOT / "sample" / "em-labels.tif") == 0
    assert prob[membrane].mean() > prob[~membrane].mean() + 0.2  # the shipped model sees the sample's membranes
    # the isotropic sample: three planes and dense 3D neurons, the synthetic cells' (separated in 3D by membrane)
    from scripts.isbi_metrics import rand_info_scores

    log = result.stdout + result.stderr
    assert "fibsem-volume.tif: planes xy, xz, yz (near-isotropic" in log and "fibsem-volume.tif: cells in 3D" in log
    _check_outputs(tmp_path, "fibsem-volume", tifffile.imread(ROOT / "sample" / "fibsem-volume.tif").shape)
    cells = ndimage.label(tifffile.imread(ROOT / "sample" / "fibsem-labels.tif") > 0)[0]
    neurons = tifffile.imread(tmp_path / "fibsem-volume_seg.tif")
    assert neurons.min() > 0 and rand_info_scores(cells, neurons)[0] > 0.95


@pytest.mark.skipif(not ISBI.is_dir(), reason="../shared/data/isbi2012 is absent")
@pytest.mark.skipif(not (ROOT / "models" / "model.pt").is_file(), reason="no shipped models/model.pt")
def test_inference_on_real_isbi_stacks(tmp_path: Path) -> None:
    result = run_cli(
        "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
        "--dataset_dir", str(ISBI), "--output_dir", str(tmp_path), "--instance_mode", "none", "--tta", "false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for stem in ("train-volume", "test-volume"):
        prob = tifffile.imread(tmp_path / f"{stem}_prob.tif")
        assert prob.shape == tifffile.imread(ISBI / f"{stem}.tif").shape and prob.dtype == np.float32
    assert not (tmp_path / "train-labels_prob.tif").exists()
    labels = tifffile.imread(ISBI / "train-labels.tif")
    prob = tifffile.imread(tmp_path / "train-volume_prob.tif")[16:]
    pred, true = prob > 0.5, labels[16:] == 0  # the held-out sections
    dice = 2 * (pred & true).sum() / (pred.sum() + true.sum())
    assert dice > 0.7


def test_cli_help_lists_the_commands() -> None:
    result = run_cli("-m", "bundle", "--help")
    assert result.returncode == 0
    for command in ("infer", "train", "evaluate", "make_sample", "verify"):
        assert command in result.stdout + result.stderr


def test_metadata_and_network_io_verify() -> None:
    result = run_cli("-m", "bundle", "verify")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verified" in result.stdout
    result = run_cli(
        "-m", "monai.bundle", "verify_metadata", "--meta_file", "configs/metadata.json",
        "--filepath", "bundle/metadata_schema.json",
    )  # fmt: skip
    assert result.returncode == 0 and "verified" in result.stdout + result.stderr


def test_make_sample_reproduces_the_shipped_sample(tmp_path: Path) -> None:
    from bundle.cli import make_sample

    make_sample(str(tmp_path))
    for name in ("em-volume.tif", "em-labels.tif", "fibsem-volume.tif", "fibsem-labels.tif"):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / name), tifffile.imread(ROOT / "sample" / name))


def test_shipped_model_confirms_the_sample_pixel_size(tmp_path: Path) -> None:
    """README command 1: the image check agrees with the sample's stated 4 nm, so its log has no zoom warning (nor
    has the isotropic sample's, whose 10 nm sets its zoom)."""
    result = run_cli(
        "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--output_dir", str(tmp_path),
        "--tta", "false", "--plots", "false", "--instance_mode", "none",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "confirmed by the image" in log and "another modality" not in log and "WARNING" not in log


def test_checkpoint_state_is_a_plain_state_dict(tiny_checkpoint: Path) -> None:
    state = torch.load(tiny_checkpoint, weights_only=True)
    assert "encoders.0.conv_in.conv.weight" in state
