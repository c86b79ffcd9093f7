"""Fuzz targets for what the REST server and the command line parse from strangers: one
function per parser, each taking raw bytes (as libFuzzer, atheris or a Hypothesis ``binary()``
strategy give them) and raising only on a defect: ``AssertionError`` when a parser broke its
contract, or whatever unforeseen exception escaped it. A rejected input is no defect.

``tests/fuzz/test_rest_cli.py`` runs them in CI (short), and a long run can call them from a
driver such as ``experiments/fuzz.py``:

    from flockwatch.serving.fuzz_targets import TARGETS
    for name, target in TARGETS.items():
        target(data)
"""

from __future__ import annotations

import math
from collections.abc import Callable

from flockwatch.serving.options import (
    SyslogProtocol,
    check_host,
    parse_host_port,
    parse_port,
    parse_syslog_target,
)


def fuzz_payload(data: bytes) -> None:
    """REST payload parsing: a flow table or ``PayloadError`` (a JSON 400), nothing else.
    The first byte picks the content type (odd: CSV)."""
    import polars as pl

    from flockwatch.features.schema import FLOW_SCHEMA
    from flockwatch.serving.rest import PayloadError, payload_flows

    ctype = "text/csv" if data[:1] and data[0] % 2 else "application/json"
    try:
        flows = payload_flows(data[1:], ctype)
    except PayloadError as exc:
        assert "\n" not in str(exc), "a 400 message must be one line"
        return
    assert flows.schema == FLOW_SCHEMA, flows.schema
    assert flows.height > 0
    assert flows["first_seen"].null_count() == 0
    for col, dtype in FLOW_SCHEMA.items():
        if dtype.is_float():
            assert flows[col].is_finite().all() is not False, col
        elif dtype.is_integer():
            assert (flows[col].min() or 0) >= 0, col  # type: ignore[operator]
    assert flows["first_seen"].dtype == pl.Datetime("ms", "UTC")


def fuzz_duration(data: bytes) -> None:
    """``parse_duration``: seconds in (0, 366 days], or ``ValueError``."""
    from flockwatch.features.windows import MAX_DURATION_S, parse_duration

    text = data.decode("utf-8", "replace")
    try:
        value = parse_duration(text)
    except ValueError:
        return
    if text == "":
        assert value is None
        return
    assert value is not None and math.isfinite(value) and 0 < value <= MAX_DURATION_S, value


def fuzz_host_port(data: bytes) -> None:
    """``parse_host_port``: a checked host and a port 1-65535 that format back to a target
    that parses to the same pair, or ``ValueError``."""
    text = data.decode("utf-8", "replace")
    try:
        host, port = parse_host_port(text)
    except ValueError:
        return
    assert 1 <= port <= 65535 and parse_port(str(port)) == port
    assert check_host(host) == host
    again = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    assert parse_host_port(again) == (host, port), (text, again)


def fuzz_syslog_target(data: bytes) -> None:
    """``--syslog`` with ``--syslog-protocol``: a target the CEF sink accepts at start (and
    the same one the parser gives), or ``ValueError`` from both. The text before the first
    NUL byte is the protocol, the rest the target. Nothing is sent: a fuzzed host name would
    reach the resolver."""
    from flockwatch.serving.alerts import SyslogCefSink

    proto_b, _, target_b = data.partition(b"\0")
    protocol, target = proto_b.decode("utf-8", "replace"), target_b.decode("utf-8", "replace")
    try:
        t = parse_syslog_target(target, protocol)
    except ValueError:
        try:
            SyslogCefSink(target, protocol)
        except ValueError:
            return
        raise AssertionError(f"the sink took what the parser refused: {target!r}") from None
    assert isinstance(t.protocol, SyslogProtocol) and 1 <= t.port <= 65535
    sink = SyslogCefSink(target, protocol)
    assert sink.addr == (t.host, t.port)


#: name -> target, for a fuzz driver to register.
TARGETS: dict[str, Callable[[bytes], None]] = {
    "rest_payload": fuzz_payload,
    "duration": fuzz_duration,
    "host_port": fuzz_host_port,
    "syslog_target": fuzz_syslog_target,
}
