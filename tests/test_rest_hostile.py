"""Issue 18, item 7: a REST server that survives its clients. A real `flockwatch serve`
server (FlockwatchServer, uvicorn) on 127.0.0.1 with a small real model; raw sockets where a
client misbehaves below HTTP."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from flockwatch.datasets.synth import HOSTS

#: A flow of a host of the synthetic site the model learned (so it gets an anomaly score).
RECORD = {"first_seen": "2026-03-02T08:00:00.000Z", "src_ip": HOSTS[0].ip,
          "dst_ip": "192.168.1.1", "src_mac": HOSTS[0].mac, "packets": 4, "bytes": 400,
          "src_port": 5353, "dst_port": 53, "protocol": 17}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A baseline model trained on a one-hour synthetic site (few epochs: the server is
    under test here, not the model)."""
    from flockwatch.datasets.synth import synthesize
    from flockwatch.features import WindowSpec, extract
    from flockwatch.models.bundle import Bundle
    from flockwatch.training.baseline import fit_baseline

    site = tmp_path_factory.mktemp("site")
    synthesize(site, hours=1.0, learning_hours=1.0, seed=5, attacks=[])
    flows = extract([site / "learning.pcap"]).flows
    baseline, _ = fit_baseline(flows, window_s=300, epochs=3)
    return Bundle(window=WindowSpec(300), baseline=baseline)


@pytest.fixture
def server(bundle):
    from flockwatch.serving.rest import FlockwatchServer

    srv = FlockwatchServer(bundle, "127.0.0.1", 0, max_bytes=300_000, read_timeout=1.0,
                           model_uri="models:/site/4", model_version="4")
    srv.start_background()
    yield srv
    srv.shutdown()
    srv.server_close()


def post(port: int, body: bytes, ctype: str = "application/json",
         timeout: float = 30) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", "/invocations", body, {"Content-Type": ctype})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, json.loads(data)


def raw(field: str, literal: str) -> bytes:
    """A record whose ``field`` holds a JSON literal Python's json module would not write."""
    return json.dumps([RECORD]).replace(f'"{field}": {json.dumps(RECORD[field])}',
                                        f'"{field}": {literal}').encode()


def rec(**kw: object) -> bytes:
    return json.dumps([{**RECORD, **kw}]).encode()


HOSTILE = [  # (body, content type, what the message names)
    (b"[" * 100_000 + b"]" * 100_000, "application/json", "nested too deeply"),
    (b'{"a":' * 40_000 + b"1" + b"}" * 40_000, "application/json", "nested too deeply"),
    (raw("packets", "NaN"), "application/json", "NaN"),
    (raw("bytes", "Infinity"), "application/json", "Infinity"),
    (raw("bytes", "-Infinity"), "application/json", "Infinity"),
    (raw("bytes", "1e400"), "application/json", "'bytes'"),
    (raw("packets", str(2**63)), "application/json", "'packets'"),
    (raw("packets", "9" * 5000), "application/json", "malformed JSON"),
    (rec(src_ip=["192.168.1.20"]), "application/json", "'src_ip'"),
    (rec(packets=[4]), "application/json", "'packets'"),
    (rec(first_seen=[1]), "application/json", "'first_seen'"),
    (rec(packets={"x": 1}), "application/json", "'packets'"),  # was a JSON 500
    (rec(bytes=True), "application/json", "'bytes'"),
    (rec(dst_port=70000), "application/json", "'dst_port'"),
    (rec(src_port=-1), "application/json", "'src_port'"),
    (rec(first_seen=2**62), "application/json", "'first_seen'"),
    (b"", "text/csv", "empty CSV"),
    (b'first_seen,src_ip\n"unterminated\n1,2,3\n', "text/csv", "CSV"),
    (b"first_seen,src_ip,dst_ip,packets,bytes\n0,a,b,nan,1\n", "text/csv", "'packets'"),
    (b"first_seen,src_ip,dst_ip,packets,bytes\n0,a,b,1e30,1\n", "text/csv", "'packets'"),
    (b'[{"src_ip": "\xff"}]', "application/json", "malformed JSON"),
    (json.dumps({"dataframe_split": {"columns": ["src_ip"], "data": [[1, 2]]}}).encode(),
     "application/json", "row 0"),
    (json.dumps({"dataframe_split": {"columns": [{"a": 1}], "data": []}}).encode(),
     "application/json", "columns"),
    (b"[1, 2]", "application/json", "record 0"),
    (b"[]", "application/json", "no flow records"),
]


@pytest.mark.parametrize("k", range(len(HOSTILE)))
def test_hostile_bodies_get_a_json_400_naming_the_field(server, k, caplog):
    body, ctype, needle = HOSTILE[k]
    with caplog.at_level(logging.WARNING):
        status, doc = post(server.port, body, ctype)
    assert status == 400, doc
    assert doc["error_code"] == "BAD_REQUEST" and needle in doc["message"], doc
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_valid_json_and_csv_are_scored(server):
    status, doc = post(server.port, json.dumps({"dataframe_records": [RECORD] * 3}).encode())
    assert status == 200 and doc["predictions"][0]["device_id"] == RECORD["src_mac"]
    assert doc["predictions"][0]["anomaly_score"] is not None
    csv = ("first_seen,src_ip,dst_ip,src_mac,packets,bytes\n"
           f"2026-03-02T08:00:00.000Z,{HOSTS[0].ip},192.168.1.1,{HOSTS[0].mac},4,400\n")
    status, doc2 = post(server.port, csv.encode(), "text/csv")
    assert status == 200 and doc2["predictions"][0]["device_id"] == RECORD["src_mac"]
    # whole numbers written as floats (pandas' JSON) are accepted
    status, _ = post(server.port, rec(packets=4.0, bytes=400.0))
    assert status == 200


def test_health_names_the_model(server):
    """Issue 17: /health says which model and version are served."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/health")
    doc = json.loads(conn.getresponse().read())
    assert doc["model_uri"] == "models:/site/4" and doc["model_version"] == "4"
    assert doc["status"] == "ok"


def test_413_after_the_whole_body_was_sent(server):
    """http.client sends the whole body before it reads: it gets the 413, not a reset."""
    body = json.dumps([RECORD] * 5000).encode()  # ~1 MB against a 300 kB limit
    assert 300_000 < len(body) <= 4 * 300_000
    for _ in range(5):
        status, doc = post(server.port, body)
        assert status == 413 and doc["error_code"] == "REQUEST_TOO_LARGE"
    assert post(server.port, rec())[0] == 200


def _half_open(port: int, partial: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(partial)
    return s


def _closed_by_server(s: socket.socket, within: float) -> tuple[bool, bytes]:
    """Whether the server ends the connection within ``within`` seconds (and what it said)."""
    s.settimeout(within)
    got = b""
    try:
        while chunk := s.recv(65536):
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        pass
    return True, got


def test_half_sent_requests_are_cut_and_do_not_block(server):
    """Partial headers, a short body and a byte-a-second trickle each hold nothing for
    long: valid requests are answered meanwhile, and the server cuts each after its read
    timeout (1 s here) instead of holding it for ever."""
    headers = _half_open(server.port, b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Le")
    body = _half_open(server.port, b"POST /invocations HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: 5000\r\n\r\n[{\"src_ip\": ")
    idle = _half_open(server.port, b"")
    crowd = [_half_open(server.port, b"GET /ping HTTP/1.1\r\nHo") for _ in range(64)]
    trickle = _half_open(server.port, b"G")
    stop = threading.Event()

    def drip() -> None:
        for ch in b"ET /ping HTTP/1.1\r\nX-Slow: " + b"a" * 100:
            if stop.wait(0.3):
                return
            try:
                trickle.sendall(bytes([ch]))
            except OSError:
                return

    t = threading.Thread(target=drip, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        assert post(server.port, rec(), timeout=10)[0] == 200  # not queued behind them
        assert time.monotonic() - t0 < 10
        closed, said = _closed_by_server(body, 10)
        assert closed and said.startswith(b"HTTP/1.1 408"), said[:100]
        for s in (headers, idle, trickle, *crowd):
            assert _closed_by_server(s, 10)[0]
    finally:
        stop.set()
        for s in (headers, body, idle, trickle, *crowd):
            s.close()
    assert post(server.port, rec())[0] == 200


def test_valid_requests_answered_under_hostile_load(server):
    """Hostile bodies back to back from 4 clients, 32 half-open connections: every valid
    request is answered with 200, none reset. (Latency under load: the benchmark.)"""
    stop = threading.Event()
    dropped: list[str] = []
    held = [_half_open(server.port, b"POST /invocations HTTP/1.1\r\nContent-Le")
            for _ in range(32)]

    def attack(k: int) -> None:
        i = k
        while not stop.is_set():
            body, ctype, _ = HOSTILE[i % len(HOSTILE)]
            i += 1
            try:
                post(server.port, body, ctype)
            except (ConnectionError, http.client.RemoteDisconnected) as exc:
                dropped.append(type(exc).__name__)

    threads = [threading.Thread(target=attack, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    try:
        outcomes = [post(server.port, rec(), timeout=30)[0] for _ in range(20)]
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        for s in held:
            s.close()
    assert outcomes == [200] * 20
    assert dropped == []


def test_nested_body_keeps_the_server_serving(server):
    for _ in range(3):
        assert post(server.port, b"[" * 100_000 + b"]" * 100_000)[0] == 400
    assert post(server.port, rec())[0] == 200


def test_payload_parser_directly():
    """The function the server and the fuzz tests call: a frame of typed FLOW_SCHEMA columns,
    or PayloadError naming record and field."""
    import polars as pl

    from flockwatch.serving.rest import PayloadError, parse_payload, payload_flows

    df = parse_payload(json.dumps({"inputs": [RECORD, {**RECORD, "unknown": [1, {"x": 2}]}]})
                       .encode())
    assert df.height == 2 and "unknown" not in df.columns and df["packets"].dtype == pl.Int64
    flows = payload_flows(json.dumps([RECORD]).encode())
    assert flows["first_seen"].dtype == pl.Datetime("ms", "UTC")
    with pytest.raises(PayloadError, match=r"record 1, field 'packets'"):
        parse_payload(json.dumps([RECORD, {**RECORD, "packets": "4"}]).encode())
    with pytest.raises(PayloadError, match="lack required column"):
        payload_flows(json.dumps([{"src_ip": "x"}]).encode())


def test_token_and_errors_are_json(bundle):
    from flockwatch.serving.rest import FlockwatchServer

    srv = FlockwatchServer(bundle, "127.0.0.1", 0, token="s3cret")
    srv.start_background()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/health")
        r = conn.getresponse()
        assert r.status == 401 and json.loads(r.read())["error_code"] == "UNAUTHORIZED"
        conn.request("GET", "/nowhere", headers={"Authorization": "Bearer s3cret"})
        r = conn.getresponse()
        assert r.status == 404 and json.loads(r.read())["error_code"] == "NOT_FOUND"
    finally:
        srv.shutdown()
        srv.server_close()


def test_busy_port_is_named(bundle):
    from flockwatch.serving.rest import FlockwatchServer

    srv = FlockwatchServer(bundle, "127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match=rf"127\.0\.0\.1:{srv.port}: address already in use"):
            FlockwatchServer(bundle, "127.0.0.1", srv.port)
    finally:
        srv.server_close()


def test_bench_script_runs_its_own_attack_shapes():
    """The benchmark's hostile bodies are the ones the issue lists (and stay importable)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from bench_rest_hostile import hostile_bodies

    names = {n for n, _, _ in hostile_bodies()}
    assert {"nested", "nan", "infinity", "1e400", "2**63", "list_in_column",
            "object_for_number", "empty_csv", "malformed_csv", "over_limit"} <= names
