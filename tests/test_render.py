"""The text reports (``serving.render``) on small hand-built reports: what each cell says for a
device of a set, an unknown device with or without a category, a new device, a thin
baseline; incidents with their likely source's alerts first; the inventory, model and label
tables. No model, capture or terminal is needed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from flockwatch.serving.render import (
    labels_table,
    models_table,
    render_description,
    render_inventory,
    render_report,
    type_cell,
)
from flockwatch.serving.score import ScoreReport


def device(device_id: str, **over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "device_id": device_id, "vendor": "Acme", "ips": ["10.0.0.1"], "device_type": "plc",
        "type_confidence": 0.91, "candidates": ["plc"], "unknown": False, "category": None,
        "category_confidence": None, "nearest_type": "plc", "new_device": False,
        "baseline": "learnt", "learning_windows": 40, "windows": 12, "alerts": 0,
        "alerts_anomalous_window": 0, "alerts_new_peer": 0, "alerts_new_device": 0,
        "industrial_protocols": [],
    }
    row.update(over)
    return row


def devices(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema={
        "device_id": pl.String, "vendor": pl.String, "ips": pl.List(pl.String),
        "device_type": pl.String, "type_confidence": pl.Float64,
        "candidates": pl.List(pl.String), "unknown": pl.Boolean, "category": pl.String,
        "category_confidence": pl.Float64, "nearest_type": pl.String,
        "new_device": pl.Boolean, "baseline": pl.String, "learning_windows": pl.Int64,
        "windows": pl.Int64, "alerts": pl.Int64, "alerts_anomalous_window": pl.Int64,
        "alerts_new_peer": pl.Int64, "alerts_new_device": pl.Int64,
        "industrial_protocols": pl.List(pl.String)})


def row_of(text: str, device_id: str) -> list[str]:
    line = next(x for x in text.splitlines() if device_id in x)
    return [c.strip() for c in line.split("│")[1:-1]]


def test_type_cell_says_what_identification_knows():
    assert type_cell(device("a")) == ("plc", "0.91")
    # models the traffic cannot tell apart: the set
    assert type_cell(device("a", device_type="cam-a", candidates=["cam-a", "cam-b", "cam-c"])
                     ) == ("cam-a (or cam-b, cam-c)", "0.91")
    # an unknown product with a category: the category and its own confidence
    assert type_cell(device("a", device_type="unknown", unknown=True, category="camera",
                            category_confidence=0.7, candidates=["cam-a", "cam-b"])
                     ) == ("camera, model unknown", "0.70")
    # without one: the nearest known type, its probability beside it, no bare confidence
    assert type_cell(device("a", device_type="unknown", unknown=True, nearest_type="plug",
                            type_confidence=0.33)) == ("unknown (nearest plug 0.33)", "")
    assert type_cell(device("a", new_device=True, type_confidence=None)) == ("plc (new)", "")


def test_report_table_and_incidents():
    alerts = [
        {"device_id": "aa:01", "severity": "low", "start": "2026-03-02T08:00:00Z",
         "message": "new peer 10.0.0.9"},
        {"device_id": "aa:02", "severity": "high", "start": "2026-03-02T08:05:00Z",
         "message": "bytes out 40x expected"},
        {"device_id": "aa:01", "severity": "medium", "start": "2026-03-02T08:10:00Z",
         "message": "modbus writes 12x expected"},
        {"device_id": "aa:02", "severity": "medium", "start": "2026-03-02T08:15:00Z",
         "message": "new peer 10.0.0.10"},
    ]
    incidents = [{"id": 1, "severity": "high", "start": "2026-03-02T08:00:00Z",
                  "end": "2026-03-02T08:20:00Z", "message": "aa:01 and 1 other device",
                  "origin": "aa:01", "alerts": [0, 1, 2, 3]}]
    devs = devices(
        device("aa:02", alerts=2, alerts_anomalous_window=1, alerts_new_peer=1,
               baseline="thin", learning_windows=3, industrial_protocols=["modbus"]),
        device("aa:01", alerts=2, alerts_anomalous_window=1, alerts_new_peer=1,
               device_type="unknown", unknown=True, category="camera",
               category_confidence=0.8),
    )
    rep = ScoreReport(devs, pl.DataFrame(), alerts, incidents=incidents,
                      since="2026-03-02T08:00:00Z")
    text = render_report(rep)
    assert text.startswith(" " * 10) and "2 devices" in text.splitlines()[0]
    first, second = row_of(text, "aa:01"), row_of(text, "aa:02")
    assert first[:5] == ["aa:01", "Acme", "10.0.0.1", "camera, model unknown", "0.80"]
    assert first[6:11] == ["12", "2", "1", "1", "0"]
    assert second[5] == "thin (3 windows)" and second[-1] == "modbus"
    assert text.index("aa:01") < text.index("aa:02")  # sorted by device
    lines = text.splitlines()
    assert "windows from 2026-03-02T08:00:00Z to the end" in lines
    assert "4 alerts in 1 incident(s) (--format json lists every alert):" in lines
    at = lines.index("4 alerts in 1 incident(s) (--format json lists every alert):")
    assert lines[at + 1] == ("  #1 [high  ] 2026-03-02T08:00:00Z .. 2026-03-02T08:20:00Z"
                             "  aa:01 and 1 other device")
    # the likely source's own alerts (aa:01) are the two shown, in time order; then the rest
    assert lines[at + 2:at + 5] == [
        "      [low   ] 2026-03-02T08:00:00Z  new peer 10.0.0.9",
        "      [medium] 2026-03-02T08:10:00Z  modbus writes 12x expected",
        "      ... and 2 more"]
    assert text.endswith("more\n")


def test_report_without_alerts_and_learning_line():
    learning = {"windows": 5, "start": "2026-03-01T00:00:00Z", "end": "2026-03-02T00:00:00Z",
                "alerts": False}
    rep = ScoreReport(devices(device("aa:03")), pl.DataFrame(), [], learning=learning)
    text = render_report(rep)
    assert text.splitlines()[-1] == "no alerts"
    assert ("5 windows of the model's own learning captures fall in its learning period "
            "(2026-03-01T00:00:00Z .. 2026-03-02T00:00:00Z): marked learning, no alerts "
            "raised there (--include-learning raises them)") in text
    assert "windows from" not in text
    rep.learning = {**learning, "alerts": True}
    assert "alerts raised there too (--include-learning)" in render_report(rep)


def test_inventory_table():
    inv = pl.DataFrame([
        {"device_id": "aa:01", "vendor": None, "ips": ["10.0.0.1", "10.0.0.2", "10.0.0.3",
                                                       "10.0.0.4"],
         "hostnames": ["plc-1"], "protocols": ["TCP"], "industrial": False,
         "industrial_protocols": [], "flows": 7, "bytes": 1234},
        {"device_id": "aa:02", "vendor": "Siemens", "ips": ["10.0.0.5"], "hostnames": [],
         "protocols": ["Modbus"], "industrial": True, "industrial_protocols": ["modbus"],
         "flows": 3, "bytes": 99},
    ])
    text = render_inventory(inv, "2 devices")
    assert row_of(text, "aa:01") == ["aa:01", "", "10.0.0.1, 10.0.0.2, 10.0.0.3", "plc-1",
                                     "TCP", "", "7", "1234"]
    assert row_of(text, "aa:02") == ["aa:02", "Siemens", "10.0.0.5", "", "Modbus", "modbus",
                                     "3", "99"]
    assert "10.0.0.4" not in text


def test_description_and_models_table():
    d = {"uri": "models:/site/2", "aliases": ["champion"], "kind": "classifier",
         "created": "2026-03-02T08:00:00+00:00", "feature_set_version": 7, "run_id": "r1",
         "training_captures": None, "learning": None, "params": {"seed": 0, "folds": 4},
         "metrics": {"macro_f1": 0.91234}}
    assert render_description(d).splitlines() == [
        "models:/site/2  (@champion)",
        "  kind:               classifier",
        "  created (UTC):      2026-03-02T08:00:00",
        "  feature set:        v7",
        "  run:                r1",
        "  training captures:  not recorded",
        "  params:",
        "    folds: 4",
        "    seed: 0",
        "  metrics:",
        "    macro_f1: 0.9123"]
    text = render_description({**d, "aliases": [], "kind": "baseline", "params": {},
                                "metrics": {}, "learning": {"windows": 40}})
    assert text.splitlines()[0] == "models:/site/2"
    assert "  training captures:  n/a" in text and "  learning:           windows 40" in text
    rows = [{"name": "site", "version": 2, "aliases": ["champion"], "kind": None,
             "created": "2026-03-02T08:00:00+00:00", "feature_set_version": None}]
    table = models_table(rows)
    assert "1 registered model version(s)" in table
    assert row_of(table, "site") == ["site", "2", "@champion", "2026-03-02T08:00:00", "?", "?"]


@dataclass
class _Labelled:
    device_type: str


@dataclass
class _Capture:
    path: Path
    seen: dict[str, int]
    readable: bool
    labelled: list[_Labelled] = field(default_factory=list)


@dataclass
class _Result:
    rows: int
    captures: list[_Capture]


def test_labels_table():
    result = _Result(2, [
        _Capture(Path("lab/a.pcap"), {"m1": 3, "m2": 1, "m3": 1}, True,
                 [_Labelled("plug"), _Labelled("cam")]),
        _Capture(Path("lab/b.pcap"), {}, False),
    ])
    text = labels_table(result)
    assert "2 labelled devices in 2 captures" in text
    assert row_of(text, "a.pcap") == ["lab/a.pcap", "3", "2", "cam, plug"]
    assert row_of(text, "b.pcap") == ["lab/b.pcap", "unreadable", "0", ""]
