"""Zeek ``conn.log`` reader: the third-party sensor input.

Accepted forms: Zeek's own header-and-TSV form (``#separator``, ``#fields``; any one-byte
separator, any column order, several header blocks as ``cat`` of rotated logs gives), a bare
TSV or CSV with a header row, and JSON lines (one object a line, keys such as ``id.orig_h``,
or a nested ``id`` object). Field names may use Zeek's ``_`` scope separator (``id_orig_h``,
as deployments set for Elasticsearch). Columns Zeek cannot give (MACs unless ``orig_l2_addr``
is logged, packet-size and inter-arrival statistics) are null; ``service`` maps to
``application``.

A log is attacker-shaped text: a malformed header is an ``InputError`` naming its line; a row
whose values are not what Zeek writes (a port that is not 0-65535, an address that is not
one, a count past 2^63, a negative duration, an unknown protocol) is skipped and counted in
one warning that names the first such line. Values are checked with polars expressions over
the whole log, addresses once per distinct value.
"""

from __future__ import annotations

import io
import ipaddress
import json
import math
import re
from pathlib import Path
from typing import Any

import polars as pl

from flockwatch.features.errors import InputError, Problem, stat_input
from flockwatch.features.schema import FLOW_SCHEMA, conform, empty_flows

REQUIRED = ("ts", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto")
#: conn.log's field names (Zeek 3-7): a header row naming some of them is a Zeek log, even
#: when it lacks the columns flockwatch needs (then the error says which).
CONN_FIELDS = frozenset({
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service",
    "duration", "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp",
    "missed_bytes", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes",
    "tunnel_parents", "orig_l2_addr", "resp_l2_addr", "vlan", "inner_vlan", "community_id",
    "ip_proto",
})
#: Zeek's transport names (``unknown_transport`` for the rest) and IANA names it may log.
PROTOCOLS = {
    "unknown_transport": 0, "icmp": 1, "igmp": 2, "ipv4": 4, "ipip": 4, "tcp": 6, "udp": 17,
    "ipv6": 41, "gre": 47, "esp": 50, "ah": 51, "icmp6": 58, "ipv6-icmp": 58, "ospf": 89,
    "pim": 103, "vrrp": 112, "l2tp": 115, "sctp": 132, "udplite": 136,
}
_LINE = "__line__"
_MAX_TS = 253_402_300_799  # 9999-12-31: later times cannot be shown as dates
_MAX_DURATION = 1e9  # seconds (31 years): beyond it a duration is no measurement
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def looks_like_zeek(path: Path, *, loose: bool = False) -> bool:
    """True when the file's first line reads like a Zeek log (any accepted form).

    ``loose`` also takes tab-separated text without a header (``zeek-cut`` without ``-c``),
    so that a file given by name gets "no header" instead of "not a capture"; a folder
    search stays strict, to pass over other programs' logs.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    first = head.lstrip(b"\xef\xbb\xbf \r\n").split(b"\n", 1)[0].strip()
    if first.startswith((b"#separator", b"#fields")):
        return True
    if first.startswith(b"{"):
        return any(f'"{k}"'.encode() in first for k in ("id", "ts", "uid", "id.orig_h",
                                                         "id_orig_h", "proto"))
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:  # binary: a capture without a capture's name, say
        return False
    sep = "\t" if "\t" in text else ","
    names = text.split(sep)
    if all(_NAME.fullmatch(n) for n in names) and any(_dotted(n) in CONN_FIELDS for n in names):
        return True
    return (loose and sep == "\t" and len(names) >= 3
            and all(n.isprintable() for n in names))


def read_zeek_conn(path: str | Path) -> tuple[pl.DataFrame, list[Problem]]:
    """Read a Zeek ``conn.log`` into a ``FLOW_SCHEMA`` flow table, with a warning for the
    rows skipped (their count, the first line and why)."""
    name = str(path)
    stat_input(path)
    try:
        data = Path(path).read_bytes()
    except PermissionError:
        raise InputError(name, "permission denied") from None
    except OSError as exc:
        raise InputError(name, f"cannot read: {exc.strerror or exc}") from None
    text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
    if not text.strip():
        raise InputError(name, "empty Zeek log")
    raw = _read_json(name, text) if text.lstrip()[:1] == "{" else _read_delimited(name, text)
    raw = raw.rename({c: _dotted(c) for c in raw.columns
                      if _dotted(c) != c and _dotted(c) not in raw.columns})
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise InputError(name, f"missing columns: {', '.join(missing)} (a Zeek conn.log needs "
                               f"{', '.join(REQUIRED)})")
    return _to_flows(name, raw)


def _dotted(field: str) -> str:
    """``id_orig_h`` -> ``id.orig_h``: Zeek's ``_`` scope separator read back."""
    return "id." + field[3:] if field.startswith("id_") else field


def _lines(text: str) -> list[str]:
    # Not str.splitlines: it also splits at \x1c-\x1e, \x85 and U+2028 inside values.
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]


def _separator(name: str, lineno: int, value: str) -> str:
    if re.fullmatch(r"\\x[0-9A-Fa-f]{2}", value):
        sep = chr(int(value[2:], 16))
    elif len(value) == 1:
        sep = value
    else:
        raise InputError(name, f"line {lineno}: #separator must be one character or a \\xHH "
                               f"escape, got {value!r}")
    if not sep.isascii() or sep in "\r\n":
        raise InputError(name, f"line {lineno}: #separator {sep!r} is not a one-byte "
                               "separator (ASCII, not a line break)")
    return sep


def _fields(name: str, lineno: int, fields: list[str]) -> list[str]:
    seen: set[str] = set()
    for f in fields:
        if not f.strip():
            raise InputError(name, f"line {lineno}: empty field name in the header")
        if f in seen or f == _LINE:
            raise InputError(name, f"line {lineno}: field {f!r} appears twice in the header")
        seen.add(f)
    return fields


def _read_delimited(name: str, text: str) -> pl.DataFrame:
    sep, fields, unset, empty = "\t", None, "-", "(empty)"
    zeek_header = False
    sections: list[tuple[list[str], list[str], list[int]]] = []
    body: list[str] = []
    numbers: list[int] = []
    for lineno, line in enumerate(_lines(text), 1):
        if line.startswith("#"):
            if line.startswith("#separator"):
                rest = line[len("#separator"):]
                sep = _separator(name, lineno, rest[1:] if rest.startswith(" ") else rest)
                zeek_header = True
                continue
            key, _, value = line[1:].partition(sep)
            if key == "fields":
                fields = _fields(name, lineno, value.split(sep))
                body, numbers = [], []
                sections.append((fields, body, numbers))
            elif key == "unset_field":
                unset = value
            elif key == "empty_field":
                empty = value
            continue
        if not line.strip():
            continue
        if fields is None:
            if zeek_header:
                raise InputError(name, f"line {lineno}: a record before any #fields line "
                                       "(the Zeek header has no #fields)")
            # Bare form: the first line is the header row.
            sep = "\t" if "\t" in line else ","
            names = line.split(sep)
            if not any(_dotted(n) in CONN_FIELDS for n in names):
                raise InputError(name, f"line {lineno}: no #fields line or header row (the "
                                       "first line holds values; zeek-cut -c keeps the header)")
            fields = _fields(name, lineno, names)
            body, numbers = [], []
            sections.append((fields, body, numbers))
            continue
        n = line.count(sep) + 1
        if n != len(fields):
            raise InputError(name, f"line {lineno}: {n} fields, the header has {len(fields)}")
        body.append(line)
        numbers.append(lineno)
    if fields is None:
        raise InputError(name, "no #fields line or header row")
    frames = []
    for names, lines, nums in sections:
        if not lines:
            frames.append(pl.DataFrame(schema={**{f: pl.String for f in names},
                                               _LINE: pl.Int64}))
            continue
        df = pl.read_csv(
            io.StringIO("\n".join(lines)), separator=sep, has_header=False, new_columns=names,
            schema_overrides={f: pl.String for f in names}, null_values=[unset],
            quote_char=None, infer_schema=False,
        ).with_columns(pl.col(pl.String).replace(empty, None))
        frames.append(df.with_columns(pl.Series(_LINE, nums, dtype=pl.Int64)))
    return pl.concat(frames, how="diagonal") if len(frames) > 1 else frames[0]


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "T" if v else "F"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else "nan"
    if isinstance(v, int):
        return str(v)
    return json.dumps(v)


def _read_json(name: str, text: str) -> pl.DataFrame:
    rows = []
    for lineno, line in enumerate(_lines(text), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise InputError(name, f"line {lineno}: malformed JSON Zeek log: not an object")
            nested = obj.pop("id", None)
            if isinstance(nested, dict):  # {"id": {"orig_h": ...}} as some shippers write
                obj.update({f"id.{k}": v for k, v in nested.items() if f"id.{k}" not in obj})
            elif nested is not None:
                obj["id"] = nested
            row = {k: _text(v) for k, v in obj.items()}
        except json.JSONDecodeError as exc:
            raise InputError(name, f"line {lineno}: malformed JSON Zeek log: {exc.msg}") from None
        except RecursionError:
            raise InputError(name, f"line {lineno}: malformed JSON Zeek log: nested too deep"
                             ) from None
        row[_LINE] = str(lineno)
        rows.append(row)
    if not rows:
        raise InputError(name, "empty Zeek log")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return pl.DataFrame(rows, schema={k: pl.String for k in keys}, orient="row").with_columns(
        pl.col(_LINE).cast(pl.Int64))


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _ts_ms(raw: pl.DataFrame) -> pl.Expr:
    """Epoch seconds as Zeek writes them, or ISO 8601 (``LogAscii::json_timestamps``)."""
    ts = pl.col("ts")
    seconds = ts.cast(pl.Float64, strict=False)
    ms = (pl.when(seconds.is_finite() & seconds.is_between(0, _MAX_TS))
          .then((seconds * 1000).round(0)).cast(pl.Int64))
    if raw["ts"].str.contains(r"^\d{4}-\d\d-\d\d[T ]").any():
        iso = ts.str.to_datetime(strict=False, time_zone="UTC", time_unit="ms")
        ms = pl.coalesce(ms, iso.dt.epoch("ms"))
    return ms


def _checks(raw: pl.DataFrame) -> list[tuple[str, pl.Expr, str]]:
    """(column, expression true where a present value is valid, what a valid value is)."""
    # Up to 10^15 - 1: sums of two counts stay far inside Int64, and no connection is larger.
    uint = r"^\d{1,15}$"
    out: list[tuple[str, pl.Expr, str]] = [("ts", _ts_ms(raw).is_not_null(),
                                            "is not a valid ts (epoch seconds or ISO 8601)")]
    addresses = pl.concat([raw["id.orig_h"], raw["id.resp_h"]]).drop_nulls().unique()
    bad = [a for a in addresses.to_list() if not _is_ip(a)]
    for c in ("id.orig_h", "id.resp_h"):
        out.append((c, ~pl.col(c).is_in(bad), "is not an IP address"))
    for c in ("id.orig_p", "id.resp_p"):
        out.append((c, pl.col(c).str.contains(r"^\d{1,5}$")
                    & (pl.col(c).cast(pl.Int64, strict=False) <= 65535), "is not a port 0-65535"))
    out.append(("proto", pl.col("proto").str.to_lowercase().is_in(list(PROTOCOLS))
                | (pl.col("proto").str.contains(r"^\d{1,3}$")
                   & (pl.col("proto").cast(pl.Int64, strict=False) <= 255)),
                f"is not a protocol ({', '.join(list(PROTOCOLS)[:8])}, ... or 0-255)"))
    for c in ("orig_pkts", "resp_pkts", "orig_ip_bytes", "resp_ip_bytes", "orig_bytes",
              "resp_bytes", "missed_bytes"):
        if c in raw.columns:
            out.append((c, pl.col(c).str.contains(uint),
                        "is not a count 0-999999999999999"))
    if "duration" in raw.columns:
        d = pl.col("duration").cast(pl.Float64, strict=False)
        out.append(("duration", d.is_finite() & d.is_between(0, _MAX_DURATION),
                    f"is not a duration 0-{_MAX_DURATION:.0e} s"))
    for c in ("vlan", "inner_vlan"):
        if c in raw.columns:
            out.append((c, pl.col(c).str.contains(r"^\d{1,4}$")
                        & (pl.col(c).cast(pl.Int64, strict=False) <= 4095), "is not a VLAN 0-4095"))
    if "ip_proto" in raw.columns:
        out.append(("ip_proto", pl.col("ip_proto").str.contains(r"^\d{1,3}$")
                    & (pl.col("ip_proto").cast(pl.Int64, strict=False) <= 255),
                    "is not an IP protocol number 0-255"))
    for c in ("orig_l2_addr", "resp_l2_addr"):
        if c in raw.columns:
            out.append((c, pl.col(c).str.contains(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"),
                        "is not a MAC address"))
    return out


def _validate(name: str, raw: pl.DataFrame) -> tuple[pl.DataFrame, list[Problem]]:
    """Drop the rows with a value Zeek would not write; say how many, where and why."""
    checks = _checks(raw)
    # A required column must be set; an optional one may be unset (null).
    flags = raw.select(
        pl.col(_LINE),
        *[(~valid.fill_null(False) if c in REQUIRED
           else (pl.col(c).is_not_null() & ~valid.fill_null(False))).alias(f"bad:{c}")
          for c, valid, _ in checks],
    )
    bad_any = pl.any_horizontal(pl.col(f"bad:{c}") for c, _, _ in checks)
    counts = flags.select(pl.col(f"bad:{c}").sum() for c, _, _ in checks).row(0)
    skipped = int(flags.select(bad_any.sum()).item())
    if not skipped:
        return raw, []
    parts = []
    for (c, _, what), n in zip(checks, counts, strict=True):
        if n:
            i = int(flags[f"bad:{c}"].arg_max() or 0)
            value = raw[c][i]
            shown = "unset" if value is None else repr(value[:40])
            parts.append(f"{c} {what} in {n} row{'s' if n != 1 else ''}, first at line "
                         f"{flags[_LINE][i]}: {shown}")
    detail = "; ".join(parts)
    if skipped == raw.height:
        raise InputError(name, f"no valid records: {detail}")
    kept = raw.filter(~flags.select(bad_any).to_series())
    return kept, [Problem(name, f"{skipped} row{'s' if skipped != 1 else ''} skipped: {detail}",
                          "warning", skipped)]


def _col(raw: pl.DataFrame, name: str, dtype: pl.DataType) -> pl.Expr:
    if name in raw.columns:
        return pl.col(name).cast(dtype, strict=False)
    return pl.lit(None, dtype=dtype)


def _to_flows(name: str, raw: pl.DataFrame) -> tuple[pl.DataFrame, list[Problem]]:
    if raw.height == 0:
        return empty_flows(), []
    raw, problems = _validate(name, raw)
    ts_ms = _ts_ms(raw)
    dur_ms = (_col(raw, "duration", pl.Float64()).fill_null(0.0) * 1000).round(0).cast(pl.Int64)
    history = _col(raw, "history", pl.String()).fill_null("")
    opk = _col(raw, "orig_pkts", pl.Int64())
    rpk = _col(raw, "resp_pkts", pl.Int64())
    ob = _col(raw, "orig_ip_bytes", pl.Int64())
    rb = _col(raw, "resp_ip_bytes", pl.Int64())
    proto = pl.col("proto").str.to_lowercase()
    protocol = (_col(raw, "ip_proto", pl.Int16()) if "ip_proto" in raw.columns
                else pl.lit(None, dtype=pl.Int16))
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
        pl.coalesce(
            protocol,
            # Zeek logs ICMPv6 as "icmp" too
            pl.when((proto == "icmp") & pl.col("id.orig_h").str.contains(":")).then(58),
            proto.replace_strict(PROTOCOLS, default=None, return_dtype=pl.Int16),
            proto.cast(pl.Int16, strict=False),
        ).cast(pl.Int16).alias("protocol"),
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
    return conform(out).select(list(FLOW_SCHEMA)), problems
