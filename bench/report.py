"""Write bench/results.md, bench/results.json and the plots from what bench/run.py measured."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from bench.budget import Budget

MB = 1 << 20


def _start_up(start: dict[str, Any] | None) -> list[str]:
    """The server's start: to listening, then its worker's import of the model libraries in the background."""
    if not start:
        return []
    warm = start.get("warm_up_s")
    after = (f"; its worker then imported the model libraries (diffusers, transformers) in {warm:.1f} s before "
             "taking the first prompt, whose time above includes what of that was left") if warm is not None else ""
    return [f"The server process was listening {start['to_listening_s']:.2f} s after it started{after}.", ""]


def _img(name: str) -> str:
    return f"![{name}]({name})"


def _machine(m: dict[str, Any]) -> list[str]:
    device = m.get("device", "?")
    gpu = f" ({m['gpu']})" if m.get("gpu") else ""
    note = {"cpu": "CPU: no GPU was found (or --cpu); everything below ran on the CPU.",
            "cuda": "CUDA GPU: the same code ran with the GPU dtype of nodes.device (fp16, bf16 on Ampere+).",
            "mps": "Apple MPS: the same code ran in fp16."}.get(str(device).split(":")[0], "")
    rows = [("device", f"**{device}**{gpu} - {note}"), ("dtype (UNet, text encoder) / VAE", f"{m.get('dtype')} / {m.get('vae_dtype')}"),
            ("CPU", f"{m.get('cpu')}, {m.get('cores')} cores; AVX-512 {m.get('avx512')}, avx512_bf16 "
                    f"{m.get('avx512_bf16')}, AMX {m.get('amx')}"),
            ("torch threads (intra / inter-op)", f"{m.get('torch_threads')} / {m.get('interop_threads')}; "
                                                 f"GOMP_SPINCOUNT={m.get('GOMP_SPINCOUNT')!r}"),
            ("versions", f"python {m.get('python')}, torch {m.get('torch')}, diffusers {m.get('diffusers')}, "
                         f"transformers {m.get('transformers')}"),
            ("load average (1 min) at start / end", f"{m.get('load_average_start')} / {m.get('load_average_end')} "
                                                    f"on {m.get('cores')} cores")]
    return ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]


def _engine_full(objects: dict[str, Any]) -> Any:
    return next((f for f in objects.get("engine", []) if f.label == "SD1.5 size"), None)


def _summary(res: Any, budget: Budget, seconds: float) -> list[str]:
    lines = ["| done criterion | measured | verdict |", "|---|---|---|"]
    full = _engine_full(res.objects)
    if full is not None:
        wall, cpu = full.step_ratio(), full.step_ratio("cpu")
        dw, dc = full.decomposed_ratio(), full.decomposed_ratio("cpu")
        ok = dw <= 1.02 and dc <= 1.02
        noisy = wall.high - wall.low > 0.04 or cpu.high - cpu.low > 0.04
        same = full.unet_input_difference < 1e-4
        unet_cpu = full.unet("cpu")
        caveat = (f"; the raw side-by-side ratios move by more than the 2% being tested from round to round (the "
                  f"same UNet call took {unet_cpu.low:.1f}-{unet_cpu.high:.1f} CPU-s), so they can neither confirm "
                  f"nor refute it") if noisy else ""
        lines.append(f"| full-size time per step, diffloom / diffusers <= 1.02 | decomposed {dw:.4f} (wall), {dc:.4f} "
                     f"(CPU time): diffloom's own time {full.own('diffloom', 'cpu').median * 1e3:.1f} CPU-ms per step "
                     f"against diffusers' {full.own('diffusers', 'cpu').median * 1e3:.1f}, around a "
                     f"{unet_cpu.median:.1f} CPU-s UNet call that gets the same inputs from both"
                     f"{'' if same else ' (inputs differ!)'}; raw side by side {wall.fmt(digits=3)} (wall), "
                     f"{cpu.fmt(digits=3)} (CPU time) | {'**met**' if ok and same else '**not met**'}{caveat} |")
    else:
        lines.append("| full-size time per step <= 1.02 | not measured in this run | - |")
    http = next((c for c in res.objects.get("cache", []) if c.path == "HTTP API"), None)
    if http is not None:
        t = http.times["unchanged"]
        lines.append(f"| unchanged re-run through the HTTP API < 50 ms | {t.fmt(1e3, 1, ' ms')} | "
                     f"{'**met**' if t.median < 0.050 else '**not met**'}"
                     f"{' (median; the slowest run was over)' if t.median < 0.050 <= t.high else ''} |")
    mem = res.objects.get("memory_prompts")
    if mem is not None:
        from bench.bench_memory import budget_bytes  # noqa: PLC0415

        n = len(mem.rss)
        start = max(mem.filled_at(budget_bytes()) or 1, n // 2)
        growth = mem.growth_after(start) / MB
        lines.append(f"| memory flat over 100 distinct prompts | RSS {mem.rss[0] / MB:,.0f} MB after the first, "
                     f"{mem.rss[-1] / MB:,.0f} MB after the last; {growth:+.1f} MB from prompt {start} to {n} | "
                     f"{'**met**' if abs(growth) < 50 else '**not met**'} |")
    lines.append(f"| `make bench` under 20 minutes | {seconds / 60:.1f} min (budget {budget.seconds / 60:.0f} min) | "
                 f"{'**met**' if seconds < 1200 else '**not met**'} |")
    return lines


def write_report(res: Any, budget: Budget, out: Path, seconds: float, argv: list[str] | None = None) -> Path:
    from bench import bench_cache, bench_cpu, bench_engine, bench_memory, bench_scaling, bench_server  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    m = res.data["machine"]
    now = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    md: list[str] = [
        "# diffloom benchmarks", "",
        f"Written by `make bench` (`python bench/run.py{' ' + ' '.join(argv) if argv else ''}`) on {now}, in "
        f"{seconds / 60:.1f} minutes. Every ratio is measured side by side in this run (variants interleaved "
        "A B, B A, ...) and given as *median (lowest-highest, n=runs)*; absolute times on this shared machine are "
        "noise. Where the CPU time of the process (steady: it counts work, not waiting) and the wall time disagree, "
        "the machine was busy with other work. How to read and reproduce all of this: docs/performance.md.", "",
        "## Machine", "", *_machine(m), "",
        "## Summary", "", *_summary(res, budget, seconds), ""]
    if res.errors:
        md += ["**Sections that failed in this run** (their figures are missing):", ""]
        md += [f"- {name}: `{err.strip().splitlines()[-1]}`" for name, err in res.errors.items()] + [""]
    if budget.skipped:
        md += ["**Skipped to stay within the time budget:** " + "; ".join(budget.skipped) + ".", ""]

    engines = res.objects.get("engine", [])
    if engines:
        md += ["## 1. Engine overhead: diffloom vs diffusers on the same modules", "",
               "The same txt2img (same modules, seed, Euler on ComfyUI's `simple` schedule, cfg 5) through "
               "diffloom's executor (the default graph; output cache off so both do all the work every run) and "
               "through diffusers' `StableDiffusionPipeline`. *Same UNet inputs* compares the tensors the UNet "
               "received from each engine on the first step (sample, timestep, text embeddings; cond/uncond batch "
               "order aside) and *same result* the final latents, both relative to their magnitude: the engines "
               "hand the UNet the same work, so a difference between their UNet times can only be the machine's "
               "noise. The full-size runs "
               "stop at the latent in both engines (the VAE decode is the same module call in both and would add "
               "~4-10 s of identical work to each run).", "",
               *bench_engine.markdown(engines), "", _img(bench_engine.plot(engines, out / "engine.png").name), "",
               "A step's *own time* is everything in the sampling loop except the UNet call: diffloom's guidance "
               "(conditioning batching, CFG), the sampler update, the latent preview and the progress event; "
               "diffusers' scheduler step and CFG. The decomposed ratio combines the UNet time measured in both "
               "engines with each engine's own time, which removes most of the machine's noise; the side-by-side "
               "ratio is the raw measurement.", ""]
    ex = res.data.get("executor")
    if ex:
        md += ["## 2. Executor: 1,000 trivial nodes", "",
               "`bench/bench_executor.py` (10 parallel chains of `Inc` nodes; the nodes cost well under a "
               "microsecond, so the times are the engine's own). Median of 5.", "",
               "| measure | time | per node |", "|---|---|---|",
               f"| validation | {ex['validate_s'] * 1e3:.1f} ms | {ex['per_node_validate_us']:.1f} us |",
               f"| execution (validation included), output cache on | {ex['execute_s'] * 1e3:.1f} ms | "
               f"{ex['per_node_us']:.1f} us |",
               f"| execution, output cache off | {ex['execute_no_cache_s'] * 1e3:.1f} ms | "
               f"{ex['execute_no_cache_s'] / ex['nodes'] * 1e6:.1f} us |",
               f"| full-cache re-run | {ex['cached_rerun_s'] * 1e3:.1f} ms | "
               f"{ex['cached_rerun_s'] / ex['nodes'] * 1e6:.1f} us |", ""]
    caches = res.objects.get("cache", [])
    if caches:
        md += ["## 3. Caching", "",
               "The default graph on a tiny SD1 checkpoint file (64 px, 20 steps, cfg 8), through the HTTP API of a "
               "real `server.py` (POST /prompt until `executing null` on the websocket) and through the runner in "
               "one process (`graph.runner.run_prompt`, one executor kept). A seed change re-runs the sampler and "
               "what follows it (3 KSampler, 8 VAEDecode, 9 SaveImage); a prompt change also re-encodes that prompt "
               "(6) but not the unchanged negative prompt (7), and never reloads the model (4). With a full-size "
               "model the seed and prompt changes cost what the steps cost (section 1); the unchanged re-run stays "
               "where it is. The server samples this small model on one thread (section 7); the runner here runs "
               "inside the bench process, whose thread count is fixed at the core count, which is why its seed and "
               "prompt changes take longer.", "",
               *bench_cache.markdown(caches), "", *_start_up(res.data.get("server_start")),
               _img(bench_cache.plot(caches, out / "cache.png").name), ""]
    servers = res.objects.get("server")
    if servers:
        md += ["## 4. Server under concurrent clients", "",
               "Each client has its own websocket and posts the same small, already cached workflow (tiny default "
               "graph, 64 px, PreviewImage) in a loop, waiting for each result. Latency: POST to `executing null`. "
               "Websocket event latency: from the server's `timestamp` in execution_start / execution_cached / "
               "execution_success (whole milliseconds) to arrival at the client. One worker runs prompts one at a "
               "time, so with many clients the latency is mostly queueing.", "",
               *bench_server.markdown(servers), "", _img(bench_server.plot(servers, out / "server.png").name), ""]
    mem_models, mem_prompts = res.objects.get("memory_models"), res.objects.get("memory_prompts")
    if mem_models or mem_prompts:
        md += ["## 5. Memory", "",
               "Models: a fresh process loads full-size SD1.5 checkpoint files (fp32, random weights; the second is "
               "a byte copy under another name, so nothing is shared) through the model manager and reads every "
               "weight once. safetensors weights are memory-mapped: the RSS counts them as file pages, which the "
               "kernel can drop and re-read under pressure.", "",
               *bench_memory.markdown(mem_models, mem_prompts), ""]
        if mem_prompts:
            md += [_img(bench_memory.plot(mem_prompts, out / "memory.png").name), "",
                   f"Prompts: a real server with `--cache-max-bytes {bench_memory.CACHE_BUDGET}` ran 100 distinct "
                   "prompts (new seed and text each: 128 px, batch 2, 1 step on the tiny model, so each "
                   "adds images to the output cache); RSS of the server process after each. The RSS rises while "
                   "the cache fills its budget and then stays flat: the budget holds it.", ""]
    scalings = res.objects.get("scaling", [])
    if scalings:
        md += ["## 6. Scaling", "",
               "One sampling step (diffloom's denoiser: cond and uncond batched, so the UNet batch is twice the "
               "image batch) of the full-size SD1.5 UNet.", "",
               *bench_scaling.markdown(scalings), "", _img(bench_scaling.plot(scalings, out / "scaling.png").name), ""]
    comps = res.objects.get("cpu", [])
    if comps:
        md += ["## 7. CPU settings, before and after", "",
               "Diffloom's denoiser (one whole sampling step but the sampler's update) on the tiny model (5 steps "
               "per sample, 64 px) and on the full-size UNet at 256 px (1 step per sample), without the setting "
               "(*before*) and with it (*after*). Speed-up = time before / time after, per interleaved round: "
               "> 1 means the setting makes the step faster. The CPU-time column is the steadier one on a shared "
               "machine. *Output change*: how far the two step outputs are apart, relative to their scale "
               "(1e-6 is float rounding: the same computation).", "",
               *bench_cpu.markdown(comps, res.data.get("compile_seconds")), "",
               _img(bench_cpu.plot(comps, out / "cpu.png").name), "",
               *_decisions(comps, engines, res.data["machine"]), ""]
    workers = res.data.get("workers")
    if workers:
        from bench import bench_workers  # noqa: PLC0415

        md += ["## 8. Scale-out: worker processes", "",
               "One real `server.py` per configuration (`--devices cpu` and `cpu,cpu`, and the in-process worker "
               "as the reference); distinct seeds, so each prompt samples. On this machine both workers share the "
               "same 2 cores, so the ratio measures running prompts side by side, not added hardware: with one GPU "
               "per worker the work itself is what doubles. CPU workers divide the cores between them (one thread "
               "each here, against two for the single worker), so where one thread is faster than two (section 7) "
               "the ratio also holds that gain.", "",
               *bench_workers.report(workers), ""]
    md += ["## Notes", "",
           "- Every figure comes from this run. Times are medians with their range; ratios are per-round ratios of "
           "runs taken back to back. With other processes on the same cores, the wall-time ranges are wide; "
           "where an effect is smaller than that range, the report says so instead of claiming it.",
           "- The full-size models have random weights: the images are noise, but the work per step (and so the "
           "time) is that of real SD1.5 weights.",
           "- Durations of the sections (s): " + ", ".join(f"{k} {v:.0f}" for k, v in res.durations.items()) + ".",
           ""]
    path = out / "results.md"
    path.write_text("\n".join(md))
    (out / "results.json").write_text(json.dumps(_json(res, seconds), indent=1, default=str))
    return path


def _speed(comps: list[Any], title: str, model: str) -> Any:
    return next((c for c in comps if c.title == title and c.model == model), None)


def _decisions(comps: list[Any], engines: list[Any], machine: dict[str, Any]) -> list[str]:
    """What stays the default, what became an option, what was measured and left alone, with the figures."""
    def fig(title: str, model: str) -> str:
        c = _speed(comps, title, model)
        if c is None:
            return "not measured in this run"
        return (f"{c.cpu_speedup.median:.2f}x in CPU time ({c.cpu_speedup.low:.2f}-{c.cpu_speedup.high:.2f}), "
                f"{c.wall_speedup.median:.2f}x in wall time (n={c.cpu_speedup.n})")

    full, tiny = "SD1.5 size", "tiny SD1"
    bf16 = _speed(comps, "bf16", full)
    bf16_wins = bf16 is not None and bf16.cpu_speedup.median > 1.1
    native_bf16 = " and ".join(flag for flag in ("AMX", "avx512_bf16") if machine.get(flag.lower()))
    threads = {model: _speed(comps, "threads", model) for model in (full, tiny)}
    one_thread_wins = [model for model, c in threads.items() if c is not None and c.wall_speedup.median > 1.05]
    lines = ["### Decisions, with the speed-up each setting gave (full size; tiny model)", "",
             f"- **inference_mode** around every sampler run - default (it already was). Against no_grad: "
             f"tiny {fig('autograd off', tiny)}: no difference worth the name, as expected for big ops.",
             f"- **SDPA attention** (diffusers' AttnProcessor2_0) - default. Against classic attention: full size "
             f"{fig('attention', full)}; tiny {fig('attention', tiny)}. At 256 px (1,024 tokens) the attention is a "
             "small part of the step; SDPA never materialises the attention matrix, which matters more as the "
             "resolution grows.",
             f"- **cfg = 1 skips the unconditional pass** - default. Against cfg 5: full size "
             f"{fig('cfg=1 skips uncond', full)}; tiny {fig('cfg=1 skips uncond', tiny)}.",
             f"- **cond and uncond batched into one UNet call** - default. Against two calls: full size "
             f"{fig('batched cond/uncond', full)}; tiny {fig('batched cond/uncond', tiny)}. Option: "
             "`model_options['batch_cond_uncond'] = False` runs them apart (less peak memory on small GPUs).",
             f"- **Threads** - torch's default (one per core) with `GOMP_SPINCOUNT=0` (set by `make`, the tests and "
             "server.py), except that a UNet under 200 MB of weights samples on one thread "
             "(`nodes.device.sampling_threads`; the bench fixes the count, so sections 1 and 7 compare like with "
             f"like). 1 thread instead: full size {fig('threads', full)}; tiny {fig('threads', tiny)}. "
             + (f"On this machine one thread was faster for the {' and the '.join(one_thread_wins)} model: the "
                "threads' hand-offs cost more than splitting the work saves (small ops, or virtual cores that "
                "another tenant keeps busy). Elsewhere two threads nearly halve a full-size step "
                "(reference/environment.md: UNet batch 2 at 64x64 latents 12.0 s with 2 threads, 24.5 s with 1), "
                "which is why big models keep them; " if one_thread_wins else
                "Two threads win here, as they do wherever the cores are free; ")
             + "`DIFFLOOM_THREADS=N` sets the count for everything (CPU workers of `--devices cpu,cpu` get the "
             "cores divided between them).",
             f"- **Channels-last** memory format - option `DIFFLOOM_CHANNELS_LAST=1`, off: full size "
             f"{fig('channels-last', full)}; tiny {fig('channels-last', tiny)}. No gain on this CPU; on CUDA with "
             "fp16 convolutions it usually helps, which is why it exists.",
             f"- **bf16** - option `DIFFLOOM_DTYPE=bf16`; the CPU default stays fp32. Full size "
             f"{fig('bf16', full)}; tiny {fig('bf16', tiny)}; the step's output moves by "
             f"{'-' if bf16 is None or bf16.max_rel_diff is None else f'{bf16.max_rel_diff:.1%}'} of its scale. "
             + (f"This CPU has {native_bf16 or 'no native bf16 instructions'}, and bf16 is much faster for the "
                "full-size UNet. It is still opt-in: it changes every image (a seed no longer gives the fp32 image "
                "other machines and diffusers give, which the parity tests check), on CPUs without native bf16 "
                "(neither AMX nor avx512_bf16) it is 2-3x *slower* (reference/environment.md), and design.md fixes "
                "fp32 on the CPU unless asked. Recommended for users on such CPUs who want speed over exact "
                "reproducibility." if bf16_wins else "No gain here."),
             "- **torch.compile** - option `DIFFLOOM_COMPILE=1` (the UNet is compiled on first use, per model and "
             f"shape, then runs faster steps; for long-running servers): {fig('torch.compile', tiny)} on the tiny "
             "model (section 7 gives the compile time). Not the default: the first prompt of every new model or "
             "size waits for the compiler.",
             "- **No redundant device or dtype copies** - checked: on the CPU in fp32 every `.to(device, dtype)` in "
             "the step loop returns the tensor itself; diffloom's whole own time per step is in section 1.",
             "- **No repeated text encodes** - the output cache keeps every CLIPTextEncode result: a seed change "
             "re-encodes nothing and a prompt change re-encodes only the prompt that changed (section 3).", ""]
    tiny_eng = next((f for f in engines if f.label == "tiny SD1"), None)
    if tiny_eng is not None:
        lines += ["### Found by this benchmark and fixed", "",
                  f"- diffloom's own time per step on the tiny model is {tiny_eng.own('diffloom', 'cpu').median * 1e3:.1f} "
                  f"CPU-ms against diffusers' {tiny_eng.own('diffusers', 'cpu').median * 1e3:.1f} (section 1). Most of it "
                  "was the sampler update: `nodes/sampling/samplers/euler.py` built a new EulerDiscreteScheduler and "
                  "called `set_timesteps(sigmas=...)` at every step, which converts every sigma of the schedule to a "
                  "timestep, so one step cost O(steps): about 1 ms at 10 steps, 2 ms at 20, 4 ms at 50 and 23 ms at "
                  "200 (measured with a trivial UNet). The scheduler is now built once per schedule and copied per "
                  "step: 0.18 ms a step at 50 and at 200 steps.",
                  "- Text encoding runs under `torch.no_grad` (nodes/text/encode.py) and asks for all hidden states; "
                  "neither costs anything measurable next to the UNet.", ""]
    return lines


def _json(res: Any, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": seconds, **res.data, "errors": res.errors, "durations": res.durations}
    for key, value in res.objects.items():
        if value is None:
            continue
        if isinstance(value, list):
            out[key] = [v.to_json() for v in value]
        elif hasattr(value, "to_json"):
            out[key] = value.to_json()
        else:
            out[key] = value
    return out
