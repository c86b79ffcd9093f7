"""Scoring captures with the flockwatch model: inventory, windows, alerts."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from flockwatch.features.attribution import attribute
from flockwatch.features.flows import Problem, extract
from flockwatch.features.inventory import inventory
from flockwatch.features.output import ISO_UTC, frame_records, to_json
from flockwatch.features.windows import WindowSpec, assign_windows
from flockwatch.models.pyfunc import score_flows
from flockwatch.models.store import load_model
from flockwatch.serving.alerts import alerts_from, incidents

_TOP_DTYPE = pl.List(pl.Struct({"feature": pl.String, "observed": pl.Float64,
                                "expected": pl.Float64, "share": pl.Float64}))


@dataclass
class ScoreReport:
    devices: pl.DataFrame
    windows: pl.DataFrame
    alerts: list[dict[str, Any]]
    problems: list[Problem] = field(default_factory=list)
    model_uri: str = ""
    #: alerts grouped into incidents (``serving.alerts.incidents``)
    incidents: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        """The report as JSON text: indented, one scored window a line (windows are most of a
        report, and are encoded column-wise rather than object by object)."""
        mark = "\u0000windows\u0000"
        text = to_json(self._document(mark), indent=2)
        return text.replace(json.dumps(mark), windows_json(self.windows, indent="    "), 1)

    def _document(self, windows: Any) -> dict[str, Any]:
        return {
            "model": self.model_uri,
            "devices": frame_records(self.devices),
            "windows": windows,
            "alerts": self.alerts,
            "incidents": self.incidents,
            "problems": [{"input": p.source, "severity": p.severity, "message": p.message}
                         for p in self.problems],
        }


def windows_json(windows: pl.DataFrame, indent: str = "") -> str:
    """Scored windows (``score_flows`` output) as a JSON array, ``top_features`` as objects,
    encoded column-wise; with ``indent``, one window a line."""
    if windows.height == 0:
        return "[]"
    w = windows.with_columns(
        pl.col(c).dt.strftime(ISO_UTC)
        for c, t in windows.schema.items() if isinstance(t, pl.Datetime)
    ).with_columns(pl.col("top_features").str.json_decode(_TOP_DTYPE))
    lines = w.write_ndjson().splitlines()
    if not indent:
        return "[" + ",".join(lines) + "]"
    return "[\n" + ",\n".join(indent + x for x in lines) + "\n" + indent[:-2] + "]"


def bundle_of(model: Any) -> Any:
    return model.unwrap_python_model().bundle


def score_sources(sources: Sequence[str | os.PathLike[str]], model_uri: str | None = None, *,
                  model: Any = None, on_file: Callable[[str], None] | None = None) -> ScoreReport:
    """Extract, score and summarise captures, folders or Zeek logs."""
    model = model or load_model(model_uri)
    bundle = bundle_of(model)
    result = extract(sources, on_file=on_file)
    return report(bundle, result.flows, result.problems, model_uri or "")


def report(bundle: Any, flows: pl.DataFrame, problems: list[Problem], model_uri: str = "", *,
           window: WindowSpec | None = None, known_new: set[str] | None = None) -> ScoreReport:
    """Score flows into the inventory, the scored windows and the alerts.

    ``window`` overrides the bundle's window alignment; ``known_new`` lists devices already
    reported as new (the sensor reports each once).
    """
    att = attribute(flows)
    assigned = assign_windows(att, window or bundle.window)  # for scoring and new peers
    scored = score_flows(bundle, flows, attributed=att, assigned=assigned, window=window)
    inv = inventory(flows, att)
    peers = new_peers(bundle, assigned)
    per_dev = scored.sort("start").group_by("device_id").agg(
        pl.col("device_type").last(), pl.col("type_confidence").last(),
        pl.col("unknown").last(), pl.col("new_device").any(),
        pl.len().alias("windows"), pl.col("anomalous").fill_null(False).sum()
        .alias("anomalous_windows"),
    )
    devices = inv.join(per_dev, on="device_id", how="left")
    if getattr(bundle, "baseline", None) is not None:
        n, state = bundle.baseline.learning_status(devices["device_id"].to_list())
    else:
        n, state = [None] * devices.height, [None] * devices.height
    devices = devices.with_columns(pl.Series("learning_windows", n, dtype=pl.Int64),
                                   pl.Series("baseline", state, dtype=pl.String))
    alerts = alerts_from(scored, known_new, new_peers=peers,
                         window_peers=window_peers(scored, assigned))
    grouped = incidents(alerts)
    for inc in grouped:
        for i in inc["alerts"]:
            alerts[i]["incident"] = inc["id"]
    return ScoreReport(devices, scored, alerts, problems, model_uri, grouped)


def window_peers(scored: pl.DataFrame, assigned: pl.DataFrame, limit: int = 20
                 ) -> pl.DataFrame:
    """The local peers of each anomalous window's device in that window, most flows first (at
    most ``limit``): who it was talking to when it deviated, which ties a scanner to its
    victims (``serving.alerts.incidents``)."""
    keys = scored.filter(pl.col("anomalous").fill_null(False)).select(
        "source", "device_id", pl.col("start").alias("window_start"))
    return (
        assigned.filter(pl.col("peer_local") & pl.col("peer_ip").is_not_null())
        .join(keys, on=["source", "device_id", "window_start"], how="semi")
        .group_by("source", "device_id", "window_start", "peer_ip").agg(pl.len().alias("n"))
        .sort(["n", "peer_ip"], descending=[True, False])
        .group_by("source", "device_id", "window_start", maintain_order=True)
        .agg(pl.col("peer_ip").head(limit).alias("local_peers"))
    )


def new_peers(bundle: Any, assigned: pl.DataFrame) -> pl.DataFrame | None:
    """New local peers per window (``assigned``: attributed flows with window columns), when
    the model learnt its devices' peers."""
    if getattr(bundle, "peers", None) is None or assigned.height == 0:
        return None
    return bundle.peers.new_peers(assigned)


_STR_LIST = {"type": "array", "items": {"type": "string"}}
_NUM = {"type": ["number", "null"]}
_TIME = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"}
_TOP = {"type": ["array", "null"], "items": {
    "type": "object", "required": ["feature", "observed", "expected"],
    "properties": {"feature": {"type": "string"}, "observed": {"type": "number"},
                   "expected": {"type": "number"}, "share": {"type": "number"}}}}

#: The documented shape of ``flockwatch score --format json`` (JSON Schema, draft 2020-12).
SCORE_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["model", "devices", "windows", "alerts", "incidents", "problems"],
    "properties": {
        "model": {"type": "string"},
        "devices": {"type": "array", "items": {
            "type": "object",
            "required": ["device_id", "mac", "vendor", "ips", "hostnames", "server_names",
                         "protocols", "applications", "industrial", "industrial_protocols",
                         "first_seen", "last_seen", "flows", "packets", "bytes", "device_type",
                         "type_confidence", "unknown", "new_device", "windows",
                         "anomalous_windows", "learning_windows", "baseline"],
            "properties": {
                "device_id": {"type": "string"}, "mac": {"type": ["string", "null"]},
                "vendor": {"type": ["string", "null"]}, "ips": _STR_LIST,
                "hostnames": _STR_LIST, "server_names": _STR_LIST, "protocols": _STR_LIST,
                "applications": _STR_LIST, "industrial": {"type": "boolean"},
                "industrial_protocols": _STR_LIST, "first_seen": _TIME, "last_seen": _TIME,
                "flows": {"type": "integer"}, "packets": {"type": "integer"},
                "bytes": {"type": "integer"}, "device_type": {"type": ["string", "null"]},
                "type_confidence": _NUM, "unknown": {"type": ["boolean", "null"]},
                "new_device": {"type": ["boolean", "null"]},
                "windows": {"type": "integer"}, "anomalous_windows": {"type": "integer"},
                "learning_windows": {"type": ["integer", "null"]},
                "baseline": {"enum": ["learned", "thin", "new", None]},
            }}},
        "windows": {"type": "array", "items": {
            "type": "object",
            "required": ["device_id", "mac", "start", "end", "device_type", "type_confidence",
                         "unknown", "anomaly_score", "threshold", "anomalous", "top_features"],
            "properties": {
                "device_id": {"type": "string"}, "mac": {"type": ["string", "null"]},
                "start": _TIME, "end": _TIME, "device_type": {"type": ["string", "null"]},
                "type_confidence": _NUM, "unknown": {"type": ["boolean", "null"]},
                "anomaly_score": _NUM, "threshold": _NUM,
                "anomalous": {"type": ["boolean", "null"]}, "top_features": _TOP,
            }}},
        "alerts": {"type": "array", "items": {
            "type": "object",
            "required": ["kind", "severity", "device_id", "mac", "start", "end", "score",
                         "threshold", "top_features", "message"],
            "properties": {
                "kind": {"enum": ["anomalous_window", "new_device", "new_peer"]},
                "severity": {"enum": ["low", "medium", "high"]},
                "device_id": {"type": "string"}, "start": _TIME, "end": _TIME,
                "score": _NUM, "threshold": _NUM, "top_features": _TOP,
                "message": {"type": "string"}, "incident": {"type": "integer", "minimum": 1},
            }}},
        "incidents": {"type": "array", "items": {
            "type": "object",
            "required": ["id", "severity", "start", "end", "source", "devices", "kinds",
                         "alerts", "message"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "severity": {"enum": ["low", "medium", "high"]},
                "start": _TIME, "end": _TIME, "source": {"type": ["string", "null"]},
                "devices": _STR_LIST,
                "kinds": {"type": "object", "additionalProperties": {"type": "integer"}},
                "alerts": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "message": {"type": "string"},
            }}},
        "problems": {"type": "array"},
    },
}
