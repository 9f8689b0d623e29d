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


def find_input_error(exc: BaseException | None) -> BundleInputError | None:
    """The first ``BundleInputError`` in ``exc``'s cause/context chain (MONAI wraps config errors), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BundleInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
