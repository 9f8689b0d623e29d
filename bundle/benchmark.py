# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""``python -m bundle benchmark``: how close inference and training run to this machine's measured limits.

Every figure comes from one run, so ratios between rows are what to compare (these machines are noisy).
Each inference variant runs in a fresh process, so its peak resident memory (RSS) is its own.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

INFERENCE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "inference.json"
FULL = (64, 128, 256, 512, 1024)
VARIANTS = (
    "fp32", "bf16", "channels_last", "channels_last+bf16", "bn_folded", "bn_folded+channels_last", "bn_folded+channels_last+bf16",
    "compile",
)  # fmt: skip


def inference_defaults(config: Path = INFERENCE_CONFIG) -> dict[str, Any]:
    """The keys of configs/inference.json that decide inference speed: ``features`` (the shipped width),
    ``fold_batch_norm``, ``channels_last`` and ``precision``."""
    settings = json.loads(Path(config).read_text())
    return {key: settings[key] for key in ("features", "fold_batch_norm", "channels_last", "precision")}


def default_variant(native: bool, config: Path = INFERENCE_CONFIG) -> str:
    """The :data:`VARIANTS` name of what inference.json does on a CPU with (``native``) or without native bf16."""
    defaults = inference_defaults(config)
    bf16 = defaults["precision"] == "bf16" or (defaults["precision"] == "auto" and native)
    flags = (("bn_folded", defaults["fold_batch_norm"]), ("channels_last", defaults["channels_last"]), ("bf16", bf16))
    return "+".join(name for name, on in flags if on) or "fp32"


def with_bf16(variant: str) -> str:
    """``variant`` under bf16 autocast: ``"fp32"`` -> ``"bf16"``, ``"bn_folded"`` -> ``"bn_folded+bf16"``."""
    return "bf16" if variant == "fp32" else variant.removesuffix("+bf16") + "+bf16"


def matmul_peak(dtype: torch.dtype, max_n: int = 2048, seconds: float = 1.5) -> float:
    """Sustained GFLOP/s of an ``n x n`` matrix product in ``dtype`` (the machine's practical peak).

    ``n`` doubles from 256 up to ``max_n`` while one product takes under 0.05 s, so a dtype the CPU only emulates
    (bf16 on AVX2: about 0.3 GFLOP/s, two minutes for one 2048 product) is measured in seconds too.
    """
    n = 256
    while True:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        start = time.perf_counter()
        a @ b
        if n >= max_n or time.perf_counter() - start > 0.05:
            break
        n *= 2
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of everything ``fn`` runs, counted by ``torch.utils.flop_counter.FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _inference_run(
    features: Sequence[int], variant: str, sections: int, size: int, roi: int, overlap: float, tta: bool
) -> dict[str, float]:
    """One variant in this process: seconds per section, GFLOP counted, peak RSS."""
    from scripts.fusionnet import FusionNet
    from scripts.inferers import MembraneInferer, prepare_network

    torch.manual_seed(0)
    network = FusionNet(features=features).eval()
    x = torch.rand(1, 1, sections, size, size)
    network = prepare_network(network, "cpu", channels_last="channels_last" in variant, fold_bn="bn_folded" in variant)
    if variant == "compile":
        network = torch.compile(network)
    inferer = MembraneInferer(
        roi_size=(roi, roi), overlap=overlap, tta=tta, precision="bf16" if "bf16" in variant else "fp32"
    )
    with torch.inference_mode():
        warm = time.perf_counter()
        inferer(x[:, :, :1], network)  # warm-up (and compilation)
        warm = time.perf_counter() - warm
        start = time.perf_counter()
        inferer(x, network)
        seconds = (time.perf_counter() - start) / sections
        flops = count_flops(lambda: inferer(x[:, :, :1], network)) if variant != "compile" else float("nan")
    return {
        "seconds_per_section": seconds,
        "warmup_seconds": warm,
        "gflop_per_section": flops / 1e9,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def in_fresh_process(fn: Callable[..., dict], *args: Any) -> dict:
    """``fn(*args)`` in a new (spawned) Python process, so that its peak resident memory is its own."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def training_overhead(
    features: Sequence[int], batch: int, patch: int, steps: int, precision: str = "bf16", channels_last: bool = True
) -> dict[str, float]:
    """Seconds per step of the bundle's Ignite ``SupervisedTrainer`` vs a bare PyTorch loop on identical batches,
    both with train.json's memory format (``channels_last``); the faster of two alternating rounds of each."""
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer
    from monai.losses import DiceCELoss

    from scripts.fusionnet import FusionNet
    from scripts.inferers import AutocastInferer, prepare_network

    torch.manual_seed(0)
    batches = [
        {"image": torch.rand(batch, 1, patch, patch), "label": (torch.rand(batch, 1, patch, patch) > 0.8).float()}
        for _ in range(steps + 1)
    ]
    inferer = AutocastInferer(precision)

    def bare() -> float:
        network = prepare_network(FusionNet(features=features), "cpu", channels_last)
        optimizer, loss = torch.optim.Adam(network.parameters(), 1e-3), DiceCELoss(sigmoid=True)
        network.train()
        for i, b in enumerate(batches):
            if i == 1:
                start = time.perf_counter()
            optimizer.zero_grad()
            loss(inferer(b["image"], network), b["label"]).backward()
            optimizer.step()
        return (time.perf_counter() - start) / steps

    def ignite() -> float:
        network = prepare_network(FusionNet(features=features), "cpu", channels_last)
        trainer = SupervisedTrainer(
            device=torch.device("cpu"), max_epochs=1, train_data_loader=batches, network=network,
            optimizer=torch.optim.Adam(network.parameters(), 1e-3), loss_function=DiceCELoss(sigmoid=True),
            inferer=inferer,
        )  # fmt: skip
        times: list[float] = []
        trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: times.append(time.perf_counter()))
        trainer.run()
        return (time.perf_counter() - times[1]) / steps

    # two rounds, alternating, best of each: the first loop to run otherwise also pays the process's warm-up
    rounds = [(bare(), ignite()) for _ in range(2)]
    bare_s, ignite_s = min(r[0] for r in rounds), min(r[1] for r in rounds)
    return {
        "precision": precision,
        "channels_last": channels_last,
        "bare_seconds_per_step": bare_s,
        "ignite_seconds_per_step": ignite_s,
        "overhead_pct": 100 * (ignite_s / bare_s - 1),
    }


def inference_plan(
    widths: dict[str, Sequence[int]], variants: Sequence[str], native: bool, size: int, roi: int, overlap: float
) -> list[tuple[str, Sequence[int], str, int, float, bool]]:
    """Rows to measure: ``(width name, features, variant, roi, overlap, tta)``.

    Every variant at the shipped width; at the others plain fp32 and bf16 and inference.json's layout
    (:func:`default_variant`) in both; one whole-section window; and TTA in the fastest precision. Where bf16 is
    only emulated (:func:`scripts.inferers.native_bf16`) there are no bf16 rows: emulated bf16 convolutions run
    60-100x slower than fp32 (one shipped-width 512x512 row takes many minutes), and the matmul peaks already show
    the penalty.
    """
    fast = "bf16" if native else "fp32"
    shipped_variants = [v for v in variants if native or "bf16" not in v]
    layout = default_variant(False)
    other_variants = ("fp32", layout, "bf16", with_bf16(layout)) if native else ("fp32", layout)
    plan = [
        (name, f, v, roi, overlap, False)
        for name, f in widths.items()
        for v in (shipped_variants if name == "shipped" else other_variants)
    ]
    shipped = widths["shipped"]
    return plan + [("shipped", shipped, "fp32", size, 0.0, False), ("shipped", shipped, fast, roi, overlap, True)]


def run_benchmark(
    sections: int = 2,
    size: int = 512,
    roi: int = 256,
    overlap: float = 0.25,
    full_width: bool = True,
    variants: Sequence[str] = VARIANTS,
    train_patch: int = 256,
    train_batch: int = 8,
    train_steps: int = 3,
    widths: dict[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Measure everything; returns a JSON-able dict (see :func:`format_table`)."""
    from scripts.inferers import native_bf16

    shipped = tuple(inference_defaults()["features"])
    widths = dict(widths or {"shipped": shipped, **({"full": FULL} if full_width else {})})
    native = native_bf16(torch.device("cpu"))
    report: dict[str, Any] = {
        "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__, "native_bf16": native},
        "default_variant": default_variant(native),
        "peak_gflops": {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)},
        "inference": [],
    }
    fast = "bf16" if native else "fp32"
    plan = inference_plan(widths, variants, native, size, roi, overlap)
    for name, features, variant, r, o, tta in plan:
        r = min(r, size)
        row = in_fresh_process(_inference_run, tuple(features), variant, sections, size, r, o, tta)
        peak = report["peak_gflops"]["bf16" if "bf16" in variant else "fp32"]
        gflops = row["gflop_per_section"] / row["seconds_per_section"]
        row.update(
            width=name, variant=variant + (" +tta" if tta else ""), roi=r, overlap=o,
            megavoxels_per_s=size * size / row["seconds_per_section"] / 1e6, achieved_gflops=gflops,
            fraction_of_peak=gflops / peak,
        )  # fmt: skip
        report["inference"].append(row)
        print(f"measured {name} {row['variant']} roi {r}: {row['seconds_per_section']:.3f} s/section", file=sys.stderr)
    windowed = [r for r in report["inference"] if r["width"] == "shipped" and r["roi"] == min(roi, size)]
    seconds = {r["variant"]: r["seconds_per_section"] for r in windowed}
    base = next(r for r in windowed if r["variant"] == "fp32")
    one_window = next(r for r in report["inference"] if r["width"] == "shipped" and r["roi"] == size and r["overlap"] == 0.0)
    tta_row = next(r for r in report["inference"] if r["variant"].endswith("+tta"))
    layout = default_variant(False)

    def speedup(slow: str, fast: str) -> float | None:
        return seconds[slow] / seconds[fast] if slow in seconds and fast in seconds else None

    report["ratios"] = {
        "default_speedup": speedup("fp32", report["default_variant"]),
        "sliding_window_flop_waste": base["gflop_per_section"] / one_window["gflop_per_section"],
        "tta_cost": tta_row["seconds_per_section"] / seconds["bf16" if "bf16" in seconds else "fp32"],
        "bf16_speedup": speedup("fp32", "bf16"),
        "bf16_speedup_default_layout": speedup(layout, with_bf16(layout)),
    }
    report["training"] = training_overhead(widths["shipped"], train_batch, train_patch, train_steps, fast)
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    peak = report["peak_gflops"]
    lines = [
        f"measured matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s "
        f"(bf16/fp32 {peak['bf16'] / peak['fp32']:.2f}x, bf16 {'native' if report['machine']['native_bf16'] else 'emulated'}),"
        f" {report['machine']['threads']} threads",
        f"{'width':8} {'variant':32} {'roi':>4} {'ovl':>5} {'s/section':>10} {'Mvox/s':>7} {'GFLOP/sect':>10} "
        f"{'GFLOP/s':>8} {'of peak':>8} {'RSS MB':>7}",
    ]
    for r in report["inference"]:
        lines.append(
            f"{r['width']:8} {r['variant']:32} {r['roi']:>4} {r['overlap']:>5.2f} {r['seconds_per_section']:>10.3f} "
            f"{r['megavoxels_per_s']:>7.3f} {r['gflop_per_section']:>10.1f} {r['achieved_gflops']:>8.1f} "
            f"{r['fraction_of_peak']:>8.1%} {r['peak_rss_mb']:>7.0f}"
        )
    ratios, train = report["ratios"], report["training"]
    lines += [
        f"sliding-window FLOP waste (roi {report['inference'][0]['roi']}, overlap {report['inference'][0]['overlap']} vs "
        f"one window): {ratios['sliding_window_flop_waste']:.2f}x",
        f"inference default ({report['default_variant']}) speed-up over plain fp32: "
        + (f"{ratios['default_speedup']:.2f}x" if ratios["default_speedup"] else "not measured"),
        f"TTA cost: {ratios['tta_cost']:.2f}x one pass; bf16 speed-up over fp32: "
        + (
            f"{ratios['bf16_speedup']:.2f}x plain, {ratios['bf16_speedup_default_layout']:.2f}x in the default layout"
            if ratios["bf16_speedup"] and ratios["bf16_speedup_default_layout"]
            else "not measured (bf16 is emulated here)"
        ),
        f"training step ({train['precision']}, channels_last {train['channels_last']}): bare loop {train['bare_seconds_per_step']:.3f} s, Ignite SupervisedTrainer "
        f"{train['ignite_seconds_per_step']:.3f} s, overhead {train['overhead_pct']:+.1f}%",
    ]
    return "\n".join(lines)


