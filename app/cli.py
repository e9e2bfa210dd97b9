"""Command line: ``audioproc serve | process | openapi``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
    )
    return 0


def _process(args: argparse.Namespace) -> int:
    import hashlib

    import torch
    from pydantic import ValidationError
    from tqdm import tqdm

    from app.config import get_settings
    from app.errors import AudioprocError
    from app.models.options import ProcessingOptions
    from app.pipeline.decode import DecodeLimits
    from app.pipeline.runner import Pipeline, choose_device
    from app.services.results import StoredResult, result_id

    settings = get_settings()
    text = args.options
    if text and text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        options = ProcessingOptions.model_validate_json(text) if text else ProcessingOptions()
    except ValidationError as exc:
        print(f"audioproc: invalid --options: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(settings.torch_threads)
    pipeline = Pipeline(
        choose_device(settings.audio_device),
        DecodeLimits(max_duration_s=settings.max_duration_s, timeout_s=settings.decode_timeout_s),
    )
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

    openapi = commands.add_parser("openapi", help="export the OpenAPI spec")
    openapi.add_argument("-o", "--output", default="openapi/openapi.json", help="path, or -")
    openapi.set_defaults(run=_openapi)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
