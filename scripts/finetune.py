# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Fine-tuning a trained model on a few labelled sections (``configs/finetune.json`` over ``configs/train.json``).

finetune.json loads ``ckpt_path`` (the shipped ``models/model.pt`` by default) into ``network_def`` before training,
keeps inference.json's width, and sets a schedule for a few sections: a budget in optimiser ``steps`` (turned into
epochs by :func:`epochs_for_steps`, so that 2 or 8 sections get the same number of updates), a lower learning rate,
no validation (a user with 2 labelled sections has none to spare) and, optionally, frozen encoder levels
(:func:`trainable_parameters`). The last epoch's weights are ``runs/finetune/models/model.pt``, never the shipped
``models/model.pt``.

The sections are learned at their own pixels, and train.json records their pixel size beside the weights
(``scripts.scale.record_training_pixel_size``: the files', ``--pixel_size``, else the base model's). Resampling them
to the base model's pixel size first scored lower on held-out sections (docs/experiments.md, Fine-tuning).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence, Sized

import numpy as np
from torch import nn

from .data import split_labelled
from .errors import BundleInputError
from .settings import DIVISOR, TRAINING_PATCH_SIDE, integer, real, spatial_dimensions


def epochs_for_steps(steps: object, sections: Sized, batch_size: object) -> int:
    """The number of epochs that gives at least ``steps`` optimiser steps over ``sections`` training items.

    Each epoch of train.json's loader takes ``ceil(len(sections) / batch_size)`` steps (one step takes
    ``batch_size`` sections, ``samples_per_section`` patches of each).
    """
    steps = integer(steps, "steps", 1, 200)
    batch = integer(batch_size, "batch_size", 1, 2)
    if len(sections) == 0:
        raise BundleInputError(
            "dataset_dir",
            "has no training sections",
            "give labelled sections (images/ and labels/ with the same names)",
        )
    per_epoch = math.ceil(len(sections) / batch)
    return max(1, math.ceil(steps / per_epoch))


def _unwrap(network: nn.Module) -> nn.Module:
    return network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network


def trainable_parameters(network: nn.Module, freeze_levels: object = 0) -> Iterator[nn.Parameter]:
    """The parameters the optimiser updates: all but those of FusionNet's first ``freeze_levels`` encoder levels
    (0 = none, up to 4), which get ``requires_grad`` False. The frozen levels' batch norms still update their
    running statistics in training mode, so they adapt to the new images' contrast."""
    levels = integer(freeze_levels, "freeze_levels", 0, 2)
    model = _unwrap(network)
    if levels:
        encoders = getattr(model, "encoders", None)
        if encoders is None:
            raise BundleInputError(
                "freeze_levels", f"needs a FusionNet, got {type(model).__name__}", "pass --freeze_levels 0"
            )
        if levels > len(encoders):
            raise BundleInputError(
                "freeze_levels",
                f"must be at most {len(encoders)} (the encoder levels), got {freeze_levels!r}",
                f"pass --freeze_levels between 0 and {len(encoders)}",
            )
        for level in encoders[:levels]:
            level.requires_grad_(False)
    return (p for p in network.parameters() if p.requires_grad)


def fitting_patch_size(sections: Sequence[dict], spatial_dims: object = 2) -> list[int]:
    """The training patch for a fine-tuning: train.json's 256 a side (train_3d.json's 64 for volumes), shrunk to the
    largest multiple of 16 that fits the smallest labelled section (``image`` ``(C, *spatial)``) on each axis, y and x
    alike (square in y and x, as the 90-degree turns of the augmentation need), so a
    few small labelled crops (250x250, say) train without a ``--patch_size``. Sections smaller than 16 keep the
    default and get CheckSpatialSized's error."""
    dims = spatial_dimensions(spatial_dims)
    largest = [TRAINING_PATCH_SIDE[dims]] * dims
    if not sections:
        return largest
    smallest = [min(int(np.shape(item["image"])[1 + axis]) for item in sections) for axis in range(dims)]
    smallest[-2:] = [min(smallest[-2:])] * 2  # y = x: the augmentation's 90-degree turns would swap them
    fitted = [min(size, side // DIVISOR * DIVISOR) for size, side in zip(largest, smallest)]
    return fitted if all(fitted) else largest


def hold_out_tiles(sections: Sequence[dict], fraction: object = 0.25) -> dict[str, list[dict]]:
    """Split every labelled item into a training part and a held-out tile: the last ``fraction`` of its width (its
    last axis) is held out, the rest trains. Items are ``{"image": (C, [Z,] Y, X), "label": (1, [Z,] Y, X),
    "name": ...}``; the parts keep that layout and get ``[x0:x1]`` in their names.

    Tiles rather than whole sections: a user with one or two labelled sections has none to spare, and a tile of each
    section lets every section's contrast and structures count in the check. ``fraction`` 0 holds out nothing.
    """
    share = real(fraction, "held_out", 0.25, positive=False)
    if not 0.0 <= share <= 0.5:
        raise BundleInputError("held_out", f"must be in [0, 0.5], got {fraction!r}", "pass e.g. --held_out 0.25")
    split: dict[str, list[dict]] = {"training": [], "validation": []}
    for item in sections:
        width = int(np.shape(item["image"])[-1])
        tile = round(share * width)
        if tile == 0:
            split["training"].append(item)
            continue
        if width - tile < DIVISOR or tile < DIVISOR:
            raise BundleInputError(
                item.get("name", "a labelled section"),
                f"is {width} pixels wide, too narrow to hold out {share:g} of it and still train on the rest",
                "label larger sections, or pass --held_out 0 (no check: the fine-tuned model is kept unchecked)",
            )
        cut = width - tile
        for subset, part in (("training", slice(0, cut)), ("validation", slice(cut, width))):
            split[subset].append(
                {
                    **item,
                    "image": item["image"][..., part],
                    "label": item["label"][..., part],
                    "name": f"{item.get('name', '')}[x {part.start}:{part.stop}]",
                }
            )
    return split


def finetuning_split(
    dataset_dir: str,
    held_out: object = 0.25,
    target: str = "membrane",
    spatial_dims: int = 2,
    context_sections: int = 0,
    label_convention: str = "isbi",
) -> dict[str, list[dict]]:
    """finetune.json's ``sections``: the labelled items of ``dataset_dir`` (``scripts.data.split_labelled``) with a
    held-out part for the check that keeps the better model (:class:`KeepBetterModel`): the datalist's own
    "validation" sections where it names them, else a tile of every section (:func:`hold_out_tiles`)."""
    split = split_labelled(dataset_dir, 0.0, target, spatial_dims, -1, context_sections, label_convention)
    if split["validation"]:
        return split
    return hold_out_tiles(split["training"], held_out)
