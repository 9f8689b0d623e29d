# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The one exception type the bundle raises for problems a user can fix."""

from __future__ import annotations

import re
import sys


class BundleInputError(ValueError):
    """Bad input (file, folder, shape, dtype, config value). The message names the culprit and the fix."""

    def __init__(self, what: str, problem: str, fix: str) -> None:
        # all three go to ValueError's args, so the error pickles (DataLoader workers, Dask) and copies whole
        super().__init__(str(what), problem, fix)
        self.what, self.problem, self.fix = str(what), problem, fix

    def __str__(self) -> str:
        return f"{self.what}: {self.problem}. Fix: {self.fix}"


# the last line of a worker's traceback text: "scripts.errors.BundleInputError: <what>: <problem>. Fix: <fix>"
_WORKER_LINE = re.compile(r"^(?:[\w.]+\.)?BundleInputError: (.+)$", re.MULTILINE)


def _chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and its causes (or contexts), outermost first, each once."""
    chain: list[BaseException] = []
    while exc is not None and all(exc is not e for e in chain):
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _from_worker_text(exc: BaseException) -> BundleInputError | None:
    """The error a DataLoader worker process raised: PyTorch re-raises it in the main process as a RuntimeError
    whose message is the worker's traceback text, so only the text is left."""
    lines = _WORKER_LINE.findall(str(exc))
    head, sep, fix = lines[-1].rpartition(". Fix: ") if lines else ("", "", "")
    if not sep:
        return None
    what, _, problem = head.partition(": ")
    return BundleInputError(what, problem, fix)


def find_input_error(exc: BaseException | None) -> BundleInputError | None:
    """The first ``BundleInputError`` in ``exc``'s cause/context chain (MONAI wraps config errors), or None.

    An error raised in a DataLoader worker process (``--num_workers`` > 0) reaches the main process only as
    traceback text; it is rebuilt from that text.
    """
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, BundleInputError):
            return e
    for e in chain:
        error = _from_worker_text(e)
        if error is not None:
            return error
    return None


def print_error(error: BundleInputError) -> None:
    """Print ``error: <what>: <problem>. Fix: <fix>`` to stderr on a line of its own.

    Progress bars still open when a run stops (Ignite's ``ProgressBar``) are closed first, so the line does not
    start in the middle of one.
    """
    _close_progress_bars()
    print(f"error: {error}", file=sys.stderr)


def _close_progress_bars() -> None:
    try:
        from tqdm import tqdm

        for bar in list(getattr(tqdm, "_instances", [])):
            bar.close()
    except Exception:  # a progress bar must never hide the error itself
        pass


INTERRUPTED = "interrupted (Ctrl-C); finished result files are complete, the one being written was discarded"
#: The exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def print_interrupted() -> None:
    """Print ``error: interrupted ...`` on a line of its own (progress bars closed first, as :func:`print_error`)."""
    _close_progress_bars()
    print(f"error: {INTERRUPTED}", file=sys.stderr)


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
