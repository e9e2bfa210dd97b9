"""GET/DELETE /features/{id}: stored results, their features and processed audio."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response

from app.deps import DeleteCaller, JobsDep, ReadCaller, ResultsDep
from app.models.result import ProcessResponse
from app.routers.responses import AUTH_STATUSES, NPZ_MEDIA_TYPE, JSONBytes, problems

router = APIRouter(tags=["features"])

ResultId = Annotated[
    str,
    Path(
        description="The result id returned by POST /process.",
        examples=["3f9a0c7e5b1d4e2f8a6b9c0d1e2f3a4b"],
        max_length=64,
    ),
]


def _names(names: str | None) -> list[str] | None:
    if names is None or not names.strip():
        return None
    return [n.strip() for n in names.split(",") if n.strip()]


@router.get(
    "/features/{id}",
    operation_id="get_features",
    summary="Get a stored result",
    response_model=ProcessResponse,
    response_class=JSONBytes,
    responses={200: {"content": {NPZ_MEDIA_TYPE: {}}}, **problems(400, 404, 503, *AUTH_STATUSES)},
)
async def get_features(
    id: ResultId,
    caller: ReadCaller,
    results: ResultsDep,
    format: Annotated[Literal["json", "npz"], Query(description="`json` or `npz`.")] = "json",
    names: Annotated[
        str | None,
        Query(
            description="Comma-separated features to return (default: all computed).",
            examples=["mfcc,energy"],
            max_length=1024,
        ),
    ] = None,
) -> Response:
    """The result of an earlier POST /process, from the cache or else from storage."""
    result = await results.get(id, caller.tenant)
    selected = _names(names)
    if format == "npz":
        return Response(result.to_npz(cached=True, names=selected), media_type=NPZ_MEDIA_TYPE)
    return JSONBytes(result.to_json(cached=True, names=selected))


@router.get(
    "/features/{id}/audio",
    operation_id="get_audio",
    summary="Get the processed audio as WAV",
    response_class=Response,
    responses={
        200: {"content": {"audio/wav": {}}, "description": "WAV file."},
        **problems(404, 503, *AUTH_STATUSES),
    },
)
async def get_audio(
    id: ResultId,
    caller: ReadCaller,
    results: ResultsDep,
    encoding: Annotated[
        Literal["pcm16", "float32"],
        Query(description="`pcm16`: 16-bit PCM; `float32`: 32-bit float, bit-exact."),
    ] = "pcm16",
) -> Response:
    """The processed audio (after resampling, channel handling and loudness) as WAV."""
    result = await results.get(id, caller.tenant)
    return Response(
        result.to_wav(encoding),
        media_type="audio/wav",
        headers={"Content-Disposition": f'attachment; filename="{id}.wav"'},
    )


@router.delete(
    "/features/{id}",
    operation_id="delete_features",
    summary="Erase a stored result",
    status_code=204,
    response_class=Response,
    responses=problems(404, 503, *AUTH_STATUSES),
)
async def delete_features(
    id: ResultId, caller: DeleteCaller, results: ResultsDep, jobs: JobsDep
) -> Response:
    """Erase the result everywhere it is kept — the cache, storage (local or S3), and the job
    that made it (its state and staged upload); afterwards every read is 404. The erasure is in
    the audit log."""
    await results.delete(id, caller.tenant)
    await jobs.erase_result(id)
    return Response(status_code=204)
