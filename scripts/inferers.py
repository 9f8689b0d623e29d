# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Sliding-window membrane inference with optional 8-fold flip/rotation test-time augmentation."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SliceInferer, SlidingWindowInferer
from torch import nn

from .errors import BundleInputError, as_bool
from .planes import plane_average, plane_zoom
from .progress import Progress
from .scale import meta_zoom, needs_resampling, resample, resample_sections, zoomed_shape
from .settings import DIVISOR, check_device, check_window_count, choice, fraction, integer, spatial_size, window_count

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "auto": None}
BLEND_MODES = ("gaussian", "constant")  # MONAI's window blending modes


def check_precision(precision: str) -> str:
    """``precision`` if it is a known name, else a clear error."""
    if precision not in PRECISIONS:
        raise BundleInputError(
            "precision",
            f"unknown value {precision!r}",
            f"use one of {', '.join(PRECISIONS)} (auto = bf16 where the hardware computes it natively)",
        )
    return precision


def roi_tuple(roi_size: Sequence[int] | int, spatial_dims: int) -> tuple[int, ...]:
    """``roi_size`` as a tuple of ints; a single number means the same size on every axis."""
    if isinstance(roi_size, (int, float)) and not isinstance(roi_size, bool):
        return (int(roi_size),) * spatial_dims
    try:
        return tuple(int(r) for r in roi_size)
    except (TypeError, ValueError):
        raise BundleInputError(
            "roi_size",
            f"must be a list of {spatial_dims} sizes, got {roi_size!r}",
            f"pass e.g. --roi_size {[256] * spatial_dims}",
        ) from None


def fold_batch_norm(network: nn.Module) -> nn.Module:
    """Fold every batch norm of a MONAI ``Convolution`` block into its convolution, for inference only; other norms
    (e.g. BasicUNet's instance norm, which has no running statistics) stay.

    The network is put in eval mode and changed in place: each ``conv -> BatchNorm`` becomes one convolution whose
    weights and bias absorb the norm's running statistics and affine parameters (``fuse_conv_bn_eval``), so the
    output is the same up to float rounding and one pass over the feature map less. TorchScript modules are returned
    unchanged (their blocks are no longer ``Convolution`` instances).
    """
    from monai.networks.blocks import Convolution
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    network.eval()
    for module in network.modules():
        norm = getattr(getattr(module, "adn", None), "N", None)
        if isinstance(module, Convolution) and isinstance(norm, nn.modules.batchnorm._BatchNorm):
            module.conv = fuse_conv_bn_eval(module.conv, norm, transpose=module.is_transposed)
            module.adn.N = nn.Identity()
    return network


def prepare_network(
    network: nn.Module, device: torch.device | str, channels_last: bool = True, fold_bn: bool = False
) -> nn.Module:
    """``network`` on ``device``; with ``channels_last`` its weights use the channels-last memory format
    (``channels_last_3d`` for 3D networks), which oneDNN convolutions run 1.2x (training) to 1.5x (inference) faster
    on CPU (``python -m bundle benchmark``) with the same results up to float rounding. ``fold_bn`` (inference only)
    folds the batch norms into the convolutions (:func:`fold_batch_norm`)."""
    network = network.to(check_device(device))
    if as_bool(fold_bn, "fold_batch_norm"):
        network = fold_batch_norm(network)
    if not as_bool(channels_last, "channels_last"):
        return network
    dims = next((p.ndim for p in network.parameters() if p.ndim in (4, 5)), 4)
    return network.to(memory_format=torch.channels_last if dims == 4 else torch.channels_last_3d)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 convolutions natively: a CUDA GPU with bf16 support, or a CPU with
    AVX-512-bf16/AMX. Elsewhere (e.g. AVX2-only CPUs) bf16 is emulated and many times slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision name on ``device`` (None = fp32, no autocast); "auto" is bf16 where
    :func:`native_bf16` holds and fp32 elsewhere."""
    if check_precision(precision) == "auto":
        return torch.bfloat16 if native_bf16(device) else None
    return PRECISIONS[precision]


def run_network(network: nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``network(x)`` under ``torch.autocast`` on ``x``'s device when ``dtype`` is set; the result is float32."""
    if dtype is None:
        return network(x)
    with torch.autocast(device_type=x.device.type, dtype=dtype):
        return network(x).float()


class AutocastInferer(Inferer):
    """Whole-input inference under autocast, for training steps (MONAI's own ``amp`` flag is CUDA-only).

    ``precision="bf16"`` trains about 4x faster than fp32 on AVX-512-bf16 CPUs (and many times slower on CPUs
    that only emulate bf16, hence "auto"); weights, optimizer state, batch norm and the loss stay float32.
    Shape: ``(B, C, *S) -> (B, out_channels, *S)`` logits.
    """

    def __init__(self, precision: str = "fp32") -> None:
        super().__init__()
        self.precision = check_precision(precision)

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args, **kwargs) -> torch.Tensor:  # type: ignore[override]
        return run_network(network, inputs, autocast_dtype(self.precision, inputs.device))


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th (0..7) flip/rotation of the last two axes: rotate by ``k % 4`` quarter turns, then flip if
    ``k >= 4``."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def undo_dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`dihedral`."""
    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, -(k % 4), dims=(-2, -1))


def membrane_probability(
    x: torch.Tensor, network: nn.Module, tta: bool = False, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Sigmoid of the network's logits for a batch of windows ``(B, C, *S)``, as float32.

    With ``tta`` it averages the probabilities over the 8 flips/rotations of the last two axes
    (exactly 8 network passes, no other work beyond the flips). ``dtype`` selects autocast (None = fp32).
    """
    if not tta:
        return torch.sigmoid(run_network(network, x, dtype).float())
    total = torch.zeros((), device=x.device)
    for k in range(8):
        total = total + undo_dihedral(torch.sigmoid(run_network(network, dihedral(x, k), dtype).float()), k)
    return total / 8


# sw_batch_size "auto": windows per network call on each device type. On a 2-core AVX-512 CPU one 256x256 window per
# call ran the shipped width 1.16x faster than four in fp32 (its activations stay in cache); on an H200 the shipped
# width is launch-bound, so fewer, larger calls win (python -m bundle benchmark, docs/README.md).
WINDOWS_PER_CALL = {"cpu": 1, "cuda": 4}
# Three planes: sections smaller than this many pixels go through the network several to a call (a 50-section
# block's xz/yz sections are 64x256 windows; one at a time, the calls' overhead dominated).
PIXELS_PER_CALL = 256 * 256


class MembraneInferer(Inferer):
    """Sliding-window inference that returns membrane probability in [0, 1].

    A 2D network run on a stack ``(B, C, Z, Y, X)`` goes section by section (MONAI ``SliceInferer``); a 2D
    network on ``(B, C, Y, X)`` or a 3D network on ``(B, C, Z, Y, X)`` uses ``SlidingWindowInferer``.
    Inputs smaller than ``roi_size`` are padded and cropped back by MONAI, so any image size works.

    Args:
        roi_size: window size, each a multiple of 16 (FusionNet's four poolings).
        sw_batch_size: windows per network call, or "auto": :data:`WINDOWS_PER_CALL` for the input's device (one on
            a CPU, where one window's activations stay in cache; four on a GPU, where each call costs launches).
        overlap: fraction of overlap between windows, in [0, 1); one that would run the network more than
            ``scripts.settings.MAX_PASSES_PER_PIXEL`` times per pixel is refused.
        mode: window blending (the ``blend_mode`` key), "gaussian" or "constant".
        tta: average over the 8 flips/rotations of each window (8x the cost).
        spatial_dims: the network's spatial dims (2 or 3).
        padding_mode: how windows are padded at the image border.
        precision: "fp32", "bf16"/"fp16" autocast, or "auto" (bf16 where the hardware computes it natively).
        section_sink: for a 2D network on a stack, called as ``section_sink(start, probability)`` each time the
            sections ``start...`` are done (``probability`` ``(B, out_channels, z, Y, X)``), while the network goes
            on with the next ones; e.g. ``SaveEMResultsd.take_sections``, which starts their cells meanwhile.
        progress: reports the work on each input as it is done: the sections of a stack (2D network), else the
            windows; ``scripts.progress.InferenceProgress`` sets it to draw inference.json's bar.
        zoom: the zoom of inputs that carry none (see :meth:`__call__`), e.g. evaluate.json's from ``--pixel_size``;
            None runs the network on the input's own grid.
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        sw_batch_size: int | str = "auto",
        overlap: float = 0.25,
        mode: str = "gaussian",
        tta: bool = False,
        spatial_dims: int = 2,
        padding_mode: str = "reflect",
        precision: str = "fp32",
        section_sink: Callable[[int, torch.Tensor], None] | None = None,
        progress: Progress | None = None,
        zoom: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.precision = check_precision(precision)
        self.section_sink = section_sink
        self.zoom = None if zoom is None else tuple(float(z) for z in zoom)
        self.progress = progress
        roi = tuple(spatial_size(list(roi_tuple(roi_size, spatial_dims)), "roi_size", spatial_dims))
        overlap = fraction(overlap, "overlap", 0.25)
        check_window_count(roi, overlap)
        mode = choice(mode, "blend_mode", BLEND_MODES)
        if sw_batch_size != "auto":
            sw_batch_size = integer(sw_batch_size, "sw_batch_size", 1, "auto")
        self.roi_size = roi
        self.tta = as_bool(tta, "tta")
        self.spatial_dims = spatial_dims
        self.window_kwargs = dict(
            sw_batch_size=sw_batch_size, overlap=float(overlap), mode=mode, padding_mode=padding_mode
        )

    def window_size(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """``roi_size``, shrunk to the image (rounded up to a multiple of 16) where the image is smaller.

        Reflect padding needs the pad to be smaller than the image, so a 64x64 image gets 64x64 windows,
        not 256x256 ones; larger images use ``roi_size`` unchanged.
        """
        return tuple(min(r, -(-int(s) // DIVISOR) * DIVISOR) for r, s in zip(self.roi_size, spatial_shape))

    def window_settings(
        self, spatial_shape: Sequence[int], device: torch.device | str = "cpu"
    ) -> tuple[tuple[int, ...], dict]:
        """The window size (:meth:`window_size`) and the other sliding-window arguments (``sw_batch_size``,
        ``overlap``, ``mode``, ``padding_mode``) used for an image of ``spatial_shape`` on ``device``; "replicate"
        padding replaces "reflect" where a window is at least twice the image along some axis."""
        roi = self.window_size(spatial_shape)
        kwargs = dict(self.window_kwargs)
        if kwargs["sw_batch_size"] == "auto":
            kwargs["sw_batch_size"] = WINDOWS_PER_CALL.get(torch.device(device).type, 1)
        if any(r - int(s) >= int(s) for r, s in zip(roi, spatial_shape)):
            kwargs["padding_mode"] = "replicate"  # reflection cannot pad an axis by more than its own length
        return roi, kwargs

    def predictor(
        self, network: nn.Module, device: torch.device, tta: bool | None = None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``windows (B, C, *roi) -> probability (B, out_channels, *roi)`` on ``device``: the network under this
        inferer's precision, with TTA if set (``tta``, default this inferer's; see :func:`membrane_probability`)."""
        dtype = autocast_dtype(self.precision, device)
        tta = self.tta if tta is None else tta

        def predict(x: torch.Tensor) -> torch.Tensor:
            return membrane_probability(x, network, tta, dtype)

        return predict

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: nn.Module, zoom: Sequence[float] | None = None
    ) -> torch.Tensor:
        """Membrane probability with the shape of ``inputs`` (``(B, 1, *S)`` for one output channel).

        ``zoom`` (model pixels per input pixel, one per spatial axis of the network; default the ``"zoom"`` entry of
        a ``MetaTensor`` input's meta, which ``scripts.transforms.ChooseZoomd`` sets, else this inferer's ``zoom``)
        resamples the input to the model's scale before the network and the probability back to the input's grid
        after it (``scripts.scale``); a zoom within ``scripts.scale.ZOOM_TOLERANCE`` of 1 runs on the input's own grid.
        """
        volume_zoom = meta_zoom(inputs, "volume_zoom")
        zoom = meta_zoom(inputs) if zoom is None else tuple(float(z) for z in zoom)
        zoom = self.zoom if zoom is None else zoom
        if isinstance(inputs, MetaTensor):
            inputs = inputs.as_tensor()
        if not needs_resampling(zoom):
            zoom = None
        predictor = self.predictor(network, inputs.device)
        if self.spatial_dims == 2 and inputs.ndim == 5 and volume_zoom is not None:
            return self._three_planes(inputs, predictor, volume_zoom)
        if self.spatial_dims == 2 and inputs.ndim == 5:
            planes = inputs.shape[-2:] if zoom is None else zoomed_shape(inputs.shape[-2:], zoom)
            roi, kwargs = self.window_settings(planes, inputs.device)
            if self.progress is not None:
                self.progress.start(inputs.shape[2], "section")
            return self._by_sections(inputs, predictor, SliceInferer(spatial_dim=0, roi_size=roi, **kwargs), zoom)
        spatial = inputs.shape[-self.spatial_dims :]
        model_grid = inputs if zoom is None else resample(inputs, zoomed_shape(spatial, zoom))
        shape = model_grid.shape[-self.spatial_dims :]
        roi, kwargs = self.window_settings(shape, inputs.device)
        if self.progress is not None:
            self.progress.start(inputs.shape[0] * window_count(shape, roi, kwargs["overlap"]), "window")
            predictor = self.progress.counting(predictor)
        prob = SlidingWindowInferer(roi_size=roi, **kwargs)(model_grid, predictor)
        return prob if zoom is None else resample(prob, spatial).clamp_(0.0, 1.0)

    def _three_planes(
        self, inputs: torch.Tensor, predictor: Callable[[torch.Tensor], torch.Tensor], volume_zoom: Sequence[float]
    ) -> torch.Tensor:
        """The mean of the 2D network's maps along the xy, xz and yz sections of ``inputs`` ``(B, C, Z, Y, X)``
        (``scripts.planes``), each plane at its own axes' zoom from ``volume_zoom`` ``(z, y, x)``. No plane alone is
        the result, so nothing goes to the section sink."""
        if self.progress is not None:
            self.progress.start(sum(inputs.shape[2:]), "section")

        def run_plane(sections: torch.Tensor, plane: str) -> torch.Tensor:
            return self.plane_probability(sections, predictor, volume_zoom, plane)

        return plane_average(inputs, ("xy", "xz", "yz"), run_plane)

    def plane_probability(
        self,
        sections: torch.Tensor,
        predictor: Callable[[torch.Tensor], torch.Tensor],
        volume_zoom: Sequence[float],
        plane: str,
    ) -> torch.Tensor:
        """The 2D network's map of ``sections`` ``(B, C, N, H, W)``: sections of ``plane`` (xy, xz or yz) of a
        volume whose ``(z, y, x)`` zoom is ``volume_zoom``, run at that plane's zoom (``scripts.planes``); the
        same shape. Whole-volume and streamed three-plane inference both run each plane here."""
        zoom = plane_zoom(volume_zoom, plane)
        zoom = zoom if needs_resampling(zoom) else None
        grid = sections.shape[-2:] if zoom is None else zoomed_shape(sections.shape[-2:], zoom)
        roi, kwargs = self.window_settings(grid, sections.device)
        # the xz/yz sections of a thin block are small: batch them up to one CPU window's worth of pixels
        kwargs["sw_batch_size"] = max(kwargs["sw_batch_size"], PIXELS_PER_CALL // math.prod(roi))
        inferer = SliceInferer(spatial_dim=0, roi_size=roi, **kwargs)
        return self._by_sections(sections, predictor, inferer, zoom, sink=False)

    def _by_sections(
        self,
        inputs: torch.Tensor,
        predictor: Callable[[torch.Tensor], torch.Tensor],
        inferer: SliceInferer,
        zoom: tuple[float, ...] | None = None,
        sink: bool = True,
    ) -> torch.Tensor:
        """``inferer(inputs, predictor)`` on ``(B, C, Z, Y, X)``, run on ``sw_batch_size`` sections at a time, each
        chunk passed to :attr:`section_sink` when done. Every section has the same windows and MONAI batches them
        in section order, so the chunks hold exactly the window batches of one call on the whole stack: the
        result is the same, bit for bit. With ``zoom`` each chunk's sections are resampled to the model's scale
        and their probability back. ``sink`` False keeps the chunks from the sink (one plane of three)."""
        step = inferer.sw_batch_size
        chunks = []
        for start in range(0, inputs.shape[2], step):
            chunk = inputs[:, :, start : start + step]
            if zoom is None:
                chunks.append(inferer(chunk, predictor))
            else:
                prob = inferer(resample_sections(chunk, zoomed_shape(chunk.shape[-2:], zoom)), predictor)
                chunks.append(resample_sections(prob, chunk.shape[-2:]).clamp_(0.0, 1.0))
            if sink and self.section_sink is not None:
                self.section_sink(start, chunks[-1])
            if self.progress is not None:
                self.progress.update(chunks[-1].shape[2])
        return torch.cat(chunks, dim=2)
