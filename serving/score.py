"""Scoring captures with the flockwatch model: inventory, windows, alerts."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from flockwatch.features.attribution import attribute
from flockwatch.features.flows import Problem, extract
from flockwatch.features.inventory import inventory
from flockwatch.features.output import frame_records
from flockwatch.models.pyfunc import score_flows
from flockwatch.models.store import load_model
from flockwatch.serving.alerts import alerts_from


@dataclass
class ScoreReport:
    devices: pl.DataFrame
    windows: pl.DataFrame
    alerts: list[dict[str, Any]]
    problems: list[Problem] = field(default_factory=list)
    model_uri: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_uri,
            "devices": frame_records(self.devices),
            "windows": [
                {**r, "top_features": __import__("json").loads(r["top_features"])
                 if r["top_features"] else None}
                for r in frame_records(self.windows)
            ],
            "alerts": self.alerts,
            "problems": [{"input": p.source, "severity": p.severity, "message": p.message}
                         for p in self.problems],
        }


def bundle_of(model: Any) -> Any:
    return model.unwrap_python_model().bundle


def score_sources(sources: Sequence[str | os.PathLike[str]], model_uri: str | None = None, *,
                  model: Any = None, on_file: Callable[[str], None] | None = None) -> ScoreReport:
    """Extract, score and summarise captures, folders or Zeek logs."""
    model = model or load_model(model_uri)
    bundle = bundle_of(model)
    result = extract(sources, on_file=on_file)
    return report(bundle, result.flows, result.problems, model_uri or "")


def report(bundle: Any, flows: pl.DataFrame, problems: list[Problem], model_uri: str = ""
           ) -> ScoreReport:
    scored = score_flows(bundle, flows)
    att = attribute(flows)
    inv = inventory(flows, att)
    per_dev = scored.sort("start").group_by("device_id").agg(
        pl.col("device_type").last(), pl.col("type_confidence").last(),
        pl.col("unknown").last(), pl.col("new_device").any(),
        pl.len().alias("windows"), pl.col("anomalous").fill_null(False).sum()
        .alias("anomalous_windows"),
    )
    devices = inv.join(per_dev, on="device_id", how="left")
    alerts = alerts_from(scored)
    return ScoreReport(devices, scored, alerts, problems, model_uri)
