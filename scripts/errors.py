# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The one exception type the bundle raises for problems a user can fix."""

from __future__ import annotations


class BundleInputError(ValueError):
    """Bad input (file, folder, shape, dtype, config value). The message names the culprit and the fix."""

    def __init__(self, what: str, problem: str, fix: str) -> None:
        self.what = str(what)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{what}: {problem}. Fix: {fix}")
