# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Full training checkpoints and resuming from the latest one after a crash.

:class:`TrainingCheckpoint` is an ignite handler for the trainer (after every handler of ``train#handlers`` that
acts at an epoch's end). Every ``save_interval`` epochs it writes ``<save_dir>/checkpoint_epoch=N.pt`` with
everything a training needs to go on exactly as if it had never stopped: the objects of ``save_dict`` (network,
optimizer, lr scheduler, RNG states, best-metric record), the trainer's epoch/iteration, and its own list of files
(the newest ``n_saved`` are kept).
With ``resume`` true it loads the newest readable such file with MONAI's ``CheckpointLoader`` when the trainer
starts.

Files are written atomically (a temporary file, then a rename), so a crash while saving never leaves a truncated
checkpoint behind. MONAI's ``CheckpointSaver`` is not used for these files because it writes in place, after
removing the oldest file, which a kill at the wrong moment turns into no readable checkpoint at all.

All saved values are tensors, numbers, strings and containers of them: checkpoints load with
``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver

from .errors import BundleInputError, as_bool
from .settings import integer

__all__ = ["CHECKPOINT_NAME", "KeyMetricState", "TrainingCheckpoint", "checkpoint_epoch", "latest_checkpoint"]

#: Full checkpoints are named ``checkpoint_epoch=<N>.pt``, the name ignite's ``Checkpoint`` gives them.
CHECKPOINT_NAME = re.compile(r"^checkpoint_epoch=(\d+)\.pt$")


def checkpoint_epoch(path: str | Path) -> int | None:
    """The epoch in a full checkpoint's file name, or None if ``path`` is not named like one."""
    match = CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def latest_checkpoint(ckpt_dir: str | Path) -> Path:
    """The full checkpoint of the highest epoch in ``ckpt_dir`` that is a complete file.

    Raises ``BundleInputError`` naming the folder and the fix if there is none.
    """
    folder = Path(ckpt_dir)
    found = [(checkpoint_epoch(p), p) for p in folder.iterdir()] if folder.is_dir() else []
    for _, path in sorted(((e, p) for e, p in found if e is not None), reverse=True):
        if zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut-off one has no central directory
            return path
    raise BundleInputError(
        folder,
        "no full checkpoint (checkpoint_epoch=N.pt) to resume from",
        "start the training without --resume (it writes one every --save_interval epochs), "
        "or pass --ckpt_dir with the folder that holds them",
    )


class KeyMetricState:
    """The validation's best-metric record, checkpointable, so that a resumed training replaces ``model.pt`` only
    with a better model, as the uninterrupted one would.

    It holds the evaluator's ``best_metric`` / ``best_metric_epoch`` and the file list of every key-metric
    ``CheckpointSaver`` among ``handlers`` (the one that writes ``model.pt``). ``model.pt`` itself stays a plain
    state dict.

    Args:
        evaluator: the validation engine (``@validate#evaluator``).
        handlers: its handlers (``@validate#handlers``); others than key-metric savers are ignored.
    """

    def __init__(self, evaluator: Engine, handlers: Sequence[Any] | None = None) -> None:
        self.evaluator = evaluator
        self.savers = [
            h for h in (handlers or []) if isinstance(h, CheckpointSaver) and h._key_metric_checkpoint is not None
        ]

    def state_dict(self) -> dict[str, Any]:
        """Best metric, its epoch, and each saver's ``(priority, filename)`` list."""
        return {
            "best_metric": float(self.evaluator.state.best_metric),
            "best_metric_epoch": int(self.evaluator.state.best_metric_epoch),
            "savers": [
                [(float(p), str(f)) for p, f in s._key_metric_checkpoint.state_dict()["_saved"]] for s in self.savers
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.evaluator.state.best_metric = state["best_metric"]
        self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
        for saver, saved in zip(self.savers, state["savers"]):
            saver.load_state_dict({"_saved": saved})


class TrainingCheckpoint:
    """Ignite handler: full checkpoints every ``save_interval`` epochs, and resuming from the latest one.

    Attach it after every trainer handler that acts at an epoch's end (in ``train#handlers``, only
    ``scripts.scale.TrainingPixelSize``, which acts when training starts, follows it): it saves at
    ``EPOCH_COMPLETED`` and must see the state after the lr scheduler step and the validation (which draws from
    torch's generator).

    Args:
        save_dir: folder of the ``checkpoint_epoch=N.pt`` files.
        save_dict: objects with ``state_dict()`` / ``load_state_dict()`` to save, e.g. ``{"model": ...,
            "optimizer": ..., "lr_scheduler": ..., "rng": RNGState(...), "validation": KeyMetricState(...)}``.
            The trainer (key "trainer") and this handler's file list (key "checkpointer") are added.
        save_interval: save every this many epochs; 0 saves none.
        n_saved: keep the newest this many full checkpoints.
        resume: load the latest full checkpoint in ``save_dir`` when the trainer starts (``BundleInputError`` if
            there is none). Strings "true"/"false" (command line) are accepted.
        map_location: passed to ``torch.load`` when resuming, e.g. the training device.
    """

    def __init__(
        self,
        save_dir: str | Path,
        save_dict: Mapping[str, Any],
        save_interval: int = 1,
        n_saved: int = 2,
        resume: bool | str = False,
        map_location: Any = None,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.save_interval = integer(save_interval, "save_interval", 0, 5)
        self.n_saved = integer(n_saved, "keep_checkpoints", 1, 2)
        self.resume = as_bool(resume, "resume")
        self.map_location = map_location
        self.checkpoint: Checkpoint | None = None

    def attach(self, engine: Engine) -> None:
        """Save on ``EPOCH_COMPLETED(every=save_interval)``; with ``resume``, load on ``STARTED``."""
        to_save = {**self.save_dict, "trainer": engine}
        self.checkpoint = Checkpoint(
            to_save,
            DiskSaver(str(self.save_dir), require_empty=False, atomic=True),
            score_function=lambda e: e.state.epoch,
            score_name="epoch",
            n_saved=self.n_saved,
            include_self=True,
        )
        if self.resume:
            load_dict = {**to_save, "checkpointer": self.checkpoint}
            CheckpointLoader(str(latest_checkpoint(self.save_dir)), load_dict, map_location=self.map_location).attach(
                engine
            )
        if self.save_interval > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.checkpoint)
