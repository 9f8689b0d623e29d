# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Command-line values that several ``python -m bundle`` commands read the same way: ``--overrides`` (flags for
another command) and lists of evaluation folders. ``cli`` and ``cross_validation`` both import them from here."""

from __future__ import annotations

from collections.abc import Sequence


def override_flags(overrides: str | Sequence[str] | bool, example: str) -> list[str]:
    """``--overrides``: flags for another command, as one shell-quoted string (or a list). fire reads a value that
    starts with -- as a flag of its own (``True`` here), so that is refused with ``example`` (e.g. ``--epochs 2``)."""
    import shlex

    from scripts.errors import BundleInputError

    if isinstance(overrides, bool):
        raise BundleInputError("--overrides", "got no value", f'join it with =: --overrides="{example}"')
    return shlex.split(overrides) if isinstance(overrides, str) else [str(f) for f in overrides]


def folders(patterns: tuple[str, ...] | str) -> list[str]:
    """Folders named by ``patterns`` (each a folder, a comma-separated list or a glob such as runs/cv/fold*), in
    sorted order within each glob; a glob that matches nothing is an error."""
    import glob

    from scripts.errors import BundleInputError

    names = [
        part for pattern in ([patterns] if isinstance(patterns, str) else patterns) for part in str(pattern).split(",")
    ]
    found: list[str] = []
    for name in filter(None, names):
        matches = sorted(glob.glob(name)) if glob.has_magic(name) else [name]
        if not matches:
            raise BundleInputError(name, "matches no folder", "give evaluate.json output folders, e.g. 'runs/cv/fold*'")
        found.extend(matches)
    return found
