"""Job schemas: what POST /jobs and GET /jobs/{job_id} return."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.models.result import Problem
from app.services.jobs import JobState

JOB_ID_EXAMPLE = "9c1f0e2d3b4a59687766554433221100"


class JobAccepted(BaseModel):
    """A job was accepted (or it existed already: the same recording and options)."""

    job_id: str = Field(
        description="Job id: same bytes + same options → same job.", examples=[JOB_ID_EXAMPLE]
    )
    status_url: str = Field(
        description="Where to poll the job.", examples=[f"/jobs/{JOB_ID_EXAMPLE}"]
    )
    status: Literal["queued", "running", "done", "failed"] = Field(
        description="The job's status now (`done` at once when the result already exists).",
        examples=["queued"],
    )


class JobStatusResponse(BaseModel):
    """Where one job stands."""

    job_id: str = Field(examples=[JOB_ID_EXAMPLE])
    status: Literal["queued", "running", "done", "failed"] = Field(
        description="`queued` (waiting, maybe for a retry), `running`, `done` or `failed`.",
        examples=["done"],
    )
    attempts: int = Field(
        description="Times a worker started the job (a worker that died mid-job counts).",
        examples=[1],
    )
    max_attempts: int = Field(
        description="JOB_MAX_ATTEMPTS: attempts before the job is dead-lettered.", examples=[5]
    )
    created_at: datetime = Field(description="When the job was accepted (UTC).")
    updated_at: datetime = Field(description="Last change of this state (UTC).")
    started_at: datetime | None = Field(default=None, description="Start of the last attempt.")
    finished_at: datetime | None = Field(default=None, description="When it was done or failed.")
    next_attempt_at: datetime | None = Field(
        default=None, description="When a failed attempt will be retried."
    )
    content_sha256: str | None = Field(default=None, description="SHA-256 of the input bytes.")
    result_id: str | None = Field(
        default=None,
        description="The result id (for GET /features/{id}); set when the job is done.",
        examples=["3f9a0c7e5b1d4e2f8a6b9c0d1e2f3a4b"],
    )
    result_url: str | None = Field(
        default=None,
        description="The result, when done.",
        examples=["/features/3f9a0c7e5b1d4e2f8a6b9c0d1e2f3a4b"],
    )
    error: Problem | None = Field(
        default=None,
        description="Why the job failed, or why the last attempt failed while a retry is pending.",
    )
    dead_lettered: bool = Field(
        default=False,
        description="Failed JOB_MAX_ATTEMPTS times on unexpected errors; submitting again "
        "restarts it.",
    )

    @classmethod
    def of(cls, state: JobState, *, max_attempts: int) -> JobStatusResponse:
        def at(value: float | None) -> datetime | None:
            return datetime.fromtimestamp(value, UTC) if value is not None else None

        done = state.status == "done" and state.result_id
        return cls(
            job_id=state.job_id,
            status=state.status,
            attempts=state.attempts,
            max_attempts=max_attempts,
            created_at=datetime.fromtimestamp(state.created_at, UTC),
            updated_at=datetime.fromtimestamp(state.updated_at, UTC),
            started_at=at(state.started_at),
            finished_at=at(state.finished_at),
            next_attempt_at=at(state.next_attempt_at),
            content_sha256=state.content_sha256,
            result_id=state.result_id if done else None,
            result_url=f"/features/{state.result_id}" if done else None,
            error=Problem.model_validate(state.error) if state.error else None,
            dead_lettered=state.dead_lettered,
        )
