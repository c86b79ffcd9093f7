"""Flow direction the way Zeek decides it: who opened the conversation.

NFStream takes the sender of a flow's first packet as its initiator and keys flows by VLAN.
Two things then go wrong on real captures:

- **Split pairs.** Where one side's frames carry a VLAN tag and the other's do not (a capture
  on a trunk or mirror port: the week-long shared captures tag every gateway frame with VLAN
  100 and none of the device's), each conversation becomes two one-way flows, the query
  ``192.168.1.128:1398 -> 192.168.1.1:53`` and the reply ``192.168.1.1:53 ->
  192.168.1.128:1398``. The lone reply reads as the gateway opening a conversation to "service
  port" 1398. Zeek keys connections without the VLAN and sees one connection.
- **Lone replies.** When a capture starts mid-conversation, or holds only one direction, the
  first packet seen is a reply.

``orient`` mends both, vectorised over the whole table:

1. It merges a split pair into one flow: two one-way flows of the same capture and protocol,
   with reversed endpoints (addresses and ports), where the second starts no later than
   ``reply_within_s`` after the first one's last packet. The earlier one is the initiator; the
   two halves' packets and bytes become the two directions. Packet-size statistics are exact;
   inter-arrival statistics are exact for one packet each way (a DNS or DHCP exchange) and
   estimates otherwise (the mean is exact: duration over gaps). Each flow merges at most once
   (mutual nearest matches; a flow that would chain two pairs is left as it is).
2. It flips a flow whose first packet came from the responder, by Zeek's rules
   (``likely_server_ports``): UDP when the initiator's port is a service port and the
   responder's is not; TCP when no SYN of the initiator was seen and the initiator's port is a
   service port, and the responder's is not or is a higher one (Zeek's tie-break). A flow to a
   multicast or broadcast address never flips.

Zeek ``conn.log`` files are oriented by Zeek already and do not pass through here.
"""

from __future__ import annotations

import polars as pl

#: Ports above 1023 that are services (Zeek's ``likely_server_ports`` idea, for IoT/OT).
#: Every port below 1024 is a service port too, except the DHCP and DHCPv6 client ports.
SERVICE_PORTS_ABOVE_1023 = frozenset({
    1080, 1194, 1433, 1521, 1701, 1723, 1812, 1813, 1883, 1900, 2000, 2049, 2404, 3000, 3306,
    3389, 3478, 3671, 4840, 4843, 5000, 5060, 5061, 5222, 5349, 5353, 5355, 5432, 5671, 5672,
    5683, 5684, 5900, 6379, 6443, 6653, 7547, 8008, 8009, 8080, 8081, 8443, 8883, 8888, 9100,
    9600, 9999, 11211, 18245, 18246, 20000, 34962, 34963, 34964, 44818, 47808, 48898,
})
#: Client ports below 1024: the DHCP client (68) and DHCPv6 client (546).
CLIENT_PORTS = frozenset({68, 546})
#: How long after a one-way flow's last packet the other half of a split pair may start.
REPLY_WITHIN_S = 5.0

_MULTICAST = r"^(22[4-9]|23\d)\.|^255\.255\.255\.255$|\.255$|^(?i:ff)"
_PAIRS = [("src_mac", "dst_mac"), ("src_ip", "dst_ip"), ("src_port", "dst_port"),
          ("src2dst_packets", "dst2src_packets"), ("src2dst_bytes", "dst2src_bytes")]


def service_port(port: pl.Expr) -> pl.Expr:
    """A port a server listens on: below 1024 (but not a DHCP client's) or a known service."""
    return (((port > 0) & (port < 1024) & ~port.is_in(list(CLIENT_PORTS)))
            | port.is_in(list(SERVICE_PORTS_ABOVE_1023))).fill_null(False)


def initiator_syn() -> pl.Expr:
    """A TCP flow whose initiator sent a bare SYN. A bare SYN is the one TCP packet without
    ACK: a flow that starts with one has fewer ACK packets than packets; one first seen at the
    SYN-ACK or mid-stream has an ACK on every packet."""
    return ((pl.col("syn_packets") > 0) & (pl.col("ack_packets") < pl.col("packets"))
            ).fill_null(False)


def orient(flows: pl.DataFrame, *, reply_within_s: float = REPLY_WITHIN_S) -> pl.DataFrame:
    """Merge split request/response pairs and flip flows first seen from the responder (see
    the module docstring). Takes and returns a ``FLOW_SCHEMA`` table of one capture or
    several; row order follows the initiators'."""
    if flows.height == 0:
        return flows
    return _flip(_merge_pairs(flows, reply_within_s)).select(flows.columns)


def _flip(flows: pl.DataFrame) -> pl.DataFrame:
    src, dst = pl.col("src_port"), pl.col("dst_port")
    tcp = (pl.col("protocol") == 6) & ~initiator_syn() & service_port(src) & (
        ~service_port(dst) | (src < dst))
    udp = (pl.col("protocol") == 17) & service_port(src) & ~service_port(dst)
    flip = ((tcp | udp) & ~pl.col("dst_ip").str.contains(_MULTICAST).fill_null(False)
            ).alias("_flip")
    f = flows.with_columns(flip)
    swapped = []
    for a, b in _PAIRS:
        swapped += [pl.when("_flip").then(pl.col(b)).otherwise(pl.col(a)).alias(a),
                    pl.when("_flip").then(pl.col(a)).otherwise(pl.col(b)).alias(b)]
    if "announcements" in f.columns:
        swapped.append(pl.when("_flip").then(other_side(pl.col("announcements")))
                       .otherwise(pl.col("announcements")).alias("announcements"))
    return f.with_columns(swapped).drop("_flip")


def other_side(announcements: pl.Expr) -> pl.Expr:
    """The ``announcements`` of a flow seen from its other end: ``>`` (sent by ``src``) and
    ``<`` (sent by ``dst``) swapped, entries sorted again."""
    swapped = announcements.str.split("\n").list.eval(
        pl.when(pl.element().str.starts_with(">"))
        .then(pl.lit("<") + pl.element().str.slice(1))
        .otherwise(pl.lit(">") + pl.element().str.slice(1)))
    return swapped.list.sort().list.join("\n")


def _merged_announcements(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """Both halves' entries, ``b`` (the reply half) seen from ``a``'s side: sorted, distinct,
    null when neither half has any."""
    both = pl.concat_list(a.str.split("\n"), other_side(b).str.split("\n"))
    merged = both.list.drop_nulls().list.unique().list.sort().list.join("\n")
    return pl.when(a.is_null()).then(other_side(b)).when(b.is_null()).then(a).otherwise(merged)


def _merge_pairs(flows: pl.DataFrame, reply_within_s: float) -> pl.DataFrame:
    f = flows.with_row_index("_i")
    one_way = f.filter((pl.col("dst2src_packets") == 0) & pl.col("src_ip").is_not_null()
                       & pl.col("dst_ip").is_not_null())
    if one_way.height < 2:
        return flows
    fwd = ["source", "protocol", "src_ip", "src_port", "dst_ip", "dst_port"]
    rev = ["source", "protocol", "dst_ip", "dst_port", "src_ip", "src_port"]
    key = ["_k0", "_k1", "_k2", "_k3", "_k4", "_k5"]
    t = pl.col("first_seen").dt.epoch("ms")
    # As the first half: the flow's endpoints in order; as the second: reversed.
    first = one_way.select("_i", t.alias("_t"), pl.col("last_seen").dt.epoch("ms").alias("_l"),
                           *[pl.col(c).alias(k) for c, k in zip(fwd, key, strict=True)]
                           ).sort("_t")
    second = one_way.select(pl.col("_i").alias("_j"), t.alias("_t"),
                            *[pl.col(c).alias(k) for c, k in zip(rev, key, strict=True)]
                            ).sort("_t")
    # Each first half's next reversed flow, and each second half's latest reversed flow
    # before it: a pair is kept when the two choose each other.
    ahead = first.join_asof(second.rename({"_t": "_tj"}), left_on="_t", right_on="_tj",
                            by=key, strategy="forward", check_sortedness=False)
    ahead = ahead.filter(pl.col("_j").is_not_null() & (pl.col("_j") != pl.col("_i"))
                         & (pl.col("_tj") <= pl.col("_l") + int(reply_within_s * 1000)))
    behind = second.join_asof(first.select("_i", "_t", *key).rename({"_t": "_ti"}),
                              left_on="_t", right_on="_ti", by=key, strategy="backward",
                              check_sortedness=False)
    pairs = ahead.join(behind.select("_j", pl.col("_i").alias("_back")), on="_j")
    pairs = pairs.filter((pl.col("_back") == pl.col("_i"))
                         # Two halves first seen in the same millisecond choose each other
                         # both ways round: keep the one NFStream emitted first as initiator.
                         & ((pl.col("_tj") > pl.col("_t")) | (pl.col("_i") < pl.col("_j"))))
    # A long conversation cut by the active timeout gives a chain: the request's first part,
    # the reply's first part, the request's second part, ... each choosing the next. Chains
    # are runs of one endpoint pair in time: keep every other pair from the chain's start.
    starts = ~pl.col("_i").is_in(pairs["_j"].implode())
    a_end = pl.concat_str("_k2", "_k3", separator="|", ignore_nulls=True)
    b_end = pl.concat_str("_k4", "_k5", separator="|", ignore_nulls=True)
    pairs = pairs.with_columns(pl.min_horizontal(a_end, b_end).alias("_lo"),
                               pl.max_horizontal(a_end, b_end).alias("_hi")
                               ).sort("_k0", "_k1", "_lo", "_hi", "_t", "_i")
    chain = starts.cast(pl.Int64).cum_sum()
    pairs = pairs.with_columns(chain.alias("_chain")).filter(
        (pl.int_range(pl.len()).over("_chain") % 2) == 0).select("_i", "_j")
    if pairs.height == 0:
        return flows
    a = f.join(pairs, on="_i")
    b = f.join(pairs, left_on="_i", right_on="_j", suffix="_b").select(
        "_i_b", pl.all().exclude("_i", "_i_b").name.suffix("_y")).rename({"_i_b": "_i"})
    merged = a.join(b, on="_i").with_columns(
        _merged_columns("announcements" in f.columns)).select(f.columns)
    used = pl.concat([pairs["_i"], pairs["_j"]])
    rest = f.filter(~pl.col("_i").is_in(used.implode()))
    return pl.concat([rest, merged]).sort("_i").drop("_i")


def _merged_columns(announcements: bool = True) -> list[pl.Expr]:
    """The columns of a merged pair from its first half (plain names) and second (``_y``)."""
    def y(c: str) -> pl.Expr:
        return pl.col(f"{c}_y")

    def both(c: str) -> list[pl.Expr]:
        return [pl.col(c), y(c)]

    n_a, n_b = pl.col("packets"), y("packets")
    n = n_a + n_b
    last = pl.max_horizontal("last_seen", y("last_seen"))
    mean_ps = (pl.col("mean_ps") * n_a + y("mean_ps") * n_b) / n
    # Sample variance from the halves' sums of squares (NFStream's stddev is the sample one).
    ss = ((pl.col("stddev_ps") ** 2) * (n_a - 1) + (pl.col("mean_ps") ** 2) * n_a
          + (y("stddev_ps") ** 2) * (n_b - 1) + (y("mean_ps") ** 2) * n_b)
    var_ps = ((ss - n * mean_ps ** 2) / (n - 1)).clip(lower_bound=0.0)
    gap0 = (y("first_seen") - pl.col("first_seen")).dt.total_milliseconds().cast(pl.Float64)
    # With one packet ahead (a query, a SYN) the gaps are that packet's gap to the second
    # half, then the second half's own gaps: exact. Otherwise the halves' figures, estimates.
    lone_a = n_a == 1
    k, mu, s2 = n_b - 1, y("mean_piat_ms"), y("stddev_piat_ms").fill_null(0.0) ** 2
    lone_mean = (k * mu + gap0) / n_b
    lone_var = (((k - 1).clip(lower_bound=0) * s2 + k * mu ** 2 + gap0 ** 2 - n_b * lone_mean ** 2)
                / (n_b - 1)).clip(lower_bound=0.0)
    piat_a = pl.when(n_a > 1)
    piat_b = pl.when(n_b > 1)
    gap_a = pl.when(lone_a).then(gap0)
    unknown_a = pl.col("application").is_null() | pl.col("application").str.starts_with(
        "Unknown")
    take_b_app = unknown_a & y("application").is_not_null()
    return [
        last.alias("last_seen"),
        (last - pl.col("first_seen")).dt.total_milliseconds().alias("duration_ms"),
        pl.coalesce("src_mac", y("dst_mac")).alias("src_mac"),
        pl.coalesce("dst_mac", y("src_mac")).alias("dst_mac"),
        pl.when(take_b_app).then(y("application")).otherwise("application").alias("application"),
        pl.when(take_b_app).then(y("application_category")).otherwise("application_category")
        .alias("application_category"),
        *[pl.coalesce(c, y(c)).alias(c) for c in (
            "server_name", "user_agent", "client_fingerprint", "server_fingerprint")],
        *([_merged_announcements(pl.col("announcements"), y("announcements"))
           .alias("announcements")] if announcements else []),
        n.alias("packets"),
        (pl.col("bytes") + y("bytes")).alias("bytes"),
        (pl.col("src2dst_packets") + y("dst2src_packets")).alias("src2dst_packets"),
        (pl.col("src2dst_bytes") + y("dst2src_bytes")).alias("src2dst_bytes"),
        (pl.col("dst2src_packets") + y("src2dst_packets")).alias("dst2src_packets"),
        (pl.col("dst2src_bytes") + y("src2dst_bytes")).alias("dst2src_bytes"),
        pl.min_horizontal(both("min_ps")).alias("min_ps"),
        pl.max_horizontal(both("max_ps")).alias("max_ps"),
        mean_ps.alias("mean_ps"),
        var_ps.sqrt().alias("stddev_ps"),
        pl.min_horizontal(piat_a.then("min_piat_ms"), piat_b.then(y("min_piat_ms")), gap_a)
        .alias("min_piat_ms"),
        ((last - pl.col("first_seen")).dt.total_milliseconds().cast(pl.Float64) / (n - 1))
        .alias("mean_piat_ms"),
        pl.when(n == 2).then(0.0).when(lone_a).then(lone_var.sqrt()).otherwise(
            pl.max_horizontal("stddev_piat_ms", y("stddev_piat_ms"))).alias("stddev_piat_ms"),
        pl.max_horizontal(piat_a.then("max_piat_ms"), piat_b.then(y("max_piat_ms")), gap_a)
        .alias("max_piat_ms"),
        *[(pl.col(c).fill_null(0) + y(c).fill_null(0)).alias(c) for c in (
            "syn_packets", "ack_packets", "psh_packets", "rst_packets", "fin_packets",
            "urg_packets")],
    ]


__all__ = ["orient", "initiator_syn", "service_port"]
