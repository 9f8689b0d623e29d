# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Measuring tools the benchmarks share: FLOPs counted by PyTorch, and a run in a fresh process (its own peak
memory). ``benchmark``, ``benchmark_job`` and ``benchmark_streaming`` import them from here, never each other's."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from typing import Any


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of everything ``fn`` runs, counted by ``torch.utils.flop_counter.FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def in_fresh_process(fn: Callable[..., dict], *args: Any) -> dict:
    """``fn(*args)`` in a new (spawned) Python process, so that its peak resident memory is its own."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)
