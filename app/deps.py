"""FastAPI dependencies: typed aliases for what routes need from app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.security.gate import Authorize
from app.security.keys import Principal
from app.services.jobs import JobService
from app.services.results import ResultService
from app.services.s3 import ObjectSource


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_results(request: Request) -> ResultService:
    results: ResultService = request.app.state.results
    return results


def get_jobs(request: Request) -> JobService:
    jobs: JobService = request.app.state.jobs
    return jobs


def get_objects(request: Request) -> ObjectSource:
    objects: ObjectSource = request.app.state.objects
    return objects


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ResultsDep = Annotated[ResultService, Depends(get_results)]
ObjectsDep = Annotated[ObjectSource, Depends(get_objects)]
JobsDep = Annotated[JobService, Depends(get_jobs)]

#: The caller of a route, with the scope the route needs (enforced by app.security.gate).
ProcessCaller = Annotated[Principal, Depends(Authorize("process"))]
ReadCaller = Annotated[Principal, Depends(Authorize("read"))]
DeleteCaller = Annotated[Principal, Depends(Authorize("delete"))]
