# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""scripts.keep_better: a training that starts from a trained model keeps the better of the two."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY
from ignite.engine import Engine, Events
from scripts.errors import BundleInputError
from scripts.fusionnet import FusionNet
from scripts.keep_better import KeepBetterModel, holds_weights_of
from scripts.scale import model_pixel_size, write_model_pixel_size


class ScriptedValidator:
    """Stands in for validate#evaluator: each ``run`` gives the next scripted V_rand and tracks the best one as
    MONAI's workflows do (``best_metric_epoch`` -1 until the first run)."""

    def __init__(self, scores: list[float], held_out: int = 2) -> None:
        self.scores, self.data_loader, self.runs, self.zooms = list(scores), [None] * held_out, [], []
        self.inferer = SimpleNamespace(zoom=None, spatial_dims=2)  # MembraneInferer's zoom for inputs without one
        self.state = SimpleNamespace(key_metric_name="val_v_rand", metrics={}, epoch=0, best_metric=-1.0,
                                     best_metric_epoch=-1)  # fmt: skip

    def run(self, epoch: int) -> None:
        score = self.scores.pop(0)
        self.runs.append(epoch)
        self.zooms.append(self.inferer.zoom)
        self.state.epoch, self.state.metrics = epoch, {"val_v_rand": score, "val_v_info": score / 2}
        if self.state.best_metric_epoch == -1 or score > self.state.best_metric:
            self.state.best_metric, self.state.best_metric_epoch = score, epoch


def _setup(tmp_path: Path) -> tuple[FusionNet, Path, Path]:
    """A tiny network holding the weights saved as the starting model (at 10 nm) and a model folder with the trained
    weights as train.json leaves them (model_final.pt, and model.json at 4 nm written when training started)."""
    torch.manual_seed(0)
    network = FusionNet(features=TINY)
    start = tmp_path / "start.pt"
    torch.save(network.state_dict(), start)
    write_model_pixel_size(str(start), (10.0, 10.0, 10.0))
    models = tmp_path / "models"
    models.mkdir()
    torch.manual_seed(1)
    torch.save(FusionNet(features=TINY).state_dict(), models / "model_final.pt")
    write_model_pixel_size(str(models / "model.pt"), (50.0, 4.0, 4.0))
    return network, start, models


def _train(handler: KeepBetterModel, epochs: int = 2, validator: ScriptedValidator | None = None) -> Engine:
    trainer = Engine(lambda engine, batch: None)
    handler.attach(trainer)
    if validator is not None:  # train.json's ValidationHandler: the last epoch is scored
        trainer.add_event_handler(Events.EPOCH_COMPLETED(every=epochs), lambda e: validator.run(e.state.epoch))
    trainer.run([0], max_epochs=epochs)
    return trainer


def test_starting_model_kept_when_the_trained_one_scores_lower(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    network, start, models = _setup(tmp_path)
    validator = ScriptedValidator([0.95, 0.93])
    with caplog.at_level(logging.WARNING, logger="scripts.keep_better"):
        _train(KeepBetterModel(validator, network, str(models), str(start)), validator=validator)
    assert validator.runs == [0, 2]  # the starting weights first, then the last epoch
    # the starting model (10 nm) sees the 4 nm labels as inference would run it; the trained one at their pixels
    assert validator.zooms == [(0.4, 0.4), None]
    record = json.loads((models / "metrics.json").read_text())
    assert record["kept"] == "base" and record["base"]["val_v_rand"] == 0.95 and record["trained"]["val_v_rand"] == 0.93
    assert "did not beat the starting model" in caplog.text and "(-0.0200)" in caplog.text
    assert "--keep finetuned" in caplog.text
    assert model_pixel_size(str(models / "model.pt")) == (10.0, 10.0, 10.0)  # the starting model's scale
    assert model_pixel_size(str(models / "model_final.pt")) == (50.0, 4.0, 4.0)  # the training's


def test_trained_model_kept_when_it_scores_higher(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    network, start, models = _setup(tmp_path)
    validator = ScriptedValidator([0.90, 0.93])
    with caplog.at_level(logging.INFO, logger="scripts.keep_better"):
        _train(KeepBetterModel(validator, network, str(models), str(start)), validator=validator)
    record = json.loads((models / "metrics.json").read_text())
    assert record["kept"] == "finetuned" and record["best_epoch"] == 2
    assert "trained model kept (epoch 2)" in caplog.text and "(+0.0300)" in caplog.text
    assert model_pixel_size(str(models / "model.pt")) == (50.0, 4.0, 4.0)


def test_keep_finetuned_makes_the_trained_weights_the_model_whatever_they_scored(tmp_path: Path) -> None:
    network, start, models = _setup(tmp_path)
    validator = ScriptedValidator([0.95, 0.90])
    _train(KeepBetterModel(validator, network, str(models), str(start), keep="finetuned"), validator=validator)
    assert json.loads((models / "metrics.json").read_text())["kept"] == "finetuned"
    assert (models / "model.pt").read_bytes() == (models / "model_final.pt").read_bytes()
    with pytest.raises(BundleInputError, match="keep"):
        KeepBetterModel(validator, network, str(models), keep="last")
    for min_gain in (-0.1, "0.005", True):
        with pytest.raises(BundleInputError, match="min_gain"):
            KeepBetterModel(validator, network, str(models), min_gain=min_gain)


def test_a_gain_within_the_margin_keeps_the_starting_model(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The validator's CheckpointSaver wrote the better-scoring epoch to model.pt; a gain of no more than min_gain
    puts the starting model back."""
    network, start, models = _setup(tmp_path)
    validator = ScriptedValidator([0.990, 0.993])
    handler = KeepBetterModel(validator, network, str(models), str(start), min_gain=0.005)
    # the CheckpointSaver's model.pt after the trained epoch's validation: the trained weights
    validator.run = _saving(validator.run, models / "model_final.pt", models / "model.pt")  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="scripts.keep_better"):
        _train(handler, validator=validator)
    record = json.loads((models / "metrics.json").read_text())
    assert record["kept"] == "base" and record["min_gain"] == 0.005 and record["best_epoch"] == 2
    assert "did not beat the starting model by more than 0.005" in caplog.text and "(+0.0030)" in caplog.text
    assert (models / "model.pt").read_bytes() == start.read_bytes()
    caplog.clear()
    (tmp_path / "again").mkdir()
    network, start, models = _setup(tmp_path / "again")
    validator = ScriptedValidator([0.980, 0.990])
    with caplog.at_level(logging.INFO, logger="scripts.keep_better"):
        _train(KeepBetterModel(validator, network, str(models), str(start), min_gain=0.005), validator=validator)
    assert json.loads((models / "metrics.json").read_text())["kept"] == "finetuned"


def _saving(run: Callable[[int], None], source: Path, target: Path) -> Callable[[int], None]:
    """``run``, then a copy of ``source`` at ``target`` after every validation of trained weights (epoch > 0)."""

    def run_and_save(epoch: int) -> None:
        run(epoch)
        if epoch > 0:
            shutil.copyfile(source, target)

    return run_and_save


def test_last_epoch_scored_when_validation_did_not_run_then(tmp_path: Path) -> None:
    """MONAI Label's max_epochs need not be a multiple of val_interval: the trained weights are scored anyway."""
    network, start, models = _setup(tmp_path)
    validator = ScriptedValidator([0.90, 0.91])
    _train(KeepBetterModel(validator, network, str(models), str(start)), epochs=3)
    assert validator.runs == [0, 3]


def test_training_from_scratch_is_left_alone(tmp_path: Path) -> None:
    network, start, models = _setup(tmp_path)
    torch.nn.init.zeros_(network.head.conv.weight)  # no longer the starting weights
    validator = ScriptedValidator([])
    _train(KeepBetterModel(validator, network, str(models), str(start)))
    assert not (models / "metrics.json").exists() and not (models / "model.pt").exists()
    assert holds_weights_of(FusionNet(features=TINY), tmp_path / "missing.pt") is False


def test_served_model_stays_when_nothing_was_held_out(tmp_path: Path) -> None:
    """MONAI Label with too few labels for a validation split: the served model in model_dir stays; a fine-tuning
    into its own folder gets the trained weights as model.pt, unchecked, and says so."""
    network, start, models = _setup(tmp_path)
    torch.save(network.state_dict(), models / "model.pt")  # the served model, loaded by MONAI Label's loader
    served = (models / "model.pt").read_bytes()
    _train(KeepBetterModel(ScriptedValidator([], held_out=0), network, str(models)))
    assert (models / "model.pt").read_bytes() == served
    assert json.loads((models / "metrics.json").read_text()) == {"metric": "val_v_rand", "kept": "base",
                                                                 "checked": False}  # fmt: skip
    (models / "model.pt").unlink()
    _train(KeepBetterModel(ScriptedValidator([], held_out=0), network, str(models), str(start)))
    assert (models / "model.pt").read_bytes() == (models / "model_final.pt").read_bytes()


def test_resumed_run_reads_the_starting_models_score_back(tmp_path: Path) -> None:
    network, start, models = _setup(tmp_path)
    (models / "metrics.json").write_text(json.dumps({"metric": "val_v_rand", "base": {"val_v_rand": 0.95}}))
    validator = ScriptedValidator([0.93])
    handler = KeepBetterModel(validator, network, str(models), str(start))
    trainer = Engine(lambda engine, batch: None)
    handler.attach(trainer)
    trainer.state.epoch, trainer.state.max_epochs = 1, 2  # as TrainingCheckpoint leaves a resumed run
    trainer.run([0], max_epochs=2)
    assert validator.runs == [2]  # the starting weights are not scored again (the network holds others now)
    assert json.loads((models / "metrics.json").read_text())["kept"] == "base"
    # the resumed run's validation wrote its weights to model.pt (its saver forgot the starting model's score)
    assert (models / "model.pt").read_bytes() == start.read_bytes()


def test_served_model_kept_with_its_own_pixel_size(tmp_path: Path) -> None:
    """MONAI Label: the served model (10 nm) sits in model_dir, and training rewrites its model.json with the labels'
    scale (4 nm) when it starts. Kept, it gets its own scale back; it was scored at the zoom inference gives it; its
    file is back where a trained epoch within the margin had replaced it."""
    network, _, models = _setup(tmp_path)
    torch.save(network.state_dict(), models / "model.pt")
    served = (models / "model.pt").read_bytes()
    write_model_pixel_size(str(models / "model.pt"), (10.0, 10.0, 10.0))
    validator = ScriptedValidator([0.95, 0.952])
    validator.run = _saving(validator.run, models / "model_final.pt", models / "model.pt")  # type: ignore[method-assign]
    handler = KeepBetterModel(validator, network, str(models), min_gain=0.005)  # built before training, as train.json
    write_model_pixel_size(str(models / "model.pt"), (50.0, 4.0, 4.0))  # TrainingPixelSize at STARTED
    _train(handler, validator=validator)
    assert (models / "model.pt").read_bytes() == served
    assert validator.zooms == [(0.4, 0.4), None]
    assert model_pixel_size(str(models / "model.pt")) == (10.0, 10.0, 10.0)
    assert model_pixel_size(str(models / "model_final.pt")) == (50.0, 4.0, 4.0)
