"""REST serving with the MLflow scoring protocol: ``/invocations``, ``/ping``, ``/health``,
``/version``, on FastAPI and uvicorn (the stack MLflow's own scoring server uses).

Binds 127.0.0.1 by default and requires a bearer token when bound to anything else. Request
bodies are read under a deadline and a size limit (over it: drained, then 413); every value of
a payload is checked before polars sees it (a JSON 400 names the record and field); parsing
and scoring run in a small bounded thread pool, while connections, half-open ones included,
cost the event loop only a socket: a client that stalls cannot hold a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import ipaddress
import json
import logging
import math
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from flockwatch.features.schema import FLOW_SCHEMA
from flockwatch.models.scoring import coerce_flows, score_flows
from flockwatch.serving.score import windows_json

log = logging.getLogger("flockwatch.serve")
DEFAULT_MAX_BYTES = 16 * 1024 * 1024


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PayloadError(ValueError):
    """A request body that is not flow records; the message names the record and field."""


#: Per FLOW_SCHEMA column: what a JSON value may be, and the range of numbers (the dtype's,
#: narrowed where the field has a physical range: ports, protocol numbers, counts >= 0).
_INT64 = (0, 2**63 - 1)
_RANGES: dict[str, tuple[float, float]] = {
    "src_port": (0, 65535), "dst_port": (0, 65535), "protocol": (0, 255),
    "ip_version": (0, 15), "vlan_id": (0, 4095),
}
#: Timestamps as epoch milliseconds: 1970 to 2200 (beyond, window arithmetic overflows).
_EPOCH_MS = (0, 7_258_118_400_000)
_TIME_COLUMNS = ("first_seen", "last_seen")


def _kind(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if isinstance(dtype, pl.Datetime):
        return "time"
    return "str"


_KINDS = {name: _kind(dtype) for name, dtype in FLOW_SCHEMA.items()}
_EXPECTED = {"int": "a whole number", "float": "a number", "str": "a string",
             "time": "an ISO-8601 string or epoch milliseconds"}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return {dict: "an object", list: "a list", str: "a string", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _check_value(col: str, value: object, where: str) -> object:
    """``value`` for column ``col`` as the frame takes it, or ``PayloadError``."""
    kind = _KINDS[col]
    if value is None:
        return None
    bad = f"{where}, field {col!r}: expected {_EXPECTED[kind]}"  # only the slow path gets here
    if kind == "str":
        if not isinstance(value, str):
            raise PayloadError(f"{bad}, got {_json_type(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PayloadError(f"{bad}, got {_json_type(value)}")
    if isinstance(value, str):
        if kind == "time":
            return value
        raise PayloadError(f"{bad}, got a string")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError(f"{bad}, got {value!r}")
        if kind in ("int", "time"):
            if not value.is_integer():
                raise PayloadError(f"{bad}, got {value!r}")
            value = int(value)
    low, high = _EPOCH_MS if kind == "time" else _RANGES.get(
        col, _INT64 if kind == "int" else (0.0, 1.8e308))
    if not low <= value <= high:
        shown = str(value) if len(str(value)) <= 40 else f"{str(value)[:20]}..."
        raise PayloadError(f"{where}, field {col!r}: {shown} is out of range "
                           f"{_num(low)}..{_num(high)}")
    return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e19 else f"{x:g}"


def _reject_constant(name: str) -> object:
    raise PayloadError(f"{name} is not a number (JSON has no NaN or Infinity)")


_NONE = type(None)
_ALLOWED: dict[str, set[type]] = {"int": {_NONE, int}, "float": {_NONE, int, float},
                                  "str": {_NONE, str}, "time": {_NONE, int}}


def _series(col: str, values: list[object], where: str) -> pl.Series:
    """One checked column. The fast path lets polars build the column once the Python types
    are known to be plain (``type()`` sees bools, lists and objects, which polars would
    coerce or turn into nested structs); anything else is checked value by value, for a
    message that names the record and field, or converted (``10.0`` to ``10``)."""
    kind = _KINDS[col]
    dtype: pl.DataType = pl.Float64() if kind == "float" else FLOW_SCHEMA[col]
    types = set(map(type, values))
    if kind == "time":
        dtype = pl.String() if str in types else pl.Int64()
        allowed: set[type] = {_NONE, str} if str in types else _ALLOWED["time"]
    else:
        allowed = _ALLOWED[kind]
    if types <= allowed:
        try:
            series = pl.Series(col, values, dtype=dtype, strict=True)
        except (TypeError, OverflowError, pl.exceptions.PolarsError):
            pass  # out of the dtype's range: the slow path says which value
        else:
            if _in_range(col, kind, series, values):
                return series
    if kind == "time" and str in types and (types - {_NONE, str}):
        raise PayloadError(f"field {col!r}: mixes strings and numbers")
    checked = [_check_value(col, v, f"{where} {i}") for i, v in enumerate(values)]
    try:
        return pl.Series(col, checked, dtype=dtype, strict=True)
    except (TypeError, OverflowError, pl.exceptions.PolarsError) as exc:
        raise PayloadError(f"field {col!r}: {str(exc).splitlines()[0][:200]}") from None


def _in_range(col: str, kind: str, series: pl.Series, values: list[object]) -> bool:
    """Whether a column built on the fast path holds only values its field allows. Checked
    on the Python values (plain ints and floats here): a request's 100 are quicker to scan
    than polars' min and max are to call, per column."""
    if kind == "str" or (kind == "time" and series.dtype == pl.String):
        return True
    nums = [v for v in values if v is not None]
    if not nums:
        return True
    if kind == "float" and not all(map(math.isfinite, nums)):  # type: ignore[arg-type]
        return False
    low, high = _EPOCH_MS if kind == "time" else _RANGES.get(
        col, _INT64 if kind == "int" else (0.0, 1.8e308))
    return bool(low <= min(nums) and max(nums) <= high)  # type: ignore[type-var,operator]


def _frame(columns: dict[str, pl.Series], n: int) -> pl.DataFrame:
    return pl.DataFrame(list(columns.values()), height=n) if columns else pl.DataFrame(
        height=n)


def _records(doc: object) -> list[object]:
    if isinstance(doc, list):
        return doc
    if not isinstance(doc, dict):
        raise PayloadError("expected a JSON object with dataframe_records, dataframe_split or "
                           "inputs, or a list of records")
    if "dataframe_records" in doc:
        records = doc["dataframe_records"]
    elif "dataframe_split" in doc:
        split = doc["dataframe_split"]
        if not isinstance(split, dict) or "columns" not in split or "data" not in split:
            raise PayloadError("dataframe_split needs 'columns' and 'data'")
        cols, rows = split["columns"], split["data"]
        if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
            raise PayloadError("dataframe_split: 'columns' must be a list of strings")
        if not isinstance(rows, list):
            raise PayloadError("dataframe_split: 'data' must be a list of rows")
        records = []
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(cols):
                raise PayloadError(f"dataframe_split: row {i} is not a list of {len(cols)} "
                                   "values")
            records.append(dict(zip(cols, row, strict=True)))
    elif "inputs" in doc:
        records = doc["inputs"]
    else:
        raise PayloadError("expected a JSON object with dataframe_records, dataframe_split or "
                           "inputs")
    if not isinstance(records, list):
        raise PayloadError("flow records must be a list of JSON objects")
    return records


def _parse_json(body: bytes) -> pl.DataFrame:
    try:
        doc = json.loads(body, parse_constant=_reject_constant)
    except PayloadError:
        raise
    except RecursionError:
        raise PayloadError("malformed JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, int digit limit
        raise PayloadError(f"malformed JSON: {str(exc).splitlines()[0][:200]}") from None
    records: list[dict[str, object]] = []
    for i, rec in enumerate(_records(doc)):
        if type(rec) is not dict:
            raise PayloadError(f"record {i}: expected a JSON object, got {_json_type(rec)}")
        records.append(rec)
    present = set().union(*records) & _KINDS.keys() if records else set()
    columns = {col: _series(col, [rec.get(col) for rec in records], "record")
               for col in sorted(present)}
    return _frame(columns, len(records))


def _parse_csv(body: bytes) -> pl.DataFrame:
    import io

    if not body.strip():
        raise PayloadError("empty CSV body")
    try:
        raw = pl.read_csv(io.BytesIO(body), infer_schema=False, truncate_ragged_lines=False)
    except Exception as exc:  # polars raises its own error types for malformed text
        raise PayloadError(f"malformed CSV: {str(exc).splitlines()[0][:200]}") from None
    columns: dict[str, pl.Series] = {}
    for col in raw.columns:
        if col not in _KINDS:
            continue
        text = raw[col].str.strip_chars().replace("", None)
        kind = _KINDS[col]
        if kind == "str" or (kind == "time"
                             and not text.drop_nulls().str.contains(r"^[0-9]+$").all()):
            columns[col] = text
            continue
        number = text.cast(pl.Float64 if kind == "float" else pl.Int64, strict=False)
        failed = text.is_not_null() & number.is_null()
        if failed.any():
            value = text.filter(failed)[0]
            raise PayloadError(f"row {int(failed.arg_max() or 0)}, field {col!r}: expected "
                               f"{_EXPECTED[kind]}, got {value[:40]!r}")
        columns[col] = _series(col, number.to_list(), "row")
    return _frame(columns, raw.height)


def parse_payload(body: bytes, content_type: str = "application/json") -> pl.DataFrame:
    """MLflow scoring payloads (``dataframe_records``, ``dataframe_split``, ``inputs``, a bare
    list of records, or CSV) -> a frame of the FLOW_SCHEMA columns present, typed.

    Every value is checked before polars sees it: a wrong type, a list or object, NaN,
    Infinity, a number out of its field's range or nesting too deep raises ``PayloadError``
    naming the record and field. Columns outside FLOW_SCHEMA are ignored.
    """
    if "csv" in content_type.lower():
        return _parse_csv(body)
    return _parse_json(body)


def payload_flows(body: bytes, content_type: str = "application/json") -> pl.DataFrame:
    """A request body -> a FLOW_SCHEMA flow table ready to score, or ``PayloadError``.

    The REST fuzz target: for any bytes it returns a table or raises ``PayloadError``."""
    df = parse_payload(body, content_type)
    if df.height == 0:
        raise PayloadError("no flow records in the request")
    try:
        return coerce_flows(df)
    except (ValueError, TypeError) as exc:
        raise PayloadError(str(exc).splitlines()[0]) from None


#: Seconds a client has to send a request's headers, and again its body.
READ_TIMEOUT_S = 10.0
#: A body over the limit is read and dropped up to this many times the limit before the 413,
#: so a client that sends it whole still reads the answer; beyond, the connection is closed.
DRAIN_FACTOR = 4


@dataclass
class Settings:
    """What ``create_app`` needs besides the model (FastAPI's app-factory pattern)."""

    token: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    model_uri: str = ""
    model_version: str | None = None
    read_timeout: float = READ_TIMEOUT_S
    #: threads that parse and score (default: the CPUs, at most 4)
    workers: int = 0
    #: where the console keeps "expected" decisions (default: beside the data)
    decisions_path: Path | None = None


def _error(status: int, code: str, message: str, *, close: bool = False) -> JSONResponse:
    headers = {"Connection": "close"} if close else None
    return JSONResponse({"error_code": code, "message": message}, status_code=status,
                        headers=headers)


async def _read_body(request: Request, settings: Settings) -> bytes | JSONResponse:
    """The request body, or the error response to send instead (408, 411, 413)."""
    from starlette.requests import ClientDisconnect

    limit = settings.max_bytes
    declared = request.headers.get("content-length")
    length: int | None = None
    if declared is not None:
        if not declared.isascii() or not declared.isdigit():
            return _error(400, "BAD_REQUEST", "malformed Content-Length", close=True)
        length = int(declared)
    elif "chunked" not in request.headers.get("transfer-encoding", "").lower():
        return _error(411, "LENGTH_REQUIRED", "Content-Length required", close=True)
    def too_large(close: bool) -> JSONResponse:
        size = length if length is not None else f"more than {limit}"
        return _error(413, "REQUEST_TOO_LARGE",
                      f"request of {size} bytes exceeds the limit of {limit}", close=close)

    if length is not None and length > limit and "100-continue" in request.headers.get(
            "expect", "").lower():
        return too_large(False)  # the client waits for a go-ahead: it sends no body
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(settings.read_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    chunks = []
                    if size > DRAIN_FACTOR * limit:
                        break
                    continue
                chunks.append(chunk)
    except TimeoutError:
        return _error(408, "REQUEST_TIMEOUT", f"request body not received within "
                      f"{settings.read_timeout:g} s", close=True)
    except ClientDisconnect:
        return _error(400, "BAD_REQUEST", "client went away", close=True)
    if size > limit:
        return too_large(close=size > DRAIN_FACTOR * limit)
    return b"".join(chunks)


def create_app(bundle: Any, settings: Settings, source: Any = None) -> FastAPI:
    """The FastAPI app: MLflow's scoring protocol over ``bundle`` (None: a console without a
    model, where ``/invocations`` answers 503), and with ``source`` (a
    ``serving.console.Source``) the console and its API."""
    import anyio.to_thread

    workers = settings.workers or min(4, os.cpu_count() or 1)
    limiter = anyio.CapacityLimiter(workers)
    expected = f"Bearer {settings.token}".encode() if settings.token else None

    cookie_token = settings.token.encode() if settings.token else None

    def authorised(request: Request) -> None:
        """The bearer token (API clients), or the console's login cookie (browsers)."""
        if expected is None or request.url.path == "/login":
            return
        got = request.headers.get("authorization", "").encode("latin-1", "replace")
        if hmac.compare_digest(got, expected):
            return
        cookie = request.cookies.get(CONSOLE_COOKIE)
        if cookie is not None and cookie_token is not None and hmac.compare_digest(
                cookie.encode("utf-8", "replace"), cookie_token):
            return
        raise HTTPException(401, "missing or wrong bearer token")

    # The OpenAPI document is served by a route of its own below, behind the token (FastAPI's
    # own is not); no /docs: Swagger UI loads from a CDN, and sensors run offline.
    app = FastAPI(title="flockwatch", version=_version(), dependencies=[Depends(authorised)],
                  docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Any:
        codes = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
                 405: "METHOD_NOT_ALLOWED"}
        page = _is_page(request)
        if exc.status_code == 401 and page and source is not None:
            from urllib.parse import quote

            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        message = (f"no route {request.url.path}" if exc.status_code == 404
                   and exc.detail in (None, "Not Found") else str(exc.detail))
        return _error(exc.status_code, codes.get(exc.status_code, "ERROR"), message)

    @app.exception_handler(RequestValidationError)
    async def bad_query(request: Request, exc: RequestValidationError) -> Any:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
            for e in exc.errors()[:5])
        return _error(400, "BAD_REQUEST", problems[:500])

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Any:
        log.exception("request failed")
        return _error(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"[:500])

    health = {"status": "ok", "model_uri": settings.model_uri,
              "model_version": settings.model_version,
              "feature_set_version": getattr(bundle, "info", {}).get("feature_set_version")
              if bundle is not None else None}

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health")
    async def health_route() -> dict[str, Any]:
        return health

    @app.get("/version")
    async def version() -> dict[str, Any]:
        from importlib.metadata import version as dist_version

        return {"model": settings.model_uri, "model_version": settings.model_version,
                "flockwatch": dist_version("flockwatch")}

    def score(body: bytes, content_type: str) -> tuple[int, str]:
        try:
            flows = payload_flows(body, content_type)
        except PayloadError as exc:
            return 400, json.dumps({"error_code": "BAD_REQUEST", "message": str(exc)})
        try:
            return 200, '{"predictions": ' + windows_json(score_flows(bundle, flows)) + "}"
        except Exception as exc:  # keep serving; report the failure
            log.exception("scoring failed")
            return 500, json.dumps({"error_code": "INTERNAL_ERROR",
                                    "message": f"{type(exc).__name__}: {exc}"[:500]})

    @app.post("/invocations")
    async def invocations(request: Request) -> Any:
        if bundle is None:
            return _error(503, "NO_MODEL", "no model loaded: this server shows a console only "
                          "(start it with --model to score)")
        body = await _read_body(request, settings)
        if not isinstance(body, bytes):
            return body
        content_type = request.headers.get("content-type", "application/json")
        status, text = await anyio.to_thread.run_sync(score, body, content_type,
                                                      limiter=limiter)
        return Response(text, status_code=status, media_type="application/json")

    if source is not None:
        from flockwatch.serving.console import attach

        attach(app, source, {"served_model": settings.model_uri or None,
                             "served_model_version": settings.model_version,
                             "feature_set_version": health["feature_set_version"]},
               settings.token, settings.decisions_path)

    @app.get("/api/openapi.json", include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("flockwatch")
    except PackageNotFoundError:
        return "0"


#: The console's login cookie (its value is the token; HttpOnly, SameSite=Strict).
CONSOLE_COOKIE = "flockwatch_token"
_PROTOCOL_PATHS = ("/invocations", "/ping", "/health", "/version")


def _is_page(request: Request) -> bool:
    """A browser asking for a console page (not the API, not the scoring protocol)."""
    path = request.url.path
    return (request.method == "GET" and not path.startswith(("/api/", "/static/"))
            and path not in _PROTOCOL_PATHS
            and "text/html" in request.headers.get("accept", ""))


def _protocol_class(read_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a deadline for the request headers: uvicorn times out
    idle keep-alive connections, but not a client that opens a connection and sends part of
    a request line, or a byte every few seconds. Such a connection is closed
    ``read_timeout`` seconds after it opened (or after its previous response)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DeadlineH11Protocol(H11Protocol):
        _headers_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            if self._headers_timer is None:
                self._headers_timer = self.loop.call_later(read_timeout, self._expired)

        def _disarm(self) -> None:
            if self._headers_timer is not None:
                self._headers_timer.cancel()
                self._headers_timer = None

        def _expired(self) -> None:
            self._headers_timer = None
            if (self.cycle is None or self.cycle.response_complete) and (
                    not self.transport.is_closing()):
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            before = self.cycle
            if before is None or before.response_complete:
                self._arm()
            super().data_received(data)
            if self.cycle is not before:  # the headers of a request are complete
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()  # uvicorn's keep-alive timer takes over until the next request

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return DeadlineH11Protocol


class FlockwatchServer:
    """``flockwatch serve``: the app on uvicorn, on ``sock`` or a socket bound at
    construction (a busy or forbidden address fails at once, naming it)."""

    def __init__(self, bundle: Any, host: str = "127.0.0.1", port: int = 8080, *,
                 token: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 model_uri: str = "", model_version: str | None = None,
                 read_timeout: float = READ_TIMEOUT_S, workers: int = 0,
                 max_connections: int = 512, sock: socket.socket | None = None,
                 source: Any = None, decisions_path: Path | None = None) -> None:
        import uvicorn

        if not is_loopback(host) and not token:
            raise ValueError(f"--host {host}: serving beyond loopback needs --token (or "
                             "FLOCKWATCH_TOKEN)")
        self.settings = Settings(token=token, max_bytes=max_bytes, model_uri=model_uri,
                                 model_version=model_version, read_timeout=read_timeout,
                                 workers=workers, decisions_path=decisions_path)
        self.app = create_app(bundle, self.settings, source)
        self.socket = sock if sock is not None else bind_socket(host, port)
        self.host, self.port = host, int(self.socket.getsockname()[1])
        config = uvicorn.Config(self.app, http=_protocol_class(read_timeout), ws="none",
                                lifespan="off", log_config=None, log_level="warning",
                                access_log=False, timeout_keep_alive=5,
                                limit_concurrency=max_connections, backlog=1024)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        self.server.run(sockets=[self.socket])

    def start_background(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        for _ in range(500):
            if self.server.started:
                break
            self._thread.join(0.01)
        return self._thread

    def shutdown(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def server_close(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.close()


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket; ``OSError`` with a message naming ``host:port``."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"{shown}: cannot resolve {host!r} ({exc.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        problem = ("address already in use (another server listens there)"
                   if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc))
        err = OSError(f"{shown}: {problem}")
        err.errno = exc.errno
        raise err from None
    sock.set_inheritable(True)
    return sock
