"""What a training run returns: one typed result for both trainers.

The CLI prints it, the demo chains it (the classifier's URI goes into the baseline's
bundle) and experiments read it; a dict with keys that only some runs carry made each of
them guess which keys exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Registered:
    """Where a logged model went: its run, its URI, and its registry version and alias."""

    run_id: str
    model_uri: str  # models:/NAME/VERSION when registered, else the run's artifact URI
    version: str | None = None
    champion_uri: str | None = None  # models:/NAME@champion when promoted


@dataclass(frozen=True)
class TrainResult:
    """A finished training run. ``metrics``, ``open_set``, ``classes``, ``quick`` and
    ``predictions`` describe a classifier run; ``devices``, ``windows`` and ``learning`` a
    baseline run; the other fields both."""

    kind: Literal["classifier", "baseline"]
    run_id: str
    model_uri: str
    version: str | None = None
    champion_uri: str | None = None
    problems: tuple[str, ...] = ()  # inputs that were skipped, one line each
    metrics: Mapping[str, float] = field(default_factory=dict)
    open_set: Mapping[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    quick: bool = False
    predictions: int = 0  # held-out predictions behind the cross-validation figures
    devices: int = 0
    windows: int = 0
    learning: Mapping[str, Any] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """The URI to hand on: the champion alias when promoted, else the version."""
        return self.champion_uri or self.model_uri
