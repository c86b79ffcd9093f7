"""The ``flockwatch`` command line: the root typer app, its one-line failures, and the commands
attached from ``serving.commands`` (one module a command or command group).

Heavy libraries (torch, lightgbm, mlflow, nfstream) are imported inside the commands, so
``flockwatch --help`` answers fast. Failures print one line on stderr and exit 1.
"""

from __future__ import annotations

import errno
import gc
import os
from typing import Any

import typer

# typer (pinned in pyproject.toml) vendors click; its exception classes live here.
from typer._click import exceptions as click_exc
from typer.core import TyperGroup

from flockwatch.serving.commands import (
    datasets,
    demo,
    evaluate,
    extract,
    findings,
    inventory,
    models,
    score,
    sense,
    serve,
    tracking_server,
    train,
    vulns,
)
from flockwatch.serving.commands.common import describe, fail


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


app = typer.Typer(
    name="flockwatch",
    cls=OneLineErrors,
    help="Passive discovery, classification and behavioural baselining of IoT/OT devices "
    "from their network traffic.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# The commands, in the order `flockwatch --help` lists them; the groups after them.
for command in (extract.extract, inventory.inventory, findings.findings, evaluate.evaluate,
                score.score,
                serve.serve, demo.demo, sense.sense, tracking_server.tracking_server):
    app.command()(command)
app.add_typer(datasets.app, name="datasets")
app.add_typer(train.app, name="train")
app.add_typer(models.app, name="models")
app.add_typer(vulns.app, name="vulns")


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
