"""``flockwatch extract``: captures, folders, Zeek logs or a live interface to a flow table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flockwatch.serving.commands.common import (
    DAY,
    SUFFIX_FORMATS,
    YEAR,
    SourcesArg,
    check_output,
    fail,
    int_parser,
    report_problems,
    require_readable,
    require_sources,
    seconds_parser,
)
from flockwatch.serving.options import show
from flockwatch.serving.progress import console, extract_with_progress


def extract(
    sources: SourcesArg = None,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                      help="Write the flow table here (.parquet or .csv).")] = None,
    interface: Annotated[str | None, typer.Option("--interface", "-i",
                         help="Capture this live interface instead of reading files.")] = None,
    duration: Annotated[float, typer.Option(
        parser=seconds_parser(YEAR), metavar="SECONDS",
        help="Live capture length in seconds.")] = 60.0,
    idle_timeout: Annotated[int | None, typer.Option(
        parser=int_parser(1, int(DAY)), metavar="SECONDS",
        help="Seconds without packets that end a flow, 1-86400 (default 120).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary.")] = False,
) -> None:
    """Turn captures, folders, Zeek logs or a live interface into a flow table.

    Example: flockwatch extract site.pcap captures/ -o flows.parquet
    """
    from flockwatch.features.errors import InputError
    from flockwatch.features.flows import IDLE_TIMEOUT_S, ExtractResult
    from flockwatch.features.live import capture_interface
    from flockwatch.features.output import atomic_path

    if output is not None and SUFFIX_FORMATS.get(output.suffix.lower()) not in ("parquet",
                                                                                 "csv"):
        fail(f"--output {show(output)}: write a .parquet or .csv file (the suffix says which)")
    check_output(output, "--output")
    idle = idle_timeout or IDLE_TIMEOUT_S
    if interface:
        try:
            flows = capture_interface(interface, duration, idle_timeout=idle)
        except InputError as exc:
            fail(exc)
        result = ExtractResult(flows=flows, files=[interface])
    else:
        result = extract_with_progress(require_sources(sources), quiet=quiet, idle_timeout=idle)
        require_readable(result)
    flows = result.flows
    if output:
        with atomic_path(output) as tmp:
            if output.suffix.lower() == ".csv":
                flows.with_columns().write_csv(tmp)
            else:
                flows.write_parquet(tmp)
    else:
        import polars as pl

        with pl.Config(tbl_rows=20, tbl_cols=12):
            typer.echo(flows.select("first_seen", "src_ip", "src_port", "dst_ip", "dst_port",
                                    "protocol", "application", "packets", "bytes"))
    report_problems(result, quiet)
    if not quiet:
        dest = f" -> {output}" if output else ""
        console().print(f"{flows.height} flows, {int(flows['packets'].sum() or 0)} packets from "
                         f"{len(result.files)} input(s){dest}", highlight=False)
    if result.errors:
        raise typer.Exit(1)
