# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The two names MONAI Label imports from ``torchvision.utils``; calling either says the stub is in use."""

from __future__ import annotations

from typing import Any


def make_grid(*args: Any, **kwargs: Any) -> Any:
    """Not available: this is the test stub of torchvision (see the package docstring)."""
    raise NotImplementedError("torchvision stub (tests/monailabel_stub): install a torchvision that matches torch")


def save_image(*args: Any, **kwargs: Any) -> None:
    """Not available: this is the test stub of torchvision (see the package docstring)."""
    raise NotImplementedError("torchvision stub (tests/monailabel_stub): install a torchvision that matches torch")
