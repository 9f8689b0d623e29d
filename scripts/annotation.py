# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Interactive annotation with MONAI Label: label masks out of inference, label masks into training.

MONAI Label's ``monaibundle`` sample app serves this bundle through its ``BundleInferTask`` (which reads
``configs/inference.json``) and ``BundleTrainTask`` (which runs ``configs/train.json``). Its label masks follow
``metadata.json``'s output channel ("membrane", or the objects of ``target`` "foreground"): **nonzero = membrane,
0 = everything else**. That is what ``/infer`` returns and what 3D Slicer saves, and it differs from the ISBI
label files that ``--dataset_dir`` reads (0 = membrane, 255 = cell).

- ``inference.json``'s ``post_transforms`` (:class:`ToLabelMaskd`) turns the membrane probability into such a
  mask, in the axis order MONAI Label's writer expects. MONAI Label's ``BundleInferTask`` looks up
  ``postprocessing`` and then ``post_transforms`` and keeps the last one found (monailabel 0.8.5, checked by
  tests/test_monailabel.py), so it runs this instead of ``postprocessing``, which writes TIFF/CSV/PNG files. The
  bundle's own workflows never read ``post_transforms``. ``preprocessing`` and ``inferer`` serve both unchanged.
  What reaches ``post_transforms`` is the inferer's output, a probability: ``network_def`` (and a TorchScript export)
  returns logits, as ``metadata.json``'s ``network_data_format`` says, and ``scripts.inferers.MembraneInferer``
  applies the sigmoid. MONAI Label takes only the output's key ("pred") and ``channel_def`` from the metadata.
- ``train.json``'s datasets are :class:`AnnotatedDataset`: MONAI Label overrides ``train#dataset#data`` and
  ``validate#dataset#data`` with ``[{"image": path, "label": path}, ...]`` from its datastore; those pairs are read,
  their masks converted to the labels of ``target`` and split into sections. Items already in memory (what
  ``scripts.data.split_labelled`` makes from ``--dataset_dir``) pass through unchanged.
- ``/train`` fine-tunes the served model: ``BundleTrainTask``'s ``pretrained`` option (on by default) puts a MONAI
  ``CheckpointLoader`` of ``<bundle_root>/models/model.pt`` at the front of ``train#handlers``, which loads it into
  ``network`` when the trainer starts (tests/test_monailabel.py checks the first step's weights, and the first loss
  against the shipped model's). Outside MONAI Label, ``configs/finetune.json`` does the same for train.json.
- ``train.json`` writes ``model.pt`` / ``model_final.pt`` to ``<bundle_root>/models`` (``model_dir``), as every
  model-zoo bundle does, so they replace the ones the MONAI Label server's inference task loads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import Dataset
from monai.transforms import MapTransform

from .data import check_label_convention, with_neighbours
from .errors import BundleInputError
from .io import read_stack
from .transforms import TARGETS


class ToLabelMaskd(MapTransform):
    """Membrane probability ``(1, Z, Y, X)`` (or ``(1, Y, X)``) -> a uint8 label mask for MONAI Label.

    The mask is 1 where the probability is at least ``threshold``, else 0. MONAI Label's writer transposes
    arrays before handing them to ITK (MONAI's ``(X, Y[, Z])`` order), so a single section becomes ``(X, Y)`` and a
    stack ``(X, Y, Z)``; the file it writes then has the input image's shape and orientation.

    Args:
        keys: the probability key (usually "pred").
        threshold: probability at or above which a pixel is membrane (or object).
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(self, keys: KeysCollection, threshold: float = 0.5, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0.0 < float(threshold) < 1.0:
            raise BundleInputError("threshold", f"must be between 0 and 1, got {threshold!r}", "use e.g. 0.5")
        self.threshold = float(threshold)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            prob = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
            mask = (prob[0] >= self.threshold).astype(np.uint8)  # drop the channel: (Z, Y, X) or (Y, X)
            if mask.ndim == 3 and mask.shape[0] == 1:
                mask = mask[0]
            d[key] = np.ascontiguousarray(mask.T)  # (Y, X) -> (X, Y); (Z, Y, X) -> (X, Y, Z)
        return d


def labels_from_mask(mask: np.ndarray, target: str, path: str) -> np.ndarray:
    """The labels of ``target``'s convention (see ``scripts.transforms.MakeTargetd``) for a MONAI Label mask whose
    nonzero pixels are that target (membrane or object): "membrane" -> ISBI labels (0 = membrane, 1 = the rest);
    "foreground" -> the mask itself. "boundaries" needs instance labels, which a mask cannot give."""
    if target not in TARGETS:
        raise BundleInputError("target", f"unknown value {target!r}", f"use one of {', '.join(TARGETS)}")
    if target == "boundaries":
        raise BundleInputError(
            path,
            "is a MONAI Label mask, but target 'boundaries' trains from instance labels",
            "train with target membrane or foreground, or give instance labels through --dataset_dir",
        )
    if target == "membrane":
        return np.where(mask != 0, 0, 1).astype(np.uint8)
    return (mask != 0).astype(np.uint8)


def read_annotated(
    pair: Mapping[str, str], target: str = "membrane", spatial_dims: int = 2, context_sections: int = 0
) -> list[dict]:
    """Read one ``{"image": path, "label": path}`` pair of MONAI Label's datalist as training items.

    The label is a MONAI Label mask (nonzero = membrane, or object for target "foreground"), converted by
    :func:`labels_from_mask`. A 2D network (``spatial_dims`` 2) gets one item per section, ``{"image": (C, Y, X),
    "label": (1, Y, X), "name": "file.tif[z]"}`` (``C = 2 * context_sections + 1``: the section and its neighbours,
    see ``scripts.data.with_neighbours``); a 3D network one item with the whole ``(1, Z, Y, X)`` volume.
    Raises ``BundleInputError`` for unreadable files, an image and label of different shapes, or a membrane mask
    that looks inverted (``scripts.data.check_label_convention``).
    """
    image_path, label_path = str(pair["image"]), str(pair["label"])
    image = read_stack(image_path).array
    mask = read_stack(label_path).array
    if image.shape != mask.shape:
        raise BundleInputError(
            label_path,
            f"shape {mask.shape} does not match its image {image_path} of shape {image.shape}",
            "save the label on the image's own grid (MONAI Label: save it from the image it was drawn on)",
        )
    label = labels_from_mask(mask, target, label_path)
    if target == "membrane":
        check_label_convention(label, label_path, "mask")
    name = Path(image_path).name
    if spatial_dims == 3:
        return [{"image": image[None], "label": label[None], "name": f"{name}[0:{image.shape[0]}]"}]
    image = with_neighbours(image, context_sections)
    return [{"image": image[z], "label": label[z][None], "name": f"{name}[{z}]"} for z in range(image.shape[0])]


def _is_file_pair(item: object) -> bool:
    return isinstance(item, Mapping) and isinstance(item.get("image"), (str, os.PathLike))


class AnnotatedDataset(Dataset):
    """train.json's training and validation dataset: labelled sections, from ``--dataset_dir`` or from MONAI Label.

    ``data`` items are either already in memory (``{"image": array, "label": array, ...}``, as
    ``scripts.data.split_labelled`` makes them), which pass through, or ``{"image": path, "label": path}`` pairs,
    as MONAI Label's ``BundleTrainTask`` puts in ``train#dataset#data`` and ``validate#dataset#data``; those are
    read now with :func:`read_annotated` (masks: nonzero = membrane). An empty ``data`` is an empty dataset (MONAI
    Label with too few labels to hold any out for validation); validation then skips.

    Args:
        data: the items.
        transform: the transform applied to every item when it is fetched.
        target: what the network learns (see ``scripts.transforms.MakeTargetd``).
        spatial_dims: 2 (items are sections) or 3 (items are volumes).
        context_sections: neighbouring sections on each side given to a 2D network as extra channels.
    """

    def __init__(
        self,
        data: Sequence,
        transform: Callable | None = None,
        target: str = "membrane",
        spatial_dims: int = 2,
        context_sections: int = 0,
    ) -> None:
        items: list = []
        for item in data:
            pair = _is_file_pair(item)
            items.extend(read_annotated(item, target, spatial_dims, context_sections) if pair else [item])
        super().__init__(items, transform)
