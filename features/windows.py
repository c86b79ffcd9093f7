"""Per-device windows of behavioural features.

``windows(flows, spec)`` attributes flows to devices (``attribution.attribute``), cuts each
device's traffic into tumbling windows of ``spec.length_s`` seconds by flow start, and
computes ``FEATURE_COLUMNS``: behaviour only, never identity (no MAC, IP or lab address).

Default window: 300 s. Long enough to hold several periods of the heartbeats, polling and
telemetry that IoT/OT devices repeat every 10-60 s (so periodicity and mix are measurable),
short enough that an alert lands within minutes (two windows = 10 min) and that a week gives
~2,000 windows per device to learn from. Windows are aligned to the start of each source
(``align="source"``), so a capture shorter than the window is one whole-capture window; the
live sensor aligns to the clock (``align="epoch"``). SCADA polling needs seconds: pass a
shorter ``length_s``.
"""

from __future__ import annotations

import functools
import re
import statistics
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl

from flockwatch.features.attribution import attribute
from flockwatch.features.ot import (
    MODBUS_FC_FEATURES,
    OT_FEATURE_DESCRIPTIONS,
    OT_FEATURES,
    PROTOCOLS,
    ot_window_features,
)

KEY_COLUMNS = ["source", "device_id", "start", "end"]
#: Non-feature facts carried with each window (conserved totals, identities for reports).
META_COLUMNS = ["mac", "ip", "packets", "bytes", "flows"]

APPLICATIONS = [
    "DNS", "DHCP", "DHCPV6", "NTP", "MDNS", "SSDP", "LLMNR", "NetBIOS", "HTTP", "TLS", "QUIC",
    "MQTT", "COAP", "RTSP", "RTP", "RTCP", "SIP", "SNMP", "SSH", "Telnet", "STUN", "ICMP",
    "ICMPV6", "IGMP", "Syslog", "Modbus", "DNP3", "IEC60870", "S7Comm", "S7CommPlus", "BACnet",
    "EthernetIP", "OPC-UA", "Unknown",
]
CATEGORIES = [
    "Network", "Web", "Media", "Streaming", "VoIP", "Cloud", "IoT-Scada", "System",
    "RemoteAccess", "Unspecified",
]
SERVICE_PORTS = [
    22, 23, 53, 67, 80, 102, 123, 137, 161, 443, 502, 554, 631, 1883, 1900, 2404, 3478, 5060,
    5353, 5683, 8080, 8443, 8883, 9100, 20000, 44818, 47808,
]
N_NAME_BUCKETS = 64
#: Names are split into words at every non-alphanumeric character. Words that say nothing
#: about the kind of device are dropped: numbers, hex strings with a digit and words with 5
#: or more digits (IP literals such as SSDP's 239.255.255.250, reverse lookups, and the MAC
#: or serial numbers in DHCP and mDNS host names, e.g. dcs-935l-b0c554255b0e, keq0817541:
#: identity, not behaviour), and words nearly every name has.
ADDRESS_LIKE = r"^([0-9]+|[0-9a-f]*[0-9][0-9a-f]*)$"
GENERIC_NAME_LABELS = ["com", "net", "org", "www", "local", "arpa", "in", "addr", "io", "co",
                       "de", "uk", "cn"]
N_FINGERPRINT_BUCKETS = 32

_DESCRIPTIONS: dict[str, str] = {
    "log_flows": "log(1 + flows)",
    "log_packets": "log(1 + packets)",
    "log_bytes": "log(1 + bytes)",
    "log_bytes_out": "log(1 + bytes sent by the device)",
    "log_bytes_in": "log(1 + bytes received by the device)",
    "out_byte_share": "share of bytes sent by the device",
    "out_flow_share": "share of flows the device initiated",
    "log_bytes_per_s": "log(1 + bytes per second of activity)",
    "log_flows_per_min": "log(1 + flows per minute of activity)",
    "mean_packet_size": "bytes / packets",
    "mean_packet_size_std": "mean of flows' packet-size standard deviation",
    "max_packet_size": "largest packet",
    "min_packet_size": "smallest packet",
    "log_packets_per_flow": "log(1 + packets per flow)",
    "log_mean_flow_duration": "log(1 + mean flow duration in s)",
    "log_max_flow_duration": "log(1 + longest flow duration in s)",
    "log_mean_piat": "log(1 + mean packet inter-arrival in ms)",
    "log_std_piat": "log(1 + mean packet inter-arrival standard deviation in ms)",
    "log_flow_iat_mean": "log(1 + mean time between flow starts in s) (periodicity)",
    "flow_iat_cv": "coefficient of variation of time between flow starts (low = periodic)",
    "periodic_flow_share": "share of flows in (peer, port) series that repeat at a steady pace",
    "tcp_share": "share of flows over TCP",
    "udp_share": "share of flows over UDP",
    "icmp_share": "share of flows over ICMP/ICMPv6",
    "other_l4_share": "share of flows over other IP protocols",
    "app_other_share": "share of flows of an nDPI application not listed",
    "port_other_low_share": "share of flows to another port below 1024",
    "port_other_high_share": "share of flows to another port from 1024",
    "log_distinct_ports": "log(1 + distinct responder ports)",
    "log_distinct_names": "log(1 + distinct DNS/SNI/host names)",
    "log_peers": "log(1 + distinct peer addresses)",
    "log_local_peers": "log(1 + distinct local peers)",
    "log_remote_peers": "log(1 + distinct remote peers)",
    "local_flow_share": "share of flows with a local peer",
    "syn_ratio": "SYN packets / TCP packets",
    "rst_ratio": "RST packets / TCP packets",
    "fin_ratio": "FIN packets / TCP packets",
    "psh_ratio": "PSH packets / TCP packets",
    "unanswered_out_share": "share of initiated flows that got no packet back (scans, dead peers)",
}
for _a in APPLICATIONS:
    _DESCRIPTIONS[f"app_{_a.lower()}_share"] = f"share of flows nDPI names {_a} (master protocol)"
for _c in CATEGORIES:
    _DESCRIPTIONS[f"cat_{_c.lower()}_share"] = f"share of flows in nDPI category {_c}"
for _p in SERVICE_PORTS:
    _DESCRIPTIONS[f"port_{_p}_share"] = f"share of flows whose responder port is {_p}"
for _b in range(N_NAME_BUCKETS):
    _DESCRIPTIONS[f"name_token_{_b:02d}"] = (
        f"share of the words of DNS/SNI/DHCP host names (less numbers, hex strings and "
        f"generic words: com, www, ...) hashed (CRC32) into bucket {_b}"
    )

for _b in range(N_FINGERPRINT_BUCKETS):
    _DESCRIPTIONS[f"fingerprint_{_b:02d}"] = (
        f"share of client fingerprints (DHCP parameter list, TLS JA4) and user agents hashed "
        f"(CRC32) into bucket {_b}"
    )

_DESCRIPTIONS.update(OT_FEATURE_DESCRIPTIONS)

#: Bumped whenever a feature's definition changes, or the flows they are computed from (v4:
#: flow direction as Zeek decides it, ``features.orient``; v5: the industrial features of
#: ``features.ot``, OT_FEATURES); models record the version they were trained with and refuse
#: to score windows of another.
FEATURE_SET_VERSION = 5

#: The stable, documented feature column list, in order.
FEATURE_COLUMNS: list[str] = list(_DESCRIPTIONS)
FEATURE_DESCRIPTIONS: dict[str, str] = dict(_DESCRIPTIONS)


@dataclass(frozen=True)
class WindowSpec:
    """How flows are cut into windows.

    Parameters
    ----------
    length_s
        Window length in seconds (default 300).
    align
        ``"source"``: windows start at each source's first flow (a capture shorter than the
        window is one whole-capture window). ``"epoch"``: windows start at multiples of
        ``length_s`` since 1970 (live sensing).
    """

    length_s: float = 300.0
    align: str = "source"

    def __post_init__(self) -> None:
        if not self.length_s > 0:
            raise ValueError(f"window length must be > 0 seconds, got {self.length_s}")
        if self.align not in ("source", "epoch"):
            raise ValueError(f"align must be 'source' or 'epoch', got {self.align!r}")


def ip_rank(ip: pl.Expr) -> pl.Expr:
    """How well an address names a device to a person, best first: 0 a unicast IPv4, 1 a
    global or unique-local IPv6, 2 an IPv6 link-local or a loopback address; null for none
    (missing, or the unspecified ``0.0.0.0`` and ``::`` of a DHCP or duplicate-address probe,
    which every device sends). Windows (``ip``) and scored rows (``ip``) carry the best
    one, so an operator sees the IPv4 address they know a device by."""
    v6 = ip.str.contains(":")
    return (
        pl.when(ip.is_null() | ip.is_in(["0.0.0.0", "::"])).then(None)
        .when(v6 & ip.str.contains(r"^(?i:fe[89ab][0-9a-f]:|::1$)")).then(2)
        .when(v6).then(1)
        .when(ip.str.starts_with("127.")).then(2)
        .otherwise(0)
        .cast(pl.Int8)
    )


def _safe_div(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    return pl.when(b > 0).then(a / b).otherwise(0.0)


def _log1p(e: pl.Expr) -> pl.Expr:
    return e.cast(pl.Float64).fill_null(0.0).clip(lower_bound=0.0).log1p()


def assign_windows(attributed: pl.DataFrame, spec: WindowSpec,
                   origins: pl.DataFrame | None = None) -> pl.DataFrame:
    """Add ``start``/``end`` to attributed flows.

    ``origins`` (``window_origins`` of the whole input) when ``attributed`` is part of it:
    windows aligned to the source start where the whole source starts, not the part.
    """
    length_ms = int(round(spec.length_s * 1000))
    t = pl.col("first_seen").dt.epoch("ms")
    if spec.align == "source" and origins is not None:
        attributed = attributed.join(origins, on="source", how="left", maintain_order="left")
        origin = pl.col("_origin")
    else:
        origin = t.min().over("source") if spec.align == "source" else pl.lit(0, pl.Int64)
    start = origin + ((t - origin) // length_ms) * length_ms
    out = attributed.with_columns(
        start.cast(pl.Datetime("ms", "UTC")).alias("start"),
        (start + length_ms).cast(pl.Datetime("ms", "UTC")).alias("end"),
    )
    return out.drop("_origin") if "_origin" in out.columns else out


def window_origins(attributed: pl.DataFrame) -> pl.DataFrame:
    """Where each source's windows start (``align="source"``): its first attributed flow, as
    ``source`` and ``_origin`` (epoch milliseconds). Parts' origins combine by their least."""
    return attributed.group_by("source").agg(
        pl.col("first_seen").dt.epoch("ms").min().alias("_origin"))


def windows(flows: pl.DataFrame, spec: WindowSpec | None = None) -> pl.DataFrame:
    """Per-device, per-window feature table: ``KEY_COLUMNS + META_COLUMNS + FEATURE_COLUMNS``."""
    spec = spec or WindowSpec()
    att = assign_windows(attribute(flows), spec)
    return window_features(att)


def window_features(att: pl.DataFrame, industrial: bool = True) -> pl.DataFrame:
    """Features from attributed flows that already carry window columns.

    ``industrial=False`` leaves the industrial features (``features.ot``) at 0, for a caller
    that adds them over a larger set of flows (``add_industrial``): a flow's industrial
    requests count in the windows they happened in, which may be later than the window its
    flow started in.
    """
    keys = KEY_COLUMNS
    if att.height == 0:
        return empty_windows()
    master = pl.col("application").fill_null("Unknown").str.split(".").list.first()
    cat = pl.col("application_category").fill_null("Unspecified")
    att = att.with_columns(
        master.alias("_master"),
        cat.alias("_cat"),
        pl.col("dst_port").fill_null(0).alias("_svc_port"),
        (pl.col("last_seen") - pl.col("first_seen")).dt.total_milliseconds().alias("_dur_ms"),
        ip_rank(pl.col("ip")).alias("_ip_rank"),
    )
    win = att.group_by(keys).agg(_aggregations())
    win = win.with_columns(_derived())
    win = win.join(_periodicity(att, keys), on=keys, how="left")
    win = win.join(_name_tokens(att, keys), on=keys, how="left")
    win = win.join(_fingerprints(att, keys), on=keys, how="left")
    if industrial:  # finished once, there
        return add_industrial(win, att)
    return _finish(win.with_columns(pl.lit(0.0).alias(c) for c in OT_FEATURES))


def add_industrial(win: pl.DataFrame, att: pl.DataFrame) -> pl.DataFrame:
    """``win`` (a window table, or its aggregates before ``_finish``) with its industrial
    features computed from ``att``
    (attributed flows with window columns: those of ``win``, or more). Each second of
    industrial requests counts in the window it happened in, not in its flow's first window;
    a window in which a device started no flow but polled or was polled over a longer
    connection gets a row of its own (no flows, no packets: those count where the flow
    started)."""
    keys = KEY_COLUMNS
    ot = ot_window_features(att, keys)
    base = win.drop(OT_FEATURES, strict=False)
    if ot.height:
        extra = ot.filter("covered").join(base.select(keys), on=keys, how="anti")
        if extra.height:
            blank = extra.select(
                *keys, "mac", "ip",
                pl.lit(0, pl.Int64).alias("packets"), pl.lit(0, pl.Int64).alias("bytes"),
                pl.lit(0, pl.UInt32).alias("flows"))
            base = pl.concat([base, blank], how="diagonal_relaxed")
        base = base.join(ot.drop("mac", "ip", "covered"), on=keys, how="left")
    else:
        base = base.with_columns(pl.lit(0.0).alias(c) for c in OT_FEATURES)
    return _finish(base)


def _finish(win: pl.DataFrame) -> pl.DataFrame:
    """The window table's columns in order, sorted, features as floats with nulls and NaNs
    at 0. In numpy: per-column expressions over 200-odd columns cost a request of 100 flows
    more than all the aggregations before (7-20 ms against 3-8 ms)."""
    win = win.sort(KEY_COLUMNS)
    # column-major, so that each column goes back to polars without a copy of its own
    feats = win[FEATURE_COLUMNS]  # indexing: select() parses each name (~1 ms)
    if any(dtype != pl.Float64 for dtype in feats.schema.values()):
        feats = feats.cast(pl.Float64)
    X = np.nan_to_num(feats.to_numpy(order="fortran"), nan=0.0, posinf=np.inf, neginf=-np.inf)
    return win.select(*KEY_COLUMNS, *META_COLUMNS).hstack(
        [pl.Series(c, X[:, i]) for i, c in enumerate(FEATURE_COLUMNS)])


@functools.lru_cache(maxsize=1)
def _aggregations() -> list[pl.Expr]:
    """The per-window aggregations (built once: expressions are immutable)."""
    known_apps = list(APPLICATIONS)
    tcp = pl.col("protocol") == 6
    return [
        pl.col("mac").first(),
        # the address to show for the device: its IPv4 where it has one (see ``ip_rank``);
        # the least of equals, so that row order does not matter
        pl.coalesce(*(pl.col("ip").filter(pl.col("_ip_rank") == r).min()
                      for r in range(3))).alias("ip"),
        pl.col("packets").sum().alias("packets"),
        pl.col("bytes").sum().alias("bytes"),
        pl.len().alias("flows"),
        pl.col("bytes_out").sum().alias("_bytes_out"),
        pl.col("bytes_in").sum().alias("_bytes_in"),
        (pl.col("direction") == "out").mean().alias("out_flow_share"),
        ((pl.col("last_seen").max() - pl.col("first_seen").min()).dt.total_milliseconds())
        .alias("_span_ms"),
        pl.col("mean_ps").mean().alias("_mean_ps_of_flows"),
        pl.col("stddev_ps").mean().fill_null(0.0).alias("mean_packet_size_std"),
        pl.col("max_ps").max().fill_null(0.0).alias("max_packet_size"),
        pl.col("min_ps").min().fill_null(0.0).alias("min_packet_size"),
        (pl.col("_dur_ms").mean() / 1000).alias("_mean_dur_s"),
        (pl.col("_dur_ms").max() / 1000).alias("_max_dur_s"),
        pl.col("mean_piat_ms").mean().alias("_mean_piat"),
        pl.col("stddev_piat_ms").mean().alias("_std_piat"),
        (pl.col("first_seen").sort().diff().dt.total_milliseconds() / 1000).mean()
        .alias("_iat_mean"),
        (pl.col("first_seen").sort().diff().dt.total_milliseconds() / 1000).std()
        .alias("_iat_std"),
        (pl.col("protocol") == 6).mean().alias("tcp_share"),
        (pl.col("protocol") == 17).mean().alias("udp_share"),
        pl.col("protocol").is_in([1, 58]).mean().alias("icmp_share"),
        (~pl.col("protocol").is_in([1, 6, 17, 58])).mean().alias("other_l4_share"),
        (~pl.col("_master").is_in(known_apps)).mean().alias("app_other_share"),
        *[(pl.col("_master") == a).mean().alias(f"app_{a.lower()}_share") for a in APPLICATIONS],
        *[(pl.col("_cat") == c).mean().alias(f"cat_{c.lower()}_share") for c in CATEGORIES],
        *[(pl.col("_svc_port") == p).mean().alias(f"port_{p}_share") for p in SERVICE_PORTS],
        (~pl.col("_svc_port").is_in(SERVICE_PORTS) & (pl.col("_svc_port") < 1024)).mean()
        .alias("port_other_low_share"),
        (~pl.col("_svc_port").is_in(SERVICE_PORTS) & (pl.col("_svc_port") >= 1024)).mean()
        .alias("port_other_high_share"),
        pl.col("_svc_port").n_unique().alias("_n_ports"),
        pl.col("server_name").drop_nulls().n_unique().alias("_n_names"),
        pl.col("peer_ip").n_unique().alias("_n_peers"),
        pl.col("peer_ip").filter(pl.col("peer_local")).n_unique().alias("_n_local"),
        pl.col("peer_ip").filter(~pl.col("peer_local")).n_unique().alias("_n_remote"),
        pl.col("peer_local").mean().alias("local_flow_share"),
        pl.col("packets").filter(tcp).sum().alias("_tcp_pk"),
        pl.col("syn_packets").filter(tcp).sum().alias("_syn"),
        pl.col("rst_packets").filter(tcp).sum().alias("_rst"),
        pl.col("fin_packets").filter(tcp).sum().alias("_fin"),
        pl.col("psh_packets").filter(tcp).sum().alias("_psh"),
        _safe_div(
            ((pl.col("direction") == "out") & (pl.col("packets_in") == 0)).sum(),
            (pl.col("direction") == "out").sum(),
        ).alias("unanswered_out_share"),
    ]


@functools.lru_cache(maxsize=1)
def _derived() -> list[pl.Expr]:
    """Features derived from the aggregates (built once)."""
    active_s = (pl.col("_span_ms").cast(pl.Float64) / 1000).clip(lower_bound=1.0)
    return [
        _log1p(pl.col("flows")).alias("log_flows"),
        _log1p(pl.col("packets")).alias("log_packets"),
        _log1p(pl.col("bytes")).alias("log_bytes"),
        _log1p(pl.col("_bytes_out")).alias("log_bytes_out"),
        _log1p(pl.col("_bytes_in")).alias("log_bytes_in"),
        _safe_div(pl.col("_bytes_out"), pl.col("_bytes_out") + pl.col("_bytes_in"))
        .alias("out_byte_share"),
        _log1p(pl.col("bytes") / active_s).alias("log_bytes_per_s"),
        _log1p(pl.col("flows") / active_s * 60).alias("log_flows_per_min"),
        _safe_div(pl.col("bytes").cast(pl.Float64), pl.col("packets")).alias("mean_packet_size"),
        _log1p(pl.col("packets") / pl.col("flows")).alias("log_packets_per_flow"),
        _log1p(pl.col("_mean_dur_s")).alias("log_mean_flow_duration"),
        _log1p(pl.col("_max_dur_s")).alias("log_max_flow_duration"),
        _log1p(pl.col("_mean_piat")).alias("log_mean_piat"),
        _log1p(pl.col("_std_piat")).alias("log_std_piat"),
        _log1p(pl.col("_iat_mean")).alias("log_flow_iat_mean"),
        _safe_div(pl.col("_iat_std").fill_null(0.0), pl.col("_iat_mean").fill_null(0.0))
        .alias("flow_iat_cv"),
        _log1p(pl.col("_n_ports")).alias("log_distinct_ports"),
        _log1p(pl.col("_n_names")).alias("log_distinct_names"),
        _log1p(pl.col("_n_peers")).alias("log_peers"),
        _log1p(pl.col("_n_local")).alias("log_local_peers"),
        _log1p(pl.col("_n_remote")).alias("log_remote_peers"),
        _safe_div(pl.col("_syn").cast(pl.Float64), pl.col("_tcp_pk")).alias("syn_ratio"),
        _safe_div(pl.col("_rst").cast(pl.Float64), pl.col("_tcp_pk")).alias("rst_ratio"),
        _safe_div(pl.col("_fin").cast(pl.Float64), pl.col("_tcp_pk")).alias("fin_ratio"),
        _safe_div(pl.col("_psh").cast(pl.Float64), pl.col("_tcp_pk")).alias("psh_ratio"),
    ]


def _periodicity(att: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Share of a window's flows in periodic series: flows to the same peer, port and protocol
    whose start-to-start gaps vary by less than 30 % (coefficient of variation)."""
    if att.height <= SMALL_TOKENS:
        return _periodicity_rows(att, keys)
    series_keys = [*keys, "peer_ip", "_svc_port", "protocol"]
    # One sort instead of a sort per group: a gap counts when the previous row is the same
    # series.
    s = att.select(*series_keys, "first_seen").sort(*series_keys, "first_seen")
    s = s.with_columns(pl.struct(series_keys).rle_id().alias("_sid"))
    gap = pl.when(pl.col("_sid") == pl.col("_sid").shift(1)).then(
        pl.col("first_seen").diff().dt.total_milliseconds())
    series = s.with_columns(gap.alias("_gap")).group_by(*keys, "_sid").agg(
        pl.len().alias("n"),
        pl.col("_gap").mean().alias("m"),
        pl.col("_gap").std().alias("s"),
    )
    periodic = (pl.col("n") >= 3) & (pl.col("m") > 0) & ((pl.col("s") / pl.col("m")) < 0.3)
    return series.group_by(keys).agg(
        (pl.col("n").filter(periodic).sum() / pl.col("n").sum()).alias("periodic_flow_share")
    )


def _periodicity_rows(att: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """``_periodicity`` of a few flows in plain Python (the same table; tests compare)."""
    series: dict[tuple[object, ...], list[int | None]] = {}
    cols = att.select(*keys, "peer_ip", "_svc_port", "protocol",
                      pl.col("first_seen").dt.epoch("ms"))
    k = len(keys)
    for *key, t in cols.iter_rows():
        series.setdefault(tuple(key), []).append(t)
    flows: dict[tuple[object, ...], list[int]] = {}  # window -> [flows, in periodic series]
    for one, times in series.items():
        n = len(times)
        tot = flows.setdefault(one[:k], [0, 0])
        tot[0] += n
        ts = sorted(t for t in times if t is not None)
        gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
        if n >= 3 and len(gaps) >= 2:
            m = sum(gaps) / len(gaps)
            if m > 0 and statistics.stdev(gaps) / m < 0.3:
                tot[1] += n
    schema = att.schema
    return pl.DataFrame([(*w, p / f) for w, (f, p) in flows.items()],
                        schema={**{c: schema[c] for c in keys},
                                "periodic_flow_share": pl.Float64}, orient="row")


def _hashed_shares(tokens: pl.DataFrame, att: pl.DataFrame, keys: list[str], prefix: str,
                   n: int) -> pl.DataFrame:
    """Share of each window's tokens per CRC32 bucket (stable across runs and versions)."""
    if tokens.height <= SMALL_TOKENS:
        return _hashed_shares_rows(
            ((tuple(key), tok) for *key, tok in tokens[[*keys, "tok"]].iter_rows()), att, keys,
            prefix, n)
    cols = [f"{prefix}{b:02d}" for b in range(n)]
    tokens = tokens.filter(pl.col("tok").is_not_null() & (pl.col("tok").str.len_chars() > 0))
    if tokens.height == 0:
        return att.select(keys).unique().with_columns(pl.lit(0.0).alias(c) for c in cols)
    # Hash each distinct token once, not per flow.
    vocab = tokens.select(pl.col("tok").unique())
    vocab = vocab.with_columns(pl.Series(
        "bucket", [token_bucket(t, n) for t in vocab["tok"].to_list()], dtype=pl.Int32))
    # bucket counts in numpy: one aggregation of lists, not one expression per bucket
    g = tokens.join(vocab, on="tok").group_by(keys).agg(pl.col("bucket"))
    lens = g["bucket"].list.len().to_numpy()
    shares = np.zeros((g.height, n))
    np.add.at(shares, (np.repeat(np.arange(g.height), lens), g["bucket"].explode().to_numpy()),
              1.0)
    shares /= np.maximum(lens, 1)[:, None]
    return g.select(keys).hstack(pl.DataFrame(shares, schema=cols, orient="row"))


#: Flows or token rows up to which the hashed shares and the periodicity are counted in
#: plain Python (a REST request's: polars' queries cost ~1-2 ms each family whatever their
#: size).
SMALL_TOKENS = 5000


def _hashed_shares_rows(pairs: Iterable[tuple[tuple[object, ...], str | None]],
                        att: pl.DataFrame, keys: list[str], prefix: str, n: int
                        ) -> pl.DataFrame:
    """``_hashed_shares`` of a few (window key, token) pairs, counted in plain Python (the
    same table)."""
    cols = [f"{prefix}{b:02d}" for b in range(n)]
    at: dict[tuple[object, ...], int] = {}
    rows: list[int] = []
    buckets: list[int] = []
    for key, tok in pairs:
        if tok:
            rows.append(at.setdefault(key, len(at)))
            buckets.append(_bucket(tok, n))
    if not at:
        return att.select(keys).unique().with_columns(pl.lit(0.0).alias(c) for c in cols)
    shares = np.zeros((len(at), n))
    np.add.at(shares, (np.array(rows), np.array(buckets)), 1.0)
    shares /= shares.sum(axis=1, keepdims=True)
    schema = att.schema
    return pl.DataFrame(list(at), schema={k: schema[k] for k in keys}, orient="row").hstack(
        pl.DataFrame(shares, schema=cols, orient="row"))


@functools.lru_cache(maxsize=65536)
def _bucket(tok: str, n: int) -> int:
    return token_bucket(tok, n)


def name_token_rows(att: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """``keys`` + ``tok``: the words of each flow's DNS/SNI/host name that the
    ``name_token_NN`` features count (one row per flow and word)."""
    names = att.filter(pl.col("server_name").is_not_null()).select(*keys, "server_name")
    # Split each distinct name once (a site asks for few names, in many flows).
    words = names.select(pl.col("server_name").unique()).with_columns(
        pl.col("server_name").str.to_lowercase()
        .str.replace_all(r"([0-9a-f]{2}[:-]){5}[0-9a-f]{2}", " ")  # MAC addresses
        .str.replace_all(r"[^a-z0-9]+", " ").str.strip_chars().str.split(" ").alias("tok")
    ).explode("tok").filter(~pl.col("tok").str.contains(ADDRESS_LIKE)
                            & (pl.col("tok").str.count_matches(r"[0-9]") < 5)
                            & ~pl.col("tok").is_in(GENERIC_NAME_LABELS))
    return names.join(words, on="server_name").select(*keys, "tok")


_MAC_IN_NAME = re.compile(r"([0-9a-f]{2}[:-]){5}[0-9a-f]{2}")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_ADDRESS_WORD = re.compile(ADDRESS_LIKE)
_GENERIC_WORDS = frozenset(GENERIC_NAME_LABELS)


@functools.lru_cache(maxsize=65536)
def name_words(name: str) -> tuple[str, ...]:
    """The words of one name as ``name_token_rows`` splits it, in plain Python (a REST
    request's few names; tests compare the two)."""
    text = _NOT_ALNUM.sub(" ", _MAC_IN_NAME.sub(" ", name.lower())).strip(" ")
    return tuple(w for w in text.split(" ") if not _ADDRESS_WORD.search(w)
                 and sum(c.isdigit() for c in w) < 5 and w not in _GENERIC_WORDS)


def fingerprint_rows(att: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """``keys`` + ``tok``: the client fingerprints and user agents that the
    ``fingerprint_NN`` features count (nulls included; ``_hashed_shares`` drops them)."""
    return pl.concat([
        att.select(*keys, pl.col("client_fingerprint").alias("tok")),
        att.select(*keys, pl.col("user_agent").alias("tok")),
    ])


def token_bucket(tok: str, n: int) -> int:
    """The hash bucket of a word or fingerprint: CRC32, stable across runs and versions."""
    return zlib.crc32(tok.encode()) % n


def _name_tokens(att: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    if att.height <= SMALL_TOKENS:  # a few flows: words and shares in plain Python
        return _hashed_shares_rows(
            ((tuple(key), w) for *key, name in att[[*keys, "server_name"]].iter_rows()
             if name is not None for w in name_words(name)), att, keys, "name_token_",
            N_NAME_BUCKETS)
    return _hashed_shares(name_token_rows(att, keys), att, keys, "name_token_", N_NAME_BUCKETS)


def _fingerprints(att: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    if att.height <= SMALL_TOKENS:
        return _hashed_shares_rows(
            ((tuple(key), tok) for *key, fp, ua in
             att[[*keys, "client_fingerprint", "user_agent"]].iter_rows() for tok in (fp, ua)),
            att, keys, "fingerprint_", N_FINGERPRINT_BUCKETS)
    return _hashed_shares(fingerprint_rows(att, keys), att, keys, "fingerprint_",
                          N_FINGERPRINT_BUCKETS)


def empty_windows() -> pl.DataFrame:
    """An empty window table with every column (built once: 215 columns cost ~7 ms)."""
    return _empty_windows()


@functools.lru_cache(maxsize=1)
def _empty_windows() -> pl.DataFrame:
    schema: dict[str, pl.DataType] = {
        "source": pl.String(),
        "device_id": pl.String(),
        "start": pl.Datetime("ms", "UTC"),
        "end": pl.Datetime("ms", "UTC"),
        "mac": pl.String(),
        "ip": pl.String(),
        "packets": pl.Int64(),
        "bytes": pl.Int64(),
        "flows": pl.UInt32(),
    }
    schema.update({c: pl.Float64() for c in FEATURE_COLUMNS})
    return pl.DataFrame(schema=schema)


def feature_table_markdown() -> str:
    """The feature columns as a Markdown table, a row each (docs/features.md has families)."""
    rows = ["| feature | meaning |", "|---|---|"]
    rows += [f"| `{k}` | {v} |" for k, v in FEATURE_DESCRIPTIONS.items()]
    return "\n".join(rows)


def feature_families_markdown() -> str:
    """The feature columns as a Markdown table by family (for docs/features.md).

    One row per column would be 206 rows of which 96 differ only by a bucket number: a
    pattern row stands for the columns that differ only in what they name (an application, a
    port, a hash bucket), the other columns keep a row each under their family, and every
    column is in exactly one row.
    """
    scalar_families = {
        "volume": ["log_flows", "log_packets", "log_bytes", "log_bytes_out", "log_bytes_in",
                   "out_byte_share", "out_flow_share", "log_bytes_per_s", "log_flows_per_min"],
        "packets and flows": ["mean_packet_size", "mean_packet_size_std", "max_packet_size",
                              "min_packet_size", "log_packets_per_flow",
                              "log_mean_flow_duration", "log_max_flow_duration"],
        "timing": ["log_mean_piat", "log_std_piat", "log_flow_iat_mean", "flow_iat_cv",
                   "periodic_flow_share"],
        "transport": ["tcp_share", "udp_share", "icmp_share", "other_l4_share"],
        "TCP flags": ["syn_ratio", "rst_ratio", "fin_ratio", "psh_ratio",
                      "unanswered_out_share"],
        "peers and names": ["log_distinct_ports", "log_distinct_names", "log_peers",
                            "log_local_peers", "log_remote_peers", "local_flow_share"],
        "applications": ["app_other_share"],
        "ports": ["port_other_low_share", "port_other_high_share"],
        "industrial": [c for c in OT_FEATURES if not c.startswith(("modbus_fc_", *PROTOCOLS))],
    }
    name_meaning = FEATURE_DESCRIPTIONS["name_token_00"].replace(
        "into bucket 0", f"into one of {N_NAME_BUCKETS} buckets")
    fp_meaning = FEATURE_DESCRIPTIONS["fingerprint_00"].replace(
        "into bucket 0", f"into one of {N_FINGERPRINT_BUCKETS} buckets")
    patterns: dict[str, tuple[str, list[str], str]] = {
        "applications": (
            "app_{application}_share", [f"app_{a.lower()}_share" for a in APPLICATIONS],
            "share of flows nDPI names the application (master protocol), its name in lower "
            "case: " + ", ".join(APPLICATIONS)),
        "nDPI categories": (
            "cat_{category}_share", [f"cat_{c.lower()}_share" for c in CATEGORIES],
            "share of flows in the nDPI category, its name in lower case: "
            + ", ".join(CATEGORIES)),
        "ports": (
            "port_{port}_share", [f"port_{p}_share" for p in SERVICE_PORTS],
            "share of flows whose responder port is the port: "
            + ", ".join(str(p) for p in SERVICE_PORTS)),
        "host-name words": (
            f"name_token_00 .. name_token_{N_NAME_BUCKETS - 1:02d}",
            [f"name_token_{b:02d}" for b in range(N_NAME_BUCKETS)], name_meaning),
        "industrial function codes": (
            "modbus_fc_{code}_share", [c for c in OT_FEATURES if c.startswith("modbus_fc_")],
            "share of Modbus requests with the function code: "
            + ", ".join(str(c) for c in MODBUS_FC_FEATURES) + ", other"),
        "industrial writes": (
            "{protocol}_write_share", [f"{p}_write_share" for p in PROTOCOLS],
            "share of the protocol's requests that write or operate, protocol one of: "
            + ", ".join(PROTOCOLS)),
        "fingerprints": (
            f"fingerprint_00 .. fingerprint_{N_FINGERPRINT_BUCKETS - 1:02d}",
            [f"fingerprint_{b:02d}" for b in range(N_FINGERPRINT_BUCKETS)], fp_meaning),
    }
    rows = ["| family | columns | count | meaning |", "|---|---|---|---|"]
    placed: list[str] = []
    order = ["volume", "packets and flows", "timing", "transport", "TCP flags",
             "peers and names", "applications", "nDPI categories", "ports", "host-name words",
             "fingerprints", "industrial", "industrial function codes", "industrial writes"]
    for family in order:
        for col in scalar_families.get(family, []):
            rows.append(f"| {family} | `{col}` | 1 | {FEATURE_DESCRIPTIONS[col]} |")
            placed.append(col)
        if family in patterns:
            pattern, cols, meaning = patterns[family]
            rows.append(f"| {family} | `{pattern}` | {len(cols)} | {meaning} |")
            placed += cols
    if sorted(placed) != sorted(FEATURE_COLUMNS):  # a new feature needs a family
        raise ValueError("feature families do not cover every feature column exactly once")
    return "\n".join(rows)


#: The longest duration accepted anywhere (a year and a day): longer ones overflow datetime
#: arithmetic, and no window, learning period or capture is that long.
MAX_DURATION_S = 366 * 86400.0


def parse_duration(text: str | float | None) -> float | None:
    """'90s', '15m', '2h', '7d' or plain seconds -> seconds, > 0 and <= ``MAX_DURATION_S``."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*", str(text).lower())
        if not m:
            raise ValueError(f"bad duration {text!r}: use e.g. 90s, 15m, 2h, 7d")
        mult = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        value = float(m.group(1)) * mult
    if not value > 0:  # also NaN
        raise ValueError(f"duration must be > 0, got {text!r}")
    if not value <= MAX_DURATION_S:  # also inf: '9' * 400 seconds
        raise ValueError(f"duration {text!r} is longer than the limit of 366 days")
    return value
