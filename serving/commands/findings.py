"""``flockwatch findings``: the risk findings of captures alone (the rules are
``features.findings``; docs/findings.md documents each)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flockwatch.serving.commands.cluster import ClusterOpt, cluster_session, read_sources
from flockwatch.serving.commands.common import (
    ScoreFormat,
    SourcesArg,
    TrackingOpt,
    check_output,
    fail,
    format_for,
    report_problems,
    require_readable,
    require_sources,
)


def _masters(model: str | None, tracking_uri: str | None) -> Any:
    """The industrial masters a baseline model learnt, or None without ``--model``."""
    if model is None:
        return None
    from flockwatch.models.bundle import bundle_of
    from flockwatch.models.store import ModelLoadError, configure, load_model

    try:
        if tracking_uri is not None:
            configure(tracking_uri)
        bundle = bundle_of(load_model(model))
    except (ModelLoadError, ValueError) as exc:
        fail(f"--model {model}: {exc}")
    return getattr(bundle, "masters", None)


def render(found: list[dict[str, Any]], title: str) -> str:
    from flockwatch.serving.render import render_findings

    if not found:
        return f"{title}: no risk findings\n"
    return "\n".join([f"{title}: {len(found)} risk finding(s) (docs/findings.md)",
                      *render_findings(found)]) + "\n"


def findings(
    sources: SourcesArg = None,
    format: Annotated[ScoreFormat, typer.Option(
        "--format", "-f", help="table: one finding a line, to read; json: the list of "
        "findings (schema: docs/findings.md). Default: the one -o's suffix names, else "
        "table.")] = ScoreFormat.table,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write here (atomically) instead of standard output.")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="A baseline model (URI or folder) whose learnt industrial "
        "masters decide which writes are findings. Without it, a device's master is the "
        "host that sent industrial requests to most devices of the input (docs/findings.md)."
        )] = None,
    tracking_uri: TrackingOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    cluster: ClusterOpt = None,
) -> None:
    """List the risks that captures show: clear-text credentials, obsolete TLS, bad
    certificates, remote access exposed, industrial writes by strangers, industrial
    protocols reaching remote addresses.

    Example: flockwatch findings plant.pcap --format json -o findings.json
    """
    from flockwatch.features.findings import findings as find
    from flockwatch.features.output import to_json, write_atomic
    from flockwatch.serving.findings import finding_dicts

    format = format_for(output, format)
    check_output(output, "--output")
    srcs = require_sources(sources)
    masters = _masters(model, tracking_uri)
    with cluster_session(cluster, quiet) as client:
        result = read_sources(client, srcs, quiet)
    require_readable(result)
    found = finding_dicts(find(result.flows, masters=masters))
    n = len(srcs)
    title = f"{n} source{'s' if n != 1 else ''}"
    text = to_json(found, indent=2) if format is ScoreFormat.json else render(found, title)
    if output:
        write_atomic(output, lambda fh: fh.write(text if text.endswith("\n") else text + "\n"))
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    report_problems(result, quiet)
    if result.errors:
        raise typer.Exit(1)
