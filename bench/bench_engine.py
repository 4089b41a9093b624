"""Engine overhead: the same txt2img through diffloom's executor and through diffusers' pipeline.

Both run on the same modules, seed, schedule and steps, interleaved (A B, B A, ...). Reported:
the ratio of wall times and of time per step, each as the median of per-round ratios with its
range, plus a decomposition that is far less noisy on a shared machine: forward hooks time every
UNet call, so each step splits into UNet time (the same module doing the same work in both engines)
and the engine's own time around it (guidance, scheduler, previews, events). The decomposed ratio
is (UNet median + diffloom's own time) / (UNet median + diffusers' own time).

    python bench/bench_engine.py [--full] [--rounds N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Interleaved, Stats, interleave, log, pyplot, save_figure  # noqa: E402

import torch  # noqa: E402
from bench.models import (LAST_LATENT, DiffusersPipe, Diffloom, StepClock, UNetTimer,  # noqa: E402
                          bench_registry, check_same_work, configure_runtime, txt2img_prompt)


@dataclass
class EngineFigures:
    """What one engine comparison found; per-step figures in wall time and in CPU time."""

    label: str
    steps: int
    size: int
    decode: bool
    runs: Interleaved
    clocks: dict[str, list[StepClock]]
    parity_rel: float | None

    def step(self, engine: str, clock: str = "wall") -> Stats:
        """Time per step of each run (median and range over runs)."""
        return Stats.of([c.per_step(clock) for c in self.clocks[engine]])

    def own(self, engine: str, clock: str = "wall") -> Stats:
        """The engine's own time per step (outside the UNet), per run."""
        return Stats.of([c.own_per_step(clock) for c in self.clocks[engine]])

    def unet(self, clock: str = "wall", engine: str | None = None) -> Stats:
        """UNet time per step over the runs of both engines (the same module doing the same work), or of one."""
        engines = [engine] if engine else list(self.clocks)
        return Stats.of([c.unet_per_step(clock) for e in engines for c in self.clocks[e]])

    def step_ratio(self, clock: str = "wall") -> Stats:
        """Per-round ratio diffloom / diffusers of the time per step."""
        return Stats.of([a.per_step(clock) / b.per_step(clock)
                         for a, b in zip(self.clocks["diffloom"], self.clocks["diffusers"])])

    def decomposed_ratio(self, clock: str = "wall") -> float:
        u = self.unet(clock).median
        return (u + self.own("diffloom", clock).median) / (u + self.own("diffusers", clock).median)

    @property
    def unet_input_difference(self) -> float:
        """How far apart the UNet inputs of the two engines were on the first step of the last round."""
        return self.clocks["diffloom"][-1].input_difference(self.clocks["diffusers"][-1])

    @property
    def wall_ratio(self) -> Stats:
        return self.runs.ratio("diffloom", "diffusers")

    def to_json(self) -> dict[str, Any]:
        engines = ("diffloom", "diffusers")
        return {"label": self.label, "steps": self.steps, "size": self.size, "decode": self.decode,
                "wall": {n: self.runs.wall(n).to_json() for n in engines},
                "cpu": {n: self.runs.cpu(n).to_json() for n in engines},
                "wall_ratio": self.wall_ratio.to_json(),
                **{f"{clock}_clock": {"step": {n: self.step(n, clock).to_json() for n in engines},
                                      "own": {n: self.own(n, clock).to_json() for n in engines},
                                      "unet": self.unet(clock).to_json(),
                                      "step_ratio": self.step_ratio(clock).to_json(),
                                      "decomposed_ratio": self.decomposed_ratio(clock)}
                   for clock in ("wall", "cpu")},
                "parity_rel": self.parity_rel, "unet_input_difference": self.unet_input_difference}


def compare(wrapped: Any, model_name: str, label: str, *, steps: int, size: int, rounds: int, decode: bool,
            cfg: float = 5.0, parity: bool = True, warmup_steps: int = 1) -> EngineFigures:
    """Interleaved diffloom / diffusers txt2img on one bench model (warm-up runs use `warmup_steps`)."""
    from nodes.preview import preview_image  # noqa: PLC0415

    registry = bench_registry()
    ours = Diffloom(registry)
    theirs = DiffusersPipe(wrapped)
    timer = UNetTimer(theirs.pipe.unet)
    clocks: dict[str, list[StepClock]] = {"diffloom": [], "diffusers": []}

    def run_ours(n: int) -> None:
        timer.clock = StepClock()
        ours.run(txt2img_prompt(model_name, steps=n, size=size, cfg=cfg, decode=decode), timer.clock)
        clocks["diffloom"].append(timer.clock)

    last: dict[str, Any] = {}

    def run_theirs(n: int) -> None:
        timer.clock = StepClock()
        last["diffusers"] = theirs.run(steps=n, size=size, cfg=cfg, decode=decode, clock=timer.clock)
        clocks["diffusers"].append(timer.clock)

    try:
        # Decoded runs are checked apart (cheap on the tiny model); latent runs compare their own last outputs.
        parity_diff = check_same_work(wrapped, registry, steps=2, size=size) if parity and decode else None
        # Warm-up, untimed: one short diffusers run warms the modules at these shapes, and diffloom's
        # latent preview is fitted once (a small VAE decode diffloom does on its first run of a model).
        run_theirs(warmup_steps)
        preview_image(wrapped.model, torch.zeros(1, 4, size // 8, size // 8))
        for name in clocks:
            clocks[name].clear()
        runs = interleave({"diffloom": lambda: run_ours(steps), "diffusers": lambda: run_theirs(steps)}, rounds,
                          warmup=0, progress=log)
    finally:
        timer.remove()
    if parity and not decode:
        ours_latent = LAST_LATENT["samples"].float().cpu()
        theirs_latent = (last["diffusers"] / theirs.vae_module.config.scaling_factor).float().cpu()
        parity_diff = float((ours_latent - theirs_latent).abs().max() / theirs_latent.abs().max())
    return EngineFigures(label, steps, size, decode, runs, clocks, parity_diff)


def markdown(figures: list[EngineFigures]) -> list[str]:
    """The engine-overhead tables of the report."""
    lines = ["| model | work | wall diffloom | wall diffusers | wall ratio | step diffloom | step diffusers | "
             "**step ratio** (wall) | step ratio (CPU time) | same UNet inputs (max rel. diff) | "
             "same result (max rel. diff) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in figures:
        work = f"{f.size} px, {f.steps} steps, cfg 5, {'decoded to an image' if f.decode else 'to the latent'}"
        lines.append(
            f"| {f.label} | {work} | {f.runs.wall('diffloom').fmt(unit=' s')} | {f.runs.wall('diffusers').fmt(unit=' s')} | "
            f"**{f.wall_ratio.fmt(digits=3)}** | {f.step('diffloom').fmt(1e3, 1, ' ms')} | "
            f"{f.step('diffusers').fmt(1e3, 1, ' ms')} | **{f.step_ratio().fmt(digits=3)}** | "
            f"{f.step_ratio('cpu').fmt(digits=3)} | {f.unet_input_difference:.1e} | "
            f"{'-' if f.parity_rel is None else f'{f.parity_rel:.1e}'} |")
    lines += ["", "Decomposition (per step; UNet time is common to both engines, own time is everything else in the "
              "sampling loop):", "",
              "| model | clock | UNet per step, both | UNet in diffloom | UNet in diffusers | own diffloom | "
              "own diffusers | **decomposed ratio** |", "|---|---|---|---|---|---|---|---|"]
    for f in figures:
        for clock, unit in (("wall", "ms"), ("cpu", "CPU-ms")):
            lines.append(f"| {f.label} | {clock} | {f.unet(clock).fmt(1e3, 1, ' ' + unit)} | "
                         f"{f.unet(clock, 'diffloom').median * 1e3:.1f} {unit} | "
                         f"{f.unet(clock, 'diffusers').median * 1e3:.1f} {unit} | "
                         f"{f.own('diffloom', clock).fmt(1e3, 2, ' ' + unit)} | "
                         f"{f.own('diffusers', clock).fmt(1e3, 2, ' ' + unit)} | **{f.decomposed_ratio(clock):.4f}** |")
    return lines


def plot(figures: list[EngineFigures], path: Path) -> Path:
    """Stacked bars per model: UNet time and the engine's own time per step, for each engine."""
    plt = pyplot()

    fig, axes = plt.subplots(1, len(figures), figsize=(4.4 * len(figures), 4.0), squeeze=False)
    names = ["diffloom", "diffusers"]
    for ax, f in zip(axes[0], figures):
        scale, unit = (1.0, "s") if f.unet().median > 1.0 else (1e3, "ms")
        unet = [f.unet().median * scale] * 2
        own = [f.own(n).median * scale for n in names]
        ax.bar(names, unet, color="#8da0cb", label="UNet (same module, same work)")
        ax.bar(names, own, bottom=unet, color="#fc8d62", label="engine's own time")
        for i, n in enumerate(names):
            st = f.step(n)
            ax.errorbar(i, st.median * scale, yerr=[[(st.median - st.low) * scale], [(st.high - st.median) * scale]],
                        fmt="k_", capsize=6, label="measured step: median, range" if i == 0 else None)
        ax.set_title(f"{f.label}, {f.size} px\nstep ratio {f.step_ratio().median:.3f} "
                     f"(range {f.step_ratio().low:.2f}-{f.step_ratio().high:.2f}), "
                     f"decomposed {f.decomposed_ratio():.4f}", fontsize=9)
        ax.set_xticks([0, 1], [f"{n}\nown time {f.own(n).median * 1e3:.2f} ms/step" for n in names])
        ax.set_ylabel(f"{unit} per step (wall)")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Time per sampling step: diffloom vs diffusers on the same modules", fontsize=11)
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also the full-size SD1.5 at 256 px (slow)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--full-rounds", type=int, default=3)
    args = parser.parse_args()
    from bench.models import full_checkpoint, load_full, tiny_model  # noqa: PLC0415

    configure_runtime(Path(tempfile.mkdtemp(prefix="diffloom-bench-")))
    figures = [compare(tiny_model(), "tiny", "tiny SD1", steps=10, size=64, rounds=args.rounds, decode=True)]
    if args.full:
        figures.append(compare(load_full(full_checkpoint()), "full", "SD1.5 size", steps=2, size=256,
                               rounds=args.full_rounds, decode=False))
    print("\n".join(markdown(figures)))


if __name__ == "__main__":
    main()
