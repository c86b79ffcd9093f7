"""What every command shares: the one-line failure (``fail``, ``warn``), the option types and
parsers checked once at the boundary, and the batch checks (inputs given, outputs writable,
the format an output's suffix names, problems listed at the end).

The root app (``serving.cli``) turns anything a command raises into the same one line; a
command calls ``fail`` itself where it knows which option or input is at fault.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from flockwatch.serving.options import check_number, parse_duration_bounded, parse_port, show
from flockwatch.serving.progress import console

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



def warn(message: str) -> None:
    """One line on stderr that does not stop the command."""
    typer.echo(f"flockwatch: warning: {one_line(message)}", err=True)



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

def check_reject_quantile(value: float | None) -> None:
    """``--reject-quantile``, checked here once for every command that takes it (train
    classifier, evaluate), so a share out of range reads the same wherever it is given."""
    if value is not None and not 0.0 <= value < 1.0:
        fail(f"--reject-quantile {value:g}: give a share in [0, 1)")


#: A month of synthetic traffic: more is a typo, not a test site.
MAX_SYNTH_HOURS = 31 * 24.0


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
                 help="MLflow tracking URI: http://HOST:PORT of a shared flockwatch "
                 "tracking-server, or a local store (default: SQLite under FLOCKWATCH_HOME)."),
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


VulnsDbOpt = Annotated[Path | None, typer.Option(
    "--vulns-db", metavar="PATH",
    help="Match the devices' software against this CVE database (flockwatch vulns update); "
         "default: vulns.sqlite under FLOCKWATCH_HOME when it exists, else no matching.")]


def checked_vulns_db(path: Path | None) -> Path | None:
    """``--vulns-db`` checked before any capture is read: a missing file or one that is no
    CVE database fails now, in one line."""
    if path is None:
        return None
    from flockwatch.serving.vulns import connect

    try:
        connect(path).close()
    except Exception as exc:
        fail(f"--vulns-db {exc}")
    return path


def problem_line(p: Any) -> str:
    return f"{show(p.source)}: {one_line(p.message)}"


def report_problems(result: Any, quiet: bool = False) -> None:
    """List every input with a problem at the end of a batch."""
    if not result.problems:
        return
    out = console()
    errors = [p for p in result.problems if p.severity == "error"]
    others = [p for p in result.problems if p.severity != "error"]
    if others and not quiet:
        out.print(f"[yellow]{len(others)} input(s) read with remarks:[/yellow]")
        for p in others:
            out.print(f"  {p.severity}: {problem_line(p)}", markup=False, highlight=False)
    if errors:
        out.print(f"[red]{len(errors)} input(s) could not be read:[/red]")
        for p in errors:
            out.print(f"  error: {problem_line(p)}", markup=False, highlight=False)


def require_readable(result: Any) -> None:
    """Stop before any output (no table, no file) when no input could be read: one
    ``flockwatch: error:`` line per input (a single bad input gives exactly one line)."""
    failed = {p.source for p in result.errors}
    if any(f not in failed for f in result.files):
        return
    errors = result.errors
    if not errors:
        fail("no input to read")
    for p in errors[:-1]:
        typer.echo(f"flockwatch: error: {problem_line(p)}", err=True)
    fail(f"{show(errors[-1].source)}: {errors[-1].message}")


def require_sources(sources: list[Path] | None) -> list[Path]:
    if not sources:
        raise typer.BadParameter("give at least one capture, folder or Zeek log",
                                 param_hint="SOURCE")
    return sources


def check_output(path: Path | None, option: str, *, folder: bool = False,
                 append: bool = False) -> None:
    """Fail now, before any work, when an output path cannot be written."""
    from flockwatch.features.output import OutputError, check_output_path

    if path is None:
        return
    try:
        check_output_path(path, folder=folder, append=append)
    except OutputError as exc:
        fail(f"{option} {show(exc.path)}: {exc.problem}")


SUFFIX_FORMATS = {".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def format_for(output: Path | None, fmt: StrEnum, option: str = "--format") -> Any:
    """The output format: ``--format`` when given, else the one ``-o``'s suffix names.

    A suffix that names another format than an explicit ``--format`` is an error, so that
    ``-o report.json --format table`` never writes a table into a ``.json`` file."""
    from typer._click.core import ParameterSource
    from typer._click.globals import get_current_context

    if output is None:
        return fmt
    by_suffix = SUFFIX_FORMATS.get(output.suffix.lower())
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
