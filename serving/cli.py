"""The ``flockwatch`` command line: one root typer app for every stage.

Heavy libraries (torch, lightgbm, mlflow, nfstream) are imported inside the commands, so
``flockwatch --help`` answers fast. Failures print one line on stderr and exit 1.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

app = typer.Typer(
    name="flockwatch",
    help="Passive discovery, classification and behavioural baselining of IoT/OT devices "
    "from their network traffic.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
datasets_app = typer.Typer(help="Labelled capture sets and the synthetic IoT/OT site.",
                           no_args_is_help=True)
train_app = typer.Typer(help="Train models, log them to MLflow, register them.",
                        no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(train_app, name="train")


class TableFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class ScoreFormat(str, Enum):
    table = "table"
    json = "json"


TrackingOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI",
                 help="MLflow tracking URI (default: SQLite store under FLOCKWATCH_HOME)."),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model URI: models:/NAME@ALIAS, models:/NAME/VERSION, "
                 "runs:/..., or a local model folder. Default: models:/flockwatch@champion."),
]
SourcesArg = Annotated[
    list[Path] | None,
    typer.Argument(help="Capture files (.pcap, .pcapng), folders of them (searched "
                   "recursively) or Zeek conn.log files (TSV or JSON lines).",
                   show_default=False),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, no traceback, non-zero exit."""
    typer.echo(f"flockwatch: error: {message}", err=True)
    raise typer.Exit(code)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def _extract_with_progress(sources: list[Path], quiet: bool = False, **kwargs: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flockwatch.features.flows import expand_sources, extract

    files, _ = expand_sources(sources)
    console = _console()
    with Progress(TextColumn("[bold]reading"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                  disable=quiet or len(files) < 2, transient=True) as progress:
        task = progress.add_task("", total=len(files))

        def tick(name: str) -> None:
            progress.update(task, advance=1, description=Path(name).name[-40:])

        result = extract(sources, on_file=tick, **kwargs)
    return result


def _report_problems(result: Any, quiet: bool = False) -> None:
    """List every input with a problem at the end of a batch."""
    if not result.problems:
        return
    console = _console()
    errors = [p for p in result.problems if p.severity == "error"]
    others = [p for p in result.problems if p.severity != "error"]
    if others and not quiet:
        console.print(f"[yellow]{len(others)} input(s) read with remarks:[/yellow]")
        for p in others:
            console.print(f"  {p.severity}: {p}", markup=False, highlight=False)
    if errors:
        console.print(f"[red]{len(errors)} input(s) could not be read:[/red]")
        for p in errors:
            console.print(f"  error: {p}", markup=False, highlight=False)


def _require_sources(sources: list[Path] | None) -> list[Path]:
    if not sources:
        raise typer.BadParameter("give at least one capture, folder or Zeek log",
                                 param_hint="SOURCE")
    return sources


@app.command()
def extract(
    sources: SourcesArg = None,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                      help="Write the flow table here (.parquet or .csv).")] = None,
    interface: Annotated[str | None, typer.Option("--interface", "-i",
                         help="Capture this live interface instead of reading files.")] = None,
    duration: Annotated[float, typer.Option(help="Live capture length in seconds.")] = 60.0,
    idle_timeout: Annotated[int | None, typer.Option(
        help="Seconds without packets that end a flow (default 120 for files, 5 live).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary.")] = False,
) -> None:
    """Turn captures, folders, Zeek logs or a live interface into a flow table.

    Example: flockwatch extract site.pcap captures/ -o flows.parquet
    """
    from flockwatch.features.errors import InputError
    from flockwatch.features.flows import ExtractResult, capture_interface
    from flockwatch.features.output import atomic_path

    if interface:
        try:
            flows = capture_interface(interface, duration, idle_timeout=idle_timeout or 5)
        except InputError as exc:
            fail(str(exc))
        result = ExtractResult(flows=flows, files=[interface])
    else:
        kwargs = {"idle_timeout": idle_timeout} if idle_timeout else {}
        result = _extract_with_progress(_require_sources(sources), quiet=quiet, **kwargs)
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
    _report_problems(result, quiet)
    if not quiet:
        dest = f" -> {output}" if output else ""
        _console().print(f"{flows.height} flows, {int(flows['packets'].sum() or 0)} packets from "
                         f"{len(result.files)} input(s){dest}", highlight=False)
    if result.errors:
        raise typer.Exit(1)


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
        text = _render_inventory(df, title)
    if output:
        write_atomic(output, lambda fh: fh.write(text))
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _render_inventory(inv: Any, title: str) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in ("device", "vendor", "ips", "hostnames", "protocols", "ICS", "flows", "bytes"):
        table.add_column(col, overflow="fold")
    for r in inv.iter_rows(named=True):
        table.add_row(
            r["device_id"], r["vendor"] or "", ", ".join(r["ips"][:3]),
            ", ".join(r["hostnames"][:2]), ", ".join(r["protocols"][:6]),
            ", ".join(r["industrial_protocols"]) if r["industrial"] else "",
            str(r["flows"]), str(r["bytes"]),
        )
    console = Console(width=160, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text()


@app.command()
def inventory(
    sources: SourcesArg = None,
    format: Annotated[TableFormat, typer.Option("--format", "-f",
                      help="table for people, json or csv for machines.")] = TableFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                      help="Write here instead of standard output.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """List the devices seen in captures or Zeek logs: vendor, addresses, names, protocols.

    Example: flockwatch inventory plant.pcap --format json -o devices.json
    """
    from flockwatch.features.inventory import inventory as build_inventory

    result = _extract_with_progress(_require_sources(sources), quiet=quiet)
    inv = build_inventory(result.flows)
    _write_table(inv, format, output, f"{inv.height} devices")
    _report_problems(result, quiet)
    if result.errors:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
