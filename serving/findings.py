"""Risk findings as the output contract carries them (``contract.Finding``), and the live
sensor's memory of those it reported. The rules themselves are ``features.findings``."""

from __future__ import annotations

from typing import Any

import polars as pl

from flockwatch.features.findings import SEVERITY_RANK
from flockwatch.features.output import iso_utc
from flockwatch.serving.contract import Finding, FindingKind, Severity

#: CEF signature ID of each finding kind, beside the alerts' 100 (anomalous window), 200 (new
#: device) and 300 (new peer): docs/findings.md and docs/live.md list them.
FINDING_SIGNATURES: dict[str, int] = {
    "cleartext_credentials": 401, "obsolete_tls": 402, "bad_certificate": 403,
    "remote_access_exposed": 404, "industrial_write": 405, "industrial_remote": 406}


def finding_dicts(found: pl.DataFrame) -> list[dict[str, Any]]:
    """``features.findings.summarise`` rows as the report's and the sinks' dicts."""
    return [Finding(
        kind=FindingKind(r["kind"]), severity=Severity(r["severity"]),
        device_id=r["device_id"], mac=r["mac"], ip=r["ip"],
        first_seen=iso_utc(r["first_seen"]), last_seen=iso_utc(r["last_seen"]),
        flows=list(r["flows"]), message=r["message"]).to_dict()
        for r in found.iter_rows(named=True)]


def is_finding(record: dict[str, Any]) -> bool:
    return record.get("kind") in FINDING_SIGNATURES


class ReportedFindings:
    """What a live sensor has reported: each (device, rule) once, however many windows show
    it again (``fresh`` keeps only findings not reported before and remembers them)."""

    def __init__(self) -> None:
        #: device -> rule -> the most severe severity seen
        self._seen: dict[str, dict[str, str]] = {}

    def fresh(self, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for f in found:
            mine = self._seen.setdefault(f["device_id"], {})
            old = mine.get(f["kind"])
            if old is None:
                out.append(f)
            if old is None or SEVERITY_RANK[f["severity"]] > SEVERITY_RANK[old]:
                mine[f["kind"]] = f["severity"]
        return out

    def risk(self, devices: pl.DataFrame) -> pl.DataFrame:
        """``devices`` with ``risk_score`` and ``findings`` over every finding reported so
        far (``features.inventory.risk_score``), not the last window's alone."""
        from flockwatch.features.inventory import risk_score

        ids = devices["device_id"].to_list()
        sev = [list(self._seen.get(d, {}).values()) for d in ids]
        return devices.with_columns(
            pl.Series("risk_score", [risk_score(s) for s in sev], dtype=pl.Int64),
            pl.Series("findings", [len(s) for s in sev], dtype=pl.Int64))

    def __len__(self) -> int:
        return sum(len(k) for k in self._seen.values())


__all__ = ["FINDING_SIGNATURES", "ReportedFindings", "finding_dicts", "is_finding"]
