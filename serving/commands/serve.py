"""``flockwatch serve``: the model over HTTP."""

from __future__ import annotations

from typing import Annotated

import typer

from flockwatch.serving.commands.common import ModelOpt, PortOpt, TrackingOpt, fail, seconds_parser
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
) -> None:
    """Serve the model over HTTP with MLflow's scoring protocol (/invocations, /ping, /health)."""
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
    try:
        sock = bind_socket(host, port)  # a busy port fails now, not after loading the model
    except OSError as exc:
        fail(exc)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    configure(tracking_uri)
    uri = model or DEFAULT_MODEL_URI
    try:
        m = load_model(model)
        server = FlockwatchServer(bundle_of(m), host, port, token=token,
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
