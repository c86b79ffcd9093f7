"""The flockwatch home folder (``FLOCKWATCH_HOME``, default ``~/.flockwatch``): the embedded
MLflow store, model and flow caches live under it. In ``features``, the base layer, because
both ``datasets`` (flow caches) and ``models`` (the registry) need it."""

from __future__ import annotations

import os
from pathlib import Path


def flockwatch_home() -> Path:
    return Path(os.environ.get("FLOCKWATCH_HOME") or Path.home() / ".flockwatch").expanduser()
