# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import pytest
import torch
from scripts.fusionnet import FusionNet

TINY = (4, 8, 16, 32, 64)


@pytest.mark.parametrize("spatial_dims,shape", [(2, (2, 1, 64, 48)), (3, (1, 1, 32, 32, 16))])
def test_output_shape_matches_input(spatial_dims: int, shape: tuple[int, ...]) -> None:
    net = FusionNet(spatial_dims=spatial_dims, features=TINY, out_channels=3)
    assert net(torch.randn(shape)).shape == (shape[0], 3, *shape[2:])


@pytest.mark.parametrize("kernel", [2, 3])
def test_transposed_conv_kernel_sizes(kernel: int) -> None:
    net = FusionNet(features=TINY, upsample_kernel_size=kernel)
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    assert net.upsamples[0].conv.kernel_size == (kernel, kernel)


def test_every_parameter_gets_a_gradient() -> None:
    net = FusionNet(features=TINY, dropout=0.1)
    net(torch.randn(2, 1, 32, 32)).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert all(p.grad.abs().sum() > 0 for n, p in net.named_parameters() if "conv.weight" in n)


def test_full_width_parameter_count() -> None:
    """Paper width (64..1024), 3 convs per residual block, 2x2 transposed convs: 75.05 M parameters."""
    net = FusionNet()
    assert net.features == (64, 128, 256, 512, 1024)
    assert sum(p.numel() for p in net.parameters()) == 75_049_537


def test_skips_are_summed_not_concatenated() -> None:
    net = FusionNet(features=TINY)
    # A concatenating decoder would take 2x the width at its first conv.
    assert [d.conv_in.conv.in_channels for d in net.decoders] == list(TINY[-2::-1])
    assert [len(e.residual.convs) for e in net.encoders] == [3, 3, 3, 3]


def test_residual_block_adds_its_input() -> None:
    net = FusionNet(features=TINY).eval()
    block = net.encoders[0].residual
    for p in block.parameters():
        torch.nn.init.zeros_(p)
    x = torch.randn(1, 4, 16, 16)
    torch.testing.assert_close(block(x), x)  # zero convs leave only the identity shortcut


def test_conv_norm_activation_order() -> None:
    conv = FusionNet(features=TINY).encoders[0].conv_in
    assert [type(m).__name__ for m in conv.children()][:1] == ["Conv2d"]
    assert [type(m).__name__ for m in conv.adn.children()] == ["BatchNorm2d", "ReLU"]


@pytest.mark.parametrize("features", [[16, 32, 64, 128], [16, 32, 64, 128, 256, 512], [16, 0, 64, 128, 256]])
def test_wrong_width_list_is_rejected(features: list[int]) -> None:
    with pytest.raises(ValueError, match="must list 5 positive widths"):
        FusionNet(features=features)


def test_size_not_divisible_by_16_is_rejected() -> None:
    net = FusionNet(features=TINY)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(1, 1, 40, 32))


def test_wrong_number_of_dimensions_is_rejected() -> None:
    with pytest.raises(ValueError, match="expects input of shape"):
        FusionNet(features=TINY)(torch.randn(1, 1, 16, 16, 16))
