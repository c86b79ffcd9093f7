"""``flockwatch serve``: the model over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flockwatch.serving.commands.common import (
    ModelOpt,
    PortOpt,
    TrackingOpt,
    fail,
    seconds_parser,
    warn,
)
from flockwatch.serving.options import show


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
    report: Annotated[Path | None, typer.Option(
        "--report", metavar="SCORE.json",
        help="Show this scored capture in the web console at / (the JSON of `flockwatch "
        "score --format json`).")] = None,
    inventory_db: Annotated[Path | None, typer.Option(
        "--inventory-db", metavar="PATH",
        help="Show a running sensor's SQLite inventory in the console (`sense "
        "--inventory-db`), re-read as it changes.")] = None,
    alerts: Annotated[Path | None, typer.Option(
        "--alerts", metavar="PATH",
        help="A running sensor's JSON-lines alerts for the console (`sense --alerts`), "
        "followed as the sensor appends.")] = None,
    decisions: Annotated[Path | None, typer.Option(
        "--decisions", metavar="PATH",
        help="Where the console records alerts marked as expected (default: beside the "
        "data, NAME.expected.json).")] = None,
) -> None:
    """Serve the model over HTTP with MLflow's scoring protocol (/invocations, /ping, /health),
    and with --report or --inventory-db/--alerts the web console at / and its API at /api/."""
    import logging

    from flockwatch.models.bundle import bundle_of
    from flockwatch.models.store import DEFAULT_MODEL_URI, ModelLoadError, configure, load_model
    from flockwatch.serving.options import check_host

    try:
        check_host(host)
    except ValueError as exc:
        fail(f"--host: {exc}")
    from flockwatch.models.store import resolve_version
    from flockwatch.serving.rest import FlockwatchServer, bind_socket, is_loopback

    if not is_loopback(host) and not token:
        fail(f"--host {show(host)}: serving beyond loopback needs --token (or FLOCKWATCH_TOKEN)")
    source = _console_source(report, inventory_db, alerts)
    try:
        sock = bind_socket(host, port)  # a busy port fails now, not after loading the model
    except OSError as exc:
        fail(exc)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    configure(tracking_uri)
    uri = model or DEFAULT_MODEL_URI
    bundle = None
    try:
        try:
            bundle = bundle_of(load_model(model))
        except ModelLoadError as exc:
            if source is None or model is not None:
                raise
            # A console over data needs no model: say so, and serve it without scoring.
            warn(f"{exc}; serving the console only (POST /invocations answers 503)")
            uri = ""
        server = FlockwatchServer(bundle, host, port, token=token,
                                  max_bytes=int(max_request_mb * 1024 * 1024),
                                  model_uri=uri, model_version=resolve_version(uri),
                                  sock=sock, source=source, decisions_path=decisions)
    except (ModelLoadError, ValueError, OSError) as exc:
        sock.close()
        fail(exc)
    shown = f"[{host}]" if ":" in host else host
    what = f"{uri} " if uri else ""
    typer.echo(f"serving {what}on http://{shown}:{server.port} "
               "(POST /invocations, GET /ping /health /version)", err=True)
    if source is not None:
        typer.echo(f"console: http://{shown}:{server.port}/ ({source.description}); API "
                   f"/api/, OpenAPI /api/openapi.json", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _console_source(report: Path | None, inventory_db: Path | None, alerts: Path | None
                    ) -> Any:
    """The console's data source from the options, or None for no console; a bad file or
    a wrong mix of options fails with one line naming it."""
    if report is None and inventory_db is None and alerts is None:
        return None
    from flockwatch.serving.console import ReportSource, SensorSource

    if report is not None and (inventory_db is not None or alerts is not None):
        fail("--report: give a report or a sensor's --inventory-db/--alerts, not both")
    try:
        if report is not None:
            return ReportSource(report)
        return SensorSource(inventory_db, alerts)
    except ValueError as exc:
        fail(exc)
