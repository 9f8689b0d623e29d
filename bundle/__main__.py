# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""``python -m bundle <command>``: see ``python -m bundle --help``."""

from __future__ import annotations

import sys

import fire
from bundle.cli import COMMANDS
from scripts.errors import EXIT_INTERRUPTED, find_input_error, print_error, print_interrupted


def main() -> int:
    try:
        fire.Fire(COMMANDS, name="bundle")
    except KeyboardInterrupt:
        print_interrupted()
        return EXIT_INTERRUPTED
    except Exception as e:
        error = find_input_error(e)
        if error is None:
            raise
        print_error(error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
