"""The flow table contract: ``FLOW_SCHEMA``.

Every traffic source (pcap/pcapng through NFStream, a live interface, a Zeek ``conn.log``)
produces a polars DataFrame with exactly these columns, in this order, with these dtypes.
A column a source cannot fill is null, never missing.

A flow is bidirectional: ``src`` is the initiator, the endpoint that sent the first packet
unless that packet was a reply (``features.orient`` decides as Zeek does).
"""

from __future__ import annotations

import polars as pl

from flockwatch.features.ot import OT_COLUMNS

UTC_MS = pl.Datetime("ms", "UTC")

#: Bumped whenever extraction gives other flows for the same capture (v2: split pairs merged
#: and replies re-oriented, ``features.orient``; v3: the ``announcements`` column, read by a
#: pass of its own, ``features.announce``; v4: the ``payload`` column and the industrial
#: columns, read by the payload pass, ``features.payload``): caches of flow tables are keyed
#: by it.
EXTRACTION_VERSION = 4

#: Column name -> (polars dtype, description). The flow-schema table of docs/flows.md is generated
#: from this mapping (see ``flow_schema_markdown``), so the two cannot drift apart.
FLOW_COLUMNS: dict[str, tuple[pl.DataType, str]] = {
    "source": (pl.String(), "capture file, interface or Zeek log the flow came from"),
    "first_seen": (UTC_MS, "time of the flow's first packet (UTC)"),
    "last_seen": (UTC_MS, "time of the flow's last packet (UTC)"),
    "duration_ms": (pl.Int64(), "last_seen - first_seen in milliseconds"),
    "src_mac": (pl.String(), "initiator MAC, lower case (null without layer 2)"),
    "dst_mac": (pl.String(), "responder MAC, lower case (null without layer 2)"),
    "src_ip": (pl.String(), "initiator IP address"),
    "dst_ip": (pl.String(), "responder IP address"),
    "src_port": (pl.Int32(), "initiator port (0 for protocols without ports)"),
    "dst_port": (pl.Int32(), "responder port (0 for protocols without ports)"),
    "protocol": (pl.Int16(), "IP protocol number (6 TCP, 17 UDP, 1 ICMP, ...)"),
    "ip_version": (pl.Int8(), "4 or 6"),
    "vlan_id": (pl.Int32(), "VLAN identifier (0 when untagged)"),
    "application": (pl.String(), "nDPI application, e.g. 'TLS.Amazon', 'Modbus' (Zeek: service)"),
    "application_category": (pl.String(), "nDPI category, e.g. 'IoT-Scada', 'Network'"),
    "server_name": (
        pl.String(),
        "requested server name: TLS SNI, DNS query, HTTP host, DHCP/mDNS host name",
    ),
    "user_agent": (pl.String(), "HTTP user agent"),
    "client_fingerprint": (pl.String(), "TLS client fingerprint (JA4) or DHCP fingerprint"),
    "server_fingerprint": (pl.String(), "TLS server fingerprint (JA3S)"),
    "announcements": (
        pl.String(),
        "what endpoints announced about themselves in clear text (DHCP vendor class, mDNS "
        "service types, SSDP SERVER/ST/NT/USN/USER-AGENT), one entry a line: `>` sent by src, "
        "`<` by dst, then `kind=value`",
    ),
    "payload": (
        pl.String(),
        "what the first packets of a TCP or UDP flow on a known port said (software banners, "
        "HTTP Server/User-Agent, TLS version and certificate, industrial identity, that a "
        "login crossed in clear, never the secret), one entry a line: `>` sent by src, `<` by "
        "dst, then `kind=value` (see 'The payload column'; null for Zeek)",
    ),
    "packets": (pl.Int64(), "packets, both directions"),
    "bytes": (pl.Int64(), "bytes on the wire, both directions"),
    "src2dst_packets": (pl.Int64(), "packets initiator -> responder"),
    "src2dst_bytes": (pl.Int64(), "bytes initiator -> responder"),
    "dst2src_packets": (pl.Int64(), "packets responder -> initiator"),
    "dst2src_bytes": (pl.Int64(), "bytes responder -> initiator"),
    "min_ps": (pl.Float64(), "smallest packet size (bytes)"),
    "mean_ps": (pl.Float64(), "mean packet size (bytes)"),
    "stddev_ps": (pl.Float64(), "standard deviation of packet size"),
    "max_ps": (pl.Float64(), "largest packet size (bytes)"),
    "min_piat_ms": (pl.Float64(), "smallest packet inter-arrival time (ms)"),
    "mean_piat_ms": (pl.Float64(), "mean packet inter-arrival time (ms)"),
    "stddev_piat_ms": (pl.Float64(), "standard deviation of packet inter-arrival time (ms)"),
    "max_piat_ms": (pl.Float64(), "largest packet inter-arrival time (ms)"),
    "syn_packets": (pl.Int64(), "packets with SYN set"),
    "ack_packets": (pl.Int64(), "packets with ACK set"),
    "psh_packets": (pl.Int64(), "packets with PSH set"),
    "rst_packets": (pl.Int64(), "packets with RST set"),
    "fin_packets": (pl.Int64(), "packets with FIN set"),
    "urg_packets": (pl.Int64(), "packets with URG set"),
    **OT_COLUMNS,
}

FLOW_SCHEMA: pl.Schema = pl.Schema({name: dtype for name, (dtype, _) in FLOW_COLUMNS.items()})


def empty_flows() -> pl.DataFrame:
    """An empty flow table with the full schema."""
    return pl.DataFrame(schema=FLOW_SCHEMA)


def conform(df: pl.DataFrame) -> pl.DataFrame:
    """Return ``df`` with exactly the ``FLOW_SCHEMA`` columns, in order and cast.

    Missing columns are added as nulls; extra columns are dropped.
    """
    have = df.schema
    # only the columns that need it: a select of every column costs a REST request ~1 ms
    fix = [pl.col(name).cast(dtype, strict=False) if name in have
           else pl.lit(None, dtype=dtype).alias(name)
           for name, dtype in FLOW_SCHEMA.items() if have.get(name) != dtype]
    if fix:
        df = df.with_columns(fix)
    return df[list(FLOW_SCHEMA)]


def flow_schema_markdown() -> str:
    """The flow schema as a Markdown table (docs/flows.md, `make docs`)."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    for name, (dtype, doc) in FLOW_COLUMNS.items():
        lines.append(f"| `{name}` | {dtype} | {doc} |")
    return "\n".join(lines)
