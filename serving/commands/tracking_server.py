"""``flockwatch tracking-server``: MLflow's tracking server over a shared database, so a team
shares runs and the registry and sensors load models over HTTP. A thin wrapper of
``mlflow server`` (``serve`` is the scoring server): it checks what MLflow would only report
as a traceback or a hang (the database, the port, the artifact store), then becomes
``mlflow server``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from flockwatch.serving.commands.common import PortOpt, fail, int_parser, warn
from flockwatch.serving.options import show

#: How long the database may take to accept a connection before it is called unreachable.
CONNECT_TIMEOUT_S = 5

_DATABASE_HINT = ("give a database URI: postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE "
                  "(or sqlite:///PATH for one user)")


def check_backend_store(uri: str, timeout: int = CONNECT_TIMEOUT_S) -> None:
    """Raise ``ValueError`` (one line, the URI's password masked) unless ``uri`` is a
    database MLflow can keep runs and the registry in, and it accepts a connection now."""
    from flockwatch.models.store import mask_uri

    shown = mask_uri(uri)
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme == "postgres":  # SQLAlchemy dropped this alias; libpq and Heroku still use it
        raise ValueError(f"{shown}: write postgresql:// (SQLAlchemy does not accept postgres://)")
    if scheme.split("+")[0] not in ("postgresql", "sqlite", "mysql", "mssql"):
        raise ValueError(f"{shown}: not a database MLflow can use; {_DATABASE_HINT}")
    import sqlalchemy
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.pool import NullPool

    connect_args: dict[str, object] = {}
    if scheme.startswith(("postgresql", "mysql")):
        connect_args["connect_timeout"] = timeout
    try:
        engine = sqlalchemy.create_engine(uri, poolclass=NullPool, connect_args=connect_args)
    except (sa_exc.ArgumentError, ValueError) as exc:
        raise ValueError(f"{shown}: not a valid database URI ({_first_line(exc)}); "
                         f"{_DATABASE_HINT}") from None
    except (ImportError, sa_exc.NoSuchModuleError) as exc:
        raise ValueError(f"{shown}: no driver for {scheme!r} is installed "
                         f"({_first_line(exc)})") from None
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa_exc.DBAPIError as exc:
        raise ValueError(f"{shown}: cannot connect to the database: "
                         f"{_first_line(exc.orig or exc)}") from None
    except Exception as exc:  # noqa: BLE001 - any driver failure is the store's problem
        raise ValueError(f"{shown}: cannot connect to the database: {_first_line(exc)}") from None
    finally:
        engine.dispose()


def _first_line(exc: BaseException) -> str:
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    return lines[0] if lines else type(exc).__name__


def artifacts_location(destination: str) -> str:
    """The ``--artifacts-destination`` MLflow is given: a URI (``s3://``, ``gs://``, ...)
    as is, a local folder made absolute and created now (MLflow would make it relative to
    wherever the server was started)."""
    from flockwatch.features.output import OutputError, check_output_path

    if "://" in destination:
        scheme = destination.split("://", 1)[0].lower()
        if scheme == "s3":
            import importlib.util

            if importlib.util.find_spec("boto3") is None:
                raise ValueError(f"{show(destination)}: an s3:// store needs boto3 "
                                 "(pip install boto3); its endpoint (MinIO) is "
                                 "MLFLOW_S3_ENDPOINT_URL")
        if scheme == "file":
            return artifacts_location(destination.split("://", 1)[1])
        return destination
    path = Path(destination).expanduser().resolve()
    try:
        check_output_path(path, folder=True)
    except OutputError as exc:
        raise ValueError(f"{show(destination)}: {exc.problem}") from None
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def tracking_server(
    backend_store_uri: Annotated[str, typer.Option(
        envvar="MLFLOW_BACKEND_STORE_URI", metavar="URI", show_default=False,
        help="The database of runs and the registry: postgresql://USER[:PASSWORD]@HOST"
        "[:PORT]/DATABASE (the password may instead come from ~/.pgpass or PGPASSWORD).")],
    artifacts_destination: Annotated[str, typer.Option(
        envvar="MLFLOW_ARTIFACTS_DESTINATION", metavar="PATH_OR_URI", show_default=False,
        help="Where model files and figures are kept: a local folder, or s3://BUCKET/PREFIX "
        "(MinIO through MLFLOW_S3_ENDPOINT_URL). Clients upload and download through the "
        "server, so they need no access of their own.")],
    host: Annotated[str, typer.Option(
        help="Address to bind. The server has no authentication: anyone who reaches it can "
        "read, change and delete runs and registered models, and so choose the model every "
        "sensor loads. Bind beyond loopback (0.0.0.0, a LAN address) only on a trusted "
        "network or behind an authenticating proxy.")] = "127.0.0.1",
    port: PortOpt = 5000,
    workers: Annotated[int, typer.Option(
        parser=int_parser(1, 64), metavar="N",
        help="Server worker processes (MLflow's own default is 4).")] = 2,
    mlflow_args: Annotated[list[str] | None, typer.Argument(
        metavar="[-- MLFLOW_SERVER_OPTION...]", show_default=False,
        help="Passed on to mlflow server as given, after -- (e.g. -- --allowed-hosts "
        "mlflow.lan:5000 when clients reach it by a name).")] = None,
) -> None:
    """Run a shared MLflow tracking server (runs, registry, artifacts) over PostgreSQL.

    Clients give --tracking-uri http://HOST:PORT; the set-up: docs/tracking-server.md.

    Example: flockwatch tracking-server --backend-store-uri postgresql:///mlflow
      --artifacts-destination /srv/mlflow/artifacts
    """
    import socket

    from flockwatch.models.store import mask_uri
    from flockwatch.serving.options import check_host
    from flockwatch.serving.rest import is_loopback

    try:
        check_host(host)
    except ValueError as exc:
        fail(f"--host: {exc}")
    try:
        check_backend_store(backend_store_uri)
        dest = artifacts_location(artifacts_destination)  # made only once the store answers
    except ValueError as exc:
        fail(str(exc))
    # A busy port fails now, in one line, not in the server's log after its start-up.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        fail(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})")
    if not is_loopback(host):
        warn(f"--host {host}: the tracking server has no authentication; anyone who reaches "
             f"port {port} can change the registry and so the model sensors load")
    shown = f"[{host}]" if ":" in host else host
    reach = (f"http://{shown}:{port}" if host not in ("0.0.0.0", "::")
             else f"http://ADDRESS:{port} (an address of this machine)")
    typer.echo(f"tracking server on http://{shown}:{port} (store {mask_uri(backend_store_uri)}, "
               f"artifacts {dest}); clients: --tracking-uri {reach}", err=True)
    argv = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
            "--workers", str(workers), "--serve-artifacts", "--artifacts-destination", dest,
            *(mlflow_args or [])]
    # The store's URI (and its password) goes by the environment, not the command line that
    # `ps` shows every user of the machine.
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": backend_store_uri}
    # MLflow's job runner (GenAI evaluation jobs, which flockwatch has none of) starts eight
    # more Python processes (2.7 GB resident instead of 0.85 GB); on only where asked for.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)  # mlflow server forwards SIGTERM to its workers
    except OSError as exc:
        fail(f"{sys.executable}: cannot start mlflow server ({exc.strerror or exc})")
