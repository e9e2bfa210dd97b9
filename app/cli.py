"""Command line: ``audioproc serve | worker | process | stats | sweep | openapi``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.models.options import ProcessingOptions
    from app.pipeline.runner import Pipeline


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from app.security.audit import LOG_FORMAT

    # The service's own loggers (`audioproc.*`) next to uvicorn's, each line with its request id.
    log_config = {
        **LOGGING_CONFIG,
        "filters": {"request_id": {"()": "app.security.audit.RequestIdFilter"}},
        "formatters": {
            **LOGGING_CONFIG["formatters"],
            "audioproc": {"format": LOG_FORMAT},
        },
        "handlers": {
            **LOGGING_CONFIG["handlers"],
            "audioproc": {
                "class": "logging.StreamHandler",
                "formatter": "audioproc",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            **LOGGING_CONFIG["loggers"],
            "audioproc": {"handlers": ["audioproc"], "level": args.log_level.upper(),
                          "propagate": False},
        },
    }  # fmt: skip
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=log_config,
    )
    return 0


def _load_options(text: str | None) -> ProcessingOptions | None:
    """``--options``: JSON text, or ``@file.json``; ``None`` (after a message) when invalid."""
    from pydantic import ValidationError

    from app.models.options import ProcessingOptions

    if text and text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        return ProcessingOptions.model_validate_json(text) if text else ProcessingOptions()
    except ValidationError as exc:
        print(f"audioproc: invalid --options: {exc}", file=sys.stderr)
        return None


def _local_pipeline() -> Pipeline:
    """A pipeline configured from the environment, for offline commands."""
    import torch

    from app.config import get_settings
    from app.pipeline.decode import DecodeLimits
    from app.pipeline.runner import Pipeline, choose_device
    from app.runtime import keep_freed_buffers

    settings = get_settings()
    torch.set_num_threads(settings.torch_threads)
    if settings.keep_freed_buffers:
        keep_freed_buffers()
    return Pipeline(
        choose_device(settings.audio_device),
        DecodeLimits(max_duration_s=settings.max_duration_s, timeout_s=settings.decode_timeout_s),
    )


def _process(args: argparse.Namespace) -> int:
    import hashlib

    from tqdm import tqdm

    from app.errors import AudioprocError
    from app.services.results import StoredResult, result_id

    options = _load_options(args.options)
    if options is None:
        return 2
    pipeline = _local_pipeline()
    failures = 0
    files = [Path(f) for f in args.files]
    for path in tqdm(files, unit="file", disable=len(files) < 2 or args.quiet):
        out_dir = Path(args.output) if args.output else path.parent
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / f"{path.stem}.{args.format}"
        try:
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            run = pipeline.run(data, options)
            result = StoredResult.from_pipeline(
                run, id=result_id(sha, options), content_sha256=sha, options=options
            )
        except (AudioprocError, OSError) as exc:
            failures += 1
            tqdm.write(f"{path}: {getattr(exc, 'detail', exc)}", file=sys.stderr)
            continue
        body = result.to_npz(cached=False) if args.format == "npz" else result.to_json(cached=False)
        target.write_bytes(body)
        if args.audio:
            (out_dir / f"{path.stem}.processed.wav").write_bytes(result.to_wav())
        if len(files) < 2 and not args.quiet:
            print(f"{path} → {target}")
    return 1 if failures else 0


AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".mp4", ".aac", ".webm", ".aiff"}
)


def _audio_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files.extend(p for p in sorted(path.rglob("*")) if p.suffix.lower() in AUDIO_SUFFIXES)
        else:
            files.append(path)
    return files


def _stats(args: argparse.Namespace) -> int:
    """Per-row mean and standard deviation of every feature over a corpus (for
    ``features.normalize = "global"``)."""
    import numpy as np
    from tqdm import tqdm

    from app.errors import AudioprocError

    options = _load_options(args.options)
    if options is None:
        return 2
    # Statistics are of the raw features: no normalization, no functionals.
    features = options.features.model_copy(update={"normalize": "none", "aggregate": False})
    options = options.model_copy(update={"features": features})
    pipeline = _local_pipeline()
    sums: dict[str, np.ndarray] = {}
    squares: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    files = _audio_files(args.paths)
    used = 0
    for path in tqdm(files, unit="file", disable=args.quiet):
        try:
            run = pipeline.run(path.read_bytes(), options)
        except (AudioprocError, OSError) as exc:
            tqdm.write(f"{path}: skipped: {getattr(exc, 'detail', exc)}", file=sys.stderr)
            continue
        used += 1
        for name, feature in run.features.items():
            data = feature.data.detach().cpu().double().numpy()
            data = data.reshape(-1, data.shape[-1])
            finite = np.isfinite(data)
            values = np.where(finite, data, 0.0)
            sums[name] = sums.get(name, 0) + values.sum(-1)
            squares[name] = squares.get(name, 0) + np.square(values).sum(-1)
            counts[name] = counts.get(name, 0) + finite.sum(-1)
    if not used:
        print("audioproc: no file could be processed", file=sys.stderr)
        return 1
    stats = {}
    for name, total in sums.items():
        n = np.maximum(counts[name], 1)
        mean = total / n
        std = np.sqrt(np.maximum(squares[name] / n - mean**2, 0.0))
        stats[name] = {"mean": mean.tolist(), "std": np.maximum(std, 1e-8).tolist()}
    Path(args.output).write_text(json.dumps(stats, indent=1) + "\n")
    if not args.quiet:
        print(f"statistics of {used} file(s) → {args.output}")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from app.config import get_settings
    from app.worker import main

    return main(get_settings(), log_level=args.log_level)


def _sweep(args: argparse.Namespace) -> int:
    """One retention sweep of the configured storage and staged uploads; prints a summary."""
    import asyncio

    from app.config import get_settings
    from app.errors import AudioprocError
    from app.main import build_s3, build_storage
    from app.services.jobs import build_uploads
    from app.services.retention import SweepReport, sweep
    from app.services.storage import StorageError

    settings = get_settings()
    retention_s = settings.retention_s
    if retention_s is None:
        print("audioproc: RETENTION_S is not set: nothing expires", file=sys.stderr)
        return 2

    async def run() -> SweepReport:
        s3 = build_s3(settings)
        try:
            return await sweep(
                build_storage(settings, s3),
                build_uploads(settings, s3),
                retention_s=retention_s,
                dry_run=args.dry_run,
            )
        finally:
            if s3 is not None:
                s3.close()

    try:
        report = asyncio.run(run())
    except (StorageError, AudioprocError) as exc:
        print(f"audioproc: sweep failed: {getattr(exc, 'detail', exc)}", file=sys.stderr)
        return 1
    for kind, item, age_s, size in report.expired:
        print(f"{kind} {item} age {age_s:.0f} s, {size} bytes")
    print(report.summary())
    return 1 if report.errors else 0


def _openapi(args: argparse.Namespace) -> int:
    from app.config import Settings
    from app.main import create_app

    spec = create_app(Settings(warmup=False)).openapi()
    text = json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audioproc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service (settings from the env)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(run=_serve)

    process = commands.add_parser(
        "process", help="process files locally and write NPZ/JSON next to them (or to -o)"
    )
    process.add_argument("files", nargs="+", help="recordings in any supported format")
    process.add_argument("-o", "--output", help="output directory (default: beside each input)")
    process.add_argument("--format", choices=("npz", "json"), default="npz")
    process.add_argument("--options", help="ProcessingOptions JSON, or @file.json")
    process.add_argument("--audio", action="store_true", help="also write the processed WAV")
    process.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    process.set_defaults(run=_process)

    stats = commands.add_parser(
        "stats", help="per-row feature mean/std over files or folders (for normalize=global)"
    )
    stats.add_argument("paths", nargs="+", help="recordings, or folders searched recursively")
    stats.add_argument("-o", "--output", default="stats.json", help="JSON file to write")
    stats.add_argument("--options", help="ProcessingOptions JSON, or @file.json")
    stats.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    stats.set_defaults(run=_stats)

    worker = commands.add_parser(
        "worker",
        help="consume jobs from RabbitMQ (AMQP_URL) until SIGTERM; metrics on WORKER_METRICS_PORT",
    )
    worker.add_argument("--log-level", default="info")
    worker.set_defaults(run=_worker)

    sweep = commands.add_parser(
        "sweep",
        help="delete stored results and staged uploads older than RETENTION_S (once; "
        "`audioproc worker` also sweeps every SWEEP_INTERVAL_S)",
    )
    sweep.add_argument(
        "--dry-run", action="store_true", help="list what would be deleted, delete nothing"
    )
    sweep.set_defaults(run=_sweep)

    openapi = commands.add_parser("openapi", help="export the OpenAPI spec")
    openapi.add_argument("-o", "--output", default="openapi/openapi.json", help="path, or -")
    openapi.set_defaults(run=_openapi)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
