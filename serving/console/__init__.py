"""The web console of ``flockwatch serve``: inventory, device pages, incidents and a network
map over a scored report or a running sensor's files, and the JSON API under ``/api/`` that
shows the same data. ``attach`` adds both to the FastAPI app of ``serving.rest``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request

from flockwatch.serving.console.data import (
    Decisions,
    MarkedSource,
    ReportSource,
    SensorSource,
    Snapshot,
    Source,
)

__all__ = ["Decisions", "ReportSource", "SensorSource", "Snapshot", "Source", "attach"]


def attach(app: Any, source: Source, model_info: dict[str, Any], token: str | None,
           decisions_path: Path | None = None) -> None:
    """Add the console's pages, its API, its static files and its OpenAPI document."""
    from fastapi import Depends
    from fastapi.staticfiles import StaticFiles

    from flockwatch.serving.console import api, pages

    decisions = Decisions(decisions_path or source.decisions_path)
    source = MarkedSource(source, decisions)
    app.include_router(api.router(source, decisions, model_info),
                       dependencies=[Depends(same_origin)])
    app.include_router(pages.router(source, decisions, model_info, token),
                       dependencies=[Depends(same_origin)])
    app.mount("/static", StaticFiles(directory=pages.HERE / "static"), name="static")


def same_origin(request: Request) -> None:
    """Refuse a state-changing request that a browser sent from another site's page: with no
    token on loopback, any page the analyst opens could otherwise post to the console."""
    from starlette.exceptions import HTTPException

    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    if origin.split("://", 1)[-1] != host:
        raise HTTPException(403, "cross-site request refused")
