# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Loading trained weights into a network with errors that say what to change.

inference.json and evaluate.json load ``ckpt_path`` (default ``models/model.pt``, where train.json writes its best
model) the model zoo's way: a :class:`CheckpointLoader` handler called in ``initialize``."""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import zipfile

import torch
from monai.handlers import CheckpointLoader as MonaiCheckpointLoader
from torch import nn

from .errors import BundleInputError
from .settings import path_setting

logger = logging.getLogger(__name__)

#: Where the classes of a network saved whole (``torch.save(model)`` instead of its ``state_dict()``) must come from
#: for the bundle to read it: its own networks and the PyTorch and MONAI layers they are built of.
NETWORK_MODULES = ("scripts.", "torch.nn.modules.", "monai.networks.")


def _pickled_globals(path: str) -> list[str]:
    """The classes and functions that unpickling ``path`` would import (``module.name``), read without unpickling
    anything; [] for a file that is not a readable zip checkpoint (legacy, corrupt or not PyTorch at all)."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        return []


def _network_class(name: str) -> type | None:
    """The ``nn.Module`` class ``name`` (``module.Class``) if its module is one of :data:`NETWORK_MODULES`, else None."""
    module, _, attribute = name.rpartition(".")
    if not module.startswith(NETWORK_MODULES):
        return None
    try:
        cls = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError):
        return None
    return cls if isinstance(cls, type) and issubclass(cls, nn.Module) else None


def _whole_network_weights(path: str, names: list[str]) -> dict[str, torch.Tensor]:
    """The state dict of the network that ``path`` holds whole (``torch.save(model)``), whose pickle names the
    globals ``names``: read with PyTorch's safe unpickler allowing just those classes when every one is a layer of
    :data:`NETWORK_MODULES`, so no code in the file runs; a ``BundleInputError`` naming the first other global."""
    classes = [_network_class(name) for name in names]
    if None in classes:
        other = names[classes.index(None)]
        fix = "save the weights alone with torch.save(model.state_dict(), 'model.pt') and pass that file"
        raise BundleInputError(path, f"is not a state dict and needs code to be unpickled ({other})", fix)
    with torch.serialization.safe_globals(classes):
        whole = torch.load(path, map_location="cpu", weights_only=True)
    network = whole.get("model") if isinstance(whole, dict) else whole
    if not isinstance(network, nn.Module):
        raise BundleInputError(path, "does not hold a model state dict", "pass a model.pt saved by this bundle")
    logger.info(
        f"{path} holds a whole {type(network).__name__} (torch.save(model)); its weights are used. "
        "torch.save(model.state_dict(), path) saves the weights alone, as the bundle does"
    )
    return network.state_dict()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict saved by the bundle (plain, or under a "model" key), safely (``weights_only``).

    A network saved whole (``torch.save(model)``, plain or under "model") gives its ``state_dict()`` if it is built of
    this bundle's, PyTorch's and MONAI's layers alone (read with PyTorch's safe unpickler, which allows just those
    classes); any other pickled object is refused with one line saying how to save the weights alone.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise BundleInputError(
            path,
            "model weights not found",
            "train one with configs/train.json (it writes models/model.pt), pass --ckpt_path to a model.pt, or get the "
            "shipped weights back with python -m monai.bundle download_large_files --bundle_path .",
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        names = _pickled_globals(path) if isinstance(e, pickle.UnpicklingError) else []
        if not names:  # not a class or function the safe unpickler refused: a damaged or foreign file
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise BundleInputError(
                path, f"is not a readable PyTorch checkpoint ({first})", "re-download or retrain model.pt"
            ) from e
        state = _whole_network_weights(path, names)
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


_BASICUNET_KEYS = ["conv_0.conv_0.conv.weight"] + [f"down_{i}.convs.conv_0.conv.weight" for i in range(1, 5)]


def checkpoint_architecture(state: dict[str, torch.Tensor]) -> tuple[str, list[int], int] | None:
    """``(name, features, spatial_dims)`` of the network a state dict belongs to, read off its weights: "FusionNet"
    (5 widths) or MONAI's "BasicUNet" (6 widths, as configs/basicunet.json gives them); None for anything else.
    Works on a network's own ``state_dict()`` too."""
    features = checkpoint_features(state)
    if features is not None:
        return "FusionNet", features, int(checkpoint_spatial_dims(state) or 2)
    if all(k in state for k in _BASICUNET_KEYS) and "final_conv.weight" in state:
        widths = [int(state[k].shape[0]) for k in _BASICUNET_KEYS] + [int(state["final_conv.weight"].shape[1])]
        return "BasicUNet", widths, int(state[_BASICUNET_KEYS[0]].ndim) - 2
    return None


def dims_hint(dims: int, wanted_dims: int, features: list[int] | None = None) -> tuple[str, str]:
    """``(problem, fix)`` for ``dims``-D weights under a ``wanted_dims``-D network_def: 2D weights under the 3D
    configs need 3D weights (not --spatial_dims 2, which would undo the 3D configs); 3D weights need the 3D configs."""
    problem = f"holds a {dims}D network, but network_def is {wanted_dims}D"
    if wanted_dims == 3:
        fix = (
            "pass --ckpt_path to 3D weights (a model.pt trained with configs/train_3d.json over train.json), or "
            "leave out the 3D config (configs/inference_3d.json, configs/train_3d.json) to run these 2D weights"
        )
    else:
        fix = (
            "run it with the 3D configs: add configs/inference_3d.json after inference.json (configs/train_3d.json "
            "after train.json to evaluate)" + (f' and pass --features "{features}"' if features else "")
        )
    return problem, fix


def mismatch_hint(state: dict[str, torch.Tensor], network: nn.Module) -> tuple[str, str] | None:
    """``(problem, fix)`` for a checkpoint that does not fit ``network``, naming the change that makes it fit: other
    weights (``--ckpt_path``) when the architecture or dimensionality differs from what the configs ask for, the
    checkpoint's width (``--features``) when only that differs; None when the checkpoint is not recognised."""
    have = checkpoint_architecture(state)
    if have is None:
        return None
    kind, features, dims = have
    want = checkpoint_architecture(network.state_dict())
    wanted_kind = want[0] if want else type(network).__name__
    if kind != wanted_kind:
        problem = f"holds {kind} weights, but network_def is a {wanted_kind}"
        if kind == "BasicUNet":
            fix = (
                "add configs/basicunet.json after the main config (e.g. --config_file "
                "\"['configs/inference.json','configs/basicunet.json']\"), or pass --ckpt_path to FusionNet weights"
            )
        else:
            fix = (
                f"pass --ckpt_path to {wanted_kind} weights (a model.pt trained with the same configs, e.g. "
                f"train.json with basicunet.json), or leave out the config that makes network_def a {wanted_kind} "
                "(e.g. configs/basicunet.json) to use these FusionNet weights"
            )
        return problem, fix
    if want is None:
        return None
    _, wanted_features, wanted_dims = want
    if dims != wanted_dims:
        return dims_hint(dims, wanted_dims, features)
    if features != wanted_features:
        problem = f"was trained with features {features}, but network_def has {wanted_features}"
        return problem, f'pass --features "{features}" (the width it was trained with)'
    channels, wanted_channels = _input_channels(state), _input_channels(network.state_dict())
    if channels != wanted_channels:
        problem = f"takes {channels} input channel(s), but network_def takes {wanted_channels}"
        return problem, f"pass --context_sections {(channels - 1) // 2} (the neighbouring sections it was trained with)"
    return None


def _input_channels(state: dict[str, torch.Tensor]) -> int | None:
    """Input channels of a FusionNet or BasicUNet state dict (2.5D networks take neighbouring sections too)."""
    for key in ("encoders.0.conv_in.conv.weight", _BASICUNET_KEYS[0]):
        if key in state:
            return int(state[key].shape[1])
    return None


def load_weights(network: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load ``path`` into ``network`` (strictly) and return the network.

    A checkpoint of another width, architecture or dimensionality gives a ``BundleInputError`` that names the fix
    (:func:`mismatch_hint`).
    """
    path = path_setting(path, "ckpt_path")
    state = read_state_dict(path)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        hint = mismatch_hint(state, network)
        if hint is None:
            lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
            first = (lines[1] if len(lines) > 1 else lines[0] if lines else "")[:300]
            hint = f"does not fit network_def ({first})", "pass the network_def the checkpoint was trained with"
        raise BundleInputError(path, *hint) from None
    return network


def is_torchscript(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``, ``monai.bundle ckpt_export``), no state dict."""
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def runnable_network(network: nn.Module, path: str | os.PathLike) -> nn.Module:
    """The network inference runs: the TorchScript module in ``path`` if it is one (e.g. ``models/model.ts``),
    otherwise ``network`` itself (``network_def``, whose weights :class:`CheckpointLoader` loads).

    A TorchScript module carries its own architecture and weights, so ``network`` is then unused; one of the other
    dimensionality is refused here, as it would otherwise fail on the first window with a TorchScript traceback.
    """
    path = path_setting(path, "ckpt_path")
    if not is_torchscript(path):
        return network
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:300]
        fix = "re-export it with python -m monai.bundle ckpt_export"
        raise BundleInputError(path, f"is not a loadable TorchScript module ({first})", fix) from None
    dims = next((p.ndim - 2 for p in module.parameters() if p.ndim in (4, 5)), None)
    wanted = getattr(network, "spatial_dims", None)
    if dims and wanted and dims != wanted:
        raise BundleInputError(path, *dims_hint(dims, wanted))
    return module


class CheckpointLoader(MonaiCheckpointLoader):
    """MONAI's ``CheckpointLoader``, as model-zoo bundles list it in ``initialize``, with this bundle's checks: a
    missing, unreadable or mismatched checkpoint stops with a ``BundleInputError`` that names the fix
    (:func:`load_weights`: another width, architecture or dimensionality), and a TorchScript ``load_path`` is left to
    :func:`runnable_network`, which runs it in place of ``network_def``.

    inference.json and evaluate.json load into ``network_def`` in ``initialize`` (``"$@checkpointloader()"``),
    before ``network`` is built from it: ``network`` folds the batch norms into the convolutions, which changes the
    state dict's keys, so the weights must be in first. That is why no engine is passed: the zoo's
    ``$@checkpointloader(@evaluator)`` would build the evaluator, and fold the network, before loading. Attached to
    an engine (``attach``) it loads when the engine starts, as MONAI's does.

    Args:
        load_path: a ``model.pt`` state dict (plain, or under a "model" key), or a TorchScript file.
        load_dict: ``{"model": network}``: the network(s) that receive the weights.
        name: the logger's name; None: the engine's logger, or the root logger without an engine.
    """

    def __init__(self, load_path: str | os.PathLike, load_dict: dict[str, nn.Module], name: str | None = None) -> None:
        super().__init__(load_path=load_path, load_dict=load_dict, name=name)

    def __call__(self, engine: object = None) -> None:
        path = path_setting(self.load_path, "ckpt_path")
        if is_torchscript(path):
            self.logger.info(f"{path} is a TorchScript module: it runs in place of network_def")
            return
        for network in self.load_dict.values():
            load_weights(network, path)
        self.logger.info(f"Restored all variables from {path}")
