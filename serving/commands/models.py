"""``flockwatch models``: list registered models, promote a version, describe one."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from flockwatch.serving.commands.common import ScoreFormat, TrackingOpt, fail

app = typer.Typer(help="Registered models: list them, promote a version to an alias "
                  "without retraining, describe a version.", no_args_is_help=True)


@app.command("list")
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
    from flockwatch.serving.render import models_table

    sys.stdout.write(models_table(rows))


@app.command("promote")
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


@app.command("describe")
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
    from flockwatch.serving.render import render_description

    typer.echo(render_description(d))
