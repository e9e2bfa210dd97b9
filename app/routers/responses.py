"""Shared response helpers: media types and the problem responses routes document."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response

from app.models.result import Problem

NPZ_MEDIA_TYPE = "application/x-npz"
PROBLEM_MEDIA_TYPE = "application/problem+json"


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


class JSONBytes(Response):
    """A JSON body serialized before the response is built (orjson, numpy-aware)."""

    media_type = "application/json"


class ProblemResponse(Response):
    """An RFC 9457 problem body; the status comes from the body's ``status``."""

    media_type = PROBLEM_MEDIA_TYPE

    def __init__(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(orjson.dumps(body), status_code=body["status"], headers=headers)
