"""The ``flockwatch`` command line: one root typer app for every stage.

Heavy libraries (torch, lightgbm, mlflow, nfstream) are imported inside the commands, so
``flockwatch --help`` answers fast. Failures print one line on stderr and exit 1.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import re
import sys
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from flockwatch.serving.options import (
    SyslogProtocol,
    check_number,
    parse_duration_bounded,
    parse_port,
    show,
)

# typer (pinned in pyproject.toml) vendors click; its exception classes live here.
from typer._click import exceptions as click_exc
from typer.core import TyperGroup

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with control characters and line breaks escaped (``\\n``, ``\\x1b``): a
    message built from file names, option values or traffic stays one line on the terminal."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def describe(exc: BaseException) -> str:
    """The one-line ``<input>: <problem>`` of an error, its input's name quoted."""
    from flockwatch.features.errors import InputError
    from flockwatch.features.output import OutputError

    if isinstance(exc, InputError):
        return f"{show(exc.source)}: {exc.problem}"
    if isinstance(exc, OutputError):
        return f"{show(exc.path)}: {exc.problem}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{show(exc.filename)}: {exc.strerror or exc}"
    text = str(exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__


def fail(message: str | BaseException, code: int = 1) -> NoReturn:
    """One line on stderr, no traceback, non-zero exit."""
    text = describe(message) if isinstance(message, BaseException) else message
    typer.echo(f"flockwatch: error: {one_line(text)}", err=True)
    raise typer.Exit(code)


def _param_name(exc: click_exc.BadParameter) -> str:
    if isinstance(exc.param_hint, str):
        return exc.param_hint
    if exc.param_hint:
        return " / ".join(exc.param_hint)
    param = exc.param
    if param is None:
        return "value"
    longest = sorted(param.opts, key=lambda o: (not o.startswith("--"), -len(o)))
    if getattr(param, "param_type_name", "") == "option" and longest:
        return longest[0]
    return (param.name or "value").upper()


def _usage_line(exc: click_exc.UsageError) -> str:
    """``<option or argument>: <problem> (see 'flockwatch CMD --help')``."""
    where = exc.ctx.command_path if exc.ctx is not None else "flockwatch"
    if isinstance(exc, click_exc.NoSuchOption):
        name, problem = exc.option_name, "no such option"
        if exc.possibilities:
            problem += f"; did you mean {' or '.join(sorted(exc.possibilities))}?"
    elif isinstance(exc, click_exc.MissingParameter):
        name, problem = _param_name(exc), exc.message or "missing; it is required"
    elif isinstance(exc, click_exc.BadParameter):
        name, problem = _param_name(exc), exc.message
    elif isinstance(exc, click_exc.BadOptionUsage):
        name, problem = exc.option_name, exc.message
    else:
        name, problem = where.removeprefix("flockwatch").strip() or "flockwatch", exc.message
    problem = problem.replace("Value error, ", "", 1).rstrip(".")
    return f"{name}: {problem} (see '{where} --help')"


class OneLineErrors(TyperGroup):
    """The root command: every failure of every command leaves as one line on stderr,
    ``flockwatch: error: <input or option>: <problem>``, and exit status 1. Click's usage
    errors (a box and exit 2) are rewritten here, once, instead of in each command; anything
    unforeseen becomes one line too (``FLOCKWATCH_DEBUG=1`` re-raises it with its traceback).
    """

    def make_context(self, info_name: str | None, args: list[str],
                     parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click_exc.NoArgsIsHelpError:
            raise
        except click_exc.UsageError as exc:
            fail(_usage_line(exc))

    def invoke(self, ctx: Any) -> Any:
        from flockwatch.features.errors import InputError
        from flockwatch.features.output import OutputError

        try:
            return super().invoke(ctx)
        except click_exc.NoArgsIsHelpError:  # `flockwatch train` shows its commands
            raise
        except click_exc.UsageError as exc:
            fail(_usage_line(exc))
        except (typer.Exit, typer.Abort, click_exc.ClickException, KeyboardInterrupt):
            raise
        except (InputError, OutputError) as exc:
            fail(exc)
        except Exception as exc:
            if os.environ.get("FLOCKWATCH_DEBUG"):
                raise
            if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
                raise  # typer's own handling: a closed pipe ends quietly
            if isinstance(exc, OSError) and exc.filename is not None:
                fail(exc)
            fail(f"internal error: {type(exc).__name__}: {describe(exc)} (a bug: please report "
                 "it; FLOCKWATCH_DEBUG=1 shows the traceback)")


def _checked(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A typer ``parser`` from a check: its ``ValueError`` becomes a usage error."""

    def parse(value: Any) -> Any:
        try:
            return check(value)
        except (ValueError, TypeError) as exc:
            raise typer.BadParameter(str(exc)) from None

    return parse


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        raise ValueError(f"{show(value)}: expected a number") from None


def seconds_parser(maximum: float, minimum: float = 0.0) -> Callable[[Any], float]:
    """Plain seconds, finite, in (minimum, maximum]."""
    return _checked(lambda v: check_number(_number(v), minimum=minimum, maximum=maximum))


def duration_parser(minimum: float = 0.0, maximum: float | None = None
                    ) -> Callable[[Any], float]:
    """``90s``, ``15m``, ``2h``, ``7d`` (or seconds) within bounds, as seconds."""
    return _checked(lambda v: parse_duration_bounded(v, minimum=minimum, maximum=maximum))


def _whole(value: Any, low: int, high: int) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[+-]?[0-9]{1,19}", text):
        raise ValueError(f"{show(value)}: expected a whole number from {low} to {high}")
    n = int(text)
    if not low <= n <= high:
        raise ValueError(f"{n} is out of range: give a whole number from {low} to {high}")
    return n


def int_parser(low: int, high: int) -> Callable[[Any], int]:
    return _checked(lambda v: _whole(v, low, high))


#: Options shared by several commands, each checked once here.
PortOpt = Annotated[int, typer.Option(parser=_checked(parse_port), metavar="PORT",
                                      help="TCP port to listen on (1-65535).")]
DAY = 86400.0
YEAR = 366 * DAY
WindowOpt = Annotated[float, typer.Option(
    parser=duration_parser(1.0, 7 * DAY), metavar="DURATION", show_default="300s",
    help="Window length, e.g. 300s, 5m, 10s (1s to 7d).")]

app = typer.Typer(
    name="flockwatch",
    cls=OneLineErrors,
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
models_app = typer.Typer(help="Registered models: list them, promote a version to an alias "
                         "without retraining, describe a version.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(train_app, name="train")
app.add_typer(models_app, name="models")


class TableFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class ScoreFormat(StrEnum):
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
                   show_default=False,
                   # readable=False: an unreadable input is listed and skipped by the batch,
                   # not a usage error that stops it
                   readable=False),
]


def warn(message: str) -> None:
    """One line on stderr that does not stop the command."""
    typer.echo(f"flockwatch: warning: {one_line(message)}", err=True)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def _extract_with_progress(sources: list[Path], quiet: bool = False, **kwargs: Any) -> Any:
    from flockwatch.features.flows import extract
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = _console()
    # Off a terminal the bar would leave an empty line before the output or the error.
    with Progress(TextColumn("[bold]reading"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                  disable=quiet or not console.is_terminal, transient=True) as progress:
        task = progress.add_task("", total=None, visible=False)

        def start(n: int) -> None:
            progress.update(task, total=n, visible=n > 1)

        def tick(name: str) -> None:
            progress.update(task, advance=1, description=Path(name).name[-40:])

        return extract(sources, on_file=tick, on_start=start, **kwargs)


def _problem_line(p: Any) -> str:
    return f"{show(p.source)}: {one_line(p.message)}"


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
            console.print(f"  {p.severity}: {_problem_line(p)}", markup=False, highlight=False)
    if errors:
        console.print(f"[red]{len(errors)} input(s) could not be read:[/red]")
        for p in errors:
            console.print(f"  error: {_problem_line(p)}", markup=False, highlight=False)


def _require_readable(result: Any) -> None:
    """Stop before any output (no table, no file) when no input could be read: one
    ``flockwatch: error:`` line per input (a single bad input gives exactly one line)."""
    failed = {p.source for p in result.errors}
    if any(f not in failed for f in result.files):
        return
    errors = result.errors
    if not errors:
        fail("no input to read")
    for p in errors[:-1]:
        typer.echo(f"flockwatch: error: {_problem_line(p)}", err=True)
    fail(f"{show(errors[-1].source)}: {errors[-1].message}")


def _require_sources(sources: list[Path] | None) -> list[Path]:
    if not sources:
        raise typer.BadParameter("give at least one capture, folder or Zeek log",
                                 param_hint="SOURCE")
    return sources


def _check_output(path: Path | None, option: str, *, folder: bool = False,
                  append: bool = False) -> None:
    """Fail now, before any work, when an output path cannot be written."""
    from flockwatch.features.output import OutputError, check_output_path

    if path is None:
        return
    try:
        check_output_path(path, folder=folder, append=append)
    except OutputError as exc:
        fail(f"{option} {show(exc.path)}: {exc.problem}")


_SUFFIX_FORMATS = {".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _format_for(output: Path | None, fmt: StrEnum, option: str = "--format") -> Any:
    """The output format: ``--format`` when given, else the one ``-o``'s suffix names.

    A suffix that names another format than an explicit ``--format`` is an error, so that
    ``-o report.json --format table`` never writes a table into a ``.json`` file."""
    from typer._click.core import ParameterSource
    from typer._click.globals import get_current_context

    if output is None:
        return fmt
    by_suffix = _SUFFIX_FORMATS.get(output.suffix.lower())
    kind = type(fmt)
    if by_suffix is None or by_suffix not in kind.__members__:
        return fmt
    ctx = get_current_context(silent=True)
    source = ctx.get_parameter_source("format") if ctx is not None else None
    explicit = source not in (ParameterSource.DEFAULT, None)
    if not explicit:
        return kind(by_suffix)
    if by_suffix != fmt.value:
        fail(f"--output {show(output)}: the suffix {output.suffix!r} does not match "
             f"{option} {fmt.value}")
    return fmt


@app.command()
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
    from flockwatch.features.flows import ExtractResult
    from flockwatch.features.live import capture_interface
    from flockwatch.features.output import atomic_path

    if output is not None and _SUFFIX_FORMATS.get(output.suffix.lower()) not in ("parquet",
                                                                                 "csv"):
        fail(f"--output {show(output)}: write a .parquet or .csv file (the suffix says which)")
    _check_output(output, "--output")
    if interface:
        try:
            flows = capture_interface(interface, duration, idle_timeout=idle_timeout or 120)
        except InputError as exc:
            fail(exc)
        result = ExtractResult(flows=flows, files=[interface])
    else:
        kwargs = {"idle_timeout": idle_timeout} if idle_timeout else {}
        result = _extract_with_progress(_require_sources(sources), quiet=quiet, **kwargs)
        _require_readable(result)
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


def _as_text(renderable: Any, width: int) -> str:
    """A rich renderable (table) as plain text."""
    import io

    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(renderable)
    return console.export_text()


def _render_inventory(inv: Any, title: str) -> str:
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
    return _as_text(table, width=160)


@app.command()
def inventory(
    sources: SourcesArg = None,
    format: Annotated[TableFormat, typer.Option("--format", "-f",
                      help="table for people, json or csv for machines (default: the one "
                      "-o's suffix names, else table).")] = TableFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                      help="Write here instead of standard output.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """List the devices seen in captures or Zeek logs: vendor, addresses, names, protocols.

    Example: flockwatch inventory plant.pcap --format json -o devices.json
    """
    from flockwatch.features.inventory import inventory as build_inventory

    format = _format_for(output, format)
    _check_output(output, "--output")
    result = _extract_with_progress(_require_sources(sources), quiet=quiet)
    _require_readable(result)
    inv = build_inventory(result.flows)
    _write_table(inv, format, output, f"{inv.height} devices")
    _report_problems(result, quiet)
    if result.errors:
        raise typer.Exit(1)


_MAX_SYNTH_HOURS = 31 * 24.0  # a month of synthetic traffic: more is a typo, not a test site


@datasets_app.command("synthesize")
def datasets_synthesize(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write into.")],
    hours: Annotated[float, typer.Option(
        parser=seconds_parser(_MAX_SYNTH_HOURS), metavar="HOURS",
        help="Length of the attack capture in hours.")] = 2.0,
    learning_hours: Annotated[float | None, typer.Option(
        parser=seconds_parser(_MAX_SYNTH_HOURS), metavar="HOURS",
        help="Length of the attack-free learning capture (default: --hours).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 0,
    attacks: Annotated[list[str] | None, typer.Option(
        "--attacks", help="Attack kinds to inject (repeat the option); default all; "
        "'none' for none.")] = None,
) -> None:
    """Write a synthetic IoT/OT site: learning.pcap, attacks.pcap, labels.csv, attacks.csv."""
    from flockwatch.datasets.synth import ATTACK_KINDS, synthesize

    _check_output(output, "--output", folder=True)
    kinds = list(ATTACK_KINDS) if not attacks else [] if attacks == ["none"] else attacks
    try:
        caps = synthesize(output, hours=hours, learning_hours=learning_hours, seed=seed,
                          attacks=kinds)
    except ValueError as exc:
        fail(str(exc))
    for c in caps:
        typer.echo(f"{c.path}: {c.packets} packets, attacks: "
                   f"{', '.join(a.kind for a in c.attacks) or 'none'}")
    typer.echo(f"{output / 'labels.csv'}, {output / 'attacks.csv'}")


class SplitByOpt(StrEnum):
    capture = "capture"
    person = "person"
    unit = "unit"


@datasets_app.command("split")
def datasets_split(
    dataset_dir: Annotated[Path, typer.Argument(help="Folder with captures and labels.csv "
                                                "(or one sub-folder per label).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write "
                      "train/labels.csv and test/labels.csv into.")],
    test_size: Annotated[float, typer.Option(
        help="Share of each type's captures to hold out for testing.")] = 0.25,
    by: Annotated[SplitByOpt, typer.Option(
        help="What is held out whole: a capture; every capture one person made of a type "
             "(labels.csv 'person'); or every capture of one unit of a type "
             "('device_instance', else 'mac').")] = SplitByOpt.capture,
    seed: Annotated[int, typer.Option(help="Random seed: same data and seed, same split.")] = 0,
    label_column: Annotated[str, typer.Option(help="labels.csv column to stratify by.")]
    = "device_type",
) -> None:
    """Hold captures out for an honest evaluation: write train and test labels.csv files that
    point at the original captures (nothing is copied).

    Example: flockwatch datasets split ../shared/data/iot-sentinel --by unit -o split/ ;
    flockwatch train classifier split/train --register held ;
    flockwatch evaluate split/test --model models:/held/1
    """
    from flockwatch.datasets.labelled import DatasetError
    from flockwatch.datasets.split import split_dataset, write_split

    try:
        sp = split_dataset(dataset_dir, test_size=test_size, by=by.value, seed=seed,
                           label_column=label_column)
        train_csv, test_csv = write_split(sp, output)
    except (DatasetError, ValueError, OSError) as exc:
        fail(str(exc))
    typer.echo(f"train: {len(sp.train)} captures of {len(sp.types('train'))} types -> "
               f"{train_csv}")
    typer.echo(f"test: {len(sp.test)} captures of {len(sp.types('test'))} types -> {test_csv}")
    if sp.train_only:
        why = {"capture": "3 or more captures", "person": "captures by two or more persons "
               "and 3 or more captures", "unit": "two or more units and 3 or more captures"}
        typer.echo(f"only in train (a type needs {why[by.value]} to be held out): "
                   + ", ".join(sp.train_only))


@datasets_app.command("label")
def datasets_label(
    devices: Annotated[Path, typer.Option(
        "--devices", help="Device table (CSV): mac (any usual notation), the type column, "
        "optional category and vendor; other columns are ignored.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write labels.csv "
                      "into (its paths reach the captures from there; nothing is copied).")],
    sources: SourcesArg = None,
    type_column: Annotated[str, typer.Option(
        help="Device table column naming the device type; with the default, a table without "
             "device_type uses its name column.")] = "device_type",
    format: Annotated[ScoreFormat, typer.Option("--format", "-f",
                      help="table for people, json for machines.")] = ScoreFormat.table,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Label whole-site captures from a device table: one labels.csv row per (capture, MAC)
    the table lists, grouped by capture, ready for train classifier, split and evaluate.

    Captures where no listed device appears are listed at the end and skipped; captures that
    cannot be read are listed too and make the exit status 1 (as in extract); nothing
    labelled at all is an error and writes no labels.csv.

    Example: flockwatch datasets label lab/*.pcap --devices devices.csv -o lab-labelled
    """
    from flockwatch.datasets.label import label_captures, read_devices, write_labels
    from flockwatch.datasets.labelled import DatasetError
    from flockwatch.features.output import to_json
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    sources = _require_sources(sources)
    _check_output(output, "--output", folder=True)
    try:
        table = read_devices(devices, type_column)
    except DatasetError as exc:
        fail(str(exc))
    console = _console()
    with Progress(TextColumn("[bold]reading"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                  disable=quiet or not console.is_terminal, transient=True) as progress:
        task = progress.add_task("", total=None, visible=False)
        result = label_captures(
            sources, table, devices_name=str(devices),
            on_start=lambda n: progress.update(task, total=n, visible=n > 1),
            on_file=lambda name: progress.update(task, advance=1,
                                                 description=Path(name).name[-40:]))
    target = write_labels(result, output) if result.rows else None
    if format is ScoreFormat.json:
        typer.echo(to_json({
            "labels": None if target is None else str(target),
            "captures": len(result.captures),
            "rows": result.rows,
            "devices_per_capture": [
                {"path": str(c.path), "devices_seen": len(c.seen), "readable": c.readable,
                 "labelled": [{"mac": d.mac, "device_type": d.device_type,
                               "category": d.category, "vendor": d.vendor, "flows": c.seen[d.mac]}
                              for d in c.labelled]}
                for c in result.captures],
            "problems": [{"source": p.source, "severity": p.severity, "message": p.message}
                         for p in result.problems],
        }, indent=2))
    else:
        from rich.table import Table

        t = Table(title=f"{result.rows} labelled devices in {len(result.captures)} captures")
        for col in ("capture", "devices seen", "labelled", "types"):
            t.add_column(col, overflow="fold")
        for c in result.captures:
            types = sorted({d.device_type for d in c.labelled})
            t.add_row(str(c.path), str(len(c.seen)) if c.readable else "unreadable",
                      str(len(c.labelled)), ", ".join(types))
        typer.echo(_as_text(t, width=160), nl=False)
        if target is not None:
            typer.echo(f"{result.rows} row{'' if result.rows == 1 else 's'} -> {target}")
    _report_problems(result, quiet)
    if target is None:
        fail(f"{show(output / 'labels.csv')}: not written: no device of {show(devices)} appears "
             f"in the {sum(c.readable for c in result.captures)} readable capture(s)")
    if result.errors:
        raise typer.Exit(1)


def _progress_files(label: str) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.completed} files"),
                    TimeElapsedColumn(), console=_console(), transient=True)


@train_app.command("classifier")
def train_classifier_cmd(
    dataset_dir: Annotated[Path, typer.Argument(help="Folder with captures and labels.csv "
                                                "(or one sub-folder per label).")],
    label_column: Annotated[str, typer.Option(help="labels.csv column to learn.")] = "device_type",
    group_column: Annotated[str | None, typer.Option(
        help="labels.csv column grouping captures for splits (default: each capture).")] = None,
    window: WindowOpt = 300.0,
    folds: Annotated[int, typer.Option(parser=int_parser(2, 100), metavar="N",
                                       help="Capture-grouped cross-validation folds.")] = 4,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = "flockwatch-classifier",
    register: Annotated[str | None, typer.Option(help="Register the model under this name.")]
    = None,
    promote: Annotated[bool, typer.Option(help="Set the 'champion' alias on the new version.")]
    = False,
    seed: Annotated[int, typer.Option(help="Random seed: same data and seed, same model.")] = 0,
    early_seconds: Annotated[str, typer.Option(
        help="Also train on the first seconds of each capture (comma-separated lengths, or "
             "'none'), so devices are named from their first traffic.")] = "10,30,60",
    reject_quantile: Annotated[float, typer.Option(
        help="Open-set trade-off: the share of held-out captures of known types whose product "
             "evidence the 'unknown' rule would call contradictory (0 turns 'unknown' off). "
             "Higher values report more never-seen products as unknown and reject more known "
             "ones.")] = 0.04,
    coverage: Annotated[float, typer.Option(
        min=0.5, max=0.999, help="Prediction sets ('candidates'): the share of devices of known "
        "types whose type the set holds (split-conformal on held-out captures).")] = 0.95,
    site_shift: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of the behaviour classifier's answer not trusted against "
        "product evidence (at a new site, timing and volume mislead); 0 trusts it fully, 1 "
        "ignores it.")] = 0.8,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Skip the cross-validation and open-set runs that only the report "
        "needs (ten of the eleven models a full run trains): the same model, with the same "
        "rejection thresholds, without its figures.")] = False,
    jobs: Annotated[int | None, typer.Option(
        "--jobs", min=1, help="Kept for scripts; has no effect: models train one after another, "
        "each on one thread (two LightGBM trainings at once crashed).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Train a device-type classifier on labelled captures; log and register it in MLflow.

    Example: flockwatch train classifier ../shared/data/iot-sentinel --register sentinel
    """
    from flockwatch.datasets.labelled import DatasetError
    from flockwatch.features.windows import parse_duration
    from flockwatch.training.classifier import train_classifier

    try:
        early = [] if early_seconds.strip().lower() in ("", "none") else [
            parse_duration(x) or 0.0 for x in early_seconds.split(",")]
        if any(s <= 0 for s in early):
            raise ValueError(f"--early-seconds {early_seconds!r}: give positive lengths or 'none'")
        if not 0.0 <= reject_quantile < 1.0:
            raise ValueError(f"--reject-quantile {reject_quantile:g}: give a share in [0, 1)")
        with _phase_progress(quiet) as progress:
            out = train_classifier(dataset_dir, label_column=label_column, early_seconds=early,
                                   group_column=group_column,
                                   window_s=parse_duration(window) or 300.0, n_folds=folds,
                                   register_name=register, promote=promote,
                                   experiment=experiment, tracking_uri=tracking_uri, seed=seed,
                                   reject_quantile=reject_quantile, quick=quick,
                                   progress=progress, n_jobs=jobs, coverage=coverage,
                                   site_shift=site_shift)
    except (DatasetError, ValueError) as exc:
        fail(str(exc))
    m = out["metrics"]
    if quick:
        typer.echo(f"--quick: {len(out['classes'])} classes; no cross-validation or open-set "
                   "figures (train without --quick for them)")
    else:
        typer.echo(f"capture-separated CV: macro F1 {m['macro_f1']:.3f}, accuracy "
                   f"{m['accuracy']:.3f} over {len(out['classes'])} classes")
        if "set_coverage" in m:
            typer.echo(f"  category right {m['category_accuracy']:.3f}, vendor right "
                       f"{m['vendor_accuracy']:.3f}; prediction sets: coverage "
                       f"{m['set_coverage']:.3f} (stated {coverage:g}), mean size "
                       f"{m['mean_set_size']:.2f}")
    firsts = [f"{k.removeprefix('macro_f1_first_')} {v:.3f}" for k, v in m.items()
              if k.startswith("macro_f1_first_")]
    if firsts:
        typer.echo("macro F1 from the first seconds of each capture: " + ", ".join(firsts))
    lates = [f"{v:.3f}" for k, v in m.items() if k.startswith("macro_f1_after_")]
    if lates:
        typer.echo(f"macro F1 on each capture's part after its first minute: {lates[0]}")
    if out.get("open_set"):
        o = out["open_set"]
        typer.echo(f"open set: {o['unknown_rate']:.1%} of left-out types unknown, "
                   f"{o['known_rejected_rate']:.1%} of known rejected, "
                   f"AUROC {o['unknown_auroc']:.3f}")
    typer.echo(f"run {out['run_id']}")
    typer.echo(out.get("champion_uri") or out["model_uri"])


@contextlib.contextmanager
def _phase_progress(quiet: bool = False) -> Iterator[Callable[[str, int, int], None]]:
    """One progress bar per training phase, fed by the trainer's ``progress`` callback (the
    training code never prints); finished phases stay, with their time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bars = Progress(TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=_console(), disable=quiet)
    tasks: dict[str, Any] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if not tasks:  # started by the first phase: a bad input fails in one line
            bars.start()
        if phase not in tasks:
            tasks[phase] = bars.add_task(phase, total=total)
        bars.update(tasks[phase], completed=done, total=total)

    try:
        yield progress
    finally:
        if tasks:
            bars.stop()


@train_app.command("baseline")
def train_baseline_cmd(
    sources: SourcesArg = None,
    learning_period: Annotated[float | None, typer.Option(
        parser=duration_parser(1.0), metavar="DURATION",
        help="Learn from this first part of the input only, e.g. 2d, 6h (default: all).")] = None,
    window: WindowOpt = 300.0,
    classifier: Annotated[str | None, typer.Option(
        help="Bundle the classifier of this model URI.")] = None,
    register: Annotated[str | None, typer.Option(help="Register under this name.")] = None,
    promote: Annotated[bool, typer.Option(help="Set the 'champion' alias.")] = False,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = "flockwatch-baseline",
    epochs: Annotated[int, typer.Option(parser=int_parser(1, 100_000), metavar="N",
                                        help="Autoencoder training epochs.")] = 80,
    seed: Annotated[int, typer.Option(help="Random seed: same data and seed, same model.")] = 0,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Learn each device's normal behaviour from captures; log and register the model.

    Example: flockwatch train baseline week1/ --learning-period 5d --register flockwatch --promote
    """
    from flockwatch.features.windows import parse_duration
    from flockwatch.models.store import ModelLoadError
    from flockwatch.training.baseline import train_baseline

    try:
        with _progress_files("reading") as prog:
            task = prog.add_task("", total=None)
            out = train_baseline(_require_sources(sources),
                                 window_s=parse_duration(window) or 300.0,
                                 learning_period_s=parse_duration(learning_period),
                                 classifier_uri=classifier, register_name=register,
                                 promote=promote, experiment=experiment,
                                 tracking_uri=tracking_uri, seed=seed, epochs=epochs,
                                 on_file=lambda _: prog.advance(task))
    except (ModelLoadError, ValueError) as exc:
        fail(str(exc))
    for p in out["problems"]:
        typer.echo(f"  input: {one_line(p)}", err=True)
    typer.echo(f"{out['devices']} devices, {out['windows']} learning windows; run {out['run_id']}")
    typer.echo(out.get("champion_uri") or out["model_uri"])


@app.command()
def evaluate(
    dataset_dir: Annotated[Path, typer.Argument(help="Labelled capture set.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model URI or folder.")],
    label_column: Annotated[str, typer.Option(
        help="labels.csv column holding the true type.")] = "device_type",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write JSON here.")]
    = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also write the confusion matrix as a PNG.")] = None,
    reject_quantile: Annotated[float | None, typer.Option(
        help="Re-decide the model's open-set rejection at this trade-off for this evaluation "
             "(see train classifier --reject-quantile; default: the model's own).")] = None,
    coverage: Annotated[float | None, typer.Option(
        min=0.5, max=0.999, help="Re-calibrate the prediction sets to this coverage for this "
        "evaluation (default: the model's own).")] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Score every labelled capture with a model: metrics and per-capture predictions (JSON).

    The metrics cover the captures the model was not trained on (compared by content with
    the ones it records); those it was trained on are reported apart, with a warning, and a
    set of nothing else is refused: hold captures out with `flockwatch datasets split`.

    Example: flockwatch evaluate split/test --model models:/held/1 -o eval.json
    """
    from flockwatch.datasets.labelled import DatasetError
    from flockwatch.features.output import to_json, write_atomic
    from flockwatch.models.store import ModelLoadError, configure
    from flockwatch.training.evaluate import evaluate_dataset

    _check_output(output, "--output")
    _check_output(plot, "--plot")
    configure(tracking_uri)
    try:
        out = evaluate_dataset(dataset_dir, model, label_column=label_column,
                               reject_quantile=reject_quantile, coverage=coverage)
    except (DatasetError, ModelLoadError, ValueError) as exc:
        fail(exc)
    for w in out["warnings"]:
        warn(w)
    text = to_json(out, indent=2)
    if plot:
        from flockwatch.serving.plots import write_png
        from flockwatch.training.metrics import confusion_figure

        write_png(confusion_figure(out["metrics"], f"{dataset_dir.name} scored by {model}"
                                   + (" (held-out captures)" if out["seen_in_training"] else "")),
                  plot)
    if output:
        write_atomic(output, lambda fh: fh.write(text))
        m = out["metrics"]
        line = (f"macro F1 {m['macro_f1']:.3f}, accuracy {m['accuracy']:.3f} on "
                f"{m['n']} held-out captures")
        if "set_coverage" in m:
            line += (f"; category {m['category_accuracy']:.3f}, vendor "
                     f"{m['vendor_accuracy']:.3f}, sets cover {m['set_coverage']:.3f} "
                     f"(stated {m['coverage_stated']:g}) at mean size {m['mean_set_size']:.2f}")
        seen = out["seen_in_training"]
        if seen:
            s = seen["metrics"]
            line += (f" (the {seen['captures']} training captures apart: macro F1 "
                     f"{s['macro_f1']:.3f})")
        typer.echo(f"{line} -> {output}")
    else:
        typer.echo(text)


@models_app.command("list")
def models_list(
    name: Annotated[str | None, typer.Argument(help="Only this registered model's versions.")]
    = None,
    format: Annotated[ScoreFormat, typer.Option("--format", "-f",
                      help="table for people, json for machines.")] = ScoreFormat.table,
    tracking_uri: TrackingOpt = None,
) -> None:
    """List registered models: versions, aliases, created (UTC), kind, feature set version.

    Example: flockwatch models list
    """
    from flockwatch.features.output import to_json
    from flockwatch.models.store import ModelLoadError, configure, list_models

    configure(tracking_uri)
    try:
        rows = list_models(name)
    except ModelLoadError as exc:
        fail(str(exc))
    if format is ScoreFormat.json:
        typer.echo(to_json(rows, indent=2))
        return
    if not rows:
        typer.echo("no registered models (train one with --register NAME)")
        return
    from rich.table import Table

    t = Table(title=f"{len(rows)} registered model version(s)")
    for col in ("model", "version", "aliases", "created (UTC)", "kind", "features"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r["name"], str(r["version"]), ", ".join("@" + a for a in r["aliases"]),
                  (r["created"] or "").replace("+00:00", ""), r["kind"] or "?",
                  f"v{r['feature_set_version']}" if r["feature_set_version"] else "?")
    sys.stdout.write(_as_text(t, width=120))


@models_app.command("promote")
def models_promote(
    uri: Annotated[str, typer.Argument(help="The version to promote: models:/NAME/VERSION "
                                       "(or models:/NAME@ALIAS).")],
    alias: Annotated[str, typer.Option(help="Alias to point at it.")] = "champion",
    tracking_uri: TrackingOpt = None,
) -> None:
    """Point an alias (champion by default) at an existing version, without retraining.

    Example: flockwatch models promote models:/flockwatch/3 --alias champion
    """
    from flockwatch.models.store import ModelLoadError, configure, promote

    configure(tracking_uri)
    try:
        out = promote(uri, alias)
    except ModelLoadError as exc:
        fail(str(exc))
    was = (f" (was version {out['previous']})" if out["previous"] not in (None, out["version"])
           else "")
    typer.echo(f"{out['uri']} -> version {out['version']}{was}")


@models_app.command("describe")
def models_describe(
    uri: Annotated[str, typer.Argument(help="models:/NAME/VERSION or models:/NAME@ALIAS.")],
    format: Annotated[ScoreFormat, typer.Option("--format", "-f",
                      help="table for people, json for machines.")] = ScoreFormat.table,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Describe a registered version: kind, aliases, parameters, metrics, training captures,
    learning period.

    Example: flockwatch models describe models:/flockwatch@champion
    """
    from flockwatch.features.output import to_json
    from flockwatch.models.store import ModelLoadError, configure, describe

    configure(tracking_uri)
    try:
        d = describe(uri)
    except ModelLoadError as exc:
        fail(str(exc))
    if format is ScoreFormat.json:
        typer.echo(to_json(d, indent=2))
        return
    typer.echo(_render_description(d))


def _render_description(d: dict[str, Any]) -> str:
    """A registered version as text (a pure function: tests call it without a terminal)."""
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


def _type_cell(r: dict[str, Any]) -> tuple[str, str]:
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


def _render_report(rep: Any) -> str:
    from flockwatch.serving.alerts import SEVERITY_RANK
    from rich.table import Table

    t = Table(title=f"{rep.devices.height} devices")
    # alerts: every alert of the device; anom., peer, new: of each kind (anomalous_window,
    # new_peer, new_device): the alerts column adds up to the summary line's count
    for col in ("device", "vendor", "ip", "type", "conf", "baseline", "windows", "alerts",
                "anom.", "peer", "new", "ICS"):
        fixed = col not in ("vendor", "type", "baseline", "ICS")
        t.add_column(col, overflow="fold", no_wrap=fixed,
                     justify="right" if col in _COUNT_HEADERS else "left")
    for r in rep.devices.sort("device_id").iter_rows(named=True):
        typ, conf = _type_cell(r)
        base = r.get("baseline") or ""
        if base == "thin":
            base = f"thin ({r['learning_windows']} windows)"
        t.add_row(r["device_id"], (r["vendor"] or "")[:28], ", ".join(r["ips"][:2]), typ, conf,
                  base, str(r.get("windows") or 0), str(r["alerts"]),
                  str(r["alerts_anomalous_window"]), str(r["alerts_new_peer"]),
                  str(r["alerts_new_device"]), ", ".join(r["industrial_protocols"]))
    parts = [_as_text(t, width=190)]
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
                rep.alerts[i]["device_id"] != inc["source"],
                -SEVERITY_RANK[rep.alerts[i]["severity"]], rep.alerts[i]["start"]))[:_SHOWN]
            parts += [f"      [{a['severity']:<6}] {a['start']}  {a['message']}"
                      for a in (rep.alerts[i] for i in sorted(shown))]
            if len(inc["alerts"]) > _SHOWN:
                parts.append(f"      ... and {len(inc['alerts']) - _SHOWN} more")
    else:
        parts.append("no alerts")
    return "\n".join(parts) + "\n"


_SHOWN = 2  # alerts shown per incident in the table (most severe first)


@app.command()
def score(
    sources: SourcesArg = None,
    model: ModelOpt = None,
    format: Annotated[ScoreFormat, typer.Option(
        "--format", "-f", help="table: inventory and alerts, grouped into incidents, to read; "
        "json: the whole report (devices, windows, alerts, incidents; schema in the README).")
    ] = ScoreFormat.table,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the report to this file (atomically) instead of stdout.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also write a PNG timeline: each device's anomaly score against its "
        "threshold, alerting windows in red (the devices with most alerts first).")] = None,
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
) -> None:
    """Score captures: device inventory with types, and alerts with what deviated.

    Example: flockwatch score week.pcap --since 3d --format json -o report.json --plot s.png
    """
    import threading

    from flockwatch.features.flows import expand_sources
    from flockwatch.features.output import write_atomic
    from flockwatch.models.store import ModelLoadError, check_local_model, configure, load_model
    from flockwatch.serving.score import learnt_sources, parse_time_bound

    # Load the model (MLflow, LightGBM and torch imports included) while NFStream reads the
    # captures: both take seconds, and NFStream's metering runs in its own processes.
    loaded: dict[str, Any] = {}

    def _load() -> None:
        try:
            configure(tracking_uri)
            loaded["model"] = load_model(model)
            # The captures the model learnt from, by content hash, while NFStream reads.
            files, _ = expand_sources(srcs)
            loaded["learnt"] = learnt_sources(loaded["model"].unwrap_python_model().bundle,
                                              files)
            # Imported and loaded here, off the main thread: scoring and the MAC vendor table.
            import flockwatch.serving.score  # noqa: F401
            from flockwatch.features.oui import preload

            preload()
        except Exception as exc:  # noqa: BLE001 - reported on the main thread, in one line
            loaded["error"] = exc

    srcs = _require_sources(sources)
    format = _format_for(output, format)
    _check_output(output, "--output")
    _check_output(plot, "--plot")
    try:
        check_local_model(model)  # a wrong path fails now, not after reading the captures
        lo = parse_time_bound(since, "--since")
        hi = parse_time_bound(until, "--until")
    except (ModelLoadError, ValueError) as exc:
        fail(exc)
    loader = threading.Thread(target=_load, daemon=True)
    loader.start()
    result = _extract_with_progress(srcs, quiet=quiet)
    loader.join()
    if "error" in loaded:
        fail(loaded["error"])
    m = loaded["model"]
    from flockwatch.serving.score import report

    _require_readable(result)
    from flockwatch.serving.score import resolve_bound

    t0 = result.flows["first_seen"].min() if result.flows.height else None
    first, last = resolve_bound(lo, t0), resolve_bound(hi, t0)  # type: ignore[arg-type]
    if first is not None and last is not None and first >= last:
        fail(f"--since {since} ({first:%Y-%m-%dT%H:%M:%SZ}) is not before --until {until} "
             f"({last:%Y-%m-%dT%H:%M:%SZ})")
    rep = report(m.unwrap_python_model().bundle, result.flows, result.problems,
                 model or "models:/flockwatch@champion", learning_sources=loaded["learnt"],
                 include_learning=include_learning, since=first, until=last)
    text = rep.to_json() if format is ScoreFormat.json else _render_report(rep)
    if plot:
        from flockwatch.serving.plots import write_timeline

        write_timeline(rep.windows, plot, alerts=rep.alerts)
        if not quiet:
            typer.echo(f"score timeline -> {plot}", err=True)
    if output:
        write_atomic(output, lambda fh: fh.write(text))
        if not quiet:
            typer.echo(f"{rep.devices.height} devices, {rep.windows.height} windows, "
                       f"{len(rep.alerts)} alerts in {len(rep.incidents)} incident(s) "
                       f"-> {output}", err=True)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    _report_problems(result, quiet)


@app.command()
def serve(
    model: ModelOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")]
    = "127.0.0.1",
    port: PortOpt = 8080,
    token: Annotated[str | None, typer.Option(envvar="FLOCKWATCH_TOKEN",
                     help="Bearer token clients must send; required off loopback.")] = None,
    max_request_mb: Annotated[float, typer.Option(
        parser=seconds_parser(1024.0), metavar="MB",
        help="Largest request accepted, in MB (> 0, at most 1024).")] = 16.0,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Serve the model over HTTP with MLflow's scoring protocol (/invocations, /ping, /health)."""
    import logging

    from flockwatch.models.store import ModelLoadError, configure, load_model
    from flockwatch.serving.options import check_host

    try:
        check_host(host)
    except ValueError as exc:
        fail(f"--host: {exc}")
    from flockwatch.serving.rest import (
        FlockwatchServer,
        bind_socket,
        is_loopback,
        resolve_version,
    )

    if not is_loopback(host) and not token:
        fail(f"--host {show(host)}: serving beyond loopback needs --token (or FLOCKWATCH_TOKEN)")
    try:
        sock = bind_socket(host, port)  # a busy port fails now, not after loading the model
    except OSError as exc:
        fail(exc)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    configure(tracking_uri)
    uri = model or "models:/flockwatch@champion"
    try:
        m = load_model(model)
        server = FlockwatchServer(m.unwrap_python_model().bundle, host, port, token=token,
                                  max_bytes=int(max_request_mb * 1024 * 1024),
                                  model_uri=uri, model_version=resolve_version(uri),
                                  sock=sock)
    except (ModelLoadError, ValueError, OSError) as exc:
        sock.close()
        fail(exc)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"serving {uri} on http://{shown}:{server.port} "
               "(POST /invocations, GET /ping /health /version)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
def demo(
    hours: Annotated[float, typer.Option(
        parser=seconds_parser(_MAX_SYNTH_HOURS), metavar="HOURS",
        help="Length of the capture with attacks.")] = 2.0,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Run everything on a synthetic site: synthesize, train, register, score, explain."""
    from flockwatch.serving.demo import attack_summary, run_demo

    try:
        out = run_demo(typer.echo, hours=hours, tracking_uri=tracking_uri)
    except ValueError as exc:  # e.g. too few --hours for every attack
        fail(f"--hours: {exc}")
    rep = out["report"]
    typer.echo("")
    typer.echo(_render_report(rep))
    typer.echo("Injected attacks (ground truth) and the first alert on the attacking device:")
    for line in attack_summary(rep, out["attacks_csv"], 120.0):
        typer.echo(line)
    from flockwatch.serving.plots import write_timeline

    timeline = Path(out["site"]).parent / "scores.png"
    write_timeline(rep.windows, timeline, alerts=rep.alerts)
    uri = out["tracking_uri"]
    typer.echo("")
    typer.echo(f"Done in {out['seconds']:.0f} s. MLflow store: {uri}")
    typer.echo(f"  Score timeline (PNG):    {timeline}")
    typer.echo(f"  Browse runs and models:  .venv/bin/mlflow ui --backend-store-uri {uri}")
    typer.echo(f"  Score a capture again:   .venv/bin/flockwatch score {out['site']}/attacks.pcap")
    typer.echo("  Serve the model:         .venv/bin/flockwatch serve --port 8080")


@app.command()
def sense(
    interface: Annotated[str, typer.Option("--interface", "-i", help="Interface to watch.")],
    model: ModelOpt = None,
    alerts: Annotated[Path, typer.Option(help="JSON-lines alert file (appended).")]
    = Path("flockwatch-alerts.jsonl"),
    syslog: Annotated[str | None, typer.Option(
        metavar="HOST[:PORT]", help="Also send CEF alerts to HOST:PORT ([IPV6]:PORT for an "
        "IPv6 address; the port defaults to 514).")] = None,
    syslog_protocol: Annotated[SyslogProtocol, typer.Option(
        case_sensitive=False, help="Transport for --syslog.")] = SyslogProtocol.udp,
    inventory_db: Annotated[Path | None, typer.Option(help="SQLite device inventory.")] = None,
    window: Annotated[float | None, typer.Option(
        parser=duration_parser(1.0, 7 * DAY), metavar="DURATION",
        help="Window length, e.g. 10s, 5m (default: the model's).")] = None,
    duration: Annotated[float | None, typer.Option(
        parser=seconds_parser(YEAR), metavar="SECONDS",
        help="Stop after this many seconds (default: run until SIGTERM/SIGINT).")] = None,
    state_every: Annotated[float, typer.Option(
        parser=seconds_parser(DAY), metavar="SECONDS",
        help="Log counters every N seconds.")] = 30.0,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Watch a live interface: score each window as it closes, alert on deviations.

    Example: flockwatch sense -i eth1 --syslog 10.0.0.5:514 --inventory-db devices.sqlite
    """
    import logging

    from flockwatch.features.errors import InputError
    from flockwatch.features.live import check_interface
    from flockwatch.features.windows import parse_duration
    from flockwatch.models.store import ModelLoadError, configure, load_model
    from flockwatch.serving.options import parse_syslog_target
    from flockwatch.serving.sensor import run_sensor

    # Every option is checked before the model loads or a packet is captured.
    if syslog is not None:
        try:
            parse_syslog_target(syslog, syslog_protocol)
        except ValueError as exc:
            fail(f"--syslog: {exc}")
    _check_output(alerts, "--alerts", append=True)
    _check_output(inventory_db, "--inventory-db")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    configure(tracking_uri)
    try:
        check_interface(interface)
        m = load_model(model)
        counters = run_sensor(interface, m, alerts_path=alerts, syslog=syslog,
                              syslog_protocol=syslog_protocol.value, inventory_db=inventory_db,
                              window_s=parse_duration(window), state_every_s=state_every,
                              max_seconds=duration)
    except (InputError, ModelLoadError, ValueError) as exc:
        fail(exc)
    typer.echo(counters.line(), err=True)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    finally:
        # Interpreter shutdown runs full collections over everything still alive (thousands
        # of modules after an MLflow load): half a second a run. Frozen objects are skipped;
        # exit handlers and flushing still run.
        gc.freeze()


if __name__ == "__main__":
    main()
