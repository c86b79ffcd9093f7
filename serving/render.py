"""Reports as text for people: the score table with its incidents, the device inventory,
registered models, labelled captures.

Pure functions of a report, dict or frame to a string, at a fixed width, so tests read them
without a terminal and the commands print or write them as they are.
"""

from __future__ import annotations

from typing import Any


def as_text(renderable: Any, width: int) -> str:
    """A rich renderable (table) as plain text."""
    import io

    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(renderable)
    return console.export_text()


def render_inventory(inv: Any, title: str) -> str:
    """The inventory (``features.inventory.inventory``), one device a line."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    risk = "risk_score" in inv.columns
    cols = ["device", "vendor", "ips", "hostnames", "protocols", "ICS", "flows", "bytes"]
    vulns = "vulnerabilities" in inv.columns
    if risk:  # ``features.inventory.with_risk``
        cols += ["software", "risk", "find."]
    if vulns:  # ``serving.vulns.with_vulnerabilities``
        cols += ["CVEs"]
    for col in cols:
        table.add_column(col, overflow="fold")
    for r in inv.iter_rows(named=True):
        cells = [
            r["device_id"], r["vendor"] or "", ", ".join(r["ips"][:3]),
            ", ".join(r["hostnames"][:2]), ", ".join(r["protocols"][:6]),
            ", ".join(r["industrial_protocols"]) if r["industrial"] else "",
            str(r["flows"]), str(r["bytes"]),
        ]
        if risk:
            cells += [", ".join([*r["firmware"], *r["software"]][:2]), str(r["risk_score"]),
                      str(r["findings"])]
        if vulns:
            cves = r["cves"] or []
            cells.append(", ".join(cves[:2]) + (f" +{len(cves) - 2}" if len(cves) > 2 else ""))
        table.add_row(*cells)
    return as_text(table, width=180 if risk else 160)


def render_findings(findings: list[dict[str, Any]], limit: int | None = None) -> list[str]:
    """Findings one a line, most severe first: ``[severity] kind device (ip): message``."""
    shown = findings if limit is None else findings[:limit]
    lines = [f"  [{f['severity']:<6}] {f['kind']:<21} {f['device_id']}"
             + (f" ({f['ip']})" if f.get("ip") and f["ip"] != f["device_id"] else "")
             + f": {f['message']}" for f in shown]
    if limit is not None and len(findings) > limit:
        lines.append(f"  ... and {len(findings) - limit} more (--format json lists every "
                     "finding)")
    return lines


def type_cell(r: dict[str, Any]) -> tuple[str, str]:
    """(type, conf) cells: a device whose model is one of a set shows the set; an unknown
    device its category (the vendor column gives the maker), or else its nearest known type
    with that type's probability beside it, never a bare confidence next to "unknown"."""
    typ = r.get("device_type") or ""
    conf = "" if r.get("type_confidence") is None else f"{r['type_confidence']:.2f}"
    cands = r.get("candidates") or []
    if not r.get("unknown") and len(cands) > 1:
        # models the traffic cannot tell apart: the set, not a coin flip
        typ = f"{typ} (or {', '.join(c for c in cands if c != typ)})"
    if r.get("unknown") and r.get("category"):
        # what identification still says of a product it has never seen
        typ = f"{r['category']}, model unknown"
        conf = "" if r.get("category_confidence") is None else f"{r['category_confidence']:.2f}"
    elif r.get("unknown") and r.get("nearest_type"):
        typ, conf = f"{typ} (nearest {r['nearest_type']} {conf})", ""
    if r.get("new_device"):
        typ = f"{typ} (new)"
    return typ, conf


_COUNT_HEADERS = ("conf", "windows", "alerts", "anom.", "peer", "new")


def render_report(rep: Any) -> str:
    """A ``ScoreReport`` for people: one line a device, then the alerts grouped into
    incidents, each with the likely source's own alerts first and a count of the rest."""
    from rich.table import Table

    from flockwatch.serving.contract import Severity

    t = Table(title=f"{rep.devices.height} devices")
    # alerts: every alert of the device; anom., peer, new: of each kind (anomalous_window,
    # new_peer, new_device): the alerts column adds up to the summary line's count
    for col in ("device", "vendor", "ip", "type", "conf", "baseline", "windows", "alerts",
                "anom.", "peer", "new", "ICS"):
        fixed = col not in ("vendor", "type", "baseline", "ICS")
        t.add_column(col, overflow="fold", no_wrap=fixed,
                     justify="right" if col in _COUNT_HEADERS else "left")
    for r in rep.devices.sort("device_id").iter_rows(named=True):
        typ, conf = type_cell(r)
        base = r.get("baseline") or ""
        if base == "thin":
            base = f"thin ({r['learning_windows']} windows)"
        t.add_row(r["device_id"], (r["vendor"] or "")[:28], ", ".join(r["ips"][:2]), typ, conf,
                  base, str(r.get("windows") or 0), str(r["alerts"]),
                  str(r["alerts_anomalous_window"]), str(r["alerts_new_peer"]),
                  str(r["alerts_new_device"]), ", ".join(r["industrial_protocols"]))
    parts = [as_text(t, width=190)]
    if rep.since or rep.until:
        parts.append(f"windows from {rep.since or 'the start'} to {rep.until or 'the end'}")
    if rep.learning:
        lrn = rep.learning
        parts.append(f"{lrn['windows']} windows of the model's own learning captures fall in "
                     f"its learning period ({lrn['start']} .. {lrn['end']}): marked learning, "
                     + ("alerts raised there too (--include-learning)" if lrn["alerts"] else
                        "no alerts raised there (--include-learning raises them)"))
    if rep.alerts:
        parts.append(f"{len(rep.alerts)} alerts in {len(rep.incidents)} incident(s) "
                     f"(--format json lists every alert):")
        for inc in rep.incidents:
            parts.append(f"  #{inc['id']} [{inc['severity']:<6}] {inc['start']} .. {inc['end']}"
                         f"  {inc['message']}")
            # the likely source's own alerts first, then the most severe
            shown = sorted(inc["alerts"], key=lambda i: (
                rep.alerts[i]["device_id"] != inc["origin"],
                -Severity(rep.alerts[i]["severity"]).rank, rep.alerts[i]["start"]))[:_SHOWN]
            parts += [f"      [{a['severity']:<6}] {a['start']}  {a['message']}"
                      for a in (rep.alerts[i] for i in sorted(shown))]
            if len(inc["alerts"]) > _SHOWN:
                parts.append(f"      ... and {len(inc['alerts']) - _SHOWN} more")
    else:
        parts.append("no alerts")
    findings = getattr(rep, "findings", None) or []
    if findings:
        parts.append(f"{len(findings)} risk finding(s) (docs/findings.md):")
        parts += render_findings(findings, _FINDINGS_SHOWN)
    vulns = getattr(rep, "vulnerabilities", None) or []
    if vulns:
        parts.append(f"{len(vulns)} known vulnerabilit{'y' if len(vulns) == 1 else 'ies'} of "
                     "the devices' software (docs/vulns.md):")
        parts += [f"  {v['cve']:<16} {v['cvss'] if v['cvss'] is not None else '?':>4}"
                  f"{' KEV' if v['kev'] else '    '} {v['device_id']}: {v['product']} "
                  f"({v['matched_on']})" for v in vulns[:_FINDINGS_SHOWN]]
        if len(vulns) > _FINDINGS_SHOWN:
            parts.append(f"  ... and {len(vulns) - _FINDINGS_SHOWN} more (--format json lists "
                         "every one)")
    return "\n".join(parts) + "\n"


_SHOWN = 2  # alerts shown per incident in the table (most severe first)
_FINDINGS_SHOWN = 20  # findings listed under the table


def render_description(d: dict[str, Any]) -> str:
    """A registered version (``models.store.describe``) as text."""
    lines = [f"{d['uri']}" + (f"  ({', '.join('@' + a for a in d['aliases'])})"
                              if d["aliases"] else ""),
             f"  kind:               {d['kind'] or '?'}",
             f"  created (UTC):      {(d['created'] or '?').replace('+00:00', '')}",
             f"  feature set:        "
             f"{'v' + str(d['feature_set_version']) if d['feature_set_version'] else '?'}",
             f"  run:                {d['run_id'] or '?'}"]
    caps = d["training_captures"]
    lines.append("  training captures:  " + (str(caps) if caps is not None else
                                             "not recorded" if d["kind"] == "classifier"
                                             else "n/a"))
    if d["learning"]:
        lines.append("  learning:           " + ", ".join(f"{k} {v}"
                                                          for k, v in d["learning"].items()))
    if d["params"]:
        lines.append("  params:")
        lines += [f"    {k}: {v}" for k, v in sorted(d["params"].items())]
    if d["metrics"]:
        lines.append("  metrics:")
        lines += [f"    {k}: {v:.4g}" for k, v in sorted(d["metrics"].items())]
    return "\n".join(lines)


def models_table(rows: list[dict[str, Any]]) -> str:
    """Registered model versions (``models.store.list_models`` rows), one a line."""
    from rich.table import Table

    t = Table(title=f"{len(rows)} registered model version(s)")
    for col in ("model", "version", "aliases", "created (UTC)", "kind", "features"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r["name"], str(r["version"]), ", ".join("@" + a for a in r["aliases"]),
                  (r["created"] or "").replace("+00:00", ""), r["kind"] or "?",
                  f"v{r['feature_set_version']}" if r["feature_set_version"] else "?")
    return as_text(t, width=120)


def labels_table(result: Any) -> str:
    """Each capture ``datasets label`` read: devices seen, how many labelled, their types."""
    from rich.table import Table

    t = Table(title=f"{result.rows} labelled devices in {len(result.captures)} captures")
    for col in ("capture", "devices seen", "labelled", "types"):
        t.add_column(col, overflow="fold")
    for c in result.captures:
        types = sorted({d.device_type for d in c.labelled})
        t.add_row(str(c.path), str(len(c.seen)) if c.readable else "unreadable",
                  str(len(c.labelled)), ", ".join(types))
    return as_text(t, width=160)
