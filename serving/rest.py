"""REST serving with the MLflow scoring protocol: ``/invocations``, ``/ping``, ``/health``.

Standard library HTTP server: binds 127.0.0.1 by default, requires a bearer token when bound
to anything else, limits request size, answers malformed requests with JSON 400s.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import polars as pl
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


def parse_payload(body: bytes, content_type: str) -> pl.DataFrame:
    """MLflow scoring payloads: dataframe_split, dataframe_records, inputs, or a bare list."""
    if "csv" in content_type:
        import io

        return pl.read_csv(io.BytesIO(body))
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed JSON: {exc}") from None
    if isinstance(doc, list):
        records = doc
    elif isinstance(doc, dict) and "dataframe_records" in doc:
        records = doc["dataframe_records"]
    elif isinstance(doc, dict) and "dataframe_split" in doc:
        split = doc["dataframe_split"]
        if not isinstance(split, dict) or "columns" not in split or "data" not in split:
            raise ValueError("dataframe_split needs 'columns' and 'data'")
        records = [dict(zip(split["columns"], row, strict=False)) for row in split["data"]]
    elif isinstance(doc, dict) and "inputs" in doc:
        records = doc["inputs"]
    else:
        raise ValueError("expected a JSON object with dataframe_records, dataframe_split or "
                         "inputs")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError("flow records must be a list of JSON objects")
    if not records:
        raise ValueError("no flow records in the request")
    try:
        return pl.DataFrame(records, infer_schema_length=None)
    except Exception as exc:
        raise ValueError(f"flow records do not form a table: {str(exc).splitlines()[0]}") from None


class _Handler(BaseHTTPRequestHandler):
    server: FlockwatchServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one segment, without Nagle's delay (with delayed ACKs the two
    # together cost ~40 ms a response).
    disable_nagle_algorithm = True
    wbufsize = 1 << 16

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)

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
            self.close_connection = True
            return self._send(413, {"error_code": "REQUEST_TOO_LARGE",
                                    "message": f"request of {length} bytes exceeds the limit of "
                                               f"{self.server.max_bytes}"})
        body = self.rfile.read(length)
        try:
            df = parse_payload(body, self.headers.get("Content-Type", "application/json"))
            flows = coerce_flows(df)
        except (ValueError, TypeError) as exc:
            return self._send(400, {"error_code": "BAD_REQUEST", "message": str(exc)})
        try:
            predictions = windows_json(score_flows(self.server.bundle, flows))
        except Exception as exc:  # keep serving; report the failure
            log.exception("scoring failed")
            return self._send(500, {"error_code": "INTERNAL_ERROR", "message": str(exc)})
        self._send_text(200, '{"predictions": ' + predictions + "}")


class FlockwatchServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, bundle: Any, host: str = "127.0.0.1", port: int = 8080, *,
                 token: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 model_uri: str = "") -> None:
        if not is_loopback(host) and not token:
            raise ValueError(f"--host {host}: serving beyond loopback needs --token (or "
                             "FLOCKWATCH_TOKEN)")
        super().__init__((host, port), _Handler)
        self.bundle = bundle
        self.token = token
        self.max_bytes = max_bytes
        self.model_uri = model_uri

    def start_background(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, daemon=True)
        t.start()
        return t
