# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Progress of long runs: sections (or windows, or Dask blocks) done of the total, with the rate and the time left.

One tqdm bar per stack, on stderr, for the three ways of inference: ``configs/inference.json`` (the inferer reports
the sections of the stack it is on, :class:`InferenceProgress`), ``configs/inference_stream.json``
(``scripts.streaming``) and ``configs/inference_dask.json`` (``scripts.blockwise``, blocks as they finish). Ignite's
``ProgressBar`` counted files, so one 1000-section stack showed 0/1 until it was done.

Bars are drawn only where stderr is a terminal: logs, batch jobs and CI get no bar text (:func:`enabled`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from tqdm import tqdm


def enabled() -> bool:
    """Whether to draw bars: stderr (where they go) is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def bar(
    iterable: Iterable | None = None, total: int | None = None, name: str = "", unit: str = "section", initial: int = 0
) -> tqdm:
    """A tqdm bar of ``unit``s done of ``total`` (``len(iterable)`` by default), e.g.
    ``em.tif: 40%|####      | 400/1000 [05:12<07:48, 1.28section/s]``; it stays on screen when done, one line per
    stack. Disabled (it still iterates and counts, silently) where :func:`enabled` is False. ``initial``: units done
    before (e.g. blocks a resumed run finds done)."""
    return tqdm(iterable, total=total, desc=name or None, unit=unit, initial=initial, file=sys.stderr,
                disable=not enabled(), dynamic_ncols=True)  # fmt: skip


def counted(items: Iterable, total: int, name: str = "", unit: str = "section") -> Iterator:
    """``items`` as they come, each counted on a :func:`bar` as soon as it is ready: a consumer that takes the
    last item and stops (a writer of ``total`` sections) leaves the bar at ``total/total``, where a bar around the
    iteration would stop one short. The bar closes when the consumer drops the iterator."""
    with bar(total=total, name=name, unit=unit) as done:
        for item in items:
            done.update(1)
            yield item


class Progress:
    """The bar of the work an inferer does on one input: the inferer opens it when it knows the total
    (:meth:`start`: a stack's sections, or an image's windows) and advances it as work is done (:meth:`update`,
    :meth:`counting`). ``scripts.inferers.MembraneInferer`` takes one as its ``progress``.

    Args:
        name: the bar's label (e.g. the file name); :class:`InferenceProgress` sets it for each image.
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._bar: tqdm | None = None

    def start(self, total: int, unit: str = "section") -> None:
        """Open a bar of ``total`` ``unit``s (closing the previous one)."""
        self.close()
        self._bar = bar(total=int(total), name=self.name, unit=unit)

    def update(self, done: int = 1) -> None:
        """``done`` more units finished."""
        if self._bar is not None:
            self._bar.update(int(done))

    def counting(self, predictor: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """``predictor`` (windows ``(B, C, *roi)`` to probability), advancing the bar by its ``B`` windows per call."""

        def predict(x: torch.Tensor) -> torch.Tensor:
            out = predictor(x)
            self.update(x.shape[0])
            return out

        return predict

    def close(self) -> None:
        """Close the bar, if one is open."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class InferenceProgress(Progress):
    """``configs/inference.json``'s bar (in place of Ignite's ``ProgressBar``): for each image the evaluator runs,
    a bar named ``[i/n] <file>`` of its sections (a 2D network on a stack) or windows (one 2D image, a 3D network),
    which its ``inferer`` advances (``MembraneInferer.progress``).

    Args:
        inferer: the evaluator's inferer, a ``scripts.inferers.MembraneInferer``.
    """

    def __init__(self, inferer: Any) -> None:
        super().__init__()
        self.inferer = inferer

    def attach(self, engine: Any) -> None:
        """Report through ``inferer`` while ``engine`` (an Ignite evaluator) runs."""
        from ignite.engine import Events

        self.inferer.progress = self
        engine.add_event_handler(Events.ITERATION_STARTED, self._name_image)
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda _: self.close())
        engine.add_event_handler(Events.COMPLETED, lambda _: self.close())

    def _name_image(self, engine: Any) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, dict) else {}
        paths = batch.get("image_path") or [""]
        name = os.path.basename(str(paths[0] if isinstance(paths, (list, tuple)) else paths))
        count = f"[{engine.state.iteration}/{engine.state.epoch_length}]" if engine.state.epoch_length else ""
        self.name = f"{count} {name}".strip()
