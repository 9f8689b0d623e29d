# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""FusionNet: a deep fully residual encoder-decoder for EM segmentation (Quan, Hildebrand, Jeong, 2016).

The layout follows the paper (arXiv 1612.05360, Fig. 1). Each level is conv -> residual block -> conv,
where the residual block is ``res_convs`` convolutions whose output is summed with the block's input.
Encoder levels are joined by 2x2 max pooling; the decoder upsamples with a stride-2 transposed
convolution and **adds** the encoder map of the same level (summation skip). A final 1x1 convolution
gives the output. Every convolution is followed by normalization and activation ("NDA" order).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from torch import nn

from .errors import BundleInputError

__all__ = ["FusionNet", "ResidualBlock", "FusionLevel"]

PAPER_FEATURES = (64, 128, 256, 512, 1024)


def _conv3(
    spatial_dims: int,
    cin: int,
    cout: int,
    act: str | tuple,
    norm: str | tuple,
    dropout: float | tuple | None,
    bias: bool,
) -> Convolution:
    """Same-size 3x3(x3) convolution -> normalization -> dropout -> activation."""
    return Convolution(spatial_dims, cin, cout, act=act, norm=norm, dropout=dropout, bias=bias)


class ResidualBlock(nn.Module):
    """``res_convs`` same-size convolutions whose output is summed with the input.

    Shape: ``(B, C, *S) -> (B, C, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        res_convs: int,
        act: str | tuple,
        norm: str | tuple,
        dropout: float | tuple | None,
        bias: bool,
    ) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            *[_conv3(spatial_dims, channels, channels, act, norm, dropout, bias) for _ in range(res_convs)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.convs(x)


class FusionLevel(nn.Sequential):
    """One FusionNet level: conv3 -> residual block -> conv3.

    Shape: ``(B, in_channels, *S) -> (B, out_channels, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        res_convs: int,
        act: str | tuple,
        norm: str | tuple,
        dropout: float | tuple | None,
        bias: bool,
    ) -> None:
        super().__init__()
        self.add_module("conv_in", _conv3(spatial_dims, in_channels, out_channels, act, norm, dropout, bias))
        self.add_module("residual", ResidualBlock(spatial_dims, out_channels, res_convs, act, norm, dropout, bias))
        self.add_module("conv_out", _conv3(spatial_dims, out_channels, out_channels, act, norm, dropout, bias))


class FusionNet(nn.Module):
    """FusionNet for 2D sections or 3D volumes.

    Args:
        spatial_dims: 2 for sections (``(B, C, H, W)``), 3 for volumes (``(B, C, D, H, W)``).
        in_channels: input channels (1 for grayscale EM).
        out_channels: output channels (1 for a membrane map).
        features: five widths: four encoder levels and the bridge. The paper uses (64, 128, 256, 512, 1024).
        res_convs: convolutions per residual block (3 in the paper's figure).
        act: activation after every convolution, a MONAI ``Act`` name or ``(name, kwargs)``.
        norm: normalization after every convolution, a MONAI ``Norm`` name or ``(name, kwargs)``.
        dropout: dropout rate after every convolution (0 disables it).
        upsample_kernel_size: kernel of the stride-2 transposed convolutions (2 or 3).
        bias: whether convolutions have a bias.

    The forward pass returns logits of shape ``(B, out_channels, *S)`` for an input ``(B, in_channels, *S)``;
    apply a sigmoid for membrane probability. Every spatial size must be divisible by 16 (four poolings):
    the sliding-window inferer guarantees this by feeding windows of a divisible ``roi_size``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = PAPER_FEATURES,
        res_convs: int = 3,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = ("batch", {}),
        dropout: float = 0.0,
        upsample_kernel_size: int = 2,
        bias: bool = True,
    ) -> None:
        super().__init__()
        try:
            features = tuple(int(f) for f in features)
        except (TypeError, ValueError):
            raise BundleInputError(
                "features",
                f"must be a list of 5 integers, got {features!r}",
                'pass e.g. --features "[16, 32, 64, 128, 256]"',
            ) from None
        if spatial_dims not in (2, 3):
            raise BundleInputError(
                "spatial_dims", f"must be 2 or 3, got {spatial_dims}", "pass 2 (sections) or 3 (volumes)"
            )
        if len(features) != len(PAPER_FEATURES) or min(features) < 1:
            raise BundleInputError(
                "features",
                f"must list 5 positive widths (4 encoder levels and the bridge), got {list(features)}",
                f'pass e.g. --features "{list(PAPER_FEATURES)}" (paper) or "[16, 32, 64, 128, 256]" (shipped model)',
            )
        if res_convs < 1:
            raise BundleInputError("res_convs", f"must be at least 1, got {res_convs}", "pass e.g. --res_convs 3")
        if upsample_kernel_size not in (2, 3):
            raise BundleInputError(
                "upsample_kernel_size", f"must be 2 or 3, got {upsample_kernel_size}", "pass 2 (paper) or 3"
            )
        self.spatial_dims = spatial_dims
        self.features = features
        # plain attributes so that the forward's checks compile under torch.jit.script (TorchScript export)
        self._size_divisor = 2 ** (len(features) - 1)
        self._shape_text = ", ".join("S" * spatial_dims)
        drop = dropout if dropout else None

        def level(cin: int, cout: int) -> FusionLevel:
            return FusionLevel(spatial_dims, cin, cout, res_convs, act, norm, drop, bias)

        self.encoders = nn.ModuleList()
        cin = in_channels
        for width in features[:-1]:
            self.encoders.append(level(cin, width))
            cin = width
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
        self.bridge = level(features[-2], features[-1])
        self.upsamples = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for deeper, width in zip(features[:0:-1], features[-2::-1]):
            self.upsamples.append(
                Convolution(
                    spatial_dims,
                    deeper,
                    width,
                    strides=2,
                    kernel_size=upsample_kernel_size,
                    act=act,
                    norm=norm,
                    dropout=drop,
                    bias=bias,
                    is_transposed=True,
                    padding=upsample_kernel_size - 2,
                    output_padding=upsample_kernel_size - 2,
                )
            )
            self.decoders.append(level(width, width))
        self.head = Convolution(spatial_dims, features[0], out_channels, kernel_size=1, conv_only=True, bias=True)

    @property
    def size_divisor(self) -> int:
        """Every spatial size of the input must be a multiple of this."""
        return self._size_divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, *S)`` to logits ``(B, out_channels, *S)``. Scriptable (``torch.jit.script``)."""
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"FusionNet({self.spatial_dims}D) expects input of shape (B, C, {self._shape_text}), "
                f"got {list(x.shape)}."
            )
        for size in x.shape[2:]:
            if size % self._size_divisor != 0:
                raise ValueError(
                    f"FusionNet: every spatial size must be divisible by {self._size_divisor}, "
                    f"got {list(x.shape[2:])}; use a sliding-window inferer with a divisible roi_size "
                    "(it pads smaller inputs)."
                )
        skips: list[torch.Tensor] = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bridge(x)
        level = len(skips)
        for upsample, decoder in zip(self.upsamples, self.decoders):
            level -= 1
            x = decoder(upsample(x) + skips[level])
        return self.head(x)
