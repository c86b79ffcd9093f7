"""The network map: devices and their local peers as a graph, laid out server-side as plain
SVG (no script), grouped by category or by /24 subnet, with industrial links and alerting
devices marked. The template draws it, so every label is escaped like any other value."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Any

from flockwatch.serving.console.data import Snapshot


@dataclass
class Node:
    id: str
    label: str
    group: str
    x: float
    y: float
    alerting: bool
    industrial: bool
    known: bool
    title: str


@dataclass
class Edge:
    x1: float
    y1: float
    x2: float
    y2: float
    industrial: bool


@dataclass
class Map:
    width: int
    height: int
    nodes: list[Node]
    edges: list[Edge]
    groups: list[tuple[str, float, float]]


def _subnet(ip: str | None) -> str:
    if not ip:
        return "no address"
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "no address"
    bits = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def network_map(snap: Snapshot, group_by: str = "category", open_alerts: set[str] | None = None,
                max_nodes: int = 400) -> Map:
    """The map of ``snap``: at most ``max_nodes`` devices (those with most alerts, then most
    flows, first), each group on a circle of its own around the centre."""
    open_alerts = open_alerts if open_alerts is not None else {
        a["device_id"] for a in snap.alerts}
    devices = sorted(snap.devices, key=lambda d: (-(d.get("alerts") or 0),
                                                  -(d.get("flows") or 0), d["device_id"]))
    devices = devices[:max_nodes]
    shown = {d["device_id"] for d in devices}
    peers: dict[str, set[str]] = {}  # peer ip -> devices naming it, for peers not in inventory
    for d in devices:
        for ip in d.get("local_peers") or []:
            if snap.by_ip.get(ip) not in shown:
                peers.setdefault(ip, set()).add(d["device_id"])
    members: dict[str, list[tuple[str, dict[str, Any] | None]]] = {}
    for d in devices:
        ips = d.get("ips") or []
        key = (d.get("category") or "unknown category") if group_by == "category" else _subnet(
            ips[0] if ips else None)
        members.setdefault(key, []).append((d["device_id"], d))
    for ip in sorted(peers)[:max_nodes]:
        members.setdefault("peers outside the inventory" if group_by == "category"
                           else _subnet(ip), []).append((ip, None))
    names = sorted(members)
    size = max(len(m) for m in members.values()) if members else 1
    ring = 40 + 9 * min(size, 60)  # a group's own radius grows with its members
    outer = 0.0 if len(names) == 1 else (2 * ring + 60) / (2 * math.sin(math.pi / len(names)))
    width = height = int(2 * (outer + ring) + 160)
    cx = cy = width / 2
    nodes: list[Node] = []
    pos: dict[str, tuple[float, float]] = {}
    groups: list[tuple[str, float, float]] = []
    for gi, name in enumerate(names):
        angle = 2 * math.pi * gi / len(names) - math.pi / 2
        gx, gy = cx + outer * math.cos(angle), cy + outer * math.sin(angle)
        grp = members[name]
        groups.append((name, gx, gy - (ring if len(grp) > 1 else 0) - 18))
        for ni, (nid, dev) in enumerate(grp):
            a = 2 * math.pi * ni / len(grp)
            r = 0 if len(grp) == 1 else ring
            x, y = gx + r * math.cos(a), gy + r * math.sin(a)
            if dev is not None:
                ips = dev.get("ips") or []
                label = (dev.get("hostnames") or [None])[0] or (ips[0] if ips else nid)
                title = " ".join(x for x in [nid, dev.get("device_type") or "unknown type",
                                             ", ".join(ips)] if x)
                node = Node(nid, str(label)[:40], name, x, y, nid in open_alerts,
                            bool(dev.get("industrial") or dev.get("industrial_protocols")),
                            True, title)
                for ip in ips:
                    pos[ip] = (x, y)
            else:
                node = Node(nid, nid, name, x, y, False, False, False, f"{nid} (not in the "
                            "inventory)")
                pos[nid] = (x, y)
            pos.setdefault(nid, (x, y))
            nodes.append(node)
    industrial = {n.id for n in nodes if n.industrial}
    edges: list[Edge] = []
    seen: set[tuple[str, str]] = set()
    for d in devices:
        me = d["device_id"]
        for ip in d.get("local_peers") or []:
            other = snap.by_ip.get(ip) if snap.by_ip.get(ip) in shown else ip
            if other is None or other == me or other not in pos:
                continue
            pair = (min(me, other), max(me, other))
            if pair in seen:
                continue
            seen.add(pair)
            (x1, y1), (x2, y2) = pos[me], pos[other]
            edges.append(Edge(x1, y1, x2, y2, me in industrial and other in industrial))
    return Map(width, height, nodes, edges, groups)
