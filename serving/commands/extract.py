"""``flockwatch extract``: captures, folders, Zeek logs or a live interface to a flow table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flockwatch.serving.commands.cluster import (
    ClusterOpt,
    cluster_session,
    extract_to_folder,
    read_sources,
)
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
from flockwatch.serving.progress import console


def extract(
    sources: SourcesArg = None,
    output_arg: Annotated[str | None, typer.Option("--output", "-o",
                      help="Write the flow table here (.parquet or .csv), or a folder or "
                           "fsspec URL: a Parquet dataset partitioned by capture and day.")
                      ] = None,
    interface: Annotated[str | None, typer.Option("--interface", "-i",
                         help="Capture this live interface instead of reading files.")] = None,
    duration: Annotated[float, typer.Option(
        parser=seconds_parser(YEAR), metavar="SECONDS",
        help="Live capture length in seconds.")] = 60.0,
    idle_timeout: Annotated[int | None, typer.Option(
        parser=int_parser(1, int(DAY)), metavar="SECONDS",
        help="Seconds without packets that end a flow, 1-86400 (default 120).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary.")] = False,
    cluster: ClusterOpt = None,
) -> None:
    """Turn captures, folders, Zeek logs or a live interface into a flow table.

    Example: flockwatch extract site.pcap captures/ -o flows.parquet
    """
    from flockwatch.features.errors import InputError
    from flockwatch.features.flows import IDLE_TIMEOUT_S, ExtractResult
    from flockwatch.features.flowset import is_folder_output
    from flockwatch.features.live import capture_interface
    from flockwatch.features.output import atomic_path

    # a str, not a Path: a URL's "//" must survive
    if output_arg is not None and not interface and is_folder_output(output_arg):
        _extract_dataset(sources, output_arg, quiet, cluster, idle_timeout)
        return
    output = Path(output_arg) if output_arg is not None else None
    if output is not None and SUFFIX_FORMATS.get(output.suffix.lower()) not in ("parquet",
                                                                                 "csv"):
        fail(f"--output {show(output)}: write a .parquet or .csv file (the suffix says which), "
             "or name a folder for a partitioned dataset")
    check_output(output, "--output")
    idle = idle_timeout or IDLE_TIMEOUT_S
    if interface:
        try:
            flows = capture_interface(interface, duration, idle_timeout=idle)
        except InputError as exc:
            fail(exc)
        result = ExtractResult(flows=flows, files=[interface])
    else:
        srcs = require_sources(sources)
        with cluster_session(cluster, quiet) as client:
            result = read_sources(client, srcs, quiet, idle_timeout=idle)
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


def _extract_dataset(sources: SourcesArg, output: str, quiet: bool, cluster: str | None,
                     idle_timeout: int | None) -> None:
    """``extract -o FOLDER``: the partitioned Parquet dataset (``features.flowset``), written
    by the workers on a cluster."""
    from flockwatch.features.flowset import check_target
    from flockwatch.features.output import OutputError

    if "://" not in output:
        check_output(Path(output), "--output", folder=True)
    try:
        check_target(output)
    except OutputError as exc:
        fail(f"--output {show(exc.path)}: {exc.problem}")
    kwargs = {"idle_timeout": idle_timeout} if idle_timeout else {}
    srcs = require_sources(sources)
    with cluster_session(cluster, quiet) as client:
        try:
            result, rows, packets = extract_to_folder(client, srcs, output, quiet, **kwargs)
        except OutputError as exc:
            fail(f"--output {show(exc.path)}: {exc.problem}")
    if rows == 0:
        require_readable(result)
    report_problems(result, quiet)
    if not quiet:
        console().print(f"{rows} flows, {packets} packets from {len(result.files)} input(s) -> "
                        f"{output} (partitioned by capture and day)", highlight=False)
    if result.errors:
        raise typer.Exit(1)
