# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""``python -m bundle export_bioimageio``: the model as a BioImage Model Zoo (bioimage.io) package.

ilastik, Fiji (deepImageJ), QuPath and Icy run models in the bioimage.io format, not MONAI bundles. The package is
one zip holding ``rdf.yaml`` (model description format 0.5), the weights as TorchScript and as ONNX (opset 17),
both ending in a sigmoid so that they give membrane probability; a test input and its expected output (also as
TIFF sample tensors) made from the bundle's synthetic sample; a cover image; and a plain ``README.md`` (what it
segments, the pixel size to resample to, scores, licence, citations).

The description is written as YAML here, not with ``bioimageio.spec``: the spec's pydantic pins clash with MONAI
Label's, and the files it writes differ by spec release (``documentation`` as a plain file name is what both the
current bioimageio.core and the older one in ilastik accept). ``.ci/run`` validates the zip with ``bioimageio test``
in two separate environments (``requirements-bioimageio*.txt``), offline.

Preprocessing is bioimage.io's ``scale_range`` (percentiles 1 and 99 of each section, over y and x) and ``clip``
(0, 1): the bundle's per-section normalisation (``scripts.transforms.normalize_sections``), which takes the
percentiles of a subsample of sections above 65536 pixels. Consumers do not resample by the declared pixel size;
the README says to resample to it.
"""

from __future__ import annotations

import json
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import tifffile
import torch
import yaml
from bundle.pack import BUNDLE_ROOT, read_bundle_id
from scripts.errors import BundleInputError
from scripts.outputs import atomic_path
from torch import nn

# Tiles a consumer passes must be a multiple of 16 (four 2x2 poolings).
SIZE_STEP = 16
# Border (pixels) of a tile whose probability differs from the whole section's: beyond 96 pixels from a tile's
# edge the 99th percentile of the difference is below 0.01 (docs/experiments.md, "The bioimage.io package").
# Consumers that tile an image discard it.
HALO = 96
MIN_SIZE = 2 * HALO + SIZE_STEP
TEST_SIZE = 256
OPSET = 17
DOC_TEMPLATE = Path(__file__).with_name("bioimageio_README.md")
SHIPPED_CKPT = BUNDLE_ROOT / "models" / "model.pt"


class MembraneProbability(nn.Module):
    """A 2D network's membrane logits ``(B, 1, Y, X)`` -> probability (sigmoid), for consumers that apply none."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.network(image))


def export_network(ckpt_path: str | Path) -> nn.Module:
    """The 2D one-channel FusionNet of ``ckpt_path`` (its width read off the weights), batch norms folded, in eval
    mode, ending in a sigmoid. Other checkpoints stop with a ``BundleInputError``."""
    from scripts.checkpoint import checkpoint_architecture, load_weights, read_state_dict
    from scripts.fusionnet import FusionNet
    from scripts.inferers import fold_batch_norm

    state = read_state_dict(ckpt_path)
    architecture = checkpoint_architecture(state)
    channels = state.get("encoders.0.conv_in.conv.weight")
    if architecture is None or architecture[0] != "FusionNet" or architecture[2] != 2 or channels.shape[1] != 1:
        raise BundleInputError(
            ckpt_path,
            "is not a 2D one-channel FusionNet (bioimage.io consumers give one grey section)",
            "export a 2D model trained without context_sections",
        )
    res_convs = len({k.split(".")[4] for k in state if k.startswith("encoders.0.residual.convs.")})
    network = load_weights(FusionNet(spatial_dims=2, features=architecture[1], res_convs=res_convs), ckpt_path)
    return MembraneProbability(fold_batch_norm(network)).eval()


def section_normalization(image: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """bioimage.io's ``scale_range`` (percentiles 1 and 99 over every pixel of each ``(Y, X)`` section, ``eps``
    added to the range) then ``clip`` (0, 1), as consumers compute it."""
    low, high = np.percentile(image, [1.0, 99.0], axis=(-2, -1), keepdims=True)
    return np.clip((image - low) / (high - low + eps), 0.0, 1.0).astype(np.float32)


def sample_section() -> np.ndarray:
    """A ``TEST_SIZE`` square of the bundle's synthetic sample (no redistribution question), as float32."""
    from scripts.io import read_stack

    stack = read_stack(BUNDLE_ROOT / "sample" / "em-volume.tif").array
    return np.asarray(stack[0, :TEST_SIZE, :TEST_SIZE], dtype=np.float32)


def _space_axes(scale: tuple[float, float], size: dict | None = None, halo: int | None = None) -> list[dict]:
    axes = []
    for axis_id, axis_scale in zip(("y", "x"), scale):
        axis: dict = {"type": "space", "id": axis_id, "unit": "nanometer", "scale": float(axis_scale)}
        axis["size"] = dict(size) if size else {"tensor_id": "raw", "axis_id": axis_id}  # no YAML anchors
        if halo is not None:
            axis["halo"] = halo
        axes.append(axis)
    return axes


def _tensor(tensor_id: str, text: str, channel: str, space: list[dict]) -> dict:
    """A tensor entry: its axes (batch, one channel, ``space``) and its test and sample files (``test_input.npy``,
    ``sample_input.tif`` for the input "raw"; ``..._output...`` for the output)."""
    role = "input" if tensor_id == "raw" else "output"
    return {
        "id": tensor_id,
        "description": text,
        "axes": [{"type": "batch"}, {"type": "channel", "channel_names": [channel]}, *space],
        "test_tensor": {"source": f"test_{role}.npy"},
        "sample_tensor": {"source": f"sample_{role}.tif"},
    }


def description(version: str, scale: tuple[float, float]) -> dict:
    """``rdf.yaml``'s content for weights at ``scale`` (y, x nm)."""
    meta = json.loads((BUNDLE_ROOT / "configs" / "metadata.json").read_text())
    return {
        "type": "model",
        "format_version": "0.5.3",
        "name": meta["name"],
        "description": (
            "FusionNet (a fully residual encoder-decoder) for cell membranes in 2D electron-microscopy sections of "
            f"brain tissue (ssTEM, and FIB-SEM/SBEM sections); gives membrane probability. Resample to {scale[0]:g} "
            "nm per pixel first."
        ),
        "version": version,
        "authors": [{"name": "The FusionNet bundle developers"}],
        "cite": [
            {"text": "Quan, Hildebrand & Jeong 2016, FusionNet", "doi": "10.48550/arXiv.1612.05360"},
            {
                "text": "Arganda-Carreras et al. 2015, ISBI 2012 EM segmentation challenge",
                "doi": "10.3389/fnana.2015.00142",
            },
            {"text": "Parag et al. 2015, FIB-SEM medulla (neuroproof_examples)", "doi": "10.1371/journal.pone.0125825"},
        ],
        "license": "Apache-2.0",
        "documentation": "README.md",
        "covers": ["cover.png"],
        "tags": ["electron-microscopy", "connectomics", "membrane-segmentation", "2d", "fusionnet", "pytorch", "onnx"],
        "inputs": [
            {
                **_tensor("raw", "one grey EM section", "em", _space_axes(scale, {"min": MIN_SIZE, "step": SIZE_STEP})),
                "data": {"type": "float32"},
                "preprocessing": [
                    {
                        "id": "scale_range",
                        "kwargs": {"axes": ["y", "x"], "min_percentile": 1.0, "max_percentile": 99.0},
                    },
                    {"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}},
                ],
            }
        ],
        "outputs": [
            {
                **_tensor("membrane", "membrane probability", "membrane", _space_axes(scale, halo=HALO)),
                "data": {"type": "float32", "range": [0.0, 1.0]},
            }
        ],
        "weights": {
            "torchscript": {"source": "weights.torchscript.pt", "pytorch_version": torch.__version__.split("+")[0]},
            "onnx": {"source": "weights.onnx", "opset_version": OPSET, "parent": "torchscript"},
        },
    }


def _documentation(ckpt_path: Path, scale: tuple[float, float]) -> str:
    """The package's README.md: the template with these weights' pixel sizes."""
    from scripts.scale import model_isotropic_pixel_size

    text = DOC_TEMPLATE.read_text()
    shipped = ckpt_path.resolve() == SHIPPED_CKPT.resolve()
    weights = "the shipped weights" if shipped else f"weights fine-tuned from them ({ckpt_path.name})"
    isotropic = model_isotropic_pixel_size(str(ckpt_path))
    volumes = (
        f" Near-isotropic volumes (FIB-SEM, SBEM) it learned at {isotropic[-1]:g} nm: resample those to "
        f"{isotropic[-1]:g} nm per voxel."
        if isotropic
        else ""
    )
    return text.replace("{pixel_size}", f"{scale[0]:g}").replace("{weights}", weights).replace("{isotropic}", volumes)


def _cover(path: Path, image: np.ndarray, probability: np.ndarray) -> None:
    from PIL import Image

    grey = (section_normalization(image) * 255).astype(np.uint8)
    membranes = (probability * 255).astype(np.uint8)
    Image.fromarray(np.concatenate([grey, membranes], axis=1)).save(path)


def write_package(folder: Path, ckpt_path: Path) -> dict:
    """The package's files in ``folder``; returns its description."""
    from scripts.scale import model_pixel_size

    network = export_network(ckpt_path)
    scale = model_pixel_size(str(ckpt_path))[1:]
    image = sample_section()
    test_input = image[None, None]
    with torch.no_grad(), warnings.catch_warnings():
        scripted = torch.jit.script(network)
        scripted.save(str(folder / "weights.torchscript.pt"))
        expected = scripted(torch.from_numpy(section_normalization(test_input))).numpy()
        # the tracer warns that FusionNet's size check becomes a constant: sizes are the rdf's multiples of 16
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            network, (torch.from_numpy(test_input),), str(folder / "weights.onnx"), dynamo=False,
            opset_version=OPSET, input_names=["raw"], output_names=["membrane"],
            dynamic_axes={"raw": {0: "batch", 2: "y", 3: "x"}, "membrane": {0: "batch", 2: "y", 3: "x"}},
        )  # fmt: skip
    np.save(folder / "test_input.npy", test_input)
    np.save(folder / "test_output.npy", expected.astype(np.float32))
    tifffile.imwrite(folder / "sample_input.tif", image)  # sample tensors: what a zoo page shows
    tifffile.imwrite(folder / "sample_output.tif", expected[0, 0])
    _cover(folder / "cover.png", image, expected[0, 0])
    (folder / "README.md").write_text(_documentation(ckpt_path, scale))
    _, version = read_bundle_id(BUNDLE_ROOT)
    rdf = description(version, scale)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return rdf


def export_bioimageio(output_dir: str = "dist", ckpt_path: str | None = None) -> str:
    """Write ``<output_dir>/<bundle_name>_v<version>_bioimageio.zip`` for ``ckpt_path`` (default the shipped
    ``models/model.pt``; its ``model.json`` gives the pixel size) and return its path."""
    ckpt = Path(ckpt_path) if ckpt_path else SHIPPED_CKPT
    if not ckpt.is_file():
        raise BundleInputError(ckpt, "model weights not found", "pass --ckpt_path to a model.pt")
    name, version = read_bundle_id(BUNDLE_ROOT)
    target = Path(output_dir) / f"{name}_v{version}_bioimageio.zip"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_package(folder, ckpt)
        with atomic_path(target) as part, zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(folder.iterdir()):
                archive.write(file, file.name)
    return str(target)
