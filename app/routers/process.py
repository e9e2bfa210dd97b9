"""POST /process: one recording in, its processed form and features out."""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, BackgroundTasks, File, Form, Query, Request, Response, UploadFile
from pydantic import ValidationError

from app.deps import ObjectsDep, ProcessCaller, ResultsDep, SettingsDep
from app.errors import AudioprocError, EmptyInput, InvalidOptions, InvalidRequest, UploadTooLarge
from app.models.options import ProcessingOptions
from app.models.result import BatchResponse, ProcessResponse
from app.routers.responses import (
    AUTH_STATUSES,
    JSON_INPUT_BODY,
    NPZ_MEDIA_TYPE,
    JSONBytes,
    problems,
)
from app.services.s3 import ObjectSource

router = APIRouter(tags=["process"])

#: Most files in one POST /process/batch.
MAX_BATCH_FILES = 64

#: Longest accepted ``options`` JSON text, bytes.
MAX_OPTIONS_BYTES = 64 * 1024

OPTIONS_EXAMPLE = (
    '{"target_sample_rate": 16000, "channels": "mono", '
    '"loudness": {"mode": "lufs", "target": -23.0, "peak_dbfs": -1.0}, '
    '"features": {"names": ["log_mel", "mfcc", "energy"], "preset": "default", '
    '"n_mels": 80, "n_mfcc": 13, "deltas": 0}}'
)


async def read_upload(file: UploadFile, max_bytes: int) -> bytes:
    """The upload's bytes; refuses empty and oversized files."""
    data = await file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UploadTooLarge(
            f"{file.filename or 'The upload'} exceeds MAX_UPLOAD_MB ({max_bytes / 2**20:g} MiB).",
            max_upload_mb=max_bytes / 2**20,
        )
    if not data:
        raise EmptyInput(
            f"{file.filename or 'The upload'} is empty (0 bytes). Send the recording's bytes."
        )
    return data


async def read_recording(
    file: UploadFile | None,
    uri: str | None,
    reference: UploadFile | None,
    max_bytes: int,
    objects: ObjectSource,
) -> tuple[bytes, bytes | None]:
    """The recording's bytes (from exactly one of ``file`` and ``uri``) and the far-end
    reference's, if one was sent; refuses both or neither source, empty and oversized files."""
    if (file is None) == (uri is None):
        raise InvalidRequest(
            "Send exactly one of `file` (the recording's bytes) and `uri` (s3://bucket/key); "
            + ("both were sent." if file is not None else "neither was sent.")
        )
    if file is not None:
        data = await read_upload(file, max_bytes)
    else:
        assert uri is not None
        data = await objects.fetch_object(uri)
    far_end = None if reference is None else await read_upload(reference, max_bytes)
    return data, far_end


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
    openapi_extra=JSON_INPUT_BODY,
    response_model=ProcessResponse,
    response_class=JSONBytes,
    responses={
        200: {
            "content": {NPZ_MEDIA_TYPE: {}},
            "description": "The result as JSON, or as NPZ with `format=npz`.",
        },
        **problems(400, 403, 404, 413, 415, 422, 502, 503, *AUTH_STATUSES),
    },
)
async def process(
    caller: ProcessCaller,
    request: Request,
    results: ResultsDep,
    settings: SettingsDep,
    objects: ObjectsDep,
    background: BackgroundTasks,
    file: Annotated[
        UploadFile | None,
        File(
            description="The recording: WAV, FLAC, OGG/Vorbis, MP3, M4A/AAC, WebM/Opus, "
            "Ogg/Opus or anything FFmpeg decodes. The format is detected from the bytes. "
            "Send either `file` or `uri`."
        ),
    ] = None,
    uri: Annotated[
        str | None,
        Form(
            description="Instead of `file`: the recording in S3, `s3://bucket/key`. The bucket "
            "must be one of S3_ALLOWED_BUCKETS (else 403); the object may not exceed "
            "MAX_UPLOAD_MB (413, checked before download); a missing object is 404.",
            examples=["s3://recordings/2024/call-0001.wav"],
        ),
    ] = None,
    options: Annotated[
        str | None,
        Form(
            description="ProcessingOptions as JSON text; omitted fields take their defaults "
            "(see the ProcessingOptions schema).",
            examples=[OPTIONS_EXAMPLE],
        ),
    ] = None,
    reference: Annotated[
        UploadFile | None,
        File(
            description="Optional far-end (loudspeaker) signal whose echo the recording "
            "contains, in any supported format, time-aligned with it: cancelled with an "
            "adaptive filter plus residual suppression. Needs `denoise.echo: true` (and no "
            "`denoise.echo_reference_channel`). Part of the result id."
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

    The same bytes with the same options always give the same `id` (whether uploaded or read
    from S3); a repeat is answered from the cache with `"cached": true`.
    """
    parsed = parse_options(options)
    data, far_end = await read_recording(file, uri, reference, settings.max_upload_bytes, objects)
    result, cached, persist = await results.process(data, parsed, caller.tenant, far_end)
    request.state.resource_id = result.id  # for the audit line
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


@router.post(
    "/process/batch",
    operation_id="process_batch",
    summary="Process several recordings in one request",
    response_model=BatchResponse,
    response_class=JSONBytes,
    responses=problems(400, 413, 422, 503, *AUTH_STATUSES),
)
async def process_batch(
    caller: ProcessCaller,
    results: ResultsDep,
    settings: SettingsDep,
    background: BackgroundTasks,
    files: Annotated[
        list[UploadFile],
        File(
            description=f"1–{MAX_BATCH_FILES} recordings (repeat the `files` field); their "
            "total size counts against MAX_UPLOAD_MB."
        ),
    ],
    options: Annotated[
        str | None,
        Form(
            description="ProcessingOptions as JSON text, applied to every file.",
            examples=[OPTIONS_EXAMPLE],
        ),
    ] = None,
) -> Response:
    """Process several recordings with the same options. The spectral and feature stages run
    on all of them at once (padded into one tensor, which keeps a GPU busy); every file's result
    equals what `POST /process` returns for it alone. A bad file gets its own problem entry and
    does not fail the others."""
    parsed = parse_options(options)
    if not 1 <= len(files) <= MAX_BATCH_FILES:
        raise InvalidRequest(f"Send 1–{MAX_BATCH_FILES} files; got {len(files)}.")
    items: list[bytes | AudioprocError] = []
    for upload in files:
        try:
            items.append(await read_upload(upload, settings.max_upload_bytes))
        except AudioprocError as error:
            items.append(error)
    valid = [item for item in items if isinstance(item, bytes)]
    outcomes, persist = (
        await results.process_batch(valid, parsed, caller.tenant) if valid else ([], None)
    )
    if persist is not None:
        background.add_task(persist)
    remaining = iter(outcomes)
    entries: list[dict[str, object]] = []
    for upload, item in zip(files, items, strict=True):
        if isinstance(item, AudioprocError):
            entries.append(
                {"filename": upload.filename, "status": item.status, "problem": item.problem()}
            )
            continue
        outcome = next(remaining)
        if outcome.error is not None:
            entries.append(
                {
                    "filename": upload.filename,
                    "status": outcome.error.status,
                    "problem": outcome.error.problem(),
                }
            )
        else:
            assert outcome.result is not None
            body = orjson.Fragment(outcome.result.to_json(cached=outcome.cached))
            entries.append({"filename": upload.filename, "status": 200, "result": body})
    return JSONBytes(orjson.dumps({"results": entries}), background=background)
