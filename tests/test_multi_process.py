# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Training and inference in two processes with torchrun (gloo on CPUs), and the helpers behind them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import TINY, run_cli, run_workflow
from ignite.handlers import ProgressBar
from monai.handlers import CheckpointSaver, LrScheduleHandler, StatsHandler
from scripts import distributed
from scripts.checkpoint import load_weights
from scripts.fusionnet import FusionNet
from scripts.io import write_tiff
from scripts.synthetic import make_em_stack

TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run")
TRAIN = "['configs/train.json','configs/multi_gpu_train.json']"
INFER = "['configs/inference.json','configs/multi_gpu_inference.json']"


def _torchrun(config: str, *overrides: str) -> str:
    result = run_cli(*TORCHRUN, "--config_file", config, *overrides, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


def test_two_process_training_writes_the_model_and_resumes(labelled_dir: Path, tmp_path: Path) -> None:
    """multi_gpu_train.json: DDP over 2 gloo processes writes model.pt, model_final.pt and full checkpoints
    (rank 0 only); a second launch with --resume true goes on from epoch 1 in both processes."""
    args = [
        "--dataset_dir", str(labelled_dir), "--output_dir", str(tmp_path), "--model_dir", str(tmp_path),
        "--features", "[4,8,8,8,8]",
        "--patch_size", "[32,32]", "--val_interval", "1", "--save_interval", "1",
    ]  # fmt: skip
    _torchrun(TRAIN, *args, "--epochs", "1")
    assert {p.name for p in tmp_path.glob("*.pt")} == {"model.pt", "model_final.pt", "checkpoint_epoch=1.pt"}
    assert len({p.name.split(".")[4] for p in tmp_path.glob("events.out.tfevents.*")}) == 1  # one writer process

    log = _torchrun(TRAIN, *args, "--epochs", "2", "--resume", "true")
    assert log.count(f"Restored all variables from {tmp_path / 'checkpoint_epoch=1.pt'}") == 2  # both ranks
    checkpoint = torch.load(tmp_path / "checkpoint_epoch=2.pt", weights_only=True)
    assert checkpoint["trainer"]["iteration"] == 2  # 4 sections over 2 ranks, batch 2: 1 iteration per epoch
    model = load_weights(FusionNet(2, 1, 1, features=[4, 8, 8, 8, 8]), tmp_path / "model_final.pt")  # no "module."
    assert all(torch.equal(v, checkpoint["model"][k]) for k, v in model.state_dict().items())


def test_two_process_inference_splits_the_files(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """multi_gpu_inference.json: 3 images over 2 processes, each segmented once, as one process segments them;
    rank 0 lists them in files.csv."""
    for i in range(3):
        write_tiff(tmp_path / "in" / f"s{i}.tif", make_em_stack((2, 64, 64), seed=i)[0])
    common = {"features": TINY, "roi_size": [64, 64], "ckpt_path": str(tiny_checkpoint), "plots": False}
    overrides = [f"--{k}={v}" for k, v in common.items()]
    # bit-equality needs the same thread count in both runs (the order of floating-point sums depends on it)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    _torchrun(INFER, "--dataset_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "multi"), *overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_workflow("inference.json", dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "one"), **common)
    finally:
        torch.set_num_threads(threads)

    rows = list(csv.DictReader((tmp_path / "multi" / "files.csv").open()))
    assert [(Path(r["image"]).name, r["rank"]) for r in rows] == [("s0.tif", "0"), ("s1.tif", "1"), ("s2.tif", "0")]
    assert all(
        r["outputs"].split() == [f"s{i}_prob.tif", f"s{i}_seg.tif", f"s{i}_cells.csv"] for i, r in enumerate(rows)
    )
    for i in range(3):
        for name in (f"s{i}_prob.tif", f"s{i}_seg.tif"):
            np.testing.assert_array_equal(
                tifffile.imread(tmp_path / "multi" / name), tifffile.imread(tmp_path / "one" / name)
            )


def test_backend_and_device_follow_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.default_backend() == "gloo"
    assert distributed.local_device() == torch.device("cpu") and distributed.device_ids(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.default_backend() == "nccl"
    assert distributed.local_device() == torch.device("cuda:1")
    assert distributed.device_ids(torch.device("cuda:1")) == [torch.device("cuda:1")]


def test_other_ranks_drop_the_logging_handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    lr = LrScheduleHandler(torch.optim.lr_scheduler.StepLR(optimizer, 1))
    saver = CheckpointSaver(str(tmp_path), {"x": optimizer}, save_final=True)
    handlers = [lr, StatsHandler(), ProgressBar(), saver]
    assert distributed.for_this_rank(handlers) == handlers
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert distributed.for_this_rank(handlers) == [lr, saver]
    assert distributed.for_this_rank(None) == []


def test_shard_gives_every_item_to_one_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    assert distributed.shard(range(5)) == [0, 1, 2, 3, 4]
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        shares.append(distributed.shard(range(5)))
    assert shares == [[0, 2, 4], [1, 3]]
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    assert distributed.shard(["only"]) == []  # rank 1 of 3: nothing to do


def test_file_report_in_one_process(tmp_path: Path) -> None:
    (tmp_path / "a_prob.tif").write_bytes(b"")
    report = distributed.write_file_report([{"image": "/x/a.tif"}, {"image": "/x/b.tif"}], tmp_path)
    assert report.read_text().splitlines() == ["image,rank,outputs", "/x/a.tif,0,a_prob.tif", "/x/b.tif,0,"]
