# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The FusionNet EM segmentation bundle's Python package, imported by the configs in ``configs/``.

Importing it installs a ``sys.excepthook`` that prints a :class:`~scripts.errors.BundleInputError` (a problem
the user can fix: a missing file, a bad override) as one line instead of MONAI's traceback wall; any other
error keeps its full traceback. Ctrl-C (``KeyboardInterrupt``) prints one line too, and the process then ends as
Python ends an interrupted program, by SIGINT (exit status 130 in the shell); results already written are
complete, and the one being written is discarded. It also keeps such errors' tracebacks out of the log: MONAI's
``StatsHandler`` logs every exception of a run with its traceback (to stdout), which would bury the one-line
error. Set ``FUSIONNET_TRACEBACK=1`` to see full tracebacks for all errors.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from . import checkpoint, data, errors, inferers, instances, io, morphology, transforms, writers
from .errors import INTERRUPTED, BundleInputError, find_input_error, print_error, print_interrupted
from .fusionnet import FusionNet

__all__ = [
    "FusionNet",
    "BundleInputError",
    "checkpoint",
    "data",
    "errors",
    "inferers",
    "instances",
    "io",
    "morphology",
    "transforms",
    "writers",
]


def _concise_excepthook(exc_type, exc, tb, _previous=sys.excepthook):  # type: ignore[no-untyped-def]
    if issubclass(exc_type, KeyboardInterrupt) and not os.environ.get("FUSIONNET_TRACEBACK"):
        print_interrupted()
        return
    error = find_input_error(exc)
    if error is None or os.environ.get("FUSIONNET_TRACEBACK"):
        _previous(exc_type, exc, tb)
        return
    print_error(error)


if not getattr(sys.excepthook, "_fusionnet", False):
    _concise_excepthook._fusionnet = True  # type: ignore[attr-defined]
    sys.excepthook = _concise_excepthook


def _without_input_error_tracebacks(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """A log record factory that drops the traceback of a record whose exception is a ``BundleInputError`` (or
    Ctrl-C) and logs the one-line message instead (the excepthook prints it again when the run stops)."""

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if not record.exc_info or os.environ.get("FUSIONNET_TRACEBACK"):
            return record
        error = find_input_error(record.exc_info[1])
        if error is not None:
            record.msg, record.args, record.exc_info, record.exc_text = f"stopped: {error}", (), None, None
        elif isinstance(record.exc_info[1], KeyboardInterrupt):
            record.msg, record.args, record.exc_info, record.exc_text = f"stopped: {INTERRUPTED}", (), None, None
        return record

    make_record._fusionnet = True  # type: ignore[attr-defined]
    return make_record


if not getattr(logging.getLogRecordFactory(), "_fusionnet", False):
    logging.setLogRecordFactory(_without_input_error_tracebacks(logging.getLogRecordFactory()))
