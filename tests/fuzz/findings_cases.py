"""Hostile flow tables for the risk rules (features/findings.py): the fuzz target
``findings`` of experiments/fuzz.py. A flow table's ``payload`` text may come from an old
Parquet file, a foreign tool or a hand edit: every entry form, malformed certificates and
dates, odd counters and addresses must give findings or none, never an exception."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import partial
from typing import Any

import polars as pl

T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
KINDS = ["cleartext_login", "tls_version", "tls_cert", "ssh_banner", "http_server", "x", ""]
IPS = ["192.168.1.2", "192.168.1.3", "203.0.113.7", "255.255.255.255", "224.0.0.1",
       "fe80::1", "2001:db8::1", "0.0.0.0", "127.0.0.1", "10.0.0.256", "", "ff02::1"]
MACS = ["02:00:00:00:00:01", "02:00:00:00:00:02", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01",
        None]
PORTS = [0, 21, 22, 23, 80, 102, 443, 502, 2404, 3389, 5900, 20000, 44818, 47808, 65535]
CERT_FIELDS = ["subject", "issuer", "not_before", "not_after", "self_signed", ""]
DATES = ["2020-01-01T00:00:00Z", "2040-01-01T00:00:00Z", "not a date", "9999-99-99T99:99:99Z",
         "", "1970-01-01", "2026-03-02T08:00:00+02:00"]


def flow_tables() -> Any:
    """A Hypothesis strategy of lists of flow rows (dicts of the flow columns the rules
    read)."""
    from hypothesis import strategies as st

    text = st.text(max_size=40)
    cert = st.lists(st.tuples(st.sampled_from(CERT_FIELDS),
                              st.one_of(st.sampled_from(DATES), st.sampled_from(["0", "1"]),
                                        text)), max_size=6).map(
        lambda kv: ";".join(f"{k}={v}" for k, v in kv))
    entry = st.tuples(st.sampled_from([">", "<", "", "=", "\n"]), st.sampled_from(KINDS),
                      st.one_of(cert, text, st.sampled_from(
                          ["ftp", "snmp_v1", "TLS1.0", "SSLv3", "TLS1.3"]))).map(
        lambda t: f"{t[0]}{t[1]}={t[2]}")
    payload = st.one_of(st.none(), st.lists(entry, max_size=5).map("\n".join), text)
    count = st.one_of(st.none(), st.integers(-5, 2**40))
    row = st.fixed_dictionaries({
        "src_mac": st.sampled_from(MACS), "dst_mac": st.sampled_from(MACS),
        "src_ip": st.sampled_from(IPS), "dst_ip": st.sampled_from(IPS),
        "src_port": st.sampled_from(PORTS), "dst_port": st.sampled_from(PORTS),
        "protocol": st.sampled_from([6, 17, 1, 58, 132]),
        "application": st.sampled_from(["Unknown", "Telnet", "SSH", "RDP", "Modbus", "DNP3",
                                        "TLS.Amazon", "", None]),
        "syn_packets": st.integers(0, 3), "src2dst_packets": st.integers(0, 5),
        "dst2src_packets": st.integers(0, 5), "ack_packets": st.integers(0, 10),
        "seconds": st.integers(-10, 10**6),
        "payload": payload, "ot_protocol": st.sampled_from([None, "modbus", "dnp3", "?"]),
        "ot_requests": count, "ot_writes": count, "ot_program": count,
    })
    return st.lists(row, max_size=8)


def table(rows: list[dict[str, Any]]) -> pl.DataFrame:
    from flockwatch.features.schema import conform, empty_flows

    recs = []
    for r in rows:
        r = dict(r)
        t = T0 + dt.timedelta(seconds=r.pop("seconds"))
        packets = r["src2dst_packets"] + r["dst2src_packets"]
        recs.append({**r, "source": "fuzz", "first_seen": t, "last_seen": t,
                     "packets": packets, "bytes": 60 * packets})
    extra = {"payload": pl.String, "ot_protocol": pl.String, "ot_requests": pl.Int64,
             "ot_writes": pl.Int64, "ot_program": pl.Int64}
    base = conform(pl.DataFrame(recs, infer_schema_length=None)) if recs else empty_flows()
    return base.with_columns(pl.Series(c, [r.get(c) for r in recs], dtype=t)
                             for c, t in extra.items())


def check_findings(rows: list[dict[str, Any]]) -> None:
    """The rules over the table: no exception; every finding of a credited device, at most
    ``MAX_FLOWS`` flows, a one-line message, first seen no later than last seen."""
    from flockwatch.features.attribution import attribute
    from flockwatch.features.findings import KINDS as RULES
    from flockwatch.features.findings import MAX_FLOWS, findings

    flows = table(rows)
    att = attribute(flows)
    found = findings(flows, att)
    devices = set(att["device_id"].to_list())
    for f in found.iter_rows(named=True):
        assert f["kind"] in RULES, f
        assert f["device_id"] in devices, f
        assert 1 <= len(f["flows"]) <= MAX_FLOWS, f
        assert "\n" not in f["message"], f
        assert f["first_seen"] <= f["last_seen"], f


CORPUS: dict[str, list[dict[str, Any]]] = {
    "empty": [],
    "cert-garbage-dates": [{
        "src_mac": MACS[0], "dst_mac": MACS[1], "src_ip": IPS[0], "dst_ip": IPS[1],
        "src_port": 40000, "dst_port": 443, "protocol": 6, "application": "TLS",
        "syn_packets": 2, "src2dst_packets": 3, "dst2src_packets": 3, "ack_packets": 5,
        "seconds": 0, "payload": "<tls_cert=not_after=9999-99-99T99:99:99Z;self_signed=1;;;=",
        "ot_protocol": None, "ot_requests": None, "ot_writes": None, "ot_program": None}],
    "negative-writes": [{
        "src_mac": MACS[0], "dst_mac": MACS[1], "src_ip": IPS[0], "dst_ip": IPS[1],
        "src_port": 40000, "dst_port": 502, "protocol": 6, "application": "Modbus",
        "syn_packets": 2, "src2dst_packets": 3, "dst2src_packets": 3, "ack_packets": 5,
        "seconds": 0, "payload": None, "ot_protocol": "modbus", "ot_requests": -1,
        "ot_writes": 2**40, "ot_program": -5}],
}


def corpus() -> dict[str, Callable[[], list[dict[str, Any]]]]:
    """``CORPUS`` as the fuzz campaign takes it: name -> () -> input."""
    return {k: partial(list, v) for k, v in CORPUS.items()}
