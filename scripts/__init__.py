# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The FusionNet EM segmentation bundle's Python package, imported by the configs in ``configs/``.

Importing it installs a ``sys.excepthook`` that prints a :class:`~scripts.errors.BundleInputError` (a problem
the user can fix: a missing file, a bad override) as one line instead of MONAI's traceback wall; any other
error keeps its full traceback. Set ``FUSIONNET_TRACEBACK=1`` to see full tracebacks for all errors.
"""

from __future__ import annotations

import os
import sys

from . import checkpoint, data, errors, inferers, instances, io, morphology, transforms, writers
from .errors import BundleInputError, find_input_error
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
    error = find_input_error(exc)
    if error is None or os.environ.get("FUSIONNET_TRACEBACK"):
        _previous(exc_type, exc, tb)
        return
    print(f"error: {error}", file=sys.stderr)


if not getattr(sys.excepthook, "_fusionnet", False):
    _concise_excepthook._fusionnet = True  # type: ignore[attr-defined]
    sys.excepthook = _concise_excepthook
