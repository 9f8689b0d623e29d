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


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def as_bool(value: object, name: str) -> bool:
    """``value`` as a bool; command lines deliver ``--tta false`` as the string "false", which ``bool()`` gets wrong."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise BundleInputError(name, f"must be true or false, got {value!r}", f"pass --{name} true or --{name} false")
