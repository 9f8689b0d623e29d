# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""A stand-in for torchvision, used only by tests/test_monailabel.py for the MONAI Label server it starts.

MONAI Label 0.8.5 imports ``torchvision.utils.make_grid`` and ``save_image`` when it loads any inference task
(``monailabel/transform/post.py``), but only its DeepEdit/visualisation transforms call them, which the
``monaibundle`` app never runs for this bundle. PyPI's Linux torchvision wheels are CUDA builds that cannot load
next to the CPU-only torch 2.13.0 this project pins (``libc10_cuda.so`` is missing), so the test puts this folder
first on the server's ``PYTHONPATH`` when the real ``import torchvision.utils`` fails. With a working torchvision
(a CUDA torch, or torch and torchvision from PyTorch's CPU index) the test uses the real one.
"""

__version__ = "0.0.0+stub"  # fails any version check, so optional imports treat torchvision as unavailable

from . import utils

__all__ = ["utils"]
