"""The device inventory: what each device is seen to be and do."""

from __future__ import annotations

import polars as pl

from flockwatch.features.attribution import (
    UNSPECIFIED_OR_LOOPBACK,
    attribute,
    self_named,
    tcp_probe,
)
from flockwatch.features.industrial import INDUSTRIAL_PROTOCOLS
from flockwatch.features.oui import vendor

INVENTORY_COLUMNS = [
    "device_id", "mac", "vendor", "ips", "hostnames", "server_names", "protocols",
    "applications", "industrial", "industrial_protocols", "first_seen", "last_seen", "flows",
    "packets", "bytes", "sources",
]


def inventory(flows: pl.DataFrame, attributed: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per device (``INVENTORY_COLUMNS``), from a flow table.

    ``hostnames`` are names a device announces for itself (DHCP host name, mDNS, NetBIOS);
    ``server_names`` are names it asks for (DNS queries, TLS SNI, HTTP hosts). A DHCP host
    name is the client's, whoever sent it (a server's ACK repeats it): the client is the side
    on the DHCP client port (68, DHCPv6 546). Unspecified and loopback addresses are never
    listed in ``ips``.
    """
    att = attribute(flows) if attributed is None else attributed
    if att.height == 0:
        return empty_inventory()
    parts = pl.col("application").fill_null("Unknown").str.split(".")
    own_name = self_named()
    l4 = pl.col("protocol").replace_strict(
        {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6", 2: "IGMP"}, default="IP",
        return_dtype=pl.String,
    )
    # A scan probe says nothing about what the device speaks.
    probe = tcp_probe()
    parts = pl.when(probe).then(pl.lit(None, dtype=pl.List(pl.String))).otherwise(parts)
    att = att.with_columns(parts.alias("_parts"), l4.alias("_l4"),
                           pl.when(probe).then(None).otherwise(pl.col("application"))
                           .alias("application"),
                           pl.when(probe).then(None).otherwise(pl.col("application_category"))
                           .alias("application_category"))
    ics_expr = pl.col("_parts").list.eval(
        pl.element().filter(pl.element().is_in(list(INDUSTRIAL_PROTOCOLS)))
    )
    inv = att.group_by("device_id").agg(
        pl.col("mac").drop_nulls().first(),
        pl.col("ip").filter(~pl.col("ip").str.contains(UNSPECIFIED_OR_LOOPBACK))
        .drop_nulls().unique().sort().alias("ips"),
        pl.col("server_name").filter(own_name).drop_nulls().unique().sort().alias("hostnames"),
        pl.col("server_name").filter(~own_name).drop_nulls().unique().sort()
        .alias("server_names"),
        pl.concat_list("_l4", pl.col("_parts").list.first())
        .list.explode(keep_nulls=False, empty_as_null=False)
        .drop_nulls().unique().sort().alias("protocols"),
        pl.col("application").drop_nulls().unique().sort().alias("applications"),
        ics_expr.list.explode(keep_nulls=False, empty_as_null=False)
        .drop_nulls().unique().sort().alias("industrial_protocols"),
        (pl.col("application_category") == "IoT-Scada").any().alias("_scada"),
        pl.col("first_seen").min().alias("first_seen"),
        pl.col("last_seen").max().alias("last_seen"),
        pl.len().alias("flows"),
        pl.col("packets").sum().alias("packets"),
        pl.col("bytes").sum().alias("bytes"),
        pl.col("source").unique().sort().alias("sources"),
    )
    vendors = {m: vendor(m) for m in inv["mac"].drop_nulls().unique().to_list()}
    inv = inv.with_columns(
        pl.col("mac").replace_strict(vendors, default=None, return_dtype=pl.String).alias("vendor"),
        ((pl.col("industrial_protocols").list.len() > 0) | pl.col("_scada")).alias("industrial"),
    )
    return inv.select(INVENTORY_COLUMNS).sort("device_id")


_LIST_COLUMNS = ["ips", "hostnames", "server_names", "protocols", "applications",
                 "industrial_protocols", "sources"]


def merge_inventories(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """The inventory of a whole input from its parts' (``inventory`` of each): lists as sets,
    counts summed, first and last seen as the least and the greatest. Each column of an
    inventory is such an aggregate, so this equals ``inventory`` over all the flows."""
    parts = [p for p in parts if p.height]
    if not parts:
        return empty_inventory()
    if len(parts) == 1:
        return parts[0]
    inv = pl.concat(parts).group_by("device_id").agg(
        pl.col("mac").drop_nulls().first(),
        pl.col("vendor").drop_nulls().first(),
        *[pl.col(c).explode().drop_nulls().unique().sort() for c in _LIST_COLUMNS],
        pl.col("industrial").any(),
        pl.col("first_seen").min(),
        pl.col("last_seen").max(),
        pl.col("flows").sum().cast(pl.UInt32),
        pl.col("packets").sum(),
        pl.col("bytes").sum(),
    )
    return inv.select(INVENTORY_COLUMNS).sort("device_id")


def empty_inventory() -> pl.DataFrame:
    lst = pl.List(pl.String)
    ts = pl.Datetime("ms", "UTC")
    return pl.DataFrame(schema={
        "device_id": pl.String, "mac": pl.String, "vendor": pl.String, "ips": lst,
        "hostnames": lst, "server_names": lst, "protocols": lst, "applications": lst,
        "industrial": pl.Boolean, "industrial_protocols": lst, "first_seen": ts,
        "last_seen": ts, "flows": pl.UInt32, "packets": pl.Int64, "bytes": pl.Int64,
        "sources": lst,
    })


#: Columns ``with_risk`` adds to an inventory.
RISK_COLUMNS = ["software", "firmware", "risk_score", "findings"]
#: A finding's weight in ``risk_score`` by severity.
RISK_WEIGHTS = {"high": 70, "medium": 40, "low": 15}


def risk_score(severities: list[str]) -> int:
    """0-100 from a device's findings: the weight of the most severe (high 70, medium 40,
    low 15) plus a quarter of each other's, rounded, capped at 100; 0 without findings. One
    high finding outranks any number of low ones below four (70 > 15 + 3 x 3.75), and a
    device with several high findings reaches 100 at four."""
    w = sorted((RISK_WEIGHTS.get(s, 0) for s in severities), reverse=True)
    if not w:
        return 0
    return min(100, round(w[0] + sum(w[1:]) / 4))


def with_risk(inv: pl.DataFrame, found: pl.DataFrame | None = None,
              software: pl.DataFrame | None = None) -> pl.DataFrame:
    """``inv`` with ``RISK_COLUMNS``: the software and firmware each device runs
    (``vendor product version`` of ``features.software.device_software`` rows, by role;
    ``os`` counts as software), its ``risk_score`` and its number of ``findings``
    (``features.findings.summarise`` rows)."""
    lst = pl.List(pl.String)
    per_dev = pl.DataFrame(schema={"device_id": pl.String, "software": lst, "firmware": lst,
                                   "risk_score": pl.Int64, "findings": pl.Int64})
    if found is not None and found.height:
        per_dev = found.group_by("device_id").agg(pl.col("severity")).select(
            "device_id", pl.lit(None, lst).alias("software"), pl.lit(None, lst).alias("firmware"),
            pl.col("severity").map_elements(risk_score, return_dtype=pl.Int64)
            .alias("risk_score"), pl.col("severity").list.len().cast(pl.Int64).alias("findings"))
    out = inv.drop([c for c in RISK_COLUMNS if c in inv.columns]).join(
        per_dev, on="device_id", how="left")
    if software is not None and software.height:
        name = pl.concat_str([pl.col("vendor"), pl.col("product"), pl.col("version")],
                             separator=" ", ignore_nulls=True)
        sw = software.with_columns(name.alias("_name")).filter(pl.col("_name") != "").group_by(
            "device_id").agg(
            pl.col("_name").filter(pl.col("role") != "firmware").unique().sort()
            .alias("_software"),
            pl.col("_name").filter(pl.col("role") == "firmware").unique().sort()
            .alias("_firmware"))
        out = out.join(sw, on="device_id", how="left").with_columns(
            pl.col("_software").alias("software"), pl.col("_firmware").alias("firmware")
        ).drop("_software", "_firmware")
    return out.with_columns(pl.col("software", "firmware").fill_null([]),
                            pl.col("risk_score", "findings").fill_null(0))
