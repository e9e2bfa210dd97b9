"""Shared response helpers: media types and the problem responses routes document."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response
from fastapi.responses import JSONResponse

from app import metrics
from app.models.result import Problem

NPZ_MEDIA_TYPE = "application/x-npz"
PROBLEM_MEDIA_TYPE = "application/problem+json"


#: Problems every protected route may answer: no or unknown key, missing scope, rate limit.
AUTH_STATUSES = (401, 403, 429)


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given problem statuses."""
    return {status: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}} for status in statuses}


#: The JSON alternative to the multipart form of POST /process and POST /jobs (translated into
#: the same form fields by app.main.JsonInputMiddleware).
JSON_INPUT_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["uri"],
                    "additionalProperties": False,
                    "properties": {
                        "uri": {"type": "string", "description": "s3://bucket/key",
                                "examples": ["s3://recordings/2024/call-0001.wav"]},
                        "options": {"$ref": "#/components/schemas/ProcessingOptions"},
                    },
                }
            }
        }
    }
}  # fmt: skip


class JSONBytes(JSONResponse):
    """A JSON body serialized before the response is built (orjson, numpy-aware). A
    :class:`JSONResponse`, so that OpenAPI documents the route's response model."""

    def render(self, content: Any) -> bytes:
        assert isinstance(content, bytes), "JSONBytes takes serialized JSON"
        return content


class ProblemResponse(Response):
    """An RFC 9457 problem body; the status comes from the body's ``status``."""

    media_type = PROBLEM_MEDIA_TYPE

    def __init__(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(orjson.dumps(body), status_code=body["status"], headers=headers)


def problem_response(
    body: dict[str, Any], headers: dict[str, str] | None = None
) -> ProblemResponse:
    """A problem response, counted in ``audioproc_rejected_requests_total`` by its code."""
    metrics.REJECTED_INPUTS.labels(body["code"]).inc()
    return ProblemResponse(body, headers=headers)
