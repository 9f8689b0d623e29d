# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""``python -m bundle benchmark``: how close inference and training run to this machine's measured limits.

Every figure comes from one run, so ratios between rows are what to compare (these machines are noisy).
On the CPU each inference variant runs in a fresh process, so its peak resident memory (RSS) is its own; on a
CUDA GPU the rows share one process and report the peak memory PyTorch allocated on the GPU for that row.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from bundle.measure import count_flops, in_fresh_process

INFERENCE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "inference.json"
FULL = (64, 128, 256, 512, 1024)
VARIANTS = (
    "fp32", "bf16", "channels_last", "channels_last+bf16", "bn_folded", "bn_folded+channels_last", "bn_folded+channels_last+bf16",
    "compile",
)  # fmt: skip
# On a CUDA GPU: strict fp32 (TF32 off), TF32 tensor cores, bf16, and torch.compile of inference.json's default.
CUDA_VARIANTS = (
    "fp32", "tf32", "bf16", "channels_last+bf16", "bn_folded+channels_last", "bn_folded+channels_last+tf32",
    "bn_folded+channels_last+bf16", "bn_folded+channels_last+bf16+compile",
)  # fmt: skip


def inference_defaults(config: Path = INFERENCE_CONFIG) -> dict[str, Any]:
    """The keys of configs/inference.json that decide inference speed: ``features`` (the shipped width),
    ``fold_batch_norm``, ``channels_last``, ``precision`` and ``sw_batch_size``."""
    settings = json.loads(Path(config).read_text())
    keys = ("features", "fold_batch_norm", "channels_last", "precision", "sw_batch_size")
    return {key: settings[key] for key in keys}


def default_variant(native: bool, config: Path = INFERENCE_CONFIG) -> str:
    """The :data:`VARIANTS` name of what inference.json does on a CPU with (``native``) or without native bf16."""
    defaults = inference_defaults(config)
    bf16 = defaults["precision"] == "bf16" or (defaults["precision"] == "auto" and native)
    flags = (("bn_folded", defaults["fold_batch_norm"]), ("channels_last", defaults["channels_last"]), ("bf16", bf16))
    return "+".join(name for name, on in flags if on) or "fp32"


def with_bf16(variant: str) -> str:
    """``variant`` under bf16 autocast: ``"fp32"`` -> ``"bf16"``, ``"bn_folded"`` -> ``"bn_folded+bf16"``."""
    return "bf16" if variant == "fp32" else variant.removesuffix("+bf16") + "+bf16"


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA runs asynchronously), so a timer reads the real duration."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision_of(variant: str) -> str:
    """The arithmetic a variant computes in: "bf16", "tf32" (CUDA tensor cores on float32 data) or "fp32"."""
    return next((p for p in ("bf16", "tf32") if p in variant), "fp32")


@contextmanager
def cuda_tf32(enabled: bool) -> Iterator[None]:
    """Allow (or forbid) TF32 tensor cores for CUDA matmuls and cuDNN convolutions inside the block.

    PyTorch's own default is TF32 on for cuDNN convolutions and off for matmuls, so "fp32" rows switch it off
    to measure strict fp32 and "tf32" rows switch it on for both.
    """
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def matmul_peak(precision: str, device: torch.device | None = None, seconds: float = 1.5) -> float:
    """Sustained GFLOP/s of an ``n x n`` matrix product in ``precision`` ("fp32", "bf16", or "tf32" on CUDA):
    the machine's practical peak.

    ``n`` doubles from 256 up to 2048 (8192 on a GPU) while one product takes under 0.05 s, so a dtype the CPU
    only emulates (bf16 on AVX2: about 0.3 GFLOP/s, two minutes for one 2048 product) is measured in seconds too.
    """
    device = device or torch.device("cpu")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    max_n = 8192 if device.type == "cuda" else 2048
    with cuda_tf32(precision == "tf32"):
        warm = torch.randn(256, 256, dtype=dtype, device=device)
        warm @ warm  # library start-up (cuBLAS handles) must not count as the time of the first product
        n = 256
        while True:
            a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
            synchronize(device)
            start = time.perf_counter()
            a @ b
            synchronize(device)
            if n >= max_n or time.perf_counter() - start > 0.05:
                break
            n *= 2
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(10 if device.type == "cuda" else 1):
                a @ b
                count += 1
            synchronize(device)
        return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def _inference_run(
    features: Sequence[int],
    variant: str,
    sections: int,
    size: int,
    roi: int,
    overlap: float,
    tta: bool,
    sw_batch_size: int | str = "auto",
    device: str = "cpu",
    passes: int = 2,
) -> dict[str, float]:
    """One variant in this process: seconds per section (the fastest of ``passes`` timed passes over the
    sections, since noise on shared machines only ever adds time), GFLOP counted, peak memory (RSS on the CPU,
    allocated GPU memory on CUDA)."""
    from scripts.fusionnet import FusionNet
    from scripts.inferers import MembraneInferer, prepare_network

    dev = torch.device(device)
    torch.manual_seed(0)
    network = FusionNet(features=features).eval()
    x = torch.rand(1, 1, sections, size, size, device=dev)
    network = prepare_network(network, dev, channels_last="channels_last" in variant, fold_bn="bn_folded" in variant)
    if "compile" in variant:
        network = torch.compile(network)
    precision = precision_of(variant)
    inferer = MembraneInferer(
        roi_size=(roi, roi), sw_batch_size=sw_batch_size, overlap=overlap, tta=tta,
        precision="bf16" if precision == "bf16" else "fp32",
    )  # fmt: skip
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with torch.inference_mode(), cuda_tf32(precision == "tf32"):
        warm = time.perf_counter()
        inferer(x[:, :, :1], network)  # warm-up (and compilation)
        synchronize(dev)
        warm = time.perf_counter() - warm
        times = []
        for _ in range(passes):
            start = time.perf_counter()
            inferer(x, network)
            synchronize(dev)
            times.append(time.perf_counter() - start)
        seconds = min(times) / sections
        flops = count_flops(lambda: inferer(x[:, :, :1], network)) if "compile" not in variant else float("nan")
    if dev.type == "cuda":
        memory = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds_per_section": seconds,
        "warmup_seconds": warm,
        "gflop_per_section": flops / 1e9,
        "peak_memory_mb": memory,
    }


def training_overhead(
    features: Sequence[int],
    batch: int,
    patch: int,
    steps: int,
    precision: str = "bf16",
    channels_last: bool = True,
    device: str = "cpu",
    rounds: int = 3,
) -> dict[str, float]:
    """Seconds per step of the bundle's Ignite ``SupervisedTrainer`` vs a bare PyTorch loop on identical batches
    (already on ``device``), both with train.json's memory format (``channels_last``); the fastest of ``rounds``
    alternating rounds of each."""
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer
    from monai.losses import DiceCELoss
    from scripts.fusionnet import FusionNet
    from scripts.inferers import AutocastInferer, prepare_network

    dev = torch.device(device)
    torch.manual_seed(0)
    batches = [
        {"image": torch.rand(batch, 1, patch, patch), "label": (torch.rand(batch, 1, patch, patch) > 0.8).float()}
        for _ in range(steps + 1)
    ]
    batches = [{key: value.to(dev) for key, value in b.items()} for b in batches]
    inferer = AutocastInferer(precision)

    def clock() -> float:
        synchronize(dev)
        return time.perf_counter()

    def bare() -> float:
        network = prepare_network(FusionNet(features=features), dev, channels_last)
        optimizer, loss = torch.optim.Adam(network.parameters(), 1e-3), DiceCELoss(sigmoid=True)
        network.train()
        for i, b in enumerate(batches):
            if i == 1:
                start = clock()
            optimizer.zero_grad()
            loss(inferer(b["image"], network), b["label"]).backward()
            optimizer.step()
        return (clock() - start) / steps

    def ignite() -> float:
        network = prepare_network(FusionNet(features=features), dev, channels_last)
        trainer = SupervisedTrainer(
            device=dev, max_epochs=1, train_data_loader=batches, network=network,
            optimizer=torch.optim.Adam(network.parameters(), 1e-3), loss_function=DiceCELoss(sigmoid=True),
            inferer=inferer,
        )  # fmt: skip
        start: list[float] = []  # one clock read (and GPU synchronisation), as the bare loop has
        trainer.add_event_handler(Events.ITERATION_STARTED(once=2), lambda e: start.append(clock()))
        trainer.run()
        return (clock() - start[0]) / steps

    # alternating rounds, best of each: the first loop to run otherwise also pays the process's warm-up, and the
    # best of three is steadier on a shared machine than the best of two
    times = [(bare(), ignite()) for _ in range(rounds)]
    bare_s, ignite_s = min(t[0] for t in times), min(t[1] for t in times)
    return {
        "precision": precision,
        "channels_last": channels_last,
        "bare_seconds_per_step": bare_s,
        "ignite_seconds_per_step": ignite_s,
        "overhead_pct": 100 * (ignite_s / bare_s - 1),
    }


def inference_plan(
    widths: dict[str, Sequence[int]],
    variants: Sequence[str],
    native: bool,
    size: int,
    roi: int,
    overlap: float,
    cuda: bool = False,
) -> list[tuple[str, Sequence[int], str, int, float, bool]]:
    """Rows to measure: ``(width name, features, variant, roi, overlap, tta)``.

    Every variant at the shipped width; at the others plain fp32 and bf16 (and TF32 on CUDA) and inference.json's
    layout (:func:`default_variant`) in both; one whole-section window; and TTA in the fastest precision. Where
    bf16 is only emulated (:func:`scripts.inferers.native_bf16`) there are no bf16 rows: emulated bf16
    convolutions run 60-100x slower than fp32 (one shipped-width 512x512 row takes many minutes), and the matmul
    peaks already show the penalty.
    """
    fast = "bf16" if native else "fp32"
    shipped_variants = [v for v in variants if native or "bf16" not in v]
    layout = default_variant(False)
    other_variants = ("fp32", layout, "bf16", with_bf16(layout)) if native else ("fp32", layout)
    if cuda:
        other_variants = ("fp32", "tf32", *other_variants[1:])
    plan = [
        (name, f, v, roi, overlap, False)
        for name, f in widths.items()
        for v in (shipped_variants if name == "shipped" else other_variants)
    ]
    shipped = widths["shipped"]
    return plan + [("shipped", shipped, "fp32", size, 0.0, False), ("shipped", shipped, fast, roi, overlap, True)]


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on: the device's name, PyTorch's version and threads, native bf16."""
    from scripts.inferers import native_bf16

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "device": name, "threads": torch.get_num_threads(), "torch": torch.__version__, "native_bf16": native_bf16(device),
        "memory": "peak GPU memory allocated" if device.type == "cuda" else "peak RSS of a fresh process",
    }  # fmt: skip


def run_benchmark(
    sections: int = 2,
    size: int = 512,
    roi: int = 256,
    overlap: float = 0.25,
    full_width: bool = True,
    variants: Sequence[str] | None = None,
    train_patch: int = 256,
    train_batch: int = 8,
    train_steps: int | None = None,
    widths: dict[str, Sequence[int]] | None = None,
    device: str = "cpu",
    job_sections: int = 30,
) -> dict[str, Any]:
    """Measure everything on ``device`` ("cpu" or "cuda"); returns a JSON-able dict (see :func:`format_table`).

    ``variants`` defaults to :data:`VARIANTS` on the CPU and :data:`CUDA_VARIANTS` on CUDA; ``train_steps`` to 3
    on the CPU and 20 on CUDA. ``job_sections`` sections of ``size`` go through the whole inference job
    (``bundle.benchmark_job``; 0 skips it).
    """
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    defaults = inference_defaults()
    widths = dict(widths or {"shipped": tuple(defaults["features"]), **({"full": FULL} if full_width else {})})
    machine = machine_info(dev)
    native = machine["native_bf16"]
    precisions = ("fp32", "tf32", "bf16") if cuda else ("fp32", "bf16")
    report: dict[str, Any] = {
        "machine": machine,
        "default_variant": default_variant(native),
        "peak_gflops": {p: matmul_peak(p, dev) for p in precisions},
        "inference": [],
    }
    fast = "bf16" if native else "fp32"
    plan = inference_plan(widths, variants or (CUDA_VARIANTS if cuda else VARIANTS), native, size, roi, overlap, cuda)
    for name, features, variant, r, o, tta in plan:
        r = min(r, size)
        args = (tuple(features), variant, sections, size, r, o, tta, defaults["sw_batch_size"], device)
        row = _inference_run(*args) if cuda else in_fresh_process(_inference_run, *args)
        gflops = row["gflop_per_section"] / row["seconds_per_section"]
        row.update(
            width=name, variant=variant + (" +tta" if tta else ""), roi=r, overlap=o,
            megavoxels_per_s=size * size / row["seconds_per_section"] / 1e6, achieved_gflops=gflops,
            fraction_of_peak=gflops / report["peak_gflops"][precision_of(variant)],
        )  # fmt: skip
        report["inference"].append(row)
        print(
            f"measured {name} {row['variant']} roi {r}: {row['seconds_per_section']:.4f} s/section, {gflops:.0f} GFLOP/s "
            f"({row['fraction_of_peak']:.0%} of peak), {row['peak_memory_mb']:.0f} MB", file=sys.stderr,
        )  # fmt: skip
    windowed = [r for r in report["inference"] if r["width"] == "shipped" and r["roi"] == min(roi, size)]
    seconds = {r["variant"]: r["seconds_per_section"] for r in windowed}
    base = next(r for r in windowed if r["variant"] == "fp32")
    one_window = next(
        r for r in report["inference"] if r["width"] == "shipped" and r["roi"] == size and r["overlap"] == 0.0
    )
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
        "tf32_speedup": speedup("fp32", "tf32"),
        "compile_speedup": speedup(report["default_variant"], report["default_variant"] + "+compile"),
    }
    steps = train_steps or (20 if cuda else 3)
    report["training"] = training_overhead(widths["shipped"], train_batch, train_patch, steps, fast, device=device)
    if job_sections:
        from bundle.benchmark_job import job_benchmark

        report["job"] = job_benchmark(report["peak_gflops"], native, defaults["features"], job_sections, size)
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    peak = report["peak_gflops"]
    machine = report["machine"]
    lines = [
        f"{machine['device']}, torch {machine['torch']}, {machine['threads']} threads; measured matmul peak: "
        + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in peak.items())
        + f" (bf16/fp32 {peak['bf16'] / peak['fp32']:.2f}x, bf16 {'native' if machine['native_bf16'] else 'emulated'});"
        f" memory: {machine['memory']}",
        f"{'width':8} {'variant':40} {'roi':>4} {'ovl':>5} {'s/section':>10} {'Mvox/s':>7} {'GFLOP/sect':>10} "
        f"{'GFLOP/s':>8} {'of peak':>8} {'mem MB':>7}",
    ]
    for r in report["inference"]:
        lines.append(
            f"{r['width']:8} {r['variant']:40} {r['roi']:>4} {r['overlap']:>5.2f} {r['seconds_per_section']:>10.4f} "
            f"{r['megavoxels_per_s']:>7.3f} {r['gflop_per_section']:>10.1f} {r['achieved_gflops']:>8.1f} "
            f"{r['fraction_of_peak']:>8.1%} {r['peak_memory_mb']:>7.0f}"
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
        *(
            f"{label}: {ratios[key]:.2f}x"
            for key, label in (("tf32_speedup", "TF32 speed-up over strict fp32"),
                               ("compile_speedup", "torch.compile speed-up of the default (after warm-up)"))
            if ratios.get(key)
        ),  # fmt: skip
        f"training step ({train['precision']}, channels_last {train['channels_last']}): "
        f"bare loop {train['bare_seconds_per_step']:.3f} s, Ignite SupervisedTrainer "
        f"{train['ignite_seconds_per_step']:.3f} s, overhead {train['overhead_pct']:+.1f}%",
    ]
    if "job" in report:
        from bundle.benchmark_job import format_job

        lines.append(format_job(report["job"]))
    return "\n".join(lines)
