"""Device attribution: which endpoint(s) of each flow are local devices.

The rule (applied per source, i.e. per capture, interface or log):

1. **Keys.** A device is keyed by its MAC address where the flow has layer 2, else by its IP.
2. **Local vs remote.** IPv4 private, link-local and unspecified (``0.0.0.0``, DHCP) addresses
   are local. A site addressed entirely with public IPv4 (no private address in the source) is
   taken as local throughout. IPv6 link-local (``fe80::/10``) and unique-local (``fc00::/7``)
   are local; a global IPv6 address is local when its MAC is a host's, not a gateway's.
3. **Gateways.** A MAC seen carrying a remote IPv4 address, or four or more distinct IPv4
   addresses, is a gateway (it forwards for others). Traffic behind it is not a device. The
   gateway is itself a device only in flows it *originates* from a local address of its own:
   one in a /24 where a host of the same source has its address (a host of another subnet
   whose packets the gateway forwards, such as an upstream router's ICMP, is not the gateway).
4. **Never devices.** Broadcast and multicast MACs (I/G bit set), multicast and broadcast IPs
   (``224.0.0.0/4``, ``255.255.255.255``, ``*.255``, ``ff00::/8``), and the unspecified and
   loopback addresses (``0.0.0.0``, ``127.0.0.0/8``, ``::``, ``::1``) where there is no MAC to
   key the device by. (A DHCP client at ``0.0.0.0`` is its MAC's device; a capture taken on a
   lab host's loopback holds no device.)
5. **Both directions count.** A flow between two local devices is credited to both, each
   seeing it from its own side (``direction`` ``out`` when the device initiated it).

The output has one row per (flow, credited device) with the flow's columns plus the device's
view of it: ``device_id``, ``mac``, ``ip``, ``direction``, ``peer_ip``,
``peer_mac``, ``peer_port``, ``peer_local``, ``bytes_out``, ``bytes_in``, ``packets_out``,
``packets_in``.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from flockwatch.features.orient import initiator_syn, service_port

_V4_PRIVATE = r"^(10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|169\.254\.|127\.|0\.0\.0\.0$)"
_V4_MULTICAST = r"^(22[4-9]|23\d)\.|^255\.255\.255\.255$|\.255$"
_V6_LOCAL = r"^(?i:fe[89ab][0-9a-f]:|f[cd][0-9a-f]{2}:|::1$)"
#: Unspecified and loopback addresses: never a device's own address.
UNSPECIFIED_OR_LOOPBACK = r"^(127\.|0\.0\.0\.0$|::1?$)"


def _is_v4(ip: pl.Expr) -> pl.Expr:
    return ~ip.str.contains(":")


def _mac_unicast(mac: pl.Expr) -> pl.Expr:
    # The I/G bit is the lowest bit of the first octet: set for multicast and broadcast.
    first = mac.str.slice(0, 2).str.to_integer(base=16, strict=False)
    return mac.is_not_null() & ((first % 2) == 0)


def _ip_special(ip: pl.Expr) -> pl.Expr:
    return (
        ip.is_null()
        | ip.str.contains(_V4_MULTICAST)
        | ip.str.to_lowercase().str.starts_with("ff")
    )


def _sides(flows: pl.DataFrame) -> pl.DataFrame:
    """Both endpoints of every flow as rows, from the endpoint's point of view."""
    f = flows.with_row_index("flow_index")
    common = [pl.col(c) for c in flows.columns] + [pl.col("flow_index")]

    def side(me: str, other: str, direction: str) -> pl.DataFrame:
        out, inn = ("src2dst", "dst2src") if me == "src" else ("dst2src", "src2dst")
        return f.select(
            *common,
            pl.col(f"{me}_mac").alias("mac"),
            pl.col(f"{me}_ip").alias("ip"),
            pl.lit(direction).alias("direction"),
            pl.col(f"{other}_ip").alias("peer_ip"),
            pl.col(f"{other}_mac").alias("peer_mac"),
            pl.col(f"{other}_port").alias("peer_port"),
            pl.col(f"{out}_bytes").alias("bytes_out"),
            pl.col(f"{inn}_bytes").alias("bytes_in"),
            pl.col(f"{out}_packets").alias("packets_out"),
            pl.col(f"{inn}_packets").alias("packets_in"),
        )

    return pl.concat([side("src", "dst", "out"), side("dst", "src", "in")])


def tcp_probe() -> pl.Expr:
    """A TCP flow that was refused or never answered (a scan probe): nDPI only guessed its
    application from the port, and no conversation took place."""
    return (pl.col("protocol") == 6) & (
        (pl.col("dst2src_packets") == 0)
        | ((pl.col("rst_packets") > 0) & (pl.col("packets") <= 3))
    )


def master_application() -> pl.Expr:
    """nDPI's master protocol of a flow (``TLS`` of ``TLS.Amazon``; ``Unknown`` for none)."""
    return pl.col("application").fill_null("Unknown").str.split(".").list.first()


def self_named() -> pl.Expr:
    """An attributed flow whose ``server_name`` is the device's own name: a DHCP host name
    on the client's side (port 68, DHCPv6 546; a server's ACK repeats the client's name, so
    whoever sent it, the client owns it), or an mDNS, NetBIOS or LLMNR name the device sent.
    Every other name is one the device asked for."""
    master = master_application()
    my_port = pl.when(pl.col("direction") == "out").then("src_port").otherwise("dst_port")
    dhcp_client = ((master == "DHCP") & (my_port == 68)) | ((master == "DHCPV6") & (my_port == 546))
    return pl.when(master.is_in(["DHCP", "DHCPV6"])).then(dhcp_client).otherwise(
        (pl.col("direction") == "out") & master.is_in(["MDNS", "NetBIOS", "LLMNR"]))


def initiation() -> pl.Expr:
    """A flow that opens a conversation: TCP with the initiator's SYN, UDP unless it looks
    like a reply (from a service port to one that is not), any other protocol (ICMP, ...) as
    it is. A reply never is one, nor a TCP stream first seen mid-way (its SYN came earlier).
    UDP between two unlisted ports counts: a new conversation on a vendor or attacker port
    (exfiltration to 4444, an OT protocol on 50000) must still raise its new peer."""
    reply = service_port(pl.col("src_port")) & ~service_port(pl.col("dst_port"))
    return (pl.when(pl.col("protocol") == 6).then(initiator_syn())
            .when(pl.col("protocol") == 17).then(~reply)
            .otherwise(True))


@dataclass(frozen=True)
class AttributionContext:
    """What attribution decides for a whole source before it credits any flow: whether the
    site uses private IPv4 at all (rule 2), its gateway MACs (rule 3) and the /24 subnets of
    its hosts, where a gateway's own addresses lie. Each is a decision over every flow of the
    source, and none needs more than the flows' endpoints (source, MAC, IP), so it is taken
    once over a whole capture and then applied to any part of it (``attribute(part,
    context)``): scoring a capture part by part credits each flow as scoring it whole does."""

    site_private: pl.DataFrame  # source, _site_private
    gateways: pl.DataFrame  # source, mac, _gateway
    host_nets: pl.DataFrame  # source, _net, _own


def _endpoints(flows: pl.DataFrame) -> pl.DataFrame:
    """Both endpoints of every flow: ``source``, ``mac``, ``ip``."""
    return pl.concat([
        flows.select("source", pl.col(f"{me}_mac").alias("mac"), pl.col(f"{me}_ip").alias("ip"))
        for me in ("src", "dst")])


_NET = pl.col("ip").str.replace(r"\.\d+$", "")


def _v4_sides(sides: pl.DataFrame) -> pl.DataFrame:
    """The sides whose address may tell a gateway: unicast MAC, a device's own IPv4."""
    return sides.filter(
        pl.col("_mac_unicast") & _is_v4(pl.col("ip")) & ~pl.col("_ip_special")
        & ~pl.col("ip").str.contains(UNSPECIFIED_OR_LOOPBACK))


def _locality(sides: pl.DataFrame) -> pl.DataFrame:
    v4 = _is_v4(pl.col("ip"))
    v4_local = pl.col("ip").str.contains(_V4_PRIVATE) | ~pl.col("_site_private")
    return sides.with_columns(
        pl.when(v4).then(v4_local).otherwise(pl.col("ip").str.contains(_V6_LOCAL))
        .alias("_ip_local"),
        _mac_unicast(pl.col("mac")).alias("_mac_unicast"),
        _ip_special(pl.col("ip")).alias("_ip_special"),
    )


def attribution_context(flows: pl.DataFrame) -> AttributionContext:
    """The per-source decisions of attribution over all of ``flows`` (``AttributionContext``)."""
    ends = _endpoints(flows).unique(maintain_order=True)
    v4 = _is_v4(pl.col("ip"))
    # Per source: does the site use private IPv4 at all?
    private = ends.group_by("source").agg(
        (v4 & pl.col("ip").str.contains(_V4_PRIVATE)).any().alias("_site_private"))
    ends = _locality(ends.join(private, on="source", how="left", maintain_order="left"))
    # Gateways: MACs that carry remote IPv4 addresses, or many IPv4 addresses.
    v4_sides = _v4_sides(ends)
    gateways = (
        v4_sides.group_by("source", "mac")
        .agg(
            (~pl.col("_ip_local")).any().alias("remote"),
            pl.col("ip").n_unique().alias("n_ip"),
        )
        .filter(pl.col("remote") | (pl.col("n_ip") >= 4))
        .select("source", "mac", pl.lit(True).alias("_gateway"))
    )
    # The subnets (/24) of the hosts: a gateway's own addresses lie in one of them.
    host_nets = v4_sides.join(gateways, on=["source", "mac"], how="anti").filter(
        pl.col("_ip_local")).select("source", _NET.alias("_net"), pl.lit(True).alias("_own")
                                    ).unique()
    return AttributionContext(private, gateways, host_nets)


def attribute(flows: pl.DataFrame, context: AttributionContext | None = None) -> pl.DataFrame:
    """Credit each flow to the local device(s) it involves (see the module docstring).

    ``context`` carries the per-source decisions (``attribution_context``) when ``flows``
    are part of a larger input; by default they are taken over ``flows`` themselves.
    """
    ctx = attribution_context(flows) if context is None else context
    sides = _sides(flows)
    v4 = _is_v4(pl.col("ip"))
    sides = _locality(sides.join(ctx.site_private, on="source", how="left",
                                 maintain_order="left"))
    sides = sides.join(ctx.gateways, on=["source", "mac"], how="left",
                       maintain_order="left").with_columns(pl.col("_gateway").fill_null(False))
    sides = sides.with_columns(pl.when(v4).then(_NET).alias("_net")).join(
        ctx.host_nets, on=["source", "_net"], how="left", maintain_order="left").with_columns(
        pl.col("_own").fill_null(False))
    has_l2 = pl.col("mac").is_not_null()
    l2_device = (
        pl.col("_mac_unicast")
        & ~pl.col("_ip_special")
        & (
            (~pl.col("_gateway") & (pl.col("_ip_local") | ~v4))
            | (pl.col("_gateway") & (pl.col("direction") == "out") & v4 & pl.col("_ip_local")
               & pl.col("_own"))
        )
    )
    l3_device = (~pl.col("_ip_special") & pl.col("_ip_local")
                 & ~pl.col("ip").str.contains(UNSPECIFIED_OR_LOOPBACK))
    credited = sides.filter(pl.when(has_l2).then(l2_device).otherwise(l3_device))
    # Peer locality, from the same rule seen from the other side.
    peer_v4 = _is_v4(pl.col("peer_ip"))
    peer_local = pl.when(peer_v4).then(
        pl.col("peer_ip").str.contains(_V4_PRIVATE) | ~pl.col("_site_private")
    ).otherwise(pl.col("peer_ip").str.contains(_V6_LOCAL) | pl.col("peer_ip").is_null())
    return credited.with_columns(
        pl.coalesce(pl.col("mac"), pl.col("ip")).alias("device_id"),
        peer_local.fill_null(False).alias("peer_local"),
    ).drop("_site_private", "_ip_local", "_mac_unicast", "_ip_special", "_gateway", "_net",
           "_own")

