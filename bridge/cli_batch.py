"""The ``stembridge batch`` command: parse arguments, call :mod:`bridge.batch`, print the summary.

Hooked into bridge/cli.py's subparsers by ``add_commands``. Exit codes: 0 every item succeeded, 1 some failed
(the summary names them), 2 bad arguments (nothing ran).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace], int]
EXIT_OK = 0
EXIT_SOME_FAILED = 1


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def add_commands(subparsers: Any) -> dict[str, Handler]:
    """Add ``batch`` (with ``separate`` and ``run``) to the ``stembridge`` subparsers."""
    batch = subparsers.add_parser(
        "batch",
        help="Run many items: every song under folders, or the requests of a manifest; resumable.",
        description="Run many items on this machine's cores or on a Ray cluster. Running the same command "
        "again skips what is done and redoes what failed or was cut off. Exit 0: all done; 1: some failed; "
        "2: bad arguments.",
        epilog=_examples(
            "stembridge batch separate ~/Library/Songs --out ~/Stems",
            "stembridge batch separate 'songs/**/*.wav' --stems drums,bass --out stems --workers 2",
            "stembridge batch run requests.jsonl --out renders --json",
            "stembridge batch separate songs --out stems --cluster ray://10.0.0.5:10001",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = batch.add_subparsers(dest="batch_command", metavar="ACTION")
    p = sub.add_parser(
        "separate",
        help="separate every audio file under the given folders, files or globs",
        description="Separate every audio file under the given folders, files or globs; the output mirrors "
        "the input tree: OUT/<relative folder>/<name>__<stem>.wav.",
        epilog=_examples(
            "stembridge batch separate ~/Library/Songs --out ~/Stems",
            "stembridge batch separate 'songs/**/*.flac' --stems vocals --out stems --json",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="folders (searched recursively), audio files or globs"
    )
    p.add_argument("--stems", default=None, help="comma-separated stems (default: all the engine has)")
    _common(p)
    p = sub.add_parser(
        "run",
        help="run the requests of a manifest, one JSON object per line",
        description="Run the requests of a JSON Lines manifest: generate, separate or vary, with the options "
        "of the single commands (long option names, '-' as '_'); relative paths are relative to the manifest.",
        epilog=_examples(
            "stembridge batch run requests.jsonl --out renders",
            'where a line reads: {"task": "generate", "stem": "bass", "context": ["drums.wav"], '
            '"bpm": 120, "bars": 8, "seed": 3}',
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("manifest", type=Path, help="the manifest (.jsonl)")
    _common(p)
    return {"batch": cmd_batch}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output folder; holds the batch's state file too")
    p.add_argument("--engine", default=None, help="engine name, or 'auto' for the best available (default)")
    p.add_argument("--model", default=None, help="model name from `stembridge models`, or a local folder")
    p.add_argument("--models-dir", type=Path, default=None, help="folder holding local checkpoints")
    p.add_argument(
        "--device", default=None, help="where models run: auto (default), cpu, cuda, cuda:N or mps"
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads per worker (default: the engine's)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="items at once (default: the cores divided by each engine's threads, fewer when models are big; "
        "on a cluster: one per actor's share of its resources)",
    )
    g = p.add_argument_group("cluster (pip install 'stembridge[cluster]'; see docs/CLUSTER.md)")
    g.add_argument(
        "--cluster",
        default=None,
        metavar="URL",
        help="run on a Ray cluster: ray://HOST:10001, or auto (RAY_ADDRESS)",
    )
    g.add_argument(
        "--shared-fs",
        action="store_true",
        help="the cluster sees the same paths as this machine: send paths, not the files' bytes",
    )
    g.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs each actor takes (default 1)")
    g.add_argument(
        "--actor-gpus",
        type=float,
        default=None,
        help="GPUs each actor takes (default: 1 when the cluster has GPUs)",
    )
    p.add_argument(
        "--json", action="store_true", help="print one JSON object: done, skipped, failed, outputs"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")


def cmd_batch(args: argparse.Namespace) -> int:
    from bridge.batch.driver import EngineChoice, resolve_engines, run_batch
    from bridge.batch.items import check_options, find_audio, read_manifest, separate_items
    from bridge.config import load_settings
    from bridge.errors import InvalidArgument

    if args.batch_command is None:
        raise InvalidArgument(
            "name an action: stembridge batch separate PATH... or stembridge batch run MANIFEST"
        )
    if args.workers is not None and args.workers < 1:
        raise InvalidArgument(f"--workers must be 1 or more, got {args.workers}")
    settings = load_settings().with_overrides(
        models_dir=args.models_dir, engine=args.engine, device=args.device, threads=args.threads
    )
    defaults = {"engine": args.engine, "model": args.model}
    if args.batch_command == "separate":
        options = {k: v for k, v in defaults.items() if v is not None}
        if args.stems is not None:
            options["stems"] = [s.strip().lower() for s in args.stems.split(",") if s.strip()]
        check_options("separate", options, 1)
        items = separate_items(find_audio(args.paths, exclude=args.out.expanduser().resolve()), options)
    else:
        items = read_manifest(args.manifest, defaults)
    choice = EngineChoice(settings.engine, args.model, settings.models_dir, settings.allow_download)
    if args.cluster is not None:  # the engines are resolved where they run: the cluster has the weights
        executor = _cluster(args, settings)
        engines = executor.resolve(items, choice)
    else:
        engines = resolve_engines(items, choice)
        executor = _local_pool(args, settings, items, engines)
    with executor:
        summary = run_batch(items, engines, args.out, executor, progress=not (args.quiet or args.json))
    if args.json:
        print(json.dumps(summary.to_dict()))
    elif not args.quiet:
        print("\n".join(summary.lines()))
    return EXIT_OK if summary.ok else EXIT_SOME_FAILED


def _cluster(args: argparse.Namespace, settings: Any) -> Any:
    from bridge.batch.ray_executor import RayExecutor, connect
    from bridge.batch.work import WorkerConfig
    from bridge.jobs.warm import memory_budget

    config = WorkerConfig(settings.models_dir, settings.engine_options(), memory_budget(settings))
    return RayExecutor(
        connect(args.cluster),
        config,
        workers=args.workers,
        cpus=args.actor_cpus,
        gpus=args.actor_gpus,
        shared_fs=args.shared_fs,
    )


def _local_pool(args: argparse.Namespace, settings: Any, items: list[Any], engines: list[str]) -> Any:
    from bridge.batch.driver import default_workers, engine_threads, worker_settings
    from bridge.batch.executor import LocalPool
    from bridge.batch.work import WorkerConfig
    from bridge.jobs.warm import memory_budget

    models = [item.options.get("model") or args.model for item in items]
    cores = os.cpu_count() or 1
    workers = min(args.workers or default_workers(engines, models, settings.threads), len(items))
    threads = settings.threads or max(
        1, min(cores // max(1, workers), max(engine_threads(e, None, cores) for e in engines))
    )
    config = WorkerConfig(settings.models_dir, worker_settings(settings, threads), memory_budget(settings))
    return LocalPool(config, workers, threads=threads)
