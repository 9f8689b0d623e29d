# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Loading trained weights into a network with errors that say what to change."""

from __future__ import annotations

import os
import pickle
import zipfile

import torch
from torch import nn

from .errors import BundleInputError
from .settings import path_setting


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict saved by the bundle (plain, or under a "model" key), safely (``weights_only``)."""
    path = str(path)
    if not os.path.isfile(path):
        raise BundleInputError(
            path, "model weights not found", "train one with configs/train.json or pass --ckpt_path to a model.pt"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        raise BundleInputError(
            path, f"is not a readable PyTorch checkpoint ({e})", "re-download or retrain model.pt"
        ) from e
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BundleInputError(path, "does not hold a model state dict", "pass a model.pt saved by this bundle")
    return state


def checkpoint_features(state: dict[str, torch.Tensor]) -> list[int] | None:
    """The FusionNet widths a state dict was trained with, read off its weights (None if not a FusionNet)."""
    keys = [f"encoders.{i}.conv_in.conv.weight" for i in range(4)] + ["bridge.conv_in.conv.weight"]
    if not all(k in state for k in keys):
        return None
    return [int(state[k].shape[0]) for k in keys]


def checkpoint_spatial_dims(state: dict[str, torch.Tensor]) -> int | None:
    """2 or 3: the spatial dims of a FusionNet state dict, read off its first convolution (None if not a FusionNet)."""
    weight = state.get("encoders.0.conv_in.conv.weight")
    return int(weight.ndim) - 2 if weight is not None else None


def load_weights(network: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load ``path`` into ``network`` (strictly) and return the network.

    A checkpoint of another width or architecture gives a ``BundleInputError`` that names the width to pass.
    """
    path = path_setting(path, "ckpt_path")
    state = read_state_dict(path)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        trained = checkpoint_features(state)
        wanted = list(getattr(network, "features", [])) or None
        dims, wanted_dims = checkpoint_spatial_dims(state), getattr(network, "spatial_dims", None)
        if trained and trained != wanted:
            fix = f'pass --features "{trained}" (the width it was trained with)'
            problem = f"was trained with features {trained}, but network_def has {wanted}"
        elif dims and wanted_dims and dims != wanted_dims:
            problem = f"holds a {dims}D network, but network_def is {wanted_dims}D"
            fix = f"pass --spatial_dims {dims}" + (" (e.g. with configs/inference_3d.json)" if dims == 3 else "")
        else:
            lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
            first = (lines[1] if len(lines) > 1 else lines[0] if lines else "")[:300]
            fix, problem = "pass the network_def the checkpoint was trained with", f"does not fit network_def ({first})"
        raise BundleInputError(path, problem, fix) from None
    return network


def is_torchscript(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``, ``monai.bundle ckpt_export``), no state dict."""
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def load_network(network: nn.Module, path: str | os.PathLike) -> nn.Module:
    """The network inference runs: the TorchScript module in ``path`` if it is one (e.g. ``models/model.ts``),
    otherwise ``network`` with the weights in ``path`` loaded (:func:`load_weights`).

    A TorchScript module carries its own architecture and weights, so ``network`` (``network_def``) is then unused.
    """
    path = path_setting(path, "ckpt_path")
    if not is_torchscript(path):
        return load_weights(network, path)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:300]
        fix = "re-export it with python -m monai.bundle ckpt_export"
        raise BundleInputError(path, f"is not a loadable TorchScript module ({first})", fix) from None
    # a TorchScript module brings its own architecture: one of the other dimensionality would fail on the first
    # window with a TorchScript traceback
    dims = next((p.ndim - 2 for p in module.parameters() if p.ndim in (4, 5)), None)
    wanted = getattr(network, "spatial_dims", None)
    if dims and wanted and dims != wanted:
        fix = f"pass --spatial_dims {dims}" + (" (e.g. with configs/inference_3d.json)" if dims == 3 else "")
        raise BundleInputError(path, f"holds a {dims}D network, but network_def is {wanted}D", fix)
    return module
