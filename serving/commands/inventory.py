"""``flockwatch inventory``: the devices seen in captures, as a table, JSON or CSV."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flockwatch.serving.commands.cluster import ClusterOpt, cluster_session, read_sources
from flockwatch.serving.commands.common import (
    SourcesArg,
    TableFormat,
    VulnsDbOpt,
    check_output,
    checked_vulns_db,
    format_for,
    report_problems,
    require_readable,
    require_sources,
)


def _write_table(df: Any, fmt: TableFormat, output: Path | None, title: str) -> None:
    from flockwatch.features.output import frame_records, to_json, write_atomic

    if fmt is TableFormat.json:
        text = to_json(frame_records(df), indent=2)
    elif fmt is TableFormat.csv:
        import polars as pl

        flat = df.with_columns(pl.col(c).list.join(";") for c, t in df.schema.items()
                               if isinstance(t, pl.List))
        text = flat.write_csv()
    else:
        from flockwatch.serving.render import render_inventory

        text = render_inventory(df, title)
    if output:
        write_atomic(output, lambda fh: fh.write(text))
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def inventory(
    sources: SourcesArg = None,
    format: Annotated[TableFormat, typer.Option("--format", "-f",
                      help="table for people, json or csv for machines (default: the one "
                      "-o's suffix names, else table).")] = TableFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                      help="Write here instead of standard output.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    cluster: ClusterOpt = None,
    vulns_db: VulnsDbOpt = None,
) -> None:
    """List the devices seen in captures or Zeek logs: vendor, addresses, names, protocols,
    software, risk score and findings (docs/findings.md), known vulnerabilities of the
    software (docs/vulns.md).

    Example: flockwatch inventory plant.pcap --format json -o devices.json
    """
    from flockwatch.features.attribution import attribute
    from flockwatch.features.findings import findings
    from flockwatch.features.inventory import inventory as build_inventory
    from flockwatch.features.inventory import with_risk
    from flockwatch.features.software import device_software
    from flockwatch.serving.vulns import with_vulnerabilities

    format = format_for(output, format)
    check_output(output, "--output")
    db = checked_vulns_db(vulns_db)
    srcs = require_sources(sources)
    with cluster_session(cluster, quiet) as client:
        result = read_sources(client, srcs, quiet)
    require_readable(result)
    att = attribute(result.flows)
    software = device_software(att)
    inv = with_risk(build_inventory(result.flows, att), findings(result.flows, att), software)
    inv, _ = with_vulnerabilities(inv, software, db)
    _write_table(inv, format, output, f"{inv.height} devices")
    report_problems(result, quiet)
    if result.errors:
        raise typer.Exit(1)
