"""POST /process: one recording in, its processed form and features out."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, File, Form, Query, Response, UploadFile
from pydantic import ValidationError

from app.deps import ResultsDep, SettingsDep
from app.errors import EmptyInput, InvalidOptions, UploadTooLarge
from app.models.options import ProcessingOptions
from app.models.result import ProcessResponse
from app.routers.responses import NPZ_MEDIA_TYPE, JSONBytes, problems

router = APIRouter(tags=["process"])

#: Longest accepted ``options`` JSON text, bytes.
MAX_OPTIONS_BYTES = 64 * 1024

OPTIONS_EXAMPLE = (
    '{"target_sample_rate": 16000, "channels": "mono", '
    '"loudness": {"mode": "lufs", "target": -23.0, "peak_dbfs": -1.0}, '
    '"features": {"names": ["log_mel", "mfcc", "energy"], "preset": "default", '
    '"n_mels": 80, "n_mfcc": 13, "deltas": 0}}'
)


def parse_options(text: str | None) -> ProcessingOptions:
    """Validate the ``options`` form field (JSON text of ProcessingOptions)."""
    if text is None or not text.strip():
        return ProcessingOptions()
    if len(text.encode()) > MAX_OPTIONS_BYTES:
        raise InvalidOptions(f"options is longer than {MAX_OPTIONS_BYTES} bytes.")
    try:
        return ProcessingOptions.model_validate_json(text)
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]) or "options", "msg": e["msg"]}
            for e in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
        raise InvalidOptions(
            f"options is not valid ProcessingOptions JSON: {summary}. See the schema in /docs.",
            errors=errors,
        ) from exc


@router.post(
    "/process",
    operation_id="process",
    summary="Process one recording",
    response_model=ProcessResponse,
    response_class=JSONBytes,
    responses={
        200: {
            "content": {NPZ_MEDIA_TYPE: {}},
            "description": "The result as JSON, or as NPZ with `format=npz`.",
        },
        **problems(400, 413, 415, 422, 503),
    },
)
async def process(
    results: ResultsDep,
    settings: SettingsDep,
    background: BackgroundTasks,
    file: Annotated[
        UploadFile,
        File(
            description="The recording: WAV, FLAC, OGG/Vorbis, MP3, M4A/AAC, WebM/Opus, "
            "Ogg/Opus or anything FFmpeg decodes. The format is detected from the bytes."
        ),
    ],
    options: Annotated[
        str | None,
        Form(
            description="ProcessingOptions as JSON text; omitted fields take their defaults "
            "(see the ProcessingOptions schema).",
            examples=[OPTIONS_EXAMPLE],
        ),
    ] = None,
    format: Annotated[
        Literal["json", "npz"],
        Query(
            description="`json`: features as nested lists. `npz`: one array per feature "
            "plus `meta` (UTF-8 JSON bytes)."
        ),
    ] = "json",
) -> Response:
    """Decode, normalize (DC, channels, resampling, loudness) and describe one recording.

    The same bytes with the same options always give the same `id`; a repeat is answered from the
    cache with `"cached": true`.
    """
    parsed = parse_options(options)
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise UploadTooLarge(
            f"The upload exceeds MAX_UPLOAD_MB ({settings.max_upload_mb:g} MiB).",
            max_upload_mb=settings.max_upload_mb,
        )
    if not data:
        raise EmptyInput("The uploaded file is empty (0 bytes). Send the recording's bytes.")
    result, cached, persist = await results.process(data, parsed)
    if persist is not None:
        background.add_task(persist)
    if format == "npz":
        return Response(
            result.to_npz(cached=cached),
            media_type=NPZ_MEDIA_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{result.id}.npz"'},
            background=background,
        )
    return JSONBytes(result.to_json(cached=cached), background=background)
