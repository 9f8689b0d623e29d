# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""bundle/bioimageio.py: the model as a bioimage.io package (``bioimageio test`` itself runs in .ci/run, in the two
environments of requirements-bioimageio*.txt)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from bundle import cli
from bundle.bioimageio import HALO, MIN_SIZE, SIZE_STEP, export_bioimageio, section_normalization
from conftest import ROOT, TINY, run_workflow
from scripts.errors import BundleInputError
from scripts.fusionnet import FusionNet
from scripts.io import read_stack
from scripts.scale import write_model_pixel_size


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny FusionNet (trained at 50 x 6 x 6 nm, its model.json says) exported, and the zip's files unpacked."""
    tmp = tmp_path_factory.mktemp("bioimageio")
    torch.manual_seed(3)
    torch.save(FusionNet(features=TINY).state_dict(), tmp / "model.pt")
    write_model_pixel_size(str(tmp / "model.pt"), (50.0, 6.0, 6.0))
    zip_path = Path(export_bioimageio(str(tmp / "dist"), str(tmp / "model.pt")))
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(tmp / "unpacked")
    return tmp / "model.pt", tmp / "unpacked"


def test_package_describes_the_model_for_both_bioimageio_stacks(package: tuple[Path, Path]) -> None:
    ckpt, folder = package
    names = {"rdf.yaml", "README.md", "cover.png", "test_input.npy", "test_output.npy", "sample_input.tif",
             "sample_output.tif", "weights.onnx", "weights.torchscript.pt"}  # fmt: skip
    assert {p.name for p in folder.iterdir()} == names
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5.") and rdf["license"] == "Apache-2.0"
    assert rdf["documentation"] == "README.md"  # a plain file name: ilastik's bioimageio.spec 0.5.7 rejects {source}
    assert set(rdf["weights"]) == {"torchscript", "onnx"} and rdf["weights"]["onnx"]["opset_version"] == 17
    (raw,) = rdf["inputs"]
    space = [a for a in raw["axes"] if a["type"] == "space"]
    assert [a["id"] for a in space] == ["y", "x"]
    assert all(a["unit"] == "nanometer" and a["scale"] == 6.0 for a in space)  # the model's pixel size
    assert all(a["size"] == {"min": MIN_SIZE, "step": SIZE_STEP} for a in space)
    assert [p["id"] for p in raw["preprocessing"]] == ["scale_range", "clip"]
    assert raw["preprocessing"][0]["kwargs"] == {"axes": ["y", "x"], "min_percentile": 1.0, "max_percentile": 99.0}
    (membrane,) = rdf["outputs"]
    assert all(a["halo"] == HALO and a["scale"] == 6.0 for a in membrane["axes"] if a["type"] == "space")
    readme = (folder / "README.md").read_text()
    assert "**6 nm per pixel**" in readme and "## Validation" in readme and "{" not in readme
    assert "*&" not in (folder / "rdf.yaml").read_text()  # no YAML anchors


def test_package_weights_reproduce_its_test_output(package: tuple[Path, Path]) -> None:
    import onnxruntime

    _, folder = package
    test_input, expected = np.load(folder / "test_input.npy"), np.load(folder / "test_output.npy")
    assert test_input.shape == expected.shape == (1, 1, 256, 256) and test_input.dtype == np.float32
    assert 0.0 <= expected.min() and expected.max() <= 1.0  # probability: the sigmoid is in the weights
    normalized = section_normalization(test_input)
    scripted = torch.jit.load(str(folder / "weights.torchscript.pt"))
    np.testing.assert_allclose(scripted(torch.from_numpy(normalized)).detach().numpy(), expected, atol=1e-6)
    session = onnxruntime.InferenceSession(str(folder / "weights.onnx"), providers=["CPUExecutionProvider"])
    larger = section_normalization(np.tile(test_input, (2, 1, 2, 1))[:, :, :400, :320])  # any batch and size
    (onnx_out,) = session.run(None, {"raw": larger})
    np.testing.assert_allclose(onnx_out, scripted(torch.from_numpy(larger)).detach().numpy(), atol=1e-4)


def test_package_map_matches_the_bundles_one_pass_map(package: tuple[Path, Path], tmp_path: Path) -> None:
    """The bundle's map of the sample's first section (one pass, its own normalisation) and the package's, within
    bioimage.io's test tolerance (1e-3)."""
    ckpt, folder = package
    write_model_pixel_size(str(ckpt), (50.0, 4.0, 4.0))  # the sample's: zoom 1, as a consumer runs it
    run_workflow("inference.json", dataset_dir=str(ROOT / "sample"), output_dir=str(tmp_path), ckpt_path=str(ckpt),
                 features=TINY, tta=False, instance_mode="none", plots=False)  # fmt: skip
    bundle_map = read_stack(tmp_path / "em-volume_prob.tif").array[0]
    image = read_stack(ROOT / "sample" / "em-volume.tif").array[:1, None].astype(np.float32)
    scripted = torch.jit.load(str(folder / "weights.torchscript.pt"))
    package_map = scripted(torch.from_numpy(section_normalization(image))).detach().numpy()[0, 0]
    np.testing.assert_allclose(package_map, bundle_map, atol=1e-3, rtol=1e-3)


def test_only_2d_one_channel_fusionnets_export(tmp_path: Path) -> None:
    torch.save(FusionNet(spatial_dims=3, features=TINY).state_dict(), tmp_path / "net3d.pt")
    with pytest.raises(BundleInputError, match="net3d.pt: is not a 2D one-channel FusionNet"):
        export_bioimageio(str(tmp_path), str(tmp_path / "net3d.pt"))
    with pytest.raises(BundleInputError, match="missing.pt: model weights not found"):
        export_bioimageio(str(tmp_path), str(tmp_path / "missing.pt"))
    assert not list(tmp_path.glob("*.zip"))


def test_pack_command_puts_the_package_beside_the_release(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = []
    monkeypatch.setattr(cli, "pack", lambda *args: {"zip": "release.zip"})
    monkeypatch.setattr(cli, "export_bioimageio", lambda out, ckpt: calls.append((out, ckpt)) or "package.zip")
    assert cli.release(str(tmp_path), bundle_root=str(ROOT))["bioimageio"] == "package.zip"
    assert calls == [(str(tmp_path), str(ROOT / "models" / "model.pt"))]
    assert "bioimageio" not in cli.release(str(tmp_path), bioimageio=False)
