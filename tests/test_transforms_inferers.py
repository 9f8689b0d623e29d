# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ROOT
from scripts.errors import BundleInputError
from scripts.fusionnet import FusionNet
from scripts.inferers import (
    AutocastInferer,
    MembraneInferer,
    dihedral,
    fold_batch_norm,
    membrane_probability,
    prepare_network,
    undo_dihedral,
)
from scripts.transforms import (
    CheckSpatialSized,
    MakeTargetd,
    NormalizeSectionsd,
    boundaries_from_instances,
    normalize_sections,
)


def test_each_section_is_normalized_on_its_own() -> None:
    stack = torch.stack([torch.linspace(0, 100, 400).reshape(20, 20), torch.linspace(50, 60, 400).reshape(20, 20)])
    out = normalize_sections(stack[None])
    assert out.shape == (1, 2, 20, 20)
    for z in range(2):
        assert out[0, z].min() == 0.0 and out[0, z].max() == 1.0
        assert 0.45 < out[0, z].median() < 0.55


def test_flat_section_becomes_zeros() -> None:
    out = NormalizeSectionsd("image")({"image": torch.full((1, 8, 8), 7.0)})["image"]
    assert torch.count_nonzero(out) == 0


def test_membrane_target_inverts_isbi_labels() -> None:
    label = np.array([[[0, 255], [255, 0]]], np.uint8)
    target = MakeTargetd("label")({"label": label})["label"]
    torch.testing.assert_close(target, torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))


def test_membrane_target_rejects_multi_valued_labels() -> None:
    with pytest.raises(BundleInputError, match="not binary-like"):
        MakeTargetd("label")({"label": np.array([[[0, 1, 2]]]), "name": "x.tif[0]"})


def test_boundaries_from_instance_labels() -> None:
    labels = np.ones((1, 2, 4, 4), np.uint32)
    labels[0, :, :, 2:] = 2
    labels[0, 1, 0, 0] = 3  # differs from the voxel below it in z only
    in_plane = boundaries_from_instances(labels, spatial_dims=2)
    assert in_plane[0, 0, :, 1:3].all() and not in_plane[0, 0, :, 0].any() and not in_plane[0, 0, :, 3].any()
    across = boundaries_from_instances(labels, spatial_dims=3)
    assert across[0, 0, 0, 0] and not in_plane[0, 0, 0, 0]
    target = MakeTargetd("label", target="boundaries", spatial_dims=3)({"label": labels})["label"]
    assert target.dtype == torch.float32 and target.shape == labels.shape


def test_foreground_target_and_unknown_target() -> None:
    target = MakeTargetd("label", target="foreground")({"label": np.array([[[0, 3, 9]]])})["label"]
    torch.testing.assert_close(target, torch.tensor([[[0.0, 1.0, 1.0]]]))
    with pytest.raises(BundleInputError, match="target"):
        MakeTargetd("label", target="nuclei")


def test_patch_larger_than_section_is_rejected() -> None:
    with pytest.raises(BundleInputError, match="smaller than the patch size"):
        CheckSpatialSized("image", (64, 64))({"image": np.zeros((1, 32, 80)), "name": "x.tif[0]"})


@pytest.mark.parametrize("k", range(8))
def test_dihedral_is_undone(k: int) -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    torch.testing.assert_close(undo_dihedral(dihedral(x, k), k), x)


def test_the_eight_transforms_are_distinct() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert len({tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}) == 8


def test_tta_of_an_equivariant_network_equals_one_pass() -> None:
    net = torch.nn.Identity()
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(membrane_probability(x, net, tta=True), torch.sigmoid(x))


def test_tta_calls_the_network_eight_times() -> None:
    calls = []

    class Counting(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(x.shape)
            return x

    membrane_probability(torch.randn(1, 1, 16, 16), Counting(), tta=True)
    assert len(calls) == 8


@pytest.mark.parametrize("shape", [(1, 1, 3, 40, 72), (1, 1, 40, 72), (1, 1, 1, 20, 20)])
def test_membrane_inferer_keeps_shape_and_range(shape: tuple[int, ...]) -> None:
    net = FusionNet(features=(4, 8, 8, 8, 8)).eval()
    with torch.no_grad():
        prob = MembraneInferer(roi_size=(32, 32), sw_batch_size=2, tta=True)(torch.rand(shape), net)
    assert prob.shape == shape
    assert 0.0 <= float(prob.min()) and float(prob.max()) <= 1.0


def test_images_smaller_than_the_window_get_a_smaller_window() -> None:
    inferer = MembraneInferer(roi_size=(256, 256))
    assert inferer.window_size((64, 50)) == (64, 64)
    assert inferer.window_size((512, 300)) == (256, 256)
    net = FusionNet(features=(4, 8, 8, 8, 8)).eval()
    with torch.no_grad():
        assert inferer(torch.rand(1, 1, 2, 40, 70), net).shape == (1, 1, 2, 40, 70)
        assert inferer(torch.rand(1, 1, 5, 70), net).shape == (1, 1, 5, 70)  # too thin to reflect-pad to 16


def test_slices_are_independent() -> None:
    """A 2D network on a stack must give each section the same result as on its own."""
    net = FusionNet(features=(4, 8, 8, 8, 8)).eval()
    stack = torch.rand(1, 1, 3, 32, 48)
    inferer = MembraneInferer(roi_size=(32, 32), sw_batch_size=3)
    with torch.no_grad():
        whole = inferer(stack, net)
        alone = inferer(stack[:, :, 1], net)
    torch.testing.assert_close(whole[:, :, 1], alone, atol=1e-5, rtol=1e-5)


def test_windows_per_call_follow_the_device() -> None:
    """sw_batch_size "auto" (the configs' default) gives one window per call on a CPU and four on a GPU; a number
    is used as given on either."""
    auto = MembraneInferer(roi_size=(32, 32))
    assert auto.window_settings((64, 64))[1]["sw_batch_size"] == 1
    assert auto.window_settings((64, 64), torch.device("cuda"))[1]["sw_batch_size"] == 4
    assert (
        MembraneInferer(roi_size=(32, 32), sw_batch_size=3).window_settings((64, 64), "cuda")[1]["sw_batch_size"] == 3
    )
    net = FusionNet(features=(4, 8, 8, 8, 8)).eval()
    calls = []
    net.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    with torch.no_grad():
        auto(torch.rand(1, 1, 64, 64), net)
    assert calls == [1] * 9  # 3 x 3 windows of 32 with overlap 0.25, one per call


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"roi_size": (40, 32)}, "roi_size"),
        ({"roi_size": (32,)}, "roi_size"),
        ({"roi_size": (32, 32), "overlap": 1.0}, "overlap"),
        ({"roi_size": (32, 32), "sw_batch_size": 0}, "sw_batch_size"),
        ({"roi_size": (32, 32), "sw_batch_size": "many"}, "sw_batch_size"),
        ({"roi_size": (32, 32), "precision": "int8"}, "precision"),
    ],
)
def test_bad_inferer_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(BundleInputError, match=match):
        MembraneInferer(**kwargs)


@pytest.mark.parametrize(
    "value,expected", [("false", False), ("False", False), ("true", True), (0, False), (True, True)]
)
def test_command_line_booleans(value: object, expected: bool) -> None:
    """fire hands `--tta false` over as the string "false"; it must not count as true."""
    assert MembraneInferer(roi_size=(32, 32), tta=value).tta is expected


def test_bad_boolean_is_rejected() -> None:
    with pytest.raises(BundleInputError, match="tta: must be true or false"):
        MembraneInferer(roi_size=(32, 32), tta="maybe")


def test_bf16_autocast_inferer_returns_float32_logits_close_to_fp32() -> None:
    torch.manual_seed(0)
    net = FusionNet(features=(4, 8, 8, 8, 8)).eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        fp32 = AutocastInferer("fp32")(x, net)
        bf16 = AutocastInferer("bf16")(x, net)
    assert bf16.dtype == torch.float32
    assert torch.allclose(torch.sigmoid(bf16), torch.sigmoid(fp32), atol=0.05)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_native(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    """bf16 is emulated (many times slower than fp32) on AVX2-only CPUs, so "auto" must fall back to fp32 there."""
    from scripts import inferers

    monkeypatch.setattr(inferers, "native_bf16", lambda device: native)
    assert inferers.autocast_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if native else None)
    assert inferers.autocast_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert inferers.autocast_dtype("fp32", torch.device("cpu")) is None


def test_a_single_roi_size_means_every_axis() -> None:
    assert MembraneInferer(roi_size=64).roi_size == (64, 64)
    assert MembraneInferer(roi_size=32, spatial_dims=3).roi_size == (32, 32, 32)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_channels_last_network_gives_the_same_probability(spatial_dims: int) -> None:
    torch.manual_seed(0)
    network = FusionNet(spatial_dims=spatial_dims, features=(4, 8, 8, 8, 8)).eval()
    x = torch.rand(1, 1, *([32] * spatial_dims))
    with torch.no_grad():
        expected = network(x)
        fast = prepare_network(network, "cpu", channels_last=True)
        layout = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
        weight = next(p for p in fast.parameters() if p.ndim == spatial_dims + 2)
        assert weight.is_contiguous(memory_format=layout)
        torch.testing.assert_close(fast(x), expected, atol=1e-5, rtol=1e-5)


def test_batch_norm_folding_keeps_the_output() -> None:
    torch.manual_seed(0)
    net = FusionNet(features=(4, 8, 8, 8, 8))
    net.train()
    net(torch.rand(4, 1, 32, 32))  # give the batch norms non-trivial running statistics
    net.eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        expected = net(x)
        folded = fold_batch_norm(net)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        torch.testing.assert_close(folded(x), expected, atol=1e-4, rtol=1e-4)


def test_batch_norm_folding_leaves_instance_norms() -> None:
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=2, features=(4, 4, 8, 8, 8, 4)).eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        expected = net(x)
        folded = fold_batch_norm(net)
        assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in folded.modules())
        torch.testing.assert_close(folded(x), expected)


@pytest.mark.parametrize("config", ["inference.json", "train.json"])  # evaluate.json takes train.json's
def test_default_window_is_the_whole_section_up_to_1024(config: str) -> None:
    """A 512x512 section goes through the network as one window (overlapping 256x256 windows cost 2.25x the FLOPs
    and scored the same in cross-validation); a larger section is cut into windows of at most 1024."""
    settings = json.loads((ROOT / "configs" / config).read_text())
    inferer = MembraneInferer(roi_size=settings["roi_size"], overlap=settings["overlap"])
    assert inferer.window_size((512, 512)) == (512, 512)
    assert inferer.window_size((500, 700)) == (512, 704)
    assert inferer.window_size((3000, 3000)) == (1024, 1024)
    net = FusionNet(features=(4, 8, 8, 8, 8)).eval()
    calls = []
    net.register_forward_hook(lambda module, args, output: calls.append(tuple(args[0].shape)))
    with torch.no_grad():
        inferer(torch.rand(1, 1, 2, 512, 512), net)
    assert calls == [(1, 1, 512, 512)] * 2
