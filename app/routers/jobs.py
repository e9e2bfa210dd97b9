"""POST /jobs and GET /jobs/{job_id}: asynchronous processing through the job queue."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Request, UploadFile
from fastapi.responses import JSONResponse

from app.deps import JobsDep, ObjectsDep, ProcessCaller, ReadCaller, SettingsDep
from app.models.jobs import JOB_ID_EXAMPLE, JobAccepted, JobStatusResponse
from app.routers.process import OPTIONS_EXAMPLE, parse_options, read_recording
from app.routers.responses import AUTH_STATUSES, JSON_INPUT_BODY, problems
from app.services.jobs import JobState

router = APIRouter(tags=["jobs"])


def _accepted(state: JobState) -> JSONResponse:
    status_url = f"/jobs/{state.job_id}"
    body = JobAccepted(job_id=state.job_id, status_url=status_url, status=state.status)
    return JSONResponse(body.model_dump(), status_code=202, headers={"Location": status_url})


@router.post(
    "/jobs",
    operation_id="submit_job",
    openapi_extra=JSON_INPUT_BODY,
    summary="Submit a recording for asynchronous processing",
    status_code=202,
    response_model=JobAccepted,
    responses=problems(400, 403, 404, 413, 422, 502, 503, *AUTH_STATUSES),
)
async def submit_job(
    caller: ProcessCaller,
    request: Request,
    jobs: JobsDep,
    settings: SettingsDep,
    objects: ObjectsDep,
    file: Annotated[
        UploadFile | None,
        File(description="The recording (any format POST /process takes). Send `file` or `uri`."),
    ] = None,
    uri: Annotated[
        str | None,
        Form(
            description="Instead of `file`: the recording in S3, `s3://bucket/key` (a bucket of "
            "S3_ALLOWED_BUCKETS).",
            examples=["s3://recordings/2024/call-0001.wav"],
        ),
    ] = None,
    options: Annotated[
        str | None,
        Form(
            description="ProcessingOptions as JSON text, as for POST /process.",
            examples=[OPTIONS_EXAMPLE],
        ),
    ] = None,
    reference: Annotated[
        UploadFile | None,
        File(
            description="Optional far-end echo reference, as for POST /process (needs "
            "`denoise.echo: true`)."
        ),
    ] = None,
) -> JSONResponse:
    """Queue a recording; answers at once with the job's id and where to poll it
    (`Location` and `status_url`).

    The same bytes with the same options are the same job: a repeat returns the existing job, or
    a job that is already `done` when the result exists. Bad input is found by the worker: the
    job then ends `failed` with the problem. 503 when the queue cannot take the job (POST
    /process still works).
    """
    parsed = parse_options(options)
    data, far_end = await read_recording(file, uri, reference, settings.max_upload_bytes, objects)
    state = await jobs.submit(
        data,
        parsed,
        reference=far_end,
        tenant=caller.tenant,
        key_id=caller.key_id,
        request_id=request.state.request_id,
    )
    request.state.resource_id = state.job_id  # for the audit line
    return _accepted(state)


@router.get(
    "/jobs/{job_id}",
    operation_id="get_job",
    summary="Get a job's status",
    response_model=JobStatusResponse,
    responses=problems(404, 503, *AUTH_STATUSES),
)
async def get_job(
    caller: ReadCaller,
    jobs: JobsDep,
    settings: SettingsDep,
    job_id: Annotated[
        str,
        Path(description="The id POST /jobs returned.", examples=[JOB_ID_EXAMPLE], max_length=64),
    ],
) -> JSONResponse:
    """`queued`, `running`, `done` (with `result_id` and `result_url`, GET /features/{id}) or
    `failed` (with the problem in `error`), plus attempts and timestamps."""
    state = await jobs.get(job_id, caller.tenant)
    body = JobStatusResponse.of(state, max_attempts=settings.job_max_attempts)
    return JSONResponse(body.model_dump(mode="json"))
