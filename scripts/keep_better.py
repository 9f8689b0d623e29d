# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""A training that starts from a trained model ends with the better of the two, judged on held-out labels.

Fine-tuning helps where the starting model is weak and can hurt where it is already good, and a user cannot tell
which case they are in without labels kept aside. :class:`KeepBetterModel`, train.json's last handler, makes the
check part of every such run:

- when training starts from trained weights (``base_ckpt``, as finetune.json sets it, or the model already in
  ``model_dir``, as MONAI Label's ``/train`` loads it), the validator scores those weights on the held-out labels
  before the first step; the validator's ``CheckpointSaver`` (``save_key_metric``) then holds them as the best
  ``model.pt`` so far, so that only a model that scores higher replaces them;
- when training completes, the trained weights are scored (if the last epoch was not already) and kept only if they
  beat the starting model by more than ``min_gain``: otherwise ``model.pt`` is the starting model again. The
  decision is logged in one line, and ``metrics.json`` beside the weights records both scores and which model
  ``model.pt`` is.

A held-out quarter of a few sections is a small sample: gains of a few thousandths of V_rand there were not repeated
on the rest of the stack in docs/experiments.md's fine-tuning table, hence a margin rather than any gain.

``keep`` "finetuned" makes the trained weights ``model.pt`` whatever they scored (still scored and recorded). A
training from scratch (the network does not start from a saved model) is left alone.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from torch import nn

from .checkpoint import read_state_dict
from .distributed import rank
from .errors import BundleInputError
from .outputs import atomic_path
from .planes import is_isotropic
from .scale import model_isotropic_pixel_size, model_pixel_size, needs_resampling, physical_zoom, write_model_pixel_size

KEEP_CHOICES = ("better", "finetuned")
METRICS_FILE = "metrics.json"
logger = logging.getLogger(__name__)


def _unwrap(network: nn.Module) -> nn.Module:
    return network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network


def holds_weights_of(network: nn.Module, path: str | Path) -> bool:
    """Whether ``network``'s parameters and buffers equal those saved at ``path`` (every key, bit for bit)."""
    if not Path(path).is_file():
        return False
    saved = read_state_dict(path)
    state = _unwrap(network).state_dict()
    if saved.keys() != state.keys():
        return False
    return all(torch.equal(state[key].cpu(), saved[key]) for key in state)


def _scales(ckpt: Path) -> tuple:
    """The pixel size and isotropic scale a checkpoint's sidecar records (``scripts.scale``)."""
    return model_pixel_size(str(ckpt)), model_isotropic_pixel_size(str(ckpt))


def _scores(metrics: dict) -> dict[str, float]:
    return {name: round(float(value), 4) for name, value in metrics.items() if isinstance(value, (int, float))}


class KeepBetterModel:
    """train.json's handler that keeps the better of the starting and the trained model (see the module docstring).

    Args:
        validator: the ``SupervisedEvaluator`` of the held-out labels (``validate#evaluator``), whose key metric
            decides and whose ``CheckpointSaver`` writes ``model_dir/model.pt``.
        network: the trained network (``network``).
        model_dir: where ``model.pt``, ``model_final.pt`` (the last epoch) and ``metrics.json`` go.
        base_ckpt: the starting weights, or None: then the model in ``model_dir`` if the network starts from it.
        keep: "better" (default) or "finetuned".
        min_gain: how much more than the starting model the trained one must score (the key metric, e.g. V_rand)
            on the held-out labels to be kept.
    """

    def __init__(
        self,
        validator: object,
        network: nn.Module,
        model_dir: str,
        base_ckpt: str | None = None,
        keep: str = "better",
        min_gain: float = 0.0,
    ) -> None:
        if keep not in KEEP_CHOICES:
            raise BundleInputError(
                "keep", f"unknown value {keep!r}", "pass better (the default) or finetuned (keep it unchecked)"
            )
        if isinstance(min_gain, bool) or not isinstance(min_gain, (int, float)) or not 0 <= min_gain < 1:
            raise BundleInputError(
                "min_gain", f"{min_gain!r} is not a score difference", "pass a number from 0 to 1, e.g. 0.005"
            )
        self.validator, self.network, self.keep, self.min_gain = validator, network, keep, float(min_gain)
        self.model_dir = Path(model_dir)
        self.start = Path(base_ckpt or self.model_dir / "model.pt")
        # read now, when the handler is built: train.json's TrainingPixelSize rewrites model_dir's model.json (the
        # served model's, in MONAI Label) with the training's scale when training starts
        self.start_scales = _scales(self.start)
        self.base: dict[str, float] | None = None
        self.base_score = 0.0
        self.active = False
        self.start_bytes: bytes | None = None  # the served model's file, which validation may overwrite

    def attach(self, engine: object) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.started)  # type: ignore[attr-defined]
        engine.add_event_handler(Events.COMPLETED, self.completed)  # type: ignore[attr-defined]

    @property
    def _metric(self) -> str:
        return str(self.validator.state.key_metric_name)  # type: ignore[attr-defined]

    def _held_out(self) -> int:
        return len(self.validator.data_loader)  # type: ignore[attr-defined]

    def started(self, engine: object) -> None:
        """Score the starting weights (a fresh run) or read their score back (a resumed one)."""
        state = engine.state  # type: ignore[attr-defined]
        if state.epoch > 0:  # resumed: the base was scored when the run first started
            recorded = self._read_metrics()
            self.base = recorded.get("base")
            self.active = self.base is not None
            self.base_score = float(self.base[recorded["metric"]]) if self.base else 0.0
            return
        self.active = holds_weights_of(self.network, self.start)
        if not self.active or not self._held_out():
            return
        if self.start.resolve() == (self.model_dir / "model.pt").resolve():
            self.start_bytes = self.start.read_bytes()
        inferer = self.validator.inferer  # type: ignore[attr-defined]
        own_zoom, inferer.zoom = inferer.zoom, self._starting_zoom(inferer.spatial_dims)
        try:
            self.validator.run(0)  # type: ignore[attr-defined]
        finally:
            inferer.zoom = own_zoom
        self.base = _scores(self.validator.state.metrics)  # type: ignore[attr-defined]
        self.base_score = float(self.validator.state.metrics[self._metric])  # type: ignore[attr-defined]
        record = {
            "base": self.base,
            "base_weights": str(self.start),
            "held_out_items": self._held_out(),
            "min_gain": self.min_gain,
        }
        self._write_metrics(record, fresh=True)
        logger.info(f"starting model {self.start} on the held-out labels: {self._metric} {self.base[self._metric]:.4f}")

    def _starting_zoom(self, spatial_dims: int) -> tuple[float, ...] | None:
        """The zoom at which inference would run the starting model on the held-out labels: their pixel size (as
        training recorded it beside the trained weights) against the starting model's scale for such data (its
        near-isotropic scale for a near-isotropic pixel size, if it has one). The trained model learns the labels
        at their own pixels; the starting model is scored as it would be used. None: the labels' own grid."""
        data = model_pixel_size(str(self.model_dir / "model.pt"))
        pixel_size, isotropic = self.start_scales
        zoom = physical_zoom(
            data, isotropic if isotropic is not None and is_isotropic(data) else pixel_size, spatial_dims
        )
        return zoom if needs_resampling(zoom) else None

    def completed(self, engine: object) -> None:
        """Score the trained weights, keep the better model as ``model.pt``, log and record the decision."""
        if not self.active:
            return
        final = self.model_dir / "model_final.pt"
        if self.base is None:  # nothing held out: nothing to decide with
            self._unchecked(final)
            return
        epoch = engine.state.epoch  # type: ignore[attr-defined]
        if self.validator.state.epoch != epoch:  # type: ignore[attr-defined]
            self.validator.run(epoch)  # type: ignore[attr-defined]
        trained = _scores(self.validator.state.metrics)  # type: ignore[attr-defined]
        best_epoch = int(self.validator.state.best_metric_epoch)  # type: ignore[attr-defined]
        # model.pt is the best epoch's weights where one scored higher than the starting model (the validator's
        # CheckpointSaver), else still the starting model
        best_gain = float(self.validator.state.best_metric) - self.base_score  # type: ignore[attr-defined]
        improved = best_epoch > 0 and best_gain > self.min_gain

        kept = "finetuned" if improved or self.keep == "finetuned" else "base"
        if kept == "finetuned" and not improved:
            self._replace_model(final)
        if kept == "base":
            self._restore_start()
        self._pixel_sizes(final, kept)
        name = self._metric
        gain = trained[name] - self.base[name]
        summary = f"{name} {trained[name]:.4f} against the starting model's {self.base[name]:.4f} ({gain:+.4f})"
        model = self.model_dir / "model.pt"
        if kept == "base":
            margin = f" by more than {self.min_gain:g}" if self.min_gain else ""
            logger.warning(
                f"the trained model did not beat the starting model{margin} on the held-out labels: {summary}. "
                f"{model} is the starting model; "
                f"the trained weights are {final} (pass --keep finetuned to make them model.pt)"
            )
        elif improved:
            best = best_epoch if best_epoch == epoch else f"{best_epoch} of {epoch}"
            logger.info(f"trained model kept (epoch {best}): held-out {summary}")
        else:
            logger.warning(f"trained model kept as asked (--keep finetuned), though held-out {summary}")
        self._write_metrics({"trained": trained, "trained_epoch": epoch, "best_epoch": best_epoch, "kept": kept})

    def _unchecked(self, final: Path) -> None:
        """Nothing was held out. The trained weights become ``model.pt`` where that is a new file (fine-tuning into
        its run folder) or ``keep`` is "finetuned"; a model served from ``model_dir`` (MONAI Label) stays."""
        model = self.model_dir / "model.pt"
        serving = self.start.resolve() == model.resolve()
        kept = "base" if serving and self.keep == "better" else "finetuned"
        self._pixel_sizes(final, kept)
        if kept == "finetuned":
            self._replace_model(final)
            logger.warning(
                f"no labels were held out, so {model} (the trained model) was not checked against {self.start}"
            )
        else:
            logger.warning(f"no labels were held out to check the trained model ({final}): {model} stays as it was")
        self._write_metrics({"kept": kept, "checked": False}, fresh=True)

    def _pixel_sizes(self, final: Path, kept: str) -> None:
        """Give each weights file the sidecar of the data it learned at (``scripts.scale``): ``model_final.pt`` the
        training's (written beside ``model.pt`` when training started), ``model.pt`` the starting model's where
        that one is kept."""
        if rank() > 0:  # every rank scores (validation is sharded); rank 0 writes, as ignite's savers do
            return
        write_model_pixel_size(str(final), *_scales(self.model_dir / "model.pt"))
        if kept == "base":
            write_model_pixel_size(str(self.model_dir / "model.pt"), *self.start_scales)

    def _restore_start(self) -> None:
        """Make ``model.pt`` the starting model again (validation saved a better-scoring epoch there, or a resumed
        run's first validation did)."""
        model = self.model_dir / "model.pt"
        if rank() > 0 or (self.start.resolve() == model.resolve() and self.start_bytes is None):
            return  # a resumed MONAI Label run: the served model's file is all there is
        with atomic_path(model) as tmp:
            if self.start_bytes is None:
                shutil.copyfile(self.start, tmp)
            else:
                Path(tmp).write_bytes(self.start_bytes)

    def _replace_model(self, source: Path) -> None:
        if rank() > 0:
            return
        with atomic_path(self.model_dir / "model.pt") as tmp:
            shutil.copyfile(source, tmp)

    def _read_metrics(self) -> dict:
        path = self.model_dir / METRICS_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def _write_metrics(self, entries: dict, fresh: bool = False) -> None:
        """Add ``entries`` to ``metrics.json`` (a ``fresh`` run starts it anew: nothing of an earlier run stays)."""
        if rank() > 0:
            return
        record = {**({} if fresh else self._read_metrics()), "metric": self._metric, **entries}
        with atomic_path(self.model_dir / METRICS_FILE) as tmp:
            Path(tmp).write_text(json.dumps(record, indent=2) + "\n")
