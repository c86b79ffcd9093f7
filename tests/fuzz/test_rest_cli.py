"""Fuzzing what strangers hand the REST server and the command line (issue 18): REST
payloads (the parser directly, and a short pass against a real server on 127.0.0.1),
durations, ``HOST:PORT`` and the syslog target.

The parser-level targets live in ``flockwatch.serving.fuzz_targets`` (bytes in, raise only on
a defect), so a long run can drive them too; here Hypothesis feeds them structured and raw
inputs. CI runs this short pass; ``FLOCKWATCH_FUZZ_EXAMPLES=20000`` (parsers) and
``FLOCKWATCH_FUZZ_HTTP_EXAMPLES`` (the server) run more.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flockwatch.features.schema import FLOW_SCHEMA
from flockwatch.serving.fuzz_targets import (
    fuzz_duration,
    fuzz_host_port,
    fuzz_payload,
    fuzz_syslog_target,
)

#: Per test, never a global profile: other fuzz files keep their own settings.
FUZZ = settings(max_examples=int(os.environ.get("FLOCKWATCH_FUZZ_EXAMPLES", "150")),
                deadline=None, suppress_health_check=[HealthCheck.too_slow])

COLUMNS = list(FLOW_SCHEMA)
REQUIRED = {"first_seen": "2026-03-02T08:00:00.000Z", "src_ip": "192.168.1.21",
            "dst_ip": "192.168.1.1", "packets": 4, "bytes": 400}

# -- strategies -------------------------------------------------------------------------------

#: Numbers where the bugs were: NaN, infinities, 1e400, 2**63 and their neighbours.
hostile_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([2**63, 2**63 - 1, -(2**63), 2**64, 10**30, -1, 0, 65536, 1e400, -1e400]),
    st.integers(),
)
scalars = st.one_of(st.none(), st.booleans(), hostile_numbers,
                    st.text(max_size=30), st.text(alphabet="\x00\n\r\x1b\u2028'\"\\", max_size=5))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
records = st.lists(st.dictionaries(
    st.one_of(st.sampled_from(COLUMNS), st.text(max_size=10)), json_values, max_size=12),
    max_size=5)


def _dumps(doc: object) -> bytes:
    # Python writes NaN and Infinity as bare words, as a hostile client would.
    return json.dumps(doc, allow_nan=True).encode()


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Request bodies: every MLflow envelope around hostile records, plus raw shapes."""
    recs = draw(records)
    kind = draw(st.sampled_from(["list", "records", "split", "inputs", "depth", "bytes",
                                 "valid_plus_one"]))
    if kind == "list":
        return _dumps(recs)
    if kind == "records":
        return _dumps({"dataframe_records": recs})
    if kind == "inputs":
        return _dumps({"inputs": draw(json_values)})
    if kind == "split":
        cols = draw(st.lists(st.one_of(st.sampled_from(COLUMNS), json_values), max_size=6))
        data = draw(st.lists(st.lists(json_values, max_size=7), max_size=4))
        return _dumps({"dataframe_split": {"columns": cols, "data": data}})
    if kind == "depth":
        n = draw(st.integers(1, 200_000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return opener * n + b"1" + closer * n
    if kind == "valid_plus_one":  # a valid record with one field replaced
        field = draw(st.sampled_from(COLUMNS))
        return _dumps([{**REQUIRED, field: draw(json_values)}])
    return draw(st.binary(max_size=300))


@st.composite
def csv_bodies(draw: st.DrawFn) -> bytes:
    cols = draw(st.lists(st.sampled_from(COLUMNS + ["x", ""]), min_size=1, max_size=6))
    cell = st.one_of(st.text(alphabet=string.printable, max_size=12),
                     st.sampled_from(["nan", "inf", "-1", str(2**63), "1e400", '"', "", "1.5"]))
    rows = draw(st.lists(st.lists(cell, min_size=len(cols), max_size=len(cols) + 1),
                         max_size=4))
    return "\n".join([",".join(cols), *(",".join(r) for r in rows)]).encode()


# -- the parsers, directly ----------------------------------------------------------------------

@FUZZ
@given(payloads())
def test_payload_json(body):
    fuzz_payload(b"\x00" + body)


@FUZZ
@given(csv_bodies())
def test_payload_csv(body):
    fuzz_payload(b"\x01" + body)


@FUZZ
@given(st.binary(max_size=500))
def test_payload_raw_bytes(data):
    fuzz_payload(data)


@st.composite
def valid_records(draw: st.DrawFn) -> list[dict[str, object]]:
    ports = st.integers(0, 65535)
    counts = st.integers(0, 2**40)
    rec = st.fixed_dictionaries(
        {"first_seen": st.one_of(st.integers(0, 7_258_118_400_000),
                                 st.just("2026-03-02T08:00:00.000Z")),
         "src_ip": st.text(min_size=1, max_size=15), "dst_ip": st.text(min_size=1, max_size=15),
         "packets": counts, "bytes": counts},
        optional={"src_port": ports, "dst_port": ports, "protocol": st.integers(0, 255),
                  "mean_ps": st.floats(0, 1e6), "application": st.text(max_size=10),
                  "src_mac": st.none()})
    return draw(st.lists(rec, min_size=1, max_size=6))


@FUZZ
@given(valid_records())
def test_valid_payloads_are_never_refused(recs):
    """The other side of strictness: every well-typed, in-range record is accepted."""
    from flockwatch.serving.rest import payload_flows

    first = {type(r["first_seen"]) for r in recs}
    if len(first) > 1:  # one column mixing strings and numbers is refused by design
        recs = [{**r, "first_seen": 0} for r in recs]
    flows = payload_flows(json.dumps({"dataframe_records": recs}).encode())
    assert flows.height == len(recs)
    assert flows["packets"].to_list() == [r["packets"] for r in recs]


@FUZZ
@given(st.one_of(
    st.text(max_size=30),
    st.builds(lambda n, u, sp: f"{sp}{n}{sp}{u}{sp}",
              st.one_of(st.integers(0, 10**25).map(str),
                        st.floats(0, 1e12, allow_nan=False).map(lambda x: f"{x:.3f}"),
                        st.just("9" * 400)),
              st.sampled_from(["", "s", "m", "h", "d", "w", "S", "W", "x", "ms"]),
              st.sampled_from(["", " ", "\t"]))))
def test_duration(text):
    fuzz_duration(text.encode())


@FUZZ
@given(st.integers(1, 10**6), st.sampled_from([("s", 1), ("m", 60), ("h", 3600),
                                               ("d", 86400), ("w", 604800)]))
def test_duration_values(n, unit):
    from flockwatch.features.windows import MAX_DURATION_S, parse_duration

    suffix, mult = unit
    if n * mult > MAX_DURATION_S:
        with pytest.raises(ValueError, match="366 days"):
            parse_duration(f"{n}{suffix}")
    else:
        assert parse_duration(f"{n}{suffix}") == n * mult


hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{2,6}){0,2}", fullmatch=True),
    st.text(max_size=20),
)
ports = st.one_of(st.integers(-5, 70_000).map(str), st.text(max_size=6),
                  st.sampled_from(["", "²", "٣", "0x1f", "+1", " 1", "00080"]))


@FUZZ
@given(hosts, ports, st.sampled_from([":", "", "::", ": "]))
def test_host_port(host, port, sep):
    fuzz_host_port(f"{host}{sep}{port}".encode())


@FUZZ
@given(st.ip_addresses().map(str), st.integers(1, 65535))
def test_host_port_round_trip(address, port):
    from flockwatch.serving.options import parse_host_port

    text = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    assert parse_host_port(text) == (address, port)
    if ":" in address:  # a bare IPv6 address is refused, never misread as host:port
        with pytest.raises(ValueError, match="brackets"):
            parse_host_port(f"{address}:{port}")


@FUZZ
@given(st.one_of(st.sampled_from(["udp", "tcp", "UDP", "Tcp", "tpc", "", "udp\n"]),
                 st.text(max_size=5)),
       hosts, st.one_of(st.none(), ports))
def test_syslog_target(protocol, host, port):
    target = host if port is None else f"{host}:{port}"
    fuzz_syslog_target(protocol.encode() + b"\0" + target.encode())


def test_syslog_sink_never_raises_when_sending():
    """Delivery failures are counted (a closed loopback port), never raised."""
    import socket

    from flockwatch.serving.alerts import SyslogCefSink

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    alert = {"kind": "anomalous_window", "severity": "high", "device_id": "d", "mac": None,
             "ip": "10.0.0.1", "start": "a", "end": "b", "top_features": [], "message": "m"}
    for proto in ("tcp", "udp"):
        sink = SyslogCefSink(f"127.0.0.1:{port}", proto)
        for _ in range(3):
            sink.send(alert)
        sink.close()
        assert sink.failures >= (3 if proto == "tcp" else 0)


# -- a short pass against a real server -----------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`flockwatch serve`'s server on 127.0.0.1 with a small real baseline model."""
    from flockwatch.datasets.synth import synthesize
    from flockwatch.features import WindowSpec, extract
    from flockwatch.models.bundle import Bundle
    from flockwatch.serving.rest import FlockwatchServer
    from flockwatch.training.baseline import fit_baseline

    site = tmp_path_factory.mktemp("site")
    synthesize(site, hours=1.0, learning_hours=1.0, seed=5, attacks=[])
    baseline, _ = fit_baseline(extract([site / "learning.pcap"]).flows, window_s=300, epochs=3)
    srv = FlockwatchServer(Bundle(window=WindowSpec(300), baseline=baseline), "127.0.0.1", 0,
                           max_bytes=2_000_000)
    srv.start_background()
    yield srv
    srv.shutdown()
    srv.server_close()


@settings(max_examples=int(os.environ.get("FLOCKWATCH_FUZZ_HTTP_EXAMPLES", "40")),
          deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(payloads(), csv_bodies().map(lambda b: b"CSV" + b)))
def test_server_answers_every_body(served, body):
    """Every body gets an answer (no dropped connection), in JSON, and never a 500: 200 for
    flows, 400 naming the problem, 413 over the limit."""
    ctype = "application/json"
    if body.startswith(b"CSV"):
        body, ctype = body[3:], "text/csv"
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    conn.request("POST", "/invocations", body, {"Content-Type": ctype})
    r = conn.getresponse()
    doc = json.loads(r.read())
    conn.close()
    assert r.status in (200, 400, 413), (r.status, doc)
    if r.status == 200:
        assert isinstance(doc["predictions"], list)
        scores = [w["anomaly_score"] for w in doc["predictions"] if w["anomaly_score"] is not None]
        assert all(math.isfinite(x) for x in scores)
    else:
        assert doc["error_code"] in ("BAD_REQUEST", "REQUEST_TOO_LARGE") and doc["message"]
