# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""TorchScript (``monai.bundle ckpt_export``) and ONNX (``monai.bundle onnx_export``) exports of the shipped model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import ROOT, run_cli, workflow
from sample_crop import CROP_OVERRIDES, write_sample_crop
from scripts.checkpoint import CheckpointLoader, is_torchscript, load_weights
from scripts.errors import BundleInputError
from scripts.fusionnet import FusionNet
from scripts.transforms import normalize_sections

needs_model = pytest.mark.skipif(not (ROOT / "models" / "model.pt").is_file(), reason="no shipped models/model.pt")
FEATURES = json.loads((ROOT / "configs" / "inference.json").read_text())["features"]
TOLERANCE = 1e-4
ONNX_KWARGS = (
    "{'dynamo': False, 'opset_version': 17, 'input_names': ['image'], 'output_names': ['pred'], "
    "'dynamic_axes': {'image': {0: 'batch', 2: 'height', 3: 'width'}, 'pred': {0: 'batch', 2: 'height', 3: 'width'}}}"
)


def shipped_network() -> torch.nn.Module:
    return load_weights(FusionNet(features=FEATURES), ROOT / "models" / "model.pt").eval()


def em_sections() -> torch.Tensor:
    """Sections 0 and 1 of the shipped sample, normalized as inference does: ``(2, 1, 256, 256)``."""
    stack = tifffile.imread(ROOT / "sample" / "em-volume.tif")[:2]
    return normalize_sections(stack).float().unsqueeze(1)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_fusionnet_scripts_and_keeps_its_input_checks(spatial_dims: int) -> None:
    network = FusionNet(spatial_dims=spatial_dims, features=[4, 8, 8, 8, 8]).eval()
    scripted = torch.jit.script(network)
    x = torch.rand((1, 1) + (16,) * spatial_dims)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), network(x), rtol=0, atol=1e-6)
    with pytest.raises(torch.jit.Error, match="divisible by 16"):
        scripted(torch.rand((1, 1) + (24,) * spatial_dims))


@pytest.fixture(scope="module")
def torchscript_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/model.pt exported by the documented ``ckpt_export`` command into a temporary folder."""
    path = tmp_path_factory.mktemp("export") / "model.ts"
    result = run_cli(
        "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(path), "--ckpt_file", "models/model.pt",
        "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return path


@needs_model
def test_torchscript_export_matches_pytorch(torchscript_file: Path) -> None:
    from monai.data import load_net_with_metadata

    scripted, meta, extra = load_net_with_metadata(
        str(torchscript_file), map_location="cpu", more_extra_files=("inference.json",)
    )
    assert isinstance(scripted, torch.jit.ScriptModule) and is_torchscript(torchscript_file)
    assert meta["version"] == json.loads((ROOT / "configs" / "metadata.json").read_text())["version"]
    assert json.loads(extra["inference.json"])["features"] == FEATURES  # ckpt_export stores the config beside it
    x = em_sections()
    with torch.no_grad():
        expected, got = shipped_network()(x), scripted.eval()(x)
        assert (got - expected).abs().max().item() < TOLERANCE
        odd = x[:1, :, :96, :160]  # another size: a scripted (not traced) module is not tied to one shape
        assert (scripted(odd) - shipped_network()(odd)).abs().max().item() < TOLERANCE
    assert not is_torchscript(ROOT / "models" / "model.pt")


@needs_model
def test_inference_runs_the_torchscript_model_by_ckpt_path(torchscript_file: Path, tmp_path: Path) -> None:
    data = write_sample_crop(tmp_path / "data")
    outputs = {}
    for kind, ckpt in (("pt", ROOT / "models" / "model.pt"), ("ts", torchscript_file)):
        # fp32: under bf16 ("auto" on AVX-512-bf16 CPUs) the folded eager network and the unfolded TorchScript
        # one round differently, which says nothing about the export
        wf = workflow("inference.json", dataset_dir=str(data), output_dir=str(tmp_path / kind), ckpt_path=str(ckpt),
                      precision="fp32", **CROP_OVERRIDES)  # fmt: skip
        network = wf.parser.get_parsed_content("network")
        assert isinstance(network, torch.jit.ScriptModule) == (kind == "ts")
        wf.run()
        wf.finalize()
        outputs[kind] = tifffile.imread(tmp_path / kind / "em-crop_prob.tif")
    assert outputs["ts"].shape == (2, 128, 160)
    np.testing.assert_allclose(outputs["ts"], outputs["pt"], rtol=0, atol=TOLERANCE)


@needs_model
def test_a_damaged_torchscript_file_is_a_bundle_input_error(torchscript_file: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "model.ts"
    damaged.write_bytes(torchscript_file.read_bytes()[:100_000])
    with pytest.raises(BundleInputError, match="model.ts: is not a readable PyTorch checkpoint"):
        CheckpointLoader(damaged, {"model": FusionNet(features=FEATURES)})()


@needs_model
def test_onnx_export_matches_pytorch_under_onnxruntime(tmp_path: Path) -> None:
    import onnxruntime

    path = tmp_path / "model.onnx"
    result = run_cli(
        "-m", "monai.bundle", "onnx_export", "network_def", "--filepath", str(path), "--ckpt_file", "models/model.pt",
        "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", "--use_trace", "True",
        "--input_shape", "[1,1,256,256]", "--converter_kwargs", ONNX_KWARGS,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"] and [o.name for o in session.get_outputs()] == ["pred"]
    x = em_sections()
    for batch in (x, x[:, :, :128, :192]):  # the exported sizes and another (dynamic axes)
        (got,) = session.run(None, {"image": batch.numpy()})
        with torch.no_grad():
            expected = shipped_network()(batch).numpy()
        assert got.shape == expected.shape and np.abs(got - expected).max() < TOLERANCE
