# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Refusing override keys that no config defines, e.g. a misspelt ``--dataset_dri x``.

MONAI adds any key given to ``python -m monai.bundle run`` to the config without a word, so a misspelt key is
ignored and the run goes on with the default (inference segments the shipped sample instead of the user's data).
The workflow configs therefore call :func:`check_command_line` first in ``initialize``: it reads the flags of the
``monai.bundle run`` command line and refuses any whose top-level key none of the ``--config_file`` files (nor
``monai.bundle run`` itself) defines, naming the closest known key. ``python -m bundle`` checks its flags the same
way (:func:`check_override_keys`) before it calls MONAI.

Keys are taken from the command line, not from the parsed config, because MONAI keeps no record of which of the
config's keys came from overrides; override files given in ``--config_file`` (``configs/inference_dask.json``, ...)
define their keys, so layering them stays legal, and workflows built in Python (MONAI Label's tasks, the tests)
have no command line to check.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import BundleInputError

#: Keys of ``monai.bundle run`` / ``run_workflow`` themselves (and of the MLflow tracking they can add), which are
#: not keys of the config.
RUN_KEYS = frozenset(
    {
        "run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file",
        "workflow_name", "workflow_type", "properties_path", "tracking_uri", "experiment_name", "run_name",
        "save_execute_config",
    }
)  # fmt: skip

#: The subcommands of ``python -m monai.bundle`` that run a config with overrides.
_RUN_COMMANDS = ("run", "run_workflow")
# a flag as fire reads one: "--name", "--name=value" or "-n"; "-1" and "-0.5" are values
_FLAG = re.compile(r"^(--|-[a-zA-Z])")


def check_override_keys(
    config_file: str | Sequence[str], overrides: Mapping[str, Any], extra_keys: Iterable[str] = ()
) -> None:
    """Refuse an override that names no top-level key of ``config_file`` (merged, if a list) nor of ``extra_keys``.

    For ``a#b#c`` overrides only ``a`` is checked: MONAI creates missing sub-keys, and ids inside a component are
    checked when it is built.

    Raises:
        BundleInputError: for the first unknown key, e.g. ``--epoch: is not a setting of train.json, so it would be
            ignored. Fix: did you mean --epochs?``
    """
    from monai.bundle import ConfigParser

    files = [config_file] if isinstance(config_file, (str, os.PathLike)) else list(config_file)
    known = set(ConfigParser.load_config_files([str(f) for f in files])) | set(extra_keys) | RUN_KEYS | {"_meta_"}
    for key in overrides:
        top = str(key).split("#")[0]
        if top in known:
            continue
        names = ", ".join(Path(f).name for f in files)
        close = difflib.get_close_matches(top, sorted(known - RUN_KEYS), n=1)
        fix = f"did you mean --{close[0]}?" if close else f"use a top-level key of {names} (or key#subkey)"
        raise BundleInputError(f"--{key}", f"is not a setting of {names}, so it would be ignored", fix)


def command_line_flags(args: Sequence[str]) -> dict[str, str | None]:
    """The ``--name value`` flags of a fire command line (after the subcommand), values as typed.

    As fire reads them: ``--name=value`` and ``--name value``; a flag followed by another flag (or by nothing) is a
    boolean (None here); hyphens in names are underscores; a bare ``--`` ends the command's arguments (fire's own
    flags follow it). Positional arguments (``run_id``) are left out.
    """
    flags: dict[str, str | None] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            break
        if not _FLAG.match(arg):
            continue
        name, equals, value = arg.lstrip("-").partition("=")
        if equals:
            flags[name.replace("-", "_")] = value
        elif i < len(args) and not _FLAG.match(args[i]):
            flags[name.replace("-", "_")] = args[i]
            i += 1
        else:
            flags[name.replace("-", "_")] = None
    return flags


def _is_monai_bundle_run(argv: Sequence[str]) -> bool:
    """Whether ``argv`` is ``python -m monai.bundle run ...`` (or ``run_workflow``), as ``torchrun`` starts it too."""
    if len(argv) < 2 or argv[1] not in _RUN_COMMANDS:
        return False
    main = Path(argv[0])
    return main.name == "__main__.py" and main.parent.name == "bundle" and main.parent.parent.name == "monai"


def check_command_line(argv: Sequence[str] | None = None) -> bool:
    """Refuse the flags of a ``python -m monai.bundle run`` command line that no config file of its
    ``--config_file`` (nor its ``--args_file``, nor ``run`` itself) defines; the first entry of the workflow configs'
    ``initialize``. Anything else (``python -m bundle``, which checks its flags itself, MONAI Label, Python) passes.

    Args:
        argv: the command line; default ``sys.argv``.

    Returns:
        True (``initialize`` lists the results of its entries).

    Raises:
        BundleInputError: naming the unknown flag and the closest known key (:func:`check_override_keys`).
    """
    from fire.parser import DefaultParseValue
    from monai.bundle import ConfigParser

    argv = sys.argv if argv is None else argv
    if not _is_monai_bundle_run(argv):
        return True
    typed = command_line_flags(argv[2:])
    # --args_file holds defaults for run's arguments and overrides, which the command line overrides in turn
    args_file = typed.get("args_file")
    flags: dict[str, Any] = dict(ConfigParser.load_config_file(args_file)) if args_file else {}
    flags.update(typed)
    config_file = flags.get("config_file")
    if not config_file:
        return True  # MONAI itself refuses a run without a config
    if isinstance(config_file, str):
        config_file = DefaultParseValue(config_file)  # "['a.json','b.json']" is a list, as fire reads it
    check_override_keys(config_file, flags, _tracking_keys(flags.get("tracking")))
    return True


def _tracking_keys(tracking: object) -> set[str]:
    """The config keys that ``--tracking`` (``mlflow``, or a settings file) adds, which may be overridden too."""
    from monai.bundle import ConfigParser
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

    if not tracking:
        return set()
    if isinstance(tracking, str) and tracking in DEFAULT_EXP_MGMT_SETTINGS:
        return set(DEFAULT_EXP_MGMT_SETTINGS[tracking].get("configs", {}))
    try:
        return set(ConfigParser.load_config_files(tracking).get("configs", {}))
    except Exception:  # MONAI reports an unreadable tracking file itself
        return set()
