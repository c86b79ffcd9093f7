"""``flockwatch score``: the inventory with types and the alerts of captures, as a table or
JSON (the orchestration is ``serving.score.score_sources``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flockwatch.serving.commands.cluster import ClusterOpt, cluster_session, read_sources
from flockwatch.serving.commands.common import (
    ModelOpt,
    ScoreFormat,
    SourcesArg,
    TrackingOpt,
    VulnsDbOpt,
    check_output,
    checked_vulns_db,
    fail,
    format_for,
    report_problems,
    require_readable,
    require_sources,
)


def score(
    sources: SourcesArg = None,
    model: ModelOpt = None,
    format: Annotated[ScoreFormat, typer.Option(
        "--format", "-f", help="table: inventory, alerts grouped into incidents, and risk "
        "findings, to read; json: the whole report (devices, windows, alerts, incidents, "
        "risk findings; schema in docs/scoring.md).")
    ] = ScoreFormat.table,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the report to this file (atomically) instead of stdout.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also write a PNG timeline: each device's anomaly score against its "
        "threshold, alerting windows in red (the devices with most alerts first).")] = None,
    html: Annotated[Path | None, typer.Option(
        "--html", help="Also write the console's pages for this report (inventory, devices "
        "with their score charts, incidents, network map) as one self-contained HTML file, "
        "to read offline or mail around.")] = None,
    include_learning: Annotated[bool, typer.Option(
        "--include-learning", help="Also raise alerts in the learning period: windows of the "
        "captures the model learnt from, before its learning ended (marked learning either "
        "way).")] = False,
    since: Annotated[str | None, typer.Option(
        help="Report windows from this time: ISO-8601 (2026-03-02T08:00, UTC unless it names "
        "a zone), or a duration after the input's first flow (3d, 36h), counted as "
        "train baseline --learning-period counts.")] = None,
    until: Annotated[str | None, typer.Option(
        help="Report windows before this time (same forms as --since).")] = None,
    tracking_uri: TrackingOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                        help="No progress bar or summary line.")] = False,
    cluster: ClusterOpt = None,
    vulns_db: VulnsDbOpt = None,
) -> None:
    """Score captures: device inventory with types, and alerts with what deviated.

    Example: flockwatch score week.pcap --since 3d --format json -o report.json --plot s.png
    """
    from flockwatch.features.output import write_atomic
    from flockwatch.models.store import (
        DEFAULT_MODEL_URI,
        ModelLoadError,
        check_local_model,
        default_tracking_uri,
    )
    from flockwatch.serving.render import render_report
    from flockwatch.serving.score import parse_time_bound, resolve_bound, score_sources

    srcs = require_sources(sources)
    format = format_for(output, format)
    check_output(output, "--output")
    check_output(plot, "--plot")
    check_output(html, "--html")
    try:
        check_local_model(model)  # a wrong path fails now, not after reading the captures
        lo = parse_time_bound(since, "--since")
        hi = parse_time_bound(until, "--until")
    except (ModelLoadError, ValueError) as exc:
        fail(exc)

    def readable(result: Any) -> None:
        require_readable(result)
        t0 = result.flows["first_seen"].min() if result.flows.height else None
        first, last = resolve_bound(lo, t0), resolve_bound(hi, t0)
        if first is not None and last is not None and first >= last:
            fail(f"--since {since} ({first:%Y-%m-%dT%H:%M:%SZ}) is not before --until {until} "
                 f"({last:%Y-%m-%dT%H:%M:%SZ})")

    # On a cluster the captures are read by the workers; the report (one inventory and one
    # set of incidents over every capture) is built here, as in-process (docs/scaling.md).
    with cluster_session(cluster, quiet) as client:
        rep = score_sources(srcs, model or DEFAULT_MODEL_URI,
                            tracking_uri=tracking_uri or default_tracking_uri(),
                            read=lambda s: read_sources(client, s, quiet),
                            on_load_error=fail, on_read=readable,
                            include_learning=include_learning, since=lo, until=hi,
                            vulns_db=checked_vulns_db(vulns_db))
    text = rep.to_json() if format is ScoreFormat.json else render_report(rep)
    if plot:
        from flockwatch.serving.plots import write_timeline

        write_timeline(rep.windows, plot, alerts=rep.alerts)
        if not quiet:
            typer.echo(f"score timeline -> {plot}", err=True)
    if html:
        from flockwatch.serving.console.html_report import report_html

        title = "flockwatch: " + ", ".join(Path(s).name for s in srcs[:3]) + (
            f" and {len(srcs) - 3} more" if len(srcs) > 3 else "")
        page = report_html(rep, title)
        write_atomic(html, lambda fh: fh.write(page))
        if not quiet:
            typer.echo(f"HTML report ({len(page.encode()) / 1e6:.1f} MB) -> {html}", err=True)
    if output:
        write_atomic(output, lambda fh: fh.write(text))
        if not quiet:
            typer.echo(f"{rep.devices.height} devices, {rep.windows.height} windows, "
                       f"{len(rep.alerts)} alerts in {len(rep.incidents)} incident(s) "
                       f"-> {output}", err=True)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    report_problems(rep, quiet)
