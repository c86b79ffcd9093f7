"""Zeek ``conn.log`` reader: the third-party sensor input.

Accepted forms: Zeek's own header-and-TSV form (``#separator``, ``#fields``; any separator,
any column order), a bare TSV or CSV with a header row, and JSON lines (one object a line,
keys such as ``id.orig_h``). Columns Zeek cannot give (MACs unless ``orig_l2_addr`` is logged,
packet-size and inter-arrival statistics) are null; ``service`` maps to ``application``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl
from flockwatch.features.errors import InputError
from flockwatch.features.schema import FLOW_SCHEMA, conform

REQUIRED = ("ts", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto")
_PROTO = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58}


def looks_like_zeek(path: Path) -> bool:
    """True when the file's first line reads like a Zeek log (any accepted form)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    first = head.split(b"\n", 1)[0].strip()
    if first.startswith(b"#separator"):
        return True
    if first.startswith(b"{") and b"id.orig_h" in first:
        return True
    return b"id.orig_h" in first and (b"\t" in first or b"," in first)


def read_zeek_conn(path: str | Path) -> pl.DataFrame:
    """Read a Zeek ``conn.log`` into a ``FLOW_SCHEMA`` flow table."""
    p = Path(path)
    name = str(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise InputError(name, "no such file") from None
    except OSError as exc:
        raise InputError(name, f"cannot read: {exc.strerror or exc}") from None
    if not text.strip():
        raise InputError(name, "empty Zeek log")
    first = text.lstrip().split("\n", 1)[0]
    raw = _read_json(name, text) if first.startswith("{") else _read_delimited(name, text)
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise InputError(name, f"malformed Zeek conn.log: missing fields {', '.join(missing)}")
    return _to_flows(name, raw)


def _read_delimited(name: str, text: str) -> pl.DataFrame:
    sep, fields, unset, empty = None, None, "-", "(empty)"
    body: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            split_on = " " if line.startswith("#separator") else (sep or "\t")
            key, _, value = line[1:].partition(split_on)
            if key == "separator":
                sep = value.strip().encode().decode("unicode_escape")
            elif key == "fields":
                fields = value.split(sep or "\t")
            elif key == "unset_field":
                unset = value
            elif key == "empty_field":
                empty = value
            continue
        if not line.strip():
            continue
        if fields is None:
            # Bare form: the first non-comment line is the header row.
            sep = "\t" if "\t" in line else ","
            fields = line.split(sep)
            continue
        body.append(line)
        if line.count(sep or "\t") != len(fields) - 1:
            raise InputError(
                name,
                f"malformed Zeek log at line {lineno}: {line.count(sep or chr(9)) + 1} fields, "
                f"header has {len(fields)}",
            )
    if fields is None:
        raise InputError(name, "malformed Zeek log: no #fields line or header row")
    if not body:
        return pl.DataFrame(schema={f: pl.String for f in fields})
    return pl.read_csv(
        io.StringIO("\n".join(body)),
        separator=sep or "\t",
        has_header=False,
        new_columns=fields,
        schema_overrides={f: pl.String for f in fields},
        null_values=[unset],
        quote_char=None,
        infer_schema=False,
    ).with_columns(pl.col(pl.String).replace(empty, None))


def _read_json(name: str, text: str) -> pl.DataFrame:
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(name, f"malformed JSON Zeek log at line {lineno}: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise InputError(name, f"malformed JSON Zeek log at line {lineno}: not an object")
        rows.append({k: None if v is None else str(v) for k, v in obj.items()})
    if not rows:
        raise InputError(name, "empty Zeek log")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return pl.DataFrame(rows, schema={k: pl.String for k in keys}, orient="row")


def _col(raw: pl.DataFrame, name: str, dtype: pl.DataType) -> pl.Expr:
    if name in raw.columns:
        return pl.col(name).cast(dtype, strict=False)
    return pl.lit(None, dtype=dtype)


def _to_flows(name: str, raw: pl.DataFrame) -> pl.DataFrame:
    ts_ms = (_col(raw, "ts", pl.Float64()) * 1000).round(0).cast(pl.Int64)
    dur_ms = (_col(raw, "duration", pl.Float64()).fill_null(0.0) * 1000).round(0).cast(pl.Int64)
    history = _col(raw, "history", pl.String()).fill_null("")
    opk = _col(raw, "orig_pkts", pl.Int64())
    rpk = _col(raw, "resp_pkts", pl.Int64())
    ob = _col(raw, "orig_ip_bytes", pl.Int64())
    rb = _col(raw, "resp_ip_bytes", pl.Int64())
    try:
        out = raw.select(
            pl.lit(name).alias("source"),
            ts_ms.cast(pl.Datetime("ms", "UTC")).alias("first_seen"),
            (ts_ms + dur_ms).cast(pl.Datetime("ms", "UTC")).alias("last_seen"),
            dur_ms.alias("duration_ms"),
            _col(raw, "orig_l2_addr", pl.String()).str.to_lowercase().alias("src_mac"),
            _col(raw, "resp_l2_addr", pl.String()).str.to_lowercase().alias("dst_mac"),
            pl.col("id.orig_h").alias("src_ip"),
            pl.col("id.resp_h").alias("dst_ip"),
            _col(raw, "id.orig_p", pl.Int32()).alias("src_port"),
            _col(raw, "id.resp_p", pl.Int32()).alias("dst_port"),
            pl.col("proto").str.to_lowercase()
            .replace_strict(_PROTO, default=0, return_dtype=pl.Int16).alias("protocol"),
            pl.when(pl.col("id.orig_h").str.contains(":")).then(6).otherwise(4)
            .cast(pl.Int8).alias("ip_version"),
            _col(raw, "vlan", pl.Int32()).fill_null(0).alias("vlan_id"),
            _col(raw, "service", pl.String()).alias("application"),
            opk.alias("src2dst_packets"),
            ob.alias("src2dst_bytes"),
            rpk.alias("dst2src_packets"),
            rb.alias("dst2src_bytes"),
            (opk + rpk).alias("packets"),
            (ob + rb).alias("bytes"),
            ((ob + rb) / (opk + rpk)).alias("mean_ps"),
            # Zeek's history letters are approximate flag counts (upper: originator).
            history.str.count_matches("[Ss]").cast(pl.Int64).alias("syn_packets"),
            history.str.count_matches("[Ff]").cast(pl.Int64).alias("fin_packets"),
            history.str.count_matches("[Rr]").cast(pl.Int64).alias("rst_packets"),
            history.str.count_matches("[Aa]").cast(pl.Int64).alias("ack_packets"),
            history.str.count_matches("[Dd]").cast(pl.Int64).alias("psh_packets"),
        )
    except pl.exceptions.PolarsError as exc:
        raise InputError(name, f"malformed Zeek conn.log: {str(exc).splitlines()[0]}") from None
    bad = out.filter(pl.col("first_seen").is_null() | pl.col("src_ip").is_null())
    if bad.height:
        raise InputError(
            name, f"malformed Zeek conn.log: {bad.height} record(s) without a valid ts or id.orig_h"
        )
    return conform(out).select(list(FLOW_SCHEMA))
