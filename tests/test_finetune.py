# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""configs/finetune.json over configs/train.json: fine-tuning a trained model on a few labelled sections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, run_workflow
from monai.bundle import ConfigParser, ConfigWorkflow
from scripts.errors import BundleInputError, find_input_error
from scripts.finetune import epochs_for_steps, fitting_patch_size, trainable_parameters
from scripts.fusionnet import FusionNet
from scripts.io import PixelSize, write_tiff
from scripts.synthetic import make_em_stack

FILES = [str(ROOT / "configs" / "train.json"), str(ROOT / "configs" / "finetune.json")]
needs_model = pytest.mark.skipif(not (ROOT / "models" / "model.pt").is_file(), reason="no shipped models/model.pt")


def _finetune(**overrides: Any) -> ConfigWorkflow:
    """An initialized fine-tuning workflow (bundle_root = the repository), as ``monai.bundle run`` builds it."""
    wf = ConfigWorkflow(config_file=FILES, meta_file=str(ROOT / "configs" / "metadata.json"), logging_file=False,
                        workflow_type="train", bundle_root=str(ROOT), device="cpu", **overrides)  # fmt: skip
    wf.initialize()
    return wf


def _tiny_checkpoint(path: Path, seed: int = 5) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = FusionNet(features=TINY).state_dict()
    torch.save(state, path)
    return state


def test_finetune_defaults_start_from_the_shipped_model_and_keep_models_untouched() -> None:
    parser = ConfigParser()
    parser.read_config(FILES)
    parser.update({"bundle_root": str(ROOT)})
    inference = json.loads((ROOT / "configs" / "inference.json").read_text())
    train = json.loads((ROOT / "configs" / "train.json").read_text())
    assert Path(parser.get_parsed_content("ckpt_path")) == ROOT / "models" / "model.pt"
    assert parser.get_parsed_content("features") == inference["features"]  # the shipped width, whatever train.json's
    assert Path(parser.get_parsed_content("model_dir")) == ROOT / "runs" / "finetune" / "models"  # not models/
    assert parser.get_parsed_content("learning_rate") < train["learning_rate"]
    assert parser.get_parsed_content("held_out") == 0.25  # a tile of every section checks the result
    assert parser.get_parsed_content("val_interval") == parser.get_parsed_content("epochs")  # scored once, at the end
    saver = parser.get("train#handlers#6")  # the last epoch's weights: model_final.pt; model.pt is the better model
    assert (
        saver["_target_"] == "CheckpointSaver" and saver["save_final"] and saver["final_filename"] == "model_final.pt"
    )
    assert parser.get("train#handlers")[-1]["_target_"] == "scripts.keep_better.KeepBetterModel"  # after the savers
    assert parser.get_parsed_content("keep") == "better"
    # train.json's initialize (checks, seed), then the checkpoint: nothing of train.json's drops out
    assert parser.get("initialize") == [train["initialize"], "$@checkpointloader()"]


@needs_model
def test_finetune_loads_the_shipped_weights_at_its_width(labelled_dir: Path, tmp_path: Path) -> None:
    wf = _finetune(dataset_dir=str(labelled_dir), output_dir=str(tmp_path / "run"))
    shipped = torch.load(ROOT / "models" / "model.pt", map_location="cpu", weights_only=True)
    network = wf.parser.get_parsed_content("network")
    for key, value in network.state_dict().items():
        torch.testing.assert_close(value, shipped[key], rtol=0, atol=0, msg=key)
    # train.json alone starts from random weights
    plain = ConfigParser()
    plain.read_config(FILES[0])
    plain.update({"bundle_root": str(ROOT), "device": "cpu"})
    assert not torch.equal(plain.get_parsed_content("network").state_dict()["head.conv.weight"],
                           shipped["head.conv.weight"])  # fmt: skip


def test_finetune_trains_from_ckpt_path_for_steps_into_its_run_folder(labelled_dir: Path, tmp_path: Path) -> None:
    """From --ckpt_path, the 5 sections' first three quarters training (3 steps an epoch at batch size 2), their last
    quarters held out, the first encoder level frozen; the last epoch's weights land in
    <output_dir>/models/model_final.pt, and model.pt is the better of them and the starting weights."""
    start = _tiny_checkpoint(tmp_path / "start.pt")
    run = tmp_path / "run"
    wf = _finetune(dataset_dir=str(labelled_dir), output_dir=str(run), ckpt_path=str(tmp_path / "start.pt"),
                   features=TINY, samples_per_section=1, batch_size=2, steps=4, freeze_levels=1)  # fmt: skip
    sections = wf.parser.get_parsed_content("sections")
    assert [np.shape(s["image"]) for s in sections["training"]] == [(1, 96, 72)] * 5
    assert [np.shape(s["label"]) for s in sections["validation"]] == [(1, 96, 24)] * 5
    assert wf.parser.get_parsed_content("patch_size") == [64, 64]  # square, within the 96 x 72 training parts
    assert wf.parser.get_parsed_content("epochs") == 2  # ceil(4 steps / 3 steps an epoch)
    network = wf.parser.get_parsed_content("network")
    for key, value in network.state_dict().items():  # loaded before training starts
        torch.testing.assert_close(value, start[key], rtol=0, atol=0, msg=key)
    wf.run()
    wf.finalize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 6
    names = {p.name for p in (run / "models").iterdir()}
    assert {"model.pt", "model_final.pt", "metrics.json", "model.json", "model_final.json"} <= names
    final = torch.load(run / "models" / "model_final.pt", map_location="cpu", weights_only=True)
    frozen = [k for k in start if k.startswith("encoders.0.") and start[k].is_floating_point() and "running" not in k]
    assert frozen and all(torch.equal(final[k], start[k]) for k in frozen)  # frozen level: weights kept
    assert not torch.equal(final["encoders.1.conv_in.conv.weight"], start["encoders.1.conv_in.conv.weight"])
    record = json.loads((run / "models" / "metrics.json").read_text())
    kept = torch.load(run / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert record["held_out_items"] == 5 and record["kept"] in ("base", "finetuned")
    assert all(torch.equal(kept[k], (start if record["kept"] == "base" else final)[k]) for k in start)


def test_epochs_for_steps_gives_the_same_budget_for_any_number_of_sections() -> None:
    assert epochs_for_steps(200, [0] * 2, 2) == 200  # 1 step an epoch
    assert epochs_for_steps(200, [0] * 8, 2) == 50  # 4 steps an epoch
    assert epochs_for_steps(10, [0] * 5, 2) == 4  # 3 steps an epoch: at least the steps asked for
    with pytest.raises(BundleInputError, match="steps"):
        epochs_for_steps(0, [0], 2)
    with pytest.raises(BundleInputError, match="no training sections"):
        epochs_for_steps(10, [], 2)


def test_trainable_parameters_freeze_the_first_encoder_levels() -> None:
    network = FusionNet(features=TINY)
    assert len(list(trainable_parameters(network, 0))) == len(list(network.parameters()))
    trained = {id(p) for p in trainable_parameters(network, 2)}
    for i, level in enumerate(network.encoders):
        assert all((id(p) in trained) == (i >= 2) and p.requires_grad == (i >= 2) for p in level.parameters())
    assert all(id(p) in trained for p in network.bridge.parameters())
    with pytest.raises(BundleInputError, match="at most 4"):
        trainable_parameters(FusionNet(features=TINY), 5)
    with pytest.raises(BundleInputError, match="needs a FusionNet"):
        trainable_parameters(torch.nn.Conv2d(1, 1, 3), 1)


def test_bundle_cli_finetune_runs_train_and_finetune_json(monkeypatch: pytest.MonkeyPatch) -> None:
    import bundle.cli as cli

    calls = []
    monkeypatch.setattr(cli, "_run_workflow", lambda config, overrides: calls.append((config, overrides)))
    cli.COMMANDS["finetune"](dataset_dir="my_labels")
    assert calls == [(["train.json", "finetune.json"], {"dataset_dir": "my_labels"})]


def test_finetuned_model_records_the_pixel_size_of_the_sections_it_learned(tmp_path: Path) -> None:
    """Fine-tuning learns the images at their own pixels (experiments.md#fine-tuning: resampling them to the base
    model's scored lower), so the fine-tuned model records their pixel size: the files', else --pixel_size, else
    (none known) the base model's."""
    from scripts.io import PixelSize, write_tiff
    from scripts.scale import model_pixel_size, record_training_pixel_size, write_model_pixel_size

    base = str(tmp_path / "base.pt")
    write_model_pixel_size(base, (40.0, 5.0, 5.0))
    image = np.full((2, 32, 32), 128, np.uint8)
    for name, nm in (("tagged", 8.0), ("bare", None)):
        for sub in ("images", "labels"):
            (tmp_path / name / sub).mkdir(parents=True)
            write_tiff(tmp_path / name / sub / "em.tif", image, PixelSize((None, nm, nm), "test") if nm else None)

    def recorded(dataset: str, pixel_size: object = "file") -> tuple[float, float, float]:
        record_training_pixel_size(str(tmp_path / "out"), str(tmp_path / dataset), pixel_size, base)
        return model_pixel_size(str(tmp_path / "out" / "model.pt"))

    assert recorded("tagged") == (50.0, 8.0, 8.0)  # the images' own (z unknown: ISBI's section spacing)
    assert recorded("tagged", [30, 10, 10]) == (30.0, 10.0, 10.0)
    assert recorded("bare") == (40.0, 5.0, 5.0)  # nothing known: the base model's scale is assumed kept


def test_fitting_patch_size_fits_small_labelled_crops(labelled_dir: Path, tmp_path: Path) -> None:
    """finetune.json's patch: 256 a side unless a labelled section is smaller (then the largest multiple of 16 that
    fits it, per axis, y and x alike), so 250x250 FIB-SEM crops fine-tune without --patch_size; --patch_size still wins.
    """

    def items(*shapes: tuple[int, ...]) -> list[dict]:
        return [{"image": np.zeros((1, *shape), np.float32)} for shape in shapes]

    assert fitting_patch_size(items((512, 512), (1024, 300))) == [256, 256]
    assert fitting_patch_size(items((512, 512), (250, 250))) == [240, 240]
    assert fitting_patch_size(items((40, 512))) == [32, 32]  # square: 90-degree turns swap y and x
    assert fitting_patch_size(items((8, 512))) == [256, 256]  # too small for any patch: CheckSpatialSized says so
    assert fitting_patch_size(items((30, 100, 100)), 3) == [16, 64, 64]
    assert fitting_patch_size(items((64, 100, 50)), 3) == [64, 48, 48]  # turned in y and x only
    assert fitting_patch_size([]) == [256, 256]
    _tiny_checkpoint(tmp_path / "s.pt")
    run = {"dataset_dir": str(labelled_dir), "output_dir": str(tmp_path / "run"), "ckpt_path": str(tmp_path / "s.pt")}
    wf = _finetune(**run, features=TINY)
    assert wf.parser.get_parsed_content("patch_size") == [64, 64]  # the 96x72 training parts of the 96x96 sections
    wf = _finetune(**run, features=TINY, patch_size=[64, 64])
    assert wf.parser.get_parsed_content("patch_size") == [64, 64]


def test_fitting_patch_size_starts_from_the_training_configs_patch() -> None:
    """fitting_patch_size's largest patch is train.json's (2D) and train_3d.json's (3D), and a spatial_dims other
    than 2 or 3 is the settings check's clear error, not a KeyError."""
    from scripts.settings import TRAINING_PATCH_SIDE

    for name, dims in (("train.json", 2), ("train_3d.json", 3)):
        patch = json.loads((ROOT / "configs" / name).read_text())["patch_size"]
        assert patch == [TRAINING_PATCH_SIDE[dims]] * dims == fitting_patch_size([], dims)
    with pytest.raises(BundleInputError, match="spatial_dims.*must be 2 or 3"):
        fitting_patch_size([], 4)


def test_pixel_size_is_recorded_when_training_starts_not_before(tmp_path: Path) -> None:
    """A training stopped by a bad setting leaves model_dir (by default the shipped models/) as it was; one that
    runs records the training images' pixel size beside its weights."""
    folder = tmp_path / "data"
    image, label = make_em_stack((3, 64, 64), cell_size=20, seed=1)
    write_tiff(folder / "em-volume.tif", image, PixelSize((50.0, 8.0, 8.0), "test"))
    write_tiff(folder / "em-labels.tif", label)
    bad = tmp_path / "bad"
    with pytest.raises(Exception) as info:
        run_workflow(
            "train.json", dataset_dir=str(folder), output_dir=str(bad), model_dir=str(bad), features=[4, 8, 16]
        )
    assert find_input_error(info.value) is not None and not (bad / "model.json").exists()
    good = tmp_path / "good"
    run_workflow("train.json", dataset_dir=str(folder), output_dir=str(good), model_dir=str(good), features=TINY,
                 patch_size=[32, 32], epochs=1, val_fraction=0, samples_per_section=1)  # fmt: skip
    assert json.loads((good / "model.json").read_text())["pixel_size_nm"] == [50.0, 8.0, 8.0]


def test_finetune_without_held_out_labels_keeps_the_trained_model_unchecked(labelled_dir: Path, tmp_path: Path):
    """--held_out 0 trains on whole sections and cannot check: the trained weights become model.pt, and the
    record says they were not checked."""
    _tiny_checkpoint(tmp_path / "start.pt")
    run = tmp_path / "run"
    wf = _finetune(dataset_dir=str(labelled_dir), output_dir=str(run), ckpt_path=str(tmp_path / "start.pt"),
                   features=TINY, samples_per_section=1, batch_size=5, steps=1, held_out=0)  # fmt: skip
    assert not wf.parser.get_parsed_content("sections")["validation"]
    wf.run()
    wf.finalize()
    assert (run / "models" / "model.pt").read_bytes() == (run / "models" / "model_final.pt").read_bytes()
    assert json.loads((run / "models" / "metrics.json").read_text())["checked"] is False
    with pytest.raises(Exception) as error:
        _finetune(dataset_dir=str(labelled_dir), output_dir=str(run), ckpt_path=str(tmp_path / "start.pt"),
                  features=TINY, held_out=0.9).parser.get_parsed_content("sections")  # fmt: skip
    assert "held_out" in str(find_input_error(error.value))
