"""REST serving with the MLflow scoring protocol: ``/invocations``, ``/ping``, ``/health``.

Standard library HTTP server: binds 127.0.0.1 by default, requires a bearer token when bound
to anything else, limits request size, answers malformed requests with JSON 400s.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import polars as pl
from flockwatch.features.schema import FLOW_SCHEMA
from flockwatch.models.pyfunc import coerce_flows, score_flows
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
            if _in_range(col, kind, series):
                return series
    if kind == "time" and str in types and (types - {_NONE, str}):
        raise PayloadError(f"field {col!r}: mixes strings and numbers")
    checked = [_check_value(col, v, f"{where} {i}") for i, v in enumerate(values)]
    try:
        return pl.Series(col, checked, dtype=dtype, strict=True)
    except (TypeError, OverflowError, pl.exceptions.PolarsError) as exc:
        raise PayloadError(f"field {col!r}: {str(exc).splitlines()[0][:200]}") from None


def _in_range(col: str, kind: str, series: pl.Series) -> bool:
    if kind == "str" or (kind == "time" and series.dtype == pl.String):
        return True
    if kind == "float" and not series.is_finite().all():
        return False
    low, high = _EPOCH_MS if kind == "time" else _RANGES.get(
        col, _INT64 if kind == "int" else (0.0, 1.8e308))
    lo, hi = series.min(), series.max()
    return lo is None or bool(low <= lo and hi <= high)  # type: ignore[operator]


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


class _Handler(BaseHTTPRequestHandler):
    server: FlockwatchServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one segment, without Nagle's delay (with delayed ACKs the two
    # together cost ~40 ms a response).
    disable_nagle_algorithm = True
    wbufsize = 1 << 16

    timeout = 10.0  # socket read timeout; the whole request also has a deadline (setup)

    def setup(self) -> None:
        super().setup()
        self._deadline = time.monotonic() + self.server.read_timeout
        # The headers are read line by line with a per-read timeout; the watchdog cuts a
        # connection whose request is not complete by its deadline.
        self.server.watch(self.connection, self._deadline)

    def finish(self) -> None:
        self.server.unwatch(self.connection)
        super().finish()

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)

    def _read(self, n: int) -> bytes:
        """Read ``n`` bytes before the request's deadline (a trickling client is cut)."""
        chunks, left = [], n
        while left > 0:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("request not received in time")
            self.connection.settimeout(remaining)
            chunk = self.rfile.read1(min(left, 1 << 16))  # type: ignore[attr-defined]
            if not chunk:
                raise ConnectionError("client closed")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def handle_one_request(self) -> None:
        self._deadline = time.monotonic() + self.server.read_timeout
        self.server.watch(self.connection, self._deadline)
        try:
            super().handle_one_request()
        except (TimeoutError, ConnectionError):
            self.close_connection = True

    def _send(self, code: int, doc: Any) -> None:
        self._send_text(code, json.dumps(doc, default=str))

    def _send_text(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        token = self.server.token
        if not token:
            return True
        got = self.headers.get("Authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {token}".encode())

    def do_GET(self) -> None:  # noqa: N802
        self.server.unwatch(self.connection)
        if not self._authorised():
            return self._send(401, {"error_code": "UNAUTHORIZED",
                                    "message": "missing or wrong bearer token"})
        if self.path in ("/ping", "/health"):
            return self._send(200, {"status": "ok"})
        if self.path == "/version":
            return self._send(200, {"model": self.server.model_uri})
        self._send(404, {"error_code": "NOT_FOUND", "message": f"no route {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorised():
            return self._send(401, {"error_code": "UNAUTHORIZED",
                                    "message": "missing or wrong bearer token"})
        if self.path != "/invocations":
            return self._send(404, {"error_code": "NOT_FOUND", "message": f"no route {self.path}"})
        try:
            length = int(self.headers.get("Content-Length", "-1"))
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            return self._send(411, {"error_code": "LENGTH_REQUIRED",
                                    "message": "Content-Length required"})
        if length > self.server.max_bytes:
            # Drained first (up to a bound), so a client that sends the whole body before it
            # reads the answer gets the 413 instead of a reset.
            left = min(length, 4 * self.server.max_bytes)
            while left > 0:
                left -= len(self._read(min(left, 1 << 16)))
            self.close_connection = True
            return self._send(413, {"error_code": "REQUEST_TOO_LARGE",
                                    "message": f"request of {length} bytes exceeds the limit of "
                                               f"{self.server.max_bytes}"})
        body = self._read(length)
        self.server.unwatch(self.connection)
        try:
            flows = payload_flows(body, self.headers.get("Content-Type", "application/json"))
        except PayloadError as exc:
            return self._send(400, {"error_code": "BAD_REQUEST", "message": str(exc)})
        try:
            predictions = windows_json(score_flows(self.server.bundle, flows))
        except Exception as exc:  # keep serving; report the failure
            log.exception("scoring failed")
            return self._send(500, {"error_code": "INTERNAL_ERROR", "message": str(exc)})
        self._send_text(200, '{"predictions": ' + predictions + "}")


class FlockwatchServer(ThreadingHTTPServer):
    daemon_threads = True

    request_queue_size = 256

    def __init__(self, bundle: Any, host: str = "127.0.0.1", port: int = 8080, *,
                 token: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 model_uri: str = "", workers: int = 32, read_timeout: float = 10.0) -> None:
        if not is_loopback(host) and not token:
            raise ValueError(f"--host {host}: serving beyond loopback needs --token (or "
                             "FLOCKWATCH_TOKEN)")
        import os
        from concurrent.futures import ThreadPoolExecutor

        workers = int(os.environ.get("FLOCKWATCH_REST_WORKERS", workers))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rest")
        self.read_timeout = read_timeout
        self._lock = threading.Lock()
        self._watched: dict[Any, float] = {}
        threading.Thread(target=self._watchdog, daemon=True).start()
        super().__init__((host, port), _Handler)
        self.bundle = bundle
        self.token = token
        self.max_bytes = max_bytes
        self.model_uri = model_uri

    def watch(self, sock: Any, deadline: float) -> None:
        with self._lock:
            self._watched[sock] = deadline

    def unwatch(self, sock: Any) -> None:
        with self._lock:
            self._watched.pop(sock, None)

    def _watchdog(self) -> None:
        import socket as _socket

        while True:
            time.sleep(0.5)
            now = time.monotonic()
            with self._lock:
                late = [s for s, d in self._watched.items() if d < now]
                for s in late:
                    self._watched.pop(s, None)
            for s in late:
                with contextlib.suppress(OSError):
                    s.shutdown(_socket.SHUT_RDWR)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A bounded pool instead of a thread per connection."""
        self._pool.submit(self.process_request_thread, request, client_address)

    def start_background(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, daemon=True)
        t.start()
        return t
