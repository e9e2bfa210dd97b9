"""FastAPI dependencies: typed aliases for what routes need from app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.services.results import ResultService


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_results(request: Request) -> ResultService:
    results: ResultService = request.app.state.results
    return results


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ResultsDep = Annotated[ResultService, Depends(get_results)]
