"""What makes the CPU path faster: each setting measured before and after on one sampling step.

A "step" here is one call of diffloom's denoiser (nodes.guidance: conditioning batched, CFG
combined) on a real UNet, which is all of a sampling step but the sampler's own update. "Before"
is without the setting, "after" with it. Each comparison is interleaved (A B, B A, ...) and
reported as before/after time ratios per round (> 1: the setting makes the step faster), on wall
time and on this process's CPU time; on a shared machine the CPU time is the steadier of the two.

    python bench/bench_cpu.py [--full] [--compile]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Interleaved, Stats, Variant, interleave, log, pyplot, save_figure, timed  # noqa: E402

import torch  # noqa: E402


@dataclass
class Comparison:
    """One setting, before and after."""

    title: str
    model: str
    before: str
    after: str
    runs: Interleaved
    default: str          # what diffloom does by default now
    verdict: str          # kept as default / made an option / measured, not changed

    @property
    def max_rel_diff(self) -> float | None:
        """How far apart the two settings' step outputs are, relative to their magnitude (last round)."""
        last = self.runs.rounds[-1] if self.runs.rounds else {}
        a, b = (last.get(n) for n in (self.before, self.after))
        if a is None or b is None or not isinstance(a.value, torch.Tensor) or not isinstance(b.value, torch.Tensor):
            return None
        if a.value.shape != b.value.shape:
            return None
        return float((a.value.float() - b.value.float()).abs().max() / b.value.float().abs().max())

    @property
    def wall_speedup(self) -> Stats:
        return self.runs.ratio(self.before, self.after, "wall")

    @property
    def cpu_speedup(self) -> Stats:
        return self.runs.ratio(self.before, self.after, "cpu")

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "model": self.model, "before": self.before, "after": self.after,
                "wall": {n: self.runs.wall(n).to_json() for n in self.runs.names},
                "cpu": {n: self.runs.cpu(n).to_json() for n in self.runs.names},
                "wall_speedup": self.wall_speedup.to_json(), "cpu_speedup": self.cpu_speedup.to_json(),
                "max_rel_diff": self.max_rel_diff, "default": self.default, "verdict": self.verdict}


class StepWorkload:
    """diffloom's denoiser on a bench model at one size, with conditioning encoded once."""

    def __init__(self, wrapped: Any, label: str, *, size: int, batch: int = 1, calls: int = 1) -> None:
        from nodes import text_nodes as T  # noqa: PLC0415
        from nodes.guidance import model_sampling  # noqa: PLC0415

        self.model, clip, _ = wrapped
        self.label = label
        self.calls = calls
        with self.model.use() as unet:  # placed on the compute device in the policy's dtype, and left there
            self.unet: torch.nn.Module = unet
        param = next(self.unet.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.positive = T.CLIPTextEncode(text="a photo of a cat", clip=clip)
        self.negative = T.CLIPTextEncode(text="blurry", clip=clip)
        self.ms = model_sampling(self.model)
        self.shape = (batch, 4, size // 8, size // 8)
        self.x = (torch.randn(self.shape, generator=torch.Generator().manual_seed(0)) * 3.0).to(self.device)
        self.sigma = torch.full((batch,), 3.0, device=self.device)

    def step(self, *, cfg: float = 5.0, unet: torch.nn.Module | None = None, dtype: torch.dtype | None = None,
             grad_mode: str = "inference") -> Callable[[], Any]:
        """A callable running `calls` denoiser calls with these settings."""
        from nodes.guidance import Guider  # noqa: PLC0415

        module = unet if unet is not None else self.unet
        guider = Guider(self.model, self.positive, self.negative, cfg)
        dtype = dtype or self.dtype

        def run() -> torch.Tensor:
            with _grad_mode(grad_mode):
                denoise = guider.denoiser(module, self.ms, self.shape, self.device, dtype)
                out = self.x
                for _ in range(self.calls):
                    out = denoise(self.x, self.sigma)
                return out

        return run


@contextlib.contextmanager
def _grad_mode(mode: str) -> Iterator[None]:
    if mode == "inference":
        with torch.inference_mode():
            yield
    elif mode == "no_grad":
        with torch.no_grad():
            yield
    else:
        raise ValueError(f"grad mode {mode!r} is not 'inference' or 'no_grad'")


@contextlib.contextmanager
def _model_option(model: Any, key: str, value: Any) -> Iterator[None]:
    had, old = key in model.model_options, model.model_options.get(key)
    model.model_options[key] = value
    try:
        yield
    finally:
        if had:
            model.model_options[key] = old
        else:
            model.model_options.pop(key, None)


def _with_option(model: Any, key: str, value: Any, fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with _model_option(model, key, value):
            return fn()
    return run


def _set_attention(unet: torch.nn.Module, classic: bool) -> Callable[[], None]:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0  # noqa: PLC0415

    return lambda: unet.set_attn_processor(AttnProcessor() if classic else AttnProcessor2_0())


def _set_layout(unet: torch.nn.Module, channels_last: bool) -> Callable[[], None]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return lambda: unet.to(memory_format=fmt)


def _set_threads(n: int) -> Callable[[], None]:
    return lambda: torch.set_num_threads(n)


def compare(work: StepWorkload, title: str, before: tuple[str, Variant], after: tuple[str, Variant], *,
            rounds: int, warmup: int, default: str, verdict: str,
            cleanup: Callable[[], None] | None = None) -> Comparison:
    log(f"- {title} on {work.label}: {before[0]} vs {after[0]}")
    try:
        runs = interleave({before[0]: before[1], after[0]: after[1]}, rounds, warmup=warmup, progress=log)
    finally:
        if cleanup is not None:
            cleanup()
    return Comparison(title, work.label, before[0], after[0], runs, default, verdict)


@dataclass
class Spec:
    """One comparison to run: its variants, how costly it is relative to one default step, what it decides."""

    title: str
    before: tuple[str, Variant]
    after: tuple[str, Variant]
    cost: float                      # (before + after) in default-step units
    default: str
    verdict: str
    cleanup: Callable[[], None] | None = None
    prepare: Callable[[], Callable[[], None]] | None = None  # builds extra state; returns its release


ORDER = ("bf16", "channels-last", "batched cond/uncond", "attention", "threads", "cfg=1 skips uncond", "autograd off")


def specs(work: StepWorkload) -> dict[str, Spec]:
    """Every setting of issue 9 that can be switched on one workload: `before` without it, `after` with it."""
    from nodes.guidance import BATCH_COND_UNCOND  # noqa: PLC0415

    threads = torch.get_num_threads()
    unet = work.unet
    out = {
        "autograd off": Spec("autograd off", ("no_grad", work.step(grad_mode="no_grad")),
                             ("inference_mode", work.step(grad_mode="inference")), 2.0,
                             "inference_mode around every sampler run", "default (it was already)"),
        "attention": Spec("attention", ("classic attention", (_set_attention(unet, True), work.step())),
                          ("SDPA", (_set_attention(unet, False), work.step())), 2.3,
                          "SDPA (diffusers' AttnProcessor2_0)", "default", cleanup=_set_attention(unet, False)),
        "cfg=1 skips uncond": Spec("cfg=1 skips uncond", ("cfg 5: cond + uncond", work.step(cfg=5.0)),
                                   ("cfg 1: cond only", work.step(cfg=1.0)), 1.6,
                                   "the unconditional pass is skipped when cfg is 1", "default"),
        "batched cond/uncond": Spec("batched cond/uncond",
                                    ("two UNet calls", _with_option(work.model, BATCH_COND_UNCOND, False, work.step())),
                                    ("one batched call", work.step()), 2.3, "cond and uncond in one UNet call",
                                    f"default; model_options['{BATCH_COND_UNCOND}'] = False is the option"),
        "channels-last": Spec("channels-last", ("contiguous", (_set_layout(unet, False), work.step())),
                              ("channels-last", (_set_layout(unet, True), work.step())), 2.6,
                              "contiguous (torch's default layout)", "option DIFFLOOM_CHANNELS_LAST=1",
                              cleanup=_set_layout(unet, False)),
    }
    if threads > 1 and work.device.type == "cpu":
        out["threads"] = Spec("threads", (f"{threads} threads", (_set_threads(threads), work.step())),
                              ("1 thread", (_set_threads(1), work.step())), 3.0,
                              f"torch's default ({threads} = the cores), with GOMP_SPINCOUNT=0",
                              "option DIFFLOOM_THREADS=N", cleanup=_set_threads(threads))
    if work.dtype == torch.float32:
        holder: dict[str, torch.nn.Module] = {}

        def prepare() -> Callable[[], None]:
            holder["bf16"] = copy.deepcopy(unet).to(torch.bfloat16)
            return holder.clear

        def bf16_step() -> Any:
            return work.step(unet=holder["bf16"], dtype=torch.bfloat16)()

        out["bf16"] = Spec("bf16", ("fp32 weights", work.step()), ("bf16 weights", bf16_step), 3.5,
                           "fp32 on the CPU", "option DIFFLOOM_DTYPE=bf16", prepare=prepare)
    return out


def run_comparisons(work: StepWorkload, *, rounds: int, warmup: int, titles: tuple[str, ...] = ORDER,
                    step_seconds: float | None = None,
                    allow: Callable[[float, str], bool] | None = None) -> list[Comparison]:
    """The comparisons named in `titles`, in that order; with `allow`, each runs only if its estimate fits."""
    table = specs(work)
    out: list[Comparison] = []
    for title in titles:
        spec = table.get(title)
        if spec is None:
            continue
        n = rounds
        if allow is not None and step_seconds is not None:
            # As many rounds as fit (at least one); a comparison is skipped only if not even one fits.
            n = next((r for r in range(rounds, 0, -1) if allow(spec.cost * step_seconds * (r + warmup), "")), 0)
            if n == 0:
                allow(spec.cost * step_seconds * (1 + warmup), f"{title} on {work.label}")  # records the skip
                continue
        release = spec.prepare() if spec.prepare is not None else None
        try:
            out.append(compare(work, spec.title, spec.before, spec.after, rounds=n, warmup=warmup,
                               default=spec.default, verdict=spec.verdict, cleanup=spec.cleanup))
        finally:
            if release is not None:
                release()
    return out


def compile_comparison(work: StepWorkload, *, rounds: int) -> tuple[Comparison, float]:
    """Eager vs torch.compile (inductor) on the same UNet; returns the comparison and the compile seconds."""
    compiled = torch.compile(work.unet)
    log(f"- torch.compile on {work.label}: compiling (minutes)...")
    first = timed(work.step(unet=compiled))
    log(f"  first compiled call (compile included): {first.wall:.1f} s")
    comparison = compare(work, "torch.compile", ("eager", work.step()), ("compiled", work.step(unet=compiled)),
                         rounds=rounds, warmup=1, default="eager", verdict="option DIFFLOOM_COMPILE=1")
    return comparison, first.wall


def markdown(comparisons: list[Comparison], compile_seconds: dict[str, float] | None = None) -> list[str]:
    lines = ["| setting | model | without (before) | with (after) | wall before | wall after | speed-up, wall | "
             "speed-up, CPU time | output change | default now | decision |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        diff = c.max_rel_diff
        lines.append(f"| {c.title} | {c.model} | {c.before} | {c.after} | {c.runs.wall(c.before).fmt(unit=' s')} | "
                     f"{c.runs.wall(c.after).fmt(unit=' s')} | **{c.wall_speedup.fmt(digits=2)}** | "
                     f"**{c.cpu_speedup.fmt(digits=2)}** | {_change(c.title, diff)} | "
                     f"{c.default} | {c.verdict} |")
    for label, seconds in (compile_seconds or {}).items():
        lines.append(f"\ntorch.compile on {label}: the first call (compiling) took {seconds:.0f} s.")
    return lines


def _change(title: str, diff: float | None) -> str:
    if title == "cfg=1 skips uncond":
        return "other guidance (by design)"
    return "-" if diff is None else f"{diff:.1e}"


def plot(comparisons: list[Comparison], path: Path) -> Path:
    """Horizontal bars: before/after time ratio per setting (CPU time, median and range)."""
    plt = pyplot()

    labels = [f"{c.title} ({c.model})\n{c.before} -> {c.after}" for c in comparisons]
    med = [c.cpu_speedup.median for c in comparisons]
    lo = [c.cpu_speedup.median - c.cpu_speedup.low for c in comparisons]
    hi = [c.cpu_speedup.high - c.cpu_speedup.median for c in comparisons]
    wall = [c.wall_speedup.median for c in comparisons]
    fig, ax = plt.subplots(figsize=(8.5, 0.55 * len(comparisons) + 1.5))
    y = list(range(len(comparisons)))
    colors = ["#66c2a5" if m >= 1.0 else "#fc8d62" for m in med]
    ax.barh(y, med, xerr=[lo, hi], color=colors, capsize=3, label="CPU time (median, range)")
    ax.scatter(wall, y, marker="x", color="k", zorder=3, label="wall time (median)")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ticks = [t for t in (0.25, 0.33, 0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0)
             if min(med + wall) * 0.8 <= t <= max(med + wall) * 1.25]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("speed-up: time without / time with the setting  (> 1: the setting is faster)")
    ax.set_title("CPU settings, one sampling step, without -> with", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also the full-size SD1.5 UNet at 256 px")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (minutes)")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    from bench.models import configure_runtime, full_checkpoint, load_full, tiny_model  # noqa: PLC0415

    configure_runtime(Path(tempfile.mkdtemp(prefix="diffloom-bench-")))
    comps = run_comparisons(StepWorkload(tiny_model(), "tiny SD1", size=64, calls=10), rounds=args.rounds, warmup=1)
    if args.full:
        work = StepWorkload(load_full(full_checkpoint()), "SD1.5 size", size=256)
        timed(work.step())
        comps += run_comparisons(work, rounds=2, warmup=0, titles=ORDER[:-1])
    compile_seconds = {}
    if args.compile:
        c, s = compile_comparison(StepWorkload(tiny_model(), "tiny SD1", size=64, calls=10), rounds=args.rounds)
        comps.append(c)
        compile_seconds["tiny SD1"] = s
    print("\n".join(markdown(comps, compile_seconds)))


if __name__ == "__main__":
    main()
