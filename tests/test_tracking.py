# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Experiment tracking through MONAI's ``--tracking mlflow``, into a local MLflow store (SQLite: MONAI 1.6 refuses
MLflow's plain file store)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, tiny_train_overrides

mlflow = pytest.importorskip("mlflow", reason="no mlflow: pip install --no-deps -r requirements-mlflow.txt")


def test_training_logs_loss_and_validation_metrics_to_mlflow(labelled_dir: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    flags = [f"--{k}={v}".replace(" ", "") for k, v in tiny_train_overrides(labelled_dir, tmp_path / "train").items()]
    result = run_cli(
        "-m", "monai.bundle", "run", "--config_file", "configs/train.json", "--meta_file", "configs/metadata.json",
        "--logging_file", "configs/logging.conf", *flags, "--tracking", "mlflow", "--tracking_uri", store,
        "--experiment_name", "fusionnet_test",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("fusionnet_test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    metrics = {key for run in runs for key in run.data.metrics}
    assert {"train_loss", "val_v_rand", "val_v_info", "val_mean_dice"} <= metrics
    losses = [m.value for run in runs for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert len(losses) >= 2 and all(v == v for v in losses)  # one per iteration, no NaN
