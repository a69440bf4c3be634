"""Every GPU figure the project claims, from one command, with random full-size weights (no download).

    python benchmarks/gpu_suite.py --out runs/gpu-suite           # CUDA: SD1.5 size, 1024x768, 30 steps (<= 8 min)
    OMP_NUM_THREADS=1 python benchmarks/gpu_suite.py --tiny --out runs/gpu-suite-tiny   # tiny configs, any machine

Sections, in this order (each side by side in one process, ratios to the baseline measured in the same run):
1. try-on s/image, CFG 2.5, batch 1, fp16 and bf16: upstream-equivalent (2n-query attention, reference UNet on
   ``[zeros; reference]`` every step), our default, reference-once, torch.compile, torch.compile + reference-once;
   peak memory; the generative-UNet forward with n vs 2n queries (``attention_cost.compare``).
2. peak memory and time with ``--offload model`` / ``sequential`` and with attention slicing (fp16).
3. Leffa-loss training step vs diffusion-only: time and memory overhead (``leffa_loss.compare``, child processes).
4. ONNX Runtime with the CUDA and TensorRT execution providers, when installed (CPU provider in --tiny).

Writes ``DIR/gpu_suite.json`` (every figure, settings, environment) and ``DIR/gpu_suite.md`` (tables for
docs/benchmarks.md). Without CUDA (or with --tiny) the same code runs on the tiny configs at a small size, so the
suite is known to work the first time a GPU is there. A section that would start after ``--budget-s`` is recorded as
skipped rather than run.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts, imported as modules

import attention_cost
import leffa_loss
import onnx_backend
import sampler as sampler_bench

from leffa.environment import describe
from leffa.runtime import DTYPES, place_model
from leffa.sampler import SamplerOptions

FULL_BASE = sampler_bench.FULL
TINY_BASE = sampler_bench.TINY
Config = sampler_bench.Config

DEFAULT = Config("default")
UPSTREAM = Config("upstream-equivalent", upstream_attention=True, share_uncond=False)
TRYON_CONFIGS = [  # (label, sampler configuration, compiled)
    ("upstream-equivalent", UPSTREAM, False),
    ("default", Config("default"), False),
    ("reference-once", Config("reference-once", reference_once=True, exact=False), False),
    ("torch.compile", Config("torch.compile"), True),
    ("torch.compile + reference-once", Config("compile+once", reference_once=True, exact=False), True),
]
OFFLOAD_MODES = ("none", "model", "sequential")
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
GOALS = {
    "bf16_s_per_image": 1.0,
    "speedup_vs_upstream": 3.0,
    "loss_time_overhead": 0.15,
    "loss_memory_overhead": 0.10,
    "default_peak_gib": 8.0,
    "model_offload_peak_gib": 5.0,
}


@dataclass
class Settings:
    tiny: bool
    device: str
    base: str
    size: tuple[int, int]
    steps: int
    images: int
    dtypes: tuple[str, ...]
    compile_dtypes: tuple[str, ...]
    compile_backend: str
    attention_slice: int
    loss_steps: int
    loss_precision: str
    loss_checkpointing: bool
    budget_s: float
    onnx_min_left_s: float
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def settings_from(args) -> Settings:
    tiny = args.tiny or not torch.cuda.is_available()
    return Settings(
        tiny=tiny,
        device="cpu" if tiny else "cuda",
        base=str(TINY_BASE if tiny else FULL_BASE),
        size=(64, 48) if tiny else (1024, 768),
        steps=args.steps or (1 if tiny else 30),
        images=args.images or (1 if tiny else 2),
        dtypes=("bf16",) if tiny else ("fp16", "bf16"),  # tiny: the same code once; CPU fp16 convolutions are slow
        compile_dtypes=tuple(args.compile_dtypes.split(",")) if args.compile_dtypes else (),
        # Inductor on the CPU takes minutes even for the tiny UNets; the eager backend still runs the dynamo path.
        compile_backend="eager" if tiny else "inductor",
        attention_slice=args.attention_slice or (16 if tiny else 1024),
        loss_steps=1 if tiny else 5,
        loss_precision="no" if tiny else "bf16",
        loss_checkpointing=not tiny,
        budget_s=args.budget_s,
        onnx_min_left_s=0 if tiny else 150,
    )


# -- measuring ----------------------------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    """Peak allocated device memory since the last reset (weights included); ``None`` on the CPU."""
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def time_images(model, config: Config, settings: Settings, warmup_steps: int | None = None, count: int | None = None):
    """One warm-up image, then ``count`` (default ``settings.images``) timed ones: (figures, the timed images)."""
    count = count or settings.images
    synchronize(settings.device)
    start = time.perf_counter()
    sampler_bench.run_images(model, config, 1, settings.size, min(warmup_steps or settings.steps, settings.steps))
    synchronize(settings.device)
    warmup = time.perf_counter() - start
    reset_peak(settings.device)
    start = time.perf_counter()
    images = sampler_bench.run_images(model, config, count, settings.size, settings.steps)
    synchronize(settings.device)
    seconds = (time.perf_counter() - start) / count
    return {"s_per_image": seconds, "warmup_s": warmup, "peak_gib": peak_gib(settings.device)}, images


def build(settings: Settings, dtype: str, config: Config = DEFAULT):
    return sampler_bench.build(Path(settings.base), torch.device(settings.device), DTYPES[dtype], config)


# -- sections -----------------------------------------------------------------------------------------------------


def tryon_section(settings: Settings) -> dict:
    rows, attention = [], {}
    for dtype in settings.dtypes:
        model = build(settings, dtype)
        if dtype == settings.dtypes[0]:  # one generative-UNet forward with n vs 2n queries, on the eager model
            attention = attention_cost.compare(model, settings.size, 2, settings.device, 3 if settings.tiny else 5)
            attention["dtype"] = dtype
        baseline, compiled = None, False
        for label, config, needs_compile in TRYON_CONFIGS:
            row = {"dtype": dtype, "configuration": label, "exact": config.exact}
            if needs_compile and dtype not in settings.compile_dtypes:
                rows.append({**row, "skipped": "not compiled in this dtype (see --compile-dtypes)"})
                continue
            if needs_compile and not compiled:
                model.reference_unet.compile(backend=settings.compile_backend)
                model.generative_unet.compile(backend=settings.compile_backend)
                compiled = True
            model.set_upstream_equivalent_attention(config.upstream_attention)
            figures, images = time_images(model, config, settings)
            row.update(figures)
            if baseline is None:
                baseline = (figures["s_per_image"], images)
            row["speedup_vs_upstream"] = baseline[0] / figures["s_per_image"]
            row["max_abs_diff_vs_upstream"] = (images - baseline[1]).abs().max().item()
            rows.append(row)
        del model
        free(settings.device)
    return {"rows": rows, "attention": attention}


def memory_section(settings: Settings) -> dict:
    """Peak memory and time per image with each offload mode, and with attention slicing, in the first dtype."""
    dtype = settings.dtypes[0]
    rows, default_seconds = [], None
    variants = [(mode, mode, None) for mode in OFFLOAD_MODES]
    variants.append((f"attention slice {settings.attention_slice}", "none", settings.attention_slice))
    for label, mode, attention_slice in variants:
        model = build(settings, dtype)
        if mode != "none":
            model.to("cpu")
            place_model(model, torch.device(settings.device), DTYPES[dtype], offload=mode)
        model.set_attention_slice(attention_slice)
        free(settings.device)
        figures, _ = time_images(model, DEFAULT, settings, warmup_steps=2, count=1)  # offload runs are long
        default_seconds = default_seconds or figures["s_per_image"]
        rows.append(
            {"variant": label, "dtype": dtype, **figures, "time_vs_default": figures["s_per_image"] / default_seconds}
        )
        del model
        free(settings.device)
    return {"rows": rows}


def loss_section(settings: Settings) -> dict:
    results = leffa_loss.compare(
        Path(settings.base),
        settings.size,
        1,
        settings.loss_steps,
        settings.device,
        settings.loss_precision,
        settings.loss_checkpointing,
        ("diffusion", "fused"),
    )
    diffusion, fused = results
    summary = {"rows": results}
    if diffusion.get("seconds") and fused.get("seconds"):
        summary["time_overhead"] = fused["seconds"] / diffusion["seconds"] - 1
        summary["memory_overhead"] = (
            fused["step_bytes"] / diffusion["step_bytes"] - 1 if diffusion.get("step_bytes") else None
        )
    return summary


def onnx_section(settings: Settings, torch_seconds: float | None) -> dict:
    try:
        import onnxruntime
    except ImportError:
        return {"skipped": "onnxruntime is not installed (pip install 'leffa[gpu]')"}
    from leffa.export.graphs import ExportOptions, export_onnx

    available = set(onnxruntime.get_available_providers())
    wanted = ["CPUExecutionProvider"] if settings.tiny else [p for p in GPU_PROVIDERS if p in available]
    if not wanted:
        return {"skipped": f"no CUDA/TensorRT execution provider in this onnxruntime ({', '.join(sorted(available))})"}
    if settings.budget_s - settings.elapsed() < settings.onnx_min_left_s:
        return {"skipped": f"time budget: under {settings.onnx_min_left_s:.0f} s left for the full-size export"}
    dtype = "fp32" if settings.tiny else "fp16"
    model = build(settings, "fp32").to("cpu")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        export_onnx(model, folder, ExportOptions(dtype=dtype, height=settings.size[0], width=settings.size[1]))
        export_s = time.perf_counter() - start
        del model
        free(settings.device)
        for provider in wanted:
            if settings.budget_s - settings.elapsed() < settings.onnx_min_left_s:
                rows.append({"provider": provider, "skipped": "time budget"})
                continue
            onnx_model = onnx_backend.OnnxLeffaModel(folder, providers=[provider, "CPUExecutionProvider"])
            seconds, _ = onnx_backend.time_per_image(
                onnx_model, settings.images, SamplerOptions(steps=settings.steps), settings.size
            )
            rows.append(
                {
                    "provider": provider,
                    "dtype": dtype,
                    "s_per_image": seconds,
                    "vs_torch_default": seconds / torch_seconds if torch_seconds else None,
                }
            )
            del onnx_model
    return {"export_s": export_s, "rows": rows}


# -- report -------------------------------------------------------------------------------------------------------


def _num(value, digits=3, suffix="") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def markdown(report: dict) -> str:
    s = report["settings"]
    where = report["environment"].get("gpu") or f"{report['environment']['device']} (tiny run)"
    what = "Tiny configs" if s["tiny"] else "SD1.5-inpainting size, random weights"
    lines = [
        f"Command: `{report['command']}`",
        "",
        (
            f"Machine: {where}; torch {report['environment']['torch']}; total {report['total_s']:.0f} s. "
            f"{what}, {s['size'][0]}x{s['size'][1]}, {s['steps']} DDPM steps, CFG 2.5, batch 1, "
            f"{s['images']} timed image(s) after one warm-up."
        ),
        "",
    ]
    sections = report["sections"]
    for name, render in (("tryon", _tryon_md), ("memory", _memory_md), ("loss", _loss_md), ("onnx", _onnx_md)):
        if name in sections:
            lines += _skipped_md(name, sections[name]) if "skipped" in sections[name] else render(sections[name], s)
    lines += ["### Goals", ""] + [f"- {line}" for line in report["goals"]]
    return "\n".join(lines) + "\n"


TITLES = {
    "tryon": "Try-on",
    "memory": "Memory: offload and attention slicing",
    "loss": "Leffa loss in a training step (vs diffusion loss only)",
    "onnx": "ONNX Runtime",
}


def _skipped_md(name: str, section: dict) -> list[str]:
    return [f"### {TITLES[name]}", "", f"Skipped: {section['skipped']}", ""]


def _tryon_md(tryon: dict, s: dict) -> list[str]:
    lines = [f"### {TITLES['tryon']}", ""]
    lines += [
        (
            "| dtype | configuration | exact | s/image | speed-up vs upstream-equivalent | peak memory (GiB) | "
            "max abs diff vs upstream-equivalent |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in tryon["rows"]:
        if "skipped" in row:
            lines.append(f"| {row['dtype']} | {row['configuration']} | | skipped: {row['skipped']} | | | |")
            continue
        lines.append(
            f"| {row['dtype']} | {row['configuration']} | {'yes' if row['exact'] else 'no'} | "
            f"{row['s_per_image']:.3f} | {row['speedup_vs_upstream']:.2f}x | {_num(row['peak_gib'], 2)} | "
            f"{row['max_abs_diff_vs_upstream']:.2e} |"
        )
    attention = tryon.get("attention") or {}
    if attention:
        lines += [
            "",
            (
                f"Generative-UNet forward ({attention['dtype']}, batch 2, {attention['tokens']} tokens at "
                f"1/8): 2n queries {attention['upstream_s'] * 1e3:.1f} ms, n queries "
                f"{attention['ours_s'] * 1e3:.1f} ms, "
                f"**{attention['upstream_s'] / attention['ours_s']:.2f}x**, "
                f"max abs difference {attention['max_abs_diff']:.1e}."
            ),
        ]
    lines.append("")
    return lines


def _memory_md(memory: dict, s: dict) -> list[str]:
    lines = [f"### {TITLES['memory']}", ""]
    lines += ["| variant | dtype | peak memory (GiB) | s/image | time vs default |"]
    lines.append("| --- | --- | --- | --- | --- |")
    for row in memory["rows"]:
        lines.append(
            f"| {row['variant']} | {row['dtype']} | {_num(row['peak_gib'], 2)} | "
            f"{row['s_per_image']:.3f} | {row['time_vs_default']:.2f}x |"
        )
    lines.append("")
    return lines


def _loss_md(loss: dict, s: dict) -> list[str]:
    lines = [f"### {TITLES['loss']}", ""]
    lines.append(
        leffa_loss.report(
            f"{s['loss_precision']}, gradient checkpointing {s['loss_checkpointing']}, "
            f"median of {s['loss_steps']} steps",
            loss["rows"],
        ).split("\n", 2)[2]
    )
    if loss.get("time_overhead") is not None:
        memory_overhead = loss.get("memory_overhead")
        memory_text = "-" if memory_overhead is None else f"{memory_overhead:+.1%}"
        lines += [
            "",
            (f"Overhead: time {loss['time_overhead']:+.1%} (goal <= +15%), memory {memory_text} (goal <= +10%)."),
        ]
    lines.append("")
    return lines


def _onnx_md(onnx: dict, s: dict) -> list[str]:
    lines = [f"### {TITLES['onnx']}", ""]
    lines += [f"Export: {onnx['export_s']:.0f} s.", "", "| provider | dtype | s/image | vs torch default |"]
    lines.append("| --- | --- | --- | --- |")
    for row in onnx["rows"]:
        if "skipped" in row:
            lines.append(f"| {row['provider']} | | skipped: {row['skipped']} | |")
        else:
            lines.append(
                f"| {row['provider']} | {row['dtype']} | {row['s_per_image']:.3f} | "
                f"{_num(row['vs_torch_default'], 2, 'x')} |"
            )
    lines.append("")
    return lines


def goals(report: dict) -> list[str]:
    """The issue's GPU goals, each with the measured figure (only meaningful at full size)."""
    out = []
    rows = [r for r in report["sections"].get("tryon", {}).get("rows", []) if "s_per_image" in r]
    bf16 = [r["s_per_image"] for r in rows if r["dtype"] == "bf16"]
    if bf16:
        out.append(f"<= {GOALS['bf16_s_per_image']} s/image at bf16: best {min(bf16):.3f} s")
    exact = [r["speedup_vs_upstream"] for r in rows if r["configuration"] != "upstream-equivalent"]
    if exact:
        out.append(f">= {GOALS['speedup_vs_upstream']}x upstream-equivalent: best {max(exact):.2f}x")
    memory = {r["variant"]: r for r in report["sections"].get("memory", {}).get("rows", [])}
    for variant, key in (("none", "default_peak_gib"), ("model", "model_offload_peak_gib")):
        if variant in memory and memory[variant]["peak_gib"] is not None:
            out.append(
                f"peak <= {GOALS[key]} GB with offload {variant}: {memory[variant]['peak_gib']:.2f} GiB, "
                f"{memory[variant]['time_vs_default']:.2f}x the default's time"
            )
    loss = report["sections"].get("loss", {})
    if loss.get("time_overhead") is not None:
        out.append(f"Leffa loss <= +15% time: {loss['time_overhead']:+.1%}")
    if loss.get("memory_overhead") is not None:
        out.append(f"Leffa loss <= +10% memory: {loss['memory_overhead']:+.1%}")
    if report["settings"]["tiny"]:
        out.append("tiny run: the figures test the code path only, not the goals")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_suite.json and gpu_suite.md")
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (automatic without CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 30; tiny 1)")
    parser.add_argument("--images", type=int, default=None, help="timed images per configuration (default 2)")
    parser.add_argument(
        "--compile-dtypes",
        default="bf16",
        help="dtypes to torch.compile in (comma-separated; each costs about a minute of compiling)",
    )
    parser.add_argument("--attention-slice", type=int, default=None, help="queries per slice in the memory table")
    parser.add_argument("--budget-s", type=float, default=480.0, help="sections that would start later are skipped")
    parser.add_argument("--sections", default="tryon,memory,loss,onnx")
    args = parser.parse_args(argv)
    settings = settings_from(args)
    report = {
        "command": "python benchmarks/gpu_suite.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in asdict(settings).items() if k != "started"},
        "environment": describe(),
        "sections": {},
    }
    unknown = set(args.sections.split(",")) - {"tryon", "memory", "loss", "onnx"}
    if unknown:
        raise SystemExit(f"--sections: unknown section {min(unknown)!r}; choose from tryon,memory,loss,onnx")
    for name in args.sections.split(","):
        if settings.elapsed() > settings.budget_s:
            report["sections"][name] = {"skipped": f"time budget ({settings.budget_s:.0f} s) spent"}
            continue
        start = time.perf_counter()
        if name == "tryon":
            with torch.no_grad():
                result = tryon_section(settings)
        elif name == "memory":
            with torch.no_grad():
                result = memory_section(settings)
        elif name == "loss":
            result = loss_section(settings)  # child processes
        else:
            default = [
                r["s_per_image"]
                for r in report["sections"].get("tryon", {}).get("rows", [])
                if r["configuration"] == "default" and r["dtype"] == settings.dtypes[0] and "s_per_image" in r
            ]
            with torch.no_grad():
                result = onnx_section(settings, statistics.median(default) if default else None)
        result["seconds"] = time.perf_counter() - start
        report["sections"][name] = result
        print(f"{name}: {result['seconds']:.0f} s", file=sys.stderr, flush=True)
    report["total_s"] = settings.elapsed()
    report["goals"] = goals(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_suite.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / "gpu_suite.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
