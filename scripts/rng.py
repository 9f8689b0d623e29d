# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Random number generator states as a checkpointable object, so that a resumed training draws what the
uninterrupted one would have drawn.

:class:`RNGState` captures Python's ``random``, NumPy's global generator, torch's CPU (and CUDA) generators and the
``R`` generator of every MONAI ``Randomizable`` inside the objects it is given (e.g. the training transform chain:
with ``num_workers`` 0 the random transforms draw from their own ``R`` in the main process, and those states are
not covered by the global generators). Every state is stored as tensors, so a checkpoint holding it loads with
``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable, Transform

from .errors import BundleInputError

__all__ = ["RNGState", "find_randomizables"]

_NP_KEYS = ("keys", "pos", "has_gauss", "gauss")


def find_randomizables(*sources: Any) -> list[Randomizable]:
    """Every MONAI ``Randomizable`` reachable from ``sources`` through lists, tuples, dicts and the attributes of
    MONAI transforms, in a fixed (depth-first, attribute-definition) order, each once."""
    found: list[Randomizable] = []
    seen: set[int] = set()

    def walk(obj: Any) -> Iterator[Randomizable]:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, Randomizable):
            yield obj
        if isinstance(obj, (list, tuple)):
            children: Any = obj
        elif isinstance(obj, dict):
            children = obj.values()
        elif isinstance(obj, (Transform, Randomizable)):
            children = vars(obj).values()
        else:
            return
        for child in children:
            yield from walk(child)

    for source in sources:
        found.extend(walk(source))
    return found


def _numpy_state(state: tuple) -> dict[str, torch.Tensor]:
    """A NumPy MT19937 state tuple ``(name, keys, pos, has_gauss, cached_gaussian)`` as tensors."""
    _, keys, pos, has_gauss, gauss = state
    return {
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": torch.tensor(int(pos), dtype=torch.int64),
        "has_gauss": torch.tensor(int(has_gauss), dtype=torch.int64),
        "gauss": torch.tensor(float(gauss), dtype=torch.float64),
    }


def _numpy_tuple(state: dict[str, torch.Tensor]) -> tuple:
    """The inverse of :func:`_numpy_state`."""
    keys = state["keys"].cpu().numpy().astype(np.uint32)
    return "MT19937", keys, int(state["pos"]), int(state["has_gauss"]), float(state["gauss"])


class RNGState:
    """Checkpointable random states: ``state_dict()`` / ``load_state_dict()`` as ignite's ``Checkpoint`` expects.

    Args:
        sources: objects whose MONAI ``Randomizable`` members (found by :func:`find_randomizables`) are captured
            too, e.g. the training ``Compose``. Their count and order must be the same when loading.

    Example (bundle config)::

        "rng": {"_target_": "scripts.rng.RNGState", "sources": "@train#preprocessing"}
    """

    def __init__(self, sources: Any = None) -> None:
        self.randomizables = find_randomizables(sources) if sources is not None else []

    def state_dict(self) -> dict[str, Any]:
        """The current states, all as tensors (``weights_only``-safe)."""
        version, internal, gauss_next = random.getstate()
        state: dict[str, Any] = {
            "python": torch.tensor(internal, dtype=torch.int64),
            "python_version": torch.tensor(version, dtype=torch.int64),
            "python_gauss": torch.tensor([] if gauss_next is None else [gauss_next], dtype=torch.float64),
            "numpy": _numpy_state(np.random.get_state()),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.stack([s.cpu() for s in torch.cuda.get_rng_state_all()])
        if self.randomizables:
            per_item = [_numpy_state(r.R.get_state()) for r in self.randomizables]
            state["randomizables"] = {k: torch.stack([s[k] for s in per_item]) for k in _NP_KEYS}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the states :meth:`state_dict` returned (CUDA states only where CUDA is available)."""
        saved = state.get("randomizables")
        count = 0 if saved is None else int(saved["keys"].shape[0])
        if count != len(self.randomizables):
            raise BundleInputError(
                "rng",
                f"the checkpoint holds {count} random transform state(s), but this training has "
                f"{len(self.randomizables)}",
                "resume with the same training transforms (train#preprocessing) the checkpoint was written with",
            )
        gauss = state["python_gauss"].tolist()
        random.setstate((int(state["python_version"]), tuple(state["python"].tolist()), gauss[0] if gauss else None))
        np.random.set_state(_numpy_tuple(state["numpy"]))
        torch.set_rng_state(state["torch"].cpu())
        if "cuda" in state and torch.cuda.is_available():
            for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state.cpu(), device)
        for i, item in enumerate(self.randomizables):
            item.R.set_state(_numpy_tuple({k: saved[k][i] for k in _NP_KEYS}))  # type: ignore[index]
