# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Shared fixtures: a tiny synthetic labelled dataset, a tiny trained checkpoint, and workflow runners."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
ISBI = SHARED_DATA / "isbi2012"
TINY = [4, 8, 16, 32, 64]
# zarr-python 3 writes and reads zarr v3 (OME-Zarr 0.5); 2 (Python 3.10) only v2
ZARR3 = int(importlib.metadata.version("zarr").split(".")[0]) >= 3
needs_zarr3 = pytest.mark.skipif(not ZARR3, reason="zarr v3 stores (OME-Zarr 0.5) need zarr-python 3")
# evaluate.json overrides train.json (the model zoo's layout): it is always run after it
EVALUATE = ["train.json", "evaluate.json"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.io import write_tiff  # noqa: E402
from scripts.synthetic import make_em_stack  # noqa: E402


def workflow(config: str | list[str], **overrides: Any):
    """An initialized ``ConfigWorkflow`` for ``configs/<config>`` (or several, merged in order, as MONAI merges a
    ``--config_file`` list) with ``overrides`` (bundle_root = repo root)."""
    from monai.bundle import ConfigWorkflow

    configs = [config] if isinstance(config, str) else config
    kind = "train" if configs[0].startswith("train") else "infer"
    if (
        kind == "train" and "output_dir" in overrides
    ):  # train.json writes models/ under bundle_root: not the shipped one
        overrides.setdefault("model_dir", overrides["output_dir"])
    wf = ConfigWorkflow(
        config_file=[str(ROOT / "configs" / c) for c in configs],
        meta_file=str(ROOT / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=kind,
        bundle_root=str(ROOT),
        **overrides,
    )
    wf.initialize()
    return wf


def run_workflow(config: str | list[str], **overrides: Any) -> None:
    """Run ``configs/<config>`` in this process, as ``python -m monai.bundle run`` would."""
    wf = workflow(config, **overrides)
    wf.run()
    wf.finalize()


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python <args>`` from the bundle root in a fresh process, capturing output as text."""
    env = {k: v for k, v in os.environ.items() if k != "FUSIONNET_TRACEBACK"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def tiny_train_overrides(dataset_dir: Path, output_dir: Path) -> dict[str, Any]:
    return {
        "dataset_dir": str(dataset_dir),
        "output_dir": str(output_dir),
        "model_dir": str(output_dir),  # not the repository's models/, which holds the shipped weights
        "features": TINY,
        "patch_size": [64, 64],
        "epochs": 2,
        "val_interval": 1,
        "samples_per_section": 4,
        "batch_size": 2,
    }


def _models_folder() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((ROOT / "models").glob("*"))}


@pytest.fixture(scope="session", autouse=True)
def shipped_weights_untouched() -> Iterator[None]:
    """train.json writes to <bundle_root>/models, as zoo bundles do: no test may do that in the repository, where
    models/model.pt is the shipped model (tests pass model_dir, or train a copy of the bundle)."""
    before = _models_folder()
    yield
    assert _models_folder() == before, "a test wrote into models/: restore it with git checkout -- models/"


@pytest.fixture(scope="session")
def labelled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ISBI-style folder with a synthetic 5 x 96 x 96 stack: em-volume.tif + em-labels.tif."""
    folder = tmp_path_factory.mktemp("labelled")
    image, label = make_em_stack((5, 96, 96), cell_size=24, seed=7)
    write_tiff(folder / "em-volume.tif", image)
    write_tiff(folder / "em-labels.tif", label)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(labelled_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FusionNet of width ``TINY`` trained for 2 epochs on ``labelled_dir`` by configs/train.json."""
    out = tmp_path_factory.mktemp("tiny_train")
    run_workflow("train.json", **tiny_train_overrides(labelled_dir, out))
    assert (out / "model.pt").is_file()
    return out / "model.pt"
