"""Industrial protocols at function level: what an industrial conversation does.

A stub that the payload pass (``features.payload``) reads: ``OT_DISSECTORS`` maps
(ip protocol, server port) to a factory of per-flow dissectors, and ``OT_COLUMNS`` declares the
flow columns they fill, in the shape of ``features.schema.FLOW_COLUMNS`` (which appends them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

#: (ip protocol, server port) -> a factory of a fresh dissector for one flow (the
#: ``features.payload.Dissector`` protocol).
OT_DISSECTORS: dict[tuple[int, int], Callable[[], Any]] = {}

#: Flow columns filled by the industrial dissectors: name -> (polars dtype, description).
OT_COLUMNS: dict[str, tuple[pl.DataType, str]] = {}

__all__ = ["OT_COLUMNS", "OT_DISSECTORS"]
