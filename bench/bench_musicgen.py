"""Time the musicgen engine and the warm daemon against bare ``model.generate`` on the full-size musicgen-small
architecture.

The model has musicgen-small's published architecture (T5-base text encoder, EnCodec 32 kHz, a 24-layer
1024-wide decoder over 4 codebooks) with random weights: random weights cost the same compute. It is saved as
a ``save_pretrained`` folder ``<models>/musicgen-small/`` and loaded back through the engine, as users' caches
are; the daemon is asked for it by name (the protocol takes names only).

Paths, each generating ``--bars`` bars at ``--bpm`` (default 1 bar at 120 bpm = 2 s) of bass over a 44.1 kHz
stereo context of ``--context-bars`` bars, without demucs isolation:

1. ``bare``: transformers' ``model.generate`` in-process with the engine's work: the same text, the same 32 kHz
   audio prompt (passed as ``input_values``, encoded by transformers), the same number of new tokens, batch 1,
   top-k 250, guidance 3, on the model as transformers loads it (float32, its default attention);
2. ``bare-same``: the same ``model.generate`` on the engine's own loaded model (its precision and attention):
   the ratio of ``engine`` to it is what our decoding loop (:mod:`bridge.engines.musicgen.decoding`) costs or
   saves against transformers' loop, like for like;
3. ``engine``: ``MusicgenEngine.generate`` on the context array, one variation;
4. ``pipeline``: ``pipeline.generate_files`` with the warm engine (read, resample, write files);
5. ``daemon``: a ``generate`` request to a real daemon on a thread of this process (its own
   :class:`~bridge.jobs.runner.PipelineRunner`, which loaded the model on a discarded warm-up job and keeps it
   warm), from the send to the ``done`` reply, one variation;
6. ``engine-many``, ``daemon-many``: the same with ``--variations`` variations (one batch);
7. ``bare-many`` (not run unless asked): bare ``model.generate`` with ``--variations`` rows, each with its own
   copy of the prompt (the engine prefills a shared prompt once).

``--repeat`` rounds of the chosen paths, interleaved; the best of each, by wall time and by CPU seconds (all
threads of this process, the daemon's included: the steadier figure on a shared machine). Ratios printed
against the targets: engine / bare (<= 1.0) and N variations / one (<= 1.8)::

    python bench/bench_musicgen.py --threads 1   # on a busy 2-core machine (see docs/BENCHMARKS.md)
    python bench/bench_musicgen.py --bars 2 --variations 4 --repeat 2 --device cuda
    python bench/bench_musicgen.py --paths daemon,bare --models-dir /tmp/mg   # keep the saved model
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import Best, check_warm, choose_paths, machine, run_rounds, timed, warm_daemon  # noqa: E402
from bridge.audio.timing import Grid  # noqa: E402
from bridge.client import Client  # noqa: E402
from bridge.engines.base import GenerateSpec  # noqa: E402
from bridge.engines.musicgen import conditioning  # noqa: E402
from tests import model_fixtures as mf  # noqa: E402

MODEL = "musicgen-small"
PATHS = ["bare", "bare-same", "engine", "pipeline", "daemon", "bare-many", "engine-many", "daemon-many"]
DEFAULT_PATHS = [p for p in PATHS if p != "bare-many"]


def context_audio(bpm: float, bars: int, sr: int = 44100) -> np.ndarray:
    """A stereo A-minor context: bass, chord and a click on every beat."""
    n = Grid(bpm, sample_rate=sr).samples_for_bars(bars)
    t = np.arange(n) / sr
    chord = sum(np.sin(2 * np.pi * f * t) for f in (110.0, 220.0, 261.63, 329.63)) * 0.1
    click = np.exp(-((t % (60 / bpm)) * 200.0)) * np.sin(2 * np.pi * 1000 * t) * 0.3
    mono = (chord + click).astype(np.float32)
    return np.stack([mono, mono])


def daemon_generate(client: Client, options: dict[str, object], variations: int) -> list[str]:
    """One ``generate`` request to the daemon, checked (musicgen made ``variations`` files); its warnings."""
    result = client.run("generate", ["bass"], {**options, "variations": variations})
    if (result.engine, len(result.paths)) != ("musicgen", variations):
        raise SystemExit(f"the daemon's generation was made by {result.engine!r}: {result.paths}")
    for path in result.paths:  # keep the renders folder small
        Path(path).unlink()
    return result.warnings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bars", type=int, default=1, help="bars to generate (default 1 = 2 s at 120 bpm)")
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--context-bars", type=int, default=4)
    parser.add_argument("--variations", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="the engine's and the daemon's (default auto: bfloat16 on CPUs that do it in hardware); the bare "
        "model.generate runs float32, as transformers loads it",
    )
    parser.add_argument(
        "--paths", default=None, help=f"comma-separated, among {','.join(PATHS)} (default: all but bare-many)"
    )
    parser.add_argument(
        "--models-dir", type=Path, default=None, help=f"reuse/keep the saved model in DIR/{MODEL}"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads here and in the daemon (default: torch's)"
    )
    args = parser.parse_args()
    paths = choose_paths(args.paths, PATHS, DEFAULT_PATHS)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch starts: every thread gets it

    import torch

    # The daemon's engine has no demucs weights here, so it does not isolate (as the other paths): said once
    # below from the job's notes, not logged per job.
    logging.getLogger("bridge.engines.musicgen.isolation").setLevel(logging.ERROR)
    from bridge.engines.musicgen.engine import MusicgenEngine
    from bridge.pipeline import OutputOptions, generate_files

    print(f"machine: {machine()}")
    print(f"command: {' '.join([Path(sys.executable).name] + sys.argv)}")
    best = Best()
    with tempfile.TemporaryDirectory(prefix="stembridge-bench-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        models = args.models_dir or root / "models"
        folder = models / MODEL
        if not (folder / "config.json").is_file():
            start = time.perf_counter()
            model = mf.musicgen_model(full=True, seed=0)
            mf.save_musicgen(model, folder)
            del model
            print(f"built and saved {MODEL} (random weights) in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        engine = MusicgenEngine(
            model=str(folder), device=args.device, isolate=False, precision=args.precision
        )
        print(
            f"engine load: {time.perf_counter() - start:.1f} s, {engine.model_bytes / 2**20:.0f} MiB, "
            f"{engine.precision}"
        )

        sr = 44100
        context = context_audio(args.bpm, args.context_bars, sr)
        wav = root / "context.wav"
        sf.write(str(wav), context.T, sr, subtype="FLOAT")
        spec = GenerateSpec(stem="bass", bpm=args.bpm, bars=args.bars, seed=1)
        many = GenerateSpec(stem="bass", bpm=args.bpm, bars=args.bars, seed=1, variations=args.variations)
        seconds = Grid(args.bpm, sample_rate=sr).samples_for_bars(args.bars) / sr

        # The bare call does what the engine's model call does: same text, prompt, tokens and sampling.
        lm = engine._lm
        bare_model = lm.model  # the stock float32 model for the bare calls, as transformers loads it
        if engine.precision != "float32":
            from transformers import MusicgenForConditionalGeneration

            loaded: Any = MusicgenForConditionalGeneration.from_pretrained(folder)
            bare_model = loaded.to(lm.device).eval()
        rate = lm.sample_rate
        grid = spec.grid(rate)
        plan = conditioning.plan(grid, 0, grid.samples_for_bars(args.bars), lm.hop, engine.windows)
        loop = conditioning.Loop.of_bars(engine._to_model(context, sr), grid)
        prompt = loop.take(-plan.prompt, 0)[None]  # [1, 1, P]
        key = conditioning.context_key(loop.audio, rate, grid)
        text = conditioning.text_prompt(spec.stem, spec.prompt, spec.bpm, key)
        steps = plan.frames + lm.num_codebooks // lm.channels - 1

        def bare(rows: int = 1, model: Any = bare_model) -> None:
            tokens = lm.tokenizer([text] * rows, return_tensors="pt")
            with torch.inference_mode():
                model.generate(
                    input_ids=tokens["input_ids"].to(lm.device),
                    attention_mask=tokens["attention_mask"].to(lm.device),
                    input_values=torch.from_numpy(np.repeat(prompt, rows, 0)).to(
                        lm.device, model.audio_encoder.dtype
                    ),
                    max_new_tokens=steps,
                    do_sample=True,
                    top_k=250,
                    guidance_scale=3.0,
                )

        print(
            f"request: {args.bars} bar(s) at {args.bpm:g} bpm = {seconds:.2f} s, prompt {plan.prompt / rate:.1f} s "
            f"of a {args.context_bars}-bar context, {steps} decoding steps, {len(plan.windows)} window(s); "
            f"text {text!r}"
        )
        out = OutputOptions(root / "renders")
        run: dict[str, Callable[[], object]] = {
            "bare": bare,
            "bare-same": lambda: bare(1, lm.model),
            "engine": lambda: engine.generate(context, sr, spec),
            "pipeline": lambda: generate_files([wav], spec, out, engine=engine),
            "bare-many": lambda: bare(args.variations),
            "engine-many": lambda: engine.generate(context, sr, many),
        }
        runner = None
        if any(p.startswith("daemon") for p in paths):
            client, runner = stack.enter_context(
                warm_daemon(root / "daemon", models, device=args.device, threads=args.threads)
            )
            request = {
                "context": str(wav),
                "bpm": args.bpm,
                "bars": args.bars,
                "model": MODEL,
                "seed": 1,
                "precision": args.precision,
            }
            run["daemon"] = lambda: daemon_generate(client, request, 1)
            run["daemon-many"] = lambda: daemon_generate(client, request, args.variations)
            warnings: list[str] = []
            wall, cpu = timed(lambda: warnings.extend(daemon_generate(client, request, 1)))
            print(f"  warm-up daemon (loads the model): {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
            print(f"  the daemon's notes on its job: {warnings or 'none'}")
        run_rounds(paths, args.repeat, best, lambda name: timed(run[name]))
        check_warm(runner)

    print(f"machine at the end: load average {os.getloadavg()[0]:.2f}")
    n = args.variations
    print(f"\nbest times ({seconds:.2f} s of audio per variation; wall, and CPU seconds of all threads):")
    for name in paths:
        wall, cpu = best[name]
        print(f"  {name:<12} {wall:7.2f} s wall {cpu:7.2f} s CPU   {wall / seconds:6.2f} s per audio second")
    print("ratios (wall, CPU):")
    for label, a, b, target in (
        ("engine / bare model.generate        ", "engine", "bare", 1.0),
        ("engine / generate, same model       ", "engine", "bare-same", 1.0),
        ("daemon / bare model.generate        ", "daemon", "bare", None),
        ("pipeline / bare model.generate      ", "pipeline", "bare", None),
        ("daemon / pipeline                   ", "daemon", "pipeline", None),
        (f"daemon, {n} variations / one         ", "daemon-many", "daemon", 1.8),
        (f"engine, {n} variations / one         ", "engine-many", "engine", 1.8),
        (f"daemon, {n} variations / bare {n} rows ", "daemon-many", "bare-many", None),
    ):
        if a in best and b in best:
            wall, cpu = best.ratio(a, b)
            verdict = "" if target is None else f"   (target <= {target}: {_met(wall, cpu, target)})"
            print(f"  {label} {wall:.3f}, {cpu:.3f}{verdict}")


def _met(wall: float, cpu: float, target: float) -> str:
    return ", ".join(
        f"{what} {'met' if r <= target else 'MISSED'}" for what, r in (("wall", wall), ("CPU", cpu))
    )


if __name__ == "__main__":
    main()
