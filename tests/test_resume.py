# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Full checkpoints and resuming a training after a crash (SIGKILL) to the exact weights of an unbroken run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli, run_workflow
from monai.transforms import Compose, RandFlipd, RandGaussianNoised, RandSpatialCropSamplesd
from scripts.errors import BundleInputError, find_input_error
from scripts.resume import TrainingCheckpoint, latest_checkpoint
from scripts.rng import RNGState, find_randomizables

EPOCHS = 4


def _train_args(dataset_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """``monai.bundle run`` arguments of a tiny training: 4 iterations per epoch, a full checkpoint every epoch,
    weight averaging on (so resuming must restore the average too)."""
    overrides = {
        "dataset_dir": str(dataset_dir), "output_dir": str(output_dir), "model_dir": str(output_dir),
        "features": "[4,8,8,8,8]",
        "patch_size": "[32,32]", "samples_per_section": "4", "batch_size": "1", "epochs": str(EPOCHS),
        "val_interval": "1", "save_interval": "1", "keep_checkpoints": "2", "ema_momentum": "0.25",
    }  # fmt: skip
    args = ["-m", "monai.bundle", "run", "--config_file", "configs/train.json"]
    for key, value in overrides.items():
        args += [f"--{key}", value]
    return args + list(extra)


def _flat(state: Any, prefix: str = "") -> dict[str, Any]:
    """Nested checkpoint content as ``{"a.b.c": leaf}``."""
    if isinstance(state, dict):
        return {k: v for key, value in state.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    if isinstance(state, (list, tuple)):
        return {k: v for i, value in enumerate(state) for k, v in _flat(value, f"{prefix}{i}.").items()}
    return {prefix: state}


def _assert_same(a: dict, b: dict, skip: tuple[str, ...] = ()) -> None:
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    for key in fa:
        if not key.startswith(skip):
            same = torch.equal(fa[key], fb[key]) if isinstance(fa[key], torch.Tensor) else fa[key] == fb[key]
            assert same, f"{key} differs"


def _kill_during_epoch_2(args: list[str], output_dir: Path, log: Path) -> None:
    """Start a training, wait for its first full checkpoint and the first iteration of epoch 2, then SIGKILL it."""
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=os.environ)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (output_dir / "checkpoint_epoch=1.pt").is_file() and "Epoch: 2/4, Iter: 1/4" in log.read_text():
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]


def test_resume_after_sigkill_gives_the_weights_of_an_unbroken_run(labelled_dir: Path, tmp_path: Path) -> None:
    """Killed in epoch 2 and resumed with --resume true, a training ends bit-identical to an unbroken one:
    final weights, best model (model.pt), optimizer, lr scheduler and RNG states."""
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    result = run_cli(*_train_args(labelled_dir, unbroken))
    assert result.returncode == 0, result.stderr[-3000:]

    _kill_during_epoch_2(_train_args(labelled_dir, broken), broken, tmp_path / "killed.log")
    assert sorted(p.name for p in broken.glob("*.pt")) == ["checkpoint_epoch=1.pt", "model.pt"]  # died mid-epoch 2
    result = run_cli(*_train_args(labelled_dir, broken, "--resume", "true"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Restored all variables from {broken / 'checkpoint_epoch=1.pt'}" in result.stdout

    for name in ("model_final.pt", "model.pt"):
        a, b = (torch.load(run / name, weights_only=True) for run in (unbroken, broken))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # n_saved=2: the resumed run removes checkpoint_epoch=1.pt from before the crash, as the unbroken one did
    assert sorted(p.name for p in broken.glob("checkpoint_*.pt")) == ["checkpoint_epoch=3.pt", "checkpoint_epoch=4.pt"]
    final = [torch.load(run / f"checkpoint_epoch={EPOCHS}.pt", weights_only=True) for run in (unbroken, broken)]
    assert {
        "model",
        "weight_average",
        "optimizer",
        "lr_scheduler",
        "rng",
        "validation",
        "trainer",
        "checkpointer",
    } <= final[0].keys()
    assert final[0]["trainer"]["iteration"] == EPOCHS * 4  # 4 sections, batch 1
    _assert_same(*final)
    # with weight averaging on, the saved weights are the running average, not the last step's weights
    saved = torch.load(unbroken / "model_final.pt", weights_only=True)
    assert all(torch.equal(saved[k], final[0]["weight_average"][k]) for k in saved)
    assert not all(torch.equal(saved[k], final[0]["model"][k]) for k in saved)


def test_resume_without_a_checkpoint_names_the_folder_and_the_fix(labelled_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception) as info:
        run_workflow("train.json", dataset_dir=str(labelled_dir), output_dir=str(tmp_path), resume="true")
    error = find_input_error(info.value)
    assert error is not None and error.what == str(tmp_path)
    assert "no full checkpoint (checkpoint_epoch=N.pt) to resume from" in str(error)
    assert "without --resume" in error.fix


def test_latest_checkpoint_skips_cut_off_files(tmp_path: Path) -> None:
    torch.save({"x": torch.zeros(3)}, tmp_path / "checkpoint_epoch=2.pt")
    torch.save({"x": torch.zeros(3)}, tmp_path / "checkpoint_epoch=10.pt")
    data = (tmp_path / "checkpoint_epoch=10.pt").read_bytes()
    (tmp_path / "checkpoint_epoch=11.pt").write_bytes(data[: len(data) // 2])  # a write cut off by a crash
    (tmp_path / "checkpoint_epoch=99.pth").write_bytes(data)
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint_epoch=10.pt"
    with pytest.raises(BundleInputError, match="no full checkpoint"):
        latest_checkpoint(tmp_path / "missing")


def test_training_checkpoint_checks_its_settings(tmp_path: Path) -> None:
    with pytest.raises(BundleInputError, match="save_interval: must be an integer >= 0"):
        TrainingCheckpoint(tmp_path, {}, save_interval=-1)
    with pytest.raises(BundleInputError, match="keep_checkpoints: must be a positive integer"):
        TrainingCheckpoint(tmp_path, {}, n_saved=0)
    with pytest.raises(BundleInputError, match="resume: must be true or false"):
        TrainingCheckpoint(tmp_path, {}, resume="maybe")


def _augment() -> Compose:
    return Compose([
        RandSpatialCropSamplesd(keys="image", roi_size=(4, 4), num_samples=2, random_size=False),
        RandFlipd(keys="image", prob=0.5),
        RandGaussianNoised(keys="image", prob=1.0),
    ])  # fmt: skip


def _draw(chain: Compose) -> list[np.ndarray]:
    import random

    out = chain({"image": np.arange(64, dtype=np.float32).reshape(1, 8, 8)})
    extra = [np.array([random.random()]), np.random.rand(2), torch.rand(2).numpy()]
    return [np.asarray(item["image"]) for item in out] + extra


def test_rng_state_restores_global_and_transform_generators(tmp_path: Path) -> None:
    chain = _augment().set_random_state(seed=3)
    rng = RNGState(chain)
    assert len(rng.randomizables) >= 4  # Compose, the crop (and its inner cropper), flip, noise
    torch.save({"rng": rng.state_dict()}, tmp_path / "rng.pt")
    first = _draw(chain)
    rng.load_state_dict(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    again = _draw(chain)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    with pytest.raises(BundleInputError, match="random transform state"):
        RNGState(Compose([RandFlipd(keys="image")])).load_state_dict(rng.state_dict())


def test_find_randomizables_visits_nested_transforms_once() -> None:
    chain = _augment()
    found = find_randomizables([chain, chain])
    assert len(found) == len({id(r) for r in found})
    assert chain.transforms[0].cropper in found
